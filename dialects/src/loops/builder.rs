//! Builders for loops-level IR: [`KernelBuilder`] writes one kernel function
//! (loop nests, loads, stores, arithmetic), [`ProgramBuilder`] writes the
//! program function (allocations, constants, views, launches).
//!
//! The kernel builder keeps the IR small and code generation simple:
//!
//! - index and value constants are created once per kernel, in its entry
//!   block (visible from every nested loop body);
//! - index arithmetic on known constants folds at build time, and `x + 0`,
//!   `x * 1`, `x * 0` fold too, so subscripts of fully unrolled code are
//!   constants;
//! - a constant-trip loop of one iteration is emitted as its body (with the
//!   index a constant), of zero iterations as nothing.
//!
//! ```
//! use strata_dialects::loops::{BinOp, KernelBuilder};
//! use strata_ir::{BufferType, Dim, ElemType, Layout, Rewriter, TypeData};
//! let mut ctx = strata_dialects::context();
//! let mut rw = Rewriter::new(&mut ctx);
//! let module = strata_dialects::loops::builder::new_module(&mut rw);
//! let buf = rw.ctx_mut().intern_type(TypeData::Buffer(BufferType {
//!     shape: vec![Dim::Fixed(8)], elem: ElemType::F32, layout: Layout::Nchw, strides: None,
//! }));
//! let (mut k, args) = KernelBuilder::new(&mut rw, module, "double", &[buf, buf]);
//! k.for_range(0, 8, 4, |k, i| {
//!     let x = k.load_vec(args[0], &[i], 4);
//!     let y = k.binary(BinOp::Add, x, x);
//!     k.store(y, args[1], &[i]);
//!     Ok::<(), ()>(())
//! }).unwrap();
//! k.finish();
//! ```

use super::{BinOp, CmpPred, LaneReduce, UnOp, ValueKind, mask_elem};
use std::collections::HashMap;
use strata_ir::{
    AttrData, BlockId, Context, ElemType, FuncType, InsertPoint, Loc, OpBuild, OpId, Rewriter, Ty, TypeData, ValueId,
    VectorType,
};

/// Creates an empty detached `func.module`.
pub fn new_module(rw: &mut Rewriter<'_>) -> OpId {
    rw.create(OpBuild::new("func.module").regions(1), InsertPoint::Detached)
}

/// Creates `func.func @name(args) -> results` at the end of `module`'s body and
/// returns it with its entry block and block arguments.
pub fn new_function(
    rw: &mut Rewriter<'_>,
    module: OpId,
    name: &str,
    args: &[Ty],
    results: &[Ty],
) -> (OpId, BlockId, Vec<ValueId>) {
    let ctx = rw.ctx_mut();
    let fty = ctx.intern_type(TypeData::Func(FuncType { inputs: args.to_vec(), results: results.to_vec() }));
    let fty = ctx.intern_attr(AttrData::Type(fty));
    let name = ctx.intern_attr(AttrData::Str(name.to_string()));
    let mbody = rw.ctx().body(module, 0).expect("invariant: a module has a body");
    let func = rw.create(
        OpBuild::new("func.func").attr("sym_name", name).attr("function_type", fty).regions(1),
        InsertPoint::End(mbody),
    );
    let body = rw.ctx().body(func, 0).expect("invariant: a function has a body");
    let vals = args.iter().map(|&t| rw.add_block_arg(body, t)).collect();
    (func, body, vals)
}

/// Writes one kernel function. See the module docs.
pub struct KernelBuilder<'a, 'c> {
    rw: &'a mut Rewriter<'c>,
    func: OpId,
    entry: BlockId,
    block: BlockId,
    last_const: Option<OpId>,
    index_consts: HashMap<i64, ValueId>,
    value_consts: HashMap<(Ty, u64), ValueId>,
    known: HashMap<ValueId, i64>,
    loc: Loc,
}

