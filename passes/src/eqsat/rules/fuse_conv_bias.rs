//! `fuse-conv-bias-nonlinearity`: convolution + bias + nonlinearity → `conv_bias`
//! (MegEngine's FuseConvBiasNonlinPass).
//!
//! | rule | from | to |
//! |---|---|---|
//! | `conv-add-bias` | `add(conv2d(x, w), b)`, `b` channel-broadcast `[1, OC, 1, 1]` | `conv_bias(x, w, b)` |
//! | `conv-add-full` | `add(conv2d(x, w), t)`, `t` of the result's shape | `conv_bias(x, w, 0, z = t)` |
//! | `conv-fuse-add-{relu,sigmoid,h-swish}` | `fuse_add_<nl>(conv2d(x, w), b)` | `conv_bias(x, w, b)` with `<nl>` |
//! | `conv-{relu,sigmoid,h-swish}` | `<nl>(conv2d(x, w))` | `conv_bias(x, w, 0)` with `<nl>` |
//! | `conv-bias-{relu,sigmoid,h-swish}` | `<nl>(conv_bias(…))` with no nonlinearity yet | the same `conv_bias` with `<nl>` |
//! | `conv-bias-relu-relu` | `relu(conv_bias(…, relu))` | `conv_bias(…, relu)` |
//! | `relu-relu` | `relu(relu(x))` | `relu(x)` |
//!
//! The convolution (or conv_bias) must have a single reader, as in MegEngine:
//! otherwise it would be computed twice.

use super::{
    add_attrs, add_const, attrs_of, filled, lookup, rule, rule_commuted, single_reader, str_attr, tensor_type,
    typed_add, var,
};
use crate::eqsat::analysis::{Graph, GraphAnalysis};
use crate::eqsat::lang::Node;
use egg::{Id, Rewrite, Subst};
use strata_ir::{AttrData, Dim};

/// The rules.
pub fn rules<'c>() -> Vec<Rewrite<Node, GraphAnalysis<'c>>> {
    let mut r = Vec::new();
    r.extend(rule_commuted("conv-add-bias", "add", "(conv2d ?x ?w ?p)", "?r", |g, c, s| conv_add(g, c, s, "identity")));
    for (nl, kebab) in [("relu", "relu"), ("sigmoid", "sigmoid"), ("h_swish", "h-swish")] {
        let head = format!("fuse_add_{nl}");
        r.extend(rule_commuted(
            &format!("conv-fuse-add-{kebab}"),
            &head,
            "(conv2d ?x ?w ?p)",
            "?r",
            FUSE_ADD[index(nl)],
        ));
        r.push(rule(&format!("conv-{kebab}"), &format!("({nl} (conv2d ?x ?w ?p))"), CONV_NL[index(nl)]));
        r.push(rule(&format!("conv-bias-{kebab}"), &format!("({nl} (conv_bias ?x ?w ?b ?p))"), BIAS_NL[index(nl)]));
        r.push(rule(
            &format!("conv-bias-z-{kebab}"),
            &format!("({nl} (conv_bias ?x ?w ?b ?z ?p))"),
            BIAS_Z_NL[index(nl)],
        ));
    }
    r.push(rule("conv-bias-relu-relu", "(relu (conv_bias ?x ?w ?b ?p))", bias_relu_relu));
    r.push(rule("relu-relu", "(relu (relu ?x))", |g, c, s| typed_add(g, c, Node::op("relu", vec![var(s, "?x")]))));
    r
}

fn index(nl: &str) -> usize {
    match nl {
        "relu" => 0,
        "sigmoid" => 1,
        _ => 2,
    }
}

type Build = super::Build;

const FUSE_ADD: [Build; 3] = [
    |g, c, s| conv_add(g, c, s, "relu"),
    |g, c, s| conv_add(g, c, s, "sigmoid"),
    |g, c, s| conv_add(g, c, s, "h_swish"),
];
const CONV_NL: [Build; 3] =
    [|g, c, s| conv_nl(g, c, s, "relu"), |g, c, s| conv_nl(g, c, s, "sigmoid"), |g, c, s| conv_nl(g, c, s, "h_swish")];
const BIAS_NL: [Build; 3] = [
    |g, c, s| bias_nl(g, c, s, "relu", false),
    |g, c, s| bias_nl(g, c, s, "sigmoid", false),
    |g, c, s| bias_nl(g, c, s, "h_swish", false),
];
const BIAS_Z_NL: [Build; 3] = [
    |g, c, s| bias_nl(g, c, s, "relu", true),
    |g, c, s| bias_nl(g, c, s, "sigmoid", true),
    |g, c, s| bias_nl(g, c, s, "h_swish", true),
];

