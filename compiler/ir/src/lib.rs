//! strata-ir: the IR core every level of strata shares.
//!
//! - [`Context`] owns arenas of operations, values, blocks and regions addressed by
//!   `u32` handles ([`OpId`], [`ValueId`], [`BlockId`], [`RegionId`]), and interns
//!   [types](TypeData) and [attributes](AttrData).
//! - Ops are generic data with typed views declared by [`define_op!`]; a
//!   [`Registry`] maps op names to [`OpDef`]s.
//! - All structural change goes through a [`Rewriter`].
//! - [`verify()`] collects every problem as a [`Diagnostic`].
//! - [`print`] and [`parse`] implement the text format (`docs/ir.md`).
//! - [`pass`] holds the [`Pass`](pass::Pass) trait, the pass registry, textual
//!   pipelines and the pass manager.
//! - [`TensorData`] is host tensor storage, used by dense constants and the
//!   reference evaluator.

pub mod attrs;
pub mod context;
pub mod diag;
mod entity;
pub mod parse;
pub mod pass;
pub mod print;
pub mod registry;
pub mod rewriter;
pub mod syntax;
pub mod tensor;
pub mod types;
pub mod verify;

pub use attrs::{AttrData, AttrKind, DenseAttr, DenseStorage, FloatBits};
pub use context::{BlockData, Context, Loc, OpData, RegionData, Use, ValueData, ValueDef};
pub use diag::{Diagnostic, Source};
pub use entity::{Attr, BlockId, OpId, RegionId, Sym, Ty, ValueId};
pub use parse::{ParseError, ParseOptions, parse_attr_str, parse_module, parse_type_str};
pub use print::{PrintOptions, attr_to_string, print_module, print_op, type_to_string};
pub use registry::attr_kind;
pub use registry::{
    Arity, AttrList, AttrSpec, CustomSyntax, EvalFn, FoldFn, FoldResult, InferFn, OpCx, OpDef, OpTraits, OpView,
    Registry, RegistryError, VerifyFn,
};
pub use rewriter::{InsertPoint, OpBuild, Rewriter};
pub use tensor::{TensorData, TensorError};
pub use types::{BufferType, Dim, ElemType, FuncType, Layout, QScale, TensorType, TypeData, VectorType};
pub use verify::{VerifyOptions, verify};

#[cfg(test)]
mod tests;
