//! The model file format: every module round-trips through a file exactly, and
//! damaged or hostile files give errors, never panics.

use strata_ir::{Context, OpId, PrintOptions, print_module};
use strata_runtime::format::{
    DumpFormat, FormatError, Metadata, ModelInfo, NamedIo, Testcase, read_model, write_model, write_model_as,
};

fn full(ctx: &Context, m: OpId) -> String {
    print_module(ctx, m, &PrintOptions { print_large_consts: true, print_locs: true, ..PrintOptions::default() })
}

fn roundtrip(ctx: &Context, m: OpId, info: &ModelInfo) -> (Vec<u8>, Context, OpId, ModelInfo) {
    // The FBS layout must read back to the same module and info as FBS_V2.
    let fbs = write_model_as(ctx, m, info, DumpFormat::Fbs).unwrap();
    let mut from_fbs = strata_dialects::context();
    let (mf, info_f) = read_model(&fbs, &mut from_fbs).unwrap_or_else(|e| panic!("FBS: {e}"));
    assert_eq!(full(ctx, m), full(&from_fbs, mf));
    let bytes = write_model(ctx, m, info).unwrap();
    let mut back = strata_dialects::context();
    let (m2, info2) = read_model(&bytes, &mut back).unwrap_or_else(|e| panic!("{e}\n{}", full(ctx, m)));
    assert_eq!(full(ctx, m), full(&back, m2));
    assert_eq!(info_f, info2);
    (bytes, back, m2, info2)
}

#[test]
fn random_modules_roundtrip_exactly() {
    for seed in 0..200 {
        let (ctx, m) = strata_tests::random_ir::random_graph_module(seed);
        roundtrip(&ctx, m, &ModelInfo::default());
    }
}

#[test]
fn every_ir_test_file_roundtrips() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("ir");
    let mut stack = vec![root];
    let mut n = 0;
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for case in strata_tests::harness::split_cases(&text) {
                let mut ctx = strata_dialects::context();
                let source = strata_ir::Source::new("case", case.text.clone());
                let Ok(m) = strata::driver::parse_and_verify(&mut ctx, &source, false) else { continue };
                roundtrip(&ctx, m, &ModelInfo::default());
                n += 1;
            }
        }
    }
    assert!(n >= 20, "only {n} cases round-tripped");
}

fn traced(name: &str) -> (Context, OpId) {
    use strata::{Tensor, TraceOptions, trace, zoo};
    let model = zoo::build(name, 3).unwrap();
    let mut t =
        trace(|a: &[Tensor]| model.forward(&a[0]), TraceOptions { record_only: true, ..TraceOptions::default() })
            .unwrap();
    t.call(&[model.random_input(1, 0).unwrap()]).unwrap();
    t.compile().unwrap();
    let (ctx, m) = t.compiled_module().unwrap();
    (ctx.clone(), m)
}

#[test]
fn traced_models_roundtrip_and_run_the_same() {
    for name in ["lenet", "resblock", "preprocess_net"] {
        let (ctx, m) = traced(name);
        let info = ModelInfo {
            producer: "strata-test".into(),
            model_version: 2,
            metadata: Some(Metadata {
                is_valid: true,
                graph_modified: false,
                user_info: b"hello".to_vec(),
                optimize_options: 1 << 2,
            }),
            inputs: vec![NamedIo { name: "data".into(), alias: None }],
            outputs: vec![NamedIo { name: "prob".into(), alias: Some("out".into()) }],
            testcases: vec![],
            format_version: (0, 0),
        };
        let (_, back, m2, info2) = roundtrip(&ctx, m, &info);
        assert_eq!(info2.metadata, info.metadata);
        assert_eq!((info2.inputs.clone(), info2.outputs.clone()), (info.inputs.clone(), info.outputs.clone()));
        assert_eq!((info2.producer.as_str(), info2.model_version), ("strata-test", 2));
        let inputs = strata_passes::check::random_inputs(&ctx, m, "main", 5).unwrap();
        let a = strata_dialects::interp::run(&ctx, m, "main", &inputs).unwrap();
        let b = strata_dialects::interp::run(&back, m2, "main", &inputs).unwrap();
        assert_eq!(a, b, "{name}");
    }
}

#[test]
fn testcases_roundtrip() {
    let (ctx, m) = traced("resblock");
    let x = strata_ir::TensorData::random_uniform(strata_ir::ElemType::F32, vec![1, 16, 16, 16], -1.0, 1.0, 1).unwrap();
    let y = strata_dialects::interp::run(&ctx, m, "main", std::slice::from_ref(&x)).unwrap().remove(0);
    let info = ModelInfo {
        testcases: vec![Testcase {
            inputs: vec![("data".into(), x)],
            outputs: vec![("out".into(), y)],
            maxerr: 1e-4,
            silent: false,
        }],
        ..ModelInfo::default()
    };
    let (_, _, _, info2) = roundtrip(&ctx, m, &info);
    assert_eq!(info2.testcases, info.testcases);
}

