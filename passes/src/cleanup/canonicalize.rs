//! `canonicalize` — fold ops and erase dead ones until nothing changes.
//!
//! Expects: any verified module. Produces: the same module where
//! - ops whose operands are all constants are evaluated with their reference
//!   `eval` and replaced by a constant of their dialect (up to `max-fold-elements`
//!   elements per result);
//! - ops with a `fold` hook are replaced by what it returns (`x + 0 -> x`,
//!   `x * 1 -> x`, `relu(relu(x)) -> relu(x)`);
//! - trivially dead pure ops are erased.
//!
//! Folding `x + 0` may turn `-0.0` into `+0.0`'s place; results are equal as
//! numbers. Options: `max-iters` (sweeps over the module, default 10),
//! `max-fold-elements` (default 1048576).
//!
//! ```text
//! %c = graph.const() {value = dense<0.0> : tensor<4xf32>} : …
//! %0 = graph.elemwise(%x, %c) {mode = "add"} : …
//! return(%0)
//! ```
//! becomes `return(%x)`.

use super::is_trivially_dead;
use strata_ir::pass::{Changed, OptionKind, OptionSpec, Pass, PassError, PassInfo, PassOptions, PassStats};
use strata_ir::{
    AttrData, Context, DenseAttr, DenseStorage, FoldResult, InsertPoint, OpBuild, OpCx, OpId, OpTraits, Rewriter,
    TensorData,
};

/// The pass.
#[derive(Debug)]
pub struct Canonicalize {
    max_iters: i64,
    max_fold_elements: i64,
}

/// Registry entry.
pub const INFO: PassInfo = PassInfo {
    name: "canonicalize",
    summary: "fold constants and algebraic identities, erase dead ops, to a fixpoint",
    options: &[
        OptionSpec { name: "max-iters", kind: OptionKind::UInt, default: "10", help: "sweeps over the module" },
        OptionSpec {
            name: "max-fold-elements",
            kind: OptionKind::UInt,
            default: "1048576",
            help: "largest result (in elements) constant folding may create",
        },
    ],
    create: |o: &PassOptions| {
        Ok(Box::new(Canonicalize {
            max_iters: o.int("max-iters").max(1),
            max_fold_elements: o.int("max-fold-elements"),
        }))
    },
};

impl Pass for Canonicalize {
    fn name(&self) -> &'static str {
        "canonicalize"
    }

    fn run(&mut self, ctx: &mut Context, module: OpId, stats: &mut PassStats) -> Result<Changed, PassError> {
        let mut rw = Rewriter::new(ctx);
        for _ in 0..self.max_iters {
            let mut any = false;
            for op in rw.ctx().walk(module) {
                if !rw.ctx().is_live(op) {
                    continue;
                }
                if is_trivially_dead(rw.ctx(), op) {
                    rw.erase_op(op);
                    stats.add("ops-erased", 1);
                    any = true;
                    continue;
                }
                if let Some(results) = self.fold(rw.ctx(), op) {
                    apply_fold(&mut rw, op, results)
                        .map_err(|message| PassError::Failed { pass: "canonicalize".into(), message })?;
                    stats.add("ops-folded", 1);
                    any = true;
                }
            }
            if !any {
                break;
            }
        }
        Ok(Changed::from_bool(rw.changed()))
    }
}

impl Canonicalize {
    fn fold(&self, ctx: &Context, op: OpId) -> Option<Vec<FoldResult>> {
        let def = ctx.op_def(op)?;
        if def.traits.contains(OpTraits::CONSTANT_LIKE) {
            return None;
        }
        if let Some(r) = def.fold.and_then(|fold| fold(ctx, op)) {
            return Some(r);
        }
        let data = ctx.op(op);
        let eval = def.eval?;
        if !def.traits.contains(OpTraits::PURE)
            || !data.regions.is_empty()
            || data.operands.is_empty()
            || ctx.registry().constant_op(def.dialect()).is_none()
        {
            return None;
        }
        let inputs: Vec<TensorData> =
            data.operands.iter().map(|&v| ctx.constant_value(v).cloned()).collect::<Option<_>>()?;
        for &r in &data.results {
            let n = ctx.value_tensor(r)?.num_elements()?;
            if n > self.max_fold_elements as u64 {
                return None;
            }
        }
        // An op the evaluator rejects (e.g. an unsupported dtype) simply does not fold.
        let operand_types: Vec<_> = data.operands.iter().map(|&v| ctx.value_type(v)).collect();
        let result_types: Vec<_> = data.results.iter().map(|&v| ctx.value_type(v)).collect();
        let outs = eval(&OpCx::of_op(ctx, op, &operand_types, &result_types), &inputs).ok()?;
        Some(outs.into_iter().map(FoldResult::Const).collect())
    }
}

