//! The layout ops agree with their graph ops on random data, and the verifier
//! rejects bad block sizes and weight shapes.

use crate::interp;
use strata_ir::{ParseOptions, Source, TensorData, VerifyOptions, parse_module, verify};

fn run(src: &str, inputs: &[TensorData]) -> Vec<TensorData> {
    let mut ctx = crate::context();
    let m = parse_module(&mut ctx, &Source::new("t.strata", src), &ParseOptions::default())
        .unwrap_or_else(|e| panic!("{e}"));
    verify(&ctx, m, VerifyOptions::default()).unwrap_or_else(|e| panic!("{e:?}"));
    interp::run(&ctx, m, "f", inputs).unwrap_or_else(|e| panic!("{e}"))
}

fn verify_error(src: &str) -> String {
    let mut ctx = crate::context();
    let m = parse_module(&mut ctx, &Source::new("t.strata", src), &ParseOptions::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let e = verify(&ctx, m, VerifyOptions::default()).expect_err("must not verify");
    format!("{e:?}")
}

fn rand(shape: &[usize], seed: u64) -> TensorData {
    TensorData::random_uniform(strata_ir::ElemType::F32, shape.to_vec(), -1.0, 1.0, seed).unwrap()
}

fn close(a: &TensorData, b: &TensorData) {
    assert_eq!(a.shape(), b.shape());
    for i in 0..a.len() {
        assert!((a.get_f64(i) - b.get_f64(i)).abs() < 1e-5, "element {i}: {} vs {}", a.get_f64(i), b.get_f64(i));
    }
}

/// One module computing a convolution in NCHW and again through the given
/// layout-level ops; both results are returned.
fn conv_pair(x: &str, w: &str, b: &str, out: &str, attrs: &str, body: &str, res: &str) -> String {
    format!(
        r#"func @f(%x: {x}, %w: {w}, %b: {b}) -> ({out}, {out}) {{
  %ref = graph.conv_bias(%x, %w, %b) {{{attrs}}} : ({x}, {w}, {b}) -> {out}
{body}
  return(%ref, {res})
}}"#
    )
}

