//! `lower-graph-to-loops` — graph and layout ops to the loops dialect.
//!
//! Expects: a verified module whose functions hold graph/layout ops on tensors
//! with static shapes (symbolic shapes are specialised first: the executor
//! lowers once per concrete input shape). Produces: for each function, a
//! program function of the same name (buffer arguments, `loops.alloc`,
//! `loops.constant`, `loops.view`, `loops.launch`, returning buffers) plus one
//! kernel function per launched kernel (`<func>_k<N>_<op>`).
//!
//! How ops become kernels:
//!
//! - ops whose operands are all constants are evaluated with the reference
//!   evaluator and become `loops.constant` (packed weights, shape arithmetic);
//! - `graph.reshape` and `graph.axis_add_remove` become free `loops.view`s;
//! - a float `graph.elemwise` whose chained operand is the only use of a
//!   kernel's result and has the result's shape is **fused into that kernel's
//!   epilogue** ([`Epilogue`]): bias/z/nonlinearity after a convolution,
//!   chains of elementwise ops after each other; its other operands become
//!   extra kernel inputs read at the same (broadcast) index;
//! - every other op is lowered by the function [`lowering`] names for it
//!   (one file per op family: `conv`, `matmul`, `elemwise`, `data`, `pool`,
//!   `reduce`, `image`, `norm`).
//!
//! Options: `fuse` (default true) turns epilogue fusion off, for comparison;
//! `fuse-dimshuffle` (default false) reads a dimshuffle that only an
//! elementwise op uses through a strided `loops.view` instead of materialising
//! it; `fuse-reduce` (default false) evaluates an elementwise kernel that only a
//! reduction reads inside the reduction's loads.
//!
//! ```text
//! func @main(%x: tensor<1x8xf32>) -> tensor<1x8xf32> {
//!   %0 = graph.elemwise(%x) {mode = "relu"} : (tensor<1x8xf32>) -> tensor<1x8xf32>
//!   return(%0)
//! }
//! ```
//! becomes a program `@main(%x: buffer<1x8xf32>) -> buffer<1x8xf32>` that
//! allocates the result and launches kernel `@main_k0_elemwise`, whose body is a
//! vector loop `max(x, 0)` over the 8 elements.

pub mod conv;
pub mod data;
pub mod elemwise;
pub mod image;
pub mod matmul;
pub mod norm;
pub mod pool;
pub mod promote_f16;
pub mod quant;
pub mod reduce;
pub mod specialize;

#[cfg(test)]
pub(crate) mod tests;

use std::collections::{BTreeMap, HashMap};
use strata_dialects::graph::elemwise::Mode;
use strata_dialects::loops::{BinOp, CmpPred, KernelBuilder, ProgramBuilder, UnOp, ValueKind};
use strata_ir::pass::{Changed, OptionKind, OptionSpec, Pass, PassError, PassInfo, PassOptions, PassStats};
use strata_ir::{
    AttrData, BufferType, Context, DenseAttr, DenseStorage, ElemType, OpId, OpTraits, Rewriter, TensorData, TensorType,
    Ty, TypeData, ValueId,
};

/// A lowering failure: the op, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("lowering `{op}`: {message}")]
pub struct LowerError {
    /// Op name.
    pub op: String,
    /// What is not supported or wrong.
    pub message: String,
}

impl LowerError {
    /// An error about `op`.
    pub fn new(ctx: &Context, op: OpId, message: impl Into<String>) -> Self {
        LowerError { op: ctx.op_name(op).to_string(), message: message.into() }
    }
}

/// Result of a lowering.
pub type LResult<T> = Result<T, LowerError>;

/// One op's lowering: fills the kernel that [`KernelCx`] holds.
pub type LowerFn = fn(&mut KernelCx<'_, '_, '_>, OpId) -> LResult<()>;

/// The lowering of each graph/layout op that becomes a kernel.
pub fn lowering(name: &str) -> Option<LowerFn> {
    Some(match name {
        "graph.conv2d" | "graph.conv_bias" | "layout.conv_bias" => conv::lower_conv,
        "graph.conv_transpose2d" => conv::lower_conv_transpose,
        "graph.matmul" | "graph.batched_matmul" => matmul::lower_matmul,
        "graph.elemwise" => elemwise::lower_elemwise,
        "graph.typecvt" => elemwise::lower_typecvt,
        "graph.broadcast"
        | "graph.concat"
        | "graph.dimshuffle"
        | "graph.subtensor"
        | "graph.pad"
        | "layout.relayout"
        | "layout.weight"
        | "graph.reshape"
        | "graph.axis_add_remove" => data::lower_data,
        "graph.pooling"
        | "layout.pooling"
        | "graph.global_avg_pool"
        | "layout.global_avg_pool"
        | "graph.adaptive_pooling"
        | "layout.adaptive_pooling" => pool::lower_pool,
        "graph.reduce" => reduce::lower_reduce,
        "graph.softmax" | "graph.batch_norm" => norm::lower_norm,
        "graph.resize" | "layout.resize" | "graph.warp_perspective" | "graph.fused_preprocess" => image::lower_image,
        _ => return None,
    })
}

/// What a kernel's lowering works with.
pub struct KernelCx<'k, 'a, 'c> {
    /// The kernel being written.
    pub k: &'k mut KernelBuilder<'a, 'c>,
    /// The kernel arguments holding the op's operands, in operand order.
    pub inputs: Vec<ValueId>,
    /// The kernel argument to write the result to.
    pub output: ValueId,
    /// Elementwise ops fused after the op: [`KernelCx::emit`] applies them.
    pub epilogue: Epilogue,
}

