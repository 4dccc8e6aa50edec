//! The reference interpreter of the `loops` dialect: the oracle that
//! Cranelift-compiled kernels are compared against, and what lets lowering be
//! tested without code generation.
//!
//! It is deliberately simple and fully checked. A kernel is compiled once into
//! a compact instruction list (register slots, one `match` per executed op, no
//! string matching at run time); constants are materialised once. Everything
//! the IR could get wrong — types, subscripts, loop steps, runaway loops — is a
//! [`LoopsEvalError`] naming the kernel, the op and its position; the
//! interpreter never panics on any input, verified or not.
//!
//! # API
//!
//! - [`run_program`] / [`run_program_with`] run a program function (`@main`):
//!   its buffer arguments are the inputs, `loops.alloc` gives a fresh buffer
//!   filled with the **poison pattern** `0xFF` in every byte (a NaN for `f32`,
//!   `f16` and `bf16`, `-1` / the maximum for integers) so reads of memory no
//!   kernel wrote show up, `loops.constant` gives a copy of its dense data,
//!   `loops.view` aliases its source (same storage, new shape), `loops.launch`
//!   runs a kernel on the buffers, and `func.return` returns the output
//!   buffers as [`TensorData`] with the buffer type's element type and shape.
//! - [`Kernel::compile`] + [`Kernel::run`] (or the one-shot [`run_kernel`]) run
//!   one kernel on [`Buffer`]s. `range = Some((begin, end))` restricts the
//!   iterations of the kernel's top-level `loops.parallel` to
//!   `[begin, end) ∩ [lb, ub)` — how the executor splits work across threads;
//!   the ops outside the parallel loop run on every call, as in compiled code.
//!   A range for a kernel without `loops.parallel` is an error.
//! - A [`Buffer`] is a shared handle (bytes + element type + shape + strides):
//!   cloning it or taking a [`Buffer::view`] aliases the same storage.
//!
//! # Values
//!
//! - `index` is a 64-bit signed integer; index arithmetic wraps.
//! - Scalars of every element type; vectors of up to 128 bits (`lanes ×
//!   element size ≤ 16 bytes`), computed lane by lane.
//! - `f16` and `bf16` are storage types: arithmetic on them (scalars or lanes)
//!   computes in `f32` and rounds back to nearest-even after **every** op
//!   (including every step of `reduce_lanes` and `fma`, which therefore rounds
//!   twice for them).
//! - Quantised element types are their storage integers (`qs8` → `i8`, `qu8`
//!   → `u8`, `qs32` → `i32`).
//! - `bool` is a one-bit unsigned integer: arithmetic on it is modulo 2, `not`
//!   flips it, a load reads any nonzero byte as `true`, a store writes 0 or 1.
//!
//! # Floating point (exactly what compiled code does)
//!
//! - `f32` arithmetic is `f32` (never `f64`), round to nearest-even; division
//!   by zero gives ±inf / NaN as IEEE 754 says.
//! - `fma` is [`f32::mul_add`] (one rounding).
//! - `min` / `max` propagate NaN (either operand NaN → NaN) and order
//!   `-0 < +0` (IEEE 754-2019 `minimum` / `maximum`, Cranelift's `fmin` /
//!   `fmax`). NaN payloads are unspecified: compare NaN as a class.
//! - `sqrt`, `floor`, `ceil`, `abs`, `neg` are the native operations; `round`
//!   rounds half away from zero ([`f32::round`], C `roundf`).
//! - `exp`, `log`, `tanh`, `sin`, `cos` are Rust's `f32` methods and `pow` is
//!   [`f32::powf`] — the functions the code generator's runtime helpers call.
//! - `erf` is computed in `f64` and rounded to `f32`, with the same algorithm
//!   as the code generator's `strata_erff` helper (absolute error about 1e-15
//!   before the final rounding, so within half an `f32` ulp, far below 1e-6):
//!   the positive-term series `erf x = 2/√π · e^{-x²} · Σ (2x²)ⁿ x / (1·3·…·(2n+1))`
//!   for `|x| < 2.5`, Laplace's continued fraction for `erfc` for
//!   `2.5 ≤ |x| < 6`, and `±1` beyond; `erf(NaN) = NaN`.
//! - Comparisons are ordered (false when either side is NaN) except `ne`,
//!   which is true then.
//!
//! # Integers
//!
//! - `add`, `sub`, `mul`, `neg`, `abs` wrap in the type's width (`abs` of the
//!   minimum is the minimum); bitwise `and`, `or`, `xor`, `not` work on
//!   integers, masks and `bool`.
//! - `div` truncates toward zero and `rem` has the sign of the dividend;
//!   `MIN / -1` wraps to `MIN` (and `MIN % -1` is 0). Division or remainder by
//!   zero is an error naming the op (undefined behaviour in compiled code).
//! - `min`, `max` and comparisons respect signedness (`u8`, `u16` and `bool`
//!   are unsigned).
//!
//! # Casts (`loops.cast`, per lane)
//!
//! - float → float: exact widening; narrowing rounds to nearest-even
//!   (overflow → ±inf, NaN stays NaN), via the `half` crate.
//! - float → integer or `index`: truncate toward zero and saturate to the
//!   target's range; NaN → 0 (Rust's `as`, Cranelift's `fcvt_to_sint_sat`).
//! - integer / `index` / `bool` → integer / `index`: the value clamped to the
//!   target's range (so widening is exact, narrowing saturates, a negative
//!   value becomes 0 in an unsigned type).
//! - anything → `bool`: nonzero → true (NaN is nonzero, matching `ne 0`).
//! - integer → float: round to nearest-even (`as f32`); → `f16` / `bf16`
//!   goes through `f32` (two roundings, as in compiled code).
//!
//! # Constants, vectors, masks
//!
//! - `loops.const` rounds its `f64` value to nearest for float types; for
//!   integer types it truncates toward zero and saturates (NaN → 0); an
//!   integer attribute on an integer type is used exactly. A vector type
//!   gets every lane equal to the value.
//! - A vector comparison gives mask lanes of all ones (`-1`) or 0 in the
//!   result's (mask) element type; a scalar comparison gives a `bool`.
//!   `select` picks per lane where the mask lane is nonzero (for scalars: where
//!   the `bool` is true).
//! - `reduce_lanes` folds in lane order: `((l0 op l1) op l2) op l3`.
//!
//! # Memory
//!
//! Every `loops.load` / `loops.store` is bounds-checked: each subscript must be
//! within its dimension, a vector access's `lanes` elements must fit in the
//! last dimension (`i_last + lanes ≤ dim_last`) whose stride must be 1, and the
//! element offset `Σ i_k · stride_k` (row-major strides when the type has
//! none) must lie inside the buffer's storage. Anything else is
//! [`LoopsEvalError::OutOfBounds`] with the kernel, op, subscripts and shape.
//! Buffers passed to a kernel are checked against its argument types (element
//! type, fixed dimensions, symbolic dimensions bound consistently, strides).
//!
//! # Loops and limits
//!
//! - `loops.for` runs `i = lb; while i < ub; i += step` (stopping if `i + step`
//!   overflows); `step ≤ 0` is an error. Zero iterations give the initial
//!   carried values.
//! - Every executed op counts against [`LoopsEvalOptions::max_ops`] (default
//!   10^10, for a whole program run): each execution of a block costs its
//!   number of ops, terminator included, constants excluded (they are
//!   materialised once per run). Exhausting it is [`LoopsEvalError::Budget`].
//! - `loops.alloc` larger than [`LoopsEvalOptions::max_buffer_bytes`] is an
//!   error rather than an out-of-memory abort; loop nesting deeper than 256 is
//!   an error rather than a stack overflow.
//!
//! Error positions (`op #n`) count ops in pre-order of the function body from
//! 0 (a loop before the ops of its body).

use super::{BinOp, CmpPred, LaneReduce, UnOp, ValueKind};
use crate::func::lookup_function;
use half::{bf16, f16};
use std::cell::{RefCell, RefMut};
use std::collections::HashMap;
use std::rc::Rc;
use strata_ir::{AttrData, BlockId, BufferType, Context, Dim, ElemType, OpId, TensorData, Ty, TypeData, ValueId};

/// The default [`LoopsEvalOptions::max_ops`]: 10^10 executed ops.
pub const DEFAULT_MAX_OPS: u64 = 10_000_000_000;

/// The default [`LoopsEvalOptions::max_buffer_bytes`]: 4 GiB.
pub const DEFAULT_MAX_BUFFER_BYTES: u64 = 1 << 32;

/// The deepest loop nest a kernel may have.
const MAX_NESTING: usize = 256;

/// An interpretation failure, with the kernel or program, the op and its position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoopsEvalError {
    /// No function of that name in the module.
    #[error("no function @{0} in the module")]
    NoFunction(String),
    /// The function cannot be interpreted (not a function, no body, missing
    /// terminator, non-buffer kernel arguments, …).
    #[error("@{func}: {message}")]
    Invalid {
        /// Function name.
        func: String,
        /// What is wrong.
        message: String,
    },
    /// The buffers or inputs passed do not fit the function's arguments.
    #[error("@{func}: {message}")]
    Arguments {
        /// Function name.
        func: String,
        /// What is wrong.
        message: String,
    },
    /// An op of a kernel is ill-formed (found when compiling the kernel) or
    /// failed when run (division by zero, non-positive step).
    #[error("kernel @{kernel}, op #{index} `{op}`: {message}")]
    Op {
        /// Kernel name.
        kernel: String,
        /// Op name.
        op: String,
        /// Position of the op in pre-order of the kernel body, from 0.
        index: usize,
        /// What went wrong.
        message: String,
    },
    /// A load or store outside its buffer.
    #[error("{0}")]
    OutOfBounds(Box<OutOfBounds>),
    /// The op budget ([`LoopsEvalOptions::max_ops`]) ran out.
    #[error(
        "kernel @{kernel}: the budget of {max_ops} executed ops is exhausted (a runaway loop? raise `LoopsEvalOptions::max_ops`)"
    )]
    Budget {
        /// The kernel running when the budget ran out.
        kernel: String,
        /// The budget.
        max_ops: u64,
    },
    /// An op of a program failed.
    #[error("program @{program}, op #{index} `{op}`: {message}")]
    Program {
        /// Program function name.
        program: String,
        /// Op name.
        op: String,
        /// Position in the program body, from 0.
        index: usize,
        /// What went wrong.
        message: String,
    },
    /// A kernel launched by a program failed.
    #[error("program @{program}, op #{index} (launch of @{kernel}): {error}")]
    Launch {
        /// Program function name.
        program: String,
        /// Position of the `loops.launch` in the program body.
        index: usize,
        /// The kernel launched.
        kernel: String,
        /// What the kernel reported.
        error: Box<LoopsEvalError>,
    },
    /// A [`Buffer`] could not be created or read.
    #[error("buffer: {0}")]
    Buffer(String),
}

/// The details of a load or store outside its buffer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "kernel @{kernel}, op #{index} `{op}`: subscripts {subscripts:?}{} are out of bounds of buffer argument #{buffer} of shape {shape:?} (strides {strides:?}, {storage} elements of storage)",
    lanes_note(*.lanes)
)]
pub struct OutOfBounds {
    /// Kernel name.
    pub kernel: String,
    /// `loops.load` or `loops.store`.
    pub op: String,
    /// Position of the op in pre-order of the kernel body, from 0.
    pub index: usize,
    /// The subscripts.
    pub subscripts: Vec<i64>,
    /// Elements accessed (1 for scalars).
    pub lanes: u32,
    /// Which kernel argument.
    pub buffer: usize,
    /// The buffer's shape.
    pub shape: Vec<usize>,
    /// The buffer's strides (elements).
    pub strides: Vec<i64>,
    /// Elements in the buffer's storage.
    pub storage: usize,
}

