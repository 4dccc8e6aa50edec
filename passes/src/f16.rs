//! `f16-io-f32-comp` and `f16-io-comp` — run graph-dialect functions on f16
//! tensors (MegEngine's `ConvertF32ToF16Pass`, `enable_io16xc32` and
//! `enable_ioc16`). Details: `docs/f16.md`.
//!
//! Expects: a verified module of `func` functions over the `graph` dialect.
//! Produces, in every function:
//! - each f32 source becomes f16: a function argument gets a
//!   `graph.typecvt` to f16 after it; an f32 `graph.const` / `graph.param` is
//!   replaced by one holding the value converted to f16 (the name is kept);
//!   a `graph.typecvt` to f32 converts to f16 instead (or disappears when its
//!   input already is f16); `out_dtype = f32` becomes `f16`;
//! - every other op is rebuilt on the f16 values when its `infer` accepts them;
//!   `f16-io-f32-comp` also sets `compute_mode = "float32"` on `conv2d`,
//!   `conv_bias`, `conv_transpose2d`, `matmul`, `batched_matmul` and
//!   `reduce` (f16 storage, f32 accumulation); `f16-io-comp` computes in f16;
//! - `graph.warp_perspective` keeps its matrix in f32 (the original f32 value
//!   when it is a source, else a cast back);
//! - an op that rejects f16 operands (or has no `infer`, such as `func.call`)
//!   keeps f32: casts to f32 before it, its f32 results cast to f16 after;
//! - every returned value whose type changed is cast back to its original type,
//!   so function signatures do not change.
//!
//! Replaced ops are erased once unused. Options: none.
//!
//! ```text
//! func @f(%x: tensor<2x3xf32>) -> tensor<2x3xf32> {
//!   %0 = graph.elemwise(%x) {mode = "relu"} : (tensor<2x3xf32>) -> tensor<2x3xf32>
//!   return(%0)
//! }
//! ```
//! becomes
//! ```text
//!   %0 = graph.typecvt(%x) {dtype = f16} : (tensor<2x3xf32>) -> tensor<2x3xf16>
//!   %1 = graph.elemwise(%0) {mode = "relu"} : (tensor<2x3xf16>) -> tensor<2x3xf16>
//!   %2 = graph.typecvt(%1) {dtype = f32} : (tensor<2x3xf16>) -> tensor<2x3xf32>
//!   return(%2)
//! ```

use std::collections::HashMap;
use strata_dialects::func::functions;
use strata_ir::pass::{Changed, Pass, PassError, PassInfo, PassOptions, PassStats};
use strata_ir::{
    Attr, AttrData, AttrList, Context, DenseAttr, DenseStorage, ElemType, InsertPoint, Loc, OpBuild, OpCx, OpId,
    OpTraits, OpView, Rewriter, Sym, TensorType, Ty, TypeData, ValueId,
};

/// The pass: f16 storage, with f32 (`f32_compute`) or f16 computation.
#[derive(Debug)]
pub struct ConvertF32ToF16 {
    f32_compute: bool,
}

/// Registry entry of `f16-io-f32-comp` (MegEngine's `enable_io16xc32`).
pub const IO_F32_COMP_INFO: PassInfo = PassInfo {
    name: "f16-io-f32-comp",
    summary: "f32 to f16 storage with f32 accumulation (compute_mode = \"float32\"); endpoints cast back",
    options: &[],
    create: |_: &PassOptions| Ok(Box::new(ConvertF32ToF16 { f32_compute: true })),
};

/// Registry entry of `f16-io-comp` (MegEngine's `enable_ioc16`).
pub const IO_COMP_INFO: PassInfo = PassInfo {
    name: "f16-io-comp",
    summary: "f32 to f16 storage and computation; endpoints cast back",
    options: &[],
    create: |_: &PassOptions| Ok(Box::new(ConvertF32ToF16 { f32_compute: false })),
};

/// Ops that accumulate and take `compute_mode` (MegEngine's conv, deconv,
/// matrix-mul and reduce).
const ACCUMULATING: &[&str] = &[
    "graph.conv2d",
    "graph.conv_bias",
    "graph.conv_transpose2d",
    "graph.matmul",
    "graph.batched_matmul",
    "graph.reduce",
];

