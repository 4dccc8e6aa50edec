//! Lowering of the image ops: `graph.resize`, `layout.resize` (the same on a
//! blocked activation), `graph.warp_perspective` and `graph.fused_preprocess`.
//!
//! - **resize** (half-pixel centres): the source rows and columns are computed
//!   with exact integer index arithmetic — nearest reads
//!   `min(((2d + 1)·in) / (2·out), in − 1)`, linear starts at
//!   `((2d + 1)·in − out) / (2·out)` clamped into `[0, in − 1]` with the
//!   remainder as the `f32` weight — so the pixels read are exactly the
//!   reference's and only the weights are rounded to `f32`. Nearest is a pure
//!   gather and takes every element type; linear needs `f32`. On blocked
//!   layouts (`layout.resize`) the last stored axis is the channel block, so
//!   both modes run on 128-bit vectors of channels; plain NCHW is scalar.
//! - **warp_perspective**: one parallel row per `(n, oh)`; per destination
//!   pixel the source coordinate, the border handling (constant, replicate,
//!   reflect, wrap) and the interpolation weights are computed once and reused
//!   for every channel. Coordinates are computed in `f32` (the reference uses
//!   `f64`): pixels sampled at coordinates within an `f32` rounding of a pixel
//!   boundary, or very far outside the image under `reflect`/`wrap`, may differ
//!   from the reference. As in the reference, zero-weight taps are skipped and
//!   a NaN coordinate reads `border_value`. Input and matrix: `f32` or `f16`
//!   (computed in `f32`, rounded once to the input's type).
//! - **fused_preprocess**: one parallel row per `(n, h)`; every output element
//!   is computed from its input element by the `Plan`'s stages (warp, convert,
//!   per-channel steps rounded to `dtype` after each, convert to `out_dtype`),
//!   padded channels are stored as zero, and the result is written in its
//!   layout (NCHW, NHWC or blocked). Plain element types only: quantised types
//!   and `bool` are refused (as is `bf16`); steps need `dtype` `f32` or `f16`.

use super::data::{
    attr_float, attr_ints, attr_str, clamp_index, decompose, for_rows, load_l, move_lanes, select_any, store_out,
};
use super::{KernelCx, LResult};
use strata_dialects::graph::image::{BorderMode, InterpMode};
use strata_dialects::graph::preprocess::{ImageLayout, Plan, Step};
use strata_dialects::layout::format::spatial_axes;
use strata_dialects::loops::{BinOp, CmpPred, KernelBuilder, UnOp, ValueKind};
use strata_ir::{ElemType, OpId, ValueId};

/// Lowers one image op (dispatching on its name).
pub fn lower_image(cx: &mut KernelCx<'_, '_, '_>, op: OpId) -> LResult<()> {
    let name = cx.k.ctx().op_name(op).to_string();
    match name.as_str() {
        "graph.resize" | "layout.resize" => lower_resize(cx, op),
        "graph.warp_perspective" => lower_warp(cx, op),
        "graph.fused_preprocess" => lower_fused_preprocess(cx, op),
        other => Err(cx.err(op, format!("`{other}` is not an image op"))),
    }
}

// ---- resize ---------------------------------------------------------------------------

/// Nearest source index of destination `d` on an axis resized from `len_in` to `len_out`.
fn nearest_index(k: &mut KernelBuilder<'_, '_>, d: ValueId, len_in: usize, len_out: usize) -> ValueId {
    let (i, o) = (len_in as i64, len_out as i64);
    let num = k.affine(&[(d, 2 * i)], i);
    let den = k.index(2 * o);
    let q = k.binary(BinOp::Div, num, den);
    let top = k.index(i - 1);
    k.min(q, top)
}

