//! The pass manager: runs a [`Pipeline`] with instrumentation — verification
//! after each pass, IR printing before/after passes, per-pass timing and
//! statistics (also emitted as `tracing` events), and an optional numeric
//! checker used by negative opt levels.

use super::{Changed, PassError, PassOptions, PassRegistry, PassStats, Pipeline, PipelineError, PipelineItem};
use crate::OpId;
use crate::context::Context;
use crate::diag::render_all;
use crate::print::{PrintOptions, print_module};
use crate::verify::{VerifyOptions, verify};
use std::fmt::Write as _;
use std::io::Write;
use std::time::{Duration, Instant};

/// Compares a module before and after a pass: `(before_ctx, before_module,
/// after_ctx, after_module)`. Returns a description of the difference on failure.
pub type Checker = Box<dyn FnMut(&Context, OpId, &Context, OpId) -> Result<(), String>>;

/// What the pass manager does around each pass.
#[derive(Clone, Debug)]
pub struct Instrumentation {
    /// Verify the module after every pass (default: on in debug builds).
    pub verify_each: bool,
    /// Let the verifier accept unregistered ops.
    pub allow_unregistered: bool,
    /// Print the module before every pass.
    pub print_before_all: bool,
    /// Print the module after every pass.
    pub print_after_all: bool,
    /// Print the module after every pass that changed it.
    pub print_after_change: bool,
    /// Print the module before these passes.
    pub print_before: Vec<String>,
    /// Print the module after these passes.
    pub print_after: Vec<String>,
    /// How printed IR looks.
    pub print_options: PrintOptions,
}

impl Default for Instrumentation {
    fn default() -> Self {
        Instrumentation {
            verify_each: cfg!(debug_assertions),
            allow_unregistered: false,
            print_before_all: false,
            print_after_all: false,
            print_after_change: false,
            print_before: Vec::new(),
            print_after: Vec::new(),
            print_options: PrintOptions::default(),
        }
    }
}

/// What one pass run did.
#[derive(Clone, Debug)]
pub struct PassRecord {
    /// Pass name.
    pub name: String,
    /// Nesting depth (inside `fixpoint` groups).
    pub depth: usize,
    /// Wall time.
    pub elapsed: Duration,
    /// Whether it changed the IR.
    pub changed: Changed,
    /// Its statistics.
    pub stats: PassStats,
}

/// The outcome of running a pipeline.
#[derive(Clone, Debug, Default)]
pub struct RunReport {
    /// One record per pass run, in order.
    pub records: Vec<PassRecord>,
    /// Whether anything changed.
    pub changed: Changed,
    /// Total wall time.
    pub elapsed: Duration,
}

impl RunReport {
    /// A human-readable table of time and statistics per pass run.
    pub fn timing_table(&self) -> String {
        let total = self.elapsed.as_secs_f64().max(1e-9);
        let mut s = String::from("===-------------------------------------------===\n");
        s.push_str("                  Pass execution timing report\n");
        s.push_str("===-------------------------------------------===\n");
        let _ = writeln!(s, "  Total: {:.4} ms", total * 1e3);
        let _ = writeln!(s, "  {:>10}  {:>6}  {:<7}  pass", "ms", "%", "changed");
        for r in &self.records {
            let ms = r.elapsed.as_secs_f64() * 1e3;
            let pct = 100.0 * r.elapsed.as_secs_f64() / total;
            let name = format!("{}{}", "  ".repeat(r.depth), r.name);
            let changed = if r.changed.is_yes() { "yes" } else { "no" };
            let _ = writeln!(s, "  {ms:>10.4}  {pct:>6.2}  {changed:<7}  {name}");
            for (k, v) in r.stats.iter() {
                let _ = writeln!(s, "  {:>10}  {:>6}  {:<7}  {}  {k} = {v}", "", "", "", "  ".repeat(r.depth));
            }
        }
        s
    }
}

/// Runs a pipeline.
pub struct PassManager<'r> {
    registry: &'r PassRegistry,
    pipeline: Pipeline,
    /// Instrumentation settings.
    pub instrumentation: Instrumentation,
    checker: Option<Checker>,
    sink: Box<dyn Write>,
}

impl<'r> PassManager<'r> {
    /// A manager for an already parsed pipeline; IR dumps go to stderr.
    pub fn new(registry: &'r PassRegistry, pipeline: Pipeline) -> Self {
        PassManager {
            registry,
            pipeline,
            instrumentation: Instrumentation::default(),
            checker: None,
            sink: Box::new(std::io::stderr()),
        }
    }

