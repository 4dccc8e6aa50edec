//! Translation of one `loops`-dialect kernel into a Cranelift function.
//!
//! A kernel is a `func.func` whose arguments are buffers and whose body is loop code (see
//! `strata_dialects::loops`). [`define_kernel`] compiles it into a [`KernelModule`] (the JIT or an
//! object file) as a function with the C ABI
//!
//! ```text
//! extern "C" fn(args: *const *mut u8, begin: i64, end: i64)
//! ```
//!
//! - `args[i]` is the base address of buffer argument `i`;
//! - `begin..end` restricts the iterations of the kernel's top-level `loops.parallel` (intersected
//!   with its constant bounds), so the executor can split it across threads; kernels without a
//!   parallel loop ignore both.
//!
//! # Values
//!
//! `index` is `i64`; `f32` is `f32`; `f16` and `bf16` live in `i16` registers as their bit
//! patterns and are converted exactly to and from `f32` in integer code around every arithmetic
//! op (Cranelift's x64 backend has no `f16` conversions); `bool` is an `i8` holding 0 or 1 (a
//! load reads any nonzero byte as 1, arithmetic on bools is modulo 2); the
//! other integers are Cranelift integers of their width (`u8` in `i8`, signedness picks the
//! instruction). Vectors are the 128-bit Cranelift vector of the lane type (`vec<8xf16>` is
//! `i16x8`), and comparison masks are integer vectors of the lane width.
//!
//! # Addresses
//!
//! Subscripts are tracked as linear forms `Σ kᵢ·vᵢ + c` over Cranelift values (loop counters and
//! other opaque indices). A load or store computes `base + Σ (kᵢ·strideᵢ·size)·vᵢ` and puts the
//! constant `c·stride·size` in the instruction's offset field, so fully unrolled code with
//! constant subscript offsets shares one address register and compiles to `vmovups off(%reg)` /
//! `vfmadd213ps off(%reg), …` (x86-64) or `ldr q, [x, #off]` (aarch64). Memory accesses are not
//! assumed aligned.
//!
//! Loads from buffer arguments the kernel never stores to are marked read-only, and outside
//! loops with unknown bounds also movable, so Cranelift's mid-end schedules them next to their
//! uses (short live ranges: register-blocked accumulators stay in registers) and hoists
//! invariant ones out of loops. **Contract:** during a call, memory a kernel only reads must not
//! be written through another of its arguments (the memory plan never overlaps buffers live in
//! the same step, so only a launch passing one buffer as both an input and an output could
//! break this).
//!
//! # Loops
//!
//! `loops.for` becomes a rotated loop whose block parameters are the counter and the carried
//! values. With constant bounds, `unroll = N` emits the body `N` times per iteration and the
//! `trip % N` remaining iterations straight-line after the loop (a loop of at most one unrolled
//! iteration is emitted straight-line). Integer division by a non-constant divisor is guarded so
//! it never traps (`x / 0 = x`, `x % 0 = 0`, `MIN / -1` wraps).
//!
//! Results are bit-identical to the reference interpreter (`strata_dialects::loops::interp`)
//! wherever it defines them; the tests compare the two over every op and type, on the host and
//! (under `qemu-aarch64`) on aarch64.
//!
//! # Runtime helpers
//!
//! `exp`, `log`, `tanh`, `sin`, `cos`, `erf` and `pow` call the scalar helpers of
//! [`crate::helpers`] (once per lane for vectors). `fma` is Cranelift's `fma`: a native
//! `vfmadd`/`fmla` when the ISA has it, otherwise Cranelift's own `fmaf` libcall (registered by
//! the JIT). Round-half-away-from-zero is inline code.

use std::collections::{HashMap, HashSet};

use cranelift_codegen::entity::EntityRef;
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{
    AbiParam, BlockArg, FuncRef, Function, InstBuilder, MemFlagsData, Signature, Type, UserFuncName, Value, types,
};
use cranelift_codegen::isa::TargetIsa;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_module::FuncId;
use strata_dialects::loops::{BinOp, CmpPred, LaneReduce, UnOp};
use strata_ir::{AttrData, BlockId, Context, Dim, ElemType, OpId, TypeData, ValueId};

use crate::error::{CodegenError, Result};
use crate::helpers::Helper;
use crate::module::KernelModule;

/// The Cranelift signature of every kernel: `(args: ptr, begin: i64, end: i64) -> ()` in the
/// ISA's default (C) calling convention.
pub fn kernel_signature(isa: &dyn TargetIsa) -> Signature {
    let mut sig = Signature::new(isa.default_call_conv());
    sig.params.extend([AbiParam::new(isa.pointer_type()), AbiParam::new(types::I64), AbiParam::new(types::I64)]);
    sig
}

/// Translates kernel `func` and defines it in `module` as the exported function `name` with
/// [`kernel_signature`]; returns its id.
///
/// Fails with [`CodegenError::Compile`] naming the kernel and the op when the kernel uses an op
/// or a type the translator does not support, and with Cranelift's error when compilation fails.
/// Nothing is declared when the translation fails.
pub fn define_kernel<M: KernelModule + ?Sized>(
    module: &mut M,
    ctx: &Context,
    func: OpId,
    name: &str,
) -> Result<FuncId> {
    let sig = kernel_signature(module.isa());
    let function = translate_kernel(module, ctx, func, name)?;
    let id = module.declare_function(name, &sig)?;
    module.define_function(id, function)?;
    Ok(id)
}

/// Translates kernel `func` into a Cranelift [`Function`] with [`kernel_signature`], without
/// defining it; `name` is used in error messages. Runtime helpers the kernel calls are declared in
/// `module` as imports.
pub fn translate_kernel<M: KernelModule + ?Sized>(
    module: &mut M,
    ctx: &Context,
    func: OpId,
    name: &str,
) -> Result<Function> {
    let isa = module.isa();
    let sig = kernel_signature(isa);
    let tfc = isa.frontend_config();
    let ptr = isa.pointer_type();
    if ptr != types::I64 {
        return Err(compile_error(name, format!("unsupported pointer type {ptr} (64-bit targets only)")));
    }
    if ctx.op_name(func) != "func.func" {
        return Err(compile_error(name, format!("expected a `func.func`, got `{}`", ctx.op_name(func))));
    }
    let mut function = Function::with_name_signature(UserFuncName::default(), sig);
    let mut fctx = FunctionBuilderContext::new();
    let b = FunctionBuilder::new(&mut function, &mut fctx);
    let mut tx = Tx {
        ctx,
        module,
        b,
        kernel: name,
        vals: HashMap::new(),
        lin: HashMap::new(),
        bufs: HashMap::new(),
        helpers: HashMap::new(),
        begin: None,
        end: None,
        depth: 0,
        parallel_seen: false,
        written: stored_buffers(ctx, func),
        dynamic_depth: 0,
    };
    tx.kernel_body(func)?;
    tx.b.seal_all_blocks();
    tx.b.finalize(tfc);
    Ok(function)
}

fn compile_error(kernel: &str, message: String) -> CodegenError {
    CodegenError::Compile { function: kernel.to_string(), message }
}

/// Most terms a subscript's linear form keeps before it is treated as one opaque value.
const MAX_TERMS: usize = 8;

/// A scalar element as the translator sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Num {
    F32,
    F16,
    BF16,
    Int { bits: u8, signed: bool },
    Bool,
}

impl Num {
    const INDEX: Num = Num::Int { bits: 64, signed: true };

    fn of(e: ElemType) -> Num {
        match e {
            ElemType::F32 => Num::F32,
            ElemType::F16 => Num::F16,
            ElemType::BF16 => Num::BF16,
            ElemType::I8 | ElemType::QS8(_) => Num::Int { bits: 8, signed: true },
            ElemType::U8 | ElemType::QU8(..) => Num::Int { bits: 8, signed: false },
            ElemType::I16 => Num::Int { bits: 16, signed: true },
            ElemType::U16 => Num::Int { bits: 16, signed: false },
            ElemType::I32 | ElemType::QS32(_) => Num::Int { bits: 32, signed: true },
            ElemType::I64 => Num::Int { bits: 64, signed: true },
            ElemType::Bool => Num::Bool,
        }
    }

    /// The Cranelift type of one element in a register.
    fn lane_type(self) -> Type {
        match self {
            Num::F32 => types::F32,
            Num::F16 | Num::BF16 => types::I16,
            Num::Bool => types::I8,
            Num::Int { bits: 8, .. } => types::I8,
            Num::Int { bits: 16, .. } => types::I16,
            Num::Int { bits: 32, .. } => types::I32,
            Num::Int { .. } => types::I64,
        }
    }

    fn is_float(self) -> bool {
        matches!(self, Num::F32 | Num::F16 | Num::BF16)
    }

    fn signed(self) -> bool {
        match self {
            Num::Int { signed, .. } => signed,
            Num::Bool => false,
            _ => true,
        }
    }

    fn bits(self) -> u8 {
        match self {
            Num::F32 => 32,
            Num::F16 | Num::BF16 => 16,
            Num::Bool => 8,
            Num::Int { bits, .. } => bits,
        }
    }

    /// The value range of an integer or bool.
    fn range(self) -> (i128, i128) {
        match self {
            Num::Bool => (0, 1),
            Num::Int { bits, signed: true } => (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1),
            Num::Int { bits, signed: false } => (0, (1i128 << bits) - 1),
            _ => (i128::MIN, i128::MAX),
        }
    }
}

/// The kind of a register value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Index,
    Scalar(Num),
    Vector(Num, u32),
}

impl Kind {
    fn num(self) -> Num {
        match self {
            Kind::Index => Num::INDEX,
            Kind::Scalar(n) | Kind::Vector(n, _) => n,
        }
    }

    fn cl_type(self) -> Option<Type> {
        match self {
            Kind::Index => Some(types::I64),
            Kind::Scalar(n) => Some(n.lane_type()),
            Kind::Vector(n, lanes) => n.lane_type().by(lanes),
        }
    }
}

/// `Σ k·v + c` over Cranelift values: how subscripts are split into a dynamic part and a
/// constant part.
#[derive(Clone, Debug, Default)]
struct Lin {
    terms: Vec<(Value, i64)>,
    c: i64,
}

impl Lin {
    fn constant(c: i64) -> Lin {
        Lin { terms: Vec::new(), c }
    }

    fn term(v: Value) -> Lin {
        Lin { terms: vec![(v, 1)], c: 0 }
    }

    fn as_const(&self) -> Option<i64> {
        self.terms.is_empty().then_some(self.c)
    }

    /// `self + k·o`, or `None` on overflow or when the form grows too long.
    fn add_scaled(&self, o: &Lin, k: i64) -> Option<Lin> {
        let mut r = self.clone();
        r.c = r.c.checked_add(o.c.checked_mul(k)?)?;
        for &(v, a) in &o.terms {
            let a = a.checked_mul(k)?;
            match r.terms.iter_mut().find(|t| t.0 == v) {
                Some(t) => t.1 = t.1.checked_add(a)?,
                None => r.terms.push((v, a)),
            }
        }
        r.terms.retain(|t| t.1 != 0);
        (r.terms.len() <= MAX_TERMS).then_some(r)
    }
}

/// A buffer argument: its base address, element and byte strides.
#[derive(Clone, Debug)]
struct Buf {
    base: Value,
    elem: Num,
    strides: Vec<i64>,
}

struct Tx<'a, 'f, M: KernelModule + ?Sized> {
    ctx: &'a Context,
    module: &'a mut M,
    b: FunctionBuilder<'f>,
    kernel: &'a str,
    vals: HashMap<ValueId, Value>,
    lin: HashMap<ValueId, Lin>,
    bufs: HashMap<ValueId, Buf>,
    helpers: HashMap<Helper, FuncRef>,
    begin: Option<Value>,
    end: Option<Value>,
    /// Loop nesting depth (0 = the kernel's top level).
    depth: u32,
    parallel_seen: bool,
    /// Buffer arguments the kernel stores to; loads from the others are read-only.
    written: HashSet<ValueId>,
    /// Number of enclosing `loops.for` with bounds unknown at compile time.
    dynamic_depth: u32,
}

/// The buffer arguments `func` stores to.
fn stored_buffers(ctx: &Context, func: OpId) -> HashSet<ValueId> {
    ctx.walk(func)
        .into_iter()
        .filter(|&op| ctx.op_name(op) == "loops.store")
        .filter_map(|op| ctx.op(op).operands.get(1).copied())
        .collect()
}

fn float_cc(p: CmpPred) -> FloatCC {
    match p {
        CmpPred::Eq => FloatCC::Equal,
        CmpPred::Ne => FloatCC::NotEqual,
        CmpPred::Lt => FloatCC::LessThan,
        CmpPred::Le => FloatCC::LessThanOrEqual,
        CmpPred::Gt => FloatCC::GreaterThan,
        CmpPred::Ge => FloatCC::GreaterThanOrEqual,
    }
}

fn int_cc(p: CmpPred, signed: bool) -> IntCC {
    match (p, signed) {
        (CmpPred::Eq, _) => IntCC::Equal,
        (CmpPred::Ne, _) => IntCC::NotEqual,
        (CmpPred::Lt, true) => IntCC::SignedLessThan,
        (CmpPred::Le, true) => IntCC::SignedLessThanOrEqual,
        (CmpPred::Gt, true) => IntCC::SignedGreaterThan,
        (CmpPred::Ge, true) => IntCC::SignedGreaterThanOrEqual,
        (CmpPred::Lt, false) => IntCC::UnsignedLessThan,
        (CmpPred::Le, false) => IntCC::UnsignedLessThanOrEqual,
        (CmpPred::Gt, false) => IntCC::UnsignedGreaterThan,
        (CmpPred::Ge, false) => IntCC::UnsignedGreaterThanOrEqual,
    }
}

fn unary_helper(u: UnOp) -> Option<Helper> {
    Some(match u {
        UnOp::Exp => Helper::Exp,
        UnOp::Log => Helper::Log,
        UnOp::Tanh => Helper::Tanh,
        UnOp::Sin => Helper::Sin,
        UnOp::Cos => Helper::Cos,
        UnOp::Erf => Helper::Erf,
        _ => return None,
    })
}

fn block_args(v: &[Value]) -> Vec<BlockArg> {
    v.iter().map(|&x| BlockArg::Value(x)).collect()
}

impl<M: KernelModule + ?Sized> Tx<'_, '_, M> {
    // ---- errors and lookups ----------------------------------------------------------

    fn err(&self, op: OpId, msg: impl std::fmt::Display) -> CodegenError {
        let loc = self.ctx.op(op).loc;
        let at = if loc.line > 0 { format!(" (line {})", loc.line) } else { String::new() };
        compile_error(self.kernel, format!("`{}`{at}: {msg}", self.ctx.op_name(op)))
    }

    fn v(&self, op: OpId, x: ValueId) -> Result<Value> {
        self.vals.get(&x).copied().ok_or_else(|| self.err(op, "uses a value that is not defined in the kernel"))
    }

    fn vs(&self, op: OpId, xs: &[ValueId]) -> Result<Vec<Value>> {
        xs.iter().map(|&x| self.v(op, x)).collect()
    }

    fn kind(&self, op: OpId, x: ValueId) -> Result<Kind> {
        match self.ctx.ty(self.ctx.value_type(x)) {
            TypeData::Index => Ok(Kind::Index),
            TypeData::Scalar(e) => Ok(Kind::Scalar(Num::of(*e))),
            TypeData::Vector(v) => {
                let k = Kind::Vector(Num::of(v.elem), v.lanes);
                match k.cl_type() {
                    Some(t) if t.bits() == 128 => Ok(k),
                    _ => {
                        Err(self
                            .err(op, format!("vectors of {} x {} are not supported (128-bit only)", v.lanes, v.elem)))
                    }
                }
            }
            _ => Err(self.err(
                op,
                format!(
                    "a value of type {} is not an index, scalar or vector",
                    strata_ir::type_to_string(self.ctx, self.ctx.value_type(x))
                ),
            )),
        }
    }

    fn cl_type(&self, op: OpId, x: ValueId) -> Result<Type> {
        let k = self.kind(op, x)?;
        k.cl_type().ok_or_else(|| self.err(op, "unsupported vector type"))
    }

    fn operands<const N: usize>(&self, op: OpId) -> Result<[ValueId; N]> {
        <[ValueId; N]>::try_from(self.ctx.op(op).operands.as_slice())
            .map_err(|_| self.err(op, format!("expected {N} operands, found {}", self.ctx.op(op).operands.len())))
    }

    fn result(&self, op: OpId) -> Result<ValueId> {
        match self.ctx.op(op).results.as_slice() {
            [r] => Ok(*r),
            rs => Err(self.err(op, format!("expected one result, found {}", rs.len()))),
        }
    }

    fn str_attr(&self, op: OpId, key: &str) -> Result<&str> {
        match self.ctx.op_attr(op, key).map(|a| self.ctx.attr(a)) {
            Some(AttrData::Str(s)) => Ok(s.as_str()),
            _ => Err(self.err(op, format!("missing string attribute `{key}`"))),
        }
    }

    fn int_attr(&self, op: OpId, key: &str) -> Result<Option<i64>> {
        match self.ctx.op_attr(op, key).map(|a| self.ctx.attr(a)) {
            None => Ok(None),
            Some(AttrData::Int(i)) => Ok(Some(*i)),
            Some(_) => Err(self.err(op, format!("attribute `{key}` must be an integer"))),
        }
    }

