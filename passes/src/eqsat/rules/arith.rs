//! `arith`: MegEngine's level-1 arithmetic rewrites and `a·b + c → fma3`.
//!
//! | rule | from | to | note |
//! |---|---|---|---|
//! | `sub-self` | `a - a` | zeros | at level 0 `NaN - NaN` stays NaN; level 1 gives 0, as MegEngine |
//! | `div-self` | `a / a` | ones | likewise `0/0`, `inf/inf` become 1 |
//! | `add-zero` | `a + 0` | `a` | when the result has `a`'s type |
//! | `mul-one` | `a · 1` | `a` | when the result has `a`'s type |
//! | `mul-zero` | `a · 0` | zeros | `NaN · 0` becomes 0, as MegEngine |
//! | `pow-zero` | `a ^ 0` | ones | |
//! | `pow-one` | `a ^ 1` | `a` | |
//! | `log-exp-mul` | `log(exp(a) · b)` | `a + log(b)` | |
//! | `log-one-plus` | `log(1 + x)` | `log1p(x)` | |
//! | `log-sum-exp` | `log(exp(x) + exp(y))` | `log_sum_exp(x, y)` | |
//! | `exp-minus-one` | `exp(x) - 1` | `expm1(x)` | |
//! | `floor-div-one` | `floor_div(x, 1)` | `floor(x)` (floats), `x` (integers) | |
//! | `mul-add-fma3` | `a · b + c` | `fma3(a, b, c)` | |
//!
//! Rules producing a constant (zeros, ones) need a fixed result shape; with a
//! symbolic dim they do not fire. `0` and `1` are constants whose every
//! element has that value.

use super::{add_const, add_inferred, constant_all, filled, rule, rule_commuted, tensor_type, typed_add, var};
use crate::eqsat::analysis::{Graph, GraphAnalysis};
use crate::eqsat::lang::Node;
use egg::{Id, Rewrite, Subst};

/// The rules.
pub fn rules<'c>() -> Vec<Rewrite<Node, GraphAnalysis<'c>>> {
    let mut r = vec![
        rule("sub-self", "(sub ?a ?a)", |g, c, _| fill_like(g, c, 0.0)),
        rule("div-self", "(div ?a ?a)", |g, c, s| float_only(g, var(s, "?a")).then(|| fill_like(g, c, 1.0)).flatten()),
        rule("pow-zero", "(pow ?a ?k)", |g, c, s| {
            constant_all(g, var(s, "?k"), 0.0).then(|| fill_like(g, c, 1.0)).flatten()
        }),
        rule("pow-one", "(pow ?a ?k)", |g, c, s| {
            constant_all(g, var(s, "?k"), 1.0).then(|| same(g, c, var(s, "?a"))).flatten()
        }),
        rule("exp-minus-one", "(sub (exp ?x) ?k)", |g, c, s| {
            constant_all(g, var(s, "?k"), 1.0).then(|| typed_add(g, c, Node::op("expm1", vec![var(s, "?x")]))).flatten()
        }),
        rule("log-sum-exp", "(log (add (exp ?x) (exp ?y)))", |g, c, s| {
            typed_add(g, c, Node::op("log_sum_exp", vec![var(s, "?x"), var(s, "?y")]))
        }),
    ];
    r.extend(rule_commuted("add-zero", "add", "?a", "?k", |g, c, s| {
        constant_all(g, var(s, "?k"), 0.0).then(|| same(g, c, var(s, "?a"))).flatten()
    }));
    r.extend(rule_commuted("mul-one", "mul", "?a", "?k", |g, c, s| {
        constant_all(g, var(s, "?k"), 1.0).then(|| same(g, c, var(s, "?a"))).flatten()
    }));
    r.extend(rule_commuted("mul-zero", "mul", "?a", "?k", |g, c, s| {
        constant_all(g, var(s, "?k"), 0.0).then(|| fill_like(g, c, 0.0)).flatten()
    }));
    r.push(rule("floor-div-one", "(floor_div ?x ?k)", |g, c, s| {
        if !constant_all(g, var(s, "?k"), 1.0) {
            return None;
        }
        let x = var(s, "?x");
        if float_only(g, x) { typed_add(g, c, Node::op("floor", vec![x])) } else { same(g, c, x) }
    }));
    r.push(rule("log-exp-mul", "(log (mul (exp ?a) ?b))", log_exp_mul));
    r.push(rule("log-exp-mul-commuted", "(log (mul ?b (exp ?a)))", log_exp_mul));
    r.push(rule("log-one-plus", "(log (add ?k ?x))", log_one_plus));
    r.push(rule("log-one-plus-commuted", "(log (add ?x ?k))", log_one_plus));
    r.extend(rule_commuted("mul-add-fma3", "add", "(mul ?a ?b)", "?c", |g, c, s| {
        typed_add(g, c, Node::op("fma3", vec![var(s, "?a"), var(s, "?b"), var(s, "?c")]))
    }));
    r
}

fn float_only(g: &Graph<'_>, a: Id) -> bool {
    tensor_type(g, a).is_some_and(|t| t.elem.is_float())
}

/// `a` itself, when it has the matched value's type.
fn same(g: &Graph<'_>, class: Id, a: Id) -> Option<Id> {
    (g[a].data.ty.is_some() && g[a].data.ty == g[class].data.ty).then_some(a)
}

/// A constant of the matched value's (fixed) type filled with `v`.
fn fill_like(g: &mut Graph<'_>, class: Id, v: f64) -> Option<Id> {
    let t = tensor_type(g, class)?;
    let shape: Vec<usize> = t.shape.iter().map(|d| d.fixed().map(|x| x as usize)).collect::<Option<_>>()?;
    let c = add_const(g, filled(t.elem, shape, v)?);
    (g[c].data.ty == g[class].data.ty).then_some(c)
}

fn log_exp_mul(g: &mut Graph<'_>, class: Id, s: &Subst) -> Option<Id> {
    let log_b = add_inferred(g, Node::op("log", vec![var(s, "?b")]))?;
    typed_add(g, class, Node::op("add", vec![var(s, "?a"), log_b]))
}

fn log_one_plus(g: &mut Graph<'_>, class: Id, s: &Subst) -> Option<Id> {
    if !constant_all(g, var(s, "?k"), 1.0) {
        return None;
    }
    typed_add(g, class, Node::op("log1p", vec![var(s, "?x")]))
}
