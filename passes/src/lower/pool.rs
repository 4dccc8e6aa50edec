//! Lowering of spatial pooling: `graph.pooling` / `layout.pooling` (max,
//! average, average_count_exclude_padding), `graph.global_avg_pool` /
//! `layout.global_avg_pool` and `graph.adaptive_pooling` /
//! `layout.adaptive_pooling` (max, average), on f32 (and qs8 max pooling).
//!
//! The ops only mix the H and W axes, so the lowering works on stored shapes:
//! every other stored axis (N, the channel block, the in-block channel, …)
//! passes through, and H/W are found with
//! [`strata_dialects::layout::format::spatial_axes`]. Each output element's
//! window along H and W is `[lo, hi)`, clipped to the input (padding is never
//! read): `max(o·s - p, 0) .. min(o·s - p + k, size)` for window pooling,
//! `floor(o·size/out) .. ceil((o+1)·size/out)` for adaptive pooling (and the
//! whole plane for global pooling). `max` starts from -inf; `average` divides
//! by the full window `kh·kw` (padding counts as zeros), the count-excluding
//! and adaptive averages by `(hi_h - lo_h)·(hi_w - lo_w)`, as the reference does.
//!
//! Two kernel shapes, each with one `loops.parallel` and every result stored
//! through [`KernelCx::emit`] (so a fused elementwise epilogue applies):
//!
//! - **last axis not spatial** (blocked layouts `[N, C/P, H, W, P]`, `#chwn4`,
//!   `#nhwcd4`, NHWC): parallel over the leading axes, a loop over the second
//!   to last; each output pixel is `P/4` vectors (up to 8 carried through the
//!   window loops at once) plus scalars for a remainder of the last axis;
//! - **last axis W** (NCHW): parallel over `(n, c, oh)`; output columns whose
//!   window lies inside the row are computed 4 at a time when the W stride is 1
//!   (vector loads at `ow - p + kw`), the others one by one; when the window
//!   is the whole row (global pooling, adaptive output width 1), the row is
//!   reduced with vectors along W, `reduce_lanes` and a scalar tail.
//!
//! `qs8` max pooling (the only quantised pooling the reference defines) runs
//! the same loops on scalars of the storage integers — vectors of quantised
//! elements do not exist in the loops dialect — starting from -128; it is
//! exact (the maximum of the integers is the requantised maximum of the reals).
//!
//! Refused with an error: element types other than f32 and qs8 (f16, bf16),
//! averages of qs8, unknown modes, attributes or shapes that disagree with the
//! reference's geometry.

use super::{KernelCx, LResult, LowerError};
use strata_dialects::graph::pool::PoolMode;
use strata_dialects::layout::format::spatial_axes;
use strata_dialects::loops::{BinOp, KernelBuilder, LaneReduce};
use strata_ir::{Context, ElemType, OpId, Ty, ValueId, attr_kind::Get};

/// f32 lanes in a 128-bit vector.
const LANES: u32 = 4;
const L: usize = LANES as usize;
/// The most vectors carried through a window loop at once.
const MAX_CARRIED: usize = 8;

/// The windows along one spatial axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Win {
    /// Window `k`, stride `s`, padding `p` over an input of `size`.
    Fixed { k: i64, s: i64, p: i64, size: i64 },
    /// `out` adaptive windows over an input of `size`.
    Adaptive { size: i64, out: i64 },
}

impl Win {
    /// The clipped input range `[lo, hi)` of output position `o`.
    fn bounds(self, k: &mut KernelBuilder<'_, '_>, o: ValueId) -> (ValueId, ValueId) {
        match self {
            Win::Fixed { k: kw, s, p, size } => {
                let start = k.affine(&[(o, s)], -p);
                let zero = k.index(0);
                let lo = k.binary(BinOp::Max, start, zero);
                let end = k.add_i(start, kw);
                let sz = k.index(size);
                (lo, k.binary(BinOp::Min, end, sz))
            }
            Win::Adaptive { size, out } => {
                let outv = k.index(out);
                let a = k.mul_i(o, size);
                let lo = k.binary(BinOp::Div, a, outv);
                let b = k.affine(&[(o, size)], size + out - 1);
                (lo, k.binary(BinOp::Div, b, outv))
            }
        }
    }

    /// The clipped input range of output position `o`, at build time.
    fn static_bounds(self, o: i64) -> (i64, i64) {
        match self {
            Win::Fixed { k, s, p, size } => ((o * s - p).max(0), (o * s - p + k).min(size)),
            Win::Adaptive { size, out } => (o * size / out, ((o + 1) * size + out - 1) / out),
        }
    }

