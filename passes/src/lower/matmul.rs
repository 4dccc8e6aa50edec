//! Lowering of the `matmul` op family (being written).

use super::{KernelCx, LResult};
use strata_ir::OpId;

/// Lowers one op of this family.
pub fn lower_matmul(cx: &mut KernelCx<'_, '_, '_>, op: OpId) -> LResult<()> {
    Err(cx.err(op, "no lowering yet"))
}
