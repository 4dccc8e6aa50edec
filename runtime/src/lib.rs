//! strata-runtime: model files (FlatBuffers, [`format`]) and, later, the
//! compiled executable and its executor.

pub mod exec;
pub mod format;
