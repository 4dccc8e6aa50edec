//! The [`Context`]: arenas of operations, values, blocks and regions, plus the
//! type, attribute and string interners and the op registry.
//!
//! Reading goes through `&Context`; every change to the IR structure goes through
//! a [`Rewriter`](crate::Rewriter), which keeps use-lists consistent and records
//! whether anything changed. Interning types and attributes is not a change to
//! the IR and only needs `&mut Context`.

use crate::attrs::{AttrData, DenseStorage};
use crate::registry::{OpDef, Registry};
use crate::tensor::TensorData;
use crate::types::{TensorType, TypeData};
use crate::{Attr, BlockId, OpId, RegionId, Sym, Ty, ValueId};
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;

/// A source location: the traced call site (or text position) and an optional name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Loc {
    /// File, if known.
    pub file: Option<Sym>,
    /// 1-based line (0 when unknown).
    pub line: u32,
    /// 1-based column (0 when unknown).
    pub col: u32,
    /// A user-visible name (MegEngine's operator name).
    pub name: Option<Sym>,
}

impl Loc {
    /// No location.
    pub const UNKNOWN: Loc = Loc { file: None, line: 0, col: 0, name: None };

    /// Whether nothing is known.
    pub fn is_unknown(&self) -> bool {
        self.file.is_none() && self.name.is_none()
    }
}

/// Where an operand sits: the user op and the operand index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Use {
    /// The op that uses the value.
    pub op: OpId,
    /// Which operand of `op`.
    pub index: u32,
}

/// How a value is defined.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ValueDef {
    /// Result `index` of `op`.
    OpResult {
        /// The defining op.
        op: OpId,
        /// Result index.
        index: u32,
    },
    /// Argument `index` of `block`.
    BlockArg {
        /// The block.
        block: BlockId,
        /// Argument index.
        index: u32,
    },
}

/// An operation: name, operands, results, sorted attributes, regions, location.
#[derive(Clone, Debug)]
pub struct OpData {
    /// Interned op name (`graph.conv2d`).
    pub name: Sym,
    /// Operand values.
    pub operands: Vec<ValueId>,
    /// Result values.
    pub results: Vec<ValueId>,
    /// Attributes, sorted by key string, keys unique.
    pub attrs: Vec<(Sym, Attr)>,
    /// Nested regions.
    pub regions: Vec<RegionId>,
    /// The block this op sits in (`None` while detached or for a top-level module).
    pub parent: Option<BlockId>,
    /// Location.
    pub loc: Loc,
}

/// An SSA value.
#[derive(Clone, Debug)]
pub struct ValueData {
    /// Its type.
    pub ty: Ty,
    /// Its definition.
    pub def: ValueDef,
    /// Every use, in no particular order.
    pub uses: Vec<Use>,
    /// A name hint for printing (`%conv1`), never purely numeric.
    pub name: Option<Sym>,
}

/// A block: arguments and ops in order.
#[derive(Clone, Debug, Default)]
pub struct BlockData {
    /// Block arguments.
    pub args: Vec<ValueId>,
    /// Operations in execution order.
    pub ops: Vec<OpId>,
    /// The region that holds this block.
    pub parent: Option<RegionId>,
}

/// A region: the blocks of one op's body.
#[derive(Clone, Debug, Default)]
pub struct RegionData {
    /// Blocks; the first is the entry block.
    pub blocks: Vec<BlockId>,
    /// The op that owns this region.
    pub parent: Option<OpId>,
}

/// An interner: values stored once, addressed by dense handles.
#[derive(Clone, Debug)]
struct Interner<T> {
    items: Vec<T>,
    map: HashMap<T, u32>,
}

impl<T: Clone + Eq + Hash> Interner<T> {
    fn new() -> Self {
        Interner { items: Vec::new(), map: HashMap::new() }
    }

    fn intern(&mut self, item: T) -> usize {
        if let Some(&i) = self.map.get(&item) {
            return i as usize;
        }
        let i = self.items.len();
        self.map.insert(item.clone(), u32::try_from(i).expect("invariant: < 2^32 interned items"));
        self.items.push(item);
        i
    }
}

impl Interner<String> {
    fn lookup_str(&self, s: &str) -> Option<usize> {
        self.map.get(s).map(|&i| i as usize)
    }
}

/// Owns all IR entities of one or more modules.
#[derive(Clone)]
pub struct Context {
    pub(crate) ops: Vec<Option<OpData>>,
    pub(crate) values: Vec<Option<ValueData>>,
    pub(crate) blocks: Vec<Option<BlockData>>,
    pub(crate) regions: Vec<Option<RegionData>>,
    types: Interner<TypeData>,
    attrs: Interner<AttrData>,
    strings: Interner<String>,
    registry: Arc<Registry>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("ops", &self.ops.len())
            .field("values", &self.values.len())
            .field("types", &self.types.items.len())
            .field("attrs", &self.attrs.items.len())
            .finish()
    }
}

impl Context {
    /// An empty context whose ops are described by `registry`.
    pub fn new(registry: Arc<Registry>) -> Self {
        Context {
            ops: Vec::new(),
            values: Vec::new(),
            blocks: Vec::new(),
            regions: Vec::new(),
            types: Interner::new(),
            attrs: Interner::new(),
            strings: Interner::new(),
            registry,
        }
    }

    /// The op registry.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The shared op registry.
    pub fn registry_arc(&self) -> Arc<Registry> {
        self.registry.clone()
    }

    // ---- interning -------------------------------------------------------------

