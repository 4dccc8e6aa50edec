//! Lowering of `graph.reduce` (`sum`, `mean`, `max`, `min`, `prod` over one
//! axis, `keepdim` or not; stored shapes, so blocked tensors reducing H or W
//! work alike).
//!
//! Every output element is written once through [`super::map_output`] (rows
//! split across threads, the epilogue applied):
//!
//! - **f32, reducing a non-last axis**: the output's last dimension is the
//!   input's contiguous last dimension, so each output vector of 4 is a loop
//!   over the reduced axis combining input vectors (scalar tail for the last
//!   `len % 4` elements);
//! - **f32, reducing the last axis**: per output element, a vector partial
//!   result over the contiguous axis (`reduce_lanes`, or the four lanes
//!   multiplied for `prod`) and a scalar tail;
//! - **integers** (i8, u8, i16, u16, i32, i64): scalar loops as the reference
//!   computes them — `sum`/`prod` wrap at the element width (the same as the
//!   reference's wrapping `i64` arithmetic cut to the width), `max`/`min` exact,
//!   `mean` sums in `i64` and divides truncating toward zero.
//!
//! Float accumulation is in f32 (the reference uses f64 and rounds once), so
//! results differ by rounding. `mean` of an empty float axis is NaN (0/0),
//! `sum` 0 and `prod` 1, as in the reference.
//!
//! Quantised `max`/`min` compare the stored integers (the scale is positive).
//!
//! Refused with an error: f16/bf16 (promoted to f32 before lowering), quantised
//! `sum`/`mean`/`prod`, `bool`, an unknown mode, a result whose
//! shape or element type disagrees with the attributes.

use super::{KernelCx, LResult, LowerError, map_output};
use strata_dialects::graph::reduce::ReduceMode;
use strata_dialects::loops::{BinOp, KernelBuilder, LaneReduce};
use strata_ir::{ElemType, OpId, Ty, ValueId, attr_kind::Get};

const LANES: u32 = 4;

/// Lowers `graph.reduce`.
pub fn lower_reduce(cx: &mut KernelCx<'_, '_, '_>, op: OpId) -> LResult<()> {
    let ctx = cx.k.ctx();
    let attr = |key: &str| ctx.op_attr(op, key);
    let mode = attr("mode")
        .and_then(|a| strata_ir::attr_kind::Str::get(ctx, a))
        .ok_or_else(|| cx.err(op, "attribute `mode` (a string) is missing"))?;
    let mode = ReduceMode::parse(mode).map_err(|m| cx.err(op, m))?;
    let axis = attr("axis")
        .and_then(|a| strata_ir::attr_kind::Int::get(ctx, a))
        .ok_or_else(|| cx.err(op, "attribute `axis` (an integer) is missing"))?;
    let keepdim = attr("keepdim")
        .and_then(|a| strata_ir::attr_kind::Bool::get(ctx, a))
        .ok_or_else(|| cx.err(op, "attribute `keepdim` (a bool) is missing"))?;
    let producer = cx.epilogue.input_producer.clone();
    if ctx.op(op).operands.len() != 1 || ctx.op(op).results.len() != 1 || (producer.is_none() && cx.inputs.len() != 1) {
        return Err(cx.err(op, "expects one operand and one result"));
    }
    let (xv, ov) = (cx.operand(op, 0), ctx.op(op).results[0]);
    let (xt, ot) = (cx.tensor(xv), cx.tensor(ov));
    let elem = xt.elem;
    if ot.elem != elem {
        return Err(cx.err(op, format!("the result has element type {}, the input {elem}", ot.elem)));
    }
    // Max/min of quantised values are max/min of their stored integers (the
    // scale is positive), so they take the integer path.
    let int =
        matches!(elem, ElemType::I8 | ElemType::U8 | ElemType::I16 | ElemType::U16 | ElemType::I32 | ElemType::I64)
            || (elem.is_quantized() && matches!(mode, ReduceMode::Max | ReduceMode::Min));
    if elem != ElemType::F32 && !int {
        let why = if elem.is_quantized() {
            "quantised reductions are not lowered yet"
        } else if elem.is_float() {
            "only f32 float reductions are lowered (convert f16/bf16 first)"
        } else {
            "the element type is not supported"
        };
        return Err(cx.err(op, format!("reduce `{}` of {elem}: {why}", mode.name())));
    }
    let (shape, out_shape) = (cx.shape(xv), cx.shape(ov));
    let rank = shape.len() as i64;
    let ax = if axis < 0 { axis.checked_add(rank) } else { Some(axis) }.filter(|&a| (0..rank).contains(&a));
    let Some(ax) = ax.map(|a| a as usize) else {
        return Err(cx.err(op, format!("axis {axis} is out of range for an input of rank {rank}")));
    };
    let mut want = shape.clone();
    if keepdim {
        want[ax] = 1;
    } else {
        want.remove(ax);
    }
    if want != out_shape {
        return Err(cx.err(op, format!("the result shape {out_shape:?} should be {want:?}")));
    }
    let n = shape[ax];
    if n == 0 && (matches!(mode, ReduceMode::Max | ReduceMode::Min) || (int && mode == ReduceMode::Mean)) {
        return Err(cx.err(op, format!("reduce `{}` of {elem} over an empty axis {ax}", mode.name())));
    }
    if out_shape.contains(&0) {
        return Ok(());
    }
    let x = match producer {
        Some(p) => Source::Producer(p),
        None => Source::Buffer(cx.inputs[0]),
    };
    let r = Reduction { x, mode, axis: ax, keepdim, n, elem };
    let last = ax + 1 == shape.len();
    if elem == ElemType::F32 && last {
        map_output(cx, &out_shape, None, |k, idx, _| r.along_contiguous(k, idx))
    } else {
        let lanes = (elem == ElemType::F32).then_some(LANES);
        map_output(cx, &out_shape, lanes, |k, idx, l| r.along(k, idx, l))
    }
}