/// Operands that stay f32: (op, operand index).
const KEEP_F32: &[(&str, usize)] = &[("graph.warp_perspective", 1)];

impl Pass for ConvertF32ToF16 {
    fn name(&self) -> &'static str {
        if self.f32_compute { IO_F32_COMP_INFO.name } else { IO_COMP_INFO.name }
    }

    fn run(&mut self, ctx: &mut Context, module: OpId, stats: &mut PassStats) -> Result<Changed, PassError> {
        let mut rw = Rewriter::new(ctx);
        for f in functions(rw.ctx(), module) {
            let Some(body) = rw.ctx().body(f.op(), 0) else {
                continue;
            };
            Convert::new(&mut rw, self.f32_compute, stats).function(body).map_err(|message| PassError::Failed {
                pass: self.name().into(),
                message: format!("@{}: {message}", f.name(rw.ctx())),
            })?;
        }
        Ok(Changed::from_bool(rw.changed()))
    }
}

/// The conversion of one function body.
struct Convert<'a, 'c> {
    rw: &'a mut Rewriter<'c>,
    f32_compute: bool,
    stats: &'a mut PassStats,
    /// Original f32 value → its f16 replacement (or the rebuilt op's result).
    map: HashMap<ValueId, ValueId>,
    /// f16 replacement of a source → the original f32 value (exact, for operands kept in f32).
    source_f32: HashMap<ValueId, ValueId>,
    /// Ops superseded by new ones, erased at the end when unused.
    replaced: Vec<OpId>,
    /// Converted sources (f16 constants, argument casts) and the value they
    /// convert: erased at the end when nothing reads them in f16.
    sources: Vec<(OpId, ValueId)>,
}

fn tensor_of(ctx: &Context, v: ValueId) -> Option<&TensorType> {
    ctx.value_tensor(v)
}

fn is_f32(ctx: &Context, v: ValueId) -> bool {
    tensor_of(ctx, v).is_some_and(|t| t.elem == ElemType::F32)
}

impl<'a, 'c> Convert<'a, 'c> {
    fn new(rw: &'a mut Rewriter<'c>, f32_compute: bool, stats: &'a mut PassStats) -> Self {
        Convert {
            rw,
            f32_compute,
            stats,
            map: HashMap::new(),
            source_f32: HashMap::new(),
            replaced: Vec::new(),
            sources: Vec::new(),
        }
    }

    fn ctx(&self) -> &Context {
        self.rw.ctx()
    }

    /// `t` with element type `elem`.
    fn with_elem(&mut self, v: ValueId, elem: ElemType) -> Ty {
        let t = tensor_of(self.ctx(), v).expect("invariant: converted values are tensors").clone();
        self.rw.ctx_mut().tensor_type(TensorType { elem, ..t })
    }

    fn elem_attr(&mut self, elem: ElemType) -> Attr {
        let ty = self.rw.ctx_mut().intern_type(TypeData::Scalar(elem));
        self.rw.ctx_mut().intern_attr(AttrData::Type(ty))
    }

    /// Creates `graph.typecvt(v) {dtype = elem}` at `at`.
    fn cast(&mut self, v: ValueId, elem: ElemType, at: InsertPoint, loc: Loc) -> ValueId {
        let ty = self.with_elem(v, elem);
        let dtype = self.elem_attr(elem);
        let op = self
            .rw
            .create(OpBuild::new("graph.typecvt").operands(&[v]).results(&[ty]).attr("dtype", dtype).loc(loc), at);
        self.stats.add("casts-inserted", 1);
        self.ctx().op(op).results[0]
    }

    /// The f32 form of the f16 value `h`: the original source, or a cast before `user`.
    fn f32_form(&mut self, h: ValueId, user: OpId) -> ValueId {
        if let Some(&orig) = self.source_f32.get(&h) {
            return orig;
        }
        let loc = self.ctx().op(user).loc;
        self.cast(h, ElemType::F32, InsertPoint::Before(user), loc)
    }

    /// Maps an f32 result `r` of `op` to a cast to f16 placed after `op`.
    fn cast_result_after(&mut self, op: OpId, r: ValueId) {
        let loc = self.ctx().op(op).loc;
        let h = self.cast(r, ElemType::F16, InsertPoint::After(op), loc);
        self.map.insert(r, h);
    }

