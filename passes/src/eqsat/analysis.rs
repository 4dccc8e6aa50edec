//! The e-class analysis: type (shape, element type, layout), attributes and
//! constant value per e-class, computed with the ops' own shape inference and,
//! when folding is on, their reference evaluators.
//!
//! Rules never add a node whose inferred type differs from the type of the
//! class it joins ([`typed_add`]); a merge of classes with different types is
//! recorded as a conflict and fails the pass, so an ill-shaped rewrite can
//! never reach the IR.

use super::lang::{Node, is_elemwise_head, op_name};
use egg::{Analysis, DidMerge, EGraph, Id};
use strata_ir::{Attr, AttrData, Context, DenseAttr, DenseStorage, Sym, TensorData, TensorType, Ty, TypeData};

/// The e-graph of the eqsat pass.
pub type Graph<'c> = EGraph<Node, GraphAnalysis<'c>>;

/// Facts about one e-class.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Data {
    /// The value's type (`None`: an attributes leaf, or a node whose type could not be inferred).
    pub ty: Option<Ty>,
    /// For an attributes leaf: the dictionary.
    pub attrs: Option<Attr>,
    /// The constant value (a dense attribute), when known.
    pub value: Option<Attr>,
    /// How many ops read the value in the original function (0 for new values).
    pub readers: usize,
}

/// Largest result (elements) that constant folding computes.
pub const FOLD_LIMIT: usize = 1 << 24;

/// The analysis; it borrows the module's context to infer types and intern results.
pub struct GraphAnalysis<'c> {
    /// The module's context.
    pub ctx: &'c mut Context,
    /// Types of the function's arguments.
    pub arg_types: Vec<Ty>,
    /// Evaluate ops whose operands are all constant (`param-fold`).
    pub fold: bool,
    /// Type conflicts seen when merging classes (must stay empty).
    pub conflicts: Vec<String>,
    /// Every rule application that changed the graph: the rule and the class it matched.
    pub log: Vec<(egg::Symbol, Id)>,
}

impl<'c> GraphAnalysis<'c> {
    /// An analysis over `ctx`.
    pub fn new(ctx: &'c mut Context, arg_types: Vec<Ty>, fold: bool) -> Self {
        GraphAnalysis { ctx, arg_types, fold, conflicts: Vec::new(), log: Vec::new() }
    }
}

impl GraphAnalysis<'_> {
    /// The rules applied to any of `classes` (canonical ids), in order, each once.
    pub fn log_for(&self, egraph: &Graph<'_>, classes: &std::collections::BTreeSet<Id>) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for (rule, class) in &self.log {
            let name = rule.as_str().trim_end_matches("-commuted").to_string();
            if classes.contains(&egraph.find(*class)) && !out.contains(&name) {
                out.push(name);
            }
        }
        out
    }
}

/// The dictionary entries of an attributes attr, sorted by key.
pub fn dict_entries(ctx: &Context, attrs: Attr) -> Vec<(String, Attr)> {
    match ctx.attr(attrs) {
        AttrData::Dict(items) => items.clone(),
        _ => Vec::new(),
    }
}

/// An op's name, operand classes and attributes.
pub type OpParts = (String, Vec<Id>, Vec<(String, Attr)>);

/// The op name, operand classes and attributes of an op node.
pub fn op_parts(egraph: &mut Graph<'_>, node: &Node) -> Option<OpParts> {
    let Node::Op(head, children) = node else { return None };
    let head = head.as_str();
    if is_elemwise_head(head) {
        let mode = egraph.analysis.ctx.intern_attr(AttrData::Str(head.into()));
        return Some((op_name(head), children.clone(), vec![("mode".into(), mode)]));
    }
    let (&attrs, operands) = children.split_last()?;
    let attrs = egraph[attrs].data.attrs?;
    Some((op_name(head), operands.to_vec(), dict_entries(egraph.analysis.ctx, attrs)))
}

fn sym_attrs(ctx: &mut Context, attrs: &[(String, Attr)]) -> Vec<(Sym, Attr)> {
    strata_dialects::apply::intern_attrs(ctx, attrs)
}

/// The data of `node` given its children's data (the analysis' `make`).
pub fn node_data(egraph: &mut Graph<'_>, node: &Node) -> Data {
    match node {
        Node::Attrs(a) => Data { ty: None, attrs: Some(*a), value: None, readers: 0 },
        Node::Const(a) => {
            let ty = match egraph.analysis.ctx.attr(*a) {
                AttrData::Dense(d) => Some(d.ty),
                _ => None,
            };
            Data { ty, attrs: None, value: Some(*a), readers: 0 }
        }
        Node::Arg(i) => {
            Data { ty: egraph.analysis.arg_types.get(*i as usize).copied(), attrs: None, value: None, readers: 0 }
        }
        Node::Op(..) => {
            let Some((name, operands, attrs)) = op_parts(egraph, node) else { return Data::default() };
            let Some(tys) = operands.iter().map(|&o| egraph[o].data.ty).collect::<Option<Vec<Ty>>>() else {
                return Data::default();
            };
            let values: Option<Vec<Attr>> = operands.iter().map(|&o| egraph[o].data.value).collect();
            let ctx = &mut *egraph.analysis.ctx;
            let sattrs = sym_attrs(ctx, &attrs);
            let ty = match strata_dialects::apply::infer(ctx, &name, &tys, &sattrs) {
                Ok(mut t) if t.len() == 1 => ctx.intern_type(t.remove(0)),
                _ => return Data::default(),
            };
            // A parameter is a constant with a name.
            if name == "graph.param" {
                let value = attrs.iter().find(|(k, _)| k == "value").map(|&(_, a)| a);
                return Data { ty: Some(ty), attrs: None, value, readers: 0 };
            }
            let value = if egraph.analysis.fold {
                values.and_then(|v| fold(egraph.analysis.ctx, &name, &v, &sattrs, ty))
            } else {
                None
            };
            Data { ty: Some(ty), attrs: None, value, readers: 0 }
        }
    }
}

