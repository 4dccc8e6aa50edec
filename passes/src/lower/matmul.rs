//! Lowering of `graph.matmul` and `graph.batched_matmul` (f32).
//!
//! The output `[B?, M, N]` is cut into register blocks of up to `MR` rows by
//! a few columns; one `loops.parallel` runs over `batch × column blocks × row
//! blocks` (row blocks fastest, so a thread's consecutive blocks reuse the same
//! panel of `b`). A block's accumulators are carried through the `K` loop so
//! they stay in registers, and each result goes through [`KernelCx::emit`], so
//! a fused bias-add / relu epilogue applies. Edge blocks are not special code:
//! the last row (column) block starts at `M - MR` (`N - cols`) and recomputes a
//! few elements of its neighbour, which stores the same values. (This relies
//! on the output not aliasing an input or an epilogue operand, which holds
//! while every kernel writes a fresh `loops.alloc`; an in-place memory plan
//! would have to exclude matmul kernels.)
//!
//! Two forms, by how the operands are stored:
//!
//! - **broadcast** (`transpose_b = false`, or `K < 4`): vectors of 4 along `N`.
//!   Per `k`: one scalar of `a` per row, splat, times `NR` vectors of row `k` of
//!   `b` (contiguous; gathered lane by lane when `b` is stored transposed and
//!   `a` too), `MR × NR` vector FMAs. `N < 4` runs the same code on scalars.
//! - **GEMV** (`M ≤ 4`, `transpose_b = false`, `N % 4 = 0`, `K ≥ 16 / M`,
//!   e.g. `[1, 1024] × [1024, 1024]`): parallel over chunks of up to 1024
//!   columns; each streams `b` through its chunk `8 / M` rows per pass (those
//!   elements of `a` splat once per pass; per output vector `8 / M` sequential
//!   row streams of `b`, 8 FMAs, and a load and store of each of the `M`
//!   running sums, kept in the output and so in L1). Blocking over columns
//!   with accumulators carried over all of `K` instead reads `b` in short
//!   pieces of rows a page apart, which the hardware prefetchers do not
//!   follow: 3× slower on that product. The running sums in the output also
//!   rely on the output not aliasing an input.
//! - **dot** (`transpose_b = true`, `transpose_a = false`, `K ≥ 4`): both
//!   operands are contiguous along `K`, so each output element is a dot
//!   product: vector partial sums over `K`, `reduce_lanes`, a scalar tail; four
//!   columns' sums are packed into one vector for the epilogue and the store.
//!   Blocks are up to 2 rows × 4 columns (a `[1, K] × [N, K]ᵀ` GEMV, as
//!   `nn::Linear` emits it, is parallel over `N / 4` column blocks).
//!
//! Refused with an error: element types other than f32 (f16, bf16 operands),
//! operand/result shapes that disagree with the transpose flags.

use super::{KernelCx, LResult};
use strata_dialects::loops::{BinOp, KernelBuilder, LaneReduce};
use strata_ir::{ElemType, OpId, ValueId, attr_kind::Get};

/// The most rows of a register block.
const MAX_ROWS: usize = 4;
/// f32 lanes in a 128-bit vector.
const LANES: u32 = 4;
const W: usize = LANES as usize;

/// One (batched) product, checked.
#[derive(Clone, Copy, Debug)]
struct Gemm {
    batched: bool,
    batch: usize,
    m: usize,
    k: usize,
    n: usize,
    ta: bool,
    tb: bool,
    a: ValueId,
    b: ValueId,
}

impl Gemm {
    /// The subscripts of logical `a[bi, i, l]`.
    fn a_at(&self, bi: ValueId, i: ValueId, l: ValueId) -> Vec<ValueId> {
        let (r, c) = if self.ta { (l, i) } else { (i, l) };
        self.with_batch(bi, r, c)
    }

    /// The subscripts of logical `b[bi, l, j]`.
    fn b_at(&self, bi: ValueId, l: ValueId, j: ValueId) -> Vec<ValueId> {
        let (r, c) = if self.tb { (j, l) } else { (l, j) };
        self.with_batch(bi, r, c)
    }

