//! `graph.reduce`: reduces one axis with `sum`, `mean`, `max`, `min` or `prod`
//! (MegEngine's Reduce with a single axis; reference: `docs/graph-dialect.md`).
//!
//! The reduced axis is removed, or kept with size 1 when `keepdim` is true;
//! the other dims (symbolic ones included) pass through. The result has the
//! input's element type.
//!
//! | element type | modes | arithmetic |
//! |---|---|---|
//! | f32, f16, bf16 | all | accumulated in `f64`, rounded once to the result; NaN propagates through max/min |
//! | i8 u8 i16 u16 i32 i64 | all | sum/prod in `i64`, wrapping, then wrapped to the element width; max/min exact; mean is the wrapped `i64` sum divided by the count, truncated toward zero |
//! | qs8, qs32, qu8 | max, min | the element with the largest/smallest real value (bytes copied) |
//!
//! `bool` is rejected. Reducing an empty axis gives 0 for sum, 1 for prod and
//! NaN for a float mean; max, min and an integer mean of an empty axis are
//! errors.
//!
//! Optional `compute_mode`: `"default"` or `"float32"` (MegEngine's
//! `FLOAT_O16xC32`, f16/bf16 inputs only); floats are accumulated in `f64`
//! either way (see `conv::check_compute_mode`).

use super::common::{fixed, norm_axis, one, show};
use strata_ir::{Dim, ElemType, Layout, OpCx, Registry, TensorData, TypeData, define_op};

define_op! {
    /// Reduces `axis` with `mode` (sum, mean, max, min, prod).
    pub struct ReduceOp = "graph.reduce" {
        summary: "reduce one axis (sum mean max min prod)",
        operands: [input],
        results: [output],
        attrs: { mode: Str, axis: Int, keepdim: Bool },
        optional_attrs: { compute_mode: Str },
        traits: [PURE],
        infer: infer_reduce,
        eval: eval_reduce,
    }
}

pub(crate) fn register(r: &mut Registry) {
    r.register(ReduceOp::DEF).expect("invariant: graph ops register once");
}

/// A reduction mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceMode {
    /// Sum.
    Sum,
    /// Arithmetic mean (integers: truncated toward zero).
    Mean,
    /// Maximum.
    Max,
    /// Minimum.
    Min,
    /// Product.
    Prod,
}

const MODES: &[(&str, ReduceMode)] = &[
    ("sum", ReduceMode::Sum),
    ("mean", ReduceMode::Mean),
    ("max", ReduceMode::Max),
    ("min", ReduceMode::Min),
    ("prod", ReduceMode::Prod),
];

impl ReduceMode {
    /// The mode named `name`, or an error listing every mode.
    pub fn parse(name: &str) -> Result<ReduceMode, String> {
        MODES.iter().find(|(n, _)| *n == name).map(|&(_, m)| m).ok_or_else(|| {
            let all: Vec<_> = MODES.iter().map(|(n, _)| *n).collect();
            format!("unknown reduce mode `{name}` (expected one of {})", all.join(", "))
        })
    }

    /// The mode's name in IR.
    pub fn name(self) -> &'static str {
        MODES.iter().find(|&&(_, m)| m == self).map(|&(n, _)| n).expect("invariant: every mode is listed")
    }

    fn is_extremum(self) -> bool {
        matches!(self, ReduceMode::Max | ReduceMode::Min)
    }
}

/// Checks that `mode` is defined for `elem`, and for an axis of size `len`
/// (when known).
fn check_mode(mode: ReduceMode, elem: ElemType, axis: usize, len: Option<u64>) -> Result<(), String> {
    let supported = if elem.is_float() {
        true
    } else if elem.is_quantized() {
        mode.is_extremum()
    } else {
        elem != ElemType::Bool
    };
    if !supported {
        let hint = if elem.is_quantized() { " (quantised tensors support max and min)" } else { "" };
        return Err(format!("reduce mode `{}` is not defined for {elem}{hint}", mode.name()));
    }
    let int_mean = mode == ReduceMode::Mean && !elem.is_float();
    if len == Some(0) && (mode.is_extremum() || int_mean) {
        return Err(format!("reduce mode `{}` of {elem} cannot reduce axis {axis}, which has size 0", mode.name()));
    }
    Ok(())
}

