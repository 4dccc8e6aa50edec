//! Tests of the loops reference interpreter: every op on scalars and vectors,
//! loops, parallel ranges, views, bounds checks, limits and whole programs.

use super::*;
use crate::loops::{CmpPred, KernelBuilder, LaneReduce, ProgramBuilder, builder::new_module};
use strata_ir::{DenseAttr, DenseStorage, Layout, Rewriter, TensorType};

// ---- harness -----------------------------------------------------------------------

fn parse(src: &str) -> (Context, OpId) {
    let mut ctx = crate::context();
    let m = strata_ir::parse_module(&mut ctx, &strata_ir::Source::new("t", src), &strata_ir::ParseOptions::default())
        .unwrap_or_else(|e| panic!("{e:?}\n{src}"));
    (ctx, m)
}

fn func(ctx: &Context, m: OpId, name: &str) -> OpId {
    lookup_function(ctx, m, name).unwrap_or_else(|| panic!("no @{name}")).0
}

fn compile(src: &str) -> Kernel {
    let (ctx, m) = parse(src);
    Kernel::compile(&ctx, func(&ctx, m, "k")).unwrap_or_else(|e| panic!("{e}\n{src}"))
}

fn compile_err(src: &str) -> LoopsEvalError {
    let (ctx, m) = parse(src);
    match Kernel::compile(&ctx, func(&ctx, m, "k")) {
        Ok(_) => panic!("compiled:\n{src}"),
        Err(e) => e,
    }
}

fn elem_of(s: &str) -> ElemType {
    match s {
        "f32" => ElemType::F32,
        "f16" => ElemType::F16,
        "bf16" => ElemType::BF16,
        "i8" => ElemType::I8,
        "u8" => ElemType::U8,
        "i16" => ElemType::I16,
        "u16" => ElemType::U16,
        "i32" => ElemType::I32,
        "i64" => ElemType::I64,
        "bool" => ElemType::Bool,
        _ => panic!("elem {s}"),
    }
}

fn buf(elem: ElemType, shape: &[usize], vals: &[f64]) -> Buffer {
    Buffer::from_tensor(&TensorData::from_f64(elem, shape.to_vec(), vals).unwrap()).unwrap()
}

fn vals(b: &Buffer) -> Vec<f64> {
    b.to_tensor().unwrap().to_f64_vec()
}

fn opts() -> LoopsEvalOptions {
    LoopsEvalOptions::default()
}

/// Loads three values `%x`, `%y`, `%z` of type `in_ty` (scalars or vectors of
/// `lanes` lanes of `in_elem`) from rows 0..3 of the input, computes `%r` with
/// `op` (text using `%x`, `%y`, `%z`) and stores it (type `out_ty`, `out_lanes`
/// lanes of `out_elem`) to the output.
#[allow(clippy::too_many_arguments)]
fn run_op(
    in_elem: &str,
    in_ty: &str,
    lanes: usize,
    out_elem: &str,
    _out_ty: &str,
    out_lanes: usize,
    op: &str,
    xs: &[f64],
) -> Result<Vec<f64>, LoopsEvalError> {
    let bi = format!("buffer<3x{lanes}x{in_elem}>");
    let bo = format!("buffer<1x{out_lanes}x{out_elem}>");
    let src = format!(
        "func @k(%in: {bi}, %out: {bo}) {{
  %c0 = loops.index_const() {{value = 0}} : () -> index
  %c1 = loops.index_const() {{value = 1}} : () -> index
  %c2 = loops.index_const() {{value = 2}} : () -> index
  %x = loops.load(%in, %c0, %c0) : ({bi}, index, index) -> {in_ty}
  %y = loops.load(%in, %c1, %c0) : ({bi}, index, index) -> {in_ty}
  %z = loops.load(%in, %c2, %c0) : ({bi}, index, index) -> {in_ty}
  %r = {op}
  loops.store(%r, %out, %c0, %c0)
  return()
}}
"
    );
    let k = compile(&src);
    let mut padded = xs.to_vec();
    padded.resize(3 * lanes, 0.0);
    let input = buf(elem_of(in_elem), &[3, lanes], &padded);
    let output = Buffer::poison(elem_of(out_elem), vec![1, out_lanes]).unwrap();
    k.run(&[input, output.clone()], None, &opts())?;
    Ok(vals(&output))
}

/// A scalar op of type `t` on `xs`.
fn s(t: &str, op: &str, xs: &[f64]) -> Result<f64, LoopsEvalError> {
    run_op(t, t, 1, t, t, 1, op, xs).map(|v| v[0])
}

/// A scalar op from `ta` to `tr`.
fn s2(ta: &str, tr: &str, op: &str, xs: &[f64]) -> Result<f64, LoopsEvalError> {
    run_op(ta, ta, 1, tr, tr, 1, op, xs).map(|v| v[0])
}

fn bin(op: &str, t: &str) -> String {
    format!("loops.binary(%x, %y) {{op = \"{op}\"}} : ({t}, {t}) -> {t}")
}

fn un(op: &str, t: &str) -> String {
    format!("loops.unary(%x) {{op = \"{op}\"}} : ({t}) -> {t}")
}

fn cmp(pred: &str, t: &str, r: &str) -> String {
    format!("loops.cmp(%x, %y) {{pred = \"{pred}\"}} : ({t}, {t}) -> {r}")
}

fn cast(from: &str, to: &str) -> String {
    format!("loops.cast(%x) : ({from}) -> {to}")
}

fn f32b(t: &str, op: &str, x: f32, y: f32) -> f32 {
    s(t, &bin(op, t), &[f64::from(x), f64::from(y)]).unwrap() as f32
}

fn f32u(op: &str, x: f32) -> f32 {
    s("f32", &un(op, "f32"), &[f64::from(x)]).unwrap() as f32
}

// ---- floats ------------------------------------------------------------------------

#[test]
fn f32_binary_ops() {
    assert_eq!(f32b("f32", "add", 1.5, 2.25), 3.75);
    assert_eq!(f32b("f32", "sub", 1.5, 2.25), -0.75);
    assert_eq!(f32b("f32", "mul", 1.5, 2.25), 3.375);
    assert_eq!(f32b("f32", "div", 1.0, 3.0), 1.0f32 / 3.0);
    assert_eq!(f32b("f32", "div", 1.0, 0.0), f32::INFINITY);
    assert!(f32b("f32", "div", 0.0, 0.0).is_nan());
    assert_eq!(f32b("f32", "pow", 2.0, 10.0), 1024.0);
    assert_eq!(f32b("f32", "pow", 1.7, 2.3), bb(1.7).powf(bb(2.3)));
    // f32 arithmetic, not f64 rounded afterwards.
    assert_eq!(f32b("f32", "add", 0.1, 0.2), 0.1f32 + 0.2f32);
    assert_eq!(f32b("f32", "min", 2.0, 3.0), 2.0);
    assert_eq!(f32b("f32", "max", 2.0, 3.0), 3.0);
}

#[test]
fn f32_min_max_propagate_nan_and_order_signed_zeros() {
    for (x, y) in [(1.0, f32::NAN), (f32::NAN, 1.0), (f32::NAN, f32::NAN)] {
        assert!(f32b("f32", "min", x, y).is_nan(), "min({x}, {y})");
        assert!(f32b("f32", "max", x, y).is_nan(), "max({x}, {y})");
    }
    assert!(f32b("f32", "min", 0.0, -0.0).is_sign_negative());
    assert!(f32b("f32", "min", -0.0, 0.0).is_sign_negative());
    assert!(f32b("f32", "max", -0.0, 0.0).is_sign_positive());
    assert!(f32b("f32", "max", 0.0, -0.0).is_sign_positive());
    // Vectors, lane by lane.
    let r = run_op(
        "f32",
        "vec<4xf32>",
        4,
        "f32",
        "vec<4xf32>",
        4,
        &bin("max", "vec<4xf32>"),
        &[1.0, f64::NAN, -0.0, 5.0, 2.0, 0.0, 0.0, f64::NAN],
    )
    .unwrap();
    assert_eq!(r[0], 2.0);
    assert!(r[1].is_nan());
    assert!(r[2] == 0.0 && r[2].is_sign_positive());
    assert!(r[3].is_nan());
}

/// Hides a constant from the optimiser, so libm calls below happen at run time
/// (constant folding may round differently from the library the interpreter calls).
fn bb(x: f32) -> f32 {
    std::hint::black_box(x)
}

#[test]
fn f32_unary_ops() {
    assert_eq!(f32u("neg", 1.5), -1.5);
    assert!(f32u("neg", 0.0).is_sign_negative());
    assert_eq!(f32u("abs", -2.5), 2.5);
    assert_eq!(f32u("sqrt", 2.0), bb(2.0).sqrt());
    assert!(f32u("sqrt", -1.0).is_nan());
    assert_eq!(f32u("floor", -1.5), -2.0);
    assert_eq!(f32u("ceil", -1.5), -1.0);
    assert_eq!(f32u("round", 2.5), 3.0);
    assert_eq!(f32u("round", -2.5), -3.0);
    assert_eq!(f32u("round", 0.49999997), 0.0);
    assert_eq!(f32u("exp", 1.0), bb(1.0).exp());
    assert_eq!(f32u("log", 10.0), bb(10.0).ln());
    assert!(f32u("log", -1.0).is_nan());
    assert_eq!(f32u("tanh", 0.7), bb(0.7).tanh());
    assert_eq!(f32u("sin", 1.2), bb(1.2).sin());
    assert_eq!(f32u("cos", 1.2), bb(1.2).cos());
    assert!(f32u("exp", f32::NAN).is_nan());
    assert_eq!(f32u("erf", 0.5), erf_f32(0.5));
}

