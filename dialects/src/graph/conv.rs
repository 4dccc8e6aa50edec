//! `graph.conv2d`, `graph.conv_bias` and `graph.conv_transpose2d`: 2-d
//! convolutions over NCHW activations (reference: `docs/graph-dialect.md`).
//!
//! - `conv2d(x [N, C, H, W], w [OC, C/G, FH, FW])` gives `[N, OC, OH, OW]` with
//!   `OH = (H + 2·ph - dh·(FH-1) - 1)/sh + 1` (likewise `OW`). Padding is
//!   symmetric (`pad = [ph, pw]`), reads outside the input are zero, and output
//!   channel `oc` of group `g = oc / (OC/G)` reads input channels
//!   `g·C/G .. (g+1)·C/G`. Depthwise convolution is `group == C`.
//! - `conv_bias(x, w, b [1, OC, 1, 1], z?)` is `nl(conv2d(x, w) + b + z)` with
//!   `nl` one of `identity relu sigmoid h_swish`, computed on reals and rounded
//!   once to the result type.
//! - `conv_transpose2d(x [N, C, H, W], w [C, OC/G, FH, FW])` (PyTorch's weight
//!   layout) is the adjoint of `conv2d` with the same weights: each input pixel
//!   scatters `x·w` to output `ih·sh - ph + kh·dh`, giving
//!   `OH = (H-1)·sh - 2·ph + dh·(FH-1) + 1`.
//!
//! Attributes `stride`, `pad`, `dilation` (two integers each, `[height, width]`)
//! and `group` are required. The batch dim `N` may be symbolic; every other dim
//! is needed as a number and must be fixed.
//!
//! Element types: `f32`, `f16`, `bf16` (operands of one type; `out_dtype` may
//! name another float type). `conv2d` and `conv_bias` also take `qs8` inputs and
//! weights: the result is `out_dtype`, by default `qs32<sx·sw>`; a `qs8` (or
//! another `qs32`) `out_dtype` requantises (round half away from zero,
//! saturate). The bias of a quantised `conv_bias` is `qs32<sx·sw>`, and `z` has
//! the result type. Everything is dequantised and computed in `f64`.
//!
//! Optional `compute_mode` (all three ops): `"default"` or `"float32"`
//! (MegEngine's f16 storage with f32 accumulation, set by `f16-io-f32-comp`;
//! f16/bf16 operands only). The reference computes both in `f64` and rounds
//! once to the result type, which is the `float32` contract; see
//! [`check_compute_mode`] and `docs/f16.md`.

use super::common::{expect_rank, fixed_dim, ints_n, show};
use super::elemwise::Mode;
use strata_ir::tensor::num_elements;
use strata_ir::{
    Dim, ElemType, Layout, OpCx, QScale, Registry, TensorData, TensorType, TypeData, attr_kind, define_op,
};

define_op! {
    /// 2-d convolution: `x [N, C, H, W]` with `w [OC, C/G, FH, FW]` gives
    /// `[N, OC, OH, OW]` (see the module docs).
    pub struct Conv2dOp = "graph.conv2d" {
        summary: "2-d convolution (NCHW, grouped, dilated)",
        operands: [x, w],
        results: [output],
        attrs: { stride: Ints, pad: Ints, dilation: Ints, group: Int },
        optional_attrs: { out_dtype: Type, compute_mode: Str },
        traits: [PURE],
        infer: infer_conv2d,
        eval: eval_conv2d,
    }
}

define_op! {
    /// Convolution, bias, optional residual `z` and a nonlinearity:
    /// `nl(conv2d(x, w) + b + z)` with `b [1, OC, 1, 1]` and `z` of the result's shape.
    pub struct ConvBiasOp = "graph.conv_bias" {
        summary: "2-d convolution + bias (+ z), then a nonlinearity",
        operands: [x, w, b],
        results: [output],
        attrs: { stride: Ints, pad: Ints, dilation: Ints, group: Int, nonlinearity: Str },
        optional_attrs: { out_dtype: Type, compute_mode: Str },
        traits: [PURE],
        variadic: z,
        infer: infer_conv_bias,
        eval: eval_conv_bias,
    }
}

define_op! {
    /// Transposed 2-d convolution (the adjoint of `graph.conv2d`): `x [N, C, H, W]`
    /// with `w [C, OC/G, FH, FW]` gives `[N, OC, OH, OW]`.
    pub struct ConvTranspose2dOp = "graph.conv_transpose2d" {
        summary: "transposed 2-d convolution (the adjoint of conv2d)",
        operands: [x, w],
        results: [output],
        attrs: { stride: Ints, pad: Ints, dilation: Ints, group: Int },
        optional_attrs: { compute_mode: Str },
        traits: [PURE],
        infer: infer_conv_transpose2d,
        eval: eval_conv_transpose2d,
    }
}

pub(crate) fn register(r: &mut Registry) {
    for def in [Conv2dOp::DEF, ConvBiasOp::DEF, ConvTranspose2dOp::DEF] {
        r.register(def).expect("invariant: graph ops register once");
    }
}

/// The nonlinearity of `graph.conv_bias`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nonlinearity {
    /// `x`.
    Identity,
    /// `max(x, 0)`.
    Relu,
    /// `1 / (1 + exp(-x))`.
    Sigmoid,
    /// `x · clamp(x + 3, 0, 6) / 6`.
    HSwish,
}

const NONLINEARITIES: &[(&str, Nonlinearity)] = &[
    ("identity", Nonlinearity::Identity),
    ("relu", Nonlinearity::Relu),
    ("sigmoid", Nonlinearity::Sigmoid),
    ("h_swish", Nonlinearity::HSwish),
];

impl Nonlinearity {
    /// The nonlinearity named `name`, or an error listing every one.
    pub fn parse(name: &str) -> Result<Nonlinearity, String> {
        NONLINEARITIES.iter().find(|(n, _)| *n == name).map(|&(_, m)| m).ok_or_else(|| {
            let all: Vec<_> = NONLINEARITIES.iter().map(|(n, _)| *n).collect();
            format!("unknown nonlinearity `{name}` (expected one of {})", all.join(", "))
        })
    }

    /// The name in IR.
    pub fn name(self) -> &'static str {
        NONLINEARITIES.iter().find(|&&(_, m)| m == self).map(|&(n, _)| n).expect("invariant: every one is listed")
    }

    /// The real-valued function (the same as the `graph.elemwise` mode).
    pub fn apply(self, v: f64) -> f64 {
        match self {
            Nonlinearity::Identity => v,
            Nonlinearity::Relu => Mode::Relu.apply(&[v]),
            Nonlinearity::Sigmoid => Mode::Sigmoid.apply(&[v]),
            Nonlinearity::HSwish => Mode::HSwish.apply(&[v]),
        }
    }
}

/// The validated `stride`, `pad`, `dilation` and `group` attributes of a convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvParams {
    /// `[sh, sw]`, each at least 1.
    pub stride: [u64; 2],
    /// `[ph, pw]`, symmetric zero padding.
    pub pad: [u64; 2],
    /// `[dh, dw]`, each at least 1.
    pub dilation: [u64; 2],
    /// Number of groups, at least 1.
    pub group: u64,
}

impl ConvParams {
    /// Reads and validates the attributes of a convolution op.
    pub fn read(cx: &OpCx<'_>) -> Result<ConvParams, String> {
        let pair = |v: Vec<u64>| [v[0], v[1]];
        let stride = pair(ints_n(cx, "stride", 2, 1)?);
        let pad = pair(ints_n(cx, "pad", 2, 0)?);
        let dilation = pair(ints_n(cx, "dilation", 2, 1)?);
        let group = cx.attrs.int("group")?;
        if group < 1 {
            return Err(format!("attribute `group` must be at least 1, is {group}"));
        }
        Ok(ConvParams { stride, pad, dilation, group: group as u64 })
    }
}

/// The checked geometry of one convolution: input `[n, c, h, w]`, filter
/// `fh x fw`, output `[n, oc, oh, ow]`.
#[derive(Clone, Copy, Debug)]
struct Conv {
    p: ConvParams,
    n: Dim,
    c: u64,
    h: u64,
    w: u64,
    oc: u64,
    fh: u64,
    fw: u64,
    oh: u64,
    ow: u64,
}

const AXES: [&str; 2] = ["height", "width"];

fn overflow(what: &str) -> String {
    format!("the {what} overflows with these attribute values")
}

