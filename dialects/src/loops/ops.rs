//! Op definitions and verifiers of the `loops` dialect.

use super::{BinOp, CmpPred, LaneReduce, UnOp, ValueKind, mask_elem, vector_elem_ok};
use strata_ir::{Context, ElemType, OpId, Registry, Ty, TypeData, define_op, type_to_string};

define_op! {
    /// An `index` constant.
    pub struct IndexConstOp = "loops.index_const" {
        summary: "an index constant",
        operands: [],
        results: [output],
        attrs: { value: Int },
        optional_attrs: {},
        traits: [PURE],
        verify: verify_index_const,
    }
}

define_op! {
    /// A scalar constant, or a vector with every lane equal to `value`. Integer
    /// types take the value truncated toward zero (it must be exactly integral).
    pub struct ConstOp = "loops.const" {
        summary: "a scalar or splat-vector constant",
        operands: [],
        results: [output],
        attrs: { value: Float },
        optional_attrs: {},
        traits: [PURE],
        verify: verify_const,
    }
}

define_op! {
    /// `op(a, b)` on two indices, scalars or vectors of one type.
    pub struct BinaryOp = "loops.binary" {
        summary: "binary arithmetic on indices, scalars or vectors",
        operands: [lhs, rhs],
        results: [output],
        attrs: { op: Str },
        optional_attrs: {},
        traits: [PURE],
        verify: verify_binary,
    }
}

define_op! {
    /// `op(a)` on an index, scalar or vector.
    pub struct UnaryOp = "loops.unary" {
        summary: "unary arithmetic on scalars or vectors",
        operands: [input],
        results: [output],
        attrs: { op: Str },
        optional_attrs: {},
        traits: [PURE],
        verify: verify_unary,
    }
}

define_op! {
    /// `a * b + c` with one rounding (float scalars or vectors).
    pub struct FmaOp = "loops.fma" {
        summary: "fused multiply-add",
        operands: [a, b, c],
        results: [output],
        attrs: {},
        optional_attrs: {},
        traits: [PURE],
        verify: verify_fma,
    }
}

define_op! {
    /// Compares two values of one type: a `bool` for indices and scalars, a mask
    /// vector (all-ones / all-zeros lanes) for vectors.
    pub struct CmpOp = "loops.cmp" {
        summary: "comparison producing a bool or a lane mask",
        operands: [lhs, rhs],
        results: [output],
        attrs: { pred: Str },
        optional_attrs: {},
        traits: [PURE],
        verify: verify_cmp,
    }
}

define_op! {
    /// `cond ? a : b`: a `bool` condition for scalars and indices, a mask vector
    /// (per lane) for vectors.
    pub struct SelectOp = "loops.select" {
        summary: "choose between two values",
        operands: [cond, a, b],
        results: [output],
        attrs: {},
        optional_attrs: {},
        traits: [PURE],
        verify: verify_select,
    }
}

define_op! {
    /// Converts between scalar types (and `index`), or between vectors with the
    /// same lane count. Float → integer rounds toward zero and saturates; integer
    /// → narrower integer saturates; `bool` converts to 0/1.
    pub struct CastOp = "loops.cast" {
        summary: "convert a value to another element type",
        operands: [input],
        results: [output],
        attrs: {},
        optional_attrs: {},
        traits: [PURE],
        verify: verify_cast,
    }
}

define_op! {
    /// A vector with every lane equal to the scalar.
    pub struct SplatOp = "loops.splat" {
        summary: "broadcast a scalar to every lane",
        operands: [input],
        results: [output],
        attrs: {},
        optional_attrs: {},
        traits: [PURE],
        verify: verify_splat,
    }
}

define_op! {
    /// Lane `lane` of a vector.
    pub struct ExtractOp = "loops.extract" {
        summary: "read one lane of a vector",
        operands: [input],
        results: [output],
        attrs: { lane: Int },
        optional_attrs: {},
        traits: [PURE],
        verify: verify_extract,
    }
}

