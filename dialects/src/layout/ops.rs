//! The `layout.*` ops: definitions, shape inference and reference evaluation.
//!
//! Every op means "the graph op of the same name, applied to the logical NCHW
//! tensors": `infer` unpacks the operand types to NCHW, runs the graph op's
//! inference and packs the result type; `eval` unpacks the data, runs the graph
//! op's reference `eval` and packs the result. The graph op runs in a scratch
//! [`Context`] (attributes copied over), so its verifier messages and its
//! evaluator are reused rather than duplicated.

use super::format::{WeightFormat, pack, pack_dims, unpack, unpack_dims};
use std::sync::{Arc, OnceLock};
use strata_ir::{
    Attr, AttrData, Context, DenseAttr, Dim, FoldResult, Layout, OpCx, OpId, OpView, Registry, TensorData, TensorType,
    TypeData, attr_kind, define_op,
};

define_op! {
    /// Changes the layout of an activation (logical `[N, C, H, W]`) to `to`;
    /// the channels must be divisible by the target's block.
    pub struct RelayoutOp = "layout.relayout" {
        summary: "change the layout of an activation (NCHW <-> blocked, blocked <-> blocked)",
        operands: [x],
        results: [output],
        attrs: { to: Layout },
        optional_attrs: {},
        traits: [PURE],
        fold: fold_relayout,
        infer: infer_relayout,
        eval: eval_relayout,
    }
}

define_op! {
    /// Packs an OIHW convolution weight `[OC, IC/G, FH, FW]` into a blocked
    /// weight format (`dense`, `dot`, `group`, `group_dot`, `channelwise`, `hybrid`,
    /// MegEngine's int8 GPU filters `nchw4`, `nchw32`, `chwn4`, `nchw4_group`, and
    /// `nchw4_channelwise`, `nchw32_group`, `chwn4_group`, `nhwcd4` (strata's)).
    pub struct WeightOp = "layout.weight" {
        summary: "pack an OIHW convolution weight into a blocked weight format",
        operands: [w],
        results: [output],
        attrs: { format: Str, block: Int },
        optional_attrs: { group: Int },
        traits: [PURE],
        infer: infer_weight,
        eval: eval_weight,
    }
}

define_op! {
    /// `graph.conv_bias` on blocked activations: `x` in layout `format` (plain
    /// NCHW for the `hybrid` weight format), `w` packed in `weight_format`, bias
    /// `[1, OC/P, 1, 1, P]` and optional `z` in `format`; the result is in `format`.
    pub struct ConvBiasOp = "layout.conv_bias" {
        summary: "convolution + bias (+ z) + nonlinearity on blocked activations and packed weights",
        operands: [x, w, b],
        results: [output],
        attrs: {
            stride: Ints, pad: Ints, dilation: Ints, group: Int, nonlinearity: Str,
            format: Layout, weight_format: Str,
        },
        optional_attrs: { out_dtype: Type },
        traits: [PURE],
        variadic: z,
        infer: infer_conv_bias,
        eval: eval_conv_bias,
    }
}

define_op! {
    /// `graph.pooling` on a blocked activation (the result keeps the layout).
    pub struct PoolingOp = "layout.pooling" {
        summary: "window pooling of a blocked activation",
        operands: [x],
        results: [output],
        attrs: { mode: Str, window: Ints, stride: Ints, pad: Ints },
        optional_attrs: {},
        traits: [PURE],
        infer: infer_activation,
        eval: eval_activation,
    }
}

define_op! {
    /// `graph.global_avg_pool` on a blocked activation (the result keeps the layout).
    pub struct GlobalAvgPoolOp = "layout.global_avg_pool" {
        summary: "mean over H and W of a blocked activation",
        operands: [x],
        results: [output],
        attrs: {},
        optional_attrs: {},
        traits: [PURE],
        infer: infer_activation,
        eval: eval_activation,
    }
}

define_op! {
    /// `graph.adaptive_pooling` on a blocked activation (the result keeps the layout).
    pub struct AdaptivePoolingOp = "layout.adaptive_pooling" {
        summary: "pooling to a given output size of a blocked activation",
        operands: [x],
        results: [result],
        attrs: { mode: Str, output: Ints },
        optional_attrs: {},
        traits: [PURE],
        infer: infer_activation,
        eval: eval_activation,
    }
}

define_op! {
    /// `graph.resize` on a blocked activation (the result keeps the layout).
    pub struct ResizeOp = "layout.resize" {
        summary: "resize of a blocked activation",
        operands: [x],
        results: [result],
        attrs: { output: Ints, imode: Str },
        optional_attrs: {},
        traits: [PURE],
        infer: infer_activation,
        eval: eval_activation,
    }
}