impl<'a, 'c> KernelBuilder<'a, 'c> {
    /// Starts kernel `name` with buffer arguments of types `args` at the end of
    /// `module`; returns the builder and the arguments.
    pub fn new(rw: &'a mut Rewriter<'c>, module: OpId, name: &str, args: &[Ty]) -> (Self, Vec<ValueId>) {
        let (func, entry, vals) = new_function(rw, module, name, args, &[]);
        let b = KernelBuilder {
            rw,
            func,
            entry,
            block: entry,
            last_const: None,
            index_consts: HashMap::new(),
            value_consts: HashMap::new(),
            known: HashMap::new(),
            loc: Loc::default(),
        };
        (b, vals)
    }

    /// Sets the location given to the ops created from now on.
    pub fn set_loc(&mut self, loc: Loc) {
        self.loc = loc;
    }

    /// The context.
    pub fn ctx(&self) -> &Context {
        self.rw.ctx()
    }

    /// The context, mutably (for interning types and attributes).
    pub fn ctx_mut(&mut self) -> &mut Context {
        self.rw.ctx_mut()
    }

    /// The kernel function being built.
    pub fn func(&self) -> OpId {
        self.func
    }

    /// The type of a value.
    pub fn type_of(&self, v: ValueId) -> Ty {
        self.rw.ctx().value_type(v)
    }

    /// The scalar type `e`.
    pub fn scalar_ty(&mut self, e: ElemType) -> Ty {
        self.rw.ctx_mut().intern_type(TypeData::Scalar(e))
    }

    /// The vector type `vec<lanes x e>`.
    pub fn vector_ty(&mut self, e: ElemType, lanes: u32) -> Ty {
        self.rw.ctx_mut().intern_type(TypeData::Vector(VectorType { lanes, elem: e }))
    }

    /// `index`.
    pub fn index_ty(&mut self) -> Ty {
        self.rw.ctx_mut().intern_type(TypeData::Index)
    }

    fn op(&mut self, build: OpBuild) -> OpId {
        let at = InsertPoint::End(self.block);
        self.rw.create(build.loc(self.loc), at)
    }

    fn op1(&mut self, build: OpBuild) -> ValueId {
        let op = self.op(build);
        self.rw.ctx().op(op).results[0]
    }

    fn const_op(&mut self, build: OpBuild) -> ValueId {
        let at = match self.last_const {
            Some(c) => InsertPoint::After(c),
            None => match self.rw.ctx().block(self.entry).ops.first() {
                Some(&first) => InsertPoint::Before(first),
                None => InsertPoint::End(self.entry),
            },
        };
        let op = self.rw.create(build, at);
        self.last_const = Some(op);
        self.rw.ctx().op(op).results[0]
    }

    fn str_attr(&mut self, s: &str) -> strata_ir::Attr {
        self.rw.ctx_mut().intern_attr(AttrData::Str(s.to_string()))
    }

    fn int_attr(&mut self, i: i64) -> strata_ir::Attr {
        self.rw.ctx_mut().intern_attr(AttrData::Int(i))
    }

    /// The index constant `v`.
    pub fn index(&mut self, v: i64) -> ValueId {
        if let Some(&c) = self.index_consts.get(&v) {
            return c;
        }
        let ty = self.index_ty();
        let a = self.int_attr(v);
        let c = self.const_op(OpBuild::new("loops.index_const").attr("value", a).results(&[ty]));
        self.index_consts.insert(v, c);
        self.known.insert(c, v);
        c
    }

    /// The value of `v` if it is a known index constant.
    pub fn index_value(&self, v: ValueId) -> Option<i64> {
        self.known.get(&v).copied()
    }

