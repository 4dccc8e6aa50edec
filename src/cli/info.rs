//! `strata info FILE [--json]`: what a model file holds.

use anyhow::{Context as _, Result};
use clap::Args;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use strata::runtime::format::{ModelInfo, read_model, split_models};

#[derive(Debug, Args)]
pub struct InfoArgs {
    /// The model file.
    file: String,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Which model of a file holding several (dumped with `append`) to show.
    #[arg(long, default_value_t = 0)]
    model_index: usize,
}

/// User info as text when it is UTF-8, else hex.
fn user_info_text(bytes: &[u8]) -> (String, &'static str) {
    match std::str::from_utf8(bytes) {
        Ok(s) => (s.to_string(), "text"),
        Err(_) => (bytes.iter().map(|b| format!("{b:02x}")).collect(), "hex"),
    }
}

pub fn run(args: InfoArgs) -> Result<()> {
    let bytes = std::fs::read(&args.file).with_context(|| format!("reading {}", args.file))?;
    let mut ctx = strata::dialects::context();
    let ranges = split_models(&bytes).with_context(|| format!("loading {}", args.file))?;
    let Some(range) = ranges.get(args.model_index) else {
        anyhow::bail!("{} holds {} model(s); there is no model #{}", args.file, ranges.len(), args.model_index);
    };
    if ranges.len() > 1 {
        eprintln!(
            "note: the file holds {} models; showing model #{} (--model-index picks another)",
            ranges.len(),
            args.model_index
        );
    }
    let (module, info) =
        read_model(&bytes[range.clone()], &mut ctx).with_context(|| format!("loading {}", args.file))?;
    let mut histogram: BTreeMap<String, usize> = BTreeMap::new();
    let (mut params, mut param_bytes) = (0usize, 0usize);
    for op in ctx.walk(module) {
        *histogram.entry(ctx.op_name(op).to_string()).or_default() += 1;
        if let Some(t) = ctx.op(op).results.first().and_then(|&r| ctx.constant_value(r)) {
            params += 1;
            param_bytes += t.bytes().len();
        }
    }
    let (ins, outs) = main_signature(&ctx, module);
    let summary = Summary { info: &info, hist: &histogram, params, param_bytes, ins: &ins, outs: &outs };
    print!("{}", if args.json { to_json(&summary) } else { to_text(&summary) });
    Ok(())
}

/// What `strata info` reports, shared by the text and JSON renderings.
#[derive(Clone, Copy)]
struct Summary<'a> {
    info: &'a ModelInfo,
    hist: &'a BTreeMap<String, usize>,
    params: usize,
    param_bytes: usize,
    ins: &'a [String],
    outs: &'a [String],
}

fn main_signature(ctx: &strata::ir::Context, module: strata::ir::OpId) -> (Vec<String>, Vec<String>) {
    let Some(f) = strata::dialects::func::lookup_function(ctx, module, "main") else { return (vec![], vec![]) };
    let (ins, outs) = f.signature(ctx);
    let show = |tys: Vec<strata::ir::Ty>| tys.into_iter().map(|t| strata::ir::type_to_string(ctx, t)).collect();
    (show(ins), show(outs))
}

fn io_names(list: &[strata::runtime::format::NamedIo], n: usize, prefix: &str) -> Vec<String> {
    (0..n).map(|i| list.get(i).map_or_else(|| format!("{prefix}_{i}"), |io| io.name.clone())).collect()
}

fn to_text(summary: &Summary<'_>) -> String {
    let Summary { info, hist, params, param_bytes, ins, outs } = *summary;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "producer: {}  format {}.{}  model_version {}",
        info.producer, info.format_version.0, info.format_version.1, info.model_version
    );
    match &info.metadata {
        Some(m) => {
            let (text, kind) = user_info_text(&m.user_info);
            let _ = writeln!(
                s,
                "metadata: is_valid={} graph_modified={} optimize_options={:#x} user_info ({kind}): {text}",
                m.is_valid, m.graph_modified, m.optimize_options
            );
        }
        None => s.push_str("metadata: none\n"),
    }
    for (label, names, tys) in [
        ("inputs", io_names(&info.inputs, ins.len(), "arg"), ins),
        ("outputs", io_names(&info.outputs, outs.len(), "output"), outs),
    ] {
        let _ = writeln!(s, "{label}:");
        for (n, t) in names.iter().zip(tys) {
            let _ = writeln!(s, "  {n}: {t}");
        }
    }
    let _ = writeln!(s, "constants: {params} ({param_bytes} bytes)");
    let _ = writeln!(s, "ops:");
    for (name, n) in hist {
        let _ = writeln!(s, "  {n:>5}  {name}");
    }
    let _ = writeln!(s, "testcases: {}", info.testcases.len());
    for (i, tc) in info.testcases.iter().enumerate() {
        let names: Vec<_> = tc.inputs.iter().map(|(n, t)| format!("{n}{:?}", t.shape())).collect();
        let _ = writeln!(s, "  #{i}: inputs {} maxerr {}", names.join(", "), tc.maxerr);
    }
    s
}

fn to_json(summary: &Summary<'_>) -> String {
    let Summary { info, hist, params, param_bytes, ins, outs } = *summary;
    let io = |names: Vec<String>, tys: &[String]| {
        names
            .iter()
            .zip(tys)
            .map(|(n, t)| format!("{{\"name\": {}, \"type\": {}}}", strata::json::quote(n), strata::json::quote(t)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let metadata = match &info.metadata {
        Some(m) => {
            let (text, kind) = user_info_text(&m.user_info);
            format!(
                "{{\"is_valid\": {}, \"graph_modified\": {}, \"optimize_options\": {}, \"user_info\": {}, \"user_info_encoding\": {}}}",
                m.is_valid,
                m.graph_modified,
                m.optimize_options,
                strata::json::quote(&text),
                strata::json::quote(kind)
            )
        }
        None => "null".into(),
    };
    let hist: Vec<String> = hist.iter().map(|(k, v)| format!("{}: {v}", strata::json::quote(k))).collect();
    format!(
        "{{\"producer\": {}, \"format_version\": \"{}.{}\", \"model_version\": {}, \"metadata\": {metadata}, \"inputs\": [{}], \"outputs\": [{}], \"constants\": {params}, \"constant_bytes\": {param_bytes}, \"ops\": {{{}}}, \"testcases\": {}}}\n",
        strata::json::quote(&info.producer),
        info.format_version.0,
        info.format_version.1,
        info.model_version,
        io(io_names(&info.inputs, ins.len(), "arg"), ins),
        io(io_names(&info.outputs, outs.len(), "output"), outs),
        hist.join(", "),
        info.testcases.len()
    )
}
