//! `graph.elemwise`: every elementwise operation, selected by `mode`, as in
//! MegEngine's Elemwise.
//!
//! Operands broadcast numpy-style against each other. The result has the
//! broadcast shape, the operands' layout, and their element type (or
//! `out_dtype`, e.g. a quantised type with another scale). Floats are computed
//! in `f64` and rounded once to the result type; plain integers use wrapping
//! `i64` arithmetic; quantised operands are dequantised, computed as reals and
//! requantised.
//!
//! | arity | modes |
//! |---|---|
//! | 1 | relu sigmoid tanh exp log log1p expm1 abs neg sqrt floor ceil round h_swish gelu |
//! | 2 | add sub mul div floor_div max min pow fuse_add_relu fuse_add_sigmoid fuse_add_h_swish log_sum_exp |
//! | 3 | fma3 (`a * b + c`) |
//!
//! Integer operands allow add sub mul max min abs neg relu floor_div fuse_add_relu;
//! quantised ones add sub mul max min relu fuse_add_relu.

use super::common::{broadcast_offset, broadcast_shapes, show};
use strata_ir::{
    Context, Dim, ElemType, FoldResult, Layout, OpCx, OpId, OpView, Registry, TensorData, TensorType, TypeData,
    ValueId, attr_kind, define_op,
};

define_op! {
    /// An elementwise operation; `mode` selects which (see the module docs).
    pub struct ElemwiseOp = "graph.elemwise" {
        summary: "elementwise operation selected by `mode` (broadcasting)",
        operands: [],
        results: [output],
        attrs: { mode: Str },
        optional_attrs: { out_dtype: Type },
        traits: [PURE],
        variadic: inputs,
        fold: fold_elemwise,
        commutative: is_commutative,
        infer: infer_elemwise,
        eval: eval_elemwise,
    }
}

pub(crate) fn register(r: &mut Registry) {
    r.register(ElemwiseOp::DEF).expect("invariant: graph ops register once");
}

/// `v` wrapped to the width of integer type `e` and read back (sign-extended
/// for signed types).
fn wrap_to(e: ElemType, v: i64) -> i64 {
    match e {
        ElemType::I8 => i64::from(v as i8),
        ElemType::U8 => i64::from(v as u8),
        ElemType::I16 => i64::from(v as i16),
        ElemType::U16 => i64::from(v as u16),
        ElemType::I32 => i64::from(v as i32),
        _ => v,
    }
}

/// Every elementwise mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Mode {
    Relu,
    Sigmoid,
    Tanh,
    Exp,
    Log,
    Log1p,
    Expm1,
    Abs,
    Neg,
    Sqrt,
    Floor,
    Ceil,
    Round,
    HSwish,
    Gelu,
    Add,
    Sub,
    Mul,
    Div,
    FloorDiv,
    Max,
    Min,
    Pow,
    FuseAddRelu,
    FuseAddSigmoid,
    FuseAddHSwish,
    LogSumExp,
    Fma3,
}

const MODES: &[(&str, Mode)] = &[
    ("relu", Mode::Relu),
    ("sigmoid", Mode::Sigmoid),
    ("tanh", Mode::Tanh),
    ("exp", Mode::Exp),
    ("log", Mode::Log),
    ("log1p", Mode::Log1p),
    ("expm1", Mode::Expm1),
    ("abs", Mode::Abs),
    ("neg", Mode::Neg),
    ("sqrt", Mode::Sqrt),
    ("floor", Mode::Floor),
    ("ceil", Mode::Ceil),
    ("round", Mode::Round),
    ("h_swish", Mode::HSwish),
    ("gelu", Mode::Gelu),
    ("add", Mode::Add),
    ("sub", Mode::Sub),
    ("mul", Mode::Mul),
    ("div", Mode::Div),
    ("floor_div", Mode::FloorDiv),
    ("max", Mode::Max),
    ("min", Mode::Min),
    ("pow", Mode::Pow),
    ("fuse_add_relu", Mode::FuseAddRelu),
    ("fuse_add_sigmoid", Mode::FuseAddSigmoid),
    ("fuse_add_h_swish", Mode::FuseAddHSwish),
    ("log_sum_exp", Mode::LogSumExp),
    ("fma3", Mode::Fma3),
];