/// Every op of the dialect.
pub(crate) const DEFS: [strata_ir::OpDef; 7] = [
    RelayoutOp::DEF,
    WeightOp::DEF,
    ConvBiasOp::DEF,
    PoolingOp::DEF,
    GlobalAvgPoolOp::DEF,
    AdaptivePoolingOp::DEF,
    ResizeOp::DEF,
];

/// Registers the ops; folded constants of the dialect are `graph.const`.
pub(crate) fn register(r: &mut Registry) {
    for def in DEFS {
        r.register(def).expect("invariant: layout ops register once");
    }
    r.set_constant_op("layout", crate::graph::ConstOp::NAME);
}

// ---------------------------------------------------------------- the bridge

/// A fresh context knowing every dialect, for running graph ops.
fn scratch() -> Context {
    static REGISTRY: OnceLock<Arc<Registry>> = OnceLock::new();
    Context::new(REGISTRY.get_or_init(|| Arc::new(crate::registry())).clone())
}

fn copy_type(from: &Context, t: &TypeData, to: &mut Context) -> TypeData {
    let dims = |to: &mut Context, shape: &[Dim]| -> Vec<Dim> {
        shape
            .iter()
            .map(|d| match d {
                Dim::Fixed(n) => Dim::Fixed(*n),
                Dim::Sym(s) => Dim::Sym(to.sym(from.str(*s))),
            })
            .collect()
    };
    match t {
        TypeData::Tensor(tt) => TypeData::Tensor(TensorType { shape: dims(to, &tt.shape), ..tt.clone() }),
        TypeData::Buffer(b) => {
            let mut b = b.clone();
            b.shape = dims(to, &b.shape);
            TypeData::Buffer(b)
        }
        TypeData::Func(f) => {
            let mut f = f.clone();
            for ty in f.inputs.iter_mut().chain(f.results.iter_mut()) {
                let data = copy_type(from, from.ty(*ty), to);
                *ty = to.intern_type(data);
            }
            TypeData::Func(f)
        }
        other => other.clone(),
    }
}

fn copy_attr(from: &Context, a: Attr, to: &mut Context) -> Attr {
    let data = match from.attr(a) {
        AttrData::Array(items) => AttrData::Array(items.iter().map(|&i| copy_attr(from, i, to)).collect()),
        AttrData::Dict(items) => {
            AttrData::Dict(items.iter().map(|(k, i)| (k.clone(), copy_attr(from, *i, to))).collect())
        }
        AttrData::Type(t) => {
            let data = copy_type(from, from.ty(*t), to);
            AttrData::Type(to.intern_type(data))
        }
        AttrData::Dense(d) => {
            let data = copy_type(from, from.ty(d.ty), to);
            AttrData::Dense(DenseAttr { ty: to.intern_type(data), storage: d.storage.clone() })
        }
        other => other.clone(),
    };
    to.intern_attr(data)
}

/// The layout-only attributes, which the graph op does not take.
const LAYOUT_ATTRS: &[&str] = &["format", "weight_format"];

/// The op's attributes, minus the layout-only ones, interned in `s`.
fn graph_attrs(cx: &OpCx<'_>, s: &mut Context) -> Vec<(strata_ir::Sym, Attr)> {
    let pairs: Vec<(String, Attr)> = cx
        .attrs
        .items()
        .iter()
        .filter(|(k, _)| !LAYOUT_ATTRS.contains(&cx.ctx.str(*k)))
        .map(|&(k, a)| (cx.ctx.str(k).to_string(), copy_attr(cx.ctx, a, s)))
        .collect();
    crate::apply::intern_attrs(s, &pairs)
}

/// The name of the graph op a layout op stands for.
fn graph_name(cx: &OpCx<'_>) -> String {
    format!("graph.{}", cx.name.strip_prefix("layout.").unwrap_or(cx.name))
}

/// Runs the graph op's inference on logical (NCHW) operand types.
fn graph_infer(cx: &OpCx<'_>, operands: &[TensorType]) -> Result<TensorType, String> {
    let mut s = scratch();
    let types: Vec<_> = operands
        .iter()
        .map(|t| {
            let data = copy_type(cx.ctx, &TypeData::Tensor(t.clone()), &mut s);
            s.intern_type(data)
        })
        .collect();
    let attrs = graph_attrs(cx, &mut s);
    let mut out = crate::apply::infer(&s, &graph_name(cx), &types, &attrs)?;
    let Some(TypeData::Tensor(mut t)) = out.pop() else {
        return Err("invariant: the graph op has one tensor result".into());
    };
    for d in &mut t.shape {
        if let Dim::Sym(sym) = *d {
            let name = s.str(sym);
            *d = Dim::Sym(cx.ctx.lookup_sym(name).ok_or_else(|| format!("unknown symbolic dim ?{name}"))?);
        }
    }
    Ok(t)
}

