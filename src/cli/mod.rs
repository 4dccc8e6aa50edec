//! Command-line interface: `strata opt`, `demo`, `zoo`, `trace`, `dump`, `info`, `run`.

mod bench;
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
    /// Time the peers' workloads through the JIT (median/min/max, GFLOP/s, % of the FMA peak).
    Bench(bench::BenchArgs),
}

/// MegEngine's inference options as flags (`strata dump` and `strata run`).
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Inference options")]
pub struct InferenceFlags {
    /// f16 inputs and outputs, f32 computation.
    #[arg(long)]
    enable_io16xc32: bool,
    /// f16 inputs, outputs and computation.
    #[arg(long)]
    enable_ioc16: bool,
    /// Convert to the NHWCD4 layout.
    #[arg(long)]
    enable_hwcd4: bool,
    /// Convert to the NCHW88 layout (x86 AVX).
    #[arg(long)]
    enable_nchw88: bool,
    /// Convert to the NCHW44 layout (ARM NEON).
    #[arg(long)]
    enable_nchw44: bool,
    /// Convert to the NCHW44 layout for int8 dot-product kernels.
    #[arg(long)]
    enable_nchw44_dot: bool,
    /// Convert to the NCHW4 layout.
    #[arg(long)]
    enable_nchw4: bool,
    /// Convert to the NCHW32 layout.
    #[arg(long)]
    enable_nchw32: bool,
    /// Convert to the CHWN4 layout.
    #[arg(long)]
    enable_chwn4: bool,
    /// Convert to the NCHW64 layout (int4: not supported).
    #[arg(long)]
    enable_nchw64: bool,
    /// Fuse conv, bias and nonlinearity.
    #[arg(long)]
    enable_fuse_conv_bias_nonlinearity: bool,
    /// Fuse conv_bias with a following same-shape add (`z`).
    #[arg(long)]
    enable_fuse_conv_bias_with_z: bool,
    /// Fuse the uint8 input preprocessing chain.
    #[arg(long)]
    enable_fuse_preprocess: bool,
}

impl InferenceFlags {
    /// The flags as MegEngine's keyword arguments (not yet validated).
    pub fn options(&self) -> anyhow::Result<strata::InferenceOptions> {
        let kwargs = [
            ("enable_io16xc32", self.enable_io16xc32),
            ("enable_ioc16", self.enable_ioc16),
            ("enable_hwcd4", self.enable_hwcd4),
            ("enable_nchw88", self.enable_nchw88),
            ("enable_nchw44", self.enable_nchw44),
            ("enable_nchw44_dot", self.enable_nchw44_dot),
            ("enable_nchw4", self.enable_nchw4),
            ("enable_nchw32", self.enable_nchw32),
            ("enable_chwn4", self.enable_chwn4),
            ("enable_nchw64", self.enable_nchw64),
            ("enable_fuse_conv_bias_nonlinearity", self.enable_fuse_conv_bias_nonlinearity),
            ("enable_fuse_conv_bias_with_z", self.enable_fuse_conv_bias_with_z),
            ("enable_fuse_preprocess", self.enable_fuse_preprocess),
        ];
        Ok(strata::InferenceOptions::from_kwargs(kwargs)?)
    }
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
        Command::Bench(args) => bench::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e:#}");
            ExitCode::FAILURE
        }
    }
}
