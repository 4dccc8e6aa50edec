//! The `graph` dialect: high-level tensor ops in NCHW, as traced.
//!
//! This is the starter set that exercises the machinery — constants, two
//! broadcasting binary ops and one unary op — each with verification (shape
//! inference checked against the declared result type), folding of algebraic
//! identities, and a reference `eval`.

mod eval;

pub use eval::{BinaryKind, UnaryKind, broadcast_shapes, eval_binary, eval_unary};

use strata_ir::{Context, DenseStorage, Dim, FoldResult, OpId, OpView, Registry, TensorData, define_op};

define_op! {
    /// A constant tensor held in the `value` attribute.
    pub struct ConstOp = "graph.const" {
        summary: "a constant tensor",
        operands: [],
        results: [output],
        attrs: { value: Dense },
        optional_attrs: {},
        traits: [PURE, CONSTANT_LIKE],
        verify: verify_const,
        eval: eval_const,
    }
}

define_op! {
    /// Elementwise addition with numpy-style broadcasting.
    pub struct AddOp = "graph.add" {
        summary: "elementwise addition (broadcasting)",
        operands: [lhs, rhs],
        results: [output],
        attrs: {},
        optional_attrs: {},
        traits: [PURE, COMMUTATIVE],
        verify: verify_binary,
        fold: fold_add,
        eval: eval_add,
    }
}

define_op! {
    /// Elementwise multiplication with numpy-style broadcasting.
    pub struct MulOp = "graph.mul" {
        summary: "elementwise multiplication (broadcasting)",
        operands: [lhs, rhs],
        results: [output],
        attrs: {},
        optional_attrs: {},
        traits: [PURE, COMMUTATIVE],
        verify: verify_binary,
        fold: fold_mul,
        eval: eval_mul,
    }
}

define_op! {
    /// Rectified linear unit: `x < 0 ? 0 : x` (NaN stays NaN).
    pub struct ReluOp = "graph.relu" {
        summary: "rectified linear unit",
        operands: [input],
        results: [output],
        attrs: {},
        optional_attrs: {},
        traits: [PURE],
        verify: verify_unary,
        fold: fold_relu,
        eval: eval_relu,
    }
}

/// Registers the `graph` dialect; `graph.const` materialises folded constants.
pub fn register(r: &mut Registry) {
    for def in [ConstOp::DEF, AddOp::DEF, MulOp::DEF, ReluOp::DEF] {
        r.register(def).expect("invariant: graph ops register once");
    }
    r.set_constant_op("graph", ConstOp::NAME);
}

fn tensor_of<'c>(
    ctx: &'c Context,
    v: strata_ir::ValueId,
    what: &str,
    errs: &mut Vec<String>,
) -> Option<&'c strata_ir::TensorType> {
    let t = ctx.value_tensor(v);
    if t.is_none() {
        errs.push(format!("{what} must be a tensor, is {}", strata_ir::type_to_string(ctx, ctx.value_type(v))));
    }
    t
}

fn verify_const(ctx: &Context, op: OpId, errs: &mut Vec<String>) {
    let c = ConstOp(op);
    let Some(strata_ir::AttrData::Dense(d)) = ctx.op_attr(op, "value").map(|a| ctx.attr(a)) else {
        return;
    };
    if ctx.op(op).results.len() == 1 && ctx.value_type(c.output(ctx)) != d.ty {
        errs.push(format!(
            "result type {} differs from the constant's type {}",
            strata_ir::type_to_string(ctx, ctx.value_type(c.output(ctx))),
            strata_ir::type_to_string(ctx, d.ty)
        ));
    }
}

fn verify_binary(ctx: &Context, op: OpId, errs: &mut Vec<String>) {
    let data = ctx.op(op);
    if data.operands.len() != 2 || data.results.len() != 1 {
        return;
    }
    let (Some(a), Some(b), Some(out)) = (
        tensor_of(ctx, data.operands[0], "lhs", errs),
        tensor_of(ctx, data.operands[1], "rhs", errs),
        tensor_of(ctx, data.results[0], "the result", errs),
    ) else {
        return;
    };
    if a.elem != b.elem || a.elem != out.elem {
        errs.push(format!("element types must agree, got {}, {} -> {}", a.elem, b.elem, out.elem));
    }
    if a.layout != b.layout || a.layout != out.layout {
        errs.push("operand and result layouts must agree".into());
    }
    match broadcast_shapes(&a.shape, &b.shape) {
        Ok(shape) if shape == out.shape => {}
        Ok(shape) => errs.push(format!(
            "result shape {} does not match the broadcast shape {}",
            show_shape(ctx, &out.shape),
            show_shape(ctx, &shape)
        )),
        Err(axis) => errs.push(format!(
            "operand shapes {} and {} do not broadcast (axis {axis} of the result)",
            show_shape(ctx, &a.shape),
            show_shape(ctx, &b.shape)
        )),
    }
}