fn sample_file() -> Vec<u8> {
    let (ctx, m) = traced("lenet");
    write_model(&ctx, m, &ModelInfo::default()).unwrap()
}

fn sample_fbs_file() -> Vec<u8> {
    let (ctx, m) = traced("lenet");
    write_model_as(&ctx, m, &ModelInfo::default(), DumpFormat::Fbs).unwrap()
}

/// Checks that every constant of lenet of 64 bytes or more starts `align`-aligned in `file`.
fn assert_constants_aligned(file: &[u8], align: usize) {
    let (ctx, m) = traced("lenet");
    let mut checked = 0;
    for op in ctx.walk(m) {
        let Some(t) = ctx.op(op).results.first().and_then(|&r| ctx.constant_value(r)) else { continue };
        if t.bytes().len() < 64 {
            continue;
        }
        let at = file.windows(t.bytes().len()).position(|w| w == t.bytes()).expect("constant bytes are in the file");
        assert_eq!(at % align, 0, "constant at byte {at} is not {align}-byte aligned");
        checked += 1;
    }
    assert!(checked >= 4, "only {checked} constants checked");
}

#[test]
fn fbs_v2_keeps_inline_tensor_data_8_byte_aligned() {
    let (ctx, m) = traced("lenet");
    assert_constants_aligned(&write_model(&ctx, m, &ModelInfo::default()).unwrap(), 8);
}

#[test]
fn fbs_layout_aligns_tensor_data_and_survives_damage() {
    let good = sample_fbs_file();
    assert!(good.starts_with(strata_runtime::format::FBS_MAGIC));
    read(&good).unwrap();
    // Every constant's bytes sit in the raw region, 64-byte aligned in the file.
    assert_constants_aligned(&good, 64);
    for k in 0..64 {
        assert!(read(&good[..good.len() * k / 64]).is_err(), "truncation {k}/64 must fail");
    }
    let mut rng = strata_ir::tensor::SplitMix64(5);
    for _ in 0..300 {
        let mut bad = good.clone();
        let i = (rng.next_u64() % bad.len() as u64) as usize;
        bad[i] ^= 1 << (rng.next_u64() % 8);
        let _ = read(&bad);
    }
    let mut huge = good.clone();
    huge[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(read(&huge).unwrap_err().to_string().contains("outside"), "a graph offset past the end is an error");
}

fn read(bytes: &[u8]) -> Result<(), FormatError> {
    let mut ctx = strata_dialects::context();
    read_model(bytes, &mut ctx).map(|_| ())
}

#[test]
fn damaged_files_are_errors_not_panics() {
    let good = sample_file();
    read(&good).unwrap();
    let mut rng = strata_ir::tensor::SplitMix64(11);
    let mut errors = 0;
    for k in 0..64 {
        let cut = good.len() * k / 64;
        errors += usize::from(read(&good[..cut]).is_err());
    }
    assert_eq!(errors, 64, "every truncation must fail");
    for _ in 0..400 {
        let mut bad = good.clone();
        let i = (rng.next_u64() % bad.len() as u64) as usize;
        bad[i] ^= 1 << (rng.next_u64() % 8);
        let _ = read(&bad);
    }
    for _ in 0..100 {
        let mut bad = good.clone();
        let start = (rng.next_u64() % bad.len() as u64) as usize;
        let len = ((rng.next_u64() % 256) as usize).min(bad.len() - start);
        bad[start..start + len].fill(0);
        let _ = read(&bad);
    }
    let random: Vec<u8> = (0..good.len()).map(|_| rng.next_u64() as u8).collect();
    assert!(read(&random).is_err());
    assert!(matches!(read(b"short"), Err(FormatError::NotAModel(_))));
}

#[test]
fn newer_major_versions_are_rejected_by_name() {
    let good = sample_file();
    // Find the format_major field by writing a second file whose only difference is the value.
    let mut ctx = strata_dialects::context();
    let (m, info) = read_model(&good, &mut ctx).unwrap();
    let again = write_model(&ctx, m, &info).unwrap();
    assert!(good == again, "writing what was read gives the same bytes");
    let needle = strata_runtime::format::FORMAT_MAJOR.to_le_bytes();
    let mut found = false;
    for i in 0..good.len() - 1 {
        if good[i..i + 2] == needle {
            let mut future = good.clone();
            future[i..i + 2].copy_from_slice(&(strata_runtime::format::FORMAT_MAJOR + 1).to_le_bytes());
            if let Err(FormatError::NewerVersion { file_major, ours_major, .. }) = read(&future) {
                assert_eq!(file_major, ours_major + 1);
                let msg = read(&future).unwrap_err().to_string();
                assert!(
                    msg.contains(&format!("{}.", ours_major + 1)) && msg.contains(&format!("{ours_major}.")),
                    "{msg}"
                );
                found = true;
                break;
            }
        }
    }
    assert!(found, "could not produce a future-version file");
}
