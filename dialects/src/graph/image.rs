//! Image sampling ops: `graph.warp_perspective` and `graph.resize` (MegEngine's
//! WarpPerspective and Resize, NCHW; reference: `docs/graph-dialect.md`).
//!
//! Both take a float input `[N, C, H, W]` (f32, f16 or bf16), compute in `f64`
//! and round once to the input's element type. The result is `[N, C, OH, OW]`
//! with `output = [OH, OW]`; N and C (symbolic or not) pass through.
//!
//! `warp_perspective`: destination pixel `(h, w)` samples the source at
//! `(x, y) = (u / s, v / s)` where `[u, v, s] = M · [w, h, 1]` and `M` is the
//! batch's 3×3 matrix (`mat [N, 3, 3]`, any float type).
//! - `imode = "linear"`: bilinear interpolation of the four pixels around
//!   `(x, y)`; `"nearest"`: the pixel at `(round(x), round(y))`, rounding half
//!   away from zero.
//! - `border_mode` says what a pixel outside the image reads: `constant` reads
//!   `border_value`; `replicate` clamps to the edge (`aaa|abcd|ddd`); `reflect`
//!   mirrors including the edge (`fedcba|abcdefgh|hgfedcb`, MegEngine's
//!   REFLECT); `wrap` is periodic (`cdefgh|abcdefgh|abcdefg`).
//! - Interpolation terms with weight 0 are skipped, so the identity matrix
//!   reproduces the input exactly even next to an infinite `border_value`.
//! - A NaN source coordinate (e.g. `s = 0` with `u = 0`) reads `border_value`;
//!   infinite or huge coordinates are clamped to ±2^40 first.
//!
//! `resize` uses half-pixel centres: linear samples at
//! `src = (dst + 0.5)·(in/out) − 0.5` clamped into `[0, in − 1]` (bilinear
//! between `floor(src)` and the next pixel, clamped); nearest reads
//! `floor((dst + 0.5)·in/out)` clamped to `in − 1`.
//!
//! The input's H and W must be at least 1. Results over
//! [`MAX_EVAL_ELEMENTS`](super::shape::MAX_EVAL_ELEMENTS) elements are
//! evaluation errors rather than allocations.

use super::common::{expect_rank, ints_n, show, strides};
use super::shape::check_eval_size;
use strata_ir::{Dim, OpCx, Registry, TensorData, TensorType, TypeData, define_op};

define_op! {
    /// Warps each image by its batch's 3×3 perspective matrix.
    pub struct WarpPerspectiveOp = "graph.warp_perspective" {
        summary: "perspective warp of NCHW images by per-batch 3x3 matrices",
        operands: [input, mat],
        results: [result],
        attrs: { output: Ints, imode: Str, border_mode: Str, border_value: Float },
        optional_attrs: {},
        traits: [PURE],
        infer: infer_warp,
        eval: eval_warp,
    }
}

define_op! {
    /// Resizes NCHW images to `output = [OH, OW]` with half-pixel centres.
    pub struct ResizeOp = "graph.resize" {
        summary: "resize NCHW images (linear or nearest, half-pixel centres)",
        operands: [input],
        results: [result],
        attrs: { output: Ints, imode: Str },
        optional_attrs: {},
        traits: [PURE],
        infer: infer_resize,
        eval: eval_resize,
    }
}

pub(crate) fn register(r: &mut Registry) {
    for def in [WarpPerspectiveOp::DEF, ResizeOp::DEF] {
        r.register(def).expect("invariant: graph ops register once");
    }
}

/// Interpolation mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InterpMode {
    /// Bilinear.
    Linear,
    /// Nearest neighbour.
    Nearest,
}

impl InterpMode {
    /// The mode named `name`.
    pub fn parse(name: &str) -> Result<InterpMode, String> {
        match name {
            "linear" => Ok(InterpMode::Linear),
            "nearest" => Ok(InterpMode::Nearest),
            other => Err(format!("unknown imode `{other}` (expected linear or nearest)")),
        }
    }
}