    fn float_attr(&self, op: OpId, key: &str) -> Result<f64> {
        match self.ctx.op_attr(op, key).map(|a| self.ctx.attr(a)) {
            Some(AttrData::Float(f)) => Ok(f.get()),
            Some(AttrData::Int(i)) => Ok(*i as f64),
            _ => Err(self.err(op, format!("missing number attribute `{key}`"))),
        }
    }

    fn lane_attr(&self, op: OpId, lanes: u32) -> Result<u8> {
        let lane = self.int_attr(op, "lane")?.ok_or_else(|| self.err(op, "missing attribute `lane`"))?;
        match u8::try_from(lane) {
            Ok(l) if u32::from(l) < lanes => Ok(l),
            _ => Err(self.err(op, format!("lane {lane} is outside 0..{lanes}"))),
        }
    }

    /// Defines a non-index value (or an index without a known linear form).
    fn def(&mut self, x: ValueId, v: Value) {
        self.vals.insert(x, v);
        self.lin.remove(&x);
    }

    fn def_index(&mut self, x: ValueId, v: Value, lin: Option<Lin>) {
        self.vals.insert(x, v);
        match lin {
            Some(l) => self.lin.insert(x, l),
            None => self.lin.remove(&x),
        };
    }

    fn index_lin(&self, op: OpId, x: ValueId) -> Result<Lin> {
        match self.lin.get(&x) {
            Some(l) => Ok(l.clone()),
            None => Ok(Lin::term(self.v(op, x)?)),
        }
    }

    /// The integer value of `x` when it is a compile-time constant (index or integer scalar).
    fn const_int(&self, x: ValueId) -> Option<i64> {
        if let Some(c) = self.lin.get(&x).and_then(Lin::as_const) {
            return Some(c);
        }
        let op = self.ctx.defining_op(x)?;
        if self.ctx.op_name(op) != "loops.const" {
            return None;
        }
        let v = match self.ctx.attr(self.ctx.op_attr(op, "value")?) {
            AttrData::Float(f) => f.get(),
            AttrData::Int(i) => *i as f64,
            _ => return None,
        };
        (v.fract() == 0.0 && v.abs() < 9.0e18).then_some(v as i64)
    }

    /// The value of `x` when it is a float `loops.const` (scalar or splat vector).
    fn const_float(&self, x: ValueId) -> Option<f64> {
        let op = self.ctx.defining_op(x)?;
        if self.ctx.op_name(op) != "loops.const" {
            return None;
        }
        match self.ctx.attr(self.ctx.op_attr(op, "value")?) {
            AttrData::Float(f) => Some(f.get()),
            AttrData::Int(i) => Some(*i as f64),
            _ => None,
        }
    }

    /// `max` / `min` of an `f32x4` and a constant splat (`relu` is `max(x, 0)`) on x86-64, in
    /// two instructions instead of Cranelift's general NaN- and zero-sign-correct sequence of
    /// seven: `maxps(c, x)` (`c > x ? c : x`, which returns `x` when it is NaN) then `+ ±0.0`,
    /// which quiets a NaN (the reference gives `x + c`) and turns the `-0` that `maxps` returns
    /// for `max(-0, +0)` into `+0`; `x + (-0.0)` is `x` for everything else. `minps(c, x)` is
    /// exact for `c ≠ -0` likewise. `None` where this does not apply (aarch64 has native
    /// `fmax` / `fmin` with these semantics).
    fn const_minmax(&mut self, bop: BinOp, n: Num, a: ValueId, b: ValueId, va: Value, vb: Value) -> Option<Value> {
        if n != Num::F32 || !matches!(bop, BinOp::Max | BinOp::Min) || self.module.isa().name() != "x64" {
            return None;
        }
        let (c, cv, x) = match (self.const_float(a), self.const_float(b)) {
            (_, Some(c)) => (c as f32, vb, va),
            (Some(c), None) => (c as f32, va, vb),
            (None, None) => return None,
        };
        if c.is_nan() || (bop == BinOp::Min && c.to_bits() == (-0.0f32).to_bits()) {
            return None;
        }
        let ty = self.ty(x);
        // `fcmp lt x c` selecting `c` is `maxps(c, x)`; `fcmp lt c x` selecting `c` is `minps(c, x)`.
        let (lhs, rhs) = if bop == BinOp::Max { (x, cv) } else { (cv, x) };
        let lt = self.b.ins().fcmp(FloatCC::LessThan, lhs, rhs);
        let mask = self.bitcast(ty, lt);
        let r = self.b.ins().bitselect(mask, cv, x);
        let zero = if bop == BinOp::Max && c.to_bits() == 0 { 0.0 } else { -0.0 };
        let z = self.fconst(ty, zero);
        Some(self.b.ins().fadd(r, z))
    }

    fn ty(&self, v: Value) -> Type {
        self.b.func.dfg.value_type(v)
    }

    // ---- small builders ----------------------------------------------------------------

    fn iconst(&mut self, ty: Type, v: i64) -> Value {
        let lane = ty.lane_type();
        let masked = if lane.bits() >= 64 { v } else { (v as u64 & ((1u64 << lane.bits()) - 1)) as i64 };
        let s = self.b.ins().iconst(lane, masked);
        if ty.is_vector() { self.b.ins().splat(ty, s) } else { s }
    }

    fn fconst(&mut self, ty: Type, v: f32) -> Value {
        let s = self.b.ins().f32const(v);
        if ty.is_vector() { self.b.ins().splat(ty, s) } else { s }
    }

    fn bitcast(&mut self, ty: Type, v: Value) -> Value {
        if self.ty(v) == ty {
            return v;
        }
        self.b.ins().bitcast(ty, MemFlagsData::new(), v)
    }

    /// `select` for scalars, `bitselect` with a lane mask for vectors.
    fn choose(&mut self, cond: Value, a: Value, b: Value) -> Value {
        let ty = self.ty(a);
        if ty.is_vector() {
            let m = self.bitcast(ty, cond);
            self.b.ins().bitselect(m, a, b)
        } else {
            self.b.ins().select(cond, a, b)
        }
    }

    fn call_helper(&mut self, op: OpId, h: Helper, args: &[Value]) -> Result<Value> {
        let fref = match self.helpers.get(&h) {
            Some(&f) => f,
            None => {
                let id = self.module.declare_helper(h.name()).map_err(|e| self.err(op, e))?;
                let f = self.module.declare_func_in_func(id, self.b.func);
                self.helpers.insert(h, f);
                f
            }
        };
        let call = self.b.ins().call(fref, args);
        self.b
            .inst_results(call)
            .first()
            .copied()
            .ok_or_else(|| self.err(op, format!("helper `{}` returns nothing", h.name())))
    }

    /// Applies `f` to each lane of `inputs` (vectors of `lanes` lanes) and collects the results
    /// in a vector of `out_lane` lanes.
    fn per_lane(
        &mut self,
        op: OpId,
        lanes: u32,
        out_lane: Type,
        inputs: &[Value],
        mut f: impl FnMut(&mut Self, &[Value]) -> Result<Value>,
    ) -> Result<Value> {
        let out_ty = out_lane.by(lanes).ok_or_else(|| self.err(op, "unsupported vector shape"))?;
        let mut acc: Option<Value> = None;
        for l in 0..lanes {
            let l = l as u8;
            let xs: Vec<Value> = inputs.iter().map(|&v| self.b.ins().extractlane(v, l)).collect();
            let y = f(self, &xs)?;
            acc = Some(match acc {
                None => self.b.ins().splat(out_ty, y),
                Some(v) => self.b.ins().insertlane(v, y, l),
            });
        }
        acc.ok_or_else(|| self.err(op, "a vector without lanes"))
    }

    // ---- f16 / bf16 ----------------------------------------------------------------------

    /// `x` (an element of `n` in its register form) as an `f32`.
    fn widen_to_f32(&mut self, n: Num, x: Value) -> Value {
        match n {
            Num::F16 => self.f16_to_f32(x),
            Num::BF16 => {
                // NaN gets the quiet bit, as the `half` crate converts.
                let w = self.b.ins().uextend(types::I32, x);
                let mag = self.b.ins().band_imm_u(w, 0x7fff);
                let is_nan = self.b.ins().icmp_imm_u(IntCC::UnsignedGreaterThan, mag, 0x7f80);
                let quiet = self.b.ins().bor_imm_u(w, 0x40);
                let w = self.b.ins().select(is_nan, quiet, w);
                let s = self.b.ins().ishl_imm_u(w, 16);
                self.bitcast(types::F32, s)
            }
            _ => x,
        }
    }

    /// An `f32` rounded (to nearest, ties to even) to an element of `n`.
    fn narrow_from_f32(&mut self, n: Num, f: Value) -> Value {
        match n {
            Num::F16 => self.f32_to_f16(f),
            Num::BF16 => self.f32_to_bf16(f),
            _ => f,
        }
    }

    /// Exact binary16 → binary32, including subnormals and infinities; NaN is quieted with its
    /// payload kept, as the `half` crate converts.
    fn f16_to_f32(&mut self, h: Value) -> Value {
        let h = self.b.ins().uextend(types::I32, h);
        let em = self.b.ins().band_imm_u(h, 0x7fff);
        let sign = self.b.ins().band_imm_u(h, 0x8000);
        let sign = self.b.ins().ishl_imm_u(sign, 16);
        let shifted = self.b.ins().ishl_imm_u(em, 13);
        // Normal and subnormal halves: reinterpret with the f32 bias and rescale by 2^112 (exact).
        let as_f = self.bitcast(types::F32, shifted);
        let scale = self.b.ins().f32const(f32::from_bits(0x7780_0000)); // 2^112
        let mag = self.b.ins().fmul(as_f, scale);
        let mag = self.bitcast(types::I32, mag);
        // Infinity keeps its all-ones exponent; NaN also gets the quiet bit (payload kept).
        let inf = self.b.ins().bor_imm_u(shifted, 0x7f80_0000);
        let nan = self.b.ins().bor_imm_u(shifted, 0x7fc0_0000);
        let is_inf = self.b.ins().icmp_imm_u(IntCC::Equal, em, 0x7c00);
        let is_nan = self.b.ins().icmp_imm_u(IntCC::UnsignedGreaterThan, em, 0x7c00);
        let bits = self.b.ins().select(is_inf, inf, mag);
        let bits = self.b.ins().select(is_nan, nan, bits);
        let bits = self.b.ins().bor(bits, sign);
        self.bitcast(types::F32, bits)
    }

    /// binary32 → binary16, round to nearest even; NaN stays NaN (quieted, top payload bits and
    /// sign kept), as the `half` crate converts.
    fn f32_to_f16(&mut self, f: Value) -> Value {
        let x = self.bitcast(types::I32, f);
        let sign = self.b.ins().band_imm_u(x, 0x8000_0000);
        let a = self.b.ins().bxor(x, sign);
        // Overflow, infinity, NaN.
        let is_nan = self.b.ins().icmp_imm_u(IntCC::UnsignedGreaterThan, a, 0x7f80_0000);
        let payload = self.b.ins().band_imm_u(a, 0x007f_ffff);
        let payload = self.b.ins().ushr_imm_u(payload, 13);
        let qnan = self.b.ins().bor_imm_u(payload, 0x7e00);
        let inf = self.iconst(types::I32, 0x7c00);
        let big = self.b.ins().select(is_nan, qnan, inf);
        // Subnormal or zero: let an f32 addition round the mantissa into place.
        let af = self.bitcast(types::F32, a);
        let magic = self.b.ins().f32const(0.5); // ((127 - 15) + (23 - 10) + 1) << 23
        let sum = self.b.ins().fadd(af, magic);
        let sum = self.bitcast(types::I32, sum);
        let small = self.b.ins().iadd_imm_s(sum, -0x3f00_0000);
        // Normal: rebias and round to nearest even.
        let odd = self.b.ins().ushr_imm_u(a, 13);
        let odd = self.b.ins().band_imm_u(odd, 1);
        let n = self.b.ins().iadd_imm_s(a, ((15 - 127) << 23) + 0xfff);
        let n = self.b.ins().iadd(n, odd);
        let normal = self.b.ins().ushr_imm_u(n, 13);
        let is_big = self.b.ins().icmp_imm_u(IntCC::UnsignedGreaterThanOrEqual, a, (127 + 16) << 23);
        let is_small = self.b.ins().icmp_imm_u(IntCC::UnsignedLessThan, a, 113 << 23);
        let r = self.b.ins().select(is_small, small, normal);
        let r = self.b.ins().select(is_big, big, r);
        let s = self.b.ins().ushr_imm_u(sign, 16);
        let r = self.b.ins().bor(r, s);
        self.b.ins().ireduce(types::I16, r)
    }

    /// binary32 → bfloat16, round to nearest even; NaN stays NaN (quieted).
    fn f32_to_bf16(&mut self, f: Value) -> Value {
        let x = self.bitcast(types::I32, f);
        let hi = self.b.ins().ushr_imm_u(x, 16);
        let lsb = self.b.ins().band_imm_u(hi, 1);
        let r = self.b.ins().iadd_imm_s(x, 0x7fff);
        let r = self.b.ins().iadd(r, lsb);
        let r = self.b.ins().ushr_imm_u(r, 16);
        let nan = self.b.ins().bor_imm_u(hi, 0x40);
        let is_nan = self.b.ins().fcmp(FloatCC::Unordered, f, f);
        let r = self.b.ins().select(is_nan, nan, r);
        self.b.ins().ireduce(types::I16, r)
    }

    // ---- arithmetic ------------------------------------------------------------------------

    /// Float binary op on `f32` or `f32x4` values.
    fn float_binary(&mut self, op: OpId, bop: BinOp, a: Value, b: Value) -> Result<Value> {
        let ins = self.b.ins();
        Ok(match bop {
            BinOp::Add => ins.fadd(a, b),
            BinOp::Sub => ins.fsub(a, b),
            BinOp::Mul => ins.fmul(a, b),
            BinOp::Div => ins.fdiv(a, b),
            BinOp::Min => ins.fmin(a, b),
            BinOp::Max => ins.fmax(a, b),
            BinOp::Pow => {
                let ty = self.ty(a);
                if ty.is_vector() {
                    return self.per_lane(op, ty.lane_count(), types::F32, &[a, b], |tx, xs| {
                        tx.call_helper(op, Helper::Pow, xs)
                    });
                }
                return self.call_helper(op, Helper::Pow, &[a, b]);
            }
            BinOp::Rem | BinOp::And | BinOp::Or | BinOp::Xor => {
                return Err(self.err(op, format!("`{}` needs integers", bop.name())));
            }
        })
    }

    /// Integer division or remainder that never traps.
    fn int_divrem(&mut self, div: bool, signed: bool, a: Value, b: Value, known: Option<i64>) -> Value {
        let safe = known.is_some_and(|c| c != 0 && !(signed && c == -1));
        if safe {
            let ins = self.b.ins();
            return match (div, signed) {
                (true, true) => ins.sdiv(a, b),
                (true, false) => ins.udiv(a, b),
                (false, true) => ins.srem(a, b),
                (false, false) => ins.urem(a, b),
            };
        }
        let ty = self.ty(a);
        let one = self.iconst(ty, 1);
        let zero = self.b.ins().icmp_imm_s(IntCC::Equal, b, 0);
        if signed {
            let m1 = self.b.ins().icmp_imm_s(IntCC::Equal, b, -1);
            let bad = self.b.ins().bor(zero, m1);
            let sb = self.b.ins().select(bad, one, b);
            if div {
                let q = self.b.ins().sdiv(a, sb);
                let neg = self.b.ins().ineg(a);
                self.b.ins().select(m1, neg, q)
            } else {
                self.b.ins().srem(a, sb)
            }
        } else {
            let sb = self.b.ins().select(zero, one, b);
            if div { self.b.ins().udiv(a, sb) } else { self.b.ins().urem(a, sb) }
        }
    }

    /// Integer (or bool, or index) binary op on scalars.
    fn int_binary(&mut self, op: OpId, bop: BinOp, n: Num, a: Value, b: Value, known: Option<i64>) -> Result<Value> {
        let signed = n.signed();
        let ins = self.b.ins();
        let r = match bop {
            BinOp::Add => ins.iadd(a, b),
            BinOp::Sub => ins.isub(a, b),
            BinOp::Mul => ins.imul(a, b),
            BinOp::And => return Ok(ins.band(a, b)),
            BinOp::Or => return Ok(ins.bor(a, b)),
            BinOp::Xor => return Ok(ins.bxor(a, b)),
            BinOp::Min if signed => return Ok(ins.smin(a, b)),
            BinOp::Min => return Ok(ins.umin(a, b)),
            BinOp::Max if signed => return Ok(ins.smax(a, b)),
            BinOp::Max => return Ok(ins.umax(a, b)),
            BinOp::Div | BinOp::Rem => self.int_divrem(bop == BinOp::Div, signed, a, b, known),
            BinOp::Pow => return Err(self.err(op, "`pow` needs floats")),
        };
        if n == Num::Bool {
            // Bool arithmetic is modulo 2.
            return Ok(self.b.ins().band_imm_u(r, 1));
        }
        Ok(r)
    }

    fn scalar_binary(&mut self, op: OpId, bop: BinOp, n: Num, a: Value, b: Value, known: Option<i64>) -> Result<Value> {
        match n {
            Num::F32 => self.float_binary(op, bop, a, b),
            Num::F16 | Num::BF16 => {
                let (a, b) = (self.widen_to_f32(n, a), self.widen_to_f32(n, b));
                let r = self.float_binary(op, bop, a, b)?;
                Ok(self.narrow_from_f32(n, r))
            }
            Num::Int { .. } | Num::Bool => self.int_binary(op, bop, n, a, b, known),
        }
    }

