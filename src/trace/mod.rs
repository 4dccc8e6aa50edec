//! `trace()`: record a function over tensors once, compile it to a graph-dialect
//! module, and replay later calls through the compiled graph — MegEngine's
//! `jit.trace` for Rust.
//!
//! Lifecycle (see `docs/trace.md`):
//! 1. **Call 1 records.** Every op, constant creation and value read inside the
//!    function is appended to a sequence; ops also run eagerly unless `symbolic`
//!    (or `record_only`). Values are *arguments*, *captured* tensors (from the
//!    closure's environment; constants with `capture_as_const`), *constants*
//!    created inside, or *internal* results.
//! 2. **Call 2 compiles** the sequence into `func @main` (arguments, then
//!    captured inputs when not constant) and runs the `opt_level` pipeline, then
//!    replays like every later call.
//! 3. **Calls 2…N replay**: the function runs again, but each op is *checked*
//!    against the record instead of executed; results are placeholders whose
//!    data the compiled graph provides when the function returns. A mismatch is
//!    a [`TraceError`] with MegEngine's reason, the op index, the expected and
//!    actual op, and the caller's source location.

mod profile;
mod record;
pub(crate) mod session;

use crate::dump::{DumpOptions, DumpResult};
pub use profile::{OpProfile, Profile};

use crate::error::{Error, Result};
use crate::tensor::Tensor;
use record::Record;
use std::collections::BTreeMap;
use std::fmt;
use strata_ir::{Context, OpId, PrintOptions};

/// MegEngine's sublinear-memory options (accepted, but not implemented yet:
/// using them is an error).
#[derive(Clone, Debug, PartialEq)]
pub struct SublinearMemoryConfig {
    /// Tries of the threshold search.
    pub thresh_nr_try: u32,
    /// Iterations of the genetic search.
    pub genetic_nr_iter: u32,
    /// Pool size of the genetic search.
    pub genetic_pool_size: u32,
    /// Memory lower bound in MiB.
    pub lb_memory_mb: u32,
    /// Worker threads.
    pub num_worker: u32,
}

impl Default for SublinearMemoryConfig {
    fn default() -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        SublinearMemoryConfig {
            thresh_nr_try: 10,
            genetic_nr_iter: 0,
            genetic_pool_size: 20,
            lb_memory_mb: 0,
            num_worker: (cpus / 2).max(1),
        }
    }
}

/// MegEngine's dynamic tensor rematerialisation options (accepted, but not
/// implemented yet: using them is an error).
#[derive(Clone, Debug, PartialEq)]
pub struct DtrConfig {
    /// Evict when live memory reaches this many bytes (must be > 0).
    pub eviction_threshold: u64,
    /// Smallest tensor considered for eviction, bytes.
    pub evictee_minimum_size: u64,
    /// Exponent of the recompute-memory term.
    pub recomp_memory_factor: f64,
    /// Exponent of the recompute-time term.
    pub recomp_time_factor: f64,
}

impl Default for DtrConfig {
    fn default() -> Self {
        DtrConfig {
            eviction_threshold: 0,
            evictee_minimum_size: 1 << 20,
            recomp_memory_factor: 1.0,
            recomp_time_factor: 1.0,
        }
    }
}

/// JIT fusion switches (`None` = unset: off, as in MegEngine, except at
/// `opt_level` 3, which turns both on), honoured by the JIT's lowering (`lower-graph-to-loops{fuse-dimshuffle,fuse-reduce}`).
/// Elementwise chains always fuse into their producer's kernel.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GraphOptimizationConfig {
    /// A dimshuffle read only by an elementwise op is not materialised: the
    /// elementwise kernel reads its input through a strided view.
    pub jit_fuse_dimshuffle: Option<bool>,
    /// An elementwise kernel read only by a reduction is computed inside the
    /// reduction's loads instead of being written out.
    pub jit_fuse_reduce: Option<bool>,
}

