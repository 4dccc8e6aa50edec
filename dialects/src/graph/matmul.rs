//! `graph.matmul` and `graph.batched_matmul`: matrix products (reference:
//! `docs/graph-dialect.md`).
//!
//! - `matmul(a [M, K], b [K, N])` gives `[M, N]`;
//! - `batched_matmul(a [B, M, K], b [B, K, N])` gives `[B, M, N]`, one product
//!   per batch (the batch dims must be equal; there is no broadcasting).
//!
//! `transpose_a` / `transpose_b` (optional bools, `false` when absent) say that
//! the operand is stored transposed: `a` as `[K, M]`, `b` as `[N, K]`.
//!
//! Symbolic dims pass through (`M`, `N`, the batch `B`); the contracted `K` of
//! both operands must be the same dim (equal sizes, or the same symbol).
//! Element types: `f32`, `f16`, `bf16`, both operands alike; products are
//! accumulated in `f64` and rounded once to the result type.
//! Optional `compute_mode`: `"default"` or `"float32"` (f16/bf16 operands
//! only), evaluated alike (see `conv::check_compute_mode`).

use super::common::{expect_rank, show};
use strata_ir::tensor::num_elements;
use strata_ir::{Dim, ElemType, OpCx, Registry, TensorData, TensorType, TypeData, define_op};

define_op! {
    /// Matrix product: `a [M, K]` times `b [K, N]` (either stored transposed).
    pub struct MatmulOp = "graph.matmul" {
        summary: "matrix product (optionally transposed operands)",
        operands: [a, b],
        results: [output],
        attrs: {},
        optional_attrs: { transpose_a: Bool, transpose_b: Bool, compute_mode: Str },
        traits: [PURE],
        infer: infer_matmul,
        eval: eval_matmul,
    }
}

define_op! {
    /// Batched matrix product: `a [B, M, K]` times `b [B, K, N]`, per batch.
    pub struct BatchedMatmulOp = "graph.batched_matmul" {
        summary: "batched matrix product (optionally transposed operands)",
        operands: [a, b],
        results: [output],
        attrs: {},
        optional_attrs: { transpose_a: Bool, transpose_b: Bool, compute_mode: Str },
        traits: [PURE],
        infer: infer_batched_matmul,
        eval: eval_batched_matmul,
    }
}

pub(crate) fn register(r: &mut Registry) {
    for def in [MatmulOp::DEF, BatchedMatmulOp::DEF] {
        r.register(def).expect("invariant: graph ops register once");
    }
}

/// The checked shape of a (batched) product: `[B], M, K, N` as dims.
struct Product {
    batch: Option<Dim>,
    m: Dim,
    k: Dim,
    n: Dim,
    ta: bool,
    tb: bool,
    elem: ElemType,
}

impl Product {
    fn out_shape(&self) -> Vec<Dim> {
        self.batch.into_iter().chain([self.m, self.n]).collect()
    }
}

/// Checks `a` and `b` (rank 2, or 3 when `batched`) and the transpose flags.
fn check(cx: &OpCx<'_>, a: &TensorType, b: &TensorType, batched: bool) -> Result<Product, String> {
    let (rank, form_a, form_b) = if batched { (3, "[B, M, K]", "[B, K, N]") } else { (2, "[M, K]", "[K, N]") };
    expect_rank(cx, a, rank, &format!("operand `a` ({form_a})"))?;
    expect_rank(cx, b, rank, &format!("operand `b` ({form_b})"))?;
    if !a.elem.is_float() {
        return Err(format!(
            "operand `a` has element type {}, which `{}` does not support (f32, f16, bf16)",
            a.elem, cx.name
        ));
    }
    if b.elem != a.elem {
        return Err(format!("operand `b` must have the element type of operand `a` ({}), has {}", a.elem, b.elem));
    }
    super::conv::check_compute_mode(cx, a.elem)?;
    let (ta, tb) = (cx.attrs.flag("transpose_a")?, cx.attrs.flag("transpose_b")?);
    let off = usize::from(batched);
    let (r0, r1) = (a.shape[off], a.shape[off + 1]);
    let (m, k) = if ta { (r1, r0) } else { (r0, r1) };
    let (c0, c1) = (b.shape[off], b.shape[off + 1]);
    let (kb, n) = if tb { (c1, c0) } else { (c0, c1) };
    let dim = |d: Dim| show(cx, &[d]).trim_matches(['[', ']']).to_string();
    if k != kb {
        return Err(format!(
            "the contracted dims differ: operand `a` {} gives K = {}{}, operand `b` {} gives K = {}{}",
            show(cx, &a.shape),
            dim(k),
            if ta { " (transpose_a)" } else { "" },
            show(cx, &b.shape),
            dim(kb),
            if tb { " (transpose_b)" } else { "" },
        ));
    }
    let batch = if batched {
        if a.shape[0] != b.shape[0] {
            return Err(format!(
                "the batch dims differ: operand `a` has {}, operand `b` has {}",
                dim(a.shape[0]),
                dim(b.shape[0])
            ));
        }
        Some(a.shape[0])
    } else {
        None
    };
    Ok(Product { batch, m, k, n, ta, tb, elem: a.elem })
}

