//! `trace()` tests, ported in spirit from MegEngine's `test_tracing.py`.

#![allow(clippy::cloned_ref_to_slice_refs)] // `&[x.clone()]` reads better in tests

use std::cell::Cell;
use std::collections::BTreeMap;
use std::rc::Rc;
use strata::{Error, Tensor, TraceCallError, TraceErrorReason, TraceOptions, trace};

type R<T> = Result<T, Error>;

fn t(values: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_vec(values.to_vec(), shape).unwrap()
}

fn reason<E: std::fmt::Debug>(e: TraceCallError<E>) -> (TraceErrorReason, Option<usize>, String) {
    match e {
        TraceCallError::Trace(t) => {
            let text = t.to_string();
            (t.reason, t.op_index, text)
        }
        other => panic!("expected a trace error, got {other:?}"),
    }
}

#[test]
fn record_compile_replay_matches_eager() {
    for symbolic in [false, true] {
        let w = t(&[1.0, -2.0, 3.0], &[1, 3]);
        let f = |args: &[Tensor]| -> R<Tensor> { args[0].mul(&w)?.add_scalar(1.0)?.relu() };
        let mut traced = trace(f, TraceOptions { symbolic, ..TraceOptions::default() }).unwrap();
        for call in 0..4 {
            let x = Tensor::uniform(&[2, 3], -2.0, 2.0, call).unwrap();
            let want = f(&[x.clone()]).unwrap().to_vec().unwrap();
            let got = traced.call(&[x]).unwrap();
            assert_eq!(got.to_vec().unwrap(), want, "symbolic={symbolic} call {call}");
        }
        assert!(traced.is_compiled());
        assert_eq!(traced.calls(), 4);
    }
}

#[test]
fn outputs_as_tuple_vec_and_map() {
    let mut tup =
        trace(|a: &[Tensor]| -> R<(Tensor, Tensor)> { Ok((a[0].relu()?, a[0].neg()?)) }, TraceOptions::default())
            .unwrap();
    let mut vec =
        trace(|a: &[Tensor]| -> R<Vec<Tensor>> { Ok(vec![a[0].abs()?, a[0].clone()]) }, TraceOptions::default())
            .unwrap();
    let mut map = trace(
        |a: &[Tensor]| -> R<BTreeMap<String, Tensor>> {
            Ok(BTreeMap::from([("b".to_string(), a[0].exp()?), ("a".to_string(), a[0].neg()?)]))
        },
        TraceOptions::default(),
    )
    .unwrap();
    for _ in 0..3 {
        let x = t(&[-1.0, 2.0], &[2]);
        let (p, n) = tup.call(&[x.clone()]).unwrap();
        assert_eq!((p.to_vec().unwrap(), n.to_vec().unwrap()), (vec![0.0, 2.0], vec![1.0, -2.0]));
        let v = vec.call(&[x.clone()]).unwrap();
        assert_eq!(v[0].to_vec().unwrap(), vec![1.0, 2.0]);
        assert_eq!(v[1].to_vec().unwrap(), vec![-1.0, 2.0]);
        let m = map.call(&[x]).unwrap();
        assert_eq!(m["a"].to_vec().unwrap(), vec![1.0, -2.0]);
    }
}

#[test]
fn operator_mismatch_reports_index_and_location() {
    let flip = Rc::new(Cell::new(false));
    let f2 = flip.clone();
    let mut traced = trace(
        move |a: &[Tensor]| -> R<Tensor> {
            let y = a[0].neg()?;
            if f2.get() { y.sigmoid() } else { y.relu() }
        },
        TraceOptions::default(),
    )
    .unwrap();
    let x = t(&[1.0], &[1]);
    traced.call(&[x.clone()]).unwrap();
    traced.call(&[x.clone()]).unwrap();
    flip.set(true);
    let (r, idx, text) = reason(traced.call(&[x]).unwrap_err());
    assert_eq!(r, TraceErrorReason::OperatorMismatch);
    assert_eq!(idx, Some(1));
    assert!(text.contains("trace error because operator mismatch at op #1"), "{text}");
    assert!(text.contains("mode = \"relu\"") && text.contains("mode = \"sigmoid\""), "{text}");
    assert!(text.contains("tests/trace.rs:"), "{text}");
}

#[test]
fn constants_are_checked() {
    let k = Rc::new(Cell::new(1.0));
    let k2 = k.clone();
    let mut traced =
        trace(move |a: &[Tensor]| -> R<Tensor> { a[0].add_scalar(k2.get()) }, TraceOptions::default()).unwrap();
    let x = t(&[1.0], &[1]);
    traced.call(&[x.clone()]).unwrap();
    assert_eq!(traced.call(&[x.clone()]).unwrap().to_vec().unwrap(), vec![2.0]);
    k.set(5.0);
    let (r, idx, _) = reason(traced.call(&[x]).unwrap_err());
    assert_eq!((r, idx), (TraceErrorReason::TensorsNotEqual, Some(0)));
}