/// Options of [`trace`], mirroring MegEngine's `trace(...)` arguments.
#[derive(Clone, Debug, PartialEq)]
pub struct TraceOptions {
    /// Record without executing; outputs are computed once from the graph at the end of call 1.
    pub symbolic: bool,
    /// Captured tensors become constants of the graph (checked on every replay).
    pub capture_as_const: bool,
    /// Record only: implies `symbolic` and `capture_as_const`; nothing ever executes.
    pub record_only: bool,
    /// Sublinear memory optimisation (not supported yet: an error when set).
    pub sublinear_memory_config: Option<SublinearMemoryConfig>,
    /// Dynamic tensor rematerialisation (not supported yet: an error when set).
    pub dtr_config: Option<DtrConfig>,
    /// Collect per-op times of compiled runs ([`Traced::get_profile`]).
    pub profiling: bool,
    /// Optimisation level of the compiled graph (-3..=3; negative checks every pass).
    pub opt_level: i64,
    /// JIT fusion switches.
    pub graph_opt_config: Option<GraphOptimizationConfig>,
    /// Keep the batch (first) dimension of every argument symbolic (`?N`), so the
    /// compiled graph accepts other batch sizes.
    pub symbolic_shape: bool,
    /// What runs the compiled graph on replays: the JIT (default; compiled
    /// once per input shapes) or the reference interpreter. strata's own
    /// option (MegEngine has one engine).
    pub engine: crate::engine::Engine,
}

impl Default for TraceOptions {
    fn default() -> Self {
        TraceOptions {
            symbolic: false,
            capture_as_const: false,
            record_only: false,
            sublinear_memory_config: None,
            dtr_config: None,
            profiling: false,
            opt_level: 2,
            graph_opt_config: None,
            symbolic_shape: true,
            engine: crate::engine::Engine::Jit,
        }
    }
}

impl TraceOptions {
    /// Checks the options: unsupported ones are errors, never silently ignored.
    pub fn validate(&self) -> Result<()> {
        if self.sublinear_memory_config.is_some() {
            return Err(Error::Unsupported(
                "trace option `sublinear_memory_config` (sublinear memory optimisation)".into(),
            ));
        }
        if self.dtr_config.is_some() {
            return Err(Error::Unsupported("trace option `dtr_config` (dynamic tensor rematerialisation)".into()));
        }
        if let Some(g) = &self.graph_opt_config
            && self.engine == crate::engine::Engine::Interp
        {
            for (name, v) in [("jit_fuse_dimshuffle", g.jit_fuse_dimshuffle), ("jit_fuse_reduce", g.jit_fuse_reduce)] {
                if v == Some(true) {
                    return Err(Error::Invalid(format!(
                        "graph_opt_config.{name} = true configures the JIT's fusion, but engine is `interp`"
                    )));
                }
            }
        }
        strata_passes::pipelines::OptLevel::new(self.opt_level).map_err(|e| Error::Invalid(e.to_string()))?;
        Ok(())
    }

    /// Whether ops execute while recording.
    pub(crate) fn executes_while_recording(&self) -> bool {
        !self.symbolic && !self.record_only
    }

    /// Whether captured tensors become constants.
    pub(crate) fn captures_as_const(&self) -> bool {
        self.capture_as_const || self.record_only
    }
}

/// Why a replay did not match the record (MegEngine's `TraceError` reasons).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TraceErrorReason {
    /// A different op (or attributes), or an op where a constant creation was recorded.
    OperatorMismatch,
    /// A constant or captured-as-constant tensor has a different value.
    TensorsNotEqual,
    /// The function returned before the whole record was replayed.
    PrematureEnd,
    /// The function ran more ops than were recorded.
    TooManyOps,
    /// An op input that was an internal result is now an outside tensor.
    ExpectInternalGotExternal,
    /// An op input that was an outside tensor is now an internal result.
    ExpectExternalGotInternal,
    /// An op consumed a different value than recorded.
    InputIdMismatch,
    /// The function read a value that it did not read while recording.
    ValueUnreadable,
    /// An argument has another element type than recorded.
    DtypeMismatch {
        /// Recorded element type.
        recorded: String,
        /// Actual element type.
        actual: String,
    },
    /// An argument has another shape than the compiled graph accepts.
    ShapeMismatch {
        /// Recorded shape.
        recorded: String,
        /// Actual shape.
        actual: String,
    },
    /// A different number of arguments than recorded.
    InputsSizeMismatch {
        /// Recorded count.
        recorded: usize,
        /// Actual count.
        actual: usize,
    },
    /// The function returned different values (or a different number) than recorded.
    OutputMismatch,
}

