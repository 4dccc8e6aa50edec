//! `graph.pooling`, `graph.global_avg_pool` and `graph.adaptive_pooling`:
//! spatial pooling over NCHW activations (reference: `docs/graph-dialect.md`).
//!
//! - `pooling(x [N, C, H, W])` with `mode` (`max`, `average`,
//!   `average_count_exclude_padding`), `window = [wh, ww]`, `stride`, `pad`
//!   gives `[N, C, OH, OW]`, `OH = (H + 2·ph - wh)/sh + 1`. Window `(oh, ow)`
//!   covers input rows `oh·sh - ph .. oh·sh - ph + wh` (likewise columns).
//!   `max` ignores the padding; `average` divides by the full window size
//!   `wh·ww` (padding counts as zeros); `average_count_exclude_padding`
//!   divides by the number of in-bounds elements. The padding must be smaller
//!   than the window, so no window lies entirely in the padding.
//! - `global_avg_pool(x)` gives `[N, C, 1, 1]`, the mean over `H x W`.
//! - `adaptive_pooling(x)` with `mode` (`max`, `average`) and `output = [OH, OW]`
//!   gives `[N, C, OH, OW]`; output row `i` pools input rows
//!   `floor(i·H/OH) .. ceil((i+1)·H/OH)` (likewise columns).
//!
//! `N` and `C` may be symbolic (they pass through). `pooling` needs `H` and `W`
//! fixed; the other two only need them non-zero (a symbolic `H` or `W` is
//! checked when evaluating). Max pooling propagates NaN.
//!
//! Element types: `f32`, `f16`, `bf16`; `pooling` with `mode = "max"` also
//! `qs8` (the result has the input's type). Values are computed in `f64` and
//! rounded once to the result type.

use super::common::{expect_rank, fixed_dim, ints_n, show};
use std::ops::Range;
use strata_ir::tensor::num_elements;
use strata_ir::{Dim, ElemType, OpCx, Registry, TensorData, TensorType, TypeData, define_op};

define_op! {
    /// Window pooling (`max`, `average`, `average_count_exclude_padding`) of `x [N, C, H, W]`.
    pub struct PoolingOp = "graph.pooling" {
        summary: "2-d window pooling (max or average)",
        operands: [x],
        results: [output],
        attrs: { mode: Str, window: Ints, stride: Ints, pad: Ints },
        optional_attrs: {},
        traits: [PURE],
        infer: infer_pooling,
        eval: eval_pooling,
    }
}

define_op! {
    /// The mean over the spatial dims: `x [N, C, H, W]` gives `[N, C, 1, 1]`.
    pub struct GlobalAvgPoolOp = "graph.global_avg_pool" {
        summary: "mean over H and W",
        operands: [x],
        results: [output],
        attrs: {},
        optional_attrs: {},
        traits: [PURE],
        infer: infer_global_avg_pool,
        eval: eval_global_avg_pool,
    }
}

define_op! {
    /// Pooling to a fixed output size `[OH, OW]` with windows derived from the sizes.
    pub struct AdaptivePoolingOp = "graph.adaptive_pooling" {
        summary: "2-d pooling to a given output size (max or average)",
        operands: [x],
        results: [result],
        attrs: { mode: Str, output: Ints },
        optional_attrs: {},
        traits: [PURE],
        infer: infer_adaptive_pooling,
        eval: eval_adaptive_pooling,
    }
}

pub(crate) fn register(r: &mut Registry) {
    for def in [PoolingOp::DEF, GlobalAvgPoolOp::DEF, AdaptivePoolingOp::DEF] {
        r.register(def).expect("invariant: graph ops register once");
    }
}

/// How a window is reduced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolMode {
    /// The maximum of the in-bounds elements.
    Max,
    /// The sum divided by the full window size (padding counts as zeros).
    Average,
    /// The sum divided by the number of in-bounds elements.
    AverageCountExcludePadding,
}

const MODES: &[(&str, PoolMode)] = &[
    ("max", PoolMode::Max),
    ("average", PoolMode::Average),
    ("average_count_exclude_padding", PoolMode::AverageCountExcludePadding),
];

