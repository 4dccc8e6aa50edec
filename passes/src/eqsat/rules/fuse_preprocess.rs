//! `fuse-preprocess`: an input preprocessing chain → one `fused_preprocess`
//! (MegEngine's FuseNCHW4Int8Preprocess and FuseWarpPerspectiveDimshufflePass;
//! the op is described in `dialects/src/graph/preprocess.rs`).
//!
//! The chain is absorbed one op at a time: a rule fuses an op with the value it
//! reads when that value is a `fused_preprocess` or a `typecvt` (which is a
//! `fused_preprocess` that only converts), so any order of the steps fuses.
//!
//! | rule | from | to |
//! |---|---|---|
//! | `preprocess-{add,sub,mul,div}` | `v ∘ k`, `k` constant, scalar or per channel | the step appended |
//! | `preprocess-{add,mul}-commuted`, `preprocess-r{sub,div}` | `k ∘ v` | the step appended (`rsub`, `rdiv`) |
//! | `preprocess-dimshuffle` | `dimshuffle(v)`, NHWC→NCHW `(0, 3, 1, 2)` or NCHW→NHWC `(0, 2, 3, 1)` | the result layout changed |
//! | `preprocess-pad` | `pad(v)`, constant `0.0`, after the channels only | `pad_channels` grown |
//! | `preprocess-concat` | `concat(v, zeros)` on the channel axis (`zeros` a constant or a broadcast one) | `pad_channels` grown |
//! | `preprocess-block` | `dimshuffle(reshape(v), (0, 1, 3, 4, 2))` splitting the channels into `[C/b, b]` | `block = b` (e.g. NCHW4) |
//! | `preprocess-typecvt` | `typecvt(v)` after the steps | `out_dtype` |
//! | `preprocess-typecvt-dimshuffle` | `typecvt(dimshuffle(x))` with one of the two relayouts | a new op with `in_layout` ≠ `out_layout` |
//! | `preprocess-warp-typecvt` | `typecvt(warp_perspective(x, m))` | a new op with the warp (a warp with another output type) |
//!
//! Here `v` is a `fused_preprocess` or a `typecvt` of raw image data (a
//! rank-4 integer or quantised tensor, as `x` of the start rules), and it
//! must have a single reader (the op it is fused into), as must the
//! `dimshuffle`, `reshape` or warp a start rule absorbs: otherwise it would be
//! computed twice. Conditions for folding into `v`:
//! - arithmetic: `v` has no padding, blocking or second conversion yet, its
//!   `dtype` is a float type, and `k` is a constant holding one value, or one
//!   per channel broadcast along the channel axis of `v`'s result layout
//!   (`[1, C, 1, 1]`, `[C, 1, 1]` for NCHW; `[1, 1, 1, C]`, `[C]` for NHWC);
//! - padding, relayout: `v` is not blocked; padding appends channels only;
//! - a conversion: `v` has none after its steps yet.
//!
//! A `typecvt` that only converts has no layout of its own: its rank-4 value
//! is read as NCHW unless the first layout-dependent op says NHWC (a per-channel
//! constant on the last axis, padding of the last axis, or the NHWC→NCHW
//! dimshuffle). Every new node is checked with `typed_add`.

use super::{add_attrs, attrs_of, constant, lookup, rule, single_reader, tensor_type, typed_add, var};
use crate::eqsat::analysis::{Graph, GraphAnalysis};
use crate::eqsat::lang::Node;
use egg::{Id, Rewrite, Subst};
use strata_dialects::graph::preprocess::{ImageLayout, Plan, Step, WARP_ATTRS};
use strata_ir::registry::attr_kind::{self, Get as _};
use strata_ir::{Attr, AttrData, Dim, ElemType, TypeData};

/// The head of the fused op.
const HEAD: &str = "fused_preprocess";

