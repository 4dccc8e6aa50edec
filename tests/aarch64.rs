//! aarch64 end to end: graphs converted to NCHW44 (the ARM blocked layout), lowered, emitted
//! as an aarch64 object by Cranelift ([`strata::aot::cross_compile`]), linked with the
//! generated C harness by `aarch64-linux-gnu-gcc` and run under `qemu-aarch64` on seeded random
//! inputs. Each run's outputs are compared with the reference evaluator and with the host JIT
//! on the same graph (largest `|a - b| / max(|a|, 1)` at most 1e-4: the aarch64 code contracts
//! multiply-adds into FMAs and accumulates in f32 where the reference computes in f64 and rounds once).
//!
//! Cases: an elementwise-and-pooling program (no convolution), a single NCHW44 `conv_bias` 3×3
//! with an elementwise add fused as its epilogue, and whole zoo models (`resblock`, `lenet`).
//!
//! Without the cross toolchain or emulator (`scripts/install-deps.sh` installs them) the tests
//! print "skipped: …" and pass, except under `CI`, where a missing tool fails them.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use strata::aot::{Aarch64Tools, AotProgram, Target, aarch64_tools, cross_compile};
use strata::bench::max_rel_error;
use strata::ir::{Context, OpId, TensorData};
use strata::{ConvParams, InferenceOptions, JitEngine, JitOptions, Nonlinearity, Tensor, TraceOptions, trace, zoo};

/// The comparison tolerance (relative, with absolute below magnitude 1).
const TOLERANCE: f64 = 1e-4;

/// The tools, or `None` after printing why the test is skipped; with `CI` set a missing tool
/// fails the test instead.
fn tools_or_skip() -> Option<Aarch64Tools> {
    match aarch64_tools() {
        Ok(tools) => Some(tools),
        Err(e) if std::env::var_os("CI").is_some() => panic!("{e}"),
        Err(e) => {
            println!("skipped: {e}");
            None
        }
    }
}

