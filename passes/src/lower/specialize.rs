//! Shape specialisation: symbolic dimensions (`?N`) replaced by concrete
//! values before lowering, which needs static shapes. The executor calls this
//! once per distinct input shape and caches the compiled result by shape.

use std::collections::BTreeMap;
use strata_ir::{AttrData, Context, Dim, FuncType, OpId, Rewriter, Ty, TypeData};

/// The binding of each symbolic dimension of `func`'s arguments implied by
/// concrete input `shapes`, or an error naming the first mismatch.
pub fn bindings_for_inputs(ctx: &Context, func: OpId, shapes: &[Vec<usize>]) -> Result<BTreeMap<String, u64>, String> {
    let body = ctx.body(func, 0).ok_or("the function has no body")?;
    let args = &ctx.block(body).args;
    if args.len() != shapes.len() {
        return Err(format!("the function takes {} inputs, got {}", args.len(), shapes.len()));
    }
    let mut b = BTreeMap::new();
    for (i, (&a, shape)) in args.iter().zip(shapes).enumerate() {
        let t = ctx.value_tensor(a).ok_or_else(|| format!("input #{i} is not a tensor"))?;
        if t.shape.len() != shape.len() {
            return Err(format!("input #{i}: rank {} given, {} expected", shape.len(), t.shape.len()));
        }
        for (d, &n) in t.shape.iter().zip(shape) {
            match d {
                Dim::Fixed(m) if *m != n as u64 => {
                    return Err(format!("input #{i}: shape {shape:?} does not fit the declared dims"));
                }
                Dim::Sym(s) => {
                    let prev = *b.entry(ctx.str(*s).to_string()).or_insert(n as u64);
                    if prev != n as u64 {
                        return Err(format!("?{} is {prev} in one input and {n} in input #{i}", ctx.str(*s)));
                    }
                }
                _ => {}
            }
        }
    }
    Ok(b)
}

fn specialise_ty(ctx: &mut Context, ty: Ty, b: &BTreeMap<String, u64>) -> Ty {
    match ctx.ty(ty).clone() {
        TypeData::Tensor(mut t) => {
            let mut changed = false;
            for d in &mut t.shape {
                if let Dim::Sym(s) = d
                    && let Some(&n) = b.get(ctx.str(*s))
                {
                    *d = Dim::Fixed(n);
                    changed = true;
                }
            }
            if changed { ctx.tensor_type(t) } else { ty }
        }
        TypeData::Func(f) => {
            let inputs = f.inputs.iter().map(|&t| specialise_ty(ctx, t, b)).collect();
            let results = f.results.iter().map(|&t| specialise_ty(ctx, t, b)).collect();
            ctx.intern_type(TypeData::Func(FuncType { inputs, results }))
        }
        _ => ty,
    }
}

/// Replaces every symbolic dimension bound in `b` in the types of `module`
/// (values and function signatures). Returns how many values changed type.
/// The caller verifies the module afterwards: a graph whose shapes do not
/// follow from its inputs' symbols fails verification with the op named.
pub fn specialize_shapes(ctx: &mut Context, module: OpId, b: &BTreeMap<String, u64>) -> usize {
    if b.is_empty() {
        return 0;
    }
    let ops = ctx.walk(module);
    let mut values = Vec::new();
    for &op in &ops {
        values.extend(ctx.op(op).results.iter().copied());
        for &r in &ctx.op(op).regions {
            for &blk in &ctx.region(r).blocks {
                values.extend(ctx.block(blk).args.iter().copied());
            }
        }
    }
    let mut n = 0;
    let mut new_types = Vec::new();
    for v in values {
        let old = ctx.value_type(v);
        let new = specialise_ty(ctx, old, b);
        if new != old {
            new_types.push((v, new));
        }
    }
    let mut fty = Vec::new();
    for &op in &ops {
        if let Some(a) = ctx.op_attr(op, "function_type")
            && let AttrData::Type(t) = ctx.attr(a).clone()
        {
            let new = specialise_ty(ctx, t, b);
            if new != t {
                let attr = ctx.intern_attr(AttrData::Type(new));
                fty.push((op, attr));
            }
        }
    }
    let mut rw = Rewriter::new(ctx);
    for (v, t) in new_types {
        rw.set_value_type(v, t);
        n += 1;
    }
    for (op, a) in fty {
        rw.set_attr(op, "function_type", a);
    }
    n
}