impl Conv {
    fn out_shape(&self) -> Vec<Dim> {
        vec![self.n, Dim::Fixed(self.oc), Dim::Fixed(self.oh), Dim::Fixed(self.ow)]
    }

    /// Checks `conv2d`'s (and `conv_bias`'s) `x` and `w` against the attributes.
    fn forward(cx: &OpCx<'_>, x: &TensorType, w: &TensorType) -> Result<Conv, String> {
        expect_rank(cx, x, 4, "operand `x` ([N, C, H, W])")?;
        expect_rank(cx, w, 4, "operand `w` ([OC, C/group, FH, FW])")?;
        let p = ConvParams::read(cx)?;
        let [c, h, wd] = input_dims(x)?;
        let oc = fixed_dim(w.shape[0], "the output channels (dim 0) of operand `w`")?;
        let cg = fixed_dim(w.shape[1], "dim 1 of operand `w`")?;
        let [fh, fw] = filter_dims(w)?;
        if c % p.group != 0 {
            return Err(format!("the {c} channels of operand `x` are not divisible by `group` = {}", p.group));
        }
        if cg != c / p.group {
            return Err(format!(
                "operand `w` has shape {}: dim 1 must be C/group = {c}/{} = {}",
                show(cx, &w.shape),
                p.group,
                c / p.group
            ));
        }
        if oc % p.group != 0 {
            return Err(format!("the {oc} output channels of operand `w` are not divisible by `group` = {}", p.group));
        }
        let mut out = [0u64; 2];
        for (i, (size, k)) in [(h, fh), (wd, fw)].into_iter().enumerate() {
            let padded =
                p.pad[i].checked_mul(2).and_then(|p2| size.checked_add(p2)).ok_or_else(|| overflow("padded input"))?;
            let extent = (k - 1)
                .checked_mul(p.dilation[i])
                .and_then(|e| e.checked_add(1))
                .ok_or_else(|| overflow("dilated filter"))?;
            if padded < extent {
                return Err(format!(
                    "along the {}, the dilated filter spans {extent} but the padded input of operand `x` only {padded}",
                    AXES[i]
                ));
            }
            out[i] = (padded - extent) / p.stride[i] + 1;
        }
        Ok(Conv { p, n: x.shape[0], c, h, w: wd, oc, fh, fw, oh: out[0], ow: out[1] })
    }

    /// Checks `conv_transpose2d`'s `x` and `w` against the attributes.
    fn transposed(cx: &OpCx<'_>, x: &TensorType, w: &TensorType) -> Result<Conv, String> {
        expect_rank(cx, x, 4, "operand `x` ([N, C, H, W])")?;
        expect_rank(cx, w, 4, "operand `w` ([C, OC/group, FH, FW])")?;
        let p = ConvParams::read(cx)?;
        let [c, h, wd] = input_dims(x)?;
        let wc = fixed_dim(w.shape[0], "the input channels (dim 0) of operand `w`")?;
        let ocg = fixed_dim(w.shape[1], "dim 1 (OC/group) of operand `w`")?;
        let [fh, fw] = filter_dims(w)?;
        if wc != c {
            return Err(format!(
                "operand `w` has shape {}: dim 0 must be the {c} channels of operand `x`",
                show(cx, &w.shape)
            ));
        }
        if c % p.group != 0 {
            return Err(format!("the {c} channels of operand `x` are not divisible by `group` = {}", p.group));
        }
        let oc = ocg.checked_mul(p.group).ok_or_else(|| overflow("number of output channels"))?;
        let mut out = [0u64; 2];
        for (i, (size, k)) in [(h, fh), (wd, fw)].into_iter().enumerate() {
            if size == 0 {
                return Err(format!("operand `x` must have a positive {}, has shape {}", AXES[i], show(cx, &x.shape)));
            }
            let full = (size - 1)
                .checked_mul(p.stride[i])
                .and_then(|a| (k - 1).checked_mul(p.dilation[i]).and_then(|b| a.checked_add(b)))
                .and_then(|a| a.checked_add(1))
                .ok_or_else(|| overflow("output size"))?;
            let pad2 = p.pad[i].checked_mul(2).ok_or_else(|| overflow("padding"))?;
            if full <= pad2 {
                return Err(format!(
                    "along the {}, the output size (H-1)·s + d·(F-1) + 1 = {full} minus the padding 2·{} is not positive",
                    AXES[i], p.pad[i]
                ));
            }
            out[i] = full - pad2;
        }
        Ok(Conv { p, n: x.shape[0], c, h, w: wd, oc, fh, fw, oh: out[0], ow: out[1] })
    }

    /// The concrete geometry for a batch of `n`, or an error if a size does not fit.
    fn concrete(&self, n: usize) -> Result<Geom, String> {
        let u = |v: u64| usize::try_from(v).map_err(|_| format!("size {v} does not fit in memory"));
        let g = Geom {
            n,
            c: u(self.c)?,
            h: u(self.h)?,
            w: u(self.w)?,
            oc: u(self.oc)?,
            fh: u(self.fh)?,
            fw: u(self.fw)?,
            oh: u(self.oh)?,
            ow: u(self.ow)?,
            stride: [u(self.p.stride[0])?, u(self.p.stride[1])?],
            pad: [u(self.p.pad[0])?, u(self.p.pad[1])?],
            dilation: [u(self.p.dilation[0])?, u(self.p.dilation[1])?],
            group: u(self.p.group)?,
        };
        num_elements(&g.out_shape()).ok_or_else(|| format!("result shape {:?} is too large", g.out_shape()))?;
        Ok(g)
    }
}

/// `[C, H, W]` of a rank-4 `x`, all fixed.
fn input_dims(x: &TensorType) -> Result<[u64; 3], String> {
    Ok([
        fixed_dim(x.shape[1], "the channels (dim 1) of operand `x`")?,
        fixed_dim(x.shape[2], "the height (dim 2) of operand `x`")?,
        fixed_dim(x.shape[3], "the width (dim 3) of operand `x`")?,
    ])
}

/// `[FH, FW]` of a rank-4 `w`, fixed and positive.
fn filter_dims(w: &TensorType) -> Result<[u64; 2], String> {
    let fh = fixed_dim(w.shape[2], "the filter height (dim 2) of operand `w`")?;
    let fw = fixed_dim(w.shape[3], "the filter width (dim 3) of operand `w`")?;
    if fh == 0 || fw == 0 {
        return Err(format!("operand `w` has an empty {fh}x{fw} filter"));
    }
    Ok([fh, fw])
}

/// Concrete sizes of a convolution, for the reference kernels.
#[derive(Clone, Copy, Debug)]
struct Geom {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    oc: usize,
    fh: usize,
    fw: usize,
    oh: usize,
    ow: usize,
    stride: [usize; 2],
    pad: [usize; 2],
    dilation: [usize; 2],
    group: usize,
}

impl Geom {
    fn out_shape(&self) -> Vec<usize> {
        vec![self.n, self.oc, self.oh, self.ow]
    }
}

/// The position `o·s + k·d - p` that output (or, transposed, input) index `o`
/// meets through filter tap `k`, if it lies in `[0, size)`.
fn tap(o: usize, k: usize, s: usize, d: usize, p: usize, size: usize) -> Option<usize> {
    let pos = (o as u128) * (s as u128) + (k as u128) * (d as u128);
    let i = pos.checked_sub(p as u128)?;
    (i < size as u128).then_some(i as usize)
}

/// The reference convolution on reals: `x [n, c, h, w]`, `w [oc, c/group, fh, fw]`,
/// result `[n, oc, oh, ow]` in row-major order.
fn conv2d_reals(g: &Geom, x: &[f64], w: &[f64]) -> Vec<f64> {
    let (cg, ocg) = (g.c / g.group, g.oc / g.group);
    let mut out = Vec::with_capacity(g.n * g.oc * g.oh * g.ow);
    for n in 0..g.n {
        for oc in 0..g.oc {
            let first_c = oc / ocg * cg;
            for oh in 0..g.oh {
                for ow in 0..g.ow {
                    let mut acc = 0.0;
                    for ic in 0..cg {
                        for kh in 0..g.fh {
                            let Some(ih) = tap(oh, kh, g.stride[0], g.dilation[0], g.pad[0], g.h) else { continue };
                            for kw in 0..g.fw {
                                let Some(iw) = tap(ow, kw, g.stride[1], g.dilation[1], g.pad[1], g.w) else {
                                    continue;
                                };
                                let xv = x[((n * g.c + first_c + ic) * g.h + ih) * g.w + iw];
                                let wv = w[((oc * cg + ic) * g.fh + kh) * g.fw + kw];
                                acc += xv * wv;
                            }
                        }
                    }
                    out.push(acc);
                }
            }
        }
    }
    out
}

