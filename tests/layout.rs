//! NCHWxx conversion of zoo models: resnet18 and mobilenet_v2, traced and
//! compiled at the default opt level (conv_bias already fused), converted with
//! `padding-channel,nchwxx,cancel-relayouts,canonicalize,dce` for NCHW88 and
//! NCHW44, give the unconverted module's outputs (reference evaluator) within
//! 1e-4 (MegEngine's AssertEqual measure), and keep few relayouts. The same
//! for NHWCD4 (the only GPU layout that applies to these f32 models) and for
//! NCHW44_DOT (float convolutions fall back to NCHW44); the int8 GPU layouts
//! refuse them.

use strata::dialects::func::functions;
use strata::dialects::interp;
use strata::ir::pass::PassManager;
use strata::ir::{Context, OpId, TensorData, VerifyOptions, verify};
use strata::runtime::format::{ModelInfo, read_model, write_model};
use strata::{Tensor, TraceOptions, trace, zoo};

/// The compiled module of `name` (input 1x3x32x32) in a fresh context.
fn compiled(name: &str) -> (Context, OpId, TensorData) {
    let model = zoo::build(name, 3).unwrap();
    let opts = TraceOptions { capture_as_const: true, ..TraceOptions::default() };
    let mut traced = trace(|a: &[Tensor]| model.forward(&a[0]), opts).unwrap();
    let mut shape = model.input_shape_for(1);
    shape[2] = 32;
    shape[3] = 32;
    let x = Tensor::uniform(&shape, -1.0, 1.0, 11).unwrap();
    traced.call(std::slice::from_ref(&x)).unwrap();
    traced.call(std::slice::from_ref(&x)).unwrap();
    let (ctx, m) = traced.compiled_module().unwrap();
    let bytes = write_model(ctx, m, &ModelInfo::default()).unwrap();
    let mut fresh = strata::dialects::context();
    let (m2, _) = read_model(&bytes, &mut fresh).unwrap();
    (fresh, m2, x.data().unwrap())
}

fn run(ctx: &Context, m: OpId, x: &TensorData) -> Vec<TensorData> {
    let f = functions(ctx, m)[0];
    interp::run(ctx, m, f.name(ctx), std::slice::from_ref(x)).unwrap()
}

fn count(ctx: &Context, m: OpId, op: &str) -> usize {
    ctx.walk(m).into_iter().filter(|&o| ctx.op_name(o) == op).count()
}

/// Converts `name` with block `p`; returns (relayouts, converted convs, NCHW convs, max error).
fn convert(name: &str, p: u32) -> (usize, usize, usize, f64) {
    convert_with(name, &format!("padding-channel{{block={p}}},nchwxx{{block={p}}}"))
}

/// Runs `layout_passes` then `cancel-relayouts,canonicalize,dce` on `name`;
/// returns (relayouts, converted convs, NCHW convs, max error).
fn convert_with(name: &str, layout_passes: &str) -> (usize, usize, usize, f64) {
    let (mut ctx, m, x) = compiled(name);
    let expected = run(&ctx, m, &x);
    let reg = strata::passes::registry();
    // resnet18's 512x512x3x3 weights exceed canonicalize's default fold limit (2^20 elements).
    let pipeline = format!("{layout_passes},cancel-relayouts,canonicalize{{max-fold-elements=4194304}},dce");
    let mut pm = PassManager::parse(&reg, &pipeline).unwrap();
    pm.instrumentation.verify_each = true;
    pm.run(&mut ctx, m).unwrap();
    verify(&ctx, m, VerifyOptions::default()).unwrap();
    let got = run(&ctx, m, &x);
    let err = expected.iter().zip(&got).map(|(e, g)| strata::feed::assert_equal_error(e, g)).fold(0.0, f64::max);
    let with_z = ctx
        .walk(m)
        .into_iter()
        .filter(|&o| ctx.op_name(o) == "layout.conv_bias" && ctx.op(o).operands.len() == 4)
        .count();
    eprintln!("{name} {layout_passes}: {with_z} blocked conv_bias ops with z");
    // Every weight relayout was folded into a constant.
    assert_eq!(count(&ctx, m, "layout.weight"), 0, "{name}: layout.weight left after canonicalize");
    (count(&ctx, m, "layout.relayout"), count(&ctx, m, "layout.conv_bias"), count(&ctx, m, "graph.conv_bias"), err)
}