fn lanes_note(lanes: u32) -> String {
    if lanes > 1 { format!(" (a {lanes}-lane vector access)") } else { String::new() }
}

/// Limits of the interpreter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoopsEvalOptions {
    /// The most ops one [`run_program_with`] (or [`Kernel::run`]) call may
    /// execute; see the module docs for how ops are counted.
    pub max_ops: u64,
    /// The largest buffer `loops.alloc` may create, in bytes.
    pub max_buffer_bytes: u64,
}

impl Default for LoopsEvalOptions {
    fn default() -> Self {
        LoopsEvalOptions { max_ops: DEFAULT_MAX_OPS, max_buffer_bytes: DEFAULT_MAX_BUFFER_BYTES }
    }
}

// ---- buffers -----------------------------------------------------------------------

/// A buffer: shared little-endian storage seen with an element type, a shape
/// and strides (in elements).
///
/// `Buffer` is a handle: [`Clone`] and [`Buffer::view`] alias the same storage
/// (writes through one are seen through the other); [`Buffer::deep_copy`]
/// makes an independent one. It is single-threaded (`Rc<RefCell<…>>`): a
/// reference implementation, not the executor's arena.
#[derive(Clone, Debug)]
pub struct Buffer {
    storage: Rc<RefCell<Vec<u8>>>,
    elem: ElemType,
    shape: Vec<usize>,
    strides: Vec<i64>,
}

fn buf_err(m: impl Into<String>) -> LoopsEvalError {
    LoopsEvalError::Buffer(m.into())
}

/// Row-major strides of `shape`, or `None` if they overflow `i64`.
fn row_major_strides(shape: &[usize]) -> Option<Vec<i64>> {
    let mut strides = vec![0i64; shape.len()];
    let mut acc: i64 = 1;
    for (s, &d) in strides.iter_mut().zip(shape).rev() {
        *s = acc;
        acc = acc.checked_mul(i64::try_from(d).ok()?)?;
    }
    Some(strides)
}

fn element_count(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))
}

/// The lowest and highest element offsets `shape` + `strides` reach, or
/// `Ok(None)` when the shape has no elements; `Err` when they overflow `i64`.
fn extent(shape: &[usize], strides: &[i64]) -> Result<Option<(i64, i64)>, String> {
    if shape.contains(&0) {
        return Ok(None);
    }
    let (mut lo, mut hi) = (0i64, 0i64);
    for (&d, &s) in shape.iter().zip(strides) {
        let last = i64::try_from(d - 1).map_err(|_| format!("dimension {d} is too large"))?;
        let reach = last.checked_mul(s).ok_or("the strides overflow 64-bit offsets")?;
        if reach < 0 {
            lo = lo.checked_add(reach).ok_or("the strides overflow 64-bit offsets")?;
        } else {
            hi = hi.checked_add(reach).ok_or("the strides overflow 64-bit offsets")?;
        }
    }
    Ok(Some((lo, hi)))
}

impl Buffer {
    /// A contiguous (row-major) buffer of `elem` and `shape` with every byte `byte`.
    pub fn filled(elem: ElemType, shape: Vec<usize>, byte: u8) -> Result<Buffer, LoopsEvalError> {
        Self::filled_limited(elem, shape, byte, u64::MAX)
    }

    /// A buffer of zeros.
    pub fn zeros(elem: ElemType, shape: Vec<usize>) -> Result<Buffer, LoopsEvalError> {
        Self::filled(elem, shape, 0)
    }

    /// A buffer filled with the poison pattern (`0xFF` bytes: NaN for floats),
    /// as `loops.alloc` creates.
    pub fn poison(elem: ElemType, shape: Vec<usize>) -> Result<Buffer, LoopsEvalError> {
        Self::filled(elem, shape, 0xFF)
    }

    fn filled_limited(elem: ElemType, shape: Vec<usize>, byte: u8, max_bytes: u64) -> Result<Buffer, LoopsEvalError> {
        let len = element_count(&shape)
            .and_then(|n| n.checked_mul(elem.size_bytes()))
            .ok_or_else(|| buf_err(format!("a {elem} buffer of shape {shape:?} is too large")))?;
        if len as u64 > max_bytes {
            return Err(buf_err(format!(
                "a {elem} buffer of shape {shape:?} needs {len} bytes, more than the limit of {max_bytes}"
            )));
        }
        let strides = row_major_strides(&shape)
            .ok_or_else(|| buf_err(format!("a {elem} buffer of shape {shape:?} is too large")))?;
        let mut bytes = Vec::new();
        bytes
            .try_reserve_exact(len)
            .map_err(|e| buf_err(format!("cannot allocate {len} bytes for shape {shape:?}: {e}")))?;
        bytes.resize(len, byte);
        Ok(Buffer { storage: Rc::new(RefCell::new(bytes)), elem, shape, strides })
    }

    /// A contiguous buffer holding a copy of `t`.
    pub fn from_tensor(t: &TensorData) -> Result<Buffer, LoopsEvalError> {
        let strides =
            row_major_strides(t.shape()).ok_or_else(|| buf_err(format!("shape {:?} is too large", t.shape())))?;
        Ok(Buffer {
            storage: Rc::new(RefCell::new(t.bytes().to_vec())),
            elem: t.elem(),
            shape: t.shape().to_vec(),
            strides,
        })
    }

    /// The elements in row-major order of the shape (gathered through the
    /// strides) as host tensor data.
    pub fn to_tensor(&self) -> Result<TensorData, LoopsEvalError> {
        let st = self.storage.try_borrow().map_err(|_| buf_err("the storage is being written"))?;
        let es = self.elem.size_bytes();
        let n = element_count(&self.shape).ok_or_else(|| buf_err("too many elements"))?;
        let bytes: Vec<u8> = if self.is_contiguous() {
            st.get(..n * es).ok_or_else(|| buf_err("the storage is smaller than the shape"))?.to_vec()
        } else {
            let mut out = Vec::with_capacity(n * es);
            let mut idx = vec![0usize; self.shape.len()];
            for _ in 0..n {
                let off =
                    idx.iter().zip(&self.strides).fold(0i64, |a, (&i, &s)| a.wrapping_add((i as i64).wrapping_mul(s)));
                let start = usize::try_from(off).ok().and_then(|o| o.checked_mul(es));
                let chunk = start
                    .and_then(|s| st.get(s..s.checked_add(es)?))
                    .ok_or_else(|| buf_err(format!("element {idx:?} lies outside the storage")))?;
                out.extend_from_slice(chunk);
                for d in (0..idx.len()).rev() {
                    idx[d] += 1;
                    if idx[d] < self.shape[d] {
                        break;
                    }
                    idx[d] = 0;
                }
            }
            out
        };
        TensorData::from_bytes(self.elem, self.shape.clone(), bytes.into()).map_err(|e| buf_err(e.to_string()))
    }

    /// The same storage seen with another shape of equal element count (the
    /// buffer must be contiguous): `loops.view`.
    pub fn view(&self, shape: Vec<usize>) -> Result<Buffer, LoopsEvalError> {
        if !self.is_contiguous() {
            return Err(buf_err(format!("cannot view a strided buffer (strides {:?}) as {shape:?}", self.strides)));
        }
        if element_count(&shape) != element_count(&self.shape) {
            return Err(buf_err(format!("cannot view shape {:?} as {shape:?}: element counts differ", self.shape)));
        }
        let strides = row_major_strides(&shape).ok_or_else(|| buf_err(format!("shape {shape:?} is too large")))?;
        Ok(Buffer { storage: self.storage.clone(), elem: self.elem, shape, strides })
    }

    /// The same storage seen with any shape and strides (in elements), checked
    /// to stay inside the storage.
    pub fn strided(&self, shape: Vec<usize>, strides: Vec<i64>) -> Result<Buffer, LoopsEvalError> {
        if shape.len() != strides.len() {
            return Err(buf_err(format!("{} strides for a shape of rank {}", strides.len(), shape.len())));
        }
        let len = self.storage_len();
        if let Some((lo, hi)) = extent(&shape, &strides).map_err(buf_err)?
            && (lo < 0 || hi >= len as i64)
        {
            return Err(buf_err(format!(
                "shape {shape:?} with strides {strides:?} reaches elements {lo}..={hi} of a storage of {len}"
            )));
        }
        Ok(Buffer { storage: self.storage.clone(), elem: self.elem, shape, strides })
    }

    /// An independent copy (same shape and strides, copied storage).
    pub fn deep_copy(&self) -> Result<Buffer, LoopsEvalError> {
        let st = self.storage.try_borrow().map_err(|_| buf_err("the storage is being written"))?;
        Ok(Buffer {
            storage: Rc::new(RefCell::new(st.clone())),
            elem: self.elem,
            shape: self.shape.clone(),
            strides: self.strides.clone(),
        })
    }

    /// Element type.
    pub fn elem(&self) -> ElemType {
        self.elem
    }

    /// Shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Strides in elements.
    pub fn strides(&self) -> &[i64] {
        &self.strides
    }

    /// Whether the strides are row-major for the shape.
    pub fn is_contiguous(&self) -> bool {
        row_major_strides(&self.shape).is_some_and(|s| s == self.strides)
    }

    /// Number of elements the storage holds.
    pub fn storage_len(&self) -> usize {
        self.storage.try_borrow().map_or(0, |s| s.len()) / self.elem.size_bytes().max(1)
    }

    /// Whether `self` and `other` share storage.
    pub fn aliases(&self, other: &Buffer) -> bool {
        Rc::ptr_eq(&self.storage, &other.storage)
    }
}

// ---- lanes -------------------------------------------------------------------------

/// How one lane (or scalar) is stored in a register and computed on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lane {
    F32,
    F16,
    BF16,
    I8,
    U8,
    I16,
    U16,
    I32,
    I64,
    Bool,
}

impl Lane {
    fn of(e: ElemType) -> Lane {
        match e {
            ElemType::F32 => Lane::F32,
            ElemType::F16 => Lane::F16,
            ElemType::BF16 => Lane::BF16,
            ElemType::I8 | ElemType::QS8(_) => Lane::I8,
            ElemType::U8 | ElemType::QU8(..) => Lane::U8,
            ElemType::I16 => Lane::I16,
            ElemType::U16 => Lane::U16,
            ElemType::I32 | ElemType::QS32(_) => Lane::I32,
            ElemType::I64 => Lane::I64,
            ElemType::Bool => Lane::Bool,
        }
    }

    fn bits(self) -> u32 {
        match self {
            Lane::I8 | Lane::U8 | Lane::Bool => 8,
            Lane::F16 | Lane::BF16 | Lane::I16 | Lane::U16 => 16,
            Lane::F32 | Lane::I32 => 32,
            Lane::I64 => 64,
        }
    }

    fn mask(self) -> u128 {
        (1u128 << self.bits()) - 1
    }

    fn is_float(self) -> bool {
        matches!(self, Lane::F32 | Lane::F16 | Lane::BF16)
    }

    fn is_unsigned(self) -> bool {
        matches!(self, Lane::U8 | Lane::U16 | Lane::Bool)
    }

    /// The value range of an integer lane.
    fn range(self) -> (i64, i64) {
        match self {
            Lane::I8 => (i8::MIN.into(), i8::MAX.into()),
            Lane::U8 => (0, u8::MAX.into()),
            Lane::I16 => (i16::MIN.into(), i16::MAX.into()),
            Lane::U16 => (0, u16::MAX.into()),
            Lane::I32 => (i32::MIN.into(), i32::MAX.into()),
            Lane::Bool => (0, 1),
            Lane::I64 | Lane::F32 | Lane::F16 | Lane::BF16 => (i64::MIN, i64::MAX),
        }
    }
}

/// A register value's type: `lanes` lanes of `lane` (1 for scalars and `index`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct VTy {
    lane: Lane,
    lanes: u32,
}

