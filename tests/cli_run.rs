//! End-to-end tests of `strata run`: timing lines, io dumps, profiles, embedded
//! testcases, threads, and errors (never panics).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use strata::ir::{ElemType, TensorData};
use strata::runtime::format::{ModelInfo, NamedIo, Testcase, write_model};
use strata::{Tensor, TraceOptions, trace, zoo};

fn strata(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_strata")).args(args).output().expect("strata runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A fresh scratch directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("strata-cli-run-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Traces zoo model `name` and writes it with input `data`, output `out` and `testcases`.
fn zoo_file(dir: &Path, name: &str, testcases: Vec<Testcase>) -> PathBuf {
    let model = zoo::build(name, 0).unwrap();
    let opts = TraceOptions { capture_as_const: true, ..TraceOptions::default() };
    let mut t = trace(|a: &[Tensor]| model.forward(&a[0]), opts).unwrap();
    t.call(&[model.random_input(1, 0).unwrap()]).unwrap();
    t.compile().unwrap();
    let (ctx, m) = t.compiled_module().unwrap();
    let info = ModelInfo {
        inputs: vec![NamedIo { name: "data".into(), alias: None }],
        outputs: vec![NamedIo { name: "out".into(), alias: None }],
        testcases,
        ..ModelInfo::default()
    };
    let path = dir.join(format!("{name}.smdl"));
    std::fs::write(&path, write_model(ctx, m, &info).unwrap()).unwrap();
    path
}

/// A two-input model from text IR: `sum = a + b`, both `?Nx3`.
fn two_input_file(dir: &Path) -> PathBuf {
    let src = r#"func @main(%a: tensor<?Nx3xf32>, %b: tensor<?Nx3xf32>) -> tensor<?Nx3xf32> {
  %s = graph.elemwise(%a, %b) {mode = "add"} : (tensor<?Nx3xf32>, tensor<?Nx3xf32>) -> tensor<?Nx3xf32>
  return(%s)
}
"#;
    let mut ctx = strata::dialects::context();
    let m = strata::driver::parse_and_verify(&mut ctx, &strata::ir::Source::new("sum.strata", src), false).unwrap();
    let info = ModelInfo {
        inputs: vec![NamedIo { name: "a".into(), alias: None }, NamedIo { name: "b/in".into(), alias: None }],
        outputs: vec![NamedIo { name: "sum".into(), alias: None }],
        ..ModelInfo::default()
    };
    let path = dir.join("sum.smdl");
    std::fs::write(&path, write_model(&ctx, m, &info).unwrap()).unwrap();
    path
}

fn count(s: &str, needle: &str) -> usize {
    s.lines().filter(|l| l.contains(needle)).count()
}

#[test]
fn run_prints_megengine_timing_lines() {
    let dir = scratch("timing");
    let path = zoo_file(&dir, "mlp", vec![]);
    let out = strata(&["run", path.to_str().unwrap(), "--iter", "3", "--warmup", "2"]);
    let (so, se) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{se}");
    assert!(so.starts_with("load model: ") && so.lines().next().unwrap().ends_with(" ms"), "{so}");
    assert!(so.contains("=== prepare: ") && so.contains(" ms; going to warmup"), "{so}");
    assert_eq!(count(&so, "warm up "), 2, "{so}");
    assert_eq!(count(&so, ": e2e="), 3, "{so}");
    for i in 0..3 {
        assert!(so.contains(&format!("iter {i}/3: e2e=")), "{so}");
    }
    let finished = so.lines().find(|l| l.starts_with("=== finished test #0: ")).expect(&so);
    for key in ["time=", "avg_time=", "standard_deviation=", "min=", "median=", "max="] {
        assert!(finished.contains(key), "{finished}");
    }
    assert!(so.trim_end().lines().last().unwrap().starts_with("=== total time: "), "{so}");
    assert!(!so.contains("AssertEqual"), "{so}");
    assert!(se.contains("symbolic dims"), "the default batch of 1 is announced: {se}");
}

#[test]
fn io_dump_matches_the_reference_run() {
    let dir = scratch("iodump");
    let path = zoo_file(&dir, "lenet", vec![]);
    let dump = dir.join("io");
    let out = strata(&[
        "run",
        path.to_str().unwrap(),
        "--iter",
        "1",
        "--warmup",
        "0",
        "--input",
        "data:#rand(-1,1,2,...)",
        "--io-dump",
        dump.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("=== io dump: 2 files"), "{}", text(&out.stdout));
    let read = |f: &str| strata::feed::read_npy(&std::fs::read(dump.join(f)).unwrap()).unwrap();
    let (x, y) = (read("test0_input_data.npy"), read("test0_output_out.npy"));
    assert_eq!(x.shape(), &[2, 1, 28, 28], "the --input batch of 2 is used");
    let model = strata::load(&path).unwrap();
    assert_eq!(model.run(&[x]).unwrap(), vec![y]);
}

#[test]
fn profile_has_one_entry_per_op() {
    let dir = scratch("profile");
    let path = zoo_file(&dir, "resblock", vec![]);
    let (json, chrome) = (dir.join("p.json"), dir.join("c.json"));
    let out = strata(&[
        "run",
        path.to_str().unwrap(),
        "--iter",
        "2",
        "--profile",
        json.to_str().unwrap(),
        "--profile-chrome",
        chrome.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The JIT's profile: one entry per kernel launch.
    let model = strata::load(&path).unwrap();
    let x = TensorData::random_uniform(ElemType::F32, vec![1, 16, 16, 16], -1.0, 1.0, 1).unwrap();
    let kernels = model.jit().unwrap().compiled(&[x.shape().to_vec()]).unwrap().executable().steps().len();
    let p: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(p["schema"], "strata.profile/1");
    assert_eq!(p["engine"], "jit");
    assert_eq!(p["runs"], 2, "warm-up runs are not profiled");
    let ops = p["ops"].as_array().unwrap();
    assert_eq!(ops.len(), kernels);
    assert!(ops.iter().all(|o| o["calls"] == 2 && o["op"].as_str().unwrap().contains("_k")), "{ops:?}");
    let c: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&chrome).unwrap()).unwrap();
    assert_eq!(c.as_array().unwrap().len(), 2 * kernels);

    // The reference engine's profile: one entry per graph op.
    let out = strata(&[
        "run",
        path.to_str().unwrap(),
        "--iter",
        "2",
        "--engine",
        "interp",
        "--profile",
        json.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (ctx, module) = model.module();
    let main = strata::dialects::func::lookup_function(ctx, module, "main").unwrap();
    let body_ops = ctx.body_ops(main.0).len() - 1;
    let p: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(p["engine"], "reference");
    let ops = p["ops"].as_array().unwrap();
    assert_eq!(ops.len(), body_ops);
    assert!(ops.iter().all(|o| o["calls"] == 2 && o["op"].as_str().unwrap().contains('.')), "{ops:?}");
}

#[test]
fn engines_and_kernel_threads_run() {
    let dir = scratch("engines");
    let path = zoo_file(&dir, "resblock", vec![]);
    let mut outs = Vec::new();
    for args in [&["--engine", "interp"][..], &["--threads", "2"], &["--engine", "jit", "--threads", "1"]] {
        let io = dir.join(format!("io{}", outs.len()));
        let mut cmd = vec!["run", path.to_str().unwrap(), "--iter", "1", "--io-dump", io.to_str().unwrap()];
        cmd.extend_from_slice(args);
        let out = strata(&cmd);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        if args.contains(&"jit") || args.contains(&"--threads") {
            assert!(text(&out.stdout).contains("jit compile:"), "{}", text(&out.stdout));
        }
        outs.push(io);
    }
    let bad = strata(&["run", path.to_str().unwrap(), "--engine", "gpu"]);
    assert!(!bad.status.success() && text(&bad.stderr).contains("unknown engine"), "{}", text(&bad.stderr));
}

#[test]
fn embedded_testcases_are_checked() {
    let dir = scratch("testcases");
    let x = TensorData::random_uniform(ElemType::F32, vec![1, 784], -1.0, 1.0, 4).unwrap();
    let reference = strata::load(zoo_file(&dir, "mlp", vec![])).unwrap().run(std::slice::from_ref(&x)).unwrap();
    let good = Testcase {
        inputs: vec![("data".into(), x.clone())],
        outputs: vec![("out".into(), reference[0].clone())],
        maxerr: 1e-4,
        silent: false,
    };
    let wrong =
        TensorData::from_reals(ElemType::F32, reference[0].shape().to_vec(), &vec![5.0; reference[0].len()]).unwrap();
    let bad = Testcase {
        inputs: vec![("data".into(), x)],
        outputs: vec![("out".into(), wrong)],
        maxerr: 1e-4,
        silent: false,
    };

    let pass = zoo_file(&dir, "mlp", vec![good.clone(), good.clone()]);
    let out = strata(&["run", pass.to_str().unwrap(), "--iter", "1", "--input", "data:#rand(0,1)"]);
    let so = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(count(&so, "AssertEqual: output `out`: err=0 (maxerr=0.0001) ok"), 2, "{so}");
    assert!(so.contains("=== finished test #1: "), "each testcase is a test: {so}");
    assert!(text(&out.stderr).contains("replace --input"), "{}", text(&out.stderr));

    let fail = zoo_file(&dir, "mlp", vec![good, bad]);
    let out = strata(&["run", fail.to_str().unwrap(), "--iter", "1"]);
    let (so, se) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{so}{se}");
    assert!(so.contains("AssertEqual: output `out`: err=0 (maxerr=0.0001) ok"), "{so}");
    assert_eq!(count(&so, "(maxerr=0.0001) FAILED"), 1, "{so}");
    assert!(se.contains("1 of 2 testcase checks failed"), "{se}");
}

#[test]
fn threads_run_parallel_copies() {
    let dir = scratch("threads");
    let path = zoo_file(&dir, "mlp", vec![]);
    let out = strata(&["run", path.to_str().unwrap(), "--iter", "2", "--copies", "2"]);
    let so = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(count(&so, ": e2e="), 4, "{so}");
    for t in 0..2 {
        assert!(so.contains(&format!("[thread {t}] iter 1/2: e2e=")), "{so}");
        assert!(so.contains(&format!("[thread {t}] === finished test #0: ")), "{so}");
    }
    assert_eq!(count(&so, "=== total time: "), 1, "{so}");
}

#[test]
fn several_inputs_and_input_files() {
    let dir = scratch("inputs");
    let path = two_input_file(&dir);
    let p = path.to_str().unwrap();
    let specs = dir.join("specs.txt");
    std::fs::write(&specs, "a:#rand(0,1,2,...);b/in:#rand(0,1,2,...)\n#rand(0,1,4,3)\n").unwrap();
    let dump = dir.join("io");
    let at = format!("@{}", specs.display());
    let out = strata(&["run", p, "--iter", "1", "--input", &at, "--io-dump", dump.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("=== finished test #1: "), "one test per line");
    let read = |f: &str| strata::feed::read_npy(&std::fs::read(dump.join(f)).unwrap()).unwrap();
    let (a, b, s) = (read("test1_input_a.npy"), read("test1_input_b_in.npy"), read("test1_output_sum.npy"));
    assert_eq!(s.shape(), &[4, 3]);
    for i in 0..s.len() {
        assert!((s.get_real(i) - (a.get_real(i) + b.get_real(i))).abs() < 1e-6);
    }

    let out = strata(&["run", p, "--input", "a:#rand(0,1,2,...);b/in:#rand(0,1,3,...)"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("is 3 here but 2 in input `a`"), "{}", text(&out.stderr));
}

#[test]
fn errors_are_reported_not_panics() {
    let dir = scratch("errors");
    let path = zoo_file(&dir, "mlp", vec![]);
    let p = path.to_str().unwrap();
    let missing = dir.join("nope.smdl");
    let junk = dir.join("junk.smdl");
    std::fs::write(&junk, b"not a model").unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec![p, "--input", "nope:#rand(0,1)"], "the inputs are data"),
        (vec![p, "--input", "data:#rand(0,1,1,10)"], "dim 1 is 10, not 784"),
        (vec![p, "--input", "data:#rand(0,1,1,28,28)"], "rank 3 is not 2"),
        (vec![p, "--input", "data:#rand(0,1"], "bad --input"),
        (vec![p, "--input", "data:/no/such/file.npy"], "cannot read /no/such/file.npy"),
        (vec![missing.to_str().unwrap()], "cannot read"),
        (vec![junk.to_str().unwrap()], "loading model"),
        (vec![p, "--enable-nchw64"], "`--enable-nchw64`: not supported yet: enable_nchw64: NCHW64 is the int4 layout"),
        (vec![p, "--enable-nchw44", "--enable-nchw88"], "only one layout option"),
    ];
    for (args, want) in cases {
        let mut all = vec!["run"];
        all.extend(&args);
        let out = strata(&all);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out.stderr));
        assert!(text(&out.stderr).contains(want), "{args:?}: want `{want}` in {}", text(&out.stderr));
    }
    let zero = strata(&["run", p, "--iter", "0"]);
    assert_eq!(zero.status.code(), Some(2), "clap rejects --iter 0");
}