    /// The subscripts of `out[bi, i, j]`.
    fn o_at(&self, bi: ValueId, i: ValueId, j: ValueId) -> Vec<ValueId> {
        self.with_batch(bi, i, j)
    }

    fn with_batch(&self, bi: ValueId, r: ValueId, c: ValueId) -> Vec<ValueId> {
        if self.batched { vec![bi, r, c] } else { vec![r, c] }
    }
}

/// Lowers `graph.matmul` and `graph.batched_matmul`.
pub fn lower_matmul(cx: &mut KernelCx<'_, '_, '_>, op: OpId) -> LResult<()> {
    let name = cx.k.ctx().op_name(op).to_string();
    let batched = name == "graph.batched_matmul";
    let data = cx.k.ctx().op(op);
    if data.operands.len() != 2 || data.results.len() != 1 || cx.inputs.len() != 2 {
        return Err(cx.err(op, "expects two operands (a, b) and one result"));
    }
    let (av, bv, ov) = (data.operands[0], data.operands[1], data.results[0]);
    let (at, bt, ot) = (cx.tensor(av), cx.tensor(bv), cx.tensor(ov));
    for (what, e) in [("operand `a`", at.elem), ("operand `b`", bt.elem), ("the result", ot.elem)] {
        if e != ElemType::F32 {
            return Err(cx.err(op, format!("{what} has element type {e}: only f32 products are lowered")));
        }
    }
    let flag = |cx: &KernelCx<'_, '_, '_>, key: &str| -> LResult<bool> {
        match cx.k.ctx().op_attr(op, key) {
            None => Ok(false),
            Some(a) => strata_ir::attr_kind::Bool::get(cx.k.ctx(), a)
                .ok_or_else(|| cx.err(op, format!("attribute `{key}` must be a bool"))),
        }
    };
    let (ta, tb) = (flag(cx, "transpose_a")?, flag(cx, "transpose_b")?);
    let (sa, sb, so) = (cx.shape(av), cx.shape(bv), cx.shape(ov));
    let rank = if batched { 3 } else { 2 };
    if sa.len() != rank || sb.len() != rank || so.len() != rank {
        return Err(cx.err(op, format!("operands and result must have rank {rank}: a {sa:?}, b {sb:?}, result {so:?}")));
    }
    let off = rank - 2;
    let (m, ka) = if ta { (sa[off + 1], sa[off]) } else { (sa[off], sa[off + 1]) };
    let (kb, n) = if tb { (sb[off + 1], sb[off]) } else { (sb[off], sb[off + 1]) };
    let batch = if batched { sa[0] } else { 1 };
    if ka != kb || (batched && (sb[0] != batch || so[0] != batch)) || so[off] != m || so[off + 1] != n {
        return Err(cx.err(
            op,
            format!(
                "shapes do not form a product (transpose_a = {ta}, transpose_b = {tb}): a {sa:?}, b {sb:?}, result {so:?}"
            ),
        ));
    }
    if batch == 0 || m == 0 || n == 0 {
        return Ok(()); // nothing to write
    }
    let g = Gemm { batched, batch, m, k: ka, n, ta, tb, a: cx.inputs[0], b: cx.inputs[1] };
    if tb && !ta && g.k >= W {
        dot_form(cx, &g)
    } else if let Some(chunk) = gemv_chunk(&g) {
        gemv_form(cx, &g, chunk)
    } else {
        broadcast_form(cx, &g)
    }
}

/// Splits the parallel index `p` into subscripts over `counts` (row-major);
/// dimensions of one element get the constant 0.
fn split(k: &mut KernelBuilder<'_, '_>, p: ValueId, counts: &[usize]) -> Vec<ValueId> {
    let mut out = vec![p; counts.len()];
    let mut rest = p;
    let live: Vec<usize> = (0..counts.len()).filter(|&d| counts[d] > 1).collect();
    for d in (0..counts.len()).rev() {
        if counts[d] <= 1 {
            out[d] = k.index(0);
        } else if Some(&d) == live.first() {
            out[d] = rest;
        } else {
            let c = k.index(counts[d] as i64);
            out[d] = k.binary(BinOp::Rem, rest, c);
            rest = k.binary(BinOp::Div, rest, c);
        }
    }
    out
}

