//! strata-dialects: the op sets of every level, with verifiers, folders and the
//! naive reference evaluator.
//!
//! - [`func`]: `func.module`, `func.func`, `func.return`, `func.call`.
//! - [`graph`]: the high-level tensor graph (NCHW): MegEngine's inference op set
//!   (`docs/graph-dialect.md`).
//! - [`layout`]: blocked layouts (NCHW88, NCHW44, …), relayouts, packed
//!   weights and the blocked forms of conv_bias and pooling (`docs/layout.md`).
//! - [`loops`]: buffers, loop nests, scalar and 128-bit vector arithmetic,
//!   kernel launches — what code generation consumes (`docs/loops.md`).
//! - [`apply`]: one op outside a module (shape inference and evaluation), shared
//!   by eager tensors and the tracer.
//! - [`interp`]: runs a function op by op with each op's reference `eval`;
//!   the correctness oracle for every optimised path.

pub mod apply;
pub mod func;
pub mod graph;
pub mod interp;
pub mod layout;
pub mod loops;

use std::sync::Arc;
use strata_ir::{Context, Registry};

/// A registry with every dialect of strata.
pub fn registry() -> Registry {
    let mut r = Registry::new();
    func::register(&mut r);
    graph::register(&mut r);
    layout::register(&mut r);
    loops::register(&mut r);
    r
}

/// A fresh context knowing every dialect.
pub fn context() -> Context {
    Context::new(Arc::new(registry()))
}
