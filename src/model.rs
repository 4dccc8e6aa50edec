//! Loading model files: [`load`] reads and verifies a file, [`LoadedModel`] runs
//! it (on the JIT by default, or the reference evaluator), describes and checks its
//! input signature, profiles runs, and checks its embedded testcases with
//! MegEngine's AssertEqual measure.
//!
//! A `LoadedModel` is `Send + Sync`: running it only reads the module, so one
//! loaded model can serve several threads (`strata run --threads`).

use crate::error::{Error, Result};
use crate::feed::assert_equal_error;
use crate::trace::Profile;
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use strata_ir::{Context, Dim, ElemType, OpId, TensorData, TypeData};
use strata_runtime::format::{ModelInfo, NamedIo, read_model};

/// A model read from a file.
#[derive(Debug)]
pub struct LoadedModel {
    ctx: Context,
    module: OpId,
    info: ModelInfo,
    engine: crate::engine::Engine,
    jit_options: crate::engine::JitOptions,
    jit: std::sync::OnceLock<crate::engine::JitEngine>,
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

/// One dimension of an input or output of `@main`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SigDim {
    /// A fixed size.
    Fixed(usize),
    /// A size chosen at run time, named by a symbol (`N` of `?N`).
    Sym(String),
}

impl fmt::Display for SigDim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SigDim::Fixed(n) => write!(f, "{n}"),
            SigDim::Sym(s) => write!(f, "?{s}"),
        }
    }
}

/// The name, element type and shape of one input or output of `@main`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IoSignature {
    /// The name from the file (`arg_<i>` / `output_<i>` when the file names none).
    pub name: String,
    /// Element type.
    pub elem: ElemType,
    /// Dimensions as stored (a blocked layout includes its block axis).
    pub dims: Vec<SigDim>,
}

impl IoSignature {
    /// Whether some dimension is symbolic.
    pub fn is_symbolic(&self) -> bool {
        self.dims.iter().any(|d| matches!(d, SigDim::Sym(_)))
    }

    /// The shape with every symbolic dimension replaced by `sym`.
    pub fn shape_with(&self, sym: usize) -> Vec<usize> {
        self.dims
            .iter()
            .map(|d| match d {
                SigDim::Fixed(n) => *n,
                SigDim::Sym(_) => sym,
            })
            .collect()
    }

    /// The shape as text: `[?N, 3, 224, 224]`.
    pub fn shape_text(&self) -> String {
        let dims: Vec<String> = self.dims.iter().map(|d| d.to_string()).collect();
        format!("[{}]", dims.join(", "))
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
    Ok(LoadedModel {
        ctx,
        module,
        info,
        engine: crate::engine::Engine::default(),
        jit_options: crate::engine::JitOptions::default(),
        jit: std::sync::OnceLock::new(),
    })
}

/// Reads model number `index` of the file at `path`; also returns how many
/// models the file holds (several when models were dumped with `append`).
pub fn load_nth(path: impl AsRef<Path>, index: usize) -> Result<(LoadedModel, usize)> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| Error::Invalid(format!("cannot read {}: {e}", path.display())))?;
    let ranges =
        strata_runtime::format::split_models(&bytes).map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
    let range = ranges.get(index).cloned().ok_or_else(|| {
        Error::Invalid(format!("{} holds {} model(s); there is no model #{index}", path.display(), ranges.len()))
    })?;
    let model =
        load_bytes(&bytes[range]).map_err(|e| Error::Invalid(format!("{} (model #{index}): {e}", path.display())))?;
    Ok((model, ranges.len()))
}

/// Reads every model of the file at `path` (several when models were dumped
/// with `append`), each into its own context.
pub fn load_all(path: impl AsRef<Path>) -> Result<Vec<LoadedModel>> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| Error::Invalid(format!("cannot read {}: {e}", path.display())))?;
    let ranges =
        strata_runtime::format::split_models(&bytes).map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
    ranges
        .into_iter()
        .enumerate()
        .map(|(k, r)| {
            load_bytes(&bytes[r]).map_err(|e| Error::Invalid(format!("{} (model #{k}): {e}", path.display())))
        })
        .collect()
}

