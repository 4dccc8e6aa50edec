//! The cost model: estimated time of each kernel from the floating-point work
//! it does and the bytes it moves, per target.
//!
//! A kernel's time is `max(flops / peak, bytes / bandwidth) + launch`, where
//! `bytes` counts every operand read once and the result written once, and the
//! work is counted per op (convolutions `2·out·C/G·FH·FW`, matrix products
//! `2·M·N·K`, elementwise ops per element of the result). Constants, parameters,
//! arguments and attributes cost nothing (they are not computed). Symbolic
//! dims count as 1.
//!
//! Known limits:
//! - Extraction is greedy over trees: a value read twice is counted twice, so
//!   a fusion that duplicates a shared producer can look cheaper than it is.
//!   The fusion rules therefore require the fused producer to have a single
//!   reader (MegEngine's condition), which keeps tree cost and DAG cost equal
//!   for every choice they introduce.
//! - Caches are not modelled: a kernel whose data fits in cache is estimated
//!   at memory bandwidth.
//! - The numbers describe native kernels (the JIT's), not the reference
//!   evaluator, which is far slower and compute-bound everywhere.

use super::analysis::Graph;
use super::lang::{Node, is_elemwise_head};
use egg::{CostFunction, Id, Language as _};
use strata_ir::{Context, Dim, TypeData};

/// Machine parameters of one target.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Target {
    /// Name (`x86-64`, `aarch64`).
    pub name: &'static str,
    /// Peak f32 throughput of one core, GFLOP/s.
    pub gflops: f64,
    /// Memory bandwidth of one core, GB/s.
    pub gbytes: f64,
    /// Fixed cost of running one kernel, µs.
    pub launch_us: f64,
}

/// The targets: x86-64 with 128-bit FMA vectors (what Cranelift emits), and
/// aarch64 with NEON.
pub const TARGETS: [Target; 2] = [
    Target { name: "x86-64", gflops: 48.0, gbytes: 20.0, launch_us: 0.5 },
    Target { name: "aarch64", gflops: 32.0, gbytes: 15.0, launch_us: 0.5 },
];

/// The target called `name`.
pub fn target(name: &str) -> Option<Target> {
    TARGETS.iter().copied().find(|t| t.name == name)
}

/// Extraction cost: estimated µs of the whole tree under a node.
pub struct KernelCost<'a, 'c> {
    egraph: &'a Graph<'c>,
    target: Target,
}

impl<'a, 'c> KernelCost<'a, 'c> {
    /// A cost function for `egraph` on `target`.
    pub fn new(egraph: &'a Graph<'c>, target: Target) -> Self {
        KernelCost { egraph, target }
    }
}

fn numel(ctx: &Context, ty: Option<strata_ir::Ty>) -> (f64, f64) {
    match ty.map(|t| ctx.ty(t)) {
        Some(TypeData::Tensor(t)) => {
            let n: f64 = t.shape.iter().map(|d| if let Dim::Fixed(x) = d { *x as f64 } else { 1.0 }).product();
            (n, n * t.elem.size_bytes().max(1) as f64)
        }
        _ => (0.0, 0.0),
    }
}

fn dims(ctx: &Context, ty: Option<strata_ir::Ty>) -> Vec<f64> {
    match ty.map(|t| ctx.ty(t)) {
        Some(TypeData::Tensor(t)) => {
            t.shape.iter().map(|d| if let Dim::Fixed(x) = d { *x as f64 } else { 1.0 }).collect()
        }
        _ => Vec::new(),
    }
}

/// Estimated µs of one kernel computing `node` (0 for leaves).
pub fn kernel_us(egraph: &Graph<'_>, node: &Node, target: Target) -> f64 {
    let Node::Op(head, children) = node else { return 0.0 };
    let head = head.as_str();
    if head == "param" {
        return 0.0;
    }
    let ctx = &*egraph.analysis.ctx;
    let Some(class) = egraph.lookup(node.clone()) else { return f64::INFINITY };
    let out_ty = egraph[class].data.ty;
    let (out_n, out_bytes) = numel(ctx, out_ty);
    let operands = if is_elemwise_head(head) { &children[..] } else { &children[..children.len().saturating_sub(1)] };
    let mut bytes = out_bytes;
    for &c in operands {
        bytes += numel(ctx, egraph[c].data.ty).1;
    }
    let flops = match head {
        "conv2d" | "conv_bias" | "conv_transpose2d" => {
            let w = operands.get(1).map(|&w| dims(ctx, egraph[w].data.ty)).unwrap_or_default();
            let per_out: f64 = if head == "conv_transpose2d" {
                w.first().copied().unwrap_or(1.0) * w.iter().skip(2).product::<f64>()
            } else {
                w.iter().skip(1).product()
            };
            2.0 * out_n * per_out + out_n
        }
        "matmul" => {
            let a = operands.first().map(|&a| dims(ctx, egraph[a].data.ty)).unwrap_or_default();
            let k = a.last().copied().unwrap_or(1.0).max(a.get(a.len().saturating_sub(2)).copied().unwrap_or(1.0));
            2.0 * out_n * k
        }
        "pooling" | "reduce" | "softmax" | "batch_norm" => {
            let input = operands.first().map(|&x| numel(ctx, egraph[x].data.ty).0).unwrap_or(0.0);
            input.max(out_n) * 2.0
        }
        _ => out_n,
    };
    let t = target;
    (flops / (t.gflops * 1e3)).max(bytes / (t.gbytes * 1e3)) + t.launch_us
}

impl CostFunction<Node> for KernelCost<'_, '_> {
    type Cost = f64;

    fn cost<C>(&mut self, enode: &Node, mut costs: C) -> f64
    where
        C: FnMut(Id) -> f64,
    {
        let own = kernel_us(self.egraph, enode, self.target);
        enode.children().iter().fold(own, |acc, &c| acc + costs(c))
    }
}
