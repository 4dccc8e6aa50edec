//! Lowering of quantised elementwise ops and conversions — `graph.elemwise`
//! and `graph.typecvt` on `qs8` / `qu8` / `qs32` tensors — and the
//! requantisation helpers the quantised convolution ([`super::conv`]) shares.
//!
//! The loops dialect has no quantised arithmetic: a quantised buffer holds its
//! storage integers (`qs8` → `i8`, `qu8` → `u8`, `qs32` → `i32`), a load gives
//! a scalar of the quantised type that the interpreter and the code generator
//! treat as that integer, and `loops.cast` converts it to `i32` / `f32`
//! (integer → integer casts saturate, float → integer casts truncate toward
//! zero and saturate). Vectors of quantised elements do not exist in the
//! dialect (`vector_elem_ok`), so every quantised buffer is read and written
//! one scalar at a time; arithmetic on the widened values may be vectors.
//!
//! Semantics follow the reference evaluator exactly where the arithmetic
//! allows: the reference dequantises (`real = scale · (q - zero_point)`),
//! computes in `f64` and requantises with `round(real / scale) + zero_point`
//! (half away from zero, saturating). Here:
//!
//! - **elementwise** (add sub mul max min relu fuse_add_relu; every operand
//!   has the same quantised type): the op runs on the integers `q - zp`,
//!   which is exact (`mul` multiplies the scale as well), and the result is
//!   scaled once by the constant `M = s_in / s_out` (`s_in² / s_out` for
//!   mul) in `f32`, rounded half away from zero and saturated. When `M = 1`
//!   and the zero points agree (a quantised op keeping its type) nothing is
//!   rounded and the result is exact, computed in `i32` (`i64` for `qs32`).
//!   Otherwise the result can differ from the reference by one step only when
//!   the exact value lies within about `2⁻²³` (relative) of a `.5` tie —
//!   `M` rounded to `f32` and one `f32` product, against the reference's
//!   `f64`; exact ties with power-of-two scale ratios are computed exactly.
//! - **typecvt**: quantised → float is `(q - zp) · s` in `f32`, a single
//!   rounding of the exact product, so it equals the reference for `f32`
//!   results (`qs32` values beyond 2²⁴ lose bits in the `i32 → f32` step;
//!   `f16`/`bf16` results round twice). float → quantised divides by the
//!   scale in `f32` (one correctly rounded quotient) and rounds half away
//!   from zero: one step off only when the `f32` quotient lands on the other
//!   side of a `.5` tie than the exact one. Quantised → quantised with the
//!   same scale is an exact integer shift of the zero point; otherwise it is
//!   `(q - zp) · M` as for elementwise ops. Quantised → plain integer truncates
//!   the `f32` real value; quantised → `bool` is `q != zp`.
//!
//! Refused with an error: modes the reference does not define on quantised
//! types, operands of different quantised types, quantised ↔ `i64`
//! conversions (not representable through `f32`).

use super::{KernelCx, LResult, load_broadcast, map_output};
use strata_dialects::graph::elemwise::{ElemwiseOp, Mode};
use strata_dialects::loops::{BinOp, CmpPred, KernelBuilder, UnOp, ValueKind};
use strata_ir::{ElemType, OpId, ValueId};

/// The scale and zero point of a quantised element type (`None` otherwise).
pub fn qparams(e: ElemType) -> Option<(f64, f64)> {
    match e {
        ElemType::QS8(s) | ElemType::QS32(s) => Some((f64::from(s.get()), 0.0)),
        ElemType::QU8(s, z) => Some((f64::from(s.get()), f64::from(z))),
        _ => None,
    }
}

/// Whether `op` (a `graph.elemwise` or `graph.typecvt`) has a quantised operand or result.
pub fn is_quantised(cx: &KernelCx<'_, '_, '_>, op: OpId) -> bool {
    let data = cx.k.ctx().op(op);
    data.operands.iter().chain(&data.results).any(|&v| cx.tensor(v).elem.is_quantized())
}