impl LoadedModel {
    /// Runs the pass pipeline `pipeline` (text, as `strata opt --pipeline`) on the loaded graph.
    pub fn optimize(&mut self, pipeline: &str) -> Result<()> {
        let config = crate::driver::OptConfig { pipeline: Some(pipeline.into()), ..Default::default() };
        crate::driver::optimize(&mut self.ctx, self.module, &config).map_err(|e| Error::Compile(e.to_string()))?;
        self.jit = std::sync::OnceLock::new();
        Ok(())
    }

    /// Chooses what runs the model (default: the JIT).
    pub fn set_engine(&mut self, engine: crate::engine::Engine) {
        self.engine = engine;
    }

    /// The engine that runs the model.
    pub fn engine(&self) -> crate::engine::Engine {
        self.engine
    }

    /// Sets the JIT's options (threads, fusion, ISA); compiled code is dropped.
    pub fn set_jit_options(&mut self, options: crate::engine::JitOptions) {
        self.jit_options = options;
        self.jit = std::sync::OnceLock::new();
    }

    /// The JIT of this model (created on first use; kernels compile per input shapes).
    pub fn jit(&self) -> Result<&crate::engine::JitEngine> {
        if let Some(j) = self.jit.get() {
            return Ok(j);
        }
        let j = crate::engine::JitEngine::new(&self.ctx, self.module, "main", self.jit_options.clone())?;
        Ok(self.jit.get_or_init(|| j))
    }

    /// Everything in the file besides the graph.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// The module and its context.
    pub fn module(&self) -> (&Context, OpId) {
        (&self.ctx, self.module)
    }

    /// The inputs of `@main`: names (from the file, else `arg_<i>`), element types, shapes.
    pub fn inputs(&self) -> Result<Vec<IoSignature>> {
        let (ins, _) = self.main_signature();
        self.signatures(&ins, &self.info.inputs, "arg", "input")
    }

    /// The outputs of `@main`: names (from the file, else `output_<i>`), element types, shapes.
    pub fn outputs(&self) -> Result<Vec<IoSignature>> {
        let (_, outs) = self.main_signature();
        self.signatures(&outs, &self.info.outputs, "output", "output")
    }

    fn main_signature(&self) -> (Vec<strata_ir::Ty>, Vec<strata_ir::Ty>) {
        strata_dialects::func::lookup_function(&self.ctx, self.module, "main")
            .expect("invariant: load checked that @main exists")
            .signature(&self.ctx)
    }

    fn signatures(
        &self,
        tys: &[strata_ir::Ty],
        names: &[NamedIo],
        prefix: &str,
        what: &str,
    ) -> Result<Vec<IoSignature>> {
        tys.iter()
            .enumerate()
            .map(|(i, &ty)| {
                let name = names.get(i).map_or_else(|| format!("{prefix}_{i}"), |io| io.name.clone());
                let TypeData::Tensor(t) = self.ctx.ty(ty) else {
                    return Err(Error::Unsupported(format!(
                        "{what} `{name}` of @main has type {}; only tensors can be fed and fetched",
                        strata_ir::type_to_string(&self.ctx, ty)
                    )));
                };
                let dims = t
                    .shape
                    .iter()
                    .map(|d| match *d {
                        Dim::Fixed(n) => usize::try_from(n)
                            .map(SigDim::Fixed)
                            .map_err(|_| Error::Invalid(format!("{what} `{name}`: dimension {n} is too large"))),
                        Dim::Sym(s) => Ok(SigDim::Sym(self.ctx.str(s).to_string())),
                    })
                    .collect::<Result<_>>()?;
                Ok(IoSignature { name, elem: t.elem, dims })
            })
            .collect()
    }

