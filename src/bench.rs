//! `strata bench`: the peers' workloads (`../shared/peers/RESULTS.md`) compiled
//! by the JIT and timed in-process.
//!
//! Each workload is traced (`record_only`, static shapes), optimised at
//! `opt_level` 2, converted to a blocked layout (NCHW88 on x86-64, NCHW44 on
//! aarch64, or as asked), lowered and JIT-compiled once; then `warmup` unmeasured
//! and `iters` measured runs. FLOP counts are the peers' (multiply-adds count
//! 2; the elementwise workload counts 1 per add and per relu), so GFLOP/s are
//! comparable with their table. The yardstick is the 128-bit FMA peak measured
//! in the same process with a JIT-compiled FMA loop
//! ([`strata_codegen::measure_fma_peak`]), times the thread count.

use crate::error::{Error, Result};
use crate::{ConvParams, InferenceOptions, Nonlinearity, Tensor, TraceOptions, trace};
use std::time::{Duration, Instant};
use strata_ir::{Context, OpId, TensorData};

/// Every workload, in the peers' order.
pub const WORKLOADS: &[&str] = &[
    "conv3x3_64",
    "conv1x1_256_64",
    "dwconv3x3_128",
    "matmul_1x1024x1024",
    "add_relu_64x112x112",
    "resnet18",
    "mobilenet_v2",
];

/// A workload ready to compile: its optimised graph and seeded inputs.
pub struct Workload {
    /// Name.
    pub name: &'static str,
    /// What it computes.
    pub description: &'static str,
    /// Floating-point operations of one run (the peers' count).
    pub flops: u64,
    /// The layout the graph is in: the requested one, or `nchw` when it has no
    /// convolution to convert.
    pub layout: String,
    /// The graph (after the layout pipeline).
    pub ctx: Context,
    /// Its module (`@main`).
    pub module: OpId,
    /// Inputs.
    pub inputs: Vec<TensorData>,
}

/// Benchmark settings.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Kernel threads.
    pub threads: usize,
    /// Measured runs.
    pub iters: usize,
    /// Unmeasured runs first.
    pub warmup: usize,
    /// Layout conversion: `nchw88`, `nchw44` or `none` (default: by host ISA).
    pub layout: Option<String>,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions { threads: 1, iters: 20, warmup: 3, layout: None }
    }
}

/// The outcome of one benchmark (one JSON object per line with `--json`).
#[derive(Clone, Debug, serde::Serialize)]
pub struct BenchReport {
    /// Workload name.
    pub workload: String,
    /// Layout the graph was converted to (`nchw` when there was nothing to convert).
    pub layout: String,
    /// Kernel threads.
    pub threads: usize,
    /// Measured runs.
    pub iters: usize,
    /// Median latency, ms.
    pub median_ms: f64,
    /// Fastest run, ms.
    pub min_ms: f64,
    /// Slowest run, ms.
    pub max_ms: f64,
    /// FLOPs per run (the peers' count).
    pub flops: u64,
    /// GFLOP/s at the median.
    pub gflops: f64,
    /// Measured 128-bit FMA peak × threads, GFLOP/s (0 when not measured).
    pub peak_gflops: f64,
    /// `gflops / peak_gflops` in percent.
    pub peak_pct: f64,
    /// Kernels launched per run.
    pub kernels: usize,
    /// Compile time: lowering, ms.
    pub lower_ms: f64,
    /// Compile time: Cranelift, ms.
    pub codegen_ms: f64,
    /// Compile time in total (lowering, Cranelift, planning), ms.
    pub compile_ms: f64,
    /// Planned arena, bytes.
    pub arena_bytes: usize,
    /// Liveness lower bound of the arena, bytes.
    pub arena_lower_bound: usize,
    /// `arena_bytes / arena_lower_bound`.
    pub arena_ratio: f64,
    /// Largest relative error of the JIT's output against the reference
    /// evaluator on the same input (`null` when not checked: the big models
    /// take seconds in the reference).
    pub max_rel_error: Option<f64>,
}

