//! Reference evaluation of elementwise ops: naive loops over every element,
//! numpy broadcasting, floats computed in `f64` and rounded once to the result
//! type (exact for `+` and `*` of f32/f16), integers with wrapping arithmetic.

use strata_ir::{Dim, ElemType, TensorData};

/// Binary elementwise operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryKind {
    /// `a + b`.
    Add,
    /// `a * b`.
    Mul,
}

/// Unary elementwise operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnaryKind {
    /// `x < 0 ? 0 : x`.
    Relu,
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

fn fixed(shape: &[usize]) -> Vec<Dim> {
    shape.iter().map(|&d| Dim::Fixed(d as u64)).collect()
}

/// Row-major strides of `shape` right-aligned to `rank`, with 0 for broadcast axes.
fn broadcast_strides(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let rank = out.len();
    let mut strides = vec![0; rank];
    let mut acc = 1;
    for i in (0..shape.len()).rev() {
        let j = i + rank - shape.len();
        strides[j] = if shape[i] == 1 && out[j] != 1 { 0 } else { acc };
        acc *= shape[i];
    }
    strides
}

fn encode_int(elem: ElemType, v: i64, out: &mut Vec<u8>) {
    out.extend_from_slice(&v.to_le_bytes()[..elem.size_bytes()]);
}

/// `a op b` with broadcasting.
pub fn eval_binary(kind: BinaryKind, a: &TensorData, b: &TensorData) -> Result<TensorData, String> {
    if a.elem() != b.elem() {
        return Err(format!("element types differ: {} vs {}", a.elem(), b.elem()));
    }
    let elem = a.elem();
    if elem.is_quantized() || elem == ElemType::Bool {
        return Err(format!("{kind:?} on {elem} is not supported by the reference evaluator"));
    }
    let shape = broadcast_shapes(&fixed(a.shape()), &fixed(b.shape()))
        .map_err(|_| format!("shapes {:?} and {:?} do not broadcast", a.shape(), b.shape()))?;
    let shape: Vec<usize> = shape.iter().map(|d| d.fixed().unwrap_or(0) as usize).collect();
    let (sa, sb) = (broadcast_strides(a.shape(), &shape), broadcast_strides(b.shape(), &shape));
    let n: usize = shape.iter().product();
    let mut out = Vec::with_capacity(n * elem.size_bytes());
    let mut idx = vec![0usize; shape.len()];
    for _ in 0..n {
        let ia: usize = idx.iter().zip(&sa).map(|(i, s)| i * s).sum();
        let ib: usize = idx.iter().zip(&sb).map(|(i, s)| i * s).sum();
        if elem.is_float() {
            let (x, y) = (a.get_f64(ia), b.get_f64(ib));
            let r = match kind {
                BinaryKind::Add => x + y,
                BinaryKind::Mul => x * y,
            };
            TensorData::encode(elem, r, &mut out);
        } else {
            let (x, y) = (a.get_i64(ia), b.get_i64(ib));
            let r = match kind {
                BinaryKind::Add => x.wrapping_add(y),
                BinaryKind::Mul => x.wrapping_mul(y),
            };
            encode_int(elem, r, &mut out);
        }
        for d in (0..shape.len()).rev() {
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    TensorData::from_bytes(elem, shape, out.into()).map_err(|e| e.to_string())
}

/// `op x`.
pub fn eval_unary(kind: UnaryKind, x: &TensorData) -> Result<TensorData, String> {
    let elem = x.elem();
    if elem.is_quantized() || elem == ElemType::Bool {
        return Err(format!("{kind:?} on {elem} is not supported by the reference evaluator"));
    }
    let mut out = Vec::with_capacity(x.bytes().len());
    for i in 0..x.len() {
        match kind {
            UnaryKind::Relu if elem.is_float() => {
                let v = x.get_f64(i);
                TensorData::encode(elem, if v < 0.0 { 0.0 } else { v }, &mut out);
            }
            UnaryKind::Relu => encode_int(elem, x.get_i64(i).max(0), &mut out),
        }
    }
    TensorData::from_bytes(elem, x.shape().to_vec(), out.into()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_rules() {
        let f = |v: &[u64]| v.iter().map(|&d| Dim::Fixed(d)).collect::<Vec<_>>();
        assert_eq!(broadcast_shapes(&f(&[2, 1, 4]), &f(&[3, 1])).unwrap(), f(&[2, 3, 4]));
        assert!(broadcast_shapes(&f(&[2]), &f(&[3])).is_err());
    }

    #[test]
    fn add_broadcasts_row() {
        let a = TensorData::from_f32(vec![2, 3], &[1., 2., 3., 4., 5., 6.]);
        let b = TensorData::from_f32(vec![3], &[10., 20., 30.]);
        let r = eval_binary(BinaryKind::Add, &a, &b).unwrap();
        assert_eq!(r.to_f32_vec(), vec![11., 22., 33., 14., 25., 36.]);
    }

    #[test]
    fn int_mul_wraps() {
        let a = TensorData::from_f64(ElemType::I8, vec![1], &[100.0]).unwrap();
        let r = eval_binary(BinaryKind::Mul, &a, &a).unwrap();
        assert_eq!(r.get_i64(0), (100i64 * 100) as i8 as i64);
    }

    #[test]
    fn relu_keeps_nan() {
        let x = TensorData::from_f32(vec![3], &[-1.0, f32::NAN, 2.0]);
        let r = eval_unary(UnaryKind::Relu, &x).unwrap().to_f32_vec();
        assert_eq!(r[0], 0.0);
        assert!(r[1].is_nan());
        assert_eq!(r[2], 2.0);
    }
}