#[test]
fn erf_is_accurate() {
    // CPython's math.erf (correctly rounded f64).
    let reference: &[(f64, f64)] = &[
        (0.0, 0.0),
        (1e-8, 1.1283791670955126e-08),
        (0.1, 0.1124629160182849),
        (0.5, 0.5204998778130465),
        (1.0, 0.8427007929497149),
        (1.5, 0.9661051464753108),
        (2.0, 0.9953222650189527),
        (2.4999, 0.9995928300996666),
        (2.5, 0.999593047982555),
        (3.0, 0.9999779095030014),
        (4.0, 0.9999999845827421),
        (5.0, 0.9999999999984626),
        (-0.3, -0.3286267594591274),
        (-1.7, -0.9837904585907745),
        (-2.9, -0.9999589021219005),
    ];
    for &(x, want) in reference {
        assert!((erf_f64(x) - want).abs() < 1e-14, "erf_f64({x})");
        // The f32 function of the f32 input: within 1e-6 of the exact value.
        let exact = erf_f64(f64::from(x as f32));
        assert!((f64::from(erf_f32(x as f32)) - exact).abs() < 1e-6, "erf_f32({x})");
    }
    let mut x = -7.0f32;
    let mut prev = -1.0f32;
    while x <= 7.0 {
        let y = erf_f32(x);
        assert!((-1.0..=1.0).contains(&y) && y >= prev, "erf({x}) = {y}");
        assert_eq!(erf_f32(-x), -y);
        prev = y;
        x += 0.01;
    }
    assert!(erf_f32(f32::NAN).is_nan());
    assert_eq!(erf_f32(f32::INFINITY), 1.0);
    assert_eq!(erf_f32(f32::NEG_INFINITY), -1.0);
}

#[test]
fn fma_rounds_once() {
    let a = 1.0 + 2f32.powi(-12);
    let c = -(1.0 + 2f32.powi(-11));
    assert_eq!(a * a + c, 0.0, "the unfused result rounds the product");
    let op = "loops.fma(%x, %y, %z) : (f32, f32, f32) -> f32";
    let r = s("f32", op, &[f64::from(a), f64::from(a), f64::from(c)]).unwrap();
    assert_eq!(r as f32, 2f32.powi(-24));
    let vop = "loops.fma(%x, %y, %z) : (vec<4xf32>, vec<4xf32>, vec<4xf32>) -> vec<4xf32>";
    let mut xs = vec![f64::from(a); 8];
    xs.extend([f64::from(c), 1.0, 2.0, 3.0]);
    let r = run_op("f32", "vec<4xf32>", 4, "f32", "vec<4xf32>", 4, vop, &xs).unwrap();
    assert_eq!(r[0] as f32, 2f32.powi(-24));
    assert_eq!(r[1] as f32, a.mul_add(a, 1.0));
}

#[test]
fn f16_is_storage_with_f32_arithmetic_rounded_back() {
    // 1 + 2^-11 is halfway between two f16 values: ties to even gives 1.
    assert_eq!(f32b("f16", "add", 1.0, 2f32.powi(-11)), 1.0);
    assert_eq!(f32b("f16", "add", 2048.0, 1.0), 2048.0);
    assert_eq!(f32b("f16", "mul", 300.0, 300.0), f32::INFINITY);
    assert_eq!(f32b("f16", "div", 1.0, 3.0), f16::from_f32(1.0 / 3.0).to_f32());
    let r = run_op(
        "f16",
        "vec<8xf16>",
        8,
        "f16",
        "vec<8xf16>",
        8,
        &bin("add", "vec<8xf16>"),
        &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 2048.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 1.0],
    )
    .unwrap();
    assert_eq!(r, vec![1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5, 2048.0]);
    // Loads and stores move the bits unchanged, NaN payloads included.
    let bits: [u16; 4] = [0x3c00, 0x7e01, 0xfc00, 0x0001];
    let bytes: Vec<u8> = bits.iter().flat_map(|b| b.to_le_bytes()).collect();
    let t = TensorData::from_bytes(ElemType::F16, vec![4], bytes.clone().into()).unwrap();
    let k = compile(
        "func @k(%a: buffer<4xf16>, %b: buffer<4xf16>) {
  %c0 = loops.index_const() {value = 0} : () -> index
  %c1 = loops.index_const() {value = 1} : () -> index
  %c4 = loops.index_const() {value = 4} : () -> index
  loops.for(%c0, %c4, %c1) ({
  ^bb0(%i: index):
    %x = loops.load(%a, %i) : (buffer<4xf16>, index) -> f16
    loops.store(%x, %b, %i)
    loops.yield()
  }) : (index, index, index) -> ()
  return()
}
",
    );
    let out = Buffer::zeros(ElemType::F16, vec![4]).unwrap();
    k.run(&[Buffer::from_tensor(&t).unwrap(), out.clone()], None, &opts()).unwrap();
    assert_eq!(out.to_tensor().unwrap().bytes(), &bytes[..]);
}

// ---- integers ----------------------------------------------------------------------

fn ib(t: &str, op: &str, x: f64, y: f64) -> f64 {
    s(t, &bin(op, t), &[x, y]).unwrap()
}

#[test]
fn integer_binary_ops_wrap() {
    let (min, max) = (f64::from(i32::MIN), f64::from(i32::MAX));
    assert_eq!(ib("i32", "add", max, 1.0), min);
    assert_eq!(ib("i32", "sub", min, 1.0), max);
    assert_eq!(ib("i32", "mul", 65536.0, 65536.0), 0.0);
    assert_eq!(ib("i32", "div", -7.0, 2.0), -3.0);
    assert_eq!(ib("i32", "rem", -7.0, 2.0), -1.0);
    assert_eq!(ib("i32", "rem", 7.0, -2.0), 1.0);
    assert_eq!(ib("i32", "div", min, -1.0), min);
    assert_eq!(ib("i32", "rem", min, -1.0), 0.0);
    assert_eq!(ib("i32", "min", -3.0, 2.0), -3.0);
    assert_eq!(ib("i32", "max", -3.0, 2.0), 2.0);
    assert_eq!(ib("i32", "and", 12.0, 10.0), 8.0);
    assert_eq!(ib("i32", "or", 12.0, 10.0), 14.0);
    assert_eq!(ib("i32", "xor", 12.0, 10.0), 6.0);
    assert_eq!(ib("i8", "add", 127.0, 1.0), -128.0);
    assert_eq!(ib("i16", "mul", 300.0, 300.0), f64::from((300i32 * 300) as i16));
    assert_eq!(ib("u8", "sub", 0.0, 1.0), 255.0);
    assert_eq!(ib("u8", "max", 200.0, 100.0), 200.0);
    assert_eq!(ib("u8", "min", 200.0, 100.0), 100.0);
    assert_eq!(ib("u8", "div", 200.0, 3.0), 66.0);
    assert_eq!(ib("u16", "add", 65535.0, 1.0), 0.0);
    assert_eq!(ib("i64", "mul", 4294967296.0, 3.0), 12884901888.0);
    // Vectors: lane by lane, each lane wrapping.
    let r = run_op(
        "i32",
        "vec<4xi32>",
        4,
        "i32",
        "vec<4xi32>",
        4,
        &bin("add", "vec<4xi32>"),
        &[max, 1.0, -5.0, 7.0, 1.0, 2.0, 5.0, -8.0],
    )
    .unwrap();
    assert_eq!(r, vec![min, 3.0, 0.0, -1.0]);
    let mut xs = vec![250.0; 16];
    xs.extend(vec![10.0; 16]);
    let r = run_op("u8", "vec<16xu8>", 16, "u8", "vec<16xu8>", 16, &bin("add", "vec<16xu8>"), &xs).unwrap();
    assert_eq!(r, vec![4.0; 16]);
}

#[test]
fn integer_unary_ops() {
    assert_eq!(s("i32", &un("neg", "i32"), &[5.0]).unwrap(), -5.0);
    assert_eq!(s("i32", &un("neg", "i32"), &[f64::from(i32::MIN)]).unwrap(), f64::from(i32::MIN));
    assert_eq!(s("i32", &un("abs", "i32"), &[-5.0]).unwrap(), 5.0);
    assert_eq!(s("i8", &un("abs", "i8"), &[-128.0]).unwrap(), -128.0);
    assert_eq!(s("i32", &un("not", "i32"), &[0.0]).unwrap(), -1.0);
    assert_eq!(s("u8", &un("not", "u8"), &[0.0]).unwrap(), 255.0);
    assert_eq!(s("u8", &un("neg", "u8"), &[1.0]).unwrap(), 255.0);
    assert_eq!(s("u8", &un("abs", "u8"), &[200.0]).unwrap(), 200.0);
}

#[test]
fn integer_division_by_zero_is_an_error_naming_the_op() {
    for (t, op) in [("i32", "div"), ("i32", "rem"), ("u8", "div"), ("i64", "rem")] {
        let e = s(t, &bin(op, t), &[7.0, 0.0]).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, LoopsEvalError::Op { index: 6, .. }), "{e:?}");
        assert!(msg.contains("loops.binary") && msg.contains("by zero") && msg.contains("@k"), "{msg}");
    }
    let e = run_op(
        "i32",
        "vec<4xi32>",
        4,
        "i32",
        "vec<4xi32>",
        4,
        &bin("div", "vec<4xi32>"),
        &[1.0, 2.0, 3.0, 4.0, 1.0, 1.0, 0.0, 1.0],
    )
    .unwrap_err();
    assert!(e.to_string().contains("division by zero"), "{e}");
}

