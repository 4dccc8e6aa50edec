//! `graph.fused_preprocess`: an image preprocessing chain in one op
//! (MegEngine's FuseNCHW4Int8Preprocess and FuseWarpPerspectiveDimshufflePass;
//! reference: `docs/graph-dialect.md`). The `fuse-preprocess` rules of `eqsat`
//! produce it from the unfused ops.
//!
//! `graph.fused_preprocess(input, [mat], k0, k1, …)` computes, in this order:
//!
//! 1. *warp* (when the attributes `output`, `imode`, `border_mode` and
//!    `border_value` are present; operand #1 is then `mat [N, 3, 3]`):
//!    `graph.warp_perspective(input, mat)` with those attributes, rounded to the
//!    input's element type as that op does. Needs `in_layout = "nchw"`.
//! 2. *convert*: `graph.typecvt` to `dtype`.
//! 3. *relayout* the `[N, H, W, C]` (`in_layout = "nhwc"`) or `[N, C, H, W]`
//!    (`"nchw"`) input to `[N, C, H, W]` (data movement only).
//! 4. *steps*: for each name in `steps`, one `graph.elemwise` with the next
//!    constant operand `k`, rounded to `dtype` after every step: `add`, `sub`,
//!    `mul`, `div` compute `v ∘ k`, `rsub` and `rdiv` compute `k - v` and
//!    `k / v`. Each `k` has `dtype` and holds one value (a scalar) or `C` values
//!    (one per channel, in row-major order; its shape does not matter, so a
//!    `[1, 1, 1, C]` or `[1, C, 1, 1]` constant is used as it is). Steps need a
//!    float `dtype`.
//! 5. *pad*: `pad_channels` (default 0) channels of real zero appended to the
//!    channel axis, giving `C' = C + pad_channels`.
//! 6. *convert* to `out_dtype` (default `dtype`).
//! 7. *layout* of the result: `out_layout = "nchw"` gives `[N, C', H, W]`,
//!    `"nhwc"` gives `[N, H, W, C']`; with `block = b` (only for `"nchw"`, `b`
//!    divides `C'`) the result is blocked, `[N, C'/b, H, W, b]`: a reshape to
//!    `[N, C'/b, b, H, W]` and a dimshuffle `(0, 1, 3, 4, 2)`, e.g. NCHW4.
//!
//! Every stage computes exactly what the corresponding unfused op computes
//! (the reference evaluator runs them in this order), so the fused op equals
//! its chain bit for bit. Reordering the chain keeps the values: per-channel
//! arithmetic commutes with data movement, and padding with zero commutes with
//! a conversion (zero converts to zero, or to the zero point).
//!
//! The batch dim may be symbolic (and H, W without a warp); the channel count
//! must be fixed.

use super::common::{expect_rank, fixed_dim, gather, show, strides};
use super::elemwise::Mode;
use super::image::WarpPerspectiveOp;
use super::shape::{check_eval_size, convert};
use strata_ir::{
    Attr, AttrData, Context, Dim, ElemType, Layout, OpCx, Registry, Sym, TensorData, TensorType, TypeData, define_op,
};

define_op! {
    /// A preprocessing chain (warp, conversion, per-channel arithmetic, relayout,
    /// channel padding, blocking) in one op; see the module docs.
    pub struct FusedPreprocessOp = "graph.fused_preprocess" {
        summary: "fused image preprocessing: warp, typecvt, per-channel arithmetic, relayout, channel padding",
        operands: [input],
        results: [result],
        attrs: { in_layout: Str, out_layout: Str, dtype: Type, steps: Array },
        optional_attrs: {
            pad_channels: Int,
            block: Int,
            out_dtype: Type,
            output: Ints,
            imode: Str,
            border_mode: Str,
            border_value: Float,
        },
        traits: [PURE],
        variadic: extra,
        infer: infer_fused_preprocess,
        eval: eval_fused_preprocess,
    }
}

pub(crate) fn register(r: &mut Registry) {
    r.register(FusedPreprocessOp::DEF).expect("invariant: graph ops register once");
}

/// The attributes of the warp stage, in this order (the names of `graph.warp_perspective`).
pub const WARP_ATTRS: [&str; 4] = ["output", "imode", "border_mode", "border_value"];

/// The image layout of the input or the result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ImageLayout {
    /// `[N, C, H, W]`.
    Nchw,
    /// `[N, H, W, C]`.
    Nhwc,
}

impl ImageLayout {
    /// The layout named `name` (`nchw`, `nhwc`).
    pub fn parse(name: &str) -> Result<ImageLayout, String> {
        match name {
            "nchw" => Ok(ImageLayout::Nchw),
            "nhwc" => Ok(ImageLayout::Nhwc),
            other => Err(format!("unknown image layout `{other}` (expected nchw or nhwc)")),
        }
    }

    /// The name in IR.
    pub fn name(self) -> &'static str {
        match self {
            ImageLayout::Nchw => "nchw",
            ImageLayout::Nhwc => "nhwc",
        }
    }

    /// The index of the channel axis in a rank-4 tensor.
    pub fn channel_axis(self) -> usize {
        match self {
            ImageLayout::Nchw => 1,
            ImageLayout::Nhwc => 3,
        }
    }
}

/// One arithmetic step with a constant `k`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Step {
    /// `v + k`.
    Add,
    /// `v - k`.
    Sub,
    /// `v · k`.
    Mul,
    /// `v / k`.
    Div,
    /// `k - v`.
    RSub,
    /// `k / v`.
    RDiv,
}

