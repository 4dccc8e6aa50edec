//! The model file format: a strata module (any dialect) as one self-contained
//! FlatBuffer (`runtime/format/model.fbs`, identifier `STRM`).
//!
//! Operators are stored generically (name, operand and result value ids,
//! attributes, regions, location), types and attributes mirror the IR's closed
//! sets, and dense constants live in a tensor table. Reading verifies the buffer
//! with the FlatBuffers verifier (bounded depth and size) before touching it,
//! checks every index, rebuilds the module through the `Rewriter`, and runs the
//! IR verifier: a truncated, corrupted or hostile file gets an error, never a
//! panic or an out-of-bounds read.
//!
//! Version policy: `format_major` changes when old readers cannot read new files;
//! a file with a newer major version is rejected naming both versions. Minor
//! versions add optional fields that older readers ignore.

#[allow(unsafe_code, missing_docs, unused_imports, dead_code, deprecated, clippy::all, clippy::pedantic)]
#[rustfmt::skip]
mod generated;

use generated::strata::fbs as fb;
use strata_ir::{ElemType, Layout, QScale, TensorData};

/// The major format version this build writes and reads.
pub const FORMAT_MAJOR: u16 = 1;
/// The minor format version this build writes.
pub const FORMAT_MINOR: u16 = 0;
/// The FlatBuffers file identifier.
pub const FILE_IDENTIFIER: &str = "STRM";

/// Why a model could not be written or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// The bytes are not a strata model.
    #[error("not a strata model file: {0}")]
    NotAModel(String),
    /// Written by a newer, incompatible strata.
    #[error(
        "the model file has format version {file_major}.{file_minor}, newer than this strata's {ours_major}.{ours_minor}; upgrade strata to load it"
    )]
    NewerVersion {
        /// The file's major version.
        file_major: u16,
        /// The file's minor version.
        file_minor: u16,
        /// This build's major version.
        ours_major: u16,
        /// This build's minor version.
        ours_minor: u16,
    },
    /// The buffer is damaged or inconsistent.
    #[error("corrupt model file: {0}")]
    Corrupt(String),
    /// The rebuilt module does not verify.
    #[error("the model's graph does not verify:\n{0}")]
    Invalid(String),
    /// The module cannot be written.
    #[error("cannot write the model: {0}")]
    Write(String),
}

type FResult<T> = Result<T, FormatError>;

fn corrupt(msg: impl Into<String>) -> FormatError {
    FormatError::Corrupt(msg.into())
}

/// Model metadata (MegEngine's `Metadata`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Metadata {
    /// Whether the metadata is meaningful.
    pub is_valid: bool,
    /// Whether inference optimisation changed the graph.
    pub graph_modified: bool,
    /// Free-form user bytes.
    pub user_info: Vec<u8>,
    /// Optimisation options, MegEngine's bit layout.
    pub optimize_options: u64,
}

/// A named graph input or output.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NamedIo {
    /// Name.
    pub name: String,
    /// Another name it answers to.
    pub alias: Option<String>,
}

/// An embedded testcase: inputs and the expected outputs.
#[derive(Clone, Debug, PartialEq)]
pub struct Testcase {
    /// Inputs by name.
    pub inputs: Vec<(String, TensorData)>,
    /// Expected outputs by name.
    pub outputs: Vec<(String, TensorData)>,
    /// Largest accepted error.
    pub maxerr: f64,
    /// Whether running the testcase keeps quiet about the errors it measures.
    pub silent: bool,
}

/// Everything in a model file besides the module.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ModelInfo {
    /// Who wrote the file.
    pub producer: String,
    /// The user's model version.
    pub model_version: u32,
    /// Metadata, if written.
    pub metadata: Option<Metadata>,
    /// Inputs of `@main`, in order.
    pub inputs: Vec<NamedIo>,
    /// Outputs of `@main`, in order.
    pub outputs: Vec<NamedIo>,
    /// Embedded testcases.
    pub testcases: Vec<Testcase>,
    /// Format version of the file (set when reading).
    pub format_version: (u16, u16),
}

