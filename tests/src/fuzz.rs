//! Fuzz entry points, shared by the cargo-fuzz targets (`fuzz/`) and the stable
//! smoke test that runs their seed corpora in `cargo test`.
//!
//! Each panics exactly when it finds a bug: a panic inside strata, a module that
//! verifies but does not round-trip, a pass that changes a function's results,
//! or JIT-compiled code that disagrees with the reference interpreter.

use strata::driver::{OptConfig, check_roundtrip, optimize};
use strata_ir::pass::{Instrumentation, PassError, PassManager};
use strata_ir::{
    Context, Dim, ElemType, OpId, ParseOptions, PrintOptions, Source, TensorData, TypeData, VerifyOptions,
    parse_module, print_module, verify,
};

/// Arbitrary text: parsing must not panic; a module that parses can be printed;
/// one that also verifies must satisfy `print(parse(print(m))) == print(m)`,
/// with constants elided and in full.
pub fn parse_print(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for allow_unregistered in [false, true] {
        let mut ctx = strata_dialects::context();
        let source = Source::new("fuzz.strata", text);
        let Ok(module) = parse_module(&mut ctx, &source, &ParseOptions { allow_unregistered }) else {
            continue;
        };
        let _ = print_module(&ctx, module, &PrintOptions::default());
        if verify(&ctx, module, VerifyOptions { allow_unregistered }).is_err() {
            continue;
        }
        for print_large_consts in [false, true] {
            let opts = PrintOptions { print_large_consts, ..PrintOptions::default() };
            if let Err(e) = check_roundtrip(&ctx, module, &opts, allow_unregistered) {
                panic!("round trip failed:\n{e}");
            }
        }
    }
}

/// A module (optionally preceded by a `// pipeline: TEXT` line; default
/// `canonicalize,cse,dce`): a verified module must survive the pipeline with
/// verify-each and the numeric check, and still round-trip afterwards.
pub fn pipeline(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let pipeline = text
        .lines()
        .next()
        .and_then(|l| l.trim().strip_prefix("// pipeline:"))
        .map_or("canonicalize,cse,dce", str::trim)
        .to_string();
    let mut ctx = strata_dialects::context();
    let Ok(module) = parse_module(&mut ctx, &Source::new("fuzz.strata", text), &ParseOptions::default()) else {
        return;
    };
    if verify(&ctx, module, VerifyOptions::default()).is_err() {
        return;
    }
    // After lowering, functions take buffers, which the graph reference cannot
    // run: the loops level is checked by `jit_vs_reference` instead.
    let lowers = pipeline.contains("lower-graph-to-loops");
    let config = OptConfig {
        pipeline: Some(pipeline),
        check_each: !lowers,
        instrumentation: Instrumentation { verify_each: true, ..Instrumentation::default() },
        ..OptConfig::default()
    };
    match optimize(&mut ctx, module, &config) {
        Ok(_) => {}
        // Malformed pipeline text or pass options (e.g. an unknown rule set) are rejected inputs.
        Err(strata::driver::DriverError::Pipeline(_) | strata::driver::DriverError::Pass(PassError::Options(_))) => {
            return;
        }
        Err(strata::driver::DriverError::Pass(PassError::Check { message, .. }))
            if message.starts_with("reference run before the pass") =>
        {
            // The input itself cannot be evaluated (e.g. an elided constant): nothing to compare.
            return;
        }
        Err(e) => panic!("pipeline failed on a verified module:\n{e}\n--- input ---\n{text}"),
    }
    if let Err(e) = check_roundtrip(&ctx, module, &PrintOptions::default(), false) {
        panic!("round trip after the pipeline failed:\n{e}");
    }
}

/// Arbitrary bytes as a model file: reading must not panic; a file that reads
/// must write back to a file that reads to the same module.
pub fn load_model(data: &[u8]) {
    let mut ctx = strata_dialects::context();
    let Ok((module, info)) = strata_runtime::format::read_model(data, &mut ctx) else { return };
    let first = print_module(&ctx, module, &PrintOptions { print_large_consts: true, ..PrintOptions::default() });
    let bytes =
        strata_runtime::format::write_model(&ctx, module, &info).unwrap_or_else(|e| panic!("rewrite failed: {e}"));
    let mut again = strata_dialects::context();
    let (m2, _) =
        strata_runtime::format::read_model(&bytes, &mut again).unwrap_or_else(|e| panic!("re-read failed: {e}"));
    let second = print_module(&again, m2, &PrintOptions { print_large_consts: true, ..PrintOptions::default() });
    assert_eq!(first, second, "model round trip changed the module");
}

