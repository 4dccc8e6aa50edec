//! Type conversion and data-movement ops: `graph.typecvt`, `graph.reshape`,
//! `graph.dimshuffle`, `graph.broadcast`, `graph.axis_add_remove`,
//! `graph.subtensor`, `graph.pad`, `graph.concat` and `graph.get_var_shape`
//! (reference: `docs/graph-dialect.md`).
//!
//! Every op except `typecvt` moves whole elements: its `eval` copies bytes, so
//! it accepts every element type (quantised ones included) and is exact. The
//! ops index axes, so their operands must have the plain layout; `typecvt` is
//! elementwise and keeps the layout.
//!
//! Symbolic dims (`?N`) pass through wherever a dim is unchanged: dimshuffle
//! permutes them, concat keeps them on the other axes (and requires them to be
//! equal), subtensor and pad keep them on axes they do not touch, reshape keeps
//! them when copied with `0` or when a `-1` stands exactly for the one symbolic
//! dim left over. Anything that needs a number from a symbolic dim is an
//! inference error saying so.
//!
//! Decisions the op table leaves open:
//! - `typecvt` converts through real values: quantising rounds half away from
//!   zero and saturates, float to integer truncates toward zero and saturates
//!   (NaN becomes 0), `bool` reads as 1/0 and any nonzero value becomes `true`.
//!   Integer to integer conversions are exact through `i64` and saturate.
//! - `pad` modes: `constant` fills with `value` encoded in the element type
//!   (for integer types `value` must be an integer in range; for quantised ones
//!   it is quantised, so `0.0` is the zero point); `edge` repeats the border
//!   element; `reflect` mirrors without repeating the border (`dcb|abcd|cba`,
//!   as MegEngine's Padding REFLECT, numpy and PyTorch) and requires each pad
//!   to be smaller than its axis.
//!   `value` is ignored by `edge` and `reflect`.
//! - `broadcast` needs fixed input dims (the target is a list of numbers).
//! - `get_var_shape` fails at run time on a dim that does not fit `i32`.
//! - Results of `broadcast` and `pad` over [`MAX_EVAL_ELEMENTS`] elements are
//!   evaluation errors rather than allocations.
//!
//! Folds (used by `canonicalize`): a typecvt, reshape, broadcast or
//! axis_add_remove whose result type equals its operand's, an identity
//! dimshuffle, a pad by zero and a concat of one operand are their operand;
//! get_var_shape of a static shape is a constant.

use super::common::{fixed, for_each_index, gather, norm_axis, one, show, strides};
use strata_ir::{
    Context, Dim, ElemType, FoldResult, Layout, OpCx, OpId, OpView, Registry, TensorData, TensorType, TypeData,
    attr_kind, define_op, type_to_string,
};

/// The largest result, in elements, that reference evaluation creates when the
/// size comes from attributes (broadcast, pad, resize, warp_perspective).
pub const MAX_EVAL_ELEMENTS: usize = 1 << 28;

define_op! {
    /// Converts every element to the element type `dtype` (through real values).
    pub struct TypeCvtOp = "graph.typecvt" {
        summary: "convert the element type",
        operands: [input],
        results: [output],
        attrs: { dtype: Type },
        optional_attrs: {},
        traits: [PURE],
        fold: fold_same_type,
        infer: infer_typecvt,
        eval: eval_typecvt,
    }
}

define_op! {
    /// Reinterprets the row-major data with another shape (`-1` inferred, `0` copies).
    pub struct ReshapeOp = "graph.reshape" {
        summary: "reshape (one -1 inferred; 0 copies the input dim)",
        operands: [input],
        results: [output],
        attrs: { shape: Ints },
        optional_attrs: {},
        traits: [PURE],
        fold: fold_same_type,
        infer: infer_reshape,
        eval: eval_reshape,
    }
}

define_op! {
    /// Permutes the axes; `-1` in `pattern` inserts a new axis of size 1.
    pub struct DimshuffleOp = "graph.dimshuffle" {
        summary: "permute axes (-1 inserts a size-1 axis)",
        operands: [input],
        results: [output],
        attrs: { pattern: Ints },
        optional_attrs: {},
        traits: [PURE],
        fold: fold_dimshuffle,
        infer: infer_dimshuffle,
        eval: eval_dimshuffle,
    }
}

define_op! {
    /// Broadcasts numpy-style to `shape`.
    pub struct BroadcastOp = "graph.broadcast" {
        summary: "numpy broadcast to a shape",
        operands: [input],
        results: [output],
        attrs: { shape: Ints },
        optional_attrs: {},
        traits: [PURE],
        fold: fold_same_type,
        infer: infer_broadcast,
        eval: eval_broadcast,
    }
}

define_op! {
    /// Inserts (`add`) or drops (`remove`) size-1 axes.
    pub struct AxisAddRemoveOp = "graph.axis_add_remove" {
        summary: "insert or remove size-1 axes",
        operands: [input],
        results: [output],
        attrs: { mode: Str, axes: Ints },
        optional_attrs: {},
        traits: [PURE],
        fold: fold_same_type,
        infer: infer_axis_add_remove,
        eval: eval_axis_add_remove,
    }
}

define_op! {
    /// Python-style slicing of some axes (`begin:end:step` per axis).
    pub struct SubtensorOp = "graph.subtensor" {
        summary: "slice axes like Python (begin:end:step)",
        operands: [input],
        results: [output],
        attrs: { axes: Ints, begin: Ints, end: Ints, step: Ints },
        optional_attrs: {},
        traits: [PURE],
        infer: infer_subtensor,
        eval: eval_subtensor,
    }
}

define_op! {
    /// Pads every axis by `before`/`after` elements (`constant`, `edge` or `reflect`).
    pub struct PadOp = "graph.pad" {
        summary: "pad axes (constant, edge, reflect)",
        operands: [input],
        results: [output],
        attrs: { before: Ints, after: Ints, mode: Str, value: Float },
        optional_attrs: {},
        traits: [PURE],
        fold: fold_pad,
        infer: infer_pad,
        eval: eval_pad,
    }
}

define_op! {
    /// Concatenates its operands along `axis`.
    pub struct ConcatOp = "graph.concat" {
        summary: "concatenate along an axis",
        operands: [],
        results: [output],
        attrs: { axis: Int },
        optional_attrs: {},
        traits: [PURE],
        variadic: inputs,
        fold: fold_concat,
        infer: infer_concat,
        eval: eval_concat,
    }
}

define_op! {
    /// The runtime shape of its operand as `i32` (one dim with `axis`).
    pub struct GetVarShapeOp = "graph.get_var_shape" {
        summary: "the runtime shape as an i32 tensor",
        operands: [input],
        results: [output],
        attrs: {},
        optional_attrs: { axis: Int },
        traits: [PURE],
        fold: fold_get_var_shape,
        infer: infer_get_var_shape,
        eval: eval_get_var_shape,
    }
}

pub(crate) fn register(r: &mut Registry) {
    for def in [
        TypeCvtOp::DEF,
        ReshapeOp::DEF,
        DimshuffleOp::DEF,
        BroadcastOp::DEF,
        AxisAddRemoveOp::DEF,
        SubtensorOp::DEF,
        PadOp::DEF,
        ConcatOp::DEF,
        GetVarShapeOp::DEF,
    ] {
        r.register(def).expect("invariant: graph ops register once");
    }
}

// ---- shared helpers ---------------------------------------------------------------

/// Operand `i` as a plain-layout tensor, naming it in errors.
fn plain_tensor<'a>(cx: &OpCx<'a>, i: usize) -> Result<&'a TensorType, String> {
    let t = cx.tensor(i)?;
    if t.layout != Layout::Nchw {
        return Err(format!("operand #{i} must have the plain layout, has #{}", t.layout));
    }
    Ok(t)
}

/// The result of an op with the input's element type and layout and `shape`.
fn result_like(t: &TensorType, shape: Vec<Dim>) -> Vec<TypeData> {
    vec![TypeData::Tensor(TensorType { shape, elem: t.elem, layout: t.layout })]
}

/// Converts inferred dims (all fixed in eval) to sizes.
fn to_sizes(dims: &[Dim]) -> Result<Vec<usize>, String> {
    dims.iter()
        .map(|d| {
            d.fixed()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| "invariant: evaluation dims are fixed and fit usize".to_string())
        })
        .collect()
}

/// Fails if a result of `shape` would exceed [`MAX_EVAL_ELEMENTS`].
pub(crate) fn check_eval_size(shape: &[usize]) -> Result<(), String> {
    match strata_ir::tensor::num_elements(shape) {
        Some(n) if n <= MAX_EVAL_ELEMENTS => Ok(()),
        _ => Err(format!(
            "the result shape {shape:?} has more than {MAX_EVAL_ELEMENTS} elements; the reference evaluator refuses to allocate it"
        )),
    }
}

/// Text of a dim for messages.
fn show_dim(cx: &OpCx<'_>, d: Dim) -> String {
    match d {
        Dim::Fixed(n) => n.to_string(),
        Dim::Sym(s) => format!("?{}", cx.ctx.str(s)),
    }
}

/// The single result of a fold that keeps the input, if input and result types agree.
fn keep_input(ctx: &Context, op: OpId) -> Option<Vec<FoldResult>> {
    let data = ctx.op(op);
    let (&input, &output) = (data.operands.first()?, data.results.first()?);
    (data.operands.len() == 1 && ctx.value_type(input) == ctx.value_type(output))
        .then(|| vec![FoldResult::Value(input)])
}

/// typecvt to the same type, reshape or broadcast to the same shape, and
/// axis_add_remove without axes are the identity.
fn fold_same_type(ctx: &Context, op: OpId) -> Option<Vec<FoldResult>> {
    keep_input(ctx, op)
}

// ---- typecvt ------------------------------------------------------------------------

fn target_dtype(cx: &OpCx<'_>) -> Result<ElemType, String> {
    let t = cx.attrs.req::<attr_kind::Type>("dtype")?;
    match cx.ctx.ty(t) {
        TypeData::Scalar(e) => Ok(*e),
        _ => Err(format!(
            "attribute `dtype` must be an element type such as `f16` or `qs8<0.1>`, is {}",
            type_to_string(cx.ctx, t)
        )),
    }
}

