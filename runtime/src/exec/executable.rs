//! The executable: a lowered program (loops dialect) bound to compiled kernels,
//! with every temporary buffer placed in one arena by the memory plan.
//!
//! [`Executable::build`] reads the program function of a loops module (its
//! buffer arguments, `loops.alloc`, `loops.constant`, `loops.view`,
//! `loops.launch` and `func.return`), asks the caller for each kernel's entry
//! point, computes each temporary's live range over the launch sequence and
//! plans the arena ([`plan_memory`]). [`Executable::run`] then calls the
//! kernels in order; a kernel with a `loops.parallel` loop has its range split
//! statically over the [`ThreadPool`]'s threads.
//!
//! The runtime does not depend on the code generator: entry points come in
//! through a lookup function, so the same executable runs JIT-compiled code or
//! any other implementation of the kernel ABI ([`KernelFn`]).

#![allow(unsafe_code)] // calls into compiled kernels and hands them raw buffer pointers

use super::plan::{BufferReq, MemoryPlan, plan_memory};
use super::pool::ThreadPool;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use strata_ir::{AttrData, Context, DenseStorage, ElemType, Loc, OpId, TensorData, TypeData, ValueId};

/// The kernel ABI: `args[i]` is the base address of buffer argument `i`;
/// `begin..end` is the part of the kernel's parallel loop to run (ignored by
/// kernels without one).
pub type KernelFn = unsafe extern "C" fn(args: *const *mut u8, begin: i64, end: i64);

/// Alignment of every arena buffer, in bytes (a cache line).
pub const ARENA_ALIGN: usize = 64;

/// Building or running an executable failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecError {
    /// The program is not one the executor can run.
    #[error("program @{program}: {message}")]
    Program {
        /// Program function name.
        program: String,
        /// What is wrong.
        message: String,
    },
    /// A kernel has no compiled entry point.
    #[error("kernel @{0} has no compiled code")]
    MissingKernel(String),
    /// The inputs do not match the program's signature.
    #[error("input #{index}: {message}")]
    Input {
        /// Input position.
        index: usize,
        /// What is wrong.
        message: String,
    },
}

/// Where a buffer's memory comes from.
#[derive(Clone, Debug)]
pub enum BufferKind {
    /// Model input `i` (read-only).
    Input(usize),
    /// Constant data (read-only).
    Const(TensorData),
    /// A temporary at `offset` in the arena.
    Temp {
        /// Byte offset in the arena.
        offset: usize,
    },
    /// The memory of another buffer, seen with another shape.
    View(usize),
}

/// One buffer of the program.
#[derive(Clone, Debug)]
pub struct BufferInfo {
    /// Element type.
    pub elem: ElemType,
    /// Shape.
    pub shape: Vec<usize>,
    /// Size in bytes.
    pub bytes: usize,
    /// Where its memory is.
    pub kind: BufferKind,
}

/// One kernel launch.
#[derive(Clone, Debug)]
pub struct Step {
    /// Kernel function name.
    pub kernel: String,
    /// Location of the launch (the graph op it came from).
    pub loc: Loc,
    /// Buffer indices of its arguments.
    pub args: Vec<usize>,
    /// The constant bounds of the kernel's parallel loop, if it has one.
    pub parallel: Option<(i64, i64)>,
    entry: KernelFn,
}

/// A program ready to run: see the module docs.
pub struct Executable {
    program: String,
    buffers: Vec<BufferInfo>,
    steps: Vec<Step>,
    outputs: Vec<usize>,
    inputs: Vec<usize>,
    plan: MemoryPlan,
    arena: std::sync::Mutex<Vec<u64>>,
}

impl std::fmt::Debug for Executable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executable")
            .field("program", &self.program)
            .field("steps", &self.steps.len())
            .field("arena_bytes", &self.plan.arena_bytes)
            .finish()
    }
}

fn buffer_shape(ctx: &Context, v: ValueId) -> Option<(ElemType, Vec<usize>)> {
    let TypeData::Buffer(b) = ctx.ty(ctx.value_type(v)) else { return None };
    if b.strides.is_some() {
        return None;
    }
    let shape: Option<Vec<usize>> = b.shape.iter().map(|d| d.fixed().and_then(|n| usize::try_from(n).ok())).collect();
    Some((b.elem, shape?))
}

/// Bytes of a contiguous buffer of `elem` with `shape` (`None` on overflow).
pub fn byte_size(elem: ElemType, shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(elem.size_bytes(), |acc, &d| acc.checked_mul(d))
}

