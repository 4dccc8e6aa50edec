//! Execution engines: the JIT (default) and the reference interpreter.
//!
//! The JIT path of a graph-level module, per distinct set of input shapes:
//!
//! 1. clone the graph module and specialise symbolic dimensions to the
//!    inputs' shapes ([`strata_passes::lower::specialize`]);
//! 2. the lowering pipeline (`JitOptions::lowering_pipeline`): `canonicalize`,
//!    `promote-f16-compute` and `lower-graph-to-loops` (elementwise epilogues
//!    fused into their producers, optionally dimshuffles and reductions);
//! 3. compile every kernel with Cranelift for the host
//!    ([`strata_codegen::compile::jit_module`]);
//! 4. bind the program to the kernels and plan its memory
//!    ([`strata_runtime::exec::Executable`]).
//!
//! The result is cached by input shapes, so a model called with a new batch
//! size compiles once for it. [`Engine::Interp`] keeps the reference
//! evaluator (`--engine interp`), the oracle the JIT is tested against.

use crate::error::{Error, Result};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use strata_codegen::IsaConfig;
use strata_ir::pass::PassManager;
use strata_ir::{Context, OpId, TensorData, VerifyOptions, verify};
use strata_runtime::exec::{Executable, Step, ThreadPool};

/// What executes a model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Engine {
    /// Lower to loops and JIT-compile with Cranelift (the default).
    #[default]
    Jit,
    /// The op-by-op reference evaluator (slow; the oracle).
    Interp,
}

impl Engine {
    /// The CLI spelling.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Jit => "jit",
            Engine::Interp => "interp",
        }
    }
}

impl std::str::FromStr for Engine {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Engine, String> {
        match s {
            "jit" => Ok(Engine::Jit),
            "interp" | "reference" => Ok(Engine::Interp),
            other => Err(format!("unknown engine `{other}` (expected `jit` or `interp`)")),
        }
    }
}

/// How the JIT compiles and runs.
#[derive(Clone, Debug)]
pub struct JitOptions {
    /// Threads for the kernels' parallel loops (1 = the caller only).
    pub threads: usize,
    /// Fuse elementwise ops into producing kernels (`lower-graph-to-loops{fuse}`).
    pub fuse: bool,
    /// Read dimshuffles feeding elementwise ops through strided views
    /// (`fuse-dimshuffle`; the trace's `graph_opt_config.jit_fuse_dimshuffle`).
    pub fuse_dimshuffle: bool,
    /// Compute elementwise kernels feeding reductions inside them
    /// (`fuse-reduce`; `graph_opt_config.jit_fuse_reduce`).
    pub fuse_reduce: bool,
    /// Target ISA (the host, optionally with features switched off).
    pub isa: IsaConfig,
}

impl JitOptions {
    /// The passes that take a specialised graph to the loops level:
    /// `canonicalize` (shape queries such as `graph.get_var_shape` fold once
    /// shapes are static), `promote-f16-compute` (the kernels compute in f32)
    /// and `lower-graph-to-loops` with these fusion options.
    pub fn lowering_pipeline(&self) -> String {
        format!(
            "canonicalize,promote-f16-compute,lower-graph-to-loops{{fuse={},fuse-dimshuffle={},fuse-reduce={}}}",
            self.fuse, self.fuse_dimshuffle, self.fuse_reduce
        )
    }
}

impl Default for JitOptions {
    fn default() -> Self {
        JitOptions { threads: 1, fuse: true, fuse_dimshuffle: false, fuse_reduce: false, isa: IsaConfig::host() }
    }
}

/// Where compile time went, for one shape specialisation.
#[derive(Clone, Copy, Debug, Default)]
pub struct CompileTimes {
    /// Specialisation and `lower-graph-to-loops`.
    pub lower: Duration,
    /// Cranelift (translation, compilation, finalisation) of every kernel.
    pub codegen: Duration,
    /// Binding and memory planning.
    pub plan: Duration,
}

impl CompileTimes {
    /// The total.
    pub fn total(&self) -> Duration {
        self.lower + self.codegen + self.plan
    }
}

/// One shape specialisation of a model: the lowered module, its compiled
/// kernels and the executable.
pub struct Compiled {
    /// The context of the lowered module.
    pub ctx: Context,
    /// The lowered (loops-level) module.
    pub module: OpId,
    /// Where compile time went.
    pub times: CompileTimes,
    exe: Executable,
    // Owns the machine code the executable's entry points point into; dropped last.
    _code: strata_codegen::compile::CompiledKernels,
}

impl std::fmt::Debug for Compiled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compiled").field("times", &self.times).field("exe", &self.exe).finish()
    }
}