    fn function(&mut self, body: strata_ir::BlockId) -> Result<(), String> {
        let ops = self.ctx().block(body).ops.clone();
        let Some(&first) = ops.first() else {
            return Ok(());
        };
        for arg in self.ctx().block(body).args.clone() {
            if is_f32(self.ctx(), arg) {
                let h = self.cast(arg, ElemType::F16, InsertPoint::Before(first), Loc::UNKNOWN);
                self.map.insert(arg, h);
                self.source_f32.insert(h, arg);
                let cast = self.ctx().defining_op(h).expect("invariant: a cast has a defining op");
                self.sources.push((cast, arg));
            }
        }
        for op in ops {
            self.op(op)?;
        }
        // A source read only in f32 (say a warp matrix) keeps its original form and name.
        // (Only new ops read converted sources, so this goes before erasing replaced ops.)
        for (op, orig) in std::mem::take(&mut self.sources) {
            if self.is_dead(op) {
                let h = self.ctx().op(op).results[0];
                self.move_name(h, orig);
                self.rw.erase_op(op);
            }
        }
        for &op in self.replaced.iter().rev() {
            if self.is_dead(op) {
                self.rw.erase_op(op);
            }
        }
        Ok(())
    }

    fn is_dead(&self, op: OpId) -> bool {
        let ctx = self.ctx();
        ctx.is_live(op) && ctx.op(op).results.iter().all(|&r| ctx.value(r).uses.is_empty())
    }

    fn op(&mut self, op: OpId) -> Result<(), String> {
        let ctx = self.ctx();
        let name = ctx.op_name(op).to_string();
        let data = ctx.op(op).clone();
        let def = ctx.op_def(op).copied();
        if def.is_some_and(|d| d.traits.contains(OpTraits::TERMINATOR)) {
            return self.terminator(op);
        }
        if def.is_some_and(|d| d.traits.contains(OpTraits::CONSTANT_LIKE)) {
            return self.constant(op);
        }
        let operands: Vec<ValueId> = data.operands.iter().map(|v| *self.map.get(v).unwrap_or(v)).collect();
        if name == "graph.typecvt" && self.typecvt_to_f32(op, operands[0]) {
            return Ok(());
        }
        if operands == data.operands {
            // Untouched; an f32 it produces from other types (say an `out_dtype`) becomes f16 after it.
            for &r in &data.results {
                if is_f32(self.ctx(), r) {
                    self.cast_result_after(op, r);
                }
            }
            return Ok(());
        }
        if !self.rebuild(op, &name, operands.clone())? {
            self.keep_f32(op, &data.operands, &operands);
        }
        Ok(())
    }

    /// Casts returned values whose type changed back to their original type.
    fn terminator(&mut self, op: OpId) -> Result<(), String> {
        let operands = self.ctx().op(op).operands.clone();
        let loc = self.ctx().op(op).loc;
        for (i, v) in operands.into_iter().enumerate() {
            let Some(&new) = self.map.get(&v) else {
                continue;
            };
            let (old_ty, new_ty) = (self.ctx().value_type(v), self.ctx().value_type(new));
            let replacement = if old_ty == new_ty {
                new
            } else {
                let elem = tensor_of(self.ctx(), v).expect("invariant: mapped values are tensors").elem;
                self.cast(new, elem, InsertPoint::Before(op), loc)
            };
            self.rw.set_operand(op, i, replacement);
        }
        Ok(())
    }

