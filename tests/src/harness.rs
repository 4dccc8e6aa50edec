//! The snapshot harness over `tests/ir/**/*.strata`.
//!
//! A file holds cases separated by `// -----`. Directive comments, in the file's
//! first case (applying to every case) or in a case (overriding for it):
//!
//! | directive                 | meaning                                              |
//! |---------------------------|------------------------------------------------------|
//! | `// pipeline: TEXT`       | run this pipeline                                    |
//! | `// opt-level: N`         | run the pipeline of opt level N                      |
//! | `// expect: error`        | the case must fail; its diagnostic is snapshotted    |
//! | `// allow-unregistered`   | accept unregistered ops                              |
//! | `// check: numeric`       | compare every pass with the reference evaluator      |
//! | `// check: numeric tolerance=E` | the same with MegEngine's AssertEqual measure (`max |e-a| / max(min(|e|,|a|), 1) <= E`), for precision-changing passes (f16) |
//! | `// check: none`          | turn that off again (for one case)                   |
//! | `// print: large-consts`  | print constants in full                              |
//! | `// print: locs`          | print locations                                      |
//!
//! For each case: parse, verify, round-trip check, run the pipeline with
//! verify-each, print, round-trip check again. The snapshot shows each case's
//! pipeline and result (or diagnostic).

use strata::driver::{OptConfig, check_roundtrip, optimize, parse_and_verify, pass_manager};
use strata_ir::pass::Instrumentation;
use strata_ir::{PrintOptions, Source};
use strata_passes::pipelines::OptLevel;

/// The directives in force for a case.
#[derive(Clone, Debug, Default)]
pub struct Directives {
    /// `// pipeline:`.
    pub pipeline: Option<String>,
    /// `// opt-level:`.
    pub opt_level: Option<String>,
    /// `// expect: error`.
    pub expect_error: bool,
    /// `// allow-unregistered`.
    pub allow_unregistered: bool,
    /// `// check: numeric`.
    pub check: bool,
    /// `// check: numeric tolerance=E`: the checker's looser bound, if any.
    pub tolerance: Option<f64>,
    /// `// print: large-consts`.
    pub print_large_consts: bool,
    /// `// print: locs`.
    pub print_locs: bool,
}

impl Directives {
    fn read(&mut self, text: &str) -> Result<(), String> {
        for line in text.lines() {
            let Some(c) = line.trim().strip_prefix("//") else {
                continue;
            };
            let c = c.trim();
            if let Some(p) = c.strip_prefix("pipeline:") {
                self.pipeline = Some(p.trim().to_string());
                self.opt_level = None;
            } else if let Some(l) = c.strip_prefix("opt-level:") {
                self.opt_level = Some(l.trim().to_string());
                self.pipeline = None;
            } else if c == "expect: error" {
                self.expect_error = true;
            } else if c == "allow-unregistered" {
                self.allow_unregistered = true;
            } else if c == "check: numeric" {
                self.check = true;
                self.tolerance = None;
            } else if let Some(t) = c.strip_prefix("check: numeric tolerance=") {
                let t = t.trim().parse::<f64>().ok().filter(|t| *t >= 0.0);
                self.tolerance = Some(t.ok_or_else(|| format!("bad tolerance in `{line}`"))?);
                self.check = true;
            } else if c == "check: none" {
                self.check = false;
                self.tolerance = None;
            } else if c == "print: large-consts" {
                self.print_large_consts = true;
            } else if c == "print: locs" {
                self.print_locs = true;
            } else if let Some(unknown) =
                c.strip_prefix("expect:").or_else(|| c.strip_prefix("print:")).or_else(|| c.strip_prefix("check:"))
            {
                return Err(format!("unknown directive value `{}` in `{line}`", unknown.trim()));
            }
        }
        Ok(())
    }
}

/// One case of a file.
#[derive(Clone, Debug)]
pub struct Case {
    /// 1-based line of the case's first line in the file.
    pub first_line: usize,
    /// The case text.
    pub text: String,
}