fn elem_to_fb(e: ElemType) -> (fb::ElemKind, f32, u8) {
    match e {
        ElemType::F32 => (fb::ElemKind::F32, 0.0, 0),
        ElemType::F16 => (fb::ElemKind::F16, 0.0, 0),
        ElemType::BF16 => (fb::ElemKind::BF16, 0.0, 0),
        ElemType::I8 => (fb::ElemKind::I8, 0.0, 0),
        ElemType::U8 => (fb::ElemKind::U8, 0.0, 0),
        ElemType::I16 => (fb::ElemKind::I16, 0.0, 0),
        ElemType::U16 => (fb::ElemKind::U16, 0.0, 0),
        ElemType::I32 => (fb::ElemKind::I32, 0.0, 0),
        ElemType::I64 => (fb::ElemKind::I64, 0.0, 0),
        ElemType::Bool => (fb::ElemKind::Bool, 0.0, 0),
        ElemType::QS8(s) => (fb::ElemKind::QS8, s.get(), 0),
        ElemType::QS32(s) => (fb::ElemKind::QS32, s.get(), 0),
        ElemType::QU8(s, z) => (fb::ElemKind::QU8, s.get(), z),
    }
}

fn elem_from_fb(d: Option<fb::DType<'_>>) -> FResult<ElemType> {
    let d = d.ok_or_else(|| corrupt("a dtype is missing"))?;
    let scale = || {
        let s = d.scale();
        if s.is_finite() && s > 0.0 { Ok(QScale::new(s)) } else { Err(corrupt(format!("bad quantisation scale {s}"))) }
    };
    Ok(match d.kind() {
        fb::ElemKind::F32 => ElemType::F32,
        fb::ElemKind::F16 => ElemType::F16,
        fb::ElemKind::BF16 => ElemType::BF16,
        fb::ElemKind::I8 => ElemType::I8,
        fb::ElemKind::U8 => ElemType::U8,
        fb::ElemKind::I16 => ElemType::I16,
        fb::ElemKind::U16 => ElemType::U16,
        fb::ElemKind::I32 => ElemType::I32,
        fb::ElemKind::I64 => ElemType::I64,
        fb::ElemKind::Bool => ElemType::Bool,
        fb::ElemKind::QS8 => ElemType::QS8(scale()?),
        fb::ElemKind::QS32 => ElemType::QS32(scale()?),
        fb::ElemKind::QU8 => ElemType::QU8(scale()?, d.zero_point()),
        other => return Err(corrupt(format!("unknown element kind {}", other.0))),
    })
}

const LAYOUTS: [(Layout, fb::LayoutKind); 10] = [
    (Layout::Nchw, fb::LayoutKind::Nchw),
    (Layout::Nhwc, fb::LayoutKind::Nhwc),
    (Layout::Nchw88, fb::LayoutKind::Nchw88),
    (Layout::Nchw44, fb::LayoutKind::Nchw44),
    (Layout::Nchw44Dot, fb::LayoutKind::Nchw44Dot),
    (Layout::Nchw4, fb::LayoutKind::Nchw4),
    (Layout::Nchw32, fb::LayoutKind::Nchw32),
    (Layout::Chwn4, fb::LayoutKind::Chwn4),
    (Layout::Nchw64, fb::LayoutKind::Nchw64),
    (Layout::Nhwcd4, fb::LayoutKind::Nhwcd4),
];

fn layout_to_fb(l: Layout) -> fb::LayoutKind {
    LAYOUTS.iter().find(|(x, _)| *x == l).map(|&(_, f)| f).expect("invariant: every layout is listed")
}

fn layout_from_fb(f: fb::LayoutKind) -> FResult<Layout> {
    LAYOUTS.iter().find(|(_, x)| *x == f).map(|&(l, _)| l).ok_or_else(|| corrupt(format!("unknown layout {}", f.0)))
}

/// The two container layouts (MegEngine's `dump_format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DumpFormat {
    /// One size-prefixed, self-contained FlatBuffer with tensor data inline (the default).
    #[default]
    FbsV2,
    /// A header, then the raw tensor data (each tensor 64-byte aligned, so it can
    /// be mapped without copying), then the FlatBuffer graph.
    Fbs,
}

/// Magic of the FBS layout.
pub const FBS_MAGIC: &[u8; 8] = b"STRMFBS\0";
/// Alignment of tensors in the FBS raw region.
pub const RAW_ALIGN: usize = 64;
/// Size of the FBS header: magic, then the graph's offset and length (`u64` LE each).
const FBS_HEADER: usize = 24;