/// Random small graphs compiled with the JIT and compared with the reference
/// interpreter.
///
/// Input: IR text (optionally preceded by a `// pipeline: TEXT` line: graph
/// passes to run first, then the engine's
/// [`strata::JitOptions::lowering_pipeline`] unless the text names
/// `lower-graph-to-loops` itself) when the bytes parse as a module with a
/// function `@main`; otherwise the bytes drive
/// [`crate::random_ir::random_jit_module`]. `@main` runs on seeded random
/// inputs (derived from the printed module, so a printed reproducer
/// reproduces; symbolic dims are 2; one module in 8 also gets ±0, ±infinity
/// and NaN) through `strata_dialects::interp::run` and, as
/// [`strata::JitEngine`] does it, through specialise → pipeline → Cranelift →
/// `Executable`; the results must agree within a relative error of 1e-4
/// (denominator `max(|reference|, 1)`; NaN equals NaN, infinities of one sign
/// are equal; integers exactly). The header's graph passes must not change the
/// reference results either (except f16 precision passes).
///
/// Rejected quietly: modules that do not parse or verify, inputs the reference
/// rejects, malformed pipelines or passes that do not apply, and lowering
/// refusals ("not lowered", "no lowering", unsupported element types). Any
/// other failure — a panic, a lowering error on an op the lowering supports,
/// an error of a pre-lowering pass, code generation or the executor, or a
/// numeric mismatch — panics with the printed module.
pub fn jit_vs_reference(data: &[u8]) {
    let text = match std::str::from_utf8(data) {
        Ok(t) if parses_with_main(t) => t.to_string(),
        _ => crate::random_ir::random_jit_module(data),
    };
    check_jit_against_reference(&text);
}

/// Whether `text` parses as a module with a function `@main`.
fn parses_with_main(text: &str) -> bool {
    let mut ctx = strata_dialects::context();
    parse_module(&mut ctx, &Source::new("fuzz.strata", text), &ParseOptions::default())
        .is_ok_and(|m| strata_dialects::func::lookup_function(&ctx, m, "main").is_some())
}

/// Whether a lowering error is a refusal of an unsupported op, type or
/// feature rather than a failure on something the lowering claims to support.
fn is_lowering_refusal(message: &str) -> bool {
    const REFUSALS: &[&str] = &[
        "not lowered",
        "no lowering",
        "only f32",
        "are lowered",
        "needs static shapes",
        "elided",
        "too large to lower",
        "not supported",
        "unsupported",
    ];
    REFUSALS.iter().any(|r| message.contains(r))
}

