//! The `layout` dialect: activations in blocked layouts (MegEngine's NCHWxx
//! tensor formats), explicit relayouts and pre-packed convolution weights.
//!
//! Tensor types carry their layout (`tensor<1x2x4x4x8xf32, #nchw88>` is a
//! logical `[1, 16, 4, 4]` activation stored as `[N, C/8, H, W, 8]`); the
//! stored shapes are in [`format`]. Ops (reference: `docs/layout.md`):
//!
//! - `layout.relayout(x) {to}`: any activation layout to any other;
//! - `layout.weight(w) {format, block, group?}`: OIHW weight → packed weight;
//! - `layout.conv_bias(x, w, b, z?) {… graph.conv_bias's attributes, format, weight_format}`;
//! - `layout.pooling`, `layout.global_avg_pool`, `layout.adaptive_pooling`,
//!   `layout.resize`: the graph ops on a blocked activation.
//!
//! Ops whose meaning does not depend on the layout (`graph.elemwise`,
//! `graph.typecvt`, `graph.concat` on a non-block axis, `graph.reduce` over a
//! spatial axis with `keepdim`) take blocked tensors directly. Every op has a
//! reference `eval` (unpack to NCHW, the graph op's `eval`, repack), so the
//! oracle works at this level.

pub mod format;
pub mod ops;

pub use format::WeightFormat;
pub use ops::{AdaptivePoolingOp, ConvBiasOp, GlobalAvgPoolOp, PoolingOp, RelayoutOp, ResizeOp, WeightOp};

use strata_ir::Registry;

/// Registers the `layout` dialect; folded constants are `graph.const`.
pub fn register(r: &mut Registry) {
    ops::register(r);
}

#[cfg(test)]
mod tests;
