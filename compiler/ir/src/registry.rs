//! Op definitions and the registry that maps op names to them.
//!
//! An [`OpDef`] describes an op to the generic machinery: arity, attributes,
//! traits, regions, and optional hooks (extra verification, folding, reference
//! evaluation, custom text syntax). Dialects declare ops with [`define_op!`],
//! which also generates a typed, `Copy` view (`AddOp(OpId)`) with accessors.

use crate::attrs::AttrKind;
use crate::context::Context;
use crate::tensor::TensorData;
use crate::{OpId, ValueId};
use std::collections::BTreeMap;

/// How many operands or results an op takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arity {
    /// Exactly `n`.
    Exact(usize),
    /// `n` or more (the trailing ones are variadic).
    AtLeast(usize),
}

impl Arity {
    /// Whether `n` satisfies the arity.
    pub fn accepts(self, n: usize) -> bool {
        match self {
            Arity::Exact(k) => n == k,
            Arity::AtLeast(k) => n >= k,
        }
    }

    /// Human-readable form for diagnostics.
    pub fn describe(self) -> String {
        match self {
            Arity::Exact(k) => format!("{k}"),
            Arity::AtLeast(k) => format!("at least {k}"),
        }
    }
}

/// A bit set of op traits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct OpTraits(u32);

impl OpTraits {
    /// No traits.
    pub const NONE: OpTraits = OpTraits(0);
    /// No side effects: unused results make the op dead; equal ops may be merged.
    pub const PURE: OpTraits = OpTraits(1);
    /// Must be the last op of its block.
    pub const TERMINATOR: OpTraits = OpTraits(1 << 1);
    /// Regions may not use values defined outside the op.
    pub const ISOLATED_FROM_ABOVE: OpTraits = OpTraits(1 << 2);
    /// Produces a constant from its `value` attribute; no operands.
    pub const CONSTANT_LIKE: OpTraits = OpTraits(1 << 3);
    /// Operand order does not matter (binary ops).
    pub const COMMUTATIVE: OpTraits = OpTraits(1 << 4);
    /// Defines a symbol with its `sym_name` attribute.
    pub const SYMBOL: OpTraits = OpTraits(1 << 5);

    /// The union of two sets (usable in constants).
    pub const fn union(self, other: OpTraits) -> OpTraits {
        OpTraits(self.0 | other.0)
    }

    /// Whether every trait of `other` is in `self`.
    pub const fn contains(self, other: OpTraits) -> bool {
        self.0 & other.0 == other.0
    }
}

/// One attribute an op accepts.
#[derive(Clone, Copy, Debug)]
pub struct AttrSpec {
    /// Key.
    pub name: &'static str,
    /// Expected kind.
    pub kind: AttrKind,
    /// Whether the op is invalid without it.
    pub required: bool,
}

/// Op-specific verification: push one message per problem found.
pub type VerifyFn = fn(&Context, OpId, &mut Vec<String>);

/// What folding an op produced for one result.
#[derive(Clone, Debug, PartialEq)]
pub enum FoldResult {
    /// The result equals an existing value.
    Value(ValueId),
    /// The result is this constant.
    Const(TensorData),
}

/// Op-specific folding (identities such as `x + 0 -> x`): one entry per result, or
/// `None` if the op does not fold. Constant operands are read with
/// [`Context::constant_value`]. Must not fold to something of another type.
pub type FoldFn = fn(&Context, OpId) -> Option<Vec<FoldResult>>;

/// What infer and eval hooks see of an op: its name, attributes and operand
/// types, and (for eval) its result types. The op itself need not exist yet:
/// eager execution and graph building infer result types before creating it.
#[derive(Clone, Copy)]
pub struct OpCx<'a> {
    /// The context that interns the types and attributes.
    pub ctx: &'a Context,
    /// Full op name.
    pub name: &'a str,
    /// Attributes.
    pub attrs: AttrList<'a>,
    /// Operand types.
    pub operand_types: &'a [crate::Ty],
    /// Result types (empty while inferring them).
    pub result_types: &'a [crate::Ty],
}