/// One JIT-versus-reference check of module text (see [`jit_vs_reference`]).
fn check_jit_against_reference(text: &str) {
    let pre = text.lines().next().and_then(|l| l.trim().strip_prefix("// pipeline:")).map_or("", str::trim).to_string();
    let mut ctx = strata_dialects::context();
    let Ok(module) = parse_module(&mut ctx, &Source::new("fuzz.strata", text), &ParseOptions::default()) else {
        return;
    };
    if verify(&ctx, module, VerifyOptions::default()).is_err() {
        return;
    }
    let Some(main) = strata_dialects::func::lookup_function(&ctx, module, "main") else { return };
    let opts = PrintOptions { print_large_consts: true, large_const_threshold: 256, ..PrintOptions::default() };
    let printed = print_module(&ctx, module, &opts);
    let shown = if pre.is_empty() { printed.clone() } else { format!("// pipeline: {pre}\n{printed}") };
    let bug = |what: String| -> ! { panic!("jit_vs_reference: {what}\n--- module ---\n{shown}") };

    // Seeded inputs, from the printed module so that the reproducer reproduces.
    let mut h = strata_ir::tensor::Fnv1a::new();
    h.write(shown.as_bytes());
    let seed = h.finish();
    let (arg_tys, _) = main.signature(&ctx);
    // One module in 8 gets ±0, ±infinity and NaN among its f32 inputs.
    let special = seed.is_multiple_of(8);
    let mut inputs = Vec::with_capacity(arg_tys.len());
    for (i, &t) in arg_tys.iter().enumerate() {
        let TypeData::Tensor(tt) = ctx.ty(t) else { return };
        let shape: Vec<usize> = tt.shape.iter().map(|d| if let Dim::Fixed(n) = d { *n as usize } else { 2 }).collect();
        if shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)).is_none_or(|n| n > 1 << 16) {
            return;
        }
        let (lo, hi) = match tt.elem {
            e if e.is_float() => (-1.0, 1.0),
            ElemType::Bool => (0.0, 2.0),
            _ => (-8.0, 8.0),
        };
        let Ok(mut x) = TensorData::random_uniform(tt.elem, shape, lo, hi, seed.wrapping_add(i as u64)) else { return };
        if special && tt.elem == ElemType::F32 {
            x = with_special_values(&x, seed.wrapping_add(i as u64));
        }
        inputs.push(x);
    }

    // The oracle.
    let Ok(want) = strata_dialects::interp::run(&ctx, module, "main", &inputs) else { return };

    // The pipeline: the header's passes, then the engine's lowering pipeline
    // (`JitOptions::lowering_pipeline`) unless the header names `lower-graph-to-loops`.
    let items = pipeline_items(&pre);
    let lower_at = items.iter().position(|p| p.starts_with("lower-graph-to-loops"));
    let header_graph = items[..lower_at.unwrap_or(items.len())].join(",");
    let pipeline = |options: strata::JitOptions| match lower_at {
        Some(_) => pre.clone(),
        None if header_graph.is_empty() => options.lowering_pipeline(),
        None => format!("{header_graph},{}", options.lowering_pipeline()),
    };
    let full = pipeline(strata::JitOptions::default());

    // The graph the header's passes produce must mean the same (on finite
    // inputs: padded channels turn an infinity into NaN), unless they change
    // precision on purpose (f16); the JIT is compared with its reference.
    let mut oracle = want.clone();
    if !header_graph.is_empty() {
        // A pipeline that fails here fails in `jit_run` too, which tells a refusal from a bug.
        if let Some(after) = reference_after(&ctx, module, &header_graph, &inputs) {
            let after = after.unwrap_or_else(|e| bug(format!("the reference cannot run after `{header_graph}`: {e}")));
            let changes_precision = items.iter().any(|p| p.starts_with("f16-io"))
                || (header_graph.contains("promote-f16-compute") && shown.contains("f16"));
            if !changes_precision
                && !special
                && let Some(d) = compare(&want, &after)
            {
                bug(format!("`{header_graph}` changed the reference results: {d}"));
            }
            oracle = after;
        }
    }

    // The JIT.
    let got = match jit_run(&ctx, module, &full, &inputs) {
        Ok(Some(got)) => got,
        Ok(None) => return,
        Err(e) => bug(e),
    };
    if let Some(diff) = compare(&oracle, &got) {
        // Where it goes wrong: the graph-level passes of the pipeline, or fusion?
        let mut notes = String::new();
        let full_items = pipeline_items(&full);
        let graph_end = full_items.iter().position(|p| p.starts_with("lower-graph-to-loops")).unwrap_or(0);
        let graph_part = full_items[..graph_end].join(",");
        if graph_part != header_graph && !graph_part.is_empty() {
            match reference_after(&ctx, module, &graph_part, &inputs) {
                Some(Ok(r)) => match compare(&oracle, &r) {
                    Some(d) => notes.push_str(&format!("\nthe reference after `{graph_part}` differs: {d}")),
                    None => notes.push_str(&format!("\nthe reference after `{graph_part}` agrees")),
                },
                _ => notes.push_str(&format!("\nthe reference cannot run after `{graph_part}`")),
            }
        }
        if lower_at.is_none() {
            let unfused = strata::JitOptions { fuse: false, ..strata::JitOptions::default() };
            match jit_run(&ctx, module, &pipeline(unfused), &inputs) {
                Ok(Some(r)) => match compare(&oracle, &r) {
                    Some(_) => notes.push_str("\nwithout epilogue fusion the JIT differs too"),
                    None => notes.push_str("\nwithout epilogue fusion the JIT agrees (a fusion bug)"),
                },
                _ => notes.push_str("\nwithout epilogue fusion the JIT does not run"),
            }
        }
        bug(format!("the JIT (`{full}`) differs from the reference: {diff}{notes}"));
    }
}