#[inline(always)]
fn decode_i(bits: u128, lane: Lane) -> i64 {
    match lane {
        Lane::I8 => i64::from(bits as u8 as i8),
        Lane::U8 | Lane::Bool => i64::from(bits as u8),
        Lane::I16 | Lane::F16 | Lane::BF16 => i64::from(bits as u16 as i16),
        Lane::U16 => i64::from(bits as u16),
        Lane::I32 | Lane::F32 => i64::from(bits as u32 as i32),
        Lane::I64 => bits as u64 as i64,
    }
}

#[inline(always)]
fn encode_i(v: i64, lane: Lane) -> u128 {
    if lane == Lane::Bool { (v & 1) as u128 } else { u128::from(v as u64) & lane.mask() }
}

#[inline(always)]
fn decode_f(bits: u128, lane: Lane) -> f32 {
    match lane {
        Lane::F16 => f16::from_bits(bits as u16).to_f32(),
        Lane::BF16 => bf16::from_bits(bits as u16).to_f32(),
        _ => f32::from_bits(bits as u32),
    }
}

#[inline(always)]
fn encode_f(x: f32, lane: Lane) -> u128 {
    match lane {
        Lane::F16 => u128::from(f16::from_f32(x).to_bits()),
        Lane::BF16 => u128::from(bf16::from_f32(x).to_bits()),
        _ => u128::from(x.to_bits()),
    }
}

#[inline(always)]
fn lanewise1(t: VTy, a: u128, mut f: impl FnMut(u128) -> u128) -> u128 {
    let (w, m) = (t.lane.bits(), t.lane.mask());
    let mut out = 0u128;
    for l in 0..t.lanes {
        let sh = l * w;
        out |= (f((a >> sh) & m) & m) << sh;
    }
    out
}

#[inline(always)]
fn lanewise2(t: VTy, a: u128, b: u128, mut f: impl FnMut(u128, u128) -> Result<u128, Fault>) -> Result<u128, Fault> {
    let (w, m) = (t.lane.bits(), t.lane.mask());
    let mut out = 0u128;
    for l in 0..t.lanes {
        let sh = l * w;
        out |= (f((a >> sh) & m, (b >> sh) & m)? & m) << sh;
    }
    Ok(out)
}

#[inline(always)]
fn lanewise3(t: VTy, a: u128, b: u128, c: u128, mut f: impl FnMut(u128, u128, u128) -> u128) -> u128 {
    let (w, m) = (t.lane.bits(), t.lane.mask());
    let mut out = 0u128;
    for l in 0..t.lanes {
        let sh = l * w;
        out |= (f((a >> sh) & m, (b >> sh) & m, (c >> sh) & m) & m) << sh;
    }
    out
}

/// A run-time failure of one lane operation.
#[derive(Clone, Copy, Debug)]
enum Fault {
    DivByZero,
    RemByZero,
}

impl Fault {
    fn message(self) -> &'static str {
        match self {
            Fault::DivByZero => "integer division by zero",
            Fault::RemByZero => "integer remainder by zero",
        }
    }
}

/// IEEE 754-2019 `minimum`: NaN if either is NaN, `-0 < +0`.
#[inline(always)]
fn fmin(x: f32, y: f32) -> f32 {
    if x.is_nan() || y.is_nan() {
        x + y
    } else if x < y {
        x
    } else if y < x {
        y
    } else if x.is_sign_negative() {
        x
    } else {
        y
    }
}

/// IEEE 754-2019 `maximum`: NaN if either is NaN, `-0 < +0`.
#[inline(always)]
fn fmax(x: f32, y: f32) -> f32 {
    if x.is_nan() || y.is_nan() {
        x + y
    } else if x > y {
        x
    } else if y > x {
        y
    } else if x.is_sign_positive() {
        x
    } else {
        y
    }
}

#[inline(always)]
fn fbin(op: BinOp, x: f32, y: f32) -> f32 {
    match op {
        BinOp::Add => x + y,
        BinOp::Sub => x - y,
        BinOp::Mul => x * y,
        BinOp::Div => x / y,
        BinOp::Min => fmin(x, y),
        BinOp::Max => fmax(x, y),
        BinOp::Pow => x.powf(y),
        // Rejected for floats when the kernel is compiled.
        BinOp::Rem | BinOp::And | BinOp::Or | BinOp::Xor => f32::NAN,
    }
}

#[inline(always)]
fn ibin(op: BinOp, x: i64, y: i64) -> Result<i64, Fault> {
    Ok(match op {
        BinOp::Add => x.wrapping_add(y),
        BinOp::Sub => x.wrapping_sub(y),
        BinOp::Mul => x.wrapping_mul(y),
        BinOp::Div => {
            if y == 0 {
                return Err(Fault::DivByZero);
            }
            x.wrapping_div(y)
        }
        BinOp::Rem => {
            if y == 0 {
                return Err(Fault::RemByZero);
            }
            x.wrapping_rem(y)
        }
        BinOp::Min => x.min(y),
        BinOp::Max => x.max(y),
        BinOp::And => x & y,
        BinOp::Or => x | y,
        BinOp::Xor => x ^ y,
        // Rejected for integers when the kernel is compiled.
        BinOp::Pow => 0,
    })
}

fn eval_bin(op: BinOp, t: VTy, a: u128, b: u128) -> Result<u128, Fault> {
    let lane = t.lane;
    if lane.is_float() {
        lanewise2(t, a, b, |x, y| Ok(encode_f(fbin(op, decode_f(x, lane), decode_f(y, lane)), lane)))
    } else {
        lanewise2(t, a, b, |x, y| Ok(encode_i(ibin(op, decode_i(x, lane), decode_i(y, lane))?, lane)))
    }
}

fn fun(op: UnOp, x: f32) -> f32 {
    match op {
        UnOp::Neg => -x,
        UnOp::Abs => x.abs(),
        UnOp::Sqrt => x.sqrt(),
        UnOp::Floor => x.floor(),
        UnOp::Ceil => x.ceil(),
        UnOp::Round => x.round(),
        UnOp::Exp => x.exp(),
        UnOp::Log => x.ln(),
        UnOp::Tanh => x.tanh(),
        UnOp::Sin => x.sin(),
        UnOp::Cos => x.cos(),
        UnOp::Erf => erf_f32(x),
        // Rejected for floats when the kernel is compiled.
        UnOp::Not => f32::NAN,
    }
}

fn iun(op: UnOp, x: i64, lane: Lane) -> i64 {
    match op {
        UnOp::Neg => x.wrapping_neg(),
        UnOp::Abs if lane.is_unsigned() => x,
        UnOp::Abs => x.wrapping_abs(),
        UnOp::Not => !x,
        // Rejected for integers when the kernel is compiled.
        _ => 0,
    }
}

fn eval_un(op: UnOp, t: VTy, a: u128) -> u128 {
    let lane = t.lane;
    if lane.is_float() {
        lanewise1(t, a, |x| encode_f(fun(op, decode_f(x, lane)), lane))
    } else {
        lanewise1(t, a, |x| encode_i(iun(op, decode_i(x, lane), lane), lane))
    }
}

fn fcmp(p: CmpPred, x: f32, y: f32) -> bool {
    match p {
        CmpPred::Eq => x == y,
        CmpPred::Ne => x != y,
        CmpPred::Lt => x < y,
        CmpPred::Le => x <= y,
        CmpPred::Gt => x > y,
        CmpPred::Ge => x >= y,
    }
}

fn icmp(p: CmpPred, x: i64, y: i64) -> bool {
    match p {
        CmpPred::Eq => x == y,
        CmpPred::Ne => x != y,
        CmpPred::Lt => x < y,
        CmpPred::Le => x <= y,
        CmpPred::Gt => x > y,
        CmpPred::Ge => x >= y,
    }
}

fn eval_cmp(p: CmpPred, t: VTy, out: VTy, a: u128, b: u128) -> u128 {
    let (w, m, ow) = (t.lane.bits(), t.lane.mask(), out.lane.bits());
    let yes = encode_i(-1, out.lane);
    let mut r = 0u128;
    for l in 0..t.lanes {
        let (x, y) = ((a >> (l * w)) & m, (b >> (l * w)) & m);
        let c = if t.lane.is_float() {
            fcmp(p, decode_f(x, t.lane), decode_f(y, t.lane))
        } else {
            icmp(p, decode_i(x, t.lane), decode_i(y, t.lane))
        };
        if c {
            r |= yes << (l * ow);
        }
    }
    r
}

fn eval_select(ct: VTy, t: VTy, c: u128, a: u128, b: u128) -> u128 {
    let (cw, cm, w, m) = (ct.lane.bits(), ct.lane.mask(), t.lane.bits(), t.lane.mask());
    let mut r = 0u128;
    for l in 0..t.lanes {
        let pick = if (c >> (l * cw)) & cm != 0 { a } else { b };
        r |= ((pick >> (l * w)) & m) << (l * w);
    }
    r
}

/// Float → integer lane: truncate toward zero, saturate, NaN → 0; `bool`: nonzero.
fn f2i(x: f32, to: Lane) -> i64 {
    match to {
        Lane::I8 => i64::from(x as i8),
        Lane::U8 => i64::from(x as u8),
        Lane::I16 => i64::from(x as i16),
        Lane::U16 => i64::from(x as u16),
        Lane::I32 => i64::from(x as i32),
        Lane::Bool => i64::from(x != 0.0),
        Lane::I64 | Lane::F32 | Lane::F16 | Lane::BF16 => x as i64,
    }
}

fn cast_lane(bits: u128, from: Lane, to: Lane) -> u128 {
    if from.is_float() {
        let x = decode_f(bits, from);
        if to.is_float() { encode_f(x, to) } else { encode_i(f2i(x, to), to) }
    } else {
        let v = decode_i(bits, from);
        if to.is_float() {
            encode_f(v as f32, to)
        } else if to == Lane::Bool {
            u128::from(v != 0)
        } else {
            let (lo, hi) = to.range();
            encode_i(v.clamp(lo, hi), to)
        }
    }
}

fn eval_cast(from: VTy, to: VTy, a: u128) -> u128 {
    let (fw, fm, tw) = (from.lane.bits(), from.lane.mask(), to.lane.bits());
    let mut r = 0u128;
    for l in 0..from.lanes {
        r |= cast_lane((a >> (l * fw)) & fm, from.lane, to.lane) << (l * tw);
    }
    r
}

fn eval_reduce(op: LaneReduce, t: VTy, a: u128) -> u128 {
    let (w, m, lane) = (t.lane.bits(), t.lane.mask(), t.lane);
    let mut acc = a & m;
    for l in 1..t.lanes {
        let x = (a >> (l * w)) & m;
        acc = if lane.is_float() {
            let (p, q) = (decode_f(acc, lane), decode_f(x, lane));
            encode_f(
                match op {
                    LaneReduce::Add => p + q,
                    LaneReduce::Max => fmax(p, q),
                    LaneReduce::Min => fmin(p, q),
                },
                lane,
            )
        } else {
            let (p, q) = (decode_i(acc, lane), decode_i(x, lane));
            encode_i(
                match op {
                    LaneReduce::Add => p.wrapping_add(q),
                    LaneReduce::Max => p.max(q),
                    LaneReduce::Min => p.min(q),
                },
                lane,
            )
        };
    }
    acc
}

/// The error function of an `f32`, computed in `f64` and rounded once (the
/// algorithm of the code generator's `strata_erff`; see the module docs).
pub fn erf_f32(x: f32) -> f32 {
    erf_f64(f64::from(x)) as f32
}