/// The constant bounds of the top-level `loops.parallel` of kernel `f`, if any.
fn parallel_bounds(ctx: &Context, f: OpId) -> Option<(i64, i64)> {
    let par = ctx.body_ops(f).iter().copied().find(|&o| ctx.op_name(o) == "loops.parallel")?;
    let bound = |v: ValueId| -> Option<i64> {
        let d = ctx.defining_op(v)?;
        match ctx.attr(ctx.op_attr(d, "value")?) {
            AttrData::Int(i) if ctx.op_name(d) == "loops.index_const" => Some(*i),
            _ => None,
        }
    };
    let ops = &ctx.op(par).operands;
    Some((bound(ops[0])?, bound(ops[1])?))
}

fn find_function(ctx: &Context, module: OpId, name: &str) -> Option<OpId> {
    let body = ctx.body(module, 0)?;
    ctx.block(body).ops.iter().copied().find(|&f| {
        ctx.op_name(f) == "func.func"
            && ctx.op_attr(f, "sym_name").is_some_and(|a| matches!(ctx.attr(a), AttrData::Str(s) if s == name))
    })
}

impl Executable {
    /// Binds program `program` of the lowered `module` to kernel entry points
    /// from `lookup` and plans its memory.
    pub fn build(
        ctx: &Context,
        module: OpId,
        program: &str,
        lookup: &dyn Fn(&str) -> Option<KernelFn>,
    ) -> Result<Executable, ExecError> {
        let perr = |message: String| ExecError::Program { program: program.to_string(), message };
        let f = find_function(ctx, module, program).ok_or_else(|| perr("no such function".into()))?;
        let body = ctx.body(f, 0).ok_or_else(|| perr("has no body".into()))?;
        let mut buffers: Vec<BufferInfo> = Vec::new();
        let mut index_of: HashMap<ValueId, usize> = HashMap::new();
        let mut inputs = Vec::new();
        for (i, &a) in ctx.block(body).args.iter().enumerate() {
            let (elem, shape) =
                buffer_shape(ctx, a).ok_or_else(|| perr(format!("argument #{i} is not a static contiguous buffer")))?;
            let bytes = byte_size(elem, &shape).ok_or_else(|| perr(format!("argument #{i} is too large")))?;
            index_of.insert(a, buffers.len());
            inputs.push(buffers.len());
            buffers.push(BufferInfo { elem, shape, bytes, kind: BufferKind::Input(i) });
        }
        let mut steps = Vec::new();
        let mut outputs = Vec::new();
        // Live ranges of temporaries (by buffer index), in launch steps.
        let mut live: HashMap<usize, (usize, usize)> = HashMap::new();
        let root = |buffers: &[BufferInfo], mut i: usize| {
            while let BufferKind::View(s) = buffers[i].kind {
                i = s;
            }
            i
        };
        for &op in &ctx.block(body).ops {
            let name = ctx.op_name(op);
            let data = ctx.op(op);
            let new_buffer = |kind: BufferKind| -> Result<BufferInfo, ExecError> {
                let r = data.results.first().copied().ok_or_else(|| perr(format!("`{name}` has no result")))?;
                let (elem, shape) =
                    buffer_shape(ctx, r).ok_or_else(|| perr(format!("`{name}` gives a non-static buffer")))?;
                let bytes = byte_size(elem, &shape).ok_or_else(|| perr(format!("`{name}` buffer is too large")))?;
                Ok(BufferInfo { elem, shape, bytes, kind })
            };
            match name {
                "loops.alloc" => {
                    let b = new_buffer(BufferKind::Temp { offset: 0 })?;
                    index_of.insert(data.results[0], buffers.len());
                    buffers.push(b);
                }
                "loops.constant" => {
                    let value = match ctx.op_attr(op, "value").map(|a| ctx.attr(a)) {
                        Some(AttrData::Dense(d)) => match &d.storage {
                            DenseStorage::Data(t) => t.clone(),
                            _ => return Err(perr("a constant's data was elided".into())),
                        },
                        _ => return Err(perr("`loops.constant` without dense data".into())),
                    };
                    let b = new_buffer(BufferKind::Const(value.clone()))?;
                    if value.bytes().len() != b.bytes {
                        return Err(perr("a constant's data does not fill its buffer".into()));
                    }
                    index_of.insert(data.results[0], buffers.len());
                    buffers.push(b);
                }
                "loops.view" => {
                    let src =
                        *index_of.get(&data.operands[0]).ok_or_else(|| perr("view of an unknown buffer".into()))?;
                    let r = data.results.first().copied().ok_or_else(|| perr("`loops.view` has no result".into()))?;
                    let b = match ctx.ty(ctx.value_type(r)) {
                        // A strided view (a transposition or broadcast the verifier
                        // checked to stay inside its source) aliases the whole source.
                        TypeData::Buffer(bt) if bt.strides.is_some() => {
                            let shape: Option<Vec<usize>> =
                                bt.shape.iter().map(|d| d.fixed().and_then(|n| usize::try_from(n).ok())).collect();
                            let shape = shape.ok_or_else(|| perr("a strided view needs a static shape".into()))?;
                            BufferInfo { elem: bt.elem, shape, bytes: buffers[src].bytes, kind: BufferKind::View(src) }
                        }
                        _ => {
                            let b = new_buffer(BufferKind::View(src))?;
                            if b.bytes != buffers[src].bytes {
                                return Err(perr("a view changes the buffer size".into()));
                            }
                            b
                        }
                    };
                    index_of.insert(r, buffers.len());
                    buffers.push(b);
                }
                "loops.launch" => {
                    let kernel = match ctx.op_attr(op, "kernel").map(|a| ctx.attr(a)) {
                        Some(AttrData::SymbolRef(s)) => s.clone(),
                        _ => return Err(perr("`loops.launch` without a kernel".into())),
                    };
                    let kf = find_function(ctx, module, &kernel)
                        .ok_or_else(|| perr(format!("kernel @{kernel} is not defined")))?;
                    let entry = lookup(&kernel).ok_or_else(|| ExecError::MissingKernel(kernel.clone()))?;
                    let mut args = Vec::with_capacity(data.operands.len());
                    for v in &data.operands {
                        let i = *index_of.get(v).ok_or_else(|| perr(format!("@{kernel} reads an unknown buffer")))?;
                        args.push(i);
                        let r = root(&buffers, i);
                        if matches!(buffers[r].kind, BufferKind::Temp { .. }) {
                            let s = steps.len();
                            let e = live.entry(r).or_insert((s, s));
                            e.1 = s;
                        }
                    }
                    steps.push(Step { kernel, loc: data.loc, args, parallel: parallel_bounds(ctx, kf), entry });
                }
                "func.return" => {
                    for v in &data.operands {
                        let i = *index_of.get(v).ok_or_else(|| perr("returns an unknown buffer".into()))?;
                        let is_strided =
                            matches!(ctx.ty(ctx.value_type(*v)), TypeData::Buffer(b) if b.strides.is_some());
                        if is_strided {
                            return Err(perr("returns a strided view; outputs must be contiguous".into()));
                        }
                        outputs.push(i);
                    }
                }
                other => return Err(perr(format!("unexpected `{other}` in a program"))),
            }
        }
        // Outputs stay live to the end; temporaries nobody launches still get space.
        let end = steps.len();
        for &o in &outputs {
            let r = root(&buffers, o);
            if matches!(buffers[r].kind, BufferKind::Temp { .. }) {
                live.entry(r).or_insert((end, end)).1 = end;
            }
        }
        let mut temps: Vec<usize> =
            (0..buffers.len()).filter(|&i| matches!(buffers[i].kind, BufferKind::Temp { .. })).collect();
        temps.sort_unstable();
        let reqs: Vec<BufferReq> = temps
            .iter()
            .map(|&i| {
                let (first, last) = live.get(&i).copied().unwrap_or((end, end));
                BufferReq::new(buffers[i].bytes.max(1), ARENA_ALIGN, first, last)
            })
            .collect();
        let plan = plan_memory(&reqs).map_err(|e| perr(format!("memory plan: {e}")))?;
        debug_assert!(plan.verify(&reqs).is_ok());
        for (&i, &off) in temps.iter().zip(&plan.offsets) {
            buffers[i].kind = BufferKind::Temp { offset: off };
        }
        let words = plan.arena_bytes.div_ceil(8) + ARENA_ALIGN / 8;
        Ok(Executable {
            program: program.to_string(),
            buffers,
            steps,
            outputs,
            inputs,
            plan,
            arena: std::sync::Mutex::new(vec![0u64; words]),
        })
    }