#[test]
fn capture_as_const_checks_captured_values() {
    let w = Rc::new(std::cell::RefCell::new(t(&[2.0], &[1])));
    let w2 = w.clone();
    let opts = TraceOptions { capture_as_const: true, ..TraceOptions::default() };
    let mut traced = trace(move |a: &[Tensor]| -> R<Tensor> { a[0].mul(&w2.borrow()) }, opts).unwrap();
    let x = t(&[3.0], &[1]);
    assert_eq!(traced.call(&[x.clone()]).unwrap().to_vec().unwrap(), vec![6.0]);
    assert_eq!(traced.call(&[x.clone()]).unwrap().to_vec().unwrap(), vec![6.0]);
    let ir = traced.compiled_ir(&Default::default()).unwrap();
    assert!(ir.contains("graph.param"), "{ir}");
    *w.borrow_mut() = t(&[4.0], &[1]);
    let (r, _, _) = reason(traced.call(&[x]).unwrap_err());
    assert_eq!(r, TraceErrorReason::TensorsNotEqual);
}

#[test]
fn captured_tensors_are_inputs_without_capture_as_const() {
    let w = Rc::new(std::cell::RefCell::new(t(&[2.0], &[1])));
    let w2 = w.clone();
    let mut traced =
        trace(move |a: &[Tensor]| -> R<Tensor> { a[0].mul(&w2.borrow()) }, TraceOptions::default()).unwrap();
    let x = t(&[3.0], &[1]);
    traced.call(&[x.clone()]).unwrap();
    traced.call(&[x.clone()]).unwrap();
    *w.borrow_mut() = t(&[4.0], &[1]);
    assert_eq!(traced.call(&[x]).unwrap().to_vec().unwrap(), vec![12.0]);
}

#[test]
fn record_only_never_executes() {
    let opts = TraceOptions { record_only: true, ..TraceOptions::default() };
    let mut traced = trace(|a: &[Tensor]| -> R<Tensor> { a[0].relu() }, opts).unwrap();
    let y = traced.call(&[t(&[1.0, -1.0], &[2])]).unwrap();
    assert!(!y.has_data());
    assert!(matches!(y.to_vec(), Err(Error::NoData { .. })));
    let ir = traced.recorded_ir(&Default::default()).unwrap();
    assert!(ir.contains("mode = \"relu\""), "{ir}");
    let err = traced.call(&[t(&[1.0, -1.0], &[2])]).unwrap_err();
    assert!(err.to_string().contains("record_only"), "{err}");
}

#[test]
fn premature_end_and_too_many_ops() {
    let n = Rc::new(Cell::new(2));
    let n2 = n.clone();
    let mut traced = trace(
        move |a: &[Tensor]| -> R<Tensor> {
            let mut y = a[0].clone();
            for _ in 0..n2.get() {
                y = y.neg()?;
            }
            Ok(y)
        },
        TraceOptions::default(),
    )
    .unwrap();
    let x = t(&[1.0], &[1]);
    traced.call(&[x.clone()]).unwrap();
    traced.call(&[x.clone()]).unwrap();
    n.set(1);
    let (r, idx, text) = reason(traced.call(&[x.clone()]).unwrap_err());
    assert_eq!((r, idx), (TraceErrorReason::PrematureEnd, Some(1)), "{text}");
    assert!(text.contains("mismature end"));
    n.set(3);
    let (r, idx, _) = reason(traced.call(&[x]).unwrap_err());
    assert_eq!((r, idx), (TraceErrorReason::TooManyOps, Some(2)));
}

#[test]
fn data_flow_changes_are_detected() {
    let mode = Rc::new(Cell::new(0));
    let m2 = mode.clone();
    let outside = t(&[5.0], &[1]);
    let mut traced = trace(
        move |a: &[Tensor]| -> R<Tensor> {
            let p = a[0].neg()?;
            let q = a[0].abs()?;
            match m2.get() {
                0 => p.add(&q),
                1 => q.add(&p),
                2 => outside.add(&q),
                _ => p.add(&p),
            }
        },
        TraceOptions::default(),
    )
    .unwrap();
    let x = t(&[1.0], &[1]);
    traced.call(&[x.clone()]).unwrap();
    traced.call(&[x.clone()]).unwrap();
    mode.set(1);
    let (r, idx, _) = reason(traced.call(&[x.clone()]).unwrap_err());
    assert_eq!((r, idx), (TraceErrorReason::InputIdMismatch, Some(2)));
    mode.set(2);
    let (r, idx, _) = reason(traced.call(&[x.clone()]).unwrap_err());
    assert_eq!((r, idx), (TraceErrorReason::ExpectInternalGotExternal, Some(2)));
    mode.set(3);
    let (r, idx, _) = reason(traced.call(&[x]).unwrap_err());
    assert_eq!((r, idx), (TraceErrorReason::InputIdMismatch, Some(2)));
}