/// Replaces each result of `op` by its fold result and erases `op`.
fn apply_fold(rw: &mut Rewriter<'_>, op: OpId, results: Vec<FoldResult>) -> Result<(), String> {
    let ctx = rw.ctx();
    let data = ctx.op(op).clone();
    if results.len() != data.results.len() {
        return Err(format!("folding `{}` gave {} results for {}", ctx.op_name(op), results.len(), data.results.len()));
    }
    let dialect = ctx.op_def(op).map(|d| d.dialect()).unwrap_or_default();
    let mut replacements = Vec::with_capacity(results.len());
    for (&old, r) in data.results.iter().zip(results) {
        let new = match r {
            FoldResult::Value(v) => v,
            FoldResult::Const(t) => {
                let const_op = rw
                    .ctx()
                    .registry()
                    .constant_op(dialect)
                    .ok_or_else(|| format!("dialect `{dialect}` has no constant op"))?;
                let ty = rw.ctx().value_type(old);
                let attr = rw.ctx_mut().intern_attr(AttrData::Dense(DenseAttr { ty, storage: DenseStorage::Data(t) }));
                let c = rw.create(
                    OpBuild::new(const_op).attr("value", attr).results(&[ty]).loc(data.loc),
                    InsertPoint::Before(op),
                );
                rw.ctx().op(c).results[0]
            }
        };
        replacements.push(new);
    }
    rw.replace_op(op, &replacements);
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::testing::run;

    #[test]
    fn folds_identities_and_constants() {
        let out = run(
            "canonicalize",
            r#"func @f(%x: tensor<2xf32>) -> (tensor<2xf32>, tensor<2xf32>) {
  %zero = graph.const() {value = dense<0.0> : tensor<2xf32>} : () -> tensor<2xf32>
  %one = graph.const() {value = dense<1.0> : tensor<2xf32>} : () -> tensor<2xf32>
  %c = graph.const() {value = dense<[-1.5, 2.5]> : tensor<2xf32>} : () -> tensor<2xf32>
  %a = graph.elemwise(%x, %zero) {mode = "add"} : (tensor<2xf32>, tensor<2xf32>) -> tensor<2xf32>
  %b = graph.elemwise(%one, %a) {mode = "mul"} : (tensor<2xf32>, tensor<2xf32>) -> tensor<2xf32>
  %r1 = graph.elemwise(%b) {mode = "relu"} : (tensor<2xf32>) -> tensor<2xf32>
  %r2 = graph.elemwise(%r1) {mode = "relu"} : (tensor<2xf32>) -> tensor<2xf32>
  %k = graph.elemwise(%c) {mode = "relu"} : (tensor<2xf32>) -> tensor<2xf32>
  %k2 = graph.elemwise(%k, %c) {mode = "add"} : (tensor<2xf32>, tensor<2xf32>) -> tensor<2xf32>
  return(%r2, %k2)
}"#,
        );
        insta::assert_snapshot!(out, @r#"
        func @f(%x: tensor<2xf32>) -> (tensor<2xf32>, tensor<2xf32>) {
          %r1 = graph.elemwise(%x) {mode = "relu"} : (tensor<2xf32>) -> tensor<2xf32>
          %0 = graph.const() {value = dense<[-1.5, 5.0]> : tensor<2xf32>} : () -> tensor<2xf32>
          return(%r1, %0)
        }
        "#);
    }
}
