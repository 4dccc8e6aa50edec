//! Compiling every kernel of a `loops` module: JIT code for the host ([`jit_module`]), an
//! object file for any supported ISA ([`object_module`]), and a cache key per kernel
//! ([`kernel_key`]).
//!
//! A *kernel* is a `func.func` with buffer arguments, no results and no program ops
//! (`loops.launch`, `loops.alloc`, `loops.constant`, `loops.view`); the program function of a
//! module is skipped. Each kernel becomes an exported function with the C signature of
//! [`KernelFn`] (see [`crate::translate`]), named like the kernel.

// Unsafe code: converting finalized code addresses to `KernelFn`, calling kernels, and declaring
// the finalized JIT code shareable between threads.
#![allow(unsafe_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use strata_dialects::func::FuncOp;
use strata_ir::{AttrData, Context, OpId, OpView, PrintOptions, TypeData, print_op};

use crate::error::{CodegenError, Result};
use crate::isa::{IsaConfig, Target};
use crate::jit::{JitBuilder, JitCode};
use crate::module::CompileTime;
use crate::object::ObjectBuilder;
use crate::translate::define_kernel;

/// A compiled kernel: `f(args, begin, end)` where `args[i]` is the base address of buffer
/// argument `i` and `begin..end` restricts the iterations of the kernel's `loops.parallel`.
pub type KernelFn = unsafe extern "C" fn(*const *mut u8, i64, i64);

/// The kernels of a module compiled into executable memory. Owns the code: the functions from
/// [`CompiledKernels::get`] may be called only while this value lives.
pub struct CompiledKernels {
    kernels: BTreeMap<String, KernelFn>,
    code: JitCode,
}

// SAFETY: after `JitBuilder::finalize` the code memory is immutable and only freed when the
// `JitCode` is dropped; the raw code addresses it stores are plain addresses that may be read
// and called from any thread (kernels share no state besides the buffers the caller passes).
// Nothing in `CompiledKernels` is mutated through a shared reference.
unsafe impl Send for CompiledKernels {}
// SAFETY: see the `Send` impl: every method takes `&self` and only reads immutable data.
unsafe impl Sync for CompiledKernels {}

impl CompiledKernels {
    /// The kernel named `name`.
    pub fn get(&self, name: &str) -> Option<KernelFn> {
        self.kernels.get(name).copied()
    }

    /// Names of the compiled kernels, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.kernels.keys().map(String::as_str)
    }

    /// Number of kernels.
    pub fn len(&self) -> usize {
        self.kernels.len()
    }

    /// Whether there are no kernels.
    pub fn is_empty(&self) -> bool {
        self.kernels.is_empty()
    }

    /// Cranelift compile time of each kernel, in compilation order.
    pub fn compile_times(&self) -> &[CompileTime] {
        self.code.compile_times()
    }

    /// Cranelift compile time of kernel `name`.
    pub fn compile_time(&self, name: &str) -> Option<Duration> {
        self.code.compile_times().iter().find(|c| c.name == name).map(|c| c.time)
    }

    /// Sum of all compile times.
    pub fn total_compile_time(&self) -> Duration {
        self.code.total_compile_time()
    }

    /// Cranelift's disassembly (VCode) of kernel `name`, when compiled with `disasm` on
    /// ([`jit_kernels`]).
    pub fn disassembly(&self, name: &str) -> Option<&str> {
        self.code.disassembly(name)
    }
}

impl std::fmt::Debug for CompiledKernels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledKernels")
            .field("kernels", &self.kernels.keys().collect::<Vec<_>>())
            .field("total_compile_time", &self.total_compile_time())
            .finish()
    }
}

