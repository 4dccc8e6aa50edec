//! strata: a multi-level deep-learning compiler.
//!
//! - [`Tensor`]: eager host tensors with one method per graph op, evaluated by
//!   the reference evaluator.
//! - [`trace()`]: record a function over tensors, compile it to a graph-dialect
//!   module, replay later calls (MegEngine's `jit.trace`).
//! - [`driver`]: parse, verify and optimise text IR (what `strata opt` does).
//!
//! Layers: [`ir`] (the IR core, text format, pass manager), [`dialects`] (op
//! sets and the reference evaluator), [`passes`] (transformations and the
//! opt-level ladder), [`runtime`] (model files and execution).

pub mod aot;
pub mod bench;
pub mod driver;
pub mod dump;
pub mod engine;
pub mod error;
pub mod feed;
pub mod json;
pub mod model;
pub mod nn;
pub mod tensor;
mod tensor_ops;
pub mod trace;
pub mod transform;
pub mod zoo;

pub use dump::{DumpOptions, DumpResult, InferenceOptions};
pub use engine::{Engine, JitEngine, JitOptions};
pub use error::{Error, Result};
pub use model::{LoadedModel, load};
pub use strata_ir::ElemType;
pub use tensor::{AttrVal, Tensor};
pub use tensor_ops::{ConvParams, Nonlinearity};
pub use trace::{
    DtrConfig, GraphOptimizationConfig, Profile, SublinearMemoryConfig, TraceCallError, TraceError, TraceErrorReason,
    TraceOptions, TraceOutput, Traced, exclude_from_trace, trace,
};

pub use strata_dialects as dialects;
pub use strata_ir as ir;
pub use strata_passes as passes;
pub use strata_runtime as runtime;
