//! In-process compilation with `cranelift-jit`.
//!
//! [`JitBuilder`] collects functions for the host (every runtime helper and Cranelift libcall
//! is pre-registered), [`JitBuilder::finalize`] links them into executable memory, and the
//! resulting [`JitCode`] owns that memory: code pointers from [`JitCode::get`] are valid exactly
//! as long as the `JitCode` lives.

// Unsafe code is needed to release the JIT's executable memory (`JITModule::free_memory`) and,
// in the tests, to call the generated code.
#![allow(unsafe_code)]

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use cranelift_codegen::isa::TargetIsa;
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{FuncId, Module, default_libcall_names};

use crate::error::{CodegenError, Result};
use crate::helpers::{f64_libcall_symbols, helper_symbols};
use crate::isa::{IsaConfig, OutputKind, build_isa_for};
use crate::module::{CompileTime, Core, impl_kernel_module};

/// Collects and compiles functions for the host; see [`crate::module::KernelModule`] for the
/// declaration/definition interface.
pub struct JitBuilder {
    core: Core<JITModule>,
}

impl_kernel_module!(JitBuilder);

impl std::fmt::Debug for JitBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JitBuilder")
            .field("isa", &self.isa().name())
            .field("compile_times", &self.core.compile_times)
            .finish_non_exhaustive()
    }
}

impl JitBuilder {
    /// A JIT for `config`, whose target must be able to run in this process
    /// ([`crate::isa::Target::runs_on_host`]).
    pub fn new(config: &IsaConfig) -> Result<Self> {
        if !config.target.runs_on_host() {
            return Err(CodegenError::UnsupportedTarget(format!(
                "cannot JIT-compile for {} on this machine; build an object file instead",
                config.target
            )));
        }
        let isa = build_isa_for(config, OutputKind::Jit)?;
        let mut builder = JITBuilder::with_isa(isa, default_libcall_names());
        builder.symbols(helper_symbols());
        builder.symbols(f64_libcall_symbols());
        Ok(Self { core: Core::new(JITModule::new(builder)) })
    }

    /// A JIT for the host with default settings.
    pub fn host() -> Result<Self> {
        Self::new(&IsaConfig::host())
    }

    /// The ISA code is compiled for.
    pub fn isa(&self) -> &dyn TargetIsa {
        self.core.module.isa()
    }

    /// Keep Cranelift's disassembly of each function defined from now on
    /// ([`JitCode::disassembly`]).
    pub fn set_disasm(&mut self, on: bool) {
        self.core.set_disasm(on);
    }

    /// Links every defined function into executable memory.
    ///
    /// Fails if a declared function was never defined or a symbol cannot be resolved.
    pub fn finalize(self) -> Result<JitCode> {
        self.core.check_all_defined()?;
        let exports: Vec<(String, FuncId)> =
            self.core.defined_exports().map(|(name, id)| (name.to_string(), id)).collect();
        let Core { mut module, compile_times, disasm, .. } = self.core;
        // `finalize_definitions` panics on an unresolved symbol instead of returning an error.
        // Every helper and libcall is registered, so this is a second line of defence.
        match catch_unwind(AssertUnwindSafe(|| module.finalize_definitions().map_err(Box::new))) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(CodegenError::module("finalizing JIT code", *e)),
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown panic".to_string());
                // The module is in an unknown state; leak it rather than free memory that may
                // be half-patched.
                std::mem::forget(module);
                return Err(CodegenError::Link(msg));
            }
        }
        let functions = exports.into_iter().map(|(name, id)| (name, module.get_finalized_function(id))).collect();
        Ok(JitCode { module: Some(module), functions, compile_times, disasm })
    }
}

/// Finalized JIT code. Owns the executable memory; dropping it frees the code.
pub struct JitCode {
    module: Option<JITModule>,
    functions: BTreeMap<String, *const u8>,
    compile_times: Vec<CompileTime>,
    disasm: BTreeMap<String, String>,
}