define_op! {
    /// The vector with lane `lane` replaced by a scalar.
    pub struct InsertOp = "loops.insert" {
        summary: "replace one lane of a vector",
        operands: [vector, scalar],
        results: [output],
        attrs: { lane: Int },
        optional_attrs: {},
        traits: [PURE],
        verify: verify_insert,
    }
}

define_op! {
    /// Reduces the lanes of a vector to a scalar (`add` sums in lane order).
    pub struct ReduceLanesOp = "loops.reduce_lanes" {
        summary: "horizontal reduction of a vector",
        operands: [input],
        results: [output],
        attrs: { op: Str },
        optional_attrs: {},
        traits: [PURE],
        verify: verify_reduce_lanes,
    }
}

define_op! {
    /// Reads a scalar, or `lanes` consecutive elements as a vector, at the
    /// subscripts (one `index` per buffer dimension).
    pub struct LoadOp = "loops.load" {
        summary: "read a scalar or vector from a buffer",
        operands: [buffer],
        results: [output],
        attrs: {},
        optional_attrs: {},
        traits: [],
        variadic: indices,
        verify: verify_load,
    }
}

define_op! {
    /// Writes a scalar, or a vector to `lanes` consecutive elements, at the subscripts.
    pub struct StoreOp = "loops.store" {
        summary: "write a scalar or vector to a buffer",
        operands: [value, buffer],
        results: [],
        attrs: {},
        optional_attrs: {},
        traits: [],
        variadic: indices,
        verify: verify_store,
    }
}

define_op! {
    /// `for i in (lb..ub).step_by(step)` with loop-carried values: the body block
    /// takes `(%i: index, %carried…)` and yields the next carried values; the
    /// results are the carried values after the last iteration (the initial ones
    /// when the loop runs zero times). `unroll` is a hint to code generation.
    pub struct ForOp = "loops.for" {
        summary: "a counted loop with loop-carried values",
        operands: [lb, ub, step],
        results: [],
        attrs: {},
        optional_attrs: { unroll: Int },
        traits: [],
        variadic: inits,
        variadic_results: carried,
        regions: 1,
        terminator: "loops.yield",
        verify: verify_for,
    }
}

define_op! {
    /// `for i in lb..ub` whose iterations are independent: the executor splits
    /// the range statically across threads. Only at the top level of a kernel,
    /// at most once, with constant bounds.
    pub struct ParallelOp = "loops.parallel" {
        summary: "a loop whose iterations run on several threads",
        operands: [lb, ub],
        results: [],
        attrs: {},
        optional_attrs: {},
        traits: [],
        regions: 1,
        terminator: "loops.yield",
        verify: verify_parallel,
    }
}

define_op! {
    /// Ends a `loops.for` or `loops.parallel` body, passing the carried values on.
    pub struct YieldOp = "loops.yield" {
        summary: "end a loop body",
        operands: [],
        results: [],
        attrs: {},
        optional_attrs: {},
        traits: [TERMINATOR],
        variadic: values,
        verify: verify_yield,
    }
}

define_op! {
    /// A temporary buffer of the program; the memory plan gives it an offset in
    /// the arena.
    pub struct AllocOp = "loops.alloc" {
        summary: "a temporary buffer",
        operands: [],
        results: [output],
        attrs: {},
        optional_attrs: {},
        traits: [],
        verify: verify_alloc,
    }
}

define_op! {
    /// A read-only buffer holding constant data (weights).
    pub struct ConstantOp = "loops.constant" {
        summary: "a constant buffer",
        operands: [],
        results: [output],
        attrs: { value: Dense },
        optional_attrs: {},
        traits: [PURE],
        verify: verify_constant,
    }
}

