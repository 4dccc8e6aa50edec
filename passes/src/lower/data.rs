//! Lowering of the data-movement ops: `graph.broadcast`, `graph.concat`,
//! `graph.dimshuffle`, `graph.subtensor`, `graph.pad`, `layout.relayout` and
//! `layout.weight` (for a weight that is not a constant; constant weights are
//! packed at lowering time by the driver).
//!
//! Every op here moves whole elements, so every element type the reference
//! evaluator accepts is lowered (bytes are bytes: `f32`, `f16`, `bf16`, `i8`,
//! `u8`, `i32`, quantised types, …), except a constant `pad` of a quantised
//! tensor (its fill value is a quantised number). Each op is a gather: the
//! output is written in order and each output position reads the input
//! position it comes from. The last output dimension is vectorised (128-bit
//! vectors) when it maps onto a contiguous run of the input: broadcast of a
//! non-last axis, dimshuffle keeping the last axis last, subtensor with step 1
//! on the last axis, pad not touching the last axis, concat (each operand is
//! copied in contiguous runs), and relayouts whose last stored axes are both
//! channel axes (blocked ↔ blocked, blocked ↔ NHWC) with blocks divisible by
//! the lane count. Other cases use scalar loops.
//!
//! `graph.reshape` and `graph.axis_add_remove` are free views that the driver
//! handles itself; asking this module for them is an error.
//!
//! The helpers shared by the other lowerings of this family live here too
//! (attribute readers returning [`LowerError`](super::LowerError)s, row loops,
//! vector/scalar loops, layout index arithmetic).

use super::{Epilogue, KernelCx, LResult, load_broadcast, map_output};
use strata_dialects::graph::shape::py_slice;
use strata_dialects::layout::format::{WeightFormat, channel_axes, unpack_dims};
use strata_dialects::loops::{BinOp, CmpPred, KernelBuilder, lanes_for, mask_elem, vector_elem_ok};
use strata_ir::registry::attr_kind::{self, Get};
use strata_ir::{Dim, ElemType, Layout, OpId, ValueId};

/// Lowers one data-movement op (dispatching on its name).
pub fn lower_data(cx: &mut KernelCx<'_, '_, '_>, op: OpId) -> LResult<()> {
    let name = cx.k.ctx().op_name(op).to_string();
    match name.as_str() {
        "graph.broadcast" => lower_broadcast(cx, op),
        "graph.concat" => lower_concat(cx, op),
        "graph.dimshuffle" => lower_dimshuffle(cx, op),
        "graph.subtensor" => lower_subtensor(cx, op),
        "graph.pad" => lower_pad(cx, op),
        "layout.relayout" => lower_relayout(cx, op),
        "layout.weight" => lower_weight(cx, op),
        "graph.reshape" | "graph.axis_add_remove" => Err(cx.err(
            op,
            "is a view of its operand: the driver turns it into `loops.view`, it is never lowered to a kernel",
        )),
        other => Err(cx.err(op, format!("`{other}` is not a data-movement op"))),
    }
}

// ---- shared helpers -------------------------------------------------------------------

/// Attribute `key` as a list of integers.
pub(crate) fn attr_ints(cx: &KernelCx<'_, '_, '_>, op: OpId, key: &str) -> LResult<Vec<i64>> {
    let ctx = cx.k.ctx();
    ctx.op_attr(op, key)
        .and_then(|a| attr_kind::Ints::get(ctx, a))
        .ok_or_else(|| cx.err(op, format!("needs attribute `{key}` (a list of integers)")))
}

/// Attribute `key` as an integer, if present.
pub(crate) fn attr_opt_int(cx: &KernelCx<'_, '_, '_>, op: OpId, key: &str) -> LResult<Option<i64>> {
    let ctx = cx.k.ctx();
    match ctx.op_attr(op, key) {
        None => Ok(None),
        Some(a) => attr_kind::Int::get(ctx, a)
            .map(Some)
            .ok_or_else(|| cx.err(op, format!("attribute `{key}` must be an integer"))),
    }
}

/// Attribute `key` as an integer.
pub(crate) fn attr_int(cx: &KernelCx<'_, '_, '_>, op: OpId, key: &str) -> LResult<i64> {
    attr_opt_int(cx, op, key)?.ok_or_else(|| cx.err(op, format!("needs attribute `{key}` (an integer)")))
}