/// Rounds `t` (an `f32` scalar or vector holding a value in units of the
/// output scale) half away from zero, adds the zero point of `out` and
/// converts with saturation: one scalar of `out` for a scalar `t`, one per
/// lane for a vector.
pub fn quantise(k: &mut KernelBuilder<'_, '_>, t: ValueId, out: ElemType) -> Vec<ValueId> {
    let (_, zp) = qparams(out).unwrap_or((1.0, 0.0));
    let ty = k.type_of(t);
    let mut r = k.unary(UnOp::Round, t);
    if zp != 0.0 {
        let z = k.constant(ty, zp);
        r = k.add(r, z);
    }
    let out_ty = k.scalar_ty(out);
    match ValueKind::of(k.ctx(), ty) {
        ValueKind::Vector(v) => {
            // f32 → i32 saturates to the i32 range, i32 → the storage type to its own.
            let iv = k.vector_ty(ElemType::I32, v.lanes);
            let i = k.cast(r, iv);
            (0..v.lanes)
                .map(|l| {
                    let s = k.extract(i, l);
                    k.cast(s, out_ty)
                })
                .collect()
        }
        _ => vec![k.cast(r, out_ty)],
    }
}

/// `f32` value `v` multiplied by constant `m` (left alone when `m` is 1).
fn scale_by(k: &mut KernelBuilder<'_, '_>, v: ValueId, m: f64) -> ValueId {
    if m == 1.0 {
        return v;
    }
    let ty = k.type_of(v);
    let c = k.constant(ty, m);
    k.mul(v, c)
}

/// The integer type the exact (same-scale) paths compute in.
fn wide_int(e: ElemType) -> ElemType {
    if e.size_bytes() >= 4 { ElemType::I64 } else { ElemType::I32 }
}

// ---------------------------------------------------------------- elementwise

/// Lowers a quantised `graph.elemwise` (see the module docs).
pub fn lower_elemwise(cx: &mut KernelCx<'_, '_, '_>, op: OpId) -> LResult<()> {
    let e = ElemwiseOp(op);
    let mode = Mode::parse(e.mode(cx.k.ctx())).map_err(|m| cx.err(op, m))?;
    let out = cx.k.ctx().op(op).results[0];
    let out_elem = cx.tensor(out).elem;
    let ins = e.inputs(cx.k.ctx()).to_vec();
    let Some(&first) = ins.first() else {
        return Err(cx.err(op, "has no operands"));
    };
    let in_elem = cx.tensor(first).elem;
    if ins.iter().any(|&v| cx.tensor(v).elem != in_elem) {
        return Err(cx.err(op, "quantised operands of different element types are not lowered"));
    }
    let (Some((s_in, zp_in)), Some((s_out, zp_out))) = (qparams(in_elem), qparams(out_elem)) else {
        return Err(
            cx.err(op, format!("mixing quantised and other element types ({in_elem} -> {out_elem}) is not lowered"))
        );
    };
    let arity = match mode {
        Mode::Relu => 1,
        Mode::Add | Mode::Sub | Mode::Mul | Mode::Max | Mode::Min | Mode::FuseAddRelu => 2,
        other => {
            return Err(cx.err(op, format!("mode {other:?} is not defined on quantised types ({in_elem})")));
        }
    };
    if ins.len() != arity || cx.inputs.len() != arity {
        return Err(cx.err(op, format!("mode {mode:?} takes {arity} operands, got {}", ins.len())));
    }
    let m = if mode == Mode::Mul { s_in * s_in / s_out } else { s_in / s_out };
    // Same scale and zero point (and not mul): the integers themselves are the result.
    let exact = m == 1.0 && zp_in == zp_out;
    let shape = cx.shape(out);
    let operands: Vec<(ValueId, Vec<usize>)> =
        ins.iter().zip(cx.inputs.clone()).map(|(&v, b)| (b, cx.shape(v))).collect();
    map_output(cx, &shape, None, |k, idx, _| {
        let work = if exact { wide_int(in_elem) } else { ElemType::F32 };
        let wty = k.scalar_ty(work);
        let zp = k.constant(wty, zp_in);
        let args: Vec<ValueId> = operands
            .iter()
            .map(|(b, s)| {
                let q = load_broadcast(k, *b, s, &shape, idx, None);
                let w = k.cast(q, wty);
                if zp_in == 0.0 { w } else { k.sub(w, zp) }
            })
            .collect();
        let zero = k.constant(wty, 0.0);
        let v = match mode {
            Mode::Relu => k.max(args[0], zero),
            Mode::Add => k.add(args[0], args[1]),
            Mode::Sub => k.sub(args[0], args[1]),
            Mode::Mul => k.mul(args[0], args[1]),
            Mode::Max => k.max(args[0], args[1]),
            Mode::Min => k.min(args[0], args[1]),
            _ => {
                let s = k.add(args[0], args[1]);
                k.max(s, zero)
            }
        };
        if exact {
            let v = if zp_out == 0.0 { v } else { k.add(v, zp) };
            let oty = k.scalar_ty(out_elem);
            return Ok(k.cast(v, oty));
        }
        let t = scale_by(k, v, m);
        Ok(quantise(k, t, out_elem)[0])
    })
}

