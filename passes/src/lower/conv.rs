//! Lowering of the convolution family — `graph.conv2d`, `graph.conv_bias`,
//! `layout.conv_bias` and `graph.conv_transpose2d` — to loops-dialect kernels.
//!
//! Expects: one verified op with static shapes and f32 operands and result
//! (the driver in [`super`] gives the kernel its buffers and the fused
//! elementwise epilogue). Produces: one kernel whose single `loops.parallel`
//! runs over output rows (`N × channel blocks × OH`), every result stored
//! through [`KernelCx::emit`], so a following `graph.elemwise` (residual add,
//! relu, …) costs no extra pass over memory. `conv_bias` computes
//! `nl(conv + b + z)` exactly as the reference does: the bias initialises the
//! accumulators, `z` is added before the nonlinearity.
//!
//! **Blocked direct convolution** (`layout.conv_bias`, block `P` = 8 for
//! `#nchw88`, 4 for `#nchw44`; any layout storing `[N, C/P, H, W, P]`, and
//! `#nhwcd4` / `#chwn4` through the same index arithmetic). Weight formats
//! `dense`, `group`, `nhwcd4` (blocked input), `hybrid` (plain NCHW input, the
//! first layer) and `channelwise` / `nchw4_channelwise` (depthwise). Each
//! output row is cut into blocks of `OWB` pixels × `P/4` vectors of output
//! channels (NCHW88: 4 pixels × 2 vectors, NCHW44: 8 × 1 — 8 accumulators, so
//! they, two channels' weights and the splat inputs fit the 16 xmm
//! registers). The accumulators start as the bias and are loop-carried values
//! (registers, not memory) through the loops over input-channel blocks,
//! filter rows, filter columns and the `P` channels of a block; the innermost
//! body does two channels: per channel `P/4` weight vectors, and per pixel one
//! input scalar splat and multiplied into them with `fma`. Subscripts are
//! loop indices plus constants, so every load is one address register plus a
//! constant offset in the generated code. Depthwise blocks multiply input
//! vectors by weight vectors, with no channel loop and fewer pixels per block
//! (each accumulator needs its own input vector). 1×1 convolutions have no
//! border and become a register-blocked GEMM over channel blocks.
//!
//! Why loops rather than a fully unrolled filter: the code generator
//! (Cranelift) places pure instructions depth-first from their uses, so in a
//! big unrolled body every load of one accumulator's chain is issued before
//! its first `fma` and everything spills; a body of one tap × two channels
//! keeps the live values under 16 registers. Measured on
//! `conv3x3_64` (1×64×56×56, 64→64, pad 1, bias + relu, NCHW88) on the 2-core
//! AMD EPYC of the project machine, one thread: ≈ 45–49 GFLOP/s, about 80 %
//! of the 58.8 GFLOP/s 128-bit FMA peak (the unrolled form reached 12–22).
//!
//! **Padding without per-tap checks.** Shapes are static, so each row is
//! planned once: the *interior* columns (every filter column inside the
//! input) run as a loop over blocks; the few border columns (and the remainder
//! of the interior) become a handful of straight-line blocks in which the
//! filter columns falling into the padding are left out (each run of filter
//! columns with the same valid pixels is one loop). Rows are split the same
//! way: interior rows are the parallel iterations themselves with constant
//! filter-row bounds; the rows meeting the top or bottom padding run their
//! filter rows from `kh_lo(oh)` to `kh_hi(oh)` (index `max`/`min`
//! arithmetic) and are spread evenly over the parallel iterations (a loop of
//! zero or one trips each), so threads stay balanced and the bulk of the work
//! is in loops with constant bounds, whose loads the code generator may
//! schedule freely. Plans needing more than [`MAX_STATIC_BLOCKS`]
//! straight-line blocks (huge padding) use a general per-pixel path with
//! dynamic filter-column ranges.
//!
//! **Plain NCHW** (`graph.conv2d`, `graph.conv_bias`; any group, stride, pad,
//! dilation): blocks of up to 4 output channels of one group × a few column
//! groups, each group a vector of 4 consecutive output pixels (inputs loaded
//! as one vector at stride 1, gathered lane by lane otherwise) or one scalar
//! pixel at the borders; the loop over the group's input channels carries the
//! accumulators, weights are splat scalars. Borders as above. Measured: 3×3
//! stride 1 ≈ 25 GFLOP/s, stride 2 ≈ 12 GFLOP/s.
//!
//! **`graph.conv_transpose2d`**: the gather form — for each output pixel, the
//! sum over the input pixels and taps that scatter into it (a tap whose
//! position is not on the stride grid or outside the input runs its channel
//! loop zero times). Scalar loops: correct, not fast.
//!
//! **Quantised convolutions** (`qs8` x and w; `graph.conv2d` /
//! `graph.conv_bias` on NCHW and `layout.conv_bias` with every weight format:
//! `dense`, `group`, `channelwise`, `hybrid`, `nhwcd4`, the int8 dot formats
//! `dot` / `group_dot`, and the GPU filters `nchw4`, `nchw32`, `chwn4`,
//! `nchw4_group`, `nchw32_group`, `chwn4_group`, `nchw4_channelwise`): the
//! same row/column planning with a widening multiply-add micro-kernel —
//! `acc_i32 += i32(x_i8) · i32(w_i8)` — whose accumulators are `vec<4xi32>`
//! over 4 consecutive output channels wherever they share a group (or are
//! depthwise) and the layouts block channels by a multiple of 4, else `i32`
//! scalars of one channel; 8 output pixels per block (4-channel lanes) or 6.
//! The loops dialect has no vectors of quantised elements, so every `qs8`
//! element is a scalar load widened with `loops.cast`: a tap builds the
//! weight vector of its 4 channels once (4 loads, inserts) and splats one
//! input per pixel. A weight format is a list of subscripts ([`WSlot`]) in
//! terms of the output channel, the input channel block/lane and the tap.
//! The bias (`qs32<sx·sw>`) initialises the accumulators in `i32` (a bias
//! whose scale differs from `sx·sw` beyond `f32` rounding is added in `f32`
//! with its own factor). Requantisation follows the reference
//! (`round(real / s_out)`, half away from zero, saturating): when
//! `sx·sw / s_out` is 1 (the default `qs32<sx·sw>` result, up to the `f32`
//! rounding of `sx·sw`) and the nonlinearity is identity or relu, the result
//! is the integer `acc + z` (relu: `max(·, 0)`), exact while `|acc| < 2²¹`;
//! otherwise `t = f32(acc)·(sx·sw/s_out) + z` (z has the result's scale),
//! relu as `max(t, 0)`, sigmoid / h_swish on the real value `t·s_out`, then
//! rounded half away from zero and saturated. The `f32` step is exact with
//! power-of-two scale ratios; otherwise it can be one step off the
//! reference's `f64` only when the exact value lies within about 2⁻²³
//! (relative) of a `.5` tie (and `f32(acc)` is inexact beyond 2²⁴). Measured
//! (1×64×56×56, 64→64 3×3, `#nchw44_dot`, bias + relu → qs8, one thread of
//! the project machine's EPYC): ≈ 20 ms, ≈ 6 GMAC/s.
//!
//! Refused with an error naming what is missing: f16 / bf16 kernels, int8
//! weight formats (`dot`, `group_dot`, `nchw4`, …) on f32 operands, quantised
//! operands other than `qs8` x and w with a `qs32` bias and a `qs8` / `qs32`
//! result, quantised transposed convolutions, shapes that disagree with the
//! attributes.
//!
//! ```text
//! %y = layout.conv_bias(%x, %w, %b) {format = #nchw88, weight_format = "dense", pad = [1, 1], …}
//!        : (tensor<1x8x56x56x8xf32, #nchw88>, tensor<8x8x3x3x8x8xf32>, …) -> tensor<1x8x56x56x8xf32, #nchw88>
//! ```
//! becomes (`%acc…` are the 8 carried accumulator vectors):
//! ```text
//! loops.parallel(0, 432) {                   // (ocb, oh) for the 54 rows with all filter rows inside
//!   … straight-line block for columns 0..4 (filter column 0 left out for pixel 0)
//!   loops.for %ow0 = 4 to 52 step 4 {         // interior column blocks
//!     %acc… = bias vectors
//!     loops.for %icb = 0 to 8 (%acc…) { loops.for %kh = 0 to 3 (%acc…) {
//!       loops.for %kw = 0 to 3 (%acc…) { loops.for %c = 0 to 8 step 2 (%acc…) {
//!         // channels c, c+1: 4 weight vector loads, 8 splat input loads, 16 loops.fma
//!     } } } }
//!     relu, then loops.store through the fused epilogue
//!   }
//!   … block for columns 52..56; one top/bottom border row in a 0/1-trip loop
//! }
//! ```

use super::{Epilogue, KernelCx, LResult, LowerError, emit_elemwise};
use strata_dialects::graph::conv::Nonlinearity;
use strata_dialects::graph::elemwise::Mode;
use strata_dialects::layout::format::{WeightFormat, channel_axes, pack_dims, spatial_axes, unpack_dims};
use strata_dialects::loops::{BinOp, CmpPred, KernelBuilder};
use strata_ir::attr_kind::{self, Get};
use strata_ir::{Dim, ElemType, Layout, OpId, ValueId};

/// f32 lanes of a vector.
const LANES: u32 = 4;
/// [`LANES`] as a size.
const L: usize = LANES as usize;
/// Accumulator vectors a blocked micro-kernel aims for (OWB × P/4).
const BLOCKED_ACCUMULATORS: usize = 8;
/// Straight-line column blocks per row before the general path is used instead.
pub const MAX_STATIC_BLOCKS: usize = 16;

// ---------------------------------------------------------------- entry points

/// Lowers `graph.conv2d`, `graph.conv_bias` (plain NCHW) and `layout.conv_bias`
/// (blocked layouts and packed weights).
pub fn lower_conv(cx: &mut KernelCx<'_, '_, '_>, op: OpId) -> LResult<()> {
    if is_quantised_conv(cx, op) {
        return lower_quant(cx, op);
    }
    check_f32(cx, op)?;
    match cx.k.ctx().op_name(op) {
        "layout.conv_bias" => lower_blocked(cx, op),
        "graph.conv2d" | "graph.conv_bias" => lower_plain(cx, op),
        other => Err(cx.err(op, format!("`{other}` is not a convolution"))),
    }
}

