//! Pipeline text: `canonicalize,cse,eqsat{iters=8 nodes=20000},fixpoint{max-iters=4}(a,b)`.
//!
//! Grammar (whitespace is free between tokens):
//! ```text
//! pipeline := [ item { "," item } ]
//! item     := NAME [ options ]                      a registered pass
//!           | "fixpoint" [ options ] "(" pipeline ")" rerun until nothing changes
//! options  := "{" [ KEY "=" VALUE { ("," | " ") KEY "=" VALUE } ] "}"
//! VALUE    := a word without `,` `}` or spaces, or a "quoted string"
//! ```
//! `fixpoint` takes one option, `max-iters` (default 10). Parsing validates pass
//! names and options against the registry, so errors point at the text.

use super::{OptionKind, OptionSpec, PassOptions, PassRegistry};
use std::fmt;

/// One step of a pipeline.
#[derive(Clone, Debug, PartialEq)]
pub enum PipelineItem {
    /// A pass with the options written for it.
    Pass {
        /// Pass name.
        name: String,
        /// `(key, value)` as written.
        options: Vec<(String, String)>,
    },
    /// Rerun `body` until no pass in it changes anything, at most `max_iters` times.
    Fixpoint {
        /// Iteration cap.
        max_iters: u32,
        /// The repeated passes.
        body: Vec<PipelineItem>,
    },
}

/// A parsed, validated pipeline.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Pipeline {
    /// Steps in order.
    pub items: Vec<PipelineItem>,
}

/// A pipeline text error with its position.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid pipeline: {message}\n  {text}\n  {caret}")]
pub struct PipelineError {
    /// The pipeline text.
    pub text: String,
    /// What is wrong.
    pub message: String,
    /// A caret line pointing at the problem.
    pub caret: String,
}

const FIXPOINT_OPTIONS: &[OptionSpec] =
    &[OptionSpec { name: "max-iters", kind: OptionKind::UInt, default: "10", help: "maximum number of rounds" }];

struct Cursor<'t> {
    text: &'t str,
    pos: usize,
}

impl<'t> Cursor<'t> {
    fn error(&self, at: usize, message: impl Into<String>) -> PipelineError {
        let at = at.min(self.text.len());
        PipelineError {
            text: self.text.to_string(),
            message: message.into(),
            caret: format!("{}^", " ".repeat(self.text[..at].chars().count())),
        }
    }

    fn skip_ws(&mut self) {
        while let Some(c) = self.text[self.pos..].chars().next().filter(|c| c.is_whitespace()) {
            self.pos += c.len_utf8();
        }
    }

    fn peek(&mut self) -> Option<char> {
        self.skip_ws();
        self.text[self.pos..].chars().next()
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.pos += c.len_utf8();
            true
        } else {
            false
        }
    }

    fn word(&mut self, what: &str) -> Result<(&'t str, usize), PipelineError> {
        self.skip_ws();
        let start = self.pos;
        let len = self.text[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
            .unwrap_or(self.text.len() - start);
        if len == 0 {
            return Err(self.error(start, format!("expected {what}")));
        }
        self.pos += len;
        Ok((&self.text[start..start + len], start))
    }

    fn value(&mut self) -> Result<String, PipelineError> {
        self.skip_ws();
        let start = self.pos;
        if self.text[start..].starts_with('"') {
            let end = self.text[start + 1..].find('"').ok_or_else(|| self.error(start, "unterminated string"))?;
            self.pos = start + 1 + end + 1;
            return Ok(self.text[start + 1..start + 1 + end].to_string());
        }
        let len = self.text[start..]
            .find(|c: char| c == ',' || c == '}' || c.is_whitespace())
            .unwrap_or(self.text.len() - start);
        if len == 0 {
            return Err(self.error(start, "expected an option value"));
        }
        self.pos += len;
        Ok(self.text[start..start + len].to_string())
    }
}

impl Pipeline {
    /// Parses and validates pipeline text.
    pub fn parse(text: &str, registry: &PassRegistry) -> Result<Pipeline, PipelineError> {
        let mut cur = Cursor { text, pos: 0 };
        let items = parse_list(&mut cur, registry, 0)?;
        if let Some(c) = cur.peek() {
            return Err(cur.error(cur.pos, format!("unexpected `{c}`")));
        }
        Ok(Pipeline { items })
    }

