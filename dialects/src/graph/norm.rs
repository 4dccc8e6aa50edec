//! Graph ops: batch_norm, softmax (see `docs/graph-dialect.md`).

use strata_ir::Registry;

pub(crate) fn register(_r: &mut Registry) {}