    /// The number of output positions.
    fn out_len(self) -> i64 {
        match self {
            Win::Fixed { k, s, p, size } => (size + 2 * p - k) / s + 1,
            Win::Adaptive { out, .. } => out,
        }
    }
}

/// How a window's values become the result.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Red {
    /// The maximum.
    Max,
    /// The sum divided by a constant (the full window, padding included).
    AvgFull(f64),
    /// The sum divided by the number of in-bounds elements.
    AvgCount,
}

impl Red {
    fn init(self, k: &mut KernelBuilder<'_, '_>, ty: Ty) -> ValueId {
        let int = strata_dialects::loops::ValueKind::of(k.ctx(), ty).elem().is_some_and(|e| !e.is_float());
        // Integer (qs8) maxima start from the type's minimum.
        let lowest = if int { f64::from(i8::MIN) } else { f64::NEG_INFINITY };
        k.constant(ty, if self == Red::Max { lowest } else { 0.0 })
    }

    fn combine(self, k: &mut KernelBuilder<'_, '_>, acc: ValueId, v: ValueId) -> ValueId {
        if self == Red::Max { k.max(acc, v) } else { k.add(acc, v) }
    }

    /// The result from the combined `acc`; `count` gives the in-bounds count
    /// (an index) for [`Red::AvgCount`].
    fn finish(
        self,
        k: &mut KernelBuilder<'_, '_>,
        acc: ValueId,
        count: impl FnOnce(&mut KernelBuilder<'_, '_>) -> ValueId,
    ) -> ValueId {
        let ty = k.type_of(acc);
        match self {
            Red::Max => acc,
            Red::AvgFull(d) => {
                let d = k.constant(ty, d);
                k.binary(BinOp::Div, acc, d)
            }
            Red::AvgCount => {
                let c = count(k);
                let f = k.scalar_ty(ElemType::F32);
                let c = k.cast(c, f);
                let c = if ty == f { c } else { k.splat(c, LANES) };
                k.binary(BinOp::Div, acc, c)
            }
        }
    }
}

/// A checked pooling: stored shapes, spatial axes, windows and reduction.
#[derive(Clone, Debug)]
struct Pool {
    x: ValueId,
    /// The element type (f32, or qs8 for max pooling: scalars only).
    elem: ElemType,
    in_shape: Vec<usize>,
    out_shape: Vec<usize>,
    ha: usize,
    wa: usize,
    wins: [Win; 2],
    red: Red,
}

/// Reads attribute `key` of `op` with kind `K`.
fn attr<'c, K: Get>(ctx: &'c Context, op: OpId, key: &str) -> Option<K::Out<'c>> {
    ctx.op_attr(op, key).and_then(|a| K::get(ctx, a))
}

