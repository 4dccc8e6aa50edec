//! `nchwxx` — convert convolutions and the ops around them to a blocked layout:
//! NCHW88 / NCHW44 (MegEngine's `EnableNchwxxPass`), NCHW44_DOT
//! (`EnableNchw44DotPass`), and the GPU layouts NCHW4, NCHW32, CHWN4, NHWCD4
//! (run on CPU through the reference evaluator); NCHW64 is refused.
//!
//! Expects: a verified graph-level module (conv + bias + nonlinearity already
//! fused into `graph.conv_bias`; run `padding-channel` first to make more float
//! convolutions convertible). Produces: blocked activations with `layout.*`
//! ops, `layout.relayout` where a value changes layout, packed weights as
//! `layout.weight` of the original weight (a constant weight folds into a
//! constant with `canonicalize`; the bias relayout folds likewise).
//!
//! Options: `layout` (`nchw88`, `nchw44`, `nchw44_dot`, `nchw4`, `nchw32`,
//! `chwn4`, `nchw64`, `nhwcd4`) or, for NCHW88/NCHW44, `block` (8 or 4). With
//! neither, NCHW88. A `block` that contradicts `layout` is an error.
//!
//! Per `graph.conv_bias` (`P` the block; "kernel ok" = MegEngine's hybrid
//! conditions: NCHW88 no dilation; NCHW44 square 2/3/5/7 kernel, equal stride 1
//! or 2, no dilation, nonlinearity identity/relu/h_swish; int8 also 1x1 with stride 1):
//!
//! | layout | converted | weight formats (activation layout) |
//! |---|---|---|
//! | `nchw88`, `nchw44` | float | `dense` (`IC % P == 0`, `OC % P == 0`), `hybrid` (`IC < P`, kernel ok), `channelwise` (`ICPG = OCPG = 1`, `G % P == 0`), `group` (`ICPG`, `OCPG` % P == 0) |
//! | `nchw44_dot` | qs8 and float | qs8: `dot`, `hybrid`, `group_dot` in `#nchw44_dot`, `channelwise` in `#nchw44`; float: as `nchw44` |
//! | `nchw4`, `nchw32`, `chwn4` | qs8, group 1, `IC % P == 0` and `OC % P == 0`; qs8 group convs with `ICPG % 4 == 0`, `OCPG % 4 == 0` | MegEngine's filters `nchw4` `[OC, IC/4, FH, FW, 4]`, `nchw32` `[OC, IC/32, FH, FW, 32]`, `chwn4` `[IC/4, FH, FW, OC, 4]`; group convs in the layout itself when the group sizes divide its block (`nchw32_group`, `chwn4_group`, strata's), else `nchw4_group` `[G, OCPG, ICPG/4, FH, FW, 4]` in `#nchw4`; channel-wise (`G % 4 == 0`) `nchw4_channelwise` in `#nchw4`; `IC < 4` (NCHW_NCHW4_IC_SMALL): `x` and `w` zero-padded to 4 input channels, `nchw4` in `#nchw4`; `nchw32` falls back to `#nchw4` for convs with only `% 4` (MegEngine runs NCHW4 first) |
//! | `nhwcd4` | float (no hybrid form) | `nhwcd4` (strata's dense filter `[OC/4, FH, FW, IC, 4]`), `channelwise`, `group` with block 4 (`#nhwcd4`) |
//! | `nchw64` | nothing: refused (MegEngine's int4 layout; strata has no 4-bit type) | — |
//!
//! Every other convolution stays NCHW (with a remark; its blocked inputs are
//! relayouted back). NCHW4 / NCHW32 / CHWN4 / NHWCD4 **refuse** (a pass error
//! naming the precondition) a module that has convolutions but none that meets
//! the layout's precondition (e.g. `nchw4` on a float model), instead of
//! silently changing nothing; `layout=nchw64` is an option error. Int8 convolutions with `OC % P != 0` convert
//! once `padding-channel` has padded them (it pads float and qs8 convolutions).
//!
//! A `conv_bias` with `z` is converted too (MegEngine asserts instead): `z` is
//! added elementwise in the same layout, so relayouting it keeps the meaning.
//! NCHW44 and NCHW44_DOT store alike, so a relayout between them (a channel-wise
//! int8 conv between dot convs) moves no data.
//!
//! Other ops: `pooling`, `global_avg_pool`, `adaptive_pooling`, `resize` become
//! their `layout.*` form when their input is blocked (keeping its layout);
//! `elemwise`, `typecvt`, `concat` run blocked (in the layout of their first
//! blocked operand) when every rank-4 operand has `C % P == 0` (one-element
//! operands stay plain; any other operand keeps the op in NCHW; concat's axis
//! is mapped to the stored axis); `reduce` runs blocked over H or W with
//! `keepdim` (axis mapped likewise); every
//! other op reads NCHW. Each converted result gets a relayout back to NCHW for
//! the readers that need it (and for the function's results), so the
//! signature never changes; unused relayouts are erased.
//!
//! ```text
//! %y = graph.conv_bias(%x, %w, %b) {…} : (tensor<1x16x8x8xf32>, tensor<8x16x3x3xf32>, …) -> tensor<1x8x8x8xf32>
//! return(%y)
//! ```
//! becomes (`block=8`)
//! ```text
//! %0 = layout.relayout(%x) {to = #nchw88} : … -> tensor<1x2x8x8x8xf32, #nchw88>
//! %1 = layout.weight(%w) {block = 8, format = "dense"} : … -> tensor<1x2x3x3x8x8xf32>
//! %2 = layout.relayout(%b) {to = #nchw88} : … -> tensor<1x1x1x1x8xf32, #nchw88>
//! %y = layout.conv_bias(%0, %1, %2) {…, format = #nchw88, weight_format = "dense"} : …
//! %3 = layout.relayout(%y) {to = #nchw} : … -> tensor<1x8x8x8xf32>
//! return(%3)
//! ```