impl PoolMode {
    /// The mode named `name` among `allowed` (all of them for `graph.pooling`).
    pub fn parse(name: &str, allowed: &[PoolMode]) -> Result<PoolMode, String> {
        MODES.iter().find(|&&(n, m)| n == name && allowed.contains(&m)).map(|&(_, m)| m).ok_or_else(|| {
            let all: Vec<_> = MODES.iter().filter(|(_, m)| allowed.contains(m)).map(|(n, _)| *n).collect();
            format!("unknown pooling mode `{name}` (expected one of {})", all.join(", "))
        })
    }

    /// The mode's name in IR.
    pub fn name(self) -> &'static str {
        MODES.iter().find(|&&(_, m)| m == self).map(|&(n, _)| n).expect("invariant: every mode is listed")
    }
}

const ALL_MODES: &[PoolMode] = &[PoolMode::Max, PoolMode::Average, PoolMode::AverageCountExcludePadding];
const ADAPTIVE_MODES: &[PoolMode] = &[PoolMode::Max, PoolMode::Average];

/// Checks the element type: floats always, `qs8` only when `qs8_max` and the mode is max.
fn check_elem(cx: &OpCx<'_>, x: &TensorType, mode: Option<PoolMode>, qs8_max: bool) -> Result<(), String> {
    let qs8 = matches!(x.elem, ElemType::QS8(_));
    if x.elem.is_float() || (qs8_max && qs8 && mode == Some(PoolMode::Max)) {
        return Ok(());
    }
    let supported = if qs8_max { "f32, f16, bf16; qs8 with mode `max`" } else { "f32, f16, bf16" };
    Err(match mode {
        Some(m) if qs8_max && qs8 => format!(
            "operand `x` has element type {}, which mode `{}` of `{}` does not support ({supported})",
            x.elem,
            m.name(),
            cx.name
        ),
        _ => format!("operand `x` has element type {}, which `{}` does not support ({supported})", x.elem, cx.name),
    })
}

/// Reduces the in-bounds `values` of a window of `full` positions (padding included).
fn reduce(mode: PoolMode, values: &[f64], full: f64) -> f64 {
    match mode {
        PoolMode::Max => {
            values.iter().fold(f64::NEG_INFINITY, |m, &v| if m.is_nan() || v.is_nan() { f64::NAN } else { m.max(v) })
        }
        PoolMode::Average => values.iter().sum::<f64>() / full,
        PoolMode::AverageCountExcludePadding => values.iter().sum::<f64>() / values.len() as f64,
    }
}

/// The checked geometry of `graph.pooling`.
struct Pool {
    mode: PoolMode,
    window: [u64; 2],
    stride: [u64; 2],
    pad: [u64; 2],
    out: [u64; 2],
}

const AXES: [&str; 2] = ["height", "width"];

fn check_pooling(cx: &OpCx<'_>, x: &TensorType) -> Result<Pool, String> {
    expect_rank(cx, x, 4, "operand `x` ([N, C, H, W])")?;
    let mode = PoolMode::parse(cx.attrs.str("mode")?, ALL_MODES)?;
    check_elem(cx, x, Some(mode), true)?;
    let pair = |v: Vec<u64>| [v[0], v[1]];
    let window = pair(ints_n(cx, "window", 2, 1)?);
    let stride = pair(ints_n(cx, "stride", 2, 1)?);
    let pad = pair(ints_n(cx, "pad", 2, 0)?);
    let size = [
        fixed_dim(x.shape[2], "the height (dim 2) of operand `x`")?,
        fixed_dim(x.shape[3], "the width (dim 3) of operand `x`")?,
    ];
    let mut out = [0u64; 2];
    for i in 0..2 {
        if pad[i] >= window[i] {
            return Err(format!(
                "attribute `pad` ({:?}) must be smaller than attribute `window` ({:?}) along the {}",
                pad, window, AXES[i]
            ));
        }
        let padded = pad[i]
            .checked_mul(2)
            .and_then(|p| size[i].checked_add(p))
            .ok_or_else(|| "the padded input overflows with these attribute values".to_string())?;
        if padded < window[i] {
            return Err(format!(
                "along the {}, the window ({}) is larger than the padded input of operand `x` ({padded})",
                AXES[i], window[i]
            ));
        }
        out[i] = (padded - window[i]) / stride[i] + 1;
    }
    Ok(Pool { mode, window, stride, pad, out })
}