const STEPS: &[(&str, Step)] = &[
    ("add", Step::Add),
    ("sub", Step::Sub),
    ("mul", Step::Mul),
    ("div", Step::Div),
    ("rsub", Step::RSub),
    ("rdiv", Step::RDiv),
];

impl Step {
    /// The step named `name`, or an error listing every step.
    pub fn parse(name: &str) -> Result<Step, String> {
        STEPS.iter().find(|(n, _)| *n == name).map(|&(_, s)| s).ok_or_else(|| {
            let all: Vec<_> = STEPS.iter().map(|(n, _)| *n).collect();
            format!("unknown preprocessing step `{name}` (expected one of {})", all.join(", "))
        })
    }

    /// The name in IR.
    pub fn name(self) -> &'static str {
        STEPS.iter().find(|&&(_, s)| s == self).map(|&(n, _)| n).expect("invariant: every step is listed")
    }

    /// The step an elementwise `mode` with the value as operand `value_first ? 0 : 1` is.
    pub fn of_elemwise(mode: &str, value_first: bool) -> Option<Step> {
        Some(match (mode, value_first) {
            ("add", _) => Step::Add,
            ("mul", _) => Step::Mul,
            ("sub", true) => Step::Sub,
            ("sub", false) => Step::RSub,
            ("div", true) => Step::Div,
            ("div", false) => Step::RDiv,
            _ => return None,
        })
    }

    /// The real result (through the elementwise modes, so it matches `graph.elemwise`).
    pub fn apply(self, v: f64, k: f64) -> f64 {
        match self {
            Step::Add => Mode::Add.apply(&[v, k]),
            Step::Sub => Mode::Sub.apply(&[v, k]),
            Step::Mul => Mode::Mul.apply(&[v, k]),
            Step::Div => Mode::Div.apply(&[v, k]),
            Step::RSub => Mode::Sub.apply(&[k, v]),
            Step::RDiv => Mode::Div.apply(&[k, v]),
        }
    }
}

/// The attributes of a `graph.fused_preprocess`, validated.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Plan {
    /// The input's layout.
    pub in_layout: ImageLayout,
    /// The result's layout.
    pub out_layout: ImageLayout,
    /// The element type after the first conversion (and of the steps).
    pub dtype: ElemType,
    /// The result's element type.
    pub out_dtype: ElemType,
    /// The arithmetic steps, one constant operand each.
    pub steps: Vec<Step>,
    /// Zero channels appended.
    pub pad_channels: u64,
    /// The block size of a blocked result.
    pub block: Option<u64>,
    /// The warp's attributes ([`WARP_ATTRS`] order), if the chain starts with a warp.
    pub warp: Option<[Attr; 4]>,
}

impl Plan {
    /// The plan that only converts an `in_layout` image to `dtype` (no steps,
    /// no padding, same layout out).
    pub fn convert(in_layout: ImageLayout, dtype: ElemType) -> Plan {
        Plan {
            in_layout,
            out_layout: in_layout,
            dtype,
            out_dtype: dtype,
            steps: Vec::new(),
            pad_channels: 0,
            block: None,
            warp: None,
        }
    }

    /// Reads the attributes through `get` (attribute by key).
    pub fn read(ctx: &Context, get: impl Fn(&str) -> Option<Attr>) -> Result<Plan, String> {
        let str_of = |key: &str| -> Result<Option<&str>, String> {
            match get(key).map(|a| ctx.attr(a)) {
                None => Ok(None),
                Some(AttrData::Str(s)) => Ok(Some(s.as_str())),
                Some(_) => Err(format!("attribute `{key}` must be a string")),
            }
        };
        let int_of = |key: &str| -> Result<Option<i64>, String> {
            match get(key).map(|a| ctx.attr(a)) {
                None => Ok(None),
                Some(AttrData::Int(i)) => Ok(Some(*i)),
                Some(_) => Err(format!("attribute `{key}` must be an integer")),
            }
        };
        let elem_of = |key: &str| -> Result<Option<ElemType>, String> {
            match get(key).map(|a| ctx.attr(a)) {
                None => Ok(None),
                Some(AttrData::Type(t)) => match ctx.ty(*t) {
                    TypeData::Scalar(e) => Ok(Some(*e)),
                    _ => Err(format!("attribute `{key}` must be an element type such as `f32` or `qs8<0.1>`")),
                },
                Some(_) => Err(format!("attribute `{key}` must be an element type")),
            }
        };
        let layout = |key: &str| -> Result<ImageLayout, String> {
            ImageLayout::parse(str_of(key)?.ok_or_else(|| format!("requires attribute `{key}`"))?)
                .map_err(|e| format!("attribute `{key}`: {e}"))
        };
        let in_layout = layout("in_layout")?;
        let out_layout = layout("out_layout")?;
        let dtype = elem_of("dtype")?.ok_or("requires attribute `dtype`")?;
        let out_dtype = elem_of("out_dtype")?.unwrap_or(dtype);
        let steps = match get("steps").map(|a| ctx.attr(a)) {
            Some(AttrData::Array(items)) => items
                .iter()
                .map(|&a| match ctx.attr(a) {
                    AttrData::Str(s) => Step::parse(s),
                    _ => Err("attribute `steps` must be an array of step names such as [\"sub\", \"mul\"]".into()),
                })
                .collect::<Result<Vec<_>, _>>()?,
            Some(_) => return Err("attribute `steps` must be an array of step names".into()),
            None => return Err("requires attribute `steps`".into()),
        };
        let pad_channels = match int_of("pad_channels")? {
            None => 0,
            Some(p) if p >= 0 => p as u64,
            Some(p) => return Err(format!("attribute `pad_channels` must be >= 0, is {p}")),
        };
        let block = match int_of("block")? {
            None => None,
            Some(b) if b >= 1 => Some(b as u64),
            Some(b) => return Err(format!("attribute `block` must be >= 1, is {b}")),
        };
        if block.is_some() && out_layout != ImageLayout::Nchw {
            return Err("attribute `block` needs out_layout = \"nchw\" (the result is [N, C/b, H, W, b])".into());
        }
        let warp = match WARP_ATTRS.map(&get) {
            [None, None, None, None] => None,
            [Some(output), Some(imode), Some(border_mode), Some(border_value)] => {
                Some([output, imode, border_mode, border_value])
            }
            _ => {
                return Err(format!(
                    "the warp attributes {} go together: give all of them or none",
                    WARP_ATTRS.map(|k| format!("`{k}`")).join(", ")
                ));
            }
        };
        if warp.is_some() && in_layout != ImageLayout::Nchw {
            return Err("a warp reads [N, C, H, W] images: `in_layout` must be \"nchw\"".into());
        }
        Ok(Plan { in_layout, out_layout, dtype, out_dtype, steps, pad_channels, block, warp })
    }