/// Lowers `graph.conv_transpose2d` (f32, plain NCHW, any group, stride, pad, dilation).
pub fn lower_conv_transpose(cx: &mut KernelCx<'_, '_, '_>, op: OpId) -> LResult<()> {
    check_f32(cx, op)?;
    let data = cx.k.ctx().op(op).clone();
    if data.operands.len() != 2 || cx.inputs.len() != 2 {
        return Err(cx.err(op, "expects operands x and w"));
    }
    let (xv, wv, ov) = (data.operands[0], data.operands[1], data.results[0]);
    plain_layouts(cx, op, &[xv, wv, ov])?;
    let (xs, ws, os) = (cx.shape(xv), cx.shape(wv), cx.shape(ov));
    let [Some(xs), Some(ws), Some(os)] = [rank4(&xs), rank4(&ws), rank4(&os)] else {
        return Err(cx.err(op, format!("x, w and the result must have rank 4, have {xs:?}, {ws:?}, {os:?}")));
    };
    let pr = params(cx, op)?;
    let [n, c, h, w] = xs;
    let [wc, ocpg, fh, fw] = ws;
    let g = pr.group;
    let oc = ocpg.checked_mul(g).ok_or_else(|| cx.err(op, "the output channels overflow"))?;
    let out_size = |i: usize, size: usize, f: usize| -> Option<usize> {
        let full =
            size.checked_sub(1)?.checked_mul(pr.stride[i])?.checked_add(f.checked_sub(1)?.checked_mul(pr.dil[i])?)?;
        (full + 1).checked_sub(2 * pr.pad[i])
    };
    let (oh, ow) = (out_size(0, h, fh), out_size(1, w, fw));
    if wc != c || !c.is_multiple_of(g) || os != [n, oc, os[2], os[3]] || oh != Some(os[2]) || ow != Some(os[3]) {
        return Err(
            cx.err(op, format!("shapes do not match the attributes: x {xs:?}, w {ws:?}, result {os:?}, {pr:?}"))
        );
    }
    let [_, _, oh, ow] = os;
    if os.contains(&0) {
        return Ok(());
    }
    let cpg = c / g;
    let (x, wb) = (cx.inputs[0], cx.inputs[1]);
    let sink = Sink::of(cx);
    let k = &mut *cx.k;
    k.parallel((n * oc * oh) as i64, |k, r| {
        let [nn, o, y] = split(k, r, &[n, oc, oh]);
        let grp = div_i(k, o, ocpg);
        let j = rem_i(k, o, ocpg);
        let c0 = k.mul_i(grp, cpg as i64);
        k.for_range(0, ow as i64, 1, |k, xo| {
            let zero = k.f32(0.0);
            let (lb, fh_i, fw_i, one) = (k.index(0), k.index(fh as i64), k.index(fw as i64), k.index(1));
            let acc = k.for_loop(lb, fh_i, one, &[zero], None, |k, kh, acc| {
                let (ih, th_ok) = transposed_tap(k, y, kh, pr, 0, h);
                k.for_loop(lb, fw_i, one, acc, None, |k, kw, acc| {
                    let (iw, tw_ok) = transposed_tap(k, xo, kw, pr, 1, w);
                    let (none, all) = (k.index(0), k.index(cpg as i64));
                    let t = k.select(tw_ok, all, none);
                    let trip = k.select(th_ok, t, none);
                    k.for_loop(none, trip, one, acc, None, |k, ci, acc| {
                        let ch = k.add(c0, ci);
                        let xs = k.load(x, &[nn, ch, ih, iw]);
                        let wsc = k.load(wb, &[ch, j, kh, kw]);
                        Ok::<_, LowerError>(vec![k.fma(xs, wsc, acc[0])])
                    })
                })
            })?;
            sink.emit(k, acc[0], &[nn, o, y, xo])
        })
    })
}

/// For output position `o` and tap `k` of a transposed convolution along
/// `axis`: the input position `(o + p - k·d) / s` and whether it is a real one
/// (on the stride grid and inside `0..size`).
fn transposed_tap(
    k: &mut KernelBuilder<'_, '_>,
    o: ValueId,
    tap: ValueId,
    pr: Params,
    axis: usize,
    size: usize,
) -> (ValueId, ValueId) {
    let (s, p, d) = (pr.stride[axis] as i64, pr.pad[axis] as i64, pr.dil[axis] as i64);
    let kd = k.mul_i(tap, d);
    let op = k.add_i(o, p);
    let t = k.sub(op, kd);
    let zero = k.index(0);
    let q = div_i(k, t, s as usize);
    let nonneg = k.cmp(CmpPred::Ge, t, zero);
    let size_i = k.index(size as i64);
    let inside = k.cmp(CmpPred::Lt, q, size_i);
    let mut ok = k.select(nonneg, inside, nonneg);
    if s != 1 {
        let r = rem_i(k, t, s as usize);
        let on_grid = k.cmp(CmpPred::Eq, r, zero);
        ok = k.select(on_grid, ok, on_grid);
    }
    (q, ok)
}

// ---------------------------------------------------------------- common pieces

/// Every tensor operand and the result must be f32.
fn check_f32(cx: &KernelCx<'_, '_, '_>, op: OpId) -> LResult<()> {
    let data = cx.k.ctx().op(op);
    let names = ["x", "w", "b", "z"];
    for (i, &v) in data.operands.iter().enumerate() {
        let e = cx.tensor(v).elem;
        if e != ElemType::F32 {
            let what = names.get(i).map_or_else(|| format!("operand #{i}"), |n| format!("operand `{n}`"));
            return Err(cx.err(op, unsupported_elem(&what, e)));
        }
    }
    for &v in &data.results {
        let e = cx.tensor(v).elem;
        if e != ElemType::F32 {
            return Err(cx.err(op, unsupported_elem("the result", e)));
        }
    }
    Ok(())
}

fn unsupported_elem(what: &str, e: ElemType) -> String {
    let why = if e.is_quantized() {
        "quantised kernels exist for conv2d / conv_bias with qs8 x and w only"
    } else if matches!(e, ElemType::F16 | ElemType::BF16) {
        "half-precision convolution kernels are not lowered yet"
    } else {
        "only f32 convolutions are lowered"
    };
    format!("{what} has element type {e}: {why}")
}

/// The values must be plain (NCHW) tensors.
fn plain_layouts(cx: &KernelCx<'_, '_, '_>, op: OpId, vals: &[ValueId]) -> LResult<()> {
    for &v in vals {
        let l = cx.tensor(v).layout;
        if l != Layout::Nchw {
            return Err(cx.err(op, format!("expects plain NCHW tensors, has one in #{l}")));
        }
    }
    Ok(())
}

fn rank4(s: &[usize]) -> Option<[usize; 4]> {
    s.try_into().ok()
}

/// Stride, padding, dilation and group of a convolution.
#[derive(Clone, Copy, Debug)]
struct Params {
    stride: [usize; 2],
    pad: [usize; 2],
    dil: [usize; 2],
    group: usize,
}

fn params(cx: &KernelCx<'_, '_, '_>, op: OpId) -> LResult<Params> {
    let ctx = cx.k.ctx();
    let pair = |key: &str, min: i64| -> LResult<[usize; 2]> {
        let v = ctx.op_attr(op, key).and_then(|a| attr_kind::Ints::get(ctx, a));
        match v.as_deref() {
            Some(&[a, b]) if a >= min && b >= min => Ok([a as usize, b as usize]),
            _ => Err(cx.err(op, format!("attribute `{key}` must be two integers of at least {min}"))),
        }
    };
    let group = ctx.op_attr(op, "group").and_then(|a| attr_kind::Int::get(ctx, a));
    let group = match group {
        Some(g) if g >= 1 => g as usize,
        _ => return Err(cx.err(op, "attribute `group` must be an integer of at least 1")),
    };
    Ok(Params { stride: pair("stride", 1)?, pad: pair("pad", 0)?, dil: pair("dilation", 1)?, group })
}

fn nonlinearity_of(cx: &KernelCx<'_, '_, '_>, op: OpId) -> LResult<Nonlinearity> {
    let ctx = cx.k.ctx();
    match ctx.op_attr(op, "nonlinearity") {
        None => Ok(Nonlinearity::Identity),
        Some(a) => {
            let s =
                attr_kind::Str::get(ctx, a).ok_or_else(|| cx.err(op, "attribute `nonlinearity` must be a string"))?;
            Nonlinearity::parse(s).map_err(|m| cx.err(op, m))
        }
    }
}

/// The checked sizes of one convolution (logical NCHW).
#[derive(Clone, Copy, Debug)]
struct Geom {
    n: usize,
    ic: usize,
    h: usize,
    w: usize,
    oc: usize,
    oh: usize,
    ow: usize,
    fh: usize,
    fw: usize,
    p: Params,
}

impl Geom {
    /// Checks that the sizes agree with each other and with the attributes.
    fn check(&self) -> Result<(), String> {
        let g = self.p.group;
        if !self.ic.is_multiple_of(g) || !self.oc.is_multiple_of(g) {
            return Err(format!("{} input and {} output channels are not divisible by group = {g}", self.ic, self.oc));
        }
        if self.fh == 0 || self.fw == 0 {
            return Err("the filter is empty".into());
        }
        for axis in 0..2 {
            let (size, f, out) = ([self.h, self.w][axis], [self.fh, self.fw][axis], [self.oh, self.ow][axis]);
            let padded = size.checked_add(self.p.pad[axis].checked_mul(2).ok_or("padding overflows")?);
            let extent = (f - 1).checked_mul(self.p.dil[axis]).map(|e| e + 1);
            let want = match (padded, extent) {
                (Some(a), Some(e)) if a >= e => (a - e) / self.p.stride[axis] + 1,
                _ => return Err("the dilated filter does not fit the padded input".into()),
            };
            if want != out {
                return Err(format!("output {} is {out}, the attributes give {want}", ["height", "width"][axis]));
            }
        }
        Ok(())
    }

    fn icpg(&self) -> usize {
        self.ic / self.p.group
    }

    fn ocpg(&self) -> usize {
        self.oc / self.p.group
    }

    fn stride(&self, axis: usize) -> usize {
        self.p.stride[axis]
    }