    /// Parses `text` and makes a manager for it.
    pub fn parse(registry: &'r PassRegistry, text: &str) -> Result<Self, PipelineError> {
        Ok(Self::new(registry, Pipeline::parse(text, registry)?))
    }

    /// The pipeline.
    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// Checks every pass's result against its input with `checker`.
    pub fn with_checker(mut self, checker: Checker) -> Self {
        self.checker = Some(checker);
        self
    }

    /// Sends IR dumps to `sink` instead of stderr.
    pub fn with_sink(mut self, sink: Box<dyn Write>) -> Self {
        self.sink = sink;
        self
    }

    /// Runs the pipeline on `module`.
    pub fn run(&mut self, ctx: &mut Context, module: OpId) -> Result<RunReport, PassError> {
        let start = Instant::now();
        let mut report = RunReport::default();
        let items = self.pipeline.items.clone();
        report.changed = self.run_items(ctx, module, &items, 0, &mut report)?;
        report.elapsed = start.elapsed();
        Ok(report)
    }

    fn run_items(
        &mut self,
        ctx: &mut Context,
        module: OpId,
        items: &[PipelineItem],
        depth: usize,
        report: &mut RunReport,
    ) -> Result<Changed, PassError> {
        let mut changed = Changed::No;
        for item in items {
            match item {
                PipelineItem::Pass { name, options } => {
                    changed |= self.run_pass(ctx, module, name, options, depth, report)?;
                }
                PipelineItem::Fixpoint { max_iters, body } => {
                    let mut rounds = 0;
                    loop {
                        rounds += 1;
                        let c = self.run_items(ctx, module, body, depth + 1, report)?;
                        changed |= c;
                        if !c.is_yes() {
                            break;
                        }
                        if rounds >= *max_iters {
                            tracing::warn!(max_iters, "fixpoint group stopped at its iteration cap before converging");
                            break;
                        }
                    }
                    tracing::debug!(rounds, "fixpoint group finished");
                }
            }
        }
        Ok(changed)
    }

    fn dump(&mut self, ctx: &Context, module: OpId, header: &str) {
        let text = print_module(ctx, module, &self.instrumentation.print_options);
        let _ = writeln!(self.sink, "// -----// IR Dump {header} //----- //\n{text}");
        let _ = self.sink.flush();
    }

    fn run_pass(
        &mut self,
        ctx: &mut Context,
        module: OpId,
        name: &str,
        options: &[(String, String)],
        depth: usize,
        report: &mut RunReport,
    ) -> Result<Changed, PassError> {
        let info = *self.registry.get(name).ok_or_else(|| PassError::Options(format!("unknown pass `{name}`")))?;
        let opts = PassOptions::from_pairs(name, info.options, options).map_err(PassError::Options)?;
        let mut pass = (info.create)(&opts)?;
        let instr = &self.instrumentation;
        if instr.print_before_all || instr.print_before.iter().any(|p| p == name) {
            self.dump(ctx, module, &format!("Before {name}"));
        }
        let before = self.checker.as_ref().map(|_| ctx.clone());
        let span = tracing::info_span!("pass", name);
        let _guard = span.enter();
        let mut stats = PassStats::default();
        let t0 = Instant::now();
        let changed = pass.run(ctx, module, &mut stats)?;
        let elapsed = t0.elapsed();
        tracing::info!(
            pass = name,
            elapsed_us = elapsed.as_micros() as u64,
            changed = changed.is_yes(),
            stats = ?stats,
            "pass finished"
        );
        let instr = &self.instrumentation;
        if instr.print_after_all
            || (instr.print_after_change && changed.is_yes())
            || instr.print_after.iter().any(|p| p == name)
        {
            self.dump(ctx, module, &format!("After {name}"));
        }
        if self.instrumentation.verify_each {
            let vopts = VerifyOptions { allow_unregistered: self.instrumentation.allow_unregistered };
            if let Err(diags) = verify(ctx, module, vopts) {
                return Err(PassError::Verify { pass: name.to_string(), diagnostics: render_all(ctx, &diags, None) });
            }
        }
        if let (Some(checker), Some(before)) = (self.checker.as_mut(), before) {
            checker(&before, module, ctx, module)
                .map_err(|message| PassError::Check { pass: name.to_string(), message })?;
        }
        report.records.push(PassRecord { name: name.to_string(), depth, elapsed, changed, stats });
        Ok(changed)
    }
}
