//! The JIT against the reference evaluator on the whole zoo: every model at
//! opt levels 0–3 and, at level 2, in every layout the `nchwxx` pass applies to
//! f32 models, gives the reference outputs of the unoptimised graph on the same
//! random input (relative error ≤ 1e-3: batch-norm folding moves f32
//! rounding, see docs/eqsat.md; fusion and lowering alone stay ≤ 1e-4; resnet50,
//! whose random-weight activations grow to ~10^3 over 50 layers, ≤ 3e-3, because
//! the kernels accumulate in f32 with FMA where the reference accumulates in
//! f64). Also:
//! kernel threads, shape-keyed recompilation, the memory plan, profiles.

use strata::dialects::interp;
use strata::ir::{Context, OpId, TensorData};
use strata::{Engine, JitEngine, JitOptions, Tensor, TraceOptions, trace, zoo};

/// The traced graph of zoo model `name` at `opt_level` (static shapes,
/// spatial size `size` for image models) and a seeded input.
fn graph(name: &str, opt_level: i64, size: usize) -> (Context, OpId, TensorData) {
    let model = zoo::build(name, 5).unwrap();
    let mut shape = model.input_shape_for(1);
    if shape.len() == 4 && shape[2] == 224 {
        shape[2] = size;
        shape[3] = size;
    }
    let x = if model.input_elem == strata::ElemType::U8 {
        Tensor::from_data(TensorData::random_uniform(strata::ElemType::U8, shape, 0.0, 256.0, 9).unwrap()).unwrap()
    } else {
        Tensor::uniform(&shape, -1.0, 1.0, 9).unwrap()
    };
    let opts = TraceOptions { record_only: true, symbolic_shape: false, opt_level, ..TraceOptions::default() };
    let mut t = trace(|a: &[Tensor]| model.forward(&a[0]), opts).unwrap();
    t.call::<Tensor, strata::Error>(std::slice::from_ref(&x)).unwrap();
    t.compile().unwrap();
    let (ctx, m) = t.compiled_module().unwrap();
    (ctx.clone(), m, x.data().unwrap())
}

fn tolerance(name: &str) -> f64 {
    if name == "resnet50" { 3e-3 } else { 1e-3 }
}

fn max_rel(want: &[TensorData], got: &[TensorData]) -> f64 {
    strata::bench::max_rel_error(want, got)
}

fn jit_run(ctx: &Context, m: OpId, x: &TensorData, threads: usize) -> Vec<TensorData> {
    let e = JitEngine::new(ctx, m, "main", JitOptions { threads, ..Default::default() }).unwrap();
    e.run(std::slice::from_ref(x)).unwrap_or_else(|err| panic!("{err}"))
}

const MODELS: &[(&str, usize)] = &[
    ("mlp", 0),
    ("lenet", 0),
    ("resblock", 0),
    ("preprocess_net", 0),
    ("resnet18", 32),
    ("mobilenet_v2", 32),
    ("resnet50", 32),
];

#[test]
fn every_zoo_model_at_every_opt_level_matches_the_reference() {
    for &(name, size) in MODELS {
        let (ctx0, m0, x) = graph(name, 0, size);
        let want = interp::run(&ctx0, m0, "main", std::slice::from_ref(&x)).unwrap();
        for level in 0..=3 {
            let (ctx, m, _) = graph(name, level, size);
            let got = jit_run(&ctx, m, &x, 1);
            let err = max_rel(&want, &got);
            assert!(err <= tolerance(name), "{name} at -O{level}: JIT differs from the reference by {err:.3e}");
            eprintln!("{name} -O{level}: max relative error {err:.2e}");
        }
    }
}