    /// Whether output position `o` meets the input through tap `k` along `axis`.
    fn tap_ok(&self, axis: usize, o: usize, k: usize) -> bool {
        let pos = o * self.p.stride[axis] + k * self.p.dil[axis];
        let size = [self.h, self.w][axis];
        pos >= self.p.pad[axis] && pos - self.p.pad[axis] < size
    }

    /// The output positions `lo..hi` along `axis` whose every tap is inside the input.
    fn interior(&self, axis: usize) -> (usize, usize) {
        let (size, f, out) = ([self.h, self.w][axis], [self.fh, self.fw][axis], [self.oh, self.ow][axis]);
        let (s, p, d) = (self.p.stride[axis], self.p.pad[axis], self.p.dil[axis]);
        let lo = p.div_ceil(s).min(out);
        let last = (size + p).checked_sub(1 + (f - 1) * d);
        let hi = last.map_or(0, |l| (l / s + 1).min(out));
        (lo, hi.max(lo))
    }

    /// `lo..hi` of the taps along `axis` that stay inside the input for the
    /// (dynamic) output position `o`.
    fn tap_range(&self, k: &mut KernelBuilder<'_, '_>, axis: usize, o: ValueId) -> (ValueId, ValueId) {
        let (size, f) = ([self.h, self.w][axis], [self.fh, self.fw][axis]);
        let (s, p, d) = (self.p.stride[axis] as i64, self.p.pad[axis] as i64, self.p.dil[axis] as i64);
        let os = k.mul_i(o, s);
        let zero = k.index(0);
        // lo = ceil(max(p - o·s, 0) / d)
        let pi = k.index(p);
        let t = k.sub(pi, os);
        let t = k.max(t, zero);
        let t = k.add_i(t, d - 1);
        let lo = div_i(k, t, d as usize);
        // hi = min(f, max(size - 1 + p - o·s + d, 0) / d)
        let ui = k.index(size as i64 - 1 + p + d);
        let u = k.sub(ui, os);
        let u = k.max(u, zero);
        let u = div_i(k, u, d as usize);
        let fi = k.index(f as i64);
        let hi = k.min(u, fi);
        (lo, hi)
    }
}

/// Splits the parallel index `r` into subscripts over `counts` (row-major).
fn split<const N: usize>(k: &mut KernelBuilder<'_, '_>, r: ValueId, counts: &[usize; N]) -> [ValueId; N] {
    let mut out = [r; N];
    let mut rest = r;
    for d in (0..N).rev() {
        if d == 0 {
            out[d] = rest;
        } else if counts[d] == 1 {
            out[d] = k.index(0);
        } else {
            out[d] = rem_i(k, rest, counts[d]);
            rest = div_i(k, rest, counts[d]);
        }
    }
    out
}

fn div_i(k: &mut KernelBuilder<'_, '_>, a: ValueId, b: usize) -> ValueId {
    let b = k.index(b as i64);
    k.binary(BinOp::Div, a, b)
}

fn rem_i(k: &mut KernelBuilder<'_, '_>, a: ValueId, b: usize) -> ValueId {
    if b == 1 {
        return k.index(0);
    }
    let b = k.index(b as i64);
    k.binary(BinOp::Rem, a, b)
}

/// Where results go: [`KernelCx::emit`] of the kernel being written.
#[derive(Clone)]
struct Sink {
    output: ValueId,
    epilogue: Epilogue,
}

impl Sink {
    fn of(cx: &KernelCx<'_, '_, '_>) -> Sink {
        Sink { output: cx.output, epilogue: cx.epilogue.clone() }
    }

    /// Applies the fused epilogue to `v` and stores it at `idx`.
    fn emit(&self, k: &mut KernelBuilder<'_, '_>, v: ValueId, idx: &[ValueId]) -> LResult<()> {
        self.epilogue.store(k, self.output, v, idx)
    }
}

/// Adds `z` (if any), applies the nonlinearity and emits `acc` at `idx`.
fn finish(
    k: &mut KernelBuilder<'_, '_>,
    sink: &Sink,
    nl: Nonlinearity,
    z: Option<ValueId>,
    acc: ValueId,
    idx: &[ValueId],
    vector: bool,
) -> LResult<()> {
    let mut v = acc;
    if let Some(z) = z {
        let zv = if vector { k.load_vec(z, idx, LANES) } else { k.load(z, idx) };
        v = k.add(v, zv);
    }
    let mode = match nl {
        Nonlinearity::Identity => None,
        Nonlinearity::Relu => Some(Mode::Relu),
        Nonlinearity::Sigmoid => Some(Mode::Sigmoid),
        Nonlinearity::HSwish => Some(Mode::HSwish),
    };
    if let Some(mode) = mode {
        v = emit_elemwise(k, mode, &[v]).map_err(|message| LowerError { op: "conv nonlinearity".into(), message })?;
    }
    sink.emit(k, v, idx)
}

// ---------------------------------------------------------------- row and column planning

/// One accumulator group of a block: output pixels `off..off + 4` as one
/// vector (`vec`, plain NCHW only) or pixel `off`, relative to the block start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Group {
    off: usize,
    vec: bool,
}

impl Group {
    fn width(self) -> usize {
        if self.vec { L } else { 1 }
    }
}

/// A straight-line block at a static column.
#[derive(Clone, Debug)]
struct StaticBlock {
    start: usize,
    groups: Vec<Group>,
}

/// The loop over interior blocks: `count` blocks of `width` pixels from `start`.
#[derive(Clone, Debug)]
struct Interior {
    start: usize,
    count: usize,
    width: usize,
    groups: Vec<Group>,
}

/// How one output row is covered (the same for every row).
#[derive(Clone, Debug)]
struct ColPlan {
    statics: Vec<StaticBlock>,
    interior: Option<Interior>,
}

/// Plans the columns of a row: interior blocks shaped like `tpl` (spanning
/// `width` pixels) in a loop, the rest in straight-line blocks of at most
/// `gmax` groups (vectors of 4 pixels where `vec_ok` and all 4 are interior).
/// `align` starts the interior loop at a multiple of `width`, so the left
/// border block is a full one. `None`: the general per-pixel path is better.
fn plan_columns(g: &Geom, tpl: &[Group], width: usize, vec_ok: bool, gmax: usize, align: bool) -> Option<ColPlan> {
    let (c_lo, c_hi) = g.interior(1);
    let mut regions = Vec::new();
    let mut interior = None;
    if c_hi - c_lo >= width {
        let a = if align && c_lo > 0 { c_lo.next_multiple_of(width).min(c_hi) } else { c_lo };
        let count = (c_hi - a) / width;
        regions.push((0, a));
        regions.push((a + count * width, g.ow));
        if count > 0 {
            interior = Some(Interior { start: a, count, width, groups: tpl.to_vec() });
        }
    } else {
        regions.push((0, g.ow));
    }
    let mut statics = Vec::new();
    for (s, e) in regions {
        let mut groups: Vec<Group> = Vec::new();
        let mut q = s;
        while q < e {
            let vec = vec_ok && q + L <= e && q >= c_lo && q + L <= c_hi;
            groups.push(Group { off: q, vec });
            q += if vec { L } else { 1 };
        }
        for chunk in groups.chunks(gmax.max(1)) {
            let start = chunk[0].off;
            statics.push(StaticBlock {
                start,
                groups: chunk.iter().map(|gr| Group { off: gr.off - start, vec: gr.vec }).collect(),
            });
        }
    }
    (statics.len() <= MAX_STATIC_BLOCKS).then_some(ColPlan { statics, interior })
}

/// The filter rows a row of output meets.
#[derive(Clone, Copy, Debug)]
enum Rows {
    /// Every row (no output row meets the padding).
    All,
    /// `lo..hi`, computed per output row.
    Range(ValueId, ValueId),
}

/// How a block's input columns are known.
#[derive(Clone, Copy, Debug)]
enum Cols {
    /// The block starts at this static output column: taps in the padding are left out.
    Static(usize),
    /// Interior block whose first pixel reads input column `iw0 + kw·dw`: every tap is inside.
    Interior(ValueId),
    /// One pixel reading `iw0 + kw·dw` for the dynamic taps `lo..hi`.
    Dynamic(ValueId, ValueId, ValueId),
}

/// A row of output being computed.
#[derive(Clone, Copy, Debug)]
struct RowTaps {
    oh: ValueId,
    /// `oh·sh - ph`: the input row of filter row 0.
    ih0: ValueId,
    rows: Rows,
}

/// One filter tap as a block sees it: filter row and column, input row, and
/// per group the input column of its first pixel (`None`: in the padding).
struct Tap<'a> {
    kh: ValueId,
    ih: ValueId,
    kw: ValueId,
    iw: &'a [Option<ValueId>],
}

type TapFn<'f> = dyn FnMut(&mut KernelBuilder<'_, '_>, &Tap<'_>, &[ValueId]) -> LResult<Vec<ValueId>> + 'f;

/// Runs `body` over every filter tap of a block, threading the accumulators
/// `acc` through the loops that carry them: filter rows, then runs of filter
/// columns with the same set of valid groups. Each loop body is one tap, so
/// the values it loads stay few (the code generator's scheduler keeps a loop
/// body's loads live until its last use, so big unrolled bodies spill).
fn for_taps(
    k: &mut KernelBuilder<'_, '_>,
    g: &Geom,
    row: &RowTaps,
    cols: Cols,
    groups: &[Group],
    acc: Vec<ValueId>,
    body: &mut TapFn<'_>,
) -> LResult<Vec<ValueId>> {
    let one = k.index(1);
    let (lo, hi) = match row.rows {
        Rows::All => (k.index(0), k.index(g.fh as i64)),
        Rows::Range(lo, hi) => (lo, hi),
    };
    k.for_loop(lo, hi, one, &acc, None, |k, kh, acc| taps_in_row(k, g, row, kh, cols, groups, acc.to_vec(), body))
}

/// The filter columns of one filter row: `(kw_lo, kw_hi, per group the input
/// column of its first pixel at kw = 0, if the group reads the input there)`.
type KwRun = (ValueId, ValueId, Vec<Option<ValueId>>);

