//! Dumping a graph to a model file: MegEngine's `trace.dump`.
//!
//! [`crate::Traced::dump`] dumps a trace; [`dump_module`] dumps any
//! graph-dialect module with a `@main` function (what `strata dump FILE.strata`
//! does). The steps, in order:
//!
//! 1. check the options ([`DumpOptions::validate`]) and name the inputs and
//!    outputs (`arg_names` > names from tracing > `arg_{i}`; `output_names` >
//!    dict keys or value names > an automatic name from the producing op);
//! 2. build the testcases of `input_data` and compute their expected outputs on
//!    the graph **before** optimisation, so running a dumped testcase checks
//!    the optimised model against the unoptimised one;
//! 3. with `optimize_for_inference`, run the inference pipeline;
//! 4. keep or drop names, priorities and parameter names per `keep_*`;
//! 5. write the file (replacing it, or appending), the strip-info JSON, and
//!    return a [`DumpResult`].

mod names;
mod options;

pub use options::{DEFAULT_MAXERR, DumpOptions, InferenceOptions, LayoutOption, MODEL_VERSION};

use crate::error::{Error, Result};
use crate::feed::{FeedOptions, materialize_with, parse_input_data};
use std::collections::BTreeSet;
use std::path::Path;
use strata_dialects::func::{FuncOp, lookup_function};
use strata_ir::tensor::Fnv1a;
use strata_ir::{AttrData, Context, Dim, ElemType, OpId, TensorData, TypeData};
use strata_runtime::format::{self, Metadata, ModelInfo, NamedIo, Testcase};

/// The pipeline `optimize_for_inference` always runs, in MegEngine's order:
/// cleanup, arithmetic rewrites, batch norm to scale-and-shift, parameter
/// redistribution and constant folding.
pub const INFERENCE_PIPELINE: &str =
    "canonicalize,cse,eqsat{rules=\"arith,fold-batch-norm,param-redistribute,param-fold\"},cse,dce";

/// The passes the `enable_*` options select (MegEngine applies the same at
/// graph compile time, which is what `strata run --enable-…` does), in this
/// order: the fusion rule sets (preprocess, conv + bias + nonlinearity, `z`),
/// the f16 conversion, then the layout conversion (fusion, channel padding,
/// NCHWxx, relayout cancellation, weight folding). Fusion runs before the
/// layout conversion because `eqsat` leaves functions with layout ops alone.
/// `None` when no option is enabled.
pub fn option_pipeline(options: &InferenceOptions) -> Option<String> {
    let mut parts = Vec::new();
    let mut sets = Vec::new();
    if options.enable_fuse_preprocess {
        sets.push("fuse-preprocess");
    }
    if options.enable_fuse_conv_bias_nonlinearity || options.enable_fuse_conv_bias_with_z {
        sets.push("fuse-conv-bias-nonlinearity");
    }
    if options.enable_fuse_conv_bias_with_z {
        sets.push("fuse-conv-bias-with-z");
    }
    let layout = options.layout().ok().flatten();
    if layout.is_some() && !sets.contains(&"fuse-conv-bias-nonlinearity") {
        sets.push("fuse-conv-bias-nonlinearity");
    }
    if !sets.is_empty() {
        sets.push("param-fold");
        parts.push(format!("eqsat{{rules=\"{}\"}},dce", sets.join(",")));
    }
    if options.enable_io16xc32 {
        parts.push("f16-io-f32-comp,canonicalize,dce".into());
    }
    if options.enable_ioc16 {
        parts.push("f16-io-comp,canonicalize,dce".into());
    }
    if let Some(layout) = layout {
        let (padding, name) = match layout {
            LayoutOption::Nchw88 => (Some(8), "nchw88"),
            LayoutOption::Nchw44 => (Some(4), "nchw44"),
            LayoutOption::Nchw44Dot => (Some(4), "nchw44_dot"),
            LayoutOption::Nhwcd4 => (Some(4), "nhwcd4"),
            // int8 convolutions with OC % 4 != 0 are padded too (the ones that
            // do not divide by 32 run in #nchw4 under nchw32, as in MegEngine).
            LayoutOption::Nchw4 => (Some(4), "nchw4"),
            LayoutOption::Nchw32 => (Some(4), "nchw32"),
            LayoutOption::Chwn4 => (Some(4), "chwn4"),
            LayoutOption::Nchw64 => (None, "nchw64"),
        };
        if let Some(p) = padding {
            parts.push(format!("padding-channel{{block={p}}}"));
        }
        parts.push(format!(
            "nchwxx{{layout={name}}},cancel-relayouts,canonicalize{{max-fold-elements={}}},dce",
            1usize << 26
        ));
    }
    (!parts.is_empty()).then(|| parts.join(","))
}