/// Linear source of destination `d`: the two indices and the `f32` weight of the second.
fn linear_index(
    k: &mut KernelBuilder<'_, '_>,
    d: ValueId,
    len_in: usize,
    len_out: usize,
) -> (ValueId, ValueId, ValueId) {
    let (i, o) = (len_in as i64, len_out as i64);
    // src = ((2d + 1)·in − out) / (2·out), clamped into [0, in − 1].
    let num = k.affine(&[(d, 2 * i)], i - o);
    let zero = k.index(0);
    let num = k.max(num, zero);
    let den = k.index(2 * o);
    let i0 = k.binary(BinOp::Div, num, den);
    let r = k.binary(BinOp::Rem, num, den);
    let top = k.index(i - 1);
    let clamped = k.cmp(CmpPred::Ge, i0, top);
    let i0 = k.min(i0, top);
    let r = k.select(clamped, zero, r);
    let i1 = k.add_i(i0, 1);
    let i1 = k.min(i1, top);
    let f32t = k.scalar_ty(ElemType::F32);
    let rf = k.cast(r, f32t);
    let denf = k.f32((2 * o) as f32);
    let frac = k.binary(BinOp::Div, rf, denf);
    (i0, i1, frac)
}

/// `w · p`, or zero when the scalar weight `w` is zero (the reference skips
/// such taps, so a non-finite pixel behind a zero weight does not leak).
fn tap(k: &mut KernelBuilder<'_, '_>, w: ValueId, p: ValueId) -> ValueId {
    let zero_s = k.f32(0.0);
    let is_zero = k.cmp(CmpPred::Eq, w, zero_s);
    let (w, zero) = match ValueKind::of(k.ctx(), k.type_of(p)) {
        ValueKind::Vector(v) => {
            let ty = k.vector_ty(ElemType::F32, v.lanes);
            (k.splat(w, v.lanes), k.constant(ty, 0.0))
        }
        _ => (w, zero_s),
    };
    let t = k.mul(w, p);
    select_any(k, is_zero, zero, t)
}

/// The four bilinear weights `(1-fy)(1-fx), (1-fy)fx, fy(1-fx), fy·fx`.
fn bilinear_weights(k: &mut KernelBuilder<'_, '_>, fy: ValueId, fx: ValueId) -> [ValueId; 4] {
    let one = k.f32(1.0);
    let gy = k.sub(one, fy);
    let gx = k.sub(one, fx);
    [k.mul(gy, gx), k.mul(gy, fx), k.mul(fy, gx), k.mul(fy, fx)]
}

fn lower_resize(cx: &mut KernelCx<'_, '_, '_>, op: OpId) -> LResult<()> {
    let x = cx.operand(op, 0);
    let out = cx.k.ctx().op(op).results.first().copied().ok_or_else(|| cx.err(op, "has no result"))?;
    let (xt, ot) = (cx.tensor(x), cx.tensor(out));
    let (in_shape, out_shape) = (cx.shape(x), cx.shape(out));
    let layout = xt.layout;
    let blocked = layout.block().is_some();
    let rank = if blocked { 5 } else { 4 };
    if in_shape.len() != rank || out_shape.len() != rank || ot.layout != layout || ot.elem != xt.elem {
        return Err(cx.err(op, format!("cannot resize {in_shape:?} (#{layout}) to {out_shape:?} (#{})", ot.layout)));
    }
    if layout == strata_ir::Layout::Nhwc {
        return Err(cx.err(op, "resize of an NHWC tensor is not lowered"));
    }
    let (hi, wi) = spatial_axes(layout);
    let mode = InterpMode::parse(&attr_str(cx, op, "imode")?).map_err(|e| cx.err(op, e))?;
    let output = attr_ints(cx, op, "output")?;
    let fits = (0..rank).all(|d| d == hi || d == wi || in_shape[d] == out_shape[d])
        && output == [out_shape[hi] as i64, out_shape[wi] as i64];
    let (h, w) = (in_shape[hi], in_shape[wi]);
    if !fits || h == 0 || w == 0 {
        return Err(cx.err(op, format!("cannot resize {in_shape:?} to {out_shape:?} with output {output:?}")));
    }
    if mode == InterpMode::Linear && xt.elem != ElemType::F32 {
        return Err(cx.err(op, format!("linear resize of {} tensors is not lowered (f32 only)", xt.elem)));
    }
    let (oh, ow) = (out_shape[hi], out_shape[wi]);
    // The last stored axis is the channel block of a blocked layout: vectors of channels.
    let lanes = if blocked { move_lanes(xt.elem) } else { None };
    let input = cx.inputs[0];
    super::map_output(cx, &out_shape, lanes, |k, idx, l| {
        let at = |y: ValueId, x: ValueId| -> Vec<ValueId> {
            let mut s = idx.to_vec();
            s[hi] = y;
            s[wi] = x;
            s
        };
        match mode {
            InterpMode::Nearest => {
                let y = nearest_index(k, idx[hi], h, oh);
                let x = nearest_index(k, idx[wi], w, ow);
                Ok(load_l(k, input, &at(y, x), l))
            }
            InterpMode::Linear => {
                let (y0, y1, fy) = linear_index(k, idx[hi], h, oh);
                let (x0, x1, fx) = linear_index(k, idx[wi], w, ow);
                let ws = bilinear_weights(k, fy, fx);
                let mut acc = None;
                for (wt, (y, x)) in ws.into_iter().zip([(y0, x0), (y0, x1), (y1, x0), (y1, x1)]) {
                    let p = load_l(k, input, &at(y, x), l);
                    let t = tap(k, wt, p);
                    acc = Some(match acc {
                        None => t,
                        Some(a) => k.add(a, t),
                    });
                }
                Ok(acc.expect("invariant: four taps"))
            }
        }
    })
}