// ---------------------------------------------------------------- typecvt

/// Lowers a `graph.typecvt` with a quantised operand or result (see the module docs).
pub fn lower_typecvt(cx: &mut KernelCx<'_, '_, '_>, op: OpId) -> LResult<()> {
    let x = cx.operand(op, 0);
    let out = cx.k.ctx().op(op).results[0];
    let (from, to) = (cx.tensor(x).elem, cx.tensor(out).elem);
    if from == ElemType::I64 || to == ElemType::I64 {
        return Err(cx.err(op, format!("typecvt {from} -> {to}: quantised <-> i64 conversions are not lowered")));
    }
    let shape = cx.shape(out);
    let input = cx.inputs[0];
    map_output(cx, &shape, None, |k, idx, _| {
        let q = k.load(input, idx);
        Ok(convert(k, q, from, to))
    })
}

/// Converts scalar `q` of `from` to `to` through real values, at least one of
/// them quantised (see the module docs).
fn convert(k: &mut KernelBuilder<'_, '_>, q: ValueId, from: ElemType, to: ElemType) -> ValueId {
    let f32t = k.scalar_ty(ElemType::F32);
    let to_ty = k.scalar_ty(to);
    match (qparams(from), qparams(to)) {
        (Some((s1, z1)), Some((s2, z2))) => {
            if s1 == s2 {
                // An exact shift of the zero point, saturated to the target.
                let wty = k.scalar_ty(ElemType::I64);
                let w = k.cast(q, wty);
                let w = if z2 != z1 { k.add_const(w, wty, z2 - z1) } else { w };
                return k.cast(w, to_ty);
            }
            let w = k.cast(q, f32t);
            let w = if z1 != 0.0 { k.add_const(w, f32t, -z1) } else { w };
            let t = scale_by(k, w, s1 / s2);
            quantise(k, t, to)[0]
        }
        (Some((s, z)), None) => {
            let w = k.cast(q, f32t);
            if to == ElemType::Bool {
                let zc = k.constant(f32t, z);
                return k.cmp(CmpPred::Ne, w, zc);
            }
            let w = if z != 0.0 { k.add_const(w, f32t, -z) } else { w };
            let real = scale_by(k, w, s);
            if to == ElemType::F32 { real } else { k.cast(real, to_ty) }
        }
        (None, Some((s, _))) => {
            let real = if from == ElemType::F32 { q } else { k.cast(q, f32t) };
            let sc = k.constant(f32t, s);
            let t = k.binary(BinOp::Div, real, sc);
            quantise(k, t, to)[0]
        }
        (None, None) => k.cast(q, to_ty),
    }
}

/// Adding a constant to a value of type `ty`.
trait AddConst {
    fn add_const(&mut self, v: ValueId, ty: strata_ir::Ty, c: f64) -> ValueId;
}

impl AddConst for KernelBuilder<'_, '_> {
    fn add_const(&mut self, v: ValueId, ty: strata_ir::Ty, c: f64) -> ValueId {
        let cv = self.constant(ty, c);
        self.add(v, cv)
    }
}

#[cfg(test)]
#[path = "quant_tests.rs"]
mod tests;