#[test]
fn index_arithmetic() {
    let src = |op: &str| {
        format!(
            "func @k(%a: buffer<2xi64>, %o: buffer<1xi64>) {{
  %c0 = loops.index_const() {{value = 0}} : () -> index
  %c1 = loops.index_const() {{value = 1}} : () -> index
  %x = loops.load(%a, %c0) : (buffer<2xi64>, index) -> i64
  %y = loops.load(%a, %c1) : (buffer<2xi64>, index) -> i64
  %i = loops.cast(%x) : (i64) -> index
  %j = loops.cast(%y) : (i64) -> index
  %r = loops.binary(%i, %j) {{op = \"{op}\"}} : (index, index) -> index
  %s = loops.cast(%r) : (index) -> i64
  loops.store(%s, %o, %c0)
  return()
}}
"
        )
    };
    let run = |op: &str, x: i64, y: i64| -> Result<i64, LoopsEvalError> {
        let k = compile(&src(op));
        let a = Buffer::from_tensor(
            &TensorData::from_bytes(
                ElemType::I64,
                vec![2],
                [x, y].iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>().into(),
            )
            .unwrap(),
        )
        .unwrap();
        let o = Buffer::zeros(ElemType::I64, vec![1]).unwrap();
        k.run(&[a, o.clone()], None, &opts())?;
        Ok(o.to_tensor().unwrap().get_i64(0))
    };
    assert_eq!(run("add", i64::MAX, 1).unwrap(), i64::MIN);
    assert_eq!(run("mul", 1 << 40, 3).unwrap(), 3 << 40);
    assert_eq!(run("div", -9, 4).unwrap(), -2);
    assert_eq!(run("rem", -9, 4).unwrap(), -1);
    assert_eq!(run("div", i64::MIN, -1).unwrap(), i64::MIN);
    assert_eq!(run("max", -9, 4).unwrap(), 4);
    let e = run("div", 1, 0).unwrap_err();
    assert!(e.to_string().contains("division by zero"), "{e}");
}

// ---- comparisons and select --------------------------------------------------------

#[test]
fn comparisons_are_ordered_except_ne() {
    let c = |t: &str, p: &str, x: f64, y: f64| s2(t, "bool", &cmp(p, t, "bool"), &[x, y]).unwrap();
    for p in ["eq", "lt", "le", "gt", "ge"] {
        assert_eq!(c("f32", p, f64::NAN, 1.0), 0.0, "{p} with NaN");
        assert_eq!(c("f32", p, f64::NAN, f64::NAN), 0.0, "{p} with NaN");
    }
    assert_eq!(c("f32", "ne", f64::NAN, 1.0), 1.0);
    assert_eq!(c("f32", "ne", f64::NAN, f64::NAN), 1.0);
    assert_eq!(c("f32", "eq", -0.0, 0.0), 1.0);
    assert_eq!(c("f32", "lt", 1.0, 2.0), 1.0);
    assert_eq!(c("f32", "ge", 1.0, 2.0), 0.0);
    assert_eq!(c("u8", "gt", 200.0, 100.0), 1.0, "unsigned");
    assert_eq!(c("i8", "lt", -1.0, 1.0), 1.0, "signed");
    assert_eq!(c("i32", "le", 3.0, 3.0), 1.0);
    assert_eq!(c("f16", "lt", 1.0, 1.0009765625), 1.0);
}

#[test]
fn vector_comparisons_give_masks_and_select_picks_lanes() {
    let xs = [1.0, f64::NAN, 3.0, -0.0, 1.0, 1.0, 2.0, 0.0];
    let eq = run_op("f32", "vec<4xf32>", 4, "i32", "vec<4xi32>", 4, &cmp("eq", "vec<4xf32>", "vec<4xi32>"), &xs);
    assert_eq!(eq.unwrap(), vec![-1.0, 0.0, 0.0, -1.0]);
    let ne = run_op("f32", "vec<4xf32>", 4, "i32", "vec<4xi32>", 4, &cmp("ne", "vec<4xf32>", "vec<4xi32>"), &xs);
    assert_eq!(ne.unwrap(), vec![0.0, -1.0, -1.0, 0.0]);
    let mut bytes = vec![200.0, 1.0];
    bytes.resize(16, 5.0);
    bytes.extend(vec![100.0; 16]);
    let gt =
        run_op("u8", "vec<16xu8>", 16, "i8", "vec<16xi8>", 16, &cmp("gt", "vec<16xu8>", "vec<16xi8>"), &bytes).unwrap();
    assert_eq!(&gt[..3], &[-1.0, 0.0, 0.0]);
    // max via cmp + select.
    let k = compile(
        "func @k(%a: buffer<2x4xf32>, %o: buffer<4xf32>) {
  %c0 = loops.index_const() {value = 0} : () -> index
  %c1 = loops.index_const() {value = 1} : () -> index
  %x = loops.load(%a, %c0, %c0) : (buffer<2x4xf32>, index, index) -> vec<4xf32>
  %y = loops.load(%a, %c1, %c0) : (buffer<2x4xf32>, index, index) -> vec<4xf32>
  %m = loops.cmp(%x, %y) {pred = \"gt\"} : (vec<4xf32>, vec<4xf32>) -> vec<4xi32>
  %r = loops.select(%m, %x, %y) : (vec<4xi32>, vec<4xf32>, vec<4xf32>) -> vec<4xf32>
  loops.store(%r, %o, %c0)
  return()
}
",
    );
    let a = buf(ElemType::F32, &[2, 4], &[1.0, 5.0, -2.0, 7.0, 3.0, 4.0, -1.0, 7.5]);
    let o = Buffer::zeros(ElemType::F32, vec![4]).unwrap();
    k.run(&[a, o.clone()], None, &opts()).unwrap();
    assert_eq!(vals(&o), vec![3.0, 5.0, -1.0, 7.5]);
}

