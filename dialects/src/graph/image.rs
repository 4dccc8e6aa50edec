//! Graph ops: warp_perspective, resize (see `docs/graph-dialect.md`).

use strata_ir::Registry;

pub(crate) fn register(_r: &mut Registry) {}
