//! Runtime helper functions that generated code calls for what Cranelift has no instruction for.
//!
//! Transcendentals (`exp`, `log`, `tanh`, `pow`, `sin`, `cos`, `erf`) and rounding are scalar
//! `f32` functions with the C calling convention; a vector op calls them once per lane. The JIT
//! registers their addresses ([`helper_symbols`]); object files import them by name and the
//! aarch64 C harness links [`HELPERS_C_SOURCE`], which defines the same names on top of libm.
//!
//! Besides the `strata_*` helpers the table holds the single-precision libcalls Cranelift itself
//! emits when an instruction is not available (`fmaf` when `has_fma` is off, `ceilf`, `floorf`,
//! `truncf`, `nearbyintf` without SSE4.1), so JIT code never depends on the process happening to
//! have libm loaded.

use cranelift_codegen::ir::{AbiParam, Signature, types};
use cranelift_codegen::isa::CallConv;

/// One runtime helper: an `f32` function of one, two or three `f32` arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Helper {
    /// `strata_expf(x) = e^x`.
    Exp,
    /// `strata_logf(x) = ln x`.
    Log,
    /// `strata_tanhf(x)`.
    Tanh,
    /// `strata_powf(x, y) = x^y`.
    Pow,
    /// `strata_sinf(x)`.
    Sin,
    /// `strata_cosf(x)`.
    Cos,
    /// `strata_erff(x)`, the error function (absolute error below 1e-7 before rounding to f32).
    Erf,
    /// `strata_roundf(x)`: round half away from zero (C `roundf`; ONNX `Round` is half-even,
    /// which is Cranelift's native `nearest`).
    Round,
    /// `fmaf(a, b, c) = a*b+c` rounded once: Cranelift's libcall for `fma` without FMA hardware.
    Fma,
    /// `ceilf`: Cranelift's libcall for `ceil` without SSE4.1.
    Ceil,
    /// `floorf`: Cranelift's libcall for `floor` without SSE4.1.
    Floor,
    /// `truncf`: Cranelift's libcall for `trunc` without SSE4.1.
    Trunc,
    /// `nearbyintf` (half to even): Cranelift's libcall for `nearest` without SSE4.1.
    Nearest,
}

impl Helper {
    /// Every helper, in a fixed order.
    pub const ALL: [Helper; 13] = [
        Helper::Exp,
        Helper::Log,
        Helper::Tanh,
        Helper::Pow,
        Helper::Sin,
        Helper::Cos,
        Helper::Erf,
        Helper::Round,
        Helper::Fma,
        Helper::Ceil,
        Helper::Floor,
        Helper::Trunc,
        Helper::Nearest,
    ];

