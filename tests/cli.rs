//! End-to-end tests of the `strata` binary: exit codes, diagnostics, outputs.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn strata(args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_strata"));
    cmd.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("strata runs");
    if let Some(text) = stdin {
        child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write stdin");
    }
    drop(child.stdin.take());
    child.wait_with_output().expect("strata finishes")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const MODULE: &str = r#"func @f(%x: tensor<4xf32>) -> tensor<4xf32> {
  %one = graph.const() {value = dense<1.0> : tensor<4xf32>} : () -> tensor<4xf32>
  %a = graph.elemwise(%x, %one) {mode = "mul"} : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
  %b = graph.elemwise(%a) {mode = "relu"} : (tensor<4xf32>) -> tensor<4xf32>
  return(%b)
}
"#;

#[test]
fn list_passes_shows_names_summaries_and_options() {
    let out = strata(&["opt", "--list-passes"], None);
    assert!(out.status.success());
    let s = text(&out.stdout);
    for needle in ["canonicalize", "cse", "dce", "max-iters: uint = 10", "fixpoint"] {
        assert!(s.contains(needle), "missing {needle} in:\n{s}");
    }
}

#[test]
fn opt_level_pipeline_runs_from_stdin() {
    let out = strata(&["opt", "-O", "2", "--print-pipeline"], Some(MODULE));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    assert!(!s.contains("graph.mul") && s.contains("graph.elemwise(%x) {mode = \"relu\"}"), "{s}");
    assert!(text(&out.stderr).contains("pipeline: canonicalize,cse,eqsat,cse,dce"), "{}", text(&out.stderr));
}

#[test]
fn negative_opt_level_is_accepted_and_checks() {
    let out = strata(&["opt", "-O", "-2"], Some(MODULE));
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn out_of_range_opt_level_is_an_error() {
    let out = strata(&["opt", "-O", "9"], Some(MODULE));
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("-3..=3"), "{}", text(&out.stderr));
}

#[test]
fn parse_error_is_located_with_caret_and_nonzero_exit() {
    let dir = std::env::temp_dir().join(format!("strata-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.strata");
    std::fs::write(
        &path,
        "func @f() {\n  %0 = graph.elemwise(%nope) {mode = \"relu\"} : (tensor<2xf32>) -> tensor<2xf32>\n}\n",
    )
    .unwrap();
    let out = strata(&["opt", path.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("bad.strata:2:23: error: use of undefined value %nope"), "{err}");
    assert!(err.contains("^^^^^"), "{err}");
}

#[test]
fn verifier_errors_are_all_reported() {
    let src = r#"func @f(%x: tensor<2xf32>) -> tensor<2xf32> {
  %0 = graph.elemwise(%x) {bogus = 1, mode = "relu"} : (tensor<2xf32>) -> tensor<3xf32>
  return(%x, %x)
}
"#;
    let out = strata(&["opt"], Some(src));
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("unknown attribute `bogus`"), "{err}");
    assert!(
        err.contains("result #0 has type tensor<3xf32> but its operands and attributes give tensor<2xf32>"),
        "{err}"
    );
    assert!(err.contains("returns 2 values"), "{err}");
}

#[test]
fn unknown_pass_option_lists_valid_options() {
    let out = strata(&["opt", "--pipeline", "canonicalize{iters=2}"], Some(MODULE));
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("unknown option `iters`") && err.contains("max-iters (uint)"), "{err}");
}

#[test]
fn print_ir_after_change_and_timing_go_to_stderr() {
    let out =
        strata(&["opt", "--pipeline", "canonicalize,cse,dce", "--print-ir-after-change", "--timing"], Some(MODULE));
    assert!(out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("IR Dump After canonicalize"), "{err}");
    assert!(!err.contains("IR Dump After cse"), "cse changed nothing:\n{err}");
    assert!(err.contains("Pass execution timing report") && err.contains("ops-folded = 1"), "{err}");
}

#[test]
fn unknown_print_ir_after_pass_is_an_error() {
    let out = strata(&["opt", "--print-ir-after", "nope"], Some(MODULE));
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("unknown pass `nope`"));
}

