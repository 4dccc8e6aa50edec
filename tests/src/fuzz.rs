//! Fuzz entry points, shared by the cargo-fuzz targets (`fuzz/`) and the stable
//! smoke test that runs their seed corpora in `cargo test`.
//!
//! Each panics exactly when it finds a bug: a panic inside strata, a module that
//! verifies but does not round-trip, or a pass that changes a function's results.

use strata::driver::{OptConfig, check_roundtrip, optimize};
use strata_ir::pass::{Instrumentation, PassError};
use strata_ir::{ParseOptions, PrintOptions, Source, VerifyOptions, parse_module, print_module, verify};

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
    let config = OptConfig {
        pipeline: Some(pipeline),
        check_each: true,
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