/// A convolution's input, weights and attributes (classes).
#[derive(Clone, Copy, Debug)]
pub struct Conv {
    /// Input.
    pub x: Id,
    /// Weights.
    pub w: Id,
    /// Attributes leaf.
    pub p: Id,
}

/// Builds `conv_bias(x, w, b[, z])` with the conv attributes of `?p` and `nl`.
pub fn conv_bias(g: &mut Graph<'_>, class: Id, conv: Conv, b: Option<Id>, z: Option<Id>, nl: &str) -> Option<Id> {
    let Conv { x, w, p } = conv;
    let mut attrs: Vec<_> = attrs_of(g, p)?.into_iter().filter(|(k, _)| k != "nonlinearity").collect();
    let nl_attr = g.analysis.ctx.intern_attr(AttrData::Str(nl.into()));
    attrs.push(("nonlinearity".into(), nl_attr));
    let b = match b {
        Some(b) => b,
        None => {
            let out = tensor_type(g, class)?;
            let Dim::Fixed(oc) = *out.shape.get(1)? else { return None };
            let zeros = filled(out.elem, vec![1, oc as usize, 1, 1], 0.0)?;
            add_const(g, zeros)
        }
    };
    let attrs = add_attrs(g, attrs);
    let mut children = vec![x, w, b];
    children.extend(z);
    children.push(attrs);
    typed_add(g, class, Node::op("conv_bias", children))
}

/// Whether `b` is a channel-broadcast bias `[1, OC, 1, 1]` for output `out`.
fn channel_bias(g: &Graph<'_>, b: Id, class: Id) -> bool {
    let (Some(bt), Some(out)) = (tensor_type(g, b), tensor_type(g, class)) else { return false };
    bt.elem == out.elem
        && bt.shape.len() == 4
        && out.shape.len() == 4
        && bt.shape[0] == Dim::Fixed(1)
        && bt.shape[1] == out.shape[1]
        && matches!(bt.shape[1], Dim::Fixed(_))
        && bt.shape[2] == Dim::Fixed(1)
        && bt.shape[3] == Dim::Fixed(1)
}

fn conv_of(g: &Graph<'_>, s: &Subst) -> Option<(Id, Id, Id)> {
    let (x, w, p) = (var(s, "?x"), var(s, "?w"), var(s, "?p"));
    let conv = lookup(g, "conv2d", vec![x, w, p])?;
    single_reader(g, conv).then_some((x, w, p))
}

fn conv_add(g: &mut Graph<'_>, class: Id, s: &Subst, nl: &str) -> Option<Id> {
    let (x, w, p) = conv_of(g, s)?;
    let r = var(s, "?r");
    if channel_bias(g, r, class) {
        return conv_bias(g, class, Conv { x, w, p }, Some(r), None, nl);
    }
    // A full-shape addend becomes conv_bias's `z`.
    let (rt, out) = (tensor_type(g, r)?, tensor_type(g, class)?);
    (rt == out).then(|| conv_bias(g, class, Conv { x, w, p }, None, Some(r), nl)).flatten()
}

fn conv_nl(g: &mut Graph<'_>, class: Id, s: &Subst, nl: &str) -> Option<Id> {
    let (x, w, p) = conv_of(g, s)?;
    conv_bias(g, class, Conv { x, w, p }, None, None, nl)
}

fn bias_nl(g: &mut Graph<'_>, class: Id, s: &Subst, nl: &str, with_z: bool) -> Option<Id> {
    let (x, w, b, p) = (var(s, "?x"), var(s, "?w"), var(s, "?b"), var(s, "?p"));
    let z = with_z.then(|| var(s, "?z"));
    let mut children = vec![x, w, b];
    children.extend(z);
    children.push(p);
    let inner = lookup(g, "conv_bias", children)?;
    let attrs = attrs_of(g, p)?;
    if !single_reader(g, inner) || str_attr(g, &attrs, "nonlinearity").as_deref() != Some("identity") {
        return None;
    }
    conv_bias(g, class, Conv { x, w, p }, Some(b), z, nl)
}

fn bias_relu_relu(g: &mut Graph<'_>, _class: Id, s: &Subst) -> Option<Id> {
    let p = var(s, "?p");
    let attrs = attrs_of(g, p)?;
    if str_attr(g, &attrs, "nonlinearity").as_deref() != Some("relu") {
        return None;
    }
    lookup(g, "conv_bias", vec![var(s, "?x"), var(s, "?w"), var(s, "?b"), p])
}