/// Attribute `key` as a float (integers convert).
pub(crate) fn attr_float(cx: &KernelCx<'_, '_, '_>, op: OpId, key: &str) -> LResult<f64> {
    let ctx = cx.k.ctx();
    ctx.op_attr(op, key)
        .and_then(|a| attr_kind::Float::get(ctx, a))
        .ok_or_else(|| cx.err(op, format!("needs attribute `{key}` (a float)")))
}

/// Attribute `key` as a string.
pub(crate) fn attr_str(cx: &KernelCx<'_, '_, '_>, op: OpId, key: &str) -> LResult<String> {
    let ctx = cx.k.ctx();
    ctx.op_attr(op, key)
        .and_then(|a| attr_kind::Str::get(ctx, a))
        .map(str::to_string)
        .ok_or_else(|| cx.err(op, format!("needs attribute `{key}` (a string)")))
}

/// The number of 128-bit vector lanes to move elements of `elem` with, or
/// `None` when such vectors do not exist (bool, i64, bf16, quantised types).
pub(crate) fn move_lanes(elem: ElemType) -> Option<u32> {
    vector_elem_ok(elem).then(|| lanes_for(elem))
}

/// Subscripts of the linear index `lin` over `dims` (row-major).
pub(crate) fn decompose(k: &mut KernelBuilder<'_, '_>, lin: ValueId, dims: &[usize]) -> Vec<ValueId> {
    let mut idx = vec![lin; dims.len()];
    let mut rest = lin;
    for d in (0..dims.len()).rev() {
        if d == 0 {
            idx[d] = rest;
        } else if dims[d] == 1 {
            idx[d] = k.index(0);
        } else {
            let n = k.index(dims[d] as i64);
            idx[d] = k.binary(BinOp::Rem, rest, n);
            rest = k.binary(BinOp::Div, rest, n);
        }
    }
    idx
}

/// The kernel's parallel loop over every position of `dims` (flattened, split
/// across threads); `body` gets the subscripts.
pub(crate) fn for_rows(
    k: &mut KernelBuilder<'_, '_>,
    dims: &[usize],
    body: impl FnOnce(&mut KernelBuilder<'_, '_>, &[ValueId]) -> LResult<()>,
) -> LResult<()> {
    let rows: usize = dims.iter().product();
    let dims = dims.to_vec();
    k.parallel(rows as i64, |k, row| {
        let idx = decompose(k, row, &dims);
        body(k, &idx)
    })
}

/// Loops over `0..n`: in steps of `lanes` (a vector of that many elements per
/// iteration, when given and `n` is long enough) and a scalar remainder.
pub(crate) fn for_lanes(
    k: &mut KernelBuilder<'_, '_>,
    n: usize,
    lanes: Option<u32>,
    mut body: impl FnMut(&mut KernelBuilder<'_, '_>, ValueId, Option<u32>) -> LResult<()>,
) -> LResult<()> {
    let n = n as i64;
    let mut done = 0i64;
    if let Some(l) = lanes.filter(|&l| n >= i64::from(l)) {
        let step = i64::from(l);
        let end = n - n % step;
        k.for_range(0, end, step, |k, j| body(k, j, Some(l)))?;
        done = end;
    }
    k.for_range(done, n, 1, |k, j| body(k, j, None))
}

/// A scalar load, or a vector of `lanes` elements.
pub(crate) fn load_l(k: &mut KernelBuilder<'_, '_>, buf: ValueId, idx: &[ValueId], lanes: Option<u32>) -> ValueId {
    match lanes {
        Some(l) => k.load_vec(buf, idx, l),
        None => k.load(buf, idx),
    }
}

/// Applies `epilogue` to `value` and stores it at `out[idx]`.
pub(crate) fn store_out(
    k: &mut KernelBuilder<'_, '_>,
    epilogue: &Epilogue,
    out: ValueId,
    value: ValueId,
    idx: &[ValueId],
) -> LResult<()> {
    let v = epilogue.apply(k, value, idx)?;
    k.store(v, out, idx);
    Ok(())
}

/// `min(max(i, 0), n - 1)` on indices.
pub(crate) fn clamp_index(k: &mut KernelBuilder<'_, '_>, i: ValueId, n: usize) -> ValueId {
    let zero = k.index(0);
    let hi = k.index(n as i64 - 1);
    let t = k.max(i, zero);
    k.min(t, hi)
}

