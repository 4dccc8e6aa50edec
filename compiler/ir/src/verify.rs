//! The verifier: checks structure and op definitions, collecting every problem.
//!
//! Structural rules: operands are defined before use (in the same block or an
//! enclosing one, never across an isolated-from-above op), use-lists match
//! operands, parents match containment, each region has exactly one block,
//! terminators end their block. Per op: registration, operand/result counts,
//! region count, attribute presence and kinds (keys starting with `_` are
//! free-form), the terminator the parent requires, and the op's own hook.

use crate::attrs::{AttrData, AttrKind};
use crate::context::{Context, Use, ValueDef};
use crate::diag::Diagnostic;
use crate::registry::{OpCx, OpDef, OpTraits};
use crate::types::{Dim, TypeData};
use crate::{Attr, BlockId, OpId, Ty};
use std::collections::HashSet;

/// Verification options.
#[derive(Clone, Copy, Debug, Default)]
pub struct VerifyOptions {
    /// Accept ops the registry does not know (only structural checks apply to them).
    pub allow_unregistered: bool,
}

/// Verifies `root` and everything nested in it.
pub fn verify(ctx: &Context, root: OpId, opts: VerifyOptions) -> Result<(), Vec<Diagnostic>> {
    let mut v = Verifier { ctx, opts, diags: Vec::new(), visible: HashSet::new(), checked_types: HashSet::new() };
    v.verify_op(root);
    if v.diags.is_empty() { Ok(()) } else { Err(v.diags) }
}

struct Verifier<'a> {
    ctx: &'a Context,
    opts: VerifyOptions,
    diags: Vec<Diagnostic>,
    visible: HashSet<crate::ValueId>,
    checked_types: HashSet<Ty>,
}

/// Whether `kind` accepts the attribute.
pub fn attr_has_kind(ctx: &Context, attr: Attr, kind: AttrKind) -> bool {
    let data = ctx.attr(attr);
    let all = |items: &[Attr], f: &dyn Fn(&AttrData) -> bool| items.iter().all(|&a| f(ctx.attr(a)));
    match kind {
        AttrKind::Any => true,
        AttrKind::Bool => matches!(data, AttrData::Bool(_)),
        AttrKind::Int => matches!(data, AttrData::Int(_)),
        AttrKind::Float => matches!(data, AttrData::Float(_) | AttrData::Int(_)),
        AttrKind::Str => matches!(data, AttrData::Str(_)),
        AttrKind::Ints => {
            matches!(data, AttrData::Array(items) if all(items, &|d| matches!(d, AttrData::Int(_))))
        }
        AttrKind::Floats => matches!(data, AttrData::Array(items)
            if all(items, &|d| matches!(d, AttrData::Int(_) | AttrData::Float(_)))),
        AttrKind::Array => matches!(data, AttrData::Array(_)),
        AttrKind::Dict => matches!(data, AttrData::Dict(_)),
        AttrKind::Type => matches!(data, AttrData::Type(_)),
        AttrKind::Layout => matches!(data, AttrData::Layout(_)),
        AttrKind::Dense => matches!(data, AttrData::Dense(_)),
        AttrKind::SymbolRef => matches!(data, AttrData::SymbolRef(_)),
    }
}

/// Checks attributes against an op definition: required ones present, kinds
/// right, no unknown keys (keys starting with `_` are free-form).
pub fn check_attrs(ctx: &Context, def: &OpDef, attrs: &[(crate::Sym, Attr)]) -> Vec<String> {
    let mut errs = check_attr_specs(ctx, def, attrs);
    errs.extend(check_unknown_attrs(ctx, def, attrs));
    errs
}

fn check_attr_specs(ctx: &Context, def: &OpDef, attrs: &[(crate::Sym, Attr)]) -> Vec<String> {
    let mut errs = Vec::new();
    let find = |name: &str| attrs.iter().find(|(k, _)| ctx.str(*k) == name).map(|&(_, a)| a);
    for spec in def.attrs {
        match find(spec.name) {
            None if spec.required => errs.push(format!("requires attribute `{}`", spec.name)),
            Some(a) if !attr_has_kind(ctx, a, spec.kind) => {
                errs.push(format!("attribute `{}` must be {}", spec.name, spec.kind.describe()))
            }
            _ => {}
        }
    }
    errs
}

fn check_unknown_attrs(ctx: &Context, def: &OpDef, attrs: &[(crate::Sym, Attr)]) -> Vec<String> {
    let mut errs = Vec::new();
    for &(k, _) in attrs {
        let key = ctx.str(k);
        if !key.starts_with('_') && !def.attrs.iter().any(|s| s.name == key) {
            let known: Vec<_> = def.attrs.iter().map(|s| s.name).collect();
            let known = if known.is_empty() { "none".to_string() } else { known.join(", ") };
            errs.push(format!("has unknown attribute `{key}` (accepted: {known})"));
        }
    }
    errs
}

