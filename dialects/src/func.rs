//! The `func` dialect: modules, functions, returns and calls.
//!
//! Ops of this dialect print without their `func.` prefix (`return(%0)`), and
//! `func.func` has the custom form `func @name(%a: T) -> R { … }`. A parsed
//! file is an implicit `func.module` holding functions.

use strata_ir::{AttrData, Context, OpId, OpView, Registry, Ty, TypeData, define_op};

define_op! {
    /// The top level: one region whose block holds functions.
    pub struct ModuleOp = "func.module" {
        summary: "a module of functions",
        operands: [],
        results: [],
        attrs: {},
        optional_attrs: {},
        traits: [ISOLATED_FROM_ABOVE],
        regions: 1,
        verify: verify_module,
    }
}

define_op! {
    /// A function: `sym_name`, `function_type` and a body ending in `func.return`.
    pub struct FuncOp = "func.func" {
        summary: "a function with a single-block body",
        operands: [],
        results: [],
        attrs: { sym_name: Str, function_type: Type },
        optional_attrs: {},
        traits: [ISOLATED_FROM_ABOVE, SYMBOL],
        regions: 1,
        terminator: "func.return",
        verify: verify_func,
        syntax: strata_ir::syntax::function_syntax("func"),
    }
}

define_op! {
    /// Returns values from a function.
    pub struct ReturnOp = "func.return" {
        summary: "return from a function",
        operands: [],
        results: [],
        attrs: {},
        optional_attrs: {},
        traits: [TERMINATOR],
        variadic: values,
        verify: verify_return,
    }
}

define_op! {
    /// Calls the function named by `callee`.
    pub struct CallOp = "func.call" {
        summary: "call a function of the same module",
        operands: [],
        results: [],
        attrs: { callee: SymbolRef },
        optional_attrs: {},
        traits: [],
        variadic: args,
        variadic_results: outputs,
        verify: verify_call,
    }
}

/// Registers the `func` dialect.
pub fn register(r: &mut Registry) {
    for def in [ModuleOp::DEF, FuncOp::DEF, ReturnOp::DEF, CallOp::DEF] {
        r.register(def).expect("invariant: func ops register once");
    }
}

impl FuncOp {
    /// The function's name.
    pub fn name(self, ctx: &Context) -> &str {
        self.sym_name(ctx)
    }

    /// Argument and result types.
    pub fn signature(self, ctx: &Context) -> (Vec<Ty>, Vec<Ty>) {
        match ctx.ty(self.function_type(ctx)) {
            TypeData::Func(f) => (f.inputs.clone(), f.results.clone()),
            _ => (Vec::new(), Vec::new()),
        }
    }
}

/// The functions of a module, in order.
pub fn functions(ctx: &Context, module: OpId) -> Vec<FuncOp> {
    ctx.body_ops(module).iter().filter_map(|&op| FuncOp::cast(ctx, op)).collect()
}

/// The function named `name` in `module`.
pub fn lookup_function(ctx: &Context, module: OpId, name: &str) -> Option<FuncOp> {
    functions(ctx, module).into_iter().find(|f| sym_name(ctx, f.0) == Some(name))
}

fn enclosing(ctx: &Context, mut op: OpId, name: &str) -> Option<OpId> {
    while let Some(parent) = ctx.parent_op(op) {
        if ctx.op_name(parent) == name {
            return Some(parent);
        }
        op = parent;
    }
    None
}

fn verify_module(ctx: &Context, op: OpId, errs: &mut Vec<String>) {
    for &child in ctx.body_ops(op) {
        if FuncOp::cast(ctx, child).is_none() {
            errs.push(format!("may only hold functions, found `{}`", ctx.op_name(child)));
        }
    }
}

fn sym_name(ctx: &Context, op: OpId) -> Option<&str> {
    match ctx.op_attr(op, "sym_name").map(|a| ctx.attr(a)) {
        Some(AttrData::Str(s)) => Some(s),
        _ => None,
    }
}

fn verify_func(ctx: &Context, op: OpId, errs: &mut Vec<String>) {
    if let (Some(name), Some(block)) = (sym_name(ctx, op), ctx.op(op).parent) {
        let first =
            ctx.block(block).ops.iter().find(|&&o| FuncOp::cast(ctx, o).is_some() && sym_name(ctx, o) == Some(name));
        if let Some(&first) = first.filter(|&&f| f != op) {
            let at = ctx.op(first).loc;
            errs.push(format!("redefines function @{name} (first defined at line {})", at.line));
        }
    }
    let Some(AttrData::Type(t)) = ctx.op_attr(op, "function_type").map(|a| ctx.attr(a)) else {
        return;
    };
    let Some(fty) = ctx.ty(*t).as_func() else {
        errs.push("attribute `function_type` must be a function type".into());
        return;
    };
    let Some(body) = ctx.body(op, 0) else { return };
    let args = &ctx.block(body).args;
    if args.len() != fty.inputs.len() {
        errs.push(format!("has {} arguments but its type lists {}", args.len(), fty.inputs.len()));
        return;
    }
    for (i, (&a, &t)) in args.iter().zip(&fty.inputs).enumerate() {
        if ctx.value_type(a) != t {
            errs.push(format!("argument #{i} type differs from the function type"));
        }
    }
}

fn verify_return(ctx: &Context, op: OpId, errs: &mut Vec<String>) {
    let Some(func) = ctx.parent_op(op).and_then(|p| FuncOp::cast(ctx, p)) else {
        errs.push("must be directly inside a `func.func`".into());
        return;
    };
    let Some(AttrData::Type(t)) = ctx.op_attr(func.0, "function_type").map(|a| ctx.attr(a)) else {
        return;
    };
    let Some(fty) = ctx.ty(*t).as_func() else {
        return;
    };
    let operands = &ctx.op(op).operands;
    if operands.len() != fty.results.len() {
        errs.push(format!("returns {} values but the function returns {}", operands.len(), fty.results.len()));
        return;
    }
    for (i, (&v, &t)) in operands.iter().zip(&fty.results).enumerate() {
        if ctx.value_type(v) != t {
            errs.push(format!(
                "operand #{i} has type {} but the function returns {}",
                strata_ir::type_to_string(ctx, ctx.value_type(v)),
                strata_ir::type_to_string(ctx, t)
            ));
        }
    }
}

fn verify_call(ctx: &Context, op: OpId, errs: &mut Vec<String>) {
    let Some(AttrData::SymbolRef(callee)) = ctx.op_attr(op, "callee").map(|a| ctx.attr(a)) else {
        return;
    };
    let Some(module) = enclosing(ctx, op, ModuleOp::NAME) else {
        errs.push("is not inside a module".into());
        return;
    };
    let Some(f) = lookup_function(ctx, module, callee) else {
        errs.push(format!("calls @{callee}, which is not defined"));
        return;
    };
    let (inputs, results) = f.signature(ctx);
    let data = ctx.op(op);
    let args: Vec<Ty> = data.operands.iter().map(|&v| ctx.value_type(v)).collect();
    let outs: Vec<Ty> = data.results.iter().map(|&v| ctx.value_type(v)).collect();
    if args != inputs || outs != results {
        errs.push(format!("types do not match the signature of @{callee}"));
    }
}