#[test]
fn relayout_round_trips_through_every_layout() {
    let layouts = ["nchw88", "nchw44", "nchw44_dot", "nchw4", "nchw32", "chwn4", "nchw64", "nhwcd4", "nhwc"];
    for l in layouts {
        let stored = match l {
            "nchw88" => "1x8x2x3x8",
            "nchw44" | "nchw44_dot" | "nchw4" => "1x16x2x3x4",
            "nchw32" => "1x2x2x3x32",
            "nchw64" => "1x1x2x3x64",
            "chwn4" => "16x2x3x1x4",
            "nhwcd4" => "1x2x16x3x4",
            _ => "1x2x3x64",
        };
        let src = format!(
            r#"func @f(%x: tensor<1x64x2x3xf32>) -> tensor<1x64x2x3xf32> {{
  %a = layout.relayout(%x) {{to = #{l}}} : (tensor<1x64x2x3xf32>) -> tensor<{stored}xf32, #{l}>
  %b = layout.relayout(%a) {{to = #nchw44}} : (tensor<{stored}xf32, #{l}>) -> tensor<1x16x2x3x4xf32, #nchw44>
  %c = layout.relayout(%b) {{to = #nchw}} : (tensor<1x16x2x3x4xf32, #nchw44>) -> tensor<1x64x2x3xf32>
  return(%c)
}}"#
        );
        let x = rand(&[1, 64, 2, 3], 1);
        assert_eq!(run(&src, std::slice::from_ref(&x))[0], x, "{l}");
    }
}

#[test]
fn conv_bias_formats_agree_with_nchw() {
    let a = |g: u64| format!(r#"dilation = [1, 1], group = {g}, nonlinearity = "relu", pad = [1, 1], stride = [1, 1]"#);
    // dense
    let src = conv_pair(
        "tensor<1x16x5x5xf32>",
        "tensor<8x16x3x3xf32>",
        "tensor<1x8x1x1xf32>",
        "tensor<1x8x5x5xf32>",
        &a(1),
        &format!(
            r#"  %xb = layout.relayout(%x) {{to = #nchw88}} : (tensor<1x16x5x5xf32>) -> tensor<1x2x5x5x8xf32, #nchw88>
  %wb = layout.weight(%w) {{block = 8, format = "dense"}} : (tensor<8x16x3x3xf32>) -> tensor<1x2x3x3x8x8xf32>
  %bb = layout.relayout(%b) {{to = #nchw88}} : (tensor<1x8x1x1xf32>) -> tensor<1x1x1x1x8xf32, #nchw88>
  %y = layout.conv_bias(%xb, %wb, %bb) {{{}, format = #nchw88, weight_format = "dense"}} : (tensor<1x2x5x5x8xf32, #nchw88>, tensor<1x2x3x3x8x8xf32>, tensor<1x1x1x1x8xf32, #nchw88>) -> tensor<1x1x5x5x8xf32, #nchw88>
  %r = layout.relayout(%y) {{to = #nchw}} : (tensor<1x1x5x5x8xf32, #nchw88>) -> tensor<1x8x5x5xf32>"#,
            a(1)
        ),
        "%r",
    );
    let outs = run(&src, &[rand(&[1, 16, 5, 5], 1), rand(&[8, 16, 3, 3], 2), rand(&[1, 8, 1, 1], 3)]);
    close(&outs[0], &outs[1]);
    // hybrid (NCHW input), NCHW44
    let src = conv_pair(
        "tensor<1x3x5x5xf32>",
        "tensor<8x3x3x3xf32>",
        "tensor<1x8x1x1xf32>",
        "tensor<1x8x5x5xf32>",
        &a(1),
        &format!(
            r#"  %wb = layout.weight(%w) {{block = 4, format = "hybrid"}} : (tensor<8x3x3x3xf32>) -> tensor<2x3x3x3x4xf32>
  %bb = layout.relayout(%b) {{to = #nchw44}} : (tensor<1x8x1x1xf32>) -> tensor<1x2x1x1x4xf32, #nchw44>
  %y = layout.conv_bias(%x, %wb, %bb) {{{}, format = #nchw44, weight_format = "hybrid"}} : (tensor<1x3x5x5xf32>, tensor<2x3x3x3x4xf32>, tensor<1x2x1x1x4xf32, #nchw44>) -> tensor<1x2x5x5x4xf32, #nchw44>
  %r = layout.relayout(%y) {{to = #nchw}} : (tensor<1x2x5x5x4xf32, #nchw44>) -> tensor<1x8x5x5xf32>"#,
            a(1)
        ),
        "%r",
    );
    let outs = run(&src, &[rand(&[1, 3, 5, 5], 1), rand(&[8, 3, 3, 3], 2), rand(&[1, 8, 1, 1], 3)]);
    close(&outs[0], &outs[1]);
    // channel-wise
    let src = conv_pair(
        "tensor<1x8x5x5xf32>",
        "tensor<8x1x3x3xf32>",
        "tensor<1x8x1x1xf32>",
        "tensor<1x8x5x5xf32>",
        &a(8),
        &format!(
            r#"  %xb = layout.relayout(%x) {{to = #nchw44}} : (tensor<1x8x5x5xf32>) -> tensor<1x2x5x5x4xf32, #nchw44>
  %wb = layout.weight(%w) {{block = 4, format = "channelwise", group = 8}} : (tensor<8x1x3x3xf32>) -> tensor<2x1x1x3x3x4xf32>
  %bb = layout.relayout(%b) {{to = #nchw44}} : (tensor<1x8x1x1xf32>) -> tensor<1x2x1x1x4xf32, #nchw44>
  %y = layout.conv_bias(%xb, %wb, %bb) {{{}, format = #nchw44, weight_format = "channelwise"}} : (tensor<1x2x5x5x4xf32, #nchw44>, tensor<2x1x1x3x3x4xf32>, tensor<1x2x1x1x4xf32, #nchw44>) -> tensor<1x2x5x5x4xf32, #nchw44>
  %r = layout.relayout(%y) {{to = #nchw}} : (tensor<1x2x5x5x4xf32, #nchw44>) -> tensor<1x8x5x5xf32>"#,
            a(8)
        ),
        "%r",
    );
    let outs = run(&src, &[rand(&[1, 8, 5, 5], 1), rand(&[8, 1, 3, 3], 2), rand(&[1, 8, 1, 1], 3)]);
    close(&outs[0], &outs[1]);
    // group
    let src = conv_pair(
        "tensor<1x16x5x5xf32>",
        "tensor<8x8x3x3xf32>",
        "tensor<1x8x1x1xf32>",
        "tensor<1x8x5x5xf32>",
        &a(2),
        &format!(
            r#"  %xb = layout.relayout(%x) {{to = #nchw44}} : (tensor<1x16x5x5xf32>) -> tensor<1x4x5x5x4xf32, #nchw44>
  %wb = layout.weight(%w) {{block = 4, format = "group", group = 2}} : (tensor<8x8x3x3xf32>) -> tensor<2x1x2x3x3x4x4xf32>
  %bb = layout.relayout(%b) {{to = #nchw44}} : (tensor<1x8x1x1xf32>) -> tensor<1x2x1x1x4xf32, #nchw44>
  %y = layout.conv_bias(%xb, %wb, %bb) {{{}, format = #nchw44, weight_format = "group"}} : (tensor<1x4x5x5x4xf32, #nchw44>, tensor<2x1x2x3x3x4x4xf32>, tensor<1x2x1x1x4xf32, #nchw44>) -> tensor<1x2x5x5x4xf32, #nchw44>
  %r = layout.relayout(%y) {{to = #nchw}} : (tensor<1x2x5x5x4xf32, #nchw44>) -> tensor<1x8x5x5xf32>"#,
            a(2)
        ),
        "%r",
    );
    let outs = run(&src, &[rand(&[1, 16, 5, 5], 1), rand(&[8, 8, 3, 3], 2), rand(&[1, 8, 1, 1], 3)]);
    close(&outs[0], &outs[1]);
}

#[test]
fn pooling_and_layout_agnostic_graph_ops_on_blocked_tensors() {
    let src = r#"func @f(%x: tensor<?Nx8x4x4xf32>) -> (tensor<?Nx8x2x2xf32>, tensor<?Nx8x2x2xf32>) {
  %ref0 = graph.pooling(%x) {mode = "max", pad = [0, 0], stride = [2, 2], window = [2, 2]} : (tensor<?Nx8x4x4xf32>) -> tensor<?Nx8x2x2xf32>
  %ref1 = graph.elemwise(%ref0, %ref0) {mode = "add"} : (tensor<?Nx8x2x2xf32>, tensor<?Nx8x2x2xf32>) -> tensor<?Nx8x2x2xf32>
  %ref = graph.reduce(%ref1) {axis = 2, keepdim = true, mode = "sum"} : (tensor<?Nx8x2x2xf32>) -> tensor<?Nx8x1x2xf32>
  %ref2 = graph.concat(%ref, %ref) {axis = 2} : (tensor<?Nx8x1x2xf32>, tensor<?Nx8x1x2xf32>) -> tensor<?Nx8x2x2xf32>
  %xb = layout.relayout(%x) {to = #nchw44} : (tensor<?Nx8x4x4xf32>) -> tensor<?Nx2x4x4x4xf32, #nchw44>
  %p = layout.pooling(%xb) {mode = "max", pad = [0, 0], stride = [2, 2], window = [2, 2]} : (tensor<?Nx2x4x4x4xf32, #nchw44>) -> tensor<?Nx2x2x2x4xf32, #nchw44>
  %one = graph.const() {value = dense<1.0> : tensor<1xf32>} : () -> tensor<1xf32>
  %p1 = graph.elemwise(%p, %one) {mode = "mul"} : (tensor<?Nx2x2x2x4xf32, #nchw44>, tensor<1xf32>) -> tensor<?Nx2x2x2x4xf32, #nchw44>
  %s = graph.elemwise(%p1, %p) {mode = "add"} : (tensor<?Nx2x2x2x4xf32, #nchw44>, tensor<?Nx2x2x2x4xf32, #nchw44>) -> tensor<?Nx2x2x2x4xf32, #nchw44>
  %r = graph.reduce(%s) {axis = 2, keepdim = true, mode = "sum"} : (tensor<?Nx2x2x2x4xf32, #nchw44>) -> tensor<?Nx2x1x2x4xf32, #nchw44>
  %c = graph.concat(%r, %r) {axis = 2} : (tensor<?Nx2x1x2x4xf32, #nchw44>, tensor<?Nx2x1x2x4xf32, #nchw44>) -> tensor<?Nx2x2x2x4xf32, #nchw44>
  %o = layout.relayout(%c) {to = #nchw} : (tensor<?Nx2x2x2x4xf32, #nchw44>) -> tensor<?Nx8x2x2xf32>
  return(%ref2, %o)
}"#;
    let outs = run(src, &[rand(&[2, 8, 4, 4], 5)]);
    close(&outs[0], &outs[1]);
}

#[test]
fn verifier_errors_name_the_problem() {
    let e = verify_error(
        r#"func @f(%x: tensor<1x6x2x2xf32>) -> tensor<1x1x2x2x8xf32, #nchw88> {
  %a = layout.relayout(%x) {to = #nchw88} : (tensor<1x6x2x2xf32>) -> tensor<1x1x2x2x8xf32, #nchw88>
  return(%a)
}"#,
    );
    assert!(e.contains("6 channels are not divisible by the block 8"), "{e}");
    let e = verify_error(
        r#"func @f(%w: tensor<8x3x3x3xf32>) -> tensor<1x1x3x3x8x8xf32> {
  %a = layout.weight(%w) {block = 8, format = "dense"} : (tensor<8x3x3x3xf32>) -> tensor<1x1x3x3x8x8xf32>
  return(%a)
}"#,
    );
    assert!(e.contains("IC = 3 is not divisible by 8"), "{e}");
    let e = verify_error(
        r#"func @f(%x: tensor<1x1x5x5x8xf32, #nchw88>, %w: tensor<1x1x3x3x8xf32>, %b: tensor<1x1x1x1x8xf32, #nchw88>) -> tensor<1x1x3x3x8xf32, #nchw88> {
  %y = layout.conv_bias(%x, %w, %b) {dilation = [1, 1], format = #nchw88, group = 1, nonlinearity = "identity", pad = [0, 0], stride = [1, 1], weight_format = "dense"} : (tensor<1x1x5x5x8xf32, #nchw88>, tensor<1x1x3x3x8xf32>, tensor<1x1x1x1x8xf32, #nchw88>) -> tensor<1x1x3x3x8xf32, #nchw88>
  return(%y)
}"#,
    );
    assert!(e.contains("[OC/P, IC/P, FH, FW, P, P]"), "{e}");
    let e = verify_error(
        r#"func @f(%x: tensor<1x8x5x5xf32>) -> tensor<1x8x2x2xf32> {
  %y = layout.pooling(%x) {mode = "max", pad = [0, 0], stride = [2, 2], window = [2, 2]} : (tensor<1x8x5x5xf32>) -> tensor<1x8x2x2xf32>
  return(%y)
}"#,
    );
    assert!(e.contains("must have a blocked layout"), "{e}");
}

#[test]
fn quantised_dot_conv_is_bit_identical_and_keeps_scales() {
    use strata_ir::{ElemType, QScale};
    // qs8 input and weight, qs32<sx·sw> bias, requantised to qs8 through the
    // `dot` weight format and #nchw44_dot activations.
    let attrs =
        r#"dilation = [1, 1], group = 1, nonlinearity = "relu", out_dtype = qs8<0.5>, pad = [1, 1], stride = [1, 1]"#;
    let (x, w, b, out) = (
        "tensor<1x8x3x3xqs8<0.5>>",
        "tensor<4x8x3x3xqs8<0.25>>",
        "tensor<1x4x1x1xqs32<0.125>>",
        "tensor<1x4x3x3xqs8<0.5>>",
    );
    let body = format!(
        r#"  %xb = layout.relayout(%x) {{to = #nchw44_dot}} : ({x}) -> tensor<1x2x3x3x4xqs8<0.5>, #nchw44_dot>
  %wb = layout.weight(%w) {{block = 4, format = "dot"}} : ({w}) -> tensor<1x2x3x3x4x4xqs8<0.25>>
  %bb = layout.relayout(%b) {{to = #nchw44_dot}} : ({b}) -> tensor<1x1x1x1x4xqs32<0.125>, #nchw44_dot>
  %y = layout.conv_bias(%xb, %wb, %bb) {{{attrs}, format = #nchw44_dot, weight_format = "dot"}} : (tensor<1x2x3x3x4xqs8<0.5>, #nchw44_dot>, tensor<1x2x3x3x4x4xqs8<0.25>>, tensor<1x1x1x1x4xqs32<0.125>, #nchw44_dot>) -> tensor<1x1x3x3x4xqs8<0.5>, #nchw44_dot>
  %yn = layout.relayout(%y) {{to = #nchw}} : (tensor<1x1x3x3x4xqs8<0.5>, #nchw44_dot>) -> {out}"#
    );
    let src = conv_pair(x, w, b, out, attrs, &body, "%yn");
    let (sx, sw) = (ElemType::QS8(QScale::new(0.5)), ElemType::QS8(QScale::new(0.25)));
    let inputs = [
        TensorData::random_uniform(sx, vec![1, 8, 3, 3], -20.0, 20.0, 1).unwrap(),
        TensorData::random_uniform(sw, vec![4, 8, 3, 3], -20.0, 20.0, 2).unwrap(),
        TensorData::random_uniform(ElemType::QS32(QScale::new(0.125)), vec![1, 4, 1, 1], -100.0, 100.0, 3).unwrap(),
    ];
    let r = run(&src, &inputs);
    assert_eq!(r[0].elem(), ElemType::QS8(QScale::new(0.5)));
    assert_eq!(r[0], r[1], "the dot path must be bit-identical to NCHW");
    // Not all zero or saturated: the check is meaningful.
    let v = r[0].to_f64_vec();
    assert!(v.iter().any(|&q| q != 0.0 && q.abs() < 127.0), "{v:?}");
}
