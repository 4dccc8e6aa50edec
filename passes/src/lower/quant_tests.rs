//! Differential tests of the quantised lowerings (convolutions, elementwise
//! ops, conversions, max pooling): the loops interpreter against the graph
//! reference, on random inputs spanning each type's whole range (the shared
//! helper's inputs lie in `[-2, 2)`, which never saturates an int8 result).

use strata_ir::pass::PassManager;
use strata_ir::{
    ElemType, ParseOptions, PrintOptions, Source, TensorData, TypeData, VerifyOptions, parse_module, print_module,
    verify,
};

/// The range random inputs of `elem` are drawn from.
fn range(elem: ElemType) -> (f64, f64) {
    match elem {
        ElemType::QS8(_) => (-128.0, 128.0),
        ElemType::QU8(..) => (0.0, 256.0),
        ElemType::QS32(_) => (-3000.0, 3000.0),
        _ => (-70.0, 70.0),
    }
}

/// Runs `src` (function `@main`) through `pipeline`, then compares the loops
/// interpreter with the graph reference on wide random inputs (seeded by
/// `seed`). Every output element must agree within `steps` quantisation
/// steps of its type (0: exactly); returns the printed loops module.
fn check_quant(pipeline: &str, src: &str, steps: f64, seed: u64) -> String {
    try_check_quant(pipeline, src, steps, seed).unwrap_or_else(|e| panic!("{e}"))
}

/// [`check_quant`], returning a failure of the pipeline as an error.
fn try_check_quant(pipeline: &str, src: &str, steps: f64, seed: u64) -> Result<String, String> {
    let mut ctx = strata_dialects::context();
    let m = parse_module(&mut ctx, &Source::new("test.strata", src), &ParseOptions::default())
        .unwrap_or_else(|e| panic!("{e}"));
    verify(&ctx, m, VerifyOptions::default()).expect("input verifies");
    let f = strata_dialects::func::functions(&ctx, m).into_iter().find(|f| f.name(&ctx) == "main").expect("@main");
    let (ins, _) = f.signature(&ctx);
    let inputs: Vec<TensorData> = ins
        .iter()
        .enumerate()
        .map(|(i, &ty)| {
            let TypeData::Tensor(t) = ctx.ty(ty) else { panic!("tensor inputs") };
            let shape: Vec<usize> = t.static_shape().expect("static").iter().map(|&d| d as usize).collect();
            let (lo, hi) = range(t.elem);
            TensorData::random_uniform(t.elem, shape, lo, hi, seed + i as u64).expect("random input")
        })
        .collect();
    let want = strata_dialects::interp::run(&ctx, m, "main", &inputs).expect("graph reference runs");
    let reg = crate::registry();
    let mut pm = PassManager::parse(&reg, pipeline).unwrap_or_else(|e| panic!("{e}"));
    pm.instrumentation.verify_each = true;
    pm.run(&mut ctx, m).map_err(|e| e.to_string())?;
    let text = print_module(&ctx, m, &PrintOptions::default());
    let got = strata_dialects::loops::interp::run_program(&ctx, m, "main", &inputs)
        .unwrap_or_else(|e| panic!("loops interpreter: {e}\n{text}"));
    assert_eq!(want.len(), got.len());
    for (o, (w, g)) in want.iter().zip(&got).enumerate() {
        assert_eq!((w.shape(), w.elem()), (g.shape(), g.elem()), "output #{o}");
        let step = crate::lower::quant::qparams(w.elem()).map_or(1e-6, |(s, _)| s);
        let mut off = 0usize;
        for i in 0..w.len() {
            let (a, b) = (w.get_real(i), g.get_real(i));
            let d = (a - b).abs();
            let tol = if w.elem().is_quantized() { steps * step + 1e-9 } else { 1e-6 * a.abs().max(1.0) };
            assert!(d <= tol, "output #{o} element {i}: reference {a}, lowered {b} (stored {})", g.get_f64(i));
            off += usize::from(d > 0.0);
        }
        // A one-step difference is a near-tie rounding: rare, never systematic.
        assert!(off * 50 <= w.len().max(50), "output #{o}: {off} of {} elements differ by a step", w.len());
    }
    Ok(text)
}

fn lower(src: &str, steps: f64) -> String {
    check_quant("lower-graph-to-loops", src, steps, 11)
}

// ---------------------------------------------------------------- convolution