    /// Whether the pipeline has no passes.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

fn parse_list(cur: &mut Cursor<'_>, registry: &PassRegistry, depth: usize) -> Result<Vec<PipelineItem>, PipelineError> {
    if depth > 32 {
        return Err(cur.error(cur.pos, "fixpoint nesting deeper than 32"));
    }
    let mut items = Vec::new();
    if matches!(cur.peek(), None | Some(')')) {
        return Ok(items);
    }
    loop {
        items.push(parse_item(cur, registry, depth)?);
        if !cur.eat(',') {
            return Ok(items);
        }
    }
}

fn parse_options(cur: &mut Cursor<'_>) -> Result<Vec<(String, String)>, PipelineError> {
    let mut out: Vec<(String, String)> = Vec::new();
    if !cur.eat('{') {
        return Ok(out);
    }
    loop {
        if cur.eat('}') {
            return Ok(out);
        }
        let (key, at) = cur.word("an option name")?;
        if out.iter().any(|(k, _)| k == key) {
            return Err(cur.error(at, format!("option `{key}` given twice")));
        }
        if !cur.eat('=') {
            return Err(cur.error(cur.pos, format!("expected `=` after option `{key}`")));
        }
        let value = cur.value()?;
        out.push((key.to_string(), value));
        cur.eat(',');
        if cur.peek().is_none() {
            return Err(cur.error(cur.pos, "expected `}` to close the options"));
        }
    }
}

fn parse_item(cur: &mut Cursor<'_>, registry: &PassRegistry, depth: usize) -> Result<PipelineItem, PipelineError> {
    let (name, at) = cur.word("a pass name")?;
    let opts_at = cur.pos;
    let options = parse_options(cur)?;
    if name == "fixpoint" {
        let validated =
            PassOptions::from_pairs("fixpoint", FIXPOINT_OPTIONS, &options).map_err(|m| cur.error(opts_at, m))?;
        if !cur.eat('(') {
            return Err(cur.error(cur.pos, "expected `(` after fixpoint"));
        }
        let body = parse_list(cur, registry, depth + 1)?;
        if !cur.eat(')') {
            return Err(cur.error(cur.pos, "expected `)` to close fixpoint"));
        }
        let max_iters = u32::try_from(validated.int("max-iters")).unwrap_or(u32::MAX).max(1);
        return Ok(PipelineItem::Fixpoint { max_iters, body });
    }
    let Some(info) = registry.get(name) else {
        let mut names: Vec<_> = registry.iter().map(|p| p.name).collect();
        names.push("fixpoint");
        return Err(cur.error(at, format!("unknown pass `{name}`; registered passes: {}", names.join(", "))));
    };
    PassOptions::from_pairs(name, info.options, &options).map_err(|m| cur.error(opts_at, m))?;
    Ok(PipelineItem::Pass { name: name.to_string(), options })
}

fn write_options(f: &mut fmt::Formatter<'_>, options: &[(String, String)]) -> fmt::Result {
    if options.is_empty() {
        return Ok(());
    }
    f.write_str("{")?;
    for (i, (k, v)) in options.iter().enumerate() {
        if i > 0 {
            f.write_str(" ")?;
        }
        if v.is_empty() || v.contains(|c: char| c == ',' || c == '}' || c.is_whitespace()) {
            write!(f, "{k}=\"{v}\"")?;
        } else {
            write!(f, "{k}={v}")?;
        }
    }
    f.write_str("}")
}

fn write_items(f: &mut fmt::Formatter<'_>, items: &[PipelineItem]) -> fmt::Result {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(",")?;
        }
        match item {
            PipelineItem::Pass { name, options } => {
                f.write_str(name)?;
                write_options(f, options)?;
            }
            PipelineItem::Fixpoint { max_iters, body } => {
                f.write_str("fixpoint")?;
                if *max_iters != 10 {
                    write!(f, "{{max-iters={max_iters}}}")?;
                }
                f.write_str("(")?;
                write_items(f, body)?;
                f.write_str(")")?;
            }
        }
    }
    Ok(())
}

impl fmt::Display for Pipeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_items(f, &self.items)
    }
}
