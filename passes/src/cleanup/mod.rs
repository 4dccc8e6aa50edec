//! Cleanup passes: dead-code elimination, common-subexpression elimination and
//! canonicalisation (folding).

pub mod canonicalize;
pub mod cse;
pub mod dce;

use strata_ir::{Context, OpId, OpTraits};

/// Whether `op` can be erased: pure, not a terminator, and every result unused.
pub fn is_trivially_dead(ctx: &Context, op: OpId) -> bool {
    let Some(def) = ctx.op_def(op) else {
        return false;
    };
    def.traits.contains(OpTraits::PURE)
        && !def.traits.contains(OpTraits::TERMINATOR)
        && ctx.op(op).results.iter().all(|&r| ctx.value(r).uses.is_empty())
}
