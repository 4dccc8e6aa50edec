//! Differential tests of the reduce lowering against the reference evaluator.

use crate::lower::tests::check_lowering;

fn dims(s: &[usize]) -> String {
    s.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("x")
}

fn tensor(shape: &[usize], elem: &str) -> String {
    if shape.is_empty() { format!("tensor<{elem}>") } else { format!("tensor<{}x{elem}>", dims(shape)) }
}

fn reduce(shape: &[usize], elem: &str, mode: &str, axis: i64, keepdim: bool) -> String {
    let rank = shape.len() as i64;
    let ax = if axis < 0 { axis + rank } else { axis } as usize;
    let mut out = shape.to_vec();
    if keepdim {
        out[ax] = 1;
    } else {
        out.remove(ax);
    }
    let (x, o) = (tensor(shape, elem), tensor(&out, elem));
    format!(
        "func @main(%x: {x}) -> {o} {{
  %0 = graph.reduce(%x) {{axis = {axis}, keepdim = {keepdim}, mode = \"{mode}\"}} : ({x}) -> {o}
  return(%0)
}}"
    )
}

const MODES: [&str; 5] = ["sum", "mean", "max", "min", "prod"];

#[test]
fn every_f32_mode_axis_and_keepdim() {
    let shape = [2, 3, 9];
    for mode in MODES {
        for axis in 0..3 {
            for keepdim in [false, true] {
                check_lowering(&reduce(&shape, "f32", mode, axis, keepdim), 1e-5);
            }
        }
    }
}

#[test]
fn f32_odd_shapes_and_negative_axes() {
    for (shape, axis) in [
        (vec![13], 0),
        (vec![4], -1),
        (vec![3], 0),
        (vec![5, 6], -2),
        (vec![3, 17], 1),
        (vec![2, 5, 3, 6], 2),
        (vec![2, 3, 4, 1], 3),
        (vec![1, 7, 5], 0),
        (vec![2, 37], 1),
        (vec![70], 0),
        (vec![2, 3, 12], -1),
    ] {
        for mode in MODES {
            for keepdim in [false, true] {
                check_lowering(&reduce(&shape, "f32", mode, axis, keepdim), 1e-5);
            }
        }
    }
}

#[test]
fn integer_reductions_are_scalar_loops() {
    for elem in ["i32", "i8", "u8", "i16", "i64"] {
        for mode in MODES {
            for axis in [0, 1] {
                check_lowering(&reduce(&[3, 5], elem, mode, axis, axis == 1), 0.0);
            }
        }
    }
}

#[test]
fn empty_axes_follow_the_reference() {
    for mode in ["sum", "prod", "mean"] {
        check_lowering(&reduce(&[3, 0], "f32", mode, 1, false), 0.0);
    }
}

#[test]
fn blocked_reduce_over_h() {
    let x = "tensor<1x2x3x5x8xf32, #nchw88>";
    let o = "tensor<1x2x1x5x8xf32, #nchw88>";
    for mode in MODES {
        check_lowering(
            &format!(
                "func @main(%x: {x}) -> {o} {{
  %0 = graph.reduce(%x) {{axis = 2, keepdim = true, mode = \"{mode}\"}} : ({x}) -> {o}
  return(%0)
}}"
            ),
            1e-5,
        );
    }
}

#[test]
fn half_precision_and_quantised_sums_are_refused() {
    // f16 is promoted to f32 before lowering (promote-f16-compute); quantised
    // max/min lower (stored integers), quantised sums do not.
    for (elem, mode, want) in [("f16", "max", "only f32"), ("qs8<0.5>", "sum", "quantised")] {
        let src = reduce(&[2, 3], elem, mode, 1, false);
        let mut ctx = strata_dialects::context();
        let m =
            strata_ir::parse_module(&mut ctx, &strata_ir::Source::new("t.strata", &src), &Default::default()).unwrap();
        let reg = crate::registry();
        let mut pm = strata_ir::pass::PassManager::parse(&reg, "lower-graph-to-loops").unwrap();
        let err = pm.run(&mut ctx, m).unwrap_err().to_string();
        assert!(err.contains("graph.reduce") && err.contains(want), "{elem}: {err}");
    }
}