    /// A scalar constant of type `ty`, or a vector with every lane `v`.
    pub fn constant(&mut self, ty: Ty, v: f64) -> ValueId {
        if let Some(&c) = self.value_consts.get(&(ty, v.to_bits())) {
            return c;
        }
        let a = self.rw.ctx_mut().intern_attr(AttrData::Float(strata_ir::FloatBits::new(v)));
        let c = self.const_op(OpBuild::new("loops.const").attr("value", a).results(&[ty]));
        self.value_consts.insert((ty, v.to_bits()), c);
        c
    }

    /// The `f32` constant `v`.
    pub fn f32(&mut self, v: f32) -> ValueId {
        let ty = self.scalar_ty(ElemType::F32);
        self.constant(ty, f64::from(v))
    }

    /// The `vec<4xf32>` constant with every lane `v`.
    pub fn f32x4(&mut self, v: f32) -> ValueId {
        let ty = self.vector_ty(ElemType::F32, 4);
        self.constant(ty, f64::from(v))
    }

    /// `op(a, b)`; folds index arithmetic on constants and the identities
    /// `x + 0`, `x - 0`, `x * 1`, `x * 0` on indices.
    pub fn binary(&mut self, op: BinOp, a: ValueId, b: ValueId) -> ValueId {
        let (ka, kb) = (self.index_value(a), self.index_value(b));
        if ValueKind::of(self.ctx(), self.type_of(a)) == ValueKind::Index {
            if let (Some(x), Some(y)) = (ka, kb)
                && let Some(r) = fold_index(op, x, y)
            {
                return self.index(r);
            }
            match (op, ka, kb) {
                (BinOp::Add, Some(0), _) | (BinOp::Mul, Some(1), _) => return b,
                (BinOp::Add | BinOp::Sub, _, Some(0)) | (BinOp::Mul | BinOp::Div, _, Some(1)) => return a,
                (BinOp::Mul, Some(0), _) | (BinOp::Mul, _, Some(0)) => return self.index(0),
                _ => {}
            }
        }
        let ty = self.type_of(a);
        let name = self.str_attr(op.name());
        self.op1(OpBuild::new("loops.binary").operands(&[a, b]).attr("op", name).results(&[ty]))
    }

    /// `a + b`.
    pub fn add(&mut self, a: ValueId, b: ValueId) -> ValueId {
        self.binary(BinOp::Add, a, b)
    }

    /// `a - b`.
    pub fn sub(&mut self, a: ValueId, b: ValueId) -> ValueId {
        self.binary(BinOp::Sub, a, b)
    }

    /// `a * b`.
    pub fn mul(&mut self, a: ValueId, b: ValueId) -> ValueId {
        self.binary(BinOp::Mul, a, b)
    }

    /// `max(a, b)`.
    pub fn max(&mut self, a: ValueId, b: ValueId) -> ValueId {
        self.binary(BinOp::Max, a, b)
    }

    /// `min(a, b)`.
    pub fn min(&mut self, a: ValueId, b: ValueId) -> ValueId {
        self.binary(BinOp::Min, a, b)
    }

    /// The index `a + k`.
    pub fn add_i(&mut self, a: ValueId, k: i64) -> ValueId {
        let k = self.index(k);
        self.add(a, k)
    }

    /// The index `a * k`.
    pub fn mul_i(&mut self, a: ValueId, k: i64) -> ValueId {
        let k = self.index(k);
        self.mul(a, k)
    }

    /// The index `Σ coeff · value + c`.
    pub fn affine(&mut self, terms: &[(ValueId, i64)], c: i64) -> ValueId {
        let mut acc = self.index(c);
        for &(v, k) in terms {
            let t = self.mul_i(v, k);
            acc = self.add(acc, t);
        }
        acc
    }

    /// `op(a)`.
    pub fn unary(&mut self, op: UnOp, a: ValueId) -> ValueId {
        let ty = self.type_of(a);
        let name = self.str_attr(op.name());
        self.op1(OpBuild::new("loops.unary").operands(&[a]).attr("op", name).results(&[ty]))
    }