impl fmt::Display for TraceErrorReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TraceErrorReason::OperatorMismatch => f.write_str("operator mismatch"),
            TraceErrorReason::TensorsNotEqual => f.write_str("tensors not equals"),
            TraceErrorReason::PrematureEnd => f.write_str("mismature end"),
            TraceErrorReason::TooManyOps => f.write_str("too many instructions"),
            TraceErrorReason::ExpectInternalGotExternal => f.write_str("expect internal node, got external"),
            TraceErrorReason::ExpectExternalGotInternal => f.write_str("expect external node, got internal"),
            TraceErrorReason::InputIdMismatch => f.write_str("input id mismatch"),
            TraceErrorReason::ValueUnreadable => f.write_str("value unreadable"),
            TraceErrorReason::DtypeMismatch { recorded, actual } => write!(f, "dtype mismatch: {recorded} vs {actual}"),
            TraceErrorReason::ShapeMismatch { recorded, actual } => write!(f, "shape mismatch: {recorded} vs {actual}"),
            TraceErrorReason::InputsSizeMismatch { recorded, actual } => {
                write!(f, "inputs size mismatch: {recorded} vs {actual}")
            }
            TraceErrorReason::OutputMismatch => f.write_str("mark mismatch (outputs differ from the record)"),
        }
    }
}

/// A replay that did not match the record.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct TraceError {
    /// Why.
    pub reason: TraceErrorReason,
    /// Index of the item in the recorded sequence (ops and constant creations).
    pub op_index: Option<usize>,
    /// What the record has there.
    pub expected: Option<String>,
    /// What the function did instead.
    pub actual: Option<String>,
    /// The Rust source location of the mismatching call (`file:line:col`).
    pub location: Option<String>,
}

impl fmt::Display for TraceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "trace error because {}", self.reason)?;
        if let Some(i) = self.op_index {
            write!(f, " at op #{i}")?;
        }
        match (&self.expected, &self.actual) {
            (Some(e), Some(a)) => write!(f, ": expected {e}, got {a}")?,
            (Some(e), None) => write!(f, ": expected {e}")?,
            (None, Some(a)) => write!(f, ": got {a}")?,
            (None, None) => {}
        }
        if let Some(l) = &self.location {
            write!(f, " (at {l})")?;
        }
        Ok(())
    }
}

/// What a traced call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum TraceCallError<E> {
    /// The call did not match the record.
    #[error(transparent)]
    Trace(Box<TraceError>),
    /// strata failed (compilation, execution, unsupported options).
    #[error(transparent)]
    Strata(Error),
    /// The function's own error, passed through unchanged.
    #[error("{0}")]
    User(E),
}

impl<E> TraceCallError<E> {
    /// The trace error, if this is one.
    pub fn as_trace(&self) -> Option<&TraceError> {
        match self {
            TraceCallError::Trace(t) => Some(t.as_ref()),
            TraceCallError::Strata(Error::Trace(t)) => Some(t.as_ref()),
            _ => None,
        }
    }
}

/// Values a traced function may return: a tensor, a tuple, a `Vec` or a map
/// (keys sorted become output names).
pub trait TraceOutput {
    /// The tensors, in a fixed order.
    fn flatten(&self) -> Vec<Tensor>;
    /// Names of the outputs (default `output_{i}`).
    fn names(&self) -> Vec<String> {
        (0..self.flatten().len()).map(|i| format!("output_{i}")).collect()
    }
    /// Whether the names are the user's (a map), not positions.
    fn is_named(&self) -> bool {
        false
    }
}

impl TraceOutput for Tensor {
    fn flatten(&self) -> Vec<Tensor> {
        vec![self.clone()]
    }
}

impl TraceOutput for Vec<Tensor> {
    fn flatten(&self) -> Vec<Tensor> {
        self.clone()
    }
}

impl TraceOutput for (Tensor, Tensor) {
    fn flatten(&self) -> Vec<Tensor> {
        vec![self.0.clone(), self.1.clone()]
    }
}

impl TraceOutput for (Tensor, Tensor, Tensor) {
    fn flatten(&self) -> Vec<Tensor> {
        vec![self.0.clone(), self.1.clone(), self.2.clone()]
    }
}

impl TraceOutput for BTreeMap<String, Tensor> {
    fn flatten(&self) -> Vec<Tensor> {
        self.values().cloned().collect()
    }
    fn names(&self) -> Vec<String> {
        self.keys().cloned().collect()
    }
    fn is_named(&self) -> bool {
        true
    }
}

