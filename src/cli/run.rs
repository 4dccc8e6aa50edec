//! `strata run FILE`: load a model file and run it, like MegEngine's load_and_run.
//!
//! Stages: refuse load-time graph options that do not exist yet → load and
//! verify the file → prepare the tests (the embedded testcases, else one test
//! per `--input` spec, else random inputs of the model's shapes) and check
//! every input against the model's signature → for each of `--copies`
//! parallel copies, per test: `--warmup` unmeasured runs, `--iter` measured
//! runs, a timing summary and, for testcases, the AssertEqual checks → write
//! the profile and the io dump → fail if any check failed.
//!
//! Everything MegEngine-like goes to stdout (`docs/run.md` lists the lines);
//! notes and the progress bar go to stderr; `tracing` spans and events follow
//! `RUST_LOG`. The model runs on the JIT (`--engine jit`, kernels compiled on the
//! first run of each input shape, `--threads` kernel threads) or the reference
//! evaluator (`--engine interp`).

use anyhow::{Context as _, Result, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::fmt::Display;
use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use strata::feed::{DataSource, FeedSpec, parse_input_data};
use strata::ir::TensorData;
use strata::model::{IoSignature, SigDim};
use strata::{LoadedModel, Profile};
use tracing::{debug, info, info_span};

/// Arguments of `strata run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The model file.
    file: PathBuf,
    /// Input data: `name:source;name2:source2` (load_and_run's grammar).
    ///
    /// A source is `#rand(min,max[,dims…][,...])`, a literal `[[1,2],[3,4]]`, a
    /// shape `{1,3,224,224}` (filled with ones), a `.npy` file or an image;
    /// `@FILE` holds one spec per line, each a test (docs/input-data.md).
    /// Without it every input is `#rand(0,1)` of the model's shape (symbolic
    /// dims are 1). Ignored when the model embeds testcases.
    #[arg(long, value_name = "SPEC")]
    input: Option<String>,
    /// Measured runs per test.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    iter: u64,
    /// Unmeasured runs per test before the measured ones.
    #[arg(long, default_value_t = 1, alias = "warmup-iter")]
    warmup: u64,
    /// Parallel copies of the whole run (load_and_run's `--thread`), sharing one loaded model.
    #[arg(
        long,
        default_value_t = 1,
        alias = "thread",
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=4096)
    )]
    copies: usize,
    /// Threads of the JIT's kernels: parallel loops split statically (load_and_run's `--multithread`).
    #[arg(
        long,
        default_value_t = 1,
        alias = "multithread",
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=256)
    )]
    threads: usize,
    /// What runs the model: `jit` (Cranelift-compiled kernels) or `interp` (the reference evaluator).
    #[arg(long, default_value = "jit")]
    engine: strata::Engine,
    /// Write the per-op profile of the measured runs as JSON (`strata.profile/1`, docs/profile.md).
    #[arg(long, value_name = "FILE")]
    profile: Option<PathBuf>,
    /// Write the measured runs as a Chrome trace (chrome://tracing, Perfetto).
    #[arg(long, value_name = "FILE")]
    profile_chrome: Option<PathBuf>,
    /// Write every test's inputs and outputs (last measured run) as `.npy` files into DIR.
    #[arg(long, value_name = "DIR")]
    io_dump: Option<PathBuf>,
    /// Which model of a file holding several (dumped with `append`) to run.
    #[arg(long, default_value_t = 0)]
    model_index: usize,
    /// Graph options MegEngine applies at load time.
    #[command(flatten)]
    load: super::InferenceFlags,
}

/// Validates load_and_run's layout, dtype and fusion flags: a flag whose pass
/// does not exist yet is an error naming it, never ignored.
fn load_options(flags: &super::InferenceFlags) -> Result<strata::InferenceOptions> {
    let options = flags.options()?;
    options.validate().map_err(|e| {
        let flag = options.enabled().into_iter().find(|n| e.to_string().contains(n)).unwrap_or_default();
        anyhow::anyhow!("`--{}`: {e}", flag.replace('_', "-"))
    })?;
    Ok(options)
}

/// One test: inputs in signature order, and the embedded testcase whose
/// expectations its outputs are checked against.
struct Test {
    inputs: Vec<TensorData>,
    testcase: Option<usize>,
}

