//! Lowering of `graph.softmax` and `graph.batch_norm` (inference form) on
//! `f32` tensors.
//!
//! - `softmax` along `axis` is numerically stable: per lane of the other axes
//!   it takes the maximum, then `e = exp(x - max)` (stored in the result) and
//!   their sum, then divides the stored `e` by the sum. When the axis is the
//!   last one, each row is reduced with 128-bit vectors (a vector accumulator,
//!   a horizontal reduction and a scalar remainder); otherwise the last axis is
//!   vectorised and the reduction runs across the rows of the softmax axis, so
//!   one vector holds independent softmaxes.
//! - `batch_norm` computes `(x - mean) / sqrt(var + epsilon) · scale + bias`
//!   in the reference's order, one row `(n, c, h)` per parallel iteration (the
//!   channel's statistics loaded once per row), vectorised along W.
//!
//! The reference computes in `f64` and rounds once; these kernels compute in
//! `f32` (exp through the runtime helper), so results agree to a few ulps.
//! Other element types (`f16`, `bf16`) are refused with an error, as is a
//! training-mode batch normalisation (the graph op is inference-only; an op
//! carrying `training = true` or `fwd_mode = "training"` is refused).

use super::data::{attr_float, attr_int, for_lanes, for_rows, load_l, store_out};
use super::{KernelCx, LResult};
use strata_dialects::loops::{BinOp, KernelBuilder, LaneReduce, UnOp, ValueKind, lanes_for};
use strata_ir::registry::attr_kind::{self, Get};
use strata_ir::{ElemType, OpId, ValueId};

/// Lowers `graph.softmax` or `graph.batch_norm`.
pub fn lower_norm(cx: &mut KernelCx<'_, '_, '_>, op: OpId) -> LResult<()> {
    let name = cx.k.ctx().op_name(op).to_string();
    match name.as_str() {
        "graph.softmax" => lower_softmax(cx, op),
        "graph.batch_norm" => lower_batch_norm(cx, op),
        other => Err(cx.err(op, format!("`{other}` is not a normalisation op"))),
    }
}

/// The `f32` lane count.
fn f32_lanes() -> u32 {
    lanes_for(ElemType::F32)
}

/// Fails unless every operand and the result are `f32`.
fn expect_f32(cx: &KernelCx<'_, '_, '_>, op: OpId, what: &str) -> LResult<()> {
    let ctx = cx.k.ctx();
    let data = ctx.op(op);
    for &v in data.operands.iter().chain(&data.results) {
        let e = cx.tensor(v).elem;
        if e != ElemType::F32 {
            return Err(cx.err(op, format!("{what} on {e} tensors is not lowered (f32 only)")));
        }
    }
    Ok(())
}

/// `a op b` where `b` is a scalar and `a` a scalar or vector (splatting `b`).
fn with_scalar(k: &mut KernelBuilder<'_, '_>, op: BinOp, a: ValueId, b: ValueId) -> ValueId {
    let b = match ValueKind::of(k.ctx(), k.type_of(a)) {
        ValueKind::Vector(v) => k.splat(b, v.lanes),
        _ => b,
    };
    k.binary(op, a, b)
}

/// An `f32` constant of the kind of `lanes` (scalar or vector).
fn f32_const(k: &mut KernelBuilder<'_, '_>, v: f32, lanes: Option<u32>) -> ValueId {
    match lanes {
        Some(l) => {
            let ty = k.vector_ty(ElemType::F32, l);
            k.constant(ty, f64::from(v))
        }
        None => k.f32(v),
    }
}

/// Reduces `body(j)` over `j in 0..n` with `op` (`lane_op` across vector
/// lanes), starting from `init`: a vector loop and a scalar remainder.
fn reduce_run(
    k: &mut KernelBuilder<'_, '_>,
    n: usize,
    op: BinOp,
    lane_op: LaneReduce,
    init: f32,
    mut body: impl FnMut(&mut KernelBuilder<'_, '_>, ValueId, Option<u32>) -> LResult<ValueId>,
) -> LResult<ValueId> {
    let n = n as i64;
    let l = f32_lanes();
    let mut acc = k.f32(init);
    let mut done = 0i64;
    if n >= i64::from(l) {
        let end = n - n % i64::from(l);
        let vinit = f32_const(k, init, Some(l));
        let (lb, ub, st) = (k.index(0), k.index(end), k.index(i64::from(l)));
        let r = k.for_loop(lb, ub, st, &[vinit], None, |k, j, c| {
            let v = body(k, j, Some(l))?;
            Ok(vec![k.binary(op, c[0], v)])
        })?;
        acc = k.reduce_lanes(lane_op, r[0]);
        done = end;
    }
    let (lb, ub, st) = (k.index(done), k.index(n), k.index(1));
    let r = k.for_loop(lb, ub, st, &[acc], None, |k, j, c| {
        let v = body(k, j, None)?;
        Ok(vec![k.binary(op, c[0], v)])
    })?;
    Ok(r[0])
}