fn infer_with(cx: &OpCx<'_>, batched: bool) -> Result<Vec<TypeData>, String> {
    let p = check(cx, cx.tensor(0)?, cx.tensor(1)?, batched)?;
    Ok(vec![super::common::tensor(p.elem, p.out_shape())])
}

fn infer_matmul(cx: &OpCx<'_>) -> Result<Vec<TypeData>, String> {
    infer_with(cx, false)
}

fn infer_batched_matmul(cx: &OpCx<'_>) -> Result<Vec<TypeData>, String> {
    infer_with(cx, true)
}

/// The reference product on reals, `batch` times `[m, k] x [k, n]`, with `a`
/// stored as `[k, m]` when `ta` and `b` as `[n, k]` when `tb`.
#[allow(clippy::too_many_arguments)]
fn matmul_reals(batch: usize, m: usize, k: usize, n: usize, ta: bool, tb: bool, a: &[f64], b: &[f64]) -> Vec<f64> {
    let mut out = Vec::with_capacity(batch * m * n);
    for bi in 0..batch {
        let (a, b) = (&a[bi * m * k..(bi + 1) * m * k], &b[bi * k * n..(bi + 1) * k * n]);
        for i in 0..m {
            for j in 0..n {
                let mut acc = 0.0;
                for l in 0..k {
                    let av = if ta { a[l * m + i] } else { a[i * k + l] };
                    let bv = if tb { b[j * k + l] } else { b[l * n + j] };
                    acc += av * bv;
                }
                out.push(acc);
            }
        }
    }
    out
}

fn eval_with(cx: &OpCx<'_>, inputs: &[TensorData], batched: bool) -> Result<Vec<TensorData>, String> {
    let [a, b] = inputs else {
        return Err(format!("expects 2 inputs (a, b), got {}", inputs.len()));
    };
    let ty = |t: &TensorData| TensorType::fixed(&t.shape().iter().map(|&d| d as u64).collect::<Vec<_>>(), t.elem());
    let p = check(cx, &ty(a), &ty(b), batched)?;
    let elem = match cx.result_tensor(0) {
        Ok(t) if t.elem != p.elem => {
            return Err(format!("the declared result element type {} differs from the inferred {}", t.elem, p.elem));
        }
        _ => p.elem,
    };
    let size = |d: Dim| -> Result<usize, String> {
        d.fixed().and_then(|v| usize::try_from(v).ok()).ok_or_else(|| "invariant: data has fixed dims".to_string())
    };
    let batch = p.batch.map_or(Ok(1), size)?;
    let (m, k, n) = (size(p.m)?, size(p.k)?, size(p.n)?);
    let shape: Vec<usize> = p.out_shape().into_iter().map(size).collect::<Result<_, _>>()?;
    let count = num_elements(&shape).ok_or_else(|| format!("result shape {shape:?} is too large"))?;
    if count == 0 {
        // Also skips looping over a huge batch of empty matrices.
        return Ok(vec![TensorData::zeros(elem, shape).map_err(|e| e.to_string())?]);
    }
    let out = matmul_reals(batch, m, k, n, p.ta, p.tb, &a.to_reals(), &b.to_reals());
    Ok(vec![TensorData::from_reals(elem, shape, &out).map_err(|e| e.to_string())?])
}