/// The start of block `blk` of `size` elements along a dimension of `len`
/// (`size ≤ len`): `min(blk · size, len - size)`, so the last block overlaps its
/// neighbour instead of running past the end.
fn block_start(k: &mut KernelBuilder<'_, '_>, blk: ValueId, size: usize, len: usize) -> ValueId {
    let s = k.mul_i(blk, size as i64);
    if len.is_multiple_of(size) {
        return s;
    }
    let last = k.index((len - size) as i64);
    k.binary(BinOp::Min, s, last)
}

/// Runs `body(k, bi, r0, c0)` for every block of `rows × cols` of every batch,
/// in one parallel loop.
fn for_blocks(
    k: &mut KernelBuilder<'_, '_>,
    g: &Gemm,
    rows: usize,
    cols: usize,
    mut body: impl FnMut(&mut KernelBuilder<'_, '_>, ValueId, ValueId, ValueId) -> LResult<()>,
) -> LResult<()> {
    let (nbm, nbn) = (g.m.div_ceil(rows), g.n.div_ceil(cols));
    let total = g.batch * nbn * nbm;
    k.parallel(total as i64, |k, p| {
        let ix = split(k, p, &[g.batch, nbn, nbm]);
        let r0 = block_start(k, ix[2], rows, g.m);
        let c0 = block_start(k, ix[1], cols, g.n);
        body(k, ix[0], r0, c0)
    })
}

/// Vectors along `N`, `a` broadcast: see the module docs.
fn broadcast_form(cx: &mut KernelCx<'_, '_, '_>, g: &Gemm) -> LResult<()> {
    let mr = g.m.min(MAX_ROWS);
    let (width, nr) = if g.n >= W {
        let want = if mr <= 2 { 4 } else { 2 };
        (W, want.min(g.n / W))
    } else {
        (1, g.n)
    };
    let cols = width * nr;
    let (output, epilogue) = (cx.output, cx.epilogue.clone());
    let g = *g;
    for_blocks(cx.k, &g, mr, cols, |k, bi, r0, c0| {
        let zero = if width == W { k.f32x4(0.0) } else { k.f32(0.0) };
        let inits = vec![zero; mr * nr];
        let (lb, ub, one) = (k.index(0), k.index(g.k as i64), k.index(1));
        let unroll = (g.k >= 8).then_some(4);
        let accs = k.for_loop(lb, ub, one, &inits, unroll, |k, l, accs| {
            let mut bvals = Vec::with_capacity(nr);
            for j in 0..nr {
                let col = k.add_i(c0, (j * width) as i64);
                let v = if width == 1 {
                    k.load(g.b, &g.b_at(bi, l, col))
                } else if !g.tb {
                    k.load_vec(g.b, &g.b_at(bi, l, col), LANES)
                } else {
                    // b stored [N, K]: gather the four columns lane by lane.
                    let mut v = k.f32x4(0.0);
                    for q in 0..LANES {
                        let cq = k.add_i(col, i64::from(q));
                        let s = k.load(g.b, &g.b_at(bi, l, cq));
                        v = k.insert(v, s, q);
                    }
                    v
                };
                bvals.push(v);
            }
            let mut next = Vec::with_capacity(mr * nr);
            for r in 0..mr {
                let row = k.add_i(r0, r as i64);
                let s = k.load(g.a, &g.a_at(bi, row, l));
                let av = if width == W { k.splat(s, LANES) } else { s };
                for (j, &bv) in bvals.iter().enumerate() {
                    next.push(k.fma(av, bv, accs[r * nr + j]));
                }
            }
            Ok::<_, super::LowerError>(next)
        })?;
        for r in 0..mr {
            let row = k.add_i(r0, r as i64);
            for j in 0..nr {
                let col = k.add_i(c0, (j * width) as i64);
                epilogue.store(k, output, accs[r * nr + j], &g.o_at(bi, row, col))?;
            }
        }
        Ok(())
    })
}

