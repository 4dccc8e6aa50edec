//! The error type of the code generator.
//!
//! Every fallible function in this crate returns [`CodegenError`]. Cranelift's own errors are
//! kept as sources where they carry information (`ModuleError`) and flattened into a message
//! where their `Display` says too little (verifier errors are pretty-printed with the IR of the
//! offending function).

use std::path::PathBuf;

use cranelift_module::ModuleError;

/// Result alias used throughout `strata-codegen`.
pub type Result<T, E = CodegenError> = std::result::Result<T, E>;

/// Everything that can go wrong while building an ISA, compiling, linking or running code.
#[derive(Debug, thiserror::Error)]
pub enum CodegenError {
    /// A target name that is not one of `host`, `x86_64`, `aarch64`.
    #[error("unknown target `{0}` (known targets: host, x86_64, aarch64)")]
    UnknownTarget(String),

    /// The target is known but cannot be used for what was asked (e.g. JIT for another ISA, or
    /// a host architecture Cranelift does not support).
    #[error("unsupported target: {0}")]
    UnsupportedTarget(String),

    /// Building the ISA failed: an unknown or mistyped setting, or Cranelift rejected the flags.
    #[error("ISA settings: {0}")]
    Isa(String),

    /// Cranelift failed to compile (verify, lower, register-allocate, emit) one function.
    #[error("compiling function `{function}`: {message}")]
    Compile {
        /// Name the function was declared with.
        function: String,
        /// Cranelift's message; verifier errors come with the annotated IR.
        message: String,
    },

    /// Declaring, defining or linking symbols in a Cranelift module failed.
    #[error("{context}: {source}")]
    Module {
        /// What was being done, e.g. "declaring function `f`".
        context: String,
        /// The error from `cranelift-module` (boxed: it is large).
        #[source]
        source: Box<ModuleError>,
    },

    /// A symbol problem the module would otherwise only report by panicking: a declared export
    /// that was never defined, or an import no helper provides.
    #[error("linking: {0}")]
    Link(String),

    /// Writing the object file failed.
    #[error("emitting object file: {0}")]
    Object(String),

    /// A name that is not one of the runtime helpers (see [`crate::helpers`]).
    #[error("unknown runtime helper `{0}`")]
    UnknownHelper(String),

    /// An external tool (cross compiler, emulator) is not installed.
    #[error("`{tool}` was not found on PATH ({hint})")]
    ToolMissing {
        /// The executable's name.
        tool: String,
        /// How to get it, e.g. "run scripts/install-deps.sh".
        hint: String,
    },

    /// An external tool ran but failed.
    #[error("`{command}` failed ({status}):\n{stderr}")]
    ToolFailed {
        /// The command line, for the message.
        command: String,
        /// Its exit status, as text.
        status: String,
        /// What it wrote to standard error.
        stderr: String,
    },

    /// A file-system or process error.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or program involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl CodegenError {
    /// Wraps a `cranelift-module` error with a description of what was being done.
    pub(crate) fn module(context: impl Into<String>, source: ModuleError) -> Self {
        Self::Module { context: context.into(), source: Box::new(source) }
    }

    /// Wraps an I/O error with the path it concerns.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync + 'static>() {}

    #[test]
    fn error_is_send_sync_for_anyhow() {
        assert_send_sync::<CodegenError>();
    }

    #[test]
    fn messages_name_the_culprit() {
        let e = CodegenError::Compile { function: "conv_0".into(), message: "Unsupported feature: f32x8".into() };
        assert_eq!(e.to_string(), "compiling function `conv_0`: Unsupported feature: f32x8");
        let e = CodegenError::ToolMissing { tool: "qemu-aarch64".into(), hint: "run scripts/install-deps.sh".into() };
        assert!(e.to_string().contains("qemu-aarch64"));
        assert!(e.to_string().contains("scripts/install-deps.sh"));
    }
}