/// The reference transposed convolution on reals: `x [n, c, h, w]`,
/// `w [c, oc/group, fh, fw]`; every input pixel scatters into the result
/// `[n, oc, oh, ow]`.
fn conv_transpose2d_reals(g: &Geom, x: &[f64], w: &[f64]) -> Vec<f64> {
    let (cg, ocg) = (g.c / g.group, g.oc / g.group);
    let mut out = vec![0.0; g.n * g.oc * g.oh * g.ow];
    for n in 0..g.n {
        for c in 0..g.c {
            let first_oc = c / cg * ocg;
            for ih in 0..g.h {
                for iw in 0..g.w {
                    let xv = x[((n * g.c + c) * g.h + ih) * g.w + iw];
                    for j in 0..ocg {
                        for kh in 0..g.fh {
                            let Some(oh) = tap(ih, kh, g.stride[0], g.dilation[0], g.pad[0], g.oh) else { continue };
                            for kw in 0..g.fw {
                                let Some(ow) = tap(iw, kw, g.stride[1], g.dilation[1], g.pad[1], g.ow) else {
                                    continue;
                                };
                                let wv = w[((c * ocg + j) * g.fh + kh) * g.fw + kw];
                                out[((n * g.oc + first_oc + j) * g.oh + oh) * g.ow + ow] += xv * wv;
                            }
                        }
                    }
                }
            }
        }
    }
    out
}

/// The (empty) result when `g` has no output elements: the kernels' loops
/// could otherwise spin over a huge batch of empty images.
fn empty_result(g: &Geom, elem: ElemType) -> Result<Option<TensorData>, String> {
    if g.out_shape().contains(&0) {
        return TensorData::zeros(elem, g.out_shape()).map(Some).map_err(|e| e.to_string());
    }
    Ok(None)
}

/// The tensor type of concrete data (for re-checking in eval).
fn type_of(t: &TensorData) -> TensorType {
    TensorType::fixed(&t.shape().iter().map(|&d| d as u64).collect::<Vec<_>>(), t.elem())
}

fn out_dtype(cx: &OpCx<'_>) -> Result<Option<ElemType>, String> {
    match cx.attrs.opt::<attr_kind::Type>("out_dtype")? {
        None => Ok(None),
        Some(t) => match cx.ctx.ty(t) {
            TypeData::Scalar(e) => Ok(Some(*e)),
            _ => Err(format!(
                "attribute `out_dtype` must be an element type such as `qs8<0.1>`, is {}",
                strata_ir::type_to_string(cx.ctx, t)
            )),
        },
    }
}

/// `sx · sw`, the scale of a quantised convolution's accumulator.
fn acc_scale(sx: QScale, sw: QScale) -> QScale {
    QScale::new(sx.get() * sw.get())
}

/// Whether two scales agree up to float rounding of their product.
fn same_scale(a: QScale, b: QScale) -> bool {
    let (a, b) = (a.get() as f64, b.get() as f64);
    (a - b).abs() <= 1e-5 * a.abs().max(b.abs())
}

/// Checks the optional `compute_mode` attribute of an accumulating op
/// (convolutions, matmuls, `reduce`) whose input has element type `elem`:
/// `"default"` (accumulate in the operand type) or `"float32"` (MegEngine's
/// `ComputeMode::FLOAT32`: f16/bf16 storage with f32 accumulation, so only
/// for f16 and bf16 inputs). The reference evaluator computes both in `f64`
/// and rounds once to the result type: `float32` is exactly what it already
/// does, and `default` on f16 is modelled by that same per-op rounding.
pub fn check_compute_mode(cx: &OpCx<'_>, elem: ElemType) -> Result<(), String> {
    match cx.attrs.opt::<attr_kind::Str>("compute_mode")? {
        None | Some("default") => Ok(()),
        Some("float32") if matches!(elem, ElemType::F16 | ElemType::BF16) => Ok(()),
        Some("float32") => {
            Err(format!("attribute `compute_mode = \"float32\"` needs f16 or bf16 operands, `{}` has {elem}", cx.name))
        }
        Some(other) => Err(format!("unknown compute_mode `{other}` (expected one of default, float32)")),
    }
}

/// The result element type of `conv2d`/`conv_bias` from `x`, `w` and `out_dtype`.
fn forward_elem(cx: &OpCx<'_>, x: &TensorType, w: &TensorType) -> Result<ElemType, String> {
    check_compute_mode(cx, x.elem)?;
    let out = out_dtype(cx)?;
    match (x.elem, w.elem) {
        (ElemType::QS8(sx), ElemType::QS8(sw)) => match out {
            None => Ok(ElemType::QS32(acc_scale(sx, sw))),
            Some(e @ (ElemType::QS8(_) | ElemType::QS32(_))) => Ok(e),
            Some(e) => Err(format!("attribute `out_dtype` must be qs8 or qs32 for qs8 operands, is {e}")),
        },
        (ElemType::QS8(_), e) => Err(format!("operand `w` must be qs8 like operand `x`, is {e}")),
        (e, _) if !e.is_float() => {
            Err(format!("operand `x` has element type {e}, which `{}` does not support (f32, f16, bf16, qs8)", cx.name))
        }
        (a, b) if a != b => Err(format!("operand `w` must have the element type of operand `x` ({a}), has {b}")),
        (a, _) => match out {
            None => Ok(a),
            Some(e) if e.is_float() => Ok(e),
            Some(e) => Err(format!("attribute `out_dtype` must be a float type for {a} operands, is {e}")),
        },
    }
}

/// The result element type recorded for `cx`'s result, checked against `inferred`.
fn declared_elem(cx: &OpCx<'_>, inferred: ElemType) -> Result<ElemType, String> {
    match cx.result_tensor(0) {
        Ok(t) if t.elem != inferred => {
            Err(format!("the declared result element type {} differs from the inferred {inferred}", t.elem))
        }
        _ => Ok(inferred),
    }
}

fn infer_conv2d(cx: &OpCx<'_>) -> Result<Vec<TypeData>, String> {
    let (x, w) = (cx.tensor(0)?, cx.tensor(1)?);
    let elem = forward_elem(cx, x, w)?;
    let conv = Conv::forward(cx, x, w)?;
    Ok(vec![super::common::tensor(elem, conv.out_shape())])
}

fn eval_conv2d(cx: &OpCx<'_>, inputs: &[TensorData]) -> Result<Vec<TensorData>, String> {
    let [x, w] = inputs else {
        return Err(format!("expects 2 inputs (x, w), got {}", inputs.len()));
    };
    let (xt, wt) = (type_of(x), type_of(w));
    let elem = declared_elem(cx, forward_elem(cx, &xt, &wt)?)?;
    let g = Conv::forward(cx, &xt, &wt)?.concrete(x.shape()[0])?;
    if let Some(empty) = empty_result(&g, elem)? {
        return Ok(vec![empty]);
    }
    let out = conv2d_reals(&g, &x.to_reals(), &w.to_reals());
    Ok(vec![TensorData::from_reals(elem, g.out_shape(), &out).map_err(|e| e.to_string())?])
}

/// Checks `conv_bias`: the convolution, the bias, `z` and the nonlinearity.
fn check_conv_bias(cx: &OpCx<'_>, types: &[TensorType]) -> Result<(Conv, ElemType, Nonlinearity), String> {
    let [x, w, b, z @ ..] = types else {
        return Err(format!("expects operands x, w, b and an optional z, got {}", types.len()));
    };
    if z.len() > 1 {
        return Err(format!("expects operands x, w, b and an optional z, got {} operands", types.len()));
    }
    let elem = forward_elem(cx, x, w)?;
    let conv = Conv::forward(cx, x, w)?;
    let nl = Nonlinearity::parse(cx.attrs.str("nonlinearity")?)?;
    expect_rank(cx, b, 4, "operand `b` ([1, OC, 1, 1])")?;
    let want = [Dim::Fixed(1), Dim::Fixed(conv.oc), Dim::Fixed(1), Dim::Fixed(1)];
    if b.shape != want {
        return Err(format!("operand `b` must have shape {}, has {}", show(cx, &want), show(cx, &b.shape)));
    }
    match (x.elem, w.elem) {
        (ElemType::QS8(sx), ElemType::QS8(sw)) => {
            let scale = acc_scale(sx, sw);
            if !matches!(b.elem, ElemType::QS32(s) if same_scale(s, scale)) {
                return Err(format!(
                    "operand `b` of qs8 operands must be {} (scale of x times scale of w), is {}",
                    ElemType::QS32(scale),
                    b.elem
                ));
            }
        }
        (e, _) if b.elem != e => {
            return Err(format!("operand `b` must have the element type of operand `x` ({e}), has {}", b.elem));
        }
        _ => {}
    }
    if let [z] = z {
        let shape = conv.out_shape();
        if z.layout != Layout::Nchw {
            return Err(format!("operand `z` must have the plain layout, has #{}", z.layout));
        }
        if z.shape != shape {
            return Err(format!(
                "operand `z` must have the result's shape {}, has {}",
                show(cx, &shape),
                show(cx, &z.shape)
            ));
        }
        if z.elem != elem {
            return Err(format!("operand `z` must have the result's element type {elem}, has {}", z.elem));
        }
    }
    Ok((conv, elem, nl))
}