    /// `a * b + c` with one rounding.
    pub fn fma(&mut self, a: ValueId, b: ValueId, c: ValueId) -> ValueId {
        let ty = self.type_of(a);
        self.op1(OpBuild::new("loops.fma").operands(&[a, b, c]).results(&[ty]))
    }

    /// `a pred b`: a `bool`, or a mask vector for vectors.
    pub fn cmp(&mut self, pred: CmpPred, a: ValueId, b: ValueId) -> ValueId {
        let ty = match ValueKind::of(self.ctx(), self.type_of(a)) {
            ValueKind::Vector(v) => self.vector_ty(mask_elem(v.elem), v.lanes),
            _ => self.scalar_ty(ElemType::Bool),
        };
        let name = self.str_attr(pred.name());
        self.op1(OpBuild::new("loops.cmp").operands(&[a, b]).attr("pred", name).results(&[ty]))
    }

    /// `cond ? a : b`.
    pub fn select(&mut self, cond: ValueId, a: ValueId, b: ValueId) -> ValueId {
        let ty = self.type_of(a);
        self.op1(OpBuild::new("loops.select").operands(&[cond, a, b]).results(&[ty]))
    }

    /// Converts `a` to `ty` (no op when it already has that type).
    pub fn cast(&mut self, a: ValueId, ty: Ty) -> ValueId {
        if self.type_of(a) == ty {
            return a;
        }
        self.op1(OpBuild::new("loops.cast").operands(&[a]).results(&[ty]))
    }

    /// A vector of `lanes` copies of scalar `s`.
    pub fn splat(&mut self, s: ValueId, lanes: u32) -> ValueId {
        let e = ValueKind::of(self.ctx(), self.type_of(s)).elem().unwrap_or(ElemType::F32);
        let ty = self.vector_ty(e, lanes);
        self.op1(OpBuild::new("loops.splat").operands(&[s]).results(&[ty]))
    }

    /// Lane `lane` of vector `v`.
    pub fn extract(&mut self, v: ValueId, lane: u32) -> ValueId {
        let e = ValueKind::of(self.ctx(), self.type_of(v)).elem().unwrap_or(ElemType::F32);
        let ty = self.scalar_ty(e);
        let l = self.int_attr(i64::from(lane));
        self.op1(OpBuild::new("loops.extract").operands(&[v]).attr("lane", l).results(&[ty]))
    }

    /// `v` with lane `lane` replaced by `s`.
    pub fn insert(&mut self, v: ValueId, s: ValueId, lane: u32) -> ValueId {
        let ty = self.type_of(v);
        let l = self.int_attr(i64::from(lane));
        self.op1(OpBuild::new("loops.insert").operands(&[v, s]).attr("lane", l).results(&[ty]))
    }

    /// The horizontal reduction of `v`.
    pub fn reduce_lanes(&mut self, op: LaneReduce, v: ValueId) -> ValueId {
        let e = ValueKind::of(self.ctx(), self.type_of(v)).elem().unwrap_or(ElemType::F32);
        let ty = self.scalar_ty(e);
        let name = self.str_attr(op.name());
        self.op1(OpBuild::new("loops.reduce_lanes").operands(&[v]).attr("op", name).results(&[ty]))
    }

    fn buffer_elem(&self, buf: ValueId) -> ElemType {
        match self.ctx().ty(self.type_of(buf)) {
            TypeData::Buffer(b) => b.elem,
            _ => ElemType::F32,
        }
    }

    /// The scalar at `buf[idx]`.
    pub fn load(&mut self, buf: ValueId, idx: &[ValueId]) -> ValueId {
        let e = self.buffer_elem(buf);
        let ty = self.scalar_ty(e);
        self.load_as(buf, idx, ty)
    }