#[test]
fn scalar_select_and_bools() {
    let k = compile(
        "func @k(%a: buffer<3xf32>, %f: buffer<2xbool>, %o: buffer<3xf32>) {
  %c0 = loops.index_const() {value = 0} : () -> index
  %c1 = loops.index_const() {value = 1} : () -> index
  %c2 = loops.index_const() {value = 2} : () -> index
  %x = loops.load(%a, %c0) : (buffer<3xf32>, index) -> f32
  %y = loops.load(%a, %c1) : (buffer<3xf32>, index) -> f32
  %b = loops.load(%f, %c0) : (buffer<2xbool>, index) -> bool
  %r = loops.select(%b, %x, %y) : (bool, f32, f32) -> f32
  loops.store(%r, %o, %c0)
  %n = loops.unary(%b) {op = \"not\"} : (bool) -> bool
  %r2 = loops.select(%n, %x, %y) : (bool, f32, f32) -> f32
  loops.store(%r2, %o, %c1)
  %bf = loops.cast(%b) : (bool) -> f32
  loops.store(%bf, %o, %c2)
  %t = loops.binary(%b, %b) {op = \"add\"} : (bool, bool) -> bool
  loops.store(%t, %f, %c1)
  return()
}
",
    );
    let a = buf(ElemType::F32, &[3], &[10.0, 20.0, 0.0]);
    // A bool byte of 7 reads as true.
    let f =
        Buffer::from_tensor(&TensorData::from_bytes(ElemType::Bool, vec![2], vec![7u8, 9].into()).unwrap()).unwrap();
    let o = Buffer::zeros(ElemType::F32, vec![3]).unwrap();
    k.run(&[a, f.clone(), o.clone()], None, &opts()).unwrap();
    assert_eq!(vals(&o), vec![10.0, 20.0, 1.0]);
    // true + true = false (modulo 2), stored as 0; the untouched byte stays.
    assert_eq!(f.to_tensor().unwrap().bytes(), &[7, 0]);
}

// ---- casts -------------------------------------------------------------------------

#[test]
fn casts_truncate_saturate_and_round() {
    let c = |from: &str, to: &str, x: f64| s2(from, to, &cast(from, to), &[x]).unwrap();
    let (imin, imax) = (f64::from(i32::MIN), f64::from(i32::MAX));
    assert_eq!(c("f32", "i32", 1e10), imax);
    assert_eq!(c("f32", "i32", -1e10), imin);
    assert_eq!(c("f32", "i32", f64::NAN), 0.0);
    assert_eq!(c("f32", "i32", -3.7), -3.0);
    assert_eq!(c("f32", "i32", 3.7), 3.0);
    assert_eq!(c("f32", "u8", -5.0), 0.0);
    assert_eq!(c("f32", "u8", 300.0), 255.0);
    assert_eq!(c("f32", "u8", 255.9), 255.0);
    assert_eq!(c("f32", "i8", 200.0), 127.0);
    assert_eq!(c("f32", "i64", f64::INFINITY), i64::MAX as f64);
    assert_eq!(c("i32", "i8", 300.0), 127.0);
    assert_eq!(c("i32", "i8", -300.0), -128.0);
    assert_eq!(c("i32", "u8", -1.0), 0.0);
    assert_eq!(c("i32", "u8", 256.0), 255.0);
    assert_eq!(c("u8", "i8", 200.0), 127.0);
    assert_eq!(c("i8", "u8", -1.0), 0.0);
    assert_eq!(c("i8", "i32", -5.0), -5.0);
    assert_eq!(c("u8", "i32", 200.0), 200.0);
    assert_eq!(c("i64", "i32", 1e12), imax);
    assert_eq!(c("i32", "f32", 16777217.0), 16777216.0);
    assert_eq!(c("i32", "bool", -3.0), 1.0);
    assert_eq!(c("i32", "bool", 0.0), 0.0);
    assert_eq!(c("bool", "f32", 1.0), 1.0);
    assert_eq!(c("bool", "i32", 1.0), 1.0);
    assert_eq!(c("f32", "bool", 0.0), 0.0);
    assert_eq!(c("f32", "bool", -0.0), 0.0);
    assert_eq!(c("f32", "bool", 0.5), 1.0);
    assert_eq!(c("f32", "bool", f64::NAN), 1.0);
    // f32 <-> f16.
    assert_eq!(c("f32", "f16", 65520.0), f64::INFINITY);
    assert_eq!(c("f32", "f16", 1.0 / 3.0), f64::from(f16::from_f32(1.0 / 3.0).to_f32()));
    assert_eq!(c("f32", "f16", 1e-8), 0.0);
    assert!(c("f32", "f16", f64::NAN).is_nan());
    assert_eq!(c("f16", "f32", 0.333251953125), 0.333251953125);
    assert_eq!(c("f32", "bf16", 1.0 + 1.0 / 256.0), 1.0);
    assert_eq!(c("f16", "i32", -2.75), -2.0);
    assert_eq!(c("i32", "f16", 70000.0), f64::INFINITY);
}

#[test]
fn casts_with_index_and_vectors() {
    let k = compile(
        "func @k(%a: buffer<1xi64>, %o: buffer<2xi32>) {
  %c0 = loops.index_const() {value = 0} : () -> index
  %c1 = loops.index_const() {value = 1} : () -> index
  %x = loops.load(%a, %c0) : (buffer<1xi64>, index) -> i64
  %i = loops.cast(%x) : (i64) -> index
  %n = loops.cast(%i) : (index) -> i32
  loops.store(%n, %o, %c0)
  %m = loops.cast(%n) : (i32) -> index
  %j = loops.binary(%m, %c1) {op = \"add\"} : (index, index) -> index
  %k2 = loops.cast(%j) : (index) -> i32
  loops.store(%k2, %o, %c1)
  return()
}
",
    );
    let a = buf(ElemType::I64, &[1], &[2f64.powi(40)]);
    let o = Buffer::zeros(ElemType::I32, vec![2]).unwrap();
    k.run(&[a, o.clone()], None, &opts()).unwrap();
    assert_eq!(vals(&o), vec![f64::from(i32::MAX), f64::from(i32::MAX)], "saturates, then wraps in i32");
    let r = run_op(
        "f32",
        "vec<4xf32>",
        4,
        "i32",
        "vec<4xi32>",
        4,
        &cast("vec<4xf32>", "vec<4xi32>"),
        &[1.5, -1.5, f64::NAN, 3e9],
    )
    .unwrap();
    assert_eq!(r, vec![1.0, -1.0, 0.0, f64::from(i32::MAX)]);
    let r = run_op(
        "i32",
        "vec<4xi32>",
        4,
        "i16",
        "vec<4xi16>",
        4,
        &cast("vec<4xi32>", "vec<4xi16>"),
        &[1.0, -70000.0, 70000.0, -3.0],
    )
    .unwrap();
    assert_eq!(r, vec![1.0, -32768.0, 32767.0, -3.0]);
}

#[test]
fn cast_lane_matrix_never_panics() {
    let lanes =
        [Lane::F32, Lane::F16, Lane::BF16, Lane::I8, Lane::U8, Lane::I16, Lane::U16, Lane::I32, Lane::I64, Lane::Bool];
    for from in lanes {
        for to in lanes {
            for bits in
                [0u128, 1, 0x7f, 0x80, 0xff, 0x7fff, 0x8000, 0xffff, 0x7fc0_0000, 0xffff_ffff, u128::from(u64::MAX)]
            {
                let r = cast_lane(bits & from.mask(), from, to);
                assert_eq!(r & !to.mask(), 0, "{from:?} -> {to:?} of {bits:#x} leaks above the lane");
            }
        }
    }
}

// ---- lanes -------------------------------------------------------------------------

#[test]
fn splat_extract_insert() {
    let r = run_op("f32", "f32", 1, "f32", "vec<4xf32>", 4, "loops.splat(%x) : (f32) -> vec<4xf32>", &[2.5]);
    assert_eq!(r.unwrap(), vec![2.5; 4]);
    let r = run_op(
        "f32",
        "vec<4xf32>",
        4,
        "f32",
        "f32",
        1,
        "loops.extract(%x) {lane = 2} : (vec<4xf32>) -> f32",
        &[1.0, 2.0, 3.0, 4.0],
    );
    assert_eq!(r.unwrap(), vec![3.0]);
    let r = run_op(
        "u8",
        "vec<16xu8>",
        16,
        "u8",
        "u8",
        1,
        "loops.extract(%x) {lane = 15} : (vec<16xu8>) -> u8",
        &(0..16).map(|i| f64::from(i * 10)).collect::<Vec<_>>(),
    );
    assert_eq!(r.unwrap(), vec![150.0]);
    let k = compile(
        "func @k(%a: buffer<4xf32>, %o: buffer<4xf32>) {
  %c0 = loops.index_const() {value = 0} : () -> index
  %v = loops.load(%a, %c0) : (buffer<4xf32>, index) -> vec<4xf32>
  %s = loops.const() {value = 9.0} : () -> f32
  %w = loops.insert(%v, %s) {lane = 1} : (vec<4xf32>, f32) -> vec<4xf32>
  loops.store(%w, %o, %c0)
  return()
}
",
    );
    let o = Buffer::zeros(ElemType::F32, vec![4]).unwrap();
    k.run(&[buf(ElemType::F32, &[4], &[1.0, 2.0, 3.0, 4.0]), o.clone()], None, &opts()).unwrap();
    assert_eq!(vals(&o), vec![1.0, 9.0, 3.0, 4.0]);
}

#[test]
fn reduce_lanes_in_lane_order() {
    let red = |op: &str, t: &str, e: &str, lanes: usize, xs: &[f64]| {
        let text = format!("loops.reduce_lanes(%x) {{op = \"{op}\"}} : ({t}) -> {e}");
        run_op(e, t, lanes, e, e, 1, &text, xs).unwrap()[0]
    };
    // ((1e8 + 1) - 1e8) + 1 = 1 in f32; any other order gives 0.
    assert_eq!(red("add", "vec<4xf32>", "f32", 4, &[1e8, 1.0, -1e8, 1.0]), 1.0);
    assert!(red("max", "vec<4xf32>", "f32", 4, &[1.0, f64::NAN, 3.0, 2.0]).is_nan());
    assert_eq!(red("max", "vec<4xf32>", "f32", 4, &[1.0, 4.0, 3.0, 2.0]), 4.0);
    assert_eq!(red("min", "vec<4xf32>", "f32", 4, &[4.0, -1.0, 3.0, 2.0]), -1.0);
    assert_eq!(red("add", "vec<4xi32>", "i32", 4, &[f64::from(i32::MAX), 1.0, 0.0, 0.0]), f64::from(i32::MIN));
    let mut xs = vec![3.0; 16];
    xs[7] = 200.0;
    assert_eq!(red("max", "vec<16xu8>", "u8", 16, &xs), 200.0);
    assert_eq!(red("min", "vec<16xi8>", "i8", 16, &[-100.0, 5.0]), -100.0);
    // f16: every partial sum rounds to f16: 2048 + 1 + 1 + 1 stays 2048.
    let mut h = vec![2048.0, 1.0, 1.0, 1.0];
    h.resize(8, 0.0);
    assert_eq!(red("add", "vec<8xf16>", "f16", 8, &h), 2048.0);
}

#[test]
fn constants() {
    let c = |t: &str, v: &str| s(t, &format!("loops.const() {{value = {v}}} : () -> {t}"), &[]).unwrap();
    assert_eq!(c("f32", "0.1"), f64::from(0.1f64 as f32));
    assert_eq!(c("f16", "0.1"), f64::from(f16::from_f64(0.1).to_f32()));
    assert_eq!(c("i32", "2.0"), 2.0);
    assert_eq!(c("i8", "-1.0"), -1.0);
    assert_eq!(c("u8", "300.0"), 255.0);
    assert_eq!(c("i32", "7"), 7.0);
    assert_eq!(c("bool", "1.0"), 1.0);
    let r = run_op("i32", "i32", 1, "i32", "vec<4xi32>", 4, "loops.const() {value = 7.0} : () -> vec<4xi32>", &[]);
    assert_eq!(r.unwrap(), vec![7.0; 4]);
}

// ---- loops -------------------------------------------------------------------------

fn scalar_out(src: &str) -> f64 {
    let k = compile(src);
    let o = Buffer::poison(ElemType::F32, vec![1]).unwrap();
    k.run(std::slice::from_ref(&o), None, &opts()).unwrap_or_else(|e| panic!("{e}"));
    vals(&o)[0]
}