use super::padding_channel::pad_axis;
use super::{attrs_of, bodies, build, dim, int, is_scalar_like, layout_attr, relayout, string, take_name};
use std::collections::HashMap;
use strata_dialects::layout::format::{WeightFormat, spatial_axes};
use strata_ir::pass::{Changed, OptionKind, OptionSpec, Pass, PassError, PassInfo, PassOptions, PassStats};
use strata_ir::{
    AttrData, Context, DenseAttr, DenseStorage, ElemType, InsertPoint, Layout, OpBuild, OpId, Rewriter, TensorData,
    TensorType, ValueId, attr_kind, registry::attr_kind::Get,
};

/// The pass.
#[derive(Debug)]
pub struct Nchwxx {
    layout: Layout,
}

/// The layouts the pass converts to: every blocked layout (all but NCHW and NHWC).
fn blocked_layouts() -> impl Iterator<Item = Layout> {
    Layout::ALL.into_iter().filter(|l| !matches!(l, Layout::Nchw | Layout::Nhwc))
}

/// Registry entry.
pub const INFO: PassInfo = PassInfo {
    name: "nchwxx",
    summary: "convert convolutions and their neighbours to a blocked layout (MegEngine's EnableNchwxxPass, EnableNchw44DotPass, NCHW4/NCHW32/CHWN4/NHWCD4 conversion)",
    options: &[
        OptionSpec {
            name: "block",
            kind: OptionKind::UInt,
            default: "0",
            help: "channel block: 8 (NCHW88) or 4 (NCHW44); 0 = from `layout` (NCHW88 without it)",
        },
        OptionSpec {
            name: "layout",
            kind: OptionKind::Str,
            default: "",
            help: "target layout: nchw88, nchw44, nchw44_dot, nchw4, nchw32, chwn4, nchw64 (refused: int4), nhwcd4",
        },
    ],
    create: |o: &PassOptions| {
        let block = o.int("block");
        let layout = match (o.str("layout"), block) {
            ("", 0 | 8) => Layout::Nchw88,
            ("", 4) => Layout::Nchw44,
            ("", b) => {
                return Err(PassError::Options(format!("option `block` of pass `nchwxx` must be 8 or 4, got {b}")));
            }
            (name, _) => match Layout::from_name(name).filter(|&l| blocked_layouts().any(|b| b == l)) {
                Some(l) => l,
                None => {
                    let all: Vec<_> = blocked_layouts().map(|l| l.name()).collect();
                    return Err(PassError::Options(format!(
                        "option `layout` of pass `nchwxx` must be one of {}, got `{name}`",
                        all.join(", ")
                    )));
                }
            },
        };
        if layout == Layout::Nchw64 {
            return Err(PassError::Options(
                "option `layout = nchw64` of pass `nchwxx` is refused: NCHW64 is MegEngine's layout for 4-bit \
                 quantised convolutions (EnableNCHW64Pass converts qint4/quint4 convs) and strata has no 4-bit \
                 element type"
                    .into(),
            ));
        }
        if block != 0 && layout.block() != Some(block as u64) {
            return Err(PassError::Options(format!(
                "option `block = {block}` of pass `nchwxx` contradicts `layout = {layout}` (block {})",
                layout.block().unwrap_or(0)
            )));
        }
        Ok(Box::new(Nchwxx { layout }))
    },
};

