//! Differential tests of the matmul lowering against the reference evaluator.

use crate::lower::tests::check_lowering;
use strata_ir::tensor::SplitMix64;

fn dims(s: &[usize]) -> String {
    s.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("x")
}

/// A module computing one (batched) product of the given logical sizes.
fn product(batch: Option<usize>, m: usize, k: usize, n: usize, ta: bool, tb: bool) -> String {
    let b: Vec<usize> = batch.into_iter().collect();
    let with = |x: usize, y: usize| dims(&[b.clone(), vec![x, y]].concat());
    let a_ty = if ta { with(k, m) } else { with(m, k) };
    let b_ty = if tb { with(n, k) } else { with(k, n) };
    let o_ty = with(m, n);
    let op = if batch.is_some() { "graph.batched_matmul" } else { "graph.matmul" };
    format!(
        "func @main(%a: tensor<{a_ty}xf32>, %b: tensor<{b_ty}xf32>) -> tensor<{o_ty}xf32> {{
  %0 = {op}(%a, %b) {{transpose_a = {ta}, transpose_b = {tb}}} : (tensor<{a_ty}xf32>, tensor<{b_ty}xf32>) -> tensor<{o_ty}xf32>
  return(%0)
}}"
    )
}

#[test]
fn every_transpose_combination_on_odd_shapes() {
    for (m, k, n) in [(1, 1, 1), (3, 5, 7), (5, 4, 9), (2, 9, 4), (6, 3, 13), (4, 8, 8), (7, 2, 3)] {
        for ta in [false, true] {
            for tb in [false, true] {
                check_lowering(&product(None, m, k, n, ta, tb), 1e-5);
            }
        }
    }
}

#[test]
fn random_shapes_and_batches() {
    let mut rng = SplitMix64(5);
    for case in 0..12 {
        let mut pick = |hi: u64| 1 + (rng.next_u64() % hi) as usize;
        let (m, k, n) = (pick(9), pick(10), pick(11));
        let batch = (case % 2 == 0).then(|| pick(3));
        check_lowering(&product(batch, m, k, n, case % 3 == 1, case % 4 >= 2), 1e-5);
    }
}

#[test]
fn gemv_shapes() {
    for tb in [false, true] {
        let text = check_lowering(&product(None, 1, 37, 40, false, tb), 1e-5);
        assert_eq!(text.matches("loops.parallel").count(), 1, "{text}");
        assert!(text.contains("vec<4xf32>"), "{text}");
    }
    check_lowering(&product(Some(2), 1, 13, 6, false, false), 1e-5);
}

#[test]
fn empty_contraction_gives_zeros() {
    check_lowering(&product(None, 3, 0, 5, false, false), 1e-6);
}

#[test]
fn bias_and_relu_fuse_into_the_product() {
    let text = check_lowering(
        "func @main(%a: tensor<3x6xf32>, %w: tensor<5x6xf32>, %b: tensor<1x5xf32>) -> tensor<3x5xf32> {
  %0 = graph.matmul(%a, %w) {transpose_b = true} : (tensor<3x6xf32>, tensor<5x6xf32>) -> tensor<3x5xf32>
  %1 = graph.elemwise(%0, %b) {mode = \"add\"} : (tensor<3x5xf32>, tensor<1x5xf32>) -> tensor<3x5xf32>
  %2 = graph.elemwise(%1) {mode = \"relu\"} : (tensor<3x5xf32>) -> tensor<3x5xf32>
  return(%2)
}",
        1e-5,
    );
    assert_eq!(text.matches("loops.launch").count(), 1, "{text}");
    let text = check_lowering(
        "func @main(%a: tensor<2x7xf32>, %w: tensor<7x9xf32>, %b: tensor<9xf32>) -> tensor<2x9xf32> {
  %0 = graph.matmul(%a, %w) : (tensor<2x7xf32>, tensor<7x9xf32>) -> tensor<2x9xf32>
  %1 = graph.elemwise(%0, %b) {mode = \"fuse_add_relu\"} : (tensor<2x9xf32>, tensor<9xf32>) -> tensor<2x9xf32>
  return(%1)
}",
        1e-5,
    );
    assert_eq!(text.matches("loops.launch").count(), 1, "{text}");
}

#[test]
fn constant_weights_are_read_from_a_constant_buffer() {
    let text = check_lowering(
        "func @main(%a: tensor<1x8xf32>) -> tensor<1x12xf32> {
  %w = graph.const() {value = dense<0.5> : tensor<8x12xf32>} : () -> tensor<8x12xf32>
  %0 = graph.matmul(%a, %w) : (tensor<1x8xf32>, tensor<8x12xf32>) -> tensor<1x12xf32>
  return(%0)
}",
        1e-6,
    );
    assert!(text.contains("loops.constant"), "{text}");
}

#[test]
fn half_precision_is_refused() {
    let mut ctx = strata_dialects::context();
    let src = "func @main(%a: tensor<2x3xf16>, %b: tensor<3x4xf16>) -> tensor<2x4xf16> {
  %0 = graph.matmul(%a, %b) : (tensor<2x3xf16>, tensor<3x4xf16>) -> tensor<2x4xf16>
  return(%0)
}";
    let m = strata_ir::parse_module(&mut ctx, &strata_ir::Source::new("t.strata", src), &Default::default()).unwrap();
    let reg = crate::registry();
    let mut pm = strata_ir::pass::PassManager::parse(&reg, "lower-graph-to-loops").unwrap();
    let err = pm.run(&mut ctx, m).unwrap_err().to_string();
    assert!(err.contains("graph.matmul") && err.contains("f16") && err.contains("only f32"), "{err}");
}
