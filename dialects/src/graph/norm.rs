//! `graph.batch_norm` and `graph.softmax` (reference: `docs/graph-dialect.md`).
//!
//! - `batch_norm(x [N, C, H, W], scale, bias, mean, var)`, each parameter
//!   `[1, C, 1, 1]`, computes `(x - mean) / sqrt(var + epsilon) · scale + bias`
//!   per channel (inference form: the statistics are operands). `epsilon` is a
//!   finite float `>= 0`.
//! - `softmax(x)` along `axis` (negative counts from the end):
//!   `exp(x - max) / sum(exp(x - max))`, the max and sum taken along the axis.
//!
//! Every dim may be symbolic (all pass through); `batch_norm`'s parameters must
//! have the same channel dim as `x`. Element types: `f32`, `f16`, `bf16`, all
//! operands alike; computed in `f64` and rounded once to the result type.

use super::common::{expect_rank, norm_axis, show};
use strata_ir::{Dim, ElemType, Layout, OpCx, Registry, TensorData, TensorType, TypeData, define_op};

define_op! {
    /// Inference batch normalisation with per-channel `scale`, `bias`, `mean`, `var` (`[1, C, 1, 1]`).
    pub struct BatchNormOp = "graph.batch_norm" {
        summary: "batch normalisation (inference) per channel",
        operands: [x, scale, bias, mean, var],
        results: [output],
        attrs: { epsilon: Float },
        optional_attrs: {},
        traits: [PURE],
        infer: infer_batch_norm,
        eval: eval_batch_norm,
    }
}

define_op! {
    /// Softmax along `axis`: `exp(x - max) / sum`.
    pub struct SoftmaxOp = "graph.softmax" {
        summary: "softmax along an axis",
        operands: [x],
        results: [output],
        attrs: { axis: Int },
        optional_attrs: {},
        traits: [PURE],
        infer: infer_softmax,
        eval: eval_softmax,
    }
}

pub(crate) fn register(r: &mut Registry) {
    for def in [BatchNormOp::DEF, SoftmaxOp::DEF] {
        r.register(def).expect("invariant: graph ops register once");
    }
}

const PARAMS: [&str; 4] = ["scale", "bias", "mean", "var"];

fn check_float(cx: &OpCx<'_>, x: &TensorType) -> Result<(), String> {
    if x.elem.is_float() {
        Ok(())
    } else {
        Err(format!("operand `x` has element type {}, which `{}` does not support (f32, f16, bf16)", x.elem, cx.name))
    }
}

/// The declared result element type, which must be `inferred`.
fn result_elem(cx: &OpCx<'_>, inferred: ElemType) -> Result<ElemType, String> {
    match cx.result_tensor(0) {
        Ok(t) if t.elem != inferred => {
            Err(format!("the declared result element type {} differs from the inferred {inferred}", t.elem))
        }
        _ => Ok(inferred),
    }
}

/// Checks `x`, the four parameters and `epsilon`; returns epsilon.
fn check_batch_norm(cx: &OpCx<'_>, types: &[TensorType]) -> Result<f64, String> {
    let [x, params @ ..] = types else {
        return Err("expects operands x, scale, bias, mean, var".into());
    };
    if params.len() != PARAMS.len() {
        return Err(format!("expects 5 operands (x, scale, bias, mean, var), got {}", types.len()));
    }
    expect_rank(cx, x, 4, "operand `x` ([N, C, H, W])")?;
    check_float(cx, x)?;
    let want = [Dim::Fixed(1), x.shape[1], Dim::Fixed(1), Dim::Fixed(1)];
    for (name, p) in PARAMS.iter().zip(params) {
        expect_rank(cx, p, 4, &format!("operand `{name}` ([1, C, 1, 1])"))?;
        if p.shape != want {
            return Err(format!("operand `{name}` must have shape {}, has {}", show(cx, &want), show(cx, &p.shape)));
        }
        if p.elem != x.elem {
            return Err(format!(
                "operand `{name}` must have the element type of operand `x` ({}), has {}",
                x.elem, p.elem
            ));
        }
    }
    let eps = cx.attrs.float("epsilon")?;
    if !(eps.is_finite() && eps >= 0.0) {
        return Err(format!("attribute `epsilon` must be a finite float >= 0, is {eps}"));
    }
    Ok(eps)
}

fn operand_types(cx: &OpCx<'_>) -> Result<Vec<TensorType>, String> {
    (0..cx.operand_types.len()).map(|i| cx.tensor(i).cloned()).collect()
}