impl Pass for Nchwxx {
    fn name(&self) -> &'static str {
        "nchwxx"
    }

    fn run(&mut self, ctx: &mut Context, module: OpId, stats: &mut PassStats) -> Result<Changed, PassError> {
        let fail = |message: String| PassError::Failed { pass: "nchwxx".into(), message };
        self.check_precondition(ctx, module)
            .map_err(|message| PassError::Unsupported { pass: "nchwxx".into(), message })?;
        let mut rw = Rewriter::new(ctx);
        if matches!(self.layout, Layout::Nchw88 | Layout::Nchw44 | Layout::Nchw44Dot) {
            let n = conv2d_as_conv_bias(&mut rw, module).map_err(fail)?;
            stats.add("conv2d-as-conv-bias", n as i64);
        }
        for body in bodies(rw.ctx(), module) {
            let mut state = State { mode: self.layout, blocked: HashMap::new(), relayouted: HashMap::new() };
            for op in rw.ctx().block(body).ops.clone() {
                state.convert(&mut rw, op, stats).map_err(fail)?;
            }
        }
        stats.add("relayouts-erased", super::erase_dead_helpers(&mut rw, module));
        Ok(Changed::from_bool(rw.changed()))
    }
}

/// MegEngine's EnableNchwxxPass converts plain convolutions as well as
/// ConvBias: every float `graph.conv2d` becomes a `graph.conv_bias` with a zero
/// bias and no nonlinearity (the same values), which the conversion below then
/// handles like any conv_bias. Returns how many were rewritten.
fn conv2d_as_conv_bias(rw: &mut Rewriter<'_>, module: OpId) -> Result<usize, String> {
    let convs: Vec<OpId> = rw
        .ctx()
        .walk(module)
        .into_iter()
        .filter(|&o| rw.ctx().op_name(o) == "graph.conv2d")
        .filter(|&o| {
            rw.ctx().op(o).operands.iter().all(|&v| rw.ctx().value_tensor(v).is_some_and(|t| t.elem == ElemType::F32))
        })
        .collect();
    for &op in &convs {
        let (x, w) = (rw.ctx().op(op).operands[0], rw.ctx().op(op).operands[1]);
        let Some(oc) = dim(rw.ctx(), w, 0) else { continue };
        let bias_ty = rw.ctx_mut().tensor_type(TensorType::fixed(&[1, oc, 1, 1], ElemType::F32));
        let zeros = TensorData::zeros(ElemType::F32, vec![1, oc as usize, 1, 1]).map_err(|e| e.to_string())?;
        let value =
            rw.ctx_mut().intern_attr(AttrData::Dense(DenseAttr { ty: bias_ty, storage: DenseStorage::Data(zeros) }));
        let loc = rw.ctx().op(op).loc;
        let c = rw.create(
            OpBuild::new("graph.const").attr("value", value).results(&[bias_ty]).loc(loc),
            InsertPoint::Before(op),
        );
        let b = rw.ctx().op(c).results[0];
        let mut attrs = attrs_of(rw.ctx(), op);
        let identity = rw.ctx_mut().intern_attr(AttrData::Str("identity".into()));
        attrs.push(("nonlinearity".into(), identity));
        let y = build(rw, "graph.conv_bias", &[x, w, b], attrs, op)?;
        let old = rw.ctx().op(op).results[0];
        rw.replace_all_uses(old, y);
        rw.erase_op(op);
    }
    Ok(convs.len())
}

