//! `eqsat` — equality saturation over the graph dialect (egg): fusion,
//! folding and arithmetic rewrites chosen by a cost model.
//!
//! Expects: a verified module whose functions hold graph ops (a function with
//! other ops — regions, several results, impure ops — is left alone and
//! counted in `functions-skipped`). Produces: each function rebuilt from the
//! cheapest equivalent graph under [`cost`] (ops that survive keep their
//! location and name; a fused op takes those of the op it replaced).
//!
//! Options:
//! - `rules` — comma-separated rule sets (see [`rules::RULE_SETS`]), quoted in
//!   pipeline text: `eqsat{rules="arith,fuse-conv-bias-nonlinearity"}`.
//!   `param-fold` switches on constant folding with the reference evaluator.
//! - `iter-limit`, `node-limit` — bounds of the search (never a time limit).
//! - `target` — the cost model's machine (`x86-64`, `aarch64`).
//! - `extractor` — `greedy` (default: cheapest tree per class) or `lp` (the
//!   cheapest DAG, shared values paid once; needs the cargo feature `lp`, see
//!   `extract_lp`; without it `lp` is an options error).
//!
//! Statistics: `iterations`, `e-nodes`, `e-classes`, `stop-saturated` /
//! `stop-iteration-limit` / `stop-node-limit`, `rewrites` (unions made by
//! rules), `functions-skipped`. Remarks: one line per new op in the result,
//! naming the ops it absorbed and the rules that fired on the way.
//!
//! ```text
//! %0 = graph.conv2d(%x, %w) {…}
//! %1 = graph.elemwise(%0, %b) {mode = "add"}
//! %2 = graph.elemwise(%1) {mode = "relu"}
//! ```
//! becomes `%0 = graph.conv_bias(%x, %w, %b) {…, nonlinearity = "relu"}`.

pub mod analysis;
pub mod convert;
pub mod cost;
#[cfg(feature = "lp")]
pub mod extract_lp;
pub mod lang;
pub mod rules;

use analysis::{Graph, GraphAnalysis};
use egg::{Extractor, Id, Language as _, Runner, StopReason};
use lang::Node;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;
use strata_ir::pass::{Changed, OptionKind, OptionSpec, Pass, PassError, PassInfo, PassOptions, PassStats};
use strata_ir::{Context, OpId};

/// The rule sets `eqsat` runs by default (all of them).
pub const DEFAULT_RULES: &str = "arith,fold-batch-norm,param-redistribute,param-fold,fuse-preprocess,fuse-conv-bias-nonlinearity,fuse-conv-bias-with-z";

/// The pass.
#[derive(Debug)]
pub struct Eqsat {
    /// Rule sets to run.
    pub rules: Vec<String>,
    /// Most iterations.
    pub iter_limit: usize,
    /// Most e-nodes.
    pub node_limit: usize,
    /// Cost model target.
    pub target: cost::Target,
    /// How the result is extracted from the e-graph.
    pub extractor: ExtractorKind,
}

/// The extraction algorithm (option `extractor`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExtractorKind {
    /// egg's greedy extractor over tree costs.
    Greedy,
    /// ILP over DAG costs (cargo feature `lp`).
    Lp,
}

const OPTIONS: &[OptionSpec] = &[
    OptionSpec { name: "rules", kind: OptionKind::Str, default: DEFAULT_RULES, help: "comma-separated rule sets" },
    OptionSpec { name: "iter-limit", kind: OptionKind::UInt, default: "30", help: "most saturation iterations" },
    OptionSpec { name: "node-limit", kind: OptionKind::UInt, default: "200000", help: "most e-nodes" },
    OptionSpec { name: "target", kind: OptionKind::Str, default: "x86-64", help: "cost model target: x86-64, aarch64" },
    OptionSpec {
        name: "extractor",
        kind: OptionKind::Str,
        default: "greedy",
        help: "extraction: greedy (tree cost), lp (DAG cost; needs the cargo feature `lp`)",
    },
];

/// Registry entry.
pub const INFO: PassInfo = PassInfo {
    name: "eqsat",
    summary: "equality saturation (egg): fusion, folding and arithmetic rewrites chosen by a cost model",
    options: OPTIONS,
    create: |o: &PassOptions| Ok(Box::new(Eqsat::from_options(o).map_err(PassError::Options)?)),
};