impl<'a> OpCx<'a> {
    /// The context of an existing op.
    pub fn of_op(ctx: &'a Context, op: OpId, operand_types: &'a [crate::Ty], result_types: &'a [crate::Ty]) -> Self {
        OpCx { ctx, name: ctx.op_name(op), attrs: AttrList::of_op(ctx, op), operand_types, result_types }
    }

    /// Operand `i`'s tensor type, or an error naming it.
    pub fn tensor(&self, i: usize) -> Result<&'a crate::TensorType, String> {
        let ty = *self.operand_types.get(i).ok_or_else(|| format!("missing operand #{i}"))?;
        self.ctx
            .ty(ty)
            .as_tensor()
            .ok_or_else(|| format!("operand #{i} must be a tensor, is {}", crate::print::type_to_string(self.ctx, ty)))
    }

    /// Result `i`'s tensor type (during eval), or an error.
    pub fn result_tensor(&self, i: usize) -> Result<&'a crate::TensorType, String> {
        let ty = *self.result_types.get(i).ok_or_else(|| format!("missing result #{i}"))?;
        self.ctx.ty(ty).as_tensor().ok_or_else(|| format!("result #{i} must be a tensor"))
    }
}

/// Shape inference: the result types from operand types and attributes.
/// The verifier compares them with the declared result types.
pub type InferFn = fn(&OpCx<'_>) -> Result<Vec<crate::TypeData>, String>;

/// Reference evaluation: the op's results from concrete operand tensors.
/// Naive and obviously correct; the oracle for every optimised path.
pub type EvalFn = fn(&OpCx<'_>, &[TensorData]) -> Result<Vec<TensorData>, String>;

/// An op's attributes (of an existing op, or a list about to become one) with
/// typed access that reports missing or ill-kinded attributes as errors.
#[derive(Clone, Copy)]
pub struct AttrList<'a> {
    ctx: &'a Context,
    items: &'a [(crate::Sym, crate::Attr)],
}

impl<'a> AttrList<'a> {
    /// A view of `items` (sorted or not).
    pub fn new(ctx: &'a Context, items: &'a [(crate::Sym, crate::Attr)]) -> Self {
        AttrList { ctx, items }
    }

    /// The attributes of `op`.
    pub fn of_op(ctx: &'a Context, op: OpId) -> Self {
        AttrList { ctx, items: &ctx.op(op).attrs }
    }

    /// Every `(key, value)`.
    pub fn items(&self) -> &'a [(crate::Sym, crate::Attr)] {
        self.items
    }

    /// The raw attribute `key`.
    pub fn get(&self, key: &str) -> Option<crate::Attr> {
        self.items.iter().find(|(k, _)| self.ctx.str(*k) == key).map(|&(_, a)| a)
    }

    /// Required attribute `key` of kind `K`.
    pub fn req<K: attr_kind::Get>(&self, key: &str) -> Result<K::Out<'a>, String> {
        self.opt::<K>(key)?.ok_or_else(|| format!("requires attribute `{key}`"))
    }

    /// Optional attribute `key` of kind `K` (present with another kind is an error).
    pub fn opt<K: attr_kind::Get>(&self, key: &str) -> Result<Option<K::Out<'a>>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(a) => K::get(self.ctx, a).map(Some).ok_or_else(|| {
                format!("attribute `{key}` has the wrong kind: {}", crate::print::attr_to_string(self.ctx, a))
            }),
        }
    }

    /// Required integer.
    pub fn int(&self, key: &str) -> Result<i64, String> {
        self.req::<attr_kind::Int>(key)
    }

    /// Required integer array.
    pub fn ints(&self, key: &str) -> Result<Vec<i64>, String> {
        self.req::<attr_kind::Ints>(key)
    }

    /// Required float (integers accepted).
    pub fn float(&self, key: &str) -> Result<f64, String> {
        self.req::<attr_kind::Float>(key)
    }

    /// Required string.
    pub fn str(&self, key: &str) -> Result<&'a str, String> {
        self.req::<attr_kind::Str>(key)
    }

    /// Optional bool, `false` when absent.
    pub fn flag(&self, key: &str) -> Result<bool, String> {
        Ok(self.opt::<attr_kind::Bool>(key)?.unwrap_or(false))
    }
}