define_op! {
    /// The same memory seen with another shape (same element type and count;
    /// both contiguous): reshapes cost nothing.
    pub struct ViewOp = "loops.view" {
        summary: "reinterpret a contiguous buffer with another shape",
        operands: [source],
        results: [output],
        attrs: {},
        optional_attrs: {},
        traits: [PURE],
        verify: verify_view,
    }
}

define_op! {
    /// Runs kernel `kernel` on the buffers (its arguments, in order).
    pub struct LaunchOp = "loops.launch" {
        summary: "run a kernel on buffers",
        operands: [],
        results: [],
        attrs: { kernel: SymbolRef },
        optional_attrs: {},
        traits: [],
        variadic: buffers,
        verify: verify_launch,
    }
}

pub(super) fn register(r: &mut Registry) {
    for def in [
        IndexConstOp::DEF,
        ConstOp::DEF,
        BinaryOp::DEF,
        UnaryOp::DEF,
        FmaOp::DEF,
        CmpOp::DEF,
        SelectOp::DEF,
        CastOp::DEF,
        SplatOp::DEF,
        ExtractOp::DEF,
        InsertOp::DEF,
        ReduceLanesOp::DEF,
        LoadOp::DEF,
        StoreOp::DEF,
        ForOp::DEF,
        ParallelOp::DEF,
        YieldOp::DEF,
        AllocOp::DEF,
        ConstantOp::DEF,
        ViewOp::DEF,
        LaunchOp::DEF,
    ] {
        r.register(def).expect("invariant: loops ops register once");
    }
}

// ---- verifiers --------------------------------------------------------------------

fn ty_str(ctx: &Context, ty: Ty) -> String {
    type_to_string(ctx, ty)
}

fn kind(ctx: &Context, v: strata_ir::ValueId) -> ValueKind {
    ValueKind::of(ctx, ctx.value_type(v))
}

fn operand_ty(ctx: &Context, op: OpId, i: usize) -> Option<Ty> {
    ctx.op(op).operands.get(i).map(|&v| ctx.value_type(v))
}

fn result_ty(ctx: &Context, op: OpId) -> Option<Ty> {
    ctx.op(op).results.first().map(|&v| ctx.value_type(v))
}

/// The result must be a scalar or a well-formed vector; checks the vector rules.
fn check_value_type(ctx: &Context, ty: Ty, what: &str, errs: &mut Vec<String>) {
    match ValueKind::of(ctx, ty) {
        ValueKind::Vector(v) => {
            if !vector_elem_ok(v.elem) {
                errs.push(format!("{what}: vectors of {} are not supported", v.elem));
            } else if v.bits() != 128 {
                errs.push(format!("{what}: {} is not a 128-bit vector", ty_str(ctx, ty)));
            }
        }
        ValueKind::Scalar(_) | ValueKind::Index => {}
        ValueKind::Other => errs.push(format!("{what} must be an index, scalar or vector, is {}", ty_str(ctx, ty))),
    }
}

fn verify_index_const(ctx: &Context, op: OpId, errs: &mut Vec<String>) {
    if let Some(t) = result_ty(ctx, op)
        && !matches!(ctx.ty(t), TypeData::Index)
    {
        errs.push(format!("result must be `index`, is {}", ty_str(ctx, t)));
    }
}

fn verify_const(ctx: &Context, op: OpId, errs: &mut Vec<String>) {
    let Some(t) = result_ty(ctx, op) else { return };
    check_value_type(ctx, t, "result", errs);
    if matches!(ctx.ty(t), TypeData::Index) {
        errs.push("index constants are `loops.index_const`".into());
    }
    if let (Some(e), Some(v)) = (ValueKind::of(ctx, t).elem(), ConstOp(op).value_opt(ctx))
        && !e.is_float()
        && v.is_finite()
        && v.fract() != 0.0
    {
        errs.push(format!("value {v} is not an integer but the type is {e}"));
    }
}

impl ConstOp {
    fn value_opt(self, ctx: &Context) -> Option<f64> {
        let a = ctx.op_attr(self.0, "value")?;
        <strata_ir::attr_kind::Float as strata_ir::registry::attr_kind::Get>::get(ctx, a)
    }
}