/// `cond ? a : b` where `a`, `b` are scalars or vectors and `cond` is a scalar
/// `bool` (turned into an all-lanes mask for vectors).
pub(crate) fn select_any(k: &mut KernelBuilder<'_, '_>, cond: ValueId, a: ValueId, b: ValueId) -> ValueId {
    let ty = k.type_of(a);
    match strata_dialects::loops::ValueKind::of(k.ctx(), ty) {
        strata_dialects::loops::ValueKind::Vector(v) => {
            let me = k.scalar_ty(mask_elem(v.elem));
            let (on, off) = (k.constant(me, -1.0), k.constant(me, 0.0));
            let m = k.select(cond, on, off);
            let mask = k.splat(m, v.lanes);
            k.select(mask, a, b)
        }
        _ => k.select(cond, a, b),
    }
}

/// A static shape of `usize`s as fixed dims.
fn dims_of(shape: &[usize]) -> Vec<Dim> {
    shape.iter().map(|&d| Dim::Fixed(d as u64)).collect()
}

/// Normalises `axis` for `rank` (negative counts from the end).
fn norm_axis(cx: &KernelCx<'_, '_, '_>, op: OpId, axis: i64, rank: usize) -> LResult<usize> {
    strata_dialects::graph::common::norm_axis(axis, rank).map_err(|e| cx.err(op, e))
}

/// The first result of `op`.
fn result(cx: &KernelCx<'_, '_, '_>, op: OpId) -> LResult<ValueId> {
    cx.k.ctx().op(op).results.first().copied().ok_or_else(|| cx.err(op, "has no result"))
}

// ---- broadcast ------------------------------------------------------------------------

fn lower_broadcast(cx: &mut KernelCx<'_, '_, '_>, op: OpId) -> LResult<()> {
    let x = cx.operand(op, 0);
    let (in_shape, out_shape) = (cx.shape(x), cx.shape(result(cx, op)?));
    if in_shape.len() > out_shape.len() {
        return Err(cx.err(op, format!("cannot broadcast {in_shape:?} to the lower rank {out_shape:?}")));
    }
    let off = out_shape.len() - in_shape.len();
    if in_shape.iter().enumerate().any(|(d, &n)| n != 1 && n != out_shape[off + d]) {
        return Err(cx.err(op, format!("{in_shape:?} does not broadcast to {out_shape:?}")));
    }
    let lanes = move_lanes(cx.tensor(x).elem);
    let input = cx.inputs[0];
    map_output(cx, &out_shape, lanes, |k, idx, l| Ok(load_broadcast(k, input, &in_shape, &out_shape, idx, l)))
}

// ---- concat ---------------------------------------------------------------------------

fn lower_concat(cx: &mut KernelCx<'_, '_, '_>, op: OpId) -> LResult<()> {
    let operands = cx.k.ctx().op(op).operands.clone();
    let out_shape = cx.shape(result(cx, op)?);
    let rank = out_shape.len();
    if operands.is_empty() || rank == 0 {
        return Err(cx.err(op, "needs at least one operand of rank >= 1"));
    }
    let axis = norm_axis(cx, op, attr_int(cx, op, "axis")?, rank)?;
    let elem = cx.tensor(operands[0]).elem;
    let mut parts = Vec::with_capacity(operands.len()); // (buffer, size on the axis, offset)
    let mut at = 0usize;
    for (i, &v) in operands.iter().enumerate() {
        let s = cx.shape(v);
        let fits = s.len() == rank && s.iter().zip(&out_shape).enumerate().all(|(d, (a, b))| d == axis || a == b);
        if !fits || cx.tensor(v).elem != elem {
            return Err(cx.err(op, format!("operand #{i} {s:?} does not fit the result {out_shape:?} on axis {axis}")));
        }
        parts.push((cx.inputs[i], s[axis], at));
        at += s[axis];
    }
    if at != out_shape[axis] {
        return Err(
            cx.err(op, format!("the operands add up to {at} on axis {axis}, the result has {}", out_shape[axis]))
        );
    }
    let lanes = move_lanes(elem);
    let last = rank - 1;
    let (output, epilogue) = (cx.output, cx.epilogue.clone());
    // The rows: every axis except the concatenation axis and the last one; each
    // operand is then copied in contiguous runs along the last axis.
    let row_dims: Vec<usize> = (0..rank).filter(|&d| d != axis && d != last).map(|d| out_shape[d]).collect();
    let full = |row: &[ValueId], a: ValueId, j: ValueId| -> Vec<ValueId> {
        let mut rest = row.iter();
        (0..rank)
            .map(|d| {
                if d == axis {
                    a
                } else if d == last {
                    j
                } else {
                    *rest.next().expect("invariant: one row subscript per other axis")
                }
            })
            .collect()
    };
    let cols = out_shape[last];
    for_rows(cx.k, &row_dims, |k, row| {
        for &(buf, size, offset) in &parts {
            if axis == last {
                for_lanes(k, size, lanes, |k, j, l| {
                    let v = load_l(k, buf, &full(row, j, j), l);
                    let oj = k.add_i(j, offset as i64);
                    store_out(k, &epilogue, output, v, &full(row, oj, oj))
                })?;
            } else {
                k.for_range(0, size as i64, 1, |k, a| {
                    let oa = k.add_i(a, offset as i64);
                    for_lanes(k, cols, lanes, |k, j, l| {
                        let v = load_l(k, buf, &full(row, a, j), l);
                        store_out(k, &epilogue, output, v, &full(row, oa, j))
                    })
                })?;
            }
        }
        Ok(())
    })
}

