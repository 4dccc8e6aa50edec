//! Host tensor storage: the data of dense constants and of reference evaluation.
//!
//! A [`TensorData`] is an element type, a fixed shape and little-endian bytes in
//! row-major order of the *stored* shape (a blocked layout's block axis included).
//! The bytes are shared (`Arc`), so constants can be cloned into the evaluator and
//! model files without copying.

use crate::types::ElemType;
use half::{bf16, f16};
use std::sync::Arc;

/// An error building or reading host tensor data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TensorError {
    /// The byte length does not match the shape and element type.
    #[error("tensor data has {actual} bytes but shape {shape:?} of {elem} needs {expected}")]
    ByteLength {
        /// Element type.
        elem: String,
        /// Shape.
        shape: Vec<usize>,
        /// Bytes needed.
        expected: usize,
        /// Bytes given.
        actual: usize,
    },
    /// The element count overflows `usize`.
    #[error("tensor shape {0:?} has too many elements")]
    TooLarge(Vec<usize>),
}

/// A host tensor: element type, shape and row-major little-endian bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorData {
    elem: ElemType,
    shape: Vec<usize>,
    bytes: Arc<[u8]>,
}

/// Hashes the element type, the shape and a sample of the bytes (all of them
/// up to 4 KiB; else the length, the first and last KiB and 32 evenly spaced
/// 64-byte windows), so interning a large constant does not read all of it.
/// Consistent with `Eq`, which compares every byte.
impl std::hash::Hash for TensorData {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        const WHOLE: usize = 4096;
        const EDGE: usize = 1024;
        const WINDOWS: usize = 32;
        const WINDOW: usize = 64;
        self.elem.hash(h);
        self.shape.hash(h);
        let b = &self.bytes[..];
        if b.len() <= WHOLE {
            b.hash(h);
            return;
        }
        b.len().hash(h);
        h.write(&b[..EDGE]);
        h.write(&b[b.len() - EDGE..]);
        let step = (b.len() - WINDOW) / WINDOWS;
        for i in 0..WINDOWS {
            h.write(&b[i * step..i * step + WINDOW]);
        }
    }
}

