//! Helpers shared by the graph ops: shapes (fixed and symbolic), index
//! arithmetic, broadcasting, and dtype-agnostic data movement.

use strata_ir::{Dim, ElemType, Layout, OpCx, TensorData, TensorType, TypeData};

/// A plain (NCHW) tensor type.
pub fn tensor(elem: ElemType, shape: Vec<Dim>) -> TypeData {
    TypeData::Tensor(TensorType { shape, elem, layout: Layout::Nchw })
}

/// A tensor type like `t` (element type and layout) with another shape.
pub fn like(t: &TensorType, shape: Vec<Dim>) -> TypeData {
    TypeData::Tensor(TensorType { shape, elem: t.elem, layout: t.layout })
}

/// Fixed dims from `usize`s.
pub fn fixed(shape: &[usize]) -> Vec<Dim> {
    shape.iter().map(|&d| Dim::Fixed(d as u64)).collect()
}

/// Text of a shape for messages: `[?N, 3, 224, 224]`.
pub fn show(cx: &OpCx<'_>, shape: &[Dim]) -> String {
    let dims: Vec<String> = shape
        .iter()
        .map(|d| match d {
            Dim::Fixed(n) => n.to_string(),
            Dim::Sym(s) => format!("?{}", cx.ctx.str(*s)),
        })
        .collect();
    format!("[{}]", dims.join(", "))
}

/// Fails unless `t` is a plain-layout tensor of rank `rank`.
pub fn expect_rank(cx: &OpCx<'_>, t: &TensorType, rank: usize, what: &str) -> Result<(), String> {
    if t.layout != Layout::Nchw {
        return Err(format!("{what} must have the plain layout, has #{}", t.layout));
    }
    if t.shape.len() != rank {
        return Err(format!("{what} must have rank {rank}, has shape {}", show(cx, &t.shape)));
    }
    Ok(())
}

/// The fixed value of `d`, or an error saying `what` cannot be symbolic.
pub fn fixed_dim(d: Dim, what: &str) -> Result<u64, String> {
    d.fixed().ok_or_else(|| format!("{what} must have a fixed size, not a symbolic one"))
}

/// Normalises an axis (negative counts from the end) for a rank.
pub fn norm_axis(axis: i64, rank: usize) -> Result<usize, String> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if (0..r).contains(&a) { Ok(a as usize) } else { Err(format!("axis {axis} is out of range for rank {rank}")) }
}

/// Reads an attribute as `n` non-negative values (e.g. stride `[2, 2]`), naming it in errors.
pub fn ints_n(cx: &OpCx<'_>, key: &str, n: usize, min: i64) -> Result<Vec<u64>, String> {
    let v = cx.attrs.ints(key)?;
    if v.len() != n || v.iter().any(|&x| x < min) {
        return Err(format!("attribute `{key}` must be {n} integers >= {min}, is {v:?}"));
    }
    Ok(v.into_iter().map(|x| x as u64).collect())
}

/// The numpy broadcast of two shapes (right-aligned; a `1` stretches). On
/// failure, the axis of the result (counted from the left) that does not match.
pub fn broadcast_shapes(a: &[Dim], b: &[Dim]) -> Result<Vec<Dim>, usize> {
    let rank = a.len().max(b.len());
    let mut out = Vec::with_capacity(rank);
    for i in 0..rank {
        let da = (i + a.len()).checked_sub(rank).map_or(Dim::Fixed(1), |j| a[j]);
        let db = (i + b.len()).checked_sub(rank).map_or(Dim::Fixed(1), |j| b[j]);
        out.push(match (da, db) {
            (x, y) if x == y => x,
            (Dim::Fixed(1), y) => y,
            (x, Dim::Fixed(1)) => x,
            _ => return Err(i),
        });
    }
    Ok(out)
}

/// Row-major strides of a shape.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Calls `f` with every multi-index of `shape` in row-major order.
pub fn for_each_index(shape: &[usize], mut f: impl FnMut(&[usize])) {
    if shape.contains(&0) {
        return;
    }
    let mut idx = vec![0usize; shape.len()];
    loop {
        f(&idx);
        let mut d = shape.len();
        loop {
            if d == 0 {
                return;
            }
            d -= 1;
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
}

/// The linear index in a tensor of `shape` that broadcasts to `out_idx`
/// (right-aligned; size-1 axes read index 0).
pub fn broadcast_offset(out_idx: &[usize], shape: &[usize]) -> usize {
    let off = out_idx.len() - shape.len();
    let mut lin = 0;
    for (i, &d) in shape.iter().enumerate() {
        let x = if d == 1 { 0 } else { out_idx[off + i] };
        lin = lin * d + x;
    }
    lin
}

/// Builds a tensor of `elem`/`shape` from one real value per element, computed
/// from the output multi-index (quantised/float/int encoding as
/// [`TensorData::encode_real`]).
pub fn from_fn(elem: ElemType, shape: &[usize], mut f: impl FnMut(&[usize]) -> f64) -> Result<TensorData, String> {
    let n: usize = shape.iter().product();
    let mut bytes = Vec::with_capacity(n * elem.size_bytes());
    for_each_index(shape, |idx| TensorData::encode_real(elem, f(idx), &mut bytes));
    TensorData::from_bytes(elem, shape.to_vec(), bytes.into()).map_err(|e| e.to_string())
}

/// Data movement for any element type: each output element copies the input
/// element at the linear index `src(out_idx)`, or is zero bytes when `None`
/// (e.g. constant padding of 0 — quantised zero points are the caller's business).
pub fn gather(
    input: &TensorData,
    shape: &[usize],
    mut src: impl FnMut(&[usize]) -> Option<usize>,
) -> Result<TensorData, String> {
    let size = input.elem().size_bytes();
    let n: usize = shape.iter().product();
    let mut bytes = Vec::with_capacity(n * size);
    let data = input.bytes();
    for_each_index(shape, |idx| match src(idx) {
        Some(i) => bytes.extend_from_slice(&data[i * size..(i + 1) * size]),
        None => bytes.extend(std::iter::repeat_n(0u8, size)),
    });
    TensorData::from_bytes(input.elem(), shape.to_vec(), bytes.into()).map_err(|e| e.to_string())
}

/// One input or fail with a count message.
pub fn one(inputs: &[TensorData]) -> Result<&TensorData, String> {
    match inputs {
        [x] => Ok(x),
        _ => Err(format!("expected 1 input, got {}", inputs.len())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_rules() {
        let f = |v: &[u64]| v.iter().map(|&d| Dim::Fixed(d)).collect::<Vec<_>>();
        assert_eq!(broadcast_shapes(&f(&[2, 1, 4]), &f(&[3, 1])).unwrap(), f(&[2, 3, 4]));
        assert_eq!(broadcast_shapes(&f(&[2]), &f(&[3])), Err(0));
    }

    #[test]
    fn index_helpers() {
        assert_eq!(strides(&[2, 3, 4]), vec![12, 4, 1]);
        let mut seen = Vec::new();
        for_each_index(&[2, 2], |i| seen.push(i.to_vec()));
        assert_eq!(seen, vec![vec![0, 0], vec![0, 1], vec![1, 0], vec![1, 1]]);
        assert_eq!(broadcast_offset(&[1, 2, 3], &[1, 4]), 3);
        assert_eq!(broadcast_offset(&[1, 2, 3], &[3, 1, 4]), 4 + 3);
    }
}
