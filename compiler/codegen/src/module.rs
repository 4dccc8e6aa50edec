//! What the JIT and the object backend have in common.
//!
//! [`KernelModule`] is the interface a translator programs against: declare the kernels it will
//! define and the runtime helpers it calls, reference them from function bodies, and hand over
//! finished Cranelift [`Function`]s. [`crate::jit::JitBuilder`] and
//! [`crate::object::ObjectBuilder`] implement it on top of one private core that keeps the
//! names, checks every declared kernel gets defined, times each compilation and (on request)
//! keeps Cranelift's disassembly.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cranelift_codegen::Context;
use cranelift_codegen::ir::{FuncRef, Function, Signature};
use cranelift_codegen::isa::TargetIsa;
use cranelift_module::{FuncId, Linkage, Module, ModuleError};

use crate::error::{CodegenError, Result};
use crate::helpers::Helper;

/// How long Cranelift took to compile one function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompileTime {
    /// The function's declared name.
    pub name: String,
    /// Wall-clock time of `define_function` (verify, optimise, lower, allocate, emit).
    pub time: Duration,
}

/// A Cranelift module that kernels are compiled into: the JIT ([`crate::jit::JitBuilder`]) or
/// an object file ([`crate::object::ObjectBuilder`]).
///
/// Typical use by a translator:
/// 1. `let id = m.declare_function("kernel_0", &sig)?` for every kernel (exported);
/// 2. build a `Function` with `cranelift_frontend`, referencing helpers through
///    `let h = m.declare_helper("strata_expf")?; let fref = m.declare_func_in_func(h, &mut f);`
///    and finishing the builder with `m.isa().frontend_config()`;
/// 3. `m.define_function(id, f)?`.
pub trait KernelModule {
    /// The ISA code is generated for (pointer type, call convention, flags).
    fn isa(&self) -> &dyn TargetIsa;

    /// Declares an exported function that this module will define.
    fn declare_function(&mut self, name: &str, signature: &Signature) -> Result<FuncId>;

    /// Declares the runtime helper `name` (see [`crate::helpers`]) as an import with its
    /// `(f32, ...) -> f32` signature. Declaring the same helper twice returns the same id.
    fn declare_helper(&mut self, name: &str) -> Result<FuncId>;

    /// Makes a declared function callable from `func`'s body.
    fn declare_func_in_func(&mut self, id: FuncId, func: &mut Function) -> FuncRef;

    /// Compiles `func` as the body of the declared function `id`; returns the compile time.
    fn define_function(&mut self, id: FuncId, func: Function) -> Result<Duration>;

    /// Compile times of the functions defined so far, in definition order.
    fn compile_times(&self) -> &[CompileTime];
}

/// The shared state of both backends.
pub(crate) struct Core<M: Module> {
    pub(crate) module: M,
    /// Exported functions: name → (id, defined?).
    exports: BTreeMap<String, (FuncId, bool)>,
    helpers: BTreeMap<Helper, FuncId>,
    pub(crate) compile_times: Vec<CompileTime>,
    disasm_enabled: bool,
    pub(crate) disasm: BTreeMap<String, String>,
}

impl<M: Module> Core<M> {
    pub(crate) fn new(module: M) -> Self {
        Self {
            module,
            exports: BTreeMap::new(),
            helpers: BTreeMap::new(),
            compile_times: Vec::new(),
            disasm_enabled: false,
            disasm: BTreeMap::new(),
        }
    }

    pub(crate) fn set_disasm(&mut self, on: bool) {
        self.disasm_enabled = on;
    }

    pub(crate) fn declare_function(&mut self, name: &str, signature: &Signature) -> Result<FuncId> {
        if Helper::from_name(name).is_some() {
            return Err(CodegenError::Link(format!("`{name}` is the name of a runtime helper")));
        }
        let id = self
            .module
            .declare_function(name, Linkage::Export, signature)
            .map_err(|e| CodegenError::module(format!("declaring function `{name}`"), e))?;
        self.exports.entry(name.to_string()).or_insert((id, false));
        Ok(id)
    }

