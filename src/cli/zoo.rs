//! `strata zoo` and `strata trace`: the model zoo from the command line.

use anyhow::{Context as _, Result};
use clap::{ArgAction, Args};
use strata::{Tensor, TraceOptions, trace, zoo};

#[derive(Debug, Args)]
pub struct ZooArgs {}

#[derive(Debug, Args)]
pub struct TraceArgs {
    /// Model name (see `strata zoo`).
    model: String,
    /// Batch size of the traced input.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Opt level of the printed graph (-3..=3).
    #[arg(short = 'O', long = "opt-level", default_value_t = 2, allow_hyphen_values = true)]
    opt_level: i64,
    /// Record without executing the ops (outputs computed once from the graph).
    #[arg(long)]
    symbolic: bool,
    /// Record only: never execute anything.
    #[arg(long)]
    record_only: bool,
    /// Keep the batch dim symbolic (`--symbolic-shape=false` fixes it).
    #[arg(long, default_value_t = true, action = ArgAction::Set)]
    symbolic_shape: bool,
    /// Seed of the weights and the input.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print the recorded graph before optimisation instead.
    #[arg(long)]
    recorded: bool,
    #[command(flatten)]
    print: super::PrintArgs,
    /// Write the IR to this file instead of standard output.
    #[arg(short = 'o', long)]
    output: Option<String>,
}

/// Traces `model` once (record only) at batch 1 and returns the compiled-at-O0 FLOPs.
fn model_flops(model: &zoo::Model) -> Result<u64> {
    let opts = TraceOptions { record_only: true, opt_level: 0, ..TraceOptions::default() };
    let mut traced = trace(|a: &[Tensor]| model.forward(&a[0]), opts)?;
    let x = model.random_input(1, 0)?;
    traced.call(&[x]).map_err(|e| anyhow::anyhow!("{e}"))?;
    traced.compile()?;
    let (ctx, module) = traced.compiled_module().context("compiled module")?;
    Ok(zoo::flops(ctx, module, 1))
}

pub fn run_zoo(_args: ZooArgs) -> Result<()> {
    println!("{:<16} {:<22} {:>12} {:>14}", "model", "input (batch 1)", "params", "MFLOPs");
    for name in zoo::MODELS {
        let model = zoo::build(name, 0)?;
        let input = format!("{}{:?}", model.input_elem, model.input_shape);
        let flops = model_flops(&model)?;
        println!("{:<16} {:<22} {:>12} {:>14.1}", name, input, model.num_params(), flops as f64 / 1e6);
    }
    Ok(())
}

pub fn run_trace(args: TraceArgs) -> Result<()> {
    let model = zoo::build(&args.model, args.seed)?;
    let opts = TraceOptions {
        symbolic: args.symbolic,
        record_only: args.record_only,
        capture_as_const: true,
        symbolic_shape: args.symbolic_shape,
        opt_level: args.opt_level,
        ..TraceOptions::default()
    };
    let mut traced = trace(|a: &[Tensor]| model.forward(&a[0]), opts)?;
    let x = model.random_input(args.batch, args.seed)?;
    traced.call(&[x]).map_err(|e| anyhow::anyhow!("{e}"))?;
    let print = args.print.options();
    let text = if args.recorded {
        traced.recorded_ir(&print)?
    } else {
        traced.compile()?;
        traced.compiled_ir(&print).context("compiled module")?
    };
    match &args.output {
        Some(path) => std::fs::write(path, text).with_context(|| format!("writing {path}"))?,
        None => print!("{text}"),
    }
    Ok(())
}
