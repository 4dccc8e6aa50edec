//! Benchmark of the `eqsat` pass: optimisation time and e-graph size on the
//! zoo's ImageNet models (resnet18, resnet50, mobilenet_v2).
//!
//! Each model is traced (record only, weights captured as constants, opt
//! level 0), written to a model file once, and for every repetition read back
//! into a fresh context and optimised with `canonicalize,cse,eqsat,dce` (the
//! default eqsat rules). The eqsat time is the pass manager's own per-pass
//! time. Output: one JSON object per model and line on stdout, then one line
//! with the target check (see `docs/benchmarks.md`).
//!
//! Run with `cargo bench --bench eqsat`; `cargo bench --bench eqsat -- --quick`
//! does one repetition, `-- --reps N` N repetitions, `-- --models a,b` a subset.
//! Without cargo's `--bench` flag (`cargo test --benches`, or the binary run by
//! hand) it also does one repetition unless `--reps` says otherwise.

use anyhow::{Context as _, Result, anyhow, bail};
use serde_json::json;
use strata::ir::pass::{PassManager, PassRecord};
use strata::ir::{Context, OpId};
use strata::runtime::format::{ModelInfo, read_model, write_model};
use strata::{Tensor, TraceOptions, trace, zoo};

/// The models measured by default.
const MODELS: &[&str] = &["resnet18", "resnet50", "mobilenet_v2"];
/// The pipeline whose `eqsat` step is timed.
const PIPELINE: &str = "canonicalize,cse,eqsat,dce";
/// Repetitions without `--quick` / `--reps`.
const DEFAULT_REPS: usize = 5;
/// The target: the eqsat pass on resnet50 takes less than this (median).
const TARGET_MS: f64 = 100.0;

struct Args {
    reps: usize,
    models: Vec<String>,
}

fn parse_args() -> Result<Args> {
    let bench_mode = std::env::args().any(|a| a == "--bench");
    let reps = if bench_mode { DEFAULT_REPS } else { 1 };
    let mut args = Args { reps, models: MODELS.iter().map(|m| m.to_string()).collect() };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => args.reps = 1,
            "--reps" => {
                let n = it.next().ok_or_else(|| anyhow!("--reps needs a number"))?;
                args.reps = n.parse().with_context(|| format!("--reps {n}"))?;
                if args.reps == 0 {
                    bail!("--reps must be at least 1");
                }
            }
            "--models" => {
                let m = it.next().ok_or_else(|| anyhow!("--models needs a comma-separated list"))?;
                args.models = m.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect();
            }
            // Passed by `cargo bench` (and by libtest-style runners); nothing to do.
            "--bench" | "--nocapture" => {}
            other if other.starts_with("--") => {
                bail!("unknown option `{other}` (known: --quick, --reps N, --models a,b)")
            }
            // A libtest-style name filter: measure only the matching models.
            filter => args.models.retain(|m| m.contains(filter)),
        }
    }
    Ok(args)
}

/// The model's traced, unoptimised module as model-file bytes.
fn model_bytes(name: &str) -> Result<Vec<u8>> {
    let model = zoo::build(name, 0)?;
    let opts = TraceOptions { record_only: true, capture_as_const: true, opt_level: 0, ..Default::default() };
    let mut traced = trace(|a: &[Tensor]| model.forward(&a[0]), opts)?;
    traced.call(&[model.random_input(1, 0)?]).map_err(|e| anyhow!("tracing {name}: {e}"))?;
    traced.compile()?;
    let (ctx, module) = traced.compiled_module().ok_or_else(|| anyhow!("{name}: no compiled module"))?;
    write_model(ctx, module, &ModelInfo::default()).with_context(|| format!("writing {name}"))
}

/// Graph ops in the module (every op whose name starts with `graph.`).
fn count_ops(ctx: &Context, module: OpId, only: Option<&str>) -> usize {
    ctx.walk(module)
        .into_iter()
        .map(|op| ctx.op_name(op))
        .filter(|n| n.starts_with("graph.") && only.is_none_or(|o| *n == o))
        .count()
}

/// The stop reason from the eqsat statistics (`stop-saturated` → `saturated`).
fn stop_reason(eqsat: &PassRecord) -> String {
    let stops: Vec<&str> =
        eqsat.stats.iter().filter(|&(k, v)| k.starts_with("stop-") && v > 0).map(|(k, _)| &k[5..]).collect();
    if stops.is_empty() { "none".into() } else { stops.join("+") }
}

/// A one-line JSON object with the keys in the given order (serde_json's
/// `Value` would sort them).
fn object(fields: &[(&str, serde_json::Value)]) -> String {
    let items: Vec<String> = fields.iter().map(|(k, v)| format!("{}:{v}", json!(k))).collect();
    format!("{{{}}}", items.join(","))
}

struct Measured {
    line: String,
    median_ms: f64,
}

fn measure(name: &str, reps: usize) -> Result<Measured> {
    let bytes = model_bytes(name)?;
    let registry = strata::passes::registry();
    let mut times = Vec::with_capacity(reps);
    let mut last = None;
    let mut ops_before = 0;
    for _ in 0..reps {
        let mut ctx = strata::dialects::context();
        let (module, _) = read_model(&bytes, &mut ctx).with_context(|| format!("reading {name}"))?;
        ops_before = count_ops(&ctx, module, None);
        let mut pm = PassManager::parse(&registry, PIPELINE)?;
        let report = pm.run(&mut ctx, module).with_context(|| format!("optimising {name}"))?;
        let eqsat = report
            .records
            .into_iter()
            .find(|r| r.name == "eqsat")
            .ok_or_else(|| anyhow!("the pipeline ran no eqsat pass"))?;
        times.push(eqsat.elapsed.as_secs_f64() * 1e3);
        last = Some((ctx, module, eqsat));
    }
    let (ctx, module, eqsat) = last.expect("invariant: at least one repetition");
    times.sort_by(f64::total_cmp);
    let median = if times.len() % 2 == 1 {
        times[times.len() / 2]
    } else {
        (times[times.len() / 2 - 1] + times[times.len() / 2]) / 2.0
    };
    let round = |x: f64| (x * 1000.0).round() / 1000.0;
    let line = object(&[
        ("bench", json!("eqsat")),
        ("model", json!(name)),
        ("ops_before", json!(ops_before)),
        ("ops_after", json!(count_ops(&ctx, module, None))),
        ("eqsat_ms_median", json!(round(median))),
        ("eqsat_ms_min", json!(round(times[0]))),
        ("e_nodes", json!(eqsat.stats.get("e-nodes"))),
        ("e_classes", json!(eqsat.stats.get("e-classes"))),
        ("iterations", json!(eqsat.stats.get("iterations"))),
        ("stop", json!(stop_reason(&eqsat))),
        ("conv_bias", json!(count_ops(&ctx, module, Some("graph.conv_bias")))),
        ("batch_norm", json!(count_ops(&ctx, module, Some("graph.batch_norm")))),
    ]);
    Ok(Measured { line, median_ms: median })
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let mut resnet50 = None;
    for name in &args.models {
        let m = measure(name, args.reps)?;
        println!("{}", m.line);
        if name == "resnet50" {
            resnet50 = Some(m.median_ms);
        }
    }
    if let Some(ms) = resnet50 {
        let target = object(&[
            ("bench", json!("eqsat")),
            ("target", json!("resnet50 < 100 ms")),
            ("resnet50_ms", json!((ms * 1000.0).round() / 1000.0)),
            ("met", json!(ms < TARGET_MS)),
        ]);
        println!("{target}");
    }
    Ok(())
}
