//! Differential tests of the resize, warp and fused-preprocess lowerings.

use crate::lower::tests::check_lowering;
use strata_ir::pass::PassManager;
use strata_ir::{ParseOptions, Source, parse_module};

fn t(shape: &[usize], elem: &str) -> String {
    let dims: String = shape.iter().map(|d| format!("{d}x")).collect();
    format!("tensor<{dims}{elem}>")
}

fn lowering_error(src: &str) -> String {
    let mut ctx = strata_dialects::context();
    let m = parse_module(&mut ctx, &Source::new("t.strata", src), &ParseOptions::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let reg = crate::registry();
    let mut pm = PassManager::parse(&reg, "lower-graph-to-loops").expect("pipeline");
    match pm.run(&mut ctx, m) {
        Ok(_) => panic!("lowering succeeded:\n{src}"),
        Err(e) => e.to_string(),
    }
}

fn resize(x: [usize; 4], out: [usize; 2], mode: &str, elem: &str) -> String {
    let (xt, ot) = (t(&x, elem), t(&[x[0], x[1], out[0], out[1]], elem));
    format!(
        "func @main(%x: {xt}) -> {ot} {{
  %0 = graph.resize(%x) {{imode = \"{mode}\", output = [{}, {}]}} : ({xt}) -> {ot}
  return(%0)
}}",
        out[0], out[1]
    )
}

#[test]
fn resize_modes_up_and_down() {
    let sizes = [[3, 5], [7, 2], [4, 4], [1, 9], [6, 10], [2, 1]];
    for mode in ["linear", "nearest"] {
        for &[h, w] in &[[4usize, 5], [3, 3], [1, 1], [6, 2]] {
            for out in sizes {
                check_lowering(&resize([2, 2, h, w], out, mode, "f32"), 1e-5);
            }
        }
    }
    // Nearest is a gather: f16 moves as bytes.
    check_lowering(&resize([1, 3, 4, 5], [7, 3], "nearest", "f16"), 0.0);
}

#[test]
fn linear_resize_of_f16_is_refused() {
    let e = lowering_error(&resize([1, 1, 2, 2], [3, 3], "linear", "f16"));
    assert!(e.contains("f32 only"), "{e}");
}

#[test]
fn layout_resize_on_blocked_tensors_uses_vectors() {
    for (layout, p) in [("nchw88", 8usize), ("nchw44", 4)] {
        for mode in ["linear", "nearest"] {
            for (h, w, oh, ow) in [(3usize, 4usize, 5usize, 2usize), (4, 4, 2, 7), (2, 3, 2, 3)] {
                let (it, ot) = (
                    format!("tensor<1x2x{h}x{w}x{p}xf32, #{layout}>"),
                    format!("tensor<1x2x{oh}x{ow}x{p}xf32, #{layout}>"),
                );
                let src = format!(
                    "func @main(%x: {it}) -> {ot} {{
  %0 = layout.resize(%x) {{imode = \"{mode}\", output = [{oh}, {ow}]}} : ({it}) -> {ot}
  return(%0)
}}"
                );
                let text = check_lowering(&src, 1e-5);
                assert!(text.contains("vec<4xf32>"), "{text}");
            }
        }
    }
}

/// A warp of a `[2, 3, 5, 6]` image to `4 x 7` by `mat` (a constant, or the
/// second argument when `None`).
fn warp(mat: Option<&str>, imode: &str, border: &str, bv: &str) -> String {
    let (xt, mt, ot) = (t(&[2, 3, 5, 6], "f32"), t(&[2, 3, 3], "f32"), t(&[2, 3, 4, 7], "f32"));
    let (params, mat_def) = match mat {
        Some(values) => {
            (format!("%x: {xt}"), format!("  %m = graph.const() {{value = dense<[{values}]> : {mt}}} : () -> {mt}\n"))
        }
        None => (format!("%x: {xt}, %m: {mt}"), String::new()),
    };
    format!(
        "func @main({params}) -> {ot} {{
{mat_def}  %0 = graph.warp_perspective(%x, %m) {{border_mode = \"{border}\", border_value = {bv}, imode = \"{imode}\", output = [4, 7]}} : ({xt}, {mt}) -> {ot}
  return(%0)
}}"
    )
}

/// Two matrices: a rotation-and-shift that reaches outside the image, and a
/// mild perspective (coordinates away from pixel boundaries).
const MATS: &str = "0.83, -0.41, 1.37, 0.29, 0.91, -1.13, 0.0, 0.0, 1.0, \
                    1.21, 0.17, -2.31, -0.13, 1.09, 0.77, 0.021, -0.013, 1.03";

#[test]
fn warp_perspective_every_mode() {
    for imode in ["linear", "nearest"] {
        for border in ["constant", "replicate", "reflect", "wrap"] {
            check_lowering(&warp(Some(MATS), imode, border, "0.5"), 1e-4);
        }
    }
    // Identity: the image itself (cropped), next to an infinite border value.
    let id = "1, 0, 0, 0, 1, 0, 0, 0, 1, 1, 0, 0, 0, 1, 0, 0, 0, 1";
    check_lowering(&warp(Some(id), "linear", "constant", "inf"), 0.0);
    // Random matrices (most coordinates far outside), clamping borders.
    for imode in ["linear", "nearest"] {
        for border in ["constant", "replicate"] {
            check_lowering(&warp(None, imode, border, "-1.0"), 1e-4);
        }
    }
}

#[test]
fn warp_of_f16_and_bf16() {
    let src = "func @main(%x: tensor<1x2x4x4xf16>, %m: tensor<1x3x3xf32>) -> tensor<1x2x3x3xf16> {
  %0 = graph.warp_perspective(%x, %m) {border_mode = \"replicate\", border_value = 0.0, imode = \"linear\", output = [3, 3]} : (tensor<1x2x4x4xf16>, tensor<1x3x3xf32>) -> tensor<1x2x3x3xf16>
  return(%0)
}";
    check_lowering(src, 2e-3);
    let e = lowering_error(&src.replace("f16", "bf16"));
    assert!(e.contains("f32 or f16 only"), "{e}");
}

#[test]
fn fused_preprocess_zoo_chain() {
    // u8 NHWC -> f32, (x - mean) * scale per channel, NCHW, 3 -> 4 channels.
    let src = "func @main(%x: tensor<2x4x5x3xu8>) -> tensor<2x4x4x5xf32> {
  %mean = graph.const() {value = dense<[123.675, 116.28, 103.53]> : tensor<1x1x1x3xf32>} : () -> tensor<1x1x1x3xf32>
  %scale = graph.const() {value = dense<[0.017124753, 0.017507004, 0.017429193]> : tensor<1x1x1x3xf32>} : () -> tensor<1x1x1x3xf32>
  %0 = graph.fused_preprocess(%x, %mean, %scale) {dtype = f32, in_layout = \"nhwc\", out_layout = \"nchw\", pad_channels = 1, steps = [\"sub\", \"mul\"]} : (tensor<2x4x5x3xu8>, tensor<1x1x1x3xf32>, tensor<1x1x1x3xf32>) -> tensor<2x4x4x5xf32>
  return(%0)
}";
    check_lowering(src, 0.0);
}

#[test]
fn fused_preprocess_layouts_and_types() {
    // NCHW u8 -> f32 + scalar, padded 5 -> 8 and blocked by 4.
    let blocked = "func @main(%x: tensor<2x5x3x3xu8>) -> tensor<2x2x3x3x4xf32> {
  %k = graph.const() {value = dense<-128.0> : tensor<1xf32>} : () -> tensor<1xf32>
  %0 = graph.fused_preprocess(%x, %k) {block = 4, dtype = f32, in_layout = \"nchw\", out_layout = \"nchw\", pad_channels = 3, steps = [\"add\"]} : (tensor<2x5x3x3xu8>, tensor<1xf32>) -> tensor<2x2x3x3x4xf32>
  return(%0)
}";
    check_lowering(blocked, 0.0);
    // NCHW -> NHWC, f16 steps with the value second (k - v, k / v), padded.
    let nhwc = "func @main(%x: tensor<1x3x2x5xi8>) -> tensor<1x2x5x4xf16> {
  %k = graph.const() {value = dense<[1.0, 2.0, 3.0]> : tensor<1x3x1x1xf16>} : () -> tensor<1x3x1x1xf16>
  %s = graph.const() {value = dense<4.0> : tensor<f16>} : () -> tensor<f16>
  %0 = graph.fused_preprocess(%x, %k, %s) {dtype = f16, in_layout = \"nchw\", out_layout = \"nhwc\", pad_channels = 1, steps = [\"rsub\", \"rdiv\"]} : (tensor<1x3x2x5xi8>, tensor<1x3x1x1xf16>, tensor<f16>) -> tensor<1x2x5x4xf16>
  return(%0)
}";
    check_lowering(nhwc, 0.0);
    // f32 steps then a saturating conversion to i8; a runtime constant operand.
    let to_i8 = "func @main(%x: tensor<1x2x3x4xu8>, %k: tensor<2xf32>) -> tensor<1x2x3x4xi8> {
  %m = graph.const() {value = dense<100.0> : tensor<1xf32>} : () -> tensor<1xf32>
  %0 = graph.fused_preprocess(%x, %k, %m) {dtype = f32, in_layout = \"nchw\", out_layout = \"nchw\", out_dtype = i8, steps = [\"div\", \"mul\"]} : (tensor<1x2x3x4xu8>, tensor<2xf32>, tensor<1xf32>) -> tensor<1x2x3x4xi8>
  return(%0)
}";
    check_lowering(to_i8, 0.0);
    // Only a conversion (u8 NHWC -> f32 NHWC).
    let convert = "func @main(%x: tensor<1x2x3x3xu8>) -> tensor<1x2x3x3xf32> {
  %0 = graph.fused_preprocess(%x) {dtype = f32, in_layout = \"nhwc\", out_layout = \"nhwc\", steps = []} : (tensor<1x2x3x3xu8>) -> tensor<1x2x3x3xf32>
  return(%0)
}";
    check_lowering(convert, 0.0);
}

#[test]
fn fused_preprocess_with_a_warp() {
    let src = "func @main(%x: tensor<2x3x6x6xf32>) -> tensor<2x1x4x4x4xf32> {
  %m = graph.const() {value = dense<[0.83, -0.41, 1.37, 0.29, 0.91, -1.13, 0.0, 0.0, 1.0, 1.21, 0.17, -2.31, -0.13, 1.09, 0.77, 0.021, -0.013, 1.03]> : tensor<2x3x3xf32>} : () -> tensor<2x3x3xf32>
  %k = graph.const() {value = dense<[0.5, 0.25, 2.0]> : tensor<1x3x1x1xf32>} : () -> tensor<1x3x1x1xf32>
  %0 = graph.fused_preprocess(%x, %m, %k) {block = 4, border_mode = \"reflect\", border_value = 0.0, dtype = f32, imode = \"linear\", in_layout = \"nchw\", out_layout = \"nchw\", output = [4, 4], pad_channels = 1, steps = [\"mul\"]} : (tensor<2x3x6x6xf32>, tensor<2x3x3xf32>, tensor<1x3x1x1xf32>) -> tensor<2x1x4x4x4xf32>
  return(%0)
}";
    check_lowering(src, 1e-4);
}

#[test]
fn fused_preprocess_to_a_quantised_type_is_refused() {
    let src = "func @main(%x: tensor<1x4x2x2xu8>) -> tensor<1x4x2x2xqs8<1.0>> {
  %0 = graph.fused_preprocess(%x) {dtype = f32, in_layout = \"nchw\", out_dtype = qs8<1.0>, out_layout = \"nchw\", steps = []} : (tensor<1x4x2x2xu8>) -> tensor<1x4x2x2xqs8<1.0>>
  return(%0)
}";
    let e = lowering_error(src);
    assert!(e.contains("plain types only"), "{e}");
}
