//! The closed set of attributes: compile-time constants attached to operations.

use crate::tensor::TensorData;
use crate::types::Layout;
use crate::{Attr, Ty};
use std::fmt;

/// A float attribute value, compared and hashed by its bit pattern.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct FloatBits(u64);

impl FloatBits {
    /// Wraps `v`.
    pub fn new(v: f64) -> Self {
        FloatBits(v.to_bits())
    }

    /// The value.
    pub fn get(self) -> f64 {
        f64::from_bits(self.0)
    }
}

impl fmt::Debug for FloatBits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.get())
    }
}

/// The storage of a dense constant.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum DenseStorage {
    /// The data itself.
    Data(TensorData),
    /// Data left out of a printed module (`#blob<0x…>`): only its content hash is
    /// known. Such a constant prints and round-trips, but cannot be evaluated.
    Elided {
        /// [`TensorData::content_hash`] of the missing data.
        hash: u64,
    },
}

/// A dense constant: a tensor type and its data.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DenseAttr {
    /// The tensor type the data has (fixed shape).
    pub ty: Ty,
    /// The data, or a reference to elided data.
    pub storage: DenseStorage,
}

impl DenseAttr {
    /// The data, unless it was elided.
    pub fn data(&self) -> Option<&TensorData> {
        match &self.storage {
            DenseStorage::Data(d) => Some(d),
            DenseStorage::Elided { .. } => None,
        }
    }
}

/// The data of an interned attribute.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum AttrData {
    /// `true` / `false`.
    Bool(bool),
    /// A signed integer: `3`, `-1`.
    Int(i64),
    /// A float: `0.5`, `1e-5`, `inf`, `nan`.
    Float(FloatBits),
    /// A string: `"conv1"`.
    Str(String),
    /// An array: `[1, 2]`.
    Array(Vec<Attr>),
    /// A dictionary with keys in sorted order: `{a = 1, b = 2}`.
    Dict(Vec<(String, Attr)>),
    /// A type: `f32`, `tensor<4xf32>`.
    Type(Ty),
    /// A layout: `#nchw88`.
    Layout(Layout),
    /// A dense tensor constant: `dense<[1.0, 2.0]> : tensor<2xf32>`.
    Dense(DenseAttr),
    /// A reference to a symbol (a function): `@main`.
    SymbolRef(String),
}

/// The kinds of attribute an op definition can require, for verification.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttrKind {
    /// [`AttrData::Bool`].
    Bool,
    /// [`AttrData::Int`].
    Int,
    /// [`AttrData::Float`] (an `Int` is accepted and read as a float).
    Float,
    /// [`AttrData::Str`].
    Str,
    /// An array of `Int`.
    Ints,
    /// An array of `Float` or `Int`.
    Floats,
    /// Any [`AttrData::Array`].
    Array,
    /// [`AttrData::Dict`].
    Dict,
    /// [`AttrData::Type`].
    Type,
    /// [`AttrData::Layout`].
    Layout,
    /// [`AttrData::Dense`].
    Dense,
    /// [`AttrData::SymbolRef`].
    SymbolRef,
    /// Anything.
    Any,
}

impl AttrKind {
    /// How the kind is named in diagnostics.
    pub fn describe(self) -> &'static str {
        match self {
            AttrKind::Bool => "a bool",
            AttrKind::Int => "an integer",
            AttrKind::Float => "a float",
            AttrKind::Str => "a string",
            AttrKind::Ints => "an array of integers",
            AttrKind::Floats => "an array of floats",
            AttrKind::Array => "an array",
            AttrKind::Dict => "a dictionary",
            AttrKind::Type => "a type",
            AttrKind::Layout => "a layout",
            AttrKind::Dense => "a dense constant",
            AttrKind::SymbolRef => "a symbol reference",
            AttrKind::Any => "any attribute",
        }
    }
}