fn infer_typecvt(cx: &OpCx<'_>) -> Result<Vec<TypeData>, String> {
    let x = cx.tensor(0)?;
    let elem = target_dtype(cx)?;
    Ok(vec![TypeData::Tensor(TensorType { shape: x.shape.clone(), elem, layout: x.layout })])
}

/// Plain integer types (not bool, not quantised).
fn is_plain_int(e: ElemType) -> bool {
    !e.is_float() && !e.is_quantized() && e != ElemType::Bool
}

/// Appends `v` as an element of the plain integer type `to`, saturating.
fn encode_int_saturating(to: ElemType, v: i64, out: &mut Vec<u8>) {
    fn sat<T: TryFrom<i64> + Copy>(v: i64, lo: T, hi: T) -> T {
        T::try_from(v).unwrap_or(if v < 0 { lo } else { hi })
    }
    match to {
        ElemType::I8 => out.extend(sat(v, i8::MIN, i8::MAX).to_le_bytes()),
        ElemType::U8 => out.extend(sat(v, u8::MIN, u8::MAX).to_le_bytes()),
        ElemType::I16 => out.extend(sat(v, i16::MIN, i16::MAX).to_le_bytes()),
        ElemType::U16 => out.extend(sat(v, u16::MIN, u16::MAX).to_le_bytes()),
        ElemType::I32 => out.extend(sat(v, i32::MIN, i32::MAX).to_le_bytes()),
        ElemType::I64 => out.extend(v.to_le_bytes()),
        other => TensorData::encode_real(other, v as f64, out),
    }
}

/// Converts `x` to element type `to` (see the module docs for the rules).
pub fn convert(x: &TensorData, to: ElemType) -> Result<TensorData, String> {
    let from = x.elem();
    let mut bytes = Vec::with_capacity(x.len() * to.size_bytes());
    for i in 0..x.len() {
        if is_plain_int(from) && is_plain_int(to) {
            encode_int_saturating(to, x.get_i64(i), &mut bytes);
        } else {
            TensorData::encode_real(to, x.get_real(i), &mut bytes);
        }
    }
    TensorData::from_bytes(to, x.shape().to_vec(), bytes.into()).map_err(|e| e.to_string())
}

fn eval_typecvt(cx: &OpCx<'_>, inputs: &[TensorData]) -> Result<Vec<TensorData>, String> {
    let x = one(inputs)?;
    Ok(vec![convert(x, target_dtype(cx)?)?])
}

// ---- reshape ------------------------------------------------------------------------

/// The result dims of reshaping `input` by `spec` (see the module docs).
fn reshape_dims(cx: &OpCx<'_>, input: &[Dim], spec: &[i64]) -> Result<Vec<Dim>, String> {
    let shown = || format!("reshape of {} to {spec:?}", show(cx, input));
    let mut out = Vec::with_capacity(spec.len());
    let mut infer_at = None;
    let mut fixed_out: u64 = 1;
    for (i, &v) in spec.iter().enumerate() {
        let d = match v {
            -1 => {
                if infer_at.replace(i).is_some() {
                    return Err(format!("attribute `shape` may contain at most one -1, is {spec:?}"));
                }
                out.push(Dim::Fixed(0)); // placeholder, replaced below
                continue;
            }
            0 => *input.get(i).ok_or_else(|| {
                format!(
                    "attribute `shape` copies input dim {i} with 0, but the input {} has rank {}",
                    show(cx, input),
                    input.len()
                )
            })?,
            v if v > 0 => Dim::Fixed(v as u64),
            v => {
                return Err(format!(
                    "attribute `shape` has {v} at index {i} (expected a size >= 1, 0 to copy the input dim, or -1)"
                ));
            }
        };
        if let Dim::Fixed(n) = d {
            fixed_out =
                fixed_out.checked_mul(n).ok_or_else(|| format!("attribute `shape` {spec:?} has too many elements"))?;
        }
        out.push(d);
    }
    let mut fixed_in: u64 = 1;
    let mut left_over = Vec::new();
    for (j, &d) in input.iter().enumerate() {
        match d {
            Dim::Fixed(n) => {
                fixed_in = fixed_in
                    .checked_mul(n)
                    .ok_or_else(|| format!("the input shape {} has too many elements", show(cx, input)))?
            }
            Dim::Sym(_) if spec.get(j) == Some(&0) => {}
            Dim::Sym(_) => left_over.push(d),
        }
    }
    let names = |ds: &[Dim]| ds.iter().map(|&d| show_dim(cx, d)).collect::<Vec<_>>().join(", ");
    match (infer_at, left_over.as_slice()) {
        (None, []) if fixed_in == fixed_out => {}
        (None, []) => {
            return Err(format!("{}: {fixed_in} elements cannot become {fixed_out}", shown()));
        }
        (None, syms) => {
            return Err(format!(
                "{}: input dim {} is symbolic, so attribute `shape` needs a number for it; copy it with 0 or let a -1 stand for it",
                shown(),
                names(syms)
            ));
        }
        (Some(at), []) => {
            if fixed_out == 0 || !fixed_in.is_multiple_of(fixed_out) {
                return Err(format!(
                    "{}: cannot infer the -1, {fixed_in} elements are not a multiple of {fixed_out}",
                    shown()
                ));
            }
            out[at] = Dim::Fixed(fixed_in / fixed_out);
        }
        (Some(at), [sym]) => {
            if fixed_in != fixed_out {
                return Err(format!(
                    "{}: the -1 would be {}·{fixed_in}/{fixed_out}, which needs a number for the symbolic dim {}",
                    shown(),
                    show_dim(cx, *sym),
                    show_dim(cx, *sym)
                ));
            }
            out[at] = *sym;
        }
        (Some(_), syms) => {
            return Err(format!(
                "{}: input dims {} are symbolic and not copied with 0; a -1 can stand for only one of them",
                shown(),
                names(syms)
            ));
        }
    }
    Ok(out)
}

fn infer_reshape(cx: &OpCx<'_>) -> Result<Vec<TypeData>, String> {
    let x = plain_tensor(cx, 0)?;
    let dims = reshape_dims(cx, &x.shape, &cx.attrs.ints("shape")?)?;
    Ok(result_like(x, dims))
}

fn eval_reshape(cx: &OpCx<'_>, inputs: &[TensorData]) -> Result<Vec<TensorData>, String> {
    let x = one(inputs)?;
    let dims = reshape_dims(cx, &fixed(x.shape()), &cx.attrs.ints("shape")?)?;
    Ok(vec![x.reshaped(to_sizes(&dims)?).map_err(|e| e.to_string())?])
}

// ---- dimshuffle ---------------------------------------------------------------------

/// Validates `pattern` against rank `rank`.
fn check_pattern(rank: usize, pattern: &[i64]) -> Result<(), String> {
    let mut seen = vec![false; rank];
    for (i, &p) in pattern.iter().enumerate() {
        if p == -1 {
            continue;
        }
        let axis = usize::try_from(p).ok().filter(|&a| a < rank).ok_or_else(|| {
            format!("attribute `pattern` has {p} at index {i}, which is neither an input axis (rank {rank}) nor -1")
        })?;
        if std::mem::replace(&mut seen[axis], true) {
            return Err(format!("attribute `pattern` {pattern:?} uses input axis {axis} twice"));
        }
    }
    if let Some(missing) = seen.iter().position(|s| !s) {
        return Err(format!(
            "attribute `pattern` {pattern:?} must be a permutation of the input axes; axis {missing} is missing"
        ));
    }
    Ok(())
}

fn dimshuffle_dims(input: &[Dim], pattern: &[i64]) -> Result<Vec<Dim>, String> {
    check_pattern(input.len(), pattern)?;
    Ok(pattern.iter().map(|&p| if p < 0 { Dim::Fixed(1) } else { input[p as usize] }).collect())
}

fn infer_dimshuffle(cx: &OpCx<'_>) -> Result<Vec<TypeData>, String> {
    let x = plain_tensor(cx, 0)?;
    let dims = dimshuffle_dims(&x.shape, &cx.attrs.ints("pattern")?)?;
    Ok(result_like(x, dims))
}

fn eval_dimshuffle(cx: &OpCx<'_>, inputs: &[TensorData]) -> Result<Vec<TensorData>, String> {
    let x = one(inputs)?;
    let pattern = cx.attrs.ints("pattern")?;
    let shape = to_sizes(&dimshuffle_dims(&fixed(x.shape()), &pattern)?)?;
    let st = strides(x.shape());
    let out = gather(x, &shape, |idx| {
        Some(idx.iter().zip(&pattern).filter(|&(_, &p)| p >= 0).map(|(&i, &p)| i * st[p as usize]).sum())
    })?;
    Ok(vec![out])
}

fn fold_dimshuffle(ctx: &Context, op: OpId) -> Option<Vec<FoldResult>> {
    DimshuffleOp::cast(ctx, op)?;
    let pattern = ctx.op_attr(op, "pattern").and_then(|a| <attr_kind::Ints as attr_kind::Get>::get(ctx, a))?;
    let identity = pattern.iter().enumerate().all(|(i, &p)| p == i as i64);
    if identity { keep_input(ctx, op) } else { None }
}

// ---- broadcast ----------------------------------------------------------------------

fn broadcast_dims(cx: &OpCx<'_>, input: &[Dim], target: &[i64]) -> Result<Vec<Dim>, String> {
    if target.len() < input.len() {
        return Err(format!(
            "attribute `shape` {target:?} has rank {} but the input {} has rank {}; broadcasting cannot drop axes",
            target.len(),
            show(cx, input),
            input.len()
        ));
    }
    if let Some(&v) = target.iter().find(|&&v| v < 0) {
        return Err(format!("attribute `shape` {target:?} has the negative size {v}"));
    }
    target
        .iter()
        .try_fold(1u64, |acc, &v| acc.checked_mul(v as u64))
        .ok_or_else(|| format!("attribute `shape` {target:?} has too many elements"))?;
    let off = target.len() - input.len();
    for (i, &d) in input.iter().enumerate() {
        let t = target[off + i] as u64;
        match d {
            Dim::Fixed(n) if n == t || n == 1 => {}
            Dim::Fixed(n) => {
                return Err(format!(
                    "the input {} does not broadcast to attribute `shape` {target:?}: input axis {i} has size {n}, not 1 or {t}",
                    show(cx, input)
                ));
            }
            Dim::Sym(_) => {
                return Err(format!(
                    "input axis {i} has the symbolic size {}; broadcasting to attribute `shape` {target:?} needs a number for it",
                    show_dim(cx, d)
                ));
            }
        }
    }
    Ok(target.iter().map(|&v| Dim::Fixed(v as u64)).collect())
}