/// What a pixel outside the image reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BorderMode {
    /// `border_value`.
    Constant,
    /// The nearest edge pixel.
    Replicate,
    /// Mirrored including the edge: `fedcba|abcdefgh|hgfedcb`.
    Reflect,
    /// Periodic: `cdefgh|abcdefgh|abcdefg`.
    Wrap,
}

impl BorderMode {
    /// The mode named `name`.
    pub fn parse(name: &str) -> Result<BorderMode, String> {
        match name {
            "constant" => Ok(BorderMode::Constant),
            "replicate" => Ok(BorderMode::Replicate),
            "reflect" => Ok(BorderMode::Reflect),
            "wrap" => Ok(BorderMode::Wrap),
            other => Err(format!("unknown border_mode `{other}` (expected constant, replicate, reflect or wrap)")),
        }
    }

    /// The in-image index that position `p` of an axis of `len >= 1` pixels
    /// reads, or `None` for the constant border.
    pub fn index(self, p: i64, len: usize) -> Option<usize> {
        let n = len as i64;
        if (0..n).contains(&p) {
            return Some(p as usize);
        }
        let i = match self {
            BorderMode::Constant => return None,
            BorderMode::Replicate => p.clamp(0, n - 1),
            BorderMode::Reflect => {
                let m = p.rem_euclid(2 * n);
                if m >= n { 2 * n - 1 - m } else { m }
            }
            BorderMode::Wrap => p.rem_euclid(n),
        };
        Some(i as usize)
    }
}

/// Fails unless `t` has a float element type, naming the operand `what`.
fn expect_float(t: &TensorType, what: &str) -> Result<(), String> {
    if t.elem.is_float() {
        Ok(())
    } else {
        Err(format!("{what} must be a float tensor (f32, f16 or bf16), not {}", t.elem))
    }
}

/// Checks the input `[N, C, H, W]` and returns it.
fn image_input<'a>(cx: &OpCx<'a>) -> Result<&'a TensorType, String> {
    let x = cx.tensor(0)?;
    expect_rank(cx, x, 4, "operand #0 (input)")?;
    expect_float(x, "operand #0 (input)")?;
    if x.shape[2..].contains(&Dim::Fixed(0)) {
        return Err(format!("operand #0 (input) {} must have height and width >= 1", show(cx, &x.shape)));
    }
    Ok(x)
}

/// `[N, C, OH, OW]` of the input's element type.
fn image_result(x: &TensorType, out: &[u64]) -> Vec<TypeData> {
    let shape = vec![x.shape[0], x.shape[1], Dim::Fixed(out[0]), Dim::Fixed(out[1])];
    vec![super::common::tensor(x.elem, shape)]
}

/// The `[N, C, H, W]` sizes of an evaluated input.
fn image_dims(x: &TensorData) -> Result<[usize; 4], String> {
    match *x.shape() {
        [n, c, h, w] if h > 0 && w > 0 && x.elem().is_float() => Ok([n, c, h, w]),
        _ => {
            Err(format!("the input must be a float [N, C, H, W] image with H, W >= 1, is {}{:?}", x.elem(), x.shape()))
        }
    }
}

/// The `[OH, OW]` attribute as sizes, checking the result size.
fn output_size(cx: &OpCx<'_>, n: usize, c: usize) -> Result<[usize; 2], String> {
    let out = ints_n(cx, "output", 2, 1)?;
    let oh = usize::try_from(out[0]).map_err(|_| "attribute `output` is too large".to_string())?;
    let ow = usize::try_from(out[1]).map_err(|_| "attribute `output` is too large".to_string())?;
    check_eval_size(&[n, c, oh, ow])?;
    Ok([oh, ow])
}

/// Weighted sum of `(weight, value)` terms, skipping zero weights.
fn weighted(terms: impl IntoIterator<Item = (f64, f64)>) -> f64 {
    let mut acc: Option<f64> = None;
    for (wt, v) in terms {
        if wt != 0.0 {
            acc = Some(acc.map_or(wt * v, |a| a + wt * v));
        }
    }
    acc.unwrap_or(0.0)
}

