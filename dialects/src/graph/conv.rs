//! Graph ops: conv2d, conv_bias, conv_transpose2d (see `docs/graph-dialect.md`).

use strata_ir::Registry;

pub(crate) fn register(_r: &mut Registry) {}