#[test]
fn external_replaced_by_internal_is_detected() {
    let swap = Rc::new(Cell::new(false));
    let s2 = swap.clone();
    let w = t(&[2.0], &[1]);
    let mut traced = trace(
        move |a: &[Tensor]| -> R<Tensor> {
            let p = a[0].neg()?;
            let other = if s2.get() { p.clone() } else { w.clone() };
            p.mul(&other)
        },
        TraceOptions::default(),
    )
    .unwrap();
    let x = t(&[1.0], &[1]);
    traced.call(&[x.clone()]).unwrap();
    traced.call(&[x.clone()]).unwrap();
    swap.set(true);
    let (r, idx, _) = reason(traced.call(&[x]).unwrap_err());
    assert_eq!((r, idx), (TraceErrorReason::ExpectExternalGotInternal, Some(1)));
}

#[test]
fn argument_checks() {
    let mut traced = trace(|a: &[Tensor]| -> R<Tensor> { a[0].relu() }, TraceOptions::default()).unwrap();
    traced.call(&[t(&[1.0, 2.0], &[1, 2])]).unwrap();
    traced.call(&[t(&[1.0, 2.0], &[1, 2])]).unwrap();
    let ints = Tensor::from_reals(&[1.0, 2.0], &[1, 2], strata::ElemType::I32).unwrap();
    assert!(matches!(reason(traced.call(&[ints]).unwrap_err()).0, TraceErrorReason::DtypeMismatch { .. }));
    let two = [t(&[1.0], &[1, 1]), t(&[1.0], &[1, 1])];
    assert!(matches!(
        reason(traced.call(&two).unwrap_err()).0,
        TraceErrorReason::InputsSizeMismatch { recorded: 1, actual: 2 }
    ));
    let wide = t(&[1.0, 2.0, 3.0], &[1, 3]);
    assert!(matches!(reason(traced.call(&[wide]).unwrap_err()).0, TraceErrorReason::ShapeMismatch { .. }));
}

#[test]
fn symbolic_shape_allows_other_batch_sizes() {
    let f = |a: &[Tensor]| -> R<Tensor> { a[0].relu()?.flatten(1) };
    let mut poly = trace(f, TraceOptions::default()).unwrap();
    let mut fixed = trace(f, TraceOptions { symbolic_shape: false, ..TraceOptions::default() }).unwrap();
    for traced in [&mut poly, &mut fixed] {
        let x = Tensor::uniform(&[2, 3, 2], -1.0, 1.0, 1).unwrap();
        traced.call(&[x.clone()]).unwrap();
        traced.call(&[x]).unwrap();
    }
    let ir = poly.compiled_ir(&Default::default()).unwrap();
    assert!(ir.contains("tensor<?Nx3x2xf32>") && ir.contains("tensor<?Nx6xf32>"), "{ir}");
    let x5 = Tensor::uniform(&[5, 3, 2], -1.0, 1.0, 2).unwrap();
    let y = poly.call(&[x5.clone()]).unwrap();
    assert_eq!(y.shape(), &[5, 6]);
    assert_eq!(y.to_vec().unwrap(), f(&[x5.clone()]).unwrap().to_vec().unwrap());
    assert!(matches!(reason(fixed.call(&[x5]).unwrap_err()).0, TraceErrorReason::ShapeMismatch { .. }));
}

