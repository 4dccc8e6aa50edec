//! `strata demo`: the main job on a built-in model.

use anyhow::{Context as _, Result};
use clap::Args;
use strata::driver::{OptConfig, parse_and_verify, pass_manager};
use strata::ir::pass::Instrumentation;
use strata::ir::{PrintOptions, Source, print_module};
use strata::passes::check::{compare, random_inputs};
use strata::passes::pipelines::OptLevel;

const DEMO: &str = include_str!("../../examples/demo.strata");

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Opt level of the pipeline to run (-3..=3).
    #[arg(short = 'O', long = "opt-level", default_value_t = 2, allow_hyphen_values = true)]
    opt_level: i64,
}

pub fn run(args: DemoArgs) -> Result<()> {
    let level = OptLevel::new(args.opt_level)?;
    let source = Source::new("examples/demo.strata", DEMO);
    let mut ctx = strata::dialects::context();
    let module = parse_and_verify(&mut ctx, &source, false)?;
    let print_options = PrintOptions::default();
    println!("== input (examples/demo.strata) ==\n{}", print_module(&ctx, module, &print_options));
    let before = ctx.clone();
    println!("== pipeline for -O{level}: {} ==\n", level.pipeline());
    let config = OptConfig {
        opt_level: Some(level),
        instrumentation: Instrumentation {
            verify_each: true,
            print_after_all: true,
            print_options: print_options.clone(),
            ..Instrumentation::default()
        },
        ..OptConfig::default()
    };
    let registry = strata::passes::registry();
    let report = pass_manager(&registry, &config)?.with_sink(Box::new(std::io::stdout())).run(&mut ctx, module)?;
    print!("{}", report.timing_table());
    println!("\n== output ==\n{}", print_module(&ctx, module, &print_options));
    let inputs = random_inputs(&before, module, "residual", 42).map_err(anyhow::Error::msg)?;
    let expected = strata::dialects::interp::run(&before, module, "residual", &inputs).context("reference run")?;
    let actual = strata::dialects::interp::run(&ctx, module, "residual", &inputs).context("optimised run")?;
    compare(&expected, &actual).map_err(anyhow::Error::msg)?;
    let ops = |c: &strata::ir::Context| c.walk(module).len();
    println!(
        "== check: optimised @residual matches the reference evaluator on random inputs ({} ops -> {} ops) ==",
        ops(&before),
        ops(&ctx)
    );
    Ok(())
}