// ---- warp sampling --------------------------------------------------------------------

/// The warp's attributes.
#[derive(Clone, Copy)]
struct WarpParams {
    imode: InterpMode,
    border: BorderMode,
    border_value: f32,
    /// Input height and width.
    h: usize,
    w: usize,
}

/// One source pixel read by a destination pixel: subscripts (H, W), the
/// conditions under which it is inside the image (constant border), and its
/// weight (linear).
struct Tap {
    y: ValueId,
    x: ValueId,
    inside: Vec<ValueId>,
    weight: Option<ValueId>,
}

/// Where a destination pixel samples: its taps and the NaN-coordinate flags.
struct Sampler {
    taps: Vec<Tap>,
    nan: [ValueId; 2],
}

/// The in-image index for position `p` of an axis of `n >= 1` pixels, and
/// (constant border) the conditions for `p` being inside.
fn border_index(k: &mut KernelBuilder<'_, '_>, p: ValueId, n: usize, mode: BorderMode) -> (ValueId, Vec<ValueId>) {
    let nn = n as i64;
    let zero = k.index(0);
    match mode {
        BorderMode::Constant => {
            let len = k.index(nn);
            let conds = vec![k.cmp(CmpPred::Ge, p, zero), k.cmp(CmpPred::Lt, p, len)];
            (clamp_index(k, p, n), conds)
        }
        BorderMode::Replicate => (clamp_index(k, p, n), Vec::new()),
        BorderMode::Reflect | BorderMode::Wrap => {
            let period = if mode == BorderMode::Reflect { 2 * nn } else { nn };
            let per = k.index(period);
            let r = k.binary(BinOp::Rem, p, per);
            let neg = k.cmp(CmpPred::Lt, r, zero);
            let up = k.add(r, per);
            let m = k.select(neg, up, r);
            if mode == BorderMode::Wrap {
                return (m, Vec::new());
            }
            let len = k.index(nn);
            let high = k.cmp(CmpPred::Ge, m, len);
            let mirrored = k.affine(&[(m, -1)], 2 * nn - 1);
            (k.select(high, mirrored, m), Vec::new())
        }
    }
}