/// Lays out an FBS model: header, raw region (padded so the graph is 8-aligned), graph.
/// Offsets in the header are relative to the model's first byte.
fn fbs_file(raw: &[u8], graph: &[u8]) -> Vec<u8> {
    let raw_start = FBS_HEADER.next_multiple_of(RAW_ALIGN);
    let graph_at = (raw_start + raw.len()).next_multiple_of(8);
    let mut out = Vec::with_capacity(graph_at + graph.len());
    out.extend_from_slice(FBS_MAGIC);
    out.extend_from_slice(&(graph_at as u64).to_le_bytes());
    out.extend_from_slice(&(graph.len() as u64).to_le_bytes());
    out.resize(raw_start, 0);
    out.extend_from_slice(raw);
    out.resize(graph_at, 0);
    out.extend_from_slice(graph);
    out
}

/// Splits one FBS model into (raw region, graph), checking every bound.
fn split_fbs(bytes: &[u8]) -> FResult<(&[u8], &[u8])> {
    let end = fbs_len(bytes)?;
    let at = u64::from_le_bytes(bytes[8..16].try_into().expect("invariant: 8 bytes")) as usize;
    Ok((&bytes[FBS_HEADER.next_multiple_of(RAW_ALIGN)..at], &bytes[at..end]))
}

/// The length of the FBS model at the start of `bytes`.
fn fbs_len(bytes: &[u8]) -> FResult<usize> {
    if bytes.len() < FBS_HEADER {
        return Err(corrupt("the FBS header is truncated"));
    }
    let word = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().expect("invariant: 8 bytes"));
    let (at, len) = (word(8), word(16));
    let raw_start = FBS_HEADER.next_multiple_of(RAW_ALIGN) as u64;
    let end = at.checked_add(len).filter(|&e| e <= bytes.len() as u64 && at >= raw_start);
    let end = end.ok_or_else(|| {
        corrupt(format!("the graph ({len} bytes at {at}) lies outside the {}-byte file", bytes.len()))
    })?;
    Ok(end as usize)
}

/// The length of the size-prefixed FBS_V2 model at the start of `bytes`.
fn v2_len(bytes: &[u8]) -> FResult<usize> {
    if bytes.len() < 12 {
        return Err(FormatError::NotAModel(format!("{} bytes is too short", bytes.len())));
    }
    if !fb::model_size_prefixed_buffer_has_identifier(bytes) {
        return Err(FormatError::NotAModel(format!("the file identifier is not `{FILE_IDENTIFIER}`")));
    }
    let len = u32::from_le_bytes(bytes[..4].try_into().expect("invariant: 4 bytes")) as usize;
    let end = len + 4;
    if end > bytes.len() {
        return Err(corrupt(format!("the model claims {len} bytes but only {} follow", bytes.len() - 4)));
    }
    Ok(end)
}

/// Where each model of a file lies. A file holds one model, or several written
/// one after the other (`dump` with `append`); zero bytes (fewer than
/// [`RAW_ALIGN`]) may pad a model so the next one starts aligned.
pub fn split_models(bytes: &[u8]) -> FResult<Vec<std::ops::Range<usize>>> {
    let mut models = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        if !models.is_empty() {
            let pad = bytes[at..].iter().take(RAW_ALIGN).take_while(|&&b| b == 0).count();
            if at + pad == bytes.len() {
                break;
            }
            at += pad;
        }
        let rest = &bytes[at..];
        let len = if rest.starts_with(FBS_MAGIC) { fbs_len(rest) } else { v2_len(rest) };
        let len = len.map_err(|e| match (models.len(), e) {
            (0, e) => e,
            (k, e) => corrupt(format!("the bytes after model #{k} (at offset {at}) are not a model: {e}")),
        })?;
        models.push(at..at + len);
        at += len;
    }
    if models.is_empty() {
        return Err(FormatError::NotAModel("the file is empty".into()));
    }
    Ok(models)
}

/// How many zero bytes to write before appending a model to a file of
/// `existing_len` bytes so the model starts [`RAW_ALIGN`]-aligned.
pub fn append_padding(existing_len: usize) -> usize {
    existing_len.next_multiple_of(RAW_ALIGN) - existing_len
}

mod read;
mod write;

pub use read::{read_model, read_models};
pub use write::{write_model, write_model_as};
