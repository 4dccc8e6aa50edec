//! The recorded sequence of a trace and its translation into a graph-dialect module.

use crate::error::{Error, Result};
use crate::tensor::Tensor;
use crate::trace::TraceOptions;
use std::collections::BTreeMap;
use std::panic::Location;
use strata_ir::{
    Attr, AttrData, Context, DenseAttr, DenseStorage, Dim, ElemType, FuncType, InsertPoint, Loc, OpBuild, OpId,
    Rewriter, Sym, TensorData, TensorType, Ty, TypeData, ValueId,
};

/// Where a recorded value comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum VarKind {
    /// Argument `i` of the call.
    Arg(usize),
    /// A tensor from outside the function (a parameter, a closure variable).
    Captured,
    /// A tensor created inside the function.
    Const,
    /// An op result.
    Internal,
}

/// One recorded value.
#[derive(Clone, Debug)]
pub(crate) struct VarInfo {
    pub(crate) kind: VarKind,
    /// Type in the trace context (the batch dim may be symbolic).
    pub(crate) ty: Ty,
    pub(crate) elem: ElemType,
    /// Shape seen while recording.
    pub(crate) shape: Vec<usize>,
    /// Frozen value (constants; captured tensors with `capture_as_const`).
    pub(crate) bound: Option<TensorData>,
    /// Whether the function read the value while recording.
    pub(crate) value_read: bool,
    pub(crate) name: Option<String>,
}

/// One recorded op application.
#[derive(Clone, Debug)]
pub(crate) struct OpRecord {
    pub(crate) name: &'static str,
    pub(crate) attrs: Vec<(Sym, Attr)>,
    pub(crate) inputs: Vec<usize>,
    pub(crate) outputs: Vec<usize>,
    pub(crate) loc: &'static Location<'static>,
}

/// One item of the sequence.
#[derive(Clone, Debug)]
pub(crate) enum Item {
    Op(OpRecord),
    Const { var: usize, loc: &'static Location<'static> },
}

/// Everything call 1 recorded.
#[derive(Clone)]
pub(crate) struct Record {
    pub(crate) ctx: Context,
    pub(crate) items: Vec<Item>,
    pub(crate) vars: Vec<VarInfo>,
    pub(crate) args: Vec<usize>,
    pub(crate) captured: Vec<usize>,
    pub(crate) outputs: Vec<usize>,
    /// Names of the outputs when the function returned a map (else empty).
    pub(crate) output_names: Vec<String>,
    /// Why the record cannot be dumped (empty: it can).
    pub(crate) not_dumpable: Vec<String>,
}

impl Record {
    /// A record with one variable per argument. With `symbolic_shape`, the
    /// first dim of every argument of rank ≥ 1 becomes symbolic; arguments whose
    /// first dims are equal share the symbol (`N`, then `N1`, `N2`, …).
    pub(crate) fn new(args: &[Tensor], options: &TraceOptions) -> Result<Record> {
        let mut ctx = strata_dialects::context();
        let mut vars = Vec::new();
        let mut syms: BTreeMap<usize, Sym> = BTreeMap::new();
        for (i, t) in args.iter().enumerate() {
            let mut shape: Vec<Dim> = t.shape().iter().map(|&d| Dim::Fixed(d as u64)).collect();
            if options.symbolic_shape && !shape.is_empty() {
                let n = syms.len();
                let sym = *syms
                    .entry(t.shape()[0])
                    .or_insert_with(|| ctx.sym(&if n == 0 { "N".to_string() } else { format!("N{n}") }));
                shape[0] = Dim::Sym(sym);
            }
            let ty = ctx.tensor_type(TensorType { shape, elem: t.elem(), layout: strata_ir::Layout::Nchw });
            vars.push(VarInfo {
                kind: VarKind::Arg(i),
                ty,
                elem: t.elem(),
                shape: t.shape().to_vec(),
                bound: None,
                value_read: false,
                name: Some(t.name().unwrap_or_else(|| format!("arg_{i}"))),
            });
        }
        Ok(Record {
            ctx,
            items: Vec::new(),
            args: (0..vars.len()).collect(),
            vars,
            captured: Vec::new(),
            outputs: Vec::new(),
            output_names: Vec::new(),
            not_dumpable: Vec::new(),
        })
    }