/// Where the reduced values come from.
enum Source {
    /// A buffer.
    Buffer(ValueId),
    /// An elementwise computation fused into the reduction (`fuse-reduce`).
    Producer(Box<super::Prologue>),
}

/// What one reduction reads.
struct Reduction {
    x: Source,
    mode: ReduceMode,
    axis: usize,
    keepdim: bool,
    n: usize,
    elem: ElemType,
}

impl Reduction {
    /// The input at subscripts `at`: a scalar, or `lanes` consecutive elements.
    fn read(&self, k: &mut KernelBuilder<'_, '_>, at: &[ValueId], lanes: Option<u32>) -> LResult<ValueId> {
        match (&self.x, lanes) {
            (Source::Buffer(x), Some(l)) => Ok(k.load_vec(*x, at, l)),
            (Source::Buffer(x), None) => Ok(k.load(*x, at)),
            (Source::Producer(p), l) => p.read(k, at, l),
        }
    }

    /// The input subscripts of element `kk` along the axis for output `idx`.
    fn input_at(&self, idx: &[ValueId], kk: ValueId) -> Vec<ValueId> {
        let mut v = idx.to_vec();
        if self.keepdim {
            v[self.axis] = kk;
        } else {
            v.insert(self.axis, kk);
        }
        v
    }

    /// The binary op combining two partial results.
    fn combine_op(&self) -> BinOp {
        match self.mode {
            ReduceMode::Sum | ReduceMode::Mean => BinOp::Add,
            ReduceMode::Prod => BinOp::Mul,
            ReduceMode::Max => BinOp::Max,
            ReduceMode::Min => BinOp::Min,
        }
    }

    /// The result of an empty reduction (sum 0, prod 1, float mean 0 before /0).
    fn identity(&self, k: &mut KernelBuilder<'_, '_>, ty: Ty) -> ValueId {
        k.constant(ty, if self.mode == ReduceMode::Prod { 1.0 } else { 0.0 })
    }

    /// Reduces along the axis at output `idx`: a scalar, or with `lanes` a
    /// vector of that many consecutive output elements (contiguous in the input).
    fn along(&self, k: &mut KernelBuilder<'_, '_>, idx: &[ValueId], lanes: Option<u32>) -> LResult<ValueId> {
        let int_mean = self.mode == ReduceMode::Mean && self.elem != ElemType::F32;
        let acc_ty = if int_mean { k.scalar_ty(ElemType::I64) } else { k.scalar_ty(self.elem) };
        let acc_ty = match lanes {
            Some(l) => k.vector_ty(self.elem, l),
            None => acc_ty,
        };
        let read = |k: &mut KernelBuilder<'_, '_>, kk: ValueId| -> LResult<ValueId> {
            let at = self.input_at(idx, kk);
            let v = self.read(k, &at, lanes)?;
            Ok(k.cast(v, acc_ty))
        };
        let op = self.combine_op();
        let init = if self.n == 0 {
            self.identity(k, acc_ty)
        } else {
            let z = k.index(0);
            read(k, z)?
        };
        let (lb, ub, one) = (k.index(1), k.index(self.n as i64), k.index(1));
        let acc = k.for_loop(lb, ub, one, &[init], None, |k, kk, acc| {
            let v = read(k, kk)?;
            Ok::<_, LowerError>(vec![k.binary(op, acc[0], v)])
        })?[0];
        Ok(self.finish(k, acc, acc_ty))
    }