/// The pipeline of `optimize_for_inference` with `options`: [`INFERENCE_PIPELINE`],
/// then [`option_pipeline`].
pub fn inference_pipeline(options: &InferenceOptions) -> String {
    match option_pipeline(options) {
        Some(extra) => format!("{INFERENCE_PIPELINE},{extra}"),
        None => INFERENCE_PIPELINE.into(),
    }
}

/// What [`dump_module`] wrote (MegEngine's `CompGraphDumpResult`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DumpResult {
    /// Number of ops in the dumped `@main` (without its `return`).
    pub nr_opr: usize,
    /// Bytes of the model written (without alignment padding before an appended model).
    pub tot_bytes: usize,
    /// Bytes of constant tensor data in the model.
    pub tensor_value_bytes: usize,
    /// FNV-1a hash of the model's bytes.
    pub content_hash: u64,
    /// Input names, in order.
    pub inputs: Vec<String>,
    /// Output names, in order (`unnamed{i}` when `keep_var_name` is 0).
    pub outputs: Vec<String>,
    /// Names of the parameters kept with `keep_param_name`.
    pub params: Vec<String>,
}

/// A graph to dump and what is known about it besides its IR.
pub(crate) struct DumpSource<'a> {
    pub(crate) ctx: &'a mut Context,
    pub(crate) module: OpId,
    /// A concrete shape per input (for `#rand` sources over symbolic dims).
    pub(crate) example_shapes: Vec<Vec<usize>>,
    /// Output names the function gave (dict keys), possibly empty.
    pub(crate) output_names: Vec<String>,
    /// Whether those names came from a dict (then `output_names` may not rename them).
    pub(crate) outputs_are_dict: bool,
}

/// Dumps `module` (which must have a `@main`) to `file`; the module is
/// optimised and renamed in place. Symbolic input dims count as 1 for `#rand`
/// testcase inputs without an explicit shape.
pub fn dump_module(ctx: &mut Context, module: OpId, file: &Path, options: &DumpOptions) -> Result<DumpResult> {
    let main = main_function(ctx, module)?;
    let example_shapes = main
        .signature(ctx)
        .0
        .iter()
        .map(|&t| match ctx.ty(t) {
            TypeData::Tensor(t) => {
                t.shape.iter().map(|d| if let Dim::Fixed(n) = d { *n as usize } else { 1 }).collect()
            }
            _ => Vec::new(),
        })
        .collect();
    let source = DumpSource { ctx, module, example_shapes, output_names: Vec::new(), outputs_are_dict: false };
    dump_source(source, file, options)
}

pub(crate) fn main_function(ctx: &Context, module: OpId) -> Result<FuncOp> {
    lookup_function(ctx, module, "main")
        .ok_or_else(|| Error::Invalid("the module has no @main function to dump".into()))
}