fn type_of(t: &TensorData) -> TensorType {
    TensorType::fixed(&t.shape().iter().map(|&d| d as u64).collect::<Vec<_>>(), t.elem())
}

fn infer_batch_norm(cx: &OpCx<'_>) -> Result<Vec<TypeData>, String> {
    let types = operand_types(cx)?;
    check_batch_norm(cx, &types)?;
    Ok(vec![TypeData::Tensor(types[0].clone())])
}

fn eval_batch_norm(cx: &OpCx<'_>, inputs: &[TensorData]) -> Result<Vec<TensorData>, String> {
    let types: Vec<TensorType> = inputs.iter().map(type_of).collect();
    let eps = check_batch_norm(cx, &types)?;
    let [x, scale, bias, mean, var] = inputs else {
        return Err(format!("expects 5 inputs (x, scale, bias, mean, var), got {}", inputs.len()));
    };
    let elem = result_elem(cx, x.elem())?;
    let s = x.shape();
    if x.is_empty() {
        return Ok(vec![TensorData::zeros(elem, s.to_vec()).map_err(|e| e.to_string())?]);
    }
    // Every dim is non-zero, so no partial product exceeds the element count.
    let (c, plane) = (s[1], s[2] * s[3]);
    let out: Vec<f64> = (0..x.len())
        .map(|i| {
            let ch = (i / plane) % c;
            (x.get_real(i) - mean.get_real(ch)) / (var.get_real(ch) + eps).sqrt() * scale.get_real(ch)
                + bias.get_real(ch)
        })
        .collect();
    Ok(vec![TensorData::from_reals(elem, s.to_vec(), &out).map_err(|e| e.to_string())?])
}

/// Checks `x` and `axis`; returns the normalised axis.
fn check_softmax(cx: &OpCx<'_>, x: &TensorType) -> Result<usize, String> {
    if x.layout != Layout::Nchw {
        return Err(format!("operand `x` must have the plain layout, has #{}", x.layout));
    }
    check_float(cx, x)?;
    let axis = cx.attrs.int("axis")?;
    norm_axis(axis, x.shape.len())
        .map_err(|e| format!("attribute `axis`: {e} (operand `x` has shape {})", show(cx, &x.shape)))
}

fn infer_softmax(cx: &OpCx<'_>) -> Result<Vec<TypeData>, String> {
    let x = cx.tensor(0)?;
    check_softmax(cx, x)?;
    Ok(vec![TypeData::Tensor(x.clone())])
}

fn eval_softmax(cx: &OpCx<'_>, inputs: &[TensorData]) -> Result<Vec<TensorData>, String> {
    let x = super::common::one(inputs)?;
    let axis = check_softmax(cx, &type_of(x))?;
    let elem = result_elem(cx, x.elem())?;
    let s = x.shape();
    if x.is_empty() {
        return Ok(vec![TensorData::zeros(elem, s.to_vec()).map_err(|e| e.to_string())?]);
    }
    // Every dim is non-zero, so no partial product exceeds the element count.
    let (len, inner) = (s[axis], s[axis + 1..].iter().product::<usize>());
    let outer = s[..axis].iter().product::<usize>();
    let reals = x.to_reals();
    let mut out = vec![0.0; reals.len()];
    for o in 0..outer {
        for i in 0..inner {
            let at = |a: usize| (o * len + a) * inner + i;
            let max = (0..len).map(|a| reals[at(a)]).fold(f64::NEG_INFINITY, f64::max);
            let exps: Vec<f64> = (0..len).map(|a| (reals[at(a)] - max).exp()).collect();
            let sum: f64 = exps.iter().sum();
            for (a, e) in exps.into_iter().enumerate() {
                out[at(a)] = e / sum;
            }
        }
    }
    Ok(vec![TensorData::from_reals(elem, s.to_vec(), &out).map_err(|e| e.to_string())?])
}

#[cfg(test)]
mod tests {
    use super::super::conv::test_support::{assert_close, eval, eval_unchecked, f32s, infer, random};
    use super::*;
    use strata_ir::tensor::SplitMix64;

    #[test]
    fn batch_norm_by_hand() {
        let x = f32s(&[1, 2, 1, 2], &[1.0, 3.0, 10.0, 20.0]);
        let scale = f32s(&[1, 2, 1, 1], &[2.0, 1.0]);
        let bias = f32s(&[1, 2, 1, 1], &[1.0, -1.0]);
        let mean = f32s(&[1, 2, 1, 1], &[2.0, 15.0]);
        let var = f32s(&[1, 2, 1, 1], &[3.0, 24.0]);
        let y = eval("graph.batch_norm", &[x, scale, bias, mean, var], &[("epsilon", "1.0")]).unwrap();
        // channel 0: (x - 2)/2·2 + 1; channel 1: (x - 15)/5 - 1
        assert_eq!(y.to_reals(), vec![0.0, 2.0, -2.0, 0.0]);
    }