fn infer_broadcast(cx: &OpCx<'_>) -> Result<Vec<TypeData>, String> {
    let x = plain_tensor(cx, 0)?;
    let dims = broadcast_dims(cx, &x.shape, &cx.attrs.ints("shape")?)?;
    Ok(result_like(x, dims))
}

fn eval_broadcast(cx: &OpCx<'_>, inputs: &[TensorData]) -> Result<Vec<TensorData>, String> {
    let x = one(inputs)?;
    let shape = to_sizes(&broadcast_dims(cx, &fixed(x.shape()), &cx.attrs.ints("shape")?)?)?;
    check_eval_size(&shape)?;
    Ok(vec![gather(x, &shape, |idx| Some(super::common::broadcast_offset(idx, x.shape())))?])
}

// ---- axis_add_remove ----------------------------------------------------------------

/// Normalised, distinct axes of attribute `axes` for `rank`.
fn distinct_axes(axes: &[i64], rank: usize) -> Result<Vec<usize>, String> {
    let mut out: Vec<usize> = Vec::with_capacity(axes.len());
    for &a in axes {
        let n = norm_axis(a, rank).map_err(|e| format!("attribute `axes`: {e}"))?;
        if out.contains(&n) {
            return Err(format!("attribute `axes` {axes:?} names axis {n} twice"));
        }
        out.push(n);
    }
    Ok(out)
}

fn axis_add_remove_dims(cx: &OpCx<'_>, input: &[Dim]) -> Result<Vec<Dim>, String> {
    let axes = cx.attrs.ints("axes")?;
    match cx.attrs.str("mode")? {
        "add" => {
            let rank = input.len() + axes.len();
            let at = distinct_axes(&axes, rank)?;
            let mut rest = input.iter();
            Ok((0..rank)
                .map(|i| if at.contains(&i) { Dim::Fixed(1) } else { *rest.next().expect("invariant: rank adds up") })
                .collect())
        }
        "remove" => {
            let at = distinct_axes(&axes, input.len())?;
            for &a in &at {
                if input[a] != Dim::Fixed(1) {
                    return Err(format!(
                        "mode `remove` cannot drop axis {a} of {}: its size is {}, not 1",
                        show(cx, input),
                        show_dim(cx, input[a])
                    ));
                }
            }
            Ok(input.iter().enumerate().filter(|(i, _)| !at.contains(i)).map(|(_, &d)| d).collect())
        }
        other => Err(format!("unknown axis_add_remove mode `{other}` (expected add or remove)")),
    }
}

fn infer_axis_add_remove(cx: &OpCx<'_>) -> Result<Vec<TypeData>, String> {
    let x = plain_tensor(cx, 0)?;
    let dims = axis_add_remove_dims(cx, &x.shape)?;
    Ok(result_like(x, dims))
}

fn eval_axis_add_remove(cx: &OpCx<'_>, inputs: &[TensorData]) -> Result<Vec<TensorData>, String> {
    let x = one(inputs)?;
    let dims = axis_add_remove_dims(cx, &fixed(x.shape()))?;
    Ok(vec![x.reshaped(to_sizes(&dims)?).map_err(|e| e.to_string())?])
}

// ---- subtensor ----------------------------------------------------------------------

/// The first index and the length of the Python slice `begin:end:step` of an
/// axis of size `d` (`step != 0`).
pub fn py_slice(begin: i64, end: i64, step: i64, d: u64) -> (i128, u64) {
    let (b, e, s, d) = (i128::from(begin), i128::from(end), i128::from(step), i128::from(d));
    let (b, len) = if s > 0 {
        let b = if b < 0 { (b + d).max(0) } else { b.min(d) };
        let e = if e < 0 { (e + d).max(0) } else { e.min(d) };
        (b, if e > b { (e - b + s - 1) / s } else { 0 })
    } else {
        let b = if b < 0 { (b + d).max(-1) } else { b.min(d - 1) };
        let e = if e < 0 { (e + d).max(-1) } else { e.min(d - 1) };
        (b, if b > e { (b - e - s - 1) / -s } else { 0 })
    };
    (b, u64::try_from(len).expect("invariant: a slice is no longer than its axis"))
}

/// The result dims and, per input axis, `(first index, step)`.
type SlicePlan = (Vec<Dim>, Vec<(i128, i128)>);

fn subtensor_plan(cx: &OpCx<'_>, input: &[Dim]) -> Result<SlicePlan, String> {
    let (axes, begin, end, step) =
        (cx.attrs.ints("axes")?, cx.attrs.ints("begin")?, cx.attrs.ints("end")?, cx.attrs.ints("step")?);
    if begin.len() != axes.len() || end.len() != axes.len() || step.len() != axes.len() {
        return Err(format!(
            "attributes `axes`, `begin`, `end`, `step` must have equal lengths, have {}, {}, {}, {}",
            axes.len(),
            begin.len(),
            end.len(),
            step.len()
        ));
    }
    let at = distinct_axes(&axes, input.len())?;
    let mut dims = input.to_vec();
    let mut plan = vec![(0i128, 1i128); input.len()];
    for (k, &a) in at.iter().enumerate() {
        if step[k] == 0 {
            return Err(format!("attribute `step` {:?} has 0 at index {k}; steps must be nonzero", step));
        }
        let Dim::Fixed(d) = input[a] else {
            return Err(format!(
                "axis {a} has the symbolic size {}; slicing it needs a number for it",
                show_dim(cx, input[a])
            ));
        };
        let (first, len) = py_slice(begin[k], end[k], step[k], d);
        dims[a] = Dim::Fixed(len);
        plan[a] = (first, i128::from(step[k]));
    }
    Ok((dims, plan))
}

fn infer_subtensor(cx: &OpCx<'_>) -> Result<Vec<TypeData>, String> {
    let x = plain_tensor(cx, 0)?;
    Ok(result_like(x, subtensor_plan(cx, &x.shape)?.0))
}

fn eval_subtensor(cx: &OpCx<'_>, inputs: &[TensorData]) -> Result<Vec<TensorData>, String> {
    let x = one(inputs)?;
    let (dims, plan) = subtensor_plan(cx, &fixed(x.shape()))?;
    let st = strides(x.shape());
    let out = gather(x, &to_sizes(&dims)?, |idx| {
        let lin: i128 = idx
            .iter()
            .zip(&plan)
            .zip(&st)
            .map(|((&i, &(first, step)), &s)| (first + i as i128 * step) * s as i128)
            .sum();
        usize::try_from(lin).ok()
    })?;
    Ok(vec![out])
}

// ---- pad ----------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PadMode {
    Constant,
    Edge,
    Reflect,
}

/// The validated padding of an input of `input` dims and element type `elem`.
struct PadPlan {
    before: Vec<u64>,
    mode: PadMode,
    value: f64,
    dims: Vec<Dim>,
}

fn pad_plan(cx: &OpCx<'_>, input: &[Dim], elem: ElemType) -> Result<PadPlan, String> {
    let rank = input.len();
    let read = |key: &str| -> Result<Vec<u64>, String> {
        let v = cx.attrs.ints(key)?;
        if v.len() != rank || v.iter().any(|&x| x < 0) {
            return Err(format!("attribute `{key}` must have one integer >= 0 per axis (rank {rank}), is {v:?}"));
        }
        Ok(v.into_iter().map(|x| x as u64).collect())
    };
    let (before, after) = (read("before")?, read("after")?);
    let mode = match cx.attrs.str("mode")? {
        "constant" => PadMode::Constant,
        "edge" => PadMode::Edge,
        "reflect" => PadMode::Reflect,
        other => return Err(format!("unknown pad mode `{other}` (expected constant, edge or reflect)")),
    };
    let value = cx.attrs.float("value")?;
    if mode == PadMode::Constant {
        let range = match elem {
            ElemType::I8 => Some((i8::MIN as f64, i8::MAX as f64)),
            ElemType::U8 => Some((0.0, u8::MAX as f64)),
            ElemType::I16 => Some((i16::MIN as f64, i16::MAX as f64)),
            ElemType::U16 => Some((0.0, u16::MAX as f64)),
            ElemType::I32 => Some((i32::MIN as f64, i32::MAX as f64)),
            ElemType::I64 => Some((i64::MIN as f64, i64::MAX as f64)),
            ElemType::Bool => Some((0.0, 1.0)),
            _ => None,
        };
        let ok = match range {
            Some((lo, hi)) => value.fract() == 0.0 && (lo..=hi).contains(&value),
            None => !elem.is_quantized() || value.is_finite(),
        };
        if !ok {
            return Err(format!("attribute `value` {value} cannot be represented in {elem}"));
        }
    }
    let mut dims = Vec::with_capacity(rank);
    for (i, &d) in input.iter().enumerate() {
        let (b, a) = (before[i], after[i]);
        if b == 0 && a == 0 {
            dims.push(d);
            continue;
        }
        let Dim::Fixed(n) = d else {
            return Err(format!(
                "axis {i} has the symbolic size {}; padding it needs a number for it",
                show_dim(cx, d)
            ));
        };
        match mode {
            PadMode::Edge if n == 0 => {
                return Err(format!("mode `edge` cannot pad axis {i}, which has size 0"));
            }
            PadMode::Reflect if b >= n || a >= n => {
                return Err(format!(
                    "mode `reflect` needs pads smaller than the axis: axis {i} has size {n}, pads {b} and {a}"
                ));
            }
            _ => {}
        }
        let total = n
            .checked_add(b)
            .and_then(|x| x.checked_add(a))
            .ok_or_else(|| format!("padding axis {i} overflows its size"))?;
        dims.push(Dim::Fixed(total));
    }
    dims.iter()
        .try_fold(1u64, |acc, d| acc.checked_mul(d.fixed().unwrap_or(1)))
        .ok_or_else(|| "the padded shape has too many elements".to_string())?;
    Ok(PadPlan { before, mode, value, dims })
}