/// The compiled graph of a trace.
pub(crate) struct Compiled {
    pub(crate) module: OpId,
    /// The JIT of the compiled graph (with `Engine::Jit`).
    pub(crate) jit: Option<crate::engine::JitEngine>,
}

/// A traced function: call it like the function; see the module docs.
pub struct Traced<F> {
    f: F,
    options: TraceOptions,
    record: Option<Record>,
    compiled: Option<Compiled>,
    calls: usize,
    profile: Option<Profile>,
}

/// Wraps `f` for tracing with `options` (checked here: unsupported options are errors).
pub fn trace<F>(f: F, options: TraceOptions) -> Result<Traced<F>> {
    options.validate()?;
    Ok(Traced { f, options, record: None, compiled: None, calls: 0, profile: None })
}

/// Runs `f` with tracing switched off: its ops execute eagerly and are not recorded.
pub fn exclude_from_trace<T>(f: impl FnOnce() -> T) -> T {
    let saved = session::suspend();
    let out = f();
    session::resume(saved);
    out
}

impl<F> Traced<F> {
    /// The options.
    pub fn options(&self) -> &TraceOptions {
        &self.options
    }

    /// How many calls completed.
    pub fn calls(&self) -> usize {
        self.calls
    }

    /// Whether the graph has been compiled.
    pub fn is_compiled(&self) -> bool {
        self.compiled.is_some()
    }

    /// The recorded sequence as a graph-dialect module, before any optimisation.
    pub fn recorded_ir(&self, opts: &PrintOptions) -> Result<String> {
        let record = self.record.as_ref().ok_or_else(|| Error::Invalid("nothing has been recorded yet".into()))?;
        let mut scratch = record.clone_for_build();
        let module = scratch.build_module(&self.options)?;
        Ok(strata_ir::print_module(&scratch.ctx, module, opts))
    }

    /// Compiles the record now (normally done by the second call).
    pub fn compile(&mut self) -> Result<()> {
        if self.compiled.is_some() {
            return Ok(());
        }
        let record = self.record.as_mut().ok_or_else(|| Error::Invalid("nothing has been recorded yet".into()))?;
        let module = record.compile(&self.options)?;
        let jit = match self.options.engine {
            crate::engine::Engine::Jit => {
                let g = self.options.graph_opt_config.clone().unwrap_or_default();
                let jit = crate::engine::JitOptions {
                    // opt_level 3 adds loop-level fusion unless the switches say otherwise.
                    fuse_dimshuffle: g.jit_fuse_dimshuffle.unwrap_or(self.options.opt_level.abs() >= 3),
                    fuse_reduce: g.jit_fuse_reduce.unwrap_or(self.options.opt_level.abs() >= 3),
                    ..crate::engine::JitOptions::default()
                };
                Some(crate::engine::JitEngine::new(&record.ctx, module, "main", jit)?)
            }
            crate::engine::Engine::Interp => None,
        };
        self.compiled = Some(Compiled { module, jit });
        Ok(())
    }

    /// The compiled module and its context.
    pub fn compiled_module(&self) -> Option<(&Context, OpId)> {
        Some((&self.record.as_ref()?.ctx, self.compiled.as_ref()?.module))
    }

    /// The compiled graph as text.
    pub fn compiled_ir(&self, opts: &PrintOptions) -> Option<String> {
        self.compiled_module().map(|(ctx, m)| strata_ir::print_module(ctx, m, opts))
    }

    /// Dumps the traced graph to a model file (MegEngine's `trace.dump`); see
    /// [`crate::dump`] for the steps and [`DumpOptions`] for every option.
    /// Needs `capture_as_const` and at least one recorded call.
    pub fn dump(&self, file: impl AsRef<std::path::Path>, options: &DumpOptions) -> Result<DumpResult> {
        if !self.options.capture_as_const {
            return Err(Error::Invalid(
                "you must set capture_as_const: true when creating the trace to use dump".into(),
            ));
        }
        let record = self
            .record
            .as_ref()
            .ok_or_else(|| Error::Invalid("the traced function must be called once before dump".into()))?;
        if let Some(reason) = record.not_dumpable.first() {
            return Err(Error::Invalid(reason.clone()));
        }
        if record.outputs.is_empty() {
            return Err(Error::Invalid("the traced function must return something to dump".into()));
        }
        let mut scratch = record.clone_for_build();
        let module = scratch.build_module(&self.options)?;
        let example_shapes = record.args.iter().map(|&v| record.vars[v].shape.clone()).collect();
        let source = crate::dump::DumpSource {
            ctx: &mut scratch.ctx,
            module,
            example_shapes,
            output_names: record.output_names.clone(),
            outputs_are_dict: !record.output_names.is_empty(),
        };
        crate::dump::dump_source(source, file.as_ref(), options)
    }