    #[test]
    fn batch_norm_matches_the_formula() {
        let mut rng = SplitMix64(41);
        for case in 0..10u64 {
            let mut pick = |hi: u64| 1 + (rng.next_u64() % hi) as usize;
            let shape = [pick(2), pick(4), pick(4), pick(4)];
            let c = shape[1];
            let x = random(ElemType::F32, &shape, case);
            let scale = random(ElemType::F32, &[1, c, 1, 1], case + 10);
            let bias = random(ElemType::F32, &[1, c, 1, 1], case + 20);
            let mean = random(ElemType::F32, &[1, c, 1, 1], case + 30);
            let var = TensorData::random_uniform(ElemType::F32, vec![1, c, 1, 1], 0.0, 2.0, case + 40).unwrap();
            let eps = 1e-5;
            let y = eval(
                "graph.batch_norm",
                &[x.clone(), scale.clone(), bias.clone(), mean.clone(), var.clone()],
                &[("epsilon", "1e-5")],
            )
            .unwrap();
            let plane = shape[2] * shape[3];
            let want: Vec<f64> = x
                .to_reals()
                .iter()
                .enumerate()
                .map(|(i, &v)| {
                    let ch = (i / plane) % c;
                    scale.get_real(ch) * (v - mean.get_real(ch)) / (var.get_real(ch) + eps).sqrt() + bias.get_real(ch)
                })
                .collect();
            assert_close(&y.to_reals(), &want, 1e-6, 1e-5);
        }
    }

    #[test]
    fn softmax_by_hand() {
        let x = f32s(&[2, 2], &[0.0, 0.0, 1.0, 3.0]);
        let y = eval("graph.softmax", std::slice::from_ref(&x), &[("axis", "1")]).unwrap();
        let e = (2.0f64).exp();
        assert_close(&y.to_reals(), &[0.5, 0.5, 1.0 / (1.0 + e), e / (1.0 + e)], 1e-7, 0.0);
        // Along axis 0 (= -2): columns.
        let y = eval("graph.softmax", &[x], &[("axis", "-2")]).unwrap();
        let (a, b) = (1.0 / (1.0 + 1f64.exp()), 1.0 / (1.0 + 3f64.exp()));
        assert_close(&y.to_reals(), &[a, b, 1.0 - a, 1.0 - b], 1e-7, 0.0);
        // Subtracting the max keeps huge inputs finite.
        let y = eval("graph.softmax", &[f32s(&[3], &[1000.0, 1000.0, -1000.0])], &[("axis", "0")]).unwrap();
        assert_eq!(y.to_reals(), vec![0.5, 0.5, 0.0]);
    }

    #[test]
    fn softmax_rows_sum_to_one() {
        let mut rng = SplitMix64(42);
        for case in 0..20u64 {
            let rank = 1 + (rng.next_u64() % 4) as usize;
            let shape: Vec<usize> = (0..rank).map(|_| 1 + (rng.next_u64() % 5) as usize).collect();
            let axis = (rng.next_u64() % (2 * rank as u64)) as i64 - rank as i64;
            let x = TensorData::random_uniform(ElemType::F32, shape.clone(), -20.0, 20.0, case).unwrap();
            let y = eval("graph.softmax", &[x], &[("axis", &axis.to_string())]).unwrap();
            let a = norm_axis(axis, rank).unwrap();
            let (len, inner) = (shape[a], shape[a + 1..].iter().product::<usize>());
            let outer = shape[..a].iter().product::<usize>();
            let v = y.to_reals();
            assert!(v.iter().all(|&p| (0.0..=1.0).contains(&p)));
            for o in 0..outer {
                for i in 0..inner {
                    let sum: f64 = (0..len).map(|k| v[(o * len + k) * inner + i]).sum();
                    assert!((sum - 1.0).abs() < 1e-6, "case {case}: {shape:?} axis {axis}: sum {sum}");
                }
            }
        }
    }

