//! Rule sets: each file holds the kebab-case rules of one topic.
//!
//! A rule is a pattern over heads (see [`super::lang`]) and a Rust function
//! that, given the match, adds the replacement to the e-graph and returns its
//! class. Every new node goes through [`typed_add`] / [`add_inferred`], so a
//! replacement whose inferred type differs from the matched value's is refused.
//! The union is recorded with the rule's name as its justification, which is
//! what `--explain-fusions` prints.

pub mod arith;
pub mod fold_batch_norm;
pub mod fuse_conv_bias;
pub mod fuse_conv_bias_with_z;
pub mod fuse_preprocess;
pub mod param_redistribute;

use super::analysis::{Graph, GraphAnalysis, dense_data, dict_entries, intern_dense};
use super::lang::Node;
use egg::{Applier, Id, Pattern, PatternAst, Rewrite, Subst, Symbol, Var};
use std::collections::HashSet;
use std::sync::Mutex;
use strata_ir::{Attr, AttrData, ElemType, TensorData, TensorType, TypeData};

pub use super::analysis::{add_inferred, typed_add};

/// The replacement function of a rule: adds the new node(s) for a match of the
/// class `class` and returns the class to union with it.
pub type Build = fn(&mut Graph<'_>, Id, &Subst) -> Option<Id>;

/// An applier that runs a [`Build`] and unions its result, justified by the rule's name.
pub struct BuildApplier {
    build: Build,
    once: Option<Once>,
}

/// For a rule made with [`rule_once`]: the pattern's variables, and the
/// matches (matched class, then the variables' classes, all canonical) whose
/// build already succeeded.
struct Once {
    vars: Vec<Var>,
    done: Mutex<HashSet<Vec<Id>>>,
}

impl<'c> Applier<Node, GraphAnalysis<'c>> for BuildApplier {
    fn apply_one(
        &self,
        egraph: &mut Graph<'c>,
        eclass: Id,
        subst: &Subst,
        _searcher_ast: Option<&PatternAst<Node>>,
        rule_name: Symbol,
    ) -> Vec<Id> {
        let mut done = None;
        if let Some(Once { vars, done: memo }) = &self.once {
            let key: Vec<Id> =
                std::iter::once(eclass).chain(vars.iter().map(|&v| subst[v])).map(|c| egraph.find(c)).collect();
            let memo = memo.lock().expect("invariant: the memo lock is never poisoned");
            if memo.contains(&key) {
                return Vec::new();
            }
            done = Some((memo, key));
        }
        let Some(new) = (self.build)(egraph, eclass, subst) else { return Vec::new() };
        if let Some((mut memo, key)) = done {
            memo.insert(key);
        }
        if egraph.union_trusted(eclass, new, rule_name) {
            egraph.analysis.log.push((rule_name, eclass));
            vec![eclass]
        } else {
            Vec::new()
        }
    }
}

/// A rule: `name`, a pattern, and the function building the replacement.
pub fn rule<'c>(name: &str, pattern: &str, build: Build) -> Rewrite<Node, GraphAnalysis<'c>> {
    make_rule(name, pattern, build, false)
}

/// A rule whose build runs at most once per match. egg finds every match
/// again on every iteration; a build that computes new constants (scaled
/// weights) would redo that work each time. Only for builds whose result
/// depends on nothing but the matched class and the bound classes' analysis
/// data — not on the other nodes of a class, which grow between iterations.
pub fn rule_once<'c>(name: &str, pattern: &str, build: Build) -> Rewrite<Node, GraphAnalysis<'c>> {
    make_rule(name, pattern, build, true)
}

fn make_rule<'c>(name: &str, pattern: &str, build: Build, once: bool) -> Rewrite<Node, GraphAnalysis<'c>> {
    let pattern: Pattern<Node> = pattern.parse().unwrap_or_else(|e| panic!("invariant: rule {name} parses: {e}"));
    let once = once.then(|| Once { vars: pattern.vars(), done: Mutex::default() });
    Rewrite::new(name, pattern, BuildApplier { build, once }).unwrap_or_else(|e| panic!("invariant: rule {name}: {e}"))
}

/// The same rule for both operand orders of a commutative binary `head`:
/// `(head a b)` and `(head b a)`.
pub fn rule_commuted<'c>(
    name: &str,
    head: &str,
    a: &str,
    b: &str,
    build: Build,
) -> [Rewrite<Node, GraphAnalysis<'c>>; 2] {
    commuted(name, head, a, b, build, false)
}

/// [`rule_commuted`] with [`rule_once`] rules.
pub fn rule_commuted_once<'c>(
    name: &str,
    head: &str,
    a: &str,
    b: &str,
    build: Build,
) -> [Rewrite<Node, GraphAnalysis<'c>>; 2] {
    commuted(name, head, a, b, build, true)
}