#[test]
fn nchw_conv_bias_with_relu_and_z_is_exact() {
    // Power-of-two scales: every requantisation is exact, ties included.
    let src = "func @main(%x: tensor<2x6x9x11xqs8<0.5>>, %w: tensor<8x6x3x3xqs8<0.25>>, %b: tensor<1x8x1x1xqs32<0.125>>, %z: tensor<2x8x9x11xqs8<16.0>>) -> tensor<2x8x9x11xqs8<16.0>> {
  %y = graph.conv_bias(%x, %w, %b, %z) {dilation = [1, 1], group = 1, nonlinearity = \"relu\", out_dtype = qs8<16.0>, pad = [1, 1], stride = [1, 1]} : (tensor<2x6x9x11xqs8<0.5>>, tensor<8x6x3x3xqs8<0.25>>, tensor<1x8x1x1xqs32<0.125>>, tensor<2x8x9x11xqs8<16.0>>) -> tensor<2x8x9x11xqs8<16.0>>
  return(%y)
}";
    let text = lower(src, 0.0);
    assert!(text.contains("vec<4xi32>"), "4 output channels per accumulator: {text}");
}

#[test]
fn nchw_conv_with_other_scales_is_within_one_step() {
    // Scales whose ratios are not powers of two: f32 requantisation, at most
    // one step off at near-ties; sigmoid and h_swish on reals.
    for nl in ["identity", "relu", "sigmoid", "h_swish"] {
        let src = format!(
            "func @main(%x: tensor<1x5x7x6xqs8<0.3>>, %w: tensor<6x5x3x2xqs8<0.07>>, %b: tensor<1x6x1x1xqs32<0.021>>, %z: tensor<1x6x4x3xqs8<1.7>>) -> tensor<1x6x4x3xqs8<1.7>> {{
  %y = graph.conv_bias(%x, %w, %b, %z) {{dilation = [1, 2], group = 1, nonlinearity = \"{nl}\", out_dtype = qs8<1.7>, pad = [1, 1], stride = [2, 2]}} : (tensor<1x5x7x6xqs8<0.3>>, tensor<6x5x3x2xqs8<0.07>>, tensor<1x6x1x1xqs32<0.021>>, tensor<1x6x4x3xqs8<1.7>>) -> tensor<1x6x4x3xqs8<1.7>>
  return(%y)
}}"
        );
        lower(&src, 1.0);
    }
}

#[test]
fn nchw_grouped_and_depthwise_convs_accumulate_exactly_in_qs32() {
    // conv2d: the default result is qs32<sx·sw>, the accumulator itself.
    lower(
        "func @main(%x: tensor<1x8x7x7xqs8<0.5>>, %w: tensor<8x4x3x3xqs8<0.25>>) -> tensor<1x8x3x3xqs32<0.125>> {
  %y = graph.conv2d(%x, %w) {dilation = [2, 2], group = 2, pad = [1, 1], stride = [2, 2]} : (tensor<1x8x7x7xqs8<0.5>>, tensor<8x4x3x3xqs8<0.25>>) -> tensor<1x8x3x3xqs32<0.125>>
  return(%y)
}",
        0.0,
    );
    // Depthwise: lanes over 4 channels, each its own group.
    lower(
        "func @main(%x: tensor<1x8x6x6xqs8<0.5>>, %w: tensor<8x1x3x3xqs8<0.25>>, %b: tensor<1x8x1x1xqs32<0.125>>) -> tensor<1x8x6x6xqs32<0.125>> {
  %y = graph.conv_bias(%x, %w, %b) {dilation = [1, 1], group = 8, nonlinearity = \"relu\", pad = [1, 1], stride = [1, 1]} : (tensor<1x8x6x6xqs8<0.5>>, tensor<8x1x3x3xqs8<0.25>>, tensor<1x8x1x1xqs32<0.125>>) -> tensor<1x8x6x6xqs32<0.125>>
  return(%y)
}",
        0.0,
    );
    // Odd channel counts: one output channel per accumulator.
    lower(
        "func @main(%x: tensor<1x3x5x5xqs8<0.5>>, %w: tensor<3x3x3x3xqs8<0.25>>, %b: tensor<1x3x1x1xqs32<0.125>>) -> tensor<1x3x5x5xqs8<4.0>> {
  %y = graph.conv_bias(%x, %w, %b) {dilation = [1, 1], group = 1, nonlinearity = \"identity\", out_dtype = qs8<4.0>, pad = [1, 1], stride = [1, 1]} : (tensor<1x3x5x5xqs8<0.5>>, tensor<3x3x3x3xqs8<0.25>>, tensor<1x3x1x1xqs32<0.125>>) -> tensor<1x3x5x5xqs8<4.0>>
  return(%y)
}",
        0.0,
    );
}