    /// Reads the attributes of an op being inferred or evaluated.
    pub fn of(cx: &OpCx<'_>) -> Result<Plan, String> {
        Plan::read(cx.ctx, |k| cx.attrs.get(k))
    }

    /// The attributes, sorted by key, leaving out those at their defaults.
    pub fn to_attrs(&self, ctx: &mut Context) -> Vec<(String, Attr)> {
        let mut s = |v: &str| ctx.intern_attr(AttrData::Str(v.into()));
        let mut out =
            vec![("in_layout".to_string(), s(self.in_layout.name())), ("out_layout".into(), s(self.out_layout.name()))];
        let steps: Vec<Attr> = self.steps.iter().map(|st| s(st.name())).collect();
        out.push(("steps".into(), ctx.intern_attr(AttrData::Array(steps))));
        let mut ty = |e: ElemType| {
            let t = ctx.intern_type(TypeData::Scalar(e));
            ctx.intern_attr(AttrData::Type(t))
        };
        out.push(("dtype".into(), ty(self.dtype)));
        if self.out_dtype != self.dtype {
            out.push(("out_dtype".into(), ty(self.out_dtype)));
        }
        if self.pad_channels > 0 {
            out.push(("pad_channels".into(), ctx.intern_attr(AttrData::Int(self.pad_channels as i64))));
        }
        if let Some(b) = self.block {
            out.push(("block".into(), ctx.intern_attr(AttrData::Int(b as i64))));
        }
        if let Some(w) = self.warp {
            out.extend(WARP_ATTRS.iter().zip(w).map(|(k, a)| (k.to_string(), a)));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Number of operands: the input, the warp matrix if any, one constant per step.
    pub fn operand_count(&self) -> usize {
        1 + usize::from(self.warp.is_some()) + self.steps.len()
    }

    /// Index of the first step constant among the operands.
    pub fn first_constant(&self) -> usize {
        1 + usize::from(self.warp.is_some())
    }

    /// The result dims for an input (after the warp and relayout) of `[N, C, H, W]`.
    fn result_dims(&self, [n, _, h, w]: [Dim; 4], c: u64) -> Result<Vec<Dim>, String> {
        let cp = c
            .checked_add(self.pad_channels)
            .ok_or_else(|| format!("{c} channels plus `pad_channels` = {} overflow", self.pad_channels))?;
        Ok(match (self.out_layout, self.block) {
            (ImageLayout::Nchw, None) => vec![n, Dim::Fixed(cp), h, w],
            (ImageLayout::Nhwc, _) => vec![n, h, w, Dim::Fixed(cp)],
            (ImageLayout::Nchw, Some(b)) => {
                if !cp.is_multiple_of(b) {
                    return Err(format!("attribute `block` = {b} does not divide the {cp} channels after padding"));
                }
                vec![n, Dim::Fixed(cp / b), h, w, Dim::Fixed(b)]
            }
        })
    }
}

/// The warp's attributes among the op's (keys as the op stores them).
fn warp_items(cx: &OpCx<'_>) -> Vec<(Sym, Attr)> {
    cx.attrs.items().iter().filter(|(k, _)| WARP_ATTRS.contains(&cx.ctx.str(*k))).copied().collect()
}

/// The `[N, C, H, W]` dims after the warp and relayout stages.
fn image_dims(cx: &OpCx<'_>, plan: &Plan) -> Result<[Dim; 4], String> {
    let x = cx.tensor(0)?;
    expect_rank(cx, x, 4, "operand #0 (input)")?;
    if plan.warp.is_some() {
        if cx.operand_types.len() < 2 {
            return Err("a warp needs operand #1 (mat [N, 3, 3])".into());
        }
        let items = warp_items(cx);
        let wcx = OpCx {
            ctx: cx.ctx,
            name: WarpPerspectiveOp::DEF.name,
            attrs: strata_ir::AttrList::new(cx.ctx, &items),
            operand_types: &cx.operand_types[..2],
            result_types: &[],
        };
        let infer = WarpPerspectiveOp::DEF.infer.expect("invariant: warp_perspective has shape inference");
        let out = infer(&wcx).map_err(|e| format!("the warp: {e}"))?;
        let Some(TypeData::Tensor(t)) = out.first() else {
            return Err("invariant: the warp gives one tensor".into());
        };
        return Ok([t.shape[0], t.shape[1], t.shape[2], t.shape[3]]);
    }
    let s = &x.shape;
    Ok(match plan.in_layout {
        ImageLayout::Nchw => [s[0], s[1], s[2], s[3]],
        ImageLayout::Nhwc => [s[0], s[3], s[1], s[2]],
    })
}

fn infer_fused_preprocess(cx: &OpCx<'_>) -> Result<Vec<TypeData>, String> {
    let plan = Plan::of(cx)?;
    if cx.operand_types.len() != plan.operand_count() {
        return Err(format!(
            "takes {} operands (the input{}, one constant per step), got {}",
            plan.operand_count(),
            if plan.warp.is_some() { ", the warp matrix" } else { "" },
            cx.operand_types.len()
        ));
    }
    let dims = image_dims(cx, &plan)?;
    let c = fixed_dim(dims[1], "the channel dim of operand #0 (input)")?;
    if !plan.steps.is_empty() && !plan.dtype.is_float() {
        return Err(format!("arithmetic steps need a float `dtype`, not {}", plan.dtype));
    }
    for (j, step) in plan.steps.iter().enumerate() {
        let i = plan.first_constant() + j;
        let k = cx.tensor(i)?;
        let what = format!("operand #{i} (the constant of step `{}`)", step.name());
        if k.layout != Layout::Nchw {
            return Err(format!("{what} must have the plain layout, has #{}", k.layout));
        }
        if k.elem != plan.dtype {
            return Err(format!("{what} must have the element type {}, has {}", plan.dtype, k.elem));
        }
        let n =
            k.num_elements().ok_or_else(|| format!("{what} must have a fixed shape, has {}", show(cx, &k.shape)))?;
        if n != 1 && n != c {
            return Err(format!("{what} must hold 1 value or one per channel ({c}), has shape {}", show(cx, &k.shape)));
        }
    }
    let shape = plan.result_dims(dims, c)?;
    Ok(vec![TypeData::Tensor(TensorType { shape, elem: plan.out_dtype, layout: Layout::Nchw })])
}

// ---- evaluation ---------------------------------------------------------------------

/// `t` with its axes permuted (`pattern[i]` is the input axis of result axis `i`).
fn permute(t: &TensorData, pattern: &[usize]) -> Result<TensorData, String> {
    let shape: Vec<usize> = pattern.iter().map(|&p| t.shape()[p]).collect();
    let st = strides(t.shape());
    gather(t, &shape, |idx| Some(idx.iter().zip(pattern).map(|(&i, &p)| i * st[p]).sum()))
}

/// Applies `step` with constant `k` (1 or `c` values) to `t [N, C, H, W]`, rounding to its type.
fn apply_step(t: &TensorData, step: Step, k: &TensorData) -> Result<TensorData, String> {
    let [_, c, h, w] = four(t.shape())?;
    if k.len() != 1 && k.len() != c {
        return Err(format!("a step constant must hold 1 or {c} values, has shape {:?}", k.shape()));
    }
    let elem = t.elem();
    let mut bytes = Vec::with_capacity(t.len() * elem.size_bytes());
    for i in 0..t.len() {
        let kv = if k.len() == 1 { k.get_real(0) } else { k.get_real(i / (h * w) % c) };
        TensorData::encode_real(elem, step.apply(t.get_real(i), kv), &mut bytes);
    }
    TensorData::from_bytes(elem, t.shape().to_vec(), bytes.into()).map_err(|e| e.to_string())
}

/// `t [N, C, H, W]` with `pad` channels of (real) zero appended.
fn pad_channels(t: &TensorData, pad: usize) -> Result<TensorData, String> {
    let [n, c, h, w] = four(t.shape())?;
    let cp = c.checked_add(pad).ok_or("the padded channel count overflows")?;
    let shape = vec![n, cp, h, w];
    check_eval_size(&shape)?;
    let size = t.elem().size_bytes();
    let mut zero = Vec::with_capacity(size);
    TensorData::encode_real(t.elem(), 0.0, &mut zero);
    let plane = h * w * size;
    let mut bytes = Vec::with_capacity(n * cp * plane);
    for b in 0..n {
        let image = &t.bytes()[b * c * plane..(b + 1) * c * plane];
        bytes.extend_from_slice(image);
        for _ in 0..pad * h * w {
            bytes.extend_from_slice(&zero);
        }
    }
    TensorData::from_bytes(t.elem(), shape, bytes.into()).map_err(|e| e.to_string())
}

fn four(shape: &[usize]) -> Result<[usize; 4], String> {
    match *shape {
        [n, c, h, w] => Ok([n, c, h, w]),
        _ => Err(format!("the input must have rank 4, has shape {shape:?}")),
    }
}

fn eval_fused_preprocess(cx: &OpCx<'_>, inputs: &[TensorData]) -> Result<Vec<TensorData>, String> {
    let plan = Plan::of(cx)?;
    if inputs.len() != plan.operand_count() {
        return Err(format!("expected {} inputs, got {}", plan.operand_count(), inputs.len()));
    }
    let warped;
    let x = if plan.warp.is_some() {
        let items = warp_items(cx);
        let wcx = OpCx {
            ctx: cx.ctx,
            name: WarpPerspectiveOp::DEF.name,
            attrs: strata_ir::AttrList::new(cx.ctx, &items),
            operand_types: cx.operand_types.get(..2).unwrap_or(&[]),
            result_types: &[],
        };
        let eval = WarpPerspectiveOp::DEF.eval.expect("invariant: warp_perspective has an evaluator");
        warped = eval(&wcx, &inputs[..2]).map_err(|e| format!("the warp: {e}"))?.remove(0);
        &warped
    } else {
        &inputs[0]
    };
    four(x.shape())?;
    let mut t = convert(x, plan.dtype)?;
    if plan.in_layout == ImageLayout::Nhwc {
        t = permute(&t, &[0, 3, 1, 2])?;
    }
    for (j, &step) in plan.steps.iter().enumerate() {
        t = apply_step(&t, step, &inputs[plan.first_constant() + j])?;
    }
    if plan.pad_channels > 0 {
        let pad = usize::try_from(plan.pad_channels).map_err(|_| "attribute `pad_channels` is too large")?;
        t = pad_channels(&t, pad)?;
    }
    if plan.out_dtype != plan.dtype {
        t = convert(&t, plan.out_dtype)?;
    }
    let [n, c, h, w] = four(t.shape())?;
    let out = match (plan.out_layout, plan.block) {
        (ImageLayout::Nchw, None) => t,
        (ImageLayout::Nhwc, _) => permute(&t, &[0, 2, 3, 1])?,
        (ImageLayout::Nchw, Some(b)) => {
            let b = usize::try_from(b).map_err(|_| "attribute `block` is too large")?;
            if b == 0 || c % b != 0 {
                return Err(format!("attribute `block` = {b} does not divide the {c} channels after padding"));
            }
            let split = t.reshaped(vec![n, c / b, b, h, w]).map_err(|e| e.to_string())?;
            permute(&split, &[0, 1, 3, 4, 2])?
        }
    };
    Ok(vec![out])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply;
    use strata_ir::tensor::SplitMix64;
    use strata_ir::{OpView, QScale};

    /// Evaluates op `name` with attributes given as text through [`apply::eval`].
    fn run(
        ctx: &mut Context,
        name: &str,
        inputs: &[TensorData],
        attrs: &[(&str, String)],
    ) -> Result<TensorData, String> {
        let attrs: Vec<(String, Attr)> = attrs
            .iter()
            .map(|(k, v)| {
                let a = strata_ir::parse_attr_str(ctx, v).unwrap_or_else(|e| panic!("attr `{v}`: {e}"));
                (k.to_string(), a)
            })
            .collect();
        let attrs = apply::intern_attrs(ctx, &attrs);
        Ok(apply::eval(ctx, name, inputs, &attrs)?.remove(0))
    }

    fn run1(ctx: &mut Context, name: &str, inputs: &[TensorData], attrs: &[(&str, String)]) -> TensorData {
        run(ctx, name, inputs, attrs).unwrap_or_else(|e| panic!("{name} {attrs:?}: {e}"))
    }

    fn s(v: &str) -> String {
        v.to_string()
    }

    fn q(v: &str) -> String {
        format!("\"{v}\"")
    }

    /// The chain op by op.
    struct Chain<'a> {
        ctx: &'a mut Context,
        v: TensorData,
    }

    impl Chain<'_> {
        fn typecvt(&mut self, dtype: ElemType) {
            self.v = run1(self.ctx, "graph.typecvt", std::slice::from_ref(&self.v), &[("dtype", dtype.to_string())]);
        }
        fn elemwise(&mut self, mode: &str, k: &TensorData, value_first: bool) {
            let ins = if value_first { [self.v.clone(), k.clone()] } else { [k.clone(), self.v.clone()] };
            self.v = run1(self.ctx, "graph.elemwise", &ins, &[("mode", q(mode))]);
        }
        fn dimshuffle(&mut self, pattern: &str) {
            self.v = run1(self.ctx, "graph.dimshuffle", std::slice::from_ref(&self.v), &[("pattern", s(pattern))]);
        }
        fn pad(&mut self, axis: usize, n: usize) {
            let mut after = [0; 4];
            after[axis] = n;
            self.v = run1(
                self.ctx,
                "graph.pad",
                std::slice::from_ref(&self.v),
                &[
                    ("before", s("[0, 0, 0, 0]")),
                    ("after", format!("{after:?}")),
                    ("mode", q("constant")),
                    ("value", s("0.0")),
                ],
            );
        }
        fn concat_zeros(&mut self, axis: usize, n: usize) {
            let mut shape = self.v.shape().to_vec();
            shape[axis] = n;
            let z = TensorData::from_reals(self.v.elem(), shape, &vec![0.0; self.v.len() / self.v.shape()[axis] * n])
                .unwrap();
            self.v = run1(self.ctx, "graph.concat", &[self.v.clone(), z], &[("axis", axis.to_string())]);
        }
        fn block(&mut self, b: usize) {
            let [n, c, h, w] = four(self.v.shape()).unwrap();
            let shape = format!("[{n}, {}, {b}, {h}, {w}]", c / b);
            self.v = run1(self.ctx, "graph.reshape", std::slice::from_ref(&self.v), &[("shape", shape)]);
            self.dimshuffle("[0, 1, 3, 4, 2]");
        }
    }

