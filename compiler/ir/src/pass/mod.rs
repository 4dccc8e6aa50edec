//! Passes: the [`Pass`] trait, typed pass options, the [`PassRegistry`], textual
//! pipelines and the [`PassManager`].
//!
//! A pass is created from its registry entry with validated options, runs on a
//! module, and reports whether it changed anything plus named statistics.

mod manager;
mod pipeline;

pub use manager::{Checker, Instrumentation, PassManager, PassRecord, RunReport};
pub use pipeline::{Pipeline, PipelineError, PipelineItem};

use crate::OpId;
use crate::context::Context;
use std::collections::BTreeMap;
use std::fmt;

/// Whether a pass changed the IR.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Changed {
    /// Nothing changed.
    #[default]
    No,
    /// Something changed.
    Yes,
}

impl Changed {
    /// `Yes` if `b`.
    pub fn from_bool(b: bool) -> Self {
        if b { Changed::Yes } else { Changed::No }
    }

    /// Whether this is `Yes`.
    pub fn is_yes(self) -> bool {
        self == Changed::Yes
    }
}

impl std::ops::BitOr for Changed {
    type Output = Changed;
    fn bitor(self, rhs: Changed) -> Changed {
        Changed::from_bool(self.is_yes() || rhs.is_yes())
    }
}

impl std::ops::BitOrAssign for Changed {
    fn bitor_assign(&mut self, rhs: Changed) {
        *self = *self | rhs;
    }
}

/// A pass failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PassError {
    /// The pass could not run on this input.
    #[error("pass `{pass}` failed: {message}")]
    Failed {
        /// Pass name.
        pass: String,
        /// Why.
        message: String,
    },
    /// The IR did not verify after the pass.
    #[error("IR does not verify after pass `{pass}`:\n{diagnostics}")]
    Verify {
        /// Pass name.
        pass: String,
        /// Rendered diagnostics.
        diagnostics: String,
    },
    /// A numeric check of the pass's result failed (negative opt levels).
    #[error("pass `{pass}` changed results: {message}")]
    Check {
        /// Pass name.
        pass: String,
        /// What differed.
        message: String,
    },
    /// Invalid options.
    #[error("{0}")]
    Options(String),
    /// The input does not meet the pass's precondition (e.g. a layout
    /// conversion on a model none of whose convolutions it applies to): a
    /// refusal about the input, not a failure of the pass.
    #[error("pass `{pass}` does not apply: {message}")]
    Unsupported {
        /// Pass name.
        pass: String,
        /// The precondition that fails.
        message: String,
    },
}

/// Named counters a pass reports (`ops-erased = 3`), and remarks: lines of
/// text explaining what it did (`strata opt --explain-fusions` prints them).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PassStats(BTreeMap<String, i64>, Vec<String>);

impl PassStats {
    /// Adds `n` to counter `name`.
    pub fn add(&mut self, name: &str, n: i64) {
        *self.0.entry(name.to_string()).or_default() += n;
    }

    /// Sets counter `name`.
    pub fn set(&mut self, name: &str, n: i64) {
        self.0.insert(name.to_string(), n);
    }

    /// Counter `name` (0 if never set).
    pub fn get(&self, name: &str) -> i64 {
        self.0.get(name).copied().unwrap_or(0)
    }

    /// Every counter, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, i64)> {
        self.0.iter().map(|(k, &v)| (k.as_str(), v))
    }

    /// Whether no counter was set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Adds a remark.
    pub fn remark(&mut self, text: impl Into<String>) {
        self.1.push(text.into());
    }

    /// The remarks, in the order they were made.
    pub fn remarks(&self) -> &[String] {
        &self.1
    }
}

/// A transformation of a module.
pub trait Pass {
    /// The registered name.
    fn name(&self) -> &'static str;

    /// Runs on `module`. Changes go through a [`Rewriter`](crate::Rewriter).
    fn run(&mut self, ctx: &mut Context, module: OpId, stats: &mut PassStats) -> Result<Changed, PassError>;
}

/// The type of a pass option.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptionKind {
    /// `true` / `false`.
    Bool,
    /// A signed integer.
    Int,
    /// A non-negative integer.
    UInt,
    /// A float.
    Float,
    /// A word or quoted string.
    Str,
}

impl fmt::Display for OptionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OptionKind::Bool => "bool",
            OptionKind::Int => "int",
            OptionKind::UInt => "uint",
            OptionKind::Float => "float",
            OptionKind::Str => "string",
        })
    }
}

/// One option a pass accepts.
#[derive(Clone, Copy, Debug)]
pub struct OptionSpec {
    /// Kebab-case name.
    pub name: &'static str,
    /// Type.
    pub kind: OptionKind,
    /// Default, as text.
    pub default: &'static str,
    /// One-line help.
    pub help: &'static str,
}