fn traced_module(f: impl FnMut(&[Tensor]) -> Result<Tensor>, inputs: &[Tensor]) -> Result<(Context, OpId)> {
    let opts = TraceOptions { record_only: true, symbolic_shape: false, ..TraceOptions::default() };
    let mut t = trace(f, opts)?;
    t.call::<Tensor, Error>(inputs).map_err(|e| Error::Compile(e.to_string()))?;
    t.compile()?;
    let (ctx, m) = t.compiled_module().ok_or_else(|| Error::Compile("nothing compiled".into()))?;
    Ok((ctx.clone(), m))
}

/// Builds workload `name` with weights and inputs from `seed`, converted to `layout`.
pub fn workload(name: &str, seed: u64, layout: &str) -> Result<Workload> {
    let u = |shape: &[usize], s: u64| Tensor::uniform(shape, -1.0, 1.0, seed.wrapping_add(s));
    let (description, flops, (ctx, module), inputs) = match name {
        "conv3x3_64" => {
            let (w, b) = (u(&[64, 64, 3, 3], 1)?, u(&[1, 64, 1, 1], 2)?);
            let x = u(&[1, 64, 56, 56], 3)?;
            let m = traced_module(
                |a| a[0].conv_bias(&w, &b, None, ConvParams::new(1, 1), Nonlinearity::Relu),
                std::slice::from_ref(&x),
            )?;
            ("conv 3x3 64->64 pad 1 + bias + relu, 1x64x56x56", 231_211_008, m, vec![x])
        }
        "conv1x1_256_64" => {
            let w = u(&[64, 256, 1, 1], 1)?;
            let x = u(&[1, 256, 56, 56], 3)?;
            let m = traced_module(|a| a[0].conv2d(&w, ConvParams::new(1, 0)), std::slice::from_ref(&x))?;
            ("conv 1x1 256->64, no bias, 1x256x56x56", 102_760_448, m, vec![x])
        }
        "dwconv3x3_128" => {
            let (w, b) = (u(&[128, 1, 3, 3], 1)?, u(&[1, 128, 1, 1], 2)?);
            let x = u(&[1, 128, 56, 56], 3)?;
            let m = traced_module(
                |a| a[0].conv_bias(&w, &b, None, ConvParams::new(1, 1).group(128), Nonlinearity::Identity),
                std::slice::from_ref(&x),
            )?;
            ("depthwise conv 3x3 (group 128) pad 1 + bias, 1x128x56x56", 7_225_344, m, vec![x])
        }
        "matmul_1x1024x1024" => {
            let w = u(&[1024, 1024], 1)?;
            let x = u(&[1, 1024], 3)?;
            let m = traced_module(|a| a[0].matmul(&w), std::slice::from_ref(&x))?;
            ("matmul [1,1024] x [1024,1024] constant weight (GEMV)", 2_097_152, m, vec![x])
        }
        "add_relu_64x112x112" => {
            let (a, b) = (u(&[1, 64, 112, 112], 3)?, u(&[1, 64, 112, 112], 4)?);
            let m = traced_module(|t| t[0].add(&t[1])?.relu(), &[a.clone(), b.clone()])?;
            ("relu(a + b), two 1x64x112x112 inputs", 1_605_632, m, vec![a, b])
        }
        "resnet18" | "mobilenet_v2" => {
            let model = crate::zoo::build(name, seed)?;
            let x = model.random_input(1, seed.wrapping_add(3))?;
            let m = traced_module(|a| model.forward(&a[0]), std::slice::from_ref(&x))?;
            let flops = if name == "resnet18" { 3_628_100_000 } else { 601_500_000 };
            let d = if name == "resnet18" { "zoo resnet18, 1x3x224x224" } else { "zoo mobilenet_v2, 1x3x224x224" };
            (d, flops, m, vec![x])
        }
        other => {
            return Err(Error::Invalid(format!("unknown workload `{other}` (known: {})", WORKLOADS.join(", "))));
        }
    };
    let name = WORKLOADS.iter().copied().find(|w| *w == name).expect("invariant: matched above");
    let inputs = inputs.iter().map(Tensor::data).collect::<Result<Vec<_>>>()?;
    let mut ctx = ctx;
    let mut used = "nchw".to_string();
    if layout != "none" {
        let mut opts = InferenceOptions::default();
        opts.set(&format!("enable_{layout}"), true)?;
        opts.set("enable_fuse_conv_bias_nonlinearity", true)?;
        let pipeline = crate::dump::option_pipeline(&opts).expect("invariant: options enabled");
        let config = crate::driver::OptConfig { pipeline: Some(pipeline), ..Default::default() };
        match crate::driver::optimize(&mut ctx, module, &config) {
            Ok(_) if ctx.walk(module).iter().any(|&o| ctx.op_name(o).starts_with("layout.")) => {
                used = layout.to_string();
            }
            Ok(_) => {}
            // A workload without a convolution has nothing to convert: the layout pass refuses.
            Err(crate::driver::DriverError::Pass(strata_ir::pass::PassError::Unsupported { .. })) => {}
            Err(e) => return Err(Error::Compile(e.to_string())),
        }
    }
    Ok(Workload { name, description, flops, layout: used, ctx, module, inputs })
}