impl Mode {
    /// The mode named `name`, or an error listing every mode.
    pub fn parse(name: &str) -> Result<Mode, String> {
        MODES.iter().find(|(n, _)| *n == name).map(|&(_, m)| m).ok_or_else(|| {
            let all: Vec<_> = MODES.iter().map(|(n, _)| *n).collect();
            format!("unknown elemwise mode `{name}` (expected one of {})", all.join(", "))
        })
    }

    /// The mode's name in IR.
    pub fn name(self) -> &'static str {
        MODES.iter().find(|&&(_, m)| m == self).map(|&(n, _)| n).expect("invariant: every mode is listed")
    }

    /// Whether the operands may be swapped.
    pub fn is_commutative(self) -> bool {
        use Mode::*;
        matches!(self, Add | Mul | Max | Min | FuseAddRelu | FuseAddSigmoid | FuseAddHSwish | LogSumExp)
    }

    /// Number of operands.
    pub fn arity(self) -> usize {
        use Mode::*;
        match self {
            Relu | Sigmoid | Tanh | Exp | Log | Log1p | Expm1 | Abs | Neg | Sqrt | Floor | Ceil | Round | HSwish
            | Gelu => 1,
            Fma3 => 3,
            _ => 2,
        }
    }

    fn allows(self, elem: ElemType) -> bool {
        use Mode::*;
        if elem.is_float() {
            return true;
        }
        if elem.is_quantized() {
            return matches!(self, Add | Sub | Mul | Max | Min | Relu | FuseAddRelu);
        }
        elem != ElemType::Bool
            && matches!(self, Add | Sub | Mul | Max | Min | Abs | Neg | Relu | FloorDiv | FuseAddRelu)
    }

    /// The real-valued function (the reference semantics).
    pub fn apply(self, a: &[f64]) -> f64 {
        use Mode::*;
        let x = a[0];
        let h_swish = |v: f64| v * (v + 3.0).clamp(0.0, 6.0) / 6.0;
        let sigmoid = |v: f64| 1.0 / (1.0 + (-v).exp());
        let relu = |v: f64| if v < 0.0 { 0.0 } else { v };
        match self {
            Relu => relu(x),
            Sigmoid => sigmoid(x),
            Tanh => x.tanh(),
            Exp => x.exp(),
            Log => x.ln(),
            Log1p => x.ln_1p(),
            Expm1 => x.exp_m1(),
            Abs => x.abs(),
            Neg => -x,
            Sqrt => x.sqrt(),
            Floor => x.floor(),
            Ceil => x.ceil(),
            Round => x.round(),
            HSwish => h_swish(x),
            Gelu => 0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2)),
            Add => x + a[1],
            Sub => x - a[1],
            Mul => x * a[1],
            Div => x / a[1],
            FloorDiv => (x / a[1]).floor(),
            Max => {
                if x.is_nan() || a[1].is_nan() {
                    f64::NAN
                } else {
                    x.max(a[1])
                }
            }
            Min => {
                if x.is_nan() || a[1].is_nan() {
                    f64::NAN
                } else {
                    x.min(a[1])
                }
            }
            Pow => x.powf(a[1]),
            FuseAddRelu => relu(x + a[1]),
            FuseAddSigmoid => sigmoid(x + a[1]),
            FuseAddHSwish => h_swish(x + a[1]),
            LogSumExp => {
                let (hi, lo) = if x > a[1] { (x, a[1]) } else { (a[1], x) };
                if hi == f64::NEG_INFINITY { f64::NEG_INFINITY } else { hi + (lo - hi).exp().ln_1p() }
            }
            Fma3 => x * a[1] + a[2],
        }
    }

    fn apply_int(self, a: &[i64]) -> Result<i64, String> {
        use Mode::*;
        let x = a[0];
        Ok(match self {
            Add => x.wrapping_add(a[1]),
            Sub => x.wrapping_sub(a[1]),
            Mul => x.wrapping_mul(a[1]),
            Max => x.max(a[1]),
            Min => x.min(a[1]),
            Abs => x.wrapping_abs(),
            Neg => x.wrapping_neg(),
            Relu => x.max(0),
            FuseAddRelu => x.wrapping_add(a[1]).max(0),
            FloorDiv => {
                if a[1] == 0 {
                    return Err("integer floor_div by zero".into());
                }
                // Wrapping like the other integer modes: i64::MIN / -1 wraps to i64::MIN.
                x.wrapping_div_euclid(a[1]).wrapping_sub(i64::from(x.wrapping_rem_euclid(a[1]) != 0 && a[1] < 0))
            }
            other => return Err(format!("mode `{}` is not defined on integers", other.name())),
        })
    }
}

