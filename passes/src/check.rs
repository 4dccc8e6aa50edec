//! Numeric checking of passes (negative opt levels, `strata opt --check-each`).
//!
//! Before and after a pass, every function of the module is run by the
//! reference interpreter on the same seeded random inputs, and the outputs must
//! agree within a tolerance. Functions whose inputs are not all tensors fail the
//! check with a clear message rather than being skipped.

use strata_dialects::func::{functions, lookup_function};
use strata_dialects::interp;
use strata_ir::pass::Checker;
use strata_ir::{Context, Dim, ElemType, OpId, TensorData, TypeData};

/// Relative tolerance of the comparison.
pub const RTOL: f64 = 1e-4;
/// Absolute tolerance of the comparison.
pub const ATOL: f64 = 1e-5;

/// Value chosen for every symbolic dimension in random inputs.
pub const SYMBOLIC_DIM_VALUE: usize = 2;

/// Seeded random inputs for every argument of function `name`.
pub fn random_inputs(ctx: &Context, module: OpId, name: &str, seed: u64) -> Result<Vec<TensorData>, String> {
    let f = lookup_function(ctx, module, name).ok_or_else(|| format!("no function @{name}"))?;
    let (inputs, _) = f.signature(ctx);
    inputs
        .iter()
        .enumerate()
        .map(|(i, &ty)| {
            let TypeData::Tensor(t) = ctx.ty(ty) else {
                return Err(format!("@{name} input #{i} is not a tensor; cannot make random data for it"));
            };
            let shape: Vec<usize> = t
                .shape
                .iter()
                .map(|d| match d {
                    Dim::Fixed(n) => usize::try_from(*n).unwrap_or(usize::MAX),
                    Dim::Sym(_) => SYMBOLIC_DIM_VALUE,
                })
                .collect();
            TensorData::random_uniform(t.elem, shape, -2.0, 2.0, seed.wrapping_add(i as u64))
                .map_err(|e| format!("@{name} input #{i}: {e}"))
        })
        .collect()
}

/// Compares two output lists; describes the first difference.
pub fn compare(expected: &[TensorData], actual: &[TensorData]) -> Result<(), String> {
    compare_by(expected, actual, TensorData::get_f64, |x, y| {
        let same = (x.is_nan() && y.is_nan()) || x == y || (x - y).abs() <= ATOL + RTOL * x.abs();
        (!same).then(String::new)
    })
}

/// Compares two output lists with MegEngine's AssertEqual measure: every
/// element must have `|e - a| / max(min(|e|, |a|), 1) <= max_err` (NaN matches
/// NaN). For passes that change precision, such as the f16 passes.
pub fn compare_within(expected: &[TensorData], actual: &[TensorData], max_err: f64) -> Result<(), String> {
    compare_by(expected, actual, TensorData::get_real, |x, y| {
        let err = (x - y).abs() / x.abs().min(y.abs()).max(1.0);
        let same = (x.is_nan() && y.is_nan()) || x == y || err <= max_err;
        (!same).then(|| format!(" (error {err:.3e} > {max_err:e})"))
    })
}

/// Compares element by element (values read with `get`); `differ(expected,
/// actual)` returns a note when they differ.
fn compare_by(
    expected: &[TensorData],
    actual: &[TensorData],
    get: fn(&TensorData, usize) -> f64,
    differ: impl Fn(f64, f64) -> Option<String>,
) -> Result<(), String> {
    if expected.len() != actual.len() {
        return Err(format!("{} outputs became {}", expected.len(), actual.len()));
    }
    for (k, (e, a)) in expected.iter().zip(actual).enumerate() {
        if e.elem() != a.elem() || e.shape() != a.shape() {
            return Err(format!("output #{k}: {}{:?} became {}{:?}", e.elem(), e.shape(), a.elem(), a.shape()));
        }
        for i in 0..e.len() {
            let (x, y) = (get(e, i), get(a, i));
            if let Some(note) = differ(x, y) {
                return Err(format!("output #{k} element {i}: expected {x}, got {y}{note}"));
            }
        }
    }
    Ok(())
}

/// The AssertEqual bound ([`compare_within`]) of a pass that introduces
/// half-precision computation, such as the f16 passes.
pub const HALF_TOLERANCE: f64 = 1e-2;

/// How many op results in `module` are f16 or bf16 tensors.
fn half_values(ctx: &Context, module: OpId) -> usize {
    let half = |v| ctx.value_tensor(v).is_some_and(|t| matches!(t.elem, ElemType::F16 | ElemType::BF16));
    ctx.walk(module).into_iter().flat_map(|op| ctx.op(op).results.clone()).filter(|&v| half(v)).count()
}

/// A checker comparing every function before and after each pass on random
/// inputs: with [`compare`], or with [`compare_within`]`(`[`HALF_TOLERANCE`]`)`
/// after a pass that added f16/bf16 values (f32 tolerances cannot hold there).
pub fn numeric_checker(seed: u64) -> Checker {
    let mut strict = checker_with(seed, compare);
    let mut half = numeric_checker_within(seed, HALF_TOLERANCE);
    Box::new(move |before: &Context, bm: OpId, after: &Context, am: OpId| {
        if half_values(after, am) > half_values(before, bm) {
            half(before, bm, after, am)
        } else {
            strict(before, bm, after, am)
        }
    })
}

/// [`numeric_checker`] with the looser [`compare_within`]`(max_err)`.
pub fn numeric_checker_within(seed: u64, max_err: f64) -> Checker {
    checker_with(seed, move |e, a| compare_within(e, a, max_err))
}

fn checker_with(seed: u64, compare: impl Fn(&[TensorData], &[TensorData]) -> Result<(), String> + 'static) -> Checker {
    Box::new(move |before: &Context, bm: OpId, after: &Context, am: OpId| {
        for f in functions(before, bm) {
            let name = f.name(before).to_string();
            let inputs = random_inputs(before, bm, &name, seed)?;
            let expected =
                interp::run(before, bm, &name, &inputs).map_err(|e| format!("reference run before the pass: {e}"))?;
            let actual = interp::run(after, am, &name, &inputs).map_err(|e| format!("run after the pass: {e}"))?;
            compare(&expected, &actual).map_err(|e| format!("@{name}: {e}"))?;
        }
        Ok(())
    })
}
