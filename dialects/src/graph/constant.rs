//! `graph.const` and `graph.param`: tensors whose value is an attribute.
//!
//! `const` is an immutable value (MegEngine's ImmutableTensor); `param` is a
//! named parameter such as a weight (SharedDeviceTensor), captured by tracing
//! with `capture_as_const` and kept by name when dumping with `keep_param_name`.

use strata_ir::{DenseStorage, OpCx, Registry, TensorData, TypeData, attr_kind, define_op};

define_op! {
    /// A constant tensor held in the `value` attribute.
    pub struct ConstOp = "graph.const" {
        summary: "a constant tensor",
        operands: [],
        results: [output],
        attrs: { value: Dense },
        optional_attrs: {},
        traits: [PURE, CONSTANT_LIKE],
        infer: infer_value,
        eval: eval_value,
    }
}

define_op! {
    /// A named parameter (a weight) held in the `value` attribute.
    pub struct ParamOp = "graph.param" {
        summary: "a named parameter tensor",
        operands: [],
        results: [output],
        attrs: { value: Dense, name: Str },
        optional_attrs: {},
        traits: [PURE, CONSTANT_LIKE],
        infer: infer_value,
        eval: eval_value,
    }
}

pub(crate) fn register(r: &mut Registry) {
    for def in [ConstOp::DEF, ParamOp::DEF] {
        r.register(def).expect("invariant: graph ops register once");
    }
}

fn infer_value(cx: &OpCx<'_>) -> Result<Vec<TypeData>, String> {
    let d = cx.attrs.req::<attr_kind::Dense>("value")?;
    Ok(vec![cx.ctx.ty(d.ty).clone()])
}

fn eval_value(cx: &OpCx<'_>, _inputs: &[TensorData]) -> Result<Vec<TensorData>, String> {
    let d = cx.attrs.req::<attr_kind::Dense>("value")?;
    match &d.storage {
        DenseStorage::Data(t) => Ok(vec![t.clone()]),
        DenseStorage::Elided { hash } => Err(format!(
            "constant data was elided when printed (#blob<0x{hash:016x}>); print with --print-large-consts to keep it"
        )),
    }
}