fn infer_pooling(cx: &OpCx<'_>) -> Result<Vec<TypeData>, String> {
    let x = cx.tensor(0)?;
    let p = check_pooling(cx, x)?;
    Ok(vec![super::common::like(x, vec![x.shape[0], x.shape[1], Dim::Fixed(p.out[0]), Dim::Fixed(p.out[1])])])
}

fn type_of(t: &TensorData) -> TensorType {
    TensorType::fixed(&t.shape().iter().map(|&d| d as u64).collect::<Vec<_>>(), t.elem())
}

/// Sizes as `usize`, or an error if they do not fit.
fn pair(v: [u64; 2]) -> Result<[usize; 2], String> {
    let u = |v: u64| usize::try_from(v).map_err(|_| format!("size {v} does not fit in memory"));
    Ok([u(v[0])?, u(v[1])?])
}

/// The one input of a pooling op.
fn single(inputs: &[TensorData]) -> Result<&TensorData, String> {
    match inputs {
        [x] => Ok(x),
        _ => Err(format!("expects 1 input (x), got {}", inputs.len())),
    }
}

/// The result element type: the declared one must be the input's.
fn result_elem(cx: &OpCx<'_>, x: &TensorData) -> Result<ElemType, String> {
    match cx.result_tensor(0) {
        Ok(t) if t.elem != x.elem() => {
            Err(format!("the declared result element type {} differs from the inferred {}", t.elem, x.elem()))
        }
        _ => Ok(x.elem()),
    }
}

/// Pools every `(n, c)` plane of `x` to `[oh, ow]`: `window(o, axis)` gives
/// the in-bounds input positions of output `o` along an axis; `reduce_fn`
/// reduces the in-bounds values of one window (row-major).
fn pool_planes(
    x: &TensorData,
    elem: ElemType,
    out: [usize; 2],
    mut window: impl FnMut(usize, usize) -> Range<usize>,
    reduce_fn: impl Fn(&[f64]) -> f64,
) -> Result<TensorData, String> {
    let s = x.shape();
    let (n, c, h, w) = (s[0], s[1], s[2], s[3]);
    let shape = vec![n, c, out[0], out[1]];
    num_elements(&shape).ok_or_else(|| format!("result shape {shape:?} is too large"))?;
    if n == 0 || c == 0 {
        // Nothing to pool (and `out` may be larger than anything worth enumerating).
        return TensorData::from_reals(elem, shape, &[]).map_err(|e| e.to_string());
    }
    let rows: Vec<Range<usize>> = (0..out[0]).map(|o| window(o, 0)).collect();
    let cols: Vec<Range<usize>> = (0..out[1]).map(|o| window(o, 1)).collect();
    let reals = x.to_reals();
    let mut result = Vec::with_capacity(n * c * out[0] * out[1]);
    let mut values = Vec::new();
    for plane in 0..n * c {
        for row in &rows {
            for col in &cols {
                values.clear();
                for ih in row.clone() {
                    for iw in col.clone() {
                        values.push(reals[(plane * h + ih) * w + iw]);
                    }
                }
                result.push(reduce_fn(&values));
            }
        }
    }
    TensorData::from_reals(elem, shape, &result).map_err(|e| e.to_string())
}

/// The input positions `[o·s - p, o·s - p + k)` of window `o`, clipped to `[0, size)`.
fn clipped_window(o: usize, k: usize, s: usize, p: usize, size: usize) -> Range<usize> {
    let start = (o as u128) * (s as u128);
    let (lo, hi) = (start.saturating_sub(p as u128), (start + k as u128).saturating_sub(p as u128));
    let clip = |v: u128| v.min(size as u128) as usize;
    clip(lo)..clip(hi)
}

fn eval_pooling(cx: &OpCx<'_>, inputs: &[TensorData]) -> Result<Vec<TensorData>, String> {
    let x = single(inputs)?;
    let p = check_pooling(cx, &type_of(x))?;
    let elem = result_elem(cx, x)?;
    let size = [x.shape()[2], x.shape()[3]];
    let (window, stride, pad, out) = (pair(p.window)?, pair(p.stride)?, pair(p.pad)?, pair(p.out)?);
    // The full window, padding included, divides `average`.
    let full = window[0] as f64 * window[1] as f64;
    let y = pool_planes(
        x,
        elem,
        out,
        |o, axis| clipped_window(o, window[axis], stride[axis], pad[axis], size[axis]),
        |values| reduce(p.mode, values, full),
    )?;
    Ok(vec![y])
}

