//! Graph ops: typecvt, reshape, dimshuffle, broadcast, axis_add_remove, subtensor, pad, concat, get_var_shape (see `docs/graph-dialect.md`).

use strata_ir::Registry;

pub(crate) fn register(_r: &mut Registry) {}
