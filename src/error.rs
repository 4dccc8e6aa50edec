//! Errors of the eager and tracing API.

use crate::trace::TraceError;

/// An error from a tensor operation, a trace, or compilation.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// An op rejected its inputs or attributes (shape mismatch, bad dtype, …).
    #[error("{op} at {location}: {message}")]
    Op {
        /// The op (`graph.conv2d`) or API method.
        op: String,
        /// What is wrong.
        message: String,
        /// The caller's source location (`file:line:col`).
        location: String,
    },
    /// A tensor has no data: it came from a symbolic or record-only trace, or
    /// its value was not computed.
    #[error("tensor has no data at {location}: {why}")]
    NoData {
        /// Why there is no data.
        why: String,
        /// The caller's source location.
        location: String,
    },
    /// A traced call did not match the recorded one.
    #[error(transparent)]
    Trace(Box<TraceError>),
    /// An option or feature that is not implemented yet.
    #[error("not supported yet: {0}")]
    Unsupported(String),
    /// Building, optimising or running a compiled graph failed.
    #[error("{0}")]
    Compile(String),
    /// Invalid arguments to an API call.
    #[error("{0}")]
    Invalid(String),
}

impl From<TraceError> for Error {
    fn from(e: TraceError) -> Self {
        Error::Trace(Box::new(e))
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Formats a caller location as `file:line:col`.
pub fn location(loc: &std::panic::Location<'_>) -> String {
    format!("{}:{}:{}", loc.file(), loc.line(), loc.column())
}
