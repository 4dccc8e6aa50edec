//! Measured floating-point peak of Cranelift code on this machine.
//!
//! Kernel efficiency is reported against this number rather than a datasheet figure: it is what
//! 128-bit Cranelift code can reach here. [`fma_chain_function`] builds a loop of
//! [`CHAINS`] independent `f32x4` accumulator chains held in registers (block parameters),
//! unrolled [`UNROLL`] times, each step `acc = fma(acc, a, b)` (or `fmul` + `fadd` when the ISA
//! has no native FMA); [`measure_fma_peak`] JIT-compiles it for the host, sizes the iteration
//! count to the requested time, and keeps the best of several trials.

// Calling the JIT-compiled benchmark needs a transmute from a code pointer to a function type.
#![allow(unsafe_code)]

use std::fmt;
use std::time::{Duration, Instant};

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{AbiParam, BlockArg, Function, InstBuilder, Signature, UserFuncName, Value, types};
use cranelift_codegen::isa::TargetIsa;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};

use crate::error::Result;
use crate::isa::{IsaConfig, has_fma};
use crate::jit::JitBuilder;
use crate::module::KernelModule;

/// Independent accumulator chains (enough to hide FMA latency on two pipes; 12 + 2 constants
/// fit the 16 vector registers of x86-64 without spilling).
pub const CHAINS: usize = 12;
/// `f32` lanes per vector.
pub const LANES: usize = 4;
/// Steps of every chain per loop iteration.
pub const UNROLL: usize = 4;
/// Floating-point operations per loop iteration: a fused multiply-add (or a multiply and an
/// add) is 2 flops per lane.
pub const FLOPS_PER_ITERATION: u64 = (CHAINS * LANES * 2 * UNROLL) as u64;

const TRIALS: usize = 5;
const MULTIPLIER: f32 = 0.999_9;
const ADDEND: f32 = 1.0e-4;

/// Initial value of chain `k` (every lane).
fn initial(k: usize) -> f32 {
    0.5 + k as f32 * 0.01
}

/// The symbol of the benchmark function in the JIT.
const NAME: &str = "strata_fma_peak";

/// The signature of [`fma_chain_function`]: `fn(iters: i64) -> f32`.
pub fn fma_chain_signature(isa: &dyn TargetIsa) -> Signature {
    let mut sig = Signature::new(isa.default_call_conv());
    sig.params.push(AbiParam::new(types::I64));
    sig.returns.push(AbiParam::new(types::F32));
    sig
}