/// Products of `a` and `b` elements one pass of the GEMV form makes per output
/// column (`M` rows of `a` times `8 / M` rows of `b`; per output vector:
/// `8 / M` loads of `b`, 8 FMAs, `M` loads and stores of running sums).
const GEMV_PRODUCTS: usize = 8;
/// Most rows of `a` the GEMV form takes.
const GEMV_MAX_M: usize = 4;
/// Widest column chunk of the GEMV form, in vectors: 1024 columns, so a pass
/// reads whole 4 KiB rows of a `[K, 1024]` weight, which the hardware
/// prefetchers follow best (narrower chunks measured up to 40% slower on
/// `[1, 1024] × [1024, 1024]`; wider ones no faster).
const GEMV_CHUNK: usize = 256;

/// The column chunk (in vectors) of the GEMV form for `g`, if it applies: at
/// most [`GEMV_MAX_M`] rows of `a`, `b` stored `[K, N]`, `N` a multiple of
/// the vector width and dividing into chunks of at least 8 vectors (or at most
/// [`GEMV_CHUNK`] vectors in all), `K` at least two passes.
fn gemv_chunk(g: &Gemm) -> Option<usize> {
    if g.m > GEMV_MAX_M || g.tb || !g.n.is_multiple_of(W) || g.k < 2 * (GEMV_PRODUCTS / g.m) {
        return None;
    }
    let nv = g.n / W;
    let chunk = (1..=GEMV_CHUNK.min(nv)).rev().find(|&d| nv.is_multiple_of(d))?;
    (chunk >= 8 || chunk == nv).then_some(chunk)
}

/// `[M, K] × [K, N]` for small `M`: see the module docs. Each parallel
/// iteration owns a chunk of output columns and streams `b` row by row through
/// it, `8 / M` rows per pass: the pass splats those rows' elements of `a` once,
/// then for every vector of the chunk adds their products to the running sums
/// kept in the output (the first pass starts from zero, the last applies the
/// epilogue). Every access to `b` is sequential along a few rows at a time,
/// which the hardware prefetches, and the chunk's sums stay in L1.
fn gemv_form(cx: &mut KernelCx<'_, '_, '_>, g: &Gemm, chunk: usize) -> LResult<()> {
    let (output, epilogue) = (cx.output, cx.epilogue.clone());
    let g = *g;
    let per_pass = GEMV_PRODUCTS / g.m;
    let chunks = g.n / W / chunk;
    let cols = (chunk * W) as i64;
    let (full, tail) = (g.k / per_pass, g.k % per_pass);
    cx.k.parallel((g.batch * chunks) as i64, |k, p| {
        let ix = split(k, p, &[g.batch, chunks]);
        let (bi, c0) = (ix[0], k.mul_i(ix[1], cols));
        let rows: Vec<ValueId> = (0..g.m).map(|i| k.index(i as i64)).collect();
        // One pass over rows `k0 .. k0 + n_rows` of `b`.
        let pass = |k: &mut KernelBuilder<'_, '_>, k0: ValueId, n_rows: usize, first: bool, last: bool| {
            let splats: Vec<Vec<ValueId>> = rows
                .iter()
                .map(|&i| {
                    (0..n_rows)
                        .map(|r| {
                            let l = k.add_i(k0, r as i64);
                            let s = k.load(g.a, &g.a_at(bi, i, l));
                            k.splat(s, LANES)
                        })
                        .collect()
                })
                .collect();
            let (lb, ub, step) = (k.index(0), k.index(cols), k.index(W as i64));
            k.for_loop(lb, ub, step, &[], Some(4), |k, jj, _| {
                let col = k.add(c0, jj);
                let bv: Vec<ValueId> = (0..n_rows)
                    .map(|r| {
                        let l = k.add_i(k0, r as i64);
                        k.load_vec(g.b, &g.b_at(bi, l, col), LANES)
                    })
                    .collect();
                for (&i, sp) in rows.iter().zip(&splats) {
                    let at = g.o_at(bi, i, col);
                    let mut acc = if first { k.f32x4(0.0) } else { k.load_vec(output, &at, LANES) };
                    for (&s, &b) in sp.iter().zip(&bv) {
                        acc = k.fma(s, b, acc);
                    }
                    if last {
                        epilogue.store(k, output, acc, &at)?;
                    } else {
                        k.store(acc, output, &at);
                    }
                }
                Ok::<_, super::LowerError>(Vec::new())
            })
            .map(|_| ())
        };
        let start = k.index(0);
        pass(k, start, per_pass, true, full == 1 && tail == 0)?;
        // Middle passes, then the last (the tail rows, or the last full pass).
        let middle_end = if tail > 0 { full } else { full - 1 };
        if middle_end > 1 {
            let (lb, ub, one) = (k.index(1), k.index(middle_end as i64), k.index(1));
            k.for_loop(lb, ub, one, &[], None, |k, grp, _| {
                let k0 = k.mul_i(grp, per_pass as i64);
                pass(k, k0, per_pass, false, false).map(|()| Vec::new())
            })?;
        }
        if tail > 0 {
            let k0 = k.index((full * per_pass) as i64);
            pass(k, k0, tail, false, true)
        } else if full >= 2 {
            let k0 = k.index(((full - 1) * per_pass) as i64);
            pass(k, k0, per_pass, false, true)
        } else {
            Ok(())
        }
    })
}