    pub(crate) fn declare_helper(&mut self, name: &str) -> Result<FuncId> {
        let helper = Helper::from_name(name).ok_or_else(|| CodegenError::UnknownHelper(name.to_string()))?;
        if let Some(&id) = self.helpers.get(&helper) {
            return Ok(id);
        }
        let sig = helper.signature(self.module.isa().default_call_conv());
        let id = self
            .module
            .declare_function(name, Linkage::Import, &sig)
            .map_err(|e| CodegenError::module(format!("declaring helper `{name}`"), e))?;
        self.helpers.insert(helper, id);
        Ok(id)
    }

    fn name_of(&self, id: FuncId) -> String {
        self.module.declarations().get_function_decl(id).linkage_name(id).into_owned()
    }

    pub(crate) fn define_function(&mut self, id: FuncId, func: Function) -> Result<Duration> {
        let name = self.name_of(id);
        let mut ctx = Context::for_function(func);
        ctx.set_disasm(self.disasm_enabled);
        let start = Instant::now();
        let result = self.module.define_function(id, &mut ctx);
        let time = start.elapsed();
        match result {
            Ok(()) => {}
            Err(ModuleError::Compilation(cranelift_codegen::CodegenError::Verifier(errors))) => {
                let message = cranelift_codegen::print_errors::pretty_verifier_error(&ctx.func, None, errors);
                return Err(CodegenError::Compile { function: name, message: format!("verifier errors:\n{message}") });
            }
            Err(ModuleError::Compilation(e)) => {
                return Err(CodegenError::Compile { function: name, message: e.to_string() });
            }
            Err(e) => {
                return Err(CodegenError::module(format!("defining function `{name}`"), e));
            }
        }
        if let Some(entry) = self.exports.get_mut(&name) {
            entry.1 = true;
        }
        if self.disasm_enabled
            && let Some(text) = ctx.compiled_code().and_then(|c| c.vcode.clone())
        {
            self.disasm.insert(name.clone(), text);
        }
        self.compile_times.push(CompileTime { name, time });
        Ok(time)
    }

    /// Every exported function has a body (the backends panic otherwise).
    pub(crate) fn check_all_defined(&self) -> Result<()> {
        let missing: Vec<&str> =
            self.exports.iter().filter(|(_, (_, defined))| !defined).map(|(name, _)| name.as_str()).collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(CodegenError::Link(format!("declared but never defined: {}", missing.join(", "))))
        }
    }

    /// `(name, id)` of every defined export, sorted by name.
    pub(crate) fn defined_exports(&self) -> impl Iterator<Item = (&str, FuncId)> {
        self.exports.iter().filter(|(_, (_, defined))| *defined).map(|(name, (id, _))| (name.as_str(), *id))
    }
}

/// Implements [`KernelModule`] for a wrapper with a `core: Core<_>` field.
macro_rules! impl_kernel_module {
    ($ty:ty) => {
        impl $crate::module::KernelModule for $ty {
            fn isa(&self) -> &dyn cranelift_codegen::isa::TargetIsa {
                cranelift_module::Module::isa(&self.core.module)
            }

            fn declare_function(
                &mut self,
                name: &str,
                signature: &cranelift_codegen::ir::Signature,
            ) -> $crate::error::Result<cranelift_module::FuncId> {
                self.core.declare_function(name, signature)
            }

            fn declare_helper(&mut self, name: &str) -> $crate::error::Result<cranelift_module::FuncId> {
                self.core.declare_helper(name)
            }

            fn declare_func_in_func(
                &mut self,
                id: cranelift_module::FuncId,
                func: &mut cranelift_codegen::ir::Function,
            ) -> cranelift_codegen::ir::FuncRef {
                cranelift_module::Module::declare_func_in_func(&mut self.core.module, id, func)
            }

            fn define_function(
                &mut self,
                id: cranelift_module::FuncId,
                func: cranelift_codegen::ir::Function,
            ) -> $crate::error::Result<std::time::Duration> {
                self.core.define_function(id, func)
            }

            fn compile_times(&self) -> &[$crate::module::CompileTime] {
                &self.core.compile_times
            }
        }
    };
}
pub(crate) use impl_kernel_module;