fn infer_conv_bias(cx: &OpCx<'_>) -> Result<Vec<TypeData>, String> {
    let types = (0..cx.operand_types.len()).map(|i| cx.tensor(i).cloned()).collect::<Result<Vec<_>, _>>()?;
    let (conv, elem, _) = check_conv_bias(cx, &types)?;
    Ok(vec![super::common::tensor(elem, conv.out_shape())])
}

fn eval_conv_bias(cx: &OpCx<'_>, inputs: &[TensorData]) -> Result<Vec<TensorData>, String> {
    let types: Vec<TensorType> = inputs.iter().map(type_of).collect();
    let (conv, elem, nl) = check_conv_bias(cx, &types)?;
    let elem = declared_elem(cx, elem)?;
    let [x, w, b, z @ ..] = inputs else {
        return Err(format!("expects operands x, w, b and an optional z, got {}", inputs.len()));
    };
    let g = conv.concrete(x.shape()[0])?;
    if let Some(empty) = empty_result(&g, elem)? {
        return Ok(vec![empty]);
    }
    let mut out = conv2d_reals(&g, &x.to_reals(), &w.to_reals());
    let per_channel = g.oh * g.ow;
    for (i, v) in out.iter_mut().enumerate() {
        let oc = (i / per_channel) % g.oc;
        let zv = z.first().map_or(0.0, |z| z.get_real(i));
        *v = nl.apply(*v + b.get_real(oc) + zv);
    }
    Ok(vec![TensorData::from_reals(elem, g.out_shape(), &out).map_err(|e| e.to_string())?])
}

/// Element types of `conv_transpose2d`: floats, `x` and `w` alike.
fn transpose_elem(cx: &OpCx<'_>, x: &TensorType, w: &TensorType) -> Result<ElemType, String> {
    check_compute_mode(cx, x.elem)?;
    if !x.elem.is_float() {
        return Err(format!(
            "operand `x` has element type {}, which `{}` does not support (f32, f16, bf16)",
            x.elem, cx.name
        ));
    }
    if w.elem != x.elem {
        return Err(format!("operand `w` must have the element type of operand `x` ({}), has {}", x.elem, w.elem));
    }
    Ok(x.elem)
}

fn infer_conv_transpose2d(cx: &OpCx<'_>) -> Result<Vec<TypeData>, String> {
    let (x, w) = (cx.tensor(0)?, cx.tensor(1)?);
    let elem = transpose_elem(cx, x, w)?;
    let conv = Conv::transposed(cx, x, w)?;
    Ok(vec![super::common::tensor(elem, conv.out_shape())])
}

fn eval_conv_transpose2d(cx: &OpCx<'_>, inputs: &[TensorData]) -> Result<Vec<TensorData>, String> {
    let [x, w] = inputs else {
        return Err(format!("expects 2 inputs (x, w), got {}", inputs.len()));
    };
    let (xt, wt) = (type_of(x), type_of(w));
    let elem = declared_elem(cx, transpose_elem(cx, &xt, &wt)?)?;
    let g = Conv::transposed(cx, &xt, &wt)?.concrete(x.shape()[0])?;
    if x.is_empty() || w.is_empty() {
        let zeros = TensorData::zeros(elem, g.out_shape()).map_err(|e| e.to_string())?;
        return Ok(vec![zeros]);
    }
    let out = conv_transpose2d_reals(&g, &x.to_reals(), &w.to_reals());
    Ok(vec![TensorData::from_reals(elem, g.out_shape(), &out).map_err(|e| e.to_string())?])
}

/// Helpers for the graph ops' unit tests: infer and evaluate one op from type
/// and attribute text, without building a module.
#[cfg(test)]
pub(crate) mod test_support {
    use strata_ir::{Attr, AttrList, Context, ElemType, OpCx, Sym, TensorData, TensorType, Ty, TypeData};

    /// Parses `(key, attribute text)` pairs.
    pub(crate) fn attrs(ctx: &mut Context, items: &[(&str, &str)]) -> Vec<(Sym, Attr)> {
        items
            .iter()
            .map(|&(k, v)| {
                let a = strata_ir::parse_attr_str(ctx, v).unwrap_or_else(|e| panic!("attribute `{k} = {v}`: {e}"));
                (ctx.sym(k), a)
            })
            .collect()
    }

    fn infer_in(ctx: &Context, name: &str, operands: &[Ty], attrs: &[(Sym, Attr)]) -> Result<Vec<TypeData>, String> {
        let def = ctx.registry().get(name).unwrap_or_else(|| panic!("unknown op `{name}`"));
        let errs = strata_ir::verify::check_attrs(ctx, def, attrs);
        if !errs.is_empty() {
            return Err(errs.join("; "));
        }
        if !def.operands.accepts(operands.len()) {
            return Err(format!("expects {} operands, got {}", def.operands.describe(), operands.len()));
        }
        let cx =
            OpCx { ctx, name: def.name, attrs: AttrList::new(ctx, attrs), operand_types: operands, result_types: &[] };
        (def.infer.expect("op has infer"))(&cx)
    }

    /// The result type (as text) of `name` on operands of the given types.
    pub(crate) fn infer(name: &str, types: &[&str], attr_text: &[(&str, &str)]) -> Result<String, String> {
        let mut ctx = crate::context();
        let tys: Vec<Ty> = types
            .iter()
            .map(|t| strata_ir::parse_type_str(&mut ctx, t).unwrap_or_else(|e| panic!("type `{t}`: {e}")))
            .collect();
        let attrs = attrs(&mut ctx, attr_text);
        let out = infer_in(&ctx, name, &tys, &attrs)?;
        Ok(out.iter().map(|t| strata_ir::print::type_data_to_string(&ctx, t)).collect::<Vec<_>>().join(", "))
    }

    /// The tensor type of `t`.
    pub(crate) fn type_of(ctx: &mut Context, t: &TensorData) -> Ty {
        ctx.tensor_type(TensorType::fixed(&t.shape().iter().map(|&d| d as u64).collect::<Vec<_>>(), t.elem()))
    }

    /// Infers and evaluates `name` on `inputs`; the result must match the
    /// inferred type exactly.
    pub(crate) fn eval(name: &str, inputs: &[TensorData], attr_text: &[(&str, &str)]) -> Result<TensorData, String> {
        let mut ctx = crate::context();
        let tys: Vec<Ty> = inputs.iter().map(|t| type_of(&mut ctx, t)).collect();
        let attrs = attrs(&mut ctx, attr_text);
        let types = infer_in(&ctx, name, &tys, &attrs)?;
        let result_types: Vec<Ty> = types.iter().map(|t| ctx.intern_type(t.clone())).collect();
        let def = ctx.registry().get(name).expect("registered");
        let cx = OpCx {
            ctx: &ctx,
            name: def.name,
            attrs: AttrList::new(&ctx, &attrs),
            operand_types: &tys,
            result_types: &result_types,
        };
        let mut out = (def.eval.expect("op has eval"))(&cx, inputs)?;
        assert_eq!(out.len(), 1, "one result");
        let t = out.pop().expect("one result");
        let want = types[0].as_tensor().expect("tensor result");
        assert_eq!(t.elem(), want.elem, "result element type");
        let shape: Vec<u64> = t.shape().iter().map(|&d| d as u64).collect();
        assert_eq!(Some(shape), want.static_shape(), "result shape");
        Ok(t)
    }