/// What one copy of the run produced.
struct CopyOutcome {
    /// Per test, the outputs of the last measured run.
    outputs: Vec<Vec<TensorData>>,
    /// Testcases whose AssertEqual check failed.
    failed: usize,
    /// The profile of the measured runs (copy 0 only, when asked for).
    profile: Option<Profile>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Prints stdout lines of one copy, prefixed when several copies run, without
/// tearing the progress bar.
struct Out {
    prefix: String,
    bar: ProgressBar,
}

impl Out {
    fn line(&self, text: impl Display) {
        self.bar.suspend(|| say(format_args!("{}{text}", self.prefix)));
    }
}

/// Prints one stdout line; a closed stdout (`strata run … | head`) does not stop the run.
fn say(text: impl Display) {
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}

/// A progress bar on stderr, shown only when stderr is a terminal and the run
/// is long: at least 20 iterations, or more than a second expected from the
/// first finished run.
struct Progress {
    bar: ProgressBar,
    decided: OnceLock<()>,
    runs_per_copy: u64,
    many_iters: bool,
}

impl Progress {
    fn new(args: &RunArgs, tests: usize) -> Self {
        let runs_per_copy = args.warmup.saturating_add(args.iter).saturating_mul(tests as u64);
        let bar = ProgressBar::with_draw_target(
            Some(runs_per_copy.saturating_mul(args.copies as u64)),
            ProgressDrawTarget::hidden(),
        );
        if let Ok(style) = ProgressStyle::with_template("{bar:40} {pos}/{len} runs  {elapsed_precise} (eta {eta})") {
            bar.set_style(style);
        }
        Progress { bar, decided: OnceLock::new(), runs_per_copy, many_iters: args.iter >= 20 }
    }

