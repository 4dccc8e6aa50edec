//! `promote-f16-compute` — run f16/bf16 arithmetic in f32 before lowering.
//!
//! Expects: a verified graph/layout-level module. Produces: every computing op
//! (elementwise, convolutions, matmuls, pooling, reductions, softmax,
//! batch_norm, resize) whose operands or results are f16 or bf16 tensors reads
//! f32 copies of them (`graph.typecvt` to f32 before it), computes in f32 and
//! converts its results back (`graph.typecvt` to the original type after it);
//! `compute_mode` attributes are dropped, because the op now computes in f32
//! anyway. Data movement (relayouts, concat, pad, …) and conversions keep their
//! 16-bit tensors: they move bytes.
//!
//! Why: the kernels compute in f32 (the loops dialect stores f16 but does no
//! f16 arithmetic). For `compute_mode = "float32"` ops (`enable_io16xc32`) this
//! is exactly their meaning; for f16 computation (`enable_ioc16`) it is one
//! rounding to f16 per op, as the reference evaluator does (it computes in f64
//! and rounds once). The JIT runs this pass before `lower-graph-to-loops`.
//! Options: none.
//!
//! ```text
//! %0 = graph.elemwise(%x) {mode = "relu"} : (tensor<4xf16>) -> tensor<4xf16>
//! ```
//! becomes
//! ```text
//! %0 = graph.typecvt(%x) {dtype = f32} : (tensor<4xf16>) -> tensor<4xf32>
//! %1 = graph.elemwise(%0) {mode = "relu"} : (tensor<4xf32>) -> tensor<4xf32>
//! %2 = graph.typecvt(%1) {dtype = f16} : (tensor<4xf32>) -> tensor<4xf16>
//! ```

use strata_ir::pass::{Changed, Pass, PassError, PassInfo, PassOptions, PassStats};
use strata_ir::{AttrData, Context, ElemType, InsertPoint, OpBuild, OpId, Rewriter, TensorType, TypeData, ValueId};

/// The pass.
#[derive(Debug, Default)]
pub struct PromoteF16Compute;

/// Registry entry.
pub const INFO: PassInfo = PassInfo {
    name: "promote-f16-compute",
    summary: "compute f16/bf16 ops in f32 (typecvt around them), as the kernels do",
    options: &[],
    create: |_: &PassOptions| Ok(Box::new(PromoteF16Compute)),
};

/// Ops that compute (rather than move bytes).
const COMPUTING: &[&str] = &[
    "graph.elemwise",
    "graph.conv2d",
    "graph.conv_bias",
    "graph.conv_transpose2d",
    "layout.conv_bias",
    "graph.matmul",
    "graph.batched_matmul",
    "graph.pooling",
    "layout.pooling",
    "graph.global_avg_pool",
    "layout.global_avg_pool",
    "graph.adaptive_pooling",
    "layout.adaptive_pooling",
    "graph.reduce",
    "graph.softmax",
    "graph.batch_norm",
    "graph.resize",
    "layout.resize",
];

fn is_half(t: &TensorType) -> bool {
    matches!(t.elem, ElemType::F16 | ElemType::BF16)
}

impl Pass for PromoteF16Compute {
    fn name(&self) -> &'static str {
        "promote-f16-compute"
    }

    fn run(&mut self, ctx: &mut Context, module: OpId, stats: &mut PassStats) -> Result<Changed, PassError> {
        let candidates: Vec<OpId> = ctx
            .walk(module)
            .into_iter()
            .filter(|&op| COMPUTING.contains(&ctx.op_name(op)))
            .filter(|&op| {
                let d = ctx.op(op);
                d.operands.iter().chain(&d.results).any(|&v| ctx.value_tensor(v).is_some_and(is_half))
            })
            .collect();
        if candidates.is_empty() {
            return Ok(Changed::No);
        }
        let mut rw = Rewriter::new(ctx);
        for op in candidates {
            promote(&mut rw, op);
            stats.add("ops-promoted", 1);
        }
        Ok(Changed::Yes)
    }
}

fn typecvt(rw: &mut Rewriter<'_>, x: ValueId, to: ElemType, at: InsertPoint, loc: strata_ir::Loc) -> ValueId {
    let mut t = rw.ctx().value_tensor(x).cloned().expect("invariant: promoted values are tensors");
    t.elem = to;
    let ty = rw.ctx_mut().tensor_type(t);
    let scalar = rw.ctx_mut().intern_type(TypeData::Scalar(to));
    let dtype = rw.ctx_mut().intern_attr(AttrData::Type(scalar));
    let op = rw.create(OpBuild::new("graph.typecvt").operands(&[x]).attr("dtype", dtype).results(&[ty]).loc(loc), at);
    rw.ctx().op(op).results[0]
}

