//! `param-redistribute`: a per-channel constant factor after a convolution
//! moves into its weights (MegEngine's ParamRedistributePass).
//!
//! | rule | from | to |
//! |---|---|---|
//! | `conv-mul-channel` | `mul(conv2d(x, w), k)`, `w` constant, `k` constant `[1, OC, 1, 1]` | `conv2d(x, w·k)` |
//! | `conv-bias-mul-channel` | `mul(conv_bias(x, w, b), k)` without nonlinearity or `z` | `conv_bias(x, w·k, b·k)` |
//!
//! The convolution must have a single reader (else it would run twice).

use super::{
    add_const, attrs_of, constant, lookup, rule_commuted_once, single_reader, str_attr, tensor_type, typed_add, var,
};
use crate::eqsat::analysis::{Graph, GraphAnalysis};
use crate::eqsat::lang::Node;
use egg::{Id, Rewrite, Subst};
use strata_ir::{Dim, ElemType, TensorData};

/// The rules.
pub fn rules<'c>() -> Vec<Rewrite<Node, GraphAnalysis<'c>>> {
    let mut r = Vec::new();
    r.extend(rule_commuted_once("conv-mul-channel", "mul", "(conv2d ?x ?w ?p)", "?k", conv_mul));
    r.extend(rule_commuted_once("conv-bias-mul-channel", "mul", "(conv_bias ?x ?w ?b ?p)", "?k", conv_bias_mul));
    r
}

/// The per-output-channel factors of `k` if it is a constant `[1, OC, 1, 1]` for output `class`.
fn channel_factors(g: &Graph<'_>, k: Id, class: Id) -> Option<Vec<f64>> {
    let kt = constant(g, k)?;
    let out = tensor_type(g, class)?;
    let Dim::Fixed(oc) = *out.shape.get(1)? else { return None };
    (kt.shape() == [1, oc as usize, 1, 1] && kt.elem() == out.elem)
        .then(|| (0..kt.len()).map(|i| kt.get_real(i)).collect())
}

/// `w` with output channel `o` scaled by `k[o]`.
fn scale_rows(w: &TensorData, k: &[f64]) -> Option<TensorData> {
    let oc = *w.shape().first()?;
    if oc != k.len() || oc == 0 {
        return None;
    }
    let per = w.len() / oc;
    if w.elem() == ElemType::F32 {
        // Fast path, bit-identical to the general one: w and k hold f32 values,
        // so their f64 product is exact and rounds to the f32 product.
        let mut bytes = Vec::with_capacity(w.bytes().len());
        for (row, &f) in w.bytes().chunks_exact(4 * per).zip(k) {
            let f = f as f32;
            bytes.extend(
                row.chunks_exact(4).flat_map(|x| (f32::from_le_bytes([x[0], x[1], x[2], x[3]]) * f).to_le_bytes()),
            );
        }
        return TensorData::from_bytes(w.elem(), w.shape().to_vec(), bytes.into()).ok();
    }
    let v: Vec<f64> = (0..w.len()).map(|i| w.get_real(i) * k[i / per]).collect();
    TensorData::from_reals(w.elem(), w.shape().to_vec(), &v).ok()
}

fn conv_mul(g: &mut Graph<'_>, class: Id, s: &Subst) -> Option<Id> {
    let (x, w, p) = (var(s, "?x"), var(s, "?w"), var(s, "?p"));
    let conv = lookup(g, "conv2d", vec![x, w, p])?;
    if !single_reader(g, conv) {
        return None;
    }
    let k = channel_factors(g, var(s, "?k"), class)?;
    let w2 = add_const(g, scale_rows(&constant(g, w)?, &k)?);
    typed_add(g, class, Node::op("conv2d", vec![x, w2, p]))
}

fn conv_bias_mul(g: &mut Graph<'_>, class: Id, s: &Subst) -> Option<Id> {
    let (x, w, b, p) = (var(s, "?x"), var(s, "?w"), var(s, "?b"), var(s, "?p"));
    let inner = lookup(g, "conv_bias", vec![x, w, b, p])?;
    let attrs = attrs_of(g, p)?;
    if !single_reader(g, inner) || str_attr(g, &attrs, "nonlinearity").as_deref() != Some("identity") {
        return None;
    }
    let k = channel_factors(g, var(s, "?k"), class)?;
    let w2 = add_const(g, scale_rows(&constant(g, w)?, &k)?);
    let bias = constant(g, b)?;
    let b2: Vec<f64> = (0..bias.len()).map(|i| bias.get_real(i) * k.get(i).copied().unwrap_or(1.0)).collect();
    let b2 = add_const(g, TensorData::from_reals(bias.elem(), bias.shape().to_vec(), &b2).ok()?);
    typed_add(g, class, Node::op("conv_bias", vec![x, w2, b2, p]))
}
