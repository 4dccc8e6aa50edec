//! Loading model files: [`load`] reads and verifies a file, [`LoadedModel`] runs
//! it (on the reference executor until the JIT lands) and checks its embedded
//! testcases with MegEngine's AssertEqual measure.

use crate::error::{Error, Result};
use crate::feed::assert_equal_error;
use std::path::Path;
use strata_ir::{Context, OpId, TensorData};
use strata_runtime::format::{ModelInfo, read_model};

/// A model read from a file.
#[derive(Debug)]
pub struct LoadedModel {
    ctx: Context,
    module: OpId,
    info: ModelInfo,
}

/// The outcome of one embedded testcase.
#[derive(Clone, Debug, PartialEq)]
pub struct TestcaseResult {
    /// Testcase index.
    pub index: usize,
    /// AssertEqual error per output, by name.
    pub errors: Vec<(String, f64)>,
    /// The largest accepted error.
    pub maxerr: f64,
}

impl TestcaseResult {
    /// Whether every output is within `maxerr` (NaN fails).
    pub fn passed(&self) -> bool {
        self.errors.iter().all(|(_, e)| *e <= self.maxerr)
    }
}

/// Reads and verifies the model file at `path`.
pub fn load(path: impl AsRef<Path>) -> Result<LoadedModel> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| Error::Invalid(format!("cannot read {}: {e}", path.display())))?;
    load_bytes(&bytes).map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))
}

/// Reads and verifies a model from bytes.
pub fn load_bytes(bytes: &[u8]) -> Result<LoadedModel> {
    let mut ctx = strata_dialects::context();
    let (module, info) = read_model(bytes, &mut ctx).map_err(|e| Error::Invalid(e.to_string()))?;
    if strata_dialects::func::lookup_function(&ctx, module, "main").is_none() {
        return Err(Error::Invalid("the model has no @main function".into()));
    }
    Ok(LoadedModel { ctx, module, info })
}

impl LoadedModel {
    /// Everything in the file besides the graph.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// The module and its context.
    pub fn module(&self) -> (&Context, OpId) {
        (&self.ctx, self.module)
    }

    /// Runs `@main` on `inputs`.
    pub fn run(&self, inputs: &[TensorData]) -> Result<Vec<TensorData>> {
        strata_dialects::interp::run(&self.ctx, self.module, "main", inputs).map_err(|e| Error::Compile(e.to_string()))
    }

    /// Runs every embedded testcase and measures each output against its expectation.
    pub fn run_testcases(&self) -> Result<Vec<TestcaseResult>> {
        let names: Vec<String> = self.info.inputs.iter().map(|io| io.name.clone()).collect();
        let mut results = Vec::new();
        for (index, tc) in self.info.testcases.iter().enumerate() {
            let inputs: Vec<TensorData> = if names.is_empty() {
                tc.inputs.iter().map(|(_, t)| t.clone()).collect()
            } else {
                names
                    .iter()
                    .map(|n| {
                        tc.inputs
                            .iter()
                            .find(|(m, _)| m == n)
                            .map(|(_, t)| t.clone())
                            .ok_or_else(|| Error::Invalid(format!("testcase {index} has no data for input `{n}`")))
                    })
                    .collect::<Result<_>>()?
            };
            let outs = self.run(&inputs)?;
            if outs.len() != tc.outputs.len() {
                return Err(Error::Invalid(format!(
                    "testcase {index} expects {} outputs, the model gives {}",
                    tc.outputs.len(),
                    outs.len()
                )));
            }
            let errors = tc
                .outputs
                .iter()
                .zip(&outs)
                .map(|((n, want), got)| (n.clone(), assert_equal_error(want, got)))
                .collect();
            results.push(TestcaseResult { index, errors, maxerr: tc.maxerr });
        }
        Ok(results)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_runtime::format::{NamedIo, Testcase, write_model};

    fn file(testcases: Vec<Testcase>) -> Vec<u8> {
        let model = crate::zoo::build("resblock", 0).unwrap();
        let opts = crate::TraceOptions { record_only: true, ..crate::TraceOptions::default() };
        let mut t = crate::trace(|a: &[crate::Tensor]| model.forward(&a[0]), opts).unwrap();
        t.call(&[model.random_input(1, 0).unwrap()]).unwrap();
        t.compile().unwrap();
        let (ctx, m) = t.compiled_module().unwrap();
        let info = ModelInfo {
            inputs: vec![NamedIo { name: "data".into(), alias: None }],
            outputs: vec![NamedIo { name: "out".into(), alias: None }],
            testcases,
            ..ModelInfo::default()
        };
        write_model(ctx, m, &info).unwrap()
    }

    #[test]
    fn testcases_pass_and_fail_by_maxerr() {
        let x = TensorData::random_uniform(strata_ir::ElemType::F32, vec![1, 16, 16, 16], -1.0, 1.0, 4).unwrap();
        let reference = load_bytes(&file(vec![])).unwrap().run(std::slice::from_ref(&x)).unwrap().remove(0);
        let wrong =
            TensorData::from_reals(strata_ir::ElemType::F32, reference.shape().to_vec(), &vec![5.0; reference.len()])
                .unwrap();
        let tcs = vec![
            Testcase {
                inputs: vec![("data".into(), x.clone())],
                outputs: vec![("out".into(), reference)],
                maxerr: 1e-4,
            },
            Testcase { inputs: vec![("data".into(), x)], outputs: vec![("out".into(), wrong)], maxerr: 1e-4 },
        ];
        let loaded = load_bytes(&file(tcs)).unwrap();
        let results = loaded.run_testcases().unwrap();
        assert!(results[0].passed() && results[0].errors[0].1 == 0.0);
        assert!(!results[1].passed() && results[1].errors[0].1 > 1.0);
        assert!(load_bytes(b"junk").is_err());
        assert!(load("/nonexistent/model.smdl").unwrap_err().to_string().contains("cannot read"));
    }
}