    /// `i8x16` multiplication (no x86 instruction): widen, multiply, keep the low bytes.
    fn mul_i8x16(&mut self, a: Value, b: Value) -> Value {
        let ins = self.b.ins();
        let (alo, ahi) = (ins.swiden_low(a), self.b.ins().swiden_high(a));
        let (blo, bhi) = (self.b.ins().swiden_low(b), self.b.ins().swiden_high(b));
        let lo = self.b.ins().imul(alo, blo);
        let hi = self.b.ins().imul(ahi, bhi);
        let mask = self.iconst(types::I16X8, 0xff);
        let lo = self.b.ins().band(lo, mask);
        let hi = self.b.ins().band(hi, mask);
        self.b.ins().unarrow(lo, hi)
    }

    fn vector_binary(&mut self, op: OpId, bop: BinOp, n: Num, lanes: u32, a: Value, b: Value) -> Result<Value> {
        match n {
            Num::F32 => self.float_binary(op, bop, a, b),
            Num::F16 | Num::BF16 => self
                .per_lane(op, lanes, n.lane_type(), &[a, b], |tx, xs| tx.scalar_binary(op, bop, n, xs[0], xs[1], None)),
            Num::Int { .. } | Num::Bool => {
                let signed = n.signed();
                let ins = self.b.ins();
                Ok(match bop {
                    BinOp::Add => ins.iadd(a, b),
                    BinOp::Sub => ins.isub(a, b),
                    BinOp::Mul if n.bits() == 8 => self.mul_i8x16(a, b),
                    BinOp::Mul => ins.imul(a, b),
                    BinOp::And => ins.band(a, b),
                    BinOp::Or => ins.bor(a, b),
                    BinOp::Xor => ins.bxor(a, b),
                    BinOp::Min if signed => ins.smin(a, b),
                    BinOp::Min => ins.umin(a, b),
                    BinOp::Max if signed => ins.smax(a, b),
                    BinOp::Max => ins.umax(a, b),
                    BinOp::Div | BinOp::Rem => {
                        return self.per_lane(op, lanes, n.lane_type(), &[a, b], |tx, xs| {
                            tx.int_binary(op, bop, n, xs[0], xs[1], None)
                        });
                    }
                    BinOp::Pow => return Err(self.err(op, "`pow` needs floats")),
                })
            }
        }
    }

    /// Round half away from zero on `f32` or `f32x4`: `t = trunc(x)`, plus `±1` when
    /// `|x - t| >= 0.5` (the difference is exact).
    fn round_half_away(&mut self, x: Value) -> Value {
        let ty = self.ty(x);
        let t = self.b.ins().trunc(x);
        let d = self.b.ins().fsub(x, t);
        let ad = self.b.ins().fabs(d);
        let half = self.fconst(ty, 0.5);
        let ge = self.b.ins().fcmp(FloatCC::GreaterThanOrEqual, ad, half);
        let one = if ty.is_vector() {
            let ity = types::I32X4;
            let bits = self.bitcast(ity, x);
            let sign_mask = self.iconst(ity, 0x8000_0000u32 as i64);
            let sign = self.b.ins().band(bits, sign_mask);
            let one_bits = self.iconst(ity, 0x3f80_0000);
            let one = self.b.ins().bor(sign, one_bits);
            self.bitcast(ty, one)
        } else {
            let one = self.fconst(ty, 1.0);
            self.b.ins().fcopysign(one, x)
        };
        let up = self.b.ins().fadd(t, one);
        self.choose(ge, up, t)
    }

    /// Float unary op on `f32` or `f32x4`.
    fn float_unary(&mut self, op: OpId, u: UnOp, x: Value) -> Result<Value> {
        let ins = self.b.ins();
        Ok(match u {
            UnOp::Neg => ins.fneg(x),
            UnOp::Abs => ins.fabs(x),
            UnOp::Sqrt => ins.sqrt(x),
            UnOp::Floor => ins.floor(x),
            UnOp::Ceil => ins.ceil(x),
            UnOp::Round => self.round_half_away(x),
            UnOp::Not => return Err(self.err(op, "`not` needs integers")),
            _ => {
                let h = unary_helper(u).ok_or_else(|| self.err(op, format!("unsupported unary op `{}`", u.name())))?;
                let ty = self.ty(x);
                if ty.is_vector() {
                    return self.per_lane(op, ty.lane_count(), types::F32, &[x], |tx, xs| tx.call_helper(op, h, xs));
                }
                return self.call_helper(op, h, &[x]);
            }
        })
    }

    /// Integer unary op on scalars or vectors.
    fn int_unary(&mut self, op: OpId, u: UnOp, n: Num, x: Value) -> Result<Value> {
        Ok(match u {
            UnOp::Neg if n == Num::Bool => x,
            UnOp::Neg => self.b.ins().ineg(x),
            UnOp::Abs if n.signed() => self.b.ins().iabs(x),
            UnOp::Abs => x,
            UnOp::Not if n == Num::Bool => {
                let one = self.iconst(self.ty(x), 1);
                self.b.ins().bxor(x, one)
            }
            UnOp::Not => self.b.ins().bnot(x),
            _ => return Err(self.err(op, format!("`{}` needs floats", u.name()))),
        })
    }

    fn scalar_unary(&mut self, op: OpId, u: UnOp, n: Num, x: Value) -> Result<Value> {
        match n {
            Num::F32 => self.float_unary(op, u, x),
            Num::F16 | Num::BF16 => {
                let f = self.widen_to_f32(n, x);
                let r = self.float_unary(op, u, f)?;
                Ok(self.narrow_from_f32(n, r))
            }
            Num::Int { .. } | Num::Bool => self.int_unary(op, u, n, x),
        }
    }

    fn scalar_fma(&mut self, n: Num, a: Value, b: Value, c: Value) -> Value {
        let (a, b, c) = (self.widen_to_f32(n, a), self.widen_to_f32(n, b), self.widen_to_f32(n, c));
        let r = self.b.ins().fma(a, b, c);
        self.narrow_from_f32(n, r)
    }

    /// A scalar comparison giving a bool (`i8` 0/1).
    fn scalar_cmp(&mut self, p: CmpPred, n: Num, a: Value, b: Value) -> Value {
        if n.is_float() {
            let (a, b) = (self.widen_to_f32(n, a), self.widen_to_f32(n, b));
            self.b.ins().fcmp(float_cc(p), a, b)
        } else {
            self.b.ins().icmp(int_cc(p, n.signed()), a, b)
        }
    }

    // ---- casts -----------------------------------------------------------------------------

    fn clamp(&mut self, x: Value, ty: Type, lo: Option<i128>, hi: Option<i128>) -> Value {
        let mut x = x;
        if let Some(lo) = lo {
            let c = self.iconst(ty, lo as i64);
            x = self.b.ins().smax(x, c);
        }
        if let Some(hi) = hi {
            let c = self.iconst(ty, hi as i64);
            x = self.b.ins().smin(x, c);
        }
        x
    }

    /// Converts a scalar between element types: floats round to nearest, float → integer
    /// truncates toward zero and saturates (NaN → 0), integer → narrower integer saturates,
    /// anything → bool is `!= 0`.
    fn scalar_cast(&mut self, from: Num, to: Num, x: Value) -> Value {
        if from == to {
            return x;
        }
        if to == Num::Bool {
            if from.is_float() {
                let f = self.widen_to_f32(from, x);
                let z = self.b.ins().f32const(0.0);
                return self.b.ins().fcmp(FloatCC::NotEqual, f, z);
            }
            return self.b.ins().icmp_imm_s(IntCC::NotEqual, x, 0);
        }
        match (from.is_float(), to.is_float()) {
            (true, true) => {
                let f = self.widen_to_f32(from, x);
                self.narrow_from_f32(to, f)
            }
            (true, false) => {
                let f = self.widen_to_f32(from, x);
                let (bits, signed) = (to.bits(), to.signed());
                match (bits, signed) {
                    (64, true) => self.b.ins().fcvt_to_sint_sat(types::I64, f),
                    (64, false) => self.b.ins().fcvt_to_uint_sat(types::I64, f),
                    (32, true) => self.b.ins().fcvt_to_sint_sat(types::I32, f),
                    (32, false) => self.b.ins().fcvt_to_uint_sat(types::I32, f),
                    _ => {
                        let i = self.b.ins().fcvt_to_sint_sat(types::I32, f);
                        let (lo, hi) = to.range();
                        let i = self.clamp(i, types::I32, Some(lo), Some(hi));
                        self.b.ins().ireduce(to.lane_type(), i)
                    }
                }
            }
            (false, true) => {
                let (bits, signed) = (from.bits(), from.signed());
                let f = if bits >= 32 {
                    if signed {
                        self.b.ins().fcvt_from_sint(types::F32, x)
                    } else {
                        self.b.ins().fcvt_from_uint(types::F32, x)
                    }
                } else {
                    let w =
                        if signed { self.b.ins().sextend(types::I32, x) } else { self.b.ins().uextend(types::I32, x) };
                    self.b.ins().fcvt_from_sint(types::F32, w)
                };
                self.narrow_from_f32(to, f)
            }
            (false, false) => {
                let (flo, fhi) = from.range();
                let (lo, hi) = to.range();
                let lo = (flo < lo).then_some(lo);
                let hi = (fhi > hi).then_some(hi);
                let (fb, tb) = (from.bits(), to.bits());
                let to_ty = to.lane_type();
                if lo.is_none() && hi.is_none() {
                    return match fb.cmp(&tb) {
                        std::cmp::Ordering::Equal => x,
                        std::cmp::Ordering::Less if from.signed() => self.b.ins().sextend(to_ty, x),
                        std::cmp::Ordering::Less => self.b.ins().uextend(to_ty, x),
                        std::cmp::Ordering::Greater => self.b.ins().ireduce(to_ty, x),
                    };
                }
                let w = if fb == 64 {
                    x
                } else if from.signed() {
                    self.b.ins().sextend(types::I64, x)
                } else {
                    self.b.ins().uextend(types::I64, x)
                };
                let w = self.clamp(w, types::I64, lo, hi);
                if tb == 64 { w } else { self.b.ins().ireduce(to_ty, w) }
            }
        }
    }

    fn vector_cast(&mut self, op: OpId, from: Num, to: Num, lanes: u32, x: Value) -> Result<Value> {
        if from == to {
            return Ok(x);
        }
        let ty = self.ty(x);
        match (from, to) {
            (Num::F32, Num::Int { bits: 32, signed: true }) => Ok(self.b.ins().fcvt_to_sint_sat(types::I32X4, x)),
            (Num::Int { bits: 32, signed: true }, Num::F32) => Ok(self.b.ins().fcvt_from_sint(types::F32X4, x)),
            (Num::Int { bits: a, signed: true }, Num::Int { bits: b, signed: false }) if a == b && a <= 32 => {
                let zero = self.iconst(ty, 0);
                Ok(self.b.ins().smax(x, zero))
            }
            (Num::Int { bits: a, signed: false }, Num::Int { bits: b, signed: true }) if a == b && a <= 32 => {
                let max = self.iconst(ty, (1i64 << (a - 1)) - 1);
                Ok(self.b.ins().umin(x, max))
            }
            _ => self.per_lane(op, lanes, to.lane_type(), &[x], |tx, xs| Ok(tx.scalar_cast(from, to, xs[0]))),
        }
    }

    fn constant(&mut self, op: OpId, k: Kind, v: f64) -> Result<Value> {
        let n = k.num();
        let s = match n {
            Num::F32 => self.b.ins().f32const(v as f32),
            Num::F16 => self.iconst(types::I16, i64::from(half::f16::from_f64(v).to_bits())),
            Num::BF16 => self.iconst(types::I16, i64::from(half::bf16::from_f64(v).to_bits())),
            Num::Bool => self.iconst(types::I8, i64::from(v != 0.0)),
            Num::Int { .. } => {
                let (lo, hi) = n.range();
                let t = v.trunc();
                let c = if t.is_nan() { 0 } else { (t.max(lo as f64).min(hi as f64) as i128).clamp(lo, hi) };
                self.iconst(n.lane_type(), c as i64)
            }
        };
        self.splat_if_vector(op, k, s)
    }

    fn splat_if_vector(&mut self, op: OpId, k: Kind, s: Value) -> Result<Value> {
        match k {
            Kind::Vector(..) => {
                let ty = k.cl_type().ok_or_else(|| self.err(op, "unsupported vector type"))?;
                Ok(self.b.ins().splat(ty, s))
            }
            _ => Ok(s),
        }
    }

    // ---- memory ----------------------------------------------------------------------------

    /// The address register and constant byte offset of `buf[idx]`.
    fn address(&mut self, op: OpId, buf: ValueId, idx: &[ValueId]) -> Result<(Value, i32, Num)> {
        let info = self
            .bufs
            .get(&buf)
            .cloned()
            .ok_or_else(|| self.err(op, "accesses a value that is not a buffer argument of the kernel"))?;
        if idx.len() != info.strides.len() {
            return Err(self.err(op, format!("{} subscripts for a buffer of rank {}", idx.len(), info.strides.len())));
        }
        let mut total = Lin::default();
        for (&x, &stride) in idx.iter().zip(&info.strides) {
            if self.kind(op, x)? != Kind::Index {
                return Err(self.err(op, "subscripts must be indices"));
            }
            let l = self.index_lin(op, x)?;
            total = match total.add_scaled(&l, stride) {
                Some(t) => t,
                None => {
                    // Too long or overflowing: treat this subscript as opaque.
                    let v = self.v(op, x)?;
                    total
                        .add_scaled(&Lin::term(v), stride)
                        .ok_or_else(|| self.err(op, "address arithmetic overflows"))?
                }
            };
        }
        let mut terms = total.terms;
        terms.sort_by_key(|t| t.0.index());
        let mut dynamic: Option<Value> = None;
        for (v, k) in terms {
            let t = if k == 1 {
                v
            } else {
                let kc = self.iconst(types::I64, k);
                self.b.ins().imul(v, kc)
            };
            dynamic = Some(match dynamic {
                None => t,
                Some(d) => self.b.ins().iadd(d, t),
            });
        }
        let mut addr = match dynamic {
            Some(d) => self.b.ins().iadd(info.base, d),
            None => info.base,
        };
        let off = match i32::try_from(total.c) {
            Ok(o) => o,
            Err(_) => {
                let c = self.iconst(types::I64, total.c);
                addr = self.b.ins().iadd(addr, c);
                0
            }
        };
        Ok((addr, off, info.elem))
    }

    /// Flags of a load from `buf`: never trapping, not assumed aligned. Loads from buffers the
    /// kernel never stores to are also read-only, and outside loops with unknown bounds they may
    /// move (the mid-end then schedules them next to their uses and hoists invariant ones).
    fn load_flags(&self, buf: ValueId) -> MemFlagsData {
        let flags = MemFlagsData::new().with_notrap();
        if self.written.contains(&buf) {
            flags
        } else if self.dynamic_depth > 0 {
            flags.with_readonly()
        } else {
            flags.with_readonly().with_can_move()
        }
    }

    /// Flags of a store: never trapping, not assumed aligned.
    fn store_flags() -> MemFlagsData {
        MemFlagsData::new().with_notrap()
    }

    // ---- structure -------------------------------------------------------------------------

    fn kernel_body(&mut self, func: OpId) -> Result<()> {
        let ctx = self.ctx;
        let Some(body) = ctx.body(func, 0) else {
            return Err(self.err(func, "a kernel needs a body"));
        };
        if let Some(AttrData::Type(t)) = ctx.op_attr(func, "function_type").map(|a| ctx.attr(a))
            && ctx.ty(*t).as_func().is_some_and(|f| !f.results.is_empty())
        {
            return Err(self.err(func, "a kernel returns nothing (it writes its output buffers)"));
        }
        let entry = self.b.create_block();
        self.b.append_block_params_for_function_params(entry);
        self.b.switch_to_block(entry);
        let params = self.b.block_params(entry).to_vec();
        let [args_ptr, begin, end] = params[..] else {
            return Err(self.err(func, "unexpected kernel signature"));
        };
        self.begin = Some(begin);
        self.end = Some(end);
        for (i, &arg) in ctx.block(body).args.iter().enumerate() {
            let TypeData::Buffer(bt) = ctx.ty(ctx.value_type(arg)) else {
                return Err(self.err(func, format!("argument #{i} is not a buffer")));
            };
            let elem = Num::of(bt.elem);
            let size = bt.elem.size_bytes() as i64;
            let strides: Vec<i64> = match &bt.strides {
                Some(s) if s.len() == bt.shape.len() => s.clone(),
                Some(_) => return Err(self.err(func, format!("argument #{i}: strides do not match the rank"))),
                None => {
                    let mut st = vec![0i64; bt.shape.len()];
                    let mut acc = 1i64;
                    for d in (0..bt.shape.len()).rev() {
                        st[d] = acc;
                        if d > 0 {
                            let n = match bt.shape[d] {
                                Dim::Fixed(n) => i64::try_from(n).ok(),
                                Dim::Sym(_) => None,
                            };
                            acc = n.and_then(|n| acc.checked_mul(n)).ok_or_else(|| {
                                self.err(func, format!("argument #{i}: row-major strides need fixed inner dimensions"))
                            })?;
                        }
                    }
                    st
                }
            };
            let strides = strides
                .iter()
                .map(|&s| s.checked_mul(size))
                .collect::<Option<Vec<i64>>>()
                .ok_or_else(|| self.err(func, format!("argument #{i}: strides overflow")))?;
            let offset = i32::try_from(i * 8).map_err(|_| self.err(func, "too many arguments"))?;
            let base = self.b.ins().load(types::I64, MemFlagsData::trusted().with_readonly(), args_ptr, offset);
            self.bufs.insert(arg, Buf { base, elem, strides });
            self.vals.insert(arg, base);
        }
        let mut returned = false;
        for &op in &ctx.block(body).ops {
            if returned {
                return Err(self.err(op, "follows the kernel's `func.return`"));
            }
            if ctx.op_name(op) == "func.return" {
                if !ctx.op(op).operands.is_empty() {
                    return Err(self.err(op, "a kernel returns nothing"));
                }
                self.b.ins().return_(&[]);
                returned = true;
            } else {
                self.op(op)?;
            }
        }
        if !returned {
            return Err(self.err(func, "the kernel body does not end with `func.return`"));
        }
        Ok(())
    }