    fn fused(ctx: &mut Context, plan: &Plan, inputs: &[TensorData]) -> Result<TensorData, String> {
        let attrs = plan.to_attrs(ctx);
        let attrs = apply::intern_attrs(ctx, &attrs);
        Ok(apply::eval(ctx, FusedPreprocessOp::NAME, inputs, &attrs)?.remove(0))
    }

    fn base(in_layout: ImageLayout, dtype: ElemType) -> Plan {
        Plan::convert(in_layout, dtype)
    }

    fn image(elem: ElemType, shape: &[usize], seed: u64) -> TensorData {
        TensorData::random_uniform(elem, shape.to_vec(), 0.0, 256.0, seed).unwrap()
    }

    /// The zoo's chain: u8 NHWC → f32 → (x - mean) · scale → NCHW → pad 3 → 4.
    #[test]
    fn zoo_chain_matches() {
        let mut ctx = crate::context();
        let x = image(ElemType::U8, &[2, 5, 6, 3], 1);
        let mean = TensorData::from_f64(ElemType::F32, vec![1, 1, 1, 3], &[123.675, 116.28, 103.53]).unwrap();
        let scale =
            TensorData::from_f64(ElemType::F32, vec![1, 1, 1, 3], &[1.0 / 58.395, 1.0 / 57.12, 1.0 / 57.375]).unwrap();
        let mut ch = Chain { ctx: &mut ctx, v: x.clone() };
        ch.typecvt(ElemType::F32);
        ch.elemwise("sub", &mean, true);
        ch.elemwise("mul", &scale, true);
        ch.dimshuffle("[0, 3, 1, 2]");
        ch.pad(1, 1);
        let want = ch.v;
        let plan = Plan {
            out_layout: ImageLayout::Nchw,
            steps: vec![Step::Sub, Step::Mul],
            pad_channels: 1,
            ..base(ImageLayout::Nhwc, ElemType::F32)
        };
        let got = fused(&mut ctx, &plan, &[x, mean, scale]).unwrap();
        assert_eq!(got.shape(), [2, 4, 5, 6]);
        assert_eq!(got, want);
    }