impl KernelCx<'_, '_, '_> {
    /// Applies the epilogue to `value` (a scalar or vector of the op's result
    /// element type, for output position `idx`) and stores it at `output[idx]`.
    pub fn emit(&mut self, value: ValueId, idx: &[ValueId]) -> LResult<()> {
        self.epilogue.store(self.k, self.output, value, idx)
    }

    /// The tensor type of `v` (an operand or result of the op being lowered).
    pub fn tensor(&self, v: ValueId) -> TensorType {
        self.k.ctx().value_tensor(v).cloned().unwrap_or_else(|| TensorType::fixed(&[], ElemType::F32))
    }

    /// Operand `i` of `op`.
    pub fn operand(&self, op: OpId, i: usize) -> ValueId {
        self.k.ctx().op(op).operands[i]
    }

    /// Static shape of a tensor value as `usize`s.
    pub fn shape(&self, v: ValueId) -> Vec<usize> {
        static_shape(&self.tensor(v)).unwrap_or_default()
    }

    /// An error about `op`.
    pub fn err(&self, op: OpId, message: impl Into<String>) -> LowerError {
        LowerError::new(self.k.ctx(), op, message)
    }
}

/// What was fused into a kernel around its op: elementwise steps applied to
/// its result before it is stored, and (with `fuse-reduce`) the elementwise
/// computation that produces its first operand, evaluated where the op reads it.
#[derive(Clone, Debug, Default)]
pub struct Epilogue {
    /// In order of application.
    pub steps: Vec<EpilogueStep>,
    /// The fused producer of operand 0 (only lowerings that read through it,
    /// `graph.reduce`, get one).
    pub input_producer: Option<Box<Prologue>>,
}

/// An elementwise kernel computed inside its consumer's loads: the root mode on
/// its operands (read with broadcasting) followed by its own fused steps.
#[derive(Clone, Debug)]
pub struct Prologue {
    /// The root elementwise mode.
    pub mode: Mode,
    /// The root's operands: kernel argument and stored shape.
    pub operands: Vec<(ValueId, Vec<usize>)>,
    /// The shape of the produced value.
    pub shape: Vec<usize>,
    /// The producer's own fused steps.
    pub steps: Epilogue,
}

impl Prologue {
    /// The produced value at `idx` (a vector of `lanes` consecutive elements, or a scalar).
    pub fn read(&self, k: &mut KernelBuilder<'_, '_>, idx: &[ValueId], lanes: Option<u32>) -> LResult<ValueId> {
        let args: Vec<ValueId> =
            self.operands.iter().map(|(b, s)| load_broadcast(k, *b, s, &self.shape, idx, lanes)).collect();
        let v =
            emit_elemwise(k, self.mode, &args).map_err(|m| LowerError { op: "graph.elemwise".into(), message: m })?;
        self.steps.apply(k, v, idx)
    }
}

/// One fused `graph.elemwise`.
#[derive(Clone, Debug)]
pub struct EpilogueStep {
    /// The mode.
    pub mode: Mode,
    /// Which operand of the elemwise is the running value.
    pub chained: usize,
    /// The other operands, in operand order: kernel argument and stored shape.
    pub others: Vec<(ValueId, Vec<usize>)>,
    /// The shape of the running value (the kernel's output, stored shape).
    pub shape: Vec<usize>,
}

impl Epilogue {
    /// Whether there is nothing to apply.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Applies the epilogue to `value` at output position `idx` and stores the
    /// result at `output[idx]` (what [`KernelCx::emit`] does, for lowerings
    /// that hold the kernel builder apart from their `KernelCx`).
    pub fn store(
        &self,
        k: &mut KernelBuilder<'_, '_>,
        output: ValueId,
        value: ValueId,
        idx: &[ValueId],
    ) -> LResult<()> {
        let v = self.apply(k, value, idx)?;
        k.store(v, output, idx);
        Ok(())
    }

    /// Applies every step to `value` at output position `idx`; vector values
    /// read the other operands as vectors along the last dimension (or splat a
    /// scalar when that dimension is broadcast).
    pub fn apply(&self, k: &mut KernelBuilder<'_, '_>, mut value: ValueId, idx: &[ValueId]) -> LResult<ValueId> {
        let lanes = match ValueKind::of(k.ctx(), k.type_of(value)) {
            ValueKind::Vector(v) => Some(v.lanes),
            _ => None,
        };
        for step in &self.steps {
            let mut args = Vec::with_capacity(step.others.len() + 1);
            let mut others = step.others.iter();
            for i in 0..=step.others.len() {
                if i == step.chained {
                    args.push(value);
                    continue;
                }
                let (buf, shape) = others.next().expect("invariant: one shape per other operand");
                args.push(load_broadcast(k, *buf, shape, &step.shape, idx, lanes));
            }
            value = emit_elemwise(k, step.mode, &args)
                .map_err(|m| LowerError { op: "graph.elemwise".into(), message: m })?;
        }
        Ok(value)
    }
}

/// Reads `buf` (of stored shape `shape`, numpy-broadcast to `out_shape`) at
/// output position `idx`: a scalar, or with `lanes` a vector (a splat when the
/// last dimension is broadcast).
pub fn load_broadcast(
    k: &mut KernelBuilder<'_, '_>,
    buf: ValueId,
    shape: &[usize],
    out_shape: &[usize],
    idx: &[ValueId],
    lanes: Option<u32>,
) -> ValueId {
    let off = out_shape.len() - shape.len();
    let sub: Vec<ValueId> =
        shape.iter().enumerate().map(|(d, &n)| if n == 1 { k.index(0) } else { idx[off + d] }).collect();
    let last_broadcast = shape.last().is_none_or(|&n| n == 1) && out_shape.last().is_some_and(|&n| n != 1);
    // A strided view (a fused dimshuffle) whose last dimension is not contiguous
    // is read lane by lane.
    let strided_last = match k.ctx().ty(k.type_of(buf)) {
        TypeData::Buffer(b) => b.strides.as_ref().is_some_and(|st| st.last() != Some(&1)),
        _ => false,
    };
    match lanes {
        Some(l) if !last_broadcast && strided_last => {
            let last = *sub.last().expect("invariant: a vector access has a last dimension");
            let mut at = sub.clone();
            let first = k.load(buf, &at);
            let mut v = k.splat(first, l);
            for lane in 1..l {
                *at.last_mut().expect("invariant: non-empty") = k.add_i(last, i64::from(lane));
                let s = k.load(buf, &at);
                v = k.insert(v, s, lane);
            }
            v
        }
        Some(l) if !last_broadcast => k.load_vec(buf, &sub, l),
        Some(l) => {
            let s = k.load(buf, &sub);
            k.splat(s, l)
        }
        None => k.load(buf, &sub),
    }
}