    /// Translates the ops of a loop body once, with the index and carried values given; returns
    /// the yielded values.
    fn body_copy(&mut self, op: OpId, body: BlockId, index: (Value, Lin), carried: &[Value]) -> Result<Vec<Value>> {
        let ctx = self.ctx;
        let args = &ctx.block(body).args;
        if args.len() != 1 + carried.len() {
            return Err(
                self.err(op, format!("the body takes {} arguments, expected {}", args.len(), 1 + carried.len()))
            );
        }
        self.def_index(args[0], index.0, Some(index.1));
        for (&a, &v) in args[1..].iter().zip(carried) {
            self.def(a, v);
        }
        let ops = &ctx.block(body).ops;
        for (i, &o) in ops.iter().enumerate() {
            if ctx.op_name(o) == "loops.yield" {
                if i + 1 != ops.len() {
                    return Err(self.err(o, "must be the last op of the loop body"));
                }
                let ys = self.vs(o, &ctx.op(o).operands)?;
                if ys.len() != carried.len() {
                    return Err(self.err(o, format!("yields {} values, the loop carries {}", ys.len(), carried.len())));
                }
                return Ok(ys);
            }
            self.op(o)?;
        }
        Err(self.err(op, "the loop body does not end with `loops.yield`"))
    }

    /// `for i in (lb..ub).step_by(step)` with unknown bounds: a guarded, rotated loop.
    fn dynamic_loop(
        &mut self,
        op: OpId,
        body: BlockId,
        bounds: (Value, Value, Value),
        inits: &[Value],
        tys: &[Type],
    ) -> Result<Vec<Value>> {
        let (lb, ub, step) = bounds;
        let header = self.b.create_block();
        let exit = self.b.create_block();
        let i = self.b.append_block_param(header, types::I64);
        let carried: Vec<Value> = tys.iter().map(|&t| self.b.append_block_param(header, t)).collect();
        let outs: Vec<Value> = tys.iter().map(|&t| self.b.append_block_param(exit, t)).collect();
        let go = self.b.ins().icmp(IntCC::SignedLessThan, lb, ub);
        let mut first = vec![BlockArg::Value(lb)];
        first.extend(block_args(inits));
        self.b.ins().brif(go, header, &first, exit, &block_args(inits));

        self.b.switch_to_block(header);
        self.depth += 1;
        let ys = self.body_copy(op, body, (i, Lin::term(i)), &carried)?;
        self.depth -= 1;
        let next = self.b.ins().iadd(i, step);
        let more = self.b.ins().icmp(IntCC::SignedLessThan, next, ub);
        let mut again = vec![BlockArg::Value(next)];
        again.extend(block_args(&ys));
        self.b.ins().brif(more, header, &again, exit, &block_args(&ys));

        self.b.switch_to_block(exit);
        Ok(outs)
    }

    /// A loop with constant bounds and trip count `trip >= 1`, unrolled `unroll` times.
    #[allow(clippy::too_many_arguments)]
    fn const_loop(
        &mut self,
        op: OpId,
        body: BlockId,
        lb: i64,
        step: i64,
        trip: i64,
        unroll: i64,
        inits: &[Value],
        tys: &[Type],
    ) -> Result<Vec<Value>> {
        let u = unroll.clamp(1, trip);
        let main = trip / u;
        let rem = trip % u;
        let at = |k: i64| k.checked_mul(step).and_then(|o| lb.checked_add(o));
        let mut carried = inits.to_vec();
        self.depth += 1;
        if main <= 1 {
            for k in 0..trip {
                let c = at(k).ok_or_else(|| self.err(op, "loop bounds overflow"))?;
                let iv = self.iconst(types::I64, c);
                carried = self.body_copy(op, body, (iv, Lin::constant(c)), &carried)?;
            }
            self.depth -= 1;
            return Ok(carried);
        }
        let end_main = at(main * u).ok_or_else(|| self.err(op, "loop bounds overflow"))?;
        let stride = u.checked_mul(step).ok_or_else(|| self.err(op, "loop bounds overflow"))?;
        at(trip).ok_or_else(|| self.err(op, "loop bounds overflow"))?;

        let header = self.b.create_block();
        let exit = self.b.create_block();
        let i = self.b.append_block_param(header, types::I64);
        let params: Vec<Value> = tys.iter().map(|&t| self.b.append_block_param(header, t)).collect();
        let outs: Vec<Value> = tys.iter().map(|&t| self.b.append_block_param(exit, t)).collect();
        let lbv = self.iconst(types::I64, lb);
        let mut first = vec![BlockArg::Value(lbv)];
        first.extend(block_args(&carried));
        self.b.ins().jump(header, &first);

        self.b.switch_to_block(header);
        let mut c = params;
        for j in 0..u {
            let off = j * step;
            let iv = if j == 0 { i } else { self.b.ins().iadd_imm_s(i, off) };
            let lin = Lin { terms: vec![(i, 1)], c: off };
            c = self.body_copy(op, body, (iv, lin), &c)?;
        }
        let next = self.b.ins().iadd_imm_s(i, stride);
        let more = self.b.ins().icmp_imm_s(IntCC::SignedLessThan, next, end_main);
        let mut again = vec![BlockArg::Value(next)];
        again.extend(block_args(&c));
        self.b.ins().brif(more, header, &again, exit, &block_args(&c));

        self.b.switch_to_block(exit);
        carried = outs;
        for k in 0..rem {
            let cst = end_main + k * step;
            let iv = self.iconst(types::I64, cst);
            carried = self.body_copy(op, body, (iv, Lin::constant(cst)), &carried)?;
        }
        self.depth -= 1;
        Ok(carried)
    }

    fn for_op(&mut self, op: OpId) -> Result<()> {
        let ctx = self.ctx;
        let data = ctx.op(op);
        if data.operands.len() < 3 {
            return Err(self.err(op, "needs lower bound, upper bound and step"));
        }
        let (lb, ub, step) = (data.operands[0], data.operands[1], data.operands[2]);
        for x in [lb, ub, step] {
            if self.kind(op, x)? != Kind::Index {
                return Err(self.err(op, "bounds must be indices"));
            }
        }
        let inits = self.vs(op, &data.operands[3..])?;
        if inits.len() != data.results.len() {
            return Err(self.err(op, "initial values and results differ in number"));
        }
        let tys: Vec<Type> = data.results.iter().map(|&r| self.cl_type(op, r)).collect::<Result<_>>()?;
        for (&v, &t) in inits.iter().zip(&tys) {
            if self.ty(v) != t {
                return Err(self.err(op, "an initial value and its result differ in type"));
            }
        }
        let body = ctx.body(op, 0).ok_or_else(|| self.err(op, "missing body"))?;
        let unroll = self.int_attr(op, "unroll")?.unwrap_or(1).max(1);
        let (l_lb, l_ub, l_st) = (self.index_lin(op, lb)?, self.index_lin(op, ub)?, self.index_lin(op, step)?);
        if let Some(s) = l_st.as_const()
            && s <= 0
        {
            return Err(self.err(op, format!("step must be positive, is {s}")));
        }
        let outs = match (l_lb.as_const(), l_ub.as_const(), l_st.as_const()) {
            (Some(l), Some(u), Some(s)) => {
                let trip = if u > l { (i128::from(u) - i128::from(l) + i128::from(s) - 1) / i128::from(s) } else { 0 };
                let trip = i64::try_from(trip).map_err(|_| self.err(op, "trip count overflows"))?;
                if trip == 0 { inits } else { self.const_loop(op, body, l, s, trip, unroll, &inits, &tys)? }
            }
            _ => {
                let bounds = (self.v(op, lb)?, self.v(op, ub)?, self.v(op, step)?);
                self.dynamic_depth += 1;
                let outs = self.dynamic_loop(op, body, bounds, &inits, &tys);
                self.dynamic_depth -= 1;
                outs?
            }
        };
        for (&r, &v) in data.results.iter().zip(&outs) {
            self.def(r, v);
        }
        Ok(())
    }

    fn parallel_op(&mut self, op: OpId) -> Result<()> {
        if self.depth > 0 {
            return Err(self.err(op, "must be at the top level of the kernel"));
        }
        if self.parallel_seen {
            return Err(self.err(op, "a kernel has at most one `loops.parallel`"));
        }
        self.parallel_seen = true;
        let [lb, ub] = self.operands::<2>(op)?;
        let (Some(l), Some(u)) = (self.index_lin(op, lb)?.as_const(), self.index_lin(op, ub)?.as_const()) else {
            return Err(self.err(op, "bounds must be constants"));
        };
        if !self.ctx.op(op).results.is_empty() {
            return Err(self.err(op, "a parallel loop carries no values"));
        }
        let body = self.ctx.body(op, 0).ok_or_else(|| self.err(op, "missing body"))?;
        let (Some(begin), Some(end)) = (self.begin, self.end) else {
            return Err(self.err(op, "outside a kernel"));
        };
        if u <= l {
            // No iteration for any range (and no load may be hoisted out of it).
            return Ok(());
        }
        let lv = self.iconst(types::I64, l);
        let uv = self.iconst(types::I64, u);
        let lo = self.b.ins().smax(begin, lv);
        let hi = self.b.ins().smin(end, uv);
        let one = self.iconst(types::I64, 1);
        self.dynamic_loop(op, body, (lo, hi, one), &[], &[])?;
        Ok(())
    }