/// A typed option value.
#[derive(Clone, Debug, PartialEq)]
pub enum OptionValue {
    /// Bool.
    Bool(bool),
    /// Int or UInt.
    Int(i64),
    /// Float.
    Float(f64),
    /// String.
    Str(String),
}

impl OptionValue {
    /// Parses `text` as `kind`.
    pub fn parse(kind: OptionKind, text: &str) -> Option<Self> {
        match kind {
            OptionKind::Bool => match text {
                "true" | "1" => Some(OptionValue::Bool(true)),
                "false" | "0" => Some(OptionValue::Bool(false)),
                _ => None,
            },
            OptionKind::Int => text.parse().ok().map(OptionValue::Int),
            OptionKind::UInt => text.parse::<u32>().ok().map(|v| OptionValue::Int(v.into())),
            OptionKind::Float => text.parse().ok().filter(|v: &f64| v.is_finite()).map(OptionValue::Float),
            OptionKind::Str => Some(OptionValue::Str(text.to_string())),
        }
    }
}

/// Validated options for one pass instance: every declared option has a value.
#[derive(Clone, Debug, Default)]
pub struct PassOptions(BTreeMap<String, OptionValue>);

impl PassOptions {
    /// Builds the options of `specs` from `given` `(key, text)` pairs, filling
    /// defaults. Unknown keys and ill-typed values are errors naming the valid keys.
    pub fn from_pairs(pass: &str, specs: &[OptionSpec], given: &[(String, String)]) -> Result<Self, String> {
        let mut out = BTreeMap::new();
        for spec in specs {
            let v = OptionValue::parse(spec.kind, spec.default)
                .unwrap_or_else(|| panic!("invariant: default of {pass}.{} parses", spec.name));
            out.insert(spec.name.to_string(), v);
        }
        for (k, text) in given {
            let Some(spec) = specs.iter().find(|s| s.name == k) else {
                let valid: Vec<_> = specs.iter().map(|s| format!("{} ({})", s.name, s.kind)).collect();
                let valid = if valid.is_empty() {
                    "it takes no options".to_string()
                } else {
                    format!("valid options: {}", valid.join(", "))
                };
                return Err(format!("unknown option `{k}` for pass `{pass}`; {valid}"));
            };
            let v = OptionValue::parse(spec.kind, text)
                .ok_or_else(|| format!("option `{k}` of pass `{pass}` expects a {}, got `{text}`", spec.kind))?;
            out.insert(k.clone(), v);
        }
        Ok(PassOptions(out))
    }

    /// A bool option.
    pub fn bool(&self, key: &str) -> bool {
        matches!(self.0.get(key), Some(OptionValue::Bool(true)))
    }

    /// An integer option (0 if absent).
    pub fn int(&self, key: &str) -> i64 {
        match self.0.get(key) {
            Some(OptionValue::Int(v)) => *v,
            _ => 0,
        }
    }

    /// A float option (0 if absent).
    pub fn float(&self, key: &str) -> f64 {
        match self.0.get(key) {
            Some(OptionValue::Float(v)) => *v,
            Some(OptionValue::Int(v)) => *v as f64,
            _ => 0.0,
        }
    }

    /// A string option (empty if absent).
    pub fn str(&self, key: &str) -> &str {
        match self.0.get(key) {
            Some(OptionValue::Str(v)) => v,
            _ => "",
        }
    }
}

/// Creates a pass from validated options.
pub type PassFactory = fn(&PassOptions) -> Result<Box<dyn Pass>, PassError>;

/// A registry entry.
#[derive(Clone, Copy, Debug)]
pub struct PassInfo {
    /// Kebab-case name.
    pub name: &'static str,
    /// One-line summary.
    pub summary: &'static str,
    /// Options.
    pub options: &'static [OptionSpec],
    /// Factory.
    pub create: PassFactory,
}

impl PassInfo {
    /// `name{opt=default …}  summary`, one line (for `--list-passes`).
    pub fn describe(&self) -> String {
        let mut s = format!("{:<24} {}", self.name, self.summary);
        for o in self.options {
            s.push_str(&format!("\n{:<26}{}: {} = {}  {}", "", o.name, o.kind, o.default, o.help));
        }
        s
    }
}

/// Every pass, by name.
#[derive(Clone, Debug, Default)]
pub struct PassRegistry {
    passes: BTreeMap<&'static str, PassInfo>,
}

impl PassRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a pass; panics on a duplicate name (a bug in the registration list).
    pub fn register(&mut self, info: PassInfo) {
        assert!(self.passes.insert(info.name, info).is_none(), "pass `{}` registered twice", info.name);
    }

    /// The entry for `name`.
    pub fn get(&self, name: &str) -> Option<&PassInfo> {
        self.passes.get(name)
    }

    /// Every entry, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = &PassInfo> {
        self.passes.values()
    }
}
