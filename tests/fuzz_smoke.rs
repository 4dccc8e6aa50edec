//! Runs the fuzz targets' seed corpora (and every `tests/ir` file, plus
//! mutations of them) through the fuzz entry points on stable Rust, so CI covers
//! the targets without nightly or libFuzzer.

use std::path::{Path, PathBuf};

fn files(dir: &Path, ext: Option<&str>, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files(&path, ext, out);
        } else if ext.is_none_or(|e| path.extension().is_some_and(|x| x == e)) {
            out.push(path);
        }
    }
}

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut paths = Vec::new();
    files(&root.join("../fuzz/corpus").join(target), None, &mut paths);
    files(&root.join("ir"), Some("strata"), &mut paths);
    paths.sort();
    let mut out: Vec<Vec<u8>> = paths.iter().map(|p| std::fs::read(p).expect("readable corpus file")).collect();
    // Split multi-case files so each case is also an input of its own.
    let cases: Vec<Vec<u8>> = out
        .iter()
        .filter_map(|d| std::str::from_utf8(d).ok())
        .flat_map(|t| t.split("// -----").map(|c| c.as_bytes().to_vec()).collect::<Vec<_>>())
        .collect();
    out.extend(cases);
    out
}

/// Deterministic mutations: truncations, byte flips and deletions.
fn mutations(data: &[u8], seed: u64) -> Vec<Vec<u8>> {
    let mut rng = strata_ir::tensor::SplitMix64(seed);
    let mut out = Vec::new();
    if data.is_empty() {
        return out;
    }
    for _ in 0..24 {
        let i = (rng.next_u64() % data.len() as u64) as usize;
        let mut m = data.to_vec();
        match rng.next_u64() % 4 {
            0 => m.truncate(i),
            1 => {
                const BYTES: &[u8] = b"(){}[]<>,:=%@^#x?\"-0123456789";
                m[i] = BYTES[(rng.next_u64() % BYTES.len() as u64) as usize];
            }
            2 => {
                m.remove(i);
            }
            _ => m.insert(i, m[(rng.next_u64() % data.len() as u64) as usize]),
        }
        out.push(m);
    }
    out
}

#[test]
fn parse_print_corpus() {
    let inputs = corpus("parse_print");
    assert!(inputs.len() >= 10, "parse_print corpus is too small");
    for (k, data) in inputs.iter().enumerate() {
        strata_tests::fuzz::parse_print(data);
        for m in mutations(data, k as u64) {
            strata_tests::fuzz::parse_print(&m);
        }
    }
}

#[test]
fn pipeline_corpus() {
    let inputs = corpus("pipeline");
    assert!(inputs.len() >= 10, "pipeline corpus is too small");
    for (k, data) in inputs.iter().enumerate() {
        strata_tests::fuzz::pipeline(data);
        for m in mutations(data, 1000 + k as u64) {
            strata_tests::fuzz::pipeline(&m);
        }
    }
}

#[test]
fn load_model_corpus() {
    let mut inputs = corpus_files("load_model");
    for seed in 0..12 {
        let (ctx, m) = strata_tests::random_ir::random_graph_module(seed);
        inputs.push(strata_runtime::format::write_model(&ctx, m, &Default::default()).unwrap());
    }
    for (k, data) in inputs.iter().enumerate() {
        strata_tests::fuzz::load_model(data);
        for m in mutations(data, 2000 + k as u64) {
            strata_tests::fuzz::load_model(&m);
        }
    }
}

#[test]
fn jit_vs_reference_corpus() {
    let seeds = corpus_files("jit_vs_reference");
    assert!(seeds.len() >= 10, "jit_vs_reference corpus is too small");
    for (k, data) in seeds.iter().enumerate() {
        strata_tests::fuzz::jit_vs_reference(data);
        // Mutated text rarely parses, so most mutations become random graphs.
        for m in mutations(data, 3000 + k as u64).into_iter().take(6) {
            strata_tests::fuzz::jit_vs_reference(&m);
        }
    }
    // Random byte strings: each drives the graph generator.
    let mut rng = strata_ir::tensor::SplitMix64(0x6a17);
    for _ in 0..600 {
        let len = (rng.next_u64() % 96) as usize;
        let data: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        strata_tests::fuzz::jit_vs_reference(&data);
    }
}

#[test]
fn random_jit_modules_verify() {
    // A generator bug would make the target reject everything quietly.
    for seed in 0..400u64 {
        let mut rng = strata_ir::tensor::SplitMix64(seed);
        let data: Vec<u8> = (0..rng.next_u64() % 64).map(|_| rng.next_u64() as u8).collect();
        let text = strata_tests::random_ir::random_jit_module(&data);
        let mut ctx = strata_dialects::context();
        let source = strata_ir::Source::new("gen.strata", text.as_str());
        let m =
            strata_ir::parse_module(&mut ctx, &source, &Default::default()).unwrap_or_else(|e| panic!("{e}\n{text}"));
        if let Err(d) = strata_ir::verify(&ctx, m, Default::default()) {
            panic!("{}\n{text}", strata_ir::diag::render_all(&ctx, &d, None));
        }
    }
}

fn corpus_files(target: &str) -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut paths = Vec::new();
    files(&root.join("../fuzz/corpus").join(target), None, &mut paths);
    paths.sort();
    paths.iter().map(|p| std::fs::read(p).expect("readable corpus file")).collect()
}