/// The error function in double precision, absolute error about 1e-15.
///
/// - `|x| < 2.5`: the everywhere-convergent series with positive terms
///   `erf(x) = 2/sqrt(pi) * exp(-x^2) * sum_n (2x^2)^n x / (1*3*...*(2n+1))`
///   (A&S 7.1.6), summed until the terms stop changing the sum; no cancellation.
/// - `2.5 <= |x| < 6`: `1 - erfc(x)` with Laplace's continued fraction
///   `erfc(x) = exp(-x^2)/sqrt(pi) * 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + ...))))`
///   (A&S 7.1.14) evaluated backwards from a fixed depth, which for `x >= 2.5` converges far
///   below f64 precision.
/// - `|x| >= 6`: `erfc(x) < 2.2e-17`, so `±1`.
pub fn erf_f64(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    let ax = x.abs();
    let r = if ax < 2.5 {
        // A&S 7.1.6: positive terms, no cancellation.
        let two_x2 = 2.0 * ax * ax;
        let (mut term, mut sum, mut n) = (ax, ax, 0.0f64);
        loop {
            n += 1.0;
            term *= two_x2 / (2.0 * n + 1.0);
            let next = sum + term;
            if next == sum {
                break;
            }
            sum = next;
        }
        std::f64::consts::FRAC_2_SQRT_PI * (-ax * ax).exp() * sum
    } else if ax < 6.0 {
        // A&S 7.1.14: Laplace's continued fraction for erfc, evaluated backwards.
        let mut t = ax;
        for k in (1..=60u32).rev() {
            t = ax + f64::from(k) * 0.5 / t;
        }
        1.0 - (-ax * ax).exp() / std::f64::consts::PI.sqrt() / t
    } else {
        1.0
    };
    r.copysign(x)
}

// ---- compiled kernels --------------------------------------------------------------

/// One buffer access: the buffer argument, its subscripts (a range of the
/// kernel's subscript pool) and the element count.
#[derive(Clone, Copy, Debug)]
struct Access {
    buf: u32,
    idx: u32,
    rank: u32,
    lanes: u32,
    esize: u32,
    bool_elems: bool,
}

/// One instruction; operands and results are register slots.
#[derive(Clone, Copy, Debug)]
enum Inst {
    /// `index` / `i64` scalar binary op.
    IBin {
        op: BinOp,
        dst: u32,
        a: u32,
        b: u32,
    },
    /// `f32` scalar binary op.
    FBin {
        op: BinOp,
        dst: u32,
        a: u32,
        b: u32,
    },
    /// Any other binary op, lane by lane.
    Bin {
        op: BinOp,
        ty: VTy,
        dst: u32,
        a: u32,
        b: u32,
    },
    Un {
        op: UnOp,
        ty: VTy,
        dst: u32,
        a: u32,
    },
    Fma {
        ty: VTy,
        dst: u32,
        a: u32,
        b: u32,
        c: u32,
    },
    Cmp {
        pred: CmpPred,
        ty: VTy,
        out: VTy,
        dst: u32,
        a: u32,
        b: u32,
    },
    Select {
        cty: VTy,
        ty: VTy,
        dst: u32,
        c: u32,
        a: u32,
        b: u32,
    },
    Cast {
        from: VTy,
        to: VTy,
        dst: u32,
        a: u32,
    },
    Splat {
        ty: VTy,
        dst: u32,
        a: u32,
    },
    Extract {
        ty: VTy,
        lane: u32,
        dst: u32,
        a: u32,
    },
    Insert {
        ty: VTy,
        lane: u32,
        dst: u32,
        v: u32,
        s: u32,
    },
    Reduce {
        op: LaneReduce,
        ty: VTy,
        dst: u32,
        a: u32,
    },
    Load {
        acc: Access,
        dst: u32,
    },
    Store {
        acc: Access,
        src: u32,
    },
    /// A `loops.for`: index into [`Kernel::fors`].
    For(u32),
    /// The kernel's `loops.parallel`.
    Parallel,
}

/// What an error about an instruction names.
#[derive(Clone, Copy, Debug)]
struct OpInfo {
    pos: u32,
    name: &'static str,
}

#[derive(Debug, Default)]
struct Block {
    insts: Vec<Inst>,
    info: Vec<OpInfo>,
    /// Ops executed per run of the block (instructions + terminator).
    cost: u64,
}

#[derive(Debug)]
struct ForInfo {
    lb: u32,
    ub: u32,
    step: u32,
    inits: Vec<u32>,
    iv: u32,
    carried: Vec<u32>,
    yields: Vec<u32>,
    results: Vec<u32>,
    body: u32,
}

#[derive(Debug)]
struct ParInfo {
    lb: u32,
    ub: u32,
    iv: u32,
    body: u32,
}

#[derive(Debug)]
enum DimSpec {
    Fixed(u64),
    Sym(String),
}

/// A kernel argument's declared buffer type.
#[derive(Debug)]
struct ArgSpec {
    elem: ElemType,
    dims: Vec<DimSpec>,
    strides: Option<Vec<i64>>,
    vector_access: bool,
}

/// A kernel compiled for interpretation: owns everything it needs (no borrow
/// of the [`Context`]), so it can be run many times, e.g. once per range.
#[derive(Debug)]
pub struct Kernel {
    name: String,
    args: Vec<ArgSpec>,
    blocks: Vec<Block>,
    fors: Vec<ForInfo>,
    par: Option<ParInfo>,
    parallel_bounds: Option<(i64, i64)>,
    idx_pool: Vec<u32>,
    init: Vec<u128>,
    entry: u32,
}

/// A compile error: a message for the current op, or an error already in context.
enum CErr {
    Msg(String),
    Full(LoopsEvalError),
}

impl From<String> for CErr {
    fn from(m: String) -> Self {
        CErr::Msg(m)
    }
}

impl From<&str> for CErr {
    fn from(m: &str) -> Self {
        CErr::Msg(m.to_string())
    }
}

impl From<LoopsEvalError> for CErr {
    fn from(e: LoopsEvalError) -> Self {
        CErr::Full(e)
    }
}

fn func_name(ctx: &Context, func: OpId) -> String {
    match ctx.op_attr(func, "sym_name").map(|a| ctx.attr(a)) {
        Some(AttrData::Str(s)) => s.clone(),
        _ => "<unnamed>".to_string(),
    }
}

fn ty_str(ctx: &Context, ty: Ty) -> String {
    strata_ir::type_to_string(ctx, ty)
}

/// The only block of `op`'s only region.
fn single_block(ctx: &Context, op: OpId) -> Result<BlockId, String> {
    let regions = &ctx.op(op).regions;
    let [r] = regions.as_slice() else {
        return Err(format!("has {} regions, expected 1", regions.len()));
    };
    match ctx.region(*r).blocks.as_slice() {
        [b] => Ok(*b),
        bs => Err(format!("its region has {} blocks, expected 1", bs.len())),
    }
}

/// The register type of `ty`: `index`, a scalar, or a vector of at most 128 bits.
fn reg_ty(ctx: &Context, ty: Ty) -> Result<VTy, String> {
    let bad = || format!("{} is not an index, scalar or vector of at most 128 bits", ty_str(ctx, ty));
    match ctx.ty(ty) {
        TypeData::Index => Ok(VTy { lane: Lane::I64, lanes: 1 }),
        TypeData::Scalar(e) => Ok(VTy { lane: Lane::of(*e), lanes: 1 }),
        TypeData::Vector(v) => {
            let lane = Lane::of(v.elem);
            if v.lanes >= 1 && u64::from(v.lanes) * u64::from(lane.bits()) <= 128 {
                Ok(VTy { lane, lanes: v.lanes })
            } else {
                Err(bad())
            }
        }
        _ => Err(bad()),
    }
}

fn str_attr<'c>(ctx: &'c Context, op: OpId, key: &str) -> Result<&'c str, String> {
    match ctx.op_attr(op, key).map(|a| ctx.attr(a)) {
        Some(AttrData::Str(s)) => Ok(s),
        _ => Err(format!("needs a string attribute `{key}`")),
    }
}

fn lane_attr(ctx: &Context, op: OpId, lanes: u32) -> Result<u32, String> {
    match ctx.op_attr(op, "lane").map(|a| ctx.attr(a)) {
        Some(AttrData::Int(l)) if (0..i64::from(lanes)).contains(l) => Ok(*l as u32),
        Some(AttrData::Int(l)) => Err(format!("lane {l} is outside 0..{lanes}")),
        _ => Err("needs an integer attribute `lane`".into()),
    }
}

/// The register bits of a `loops.const` of type `t` (see the module docs).
fn const_bits(t: VTy, attr: &AttrData) -> Result<u128, String> {
    let lane = t.lane;
    let one = match attr {
        AttrData::Int(i) if !lane.is_float() => {
            if lane == Lane::Bool {
                u128::from(*i != 0)
            } else {
                let (lo, hi) = lane.range();
                encode_i((*i).clamp(lo, hi), lane)
            }
        }
        AttrData::Int(_) | AttrData::Float(_) => {
            let v = match attr {
                AttrData::Float(f) => f.get(),
                AttrData::Int(i) => *i as f64,
                _ => 0.0,
            };
            match lane {
                Lane::F32 => u128::from((v as f32).to_bits()),
                Lane::F16 => u128::from(f16::from_f64(v).to_bits()),
                Lane::BF16 => u128::from(bf16::from_f64(v).to_bits()),
                Lane::Bool => u128::from(v != 0.0),
                _ => {
                    let (lo, hi) = lane.range();
                    encode_i((v as i64).clamp(lo, hi), lane)
                }
            }
        }
        _ => return Err("needs a numeric attribute `value`".into()),
    };
    let w = lane.bits();
    Ok((0..t.lanes).fold(0u128, |acc, l| acc | (one << (l * w))))
}

struct Compiler<'c> {
    ctx: &'c Context,
    kernel: String,
    slots: HashMap<ValueId, u32>,
    bufs: HashMap<ValueId, u32>,
    init: Vec<u128>,
    is_const: Vec<bool>,
    blocks: Vec<Block>,
    fors: Vec<ForInfo>,
    par: Option<ParInfo>,
    idx_pool: Vec<u32>,
    args: Vec<ArgSpec>,
    next_pos: u32,
}

struct BlockOut {
    index: u32,
    args: Vec<u32>,
    yields: Vec<u32>,
}