#[test]
fn value_reads_must_have_been_recorded() {
    let read = Rc::new(Cell::new(true));
    let r2 = read.clone();
    let mut traced = trace(
        move |a: &[Tensor]| -> R<Tensor> {
            let y = a[0].neg()?;
            if r2.get() {
                let v = y.to_vec()?;
                assert_eq!(v.len(), 1);
            }
            y.abs()
        },
        TraceOptions::default(),
    )
    .unwrap();
    let x = t(&[3.0], &[1]);
    traced.call(&[x.clone()]).unwrap();
    assert_eq!(traced.call(&[x.clone()]).unwrap().to_vec().unwrap(), vec![3.0]);
    read.set(false);
    traced.call(&[x.clone()]).unwrap();
    let later = Rc::new(Cell::new(false));
    let l2 = later.clone();
    let mut unread = trace(
        move |a: &[Tensor]| -> R<Tensor> {
            let y = a[0].neg()?;
            if l2.get() {
                y.to_vec()?;
            }
            Ok(y)
        },
        TraceOptions::default(),
    )
    .unwrap();
    unread.call(&[x.clone()]).unwrap();
    unread.call(&[x.clone()]).unwrap();
    later.set(true);
    let r = unread.call(&[x]);
    let (r, idx, _) = reason(r.unwrap_err());
    assert_eq!((r, idx), (TraceErrorReason::ValueUnreadable, None));
}

#[test]
fn output_changes_are_detected() {
    let which = Rc::new(Cell::new(0));
    let w2 = which.clone();
    let mut traced = trace(
        move |a: &[Tensor]| -> R<Tensor> {
            let p = a[0].neg()?;
            let q = p.abs()?;
            Ok(if w2.get() == 0 { q } else { p })
        },
        TraceOptions::default(),
    )
    .unwrap();
    let x = t(&[1.0], &[1]);
    traced.call(&[x.clone()]).unwrap();
    traced.call(&[x.clone()]).unwrap();
    which.set(1);
    let (r, idx, _) = reason(traced.call(&[x]).unwrap_err());
    assert_eq!((r, idx), (TraceErrorReason::OutputMismatch, None));
}