/// The items of pipeline text: split at the commas outside `{…}` options.
fn pipeline_items(text: &str) -> Vec<String> {
    let mut items = Vec::new();
    let (mut depth, mut start) = (0usize, 0);
    for (i, ch) in text.char_indices() {
        match ch {
            '{' | '(' => depth += 1,
            '}' | ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                items.push(text[start..i].trim().to_string());
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(text[start..].trim().to_string());
    items.retain(|p| !p.is_empty());
    items
}

/// Runs `@main` through the JIT with `pipeline` (graph passes and the
/// lowering): `Ok(None)` for a rejected input, `Err` for a bug.
fn jit_run(
    ctx: &Context,
    module: OpId,
    pipeline: &str,
    inputs: &[TensorData],
) -> Result<Option<Vec<TensorData>>, String> {
    let mut ctx = ctx.clone();
    let f = strata_dialects::func::lookup_function(&ctx, module, "main").ok_or("no @main")?;
    let shapes: Vec<Vec<usize>> = inputs.iter().map(|t| t.shape().to_vec()).collect();
    let Ok(bindings) = strata_passes::lower::specialize::bindings_for_inputs(&ctx, f.0, &shapes) else {
        return Ok(None);
    };
    strata_passes::lower::specialize::specialize_shapes(&mut ctx, module, &bindings);
    if let Err(d) = verify(&ctx, module, VerifyOptions::default()) {
        let diags = strata_ir::diag::render_all(&ctx, &d, None);
        return Err(format!("specialising to {shapes:?} broke the module:\n{diags}"));
    }
    let reg = strata_passes::registry();
    let Ok(mut pm) = PassManager::parse(&reg, pipeline) else { return Ok(None) };
    pm.instrumentation.verify_each = true;
    match pm.run(&mut ctx, module) {
        Ok(_) => {}
        Err(PassError::Options(_) | PassError::Unsupported { .. }) => return Ok(None),
        Err(PassError::Failed { pass, message }) if pass == "lower-graph-to-loops" && is_lowering_refusal(&message) => {
            return Ok(None);
        }
        Err(e) => return Err(format!("`{pipeline}` failed: {e}")),
    }
    let code = strata_codegen::compile::jit_module(&ctx, module, &strata_codegen::IsaConfig::host())
        .map_err(|e| format!("code generation failed: {e}"))?;
    let exe = strata_runtime::exec::Executable::build(&ctx, module, "main", &|n| code.get(n))
        .map_err(|e| format!("building the executable failed: {e}"))?;
    let pool = strata_runtime::exec::ThreadPool::new(1).map_err(|e| format!("thread pool: {e}"))?;
    // `exe` points into `code`'s machine code; declared later, it is dropped first.
    let got = exe.run(&pool, inputs, &mut |_, _| {}).map_err(|e| format!("running failed: {e}"))?;
    Ok(Some(got))
}

/// The reference results of `@main` after the graph-level pipeline `passes`:
/// `None` if the pipeline does not parse or run, else the reference's answer.
fn reference_after(
    ctx: &Context,
    module: OpId,
    passes: &str,
    inputs: &[TensorData],
) -> Option<Result<Vec<TensorData>, strata_dialects::interp::EvalError>> {
    let mut ctx = ctx.clone();
    let reg = strata_passes::registry();
    PassManager::parse(&reg, passes).ok()?.run(&mut ctx, module).ok()?;
    Some(strata_dialects::interp::run(&ctx, module, "main", inputs))
}

/// `x` with about one element in 16 replaced by ±0, ±infinity or NaN.
fn with_special_values(x: &TensorData, seed: u64) -> TensorData {
    const SPECIAL: [f64; 5] = [0.0, -0.0, f64::INFINITY, f64::NEG_INFINITY, f64::NAN];
    let mut rng = strata_ir::tensor::SplitMix64(seed ^ 0x5bec_1a15);
    let values: Vec<f64> = x
        .to_f64_vec()
        .into_iter()
        .map(|v| if rng.next_u64().is_multiple_of(16) { SPECIAL[(rng.next_u64() % 5) as usize] } else { v })
        .collect();
    TensorData::from_f64(x.elem(), x.shape().to_vec(), &values).unwrap_or_else(|_| x.clone())
}

/// The first difference between reference results (`want`) and others (the
/// JIT's, or the reference's after graph passes) beyond the tolerance,
/// described; `None` when they agree.
fn compare(want: &[TensorData], got: &[TensorData]) -> Option<String> {
    if want.len() != got.len() {
        return Some(format!("{} results, the reference has {}", got.len(), want.len()));
    }
    for (i, (w, g)) in want.iter().zip(got).enumerate() {
        if w.shape() != g.shape() || w.elem() != g.elem() {
            return Some(format!(
                "result #{i} is {:?} {}, the reference's {:?} {}",
                g.shape(),
                g.elem(),
                w.shape(),
                w.elem()
            ));
        }
        let float = w.elem().is_float();
        let (wv, gv) = (w.to_f64_vec(), g.to_f64_vec());
        let bad: Vec<usize> = (0..wv.len()).filter(|&k| !close(wv[k], gv[k], float)).collect();
        if let Some(&k) = bad.first() {
            let idx = unravel(k, w.shape());
            return Some(format!(
                "result #{i} {:?} at {idx:?}: {} where the reference gives {} ({} of {} elements differ)",
                w.shape(),
                gv[k],
                wv[k],
                bad.len(),
                wv.len()
            ));
        }
    }
    None
}

/// Whether `got` is close enough to the reference value `want`.
fn close(want: f64, got: f64, float: bool) -> bool {
    if !float {
        return want == got;
    }
    if want.is_nan() || got.is_nan() {
        return want.is_nan() && got.is_nan();
    }
    if want.is_infinite() || got.is_infinite() {
        return want == got;
    }
    (want - got).abs() <= 1e-4 * want.abs().max(1.0)
}

/// The multi-index of flat position `k` in `shape`.
fn unravel(mut k: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for (i, &d) in shape.iter().enumerate().rev() {
        if d > 0 {
            idx[i] = k % d;
            k /= d;
        }
    }
    idx
}