/// The rules.
pub fn rules<'c>() -> Vec<Rewrite<Node, GraphAnalysis<'c>>> {
    let mut r = vec![
        rule("preprocess-add", "(add ?a ?k)", |g, c, s| step(g, c, s, "add", true)),
        rule("preprocess-add-commuted", "(add ?k ?a)", |g, c, s| step(g, c, s, "add", false)),
        rule("preprocess-sub", "(sub ?a ?k)", |g, c, s| step(g, c, s, "sub", true)),
        rule("preprocess-rsub", "(sub ?k ?a)", |g, c, s| step(g, c, s, "sub", false)),
        rule("preprocess-mul", "(mul ?a ?k)", |g, c, s| step(g, c, s, "mul", true)),
        rule("preprocess-mul-commuted", "(mul ?k ?a)", |g, c, s| step(g, c, s, "mul", false)),
        rule("preprocess-div", "(div ?a ?k)", |g, c, s| step(g, c, s, "div", true)),
        rule("preprocess-rdiv", "(div ?k ?a)", |g, c, s| step(g, c, s, "div", false)),
    ];
    r.extend([
        rule("preprocess-dimshuffle", "(dimshuffle ?a ?p)", dimshuffle),
        rule("preprocess-pad", "(pad ?a ?p)", pad),
        rule("preprocess-concat", "(concat ?a ?z ?p)", concat),
        rule("preprocess-block", "(dimshuffle (reshape ?a ?rp) ?p)", block),
        rule("preprocess-typecvt", "(typecvt ?a ?t)", typecvt),
        rule("preprocess-typecvt-dimshuffle", "(typecvt (dimshuffle ?x ?p) ?t)", typecvt_dimshuffle),
        rule("preprocess-warp-typecvt", "(typecvt (warp_perspective ?x ?m ?p) ?t)", warp_typecvt),
    ]);
    r
}

/// A `fused_preprocess` in the making: its operands and attributes.
#[derive(Clone, Debug)]
struct Fused {
    x: Id,
    mat: Option<Id>,
    consts: Vec<Id>,
    plan: Plan,
}

impl Fused {
    /// The op converting `x` to `dtype` and nothing else (read as NCHW).
    fn convert(x: Id, dtype: ElemType) -> Fused {
        let plan = Plan::convert(ImageLayout::Nchw, dtype);
        Fused { x, mat: None, consts: Vec::new(), plan }
    }

    /// Whether the channel axis has not been decided by anything yet.
    fn layout_free(&self, g: &Graph<'_>) -> bool {
        let p = &self.plan;
        p.warp.is_none()
            && p.in_layout == p.out_layout
            && p.pad_channels == 0
            && p.block.is_none()
            && self.consts.iter().all(|&k| constant(g, k).is_some_and(|t| t.len() == 1))
    }

    /// The same op with result layout `want`: itself, or relabelled when its layout is free.
    fn with_out_layout(&self, g: &Graph<'_>, want: ImageLayout) -> Option<Fused> {
        if self.plan.out_layout == want {
            return Some(self.clone());
        }
        self.layout_free(g).then(|| {
            let mut f = self.clone();
            f.plan.in_layout = want;
            f.plan.out_layout = want;
            f
        })
    }

    /// The e-node of the op.
    fn node(&self, g: &mut Graph<'_>) -> Node {
        let attrs = self.plan.to_attrs(g.analysis.ctx);
        let mut children = vec![self.x];
        children.extend(self.mat);
        children.extend(&self.consts);
        children.push(add_attrs(g, attrs));
        Node::op(HEAD, children)
    }

    /// Adds the op to `class` (if its type is the class's).
    fn add(&self, g: &mut Graph<'_>, class: Id) -> Option<Id> {
        let node = self.node(g);
        typed_add(g, class, node)
    }
}

/// The element type of a `dtype`-like type attribute.
fn elem_attr(g: &Graph<'_>, a: Attr) -> Option<ElemType> {
    let ctx = &*g.analysis.ctx;
    match ctx.attr(a) {
        AttrData::Type(t) => match ctx.ty(*t) {
            TypeData::Scalar(e) => Some(*e),
            _ => None,
        },
        _ => None,
    }
}

/// The attribute `key` of an attributes leaf.
fn attr(g: &Graph<'_>, p: Id, key: &str) -> Option<Attr> {
    attrs_of(g, p)?.into_iter().find(|(k, _)| k == key).map(|(_, a)| a)
}

fn ints_attr(g: &Graph<'_>, p: Id, key: &str) -> Option<Vec<i64>> {
    attr_kind::Ints::get(g.analysis.ctx, attr(g, p, key)?)
}

/// The rank of a value.
fn rank(g: &Graph<'_>, v: Id) -> Option<usize> {
    tensor_type(g, v).map(|t| t.shape.len())
}