    /// An f32 constant or parameter is replaced by its f16 conversion.
    fn constant(&mut self, op: OpId) -> Result<(), String> {
        let data = self.ctx().op(op).clone();
        let [r] = data.results[..] else {
            return Ok(());
        };
        if !is_f32(self.ctx(), r) {
            return Ok(());
        }
        let value = self.ctx().op_attr(op, "value").map(|a| self.ctx().attr(a).clone());
        let Some(AttrData::Dense(DenseAttr { storage: DenseStorage::Data(t), .. })) = value else {
            // Elided data (or an unknown constant-like op): cast after it.
            self.cast_result_after(op, r);
            return Ok(());
        };
        let converted = strata_dialects::graph::shape::convert(&t, ElemType::F16)?;
        let ty = self.with_elem(r, ElemType::F16);
        let value =
            self.rw.ctx_mut().intern_attr(AttrData::Dense(DenseAttr { ty, storage: DenseStorage::Data(converted) }));
        let mut build = OpBuild::new(self.ctx().op_name(op)).results(&[ty]).loc(data.loc);
        for &(k, a) in &data.attrs {
            let key = self.ctx().str(k).to_string();
            build = build.attr(key.clone(), if key == "value" { value } else { a });
        }
        let new = self.rw.create(build, InsertPoint::Before(op));
        let h = self.ctx().op(new).results[0];
        self.move_name(r, h);
        self.map.insert(r, h);
        self.source_f32.insert(h, r);
        self.replaced.push(op);
        self.sources.push((new, r));
        self.stats.add("constants-converted", 1);
        Ok(())
    }

    /// A `typecvt` to f32 converts to f16 instead; true when handled.
    fn typecvt_to_f32(&mut self, op: OpId, input: ValueId) -> bool {
        let r = self.ctx().op(op).results[0];
        if !is_f32(self.ctx(), r) {
            return false;
        }
        let loc = self.ctx().op(op).loc;
        let h = if tensor_of(self.ctx(), input).is_some_and(|t| t.elem == ElemType::F16) {
            input
        } else {
            self.cast(input, ElemType::F16, InsertPoint::Before(op), loc)
        };
        self.move_name(r, h);
        self.map.insert(r, h);
        self.replaced.push(op);
        true
    }

    /// Moves the printing name of `from` to `to`.
    fn move_name(&mut self, from: ValueId, to: ValueId) {
        if let Some(n) = self.ctx().value(from).name {
            let n = self.ctx().str(n).to_string();
            self.rw.set_value_name(from, None);
            if self.ctx().value(to).name.is_none() {
                self.rw.set_value_name(to, Some(&n));
            }
        }
    }

    /// Builds `op` anew on `operands` (f16 where converted) when its `infer`
    /// accepts them; false when it does not.
    fn rebuild(&mut self, op: OpId, name: &str, mut operands: Vec<ValueId>) -> Result<bool, String> {
        let Some(def) = self.ctx().op_def(op).copied() else {
            return Ok(false);
        };
        let Some(infer) = def.infer else {
            return Ok(false);
        };
        for &(n, i) in KEEP_F32 {
            if n == name && i < operands.len() && operands[i] != self.ctx().op(op).operands[i] {
                operands[i] = self.f32_form(operands[i], op);
            }
        }
        let f16 = self.elem_attr(ElemType::F16);
        let f32 = self.elem_attr(ElemType::F32);
        let mut attrs: Vec<(Sym, Attr)> = self.ctx().op(op).attrs.clone();
        for (k, a) in &mut attrs {
            if self.ctx().str(*k) == "out_dtype" && *a == f32 {
                *a = f16;
            }
        }
        let first_is_f16 =
            operands.first().is_some_and(|&v| tensor_of(self.ctx(), v).is_some_and(|t| t.elem == ElemType::F16));
        if self.f32_compute && first_is_f16 && ACCUMULATING.contains(&name) {
            let mode = self.rw.ctx_mut().intern_attr(AttrData::Str("float32".into()));
            let key = self.rw.ctx_mut().sym("compute_mode");
            attrs.retain(|(k, _)| *k != key);
            attrs.push((key, mode));
        }
        let operand_types: Vec<Ty> = operands.iter().map(|&v| self.ctx().value_type(v)).collect();
        let types = {
            let ctx = self.ctx();
            if !strata_ir::verify::check_attrs(ctx, &def, &attrs).is_empty() {
                return Ok(false);
            }
            let cx = OpCx {
                ctx,
                name: def.name,
                attrs: AttrList::new(ctx, &attrs),
                operand_types: &operand_types,
                result_types: &[],
            };
            match infer(&cx) {
                Ok(types) if types.len() == ctx.op(op).results.len() => types,
                _ => return Ok(false),
            }
        };
        let result_types: Vec<Ty> = types.into_iter().map(|t| self.rw.ctx_mut().intern_type(t)).collect();
        let data = self.ctx().op(op).clone();
        let mut build = OpBuild::new(name).operands(&operands).results(&result_types).loc(data.loc);
        for &(k, a) in &attrs {
            build = build.attr(self.ctx().str(k).to_string(), a);
        }
        let new = self.rw.create(build, InsertPoint::Before(op));
        if let Some(verify) = def.verify {
            let mut errors = Vec::new();
            verify(self.ctx(), new, &mut errors);
            if !errors.is_empty() {
                self.rw.erase_op(new);
                return Ok(false);
            }
        }
        let new_results = self.ctx().op(new).results.clone();
        for (&old, &nr) in data.results.iter().zip(&new_results) {
            self.move_name(old, nr);
            if is_f32(self.ctx(), nr) {
                self.cast_result_after(new, nr);
                let h = self.map[&nr];
                self.map.insert(old, h);
            } else {
                self.map.insert(old, nr);
            }
        }
        self.replaced.push(op);
        self.stats.add("ops-converted", 1);
        Ok(true)
    }