/// Emits `mode(args)` on f32 scalars or `vec<4xf32>` vectors (all of one type).
pub fn emit_elemwise(k: &mut KernelBuilder<'_, '_>, mode: Mode, args: &[ValueId]) -> Result<ValueId, String> {
    let ty = k.type_of(args[0]);
    let c = |k: &mut KernelBuilder<'_, '_>, v: f32| k.constant(ty, f64::from(v));
    let want = |n: usize| {
        if args.len() == n { Ok(()) } else { Err(format!("mode {mode:?} takes {n} operands, got {}", args.len())) }
    };
    let is_float = ValueKind::of(k.ctx(), ty).elem().is_some_and(|e| e.is_float());
    let sigmoid = |k: &mut KernelBuilder<'_, '_>, x: ValueId| {
        let n = k.unary(UnOp::Neg, x);
        let e = k.unary(UnOp::Exp, n);
        let one = c(k, 1.0);
        let d = k.add(one, e);
        k.binary(BinOp::Div, one, d)
    };
    let h_swish = |k: &mut KernelBuilder<'_, '_>, x: ValueId| {
        let three = c(k, 3.0);
        let (zero, six) = (c(k, 0.0), c(k, 6.0));
        let t = k.add(x, three);
        let t = k.max(t, zero);
        let t = k.min(t, six);
        let t = k.mul(x, t);
        k.binary(BinOp::Div, t, six)
    };
    Ok(match mode {
        Mode::Relu => {
            want(1)?;
            let z = c(k, 0.0);
            k.max(args[0], z)
        }
        Mode::Sigmoid => {
            want(1)?;
            sigmoid(k, args[0])
        }
        Mode::Tanh | Mode::Exp | Mode::Log | Mode::Sqrt | Mode::Floor | Mode::Ceil | Mode::Round if is_float => {
            want(1)?;
            let u = match mode {
                Mode::Tanh => UnOp::Tanh,
                Mode::Exp => UnOp::Exp,
                Mode::Log => UnOp::Log,
                Mode::Sqrt => UnOp::Sqrt,
                Mode::Floor => UnOp::Floor,
                Mode::Ceil => UnOp::Ceil,
                _ => UnOp::Round,
            };
            k.unary(u, args[0])
        }
        Mode::Abs => {
            want(1)?;
            k.unary(UnOp::Abs, args[0])
        }
        Mode::Neg => {
            want(1)?;
            k.unary(UnOp::Neg, args[0])
        }
        Mode::Log1p if is_float => {
            want(1)?;
            let one = c(k, 1.0);
            let t = k.add(one, args[0]);
            k.unary(UnOp::Log, t)
        }
        Mode::Expm1 if is_float => {
            want(1)?;
            let e = k.unary(UnOp::Exp, args[0]);
            let one = c(k, 1.0);
            k.sub(e, one)
        }
        Mode::HSwish if is_float => {
            want(1)?;
            h_swish(k, args[0])
        }
        Mode::Gelu if is_float => {
            want(1)?;
            let s = c(k, std::f32::consts::FRAC_1_SQRT_2);
            let t = k.mul(args[0], s);
            let e = k.unary(UnOp::Erf, t);
            let one = c(k, 1.0);
            let t = k.add(one, e);
            let half = c(k, 0.5);
            let t = k.mul(t, half);
            k.mul(args[0], t)
        }
        Mode::Add | Mode::Sub | Mode::Mul | Mode::Max | Mode::Min => {
            want(2)?;
            let b = match mode {
                Mode::Add => BinOp::Add,
                Mode::Sub => BinOp::Sub,
                Mode::Mul => BinOp::Mul,
                Mode::Max => BinOp::Max,
                _ => BinOp::Min,
            };
            k.binary(b, args[0], args[1])
        }
        Mode::Div if is_float => {
            want(2)?;
            k.binary(BinOp::Div, args[0], args[1])
        }
        Mode::FloorDiv if is_float => {
            want(2)?;
            let q = k.binary(BinOp::Div, args[0], args[1]);
            k.unary(UnOp::Floor, q)
        }
        Mode::Pow if is_float => {
            want(2)?;
            k.binary(BinOp::Pow, args[0], args[1])
        }
        Mode::FuseAddRelu => {
            want(2)?;
            let s = k.add(args[0], args[1]);
            let z = c(k, 0.0);
            k.max(s, z)
        }
        Mode::FuseAddSigmoid if is_float => {
            want(2)?;
            let s = k.add(args[0], args[1]);
            sigmoid(k, s)
        }
        Mode::FuseAddHSwish if is_float => {
            want(2)?;
            let s = k.add(args[0], args[1]);
            h_swish(k, s)
        }
        Mode::LogSumExp if is_float => {
            // max(a, b) + log(1 + exp(-|a - b|)); both -inf gives -inf, as in the reference.
            want(2)?;
            let m = k.max(args[0], args[1]);
            let d = k.sub(args[0], args[1]);
            let d = k.unary(UnOp::Abs, d);
            let d = k.unary(UnOp::Neg, d);
            let e = k.unary(UnOp::Exp, d);
            let one = c(k, 1.0);
            let t = k.add(one, e);
            let l = k.unary(UnOp::Log, t);
            let r = k.add(m, l);
            let ninf = c(k, f32::NEG_INFINITY);
            let is_ninf = k.cmp(CmpPred::Eq, m, ninf);
            k.select(is_ninf, m, r)
        }
        Mode::Fma3 if is_float => {
            want(3)?;
            let p = k.mul(args[0], args[1]);
            k.add(p, args[2])
        }
        other => return Err(format!("mode {other:?} is not lowered for {}", strata_ir::type_to_string(k.ctx(), ty))),
    })
}

