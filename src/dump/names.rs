//! Input/output names and the `keep_*` options.

use super::DumpOptions;
use crate::error::{Error, Result};
use std::collections::{BTreeMap, HashSet};
use strata_dialects::func::FuncOp;
use strata_ir::{AttrData, Context, InsertPoint, Loc, OpBuild, OpId, Rewriter, ValueId};

/// The names the dumped graph's inputs and outputs get.
pub(crate) struct IoNames {
    pub(crate) inputs: Vec<String>,
    pub(crate) outputs: Vec<String>,
}

fn body_of(ctx: &Context, main: FuncOp) -> (Vec<ValueId>, Vec<OpId>) {
    let body = ctx.body(main.0, 0).expect("invariant: @main has a body");
    (ctx.block(body).args.clone(), ctx.block(body).ops.clone())
}

fn returned(ctx: &Context, ops: &[OpId]) -> Vec<ValueId> {
    ops.last().map(|&r| ctx.op(r).operands.clone()).unwrap_or_default()
}

/// MegEngine-like automatic name of a value: the producing op's mode or
/// mnemonic in capitals (`ADD`, `CONV2D`), or the argument's position.
fn auto_name(ctx: &Context, v: ValueId) -> String {
    match ctx.defining_op(v) {
        None => "ARG".into(),
        Some(op) => {
            let mode = ctx.op_attr(op, "mode").and_then(|a| match ctx.attr(a) {
                AttrData::Str(s) => Some(s.clone()),
                _ => None,
            });
            let name = ctx.op_name(op);
            mode.unwrap_or_else(|| name.rsplit('.').next().unwrap_or(name).to_string()).to_uppercase()
        }
    }
}

/// Makes names unique the way MegEngine does for duplicate op names:
/// the second and later get `name[i]`.
fn dedup(names: &mut [String]) {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let taken: HashSet<String> = names.iter().cloned().collect();
    for n in names.iter_mut() {
        let count = seen.entry(n.clone()).or_insert(0);
        if *count > 0 {
            let mut k = *count;
            while taken.contains(&format!("{n}[{k}]")) {
                k += 1;
            }
            *n = format!("{n}[{k}]");
        }
        *count += 1;
    }
}

fn check_count(what: &str, given: usize, have: usize, of: &str) -> Result<()> {
    if given == have {
        Ok(())
    } else {
        Err(Error::Invalid(format!("{what} has {given} names, but the graph has {have} {of}")))
    }
}

impl IoNames {
    /// Chooses names: explicit options first, then names from tracing, then automatic ones.
    pub(crate) fn choose(ctx: &Context, main: FuncOp, opts: &DumpOptions, traced: &[String]) -> Result<IoNames> {
        let (args, ops) = body_of(ctx, main);
        let rets = returned(ctx, &ops);
        let value_name = |v: ValueId| ctx.value(v).name.map(|s| ctx.str(s).to_string());
        let inputs: Vec<String> = match &opts.arg_names {
            Some(names) => {
                check_count("arg_names", names.len(), args.len(), "inputs")?;
                names.clone()
            }
            None => {
                args.iter().enumerate().map(|(i, &a)| value_name(a).unwrap_or_else(|| format!("arg_{i}"))).collect()
            }
        };
        let mut seen = HashSet::new();
        for n in &inputs {
            if n.is_empty() {
                return Err(Error::Invalid("an input name is empty".into()));
            }
            if !seen.insert(n) {
                return Err(Error::Invalid(format!("input name `{n}` is used twice")));
            }
        }
        let auto: Vec<String> = rets
            .iter()
            .enumerate()
            .map(|(i, &v)| traced.get(i).cloned().or_else(|| value_name(v)).unwrap_or_else(|| auto_name(ctx, v)))
            .collect();
        let mut outputs = match &opts.output_names {
            Some(names) => {
                check_count("output_names", names.len(), rets.len(), "outputs")?;
                names.iter().zip(&auto).map(|(n, a)| if n.is_empty() { a.clone() } else { n.clone() }).collect()
            }
            None => {
                let mut a = auto;
                dedup(&mut a);
                a
            }
        };
        if opts.keep_var_name >= 1 {
            let mut seen = HashSet::new();
            if let Some(dup) = outputs.iter().find(|n| !seen.insert(*n)) {
                return Err(Error::Invalid(format!(
                    "output name `{dup}` is used twice; output names must be unique when keep_var_name >= 1"
                )));
            }
        } else {
            dedup(&mut outputs);
        }
        Ok(IoNames { inputs, outputs })
    }
}

