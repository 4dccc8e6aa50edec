//! The active trace session of this thread: every tensor op consults it.
//!
//! While recording, ops are appended to the [`Record`] (and executed unless
//! symbolic); while replaying, each op is checked against the next recorded item
//! and answered with placeholders. The session lives in a thread-local while the
//! traced function runs and goes back into the [`Traced`](super::Traced) after.

use super::record::{Item, OpRecord, Record, VarInfo, VarKind};
use super::{Profile, TraceError, TraceErrorReason, TraceOptions};
use crate::error::{Error, Result, location};
use crate::tensor::{AttrVal, Tensor, dims_u64, intern_attrs, op_error};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::panic::Location;
use strata_ir::{OpId, TensorData, TensorType, Ty};

enum Mode {
    Record,
    Replay,
}

/// The state of one traced call.
pub(crate) struct Session {
    record: Record,
    mode: Mode,
    execute: bool,
    capture_as_const: bool,
    symbolic_shape: bool,
    /// Tensor id → recorded variable (recording: every tensor seen; replay:
    /// placeholders and constants created in this call).
    by_tensor: HashMap<u64, usize>,
    args: Vec<Tensor>,
    /// Replay: captured variable → the tensor bound to it in this call.
    bound_captured: BTreeMap<usize, Tensor>,
    pc: usize,
    /// The first trace mismatch of this call.
    pub(crate) trace_error: Option<TraceError>,
    /// The first other error strata raised inside the call.
    pub(crate) error: Option<Error>,
    memo: HashMap<usize, TensorData>,
}

thread_local! {
    static ACTIVE: RefCell<Option<Session>> = const { RefCell::new(None) };
}

/// Whether a session is active on this thread.
pub(crate) fn is_active() -> bool {
    ACTIVE.with(|a| a.borrow().is_some())
}

/// Removes the active session (for `exclude_from_trace`).
pub(crate) fn suspend() -> Option<Session> {
    ACTIVE.with(|a| a.borrow_mut().take())
}

/// Puts a suspended session back.
pub(crate) fn resume(s: Option<Session>) {
    ACTIVE.with(|a| *a.borrow_mut() = s);
}

/// Holds the installed session; dropping it (also on panic) uninstalls it.
pub(crate) struct Guard(bool);

/// Installs `s` as this thread's session.
pub(crate) fn install(s: Session) -> Guard {
    ACTIVE.with(|a| *a.borrow_mut() = Some(s));
    Guard(true)
}

impl Guard {
    /// Uninstalls and returns the session.
    pub(crate) fn finish(mut self) -> Session {
        self.0 = false;
        ACTIVE.with(|a| a.borrow_mut().take()).expect("invariant: the session is installed while the call runs")
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.0 {
            ACTIVE.with(|a| a.borrow_mut().take());
        }
    }
}

fn with<T>(f: impl FnOnce(&mut Session) -> T) -> Option<T> {
    ACTIVE.with(|a| a.borrow_mut().as_mut().map(f))
}