/// Dot products along `K` (`a [M, K]`, `b [N, K]`): see the module docs.
fn dot_form(cx: &mut KernelCx<'_, '_, '_>, g: &Gemm) -> LResult<()> {
    let mr = g.m.min(2);
    let nc = g.n.min(W);
    let (output, epilogue) = (cx.output, cx.epilogue.clone());
    let g = *g;
    let k4 = g.k - g.k % W;
    for_blocks(cx.k, &g, mr, nc, |k, bi, r0, c0| {
        let zero = k.f32x4(0.0);
        let inits = vec![zero; mr * nc];
        let (lb, ub, step) = (k.index(0), k.index(k4 as i64), k.index(W as i64));
        let unroll = (k4 >= 4 * W).then_some(2);
        let rows: Vec<ValueId> = (0..mr).map(|r| k.add_i(r0, r as i64)).collect();
        let cols: Vec<ValueId> = (0..nc).map(|c| k.add_i(c0, c as i64)).collect();
        let accs = k.for_loop(lb, ub, step, &inits, unroll, |k, l, accs| {
            let av: Vec<ValueId> = rows.iter().map(|&row| k.load_vec(g.a, &g.a_at(bi, row, l), LANES)).collect();
            let bv: Vec<ValueId> = cols.iter().map(|&col| k.load_vec(g.b, &g.b_at(bi, l, col), LANES)).collect();
            let mut next = Vec::with_capacity(mr * nc);
            for (r, &a) in av.iter().enumerate() {
                for (c, &b) in bv.iter().enumerate() {
                    next.push(k.fma(a, b, accs[r * nc + c]));
                }
            }
            Ok::<_, super::LowerError>(next)
        })?;
        let sums: Vec<ValueId> = accs.iter().map(|&v| k.reduce_lanes(LaneReduce::Add, v)).collect();
        let (lb, ub, one) = (k.index(k4 as i64), k.index(g.k as i64), k.index(1));
        let sums = k.for_loop(lb, ub, one, &sums, None, |k, l, s| {
            let av: Vec<ValueId> = rows.iter().map(|&row| k.load(g.a, &g.a_at(bi, row, l))).collect();
            let bv: Vec<ValueId> = cols.iter().map(|&col| k.load(g.b, &g.b_at(bi, l, col))).collect();
            let mut next = Vec::with_capacity(mr * nc);
            for (r, &a) in av.iter().enumerate() {
                for (c, &b) in bv.iter().enumerate() {
                    next.push(k.fma(a, b, s[r * nc + c]));
                }
            }
            Ok::<_, super::LowerError>(next)
        })?;
        for (r, &row) in rows.iter().enumerate() {
            if nc == W {
                let mut v = k.f32x4(0.0);
                for c in 0..nc {
                    v = k.insert(v, sums[r * nc + c], c as u32);
                }
                epilogue.store(k, output, v, &g.o_at(bi, row, c0))?;
            } else {
                for (c, &col) in cols.iter().enumerate() {
                    epilogue.store(k, output, sums[r * nc + c], &g.o_at(bi, row, col))?;
                }
            }
        }
        Ok(())
    })
}

#[cfg(test)]
#[path = "matmul_tests.rs"]
mod tests;