fn eval_matmul(cx: &OpCx<'_>, inputs: &[TensorData]) -> Result<Vec<TensorData>, String> {
    eval_with(cx, inputs, false)
}

fn eval_batched_matmul(cx: &OpCx<'_>, inputs: &[TensorData]) -> Result<Vec<TensorData>, String> {
    eval_with(cx, inputs, true)
}

#[cfg(test)]
mod tests {
    use super::super::conv::test_support::{assert_close, eval, eval_unchecked, f32s, infer, random};
    use super::*;
    use strata_ir::tensor::SplitMix64;

    /// `t` (rank 2 or 3) with its last two axes swapped.
    fn transposed(t: &TensorData) -> TensorData {
        let s = t.shape();
        let (r, c) = (s[s.len() - 2], s[s.len() - 1]);
        let mut shape = s.to_vec();
        let last = shape.len() - 1;
        shape.swap(last - 1, last);
        super::super::common::from_fn(t.elem(), &shape, |i| {
            let b = if i.len() == 3 { i[0] } else { 0 };
            let (row, col) = (i[i.len() - 2], i[i.len() - 1]);
            t.get_real((b * r + col) * c + row)
        })
        .unwrap()
    }

    #[test]
    fn matmul_by_hand() {
        let a = f32s(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let b = f32s(&[3, 2], &[7.0, 8.0, 9.0, 10.0, 11.0, 12.0]);
        let y = eval("graph.matmul", &[a.clone(), b.clone()], &[]).unwrap();
        assert_eq!(y.shape(), &[2, 2]);
        assert_eq!(y.to_reals(), vec![58.0, 64.0, 139.0, 154.0]);
        // a^T: [3, 2] stored, used as [2, 3]... here a stored [2, 3] read as [3, 2].
        let y = eval("graph.matmul", &[a.clone(), a.clone()], &[("transpose_a", "true")]).unwrap();
        assert_eq!(y.shape(), &[3, 3]);
        assert_eq!(y.to_reals(), vec![17.0, 22.0, 27.0, 22.0, 29.0, 36.0, 27.0, 36.0, 45.0]);
        let y = eval("graph.matmul", &[a.clone(), a.clone()], &[("transpose_b", "true")]).unwrap();
        assert_eq!(y.to_reals(), vec![14.0, 32.0, 32.0, 77.0]);
        let y =
            eval("graph.matmul", &[b.clone(), a.clone()], &[("transpose_a", "true"), ("transpose_b", "true")]).unwrap();
        // (b^T a^T) = (a b)^T
        assert_eq!(y.to_reals(), vec![58.0, 139.0, 64.0, 154.0]);
        let y = eval("graph.matmul", &[a, b], &[("transpose_a", "false"), ("transpose_b", "false")]).unwrap();
        assert_eq!(y.to_reals(), vec![58.0, 64.0, 139.0, 154.0]);
    }

    #[test]
    fn transposes_match_explicit_transposition() {
        let mut rng = SplitMix64(21);
        for case in 0..20u64 {
            let mut pick = || 1 + (rng.next_u64() % 5) as usize;
            let (m, k, n) = (pick(), pick(), pick());
            let a = random(ElemType::F32, &[m, k], case);
            let b = random(ElemType::F32, &[k, n], case + 100);
            let want = eval("graph.matmul", &[a.clone(), b.clone()], &[]).unwrap();
            let (at, bt) = (transposed(&a), transposed(&b));
            for (x, y, attrs) in [
                (&at, &b, vec![("transpose_a", "true")]),
                (&a, &bt, vec![("transpose_b", "true")]),
                (&at, &bt, vec![("transpose_a", "true"), ("transpose_b", "true")]),
            ] {
                assert_eq!(eval("graph.matmul", &[x.clone(), y.clone()], &attrs).unwrap(), want);
            }
        }
    }

    #[test]
    fn batched_is_per_batch_matmul() {
        let mut rng = SplitMix64(22);
        for case in 0..20u64 {
            let mut pick = || 1 + (rng.next_u64() % 4) as usize;
            let (bs, m, k, n) = (pick(), pick(), pick(), pick());
            let (ta, tb) = (case % 2 == 1, case % 4 >= 2);
            let a_shape = if ta { [bs, k, m] } else { [bs, m, k] };
            let b_shape = if tb { [bs, n, k] } else { [bs, k, n] };
            let a = random(ElemType::F32, &a_shape, case);
            let b = random(ElemType::F32, &b_shape, case + 100);
            let flags = [
                ("transpose_a", if ta { "true" } else { "false" }),
                ("transpose_b", if tb { "true" } else { "false" }),
            ];
            let y = eval("graph.batched_matmul", &[a.clone(), b.clone()], &flags).unwrap();
            assert_eq!(y.shape(), &[bs, m, n]);
            let (ra, rb) = (a.to_reals(), b.to_reals());
            let (sa, sb) = (m * k, k * n);
            let mut cat = Vec::new();
            for i in 0..bs {
                let ai = f32s(&a_shape[1..], &ra[i * sa..(i + 1) * sa]);
                let bi = f32s(&b_shape[1..], &rb[i * sb..(i + 1) * sb]);
                cat.extend(eval("graph.matmul", &[ai, bi], &flags).unwrap().to_reals());
            }
            assert_eq!(y.to_reals(), cat, "case {case}");
        }
    }

    #[test]
    fn half_types_round_once() {
        for elem in [ElemType::F16, ElemType::BF16] {
            let a = random(elem, &[3, 5], 1);
            let b = random(elem, &[5, 4], 2);
            let y = eval("graph.matmul", &[a.clone(), b.clone()], &[]).unwrap();
            assert_eq!(y.elem(), elem);
            let exact = matmul_reals(1, 3, 5, 4, false, false, &a.to_reals(), &b.to_reals());
            assert_eq!(y, TensorData::from_reals(elem, vec![3, 4], &exact).unwrap());
            let y32 = eval("graph.matmul", &[f32s(&[3, 5], &a.to_reals()), f32s(&[5, 4], &b.to_reals())], &[]).unwrap();
            assert_close(&y.to_reals(), &y32.to_reals(), 1e-2, 1e-2);
        }
    }

    #[test]
    fn compute_mode_is_checked_and_evaluates_alike() {
        let f32m = [("compute_mode", "\"float32\"")];
        let conv = [("stride", "[1, 1]"), ("pad", "[0, 0]"), ("dilation", "[1, 1]"), ("group", "1")];
        let conv32: Vec<_> = conv.iter().copied().chain(f32m).collect();
        let reduce = [("mode", "\"sum\""), ("axis", "1"), ("keepdim", "false")];
        let reduce32: Vec<_> = reduce.iter().copied().chain(f32m).collect();
        type Case<'a> = (&'a str, Vec<&'a str>, &'a [(&'a str, &'a str)]);
        let ok: [Case; 3] = [
            ("graph.matmul", vec!["tensor<2x3xf16>", "tensor<3x4xf16>"], &f32m),
            ("graph.conv2d", vec!["tensor<1x2x3x3xf16>", "tensor<4x2x1x1xf16>"], &conv32),
            ("graph.reduce", vec!["tensor<2x3xf16>"], &reduce32),
        ];
        for (name, types, attrs) in ok {
            infer(name, &types, attrs).unwrap_or_else(|e| panic!("{name}: {e}"));
            let f32_types: Vec<String> = types.iter().map(|t| t.replace("f16", "f32")).collect();
            let f32_types: Vec<&str> = f32_types.iter().map(String::as_str).collect();
            let err = infer(name, &f32_types, attrs).unwrap_err();
            assert!(err.contains("needs f16 or bf16"), "{name}: {err}");
        }
        let err = infer("graph.matmul", &["tensor<2x3xf16>", "tensor<3x4xf16>"], &[("compute_mode", "\"half\"")])
            .unwrap_err();
        assert!(err.contains("unknown compute_mode `half`"), "{err}");
        let (a, b) = (random(ElemType::F16, &[3, 5], 1), random(ElemType::F16, &[5, 4], 2));
        let plain = eval("graph.matmul", &[a.clone(), b.clone()], &[]).unwrap();
        assert_eq!(eval("graph.matmul", &[a.clone(), b.clone()], &f32m).unwrap(), plain);
        assert_eq!(eval("graph.matmul", &[a, b], &[("compute_mode", "\"default\"")]).unwrap(), plain);
    }