impl Verifier<'_> {
    fn err(&mut self, op: OpId, msg: impl Into<String>) {
        self.diags.push(Diagnostic::at_op(self.ctx, op, msg));
    }

    fn check_type(&mut self, op: OpId, ty: Ty) {
        if !self.checked_types.insert(ty) {
            return;
        }
        let ctx = self.ctx;
        let shape = match ctx.ty(ty) {
            TypeData::Tensor(t) => &t.shape,
            TypeData::Buffer(b) => &b.shape,
            _ => return,
        };
        for d in shape {
            if let Dim::Sym(s) = d {
                let name = ctx.str(*s);
                let ok = name.starts_with(|c: char| c.is_ascii_uppercase() || c == '_')
                    && name.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
                if !ok {
                    self.err(op, format!("symbolic dimension `{name}` must be upper-case letters, digits and `_`"));
                }
            }
        }
    }

    fn verify_op(&mut self, op: OpId) {
        let ctx = self.ctx;
        let data = ctx.op(op);
        let def = ctx.op_def(op).copied();
        if def.is_none() && !self.opts.allow_unregistered {
            self.err(op, "is not registered (use --allow-unregistered to accept it)");
        }
        // Operands: defined, visible, with a matching use entry.
        for (i, &v) in data.operands.iter().enumerate() {
            if ctx.values.get(v.index()).is_none_or(Option::is_none) {
                self.err(op, format!("operand #{i} refers to an erased value"));
                continue;
            }
            if !self.visible.contains(&v) {
                self.err(op, format!("operand #{i} is used before it is defined (or is not visible here)"));
            }
            if !ctx.value(v).uses.contains(&Use { op, index: i as u32 }) {
                self.err(op, format!("operand #{i} is missing from its value's use-list"));
            }
        }
        for &r in &data.results {
            self.check_type(op, ctx.value_type(r));
            for u in &ctx.value(r).uses {
                let ok = ctx.is_live(u.op) && ctx.op(u.op).operands.get(u.index as usize) == Some(&r);
                if !ok {
                    self.err(op, "has a result whose use-list names a stale use");
                }
            }
        }
        if let Some(def) = def {
            if !def.operands.accepts(data.operands.len()) {
                self.err(op, format!("expects {} operands, has {}", def.operands.describe(), data.operands.len()));
            }
            if !def.results.accepts(data.results.len()) {
                self.err(op, format!("expects {} results, has {}", def.results.describe(), data.results.len()));
            }
            if def.regions != data.regions.len() {
                self.err(op, format!("expects {} regions, has {}", def.regions, data.regions.len()));
            }
            let spec_errors = check_attr_specs(ctx, &def, &data.attrs);
            let attrs_ok = spec_errors.is_empty();
            for m in spec_errors.into_iter().chain(check_unknown_attrs(ctx, &def, &data.attrs)) {
                self.err(op, m);
            }
            if let Some(infer) = def.infer.filter(|_| attrs_ok && def.operands.accepts(data.operands.len())) {
                let operand_types: Vec<Ty> = data.operands.iter().map(|&v| ctx.value_type(v)).collect();
                let cx = OpCx::of_op(ctx, op, &operand_types, &[]);
                match infer(&cx) {
                    Err(m) => self.err(op, m),
                    Ok(types) if types.len() != data.results.len() => {
                        self.err(op, format!("infers {} results but declares {}", types.len(), data.results.len()))
                    }
                    Ok(types) => {
                        for (i, (t, &r)) in types.iter().zip(&data.results).enumerate() {
                            if ctx.ty(ctx.value_type(r)) != t {
                                self.err(
                                    op,
                                    format!(
                                        "result #{i} has type {} but its operands and attributes give {}",
                                        crate::print::type_to_string(ctx, ctx.value_type(r)),
                                        crate::print::type_data_to_string(ctx, t)
                                    ),
                                );
                            }
                        }
                    }
                }
            }
            if def.traits.contains(OpTraits::TERMINATOR) {
                let last = data.parent.and_then(|b| ctx.block(b).ops.last().copied());
                if last != Some(op) {
                    self.err(op, "is a terminator but is not the last op of its block");
                }
            }
            if let Some(hook) = def.verify {
                let mut msgs = Vec::new();
                hook(ctx, op, &mut msgs);
                for m in msgs {
                    self.err(op, m);
                }
            }
        }
        // Regions.
        let isolated = def.is_some_and(|d| d.traits.contains(OpTraits::ISOLATED_FROM_ABOVE));
        let saved = if isolated { Some(std::mem::take(&mut self.visible)) } else { None };
        for &r in &data.regions {
            let region = ctx.region(r);
            if region.parent != Some(op) {
                self.err(op, "owns a region whose parent link is wrong");
            }
            if region.blocks.len() != 1 {
                self.err(op, format!("has a region with {} blocks (exactly one is supported)", region.blocks.len()));
            }
            for &b in &region.blocks {
                self.verify_block(op, b, def.and_then(|d| d.terminator));
            }
        }
        if let Some(saved) = saved {
            self.visible = saved;
        }
        for &r in &data.results {
            self.visible.insert(r);
        }
    }

    fn verify_block(&mut self, owner: OpId, b: BlockId, terminator: Option<&'static str>) {
        let ctx = self.ctx;
        let block = ctx.block(b);
        let mut added = Vec::new();
        for (i, &a) in block.args.iter().enumerate() {
            if ctx.value(a).def != (ValueDef::BlockArg { block: b, index: i as u32 }) {
                self.err(owner, format!("block argument #{i} has a wrong definition link"));
            }
            self.check_type(owner, ctx.value_type(a));
            if self.visible.insert(a) {
                added.push(a);
            }
        }
        for &op in &block.ops {
            if ctx.op(op).parent != Some(b) {
                self.err(op, "is listed in a block that is not its parent");
            }
            self.verify_op(op);
            for &r in &ctx.op(op).results {
                added.push(r);
            }
        }
        if let Some(term) = terminator {
            match block.ops.last() {
                Some(&last) if ctx.op_name(last) == term => {}
                Some(&last) => self.err(last, format!("must be followed by `{term}` to end the block")),
                None => self.err(owner, format!("has an empty block; it must end with `{term}`")),
            }
        }
        for v in added {
            self.visible.remove(&v);
        }
    }
}