/// Whether `x` is raw image data: rank 4, integer or quantised elements.
fn is_raw_image(g: &Graph<'_>, x: Id) -> bool {
    tensor_type(g, x).is_some_and(|t| t.shape.len() == 4 && !t.elem.is_float())
}

/// Every way to read class `a` as a fused op: its `fused_preprocess` nodes, and
/// its `typecvt`s of raw images.
fn views(g: &Graph<'_>, a: Id) -> Vec<Fused> {
    let mut out = Vec::new();
    for node in &g[a].nodes {
        let Node::Op(head, children) = node else { continue };
        match head.as_str() {
            HEAD => {
                let Some((&p, operands)) = children.split_last() else { continue };
                let Some(attrs) = attrs_of(g, p) else { continue };
                let Ok(plan) = Plan::read(g.analysis.ctx, |k| attrs.iter().find(|(n, _)| n == k).map(|&(_, a)| a))
                else {
                    continue;
                };
                if operands.len() != plan.operand_count() {
                    continue;
                }
                let mat = plan.warp.is_some().then(|| operands[1]);
                let consts = operands[plan.first_constant()..].to_vec();
                out.push(Fused { x: operands[0], mat, consts, plan });
            }
            "typecvt" => {
                let &[x, p] = children.as_slice() else { continue };
                if !is_raw_image(g, x) {
                    continue;
                }
                if let Some(dtype) = attr(g, p, "dtype").and_then(|a| elem_attr(g, a)) {
                    out.push(Fused::convert(x, dtype));
                }
            }
            _ => {}
        }
    }
    out
}

/// Tries `extend` on every view of `a` (which must have a single reader) and
/// adds the first result that `class` does not hold yet; the class's own node
/// when every result is already there (then the rule changes nothing, and each
/// application adds at most one node).
fn fold_into(g: &mut Graph<'_>, class: Id, a: Id, extend: impl Fn(&Graph<'_>, Fused) -> Option<Fused>) -> Option<Id> {
    if !single_reader(g, a) {
        return None;
    }
    let mut known = None;
    for f in views(g, a) {
        let Some(f) = extend(g, f) else { continue };
        let node = f.node(g);
        if let Some(id) = g.lookup(node.clone())
            && g.find(id) == g.find(class)
        {
            known.get_or_insert(id);
            continue;
        }
        if let Some(id) = typed_add(g, class, node) {
            return Some(id);
        }
    }
    known
}

/// The layout in which a constant of `shape` is a per-channel vector broadcast
/// along the channel axis: its one non-unit dim, right-aligned into rank 4, is
/// axis 1 (NCHW) or axis 3 (NHWC).
fn channel_layout(shape: &[Dim]) -> Option<ImageLayout> {
    if shape.len() > 4 {
        return None;
    }
    let mut non_unit = shape.iter().enumerate().filter(|&(_, &d)| d != Dim::Fixed(1));
    let (i, _) = non_unit.next()?;
    if non_unit.next().is_some() {
        return None;
    }
    match i + 4 - shape.len() {
        1 => Some(ImageLayout::Nchw),
        3 => Some(ImageLayout::Nhwc),
        _ => None,
    }
}

fn step(g: &mut Graph<'_>, class: Id, s: &Subst, mode: &str, value_first: bool) -> Option<Id> {
    let (a, k) = (var(s, "?a"), var(s, "?k"));
    let step = Step::of_elemwise(mode, value_first)?;
    let kv = constant(g, k)?;
    let kt = tensor_type(g, k)?;
    let per_channel = kv.len() != 1;
    fold_into(g, class, a, |g, f| {
        let p = &f.plan;
        if p.pad_channels > 0 || p.block.is_some() || p.out_dtype != p.dtype || !p.dtype.is_float() {
            return None;
        }
        let mut f = if per_channel { f.with_out_layout(g, channel_layout(&kt.shape)?)? } else { f };
        f.plan.steps.push(step);
        f.consts.push(k);
        Some(f)
    })
}

/// The layout change of a dimshuffle `pattern` on a rank-4 value: `(from, to)`.
fn relayout(pattern: &[i64]) -> Option<(ImageLayout, ImageLayout)> {
    match pattern {
        [0, 3, 1, 2] => Some((ImageLayout::Nhwc, ImageLayout::Nchw)),
        [0, 2, 3, 1] => Some((ImageLayout::Nchw, ImageLayout::Nhwc)),
        _ => None,
    }
}