/// Calls kernel `f` on the buffers `args` for the parallel iterations `begin..end`.
///
/// # Safety
///
/// - `f` comes from a [`CompiledKernels`] that is still alive;
/// - `args` has one pointer per buffer argument of the kernel, in order, and each points to
///   memory that is valid for every element the kernel reads or writes (its shape and strides,
///   with vector accesses reading or writing whole vectors), writable where the kernel stores;
/// - no other thread writes memory this call reads, or reads or writes memory it writes, during
///   the call (calls on disjoint `begin..end` ranges of one parallel kernel are fine when its
///   iterations write disjoint elements, as `loops.parallel` promises).
pub unsafe fn call_kernel(f: KernelFn, args: &[*mut u8], begin: i64, end: i64) {
    // SAFETY: the caller upholds the contract above; `args` outlives the call.
    unsafe { f(args.as_ptr(), begin, end) }
}

/// Whether `func` is a kernel: a `func.func` without results whose arguments are all buffers
/// and whose body holds no program op.
pub fn is_kernel(ctx: &Context, func: OpId) -> bool {
    let Some(f) = FuncOp::cast(ctx, func) else { return false };
    let Some(AttrData::Type(t)) = ctx.op_attr(f.0, "function_type").map(|a| ctx.attr(a)) else {
        return false;
    };
    let Some(fty) = ctx.ty(*t).as_func() else { return false };
    if !fty.results.is_empty() || !fty.inputs.iter().all(|&t| matches!(ctx.ty(t), TypeData::Buffer(_))) {
        return false;
    }
    !ctx.walk(func)
        .iter()
        .any(|&op| matches!(ctx.op_name(op), "loops.launch" | "loops.alloc" | "loops.constant" | "loops.view"))
}

fn func_name(ctx: &Context, func: OpId) -> Option<String> {
    match ctx.op_attr(func, "sym_name").map(|a| ctx.attr(a)) {
        Some(AttrData::Str(s)) => Some(s.clone()),
        _ => None,
    }
}

/// `(name, op)` of every kernel of `module`, in module order.
pub fn kernel_functions(ctx: &Context, module: OpId) -> Vec<(String, OpId)> {
    ctx.body_ops(module)
        .iter()
        .filter(|&&op| is_kernel(ctx, op))
        .filter_map(|&op| func_name(ctx, op).map(|n| (n, op)))
        .collect()
}

