//! The reference interpreter: runs a function op by op with each op's `eval`.
//!
//! It is deliberately naive — a map from values to host tensors, ops in block
//! order — because it is the oracle that every optimised, relayouted, lowered
//! and JIT-compiled path is compared against. Every intermediate result is
//! checked against its declared type (element type and fixed dimensions), so a
//! wrong shape inference or a wrong `eval` is caught where it happens.

use crate::func::{CallOp, FuncOp, ModuleOp, ReturnOp, lookup_function};
use std::collections::HashMap;
use strata_ir::{Context, Dim, OpCx, OpId, OpTraits, OpView, TensorData, Ty, TypeData, ValueId};

/// An evaluation failure, naming the op.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    /// The function was called with the wrong inputs.
    #[error("function @{func}: {message}")]
    Inputs {
        /// Function name.
        func: String,
        /// What is wrong.
        message: String,
    },
    /// An op failed or produced something of the wrong type.
    #[error("evaluating `{op}` (#{index} in @{func}): {message}")]
    Op {
        /// Function name.
        func: String,
        /// Op name.
        op: String,
        /// Position in the function body.
        index: usize,
        /// What went wrong.
        message: String,
    },
    /// No function of that name.
    #[error("no function @{0} in the module")]
    NoFunction(String),
}

const MAX_CALL_DEPTH: usize = 64;

/// Checks that `t` fits `ty` (element type, rank, fixed dims; symbolic dims are
/// bound consistently in `syms`).
pub fn check_tensor(ctx: &Context, ty: Ty, t: &TensorData, syms: &mut HashMap<String, usize>) -> Result<(), String> {
    let TypeData::Tensor(tt) = ctx.ty(ty) else {
        return Err(format!("expected a value of type {}, which is not a tensor", strata_ir::type_to_string(ctx, ty)));
    };
    let want = strata_ir::type_to_string(ctx, ty);
    if tt.elem != t.elem() || tt.shape.len() != t.shape().len() {
        return Err(format!("expected {want}, got {}{:?}", t.elem(), t.shape()));
    }
    for (d, &n) in tt.shape.iter().zip(t.shape()) {
        match d {
            Dim::Fixed(k) if *k != n as u64 => {
                return Err(format!("expected {want}, got shape {:?}", t.shape()));
            }
            Dim::Sym(s) => {
                let bound = *syms.entry(ctx.str(*s).to_string()).or_insert(n);
                if bound != n {
                    return Err(format!("symbolic dim ?{} is {bound} elsewhere but {n} here", ctx.str(*s)));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Runs function `name` of `module` on `inputs`.
pub fn run(ctx: &Context, module: OpId, name: &str, inputs: &[TensorData]) -> Result<Vec<TensorData>, EvalError> {
    run_observed(ctx, module, name, inputs, &mut |_, _| {})
}

/// [`run`], calling `observe(op, time)` after each op of the function's body.
pub fn run_observed(
    ctx: &Context,
    module: OpId,
    name: &str,
    inputs: &[TensorData],
    observe: &mut dyn FnMut(OpId, std::time::Duration),
) -> Result<Vec<TensorData>, EvalError> {
    let f = lookup_function(ctx, module, name).ok_or_else(|| EvalError::NoFunction(name.to_string()))?;
    run_function_observed(ctx, f, inputs, 0, observe)
}

/// Runs `func` on `inputs`.
pub fn run_function(
    ctx: &Context,
    func: FuncOp,
    inputs: &[TensorData],
    depth: usize,
) -> Result<Vec<TensorData>, EvalError> {
    run_function_observed(ctx, func, inputs, depth, &mut |_, _| {})
}

fn run_function_observed(
    ctx: &Context,
    func: FuncOp,
    inputs: &[TensorData],
    depth: usize,
    observe: &mut dyn FnMut(OpId, std::time::Duration),
) -> Result<Vec<TensorData>, EvalError> {
    let fname = func.name(ctx).to_string();
    let input_err = |message: String| EvalError::Inputs { func: fname.clone(), message };
    if depth > MAX_CALL_DEPTH {
        return Err(input_err(format!("call depth exceeds {MAX_CALL_DEPTH} (recursion?)")));
    }
    let body = ctx.body(func.0, 0).ok_or_else(|| input_err("has no body".into()))?;
    let args = &ctx.block(body).args;
    if args.len() != inputs.len() {
        return Err(input_err(format!("takes {} inputs, got {}", args.len(), inputs.len())));
    }
    let mut syms = HashMap::new();
    let mut env: HashMap<ValueId, TensorData> = HashMap::new();
    for (i, (&a, t)) in args.iter().zip(inputs).enumerate() {
        check_tensor(ctx, ctx.value_type(a), t, &mut syms).map_err(|m| input_err(format!("input #{i}: {m}")))?;
        env.insert(a, t.clone());
    }
    let module = ctx.parent_op(func.0).filter(|&m| ModuleOp::cast(ctx, m).is_some());
    for (index, &op) in ctx.block(body).ops.iter().enumerate() {
        let op_err =
            |message: String| EvalError::Op { func: fname.clone(), op: ctx.op_name(op).to_string(), index, message };
        let started = std::time::Instant::now();
        let data = ctx.op(op);
        let operands: Vec<TensorData> = data
            .operands
            .iter()
            .map(|v| env.get(v).cloned().ok_or_else(|| op_err(format!("operand {v} has no value"))))
            .collect::<Result<_, _>>()?;
        if ReturnOp::cast(ctx, op).is_some() {
            return Ok(operands);
        }
        let results = if let Some(call) = CallOp::cast(ctx, op) {
            let callee = call.callee(ctx);
            let target = module
                .and_then(|m| lookup_function(ctx, m, callee))
                .ok_or_else(|| op_err(format!("callee @{callee} not found")))?;
            run_function(ctx, target, &operands, depth + 1).map_err(|e| op_err(e.to_string()))?
        } else {
            let def = ctx.op_def(op).ok_or_else(|| op_err("unregistered op cannot be evaluated".into()))?;
            if def.regions != 0 && !def.traits.contains(OpTraits::CONSTANT_LIKE) {
                return Err(op_err("ops with regions have no reference evaluation yet".into()));
            }
            let eval = def.eval.ok_or_else(|| op_err("has no reference evaluator".into()))?;
            let operand_types: Vec<Ty> = data.operands.iter().map(|&v| ctx.value_type(v)).collect();
            let result_types: Vec<Ty> = data.results.iter().map(|&v| ctx.value_type(v)).collect();
            eval(&OpCx::of_op(ctx, op, &operand_types, &result_types), &operands).map_err(op_err)?
        };
        if results.len() != data.results.len() {
            return Err(op_err(format!("produced {} results, declares {}", results.len(), data.results.len())));
        }
        for (i, (&r, t)) in data.results.iter().zip(&results).enumerate() {
            check_tensor(ctx, ctx.value_type(r), t, &mut syms).map_err(|m| op_err(format!("result #{i}: {m}")))?;
        }
        env.extend(data.results.iter().copied().zip(results));
        observe(op, started.elapsed());
    }
    Err(input_err("body does not end in a return".into()))
}
