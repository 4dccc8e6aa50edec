//! strata-passes: every transformation of strata, one pass per file, and the
//! `opt_level` → pipeline mapping.
//!
//! Passes are registered by name in [`registry`], the one list `strata opt
//! --list-passes` prints. Adding a pass: a file with a `//!` contract, the
//! struct, `impl Pass`, a `pub const INFO: PassInfo`, tests; one line below.

pub mod check;
pub mod cleanup;
pub mod eqsat;
pub mod f16;
pub mod layout;
pub mod lower;
pub mod pipelines;

use strata_ir::pass::{PassInfo, PassRegistry};

/// Every registered pass.
pub const PASSES: &[PassInfo] = &[
    cleanup::canonicalize::INFO,
    cleanup::cse::INFO,
    cleanup::dce::INFO,
    eqsat::INFO,
    f16::IO_F32_COMP_INFO,
    f16::IO_COMP_INFO,
    layout::padding_channel::INFO,
    layout::nchwxx::INFO,
    layout::cancel_relayouts::INFO,
    lower::promote_f16::INFO,
    lower::INFO,
];

/// A registry holding every pass.
pub fn registry() -> PassRegistry {
    let mut r = PassRegistry::new();
    for &info in PASSES {
        r.register(info);
    }
    r
}

#[cfg(test)]
pub(crate) mod testing {
    //! Helpers for pass unit tests: parse, run a pipeline with verification, print.

    use strata_ir::pass::PassManager;
    use strata_ir::{ParseOptions, PrintOptions, Source, VerifyOptions, parse_module, print_module, verify};

    /// Parses `src`, runs `pipeline` with verify-each, returns the printed result.
    pub fn run(pipeline: &str, src: &str) -> String {
        let mut ctx = strata_dialects::context();
        let m = parse_module(&mut ctx, &Source::new("test.strata", src), &ParseOptions::default())
            .unwrap_or_else(|e| panic!("{e}"));
        verify(&ctx, m, VerifyOptions::default()).expect("input verifies");
        let reg = crate::registry();
        let mut pm = PassManager::parse(&reg, pipeline).unwrap_or_else(|e| panic!("{e}"));
        pm.instrumentation.verify_each = true;
        pm.run(&mut ctx, m).unwrap_or_else(|e| panic!("{e}"));
        print_module(&ctx, m, &PrintOptions::default())
    }
}