/// Lowers the pooling ops (see the module docs).
pub fn lower_pool(cx: &mut KernelCx<'_, '_, '_>, op: OpId) -> LResult<()> {
    let name = cx.k.ctx().op_name(op).to_string();
    let data = cx.k.ctx().op(op);
    if data.operands.len() != 1 || data.results.len() != 1 || cx.inputs.len() != 1 {
        return Err(cx.err(op, "expects one operand and one result"));
    }
    let (xv, ov) = (data.operands[0], data.results[0]);
    let (xt, ot) = (cx.tensor(xv), cx.tensor(ov));
    let qs8 = matches!(xt.elem, ElemType::QS8(_));
    if (xt.elem != ElemType::F32 && !qs8) || ot.elem != xt.elem {
        return Err(cx.err(op, format!("pooling of {} to {} is not lowered (f32; qs8 max pooling)", xt.elem, ot.elem)));
    }
    if xt.layout != ot.layout {
        return Err(cx.err(op, format!("the result layout #{} differs from the input's #{}", ot.layout, xt.layout)));
    }
    let rank = if xt.layout.block().is_some() { 5 } else { 4 };
    let (in_shape, out_shape) = (cx.shape(xv), cx.shape(ov));
    if in_shape.len() != rank || out_shape.len() != rank {
        return Err(cx.err(op, format!("a #{} activation must have rank {rank}", xt.layout)));
    }
    let (ha, wa) = spatial_axes(xt.layout);
    let size = [in_shape[ha] as i64, in_shape[wa] as i64];
    let kind = name.split('.').nth(1).unwrap_or_default();
    let ctx = cx.k.ctx();
    let (red, wins) = match kind {
        "pooling" => {
            let mode = attr::<strata_ir::attr_kind::Str>(ctx, op, "mode")
                .ok_or_else(|| cx.err(op, "attribute `mode` (a string) is missing"))?;
            let all = [PoolMode::Max, PoolMode::Average, PoolMode::AverageCountExcludePadding];
            let mode = PoolMode::parse(mode, &all).map_err(|m| cx.err(op, m))?;
            let pair = |key: &str, min: i64| -> LResult<[i64; 2]> {
                match attr::<strata_ir::attr_kind::Ints>(ctx, op, key).as_deref() {
                    Some(&[a, b]) if a >= min && b >= min => Ok([a, b]),
                    _ => Err(cx.err(op, format!("attribute `{key}` must be two integers ≥ {min}"))),
                }
            };
            let (window, stride, pad) = (pair("window", 1)?, pair("stride", 1)?, pair("pad", 0)?);
            const LIMIT: i64 = 1 << 31;
            if window.iter().chain(&stride).chain(&pad).any(|&v| v >= LIMIT) {
                return Err(cx.err(
                    op,
                    format!("window {window:?}, stride {stride:?} or padding {pad:?} is too large to lower (≥ 2^31)"),
                ));
            }
            let wins = [0, 1].map(|i| Win::Fixed { k: window[i], s: stride[i], p: pad[i], size: size[i] });
            for i in 0..2 {
                if pad[i] >= window[i] || size[i] + 2 * pad[i] < window[i] {
                    return Err(cx.err(
                        op,
                        format!("window {window:?} with padding {pad:?} does not fit the input {in_shape:?}"),
                    ));
                }
            }
            let red = match mode {
                PoolMode::Max => Red::Max,
                PoolMode::Average => Red::AvgFull(window[0] as f64 * window[1] as f64),
                PoolMode::AverageCountExcludePadding => Red::AvgCount,
            };
            (red, wins)
        }
        "global_avg_pool" => {
            (Red::AvgFull(size[0] as f64 * size[1] as f64), size.map(|s| Win::Adaptive { size: s, out: 1 }))
        }
        "adaptive_pooling" => {
            let mode = attr::<strata_ir::attr_kind::Str>(ctx, op, "mode")
                .ok_or_else(|| cx.err(op, "attribute `mode` (a string) is missing"))?;
            let mode = PoolMode::parse(mode, &[PoolMode::Max, PoolMode::Average]).map_err(|m| cx.err(op, m))?;
            let out = [out_shape[ha] as i64, out_shape[wa] as i64];
            let red = if mode == PoolMode::Max { Red::Max } else { Red::AvgCount };
            (red, [0, 1].map(|i| Win::Adaptive { size: size[i], out: out[i] }))
        }
        _ => return Err(cx.err(op, "is not a pooling op")),
    };
    let mut want = in_shape.clone();
    want[ha] = wins[0].out_len().max(0) as usize;
    want[wa] = wins[1].out_len().max(0) as usize;
    if want != out_shape {
        return Err(cx.err(op, format!("the result shape {out_shape:?} should be {want:?}")));
    }
    if size.contains(&0) && !out_shape.contains(&0) {
        return Err(cx.err(op, format!("the input {in_shape:?} has an empty spatial extent; nothing to pool")));
    }
    if qs8 && red != Red::Max {
        return Err(cx.err(op, format!("only max pooling is defined on {} (the reference refuses averages)", xt.elem)));
    }
    if out_shape.contains(&0) {
        return Ok(());
    }
    let pool = Pool { x: cx.inputs[0], elem: xt.elem, in_shape, out_shape, ha, wa, wins, red };
    if wa == rank - 1 { w_last(cx, &pool) } else { vec_last(cx, &pool) }
}

/// Splits the parallel index `p` into subscripts over `counts` (row-major).
fn split(k: &mut KernelBuilder<'_, '_>, p: ValueId, counts: &[usize]) -> Vec<ValueId> {
    let mut out = vec![p; counts.len()];
    let mut rest = p;
    let first_live = counts.iter().position(|&c| c > 1);
    for d in (0..counts.len()).rev() {
        if counts[d] <= 1 {
            out[d] = k.index(0);
        } else if Some(d) == first_live {
            out[d] = rest;
        } else {
            let c = k.index(counts[d] as i64);
            out[d] = k.binary(BinOp::Rem, rest, c);
            rest = k.binary(BinOp::Div, rest, c);
        }
    }
    out
}

/// Runs `body` in one parallel loop over the leading `outer` dimensions
/// (subscripts passed to `body`).
fn parallel_rows(
    k: &mut KernelBuilder<'_, '_>,
    outer: &[usize],
    body: impl FnOnce(&mut KernelBuilder<'_, '_>, Vec<ValueId>) -> LResult<()>,
) -> LResult<()> {
    let rows: usize = outer.iter().product();
    k.parallel(rows as i64, |k, p| {
        let idx = split(k, p, outer);
        body(k, idx)
    })
}