// ---- warp_perspective ---------------------------------------------------------------

fn infer_warp(cx: &OpCx<'_>) -> Result<Vec<TypeData>, String> {
    let x = image_input(cx)?;
    let m = cx.tensor(1)?;
    expect_rank(cx, m, 3, "operand #1 (mat)")?;
    expect_float(m, "operand #1 (mat)")?;
    if m.shape[1..] != [Dim::Fixed(3), Dim::Fixed(3)] {
        return Err(format!("operand #1 (mat) must have shape [N, 3, 3], has {}", show(cx, &m.shape)));
    }
    if m.shape[0] != x.shape[0] {
        return Err(format!(
            "operand #1 (mat) has batch {} but the input {} has batch {}; they must be equal",
            show(cx, &m.shape[..1]),
            show(cx, &x.shape),
            show(cx, &x.shape[..1])
        ));
    }
    let out = ints_n(cx, "output", 2, 1)?;
    InterpMode::parse(cx.attrs.str("imode")?)?;
    BorderMode::parse(cx.attrs.str("border_mode")?)?;
    cx.attrs.float("border_value")?;
    Ok(image_result(x, &out))
}

/// A source coordinate as an integer-safe float: NaN stays NaN, everything
/// else is clamped to ±2^40.
fn clamp_coord(v: f64) -> f64 {
    const LIMIT: f64 = (1u64 << 40) as f64;
    if v.is_nan() { v } else { v.clamp(-LIMIT, LIMIT) }
}

/// Samples channel image `img` (`h`×`w` reals, row-major) at `(x, y)`.
#[allow(clippy::too_many_arguments)]
fn sample(
    img: &dyn Fn(usize) -> f64,
    h: usize,
    w: usize,
    x: f64,
    y: f64,
    imode: InterpMode,
    border: BorderMode,
    bv: f64,
) -> f64 {
    let (x, y) = (clamp_coord(x), clamp_coord(y));
    if x.is_nan() || y.is_nan() {
        return bv;
    }
    let pixel = |yi: i64, xi: i64| match (border.index(yi, h), border.index(xi, w)) {
        (Some(r), Some(c)) => img(r * w + c),
        _ => bv,
    };
    match imode {
        InterpMode::Nearest => pixel(y.round() as i64, x.round() as i64),
        InterpMode::Linear => {
            let (x0, y0) = (x.floor(), y.floor());
            let (fx, fy) = (x - x0, y - y0);
            let (x0, y0) = (x0 as i64, y0 as i64);
            weighted([
                ((1.0 - fy) * (1.0 - fx), pixel(y0, x0)),
                ((1.0 - fy) * fx, pixel(y0, x0 + 1)),
                (fy * (1.0 - fx), pixel(y0 + 1, x0)),
                (fy * fx, pixel(y0 + 1, x0 + 1)),
            ])
        }
    }
}

fn eval_warp(cx: &OpCx<'_>, inputs: &[TensorData]) -> Result<Vec<TensorData>, String> {
    let [x, m] = inputs else {
        return Err(format!("expected 2 inputs, got {}", inputs.len()));
    };
    let [n, c, h, w] = image_dims(x)?;
    if m.shape() != [n, 3, 3] || !m.elem().is_float() {
        return Err(format!("mat must be a float [{n}, 3, 3] tensor, is {}{:?}", m.elem(), m.shape()));
    }
    let [oh, ow] = output_size(cx, n, c)?;
    let imode = InterpMode::parse(cx.attrs.str("imode")?)?;
    let border = BorderMode::parse(cx.attrs.str("border_mode")?)?;
    let bv = cx.attrs.float("border_value")?;
    let st = strides(x.shape());
    let shape = [n, c, oh, ow];
    let out = super::common::from_fn(x.elem(), &shape, |idx| {
        let [b, ch, dh, dw] = [idx[0], idx[1], idx[2], idx[3]];
        let mm = |r: usize, k: usize| m.get_real(b * 9 + r * 3 + k);
        let (dx, dy) = (dw as f64, dh as f64);
        let u = mm(0, 0) * dx + mm(0, 1) * dy + mm(0, 2);
        let v = mm(1, 0) * dx + mm(1, 1) * dy + mm(1, 2);
        let s = mm(2, 0) * dx + mm(2, 1) * dy + mm(2, 2);
        let base = b * st[0] + ch * st[1];
        sample(&|i| x.get_real(base + i), h, w, u / s, v / s, imode, border, bv)
    })?;
    Ok(vec![out])
}