/// The sampling of destination pixel `(dh, dw)` of batch `b` through `mat [N, 3, 3]`.
fn warp_sampler(
    k: &mut KernelBuilder<'_, '_>,
    mat: ValueId,
    b: ValueId,
    dh: ValueId,
    dw: ValueId,
    prm: &WarpParams,
) -> Sampler {
    let f32t = k.scalar_ty(ElemType::F32);
    let mut m = [[b; 3]; 3];
    for (r, row) in m.iter_mut().enumerate() {
        for (c, e) in row.iter_mut().enumerate() {
            let (ri, ci) = (k.index(r as i64), k.index(c as i64));
            let v = k.load(mat, &[b, ri, ci]);
            *e = k.cast(v, f32t);
        }
    }
    let dx = k.cast(dw, f32t);
    let dy = k.cast(dh, f32t);
    let proj = |k: &mut KernelBuilder<'_, '_>, r: usize| {
        let a = k.mul(m[r][0], dx);
        let bb = k.mul(m[r][1], dy);
        let t = k.add(a, bb);
        k.add(t, m[r][2])
    };
    let (u, v, s) = (proj(k, 0), proj(k, 1), proj(k, 2));
    // Clamp to ±2^40 (NaN stays NaN), then replace NaN by 0 for index safety.
    let limit = (1u64 << 40) as f32;
    let (hi, lo, zero) = (k.f32(limit), k.f32(-limit), k.f32(0.0));
    let coord = |k: &mut KernelBuilder<'_, '_>, num: ValueId| {
        let c = k.binary(BinOp::Div, num, s);
        let c = k.min(c, hi);
        let c = k.max(c, lo);
        let nan = k.cmp(CmpPred::Ne, c, c);
        (k.select(nan, zero, c), nan)
    };
    let (x, nan_x) = coord(k, u);
    let (y, nan_y) = coord(k, v);
    let it = k.index_ty();
    let taps = match prm.imode {
        InterpMode::Nearest => {
            let (rx, ry) = (k.unary(UnOp::Round, x), k.unary(UnOp::Round, y));
            let (px, py) = (k.cast(rx, it), k.cast(ry, it));
            let (y, mut inside) = border_index(k, py, prm.h, prm.border);
            let (x, ix) = border_index(k, px, prm.w, prm.border);
            inside.extend(ix);
            vec![Tap { y, x, inside, weight: None }]
        }
        InterpMode::Linear => {
            let (x0f, y0f) = (k.unary(UnOp::Floor, x), k.unary(UnOp::Floor, y));
            let (fx, fy) = (k.sub(x, x0f), k.sub(y, y0f));
            let (x0, y0) = (k.cast(x0f, it), k.cast(y0f, it));
            let (x1, y1) = (k.add_i(x0, 1), k.add_i(y0, 1));
            let ws = bilinear_weights(k, fy, fx);
            let rows = [border_index(k, y0, prm.h, prm.border), border_index(k, y1, prm.h, prm.border)];
            let cols = [border_index(k, x0, prm.w, prm.border), border_index(k, x1, prm.w, prm.border)];
            let mut taps = Vec::with_capacity(4);
            for (t, wt) in ws.into_iter().enumerate() {
                let ((y, iy), (x, ix)) = (&rows[t / 2], &cols[t % 2]);
                let inside = iy.iter().chain(ix).copied().collect();
                taps.push(Tap { y: *y, x: *x, inside, weight: Some(wt) });
            }
            taps
        }
    };
    Sampler { taps, nan: [nan_x, nan_y] }
}

/// Reads channel `ch` of batch `b` of `x [N, C, H, W]` through `s`: an `f32`.
fn warp_read(
    k: &mut KernelBuilder<'_, '_>,
    x: ValueId,
    b: ValueId,
    ch: ValueId,
    s: &Sampler,
    prm: &WarpParams,
) -> ValueId {
    let f32t = k.scalar_ty(ElemType::F32);
    let bv = k.f32(prm.border_value);
    let mut acc = None;
    for t in &s.taps {
        let p = k.load(x, &[b, ch, t.y, t.x]);
        let mut p = k.cast(p, f32t);
        for &c in &t.inside {
            p = k.select(c, p, bv);
        }
        let term = match t.weight {
            Some(w) => tap(k, w, p),
            None => p,
        };
        acc = Some(match acc {
            None => term,
            Some(a) => k.add(a, term),
        });
    }
    let mut v = acc.unwrap_or(bv);
    for &n in &s.nan {
        v = k.select(n, bv, v);
    }
    v
}