#[allow(clippy::too_many_arguments)]
fn taps_in_row(
    k: &mut KernelBuilder<'_, '_>,
    g: &Geom,
    row: &RowTaps,
    kh: ValueId,
    cols: Cols,
    groups: &[Group],
    mut acc: Vec<ValueId>,
    body: &mut TapFn<'_>,
) -> LResult<Vec<ValueId>> {
    let khd = k.mul_i(kh, g.p.dil[0] as i64);
    let ih = k.add(row.ih0, khd);
    let (sw, pw, dw) = (g.p.stride[1] as i64, g.p.pad[1] as i64, g.p.dil[1] as i64);
    let runs: Vec<KwRun> = match cols {
        Cols::Static(start) => {
            let valid = |kw: usize| -> Vec<bool> {
                groups.iter().map(|gr| (0..gr.width()).all(|l| g.tap_ok(1, start + gr.off + l, kw))).collect()
            };
            let mut runs = Vec::new();
            let mut kw = 0;
            while kw < g.fw {
                let pattern = valid(kw);
                let mut end = kw + 1;
                while end < g.fw && valid(end) == pattern {
                    end += 1;
                }
                if pattern.iter().any(|&v| v) {
                    let bases = groups
                        .iter()
                        .zip(&pattern)
                        .map(|(gr, &v)| v.then(|| k.index((start + gr.off) as i64 * sw - pw)))
                        .collect();
                    runs.push((k.index(kw as i64), k.index(end as i64), bases));
                }
                kw = end;
            }
            runs
        }
        Cols::Interior(iw0) => {
            let bases = groups.iter().map(|gr| Some(k.add_i(iw0, gr.off as i64 * sw))).collect();
            vec![(k.index(0), k.index(g.fw as i64), bases)]
        }
        Cols::Dynamic(iw0, lo, hi) => vec![(lo, hi, vec![Some(iw0)])],
    };
    let one = k.index(1);
    for (lo, hi, bases) in runs {
        acc = k.for_loop(lo, hi, one, &acc, None, |k, kw, acc| {
            let kwd = k.mul_i(kw, dw);
            let iws: Vec<Option<ValueId>> = bases.iter().map(|b| b.map(|b| k.add(b, kwd))).collect();
            body(k, &Tap { kh, ih, kw, iw: &iws }, acc)
        })?;
    }
    Ok(acc)
}

/// A micro-kernel family: how a row is set up and how one block of it is computed.
trait Engine {
    /// What a row's blocks share (decoded indices, weight subscripts).
    type Row;
    /// Decodes the outer part `t` of the parallel index (everything but `oh`).
    fn row(&self, k: &mut KernelBuilder<'_, '_>, t: ValueId, taps: RowTaps) -> Self::Row;
    /// Computes and emits the block of `groups` starting at output column `ow0`.
    fn block(
        &self,
        k: &mut KernelBuilder<'_, '_>,
        sink: &Sink,
        row: &Self::Row,
        ow0: ValueId,
        cols: Cols,
        groups: &[Group],
    ) -> LResult<()>;
}

/// The kernel: one parallel loop whose iterations compute the output rows.
///
/// Rows whose every filter row is inside the input (the *interior* rows) are
/// the parallel iterations themselves, with constant filter-row bounds; the
/// few rows meeting the top or bottom padding are spread evenly over the
/// iterations, each in a loop of zero or one trips with dynamic filter-row
/// bounds. Keeping the bulk of the work out of loops with dynamic bounds lets
/// the code generator schedule its loads freely (loads inside a loop that may
/// run zero times must stay where they are). Without interior rows every row
/// takes the border path.
fn drive<E: Engine>(
    k: &mut KernelBuilder<'_, '_>,
    sink: &Sink,
    g: &Geom,
    outer: usize,
    plan: Option<&ColPlan>,
    e: &E,
) -> LResult<()> {
    if outer == 0 || g.oh == 0 || g.ow == 0 {
        return Ok(());
    }
    let (r_lo, r_hi) = g.interior(0);
    let ni = r_hi - r_lo;
    let nb = g.oh - ni;
    let (total_i, total_b) = (outer * ni, outer * nb);
    if ni == 0 {
        return k.parallel((outer * g.oh) as i64, |k, r| {
            let [t, oh] = split(k, r, &[outer, g.oh]);
            emit_row(k, sink, g, plan, e, t, oh, false)
        });
    }
    k.parallel(total_i as i64, |k, i| {
        let [t, q] = split(k, i, &[outer, ni]);
        let oh = k.add_i(q, r_lo as i64);
        emit_row(k, sink, g, plan, e, t, oh, true)?;
        if total_b == 0 {
            return Ok(());
        }
        // The border rows `jlo..jhi` this iteration also computes.
        let (jlo, jhi) = if total_b <= total_i {
            let step = total_i / total_b;
            let q = div_i(k, i, step);
            let r = rem_i(k, i, step);
            let (zero, nbi) = (k.index(0), k.index(total_b as i64));
            let q1 = k.add_i(q, 1);
            let first = k.cmp(CmpPred::Eq, r, zero);
            let some = k.cmp(CmpPred::Lt, q, nbi);
            let hi = k.select(some, q1, q);
            (q, k.select(first, hi, q))
        } else {
            let m = total_b.div_ceil(total_i);
            let lo = k.mul_i(i, m as i64);
            let hi = k.add_i(lo, m as i64);
            let nbi = k.index(total_b as i64);
            (lo, k.min(hi, nbi))
        };
        let one = k.index(1);
        k.for_loop(jlo, jhi, one, &[], None, |k, j, _| {
            let [t, q] = split(k, j, &[outer, nb]);
            // Top rows `0..r_lo`, then bottom rows `r_hi..OH`.
            let top = k.index(r_lo as i64);
            let is_top = k.cmp(CmpPred::Lt, q, top);
            let bottom = k.add_i(q, ni as i64);
            let oh = k.select(is_top, q, bottom);
            emit_row(k, sink, g, plan, e, t, oh, false)?;
            Ok(Vec::new())
        })?;
        Ok(())
    })
}

/// Computes output row `oh` of the outer index `t` (`interior`: every filter
/// row is inside the input).
#[allow(clippy::too_many_arguments)]
fn emit_row<E: Engine>(
    k: &mut KernelBuilder<'_, '_>,
    sink: &Sink,
    g: &Geom,
    plan: Option<&ColPlan>,
    e: &E,
    t: ValueId,
    oh: ValueId,
    interior: bool,
) -> LResult<()> {
    let (sw, pw) = (g.p.stride[1] as i64, g.p.pad[1] as i64);
    let rows = if interior {
        Rows::All
    } else {
        let (lo, hi) = g.tap_range(k, 0, oh);
        Rows::Range(lo, hi)
    };
    let ohs = k.mul_i(oh, g.p.stride[0] as i64);
    let ph = k.index(g.p.pad[0] as i64);
    let ih0 = k.sub(ohs, ph);
    let row = e.row(k, t, RowTaps { oh, ih0, rows });
    let iw0_of = |k: &mut KernelBuilder<'_, '_>, ow0: ValueId| {
        let s = k.mul_i(ow0, sw);
        let p = k.index(pw);
        k.sub(s, p)
    };
    match plan {
        Some(plan) => {
            for sb in &plan.statics {
                let ow0 = k.index(sb.start as i64);
                e.block(k, sink, &row, ow0, Cols::Static(sb.start), &sb.groups)?;
            }
            if let Some(it) = &plan.interior {
                let end = it.start + it.count * it.width;
                k.for_range(it.start as i64, end as i64, it.width as i64, |k, ow0| {
                    let iw0 = iw0_of(k, ow0);
                    e.block(k, sink, &row, ow0, Cols::Interior(iw0), &it.groups)
                })?;
            }
            Ok(())
        }
        None => k.for_range(0, g.ow as i64, 1, |k, ow| {
            let iw0 = iw0_of(k, ow);
            let (lo, hi) = g.tap_range(k, 1, ow);
            e.block(k, sink, &row, ow, Cols::Dynamic(iw0, lo, hi), &[Group { off: 0, vec: false }])
        }),
    }
}

// ---------------------------------------------------------------- blocked layouts

/// Subscripts of activations in a layout: `(n, channel block, h, w, lane)`.
#[derive(Clone, Copy, Debug)]
struct Act {
    layout: Layout,
}

impl Act {
    fn at(&self, n: ValueId, cb: ValueId, h: ValueId, w: ValueId, lane: ValueId) -> Vec<ValueId> {
        match channel_axes(self.layout) {
            None => vec![n, cb, h, w],
            Some((ci, li)) => {
                let (hi, wi) = spatial_axes(self.layout);
                let mut v = vec![n; 5];
                v[ci] = cb;
                v[li] = lane;
                v[hi] = h;
                v[wi] = w;
                v
            }
        }
    }
}

/// The weight formats the blocked kernels read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BKind {
    /// `[OC/P, IC/P, FH, FW, P(ic), P(oc)]`, blocked input.
    Dense,
    /// `[G, OCPG/P, ICPG/P, FH, FW, P(ic), P(oc)]`, blocked input.
    Group { ocbpg: usize, icbpg: usize },
    /// `[OC/P, FH, FW, IC, P(oc)]`, blocked input (`#nhwcd4`).
    Nhwcd4,
    /// `[OC/P, FH, FW, IC, P(oc)]`, plain NCHW input; `cc` channels unrolled per step.
    Hybrid { cc: usize },
    /// `[G/P, 1, 1, FH, FW, P]`: depthwise.
    ChannelWise,
}

/// A `layout.conv_bias`.
struct Blocked {
    g: Geom,
    /// Vectors per channel block (`P / 4`).
    v: usize,
    kind: BKind,
    act: Act,
    nl: Nonlinearity,
    x: ValueId,
    w: ValueId,
    b: ValueId,
    z: Option<ValueId>,
    /// Output channel blocks.
    ocb: usize,
    /// Steps of the channel loop and channels unrolled per step.
    chunks: usize,
    cc: usize,
    /// Channels per iteration of the channel loop.
    unroll: usize,
}

/// Per-row values of a blocked kernel.
struct BRow {
    n: ValueId,
    ocb: ValueId,
    taps: RowTaps,
    /// Leading weight subscripts (`[ocb]`, `[g, o]`, `[cb, 0, 0]`).
    wpre: Vec<ValueId>,
    /// First input channel block read (group convolutions).
    icb0: ValueId,
}

/// The checked facts of a `layout.conv_bias`.
struct BlockedSpec {
    g: Geom,
    format: Layout,
    /// The layout of `x` (`#nchw` for hybrid weights, else `format`).
    x_layout: Layout,
    wf: WeightFormat,
    /// The block of `format`.
    p: usize,
    nl: Nonlinearity,
}

