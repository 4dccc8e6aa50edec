//! ILP extraction (cargo feature `lp`): the cheapest *DAG* under the cost
//! model, with egg's `LpExtractor` solved by CBC.
//!
//! The greedy extractor sums costs over trees, so a value read twice is paid
//! twice and a rewrite that duplicates a shared producer can look cheaper
//! than it is (see [`super::cost`]). Here every chosen e-node costs its own
//! [`cost::kernel_us`] once, however many chosen nodes read it, and all roots
//! are solved together, so values shared between the function's results are
//! also paid once.
//!
//! Needs the system CBC library at link time (`coinor-libcbc-dev`;
//! `scripts/install-deps.sh --with-lp`). The solver runs without a time limit;
//! it is meant for the e-graphs of single functions (about a thousand
//! e-nodes for resnet50).

use super::analysis::{Graph, GraphAnalysis};
use super::cost::{self, Target};
use super::lang::Node;
use egg::{Id, Language as _, LpCostFunction, LpExtractor};
use std::collections::HashMap;

/// Cost given to an e-node whose cost is not finite (its type is unknown):
/// large enough that the solver only picks it when nothing else computes its
/// class, and finite, which the solver needs.
pub const UNUSABLE_US: f64 = 1e12;

/// LP cost of an e-node: the estimated µs of its own kernel, without its children.
pub struct KernelLpCost {
    target: Target,
}

impl KernelLpCost {
    /// The cost function for `target`.
    pub fn new(target: Target) -> Self {
        KernelLpCost { target }
    }
}

impl<'c> LpCostFunction<Node, GraphAnalysis<'c>> for KernelLpCost {
    fn node_cost(&mut self, egraph: &Graph<'c>, _eclass: Id, enode: &Node) -> f64 {
        let us = cost::kernel_us(egraph, enode, self.target);
        if us.is_finite() { us } else { UNUSABLE_US }
    }
}