fn infer_global_avg_pool(cx: &OpCx<'_>) -> Result<Vec<TypeData>, String> {
    let x = cx.tensor(0)?;
    check_global(cx, x)?;
    Ok(vec![super::common::like(x, vec![x.shape[0], x.shape[1], Dim::Fixed(1), Dim::Fixed(1)])])
}

/// Rank, type, and non-empty (fixed) spatial dims.
fn check_global(cx: &OpCx<'_>, x: &TensorType) -> Result<(), String> {
    expect_rank(cx, x, 4, "operand `x` ([N, C, H, W])")?;
    check_elem(cx, x, None, false)?;
    check_spatial_nonempty(cx, x)
}

fn check_spatial_nonempty(cx: &OpCx<'_>, x: &TensorType) -> Result<(), String> {
    if x.shape[2..].contains(&Dim::Fixed(0)) {
        return Err(format!("operand `x` has an empty spatial extent (shape {}); nothing to pool", show(cx, &x.shape)));
    }
    Ok(())
}

fn eval_global_avg_pool(cx: &OpCx<'_>, inputs: &[TensorData]) -> Result<Vec<TensorData>, String> {
    let x = single(inputs)?;
    check_global(cx, &type_of(x))?;
    let elem = result_elem(cx, x)?;
    let (h, w) = (x.shape()[2], x.shape()[3]);
    let y = pool_planes(
        x,
        elem,
        [1, 1],
        |_, axis| 0..[h, w][axis],
        |values| reduce(PoolMode::Average, values, values.len() as f64),
    )?;
    Ok(vec![y])
}

/// The checked mode and output size of `graph.adaptive_pooling`.
fn check_adaptive(cx: &OpCx<'_>, x: &TensorType) -> Result<(PoolMode, [u64; 2]), String> {
    expect_rank(cx, x, 4, "operand `x` ([N, C, H, W])")?;
    let mode = PoolMode::parse(cx.attrs.str("mode")?, ADAPTIVE_MODES)?;
    check_elem(cx, x, Some(mode), false)?;
    let out = ints_n(cx, "output", 2, 1)?;
    check_spatial_nonempty(cx, x)?;
    Ok((mode, [out[0], out[1]]))
}

fn infer_adaptive_pooling(cx: &OpCx<'_>) -> Result<Vec<TypeData>, String> {
    let x = cx.tensor(0)?;
    let (_, out) = check_adaptive(cx, x)?;
    Ok(vec![super::common::like(x, vec![x.shape[0], x.shape[1], Dim::Fixed(out[0]), Dim::Fixed(out[1])])])
}

/// The adaptive window `floor(i·size/out) .. ceil((i+1)·size/out)`.
fn adaptive_window(i: usize, size: usize, out: usize) -> std::ops::Range<usize> {
    let (i, size, out) = (i as u128, size as u128, out as u128);
    let start = i * size / out;
    let end = ((i + 1) * size).div_ceil(out);
    start as usize..end as usize
}

fn eval_adaptive_pooling(cx: &OpCx<'_>, inputs: &[TensorData]) -> Result<Vec<TensorData>, String> {
    let x = single(inputs)?;
    let (mode, out) = check_adaptive(cx, &type_of(x))?;
    let elem = result_elem(cx, x)?;
    let size = [x.shape()[2], x.shape()[3]];
    let out = pair(out)?;
    let y = pool_planes(
        x,
        elem,
        out,
        |o, axis| adaptive_window(o, size[axis], out[axis]),
        |values| reduce(mode, values, values.len() as f64),
    )?;
    Ok(vec![y])
}

#[cfg(test)]
mod tests {
    use super::super::conv::test_support::{assert_close, eval, eval_unchecked, f32s, infer, random, reals};
    use super::*;
    use strata_ir::QScale;
    use strata_ir::tensor::SplitMix64;

