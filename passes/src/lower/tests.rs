//! Differential tests of the lowering: each module is run by the graph
//! reference interpreter and, after `lower-graph-to-loops`, by the loops
//! interpreter on the same seeded random inputs.

use strata_ir::pass::PassManager;
use strata_ir::{ParseOptions, PrintOptions, Source, VerifyOptions, parse_module, print_module, verify};

/// Lowers `src` (a module with function `@main`) with `pipeline` (normally
/// `lower-graph-to-loops`), checks the loops program against the graph
/// interpreter on random inputs (relative tolerance `tol`), and returns the
/// printed loops module.
pub(crate) fn check_lowering_with(pipeline: &str, src: &str, tol: f64) -> String {
    let mut ctx = strata_dialects::context();
    let m = parse_module(&mut ctx, &Source::new("test.strata", src), &ParseOptions::default())
        .unwrap_or_else(|e| panic!("{e}"));
    verify(&ctx, m, VerifyOptions::default()).expect("input verifies");
    let inputs = crate::check::random_inputs(&ctx, m, "main", 7).expect("random inputs");
    let want = strata_dialects::interp::run(&ctx, m, "main", &inputs).expect("graph reference runs");
    let reg = crate::registry();
    let mut pm = PassManager::parse(&reg, pipeline).unwrap_or_else(|e| panic!("{e}"));
    pm.instrumentation.verify_each = true;
    pm.run(&mut ctx, m).unwrap_or_else(|e| panic!("{e}"));
    let text = print_module(&ctx, m, &PrintOptions::default());
    let got = strata_dialects::loops::interp::run_program(&ctx, m, "main", &inputs)
        .unwrap_or_else(|e| panic!("loops interpreter: {e}\n{text}"));
    assert_eq!(want.len(), got.len());
    for (i, (w, g)) in want.iter().zip(&got).enumerate() {
        assert_eq!(w.shape(), g.shape(), "output #{i} shape");
        assert_eq!(w.elem(), g.elem(), "output #{i} element type");
    }
    crate::check::compare_within(&want, &got, tol).unwrap_or_else(|e| panic!("outputs differ: {e}\n{text}"));
    text
}

/// [`check_lowering_with`] for the plain lowering pass.
pub(crate) fn check_lowering(src: &str, tol: f64) -> String {
    check_lowering_with("lower-graph-to-loops", src, tol)
}