#[test]
fn every_applicable_layout_matches_the_reference() {
    for &(name, size) in MODELS {
        let (ctx0, m0, x) = graph(name, 2, size);
        let want = interp::run(&ctx0, m0, "main", std::slice::from_ref(&x)).unwrap();
        for layout in ["nchw88", "nchw44", "nchw44_dot", "nhwcd4"] {
            let mut ctx = ctx0.clone();
            let mut opts = strata::InferenceOptions::default();
            let key = if layout == "nhwcd4" { "enable_hwcd4".to_string() } else { format!("enable_{layout}") };
            opts.set(&key, true).unwrap();
            let pipeline = strata::dump::option_pipeline(&opts).unwrap();
            let config = strata::driver::OptConfig { pipeline: Some(pipeline), ..Default::default() };
            match strata::driver::optimize(&mut ctx, m0, &config) {
                Ok(_) => {}
                Err(strata::driver::DriverError::Pass(strata::ir::pass::PassError::Unsupported { .. })) => continue,
                Err(e) => panic!("{name} {layout}: {e}"),
            }
            let got = jit_run(&ctx, m0, &x, 1);
            let err = max_rel(&want, &got);
            assert!(err <= tolerance(name), "{name} in {layout}: JIT differs from the reference by {err:.3e}");
            eprintln!("{name} {layout}: max relative error {err:.2e}");
        }
    }
}

#[test]
fn kernel_threads_give_the_same_result() {
    let (ctx, m, x) = graph("resblock", 2, 0);
    let one = jit_run(&ctx, m, &x, 1);
    let two = jit_run(&ctx, m, &x, 2);
    let three = jit_run(&ctx, m, &x, 3);
    assert_eq!(max_rel(&one, &two), 0.0);
    assert_eq!(max_rel(&one, &three), 0.0);
}

#[test]
fn new_input_shapes_compile_once_each_and_the_plan_is_tight() {
    // A symbolic batch: each batch size is its own specialisation.
    let model = zoo::build("lenet", 1).unwrap();
    let opts = TraceOptions { capture_as_const: true, ..TraceOptions::default() };
    let mut t = trace(|a: &[Tensor]| model.forward(&a[0]), opts).unwrap();
    let x1 = model.random_input(1, 2).unwrap();
    t.call::<Tensor, strata::Error>(std::slice::from_ref(&x1)).unwrap();
    t.compile().unwrap();
    let (ctx, m) = t.compiled_module().unwrap();
    let e = JitEngine::new(ctx, m, "main", JitOptions::default()).unwrap();
    for batch in [1, 3, 1, 3] {
        let x = model.random_input(batch, 7).unwrap().data().unwrap();
        let want = interp::run(ctx, m, "main", std::slice::from_ref(&x)).unwrap();
        let got = e.run(std::slice::from_ref(&x)).unwrap();
        assert!(max_rel(&want, &got) <= 1e-4, "batch {batch}");
        let c = e.compiled(&[x.shape().to_vec()]).unwrap();
        assert!(c.executable().plan().ratio() <= 1.05, "arena {:?}", c.executable().plan());
    }
}

#[test]
fn traced_replays_and_profiles_use_the_jit() {
    let model = zoo::build("resblock", 3).unwrap();
    let opts = TraceOptions { capture_as_const: true, profiling: true, ..TraceOptions::default() };
    assert_eq!(opts.engine, Engine::Jit);
    let mut t = trace(|a: &[Tensor]| model.forward(&a[0]), opts).unwrap();
    let x = model.random_input(1, 4).unwrap();
    let eager: Tensor = t.call(std::slice::from_ref(&x)).unwrap();
    let replay: Tensor = t.call(std::slice::from_ref(&x)).unwrap();
    let err = max_rel(&[eager.data().unwrap()], &[replay.data().unwrap()]);
    assert!(err <= 1e-4, "replay differs from eager by {err:.3e}");
    let p = t.get_profile().unwrap();
    assert_eq!(p.engine, "jit");
    assert_eq!(p.runs, 1);
    assert!(!p.ops.is_empty() && p.ops.iter().all(|o| o.calls == 1 && o.op.contains("_k")), "{:?}", p.ops);
    assert!(p.to_json().contains("\"engine\": \"jit\""));
}