/// The number of elements of `shape`, or `None` on overflow.
pub fn num_elements(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

impl TensorData {
    /// Wraps `bytes`, checking that their length fits the shape.
    pub fn from_bytes(elem: ElemType, shape: Vec<usize>, bytes: Arc<[u8]>) -> Result<Self, TensorError> {
        let n = num_elements(&shape).ok_or_else(|| TensorError::TooLarge(shape.clone()))?;
        let expected = n.checked_mul(elem.size_bytes()).ok_or_else(|| TensorError::TooLarge(shape.clone()))?;
        if bytes.len() != expected {
            return Err(TensorError::ByteLength { elem: elem.to_string(), shape, expected, actual: bytes.len() });
        }
        Ok(TensorData { elem, shape, bytes })
    }

    /// A tensor of zeros.
    pub fn zeros(elem: ElemType, shape: Vec<usize>) -> Result<Self, TensorError> {
        let n = num_elements(&shape).ok_or_else(|| TensorError::TooLarge(shape.clone()))?;
        let len = n.checked_mul(elem.size_bytes()).ok_or_else(|| TensorError::TooLarge(shape.clone()))?;
        TensorData::from_bytes(elem, shape, vec![0u8; len].into())
    }

    /// An `f32` tensor from values (panics if the count does not match the shape:
    /// this is a constructor for code, not for user input).
    pub fn from_f32(shape: Vec<usize>, values: &[f32]) -> Self {
        assert_eq!(num_elements(&shape), Some(values.len()), "from_f32: value count vs shape");
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        TensorData { elem: ElemType::F32, shape, bytes: bytes.into() }
    }

    /// A tensor of `elem` from `f64` values, converted element by element with
    /// [`TensorData::encode`] (saturating for integers, round-to-nearest for floats).
    pub fn from_f64(elem: ElemType, shape: Vec<usize>, values: &[f64]) -> Result<Self, TensorError> {
        let mut bytes = Vec::with_capacity(values.len() * elem.size_bytes());
        for &v in values {
            Self::encode(elem, v, &mut bytes);
        }
        TensorData::from_bytes(elem, shape, bytes.into())
    }

    /// Appends the encoding of `v` as one element of `elem` to `out`.
    ///
    /// Quantised types take the *stored integer* (not the real value).
    pub fn encode(elem: ElemType, v: f64, out: &mut Vec<u8>) {
        match elem {
            ElemType::F32 => out.extend((v as f32).to_le_bytes()),
            ElemType::F16 => out.extend(f16::from_f64(v).to_le_bytes()),
            ElemType::BF16 => out.extend(bf16::from_f64(v).to_le_bytes()),
            ElemType::I8 | ElemType::QS8(_) => out.extend((v as i8).to_le_bytes()),
            ElemType::U8 | ElemType::QU8(..) => out.extend((v as u8).to_le_bytes()),
            ElemType::I16 => out.extend((v as i16).to_le_bytes()),
            ElemType::U16 => out.extend((v as u16).to_le_bytes()),
            ElemType::I32 | ElemType::QS32(_) => out.extend((v as i32).to_le_bytes()),
            ElemType::I64 => out.extend((v as i64).to_le_bytes()),
            ElemType::Bool => out.push(u8::from(v != 0.0)),
        }
    }

    /// Decodes element `i` as `f64` (the stored integer for quantised types).
    /// `i64` values beyond 2^53 lose precision; use [`TensorData::get_i64`] for them.
    pub fn get_f64(&self, i: usize) -> f64 {
        let s = self.elem.size_bytes();
        let b = &self.bytes[i * s..(i + 1) * s];
        match self.elem {
            ElemType::F32 => f32::from_le_bytes(b.try_into().expect("4 bytes")) as f64,
            ElemType::F16 => f16::from_le_bytes(b.try_into().expect("2 bytes")).to_f64(),
            ElemType::BF16 => bf16::from_le_bytes(b.try_into().expect("2 bytes")).to_f64(),
            ElemType::I8 | ElemType::QS8(_) => b[0] as i8 as f64,
            ElemType::U8 | ElemType::QU8(..) | ElemType::Bool => b[0] as f64,
            ElemType::I16 => i16::from_le_bytes(b.try_into().expect("2 bytes")) as f64,
            ElemType::U16 => u16::from_le_bytes(b.try_into().expect("2 bytes")) as f64,
            ElemType::I32 | ElemType::QS32(_) => i32::from_le_bytes(b.try_into().expect("4 bytes")) as f64,
            ElemType::I64 => i64::from_le_bytes(b.try_into().expect("8 bytes")) as f64,
        }
    }

    /// The real value of element `i`: dequantised for quantised types
    /// (`scale * (q - zero_point)`), the value itself otherwise.
    pub fn get_real(&self, i: usize) -> f64 {
        let q = self.get_f64(i);
        match self.elem {
            ElemType::QS8(s) | ElemType::QS32(s) => q * s.get() as f64,
            ElemType::QU8(s, z) => (q - z as f64) * s.get() as f64,
            _ => q,
        }
    }

    /// Appends real value `v` encoded as `elem`: quantised types round
    /// `v / scale` half away from zero (plus the zero point) and saturate;
    /// floats round to nearest; plain integers truncate toward zero and saturate.
    pub fn encode_real(elem: ElemType, v: f64, out: &mut Vec<u8>) {
        match elem {
            ElemType::QS8(s) | ElemType::QS32(s) => Self::encode(elem, (v / s.get() as f64).round(), out),
            ElemType::QU8(s, z) => Self::encode(elem, (v / s.get() as f64).round() + z as f64, out),
            _ => Self::encode(elem, v, out),
        }
    }

    /// A tensor of `elem` from real values (see [`TensorData::encode_real`]).
    pub fn from_reals(elem: ElemType, shape: Vec<usize>, values: &[f64]) -> Result<Self, TensorError> {
        let mut bytes = Vec::with_capacity(values.len() * elem.size_bytes());
        for &v in values {
            Self::encode_real(elem, v, &mut bytes);
        }
        TensorData::from_bytes(elem, shape, bytes.into())
    }

    /// All real values (dequantised).
    pub fn to_reals(&self) -> Vec<f64> {
        (0..self.len()).map(|i| self.get_real(i)).collect()
    }

    /// Decodes element `i` of an integer (or bool, or quantised) tensor exactly.
    /// Floating-point elements are truncated toward zero.
    pub fn get_i64(&self, i: usize) -> i64 {
        if self.elem == ElemType::I64 {
            let b = &self.bytes[i * 8..(i + 1) * 8];
            i64::from_le_bytes(b.try_into().expect("8 bytes"))
        } else {
            self.get_f64(i) as i64
        }
    }

    /// The raw bits of element `i`, zero-extended (used for exact printing and hashing).
    pub fn get_bits(&self, i: usize) -> u64 {
        let s = self.elem.size_bytes();
        let mut b = [0u8; 8];
        b[..s].copy_from_slice(&self.bytes[i * s..(i + 1) * s]);
        u64::from_le_bytes(b)
    }

    /// All elements as `f32` (the real storage value; quantised types give the integer).
    pub fn to_f32_vec(&self) -> Vec<f32> {
        (0..self.len()).map(|i| self.get_f64(i) as f32).collect()
    }

    /// All elements as `f64`.
    pub fn to_f64_vec(&self) -> Vec<f64> {
        (0..self.len()).map(|i| self.get_f64(i)).collect()
    }

    /// Element type.
    pub fn elem(&self) -> ElemType {
        self.elem
    }

    /// Shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.bytes.len() / self.elem.size_bytes()
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The raw little-endian bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The shared byte buffer.
    pub fn shared_bytes(&self) -> Arc<[u8]> {
        self.bytes.clone()
    }

    /// Whether every element has the same bit pattern (true for empty tensors).
    pub fn is_splat(&self) -> bool {
        let s = self.elem.size_bytes();
        self.bytes.chunks_exact(s).all(|c| c == &self.bytes[..s])
    }

    /// The same data with another shape of equal element count.
    pub fn reshaped(&self, shape: Vec<usize>) -> Result<Self, TensorError> {
        TensorData::from_bytes(self.elem, shape, self.bytes.clone())
    }

    /// A tensor of `elem` and `shape` filled with uniform random values in
    /// `[lo, hi)` from a seeded generator (reproducible across runs and platforms).
    pub fn random_uniform(elem: ElemType, shape: Vec<usize>, lo: f64, hi: f64, seed: u64) -> Result<Self, TensorError> {
        let n = num_elements(&shape).ok_or_else(|| TensorError::TooLarge(shape.clone()))?;
        let mut rng = SplitMix64(seed);
        let values: Vec<f64> = (0..n)
            .map(|_| {
                let v = lo + (hi - lo) * rng.next_f64();
                if elem.is_float() { v } else { v.floor() }
            })
            .collect();
        TensorData::from_f64(elem, shape, &values)
    }

    /// A 64-bit FNV-1a hash of element type, shape and bytes: stable across
    /// runs and platforms, used to name elided constants.
    pub fn content_hash(&self) -> u64 {
        let mut h = Fnv1a::new();
        h.write(self.elem.to_string().as_bytes());
        for &d in &self.shape {
            h.write(&(d as u64).to_le_bytes());
        }
        h.write(&self.bytes);
        h.finish()
    }
}

/// The 64-bit FNV-1a hash: tiny, stable and good enough to tell constants apart.
#[derive(Clone, Copy, Debug)]
pub struct Fnv1a(u64);

impl Fnv1a {
    /// A hasher in its initial state.
    pub fn new() -> Self {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }

    /// Feeds bytes.
    pub fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    /// The hash of everything written so far.
    pub fn finish(self) -> u64 {
        self.0
    }
}

impl Default for Fnv1a {
    fn default() -> Self {
        Self::new()
    }
}

/// SplitMix64: a small, fast, seedable generator for reproducible test data.
#[derive(Clone, Debug)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A uniform float in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_every_plain_type() {
        for elem in ElemType::PLAIN {
            let t = TensorData::from_f64(elem, vec![3], &[0.0, 1.0, 2.0]).unwrap();
            assert_eq!(t.to_f64_vec(), vec![0.0, 1.0, if elem == ElemType::Bool { 1.0 } else { 2.0 }]);
        }
    }

    #[test]
    fn byte_length_is_checked() {
        let err = TensorData::from_bytes(ElemType::F32, vec![2], vec![0u8; 7].into()).unwrap_err();
        assert!(err.to_string().contains("needs 8"), "{err}");
    }

    #[test]
    fn random_is_reproducible() {
        let a = TensorData::random_uniform(ElemType::F32, vec![16], -1.0, 1.0, 7).unwrap();
        let b = TensorData::random_uniform(ElemType::F32, vec![16], -1.0, 1.0, 7).unwrap();
        assert_eq!(a, b);
        assert!(a.to_f32_vec().iter().all(|v| (-1.0..1.0).contains(v)));
        assert!(!a.is_splat());
    }
}
