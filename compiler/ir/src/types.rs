//! The closed set of types: tensors, buffers, index, scalars and functions.
//!
//! Types are interned in the [`Context`](crate::Context); a [`Ty`](crate::Ty) handle
//! compares equal exactly when the types are structurally equal. The set is closed on
//! purpose: the printer, parser, verifier and model-file format match on it
//! exhaustively, while new *operations* are added freely by dialects.

use crate::Sym;
use std::fmt;

/// A quantisation scale, compared and hashed by its bit pattern so types stay `Eq + Hash`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct QScale(u32);

impl QScale {
    /// A scale of `value`.
    pub fn new(value: f32) -> Self {
        QScale(value.to_bits())
    }

    /// The scale as a float.
    pub fn get(self) -> f32 {
        f32::from_bits(self.0)
    }
}

impl fmt::Debug for QScale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.get())
    }
}

/// Element types of tensors, buffers and scalars.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ElemType {
    /// IEEE binary32.
    F32,
    /// IEEE binary16.
    F16,
    /// bfloat16.
    BF16,
    /// Signed 8-bit integer.
    I8,
    /// Unsigned 8-bit integer.
    U8,
    /// Signed 16-bit integer.
    I16,
    /// Unsigned 16-bit integer.
    U16,
    /// Signed 32-bit integer.
    I32,
    /// Signed 64-bit integer.
    I64,
    /// Boolean, stored as one byte (0 or 1).
    Bool,
    /// Symmetric quantised int8: `real = scale * q`.
    QS8(QScale),
    /// Symmetric quantised int32 (accumulators): `real = scale * q`.
    QS32(QScale),
    /// Asymmetric quantised uint8: `real = scale * (q - zero_point)`.
    QU8(QScale, u8),
}

impl ElemType {
    /// Every element type without parameters, in the order the text format lists them.
    pub const PLAIN: [ElemType; 10] = [
        ElemType::F32,
        ElemType::F16,
        ElemType::BF16,
        ElemType::I8,
        ElemType::U8,
        ElemType::I16,
        ElemType::U16,
        ElemType::I32,
        ElemType::I64,
        ElemType::Bool,
    ];

    /// Size of one element in bytes.
    pub fn size_bytes(self) -> usize {
        match self {
            ElemType::I8 | ElemType::U8 | ElemType::Bool | ElemType::QS8(_) | ElemType::QU8(..) => 1,
            ElemType::F16 | ElemType::BF16 | ElemType::I16 | ElemType::U16 => 2,
            ElemType::F32 | ElemType::I32 | ElemType::QS32(_) => 4,
            ElemType::I64 => 8,
        }
    }

    /// Whether this is a floating-point type.
    pub fn is_float(self) -> bool {
        matches!(self, ElemType::F32 | ElemType::F16 | ElemType::BF16)
    }

    /// Whether this is a quantised type.
    pub fn is_quantized(self) -> bool {
        matches!(self, ElemType::QS8(_) | ElemType::QS32(_) | ElemType::QU8(..))
    }

    /// The keyword of a parameterless element type, or `None` for quantised types.
    pub fn keyword(self) -> Option<&'static str> {
        Some(match self {
            ElemType::F32 => "f32",
            ElemType::F16 => "f16",
            ElemType::BF16 => "bf16",
            ElemType::I8 => "i8",
            ElemType::U8 => "u8",
            ElemType::I16 => "i16",
            ElemType::U16 => "u16",
            ElemType::I32 => "i32",
            ElemType::I64 => "i64",
            ElemType::Bool => "bool",
            ElemType::QS8(_) | ElemType::QS32(_) | ElemType::QU8(..) => return None,
        })
    }

    /// The parameterless element type spelled `word`.
    pub fn from_keyword(word: &str) -> Option<ElemType> {
        ElemType::PLAIN.into_iter().find(|e| e.keyword() == Some(word))
    }
}

impl fmt::Display for ElemType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ElemType::QS8(s) => write!(f, "qs8<{s:?}>"),
            ElemType::QS32(s) => write!(f, "qs32<{s:?}>"),
            ElemType::QU8(s, z) => write!(f, "qu8<{s:?}, {z}>"),
            plain => f.write_str(plain.keyword().expect("invariant: plain element type")),
        }
    }
}

/// The memory layout of a tensor (MegEngine's tensor formats).
///
/// `Nchw` is the default row-major layout and is not printed. Blocked layouts
/// split the channel axis: `Nchw88` stores `[N, C/8, H, W, 8]`, `Nchw44`
/// `[N, C/4, H, W, 4]`, and so on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Layout {
    /// Plain row-major (for 4-d activations: N, C, H, W).
    #[default]
    Nchw,
    /// Channels last.
    Nhwc,
    /// `[N, C/8, H, W, 8]` (x86 AVX).
    Nchw88,
    /// `[N, C/4, H, W, 4]` (ARM NEON).
    Nchw44,
    /// `[N, C/4, H, W, 4]` for int8 dot-product kernels.
    Nchw44Dot,
    /// `[N, C/4, H, W, 4]` (int8 GPU).
    Nchw4,
    /// `[N, C/32, H, W, 32]` (tensor cores).
    Nchw32,
    /// `[C/4, H, W, N, 4]`.
    Chwn4,
    /// `[N, C/64, H, W, 64]` (int4).
    Nchw64,
    /// `[N, H, C/4, W, 4]` (image layout for OpenCL).
    Nhwcd4,
}