/// Writes every element of the output (stored shape `shape`): the leading
/// dimensions flattened into one parallel loop split across threads, the
/// remaining ones as nested loops inside it, the last dimension in vectors of
/// `lanes` (if given and the dimension is long enough) plus a scalar
/// remainder. `value(k, idx, lanes)` computes the value at `idx` (a vector of
/// `lanes` elements starting there, or a scalar for `None`); the epilogue is
/// applied and the result stored.
///
/// The parallel loop takes as many leading dimensions as keep each of its
/// iterations to at least a few thousand elements while leaving at least 32
/// iterations to split (`[1, 64, 112, 112]`: 64 iterations of 112 rows), so
/// the div/rem decomposing its index runs rarely and the inner subscripts are
/// loop counters (the invariant part of each address is hoisted, unrolled
/// copies differ only in the constant offset); short vector loops (NCHW88's
/// last dimension of 8) are unrolled completely and the loop around them in
/// part, long ones 4 times.
pub fn map_output(
    cx: &mut KernelCx<'_, '_, '_>,
    shape: &[usize],
    lanes: Option<u32>,
    mut value: impl FnMut(&mut KernelBuilder<'_, '_>, &[ValueId], Option<u32>) -> LResult<ValueId>,
) -> LResult<()> {
    /// Elements an iteration of the parallel loop should have at least.
    const INNER_TARGET: usize = 4096;
    /// Parallel iterations to keep when taking a dimension into the inner loops.
    const MIN_PARALLEL: usize = 32;

    type Emit<'e> = dyn FnMut(&mut KernelBuilder<'_, '_>, &[ValueId], Option<u32>) -> LResult<()> + 'e;

    /// A loop `lb..ub` (step `step`, unrolled `unroll` times) setting `idx[d]`.
    fn run(
        k: &mut KernelBuilder<'_, '_>,
        (lb, ub, step): (i64, i64, i64),
        unroll: i64,
        d: usize,
        idx: &mut Vec<ValueId>,
        body: &mut dyn FnMut(&mut KernelBuilder<'_, '_>, &mut Vec<ValueId>) -> LResult<()>,
    ) -> LResult<()> {
        let (l, u, s) = (k.index(lb), k.index(ub), k.index(step));
        k.for_loop(l, u, s, &[], Some(unroll), |k, i, _| {
            idx[d] = i;
            body(k, idx).map(|()| Vec::new())
        })
        .map(|_| ())
    }

    /// Unroll factor of a loop of `trip` iterations whose body emits `emits` values.
    fn unroll_for(trip: i64, emits: i64) -> i64 {
        if trip * emits <= 8 { trip } else { (8 / emits.max(1)).clamp(1, 4) }
    }

    /// The loops over dimensions `d..` of `shape`.
    fn nest(
        k: &mut KernelBuilder<'_, '_>,
        shape: &[usize],
        d: usize,
        idx: &mut Vec<ValueId>,
        lanes: Option<u32>,
        emit: &mut Emit<'_>,
    ) -> LResult<()> {
        let n = shape.len();
        let cols = shape[n - 1] as i64;
        let vec = lanes.filter(|&l| cols >= i64::from(l));
        let step = vec.map_or(1, i64::from);
        let vec_end = if vec.is_some() { cols - cols % step } else { 0 };
        if d + 1 < n {
            // Values one iteration of this dimension emits (vectors and scalars of a row).
            let row_emits = vec_end / step + (cols - vec_end);
            let inner: i64 = shape[d + 1..n - 1].iter().map(|&s| s as i64).product::<i64>() * row_emits;
            let trip = shape[d] as i64;
            let unroll = if d + 2 == n { unroll_for(trip, inner) } else { 1 };
            return run(k, (0, trip, 1), unroll, d, idx, &mut |k, idx| nest(k, shape, d + 1, idx, lanes, emit));
        }
        if let Some(l) = vec {
            let unroll = unroll_for(vec_end / step, 1);
            run(k, (0, vec_end, step), unroll, d, idx, &mut |k, idx| emit(k, idx, Some(l)))?;
        }
        let unroll = unroll_for(cols - vec_end, 1);
        run(k, (vec_end, cols, 1), unroll, d, idx, &mut |k, idx| emit(k, idx, None))
    }

    let KernelCx { k, output, epilogue, .. } = cx;
    let (output, epilogue) = (*output, epilogue.clone());
    if shape.is_empty() {
        let v = value(k, &[], None)?;
        let v = epilogue.apply(k, v, &[])?;
        k.store(v, output, &[]);
        return Ok(());
    }
    let n = shape.len();
    // Dimensions `..p` form the parallel loop.
    let mut p = n - 1;
    let mut inner = shape[n - 1];
    while p > 0 && inner < INNER_TARGET && shape[..p - 1].iter().product::<usize>() >= MIN_PARALLEL {
        inner = inner.saturating_mul(shape[p - 1]);
        p -= 1;
    }
    let outer = shape[..p].to_vec();
    let rows: usize = outer.iter().product();
    let mut emit = |k: &mut KernelBuilder<'_, '_>, full: &[ValueId], l: Option<u32>| -> LResult<()> {
        let v = value(k, full, l)?;
        let v = epilogue.apply(k, v, full)?;
        k.store(v, output, full);
        Ok(())
    };
    k.parallel(rows as i64, |k, row| {
        // Decompose the row into subscripts of the outer dimensions (dimensions
        // of one element get the constant 0, so every access of a row shares its
        // address arithmetic).
        let mut idx = vec![row; n];
        let mut rest = row;
        let first_live = outer.iter().position(|&s| s > 1);
        for d in (0..p).rev() {
            if outer[d] <= 1 {
                idx[d] = k.index(0);
            } else if Some(d) == first_live {
                idx[d] = rest;
            } else {
                let c = k.index(outer[d] as i64);
                idx[d] = k.binary(BinOp::Rem, rest, c);
                rest = k.binary(BinOp::Div, rest, c);
            }
        }
        nest(k, shape, p, &mut idx, lanes, &mut emit)
    })
}