/// The default layout for the host ISA.
pub fn host_layout() -> &'static str {
    if cfg!(target_arch = "aarch64") { "nchw44" } else { "nchw88" }
}

/// Compiles and times workload `name`.
pub fn run(name: &str, opts: &BenchOptions, peak: Option<f64>) -> Result<BenchReport> {
    let requested = opts.layout.clone().unwrap_or_else(|| host_layout().to_string());
    let w = workload(name, 0, &requested)?;
    let layout = w.layout.clone();
    let jit_opts = crate::engine::JitOptions { threads: opts.threads, ..Default::default() };
    let engine = crate::engine::JitEngine::new(&w.ctx, w.module, "main", jit_opts)?;
    let shapes: Vec<Vec<usize>> = w.inputs.iter().map(|t| t.shape().to_vec()).collect();
    let compiled = engine.compiled(&shapes)?;
    let mut out = Vec::new();
    for _ in 0..opts.warmup {
        out = engine.run(&w.inputs)?;
    }
    let mut times: Vec<Duration> = Vec::with_capacity(opts.iters);
    for _ in 0..opts.iters.max(1) {
        let t0 = Instant::now();
        out = engine.run(&w.inputs)?;
        times.push(t0.elapsed());
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let median = ms(times[times.len() / 2]);
    let gflops = w.flops as f64 / (median * 1e-3) / 1e9;
    // The small workloads are checked against the reference evaluator.
    let max_rel_error = if w.flops < 300_000_000 && !matches!(name, "resnet18" | "mobilenet_v2") {
        let want = strata_dialects::interp::run(&w.ctx, w.module, "main", &w.inputs)
            .map_err(|e| Error::Compile(e.to_string()))?;
        Some(max_rel_error(&want, &out))
    } else {
        None
    };
    let exe = compiled.executable();
    let peak_gflops = peak.map_or(0.0, |p| p * opts.threads as f64);
    Ok(BenchReport {
        workload: name.to_string(),
        layout,
        threads: opts.threads,
        iters: times.len(),
        median_ms: median,
        min_ms: ms(times[0]),
        max_ms: ms(times[times.len() - 1]),
        flops: w.flops,
        gflops,
        peak_gflops,
        peak_pct: if peak_gflops > 0.0 { 100.0 * gflops / peak_gflops } else { 0.0 },
        kernels: exe.steps().len(),
        lower_ms: ms(compiled.times.lower),
        codegen_ms: ms(compiled.times.codegen),
        compile_ms: ms(compiled.times.total()),
        arena_bytes: exe.plan().arena_bytes,
        arena_lower_bound: exe.plan().lower_bound,
        arena_ratio: exe.plan().ratio(),
        max_rel_error,
    })
}

/// The largest `|a - b| / max(|a|, 1)` over all outputs (∞ on a shape mismatch).
pub fn max_rel_error(want: &[TensorData], got: &[TensorData]) -> f64 {
    let mut worst = 0.0f64;
    for (w, g) in want.iter().zip(got) {
        if w.shape() != g.shape() {
            return f64::INFINITY;
        }
        for (a, b) in w.to_f64_vec().iter().zip(g.to_f64_vec()) {
            let e = (a - b).abs() / a.abs().max(1.0);
            worst = if e.is_nan() { f64::INFINITY } else { worst.max(e) };
        }
    }
    if want.len() != got.len() { f64::INFINITY } else { worst }
}