    /// Calls `name`'s eval hook directly (no inference first), declaring no result types.
    pub(crate) fn eval_unchecked(
        name: &str,
        inputs: &[TensorData],
        attr_text: &[(&str, &str)],
    ) -> Result<Vec<TensorData>, String> {
        let mut ctx = crate::context();
        let tys: Vec<Ty> = inputs.iter().map(|t| type_of(&mut ctx, t)).collect();
        let attrs = attrs(&mut ctx, attr_text);
        let def = ctx.registry().get(name).expect("registered");
        let cx = OpCx {
            ctx: &ctx,
            name: def.name,
            attrs: AttrList::new(&ctx, &attrs),
            operand_types: &tys,
            result_types: &[],
        };
        (def.eval.expect("op has eval"))(&cx, inputs)
    }

    /// A tensor of `elem` from real values.
    pub(crate) fn reals(elem: ElemType, shape: &[usize], values: &[f64]) -> TensorData {
        TensorData::from_reals(elem, shape.to_vec(), values).expect("values fit the shape")
    }

    /// An `f32` tensor.
    pub(crate) fn f32s(shape: &[usize], values: &[f64]) -> TensorData {
        reals(ElemType::F32, shape, values)
    }

    /// Seeded uniform random data in `[-1, 1)`.
    pub(crate) fn random(elem: ElemType, shape: &[usize], seed: u64) -> TensorData {
        TensorData::random_uniform(elem, shape.to_vec(), -1.0, 1.0, seed).expect("small shape")
    }

    /// Seeded random integer-valued `f32` data in `[-4, 4)` (exact in any sum here).
    pub(crate) fn random_ints(shape: &[usize], seed: u64) -> TensorData {
        let t = TensorData::random_uniform(ElemType::I32, shape.to_vec(), -4.0, 4.0, seed).expect("small shape");
        f32s(shape, &t.to_reals())
    }

    /// Asserts `|a - b| <= atol + rtol·|b|` elementwise.
    pub(crate) fn assert_close(a: &[f64], b: &[f64], rtol: f64, atol: f64) {
        assert_eq!(a.len(), b.len(), "lengths differ");
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= atol + rtol * y.abs(), "element {i}: {x} vs {y}\n{a:?}\n{b:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::{assert_close, eval, eval_unchecked, f32s, infer, random, random_ints, reals};
    use super::*;
    use strata_ir::tensor::SplitMix64;

    fn attrs<'a>(stride: &'a str, pad: &'a str, dilation: &'a str, group: &'a str) -> Vec<(&'a str, &'a str)> {
        vec![("stride", stride), ("pad", pad), ("dilation", dilation), ("group", group)]
    }

    fn plain() -> Vec<(&'static str, &'static str)> {
        attrs("[1, 1]", "[0, 0]", "[1, 1]", "1")
    }

    fn seq(n: usize) -> Vec<f64> {
        (1..=n).map(|v| v as f64).collect()
    }

    #[test]
    fn conv_3x3_by_hand() {
        // x = [[1 2 3] [4 5 6] [7 8 9]], w = [[1 0] [0 1]]: sums of diagonal pairs.
        let x = f32s(&[1, 1, 3, 3], &seq(9));
        let w = f32s(&[1, 1, 2, 2], &[1.0, 0.0, 0.0, 1.0]);
        let y = eval("graph.conv2d", &[x.clone(), w.clone()], &plain()).unwrap();
        assert_eq!(y.shape(), &[1, 1, 2, 2]);
        assert_eq!(y.to_reals(), vec![6.0, 8.0, 12.0, 14.0]);

        // Stride 2, pad 1: the padded input is 5x5, windows at rows/cols 0 and 2.
        // Output (0,0) sees only x[0][0] at tap (1,1); (0,1) sees x[0][1] at (1,0)+x[1][2]... by hand:
        // window rows {-1,0} cols {-1,0}: w11*x00 = 1
        // window rows {-1,0} cols {1,2}: w00*0 + w11*x02 = 3
        // window rows {1,2} cols {-1,0}: w00*0 + w11*x20 = 7
        // window rows {1,2} cols {1,2}: w00*x11 + w11*x22 = 5 + 9
        let y = eval("graph.conv2d", &[x.clone(), w.clone()], &attrs("[2, 2]", "[1, 1]", "[1, 1]", "1")).unwrap();
        assert_eq!(y.shape(), &[1, 1, 2, 2]);
        assert_eq!(y.to_reals(), vec![1.0, 3.0, 7.0, 14.0]);

        // Dilation 2: the 2x2 filter covers the corners of the 3x3 input.
        let w = f32s(&[1, 1, 2, 2], &[1.0, 10.0, 100.0, 1000.0]);
        let y = eval("graph.conv2d", &[x.clone(), w.clone()], &attrs("[1, 1]", "[0, 0]", "[2, 2]", "1")).unwrap();
        assert_eq!(y.to_reals(), vec![1.0 + 30.0 + 700.0 + 9000.0]);

        // Unequal stride and padding per axis: stride [1, 2], pad [0, 1] gives 2x2.
        let y = eval("graph.conv2d", &[x, w], &attrs("[1, 2]", "[0, 1]", "[1, 1]", "1")).unwrap();
        assert_eq!(y.shape(), &[1, 1, 2, 2]);
        // rows {0,1}, cols {-1,0}: 10*1 + 1000*4 ; cols {1,2}: 1*2 + 10*3 + 100*5 + 1000*6
        // rows {1,2}, cols {-1,0}: 10*4 + 1000*7 ; cols {1,2}: 1*5 + 10*6 + 100*8 + 1000*9
        assert_eq!(y.to_reals(), vec![4010.0, 6532.0, 7040.0, 9865.0]);
    }

    #[test]
    fn depthwise_and_multichannel_by_hand() {
        // Two channels, depthwise (group = C = 2) 1x1 filters scaling each channel.
        let x = f32s(&[1, 2, 1, 2], &[1.0, 2.0, 3.0, 4.0]);
        let w = f32s(&[2, 1, 1, 1], &[10.0, -1.0]);
        let y = eval("graph.conv2d", &[x.clone(), w], &attrs("[1, 1]", "[0, 0]", "[1, 1]", "2")).unwrap();
        assert_eq!(y.to_reals(), vec![10.0, 20.0, -3.0, -4.0]);
        // group 1 with two output channels: channel sums with weights.
        let w = f32s(&[2, 2, 1, 1], &[1.0, 1.0, 1.0, -1.0]);
        let y = eval("graph.conv2d", &[x, w], &plain()).unwrap();
        assert_eq!(y.to_reals(), vec![4.0, 6.0, -2.0, -2.0]);
    }

    #[test]
    fn conv_transpose_by_hand() {
        let x = f32s(&[1, 1, 2, 2], &[1.0, 2.0, 3.0, 4.0]);
        let w = f32s(&[1, 1, 2, 2], &[1.0, 1.0, 1.0, 1.0]);
        let y = eval("graph.conv_transpose2d", &[x.clone(), w.clone()], &plain()).unwrap();
        assert_eq!(y.shape(), &[1, 1, 3, 3]);
        assert_eq!(y.to_reals(), vec![1.0, 3.0, 2.0, 4.0, 10.0, 6.0, 3.0, 7.0, 4.0]);
        // Stride 2: every input pixel paints its own 2x2 block.
        let y =
            eval("graph.conv_transpose2d", &[x.clone(), w.clone()], &attrs("[2, 2]", "[0, 0]", "[1, 1]", "1")).unwrap();
        assert_eq!(y.shape(), &[1, 1, 4, 4]);
        let want = [1., 1., 2., 2., 1., 1., 2., 2., 3., 3., 4., 4., 3., 3., 4., 4.];
        assert_eq!(y.to_reals(), want.to_vec());
        // Pad 1 crops one pixel from each border of the stride-1 result.
        let y = eval("graph.conv_transpose2d", &[x, w], &attrs("[1, 1]", "[1, 1]", "[1, 1]", "1")).unwrap();
        assert_eq!(y.to_reals(), vec![10.0]);
    }