/// Whether `cmp`/`select` are needed by a mode on integers (kept for the
/// elementwise lowering of integer relu).
pub fn relu_int(k: &mut KernelBuilder<'_, '_>, x: ValueId) -> ValueId {
    let ty = k.type_of(x);
    let z = k.constant(ty, 0.0);
    let p = k.cmp(CmpPred::Gt, x, z);
    k.select(p, x, z)
}

/// The static shape of a tensor type, if every dimension is fixed.
pub fn static_shape(t: &TensorType) -> Option<Vec<usize>> {
    t.shape.iter().map(|d| d.fixed().and_then(|n| usize::try_from(n).ok())).collect()
}

/// The buffer type storing tensor type `t` (same stored shape, element type and layout).
pub fn buffer_of(ctx: &mut Context, t: &TensorType) -> Ty {
    ctx.intern_type(TypeData::Buffer(BufferType {
        shape: t.shape.clone(),
        elem: t.elem,
        layout: t.layout,
        strides: None,
    }))
}

// ---- the pass ---------------------------------------------------------------------

/// The pass.
#[derive(Debug, Default)]
pub struct LowerGraphToLoops {
    options: LowerOptions,
}

/// What `lower-graph-to-loops` fuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LowerOptions {
    /// Elementwise ops into the producing kernel's epilogue (`fuse`).
    pub fuse: bool,
    /// A dimshuffle read only by an elementwise op becomes a strided view that
    /// the elementwise kernel reads directly (`fuse-dimshuffle`; MegEngine's
    /// `graph_opt_config.jit_fuse_dimshuffle`).
    pub fuse_dimshuffle: bool,
    /// An elementwise kernel read only by a reduction is computed inside the
    /// reduction's loads (`fuse-reduce`; MegEngine's `jit_fuse_reduce`).
    pub fuse_reduce: bool,
}

impl Default for LowerOptions {
    fn default() -> Self {
        LowerOptions { fuse: true, fuse_dimshuffle: false, fuse_reduce: false }
    }
}

/// Registry entry.
pub const INFO: PassInfo = PassInfo {
    name: "lower-graph-to-loops",
    summary: "lower graph and layout ops to loops-dialect kernels and a program of launches (fusing elementwise epilogues)",
    options: &[
        OptionSpec {
            name: "fuse",
            kind: OptionKind::Bool,
            default: "true",
            help: "fuse elementwise ops into the producing kernel's epilogue",
        },
        OptionSpec {
            name: "fuse-dimshuffle",
            kind: OptionKind::Bool,
            default: "false",
            help: "read a dimshuffle that only an elementwise op uses through a strided view (jit_fuse_dimshuffle)",
        },
        OptionSpec {
            name: "fuse-reduce",
            kind: OptionKind::Bool,
            default: "false",
            help: "compute an elementwise kernel that only a reduction reads inside the reduction (jit_fuse_reduce)",
        },
    ],
    create: |o: &PassOptions| {
        Ok(Box::new(LowerGraphToLoops {
            options: LowerOptions {
                fuse: o.bool("fuse"),
                fuse_dimshuffle: o.bool("fuse-dimshuffle"),
                fuse_reduce: o.bool("fuse-reduce"),
            },
        }))
    },
};

impl Pass for LowerGraphToLoops {
    fn name(&self) -> &'static str {
        "lower-graph-to-loops"
    }

    fn run(&mut self, ctx: &mut Context, module: OpId, stats: &mut PassStats) -> Result<Changed, PassError> {
        let funcs: Vec<OpId> = strata_dialects::func::functions(ctx, module).into_iter().map(|f| f.0).collect();
        let mut changed = Changed::No;
        for f in funcs {
            if !is_graph_function(ctx, f) {
                continue;
            }
            lower_function(ctx, module, f, self.options, stats)
                .map_err(|e| PassError::Failed { pass: "lower-graph-to-loops".into(), message: e.to_string() })?;
            changed = Changed::Yes;
        }
        Ok(changed)
    }
}

/// Whether `f` takes tensors (a graph-level function rather than a kernel or program).
fn is_graph_function(ctx: &Context, f: OpId) -> bool {
    let (ins, outs) = strata_dialects::func::FuncOp(f).signature(ctx);
    ins.iter().chain(&outs).any(|&t| matches!(ctx.ty(t), TypeData::Tensor(_)))
        || ctx.body_ops(f).iter().any(|&o| {
            let n = ctx.op_name(o);
            n.starts_with("graph.") || n.starts_with("layout.")
        })
}

/// How each op of the function is realised.
enum Plan {
    /// Evaluated at lowering time.
    Const(TensorData),
    /// A view of its first operand.
    View,
    /// A dimshuffle read through a strided view of its operand (fused into
    /// the elementwise kernel that reads it).
    StridedView,
    /// Fused into the kernel of the given root op.
    Fused(OpId),
    /// The root of a kernel.
    Kernel,
    /// Nothing to do (the return).
    Skip,
}