    /// `lanes` consecutive elements from `buf[idx]` as a vector.
    pub fn load_vec(&mut self, buf: ValueId, idx: &[ValueId], lanes: u32) -> ValueId {
        let e = self.buffer_elem(buf);
        let ty = self.vector_ty(e, lanes);
        self.load_as(buf, idx, ty)
    }

    fn load_as(&mut self, buf: ValueId, idx: &[ValueId], ty: Ty) -> ValueId {
        let mut ops = vec![buf];
        ops.extend_from_slice(idx);
        self.op1(OpBuild::new("loops.load").operands(&ops).results(&[ty]))
    }

    /// Writes scalar or vector `value` at `buf[idx]`.
    pub fn store(&mut self, value: ValueId, buf: ValueId, idx: &[ValueId]) {
        let mut ops = vec![value, buf];
        ops.extend_from_slice(idx);
        self.op(OpBuild::new("loops.store").operands(&ops));
    }

    /// A loop `for i in (lb..ub).step_by(step)` carrying `inits`; `body` gets the
    /// index and the carried values and returns the next carried values. Returns
    /// the final carried values. With constant bounds, one iteration is inlined
    /// and zero iterations return `inits`.
    pub fn for_loop<E>(
        &mut self,
        lb: ValueId,
        ub: ValueId,
        step: ValueId,
        inits: &[ValueId],
        unroll: Option<i64>,
        body: impl FnOnce(&mut Self, ValueId, &[ValueId]) -> Result<Vec<ValueId>, E>,
    ) -> Result<Vec<ValueId>, E> {
        if let (Some(l), Some(u), Some(s)) = (self.index_value(lb), self.index_value(ub), self.index_value(step))
            && s > 0
        {
            if u <= l {
                return Ok(inits.to_vec());
            }
            if u - l <= s {
                return body(self, lb, inits);
            }
        }
        let mut ops = vec![lb, ub, step];
        ops.extend_from_slice(inits);
        let tys: Vec<Ty> = inits.iter().map(|&v| self.type_of(v)).collect();
        let mut build = OpBuild::new("loops.for").operands(&ops).results(&tys).regions(1);
        if let Some(u) = unroll.filter(|&u| u > 1) {
            let a = self.int_attr(u);
            build = build.attr("unroll", a);
        }
        let op = self.op(build);
        let inner = self.rw.ctx().body(op, 0).expect("invariant: loops.for has a body");
        let ity = self.index_ty();
        let i = self.rw.add_block_arg(inner, ity);
        let carried: Vec<ValueId> = tys.iter().map(|&t| self.rw.add_block_arg(inner, t)).collect();
        let outer = std::mem::replace(&mut self.block, inner);
        let next = body(self, i, &carried);
        let next = match next {
            Ok(n) => n,
            Err(e) => {
                self.block = outer;
                return Err(e);
            }
        };
        self.op(OpBuild::new("loops.yield").operands(&next));
        self.block = outer;
        Ok(self.rw.ctx().op(op).results.clone())
    }

    /// `for i in (lb..ub).step_by(step)` with constant bounds and nothing carried.
    pub fn for_range<E>(
        &mut self,
        lb: i64,
        ub: i64,
        step: i64,
        body: impl FnOnce(&mut Self, ValueId) -> Result<(), E>,
    ) -> Result<(), E> {
        let (l, u, s) = (self.index(lb), self.index(ub), self.index(step));
        self.for_loop(l, u, s, &[], None, |k, i, _| body(k, i).map(|()| Vec::new())).map(|_| ())
    }

    /// The kernel's parallel loop over `0..n` (at the top level, at most once).
    pub fn parallel<E>(&mut self, n: i64, body: impl FnOnce(&mut Self, ValueId) -> Result<(), E>) -> Result<(), E> {
        let (l, u) = (self.index(0), self.index(n));
        let op = self.op(OpBuild::new("loops.parallel").operands(&[l, u]).regions(1));
        let inner = self.rw.ctx().body(op, 0).expect("invariant: loops.parallel has a body");
        let ity = self.index_ty();
        let i = self.rw.add_block_arg(inner, ity);
        let outer = std::mem::replace(&mut self.block, inner);
        let r = body(self, i);
        if r.is_ok() {
            self.op(OpBuild::new("loops.yield"));
        }
        self.block = outer;
        r
    }