#[test]
fn for_loop_with_carried_values() {
    let sum = scalar_out(
        "func @k(%o: buffer<1xf32>) {
  %c0 = loops.index_const() {value = 0} : () -> index
  %c1 = loops.index_const() {value = 1} : () -> index
  %c101 = loops.index_const() {value = 101} : () -> index
  %z = loops.const() {value = 0.0} : () -> f32
  %s = loops.for(%c1, %c101, %c1, %z) ({
  ^bb0(%i: index, %acc: f32):
    %x = loops.cast(%i) : (index) -> f32
    %n = loops.binary(%acc, %x) {op = \"add\"} : (f32, f32) -> f32
    loops.yield(%n)
  }) : (index, index, index, f32) -> f32
  loops.store(%s, %o, %c0)
  return()
}
",
    );
    assert_eq!(sum, 5050.0);
    // Zero iterations give the initial value.
    let init = scalar_out(
        "func @k(%o: buffer<1xf32>) {
  %c0 = loops.index_const() {value = 0} : () -> index
  %c1 = loops.index_const() {value = 1} : () -> index
  %c5 = loops.index_const() {value = 5} : () -> index
  %z = loops.const() {value = 42.0} : () -> f32
  %s = loops.for(%c5, %c5, %c1, %z) ({
  ^bb0(%i: index, %acc: f32):
    %n = loops.binary(%acc, %acc) {op = \"add\"} : (f32, f32) -> f32
    loops.yield(%n)
  }) : (index, index, index, f32) -> f32
  loops.store(%s, %o, %c0)
  return()
}
",
    );
    assert_eq!(init, 42.0);
    // Two carried values swapped every iteration (a parallel copy): Fibonacci.
    let fib = scalar_out(
        "func @k(%o: buffer<1xf32>) {
  %c0 = loops.index_const() {value = 0} : () -> index
  %c1 = loops.index_const() {value = 1} : () -> index
  %c10 = loops.index_const() {value = 10} : () -> index
  %a0 = loops.const() {value = 0.0} : () -> f32
  %b0 = loops.const() {value = 1.0} : () -> f32
  %ra, %rb = loops.for(%c0, %c10, %c1, %a0, %b0) ({
  ^bb0(%i: index, %a: f32, %b: f32):
    %n = loops.binary(%a, %b) {op = \"add\"} : (f32, f32) -> f32
    loops.yield(%b, %n)
  }) : (index, index, index, f32, f32) -> (f32, f32)
  loops.store(%ra, %o, %c0)
  return()
}
",
    );
    assert_eq!(fib, 55.0);
}

#[test]
fn for_loop_steps_and_overflow() {
    let count = |lb: i64, ub: i64, step: i64| {
        scalar_out(&format!(
            "func @k(%o: buffer<1xf32>) {{
  %c0 = loops.index_const() {{value = 0}} : () -> index
  %lb = loops.index_const() {{value = {lb}}} : () -> index
  %ub = loops.index_const() {{value = {ub}}} : () -> index
  %st = loops.index_const() {{value = {step}}} : () -> index
  %z = loops.const() {{value = 0.0}} : () -> f32
  %one = loops.const() {{value = 1.0}} : () -> f32
  %s = loops.for(%lb, %ub, %st, %z) ({{
  ^bb0(%i: index, %acc: f32):
    %n = loops.binary(%acc, %one) {{op = \"add\"}} : (f32, f32) -> f32
    loops.yield(%n)
  }}) : (index, index, index, f32) -> f32
  loops.store(%s, %o, %c0)
  return()
}}
"
        ))
    };
    assert_eq!(count(0, 10, 3), 4.0);
    assert_eq!(count(-5, 5, 5), 2.0);
    assert_eq!(count(7, 3, 1), 0.0);
    assert_eq!(count(i64::MAX - 2, i64::MAX, 5), 1.0, "stops when the index would overflow");
}

const PARALLEL_SRC: &str = "func @k(%a: buffer<4x8xf32>, %o: buffer<4x8xf32>) {
  %c0 = loops.index_const() {value = 0} : () -> index
  %c4 = loops.index_const() {value = 4} : () -> index
  %c8 = loops.index_const() {value = 8} : () -> index
  %two = loops.const() {value = 2.0} : () -> vec<4xf32>
  %one = loops.const() {value = 1.0} : () -> vec<4xf32>
  loops.parallel(%c0, %c4) ({
  ^bb0(%i: index):
    loops.for(%c0, %c8, %c4) ({
    ^bb0(%j: index):
      %x = loops.load(%a, %i, %j) : (buffer<4x8xf32>, index, index) -> vec<4xf32>
      %y = loops.fma(%x, %two, %one) : (vec<4xf32>, vec<4xf32>, vec<4xf32>) -> vec<4xf32>
      loops.store(%y, %o, %i, %j)
      loops.yield()
    }) : (index, index, index) -> ()
    loops.yield()
  })
  return()
}
";

#[test]
fn parallel_ranges_compose_to_the_full_run() {
    let k = compile(PARALLEL_SRC);
    assert!(k.has_parallel());
    assert_eq!(k.parallel_bounds(), Some((0, 4)));
    assert_eq!(k.name(), "k");
    assert_eq!(k.num_args(), 2);
    let input: Vec<f64> = (0..32).map(|i| f64::from(i) * 0.5 - 3.0).collect();
    let a = buf(ElemType::F32, &[4, 8], &input);
    let full = Buffer::zeros(ElemType::F32, vec![4, 8]).unwrap();
    k.run(&[a.clone(), full.clone()], None, &opts()).unwrap();
    let want: Vec<f64> = input.iter().map(|&x| f64::from((x as f32).mul_add(2.0, 1.0))).collect();
    assert_eq!(vals(&full), want);
    let split = Buffer::zeros(ElemType::F32, vec![4, 8]).unwrap();
    k.run(&[a.clone(), split.clone()], Some((0, 2)), &opts()).unwrap();
    k.run(&[a.clone(), split.clone()], Some((2, 4)), &opts()).unwrap();
    assert_eq!(vals(&split), want);
    // A middle range leaves the other rows alone; ranges are clipped to [lb, ub).
    let mid = Buffer::zeros(ElemType::F32, vec![4, 8]).unwrap();
    k.run(&[a.clone(), mid.clone()], Some((1, 3)), &opts()).unwrap();
    let got = vals(&mid);
    assert!(got[..8].iter().chain(&got[24..]).all(|&v| v == 0.0));
    assert_eq!(&got[8..24], &want[8..24]);
    let wide = Buffer::zeros(ElemType::F32, vec![4, 8]).unwrap();
    k.run(&[a.clone(), wide.clone()], Some((-100, 100)), &opts()).unwrap();
    assert_eq!(vals(&wide), want);
    let empty = Buffer::zeros(ElemType::F32, vec![4, 8]).unwrap();
    k.run(&[a, empty.clone()], Some((3, 1)), &opts()).unwrap();
    assert!(vals(&empty).iter().all(|&v| v == 0.0));
}

#[test]
fn a_range_needs_a_parallel_loop() {
    let k = compile(
        "func @k(%o: buffer<1xf32>) {
  return()
}
",
    );
    let o = Buffer::zeros(ElemType::F32, vec![1]).unwrap();
    let e = k.run(&[o], Some((0, 1)), &opts()).unwrap_err();
    assert!(matches!(e, LoopsEvalError::Arguments { .. }) && e.to_string().contains("loops.parallel"), "{e}");
}

// ---- memory ------------------------------------------------------------------------

#[test]
fn views_alias_their_source() {
    let b = buf(ElemType::F32, &[8], &[0.0; 8]);
    let v = b.view(vec![2, 4]).unwrap();
    assert!(v.aliases(&b));
    let k = compile(
        "func @k(%v: buffer<2x4xf32>) {
  %c1 = loops.index_const() {value = 1} : () -> index
  %c3 = loops.index_const() {value = 3} : () -> index
  %x = loops.const() {value = 5.0} : () -> f32
  loops.store(%x, %v, %c1, %c3)
  return()
}
",
    );
    k.run(&[v], None, &opts()).unwrap();
    assert_eq!(vals(&b)[7], 5.0);
    assert!(b.view(vec![3, 3]).is_err());
    let copy = b.deep_copy().unwrap();
    assert!(!copy.aliases(&b));
    // The same buffer as input and output of one launch (in place).
    let k = compile(
        "func @k(%a: buffer<8xf32>, %b: buffer<8xf32>) {
  %c0 = loops.index_const() {value = 0} : () -> index
  %c4 = loops.index_const() {value = 4} : () -> index
  %c8 = loops.index_const() {value = 8} : () -> index
  %one = loops.const() {value = 1.0} : () -> vec<4xf32>
  loops.for(%c0, %c8, %c4) ({
  ^bb0(%i: index):
    %x = loops.load(%a, %i) : (buffer<8xf32>, index) -> vec<4xf32>
    %y = loops.binary(%x, %one) {op = \"add\"} : (vec<4xf32>, vec<4xf32>) -> vec<4xf32>
    loops.store(%y, %b, %i)
    loops.yield()
  }) : (index, index, index) -> ()
  return()
}
",
    );
    k.run(&[b.clone(), b.clone()], None, &opts()).unwrap();
    assert_eq!(vals(&b), vec![1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 6.0]);
    assert_eq!(vals(&copy)[0], 0.0);
}