// ---- resize -------------------------------------------------------------------------

fn infer_resize(cx: &OpCx<'_>) -> Result<Vec<TypeData>, String> {
    let x = image_input(cx)?;
    let out = ints_n(cx, "output", 2, 1)?;
    InterpMode::parse(cx.attrs.str("imode")?)?;
    Ok(image_result(x, &out))
}

/// Linear source position of destination `dst` along an axis resized from
/// `len_in` to `len_out`: the two pixels and the weight of the second.
pub fn linear_source(dst: usize, len_in: usize, len_out: usize) -> (usize, usize, f64) {
    let scale = len_in as f64 / len_out as f64;
    let src = ((dst as f64 + 0.5) * scale - 0.5).clamp(0.0, (len_in - 1) as f64);
    let i0 = src.floor();
    let i0u = i0 as usize;
    (i0u, (i0u + 1).min(len_in - 1), src - i0)
}

/// Nearest source pixel of destination `dst` along an axis resized from
/// `len_in` to `len_out`.
pub fn nearest_source(dst: usize, len_in: usize, len_out: usize) -> usize {
    (((dst as f64 + 0.5) * len_in as f64 / len_out as f64).floor() as usize).min(len_in - 1)
}

fn eval_resize(cx: &OpCx<'_>, inputs: &[TensorData]) -> Result<Vec<TensorData>, String> {
    let x = super::common::one(inputs)?;
    let [n, c, h, w] = image_dims(x)?;
    let [oh, ow] = output_size(cx, n, c)?;
    let imode = InterpMode::parse(cx.attrs.str("imode")?)?;
    let st = strides(x.shape());
    let out = super::common::from_fn(x.elem(), &[n, c, oh, ow], |idx| {
        let base = idx[0] * st[0] + idx[1] * st[1];
        let px = |r: usize, col: usize| x.get_real(base + r * w + col);
        match imode {
            InterpMode::Nearest => px(nearest_source(idx[2], h, oh), nearest_source(idx[3], w, ow)),
            InterpMode::Linear => {
                let (y0, y1, fy) = linear_source(idx[2], h, oh);
                let (x0, x1, fx) = linear_source(idx[3], w, ow);
                weighted([
                    ((1.0 - fy) * (1.0 - fx), px(y0, x0)),
                    ((1.0 - fy) * fx, px(y0, x1)),
                    (fy * (1.0 - fx), px(y1, x0)),
                    (fy * fx, px(y1, x1)),
                ])
            }
        }
    })?;
    Ok(vec![out])
}

#[cfg(test)]
mod tests {
    use super::super::shape::testing::{Harness, Wild};
    use super::*;
    use strata_ir::ElemType;
    use strata_ir::tensor::SplitMix64;

    fn image(shape: &[usize], v: &[f64]) -> TensorData {
        TensorData::from_f64(ElemType::F32, shape.to_vec(), v).unwrap()
    }

    fn mats(n: usize, m: [f64; 9]) -> TensorData {
        let v: Vec<f64> = (0..n).flat_map(|_| m).collect();
        TensorData::from_f64(ElemType::F32, vec![n, 3, 3], &v).unwrap()
    }