    /// The launches, in order.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// Every buffer.
    pub fn buffers(&self) -> &[BufferInfo] {
        &self.buffers
    }

    /// The buffers the program returns (indices into [`Executable::buffers`]), in order.
    pub fn outputs(&self) -> &[usize] {
        &self.outputs
    }

    /// The buffers holding the program's inputs, in order.
    pub fn inputs(&self) -> &[usize] {
        &self.inputs
    }

    /// The memory plan of the temporaries.
    pub fn plan(&self) -> &MemoryPlan {
        &self.plan
    }

    /// Element type and shape of each input.
    pub fn input_shapes(&self) -> Vec<(ElemType, Vec<usize>)> {
        self.inputs.iter().map(|&i| (self.buffers[i].elem, self.buffers[i].shape.clone())).collect()
    }

    /// Runs the program on `inputs` with the threads of `pool`, calling
    /// `observe(step, time)` after each launch.
    pub fn run(
        &self,
        pool: &ThreadPool,
        inputs: &[TensorData],
        observe: &mut dyn FnMut(usize, Duration),
    ) -> Result<Vec<TensorData>, ExecError> {
        if inputs.len() != self.inputs.len() {
            return Err(ExecError::Input {
                index: inputs.len().min(self.inputs.len()),
                message: format!("the program takes {} inputs, got {}", self.inputs.len(), inputs.len()),
            });
        }
        for (index, (&b, t)) in self.inputs.iter().zip(inputs).enumerate() {
            let info = &self.buffers[b];
            if t.elem() != info.elem || t.shape() != info.shape.as_slice() {
                return Err(ExecError::Input {
                    index,
                    message: format!("expected {}{:?}, got {}{:?}", info.elem, info.shape, t.elem(), t.shape()),
                });
            }
        }
        // The shared arena, or, while another run holds it (parallel copies of a
        // model), a private one for this run.
        let mut private = Vec::new();
        let mut guard = match self.arena.try_lock() {
            Ok(g) => Some(g),
            Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        };
        let arena: &mut Vec<u64> = match guard.as_mut() {
            Some(g) => g,
            None => {
                private = vec![0u64; self.plan.arena_bytes.div_ceil(8) + ARENA_ALIGN / 8];
                &mut private
            }
        };
        let base = arena.as_mut_ptr() as *mut u8;
        let base = base.wrapping_add(base.align_offset(ARENA_ALIGN));
        // Base address of every buffer.
        let mut addr: Vec<*mut u8> = Vec::with_capacity(self.buffers.len());
        for b in &self.buffers {
            let p = match &b.kind {
                BufferKind::Input(i) => inputs[*i].bytes().as_ptr() as *mut u8,
                BufferKind::Const(t) => t.bytes().as_ptr() as *mut u8,
                BufferKind::Temp { offset } => base.wrapping_add(*offset),
                BufferKind::View(s) => addr[*s],
            };
            addr.push(p);
        }
        let mut args: Vec<*mut u8> = Vec::new();
        for (si, step) in self.steps.iter().enumerate() {
            let t0 = Instant::now();
            args.clear();
            args.extend(step.args.iter().map(|&i| addr[i]));
            let (lo, hi) = step.parallel.unwrap_or((0, 1));
            let len = usize::try_from(hi - lo).unwrap_or(0);
            if pool.threads() == 1 || len <= 1 {
                // SAFETY: `entry` implements the kernel ABI for exactly these argument
                // buffers (bound by `build` from the same program); every pointer is
                // the base of a live buffer of the size the kernel's types declare:
                // inputs were checked against the signature, constants against their
                // buffer types, temporaries lie inside this run's arena (locked, or private). Kernels only
                // write their output buffers (temporaries), never inputs or constants.
                unsafe { (step.entry)(args.as_ptr(), lo, hi) };
            } else {
                let chunks = ThreadPool::split(len, pool.threads());
                let shared = SendPtrs(args.as_ptr());
                let entry = step.entry;
                pool.run(chunks.len(), &|task, _| {
                    let r = &chunks[task];
                    let p = &shared;
                    // SAFETY: as above; the chunks are disjoint parts of the parallel
                    // loop, whose iterations write disjoint memory by the dialect's
                    // contract, and `args` outlives `run`, which returns only after
                    // every task finished.
                    unsafe { entry(p.0, lo + r.start as i64, lo + r.end as i64) };
                });
            }
            observe(si, t0.elapsed());
        }
        let outs = self
            .outputs
            .iter()
            .map(|&o| {
                let b = &self.buffers[o];
                // SAFETY: `addr[o]` is the base of a live buffer of `b.bytes` bytes
                // (see above), and no kernel runs any more.
                let bytes = unsafe { std::slice::from_raw_parts(addr[o] as *const u8, b.bytes) };
                TensorData::from_bytes(b.elem, b.shape.clone(), std::sync::Arc::<[u8]>::from(bytes))
                    .map_err(|e| ExecError::Program { program: self.program.clone(), message: e.to_string() })
            })
            .collect();
        drop(guard);
        drop(private);
        outs
    }
}