    #[test]
    fn shapes_with_symbolic_batch() {
        let a = attrs("[2, 2]", "[1, 1]", "[1, 1]", "1");
        assert_eq!(
            infer("graph.conv2d", &["tensor<?Nx3x224x224xf32>", "tensor<64x3x7x7xf32>"], &a).unwrap(),
            "tensor<?Nx64x110x110xf32>"
        );
        let a = attrs("[2, 2]", "[3, 3]", "[1, 1]", "1");
        assert_eq!(
            infer("graph.conv2d", &["tensor<?Nx3x224x224xf32>", "tensor<64x3x7x7xf32>"], &a).unwrap(),
            "tensor<?Nx64x112x112xf32>"
        );
        let a = attrs("[2, 2]", "[1, 1]", "[1, 1]", "2");
        assert_eq!(
            infer("graph.conv_transpose2d", &["tensor<?Bx4x8x8xf16>", "tensor<4x3x4x4xf16>"], &a).unwrap(),
            "tensor<?Bx6x16x16xf16>"
        );
        let mut a = attrs("[1, 1]", "[1, 1]", "[1, 1]", "1");
        a.push(("nonlinearity", "\"relu\""));
        assert_eq!(
            infer(
                "graph.conv_bias",
                &["tensor<?Nx2x4x4xbf16>", "tensor<8x2x3x3xbf16>", "tensor<1x8x1x1xbf16>", "tensor<?Nx8x4x4xbf16>"],
                &a
            )
            .unwrap(),
            "tensor<?Nx8x4x4xbf16>"
        );
        let err = infer("graph.conv2d", &["tensor<1x3x?Hx8xf32>", "tensor<4x3x3x3xf32>"], &plain()).unwrap_err();
        assert!(err.contains("height") && err.contains("symbolic"), "{err}");
        let err = infer("graph.conv2d", &["tensor<1x?Cx8x8xf32>", "tensor<4x3x3x3xf32>"], &plain()).unwrap_err();
        assert!(err.contains("channels") && err.contains("symbolic"), "{err}");
        let err = infer("graph.conv2d", &["tensor<1x3x8x8xf32>", "tensor<?Ox3x3x3xf32>"], &plain()).unwrap_err();
        assert!(err.contains("operand `w`") && err.contains("symbolic"), "{err}");
    }

    #[test]
    fn quantised_conv() {
        let (sx, sw) = (ElemType::QS8(QScale::new(0.5)), ElemType::QS8(QScale::new(0.25)));
        let x = reals(sx, &[1, 1, 3, 3], &[0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5]); // q = 1..9
        let w = reals(sw, &[1, 1, 2, 2], &[0.25, 0.0, 0.0, 0.5]); // q = [1 0 0 2]
        let y = eval("graph.conv2d", &[x.clone(), w.clone()], &plain()).unwrap();
        assert_eq!(y.elem(), ElemType::QS32(QScale::new(0.125)));
        assert_eq!(y.to_f64_vec(), vec![11.0, 14.0, 20.0, 23.0]); // q1 + 2·q5, ...
        // Requantised to qs8<1>: reals 1.375, 1.75, 2.5, 2.875 round half away from zero.
        let mut a = plain();
        a.push(("out_dtype", "qs8<1.0>"));
        let y = eval("graph.conv2d", &[x.clone(), w.clone()], &a).unwrap();
        assert_eq!(y.to_f64_vec(), vec![1.0, 2.0, 3.0, 3.0]);
        // Saturation at qs8's range.
        a[4] = ("out_dtype", "qs8<0.01>");
        let y = eval("graph.conv2d", &[x.clone(), w.clone()], &a).unwrap();
        assert_eq!(y.to_f64_vec(), vec![127.0; 4]);
        // conv_bias: bias in qs32<sx·sw>, relu on reals, then requantised.
        let b = reals(ElemType::QS32(QScale::new(0.125)), &[1, 1, 1, 1], &[-2.5]);
        let mut a = plain();
        a.push(("nonlinearity", "\"relu\""));
        let y = eval("graph.conv_bias", &[x.clone(), w.clone(), b.clone()], &a).unwrap();
        assert_eq!(y.to_f64_vec(), vec![0.0, 0.0, 0.0, 3.0]); // 1.375-2.5 < 0 ... 2.875-2.5 = 0.375 = 3/8
        a.push(("out_dtype", "qs8<0.25>"));
        let y = eval("graph.conv_bias", &[x.clone(), w.clone(), b], &a).unwrap();
        assert_eq!(y.to_f64_vec(), vec![0.0, 0.0, 0.0, 2.0]); // 0.375 / 0.25 = 1.5 -> 2
        // A bias of the wrong scale, mixed operands and float out_dtype are rejected.
        let bad = reals(ElemType::QS32(QScale::new(0.5)), &[1, 1, 1, 1], &[0.0]);
        let err = eval("graph.conv_bias", &[x.clone(), w.clone(), bad], &a).unwrap_err();
        assert!(err.contains("operand `b`") && err.contains("qs32<0.125>"), "{err}");
        let err = eval("graph.conv2d", &[x.clone(), f32s(&[1, 1, 2, 2], &[0.0; 4])], &plain()).unwrap_err();
        assert!(err.contains("operand `w`") && err.contains("qs8"), "{err}");
        let mut a = plain();
        a.push(("out_dtype", "f32"));
        let err = eval("graph.conv2d", &[x, w], &a).unwrap_err();
        assert!(err.contains("out_dtype") && err.contains("f32"), "{err}");
    }

    #[test]
    fn half_types_round_once() {
        for elem in [ElemType::F16, ElemType::BF16] {
            let x = random(elem, &[2, 3, 5, 5], 1);
            let w = random(elem, &[4, 3, 3, 3], 2);
            let a = attrs("[2, 1]", "[1, 0]", "[1, 2]", "1");
            let y = eval("graph.conv2d", &[x.clone(), w.clone()], &a).unwrap();
            assert_eq!(y.elem(), elem);
            let g = geom(&[2, 3, 5, 5], &[4, 3, 3, 3], [2, 1], [1, 0], [1, 2], 1);
            let want =
                TensorData::from_reals(elem, y.shape().to_vec(), &conv2d_reals(&g, &x.to_reals(), &w.to_reals()))
                    .unwrap();
            assert_eq!(y, want);
            let y = eval("graph.conv_transpose2d", &[x.clone(), random(elem, &[3, 2, 2, 2], 3)], &a).unwrap();
            assert_eq!(y.elem(), elem);
        }
        let mut a = plain();
        a.push(("out_dtype", "f32"));
        let y = eval(
            "graph.conv2d",
            &[random(ElemType::F16, &[1, 1, 2, 2], 1), random(ElemType::F16, &[1, 1, 1, 1], 2)],
            &a,
        )
        .unwrap();
        assert_eq!(y.elem(), ElemType::F32);
    }

    /// A `Geom` built directly, for kernel-level tests.
    fn geom(x: &[usize], w: &[usize], stride: [usize; 2], pad: [usize; 2], dilation: [usize; 2], group: usize) -> Geom {
        let out = |i: usize| (x[2 + i] + 2 * pad[i] - dilation[i] * (w[2 + i] - 1) - 1) / stride[i] + 1;
        Geom {
            n: x[0],
            c: x[1],
            h: x[2],
            w: x[3],
            oc: w[0],
            fh: w[2],
            fw: w[3],
            oh: out(0),
            ow: out(1),
            stride,
            pad,
            dilation,
            group,
        }
    }

    /// Random small convolution configurations: (x shape, w shape, stride, pad, dilation, group).
    #[allow(clippy::type_complexity)]
    fn random_config(rng: &mut SplitMix64) -> ([usize; 4], [usize; 4], [usize; 2], [usize; 2], [usize; 2], usize) {
        let mut pick = |lo: u64, hi: u64| (lo + rng.next_u64() % (hi - lo + 1)) as usize;
        loop {
            let group = pick(1, 3);
            let (cg, ocg) = (pick(1, 3), pick(1, 3));
            let (fh, fw) = (pick(1, 3), pick(1, 3));
            let stride = [pick(1, 3), pick(1, 3)];
            let dilation = [pick(1, 2), pick(1, 2)];
            let pad = [pick(0, 2), pick(0, 2)];
            let (h, w) = (pick(1, 7), pick(1, 7));
            let ext = |i: usize, f: usize| dilation[i] * (f - 1) + 1;
            if h + 2 * pad[0] >= ext(0, fh) && w + 2 * pad[1] >= ext(1, fw) {
                let n = pick(1, 2);
                return ([n, group * cg, h, w], [group * ocg, cg, fh, fw], stride, pad, dilation, group);
            }
        }
    }

    fn list(v: &[usize]) -> String {
        format!("[{}]", v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(", "))
    }

    /// Channels `lo..hi` of a rank-4 tensor along axis `axis` (0 or 1).
    fn slice(t: &TensorData, axis: usize, lo: usize, hi: usize) -> TensorData {
        let s = t.shape();
        let mut shape = s.to_vec();
        shape[axis] = hi - lo;
        super::super::common::from_fn(t.elem(), &shape, |i| {
            let mut j = i.to_vec();
            j[axis] += lo;
            t.get_real(((j[0] * s[1] + j[1]) * s[2] + j[2]) * s[3] + j[3])
        })
        .unwrap()
    }

