//! `strata demo`: the main job on a built-in model — trace resnet18, show the
//! recorded graph, compile it, replay through the compiled graph, check the
//! result against eager execution, dump it to a model file with a testcase,
//! load the file back, run its testcase and the input, and compare again.

use anyhow::{Context as _, Result, bail};
use clap::Args;
use std::time::Instant;
use strata::feed::assert_equal_error;
use strata::ir::{PrintOptions, TensorData};
use strata::{DumpOptions, Tensor, TraceOptions, trace, zoo};

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Zoo model to trace.
    #[arg(long, default_value = "resnet18")]
    model: String,
    /// Input height and width (for image models).
    #[arg(long, default_value_t = 224)]
    size: usize,
    /// Opt level of the compiled graph (-3..=3).
    #[arg(short = 'O', long = "opt-level", default_value_t = 2, allow_hyphen_values = true)]
    opt_level: i64,
    /// Print the full recorded graph (default: the first and last lines).
    #[arg(long)]
    full: bool,
    /// Where to write the model file (default: `strata-demo-<model>.smdl` in the temp dir).
    #[arg(long)]
    dump: Option<std::path::PathBuf>,
}

fn excerpt(text: &str, full: bool) -> String {
    let lines: Vec<&str> = text.lines().collect();
    if full || lines.len() <= 40 {
        return text.to_string();
    }
    let mut out = lines[..24].join("\n");
    out.push_str(&format!("\n  … {} more lines (--full prints them) …\n", lines.len() - 34));
    out.push_str(&lines[lines.len() - 10..].join("\n"));
    out.push('\n');
    out
}

pub fn run(args: DemoArgs) -> Result<()> {
    let model = zoo::build(&args.model, 0)?;
    let mut shape = model.input_shape.clone();
    if shape.len() == 4 && shape[2] == 224 && shape[3] == 224 {
        shape[2] = args.size;
        shape[3] = args.size;
    }
    let x = Tensor::uniform(&shape, -1.0, 1.0, 42)?.named("data");
    println!("== {}: {} parameters, input {:?} ==", model.name, model.num_params(), shape);
    let opts =
        TraceOptions { capture_as_const: true, profiling: true, opt_level: args.opt_level, ..TraceOptions::default() };
    let mut traced = trace(|a: &[Tensor]| model.forward(&a[0]), opts)?;

    let t0 = Instant::now();
    let eager = traced.call(std::slice::from_ref(&x)).map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("call 1: recorded and ran eagerly in {:.2?}", t0.elapsed());
    let recorded = traced.recorded_ir(&PrintOptions::default())?;
    println!("\n== recorded graph (graph dialect, constants elided) ==\n{}", excerpt(&recorded, args.full));

    let t1 = Instant::now();
    let compiled_out = traced.call(std::slice::from_ref(&x)).map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("call 2: compiled at -O{} and replayed in {:.2?}", args.opt_level, t1.elapsed());
    let t2 = Instant::now();
    let again = traced.call(std::slice::from_ref(&x)).map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("call 3: replayed in {:.2?}", t2.elapsed());

    let (ctx, module) = traced.compiled_module().context("compiled module")?;
    let ops_before = recorded.matches(" = graph.").count();
    let ops_after = ctx.walk(module).iter().filter(|&&o| ctx.op_name(o).starts_with("graph.")).count();
    println!(
        "compiled graph: {ops_before} -> {ops_after} graph ops, {:.1} MFLOPs per run",
        zoo::flops(ctx, module, 1) as f64 / 1e6
    );

    let want = eager.to_vec()?;
    let eager_data = eager.data()?;
    let mut max_err = 0f64;
    for out in [&compiled_out, &again] {
        max_err = max_err.max(assert_equal_error(&eager_data, &out.data()?));
    }
    println!("output {:?}: first values {:?}", eager.shape(), &want[..want.len().min(5)]);
    if max_err.is_nan() || max_err > 1e-4 {
        bail!("compiled results differ from eager execution: AssertEqual error {max_err:e} > 1e-4");
    }
    println!("== check: compiled runs match eager execution (AssertEqual error {max_err:e} <= 1e-4) ==");

    if let Some(p) = traced.get_profile() {
        let mut ops = p.ops.clone();
        ops.sort_by_key(|o| std::cmp::Reverse(o.total));
        let what = if p.engine == "jit" { "JIT-compiled kernels" } else { "reference evaluator" };
        println!("\n== profile of {} compiled runs ({what}), slowest entries ==", p.runs);
        for o in ops.iter().take(8) {
            println!(
                "  #{:<4} {:<24} {:>10.2?}  {}",
                o.index,
                o.op,
                o.total / o.calls.max(1) as u32,
                o.loc.as_deref().unwrap_or("")
            );
        }
    }
    dump_and_reload(&args, &traced, &x, &eager_data)
}

/// Dumps the trace with one embedded testcase, loads the file, checks the
/// testcase and compares a run on `x` with the eager result `want`.
fn dump_and_reload<F>(args: &DemoArgs, traced: &strata::Traced<F>, x: &Tensor, want: &TensorData) -> Result<()> {
    let path =
        args.dump.clone().unwrap_or_else(|| std::env::temp_dir().join(format!("strata-demo-{}.smdl", args.model)));
    let options = DumpOptions {
        output_names: Some(vec!["logits".into()]),
        input_data: vec!["#rand(-1,1)".into()],
        ..DumpOptions::default()
    };
    let t0 = Instant::now();
    let result = traced.dump(&path, &options)?;
    println!(
        "\n== dumped to {} in {:.2?}: {} bytes, {} ops, {} bytes of weights, 1 testcase (expected values from the unoptimised graph) ==",
        path.display(),
        t0.elapsed(),
        result.tot_bytes,
        result.nr_opr,
        result.tensor_value_bytes
    );
    let t1 = Instant::now();
    let loaded = strata::load(&path)?;
    println!("load model: {:.2?} (verified)", t1.elapsed());
    for tc in loaded.run_testcases()? {
        for (name, err) in &tc.errors {
            let verdict = if tc.passed() { "ok" } else { "FAILED" };
            println!("testcase #{}: AssertEqual `{name}`: err={err:e} (maxerr={:e}) {verdict}", tc.index, tc.maxerr);
        }
        if !tc.passed() {
            bail!("the dumped model fails its own testcase");
        }
    }
    let t2 = Instant::now();
    let got = loaded.run(&[x.data()?])?;
    let got = got.first().context("the loaded model returned nothing")?;
    let err = assert_equal_error(want, got);
    println!("loaded model run on the demo input in {:.2?}: AssertEqual error vs eager = {err:e}", t2.elapsed());
    if err.is_nan() || err > 1e-4 {
        bail!("the loaded model differs from eager execution: AssertEqual error {err:e} > 1e-4");
    }
    println!("== check: dump -> load -> run matches eager execution ==");
    Ok(())
}
