//! Parse → verify → optimise, with every error rendered for people.

use strata_ir::pass::{Instrumentation, PassError, PassManager, PassRegistry, PipelineError, RunReport};
use strata_ir::{Context, OpId, ParseError, ParseOptions, Source, VerifyOptions, parse_module, verify};
use strata_passes::pipelines::{OptLevel, OptLevelError};

/// A failure anywhere in the driver, already rendered with context.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// Malformed text.
    #[error("{0}")]
    Parse(#[from] ParseError),
    /// The IR does not verify (rendered diagnostics, one per problem).
    #[error("{0}")]
    Verify(String),
    /// Malformed pipeline text.
    #[error("{0}")]
    Pipeline(#[from] PipelineError),
    /// A pass failed.
    #[error("{0}")]
    Pass(#[from] PassError),
    /// Invalid opt level.
    #[error("{0}")]
    OptLevel(#[from] OptLevelError),
}

/// How to choose and run passes.
#[derive(Clone, Debug, Default)]
pub struct OptConfig {
    /// Explicit pipeline text (wins over `opt_level`).
    pub pipeline: Option<String>,
    /// An opt level whose pipeline to run.
    pub opt_level: Option<OptLevel>,
    /// Check every pass numerically against the reference evaluator
    /// (implied by a negative opt level).
    pub check_each: bool,
    /// Instrumentation (verification, IR printing).
    pub instrumentation: Instrumentation,
}

impl OptConfig {
    /// The pipeline text this configuration runs.
    pub fn pipeline_text(&self) -> String {
        match (&self.pipeline, self.opt_level) {
            (Some(p), _) => p.clone(),
            (None, Some(level)) => level.pipeline().to_string(),
            (None, None) => String::new(),
        }
    }

    /// Whether passes are checked numerically.
    pub fn checks(&self) -> bool {
        self.check_each || self.opt_level.is_some_and(OptLevel::checks_each_pass)
    }
}

/// Parses `source` into `ctx` and verifies it.
pub fn parse_and_verify(ctx: &mut Context, source: &Source, allow_unregistered: bool) -> Result<OpId, DriverError> {
    let module = parse_module(ctx, source, &ParseOptions { allow_unregistered })?;
    verify(ctx, module, VerifyOptions { allow_unregistered })
        .map_err(|diags| DriverError::Verify(strata_ir::diag::render_all(ctx, &diags, Some(source))))?;
    Ok(module)
}

/// A pass manager for the configured pipeline, instrumentation and checking.
pub fn pass_manager<'r>(registry: &'r PassRegistry, config: &OptConfig) -> Result<PassManager<'r>, DriverError> {
    let mut pm = PassManager::parse(registry, &config.pipeline_text())?;
    pm.instrumentation = config.instrumentation.clone();
    if config.checks() {
        pm = pm.with_checker(strata_passes::check::numeric_checker(0x5eed));
    }
    Ok(pm)
}

/// Runs the configured pipeline on `module`.
pub fn optimize(ctx: &mut Context, module: OpId, config: &OptConfig) -> Result<RunReport, DriverError> {
    let registry = strata_passes::registry();
    Ok(pass_manager(&registry, config)?.run(ctx, module)?)
}

/// Prints `module`, parses the text into a fresh context, prints again, and
/// checks both texts are equal. Returns the text.
pub fn check_roundtrip(
    ctx: &Context,
    module: OpId,
    print_options: &strata_ir::PrintOptions,
    allow_unregistered: bool,
) -> Result<String, String> {
    let first = strata_ir::print_module(ctx, module, print_options);
    let mut fresh = Context::new(ctx.registry_arc());
    let source = Source::new("<roundtrip>", first.clone());
    let reparsed = parse_module(&mut fresh, &source, &ParseOptions { allow_unregistered })
        .map_err(|e| format!("printed IR does not parse back:\n{e}\n--- printed ---\n{first}"))?;
    let second = strata_ir::print_module(&fresh, reparsed, print_options);
    if first != second {
        return Err(format!("print(parse(print(m))) != print(m)\n--- first ---\n{first}\n--- second ---\n{second}"));
    }
    Ok(first)
}