    /// Checks `inputs` (in signature order) against the input signature: count,
    /// element types, ranks, fixed dimensions, and that each symbolic dimension
    /// has one size across all inputs.
    pub fn check_inputs(&self, inputs: &[TensorData]) -> Result<()> {
        let sigs = self.inputs()?;
        if sigs.len() != inputs.len() {
            return Err(Error::Invalid(format!("the model has {} inputs, got {}", sigs.len(), inputs.len())));
        }
        let mut bound: BTreeMap<&str, (usize, &str)> = BTreeMap::new();
        for (sig, t) in sigs.iter().zip(inputs) {
            let name = &sig.name;
            let wanted = format!("{} {}", sig.elem, sig.shape_text());
            let got = format!("{} {:?}", t.elem(), t.shape());
            if t.elem() != sig.elem {
                return Err(Error::Invalid(format!(
                    "input `{name}`: got {got}, the model wants {wanted} (element type differs)"
                )));
            }
            if t.shape().len() != sig.dims.len() {
                return Err(Error::Invalid(format!(
                    "input `{name}`: got {got}, the model wants {wanted} (rank {} is not {})",
                    t.shape().len(),
                    sig.dims.len()
                )));
            }
            for (axis, (d, &n)) in sig.dims.iter().zip(t.shape()).enumerate() {
                match d {
                    SigDim::Fixed(m) if *m != n => {
                        return Err(Error::Invalid(format!(
                            "input `{name}`: got {got}, the model wants {wanted} (dim {axis} is {n}, not {m})"
                        )));
                    }
                    SigDim::Fixed(_) => {}
                    SigDim::Sym(s) => match bound.get(s.as_str()) {
                        Some(&(m, other)) if m != n => {
                            return Err(Error::Invalid(format!(
                                "input `{name}`: got {got}, the model wants {wanted} (dim {axis}, ?{s}, is {n} here but {m} in input `{other}`)"
                            )));
                        }
                        Some(_) => {}
                        None => {
                            bound.insert(s, (n, name));
                        }
                    },
                }
            }
        }
        Ok(())
    }

    /// Runs `@main` on `inputs`.
    pub fn run(&self, inputs: &[TensorData]) -> Result<Vec<TensorData>> {
        match self.engine {
            crate::engine::Engine::Jit => self.jit()?.run(inputs),
            crate::engine::Engine::Interp => strata_dialects::interp::run(&self.ctx, self.module, "main", inputs)
                .map_err(|e| Error::Compile(e.to_string())),
        }
    }

    /// Runs `@main` on `inputs`, adding the run and its per-op times to `profile`
    /// (schema `strata.profile/1`, `docs/profile.md`). A profile must only collect
    /// runs of one model.
    pub fn run_profiled(&self, inputs: &[TensorData], profile: &mut Profile) -> Result<Vec<TensorData>> {
        match self.engine {
            crate::engine::Engine::Jit => profile.run_jit(self.jit()?, inputs).map_err(Error::Compile),
            crate::engine::Engine::Interp => profile.run(&self.ctx, self.module, inputs).map_err(Error::Compile),
        }
    }

    /// The inputs of embedded testcase `index`, in signature order.
    pub fn testcase_inputs(&self, index: usize) -> Result<Vec<TensorData>> {
        let tc =
            self.info.testcases.get(index).ok_or_else(|| Error::Invalid(format!("there is no testcase {index}")))?;
        if self.info.inputs.is_empty() {
            return Ok(tc.inputs.iter().map(|(_, t)| t.clone()).collect());
        }
        self.info
            .inputs
            .iter()
            .map(|io| {
                tc.inputs
                    .iter()
                    .find(|(m, _)| *m == io.name)
                    .map(|(_, t)| t.clone())
                    .ok_or_else(|| Error::Invalid(format!("testcase {index} has no data for input `{}`", io.name)))
            })
            .collect()
    }

    /// Runs every embedded testcase and measures each output against its expectation.
    pub fn run_testcases(&self) -> Result<Vec<TestcaseResult>> {
        let mut results = Vec::new();
        for index in 0..self.info.testcases.len() {
            let inputs = self.testcase_inputs(index)?;
            let outs = self.run(&inputs)?;
            results.push(self.check_testcase(index, &outs)?);
        }
        Ok(results)
    }