    /// Ends the kernel with `func.return` and returns it.
    pub fn finish(self) -> OpId {
        let at = InsertPoint::End(self.entry);
        self.rw.create(OpBuild::new("func.return").loc(self.loc), at);
        self.func
    }
}

fn fold_index(op: BinOp, x: i64, y: i64) -> Option<i64> {
    match op {
        BinOp::Add => x.checked_add(y),
        BinOp::Sub => x.checked_sub(y),
        BinOp::Mul => x.checked_mul(y),
        BinOp::Div => x.checked_div(y),
        BinOp::Rem => x.checked_rem(y),
        BinOp::Min => Some(x.min(y)),
        BinOp::Max => Some(x.max(y)),
        BinOp::And => Some(x & y),
        BinOp::Or => Some(x | y),
        BinOp::Xor => Some(x ^ y),
        BinOp::Pow => None,
    }
}

/// Writes the program function: buffers and kernel launches in order.
pub struct ProgramBuilder<'a, 'c> {
    rw: &'a mut Rewriter<'c>,
    module: OpId,
    func: OpId,
    body: BlockId,
}

impl<'a, 'c> ProgramBuilder<'a, 'c> {
    /// Starts program `name` taking `inputs` (buffer types) and returning
    /// `outputs` (buffer types) in `module`.
    pub fn new(
        rw: &'a mut Rewriter<'c>,
        module: OpId,
        name: &str,
        inputs: &[Ty],
        outputs: &[Ty],
    ) -> (Self, Vec<ValueId>) {
        let (func, body, args) = new_function(rw, module, name, inputs, outputs);
        (ProgramBuilder { rw, module, func, body }, args)
    }

    /// The rewriter (for writing kernels into the same module between program ops).
    pub fn rw(&mut self) -> &mut Rewriter<'c> {
        self.rw
    }

    /// The module.
    pub fn module(&self) -> OpId {
        self.module
    }

    /// The program function.
    pub fn func(&self) -> OpId {
        self.func
    }

    fn op1(&mut self, build: OpBuild) -> ValueId {
        let op = self.rw.create(build, InsertPoint::End(self.body));
        self.rw.ctx().op(op).results[0]
    }

    /// A temporary buffer of type `ty`.
    pub fn alloc(&mut self, ty: Ty) -> ValueId {
        self.op1(OpBuild::new("loops.alloc").results(&[ty]))
    }

    /// A constant buffer of type `ty` holding the dense attribute `value`.
    pub fn constant(&mut self, ty: Ty, value: strata_ir::Attr) -> ValueId {
        self.op1(OpBuild::new("loops.constant").attr("value", value).results(&[ty]))
    }

    /// `source` seen as type `ty`.
    pub fn view(&mut self, source: ValueId, ty: Ty) -> ValueId {
        self.op1(OpBuild::new("loops.view").operands(&[source]).results(&[ty]))
    }

    /// Runs kernel `kernel` on `buffers`.
    pub fn launch(&mut self, kernel: &str, buffers: &[ValueId], loc: Loc) -> OpId {
        let k = self.rw.ctx_mut().intern_attr(AttrData::SymbolRef(kernel.to_string()));
        self.rw.create(
            OpBuild::new("loops.launch").operands(buffers).attr("kernel", k).loc(loc),
            InsertPoint::End(self.body),
        )
    }

    /// Ends the program returning `outputs`.
    pub fn finish(self, outputs: &[ValueId]) -> OpId {
        self.rw.create(OpBuild::new("func.return").operands(outputs), InsertPoint::End(self.body));
        self.func
    }
}