#[test]
fn resnet18_nchw88_relayouts_only_at_the_ends() {
    let (relayouts, blocked, plain, err) = convert("resnet18", 8);
    eprintln!("resnet18 nchw88: {relayouts} relayouts, {blocked} blocked convs, {plain} NCHW convs, error {err:e}");
    assert!(err <= 1e-4, "resnet18 nchw88 differs by {err}");
    assert_eq!(plain, 0, "every conv of resnet18 converts");
    // The first conv is hybrid (NCHW input), so the only relayout is the one
    // back to NCHW before the classifier.
    assert_eq!(relayouts, 1, "resnet18 nchw88 has {relayouts} relayouts");
}

#[test]
fn resnet18_nchw44() {
    let (relayouts, blocked, plain, err) = convert("resnet18", 4);
    eprintln!("resnet18 nchw44: {relayouts} relayouts, {blocked} blocked convs, {plain} NCHW convs, error {err:e}");
    assert!(err <= 1e-4, "resnet18 nchw44 differs by {err}");
}

#[test]
fn mobilenet_v2_nchw88_and_nchw44() {
    for p in [8, 4] {
        let (relayouts, blocked, plain, err) = convert("mobilenet_v2", p);
        eprintln!(
            "mobilenet_v2 block {p}: {relayouts} relayouts, {blocked} blocked convs, {plain} NCHW convs, error {err:e}"
        );
        assert!(err <= 1e-4, "mobilenet_v2 block {p} differs by {err}");
        assert_eq!((relayouts, plain), (1, 0), "mobilenet_v2 block {p}: every conv converts, one relayout");
    }
}

#[test]
fn nhwcd4_resnet18_and_mobilenet_v2() {
    for name in ["resnet18", "mobilenet_v2"] {
        let (relayouts, blocked, plain, err) = convert_with(name, "padding-channel{block=4},nchwxx{layout=nhwcd4}");
        eprintln!("{name} nhwcd4: {relayouts} relayouts, {blocked} blocked convs, {plain} NCHW convs, error {err:e}");
        assert!(err <= 1e-4, "{name} nhwcd4 differs by {err}");
        // The IC = 3 first conv stays NCHW (NHWCD4 has no hybrid form): one
        // relayout after it, one back to NCHW before the classifier.
        assert_eq!((relayouts, plain), (2, 1), "{name} nhwcd4");
    }
}

#[test]
fn nchw44_dot_on_a_float_model_is_nchw44() {
    let (relayouts, blocked, plain, err) =
        convert_with("resnet18", "padding-channel{block=4},nchwxx{layout=nchw44_dot}");
    eprintln!("resnet18 nchw44_dot: {relayouts} relayouts, {blocked} blocked convs, {plain} NCHW convs, error {err:e}");
    assert!(err <= 1e-4, "resnet18 nchw44_dot differs by {err}");
    assert_eq!((relayouts, plain), (1, 0), "resnet18 nchw44_dot converts like nchw44");
}

#[test]
fn int8_gpu_layouts_refuse_float_models() {
    for layout in ["nchw4", "nchw32", "chwn4", "nchw64"] {
        let (mut ctx, m, _) = compiled("resnet18");
        let reg = strata::passes::registry();
        // nchw64 is refused as an option (no 4-bit type); the others by the
        // module (no qs8 convolution).
        let err = match PassManager::parse(&reg, &format!("nchwxx{{layout={layout}}}")) {
            Ok(mut pm) => pm.run(&mut ctx, m).unwrap_err().to_string(),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(layout) && (err.contains("qs8") || err.contains("4-bit")), "{layout}: {err}");
        eprintln!("{layout}: {err}");
    }
}