fn promote(rw: &mut Rewriter<'_>, op: OpId) {
    let data = rw.ctx().op(op).clone();
    let loc = data.loc;
    let mut operands = Vec::with_capacity(data.operands.len());
    for &v in &data.operands {
        let half = rw.ctx().value_tensor(v).is_some_and(is_half);
        operands.push(if half { typecvt(rw, v, ElemType::F32, InsertPoint::Before(op), loc) } else { v });
    }
    let mut result_types = Vec::new();
    let mut originals = Vec::new();
    for &r in &data.results {
        let ty = rw.ctx().value_type(r);
        match rw.ctx().value_tensor(r).cloned() {
            Some(mut t) if is_half(&t) => {
                originals.push(Some(t.elem));
                t.elem = ElemType::F32;
                result_types.push(rw.ctx_mut().tensor_type(t));
            }
            _ => {
                originals.push(None);
                result_types.push(ty);
            }
        }
    }
    let mut build = OpBuild::new(rw.ctx().op_name(op).to_string()).operands(&operands).results(&result_types).loc(loc);
    for &(k, a) in &data.attrs {
        let key = rw.ctx().str(k).to_string();
        if key == "compute_mode" {
            continue;
        }
        // An f16 `out_dtype` now means f32 (the result is converted back after).
        let a = match rw.ctx().attr(a).clone() {
            AttrData::Type(t)
                if key == "out_dtype"
                    && matches!(rw.ctx().ty(t), TypeData::Scalar(e) if matches!(e, ElemType::F16 | ElemType::BF16)) =>
            {
                let f = rw.ctx_mut().intern_type(TypeData::Scalar(ElemType::F32));
                rw.ctx_mut().intern_attr(AttrData::Type(f))
            }
            _ => a,
        };
        build = build.attr(key, a);
    }
    let new = rw.create(build, InsertPoint::Before(op));
    let new_results = rw.ctx().op(new).results.clone();
    for ((&old, &fresh), orig) in data.results.iter().zip(&new_results).zip(originals) {
        let value = match orig {
            Some(e) => typecvt(rw, fresh, e, InsertPoint::After(new), loc),
            None => fresh,
        };
        rw.replace_all_uses(old, value);
    }
    rw.erase_op(op);
}

#[cfg(test)]
mod tests {
    use crate::lower::tests::check_lowering_with;

    #[test]
    fn f16_ops_compute_in_f32_and_match_the_reference() {
        let src = "func @main(%x: tensor<2x3x6x6xf32>, %w: tensor<4x3x3x3xf32>) -> tensor<2x4xf32> {
  %0 = graph.typecvt(%x) {dtype = f16} : (tensor<2x3x6x6xf32>) -> tensor<2x3x6x6xf16>
  %1 = graph.typecvt(%w) {dtype = f16} : (tensor<4x3x3x3xf32>) -> tensor<4x3x3x3xf16>
  %2 = graph.conv2d(%0, %1) {compute_mode = \"float32\", dilation = [1, 1], group = 1, pad = [1, 1], stride = [1, 1]} : (tensor<2x3x6x6xf16>, tensor<4x3x3x3xf16>) -> tensor<2x4x6x6xf16>
  %3 = graph.elemwise(%2) {mode = \"relu\"} : (tensor<2x4x6x6xf16>) -> tensor<2x4x6x6xf16>
  %4 = graph.reduce(%3) {axis = 3, keepdim = false, mode = \"sum\"} : (tensor<2x4x6x6xf16>) -> tensor<2x4x6xf16>
  %5 = graph.reduce(%4) {axis = 2, keepdim = false, mode = \"max\"} : (tensor<2x4x6xf16>) -> tensor<2x4xf16>
  %6 = graph.typecvt(%5) {dtype = f32} : (tensor<2x4xf16>) -> tensor<2x4xf32>
  return(%6)
}";
        // One f16 rounding per op, as the reference; sums of f16 values differ in the last place.
        let text = check_lowering_with("promote-f16-compute,lower-graph-to-loops", src, 2e-3);
        assert!(!text.contains("compute_mode"), "{text}");
    }
}