    /// Measures `outs` (the outputs of a run on [`LoadedModel::testcase_inputs`])
    /// against the expectations of testcase `index`. A testcase embedded without
    /// expected outputs (`no_assert`) checks nothing and passes.
    pub fn check_testcase(&self, index: usize, outs: &[TensorData]) -> Result<TestcaseResult> {
        let tc =
            self.info.testcases.get(index).ok_or_else(|| Error::Invalid(format!("there is no testcase {index}")))?;
        if !tc.outputs.is_empty() && outs.len() != tc.outputs.len() {
            return Err(Error::Invalid(format!(
                "testcase {index} expects {} outputs, the model gives {}",
                tc.outputs.len(),
                outs.len()
            )));
        }
        let errors =
            tc.outputs.iter().zip(outs).map(|((n, want), got)| (n.clone(), assert_equal_error(want, got))).collect();
        Ok(TestcaseResult { index, errors, maxerr: tc.maxerr })
    }
}

/// Running a model only reads it, so threads may share one (`strata run --threads`).
const _: () = {
    const fn shareable<T: Send + Sync>() {}
    shareable::<LoadedModel>();
};

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
                silent: false,
            },
            Testcase {
                inputs: vec![("data".into(), x.clone())],
                outputs: vec![("out".into(), wrong)],
                maxerr: 1e-4,
                silent: false,
            },
            Testcase { inputs: vec![("data".into(), x)], outputs: vec![], maxerr: 1e-4, silent: true },
        ];
        let loaded = load_bytes(&file(tcs)).unwrap();
        let results = loaded.run_testcases().unwrap();
        assert!(results[0].passed() && results[0].errors[0].1 == 0.0);
        assert!(!results[1].passed() && results[1].errors[0].1 > 1.0);
        let again = loaded.check_testcase(1, &loaded.run(&loaded.testcase_inputs(1).unwrap()).unwrap()).unwrap();
        assert_eq!(again, results[1]);
        assert!(results[2].passed() && results[2].errors.is_empty(), "no expected outputs: nothing to check");
        assert!(loaded.testcase_inputs(3).is_err());
        assert!(load_bytes(b"junk").is_err());
        assert!(load("/nonexistent/model.smdl").unwrap_err().to_string().contains("cannot read"));
    }

    #[test]
    fn signature_and_input_checks() {
        let loaded = load_bytes(&file(vec![])).unwrap();
        let ins = loaded.inputs().unwrap();
        assert_eq!(ins.len(), 1);
        assert_eq!((ins[0].name.as_str(), ins[0].elem), ("data", strata_ir::ElemType::F32));
        assert_eq!(ins[0].shape_with(1), vec![1, 16, 16, 16]);
        assert_eq!(ins[0].shape_text(), "[?N, 16, 16, 16]", "traces keep the batch symbolic");
        assert!(ins[0].is_symbolic());
        assert_eq!(loaded.outputs().unwrap()[0].name, "out");
        let ok = TensorData::zeros(strata_ir::ElemType::F32, vec![1, 16, 16, 16]).unwrap();
        loaded.check_inputs(std::slice::from_ref(&ok)).unwrap();
        loaded.check_inputs(&[TensorData::zeros(strata_ir::ElemType::F32, vec![3, 16, 16, 16]).unwrap()]).unwrap();
        let err = |t: TensorData| loaded.check_inputs(&[t]).unwrap_err().to_string();
        assert!(
            err(TensorData::zeros(strata_ir::ElemType::F32, vec![1, 8, 16, 16]).unwrap())
                .contains("dim 1 is 8, not 16")
        );
        assert!(
            err(TensorData::zeros(strata_ir::ElemType::F32, vec![16, 16, 16]).unwrap()).contains("rank 3 is not 4")
        );
        assert!(
            err(TensorData::zeros(strata_ir::ElemType::I32, vec![1, 16, 16, 16]).unwrap())
                .contains("element type differs")
        );
        assert!(loaded.check_inputs(&[]).unwrap_err().to_string().contains("has 1 inputs, got 0"));
        let mut profile = Profile::default();
        let out = loaded.run_profiled(std::slice::from_ref(&ok), &mut profile).unwrap();
        assert_eq!(out, loaded.run(&[ok]).unwrap());
        assert_eq!(profile.runs, 1);
        assert!(!profile.ops.is_empty() && profile.ops.iter().all(|o| o.calls == 1));
    }
}
