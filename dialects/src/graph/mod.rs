//! The `graph` dialect: MegEngine's inference op set in NCHW, as traced.
//!
//! Every op has a verifier (through shape inference, `infer`, which handles
//! fixed and symbolic dims) and a naive reference `eval`, the oracle for every
//! later level. The op reference is `docs/graph-dialect.md`.
//!
//! Files: [`constant`] (const, param), [`elemwise`], [`conv`] (conv2d,
//! conv_bias, conv_transpose2d), [`matmul`], [`pool`] (pooling,
//! global_avg_pool, adaptive_pooling), [`norm`] (batch_norm, softmax), [`shape`]
//! (typecvt, reshape, dimshuffle, broadcast, axis_add_remove, subtensor, pad,
//! concat, get_var_shape), [`reduce`], [`image`] (warp_perspective, resize).

pub mod common;
pub mod constant;
pub mod conv;
pub mod elemwise;
pub mod image;
pub mod matmul;
pub mod norm;
pub mod pool;
pub mod preprocess;
pub mod reduce;
pub mod shape;

pub use constant::{ConstOp, ParamOp};
pub use elemwise::{ElemwiseOp, Mode as ElemwiseMode};

use strata_ir::{OpView, Registry};

/// Registers the `graph` dialect; `graph.const` materialises folded constants.
pub fn register(r: &mut Registry) {
    constant::register(r);
    elemwise::register(r);
    conv::register(r);
    matmul::register(r);
    pool::register(r);
    norm::register(r);
    shape::register(r);
    reduce::register(r);
    image::register(r);
    preprocess::register(r);
    r.set_constant_op("graph", ConstOp::NAME);
}