    const IDENTITY: [f64; 9] = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0];

    fn warp(
        h: &mut Harness,
        x: &TensorData,
        m: &TensorData,
        out: &str,
        imode: &str,
        border: &str,
        bv: &str,
    ) -> TensorData {
        let (imode, border) = (format!("\"{imode}\""), format!("\"{border}\""));
        h.eval1(
            "graph.warp_perspective",
            &[x.clone(), m.clone()],
            &[("output", out), ("imode", &imode), ("border_mode", &border), ("border_value", bv)],
        )
    }

    #[test]
    fn border_indices() {
        // fedcba|abcdefgh|hgfedcb for len 8 (a = 0).
        let r: Vec<usize> = (-3..11).map(|p| BorderMode::Reflect.index(p, 8).unwrap()).collect();
        assert_eq!(r, vec![2, 1, 0, 0, 1, 2, 3, 4, 5, 6, 7, 7, 6, 5]);
        let w: Vec<usize> = (-3..11).map(|p| BorderMode::Wrap.index(p, 8).unwrap()).collect();
        assert_eq!(w, vec![5, 6, 7, 0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2]);
        let c: Vec<usize> = (-2..10).map(|p| BorderMode::Replicate.index(p, 8).unwrap()).collect();
        assert_eq!(c, vec![0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 7, 7]);
        assert_eq!(BorderMode::Constant.index(-1, 8), None);
        assert_eq!(BorderMode::Constant.index(8, 8), None);
        assert_eq!(BorderMode::Reflect.index(-1, 1), Some(0));
        assert_eq!(
            BorderMode::Reflect.index(i64::MIN, 3),
            Some(BorderMode::Reflect.index(i64::MIN % 6 + 6, 3).unwrap())
        );
        assert!(BorderMode::Wrap.index(i64::MAX, 5).is_some());
    }

    #[test]
    fn warp_translation_by_hand() {
        let mut h = Harness::new();
        // 1x1x2x3 image; the matrix shifts the sampling point by +0.5 in x and +1 in y.
        let x = image(&[1, 1, 2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let m = mats(1, [1.0, 0.0, 0.5, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0]);
        let y = warp(&mut h, &x, &m, "[2, 3]", "linear", "constant", "10.0");
        // Row 0 samples source row 1 at x = 0.5, 1.5, 2.5 (the last half outside).
        // Row 1 samples source row 2, entirely outside: the border value.
        assert_eq!(y.to_f64_vec(), vec![4.5, 5.5, 8.0, 10.0, 10.0, 10.0]);
        let y = warp(&mut h, &x, &m, "[2, 3]", "linear", "replicate", "0.0");
        assert_eq!(y.to_f64_vec(), vec![4.5, 5.5, 6.0, 4.5, 5.5, 6.0]);
        let y = warp(&mut h, &x, &m, "[2, 3]", "linear", "wrap", "0.0");
        // x = 2.5 mixes column 2 and column 0 (wrapped); row 2 wraps to row 0.
        assert_eq!(y.to_f64_vec(), vec![4.5, 5.5, 5.0, 1.5, 2.5, 2.0]);
        let y = warp(&mut h, &x, &m, "[2, 3]", "linear", "reflect", "0.0");
        // Column 3 reflects to column 2; row 2 reflects to row 1.
        assert_eq!(y.to_f64_vec(), vec![4.5, 5.5, 6.0, 4.5, 5.5, 6.0]);
        // Nearest rounds half away from zero: x = 0.5 -> 1, 1.5 -> 2, 2.5 -> 3.
        let y = warp(&mut h, &x, &m, "[1, 3]", "nearest", "constant", "-1.0");
        assert_eq!(y.to_f64_vec(), vec![5.0, 6.0, -1.0]);
    }

    #[test]
    fn warp_perspective_division_and_batches() {
        let mut h = Harness::new();
        let x = image(&[2, 1, 2, 2], &[1.0, 2.0, 3.0, 4.0, 10.0, 20.0, 30.0, 40.0]);
        // Batch 0: scale by 2 through the third coordinate (s = 2), so dst (1, 1) reads src (0.5, 0.5).
        // Batch 1: swap x and y (transpose).
        let m = TensorData::from_f64(
            ElemType::F32,
            vec![2, 3, 3],
            &[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 2.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0],
        )
        .unwrap();
        let y = warp(&mut h, &x, &m, "[2, 2]", "linear", "constant", "0.0");
        assert_eq!(y.to_f64_vec(), vec![1.0, 1.5, 2.0, 2.5, 10.0, 30.0, 20.0, 40.0]);
        // s = 0 at the origin gives NaN coordinates: the border value.
        let zero = mats(2, [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0]);
        let y = warp(&mut h, &x, &zero, "[1, 1]", "linear", "replicate", "7.0");
        assert_eq!(y.to_f64_vec(), vec![7.0, 7.0]);
        // At (1, 1), s = 0 gives infinite coordinates, clamped: replicate reads the
        // bottom-right pixel; on the first row and column 0/0 is NaN again.
        let y = warp(&mut h, &x, &zero, "[2, 2]", "linear", "replicate", "7.0");
        assert_eq!(y.to_f64_vec(), vec![7.0, 7.0, 7.0, 4.0, 7.0, 7.0, 7.0, 40.0]);
    }

    #[test]
    fn warp_identity_is_the_input() {
        let mut h = Harness::new();
        for (seed, elem) in [ElemType::F32, ElemType::F16, ElemType::BF16].into_iter().enumerate() {
            for border in ["constant", "replicate", "reflect", "wrap"] {
                for imode in ["linear", "nearest"] {
                    let x = TensorData::random_uniform(elem, vec![2, 3, 4, 5], -3.0, 3.0, seed as u64).unwrap();
                    let m = mats(2, IDENTITY);
                    let y = warp(&mut h, &x, &m, "[4, 5]", imode, border, "inf");
                    assert_eq!(y, x, "{elem} {border} {imode}");
                }
            }
        }
    }

    #[test]
    fn warp_infer_and_errors() {
        let mut h = Harness::new();
        let attrs = |out: &'static str| {
            [("output", out), ("imode", "\"linear\""), ("border_mode", "\"constant\""), ("border_value", "0.0")]
        };
        assert_eq!(
            h.infer("graph.warp_perspective", &["tensor<?Nx3x8x8xf16>", "tensor<?Nx3x3xf32>"], &attrs("[4, 6]"))
                .unwrap(),
            "tensor<?Nx3x4x6xf16>"
        );
        for (tys, out, want) in [
            (["tensor<1x3x8x8xi8>", "tensor<1x3x3xf32>"], "[4, 4]", "operand #0 (input) must be a float tensor"),
            (["tensor<1x3x8x8xf32>", "tensor<1x3x3xi32>"], "[4, 4]", "operand #1 (mat) must be a float tensor"),
            (["tensor<3x8x8xf32>", "tensor<1x3x3xf32>"], "[4, 4]", "rank 4"),
            (["tensor<1x3x8x8xf32>", "tensor<1x3x2xf32>"], "[4, 4]", "[N, 3, 3]"),
            (["tensor<2x3x8x8xf32>", "tensor<1x3x3xf32>"], "[4, 4]", "must be equal"),
            (["tensor<?Nx3x8x8xf32>", "tensor<1x3x3xf32>"], "[4, 4]", "must be equal"),
            (["tensor<1x3x8x8xf32>", "tensor<1x3x3xf32>"], "[4]", "`output` must be 2 integers >= 1"),
            (["tensor<1x3x8x8xf32>", "tensor<1x3x3xf32>"], "[0, 4]", "`output` must be 2 integers >= 1"),
            (["tensor<1x3x0x8xf32>", "tensor<1x3x3xf32>"], "[4, 4]", "height and width >= 1"),
        ] {
            let e = h.infer("graph.warp_perspective", &tys, &attrs(out)).unwrap_err();
            assert!(e.contains(want), "{tys:?} {out}: {e}");
        }
        let base = ["tensor<1x3x8x8xf32>", "tensor<1x3x3xf32>"];
        let e = h
            .infer(
                "graph.warp_perspective",
                &base,
                &[
                    ("output", "[2, 2]"),
                    ("imode", "\"cubic\""),
                    ("border_mode", "\"constant\""),
                    ("border_value", "0.0"),
                ],
            )
            .unwrap_err();
        assert!(e.contains("unknown imode `cubic`"), "{e}");
        let e = h
            .infer(
                "graph.warp_perspective",
                &base,
                &[
                    ("output", "[2, 2]"),
                    ("imode", "\"linear\""),
                    ("border_mode", "\"mirror\""),
                    ("border_value", "0.0"),
                ],
            )
            .unwrap_err();
        assert!(e.contains("unknown border_mode `mirror`"), "{e}");
        let x = TensorData::zeros(ElemType::F32, vec![1, 1, 1, 1]).unwrap();
        let e = h
            .eval(
                "graph.warp_perspective",
                &[x, mats(1, IDENTITY)],
                &[
                    ("output", "[65536, 65536]"),
                    ("imode", "\"linear\""),
                    ("border_mode", "\"wrap\""),
                    ("border_value", "0"),
                ],
            )
            .unwrap_err();
        assert!(e.contains("refuses to allocate"), "{e}");
    }

    fn resize(h: &mut Harness, x: &TensorData, out: &str, imode: &str) -> TensorData {
        h.eval1("graph.resize", std::slice::from_ref(x), &[("output", out), ("imode", &format!("\"{imode}\""))])
    }

    #[test]
    fn resize_by_hand() {
        let mut h = Harness::new();
        let x = image(&[1, 1, 2, 2], &[1.0, 2.0, 3.0, 4.0]);
        // Upscaling 2 -> 4: src = (d + 0.5) / 2 - 0.5 = -0.25, 0.25, 0.75, 1.25 -> clamp 0, 0.25, 0.75, 1.
        let y = resize(&mut h, &x, "[4, 4]", "linear");
        let row = |a: f64, b: f64| [a, a + 0.25 * (b - a), a + 0.75 * (b - a), b];
        let r0 = row(1.0, 2.0);
        let r3 = row(3.0, 4.0);
        let mix = |t: f64| -> Vec<f64> { r0.iter().zip(&r3).map(|(a, b)| a + t * (b - a)).collect() };
        let want: Vec<f64> = [mix(0.0), mix(0.25), mix(0.75), mix(1.0)].concat();
        assert_eq!(y.to_f64_vec(), want);
        // Nearest: floor((d + 0.5) * 2 / 4) = 0, 0, 1, 1.
        let y = resize(&mut h, &x, "[4, 4]", "nearest");
        assert_eq!(y.to_f64_vec()[..8], [1.0, 1.0, 2.0, 2.0, 1.0, 1.0, 2.0, 2.0]);
        // Downscaling 1x4 -> 1x2: src = (d + 0.5) * 2 - 0.5 = 0.5, 2.5.
        let x = image(&[1, 1, 1, 4], &[0.0, 10.0, 20.0, 40.0]);
        assert_eq!(resize(&mut h, &x, "[1, 2]", "linear").to_f64_vec(), vec![5.0, 30.0]);
        // Nearest: floor((d + 0.5) * 2) = 1, 3.
        assert_eq!(resize(&mut h, &x, "[1, 2]", "nearest").to_f64_vec(), vec![10.0, 40.0]);
        // 1 -> 3 along a size-1 axis copies it.
        let x = image(&[1, 2, 1, 1], &[3.0, -4.0]);
        assert_eq!(resize(&mut h, &x, "[1, 3]", "linear").to_f64_vec(), vec![3.0, 3.0, 3.0, -4.0, -4.0, -4.0]);
    }

    #[test]
    fn resize_same_size_is_the_input() {
        let mut h = Harness::new();
        for (seed, elem) in [ElemType::F32, ElemType::F16, ElemType::BF16].into_iter().enumerate() {
            for imode in ["linear", "nearest"] {
                for shape in [[1, 1, 1, 1], [2, 3, 5, 4], [1, 2, 7, 3]] {
                    let x = TensorData::random_uniform(elem, shape.to_vec(), -5.0, 5.0, seed as u64).unwrap();
                    let out = format!("[{}, {}]", shape[2], shape[3]);
                    assert_eq!(resize(&mut h, &x, &out, imode), x, "{elem} {imode} {shape:?}");
                }
            }
        }
    }

    #[test]
    fn resize_infer_and_errors() {
        let mut h = Harness::new();
        let a = |out: &'static str, imode: &'static str| [("output", out), ("imode", imode)];
        assert_eq!(
            h.infer("graph.resize", &["tensor<?Nx?Cx?Hx5xbf16>"], &a("[10, 3]", "\"nearest\"")).unwrap(),
            "tensor<?Nx?Cx10x3xbf16>"
        );
        for (ty, attrs, want) in [
            ("tensor<1x3x4x4xqs8<0.5>>", a("[2, 2]", "\"linear\""), "operand #0 (input) must be a float tensor"),
            ("tensor<1x3x4x4xf32>", a("[2, -2]", "\"linear\""), "integers >= 1"),
            ("tensor<1x3x4x4xf32>", a("[2, 2, 2]", "\"linear\""), "integers >= 1"),
            ("tensor<1x3x4x4xf32>", a("[2, 2]", "\"area\""), "unknown imode"),
            ("tensor<1x3x4x4xf32>", a("2", "\"linear\""), "array of integers"),
            ("tensor<1x3x4x4xf32, #nhwc>", a("[2, 2]", "\"linear\""), "plain layout"),
        ] {
            let e = h.infer("graph.resize", &[ty], &attrs).unwrap_err();
            assert!(e.contains(want), "{ty} {attrs:?}: {e}");
        }
        let x = TensorData::zeros(ElemType::F32, vec![1, 1, 1, 1]).unwrap();
        let e = h.eval("graph.resize", &[x], &a("[9223372036854775807, 2]", "\"linear\"")).unwrap_err();
        assert!(e.contains("refuses to allocate"), "{e}");
    }

    #[test]
    fn wild_attributes_never_panic() {
        let mut h = Harness::new();
        let mut w = Wild(SplitMix64(7));
        let (mut ok, mut err) = (0, 0);
        for round in 0..600 {
            let mut dims: Vec<usize> = (0..4).map(|_| (w.0.next_u64() % 3) as usize).collect();
            if round % 5 != 0 {
                dims[2] += 1;
                dims[3] += 1;
            }
            let elem = [ElemType::F32, ElemType::F16, ElemType::I32][round % 3];
            let x = TensorData::random_uniform(elem, dims.clone(), -2.0, 2.0, round as u64).unwrap();
            let output = if round % 3 == 0 {
                w.ints(3)
            } else {
                format!("[{}, {}]", 1 + w.0.next_u64() % 4, 1 + w.0.next_u64() % 4)
            };
            let imode = w.pick(&["\"linear\"", "\"nearest\"", "\"area\""]);
            let result = if round % 2 == 0 {
                h.eval("graph.resize", &[x], &[("output", &output), ("imode", imode)])
            } else {
                let n = if w.0.next_u64().is_multiple_of(4) { 1 } else { dims[0] };
                // Matrices with zeros, huge and tiny entries.
                let vals: Vec<f64> = (0..n * 9)
                    .map(|_| [0.0, 1.0, -1.0, 0.5, 1e30, -1e-30, f64::NAN, 3.0][(w.0.next_u64() % 8) as usize])
                    .collect();
                let m = TensorData::from_f64(ElemType::F32, vec![n, 3, 3], &vals).unwrap();
                let border = w.pick(&["\"constant\"", "\"replicate\"", "\"reflect\"", "\"wrap\"", "\"x\""]);
                let bv = w.pick(&["0.0", "nan", "-inf", "2"]);
                h.eval(
                    "graph.warp_perspective",
                    &[x, m],
                    &[("output", &output), ("imode", imode), ("border_mode", border), ("border_value", bv)],
                )
            };
            match result {
                Ok(_) => ok += 1,
                Err(_) => err += 1,
            }
        }
        assert!(ok > 30 && err > 100, "ok {ok}, err {err}");
    }
}
