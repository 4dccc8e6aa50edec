//! Unit tests of the IR core with a tiny test dialect (no dependency on
//! strata-dialects): rewriter invariants, verifier, parser limits.

use crate::*;
use std::sync::Arc;

define_op! {
    /// The module.
    pub struct TModule = "t.module" {
        summary: "test module",
        operands: [],
        results: [],
        attrs: {},
        optional_attrs: {},
        traits: [ISOLATED_FROM_ABOVE],
        regions: 1,
    }
}

define_op! {
    /// A constant.
    pub struct TConst = "t.const" {
        summary: "test constant",
        operands: [],
        results: [out],
        attrs: { value: Dense },
        optional_attrs: { note: Str },
        traits: [PURE, CONSTANT_LIKE],
    }
}

define_op! {
    /// A binary op.
    pub struct TAdd = "t.add" {
        summary: "test add",
        operands: [lhs, rhs],
        results: [out],
        attrs: {},
        optional_attrs: {},
        traits: [PURE, COMMUTATIVE],
    }
}

define_op! {
    /// Variadic sink with a required int attribute.
    pub struct TSink = "t.sink" {
        summary: "test sink",
        operands: [],
        results: [],
        attrs: { k: Int },
        optional_attrs: {},
        traits: [],
        variadic: items,
    }
}

define_op! {
    /// Function-like container.
    pub struct TFunc = "t.func" {
        summary: "test function",
        operands: [],
        results: [],
        attrs: { sym_name: Str, function_type: Type },
        optional_attrs: {},
        traits: [ISOLATED_FROM_ABOVE],
        regions: 1,
        terminator: "t.ret",
        syntax: crate::syntax::function_syntax("tfunc"),
    }
}

define_op! {
    /// Terminator.
    pub struct TRet = "t.ret" {
        summary: "test return",
        operands: [],
        results: [],
        attrs: {},
        optional_attrs: {},
        traits: [TERMINATOR],
        variadic: values,
    }
}

fn ctx() -> Context {
    let mut r = Registry::new();
    for d in [TModule::DEF, TConst::DEF, TAdd::DEF, TSink::DEF, TFunc::DEF, TRet::DEF] {
        r.register(d).unwrap();
    }
    r.default_dialect = "t";
    r.module_op = "t.module";
    Context::new(Arc::new(r))
}

fn parse(ctx: &mut Context, text: &str) -> Result<OpId, ParseError> {
    parse_module(ctx, &Source::new("t.strata", text), &ParseOptions { allow_unregistered: true })
}

const SRC: &str = "tfunc @f(%a: tensor<2xf32>, %b: tensor<2xf32>) -> tensor<2xf32> {
  %0 = t.add(%a, %b) : (tensor<2xf32>, tensor<2xf32>) -> tensor<2xf32>
  %1 = t.add(%0, %a) : (tensor<2xf32>, tensor<2xf32>) -> tensor<2xf32>
  ret(%1)
}
";

#[test]
fn typed_views_and_accessors() {
    let mut c = ctx();
    let m = parse(&mut c, SRC).unwrap();
    let f = c.body_ops(m)[0];
    let func = TFunc::cast(&c, f).unwrap();
    assert_eq!(func.sym_name(&c), "f");
    let add = TAdd::cast(&c, c.body_ops(f)[1]).unwrap();
    assert_eq!(c.defining_op(add.lhs(&c)), Some(c.body_ops(f)[0]));
    assert!(TConst::cast(&c, add.0).is_none());
    assert_eq!(TSink::DEF.operands, Arity::AtLeast(0));
    assert_eq!(TAdd::DEF.operands, Arity::Exact(2));
}

#[test]
fn rewriter_keeps_use_lists_consistent() {
    let mut c = ctx();
    let m = parse(&mut c, SRC).unwrap();
    let f = c.body_ops(m)[0];
    let (add0, add1) = (c.body_ops(f)[0], c.body_ops(f)[1]);
    let a = c.block(c.body(f, 0).unwrap()).args[0];
    let r0 = c.op(add0).results[0];
    let r1 = c.op(add1).results[0];
    assert_eq!(c.value(a).uses.len(), 2);
    let mut rw = Rewriter::new(&mut c);
    rw.replace_all_uses(r0, a);
    assert!(rw.changed());
    rw.erase_op(add0);
    let c2 = rw.ctx();
    assert_eq!(c2.op(add1).operands, vec![a, a]);
    assert_eq!(c2.value(a).uses.len(), 2);
    assert!(!c2.is_live(add0));
    verify(c2, m, VerifyOptions::default()).unwrap();
    let mut rw = Rewriter::new(&mut c);
    rw.set_operand(add1, 1, r1);
    // A self-use is structurally wrong: the verifier must notice.
    let diags = verify(rw.ctx(), m, VerifyOptions::default()).unwrap_err();
    assert!(diags[0].message.contains("used before it is defined"), "{diags:?}");
}

#[test]
fn rewriter_reports_no_change_for_noops() {
    let mut c = ctx();
    let m = parse(&mut c, SRC).unwrap();
    let f = c.body_ops(m)[0];
    let add = c.body_ops(f)[0];
    let v = c.op(add).operands[0];
    let loc = c.op(add).loc;
    let mut rw = Rewriter::new(&mut c);
    rw.set_operand(add, 0, v);
    rw.set_loc(add, loc);
    rw.replace_all_uses(v, v);
    assert!(!rw.remove_attr(add, "missing"));
    assert!(!rw.changed());
}