fn infer_pad(cx: &OpCx<'_>) -> Result<Vec<TypeData>, String> {
    let x = plain_tensor(cx, 0)?;
    Ok(result_like(x, pad_plan(cx, &x.shape, x.elem)?.dims))
}

/// Like [`gather`], but elements with no source get the bytes `fill`.
fn gather_fill(
    input: &TensorData,
    shape: &[usize],
    fill: &[u8],
    mut src: impl FnMut(&[usize]) -> Option<usize>,
) -> Result<TensorData, String> {
    let size = input.elem().size_bytes();
    let n = strata_ir::tensor::num_elements(shape).ok_or("the result has too many elements")?;
    let mut bytes = Vec::with_capacity(n * size);
    let data = input.bytes();
    let mut bad = false;
    for_each_index(shape, |idx| match src(idx) {
        Some(i) => match i.checked_mul(size).and_then(|at| data.get(at..at + size)) {
            Some(b) => bytes.extend_from_slice(b),
            None => {
                bad = true;
                bytes.extend_from_slice(fill);
            }
        },
        None => bytes.extend_from_slice(fill),
    });
    if bad {
        return Err("invariant: a padded element reads outside its input".into());
    }
    TensorData::from_bytes(input.elem(), shape.to_vec(), bytes.into()).map_err(|e| e.to_string())
}

fn eval_pad(cx: &OpCx<'_>, inputs: &[TensorData]) -> Result<Vec<TensorData>, String> {
    let x = one(inputs)?;
    let plan = pad_plan(cx, &fixed(x.shape()), x.elem())?;
    let shape = to_sizes(&plan.dims)?;
    check_eval_size(&shape)?;
    let mut fill = Vec::new();
    TensorData::encode_real(x.elem(), plan.value, &mut fill);
    let st = strides(x.shape());
    let src = |idx: &[usize]| {
        let mut lin = 0usize;
        for (a, &i) in idx.iter().enumerate() {
            let n = x.shape()[a] as i128;
            let c = i as i128 - plan.before[a] as i128;
            let c = if (0..n).contains(&c) {
                c
            } else {
                match plan.mode {
                    PadMode::Constant => return None,
                    PadMode::Edge => c.clamp(0, n - 1),
                    PadMode::Reflect if c < 0 => -c,
                    PadMode::Reflect => 2 * (n - 1) - c,
                }
            };
            lin += c as usize * st[a];
        }
        Some(lin)
    };
    // Zero fill (constant 0 on non-quantised types, and edge/reflect) is plain gathering.
    let out = if fill.iter().all(|&b| b == 0) { gather(x, &shape, src)? } else { gather_fill(x, &shape, &fill, src)? };
    Ok(vec![out])
}

fn fold_pad(ctx: &Context, op: OpId) -> Option<Vec<FoldResult>> {
    let zero = |key: &str| {
        ctx.op_attr(op, key)
            .and_then(|a| <attr_kind::Ints as attr_kind::Get>::get(ctx, a))
            .is_some_and(|v| v.iter().all(|&x| x == 0))
    };
    if zero("before") && zero("after") { keep_input(ctx, op) } else { None }
}

// ---- concat -------------------------------------------------------------------------

/// The concatenated dims of `shapes` (operand `i` has `shapes[i]`) along `axis`.
fn concat_dims(cx: &OpCx<'_>, shapes: &[&[Dim]], axis: i64) -> Result<(usize, Vec<Dim>), String> {
    let first = *shapes.first().ok_or("concat needs at least one operand")?;
    let axis = norm_axis(axis, first.len()).map_err(|e| format!("attribute `axis`: {e}"))?;
    let mut out = first.to_vec();
    for (i, s) in shapes.iter().enumerate().skip(1) {
        let differs = s.len() != first.len() || s.iter().zip(first).enumerate().any(|(j, (a, b))| j != axis && a != b);
        if differs {
            return Err(format!(
                "operand #{i} has shape {} but operand #0 has {}; they may differ only on axis {axis}",
                show(cx, s),
                show(cx, first)
            ));
        }
    }
    if shapes.len() > 1 {
        let mut total = 0u64;
        for (i, s) in shapes.iter().enumerate() {
            let Dim::Fixed(n) = s[axis] else {
                return Err(format!(
                    "operand #{i} has the symbolic size {} on the concatenation axis {axis}; concat needs a number for it",
                    show_dim(cx, s[axis])
                ));
            };
            total = total.checked_add(n).ok_or("the concatenated axis is too large")?;
        }
        out[axis] = Dim::Fixed(total);
    }
    Ok((axis, out))
}

fn infer_concat(cx: &OpCx<'_>) -> Result<Vec<TypeData>, String> {
    let mut types: Vec<&TensorType> = Vec::with_capacity(cx.operand_types.len());
    for i in 0..cx.operand_types.len() {
        let t = cx.tensor(i)?;
        let first_layout = types.first().map_or(t.layout, |f| f.layout);
        if t.layout != first_layout
            || (t.layout != Layout::Nchw && crate::layout::format::channel_axes(t.layout).is_none())
        {
            plain_tensor(cx, i)?;
            return Err(format!("operand #{i} has layout #{} but operand #0 has #{first_layout}", t.layout));
        }
        if let Some(first) = types.first()
            && t.elem != first.elem
        {
            return Err(format!("operand #{i} has element type {} but operand #0 has {}", t.elem, first.elem));
        }
        types.push(t);
    }
    let shapes: Vec<&[Dim]> = types.iter().map(|t| t.shape.as_slice()).collect();
    let (axis, dims) = concat_dims(cx, &shapes, cx.attrs.int("axis")?)?;
    // Blocked operands concatenate along any stored axis but the in-block one.
    if let Some((_, block_axis)) = crate::layout::format::channel_axes(types[0].layout)
        && axis == block_axis
    {
        return Err(format!("a concat of #{} tensors cannot run along the block axis {axis}", types[0].layout));
    }
    Ok(result_like(types[0], dims))
}

fn eval_concat(cx: &OpCx<'_>, inputs: &[TensorData]) -> Result<Vec<TensorData>, String> {
    let first = inputs.first().ok_or("concat needs at least one input")?;
    if let Some((i, t)) = inputs.iter().enumerate().find(|(_, t)| t.elem() != first.elem()) {
        return Err(format!("input #{i} has element type {} but input #0 has {}", t.elem(), first.elem()));
    }
    let dims: Vec<Vec<Dim>> = inputs.iter().map(|t| fixed(t.shape())).collect();
    let shapes: Vec<&[Dim]> = dims.iter().map(|d| d.as_slice()).collect();
    let (axis, out) = concat_dims(cx, &shapes, cx.attrs.int("axis")?)?;
    let shape = to_sizes(&out)?;
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    let size = first.elem().size_bytes();
    let mut bytes = Vec::with_capacity(outer * shape[axis] * inner * size);
    for o in 0..outer {
        for t in inputs {
            let chunk = t.shape()[axis] * inner * size;
            bytes.extend_from_slice(&t.bytes()[o * chunk..(o + 1) * chunk]);
        }
    }
    Ok(vec![TensorData::from_bytes(first.elem(), shape, bytes.into()).map_err(|e| e.to_string())?])
}

fn fold_concat(ctx: &Context, op: OpId) -> Option<Vec<FoldResult>> {
    keep_input(ctx, op)
}

// ---- get_var_shape ------------------------------------------------------------------

fn infer_get_var_shape(cx: &OpCx<'_>) -> Result<Vec<TypeData>, String> {
    let x = plain_tensor(cx, 0)?;
    let n = match cx.attrs.opt::<attr_kind::Int>("axis")? {
        Some(a) => {
            norm_axis(a, x.shape.len()).map_err(|e| format!("attribute `axis`: {e}"))?;
            1
        }
        None => x.shape.len() as u64,
    };
    Ok(vec![TypeData::Tensor(TensorType::fixed(&[n], ElemType::I32))])
}

/// The `i32` shape tensor of `shape` (one dim with `axis`).
fn shape_tensor(shape: &[usize], axis: Option<i64>) -> Result<TensorData, String> {
    let dims: Vec<usize> = match axis {
        Some(a) => vec![shape[norm_axis(a, shape.len()).map_err(|e| format!("attribute `axis`: {e}"))?]],
        None => shape.to_vec(),
    };
    let mut bytes = Vec::with_capacity(dims.len() * 4);
    for &d in &dims {
        let v = i32::try_from(d).map_err(|_| format!("dim {d} does not fit the i32 result of get_var_shape"))?;
        bytes.extend(v.to_le_bytes());
    }
    TensorData::from_bytes(ElemType::I32, vec![dims.len()], bytes.into()).map_err(|e| e.to_string())
}

fn eval_get_var_shape(cx: &OpCx<'_>, inputs: &[TensorData]) -> Result<Vec<TensorData>, String> {
    let x = one(inputs)?;
    Ok(vec![shape_tensor(x.shape(), cx.attrs.opt::<attr_kind::Int>("axis")?)?])
}

/// A static shape is a constant.
fn fold_get_var_shape(ctx: &Context, op: OpId) -> Option<Vec<FoldResult>> {
    let v = GetVarShapeOp::cast(ctx, op)?;
    let t = ctx.value_tensor(v.input(ctx))?;
    if t.layout != Layout::Nchw {
        return None;
    }
    let shape: Vec<usize> = t.static_shape()?.into_iter().map(usize::try_from).collect::<Result<_, _>>().ok()?;
    let data = shape_tensor(&shape, v.axis(ctx)).ok()?;
    let out = ctx.value_tensor(v.output(ctx))?;
    (out.elem == data.elem() && out.shape == fixed(data.shape())).then(|| vec![FoldResult::Const(data)])
}

#[cfg(test)]
pub(crate) mod testing {
    //! Building and running single ops in unit tests, from attribute and type text.

    use strata_ir::{Attr, Context, OpCx, Sym, TensorData, TensorType, Ty, TypeData};

    /// A context knowing every dialect, with helpers to run one op.
    pub(crate) struct Harness {
        pub(crate) ctx: Context,
    }

    impl Harness {
        pub(crate) fn new() -> Self {
            Harness { ctx: crate::context() }
        }

