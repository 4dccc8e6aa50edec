//! Layout passes: NCHWxx conversion ([`nchwxx`]), output-channel padding
//! ([`padding_channel`]) and relayout cancellation ([`cancel_relayouts`]).
//! Reference: `docs/layout.md` and MegEngine's `tensor_reformat.cpp` /
//! `padding_channel.cpp` (summarised in `MEGENGINE.md` §4.5).

pub mod cancel_relayouts;
pub mod nchwxx;
pub mod padding_channel;

use strata_dialects::func::functions;
use strata_ir::{Attr, AttrData, BlockId, Context, Dim, InsertPoint, Layout, OpBuild, OpId, Rewriter, ValueId};

/// The body blocks of every function of `module`.
pub(crate) fn bodies(ctx: &Context, module: OpId) -> Vec<BlockId> {
    functions(ctx, module).into_iter().filter_map(|f| ctx.body(f.0, 0)).collect()
}

/// Attribute builders.
pub(crate) fn int(rw: &mut Rewriter<'_>, v: i64) -> Attr {
    rw.ctx_mut().intern_attr(AttrData::Int(v))
}

pub(crate) fn ints(rw: &mut Rewriter<'_>, v: &[i64]) -> Attr {
    let items = v.iter().map(|&x| int(rw, x)).collect();
    rw.ctx_mut().intern_attr(AttrData::Array(items))
}

pub(crate) fn string(rw: &mut Rewriter<'_>, s: &str) -> Attr {
    rw.ctx_mut().intern_attr(AttrData::Str(s.to_string()))
}

pub(crate) fn layout_attr(rw: &mut Rewriter<'_>, l: Layout) -> Attr {
    rw.ctx_mut().intern_attr(AttrData::Layout(l))
}

/// The attributes of `op` as `(key, attr)` pairs.
pub(crate) fn attrs_of(ctx: &Context, op: OpId) -> Vec<(String, Attr)> {
    ctx.op(op).attrs.iter().map(|&(k, a)| (ctx.str(k).to_string(), a)).collect()
}

/// Creates op `name` before `at` with its result type inferred; an inference
/// error (the op does not apply to these operands) is returned, creating nothing.
pub(crate) fn build(
    rw: &mut Rewriter<'_>,
    name: &str,
    operands: &[ValueId],
    attrs: Vec<(String, Attr)>,
    at: OpId,
) -> Result<ValueId, String> {
    let types: Vec<_> = operands.iter().map(|&v| rw.ctx().value_type(v)).collect();
    let interned = strata_dialects::apply::intern_attrs(rw.ctx_mut(), &attrs);
    let mut out = strata_dialects::apply::infer(rw.ctx(), name, &types, &interned)?;
    if out.len() != 1 {
        return Err(format!("`{name}` has {} results", out.len()));
    }
    let ty = rw.ctx_mut().intern_type(out.remove(0));
    let loc = rw.ctx().op(at).loc;
    let mut b = OpBuild::new(name).operands(operands).results(&[ty]).loc(loc);
    b.attrs = attrs;
    let op = rw.create(b, InsertPoint::Before(at));
    Ok(rw.ctx().op(op).results[0])
}

/// `layout.relayout(v) {to = l}` before `at`.
pub(crate) fn relayout(rw: &mut Rewriter<'_>, v: ValueId, l: Layout, at: OpId) -> Result<ValueId, String> {
    let to = layout_attr(rw, l);
    build(rw, "layout.relayout", &[v], vec![("to".into(), to)], at)
}

/// The fixed size of dim `i` of `v`.
pub(crate) fn dim(ctx: &Context, v: ValueId, i: usize) -> Option<u64> {
    ctx.value_tensor(v)?.shape.get(i).copied().and_then(Dim::fixed)
}

/// Whether `v` holds one element in every dim (a scalar broadcast).
pub(crate) fn is_scalar_like(ctx: &Context, v: ValueId) -> bool {
    ctx.value_tensor(v).is_some_and(|t| t.layout == Layout::Nchw && t.shape.iter().all(|&d| d == Dim::Fixed(1)))
}

/// Moves the name hint of `from` to `to`.
pub(crate) fn take_name(rw: &mut Rewriter<'_>, from: ValueId, to: ValueId) {
    if let Some(s) = rw.ctx().value(from).name {
        let name = rw.ctx().str(s).to_string();
        rw.set_value_name(from, None);
        rw.set_value_name(to, Some(&name));
    }
}

/// Erases `layout.relayout`, `layout.weight`, `graph.pad` and `graph.subtensor`
/// ops left without uses (placeholders a pass created but nobody read).
pub(crate) fn erase_dead_helpers(rw: &mut Rewriter<'_>, module: OpId) -> i64 {
    let mut erased = 0;
    loop {
        let before = erased;
        for op in rw.ctx().walk(module).into_iter().rev() {
            if !rw.ctx().is_live(op) {
                continue;
            }
            let helper =
                matches!(rw.ctx().op_name(op), "layout.relayout" | "layout.weight" | "graph.pad" | "graph.subtensor");
            if helper && crate::cleanup::is_trivially_dead(rw.ctx(), op) {
                rw.erase_op(op);
                erased += 1;
            }
        }
        if erased == before {
            return erased;
        }
    }
}