/// Checks a `layout.conv_bias`: attributes, layouts and shapes.
fn blocked_spec(cx: &KernelCx<'_, '_, '_>, op: OpId) -> LResult<BlockedSpec> {
    let ctx = cx.k.ctx();
    let data = ctx.op(op).clone();
    if !(3..=4).contains(&data.operands.len()) || cx.inputs.len() != data.operands.len() {
        return Err(cx.err(op, "expects operands x, w, b and an optional z"));
    }
    let format = ctx
        .op_attr(op, "format")
        .and_then(|a| attr_kind::Layout::get(ctx, a))
        .ok_or_else(|| cx.err(op, "attribute `format` must be a layout"))?;
    let wf = ctx
        .op_attr(op, "weight_format")
        .and_then(|a| attr_kind::Str::get(ctx, a))
        .ok_or_else(|| cx.err(op, "attribute `weight_format` must be a string"))?;
    let wf = WeightFormat::parse(wf).map_err(|m| cx.err(op, m))?;
    let Some(p) = format.block().map(|p| p as usize) else {
        return Err(cx.err(op, format!("attribute `format` must be a blocked layout, is #{format}")));
    };
    let pr = params(cx, op)?;
    let nl = nonlinearity_of(cx, op)?;
    let (xv, wv, bv, ov) = (data.operands[0], data.operands[1], data.operands[2], data.results[0]);
    let xt = cx.tensor(xv);
    let fixed = |s: Vec<usize>| -> Vec<Dim> { s.into_iter().map(|d| Dim::Fixed(d as u64)).collect() };
    let logical = |l: Layout, s: Vec<usize>| -> Result<[usize; 4], String> {
        let d = unpack_dims(l, &fixed(s))?;
        Ok(d.map(|d| d.fixed().unwrap_or(0) as usize))
    };
    let want_x = if wf == WeightFormat::Hybrid { Layout::Nchw } else { format };
    if xt.layout != want_x || cx.tensor(ov).layout != format {
        return Err(cx.err(
            op,
            format!(
                "x must be in #{want_x} and the result in #{format}, are #{} and #{}",
                xt.layout,
                cx.tensor(ov).layout
            ),
        ));
    }
    let [n, ic, h, w] = logical(xt.layout, cx.shape(xv)).map_err(|m| cx.err(op, format!("operand `x`: {m}")))?;
    let [n2, oc, oh, ow] = logical(format, cx.shape(ov)).map_err(|m| cx.err(op, format!("the result: {m}")))?;
    let wdims = wf
        .unpack_dims(p as u64, pr.group as u64, &fixed(cx.shape(wv)))
        .map_err(|m| cx.err(op, format!("operand `w`: {m}")))?;
    let [woc, wicpg, fh, fw] = wdims.map(|d| d as usize);
    let g = Geom { n, ic, h, w, oc, oh, ow, fh, fw, p: pr };
    let mismatch = n2 != n || woc != oc || wicpg.checked_mul(pr.group) != Some(ic);
    if mismatch {
        return Err(cx.err(
            op,
            format!("x [{n}, {ic}, {h}, {w}], w {wdims:?} and the result [{n2}, {oc}, {oh}, {ow}] disagree"),
        ));
    }
    g.check().map_err(|m| cx.err(op, m))?;
    let want_b = pack_dims(format, [1, oc as u64, 1, 1].map(Dim::Fixed)).map_err(|m| cx.err(op, m))?;
    if cx.tensor(bv).shape != want_b || cx.tensor(bv).layout != format {
        return Err(cx.err(op, format!("operand `b` must be [1, {oc}, 1, 1] stored in #{format}")));
    }
    if let Some(&zv) = data.operands.get(3)
        && (cx.tensor(zv).shape != cx.tensor(ov).shape || cx.tensor(zv).layout != format)
    {
        return Err(cx.err(op, "operand `z` must have the result's type"));
    }
    Ok(BlockedSpec { g, format, x_layout: want_x, wf, p, nl })
}

fn lower_blocked(cx: &mut KernelCx<'_, '_, '_>, op: OpId) -> LResult<()> {
    let BlockedSpec { g, format, wf, p, nl, .. } = blocked_spec(cx, op)?;
    let ic = g.ic;
    let oc = g.oc;
    let n = g.n;
    let kind = match wf {
        WeightFormat::Dense => BKind::Dense,
        WeightFormat::Group => BKind::Group { ocbpg: g.ocpg() / p, icbpg: g.icpg() / p },
        WeightFormat::Nhwcd4 => BKind::Nhwcd4,
        WeightFormat::Hybrid => BKind::Hybrid { cc: (1..=8).rev().find(|&d| ic.is_multiple_of(d)).unwrap_or(1) },
        WeightFormat::ChannelWise | WeightFormat::Nchw4ChannelWise => BKind::ChannelWise,
        other => {
            return Err(cx.err(
                op,
                format!("weight format `{}` (int8 dot-product / GPU filters) has no f32 kernel", other.name()),
            ));
        }
    };
    let (chunks, cc) = match kind {
        BKind::Dense | BKind::Nhwcd4 => (ic / p, p),
        BKind::Group { icbpg, .. } => (icbpg, p),
        BKind::Hybrid { cc } => (ic / cc, cc),
        BKind::ChannelWise => (1, 1),
    };
    let v = p / L;
    let e = Blocked {
        g,
        v,
        kind,
        act: Act { layout: format },
        nl,
        x: cx.inputs[0],
        w: cx.inputs[1],
        b: cx.inputs[2],
        z: cx.inputs.get(3).copied(),
        ocb: oc / p,
        chunks,
        cc,
        unroll: if cc.is_multiple_of(2) { 2 } else { 1 },
    };
    // Depthwise blocks load an input vector per accumulator: keep weights,
    // inputs and accumulators of one tap within the 16 vector registers.
    let owb =
        if kind == BKind::ChannelWise { ((15 - v.min(7)) / (2 * v)).max(1) } else { (BLOCKED_ACCUMULATORS / v).max(1) };
    let tpl: Vec<Group> = (0..owb).map(|off| Group { off, vec: false }).collect();
    let plan = plan_columns(&g, &tpl, owb, false, owb, true);
    let sink = Sink::of(cx);
    drive(cx.k, &sink, &g, n * e.ocb, plan.as_ref(), &e)
}

impl Blocked {
    /// Input scalar of channel `c` of step `ch` at `(ih, iw)`.
    fn x_at(
        &self,
        row: &BRow,
        ch: &Chunk,
        c: ValueId,
        ih: ValueId,
        iw: ValueId,
        k: &mut KernelBuilder<'_, '_>,
    ) -> Vec<ValueId> {
        match self.kind {
            BKind::Hybrid { .. } => {
                let icx = k.add(ch.ic0, c);
                vec![row.n, icx, ih, iw]
            }
            _ => self.act.at(row.n, ch.icb, ih, iw, c),
        }
    }

    /// Weight vector `v` of channel `c` of step `ch` at tap `(kh, kw)`.
    fn w_at(
        &self,
        k: &mut KernelBuilder<'_, '_>,
        row: &BRow,
        ch: &Chunk,
        c: ValueId,
        tap: &Tap<'_>,
        v: usize,
    ) -> Vec<ValueId> {
        let lane = k.index((v * L) as i64);
        let mut idx = row.wpre.clone();
        match self.kind {
            BKind::Dense | BKind::Group { .. } => idx.extend([ch.ch, tap.kh, tap.kw, c, lane]),
            BKind::Nhwcd4 | BKind::Hybrid { .. } => {
                let icx = k.add(ch.ic0, c);
                idx.extend([tap.kh, tap.kw, icx, lane]);
            }
            BKind::ChannelWise => idx.extend([tap.kh, tap.kw, lane]),
        }
        idx
    }

    /// One tap of a channel step: a loop over its channels, each loading
    /// `P/4` weight vectors and multiplying splat inputs into them.
    fn dense_tap(
        &self,
        k: &mut KernelBuilder<'_, '_>,
        row: &BRow,
        ch: &Chunk,
        tap: &Tap<'_>,
        acc: &[ValueId],
    ) -> LResult<Vec<ValueId>> {
        let u = self.unroll;
        let (lo, hi, step) = (k.index(0), k.index(self.cc as i64), k.index(u as i64));
        k.for_loop(lo, hi, step, acc, None, |k, c0, acc| {
            let mut acc = acc.to_vec();
            for du in 0..u {
                let c = k.add_i(c0, du as i64);
                let wv: Vec<ValueId> = (0..self.v)
                    .map(|v| {
                        let idx = self.w_at(k, row, ch, c, tap, v);
                        k.load_vec(self.w, &idx, LANES)
                    })
                    .collect();
                for (gi, iw) in tap.iw.iter().enumerate() {
                    let Some(iw) = *iw else { continue };
                    let idx = self.x_at(row, ch, c, tap.ih, iw, k);
                    let xs = k.load(self.x, &idx);
                    let s = k.splat(xs, LANES);
                    for (v, &wvec) in wv.iter().enumerate() {
                        let a = &mut acc[gi * self.v + v];
                        *a = k.fma(s, wvec, *a);
                    }
                }
            }
            Ok(acc)
        })
    }

    /// One tap of a depthwise block: input vectors times weight vectors.
    fn channelwise_tap(
        &self,
        k: &mut KernelBuilder<'_, '_>,
        row: &BRow,
        tap: &Tap<'_>,
        acc: &[ValueId],
    ) -> LResult<Vec<ValueId>> {
        let mut acc = acc.to_vec();
        let ch = Chunk { ch: row.ocb, icb: row.ocb, ic0: row.ocb };
        let wv: Vec<ValueId> = (0..self.v)
            .map(|v| {
                let zero = k.index(0);
                let idx = self.w_at(k, row, &ch, zero, tap, v);
                k.load_vec(self.w, &idx, LANES)
            })
            .collect();
        for (gi, iw) in tap.iw.iter().enumerate() {
            let Some(iw) = *iw else { continue };
            for (v, &wvec) in wv.iter().enumerate() {
                let lane = k.index((v * L) as i64);
                let idx = self.act.at(row.n, row.ocb, tap.ih, iw, lane);
                let xv = k.load_vec(self.x, &idx, LANES);
                let a = &mut acc[gi * self.v + v];
                *a = k.fma(xv, wvec, *a);
            }
        }
        Ok(acc)
    }
}