/// The argument array, shared with the pool's threads for one launch.
struct SendPtrs(*const *mut u8);
// SAFETY: the pointers are only dereferenced by kernels during `ThreadPool::run`,
// which the launching thread waits for; the kernels' parallel iterations touch
// disjoint memory.
unsafe impl Sync for SendPtrs {}
// SAFETY: see `Sync`.
unsafe impl Send for SendPtrs {}

#[cfg(test)]
mod tests {
    use super::*;

    unsafe extern "C" fn add_one(args: *const *mut u8, begin: i64, end: i64) {
        // SAFETY: the test program launches this with (input f32[8], output f32[8]).
        unsafe {
            let x = *args as *const f32;
            let y = *args.add(1) as *mut f32;
            for i in begin..end {
                *y.add(i as usize) = *x.add(i as usize) + 1.0;
            }
        }
    }

    fn program() -> (Context, OpId) {
        let src = "func @main(%x: buffer<8xf32>) -> buffer<2x4xf32> {
  %0 = loops.alloc() : () -> buffer<8xf32>
  loops.launch(%x, %0) {kernel = @k}
  %1 = loops.alloc() : () -> buffer<8xf32>
  loops.launch(%0, %1) {kernel = @k}
  %2 = loops.view(%1) : (buffer<8xf32>) -> buffer<2x4xf32>
  return(%2)
}
func @k(%a: buffer<8xf32>, %b: buffer<8xf32>) {
  %0 = loops.index_const() {value = 0} : () -> index
  %1 = loops.index_const() {value = 8} : () -> index
  loops.parallel(%0, %1) ({
  ^bb0(%i: index):
    %v = loops.load(%a, %i) : (buffer<8xf32>, index) -> f32
    loops.store(%v, %b, %i)
    loops.yield()
  })
  return()
}
";
        let mut ctx = strata_dialects::context();
        let m =
            strata_ir::parse_module(&mut ctx, &strata_ir::Source::new("t", src), &Default::default()).expect("parses");
        strata_ir::verify(&ctx, m, Default::default()).expect("verifies");
        (ctx, m)
    }

    #[test]
    fn runs_launches_in_order_with_views_and_threads() {
        let (ctx, m) = program();
        let exe = Executable::build(&ctx, m, "main", &|n| (n == "k").then_some(add_one as KernelFn)).unwrap();
        assert_eq!(exe.steps().len(), 2);
        assert_eq!(exe.steps()[0].parallel, Some((0, 8)));
        assert!(exe.plan().arena_bytes >= 64);
        let x = TensorData::from_f32(vec![8], &[0., 1., 2., 3., 4., 5., 6., 7.]);
        for threads in [1, 2, 3] {
            let pool = ThreadPool::new(threads).unwrap();
            let mut seen = Vec::new();
            let out = exe.run(&pool, std::slice::from_ref(&x), &mut |s, _| seen.push(s)).unwrap();
            assert_eq!(seen, vec![0, 1]);
            assert_eq!(out[0].shape(), &[2, 4]);
            assert_eq!(out[0].to_f32_vec(), vec![2., 3., 4., 5., 6., 7., 8., 9.]);
        }
    }

    #[test]
    fn wrong_inputs_and_missing_kernels_are_errors() {
        let (ctx, m) = program();
        assert!(matches!(Executable::build(&ctx, m, "main", &|_| None), Err(ExecError::MissingKernel(_))));
        let exe = Executable::build(&ctx, m, "main", &|_| Some(add_one as KernelFn)).unwrap();
        let pool = ThreadPool::new(1).unwrap();
        let bad = TensorData::from_f32(vec![4], &[0.; 4]);
        assert!(matches!(exe.run(&pool, &[bad], &mut |_, _| {}), Err(ExecError::Input { .. })));
        assert!(exe.run(&pool, &[], &mut |_, _| {}).is_err());
    }
}
