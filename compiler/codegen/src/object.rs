//! Ahead-of-time compilation to relocatable ELF objects with `cranelift-object`.
//!
//! This is how code for an ISA other than the host's is produced (and tested, see
//! [`crate::cross`]). Kernels are exported symbols; runtime helpers are undefined imports that
//! the final link resolves (with [`crate::helpers::HELPERS_C_SOURCE`] and libm in a C program).

use std::time::Duration;

use cranelift_codegen::isa::TargetIsa;
use cranelift_module::{Module, default_libcall_names};
use cranelift_object::{ObjectBuilder as ClifObjectBuilder, ObjectModule};

use crate::error::{CodegenError, Result};
use crate::isa::{IsaConfig, OutputKind, Target, build_isa_for};
use crate::module::{CompileTime, Core, impl_kernel_module};

/// Collects functions into one object file; see [`crate::module::KernelModule`] for the
/// declaration/definition interface.
pub struct ObjectBuilder {
    core: Core<ObjectModule>,
}

impl_kernel_module!(ObjectBuilder);

impl std::fmt::Debug for ObjectBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectBuilder")
            .field("isa", &self.isa().name())
            .field("compile_times", &self.core.compile_times)
            .finish_non_exhaustive()
    }
}

impl ObjectBuilder {
    /// An object builder for `target` with default settings (fixed targets use baseline
    /// features; `Target::Host` uses the features of this machine).
    pub fn new(target: Target) -> Result<Self> {
        Self::with_config(&IsaConfig::new(target))
    }

    /// An object builder for `config`; the code is position-independent.
    pub fn with_config(config: &IsaConfig) -> Result<Self> {
        let isa = build_isa_for(config, OutputKind::Object)?;
        let builder = ClifObjectBuilder::new(isa, "strata_kernels", default_libcall_names())
            .map_err(|e| CodegenError::module(format!("object file for {}", config.target), e))?;
        Ok(Self { core: Core::new(ObjectModule::new(builder)) })
    }

    /// The ISA code is compiled for.
    pub fn isa(&self) -> &dyn TargetIsa {
        self.core.module.isa()
    }

    /// Keep Cranelift's disassembly of each function defined from now on.
    pub fn set_disasm(&mut self, on: bool) {
        self.core.set_disasm(on);
    }

    /// Cranelift's disassembly (VCode listing) of `name`, if [`Self::set_disasm`] was on.
    pub fn disassembly(&self, name: &str) -> Option<&str> {
        self.core.disasm.get(name).map(String::as_str)
    }

    /// Compile time of each function defined so far, in definition order.
    pub fn compile_times(&self) -> &[CompileTime] {
        &self.core.compile_times
    }

    /// Sum of all compile times so far.
    pub fn total_compile_time(&self) -> Duration {
        self.core.compile_times.iter().map(|c| c.time).sum()
    }

    /// Writes the object file. Fails if a declared function was never defined.
    pub fn finish(self) -> Result<Vec<u8>> {
        self.core.check_all_defined()?;
        self.core.module.finish().emit().map_err(|e| CodegenError::Object(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::KernelModule;
    use crate::testkernels::{fma_loop_function, fma_loop_signature, unary_helper_loop};

    fn build(target: Target) -> Vec<u8> {
        let mut obj = ObjectBuilder::new(target).unwrap();
        let sig = fma_loop_signature(obj.isa());
        let id = obj.declare_function("strata_fma_loop", &sig).unwrap();
        let func = fma_loop_function(obj.isa());
        obj.define_function(id, func).unwrap();
        let (sig, func) = unary_helper_loop(&mut obj, "strata_expf");
        let id = obj.declare_function("strata_exp_loop", &sig).unwrap();
        obj.define_function(id, func).unwrap();
        assert_eq!(obj.compile_times().len(), 2);
        obj.finish().unwrap()
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn objects_are_elf_for_the_right_machine_with_symbols() {
        for (target, e_machine) in [(Target::X86_64, 62u16), (Target::Aarch64, 183u16)] {
            let bytes = build(target);
            assert_eq!(&bytes[..4], b"\x7fELF", "{target}");
            assert_eq!(bytes[4], 2, "64-bit ELF");
            assert_eq!(u16::from_le_bytes([bytes[18], bytes[19]]), e_machine);
            assert!(contains(&bytes, b"strata_fma_loop\0"));
            assert!(contains(&bytes, b"strata_exp_loop\0"));
            assert!(contains(&bytes, b"strata_expf\0"), "helper import");
        }
    }

    #[test]
    fn undefined_export_is_an_error() {
        let mut obj = ObjectBuilder::new(Target::Aarch64).unwrap();
        let sig = fma_loop_signature(obj.isa());
        obj.declare_function("missing", &sig).unwrap();
        let err = obj.finish().unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }
}