fn lower_function(ctx: &mut Context, module: OpId, f: OpId, opts: LowerOptions, stats: &mut PassStats) -> LResult<()> {
    let fuse = opts.fuse;
    let fname = strata_dialects::func::FuncOp(f).name(ctx).to_string();
    let ferr = |m: String| LowerError { op: "func.func".into(), message: format!("@{fname}: {m}") };
    let body = ctx.body(f, 0).ok_or_else(|| ferr("has no body".into()))?;
    let args = ctx.block(body).args.clone();
    let ops = ctx.block(body).ops.clone();

    // Types: every value must be a tensor with a static shape.
    let tensor_of = |ctx: &Context, v: ValueId| -> LResult<TensorType> {
        let t = ctx.value_tensor(v).cloned().ok_or_else(|| ferr(format!("value {v} is not a tensor")))?;
        if static_shape(&t).is_none() {
            return Err(ferr(format!(
                "{} has a symbolic shape: lowering needs static shapes (specialise on the input shapes first)",
                strata_ir::type_to_string(ctx, ctx.value_type(v))
            )));
        }
        Ok(t)
    };

    // 1. Plan every op.
    let mut plan: BTreeMap<OpId, Plan> = BTreeMap::new();
    let mut consts: HashMap<ValueId, TensorData> = HashMap::new();
    let mut members: BTreeMap<OpId, Vec<OpId>> = BTreeMap::new(); // root -> fused ops in order
    let mut inlined: BTreeMap<OpId, OpId> = BTreeMap::new(); // group root -> the reduce computing it
    let mut producer_of: BTreeMap<OpId, OpId> = BTreeMap::new(); // reduce -> inlined group root
    for &op in &ops {
        let name = ctx.op_name(op).to_string();
        if name == "func.return" {
            plan.insert(op, Plan::Skip);
            continue;
        }
        let data = ctx.op(op).clone();
        if data.results.len() != 1 {
            return Err(LowerError::new(
                ctx,
                op,
                format!("{} results: only single-result ops are lowered", data.results.len()),
            ));
        }
        if name == "func.call" {
            return Err(LowerError::new(ctx, op, "calls are not lowered: inline the callee first"));
        }
        for &v in data.operands.iter().chain(&data.results) {
            tensor_of(ctx, v)?;
        }
        // Constant folding with the reference evaluator.
        let def = ctx.op_def(op).ok_or_else(|| LowerError::new(ctx, op, "unregistered op"))?;
        let constant_like = def.traits.contains(OpTraits::CONSTANT_LIKE);
        if constant_like || (!data.operands.is_empty() && data.operands.iter().all(|v| consts.contains_key(v))) {
            let value = if constant_like {
                ctx.constant_value(data.results[0]).cloned()
            } else {
                let operands: Vec<TensorData> = data.operands.iter().map(|v| consts[v].clone()).collect();
                let operand_types: Vec<Ty> = data.operands.iter().map(|&v| ctx.value_type(v)).collect();
                let result_types = vec![ctx.value_type(data.results[0])];
                let eval = def.eval.ok_or_else(|| LowerError::new(ctx, op, "has no reference evaluator to fold it"))?;
                let r = eval(&strata_ir::OpCx::of_op(ctx, op, &operand_types, &result_types), &operands)
                    .map_err(|m| LowerError::new(ctx, op, format!("folding at lowering time: {m}")))?;
                r.into_iter().next()
            };
            let value = value.ok_or_else(|| LowerError::new(ctx, op, "constant without data (elided?)"))?;
            consts.insert(data.results[0], value.clone());
            plan.insert(op, Plan::Const(value));
            continue;
        }
        if matches!(name.as_str(), "graph.reshape" | "graph.axis_add_remove") {
            plan.insert(op, Plan::View);
            continue;
        }
        if opts.fuse_dimshuffle && name == "graph.dimshuffle" && dimshuffle_fusable(ctx, op, &plan) {
            plan.insert(op, Plan::StridedView);
            stats.add("dimshuffles-fused", 1);
            continue;
        }
        if lowering(&name).is_none() {
            return Err(LowerError::new(ctx, op, "has no lowering to the loops dialect"));
        }
        // An elementwise kernel read only by this reduction is computed inside it.
        if opts.fuse_reduce
            && name == "graph.reduce"
            && let Some(root) = reduce_producer(ctx, op, &plan, &members)
        {
            inlined.insert(root, op);
            producer_of.insert(op, root);
            stats.add("reduces-fused", 1);
        }
        // Epilogue fusion.
        if fuse && let Some((root, _)) = fusion_target(ctx, op, &plan) {
            plan.insert(op, Plan::Fused(root));
            members.entry(root).or_default().push(op);
            stats.add("ops-fused", 1);
            continue;
        }
        plan.insert(op, Plan::Kernel);
    }

    // 2. Emit the program.
    let in_tys: Vec<Ty> = args
        .iter()
        .map(|&a| {
            let t = tensor_of(ctx, a)?;
            Ok(buffer_of(ctx, &t))
        })
        .collect::<LResult<_>>()?;
    let ret = *ops.last().ok_or_else(|| ferr("empty body".into()))?;
    let results = ctx.op(ret).operands.clone();
    let out_tys: Vec<Ty> = results
        .iter()
        .map(|&v| {
            let t = tensor_of(ctx, v)?;
            Ok(buffer_of(ctx, &t))
        })
        .collect::<LResult<_>>()?;
    let tmp_name = format!("{fname}.lowering");
    let mut rw = Rewriter::new(ctx);
    let (mut p, pargs) = ProgramBuilder::new(&mut rw, module, &tmp_name, &in_tys, &out_tys);
    let mut bufs: HashMap<ValueId, ValueId> = args.iter().copied().zip(pargs).collect();
    // Constants first: they need no memory plan and may be read by any kernel,
    // including an epilogue operand defined after the kernel's root op.
    for &op in &ops {
        let Some(Plan::Const(value)) = plan.get(&op) else { continue };
        let r = p.rw().ctx().op(op).results[0];
        let used = p.rw().ctx().value(r).uses.iter().any(|u| !matches!(plan.get(&u.op), Some(Plan::Const(_))));
        if !used {
            continue;
        }
        let t = p.rw().ctx().value_tensor(r).cloned().expect("invariant: checked tensor");
        let bty = buffer_of(p.rw().ctx_mut(), &t);
        let dense_ty = p.rw().ctx().value_type(r);
        let attr = p
            .rw()
            .ctx_mut()
            .intern_attr(AttrData::Dense(DenseAttr { ty: dense_ty, storage: DenseStorage::Data(value.clone()) }));
        let b = p.constant(bty, attr);
        bufs.insert(r, b);
    }
    // A fused group is launched where its last member stands: by then every
    // other operand of its epilogue has been computed.
    let launch_at: HashMap<OpId, OpId> =
        members.iter().map(|(&root, group)| (*group.last().expect("invariant: groups are non-empty"), root)).collect();
    let mut kernel_count = 0usize;
    for &op in &ops {
        let Some(pl) = plan.get(&op) else { continue };
        let (op, pl) = match (pl, launch_at.get(&op)) {
            (Plan::Fused(_), Some(&root)) => (root, &Plan::Kernel),
            (Plan::Kernel, _) if members.contains_key(&op) => continue,
            _ => (op, pl),
        };
        if matches!(pl, Plan::Kernel) && inlined.contains_key(&op) {
            continue; // computed inside the reduction that reads it
        }
        let ctx = p.rw().ctx();
        let loc = ctx.op(op).loc;
        let result = ctx.op(op).results.first().copied();
        match pl {
            Plan::Skip | Plan::Fused(_) => {}
            Plan::Const(_) => {}
            Plan::StridedView => {
                let r = result.expect("invariant: planned ops have one result");
                let src = p.rw().ctx().op(op).operands[0];
                let src_shape = shape_of(p.rw().ctx(), src);
                let pattern = strata_dialects::graph::shape::DimshuffleOp(op).pattern(p.rw().ctx());
                // Row-major strides of the (contiguous) source.
                let mut st = vec![1i64; src_shape.len()];
                for d in (0..src_shape.len().saturating_sub(1)).rev() {
                    st[d] = st[d + 1] * src_shape[d + 1] as i64;
                }
                let strides: Vec<i64> = pattern.iter().map(|&q| if q < 0 { 0 } else { st[q as usize] }).collect();
                let t = p.rw().ctx().value_tensor(r).cloned().expect("invariant: checked tensor");
                let bty = p.rw().ctx_mut().intern_type(TypeData::Buffer(BufferType {
                    shape: t.shape.clone(),
                    elem: t.elem,
                    layout: t.layout,
                    strides: Some(strides),
                }));
                let b = p.view(bufs[&src], bty);
                bufs.insert(r, b);
            }
            Plan::View => {
                let r = result.expect("invariant: planned ops have one result");
                let src = p.rw().ctx().op(op).operands[0];
                let t = p.rw().ctx().value_tensor(r).cloned().expect("invariant: checked tensor");
                let bty = buffer_of(p.rw().ctx_mut(), &t);
                let b = p.view(bufs[&src], bty);
                bufs.insert(r, b);
            }
            Plan::Kernel => {
                let group = members.get(&op).cloned().unwrap_or_default();
                let last = *group.last().unwrap_or(&op);
                let out_v = p.rw().ctx().op(last).results[0];
                let t = p.rw().ctx().value_tensor(out_v).cloned().expect("invariant: checked tensor");
                let out_ty = buffer_of(p.rw().ctx_mut(), &t);
                let out_buf = p.alloc(out_ty);
                bufs.insert(out_v, out_buf);
                // Kernel arguments: the root's operands (or, for a reduction with a
                // fused producer, the producer's arguments), the epilogue's other
                // operands, the output.
                let mut launch_args: Vec<ValueId> = Vec::new();
                let producer = match producer_of.get(&op) {
                    Some(&proot) => {
                        let ctx = p.rw().ctx();
                        let pgroup = members.get(&proot).cloned().unwrap_or_default();
                        let (pargs, psteps) = collect_group_args(ctx, &bufs, proot, &pgroup, true, &mut launch_args)?;
                        let mode = strata_dialects::graph::elemwise::ElemwiseOp(proot).mode(ctx).to_string();
                        let mode = Mode::parse(&mode).map_err(|e| LowerError::new(ctx, proot, e))?;
                        let operands: Vec<(usize, Vec<usize>)> =
                            pargs.iter().zip(&ctx.op(proot).operands).map(|(&i, &v)| (i, shape_of(ctx, v))).collect();
                        let shape = shape_of(ctx, ctx.op(proot).results[0]);
                        Some((mode, operands, shape, psteps))
                    }
                    None => None,
                };
                let (root_args, steps_src) =
                    collect_group_args(p.rw().ctx(), &bufs, op, &group, producer.is_none(), &mut launch_args)?;
                launch_args.push(out_buf);
                let arg_tys: Vec<Ty> = launch_args.iter().map(|&b| p.rw().ctx().value_type(b)).collect();
                let short = p.rw().ctx().op_name(op).split('.').nth(1).unwrap_or("op").to_string();
                let kname = format!("{fname}_k{kernel_count}_{short}");
                kernel_count += 1;
                let out_shape = shape_of(p.rw().ctx(), out_v);
                {
                    let module = p.module();
                    let (mut kb, kargs) = KernelBuilder::new(p.rw(), module, &kname, &arg_tys);
                    kb.set_loc(loc);
                    let steps = |src: &[StepSrc], shape: &[usize]| -> Vec<EpilogueStep> {
                        src.iter()
                            .map(|(mode, chained, others)| EpilogueStep {
                                mode: *mode,
                                chained: *chained,
                                others: others.iter().map(|(i, s)| (kargs[*i], s.clone())).collect(),
                                shape: shape.to_vec(),
                            })
                            .collect()
                    };
                    let input_producer = producer.as_ref().map(|(mode, operands, shape, psteps)| {
                        Box::new(Prologue {
                            mode: *mode,
                            operands: operands.iter().map(|(i, s)| (kargs[*i], s.clone())).collect(),
                            shape: shape.clone(),
                            steps: Epilogue { steps: steps(psteps, shape), input_producer: None },
                        })
                    });
                    let epilogue = Epilogue { steps: steps(&steps_src, &out_shape), input_producer };
                    let mut cx = KernelCx {
                        inputs: root_args.iter().map(|&i| kargs[i]).collect(),
                        output: *kargs.last().expect("invariant: a kernel has an output"),
                        epilogue,
                        k: &mut kb,
                    };
                    let f = lowering(cx.k.ctx().op_name(op)).expect("invariant: planned kernels have a lowering");
                    f(&mut cx, op)?;
                    kb.finish();
                }
                p.launch(&kname, &launch_args, loc);
                stats.add("kernels", 1);
            }
        }
    }
    let outs: Vec<ValueId> = results
        .iter()
        .map(|v| bufs.get(v).copied().ok_or_else(|| ferr(format!("result {v} was not lowered"))))
        .collect::<LResult<_>>()?;
    let program = p.finish(&outs);
    let name_attr = rw.ctx_mut().intern_attr(AttrData::Str(fname.clone()));
    rw.erase_op(f);
    rw.set_attr(program, "sym_name", name_attr);
    Ok(())
}