fn same_types(ctx: &Context, op: OpId, operands: std::ops::Range<usize>, errs: &mut Vec<String>) -> Option<Ty> {
    let data = ctx.op(op);
    let r = result_ty(ctx, op)?;
    for i in operands {
        let t = ctx.value_type(*data.operands.get(i)?);
        if t != r {
            errs.push(format!("operand #{i} has type {} but the result is {}", ty_str(ctx, t), ty_str(ctx, r)));
        }
    }
    Some(r)
}

fn str_attr<'c>(ctx: &'c Context, op: OpId, key: &str) -> Option<&'c str> {
    match ctx.attr(ctx.op_attr(op, key)?) {
        strata_ir::AttrData::Str(s) => Some(s.as_str()),
        _ => None,
    }
}

fn verify_binary(ctx: &Context, op: OpId, errs: &mut Vec<String>) {
    let Some(r) = same_types(ctx, op, 0..2, errs) else { return };
    check_value_type(ctx, r, "result", errs);
    let Some(name) = str_attr(ctx, op, "op") else { return };
    let Some(b) = BinOp::from_name(name) else {
        let known: Vec<_> = BinOp::ALL.iter().map(|o| o.name()).collect();
        errs.push(format!("unknown binary op `{name}` (known: {})", known.join(", ")));
        return;
    };
    let k = ValueKind::of(ctx, r);
    let float = k.elem().is_some_and(|e| e.is_float());
    match b {
        BinOp::And | BinOp::Or | BinOp::Xor if float => errs.push(format!("`{name}` needs integers")),
        BinOp::Rem if float => errs.push("`rem` needs integers".into()),
        BinOp::Pow if !float => errs.push("`pow` needs floats".into()),
        _ => {}
    }
}

fn verify_unary(ctx: &Context, op: OpId, errs: &mut Vec<String>) {
    let Some(r) = same_types(ctx, op, 0..1, errs) else { return };
    check_value_type(ctx, r, "result", errs);
    let Some(name) = str_attr(ctx, op, "op") else { return };
    let Some(u) = UnOp::from_name(name) else {
        let known: Vec<_> = UnOp::ALL.iter().map(|o| o.name()).collect();
        errs.push(format!("unknown unary op `{name}` (known: {})", known.join(", ")));
        return;
    };
    let float = ValueKind::of(ctx, r).elem().is_some_and(|e| e.is_float());
    match u {
        UnOp::Neg | UnOp::Abs => {}
        UnOp::Not if float => errs.push("`not` needs integers".into()),
        UnOp::Not => {}
        _ if !float => errs.push(format!("`{name}` needs floats")),
        _ => {}
    }
}

fn verify_fma(ctx: &Context, op: OpId, errs: &mut Vec<String>) {
    let Some(r) = same_types(ctx, op, 0..3, errs) else { return };
    check_value_type(ctx, r, "result", errs);
    if !ValueKind::of(ctx, r).elem().is_some_and(|e| e.is_float()) {
        errs.push("`loops.fma` needs floats".into());
    }
}

fn verify_cmp(ctx: &Context, op: OpId, errs: &mut Vec<String>) {
    let (Some(a), Some(b), Some(r)) = (operand_ty(ctx, op, 0), operand_ty(ctx, op, 1), result_ty(ctx, op)) else {
        return;
    };
    if a != b {
        errs.push(format!("compares {} with {}", ty_str(ctx, a), ty_str(ctx, b)));
    }
    if let Some(p) = str_attr(ctx, op, "pred")
        && CmpPred::from_name(p).is_none()
    {
        errs.push(format!("unknown predicate `{p}` (known: eq, ne, lt, le, gt, ge)"));
    }
    let ok = match (ValueKind::of(ctx, a), ValueKind::of(ctx, r)) {
        (ValueKind::Index | ValueKind::Scalar(_), ValueKind::Scalar(ElemType::Bool)) => true,
        (ValueKind::Vector(v), ValueKind::Vector(m)) => m.lanes == v.lanes && m.elem == mask_elem(v.elem),
        _ => false,
    };
    if !ok {
        errs.push(format!(
            "comparing {} gives a bool (scalars) or a mask vector of signed lanes, not {}",
            ty_str(ctx, a),
            ty_str(ctx, r)
        ));
    }
}

