//! Diagnostics: errors attached to ops and locations, rendered with the source
//! line and a caret when the source text is at hand.

use crate::OpId;
use crate::context::{Context, Loc};
use std::fmt::Write as _;

/// A named source text, for rendering diagnostics with the offending line.
#[derive(Clone, Debug)]
pub struct Source {
    /// The name diagnostics print (a path, or `<stdin>`).
    pub name: String,
    /// The text.
    pub text: String,
}

impl Source {
    /// A source named `name` with contents `text`.
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Self {
        Source { name: name.into(), text: text.into() }
    }

    /// Line `line` (1-based), without its newline.
    pub fn line(&self, line: u32) -> Option<&str> {
        self.text.lines().nth(line.checked_sub(1)? as usize)
    }
}

/// Renders `file:line:col: error: message`, then the source line and a caret
/// under column `col` spanning `width` characters.
pub fn render_at(name: &str, source_line: Option<&str>, line: u32, col: u32, width: usize, message: &str) -> String {
    let mut s = format!("{name}:{line}:{col}: error: {message}");
    if let Some(text) = source_line {
        let _ = write!(s, "\n  {text}\n  ");
        let pad: String =
            text.chars().take(col.saturating_sub(1) as usize).map(|c| if c == '\t' { '\t' } else { ' ' }).collect();
        let _ = write!(s, "{pad}{}", "^".repeat(width.max(1)));
    }
    s
}

/// One problem found in the IR.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// The op the problem is about, if any.
    pub op: Option<OpId>,
    /// The op's name, kept so the message survives the op's erasure.
    pub op_name: Option<String>,
    /// Where the op came from.
    pub loc: Loc,
    /// What is wrong.
    pub message: String,
}

impl Diagnostic {
    /// A diagnostic about `op`.
    pub fn at_op(ctx: &Context, op: OpId, message: impl Into<String>) -> Self {
        Diagnostic {
            op: Some(op),
            op_name: Some(ctx.op_name(op).to_string()),
            loc: ctx.op(op).loc,
            message: message.into(),
        }
    }

    /// Renders the diagnostic: location, op name, message, and (when `source`
    /// is the file the location names) the source line with a caret.
    pub fn render(&self, ctx: &Context, source: Option<&Source>) -> String {
        let what = match &self.op_name {
            Some(name) => format!("'{name}' op {}", self.message),
            None => self.message.clone(),
        };
        let named = self.loc.name.map(|n| format!(" (named \"{}\")", ctx.str(n))).unwrap_or_default();
        match self.loc.file {
            Some(file) => {
                let file = ctx.str(file);
                let line_text = source.filter(|s| s.name == file).and_then(|s| s.line(self.loc.line));
                render_at(file, line_text, self.loc.line, self.loc.col, 1, &format!("{what}{named}"))
            }
            None => format!("<unknown>: error: {what}{named}"),
        }
    }
}

/// Renders every diagnostic, one block per diagnostic.
pub fn render_all(ctx: &Context, diags: &[Diagnostic], source: Option<&Source>) -> String {
    diags.iter().map(|d| d.render(ctx, source)).collect::<Vec<_>>().join("\n")
}