/// Splits a file at `// -----` lines.
pub fn split_cases(text: &str) -> Vec<Case> {
    let mut cases = Vec::new();
    let mut current = String::new();
    let mut first_line = 1;
    for (i, line) in text.lines().enumerate() {
        if line.trim() == "// -----" {
            cases.push(Case { first_line, text: std::mem::take(&mut current) });
            first_line = i + 2;
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    cases.push(Case { first_line, text: current });
    cases
}

/// Runs one case; `Ok` is the snapshot text, `Err` a harness failure.
pub fn run_case(file: &str, case: &Case, header: &Directives) -> Result<String, String> {
    let mut d = header.clone();
    d.read(&case.text)?;
    // Pad so diagnostics carry the line numbers of the file.
    let padded = format!("{}{}", "\n".repeat(case.first_line - 1), case.text);
    let source = Source::new(file, padded);
    let print_options =
        PrintOptions { print_large_consts: d.print_large_consts, print_locs: d.print_locs, ..PrintOptions::default() };
    let opt_level = match &d.opt_level {
        Some(l) => Some(
            l.parse::<i64>()
                .map_err(|_| format!("bad opt-level `{l}`"))
                .and_then(|l| OptLevel::new(l).map_err(|e| e.to_string()))?,
        ),
        None => None,
    };
    let config = OptConfig {
        pipeline: d.pipeline.clone(),
        opt_level,
        check_each: d.check,
        instrumentation: Instrumentation {
            verify_each: true,
            allow_unregistered: d.allow_unregistered,
            print_options: print_options.clone(),
            ..Instrumentation::default()
        },
    };
    let mut header_line = format!("// pipeline: {}", config.pipeline_text());
    if let Some(t) = d.tolerance {
        header_line.push_str(&format!("  (checked numerically within {t:e})"));
    } else if config.checks() {
        header_line.push_str("  (checked numerically)");
    }
    let result = (|| -> Result<String, String> {
        let mut ctx = strata_dialects::context();
        let module = parse_and_verify(&mut ctx, &source, d.allow_unregistered).map_err(|e| e.to_string())?;
        check_roundtrip(&ctx, module, &print_options, d.allow_unregistered).map_err(|e| format!("HARNESS: {e}"))?;
        match d.tolerance {
            None => optimize(&mut ctx, module, &config).map(drop).map_err(|e| e.to_string())?,
            Some(t) => {
                let registry = strata_passes::registry();
                let unchecked = OptConfig { check_each: false, ..config.clone() };
                let pm = pass_manager(&registry, &unchecked).map_err(|e| e.to_string())?;
                let mut pm = pm.with_checker(strata_passes::check::numeric_checker_within(0x5eed, t));
                pm.run(&mut ctx, module).map_err(|e| e.to_string())?;
            }
        }
        check_roundtrip(&ctx, module, &print_options, d.allow_unregistered).map_err(|e| format!("HARNESS: {e}"))
    })();
    match (result, d.expect_error) {
        (Ok(out), false) => Ok(format!("{header_line}\n{out}")),
        (Err(e), true) if !e.starts_with("HARNESS:") => Ok(format!("{header_line}\n// error:\n{e}\n")),
        (Ok(out), true) => Err(format!("expected an error, but the case succeeded:\n{out}")),
        (Err(e), _) => Err(e),
    }
}

/// Runs every case of a file and joins their outputs (panics on a harness failure).
pub fn run_file(file: &str, text: &str) -> String {
    let cases = split_cases(text);
    let mut header = Directives::default();
    if let Some(first) = cases.first() {
        if let Err(e) = header.read(&first.text) {
            panic!("{file}: {e}");
        }
        header.expect_error = false;
    }
    let mut out = String::new();
    for (i, case) in cases.iter().enumerate() {
        match run_case(file, case, &header) {
            Ok(text) => {
                out.push_str(&format!("// ----- case {} (line {}) -----\n{text}", i + 1, case.first_line));
            }
            Err(e) => panic!("{file}: case {} (line {}): {e}", i + 1, case.first_line),
        }
    }
    out
}