/// Every function of a layout test file (after `// -----`) that lowers
/// without an expected error, renamed `@main`, through its pipeline and the
/// lowering: `(checked, skipped)`. Skipped: functions whose pipeline pads a
/// qs8 tensor with a constant (`padding-channel`, IC < 4), which the
/// data-movement lowering does not lower yet.
fn check_layout_file(file: &str, steps: f64) -> (usize, usize) {
    let path = format!("{}/../tests/ir/layout/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    fn pipeline_of(chunk: &str) -> Option<&str> {
        chunk.lines().find_map(|l| l.strip_prefix("// pipeline: ")).map(str::trim)
    }
    let default = pipeline_of(&text).unwrap_or("").to_string();
    let (mut checked, mut skipped) = (0, 0);
    for chunk in text.split("// -----") {
        let pipeline = pipeline_of(chunk).unwrap_or(&default);
        if chunk.contains("expect: error") || !chunk.contains("qs8") {
            continue;
        }
        let Some(start) = chunk.find("func @") else { continue };
        let body = &chunk[start..];
        let name_end = body.find('(').expect("function name");
        let src = format!("func @main{}", &body[name_end..]);
        match try_check_quant(&format!("{pipeline},lower-graph-to-loops"), &src, steps, 3) {
            Ok(_) => checked += 1,
            Err(e) if e.contains("constant padding of a quantised tensor") => skipped += 1,
            Err(e) => panic!("{file}: {e}\n{src}"),
        }
    }
    (checked, skipped)
}

#[test]
fn nchw44_dot_convolutions_match_the_reference() {
    // dot, hybrid, group_dot, channel-wise in #nchw44, qs8 max pooling in between.
    let (checked, skipped) = check_layout_file("nchw44-dot.strata", 0.0);
    assert!(checked >= 5 && skipped <= 2, "checked {checked}, skipped {skipped}");
}

#[test]
fn gpu_int8_formats_match_the_reference() {
    for f in ["nchw4.strata", "nchw32.strata", "chwn4.strata"] {
        let (checked, skipped) = check_layout_file(f, 0.0);
        assert!(checked >= 2 && skipped <= 3, "{f}: checked {checked}, skipped {skipped}");
    }
}

#[test]
fn nchw44_dot_conv_with_relu_and_z_uses_the_dot_format() {
    let src = "func @main(%x: tensor<1x8x7x9xqs8<0.5>>, %w: tensor<12x8x3x3xqs8<0.25>>, %b: tensor<1x12x1x1xqs32<0.125>>, %z: tensor<1x12x7x9xqs8<8.0>>) -> tensor<1x12x7x9xqs8<8.0>> {
  %y = graph.conv_bias(%x, %w, %b, %z) {dilation = [1, 1], group = 1, nonlinearity = \"relu\", out_dtype = qs8<8.0>, pad = [1, 1], stride = [1, 1]} : (tensor<1x8x7x9xqs8<0.5>>, tensor<12x8x3x3xqs8<0.25>>, tensor<1x12x1x1xqs32<0.125>>, tensor<1x12x7x9xqs8<8.0>>) -> tensor<1x12x7x9xqs8<8.0>>
  return(%y)
}";
    let text = check_quant("nchwxx{layout=nchw44_dot},canonicalize,lower-graph-to-loops", src, 0.0, 5);
    assert!(text.contains("_conv_bias"), "{text}");
    assert!(text.contains("nchw44_dot"), "{text}");
}

// ---------------------------------------------------------------- elementwise