fn dimshuffle(g: &mut Graph<'_>, class: Id, s: &Subst) -> Option<Id> {
    let (from, to) = relayout(&ints_attr(g, var(s, "?p"), "pattern")?)?;
    fold_into(g, class, var(s, "?a"), |g, f| {
        if f.plan.block.is_some() {
            return None;
        }
        let mut f = f.with_out_layout(g, from)?;
        f.plan.out_layout = to;
        Some(f)
    })
}

/// The layout whose channel axis is `axis` of a rank-4 value.
fn layout_of_axis(axis: usize) -> Option<ImageLayout> {
    match axis {
        1 => Some(ImageLayout::Nchw),
        3 => Some(ImageLayout::Nhwc),
        _ => None,
    }
}

/// Appends `n` zero channels in layout `layout`.
fn grow(g: &Graph<'_>, f: Fused, layout: ImageLayout, n: u64) -> Option<Fused> {
    if f.plan.block.is_some() {
        return None;
    }
    let mut f = f.with_out_layout(g, layout)?;
    f.plan.pad_channels = f.plan.pad_channels.checked_add(n)?;
    Some(f)
}

fn pad(g: &mut Graph<'_>, class: Id, s: &Subst) -> Option<Id> {
    let p = var(s, "?p");
    let ctx = &*g.analysis.ctx;
    let mode = attr_kind::Str::get(ctx, attr(g, p, "mode")?)?;
    let value = attr_kind::Float::get(ctx, attr(g, p, "value")?)?;
    if mode != "constant" || value != 0.0 || value.is_sign_negative() {
        return None;
    }
    let (before, after) = (ints_attr(g, p, "before")?, ints_attr(g, p, "after")?);
    if before.len() != 4 || before.iter().any(|&b| b != 0) || after.len() != 4 {
        return None;
    }
    let mut grown = after.iter().enumerate().filter(|&(_, &n)| n != 0);
    let (axis, &n) = grown.next()?;
    if grown.next().is_some() || n < 0 {
        return None;
    }
    let layout = layout_of_axis(axis)?;
    fold_into(g, class, var(s, "?a"), |g, f| grow(g, f, layout, n as u64))
}

/// Whether class `z` holds real zeros only (a constant, or a broadcast constant).
fn zeros(g: &Graph<'_>, z: Id) -> bool {
    let all_zero = |c: Id| {
        constant(g, c).is_some_and(|t| (0..t.len()).all(|i| t.get_real(i) == 0.0 && !t.get_real(i).is_sign_negative()))
    };
    all_zero(z)
        || g[z].nodes.iter().any(|n| match n {
            Node::Op(h, ch) if h.as_str() == "broadcast" => ch.first().is_some_and(|&c| all_zero(c)),
            _ => false,
        })
}

fn concat(g: &mut Graph<'_>, class: Id, s: &Subst) -> Option<Id> {
    let (a, z) = (var(s, "?a"), var(s, "?z"));
    let axis = attr_kind::Int::get(g.analysis.ctx, attr(g, var(s, "?p"), "axis")?)?;
    let axis = usize::try_from(if axis < 0 { axis + 4 } else { axis }).ok()?;
    let layout = layout_of_axis(axis)?;
    if rank(g, a) != Some(4) || !zeros(g, z) {
        return None;
    }
    let n = tensor_type(g, z)?.shape.get(axis)?.fixed()?;
    fold_into(g, class, a, |g, f| grow(g, f, layout, n))
}

fn block(g: &mut Graph<'_>, class: Id, s: &Subst) -> Option<Id> {
    let (a, rp) = (var(s, "?a"), var(s, "?rp"));
    if ints_attr(g, var(s, "?p"), "pattern")? != [0, 1, 3, 4, 2] {
        return None;
    }
    let reshaped = lookup(g, "reshape", vec![a, rp])?;
    if !single_reader(g, reshaped) {
        return None;
    }
    let (at, rt) = (tensor_type(g, a)?, tensor_type(g, reshaped)?);
    let ([n, c, h, w], [rn, groups, b, rh, rw]) = (at.shape.as_slice(), rt.shape.as_slice()) else { return None };
    let (c, groups, b) = (c.fixed()?, groups.fixed()?, b.fixed()?);
    if (rn, rh, rw) != (n, h, w) || groups.checked_mul(b)? != c {
        return None;
    }
    fold_into(g, class, a, |g, f| {
        if f.plan.block.is_some() {
            return None;
        }
        let mut f = f.with_out_layout(g, ImageLayout::Nchw)?;
        f.plan.block = Some(b);
        Some(f)
    })
}

