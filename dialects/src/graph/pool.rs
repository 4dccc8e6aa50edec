//! Graph ops: pooling, global_avg_pool, adaptive_pooling (see `docs/graph-dialect.md`).

use strata_ir::Registry;

pub(crate) fn register(_r: &mut Registry) {}
