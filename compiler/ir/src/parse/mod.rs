//! The parser: a hand-written recursive-descent reader of the text format.
//!
//! It reads everything the [printer](crate::print) writes. Every op gets the
//! location of its first token (`file:line:col`) unless the text gives an
//! explicit `loc(...)`, so verifier errors point back into the file. Errors
//! carry `file:line:col`, the source line and a caret. Nesting is bounded, and
//! large constants are size-checked before allocation, so hostile input gets an
//! error rather than a stack overflow or an abort.

pub mod lexer;

use crate::attrs::{AttrData, DenseAttr, DenseStorage, FloatBits};
use crate::context::{Context, Loc};
use crate::diag::{Source, render_at};
use crate::registry::OpTraits;
use crate::rewriter::{InsertPoint, OpBuild, Rewriter};
use crate::tensor::TensorData;
use crate::types::{BufferType, Dim, ElemType, FuncType, Layout, QScale, TensorType, TypeData};
use crate::{Attr, BlockId, OpId, RegionId, Sym, Ty, ValueId};
use lexer::{LexError, Lexer, Span, Token};
use std::collections::HashMap;

/// Maximum nesting of regions, attributes and types.
const MAX_DEPTH: usize = 128;
/// Maximum size of one constant written in text.
const MAX_CONST_BYTES: usize = 256 << 20;

/// Parsing options.
#[derive(Clone, Debug, Default)]
pub struct ParseOptions {
    /// Accept ops the registry does not know (they are kept generic).
    pub allow_unregistered: bool,
}

/// A parse failure, located in the source.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{rendered}")]
pub struct ParseError {
    /// Source name.
    pub file: String,
    /// 1-based line.
    pub line: u32,
    /// 1-based column (in characters).
    pub col: u32,
    /// The message alone.
    pub message: String,
    /// `file:line:col: error: message`, the source line and a caret.
    pub rendered: String,
}

type PResult<T> = Result<T, ParseError>;

struct NameScope {
    names: HashMap<String, ValueId>,
    frames: Vec<Vec<String>>,
}

/// Parser state; custom-syntax hooks drive it through its public methods.
pub struct Parser<'a> {
    lex: Lexer<'a>,
    peeked: Option<(Token<'a>, Span)>,
    rw: Rewriter<'a>,
    source: &'a Source,
    file_sym: Sym,
    opts: ParseOptions,
    scopes: Vec<NameScope>,
    blocks: Vec<BlockId>,
    depth: usize,
}

/// Parses a module: the top-level ops of `source` wrapped in the registry's module op.
pub fn parse_module(ctx: &mut Context, source: &Source, opts: &ParseOptions) -> PResult<OpId> {
    let mut p = Parser::new(ctx, source, opts);
    let module_name = p.rw.ctx().registry().module_op;
    let module = p.rw.create(OpBuild::new(module_name).regions(1), InsertPoint::Detached);
    let body = p.rw.ctx().body(module, 0).expect("invariant: module has a body");
    let start = p.loc_at(0);
    p.rw.set_loc(module, start);
    if p.peek()? == &Token::Ident("module") {
        let span = p.bump()?.1;
        p.rw.set_loc(module, p.loc_at(span.start));
        p.expect_keyword("attributes")?;
        for (k, a) in p.parse_attr_dict()? {
            p.rw.set_attr(module, &k, a);
        }
    }
    p.blocks.push(body);
    p.scopes.push(NameScope { names: HashMap::new(), frames: vec![Vec::new()] });
    while p.peek()? != &Token::Eof {
        p.parse_op()?;
    }
    Ok(module)
}

/// Parses a single type, e.g. `tensor<1x3xf32>`.
pub fn parse_type_str(ctx: &mut Context, text: &str) -> PResult<Ty> {
    let source = Source::new("<type>", text);
    let mut p = Parser::new(ctx, &source, &ParseOptions::default());
    let ty = p.parse_type()?;
    p.expect_eof()?;
    Ok(ty)
}

/// Parses a single attribute, e.g. `[1, 2]` or `dense<1.0> : tensor<2xf32>`.
pub fn parse_attr_str(ctx: &mut Context, text: &str) -> PResult<Attr> {
    let source = Source::new("<attr>", text);
    let mut p = Parser::new(ctx, &source, &ParseOptions::default());
    let a = p.parse_attr()?;
    p.expect_eof()?;
    Ok(a)
}

impl<'a> Parser<'a> {
    fn new(ctx: &'a mut Context, source: &'a Source, opts: &ParseOptions) -> Self {
        let file_sym = ctx.sym(&source.name);
        Parser {
            lex: Lexer::new(&source.text),
            peeked: None,
            rw: Rewriter::new(ctx),
            source,
            file_sym,
            opts: opts.clone(),
            scopes: Vec::new(),
            blocks: Vec::new(),
            depth: 0,
        }
    }