/// A hash of kernel `func`'s printed text without its name: two kernels with the same body
/// (same shapes, strides, constants and ops) get the same key, so an executor can reuse code
/// compiled for one for the other. Stable across runs and platforms (64-bit FNV-1a).
pub fn kernel_key(ctx: &Context, func: OpId) -> u64 {
    let text = print_op(ctx, func, &PrintOptions::default());
    let text = match func_name(ctx, func) {
        Some(name) => text.replacen(&format!("@{name}("), "@(", 1),
        None => text,
    };
    fnv1a(text.as_bytes())
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// JIT-compiles every kernel of `module` for `config` (whose target must run on this machine).
pub fn jit_module(ctx: &Context, module: OpId, config: &IsaConfig) -> Result<CompiledKernels> {
    let kernels = kernel_functions(ctx, module);
    let refs: Vec<(&str, OpId)> = kernels.iter().map(|(n, op)| (n.as_str(), *op)).collect();
    jit_kernels(ctx, &refs, config, false)
}

/// JIT-compiles the given `(name, kernel)` pairs for `config`; with `disasm`, keeps Cranelift's
/// disassembly of each ([`CompiledKernels::disassembly`]).
pub fn jit_kernels(
    ctx: &Context,
    kernels: &[(&str, OpId)],
    config: &IsaConfig,
    disasm: bool,
) -> Result<CompiledKernels> {
    let mut jit = JitBuilder::new(config)?;
    jit.set_disasm(disasm);
    for &(name, func) in kernels {
        define_kernel(&mut jit, ctx, func, name)?;
    }
    let code = jit.finalize()?;
    let mut map = BTreeMap::new();
    for &(name, _) in kernels {
        let ptr = code
            .get(name)
            .ok_or_else(|| CodegenError::Link(format!("kernel `{name}` has no code after finalizing")))?;
        // SAFETY: `ptr` is the finalized entry of a function declared with
        // `translate::kernel_signature`, i.e. `(ptr, i64, i64) -> ()` in the host's C calling
        // convention, which is exactly `KernelFn`; the code stays mapped while `code` (kept
        // next to it in `CompiledKernels`) lives.
        let f = unsafe { std::mem::transmute::<*const u8, KernelFn>(ptr) };
        map.insert(name.to_string(), f);
    }
    Ok(CompiledKernels { kernels: map, code })
}

/// Compiles every kernel of `module` for `target` (baseline features for fixed targets) into
/// a relocatable object file; each kernel is an exported symbol of its name, the runtime helpers
/// are undefined imports.
pub fn object_module(ctx: &Context, module: OpId, target: Target) -> Result<Vec<u8>> {
    object_module_with(ctx, module, &IsaConfig::new(target))
}

/// [`object_module`] with explicit ISA settings (e.g. `x86-64-v3` features).
pub fn object_module_with(ctx: &Context, module: OpId, config: &IsaConfig) -> Result<Vec<u8>> {
    let mut obj = ObjectBuilder::with_config(config)?;
    for (name, func) in kernel_functions(ctx, module) {
        define_kernel(&mut obj, ctx, func, &name)?;
    }
    obj.finish()
}

#[cfg(test)]
// The tests call JIT-compiled kernels, which is `unsafe`.
#[allow(unsafe_code)]
mod tests {
    use super::*;
    use crate::isa::has_fma;
    use strata_dialects::loops::{KernelBuilder, ProgramBuilder, builder::new_module};
    use strata_ir::{BufferType, Dim, ElemType, Layout, Loc, Rewriter, Ty, VerifyOptions};

    fn buf(rw: &mut Rewriter<'_>, shape: &[u64]) -> Ty {
        rw.ctx_mut().intern_type(TypeData::Buffer(BufferType {
            shape: shape.iter().map(|&d| Dim::Fixed(d)).collect(),
            elem: ElemType::F32,
            layout: Layout::Nchw,
            strides: None,
        }))
    }

    /// `c[i..i+4] = fma(a[i..i+4], b[i..i+4], c[i..i+4])` over `n` floats, parallel over blocks
    /// of 16 with the 4 vectors of a block unrolled.
    fn fma_kernel(rw: &mut Rewriter<'_>, m: OpId, name: &str, n: u64) {
        let t = buf(rw, &[n]);
        let (mut k, args) = KernelBuilder::new(rw, m, name, &[t, t, t]);
        k.parallel((n / 16) as i64, |k, blk| {
            let base = k.mul_i(blk, 16);
            let (l, u, s) = (k.index(0), k.index(16), k.index(4));
            k.for_loop(l, u, s, &[], Some(4), |k, j, _| {
                let i = k.add(base, j);
                let a = k.load_vec(args[0], &[i], 4);
                let b = k.load_vec(args[1], &[i], 4);
                let c = k.load_vec(args[2], &[i], 4);
                let r = k.fma(a, b, c);
                k.store(r, args[2], &[i]);
                Ok::<_, ()>(vec![])
            })?;
            Ok::<(), ()>(())
        })
        .unwrap();
        k.finish();
    }

    /// A module with two identical kernels under different names, one of another size, and a
    /// program launching them.
    fn sample() -> (Context, OpId) {
        let mut ctx = strata_dialects::context();
        let module = {
            let mut rw = Rewriter::new(&mut ctx);
            let m = new_module(&mut rw);
            fma_kernel(&mut rw, m, "fma_a", 256);
            fma_kernel(&mut rw, m, "fma_b", 256);
            fma_kernel(&mut rw, m, "fma_c", 512);
            let t = buf(&mut rw, &[256]);
            let (mut p, ins) = ProgramBuilder::new(&mut rw, m, "main", &[t, t], &[t]);
            let out = p.alloc(t);
            p.launch("fma_a", &[ins[0], ins[1], out], Loc::default());
            p.finish(&[out]);
            m
        };
        strata_ir::verify(&ctx, module, VerifyOptions::default()).expect("verifies");
        (ctx, module)
    }

    #[test]
    fn kernels_are_found_and_keyed_by_body() {
        let (ctx, module) = sample();
        let names: Vec<String> = kernel_functions(&ctx, module).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["fma_a", "fma_b", "fma_c"]);
        let f = |n: &str| strata_dialects::func::lookup_function(&ctx, module, n).unwrap().0;
        assert!(!is_kernel(&ctx, f("main")));
        assert_eq!(kernel_key(&ctx, f("fma_a")), kernel_key(&ctx, f("fma_b")));
        assert_ne!(kernel_key(&ctx, f("fma_a")), kernel_key(&ctx, f("fma_c")));
        assert_eq!(kernel_key(&ctx, f("fma_a")), kernel_key(&ctx, f("fma_a")));
    }

    #[test]
    fn jit_module_runs_kernels_and_reports_times() {
        let (ctx, module) = sample();
        let code = jit_module(&ctx, module, &IsaConfig::host()).unwrap();
        assert_eq!(code.len(), 3);
        assert!(code.get("main").is_none());
        assert_eq!(code.compile_times().len(), 3);
        assert!(code.compile_time("fma_c").is_some());
        assert!(code.total_compile_time() >= code.compile_time("fma_c").unwrap());
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<CompiledKernels>();

        let n = 512;
        let mut a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
        let mut b: Vec<f32> = (0..n).map(|i| 1.0 + (i % 7) as f32 * 0.1).collect();
        let mut c: Vec<f32> = (0..n).map(|i| (i as f32).sqrt()).collect();
        let want: Vec<f32> = (0..n).map(|i| a[i].mul_add(b[i], c[i])).collect();
        let f = code.get("fma_c").unwrap();
        let args = [a.as_mut_ptr().cast(), b.as_mut_ptr().cast(), c.as_mut_ptr().cast()];
        // SAFETY: fma_c takes three buffers of 512 floats, which the Vecs hold; `code` is alive;
        // the two calls cover disjoint block ranges one after the other.
        unsafe {
            call_kernel(f, &args, 0, 13);
            call_kernel(f, &args, 13, 32);
        }
        assert_eq!(c, want);
    }

    #[test]
    fn fma_microkernel_folds_constant_offsets() {
        let (ctx, module) = sample();
        let f = strata_dialects::func::lookup_function(&ctx, module, "fma_a").unwrap().0;
        let code = jit_kernels(&ctx, &[("fma_a", f)], &IsaConfig::host(), true).unwrap();
        let text = code.disassembly("fma_a").unwrap();
        println!("{text}");
        let isa = crate::isa::build_isa(&IsaConfig::host()).unwrap();
        if isa.name() == "x64" && has_fma(&*isa) {
            assert!(text.contains("vfmadd"), "{text}");
            // The four unrolled vectors share one address register: loads at +16, +32, +48.
            for off in ["0x10(", "0x20(", "0x30("] {
                assert!(text.contains(off), "no constant offset {off}:\n{text}");
            }
        }
    }

    #[test]
    fn object_files_for_both_isas() {
        let (ctx, module) = sample();
        for target in [Target::X86_64, Target::Aarch64] {
            let bytes = object_module(&ctx, module, target).unwrap();
            assert_eq!(&bytes[..4], b"\x7fELF", "{target}");
            for name in ["fma_a", "fma_b", "fma_c"] {
                assert!(bytes.windows(name.len()).any(|w| w == name.as_bytes()), "{target}: no symbol {name}");
            }
        }
        let v3 = object_module_with(&ctx, module, &IsaConfig::new(Target::X86_64).enabling("x86-64-v3")).unwrap();
        assert_eq!(&v3[..4], b"\x7fELF");
    }

    /// A register-blocked 1x1-convolution microkernel: 4 pixels x 8 output channels of carried
    /// `f32x4` accumulators, input broadcast per pixel, weights as two vectors per input channel.
    fn conv_kernel(rw: &mut Rewriter<'_>, m: OpId) {
        let (inp, w, out) = (buf(rw, &[64, 32]), buf(rw, &[64, 8]), buf(rw, &[32, 8]));
        let (mut k, args) = KernelBuilder::new(rw, m, "conv", &[inp, w, out]);
        k.parallel(8, |k, blk| {
            let p0 = k.mul_i(blk, 4);
            let z = k.f32x4(0.0);
            let (l, u, s) = (k.index(0), k.index(64), k.index(1));
            let acc = k.for_loop(l, u, s, &[z; 8], Some(2), |k, ic, acc| {
                let (h0, h1) = (k.index(0), k.index(4));
                let w0 = k.load_vec(args[1], &[ic, h0], 4);
                let w1 = k.load_vec(args[1], &[ic, h1], 4);
                let mut next = Vec::new();
                for p in 0..4 {
                    let pi = k.add_i(p0, p);
                    let x = k.load(args[0], &[ic, pi]);
                    let xv = k.splat(x, 4);
                    next.push(k.fma(xv, w0, acc[2 * p as usize]));
                    next.push(k.fma(xv, w1, acc[2 * p as usize + 1]));
                }
                Ok::<_, ()>(next)
            })?;
            for p in 0..4 {
                let pi = k.add_i(p0, p);
                let (h0, h1) = (k.index(0), k.index(4));
                k.store(acc[2 * p as usize], args[2], &[pi, h0]);
                k.store(acc[2 * p as usize + 1], args[2], &[pi, h1]);
            }
            Ok::<(), ()>(())
        })
        .unwrap();
        k.finish();
    }

    #[test]
    fn conv_microkernel_is_correct_and_keeps_accumulators_in_registers() {
        let mut ctx = strata_dialects::context();
        let module = {
            let mut rw = Rewriter::new(&mut ctx);
            let m = new_module(&mut rw);
            conv_kernel(&mut rw, m);
            m
        };
        strata_ir::verify(&ctx, module, VerifyOptions::default()).expect("verifies");
        let f = kernel_functions(&ctx, module)[0].1;
        let code = jit_kernels(&ctx, &[("conv", f)], &IsaConfig::host(), true).unwrap();
        let mut x: Vec<f32> = (0..64 * 32).map(|i| ((i * 37) % 101) as f32 * 0.01 - 0.5).collect();
        let mut w: Vec<f32> = (0..64 * 8).map(|i| ((i * 53) % 97) as f32 * 0.02 - 1.0).collect();
        let mut out = vec![0f32; 32 * 8];
        let args = [x.as_mut_ptr().cast(), w.as_mut_ptr().cast(), out.as_mut_ptr().cast()];
        // SAFETY: `conv` takes buffers of 64x32, 64x8 and 32x8 floats, which the Vecs hold.
        unsafe { call_kernel(code.get("conv").unwrap(), &args, 0, 8) };
        for p in 0..32 {
            for oc in 0..8 {
                let want = (0..64).fold(0f32, |acc, ic| x[ic * 32 + p].mul_add(w[ic * 8 + oc], acc));
                assert_eq!(out[p * 8 + oc], want, "pixel {p} channel {oc}");
            }
        }
        let text = code.disassembly("conv").unwrap();
        let isa = crate::isa::build_isa(&IsaConfig::host()).unwrap();
        if isa.name() == "x64" && has_fma(&*isa) {
            assert!(text.contains("vfmadd") && text.contains("vbroadcastss"), "{text}");
            let spills: Vec<&str> = text.lines().filter(|l| l.contains("%xmm") && l.contains("(%rsp)")).collect();
            assert!(spills.is_empty(), "vector spills:\n{text}");
        }
    }
}