/// Reads and checks the warp attributes of `op` for an `[.., .., h, w]` input.
fn warp_params(cx: &KernelCx<'_, '_, '_>, op: OpId, h: usize, w: usize) -> LResult<(WarpParams, [usize; 2])> {
    let imode = InterpMode::parse(&attr_str(cx, op, "imode")?).map_err(|e| cx.err(op, e))?;
    let border = BorderMode::parse(&attr_str(cx, op, "border_mode")?).map_err(|e| cx.err(op, e))?;
    let border_value = attr_float(cx, op, "border_value")? as f32;
    let output = attr_ints(cx, op, "output")?;
    let [oh, ow] = output[..] else {
        return Err(cx.err(op, format!("attribute `output` must be [OH, OW], is {output:?}")));
    };
    if oh < 1 || ow < 1 || h == 0 || w == 0 {
        return Err(cx.err(op, format!("cannot warp a {h}x{w} image to {output:?}")));
    }
    Ok((WarpParams { imode, border, border_value, h, w }, [oh as usize, ow as usize]))
}

/// Whether a float type is computed through `f32` here.
fn f32_like(e: ElemType) -> bool {
    matches!(e, ElemType::F32 | ElemType::F16)
}

fn lower_warp(cx: &mut KernelCx<'_, '_, '_>, op: OpId) -> LResult<()> {
    let (x, mat) = (cx.operand(op, 0), cx.operand(op, 1));
    let out = cx.k.ctx().op(op).results.first().copied().ok_or_else(|| cx.err(op, "has no result"))?;
    let (xt, mt, ot) = (cx.tensor(x), cx.tensor(mat), cx.tensor(out));
    if !f32_like(xt.elem) || !f32_like(mt.elem) || ot.elem != xt.elem {
        return Err(cx.err(
            op,
            format!("warp_perspective of {} by a {} matrix is not lowered (f32 or f16 only)", xt.elem, mt.elem),
        ));
    }
    let (in_shape, out_shape) = (cx.shape(x), cx.shape(out));
    let [n, c, h, w]: [usize; 4] = in_shape
        .as_slice()
        .try_into()
        .map_err(|_| cx.err(op, format!("the input must be [N, C, H, W], is {in_shape:?}")))?;
    let (prm, [oh, ow]) = warp_params(cx, op, h, w)?;
    if out_shape != [n, c, oh, ow] || cx.shape(mat) != [n, 3, 3] {
        return Err(cx.err(op, format!("cannot warp {in_shape:?} by {:?} to {out_shape:?}", cx.shape(mat))));
    }
    let (xb, mb, output, epilogue) = (cx.inputs[0], cx.inputs[1], cx.output, cx.epilogue.clone());
    for_rows(cx.k, &[n, oh], |k, r| {
        let (b, dh) = (r[0], r[1]);
        k.for_range(0, ow as i64, 1, |k, dw| {
            let s = warp_sampler(k, mb, b, dh, dw, &prm);
            k.for_range(0, c as i64, 1, |k, ch| {
                let v = warp_read(k, xb, b, ch, &s, &prm);
                let ty = k.scalar_ty(ot.elem);
                let v = k.cast(v, ty);
                store_out(k, &epilogue, output, v, &[b, ch, dh, dw])
            })
        })
    })
}

// ---- fused_preprocess -----------------------------------------------------------------

/// Whether the pipeline can carry elements of `e` (plain, non-bool, not bf16).
fn plain(e: ElemType) -> bool {
    !e.is_quantized() && !matches!(e, ElemType::Bool | ElemType::BF16)
}