    /// The rewriter that builds the IR (for interning and creating ops).
    pub fn rewriter(&mut self) -> &mut Rewriter<'a> {
        &mut self.rw
    }

    // ---- errors and locations ------------------------------------------------

    fn line_col(&self, offset: usize) -> (u32, u32, &'a str) {
        let text: &'a str = &self.source.text;
        let offset = offset.min(text.len());
        let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
        let line_end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
        let line = text[..line_start].matches('\n').count() as u32 + 1;
        let col = text[line_start..offset].chars().count() as u32 + 1;
        (line, col, &text[line_start..line_end])
    }

    /// An error at `span`.
    pub fn error_at(&self, span: Span, message: impl Into<String>) -> ParseError {
        let message = message.into();
        let (line, col, line_text) = self.line_col(span.start);
        let text: &str = &self.source.text;
        let end = span.end.clamp(span.start, text.len());
        let start = span.start.min(text.len());
        let width = text.get(start..end).map_or(1, |s| s.lines().next().unwrap_or("").chars().count());
        let rendered = render_at(&self.source.name, Some(line_text), line, col, width, &message);
        ParseError { file: self.source.name.clone(), line, col, message, rendered }
    }

    fn lex_error(&self, e: LexError) -> ParseError {
        self.error_at(e.span, e.message)
    }

    /// The location of byte `offset` in this source.
    pub fn loc_at(&self, offset: usize) -> Loc {
        let (line, col, _) = self.line_col(offset);
        Loc { file: Some(self.file_sym), line, col, name: None }
    }

    // ---- tokens ----------------------------------------------------------------

    /// The next token, without consuming it.
    pub fn peek(&mut self) -> PResult<&Token<'a>> {
        if self.peeked.is_none() {
            let t = self.lex.next_token().map_err(|e| self.lex_error(e))?;
            self.peeked = Some(t);
        }
        Ok(&self.peeked.as_ref().expect("invariant: just peeked").0)
    }

    /// The span of the next token.
    pub fn peek_span(&mut self) -> PResult<Span> {
        self.peek()?;
        Ok(self.peeked.as_ref().expect("invariant: just peeked").1)
    }

    /// Consumes the next token.
    pub fn bump(&mut self) -> PResult<(Token<'a>, Span)> {
        self.peek()?;
        Ok(self.peeked.take().expect("invariant: just peeked"))
    }

    fn unexpected(&self, tok: &Token<'_>, span: Span, expected: &str) -> ParseError {
        self.error_at(span, format!("expected {expected}, found {}", tok.describe()))
    }

    /// Consumes punctuation `c` or fails.
    pub fn expect_punct(&mut self, c: char) -> PResult<Span> {
        let (tok, span) = self.bump()?;
        if tok == Token::Punct(c) { Ok(span) } else { Err(self.unexpected(&tok, span, &format!("`{c}`"))) }
    }

    /// Consumes punctuation `c` if it is next.
    pub fn eat_punct(&mut self, c: char) -> PResult<bool> {
        if self.peek()? == &Token::Punct(c) {
            self.bump()?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Consumes keyword `kw` or fails.
    pub fn expect_keyword(&mut self, kw: &str) -> PResult<()> {
        let (tok, span) = self.bump()?;
        if tok == Token::Ident(kw) { Ok(()) } else { Err(self.unexpected(&tok, span, &format!("`{kw}`"))) }
    }

    /// Consumes keyword `kw` if it is next.
    pub fn eat_keyword(&mut self, kw: &str) -> PResult<bool> {
        if self.peek()? == &Token::Ident(kw) {
            self.bump()?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Consumes `->` or fails.
    pub fn expect_arrow(&mut self) -> PResult<()> {
        let (tok, span) = self.bump()?;
        if tok == Token::Arrow { Ok(()) } else { Err(self.unexpected(&tok, span, "`->`")) }
    }

    fn expect_eof(&mut self) -> PResult<()> {
        let (tok, span) = self.bump()?;
        if tok == Token::Eof { Ok(()) } else { Err(self.unexpected(&tok, span, "end of input")) }
    }

    /// Consumes a symbol name `@name`.
    pub fn parse_symbol(&mut self) -> PResult<String> {
        match self.bump()? {
            (Token::Symbol(s), _) => Ok(s),
            (tok, span) => Err(self.unexpected(&tok, span, "a symbol name (`@name`)")),
        }
    }

    fn enter(&mut self, span: Span) -> PResult<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error_at(span, format!("nesting deeper than {MAX_DEPTH} levels")));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth -= 1;
    }

    // ---- values and scopes ---------------------------------------------------------

    fn scope(&mut self) -> &mut NameScope {
        self.scopes.last_mut().expect("invariant: a value scope is open")
    }

    /// Defines `%name` as `v` in the current scope (and records it as `v`'s name hint).
    pub fn define_value(&mut self, name: &str, v: ValueId, span: Span) -> PResult<()> {
        if self.scope().names.contains_key(name) {
            return Err(self.error_at(span, format!("redefinition of value %{name}")));
        }
        let scope = self.scope();
        scope.names.insert(name.to_string(), v);
        scope.frames.last_mut().expect("invariant: a frame is open").push(name.to_string());
        self.rw.set_value_name(v, Some(name));
        Ok(())
    }

    fn lookup_value(&mut self, name: &str, span: Span) -> PResult<ValueId> {
        match self.scopes.last().and_then(|s| s.names.get(name)) {
            Some(&v) => Ok(v),
            None => Err(self.error_at(span, format!("use of undefined value %{name}"))),
        }
    }

    fn push_frame(&mut self, isolated: bool) {
        if isolated || self.scopes.is_empty() {
            self.scopes.push(NameScope { names: HashMap::new(), frames: vec![Vec::new()] });
        } else {
            self.scope().frames.push(Vec::new());
        }
    }

    fn pop_frame(&mut self, isolated: bool) {
        if isolated {
            self.scopes.pop();
            return;
        }
        let scope = self.scope();
        let frame = scope.frames.pop().expect("invariant: a frame is open");
        for name in frame {
            scope.names.remove(&name);
        }
    }

    // ---- operations ----------------------------------------------------------------

    /// Creates an op at the current insertion point (end of the current block).
    pub fn create_op(&mut self, build: OpBuild) -> OpId {
        let at = match self.blocks.last() {
            Some(&b) => InsertPoint::End(b),
            None => InsertPoint::Detached,
        };
        self.rw.create(build, at)
    }

    fn parse_op(&mut self) -> PResult<OpId> {
        let start = self.peek_span()?;
        self.enter(start)?;
        let r = self.parse_op_inner(start);
        self.leave();
        r
    }

    fn parse_op_inner(&mut self, start: Span) -> PResult<OpId> {
        let mut result_names = Vec::new();
        while let Token::Value(name) = *self.peek()? {
            let span = self.bump()?.1;
            result_names.push((name, span));
            if !self.eat_punct(',')? {
                self.expect_punct('=')?;
                break;
            }
        }
        let (tok, name_span) = self.bump()?;
        let Token::Ident(name) = tok else {
            return Err(self.unexpected(&tok, name_span, "an operation"));
        };
        let loc = self.loc_at(start.start);
        if !name.contains('.')
            && let Some(def) = self.rw.ctx().registry().keyword(name).copied()
        {
            if let Some(&(_, span)) = result_names.first() {
                return Err(self.error_at(span, format!("`{name}` defines no results")));
            }
            let syntax = def.syntax.expect("invariant: keyword ops have custom syntax");
            let op = (syntax.parse)(self, def.name, loc)?;
            self.parse_trailing_loc(op)?;
            return Ok(op);
        }
        let full_name = if name.contains('.') {
            name.to_string()
        } else {
            format!("{}.{name}", self.rw.ctx().registry().default_dialect)
        };
        let def = self.rw.ctx().registry().get(&full_name).copied();
        if def.is_none() && !self.opts.allow_unregistered {
            return Err(self.error_at(
                name_span,
                format!("unknown operation `{full_name}` (use --allow-unregistered to accept it)"),
            ));
        }
        // Operands.
        self.expect_punct('(')?;
        let mut operands = Vec::new();
        let mut operand_spans = Vec::new();
        if !self.eat_punct(')')? {
            loop {
                let (tok, span) = self.bump()?;
                let Token::Value(v) = tok else {
                    return Err(self.unexpected(&tok, span, "an operand (`%name`)"));
                };
                operands.push(self.lookup_value(v, span)?);
                operand_spans.push(span);
                if !self.eat_punct(',')? {
                    self.expect_punct(')')?;
                    break;
                }
            }
        }
        let mut attrs = Vec::new();
        if self.peek()? == &Token::Punct('{') {
            attrs = self.parse_attr_dict()?;
        }
        // Regions.
        let mut regions = Vec::new();
        if self.eat_punct('(')? {
            let isolated = def.is_some_and(|d| d.traits.contains(OpTraits::ISOLATED_FROM_ABOVE));
            loop {
                regions.push(self.parse_region(isolated)?);
                if !self.eat_punct(',')? {
                    self.expect_punct(')')?;
                    break;
                }
            }
        }
        // Signature.
        let mut result_types = Vec::new();
        if self.eat_punct(':')? {
            let sig_span = self.peek_span()?;
            let ty = self.parse_type()?;
            let TypeData::Func(f) = self.rw.ctx().ty(ty).clone() else {
                return Err(self.error_at(sig_span, "expected a function type `(operands) -> results`"));
            };
            if f.inputs.len() != operands.len() {
                return Err(self.error_at(
                    sig_span,
                    format!(
                        "signature lists {} operand types but the op has {} operands",
                        f.inputs.len(),
                        operands.len()
                    ),
                ));
            }
            for (i, (&v, &t)) in operands.iter().zip(&f.inputs).enumerate() {
                let actual = self.rw.ctx().value_type(v);
                if actual != t {
                    let ctx = self.rw.ctx();
                    let msg = format!(
                        "operand #{i} has type {} but the signature says {}",
                        crate::print::type_to_string(ctx, actual),
                        crate::print::type_to_string(ctx, t)
                    );
                    return Err(self.error_at(operand_spans[i], msg));
                }
            }
            result_types = f.results;
        }
        if result_types.len() != result_names.len() {
            let span = result_names.first().map_or(name_span, |&(_, s)| s);
            return Err(self.error_at(
                span,
                format!("{} result names for {} result types", result_names.len(), result_types.len()),
            ));
        }
        let build = OpBuild { name: full_name, operands, result_types, attrs, regions: 0, loc, adopt_regions: regions };
        let op = self.create_op(build);
        self.parse_trailing_loc(op)?;
        let results = self.rw.ctx().op(op).results.clone();
        for (&(name, span), r) in result_names.iter().zip(results) {
            self.define_value(name, r, span)?;
        }
        Ok(op)
    }

    fn parse_trailing_loc(&mut self, op: OpId) -> PResult<()> {
        if self.peek()? != &Token::Ident("loc") {
            return Ok(());
        }
        self.bump()?;
        self.expect_punct('(')?;
        let mut loc = Loc::UNKNOWN;
        if let Token::Str(_) = self.peek()? {
            let (Token::Str(first), _) = self.bump()? else { unreachable!("peeked a string") };
            if self.eat_punct(':')? {
                loc.file = Some(self.rw.ctx_mut().sym(&first));
                loc.line = self.parse_u32()?;
                self.expect_punct(':')?;
                loc.col = self.parse_u32()?;
                if let Token::Str(_) = self.peek()? {
                    let (Token::Str(name), _) = self.bump()? else { unreachable!("peeked a string") };
                    loc.name = Some(self.rw.ctx_mut().sym(&name));
                }
            } else {
                loc.name = Some(self.rw.ctx_mut().sym(&first));
            }
        }
        self.expect_punct(')')?;
        self.rw.set_loc(op, loc);
        Ok(())
    }

    fn parse_u32(&mut self) -> PResult<u32> {
        let (tok, span) = self.bump()?;
        match tok {
            Token::Int(s) => s.parse().map_err(|_| self.error_at(span, format!("`{s}` is not a valid u32"))),
            other => Err(self.unexpected(&other, span, "an integer")),
        }
    }

    /// Parses `{ [^bb0(args):] ops }` into a new detached region.
    fn parse_region(&mut self, isolated: bool) -> PResult<RegionId> {
        let open = self.expect_punct('{')?;
        self.enter(open)?;
        let (region, block) = self.rw.create_detached_region();
        self.push_frame(isolated);
        if let Token::Block(_) = self.peek()? {
            self.bump()?;
            let args = self.parse_arg_list()?;
            self.expect_punct(':')?;
            for (name, ty, span) in args {
                let v = self.rw.add_block_arg(block, ty);
                self.define_value(&name, v, span)?;
            }
        }
        self.parse_block_ops(block, open)?;
        self.pop_frame(isolated);
        self.leave();
        Ok(region)
    }

    fn parse_block_ops(&mut self, block: BlockId, open: Span) -> PResult<()> {
        self.blocks.push(block);
        loop {
            match self.peek()? {
                Token::Punct('}') => {
                    self.bump()?;
                    break;
                }
                Token::Block(_) => {
                    let span = self.peek_span()?;
                    return Err(self.error_at(span, "regions with more than one block are not supported"));
                }
                Token::Eof => {
                    return Err(self.error_at(open, "this `{` is never closed"));
                }
                _ => {
                    self.parse_op()?;
                }
            }
        }
        self.blocks.pop();
        Ok(())
    }

    /// Parses `(%a: T, %b: T)`: names, types and name spans.
    pub fn parse_arg_list(&mut self) -> PResult<Vec<(String, Ty, Span)>> {
        self.expect_punct('(')?;
        let mut args = Vec::new();
        if self.eat_punct(')')? {
            return Ok(args);
        }
        loop {
            let (tok, span) = self.bump()?;
            let Token::Value(name) = tok else {
                return Err(self.unexpected(&tok, span, "an argument (`%name: type`)"));
            };
            self.expect_punct(':')?;
            let ty = self.parse_type()?;
            args.push((name.to_string(), ty, span));
            if !self.eat_punct(',')? {
                self.expect_punct(')')?;
                return Ok(args);
            }
        }
    }

    /// Adds `args` to the entry block of region `index` of `op` and parses the
    /// `{ ops }` body into it. `isolated` hides outer values.
    pub fn parse_body(&mut self, op: OpId, index: usize, args: Vec<(String, Ty, Span)>, isolated: bool) -> PResult<()> {
        let open = self.expect_punct('{')?;
        self.enter(open)?;
        let block = self.rw.ctx().body(op, index).expect("invariant: op has the region");
        self.push_frame(isolated);
        for (name, ty, span) in args {
            let v = self.rw.add_block_arg(block, ty);
            self.define_value(&name, v, span)?;
        }
        self.parse_block_ops(block, open)?;
        self.pop_frame(isolated);
        self.leave();
        Ok(())
    }

    // ---- attributes ---------------------------------------------------------------

    /// Parses `{key = value, …}` (keys bare or quoted).
    pub fn parse_attr_dict(&mut self) -> PResult<Vec<(String, Attr)>> {
        let open = self.expect_punct('{')?;
        self.enter(open)?;
        let mut out: Vec<(String, Attr)> = Vec::new();
        if !self.eat_punct('}')? {
            loop {
                let (tok, span) = self.bump()?;
                let key = match tok {
                    Token::Ident(k) => k.to_string(),
                    Token::Str(k) => k,
                    other => return Err(self.unexpected(&other, span, "an attribute name")),
                };
                if out.iter().any(|(k, _)| *k == key) {
                    return Err(self.error_at(span, format!("duplicate attribute `{key}`")));
                }
                self.expect_punct('=')?;
                let value = self.parse_attr()?;
                out.push((key, value));
                if !self.eat_punct(',')? {
                    self.expect_punct('}')?;
                    break;
                }
            }
        }
        self.leave();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Parses one attribute value.
    pub fn parse_attr(&mut self) -> PResult<Attr> {
        let span = self.peek_span()?;
        self.enter(span)?;
        let r = self.parse_attr_inner(span);
        self.leave();
        r
    }

    fn parse_attr_inner(&mut self, span: Span) -> PResult<Attr> {
        let data = match self.peek()?.clone() {
            Token::Ident("true") => {
                self.bump()?;
                AttrData::Bool(true)
            }
            Token::Ident("false") => {
                self.bump()?;
                AttrData::Bool(false)
            }
            Token::Ident(w @ ("inf" | "nan")) => {
                self.bump()?;
                AttrData::Float(FloatBits::new(if w == "inf" { f64::INFINITY } else { f64::NAN }))
            }
            Token::Int(s) => {
                self.bump()?;
                AttrData::Int(
                    parse_i64(s).ok_or_else(|| self.error_at(span, format!("integer `{s}` does not fit in i64")))?,
                )
            }
            Token::Float(s) => {
                self.bump()?;
                let v: f64 = s.parse().map_err(|_| self.error_at(span, format!("invalid float `{s}`")))?;
                AttrData::Float(FloatBits::new(v))
            }
            Token::Str(s) => {
                self.bump()?;
                AttrData::Str(s)
            }
            Token::Symbol(s) => {
                self.bump()?;
                AttrData::SymbolRef(s)
            }
            Token::Punct('[') => {
                self.bump()?;
                let mut items = Vec::new();
                if !self.eat_punct(']')? {
                    loop {
                        items.push(self.parse_attr()?);
                        if !self.eat_punct(',')? {
                            self.expect_punct(']')?;
                            break;
                        }
                    }
                }
                AttrData::Array(items)
            }
            Token::Punct('{') => AttrData::Dict(self.parse_attr_dict()?),
            Token::Hash("blob") => {
                self.bump()?;
                self.expect_punct('<')?;
                let (tok, hspan) = self.bump()?;
                let hash = match tok {
                    Token::Int(s) if s.starts_with("0x") => u64::from_str_radix(&s[2..], 16)
                        .map_err(|_| self.error_at(hspan, "blob hash must be a 64-bit hex number"))?,
                    other => return Err(self.unexpected(&other, hspan, "a blob hash (`0x…`)")),
                };
                self.expect_punct('>')?;
                self.expect_punct(':')?;
                let ty = self.parse_dense_type()?;
                AttrData::Dense(DenseAttr { ty, storage: DenseStorage::Elided { hash } })
            }
            Token::Hash(name) => {
                self.bump()?;
                let layout = Layout::from_name(name).ok_or_else(|| {
                    let all: Vec<_> = Layout::ALL.iter().map(|l| format!("#{l}")).collect();
                    self.error_at(span, format!("unknown layout `#{name}` (expected one of {})", all.join(", ")))
                })?;
                AttrData::Layout(layout)
            }
            Token::Ident("dense") => {
                self.bump()?;
                self.parse_dense()?
            }
            Token::Ident(_) | Token::Punct('(') => AttrData::Type(self.parse_type()?),
            other => return Err(self.unexpected(&other, span, "an attribute value")),
        };
        Ok(self.rw.ctx_mut().intern_attr(data))
    }

    fn parse_dense_type(&mut self) -> PResult<Ty> {
        let span = self.peek_span()?;
        let ty = self.parse_type()?;
        match self.rw.ctx().ty(ty) {
            TypeData::Tensor(t) if t.static_shape().is_some() => Ok(ty),
            _ => Err(self.error_at(span, "a dense constant needs a tensor type with a fixed shape")),
        }
    }

    /// After `dense`: `<[e, …]>`, `<e>` (splat) or `<"0xHEX">`, then `: tensor<…>`.
    fn parse_dense(&mut self) -> PResult<AttrData> {
        self.expect_punct('<')?;
        enum Body<'s> {
            List(Vec<(Token<'s>, Span)>),
            Splat((Token<'s>, Span)),
            Hex(String, Span),
        }
        let body = match self.peek()?.clone() {
            Token::Punct('[') => {
                self.bump()?;
                let mut items = Vec::new();
                if !self.eat_punct(']')? {
                    loop {
                        items.push(self.bump()?);
                        if !self.eat_punct(',')? {
                            self.expect_punct(']')?;
                            break;
                        }
                    }
                }
                Body::List(items)
            }
            Token::Str(s) => {
                let span = self.bump()?.1;
                Body::Hex(s, span)
            }
            _ => Body::Splat(self.bump()?),
        };
        self.expect_punct('>')?;
        self.expect_punct(':')?;
        let ty_span = self.peek_span()?;
        let ty = self.parse_dense_type()?;
        let t = self.rw.ctx().ty(ty).as_tensor().expect("invariant: checked tensor").clone();
        let shape: Vec<usize> = t
            .static_shape()
            .expect("invariant: checked static")
            .into_iter()
            .map(|d| usize::try_from(d).unwrap_or(usize::MAX))
            .collect();
        let n = crate::tensor::num_elements(&shape)
            .filter(|n| n.checked_mul(t.elem.size_bytes()).is_some_and(|b| b <= MAX_CONST_BYTES))
            .ok_or_else(|| self.error_at(ty_span, format!("constant larger than {} MiB", MAX_CONST_BYTES >> 20)))?;
        let bytes: Vec<u8> = match body {
            Body::Hex(s, span) => {
                let hex = s.strip_prefix("0x").ok_or_else(|| self.error_at(span, "hex data must start with `0x`"))?;
                if hex.len() != 2 * n * t.elem.size_bytes() {
                    return Err(self.error_at(
                        span,
                        format!("hex data has {} bytes but the type needs {}", hex.len() / 2, n * t.elem.size_bytes()),
                    ));
                }
                (0..hex.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(hex.get(i..i + 2).unwrap_or("zz"), 16))
                    .collect::<Result<_, _>>()
                    .map_err(|_| self.error_at(span, "invalid hex digit in dense data"))?
            }
            Body::Splat((tok, span)) => {
                let mut one = Vec::new();
                self.encode_element(t.elem, &tok, span, &mut one)?;
                one.repeat(n)
            }
            Body::List(items) => {
                if items.len() != n {
                    let span = items.first().map_or(ty_span, |i| i.1);
                    return Err(
                        self.error_at(span, format!("dense list has {} elements but the type has {n}", items.len()))
                    );
                }
                let mut out = Vec::with_capacity(n * t.elem.size_bytes());
                for (tok, span) in &items {
                    self.encode_element(t.elem, tok, *span, &mut out)?;
                }
                out
            }
        };
        let data =
            TensorData::from_bytes(t.elem, shape, bytes.into()).map_err(|e| self.error_at(ty_span, e.to_string()))?;
        Ok(AttrData::Dense(DenseAttr { ty, storage: DenseStorage::Data(data) }))
    }

    fn encode_element(&self, elem: ElemType, tok: &Token<'_>, span: Span, out: &mut Vec<u8>) -> PResult<()> {
        let bad = |what: &str| {
            self.error_at(span, format!("expected {what} for element type {elem}, found {}", tok.describe()))
        };
        if elem.is_float() {
            let text = match tok {
                Token::Float(s) | Token::Int(s) if !s.contains("0x") => *s,
                Token::Ident(s @ ("inf" | "nan")) => s,
                _ => return Err(bad("a float")),
            };
            let v: f32 = text.parse().map_err(|_| bad("a float"))?;
            TensorData::encode(elem, v as f64, out);
            return Ok(());
        }
        if elem == ElemType::Bool {
            let v = match tok {
                Token::Ident("true") | Token::Int("1") => 1.0,
                Token::Ident("false") | Token::Int("0") => 0.0,
                _ => return Err(bad("`true` or `false`")),
            };
            TensorData::encode(elem, v, out);
            return Ok(());
        }
        let Token::Int(s) = tok else {
            return Err(bad("an integer"));
        };
        let v = parse_i64(s).ok_or_else(|| bad("an integer"))?;
        let (lo, hi): (i64, i64) = match elem {
            ElemType::I8 | ElemType::QS8(_) => (i8::MIN.into(), i8::MAX.into()),
            ElemType::U8 | ElemType::QU8(..) => (0, u8::MAX.into()),
            ElemType::I16 => (i16::MIN.into(), i16::MAX.into()),
            ElemType::U16 => (0, u16::MAX.into()),
            ElemType::I32 | ElemType::QS32(_) => (i32::MIN.into(), i32::MAX.into()),
            _ => (i64::MIN, i64::MAX),
        };
        if v < lo || v > hi {
            return Err(self.error_at(span, format!("{v} is out of range for {elem}")));
        }
        if elem == ElemType::I64 {
            out.extend(v.to_le_bytes());
        } else {
            TensorData::encode(elem, v as f64, out);
        }
        Ok(())
    }

    // ---- types ----------------------------------------------------------------------

    /// Parses a type.
    pub fn parse_type(&mut self) -> PResult<Ty> {
        let span = self.peek_span()?;
        self.enter(span)?;
        let r = self.parse_type_inner();
        self.leave();
        r
    }

    fn parse_type_inner(&mut self) -> PResult<Ty> {
        let (tok, span) = self.bump()?;
        let data = match tok {
            Token::Ident(kw @ ("tensor" | "buffer")) => self.parse_shaped(kw == "buffer")?,
            Token::Ident("index") => TypeData::Index,
            Token::Ident("vec") => self.parse_vector(span)?,
            Token::Ident(kw) => TypeData::Scalar(self.parse_elem_after(kw, span)?),
            Token::Punct('(') => {
                let mut inputs = Vec::new();
                if !self.eat_punct(')')? {
                    loop {
                        inputs.push(self.parse_type()?);
                        if !self.eat_punct(',')? {
                            self.expect_punct(')')?;
                            break;
                        }
                    }
                }
                self.expect_arrow()?;
                let results = self.parse_result_types()?;
                TypeData::Func(FuncType { inputs, results })
            }
            other => return Err(self.unexpected(&other, span, "a type")),
        };
        Ok(self.rw.ctx_mut().intern_type(data))
    }

    /// Parses result types after `->`: one type, or `(T, …)`.
    pub fn parse_result_types(&mut self) -> PResult<Vec<Ty>> {
        if self.eat_punct('(')? {
            let mut out = Vec::new();
            if !self.eat_punct(')')? {
                loop {
                    out.push(self.parse_type()?);
                    if !self.eat_punct(',')? {
                        self.expect_punct(')')?;
                        break;
                    }
                }
            }
            Ok(out)
        } else {
            Ok(vec![self.parse_type()?])
        }
    }

    fn parse_elem_after(&mut self, kw: &str, span: Span) -> PResult<ElemType> {
        if let Some(e) = ElemType::from_keyword(kw) {
            return Ok(e);
        }
        match kw {
            "qs8" | "qs32" | "qu8" => {
                self.expect_punct('<')?;
                let (tok, sspan) = self.bump()?;
                let scale: f32 = match tok {
                    Token::Float(s) | Token::Int(s) => s.parse().ok(),
                    _ => None,
                }
                .filter(|s: &f32| s.is_finite() && *s > 0.0)
                .ok_or_else(|| self.error_at(sspan, "expected a positive finite quantisation scale"))?;
                let scale = QScale::new(scale);
                let e = if kw == "qu8" {
                    self.expect_punct(',')?;
                    let (tok, zspan) = self.bump()?;
                    let zp = match tok {
                        Token::Int(s) => s.parse::<u8>().ok(),
                        _ => None,
                    }
                    .ok_or_else(|| self.error_at(zspan, "expected a zero point in 0..=255"))?;
                    ElemType::QU8(scale, zp)
                } else if kw == "qs8" {
                    ElemType::QS8(scale)
                } else {
                    ElemType::QS32(scale)
                };
                self.expect_punct('>')?;
                Ok(e)
            }
            _ => Err(self.error_at(span, format!("unknown type `{kw}`"))),
        }
    }

    /// After `tensor`/`buffer`: `<dims x elem [, #layout] [, strides [..]]>`.
    /// Dimensions are scanned character by character (`1x3x?Nx`); the rest uses tokens.
    /// `vec<4xf32>`: one fixed dimension (the lane count) and an element type.
    fn parse_vector(&mut self, span: Span) -> PResult<TypeData> {
        let TypeData::Tensor(t) = self.parse_shaped(false)? else {
            unreachable!("parse_shaped(false) returns a tensor type")
        };
        let lanes = match (t.shape.as_slice(), t.layout) {
            ([Dim::Fixed(n)], Layout::Nchw) => u32::try_from(*n).ok().filter(|&n| n > 0),
            _ => None,
        };
        let lanes =
            lanes.ok_or_else(|| self.error_at(span, "a vector type is `vec<Nx{elem}>` with one lane count N ≥ 1"))?;
        Ok(TypeData::Vector(crate::types::VectorType { lanes, elem: t.elem }))
    }

    fn parse_shaped(&mut self, buffer: bool) -> PResult<TypeData> {
        self.expect_punct('<')?;
        if let Some((_, span)) = self.peeked.take() {
            self.lex.pos = span.start;
        }
        self.lex.skip_trivia();
        let src = self.lex.src().as_bytes();
        let mut shape = Vec::new();
        loop {
            let start = self.lex.pos;
            let c = src.get(start).copied();
            let dim = match c {
                Some(b'0'..=b'9') => {
                    let mut end = start;
                    while end < src.len() && src[end].is_ascii_digit() {
                        end += 1;
                    }
                    let text = &self.lex.src()[start..end];
                    let n: u64 = text.parse().map_err(|_| {
                        self.error_at(Span { start, end }, format!("dimension `{text}` does not fit in u64"))
                    })?;
                    self.lex.pos = end;
                    Dim::Fixed(n)
                }
                Some(b'?') => {
                    let mut end = start + 1;
                    while end < src.len()
                        && (src[end].is_ascii_uppercase() || src[end].is_ascii_digit() || src[end] == b'_')
                    {
                        end += 1;
                    }
                    let name = &self.lex.src()[start + 1..end];
                    if name.is_empty() || name.as_bytes()[0].is_ascii_digit() {
                        return Err(self.error_at(
                            Span { start, end: end + 1 },
                            "a symbolic dimension is `?` and an upper-case name, e.g. `?N`",
                        ));
                    }
                    self.lex.pos = end;
                    Dim::Sym(self.rw.ctx_mut().sym(name))
                }
                _ => break,
            };
            if src.get(self.lex.pos) != Some(&b'x') {
                let p = self.lex.pos;
                return Err(self.error_at(Span { start: p, end: p + 1 }, "expected `x` after a dimension"));
            }
            self.lex.pos += 1;
            shape.push(dim);
        }
        let (tok, span) = self.bump()?;
        let elem = match tok {
            Token::Ident(kw) => self.parse_elem_after(kw, span)?,
            other => return Err(self.unexpected(&other, span, "a dimension or an element type")),
        };
        let mut layout = Layout::Nchw;
        let mut strides = None;
        while self.eat_punct(',')? {
            let (tok, span) = self.bump()?;
            match tok {
                Token::Hash(name) => {
                    layout = Layout::from_name(name)
                        .ok_or_else(|| self.error_at(span, format!("unknown layout `#{name}`")))?;
                }
                Token::Ident("strides") if buffer => {
                    self.expect_punct('[')?;
                    let mut st = Vec::new();
                    if !self.eat_punct(']')? {
                        loop {
                            let (tok, span) = self.bump()?;
                            let Token::Int(s) = tok else {
                                return Err(self.unexpected(&tok, span, "a stride"));
                            };
                            st.push(parse_i64(s).ok_or_else(|| self.error_at(span, "stride does not fit in i64"))?);
                            if !self.eat_punct(',')? {
                                self.expect_punct(']')?;
                                break;
                            }
                        }
                    }
                    if st.len() != shape.len() {
                        return Err(self.error_at(span, format!("{} strides for rank {}", st.len(), shape.len())));
                    }
                    strides = Some(st);
                }
                other => {
                    let what = if buffer { "a layout (`#nchw88`) or `strides`" } else { "a layout (`#nchw88`)" };
                    return Err(self.unexpected(&other, span, what));
                }
            }
        }
        self.expect_punct('>')?;
        Ok(if buffer {
            TypeData::Buffer(BufferType { shape, elem, layout, strides })
        } else {
            TypeData::Tensor(TensorType { shape, elem, layout })
        })
    }
}

/// Parses a decimal or `0x` hex integer (optionally negative) into `i64`.
fn parse_i64(s: &str) -> Option<i64> {
    let (neg, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let mag: i128 = match digits.strip_prefix("0x").or_else(|| digits.strip_prefix("0X")) {
        Some(hex) => i128::from(u64::from_str_radix(hex, 16).ok()?),
        None => digits.parse::<i128>().ok()?,
    };
    i64::try_from(if neg { -mag } else { mag }).ok()
}
