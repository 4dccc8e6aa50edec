//! `fuse-conv-bias-with-z`: a same-shape addend joins `conv_bias` as `z`
//! (MegEngine's FuseConvBiasZPass).
//!
//! | rule | from | to |
//! |---|---|---|
//! | `conv-bias-add-z` | `add(conv_bias(x, w, b), z)` | `conv_bias(x, w, b, z)` |
//! | `conv-bias-fuse-add-relu-z` | `fuse_add_relu(conv_bias(x, w, b), z)` | `conv_bias(x, w, b, z)` with relu |
//! | `conv-bias-fuse-add-h-swish-z` | `fuse_add_h_swish(conv_bias(x, w, b), z)` | `conv_bias(x, w, b, z)` with h_swish |
//!
//! Conditions, as in MegEngine: the conv_bias has no `z` yet and no
//! nonlinearity, has a single reader, and `z` has the result's shape and
//! element type. (A relu after the fused add is then folded in by
//! `fuse-conv-bias-nonlinearity`'s `conv-bias-z-relu`.)

use super::fuse_conv_bias::{Conv, conv_bias};
use super::{attrs_of, lookup, rule_commuted, single_reader, str_attr, tensor_type, var};
use crate::eqsat::analysis::{Graph, GraphAnalysis};
use crate::eqsat::lang::Node;
use egg::{Id, Rewrite, Subst};

/// The rules.
pub fn rules<'c>() -> Vec<Rewrite<Node, GraphAnalysis<'c>>> {
    let cb = "(conv_bias ?x ?w ?b ?p)";
    let mut r = Vec::new();
    r.extend(rule_commuted("conv-bias-add-z", "add", cb, "?z", |g, c, s| with_z(g, c, s, "identity")));
    r.extend(rule_commuted("conv-bias-fuse-add-relu-z", "fuse_add_relu", cb, "?z", |g, c, s| with_z(g, c, s, "relu")));
    r.extend(rule_commuted("conv-bias-fuse-add-h-swish-z", "fuse_add_h_swish", cb, "?z", |g, c, s| {
        with_z(g, c, s, "h_swish")
    }));
    r
}

fn with_z(g: &mut Graph<'_>, class: Id, s: &Subst, nl: &str) -> Option<Id> {
    let (x, w, b, p, z) = (var(s, "?x"), var(s, "?w"), var(s, "?b"), var(s, "?p"), var(s, "?z"));
    let inner = lookup(g, "conv_bias", vec![x, w, b, p])?;
    let attrs = attrs_of(g, p)?;
    if !single_reader(g, inner) || str_attr(g, &attrs, "nonlinearity").as_deref() != Some("identity") {
        return None;
    }
    if tensor_type(g, z)? != tensor_type(g, class)? {
        return None;
    }
    conv_bias(g, class, Conv { x, w, p }, Some(b), Some(z), nl)
}