/// One fused step as the driver collects it: mode, chained operand position,
/// other operands as (launch argument index, stored shape).
type StepSrc = (Mode, usize, Vec<(usize, Vec<usize>)>);

/// Appends the launch arguments of a kernel group — the root's operands (unless
/// a fused producer computes them), then each member's other operands — and
/// returns the root operands' argument indices and the members' steps.
fn collect_group_args(
    ctx: &Context,
    bufs: &HashMap<ValueId, ValueId>,
    root: OpId,
    group: &[OpId],
    with_root_operands: bool,
    launch_args: &mut Vec<ValueId>,
) -> LResult<(Vec<usize>, Vec<StepSrc>)> {
    let mut root_args = Vec::new();
    let root_operands: &[ValueId] = if with_root_operands { &ctx.op(root).operands } else { &[] };
    for v in root_operands {
        launch_args.push(*bufs.get(v).ok_or_else(|| LowerError::new(ctx, root, "operand not lowered"))?);
        root_args.push(launch_args.len() - 1);
    }
    let mut steps = Vec::new();
    let mut chained_value = ctx.op(root).results[0];
    for &m in group {
        let ops_m = &ctx.op(m).operands;
        let chained = ops_m.iter().position(|&v| v == chained_value).expect("invariant: member reads the chain");
        let mut others = Vec::new();
        for (i, v) in ops_m.iter().enumerate() {
            if i != chained {
                launch_args.push(*bufs.get(v).ok_or_else(|| LowerError::new(ctx, m, "operand not lowered"))?);
                others.push((launch_args.len() - 1, shape_of(ctx, *v)));
            }
        }
        let mode = strata_dialects::graph::elemwise::ElemwiseOp(m).mode(ctx).to_string();
        let mode = Mode::parse(&mode).map_err(|e| LowerError::new(ctx, m, e))?;
        steps.push((mode, chained, others));
        chained_value = ctx.op(m).results[0];
    }
    Ok((root_args, steps))
}