// ---- dimshuffle -----------------------------------------------------------------------

fn lower_dimshuffle(cx: &mut KernelCx<'_, '_, '_>, op: OpId) -> LResult<()> {
    let x = cx.operand(op, 0);
    let (in_shape, out_shape) = (cx.shape(x), cx.shape(result(cx, op)?));
    let pattern = attr_ints(cx, op, "pattern")?;
    let mut seen = vec![false; in_shape.len()];
    let ok = pattern.len() == out_shape.len()
        && pattern.iter().zip(&out_shape).all(|(&p, &n)| match usize::try_from(p) {
            Ok(p) if p < in_shape.len() && !std::mem::replace(&mut seen[p], true) => in_shape[p] == n,
            Ok(_) => false,
            Err(_) => p == -1 && n == 1,
        })
        && seen.iter().all(|&s| s);
    if !ok {
        return Err(cx.err(op, format!("pattern {pattern:?} does not map {in_shape:?} to {out_shape:?}")));
    }
    let contiguous = !in_shape.is_empty() && pattern.last() == Some(&(in_shape.len() as i64 - 1));
    let lanes = if contiguous { move_lanes(cx.tensor(x).elem) } else { None };
    let input = cx.inputs[0];
    let in_rank = in_shape.len();
    map_output(cx, &out_shape, lanes, |k, idx, l| {
        let zero = k.index(0);
        let mut sub = vec![zero; in_rank];
        for (i, &p) in pattern.iter().enumerate() {
            if p >= 0 {
                sub[p as usize] = idx[i];
            }
        }
        Ok(load_l(k, input, &sub, l))
    })
}

// ---- subtensor ------------------------------------------------------------------------

fn lower_subtensor(cx: &mut KernelCx<'_, '_, '_>, op: OpId) -> LResult<()> {
    let x = cx.operand(op, 0);
    let (in_shape, out_shape) = (cx.shape(x), cx.shape(result(cx, op)?));
    let (axes, begin, end, step) = (
        attr_ints(cx, op, "axes")?,
        attr_ints(cx, op, "begin")?,
        attr_ints(cx, op, "end")?,
        attr_ints(cx, op, "step")?,
    );
    if begin.len() != axes.len() || end.len() != axes.len() || step.len() != axes.len() {
        return Err(cx.err(op, "attributes `axes`, `begin`, `end`, `step` must have equal lengths"));
    }
    let rank = in_shape.len();
    // Per input axis: (first index, step).
    let mut plan = vec![(0i64, 1i64); rank];
    let mut want = in_shape.clone();
    let mut seen = vec![false; rank];
    for (k, &a) in axes.iter().enumerate() {
        let a = norm_axis(cx, op, a, rank)?;
        if std::mem::replace(&mut seen[a], true) || step[k] == 0 {
            return Err(cx.err(op, format!("axis {a} is sliced twice or with step 0")));
        }
        let (first, len) = py_slice(begin[k], end[k], step[k], in_shape[a] as u64);
        let first = i64::try_from(first).map_err(|_| cx.err(op, "a slice start does not fit an index"))?;
        plan[a] = (first, step[k]);
        want[a] = len as usize;
    }
    if want != out_shape {
        return Err(cx.err(op, format!("slicing {in_shape:?} gives {want:?}, but the result is {out_shape:?}")));
    }
    let contiguous = plan.last().is_some_and(|&(_, s)| s == 1);
    let lanes = if contiguous { move_lanes(cx.tensor(x).elem) } else { None };
    let input = cx.inputs[0];
    map_output(cx, &out_shape, lanes, |k, idx, l| {
        let sub: Vec<ValueId> = idx.iter().zip(&plan).map(|(&i, &(first, s))| k.affine(&[(i, s)], first)).collect();
        Ok(load_l(k, input, &sub, l))
    })
}