    fn pool_attrs<'a>(mode: &'a str, window: &'a str, stride: &'a str, pad: &'a str) -> Vec<(&'a str, &'a str)> {
        vec![("mode", mode), ("window", window), ("stride", stride), ("pad", pad)]
    }

    fn seq(n: usize) -> Vec<f64> {
        (1..=n).map(|v| v as f64).collect()
    }

    #[test]
    fn pooling_by_hand() {
        // x = [[1 2 3] [4 5 6] [7 8 9]]
        let x = f32s(&[1, 1, 3, 3], &seq(9));
        let y = eval("graph.pooling", std::slice::from_ref(&x), &pool_attrs("\"max\"", "[2, 2]", "[1, 1]", "[0, 0]"))
            .unwrap();
        assert_eq!(y.shape(), &[1, 1, 2, 2]);
        assert_eq!(y.to_reals(), vec![5.0, 6.0, 8.0, 9.0]);
        let y =
            eval("graph.pooling", std::slice::from_ref(&x), &pool_attrs("\"average\"", "[2, 2]", "[1, 1]", "[0, 0]"))
                .unwrap();
        assert_eq!(y.to_reals(), vec![3.0, 4.0, 6.0, 7.0]);
        // Pad 1, stride 2: windows rows/cols {-1,0} and {1,2}.
        let a = |mode| pool_attrs(mode, "[2, 2]", "[2, 2]", "[1, 1]");
        let y = eval("graph.pooling", std::slice::from_ref(&x), &a("\"max\"")).unwrap();
        assert_eq!(y.to_reals(), vec![1.0, 3.0, 7.0, 9.0]);
        let y = eval("graph.pooling", std::slice::from_ref(&x), &a("\"average\"")).unwrap();
        assert_eq!(y.to_reals(), vec![1.0 / 4.0, 5.0 / 4.0, 11.0 / 4.0, 28.0 / 4.0]);
        let y = eval("graph.pooling", std::slice::from_ref(&x), &a("\"average_count_exclude_padding\"")).unwrap();
        assert_eq!(y.to_reals(), vec![1.0, 2.5, 5.5, 7.0]);
        // Max ignores padding even when every value is negative.
        let neg = f32s(&[1, 1, 2, 2], &[-1.0, -2.0, -3.0, -4.0]);
        let y = eval("graph.pooling", &[neg], &pool_attrs("\"max\"", "[2, 2]", "[1, 1]", "[1, 1]")).unwrap();
        assert_eq!(y.to_reals(), vec![-1.0, -1.0, -2.0, -1.0, -1.0, -2.0, -3.0, -3.0, -4.0]);
        // Asymmetric window, stride and padding.
        let y = eval("graph.pooling", &[x], &pool_attrs("\"average\"", "[3, 1]", "[1, 2]", "[1, 0]")).unwrap();
        assert_eq!(y.shape(), &[1, 1, 3, 2]);
        let want = f32s(&[6], &[5.0 / 3.0, 9.0 / 3.0, 12.0 / 3.0, 18.0 / 3.0, 11.0 / 3.0, 15.0 / 3.0]);
        assert_eq!(y.to_reals(), want.to_reals());
    }

    #[test]
    fn max_propagates_nan() {
        let x = f32s(&[1, 1, 1, 2], &[f64::NAN, 1.0]);
        let y = eval("graph.pooling", std::slice::from_ref(&x), &pool_attrs("\"max\"", "[1, 2]", "[1, 1]", "[0, 0]"))
            .unwrap();
        assert!(y.to_reals()[0].is_nan());
        let y = eval("graph.adaptive_pooling", &[x], &[("mode", "\"max\""), ("output", "[1, 1]")]).unwrap();
        assert!(y.to_reals()[0].is_nan());
    }

    #[test]
    fn quantised_max_pooling_keeps_the_type() {
        let q = ElemType::QS8(QScale::new(0.5));
        let x = reals(q, &[1, 1, 2, 2], &[-1.0, 0.5, 2.0, -64.0]);
        let y = eval("graph.pooling", std::slice::from_ref(&x), &pool_attrs("\"max\"", "[2, 2]", "[1, 1]", "[0, 0]"))
            .unwrap();
        assert_eq!(y.elem(), q);
        assert_eq!(y.to_f64_vec(), vec![4.0]);
        let err = infer(
            "graph.pooling",
            &["tensor<1x1x2x2xqs8<0.5>>"],
            &pool_attrs("\"average\"", "[2, 2]", "[1, 1]", "[0, 0]"),
        )
        .unwrap_err();
        assert!(err.contains("qs8") && err.contains("average"), "{err}");
        let err = infer("graph.global_avg_pool", &["tensor<1x1x2x2xqs8<0.5>>"], &[]).unwrap_err();
        assert!(err.contains("qs8"), "{err}");
        let err = infer(
            "graph.adaptive_pooling",
            &["tensor<1x1x2x2xqs8<0.5>>"],
            &[("mode", "\"max\""), ("output", "[1, 1]")],
        )
        .unwrap_err();
        assert!(err.contains("qs8"), "{err}");
    }

    #[test]
    fn global_and_adaptive_by_hand() {
        let x = f32s(&[1, 2, 2, 3], &seq(12));
        let y = eval("graph.global_avg_pool", std::slice::from_ref(&x), &[]).unwrap();
        assert_eq!(y.shape(), &[1, 2, 1, 1]);
        assert_eq!(y.to_reals(), vec![3.5, 9.5]);
        // H = 3 to OH = 2: rows [0, 2) and [1, 3); W = 3 to OW = 2 likewise.
        let x = f32s(&[1, 1, 3, 3], &seq(9));
        let a = |mode| vec![("mode", mode), ("output", "[2, 2]")];
        let y = eval("graph.adaptive_pooling", std::slice::from_ref(&x), &a("\"max\"")).unwrap();
        assert_eq!(y.to_reals(), vec![5.0, 6.0, 8.0, 9.0]);
        let y = eval("graph.adaptive_pooling", std::slice::from_ref(&x), &a("\"average\"")).unwrap();
        assert_eq!(y.to_reals(), vec![3.0, 4.0, 6.0, 7.0]);
        // Upsampling: H = 2 to OH = 3 gives windows [0,1), [0,2), [1,2).
        let x = f32s(&[1, 1, 2, 1], &[1.0, 3.0]);
        let y = eval("graph.adaptive_pooling", &[x], &[("mode", "\"average\""), ("output", "[3, 1]")]).unwrap();
        assert_eq!(y.to_reals(), vec![1.0, 2.0, 3.0]);
        assert_eq!(adaptive_window(1, 5, 3), 1..4);
        assert_eq!(adaptive_window(2, 5, 3), 3..5);
        assert_eq!(adaptive_window(0, usize::MAX, 2), 0..usize::MAX / 2 + 1);
    }

    #[test]
    fn global_is_average_pooling_with_the_full_window() {
        let mut rng = SplitMix64(31);
        for case in 0..12u64 {
            let mut pick = |hi: u64| 1 + (rng.next_u64() % hi) as usize;
            let shape = [pick(2), pick(3), pick(6), pick(6)];
            let x = random(ElemType::F32, &shape, case);
            let window = format!("[{}, {}]", shape[2], shape[3]);
            let want = eval(
                "graph.pooling",
                std::slice::from_ref(&x),
                &pool_attrs("\"average\"", &window, "[1, 1]", "[0, 0]"),
            )
            .unwrap();
            assert_eq!(eval("graph.global_avg_pool", std::slice::from_ref(&x), &[]).unwrap(), want);
            let adaptive =
                eval("graph.adaptive_pooling", &[x], &[("mode", "\"average\""), ("output", "[1, 1]")]).unwrap();
            assert_eq!(adaptive, want);
        }
    }

    #[test]
    fn adaptive_with_divisible_sizes_is_ordinary_pooling() {
        let mut rng = SplitMix64(32);
        for case in 0..16u64 {
            let mut pick = |hi: u64| 1 + (rng.next_u64() % hi) as usize;
            let (oh, ow, kh, kw) = (pick(3), pick(3), pick(3), pick(3));
            let shape = [pick(2), pick(3), oh * kh, ow * kw];
            let x = random(ElemType::F32, &shape, case);
            let (window, output) = (format!("[{kh}, {kw}]"), format!("[{oh}, {ow}]"));
            for mode in ["\"max\"", "\"average\""] {
                let want =
                    eval("graph.pooling", std::slice::from_ref(&x), &pool_attrs(mode, &window, &window, "[0, 0]"))
                        .unwrap();
                let got =
                    eval("graph.adaptive_pooling", std::slice::from_ref(&x), &[("mode", mode), ("output", &output)])
                        .unwrap();
                assert_eq!(got, want, "case {case} {mode}");
            }
        }
    }

    #[test]
    fn half_types_round_once() {
        for elem in [ElemType::F16, ElemType::BF16] {
            let x = random(elem, &[2, 3, 5, 4], 7);
            let a = pool_attrs("\"average_count_exclude_padding\"", "[3, 2]", "[2, 1]", "[1, 1]");
            let y = eval("graph.pooling", std::slice::from_ref(&x), &a).unwrap();
            assert_eq!(y.elem(), elem);
            let y32 = eval("graph.pooling", &[f32s(x.shape(), &x.to_reals())], &a).unwrap();
            let rounded = TensorData::from_reals(elem, y32.shape().to_vec(), &y32.to_reals()).unwrap();
            assert_close(&y.to_reals(), &rounded.to_reals(), 1e-2, 1e-3);
            let y = eval("graph.global_avg_pool", std::slice::from_ref(&x), &[]).unwrap();
            assert_eq!(y.elem(), elem);
            let y = eval("graph.adaptive_pooling", &[x], &[("mode", "\"max\""), ("output", "[2, 3]")]).unwrap();
            assert_eq!((y.elem(), y.shape()), (elem, &[2, 3, 2, 3][..]));
        }
    }

    #[test]
    fn symbolic_dims() {
        let a = pool_attrs("\"max\"", "[3, 3]", "[2, 2]", "[1, 1]");
        assert_eq!(infer("graph.pooling", &["tensor<?Nx?Cx112x112xf32>"], &a).unwrap(), "tensor<?Nx?Cx56x56xf32>");
        let err = infer("graph.pooling", &["tensor<?Nx3x?Hx112xf32>"], &a).unwrap_err();
        assert!(err.contains("height") && err.contains("symbolic"), "{err}");
        assert_eq!(infer("graph.global_avg_pool", &["tensor<?Nx8x?Hx?Wxf16>"], &[]).unwrap(), "tensor<?Nx8x1x1xf16>");
        assert_eq!(
            infer(
                "graph.adaptive_pooling",
                &["tensor<?Nx8x?Hx7xbf16>"],
                &[("mode", "\"average\""), ("output", "[2, 3]")]
            )
            .unwrap(),
            "tensor<?Nx8x2x3xbf16>"
        );
    }

    #[test]
    fn bad_inputs_are_errors() {
        let x = ["tensor<1x2x4x4xf32>"];
        let p = |w, s, pad| pool_attrs("\"max\"", w, s, pad);
        type Case<'a> = (&'a str, [&'a str; 1], Vec<(&'a str, &'a str)>, &'a str);
        let cases: Vec<Case> = vec![
            ("graph.pooling", ["tensor<2x4x4xf32>"], p("[2, 2]", "[1, 1]", "[0, 0]"), "rank 4"),
            ("graph.pooling", x, pool_attrs("\"min\"", "[2, 2]", "[1, 1]", "[0, 0]"), "`min`"),
            ("graph.pooling", x, p("[0, 2]", "[1, 1]", "[0, 0]"), "`window`"),
            ("graph.pooling", x, p("[2, 2]", "[0, 1]", "[0, 0]"), "`stride`"),
            ("graph.pooling", x, p("[2, 2]", "[1, 1]", "[0]"), "`pad`"),
            ("graph.pooling", x, p("[2, 2]", "[1, 1]", "[2, 0]"), "smaller than"),
            ("graph.pooling", x, p("[5, 2]", "[1, 1]", "[0, 0]"), "larger than the padded input"),
            ("graph.pooling", x, p("[9223372036854775807, 2]", "[1, 1]", "[9223372036854775806, 0]"), "overflows"),
            ("graph.pooling", ["tensor<1x2x4x4xi8>"], p("[2, 2]", "[1, 1]", "[0, 0]"), "i8"),
            ("graph.pooling", ["tensor<1x2x4x4xqu8<0.5, 3>>"], p("[2, 2]", "[1, 1]", "[0, 0]"), "qu8"),
            ("graph.pooling", ["tensor<1x2x4x4xf32, #nhwc>"], p("[2, 2]", "[1, 1]", "[0, 0]"), "layout"),
            ("graph.global_avg_pool", ["tensor<1x2x0x4xf32>"], vec![], "empty"),
            ("graph.global_avg_pool", ["tensor<1x2x4xf32>"], vec![], "rank 4"),
            ("graph.global_avg_pool", ["tensor<1x2x4x4xi32>"], vec![], "i32"),
            (
                "graph.adaptive_pooling",
                x,
                vec![("mode", "\"average_count_exclude_padding\""), ("output", "[1, 1]")],
                "mode",
            ),
            ("graph.adaptive_pooling", x, vec![("mode", "\"max\""), ("output", "[0, 1]")], "`output`"),
            ("graph.adaptive_pooling", x, vec![("mode", "\"max\""), ("output", "[1, 1, 1]")], "`output`"),
            (
                "graph.adaptive_pooling",
                ["tensor<1x2x4x0xf32>"],
                vec![("mode", "\"max\""), ("output", "[1, 1]")],
                "empty",
            ),
        ];
        for (name, types, attrs, want) in cases {
            let err = infer(name, &types, &attrs).expect_err(want);
            assert!(err.contains(want), "{name} {types:?}: `{err}` should mention `{want}`");
        }
        let err = eval_unchecked("graph.global_avg_pool", &[], &[]).unwrap_err();
        assert!(err.contains("1 input"), "{err}");
        let err =
            eval_unchecked("graph.pooling", &[f32s(&[4], &[0.0; 4])], &p("[2, 2]", "[1, 1]", "[0, 0]")).unwrap_err();
        assert!(err.contains("rank 4"), "{err}");
        // A symbolic H that turns out empty is caught when evaluating.
        let empty = TensorData::zeros(ElemType::F32, vec![1, 1, 0, 2]).unwrap();
        let err = eval_unchecked("graph.global_avg_pool", &[empty], &[]).unwrap_err();
        assert!(err.contains("empty"), "{err}");
        // Empty batches are fine.
        let empty = TensorData::zeros(ElemType::F32, vec![0, 3, 2, 2]).unwrap();
        let y = eval("graph.pooling", &[empty], &p("[2, 2]", "[1, 1]", "[0, 0]")).unwrap();
        assert_eq!(y.shape(), &[0, 3, 1, 1]);
    }

    #[test]
    fn modes_parse_and_name_themselves() {
        for &(name, mode) in MODES {
            assert_eq!(PoolMode::parse(name, ALL_MODES).unwrap(), mode);
            assert_eq!(mode.name(), name);
        }
        let err = PoolMode::parse("average_count_exclude_padding", ADAPTIVE_MODES).unwrap_err();
        assert!(err.contains("max, average)"), "{err}");
    }

    #[test]
    fn huge_attributes_and_empty_batches_stay_cheap() {
        // A 1x1 output whose window is mostly padding: only in-bounds positions are visited.
        let x = f32s(&[1, 1, 1, 1], &[3.0]);
        let a = pool_attrs("\"max\"", "[2199023255553, 1]", "[1, 1]", "[1099511627776, 0]");
        assert_eq!(eval("graph.pooling", std::slice::from_ref(&x), &a).unwrap().to_reals(), vec![3.0]);
        let a = pool_attrs("\"average_count_exclude_padding\"", "[2199023255553, 1]", "[1, 1]", "[1099511627776, 0]");
        assert_eq!(eval("graph.pooling", std::slice::from_ref(&x), &a).unwrap().to_reals(), vec![3.0]);
        // An empty batch with a huge output size is not enumerated.
        let empty = TensorData::zeros(ElemType::F32, vec![0, 1, 2, 2]).unwrap();
        let a = [("mode", "\"max\""), ("output", "[4611686018427387904, 1]")];
        let y = eval("graph.adaptive_pooling", &[empty], &a).unwrap();
        assert_eq!(y.shape(), &[0, 1, 1 << 62, 1]);
    }
}
