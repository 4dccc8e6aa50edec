//! Builder, verifier and text round-trip tests of the loops dialect.

use super::{BinOp, CmpPred, KernelBuilder, LaneReduce, ProgramBuilder, builder::new_module};
use strata_ir::{BufferType, Dim, ElemType, Layout, Rewriter, Ty, TypeData};

fn buffer(ctx: &mut strata_ir::Context, shape: &[u64]) -> Ty {
    ctx.intern_type(TypeData::Buffer(BufferType {
        shape: shape.iter().map(|&d| Dim::Fixed(d)).collect(),
        elem: ElemType::F32,
        layout: Layout::Nchw,
        strides: None,
    }))
}

/// A kernel with a parallel loop, a carried vector accumulator, a lane
/// reduction and a comparison, plus a program launching it.
fn sample() -> (strata_ir::Context, strata_ir::OpId) {
    let mut ctx = crate::context();
    let b_in = buffer(&mut ctx, &[4, 8]);
    let b_out = buffer(&mut ctx, &[4]);
    let mut rw = Rewriter::new(&mut ctx);
    let module = new_module(&mut rw);
    let (mut k, args) = KernelBuilder::new(&mut rw, module, "row_sum_relu", &[b_in, b_out]);
    k.parallel(4, |k, row| {
        let zero = k.f32x4(0.0);
        let (l, u, s) = (k.index(0), k.index(8), k.index(4));
        let acc = k.for_loop(l, u, s, &[zero], Some(2), |k, j, acc| {
            let x = k.load_vec(args[0], &[row, j], 4);
            Ok::<_, ()>(vec![k.add(acc[0], x)])
        })?;
        let sum = k.reduce_lanes(LaneReduce::Add, acc[0]);
        let z = k.f32(0.0);
        let pos = k.cmp(CmpPred::Gt, sum, z);
        let r = k.select(pos, sum, z);
        k.store(r, args[1], &[row]);
        Ok::<(), ()>(())
    })
    .unwrap();
    k.finish();
    let (mut p, ins) = ProgramBuilder::new(&mut rw, module, "main", &[b_in], &[b_out]);
    let out = p.alloc(b_out);
    p.launch("row_sum_relu", &[ins[0], out], strata_ir::Loc::default());
    p.finish(&[out]);
    (ctx, module)
}

#[test]
fn built_kernels_verify_print_and_round_trip() {
    let (ctx, module) = sample();
    strata_ir::verify(&ctx, module, strata_ir::VerifyOptions::default()).expect("verifies");
    let text = strata_ir::print_module(&ctx, module, &strata_ir::PrintOptions::default());
    assert!(text.contains("loops.parallel"), "{text}");
    assert!(text.contains("vec<4xf32>"), "{text}");
    let mut ctx2 = crate::context();
    let m2 = strata_ir::parse_module(
        &mut ctx2,
        &strata_ir::Source::new("t", text.clone()),
        &strata_ir::ParseOptions::default(),
    )
    .expect("parses");
    strata_ir::verify(&ctx2, m2, strata_ir::VerifyOptions::default()).expect("reparsed verifies");
    assert_eq!(text, strata_ir::print_module(&ctx2, m2, &strata_ir::PrintOptions::default()));
}

#[test]
fn index_arithmetic_folds_and_single_trip_loops_inline() {
    let mut ctx = crate::context();
    let b = buffer(&mut ctx, &[8]);
    let mut rw = Rewriter::new(&mut ctx);
    let module = new_module(&mut rw);
    let (mut k, args) = KernelBuilder::new(&mut rw, module, "k", &[b]);
    let i = k.index(3);
    let j = k.affine(&[(i, 2)], 1);
    assert_eq!(k.index_value(j), Some(7));
    let x = k.index(5);
    let y = k.binary(BinOp::Mul, x, i);
    assert_eq!(k.index_value(y), Some(15));
    k.for_range(2, 3, 1, |k, i| {
        assert_eq!(k.index_value(i), Some(2));
        let v = k.f32(1.0);
        k.store(v, args[0], &[i]);
        Ok::<(), ()>(())
    })
    .unwrap();
    let f = k.finish();
    assert!(!ctx.walk(f).iter().any(|&o| ctx.op_name(o) == "loops.for"));
}

#[test]
fn verifier_rejects_ill_typed_loops_ir() {
    let cases = [
        // mismatched binary operands
        "func @k(%b: buffer<4xf32>) {\n  %0 = loops.const() {value = 1.0} : () -> f32\n  %1 = loops.index_const() {value = 0} : () -> index\n  %2 = loops.binary(%0, %1) {op = \"add\"} : (f32, index) -> f32\n  return()\n}\n",
        // wrong subscript count
        "func @k(%b: buffer<4x4xf32>) {\n  %0 = loops.index_const() {value = 0} : () -> index\n  %1 = loops.load(%b, %0) : (buffer<4x4xf32>, index) -> f32\n  return()\n}\n",
        // a 256-bit vector
        "func @k(%b: buffer<8xf32>) {\n  %0 = loops.index_const() {value = 0} : () -> index\n  %1 = loops.load(%b, %0) : (buffer<8xf32>, index) -> vec<8xf32>\n  return()\n}\n",
        // unknown op name in the attribute
        "func @k() {\n  %0 = loops.const() {value = 1.0} : () -> f32\n  %1 = loops.unary(%0) {op = \"frobnicate\"} : (f32) -> f32\n  return()\n}\n",
    ];
    for src in cases {
        let mut ctx = crate::context();
        let m =
            strata_ir::parse_module(&mut ctx, &strata_ir::Source::new("t", src), &strata_ir::ParseOptions::default())
                .expect(src);
        assert!(strata_ir::verify(&ctx, m, strata_ir::VerifyOptions::default()).is_err(), "accepted:\n{src}");
    }
}