// ---- pad ------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum PadMode {
    Constant,
    Edge,
    Reflect,
}

fn lower_pad(cx: &mut KernelCx<'_, '_, '_>, op: OpId) -> LResult<()> {
    let x = cx.operand(op, 0);
    let (in_shape, out_shape) = (cx.shape(x), cx.shape(result(cx, op)?));
    let (before, after) = (attr_ints(cx, op, "before")?, attr_ints(cx, op, "after")?);
    let rank = in_shape.len();
    let ok = before.len() == rank
        && after.len() == rank
        && out_shape.len() == rank
        && (0..rank).all(|a| {
            before[a] >= 0 && after[a] >= 0 && out_shape[a] as i64 == in_shape[a] as i64 + before[a] + after[a]
        });
    if !ok {
        return Err(cx.err(op, format!("pads {before:?} / {after:?} do not turn {in_shape:?} into {out_shape:?}")));
    }
    let mode = match attr_str(cx, op, "mode")?.as_str() {
        "constant" => PadMode::Constant,
        "edge" => PadMode::Edge,
        "reflect" => PadMode::Reflect,
        other => return Err(cx.err(op, format!("unknown pad mode `{other}` (expected constant, edge or reflect)"))),
    };
    let elem = cx.tensor(x).elem;
    let value = attr_float(cx, op, "value")?;
    if mode == PadMode::Constant && elem.is_quantized() {
        return Err(cx.err(op, format!("constant padding of a quantised tensor ({elem}) is not lowered yet")));
    }
    let padded: Vec<usize> = (0..rank).filter(|&a| before[a] > 0 || after[a] > 0).collect();
    for &a in &padded {
        let n = in_shape[a] as i64;
        let bad = match mode {
            PadMode::Edge => n == 0,
            PadMode::Reflect => before[a] >= n || after[a] >= n,
            PadMode::Constant => false,
        };
        if bad {
            return Err(
                cx.err(op, format!("cannot pad axis {a} of size {n} by {} / {} in this mode", before[a], after[a]))
            );
        }
    }
    let contiguous = rank > 0 && !padded.contains(&(rank - 1));
    let lanes = if contiguous { move_lanes(elem) } else { None };
    let input = cx.inputs[0];
    // An empty input padded with a constant is all fill.
    let all_fill = mode == PadMode::Constant && in_shape.contains(&0);
    map_output(cx, &out_shape, lanes, |k, idx, l| {
        let scalar = k.scalar_ty(elem);
        let fill_ty = match l {
            Some(l) => k.vector_ty(elem, l),
            None => scalar,
        };
        let fill = k.constant(fill_ty, value);
        if all_fill {
            return Ok(fill);
        }
        let mut sub = idx.to_vec();
        let mut conds = Vec::new();
        for &a in &padded {
            let n = in_shape[a];
            let c = k.add_i(idx[a], -before[a]);
            sub[a] = match mode {
                PadMode::Edge => clamp_index(k, c, n),
                PadMode::Reflect => {
                    let zero = k.index(0);
                    let neg = k.cmp(CmpPred::Lt, c, zero);
                    let m = k.sub(zero, c);
                    let c1 = k.select(neg, m, c);
                    let top = k.index(n as i64 - 1);
                    let high = k.cmp(CmpPred::Gt, c1, top);
                    let r = k.affine(&[(c1, -1)], 2 * (n as i64 - 1));
                    k.select(high, r, c1)
                }
                PadMode::Constant => {
                    let zero = k.index(0);
                    let nn = k.index(n as i64);
                    conds.push(k.cmp(CmpPred::Ge, c, zero));
                    conds.push(k.cmp(CmpPred::Lt, c, nn));
                    clamp_index(k, c, n)
                }
            };
        }
        let mut v = load_l(k, input, &sub, l);
        for cond in conds {
            v = select_any(k, cond, v, fill);
        }
        Ok(v)
    })
}

