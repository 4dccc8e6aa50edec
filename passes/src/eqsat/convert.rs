//! IR ⇄ e-graph.
//!
//! [`to_egraph`] adds a function body to an e-graph: one e-node per op, the
//! returned values as roots, and for every node where it came from (location
//! and result name) and how many readers its value had. [`rebuild`] writes the
//! extracted choice back: new ops before the `return`, the old ones erased.
//! A node that survives keeps its location and name; a new node takes them
//! from an original node of its e-class (the op it replaced).

use super::analysis::{Graph, op_parts};
use super::lang::{Node, is_elemwise_head};
use egg::Id;
use std::collections::HashMap;
use strata_ir::{Attr, AttrData, BlockId, Context, InsertPoint, Loc, OpBuild, OpId, OpTraits, Rewriter, Sym, ValueId};

/// Where an original node came from.
#[derive(Clone, Copy, Debug)]
pub struct Origin {
    /// The op's location.
    pub loc: Loc,
    /// Its result's name.
    pub name: Option<Sym>,
}

/// A function body in an e-graph.
pub struct Converted {
    /// The classes of the returned values, in order.
    pub roots: Vec<Id>,
    /// Original nodes (children as added) and their origins.
    pub origins: Vec<(Node, Origin)>,
    /// The body's block.
    pub block: BlockId,
}

/// Why a function cannot be optimised by eqsat (it is then left alone).
pub fn unsupported(ctx: &Context, op: OpId) -> Option<String> {
    let data = ctx.op(op);
    let name = ctx.op_name(op);
    if name == "func.return" {
        return None;
    }
    if !name.starts_with("graph.") {
        return Some(format!("`{name}` is not a graph op"));
    }
    if data.results.len() != 1 || !data.regions.is_empty() {
        return Some(format!("`{name}` has {} results and {} regions", data.results.len(), data.regions.len()));
    }
    if !ctx.op_def(op).is_some_and(|d| d.traits.contains(OpTraits::PURE)) {
        return Some(format!("`{name}` is not pure"));
    }
    None
}

/// The attributes of `op` as one dictionary attribute.
fn attrs_dict(ctx: &mut Context, op: OpId) -> Attr {
    let items: Vec<(String, Attr)> = ctx.op(op).attrs.iter().map(|&(k, a)| (ctx.str(k).to_string(), a)).collect();
    ctx.intern_attr(AttrData::Dict(items))
}

/// Adds the body `block` (of a function whose arguments are leaves) to `egraph`.
pub fn to_egraph(egraph: &mut Graph<'_>, block: BlockId) -> Result<Converted, String> {
    let ops = egraph.analysis.ctx.block(block).ops.clone();
    let args = egraph.analysis.ctx.block(block).args.clone();
    let mut values: HashMap<ValueId, Id> = HashMap::new();
    let mut readers: HashMap<Id, usize> = HashMap::new();
    for (i, &a) in args.iter().enumerate() {
        values.insert(a, egraph.add(Node::Arg(i as u32)));
    }
    let mut origins = Vec::new();
    let mut roots = Vec::new();
    for &op in &ops {
        if let Some(why) = unsupported(egraph.analysis.ctx, op) {
            return Err(why);
        }
        let ctx = &mut *egraph.analysis.ctx;
        let operands: Vec<Id> = ctx.op(op).operands.iter().map(|v| values[v]).collect();
        for &o in &operands {
            *readers.entry(o).or_default() += 1;
        }
        if ctx.op_name(op) == "func.return" {
            roots = operands;
            continue;
        }
        let name = ctx.op_name(op).to_string();
        let short = name.strip_prefix("graph.").unwrap_or(&name).to_string();
        let node = if short == "const" {
            match ctx.op_attr(op, "value") {
                Some(v) => Node::Const(v),
                None => return Err("a graph.const has no value".into()),
            }
        } else if short == "elemwise" && ctx.op(op).attrs.len() == 1 {
            let mode = match ctx.op_attr(op, "mode").map(|a| ctx.attr(a)) {
                Some(AttrData::Str(m)) if is_elemwise_head(m) => m.clone(),
                other => return Err(format!("graph.elemwise with mode {other:?}")),
            };
            Node::op(&mode, operands)
        } else {
            let attrs = attrs_dict(ctx, op);
            let mut children = operands;
            children.push(egraph.add(Node::Attrs(attrs)));
            Node::op(&short, children)
        };
        let ctx = &*egraph.analysis.ctx;
        let result = ctx.op(op).results[0];
        let origin = Origin { loc: ctx.op(op).loc, name: ctx.value(result).name };
        let id = egraph.add(node.clone());
        if egraph[id].data.ty.is_none() {
            return Err(format!("the type of `{name}` could not be inferred in the e-graph"));
        }
        origins.push((node, origin));
        values.insert(result, id);
    }
    for (id, n) in readers {
        egraph[id].data.readers = egraph[id].data.readers.max(n);
    }
    Ok(Converted { roots, origins, block })
}

