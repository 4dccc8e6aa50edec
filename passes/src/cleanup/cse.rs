//! `cse` — common-subexpression elimination.
//!
//! Expects: any verified module. Produces: the module where a pure, region-free
//! op equal to an earlier visible one (same name, operands, attributes and
//! result types; operands compared as a multiset for commutative ops) is
//! replaced by it. Equal constants merge too, since attributes are interned.
//! Scoping follows dominance: an op in a nested region may reuse one from an
//! enclosing block, never across an isolated-from-above op. Options: none.
//!
//! ```text
//! %0 = graph.elemwise(%x, %y) {mode = "add"} : …
//! %1 = graph.elemwise(%y, %x) {mode = "add"} : …
//! %2 = graph.elemwise(%0, %1) {mode = "mul"} : …
//! ```
//! becomes `%0 = graph.elemwise(%x, %y) {mode = "add"}; %1 = graph.elemwise(%0, %0) {mode = "mul"}`.

use std::collections::HashMap;
use strata_ir::pass::{Changed, Pass, PassError, PassInfo, PassOptions, PassStats};
use strata_ir::{Attr, BlockId, Context, OpId, OpTraits, Rewriter, Sym, Ty, ValueId};

/// The pass.
#[derive(Debug, Default)]
pub struct Cse;

/// Registry entry.
pub const INFO: PassInfo = PassInfo {
    name: "cse",
    summary: "merge equal pure ops (commutative operands in any order)",
    options: &[],
    create: |_: &PassOptions| Ok(Box::new(Cse)),
};

#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    name: Sym,
    operands: Vec<ValueId>,
    attrs: Vec<(Sym, Attr)>,
    results: Vec<Ty>,
}

fn key(ctx: &Context, op: OpId) -> Option<Key> {
    let def = ctx.op_def(op)?;
    let data = ctx.op(op);
    if !def.traits.contains(OpTraits::PURE) || !data.regions.is_empty() {
        return None;
    }
    let mut operands = data.operands.clone();
    if def.is_commutative(ctx, op) {
        operands.sort();
    }
    Some(Key {
        name: data.name,
        operands,
        attrs: data.attrs.clone(),
        results: data.results.iter().map(|&r| ctx.value_type(r)).collect(),
    })
}

impl Pass for Cse {
    fn name(&self) -> &'static str {
        "cse"
    }

    fn run(&mut self, ctx: &mut Context, module: OpId, stats: &mut PassStats) -> Result<Changed, PassError> {
        let mut rw = Rewriter::new(ctx);
        let mut merged = 0;
        let mut table = HashMap::new();
        for r in rw.ctx().op(module).regions.clone() {
            for b in rw.ctx().region(r).blocks.clone() {
                cse_block(&mut rw, b, &mut table, &mut merged);
            }
        }
        stats.add("ops-merged", merged);
        Ok(Changed::from_bool(rw.changed()))
    }
}

fn cse_block(rw: &mut Rewriter<'_>, block: BlockId, table: &mut HashMap<Key, OpId>, merged: &mut i64) {
    let mut added = Vec::new();
    for op in rw.ctx().block(block).ops.clone() {
        if let Some(k) = key(rw.ctx(), op) {
            if let Some(&existing) = table.get(&k) {
                let results = rw.ctx().op(existing).results.clone();
                rw.replace_op(op, &results);
                *merged += 1;
                continue;
            }
            table.insert(k.clone(), op);
            added.push(k);
        }
        let isolated = rw.ctx().op_def(op).is_some_and(|d| d.traits.contains(OpTraits::ISOLATED_FROM_ABOVE));
        for r in rw.ctx().op(op).regions.clone() {
            for b in rw.ctx().region(r).blocks.clone() {
                if isolated {
                    cse_block(rw, b, &mut HashMap::new(), merged);
                } else {
                    cse_block(rw, b, table, merged);
                }
            }
        }
    }
    for k in added {
        table.remove(&k);
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::run;

    #[test]
    fn merges_commutative_and_constants() {
        let out = run(
            "cse",
            r#"func @f(%x: tensor<2xf32>, %y: tensor<2xf32>) -> tensor<2xf32> {
  %c0 = graph.const() {value = dense<[1.0, 2.0]> : tensor<2xf32>} : () -> tensor<2xf32>
  %c1 = graph.const() {value = dense<[1.0, 2.0]> : tensor<2xf32>} : () -> tensor<2xf32>
  %a = graph.elemwise(%x, %c0) {mode = "add"} : (tensor<2xf32>, tensor<2xf32>) -> tensor<2xf32>
  %b = graph.elemwise(%c1, %x) {mode = "add"} : (tensor<2xf32>, tensor<2xf32>) -> tensor<2xf32>
  %m = graph.elemwise(%a, %b) {mode = "mul"} : (tensor<2xf32>, tensor<2xf32>) -> tensor<2xf32>
  return(%m)
}"#,
        );
        insta::assert_snapshot!(out, @r#"
        func @f(%x: tensor<2xf32>, %y: tensor<2xf32>) -> tensor<2xf32> {
          %c0 = graph.const() {value = dense<[1.0, 2.0]> : tensor<2xf32>} : () -> tensor<2xf32>
          %a = graph.elemwise(%x, %c0) {mode = "add"} : (tensor<2xf32>, tensor<2xf32>) -> tensor<2xf32>
          %m = graph.elemwise(%a, %a) {mode = "mul"} : (tensor<2xf32>, tensor<2xf32>) -> tensor<2xf32>
          return(%m)
        }
        "#);
    }
}