/// The error function, to double precision: a Taylor series near zero and a
/// continued fraction for `erfc` in the tails.
pub fn erf(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    let ax = x.abs();
    let r = if ax < 2.5 {
        let (mut term, mut sum, x2) = (ax, ax, ax * ax);
        for n in 1..80 {
            term *= -x2 / n as f64;
            let add = term / (2 * n + 1) as f64;
            sum += add;
            if add.abs() < 1e-17 * sum.abs() {
                break;
            }
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    } else if ax > 27.0 {
        1.0
    } else {
        let mut t = ax;
        for k in (1..=80).rev() {
            t = ax + (k as f64 / 2.0) / t;
        }
        1.0 - (-ax * ax).exp() / (std::f64::consts::PI.sqrt() * t)
    };
    if x < 0.0 { -r } else { r }
}

fn result_elem(cx: &OpCx<'_>, first: &TensorType) -> Result<ElemType, String> {
    match cx.attrs.opt::<attr_kind::Type>("out_dtype")? {
        None => Ok(first.elem),
        Some(t) => match cx.ctx.ty(t) {
            TypeData::Scalar(e) => Ok(*e),
            _ => Err("attribute `out_dtype` must be an element type such as `qs8<0.1>`".into()),
        },
    }
}

fn infer_elemwise(cx: &OpCx<'_>) -> Result<Vec<TypeData>, String> {
    let mode = Mode::parse(cx.attrs.str("mode")?)?;
    if cx.operand_types.len() != mode.arity() {
        return Err(format!("mode `{}` takes {} operands, got {}", mode.name(), mode.arity(), cx.operand_types.len()));
    }
    let first = cx.tensor(0)?;
    let layout = blocked_operand_layout(cx)?;
    let mut shape = first.shape.clone();
    for i in 1..cx.operand_types.len() {
        let t = cx.tensor(i)?;
        if t.elem != first.elem {
            return Err(format!("operand element types differ: {} and {}", first.elem, t.elem));
        }
        shape = broadcast_shapes(&shape, &t.shape).map_err(|axis| {
            format!(
                "operand shapes {} and {} do not broadcast (axis {axis} of the result)",
                show(cx, &shape),
                show(cx, &t.shape)
            )
        })?;
    }
    if !mode.allows(first.elem) {
        return Err(format!("mode `{}` is not defined for {}", mode.name(), first.elem));
    }
    let elem = result_elem(cx, first)?;
    if elem.is_quantized() != first.elem.is_quantized() || (elem.is_float() != first.elem.is_float()) {
        return Err(format!("out_dtype {elem} must be of the same kind as the operands ({})", first.elem));
    }
    Ok(vec![TypeData::Tensor(TensorType { shape, elem, layout })])
}

/// The layout of the result: plain, or the one blocked layout among the
/// operands. Blocked operands must agree on their channel axes (broadcasting
/// them would mix channels); plain operands next to blocked ones must hold one
/// element (a scalar broadcast means the same in every layout).
fn blocked_operand_layout(cx: &OpCx<'_>) -> Result<Layout, String> {
    let mut blocked: Option<&TensorType> = None;
    for i in 0..cx.operand_types.len() {
        let t = cx.tensor(i)?;
        if t.layout == Layout::Nchw {
            continue;
        }
        match blocked {
            None => blocked = Some(t),
            Some(b) if b.layout != t.layout => {
                return Err(format!("operand layouts differ: #{} and #{}", b.layout, t.layout));
            }
            Some(b) => {
                let axes = crate::layout::format::channel_axes(b.layout);
                let same = b.shape.len() == t.shape.len()
                    && axes.is_none_or(|(c, k)| b.shape.get(c) == t.shape.get(c) && b.shape.get(k) == t.shape.get(k));
                if !same {
                    return Err(format!(
                        "operands in the blocked layout #{} must have equal ranks and channel dims, have {} and {}",
                        b.layout,
                        show(cx, &b.shape),
                        show(cx, &t.shape)
                    ));
                }
            }
        }
    }
    let Some(b) = blocked else { return Ok(Layout::Nchw) };
    for i in 0..cx.operand_types.len() {
        let t = cx.tensor(i)?;
        if t.layout == Layout::Nchw && (t.shape.len() > b.shape.len() || t.shape.iter().any(|&d| d != Dim::Fixed(1))) {
            return Err(format!(
                "operand layouts differ: #{} and #nchw (a plain operand next to a blocked one must hold one element, has shape {})",
                b.layout,
                show(cx, &t.shape)
            ));
        }
    }
    Ok(b.layout)
}

fn eval_elemwise(cx: &OpCx<'_>, inputs: &[TensorData]) -> Result<Vec<TensorData>, String> {
    let mode = Mode::parse(cx.attrs.str("mode")?)?;
    if inputs.len() != mode.arity() {
        return Err(format!("mode `{}` takes {} inputs, got {}", mode.name(), mode.arity(), inputs.len()));
    }
    let out_elem = cx.result_tensor(0).map(|t| t.elem).unwrap_or(inputs[0].elem());
    let mut shape = super::common::fixed(inputs[0].shape());
    for t in &inputs[1..] {
        shape = broadcast_shapes(&shape, &super::common::fixed(t.shape())).map_err(|_| {
            format!("input shapes {:?} do not broadcast", inputs.iter().map(|t| t.shape()).collect::<Vec<_>>())
        })?;
    }
    let shape: Vec<usize> = shape.iter().map(|d| d.fixed().unwrap_or(0) as usize).collect();
    let elem = inputs[0].elem();
    let plain_int = !elem.is_float() && !elem.is_quantized();
    let n: usize = shape.iter().product();
    let mut bytes = Vec::with_capacity(n * out_elem.size_bytes());
    let mut err = None;
    let mut args_f = vec![0.0; inputs.len()];
    let mut args_i = vec![0i64; inputs.len()];
    super::common::for_each_index(&shape, |idx| {
        if plain_int {
            for (k, t) in inputs.iter().enumerate() {
                args_i[k] = t.get_i64(broadcast_offset(idx, t.shape()));
            }
            // fuse_add_relu wraps the sum to the element width before the relu,
            // as a separate add then relu would.
            let r = match mode {
                Mode::FuseAddRelu => Mode::Add.apply_int(&args_i).map(|v| wrap_to(out_elem, v).max(0)),
                _ => mode.apply_int(&args_i),
            };
            match r {
                Ok(v) => bytes.extend_from_slice(&v.to_le_bytes()[..out_elem.size_bytes()]),
                Err(e) => {
                    err.get_or_insert(e);
                    bytes.extend(std::iter::repeat_n(0, out_elem.size_bytes()));
                }
            }
        } else {
            for (k, t) in inputs.iter().enumerate() {
                args_f[k] = t.get_real(broadcast_offset(idx, t.shape()));
            }
            TensorData::encode_real(out_elem, mode.apply(&args_f), &mut bytes);
        }
    });
    if let Some(e) = err {
        return Err(e);
    }
    Ok(vec![TensorData::from_bytes(out_elem, shape, bytes.into()).map_err(|e| e.to_string())?])
}

fn is_commutative(ctx: &Context, op: OpId) -> bool {
    let mode = ctx.op_attr(op, "mode").and_then(|a| attr_kind_str(ctx, a)).and_then(|m| Mode::parse(m).ok());
    mode.is_some_and(Mode::is_commutative)
}

/// The splat real value of a constant operand.
fn splat(ctx: &Context, v: ValueId) -> Option<f64> {
    let t = ctx.constant_value(v)?;
    (!t.is_empty() && t.is_splat()).then(|| t.get_real(0))
}

/// Identities: `x+0, 0+x, x-0, x*1, 1*x, x/1 -> x`, `relu(relu(x)) -> relu(x)`
/// — only when the kept operand already has the result type.
fn fold_elemwise(ctx: &Context, op: OpId) -> Option<Vec<FoldResult>> {
    let e = ElemwiseOp::cast(ctx, op)?;
    let mode = Mode::parse(ctx.op_attr(op, "mode").and_then(|a| attr_kind_str(ctx, a))?).ok()?;
    let ins = e.inputs(ctx);
    let out_ty = ctx.value_type(e.output(ctx));
    let keep = |i: usize| (ctx.value_type(ins[i]) == out_ty).then(|| vec![FoldResult::Value(ins[i])]);
    match (mode, ins.len()) {
        (Mode::Add, 2) if splat(ctx, ins[1]) == Some(0.0) => keep(0),
        (Mode::Add, 2) if splat(ctx, ins[0]) == Some(0.0) => keep(1),
        (Mode::Sub, 2) if splat(ctx, ins[1]) == Some(0.0) => keep(0),
        (Mode::Mul, 2) if splat(ctx, ins[1]) == Some(1.0) => keep(0),
        (Mode::Mul, 2) if splat(ctx, ins[0]) == Some(1.0) => keep(1),
        (Mode::Div, 2) if splat(ctx, ins[1]) == Some(1.0) => keep(0),
        (Mode::Relu, 1) => {
            let producer = ElemwiseOp::cast(ctx, ctx.defining_op(ins[0])?)?;
            let inner = ctx.op_attr(producer.0, "mode").and_then(|a| attr_kind_str(ctx, a))?;
            matches!(inner, "relu" | "fuse_add_relu").then(|| keep(0)).flatten()
        }
        _ => None,
    }
}

fn attr_kind_str(ctx: &Context, a: strata_ir::Attr) -> Option<&str> {
    <attr_kind::Str as attr_kind::Get>::get(ctx, a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mode_parses_and_names_itself() {
        for &(name, mode) in MODES {
            assert_eq!(Mode::parse(name).unwrap(), mode);
            assert_eq!(mode.name(), name);
        }
        assert!(Mode::parse("nope").unwrap_err().contains("fuse_add_relu"));
    }

    /// Regression (found by the `jit_vs_reference` fuzz target): the i32 sum
    /// wraps before the relu, as a separate add then relu would.
    #[test]
    fn integer_fuse_add_relu_wraps_before_the_relu() {
        let mut ctx = crate::context();
        let a = TensorData::from_f64(ElemType::I32, vec![2], &[2147483647.0, -2147483648.0]).unwrap();
        let b = TensorData::from_f64(ElemType::I32, vec![2], &[3.0, -6.0]).unwrap();
        let mode = ctx.intern_attr(strata_ir::AttrData::Str("fuse_add_relu".into()));
        let attrs = crate::apply::intern_attrs(&mut ctx, &[("mode".into(), mode)]);
        let out = crate::apply::eval(&mut ctx, "graph.elemwise", &[a, b], &attrs).unwrap();
        assert_eq!((out[0].get_i64(0), out[0].get_i64(1)), (0, 2147483642));
    }

    #[test]
    fn hand_computed_values() {
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        assert!(close(Mode::Sigmoid.apply(&[0.0]), 0.5));
        assert!(close(Mode::HSwish.apply(&[1.0]), 1.0 * 4.0 / 6.0));
        assert!(close(Mode::HSwish.apply(&[-4.0]), 0.0));
        assert!(close(Mode::Gelu.apply(&[1.0]), 0.841_344_746_068_542_9));
        assert!(close(Mode::LogSumExp.apply(&[1000.0, 1000.0]), 1000.0 + std::f64::consts::LN_2));
        assert!(close(Mode::Fma3.apply(&[2.0, 3.0, 4.0]), 10.0));
        assert!(close(Mode::FloorDiv.apply(&[-7.0, 2.0]), -4.0));
        assert_eq!(Mode::FloorDiv.apply_int(&[-7, 2]).unwrap(), -4);
        assert_eq!(Mode::FloorDiv.apply_int(&[7, -2]).unwrap(), -4);
        assert_eq!(Mode::FloorDiv.apply_int(&[-8, 2]).unwrap(), -4);
        assert!(Mode::FloorDiv.apply_int(&[1, 0]).is_err());
        assert_eq!(Mode::FloorDiv.apply_int(&[i64::MIN, -1]).unwrap(), i64::MIN);
        assert!(Mode::Relu.apply(&[f64::NAN]).is_nan());
        assert!(close(Mode::Round.apply(&[-2.5]), -3.0));
    }

    #[test]
    fn erf_matches_known_values() {
        for (x, want) in [
            (0.0, 0.0),
            (0.5, 0.520_499_877_813_046_5),
            (1.0, 0.842_700_792_949_714_9),
            (2.0, 0.995_322_265_018_952_7),
            (3.0, 0.999_977_909_503_001_4),
            (-1.0, -0.842_700_792_949_714_9),
        ] {
            assert!((erf(x) - want).abs() < 1e-14, "erf({x}) = {} want {want}", erf(x));
        }
    }
}