/// Writes the chosen nodes back into the function: new ops before its
/// `return`, which then returns the roots; the old ops are erased.
pub fn rebuild(egraph: &mut Graph<'_>, conv: &Converted, choice: &HashMap<Id, Node>) -> Result<(), String> {
    let canon: HashMap<Node, Origin> =
        conv.origins.iter().rev().map(|(n, o)| (n.clone().map_children(|c| egraph.find(c)), *o)).collect();
    let mut class_origin: HashMap<Id, Origin> = HashMap::new();
    for (n, o) in &conv.origins {
        if let Some(id) = egraph.lookup(n.clone()) {
            class_origin.entry(egraph.find(id)).or_insert(*o);
        }
    }
    let ctx = &*egraph.analysis.ctx;
    let old_ops = ctx.block(conv.block).ops.clone();
    let ret = *old_ops.last().ok_or("the function body is empty")?;
    let args = ctx.block(conv.block).args.clone();
    let mut built: HashMap<Id, ValueId> = HashMap::new();
    let mut roots = Vec::new();
    for &r in &conv.roots {
        roots.push(build(egraph, egraph.find(r), choice, &canon, &class_origin, &args, ret, &mut built)?);
    }
    let mut rw = Rewriter::new(egraph.analysis.ctx);
    for (i, &v) in roots.iter().enumerate() {
        rw.set_operand(ret, i, v);
    }
    for &op in old_ops.iter().rev() {
        if op != ret && rw.ctx().op(op).results.iter().all(|&r| rw.ctx().value(r).uses.is_empty()) {
            rw.erase_op(op);
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn build(
    egraph: &mut Graph<'_>,
    class: Id,
    choice: &HashMap<Id, Node>,
    canon: &HashMap<Node, Origin>,
    class_origin: &HashMap<Id, Origin>,
    args: &[ValueId],
    before: OpId,
    built: &mut HashMap<Id, ValueId>,
) -> Result<ValueId, String> {
    if let Some(&v) = built.get(&class) {
        return Ok(v);
    }
    let node = choice.get(&class).ok_or_else(|| format!("no node chosen for e-class {class}"))?.clone();
    let ty = egraph[class].data.ty;
    let origin = canon.get(&node).or_else(|| class_origin.get(&class)).copied();
    let value = match &node {
        Node::Arg(i) => *args.get(*i as usize).ok_or_else(|| format!("argument {i} is out of range"))?,
        Node::Attrs(_) => return Err(format!("e-class {class} is an attribute leaf, not a value")),
        Node::Const(v) => {
            let ty = ty.ok_or("a constant without a type")?;
            let loc = origin.map(|o| o.loc).unwrap_or(Loc::UNKNOWN);
            let mut rw = Rewriter::new(egraph.analysis.ctx);
            let op = rw.create(
                OpBuild::new("graph.const").attr("value", *v).results(&[ty]).loc(loc),
                InsertPoint::Before(before),
            );
            rw.ctx().op(op).results[0]
        }
        Node::Op(..) => {
            let (name, operands, attrs) =
                op_parts(egraph, &node).ok_or_else(|| format!("e-node {node} has no attributes"))?;
            let mut vals = Vec::with_capacity(operands.len());
            for o in operands {
                let o = egraph.find(o);
                vals.push(build(egraph, o, choice, canon, class_origin, args, before, built)?);
            }
            let ty = ty.ok_or_else(|| format!("`{name}` has no inferred type"))?;
            let loc = origin.map(|o| o.loc).unwrap_or(Loc::UNKNOWN);
            let mut b = OpBuild::new(name).operands(&vals).results(&[ty]).loc(loc);
            b.attrs = attrs;
            let mut rw = Rewriter::new(egraph.analysis.ctx);
            let op = rw.create(b, InsertPoint::Before(before));
            rw.ctx().op(op).results[0]
        }
    };
    if let Some(name) = origin.and_then(|o| o.name)
        && !matches!(node, Node::Arg(_))
    {
        let name = egraph.analysis.ctx.str(name).to_string();
        Rewriter::new(egraph.analysis.ctx).set_value_name(value, Some(&name));
    }
    built.insert(class, value);
    Ok(value)
}

/// Whether `choice` picks, for every class reachable from the roots, a node
/// the function already had (then rebuilding would change nothing).
pub fn unchanged(egraph: &Graph<'_>, conv: &Converted, choice: &HashMap<Id, Node>) -> bool {
    let original: std::collections::HashSet<Node> =
        conv.origins.iter().map(|(n, _)| n.clone().map_children(|c| egraph.find(c))).collect();
    let mut stack: Vec<Id> = conv.roots.iter().map(|&r| egraph.find(r)).collect();
    let mut seen = std::collections::HashSet::new();
    let mut reachable_ops = 0;
    while let Some(c) = stack.pop() {
        if !seen.insert(c) {
            continue;
        }
        let Some(n) = choice.get(&c) else { return false };
        match n {
            Node::Op(..) | Node::Const(_) => {
                if !original.contains(n) {
                    return false;
                }
                reachable_ops += 1;
            }
            _ => {}
        }
        stack.extend(n.children().iter().map(|&x| egraph.find(x)));
    }
    reachable_ops == conv.origins.len()
}

use egg::Language as _;