    /// The symbol generated code imports.
    pub fn name(self) -> &'static str {
        match self {
            Helper::Exp => "strata_expf",
            Helper::Log => "strata_logf",
            Helper::Tanh => "strata_tanhf",
            Helper::Pow => "strata_powf",
            Helper::Sin => "strata_sinf",
            Helper::Cos => "strata_cosf",
            Helper::Erf => "strata_erff",
            Helper::Round => "strata_roundf",
            Helper::Fma => "fmaf",
            Helper::Ceil => "ceilf",
            Helper::Floor => "floorf",
            Helper::Trunc => "truncf",
            Helper::Nearest => "nearbyintf",
        }
    }

    /// The helper with symbol `name`.
    pub fn from_name(name: &str) -> Option<Helper> {
        Helper::ALL.into_iter().find(|h| h.name() == name)
    }

    /// Number of `f32` parameters (the result is one `f32`).
    pub fn arity(self) -> usize {
        match self.function() {
            HelperFn::Unary(_) => 1,
            HelperFn::Binary(_) => 2,
            HelperFn::Ternary(_) => 3,
        }
    }

    /// The Cranelift signature `(f32, ...) -> f32` in calling convention `call_conv` (use the
    /// ISA's `default_call_conv()`, which is the C convention of the target).
    pub fn signature(self, call_conv: CallConv) -> Signature {
        let mut sig = Signature::new(call_conv);
        sig.params.extend(std::iter::repeat_n(AbiParam::new(types::F32), self.arity()));
        sig.returns.push(AbiParam::new(types::F32));
        sig
    }

    /// Address of the Rust implementation, for the JIT's symbol table.
    pub fn address(self) -> *const u8 {
        match self.function() {
            HelperFn::Unary(f) => f as *const u8,
            HelperFn::Binary(f) => f as *const u8,
            HelperFn::Ternary(f) => f as *const u8,
        }
    }

    /// Evaluates the helper on `args` (which must have [`Helper::arity`] elements); the same code
    /// JIT'd kernels call, for reference evaluators and tests.
    ///
    /// # Panics
    /// If `args.len()` is not the arity.
    pub fn eval(self, args: &[f32]) -> f32 {
        match (self.function(), args) {
            (HelperFn::Unary(f), &[x]) => f(x),
            (HelperFn::Binary(f), &[x, y]) => f(x, y),
            (HelperFn::Ternary(f), &[x, y, z]) => f(x, y, z),
            _ => panic!("{} takes {} arguments, got {}", self.name(), self.arity(), args.len()),
        }
    }

    fn function(self) -> HelperFn {
        match self {
            Helper::Exp => HelperFn::Unary(strata_expf),
            Helper::Log => HelperFn::Unary(strata_logf),
            Helper::Tanh => HelperFn::Unary(strata_tanhf),
            Helper::Pow => HelperFn::Binary(strata_powf),
            Helper::Sin => HelperFn::Unary(strata_sinf),
            Helper::Cos => HelperFn::Unary(strata_cosf),
            Helper::Erf => HelperFn::Unary(strata_erff),
            Helper::Round => HelperFn::Unary(strata_roundf),
            Helper::Fma => HelperFn::Ternary(libcall_fmaf),
            Helper::Ceil => HelperFn::Unary(libcall_ceilf),
            Helper::Floor => HelperFn::Unary(libcall_floorf),
            Helper::Trunc => HelperFn::Unary(libcall_truncf),
            Helper::Nearest => HelperFn::Unary(libcall_nearbyintf),
        }
    }
}

#[derive(Clone, Copy)]
enum HelperFn {
    Unary(extern "C" fn(f32) -> f32),
    Binary(extern "C" fn(f32, f32) -> f32),
    Ternary(extern "C" fn(f32, f32, f32) -> f32),
}

/// `(symbol, address)` of every helper, in [`Helper::ALL`] order, for `JITBuilder::symbol`.
pub fn helper_symbols() -> Vec<(&'static str, *const u8)> {
    Helper::ALL.into_iter().map(|h| (h.name(), h.address())).collect()
}

/// The number of `f32` parameters of helper `name` (its result is one `f32`), or `None` if no
/// helper has that name.
pub fn helper_signature(name: &str) -> Option<usize> {
    Helper::from_name(name).map(Helper::arity)
}