fn verify_select(ctx: &Context, op: OpId, errs: &mut Vec<String>) {
    let Some(r) = same_types(ctx, op, 1..3, errs) else { return };
    let Some(c) = operand_ty(ctx, op, 0) else { return };
    let ok = match (ValueKind::of(ctx, c), ValueKind::of(ctx, r)) {
        (ValueKind::Scalar(ElemType::Bool), ValueKind::Scalar(_) | ValueKind::Index) => true,
        (ValueKind::Vector(m), ValueKind::Vector(v)) => m.lanes == v.lanes && m.elem == mask_elem(v.elem),
        _ => false,
    };
    if !ok {
        errs.push(format!("condition {} does not fit values of {}", ty_str(ctx, c), ty_str(ctx, r)));
    }
}

fn verify_cast(ctx: &Context, op: OpId, errs: &mut Vec<String>) {
    let (Some(a), Some(r)) = (operand_ty(ctx, op, 0), result_ty(ctx, op)) else { return };
    check_value_type(ctx, r, "result", errs);
    let ok = match (ValueKind::of(ctx, a), ValueKind::of(ctx, r)) {
        (ValueKind::Index | ValueKind::Scalar(_), ValueKind::Index | ValueKind::Scalar(_)) => true,
        (ValueKind::Vector(x), ValueKind::Vector(y)) => x.lanes == y.lanes,
        _ => false,
    };
    if !ok {
        errs.push(format!("cannot cast {} to {}", ty_str(ctx, a), ty_str(ctx, r)));
    }
}

fn verify_splat(ctx: &Context, op: OpId, errs: &mut Vec<String>) {
    let (Some(a), Some(r)) = (operand_ty(ctx, op, 0), result_ty(ctx, op)) else { return };
    check_value_type(ctx, r, "result", errs);
    match (ValueKind::of(ctx, a), ValueKind::of(ctx, r)) {
        (ValueKind::Scalar(e), ValueKind::Vector(v)) if v.elem == e => {}
        _ => errs.push(format!("cannot splat {} to {}", ty_str(ctx, a), ty_str(ctx, r))),
    }
}

fn lane_in_range(ctx: &Context, op: OpId, lanes: u32, errs: &mut Vec<String>) {
    if let Some(strata_ir::AttrData::Int(l)) = ctx.op_attr(op, "lane").map(|a| ctx.attr(a))
        && !(0..i64::from(lanes)).contains(l)
    {
        errs.push(format!("lane {l} is outside 0..{lanes}"));
    }
}

fn verify_extract(ctx: &Context, op: OpId, errs: &mut Vec<String>) {
    let (Some(a), Some(r)) = (operand_ty(ctx, op, 0), result_ty(ctx, op)) else { return };
    match (ValueKind::of(ctx, a), ValueKind::of(ctx, r)) {
        (ValueKind::Vector(v), ValueKind::Scalar(e)) if v.elem == e => lane_in_range(ctx, op, v.lanes, errs),
        _ => errs.push(format!("cannot extract a {} from {}", ty_str(ctx, r), ty_str(ctx, a))),
    }
}

fn verify_insert(ctx: &Context, op: OpId, errs: &mut Vec<String>) {
    let Some(r) = same_types(ctx, op, 0..1, errs) else { return };
    let Some(s) = operand_ty(ctx, op, 1) else { return };
    match (ValueKind::of(ctx, r), ValueKind::of(ctx, s)) {
        (ValueKind::Vector(v), ValueKind::Scalar(e)) if v.elem == e => lane_in_range(ctx, op, v.lanes, errs),
        _ => errs.push(format!("cannot insert a {} into {}", ty_str(ctx, s), ty_str(ctx, r))),
    }
}