/// The window loops over `[lo_h, hi_h) × [lo_w, hi_w)` carrying `inits`;
/// `step(k, ih, iw, accs)` gives the next values.
fn window_loops(
    k: &mut KernelBuilder<'_, '_>,
    (lo_h, hi_h): (ValueId, ValueId),
    (lo_w, hi_w): (ValueId, ValueId),
    inits: &[ValueId],
    mut step: impl FnMut(&mut KernelBuilder<'_, '_>, ValueId, ValueId, &[ValueId]) -> Vec<ValueId>,
) -> LResult<Vec<ValueId>> {
    let one = k.index(1);
    k.for_loop(lo_h, hi_h, one, inits, None, |k, ih, accs| {
        k.for_loop(lo_w, hi_w, one, accs, None, |k, iw, accs| Ok::<_, LowerError>(step(k, ih, iw, accs)))
    })
}

/// `(hi_h - lo_h) · (hi_w - lo_w)` as an index.
fn area(k: &mut KernelBuilder<'_, '_>, h: (ValueId, ValueId), w: (ValueId, ValueId)) -> ValueId {
    let dh = k.sub(h.1, h.0);
    let dw = k.sub(w.1, w.0);
    k.mul(dh, dw)
}

/// Blocked / channel-last layouts: the last axis is not spatial and is vectorised.
fn vec_last(cx: &mut KernelCx<'_, '_, '_>, g: &Pool) -> LResult<()> {
    let r = g.out_shape.len();
    let last = g.out_shape[r - 1];
    let inner = g.out_shape[r - 2] as i64;
    // The last axis in positions of 4 lanes, then single lanes.
    let vecs = if g.elem == ElemType::F32 { last / L } else { 0 };
    let positions: Vec<(usize, Option<u32>)> =
        (0..vecs).map(|v| (v * L, Some(LANES))).chain((vecs * L..last).map(|j| (j, None))).collect();
    let (output, epilogue) = (cx.output, cx.epilogue.clone());
    parallel_rows(cx.k, &g.out_shape[..r - 2], |k, prefix| {
        // Bounds along an axis among the leading ones are computed once per row.
        let hoisted = |k: &mut KernelBuilder<'_, '_>, i: usize, axis: usize| {
            (axis < r - 2).then(|| g.wins[i].bounds(k, prefix[axis]))
        };
        let (hb0, wb0) = (hoisted(k, 0, g.ha), hoisted(k, 1, g.wa));
        k.for_range(0, inner, 1, |k, q| {
            let mut idx = prefix.clone();
            idx.push(q);
            let hb = hb0.unwrap_or_else(|| g.wins[0].bounds(k, idx[g.ha]));
            let wb = wb0.unwrap_or_else(|| g.wins[1].bounds(k, idx[g.wa]));
            for chunk in positions.chunks(MAX_CARRIED) {
                let inits: Vec<ValueId> = chunk
                    .iter()
                    .map(|&(_, l)| {
                        let ty = match l {
                            Some(l) => k.vector_ty(g.elem, l),
                            None => k.scalar_ty(g.elem),
                        };
                        g.red.init(k, ty)
                    })
                    .collect();
                let accs = window_loops(k, hb, wb, &inits, |k, ih, iw, accs| {
                    let mut at = idx.clone();
                    at[g.ha] = ih;
                    at[g.wa] = iw;
                    at.push(ih); // placeholder for the last subscript
                    chunk
                        .iter()
                        .zip(accs)
                        .map(|(&(j, l), &acc)| {
                            at[r - 1] = k.index(j as i64);
                            let v = match l {
                                Some(l) => k.load_vec(g.x, &at, l),
                                None => k.load(g.x, &at),
                            };
                            g.red.combine(k, acc, v)
                        })
                        .collect()
                })?;
                for (&(j, _), &acc) in chunk.iter().zip(&accs) {
                    let v = g.red.finish(k, acc, |k| area(k, hb, wb));
                    let mut at = idx.clone();
                    at.push(k.index(j as i64));
                    epilogue.store(k, output, v, &at)?;
                }
            }
            Ok(())
        })
    })
}