fn commuted<'c>(
    name: &str,
    head: &str,
    a: &str,
    b: &str,
    build: Build,
    once: bool,
) -> [Rewrite<Node, GraphAnalysis<'c>>; 2] {
    [
        make_rule(name, &format!("({head} {a} {b})"), build, once),
        make_rule(&format!("{name}-commuted"), &format!("({head} {b} {a})"), build, once),
    ]
}

/// The class bound to pattern variable `name` (`"?x"`).
pub fn var(subst: &Subst, name: &str) -> Id {
    let v: Var = name.parse().expect("invariant: variable names parse");
    subst[v]
}

/// The tensor type of a class.
pub fn tensor_type(egraph: &Graph<'_>, class: Id) -> Option<TensorType> {
    match egraph.analysis.ctx.ty(egraph[class].data.ty?) {
        TypeData::Tensor(t) => Some(t.clone()),
        _ => None,
    }
}

/// The fixed shape of a class, if every dim is fixed.
pub fn fixed_shape(egraph: &Graph<'_>, class: Id) -> Option<Vec<usize>> {
    tensor_type(egraph, class)?.shape.iter().map(|d| d.fixed().map(|x| x as usize)).collect()
}

/// The constant value of a class.
pub fn constant(egraph: &Graph<'_>, class: Id) -> Option<TensorData> {
    dense_data(egraph.analysis.ctx, egraph[class].data.value?).cloned()
}

/// Whether the class is a constant whose every element equals `v`.
pub fn constant_all(egraph: &Graph<'_>, class: Id, v: f64) -> bool {
    constant(egraph, class).is_some_and(|t| !t.is_empty() && (0..t.len()).all(|i| t.get_real(i) == v))
}

/// The attributes bound to `?p` as `(key, attr)` pairs.
pub fn attrs_of(egraph: &Graph<'_>, class: Id) -> Option<Vec<(String, Attr)>> {
    Some(dict_entries(egraph.analysis.ctx, egraph[class].data.attrs?))
}

/// The string attribute `key`.
pub fn str_attr(egraph: &Graph<'_>, attrs: &[(String, Attr)], key: &str) -> Option<String> {
    let &(_, a) = attrs.iter().find(|(k, _)| k == key)?;
    match egraph.analysis.ctx.attr(a) {
        AttrData::Str(s) => Some(s.clone()),
        _ => None,
    }
}

/// Adds an attributes leaf for `attrs` (sorted by key).
pub fn add_attrs(egraph: &mut Graph<'_>, mut attrs: Vec<(String, Attr)>) -> Id {
    attrs.sort_by(|a, b| a.0.cmp(&b.0));
    let a = egraph.analysis.ctx.intern_attr(AttrData::Dict(attrs));
    egraph.add(Node::Attrs(a))
}

/// Adds a constant leaf holding `t`.
pub fn add_const(egraph: &mut Graph<'_>, t: TensorData) -> Id {
    let a = intern_dense(egraph.analysis.ctx, t);
    egraph.add(Node::Const(a))
}

/// A constant of `shape` and `elem` filled with `v`.
pub fn filled(elem: ElemType, shape: Vec<usize>, v: f64) -> Option<TensorData> {
    let n = shape.iter().product();
    TensorData::from_reals(elem, shape, &vec![v; n]).ok()
}

/// Whether the class's value was read by at most one op in the original function.
pub fn single_reader(egraph: &Graph<'_>, class: Id) -> bool {
    egraph[class].data.readers <= 1
}

/// The class of the node `head(children…)` if the e-graph has it.
pub fn lookup(egraph: &Graph<'_>, head: &str, children: Vec<Id>) -> Option<Id> {
    egraph.lookup(Node::op(head, children))
}

/// Every rule set by name, in MegEngine's `optimize_for_inference` order.
pub const RULE_SETS: &[&str] = &[
    "arith",
    "fold-batch-norm",
    "param-redistribute",
    "param-fold",
    "fuse-preprocess",
    "fuse-conv-bias-nonlinearity",
    "fuse-conv-bias-with-z",
];

/// The rules of set `name` (`param-fold` has none: it switches constant folding on).
pub fn rule_set<'c>(name: &str) -> Option<Vec<Rewrite<Node, GraphAnalysis<'c>>>> {
    Some(match name {
        "arith" => arith::rules(),
        "fold-batch-norm" => fold_batch_norm::rules(),
        "param-redistribute" => param_redistribute::rules(),
        "fuse-conv-bias-nonlinearity" => fuse_conv_bias::rules(),
        "fuse-conv-bias-with-z" => fuse_conv_bias_with_z::rules(),
        "fuse-preprocess" => fuse_preprocess::rules(),
        "param-fold" => Vec::new(),
        _ => return None,
    })
}