// ---- relayout -------------------------------------------------------------------------

/// A channel subscript: a plain index, or (block, in-block) of a blocked layout.
#[derive(Clone, Copy)]
enum Chan {
    Flat(ValueId),
    Blocked { block: ValueId, lane: ValueId, p: usize },
}

impl Chan {
    fn flat(self, k: &mut KernelBuilder<'_, '_>) -> ValueId {
        match self {
            Chan::Flat(c) => c,
            Chan::Blocked { block, lane, p } => k.affine(&[(block, p as i64), (lane, 1)], 0),
        }
    }

    /// `(c / p, c % p)`.
    fn split(self, k: &mut KernelBuilder<'_, '_>, p: usize) -> (ValueId, ValueId) {
        if let Chan::Blocked { block, lane, p: q } = self
            && q == p
        {
            return (block, lane);
        }
        let c = self.flat(k);
        let pp = k.index(p as i64);
        (k.binary(BinOp::Div, c, pp), k.binary(BinOp::Rem, c, pp))
    }
}

/// The logical `(n, c, h, w)` subscripts of stored subscripts `s` in layout `l`
/// (the inverse of the table in `layout::format`).
fn to_logical(l: Layout, s: &[ValueId]) -> (ValueId, Chan, ValueId, ValueId) {
    let Some(p) = l.block() else {
        return match l {
            Layout::Nhwc => (s[0], Chan::Flat(s[3]), s[1], s[2]),
            _ => (s[0], Chan::Flat(s[1]), s[2], s[3]),
        };
    };
    let (cb, ci) = channel_axes(l).expect("invariant: a blocked layout has channel axes");
    let c = Chan::Blocked { block: s[cb], lane: s[ci], p: p as usize };
    match l {
        Layout::Chwn4 => (s[3], c, s[1], s[2]),
        Layout::Nhwcd4 => (s[0], c, s[1], s[3]),
        _ => (s[0], c, s[2], s[3]),
    }
}

/// The stored subscripts in layout `l` of logical `(n, c, h, w)`.
fn to_stored(
    k: &mut KernelBuilder<'_, '_>,
    l: Layout,
    (n, c, h, w): (ValueId, Chan, ValueId, ValueId),
) -> Vec<ValueId> {
    let Some(p) = l.block() else {
        let c = c.flat(k);
        return match l {
            Layout::Nhwc => vec![n, h, w, c],
            _ => vec![n, c, h, w],
        };
    };
    let (cb, ci) = c.split(k, p as usize);
    match l {
        Layout::Chwn4 => vec![cb, h, w, n, ci],
        Layout::Nhwcd4 => vec![n, h, cb, w, ci],
        _ => vec![n, cb, h, w, ci],
    }
}

fn lower_relayout(cx: &mut KernelCx<'_, '_, '_>, op: OpId) -> LResult<()> {
    let x = cx.operand(op, 0);
    let out = result(cx, op)?;
    let (xt, ot) = (cx.tensor(x), cx.tensor(out));
    let (from, to) = (xt.layout, ot.layout);
    let (in_shape, out_shape) = (cx.shape(x), cx.shape(out));
    let logical_in = unpack_dims(from, &dims_of(&in_shape)).map_err(|e| cx.err(op, format!("operand: {e}")))?;
    let logical_out = unpack_dims(to, &dims_of(&out_shape)).map_err(|e| cx.err(op, format!("result: {e}")))?;
    if logical_in != logical_out || xt.elem != ot.elem {
        return Err(cx.err(op, format!("relayout #{from} -> #{to} changes the logical tensor")));
    }
    // Vectorise when the last stored axes of both sides are channel axes and a
    // run of `lanes` channels starting at a multiple of `lanes` stays inside one
    // block of each side (or both are plain NCHW, a copy).
    let lanes = move_lanes(xt.elem).filter(|&l| {
        let channel_last = |lay: Layout| lay != Layout::Nchw;
        let fits = |lay: Layout| lay.block().is_none_or(|p| p % u64::from(l) == 0);
        (from == Layout::Nchw && to == Layout::Nchw)
            || (channel_last(from) && channel_last(to) && fits(from) && fits(to))
    });
    let input = cx.inputs[0];
    map_output(cx, &out_shape, lanes, |k, idx, l| {
        let logical = to_logical(to, idx);
        let sub = to_stored(k, from, logical);
        Ok(load_l(k, input, &sub, l))
    })
}

