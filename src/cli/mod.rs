//! Command-line interface: `strata opt`, `demo`, `zoo`, `trace`, `dump`, `info`, `run`.

mod demo;
mod dump;
mod info;
mod opt;
mod run;
mod zoo;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// strata: a multi-level deep-learning compiler.
#[derive(Debug, Parser)]
#[command(name = "strata", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Parse, verify, optimise and print IR (like mlir-opt).
    Opt(opt::OptArgs),
    /// Trace the built-in demo model (resnet18), showing the graph and its runs.
    Demo(demo::DemoArgs),
    /// List the model zoo with parameter counts and FLOPs.
    Zoo(zoo::ZooArgs),
    /// Trace a zoo model and print (or write) its graph-dialect IR.
    Trace(zoo::TraceArgs),
    /// Trace a zoo model (or read a `.strata` file) and dump it to a model file.
    Dump(dump::DumpArgs),
    /// Show what a model file holds.
    Info(info::InfoArgs),
    /// Load a model file and run it (like MegEngine's load_and_run).
    Run(run::RunArgs),
}

/// Printing flags shared by the commands that print IR.
#[derive(Debug, Clone, clap::Args)]
pub struct PrintArgs {
    /// Print large constants in full (hex) so the output re-parses to the same data.
    #[arg(long)]
    print_large_consts: bool,
    /// Print op locations (for traced graphs: the Rust call sites).
    #[arg(long)]
    print_locs: bool,
}

impl PrintArgs {
    /// The printer options these flags select.
    pub fn options(&self) -> strata::ir::PrintOptions {
        strata::ir::PrintOptions {
            print_large_consts: self.print_large_consts,
            print_locs: self.print_locs,
            ..strata::ir::PrintOptions::default()
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

/// Parses arguments, runs the command, prints any error to stderr.
pub fn main() -> ExitCode {
    init_logging();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Opt(args) => opt::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Zoo(args) => zoo::run_zoo(args),
        Command::Trace(args) => zoo::run_trace(args),
        Command::Dump(args) => dump::run(args),
        Command::Info(args) => info::run(args),
        Command::Run(args) => run::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e:#}");
            ExitCode::FAILURE
        }
    }
}
