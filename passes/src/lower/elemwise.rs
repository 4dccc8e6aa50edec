//! Lowering of `graph.elemwise` and `graph.typecvt`: one pass over the output,
//! vectorised along the last (contiguous) dimension for f32, operands read with
//! numpy broadcasting.
//!
//! Modes follow [`super::emit_elemwise`]; integer tensors support the modes
//! that need no float math (add, sub, mul, max, min, abs, neg, relu,
//! fuse_add_relu) as scalar loops. Quantised element types go to
//! [`super::quant`] (dequantise, compute in f32, requantise).

use super::{KernelCx, LResult, emit_elemwise, load_broadcast, map_output};
use strata_dialects::graph::elemwise::{ElemwiseOp, Mode};
use strata_dialects::loops::lanes_for;
use strata_ir::{ElemType, OpId};

fn lanes(elem: ElemType) -> Option<u32> {
    (elem == ElemType::F32).then(|| lanes_for(elem))
}

/// Lowers `graph.elemwise`.
pub fn lower_elemwise(cx: &mut KernelCx<'_, '_, '_>, op: OpId) -> LResult<()> {
    if super::quant::is_quantised(cx, op) {
        return super::quant::lower_elemwise(cx, op);
    }
    let e = ElemwiseOp(op);
    let mode = Mode::parse(e.mode(cx.k.ctx())).map_err(|m| cx.err(op, m))?;
    let out = cx.k.ctx().op(op).results[0];
    let out_t = cx.tensor(out);
    if out_t.elem.is_quantized() || cx.k.ctx().op(op).operands.iter().any(|&v| cx.tensor(v).elem.is_quantized()) {
        return Err(cx.err(op, "quantised elementwise ops are not lowered yet"));
    }
    if cx.k.ctx().op(op).operands.iter().any(|&v| cx.tensor(v).elem != out_t.elem) {
        return Err(cx.err(op, "operands of another element type than the result (out_dtype) are not lowered"));
    }
    let shape = cx.shape(out);
    let operands: Vec<(strata_ir::ValueId, Vec<usize>)> =
        e.inputs(cx.k.ctx()).to_vec().into_iter().zip(cx.inputs.clone()).map(|(v, b)| (b, cx.shape(v))).collect();
    let err_op = cx.err(op, "");
    map_output(cx, &shape, lanes(out_t.elem), |k, idx, l| {
        let args: Vec<_> = operands.iter().map(|(b, s)| load_broadcast(k, *b, s, &shape, idx, l)).collect();
        emit_elemwise(k, mode, &args).map_err(|m| super::LowerError { message: m, ..err_op.clone() })
    })
}

/// Lowers `graph.typecvt` between plain element types (float ↔ int truncates
/// toward zero and saturates, as the reference does).
pub fn lower_typecvt(cx: &mut KernelCx<'_, '_, '_>, op: OpId) -> LResult<()> {
    if super::quant::is_quantised(cx, op) {
        return super::quant::lower_typecvt(cx, op);
    }
    let x = cx.operand(op, 0);
    let out = cx.k.ctx().op(op).results[0];
    let (from, to) = (cx.tensor(x).elem, cx.tensor(out).elem);
    if from.is_quantized() || to.is_quantized() {
        return Err(cx.err(op, format!("typecvt {from} -> {to}: quantised conversions are not lowered yet")));
    }
    let shape = cx.shape(out);
    let input = cx.inputs[0];
    let to_ty = cx.k.scalar_ty(to);
    map_output(cx, &shape, None, |k, idx, _| {
        let v = k.load(input, idx);
        Ok(k.cast(v, to_ty))
    })
}