// ---- weight ---------------------------------------------------------------------------

fn lower_weight(cx: &mut KernelCx<'_, '_, '_>, op: OpId) -> LResult<()> {
    let w = cx.operand(op, 0);
    let out = result(cx, op)?;
    let format = WeightFormat::parse(&attr_str(cx, op, "format")?).map_err(|e| cx.err(op, e))?;
    let block = attr_int(cx, op, "block")?;
    let group = attr_opt_int(cx, op, "group")?.unwrap_or(1);
    let (in_shape, out_shape) = (cx.shape(w), cx.shape(out));
    let logical: [usize; 4] = in_shape
        .as_slice()
        .try_into()
        .map_err(|_| cx.err(op, format!("the weight must be OIHW (rank 4), has shape {in_shape:?}")))?;
    if block < 1 || group < 1 {
        return Err(cx.err(op, format!("block {block} and group {group} must be at least 1")));
    }
    let (p, g) = (block as u64, group as u64);
    let packed = format.pack_dims(p, g, logical.map(|d| d as u64)).map_err(|e| cx.err(op, e))?;
    if packed.iter().map(|&d| d as usize).collect::<Vec<_>>() != out_shape {
        return Err(
            cx.err(op, format!("packing {in_shape:?} as `{}` gives {packed:?}, not {out_shape:?}", format.name()))
        );
    }
    let (p, ocpg) = (p as i64, (logical[0] as u64 / g) as i64);
    let input = cx.inputs[0];
    map_output(cx, &out_shape, None, |k, s, _| {
        let f = |k: &mut KernelBuilder<'_, '_>, hi: ValueId, lo: ValueId, m: i64| k.affine(&[(hi, m), (lo, 1)], 0);
        // The logical (oc, ic within the group, kh, kw) of packed position `s`
        // (the inverse of the format's packing, see `layout::format`).
        let [oc, ic, kh, kw] = match format {
            WeightFormat::Dense => [f(k, s[0], s[5], p), f(k, s[1], s[4], p), s[2], s[3]],
            WeightFormat::Dot => [f(k, s[0], s[4], p), f(k, s[1], s[5], p), s[2], s[3]],
            WeightFormat::Group | WeightFormat::GroupDot => {
                let (o_lane, i_lane) = if format == WeightFormat::Group { (s[6], s[5]) } else { (s[5], s[6]) };
                let o = f(k, s[1], o_lane, p);
                [f(k, s[0], o, ocpg), f(k, s[2], i_lane, p), s[3], s[4]]
            }
            WeightFormat::ChannelWise | WeightFormat::Nchw4ChannelWise => {
                let zero = k.index(0);
                [f(k, s[0], s[5], p), zero, s[3], s[4]]
            }
            WeightFormat::Hybrid | WeightFormat::Nhwcd4 => [f(k, s[0], s[4], p), s[3], s[1], s[2]],
            WeightFormat::Nchw4 | WeightFormat::Nchw32 => [s[0], f(k, s[1], s[4], p), s[2], s[3]],
            WeightFormat::Chwn4 => [s[3], f(k, s[0], s[4], p), s[1], s[2]],
            WeightFormat::Nchw4Group | WeightFormat::Nchw32Group => {
                [f(k, s[0], s[1], ocpg), f(k, s[2], s[5], p), s[3], s[4]]
            }
            WeightFormat::Chwn4Group => [f(k, s[0], s[4], ocpg), f(k, s[1], s[5], p), s[2], s[3]],
        };
        Ok(k.load(input, &[oc, ic, kh, kw]))
    })
}

#[cfg(test)]
#[path = "data_tests.rs"]
mod tests;