impl Compiler<'_> {
    fn op_error(&self, op: &str, pos: u32, message: String) -> LoopsEvalError {
        LoopsEvalError::Op { kernel: self.kernel.clone(), op: op.to_string(), index: pos as usize, message }
    }

    fn define(&mut self, v: ValueId, scope: &mut Vec<ValueId>) -> u32 {
        let slot = self.init.len() as u32;
        self.init.push(0);
        self.is_const.push(false);
        self.slots.insert(v, slot);
        scope.push(v);
        slot
    }

    fn use_(&self, v: ValueId) -> Result<u32, String> {
        self.slots.get(&v).copied().ok_or_else(|| {
            format!(
                "operand {v} of type {} is not a register value defined earlier in the kernel",
                ty_str(self.ctx, self.ctx.value_type(v))
            )
        })
    }

    fn use_index(&self, v: ValueId, what: &str) -> Result<u32, String> {
        if !matches!(self.ctx.ty(self.ctx.value_type(v)), TypeData::Index) {
            return Err(format!("{what} must be an index, is {}", ty_str(self.ctx, self.ctx.value_type(v))));
        }
        self.use_(v)
    }

    fn compile_block(&mut self, block: BlockId, depth: usize, loop_yields: Option<&[Ty]>) -> Result<BlockOut, CErr> {
        if depth > MAX_NESTING {
            return Err(format!("loops are nested more than {MAX_NESTING} deep").into());
        }
        let ctx = self.ctx;
        let mut scope = Vec::new();
        let mut arg_slots = Vec::new();
        if loop_yields.is_some() {
            for &a in &ctx.block(block).args {
                reg_ty(ctx, ctx.value_type(a)).map_err(|m| format!("loop body argument: {m}"))?;
                arg_slots.push(self.define(a, &mut scope));
            }
        }
        let mut out = Block::default();
        let mut yields = None;
        let ops = &ctx.block(block).ops;
        for (k, &op) in ops.iter().enumerate() {
            let pos = self.next_pos;
            self.next_pos += 1;
            let name = ctx.op_name(op);
            let last = k + 1 == ops.len();
            let r = match (name, loop_yields) {
                ("func.return", None) => self.terminator(op, last, &[]).map(|y| yields = Some(y)),
                ("loops.yield", Some(tys)) => self.terminator(op, last, tys).map(|y| yields = Some(y)),
                _ => self.compile_op(op, pos, depth, &mut out, &mut scope),
            };
            match r {
                Ok(()) => {}
                Err(CErr::Msg(m)) => return Err(self.op_error(name, pos, m).into()),
                Err(CErr::Full(e)) => return Err(e.into()),
            }
        }
        let Some(yields) = yields else {
            let want = if loop_yields.is_some() { "loops.yield" } else { "func.return" };
            return Err(LoopsEvalError::Invalid {
                func: self.kernel.clone(),
                message: format!("a block does not end in `{want}`"),
            }
            .into());
        };
        out.cost = out.insts.len() as u64 + 1;
        for v in scope {
            self.slots.remove(&v);
        }
        let index = self.blocks.len() as u32;
        self.blocks.push(out);
        Ok(BlockOut { index, args: arg_slots, yields })
    }

    /// A `func.return` (kernel end) or `loops.yield` (loop body end) passing `tys`.
    fn terminator(&self, op: OpId, last: bool, tys: &[Ty]) -> Result<Vec<u32>, CErr> {
        let ctx = self.ctx;
        if !last {
            return Err("a terminator must be the last op of its block".into());
        }
        let d = ctx.op(op);
        if !d.results.is_empty() || !d.regions.is_empty() {
            return Err("a terminator has no results or regions".into());
        }
        if d.operands.len() != tys.len() {
            return Err(if ctx.op_name(op) == "func.return" {
                "kernels return nothing (they write their output buffers)".to_string()
            } else {
                format!("yields {} values, the loop carries {}", d.operands.len(), tys.len())
            }
            .into());
        }
        let mut slots = Vec::with_capacity(tys.len());
        for (i, (&v, &t)) in d.operands.iter().zip(tys).enumerate() {
            if ctx.value_type(v) != t {
                return Err(format!(
                    "yielded value #{i} is {}, the loop carries {}",
                    ty_str(ctx, ctx.value_type(v)),
                    ty_str(ctx, t)
                )
                .into());
            }
            slots.push(self.use_(v)?);
        }
        Ok(slots)
    }

    fn compile_op(
        &mut self,
        op: OpId,
        pos: u32,
        depth: usize,
        out: &mut Block,
        scope: &mut Vec<ValueId>,
    ) -> Result<(), CErr> {
        let ctx = self.ctx;
        let d = ctx.op(op);
        let name = ctx.op_name(op);
        let n_ops = |n: usize| -> Result<(), CErr> {
            if d.operands.len() == n {
                Ok(())
            } else {
                Err(format!("has {} operands, expected {n}", d.operands.len()).into())
            }
        };
        if !d.regions.is_empty() && !matches!(name, "loops.for" | "loops.parallel") {
            return Err(format!("`{name}` cannot have regions").into());
        }
        let result = || -> Result<(ValueId, Ty), CErr> {
            match d.results.as_slice() {
                [r] => Ok((*r, ctx.value_type(*r))),
                rs => Err(format!("has {} results, expected 1", rs.len()).into()),
            }
        };
        let same = |tr: Ty, range: std::ops::Range<usize>| -> Result<(), CErr> {
            for i in range {
                let t = ctx.value_type(d.operands[i]);
                if t != tr {
                    return Err(format!(
                        "operand #{i} has type {} but the result is {}",
                        ty_str(ctx, t),
                        ty_str(ctx, tr)
                    )
                    .into());
                }
            }
            Ok(())
        };
        let kind = |t: Ty| ValueKind::of(ctx, t);
        let sname: &'static str;
        let inst = match name {
            "loops.index_const" => {
                n_ops(0)?;
                let (r, tr) = result()?;
                if !matches!(ctx.ty(tr), TypeData::Index) {
                    return Err(format!("result must be `index`, is {}", ty_str(ctx, tr)).into());
                }
                let v = match ctx.op_attr(op, "value").map(|a| ctx.attr(a)) {
                    Some(AttrData::Int(i)) => *i,
                    _ => return Err("needs an integer attribute `value`".into()),
                };
                let slot = self.define(r, scope);
                self.init[slot as usize] = u128::from(v as u64);
                self.is_const[slot as usize] = true;
                return Ok(());
            }
            "loops.const" => {
                n_ops(0)?;
                let (r, tr) = result()?;
                if kind(tr) == ValueKind::Index {
                    return Err("index constants are `loops.index_const`".into());
                }
                let t = reg_ty(ctx, tr)?;
                let attr = ctx.op_attr(op, "value").map(|a| ctx.attr(a)).ok_or("needs an attribute `value`")?;
                let bits = const_bits(t, attr)?;
                let slot = self.define(r, scope);
                self.init[slot as usize] = bits;
                self.is_const[slot as usize] = true;
                return Ok(());
            }
            "loops.binary" => {
                sname = "loops.binary";
                n_ops(2)?;
                let (r, tr) = result()?;
                same(tr, 0..2)?;
                let ty = reg_ty(ctx, tr)?;
                let s = str_attr(ctx, op, "op")?;
                let bop = BinOp::from_name(s).ok_or_else(|| format!("unknown binary op `{s}`"))?;
                match bop {
                    BinOp::And | BinOp::Or | BinOp::Xor | BinOp::Rem if ty.lane.is_float() => {
                        return Err(format!("`{s}` needs integers, not {}", ty_str(ctx, tr)).into());
                    }
                    BinOp::Pow if !ty.lane.is_float() => {
                        return Err(format!("`pow` needs floats, not {}", ty_str(ctx, tr)).into());
                    }
                    _ => {}
                }
                let (a, b) = (self.use_(d.operands[0])?, self.use_(d.operands[1])?);
                let dst = self.define(r, scope);
                match (ty.lane, ty.lanes) {
                    (Lane::I64, 1) => Inst::IBin { op: bop, dst, a, b },
                    (Lane::F32, 1) => Inst::FBin { op: bop, dst, a, b },
                    _ => Inst::Bin { op: bop, ty, dst, a, b },
                }
            }
            "loops.unary" => {
                sname = "loops.unary";
                n_ops(1)?;
                let (r, tr) = result()?;
                same(tr, 0..1)?;
                let ty = reg_ty(ctx, tr)?;
                let s = str_attr(ctx, op, "op")?;
                let uop = UnOp::from_name(s).ok_or_else(|| format!("unknown unary op `{s}`"))?;
                match uop {
                    UnOp::Neg | UnOp::Abs => {}
                    UnOp::Not if ty.lane.is_float() => return Err("`not` needs integers".into()),
                    UnOp::Not => {}
                    _ if !ty.lane.is_float() => return Err(format!("`{s}` needs floats").into()),
                    _ => {}
                }
                let a = self.use_(d.operands[0])?;
                let dst = self.define(r, scope);
                Inst::Un { op: uop, ty, dst, a }
            }
            "loops.fma" => {
                sname = "loops.fma";
                n_ops(3)?;
                let (r, tr) = result()?;
                same(tr, 0..3)?;
                let ty = reg_ty(ctx, tr)?;
                if !ty.lane.is_float() {
                    return Err("`loops.fma` needs floats".into());
                }
                let (a, b, c) = (self.use_(d.operands[0])?, self.use_(d.operands[1])?, self.use_(d.operands[2])?);
                let dst = self.define(r, scope);
                Inst::Fma { ty, dst, a, b, c }
            }
            "loops.cmp" => {
                sname = "loops.cmp";
                n_ops(2)?;
                let (r, tr) = result()?;
                let ta = ctx.value_type(d.operands[0]);
                same(ta, 1..2)?;
                let ty = reg_ty(ctx, ta)?;
                let out = reg_ty(ctx, tr)?;
                let ok = match (kind(ta), kind(tr)) {
                    (ValueKind::Index | ValueKind::Scalar(_), ValueKind::Scalar(ElemType::Bool)) => true,
                    (ValueKind::Vector(v), ValueKind::Vector(m)) => {
                        m.lanes == v.lanes && m.elem == super::mask_elem(v.elem)
                    }
                    _ => false,
                };
                if !ok {
                    return Err(format!(
                        "comparing {} gives a bool (scalars) or a mask vector of signed lanes, not {}",
                        ty_str(ctx, ta),
                        ty_str(ctx, tr)
                    )
                    .into());
                }
                let s = str_attr(ctx, op, "pred")?;
                let pred = CmpPred::from_name(s).ok_or_else(|| format!("unknown predicate `{s}`"))?;
                let (a, b) = (self.use_(d.operands[0])?, self.use_(d.operands[1])?);
                let dst = self.define(r, scope);
                Inst::Cmp { pred, ty, out, dst, a, b }
            }
            "loops.select" => {
                sname = "loops.select";
                n_ops(3)?;
                let (r, tr) = result()?;
                same(tr, 1..3)?;
                let ty = reg_ty(ctx, tr)?;
                let tc = ctx.value_type(d.operands[0]);
                let ok = match (kind(tc), kind(tr)) {
                    (ValueKind::Scalar(ElemType::Bool), ValueKind::Scalar(_) | ValueKind::Index) => true,
                    (ValueKind::Vector(m), ValueKind::Vector(v)) => m.lanes == v.lanes && !Lane::of(m.elem).is_float(),
                    _ => false,
                };
                if !ok {
                    return Err(
                        format!("condition {} does not fit values of {}", ty_str(ctx, tc), ty_str(ctx, tr)).into()
                    );
                }
                let cty = reg_ty(ctx, tc)?;
                let (c, a, b) = (self.use_(d.operands[0])?, self.use_(d.operands[1])?, self.use_(d.operands[2])?);
                let dst = self.define(r, scope);
                Inst::Select { cty, ty, dst, c, a, b }
            }
            "loops.cast" => {
                sname = "loops.cast";
                n_ops(1)?;
                let (r, tr) = result()?;
                let ta = ctx.value_type(d.operands[0]);
                let (from, to) = (reg_ty(ctx, ta)?, reg_ty(ctx, tr)?);
                let ok = match (kind(ta), kind(tr)) {
                    (ValueKind::Index | ValueKind::Scalar(_), ValueKind::Index | ValueKind::Scalar(_)) => true,
                    (ValueKind::Vector(x), ValueKind::Vector(y)) => x.lanes == y.lanes,
                    _ => false,
                };
                if !ok {
                    return Err(format!("cannot cast {} to {}", ty_str(ctx, ta), ty_str(ctx, tr)).into());
                }
                let a = self.use_(d.operands[0])?;
                let dst = self.define(r, scope);
                Inst::Cast { from, to, dst, a }
            }
            "loops.splat" => {
                sname = "loops.splat";
                n_ops(1)?;
                let (r, tr) = result()?;
                let ta = ctx.value_type(d.operands[0]);
                let ty = reg_ty(ctx, tr)?;
                match (kind(ta), kind(tr)) {
                    (ValueKind::Scalar(e), ValueKind::Vector(v)) if v.elem == e => {}
                    _ => return Err(format!("cannot splat {} to {}", ty_str(ctx, ta), ty_str(ctx, tr)).into()),
                }
                let a = self.use_(d.operands[0])?;
                let dst = self.define(r, scope);
                Inst::Splat { ty, dst, a }
            }
            "loops.extract" => {
                sname = "loops.extract";
                n_ops(1)?;
                let (r, tr) = result()?;
                let ta = ctx.value_type(d.operands[0]);
                let ty = reg_ty(ctx, ta)?;
                match (kind(ta), kind(tr)) {
                    (ValueKind::Vector(v), ValueKind::Scalar(e)) if v.elem == e => {}
                    _ => {
                        return Err(format!("cannot extract a {} from {}", ty_str(ctx, tr), ty_str(ctx, ta)).into());
                    }
                }
                let lane = lane_attr(ctx, op, ty.lanes)?;
                let a = self.use_(d.operands[0])?;
                let dst = self.define(r, scope);
                Inst::Extract { ty, lane, dst, a }
            }
            "loops.insert" => {
                sname = "loops.insert";
                n_ops(2)?;
                let (r, tr) = result()?;
                same(tr, 0..1)?;
                let ts = ctx.value_type(d.operands[1]);
                let ty = reg_ty(ctx, tr)?;
                match (kind(tr), kind(ts)) {
                    (ValueKind::Vector(v), ValueKind::Scalar(e)) if v.elem == e => {}
                    _ => {
                        return Err(format!("cannot insert a {} into {}", ty_str(ctx, ts), ty_str(ctx, tr)).into());
                    }
                }
                let lane = lane_attr(ctx, op, ty.lanes)?;
                let (v, s) = (self.use_(d.operands[0])?, self.use_(d.operands[1])?);
                let dst = self.define(r, scope);
                Inst::Insert { ty, lane, dst, v, s }
            }
            "loops.reduce_lanes" => {
                sname = "loops.reduce_lanes";
                n_ops(1)?;
                let (r, tr) = result()?;
                let ta = ctx.value_type(d.operands[0]);
                let ty = reg_ty(ctx, ta)?;
                match (kind(ta), kind(tr)) {
                    (ValueKind::Vector(v), ValueKind::Scalar(e)) if v.elem == e => {}
                    _ => return Err(format!("cannot reduce {} to {}", ty_str(ctx, ta), ty_str(ctx, tr)).into()),
                }
                let s = str_attr(ctx, op, "op")?;
                let rop = LaneReduce::from_name(s).ok_or_else(|| format!("unknown lane reduction `{s}`"))?;
                let a = self.use_(d.operands[0])?;
                let dst = self.define(r, scope);
                Inst::Reduce { op: rop, ty, dst, a }
            }
            "loops.load" => {
                sname = "loops.load";
                if d.operands.is_empty() {
                    return Err("needs a buffer operand".into());
                }
                let (r, tr) = result()?;
                let acc = self.access(&d.operands, 0, tr)?;
                let dst = self.define(r, scope);
                Inst::Load { acc, dst }
            }
            "loops.store" => {
                sname = "loops.store";
                if d.operands.len() < 2 {
                    return Err("needs a value and a buffer operand".into());
                }
                if !d.results.is_empty() {
                    return Err("has no results".into());
                }
                let tv = ctx.value_type(d.operands[0]);
                let acc = self.access(&d.operands, 1, tv)?;
                let src = self.use_(d.operands[0])?;
                Inst::Store { acc, src }
            }
            "loops.for" => {
                sname = "loops.for";
                if d.operands.len() < 3 {
                    return Err("needs lower bound, upper bound and step operands".into());
                }
                let lb = self.use_index(d.operands[0], "the lower bound")?;
                let ub = self.use_index(d.operands[1], "the upper bound")?;
                let step = self.use_index(d.operands[2], "the step")?;
                let inits_v = &d.operands[3..];
                if inits_v.len() != d.results.len() {
                    return Err(format!("{} initial values for {} results", inits_v.len(), d.results.len()).into());
                }
                let mut tys = Vec::with_capacity(inits_v.len());
                let mut inits = Vec::with_capacity(inits_v.len());
                for (i, (&a, &r)) in inits_v.iter().zip(&d.results).enumerate() {
                    let t = ctx.value_type(r);
                    if ctx.value_type(a) != t {
                        return Err(format!("carried value #{i}: initial value and result differ in type").into());
                    }
                    reg_ty(ctx, t)?;
                    tys.push(t);
                    inits.push(self.use_(a)?);
                }
                let body = single_block(ctx, op)?;
                let bargs = &ctx.block(body).args;
                if bargs.len() != 1 + tys.len()
                    || !matches!(ctx.ty(ctx.value_type(bargs[0])), TypeData::Index)
                    || bargs[1..].iter().zip(&tys).any(|(&a, &t)| ctx.value_type(a) != t)
                {
                    return Err("the body must take the index and the carried values".into());
                }
                let bo = self.compile_block(body, depth + 1, Some(&tys))?;
                let results = d.results.iter().map(|&r| self.define(r, scope)).collect();
                self.fors.push(ForInfo {
                    lb,
                    ub,
                    step,
                    inits,
                    iv: bo.args[0],
                    carried: bo.args[1..].to_vec(),
                    yields: bo.yields,
                    results,
                    body: bo.index,
                });
                Inst::For(self.fors.len() as u32 - 1)
            }
            "loops.parallel" => {
                sname = "loops.parallel";
                if depth != 0 {
                    return Err("`loops.parallel` must be at the top level of the kernel".into());
                }
                if self.par.is_some() {
                    return Err("a kernel has at most one `loops.parallel`".into());
                }
                n_ops(2)?;
                if !d.results.is_empty() {
                    return Err("has no results".into());
                }
                let lb = self.use_index(d.operands[0], "the lower bound")?;
                let ub = self.use_index(d.operands[1], "the upper bound")?;
                let body = single_block(ctx, op)?;
                let bargs = &ctx.block(body).args;
                if bargs.len() != 1 || !matches!(ctx.ty(ctx.value_type(bargs[0])), TypeData::Index) {
                    return Err("the body takes exactly one index argument".into());
                }
                let bo = self.compile_block(body, depth + 1, Some(&[]))?;
                self.par = Some(ParInfo { lb, ub, iv: bo.args[0], body: bo.index });
                Inst::Parallel
            }
            other => {
                return Err(format!(
                    "`{other}` cannot appear in a kernel (kernels hold loops.* constants, arithmetic, \
                     loads, stores and loops, ending in `return`)"
                )
                .into());
            }
        };
        out.insts.push(inst);
        out.info.push(OpInfo { pos, name: sname });
        Ok(())
    }

    /// Checks a load (`buf_at` = 0) or store (`buf_at` = 1) of a `value_ty` and
    /// interns its subscripts.
    fn access(&mut self, operands: &[ValueId], buf_at: usize, value_ty: Ty) -> Result<Access, CErr> {
        let ctx = self.ctx;
        let bv = operands[buf_at];
        let buf = *self.bufs.get(&bv).ok_or_else(|| {
            format!("operand #{buf_at} must be a buffer argument of the kernel, is {}", ty_str(ctx, ctx.value_type(bv)))
        })?;
        let spec = &self.args[buf as usize];
        let (elem, rank) = (spec.elem, spec.dims.len());
        let subs = &operands[buf_at + 1..];
        if subs.len() != rank {
            return Err(format!("{} subscripts for a buffer of rank {rank}", subs.len()).into());
        }
        let t = reg_ty(ctx, value_ty)?;
        let lanes = match ValueKind::of(ctx, value_ty) {
            ValueKind::Scalar(e) if e == elem => 1,
            ValueKind::Vector(v) if v.elem == elem => {
                if rank == 0 {
                    return Err("a vector access needs a buffer of rank ≥ 1".into());
                }
                if spec.strides.as_ref().is_some_and(|s| s.last() != Some(&1)) {
                    return Err("a vector access needs a contiguous last dimension (stride 1)".into());
                }
                t.lanes
            }
            _ => return Err(format!("accesses a buffer of {elem} as {}", ty_str(ctx, value_ty)).into()),
        };
        if lanes > 1 {
            self.args[buf as usize].vector_access = true;
        }
        let idx = self.idx_pool.len() as u32;
        for (i, &s) in subs.iter().enumerate() {
            let slot = self.use_index(s, &format!("subscript #{i}"))?;
            self.idx_pool.push(slot);
        }
        Ok(Access {
            buf,
            idx,
            rank: rank as u32,
            lanes,
            esize: elem.size_bytes() as u32,
            bool_elems: elem == ElemType::Bool,
        })
    }
}

