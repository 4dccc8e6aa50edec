//! `padding-channel` — zero-pad convolution output channels to a multiple of
//! the block (MegEngine's `PaddingChannelPass`, "weights only" as for NCHW44/88).
//!
//! Expects: a verified graph-level module with `graph.conv_bias`. Produces:
//! - every group-1 float or int8 (`x` and `w` qs8) `graph.conv_bias` with
//!   `OC % P != 0` computes `OC' = OC` rounded up to `P` channels: its weight
//!   and bias get `OC' - OC` zero output channels (`graph.pad` of the weight and
//!   bias, folded by `canonicalize` when they are constants), `z` is padded
//!   likewise. Quantised types pad with the real value 0, which is the stored 0
//!   (qs8 / qs32 have zero point 0), so padded int8 channels hold the
//!   requantised `nl(0)`, finite as in the float case;
//! - readers that handle padded channels read the padded tensor: a group-1
//!   `conv_bias` (its weight gets zero input channels, so the extra channels
//!   contribute nothing), `pooling`, `global_avg_pool`, `adaptive_pooling`,
//!   `resize`, `typecvt`, and `elemwise` with a mode that keeps finite values
//!   finite whose other operands are padded the same way, hold one element, or
//!   are per-channel `[1, OC, 1, 1]` (zero-padded);
//! - every other reader (group convolutions, shape ops, …) and the function's
//!   results read `graph.subtensor` of the padded tensor, back to `OC` channels.
//!
//! The padded channels hold `nl(0)` and its images through the aware ops: finite
//! values that only padded-aware ops read and that slices drop, so the results
//! are unchanged. Activation inputs are never padded (an `IC = 3` first layer
//! uses `nchwxx`'s hybrid format instead). Options: `block` (default 8).
//!
//! ```text
//! %y = graph.conv_bias(%x, %w, %b) {…} : (tensor<1x16x4x4xf32>, tensor<6x16x3x3xf32>, tensor<1x6x1x1xf32>) -> tensor<1x6x4x4xf32>
//! return(%y)
//! ```
//! becomes
//! ```text
//! %0 = graph.pad(%w) {after = [2, 0, 0, 0], …} : … -> tensor<8x16x3x3xf32>
//! %1 = graph.pad(%b) {after = [0, 2, 0, 0], …} : … -> tensor<1x8x1x1xf32>
//! %y = graph.conv_bias(%x, %0, %1) {…} : … -> tensor<1x8x4x4xf32>
//! %2 = graph.subtensor(%y) {axes = [1], begin = [0], end = [6], step = [1]} : … -> tensor<1x6x4x4xf32>
//! return(%2)
//! ```

use super::{attrs_of, bodies, build, dim, ints, is_scalar_like, string, take_name};
use std::collections::HashMap;
use strata_ir::pass::{Changed, OptionKind, OptionSpec, Pass, PassError, PassInfo, PassOptions, PassStats};
use strata_ir::{AttrData, Context, ElemType, FloatBits, OpId, Rewriter, ValueId, attr_kind, registry::attr_kind::Get};

/// The pass.
#[derive(Debug)]
pub struct PaddingChannel {
    block: u64,
}

/// Registry entry.
pub const INFO: PassInfo = PassInfo {
    name: "padding-channel",
    summary: "zero-pad conv output channels to a multiple of the block; slice back where needed",
    options: &[OptionSpec { name: "block", kind: OptionKind::UInt, default: "8", help: "channel block (e.g. 8 or 4)" }],
    create: |o: &PassOptions| {
        let block = o.int("block");
        if !(2..=64).contains(&block) {
            return Err(PassError::Options(format!(
                "option `block` of pass `padding-channel` must be between 2 and 64, got {block}"
            )));
        }
        Ok(Box::new(PaddingChannel { block: block as u64 }))
    },
};

/// Elementwise modes that map finite values to finite values (so the padded
/// channels never turn into NaN that a zero weight would not cancel).
const SAFE_MODES: &[&str] = &[
    "relu",
    "sigmoid",
    "tanh",
    "abs",
    "neg",
    "floor",
    "ceil",
    "round",
    "h_swish",
    "gelu",
    "add",
    "sub",
    "mul",
    "max",
    "min",
    "fuse_add_relu",
    "fuse_add_sigmoid",
    "fuse_add_h_swish",
];

impl Pass for PaddingChannel {
    fn name(&self) -> &'static str {
        "padding-channel"
    }

    fn run(&mut self, ctx: &mut Context, module: OpId, stats: &mut PassStats) -> Result<Changed, PassError> {
        let mut rw = Rewriter::new(ctx);
        for body in bodies(rw.ctx(), module) {
            let mut padded: HashMap<ValueId, (ValueId, u64)> = HashMap::new();
            for op in rw.ctx().block(body).ops.clone() {
                self.visit(&mut rw, op, &mut padded, stats)
                    .map_err(|message| PassError::Failed { pass: "padding-channel".into(), message })?;
            }
        }
        super::erase_dead_helpers(&mut rw, module);
        Ok(Changed::from_bool(rw.changed()))
    }
}