impl Eqsat {
    /// The pass configured by `options`.
    pub fn from_options(o: &PassOptions) -> Result<Self, String> {
        let rules: Vec<String> =
            o.str("rules").split(',').map(str::trim).filter(|r| !r.is_empty()).map(String::from).collect();
        for r in &rules {
            if rules::rule_set(r).is_none() {
                return Err(format!("unknown rule set `{r}`; the rule sets are {}", rules::RULE_SETS.join(", ")));
            }
        }
        let target = cost::target(o.str("target")).ok_or_else(|| {
            let names: Vec<_> = cost::TARGETS.iter().map(|t| t.name).collect();
            format!("unknown target `{}`; the targets are {}", o.str("target"), names.join(", "))
        })?;
        let extractor = match o.str("extractor") {
            "greedy" => ExtractorKind::Greedy,
            "lp" if cfg!(feature = "lp") => ExtractorKind::Lp,
            "lp" => {
                return Err("extractor `lp` needs strata built with the cargo feature `lp` \
                            (`--features strata-passes/lp`, which links the CBC library: \
                            scripts/install-deps.sh --with-lp)"
                    .into());
            }
            other => return Err(format!("unknown extractor `{other}`; the extractors are greedy, lp")),
        };
        Ok(Eqsat {
            rules,
            iter_limit: usize::try_from(o.int("iter-limit")).unwrap_or(usize::MAX),
            node_limit: usize::try_from(o.int("node-limit")).unwrap_or(usize::MAX),
            target,
            extractor,
        })
    }
}

impl Pass for Eqsat {
    fn name(&self) -> &'static str {
        "eqsat"
    }

    fn run(&mut self, ctx: &mut Context, module: OpId, stats: &mut PassStats) -> Result<Changed, PassError> {
        let funcs: Vec<OpId> =
            ctx.body_ops(module).iter().copied().filter(|&f| ctx.op_name(f) == "func.func").collect();
        let mut changed = Changed::No;
        for f in funcs {
            if self.run_function(ctx, f, stats)? {
                changed = Changed::Yes;
            }
        }
        Ok(changed)
    }
}

impl Eqsat {
    fn run_function(&self, ctx: &mut Context, func: OpId, stats: &mut PassStats) -> Result<bool, PassError> {
        let Some(block) = ctx.body(func, 0) else { return Ok(false) };
        let arg_types: Vec<_> = ctx.block(block).args.iter().map(|&a| ctx.value_type(a)).collect();
        let fold = self.rules.iter().any(|r| r == "param-fold");
        let mut runner: Runner<Node, GraphAnalysis<'_>> = Runner::new(GraphAnalysis::new(ctx, arg_types, fold))
            .with_iter_limit(self.iter_limit)
            .with_node_limit(self.node_limit)
            .with_time_limit(Duration::from_secs(60 * 60 * 24 * 365));
        let conv = match convert::to_egraph(&mut runner.egraph, block) {
            Ok(c) => c,
            Err(why) => {
                tracing::debug!(%why, "eqsat skips a function");
                stats.add("functions-skipped", 1);
                return Ok(false);
            }
        };
        runner.egraph.rebuild();
        let rewrites: Vec<_> = self.rules.iter().flat_map(|r| rules::rule_set(r).unwrap_or_default()).collect();
        let runner = runner.run(&rewrites);
        let stop = match runner.stop_reason {
            Some(StopReason::Saturated) => "stop-saturated",
            Some(StopReason::IterationLimit(_)) => "stop-iteration-limit",
            Some(StopReason::NodeLimit(_)) => "stop-node-limit",
            _ => "stop-other",
        };
        stats.add(stop, 1);
        stats.add("iterations", runner.iterations.len() as i64);
        stats
            .add("rewrites", runner.iterations.iter().map(|i| i.applied.values().sum::<usize>()).sum::<usize>() as i64);
        let mut egraph = runner.egraph;
        stats.add("e-nodes", egraph.total_number_of_nodes() as i64);
        stats.add("e-classes", egraph.number_of_classes() as i64);
        if let Some(c) = egraph.analysis.conflicts.first() {
            return Err(fail(format!("a rewrite broke typing ({c}); this is a bug in a rule")));
        }
        let choice = match self.extractor {
            ExtractorKind::Greedy => choose(&egraph, &conv.roots, self.target),
            #[cfg(feature = "lp")]
            ExtractorKind::Lp => extract_lp::choose_lp(&egraph, &conv.roots, self.target).map_err(fail)?,
            #[cfg(not(feature = "lp"))]
            ExtractorKind::Lp => return Err(fail("extractor `lp` needs the cargo feature `lp`".into())),
        };
        if convert::unchanged(&egraph, &conv, &choice) {
            return Ok(false);
        }
        for remark in explain(&egraph, &conv, &choice) {
            stats.remark(remark);
        }
        convert::rebuild(&mut egraph, &conv, &choice).map_err(fail)?;
        Ok(true)
    }
}

fn fail(message: String) -> PassError {
    PassError::Failed { pass: "eqsat".into(), message }
}

/// The cheapest node (greedy, tree cost) of every class reachable from `roots`.
pub(crate) fn choose(egraph: &Graph<'_>, roots: &[Id], target: cost::Target) -> HashMap<Id, Node> {
    let extractor = Extractor::new(egraph, cost::KernelCost::new(egraph, target));
    let mut choice = HashMap::new();
    let mut stack: Vec<Id> = roots.iter().map(|&r| egraph.find(r)).collect();
    while let Some(c) = stack.pop() {
        if choice.contains_key(&c) {
            continue;
        }
        let node = extractor.find_best_node(c).clone();
        stack.extend(node.children().iter().map(|&x| egraph.find(x)));
        choice.insert(c, node);
    }
    choice
}