impl Nchwxx {
    /// NCHW4 / NCHW32 / CHWN4 / NHWCD4: a module with convolutions of which
    /// none meets the layout's precondition is refused.
    fn check_precondition(&self, ctx: &Context, module: OpId) -> Result<(), String> {
        let what = match self.layout {
            Layout::Nchw4 | Layout::Chwn4 => {
                "qs8 `graph.conv_bias` with group 1, IC % 4 == 0 (or IC < 4, padded) and OC % 4 == 0 (or a group \
                 conv with ICPG % 4 == 0 and OCPG % 4 == 0, or a channel-wise conv with G % 4 == 0)"
            }
            Layout::Nchw32 => {
                "qs8 `graph.conv_bias` with group 1, IC % 4 == 0 (or IC < 4, padded) and OC % 4 == 0 (% 32 for \
                 #nchw32 itself; or a group conv with ICPG % 4 == 0 and OCPG % 4 == 0, or a channel-wise conv with \
                 G % 4 == 0)"
            }
            Layout::Nhwcd4 => {
                "float `graph.conv_bias` with IC % 4 == 0 and OC % 4 == 0 (or channel-wise / group-packable)"
            }
            _ => return Ok(()),
        };
        let convs: Vec<OpId> = ctx.walk(module).into_iter().filter(|&o| ctx.op_name(o) == "graph.conv_bias").collect();
        let mut first = None;
        for &op in &convs {
            match decide(ctx, op, self.layout) {
                Decision::Convert(..) | Decision::ConvertPaddingIc => return Ok(()),
                Decision::Keep(why) => {
                    first.get_or_insert(why);
                }
            }
        }
        match first {
            None => Ok(()),
            Some(why) => Err(format!(
                "layout #{} needs a {what}; none of the {} convolutions qualifies (first: {why})",
                self.layout,
                convs.len()
            )),
        }
    }
}

struct State {
    /// The pass's layout (a conv may still use another one, e.g. NCHW44 for
    /// channel-wise convs under NCHW44_DOT).
    mode: Layout,
    /// An NCHW value → the same tensor in a blocked layout.
    blocked: HashMap<ValueId, ValueId>,
    /// Relayouts made for a value into a layout (reused).
    relayouted: HashMap<(ValueId, Layout), ValueId>,
}

/// The per-conv decision.
enum Decision {
    /// Convert to this activation layout with this weight format.
    Convert(Layout, WeightFormat),
    /// `IC < 4` in `#nchw4`: zero-pad the input and the weight to 4 input
    /// channels (MegEngine's `NCHW_NCHW4_IC_SMALL`), then the `nchw4` filter.
    ConvertPaddingIc,
    /// Stay NCHW, for this reason.
    Keep(String),
}

/// The facts about a convolution the decision reads.
struct ConvFacts {
    int8: bool,
    float: bool,
    ic: u64,
    oc: u64,
    icpg: u64,
    group: u64,
    fh: u64,
    fw: u64,
    stride: Vec<i64>,
    no_dilation: bool,
    nl: String,
}