/// The node to compute for every class reachable from `roots` (keys are
/// canonical classes; children are classes), minimising the summed
/// [`cost::kernel_us`] of the chosen nodes, each counted once.
///
/// The e-graph must be rebuilt (as a finished egg `Runner` leaves it). Errors
/// when it is not, or when the solver finds no acyclic choice.
pub fn choose_lp(egraph: &Graph<'_>, roots: &[Id], target: Target) -> Result<HashMap<Id, Node>, String> {
    if roots.is_empty() {
        return Ok(HashMap::new());
    }
    if !egraph.clean {
        return Err("LP extraction needs a rebuilt e-graph".into());
    }
    let roots: Vec<Id> = roots.iter().map(|&r| egraph.find(r)).collect();
    // egg panics (instead of returning an error) when CBC finds no solution:
    // turn that into an error of the pass.
    let solved = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        LpExtractor::new(egraph, KernelLpCost::new(target)).solve_multiple(&roots)
    }));
    let (expr, _) = solved.map_err(|payload| {
        let why = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("no message");
        format!("LP extraction failed: {why}")
    })?;
    // The solution is a term whose children come before their parents: find
    // the class of each of its nodes in order.
    let mut class_of: Vec<Id> = Vec::with_capacity(expr.len());
    let mut choice = HashMap::new();
    for (_, node) in expr.items() {
        let node = node.clone().map_children(|c| class_of[usize::from(c)]);
        let class = egraph
            .lookup(node.clone())
            .ok_or_else(|| format!("LP extraction chose `{node}`, which is not in the e-graph"))?;
        let class = egraph.find(class);
        class_of.push(class);
        choice.insert(class, node);
    }
    if let Some(r) = roots.iter().find(|r| !choice.contains_key(r)) {
        return Err(format!("LP extraction left root class {r} without a node"));
    }
    Ok(choice)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eqsat::convert;
    use crate::eqsat::cost::KernelCost;
    use crate::eqsat::rules::fuse_conv_bias::{Conv, conv_bias};
    use egg::{EGraph, Extractor};
    use strata_ir::{ParseOptions, Source, parse_module};

    /// A convolution read by a relu and returned itself: fusing the relu into
    /// a conv_bias would run the convolution twice.
    const SHARED: &str = r#"func @f(%x: tensor<1x8x16x16xf32>) -> (tensor<1x8x16x16xf32>, tensor<1x8x16x16xf32>) {
  %w = graph.const() {value = dense<0.5> : tensor<8x8x3x3xf32>} : () -> tensor<8x8x3x3xf32>
  %c = graph.conv2d(%x, %w) {dilation = [1, 1], group = 1, pad = [1, 1], stride = [1, 1]} : (tensor<1x8x16x16xf32>, tensor<8x8x3x3xf32>) -> tensor<1x8x16x16xf32>
  %r = graph.elemwise(%c) {mode = "relu"} : (tensor<1x8x16x16xf32>) -> tensor<1x8x16x16xf32>
  return(%r, %c)
}"#;

    /// The greedy choice for every class reachable from `roots` (as the pass makes it).
    fn choose_greedy(egraph: &Graph<'_>, roots: &[Id], target: Target) -> HashMap<Id, Node> {
        crate::eqsat::choose(egraph, roots, target)
    }

    /// What a choice costs when every chosen node runs once.
    fn dag_cost(egraph: &Graph<'_>, choice: &HashMap<Id, Node>, target: Target) -> f64 {
        let mut nodes: Vec<(&Id, &Node)> = choice.iter().collect();
        nodes.sort_by_key(|&(c, _)| *c);
        nodes.iter().map(|(_, n)| cost::kernel_us(egraph, n, target)).sum()
    }

    #[test]
    fn lp_keeps_a_shared_producer_that_greedy_duplicates() {
        let target = cost::target("x86-64").expect("the x86-64 target exists");
        let mut ctx = strata_dialects::context();
        let m = parse_module(&mut ctx, &Source::new("shared.strata", SHARED), &ParseOptions::default())
            .unwrap_or_else(|e| panic!("{e}"));
        let func = ctx.body_ops(m)[0];
        let block = ctx.body(func, 0).expect("the function has a body");
        let arg_types = ctx.block(block).args.iter().map(|&a| ctx.value_type(a)).collect();
        let mut g: Graph<'_> = EGraph::new(GraphAnalysis::new(&mut ctx, arg_types, false));
        let conv = convert::to_egraph(&mut g, block).expect("graph ops convert");
        let (relu, conv2d) = (g.find(conv.roots[0]), g.find(conv.roots[1]));
        // The alternative a fusion rule would add if it ignored the second reader.
        let node = g[conv2d].nodes.iter().find(|n| n.head() == Some("conv2d")).expect("a conv2d node").clone();
        let &[x, w, p] = node.children() else { panic!("conv2d has input, weights and attributes") };
        let fused = conv_bias(&mut g, relu, Conv { x, w, p }, None, None, "relu").expect("conv_bias is well typed");
        g.union(relu, fused);
        g.rebuild();
        let relu = g.find(relu);
        let roots = [relu, g.find(conv2d)];

        let greedy = choose_greedy(&g, &roots, target);
        let lp = choose_lp(&g, &roots, target).expect("the LP solves");
        // Greedy sees conv_bias (one kernel) as cheaper than relu(conv) (two kernels)…
        assert_eq!(greedy[&relu].head(), Some("conv_bias"), "greedy: {greedy:?}");
        // …and so runs the convolution twice; the LP pays the convolution once.
        assert_eq!(lp[&relu].head(), Some("relu"), "lp: {lp:?}");
        assert_eq!(lp[&g.find(conv2d)].head(), Some("conv2d"));
        let (cost_greedy, cost_lp) = (dag_cost(&g, &greedy, target), dag_cost(&g, &lp, target));
        assert!(cost_lp < cost_greedy, "LP {cost_lp} µs should beat greedy {cost_greedy} µs");
    }

    #[test]
    fn lp_agrees_with_greedy_without_sharing() {
        let target = cost::target("x86-64").expect("the x86-64 target exists");
        let src = SHARED
            .replace("return(%r, %c)", "return(%r)")
            .replace(") -> (tensor<1x8x16x16xf32>, tensor<1x8x16x16xf32>) {", ") -> tensor<1x8x16x16xf32> {");
        let mut ctx = strata_dialects::context();
        let m = parse_module(&mut ctx, &Source::new("single.strata", &src), &ParseOptions::default())
            .unwrap_or_else(|e| panic!("{e}"));
        let func = ctx.body_ops(m)[0];
        let block = ctx.body(func, 0).expect("the function has a body");
        let arg_types = ctx.block(block).args.iter().map(|&a| ctx.value_type(a)).collect();
        let mut g: Graph<'_> = EGraph::new(GraphAnalysis::new(&mut ctx, arg_types, false));
        let conv = convert::to_egraph(&mut g, block).expect("graph ops convert");
        let relu = g.find(conv.roots[0]);
        let conv2d = g.find(g[relu].nodes[0].children()[0]);
        let node = g[conv2d].nodes[0].clone();
        let &[x, w, p] = node.children() else { panic!("conv2d has input, weights and attributes") };
        let fused = conv_bias(&mut g, relu, Conv { x, w, p }, None, None, "relu").expect("conv_bias is well typed");
        g.union(relu, fused);
        g.rebuild();
        let roots = [g.find(relu)];
        let greedy = choose_greedy(&g, &roots, target);
        let lp = choose_lp(&g, &roots, target).expect("the LP solves");
        assert_eq!(lp[&roots[0]].head(), Some("conv_bias"));
        assert_eq!(greedy[&roots[0]], lp[&roots[0]]);
    }

    #[test]
    fn no_roots_choose_nothing() {
        let mut ctx = strata_dialects::context();
        let g: Graph<'_> = EGraph::new(GraphAnalysis::new(&mut ctx, Vec::new(), false));
        let target = cost::target("aarch64").expect("the aarch64 target exists");
        assert!(choose_lp(&g, &[], target).expect("nothing to solve").is_empty());
    }
}
