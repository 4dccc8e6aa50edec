//! `cancel-relayouts` — remove relayouts that cancel and merge chains.
//!
//! Expects: any verified module. Produces: the same module where
//! - `relayout(x) {to = L}` with `x` already in `L` is `x`;
//! - `relayout(relayout(y))` back to `y`'s type is `y` (A → B → A cancels);
//! - `relayout(relayout(y) {to = B}) {to = C}` reads `y` directly (A → B → C
//!   becomes A → C; the inner relayout is erased once nothing reads it).
//!
//! A plain pass rather than an egg rule set: the rewrites are local, always
//! improve, and need no search (MegEngine's `ShuffleShuffleRemovePass`).
//! Options: none.
//!
//! ```text
//! %a = layout.relayout(%x) {to = #nchw88} : (tensor<1x8x2x2xf32>) -> tensor<1x1x2x2x8xf32, #nchw88>
//! %b = layout.relayout(%a) {to = #nchw} : (tensor<1x1x2x2x8xf32, #nchw88>) -> tensor<1x8x2x2xf32>
//! return(%b)
//! ```
//! becomes `return(%x)`.

use strata_dialects::layout::RelayoutOp;
use strata_ir::pass::{Changed, Pass, PassError, PassInfo, PassOptions, PassStats};
use strata_ir::{Context, OpId, OpView, Rewriter};

/// The pass.
#[derive(Debug, Default)]
pub struct CancelRelayouts;

/// Registry entry.
pub const INFO: PassInfo = PassInfo {
    name: "cancel-relayouts",
    summary: "remove relayout pairs that cancel (A->B->A) and merge chains (A->B->C into A->C)",
    options: &[],
    create: |_: &PassOptions| Ok(Box::new(CancelRelayouts)),
};

impl Pass for CancelRelayouts {
    fn name(&self) -> &'static str {
        "cancel-relayouts"
    }

    fn run(&mut self, ctx: &mut Context, module: OpId, stats: &mut PassStats) -> Result<Changed, PassError> {
        let mut rw = Rewriter::new(ctx);
        loop {
            let mut any = false;
            for op in rw.ctx().walk(module) {
                if !rw.ctx().is_live(op) {
                    continue;
                }
                let Some(r) = RelayoutOp::cast(rw.ctx(), op) else { continue };
                let ctx = rw.ctx();
                let (x, out) = (r.x(ctx), r.output(ctx));
                if ctx.value_tensor(x) == ctx.value_tensor(out) {
                    rw.replace_all_uses(out, x);
                    rw.erase_op(op);
                    stats.add("relayouts-cancelled", 1);
                    any = true;
                    continue;
                }
                let Some(inner) = ctx.defining_op(x).and_then(|d| RelayoutOp::cast(ctx, d)) else { continue };
                let y = inner.x(ctx);
                if ctx.value_tensor(y) == ctx.value_tensor(out) {
                    rw.replace_all_uses(out, y);
                    rw.erase_op(op);
                    stats.add("relayouts-cancelled", 1);
                } else {
                    rw.set_operand(op, 0, y);
                    stats.add("relayouts-merged", 1);
                }
                any = true;
            }
            super::erase_dead_helpers(&mut rw, module);
            if !any {
                break;
            }
        }
        Ok(Changed::from_bool(rw.changed()))
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::run;

    #[test]
    fn cancels_pairs_and_merges_chains() {
        let out = run(
            "cancel-relayouts",
            r#"func @f(%x: tensor<1x8x2x2xf32>) -> (tensor<1x8x2x2xf32>, tensor<1x2x2x2x4xf32, #nchw44>) {
  %a = layout.relayout(%x) {to = #nchw88} : (tensor<1x8x2x2xf32>) -> tensor<1x1x2x2x8xf32, #nchw88>
  %b = layout.relayout(%a) {to = #nchw} : (tensor<1x1x2x2x8xf32, #nchw88>) -> tensor<1x8x2x2xf32>
  %c = layout.relayout(%a) {to = #nchw44} : (tensor<1x1x2x2x8xf32, #nchw88>) -> tensor<1x2x2x2x4xf32, #nchw44>
  return(%b, %c)
}"#,
        );
        insta::assert_snapshot!(out, @"
        func @f(%x: tensor<1x8x2x2xf32>) -> (tensor<1x8x2x2xf32>, tensor<1x2x2x2x4xf32, #nchw44>) {
          %c = layout.relayout(%x) {to = #nchw44} : (tensor<1x8x2x2xf32>) -> tensor<1x2x2x2x4xf32, #nchw44>
          return(%x, %c)
        }
        ");
    }
}