fn facts(ctx: &Context, op: OpId) -> Result<ConvFacts, String> {
    let operands = &ctx.op(op).operands;
    let (x, w) = (operands[0], operands[1]);
    let (Some(xt), Some(wt)) = (ctx.value_tensor(x), ctx.value_tensor(w)) else {
        return Err("operands are not tensors".into());
    };
    if xt.shape.len() != 4 || wt.shape.len() != 4 || xt.layout != Layout::Nchw {
        return Err("not a plain rank-4 convolution".into());
    }
    let (Some(ic), Some(oc), Some(icpg), Some(fh), Some(fw)) =
        (dim(ctx, x, 1), dim(ctx, w, 0), dim(ctx, w, 1), dim(ctx, w, 2), dim(ctx, w, 3))
    else {
        return Err("symbolic channel or filter sizes".into());
    };
    let get_ints = |k: &str| ctx.op_attr(op, k).and_then(|a| attr_kind::Ints::get(ctx, a)).unwrap_or_default();
    let group = ctx.op_attr(op, "group").and_then(|a| attr_kind::Int::get(ctx, a)).unwrap_or(1).max(1) as u64;
    let nl = ctx.op_attr(op, "nonlinearity").and_then(|a| attr_kind::Str::get(ctx, a)).unwrap_or("").to_string();
    Ok(ConvFacts {
        int8: matches!(xt.elem, ElemType::QS8(_)) && matches!(wt.elem, ElemType::QS8(_)),
        float: xt.elem.is_float(),
        ic,
        oc,
        icpg,
        group,
        fh,
        fw,
        stride: get_ints("stride"),
        no_dilation: get_ints("dilation").iter().all(|&d| d == 1),
        nl,
    })
}

impl ConvFacts {
    /// MegEngine's `nchw_nchwxx_valid` for the hybrid first layer with block `p`.
    fn hybrid_ok(&self, p: u64) -> bool {
        if p == 8 {
            return self.no_dilation;
        }
        let equal_stride = self.stride.len() == 2 && self.stride[0] == self.stride[1];
        let kernel = self.fh == self.fw
            && ([2, 3, 5, 7].contains(&self.fh) || (self.int8 && self.fh == 1 && self.stride.first() == Some(&1)));
        kernel
            && equal_stride
            && (self.stride[0] == 1 || self.stride[0] == 2)
            && self.no_dilation
            && matches!(self.nl.as_str(), "identity" | "relu" | "h_swish")
    }

    /// The NCHWxx decision (dense, hybrid, channel-wise, group) with block `p`,
    /// `dot` selecting the int8 dot-product weight formats.
    fn nchwxx(&self, p: u64, dot: bool, hybrid: bool) -> Option<WeightFormat> {
        let ocpg = self.oc / self.group;
        if self.group == 1 {
            if self.ic.is_multiple_of(p) && self.oc.is_multiple_of(p) {
                Some(if dot { WeightFormat::Dot } else { WeightFormat::Dense })
            } else if hybrid && self.ic < p && self.oc.is_multiple_of(p) && self.hybrid_ok(p) {
                Some(WeightFormat::Hybrid)
            } else {
                None
            }
        } else if self.icpg == 1 && ocpg == 1 && self.group.is_multiple_of(p) {
            Some(WeightFormat::ChannelWise)
        } else if self.icpg.is_multiple_of(p) && ocpg.is_multiple_of(p) {
            Some(if dot { WeightFormat::GroupDot } else { WeightFormat::Group })
        } else {
            None
        }
    }

    fn describe(&self) -> String {
        format!(
            "IC = {}, OC = {}, group = {}, filter {}x{}, {}",
            self.ic,
            self.oc,
            self.group,
            self.fh,
            self.fw,
            if self.int8 {
                "qs8"
            } else if self.float {
                "float"
            } else {
                "neither float nor qs8"
            }
        )
    }
}