/// `fn(iters: i64) -> f32`: runs `iters` iterations (none if `iters <= 0`) of [`UNROLL`] steps
/// of `acc_k = fma(acc_k, 0.9999, 1e-4)` on [`CHAINS`] `f32x4` accumulators, then returns the
/// sum of all lanes of all accumulators so the work is not dead. Uses `fmul` + `fadd` instead
/// of `fma` when [`has_fma`] is false for `isa`.
pub fn fma_chain_function(isa: &dyn TargetIsa) -> Function {
    let fused = has_fma(isa);
    let mut func = Function::with_name_signature(UserFuncName::default(), fma_chain_signature(isa));
    let mut fctx = FunctionBuilderContext::new();
    let mut b = FunctionBuilder::new(&mut func, &mut fctx);
    let entry = b.create_block();
    let body = b.create_block();
    let exit = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.append_block_param(body, types::I64);
    for _ in 0..CHAINS {
        b.append_block_param(body, types::F32X4);
        b.append_block_param(exit, types::F32X4);
    }

    b.switch_to_block(entry);
    let iters = b.block_params(entry)[0];
    let splat = |b: &mut FunctionBuilder<'_>, x: f32| {
        let s = b.ins().f32const(x);
        b.ins().splat(types::F32X4, s)
    };
    let mul = splat(&mut b, MULTIPLIER);
    let add = splat(&mut b, ADDEND);
    let init: Vec<Value> = (0..CHAINS).map(|k| splat(&mut b, initial(k))).collect();
    let positive = b.ins().icmp_imm_s(IntCC::SignedGreaterThan, iters, 0);
    let body_args: Vec<BlockArg> = std::iter::once(iters).chain(init.iter().copied()).map(BlockArg::Value).collect();
    let exit_args: Vec<BlockArg> = init.iter().copied().map(BlockArg::Value).collect();
    b.ins().brif(positive, body, &body_args, exit, &exit_args);

    b.switch_to_block(body);
    let params = b.block_params(body).to_vec();
    let counter = params[0];
    let mut accs = params[1..].to_vec();
    for _ in 0..UNROLL {
        for acc in accs.iter_mut() {
            *acc = if fused {
                b.ins().fma(*acc, mul, add)
            } else {
                let p = b.ins().fmul(*acc, mul);
                b.ins().fadd(p, add)
            };
        }
    }
    let next = b.ins().iadd_imm_s(counter, -1);
    let more = b.ins().icmp_imm_s(IntCC::SignedGreaterThan, next, 0);
    let body_args: Vec<BlockArg> = std::iter::once(next).chain(accs.iter().copied()).map(BlockArg::Value).collect();
    let exit_args: Vec<BlockArg> = accs.iter().copied().map(BlockArg::Value).collect();
    b.ins().brif(more, body, &body_args, exit, &exit_args);

    b.switch_to_block(exit);
    let accs = b.block_params(exit).to_vec();
    let mut total = accs[0];
    for &acc in &accs[1..] {
        total = b.ins().fadd(total, acc);
    }
    let mut sink = b.ins().extractlane(total, 0);
    for lane in 1..LANES as u8 {
        let x = b.ins().extractlane(total, lane);
        sink = b.ins().fadd(sink, x);
    }
    b.ins().return_(&[sink]);
    b.seal_all_blocks();
    b.finalize(isa.frontend_config());
    func
}

/// What [`fma_chain_function`] returns for `iters`, computed in Rust (bit-exact).
pub fn fma_chain_reference(iters: i64, fused: bool) -> f32 {
    let mut accs: Vec<f32> = (0..CHAINS).map(initial).collect();
    for _ in 0..iters.max(0) {
        for _ in 0..UNROLL {
            for acc in accs.iter_mut() {
                *acc = if fused { acc.mul_add(MULTIPLIER, ADDEND) } else { *acc * MULTIPLIER + ADDEND };
            }
        }
    }
    // Every lane of a chain holds the same value.
    let total = accs[1..].iter().fold(accs[0], |t, a| t + a);
    (1..LANES).fold(total, |s, _| s + total)
}

/// The result of [`measure_fma_peak`].
#[derive(Clone, Debug, PartialEq)]
pub struct PeakReport {
    /// Best measured rate, in 10^9 floating-point operations per second (one thread).
    pub gflops: f64,
    /// Whether the loop used native `fma` (false: `fmul` + `fadd`, e.g. `has_fma` disabled).
    pub used_fma: bool,
    /// Cranelift's name of the ISA (`x64`, `aarch64`).
    pub isa: String,
    /// Loop iterations per trial.
    pub iterations: u64,
    /// Floating-point operations per loop iteration ([`FLOPS_PER_ITERATION`]).
    pub flops_per_iteration: u64,
    /// How many timed trials ran (the best counts).
    pub trials: usize,
    /// Duration of the best trial.
    pub best_time: Duration,
    /// Time Cranelift took to compile the benchmark.
    pub compile_time: Duration,
}

impl PeakReport {
    /// The instruction sequence measured: `"fma"` or `"fmul+fadd"`.
    pub fn instruction(&self) -> &'static str {
        if self.used_fma { "fma" } else { "fmul+fadd" }
    }
}

impl fmt::Display for PeakReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:.1} GFLOP/s f32x4 {} peak on {} ({} chains x {} lanes, best of {} trials of {} iterations, {:.3} ms)",
            self.gflops,
            self.instruction(),
            self.isa,
            CHAINS,
            LANES,
            self.trials,
            self.iterations,
            self.best_time.as_secs_f64() * 1e3,
        )
    }
}

/// Measures the host's single-thread `f32x4` FMA throughput with default settings, spending
/// roughly `min_time` in timed runs (plus calibration).
pub fn measure_fma_peak(min_time: Duration) -> Result<PeakReport> {
    measure_fma_peak_with(&IsaConfig::host(), min_time)
}