fn typecvt(g: &mut Graph<'_>, class: Id, s: &Subst) -> Option<Id> {
    let to = elem_attr(g, attr(g, var(s, "?t"), "dtype")?)?;
    fold_into(g, class, var(s, "?a"), |_, mut f| {
        if f.plan.out_dtype != f.plan.dtype || to == f.plan.dtype {
            return None;
        }
        f.plan.out_dtype = to;
        Some(f)
    })
}

fn typecvt_dimshuffle(g: &mut Graph<'_>, class: Id, s: &Subst) -> Option<Id> {
    let (x, p) = (var(s, "?x"), var(s, "?p"));
    let shuffled = lookup(g, "dimshuffle", vec![x, p])?;
    let (from, to) = relayout(&ints_attr(g, p, "pattern")?)?;
    let dtype = elem_attr(g, attr(g, var(s, "?t"), "dtype")?)?;
    if !single_reader(g, shuffled) || !is_raw_image(g, x) {
        return None;
    }
    let mut f = Fused::convert(x, dtype);
    f.plan.in_layout = from;
    f.plan.out_layout = to;
    f.add(g, class)
}

fn warp_typecvt(g: &mut Graph<'_>, class: Id, s: &Subst) -> Option<Id> {
    let (x, m, p) = (var(s, "?x"), var(s, "?m"), var(s, "?p"));
    let warped = lookup(g, "warp_perspective", vec![x, m, p])?;
    let dtype = elem_attr(g, attr(g, var(s, "?t"), "dtype")?)?;
    if !single_reader(g, warped) {
        return None;
    }
    let [output, imode, border_mode, border_value] = WARP_ATTRS.map(|k| attr(g, p, k));
    let mut f = Fused::convert(x, dtype);
    f.mat = Some(m);
    f.plan.warp = Some([output?, imode?, border_mode?, border_value?]);
    f.add(g, class)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dims(v: &[u64]) -> Vec<Dim> {
        v.iter().map(|&d| Dim::Fixed(d)).collect()
    }

    #[test]
    fn per_channel_constants_name_their_layout() {
        assert_eq!(channel_layout(&dims(&[1, 3, 1, 1])), Some(ImageLayout::Nchw));
        assert_eq!(channel_layout(&dims(&[3, 1, 1])), Some(ImageLayout::Nchw));
        assert_eq!(channel_layout(&dims(&[1, 1, 1, 3])), Some(ImageLayout::Nhwc));
        assert_eq!(channel_layout(&dims(&[3])), Some(ImageLayout::Nhwc));
        // Along H or the batch, several non-unit dims, more than four dims, no non-unit dim.
        for bad in [&[1, 1, 3, 1][..], &[3, 1, 1, 1], &[1, 3, 1, 3], &[1, 1, 3, 1, 1], &[1, 1, 1, 1]] {
            assert_eq!(channel_layout(&dims(bad)), None, "{bad:?}");
        }
    }

    #[test]
    fn only_the_two_relayouts_fuse() {
        assert_eq!(relayout(&[0, 3, 1, 2]), Some((ImageLayout::Nhwc, ImageLayout::Nchw)));
        assert_eq!(relayout(&[0, 2, 3, 1]), Some((ImageLayout::Nchw, ImageLayout::Nhwc)));
        for bad in [&[0, 1, 2, 3][..], &[0, 1, 3, 2], &[1, 0, 2, 3], &[0, 3, 1, 2, -1]] {
            assert_eq!(relayout(bad), None, "{bad:?}");
        }
        assert_eq!(layout_of_axis(1), Some(ImageLayout::Nchw));
        assert_eq!(layout_of_axis(3), Some(ImageLayout::Nhwc));
        assert_eq!(layout_of_axis(2), None);
    }

    #[test]
    fn every_rule_parses() {
        let names: Vec<String> = rules().iter().map(|r| r.name.to_string()).collect();
        assert_eq!(names.len(), 15);
        assert!(names.iter().all(|n| n.starts_with("preprocess-")), "{names:?}");
    }
}
