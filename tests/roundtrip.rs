//! Property tests over random graph functions: every generated module verifies,
//! round-trips through text, and keeps its results (within tolerance) through
//! every opt level's pipeline, compared with the reference evaluator.

use strata::driver::{OptConfig, check_roundtrip, optimize};
use strata_ir::pass::Instrumentation;
use strata_ir::{PrintOptions, VerifyOptions, verify};
use strata_passes::check::{compare, random_inputs};
use strata_passes::pipelines::OptLevel;

const SEEDS: u64 = 300;

#[test]
fn random_modules_verify_and_roundtrip() {
    for seed in 0..SEEDS {
        let (ctx, module) = strata_tests::random_ir::random_graph_module(seed);
        if let Err(d) = verify(&ctx, module, VerifyOptions::default()) {
            panic!("seed {seed}: generated module does not verify:\n{}", strata_ir::diag::render_all(&ctx, &d, None));
        }
        for print_large_consts in [false, true] {
            let opts = PrintOptions { print_large_consts, ..PrintOptions::default() };
            check_roundtrip(&ctx, module, &opts, false).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        }
    }
}

#[test]
fn every_opt_level_preserves_results() {
    for seed in 0..SEEDS {
        for level in [1, 2, 3] {
            let (mut ctx, module) = strata_tests::random_ir::random_graph_module(seed);
            let before = ctx.clone();
            let config = OptConfig {
                opt_level: Some(OptLevel::new(level).unwrap()),
                instrumentation: Instrumentation { verify_each: true, ..Instrumentation::default() },
                ..OptConfig::default()
            };
            optimize(&mut ctx, module, &config).unwrap_or_else(|e| panic!("seed {seed} -O{level}: {e}"));
            let inputs = random_inputs(&before, module, "main", seed).unwrap();
            let expected = strata_dialects::interp::run(&before, module, "main", &inputs).unwrap();
            let actual = strata_dialects::interp::run(&ctx, module, "main", &inputs)
                .unwrap_or_else(|e| panic!("seed {seed} -O{level}: {e}"));
            compare(&expected, &actual).unwrap_or_else(|e| {
                panic!(
                    "seed {seed} -O{level}: {e}\n{}",
                    strata_ir::print_module(&ctx, module, &PrintOptions::default())
                )
            });
            check_roundtrip(&ctx, module, &PrintOptions::default(), false).unwrap();
        }
    }
}

#[test]
fn negative_opt_level_checks_each_pass() {
    for seed in 0..40 {
        let (mut ctx, module) = strata_tests::random_ir::random_graph_module(seed);
        let config = OptConfig { opt_level: Some(OptLevel::new(-2).unwrap()), ..OptConfig::default() };
        optimize(&mut ctx, module, &config).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    }
}

/// A deliberately wrong pass (`relu(x) -> x`) must be caught by the numeric checker.
#[test]
fn numeric_checker_catches_a_miscompile() {
    use strata_ir::pass::{Changed, Pass, PassError, PassInfo, PassManager, PassOptions, PassRegistry, PassStats};
    use strata_ir::{Context, OpId, Rewriter};

    struct DropRelu;
    impl Pass for DropRelu {
        fn name(&self) -> &'static str {
            "drop-relu"
        }
        fn run(&mut self, ctx: &mut Context, module: OpId, _: &mut PassStats) -> Result<Changed, PassError> {
            let mut rw = Rewriter::new(ctx);
            for op in rw.ctx().walk(module) {
                let mode = rw.ctx().op_attr(op, "mode").map(|a| strata_ir::attr_to_string(rw.ctx(), a));
                if mode.as_deref() == Some("\"relu\"") {
                    let input = rw.ctx().op(op).operands[0];
                    rw.replace_op(op, &[input]);
                }
            }
            Ok(Changed::from_bool(rw.changed()))
        }
    }
    let mut reg = PassRegistry::new();
    reg.register(PassInfo {
        name: "drop-relu",
        summary: "wrong on purpose",
        options: &[],
        create: |_: &PassOptions| Ok(Box::new(DropRelu)),
    });
    let src = r#"func @main(%x: tensor<8xf32>) -> tensor<8xf32> {
  %0 = graph.elemwise(%x) {mode = "relu"} : (tensor<8xf32>) -> tensor<8xf32>
  return(%0)
}"#;
    let mut ctx = strata_dialects::context();
    let m = strata_ir::parse_module(&mut ctx, &strata_ir::Source::new("t", src), &Default::default()).unwrap();
    let mut pm = PassManager::parse(&reg, "drop-relu").unwrap().with_checker(strata_passes::check::numeric_checker(3));
    let err = pm.run(&mut ctx, m).unwrap_err();
    assert!(matches!(err, PassError::Check { .. }), "{err}");
    assert!(err.to_string().contains("drop-relu") && err.to_string().contains("expected"), "{err}");
}