#[test]
fn elementwise_chain_fuses_into_one_kernel() {
    let text = check_lowering(
        "func @main(%x: tensor<2x3x5xf32>, %y: tensor<2x3x5xf32>, %b: tensor<1x3x1xf32>) -> tensor<2x3x5xf32> {
  %0 = graph.elemwise(%x, %y) {mode = \"mul\"} : (tensor<2x3x5xf32>, tensor<2x3x5xf32>) -> tensor<2x3x5xf32>
  %1 = graph.elemwise(%0, %b) {mode = \"add\"} : (tensor<2x3x5xf32>, tensor<1x3x1xf32>) -> tensor<2x3x5xf32>
  %2 = graph.elemwise(%1) {mode = \"sigmoid\"} : (tensor<2x3x5xf32>) -> tensor<2x3x5xf32>
  return(%2)
}",
        1e-5,
    );
    assert_eq!(text.matches("loops.launch").count(), 1, "{text}");
}

#[test]
fn unfused_lowering_gives_one_kernel_per_op() {
    let text = check_lowering_with(
        "lower-graph-to-loops{fuse=false}",
        "func @main(%x: tensor<8x8xf32>) -> tensor<8x8xf32> {
  %0 = graph.elemwise(%x) {mode = \"relu\"} : (tensor<8x8xf32>) -> tensor<8x8xf32>
  %1 = graph.elemwise(%0, %x) {mode = \"add\"} : (tensor<8x8xf32>, tensor<8x8xf32>) -> tensor<8x8xf32>
  return(%1)
}",
        1e-6,
    );
    assert_eq!(text.matches("loops.launch").count(), 2, "{text}");
}

#[test]
fn every_elementwise_mode_matches_the_reference() {
    for mode in ["relu", "sigmoid", "tanh", "exp", "abs", "neg", "floor", "ceil", "round", "h_swish", "gelu", "expm1"] {
        check_lowering(
            &format!(
                "func @main(%x: tensor<3x7xf32>) -> tensor<3x7xf32> {{
  %0 = graph.elemwise(%x) {{mode = \"{mode}\"}} : (tensor<3x7xf32>) -> tensor<3x7xf32>
  return(%0)
}}"
            ),
            1e-5,
        );
    }
    for mode in [
        "add",
        "sub",
        "mul",
        "div",
        "max",
        "min",
        "floor_div",
        "fuse_add_relu",
        "fuse_add_sigmoid",
        "fuse_add_h_swish",
        "log_sum_exp",
    ] {
        check_lowering(
            &format!(
                "func @main(%x: tensor<3x7xf32>, %y: tensor<7xf32>) -> tensor<3x7xf32> {{
  %0 = graph.elemwise(%x, %y) {{mode = \"{mode}\"}} : (tensor<3x7xf32>, tensor<7xf32>) -> tensor<3x7xf32>
  return(%0)
}}"
            ),
            1e-5,
        );
    }
}

#[test]
fn constants_fold_and_reshapes_are_views() {
    let text = check_lowering(
        "func @main(%x: tensor<2x6xf32>) -> tensor<3x4xf32> {
  %c = graph.const() {value = dense<2.0> : tensor<1xf32>} : () -> tensor<1xf32>
  %d = graph.elemwise(%c, %c) {mode = \"mul\"} : (tensor<1xf32>, tensor<1xf32>) -> tensor<1xf32>
  %0 = graph.reshape(%x) {shape = [3, 4]} : (tensor<2x6xf32>) -> tensor<3x4xf32>
  %1 = graph.elemwise(%0, %d) {mode = \"mul\"} : (tensor<3x4xf32>, tensor<1xf32>) -> tensor<3x4xf32>
  return(%1)
}",
        1e-6,
    );
    assert!(text.contains("loops.view"), "{text}");
    assert_eq!(text.matches("loops.constant").count(), 1, "{text}");
}

#[test]
fn fused_dimshuffles_are_strided_views_read_by_the_elementwise_kernel() {
    let src = "func @main(%x: tensor<2x3x5xf32>, %y: tensor<5x2x3xf32>) -> tensor<5x2x3xf32> {
  %0 = graph.dimshuffle(%x) {pattern = [2, 0, 1]} : (tensor<2x3x5xf32>) -> tensor<5x2x3xf32>
  %1 = graph.elemwise(%0, %y) {mode = \"add\"} : (tensor<5x2x3xf32>, tensor<5x2x3xf32>) -> tensor<5x2x3xf32>
  %2 = graph.dimshuffle(%x) {pattern = [0, 1, -1, 2]} : (tensor<2x3x5xf32>) -> tensor<2x3x1x5xf32>
  %3 = graph.elemwise(%2) {mode = \"relu\"} : (tensor<2x3x1x5xf32>) -> tensor<2x3x1x5xf32>
  %4 = graph.reshape(%3) {shape = [5, 2, 3]} : (tensor<2x3x1x5xf32>) -> tensor<5x2x3xf32>
  %5 = graph.elemwise(%1, %4) {mode = \"mul\"} : (tensor<5x2x3xf32>, tensor<5x2x3xf32>) -> tensor<5x2x3xf32>
  return(%5)
}";
    let fused = check_lowering_with("lower-graph-to-loops{fuse-dimshuffle=true}", src, 1e-6);
    assert!(fused.contains("strides"), "{fused}");
    assert!(!fused.contains("_dimshuffle"), "no dimshuffle kernel: {fused}");
    let plain = check_lowering(src, 1e-6);
    assert_eq!(plain.matches("_dimshuffle").count(), 2 * 2, "{plain}");
}

#[test]
fn fused_reductions_compute_their_elementwise_producer_inline() {
    let src = "func @main(%x: tensor<3x5x9xf32>, %y: tensor<9xf32>) -> (tensor<3x9xf32>, tensor<3x5xf32>) {
  %0 = graph.elemwise(%x, %y) {mode = \"sub\"} : (tensor<3x5x9xf32>, tensor<9xf32>) -> tensor<3x5x9xf32>
  %1 = graph.elemwise(%0, %0) {mode = \"mul\"} : (tensor<3x5x9xf32>, tensor<3x5x9xf32>) -> tensor<3x5x9xf32>
  %2 = graph.elemwise(%1) {mode = \"exp\"} : (tensor<3x5x9xf32>) -> tensor<3x5x9xf32>
  %3 = graph.reduce(%2) {axis = 1, keepdim = false, mode = \"sum\"} : (tensor<3x5x9xf32>) -> tensor<3x9xf32>
  %4 = graph.elemwise(%x) {mode = \"abs\"} : (tensor<3x5x9xf32>) -> tensor<3x5x9xf32>
  %5 = graph.reduce(%4) {axis = 2, keepdim = false, mode = \"max\"} : (tensor<3x5x9xf32>) -> tensor<3x5xf32>
  %6 = graph.elemwise(%5) {mode = \"relu\"} : (tensor<3x5xf32>) -> tensor<3x5xf32>
  return(%3, %6)
}";
    let fused = check_lowering_with("lower-graph-to-loops{fuse-reduce=true}", src, 1e-5);
    assert_eq!(fused.matches("loops.launch").count(), 3, "the sub/mul chain, two reductions: {fused}");
    let plain = check_lowering(src, 1e-5);
    assert_eq!(plain.matches("loops.launch").count(), 5, "{plain}");
}

#[test]
fn conversions_between_every_float_width_match_the_reference() {
    check_lowering(
        "func @main(%x: tensor<3x7xf32>) -> (tensor<3x7xf32>, tensor<3x7xf32>, tensor<3x7xi32>) {
  %0 = graph.typecvt(%x) {dtype = bf16} : (tensor<3x7xf32>) -> tensor<3x7xbf16>
  %1 = graph.typecvt(%0) {dtype = f32} : (tensor<3x7xbf16>) -> tensor<3x7xf32>
  %2 = graph.typecvt(%x) {dtype = f16} : (tensor<3x7xf32>) -> tensor<3x7xf16>
  %3 = graph.typecvt(%2) {dtype = f32} : (tensor<3x7xf16>) -> tensor<3x7xf32>
  %4 = graph.typecvt(%x) {dtype = i32} : (tensor<3x7xf32>) -> tensor<3x7xi32>
  return(%1, %3, %4)
}",
        0.0,
    );
}

#[test]
fn quantised_max_and_min_reductions_match_the_reference() {
    for (ty, mode, axis) in
        [("qs8<0.5>", "max", 1), ("qs8<0.5>", "min", 2), ("qu8<0.25, 128>", "max", 2), ("qu8<0.25, 128>", "min", 0)]
    {
        let shape_out = match axis {
            0 => "5x9",
            1 => "3x9",
            _ => "3x5",
        };
        let src = format!(
            "func @main(%x: tensor<3x5x9xf32>) -> tensor<{shape_out}xf32> {{
  %0 = graph.typecvt(%x) {{dtype = {ty}}} : (tensor<3x5x9xf32>) -> tensor<3x5x9x{ty}>
  %1 = graph.reduce(%0) {{axis = {axis}, keepdim = false, mode = \"{mode}\"}} : (tensor<3x5x9x{ty}>) -> tensor<{shape_out}x{ty}>
  %2 = graph.typecvt(%1) {{dtype = f32}} : (tensor<{shape_out}x{ty}>) -> tensor<{shape_out}xf32>
  return(%2)
}}"
        );
        check_lowering(&src, 0.0);
    }
}

/// Regression (found by the `jit_vs_reference` fuzz target): `log_sum_exp` of
/// two -inf is -inf, as in the reference, not NaN from `-inf - -inf`.
#[test]
fn log_sum_exp_of_infinities_matches_the_reference() {
    let src = "func @main(%x: tensor<4xf32>) -> tensor<4xf32> {
  %y = graph.elemwise(%x, %x) {mode = \"log_sum_exp\"} : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
  return(%y)
}";
    let mut ctx = strata_dialects::context();
    let m = parse_module(&mut ctx, &Source::new("t", src), &ParseOptions::default()).unwrap();
    let x = strata_ir::TensorData::from_f32(vec![4], &[f32::NEG_INFINITY, f32::INFINITY, 0.0, 1.0]);
    let want = strata_dialects::interp::run(&ctx, m, "main", std::slice::from_ref(&x)).unwrap();
    let reg = crate::registry();
    PassManager::parse(&reg, "lower-graph-to-loops").unwrap().run(&mut ctx, m).unwrap();
    let got = strata_dialects::loops::interp::run_program(&ctx, m, "main", std::slice::from_ref(&x)).unwrap();
    let (w, g) = (want[0].to_f32_vec(), got[0].to_f32_vec());
    assert_eq!(w[0], f32::NEG_INFINITY);
    for (a, b) in w.iter().zip(&g) {
        assert!(a == b || (a.is_nan() && b.is_nan()) || (a - b).abs() < 1e-6, "{w:?} vs {g:?}");
    }
}