/// A custom textual form for an op, introduced by a keyword (e.g. `func`).
#[derive(Clone, Copy)]
pub struct CustomSyntax {
    /// The keyword that starts the custom form.
    pub keyword: &'static str,
    /// Prints the op (without leading indentation or trailing newline).
    pub print: fn(&mut crate::print::Printer<'_>, OpId),
    /// Parses the op (named by the second argument) after its keyword, inserting
    /// it at the parser's insertion point.
    pub parse: fn(&mut crate::parse::Parser<'_>, &'static str, crate::Loc) -> Result<OpId, crate::ParseError>,
}

impl std::fmt::Debug for CustomSyntax {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CustomSyntax").field("keyword", &self.keyword).finish()
    }
}

/// The description of one op kind.
#[derive(Clone, Copy, Debug)]
pub struct OpDef {
    /// Full name, `dialect.op`.
    pub name: &'static str,
    /// One-line summary.
    pub summary: &'static str,
    /// Operand count.
    pub operands: Arity,
    /// Result count.
    pub results: Arity,
    /// Number of regions.
    pub regions: usize,
    /// Attributes the op accepts (others are rejected by the verifier).
    pub attrs: &'static [AttrSpec],
    /// Traits.
    pub traits: OpTraits,
    /// Extra verification.
    pub verify: Option<VerifyFn>,
    /// Folding.
    pub fold: Option<FoldFn>,
    /// Whether this op instance is commutative, for ops where it depends on
    /// attributes (the `COMMUTATIVE` trait says "always").
    pub commutative: Option<fn(&Context, OpId) -> bool>,
    /// Shape inference.
    pub infer: Option<InferFn>,
    /// Reference evaluation.
    pub eval: Option<EvalFn>,
    /// Name of the op that must terminate each block of this op's regions.
    pub terminator: Option<&'static str>,
    /// Custom text form.
    pub syntax: Option<CustomSyntax>,
}

impl OpDef {
    /// Whether operand order of `op` does not matter.
    pub fn is_commutative(&self, ctx: &Context, op: OpId) -> bool {
        self.traits.contains(OpTraits::COMMUTATIVE) || self.commutative.is_some_and(|f| f(ctx, op))
    }

    /// The dialect prefix of the name (`graph` for `graph.conv2d`).
    pub fn dialect(&self) -> &'static str {
        self.name.split_once('.').map_or(self.name, |(d, _)| d)
    }
}

/// An error registering an op.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RegistryError {
    /// Two definitions share a name.
    #[error("op `{0}` is registered twice")]
    Duplicate(String),
    /// The name has no `dialect.` prefix.
    #[error("op name `{0}` must be `dialect.name`")]
    BadName(String),
    /// Two custom forms share a keyword.
    #[error("custom syntax keyword `{0}` is registered twice")]
    DuplicateKeyword(String),
}