    #[test]
    fn groups_are_concatenated_per_group_convs() {
        let mut rng = SplitMix64(11);
        for case in 0..40 {
            let (xs, ws, stride, pad, dilation, group) = random_config(&mut rng);
            let x = random(ElemType::F32, &xs, case);
            let w = random(ElemType::F32, &ws, case + 1000);
            let (s, p, d, g) = (list(&stride), list(&pad), list(&dilation), group.to_string());
            let y = eval("graph.conv2d", &[x.clone(), w.clone()], &attrs(&s, &p, &d, &g)).unwrap();
            let (cg, ocg) = (xs[1] / group, ws[0] / group);
            let mut parts = Vec::new();
            for k in 0..group {
                let xk = slice(&x, 1, k * cg, (k + 1) * cg);
                let wk = slice(&w, 0, k * ocg, (k + 1) * ocg);
                parts.push(eval("graph.conv2d", &[xk, wk], &attrs(&s, &p, &d, "1")).unwrap());
            }
            // Concatenate along channels: for each batch, the groups' channel blocks in order.
            let per = ocg * y.shape()[2] * y.shape()[3];
            let mut cat = Vec::new();
            for n in 0..xs[0] {
                for part in &parts {
                    cat.extend_from_slice(&part.to_reals()[n * per..(n + 1) * per]);
                }
            }
            assert_eq!(y.to_reals(), cat, "case {case}: {xs:?} {ws:?} s{s} p{p} d{d} g{g}");
        }
    }

    #[test]
    fn conv_bias_is_conv_plus_bias_then_nonlinearity() {
        let mut rng = SplitMix64(12);
        for case in 0..24 {
            let (xs, ws, stride, pad, dilation, group) = random_config(&mut rng);
            let nl = NONLINEARITIES[case as usize % NONLINEARITIES.len()].0;
            let x = random(ElemType::F32, &xs, case);
            let w = random(ElemType::F32, &ws, case + 100);
            let b = random(ElemType::F32, &[1, ws[0], 1, 1], case + 200);
            let (s, p, d, g) = (list(&stride), list(&pad), list(&dilation), group.to_string());
            let conv = eval("graph.conv2d", &[x.clone(), w.clone()], &attrs(&s, &p, &d, &g)).unwrap();
            let z = random(ElemType::F32, conv.shape(), case + 300);
            let quoted = format!("\"{nl}\"");
            let mut a = attrs(&s, &p, &d, &g);
            a.push(("nonlinearity", &quoted));
            let with_z = (case / 4) % 2 == 0;
            let mut inputs = vec![x, w, b.clone()];
            if with_z {
                inputs.push(z.clone());
            }
            let y = eval("graph.conv_bias", &inputs, &a).unwrap();
            let nl = Nonlinearity::parse(nl).unwrap();
            let per = conv.shape()[2] * conv.shape()[3];
            let want: Vec<f64> = conv
                .to_reals()
                .iter()
                .enumerate()
                .map(|(i, &v)| nl.apply(v + b.get_real((i / per) % ws[0]) + if with_z { z.get_real(i) } else { 0.0 }))
                .collect();
            assert_close(&y.to_reals(), &want, 1e-6, 1e-6);
        }
        // Quantised: with the default qs32 result and identity, exactly the integer sums.
        let (qx, qw) = (ElemType::QS8(QScale::new(0.5)), ElemType::QS8(QScale::new(0.25)));
        let acc = ElemType::QS32(QScale::new(0.125));
        let x = TensorData::random_uniform(qx, vec![1, 4, 5, 5], -128.0, 128.0, 5).unwrap();
        let w = TensorData::random_uniform(qw, vec![6, 2, 3, 3], -128.0, 128.0, 6).unwrap();
        let b = TensorData::random_uniform(acc, vec![1, 6, 1, 1], -1000.0, 1000.0, 7).unwrap();
        let a = attrs("[1, 2]", "[1, 1]", "[1, 1]", "2");
        let conv = eval("graph.conv2d", &[x.clone(), w.clone()], &a).unwrap();
        let mut a = a;
        a.push(("nonlinearity", "\"identity\""));
        let y = eval("graph.conv_bias", &[x, w, b.clone()], &a).unwrap();
        let per = conv.shape()[2] * conv.shape()[3];
        let want: Vec<f64> = conv.to_f64_vec().iter().enumerate().map(|(i, &v)| v + b.get_f64((i / per) % 6)).collect();
        assert_eq!(y.to_f64_vec(), want);
    }

    #[test]
    fn one_by_one_conv_is_matmul() {
        for (seed, c, oc, h, w) in [(1, 3, 4, 2, 5), (2, 1, 1, 1, 1), (3, 8, 5, 3, 3)] {
            let x = random(ElemType::F32, &[1, c, h, w], seed);
            let wt = random(ElemType::F32, &[oc, c, 1, 1], seed + 50);
            let y = eval("graph.conv2d", &[x.clone(), wt.clone()], &plain()).unwrap();
            let a = wt.reshaped(vec![oc, c]).unwrap();
            let b = x.reshaped(vec![c, h * w]).unwrap();
            let m = eval("graph.matmul", &[a, b], &[]).unwrap();
            assert_eq!(y.to_reals(), m.to_reals());
        }
    }

    fn dot(a: &[f64], b: &[f64]) -> f64 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn conv_transpose_is_the_adjoint_of_conv() {
        let mut rng = SplitMix64(13);
        let mut checked = 0;
        while checked < 60 {
            let (xs, ws, stride, pad, dilation, group) = random_config(&mut rng);
            // The transposed output must have the conv's input size exactly.
            let g = geom(&xs, &ws, stride, pad, dilation, group);
            let (full_h, full_w) = (
                (g.oh - 1) * stride[0] + dilation[0] * (ws[2] - 1) + 1,
                (g.ow - 1) * stride[1] + dilation[1] * (ws[3] - 1) + 1,
            );
            if full_h != xs[2] + 2 * pad[0] || full_w != xs[3] + 2 * pad[1] {
                continue;
            }
            checked += 1;
            let seed = checked as u64;
            let x = random(ElemType::F32, &xs, seed).to_reals();
            let w = random(ElemType::F32, &ws, seed + 500).to_reals();
            let y = random(ElemType::F32, &g.out_shape(), seed + 900).to_reals();
            // conv_transpose2d maps the conv's output space (C = OC) back to its input space.
            let gt = Geom { c: g.oc, h: g.oh, w: g.ow, oc: g.c, oh: g.h, ow: g.w, ..g };
            let lhs = dot(&conv2d_reals(&g, &x, &w), &y);
            let rhs = dot(&x, &conv_transpose2d_reals(&gt, &y, &w));
            assert!((lhs - rhs).abs() <= 1e-9 * lhs.abs().max(rhs.abs()).max(1e-300), "{lhs} vs {rhs}: {xs:?} {ws:?}");
        }
        // And through the ops, with integer-valued data (exact in f32).
        let x = random_ints(&[2, 4, 7, 5], 1);
        let w = random_ints(&[6, 2, 3, 3], 2);
        let a = attrs("[2, 2]", "[1, 1]", "[1, 1]", "2");
        let y = eval("graph.conv2d", &[x.clone(), w.clone()], &a).unwrap();
        let v = random_ints(y.shape(), 3);
        let back = eval("graph.conv_transpose2d", &[v.clone(), w], &a).unwrap();
        assert_eq!(back.shape(), x.shape());
        assert_eq!(dot(&y.to_reals(), &v.to_reals()), dot(&x.to_reals(), &back.to_reals()));
    }

