//! `nchwxx` — convert convolutions and the ops around them to NCHW88 (`block=8`)
//! or NCHW44 (`block=4`), following MegEngine's `EnableNchwxxPass`.
//!
//! Expects: a verified graph-level module (conv + bias + nonlinearity already
//! fused into `graph.conv_bias`; run `padding-channel` first to make more
//! convolutions convertible). Produces: blocked activations `[N, C/P, H, W, P]`
//! with `layout.*` ops, `layout.relayout` where a value changes layout, packed
//! weights as `layout.weight` of the original weight (a constant weight folds
//! into a constant with `canonicalize`; the bias relayout folds likewise).
//!
//! Per `graph.conv_bias` (float element types only; quantised convolutions stay NCHW):
//! - group 1, `IC % P == 0` and `OC % P == 0`: `dense` weights, blocked input;
//! - group 1, `IC < P`, `OC % P == 0` and MegEngine's hybrid conditions (NCHW88:
//!   no dilation; NCHW44: square 2/3/5/7 kernel, equal stride 1 or 2, no
//!   dilation, nonlinearity identity/relu/h_swish): `hybrid` weights, the input
//!   stays NCHW, the output is blocked (the first layer of a network);
//! - group `G > 1` with one input and output channel per group and `G % P == 0`:
//!   `channelwise`; else with `ICPG % P == 0` and `OCPG % P == 0`: `group`;
//! - otherwise it stays NCHW (its blocked inputs are relayouted back).
//!
//! A `conv_bias` with `z` is converted too (MegEngine asserts instead): `z` is
//! added elementwise in the same layout, so relayouting it keeps the meaning.
//!
//! Other ops: `pooling`, `global_avg_pool`, `adaptive_pooling`, `resize` become
//! their `layout.*` form when their input is blocked; `elemwise`, `typecvt`,
//! `concat` run blocked when some operand is blocked and every rank-4 operand
//! has `C % P == 0` (one-element operands stay plain; any other operand keeps
//! the op in NCHW); `reduce` runs blocked over H or W with `keepdim`; every
//! other op reads NCHW. Each converted result gets a relayout back to NCHW for
//! the readers that need it (and for the function's results), so the
//! signature never changes; unused relayouts are erased.
//!
//! Options: `block` (8 or 4, default 8).
//!
//! ```text
//! %y = graph.conv_bias(%x, %w, %b) {…} : (tensor<1x16x8x8xf32>, tensor<8x16x3x3xf32>, …) -> tensor<1x8x8x8xf32>
//! return(%y)
//! ```
//! becomes
//! ```text
//! %0 = layout.relayout(%x) {to = #nchw88} : … -> tensor<1x2x8x8x8xf32, #nchw88>
//! %1 = layout.weight(%w) {block = 8, format = "dense"} : … -> tensor<1x2x3x3x8x8xf32>
//! %2 = layout.relayout(%b) {to = #nchw88} : … -> tensor<1x1x1x1x8xf32, #nchw88>
//! %y = layout.conv_bias(%0, %1, %2) {…, format = #nchw88, weight_format = "dense"} : …
//! %3 = layout.relayout(%y) {to = #nchw} : … -> tensor<1x8x8x8xf32>
//! return(%3)
//! ```

use super::{attrs_of, bodies, build, dim, int, is_scalar_like, layout_attr, relayout, string, take_name};
use std::collections::HashMap;
use strata_ir::pass::{Changed, OptionKind, OptionSpec, Pass, PassError, PassInfo, PassOptions, PassStats};
use strata_ir::{Context, Layout, OpId, Rewriter, ValueId, attr_kind, registry::attr_kind::Get};

/// The pass.
#[derive(Debug)]
pub struct Nchwxx {
    block: u64,
    layout: Layout,
}

/// Registry entry.
pub const INFO: PassInfo = PassInfo {
    name: "nchwxx",
    summary: "convert convolutions and their neighbours to NCHW88 / NCHW44 (MegEngine's EnableNchwxxPass)",
    options: &[OptionSpec {
        name: "block",
        kind: OptionKind::UInt,
        default: "8",
        help: "channel block: 8 (NCHW88) or 4 (NCHW44)",
    }],
    create: |o: &PassOptions| {
        let layout = match o.int("block") {
            8 => Layout::Nchw88,
            4 => Layout::Nchw44,
            b => return Err(PassError::Options(format!("option `block` of pass `nchwxx` must be 8 or 4, got {b}"))),
        };
        Ok(Box::new(Nchwxx { block: o.int("block") as u64, layout }))
    },
};