#[test]
fn quantised_elementwise_modes_match_the_reference() {
    for mode in ["add", "sub", "mul", "max", "min", "fuse_add_relu"] {
        // Same type in and out: exact integer arithmetic (mul rescales).
        let steps = if mode == "mul" { 1.0 } else { 0.0 };
        for ty in ["qs8<0.5>", "qu8<0.25, 100>", "qs32<0.5>"] {
            lower(
                &format!(
                    "func @main(%x: tensor<3x17xTY>, %y: tensor<17xTY>) -> tensor<3x17xTY> {{
  %0 = graph.elemwise(%x, %y) {{mode = \"{mode}\"}} : (tensor<3x17xTY>, tensor<17xTY>) -> tensor<3x17xTY>
  return(%0)
}}"
                )
                .replace("TY", ty),
                steps,
            );
        }
        // Another output scale and zero point.
        lower(
            &format!(
                "func @main(%x: tensor<3x17xqu8<0.3, 120>>, %y: tensor<3x17xqu8<0.3, 120>>) -> tensor<3x17xqu8<0.7, 9>> {{
  %0 = graph.elemwise(%x, %y) {{mode = \"{mode}\", out_dtype = qu8<0.7, 9>}} : (tensor<3x17xqu8<0.3, 120>>, tensor<3x17xqu8<0.3, 120>>) -> tensor<3x17xqu8<0.7, 9>>
  return(%0)
}}"
            ),
            1.0,
        );
    }
    lower(
        "func @main(%x: tensor<4x9xqu8<0.5, 128>>) -> (tensor<4x9xqu8<0.5, 128>>, tensor<4x9xqs8<0.25>>, tensor<4x9xqs8<0.5>>) {
  %0 = graph.elemwise(%x) {mode = \"relu\"} : (tensor<4x9xqu8<0.5, 128>>) -> tensor<4x9xqu8<0.5, 128>>
  %1 = graph.typecvt(%x) {dtype = qs8<0.25>} : (tensor<4x9xqu8<0.5, 128>>) -> tensor<4x9xqs8<0.25>>
  %2 = graph.elemwise(%1) {mode = \"relu\", out_dtype = qs8<0.5>} : (tensor<4x9xqs8<0.25>>) -> tensor<4x9xqs8<0.5>>
  return(%0, %1, %2)
}",
        0.0,
    );
}

#[test]
fn quantised_conversions_to_i64_are_refused() {
    let mut ctx = strata_dialects::context();
    let src = "func @main(%x: tensor<4xqs8<0.5>>) -> tensor<4xi64> {
  %0 = graph.typecvt(%x) {dtype = i64} : (tensor<4xqs8<0.5>>) -> tensor<4xi64>
  return(%0)
}";
    let m = parse_module(&mut ctx, &Source::new("t.strata", src), &ParseOptions::default()).expect("parses");
    verify(&ctx, m, VerifyOptions::default()).expect("verifies");
    let reg = crate::registry();
    let mut pm = PassManager::parse(&reg, "lower-graph-to-loops").expect("pipeline");
    let e = pm.run(&mut ctx, m).expect_err("refused").to_string();
    assert!(e.contains("i64 conversions are not lowered"), "{e}");
}

// ---------------------------------------------------------------- typecvt

#[test]
fn quantised_conversions_match_the_reference() {
    let src = "func @main(%f: tensor<5x13xf32>, %q: tensor<5x13xqs8<0.5>>, %u: tensor<5x13xqu8<0.25, 7>>, %a: tensor<5x13xqs32<0.125>>, %i: tensor<5x13xi32>) -> (tensor<5x13xqs8<0.5>>, tensor<5x13xf32>, tensor<5x13xqs8<0.25>>, tensor<5x13xf32>, tensor<5x13xqs32<0.5>>, tensor<5x13xqu8<0.5, 128>>, tensor<5x13xf32>, tensor<5x13xi32>, tensor<5x13xqs8<2.0>>, tensor<5x13xqu8<0.25, 9>>, tensor<5x13xf16>, tensor<5x13xqs8<1.0>>) {
  %0 = graph.typecvt(%f) {dtype = qs8<0.5>} : (tensor<5x13xf32>) -> tensor<5x13xqs8<0.5>>
  %1 = graph.typecvt(%q) {dtype = f32} : (tensor<5x13xqs8<0.5>>) -> tensor<5x13xf32>
  %2 = graph.typecvt(%q) {dtype = qs8<0.25>} : (tensor<5x13xqs8<0.5>>) -> tensor<5x13xqs8<0.25>>
  %3 = graph.typecvt(%u) {dtype = f32} : (tensor<5x13xqu8<0.25, 7>>) -> tensor<5x13xf32>
  %4 = graph.typecvt(%q) {dtype = qs32<0.5>} : (tensor<5x13xqs8<0.5>>) -> tensor<5x13xqs32<0.5>>
  %5 = graph.typecvt(%f) {dtype = qu8<0.5, 128>} : (tensor<5x13xf32>) -> tensor<5x13xqu8<0.5, 128>>
  %6 = graph.typecvt(%a) {dtype = f32} : (tensor<5x13xqs32<0.125>>) -> tensor<5x13xf32>
  %7 = graph.typecvt(%q) {dtype = i32} : (tensor<5x13xqs8<0.5>>) -> tensor<5x13xi32>
  %8 = graph.typecvt(%i) {dtype = qs8<2.0>} : (tensor<5x13xi32>) -> tensor<5x13xqs8<2.0>>
  %9 = graph.typecvt(%u) {dtype = qu8<0.25, 9>} : (tensor<5x13xqu8<0.25, 7>>) -> tensor<5x13xqu8<0.25, 9>>
  %10 = graph.typecvt(%q) {dtype = f16} : (tensor<5x13xqs8<0.5>>) -> tensor<5x13xf16>
  %11 = graph.typecvt(%a) {dtype = qs8<1.0>} : (tensor<5x13xqs32<0.125>>) -> tensor<5x13xqs8<1.0>>
  return(%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11)
}";
    lower(src, 0.0);
    // Scales with a ratio that is not a power of two: within one step.
    lower(
        "func @main(%f: tensor<5x13xf32>, %q: tensor<5x13xqs8<0.3>>) -> (tensor<5x13xqs8<0.7>>, tensor<5x13xqs8<0.11>>, tensor<5x13xf32>) {
  %0 = graph.typecvt(%f) {dtype = qs8<0.7>} : (tensor<5x13xf32>) -> tensor<5x13xqs8<0.7>>
  %1 = graph.typecvt(%q) {dtype = qs8<0.11>} : (tensor<5x13xqs8<0.3>>) -> tensor<5x13xqs8<0.11>>
  %2 = graph.typecvt(%q) {dtype = f32} : (tensor<5x13xqs8<0.3>>) -> tensor<5x13xf32>
  return(%0, %1, %2)
}",
        1.0,
    );
}