fn verify_unary(ctx: &Context, op: OpId, errs: &mut Vec<String>) {
    let data = ctx.op(op);
    if data.operands.len() != 1 || data.results.len() != 1 {
        return;
    }
    let (Some(_), Some(_)) =
        (tensor_of(ctx, data.operands[0], "the input", errs), tensor_of(ctx, data.results[0], "the result", errs))
    else {
        return;
    };
    if ctx.value_type(data.operands[0]) != ctx.value_type(data.results[0]) {
        errs.push("result type must equal the input type".into());
    }
}

/// `[1, 3, ?N]`-style text of a shape, for diagnostics.
pub fn show_shape(ctx: &Context, shape: &[Dim]) -> String {
    let dims: Vec<String> = shape
        .iter()
        .map(|d| match d {
            Dim::Fixed(n) => n.to_string(),
            Dim::Sym(s) => format!("?{}", ctx.str(*s)),
        })
        .collect();
    format!("[{}]", dims.join(", "))
}

/// The splat value of a constant operand, if it is a non-empty splat float/int constant.
fn splat_value(ctx: &Context, v: strata_ir::ValueId) -> Option<f64> {
    let t = ctx.constant_value(v)?;
    (!t.is_empty() && t.is_splat() && !t.elem().is_quantized()).then(|| t.get_f64(0))
}

/// `x op c -> x` when `c` is a splat of `identity` and the result has `x`'s type.
fn fold_identity(ctx: &Context, op: OpId, identity: f64) -> Option<Vec<FoldResult>> {
    let data = ctx.op(op);
    let out_ty = ctx.value_type(*data.results.first()?);
    for (keep, other) in [(0, 1), (1, 0)] {
        let (x, c) = (*data.operands.get(keep)?, *data.operands.get(other)?);
        if ctx.value_type(x) == out_ty && splat_value(ctx, c) == Some(identity) {
            return Some(vec![FoldResult::Value(x)]);
        }
    }
    None
}

fn fold_add(ctx: &Context, op: OpId) -> Option<Vec<FoldResult>> {
    fold_identity(ctx, op, 0.0)
}

fn fold_mul(ctx: &Context, op: OpId) -> Option<Vec<FoldResult>> {
    fold_identity(ctx, op, 1.0)
}

fn fold_relu(ctx: &Context, op: OpId) -> Option<Vec<FoldResult>> {
    let input = ReluOp(op).input(ctx);
    let producer = ctx.defining_op(input)?;
    ReluOp::cast(ctx, producer).map(|_| vec![FoldResult::Value(input)])
}

fn eval_const(ctx: &Context, op: OpId, _inputs: &[TensorData]) -> Result<Vec<TensorData>, String> {
    let d = ConstOp(op).value(ctx);
    match &d.storage {
        DenseStorage::Data(t) => Ok(vec![t.clone()]),
        DenseStorage::Elided { hash } => Err(format!(
            "constant data was elided when printed (#blob<0x{hash:016x}>); print with --print-large-consts to keep it"
        )),
    }
}

fn two(inputs: &[TensorData]) -> Result<(&TensorData, &TensorData), String> {
    match inputs {
        [a, b] => Ok((a, b)),
        _ => Err(format!("expected 2 inputs, got {}", inputs.len())),
    }
}

fn eval_add(_ctx: &Context, _op: OpId, inputs: &[TensorData]) -> Result<Vec<TensorData>, String> {
    let (a, b) = two(inputs)?;
    Ok(vec![eval_binary(BinaryKind::Add, a, b)?])
}

fn eval_mul(_ctx: &Context, _op: OpId, inputs: &[TensorData]) -> Result<Vec<TensorData>, String> {
    let (a, b) = two(inputs)?;
    Ok(vec![eval_binary(BinaryKind::Mul, a, b)?])
}

fn eval_relu(_ctx: &Context, _op: OpId, inputs: &[TensorData]) -> Result<Vec<TensorData>, String> {
    let [x] = inputs else {
        return Err(format!("expected 1 input, got {}", inputs.len()));
    };
    Ok(vec![eval_unary(UnaryKind::Relu, x)?])
}
