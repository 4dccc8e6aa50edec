//! Differential tests of the pooling lowering against the reference evaluator.

use crate::lower::tests::{check_lowering, check_lowering_with};

fn dims(s: &[usize]) -> String {
    s.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("x")
}

/// A tensor type of stored shape `s` in `layout` (empty: plain NCHW).
fn ty(s: &[usize], layout: &str) -> String {
    if layout.is_empty() { format!("tensor<{}xf32>", dims(s)) } else { format!("tensor<{}xf32, #{layout}>", dims(s)) }
}

/// The stored shape of logical `[n, c, h, w]` in `layout`.
fn stored(layout: &str, [n, c, h, w]: [usize; 4]) -> Vec<usize> {
    match layout {
        "" => vec![n, c, h, w],
        "nchw88" => vec![n, c / 8, h, w, 8],
        "chwn4" => vec![c / 4, h, w, n, 4],
        "nhwcd4" => vec![n, h, c / 4, w, 4],
        _ => vec![n, c / 4, h, w, 4],
    }
}

/// `op` (without dialect prefix) on logical input `x`, result logical spatial
/// size `out`, in `layout`, with attribute text `attrs`.
fn module(op: &str, layout: &str, x: [usize; 4], out: [usize; 2], attrs: &str) -> String {
    let dialect = if layout.is_empty() { "graph" } else { "layout" };
    let xt = ty(&stored(layout, x), layout);
    let ot = ty(&stored(layout, [x[0], x[1], out[0], out[1]]), layout);
    format!(
        "func @main(%x: {xt}) -> {ot} {{
  %0 = {dialect}.{op}(%x) {attrs} : ({xt}) -> {ot}
  return(%0)
}}"
    )
}

fn window_pooling(layout: &str, x: [usize; 4], mode: &str, window: [usize; 2], stride: [usize; 2], pad: [usize; 2]) {
    let out = [0, 1].map(|i| (x[2 + i] + 2 * pad[i] - window[i]) / stride[i] + 1);
    let attrs = format!(
        "{{mode = \"{mode}\", pad = [{}, {}], stride = [{}, {}], window = [{}, {}]}}",
        pad[0], pad[1], stride[0], stride[1], window[0], window[1]
    );
    check_lowering(&module("pooling", layout, x, out, &attrs), 1e-5);
}

const MODES: [&str; 3] = ["max", "average", "average_count_exclude_padding"];

#[test]
fn nchw_window_pooling() {
    for mode in MODES {
        for (window, stride, pad) in [
            ([2, 2], [2, 2], [0, 0]),
            ([3, 3], [1, 1], [1, 1]),
            ([3, 3], [2, 2], [1, 1]),
            ([2, 2], [1, 1], [1, 1]),
            ([3, 2], [1, 2], [1, 0]),
            ([2, 3], [2, 1], [0, 2]),
        ] {
            window_pooling("", [1, 2, 7, 9], mode, window, stride, pad);
        }
        // Narrow rows (no vector columns), a window as wide as the row.
        window_pooling("", [2, 1, 5, 3], mode, [3, 3], [1, 1], [1, 1]);
        window_pooling("", [1, 2, 4, 5], mode, [2, 5], [1, 1], [0, 0]);
        window_pooling("", [1, 1, 3, 6], mode, [3, 7], [2, 2], [1, 1]);
    }
}

#[test]
fn blocked_window_pooling() {
    for mode in MODES {
        for (window, stride, pad) in [([2, 2], [2, 2], [0, 0]), ([3, 3], [2, 2], [1, 1]), ([3, 2], [1, 1], [1, 1])] {
            window_pooling("nchw88", [1, 16, 5, 6], mode, window, stride, pad);
            window_pooling("nchw44", [2, 4, 5, 5], mode, window, stride, pad);
        }
        window_pooling("chwn4", [2, 8, 4, 5], mode, [3, 3], [2, 2], [1, 1]);
        window_pooling("nhwcd4", [1, 8, 5, 4], mode, [2, 3], [1, 2], [1, 1]);
    }
}

#[test]
fn global_average_pooling() {
    for x in [[2, 3, 5, 7], [1, 2, 3, 2], [1, 1, 4, 8], [1, 2, 1, 1]] {
        check_lowering(&module("global_avg_pool", "", x, [1, 1], ""), 1e-5);
    }
    check_lowering(&module("global_avg_pool", "nchw88", [2, 16, 3, 5], [1, 1], ""), 1e-5);
    check_lowering(&module("global_avg_pool", "nchw44", [1, 8, 7, 7], [1, 1], ""), 1e-5);
}

#[test]
fn adaptive_pooling() {
    for mode in ["max", "average"] {
        let attrs = |out: [usize; 2]| format!("{{mode = \"{mode}\", output = [{}, {}]}}", out[0], out[1]);
        for (x, out) in [
            ([1, 2, 7, 5], [3, 2]),
            ([1, 1, 2, 3], [3, 5]),
            ([2, 3, 6, 6], [2, 3]),
            ([1, 2, 5, 9], [1, 1]),
            ([1, 2, 4, 9], [2, 1]),
            ([1, 1, 5, 13], [2, 9]),
        ] {
            check_lowering(&module("adaptive_pooling", "", x, out, &attrs(out)), 1e-5);
        }
        check_lowering(&module("adaptive_pooling", "nchw88", [1, 8, 7, 5], [3, 2], &attrs([3, 2])), 1e-5);
        check_lowering(&module("adaptive_pooling", "nchw44", [2, 4, 3, 4], [1, 1], &attrs([1, 1])), 1e-5);
    }
}