impl Pass for Nchwxx {
    fn name(&self) -> &'static str {
        "nchwxx"
    }

    fn run(&mut self, ctx: &mut Context, module: OpId, stats: &mut PassStats) -> Result<Changed, PassError> {
        let mut rw = Rewriter::new(ctx);
        for body in bodies(rw.ctx(), module) {
            let mut state =
                State { p: self.block, l: self.layout, blocked: HashMap::new(), to_blocked: HashMap::new() };
            for op in rw.ctx().block(body).ops.clone() {
                state
                    .convert(&mut rw, op, stats)
                    .map_err(|message| PassError::Failed { pass: "nchwxx".into(), message })?;
            }
        }
        stats.add("relayouts-erased", super::erase_dead_helpers(&mut rw, module));
        Ok(Changed::from_bool(rw.changed()))
    }
}

struct State {
    p: u64,
    l: Layout,
    /// An NCHW value → the same tensor in the blocked layout.
    blocked: HashMap<ValueId, ValueId>,
    /// Relayouts to the blocked layout made for plain values (reused).
    to_blocked: HashMap<ValueId, ValueId>,
}

/// How a convolution is converted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ConvKind {
    Dense,
    Hybrid,
    ChannelWise,
    Group,
}

impl ConvKind {
    fn format(self) -> &'static str {
        match self {
            ConvKind::Dense => "dense",
            ConvKind::Hybrid => "hybrid",
            ConvKind::ChannelWise => "channelwise",
            ConvKind::Group => "group",
        }
    }
}

impl State {
    /// `v` in the blocked layout (an existing blocked version, or a new relayout before `at`).
    fn get_blocked(&mut self, rw: &mut Rewriter<'_>, v: ValueId, at: OpId) -> Result<ValueId, String> {
        if let Some(&b) = self.blocked.get(&v).or_else(|| self.to_blocked.get(&v)) {
            return Ok(b);
        }
        let b = relayout(rw, v, self.l, at)?;
        self.to_blocked.insert(v, b);
        Ok(b)
    }

    /// Whether `v` is a rank-4 plain tensor whose channels divide by the block.
    fn packable(&self, ctx: &Context, v: ValueId) -> bool {
        ctx.value_tensor(v).is_some_and(|t| t.layout == Layout::Nchw && t.shape.len() == 4)
            && dim(ctx, v, 1).is_some_and(|c| c % self.p == 0)
    }

    fn convert(&mut self, rw: &mut Rewriter<'_>, op: OpId, stats: &mut PassStats) -> Result<(), String> {
        let name = rw.ctx().op_name(op).to_string();
        let new = match name.as_str() {
            "graph.conv_bias" => self.conv(rw, op, stats)?,
            "graph.pooling" | "graph.global_avg_pool" | "graph.adaptive_pooling" | "graph.resize" => {
                let x = rw.ctx().op(op).operands[0];
                match self.blocked.get(&x) {
                    Some(&xb) => {
                        let lname = name.replacen("graph.", "layout.", 1);
                        build(rw, &lname, &[xb], attrs_of(rw.ctx(), op), op).ok()
                    }
                    None => None,
                }
            }
            "graph.elemwise" | "graph.typecvt" | "graph.concat" => self.packed_elementwise(rw, op, &name)?,
            "graph.reduce" => self.reduce(rw, op)?,
            _ => None,
        };
        let Some(nb) = new else { return Ok(()) };
        let old = rw.ctx().op(op).results[0];
        let back = relayout(rw, nb, Layout::Nchw, op)?;
        take_name(rw, old, nb);
        rw.replace_all_uses(old, back);
        rw.erase_op(op);
        self.blocked.insert(back, nb);
        stats.add("ops-converted", 1);
        Ok(())
    }