impl JitCode {
    /// Entry address of the function declared as `name`.
    ///
    /// The pointer is valid while `self` lives. Calling it means transmuting it to an
    /// `extern "C" fn` type matching the Cranelift signature it was declared with (the ISA's
    /// default call convention is the platform C convention), which is the caller's `unsafe`.
    pub fn get(&self, name: &str) -> Option<*const u8> {
        self.functions.get(name).copied()
    }

    /// Names of the compiled functions, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.functions.keys().map(String::as_str)
    }

    /// Compile time of each function, in definition order.
    pub fn compile_times(&self) -> &[CompileTime] {
        &self.compile_times
    }

    /// Sum of all compile times.
    pub fn total_compile_time(&self) -> Duration {
        self.compile_times.iter().map(|c| c.time).sum()
    }

    /// Cranelift's disassembly (VCode listing) of `name`, if [`JitBuilder::set_disasm`] was on.
    pub fn disassembly(&self, name: &str) -> Option<&str> {
        self.disasm.get(name).map(String::as_str)
    }
}

impl Drop for JitCode {
    fn drop(&mut self) {
        if let Some(module) = self.module.take() {
            // SAFETY: the code pointers handed out by `get` are documented to be valid only
            // while this `JitCode` lives, and `&mut self` here means no method of it is running;
            // no generated code can be executing on our behalf after the last borrow ended.
            unsafe { module.free_memory() };
        }
    }
}