/// One remark per new op: the original ops it absorbed and the rules applied to them.
fn explain(egraph: &Graph<'_>, conv: &convert::Converted, choice: &HashMap<Id, Node>) -> Vec<String> {
    let ctx = &*egraph.analysis.ctx;
    let canon_orig: HashSet<Node> =
        conv.origins.iter().map(|(n, _)| n.clone().map_children(|c| egraph.find(c))).collect();
    let mut by_class: HashMap<Id, Vec<usize>> = HashMap::new();
    for (k, (n, _)) in conv.origins.iter().enumerate() {
        if let Some(id) = egraph.lookup(n.clone()) {
            by_class.entry(egraph.find(id)).or_default().push(k);
        }
    }
    let mut classes: Vec<&Id> = choice.keys().collect();
    classes.sort();
    let mut out = Vec::new();
    for &class in classes {
        let node = &choice[&class];
        if !matches!(node, Node::Op(..)) || canon_orig.contains(node) {
            continue;
        }
        let inputs: HashSet<Id> = node.children().iter().map(|&c| egraph.find(c)).collect();
        // Classes the new op absorbed: under the original nodes of its class, down to its inputs.
        let mut absorbed = BTreeSet::new();
        let mut stack = vec![class];
        while let Some(c) = stack.pop() {
            if inputs.contains(&c) && c != class || !absorbed.insert(c) {
                continue;
            }
            for &k in by_class.get(&c).into_iter().flatten() {
                for &child in conv.origins[k].0.children() {
                    let child = egraph.find(child);
                    if by_class.contains_key(&child) && !matches!(conv.origins[by_class[&child][0]].0, Node::Const(_)) {
                        stack.push(child);
                    }
                }
            }
        }
        let mut ops: Vec<String> = Vec::new();
        for c in &absorbed {
            for &k in by_class.get(c).into_iter().flatten() {
                let (n, o) = &conv.origins[k];
                let at = match o.loc.file {
                    Some(f) => format!(" at {}:{}:{}", ctx.str(f), o.loc.line, o.loc.col),
                    None => String::new(),
                };
                ops.push(format!("{n}{at}"));
            }
        }
        if ops.is_empty() {
            continue; // a helper value of another rewrite, not a fusion
        }
        let rules = egraph.analysis.log_for(egraph, &absorbed);
        let name = node.head().unwrap_or("?");
        out.push(format!(
            "{name}: fused {} via {}",
            ops.join(" + "),
            if rules.is_empty() { "(no rule recorded)".into() } else { rules.join(" → ") }
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::analysis::{GraphAnalysis, typed_add};
    use super::convert::to_egraph;
    use super::lang::Node;
    use strata_ir::{ParseOptions, Source, parse_module};

    const SRC: &str = r#"func @f(%x: tensor<2x3xf32>, %y: tensor<3xf32>) -> tensor<2x3xf32> {
  %a = graph.elemwise(%x, %y) {mode = "add"} : (tensor<2x3xf32>, tensor<3xf32>) -> tensor<2x3xf32>
  %r = graph.elemwise(%a) {mode = "relu"} : (tensor<2x3xf32>) -> tensor<2x3xf32>
  return(%r)
}"#;

    #[test]
    fn analysis_types_classes_and_refuses_ill_typed_nodes() {
        let mut ctx = strata_dialects::context();
        let m = parse_module(&mut ctx, &Source::new("t.strata", SRC), &ParseOptions::default()).unwrap();
        let f = strata_dialects::func::functions(&ctx, m)[0];
        let block = ctx.body(f.0, 0).unwrap();
        let args: Vec<_> = ctx.block(block).args.iter().map(|&a| ctx.value_type(a)).collect();
        let mut g = egg::EGraph::new(GraphAnalysis::new(&mut ctx, args, false));
        let conv = to_egraph(&mut g, block).unwrap();
        g.rebuild();
        let root = g.find(conv.roots[0]);
        let (x, y) = (g.add(Node::Arg(0)), g.add(Node::Arg(1)));
        // relu(y) has type 3xf32, not the root's 2x3xf32: refused, the graph is unchanged.
        let before = g.total_number_of_nodes();
        assert!(typed_add(&mut g, root, Node::op("relu", vec![y])).is_none());
        assert_eq!(g.total_number_of_nodes(), before);
        // relu(x + y) has the root's type and hash-conses to the root.
        let a = g.lookup(Node::op("add", vec![x, y])).unwrap();
        assert_eq!(typed_add(&mut g, root, Node::op("relu", vec![a])), Some(root));
        // Merging values of different types is recorded as a conflict (the pass then fails).
        g.union(x, y);
        g.rebuild();
        assert_eq!(g.analysis.conflicts.len(), 1, "{:?}", g.analysis.conflicts);
    }
}