/// Called by every tensor op; `None` when no trace is active.
pub(crate) fn apply(
    name: &'static str,
    inputs: &[&Tensor],
    attrs: &[(&'static str, AttrVal)],
    loc: &'static Location<'static>,
) -> Option<Result<Vec<Tensor>>> {
    with(|s| {
        let r = match s.mode {
            Mode::Record => s.record_op(name, inputs, attrs, loc),
            Mode::Replay => s.replay_op(name, inputs, attrs, loc),
        };
        s.note_error(r)
    })
}

/// Records that the traced function did something a model file cannot hold
/// (e.g. batch normalisation in training mode); `dump` reports `reason`.
pub(crate) fn note_not_dumpable(reason: &str) {
    with(|s| {
        if matches!(s.mode, Mode::Record) && !s.record.not_dumpable.iter().any(|r| r == reason) {
            s.record.not_dumpable.push(reason.to_string());
        }
    });
}

/// Called when a tensor is created from host data.
pub(crate) fn note_created(t: &Tensor, loc: &'static Location<'static>) -> Result<()> {
    with(|s| {
        let r = match s.mode {
            Mode::Record => {
                s.record_const(t, loc);
                Ok(())
            }
            Mode::Replay => s.replay_const(t, loc),
        };
        s.note_error(r)
    })
    .unwrap_or(Ok(()))
}

/// Called when a tensor's value is read; `None` to fall through to the tensor's own data.
pub(crate) fn read_value(t: &Tensor, loc: &'static Location<'static>) -> Option<Result<TensorData>> {
    with(|s| match s.mode {
        Mode::Record => {
            if let Some(&v) = s.by_tensor.get(&t.id()) {
                s.record.vars[v].value_read = true;
            }
            None
        }
        Mode::Replay => {
            let &v = s.by_tensor.get(&t.id())?;
            if t.has_data() {
                return None;
            }
            let r = if s.record.vars[v].value_read {
                s.value_of(v, loc).inspect(|d| t.set_data(d.clone()))
            } else {
                Err(s.trace_err(TraceErrorReason::ValueUnreadable, None, None, Some(describe_tensor(t)), loc))
            };
            Some(s.note_error(r))
        }
    })
    .flatten()
}

fn describe_tensor(t: &Tensor) -> String {
    format!("a read of a {} tensor of shape {:?}", t.elem(), t.shape())
}

impl Session {
    fn new(record: Record, mode: Mode, args: &[Tensor], options: &TraceOptions) -> Session {
        let by_tensor = match mode {
            Mode::Record => args.iter().enumerate().map(|(i, t)| (t.id(), record.args[i])).collect(),
            Mode::Replay => HashMap::new(),
        };
        Session {
            record,
            execute: matches!(mode, Mode::Record) && options.executes_while_recording(),
            mode,
            capture_as_const: options.captures_as_const(),
            symbolic_shape: options.symbolic_shape,
            by_tensor,
            args: args.to_vec(),
            bound_captured: BTreeMap::new(),
            pc: 0,
            trace_error: None,
            error: None,
            memo: HashMap::new(),
        }
    }

    /// A recording session.
    pub(crate) fn recording(record: Record, args: &[Tensor], options: &TraceOptions) -> Session {
        Session::new(record, Mode::Record, args, options)
    }

    /// A replay session, after checking the arguments against the record.
    pub(crate) fn replaying(
        record: Record,
        args: &[Tensor],
        options: &TraceOptions,
    ) -> std::result::Result<Session, Box<(Record, TraceError)>> {
        let err = |reason, actual: Option<String>| TraceError {
            reason,
            op_index: None,
            expected: None,
            actual,
            location: None,
        };
        if args.len() != record.args.len() {
            let e = err(TraceErrorReason::InputsSizeMismatch { recorded: record.args.len(), actual: args.len() }, None);
            return Err(Box::new((record, e)));
        }
        for (i, t) in args.iter().enumerate() {
            let info = &record.vars[record.args[i]];
            if info.elem != t.elem() {
                let reason =
                    TraceErrorReason::DtypeMismatch { recorded: info.elem.to_string(), actual: t.elem().to_string() };
                return Err(Box::new((record, err(reason, Some(format!("argument #{i}"))))));
            }
            let fixed_ok = info.shape.len() == t.shape().len()
                && info
                    .shape
                    .iter()
                    .zip(t.shape())
                    .enumerate()
                    .all(|(d, (a, b))| a == b || (d == 0 && options.symbolic_shape));
            if !fixed_ok {
                let reason = TraceErrorReason::ShapeMismatch {
                    recorded: format!("{:?}", info.shape),
                    actual: format!("{:?}", t.shape()),
                };
                return Err(Box::new((record, err(reason, Some(format!("argument #{i}"))))));
            }
        }
        Ok(Session::new(record, Mode::Replay, args, options))
    }

    pub(crate) fn into_record(self) -> Record {
        self.record
    }

    fn note_error<T>(&mut self, r: Result<T>) -> Result<T> {
        if let Err(e) = &r {
            match e {
                Error::Trace(t) => {
                    self.trace_error.get_or_insert_with(|| (**t).clone());
                }
                other => {
                    self.error.get_or_insert_with(|| other.clone());
                }
            }
        }
        r
    }

    fn trace_err(
        &self,
        reason: TraceErrorReason,
        op_index: Option<usize>,
        expected: Option<String>,
        actual: Option<String>,
        loc: &Location<'_>,
    ) -> Error {
        Error::from(TraceError { reason, op_index, expected, actual, location: Some(location(loc)) })
    }

    fn concrete_type(&mut self, t: &Tensor) -> Ty {
        self.record.ctx.tensor_type(TensorType::fixed(&dims_u64(t.shape()), t.elem()))
    }

    fn new_var(&mut self, info: VarInfo) -> usize {
        self.record.vars.push(info);
        self.record.vars.len() - 1
    }

    // ---- recording ----------------------------------------------------------------

    fn var_for_recording(&mut self, t: &Tensor, loc: &'static Location<'static>) -> Result<usize> {
        if let Some(&v) = self.by_tensor.get(&t.id()) {
            return Ok(v);
        }
        let bound = if self.capture_as_const {
            Some(t.peek_data(loc).map_err(|_| {
                op_error(
                    "trace",
                    "a tensor captured as a constant has no data (it comes from another symbolic trace)",
                    loc,
                )
            })?)
        } else {
            None
        };
        let ty = self.concrete_type(t);
        let v = self.new_var(VarInfo {
            kind: VarKind::Captured,
            ty,
            elem: t.elem(),
            shape: t.shape().to_vec(),
            bound,
            value_read: false,
            name: t.name(),
        });
        self.by_tensor.insert(t.id(), v);
        self.bound_captured.insert(v, t.clone());
        self.record.captured.push(v);
        Ok(v)
    }

    fn record_const(&mut self, t: &Tensor, loc: &'static Location<'static>) {
        let ty = self.concrete_type(t);
        let v = self.new_var(VarInfo {
            kind: VarKind::Const,
            ty,
            elem: t.elem(),
            shape: t.shape().to_vec(),
            bound: t.0.data.borrow().clone(),
            value_read: false,
            name: t.name(),
        });
        self.by_tensor.insert(t.id(), v);
        self.record.items.push(Item::Const { var: v, loc });
    }

    fn record_op(
        &mut self,
        name: &'static str,
        inputs: &[&Tensor],
        attrs: &[(&'static str, AttrVal)],
        loc: &'static Location<'static>,
    ) -> Result<Vec<Tensor>> {
        let in_vars: Vec<usize> = inputs.iter().map(|t| self.var_for_recording(t, loc)).collect::<Result<_>>()?;
        let attrs = intern_attrs(&mut self.record.ctx, attrs);
        let in_tys: Vec<Ty> = in_vars.iter().map(|&v| self.record.vars[v].ty).collect();
        let sym_types = strata_dialects::apply::infer(&self.record.ctx, name, &in_tys, &attrs).map_err(|m| {
            let concrete: Vec<Ty> = inputs.iter().map(|t| self.concrete_type(t)).collect();
            let hint = if self.symbolic_shape
                && strata_dialects::apply::infer(&self.record.ctx, name, &concrete, &attrs).is_ok()
            {
                " (the batch dim is symbolic while tracing with symbolic_shape; keep batch dims with 0 / -1 in reshapes, or trace with symbolic_shape = false)"
            } else {
                ""
            };
            op_error(name, format!("{m}{hint}"), loc)
        })?;
        let outs: Vec<Tensor> = if self.execute {
            let datas: Vec<TensorData> = inputs.iter().map(|t| t.peek_data(loc)).collect::<Result<_>>()?;
            strata_dialects::apply::eval(&mut self.record.ctx, name, &datas, &attrs)
                .map_err(|m| op_error(name, m, loc))?
                .into_iter()
                .map(Tensor::with_data)
                .collect()
        } else {
            let concrete: Vec<Ty> = inputs.iter().map(|t| self.concrete_type(t)).collect();
            let types = strata_dialects::apply::infer(&self.record.ctx, name, &concrete, &attrs)
                .map_err(|m| op_error(name, m, loc))?;
            types.iter().map(placeholder).collect::<Result<_>>()?
        };
        let mut out_vars = Vec::with_capacity(outs.len());
        for (t, sym) in outs.iter().zip(sym_types) {
            let ty = self.record.ctx.intern_type(sym);
            let v = self.new_var(VarInfo {
                kind: VarKind::Internal,
                ty,
                elem: t.elem(),
                shape: t.shape().to_vec(),
                bound: None,
                value_read: false,
                name: None,
            });
            self.by_tensor.insert(t.id(), v);
            out_vars.push(v);
        }
        self.record.items.push(Item::Op(OpRecord { name, attrs, inputs: in_vars, outputs: out_vars, loc }));
        Ok(outs)
    }

    /// Ends call 1: marks the outputs; in symbolic mode computes them once.
    pub(crate) fn finish_recording(&mut self, outs: &[Tensor], names: &[String], options: &TraceOptions) -> Result<()> {
        let loc = Location::caller();
        let mut vars = Vec::with_capacity(outs.len());
        for t in outs {
            vars.push(self.var_for_recording(t, loc)?);
        }
        self.record.outputs = vars;
        self.record.output_names = names.to_vec();
        if options.symbolic && !options.record_only {
            let mut scratch = self.record.clone_for_build();
            let module = scratch.build_module(options)?;
            let inputs = self.function_input_data(options)?;
            let results = strata_dialects::interp::run(&scratch.ctx, module, "main", &inputs)
                .map_err(|e| Error::Compile(format!("running the symbolic trace: {e}")))?;
            for (t, d) in outs.iter().zip(results) {
                if !t.has_data() {
                    t.set_data(d);
                }
            }
        }
        Ok(())
    }

    fn function_input_data(&self, options: &TraceOptions) -> Result<Vec<TensorData>> {
        self.function_input_data_with(options.captures_as_const())
    }

    /// The compiled function's inputs in this call: arguments, then captured
    /// tensors unless they are constants.
    fn function_input_data_with(&self, captures_as_const: bool) -> Result<Vec<TensorData>> {
        let loc = Location::caller();
        let mut out: Vec<TensorData> = self.args.iter().map(|t| t.peek_data(loc)).collect::<Result<_>>()?;
        if !captures_as_const {
            for v in &self.record.captured {
                let t = self
                    .bound_captured
                    .get(v)
                    .ok_or_else(|| Error::Compile(format!("captured input {v} was not bound in this call")))?;
                out.push(t.peek_data(loc)?);
            }
        }
        Ok(out)
    }

    // ---- replay -------------------------------------------------------------------

    fn replay_const(&mut self, t: &Tensor, loc: &'static Location<'static>) -> Result<()> {
        if let Some(e) = &self.trace_error {
            return Err(Error::from(e.clone()));
        }
        let pc = self.pc;
        match self.record.items.get(pc) {
            Some(Item::Const { var, .. }) => {
                let var = *var;
                let recorded = self.record.vars[var].bound.as_ref();
                if recorded != t.0.data.borrow().as_ref() {
                    return Err(self.trace_err(
                        TraceErrorReason::TensorsNotEqual,
                        Some(pc),
                        Some(self.record.describe(pc)),
                        Some(format!("a constant of shape {:?} with other values", t.shape())),
                        loc,
                    ));
                }
                self.by_tensor.insert(t.id(), var);
                self.pc += 1;
                Ok(())
            }
            None => Err(self.trace_err(
                TraceErrorReason::TooManyOps,
                Some(pc),
                None,
                Some("a constant creation".into()),
                loc,
            )),
            Some(_) => Err(self.trace_err(
                TraceErrorReason::OperatorMismatch,
                Some(pc),
                Some(self.record.describe(pc)),
                Some("a constant creation".into()),
                loc,
            )),
        }
    }

    fn replay_op(
        &mut self,
        name: &'static str,
        inputs: &[&Tensor],
        attrs: &[(&'static str, AttrVal)],
        loc: &'static Location<'static>,
    ) -> Result<Vec<Tensor>> {
        if let Some(e) = &self.trace_error {
            return Err(Error::from(e.clone()));
        }
        let pc = self.pc;
        let attrs = intern_attrs(&mut self.record.ctx, attrs);
        let actual = || self.record.op_text(name, &attrs);
        let op = match self.record.items.get(pc) {
            None => {
                return Err(self.trace_err(
                    TraceErrorReason::TooManyOps,
                    Some(pc),
                    None,
                    Some(format!("`{}`", actual())),
                    loc,
                ));
            }
            Some(Item::Op(op)) if op.name == name && op.attrs == attrs && op.inputs.len() == inputs.len() => op.clone(),
            Some(_) => {
                return Err(self.trace_err(
                    TraceErrorReason::OperatorMismatch,
                    Some(pc),
                    Some(self.record.describe(pc)),
                    Some(format!("`{}`", actual())),
                    loc,
                ));
            }
        };
        for (k, t) in inputs.iter().enumerate() {
            let r = op.inputs[k];
            let info = &self.record.vars[r];
            let mismatch = |s: &Session, reason| {
                s.trace_err(reason, Some(pc), Some(s.record.describe(pc)), Some(format!("input #{k} of `{name}`")), loc)
            };
            match (self.by_tensor.get(&t.id()).copied(), info.kind) {
                (Some(v), VarKind::Internal | VarKind::Const) if v != r => {
                    return Err(mismatch(self, TraceErrorReason::InputIdMismatch));
                }
                (Some(_), VarKind::Internal | VarKind::Const) => {}
                (Some(_), VarKind::Arg(_) | VarKind::Captured) => {
                    return Err(mismatch(self, TraceErrorReason::ExpectExternalGotInternal));
                }
                (None, VarKind::Internal | VarKind::Const) => {
                    return Err(mismatch(self, TraceErrorReason::ExpectInternalGotExternal));
                }
                (None, VarKind::Arg(i)) => {
                    if self.args.get(i).map(Tensor::id) != Some(t.id()) {
                        return Err(mismatch(self, TraceErrorReason::InputIdMismatch));
                    }
                }
                (None, VarKind::Captured) => {
                    if info.elem != t.elem() {
                        let reason = TraceErrorReason::DtypeMismatch {
                            recorded: info.elem.to_string(),
                            actual: t.elem().to_string(),
                        };
                        return Err(mismatch(self, reason));
                    }
                    if self.capture_as_const {
                        let now = t.peek_data(loc)?;
                        if info.bound.as_ref() != Some(&now) {
                            return Err(mismatch(self, TraceErrorReason::TensorsNotEqual));
                        }
                    } else {
                        if info.shape != t.shape() {
                            let reason = TraceErrorReason::ShapeMismatch {
                                recorded: format!("{:?}", info.shape),
                                actual: format!("{:?}", t.shape()),
                            };
                            return Err(mismatch(self, reason));
                        }
                        self.bound_captured.entry(r).or_insert_with(|| (*t).clone());
                    }
                }
            }
        }
        let concrete: Vec<Ty> = inputs.iter().map(|t| self.concrete_type(t)).collect();
        let types = strata_dialects::apply::infer(&self.record.ctx, name, &concrete, &attrs)
            .map_err(|m| op_error(name, m, loc))?;
        let outs: Vec<Tensor> = types.iter().map(placeholder).collect::<Result<_>>()?;
        for (t, &v) in outs.iter().zip(&op.outputs) {
            self.by_tensor.insert(t.id(), v);
        }
        self.pc += 1;
        Ok(outs)
    }

    /// Evaluates recorded variable `v` in this replay with the reference
    /// evaluator (for values the function reads before the call ends).
    fn value_of(&mut self, v: usize, loc: &'static Location<'static>) -> Result<TensorData> {
        if let Some(d) = self.memo.get(&v) {
            return Ok(d.clone());
        }
        let info = self.record.vars[v].clone();
        let data = match info.kind {
            VarKind::Arg(i) => self.args[i].peek_data(loc)?,
            VarKind::Const => info.bound.clone().expect("invariant: constants carry data"),
            VarKind::Captured => match (&info.bound, self.bound_captured.get(&v)) {
                (Some(b), _) => b.clone(),
                (None, Some(t)) => t.peek_data(loc)?,
                (None, None) => return Err(op_error("trace", "captured value is not bound yet", loc)),
            },
            VarKind::Internal => {
                let op = self
                    .record
                    .items
                    .iter()
                    .find_map(|it| match it {
                        Item::Op(op) if op.outputs.contains(&v) => Some(op.clone()),
                        _ => None,
                    })
                    .expect("invariant: internal values have a producer");
                let datas: Vec<TensorData> = op.inputs.iter().map(|&i| self.value_of(i, loc)).collect::<Result<_>>()?;
                let outs = strata_dialects::apply::eval(&mut self.record.ctx, op.name, &datas, &op.attrs)
                    .map_err(|m| op_error(op.name, m, loc))?;
                for (&o, d) in op.outputs.iter().zip(outs) {
                    self.memo.insert(o, d);
                }
                return self.memo.get(&v).cloned().ok_or_else(|| op_error(op.name, "result missing", loc));
            }
        };
        self.memo.insert(v, data.clone());
        Ok(data)
    }

    /// Ends a replayed call: checks it consumed the whole record and returned the
    /// recorded outputs, runs the compiled module, and fills the outputs.
    pub(crate) fn finish_replay(
        &mut self,
        outs: &[Tensor],
        module: OpId,
        jit: Option<&crate::engine::JitEngine>,
        profile: Option<&mut Profile>,
    ) -> Result<()> {
        let loc = Location::caller();
        if self.pc != self.record.items.len() {
            let pc = self.pc;
            return Err(self.trace_err(
                TraceErrorReason::PrematureEnd,
                Some(pc),
                Some(self.record.describe(pc)),
                Some("the function returned".into()),
                loc,
            ));
        }
        let out_mismatch = |s: &Session, actual: String| {
            s.trace_err(
                TraceErrorReason::OutputMismatch,
                None,
                Some(format!("{} outputs", s.record.outputs.len())),
                Some(actual),
                loc,
            )
        };
        if outs.len() != self.record.outputs.len() {
            return Err(out_mismatch(self, format!("{} outputs", outs.len())));
        }
        for (k, (t, &v)) in outs.iter().zip(&self.record.outputs).enumerate() {
            let ok = match self.record.vars[v].kind {
                VarKind::Arg(i) => self.args.get(i).map(Tensor::id) == Some(t.id()),
                _ => {
                    self.by_tensor.get(&t.id()) == Some(&v)
                        || self.bound_captured.get(&v).map(Tensor::id) == Some(t.id())
                }
            };
            if !ok {
                return Err(out_mismatch(self, format!("a different value as output #{k}")));
            }
        }
        let inputs = self.function_input_data_with(self.capture_as_const)?;
        let results = match (jit, profile) {
            (Some(j), Some(p)) => p.run_jit(j, &inputs),
            (Some(j), None) => j.run(&inputs).map_err(|e| e.to_string()),
            (None, Some(p)) => p.run(&self.record.ctx, module, &inputs),
            (None, None) => {
                strata_dialects::interp::run(&self.record.ctx, module, "main", &inputs).map_err(|e| e.to_string())
            }
        }
        .map_err(|e| Error::Compile(format!("running the compiled graph: {e}")))?;
        for (t, d) in outs.iter().zip(results) {
            if !t.has_data() {
                t.set_data(d);
            }
        }
        Ok(())
    }
}

/// A tensor without data of an inferred (fixed) type.
fn placeholder(t: &strata_ir::TypeData) -> Result<Tensor> {
    let tt = t.as_tensor().ok_or_else(|| Error::Compile("an op produced a non-tensor value".into()))?;
    let shape: Option<Vec<usize>> = tt.static_shape().map(|s| s.into_iter().map(|d| d as usize).collect());
    let shape = shape.ok_or_else(|| Error::Compile("an op produced a symbolic shape from concrete inputs".into()))?;
    Ok(Tensor::without_data(tt.elem, shape))
}