/// Applies `keep_var_name`, `keep_opr_name`, `keep_param_name` and
/// `keep_opr_priority` to `@main`; returns the kept parameter names.
pub(crate) fn apply_keep_options(
    ctx: &mut Context,
    main: FuncOp,
    io: &IoNames,
    opts: &DumpOptions,
) -> Result<Vec<String>> {
    let mut params = Vec::new();
    // Parameters first: anonymous constants unless their names are kept.
    let (_, ops) = body_of(ctx, main);
    let mut seen = HashSet::new();
    for &op in &ops {
        if ctx.op_name(op) != "graph.param" {
            continue;
        }
        let name = match ctx.op_attr(op, "name").map(|a| ctx.attr(a)) {
            Some(AttrData::Str(s)) => s.clone(),
            _ => return Err(Error::Invalid("a graph.param has no name".into())),
        };
        if opts.keep_param_name {
            if !seen.insert(name.clone()) {
                return Err(Error::Invalid(format!(
                    "parameter name `{name}` is used twice; keep_param_name needs unique names"
                )));
            }
            params.push(name);
        } else {
            let value = ctx.op_attr(op, "value").expect("invariant: graph.param has a value");
            let result = ctx.op(op).results[0];
            let ty = ctx.value_type(result);
            let loc = ctx.op(op).loc;
            let value_name = ctx.value(result).name.map(|s| ctx.str(s).to_string());
            let mut rw = Rewriter::new(ctx);
            let c = rw.create(
                OpBuild::new("graph.const").attr("value", value).results(&[ty]).loc(loc),
                InsertPoint::Before(op),
            );
            let new = rw.ctx().op(c).results[0];
            rw.set_value_name(new, value_name.as_deref());
            rw.replace_op(op, &[new]);
        }
    }
    let (args, ops) = body_of(ctx, main);
    let rets = returned(ctx, &ops);
    let keep_value = |v: ValueId| opts.keep_var_name == 2 || (opts.keep_var_name == 1 && rets.contains(&v));
    let mut rw = Rewriter::new(ctx);
    for (&a, name) in args.iter().zip(&io.inputs) {
        rw.set_value_name(a, (opts.keep_var_name >= 1).then_some(name.as_str()));
    }
    let body_ops = &ops[..ops.len().saturating_sub(1)];
    for (k, &op) in body_ops.iter().enumerate() {
        let results = rw.ctx().op(op).results.clone();
        let first_name = results.first().and_then(|&r| rw.ctx().value(r).name).map(|s| rw.ctx().str(s).to_string());
        let loc = rw.ctx().op(op).loc;
        if opts.keep_opr_name {
            let name = match loc.name {
                Some(n) => rw.ctx().str(n).to_string(),
                None => first_name.unwrap_or_else(|| {
                    let full = rw.ctx().op_name(op);
                    format!("{}{k}", full.rsplit('.').next().unwrap_or(full))
                }),
            };
            let name = rw.ctx_mut().sym(&name);
            rw.set_loc(op, Loc { name: Some(name), ..loc });
        } else {
            rw.set_loc(op, Loc::default());
        }
        if opts.keep_opr_priority {
            let p = rw.ctx_mut().intern_attr(AttrData::Int(k as i64));
            rw.set_attr(op, "_priority", p);
        } else {
            rw.remove_attr(op, "_priority");
        }
        for r in results {
            if !keep_value(r) {
                rw.set_value_name(r, None);
            }
        }
    }
    if opts.keep_var_name >= 1 {
        for (&v, name) in rets.iter().zip(&io.outputs) {
            if !args.contains(&v) {
                rw.set_value_name(v, Some(name));
            }
        }
    }
    Ok(params)
}