#[test]
fn program_views_alias_and_allocs_are_poisoned() {
    let (ctx, m) = parse(
        "func @fill(%b: buffer<2x4xf32>) {
  %c0 = loops.index_const() {value = 0} : () -> index
  %c1 = loops.index_const() {value = 1} : () -> index
  %c2 = loops.index_const() {value = 2} : () -> index
  %c4 = loops.index_const() {value = 4} : () -> index
  loops.parallel(%c0, %c2) ({
  ^bb0(%i: index):
    loops.for(%c0, %c4, %c1) ({
    ^bb0(%j: index):
      %r = loops.binary(%i, %c4) {op = \"mul\"} : (index, index) -> index
      %n = loops.binary(%r, %j) {op = \"add\"} : (index, index) -> index
      %x = loops.cast(%n) : (index) -> f32
      loops.store(%x, %b, %i, %j)
      loops.yield()
    }) : (index, index, index) -> ()
    loops.yield()
  })
  return()
}

func @main() -> (buffer<8xf32>, buffer<2xf32>, buffer<3xi32>) {
  %a = loops.alloc() : () -> buffer<8xf32>
  %v = loops.view(%a) : (buffer<8xf32>) -> buffer<2x4xf32>
  loops.launch(%v) {kernel = @fill}
  %p = loops.alloc() : () -> buffer<2xf32>
  %q = loops.alloc() : () -> buffer<3xi32>
  return(%a, %p, %q)
}
",
    );
    let outs = run_program(&ctx, m, "main", &[]).unwrap();
    assert_eq!(outs.len(), 3);
    assert_eq!(outs[0].shape(), &[8]);
    assert_eq!(outs[0].to_f64_vec(), (0..8).map(f64::from).collect::<Vec<_>>());
    assert!(outs[1].to_f64_vec().iter().all(|v| v.is_nan()), "never-written f32 memory is NaN");
    assert_eq!(outs[2].to_f64_vec(), vec![-1.0; 3]);
}

#[test]
fn strided_buffers() {
    // A transposed view of a 2x3 row-major buffer.
    let b = buf(ElemType::F32, &[2, 3], &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
    let t = b.strided(vec![3, 2], vec![1, 3]).unwrap();
    assert!(!t.is_contiguous());
    assert_eq!(vals(&t), vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
    assert!(b.strided(vec![3, 2], vec![1, 4]).is_err(), "reaches outside the storage");
    assert!(b.strided(vec![2], vec![-1]).is_err());
    let k = compile(
        "func @k(%a: buffer<3x2xf32, strides [1, 3]>, %o: buffer<3x2xf32>) {
  %c0 = loops.index_const() {value = 0} : () -> index
  %c1 = loops.index_const() {value = 1} : () -> index
  %c2 = loops.index_const() {value = 2} : () -> index
  %c3 = loops.index_const() {value = 3} : () -> index
  loops.for(%c0, %c3, %c1) ({
  ^bb0(%i: index):
    loops.for(%c0, %c2, %c1) ({
    ^bb0(%j: index):
      %x = loops.load(%a, %i, %j) : (buffer<3x2xf32, strides [1, 3]>, index, index) -> f32
      loops.store(%x, %o, %i, %j)
      loops.yield()
    }) : (index, index, index) -> ()
    loops.yield()
  }) : (index, index, index) -> ()
  return()
}
",
    );
    let o = Buffer::zeros(ElemType::F32, vec![3, 2]).unwrap();
    k.run(&[t.clone(), o.clone()], None, &opts()).unwrap();
    assert_eq!(vals(&o), vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
    // A contiguous buffer does not fit the strided argument.
    let e = k.run(&[o.clone(), o], None, &opts()).unwrap_err();
    assert!(e.to_string().contains("strides"), "{e}");
}

#[test]
fn out_of_bounds_accesses_are_errors() {
    let load_at = |shape: &str, subs: &[i64], ty: &str| {
        let consts: String = subs
            .iter()
            .enumerate()
            .map(|(n, v)| format!("  %s{n} = loops.index_const() {{value = {v}}} : () -> index\n"))
            .collect();
        let names: Vec<String> = (0..subs.len()).map(|n| format!("%s{n}")).collect();
        let idx_tys = vec!["index"; subs.len()].join(", ");
        let src = format!(
            "func @k(%a: buffer<{shape}xf32>) {{
{consts}  %x = loops.load(%a, {}) : (buffer<{shape}xf32>, {idx_tys}) -> {ty}
  return()
}}
",
            names.join(", ")
        );
        let k = compile(&src);
        let dims: Vec<usize> = shape.split('x').map(|d| d.parse().unwrap()).collect();
        let n = dims.iter().product();
        k.run(&[buf(ElemType::F32, &dims, &vec![0.0; n])], None, &opts())
    };
    assert!(load_at("4", &[3], "f32").is_ok());
    let e = load_at("4", &[4], "f32").unwrap_err();
    match &e {
        LoopsEvalError::OutOfBounds(o) => {
            assert_eq!((o.kernel.as_str(), o.op.as_str()), ("k", "loops.load"));
            assert_eq!((o.subscripts.as_slice(), o.shape.as_slice(), o.lanes), (&[4i64][..], &[4usize][..], 1));
        }
        other => panic!("{other:?}"),
    }
    let msg = e.to_string();
    assert!(msg.contains("@k") && msg.contains("loops.load") && msg.contains("[4]"), "{msg}");
    assert!(load_at("4", &[-1], "f32").is_err());
    assert!(load_at("8", &[4], "vec<4xf32>").is_ok());
    let e = load_at("6", &[4], "vec<4xf32>").unwrap_err();
    assert!(e.to_string().contains("4-lane"), "{e}");
    // Each subscript is checked against its dimension, even when the offset
    // would land inside the buffer.
    let e = load_at("2x4", &[0, 4], "f32").unwrap_err();
    assert!(matches!(e, LoopsEvalError::OutOfBounds(_)), "{e}");
    assert!(load_at("2x4", &[1, 3], "f32").is_ok());
    assert!(load_at("2x4", &[2, 0], "f32").is_err());
    // Stores too.
    let k = compile(
        "func @k(%a: buffer<2x4xf32>) {
  %c0 = loops.index_const() {value = 0} : () -> index
  %c1 = loops.index_const() {value = 1} : () -> index
  %x = loops.const() {value = 1.0} : () -> vec<4xf32>
  loops.store(%x, %a, %c0, %c1)
  return()
}
",
    );
    let a = Buffer::zeros(ElemType::F32, vec![2, 4]).unwrap();
    let e = k.run(std::slice::from_ref(&a), None, &opts()).unwrap_err();
    assert!(matches!(&e, LoopsEvalError::OutOfBounds(o) if o.op == "loops.store"), "{e}");
    assert!(vals(&a).iter().all(|&v| v == 0.0), "nothing written");
}

#[test]
fn buffers_must_fit_the_kernel_arguments() {
    let k = compile(PARALLEL_SRC);
    let good = Buffer::zeros(ElemType::F32, vec![4, 8]).unwrap();
    let cases = [
        (vec![good.clone()], "takes 2 buffers"),
        (vec![good.clone(), Buffer::zeros(ElemType::F32, vec![4, 7]).unwrap()], "dimension 1 must be 8"),
        (vec![good.clone(), Buffer::zeros(ElemType::F16, vec![4, 8]).unwrap()], "is f16"),
        (vec![good.clone(), Buffer::zeros(ElemType::F32, vec![32]).unwrap()], "rank"),
    ];
    for (bufs, want) in cases {
        let e = k.run(&bufs, None, &opts()).unwrap_err();
        assert!(matches!(e, LoopsEvalError::Arguments { .. }) && e.to_string().contains(want), "{e}");
    }
    // Symbolic dimensions bind consistently.
    let k = compile(
        "func @k(%a: buffer<?Nxf32>, %b: buffer<?Nxf32>) {
  return()
}
",
    );
    let three = Buffer::zeros(ElemType::F32, vec![3]).unwrap();
    let four = Buffer::zeros(ElemType::F32, vec![4]).unwrap();
    assert!(k.run(&[three.clone(), three.clone()], None, &opts()).is_ok());
    let e = k.run(&[three, four], None, &opts()).unwrap_err();
    assert!(e.to_string().contains("?N"), "{e}");
}

// ---- limits and ill-formed IR ------------------------------------------------------

#[test]
fn non_positive_steps_are_errors() {
    for step in [0, -1] {
        let k = compile(&format!(
            "func @k(%o: buffer<1xf32>) {{
  %c0 = loops.index_const() {{value = 0}} : () -> index
  %c9 = loops.index_const() {{value = 9}} : () -> index
  %st = loops.index_const() {{value = {step}}} : () -> index
  loops.for(%c0, %c9, %st) ({{
  ^bb0(%i: index):
    loops.yield()
  }}) : (index, index, index) -> ()
  return()
}}
"
        ));
        let e = k.run(&[Buffer::zeros(ElemType::F32, vec![1]).unwrap()], None, &opts()).unwrap_err();
        assert!(
            matches!(&e, LoopsEvalError::Op { op, index: 3, .. } if op == "loops.for")
                && e.to_string().contains("step must be positive"),
            "{e}"
        );
    }
}

const COUNT_SRC: &str = "func @k(%o: buffer<1xf32>) {
  %c0 = loops.index_const() {value = 0} : () -> index
  %c1 = loops.index_const() {value = 1} : () -> index
  %n = loops.index_const() {value = 10} : () -> index
  %z = loops.const() {value = 0.0} : () -> f32
  %one = loops.const() {value = 1.0} : () -> f32
  %s = loops.for(%c0, %n, %c1, %z) ({
  ^bb0(%i: index, %acc: f32):
    %a = loops.binary(%acc, %one) {op = \"add\"} : (f32, f32) -> f32
    loops.yield(%a)
  }) : (index, index, index, f32) -> f32
  loops.store(%s, %o, %c0)
  return()
}
";

#[test]
fn ops_are_counted_and_the_budget_is_enforced() {
    let k = compile(COUNT_SRC);
    let o = Buffer::zeros(ElemType::F32, vec![1]).unwrap();
    // Entry: for + store + return = 3; body: add + yield = 2, ten times.
    assert_eq!(k.run(std::slice::from_ref(&o), None, &opts()).unwrap(), 23);
    let tight = LoopsEvalOptions { max_ops: 23, ..opts() };
    assert_eq!(k.run(std::slice::from_ref(&o), None, &tight).unwrap(), 23);
    let short = LoopsEvalOptions { max_ops: 22, ..opts() };
    let e = k.run(std::slice::from_ref(&o), None, &short).unwrap_err();
    assert_eq!(e, LoopsEvalError::Budget { kernel: "k".into(), max_ops: 22 });
    assert!(e.to_string().contains("budget"), "{e}");
    // A (practically) endless loop stops at the budget.
    let k = compile(
        "func @k(%o: buffer<1xf32>) {
  %c0 = loops.index_const() {value = 0} : () -> index
  %c1 = loops.index_const() {value = 1} : () -> index
  %big = loops.index_const() {value = 9223372036854775807} : () -> index
  loops.for(%c0, %big, %c1) ({
  ^bb0(%i: index):
    loops.yield()
  }) : (index, index, index) -> ()
  return()
}
",
    );
    let e = k.run(&[o], None, &LoopsEvalOptions { max_ops: 100_000, ..opts() }).unwrap_err();
    assert!(matches!(e, LoopsEvalError::Budget { .. }), "{e}");
}