    /// Counts a finished run that took `took`.
    fn done(&self, took: Duration) {
        self.decided.get_or_init(|| {
            let expected = took.saturating_mul(u32::try_from(self.runs_per_copy).unwrap_or(u32::MAX));
            if std::io::stderr().is_terminal() && (self.many_iters || expected > Duration::from_secs(1)) {
                self.bar.set_draw_target(ProgressDrawTarget::stderr());
            }
        });
        self.bar.inc(1);
    }
}

/// Sum, mean, sample standard deviation, min, median and max of run times, in ms.
struct Stats {
    total: f64,
    mean: f64,
    sd: f64,
    min: f64,
    median: f64,
    max: f64,
}

impl Stats {
    fn of(times: &[Duration]) -> Stats {
        let mut v: Vec<f64> = times.iter().map(|&t| ms(t)).collect();
        v.sort_by(f64::total_cmp);
        let n = v.len().max(1) as f64;
        let total: f64 = v.iter().sum();
        let mean = total / n;
        let sd = if v.len() < 2 { 0.0 } else { (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt() };
        let median = match v.len() {
            0 => 0.0,
            l if l % 2 == 1 => v[l / 2],
            l => (v[l / 2 - 1] + v[l / 2]) / 2.0,
        };
        Stats { total, mean, sd, min: v.first().copied().unwrap_or(0.0), median, max: v.last().copied().unwrap_or(0.0) }
    }
}

/// Runs `strata run`.
pub fn run(args: RunArgs) -> Result<()> {
    let inference = load_options(&args.load)?;
    let root = info_span!("strata_run", file = %args.file.display());
    let _root = root.enter();

    let t = Instant::now();
    let (mut model, count) = strata::model::load_nth(&args.file, args.model_index)
        .with_context(|| format!("loading model {}", args.file.display()))?;
    if count > 1 {
        eprintln!(
            "note: the file holds {count} models; running model #{} (--model-index picks another)",
            args.model_index
        );
    }
    model.set_engine(args.engine);
    model.set_jit_options(strata::JitOptions { threads: args.threads, ..Default::default() });
    if let Some(pipeline) = strata::dump::option_pipeline(&inference) {
        model.optimize(&pipeline).with_context(|| format!("applying {}", inference.enabled().join(", ")))?;
    }
    let load_ms = ms(t.elapsed());
    info!(ms = load_ms, "model loaded");
    say(format_args!("load model: {load_ms:.3} ms"));

    let t = Instant::now();
    let sigs = model.inputs().context("reading the model's inputs")?;
    let tests = prepare_tests(&model, &sigs, &args)?;
    for (k, test) in tests.iter().enumerate() {
        model.check_inputs(&test.inputs).with_context(|| format!("test #{k}"))?;
    }
    if args.copies > 1 && (args.profile.is_some() || args.profile_chrome.is_some()) {
        eprintln!("note: the profile records thread 0 only");
    }
    if args.engine == strata::Engine::Jit {
        // Compile every input shape now, so warm-up and measured runs time the kernels only.
        let jit = model.jit().context("setting up the JIT")?;
        for (k, test) in tests.iter().enumerate() {
            let shapes: Vec<Vec<usize>> = test.inputs.iter().map(|t| t.shape().to_vec()).collect();
            let c = jit.compiled(&shapes).with_context(|| format!("compiling the model for test #{k}"))?;
            let exe = c.executable();
            say(format_args!(
                "jit compile: {:.3} ms ({} kernels; lowering {:.3} ms, cranelift {:.3} ms); arena {} bytes ({:.3}x the liveness bound)",
                ms(c.times.total()),
                exe.steps().len(),
                ms(c.times.lower),
                ms(c.times.codegen),
                exe.plan().arena_bytes,
                exe.plan().ratio()
            ));
        }
    }
    say(format_args!("=== prepare: {:.3} ms; going to warmup", ms(t.elapsed())));

    let progress = Progress::new(&args, tests.len());
    let t = Instant::now();
    let outcomes: Vec<CopyOutcome> = if args.copies == 1 {
        vec![run_copy(&model, &tests, &args, 0, &progress)?]
    } else {
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..args.copies)
                .map(|copy| {
                    let (model, tests, args, progress, root) = (&model, &tests, &args, &progress, &root);
                    s.spawn(move || {
                        let _span = info_span!(parent: root, "thread", copy).entered();
                        run_copy(model, tests, args, copy, progress)
                    })
                })
                .collect();
            handles
                .into_iter()
                .enumerate()
                .map(|(copy, h)| h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("thread {copy} panicked"))))
                .collect::<Result<Vec<_>>>()
        })?
    };
    let total = t.elapsed();
    progress.bar.finish_and_clear();

    let mut outcomes = outcomes.into_iter();
    let first = outcomes.next().expect("invariant: at least one copy runs");
    let failed = first.failed + outcomes.map(|o| o.failed).sum::<usize>();
    if let Some(profile) = &first.profile {
        if let Some(path) = &args.profile {
            std::fs::write(path, profile.to_json()).with_context(|| format!("writing profile {}", path.display()))?;
        }
        if let Some(path) = &args.profile_chrome {
            profile.write_chrome_trace(path).with_context(|| format!("writing Chrome trace {}", path.display()))?;
        }
    }
    if let Some(dir) = &args.io_dump {
        let files = io_dump(dir, &model, &sigs, &tests, &first.outputs)?;
        say(format_args!("=== io dump: {files} files in {}", dir.display()));
    }
    say(format_args!("=== total time: {:.3} ms", ms(total)));
    if failed > 0 {
        let tcs = &model.info().testcases;
        let checked = tests.iter().filter(|t| t.testcase.is_some_and(|k| !tcs[k].outputs.is_empty())).count();
        let checks = checked * args.copies;
        bail!("{failed} of {checks} testcase checks failed (AssertEqual)");
    }
    Ok(())
}