/// The mode, the normalised axis and the result dims for input dims `input`.
fn plan(cx: &OpCx<'_>, input: &[Dim], elem: ElemType) -> Result<(ReduceMode, usize, Vec<Dim>), String> {
    let mode = ReduceMode::parse(cx.attrs.str("mode")?)?;
    let axis = norm_axis(cx.attrs.int("axis")?, input.len())
        .map_err(|e| format!("attribute `axis` for the input {}: {e}", show(cx, input)))?;
    check_mode(mode, elem, axis, input[axis].fixed())?;
    super::conv::check_compute_mode(cx, elem)?;
    let mut dims = input.to_vec();
    if cx.attrs.req::<strata_ir::attr_kind::Bool>("keepdim")? {
        dims[axis] = Dim::Fixed(1);
    } else {
        dims.remove(axis);
    }
    Ok((mode, axis, dims))
}

fn infer_reduce(cx: &OpCx<'_>) -> Result<Vec<TypeData>, String> {
    let x = cx.tensor(0)?;
    if x.layout != Layout::Nchw {
        // A blocked tensor reduces over H or W only, keeping its dims (and layout).
        let (h, w) = crate::layout::format::spatial_axes(x.layout);
        let axis = norm_axis(cx.attrs.int("axis")?, x.shape.len());
        let keep = cx.attrs.req::<strata_ir::attr_kind::Bool>("keepdim")?;
        if !keep || !matches!(axis, Ok(a) if a == h || a == w) {
            return Err(format!(
                "operand #0 must have the plain layout, has #{} (blocked tensors reduce only over H or W with keepdim = true)",
                x.layout
            ));
        }
        let (_, _, dims) = plan(cx, &x.shape, x.elem)?;
        return Ok(vec![super::common::like(x, dims)]);
    }
    let (_, _, dims) = plan(cx, &x.shape, x.elem)?;
    Ok(vec![super::common::tensor(x.elem, dims)])
}

/// Reduces `n` elements read by `at(k)` for a float tensor.
fn reduce_float(mode: ReduceMode, n: usize, at: impl Fn(usize) -> f64) -> f64 {
    let vals = (0..n).map(at);
    match mode {
        ReduceMode::Sum => vals.sum(),
        ReduceMode::Mean => vals.sum::<f64>() / n as f64,
        ReduceMode::Prod => vals.product(),
        ReduceMode::Max | ReduceMode::Min => vals
            .reduce(|a, b| {
                if a.is_nan() || b.is_nan() {
                    f64::NAN
                } else if (mode == ReduceMode::Max) == (b > a) {
                    b
                } else {
                    a
                }
            })
            .unwrap_or(f64::NAN),
    }
}

/// Reduces `n` elements read by `at(k)` for a plain integer tensor.
fn reduce_int(mode: ReduceMode, n: usize, at: impl Fn(usize) -> i64) -> Result<i64, String> {
    let vals = (0..n).map(at);
    Ok(match mode {
        ReduceMode::Sum => vals.fold(0i64, i64::wrapping_add),
        ReduceMode::Prod => vals.fold(1i64, i64::wrapping_mul),
        ReduceMode::Mean => {
            let count = i64::try_from(n).ok().filter(|&c| c > 0).ok_or("integer mean of an empty axis")?;
            // wrapping_div only differs from `/` for i64::MIN / -1, impossible with count > 0.
            vals.fold(0i64, i64::wrapping_add).wrapping_div(count)
        }
        ReduceMode::Max => vals.max().ok_or("max of an empty axis")?,
        ReduceMode::Min => vals.min().ok_or("min of an empty axis")?,
    })
}