/// A buffer bound to a kernel argument for one run.
struct BufRt {
    storage: usize,
    shape: Vec<i64>,
    strides: Vec<i64>,
    /// Elements in the storage.
    len: i64,
}

struct Exec<'k, 'b> {
    k: &'k Kernel,
    regs: Vec<u128>,
    mem: Vec<RefMut<'b, Vec<u8>>>,
    bufs: Vec<BufRt>,
    budget: u64,
    max_ops: u64,
    range: Option<(i64, i64)>,
    scratch: Vec<u128>,
}

impl Kernel {
    /// Compiles kernel `func` (a `func.func` with buffer arguments and no
    /// results), checking everything the interpreter relies on.
    pub fn compile(ctx: &Context, func: OpId) -> Result<Kernel, LoopsEvalError> {
        let name = func_name(ctx, func);
        let invalid = |message: String| LoopsEvalError::Invalid { func: name.clone(), message };
        if ctx.op_name(func) != "func.func" {
            return Err(invalid(format!("`{}` is not a function", ctx.op_name(func))));
        }
        let body = single_block(ctx, func).map_err(|m| invalid(format!("the function {m}")))?;
        if let Some(AttrData::Type(t)) = ctx.op_attr(func, "function_type").map(|a| ctx.attr(a))
            && let TypeData::Func(f) = ctx.ty(*t)
            && !f.results.is_empty()
        {
            return Err(invalid("a kernel returns nothing (it writes its output buffers)".into()));
        }
        let mut c = Compiler {
            ctx,
            kernel: name.clone(),
            slots: HashMap::new(),
            bufs: HashMap::new(),
            init: Vec::new(),
            is_const: Vec::new(),
            blocks: Vec::new(),
            fors: Vec::new(),
            par: None,
            idx_pool: Vec::new(),
            args: Vec::new(),
            next_pos: 0,
        };
        for (i, &a) in ctx.block(body).args.iter().enumerate() {
            let ty = ctx.value_type(a);
            let TypeData::Buffer(b) = ctx.ty(ty) else {
                return Err(invalid(format!("argument #{i} is {}; kernel arguments are buffers", ty_str(ctx, ty))));
            };
            if b.strides.as_ref().is_some_and(|s| s.len() != b.shape.len()) {
                return Err(invalid(format!("argument #{i}: {} has a stride per dimension", ty_str(ctx, ty))));
            }
            let dims = b
                .shape
                .iter()
                .map(|d| match d {
                    Dim::Fixed(n) => DimSpec::Fixed(*n),
                    Dim::Sym(s) => DimSpec::Sym(ctx.str(*s).to_string()),
                })
                .collect();
            c.args.push(ArgSpec { elem: b.elem, dims, strides: b.strides.clone(), vector_access: false });
            c.bufs.insert(a, i as u32);
        }
        let entry = match c.compile_block(body, 0, None) {
            Ok(bo) => bo.index,
            Err(CErr::Full(e)) => return Err(e),
            Err(CErr::Msg(m)) => return Err(invalid(m)),
        };
        let parallel_bounds = c.par.as_ref().and_then(|p| {
            let (l, u) = (p.lb as usize, p.ub as usize);
            (c.is_const[l] && c.is_const[u]).then(|| (c.init[l] as u64 as i64, c.init[u] as u64 as i64))
        });
        Ok(Kernel {
            name,
            args: c.args,
            blocks: c.blocks,
            fors: c.fors,
            par: c.par,
            parallel_bounds,
            idx_pool: c.idx_pool,
            init: c.init,
            entry,
        })
    }