fn lower_softmax(cx: &mut KernelCx<'_, '_, '_>, op: OpId) -> LResult<()> {
    expect_f32(cx, op, "softmax")?;
    let x = cx.operand(op, 0);
    let shape = cx.shape(x);
    let rank = shape.len();
    let axis = strata_dialects::graph::common::norm_axis(attr_int(cx, op, "axis")?, rank)
        .map_err(|e| cx.err(op, format!("attribute `axis`: {e}")))?;
    if shape.contains(&0) {
        return Ok(());
    }
    let (input, output, epilogue) = (cx.inputs[0], cx.output, cx.epilogue.clone());
    let last = rank - 1;
    let len = shape[axis];
    if axis == last {
        // One row per parallel iteration, reduced along the contiguous axis.
        return for_rows(cx.k, &shape[..last], |k, row| {
            let at = |j: ValueId| -> Vec<ValueId> { row.iter().copied().chain([j]).collect() };
            let max = reduce_run(k, len, BinOp::Max, LaneReduce::Max, f32::NEG_INFINITY, |k, j, l| {
                Ok(load_l(k, input, &at(j), l))
            })?;
            let sum = reduce_run(k, len, BinOp::Add, LaneReduce::Add, 0.0, |k, j, l| {
                let v = load_l(k, input, &at(j), l);
                let d = with_scalar(k, BinOp::Sub, v, max);
                let e = k.unary(UnOp::Exp, d);
                k.store(e, output, &at(j));
                Ok(e)
            })?;
            for_lanes(k, len, Some(f32_lanes()), |k, j, l| {
                let e = load_l(k, output, &at(j), l);
                let y = with_scalar(k, BinOp::Div, e, sum);
                store_out(k, &epilogue, output, y, &at(j))
            })
        });
    }
    // The rows: every axis but the softmax axis and the last; the last axis is
    // vectorised and each lane reduces along the softmax axis.
    let row_dims: Vec<usize> = (0..rank).filter(|&d| d != axis && d != last).map(|d| shape[d]).collect();
    let cols = shape[last];
    for_rows(cx.k, &row_dims, |k, row| {
        for_lanes(k, cols, Some(f32_lanes()), |k, j, l| {
            let at = |a: ValueId| -> Vec<ValueId> {
                let mut rest = row.iter();
                (0..rank)
                    .map(|d| {
                        if d == axis {
                            a
                        } else if d == last {
                            j
                        } else {
                            *rest.next().expect("invariant: one row subscript per other axis")
                        }
                    })
                    .collect()
            };
            let (lb, ub, one) = (k.index(0), k.index(len as i64), k.index(1));
            let init = f32_const(k, f32::NEG_INFINITY, l);
            let max = k.for_loop(lb, ub, one, &[init], None, |k, a, c| {
                let v = load_l(k, input, &at(a), l);
                Ok::<_, super::LowerError>(vec![k.max(c[0], v)])
            })?[0];
            let zero = f32_const(k, 0.0, l);
            let sum = k.for_loop(lb, ub, one, &[zero], None, |k, a, c| {
                let v = load_l(k, input, &at(a), l);
                let d = k.sub(v, max);
                let e = k.unary(UnOp::Exp, d);
                k.store(e, output, &at(a));
                Ok::<_, super::LowerError>(vec![k.add(c[0], e)])
            })?[0];
            k.for_range(0, len as i64, 1, |k, a| {
                let e = load_l(k, output, &at(a), l);
                let y = k.binary(BinOp::Div, e, sum);
                store_out(k, &epilogue, output, y, &at(a))
            })
        })
    })
}

fn lower_batch_norm(cx: &mut KernelCx<'_, '_, '_>, op: OpId) -> LResult<()> {
    let ctx = cx.k.ctx();
    let training = ctx.op_attr(op, "training").and_then(|a| attr_kind::Bool::get(ctx, a)) == Some(true)
        || ctx.op_attr(op, "fwd_mode").and_then(|a| attr_kind::Str::get(ctx, a)).is_some_and(|m| m != "inference");
    if training {
        return Err(cx.err(op, "training-mode batch normalisation is not lowered (inference only)"));
    }
    expect_f32(cx, op, "batch_norm")?;
    let operands = cx.k.ctx().op(op).operands.clone();
    if operands.len() != 5 {
        return Err(cx.err(op, format!("expects 5 operands (x, scale, bias, mean, var), has {}", operands.len())));
    }
    let shape = cx.shape(operands[0]);
    let [n, c, h, w]: [usize; 4] =
        shape.as_slice().try_into().map_err(|_| cx.err(op, format!("x must be [N, C, H, W], is {shape:?}")))?;
    for &p in &operands[1..] {
        if cx.shape(p) != [1, c, 1, 1] {
            return Err(cx.err(op, format!("the parameters must be [1, {c}, 1, 1], one is {:?}", cx.shape(p))));
        }
    }
    let eps = attr_float(cx, op, "epsilon")?;
    if !(eps.is_finite() && eps >= 0.0) {
        return Err(cx.err(op, format!("epsilon must be a finite float >= 0, is {eps}")));
    }
    let (output, epilogue) = (cx.output, cx.epilogue.clone());
    let [x, scale, bias, mean, var]: [ValueId; 5] =
        cx.inputs.as_slice().try_into().map_err(|_| cx.err(op, "expects 5 kernel inputs"))?;
    for_rows(cx.k, &[n, c, h], |k, r| {
        let zero = k.index(0);
        let at = [zero, r[1], zero, zero];
        let (s, b, m, v) = (k.load(scale, &at), k.load(bias, &at), k.load(mean, &at), k.load(var, &at));
        let e = k.f32(eps as f32);
        let ve = k.add(v, e);
        let sd = k.unary(UnOp::Sqrt, ve);
        for_lanes(k, w, Some(f32_lanes()), |k, j, l| {
            let idx = [r[0], r[1], r[2], j];
            let xv = load_l(k, x, &idx, l);
            let t = with_scalar(k, BinOp::Sub, xv, m);
            let t = with_scalar(k, BinOp::Div, t, sd);
            let t = with_scalar(k, BinOp::Mul, t, s);
            let y = with_scalar(k, BinOp::Add, t, b);
            store_out(k, &epilogue, output, y, &idx)
        })
    })
}

#[cfg(test)]
#[path = "norm_tests.rs"]
mod tests;
