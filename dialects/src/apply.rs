//! Applying one op outside a module: shape inference and reference evaluation
//! from an op name, operand types or tensors, and attributes. Eager tensors and
//! the tracer use this, so an op behaves the same eagerly, traced and compiled.

use strata_ir::{Attr, Context, OpCx, Sym, TensorData, TensorType, Ty, TypeData, verify::check_attrs};

/// Interns `(key, attr)` pairs as an op stores them (sorted by key).
pub fn intern_attrs(ctx: &mut Context, attrs: &[(String, Attr)]) -> Vec<(Sym, Attr)> {
    let mut out: Vec<(Sym, Attr)> = attrs.iter().map(|(k, a)| (ctx.sym(k), *a)).collect();
    out.sort_by(|a, b| ctx.str(a.0).cmp(ctx.str(b.0)));
    out
}

/// The result types of op `name` applied to operands of `operand_types`.
pub fn infer(ctx: &Context, name: &str, operand_types: &[Ty], attrs: &[(Sym, Attr)]) -> Result<Vec<TypeData>, String> {
    let def = ctx.registry().get(name).ok_or_else(|| format!("unknown op `{name}`"))?;
    let errs = check_attrs(ctx, def, attrs);
    if !errs.is_empty() {
        return Err(errs.join("; "));
    }
    if !def.operands.accepts(operand_types.len()) {
        return Err(format!("expects {} operands, got {}", def.operands.describe(), operand_types.len()));
    }
    let infer = def.infer.ok_or_else(|| format!("`{name}` has no shape inference"))?;
    let cx =
        OpCx { ctx, name: def.name, attrs: strata_ir::AttrList::new(ctx, attrs), operand_types, result_types: &[] };
    infer(&cx)
}

/// The tensor type of concrete data.
pub fn type_of(ctx: &mut Context, t: &TensorData) -> Ty {
    ctx.tensor_type(TensorType::fixed(&t.shape().iter().map(|&d| d as u64).collect::<Vec<_>>(), t.elem()))
}

/// Evaluates op `name` on `inputs`: checks attributes, infers result types,
/// runs the reference `eval`, and checks the results against the inferred types.
pub fn eval(
    ctx: &mut Context,
    name: &str,
    inputs: &[TensorData],
    attrs: &[(Sym, Attr)],
) -> Result<Vec<TensorData>, String> {
    let operand_types: Vec<Ty> = inputs.iter().map(|t| type_of(ctx, t)).collect();
    let types = infer(ctx, name, &operand_types, attrs)?;
    let result_types: Vec<Ty> = types.into_iter().map(|t| ctx.intern_type(t)).collect();
    let def = ctx.registry().get(name).ok_or_else(|| format!("unknown op `{name}`"))?;
    let eval = def.eval.ok_or_else(|| format!("`{name}` has no reference evaluator"))?;
    let cx = OpCx {
        ctx,
        name: def.name,
        attrs: strata_ir::AttrList::new(ctx, attrs),
        operand_types: &operand_types,
        result_types: &result_types,
    };
    let outs = eval(&cx, inputs)?;
    if outs.len() != result_types.len() {
        return Err(format!("produced {} results, expected {}", outs.len(), result_types.len()));
    }
    let mut syms = std::collections::HashMap::new();
    for (i, (t, &ty)) in outs.iter().zip(&result_types).enumerate() {
        crate::interp::check_tensor(ctx, ty, t, &mut syms).map_err(|m| format!("result #{i}: {m}"))?;
    }
    Ok(outs)
}