fn eval_reduce(cx: &OpCx<'_>, inputs: &[TensorData]) -> Result<Vec<TensorData>, String> {
    let x = one(inputs)?;
    let elem = x.elem();
    let (mode, axis, dims) = plan(cx, &fixed(x.shape()), elem)?;
    let shape = x.shape();
    let (n, outer, inner) =
        (shape[axis], shape[..axis].iter().product::<usize>(), shape[axis + 1..].iter().product::<usize>());
    let out_shape: Vec<usize> = dims.iter().map(|d| d.fixed().unwrap_or(1) as usize).collect();
    let size = elem.size_bytes();
    let mut bytes = Vec::with_capacity(outer * inner * size);
    for o in 0..outer {
        for i in 0..inner {
            let lin = |k: usize| (o * n + k) * inner + i;
            if elem.is_float() {
                TensorData::encode_real(elem, reduce_float(mode, n, |k| x.get_real(lin(k))), &mut bytes);
            } else if elem.is_quantized() {
                // Max/min of quantised values: copy the chosen element's bytes.
                let pick = (0..n)
                    .reduce(|a, b| {
                        let (va, vb) = (x.get_real(lin(a)), x.get_real(lin(b)));
                        if (mode == ReduceMode::Max) == (vb > va) { b } else { a }
                    })
                    .ok_or_else(|| format!("{} of an empty axis", mode.name()))?;
                let at = lin(pick) * size;
                bytes.extend_from_slice(&x.bytes()[at..at + size]);
            } else {
                let v = reduce_int(mode, n, |k| x.get_i64(lin(k)))?;
                bytes.extend_from_slice(&v.to_le_bytes()[..size]);
            }
        }
    }
    Ok(vec![TensorData::from_bytes(elem, out_shape, bytes.into()).map_err(|e| e.to_string())?])
}

#[cfg(test)]
mod tests {
    use super::super::shape::testing::{Harness, Wild, list};
    use super::*;
    use strata_ir::QScale;
    use strata_ir::tensor::SplitMix64;

    fn reduce(h: &mut Harness, x: &TensorData, mode: &str, axis: i64, keepdim: bool) -> Result<TensorData, String> {
        let mode = format!("\"{mode}\"");
        let axis = axis.to_string();
        let keep = keepdim.to_string();
        h.eval("graph.reduce", std::slice::from_ref(x), &[("mode", &mode), ("axis", &axis), ("keepdim", &keep)])
            .map(|mut v| v.remove(0))
    }

    fn values(elem: ElemType, shape: &[usize], v: &[f64]) -> TensorData {
        TensorData::from_f64(elem, shape.to_vec(), v).unwrap()
    }