    /// Reduces the contiguous last axis (f32) at output `idx` to a scalar:
    /// vectors of 4, then the scalar tail.
    fn along_contiguous(&self, k: &mut KernelBuilder<'_, '_>, idx: &[ValueId]) -> LResult<ValueId> {
        let n = self.n;
        let n4 = n - n % LANES as usize;
        if n4 == 0 {
            return self.along(k, idx, None);
        }
        let op = self.combine_op();
        let lanes = LANES as usize;
        // Independent vector accumulators (so the adds do not wait on each
        // other), combined after the main loop; then single vectors.
        let na = match n4 / lanes {
            v if v >= 8 => 4,
            v if v >= 2 => 2,
            _ => 1,
        };
        let block = na * lanes;
        let main_end = n - n % block;
        let inits: Vec<ValueId> = (0..na)
            .map(|a| {
                let at = k.index((a * lanes) as i64);
                self.read(k, &self.input_at(idx, at), Some(LANES))
            })
            .collect::<LResult<_>>()?;
        let (lb, ub, step) = (k.index(block as i64), k.index(main_end as i64), k.index(block as i64));
        let accs = k.for_loop(lb, ub, step, &inits, None, |k, kk, accs| {
            let mut next = Vec::with_capacity(na);
            for (a, &acc) in accs.iter().enumerate() {
                let at = k.add_i(kk, (a * lanes) as i64);
                let v = self.read(k, &self.input_at(idx, at), Some(LANES))?;
                next.push(k.binary(op, acc, v));
            }
            Ok::<_, LowerError>(next)
        })?;
        let mut vacc = accs[0];
        for &a in &accs[1..] {
            vacc = k.binary(op, vacc, a);
        }
        let (lb, ub, step) = (k.index(main_end as i64), k.index(n4 as i64), k.index(i64::from(LANES)));
        let vacc = k.for_loop(lb, ub, step, &[vacc], None, |k, kk, acc| {
            let v = self.read(k, &self.input_at(idx, kk), Some(LANES))?;
            Ok::<_, LowerError>(vec![k.binary(op, acc[0], v)])
        })?[0];
        let s = match self.mode {
            ReduceMode::Sum | ReduceMode::Mean => k.reduce_lanes(LaneReduce::Add, vacc),
            ReduceMode::Max => k.reduce_lanes(LaneReduce::Max, vacc),
            ReduceMode::Min => k.reduce_lanes(LaneReduce::Min, vacc),
            ReduceMode::Prod => {
                let mut p = k.extract(vacc, 0);
                for lane in 1..LANES {
                    let e = k.extract(vacc, lane);
                    p = k.mul(p, e);
                }
                p
            }
        };
        let (lb, ub, one) = (k.index(n4 as i64), k.index(n as i64), k.index(1));
        let acc = k.for_loop(lb, ub, one, &[s], None, |k, kk, acc| {
            let v = self.read(k, &self.input_at(idx, kk), None)?;
            Ok::<_, LowerError>(vec![k.binary(op, acc[0], v)])
        })?[0];
        let ty = k.scalar_ty(ElemType::F32);
        Ok(self.finish(k, acc, ty))
    }

    /// Applies `mean`'s division and converts back to the element type.
    fn finish(&self, k: &mut KernelBuilder<'_, '_>, acc: ValueId, acc_ty: Ty) -> ValueId {
        if self.mode != ReduceMode::Mean {
            return acc;
        }
        let count = k.constant(acc_ty, self.n as f64);
        let q = k.binary(BinOp::Div, acc, count);
        let ty = k.scalar_ty(self.elem);
        if self.elem == ElemType::F32 { q } else { k.cast(q, ty) }
    }
}

#[cfg(test)]
#[path = "reduce_tests.rs"]
mod tests;