pub(crate) fn dump_source(src: DumpSource<'_>, file: &Path, options: &DumpOptions) -> Result<DumpResult> {
    options.validate()?;
    let span = tracing::info_span!("dump", file = %file.display());
    let _g = span.enter();
    let DumpSource { ctx, module, example_shapes, output_names, outputs_are_dict } = src;
    if outputs_are_dict && options.output_names.is_some() {
        return Err(Error::Invalid("output_names cannot rename outputs that the function returned as a dict".into()));
    }
    let main = main_function(ctx, module)?;
    let io = names::IoNames::choose(ctx, main, options, &output_names)?;
    let testcases = build_testcases(ctx, module, main, &io, &example_shapes, options)?;
    if options.optimize_for_inference {
        let config =
            crate::driver::OptConfig { pipeline: Some(inference_pipeline(&options.inference)), ..Default::default() };
        crate::driver::optimize(ctx, module, &config).map_err(|e| Error::Compile(e.to_string()))?;
    }
    let params = names::apply_keep_options(ctx, main, &io, options)?;
    let metadata = options
        .enable_metadata
        .then(|| -> Result<Metadata> {
            Ok(Metadata {
                is_valid: true,
                graph_modified: false,
                user_info: options.user_info.clone().unwrap_or_default(),
                optimize_options: options.inference.optimize_options()?,
            })
        })
        .transpose()?;
    let info = ModelInfo {
        producer: format!("strata {}", env!("CARGO_PKG_VERSION")),
        model_version: options.model_version,
        metadata,
        inputs: io.inputs.iter().map(|n| NamedIo { name: n.clone(), alias: None }).collect(),
        outputs: if options.keep_var_name == 0 {
            Vec::new()
        } else {
            io.outputs.iter().map(|n| NamedIo { name: n.clone(), alias: None }).collect()
        },
        testcases,
        format_version: (0, 0),
    };
    let bytes =
        format::write_model_as(ctx, module, &info, options.format()).map_err(|e| Error::Invalid(e.to_string()))?;
    let content_hash = {
        let mut h = Fnv1a::new();
        h.write(&bytes);
        h.finish()
    };
    write_file(file, &bytes, options.append)?;
    if let Some(path) = &options.strip_info_file {
        write_strip_info(ctx, module, path, content_hash, options.append_json)?;
    }
    let main = main_function(ctx, module)?;
    let body = ctx.body(main.0, 0).expect("invariant: @main has a body");
    let nr_opr = ctx.block(body).ops.len().saturating_sub(1);
    let tensor_value_bytes = ctx
        .walk(module)
        .iter()
        .filter_map(|&op| ctx.op(op).results.first().and_then(|&r| ctx.constant_value(r)))
        .map(|t| t.bytes().len())
        .sum();
    let outputs = if options.keep_var_name == 0 {
        (0..io.outputs.len()).map(|i| format!("unnamed{i}")).collect()
    } else {
        io.outputs.clone()
    };
    let result = DumpResult {
        nr_opr,
        tot_bytes: bytes.len(),
        tensor_value_bytes,
        content_hash,
        inputs: io.inputs,
        outputs,
        params,
    };
    tracing::info!(nr_opr, bytes = result.tot_bytes, testcases = info.testcases.len(), "dumped");
    Ok(result)
}

/// Builds the `input_data` testcases; expected outputs come from the graph as it is now.
fn build_testcases(
    ctx: &Context,
    module: OpId,
    main: FuncOp,
    io: &names::IoNames,
    example_shapes: &[Vec<usize>],
    options: &DumpOptions,
) -> Result<Vec<Testcase>> {
    let in_types = main.signature(ctx).0;
    let inputs: Vec<(String, ElemType, Vec<usize>)> = io
        .inputs
        .iter()
        .zip(&in_types)
        .zip(example_shapes)
        .map(|((name, &t), shape)| {
            let elem = match ctx.ty(t) {
                TypeData::Tensor(t) => t.elem,
                _ => ElemType::F32,
            };
            (name.clone(), elem, shape.clone())
        })
        .collect();
    let feed = FeedOptions {
        seed: 0,
        resize_input: options.resize_input,
        input_transform: options.input_transform.clone(),
        repeat: options.repeat,
    };
    let mut testcases = Vec::new();
    for spec_text in &options.input_data {
        for spec in parse_input_data(spec_text)? {
            let feed = FeedOptions { seed: testcases.len() as u64, ..feed.clone() };
            let data = materialize_with(&spec, &inputs, &feed)?;
            let outputs = if options.no_assert {
                Vec::new()
            } else {
                let args: Vec<TensorData> = data.iter().map(|(_, t)| t.clone()).collect();
                let got = strata_dialects::interp::run(ctx, module, "main", &args).map_err(|e| {
                    Error::Invalid(format!("testcase {} (`{spec_text}`) does not run: {e}", testcases.len()))
                })?;
                io.outputs.iter().cloned().zip(got).collect()
            };
            testcases.push(Testcase { inputs: data, outputs, maxerr: options.maxerr, silent: options.silent });
        }
    }
    Ok(testcases)
}