/// The tests to run: the embedded testcases, else one per `--input` spec, else
/// one of random inputs.
fn prepare_tests(model: &LoadedModel, sigs: &[IoSignature], args: &RunArgs) -> Result<Vec<Test>> {
    let testcases = model.info().testcases.len();
    if testcases > 0 {
        if args.input.is_some() {
            eprintln!("note: the model embeds {testcases} testcase(s); their inputs replace --input");
        }
        return (0..testcases)
            .map(|k| {
                let inputs = model.testcase_inputs(k).with_context(|| format!("embedded testcase #{k}"))?;
                Ok(Test { inputs, testcase: Some(k) })
            })
            .collect();
    }
    let spec_text = args.input.as_deref().unwrap_or("#rand(0,1)");
    let specs = parse_input_data(spec_text).with_context(|| format!("bad --input `{spec_text}`"))?;
    if specs.is_empty() {
        bail!("--input `{spec_text}` holds no test");
    }
    for name in defaulted_symbolic(&specs, sigs) {
        let sig = sigs.iter().find(|s| s.name == name).expect("invariant: a name from sigs");
        eprintln!(
            "note: input `{name}` has shape {}; #rand uses 1 for the symbolic dims it does not set",
            sig.shape_text()
        );
    }
    let described: Vec<_> = sigs.iter().map(|s| (s.name.clone(), s.elem, s.shape_with(1))).collect();
    specs
        .iter()
        .enumerate()
        .map(|(k, spec)| {
            let fed = strata::feed::materialize(spec, &described, k as u64)
                .with_context(|| format!("bad --input `{spec_text}`"))?;
            Ok(Test { inputs: fed.into_iter().map(|(_, t)| t).collect(), testcase: None })
        })
        .collect()
}

/// The inputs with symbolic dims that some `#rand` of `specs` takes from the
/// signature (so they become 1), in signature order.
fn defaulted_symbolic(specs: &[FeedSpec], sigs: &[IoSignature]) -> Vec<String> {
    let mut hit = vec![false; sigs.len()];
    for spec in specs {
        for (name, src) in &spec.items {
            let DataSource::Rand { dims, rest, .. } = src else { continue };
            let targets: Vec<usize> = match name {
                Some(n) => sigs.iter().position(|s| &s.name == n).into_iter().collect(),
                None => (0..sigs.len()).collect(),
            };
            for t in targets {
                let taken = if dims.is_empty() && !rest {
                    &sigs[t].dims[..]
                } else if *rest {
                    sigs[t].dims.get(dims.len()..).unwrap_or(&[])
                } else {
                    &[]
                };
                hit[t] |= taken.iter().any(|d| matches!(d, SigDim::Sym(_)));
            }
        }
    }
    sigs.iter().zip(hit).filter(|(_, h)| *h).map(|(s, _)| s.name.clone()).collect()
}

/// Runs every test once per `--warmup` and `--iter`, printing as it goes.
fn run_copy(
    model: &LoadedModel,
    tests: &[Test],
    args: &RunArgs,
    copy: usize,
    progress: &Progress,
) -> Result<CopyOutcome> {
    let prefix = if args.copies > 1 { format!("[thread {copy}] ") } else { String::new() };
    let out = Out { prefix, bar: progress.bar.clone() };
    let profiling = copy == 0 && (args.profile.is_some() || args.profile_chrome.is_some());
    let mut profile = profiling.then(Profile::default);
    let mut outcome = CopyOutcome { outputs: Vec::with_capacity(tests.len()), failed: 0, profile: None };
    for (k, test) in tests.iter().enumerate() {
        let _span = info_span!("test", index = k).entered();
        for i in 0..args.warmup {
            let t = Instant::now();
            model.run(&test.inputs).with_context(|| format!("test #{k}: warm-up run {i}"))?;
            let took = t.elapsed();
            debug!(warmup = i, ms = ms(took), "warm-up run");
            out.line(format_args!("warm up {i}  {:.3} ms", ms(took)));
            progress.done(took);
        }
        let mut times = Vec::with_capacity(args.iter.min(1 << 16) as usize);
        let mut last = Vec::new();
        for i in 0..args.iter {
            let t = Instant::now();
            let outs = match profile.as_mut() {
                Some(p) => model.run_profiled(&test.inputs, p),
                None => model.run(&test.inputs),
            }
            .with_context(|| format!("test #{k}: run {i}"))?;
            let took = t.elapsed();
            debug!(iter = i, ms = ms(took), "measured run");
            out.line(format_args!("iter {i}/{}: e2e={:.3} ms", args.iter, ms(took)));
            times.push(took);
            last = outs;
            progress.done(took);
        }
        let s = Stats::of(&times);
        info!(test = k, avg_ms = s.mean, "test finished");
        out.line(format_args!(
            "=== finished test #{k}: time={:.3} ms avg_time={:.3} ms standard_deviation={:.3} ms min={:.3} ms median={:.3} ms max={:.3} ms",
            s.total, s.mean, s.sd, s.min, s.median, s.max
        ));
        if let Some(tc) = test.testcase {
            let result = model.check_testcase(tc, &last).with_context(|| format!("checking testcase #{tc}"))?;
            let silent = model.info().testcases[tc].silent;
            for (name, err) in &result.errors {
                let ok = *err <= result.maxerr;
                if ok && silent {
                    continue;
                }
                let verdict = if ok { "ok" } else { "FAILED" };
                out.line(format_args!(
                    "AssertEqual: output `{name}`: err={} (maxerr={}) {verdict}",
                    show_err(*err),
                    result.maxerr
                ));
            }
            if !result.passed() {
                outcome.failed += 1;
            }
        }
        outcome.outputs.push(last);
    }
    outcome.profile = profile;
    Ok(outcome)
}