/// The decision for conv `op` under the pass's layout `mode`.
fn decide(ctx: &Context, op: OpId, mode: Layout) -> Decision {
    let f = match facts(ctx, op) {
        Ok(f) => f,
        Err(why) => return Decision::Keep(format!("{}: {why}", describe(ctx, op))),
    };
    let keep = |why: &str| Decision::Keep(format!("{}: {why} ({})", describe(ctx, op), f.describe()));
    match mode {
        Layout::Nchw88 | Layout::Nchw44 => {
            if !f.float {
                return keep("only float convolutions convert to this layout");
            }
            match f.nchwxx(mode.block().unwrap_or(4), false, true) {
                Some(k) => Decision::Convert(mode, k),
                None => keep("channels not blocked"),
            }
        }
        Layout::Nchw44Dot => {
            if f.float {
                return match f.nchwxx(4, false, true) {
                    Some(k) => Decision::Convert(Layout::Nchw44, k),
                    None => keep("channels not blocked"),
                };
            }
            if !f.int8 {
                return keep("only qs8 and float convolutions convert");
            }
            match f.nchwxx(4, true, true) {
                Some(WeightFormat::ChannelWise) => Decision::Convert(Layout::Nchw44, WeightFormat::ChannelWise),
                Some(k) => Decision::Convert(Layout::Nchw44Dot, k),
                None => keep("channels not blocked"),
            }
        }
        Layout::Nchw4 | Layout::Nchw32 | Layout::Chwn4 => {
            if !f.int8 {
                return keep("only qs8 convolutions convert to this layout");
            }
            if f.group != 1 {
                // Channel-wise: the NCHW4 channel-wise filter (in #nchw4 under every mode).
                // Group: #nchw32 / #chwn4 themselves when the group sizes divide their block
                // (strata's filters), else MegEngine's NCHW4 group filter (NCHW32 / CHWN4 run
                // NCHW4 first and keep these in it).
                let ocpg = f.oc / f.group;
                let divides = |p: u64| f.icpg.is_multiple_of(p) && ocpg.is_multiple_of(p);
                return if f.icpg == 1 && ocpg == 1 {
                    if f.group.is_multiple_of(4) {
                        Decision::Convert(Layout::Nchw4, WeightFormat::Nchw4ChannelWise)
                    } else {
                        keep("channel-wise convolutions need G % 4 == 0 for #nchw4")
                    }
                } else if mode == Layout::Nchw32 && divides(32) {
                    Decision::Convert(Layout::Nchw32, WeightFormat::Nchw32Group)
                } else if mode == Layout::Chwn4 && divides(4) {
                    Decision::Convert(Layout::Chwn4, WeightFormat::Chwn4Group)
                } else if divides(4) {
                    Decision::Convert(Layout::Nchw4, WeightFormat::Nchw4Group)
                } else {
                    keep("group convolutions need ICPG % 4 == 0 and OCPG % 4 == 0 for #nchw4")
                };
            }
            let p = mode.block().unwrap_or(4);
            let kind = match mode {
                Layout::Nchw32 => WeightFormat::Nchw32,
                Layout::Chwn4 => WeightFormat::Chwn4,
                _ => WeightFormat::Nchw4,
            };
            if f.ic.is_multiple_of(p) && f.oc.is_multiple_of(p) {
                Decision::Convert(mode, kind)
            } else if mode == Layout::Nchw32 && f.ic.is_multiple_of(4) && f.oc.is_multiple_of(4) {
                Decision::Convert(Layout::Nchw4, WeightFormat::Nchw4)
            } else if f.ic < 4 && f.oc.is_multiple_of(4) {
                // MegEngine's NCHW_NCHW4_IC_SMALL (also the first conv under NCHW32 / CHWN4,
                // which run NCHW4 first).
                Decision::ConvertPaddingIc
            } else {
                keep("IC and OC must divide by the block")
            }
        }
        Layout::Nhwcd4 => {
            if !f.float {
                return keep("only float convolutions convert to #nhwcd4");
            }
            match f.nchwxx(4, false, false) {
                Some(WeightFormat::Dense) => Decision::Convert(mode, WeightFormat::Nhwcd4),
                Some(k) => Decision::Convert(mode, k),
                None => keep("channels not blocked"),
            }
        }
        _ => keep("unsupported layout"),
    }
}