    /// The kernel's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Number of buffer arguments.
    pub fn num_args(&self) -> usize {
        self.args.len()
    }

    /// Whether the kernel has a top-level `loops.parallel`.
    pub fn has_parallel(&self) -> bool {
        self.par.is_some()
    }

    /// The `[lb, ub)` of the kernel's `loops.parallel` when both bounds are
    /// `loops.index_const` values.
    pub fn parallel_bounds(&self) -> Option<(i64, i64)> {
        self.parallel_bounds
    }

    /// Runs the kernel on `buffers` (one per argument, checked against the
    /// argument types; aliasing buffers are fine). `range` restricts the
    /// top-level `loops.parallel` to `[begin, end) ∩ [lb, ub)`. Returns the
    /// number of ops executed.
    pub fn run(
        &self,
        buffers: &[Buffer],
        range: Option<(i64, i64)>,
        options: &LoopsEvalOptions,
    ) -> Result<u64, LoopsEvalError> {
        let mut budget = options.max_ops;
        self.run_budget(buffers, range, &mut budget, options.max_ops)?;
        Ok(options.max_ops - budget)
    }

    fn args_err(&self, message: String) -> LoopsEvalError {
        LoopsEvalError::Arguments { func: self.name.clone(), message }
    }

    fn run_budget(
        &self,
        buffers: &[Buffer],
        range: Option<(i64, i64)>,
        budget: &mut u64,
        max_ops: u64,
    ) -> Result<(), LoopsEvalError> {
        if range.is_some() && self.par.is_none() {
            return Err(self.args_err("a range was given but the kernel has no `loops.parallel`".into()));
        }
        if buffers.len() != self.args.len() {
            return Err(self.args_err(format!("takes {} buffers, got {}", self.args.len(), buffers.len())));
        }
        let mut syms: HashMap<&str, usize> = HashMap::new();
        let mut storages: Vec<&Rc<RefCell<Vec<u8>>>> = Vec::new();
        let mut rts = Vec::with_capacity(buffers.len());
        for (i, (b, spec)) in buffers.iter().zip(&self.args).enumerate() {
            let bad = |m: String| self.args_err(format!("buffer #{i}: {m}"));
            if b.elem != spec.elem {
                return Err(bad(format!("is {}, the argument is {}", b.elem, spec.elem)));
            }
            if b.shape.len() != spec.dims.len() {
                return Err(bad(format!("has shape {:?}, the argument has rank {}", b.shape, spec.dims.len())));
            }
            for (k, (&n, dim)) in b.shape.iter().zip(&spec.dims).enumerate() {
                match dim {
                    DimSpec::Fixed(f) if *f != n as u64 => {
                        return Err(bad(format!("has shape {:?}, dimension {k} must be {f}", b.shape)));
                    }
                    DimSpec::Sym(s) => {
                        let bound = *syms.entry(s.as_str()).or_insert(n);
                        if bound != n {
                            return Err(bad(format!("dimension {k} is {n} but ?{s} is {bound} elsewhere")));
                        }
                    }
                    DimSpec::Fixed(_) => {}
                }
            }
            let want = match &spec.strides {
                Some(s) => s.clone(),
                None => row_major_strides(&b.shape).ok_or_else(|| bad("is too large".into()))?,
            };
            if b.strides != want {
                return Err(bad(format!("has strides {:?}, the argument needs {want:?}", b.strides)));
            }
            if spec.vector_access && b.strides.last().is_some_and(|&s| s != 1) {
                return Err(bad("is accessed by vectors but its last stride is not 1".into()));
            }
            let storage = match storages.iter().position(|s| Rc::ptr_eq(s, &b.storage)) {
                Some(p) => p,
                None => {
                    storages.push(&b.storage);
                    storages.len() - 1
                }
            };
            rts.push(BufRt {
                storage,
                shape: b.shape.iter().map(|&d| d as i64).collect(),
                strides: b.strides.clone(),
                len: 0,
            });
        }
        let mut mem = Vec::with_capacity(storages.len());
        for s in storages {
            mem.push(s.try_borrow_mut().map_err(|_| self.args_err("a buffer's storage is borrowed elsewhere".into()))?);
        }
        for (i, (rt, b)) in rts.iter_mut().zip(buffers).enumerate() {
            let es = b.elem.size_bytes().max(1);
            rt.len = (mem[rt.storage].len() / es) as i64;
            if let Some((lo, hi)) =
                extent(&b.shape, &b.strides).map_err(|m| self.args_err(format!("buffer #{i}: {m}")))?
                && (lo < 0 || hi >= rt.len)
            {
                return Err(self.args_err(format!(
                    "buffer #{i}: shape {:?} with strides {:?} reaches outside its {} elements of storage",
                    b.shape, b.strides, rt.len
                )));
            }
        }
        let mut ex = Exec {
            k: self,
            regs: self.init.clone(),
            mem,
            bufs: rts,
            budget: *budget,
            max_ops,
            range,
            scratch: Vec::new(),
        };
        let r = ex.exec_block(self.entry);
        *budget = ex.budget;
        r
    }
}

impl Exec<'_, '_> {
    fn op_err(&self, info: OpInfo, message: impl Into<String>) -> LoopsEvalError {
        LoopsEvalError::Op {
            kernel: self.k.name.clone(),
            op: info.name.to_string(),
            index: info.pos as usize,
            message: message.into(),
        }
    }

    #[inline(always)]
    fn idx(&self, slot: u32) -> i64 {
        self.regs[slot as usize] as u64 as i64
    }

    /// The element offset of an access, bounds-checked.
    #[inline(always)]
    fn offset(&self, acc: &Access, info: OpInfo) -> Result<usize, LoopsEvalError> {
        let b = &self.bufs[acc.buf as usize];
        let subs = &self.k.idx_pool[acc.idx as usize..(acc.idx + acc.rank) as usize];
        let lanes = i64::from(acc.lanes);
        let mut off = 0i64;
        let mut ok = true;
        for (d, &s) in subs.iter().enumerate() {
            let i = self.idx(s);
            let lim = if d + 1 == subs.len() { b.shape[d] - (lanes - 1) } else { b.shape[d] };
            ok &= i >= 0 && i < lim;
            off = off.wrapping_add(i.wrapping_mul(b.strides[d]));
        }
        if ok && off >= 0 && off + lanes <= b.len {
            return Ok(off as usize);
        }
        Err(LoopsEvalError::OutOfBounds(Box::new(OutOfBounds {
            kernel: self.k.name.clone(),
            op: info.name.to_string(),
            index: info.pos as usize,
            subscripts: subs.iter().map(|&s| self.idx(s)).collect(),
            lanes: acc.lanes,
            buffer: acc.buf as usize,
            shape: b.shape.iter().map(|&d| d as usize).collect(),
            strides: b.strides.clone(),
            storage: b.len as usize,
        })))
    }

    fn load(&self, acc: &Access, info: OpInfo) -> Result<u128, LoopsEvalError> {
        let off = self.offset(acc, info)?;
        let es = acc.esize as usize;
        let n = acc.lanes as usize * es;
        let st = &self.mem[self.bufs[acc.buf as usize].storage];
        let src = st.get(off * es..off * es + n).ok_or_else(|| self.op_err(info, "access outside the storage"))?;
        let mut b = [0u8; 16];
        b[..n].copy_from_slice(src);
        if acc.bool_elems {
            for x in &mut b[..n] {
                *x = u8::from(*x != 0);
            }
        }
        Ok(u128::from_le_bytes(b))
    }

    fn store(&mut self, acc: &Access, v: u128, info: OpInfo) -> Result<(), LoopsEvalError> {
        let off = self.offset(acc, info)?;
        let es = acc.esize as usize;
        let n = acc.lanes as usize * es;
        let storage = self.bufs[acc.buf as usize].storage;
        match self.mem[storage].get_mut(off * es..off * es + n) {
            Some(dst) => {
                dst.copy_from_slice(&v.to_le_bytes()[..n]);
                Ok(())
            }
            None => Err(self.op_err(info, "access outside the storage")),
        }
    }

    fn exec_block(&mut self, b: u32) -> Result<(), LoopsEvalError> {
        let k = self.k;
        let block = &k.blocks[b as usize];
        if self.budget < block.cost {
            self.budget = 0;
            return Err(LoopsEvalError::Budget { kernel: k.name.clone(), max_ops: self.max_ops });
        }
        self.budget -= block.cost;
        for (i, inst) in block.insts.iter().enumerate() {
            match *inst {
                Inst::IBin { op, dst, a, b } => {
                    let r = ibin(op, self.idx(a), self.idx(b)).map_err(|f| self.op_err(block.info[i], f.message()))?;
                    self.regs[dst as usize] = u128::from(r as u64);
                }
                Inst::FBin { op, dst, a, b } => {
                    let x = f32::from_bits(self.regs[a as usize] as u32);
                    let y = f32::from_bits(self.regs[b as usize] as u32);
                    self.regs[dst as usize] = u128::from(fbin(op, x, y).to_bits());
                }
                Inst::Bin { op, ty, dst, a, b } => {
                    let r = eval_bin(op, ty, self.regs[a as usize], self.regs[b as usize])
                        .map_err(|f| self.op_err(block.info[i], f.message()))?;
                    self.regs[dst as usize] = r;
                }
                Inst::Un { op, ty, dst, a } => {
                    self.regs[dst as usize] = eval_un(op, ty, self.regs[a as usize]);
                }
                Inst::Fma { ty, dst, a, b, c } => {
                    let lane = ty.lane;
                    let (x, y, z) = (self.regs[a as usize], self.regs[b as usize], self.regs[c as usize]);
                    self.regs[dst as usize] = lanewise3(ty, x, y, z, |p, q, r| {
                        encode_f(decode_f(p, lane).mul_add(decode_f(q, lane), decode_f(r, lane)), lane)
                    });
                }
                Inst::Cmp { pred, ty, out, dst, a, b } => {
                    self.regs[dst as usize] = eval_cmp(pred, ty, out, self.regs[a as usize], self.regs[b as usize]);
                }
                Inst::Select { cty, ty, dst, c, a, b } => {
                    let (c, a, b) = (self.regs[c as usize], self.regs[a as usize], self.regs[b as usize]);
                    self.regs[dst as usize] = eval_select(cty, ty, c, a, b);
                }
                Inst::Cast { from, to, dst, a } => {
                    self.regs[dst as usize] = eval_cast(from, to, self.regs[a as usize]);
                }
                Inst::Splat { ty, dst, a } => {
                    let s = self.regs[a as usize] & ty.lane.mask();
                    self.regs[dst as usize] = lanewise1(ty, 0, |_| s);
                }
                Inst::Extract { ty, lane, dst, a } => {
                    self.regs[dst as usize] = (self.regs[a as usize] >> (lane * ty.lane.bits())) & ty.lane.mask();
                }
                Inst::Insert { ty, lane, dst, v, s } => {
                    let (sh, m) = (lane * ty.lane.bits(), ty.lane.mask());
                    let r = (self.regs[v as usize] & !(m << sh)) | ((self.regs[s as usize] & m) << sh);
                    self.regs[dst as usize] = r;
                }
                Inst::Reduce { op, ty, dst, a } => {
                    self.regs[dst as usize] = eval_reduce(op, ty, self.regs[a as usize]);
                }
                Inst::Load { acc, dst } => {
                    self.regs[dst as usize] = self.load(&acc, block.info[i])?;
                }
                Inst::Store { acc, src } => {
                    let v = self.regs[src as usize];
                    self.store(&acc, v, block.info[i])?;
                }
                Inst::For(f) => {
                    let f = &k.fors[f as usize];
                    let (lb, ub, step) = (self.idx(f.lb), self.idx(f.ub), self.idx(f.step));
                    if step <= 0 {
                        return Err(self.op_err(
                            block.info[i],
                            format!("the step must be positive, is {step} (loop from {lb} to {ub})"),
                        ));
                    }
                    for (&s, &d) in f.inits.iter().zip(&f.carried) {
                        self.regs[d as usize] = self.regs[s as usize];
                    }
                    let mut iv = lb;
                    while iv < ub {
                        self.regs[f.iv as usize] = u128::from(iv as u64);
                        self.exec_block(f.body)?;
                        match (f.yields.as_slice(), f.carried.as_slice()) {
                            ([], _) => {}
                            ([y], [c]) => self.regs[*c as usize] = self.regs[*y as usize],
                            (ys, cs) => {
                                self.scratch.clear();
                                self.scratch.extend(ys.iter().map(|&y| self.regs[y as usize]));
                                for (&c, &v) in cs.iter().zip(&self.scratch) {
                                    self.regs[c as usize] = v;
                                }
                            }
                        }
                        iv = match iv.checked_add(step) {
                            Some(n) => n,
                            None => break,
                        };
                    }
                    for (&s, &d) in f.carried.iter().zip(&f.results) {
                        self.regs[d as usize] = self.regs[s as usize];
                    }
                }
                Inst::Parallel => {
                    let Some(p) = &k.par else {
                        return Err(self.op_err(block.info[i], "internal: no parallel loop recorded"));
                    };
                    let (mut lo, mut hi) = (self.idx(p.lb), self.idx(p.ub));
                    if let Some((b, e)) = self.range {
                        lo = lo.max(b);
                        hi = hi.min(e);
                    }
                    let mut iv = lo;
                    while iv < hi {
                        self.regs[p.iv as usize] = u128::from(iv as u64);
                        self.exec_block(p.body)?;
                        iv += 1;
                    }
                }
            }
        }
        Ok(())
    }
}

