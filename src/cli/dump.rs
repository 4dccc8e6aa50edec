//! `strata dump MODEL -o FILE`: trace a zoo model (or read a `.strata` file)
//! and dump it with MegEngine's `trace.dump` options, one flag per option.

use anyhow::{Context as _, Result, bail};
use clap::{ArgAction, Args};
use std::path::PathBuf;
use strata::runtime::format::DumpFormat;
use strata::{DumpOptions, DumpResult, Tensor, TraceOptions, trace, zoo};

#[derive(Debug, Args)]
pub struct DumpArgs {
    /// A zoo model name (see `strata zoo`) or a `.strata` file with a `@main` function.
    model: String,
    /// The model file to write.
    #[arg(short = 'o', long)]
    output: PathBuf,
    /// Batch size of the traced input (zoo models).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Seed of the zoo model's weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Keep the batch dim symbolic (`--symbolic-shape=false` fixes it; zoo models).
    #[arg(long, default_value_t = true, action = ArgAction::Set)]
    symbolic_shape: bool,
    /// Names of the graph inputs, comma-separated.
    #[arg(long, value_delimiter = ',')]
    arg_names: Option<Vec<String>>,
    /// Names of the graph outputs, comma-separated (an empty name keeps the automatic one).
    #[arg(long, value_delimiter = ',')]
    output_names: Option<Vec<String>>,
    /// Append the model to the file instead of replacing it.
    #[arg(long)]
    append: bool,
    /// 0: no value names, 1: output names, 2: every value's name.
    #[arg(long, default_value_t = 1)]
    keep_var_name: u8,
    /// Keep op names (and source locations).
    #[arg(long)]
    keep_opr_name: bool,
    /// Keep parameter names.
    #[arg(long)]
    keep_param_name: bool,
    /// Store each op's position as its priority.
    #[arg(long)]
    keep_opr_priority: bool,
    /// Do not convert ops to older serialisable forms.
    #[arg(long)]
    no_change_graph: bool,
    /// Write the ops, dtypes and elemwise modes the model needs as JSON.
    #[arg(long)]
    strip_info_file: Option<PathBuf>,
    /// Union with an existing strip-info file.
    #[arg(long)]
    append_json: bool,
    /// Skip the inference optimisations.
    #[arg(long)]
    no_optimize_for_inference: bool,
    /// Text stored as the metadata's user_info.
    #[arg(long)]
    user_info: Option<String>,
    /// Write no metadata.
    #[arg(long)]
    no_metadata: bool,
    /// A testcase to embed: `name:src;name2:src2` (repeatable; see docs/input-data.md).
    #[arg(long)]
    input_data: Vec<String>,
    /// Tile testcase inputs this many times along the batch axis.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Testcases run without printing their errors.
    #[arg(long)]
    silent: bool,
    /// Embed testcase inputs without expected outputs.
    #[arg(long)]
    no_assert: bool,
    /// Largest accepted testcase error.
    #[arg(long, default_value_t = strata::dump::DEFAULT_MAXERR)]
    maxerr: f64,
    /// Resize image inputs to the input's size.
    #[arg(long)]
    resize_input: bool,
    /// An expression over `data` applied to testcase inputs, e.g. `(data - 128) / 64`.
    #[arg(long)]
    input_transform: Option<String>,
    /// `FBS_V2` (default) or `FBS`.
    #[arg(long, value_parser = parse_format)]
    dump_format: Option<DumpFormat>,
    /// Version of the op set to write (FBS_V2 only).
    #[arg(long, default_value_t = strata::dump::MODEL_VERSION)]
    model_version: u32,
    #[command(flatten)]
    inference: super::InferenceFlags,
    /// Print the dump result as JSON.
    #[arg(long)]
    json: bool,
}

fn parse_format(s: &str) -> Result<DumpFormat, String> {
    match s.to_ascii_uppercase().as_str() {
        "FBS_V2" => Ok(DumpFormat::FbsV2),
        "FBS" => Ok(DumpFormat::Fbs),
        _ => Err(format!("unknown dump format `{s}` (FBS_V2 or FBS)")),
    }
}

impl DumpArgs {
    fn options(&self) -> Result<DumpOptions> {
        Ok(DumpOptions {
            arg_names: self.arg_names.clone(),
            output_names: self.output_names.clone(),
            append: self.append,
            keep_var_name: self.keep_var_name,
            keep_opr_name: self.keep_opr_name,
            keep_param_name: self.keep_param_name,
            keep_opr_priority: self.keep_opr_priority,
            no_change_graph: self.no_change_graph,
            strip_info_file: self.strip_info_file.clone(),
            append_json: self.append_json,
            optimize_for_inference: !self.no_optimize_for_inference,
            user_info: self.user_info.clone().map(String::into_bytes),
            enable_metadata: !self.no_metadata,
            input_data: self.input_data.clone(),
            repeat: self.repeat,
            silent: self.silent,
            no_assert: self.no_assert,
            maxerr: self.maxerr,
            resize_input: self.resize_input,
            input_transform: self.input_transform.clone(),
            dump_format: self.dump_format,
            model_version: self.model_version,
            inference: self.inference.options()?,
        })
    }
}

fn dump_text_file(path: &str, options: &DumpOptions, output: &std::path::Path) -> Result<DumpResult> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    let mut ctx = strata::dialects::context();
    let source = strata::ir::Source::new(path, text);
    let module = strata::driver::parse_and_verify(&mut ctx, &source, false)?;
    Ok(strata::dump::dump_module(&mut ctx, module, output, options)?)
}

fn dump_zoo(args: &DumpArgs, options: &DumpOptions) -> Result<DumpResult> {
    let model = zoo::build(&args.model, args.seed)?;
    let opts = TraceOptions {
        record_only: true,
        capture_as_const: true,
        symbolic_shape: args.symbolic_shape,
        ..TraceOptions::default()
    };
    let mut traced = trace(|a: &[Tensor]| model.forward(&a[0]), opts)?;
    let x = model.random_input(args.batch, args.seed)?.named("data");
    traced.call(&[x]).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(traced.dump(&args.output, options)?)
}

pub fn run(args: DumpArgs) -> Result<()> {
    let options = args.options()?;
    let result = if args.model.ends_with(".strata") {
        dump_text_file(&args.model, &options, &args.output)
    } else if zoo::MODELS.contains(&args.model.as_str()) {
        dump_zoo(&args, &options)
    } else {
        bail!("`{}` is neither a zoo model ({}) nor a .strata file", args.model, zoo::MODELS.join(", "))
    }
    .with_context(|| format!("dumping {} to {}", args.model, args.output.display()))?;
    if args.json {
        println!("{}", result_json(&result));
    } else {
        println!(
            "wrote {} ({} bytes, {} ops, {} bytes of constants)",
            args.output.display(),
            result.tot_bytes,
            result.nr_opr,
            result.tensor_value_bytes
        );
        println!("inputs:  {}", result.inputs.join(", "));
        println!("outputs: {}", result.outputs.join(", "));
        if !result.params.is_empty() {
            println!("params:  {}", result.params.join(", "));
        }
        println!("content hash: {:016x}", result.content_hash);
    }
    Ok(())
}

fn result_json(r: &DumpResult) -> String {
    serde_json::json!({
        "nr_opr": r.nr_opr,
        "tot_bytes": r.tot_bytes,
        "tensor_value_bytes": r.tensor_value_bytes,
        "content_hash": format!("{:016x}", r.content_hash),
        "inputs": r.inputs,
        "outputs": r.outputs,
        "params": r.params,
    })
    .to_string()
}