fn lower_fused_preprocess(cx: &mut KernelCx<'_, '_, '_>, op: OpId) -> LResult<()> {
    let plan = {
        let ctx = cx.k.ctx();
        Plan::read(ctx, |key| ctx.op_attr(op, key)).map_err(|e| cx.err(op, e))?
    };
    let operands = cx.k.ctx().op(op).operands.clone();
    if operands.len() != plan.operand_count() || cx.inputs.len() != operands.len() {
        return Err(cx.err(op, format!("takes {} operands, has {}", plan.operand_count(), operands.len())));
    }
    let x = operands[0];
    let out = cx.k.ctx().op(op).results.first().copied().ok_or_else(|| cx.err(op, "has no result"))?;
    let in_elem = cx.tensor(x).elem;
    for (what, e) in [("input", in_elem), ("dtype", plan.dtype), ("out_dtype", plan.out_dtype)] {
        if !plain(e) {
            return Err(cx.err(op, format!("fused_preprocess with {what} {e} is not lowered (plain types only)")));
        }
    }
    if cx.tensor(out).elem != plan.out_dtype {
        return Err(cx.err(op, "the result's element type is not `out_dtype`"));
    }
    if !plan.steps.is_empty() && !f32_like(plan.dtype) {
        return Err(cx.err(op, format!("arithmetic steps in {} are not lowered (f32 or f16 only)", plan.dtype)));
    }
    let in_shape = cx.shape(x);
    let s4: [usize; 4] = in_shape
        .as_slice()
        .try_into()
        .map_err(|_| cx.err(op, format!("the input must have rank 4, is {in_shape:?}")))?;
    // Logical [N, C, H, W] after the warp and relayout stages.
    let (warp, [n, c, h, w]) = if plan.warp.is_some() {
        if !f32_like(in_elem) {
            return Err(cx.err(op, format!("the warp of a {in_elem} image is not lowered (f32 or f16 only)")));
        }
        let mat = operands[1];
        if !f32_like(cx.tensor(mat).elem) || cx.shape(mat) != [s4[0], 3, 3] {
            return Err(cx.err(op, "the warp matrix must be an f32 or f16 [N, 3, 3] tensor"));
        }
        let (prm, [oh, ow]) = warp_params(cx, op, s4[2], s4[3])?;
        (Some(prm), [s4[0], s4[1], oh, ow])
    } else {
        match plan.in_layout {
            ImageLayout::Nchw => (None, s4),
            ImageLayout::Nhwc => (None, [s4[0], s4[3], s4[1], s4[2]]),
        }
    };
    let cp = c + plan.pad_channels as usize;
    let out_shape = cx.shape(out);
    let want = match (plan.out_layout, plan.block) {
        (ImageLayout::Nchw, None) => vec![n, cp, h, w],
        (ImageLayout::Nhwc, _) => vec![n, h, w, cp],
        (ImageLayout::Nchw, Some(b)) => {
            let b = b as usize;
            if b == 0 || !cp.is_multiple_of(b) {
                return Err(cx.err(op, format!("block {b} does not divide the {cp} channels")));
            }
            vec![n, cp / b, h, w, b]
        }
    };
    if out_shape != want {
        return Err(cx.err(op, format!("the result {out_shape:?} is not the expected {want:?}")));
    }
    // The step constants: buffer, shape, and whether it holds one value per channel.
    let mut consts = Vec::with_capacity(plan.steps.len());
    for (j, &step) in plan.steps.iter().enumerate() {
        let i = plan.first_constant() + j;
        let kt = cx.tensor(operands[i]);
        let shape = cx.shape(operands[i]);
        let count: usize = shape.iter().product();
        if kt.elem != plan.dtype || (count != 1 && count != c) {
            return Err(cx.err(
                op,
                format!("the constant of step `{}` must be {} with 1 or {c} values", step.name(), plan.dtype),
            ));
        }
        consts.push((cx.inputs[i], shape, count != 1, step));
    }
    if [n, cp, h, w].contains(&0) {
        return Ok(());
    }
    let (xb, output, epilogue) = (cx.inputs[0], cx.output, cx.epilogue.clone());
    let mat = warp.map(|_| cx.inputs[1]);
    let (in_layout, out_layout, block) = (plan.in_layout, plan.out_layout, plan.block);
    let (dtype, out_dtype) = (plan.dtype, plan.out_dtype);

    let out_index =
        move |k: &mut KernelBuilder<'_, '_>, b: ValueId, ch: ValueId, y: ValueId, x: ValueId| match (out_layout, block)
        {
            (ImageLayout::Nchw, None) => vec![b, ch, y, x],
            (ImageLayout::Nhwc, _) => vec![b, y, x, ch],
            (ImageLayout::Nchw, Some(p)) => {
                let pp = k.index(p as i64);
                vec![b, k.binary(BinOp::Div, ch, pp), y, x, k.binary(BinOp::Rem, ch, pp)]
            }
        };
    // The stages after the input element `v` (of the input's type) of channel `ch`.
    let finish = |k: &mut KernelBuilder<'_, '_>, v: ValueId, ch: ValueId| -> ValueId {
        let dty = k.scalar_ty(dtype);
        let f32t = k.scalar_ty(ElemType::F32);
        let mut v = k.cast(v, dty);
        for (buf, shape, per_channel, step) in &consts {
            let sub = if *per_channel {
                decompose(k, ch, shape)
            } else {
                let zero = k.index(0);
                vec![zero; shape.len()]
            };
            let kv = k.load(*buf, &sub);
            let (a, kk) = (k.cast(v, f32t), k.cast(kv, f32t));
            let r = match step {
                Step::Add => k.add(a, kk),
                Step::Sub => k.sub(a, kk),
                Step::Mul => k.mul(a, kk),
                Step::Div => k.binary(BinOp::Div, a, kk),
                Step::RSub => k.sub(kk, a),
                Step::RDiv => k.binary(BinOp::Div, kk, a),
            };
            v = k.cast(r, dty);
        }
        let oty = k.scalar_ty(out_dtype);
        k.cast(v, oty)
    };
    let zero_fill = |k: &mut KernelBuilder<'_, '_>| {
        let oty = k.scalar_ty(out_dtype);
        k.constant(oty, 0.0)
    };
    let in_ty_elem = in_elem;
    for_rows(cx.k, &[n, h], |k, r| {
        let (b, y) = (r[0], r[1]);
        match (warp, mat) {
            (Some(prm), Some(mat)) => k.for_range(0, w as i64, 1, |k, xw| {
                let s = warp_sampler(k, mat, b, y, xw, &prm);
                k.for_range(0, c as i64, 1, |k, ch| {
                    let v = warp_read(k, xb, b, ch, &s, &prm);
                    let ity = k.scalar_ty(in_ty_elem);
                    let v = k.cast(v, ity);
                    let v = finish(k, v, ch);
                    let idx = out_index(k, b, ch, y, xw);
                    store_out(k, &epilogue, output, v, &idx)
                })?;
                k.for_range(c as i64, cp as i64, 1, |k, ch| {
                    let z = zero_fill(k);
                    let idx = out_index(k, b, ch, y, xw);
                    store_out(k, &epilogue, output, z, &idx)
                })
            }),
            _ => {
                let read = |k: &mut KernelBuilder<'_, '_>, ch: ValueId, xw: ValueId| {
                    let sub = match in_layout {
                        ImageLayout::Nchw => [b, ch, y, xw],
                        ImageLayout::Nhwc => [b, y, xw, ch],
                    };
                    let v = k.load(xb, &sub);
                    let v = finish(k, v, ch);
                    let idx = out_index(k, b, ch, y, xw);
                    store_out(k, &epilogue, output, v, &idx)
                };
                let zero = |k: &mut KernelBuilder<'_, '_>, ch: ValueId, xw: ValueId| {
                    let z = zero_fill(k);
                    let idx = out_index(k, b, ch, y, xw);
                    store_out(k, &epilogue, output, z, &idx)
                };
                if out_layout == ImageLayout::Nchw && block.is_none() {
                    // Rows of W are contiguous in the result: channels outside.
                    k.for_range(0, c as i64, 1, |k, ch| k.for_range(0, w as i64, 1, |k, xw| read(k, ch, xw)))?;
                    k.for_range(c as i64, cp as i64, 1, |k, ch| k.for_range(0, w as i64, 1, |k, xw| zero(k, ch, xw)))
                } else {
                    // Channels are (blocks of) the last axis of the result: channels inside.
                    k.for_range(0, w as i64, 1, |k, xw| {
                        k.for_range(0, c as i64, 1, |k, ch| read(k, ch, xw))?;
                        k.for_range(c as i64, cp as i64, 1, |k, ch| zero(k, ch, xw))
                    })
                }
            }
        }
    })
}

#[cfg(test)]
#[path = "image_tests.rs"]
mod tests;
