//! `fold-batch-norm`: inference batch normalisation with constant statistics
//! becomes a per-channel scale and shift (MegEngine's
//! ConvertBatchNormToElemwisePass), which `param-redistribute` then folds into
//! a preceding convolution's weights and `fuse-conv-bias-nonlinearity` into its
//! bias.
//!
//! | rule | from | to |
//! |---|---|---|
//! | `batch-norm-to-scale-shift` | `batch_norm(x, s, b, m, v)`, all four constant | `add(mul(x, k), c)` with `k = s / sqrt(v + eps)`, `c = b - m·k` |

use super::{add_const, add_inferred, attrs_of, constant, rule_once, typed_add, var};
use crate::eqsat::analysis::{Graph, GraphAnalysis};
use crate::eqsat::lang::Node;
use egg::{Id, Rewrite, Subst};
use strata_ir::{AttrData, TensorData};

/// The rules.
pub fn rules<'c>() -> Vec<Rewrite<Node, GraphAnalysis<'c>>> {
    vec![rule_once("batch-norm-to-scale-shift", "(batch_norm ?x ?s ?b ?m ?v ?p)", scale_shift)]
}

fn scale_shift(g: &mut Graph<'_>, class: Id, s: &Subst) -> Option<Id> {
    let [scale, bias, mean, var_] = ["?s", "?b", "?m", "?v"].map(|n| constant(g, var(s, n)));
    let (scale, bias, mean, var_) = (scale?, bias?, mean?, var_?);
    let attrs = attrs_of(g, var(s, "?p"))?;
    let eps = attrs.iter().find(|(k, _)| k == "epsilon").and_then(|&(_, a)| match g.analysis.ctx.attr(a) {
        AttrData::Float(f) => Some(f.get()),
        _ => None,
    })?;
    let n = scale.len();
    if [&bias, &mean, &var_].iter().any(|t| t.len() != n) {
        return None;
    }
    let k: Vec<f64> = (0..n).map(|i| scale.get_real(i) / (var_.get_real(i) + eps).sqrt()).collect();
    let c: Vec<f64> = (0..n).map(|i| bias.get_real(i) - mean.get_real(i) * k[i]).collect();
    let shape = scale.shape().to_vec();
    let k = add_const(g, TensorData::from_reals(scale.elem(), shape.clone(), &k).ok()?);
    let c = add_const(g, TensorData::from_reals(scale.elem(), shape, &c).ok()?);
    let mul = add_inferred(g, Node::op("mul", vec![var(s, "?x"), k]))?;
    typed_add(g, class, Node::op("add", vec![mul, c]))
}