    #[test]
    fn symbolic_dims_pass_through() {
        assert_eq!(
            infer("graph.matmul", &["tensor<?Nx64xf32>", "tensor<64x10xf32>"], &[]).unwrap(),
            "tensor<?Nx10xf32>"
        );
        assert_eq!(
            infer("graph.matmul", &["tensor<?Kx?Mxf16>", "tensor<?Kx3xf16>"], &[("transpose_a", "true")]).unwrap(),
            "tensor<?Mx3xf16>"
        );
        assert_eq!(
            infer("graph.batched_matmul", &["tensor<?Bx4x8xbf16>", "tensor<?Bx5x8xbf16>"], &[("transpose_b", "true")])
                .unwrap(),
            "tensor<?Bx4x5xbf16>"
        );
    }

    #[test]
    fn bad_inputs_are_errors() {
        type Case<'a> = (&'a str, [&'a str; 2], Vec<(&'a str, &'a str)>, &'a str);
        let cases: Vec<Case> = vec![
            ("graph.matmul", ["tensor<2x3xf32>", "tensor<4x5xf32>"], vec![], "K = 3"),
            ("graph.matmul", ["tensor<2x3xf32>", "tensor<2x5xf32>"], vec![("transpose_b", "true")], "transpose_b"),
            ("graph.matmul", ["tensor<2x?Kxf32>", "tensor<?Jx5xf32>"], vec![], "?J"),
            ("graph.matmul", ["tensor<2x3x4xf32>", "tensor<4x5xf32>"], vec![], "rank 2"),
            ("graph.matmul", ["tensor<2x3xf32>", "tensor<3xf32>"], vec![], "operand `b`"),
            ("graph.matmul", ["tensor<2x3xi32>", "tensor<3x2xi32>"], vec![], "i32"),
            ("graph.matmul", ["tensor<2x3xqs8<0.5>>", "tensor<3x2xqs8<0.5>>"], vec![], "qs8"),
            ("graph.matmul", ["tensor<2x3xf32>", "tensor<3x2xf16>"], vec![], "f16"),
            ("graph.matmul", ["tensor<2x3xf32, #nhwc>", "tensor<3x2xf32>"], vec![], "layout"),
            ("graph.matmul", ["tensor<2x3xf32>", "tensor<3x2xf32>"], vec![("transpose_a", "1")], "transpose_a"),
            ("graph.batched_matmul", ["tensor<2x3x4xf32>", "tensor<3x4x5xf32>"], vec![], "batch dims differ"),
            ("graph.batched_matmul", ["tensor<?Ax3x4xf32>", "tensor<?Bx4x5xf32>"], vec![], "batch dims differ"),
            ("graph.batched_matmul", ["tensor<3x4xf32>", "tensor<4x5xf32>"], vec![], "rank 3"),
        ];
        for (name, types, attrs, want) in cases {
            let err = infer(name, &types, &attrs).expect_err(want);
            assert!(err.contains(want), "{name} {types:?}: `{err}` should mention `{want}`");
        }
        let err = eval_unchecked("graph.matmul", &[f32s(&[2, 2], &[0.0; 4])], &[]).unwrap_err();
        assert!(err.contains("2 inputs"), "{err}");
        let err =
            eval_unchecked("graph.matmul", &[f32s(&[2, 2], &[0.0; 4]), f32s(&[3, 2], &[0.0; 6])], &[]).unwrap_err();
        assert!(err.contains("K = 2"), "{err}");
        let y = eval("graph.matmul", &[f32s(&[2, 0], &[]), f32s(&[0, 3], &[])], &[]).unwrap();
        assert_eq!(y.to_reals(), vec![0.0; 6]);
    }

    #[test]
    fn huge_batches_of_empty_matrices_stay_cheap() {
        let a = TensorData::zeros(ElemType::F32, vec![1 << 40, 0, 3]).unwrap();
        let b = TensorData::zeros(ElemType::F32, vec![1 << 40, 3, 0]).unwrap();
        let y = eval("graph.batched_matmul", &[a, b], &[]).unwrap();
        assert_eq!(y.shape(), &[1 << 40, 0, 0]);
    }
}