#[derive(Debug, PartialEq)]
struct MyError(&'static str);

impl From<Error> for MyError {
    fn from(_: Error) -> Self {
        MyError("strata")
    }
}

#[test]
fn user_errors_pass_through_unchanged() {
    let fail = Rc::new(Cell::new(false));
    let f2 = fail.clone();
    let mut traced = trace(
        move |a: &[Tensor]| -> Result<Tensor, MyError> {
            let y = a[0].relu()?;
            if f2.get() { Err(MyError("boom")) } else { Ok(y) }
        },
        TraceOptions::default(),
    )
    .unwrap();
    let x = t(&[1.0], &[1]);
    traced.call(&[x.clone()]).unwrap();
    fail.set(true);
    match traced.call(&[x.clone()]) {
        Err(TraceCallError::User(e)) => assert_eq!(e, MyError("boom")),
        other => panic!("{other:?}"),
    }
    fail.set(false);
    traced.call(&[x]).unwrap();
}

#[test]
fn op_errors_carry_the_caller_location() {
    let a = t(&[1.0, 2.0], &[2]);
    let b = t(&[1.0, 2.0, 3.0], &[3]);
    let e = a.add(&b).unwrap_err().to_string();
    assert!(e.contains("graph.elemwise at tests/trace.rs:") && e.contains("do not broadcast"), "{e}");
}

#[test]
fn unsupported_options_are_errors() {
    let f = |a: &[Tensor]| -> R<Tensor> { a[0].relu() };
    let sub = TraceOptions { sublinear_memory_config: Some(Default::default()), ..TraceOptions::default() };
    assert!(trace(f, sub).err().unwrap().to_string().contains("sublinear_memory_config"));
    let dtr = TraceOptions { dtr_config: Some(Default::default()), ..TraceOptions::default() };
    assert!(trace(f, dtr).err().unwrap().to_string().contains("dtr_config"));
    // The JIT fusion switches configure the JIT: with the interpreter they are an error.
    let jit = TraceOptions {
        graph_opt_config: Some(strata::GraphOptimizationConfig {
            jit_fuse_dimshuffle: Some(true),
            jit_fuse_reduce: None,
        }),
        engine: strata::Engine::Interp,
        ..TraceOptions::default()
    };
    assert!(trace(f, jit).err().unwrap().to_string().contains("jit_fuse_dimshuffle"));
    let off = TraceOptions {
        graph_opt_config: Some(strata::GraphOptimizationConfig {
            jit_fuse_dimshuffle: Some(false),
            jit_fuse_reduce: Some(false),
        }),
        ..TraceOptions::default()
    };
    assert!(trace(f, off).is_ok());
    assert!(trace(f, TraceOptions { opt_level: 9, ..TraceOptions::default() }).is_err());
}

#[test]
fn opt_levels_compile_and_agree() {
    for level in [-2, 0, 1, 2, 3] {
        let f = |a: &[Tensor]| -> R<Tensor> { a[0].mul_scalar(1.0)?.add_scalar(0.0)?.relu()?.relu() };
        let mut traced = trace(f, TraceOptions { opt_level: level, ..TraceOptions::default() }).unwrap();
        let x = t(&[-1.0, 2.0], &[2]);
        traced.call(&[x.clone()]).unwrap();
        assert_eq!(traced.call(&[x]).unwrap().to_vec().unwrap(), vec![0.0, 2.0]);
        let ir = traced.compiled_ir(&Default::default()).unwrap();
        let n = ir.matches("graph.").count();
        if level == 0 { assert!(n >= 5, "{ir}") } else { assert_eq!(n, 1, "level {level}: {ir}") }
    }
}

#[test]
fn profiling_collects_per_op_times() {
    let opts = TraceOptions { profiling: true, ..TraceOptions::default() };
    let mut traced = trace(|a: &[Tensor]| -> R<Tensor> { a[0].neg()?.exp() }, opts).unwrap();
    assert!(traced.get_profile().is_none());
    let x = t(&[1.0, 2.0], &[2]);
    for _ in 0..3 {
        traced.call(&[x.clone()]).unwrap();
    }
    let p = traced.get_profile().unwrap();
    assert_eq!(p.runs, 2);
    let json = p.to_json();
    // The JIT fuses neg and exp into one kernel, named after its root op.
    assert!(json.contains("\"schema\": \"strata.profile/1\"") && json.contains("_elemwise\""), "{json}");
    assert!(json.contains("\"engine\": \"jit\"") && p.ops.len() == 1, "{json}");
    assert!(p.ops.iter().all(|o| o.calls == 2));
    // The reference engine profiles graph ops.
    let opts = TraceOptions { profiling: true, engine: strata::Engine::Interp, ..TraceOptions::default() };
    let mut traced = trace(|a: &[Tensor]| -> R<Tensor> { a[0].neg()?.exp() }, opts).unwrap();
    for _ in 0..3 {
        traced.call(&[x.clone()]).unwrap();
    }
    let p = traced.get_profile().unwrap();
    let json = p.to_json();
    assert!(json.contains("\"op\": \"graph.elemwise\"") && json.contains("\"engine\": \"reference\""), "{json}");
    let chrome = p.to_chrome_trace();
    assert!(chrome.trim_start().starts_with('[') && chrome.contains("\"ph\": \"X\""), "{chrome}");
}

#[test]
fn exclude_from_trace_runs_eagerly_unrecorded() {
    let mut traced = trace(
        |a: &[Tensor]| -> R<Tensor> {
            let side = strata::exclude_from_trace(|| a[0].exp().and_then(|e| e.to_vec()))?;
            assert_eq!(side.len(), 1);
            a[0].neg()
        },
        TraceOptions::default(),
    )
    .unwrap();
    let x = t(&[0.0], &[1]);
    traced.call(&[x.clone()]).unwrap();
    let ir = traced.recorded_ir(&Default::default()).unwrap();
    assert!(!ir.contains("exp"), "{ir}");
}

#[test]
fn graph_opt_config_fuses_dimshuffles_and_reductions_in_the_jit() {
    // softmax-like: exp(x - max) over a transposed input, summed.
    let f = |a: &[Tensor]| -> R<Tensor> {
        let t = a[0].dimshuffle(&[0, 2, 1])?;
        let e = t.add(&a[1])?.exp()?;
        e.sum(2, false)
    };
    let x = Tensor::uniform(&[2, 5, 7], -1.0, 1.0, 3).unwrap();
    let y = Tensor::uniform(&[2, 7, 5], -1.0, 1.0, 4).unwrap();
    let mut results = Vec::new();
    for (ds, red) in [(None, None), (Some(true), Some(true)), (Some(true), Some(false)), (Some(false), Some(true))] {
        let opts = TraceOptions {
            graph_opt_config: Some(strata::GraphOptimizationConfig { jit_fuse_dimshuffle: ds, jit_fuse_reduce: red }),
            profiling: true,
            ..TraceOptions::default()
        };
        let mut traced = trace(f, opts).unwrap();
        let eager: Tensor = traced.call(&[x.clone(), y.clone()]).unwrap();
        let jit: Tensor = traced.call(&[x.clone(), y.clone()]).unwrap();
        let (e, j) = (eager.data().unwrap().to_f32_vec(), jit.data().unwrap().to_f32_vec());
        for (a, b) in e.iter().zip(&j) {
            assert!((a - b).abs() <= 1e-5 * a.abs().max(1.0), "{ds:?} {red:?}: {a} vs {b}");
        }
        results.push(traced.get_profile().unwrap().ops.len());
    }
    // Unfused: dimshuffle, add+exp, reduce; both fused: one kernel.
    assert_eq!(results, vec![3, 1, 2, 2], "kernels per configuration");
}
