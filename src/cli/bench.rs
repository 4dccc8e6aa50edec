//! `strata bench`: time the peers' workloads through the JIT (docs/benchmarks.md).

use anyhow::{Result, bail};
use clap::Args;
use strata::bench::{self, BenchOptions, WORKLOADS};

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Workload (or `all`): conv3x3_64, conv1x1_256_64, dwconv3x3_128,
    /// matmul_1x1024x1024, add_relu_64x112x112, resnet18, mobilenet_v2.
    workload: String,
    /// Kernel threads.
    #[arg(long, default_value_t = 1, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=256))]
    threads: usize,
    /// Measured runs.
    #[arg(long, default_value_t = 20, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    iters: usize,
    /// Unmeasured runs before them.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Layout conversion: nchw88, nchw44 or none (default: nchw88 on x86-64, nchw44 on aarch64).
    #[arg(long)]
    layout: Option<String>,
    /// Skip measuring the FMA peak (the % column is then 0).
    #[arg(long)]
    no_peak: bool,
    /// One JSON object per workload and line.
    #[arg(long)]
    json: bool,
}

pub fn run(args: BenchArgs) -> Result<()> {
    if let Some(l) = &args.layout
        && !matches!(l.as_str(), "nchw88" | "nchw44" | "none")
    {
        bail!("unknown layout `{l}` (expected nchw88, nchw44 or none)");
    }
    let names: Vec<&str> = if args.workload == "all" {
        WORKLOADS.to_vec()
    } else if let Some(w) = WORKLOADS.iter().find(|w| **w == args.workload) {
        vec![*w]
    } else {
        bail!("unknown workload `{}` (known: {}, all)", args.workload, WORKLOADS.join(", "));
    };
    let peak = if args.no_peak {
        None
    } else {
        let p = strata_codegen::measure_fma_peak(std::time::Duration::from_millis(300))?;
        if !args.json {
            println!("128-bit FMA peak: {:.1} GFLOP/s per thread ({})", p.gflops, p.isa);
        }
        Some(p.gflops)
    };
    let opts = BenchOptions { threads: args.threads, iters: args.iters, warmup: args.warmup, layout: args.layout };
    if !args.json {
        println!(
            "{:<22} {:>7} {:>10} {:>10} {:>10} {:>8} {:>6} {:>8} {:>10} {:>7}",
            "workload",
            "layout",
            "median ms",
            "min ms",
            "max ms",
            "GFLOP/s",
            "%peak",
            "kernels",
            "compile ms",
            "arena×"
        );
    }
    for name in names {
        let r = bench::run(name, &opts, peak)?;
        if args.json {
            println!("{}", serde_json::to_string(&r)?);
        } else {
            println!(
                "{:<22} {:>7} {:>10.3} {:>10.3} {:>10.3} {:>8.1} {:>6.1} {:>8} {:>10.1} {:>7.3}",
                r.workload,
                r.layout,
                r.median_ms,
                r.min_ms,
                r.max_ms,
                r.gflops,
                r.peak_pct,
                r.kernels,
                r.compile_ms,
                r.arena_ratio
            );
        }
        if let Some(e) = r.max_rel_error
            && e > 1e-3
        {
            bail!("{name}: the JIT's output differs from the reference evaluator (max relative error {e:.3e})");
        }
    }
    Ok(())
}