#[test]
fn output_file_and_roundtrip() {
    let dir = std::env::temp_dir().join(format!("strata-cli-out-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let first = dir.join("a.strata");
    let out = strata(&["opt", "-o", first.to_str().unwrap()], Some(MODULE));
    assert!(out.status.success());
    let printed = std::fs::read_to_string(&first).unwrap();
    let again = strata(&["opt", first.to_str().unwrap()], None);
    assert_eq!(text(&again.stdout), printed);
}

#[test]
fn unregistered_ops_need_the_flag() {
    let src = "func @f(%x: tensor<2xf32>) {\n  my.op(%x)\n  return()\n}\n";
    assert!(!strata(&["opt"], Some(src)).status.success());
    let out = strata(&["opt", "--allow-unregistered"], Some(src));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("my.op(%x)"));
}

#[test]
fn demo_runs_and_checks_against_the_reference() {
    let out = strata(&["demo", "--model", "lenet"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    assert!(s.contains("recorded graph") && s.contains("compiled runs match eager execution"), "{s}");
}

#[test]
fn rust_log_is_honoured() {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_strata"));
    cmd.args(["opt", "-O", "2"])
        .env("RUST_LOG", "info")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    child.stdin.take().unwrap().write_all(MODULE.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(text(&out.stderr).contains("pass finished"), "{}", text(&out.stderr));
}

#[test]
fn zoo_lists_models_with_params_and_flops() {
    let out = strata(&["zoo"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    for name in ["mlp", "lenet", "resnet18", "resnet50", "mobilenet_v2", "preprocess_net", "resblock"] {
        assert!(s.contains(name), "{name} missing:\n{s}");
    }
    // resnet18: 11.7 M parameters, about 3.6 GFLOPs at 224x224.
    let line = s.lines().find(|l| l.starts_with("resnet18")).unwrap();
    assert!(line.contains("11689512"), "{line}");
}

#[test]
fn trace_writes_ir_that_opt_accepts() {
    let dir = std::env::temp_dir().join(format!("strata-cli-trace-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("lenet.strata");
    let out = strata(&["trace", "lenet", "--record-only", "--batch", "2", "-o", file.to_str().unwrap()], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let ir = std::fs::read_to_string(&file).unwrap();
    assert!(ir.contains("graph.conv_bias") && ir.contains("tensor<?Nx1x28x28xf32>"), "{ir}");
    let opt = strata(&["opt", file.to_str().unwrap(), "-O", "2"], None);
    assert!(opt.status.success(), "{}", text(&opt.stderr));
    let fixed = strata(&["trace", "mlp", "--symbolic-shape=false", "--batch", "3"], None);
    assert!(text(&fixed.stdout).contains("tensor<3x784xf32>"), "{}", text(&fixed.stdout));
    let bad = strata(&["trace", "nosuchnet"], None);
    assert!(!bad.status.success() && text(&bad.stderr).contains("unknown model"));
}

fn small_model_file(dir: &std::path::Path) -> std::path::PathBuf {
    use strata::runtime::format::{Metadata, ModelInfo, NamedIo, write_model};
    use strata::{Tensor, TraceOptions, trace, zoo};
    let model = zoo::build("resblock", 0).unwrap();
    let mut t =
        trace(|a: &[Tensor]| model.forward(&a[0]), TraceOptions { record_only: true, ..TraceOptions::default() })
            .unwrap();
    t.call(&[model.random_input(1, 0).unwrap()]).unwrap();
    t.compile().unwrap();
    let (ctx, m) = t.compiled_module().unwrap();
    let info = ModelInfo {
        producer: "strata tests".into(),
        model_version: 2,
        metadata: Some(Metadata {
            is_valid: true,
            graph_modified: false,
            user_info: b"resblock demo".to_vec(),
            optimize_options: 0,
        }),
        inputs: vec![NamedIo { name: "data".into(), alias: None }],
        outputs: vec![NamedIo { name: "out".into(), alias: None }],
        ..ModelInfo::default()
    };
    let path = dir.join("resblock.smdl");
    std::fs::write(&path, write_model(ctx, m, &info).unwrap()).unwrap();
    path
}

#[test]
fn info_describes_a_model_file() {
    let dir = std::env::temp_dir().join(format!("strata-cli-info-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = small_model_file(&dir);
    let out = strata(&["info", path.to_str().unwrap()], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    insta::assert_snapshot!("info_resblock", text(&out.stdout));
    let json = strata(&["info", "--json", path.to_str().unwrap()], None);
    let j = text(&json.stdout);
    assert!(
        j.starts_with('{') && j.contains("\"user_info\": \"resblock demo\"") && j.contains("\"graph.conv_bias\": 1"),
        "{j}"
    );
    std::fs::write(dir.join("bad.smdl"), b"definitely not a model").unwrap();
    let bad = strata(&["info", dir.join("bad.smdl").to_str().unwrap()], None);
    assert_eq!(bad.status.code(), Some(1));
    assert!(text(&bad.stderr).contains("not a strata model file"), "{}", text(&bad.stderr));
}

#[test]
fn the_example_module_optimises() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/residual.strata");
    let out = strata(&["opt", path, "-O", "-2", "--explain-fusions"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    // x·scale + bias and x·scale + r become fma3; the identities, the duplicate and the dead op go.
    assert_eq!(s.matches("graph.elemwise").count(), 3, "{s}");
    assert_eq!(s.matches("mode = \"fma3\"").count(), 2, "{s}");
    let why = text(&out.stderr);
    assert!(why.contains("[eqsat] fma3: fused mul at") && why.contains("via mul-add-fma3"), "{why}");
}