/// The double-precision libcalls Cranelift may emit (`fma`, `ceil`, …), registered in the JIT
/// next to the helpers so `f64` code without FMA/SSE4.1 links too.
pub(crate) fn f64_libcall_symbols() -> Vec<(&'static str, *const u8)> {
    let unary: [(&'static str, extern "C" fn(f64) -> f64); 4] =
        [("ceil", libcall_ceil), ("floor", libcall_floor), ("trunc", libcall_trunc), ("nearbyint", libcall_nearbyint)];
    let mut out: Vec<(&'static str, *const u8)> = unary.into_iter().map(|(n, f)| (n, f as *const u8)).collect();
    out.push(("fma", libcall_fma as extern "C" fn(f64, f64, f64) -> f64 as *const u8));
    out
}

/// `e^x`.
pub extern "C" fn strata_expf(x: f32) -> f32 {
    x.exp()
}

/// Natural logarithm.
pub extern "C" fn strata_logf(x: f32) -> f32 {
    x.ln()
}

/// Hyperbolic tangent.
pub extern "C" fn strata_tanhf(x: f32) -> f32 {
    x.tanh()
}

/// `x^y` (C `powf` semantics).
pub extern "C" fn strata_powf(x: f32, y: f32) -> f32 {
    x.powf(y)
}

/// Sine.
pub extern "C" fn strata_sinf(x: f32) -> f32 {
    x.sin()
}

/// Cosine.
pub extern "C" fn strata_cosf(x: f32) -> f32 {
    x.cos()
}

/// The error function, computed in `f64` (see [`erf_f64`]) and rounded to `f32`.
pub extern "C" fn strata_erff(x: f32) -> f32 {
    erf_f64(f64::from(x)) as f32
}

/// Round half away from zero (C `roundf`).
pub extern "C" fn strata_roundf(x: f32) -> f32 {
    x.round()
}

extern "C" fn libcall_fmaf(a: f32, b: f32, c: f32) -> f32 {
    a.mul_add(b, c)
}
extern "C" fn libcall_ceilf(x: f32) -> f32 {
    x.ceil()
}
extern "C" fn libcall_floorf(x: f32) -> f32 {
    x.floor()
}
extern "C" fn libcall_truncf(x: f32) -> f32 {
    x.trunc()
}
extern "C" fn libcall_nearbyintf(x: f32) -> f32 {
    x.round_ties_even()
}
extern "C" fn libcall_fma(a: f64, b: f64, c: f64) -> f64 {
    a.mul_add(b, c)
}
extern "C" fn libcall_ceil(x: f64) -> f64 {
    x.ceil()
}
extern "C" fn libcall_floor(x: f64) -> f64 {
    x.floor()
}
extern "C" fn libcall_trunc(x: f64) -> f64 {
    x.trunc()
}
extern "C" fn libcall_nearbyint(x: f64) -> f64 {
    x.round_ties_even()
}

/// The error function in double precision (one implementation, shared with
/// the loops interpreter so compiled code and the oracle agree bit for bit).
pub use strata_dialects::loops::interp::erf_f64;

/// C source defining the `strata_*` helpers on top of libm, for linking objects produced by
/// [`crate::object::ObjectBuilder`] into a C program (`-lm`). The libcall names (`fmaf`, `ceilf`,
/// …) come from libm itself.
pub const HELPERS_C_SOURCE: &str = r#"/* strata runtime helpers for AOT objects (generated by strata-codegen). */
#include <math.h>

float strata_expf(float x) { return expf(x); }
float strata_logf(float x) { return logf(x); }
float strata_tanhf(float x) { return tanhf(x); }
float strata_powf(float x, float y) { return powf(x, y); }
float strata_sinf(float x) { return sinf(x); }
float strata_cosf(float x) { return cosf(x); }
float strata_erff(float x) { return erff(x); }
float strata_roundf(float x) { return roundf(x); }
"#;

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference values from CPython's `math.erf` (correctly rounded double precision).
    const ERF_REFERENCE: &[(f64, f64)] = &[
        (0.0, 0.0),
        (1e-8, 1.1283791670955126e-08),
        (0.1, 0.1124629160182849),
        (0.25, 0.2763263901682369),
        (0.5, 0.5204998778130465),
        (0.75, 0.7111556336535151),
        (1.0, 0.8427007929497149),
        (1.5, 0.9661051464753108),
        (2.0, 0.9953222650189527),
        (2.4999, 0.9995928300996666),
        (2.5, 0.999593047982555),
        (3.0, 0.9999779095030014),
        (3.5, 0.9999992569016276),
        (4.0, 0.9999999845827421),
        (5.0, 0.9999999999984626),
        (-0.3, -0.3286267594591274),
        (-1.7, -0.9837904585907745),
        (-2.9, -0.9999589021219005),
    ];

    #[test]
    fn erf_matches_reference_values() {
        for &(x, want) in ERF_REFERENCE {
            let got = erf_f64(x);
            assert!((got - want).abs() < 1e-14, "erf({x}) = {got}, want {want}");
            let got32 = strata_erff(x as f32);
            let want32 = erf_f64(f64::from(x as f32));
            assert!((f64::from(got32) - want32).abs() < 1e-7, "erff({x})");
        }
    }

    #[test]
    fn erf_is_odd_monotone_and_bounded() {
        let mut prev = -1.0f64;
        let mut x = -7.0f64;
        while x <= 7.0 {
            let y = erf_f64(x);
            assert!((-1.0..=1.0).contains(&y), "erf({x}) = {y}");
            assert!(y >= prev - 1e-15, "not monotone at {x}");
            assert_eq!(erf_f64(-x), -y);
            prev = y;
            x += 0.001;
        }
        assert!(erf_f64(f64::NAN).is_nan());
        assert_eq!(erf_f64(f64::INFINITY), 1.0);
        assert_eq!(erf_f64(f64::NEG_INFINITY), -1.0);
    }

    #[test]
    fn erf_branches_agree_where_they_meet() {
        // Both methods valid around 2.5: compare the continued fraction against the series.
        let series = |x: f64| {
            let two_x2 = 2.0 * x * x;
            let (mut term, mut sum) = (x, x);
            for n in 1..400 {
                term *= two_x2 / (2.0 * f64::from(n) + 1.0);
                sum += term;
            }
            std::f64::consts::FRAC_2_SQRT_PI * (-x * x).exp() * sum
        };
        for i in 0..200 {
            let x = 2.5 + f64::from(i) * 0.0175;
            assert!((erf_f64(x) - series(x)).abs() < 1e-13, "x = {x}");
        }
    }

    #[test]
    fn table_is_consistent() {
        let syms = helper_symbols();
        assert_eq!(syms.len(), Helper::ALL.len());
        for (name, ptr) in syms {
            assert!(!ptr.is_null());
            let h = Helper::from_name(name).unwrap();
            assert_eq!(helper_signature(name), Some(h.arity()));
            let sig = h.signature(CallConv::SystemV);
            assert_eq!(sig.params.len(), h.arity());
            assert_eq!(sig.returns.len(), 1);
        }
        assert_eq!(helper_signature("strata_powf"), Some(2));
        assert_eq!(helper_signature("fmaf"), Some(3));
        assert_eq!(helper_signature("strata_erff"), Some(1));
        assert_eq!(helper_signature("sqrtf"), None);
        for name in [
            "strata_expf",
            "strata_logf",
            "strata_tanhf",
            "strata_powf",
            "strata_sinf",
            "strata_cosf",
            "strata_erff",
            "strata_roundf",
        ] {
            assert!(HELPERS_C_SOURCE.contains(&format!(" {name}(")), "{name} missing from the C helpers");
        }
        assert_eq!(f64_libcall_symbols().len(), 5);
    }

    #[test]
    fn helpers_compute_what_they_say() {
        assert_eq!(Helper::Exp.eval(&[0.0]), 1.0);
        assert_eq!(Helper::Log.eval(&[1.0]), 0.0);
        assert_eq!(Helper::Pow.eval(&[2.0, 10.0]), 1024.0);
        assert_eq!(Helper::Round.eval(&[2.5]), 3.0);
        assert_eq!(Helper::Round.eval(&[-2.5]), -3.0);
        assert_eq!(Helper::Nearest.eval(&[2.5]), 2.0);
        assert_eq!(Helper::Fma.eval(&[2.0, 3.0, 1.0]), 7.0);
        assert_eq!(Helper::Tanh.eval(&[0.0]), 0.0);
        assert!((Helper::Sin.eval(&[1.0]) - 1f32.sin()).abs() < 1e-7);
        assert!((Helper::Cos.eval(&[1.0]) - 1f32.cos()).abs() < 1e-7);
    }
}