impl Compiled {
    /// The executable (kernel sequence and memory plan).
    pub fn executable(&self) -> &Executable {
        &self.exe
    }
}

/// A graph-level module run through the JIT, compiled once per input shapes.
pub struct JitEngine {
    ctx: Context,
    module: OpId,
    func: String,
    options: JitOptions,
    pool: ThreadPool,
    cache: Mutex<HashMap<Vec<Vec<usize>>, Arc<Compiled>>>,
}

impl std::fmt::Debug for JitEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JitEngine").field("func", &self.func).field("options", &self.options).finish()
    }
}

impl JitEngine {
    /// An engine for function `func` of `module` (copied; the caller's module is untouched).
    pub fn new(ctx: &Context, module: OpId, func: &str, options: JitOptions) -> Result<JitEngine> {
        let pool = ThreadPool::new(options.threads.max(1)).map_err(|e| Error::Invalid(format!("threads: {e}")))?;
        if strata_dialects::func::lookup_function(ctx, module, func).is_none() {
            return Err(Error::Invalid(format!("the module has no function @{func}")));
        }
        Ok(JitEngine {
            ctx: ctx.clone(),
            module,
            func: func.to_string(),
            options,
            pool,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The options.
    pub fn options(&self) -> &JitOptions {
        &self.options
    }

    /// The compiled specialisation for inputs of these shapes (compiling it on first use).
    pub fn compiled(&self, shapes: &[Vec<usize>]) -> Result<Arc<Compiled>> {
        let key = shapes.to_vec();
        if let Some(c) = self.cache.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return Ok(Arc::clone(c));
        }
        let c = Arc::new(self.compile(shapes)?);
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).insert(key, Arc::clone(&c));
        Ok(c)
    }

    fn compile(&self, shapes: &[Vec<usize>]) -> Result<Compiled> {
        let _span = tracing::info_span!("jit-compile", func = %self.func).entered();
        let t0 = Instant::now();
        let mut ctx = self.ctx.clone();
        let module = self.module;
        let f = strata_dialects::func::lookup_function(&ctx, module, &self.func)
            .ok_or_else(|| Error::Invalid(format!("no function @{}", self.func)))?;
        let bindings =
            strata_passes::lower::specialize::bindings_for_inputs(&ctx, f.0, shapes).map_err(Error::Invalid)?;
        strata_passes::lower::specialize::specialize_shapes(&mut ctx, module, &bindings);
        if let Err(d) = verify(&ctx, module, VerifyOptions::default()) {
            let text = strata_ir::diag::render_all(&ctx, &d, None);
            return Err(Error::Compile(format!("specialising to input shapes {shapes:?}:\n{text}")));
        }
        let reg = strata_passes::registry();
        let pipeline = self.options.lowering_pipeline();
        let mut pm = PassManager::parse(&reg, &pipeline).map_err(|e| Error::Compile(e.to_string()))?;
        pm.run(&mut ctx, module).map_err(|e| Error::Compile(e.to_string()))?;
        let lower = t0.elapsed();
        let t1 = Instant::now();
        let code = strata_codegen::compile::jit_module(&ctx, module, &self.options.isa)
            .map_err(|e| Error::Compile(format!("code generation: {e}")))?;
        let codegen = t1.elapsed();
        let t2 = Instant::now();
        let exe = Executable::build(&ctx, module, &self.func, &|name| code.get(name))
            .map_err(|e| Error::Compile(e.to_string()))?;
        let plan = t2.elapsed();
        let times = CompileTimes { lower, codegen, plan };
        tracing::info!(
            kernels = exe.steps().len(),
            lower_ms = lower.as_secs_f64() * 1e3,
            codegen_ms = codegen.as_secs_f64() * 1e3,
            arena_bytes = exe.plan().arena_bytes,
            "compiled"
        );
        Ok(Compiled { ctx, module, times, exe, _code: code })
    }

    /// Runs on `inputs`.
    pub fn run(&self, inputs: &[TensorData]) -> Result<Vec<TensorData>> {
        self.run_observed(inputs, &mut |_, _| {})
    }

    /// Runs on `inputs`, calling `observe(step, time)` after each kernel.
    pub fn run_observed(
        &self,
        inputs: &[TensorData],
        observe: &mut dyn FnMut(&Step, Duration),
    ) -> Result<Vec<TensorData>> {
        let shapes: Vec<Vec<usize>> = inputs.iter().map(|t| t.shape().to_vec()).collect();
        let c = self.compiled(&shapes)?;
        let steps = c.exe.steps();
        c.exe.run(&self.pool, inputs, &mut |i, d| observe(&steps[i], d)).map_err(|e| Error::Invalid(e.to_string()))
    }
}