    #[test]
    fn half_types_round_once() {
        for elem in [ElemType::F16, ElemType::BF16] {
            let x = random(elem, &[2, 3, 2, 2], 1);
            let p = |seed| random(elem, &[1, 3, 1, 1], seed);
            let var = TensorData::random_uniform(elem, vec![1, 3, 1, 1], 0.5, 1.0, 9).unwrap();
            let y = eval("graph.batch_norm", &[x.clone(), p(2), p(3), p(4), var], &[("epsilon", "0.001")]).unwrap();
            assert_eq!(y.elem(), elem);
            let y = eval("graph.softmax", std::slice::from_ref(&x), &[("axis", "1")]).unwrap();
            assert_eq!(y.elem(), elem);
            let y32 = eval("graph.softmax", &[f32s(x.shape(), &x.to_reals())], &[("axis", "1")]).unwrap();
            let rounded = TensorData::from_reals(elem, y32.shape().to_vec(), &y32.to_reals()).unwrap();
            assert_close(&y.to_reals(), &rounded.to_reals(), 1e-2, 1e-3);
        }
    }

    #[test]
    fn symbolic_dims_pass_through() {
        let p = "tensor<1x?Cx1x1xf32>";
        assert_eq!(
            infer("graph.batch_norm", &["tensor<?Nx?Cx?Hx7xf32>", p, p, p, p], &[("epsilon", "1e-5")]).unwrap(),
            "tensor<?Nx?Cx?Hx7xf32>"
        );
        assert_eq!(infer("graph.softmax", &["tensor<?Nx?Kxbf16>"], &[("axis", "-1")]).unwrap(), "tensor<?Nx?Kxbf16>");
    }

    #[test]
    fn bad_inputs_are_errors() {
        let x = "tensor<2x3x4x4xf32>";
        let p = "tensor<1x3x1x1xf32>";
        let eps = [("epsilon", "1e-5")];
        let bn = |types: &[&str], a: &[(&str, &str)]| infer("graph.batch_norm", types, a).unwrap_err();
        for (types, a, want) in [
            (vec!["tensor<2x3x4xf32>", p, p, p, p], &eps[..], "rank 4"),
            (vec![x, "tensor<3xf32>", p, p, p], &eps[..], "operand `scale`"),
            (vec![x, p, "tensor<1x4x1x1xf32>", p, p], &eps[..], "operand `bias` must have shape [1, 3, 1, 1]"),
            (vec![x, p, p, "tensor<1x3x1x1xf16>", p], &eps[..], "operand `mean`"),
            (vec![x, p, p, p, "tensor<1x3x2x1xf32>"], &eps[..], "operand `var`"),
            (vec!["tensor<2x3x4x4xi32>", p, p, p, p], &eps[..], "i32"),
            (vec![x, p, p, p, p], &[("epsilon", "-1.0")][..], "`epsilon`"),
            (vec![x, p, p, p, p], &[("epsilon", "nan")][..], "`epsilon`"),
            (vec![x, p, p, p, p], &[][..], "`epsilon`"),
            (vec!["tensor<2x?Cx4x4xf32>", p, p, p, p], &eps[..], "?C"),
        ] {
            let err = bn(&types, a);
            assert!(err.contains(want), "{types:?}: `{err}` should mention `{want}`");
        }
        for (ty, axis, want) in [
            ("tensor<2x3xf32>", "2", "out of range"),
            ("tensor<2x3xf32>", "-3", "out of range"),
            ("tensor<f32>", "0", "out of range"),
            ("tensor<2x3xi8>", "0", "i8"),
            ("tensor<2x3xqs8<0.5>>", "0", "qs8"),
            ("tensor<2x3x4x4xf32, #nhwc>", "0", "layout"),
            ("tensor<2x3xf32>", "-9223372036854775808", "out of range"),
        ] {
            let err = infer("graph.softmax", &[ty], &[("axis", axis)]).unwrap_err();
            assert!(err.contains(want), "{ty} axis {axis}: `{err}` should mention `{want}`");
        }
        let err = eval_unchecked("graph.softmax", &[], &[("axis", "0")]).unwrap_err();
        assert!(err.contains("1 input"), "{err}");
        let one = f32s(&[1, 1, 1, 1], &[1.0]);
        let err = eval_unchecked("graph.batch_norm", &[one.clone(), one.clone()], &eps).unwrap_err();
        assert!(err.contains("5 operands"), "{err}");
        let err = eval_unchecked(
            "graph.batch_norm",
            &[one.clone(), one.clone(), one.clone(), one.clone(), f32s(&[1], &[1.0])],
            &eps,
        )
        .unwrap_err();
        assert!(err.contains("operand `var`"), "{err}");
        // Empty tensors and axes of size zero evaluate to empty results.
        let y = eval("graph.softmax", &[f32s(&[2, 0, 3], &[])], &[("axis", "1")]).unwrap();
        assert_eq!(y.shape(), &[2, 0, 3]);
    }
}
