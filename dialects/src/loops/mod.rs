//! The `loops` dialect: buffers, loop nests and scalar / 128-bit vector
//! arithmetic — the level that Cranelift code generation consumes.
//!
//! A lowered module holds two kinds of functions (reference: `docs/loops.md`):
//!
//! - **kernels**: `func.func @k(%a: buffer<…>, …)` with buffer arguments (inputs
//!   first, then outputs) and no results. A kernel body is pure loop code:
//!   constants, index and value arithmetic, `loops.load` / `loops.store`,
//!   `loops.for` nests and at most one top-level `loops.parallel`, whose
//!   iterations the executor splits across threads.
//! - **the program** (`@main` unless named otherwise): buffer arguments for the
//!   model inputs, `loops.alloc` for temporaries (placed by the memory plan),
//!   `loops.constant` for weights, `loops.view` for free reshapes,
//!   `loops.launch` calls of kernels in execution order, and `func.return` of
//!   the output buffers.
//!
//! Value types: `index` (loop counters and subscripts, 64-bit), scalars (`f32`,
//! `i32`, `u8`, …, `bool` from comparisons) and 128-bit vectors (`vec<4xf32>`,
//! `vec<4xi32>`, `vec<8xi16>`, `vec<8xu16>`, `vec<16xi8>`, `vec<16xu8>`,
//! `vec<8xf16>`). f16/bf16 arithmetic is computed in f32 and rounded back after
//! each op (the lowering promotes whole f16 ops to f32 instead:
//! `promote-f16-compute`).
//! A vector comparison gives a mask vector of signed integers of the lane width
//! (`vec<4xi32>` for `vec<4xf32>`), all ones or all zeros per lane.
//!
//! Subscripts of `loops.load`/`loops.store` are one `index` per buffer
//! dimension; the element offset is `Σ index_i · stride_i` with the buffer's
//! strides (row-major when it has none). A vector access reads or writes
//! `lanes` consecutive elements starting at that offset; the last dimension
//! must then be contiguous (stride 1). Out-of-bounds accesses are undefined in
//! compiled code and an error in the interpreter, which checks every access.

pub mod builder;
pub mod interp;
mod ops;

pub use builder::{KernelBuilder, ProgramBuilder};
pub use ops::*;

use strata_ir::{Context, ElemType, Registry, Ty, TypeData, VectorType};

/// Registers the `loops` dialect.
pub fn register(r: &mut Registry) {
    ops::register(r);
}

/// Binary operations of `loops.binary` (`op` attribute).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinOp {
    /// `a + b` (wrapping for integers).
    Add,
    /// `a - b`.
    Sub,
    /// `a * b`.
    Mul,
    /// `a / b` (integers: truncating; division by zero is an error in the
    /// interpreter and gives the dividend in compiled code, which never traps).
    Div,
    /// Integer remainder (sign of the dividend).
    Rem,
    /// Minimum (floats: NaN if either is NaN).
    Min,
    /// Maximum (floats: NaN if either is NaN).
    Max,
    /// Bitwise and (integers, masks).
    And,
    /// Bitwise or.
    Or,
    /// Bitwise xor.
    Xor,
    /// `a ** b` (floats; a runtime helper call).
    Pow,
}

impl BinOp {
    /// Every op, in the order of the docs.
    pub const ALL: [BinOp; 11] = [
        BinOp::Add,
        BinOp::Sub,
        BinOp::Mul,
        BinOp::Div,
        BinOp::Rem,
        BinOp::Min,
        BinOp::Max,
        BinOp::And,
        BinOp::Or,
        BinOp::Xor,
        BinOp::Pow,
    ];

    /// The `op` attribute spelling.
    pub fn name(self) -> &'static str {
        match self {
            BinOp::Add => "add",
            BinOp::Sub => "sub",
            BinOp::Mul => "mul",
            BinOp::Div => "div",
            BinOp::Rem => "rem",
            BinOp::Min => "min",
            BinOp::Max => "max",
            BinOp::And => "and",
            BinOp::Or => "or",
            BinOp::Xor => "xor",
            BinOp::Pow => "pow",
        }
    }

    /// Parses the `op` attribute.
    pub fn from_name(s: &str) -> Option<BinOp> {
        BinOp::ALL.into_iter().find(|o| o.name() == s)
    }
}

/// Unary operations of `loops.unary` (`op` attribute).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnOp {
    /// `-a`.
    Neg,
    /// `|a|`.
    Abs,
    /// Square root (floats).
    Sqrt,
    /// Round toward −∞ (floats).
    Floor,
    /// Round toward +∞ (floats).
    Ceil,
    /// Round half away from zero (floats).
    Round,
    /// `e^a` (runtime helper).
    Exp,
    /// Natural logarithm (runtime helper).
    Log,
    /// Hyperbolic tangent (runtime helper).
    Tanh,
    /// Sine (runtime helper).
    Sin,
    /// Cosine (runtime helper).
    Cos,
    /// Error function (runtime helper).
    Erf,
    /// Bitwise not (integers, masks).
    Not,
}