    /// MegEngine's NCHW4 int8 chain: u8 → f32 → + (-128) → qs8 → concat zeros → NCHW4.
    #[test]
    fn nchw4_int8_chain_matches() {
        let mut ctx = crate::context();
        let x = image(ElemType::U8, &[2, 3, 4, 5], 2);
        let k = TensorData::from_f64(ElemType::F32, vec![1], &[-128.0]).unwrap();
        let qs8 = ElemType::QS8(QScale::new(1.0));
        let mut ch = Chain { ctx: &mut ctx, v: x.clone() };
        ch.typecvt(ElemType::F32);
        ch.elemwise("add", &k, false);
        ch.typecvt(qs8);
        ch.concat_zeros(1, 1);
        ch.block(4);
        let want = ch.v;
        let plan = Plan {
            out_dtype: qs8,
            steps: vec![Step::Add],
            pad_channels: 1,
            block: Some(4),
            ..base(ImageLayout::Nchw, ElemType::F32)
        };
        let got = fused(&mut ctx, &plan, &[x, k]).unwrap();
        assert_eq!(got.shape(), [2, 1, 4, 5, 4]);
        assert_eq!(got, want);
        // The same from a quantised-asymmetric input: qu8 → f32 → qs8.
        let qu8 = ElemType::QU8(QScale::new(0.5), 128);
        let xq = image(qu8, &[1, 3, 2, 2], 3);
        let mut ch = Chain { ctx: &mut ctx, v: xq.clone() };
        ch.typecvt(ElemType::F32);
        ch.typecvt(qs8);
        ch.pad(1, 5);
        ch.block(8);
        let want = ch.v;
        let plan = Plan { out_dtype: qs8, pad_channels: 5, block: Some(8), ..base(ImageLayout::Nchw, ElemType::F32) };
        assert_eq!(fused(&mut ctx, &plan, &[xq]).unwrap(), want);
    }