/// NCHW: the last axis is W.
fn w_last(cx: &mut KernelCx<'_, '_, '_>, g: &Pool) -> LResult<()> {
    let r = g.out_shape.len();
    let ow = g.out_shape[r - 1] as i64;
    let w = g.in_shape[r - 1] as i64;
    let (output, epilogue) = (cx.output, cx.epilogue.clone());
    let vectors = g.elem == ElemType::F32;
    let whole_row = vectors && ow == 1 && g.wins[1].static_bounds(0) == (0, w);
    // Output columns computed 4 at a time: windows inside the row, stride 1.
    let vec_cols = match g.wins[1] {
        Win::Fixed { k, s: 1, p, size } if vectors && !whole_row => {
            let (a, b) = (p, size + p - k + 1);
            (b - a >= L as i64).then(|| (a, a + (b - a) / L as i64 * L as i64, k, p))
        }
        _ => None,
    };
    parallel_rows(cx.k, &g.out_shape[..r - 1], |k, prefix| {
        let hb = g.wins[0].bounds(k, prefix[g.ha]);
        let f32s = k.scalar_ty(g.elem);
        let f32v = k.vector_ty(ElemType::F32, LANES);
        let at = |ih: ValueId, iw: ValueId| {
            let mut at = prefix.clone();
            at[g.ha] = ih;
            at.push(iw);
            at
        };
        let out_at = |col: ValueId| {
            let mut v = prefix.clone();
            v.push(col);
            v
        };
        if whole_row {
            // One output per row: reduce the whole row with vectors along W.
            let w4 = w - w % L as i64;
            let vinit = g.red.init(k, f32v);
            let sinit = g.red.init(k, f32s);
            let one = k.index(1);
            let accs = k.for_loop(hb.0, hb.1, one, &[vinit, sinit], None, |k, ih, accs| {
                let (z, e4, st) = (k.index(0), k.index(w4), k.index(L as i64));
                let v = k.for_loop(z, e4, st, &accs[..1], None, |k, iw, a| {
                    let x = k.load_vec(g.x, &at(ih, iw), LANES);
                    Ok::<_, LowerError>(vec![g.red.combine(k, a[0], x)])
                })?;
                let (b4, e) = (k.index(w4), k.index(w));
                let s = k.for_loop(b4, e, one, &accs[1..], None, |k, iw, a| {
                    let x = k.load(g.x, &at(ih, iw));
                    Ok::<_, LowerError>(vec![g.red.combine(k, a[0], x)])
                })?;
                Ok::<_, LowerError>(vec![v[0], s[0]])
            })?;
            let lanes = if g.red == Red::Max {
                k.reduce_lanes(LaneReduce::Max, accs[0])
            } else {
                k.reduce_lanes(LaneReduce::Add, accs[0])
            };
            let acc = g.red.combine(k, lanes, accs[1]);
            let wb = (k.index(0), k.index(w));
            let v = g.red.finish(k, acc, |k| area(k, hb, wb));
            let z = k.index(0);
            let o = out_at(z);
            return epilogue.store(k, output, v, &o);
        }
        let scalar_cols = |k: &mut KernelBuilder<'_, '_>, from: i64, to: i64| -> LResult<()> {
            k.for_range(from, to, 1, |k, col| {
                let wb = g.wins[1].bounds(k, col);
                let init = g.red.init(k, f32s);
                let acc = window_loops(k, hb, wb, &[init], |k, ih, iw, accs| {
                    let x = k.load(g.x, &at(ih, iw));
                    vec![g.red.combine(k, accs[0], x)]
                })?[0];
                let v = g.red.finish(k, acc, |k| area(k, hb, wb));
                let o = out_at(col);
                epilogue.store(k, output, v, &o)
            })
        };
        let Some((a, b, kw, p)) = vec_cols else {
            return scalar_cols(k, 0, ow);
        };
        scalar_cols(k, 0, a)?;
        k.for_range(a, b, L as i64, |k, col| {
            let init = g.red.init(k, f32v);
            let one = k.index(1);
            let start = k.add_i(col, -p);
            let acc = k.for_loop(hb.0, hb.1, one, &[init], None, |k, ih, accs| {
                let mut acc = accs[0];
                for t in 0..kw {
                    let iw = k.add_i(start, t);
                    let x = k.load_vec(g.x, &at(ih, iw), LANES);
                    acc = g.red.combine(k, acc, x);
                }
                Ok::<_, LowerError>(vec![acc])
            })?[0];
            let v = g.red.finish(k, acc, |k| {
                let dh = k.sub(hb.1, hb.0);
                k.mul_i(dh, kw)
            });
            let o = out_at(col);
            epilogue.store(k, output, v, &o)
        })?;
        scalar_cols(k, b, ow)
    })
}

#[cfg(test)]
#[path = "pool_tests.rs"]
mod tests;