/// As [`measure_fma_peak`], for a host ISA configured by `config` (e.g. with `has_fma`
/// disabled to measure the `fmul` + `fadd` fallback).
pub fn measure_fma_peak_with(config: &IsaConfig, min_time: Duration) -> Result<PeakReport> {
    type Bench = extern "C" fn(i64) -> f32;

    let mut jit = JitBuilder::new(config)?;
    let used_fma = has_fma(jit.isa());
    let isa = jit.isa().name().to_string();
    let id = jit.declare_function(NAME, &fma_chain_signature(jit.isa()))?;
    let func = fma_chain_function(jit.isa());
    let compile_time = jit.define_function(id, func)?;
    let code = jit.finalize()?;
    let ptr = code.get(NAME).expect("the benchmark was defined");
    // SAFETY: `ptr` is the finalized entry of `fma_chain_function`, whose signature is
    // (i64) -> f32 in the host's C calling convention; it touches no memory, and `code`
    // outlives every call below.
    let bench: Bench = unsafe { std::mem::transmute::<*const u8, Bench>(ptr) };
    let time = |iters: i64| {
        let start = Instant::now();
        let sink = bench(std::hint::black_box(iters));
        let elapsed = start.elapsed();
        std::hint::black_box(sink);
        elapsed
    };

    // Calibrate: grow the iteration count until one run lasts a trial's share of `min_time`.
    let per_trial = (min_time / TRIALS as u32).max(Duration::from_micros(200));
    let mut iters: i64 = 1 << 10;
    loop {
        let t = time(iters);
        if t >= per_trial || iters >= 1 << 40 {
            break;
        }
        let scale = if t.is_zero() { 16.0 } else { (per_trial.as_secs_f64() / t.as_secs_f64() * 1.1).clamp(1.5, 16.0) };
        iters = (iters as f64 * scale) as i64;
    }

    let best_time = (0..TRIALS).map(|_| time(iters)).min().expect("TRIALS > 0").max(Duration::from_nanos(1));
    let total_flops = iters as f64 * FLOPS_PER_ITERATION as f64;
    Ok(PeakReport {
        gflops: total_flops / best_time.as_secs_f64() / 1e9,
        used_fma,
        isa,
        iterations: iters as u64,
        flops_per_iteration: FLOPS_PER_ITERATION,
        trials: TRIALS,
        best_time,
        compile_time,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_chain(config: &IsaConfig, iters: i64) -> (f32, bool) {
        let mut jit = JitBuilder::new(config).unwrap();
        let fused = has_fma(jit.isa());
        let id = jit.declare_function("chain", &fma_chain_signature(jit.isa())).unwrap();
        let func = fma_chain_function(jit.isa());
        jit.define_function(id, func).unwrap();
        let code = jit.finalize().unwrap();
        type Bench = extern "C" fn(i64) -> f32;
        // SAFETY: `chain` is (i64) -> f32 in the C convention and touches no memory.
        let f: Bench = unsafe { std::mem::transmute::<*const u8, Bench>(code.get("chain").unwrap()) };
        (f(iters), fused)
    }

    #[test]
    fn chain_function_computes_the_reference_sum() {
        for iters in [0, 1, 7, 1000] {
            let (got, fused) = run_chain(&IsaConfig::host(), iters);
            assert_eq!(got, fma_chain_reference(iters, fused), "iters = {iters}");
        }
        let (got, fused) = run_chain(&IsaConfig::host().disabling("has_fma"), 100);
        if cfg!(target_arch = "x86_64") {
            assert!(!fused);
        }
        assert_eq!(got, fma_chain_reference(100, fused));
    }

    #[test]
    fn peak_is_positive_and_finite() {
        let report = measure_fma_peak(Duration::from_millis(20)).unwrap();
        assert!(report.gflops.is_finite() && report.gflops > 0.0, "{report}");
        assert_eq!(report.trials, TRIALS);
        assert_eq!(report.flops_per_iteration, 12 * 4 * 2 * UNROLL as u64);
        assert!(report.to_string().contains("GFLOP/s"));
        println!("{report}");
    }
}