fn verify_reduce_lanes(ctx: &Context, op: OpId, errs: &mut Vec<String>) {
    let (Some(a), Some(r)) = (operand_ty(ctx, op, 0), result_ty(ctx, op)) else { return };
    match (ValueKind::of(ctx, a), ValueKind::of(ctx, r)) {
        (ValueKind::Vector(v), ValueKind::Scalar(e)) if v.elem == e => {}
        _ => errs.push(format!("cannot reduce {} to {}", ty_str(ctx, a), ty_str(ctx, r))),
    }
    if let Some(o) = str_attr(ctx, op, "op")
        && LaneReduce::from_name(o).is_none()
    {
        errs.push(format!("unknown lane reduction `{o}` (known: add, max, min)"));
    }
}

/// Checks a buffer access: operand `buf_index` is a buffer, the subscripts that
/// follow are one index per dimension, and `value_ty` is its element or a vector of it.
fn verify_access(ctx: &Context, op: OpId, buf_index: usize, value_ty: Ty, errs: &mut Vec<String>) {
    let data = ctx.op(op);
    let Some(&buf) = data.operands.get(buf_index) else { return };
    let TypeData::Buffer(b) = ctx.ty(ctx.value_type(buf)) else {
        errs.push(format!("operand #{buf_index} must be a buffer, is {}", ty_str(ctx, ctx.value_type(buf))));
        return;
    };
    let indices = &data.operands[buf_index + 1..];
    if indices.len() != b.shape.len() {
        errs.push(format!("{} subscripts for a buffer of rank {}", indices.len(), b.shape.len()));
    }
    for (i, &v) in indices.iter().enumerate() {
        if kind(ctx, v) != ValueKind::Index {
            errs.push(format!("subscript #{i} must be an index, is {}", ty_str(ctx, ctx.value_type(v))));
        }
    }
    match ValueKind::of(ctx, value_ty) {
        ValueKind::Scalar(e) if e == b.elem => {}
        ValueKind::Vector(v) if v.elem == b.elem => {
            check_value_type(ctx, value_ty, "the vector", errs);
            if let Some(st) = &b.strides
                && st.last() != Some(&1)
            {
                errs.push("a vector access needs a contiguous last dimension (stride 1)".into());
            }
        }
        _ => errs.push(format!("accesses a buffer of {} as {}", b.elem, ty_str(ctx, value_ty))),
    }
}

fn verify_load(ctx: &Context, op: OpId, errs: &mut Vec<String>) {
    if let Some(r) = result_ty(ctx, op) {
        verify_access(ctx, op, 0, r, errs);
    }
}

fn verify_store(ctx: &Context, op: OpId, errs: &mut Vec<String>) {
    if let Some(v) = operand_ty(ctx, op, 0) {
        verify_access(ctx, op, 1, v, errs);
    }
}

fn verify_for(ctx: &Context, op: OpId, errs: &mut Vec<String>) {
    let data = ctx.op(op);
    for i in 0..3.min(data.operands.len()) {
        if kind(ctx, data.operands[i]) != ValueKind::Index {
            errs.push(format!("bound #{i} must be an index"));
        }
    }
    let inits = data.operands.get(3..).unwrap_or(&[]);
    if inits.len() != data.results.len() {
        errs.push(format!("{} initial values for {} results", inits.len(), data.results.len()));
    }
    for (i, (&a, &r)) in inits.iter().zip(&data.results).enumerate() {
        if ctx.value_type(a) != ctx.value_type(r) {
            errs.push(format!("carried value #{i}: initial value and result differ in type"));
        }
    }
    if let Some(strata_ir::AttrData::Int(u)) = ctx.op_attr(op, "unroll").map(|a| ctx.attr(a))
        && *u < 1
    {
        errs.push(format!("unroll must be at least 1, is {u}"));
    }
    let Some(body) = ctx.body(op, 0) else { return };
    let args = &ctx.block(body).args;
    if args.len() != 1 + data.results.len() {
        errs.push(format!(
            "the body takes {} arguments, expected the index and {} carried values",
            args.len(),
            data.results.len()
        ));
        return;
    }
    if kind(ctx, args[0]) != ValueKind::Index {
        errs.push("the body's first argument must be the index".into());
    }
    for (i, (&a, &r)) in args[1..].iter().zip(&data.results).enumerate() {
        if ctx.value_type(a) != ctx.value_type(r) {
            errs.push(format!("carried value #{i}: body argument and result differ in type"));
        }
    }
}