        fn attrs(&mut self, attrs: &[(&str, &str)]) -> Vec<(Sym, Attr)> {
            attrs
                .iter()
                .map(|&(k, v)| {
                    let a = strata_ir::parse_attr_str(&mut self.ctx, v).unwrap_or_else(|e| panic!("attr `{v}`: {e}"));
                    (self.ctx.sym(k), a)
                })
                .collect()
        }

        fn run_infer(&self, op: &str, types: &[Ty], attrs: &[(Sym, Attr)]) -> Result<Vec<TypeData>, String> {
            let def = self.ctx.registry().get(op).unwrap_or_else(|| panic!("unknown op {op}"));
            let errs = strata_ir::verify::check_attrs(&self.ctx, def, attrs);
            if !errs.is_empty() {
                return Err(errs.join("; "));
            }
            if !def.operands.accepts(types.len()) {
                return Err(format!("{op} takes {} operands", def.operands.describe()));
            }
            let cx = OpCx {
                ctx: &self.ctx,
                name: def.name,
                attrs: strata_ir::AttrList::new(&self.ctx, attrs),
                operand_types: types,
                result_types: &[],
            };
            (def.infer.expect("op has infer"))(&cx)
        }

        /// The inferred result types, printed, for operand types given as text.
        pub(crate) fn infer(&mut self, op: &str, types: &[&str], attrs: &[(&str, &str)]) -> Result<String, String> {
            let types: Vec<Ty> = types
                .iter()
                .map(|t| strata_ir::parse_type_str(&mut self.ctx, t).unwrap_or_else(|e| panic!("type `{t}`: {e}")))
                .collect();
            let attrs = self.attrs(attrs);
            let out = self.run_infer(op, &types, &attrs)?;
            Ok(out.iter().map(|t| strata_ir::print::type_data_to_string(&self.ctx, t)).collect::<Vec<_>>().join(", "))
        }

        /// Infers with the inputs' (fixed) types, evaluates, and checks that the
        /// results have the inferred types.
        pub(crate) fn eval(
            &mut self,
            op: &str,
            inputs: &[TensorData],
            attrs: &[(&str, &str)],
        ) -> Result<Vec<TensorData>, String> {
            let types: Vec<Ty> = inputs
                .iter()
                .map(|t| {
                    let shape: Vec<u64> = t.shape().iter().map(|&d| d as u64).collect();
                    self.ctx.tensor_type(TensorType::fixed(&shape, t.elem()))
                })
                .collect();
            let attrs = self.attrs(attrs);
            let inferred = self.run_infer(op, &types, &attrs)?;
            let result_types: Vec<Ty> = inferred.into_iter().map(|t| self.ctx.intern_type(t)).collect();
            let def = self.ctx.registry().get(op).expect("registered");
            let cx = OpCx {
                ctx: &self.ctx,
                name: def.name,
                attrs: strata_ir::AttrList::new(&self.ctx, &attrs),
                operand_types: &types,
                result_types: &result_types,
            };
            let outs = (def.eval.expect("op has eval"))(&cx, inputs)?;
            assert_eq!(outs.len(), result_types.len());
            let mut syms = std::collections::HashMap::new();
            for (t, &ty) in outs.iter().zip(&result_types) {
                crate::interp::check_tensor(&self.ctx, ty, t, &mut syms).expect("result matches its inferred type");
            }
            Ok(outs)
        }

        /// Like [`Harness::eval`] for one result.
        pub(crate) fn eval1(&mut self, op: &str, inputs: &[TensorData], attrs: &[(&str, &str)]) -> TensorData {
            self.eval(op, inputs, attrs).unwrap_or_else(|e| panic!("{op}: {e}")).remove(0)
        }
    }

    /// `[1, 2, 3]` text of a list of integers.
    pub(crate) fn list(v: &[i64]) -> String {
        format!("{v:?}")
    }

    /// Random attribute values biased toward edge cases, for no-panic tests.
    pub(crate) struct Wild(pub(crate) strata_ir::tensor::SplitMix64);

    impl Wild {
        /// An integer: small, negative, or extreme.
        pub(crate) fn int(&mut self) -> i64 {
            const POOL: [i64; 14] =
                [0, 1, 2, 3, -1, -2, -3, 4, 65536, 1 << 40, -(1 << 40), i64::MAX, i64::MIN, i64::MIN + 1];
            POOL[(self.0.next_u64() % POOL.len() as u64) as usize]
        }

        /// `[a, b, …]` of 0 to `max_len` integers.
        pub(crate) fn ints(&mut self, max_len: u64) -> String {
            let n = self.0.next_u64() % (max_len + 1);
            list(&(0..n).map(|_| self.int()).collect::<Vec<_>>())
        }