    fn conv(&mut self, rw: &mut Rewriter<'_>, op: OpId, stats: &mut PassStats) -> Result<Option<ValueId>, String> {
        let ctx = rw.ctx();
        let operands = ctx.op(op).operands.clone();
        let (x, w, b) = (operands[0], operands[1], operands[2]);
        let (Some(xt), Some(wt)) = (ctx.value_tensor(x), ctx.value_tensor(w)) else { return Ok(None) };
        if !xt.elem.is_float() || xt.shape.len() != 4 || wt.shape.len() != 4 {
            stats.remark(format!("{}: stays NCHW (only float convolutions are converted)", describe(ctx, op)));
            return Ok(None);
        }
        let (Some(ic), Some(oc), Some(icpg), Some(fh), Some(fw)) =
            (dim(ctx, x, 1), dim(ctx, w, 0), dim(ctx, w, 1), dim(ctx, w, 2), dim(ctx, w, 3))
        else {
            return Ok(None);
        };
        let get_ints = |k: &str| ctx.op_attr(op, k).and_then(|a| attr_kind::Ints::get(ctx, a)).unwrap_or_default();
        let group = ctx.op_attr(op, "group").and_then(|a| attr_kind::Int::get(ctx, a)).unwrap_or(1).max(1) as u64;
        let nl = ctx.op_attr(op, "nonlinearity").and_then(|a| attr_kind::Str::get(ctx, a)).unwrap_or("");
        let (stride, dilation) = (get_ints("stride"), get_ints("dilation"));
        let p = self.p;
        let no_dilation = dilation.iter().all(|&d| d == 1);
        let hybrid_ok = if p == 8 {
            no_dilation
        } else {
            fh == fw
                && [2, 3, 5, 7].contains(&fh)
                && stride.len() == 2
                && stride[0] == stride[1]
                && (stride[0] == 1 || stride[0] == 2)
                && no_dilation
                && matches!(nl, "identity" | "relu" | "h_swish")
        };
        let ocpg = oc / group;
        let kind = if group == 1 {
            if ic % p == 0 && oc % p == 0 {
                Some(ConvKind::Dense)
            } else if ic < p && oc % p == 0 && hybrid_ok {
                Some(ConvKind::Hybrid)
            } else {
                None
            }
        } else if icpg == 1 && ocpg == 1 && group.is_multiple_of(p) {
            Some(ConvKind::ChannelWise)
        } else if icpg.is_multiple_of(p) && ocpg.is_multiple_of(p) {
            Some(ConvKind::Group)
        } else {
            None
        };
        let Some(kind) = kind else {
            stats.remark(format!(
                "{}: stays NCHW (IC = {ic}, OC = {oc}, group = {group}, filter {fh}x{fw}, block {p})",
                describe(ctx, op)
            ));
            stats.add("convs-kept-nchw", 1);
            return Ok(None);
        };
        let desc = describe(ctx, op);
        let xin = if kind == ConvKind::Hybrid { x } else { self.get_blocked(rw, x, op)? };
        let mut wattrs = vec![("format".to_string(), string(rw, kind.format())), ("block".into(), int(rw, p as i64))];
        if group > 1 {
            wattrs.push(("group".into(), int(rw, group as i64)));
        }
        let wb = build(rw, "layout.weight", &[w], wattrs, op)?;
        let mut ops = vec![xin, wb, self.get_blocked(rw, b, op)?];
        for &z in &operands[3..] {
            ops.push(self.get_blocked(rw, z, op)?);
        }
        let mut attrs = attrs_of(rw.ctx(), op);
        attrs.push(("format".into(), layout_attr(rw, self.l)));
        attrs.push(("weight_format".into(), string(rw, kind.format())));
        let y = build(rw, "layout.conv_bias", &ops, attrs, op)?;
        stats.remark(format!("{desc}: {} #{}", kind.format(), self.l));
        stats.add(&format!("convs-{}", kind.format()), 1);
        Ok(Some(y))
    }

    fn packed_elementwise(&mut self, rw: &mut Rewriter<'_>, op: OpId, name: &str) -> Result<Option<ValueId>, String> {
        let ctx = rw.ctx();
        let operands = ctx.op(op).operands.clone();
        if !operands.iter().any(|v| self.blocked.contains_key(v)) {
            return Ok(None);
        }
        if name == "graph.concat" {
            let rank4 = operands.iter().all(|&v| self.packable(ctx, v));
            let axis = ctx.op_attr(op, "axis").and_then(|a| attr_kind::Int::get(ctx, a)).unwrap_or(1);
            if !rank4 || !(-4..4).contains(&axis) {
                return Ok(None);
            }
        } else {
            let ok = operands.iter().all(|&v| self.packable(ctx, v) || is_scalar_like(ctx, v));
            if !ok {
                return Ok(None);
            }
        }
        let mut new_operands = Vec::with_capacity(operands.len());
        for &v in &operands {
            new_operands.push(if is_scalar_like(rw.ctx(), v) { v } else { self.get_blocked(rw, v, op)? });
        }
        Ok(build(rw, name, &new_operands, attrs_of(rw.ctx(), op), op).ok())
    }