impl Layout {
    /// Every layout, in declaration order.
    pub const ALL: [Layout; 10] = [
        Layout::Nchw,
        Layout::Nhwc,
        Layout::Nchw88,
        Layout::Nchw44,
        Layout::Nchw44Dot,
        Layout::Nchw4,
        Layout::Nchw32,
        Layout::Chwn4,
        Layout::Nchw64,
        Layout::Nhwcd4,
    ];

    /// The layout's name in text (`nchw88`), written after `#`.
    pub fn name(self) -> &'static str {
        match self {
            Layout::Nchw => "nchw",
            Layout::Nhwc => "nhwc",
            Layout::Nchw88 => "nchw88",
            Layout::Nchw44 => "nchw44",
            Layout::Nchw44Dot => "nchw44_dot",
            Layout::Nchw4 => "nchw4",
            Layout::Nchw32 => "nchw32",
            Layout::Chwn4 => "chwn4",
            Layout::Nchw64 => "nchw64",
            Layout::Nhwcd4 => "nhwcd4",
        }
    }

    /// The layout named `name`.
    pub fn from_name(name: &str) -> Option<Layout> {
        Layout::ALL.into_iter().find(|l| l.name() == name)
    }

    /// The channel block size of a blocked layout (`None` for unblocked ones).
    pub fn block(self) -> Option<u64> {
        match self {
            Layout::Nchw | Layout::Nhwc => None,
            Layout::Nchw88 => Some(8),
            Layout::Nchw44 | Layout::Nchw44Dot | Layout::Nchw4 | Layout::Chwn4 | Layout::Nhwcd4 => Some(4),
            Layout::Nchw32 => Some(32),
            Layout::Nchw64 => Some(64),
        }
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One dimension of a shape: a fixed size or a named symbol (e.g. the batch `N`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dim {
    /// A size known at compile time.
    Fixed(u64),
    /// A size known only at run time, named by an interned symbol.
    Sym(Sym),
}

impl Dim {
    /// The fixed size, if known.
    pub fn fixed(self) -> Option<u64> {
        match self {
            Dim::Fixed(n) => Some(n),
            Dim::Sym(_) => None,
        }
    }
}

/// A ranked tensor type: value semantics, used by the graph and layout dialects.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TensorType {
    /// Dimensions, outermost first, as stored (a blocked layout includes the block axis).
    pub shape: Vec<Dim>,
    /// Element type.
    pub elem: ElemType,
    /// Memory layout tag.
    pub layout: Layout,
}

impl TensorType {
    /// A plain (NCHW) tensor of fixed dimensions.
    pub fn fixed(shape: &[u64], elem: ElemType) -> Self {
        TensorType { shape: shape.iter().map(|&d| Dim::Fixed(d)).collect(), elem, layout: Layout::Nchw }
    }

    /// The fixed dimensions, or `None` if any dimension is symbolic.
    pub fn static_shape(&self) -> Option<Vec<u64>> {
        self.shape.iter().map(|d| d.fixed()).collect()
    }

    /// Number of elements, if every dimension is fixed (and the product fits in `u64`).
    pub fn num_elements(&self) -> Option<u64> {
        self.shape.iter().try_fold(1u64, |acc, d| acc.checked_mul(d.fixed()?))
    }
}

/// A memref-like buffer type for the loops level: a shape, element type, layout and
/// optional explicit strides (in elements; row-major when absent).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BufferType {
    /// Dimensions, outermost first.
    pub shape: Vec<Dim>,
    /// Element type.
    pub elem: ElemType,
    /// Memory layout tag.
    pub layout: Layout,
    /// Strides in elements, one per dimension, or `None` for contiguous row-major.
    pub strides: Option<Vec<i64>>,
}

/// A fixed-width SIMD vector type of the loops level (`vec<4xf32>`): `lanes`
/// elements of a scalar element type. The loops dialect only creates 128-bit
/// vectors (what Cranelift's x86-64 and aarch64 backends lower), but the type
/// itself accepts any lane count so that the verifier, not the parser, says why
/// one is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VectorType {
    /// Number of lanes.
    pub lanes: u32,
    /// Lane element type.
    pub elem: ElemType,
}

impl VectorType {
    /// Total width in bits.
    pub fn bits(self) -> u64 {
        u64::from(self.lanes) * self.elem.size_bytes() as u64 * 8
    }
}

/// A function type: input types to result types.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FuncType {
    /// Argument types.
    pub inputs: Vec<crate::Ty>,
    /// Result types.
    pub results: Vec<crate::Ty>,
}

/// The data of an interned type.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TypeData {
    /// `tensor<1x3x224x224xf32>`.
    Tensor(TensorType),
    /// `buffer<4x8xf32>`.
    Buffer(BufferType),
    /// `index`: loop induction variables and sizes.
    Index,
    /// A scalar of an element type: `f32`.
    Scalar(ElemType),
    /// A 128-bit SIMD vector of the loops level: `vec<4xf32>`, `vec<16xi8>`.
    Vector(VectorType),
    /// `(T, T) -> T`.
    Func(FuncType),
}

impl TypeData {
    /// The tensor type, if this is one.
    pub fn as_tensor(&self) -> Option<&TensorType> {
        match self {
            TypeData::Tensor(t) => Some(t),
            _ => None,
        }
    }

    /// The function type, if this is one.
    pub fn as_func(&self) -> Option<&FuncType> {
        match self {
            TypeData::Func(f) => Some(f),
            _ => None,
        }
    }
}