    /// Per-op profile of the compiled runs (`None` before compilation or without `profiling`).
    pub fn get_profile(&self) -> Option<&Profile> {
        self.profile.as_ref()
    }

    /// Calls the traced function.
    pub fn call<O, E>(&mut self, args: &[Tensor]) -> std::result::Result<O, TraceCallError<E>>
    where
        F: FnMut(&[Tensor]) -> std::result::Result<O, E>,
        O: TraceOutput,
    {
        if session::is_active() {
            return Err(TraceCallError::Strata(Error::Unsupported(
                "calling a traced function while another trace is recording or replaying".into(),
            )));
        }
        match self.record.take() {
            None => self.call_record(args),
            Some(record) => {
                if self.options.record_only {
                    self.record = Some(record);
                    return Err(TraceCallError::Strata(Error::Unsupported(
                        "running a record_only trace (it never executes; dump it instead)".into(),
                    )));
                }
                self.record = Some(record);
                if self.compiled.is_none() {
                    self.compile().map_err(TraceCallError::Strata)?;
                }
                let record = self.record.take().expect("invariant: record present");
                self.call_replay(record, args)
            }
        }
    }

    fn call_record<O, E>(&mut self, args: &[Tensor]) -> std::result::Result<O, TraceCallError<E>>
    where
        F: FnMut(&[Tensor]) -> std::result::Result<O, E>,
        O: TraceOutput,
    {
        let record = Record::new(args, &self.options).map_err(TraceCallError::Strata)?;
        let guard = session::install(session::Session::recording(record, args, &self.options));
        let result = (self.f)(args);
        let mut sess = guard.finish();
        if let Some(e) = sess.error.take() {
            return Err(TraceCallError::Strata(e));
        }
        let out = result.map_err(TraceCallError::User)?;
        let names = if out.is_named() { out.names() } else { Vec::new() };
        sess.finish_recording(&out.flatten(), &names, &self.options).map_err(TraceCallError::Strata)?;
        self.record = Some(sess.into_record());
        self.calls += 1;
        Ok(out)
    }

    fn call_replay<O, E>(&mut self, record: Record, args: &[Tensor]) -> std::result::Result<O, TraceCallError<E>>
    where
        F: FnMut(&[Tensor]) -> std::result::Result<O, E>,
        O: TraceOutput,
    {
        let compiled = self.compiled.as_ref().expect("invariant: compiled before replay");
        let (module, jit) = (compiled.module, compiled.jit.as_ref());
        let sess = session::Session::replaying(record, args, &self.options);
        let sess = match sess {
            Ok(s) => s,
            Err(failed) => {
                let (record, e) = *failed;
                self.record = Some(record);
                return Err(TraceCallError::Trace(Box::new(e)));
            }
        };
        let guard = session::install(sess);
        let result = (self.f)(args);
        let mut sess = guard.finish();
        let outcome = match (sess.trace_error.take(), sess.error.take(), result) {
            (Some(t), _, _) => Err(TraceCallError::Trace(Box::new(t))),
            (None, Some(e), _) => Err(TraceCallError::Strata(e)),
            (None, None, Err(u)) => Err(TraceCallError::User(u)),
            (None, None, Ok(out)) => {
                let profile =
                    if self.options.profiling { Some(self.profile.get_or_insert_with(Profile::default)) } else { None };
                match sess.finish_replay(&out.flatten(), module, jit, profile) {
                    Ok(()) => Ok(out),
                    Err(Error::Trace(t)) => Err(TraceCallError::Trace(t)),
                    Err(e) => Err(TraceCallError::Strata(e)),
                }
            }
        };
        self.record = Some(sess.into_record());
        if outcome.is_ok() {
            self.calls += 1;
        }
        outcome
    }
}