    fn reduce(&mut self, rw: &mut Rewriter<'_>, op: OpId) -> Result<Option<ValueId>, String> {
        let ctx = rw.ctx();
        let x = ctx.op(op).operands[0];
        let Some(&xb) = self.blocked.get(&x) else { return Ok(None) };
        let axis = ctx.op_attr(op, "axis").and_then(|a| attr_kind::Int::get(ctx, a)).unwrap_or(0);
        let keep = ctx.op_attr(op, "keepdim").and_then(|a| attr_kind::Bool::get(ctx, a)).unwrap_or(false);
        if !keep || !matches!(axis, 2 | 3 | -1 | -2) {
            return Ok(None);
        }
        let mut attrs = attrs_of(ctx, op);
        let stored_axis = if axis < 0 { axis + 4 } else { axis };
        for (k, a) in attrs.iter_mut() {
            if k == "axis" {
                *a = int(rw, stored_axis);
            }
        }
        Ok(build(rw, "graph.reduce", &[xb], attrs, op).ok())
    }
}

/// `graph.conv_bias %name` for remarks.
fn describe(ctx: &Context, op: OpId) -> String {
    let r = ctx.op(op).results[0];
    match ctx.value(r).name {
        Some(s) => format!("{} %{}", ctx.op_name(op), ctx.str(s)),
        None => ctx.op_name(op).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::run;

    #[test]
    fn dense_conv_then_pooling_and_endpoint() {
        let out = run(
            "nchwxx{block=8},canonicalize",
            r#"func @f(%x: tensor<1x16x4x4xf32>) -> tensor<1x8x2x2xf32> {
  %w = graph.const() {value = dense<0.5> : tensor<8x16x3x3xf32>} : () -> tensor<8x16x3x3xf32>
  %b = graph.const() {value = dense<1.0> : tensor<1x8x1x1xf32>} : () -> tensor<1x8x1x1xf32>
  %y = graph.conv_bias(%x, %w, %b) {dilation = [1, 1], group = 1, nonlinearity = "relu", pad = [1, 1], stride = [1, 1]} : (tensor<1x16x4x4xf32>, tensor<8x16x3x3xf32>, tensor<1x8x1x1xf32>) -> tensor<1x8x4x4xf32>
  %p = graph.pooling(%y) {mode = "max", pad = [0, 0], stride = [2, 2], window = [2, 2]} : (tensor<1x8x4x4xf32>) -> tensor<1x8x2x2xf32>
  return(%p)
}"#,
        );
        insta::assert_snapshot!(out, @r#"
        func @f(%x: tensor<1x16x4x4xf32>) -> tensor<1x8x2x2xf32> {
          %0 = layout.relayout(%x) {to = #nchw88} : (tensor<1x16x4x4xf32>) -> tensor<1x2x4x4x8xf32, #nchw88>
          %1 = graph.const() {value = dense<0.5> : tensor<1x2x3x3x8x8xf32>} : () -> tensor<1x2x3x3x8x8xf32>
          %2 = graph.const() {value = dense<1.0> : tensor<1x1x1x1x8xf32, #nchw88>} : () -> tensor<1x1x1x1x8xf32, #nchw88>
          %y = layout.conv_bias(%0, %1, %2) {dilation = [1, 1], format = #nchw88, group = 1, nonlinearity = "relu", pad = [1, 1], stride = [1, 1], weight_format = "dense"} : (tensor<1x2x4x4x8xf32, #nchw88>, tensor<1x2x3x3x8x8xf32>, tensor<1x1x1x1x8xf32, #nchw88>) -> tensor<1x1x4x4x8xf32, #nchw88>
          %p = layout.pooling(%y) {mode = "max", pad = [0, 0], stride = [2, 2], window = [2, 2]} : (tensor<1x1x4x4x8xf32, #nchw88>) -> tensor<1x1x2x2x8xf32, #nchw88>
          %3 = layout.relayout(%p) {to = #nchw} : (tensor<1x1x2x2x8xf32, #nchw88>) -> tensor<1x8x2x2xf32>
          return(%3)
        }
        "#);
    }
}