    #[test]
    fn bad_inputs_are_errors() {
        let x = "tensor<1x4x8x8xf32>";
        type Case<'a> = (&'a str, Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
        let cases: Vec<Case> = vec![
            ("graph.conv2d", vec!["tensor<4x8x8xf32>", "tensor<4x4x3x3xf32>"], plain(), "rank 4"),
            ("graph.conv2d", vec![x, "tensor<4x4x3xf32>"], plain(), "operand `w`"),
            ("graph.conv2d", vec![x, "tensor<4x3x3x3xf32>"], plain(), "dim 1 must be C/group"),
            ("graph.conv2d", vec![x, "tensor<4x2x3x3xf32>"], attrs("[1, 1]", "[0, 0]", "[1, 1]", "3"), "not divisible"),
            (
                "graph.conv2d",
                vec![x, "tensor<3x2x3x3xf32>"],
                attrs("[1, 1]", "[0, 0]", "[1, 1]", "2"),
                "output channels",
            ),
            ("graph.conv2d", vec![x, "tensor<4x4x3x3xf32>"], attrs("[0, 1]", "[0, 0]", "[1, 1]", "1"), "`stride`"),
            ("graph.conv2d", vec![x, "tensor<4x4x3x3xf32>"], attrs("[1]", "[0, 0]", "[1, 1]", "1"), "`stride`"),
            ("graph.conv2d", vec![x, "tensor<4x4x3x3xf32>"], attrs("[1, 1]", "[-1, 0]", "[1, 1]", "1"), "`pad`"),
            ("graph.conv2d", vec![x, "tensor<4x4x3x3xf32>"], attrs("[1, 1]", "[0, 0]", "[0, 1]", "1"), "`dilation`"),
            ("graph.conv2d", vec![x, "tensor<4x4x3x3xf32>"], attrs("[1, 1]", "[0, 0]", "[1, 1]", "0"), "`group`"),
            ("graph.conv2d", vec![x, "tensor<4x4x9x3xf32>"], plain(), "dilated filter spans 9"),
            ("graph.conv2d", vec![x, "tensor<4x4x0x3xf32>"], plain(), "empty"),
            ("graph.conv2d", vec!["tensor<1x4x8x8xi32>", "tensor<4x4x3x3xi32>"], plain(), "i32"),
            ("graph.conv2d", vec![x, "tensor<4x4x3x3xf16>"], plain(), "f16"),
            ("graph.conv2d", vec!["tensor<1x4x8x8xf32, #nhwc>", "tensor<4x4x3x3xf32>"], plain(), "layout"),
            (
                "graph.conv2d",
                vec![x, "tensor<4x4x3x3xf32>"],
                attrs("[1, 1]", "[9223372036854775807, 0]", "[1, 1]", "1"),
                "overflows",
            ),
            (
                "graph.conv2d",
                vec![x, "tensor<4x4x5x3xf32>"],
                attrs("[1, 1]", "[0, 0]", "[9223372036854775807, 1]", "1"),
                "overflows",
            ),
            ("graph.conv_transpose2d", vec![x, "tensor<3x2x3x3xf32>"], plain(), "dim 0 must be"),
            (
                "graph.conv_transpose2d",
                vec![x, "tensor<4x2x3x3xf32>"],
                attrs("[1, 1]", "[5, 5]", "[1, 1]", "1"),
                "not positive",
            ),
            (
                "graph.conv_transpose2d",
                vec![x, "tensor<4x2x3x3xf32>"],
                attrs("[9223372036854775807, 1]", "[0, 0]", "[1, 1]", "1"),
                "overflows",
            ),
            (
                "graph.conv_transpose2d",
                vec![x, "tensor<4x9223372036854775807x3x3xf32>"],
                attrs("[1, 1]", "[0, 0]", "[1, 1]", "4"),
                "overflows",
            ),
            ("graph.conv_transpose2d", vec!["tensor<1x4x0x8xf32>", "tensor<4x2x3x3xf32>"], plain(), "positive height"),
            ("graph.conv_transpose2d", vec!["tensor<1x4x8x8xqs8<0.5>>", "tensor<4x2x3x3xqs8<0.5>>"], plain(), "qs8"),
        ];
        for (name, types, a, want) in cases {
            let err = infer(name, &types, &a).expect_err(want);
            assert!(err.contains(want), "{name} {types:?}: `{err}` should mention `{want}`");
        }
        let mut a = plain();
        a.push(("nonlinearity", "\"relu\""));
        let cb = |types: &[&str], a: &[(&str, &str)]| infer("graph.conv_bias", types, a).unwrap_err();
        let w = "tensor<4x4x3x3xf32>";
        let err = cb(&[x, w, "tensor<4xf32>"], &a);
        assert!(err.contains("operand `b`"), "{err}");
        let err = cb(&[x, w, "tensor<1x3x1x1xf32>"], &a);
        assert!(err.contains("operand `b`") && err.contains("[1, 4, 1, 1]"), "{err}");
        let err = cb(&[x, w, "tensor<1x4x1x1xf16>"], &a);
        assert!(err.contains("operand `b`") && err.contains("f16"), "{err}");
        let err = cb(&[x, w, "tensor<1x4x1x1xf32>", "tensor<1x4x5x6xf32>"], &a);
        assert!(err.contains("operand `z`") && err.contains("[1, 4, 6, 6]"), "{err}");
        let err = cb(&[x, w, "tensor<1x4x1x1xf32>", "tensor<1x4x6x6xf16>"], &a);
        assert!(err.contains("operand `z`") && err.contains("f16"), "{err}");
        let five = [x, w, "tensor<1x4x1x1xf32>", "tensor<1x4x6x6xf32>", "tensor<1x4x6x6xf32>"];
        let err = cb(&five, &a);
        assert!(err.contains("optional z"), "{err}");
        let mut bad_nl = plain();
        bad_nl.push(("nonlinearity", "\"tanh\""));
        let err = cb(&[x, w, "tensor<1x4x1x1xf32>"], &bad_nl);
        assert!(err.contains("tanh") && err.contains("h_swish"), "{err}");
        let err = cb(&[x, w, "tensor<1x4x1x1xf32>"], &plain());
        assert!(err.contains("nonlinearity"), "{err}");
        let mut a = plain();
        a.push(("out_dtype", "tensor<2xf32>"));
        let err = infer("graph.conv2d", &[x, w], &a).unwrap_err();
        assert!(err.contains("out_dtype"), "{err}");
    }

    #[test]
    fn eval_rejects_bad_data_without_panicking() {
        let x = f32s(&[1, 1, 3, 3], &seq(9));
        let err = eval_unchecked("graph.conv2d", std::slice::from_ref(&x), &plain()).unwrap_err();
        assert!(err.contains("2 inputs"), "{err}");
        let err = eval_unchecked("graph.conv2d", &[x.clone(), f32s(&[2, 2], &[0.0; 4])], &plain()).unwrap_err();
        assert!(err.contains("rank 4"), "{err}");
        let err = eval_unchecked("graph.conv_transpose2d", &[f32s(&[9], &[0.0; 9]), x.clone()], &plain()).unwrap_err();
        assert!(err.contains("rank 4"), "{err}");
        let mut a = plain();
        a.push(("nonlinearity", "\"relu\""));
        let err = eval_unchecked("graph.conv_bias", &[x.clone(), x.clone()], &a).unwrap_err();
        assert!(err.contains("optional z"), "{err}");
        let err = eval_unchecked("graph.conv_bias", &[x.clone(), x.clone(), f32s(&[1], &[0.0])], &a).unwrap_err();
        assert!(err.contains("operand `b`"), "{err}");
        // Empty batches evaluate to empty results.
        let empty = TensorData::zeros(ElemType::F32, vec![0, 1, 3, 3]).unwrap();
        let y = eval("graph.conv2d", &[empty, f32s(&[2, 1, 2, 2], &[1.0; 8])], &plain()).unwrap();
        assert_eq!(y.shape(), &[0, 2, 2, 2]);
    }

    #[test]
    fn nonlinearities_parse_and_name_themselves() {
        for &(name, nl) in NONLINEARITIES {
            assert_eq!(Nonlinearity::parse(name).unwrap(), nl);
            assert_eq!(nl.name(), name);
        }
        assert_eq!(Nonlinearity::HSwish.apply(1.0), 1.0 * 4.0 / 6.0);
        assert_eq!(Nonlinearity::Relu.apply(-1.0), 0.0);
        assert_eq!(Nonlinearity::Identity.apply(-1.0), -1.0);
        assert_eq!(Nonlinearity::Sigmoid.apply(0.0), 0.5);
    }

    #[test]
    fn huge_batches_of_empty_images_stay_cheap() {
        let x = TensorData::zeros(ElemType::F32, vec![1 << 40, 0, 3, 3]).unwrap();
        let w = TensorData::zeros(ElemType::F32, vec![0, 0, 1, 1]).unwrap();
        let y = eval("graph.conv2d", &[x.clone(), w.clone()], &plain()).unwrap();
        assert_eq!(y.shape(), &[1 << 40, 0, 3, 3]);
        let y = eval("graph.conv_transpose2d", &[x, w], &plain()).unwrap();
        assert_eq!(y.shape(), &[1 << 40, 0, 3, 3]);
    }
}