impl std::fmt::Debug for JitCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JitCode")
            .field("functions", &self.functions.keys().collect::<Vec<_>>())
            .field("compile_times", &self.compile_times)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::helpers::strata_erff;
    use crate::isa::{Target, has_fma};
    use crate::module::KernelModule;
    use crate::testkernels::{fma_loop_function, fma_loop_signature, unary_helper_loop};

    type FmaLoop = extern "C" fn(*const f32, *const f32, *mut f32, i64);
    type UnaryLoop = extern "C" fn(*const f32, *mut f32, i64);

    fn run_fma_loop(config: &IsaConfig) -> (Vec<f32>, Vec<f32>, bool) {
        let mut jit = JitBuilder::new(config).unwrap();
        jit.set_disasm(true);
        let sig = fma_loop_signature(jit.isa());
        let id = jit.declare_function("fma_loop", &sig).unwrap();
        let func = fma_loop_function(jit.isa());
        let fma_native = has_fma(jit.isa());
        jit.define_function(id, func).unwrap();
        assert_eq!(jit.compile_times().len(), 1);
        let code = jit.finalize().unwrap();
        assert_eq!(code.names().collect::<Vec<_>>(), ["fma_loop"]);
        assert!(code.disassembly("fma_loop").is_some());

        let n = 1024usize;
        let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..n).map(|i| 1.0 + (i % 7) as f32 * 0.1).collect();
        let mut c: Vec<f32> = (0..n).map(|i| (i as f32).sqrt()).collect();
        let want: Vec<f32> = (0..n).map(|i| a[i].mul_add(b[i], c[i])).collect();
        let ptr = code.get("fma_loop").unwrap();
        // SAFETY: `ptr` is the finalized `fma_loop` whose Cranelift signature is
        // (ptr, ptr, ptr, i64) -> () in the host's C convention; the buffers hold `n` floats
        // and `code` outlives the call.
        let f: FmaLoop = unsafe { std::mem::transmute::<*const u8, FmaLoop>(ptr) };
        f(a.as_ptr(), b.as_ptr(), c.as_mut_ptr(), n as i64);
        (c, want, fma_native)
    }

    #[test]
    fn fma_loop_is_bit_exact_with_and_without_native_fma() {
        let (got, want, native) = run_fma_loop(&IsaConfig::host());
        assert_eq!(got, want);
        if cfg!(target_arch = "x86_64") && native {
            // Without FMA hardware, Cranelift calls the registered `fmaf` libcall per lane.
            let (got, want, native) = run_fma_loop(&IsaConfig::host().disabling("has_fma"));
            assert!(!native);
            assert_eq!(got, want);
        }
        // Baseline x86-64 (no SSE4.1, no AVX) also runs here.
        if cfg!(target_arch = "x86_64") {
            let (got, want, _) = run_fma_loop(&IsaConfig::new(Target::X86_64));
            assert_eq!(got, want);
        }
    }

    #[test]
    fn helper_calls_resolve_to_the_rust_helpers() {
        let mut jit = JitBuilder::host().unwrap();
        let (sig, func) = unary_helper_loop(&mut jit, "strata_erff");
        let id = jit.declare_function("erf_loop", &sig).unwrap();
        jit.define_function(id, func).unwrap();
        let code = jit.finalize().unwrap();
        let xs: Vec<f32> = (0..64).map(|i| (i as f32 - 32.0) * 0.125).collect();
        let mut ys = vec![0.0f32; xs.len()];
        // SAFETY: `erf_loop` has signature (ptr, ptr, i64) -> (); both buffers hold 64 floats.
        let f: UnaryLoop = unsafe { std::mem::transmute::<*const u8, UnaryLoop>(code.get("erf_loop").unwrap()) };
        f(xs.as_ptr(), ys.as_mut_ptr(), xs.len() as i64);
        for (x, y) in xs.iter().zip(&ys) {
            assert_eq!(*y, strata_erff(*x), "erf({x})");
        }
    }

    #[test]
    fn errors_are_reported_not_panicked() {
        let mut jit = JitBuilder::host().unwrap();
        assert!(matches!(jit.declare_helper("strata_nosuchf"), Err(CodegenError::UnknownHelper(_))));
        let sig = fma_loop_signature(jit.isa());
        jit.declare_function("never_defined", &sig).unwrap();
        let err = jit.finalize().unwrap_err();
        assert!(err.to_string().contains("never_defined"), "{err}");

        // A 256-bit vector is not supported by the x64/aarch64 backends: a compile error that
        // names the function.
        let mut jit = JitBuilder::host().unwrap();
        let mut sig = cranelift_codegen::ir::Signature::new(jit.isa().default_call_conv());
        sig.params.push(cranelift_codegen::ir::AbiParam::new(cranelift_codegen::ir::types::F32X8));
        sig.returns.push(cranelift_codegen::ir::AbiParam::new(cranelift_codegen::ir::types::F32X8));
        let id = jit.declare_function("wide", &sig).unwrap();
        let mut func =
            cranelift_codegen::ir::Function::with_name_signature(cranelift_codegen::ir::UserFuncName::default(), sig);
        {
            use cranelift_codegen::ir::InstBuilder;
            let mut fctx = cranelift_frontend::FunctionBuilderContext::new();
            let mut b = cranelift_frontend::FunctionBuilder::new(&mut func, &mut fctx);
            let entry = b.create_block();
            b.append_block_params_for_function_params(entry);
            b.switch_to_block(entry);
            let x = b.block_params(entry)[0];
            let y = b.ins().fadd(x, x);
            b.ins().return_(&[y]);
            b.seal_all_blocks();
            b.finalize(jit.isa().frontend_config());
        }
        let err = jit.define_function(id, func).unwrap_err();
        assert!(matches!(&err, CodegenError::Compile { function, .. } if function == "wide"), "{err}");
    }

    #[test]
    fn verifier_errors_show_the_ir() {
        let mut jit = JitBuilder::host().unwrap();
        let sig = cranelift_codegen::ir::Signature::new(jit.isa().default_call_conv());
        let id = jit.declare_function("empty", &sig).unwrap();
        // A function with a block but no terminator fails verification.
        let mut func =
            cranelift_codegen::ir::Function::with_name_signature(cranelift_codegen::ir::UserFuncName::default(), sig);
        let block = func.dfg.make_block();
        func.layout.append_block(block);
        let err = jit.define_function(id, func).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("`empty`") && msg.contains("verifier"), "{msg}");
    }

    #[test]
    fn jit_for_a_foreign_target_is_refused() {
        let foreign = if cfg!(target_arch = "aarch64") { Target::X86_64 } else { Target::Aarch64 };
        let err = JitBuilder::new(&IsaConfig::new(foreign)).unwrap_err();
        assert!(matches!(err, CodegenError::UnsupportedTarget(_)), "{err}");
    }
}