    /// Interns a type.
    pub fn intern_type(&mut self, data: TypeData) -> Ty {
        Ty::from_index(self.types.intern(data))
    }

    /// Interns a tensor type.
    pub fn tensor_type(&mut self, t: TensorType) -> Ty {
        self.intern_type(TypeData::Tensor(t))
    }

    /// The data of a type.
    pub fn ty(&self, ty: Ty) -> &TypeData {
        &self.types.items[ty.index()]
    }

    /// Interns an attribute.
    pub fn intern_attr(&mut self, data: AttrData) -> Attr {
        Attr::from_index(self.attrs.intern(data))
    }

    /// The data of an attribute.
    pub fn attr(&self, attr: Attr) -> &AttrData {
        &self.attrs.items[attr.index()]
    }

    /// Interns a string.
    pub fn sym(&mut self, s: &str) -> Sym {
        if let Some(i) = self.strings.lookup_str(s) {
            return Sym::from_index(i);
        }
        Sym::from_index(self.strings.intern(s.to_string()))
    }

    /// The interned string, if `s` was ever interned (does not intern).
    pub fn lookup_sym(&self, s: &str) -> Option<Sym> {
        self.strings.lookup_str(s).map(Sym::from_index)
    }

    /// The text of an interned string.
    pub fn str(&self, sym: Sym) -> &str {
        &self.strings.items[sym.index()]
    }

    // ---- entity access -----------------------------------------------------------

    /// An operation. Panics on an erased op (a stale handle is a bug in a pass).
    pub fn op(&self, op: OpId) -> &OpData {
        self.ops[op.index()].as_ref().expect("invariant: op handle is live")
    }

    /// Whether `op` has not been erased.
    pub fn is_live(&self, op: OpId) -> bool {
        self.ops.get(op.index()).is_some_and(Option::is_some)
    }

    /// A value. Panics on an erased value.
    pub fn value(&self, v: ValueId) -> &ValueData {
        self.values[v.index()].as_ref().expect("invariant: value handle is live")
    }

    /// A block. Panics on an erased block.
    pub fn block(&self, b: BlockId) -> &BlockData {
        self.blocks[b.index()].as_ref().expect("invariant: block handle is live")
    }

    /// A region. Panics on an erased region.
    pub fn region(&self, r: RegionId) -> &RegionData {
        self.regions[r.index()].as_ref().expect("invariant: region handle is live")
    }

    /// The op's name as text.
    pub fn op_name(&self, op: OpId) -> &str {
        self.str(self.op(op).name)
    }

    /// The registered definition of `op`, if its name is registered.
    pub fn op_def(&self, op: OpId) -> Option<&OpDef> {
        self.registry.get(self.op_name(op))
    }

    /// The type of a value.
    pub fn value_type(&self, v: ValueId) -> Ty {
        self.value(v).ty
    }

    /// The tensor type of a value, if it is a tensor.
    pub fn value_tensor(&self, v: ValueId) -> Option<&TensorType> {
        self.ty(self.value(v).ty).as_tensor()
    }

    /// Attribute `key` of `op`.
    pub fn op_attr(&self, op: OpId, key: &str) -> Option<Attr> {
        let sym = self.lookup_sym(key)?;
        let attrs = &self.op(op).attrs;
        attrs.iter().find(|(k, _)| *k == sym).map(|&(_, a)| a)
    }

    /// The op defining `v`, if `v` is an op result.
    pub fn defining_op(&self, v: ValueId) -> Option<OpId> {
        match self.value(v).def {
            ValueDef::OpResult { op, .. } => Some(op),
            ValueDef::BlockArg { .. } => None,
        }
    }

    /// The op whose region contains the block that holds `op`.
    pub fn parent_op(&self, op: OpId) -> Option<OpId> {
        let block = self.op(op).parent?;
        let region = self.block(block).parent?;
        self.region(region).parent
    }

    /// The single block of region `index` of `op`.
    pub fn body(&self, op: OpId, index: usize) -> Option<BlockId> {
        let r = *self.op(op).regions.get(index)?;
        self.region(r).blocks.first().copied()
    }

    /// The constant value of `v` if it is produced by a constant-like op whose
    /// `value` attribute holds data.
    pub fn constant_value(&self, v: ValueId) -> Option<&TensorData> {
        let op = self.defining_op(v)?;
        if !self.op_def(op)?.traits.contains(crate::OpTraits::CONSTANT_LIKE) {
            return None;
        }
        match self.attr(self.op_attr(op, "value")?) {
            AttrData::Dense(d) => match &d.storage {
                DenseStorage::Data(t) => Some(t),
                DenseStorage::Elided { .. } => None,
            },
            _ => None,
        }
    }

    /// Every op nested under `root` (not `root` itself), in pre-order.
    pub fn walk(&self, root: OpId) -> Vec<OpId> {
        let mut out = Vec::new();
        self.walk_into(root, &mut out);
        out
    }

    fn walk_into(&self, op: OpId, out: &mut Vec<OpId>) {
        for &r in &self.op(op).regions {
            for &b in &self.region(r).blocks {
                for &child in &self.block(b).ops {
                    out.push(child);
                    self.walk_into(child, out);
                }
            }
        }
    }

    /// The ops directly in the single body block of `op` (region 0), or none.
    pub fn body_ops(&self, op: OpId) -> &[OpId] {
        match self.body(op, 0) {
            Some(b) => &self.block(b).ops,
            None => &[],
        }
    }

    /// Number of live operations in the context.
    pub fn live_op_count(&self) -> usize {
        self.ops.iter().filter(|o| o.is_some()).count()
    }
}