/// `graph.pad` of `v` with `extra` zero channels at the end of `axis` (rank 4).
pub(crate) fn pad_axis(
    rw: &mut Rewriter<'_>,
    v: ValueId,
    axis: usize,
    extra: u64,
    at: OpId,
) -> Result<ValueId, String> {
    let mut after = [0i64; 4];
    after[axis] = extra as i64;
    let attrs = vec![
        ("before".to_string(), ints(rw, &[0; 4])),
        ("after".into(), ints(rw, &after)),
        ("mode".into(), string(rw, "constant")),
        ("value".into(), rw.ctx_mut().intern_attr(AttrData::Float(FloatBits::new(0.0)))),
    ];
    build(rw, "graph.pad", &[v], attrs, at)
}

impl PaddingChannel {
    fn visit(
        &self,
        rw: &mut Rewriter<'_>,
        op: OpId,
        padded: &mut HashMap<ValueId, (ValueId, u64)>,
        stats: &mut PassStats,
    ) -> Result<(), String> {
        let name = rw.ctx().op_name(op).to_string();
        let operands = rw.ctx().op(op).operands.clone();
        // (new result, channels of the original result) if the result is padded.
        let result: Option<(ValueId, Option<u64>)> = match name.as_str() {
            "graph.conv_bias" => self.conv(rw, op, &operands, padded, stats)?,
            "graph.pooling" | "graph.global_avg_pool" | "graph.adaptive_pooling" | "graph.resize" | "graph.typecvt" => {
                match padded.get(&operands[0]) {
                    Some(&(xp, c)) => build(rw, &name, &[xp], attrs_of(rw.ctx(), op), op).ok().map(|v| (v, Some(c))),
                    None => None,
                }
            }
            "graph.elemwise" => self.elemwise(rw, op, &operands, padded)?,
            _ => None,
        };
        let Some((new, channels)) = result else { return Ok(()) };
        let old = rw.ctx().op(op).results[0];
        take_name(rw, old, new);
        match channels {
            Some(c) => {
                let attrs = vec![
                    ("axes".to_string(), ints(rw, &[1])),
                    ("begin".into(), ints(rw, &[0])),
                    ("end".into(), ints(rw, &[c as i64])),
                    ("step".into(), ints(rw, &[1])),
                ];
                let slice = build(rw, "graph.subtensor", &[new], attrs, op)?;
                rw.replace_all_uses(old, slice);
                padded.insert(slice, (new, c));
            }
            None => rw.replace_all_uses(old, new),
        }
        rw.erase_op(op);
        Ok(())
    }

    /// A group-1 float or qs8 conv: pads its input channels to a padded input, and its
    /// output channels to the block.
    fn conv(
        &self,
        rw: &mut Rewriter<'_>,
        op: OpId,
        operands: &[ValueId],
        padded: &HashMap<ValueId, (ValueId, u64)>,
        stats: &mut PassStats,
    ) -> Result<Option<(ValueId, Option<u64>)>, String> {
        let ctx = rw.ctx();
        let group = ctx.op_attr(op, "group").and_then(|a| attr_kind::Int::get(ctx, a)).unwrap_or(1);
        let elem = |v: ValueId| ctx.value_tensor(v).filter(|t| t.shape.len() == 4).map(|t| t.elem);
        let float = elem(operands[0]).is_some_and(|e| e.is_float());
        let int8 = matches!((elem(operands[0]), elem(operands[1])), (Some(ElemType::QS8(_)), Some(ElemType::QS8(_))));
        let Some(oc) = dim(ctx, operands[1], 0) else { return Ok(None) };
        if group != 1 || !(float || int8) || dim(ctx, operands[2], 1) != Some(oc) {
            return Ok(None);
        }
        let (mut x, mut w, mut b) = (operands[0], operands[1], operands[2]);
        let mut z = operands.get(3).copied();
        let mut changed = false;
        if let Some(&(xp, c)) = padded.get(&x) {
            let cp = dim(ctx, xp, 1).expect("invariant: padded tensors have fixed channels");
            w = pad_axis(rw, w, 1, cp - c, op)?;
            x = xp;
            changed = true;
        }
        let extra = (self.block - oc % self.block) % self.block;
        if extra > 0 {
            w = pad_axis(rw, w, 0, extra, op)?;
            b = pad_axis(rw, b, 1, extra, op)?;
            if let Some(zv) = z {
                z = Some(match padded.get(&zv) {
                    Some(&(zp, c)) if c == oc && dim(rw.ctx(), zp, 1) == Some(oc + extra) => zp,
                    _ => pad_axis(rw, zv, 1, extra, op)?,
                });
            }
            stats.add("convs-padded", 1);
            changed = true;
        }
        if !changed {
            return Ok(None);
        }
        let mut ops = vec![x, w, b];
        ops.extend(z);
        let new = build(rw, "graph.conv_bias", &ops, attrs_of(rw.ctx(), op), op)?;
        Ok(Some((new, (extra > 0).then_some(oc))))
    }