#[test]
fn the_budget_covers_a_whole_program() {
    let src = format!(
        "{COUNT_SRC}
func @main() -> buffer<1xf32> {{
  %a = loops.alloc() : () -> buffer<1xf32>
  loops.launch(%a) {{kernel = @k}}
  loops.launch(%a) {{kernel = @k}}
  return(%a)
}}
"
    );
    let (ctx, m) = parse(&src);
    let ok = run_program_with(&ctx, m, "main", &[], &LoopsEvalOptions { max_ops: 46, ..opts() }).unwrap();
    assert_eq!(ok[0].to_f64_vec(), vec![10.0]);
    let e = run_program_with(&ctx, m, "main", &[], &LoopsEvalOptions { max_ops: 40, ..opts() }).unwrap_err();
    match &e {
        LoopsEvalError::Launch { index: 2, kernel, error, .. } => {
            assert_eq!(kernel, "k");
            assert!(matches!(**error, LoopsEvalError::Budget { .. }));
        }
        other => panic!("{other:?}"),
    }
    let e = run_program_with(&ctx, m, "main", &[], &LoopsEvalOptions { max_buffer_bytes: 3, ..opts() }).unwrap_err();
    assert!(matches!(e, LoopsEvalError::Program { index: 0, .. }) && e.to_string().contains("limit"), "{e}");
}

#[test]
fn ill_formed_kernels_are_errors_not_panics() {
    let cases: &[(&str, &str)] = &[
        // mismatched binary operands
        (
            "func @k(%b: buffer<4xf32>) {
  %0 = loops.const() {value = 1.0} : () -> f32
  %1 = loops.index_const() {value = 0} : () -> index
  %2 = loops.binary(%0, %1) {op = \"add\"} : (f32, index) -> f32
  return()
}
",
            "operand #1",
        ),
        // wrong subscript count
        (
            "func @k(%b: buffer<4x4xf32>) {
  %0 = loops.index_const() {value = 0} : () -> index
  %1 = loops.load(%b, %0) : (buffer<4x4xf32>, index) -> f32
  return()
}
",
            "1 subscripts",
        ),
        // a 256-bit vector
        (
            "func @k(%b: buffer<8xf32>) {
  %0 = loops.index_const() {value = 0} : () -> index
  %1 = loops.load(%b, %0) : (buffer<8xf32>, index) -> vec<8xf32>
  return()
}
",
            "128 bits",
        ),
        // unknown op name in the attribute
        (
            "func @k() {
  %0 = loops.const() {value = 1.0} : () -> f32
  %1 = loops.unary(%0) {op = \"frobnicate\"} : (f32) -> f32
  return()
}
",
            "frobnicate",
        ),
        // float-only / integer-only ops
        (
            "func @k() {
  %0 = loops.const() {value = 1.0} : () -> f32
  %1 = loops.binary(%0, %0) {op = \"rem\"} : (f32, f32) -> f32
  return()
}
",
            "needs integers",
        ),
        (
            "func @k() {
  %0 = loops.const() {value = 1.0} : () -> i32
  %1 = loops.binary(%0, %0) {op = \"pow\"} : (i32, i32) -> i32
  return()
}
",
            "needs floats",
        ),
        (
            "func @k() {
  %0 = loops.const() {value = 1.0} : () -> i32
  %1 = loops.unary(%0) {op = \"exp\"} : (i32) -> i32
  return()
}
",
            "needs floats",
        ),
        // lane out of range
        (
            "func @k() {
  %0 = loops.const() {value = 1.0} : () -> vec<4xf32>
  %1 = loops.extract(%0) {lane = 4} : (vec<4xf32>) -> f32
  return()
}
",
            "lane 4",
        ),
        // comparison with a wrong result type
        (
            "func @k() {
  %0 = loops.const() {value = 1.0} : () -> vec<4xf32>
  %1 = loops.cmp(%0, %0) {pred = \"lt\"} : (vec<4xf32>, vec<4xf32>) -> vec<4xf32>
  return()
}
",
            "mask",
        ),
        // a non-buffer kernel argument
        (
            "func @k(%x: f32) {
  return()
}
",
            "kernel arguments are buffers",
        ),
        // kernels return nothing
        (
            "func @k(%b: buffer<4xf32>) -> buffer<4xf32> {
  return(%b)
}
",
            "returns nothing",
        ),
        // a program op in a kernel
        (
            "func @k() {
  %0 = loops.alloc() : () -> buffer<4xf32>
  return()
}
",
            "cannot appear in a kernel",
        ),
        // parallel inside a loop
        (
            "func @k() {
  %c0 = loops.index_const() {value = 0} : () -> index
  %c1 = loops.index_const() {value = 1} : () -> index
  loops.for(%c0, %c1, %c1) ({
  ^bb0(%i: index):
    loops.parallel(%c0, %c1) ({
    ^bb0(%j: index):
      loops.yield()
    })
    loops.yield()
  }) : (index, index, index) -> ()
  return()
}
",
            "top level",
        ),
        // two parallel loops
        (
            "func @k() {
  %c0 = loops.index_const() {value = 0} : () -> index
  %c1 = loops.index_const() {value = 1} : () -> index
  loops.parallel(%c0, %c1) ({
  ^bb0(%i: index):
    loops.yield()
  })
  loops.parallel(%c0, %c1) ({
  ^bb0(%j: index):
    loops.yield()
  })
  return()
}
",
            "at most one",
        ),
        // yield of the wrong type
        (
            "func @k() {
  %c0 = loops.index_const() {value = 0} : () -> index
  %c1 = loops.index_const() {value = 1} : () -> index
  %z = loops.const() {value = 0.0} : () -> f32
  %s = loops.for(%c0, %c1, %c1, %z) ({
  ^bb0(%i: index, %acc: f32):
    loops.yield(%i)
  }) : (index, index, index, f32) -> f32
  return()
}
",
            "yielded value #0",
        ),
        // vector store into a buffer whose last dimension is strided
        (
            "func @k(%b: buffer<4x4xf32, strides [1, 4]>) {
  %c0 = loops.index_const() {value = 0} : () -> index
  %v = loops.const() {value = 0.0} : () -> vec<4xf32>
  loops.store(%v, %b, %c0, %c0)
  return()
}
",
            "stride 1",
        ),
    ];
    for (src, want) in cases {
        let e = compile_err(src);
        assert!(e.to_string().contains(want), "expected `{want}` in: {e}\n{src}");
    }
    // An op error names the op and its position.
    let e = compile_err(cases[0].0);
    assert!(
        matches!(&e, LoopsEvalError::Op { op, index: 2, kernel, .. } if op == "loops.binary" && kernel == "k"),
        "{e:?}"
    );
}

#[test]
fn values_do_not_escape_their_loop_body() {
    // Built directly (the parser would refuse the out-of-scope use).
    let mut ctx = crate::context();
    let b = ctx.intern_type(TypeData::Buffer(BufferType {
        shape: vec![Dim::Fixed(4)],
        elem: ElemType::F32,
        layout: Layout::Nchw,
        strides: None,
    }));
    let mut rw = Rewriter::new(&mut ctx);
    let module = new_module(&mut rw);
    let (mut k, args) = KernelBuilder::new(&mut rw, module, "k", &[b]);
    let l = k.index(0);
    let n = k.index(4);
    let one = k.index(1);
    let mut leaked = None;
    k.for_loop(l, n, one, &[], None, |k, i, _| {
        let x = k.load(args[0], &[i]);
        leaked = Some(x);
        Ok::<_, ()>(vec![])
    })
    .unwrap();
    let x = leaked.unwrap();
    k.store(x, args[0], &[l]);
    let f = k.finish();
    let e = Kernel::compile(&ctx, f).unwrap_err();
    assert!(e.to_string().contains("not a register value defined earlier"), "{e}");
}

#[test]
fn deep_loop_nests_are_an_error_not_a_stack_overflow() {
    fn nest(k: &mut KernelBuilder<'_, '_>, depth: usize) -> Result<Vec<ValueId>, ()> {
        if depth == 0 {
            return Ok(Vec::new());
        }
        let (l, u, s) = (k.index(0), k.index(2), k.index(1));
        k.for_loop(l, u, s, &[], None, |k, _, _| nest(k, depth - 1))
    }
    // Built (the parser stops at 128 levels) on a thread with a roomy stack.
    let handle = std::thread::Builder::new()
        .stack_size(256 << 20)
        .spawn(|| {
            let mut ctx = crate::context();
            let mut rw = Rewriter::new(&mut ctx);
            let module = new_module(&mut rw);
            let (mut k, _) = KernelBuilder::new(&mut rw, module, "k", &[]);
            nest(&mut k, 300).unwrap();
            let f = k.finish();
            Kernel::compile(&ctx, f).map(|_| ()).unwrap_err().to_string()
        })
        .unwrap();
    let msg = handle.join().unwrap();
    assert!(msg.contains("nested more than"), "{msg}");
}