/// A fresh scratch directory, unique per process, test and call.
fn scratch_dir(name: &str) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("strata-aarch64-{name}-{}-{nanos}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// `f` traced on `inputs` (record only, static shapes) into a graph module with `@main`.
fn traced(f: impl FnMut(&[Tensor]) -> strata::Result<Tensor>, inputs: &[Tensor]) -> (Context, OpId) {
    let opts = TraceOptions { record_only: true, symbolic_shape: false, ..TraceOptions::default() };
    let mut t = trace(f, opts).expect("trace");
    t.call::<Tensor, strata::Error>(inputs).expect("traced call");
    t.compile().expect("compile the trace");
    let (ctx, m) = t.compiled_module().expect("a compiled module");
    (ctx.clone(), m)
}

/// Runs the `enable_nchw44` inference pipeline (with `fuse_conv_bias_nonlinearity`) on `module`.
fn convert_nchw44(ctx: &mut Context, module: OpId) {
    let mut opts = InferenceOptions::default();
    opts.set("enable_nchw44", true).expect("option");
    opts.set("enable_fuse_conv_bias_nonlinearity", true).expect("option");
    let pipeline = strata::dump::option_pipeline(&opts).expect("a pipeline");
    let config = strata::driver::OptConfig { pipeline: Some(pipeline), ..Default::default() };
    strata::driver::optimize(ctx, module, &config).expect("the nchw44 pipeline");
}

fn count_ops(ctx: &Context, module: OpId, name: &str) -> usize {
    ctx.walk(module).into_iter().filter(|&o| ctx.op_name(o) == name).count()
}

/// Cross-compiles `@main` of `module` for aarch64, runs it under qemu on `inputs` and checks
/// the outputs against the reference evaluator and the host JIT. Returns the program and the
/// largest error against the reference, or `None` when the tools are missing.
fn check_on_qemu(name: &str, ctx: &Context, module: OpId, inputs: &[TensorData]) -> Option<(AotProgram, f64)> {
    let tools = tools_or_skip()?;
    let shapes: Vec<Vec<usize>> = inputs.iter().map(|t| t.shape().to_vec()).collect();
    let aot = cross_compile(ctx, module, &shapes, Target::Aarch64).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(&aot.object[..4], b"\x7fELF", "{name}: not an ELF object");

    let dir = scratch_dir(name);
    let got = aot.run_under_qemu(&tools, &dir, inputs).unwrap_or_else(|e| panic!("{name}: {e}"));
    let want = strata::dialects::interp::run(ctx, module, "main", inputs).expect("reference evaluator");
    let jit = JitEngine::new(ctx, module, "main", JitOptions::default()).expect("jit engine");
    let host = jit.run(inputs).expect("host jit");

    assert_eq!(got.len(), want.len(), "{name}: output count");
    for (g, w) in got.iter().zip(&want) {
        assert_eq!((g.elem(), g.shape()), (w.elem(), w.shape()), "{name}: output type");
    }
    let err_ref = max_rel_error(&want, &got);
    let err_jit = max_rel_error(&host, &got);
    let err_host = max_rel_error(&want, &host);
    println!(
        "{name}: {} kernels, {} launches, object {} bytes, harness {} bytes; \
         qemu vs reference {err_ref:e}, qemu vs host JIT {err_jit:e}, host JIT vs reference {err_host:e}",
        aot.kernel_names().len(),
        count_ops(&aot.ctx, aot.module, "loops.launch"),
        aot.object.len(),
        aot.c_source.len(),
    );
    assert!(err_ref <= TOLERANCE, "{name}: qemu output differs from the reference by {err_ref:e}");
    assert!(err_jit <= TOLERANCE, "{name}: qemu output differs from the host JIT by {err_jit:e}");
    let _ = std::fs::remove_dir_all(&dir);
    Some((aot, err_ref))
}

fn data(t: &Tensor) -> TensorData {
    t.data().expect("tensor data")
}

#[test]
fn elementwise_and_pooling_run_under_qemu() {
    let a = Tensor::uniform(&[1, 8, 6, 6], -1.0, 1.0, 1).unwrap();
    let b = Tensor::uniform(&[1, 8, 6, 6], -1.0, 1.0, 2).unwrap();
    let (ctx, m) = traced(|t| t[0].add(&t[1])?.relu()?.max_pool2d(2, 2, 0), &[a.clone(), b.clone()]);
    let inputs = [data(&a), data(&b)];
    let Some((aot, _)) = check_on_qemu("elementwise", &ctx, m, &inputs) else { return };

    // The harness refuses input files of the wrong size and missing files (exit status 1).
    let tools = tools_or_skip().expect("found above");
    let dir = scratch_dir("elementwise-bad-input");
    std::fs::create_dir_all(&dir).unwrap();
    let mut short = aot.input_bytes(&inputs).unwrap();
    short.truncate(short.len() - 4);
    std::fs::write(dir.join("short.bin"), &short).unwrap();
    for (file, message) in [("short.bin", "shorter than the inputs"), ("missing.bin", "cannot open")] {
        let out = tools.link_and_run(&dir, &aot.object, &aot.c_source, &[file, "out.bin"]).unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{file}: {stderr}");
        assert!(stderr.contains(message), "{file}: {stderr}");
    }
    assert!(aot.input_bytes(&inputs[..1]).is_err(), "one input of two");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `relu(conv3x3(x) + bias) + x` on 1x8x10x10: after NCHW44 conversion the program is relayout,
/// one blocked `conv_bias` kernel with the add as its epilogue (reading the relayouted input),
/// relayout back.
#[test]
fn nchw44_conv_bias_3x3_with_add_epilogue_runs_under_qemu() {
    let w = Tensor::uniform(&[8, 8, 3, 3], -0.5, 0.5, 11).unwrap();
    let bias = Tensor::uniform(&[1, 8, 1, 1], -0.5, 0.5, 12).unwrap();
    let x = Tensor::uniform(&[1, 8, 10, 10], -1.0, 1.0, 13).unwrap();
    let (mut ctx, m) = traced(
        |t| t[0].conv_bias(&w, &bias, None, ConvParams::new(1, 1), Nonlinearity::Relu)?.add(&t[0]),
        std::slice::from_ref(&x),
    );
    convert_nchw44(&mut ctx, m);
    assert_eq!(count_ops(&ctx, m, "layout.conv_bias"), 1, "the conv converts to NCHW44");
    assert_eq!(count_ops(&ctx, m, "graph.conv_bias"), 0, "no NCHW conv is left");

    let Some((aot, _)) = check_on_qemu("conv3x3-nchw44", &ctx, m, &[data(&x)]) else { return };
    let kernels = aot.kernel_names();
    assert_eq!(kernels.iter().filter(|n| n.contains("conv_bias")).count(), 1, "one conv kernel: {kernels:?}");
    assert!(!kernels.iter().any(|n| n.contains("elemwise")), "the add is not fused into the conv: {kernels:?}");
}

/// Zoo model `name` at its default input shape, converted to NCHW44, on qemu.
fn zoo_model_runs_under_qemu(name: &str) {
    let model = zoo::build(name, 5).unwrap();
    let x = model.random_input(1, 7).unwrap();
    let (mut ctx, m) = traced(|t| model.forward(&t[0]), std::slice::from_ref(&x));
    convert_nchw44(&mut ctx, m);
    assert!(count_ops(&ctx, m, "layout.conv_bias") > 0, "{name}: no conv converted to NCHW44");
    check_on_qemu(name, &ctx, m, &[data(&x)]);
}

#[test]
fn resblock_nchw44_runs_under_qemu() {
    zoo_model_runs_under_qemu("resblock");
}

#[test]
fn lenet_nchw44_runs_under_qemu() {
    zoo_model_runs_under_qemu("lenet");
}