        /// One of `options`.
        pub(crate) fn pick<'a>(&mut self, options: &[&'a str]) -> &'a str {
            options[(self.0.next_u64() % options.len() as u64) as usize]
        }

        /// A small random tensor of rank 0 to 4 and one of `elems`.
        pub(crate) fn tensor(&mut self, elems: &[strata_ir::ElemType]) -> TensorData {
            let rank = (self.0.next_u64() % 5) as usize;
            let shape: Vec<usize> = (0..rank).map(|_| (self.0.next_u64() % 4) as usize).collect();
            let elem = elems[(self.0.next_u64() % elems.len() as u64) as usize];
            TensorData::random_uniform(elem, shape, -3.0, 3.0, self.0.next_u64()).expect("small tensor")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{Harness, list};
    use super::*;
    use strata_ir::QScale;
    use strata_ir::tensor::SplitMix64;

    fn f32s(shape: &[usize], v: &[f32]) -> TensorData {
        TensorData::from_f32(shape.to_vec(), v)
    }

    fn iota(elem: ElemType, shape: &[usize]) -> TensorData {
        let n: usize = shape.iter().product();
        let v: Vec<f64> = (0..n).map(|i| i as f64).collect();
        TensorData::from_f64(elem, shape.to_vec(), &v).unwrap()
    }

    /// Every element type, for the byte-copying ops.
    fn all_elems() -> Vec<ElemType> {
        let mut v = ElemType::PLAIN.to_vec();
        v.extend([
            ElemType::QS8(QScale::new(0.5)),
            ElemType::QS32(QScale::new(0.25)),
            ElemType::QU8(QScale::new(0.1), 7),
        ]);
        v
    }

    fn random_shape(rng: &mut SplitMix64, rank: usize) -> Vec<usize> {
        (0..rank).map(|_| 1 + (rng.next_u64() % 4) as usize).collect()
    }

    fn random_perm(rng: &mut SplitMix64, n: usize) -> Vec<i64> {
        let mut p: Vec<i64> = (0..n as i64).collect();
        for i in (1..n).rev() {
            p.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
        }
        p
    }

    // ---- typecvt ----

    #[test]
    fn typecvt_rules() {
        let mut h = Harness::new();
        let x = TensorData::from_f64(ElemType::F32, vec![6], &[-1.7, -0.5, 0.0, 0.5, 2.9, 1e10]).unwrap();
        let i8s = h.eval1("graph.typecvt", std::slice::from_ref(&x), &[("dtype", "i8")]);
        assert_eq!(i8s.to_f64_vec(), vec![-1.0, 0.0, 0.0, 0.0, 2.0, 127.0]);
        let q = h.eval1("graph.typecvt", std::slice::from_ref(&x), &[("dtype", "qs8<0.5>")]);
        // -1.7/0.5 = -3.4 -> -3; -0.5/0.5 = -1; 0.5/0.5 = 1; 2.9/0.5 = 5.8 -> 6; saturates.
        assert_eq!(q.to_f64_vec(), vec![-3.0, -1.0, 0.0, 1.0, 6.0, 127.0]);
        let u = h.eval1("graph.typecvt", std::slice::from_ref(&x), &[("dtype", "qu8<0.5, 10>")]);
        assert_eq!(u.to_f64_vec(), vec![7.0, 9.0, 10.0, 11.0, 16.0, 255.0]);
        let b = h.eval1("graph.typecvt", &[x], &[("dtype", "bool")]);
        assert_eq!(b.to_f64_vec(), vec![1.0, 1.0, 0.0, 1.0, 1.0, 1.0]);
        let back = h.eval1("graph.typecvt", &[b], &[("dtype", "f16")]);
        assert_eq!(back.to_f64_vec(), vec![1.0, 1.0, 0.0, 1.0, 1.0, 1.0]);
        let deq = h.eval1("graph.typecvt", &[q], &[("dtype", "f32")]);
        assert_eq!(deq.to_f64_vec(), vec![-1.5, -0.5, 0.0, 0.5, 3.0, 63.5]);
        let big = TensorData::from_bytes(ElemType::I64, vec![3], {
            let v: Vec<u8> = [i64::MAX, -300, 9_007_199_254_740_993].iter().flat_map(|v| v.to_le_bytes()).collect();
            v.into()
        })
        .unwrap();
        let i8s = h.eval1("graph.typecvt", std::slice::from_ref(&big), &[("dtype", "i8")]);
        assert_eq!(i8s.to_f64_vec(), vec![127.0, -128.0, 127.0]);
        let u16s = h.eval1("graph.typecvt", std::slice::from_ref(&big), &[("dtype", "u16")]);
        assert_eq!(u16s.to_f64_vec(), vec![65535.0, 0.0, 65535.0]);
        let same = h.eval1("graph.typecvt", std::slice::from_ref(&big), &[("dtype", "i64")]);
        assert_eq!(same, big);
        let nan = f32s(&[2], &[f32::NAN, -f32::INFINITY]);
        assert_eq!(h.eval1("graph.typecvt", &[nan], &[("dtype", "i32")]).to_f64_vec(), vec![0.0, i32::MIN as f64]);
    }

    #[test]
    fn typecvt_infer_keeps_shape_and_layout() {
        let mut h = Harness::new();
        assert_eq!(
            h.infer("graph.typecvt", &["tensor<?Nx8x2x2x8xf32, #nchw88>"], &[("dtype", "f16")]).unwrap(),
            "tensor<?Nx8x2x2x8xf16, #nchw88>"
        );
        let e = h.infer("graph.typecvt", &["tensor<2xf32>"], &[("dtype", "tensor<2xf32>")]).unwrap_err();
        assert!(e.contains("`dtype` must be an element type"), "{e}");
        let e = h.infer("graph.typecvt", &["tensor<2xf32>"], &[("dtype", "1")]).unwrap_err();
        assert!(e.contains("dtype"), "{e}");
    }

    #[test]
    fn typecvt_quantise_roundtrip_within_half_scale() {
        let mut h = Harness::new();
        let scale = 0.02;
        for seed in 0..8 {
            let x = TensorData::random_uniform(ElemType::F32, vec![3, 17], -2.5, 2.5, seed).unwrap();
            let q = h.eval1("graph.typecvt", std::slice::from_ref(&x), &[("dtype", "qs8<0.02>")]);
            let back = h.eval1("graph.typecvt", &[q], &[("dtype", "f32")]);
            for i in 0..x.len() {
                let err = (x.get_real(i) - back.get_real(i)).abs();
                assert!(err <= scale / 2.0 + 1e-6, "{} -> {} (seed {seed})", x.get_real(i), back.get_real(i));
            }
        }
    }

    // ---- reshape ----

    #[test]
    fn reshape_infer_fixed_and_symbolic() {
        let mut h = Harness::new();
        let r = |h: &mut Harness, ty: &str, shape: &[i64]| h.infer("graph.reshape", &[ty], &[("shape", &list(shape))]);
        assert_eq!(r(&mut h, "tensor<2x3x4xf32>", &[-1, 4]).unwrap(), "tensor<6x4xf32>");
        assert_eq!(r(&mut h, "tensor<2x3x4xf32>", &[0, 12]).unwrap(), "tensor<2x12xf32>");
        assert_eq!(r(&mut h, "tensor<?Nx3x4xf32>", &[0, -1]).unwrap(), "tensor<?Nx12xf32>");
        assert_eq!(r(&mut h, "tensor<?Nx3x4xf32>", &[-1, 12]).unwrap(), "tensor<?Nx12xf32>");
        assert_eq!(r(&mut h, "tensor<?Nx3x4xf32>", &[3, -1, 4]).unwrap(), "tensor<3x?Nx4xf32>");
        assert_eq!(r(&mut h, "tensor<?Nx?Cx4xf32>", &[0, 0, 2, 2]).unwrap(), "tensor<?Nx?Cx2x2xf32>");
        assert_eq!(r(&mut h, "tensor<0x3xf32>", &[3, 0, -1]).unwrap(), "tensor<3x3x0xf32>");
        for (ty, shape, want) in [
            ("tensor<2x3xf32>", vec![-1, -1], "at most one -1"),
            ("tensor<2x3xf32>", vec![4, -1], "not a multiple"),
            ("tensor<2x3xf32>", vec![7], "6 elements cannot become 7"),
            ("tensor<2x3xf32>", vec![0, 0, 0], "copies input dim 2"),
            ("tensor<2x3xf32>", vec![-2, 3], "has -2"),
            ("tensor<?Nx3xf32>", vec![-1, 2], "needs a number for the symbolic dim ?N"),
            ("tensor<?Nx3xf32>", vec![6], "needs a number for it"),
            ("tensor<?Nx?Mxf32>", vec![-1], "only one of them"),
            ("tensor<2x3xf32>", vec![i64::MAX, i64::MAX, 2], "too many elements"),
            ("tensor<0x3xf32>", vec![0, -1], "not a multiple of 0"),
        ] {
            let e = r(&mut h, ty, &shape).unwrap_err();
            assert!(e.contains(want), "{ty} {shape:?}: {e}");
        }
    }

    #[test]
    fn reshape_roundtrip_every_dtype() {
        let mut h = Harness::new();
        let mut rng = SplitMix64(11);
        for elem in all_elems() {
            let shape = random_shape(&mut rng, 3);
            let x = TensorData::random_uniform(elem, shape.clone(), -50.0, 50.0, rng.next_u64()).unwrap();
            let flat = h.eval1("graph.reshape", std::slice::from_ref(&x), &[("shape", "[-1]")]);
            assert_eq!(flat.shape(), [x.len()]);
            let spec: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
            let back = h.eval1("graph.reshape", &[flat], &[("shape", &list(&spec))]);
            assert_eq!(back, x, "{elem}");
        }
    }

    // ---- dimshuffle ----

    #[test]
    fn dimshuffle_hand_computed() {
        let mut h = Harness::new();
        let x = iota(ElemType::F32, &[2, 3]);
        let t = h.eval1("graph.dimshuffle", &[x], &[("pattern", "[1, -1, 0]")]);
        assert_eq!(t.shape(), [3, 1, 2]);
        assert_eq!(t.to_f64_vec(), vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
        assert_eq!(
            h.infer("graph.dimshuffle", &["tensor<?Nx3x4xf32>"], &[("pattern", "[2, 0, -1, 1]")]).unwrap(),
            "tensor<4x?Nx1x3xf32>"
        );
        for (p, want) in [
            ("[0, 0, 1]", "twice"),
            ("[0, 1]", "axis 2 is missing"),
            ("[0, 1, 3]", "neither an input axis"),
            ("[0, 1, -2]", "neither an input axis"),
        ] {
            let e = h.infer("graph.dimshuffle", &["tensor<2x3x4xf32>"], &[("pattern", p)]).unwrap_err();
            assert!(e.contains(want), "{p}: {e}");
        }
        let e = h.infer("graph.dimshuffle", &["tensor<2x8x2x2x8xf32, #nchw88>"], &[("pattern", "[0]")]).unwrap_err();
        assert!(e.contains("plain layout"), "{e}");
    }

    #[test]
    fn dimshuffle_then_inverse_is_identity() {
        let mut h = Harness::new();
        let mut rng = SplitMix64(5);
        for round in 0..24 {
            let elem = all_elems()[round % all_elems().len()];
            let rank = 1 + round % 4;
            let x = TensorData::random_uniform(elem, random_shape(&mut rng, rank), -9.0, 9.0, round as u64).unwrap();
            let p = random_perm(&mut rng, rank);
            let mut inv = vec![0i64; rank];
            for (i, &a) in p.iter().enumerate() {
                inv[a as usize] = i as i64;
            }
            let y = h.eval1("graph.dimshuffle", std::slice::from_ref(&x), &[("pattern", &list(&p))]);
            let want: Vec<usize> = p.iter().map(|&a| x.shape()[a as usize]).collect();
            assert_eq!(y.shape(), want.as_slice());
            let z = h.eval1("graph.dimshuffle", &[y], &[("pattern", &list(&inv))]);
            assert_eq!(z, x, "{elem} {p:?}");
        }
    }

    // ---- broadcast ----

    #[test]
    fn broadcast_matches_broadcasting_add_of_zero() {
        let mut h = Harness::new();
        let mut rng = SplitMix64(9);
        for round in 0..16 {
            let rank = 1 + round % 3;
            let mut target = random_shape(&mut rng, rank + round % 2);
            target[0] += 1;
            let off = target.len() - rank;
            let in_shape: Vec<usize> =
                (0..rank).map(|i| if rng.next_u64().is_multiple_of(2) { 1 } else { target[off + i] }).collect();
            let x = TensorData::random_uniform(ElemType::F32, in_shape, -3.0, 3.0, round as u64).unwrap();
            let spec: Vec<i64> = target.iter().map(|&d| d as i64).collect();
            let b = h.eval1("graph.broadcast", std::slice::from_ref(&x), &[("shape", &list(&spec))]);
            let zero = TensorData::zeros(ElemType::F32, target.clone()).unwrap();
            let sum = h.eval1("graph.elemwise", &[x.clone(), zero], &[("mode", "\"add\"")]);
            assert_eq!(b, sum);
            // The same by index, for a dtype without arithmetic.
            let xb = h.eval1("graph.typecvt", &[x], &[("dtype", "bool")]);
            let bb = h.eval1("graph.broadcast", std::slice::from_ref(&xb), &[("shape", &list(&spec))]);
            super::super::common::for_each_index(&target, |idx| {
                let lin = strides(&target).iter().zip(idx).map(|(s, i)| s * i).sum::<usize>();
                let src = super::super::common::broadcast_offset(idx, xb.shape());
                assert_eq!(bb.get_bits(lin), xb.get_bits(src));
            });
        }
    }

    #[test]
    fn broadcast_errors() {
        let mut h = Harness::new();
        for (ty, shape, want) in [
            ("tensor<2x3xf32>", "[3]", "cannot drop axes"),
            ("tensor<2x3xf32>", "[2, 4]", "not 1 or 4"),
            ("tensor<?Nx3xf32>", "[2, 3]", "symbolic size ?N"),
            ("tensor<3xf32>", "[-1, 3]", "negative"),
            ("tensor<3xf32>", "[9223372036854775807, 9223372036854775807, 3]", "too many elements"),
        ] {
            let e = h.infer("graph.broadcast", &[ty], &[("shape", shape)]).unwrap_err();
            assert!(e.contains(want), "{ty} {shape}: {e}");
        }
        // A huge but valid result type is an evaluation error, not an allocation.
        let x = f32s(&[1], &[1.0]);
        let e = h.eval("graph.broadcast", &[x], &[("shape", "[65536, 65536]")]).unwrap_err();
        assert!(e.contains("refuses to allocate"), "{e}");
    }

    // ---- axis_add_remove ----

    #[test]
    fn axis_add_remove_cases() {
        let mut h = Harness::new();
        let i = |h: &mut Harness, ty: &str, mode: &str, axes: &str| {
            h.infer("graph.axis_add_remove", &[ty], &[("mode", mode), ("axes", axes)])
        };
        assert_eq!(i(&mut h, "tensor<?Nx3xf32>", "\"add\"", "[0, -1]").unwrap(), "tensor<1x?Nx3x1xf32>");
        assert_eq!(i(&mut h, "tensor<?Nx3xf32>", "\"add\"", "[1, 2]").unwrap(), "tensor<?Nx1x1x3xf32>");
        assert_eq!(i(&mut h, "tensor<1x?Nx1x3xf32>", "\"remove\"", "[0, -2]").unwrap(), "tensor<?Nx3xf32>");
        for (ty, mode, axes, want) in [
            ("tensor<2x3xf32>", "\"remove\"", "[0]", "size is 2, not 1"),
            ("tensor<?Nx3xf32>", "\"remove\"", "[0]", "size is ?N, not 1"),
            ("tensor<1x3xf32>", "\"remove\"", "[0, 0]", "twice"),
            ("tensor<1x3xf32>", "\"remove\"", "[5]", "out of range"),
            ("tensor<1x3xf32>", "\"add\"", "[-9223372036854775808]", "out of range"),
            ("tensor<1x3xf32>", "\"squeeze\"", "[0]", "expected add or remove"),
            ("tensor<1x3xf32>", "2", "[0]", "must be a string"),
        ] {
            let e = i(&mut h, ty, mode, axes).unwrap_err();
            assert!(e.contains(want), "{ty} {mode} {axes}: {e}");
        }
        for elem in all_elems() {
            let x = iota(elem, &[2, 3]);
            let y =
                h.eval1("graph.axis_add_remove", std::slice::from_ref(&x), &[("mode", "\"add\""), ("axes", "[1, 3]")]);
            assert_eq!(y.shape(), [2, 1, 3, 1]);
            let z = h.eval1("graph.axis_add_remove", &[y], &[("mode", "\"remove\""), ("axes", "[3, 1]")]);
            assert_eq!(z, x);
        }
    }

    // ---- subtensor ----

    fn sub(h: &mut Harness, x: &TensorData, axes: &[i64], b: &[i64], e: &[i64], s: &[i64]) -> TensorData {
        h.eval1(
            "graph.subtensor",
            std::slice::from_ref(x),
            &[("axes", &list(axes)), ("begin", &list(b)), ("end", &list(e)), ("step", &list(s))],
        )
    }

    #[test]
    fn py_slice_matches_python() {
        // Values from Python: len(range(10)[b:e:s]) and its first element.
        for (b, e, s, first, len) in [
            (0, 10, 1, 0, 10),
            (-3, 100, 1, 7, 3),
            (8, 2, 1, 8, 0),
            (1, 9, 3, 1, 3),
            (-1, -100, -1, 9, 10),
            (9, 0, -2, 9, 5),
            (100, -100, -3, 9, 4),
            (-100, 100, 1, 0, 10),
            (i64::MIN, i64::MAX, i64::MAX, 0, 1),
            (i64::MAX, i64::MIN, i64::MIN, 9, 1),
        ] {
            assert_eq!(py_slice(b, e, s, 10), (first, len), "{b}:{e}:{s}");
        }
        assert_eq!(py_slice(0, 5, -1, 0), (-1, 0));
    }

    #[test]
    fn subtensor_hand_computed_and_errors() {
        let mut h = Harness::new();
        let x = iota(ElemType::I32, &[3, 4]);
        let y = sub(&mut h, &x, &[1, 0], &[-1, 2], &[0, -4], &[-2, -1]);
        // rows 2, 1, 0; columns 3, 1.
        assert_eq!(y.shape(), [3, 2]);
        assert_eq!(y.to_f64_vec(), vec![11.0, 9.0, 7.0, 5.0, 3.0, 1.0]);
        let empty = sub(&mut h, &x, &[0], &[2], &[1], &[1]);
        assert_eq!(empty.shape(), [0, 4]);
        let i = |h: &mut Harness, ty: &str, a: &str, b: &str, e: &str, s: &str| {
            h.infer("graph.subtensor", &[ty], &[("axes", a), ("begin", b), ("end", e), ("step", s)])
        };
        assert_eq!(i(&mut h, "tensor<?Nx10xf32>", "[-1]", "[1]", "[100]", "[2]").unwrap(), "tensor<?Nx5xf32>");
        for (a, b, e, s, want) in [
            ("[1]", "[0]", "[5]", "[0]", "nonzero"),
            ("[0]", "[0]", "[1]", "[1]", "symbolic size ?N"),
            ("[1, 1]", "[0, 0]", "[1, 1]", "[1, 1]", "twice"),
            ("[2]", "[0]", "[1]", "[1]", "out of range"),
            ("[1]", "[0, 1]", "[1]", "[1]", "equal lengths"),
        ] {
            let err = i(&mut h, "tensor<?Nx10xf32>", a, b, e, s).unwrap_err();
            assert!(err.contains(want), "{a} {b} {e} {s}: {err}");
        }
    }

    #[test]
    fn concat_then_subtensor_recovers_parts() {
        let mut h = Harness::new();
        let mut rng = SplitMix64(21);
        for round in 0..16 {
            let elem = all_elems()[round % all_elems().len()];
            let rank = 1 + round % 4;
            let axis = (rng.next_u64() % rank as u64) as usize;
            let base = random_shape(&mut rng, rank);
            let parts: Vec<TensorData> = (0..1 + round % 3)
                .map(|k| {
                    let mut s = base.clone();
                    s[axis] = (rng.next_u64() % 4) as usize;
                    TensorData::random_uniform(elem, s, -20.0, 20.0, (round * 7 + k) as u64).unwrap()
                })
                .collect();
            let axis_attr = if round % 2 == 0 { axis as i64 } else { axis as i64 - rank as i64 };
            let cat = h.eval1("graph.concat", &parts, &[("axis", &axis_attr.to_string())]);
            let mut at = 0i64;
            for p in &parts {
                let n = p.shape()[axis] as i64;
                let got = sub(&mut h, &cat, &[axis as i64], &[at], &[at + n], &[1]);
                assert_eq!(&got, p, "{elem} axis {axis}");
                at += n;
            }
            assert_eq!(at as usize, cat.shape()[axis]);
        }
    }

    #[test]
    fn concat_infer() {
        let mut h = Harness::new();
        let c = |h: &mut Harness, tys: &[&str], axis: &str| h.infer("graph.concat", tys, &[("axis", axis)]);
        assert_eq!(c(&mut h, &["tensor<?Nx2xf32>", "tensor<?Nx3xf32>"], "1").unwrap(), "tensor<?Nx5xf32>");
        assert_eq!(c(&mut h, &["tensor<?Nx2xf32>"], "0").unwrap(), "tensor<?Nx2xf32>");
        assert_eq!(c(&mut h, &["tensor<1x2xqs8<0.5>>", "tensor<3x2xqs8<0.5>>"], "-2").unwrap(), "tensor<4x2xqs8<0.5>>");
        for (tys, axis, want) in [
            (vec!["tensor<?Nx2xf32>", "tensor<?Nx2xf32>"], "0", "symbolic size ?N on the concatenation axis"),
            (vec!["tensor<?Nx2xf32>", "tensor<?Mx3xf32>"], "1", "may differ only on axis 1"),
            (vec!["tensor<2x2xf32>", "tensor<2x2x1xf32>"], "1", "may differ only"),
            (vec!["tensor<2x2xf32>", "tensor<2x2xf16>"], "1", "element type f16"),
            (vec!["tensor<2x2xf32>"], "2", "out of range"),
            (vec!["tensor<f32>"], "0", "out of range"),
            (vec![], "0", "at least one operand"),
        ] {
            let e = c(&mut h, &tys, axis).unwrap_err();
            assert!(e.contains(want), "{tys:?} {axis}: {e}");
        }
    }

    // ---- pad ----

    fn pad_attrs<'a>(before: &'a str, after: &'a str, mode: &'a str, value: &'a str) -> [(&'a str, &'a str); 4] {
        [("before", before), ("after", after), ("mode", mode), ("value", value)]
    }

    #[test]
    fn pad_hand_computed() {
        let mut h = Harness::new();
        let x = f32s(&[1, 3], &[1.0, 2.0, 3.0]);
        let p = |h: &mut Harness, mode: &str, value: &str| {
            h.eval1("graph.pad", std::slice::from_ref(&x), &pad_attrs("[0, 2]", "[1, 2]", mode, value)).to_f64_vec()
        };
        let c = p(&mut h, "\"constant\"", "-1.5");
        assert_eq!(c[..7], [-1.5, -1.5, 1.0, 2.0, 3.0, -1.5, -1.5]);
        assert!(c[7..].iter().all(|&v| v == -1.5));
        assert_eq!(p(&mut h, "\"edge\"", "0.0")[..7], [1.0, 1.0, 1.0, 2.0, 3.0, 3.0, 3.0]);
        assert_eq!(p(&mut h, "\"edge\"", "0.0")[7..14], [1.0, 1.0, 1.0, 2.0, 3.0, 3.0, 3.0]);
        let r = h.eval1("graph.pad", std::slice::from_ref(&x), &pad_attrs("[0, 2]", "[0, 2]", "\"reflect\"", "0"));
        assert_eq!(r.to_f64_vec(), [3.0, 2.0, 1.0, 2.0, 3.0, 2.0, 1.0]);
        // Quantised constant padding fills the zero point; edge copies bytes.
        let q = TensorData::from_f64(ElemType::QU8(QScale::new(0.5), 3), vec![2], &[10.0, 20.0]).unwrap();
        let y = h.eval1("graph.pad", std::slice::from_ref(&q), &pad_attrs("[1]", "[1]", "\"constant\"", "0.0"));
        assert_eq!(y.to_f64_vec(), vec![3.0, 10.0, 20.0, 3.0]);
        let y = h.eval1("graph.pad", &[q], &pad_attrs("[1]", "[1]", "\"constant\"", "1.0"));
        assert_eq!(y.to_f64_vec(), vec![5.0, 10.0, 20.0, 5.0]);
        let b = TensorData::from_f64(ElemType::Bool, vec![2], &[1.0, 0.0]).unwrap();
        let y = h.eval1("graph.pad", &[b], &pad_attrs("[2]", "[0]", "\"edge\"", "0"));
        assert_eq!(y.to_f64_vec(), vec![1.0, 1.0, 1.0, 0.0]);
        let i = TensorData::from_f64(ElemType::I16, vec![2], &[5.0, -6.0]).unwrap();
        let y = h.eval1("graph.pad", &[i], &pad_attrs("[1]", "[1]", "\"constant\"", "-7"));
        assert_eq!(y.to_f64_vec(), vec![-7.0, 5.0, -6.0, -7.0]);
    }

    #[test]
    fn pad_then_subtensor_recovers_input() {
        let mut h = Harness::new();
        let mut rng = SplitMix64(33);
        for round in 0..24 {
            let elem = all_elems()[round % all_elems().len()];
            let rank = 1 + round % 4;
            let shape: Vec<usize> = random_shape(&mut rng, rank).iter().map(|d| d + 1).collect();
            let x = TensorData::random_uniform(elem, shape.clone(), -9.0, 9.0, round as u64).unwrap();
            let before: Vec<i64> = shape.iter().map(|&d| (rng.next_u64() % d as u64) as i64).collect();
            let after: Vec<i64> = shape.iter().map(|&d| (rng.next_u64() % d as u64) as i64).collect();
            let mode = ["\"constant\"", "\"edge\"", "\"reflect\""][round % 3];
            let y =
                h.eval1("graph.pad", std::slice::from_ref(&x), &pad_attrs(&list(&before), &list(&after), mode, "0.0"));
            let axes: Vec<i64> = (0..rank as i64).collect();
            let end: Vec<i64> = before.iter().zip(&shape).map(|(&b, &d)| b + d as i64).collect();
            let back = sub(&mut h, &y, &axes, &before, &end, &vec![1; rank]);
            assert_eq!(back, x, "{elem} {mode}");
        }
    }

    #[test]
    fn pad_errors() {
        let mut h = Harness::new();
        let i = |h: &mut Harness, ty: &str, a: [(&str, &str); 4]| h.infer("graph.pad", &[ty], &a);
        assert_eq!(
            i(&mut h, "tensor<?Nx3xf32>", pad_attrs("[0, 1]", "[0, 2]", "\"constant\"", "0.0")).unwrap(),
            "tensor<?Nx6xf32>"
        );
        for (ty, a, want) in [
            ("tensor<2x3xf32>", pad_attrs("[1]", "[0, 0]", "\"constant\"", "0.0"), "one integer >= 0 per axis"),
            ("tensor<2x3xf32>", pad_attrs("[0, -1]", "[0, 0]", "\"constant\"", "0.0"), "`before`"),
            ("tensor<2x3xf32>", pad_attrs("[0, 0]", "[0, 0]", "\"wrap\"", "0.0"), "unknown pad mode"),
            ("tensor<?Nx3xf32>", pad_attrs("[1, 0]", "[0, 0]", "\"constant\"", "0.0"), "symbolic size ?N"),
            ("tensor<2x3xf32>", pad_attrs("[0, 3]", "[0, 0]", "\"reflect\"", "0.0"), "smaller than the axis"),
            ("tensor<2x0xf32>", pad_attrs("[0, 1]", "[0, 0]", "\"edge\"", "0.0"), "size 0"),
            ("tensor<2x3xi8>", pad_attrs("[0, 1]", "[0, 0]", "\"constant\"", "0.5"), "cannot be represented in i8"),
            ("tensor<2x3xu8>", pad_attrs("[0, 1]", "[0, 0]", "\"constant\"", "-1"), "cannot be represented in u8"),
            ("tensor<2x3xbool>", pad_attrs("[0, 1]", "[0, 0]", "\"constant\"", "2"), "cannot be represented"),
            (
                "tensor<2x3xf32>",
                pad_attrs("[0, 9223372036854775807]", "[0, 9223372036854775807]", "\"constant\"", "0.0"),
                "overflows",
            ),
            ("tensor<2x3xf32>", pad_attrs("[0, 0]", "[0, 0]", "\"constant\"", "\"x\""), "must be a float"),
        ] {
            let e = i(&mut h, ty, a).unwrap_err();
            assert!(e.contains(want), "{ty} {a:?}: {e}");
        }
        let x = f32s(&[1, 1], &[1.0]);
        let e = h.eval("graph.pad", &[x], &pad_attrs("[70000, 0]", "[0, 70000]", "\"constant\"", "0.0")).unwrap_err();
        assert!(e.contains("refuses to allocate"), "{e}");
    }

    // ---- get_var_shape ----

    #[test]
    fn get_var_shape_returns_shape() {
        let mut h = Harness::new();
        let mut rng = SplitMix64(3);
        for rank in 0..5 {
            let shape = random_shape(&mut rng, rank);
            let x = TensorData::zeros(ElemType::U16, shape.clone()).unwrap();
            let s = h.eval1("graph.get_var_shape", std::slice::from_ref(&x), &[]);
            assert_eq!(s.elem(), ElemType::I32);
            assert_eq!(s.to_f64_vec(), shape.iter().map(|&d| d as f64).collect::<Vec<_>>());
            if rank > 0 {
                let s = h.eval1("graph.get_var_shape", &[x], &[("axis", "-1")]);
                assert_eq!(s.to_f64_vec(), vec![shape[rank - 1] as f64]);
            }
        }
        assert_eq!(h.infer("graph.get_var_shape", &["tensor<?Nx3x4xqs8<0.1>>"], &[]).unwrap(), "tensor<3xi32>");
        assert_eq!(h.infer("graph.get_var_shape", &["tensor<?Nx3xf32>"], &[("axis", "0")]).unwrap(), "tensor<1xi32>");
        let e = h.infer("graph.get_var_shape", &["tensor<2x3xf32>"], &[("axis", "2")]).unwrap_err();
        assert!(e.contains("attribute `axis`"), "{e}");
        let e = h.infer("graph.get_var_shape", &["tensor<f32>"], &[("axis", "0")]).unwrap_err();
        assert!(e.contains("out of range"), "{e}");
    }

    #[test]
    fn folds_static_shape_and_identities() {
        let mut ctx = crate::context();
        let src = r#"func @f(%x: tensor<2x3xf32>) -> (tensor<2xi32>, tensor<2x3xf32>, tensor<3x2xf32>) {
  %s = graph.get_var_shape(%x) : (tensor<2x3xf32>) -> tensor<2xi32>
  %r = graph.reshape(%x) {shape = [0, -1]} : (tensor<2x3xf32>) -> tensor<2x3xf32>
  %d = graph.dimshuffle(%r) {pattern = [0, 1]} : (tensor<2x3xf32>) -> tensor<2x3xf32>
  %t = graph.dimshuffle(%d) {pattern = [1, 0]} : (tensor<2x3xf32>) -> tensor<3x2xf32>
  return(%s, %d, %t)
}"#;
        let source = strata_ir::Source::new("t", src);
        let m = strata_ir::parse_module(&mut ctx, &source, &strata_ir::ParseOptions::default()).unwrap();
        let f = crate::func::functions(&ctx, m)[0];
        let body = ctx.body(f.0, 0).unwrap();
        let ops = ctx.block(body).ops.clone();
        let x = ctx.block(body).args[0];
        let folded: Vec<Option<Vec<FoldResult>>> =
            ops.iter().map(|&op| ctx.op_def(op).and_then(|d| d.fold).and_then(|f| f(&ctx, op))).collect();
        let want_shape = TensorData::from_f64(ElemType::I32, vec![2], &[2.0, 3.0]).unwrap();
        assert_eq!(folded[0], Some(vec![FoldResult::Const(want_shape)]));
        assert_eq!(folded[1], Some(vec![FoldResult::Value(x)]));
        assert_eq!(folded[2], Some(vec![FoldResult::Value(ctx.op(ops[1]).results[0])]));
        assert_eq!(folded[3], None);
    }

    #[test]
    fn bad_attribute_kinds_are_errors() {
        let mut h = Harness::new();
        for (op, attrs) in [
            ("graph.reshape", vec![("shape", "[1.5]")]),
            ("graph.reshape", vec![]),
            ("graph.dimshuffle", vec![("pattern", "\"x\"")]),
            ("graph.subtensor", vec![("axes", "[0]")]),
            ("graph.concat", vec![("axis", "[0]")]),
            ("graph.get_var_shape", vec![("axis", "1.0")]),
            ("graph.get_var_shape", vec![("bogus", "1")]),
        ] {
            assert!(h.infer(op, &["tensor<2x3xf32>"], &attrs).is_err(), "{op} {attrs:?}");
        }
    }

    /// Random (mostly invalid, often extreme) attributes on random small
    /// tensors give results or errors, never panics; whatever infers must
    /// evaluate to its inferred type (checked by the harness) or fail cleanly.
    #[test]
    fn wild_attributes_never_panic() {
        use super::testing::Wild;
        let mut h = Harness::new();
        let mut w = Wild(SplitMix64(2024));
        let elems = all_elems();
        let (mut ok, mut err) = (0, 0);
        for _ in 0..3000 {
            let x = w.tensor(&elems);
            let (op, attrs): (&str, Vec<(&str, String)>) = match w.0.next_u64() % 9 {
                0 => (
                    "graph.typecvt",
                    vec![("dtype", w.pick(&["f16", "i8", "u16", "qs8<0.1>", "qu8<0.5, 3>", "bool", "i64"]).into())],
                ),
                1 => ("graph.reshape", vec![("shape", w.ints(4))]),
                2 => ("graph.dimshuffle", vec![("pattern", w.ints(5))]),
                3 => ("graph.broadcast", vec![("shape", w.ints(5))]),
                4 => (
                    "graph.axis_add_remove",
                    vec![("mode", w.pick(&["\"add\"", "\"remove\"", "\"x\""]).into()), ("axes", w.ints(3))],
                ),
                5 => {
                    let n = 1 + w.0.next_u64() % 2;
                    let mut a = vec![("axes", w.ints(n)), ("begin", w.ints(n)), ("end", w.ints(n))];
                    a.push(("step", w.ints(n)));
                    ("graph.subtensor", a)
                }
                6 => (
                    "graph.pad",
                    vec![
                        ("before", w.ints(4)),
                        ("after", w.ints(4)),
                        ("mode", w.pick(&["\"constant\"", "\"edge\"", "\"reflect\""]).into()),
                        ("value", w.pick(&["0.0", "1.0", "-1.5", "300", "nan", "inf"]).into()),
                    ],
                ),
                7 => ("graph.concat", vec![("axis", w.int().to_string())]),
                _ => {
                    let axis = w.int().to_string();
                    (
                        "graph.get_var_shape",
                        if w.0.next_u64().is_multiple_of(2) { vec![] } else { vec![("axis", axis)] },
                    )
                }
            };
            let attrs: Vec<(&str, &str)> = attrs.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let inputs = if op == "graph.concat" { vec![x.clone(), x.clone(), x] } else { vec![x] };
            match h.eval(op, &inputs, &attrs) {
                Ok(_) => ok += 1,
                Err(_) => err += 1,
            }
        }
        assert!(ok > 300 && err > 300, "ok {ok}, err {err}");
    }
}