/// The data of an attribute that is a dense constant.
pub fn dense_data(ctx: &Context, a: Attr) -> Option<&TensorData> {
    match ctx.attr(a) {
        AttrData::Dense(DenseAttr { storage: DenseStorage::Data(t), .. }) => Some(t),
        _ => None,
    }
}

/// Interns `t` as a dense constant attribute.
pub fn intern_dense(ctx: &mut Context, t: TensorData) -> Attr {
    let ty = ctx.tensor_type(TensorType::fixed(&t.shape().iter().map(|&d| d as u64).collect::<Vec<_>>(), t.elem()));
    ctx.intern_attr(AttrData::Dense(DenseAttr { ty, storage: DenseStorage::Data(t) }))
}

fn fold(ctx: &mut Context, name: &str, values: &[Attr], attrs: &[(Sym, Attr)], ty: Ty) -> Option<Attr> {
    let TypeData::Tensor(t) = ctx.ty(ty) else { return None };
    let n = t.shape.iter().map(|d| d.fixed().map(|d| d as usize)).product::<Option<usize>>()?;
    if n > FOLD_LIMIT || name == "graph.const" {
        return None;
    }
    let inputs: Vec<TensorData> = values.iter().map(|&a| dense_data(ctx, a).cloned()).collect::<Option<_>>()?;
    let mut out = strata_dialects::apply::eval(ctx, name, &inputs, attrs).ok()?;
    if out.len() != 1 {
        return None;
    }
    Some(intern_dense(ctx, out.remove(0)))
}

impl<'c> Analysis<Node> for GraphAnalysis<'c> {
    type Data = Data;

    fn make(egraph: &mut Graph<'c>, enode: &Node, _id: Id) -> Data {
        node_data(egraph, enode)
    }

    fn merge(&mut self, a: &mut Data, b: Data) -> DidMerge {
        if let (Some(x), Some(y)) = (a.ty, b.ty)
            && x != y
        {
            self.conflicts.push(format!(
                "merged values of types {} and {}",
                strata_ir::type_to_string(self.ctx, x),
                strata_ir::type_to_string(self.ctx, y)
            ));
        }
        let (mut changed_a, mut changed_b) = (false, false);
        let mut fill = |mine_some: bool, theirs_some: bool| match (mine_some, theirs_some) {
            (false, true) => changed_a = true,
            (true, false) => changed_b = true,
            _ => {}
        };
        fill(a.ty.is_some(), b.ty.is_some());
        fill(a.attrs.is_some(), b.attrs.is_some());
        fill(a.value.is_some(), b.value.is_some());
        a.ty = a.ty.or(b.ty);
        a.attrs = a.attrs.or(b.attrs);
        a.value = a.value.or(b.value);
        if b.readers > a.readers {
            a.readers = b.readers;
            changed_a = true;
        } else if a.readers > b.readers {
            changed_b = true;
        }
        DidMerge(changed_a, changed_b)
    }

    fn modify(egraph: &mut Graph<'c>, id: Id) {
        // A class with a known value also holds the constant leaf (param-fold).
        if egraph.analysis.fold
            && let Some(v) = egraph[id].data.value
            && !egraph[id].nodes.iter().any(is_leafish)
        {
            let c = egraph.add(Node::Const(v));
            egraph.union(id, c);
        }
    }
}

/// Constant leaves and parameters: nodes that already are the value.
fn is_leafish(n: &Node) -> bool {
    matches!(n, Node::Const(_)) || n.head() == Some("param")
}

/// Adds `node` to the class `class` if its inferred type equals the class's;
/// returns whether the graph changed. Rules add every new node through this.
pub fn typed_add(egraph: &mut Graph<'_>, class: Id, node: Node) -> Option<Id> {
    let want = egraph[class].data.ty;
    let got = node_data(egraph, &node).ty;
    if got.is_none() || got != want {
        return None;
    }
    Some(egraph.add(node))
}

/// Adds a new intermediate `node` (no class to match): `None` if its type cannot be inferred.
pub fn add_inferred(egraph: &mut Graph<'_>, node: Node) -> Option<Id> {
    node_data(egraph, &node).ty?;
    Some(egraph.add(node))
}
