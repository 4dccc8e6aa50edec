//! Small hand-built Cranelift functions shared by the unit tests of the JIT, object and
//! cross-compilation modules.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{AbiParam, BlockArg, Function, InstBuilder, MemFlagsData, Signature, UserFuncName, types};
use cranelift_codegen::isa::TargetIsa;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};

use crate::module::KernelModule;

/// `fn(a: *const f32, b: *const f32, c: *mut f32, n: i64)`: `c[i..i+4] = fma(a, b, c)` for
/// `i` in `0..n` step 4 (`n` a multiple of 4).
pub(crate) fn fma_loop_signature(isa: &dyn TargetIsa) -> Signature {
    let ptr = isa.pointer_type();
    let mut sig = Signature::new(isa.default_call_conv());
    sig.params.extend([AbiParam::new(ptr), AbiParam::new(ptr), AbiParam::new(ptr), AbiParam::new(types::I64)]);
    sig
}

/// The body for [`fma_loop_signature`].
pub(crate) fn fma_loop_function(isa: &dyn TargetIsa) -> Function {
    let ptr = isa.pointer_type();
    let mut func = Function::with_name_signature(UserFuncName::default(), fma_loop_signature(isa));
    let mut fctx = FunctionBuilderContext::new();
    let mut b = FunctionBuilder::new(&mut func, &mut fctx);
    let entry = b.create_block();
    let header = b.create_block();
    let body = b.create_block();
    let exit = b.create_block();
    b.append_block_params_for_function_params(entry);
    let i = b.append_block_param(header, ptr);

    b.switch_to_block(entry);
    let [pa, pb, pc, n] = b.block_params(entry).try_into().unwrap();
    let four = b.ins().iconst(types::I64, 4);
    let nbytes = b.ins().imul(n, four);
    let zero = b.ins().iconst(ptr, 0);
    b.ins().jump(header, &[BlockArg::Value(zero)]);

    b.switch_to_block(header);
    let more = b.ins().icmp(IntCC::SignedLessThan, i, nbytes);
    b.ins().brif(more, body, &[], exit, &[]);

    b.switch_to_block(body);
    let flags = MemFlagsData::new().with_notrap();
    let a_at = b.ins().iadd(pa, i);
    let b_at = b.ins().iadd(pb, i);
    let c_at = b.ins().iadd(pc, i);
    let va = b.ins().load(types::F32X4, flags, a_at, 0);
    let vb = b.ins().load(types::F32X4, flags, b_at, 0);
    let vc = b.ins().load(types::F32X4, flags, c_at, 0);
    let r = b.ins().fma(va, vb, vc);
    b.ins().store(flags, r, c_at, 0);
    let next = b.ins().iadd_imm_s(i, 16);
    b.ins().jump(header, &[BlockArg::Value(next)]);

    b.switch_to_block(exit);
    b.ins().return_(&[]);
    b.seal_all_blocks();
    b.finalize(isa.frontend_config());
    func
}

/// `fn(x: *const f32, y: *mut f32, n: i64)`: `y[i] = helper(x[i])` for a unary helper, one
/// scalar call per element; exercises helper imports.
pub(crate) fn unary_helper_loop(m: &mut dyn KernelModule, helper: &str) -> (Signature, Function) {
    let isa = m.isa();
    let ptr = isa.pointer_type();
    let mut sig = Signature::new(isa.default_call_conv());
    sig.params.extend([AbiParam::new(ptr), AbiParam::new(ptr), AbiParam::new(types::I64)]);
    let tfc = isa.frontend_config();
    let mut func = Function::with_name_signature(UserFuncName::default(), sig.clone());
    let helper_id = m.declare_helper(helper).unwrap();
    let callee = m.declare_func_in_func(helper_id, &mut func);

    let mut fctx = FunctionBuilderContext::new();
    let mut b = FunctionBuilder::new(&mut func, &mut fctx);
    let entry = b.create_block();
    let header = b.create_block();
    let body = b.create_block();
    let exit = b.create_block();
    b.append_block_params_for_function_params(entry);
    let i = b.append_block_param(header, ptr);

    b.switch_to_block(entry);
    let [px, py, n] = b.block_params(entry).try_into().unwrap();
    let four = b.ins().iconst(types::I64, 4);
    let nbytes = b.ins().imul(n, four);
    let zero = b.ins().iconst(ptr, 0);
    b.ins().jump(header, &[BlockArg::Value(zero)]);

    b.switch_to_block(header);
    let more = b.ins().icmp(IntCC::SignedLessThan, i, nbytes);
    b.ins().brif(more, body, &[], exit, &[]);

    b.switch_to_block(body);
    let flags = MemFlagsData::new().with_notrap();
    let x_at = b.ins().iadd(px, i);
    let y_at = b.ins().iadd(py, i);
    let x = b.ins().load(types::F32, flags, x_at, 0);
    let call = b.ins().call(callee, &[x]);
    let y = b.inst_results(call)[0];
    b.ins().store(flags, y, y_at, 0);
    let next = b.ins().iadd_imm_s(i, 4);
    b.ins().jump(header, &[BlockArg::Value(next)]);

    b.switch_to_block(exit);
    b.ins().return_(&[]);
    b.seal_all_blocks();
    b.finalize(tfc);
    (sig, func)
}