fn verify_parallel(ctx: &Context, op: OpId, errs: &mut Vec<String>) {
    let data = ctx.op(op);
    for &v in &data.operands {
        if IndexConstOp::cast_def(ctx, v).is_none() {
            errs.push("parallel bounds must be `loops.index_const` values".into());
            break;
        }
    }
    let parent = ctx.parent_op(op);
    if parent.is_none_or(|p| ctx.op_name(p) != "func.func") {
        errs.push("`loops.parallel` must be at the top level of a kernel".into());
    } else if let Some(block) = data.parent {
        let n = ctx.block(block).ops.iter().filter(|&&o| ctx.op_name(o) == "loops.parallel").count();
        if n > 1 {
            errs.push("a kernel has at most one `loops.parallel`".into());
        }
    }
    if let Some(body) = ctx.body(op, 0) {
        let args = &ctx.block(body).args;
        if args.len() != 1 || kind(ctx, args[0]) != ValueKind::Index {
            errs.push("the body takes exactly one index argument".into());
        }
    }
}

impl IndexConstOp {
    /// The constant behind `v`, if `v` is defined by `loops.index_const`.
    pub fn cast_def(ctx: &Context, v: strata_ir::ValueId) -> Option<i64> {
        let op = ctx.defining_op(v)?;
        if ctx.op_name(op) != "loops.index_const" {
            return None;
        }
        match ctx.attr(ctx.op_attr(op, "value")?) {
            strata_ir::AttrData::Int(i) => Some(*i),
            _ => None,
        }
    }
}

fn verify_yield(ctx: &Context, op: OpId, errs: &mut Vec<String>) {
    let Some(parent) = ctx.parent_op(op) else {
        errs.push("must be inside a loop".into());
        return;
    };
    let results = match ctx.op_name(parent) {
        "loops.for" | "loops.parallel" => &ctx.op(parent).results,
        other => {
            errs.push(format!("must end a `loops.for` or `loops.parallel` body, not a `{other}`"));
            return;
        }
    };
    let values = &ctx.op(op).operands;
    if values.len() != results.len() {
        errs.push(format!("yields {} values, the loop carries {}", values.len(), results.len()));
        return;
    }
    for (i, (&v, &r)) in values.iter().zip(results).enumerate() {
        if ctx.value_type(v) != ctx.value_type(r) {
            errs.push(format!("yielded value #{i} has type {}", ty_str(ctx, ctx.value_type(v))));
        }
    }
}

fn static_buffer(ctx: &Context, ty: Ty) -> Option<&strata_ir::BufferType> {
    match ctx.ty(ty) {
        TypeData::Buffer(b) => Some(b),
        _ => None,
    }
}

fn verify_alloc(ctx: &Context, op: OpId, errs: &mut Vec<String>) {
    let Some(r) = result_ty(ctx, op) else { return };
    match static_buffer(ctx, r) {
        Some(b) if b.shape.iter().all(|d| d.fixed().is_some()) && b.strides.is_none() => {}
        Some(_) => errs.push("an allocated buffer needs a static shape and no explicit strides".into()),
        None => errs.push(format!("result must be a buffer, is {}", ty_str(ctx, r))),
    }
}