    #[test]
    fn hand_computed_floats() {
        let mut h = Harness::new();
        let x = values(ElemType::F32, &[2, 3], &[1.0, -2.0, 4.0, 0.5, 3.0, -1.0]);
        let r = |h: &mut Harness, mode: &str, axis: i64| reduce(h, &x, mode, axis, false).unwrap().to_f64_vec();
        assert_eq!(r(&mut h, "sum", 1), vec![3.0, 2.5]);
        assert_eq!(r(&mut h, "sum", 0), vec![1.5, 1.0, 3.0]);
        assert_eq!(r(&mut h, "mean", -1), vec![1.0, (2.5f64 / 3.0) as f32 as f64]);
        assert_eq!(r(&mut h, "max", 1), vec![4.0, 3.0]);
        assert_eq!(r(&mut h, "min", 0), vec![0.5, -2.0, -1.0]);
        assert_eq!(r(&mut h, "prod", 1), vec![-8.0, -1.5]);
        let kept = reduce(&mut h, &x, "sum", 0, true).unwrap();
        assert_eq!(kept.shape(), [1, 3]);
        let nan = values(ElemType::F16, &[3], &[1.0, f64::NAN, 2.0]);
        assert!(reduce(&mut h, &nan, "max", 0, false).unwrap().get_real(0).is_nan());
        assert!(reduce(&mut h, &nan, "min", 0, false).unwrap().get_real(0).is_nan());
        let bf = values(ElemType::BF16, &[4], &[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(reduce(&mut h, &bf, "mean", 0, true).unwrap().to_f64_vec(), vec![2.5]);
        let empty = TensorData::zeros(ElemType::F32, vec![2, 0]).unwrap();
        assert_eq!(reduce(&mut h, &empty, "sum", 1, false).unwrap().to_f64_vec(), vec![0.0, 0.0]);
        assert_eq!(reduce(&mut h, &empty, "prod", 1, false).unwrap().to_f64_vec(), vec![1.0, 1.0]);
        assert!(reduce(&mut h, &empty, "mean", 1, false).unwrap().get_real(0).is_nan());
        assert_eq!(reduce(&mut h, &empty, "sum", 0, false).unwrap().shape(), [0]);
    }

    #[test]
    fn hand_computed_ints_and_quantised() {
        let mut h = Harness::new();
        let x = values(ElemType::I32, &[2, 3], &[7.0, -2.0, 4.0, -7.0, 3.0, -1.0]);
        let r = |h: &mut Harness, mode: &str| reduce(h, &x, mode, 1, false).unwrap().to_f64_vec();
        assert_eq!(r(&mut h, "sum"), vec![9.0, -5.0]);
        // Integer mean truncates toward zero: 9/3 = 3, -5/3 = -1.
        assert_eq!(r(&mut h, "mean"), vec![3.0, -1.0]);
        assert_eq!(r(&mut h, "max"), vec![7.0, 3.0]);
        assert_eq!(r(&mut h, "min"), vec![-2.0, -7.0]);
        assert_eq!(r(&mut h, "prod"), vec![-56.0, 21.0]);
        // Sums wrap to the element width.
        let u = values(ElemType::U8, &[3], &[200.0, 100.0, 1.0]);
        assert_eq!(reduce(&mut h, &u, "sum", 0, false).unwrap().to_f64_vec(), vec![45.0]);
        let big = TensorData::from_bytes(
            ElemType::I64,
            vec![2],
            [i64::MAX, 2].iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>().into(),
        )
        .unwrap();
        assert_eq!(reduce(&mut h, &big, "sum", 0, false).unwrap().get_i64(0), i64::MIN + 1);
        assert_eq!(reduce(&mut h, &big, "max", 0, false).unwrap().get_i64(0), i64::MAX);
        let q = values(ElemType::QU8(QScale::new(0.5), 10), &[2, 2], &[12.0, 3.0, 9.0, 255.0]);
        let m = reduce(&mut h, &q, "max", 0, false).unwrap();
        assert_eq!(m.elem(), q.elem());
        assert_eq!(m.to_f64_vec(), vec![12.0, 255.0]);
        assert_eq!(reduce(&mut h, &q, "min", 1, true).unwrap().to_f64_vec(), vec![3.0, 9.0]);
        let s = values(ElemType::QS8(QScale::new(0.1)), &[3], &[-5.0, 100.0, -128.0]);
        assert_eq!(reduce(&mut h, &s, "min", 0, false).unwrap().to_f64_vec(), vec![-128.0]);
    }

    #[test]
    fn infer_and_errors() {
        let mut h = Harness::new();
        let i = |h: &mut Harness, ty: &str, mode: &str, axis: &str, keep: &str| {
            h.infer("graph.reduce", &[ty], &[("mode", mode), ("axis", axis), ("keepdim", keep)])
        };
        assert_eq!(i(&mut h, "tensor<?Nx3x4xf32>", "\"sum\"", "1", "false").unwrap(), "tensor<?Nx4xf32>");
        assert_eq!(i(&mut h, "tensor<?Nx3x4xf32>", "\"mean\"", "0", "true").unwrap(), "tensor<1x3x4xf32>");
        assert_eq!(i(&mut h, "tensor<?Nx3xqs8<0.5>>", "\"max\"", "-1", "false").unwrap(), "tensor<?Nxqs8<0.5>>");
        assert_eq!(i(&mut h, "tensor<5xi16>", "\"prod\"", "0", "false").unwrap(), "tensor<i16>");
        for (ty, mode, axis, keep, want) in [
            ("tensor<2x3xf32>", "\"avg\"", "0", "false", "unknown reduce mode `avg`"),
            ("tensor<2x3xf32>", "\"sum\"", "2", "false", "out of range"),
            ("tensor<2x3xf32>", "\"sum\"", "-9223372036854775808", "false", "out of range"),
            ("tensor<f32>", "\"sum\"", "0", "false", "out of range"),
            ("tensor<2x3xqs8<0.5>>", "\"sum\"", "0", "false", "quantised tensors support max and min"),
            ("tensor<2x3xbool>", "\"max\"", "0", "false", "not defined for bool"),
            ("tensor<2x0xf32>", "\"max\"", "1", "false", "size 0"),
            ("tensor<2x0xi32>", "\"mean\"", "1", "false", "size 0"),
            ("tensor<2x3xf32>", "\"sum\"", "0", "1", "must be a bool"),
            ("tensor<2x8x2x2x8xf32, #nchw88>", "\"sum\"", "0", "false", "plain layout"),
        ] {
            let e = i(&mut h, ty, mode, axis, keep).unwrap_err();
            assert!(e.contains(want), "{ty} {mode} {axis}: {e}");
        }
        let e = h.infer("graph.reduce", &["tensor<2xf32>"], &[("mode", "\"sum\""), ("axis", "0")]).unwrap_err();
        assert!(e.contains("keepdim"), "{e}");
    }

    #[test]
    fn sum_over_axis_equals_sum_of_slices() {
        let mut h = Harness::new();
        let mut rng = SplitMix64(17);
        for round in 0..24 {
            let elem = [ElemType::F32, ElemType::I32, ElemType::F16, ElemType::I64][round % 4];
            let rank = 1 + round % 4;
            let shape: Vec<usize> = (0..rank).map(|_| 1 + (rng.next_u64() % 4) as usize).collect();
            let axis = (rng.next_u64() % rank as u64) as i64;
            let x = TensorData::random_uniform(elem, shape.clone(), -4.0, 4.0, round as u64).unwrap();
            let keep = round % 2 == 0;
            let got = reduce(&mut h, &x, "sum", axis, keep).unwrap();
            // Sum the slices x[..., k:k+1, ...] with elemwise add (in f32 for floats
            // only when exact: random f16/f32 values in [-4, 4) with few terms are
            // summed exactly in f64, so compare reals with a tolerance).
            let mut acc = vec![0.0f64; got.len()];
            for k in 0..shape[axis as usize] as i64 {
                let s = h.eval1(
                    "graph.subtensor",
                    std::slice::from_ref(&x),
                    &[("axes", &list(&[axis])), ("begin", &list(&[k])), ("end", &list(&[k + 1])), ("step", "[1]")],
                );
                assert_eq!(s.len(), acc.len());
                for (a, v) in acc.iter_mut().zip(s.to_reals()) {
                    *a += v;
                }
            }
            let mut want_shape = shape.clone();
            if keep {
                want_shape[axis as usize] = 1;
            } else {
                want_shape.remove(axis as usize);
            }
            assert_eq!(got.shape(), want_shape.as_slice());
            let want = TensorData::from_reals(elem, want_shape, &acc).unwrap();
            for i in 0..got.len() {
                let (g, w) = (got.get_real(i), want.get_real(i));
                assert!((g - w).abs() <= 1e-6 * w.abs().max(1.0), "{elem} round {round}: {g} vs {w}");
            }
        }
    }

    #[test]
    fn max_min_agree_with_sorting() {
        let mut h = Harness::new();
        for seed in 0..6 {
            let x =
                TensorData::random_uniform(ElemType::QS8(QScale::new(0.25)), vec![3, 5], -30.0, 30.0, seed).unwrap();
            let mx = reduce(&mut h, &x, "max", 1, false).unwrap();
            let mn = reduce(&mut h, &x, "min", 1, false).unwrap();
            for r in 0..3 {
                let row: Vec<f64> = (0..5).map(|c| x.get_real(r * 5 + c)).collect();
                assert_eq!(mx.get_real(r), row.iter().copied().fold(f64::MIN, f64::max));
                assert_eq!(mn.get_real(r), row.iter().copied().fold(f64::MAX, f64::min));
            }
        }
    }

    #[test]
    fn wild_attributes_never_panic() {
        let mut h = Harness::new();
        let mut w = Wild(SplitMix64(99));
        let elems = [
            ElemType::F32,
            ElemType::BF16,
            ElemType::I8,
            ElemType::U16,
            ElemType::I64,
            ElemType::Bool,
            ElemType::QS8(QScale::new(0.5)),
        ];
        let (mut ok, mut err) = (0, 0);
        for _ in 0..1500 {
            let x = w.tensor(&elems);
            let mode = w.pick(&["\"sum\"", "\"mean\"", "\"max\"", "\"min\"", "\"prod\"", "\"avg\""]);
            let axis = w.int().to_string();
            let keep = w.pick(&["true", "false", "0"]);
            match h.eval("graph.reduce", &[x], &[("mode", mode), ("axis", &axis), ("keepdim", keep)]) {
                Ok(_) => ok += 1,
                Err(_) => err += 1,
            }
        }
        assert!(ok > 100 && err > 100, "ok {ok}, err {err}");
    }
}