/// Writes `bytes` to `file`, or appends them (after zero padding so the model
/// starts aligned) when `append` is set and the file holds models already.
fn write_file(file: &Path, bytes: &[u8], append: bool) -> Result<()> {
    let fail = |e: std::io::Error| Error::Invalid(format!("cannot write {}: {e}", file.display()));
    if append && let Ok(existing) = std::fs::read(file) {
        if !existing.is_empty() {
            format::split_models(&existing).map_err(|e| {
                Error::Invalid(format!(
                    "cannot append to {}: it does not hold strata models ({e}); nothing was written",
                    file.display()
                ))
            })?;
        }
        let mut out = vec![0u8; format::append_padding(existing.len())];
        out.extend_from_slice(bytes);
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new().append(true).open(file).map_err(fail)?;
        return f.write_all(&out).map_err(fail);
    }
    std::fs::write(file, bytes).map_err(fail)
}

/// Writes the strip-info JSON: op types, element types and elemwise modes the
/// model uses, and its content hash; with `append_json` the lists are unioned
/// with the file's.
fn write_strip_info(ctx: &Context, module: OpId, path: &Path, hash: u64, append_json: bool) -> Result<()> {
    let (mut ops, mut dtypes, mut modes) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    for op in ctx.walk(module) {
        ops.insert(ctx.op_name(op).to_string());
        if ctx.op_name(op) == "graph.elemwise"
            && let Some(AttrData::Str(m)) = ctx.op_attr(op, "mode").map(|a| ctx.attr(a))
        {
            modes.insert(m.clone());
        }
        for &v in ctx.op(op).results.iter().chain(&ctx.op(op).operands) {
            if let Some(t) = ctx.value_tensor(v) {
                dtypes.insert(t.elem.to_string());
            }
        }
    }
    if append_json && path.exists() {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Invalid(format!("cannot read strip_info_file {}: {e}", path.display())))?;
        let old: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::Invalid(format!("strip_info_file {} is not JSON: {e}", path.display())))?;
        for (key, set) in [("opr_types", &mut ops), ("dtypes", &mut dtypes), ("elemwise_modes", &mut modes)] {
            let list = old.get(key).and_then(|v| v.as_array()).ok_or_else(|| {
                Error::Invalid(format!("strip_info_file {} has no `{key}` list to append to", path.display()))
            })?;
            set.extend(list.iter().filter_map(|v| v.as_str().map(str::to_string)));
        }
    }
    let json = serde_json::json!({
        "opr_types": ops,
        "dtypes": dtypes,
        "elemwise_modes": modes,
        "hash": hash,
    });
    let text = serde_json::to_string_pretty(&json).expect("invariant: JSON of strings and numbers encodes");
    std::fs::write(path, text + "\n")
        .map_err(|e| Error::Invalid(format!("cannot write strip_info_file {}: {e}", path.display())))
}

/// Decodes `user_info` written by [`DumpOptions::with_user_info_json`].
pub fn user_info_json<T: serde::de::DeserializeOwned>(metadata: &Metadata) -> Result<T> {
    serde_json::from_slice(&metadata.user_info).map_err(|e| Error::Invalid(format!("user_info is not that JSON: {e}")))
}