// ---------------------------------------------------------------- pooling

#[test]
fn qs8_max_pooling_is_exact() {
    lower(
        "func @main(%x: tensor<2x5x9x8xqs8<0.5>>) -> (tensor<2x5x5x4xqs8<0.5>>, tensor<2x5x7x6xqs8<0.5>>) {
  %0 = graph.pooling(%x) {mode = \"max\", pad = [1, 0], stride = [2, 2], window = [3, 2]} : (tensor<2x5x9x8xqs8<0.5>>) -> tensor<2x5x5x4xqs8<0.5>>
  %1 = graph.pooling(%x) {mode = \"max\", pad = [0, 0], stride = [1, 1], window = [3, 3]} : (tensor<2x5x9x8xqs8<0.5>>) -> tensor<2x5x7x6xqs8<0.5>>
  return(%0, %1)
}",
        0.0,
    );
}

#[test]
fn blocked_qs8_dense_and_group_weights_match_the_reference() {
    // `dense` in #nchw88 (2 accumulators' lanes per block of 8) with z, and
    // `group` in #nchw44; the nchwxx pass only produces these for floats.
    lower(
        "func @main(%x: tensor<1x2x6x5x8xqs8<0.5>, #nchw88>, %w: tensor<2x2x3x3x8x8xqs8<0.25>>, %b: tensor<1x2x1x1x8xqs32<0.125>, #nchw88>, %z: tensor<1x2x6x5x8xqs8<2.0>, #nchw88>) -> tensor<1x2x6x5x8xqs8<2.0>, #nchw88> {
  %y = layout.conv_bias(%x, %w, %b, %z) {dilation = [1, 1], format = #nchw88, group = 1, nonlinearity = \"relu\", out_dtype = qs8<2.0>, pad = [1, 1], stride = [1, 1], weight_format = \"dense\"} : (tensor<1x2x6x5x8xqs8<0.5>, #nchw88>, tensor<2x2x3x3x8x8xqs8<0.25>>, tensor<1x2x1x1x8xqs32<0.125>, #nchw88>, tensor<1x2x6x5x8xqs8<2.0>, #nchw88>) -> tensor<1x2x6x5x8xqs8<2.0>, #nchw88>
  return(%y)
}",
        0.0,
    );
    lower(
        "func @main(%x: tensor<2x4x5x5x4xqs8<0.5>, #nchw44>, %w: tensor<2x2x2x3x3x4x4xqs8<0.25>>, %b: tensor<1x4x1x1x4xqs32<0.125>, #nchw44>) -> tensor<2x4x3x3x4xqs32<0.125>, #nchw44> {
  %y = layout.conv_bias(%x, %w, %b) {dilation = [1, 1], format = #nchw44, group = 2, nonlinearity = \"identity\", pad = [1, 1], stride = [2, 2], weight_format = \"group\"} : (tensor<2x4x5x5x4xqs8<0.5>, #nchw44>, tensor<2x2x2x3x3x4x4xqs8<0.25>>, tensor<1x4x1x1x4xqs32<0.125>, #nchw44>) -> tensor<2x4x3x3x4xqs32<0.125>, #nchw44>
  return(%y)
}",
        0.0,
    );
}