/// One step of the channel loop: its index, the input channel block it reads
/// (blocked input) and its first input channel (`nhwcd4` / hybrid weights).
struct Chunk {
    ch: ValueId,
    icb: ValueId,
    ic0: ValueId,
}

impl Engine for Blocked {
    type Row = BRow;

    fn row(&self, k: &mut KernelBuilder<'_, '_>, t: ValueId, taps: RowTaps) -> BRow {
        let [n, ocb] = split(k, t, &[self.g.n, self.ocb]);
        let zero = k.index(0);
        let (wpre, icb0) = match self.kind {
            BKind::Group { ocbpg, icbpg } => {
                let grp = div_i(k, ocb, ocbpg);
                let o = rem_i(k, ocb, ocbpg);
                let icb0 = k.mul_i(grp, icbpg as i64);
                (vec![grp, o], icb0)
            }
            BKind::ChannelWise => (vec![ocb, zero, zero], zero),
            _ => (vec![ocb], zero),
        };
        BRow { n, ocb, taps, wpre, icb0 }
    }

    fn block(
        &self,
        k: &mut KernelBuilder<'_, '_>,
        sink: &Sink,
        row: &BRow,
        ow0: ValueId,
        cols: Cols,
        groups: &[Group],
    ) -> LResult<()> {
        let zero = k.index(0);
        let bias: Vec<ValueId> = (0..self.v)
            .map(|v| {
                let lane = k.index((v * L) as i64);
                let idx = self.act.at(zero, row.ocb, zero, zero, lane);
                k.load_vec(self.b, &idx, LANES)
            })
            .collect();
        let inits: Vec<ValueId> = groups.iter().flat_map(|_| bias.iter().copied()).collect();
        let g = &self.g;
        let acc = if self.kind == BKind::ChannelWise {
            for_taps(k, g, &row.taps, cols, groups, inits, &mut |k, tap, acc| self.channelwise_tap(k, row, tap, acc))?
        } else {
            let (lo, hi, one) = (k.index(0), k.index(self.chunks as i64), k.index(1));
            k.for_loop(lo, hi, one, &inits, None, |k, ch, acc| {
                let icb = k.add(row.icb0, ch);
                let ic0 = k.mul_i(ch, self.cc as i64);
                let chunk = Chunk { ch, icb, ic0 };
                for_taps(k, g, &row.taps, cols, groups, acc.to_vec(), &mut |k, tap, acc| {
                    self.dense_tap(k, row, &chunk, tap, acc)
                })
            })?
        };
        for (gi, gr) in groups.iter().enumerate() {
            let ow = k.add_i(ow0, gr.off as i64);
            for v in 0..self.v {
                let lane = k.index((v * L) as i64);
                let idx = self.act.at(row.n, row.ocb, row.taps.oh, ow, lane);
                finish(k, sink, self.nl, self.z, acc[gi * self.v + v], &idx, true)?;
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- plain NCHW

/// A `graph.conv2d` / `graph.conv_bias` on plain NCHW tensors.
struct Plain {
    g: Geom,
    nl: Nonlinearity,
    x: ValueId,
    w: ValueId,
    b: Option<ValueId>,
    z: Option<ValueId>,
    /// Output channels per block (all in one group).
    noc: usize,
}

/// Per-row values of a plain kernel.
struct PRow {
    n: ValueId,
    oc0: ValueId,
    /// First input channel of the group.
    c0: ValueId,
    taps: RowTaps,
}

/// Checks a plain `graph.conv2d` / `graph.conv_bias`: layouts, shapes and
/// attributes; gives the geometry and the nonlinearity (identity for conv2d).
fn plain_spec(cx: &KernelCx<'_, '_, '_>, op: OpId) -> LResult<(Geom, Nonlinearity)> {
    let data = cx.k.ctx().op(op).clone();
    let bias = cx.k.ctx().op_name(op) == "graph.conv_bias";
    let want = if bias { 3..=4 } else { 2..=2 };
    if !want.contains(&data.operands.len()) || cx.inputs.len() != data.operands.len() {
        return Err(cx.err(op, "unexpected operands"));
    }
    let ov = data.results[0];
    let mut vals = data.operands.clone();
    vals.push(ov);
    plain_layouts(cx, op, &vals)?;
    let (xs, ws, os) = (cx.shape(data.operands[0]), cx.shape(data.operands[1]), cx.shape(ov));
    let [Some([n, ic, h, w]), Some([oc, icpg, fh, fw]), Some([n2, oc2, oh, ow])] = [rank4(&xs), rank4(&ws), rank4(&os)]
    else {
        return Err(cx.err(op, format!("x, w and the result must have rank 4, have {xs:?}, {ws:?}, {os:?}")));
    };
    let pr = params(cx, op)?;
    let g = Geom { n, ic, h, w, oc, oh, ow, fh, fw, p: pr };
    if n2 != n || oc2 != oc || icpg.checked_mul(pr.group) != Some(ic) {
        return Err(cx.err(op, format!("x {xs:?}, w {ws:?} and the result {os:?} disagree")));
    }
    g.check().map_err(|m| cx.err(op, m))?;
    if bias && cx.shape(data.operands[2]) != [1, oc, 1, 1] {
        return Err(cx.err(op, format!("operand `b` must have shape [1, {oc}, 1, 1]")));
    }
    if let Some(&zv) = data.operands.get(3)
        && cx.shape(zv) != os
    {
        return Err(cx.err(op, "operand `z` must have the result's shape"));
    }
    let nl = if bias { nonlinearity_of(cx, op)? } else { Nonlinearity::Identity };
    Ok((g, nl))
}

fn lower_plain(cx: &mut KernelCx<'_, '_, '_>, op: OpId) -> LResult<()> {
    let (g, nl) = plain_spec(cx, op)?;
    let bias = cx.k.ctx().op_name(op) == "graph.conv_bias";
    let (n, oc, ow) = (g.n, g.oc, g.ow);
    let ocpg = g.ocpg();
    let noc = [4, 3, 2, 1].into_iter().find(|&d| ocpg.is_multiple_of(d)).unwrap_or(1);
    let e = Plain {
        g,
        nl,
        x: cx.inputs[0],
        w: cx.inputs[1],
        b: bias.then(|| cx.inputs[2]),
        z: cx.inputs.get(3).copied(),
        noc,
    };
    let vec = ow >= L;
    let (tpl, width, gmax) = if vec {
        let gmax = (8 / noc).clamp(1, 4);
        ((0..gmax).map(|i| Group { off: i * L, vec: true }).collect::<Vec<_>>(), gmax * L, gmax)
    } else {
        let gmax = (12 / noc).clamp(2, 8);
        ((0..gmax).map(|off| Group { off, vec: false }).collect(), gmax, gmax)
    };
    let plan = plan_columns(&g, &tpl, width, vec, gmax, false);
    let sink = Sink::of(cx);
    drive(cx.k, &sink, &g, n * (oc / noc), plan.as_ref(), &e)
}

impl Plain {
    /// One tap of input channel `c` (`ic` within the group): splat weights of the block's channels
    /// times input vectors (or scalars) of its groups.
    fn tap(
        &self,
        k: &mut KernelBuilder<'_, '_>,
        row: &PRow,
        [ic, c]: [ValueId; 2],
        groups: &[Group],
        tap: &Tap<'_>,
        acc: &[ValueId],
    ) -> Vec<ValueId> {
        let mut acc = acc.to_vec();
        let ng = groups.len();
        let any_vec = groups.iter().zip(tap.iw).any(|(gr, iw)| gr.vec && iw.is_some());
        let mut ws = Vec::with_capacity(self.noc);
        let mut wv = Vec::with_capacity(self.noc);
        for o in 0..self.noc {
            let oc = k.add_i(row.oc0, o as i64);
            let s = k.load(self.w, &[oc, ic, tap.kh, tap.kw]);
            ws.push(s);
            wv.push(if any_vec { k.splat(s, LANES) } else { s });
        }
        for (gi, (gr, iw)) in groups.iter().zip(tap.iw).enumerate() {
            let Some(iw) = *iw else { continue };
            let idx = [row.n, c, tap.ih, iw];
            let sw = self.g.stride(1) as i64;
            let xg = if !gr.vec {
                k.load(self.x, &idx)
            } else if sw == 1 {
                k.load_vec(self.x, &idx, LANES)
            } else {
                // Strided output pixels: gather the four inputs lane by lane.
                let first = k.load(self.x, &idx);
                let mut v = k.splat(first, LANES);
                for lane in 1..LANES {
                    let iwl = k.add_i(iw, i64::from(lane) * sw);
                    let s = k.load(self.x, &[row.n, c, tap.ih, iwl]);
                    v = k.insert(v, s, lane);
                }
                v
            };
            for o in 0..self.noc {
                let wgt = if gr.vec { wv[o] } else { ws[o] };
                let a = &mut acc[o * ng + gi];
                *a = k.fma(xg, wgt, *a);
            }
        }
        acc
    }
}

impl Engine for Plain {
    type Row = PRow;

    fn row(&self, k: &mut KernelBuilder<'_, '_>, t: ValueId, taps: RowTaps) -> PRow {
        let [n, blk] = split(k, t, &[self.g.n, self.g.oc / self.noc]);
        let oc0 = k.mul_i(blk, self.noc as i64);
        let grp = div_i(k, oc0, self.g.ocpg());
        let c0 = k.mul_i(grp, self.g.icpg() as i64);
        PRow { n, oc0, c0, taps }
    }

    fn block(
        &self,
        k: &mut KernelBuilder<'_, '_>,
        sink: &Sink,
        row: &PRow,
        ow0: ValueId,
        cols: Cols,
        groups: &[Group],
    ) -> LResult<()> {
        let zero = k.index(0);
        let mut inits = Vec::with_capacity(self.noc * groups.len());
        for o in 0..self.noc {
            let s = match self.b {
                Some(b) => {
                    let oc = k.add_i(row.oc0, o as i64);
                    k.load(b, &[zero, oc, zero, zero])
                }
                None => k.f32(0.0),
            };
            let v = groups.iter().any(|gr| gr.vec).then(|| k.splat(s, LANES));
            for gr in groups {
                inits.push(if gr.vec { v.unwrap_or(s) } else { s });
            }
        }
        let g = &self.g;
        let (lo, hi, one) = (k.index(0), k.index(g.icpg() as i64), k.index(1));
        let acc = k.for_loop(lo, hi, one, &inits, None, |k, ic, acc| {
            let c = k.add(row.c0, ic);
            for_taps(k, g, &row.taps, cols, groups, acc.to_vec(), &mut |k, tap, acc| {
                Ok(self.tap(k, row, [ic, c], groups, tap, acc))
            })
        })?;
        for o in 0..self.noc {
            let oc = k.add_i(row.oc0, o as i64);
            for (gi, gr) in groups.iter().enumerate() {
                let ow = k.add_i(ow0, gr.off as i64);
                let idx = [row.n, oc, row.taps.oh, ow];
                finish(k, sink, self.nl, self.z, acc[o * groups.len() + gi], &idx, gr.vec)?;
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- quantised (int8)

/// Whether `op` has a quantised operand or result.
fn is_quantised_conv(cx: &KernelCx<'_, '_, '_>, op: OpId) -> bool {
    let data = cx.k.ctx().op(op);
    data.operands.iter().chain(&data.results).any(|&v| cx.tensor(v).elem.is_quantized())
}

/// One subscript of a packed weight, as a function of the output channel
/// (`oc`, or `g`/`o` within its group, split by the weight block `P`), the
/// input channel (`icb`/`c` = `ic / P` and `ic % P`, or `ic` itself) and the tap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WSlot {
    Oc,
    OcDivP,
    OcRemP,
    G,
    O,
    ODivP,
    ORemP,
    Icb,
    C,
    Ic,
    Kh,
    Kw,
    Zero,
}

impl WSlot {
    /// Whether lane `j` of a row (output channel `oc0 + j`) adds `j` to this subscript.
    fn per_lane(self) -> bool {
        matches!(self, WSlot::Oc | WSlot::OcRemP | WSlot::O | WSlot::ORemP)
    }
}

/// The weight subscripts of each format (`None`: OIHW, plain convolution).
fn weight_slots(wf: Option<WeightFormat>) -> Vec<WSlot> {
    use WSlot::*;
    match wf {
        None => vec![Oc, Ic, Kh, Kw],
        Some(WeightFormat::Dense) => vec![OcDivP, Icb, Kh, Kw, C, OcRemP],
        Some(WeightFormat::Dot) => vec![OcDivP, Icb, Kh, Kw, OcRemP, C],
        Some(WeightFormat::Group) => vec![G, ODivP, Icb, Kh, Kw, C, ORemP],
        Some(WeightFormat::GroupDot) => vec![G, ODivP, Icb, Kh, Kw, ORemP, C],
        Some(WeightFormat::ChannelWise | WeightFormat::Nchw4ChannelWise) => vec![OcDivP, Zero, Zero, Kh, Kw, OcRemP],
        Some(WeightFormat::Hybrid | WeightFormat::Nhwcd4) => vec![OcDivP, Kh, Kw, Ic, OcRemP],
        Some(WeightFormat::Nchw4 | WeightFormat::Nchw32) => vec![Oc, Icb, Kh, Kw, C],
        Some(WeightFormat::Chwn4) => vec![Icb, Kh, Kw, Oc, C],
        Some(WeightFormat::Nchw4Group | WeightFormat::Nchw32Group) => vec![G, O, Icb, Kh, Kw, C],
        Some(WeightFormat::Chwn4Group) => vec![G, Icb, Kh, Kw, O, C],
    }
}

/// How the `i32` accumulators of a quantised convolution become the result.
#[derive(Clone, Copy, Debug)]
struct Requant {
    out: ElemType,
    /// `sx·sw / s_out`: accumulator units to output units.
    m: f64,
    /// `None`: the bias is added to the accumulators in `i32` (its scale is
    /// `sx·sw` up to `f32` rounding); else its own factor `sb / s_out`.
    bias_m: Option<f64>,
    s_out: f64,
    nl: Nonlinearity,
    /// `m` is 1 (up to the rounding of `sx·sw` to `f32`) and the
    /// nonlinearity is identity or relu: the result is the accumulator itself.
    int_path: bool,
}

/// A quantised convolution: `qs8` activations and weights, `i32` accumulators
/// (`i32x4` over 4 output channels where the channels allow), requantised.
struct QConv {
    g: Geom,
    x_act: Act,
    o_act: Act,
    slots: Vec<WSlot>,
    /// The weight block (for the `…DivP` / `…RemP` subscripts).
    wp: usize,
    x: ValueId,
    w: ValueId,
    b: Option<ValueId>,
    z: Option<ValueId>,
    /// Output channels per accumulator (4: an `i32x4`, or 1).
    noc: usize,
    chunks: usize,
    cc: usize,
    /// `x` is read as (channel block, lane) with the lane the channel loop's `c`.
    x_blocked: bool,
    /// One input and one output channel per group: lane `j` reads input channel `oc0 + j`.
    depthwise: bool,
    rq: Requant,
}

/// Per-row values of a quantised kernel.
struct QRow {
    n: ValueId,
    taps: RowTaps,
    /// The base value (lane 0) of each weight subscript that depends on the output channel.
    wbase: Vec<Option<ValueId>>,
    /// Output (and bias, z) channel block and lane of `oc0` (blocked) or `oc0` and 0 (plain).
    ocb: ValueId,
    olane: ValueId,
    /// Input channel of lane 0 at `ic = 0`: (block, lane) for blocked `x`, else (channel, 0).
    xcb: ValueId,
    xlane: ValueId,
}

/// Lowers a convolution with quantised operands (see [`QConv`]).
fn lower_quant(cx: &mut KernelCx<'_, '_, '_>, op: OpId) -> LResult<()> {
    let ctx = cx.k.ctx();
    let data = ctx.op(op).clone();
    let blocked = ctx.op_name(op) == "layout.conv_bias";
    let has_bias = ctx.op_name(op) != "graph.conv2d";
    let names = ["x", "w", "b", "z"];
    let elem = |i: usize| cx.tensor(data.operands[i]).elem;
    let out = cx.tensor(data.results[0]).elem;
    let bad = |what: &str, e: ElemType, want: &str| {
        cx.err(op, format!("{what} has element type {e}; a quantised convolution needs {want}"))
    };
    let (ElemType::QS8(sx), ElemType::QS8(sw)) = (elem(0), elem(1)) else {
        let (what, e) =
            if matches!(elem(0), ElemType::QS8(_)) { ("operand `w`", elem(1)) } else { ("operand `x`", elem(0)) };
        return Err(bad(what, e, "qs8 x and w"));
    };
    let s_out = match out {
        ElemType::QS8(s) | ElemType::QS32(s) => f64::from(s.get()),
        e => return Err(bad("the result", e, "a qs8 or qs32 result")),
    };
    let acc_scale = f64::from(sx.get()) * f64::from(sw.get());
    let mut bias_m = None;
    if has_bias && data.operands.len() > 2 {
        let ElemType::QS32(sb) = elem(2) else {
            return Err(bad("operand `b`", elem(2), "a qs32 bias"));
        };
        let sb = f64::from(sb.get());
        if (sb - acc_scale).abs() > acc_scale * f64::EPSILON * (1u64 << 30) as f64 {
            bias_m = Some(sb / s_out);
        }
    }
    if let Some(&zv) = data.operands.get(3)
        && cx.tensor(zv).elem != out
    {
        return Err(bad(names[3], cx.tensor(zv).elem, "z of the result's element type"));
    }
    let (g, nl, x_layout, o_layout, wf, wp) = if blocked {
        let s = blocked_spec(cx, op)?;
        (s.g, s.nl, s.x_layout, s.format, Some(s.wf), s.p)
    } else {
        let (g, nl) = plain_spec(cx, op)?;
        (g, nl, Layout::Nchw, Layout::Nchw, None, 1)
    };
    let m = acc_scale / s_out;
    let int_path = (m - 1.0).abs() <= f64::EPSILON * (1u64 << 31) as f64
        && bias_m.is_none()
        && matches!(nl, Nonlinearity::Identity | Nonlinearity::Relu);
    let rq = Requant { out, m, bias_m, s_out, nl, int_path };
    let slots = weight_slots(wf);
    let depthwise = g.icpg() == 1 && g.ocpg() == 1;
    let px = x_layout.block().map(|b| b as usize);
    let x_blocked = px.is_some() && !depthwise;
    let (chunks, cc) = match px {
        _ if depthwise => (1, 1),
        Some(px) if g.icpg().is_multiple_of(px) => (g.icpg() / px, px),
        Some(px) => {
            return Err(
                cx.err(op, format!("{} input channels per group are not a multiple of the block {px}", g.icpg()))
            );
        }
        None => (g.icpg(), 1),
    };
    let div4 = |b: Option<u64>| b.is_none_or(|b| b % 4 == 0);
    let lanes_ok = g.oc.is_multiple_of(4)
        && (g.ocpg().is_multiple_of(4)
            || (depthwise && slots.iter().all(|s| !matches!(s, WSlot::G | WSlot::O | WSlot::ODivP | WSlot::ORemP))))
        && (wf.is_none() || wp.is_multiple_of(4))
        && div4(o_layout.block())
        && (!depthwise || div4(x_layout.block()));
    let noc = if lanes_ok { L } else { 1 };
    let e = QConv {
        g,
        x_act: Act { layout: x_layout },
        o_act: Act { layout: o_layout },
        slots,
        wp,
        x: cx.inputs[0],
        w: cx.inputs[1],
        b: if has_bias { cx.inputs.get(2).copied() } else { None },
        z: cx.inputs.get(3).copied(),
        noc,
        chunks,
        cc,
        x_blocked,
        depthwise,
        rq,
    };
    let owb = if noc == L { 8 } else { 6 };
    let tpl: Vec<Group> = (0..owb).map(|off| Group { off, vec: false }).collect();
    let plan = plan_columns(&g, &tpl, owb, false, owb, true);
    let sink = Sink::of(cx);
    drive(cx.k, &sink, &g, g.n * (g.oc / noc), plan.as_ref(), &e)
}

impl QConv {
    /// The `i32` type of an accumulator (`vec<4xi32>` or `i32`).
    fn acc_ty(&self, k: &mut KernelBuilder<'_, '_>) -> strata_ir::Ty {
        if self.noc == 1 { k.scalar_ty(ElemType::I32) } else { k.vector_ty(ElemType::I32, LANES) }
    }

    /// Loads `noc` scalars (lane `j` at `idx(k, j)`), widened to `i32`, as one accumulator-shaped value.
    fn gather(
        &self,
        k: &mut KernelBuilder<'_, '_>,
        buf: ValueId,
        mut idx: impl FnMut(&mut KernelBuilder<'_, '_>, usize) -> Vec<ValueId>,
    ) -> ValueId {
        let i32t = k.scalar_ty(ElemType::I32);
        let mut v = None;
        for j in 0..self.noc {
            let at = idx(k, j);
            let s = k.load(buf, &at);
            let s = k.cast(s, i32t);
            v = Some(match v {
                None if self.noc == 1 => s,
                None => k.splat(s, LANES),
                Some(acc) => k.insert(acc, s, j as u32),
            });
        }
        v.expect("invariant: at least one lane")
    }

    /// The output (bias, z) subscripts of lane `j` at `(n, oh, ow)`.
    fn out_at(
        &self,
        k: &mut KernelBuilder<'_, '_>,
        row: &QRow,
        n: ValueId,
        oh: ValueId,
        ow: ValueId,
        j: usize,
    ) -> Vec<ValueId> {
        if self.o_act.layout.block().is_some() {
            let lane = k.add_i(row.olane, j as i64);
            self.o_act.at(n, row.ocb, oh, ow, lane)
        } else {
            let c = k.add_i(row.ocb, j as i64);
            vec![n, c, oh, ow]
        }
    }

    /// Weight subscripts of lane `j`, input channel `(ch, c)`, tap `(kh, kw)`.
    #[allow(clippy::too_many_arguments)]
    fn w_at(
        &self,
        k: &mut KernelBuilder<'_, '_>,
        row: &QRow,
        ch: ValueId,
        c: ValueId,
        tap: &Tap<'_>,
        j: usize,
    ) -> Vec<ValueId> {
        self.slots
            .iter()
            .zip(&row.wbase)
            .map(|(&s, base)| match (s, base) {
                (_, Some(b)) if s.per_lane() => k.add_i(*b, j as i64),
                (_, Some(b)) => *b,
                (WSlot::Icb, _) => ch,
                (WSlot::C, _) => c,
                (WSlot::Ic, _) => {
                    let t = k.mul_i(ch, self.cc as i64);
                    k.add(t, c)
                }
                (WSlot::Kh, _) => tap.kh,
                (WSlot::Kw, _) => tap.kw,
                _ => k.index(0),
            })
            .collect()
    }

    /// Input subscripts of lane `j` (depthwise) or of channel `(ch, c)` at `(ih, iw)`.
    #[allow(clippy::too_many_arguments)]
    fn x_at(
        &self,
        k: &mut KernelBuilder<'_, '_>,
        row: &QRow,
        ch: ValueId,
        c: ValueId,
        ih: ValueId,
        iw: ValueId,
        j: usize,
    ) -> Vec<ValueId> {
        let blocked = self.x_act.layout.block().is_some();
        if self.depthwise {
            return if blocked {
                let lane = k.add_i(row.xlane, j as i64);
                self.x_act.at(row.n, row.xcb, ih, iw, lane)
            } else {
                let ch = k.add_i(row.xcb, j as i64);
                vec![row.n, ch, ih, iw]
            };
        }
        if self.x_blocked {
            let cb = k.add(row.xcb, ch);
            self.x_act.at(row.n, cb, ih, iw, c)
        } else {
            let t = k.mul_i(ch, self.cc as i64);
            let t = k.add(t, c);
            let chn = k.add(row.xcb, t);
            vec![row.n, chn, ih, iw]
        }
    }

    /// Requantises accumulator `acc` (bias `bias` not yet added when its scale
    /// differs) into `noc` scalars of the result type, lane `j` at `idx[j]`.
    fn finish(
        &self,
        k: &mut KernelBuilder<'_, '_>,
        acc: ValueId,
        bias: Option<ValueId>,
        idx: &[Vec<ValueId>],
    ) -> LResult<Vec<ValueId>> {
        let rq = self.rq;
        let z = self.z.map(|z| self.gather(k, z, |_, j| idx[j].clone()));
        let acc_ty = k.type_of(acc);
        if rq.int_path {
            let mut v = acc;
            if let Some(z) = z {
                v = k.add(v, z);
            }
            if rq.nl == Nonlinearity::Relu {
                let zero = k.constant(acc_ty, 0.0);
                v = k.max(v, zero);
            }
            let out_ty = k.scalar_ty(rq.out);
            return Ok((0..self.noc)
                .map(|j| {
                    let s = if self.noc == 1 { v } else { k.extract(v, j as u32) };
                    k.cast(s, out_ty)
                })
                .collect());
        }
        let fty = if self.noc == 1 { k.scalar_ty(ElemType::F32) } else { k.vector_ty(ElemType::F32, LANES) };
        let f = k.cast(acc, fty);
        let mc = k.constant(fty, rq.m);
        let mut t = k.mul(f, mc);
        if let (Some(bm), Some(b)) = (rq.bias_m, bias) {
            let bf = k.cast(b, fty);
            let bc = k.constant(fty, bm);
            t = k.fma(bf, bc, t);
        }
        if let Some(z) = z {
            // z has the result's type: its scale is the output scale.
            let zf = k.cast(z, fty);
            t = k.add(t, zf);
        }
        match rq.nl {
            Nonlinearity::Identity => {}
            Nonlinearity::Relu => {
                let zero = k.constant(fty, 0.0);
                t = k.max(t, zero);
            }
            nl => {
                let mode = if nl == Nonlinearity::Sigmoid { Mode::Sigmoid } else { Mode::HSwish };
                let s = k.constant(fty, rq.s_out);
                let real = k.mul(t, s);
                let r = emit_elemwise(k, mode, &[real])
                    .map_err(|message| LowerError { op: "conv nonlinearity".into(), message })?;
                t = k.binary(BinOp::Div, r, s);
            }
        }
        Ok(super::quant::quantise(k, t, rq.out))
    }
}

impl Engine for QConv {
    type Row = QRow;

    fn row(&self, k: &mut KernelBuilder<'_, '_>, t: ValueId, taps: RowTaps) -> QRow {
        let [n, blk] = split(k, t, &[self.g.n, self.g.oc / self.noc]);
        let oc0 = k.mul_i(blk, self.noc as i64);
        let (ocpg, icpg, wp) = (self.g.ocpg(), self.g.icpg(), self.wp);
        let grp = div_i(k, oc0, ocpg);
        let o0 = rem_i(k, oc0, ocpg);
        let wbase = self
            .slots
            .iter()
            .map(|s| match s {
                WSlot::Oc => Some(oc0),
                WSlot::OcDivP => Some(div_i(k, oc0, wp)),
                WSlot::OcRemP => Some(rem_i(k, oc0, wp)),
                WSlot::G => Some(grp),
                WSlot::O => Some(o0),
                WSlot::ODivP => Some(div_i(k, o0, wp)),
                WSlot::ORemP => Some(rem_i(k, o0, wp)),
                _ => None,
            })
            .collect();
        let (ocb, olane) = match self.o_act.layout.block() {
            Some(po) => (div_i(k, oc0, po as usize), rem_i(k, oc0, po as usize)),
            None => (oc0, k.index(0)),
        };
        // The first input channel of lane 0: its own channel (depthwise) or its group's first.
        let c0 = if self.depthwise { oc0 } else { k.mul_i(grp, icpg as i64) };
        let (xcb, xlane) = match self.x_act.layout.block() {
            Some(px) => (div_i(k, c0, px as usize), rem_i(k, c0, px as usize)),
            None => (c0, k.index(0)),
        };
        QRow { n, taps, wbase, ocb, olane, xcb, xlane }
    }

    fn block(
        &self,
        k: &mut KernelBuilder<'_, '_>,
        sink: &Sink,
        row: &QRow,
        ow0: ValueId,
        cols: Cols,
        groups: &[Group],
    ) -> LResult<()> {
        let zero = k.index(0);
        let acc_ty = self.acc_ty(k);
        let bias = self.b.map(|b| self.gather(k, b, |k, j| self.out_at(k, row, zero, zero, zero, j)));
        let init = match (bias, self.rq.bias_m) {
            (Some(b), None) => b,
            _ => k.constant(acc_ty, 0.0),
        };
        let inits = vec![init; groups.len()];
        let g = &self.g;
        let i32t = k.scalar_ty(ElemType::I32);
        let (lo, hi, one) = (k.index(0), k.index(self.chunks as i64), k.index(1));
        let acc = k.for_loop(lo, hi, one, &inits, None, |k, ch, acc| {
            for_taps(k, g, &row.taps, cols, groups, acc.to_vec(), &mut |k, tap, acc| {
                let (clo, chi, cone) = (k.index(0), k.index(self.cc as i64), k.index(1));
                k.for_loop(clo, chi, cone, acc, None, |k, c, acc| {
                    let wv = self.gather(k, self.w, |k, j| self.w_at(k, row, ch, c, tap, j));
                    let mut acc = acc.to_vec();
                    for (gi, iw) in tap.iw.iter().enumerate() {
                        let Some(iw) = *iw else { continue };
                        let xv = if self.depthwise {
                            self.gather(k, self.x, |k, j| self.x_at(k, row, ch, c, tap.ih, iw, j))
                        } else {
                            let idx = self.x_at(k, row, ch, c, tap.ih, iw, 0);
                            let s = k.load(self.x, &idx);
                            let s = k.cast(s, i32t);
                            if self.noc == 1 { s } else { k.splat(s, LANES) }
                        };
                        let p = k.mul(xv, wv);
                        acc[gi] = k.add(acc[gi], p);
                    }
                    Ok::<_, LowerError>(acc)
                })
            })
        })?;
        for (gi, gr) in groups.iter().enumerate() {
            let ow = k.add_i(ow0, gr.off as i64);
            let idx: Vec<Vec<ValueId>> =
                (0..self.noc).map(|j| self.out_at(k, row, row.n, row.taps.oh, ow, j)).collect();
            let vals = self.finish(k, acc[gi], bias, &idx)?;
            for (v, at) in vals.into_iter().zip(&idx) {
                sink.emit(k, v, at)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "conv_tests.rs"]
mod tests;