#[test]
fn pooling_fuses_its_epilogue() {
    let text = check_lowering(
        "func @main(%x: tensor<1x2x6x6xf32>, %b: tensor<1x2x1x1xf32>) -> tensor<1x2x3x3xf32> {
  %0 = graph.pooling(%x) {mode = \"average\", pad = [0, 0], stride = [2, 2], window = [2, 2]} : (tensor<1x2x6x6xf32>) -> tensor<1x2x3x3xf32>
  %1 = graph.elemwise(%0, %b) {mode = \"fuse_add_relu\"} : (tensor<1x2x3x3xf32>, tensor<1x2x1x1xf32>) -> tensor<1x2x3x3xf32>
  return(%1)
}",
        1e-5,
    );
    assert_eq!(text.matches("loops.launch").count(), 1, "{text}");
    // Vector columns (stride 1) with a per-channel and a full-shape operand.
    let text = check_lowering(
        "func @main(%x: tensor<1x2x6x9xf32>, %b: tensor<1x2x1x1xf32>, %z: tensor<1x2x6x9xf32>) -> tensor<1x2x6x9xf32> {
  %0 = graph.pooling(%x) {mode = \"max\", pad = [1, 1], stride = [1, 1], window = [3, 3]} : (tensor<1x2x6x9xf32>) -> tensor<1x2x6x9xf32>
  %1 = graph.elemwise(%0, %b) {mode = \"add\"} : (tensor<1x2x6x9xf32>, tensor<1x2x1x1xf32>) -> tensor<1x2x6x9xf32>
  %2 = graph.elemwise(%z, %1) {mode = \"mul\"} : (tensor<1x2x6x9xf32>, tensor<1x2x6x9xf32>) -> tensor<1x2x6x9xf32>
  return(%2)
}",
        1e-5,
    );
    assert_eq!(text.matches("loops.launch").count(), 1, "{text}");
    assert!(text.contains("vec<4xf32>"), "{text}");
    let text = check_lowering(
        "func @main(%x: tensor<1x1x3x3x8xf32, #nchw88>) -> tensor<1x1x1x1x8xf32, #nchw88> {
  %0 = layout.global_avg_pool(%x) : (tensor<1x1x3x3x8xf32, #nchw88>) -> tensor<1x1x1x1x8xf32, #nchw88>
  %1 = graph.elemwise(%0) {mode = \"sigmoid\"} : (tensor<1x1x1x1x8xf32, #nchw88>) -> tensor<1x1x1x1x8xf32, #nchw88>
  return(%1)
}",
        1e-5,
    );
    assert_eq!(text.matches("loops.launch").count(), 1, "{text}");
}

#[test]
fn half_precision_is_refused() {
    let src = "func @main(%x: tensor<1x1x4x4xf16>) -> tensor<1x1x2x2xf16> {
  %0 = graph.pooling(%x) {mode = \"max\", pad = [0, 0], stride = [2, 2], window = [2, 2]} : (tensor<1x1x4x4xf16>) -> tensor<1x1x2x2xf16>
  return(%0)
}";
    let mut ctx = strata_dialects::context();
    let m = strata_ir::parse_module(&mut ctx, &strata_ir::Source::new("t.strata", src), &Default::default()).unwrap();
    let reg = crate::registry();
    let mut pm = strata_ir::pass::PassManager::parse(&reg, "lower-graph-to-loops").unwrap();
    let err = pm.run(&mut ctx, m).unwrap_err().to_string();
    assert!(err.contains("graph.pooling") && err.contains("f16"), "{err}");
}

#[test]
fn blocked_pooling_after_nchwxx() {
    let text = check_lowering_with(
        "nchwxx{layout=nchw88},canonicalize,lower-graph-to-loops",
        "func @main(%x: tensor<1x8x6x6xf32>, %w: tensor<16x8x3x3xf32>, %b: tensor<1x16x1x1xf32>) -> tensor<1x16x3x3xf32> {
  %y = graph.conv_bias(%x, %w, %b) {dilation = [1, 1], group = 1, nonlinearity = \"relu\", pad = [1, 1], stride = [1, 1]} : (tensor<1x8x6x6xf32>, tensor<16x8x3x3xf32>, tensor<1x16x1x1xf32>) -> tensor<1x16x6x6xf32>
  %p = graph.pooling(%y) {mode = \"max\", pad = [1, 1], stride = [2, 2], window = [3, 3]} : (tensor<1x16x6x6xf32>) -> tensor<1x16x3x3xf32>
  return(%p)
}",
        1e-5,
    );
    let kernel = text.lines().find(|l| l.starts_with("func @main_k") && l.contains("pooling"));
    assert!(kernel.is_some_and(|l| l.contains("#nchw88")), "{text}");
}