/// Maps op names to definitions. Built once, shared by contexts (`Arc`).
#[derive(Clone, Debug)]
pub struct Registry {
    ops: BTreeMap<&'static str, OpDef>,
    keywords: BTreeMap<&'static str, &'static str>,
    constant_ops: BTreeMap<&'static str, &'static str>,
    /// Ops of this dialect print and parse without their `dialect.` prefix.
    pub default_dialect: &'static str,
    /// The op that wraps a parsed file (a module with one region and block).
    pub module_op: &'static str,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            ops: BTreeMap::new(),
            keywords: BTreeMap::new(),
            constant_ops: BTreeMap::new(),
            default_dialect: "func",
            module_op: "func.module",
        }
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an op definition.
    pub fn register(&mut self, def: OpDef) -> Result<(), RegistryError> {
        if !def.name.contains('.') {
            return Err(RegistryError::BadName(def.name.to_string()));
        }
        if self.ops.contains_key(def.name) {
            return Err(RegistryError::Duplicate(def.name.to_string()));
        }
        if let Some(syntax) = def.syntax
            && self.keywords.insert(syntax.keyword, def.name).is_some()
        {
            return Err(RegistryError::DuplicateKeyword(syntax.keyword.to_string()));
        }
        self.ops.insert(def.name, def);
        Ok(())
    }

    /// Declares `op` (constant-like, with a `value` attribute) as the op that
    /// materialises folded constants for `dialect`.
    pub fn set_constant_op(&mut self, dialect: &'static str, op: &'static str) {
        self.constant_ops.insert(dialect, op);
    }

    /// The constant op of `dialect`.
    pub fn constant_op(&self, dialect: &str) -> Option<&'static str> {
        self.constant_ops.get(dialect).copied()
    }

    /// The definition of `name`.
    pub fn get(&self, name: &str) -> Option<&OpDef> {
        self.ops.get(name)
    }

    /// The op introduced by custom-syntax keyword `kw`.
    pub fn keyword(&self, kw: &str) -> Option<&OpDef> {
        self.keywords.get(kw).and_then(|name| self.ops.get(name))
    }

    /// Every definition, sorted by name.
    pub fn ops(&self) -> impl Iterator<Item = &OpDef> {
        self.ops.values()
    }
}

/// A typed view of an op: a `Copy` wrapper around [`OpId`] whose name was checked.
pub trait OpView: Copy {
    /// The op name this view matches.
    const NAME: &'static str;

    /// Wraps `op` without checking its name.
    fn wrap(op: OpId) -> Self;

    /// The wrapped op.
    fn op(self) -> OpId;

    /// Wraps `op` if it has this view's name.
    fn cast(ctx: &Context, op: OpId) -> Option<Self> {
        (ctx.op_name(op) == Self::NAME).then(|| Self::wrap(op))
    }
}

/// Typed access to attribute kinds, used by the accessors [`define_op!`] generates.
pub mod attr_kind {
    use crate::attrs::{AttrData, DenseAttr};
    use crate::context::Context;
    use crate::types::Layout as LayoutValue;
    use crate::{Attr, Ty};

    /// Reads an attribute as a Rust value.
    pub trait Get {
        /// The Rust value.
        type Out<'a>;
        /// The value, or `None` if the attribute has another kind.
        fn get(ctx: &Context, attr: Attr) -> Option<Self::Out<'_>>;
    }