/// Runs the graph op's reference evaluation on logical (NCHW) data.
fn graph_eval(cx: &OpCx<'_>, inputs: &[TensorData]) -> Result<TensorData, String> {
    let mut s = scratch();
    let attrs = graph_attrs(cx, &mut s);
    let mut out = crate::apply::eval(&mut s, &graph_name(cx), inputs, &attrs)?;
    out.pop().ok_or_else(|| "invariant: the graph op has one result".to_string())
}

// ---------------------------------------------------------------- types

/// The logical NCHW type of an activation type.
fn logical(t: &TensorType, what: &str) -> Result<TensorType, String> {
    let dims = unpack_dims(t.layout, &t.shape).map_err(|e| format!("{what}: {e}"))?;
    Ok(TensorType { shape: dims.to_vec(), elem: t.elem, layout: Layout::Nchw })
}

/// A logical NCHW type stored in layout `l`.
fn packed(t: &TensorType, l: Layout, what: &str) -> Result<TensorType, String> {
    let dims: [Dim; 4] =
        t.shape.as_slice().try_into().map_err(|_| format!("{what} must have rank 4 before packing"))?;
    Ok(TensorType { shape: pack_dims(l, dims).map_err(|e| format!("{what}: {e}"))?, elem: t.elem, layout: l })
}

fn blocked_layout(t: &TensorType, what: &str, op: &str) -> Result<Layout, String> {
    if t.layout.block().is_none() {
        return Err(format!(
            "{what} must have a blocked layout, has #{} (use `graph.{op}` on plain tensors)",
            t.layout
        ));
    }
    Ok(t.layout)
}

// ---------------------------------------------------------------- relayout

fn infer_relayout(cx: &OpCx<'_>) -> Result<Vec<TypeData>, String> {
    let x = cx.tensor(0)?;
    let to = cx.attrs.req::<attr_kind::Layout>("to")?;
    let l = logical(x, "operand `x`")?;
    Ok(vec![TypeData::Tensor(packed(&l, to, "the result")?)])
}

fn eval_relayout(cx: &OpCx<'_>, inputs: &[TensorData]) -> Result<Vec<TensorData>, String> {
    let x = crate::graph::common::one(inputs)?;
    let from = cx.tensor(0)?.layout;
    let to = cx.attrs.req::<attr_kind::Layout>("to")?;
    Ok(vec![pack(to, &unpack(from, x)?)?])
}

/// `relayout(x)` to `x`'s own layout is `x`; `relayout(relayout(y))` back to
/// `y`'s layout is `y`.
fn fold_relayout(ctx: &Context, op: OpId) -> Option<Vec<FoldResult>> {
    let r = RelayoutOp(op);
    let to = r.to(ctx);
    let x = r.x(ctx);
    if ctx.value_tensor(x)?.layout == to {
        return Some(vec![FoldResult::Value(x)]);
    }
    let inner = RelayoutOp::cast(ctx, ctx.defining_op(x)?)?;
    let y = inner.x(ctx);
    (ctx.value_tensor(y)? == ctx.value_tensor(r.output(ctx))?).then(|| vec![FoldResult::Value(y)])
}

// ---------------------------------------------------------------- weight

fn weight_params(cx: &OpCx<'_>) -> Result<(WeightFormat, u64, u64), String> {
    let f = WeightFormat::parse(cx.attrs.str("format")?)?;
    let block = cx.attrs.int("block")?;
    if ![4, 8, 16, 32, 64].contains(&block) {
        return Err(format!("attribute `block` must be 4, 8, 16, 32 or 64, is {block}"));
    }
    if let Some(need) = f.required_block()
        && block as u64 != need
    {
        return Err(format!("weight format `{}` needs block {need}, has {block}", f.name()));
    }
    let group = cx.attrs.opt::<attr_kind::Int>("group")?.unwrap_or(1);
    if group < 1 {
        return Err(format!("attribute `group` must be at least 1, is {group}"));
    }
    Ok((f, block as u64, group as u64))
}

fn infer_weight(cx: &OpCx<'_>) -> Result<Vec<TypeData>, String> {
    let (f, p, g) = weight_params(cx)?;
    let w = cx.tensor(0)?;
    if w.layout != Layout::Nchw || w.shape.len() != 4 {
        return Err("operand `w` must be a plain rank-4 OIHW weight".into());
    }
    let dims: [u64; 4] =
        w.static_shape().and_then(|s| s.try_into().ok()).ok_or("operand `w` must have a fixed shape")?;
    let out = f.pack_dims(p, g, dims).map_err(|e| format!("operand `w`: {e}"))?;
    Ok(vec![TypeData::Tensor(TensorType::fixed(&out, w.elem))])
}