    fn op(&mut self, op: OpId) -> Result<()> {
        let ctx = self.ctx;
        match ctx.op_name(op) {
            "loops.index_const" => {
                let r = self.result(op)?;
                let c = self.int_attr(op, "value")?.ok_or_else(|| self.err(op, "missing attribute `value`"))?;
                let v = self.iconst(types::I64, c);
                self.def_index(r, v, Some(Lin::constant(c)));
            }
            "loops.const" => {
                let r = self.result(op)?;
                let k = self.kind(op, r)?;
                if k == Kind::Index {
                    return Err(self.err(op, "index constants are `loops.index_const`"));
                }
                let v = match (k.num(), self.ctx.op_attr(op, "value").map(|a| self.ctx.attr(a))) {
                    // An integer attribute on an integer type is used exactly (saturated).
                    (n @ Num::Int { .. }, Some(AttrData::Int(i))) => {
                        let (lo, hi) = n.range();
                        let s = self.iconst(n.lane_type(), i128::from(*i).clamp(lo, hi) as i64);
                        self.splat_if_vector(op, k, s)?
                    }
                    _ => {
                        let value = self.float_attr(op, "value")?;
                        self.constant(op, k, value)?
                    }
                };
                self.def(r, v);
            }
            "loops.binary" => {
                let [a, b] = self.operands::<2>(op)?;
                let r = self.result(op)?;
                let bop = self.str_attr(op, "op")?;
                let bop = BinOp::from_name(bop).ok_or_else(|| self.err(op, format!("unknown binary op `{bop}`")))?;
                let k = self.kind(op, r)?;
                if self.kind(op, a)? != k || self.kind(op, b)? != k {
                    return Err(self.err(op, "operands and result differ in type"));
                }
                let (va, vb) = (self.v(op, a)?, self.v(op, b)?);
                let known = self.const_int(b);
                match k {
                    Kind::Index => {
                        let out = self.int_binary(op, bop, Num::INDEX, va, vb, known)?;
                        let (la, lb) = (self.index_lin(op, a)?, self.index_lin(op, b)?);
                        let lin = match bop {
                            BinOp::Add => la.add_scaled(&lb, 1),
                            BinOp::Sub => la.add_scaled(&lb, -1),
                            BinOp::Mul => match (la.as_const(), lb.as_const()) {
                                (_, Some(c)) => Lin::default().add_scaled(&la, c),
                                (Some(c), _) => Lin::default().add_scaled(&lb, c),
                                _ => None,
                            },
                            _ => None,
                        };
                        self.def_index(r, out, lin);
                    }
                    Kind::Scalar(n) => {
                        let out = self.scalar_binary(op, bop, n, va, vb, known)?;
                        self.def(r, out);
                    }
                    Kind::Vector(n, lanes) => {
                        let out = match self.const_minmax(bop, n, a, b, va, vb) {
                            Some(out) => out,
                            None => self.vector_binary(op, bop, n, lanes, va, vb)?,
                        };
                        self.def(r, out);
                    }
                }
            }
            "loops.unary" => {
                let [a] = self.operands::<1>(op)?;
                let r = self.result(op)?;
                let u = self.str_attr(op, "op")?;
                let u = UnOp::from_name(u).ok_or_else(|| self.err(op, format!("unknown unary op `{u}`")))?;
                let k = self.kind(op, r)?;
                if self.kind(op, a)? != k {
                    return Err(self.err(op, "operand and result differ in type"));
                }
                let x = self.v(op, a)?;
                let out = match k {
                    Kind::Index => self.int_unary(op, u, Num::INDEX, x)?,
                    Kind::Scalar(n) => self.scalar_unary(op, u, n, x)?,
                    Kind::Vector(Num::F32, _) => self.float_unary(op, u, x)?,
                    Kind::Vector(n @ (Num::F16 | Num::BF16), lanes) => {
                        self.per_lane(op, lanes, n.lane_type(), &[x], |tx, xs| tx.scalar_unary(op, u, n, xs[0]))?
                    }
                    Kind::Vector(n, _) => self.int_unary(op, u, n, x)?,
                };
                self.def(r, out);
            }
            "loops.fma" => {
                let [a, b, c] = self.operands::<3>(op)?;
                let r = self.result(op)?;
                let k = self.kind(op, r)?;
                for x in [a, b, c] {
                    if self.kind(op, x)? != k {
                        return Err(self.err(op, "operands and result differ in type"));
                    }
                }
                let (va, vb, vc) = (self.v(op, a)?, self.v(op, b)?, self.v(op, c)?);
                let out = match k {
                    Kind::Scalar(Num::F32) | Kind::Vector(Num::F32, _) => self.b.ins().fma(va, vb, vc),
                    Kind::Scalar(n @ (Num::F16 | Num::BF16)) => self.scalar_fma(n, va, vb, vc),
                    Kind::Vector(n @ (Num::F16 | Num::BF16), lanes) => {
                        self.per_lane(op, lanes, n.lane_type(), &[va, vb, vc], |tx, xs| {
                            Ok(tx.scalar_fma(n, xs[0], xs[1], xs[2]))
                        })?
                    }
                    _ => return Err(self.err(op, "`loops.fma` needs floats")),
                };
                self.def(r, out);
            }
            "loops.cmp" => {
                let [a, b] = self.operands::<2>(op)?;
                let r = self.result(op)?;
                let p = self.str_attr(op, "pred")?;
                let p = CmpPred::from_name(p).ok_or_else(|| self.err(op, format!("unknown predicate `{p}`")))?;
                let k = self.kind(op, a)?;
                if self.kind(op, b)? != k {
                    return Err(self.err(op, "compares values of different types"));
                }
                let rk = self.kind(op, r)?;
                let (va, vb) = (self.v(op, a)?, self.v(op, b)?);
                let out = match (k, rk) {
                    (Kind::Index | Kind::Scalar(_), Kind::Scalar(Num::Bool)) => self.scalar_cmp(p, k.num(), va, vb),
                    (Kind::Vector(n, lanes), Kind::Vector(m, ml)) if ml == lanes && m.bits() == n.bits() => match n {
                        Num::F32 => self.b.ins().fcmp(float_cc(p), va, vb),
                        Num::F16 | Num::BF16 => self.per_lane(op, lanes, types::I16, &[va, vb], |tx, xs| {
                            let c = tx.scalar_cmp(p, n, xs[0], xs[1]);
                            let w = tx.b.ins().uextend(types::I16, c);
                            Ok(tx.b.ins().ineg(w))
                        })?,
                        Num::Int { .. } | Num::Bool => self.b.ins().icmp(int_cc(p, n.signed()), va, vb),
                    },
                    _ => return Err(self.err(op, "a comparison gives a bool or a lane mask of the lane width")),
                };
                self.def(r, out);
            }
            "loops.select" => {
                let [c, a, b] = self.operands::<3>(op)?;
                let r = self.result(op)?;
                let k = self.kind(op, r)?;
                if self.kind(op, a)? != k || self.kind(op, b)? != k {
                    return Err(self.err(op, "operands and result differ in type"));
                }
                let ck = self.kind(op, c)?;
                match (ck, k) {
                    (Kind::Scalar(Num::Bool), Kind::Index | Kind::Scalar(_)) => {}
                    (Kind::Vector(m, ml), Kind::Vector(n, l)) if ml == l && m.bits() == n.bits() => {}
                    _ => return Err(self.err(op, "the condition does not fit the values")),
                }
                let (vc, va, vb) = (self.v(op, c)?, self.v(op, a)?, self.v(op, b)?);
                let out = self.choose(vc, va, vb);
                if k == Kind::Index {
                    self.def_index(r, out, None);
                } else {
                    self.def(r, out);
                }
            }
            "loops.cast" => {
                let [a] = self.operands::<1>(op)?;
                let r = self.result(op)?;
                let (ka, kr) = (self.kind(op, a)?, self.kind(op, r)?);
                let x = self.v(op, a)?;
                let out = match (ka, kr) {
                    (Kind::Index | Kind::Scalar(_), Kind::Index | Kind::Scalar(_)) => {
                        self.scalar_cast(ka.num(), kr.num(), x)
                    }
                    (Kind::Vector(f, fl), Kind::Vector(t, tl)) if fl == tl => self.vector_cast(op, f, t, fl, x)?,
                    _ => return Err(self.err(op, "cannot cast between these types")),
                };
                self.def(r, out);
            }
            "loops.splat" => {
                let [a] = self.operands::<1>(op)?;
                let r = self.result(op)?;
                let (ka, kr) = (self.kind(op, a)?, self.kind(op, r)?);
                let Kind::Vector(n, _) = kr else {
                    return Err(self.err(op, "the result must be a vector"));
                };
                if ka != Kind::Scalar(n) {
                    return Err(self.err(op, "the scalar's type is not the lane type"));
                }
                let ty = self.cl_type(op, r)?;
                let x = self.v(op, a)?;
                let out = self.b.ins().splat(ty, x);
                self.def(r, out);
            }
            "loops.extract" => {
                let [a] = self.operands::<1>(op)?;
                let r = self.result(op)?;
                let Kind::Vector(n, lanes) = self.kind(op, a)? else {
                    return Err(self.err(op, "the operand must be a vector"));
                };
                if self.kind(op, r)? != Kind::Scalar(n) {
                    return Err(self.err(op, "the result's type is not the lane type"));
                }
                let lane = self.lane_attr(op, lanes)?;
                let x = self.v(op, a)?;
                let out = self.b.ins().extractlane(x, lane);
                self.def(r, out);
            }
            "loops.insert" => {
                let [v, s] = self.operands::<2>(op)?;
                let r = self.result(op)?;
                let Kind::Vector(n, lanes) = self.kind(op, v)? else {
                    return Err(self.err(op, "the first operand must be a vector"));
                };
                if self.kind(op, s)? != Kind::Scalar(n) || self.kind(op, r)? != Kind::Vector(n, lanes) {
                    return Err(self.err(op, "the scalar's type is not the lane type"));
                }
                let lane = self.lane_attr(op, lanes)?;
                let (vv, vs) = (self.v(op, v)?, self.v(op, s)?);
                let out = self.b.ins().insertlane(vv, vs, lane);
                self.def(r, out);
            }
            "loops.reduce_lanes" => {
                let [a] = self.operands::<1>(op)?;
                let r = self.result(op)?;
                let Kind::Vector(n, lanes) = self.kind(op, a)? else {
                    return Err(self.err(op, "the operand must be a vector"));
                };
                if self.kind(op, r)? != Kind::Scalar(n) {
                    return Err(self.err(op, "the result's type is not the lane type"));
                }
                let red = self.str_attr(op, "op")?;
                let red =
                    LaneReduce::from_name(red).ok_or_else(|| self.err(op, format!("unknown reduction `{red}`")))?;
                let bop = match red {
                    LaneReduce::Add => BinOp::Add,
                    LaneReduce::Max => BinOp::Max,
                    LaneReduce::Min => BinOp::Min,
                };
                let x = self.v(op, a)?;
                let mut acc = self.b.ins().extractlane(x, 0);
                for l in 1..lanes {
                    let y = self.b.ins().extractlane(x, l as u8);
                    acc = self.scalar_binary(op, bop, n, acc, y, None)?;
                }
                self.def(r, acc);
            }
            "loops.load" => {
                let data = ctx.op(op);
                let Some((&buf, idx)) = data.operands.split_first() else {
                    return Err(self.err(op, "missing buffer operand"));
                };
                let r = self.result(op)?;
                let k = self.kind(op, r)?;
                let (addr, off, elem) = self.address(op, buf, idx)?;
                if k.num() != elem || k == Kind::Index {
                    return Err(self.err(op, "the value type does not match the buffer's element type"));
                }
                let ty = self.cl_type(op, r)?;
                let flags = self.load_flags(buf);
                let mut out = self.b.ins().load(ty, flags, addr, off);
                if k == Kind::Scalar(Num::Bool) {
                    // Any nonzero byte reads as true.
                    out = self.b.ins().icmp_imm_s(IntCC::NotEqual, out, 0);
                }
                self.def(r, out);
            }
            "loops.store" => {
                let data = ctx.op(op);
                if data.operands.len() < 2 {
                    return Err(self.err(op, "needs a value and a buffer"));
                }
                let (value, buf, idx) = (data.operands[0], data.operands[1], &data.operands[2..]);
                let k = self.kind(op, value)?;
                let (addr, off, elem) = self.address(op, buf, idx)?;
                if k.num() != elem || k == Kind::Index {
                    return Err(self.err(op, "the value type does not match the buffer's element type"));
                }
                let v = self.v(op, value)?;
                self.b.ins().store(Self::store_flags(), v, addr, off);
            }
            "loops.for" => self.for_op(op)?,
            "loops.parallel" => self.parallel_op(op)?,
            "loops.yield" => return Err(self.err(op, "must be the last op of a loop body")),
            "func.return" => return Err(self.err(op, "must be the last op of the kernel")),
            other => {
                return Err(self.err(
                    op,
                    format!("`{other}` is not supported in kernels (program ops belong in the program function)"),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
// The tests call the JIT-compiled kernels, which is `unsafe`.
#[allow(unsafe_code)]
mod tests {
    use super::*;
    use crate::compile::{CompiledKernels, call_kernel, jit_module};
    use crate::isa::{IsaConfig, Target};
    use strata_dialects::loops::{KernelBuilder, ProgramBuilder, builder::new_module};
    use strata_ir::{BufferType, Layout, Rewriter, Ty, VerifyOptions};

    fn buffer(ctx: &mut Context, shape: &[u64], elem: ElemType, strides: Option<Vec<i64>>) -> Ty {
        ctx.intern_type(TypeData::Buffer(BufferType {
            shape: shape.iter().map(|&d| Dim::Fixed(d)).collect(),
            elem,
            layout: Layout::Nchw,
            strides,
        }))
    }

    fn buf(rw: &mut Rewriter<'_>, shape: &[u64], elem: ElemType) -> Ty {
        buffer(rw.ctx_mut(), shape, elem, None)
    }

    /// A verified module holding the kernels `f` writes.
    fn module_with(f: impl FnOnce(&mut Rewriter<'_>, OpId)) -> (Context, OpId) {
        let mut ctx = strata_dialects::context();
        let module = {
            let mut rw = Rewriter::new(&mut ctx);
            let m = new_module(&mut rw);
            f(&mut rw, m);
            m
        };
        if let Err(d) = strata_ir::verify(&ctx, module, VerifyOptions::default()) {
            panic!("test module does not verify: {d:?}");
        }
        (ctx, module)
    }

    fn jit(ctx: &Context, module: OpId) -> CompiledKernels {
        jit_module(ctx, module, &IsaConfig::host()).unwrap_or_else(|e| panic!("{e}"))
    }

    fn run(code: &CompiledKernels, name: &str, args: &[*mut u8]) {
        run_range(code, name, args, i64::MIN, i64::MAX);
    }

    fn run_range(code: &CompiledKernels, name: &str, args: &[*mut u8], begin: i64, end: i64) {
        let f = code.get(name).unwrap_or_else(|| panic!("no kernel {name}"));
        // SAFETY: every test passes one pointer per buffer argument, each to a live Vec at least
        // as large as the buffer type the kernel was built with; `code` outlives the call.
        unsafe { call_kernel(f, args, begin, end) }
    }

    fn p<T>(v: &mut [T]) -> *mut u8 {
        v.as_mut_ptr().cast()
    }

    fn same(a: f32, b: f32) -> bool {
        (a.is_nan() && b.is_nan()) || a.to_bits() == b.to_bits()
    }

    /// `out[i] = f(in_0[i], …)` over `n` elements, `lanes` at a time (1 = scalars).
    #[allow(clippy::too_many_arguments)]
    fn elementwise(
        rw: &mut Rewriter<'_>,
        module: OpId,
        name: &str,
        ins: &[ElemType],
        out: ElemType,
        n: u64,
        lanes: u32,
        f: impl FnOnce(&mut KernelBuilder<'_, '_>, &[ValueId]) -> ValueId,
    ) {
        let mut tys: Vec<Ty> = ins.iter().map(|&e| buf(rw, &[n], e)).collect();
        tys.push(buf(rw, &[n], out));
        let (mut k, args) = KernelBuilder::new(rw, module, name, &tys);
        k.for_range(0, n as i64, i64::from(lanes), |k, i| {
            let xs: Vec<ValueId> = args[..ins.len()]
                .iter()
                .map(|&a| if lanes == 1 { k.load(a, &[i]) } else { k.load_vec(a, &[i], lanes) })
                .collect();
            let y = f(k, &xs);
            k.store(y, args[ins.len()], &[i]);
            Ok::<(), ()>(())
        })
        .unwrap();
        k.finish();
    }

    const XS: [f32; 16] = [
        1.5,
        -2.25,
        0.0,
        -0.0,
        3.0,
        f32::NAN,
        f32::INFINITY,
        -1.0,
        7.0,
        1e-3,
        -0.5,
        2.0,
        0.0,
        100.0,
        -3.5,
        f32::NEG_INFINITY,
    ];
    const YS: [f32; 16] =
        [0.5, 4.0, -0.0, 0.0, f32::NAN, 1.0, 2.0, f32::INFINITY, -7.0, 3.0, 0.25, 2.0, 0.0, -0.001, 1.5, -1.0];

    fn ref_binary(op: BinOp, a: f32, b: f32) -> f32 {
        match op {
            BinOp::Add => a + b,
            BinOp::Sub => a - b,
            BinOp::Mul => a * b,
            BinOp::Div => a / b,
            BinOp::Min | BinOp::Max if a.is_nan() || b.is_nan() => f32::NAN,
            BinOp::Min if a == b => {
                if a.is_sign_negative() {
                    a
                } else {
                    b
                }
            }
            BinOp::Max if a == b => {
                if a.is_sign_positive() {
                    a
                } else {
                    b
                }
            }
            BinOp::Min => a.min(b),
            BinOp::Max => a.max(b),
            BinOp::Pow => Helper::Pow.eval(&[a, b]),
            _ => unreachable!(),
        }
    }

    #[test]
    fn float_binary_ops_scalar_and_vector() {
        let ops = [BinOp::Add, BinOp::Sub, BinOp::Mul, BinOp::Div, BinOp::Min, BinOp::Max, BinOp::Pow];
        let (ctx, module) = module_with(|rw, m| {
            for op in ops {
                for lanes in [1, 4] {
                    let name = format!("{}_{lanes}", op.name());
                    elementwise(rw, m, &name, &[ElemType::F32; 2], ElemType::F32, 16, lanes, |k, x| {
                        k.binary(op, x[0], x[1])
                    });
                }
            }
        });
        let code = jit(&ctx, module);
        for op in ops {
            for lanes in [1, 4] {
                let (mut a, mut b, mut out) = (XS, YS, [0f32; 16]);
                run(&code, &format!("{}_{lanes}", op.name()), &[p(&mut a), p(&mut b), p(&mut out)]);
                for i in 0..16 {
                    let want = ref_binary(op, XS[i], YS[i]);
                    assert!(
                        same(out[i], want),
                        "{} x{lanes}: {} , {} -> {} want {want}",
                        op.name(),
                        XS[i],
                        YS[i],
                        out[i]
                    );
                }
            }
        }
    }

    const US: [f32; 16] = [
        0.5,
        -0.5,
        1.5,
        2.5,
        -2.5,
        0.499_999_97,
        -0.499_999_97,
        8_388_609.0,
        -4_194_304.5,
        1e10,
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        -0.0,
        0.3,
        3.7,
    ];

    fn ref_unary(op: UnOp, x: f32) -> f32 {
        match op {
            UnOp::Neg => -x,
            UnOp::Abs => x.abs(),
            UnOp::Sqrt => x.sqrt(),
            UnOp::Floor => x.floor(),
            UnOp::Ceil => x.ceil(),
            UnOp::Round => x.round(),
            _ => {
                Helper::ALL.into_iter().find(|&h| unary_helper(op) == Some(h)).map(|h| h.eval(&[x])).unwrap_or(f32::NAN)
            }
        }
    }

    #[test]
    fn float_unary_ops_scalar_and_vector() {
        let ops: Vec<UnOp> = UnOp::ALL.into_iter().filter(|&u| u != UnOp::Not).collect();
        let (ctx, module) = module_with(|rw, m| {
            for &op in &ops {
                for lanes in [1, 4] {
                    let name = format!("{}_{lanes}", op.name());
                    elementwise(rw, m, &name, &[ElemType::F32], ElemType::F32, 16, lanes, |k, x| k.unary(op, x[0]));
                }
            }
        });
        let code = jit(&ctx, module);
        for &op in &ops {
            for lanes in [1, 4] {
                let (mut a, mut out) = (US, [0f32; 16]);
                run(&code, &format!("{}_{lanes}", op.name()), &[p(&mut a), p(&mut out)]);
                for i in 0..16 {
                    let want = ref_unary(op, US[i]);
                    assert!(same(out[i], want), "{} x{lanes}: {} -> {} want {want}", op.name(), US[i], out[i]);
                }
            }
        }
    }

    fn fma_results(config: &IsaConfig) -> (Vec<f32>, Vec<f32>) {
        let (ctx, module) = module_with(|rw, m| {
            for lanes in [1, 4] {
                elementwise(rw, m, &format!("fma_{lanes}"), &[ElemType::F32; 3], ElemType::F32, 64, lanes, |k, x| {
                    k.fma(x[0], x[1], x[2])
                });
            }
        });
        let code = jit_module(&ctx, module, config).unwrap();
        let mut a: Vec<f32> = (0..64).map(|i| (i as f32 * 0.37).sin() * 1e3).collect();
        let mut b: Vec<f32> = (0..64).map(|i| 1.0 + (i % 7) as f32 * 0.1).collect();
        let mut c: Vec<f32> = (0..64).map(|i| -(i as f32).sqrt() * 997.0).collect();
        let want: Vec<f32> = (0..64).map(|i| a[i].mul_add(b[i], c[i])).collect();
        let mut out1 = vec![0f32; 64];
        let mut out4 = vec![0f32; 64];
        run(&code, "fma_1", &[p(&mut a), p(&mut b), p(&mut c), p(&mut out1)]);
        run(&code, "fma_4", &[p(&mut a), p(&mut b), p(&mut c), p(&mut out4)]);
        assert_eq!(out1, out4);
        (out1, want)
    }

    #[test]
    fn fma_is_bit_exact_with_mul_add() {
        let (got, want) = fma_results(&IsaConfig::host());
        assert_eq!(got, want);
        if cfg!(target_arch = "x86_64") {
            // Without FMA hardware Cranelift calls the `fmaf` libcall; baseline x86-64 also
            // lacks SSE4.1 (floor/ceil/trunc libcalls).
            let (got, want) = fma_results(&IsaConfig::host().disabling("has_fma"));
            assert_eq!(got, want);
            let (got, want) = fma_results(&IsaConfig::new(Target::X86_64));
            assert_eq!(got, want);
        }
    }

    #[test]
    fn round_and_floor_work_without_sse41() {
        if !cfg!(target_arch = "x86_64") {
            return;
        }
        let (ctx, module) = module_with(|rw, m| {
            for op in [UnOp::Round, UnOp::Floor, UnOp::Ceil] {
                for lanes in [1, 4] {
                    let name = format!("{}_{lanes}", op.name());
                    elementwise(rw, m, &name, &[ElemType::F32], ElemType::F32, 16, lanes, |k, x| k.unary(op, x[0]));
                }
            }
        });
        let code = jit_module(&ctx, module, &IsaConfig::new(Target::X86_64)).unwrap();
        for op in [UnOp::Round, UnOp::Floor, UnOp::Ceil] {
            for lanes in [1, 4] {
                let (mut a, mut out) = (US, [0f32; 16]);
                run(&code, &format!("{}_{lanes}", op.name()), &[p(&mut a), p(&mut out)]);
                for i in 0..16 {
                    assert!(same(out[i], ref_unary(op, US[i])), "{} x{lanes} {}", op.name(), US[i]);
                }
            }
        }
    }

    #[test]
    fn integer_ops_scalar_and_vector() {
        // Every binary op but `pow` (floats only).
        let ops: Vec<BinOp> = BinOp::ALL.into_iter().filter(|&o| o != BinOp::Pow).collect();
        let (ctx, module) = module_with(|rw, m| {
            for &op in &ops {
                for (e, lanes) in [
                    (ElemType::I32, 1),
                    (ElemType::I32, 4),
                    (ElemType::U8, 1),
                    (ElemType::U8, 16),
                    (ElemType::I8, 16),
                    (ElemType::I16, 8),
                    (ElemType::U16, 8),
                ] {
                    let name = format!("{}_{e}_{lanes}", op.name());
                    elementwise(rw, m, &name, &[e, e], e, 16, lanes, |k, x| k.binary(op, x[0], x[1]));
                }
            }
        });
        let code = jit(&ctx, module);
        let a32: [i32; 16] = [7, -7, 100, i32::MIN, i32::MAX, 0, 5, -9, 123_456, -1, 3, 17, i32::MIN, 8, 1 << 20, 77];
        let b32: [i32; 16] = [2, 2, -3, -1, 1, 0, -5, 4, 1000, -1, 0, -17, 2, 3, 1 << 12, 7];
        let ref32 = |op: BinOp, a: i32, b: i32| -> Option<i32> {
            Some(match op {
                BinOp::Add => a.wrapping_add(b),
                BinOp::Sub => a.wrapping_sub(b),
                BinOp::Mul => a.wrapping_mul(b),
                BinOp::Div => a.checked_div(b)?,
                BinOp::Rem => a.checked_rem(b)?,
                BinOp::Min => a.min(b),
                BinOp::Max => a.max(b),
                BinOp::And => a & b,
                BinOp::Or => a | b,
                BinOp::Xor => a ^ b,
                _ => unreachable!(),
            })
        };
        for &op in &ops {
            for lanes in [1, 4] {
                let (mut a, mut b, mut out) = (a32, b32, [0i32; 16]);
                run(&code, &format!("{}_i32_{lanes}", op.name()), &[p(&mut a), p(&mut b), p(&mut out)]);
                for i in 0..16 {
                    // Division by zero and MIN / -1 are undefined: only "no trap" is promised.
                    if let Some(want) = ref32(op, a32[i], b32[i]) {
                        assert_eq!(out[i], want, "{} i32 x{lanes}: {} {}", op.name(), a32[i], b32[i]);
                    }
                }
            }
        }
        // 8- and 16-bit lanes, signed and unsigned, against i64 arithmetic wrapped to the width.
        let a8: [i64; 16] = [200, 3, 255, 0, 17, 128, 127, 1, 90, 250, 33, 64, 2, 199, 100, 45];
        let b8: [i64; 16] = [100, 5, 255, 7, 0, 2, 129, 1, 3, 251, 11, 4, 200, 9, 0, 46];
        for &op in &ops {
            for (e, bits, signed, lanes) in [
                (ElemType::U8, 8, false, 1),
                (ElemType::U8, 8, false, 16),
                (ElemType::I8, 8, true, 16),
                (ElemType::I16, 16, true, 8),
                (ElemType::U16, 16, false, 8),
            ] {
                let wrap = |v: i64| -> i64 {
                    let m = v & ((1i64 << bits) - 1);
                    if signed && m >= 1i64 << (bits - 1) { m - (1i64 << bits) } else { m }
                };
                // Interpret the byte patterns in the element type.
                let av: Vec<i64> = a8.iter().map(|&v| wrap(v * 131)).collect();
                let bv: Vec<i64> = b8.iter().map(|&v| wrap(v * 3)).collect();
                let name = format!("{}_{e}_{lanes}", op.name());
                let want: Vec<Option<i64>> = av
                    .iter()
                    .zip(&bv)
                    .map(|(&a, &b)| {
                        Some(wrap(match op {
                            BinOp::Add => a + b,
                            BinOp::Sub => a - b,
                            BinOp::Mul => a * b,
                            BinOp::Div if b == 0 => return None,
                            BinOp::Rem if b == 0 => return None,
                            BinOp::Div => a / b,
                            BinOp::Rem => a % b,
                            BinOp::Min => a.min(b),
                            BinOp::Max => a.max(b),
                            BinOp::And => a & b,
                            BinOp::Or => a | b,
                            BinOp::Xor => a ^ b,
                            _ => unreachable!(),
                        }))
                    })
                    .collect();
                let got: Vec<i64> = if bits == 8 {
                    let mut a: Vec<u8> = av.iter().map(|&v| v as u8).collect();
                    let mut b: Vec<u8> = bv.iter().map(|&v| v as u8).collect();
                    let mut out = vec![0u8; 16];
                    run(&code, &name, &[p(&mut a), p(&mut b), p(&mut out)]);
                    out.iter().map(|&v| wrap(i64::from(v))).collect()
                } else {
                    let mut a: Vec<u16> = av.iter().map(|&v| v as u16).collect();
                    let mut b: Vec<u16> = bv.iter().map(|&v| v as u16).collect();
                    let mut out = vec![0u16; 16];
                    run(&code, &name, &[p(&mut a), p(&mut b), p(&mut out)]);
                    out.iter().map(|&v| wrap(i64::from(v))).collect()
                };
                for i in 0..16 {
                    if let Some(w) = want[i] {
                        assert_eq!(got[i], w, "{name}: {} {}", av[i], bv[i]);
                    }
                }
            }
        }
    }

    #[test]
    fn integer_unary_ops() {
        let (ctx, module) = module_with(|rw, m| {
            for op in [UnOp::Neg, UnOp::Abs, UnOp::Not] {
                for (e, lanes) in [(ElemType::I32, 1), (ElemType::I32, 4), (ElemType::I8, 16), (ElemType::I8, 1)] {
                    elementwise(rw, m, &format!("{}_{e}_{lanes}", op.name()), &[e], e, 16, lanes, |k, x| {
                        k.unary(op, x[0])
                    });
                }
            }
        });
        let code = jit(&ctx, module);
        let xs: [i32; 16] = [0, 1, -1, 5, -5, i32::MIN, i32::MAX, 100, -100, 7, 8, -9, 10, 11, -12, 13];
        for op in [UnOp::Neg, UnOp::Abs, UnOp::Not] {
            let f = |x: i32| match op {
                UnOp::Neg => x.wrapping_neg(),
                UnOp::Abs => x.wrapping_abs(),
                _ => !x,
            };
            for lanes in [1, 4] {
                let (mut a, mut out) = (xs, [0i32; 16]);
                run(&code, &format!("{}_i32_{lanes}", op.name()), &[p(&mut a), p(&mut out)]);
                assert_eq!(out, xs.map(f), "{} x{lanes}", op.name());
            }
            for lanes in [1, 16] {
                let mut a: Vec<i8> = xs.iter().map(|&x| x as i8).collect();
                let mut out = vec![0i8; 16];
                run(&code, &format!("{}_i8_{lanes}", op.name()), &[p(&mut a), p(&mut out)]);
                let want: Vec<i8> = a
                    .iter()
                    .map(|&x| match op {
                        UnOp::Neg => x.wrapping_neg(),
                        UnOp::Abs => x.wrapping_abs(),
                        _ => !x,
                    })
                    .collect();
                assert_eq!(out, want, "{} i8 x{lanes}", op.name());
            }
        }
    }

    const CAST_IN: [f32; 16] = [
        0.0,
        -0.0,
        1.9,
        -1.9,
        127.5,
        128.0,
        -129.0,
        255.9,
        256.0,
        1e10,
        -1e10,
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        65535.5,
        -32768.7,
    ];

    #[test]
    fn float_to_int_casts_saturate() {
        let targets =
            [ElemType::I8, ElemType::U8, ElemType::I16, ElemType::U16, ElemType::I32, ElemType::I64, ElemType::Bool];
        let (ctx, module) = module_with(|rw, m| {
            for e in targets {
                elementwise(rw, m, &format!("to_{e}"), &[ElemType::F32], e, 16, 1, |k, x| {
                    let t = k.scalar_ty(e);
                    k.cast(x[0], t)
                });
            }
            elementwise(rw, m, "to_i32x4", &[ElemType::F32], ElemType::I32, 16, 4, |k, x| {
                let t = k.vector_ty(ElemType::I32, 4);
                k.cast(x[0], t)
            });
        });
        let code = jit(&ctx, module);
        macro_rules! check {
            ($name:expr, $t:ty, $conv:expr) => {{
                let mut a = CAST_IN;
                let mut out = [<$t>::default(); 16];
                run(&code, $name, &[p(&mut a), p(&mut out)]);
                let want: Vec<$t> = CAST_IN.iter().map($conv).collect();
                assert_eq!(out.to_vec(), want, "{}", $name);
            }};
        }
        check!("to_i8", i8, |&x| x as i8);
        check!("to_u8", u8, |&x| x as u8);
        check!("to_i16", i16, |&x| x as i16);
        check!("to_u16", u16, |&x| x as u16);
        check!("to_i32", i32, |&x| x as i32);
        check!("to_i64", i64, |&x| x as i64);
        check!("to_bool", u8, |&x| u8::from(x != 0.0));
        check!("to_i32x4", i32, |&x| x as i32);
    }

    #[test]
    fn int_casts_saturate_and_convert() {
        let ints: [i32; 16] =
            [0, 1, -1, 127, 128, -128, -129, 255, 256, 65535, 65536, -32769, i32::MAX, i32::MIN, 77, -77];
        let (ctx, module) = module_with(|rw, m| {
            for e in
                [ElemType::I8, ElemType::U8, ElemType::I16, ElemType::U16, ElemType::I64, ElemType::F32, ElemType::Bool]
            {
                elementwise(rw, m, &format!("i32_to_{e}"), &[ElemType::I32], e, 16, 1, |k, x| {
                    let t = k.scalar_ty(e);
                    k.cast(x[0], t)
                });
            }
            elementwise(rw, m, "i32x4_to_f32x4", &[ElemType::I32], ElemType::F32, 16, 4, |k, x| {
                let t = k.vector_ty(ElemType::F32, 4);
                k.cast(x[0], t)
            });
            for (from, to) in [(ElemType::U8, ElemType::I8), (ElemType::I8, ElemType::U8)] {
                for lanes in [1, 16] {
                    elementwise(rw, m, &format!("{from}_to_{to}_{lanes}"), &[from], to, 16, lanes, |k, x| {
                        let t = if lanes == 1 { k.scalar_ty(to) } else { k.vector_ty(to, lanes) };
                        k.cast(x[0], t)
                    });
                }
                elementwise(rw, m, &format!("{from}_to_f32"), &[from], ElemType::F32, 16, 1, |k, x| {
                    let t = k.scalar_ty(ElemType::F32);
                    k.cast(x[0], t)
                });
            }
            elementwise(rw, m, "bool_to_f32", &[ElemType::Bool], ElemType::F32, 16, 1, |k, x| {
                let t = k.scalar_ty(ElemType::F32);
                k.cast(x[0], t)
            });
        });
        let code = jit(&ctx, module);
        macro_rules! check {
            ($name:expr, $input:expr, $t:ty, $conv:expr) => {{
                let mut a = $input;
                let mut out = [<$t>::default(); 16];
                run(&code, $name, &[p(&mut a), p(&mut out)]);
                let want: Vec<$t> = $input.iter().map($conv).collect();
                assert_eq!(out.to_vec(), want, "{}", $name);
            }};
        }
        let sat = |x: i32, lo: i32, hi: i32| x.clamp(lo, hi);
        check!("i32_to_i8", ints, i8, |&x| sat(x, -128, 127) as i8);
        check!("i32_to_u8", ints, u8, |&x| sat(x, 0, 255) as u8);
        check!("i32_to_i16", ints, i16, |&x| sat(x, -32768, 32767) as i16);
        check!("i32_to_u16", ints, u16, |&x| sat(x, 0, 65535) as u16);
        check!("i32_to_i64", ints, i64, |&x| i64::from(x));
        check!("i32_to_f32", ints, f32, |&x| x as f32);
        check!("i32_to_bool", ints, u8, |&x| u8::from(x != 0));
        check!("i32x4_to_f32x4", ints, f32, |&x| x as f32);
        let bytes: [u8; 16] = [0, 1, 127, 128, 200, 255, 5, 6, 7, 129, 254, 100, 99, 3, 2, 250];
        for lanes in [1, 16] {
            check!(&format!("u8_to_i8_{lanes}"), bytes, i8, |&x| x.min(127) as i8);
            check!(&format!("i8_to_u8_{lanes}"), bytes, u8, |&x| (x as i8).max(0) as u8);
        }
        check!("u8_to_f32", bytes, f32, |&x| f32::from(x));
        check!("i8_to_f32", bytes, f32, |&x| f32::from(x as i8));
        let bools: [u8; 16] = [0, 1, 1, 0, 0, 0, 1, 1, 1, 0, 1, 0, 1, 0, 1, 1];
        check!("bool_to_f32", bools, f32, |&x| f32::from(x));
    }

    /// f32 bit patterns covering every exponent, plus rounding edge cases of f16 and bf16.
    fn f32_samples() -> Vec<f32> {
        let mut v: Vec<f32> = (0..=u32::MAX / 65_521).map(|i| f32::from_bits(i.wrapping_mul(65_521))).collect();
        v.extend([
            65504.0,
            65519.99,
            65520.0,
            5.960_464_5e-8,
            2.980_232_2e-8,
            2.980_232_4e-8,
            8.940_697e-8,
            6.103_515_6e-5,
            6.103_515e-5,
            1.0 + 1.0 / 2048.0,
            1.0 + 3.0 / 2048.0,
            -0.0,
            f32::MAX,
            f32::MIN_POSITIVE,
            f32::from_bits(0x7f80_0001),
            f32::from_bits(0xffc1_2345),
            f32::from_bits(0x3f80_8000),
            f32::from_bits(0x3f81_8000),
        ]);
        let n = v.len().div_ceil(4) * 4;
        v.resize(n, 1.0);
        v
    }

    #[test]
    fn half_precision_conversions_match_the_half_crate() {
        let samples = f32_samples();
        let ns = samples.len() as u64;
        let (ctx, module) = module_with(|rw, m| {
            for e in [ElemType::F16, ElemType::BF16] {
                elementwise(rw, m, &format!("{e}_to_f32"), &[e], ElemType::F32, 65536, 1, |k, x| {
                    let t = k.scalar_ty(ElemType::F32);
                    k.cast(x[0], t)
                });
                elementwise(rw, m, &format!("f32_to_{e}"), &[ElemType::F32], e, ns, 1, |k, x| {
                    let t = k.scalar_ty(e);
                    k.cast(x[0], t)
                });
            }
            // f16 arithmetic rounds through f32 per op; f16 vectors convert per lane.
            elementwise(rw, m, "f16_muladd", &[ElemType::F16; 2], ElemType::F16, 64, 1, |k, x| {
                let prod = k.mul(x[0], x[1]);
                k.add(prod, x[0])
            });
            elementwise(rw, m, "f16x8_max", &[ElemType::F16; 2], ElemType::F16, 64, 8, |k, x| k.max(x[0], x[1]));
            elementwise(rw, m, "f16x8_to_i16x8", &[ElemType::F16], ElemType::I16, 64, 8, |k, x| {
                let t = k.vector_ty(ElemType::I16, 8);
                k.cast(x[0], t)
            });
        });
        let code = jit(&ctx, module);
        let mut all: Vec<u16> = (0..=u16::MAX).collect();
        let mut out = vec![0f32; 65536];
        run(&code, "f16_to_f32", &[p(&mut all), p(&mut out)]);
        for (&h, &f) in all.iter().zip(&out) {
            assert_eq!(f.to_bits(), half::f16::from_bits(h).to_f32().to_bits(), "f16 {h:#06x}");
        }
        run(&code, "bf16_to_f32", &[p(&mut all), p(&mut out)]);
        for (&h, &f) in all.iter().zip(&out) {
            assert_eq!(f.to_bits(), half::bf16::from_bits(h).to_f32().to_bits(), "bf16 {h:#06x}");
        }
        let mut xs = samples.clone();
        let mut hs = vec![0u16; samples.len()];
        run(&code, "f32_to_f16", &[p(&mut xs), p(&mut hs)]);
        for (&x, &h) in samples.iter().zip(&hs) {
            assert_eq!(h, half::f16::from_f32(x).to_bits(), "f32 {x:e} ({:#010x}) -> f16", x.to_bits());
        }
        run(&code, "f32_to_bf16", &[p(&mut xs), p(&mut hs)]);
        for (&x, &h) in samples.iter().zip(&hs) {
            assert_eq!(h, half::bf16::from_f32(x).to_bits(), "f32 {x:e} -> bf16");
        }

        let a: Vec<half::f16> = (0..64).map(|i| half::f16::from_f32((i as f32 - 30.0) * 0.77)).collect();
        let b: Vec<half::f16> = (0..64).map(|i| half::f16::from_f32(1.0 / (i as f32 + 0.5))).collect();
        let (mut ab, mut bb) =
            (a.iter().map(|h| h.to_bits()).collect::<Vec<_>>(), b.iter().map(|h| h.to_bits()).collect::<Vec<_>>());
        let mut o = vec![0u16; 64];
        run(&code, "f16_muladd", &[p(&mut ab), p(&mut bb), p(&mut o)]);
        for i in 0..64 {
            let prod = half::f16::from_f32(a[i].to_f32() * b[i].to_f32());
            let want = half::f16::from_f32(prod.to_f32() + a[i].to_f32());
            assert_eq!(o[i], want.to_bits(), "f16 muladd {i}");
        }
        run(&code, "f16x8_max", &[p(&mut ab), p(&mut bb), p(&mut o)]);
        for i in 0..64 {
            assert_eq!(o[i], a[i].max(b[i]).to_bits(), "f16 max {i}");
        }
        let mut oi = vec![0i16; 64];
        run(&code, "f16x8_to_i16x8", &[p(&mut ab), p(&mut oi)]);
        for i in 0..64 {
            assert_eq!(oi[i], a[i].to_f32() as i16, "f16 -> i16 {i}");
        }
    }

    #[test]
    fn compare_and_select_give_bools_and_masks() {
        let (ctx, module) = module_with(|rw, m| {
            for pred in CmpPred::ALL {
                for lanes in [1u32, 4] {
                    let n = 16;
                    let f = buf(rw, &[n], ElemType::F32);
                    let mask = buf(rw, &[n], if lanes == 1 { ElemType::Bool } else { ElemType::I32 });
                    let name = format!("{}_{lanes}", pred.name());
                    let (mut k, args) = KernelBuilder::new(rw, m, &name, &[f, f, mask, f]);
                    k.for_range(0, n as i64, i64::from(lanes), |k, i| {
                        let (a, b) = if lanes == 1 {
                            (k.load(args[0], &[i]), k.load(args[1], &[i]))
                        } else {
                            (k.load_vec(args[0], &[i], 4), k.load_vec(args[1], &[i], 4))
                        };
                        let c = k.cmp(pred, a, b);
                        k.store(c, args[2], &[i]);
                        let s = k.select(c, a, b);
                        k.store(s, args[3], &[i]);
                        Ok::<(), ()>(())
                    })
                    .unwrap();
                    k.finish();
                }
            }
            // Unsigned comparisons of byte vectors.
            elementwise(rw, m, "u8_lt", &[ElemType::U8; 2], ElemType::U8, 16, 16, |k, x| {
                let c = k.cmp(CmpPred::Lt, x[0], x[1]);
                let t = k.vector_ty(ElemType::U8, 16);
                let ones = k.constant(t, 1.0);
                let zeros = k.constant(t, 0.0);
                k.select(c, ones, zeros)
            });
        });
        let code = jit(&ctx, module);
        for pred in CmpPred::ALL {
            let r = |a: f32, b: f32| match pred {
                CmpPred::Eq => a == b,
                CmpPred::Ne => a != b,
                CmpPred::Lt => a < b,
                CmpPred::Le => a <= b,
                CmpPred::Gt => a > b,
                CmpPred::Ge => a >= b,
            };
            let (mut a, mut b) = (XS, YS);
            let mut sel = [0f32; 16];
            let mut bools = [7u8; 16];
            run(&code, &format!("{}_1", pred.name()), &[p(&mut a), p(&mut b), p(&mut bools), p(&mut sel)]);
            let mut masks = [7i32; 16];
            let mut sel4 = [0f32; 16];
            run(&code, &format!("{}_4", pred.name()), &[p(&mut a), p(&mut b), p(&mut masks), p(&mut sel4)]);
            for i in 0..16 {
                let c = r(XS[i], YS[i]);
                assert_eq!(bools[i], u8::from(c), "{} {} {}", pred.name(), XS[i], YS[i]);
                assert_eq!(masks[i], if c { -1 } else { 0 }, "{} mask", pred.name());
                let want = if c { XS[i] } else { YS[i] };
                assert!(same(sel[i], want) && same(sel4[i], want), "{} select", pred.name());
            }
        }
        let mut a: [u8; 16] = [0, 1, 200, 100, 255, 3, 128, 127, 9, 9, 10, 250, 251, 0, 66, 67];
        let mut b: [u8; 16] = [1, 0, 100, 200, 254, 3, 127, 128, 10, 8, 10, 251, 250, 255, 67, 66];
        let mut out = [9u8; 16];
        let want: Vec<u8> = a.iter().zip(&b).map(|(x, y)| u8::from(x < y)).collect();
        run(&code, "u8_lt", &[p(&mut a), p(&mut b), p(&mut out)]);
        assert_eq!(out.to_vec(), want);
    }

    #[test]
    fn lane_ops_and_reductions() {
        let (ctx, module) = module_with(|rw, m| {
            for red in [LaneReduce::Add, LaneReduce::Max, LaneReduce::Min] {
                for (e, lanes) in [(ElemType::F32, 4u32), (ElemType::I32, 4), (ElemType::U8, 16)] {
                    let src = buf(rw, &[4, u64::from(lanes)], e);
                    let dst = buf(rw, &[4], e);
                    let (mut k, args) = KernelBuilder::new(rw, m, &format!("{}_{e}", red.name()), &[src, dst]);
                    k.for_range(0, 4, 1, |k, i| {
                        let z = k.index(0);
                        let v = k.load_vec(args[0], &[i, z], lanes);
                        let r = k.reduce_lanes(red, v);
                        k.store(r, args[1], &[i]);
                        Ok::<(), ()>(())
                    })
                    .unwrap();
                    k.finish();
                }
            }
            // out = insert(splat(x[1]), extract(x, 3) * 2, lane 0)
            elementwise(rw, m, "lanes", &[ElemType::F32], ElemType::F32, 8, 4, |k, x| {
                let s = k.extract(x[0], 1);
                let v = k.splat(s, 4);
                let t = k.extract(x[0], 3);
                let t2 = k.add(t, t);
                k.insert(v, t2, 0)
            });
        });
        let code = jit(&ctx, module);
        let fv: [f32; 16] = [1e8, 1.0, -1e8, 1.0, f32::NAN, 2.0, 3.0, 4.0, -0.0, 0.0, 5.5, -7.25, 0.1, 0.2, 0.3, 0.4];
        for red in [LaneReduce::Add, LaneReduce::Max, LaneReduce::Min] {
            let (mut a, mut out) = (fv, [0f32; 4]);
            run(&code, &format!("{}_f32", red.name()), &[p(&mut a), p(&mut out)]);
            for r in 0..4 {
                let l = &fv[4 * r..4 * r + 4];
                let want = match red {
                    LaneReduce::Add => ((l[0] + l[1]) + l[2]) + l[3],
                    LaneReduce::Max => l[1..].iter().fold(l[0], |a, &b| ref_binary(BinOp::Max, a, b)),
                    LaneReduce::Min => l[1..].iter().fold(l[0], |a, &b| ref_binary(BinOp::Min, a, b)),
                };
                assert!(same(out[r], want), "{} row {r}: {} want {want}", red.name(), out[r]);
            }
            let iv: Vec<i32> =
                (0..16).map(|i| ((i * 7919 % 23) - 11i32).wrapping_add(if i == 5 { i32::MAX } else { 0 })).collect();
            let mut a = iv.clone();
            let mut out = [0i32; 4];
            run(&code, &format!("{}_i32", red.name()), &[p(&mut a), p(&mut out)]);
            for r in 0..4 {
                let l = &iv[4 * r..4 * r + 4];
                let want = match red {
                    LaneReduce::Add => l.iter().fold(0i32, |a, &b| a.wrapping_add(b)),
                    LaneReduce::Max => *l.iter().max().unwrap(),
                    LaneReduce::Min => *l.iter().min().unwrap(),
                };
                assert_eq!(out[r], want, "{} i32 row {r}", red.name());
            }
            let bv: Vec<u8> = (0..64).map(|i| (i * 37 % 256) as u8).collect();
            let mut a = bv.clone();
            let mut out = [0u8; 4];
            run(&code, &format!("{}_u8", red.name()), &[p(&mut a), p(&mut out)]);
            for r in 0..4 {
                let l = &bv[16 * r..16 * r + 16];
                let want = match red {
                    LaneReduce::Add => l.iter().fold(0u8, |a, &b| a.wrapping_add(b)),
                    LaneReduce::Max => *l.iter().max().unwrap(),
                    LaneReduce::Min => *l.iter().min().unwrap(),
                };
                assert_eq!(out[r], want, "{} u8 row {r}", red.name());
            }
        }
        let mut a: [f32; 8] = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
        let mut out = [0f32; 8];
        run(&code, "lanes", &[p(&mut a), p(&mut out)]);
        assert_eq!(out, [8.0, 2.0, 2.0, 2.0, 16.0, 6.0, 6.0, 6.0]);
    }

    /// `out[0] = Σ a[i]` for `i in (0..n).step_by(step)` with an `f32` carried value, and
    /// `out[1] = max a[i]` carried alongside.
    fn sum_kernel(rw: &mut Rewriter<'_>, m: OpId, name: &str, n: u64, step: i64, unroll: i64) {
        let a = buf(rw, &[n], ElemType::F32);
        let o = buf(rw, &[2], ElemType::F32);
        let (mut k, args) = KernelBuilder::new(rw, m, name, &[a, o]);
        let (l, u, s) = (k.index(0), k.index(n as i64), k.index(step));
        let zero = k.f32(0.0);
        let ninf = k.f32(f32::NEG_INFINITY);
        let r = k
            .for_loop(l, u, s, &[zero, ninf], Some(unroll), |k, i, c| {
                let x = k.load(args[0], &[i]);
                Ok::<_, ()>(vec![k.add(c[0], x), k.max(c[1], x)])
            })
            .unwrap();
        let (i0, i1) = (k.index(0), k.index(1));
        k.store(r[0], args[1], &[i0]);
        k.store(r[1], args[1], &[i1]);
        k.finish();
    }

    #[test]
    fn carried_values_with_unrolling() {
        let cases: [(u64, i64, i64); 9] = [
            (16, 1, 4),
            (18, 1, 4),
            (17, 2, 3),
            (3, 1, 8),
            (1000, 1, 1),
            (1000, 3, 7),
            (5, 5, 2),
            (8, 1, 8),
            (9, 1, 8),
        ];
        let (ctx, module) = module_with(|rw, m| {
            for (n, step, unroll) in cases {
                sum_kernel(rw, m, &format!("sum_{n}_{step}_{unroll}"), n, step, unroll);
            }
        });
        let code = jit(&ctx, module);
        for (n, step, unroll) in cases {
            let mut a: Vec<f32> = (0..n).map(|i| ((i * 7919) % 1009) as f32 * 0.013 - 3.0).collect();
            let mut out = [0f32; 2];
            run(&code, &format!("sum_{n}_{step}_{unroll}"), &[p(&mut a), p(&mut out)]);
            let mut sum = 0f32;
            let mut max = f32::NEG_INFINITY;
            for i in (0..n as usize).step_by(step as usize) {
                sum += a[i];
                max = max.max(a[i]);
            }
            assert_eq!(out[0].to_bits(), sum.to_bits(), "sum n={n} step={step} unroll={unroll}");
            assert_eq!(out[1], max, "max n={n} step={step} unroll={unroll}");
        }
    }

    #[test]
    fn dynamic_bounds_and_nested_loops() {
        let (ctx, module) = module_with(|rw, m| {
            // out[r] = Σ_{j < len[0]} a[r, j] (vector accumulator, then lane sum), r in 0..4.
            let a = buf(rw, &[4, 16], ElemType::F32);
            let len = buf(rw, &[1], ElemType::I32);
            let o = buf(rw, &[4], ElemType::F32);
            let (mut k, args) = KernelBuilder::new(rw, m, "row_sums", &[a, len, o]);
            let z = k.index(0);
            let n32 = k.load(args[1], &[z]);
            let ity = k.index_ty();
            let n = k.cast(n32, ity);
            k.for_range(0, 4, 1, |k, r| {
                let zero = k.f32x4(0.0);
                let (l, s) = (k.index(0), k.index(4));
                let acc = k.for_loop(l, n, s, &[zero], Some(4), |k, j, c| {
                    let x = k.load_vec(args[0], &[r, j], 4);
                    Ok::<_, ()>(vec![k.add(c[0], x)])
                })?;
                let s = k.reduce_lanes(LaneReduce::Add, acc[0]);
                k.store(s, args[2], &[r]);
                Ok::<(), ()>(())
            })
            .unwrap();
            k.finish();
        });
        let code = jit(&ctx, module);
        let mut a: Vec<f32> = (0..64).map(|i| i as f32 * 0.5).collect();
        for len in [0i32, 4, 8, 12, 16] {
            let mut l = [len];
            let mut out = [-1f32; 4];
            run(&code, "row_sums", &[p(&mut a), p(&mut l), p(&mut out)]);
            for r in 0..4 {
                let mut acc = [0f32; 4];
                for j in (0..len as usize).step_by(4) {
                    for q in 0..4 {
                        acc[q] += a[r * 16 + j + q];
                    }
                }
                let want = ((acc[0] + acc[1]) + acc[2]) + acc[3];
                assert_eq!(out[r], want, "len {len} row {r}");
            }
        }
    }

    #[test]
    fn parallel_range_splits_compose() {
        let n = 37;
        let (ctx, module) = module_with(|rw, m| {
            let a = buf(rw, &[n], ElemType::F32);
            let (mut k, args) = KernelBuilder::new(rw, m, "affine", &[a, a]);
            k.parallel(n as i64, |k, i| {
                let x = k.load(args[0], &[i]);
                let fty = k.scalar_ty(ElemType::F32);
                let fi = k.cast(i, fty);
                let two = k.f32(2.0);
                let y = k.fma(x, two, fi);
                k.store(y, args[1], &[i]);
                Ok::<(), ()>(())
            })
            .unwrap();
            k.finish();
        });
        let code = jit(&ctx, module);
        let mut a: Vec<f32> = (0..n).map(|i| i as f32 * 0.25 - 1.0).collect();
        let want: Vec<f32> = a.iter().enumerate().map(|(i, &x)| x.mul_add(2.0, i as f32)).collect();
        let mut full = vec![0f32; n as usize];
        run(&code, "affine", &[p(&mut a), p(&mut full)]);
        assert_eq!(full, want);
        let mut halves = vec![0f32; n as usize];
        run_range(&code, "affine", &[p(&mut a), p(&mut halves)], -100, 18);
        assert!(halves[18..].iter().all(|&x| x == 0.0), "wrote outside its range");
        run_range(&code, "affine", &[p(&mut a), p(&mut halves)], 18, 1000);
        assert_eq!(halves, want);
        let mut none = vec![0f32; n as usize];
        run_range(&code, "affine", &[p(&mut a), p(&mut none)], 5, 5);
        run_range(&code, "affine", &[p(&mut a), p(&mut none)], 30, 10);
        assert!(none.iter().all(|&x| x == 0.0));
    }

    #[test]
    fn strided_buffers() {
        let (ctx, module) = module_with(|rw, m| {
            // A 3x4 view with strides [10, 2] of a 30-float array, copied densely.
            let src = buffer(rw.ctx_mut(), &[3, 4], ElemType::F32, Some(vec![10, 2]));
            let dst = buf(rw, &[3, 4], ElemType::F32);
            let (mut k, args) = KernelBuilder::new(rw, m, "gather", &[src, dst]);
            k.for_range(0, 3, 1, |k, i| {
                k.for_range(0, 4, 1, |k, j| {
                    let x = k.load(args[0], &[i, j]);
                    k.store(x, args[1], &[i, j]);
                    Ok::<(), ()>(())
                })
            })
            .unwrap();
            k.finish();
            // Rows of 8 with row stride 12: vector loads at constant offsets within the row.
            let src = buffer(rw.ctx_mut(), &[2, 8], ElemType::F32, Some(vec![12, 1]));
            let dst = buf(rw, &[2, 8], ElemType::F32);
            let (mut k, args) = KernelBuilder::new(rw, m, "rows", &[src, dst]);
            k.for_range(0, 2, 1, |k, r| {
                for c in [0, 4] {
                    let ci = k.index(c);
                    let v = k.load_vec(args[0], &[r, ci], 4);
                    k.store(v, args[1], &[r, ci]);
                }
                Ok::<(), ()>(())
            })
            .unwrap();
            k.finish();
        });
        let code = jit(&ctx, module);
        let mut src: Vec<f32> = (0..30).map(|i| i as f32).collect();
        let mut dst = vec![0f32; 12];
        run(&code, "gather", &[p(&mut src), p(&mut dst)]);
        let want: Vec<f32> = (0..3).flat_map(|i| (0..4).map(move |j| (i * 10 + j * 2) as f32)).collect();
        assert_eq!(dst, want);
        let mut src: Vec<f32> = (0..24).map(|i| i as f32).collect();
        let mut dst = vec![0f32; 16];
        run(&code, "rows", &[p(&mut src), p(&mut dst)]);
        let want: Vec<f32> = (0..2).flat_map(|r| (0..8).map(move |c| (r * 12 + c) as f32)).collect();
        assert_eq!(dst, want);
    }

    #[test]
    fn unsupported_input_is_an_error_not_a_panic() {
        // A program function (with loops.alloc / loops.launch) is not a kernel.
        let (ctx, module) = module_with(|rw, m| {
            let b = buf(rw, &[4], ElemType::F32);
            let (mut k, args) = KernelBuilder::new(rw, m, "copy", &[b, b]);
            k.for_range(0, 4, 1, |k, i| {
                let x = k.load(args[0], &[i]);
                k.store(x, args[1], &[i]);
                Ok::<(), ()>(())
            })
            .unwrap();
            k.finish();
            let (mut pb, ins) = ProgramBuilder::new(rw, m, "main", &[b], &[b]);
            let t = pb.alloc(b);
            pb.launch("copy", &[ins[0], t], strata_ir::Loc::default());
            pb.finish(&[t]);
        });
        let main = strata_dialects::func::lookup_function(&ctx, module, "main").unwrap().0;
        let mut jit = crate::jit::JitBuilder::host().unwrap();
        let err = define_kernel(&mut jit, &ctx, main, "main").unwrap_err().to_string();
        assert!(err.contains("main") && (err.contains("returns nothing") || err.contains("loops.alloc")), "{err}");
        // The kernel in the same module compiles; the program is skipped by jit_module.
        let code = jit_module(&ctx, module, &IsaConfig::host()).unwrap();
        assert_eq!(code.names().collect::<Vec<_>>(), ["copy"]);

        // Unverified input: a 256-bit vector load.
        let src = "func @wide(%b: buffer<8xf32>) {\n  %0 = loops.index_const() {value = 0} : () -> index\n  %1 = loops.load(%b, %0) : (buffer<8xf32>, index) -> vec<8xf32>\n  return()\n}\n";
        let mut ctx = strata_dialects::context();
        let m =
            strata_ir::parse_module(&mut ctx, &strata_ir::Source::new("t", src), &strata_ir::ParseOptions::default())
                .unwrap();
        let f = strata_dialects::func::lookup_function(&ctx, m, "wide").unwrap().0;
        let mut jit = crate::jit::JitBuilder::host().unwrap();
        let err = define_kernel(&mut jit, &ctx, f, "wide").unwrap_err().to_string();
        assert!(err.contains("wide") && err.contains("loops.load") && err.contains("128-bit"), "{err}");
    }

    // ---- against the reference interpreter ----------------------------------------------

    /// Deterministic test values for `elem`: a spread of magnitudes, exact halves, and (for
    /// floats) NaN, infinities and signed zeros; `nonzero` avoids zeros (divisors).
    fn values(elem: ElemType, n: usize, seed: u64, nonzero: bool) -> Vec<f64> {
        let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let specials = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -0.0, 0.0, 0.5, -2.5, 1.5, 65504.0, 1e-6];
        (0..n)
            .map(|i| {
                let r = next();
                let v = if elem.is_float() {
                    if i % 7 == 3 {
                        specials[(r % specials.len() as u64) as usize]
                    } else {
                        ((r % 20_001) as f64 - 10_000.0) / 1250.0
                    }
                } else {
                    let (lo, hi) = Num::of(elem).range();
                    let span = (hi - lo + 1) as u128;
                    let raw = i128::from(r as i64).rem_euclid(span as i128) + lo;
                    // Mostly small values, sometimes extremes.
                    if i % 5 == 0 { raw as f64 } else { ((r % 41) as f64 - 20.0).clamp(lo as f64, hi as f64) }
                };
                if nonzero && v == 0.0 { 1.0 } else { v }
            })
            .collect()
    }

    /// The buffers after the interpreter runs kernel `name` on copies of `inputs`.
    fn interpret(
        ctx: &Context,
        module: OpId,
        name: &str,
        inputs: &[strata_ir::TensorData],
        range: Option<(i64, i64)>,
    ) -> Vec<strata_ir::TensorData> {
        use strata_dialects::loops::interp::{Buffer, run_kernel};
        let func = strata_dialects::func::lookup_function(ctx, module, name).unwrap().0;
        let bufs: Vec<Buffer> = inputs.iter().map(|t| Buffer::from_tensor(t).unwrap()).collect();
        run_kernel(ctx, func, &bufs, range).unwrap_or_else(|e| panic!("interpreter on {name}: {e}"));
        bufs.iter().map(|b| b.to_tensor().unwrap()).collect()
    }

    /// Whether kernel `name` calls a libm-backed helper whose C and Rust versions may differ in
    /// the last bit.
    fn calls_helper(name: &str) -> bool {
        ["exp_", "log_", "tanh_", "sin_", "cos_", "erf_", "pow_"].iter().any(|h| name.starts_with(h))
    }

    /// Asserts the compiled kernel's buffers `got` equal the interpreter's `want` bit for bit
    /// (NaN as a class), or within `ulps` units in the last place for floats.
    fn assert_same_buffers(
        name: &str,
        inputs: &[strata_ir::TensorData],
        want: &[strata_ir::TensorData],
        got: &[&[u8]],
        ulps: u64,
    ) {
        for (i, (want, got)) in want.iter().zip(got).enumerate() {
            let got = &got[..want.bytes().len()];
            let got =
                strata_ir::TensorData::from_bytes(want.elem(), want.shape().to_vec(), got.to_vec().into()).unwrap();
            for j in 0..want.len() {
                let (g, w) = (got.get_bits(j), want.get_bits(j));
                let float = want.elem().is_float();
                let both_nan = float && got.get_f64(j).is_nan() && want.get_f64(j).is_nan();
                let close =
                    float && ulps > 0 && got.get_f64(j).signum() == want.get_f64(j).signum() && g.abs_diff(w) <= ulps;
                assert!(
                    g == w || both_nan || close,
                    "{name}: argument {i} element {j}: compiled {} ({g:#x}), interpreter {} ({w:#x}); inputs {:?}",
                    got.get_f64(j),
                    want.get_f64(j),
                    inputs.iter().map(|t| t.get_f64(j.min(t.len() - 1))).collect::<Vec<_>>()
                );
            }
        }
    }

    /// Runs kernel `name` compiled and interpreted on copies of `inputs` (one contiguous tensor
    /// per argument) and asserts every buffer ends up identical (NaN compared as a class).
    fn check_with_interpreter(
        ctx: &Context,
        module: OpId,
        code: &CompiledKernels,
        name: &str,
        inputs: &[strata_ir::TensorData],
        range: Option<(i64, i64)>,
    ) {
        let want = interpret(ctx, module, name, inputs, range);
        // 8-byte aligned copies for the compiled kernel.
        let mut mem: Vec<Vec<u64>> = inputs
            .iter()
            .map(|t| {
                let mut v = vec![0u64; t.bytes().len().div_ceil(8) + 2];
                let bytes: &mut [u8] = bytemuck_bytes(&mut v);
                bytes[..t.bytes().len()].copy_from_slice(t.bytes());
                v
            })
            .collect();
        let ptrs: Vec<*mut u8> = mem.iter_mut().map(|v| p(v)).collect();
        let (b, e) = range.unwrap_or((i64::MIN, i64::MAX));
        run_range(code, name, &ptrs, b, e);
        let got: Vec<&[u8]> = mem.iter_mut().map(|m| &*bytemuck_bytes(m)).collect();
        assert_same_buffers(name, inputs, &want, &got, 0);
    }

    fn bytemuck_bytes(v: &mut [u64]) -> &mut [u8] {
        let len = std::mem::size_of_val(v);
        // SAFETY: `u64` has no padding and every byte pattern is a valid `u8`; the slice covers
        // exactly the memory of `v`, borrowed mutably for the returned lifetime.
        unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<u8>(), len) }
    }

    fn tensor(elem: ElemType, n: usize, seed: u64, nonzero: bool) -> strata_ir::TensorData {
        strata_ir::TensorData::from_f64(elem, vec![n], &values(elem, n, seed, nonzero)).unwrap()
    }

    /// One interpreter comparison: kernel name, its buffers, the parallel range.
    type Case = (String, Vec<strata_ir::TensorData>, Option<(i64, i64)>);

    /// A module with a kernel per op and type (and loops, a parallel kernel), with inputs.
    fn interpreter_cases() -> (Context, OpId, Vec<Case>) {
        const N: u64 = 32;
        let float_types =
            [(ElemType::F32, 1u32), (ElemType::F32, 4), (ElemType::F16, 1), (ElemType::F16, 8), (ElemType::BF16, 1)];
        let int_types = [
            (ElemType::I32, 1u32),
            (ElemType::I32, 4),
            (ElemType::U8, 1),
            (ElemType::U8, 16),
            (ElemType::I8, 16),
            (ElemType::I16, 8),
            (ElemType::U16, 8),
            (ElemType::I64, 1),
            (ElemType::Bool, 1),
        ];
        let float_bin = [BinOp::Add, BinOp::Sub, BinOp::Mul, BinOp::Div, BinOp::Min, BinOp::Max, BinOp::Pow];
        let int_bin = [
            BinOp::Add,
            BinOp::Sub,
            BinOp::Mul,
            BinOp::Div,
            BinOp::Rem,
            BinOp::Min,
            BinOp::Max,
            BinOp::And,
            BinOp::Or,
            BinOp::Xor,
        ];
        let float_un: Vec<UnOp> = UnOp::ALL.into_iter().filter(|&u| u != UnOp::Not).collect();
        let int_un = [UnOp::Neg, UnOp::Abs, UnOp::Not];
        let scalars = [
            ElemType::F32,
            ElemType::F16,
            ElemType::BF16,
            ElemType::I8,
            ElemType::U8,
            ElemType::I16,
            ElemType::U16,
            ElemType::I32,
            ElemType::I64,
            ElemType::Bool,
        ];
        let vec_casts = [
            (ElemType::F32, ElemType::I32, 4u32),
            (ElemType::I32, ElemType::F32, 4),
            (ElemType::I8, ElemType::U8, 16),
            (ElemType::U8, ElemType::I8, 16),
            (ElemType::F16, ElemType::I16, 8),
            (ElemType::U16, ElemType::F16, 8),
            (ElemType::I16, ElemType::U16, 8),
        ];
        // (name, inputs) of every kernel, built next to it.
        let mut cases: Vec<Case> = Vec::new();
        let (ctx, module) = module_with(|rw, m| {
            let mut seed = 0u64;
            let mut ins = |elems: &[ElemType], out: ElemType, nonzero_last: bool| -> Vec<strata_ir::TensorData> {
                seed += 1;
                let mut v: Vec<_> = elems
                    .iter()
                    .enumerate()
                    .map(|(i, &e)| tensor(e, N as usize, seed * 10 + i as u64, nonzero_last && i == 1))
                    .collect();
                v.push(strata_ir::TensorData::zeros(out, vec![N as usize]).unwrap());
                v
            };
            for (e, lanes) in float_types {
                for op in float_bin {
                    let name = format!("{}_{e}_{lanes}", op.name());
                    elementwise(rw, m, &name, &[e, e], e, N, lanes, |k, x| k.binary(op, x[0], x[1]));
                    cases.push((name, ins(&[e, e], e, false), None));
                }
                for &op in &float_un {
                    let name = format!("{}_{e}_{lanes}", op.name());
                    elementwise(rw, m, &name, &[e], e, N, lanes, |k, x| k.unary(op, x[0]));
                    cases.push((name, ins(&[e], e, false), None));
                }
                let name = format!("fma_{e}_{lanes}");
                elementwise(rw, m, &name, &[e, e, e], e, N, lanes, |k, x| k.fma(x[0], x[1], x[2]));
                cases.push((name, ins(&[e, e, e], e, false), None));
            }
            for (e, lanes) in int_types {
                for op in int_bin {
                    let name = format!("{}_{e}_{lanes}", op.name());
                    elementwise(rw, m, &name, &[e, e], e, N, lanes, |k, x| k.binary(op, x[0], x[1]));
                    cases.push((name, ins(&[e, e], e, matches!(op, BinOp::Div | BinOp::Rem)), None));
                }
                for op in int_un {
                    let name = format!("{}_{e}_{lanes}", op.name());
                    elementwise(rw, m, &name, &[e], e, N, lanes, |k, x| k.unary(op, x[0]));
                    cases.push((name, ins(&[e], e, false), None));
                }
            }
            for from in scalars {
                for to in scalars {
                    if from == to {
                        continue;
                    }
                    let name = format!("cast_{from}_{to}");
                    elementwise(rw, m, &name, &[from], to, N, 1, |k, x| {
                        let t = k.scalar_ty(to);
                        k.cast(x[0], t)
                    });
                    cases.push((name, ins(&[from], to, false), None));
                }
            }
            for (from, to, lanes) in vec_casts {
                let name = format!("vcast_{from}_{to}");
                elementwise(rw, m, &name, &[from], to, N, lanes, |k, x| {
                    let t = k.vector_ty(to, lanes);
                    k.cast(x[0], t)
                });
                cases.push((name, ins(&[from], to, false), None));
            }
            for pred in CmpPred::ALL {
                for (e, lanes) in [
                    (ElemType::F32, 1u32),
                    (ElemType::F32, 4),
                    (ElemType::I32, 4),
                    (ElemType::U8, 16),
                    (ElemType::F16, 8),
                    (ElemType::U16, 1),
                ] {
                    let name = format!("cmpsel_{}_{e}_{lanes}", pred.name());
                    elementwise(rw, m, &name, &[e, e], e, N, lanes, |k, x| {
                        let c = k.cmp(pred, x[0], x[1]);
                        k.select(c, x[0], x[1])
                    });
                    cases.push((name, ins(&[e, e], e, false), None));
                }
            }
            for red in [LaneReduce::Add, LaneReduce::Max, LaneReduce::Min] {
                for (e, lanes) in [
                    (ElemType::F32, 4u32),
                    (ElemType::I32, 4),
                    (ElemType::U8, 16),
                    (ElemType::I16, 8),
                    (ElemType::F16, 8),
                ] {
                    let name = format!("reduce_{}_{e}", red.name());
                    let src = buf(rw, &[N], e);
                    let dst = buf(rw, &[N / u64::from(lanes)], e);
                    let (mut k, args) = KernelBuilder::new(rw, m, &name, &[src, dst]);
                    k.for_range(0, (N / u64::from(lanes)) as i64, 1, |k, r| {
                        let at = k.mul_i(r, i64::from(lanes));
                        let v = k.load_vec(args[0], &[at], lanes);
                        let s = k.reduce_lanes(red, v);
                        k.store(s, args[1], &[r]);
                        Ok::<(), ()>(())
                    })
                    .unwrap();
                    k.finish();
                    let mut v = ins(&[e], e, false);
                    v[1] = strata_ir::TensorData::zeros(e, vec![(N / u64::from(lanes)) as usize]).unwrap();
                    cases.push((name, v, None));
                }
            }
            for (n, step, unroll) in [(32u64, 1i64, 4i64), (30, 1, 4), (31, 2, 3), (32, 3, 8)] {
                let name = format!("sum_{n}_{step}_{unroll}");
                sum_kernel(rw, m, &name, n, step, unroll);
                cases.push((
                    name,
                    vec![
                        tensor(ElemType::F32, n as usize, 99, false),
                        strata_ir::TensorData::zeros(ElemType::F32, vec![2]).unwrap(),
                    ],
                    None,
                ));
            }
            let n = 37u64;
            let a = buf(rw, &[n], ElemType::F32);
            let (mut k, args) = KernelBuilder::new(rw, m, "affine", &[a, a]);
            k.parallel(n as i64, |k, i| {
                let x = k.load(args[0], &[i]);
                let fty = k.scalar_ty(ElemType::F32);
                let fi = k.cast(i, fty);
                let y = k.fma(x, x, fi);
                k.store(y, args[1], &[i]);
                Ok::<(), ()>(())
            })
            .unwrap();
            k.finish();
            for range in [(0, 37), (0, 10), (10, 37), (-5, 3), (30, 100), (7, 7)] {
                let inputs =
                    vec![tensor(ElemType::F32, n as usize, 5, false), tensor(ElemType::F32, n as usize, 6, false)];
                cases.push(("affine".to_string(), inputs, Some(range)));
            }
        });
        (ctx, module, cases)
    }

    #[test]
    fn compiled_kernels_match_the_interpreter() {
        let (ctx, module, cases) = interpreter_cases();
        let code = jit(&ctx, module);
        for (name, inputs, range) in &cases {
            check_with_interpreter(&ctx, module, &code, name, inputs, *range);
        }
        assert!(cases.len() > 300, "{}", cases.len());
    }

    /// The same comparisons for aarch64 code: one object with every kernel, linked with a C
    /// harness that runs them all on one arena of buffers, run under `qemu-aarch64`. Helpers
    /// come from the C library there, so their results may differ from Rust's in the last bits.
    #[test]
    fn aarch64_kernels_match_the_interpreter_under_qemu() {
        let tools = match crate::cross::aarch64_tools() {
            Ok(t) => t,
            Err(e) if std::env::var_os("CI").is_some() => panic!("{e}"),
            Err(e) => {
                println!("skipped: {e}");
                return;
            }
        };
        let (ctx, module, cases) = interpreter_cases();
        let object = crate::compile::object_module(&ctx, module, Target::Aarch64).unwrap();
        // Lay every case's buffers out in one arena, 16-byte aligned.
        let mut arena: Vec<u8> = Vec::new();
        let mut offsets: Vec<Vec<usize>> = Vec::new();
        for (_, inputs, _) in &cases {
            let mut offs = Vec::new();
            for t in inputs {
                offs.push(arena.len());
                arena.extend_from_slice(t.bytes());
                arena.resize(arena.len().div_ceil(16) * 16 + 16, 0);
            }
            offsets.push(offs);
        }
        let mut c = String::from(
            "#include <stdint.h>\n#include <stdio.h>\n#include <stdlib.h>\n\ntypedef void (*kernel)(void **, int64_t, int64_t);\n",
        );
        let mut names: Vec<&str> = cases.iter().map(|c| c.0.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        for n in &names {
            c.push_str(&format!("void {n}(void **, int64_t, int64_t);\n"));
        }
        c.push_str(&format!(
            "int main(void) {{\n  size_t n = {};\n  unsigned char *a = aligned_alloc(16, n);\n  FILE *f = fopen(\"in.bin\", \"rb\");\n  if (!f || fread(a, 1, n, f) != n) return 2;\n  fclose(f);\n  void *args[8];\n",
            arena.len()
        ));
        for ((name, _, range), offs) in cases.iter().zip(&offsets) {
            for (i, o) in offs.iter().enumerate() {
                c.push_str(&format!("  args[{i}] = a + {o};\n"));
            }
            let (b, e) = match range {
                Some((b, e)) => (format!("{b}"), format!("{e}")),
                None => ("INT64_MIN".to_string(), "INT64_MAX".to_string()),
            };
            c.push_str(&format!("  {name}(args, {b}, {e});\n"));
        }
        c.push_str("  f = fopen(\"out.bin\", \"wb\");\n  if (!f || fwrite(a, 1, n, f) != n) return 3;\n  fclose(f);\n  return 0;\n}\n");
        let dir = std::env::temp_dir().join(format!("strata-codegen-interp-aarch64-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("in.bin"), &arena).unwrap();
        let out = tools.link_and_run(&dir, &object, &c, &[]).unwrap_or_else(|e| panic!("{e}"));
        assert!(out.status.success(), "harness failed: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
        let result = std::fs::read(dir.join("out.bin")).unwrap();
        for ((name, inputs, range), offs) in cases.iter().zip(&offsets) {
            let want = interpret(&ctx, module, name, inputs, *range);
            let got: Vec<&[u8]> = offs.iter().map(|&o| &result[o..]).collect();
            let ulps = if calls_helper(name) { 4 } else { 0 };
            assert_same_buffers(&format!("aarch64 {name}"), inputs, &want, &got, ulps);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