#[test]
fn verifier_collects_every_error() {
    let mut c = ctx();
    let m = parse(
        &mut c,
        "tfunc @f(%a: tensor<2xf32>) {
  %0 = t.add(%a) {junk = 1} : (tensor<2xf32>) -> tensor<2xf32>
  t.sink(%0, %a)
  %1 = t.const() : () -> tensor<2xf32>
  ret()
  ret()
}
",
    )
    .unwrap();
    let diags = verify(&c, m, VerifyOptions { allow_unregistered: true }).unwrap_err();
    let text = diag::render_all(&c, &diags, None);
    for needle in [
        "expects 2 operands, has 1",
        "unknown attribute `junk`",
        "requires attribute `k`",
        "requires attribute `value`",
        "is a terminator but is not the last op",
    ] {
        assert!(text.contains(needle), "missing `{needle}` in:\n{text}");
    }
    assert!(text.contains("t.strata:2:3"), "{text}");
}

#[test]
fn unregistered_ops_fail_verification_unless_allowed() {
    let mut c = ctx();
    let m = parse(&mut c, "tfunc @f() {\n  x.y()\n  ret()\n}\n").unwrap();
    assert!(verify(&c, m, VerifyOptions::default()).is_err());
    verify(&c, m, VerifyOptions { allow_unregistered: true }).unwrap();
}

#[test]
fn isolated_regions_hide_outer_values() {
    let mut c = ctx();
    let err = parse(
        &mut c,
        "tfunc @f(%a: tensor<2xf32>) {\n  x.wrap() ({\n    tfunc @g() {\n      t.sink(%a) {k = 1}\n      ret()\n    }\n  })\n  ret()\n}\n",
    )
    .unwrap_err();
    assert!(err.message.contains("undefined value %a"), "{err}");
}

#[test]
fn types_and_attrs_roundtrip_through_text() {
    let mut c = ctx();
    for t in [
        "tensor<1x3x224x224xf32>",
        "tensor<?Nx4x56x56x8xf16, #nchw88>",
        "tensor<bf16>",
        "tensor<2xqu8<0.5, 7>>",
        "buffer<4x8xi8, #nchw44, strides [32, 1]>",
        "(tensor<2xf32>, index) -> (i32, (f32) -> bool)",
        "qs32<0.001>",
    ] {
        let ty = parse_type_str(&mut c, t).unwrap_or_else(|e| panic!("{t}: {e}"));
        assert_eq!(type_to_string(&c, ty), t);
    }
    for a in ["[1, -2, 3.5, inf, nan]", "{a = \"x\", b = #chwn4}", "dense<[1, 2]> : tensor<2xi64>", "@f", "true"] {
        let attr = parse_attr_str(&mut c, a).unwrap_or_else(|e| panic!("{a}: {e}"));
        assert_eq!(attr_to_string(&c, attr), a);
    }
    // Interning: equal text gives equal handles.
    let t1 = parse_type_str(&mut c, "tensor<2xf32>").unwrap();
    let t2 = parse_type_str(&mut c, "tensor< 2xf32 >").unwrap_or(t1);
    assert_eq!(t1, t2);
}

#[test]
fn hostile_input_gets_errors_not_crashes() {
    let mut c = ctx();
    let deep =
        format!("tfunc @f() {{\n  t.sink() {{k = {}1{}}}\n  ret()\n}}\n", "[".repeat(10_000), "]".repeat(10_000));
    let e = parse(&mut c, &deep).unwrap_err();
    assert!(e.message.contains("nesting deeper"), "{e}");
    let e = parse_type_str(&mut c, "tensor<99999999999999999999999xf32>").unwrap_err();
    assert!(e.message.contains("does not fit"), "{e}");
    let e = parse_attr_str(&mut c, "dense<0.0> : tensor<1000000x1000000xf32>").unwrap_err();
    assert!(e.message.contains("larger than"), "{e}");
    let e = parse_attr_str(&mut c, "dense<[1.0]> : tensor<2xf32>").unwrap_err();
    assert!(e.message.contains("has 1 elements but the type has 2"), "{e}");
    let e = parse_attr_str(&mut c, "\"\\u{d800}\"").unwrap_err();
    assert!(e.message.contains("invalid escape"), "{e}");
    let e = parse_attr_str(&mut c, "dense<[1.0]> : tensor<?Nxf32>").unwrap_err();
    assert!(e.message.contains("fixed shape"), "{e}");
}

#[test]
fn parse_errors_count_columns_in_characters() {
    let mut c = ctx();
    let e = parse(&mut c, "tfunc @f() {\n  t.sink() {s = \"héllo\", k = ¤}\n  ret()\n}\n").unwrap_err();
    assert_eq!((e.line, e.col), (2, 30), "{e}");
    assert!(e.rendered.ends_with("  ^"), "{}", e.rendered);
}

#[test]
fn printer_renumbers_after_erasure() {
    let mut c = ctx();
    let m = parse(&mut c, SRC).unwrap();
    let f = c.body_ops(m)[0];
    let (add0, add1) = (c.body_ops(f)[0], c.body_ops(f)[1]);
    let a = c.block(c.body(f, 0).unwrap()).args[0];
    let mut rw = Rewriter::new(&mut c);
    let r0 = rw.ctx().op(add0).results[0];
    rw.set_value_name(rw.ctx().op(add1).results[0], Some("sum"));
    rw.replace_all_uses(r0, a);
    rw.erase_op(add0);
    let text = print_module(&c, m, &PrintOptions::default());
    assert!(text.contains("%sum = add(%a, %a)"), "{text}");
}