    /// A warp with an f16 → f32 conversion, then arithmetic and an NHWC result.
    #[test]
    fn warp_then_typecvt_matches() {
        let mut ctx = crate::context();
        let x = TensorData::random_uniform(ElemType::F16, vec![2, 3, 5, 6], -4.0, 4.0, 4).unwrap();
        let m = TensorData::from_f64(
            ElemType::F32,
            vec![2, 3, 3],
            &[0.9, 0.1, 0.3, -0.05, 1.1, 0.2, 0.001, 0.002, 1.0, 1.2, 0.0, -0.5, 0.0, 0.8, 0.7, 0.0, 0.0, 1.0],
        )
        .unwrap();
        let k = TensorData::from_f64(ElemType::F32, vec![1, 3, 1, 1], &[0.5, -2.0, 3.0]).unwrap();
        let warp_attrs = [
            ("output", s("[4, 7]")),
            ("imode", q("linear")),
            ("border_mode", q("reflect")),
            ("border_value", s("1.5")),
        ];
        let mut ch = Chain { ctx: &mut ctx, v: x.clone() };
        ch.v = run1(ch.ctx, "graph.warp_perspective", &[x.clone(), m.clone()], &warp_attrs);
        ch.typecvt(ElemType::F32);
        ch.elemwise("div", &k, false);
        ch.dimshuffle("[0, 2, 3, 1]");
        ch.pad(3, 2);
        let want = ch.v;
        let warp = warp_attrs.map(|(_, v)| strata_ir::parse_attr_str(&mut ctx, &v).unwrap());
        let plan = Plan {
            out_layout: ImageLayout::Nhwc,
            steps: vec![Step::RDiv],
            pad_channels: 2,
            warp: Some(warp),
            ..base(ImageLayout::Nchw, ElemType::F32)
        };
        let got = fused(&mut ctx, &plan, &[x, m, k]).unwrap();
        assert_eq!(got.shape(), [2, 4, 7, 5]);
        assert_eq!(got, want);
    }

