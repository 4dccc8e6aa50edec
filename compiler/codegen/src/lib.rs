//! strata code generation: the loops dialect to Cranelift IR, compiled to machine code.
//!
//! The last lowering turns `loops` functions (explicit loop nests over buffers with `f32x4`
//! vector ops) into Cranelift IR. This crate holds everything around that translation:
//!
//! - [`isa`]: choosing the target ([`Target::Host`], [`Target::X86_64`], [`Target::Aarch64`])
//!   and its ISA features ([`IsaConfig`]: optimisation level, flags such as `has_fma` to switch
//!   off), building the Cranelift ISA and listing its features.
//! - [`module`]: [`KernelModule`], the interface a translator writes against: declare kernels
//!   and runtime helpers, reference them from function bodies, define `Function`s.
//! - [`jit`]: [`JitBuilder`] → [`JitCode`], in-process code for the host (used to run models and
//!   tests), with per-function compile times.
//! - [`object`]: [`ObjectBuilder`], relocatable objects for any supported ISA (the way to
//!   produce aarch64/NEON code on an x86 machine).
//! - [`cross`]: linking an aarch64 object with a C harness and running it under
//!   `qemu-aarch64`.
//! - [`helpers`]: the scalar runtime functions generated code calls (`strata_expf`,
//!   `strata_erff`, …, and Cranelift's `fmaf` libcall), with their C equivalents for AOT links.
//! - [`peak`]: the measured `f32x4` FMA peak of the host, the yardstick for kernel efficiency.
//!
//! Both Cranelift backends are 128-bit only: vectors are `f32x4`; wider types fail to compile.

pub mod compile;
pub mod cross;
pub mod error;
pub mod helpers;
pub mod isa;
pub mod jit;
pub mod module;
pub mod object;
pub mod peak;
pub mod translate;

#[cfg(test)]
mod testkernels;

pub use error::{CodegenError, Result};
pub use helpers::{Helper, helper_signature, helper_symbols};
pub use isa::{IsaConfig, OptLevel, OutputKind, Target, build_isa, has_fma, isa_features};
pub use jit::{JitBuilder, JitCode};
pub use module::{CompileTime, KernelModule};
pub use object::ObjectBuilder;
pub use peak::{PeakReport, measure_fma_peak};

/// Re-exported Cranelift crates, so users build IR against exactly the versions used here.
pub use cranelift_codegen;
/// See [`cranelift_codegen`].
pub use cranelift_frontend;
/// See [`cranelift_codegen`].
pub use cranelift_module;