    /// Keeps `op` in f32: its converted operands are cast back, its f32 results cast to f16.
    fn keep_f32(&mut self, op: OpId, original: &[ValueId], operands: &[ValueId]) {
        for (i, (&o, &n)) in original.iter().zip(operands).enumerate() {
            if o != n {
                let back = if self.ctx().value_type(n) == self.ctx().value_type(o) { n } else { self.f32_form(n, op) };
                self.rw.set_operand(op, i, back);
            }
        }
        for r in self.ctx().op(op).results.clone() {
            if is_f32(self.ctx(), r) {
                self.cast_result_after(op, r);
            }
        }
        self.stats.add("ops-kept-f32", 1);
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::run;

    #[test]
    fn converts_sources_ops_and_endpoints() {
        let out = run(
            "f16-io-f32-comp",
            r#"func @f(%x: tensor<1x2x3x3xf32>) -> tensor<1x4x3x3xf32> {
  %w = graph.param() {name = "w", value = dense<0.5> : tensor<4x2x1x1xf32>} : () -> tensor<4x2x1x1xf32>
  %y = graph.conv2d(%x, %w) {dilation = [1, 1], group = 1, pad = [0, 0], stride = [1, 1]} : (tensor<1x2x3x3xf32>, tensor<4x2x1x1xf32>) -> tensor<1x4x3x3xf32>
  %r = graph.elemwise(%y) {mode = "relu"} : (tensor<1x4x3x3xf32>) -> tensor<1x4x3x3xf32>
  return(%r)
}"#,
        );
        insta::assert_snapshot!(out, @r#"
        func @f(%x: tensor<1x2x3x3xf32>) -> tensor<1x4x3x3xf32> {
          %0 = graph.typecvt(%x) {dtype = f16} : (tensor<1x2x3x3xf32>) -> tensor<1x2x3x3xf16>
          %w = graph.param() {name = "w", value = dense<0.5> : tensor<4x2x1x1xf16>} : () -> tensor<4x2x1x1xf16>
          %y = graph.conv2d(%0, %w) {compute_mode = "float32", dilation = [1, 1], group = 1, pad = [0, 0], stride = [1, 1]} : (tensor<1x2x3x3xf16>, tensor<4x2x1x1xf16>) -> tensor<1x4x3x3xf16>
          %r = graph.elemwise(%y) {mode = "relu"} : (tensor<1x4x3x3xf16>) -> tensor<1x4x3x3xf16>
          %1 = graph.typecvt(%r) {dtype = f32} : (tensor<1x4x3x3xf16>) -> tensor<1x4x3x3xf32>
          return(%1)
        }
        "#);
    }

    #[test]
    fn ioc16_has_no_compute_mode_and_keeps_warp_matrix() {
        let out = run(
            "f16-io-comp",
            r#"func @f(%x: tensor<1x1x2x2xf32>, %m: tensor<1x3x3xf32>) -> (tensor<1x1x2x2xf32>, tensor<2xf32>) {
  %c = graph.const() {value = dense<[1.0, 2.0]> : tensor<2xf32>} : () -> tensor<2xf32>
  %s = graph.reduce(%x) {axis = 3, keepdim = false, mode = "sum"} : (tensor<1x1x2x2xf32>) -> tensor<1x1x2xf32>
  %t = graph.reshape(%s) {shape = [2]} : (tensor<1x1x2xf32>) -> tensor<2xf32>
  %u = graph.elemwise(%t, %c) {mode = "add"} : (tensor<2xf32>, tensor<2xf32>) -> tensor<2xf32>
  %w = graph.warp_perspective(%x, %m) {border_mode = "constant", border_value = 0.0, imode = "linear", output = [2, 2]} : (tensor<1x1x2x2xf32>, tensor<1x3x3xf32>) -> tensor<1x1x2x2xf32>
  return(%w, %u)
}"#,
        );
        insta::assert_snapshot!(out, @r#"
        func @f(%x: tensor<1x1x2x2xf32>, %m: tensor<1x3x3xf32>) -> (tensor<1x1x2x2xf32>, tensor<2xf32>) {
          %0 = graph.typecvt(%x) {dtype = f16} : (tensor<1x1x2x2xf32>) -> tensor<1x1x2x2xf16>
          %c = graph.const() {value = dense<[1.0, 2.0]> : tensor<2xf16>} : () -> tensor<2xf16>
          %s = graph.reduce(%0) {axis = 3, keepdim = false, mode = "sum"} : (tensor<1x1x2x2xf16>) -> tensor<1x1x2xf16>
          %t = graph.reshape(%s) {shape = [2]} : (tensor<1x1x2xf16>) -> tensor<2xf16>
          %u = graph.elemwise(%t, %c) {mode = "add"} : (tensor<2xf16>, tensor<2xf16>) -> tensor<2xf16>
          %w = graph.warp_perspective(%0, %m) {border_mode = "constant", border_value = 0.0, imode = "linear", output = [2, 2]} : (tensor<1x1x2x2xf16>, tensor<1x3x3xf32>) -> tensor<1x1x2x2xf16>
          %1 = graph.typecvt(%w) {dtype = f32} : (tensor<1x1x2x2xf16>) -> tensor<1x1x2x2xf32>
          %2 = graph.typecvt(%u) {dtype = f32} : (tensor<2xf16>) -> tensor<2xf32>
          return(%1, %2)
        }
        "#);
    }

    #[test]
    fn typecvt_to_f32_becomes_f16_and_other_types_stay() {
        let out = run(
            "f16-io-f32-comp",
            r#"func @f(%x: tensor<4xu8>, %i: tensor<4xi32>) -> (tensor<4xf32>, tensor<4xi32>) {
  %a = graph.typecvt(%x) {dtype = f32} : (tensor<4xu8>) -> tensor<4xf32>
  %b = graph.elemwise(%a, %a) {mode = "mul"} : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
  %c = graph.typecvt(%b) {dtype = f32} : (tensor<4xf32>) -> tensor<4xf32>
  %j = graph.elemwise(%i, %i) {mode = "add"} : (tensor<4xi32>, tensor<4xi32>) -> tensor<4xi32>
  return(%c, %j)
}"#,
        );
        insta::assert_snapshot!(out, @r#"
        func @f(%x: tensor<4xu8>, %i: tensor<4xi32>) -> (tensor<4xf32>, tensor<4xi32>) {
          %a = graph.typecvt(%x) {dtype = f16} : (tensor<4xu8>) -> tensor<4xf16>
          %b = graph.elemwise(%a, %a) {mode = "mul"} : (tensor<4xf16>, tensor<4xf16>) -> tensor<4xf16>
          %j = graph.elemwise(%i, %i) {mode = "add"} : (tensor<4xi32>, tensor<4xi32>) -> tensor<4xi32>
          %0 = graph.typecvt(%b) {dtype = f32} : (tensor<4xf16>) -> tensor<4xf32>
          return(%0, %j)
        }
        "#);
    }

    #[test]
    fn nothing_f32_is_unchanged() {
        let src = r#"func @f(%x: tensor<4xf16>) -> tensor<4xf16> {
  %a = graph.elemwise(%x) {mode = "relu"} : (tensor<4xf16>) -> tensor<4xf16>
  return(%a)
}"#;
        let out = run("f16-io-comp", src);
        assert_eq!(out.trim(), src.trim());
    }
}