    fn elemwise(
        &self,
        rw: &mut Rewriter<'_>,
        op: OpId,
        operands: &[ValueId],
        padded: &HashMap<ValueId, (ValueId, u64)>,
    ) -> Result<Option<(ValueId, Option<u64>)>, String> {
        let ctx = rw.ctx();
        let mode = ctx.op_attr(op, "mode").and_then(|a| attr_kind::Str::get(ctx, a)).unwrap_or("");
        let Some(&(first, c)) = operands.iter().find_map(|v| padded.get(v)) else { return Ok(None) };
        let cp = dim(ctx, first, 1).expect("invariant: padded tensors have fixed channels");
        if !SAFE_MODES.contains(&mode) {
            return Ok(None);
        }
        let mut new_operands = Vec::with_capacity(operands.len());
        for &v in operands {
            let ctx = rw.ctx();
            let per_channel = ctx.value_tensor(v).is_some_and(|t| t.shape.len() == 4) && dim(ctx, v, 1) == Some(c);
            let nv = match padded.get(&v) {
                Some(&(vp, vc)) if vc == c && dim(ctx, vp, 1) == Some(cp) => vp,
                Some(_) => return Ok(None),
                None if is_scalar_like(ctx, v) => v,
                None if per_channel && !(0..4).any(|i| i != 1 && dim(ctx, v, i) != Some(1)) => {
                    pad_axis(rw, v, 1, cp - c, op)?
                }
                None => return Ok(None),
            };
            new_operands.push(nv);
        }
        Ok(build(rw, "graph.elemwise", &new_operands, attrs_of(rw.ctx(), op), op).ok().map(|v| (v, Some(c))))
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::run;

    #[test]
    fn pads_output_channels_and_the_next_conv() {
        let out = run(
            "padding-channel{block=8}",
            r#"func @f(%x: tensor<1x16x4x4xf32>, %w: tensor<6x16x3x3xf32>, %b: tensor<1x6x1x1xf32>, %w2: tensor<8x6x1x1xf32>, %b2: tensor<1x8x1x1xf32>) -> (tensor<1x6x4x4xf32>, tensor<1x8x4x4xf32>) {
  %y = graph.conv_bias(%x, %w, %b) {dilation = [1, 1], group = 1, nonlinearity = "relu", pad = [1, 1], stride = [1, 1]} : (tensor<1x16x4x4xf32>, tensor<6x16x3x3xf32>, tensor<1x6x1x1xf32>) -> tensor<1x6x4x4xf32>
  %z = graph.conv_bias(%y, %w2, %b2) {dilation = [1, 1], group = 1, nonlinearity = "identity", pad = [0, 0], stride = [1, 1]} : (tensor<1x6x4x4xf32>, tensor<8x6x1x1xf32>, tensor<1x8x1x1xf32>) -> tensor<1x8x4x4xf32>
  return(%y, %z)
}"#,
        );
        insta::assert_snapshot!(out, @r#"
        func @f(%x: tensor<1x16x4x4xf32>, %w: tensor<6x16x3x3xf32>, %b: tensor<1x6x1x1xf32>, %w2: tensor<8x6x1x1xf32>, %b2: tensor<1x8x1x1xf32>) -> (tensor<1x6x4x4xf32>, tensor<1x8x4x4xf32>) {
          %0 = graph.pad(%w) {after = [2, 0, 0, 0], before = [0, 0, 0, 0], mode = "constant", value = 0.0} : (tensor<6x16x3x3xf32>) -> tensor<8x16x3x3xf32>
          %1 = graph.pad(%b) {after = [0, 2, 0, 0], before = [0, 0, 0, 0], mode = "constant", value = 0.0} : (tensor<1x6x1x1xf32>) -> tensor<1x8x1x1xf32>
          %y = graph.conv_bias(%x, %0, %1) {dilation = [1, 1], group = 1, nonlinearity = "relu", pad = [1, 1], stride = [1, 1]} : (tensor<1x16x4x4xf32>, tensor<8x16x3x3xf32>, tensor<1x8x1x1xf32>) -> tensor<1x8x4x4xf32>
          %2 = graph.subtensor(%y) {axes = [1], begin = [0], end = [6], step = [1]} : (tensor<1x8x4x4xf32>) -> tensor<1x6x4x4xf32>
          %3 = graph.pad(%w2) {after = [0, 2, 0, 0], before = [0, 0, 0, 0], mode = "constant", value = 0.0} : (tensor<8x6x1x1xf32>) -> tensor<8x8x1x1xf32>
          %z = graph.conv_bias(%y, %3, %b2) {dilation = [1, 1], group = 1, nonlinearity = "identity", pad = [0, 0], stride = [1, 1]} : (tensor<1x8x4x4xf32>, tensor<8x8x1x1xf32>, tensor<1x8x1x1xf32>) -> tensor<1x8x4x4xf32>
          return(%2, %z)
        }
        "#);
    }
}
