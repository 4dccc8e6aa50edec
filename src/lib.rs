//! strata: a multi-level deep-learning compiler.
//!
//! This facade re-exports the layers and offers the [`driver`] that the `strata`
//! CLI, the tests and embedding programs share: parse and verify text IR, map
//! an `opt_level` to a pipeline and run it with instrumentation.
//!
//! Layers: [`ir`] (the IR core, text format, pass manager), [`dialects`] (op
//! sets and the reference evaluator), [`passes`] (transformations and the
//! opt-level ladder), [`runtime`] (model files and execution).

pub mod driver;

pub use strata_dialects as dialects;
pub use strata_ir as ir;
pub use strata_passes as passes;
pub use strata_runtime as runtime;
