//! The e-graph language over the graph dialect.
//!
//! A graph op becomes an [`Node::Op`] whose *head* names it: an elementwise op
//! is its mode (`add`, `relu`, `fma3`), any other op its name without the
//! dialect prefix (`conv2d`, `batch_norm`). Every attribute an op has besides an
//! elementwise `mode` travels in an [`Node::Attrs`] leaf, the op's last child,
//! so nothing is lost between IR and e-graph and rules can bind attributes like
//! operands: `(relu (conv2d ?x ?w ?p))` binds `?p` to the convolution's
//! attributes. Constants are [`Node::Const`] leaves (a dense attribute),
//! function arguments [`Node::Arg`] leaves. Patterns are written in this syntax
//! (egg's s-expressions over heads).

use egg::{Id, Language, Symbol};
use std::fmt;
use strata_ir::Attr;

/// One e-node.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Node {
    /// A graph op: its head and its children (operands, then the attributes
    /// leaf unless the op is a plain elementwise op).
    Op(Symbol, Vec<Id>),
    /// An op's attributes (an interned `AttrData::Dict`).
    Attrs(Attr),
    /// A constant tensor (an interned dense attribute).
    Const(Attr),
    /// Argument `i` of the function.
    Arg(u32),
}

/// What a node is, without its children (for egg's lookups).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Kind {
    /// [`Node::Op`] with this head.
    Op(Symbol),
    /// [`Node::Attrs`].
    Attrs(Attr),
    /// [`Node::Const`].
    Const(Attr),
    /// [`Node::Arg`].
    Arg(u32),
}

impl Node {
    /// An op node.
    pub fn op(head: &str, children: Vec<Id>) -> Node {
        Node::Op(Symbol::from(head), children)
    }

    /// The head of an op node.
    pub fn head(&self) -> Option<&str> {
        match self {
            Node::Op(h, _) => Some(h.as_str()),
            _ => None,
        }
    }
}

impl Language for Node {
    type Discriminant = Kind;

    fn discriminant(&self) -> Kind {
        match self {
            Node::Op(h, _) => Kind::Op(*h),
            Node::Attrs(a) => Kind::Attrs(*a),
            Node::Const(a) => Kind::Const(*a),
            Node::Arg(i) => Kind::Arg(*i),
        }
    }

    fn matches(&self, other: &Self) -> bool {
        match (self, other) {
            (Node::Op(a, x), Node::Op(b, y)) => a == b && x.len() == y.len(),
            _ => self == other,
        }
    }

    fn children(&self) -> &[Id] {
        match self {
            Node::Op(_, c) => c,
            _ => &[],
        }
    }

    fn children_mut(&mut self) -> &mut [Id] {
        match self {
            Node::Op(_, c) => c,
            _ => &mut [],
        }
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Node::Op(h, _) => write!(f, "{h}"),
            Node::Attrs(a) => write!(f, "attrs{}", a.index()),
            Node::Const(a) => write!(f, "const{}", a.index()),
            Node::Arg(i) => write!(f, "arg{i}"),
        }
    }
}

impl egg::FromOp for Node {
    type Error = String;

    /// Patterns name ops by head; leaves are pattern variables.
    fn from_op(op: &str, children: Vec<Id>) -> Result<Self, String> {
        if op.is_empty() || op.starts_with('?') {
            return Err(format!("`{op}` is not an op head"));
        }
        Ok(Node::op(op, children))
    }
}

/// The elementwise modes: their head is the mode itself.
pub const ELEMWISE_MODES: &[&str] = &[
    "relu",
    "sigmoid",
    "tanh",
    "exp",
    "log",
    "log1p",
    "expm1",
    "abs",
    "neg",
    "sqrt",
    "floor",
    "ceil",
    "round",
    "h_swish",
    "gelu",
    "add",
    "sub",
    "mul",
    "div",
    "floor_div",
    "max",
    "min",
    "pow",
    "fuse_add_relu",
    "fuse_add_sigmoid",
    "fuse_add_h_swish",
    "log_sum_exp",
    "fma3",
];

/// Whether `head` is a plain elementwise mode (no attributes leaf).
pub fn is_elemwise_head(head: &str) -> bool {
    ELEMWISE_MODES.contains(&head)
}

/// The op name a head stands for (`add` → `graph.elemwise`, `conv2d` → `graph.conv2d`).
pub fn op_name(head: &str) -> String {
    if is_elemwise_head(head) { "graph.elemwise".into() } else { format!("graph.{head}") }
}