impl UnOp {
    /// Every op.
    pub const ALL: [UnOp; 13] = [
        UnOp::Neg,
        UnOp::Abs,
        UnOp::Sqrt,
        UnOp::Floor,
        UnOp::Ceil,
        UnOp::Round,
        UnOp::Exp,
        UnOp::Log,
        UnOp::Tanh,
        UnOp::Sin,
        UnOp::Cos,
        UnOp::Erf,
        UnOp::Not,
    ];

    /// The `op` attribute spelling.
    pub fn name(self) -> &'static str {
        match self {
            UnOp::Neg => "neg",
            UnOp::Abs => "abs",
            UnOp::Sqrt => "sqrt",
            UnOp::Floor => "floor",
            UnOp::Ceil => "ceil",
            UnOp::Round => "round",
            UnOp::Exp => "exp",
            UnOp::Log => "log",
            UnOp::Tanh => "tanh",
            UnOp::Sin => "sin",
            UnOp::Cos => "cos",
            UnOp::Erf => "erf",
            UnOp::Not => "not",
        }
    }

    /// Parses the `op` attribute.
    pub fn from_name(s: &str) -> Option<UnOp> {
        UnOp::ALL.into_iter().find(|o| o.name() == s)
    }

    /// Whether compiled code calls a runtime helper (per lane for vectors).
    pub fn is_helper_call(self) -> bool {
        matches!(self, UnOp::Exp | UnOp::Log | UnOp::Tanh | UnOp::Sin | UnOp::Cos | UnOp::Erf)
    }
}

/// Comparison predicates of `loops.cmp` (`pred` attribute). Float comparisons
/// are ordered (false when either side is NaN) except `ne`, which is true then.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CmpPred {
    /// `==`.
    Eq,
    /// `!=`.
    Ne,
    /// `<`.
    Lt,
    /// `<=`.
    Le,
    /// `>`.
    Gt,
    /// `>=`.
    Ge,
}

impl CmpPred {
    /// Every predicate.
    pub const ALL: [CmpPred; 6] = [CmpPred::Eq, CmpPred::Ne, CmpPred::Lt, CmpPred::Le, CmpPred::Gt, CmpPred::Ge];

    /// The `pred` attribute spelling.
    pub fn name(self) -> &'static str {
        match self {
            CmpPred::Eq => "eq",
            CmpPred::Ne => "ne",
            CmpPred::Lt => "lt",
            CmpPred::Le => "le",
            CmpPred::Gt => "gt",
            CmpPred::Ge => "ge",
        }
    }

    /// Parses the `pred` attribute.
    pub fn from_name(s: &str) -> Option<CmpPred> {
        CmpPred::ALL.into_iter().find(|o| o.name() == s)
    }
}

/// Horizontal reductions of `loops.reduce_lanes` (`op` attribute).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LaneReduce {
    /// Sum of the lanes (in lane order: `((l0 + l1) + l2) + l3`).
    Add,
    /// Maximum.
    Max,
    /// Minimum.
    Min,
}

impl LaneReduce {
    /// The `op` attribute spelling.
    pub fn name(self) -> &'static str {
        match self {
            LaneReduce::Add => "add",
            LaneReduce::Max => "max",
            LaneReduce::Min => "min",
        }
    }

    /// Parses the `op` attribute.
    pub fn from_name(s: &str) -> Option<LaneReduce> {
        [LaneReduce::Add, LaneReduce::Max, LaneReduce::Min].into_iter().find(|o| o.name() == s)
    }
}

/// What a value type is, as the loops dialect sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueKind {
    /// `index`.
    Index,
    /// A scalar.
    Scalar(ElemType),
    /// A vector.
    Vector(VectorType),
    /// A buffer (or anything else): not a register value.
    Other,
}

impl ValueKind {
    /// Classifies `ty`.
    pub fn of(ctx: &Context, ty: Ty) -> ValueKind {
        match ctx.ty(ty) {
            TypeData::Index => ValueKind::Index,
            TypeData::Scalar(e) => ValueKind::Scalar(*e),
            TypeData::Vector(v) => ValueKind::Vector(*v),
            _ => ValueKind::Other,
        }
    }

    /// The element type of a scalar or vector.
    pub fn elem(self) -> Option<ElemType> {
        match self {
            ValueKind::Scalar(e) => Some(e),
            ValueKind::Vector(v) => Some(v.elem),
            _ => None,
        }
    }
}

/// The element types a 128-bit vector may have in this dialect.
pub fn vector_elem_ok(e: ElemType) -> bool {
    matches!(
        e,
        ElemType::F32 | ElemType::I32 | ElemType::I8 | ElemType::U8 | ElemType::F16 | ElemType::I16 | ElemType::U16
    )
}

/// The lane count of a 128-bit vector of `e`.
pub fn lanes_for(e: ElemType) -> u32 {
    (16 / e.size_bytes().max(1)) as u32
}

/// The mask type a comparison of `v` produces: signed integers of the lane width.
pub fn mask_elem(e: ElemType) -> ElemType {
    match e.size_bytes() {
        1 => ElemType::I8,
        2 => ElemType::I16,
        _ => ElemType::I32,
    }
}

#[cfg(test)]
mod tests;