/// The stored axis of logical NCHW axis `axis` (0..4) in layout `l`.
fn stored_axis(l: Layout, axis: usize) -> usize {
    match (l, axis) {
        (Layout::Chwn4, 0) => 3,
        (Layout::Chwn4, 1) => 0,
        (Layout::Nhwcd4, 1) => 2,
        (_, 2) => spatial_axes(l).0,
        (_, 3) => spatial_axes(l).1,
        (_, a) => a,
    }
}

impl State {
    /// `v` (a plain value) in layout `l`: its blocked version if it has that
    /// layout, else a (cached) relayout of its blocked version or of `v`.
    fn get_in(&mut self, rw: &mut Rewriter<'_>, v: ValueId, l: Layout, at: OpId) -> Result<ValueId, String> {
        let src = self.blocked.get(&v).copied().unwrap_or(v);
        if rw.ctx().value_tensor(src).is_some_and(|t| t.layout == l) {
            return Ok(src);
        }
        if let Some(&b) = self.relayouted.get(&(src, l)) {
            return Ok(b);
        }
        let b = relayout(rw, src, l, at)?;
        self.relayouted.insert((src, l), b);
        Ok(b)
    }

    /// The layout of the blocked version of `v`, if any.
    fn blocked_layout(&self, ctx: &Context, v: ValueId) -> Option<Layout> {
        self.blocked.get(&v).and_then(|&b| ctx.value_tensor(b)).map(|t| t.layout)
    }

    /// Whether `v` is a rank-4 plain tensor whose channels divide by block `p`.
    fn packable(ctx: &Context, v: ValueId, p: u64) -> bool {
        ctx.value_tensor(v).is_some_and(|t| t.layout == Layout::Nchw && t.shape.len() == 4)
            && dim(ctx, v, 1).is_some_and(|c| c % p == 0)
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
        let (l, kind, pad_ic) = match decide(rw.ctx(), op, self.mode) {
            Decision::Convert(l, k) => (l, k, false),
            Decision::ConvertPaddingIc => (Layout::Nchw4, WeightFormat::Nchw4, true),
            Decision::Keep(why) => {
                stats.remark(format!("stays NCHW: {why}"));
                stats.add("convs-kept-nchw", 1);
                return Ok(None);
            }
        };
        let ctx = rw.ctx();
        let operands = ctx.op(op).operands.clone();
        let (x, w, b) = (operands[0], operands[1], operands[2]);
        let group = ctx.op_attr(op, "group").and_then(|a| attr_kind::Int::get(ctx, a)).unwrap_or(1).max(1);
        let p = l.block().expect("invariant: a blocked layout") as i64;
        let desc = describe(ctx, op);
        let (x, w) = if pad_ic {
            // Zero input channels up to 4 in the activation and the weight.
            let extra = 4 - dim(rw.ctx(), x, 1).expect("invariant: decided on a fixed IC");
            (pad_axis(rw, x, 1, extra, op)?, pad_axis(rw, w, 1, extra, op)?)
        } else {
            (x, w)
        };
        let xin = if kind == WeightFormat::Hybrid { x } else { self.get_in(rw, x, l, op)? };
        let mut wattrs = vec![("format".to_string(), string(rw, kind.name())), ("block".into(), int(rw, p))];
        if group > 1 {
            wattrs.push(("group".into(), int(rw, group)));
        }
        let wb = build(rw, "layout.weight", &[w], wattrs, op)?;
        let mut ops = vec![xin, wb, self.get_in(rw, b, l, op)?];
        for &z in &operands[3..] {
            ops.push(self.get_in(rw, z, l, op)?);
        }
        let mut attrs = attrs_of(rw.ctx(), op);
        attrs.push(("format".into(), layout_attr(rw, l)));
        attrs.push(("weight_format".into(), string(rw, kind.name())));
        let y = build(rw, "layout.conv_bias", &ops, attrs, op)?;
        let note = if pad_ic { " (IC zero-padded to 4)" } else { "" };
        stats.remark(format!("{desc}: {} #{l}{note}", kind.name()));
        let key = if pad_ic { "nchw4_ic_small" } else { kind.name() };
        stats.add(&format!("convs-{key}"), 1);
        Ok(Some(y))
    }