#[test]
fn program_errors() {
    let (ctx, m) = parse(
        "func @k(%a: buffer<4xf32>) {
  return()
}

func @main(%x: buffer<4xf32>) -> buffer<4xf32> {
  loops.launch(%x) {kernel = @k}
  return(%x)
}

func @bad() -> buffer<4xf32> {
  %a = loops.alloc() : () -> buffer<4xf32>
  loops.launch(%a) {kernel = @nope}
  return(%a)
}
",
    );
    let x = TensorData::from_f32(vec![4], &[1.0, 2.0, 3.0, 4.0]);
    assert_eq!(run_program(&ctx, m, "main", std::slice::from_ref(&x)).unwrap(), vec![x.clone()]);
    let e = run_program(&ctx, m, "nothere", &[]).unwrap_err();
    assert_eq!(e, LoopsEvalError::NoFunction("nothere".into()));
    let e = run_program(&ctx, m, "main", &[]).unwrap_err();
    assert!(matches!(e, LoopsEvalError::Arguments { .. }) && e.to_string().contains("takes 1 inputs"), "{e}");
    let wrong_shape = TensorData::from_f32(vec![2, 2], &[1.0, 2.0, 3.0, 4.0]);
    let e = run_program(&ctx, m, "main", &[wrong_shape]).unwrap_err();
    assert!(matches!(e, LoopsEvalError::Arguments { .. }) && e.to_string().contains("input #0"), "{e}");
    let wrong_elem = TensorData::zeros(ElemType::I32, vec![4]).unwrap();
    assert!(run_program(&ctx, m, "main", &[wrong_elem]).is_err());
    let e = run_program(&ctx, m, "bad", &[]).unwrap_err();
    assert!(matches!(e, LoopsEvalError::Program { index: 1, .. }) && e.to_string().contains("@nope"), "{e}");
    // Kernel errors surface through the launch.
    let (ctx, m) = parse(
        "func @k(%a: buffer<4xf32>) {
  %c9 = loops.index_const() {value = 9} : () -> index
  %x = loops.load(%a, %c9) : (buffer<4xf32>, index) -> f32
  return()
}

func @main(%x: buffer<4xf32>) {
  loops.launch(%x) {kernel = @k}
  return()
}
",
    );
    let e = run_program(&ctx, m, "main", &[x]).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("program @main") && msg.contains("@k") && msg.contains("[9]"), "{msg}");
}

// ---- whole programs built with the builders ----------------------------------------

fn buffer_ty(ctx: &mut Context, shape: &[u64]) -> Ty {
    ctx.intern_type(TypeData::Buffer(BufferType {
        shape: shape.iter().map(|&d| Dim::Fixed(d)).collect(),
        elem: ElemType::F32,
        layout: Layout::Nchw,
        strides: None,
    }))
}

/// `out[r] = relu(Σ_c in[r, c] + bias[c % 4])` — a vector row sum with a
/// constant bias buffer, a lane reduction and a compare/select relu.
fn row_sum_relu_program(bias: &[f32]) -> (Context, OpId) {
    let mut ctx = crate::context();
    let b_in = buffer_ty(&mut ctx, &[4, 8]);
    let b_out = buffer_ty(&mut ctx, &[4]);
    let b_bias = buffer_ty(&mut ctx, &[4]);
    let t_bias = ctx.intern_type(TypeData::Tensor(TensorType {
        shape: vec![Dim::Fixed(4)],
        elem: ElemType::F32,
        layout: Layout::Nchw,
    }));
    let bias_attr = ctx.intern_attr(AttrData::Dense(DenseAttr {
        ty: t_bias,
        storage: DenseStorage::Data(TensorData::from_f32(vec![4], bias)),
    }));
    let mut rw = Rewriter::new(&mut ctx);
    let module = new_module(&mut rw);
    let (mut k, args) = KernelBuilder::new(&mut rw, module, "row_sum_relu", &[b_in, b_bias, b_out]);
    k.parallel(4, |k, row| {
        let zero = k.f32x4(0.0);
        let c0 = k.index(0);
        let bias = k.load_vec(args[1], &[c0], 4);
        let (l, u, s) = (k.index(0), k.index(8), k.index(4));
        let acc = k.for_loop(l, u, s, &[zero], Some(2), |k, j, acc| {
            let x = k.load_vec(args[0], &[row, j], 4);
            let y = k.add(x, bias);
            Ok::<_, ()>(vec![k.add(acc[0], y)])
        })?;
        let sum = k.reduce_lanes(LaneReduce::Add, acc[0]);
        let z = k.f32(0.0);
        let pos = k.cmp(CmpPred::Gt, sum, z);
        let r = k.select(pos, sum, z);
        k.store(r, args[2], &[row]);
        Ok::<(), ()>(())
    })
    .unwrap();
    k.finish();
    let (mut p, ins) = ProgramBuilder::new(&mut rw, module, "main", &[b_in], &[b_out]);
    let bias = p.constant(b_bias, bias_attr);
    let out = p.alloc(b_out);
    p.launch("row_sum_relu", &[ins[0], bias, out], strata_ir::Loc::default());
    p.finish(&[out]);
    (ctx, module)
}

#[test]
fn a_built_program_matches_a_hand_computation() {
    let bias = [0.25f32, -0.5, 0.125, 0.0];
    let (ctx, module) = row_sum_relu_program(&bias);
    strata_ir::verify(&ctx, module, strata_ir::VerifyOptions::default()).expect("verifies");
    let input = TensorData::random_uniform(ElemType::F32, vec![4, 8], -1.0, 1.0, 11).unwrap();
    let x = input.to_f32_vec();
    let outs = run_program(&ctx, module, "main", std::slice::from_ref(&input)).unwrap();
    assert_eq!(outs.len(), 1);
    assert_eq!(outs[0].shape(), &[4]);
    let got = outs[0].to_f32_vec();
    let mut positives = 0;
    for r in 0..4 {
        // The same order as the kernel: per-lane accumulators, then lanes in order.
        let mut acc = [0f32; 4];
        for j in [0, 4] {
            for l in 0..4 {
                acc[l] += x[r * 8 + j + l] + bias[l];
            }
        }
        let sum = ((acc[0] + acc[1]) + acc[2]) + acc[3];
        let want = if sum > 0.0 { sum } else { 0.0 };
        positives += usize::from(sum > 0.0);
        assert_eq!(got[r].to_bits(), want.to_bits(), "row {r}");
    }
    // The printed module reparses and interprets identically.
    let text = strata_ir::print_module(&ctx, module, &strata_ir::PrintOptions::default());
    let (ctx2, m2) = parse(&text);
    assert_eq!(run_program(&ctx2, m2, "main", &[input]).unwrap(), outs);
    let _ = positives;
}

#[test]
fn a_wrong_input_shape_is_an_error() {
    let (ctx, module) = row_sum_relu_program(&[0.0; 4]);
    let bad = TensorData::zeros(ElemType::F32, vec![4, 7]).unwrap();
    let e = run_program(&ctx, module, "main", &[bad]).unwrap_err();
    assert!(e.to_string().contains("expected buffer<4x8xf32>"), "{e}");
}

/// Throughput of simple ops (run with `--ignored --nocapture`).
#[test]
#[ignore]
fn throughput() {
    let k = compile(
        "func @k(%a: buffer<1024xf32>, %o: buffer<1xf32>) {
  %c0 = loops.index_const() {value = 0} : () -> index
  %c1 = loops.index_const() {value = 1} : () -> index
  %c1023 = loops.index_const() {value = 1023} : () -> index
  %n = loops.index_const() {value = 2000000} : () -> index
  %z = loops.const() {value = 0.0} : () -> f32
  %s = loops.for(%c0, %n, %c1, %z) ({
  ^bb0(%i: index, %acc: f32):
    %j = loops.binary(%i, %c1023) {op = \"and\"} : (index, index) -> index
    %x = loops.load(%a, %j) : (buffer<1024xf32>, index) -> f32
    %y = loops.fma(%x, %x, %acc) : (f32, f32, f32) -> f32
    %w = loops.binary(%y, %x) {op = \"max\"} : (f32, f32) -> f32
    loops.yield(%w)
  }) : (index, index, index, f32) -> f32
  loops.store(%s, %o, %c0)
  return()
}
",
    );
    let a = Buffer::zeros(ElemType::F32, vec![1024]).unwrap();
    let o = Buffer::zeros(ElemType::F32, vec![1]).unwrap();
    let t = std::time::Instant::now();
    let ops = k.run(&[a, o], None, &opts()).unwrap();
    let dt = t.elapsed().as_secs_f64();
    println!("scalar: {ops} ops in {dt:.3}s: {:.1} Mops/s", ops as f64 / dt / 1e6);
    let k = compile(
        "func @k(%a: buffer<1024xf32>, %o: buffer<4xf32>) {
  %c0 = loops.index_const() {value = 0} : () -> index
  %c4 = loops.index_const() {value = 4} : () -> index
  %c1020 = loops.index_const() {value = 1020} : () -> index
  %n = loops.index_const() {value = 4000000} : () -> index
  %z = loops.const() {value = 0.0} : () -> vec<4xf32>
  %s = loops.for(%c0, %n, %c4, %z) ({
  ^bb0(%i: index, %acc: vec<4xf32>):
    %j = loops.binary(%i, %c1020) {op = \"and\"} : (index, index) -> index
    %x = loops.load(%a, %j) : (buffer<1024xf32>, index) -> vec<4xf32>
    %y = loops.fma(%x, %x, %acc) : (vec<4xf32>, vec<4xf32>, vec<4xf32>) -> vec<4xf32>
    %w = loops.binary(%y, %x) {op = \"max\"} : (vec<4xf32>, vec<4xf32>) -> vec<4xf32>
    loops.yield(%w)
  }) : (index, index, index, vec<4xf32>) -> vec<4xf32>
  loops.store(%s, %o, %c0)
  return()
}
",
    );
    let a = Buffer::zeros(ElemType::F32, vec![1024]).unwrap();
    let o = Buffer::zeros(ElemType::F32, vec![4]).unwrap();
    let t = std::time::Instant::now();
    let ops = k.run(&[a, o], None, &opts()).unwrap();
    let dt = t.elapsed().as_secs_f64();
    println!("vec<4xf32>: {ops} ops in {dt:.3}s: {:.1} Mops/s", ops as f64 / dt / 1e6);
}