    /// A copy to build a module in without disturbing the record.
    pub(crate) fn clone_for_build(&self) -> Record {
        self.clone()
    }

    /// A short description of item `i` for error messages.
    pub(crate) fn describe(&self, i: usize) -> String {
        match self.items.get(i) {
            None => "the end of the recorded sequence".into(),
            Some(Item::Const { loc, .. }) => {
                format!("a constant creation (recorded at {})", crate::error::location(loc))
            }
            Some(Item::Op(op)) => {
                format!("`{}` (recorded at {})", self.op_text(op.name, &op.attrs), crate::error::location(op.loc))
            }
        }
    }

    /// `name {k = v, …}`.
    pub(crate) fn op_text(&self, name: &str, attrs: &[(Sym, Attr)]) -> String {
        if attrs.is_empty() {
            return name.to_string();
        }
        let parts: Vec<String> = attrs
            .iter()
            .map(|&(k, a)| format!("{} = {}", self.ctx.str(k), strata_ir::attr_to_string(&self.ctx, a)))
            .collect();
        format!("{name} {{{}}}", parts.join(", "))
    }

    /// The inputs of the compiled function: arguments, then captured tensors
    /// unless they were captured as constants.
    pub(crate) fn function_inputs(&self, options: &TraceOptions) -> Vec<usize> {
        let mut v = self.args.clone();
        if !options.captures_as_const() {
            v.extend(&self.captured);
        }
        v
    }