    /// Random plans against their chains, in several orders of the same chain.
    #[test]
    fn random_chains_match() {
        let mut ctx = crate::context();
        let mut rng = SplitMix64(77);
        let mut pick = |n: u64| (rng.next_u64() % n) as usize;
        let inputs = [ElemType::U8, ElemType::I8, ElemType::F16, ElemType::QU8(QScale::new(0.25), 3)];
        let dtypes = [ElemType::F32, ElemType::F16, ElemType::BF16];
        let outs = [None, Some(ElemType::F16), Some(ElemType::QS8(QScale::new(0.125))), Some(ElemType::U8)];
        for round in 0..120u64 {
            let in_layout = if pick(2) == 0 { ImageLayout::Nchw } else { ImageLayout::Nhwc };
            let (n, c, h, w) = (1 + pick(2), 1 + pick(4), 1 + pick(4), 1 + pick(4));
            let in_shape = match in_layout {
                ImageLayout::Nchw => [n, c, h, w],
                ImageLayout::Nhwc => [n, h, w, c],
            };
            let x = TensorData::random_uniform(inputs[pick(4)], in_shape.to_vec(), -20.0, 240.0, round).unwrap();
            let dtype = dtypes[pick(3)];
            let out_dtype = outs[pick(4)].unwrap_or(dtype);
            let steps: Vec<Step> = (0..pick(4)).map(|_| STEPS[pick(6)].1).collect();
            let consts: Vec<(TensorData, bool)> = steps
                .iter()
                .enumerate()
                .map(|(j, _)| {
                    let per_channel = pick(2) == 0;
                    let len = if per_channel { c } else { 1 };
                    let v = TensorData::random_uniform(dtype, vec![len], 0.5, 3.0, round * 10 + j as u64).unwrap();
                    (v, per_channel)
                })
                .collect();
            let out_layout = if pick(2) == 0 { ImageLayout::Nchw } else { ImageLayout::Nhwc };
            let pad = pick(4);
            let block = (out_layout == ImageLayout::Nchw && pick(2) == 0).then(|| {
                let cp = c + pad;
                (1..=cp).rev().find(|b| cp % b == 0 && pick(2) == 0).unwrap_or(1)
            });
            let plan = Plan {
                in_layout,
                out_layout,
                dtype,
                out_dtype,
                steps: steps.clone(),
                pad_channels: pad as u64,
                block: block.map(|b| b as u64),
                warp: None,
            };
            let mut ins = vec![x.clone()];
            ins.extend(consts.iter().map(|(k, _)| k.clone()));
            let got = fused(&mut ctx, &plan, &ins).unwrap_or_else(|e| panic!("{plan:?}: {e}"));
            // Orders: arithmetic before or after the relayout; padding before or after the
            // final conversion, by pad or by concat.
            for order in 0..4 {
                let (steps_first, pad_first, by_concat) = (order & 1 == 0, order & 2 == 0, (round + order) % 2 == 0);
                let mut ch = Chain { ctx: &mut ctx, v: x.clone() };
                ch.typecvt(dtype);
                let mut layout = in_layout;
                let do_steps = |ch: &mut Chain<'_>, layout: ImageLayout| {
                    for (step, (k, per_channel)) in steps.iter().zip(&consts) {
                        let shape = match (per_channel, layout) {
                            (false, _) => vec![1, 1, 1, 1],
                            (true, ImageLayout::Nchw) => vec![1, c, 1, 1],
                            (true, ImageLayout::Nhwc) => vec![c],
                        };
                        let k = k.reshaped(shape).unwrap();
                        let (mode, value_first) = match step {
                            Step::RSub => ("sub", false),
                            Step::RDiv => ("div", false),
                            other => (other.name(), true),
                        };
                        ch.elemwise(mode, &k, value_first);
                    }
                };
                let relayout = |ch: &mut Chain<'_>, layout: &mut ImageLayout, to: ImageLayout| {
                    match (*layout, to) {
                        (ImageLayout::Nhwc, ImageLayout::Nchw) => ch.dimshuffle("[0, 3, 1, 2]"),
                        (ImageLayout::Nchw, ImageLayout::Nhwc) => ch.dimshuffle("[0, 2, 3, 1]"),
                        _ => {}
                    }
                    *layout = to;
                };
                if steps_first {
                    do_steps(&mut ch, layout);
                    relayout(&mut ch, &mut layout, out_layout);
                } else {
                    relayout(&mut ch, &mut layout, out_layout);
                    do_steps(&mut ch, layout);
                }
                let pad_now = |ch: &mut Chain<'_>| {
                    if pad > 0 {
                        if by_concat {
                            ch.concat_zeros(layout.channel_axis(), pad)
                        } else {
                            ch.pad(layout.channel_axis(), pad)
                        }
                    }
                };
                if pad_first {
                    pad_now(&mut ch);
                }
                if out_dtype != dtype {
                    ch.typecvt(out_dtype);
                }
                if !pad_first {
                    pad_now(&mut ch);
                }
                if let Some(b) = block {
                    ch.block(b);
                }
                assert_eq!(got, ch.v, "round {round}, order {order}: {plan:?}");
            }
        }
    }

    fn infer(ctx: &mut Context, types: &[&str], attrs: &[(&str, &str)]) -> Result<String, String> {
        let tys: Vec<strata_ir::Ty> = types.iter().map(|t| strata_ir::parse_type_str(ctx, t).unwrap()).collect();
        let attrs: Vec<(String, Attr)> =
            attrs.iter().map(|(k, v)| (k.to_string(), strata_ir::parse_attr_str(ctx, v).unwrap())).collect();
        let attrs = apply::intern_attrs(ctx, &attrs);
        let out = apply::infer(ctx, FusedPreprocessOp::NAME, &tys, &attrs)?;
        Ok(strata_ir::print::type_data_to_string(ctx, &out[0]))
    }

    #[test]
    fn infer_and_errors() {
        let mut ctx = crate::context();
        let zoo = [
            ("in_layout", "\"nhwc\""),
            ("out_layout", "\"nchw\""),
            ("dtype", "f32"),
            ("steps", "[\"sub\", \"mul\"]"),
            ("pad_channels", "1"),
        ];
        let types = ["tensor<?Nx32x32x3xu8>", "tensor<1x1x1x3xf32>", "tensor<1x1x1x3xf32>"];
        assert_eq!(infer(&mut ctx, &types, &zoo).unwrap(), "tensor<?Nx4x32x32xf32>");
        let blocked = [
            ("in_layout", "\"nchw\""),
            ("out_layout", "\"nchw\""),
            ("dtype", "f32"),
            ("out_dtype", "qs8<0.5>"),
            ("steps", "[]"),
            ("pad_channels", "1"),
            ("block", "4"),
        ];
        assert_eq!(infer(&mut ctx, &["tensor<?Nx3x?Hx8xu8>"], &blocked).unwrap(), "tensor<?Nx1x?Hx8x4xqs8<0.5>>");
        let warp = [
            ("in_layout", "\"nchw\""),
            ("out_layout", "\"nhwc\""),
            ("dtype", "f32"),
            ("steps", "[]"),
            ("output", "[4, 6]"),
            ("imode", "\"nearest\""),
            ("border_mode", "\"constant\""),
            ("border_value", "0.0"),
        ];
        assert_eq!(
            infer(&mut ctx, &["tensor<?Nx3x8x8xf16>", "tensor<?Nx3x3xf32>"], &warp).unwrap(),
            "tensor<?Nx4x6x3xf32>"
        );
        let with = |over: &[(&'static str, &'static str)]| {
            let mut a: Vec<(&str, &str)> =
                zoo.iter().copied().filter(|(k, _)| !over.iter().any(|(o, _)| o == k)).collect();
            a.extend(over.iter().copied().filter(|(_, v)| !v.is_empty()));
            a
        };
        type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
        let cases: Vec<Case<'_>> = vec![
            (types.to_vec(), with(&[("dtype", "i32")]), "need a float `dtype`"),
            (types[..2].to_vec(), with(&[]), "takes 3 operands"),
            (vec![types[0], "tensor<1x1x1x3xf32>", "tensor<3xf16>"], with(&[]), "element type f32"),
            (vec![types[0], "tensor<1x1x1x3xf32>", "tensor<2xf32>"], with(&[]), "1 value or one per channel (3)"),
            (vec!["tensor<?Nx32x32x?Cxu8>", types[1], types[2]], with(&[]), "channel dim"),
            (vec!["tensor<32x32x3xu8>", types[1], types[2]], with(&[]), "rank 4"),
            (types.to_vec(), with(&[("out_layout", "\"nhwc\""), ("block", "2")]), "needs out_layout = \"nchw\""),
            (types.to_vec(), with(&[("block", "3")]), "does not divide the 4 channels"),
            (types.to_vec(), with(&[("block", "0")]), "`block` must be >= 1"),
            (types.to_vec(), with(&[("pad_channels", "-1")]), "`pad_channels` must be >= 0"),
            (types.to_vec(), with(&[("steps", "[\"sub\", \"pow\"]")]), "unknown preprocessing step `pow`"),
            (types.to_vec(), with(&[("in_layout", "\"chwn\"")]), "unknown image layout `chwn`"),
            (types.to_vec(), with(&[("output", "[2, 2]")]), "go together"),
            (
                vec![types[0], "tensor<1x3x3xf32>", types[1], types[2]],
                with(&[
                    ("output", "[2, 2]"),
                    ("imode", "\"linear\""),
                    ("border_mode", "\"wrap\""),
                    ("border_value", "0"),
                ]),
                "`in_layout` must be \"nchw\"",
            ),
        ];
        for (tys, attrs, want) in cases {
            let e = infer(&mut ctx, &tys, &attrs).unwrap_err();
            assert!(e.contains(want), "{tys:?} {attrs:?}: {e}");
        }
        // A warp of an integer image is the warp's error, named as such.
        let e = infer(&mut ctx, &["tensor<1x3x8x8xu8>", "tensor<1x3x3xf32>"], &warp).unwrap_err();
        assert!(e.contains("the warp: operand #0 (input) must be a float tensor"), "{e}");
    }

    #[test]
    fn attributes_round_trip() {
        let mut ctx = crate::context();
        let warp =
            ["[2, 3]", "\"linear\"", "\"constant\"", "0.5"].map(|t| strata_ir::parse_attr_str(&mut ctx, t).unwrap());
        let plans = [
            base(ImageLayout::Nhwc, ElemType::F32),
            Plan {
                out_layout: ImageLayout::Nchw,
                out_dtype: ElemType::QS8(QScale::new(0.5)),
                steps: vec![Step::Sub, Step::RDiv, Step::Mul],
                pad_channels: 3,
                block: Some(4),
                warp: Some(warp),
                ..base(ImageLayout::Nchw, ElemType::F16)
            },
        ];
        for plan in plans {
            let attrs = plan.to_attrs(&mut ctx);
            assert!(attrs.windows(2).all(|w| w[0].0 < w[1].0), "sorted keys");
            let back = Plan::read(&ctx, |k| attrs.iter().find(|(n, _)| n == k).map(|&(_, a)| a)).unwrap();
            assert_eq!(back, plan);
        }
        // Defaults are left out, so equal plans give equal attributes.
        let keys: Vec<String> =
            base(ImageLayout::Nchw, ElemType::F32).to_attrs(&mut ctx).into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["dtype", "in_layout", "out_layout", "steps"]);
    }
}
