//! Differential tests of the softmax and batch-norm lowerings.

use crate::lower::tests::check_lowering;
use strata_ir::pass::PassManager;
use strata_ir::{ParseOptions, Source, parse_module};

fn t(shape: &[usize], elem: &str) -> String {
    let dims: String = shape.iter().map(|d| format!("{d}x")).collect();
    format!("tensor<{dims}{elem}>")
}

fn softmax(shape: &[usize], axis: i64, elem: &str) -> String {
    let ty = t(shape, elem);
    format!(
        "func @main(%x: {ty}) -> {ty} {{\n  %0 = graph.softmax(%x) {{axis = {axis}}} : ({ty}) -> {ty}\n  return(%0)\n}}"
    )
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

#[test]
fn softmax_on_each_axis() {
    for shape in [&[2usize, 3, 9][..], &[3, 5, 4, 6], &[1, 2, 3, 1]] {
        let rank = shape.len() as i64;
        for axis in -rank..rank {
            check_lowering(&softmax(shape, axis, "f32"), 1e-5);
        }
    }
    // Rank 1, short and long rows (vector loop + remainder).
    for n in [1usize, 3, 4, 13] {
        check_lowering(&softmax(&[n], 0, "f32"), 1e-5);
    }
}

#[test]
fn softmax_vectorises_along_the_last_axis() {
    let text = check_lowering(&softmax(&[3, 16], 1, "f32"), 1e-5);
    assert!(text.contains("loops.reduce_lanes"), "{text}");
    let text = check_lowering(&softmax(&[5, 8], 0, "f32"), 1e-5);
    assert!(text.contains("vec<4xf32>") && !text.contains("loops.reduce_lanes"), "{text}");
}

#[test]
fn softmax_is_stable_on_large_inputs() {
    let src = "func @main(%x: tensor<2x5xf32>) -> tensor<2x5xf32> {
  %k = graph.const() {value = dense<300.0> : tensor<1xf32>} : () -> tensor<1xf32>
  %0 = graph.elemwise(%x, %k) {mode = \"mul\"} : (tensor<2x5xf32>, tensor<1xf32>) -> tensor<2x5xf32>
  %1 = graph.softmax(%0) {axis = 1} : (tensor<2x5xf32>) -> tensor<2x5xf32>
  return(%1)
}";
    check_lowering(src, 1e-5);
}

#[test]
fn softmax_of_f16_is_refused() {
    let e = lowering_error(&softmax(&[2, 3], 1, "f16"));
    assert!(e.contains("f32 only"), "{e}");
}

fn batch_norm(x: [usize; 4], elem: &str, eps: &str) -> String {
    let c = x[1];
    let xt = t(&x, elem);
    let p = t(&[1, c, 1, 1], elem);
    let var: Vec<String> = (0..c).map(|i| format!("{}", 0.25 + i as f64 * 0.5)).collect();
    format!(
        "func @main(%x: {xt}, %s: {p}, %b: {p}, %m: {p}) -> {xt} {{
  %v = graph.const() {{value = dense<[{}]> : {p}}} : () -> {p}
  %0 = graph.batch_norm(%x, %s, %b, %m, %v) {{epsilon = {eps}}} : ({xt}, {p}, {p}, {p}, {p}) -> {xt}
  return(%0)
}}",
        var.join(", ")
    )
}

#[test]
fn batch_norm_matches_the_reference() {
    for x in [[2, 3, 4, 7], [1, 5, 2, 3], [1, 2, 1, 16]] {
        let text = check_lowering(&batch_norm(x, "f32", "1e-5"), 1e-5);
        if x[3] >= 4 {
            assert!(text.contains("vec<4xf32>"), "{text}");
        }
    }
    check_lowering(&batch_norm([1, 3, 2, 5], "f32", "0.5"), 1e-5);
}

#[test]
fn batch_norm_of_f16_is_refused() {
    let e = lowering_error(&batch_norm([1, 2, 2, 2], "f16", "1e-5"));
    assert!(e.contains("f32 only"), "{e}");
}