/// Compiles and runs kernel `func` once on `buffers` (see [`Kernel::run`];
/// default [`LoopsEvalOptions`]). `Buffer`s are shared handles, so the
/// kernel's writes are visible through the caller's buffers (and their views).
pub fn run_kernel(
    ctx: &Context,
    func: OpId,
    buffers: &[Buffer],
    range: Option<(i64, i64)>,
) -> Result<(), LoopsEvalError> {
    Kernel::compile(ctx, func)?.run(buffers, range, &LoopsEvalOptions::default()).map(|_| ())
}

// ---- programs ----------------------------------------------------------------------

/// Runs program function `name` of `module` on `inputs` with default options.
pub fn run_program(
    ctx: &Context,
    module: OpId,
    name: &str,
    inputs: &[TensorData],
) -> Result<Vec<TensorData>, LoopsEvalError> {
    run_program_with(ctx, module, name, inputs, &LoopsEvalOptions::default())
}

fn buffer_type(ctx: &Context, ty: Ty) -> Option<&BufferType> {
    match ctx.ty(ty) {
        TypeData::Buffer(b) => Some(b),
        _ => None,
    }
}

/// The fixed shape of a contiguous buffer type.
fn static_shape(ctx: &Context, ty: Ty) -> Result<(ElemType, Vec<usize>), String> {
    let b = buffer_type(ctx, ty).ok_or_else(|| format!("{} is not a buffer", ty_str(ctx, ty)))?;
    if b.strides.is_some() {
        return Err(format!("{} has explicit strides; program buffers are contiguous", ty_str(ctx, ty)));
    }
    let shape = b
        .shape
        .iter()
        .map(|d| d.fixed().and_then(|n| usize::try_from(n).ok()))
        .collect::<Option<Vec<usize>>>()
        .ok_or_else(|| format!("{} needs a static shape", ty_str(ctx, ty)))?;
    Ok((b.elem, shape))
}

/// [`run_program`] with explicit limits. The op budget covers the whole run.
pub fn run_program_with(
    ctx: &Context,
    module: OpId,
    name: &str,
    inputs: &[TensorData],
    options: &LoopsEvalOptions,
) -> Result<Vec<TensorData>, LoopsEvalError> {
    let f = lookup_function(ctx, module, name).ok_or_else(|| LoopsEvalError::NoFunction(name.to_string()))?;
    let program = name.to_string();
    let invalid = |message: String| LoopsEvalError::Invalid { func: program.clone(), message };
    let body = single_block(ctx, f.0).map_err(|m| invalid(format!("the function {m}")))?;
    let args = &ctx.block(body).args;
    let arg_err = |message: String| LoopsEvalError::Arguments { func: program.clone(), message };
    if args.len() != inputs.len() {
        return Err(arg_err(format!("takes {} inputs, got {}", args.len(), inputs.len())));
    }
    let mut env: HashMap<ValueId, Buffer> = HashMap::new();
    let mut syms: HashMap<String, usize> = HashMap::new();
    for (i, (&a, t)) in args.iter().zip(inputs).enumerate() {
        let ty = ctx.value_type(a);
        let b = buffer_type(ctx, ty)
            .ok_or_else(|| arg_err(format!("argument #{i} is {}, not a buffer", ty_str(ctx, ty))))?;
        if b.strides.is_some() {
            return Err(arg_err(format!(
                "argument #{i}: strided program buffers ({}) are not supported",
                ty_str(ctx, ty)
            )));
        }
        let mismatch = || arg_err(format!("input #{i}: expected {}, got {}{:?}", ty_str(ctx, ty), t.elem(), t.shape()));
        if b.elem != t.elem() || b.shape.len() != t.shape().len() {
            return Err(mismatch());
        }
        for (d, &n) in b.shape.iter().zip(t.shape()) {
            match d {
                Dim::Fixed(k) if *k != n as u64 => return Err(mismatch()),
                Dim::Sym(s) => {
                    let bound = *syms.entry(ctx.str(*s).to_string()).or_insert(n);
                    if bound != n {
                        return Err(arg_err(format!(
                            "input #{i}: symbolic dim ?{} is {bound} elsewhere but {n} here",
                            ctx.str(*s)
                        )));
                    }
                }
                Dim::Fixed(_) => {}
            }
        }
        env.insert(a, Buffer::from_tensor(t)?);
    }
    let mut kernels: HashMap<OpId, Kernel> = HashMap::new();
    let mut budget = options.max_ops;
    for (index, &op) in ctx.block(body).ops.iter().enumerate() {
        let opname = ctx.op_name(op);
        let err = |message: String| LoopsEvalError::Program {
            program: program.clone(),
            op: opname.to_string(),
            index,
            message,
        };
        let d = ctx.op(op);
        let operand = |i: usize| -> Result<&Buffer, LoopsEvalError> {
            let v = d.operands[i];
            env.get(&v).ok_or_else(|| err(format!("operand #{i} ({v}) is not a buffer defined earlier in the program")))
        };
        let result = || -> Result<ValueId, LoopsEvalError> {
            match (d.results.as_slice(), d.operands.is_empty() || opname == "loops.view") {
                ([r], true) => Ok(*r),
                _ => Err(err("expected one result".into())),
            }
        };
        match opname {
            "loops.alloc" => {
                let r = result()?;
                let (elem, shape) = static_shape(ctx, ctx.value_type(r)).map_err(err)?;
                let b = Buffer::filled_limited(elem, shape, 0xFF, options.max_buffer_bytes)
                    .map_err(|e| err(e.to_string()))?;
                env.insert(r, b);
            }
            "loops.constant" => {
                let r = result()?;
                let ty = ctx.value_type(r);
                let (elem, shape) = static_shape(ctx, ty).map_err(err)?;
                let Some(AttrData::Dense(dense)) = ctx.op_attr(op, "value").map(|a| ctx.attr(a)) else {
                    return Err(err("needs a dense attribute `value`".into()));
                };
                let data = dense.data().ok_or_else(|| err("the constant's data was elided".into()))?;
                if data.elem() != elem || Some(data.len()) != element_count(&shape) {
                    return Err(err(format!(
                        "data of {}{:?} does not fill {}",
                        data.elem(),
                        data.shape(),
                        ty_str(ctx, ty)
                    )));
                }
                let b = Buffer::from_tensor(data)?.view(shape).map_err(|e| err(e.to_string()))?;
                env.insert(r, b);
            }
            "loops.view" => {
                if d.operands.len() != 1 {
                    return Err(err("takes one buffer".into()));
                }
                let r = result()?;
                let ty = ctx.value_type(r);
                let strides = buffer_type(ctx, ty).and_then(|b| b.strides.clone());
                let (elem, shape) = match &strides {
                    None => static_shape(ctx, ty).map_err(err)?,
                    Some(_) => {
                        let b = buffer_type(ctx, ty).ok_or_else(|| err("not a buffer".into()))?;
                        let shape = b
                            .shape
                            .iter()
                            .map(|d| d.fixed().and_then(|n| usize::try_from(n).ok()))
                            .collect::<Option<Vec<usize>>>();
                        (b.elem, shape.ok_or_else(|| err(format!("{} needs a static shape", ty_str(ctx, ty))))?)
                    }
                };
                let src = operand(0)?;
                if src.elem() != elem {
                    return Err(err(format!("cannot view a {} buffer as {}", src.elem(), ty_str(ctx, ty))));
                }
                let b = match strides {
                    None => src.view(shape),
                    Some(st) => src.strided(shape, st),
                }
                .map_err(|e| err(e.to_string()))?;
                env.insert(r, b);
            }
            "loops.launch" => {
                if !d.results.is_empty() {
                    return Err(err("has no results".into()));
                }
                let Some(AttrData::SymbolRef(kname)) = ctx.op_attr(op, "kernel").map(|a| ctx.attr(a)) else {
                    return Err(err("needs a symbol attribute `kernel`".into()));
                };
                let kf = lookup_function(ctx, module, kname)
                    .ok_or_else(|| err(format!("kernel @{kname} is not defined")))?;
                let bufs = (0..d.operands.len()).map(|i| operand(i).cloned()).collect::<Result<Vec<_>, _>>()?;
                let kernel = match kernels.entry(kf.0) {
                    std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::hash_map::Entry::Vacant(e) => {
                        e.insert(Kernel::compile(ctx, kf.0).map_err(|e| LoopsEvalError::Launch {
                            program: program.clone(),
                            index,
                            kernel: kname.clone(),
                            error: Box::new(e),
                        })?)
                    }
                };
                kernel.run_budget(&bufs, None, &mut budget, options.max_ops).map_err(|e| LoopsEvalError::Launch {
                    program: program.clone(),
                    index,
                    kernel: kname.clone(),
                    error: Box::new(e),
                })?;
            }
            "func.return" => {
                let declared = match ctx.op_attr(f.0, "function_type").map(|a| ctx.attr(a)) {
                    Some(AttrData::Type(t)) => match ctx.ty(*t) {
                        TypeData::Func(ft) => Some(ft.results.clone()),
                        _ => None,
                    },
                    _ => None,
                };
                let types: Vec<Ty> = d.operands.iter().map(|&v| ctx.value_type(v)).collect();
                if let Some(declared) = declared
                    && declared != types
                {
                    return Err(err(format!(
                        "returns ({}) but the function declares ({})",
                        types.iter().map(|&t| ty_str(ctx, t)).collect::<Vec<_>>().join(", "),
                        declared.iter().map(|&t| ty_str(ctx, t)).collect::<Vec<_>>().join(", ")
                    )));
                }
                let mut outs = Vec::with_capacity(d.operands.len());
                for i in 0..d.operands.len() {
                    outs.push(operand(i)?.to_tensor().map_err(|e| err(e.to_string()))?);
                }
                return Ok(outs);
            }
            other => {
                return Err(err(format!(
                    "`{other}` cannot appear in a program (programs hold loops.alloc, loops.constant, \
                     loops.view, loops.launch and return)"
                )));
            }
        }
    }
    Err(invalid("the body does not end in `return`".into()))
}

#[cfg(test)]
#[path = "interp_tests.rs"]
mod tests;