fn eval_weight(cx: &OpCx<'_>, inputs: &[TensorData]) -> Result<Vec<TensorData>, String> {
    let (f, p, g) = weight_params(cx)?;
    Ok(vec![f.pack(p, g, crate::graph::common::one(inputs)?)?])
}

// ---------------------------------------------------------------- conv_bias

struct ConvLayout {
    format: Layout,
    wf: WeightFormat,
    p: u64,
    group: u64,
}

fn conv_layout(cx: &OpCx<'_>) -> Result<ConvLayout, String> {
    let format = cx.attrs.req::<attr_kind::Layout>("format")?;
    let p = format.block().ok_or_else(|| format!("attribute `format` must be a blocked layout, is #{format}"))?;
    let wf = WeightFormat::parse(cx.attrs.str("weight_format")?)?;
    let group = cx.attrs.int("group")?;
    if group < 1 {
        return Err(format!("attribute `group` must be at least 1, is {group}"));
    }
    let need = match wf {
        WeightFormat::Nchw4 | WeightFormat::Nchw4Group | WeightFormat::Nchw4ChannelWise => Some(Layout::Nchw4),
        WeightFormat::Nchw32 | WeightFormat::Nchw32Group => Some(Layout::Nchw32),
        WeightFormat::Chwn4 | WeightFormat::Chwn4Group => Some(Layout::Chwn4),
        WeightFormat::Nhwcd4 => Some(Layout::Nhwcd4),
        _ => None,
    };
    if let Some(need) = need
        && need != format
    {
        return Err(format!("weight format `{}` needs format #{need}, has #{format}", wf.name()));
    }
    Ok(ConvLayout { format, wf, p, group: group as u64 })
}

fn infer_conv_bias(cx: &OpCx<'_>) -> Result<Vec<TypeData>, String> {
    let c = conv_layout(cx)?;
    let x = cx.tensor(0)?;
    let want_x = if c.wf == WeightFormat::Hybrid { Layout::Nchw } else { c.format };
    if x.layout != want_x {
        return Err(format!(
            "operand `x` must have layout #{want_x} (format #{}, weight format `{}`), has #{}",
            c.format,
            c.wf.name(),
            x.layout
        ));
    }
    let w = cx.tensor(1)?;
    let oihw = c.wf.unpack_dims(c.p, c.group, &w.shape).map_err(|e| format!("operand `w`: {e}"))?;
    let mut operands = vec![logical(x, "operand `x`")?, TensorType::fixed(&oihw, w.elem)];
    for (i, name) in [(2, "operand `b`"), (3, "operand `z`")] {
        if i >= cx.operand_types.len() {
            continue;
        }
        let t = cx.tensor(i)?;
        if t.layout != c.format {
            return Err(format!("{name} must have layout #{}, has #{}", c.format, t.layout));
        }
        operands.push(logical(t, name)?);
    }
    let out = graph_infer(cx, &operands)?;
    Ok(vec![TypeData::Tensor(packed(&out, c.format, "the result")?)])
}

fn eval_conv_bias(cx: &OpCx<'_>, inputs: &[TensorData]) -> Result<Vec<TensorData>, String> {
    let c = conv_layout(cx)?;
    let mut logical = Vec::with_capacity(inputs.len());
    for (i, t) in inputs.iter().enumerate() {
        logical.push(match i {
            0 => unpack(cx.tensor(0)?.layout, t)?,
            1 => c.wf.unpack(c.p, c.group, t)?,
            _ => unpack(c.format, t)?,
        });
    }
    Ok(vec![pack(c.format, &graph_eval(cx, &logical)?)?])
}

// ---------------------------------------------------------------- pooling, resize

fn infer_activation(cx: &OpCx<'_>) -> Result<Vec<TypeData>, String> {
    let x = cx.tensor(0)?;
    let op = cx.name.strip_prefix("layout.").unwrap_or(cx.name);
    let l = blocked_layout(x, "operand `x`", op)?;
    let out = graph_infer(cx, &[logical(x, "operand `x`")?])?;
    Ok(vec![TypeData::Tensor(packed(&out, l, "the result")?)])
}

fn eval_activation(cx: &OpCx<'_>, inputs: &[TensorData]) -> Result<Vec<TensorData>, String> {
    let l = cx.tensor(0)?.layout;
    let x = unpack(l, crate::graph::common::one(inputs)?)?;
    Ok(vec![pack(l, &graph_eval(cx, &[x])?)?])
}