    /// Builds `func @main` from the sequence (no optimisation).
    pub(crate) fn build_module(&mut self, options: &TraceOptions) -> Result<OpId> {
        let inputs = self.function_inputs(options);
        for &o in &self.outputs {
            if self.vars[o].kind == VarKind::Captured && options.captures_as_const() && self.vars[o].bound.is_none() {
                return Err(Error::Compile("an output is a captured tensor without data".into()));
            }
        }
        let in_tys: Vec<Ty> = inputs.iter().map(|&v| self.vars[v].ty).collect();
        let out_tys: Vec<Ty> = self.outputs.iter().map(|&v| self.vars[v].ty).collect();
        let ctx = &mut self.ctx;
        let fty = ctx.intern_type(TypeData::Func(FuncType { inputs: in_tys.clone(), results: out_tys }));
        let fty = ctx.intern_attr(AttrData::Type(fty));
        let name = ctx.intern_attr(AttrData::Str("main".into()));
        let mut rw = Rewriter::new(ctx);
        let module = rw.create(OpBuild::new("func.module").regions(1), InsertPoint::Detached);
        let mbody = rw.ctx().body(module, 0).expect("invariant: module body");
        let func = rw.create(
            OpBuild::new("func.func").attr("sym_name", name).attr("function_type", fty).regions(1),
            InsertPoint::End(mbody),
        );
        let body = rw.ctx().body(func, 0).expect("invariant: function body");
        let mut values: BTreeMap<usize, ValueId> = BTreeMap::new();
        for (&v, &ty) in inputs.iter().zip(&in_tys) {
            let a = rw.add_block_arg(body, ty);
            rw.set_value_name(a, self.vars[v].name.as_deref());
            values.insert(v, a);
        }
        let at = InsertPoint::End(body);
        let loc_of = |rw: &mut Rewriter<'_>, l: &Location<'_>| Loc {
            file: Some(rw.ctx_mut().sym(l.file())),
            line: l.line(),
            col: l.column(),
            name: None,
        };
        if options.captures_as_const() {
            for (k, &v) in self.captured.iter().enumerate() {
                let info = &self.vars[v];
                let data = info.bound.clone().ok_or_else(|| {
                    Error::Compile(format!("captured tensor #{k} has no data to freeze as a constant"))
                })?;
                let pname = info.name.clone().unwrap_or_else(|| format!("param_{k}"));
                let value = dense(rw.ctx_mut(), info.ty, data);
                let pname_attr = rw.ctx_mut().intern_attr(AttrData::Str(pname.clone()));
                let op = rw.create(
                    OpBuild::new("graph.param").attr("value", value).attr("name", pname_attr).results(&[info.ty]),
                    at,
                );
                let r = rw.ctx().op(op).results[0];
                rw.set_value_name(r, Some(&pname));
                values.insert(v, r);
            }
        }
        for item in &self.items {
            match item {
                Item::Const { var, loc } => {
                    let info = &self.vars[*var];
                    let data = info.bound.clone().expect("invariant: constants carry data");
                    let value = dense(rw.ctx_mut(), info.ty, data);
                    let loc = loc_of(&mut rw, loc);
                    let op =
                        rw.create(OpBuild::new("graph.const").attr("value", value).results(&[info.ty]).loc(loc), at);
                    values.insert(*var, rw.ctx().op(op).results[0]);
                }
                Item::Op(op) => {
                    let operands: Vec<ValueId> = op
                        .inputs
                        .iter()
                        .map(|v| {
                            values
                                .get(v)
                                .copied()
                                .ok_or_else(|| Error::Compile(format!("value {v} used before definition")))
                        })
                        .collect::<Result<_>>()?;
                    let results: Vec<Ty> = op.outputs.iter().map(|&v| self.vars[v].ty).collect();
                    let loc = loc_of(&mut rw, op.loc);
                    let mut build = OpBuild::new(op.name).operands(&operands).results(&results).loc(loc);
                    for &(k, a) in &op.attrs {
                        build.attrs.push((rw.ctx().str(k).to_string(), a));
                    }
                    let created = rw.create(build, at);
                    for (&v, &r) in op.outputs.iter().zip(&rw.ctx().op(created).results.clone()) {
                        if let Some(n) = &self.vars[v].name {
                            rw.set_value_name(r, Some(n));
                        }
                        values.insert(v, r);
                    }
                }
            }
        }
        let outs: Vec<ValueId> = self
            .outputs
            .iter()
            .map(|v| values.get(v).copied().ok_or_else(|| Error::Compile(format!("output value {v} is never defined"))))
            .collect::<Result<_>>()?;
        rw.create(OpBuild::new("func.return").operands(&outs), at);
        strata_ir::verify(&self.ctx, module, strata_ir::VerifyOptions::default()).map_err(|d| {
            Error::Compile(format!(
                "the traced graph does not verify:\n{}",
                strata_ir::diag::render_all(&self.ctx, &d, None)
            ))
        })?;
        Ok(module)
    }

    /// Builds the module and runs the `opt_level` pipeline on it.
    pub(crate) fn compile(&mut self, options: &TraceOptions) -> Result<OpId> {
        let module = self.build_module(options)?;
        let level =
            strata_passes::pipelines::OptLevel::new(options.opt_level).map_err(|e| Error::Invalid(e.to_string()))?;
        let config = crate::driver::OptConfig {
            opt_level: Some(level),
            instrumentation: strata_ir::pass::Instrumentation::default(),
            ..crate::driver::OptConfig::default()
        };
        let span = tracing::info_span!("trace.compile", opt_level = options.opt_level);
        let _g = span.enter();
        crate::driver::optimize(&mut self.ctx, module, &config).map_err(|e| Error::Compile(e.to_string()))?;
        Ok(module)
    }
}

fn dense(ctx: &mut Context, ty: Ty, data: TensorData) -> Attr {
    ctx.intern_attr(AttrData::Dense(DenseAttr { ty, storage: DenseStorage::Data(data) }))
}
