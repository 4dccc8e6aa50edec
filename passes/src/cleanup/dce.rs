//! `dce` — dead-code elimination.
//!
//! Expects: any verified module. Produces: the same module without pure ops
//! whose results are all unused (transitively). Ops with side effects, unregistered
//! ops and terminators are kept. Options: none.
//!
//! ```text
//! %0 = graph.elemwise(%x) {mode = "relu"} : …          // unused
//! %1 = graph.elemwise(%x, %x) {mode = "add"} : …
//! return(%1)
//! ```
//! becomes `%0 = graph.elemwise(%x, %x) {mode = "add"} …; return(%0)`.

use super::is_trivially_dead;
use strata_ir::pass::{Changed, Pass, PassError, PassInfo, PassOptions, PassStats};
use strata_ir::{Context, OpId, Rewriter};

/// The pass.
#[derive(Debug, Default)]
pub struct Dce;

/// Registry entry.
pub const INFO: PassInfo = PassInfo {
    name: "dce",
    summary: "erase pure ops whose results are unused",
    options: &[],
    create: |_: &PassOptions| Ok(Box::new(Dce)),
};

impl Pass for Dce {
    fn name(&self) -> &'static str {
        "dce"
    }

    fn run(&mut self, ctx: &mut Context, module: OpId, stats: &mut PassStats) -> Result<Changed, PassError> {
        let mut rw = Rewriter::new(ctx);
        let mut erased = 0;
        loop {
            // Reverse program order: users go before their producers in one sweep.
            let ops = rw.ctx().walk(module);
            let before = erased;
            for &op in ops.iter().rev() {
                if rw.ctx().is_live(op) && is_trivially_dead(rw.ctx(), op) {
                    rw.erase_op(op);
                    erased += 1;
                }
            }
            if erased == before {
                break;
            }
        }
        stats.add("ops-erased", erased);
        Ok(Changed::from_bool(rw.changed()))
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::run;

    #[test]
    fn erases_dead_chain_keeps_live() {
        let out = run(
            "dce",
            r#"func @f(%x: tensor<4xf32>) -> tensor<4xf32> {
  %a = graph.elemwise(%x) {mode = "relu"} : (tensor<4xf32>) -> tensor<4xf32>
  %b = graph.elemwise(%a) {mode = "relu"} : (tensor<4xf32>) -> tensor<4xf32>
  %c = graph.elemwise(%x, %x) {mode = "add"} : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
  return(%c)
}"#,
        );
        insta::assert_snapshot!(out, @r#"
        func @f(%x: tensor<4xf32>) -> tensor<4xf32> {
          %c = graph.elemwise(%x, %x) {mode = "add"} : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
          return(%c)
        }
        "#);
    }
}