    macro_rules! kind {
        ($(#[$m:meta])* $name:ident, $out:ty, |$ctx:ident, $d:ident| $body:expr) => {
            $(#[$m])*
            #[derive(Debug)]
            pub enum $name {}
            impl Get for $name {
                type Out<'a> = $out;
                fn get($ctx: &Context, attr: Attr) -> Option<Self::Out<'_>> {
                    let $d = $ctx.attr(attr);
                    $body
                }
            }
        };
    }

    kind!(/// `bool`.
        Bool, bool, |_c, d| match d { AttrData::Bool(b) => Some(*b), _ => None });
    kind!(/// `i64`.
        Int, i64, |_c, d| match d { AttrData::Int(i) => Some(*i), _ => None });
    kind!(/// `f64` (integers are converted).
        Float, f64, |_c, d| match d {
        AttrData::Float(f) => Some(f.get()),
        AttrData::Int(i) => Some(*i as f64),
        _ => None,
    });
    kind!(/// `&str`.
        Str, &'a str, |_c, d| match d { AttrData::Str(s) => Some(s.as_str()), _ => None });
    kind!(/// `Vec<i64>`.
        Ints, Vec<i64>, |c, d| match d {
        AttrData::Array(items) => items.iter().map(|&a| Int::get(c, a)).collect(),
        _ => None,
    });
    kind!(/// `Vec<f64>`.
        Floats, Vec<f64>, |c, d| match d {
        AttrData::Array(items) => items.iter().map(|&a| Float::get(c, a)).collect(),
        _ => None,
    });
    kind!(/// `&[Attr]`.
        Array, &'a [Attr], |_c, d| match d { AttrData::Array(a) => Some(a.as_slice()), _ => None });
    kind!(/// `&[(String, Attr)]`.
        Dict, &'a [(String, Attr)], |_c, d| match d { AttrData::Dict(a) => Some(a.as_slice()), _ => None });
    kind!(/// A [`Ty`].
        Type, Ty, |_c, d| match d { AttrData::Type(t) => Some(*t), _ => None });
    kind!(/// A [`Layout`].
        Layout, LayoutValue, |_c, d| match d { AttrData::Layout(l) => Some(*l), _ => None });
    kind!(/// A `&DenseAttr`.
        Dense, &'a DenseAttr, |_c, d| match d { AttrData::Dense(x) => Some(x), _ => None });
    kind!(/// The symbol name, `&str`.
        SymbolRef, &'a str, |_c, d| match d { AttrData::SymbolRef(s) => Some(s.as_str()), _ => None });
    /// The raw [`Attr`].
    #[derive(Debug)]
    pub enum Any {}
    impl Get for Any {
        type Out<'a> = Attr;
        fn get(_ctx: &Context, attr: Attr) -> Option<Attr> {
            Some(attr)
        }
    }
}

/// Position of `name` in `names` (a `const fn` so accessor indices are compile-time).
pub const fn name_index(names: &[&str], name: &str) -> usize {
    let mut i = 0;
    while i < names.len() {
        if str_eq(names[i], name) {
            return i;
        }
        i += 1;
    }
    panic!("define_op!: accessor name not found")
}

const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Declares an op: its [`OpDef`] (as the associated constant `DEF`) and a typed view
/// with one accessor per named operand, result and attribute.
///
/// ```
/// strata_ir::define_op! {
///     /// Elementwise addition with broadcasting.
///     pub struct AddOp = "demo.add" {
///         summary: "elementwise addition",
///         operands: [lhs, rhs],
///         results: [output],
///         attrs: {},
///         optional_attrs: {},
///         traits: [PURE, COMMUTATIVE],
///     }
/// }
/// assert_eq!(AddOp::DEF.name, "demo.add");
/// ```
///
/// Optional trailing keys, in this order: `variadic: name,` (operands after the
/// fixed ones), `variadic_results: name,`, `regions: N,`, `terminator: "op",`,
/// `verify: path,`, `fold: path,`, `commutative: path,`, `infer: path,`, `eval: path,`,
/// `syntax: expr,`.
#[macro_export]
macro_rules! define_op {
    (
        $(#[$meta:meta])*
        $vis:vis struct $Name:ident = $opname:literal {
            summary: $summary:literal,
            operands: [$($operand:ident),* $(,)?],
            results: [$($result:ident),* $(,)?],
            attrs: { $($attr:ident : $akind:ident),* $(,)? },
            optional_attrs: { $($oattr:ident : $okind:ident),* $(,)? },
            traits: [$($trait:ident),* $(,)?],
            $(variadic: $voperand:ident,)?
            $(variadic_results: $vresult:ident,)?
            $(regions: $regions:literal,)?
            $(terminator: $terminator:expr,)?
            $(verify: $verify:expr,)?
            $(fold: $fold:expr,)?
            $(commutative: $commutative:expr,)?
            $(infer: $infer:expr,)?
            $(eval: $eval:expr,)?
            $(syntax: $syntax:expr,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        $vis struct $Name(pub $crate::OpId);

        impl $crate::OpView for $Name {
            const NAME: &'static str = $opname;
            fn wrap(op: $crate::OpId) -> Self {
                $Name(op)
            }
            fn op(self) -> $crate::OpId {
                self.0
            }
        }

        #[allow(dead_code)]
        impl $Name {
            const OPERAND_NAMES: &'static [&'static str] = &[$(stringify!($operand)),*];
            const RESULT_NAMES: &'static [&'static str] = &[$(stringify!($result)),*];

            /// The op's definition, for registration.
            pub const DEF: $crate::OpDef = $crate::OpDef {
                name: $opname,
                summary: $summary,
                operands: $crate::define_op!(@arity [$($operand),*] $($voperand)?),
                results: $crate::define_op!(@arity [$($result),*] $($vresult)?),
                regions: $crate::define_op!(@or_zero $($regions)?),
                attrs: &[
                    $($crate::AttrSpec { name: stringify!($attr), kind: $crate::AttrKind::$akind, required: true },)*
                    $($crate::AttrSpec { name: stringify!($oattr), kind: $crate::AttrKind::$okind, required: false },)*
                ],
                traits: $crate::OpTraits::NONE $(.union($crate::OpTraits::$trait))*,
                verify: $crate::define_op!(@opt $($verify)?),
                fold: $crate::define_op!(@opt $($fold)?),
                commutative: $crate::define_op!(@opt $($commutative)?),
                infer: $crate::define_op!(@opt $($infer)?),
                eval: $crate::define_op!(@opt $($eval)?),
                terminator: $crate::define_op!(@opt $($terminator)?),
                syntax: $crate::define_op!(@opt $($syntax)?),
            };

            $(
                #[doc = concat!("Operand `", stringify!($operand), "`.")]
                pub fn $operand(self, ctx: &$crate::Context) -> $crate::ValueId {
                    const I: usize = $crate::registry::name_index($Name::OPERAND_NAMES, stringify!($operand));
                    ctx.op(self.0).operands[I]
                }
            )*
            $(
                #[doc = concat!("The variadic operands `", stringify!($voperand), "`.")]
                pub fn $voperand(self, ctx: &$crate::Context) -> &[$crate::ValueId] {
                    &ctx.op(self.0).operands[$Name::OPERAND_NAMES.len()..]
                }
            )?
            $(
                #[doc = concat!("Result `", stringify!($result), "`.")]
                pub fn $result(self, ctx: &$crate::Context) -> $crate::ValueId {
                    const I: usize = $crate::registry::name_index($Name::RESULT_NAMES, stringify!($result));
                    ctx.op(self.0).results[I]
                }
            )*
            $(
                #[doc = concat!("The variadic results `", stringify!($vresult), "`.")]
                pub fn $vresult(self, ctx: &$crate::Context) -> &[$crate::ValueId] {
                    &ctx.op(self.0).results[$Name::RESULT_NAMES.len()..]
                }
            )?
            $(
                #[doc = concat!("Attribute `", stringify!($attr), "` (required; the op must be verified).")]
                pub fn $attr(self, ctx: &$crate::Context) -> <$crate::registry::attr_kind::$akind as $crate::registry::attr_kind::Get>::Out<'_> {
                    let attr = ctx.op_attr(self.0, stringify!($attr))
                        .expect(concat!("invariant: verified op has attribute `", stringify!($attr), "`"));
                    <$crate::registry::attr_kind::$akind as $crate::registry::attr_kind::Get>::get(ctx, attr)
                        .expect(concat!("invariant: verified attribute `", stringify!($attr), "` has its kind"))
                }
            )*
            $(
                #[doc = concat!("Attribute `", stringify!($oattr), "`, if present.")]
                pub fn $oattr(self, ctx: &$crate::Context) -> Option<<$crate::registry::attr_kind::$okind as $crate::registry::attr_kind::Get>::Out<'_>> {
                    let attr = ctx.op_attr(self.0, stringify!($oattr))?;
                    <$crate::registry::attr_kind::$okind as $crate::registry::attr_kind::Get>::get(ctx, attr)
                }
            )*
        }
    };
    (@arity [$($x:ident),*]) => { $crate::Arity::Exact($crate::define_op!(@count $($x)*)) };
    (@arity [$($x:ident),*] $v:ident) => { $crate::Arity::AtLeast($crate::define_op!(@count $($x)*)) };
    (@count) => { 0usize };
    (@count $head:ident $($tail:ident)*) => { 1usize + $crate::define_op!(@count $($tail)*) };
    (@or_zero) => { 0 };
    (@or_zero $n:literal) => { $n };
    (@opt) => { None };
    (@opt $x:expr) => { Some($x) };
}