fn verify_constant(ctx: &Context, op: OpId, errs: &mut Vec<String>) {
    let Some(r) = result_ty(ctx, op) else { return };
    let Some(b) = static_buffer(ctx, r) else {
        errs.push(format!("result must be a buffer, is {}", ty_str(ctx, r)));
        return;
    };
    if let Some(strata_ir::AttrData::Dense(d)) = ctx.op_attr(op, "value").map(|a| ctx.attr(a))
        && let Some(t) = ctx.ty(d.ty).as_tensor()
    {
        let n_b = b.shape.iter().try_fold(1u64, |acc, d| acc.checked_mul(d.fixed()?));
        if t.elem != b.elem || t.num_elements() != n_b || b.strides.is_some() {
            errs.push(format!("value of type {} does not fill {}", ty_str(ctx, d.ty), ty_str(ctx, r)));
        }
    }
}

fn verify_view(ctx: &Context, op: OpId, errs: &mut Vec<String>) {
    let (Some(a), Some(r)) = (operand_ty(ctx, op, 0), result_ty(ctx, op)) else { return };
    let (Some(x), Some(y)) = (static_buffer(ctx, a), static_buffer(ctx, r)) else {
        errs.push("views take and give buffers".into());
        return;
    };
    let count = |b: &strata_ir::BufferType| b.shape.iter().try_fold(1u64, |acc, d| acc.checked_mul(d.fixed()?));
    let fixed: Option<Vec<u64>> = y.shape.iter().map(|d| d.fixed()).collect();
    let ok = match (&y.strides, fixed, count(x)) {
        _ if x.elem != y.elem || x.strides.is_some() => false,
        (None, _, n) => n.is_some() && count(y) == n,
        // A strided view (a transposition or broadcast of the source): every
        // element it reaches lies inside the source.
        (Some(st), Some(dims), Some(n)) => {
            st.iter().all(|&s| s >= 0)
                && dims
                    .iter()
                    .zip(st)
                    .try_fold(0u64, |acc, (&d, &s)| acc.checked_add(d.saturating_sub(1).checked_mul(s as u64)?))
                    .is_some_and(|hi| dims.contains(&0) || hi < n)
        }
        _ => false,
    };
    if !ok {
        errs.push(format!("cannot view {} as {}", ty_str(ctx, a), ty_str(ctx, r)));
    }
}

fn verify_launch(ctx: &Context, op: OpId, errs: &mut Vec<String>) {
    for (i, &v) in ctx.op(op).operands.iter().enumerate() {
        if static_buffer(ctx, ctx.value_type(v)).is_none() {
            errs.push(format!("argument #{i} must be a buffer"));
        }
    }
    let Some(callee) = (match ctx.op_attr(op, "kernel").map(|a| ctx.attr(a)) {
        Some(strata_ir::AttrData::SymbolRef(s)) => Some(s.as_str()),
        _ => None,
    }) else {
        return;
    };
    let module = ctx.parent_op(op).and_then(|f| ctx.parent_op(f));
    let Some(module) = module else { return };
    let Some(f) = crate::func::lookup_function(ctx, module, callee) else {
        errs.push(format!("kernel @{callee} is not defined"));
        return;
    };
    let (ins, outs) = f.signature(ctx);
    let args: Vec<Ty> = ctx.op(op).operands.iter().map(|&v| ctx.value_type(v)).collect();
    if !outs.is_empty() {
        errs.push(format!("kernel @{callee} returns values; kernels write their output buffers"));
    }
    if ins != args {
        errs.push(format!(
            "kernel @{callee} takes ({}), launched with ({})",
            ins.iter().map(|&t| ty_str(ctx, t)).collect::<Vec<_>>().join(", "),
            args.iter().map(|&t| ty_str(ctx, t)).collect::<Vec<_>>().join(", ")
        ));
    }
}