    fn packed_elementwise(&mut self, rw: &mut Rewriter<'_>, op: OpId, name: &str) -> Result<Option<ValueId>, String> {
        let ctx = rw.ctx();
        let operands = ctx.op(op).operands.clone();
        let Some(l) = operands.iter().find_map(|&v| self.blocked_layout(ctx, v)) else { return Ok(None) };
        let p = l.block().expect("invariant: a blocked layout");
        let mut attrs = attrs_of(ctx, op);
        if name == "graph.concat" {
            let rank4 = operands.iter().all(|&v| Self::packable(ctx, v, p));
            let axis = ctx.op_attr(op, "axis").and_then(|a| attr_kind::Int::get(ctx, a)).unwrap_or(1);
            if !rank4 || !(-4..4).contains(&axis) {
                return Ok(None);
            }
            let stored = stored_axis(l, axis.rem_euclid(4) as usize) as i64;
            for (k, a) in attrs.iter_mut() {
                if k == "axis" {
                    *a = int(rw, stored);
                }
            }
        } else if !operands.iter().all(|&v| Self::packable(ctx, v, p) || is_scalar_like(ctx, v)) {
            return Ok(None);
        }
        let mut new_operands = Vec::with_capacity(operands.len());
        for &v in &operands {
            new_operands.push(if is_scalar_like(rw.ctx(), v) { v } else { self.get_in(rw, v, l, op)? });
        }
        Ok(build(rw, name, &new_operands, attrs, op).ok())
    }

    fn reduce(&mut self, rw: &mut Rewriter<'_>, op: OpId) -> Result<Option<ValueId>, String> {
        let ctx = rw.ctx();
        let x = ctx.op(op).operands[0];
        let Some(&xb) = self.blocked.get(&x) else { return Ok(None) };
        let Some(l) = self.blocked_layout(ctx, x) else { return Ok(None) };
        let axis = ctx.op_attr(op, "axis").and_then(|a| attr_kind::Int::get(ctx, a)).unwrap_or(0);
        let keep = ctx.op_attr(op, "keepdim").and_then(|a| attr_kind::Bool::get(ctx, a)).unwrap_or(false);
        if !keep || !matches!(axis, 2 | 3 | -1 | -2) {
            return Ok(None);
        }
        let mut attrs = attrs_of(ctx, op);
        let stored = stored_axis(l, axis.rem_euclid(4) as usize) as i64;
        for (k, a) in attrs.iter_mut() {
            if k == "axis" {
                *a = int(rw, stored);
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

    #[test]
    fn plain_convolutions_convert_as_zero_bias_conv_bias() {
        let src = "func @f(%x: tensor<1x16x6x6xf32>) -> tensor<1x8x6x6xf32> {
  %w = graph.const() {value = dense<0.25> : tensor<8x16x1x1xf32>} : () -> tensor<8x16x1x1xf32>
  %y = graph.conv2d(%x, %w) {dilation = [1, 1], group = 1, pad = [0, 0], stride = [1, 1]} : (tensor<1x16x6x6xf32>, tensor<8x16x1x1xf32>) -> tensor<1x8x6x6xf32>
  return(%y)
}";
        let out = crate::testing::run("nchwxx{layout=nchw88},cancel-relayouts,canonicalize,dce", src);
        assert!(out.contains("layout.conv_bias") && !out.contains("graph.conv2d"), "{out}");
        let main = src.replace("@f(", "@main(");
        crate::lower::tests::check_lowering_with(
            "nchwxx{layout=nchw88},canonicalize,lower-graph-to-loops",
            &main,
            1e-5,
        );
    }
}