/// With `fuse-reduce`: the root of the elementwise kernel group whose final
/// result only reduction `op` reads (f32), if any.
fn reduce_producer(
    ctx: &Context,
    op: OpId,
    plan: &BTreeMap<OpId, Plan>,
    members: &BTreeMap<OpId, Vec<OpId>>,
) -> Option<OpId> {
    let x = ctx.op(op).operands[0];
    if ctx.value(x).uses.len() != 1 || ctx.value_tensor(x)?.elem != ElemType::F32 {
        return None;
    }
    let d = ctx.defining_op(x)?;
    let root = match plan.get(&d)? {
        Plan::Kernel => d,
        Plan::Fused(r) => *r,
        _ => return None,
    };
    let last = members.get(&root).and_then(|g| g.last().copied()).unwrap_or(root);
    (last == d && ctx.op_name(root) == "graph.elemwise").then_some(root)
}

fn shape_of(ctx: &Context, v: ValueId) -> Vec<usize> {
    ctx.value_tensor(v).and_then(static_shape).unwrap_or_default()
}

/// Whether dimshuffle `op` can be read through a strided view: its only user is
/// an elementwise op, and its operand is a contiguous buffer (not itself a
/// strided view).
fn dimshuffle_fusable(ctx: &Context, op: OpId, plan: &BTreeMap<OpId, Plan>) -> bool {
    let r = ctx.op(op).results[0];
    let uses = &ctx.value(r).uses;
    let user_ok = uses.len() == 1 && ctx.op_name(uses[0].op) == "graph.elemwise";
    let src = ctx.op(op).operands[0];
    let src_ok = ctx.defining_op(src).is_none_or(|d| !matches!(plan.get(&d), Some(Plan::StridedView)));
    user_ok && src_ok
}

/// If `op` is a float `graph.elemwise` that can join the kernel producing one
/// of its operands, the root of that kernel and the operand position.
fn fusion_target(ctx: &Context, op: OpId, plan: &BTreeMap<OpId, Plan>) -> Option<(OpId, usize)> {
    if ctx.op_name(op) != "graph.elemwise" || ctx.op_attr(op, "out_dtype").is_some() {
        return None;
    }
    let out = ctx.value_tensor(ctx.op(op).results[0])?;
    if out.elem != ElemType::F32 {
        return None;
    }
    let mode = Mode::parse(strata_dialects::graph::elemwise::ElemwiseOp(op).mode(ctx)).ok()?;
    for (i, &v) in ctx.op(op).operands.iter().enumerate() {
        let Some(p) = ctx.defining_op(v) else { continue };
        let root = match plan.get(&p) {
            Some(Plan::Kernel) => p,
            Some(Plan::Fused(r)) => *r,
            _ => continue,
        };
        if !epilogue_capable(ctx.op_name(root)) {
            continue;
        }
        if ctx.value(v).uses.len() != 1 || ctx.value_tensor(v) != Some(out) {
            continue;
        }
        // The same value read twice (x * x) cannot be chained.
        if ctx.op(op).operands.iter().filter(|&&w| w == v).count() != 1 {
            continue;
        }
        // The group launches at its last member's position, after every other
        // operand of the epilogue has been computed (ops are in order).
        let _ = mode;
        return Some((root, i));
    }
    None
}

/// Ops whose lowering stores through [`KernelCx::emit`] (so an epilogue applies).
fn epilogue_capable(name: &str) -> bool {
    matches!(
        name,
        "graph.conv2d"
            | "graph.conv_bias"
            | "layout.conv_bias"
            | "graph.matmul"
            | "graph.batched_matmul"
            | "graph.elemwise"
            | "graph.pooling"
            | "layout.pooling"
            | "graph.global_avg_pool"
            | "layout.global_avg_pool"
            | "graph.reduce"
    )
}