/// An AssertEqual error: `0`, else three significant digits.
fn show_err(err: f64) -> String {
    if err == 0.0 { "0".into() } else { format!("{err:.3e}") }
}

/// A file-name-safe form of a tensor name: characters other than ASCII
/// letters, digits, `-`, `_` and `.` become `_`.
fn sanitize(name: &str) -> String {
    let s: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' }).collect();
    if s.is_empty() { "unnamed".into() } else { s }
}

/// Writes `test<k>_input_<name>.npy` and `test<k>_output_<name>.npy` for every
/// test into `dir`; returns how many files were written. Names that collide
/// after sanitising get `_<position>` appended.
fn io_dump(
    dir: &Path,
    model: &LoadedModel,
    sigs: &[IoSignature],
    tests: &[Test],
    outputs: &[Vec<TensorData>],
) -> Result<usize> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating io dump directory {}", dir.display()))?;
    let out_names: Vec<String> =
        model.outputs().context("reading the model's outputs")?.into_iter().map(|o| o.name).collect();
    let in_names: Vec<String> = sigs.iter().map(|s| s.name.clone()).collect();
    let mut files = 0;
    for (k, (test, outs)) in tests.iter().zip(outputs).enumerate() {
        let mut used = std::collections::BTreeSet::new();
        for (kind, names, tensors) in [("input", &in_names, &test.inputs), ("output", &out_names, outs)] {
            for (i, t) in tensors.iter().enumerate() {
                let name = names.get(i).map_or_else(|| format!("{kind}_{i}"), |n| sanitize(n));
                let mut file = format!("test{k}_{kind}_{name}.npy");
                if !used.insert(file.clone()) {
                    file = format!("test{k}_{kind}_{name}_{i}.npy");
                    used.insert(file.clone());
                }
                let path = dir.join(&file);
                let bytes =
                    strata::feed::write_npy(t).with_context(|| format!("encoding {kind} `{name}` of test #{k}"))?;
                std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
                files += 1;
            }
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_and_names() {
        let d = |m: u64| Duration::from_millis(m);
        let s = Stats::of(&[d(3), d(1), d(2), d(10)]);
        assert_eq!((s.total, s.mean, s.min, s.median, s.max), (16.0, 4.0, 1.0, 2.5, 10.0));
        assert!((s.sd - (50.0f64 / 3.0).sqrt()).abs() < 1e-9);
        assert_eq!(Stats::of(&[d(5)]).sd, 0.0);
        assert_eq!(sanitize("conv1/out:0"), "conv1_out_0");
        assert_eq!(sanitize(""), "unnamed");
        assert_eq!(show_err(0.0), "0");
        assert_eq!(show_err(0.000123456), "1.235e-4");
    }

    #[test]
    fn symbolic_dims_defaulted_by_rand() {
        let sig = |name: &str| IoSignature {
            name: name.into(),
            elem: strata::ElemType::F32,
            dims: vec![SigDim::Sym("N".into()), SigDim::Fixed(3)],
        };
        let sigs = [sig("a"), sig("b")];
        let hit = |spec: &str| defaulted_symbolic(&parse_input_data(spec).unwrap(), &sigs);
        assert_eq!(hit("#rand(0,1)"), ["a", "b"]);
        assert_eq!(hit("a:#rand(0,1,2,...);b:#rand(0,1)"), ["b"]);
        assert_eq!(hit("a:#rand(0,1,2,3);b:[[1,2,3]]"), Vec::<String>::new());
        assert_eq!(hit("a:#rand(0,1,...);b:{2,3}"), ["a"]);
    }
}
