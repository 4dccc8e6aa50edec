//! The printer: one deterministic, MLIR-like text form for every op.
//!
//! Determinism rules: values are numbered in print order per function (never by
//! arena index); a value's name hint is printed if it is unique in its function,
//! else suffixed (`%x_1`); attributes print sorted by key; floats print in
//! shortest round-trip form; constants over [`PrintOptions::large_const_threshold`]
//! elements print as `#blob<0xHASH>` unless [`PrintOptions::print_large_consts`].
//! The parser reads everything the printer writes, and
//! `print(parse(print(m))) == print(m)`.

use crate::attrs::{AttrData, DenseAttr, DenseStorage};
use crate::context::{Context, Loc};
use crate::tensor::TensorData;
use crate::types::{Dim, ElemType, Layout, TypeData};
use crate::{Attr, BlockId, OpId, OpTraits, RegionId, Ty, ValueId};
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

/// Printing options.
#[derive(Clone, Debug)]
pub struct PrintOptions {
    /// Print every constant in full (hex bytes for large ones), so the text
    /// re-parses to identical data.
    pub print_large_consts: bool,
    /// Constants with more elements than this are elided (unless splat).
    pub large_const_threshold: usize,
    /// Print `loc(...)` after each op that has a location.
    pub print_locs: bool,
}

impl Default for PrintOptions {
    fn default() -> Self {
        PrintOptions { print_large_consts: false, large_const_threshold: 16, print_locs: false }
    }
}

struct Scope {
    used: HashSet<String>,
    counter: usize,
}

/// Prints ops; custom syntax hooks receive one to print their op.
pub struct Printer<'a> {
    ctx: &'a Context,
    opts: &'a PrintOptions,
    out: String,
    names: HashMap<ValueId, String>,
    scopes: Vec<Scope>,
    indent: usize,
}

/// Prints a whole module: its body ops at top level, functions separated by a
/// blank line, preceded by `module attributes {…}` if the module has attributes.
pub fn print_module(ctx: &Context, module: OpId, opts: &PrintOptions) -> String {
    let mut p = Printer::new(ctx, opts);
    if !ctx.op(module).attrs.is_empty() {
        p.out.push_str("module attributes ");
        p.print_attr_dict(module, &[]);
        p.out.push('\n');
    }
    let ops = ctx.body_ops(module);
    for (i, &op) in ops.iter().enumerate() {
        let block_like = !ctx.op(op).regions.is_empty();
        if i > 0 && (block_like || !ctx.op(ops[i - 1]).regions.is_empty()) {
            p.out.push('\n');
        }
        p.print_op_line(op);
    }
    p.out
}

/// Prints one op (and its regions) as it would appear at top level.
pub fn print_op(ctx: &Context, op: OpId, opts: &PrintOptions) -> String {
    let mut p = Printer::new(ctx, opts);
    p.print_op_line(op);
    p.out
}

/// The text of a type.
pub fn type_to_string(ctx: &Context, ty: Ty) -> String {
    let opts = PrintOptions::default();
    let mut p = Printer::new(ctx, &opts);
    p.print_type(ty);
    p.out
}

/// The text of a type that is not (yet) interned.
pub fn type_data_to_string(ctx: &Context, data: &TypeData) -> String {
    let opts = PrintOptions::default();
    let mut p = Printer::new(ctx, &opts);
    p.print_type_data(data);
    p.out
}

/// The text of an attribute.
pub fn attr_to_string(ctx: &Context, attr: Attr) -> String {
    let opts = PrintOptions::default();
    let mut p = Printer::new(ctx, &opts);
    p.print_attr(attr);
    p.out
}

/// Whether `s` can be printed bare as a value, symbol or attribute-key name.
pub fn is_bare_name(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '$' | '.'))
}

/// Writes `s` as a quoted string literal with escapes.
pub fn write_quoted(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Formats a float in shortest round-trip form, with `inf`, `-inf` and `nan`.
pub fn format_f64(v: f64) -> String {
    if v.is_nan() {
        "nan".into()
    } else if v.is_infinite() {
        if v > 0.0 { "inf".into() } else { "-inf".into() }
    } else {
        format!("{v:?}")
    }
}

fn format_f32(v: f32) -> String {
    if v.is_nan() || v.is_infinite() { format_f64(v as f64) } else { format!("{v:?}") }
}

impl<'a> Printer<'a> {
    fn new(ctx: &'a Context, opts: &'a PrintOptions) -> Self {
        Printer {
            ctx,
            opts,
            out: String::new(),
            names: HashMap::new(),
            scopes: vec![Scope { used: HashSet::new(), counter: 0 }],
            indent: 0,
        }
    }

    /// The context being printed.
    pub fn ctx(&self) -> &'a Context {
        self.ctx
    }

    /// Appends raw text.
    pub fn write(&mut self, s: &str) {
        self.out.push_str(s);
    }

    fn newline(&mut self) {
        self.out.push('\n');
        for _ in 0..self.indent {
            self.out.push_str("  ");
        }
    }

    fn print_op_line(&mut self, op: OpId) {
        for _ in 0..self.indent {
            self.out.push_str("  ");
        }
        self.print_op(op);
        self.out.push('\n');
    }

    /// Assigns `v` its printed name (first definition) and writes it with `%`.
    pub fn define_value(&mut self, v: ValueId) {
        let scope = self.scopes.last_mut().expect("invariant: a naming scope is open");
        let name = match self.ctx.value(v).name {
            Some(hint) => {
                let base: String = self
                    .ctx
                    .str(hint)
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '_' | '$' | '.') { c } else { '_' })
                    .collect();
                let mut name = base.clone();
                let mut k = 1;
                while scope.used.contains(&name) || name.chars().all(|c| c.is_ascii_digit()) {
                    name = format!("{base}_{k}");
                    k += 1;
                }
                name
            }
            None => {
                let n = scope.counter.to_string();
                scope.counter += 1;
                n
            }
        };
        scope.used.insert(name.clone());
        self.out.push('%');
        self.out.push_str(&name);
        self.names.insert(v, name);
    }

    /// Writes a use of `v` (`%name`); an undefined value prints as `%<undef vN>`.
    pub fn print_value(&mut self, v: ValueId) {
        match self.names.get(&v) {
            Some(n) => {
                self.out.push('%');
                self.out.push_str(n);
            }
            None => {
                let _ = write!(self.out, "%<undef {v}>");
            }
        }
    }

    fn print_value_list(&mut self, vs: &[ValueId]) {
        for (i, &v) in vs.iter().enumerate() {
            if i > 0 {
                self.out.push_str(", ");
            }
            self.print_value(v);
        }
    }

    /// Prints an op without indentation or newline.
    pub fn print_op(&mut self, op: OpId) {
        let ctx = self.ctx;
        let data = ctx.op(op);
        let def = ctx.op_def(op);
        if let Some(syntax) = def.and_then(|d| d.syntax) {
            (syntax.print)(self, op);
            self.print_loc(data.loc);
            return;
        }
        if !data.results.is_empty() {
            for (i, &r) in data.results.iter().enumerate() {
                if i > 0 {
                    self.out.push_str(", ");
                }
                self.define_value(r);
            }
            self.out.push_str(" = ");
        }
        let name = ctx.str(data.name);
        let short = name
            .strip_prefix(ctx.registry().default_dialect)
            .and_then(|rest| rest.strip_prefix('.'))
            .filter(|_| def.is_some());
        self.out.push_str(short.unwrap_or(name));
        self.out.push('(');
        self.print_value_list(&data.operands);
        self.out.push(')');
        if !data.attrs.is_empty() {
            self.out.push(' ');
            self.print_attr_dict(op, &[]);
        }
        if !data.regions.is_empty() {
            let isolated = def.is_some_and(|d| d.traits.contains(OpTraits::ISOLATED_FROM_ABOVE));
            self.out.push_str(" (");
            for (i, &r) in data.regions.iter().enumerate() {
                if i > 0 {
                    self.out.push_str(", ");
                }
                self.print_region(r, isolated);
            }
            self.out.push(')');
        }
        if !data.results.is_empty() {
            self.out.push_str(" : ");
            self.print_signature(&data.operands, &data.results);
        }
        self.print_loc(data.loc);
    }

    fn print_signature(&mut self, operands: &[ValueId], results: &[ValueId]) {
        let ctx = self.ctx;
        let ins: Vec<Ty> = operands.iter().map(|&v| ctx.value_type(v)).collect();
        let outs: Vec<Ty> = results.iter().map(|&v| ctx.value_type(v)).collect();
        self.print_func_type(&ins, &outs);
    }

    /// Writes `(A, B) -> C` (or `-> (C, D)` / `-> ()`).
    pub fn print_func_type(&mut self, inputs: &[Ty], results: &[Ty]) {
        self.out.push('(');
        self.print_type_list(inputs);
        self.out.push_str(") -> ");
        self.print_result_types(results);
    }

    /// Writes result types: `T` alone, or a parenthesised list.
    pub fn print_result_types(&mut self, results: &[Ty]) {
        if results.len() == 1 && !matches!(self.ctx.ty(results[0]), TypeData::Func(_)) {
            self.print_type(results[0]);
        } else {
            self.out.push('(');
            self.print_type_list(results);
            self.out.push(')');
        }
    }

    fn print_type_list(&mut self, tys: &[Ty]) {
        for (i, &t) in tys.iter().enumerate() {
            if i > 0 {
                self.out.push_str(", ");
            }
            self.print_type(t);
        }
    }

    fn print_loc(&mut self, loc: Loc) {
        if !self.opts.print_locs || loc.is_unknown() {
            return;
        }
        self.out.push_str(" loc(");
        if let Some(f) = loc.file {
            write_quoted(&mut self.out, self.ctx.str(f));
            let _ = write!(self.out, ":{}:{}", loc.line, loc.col);
            if loc.name.is_some() {
                self.out.push(' ');
            }
        }
        if let Some(n) = loc.name {
            write_quoted(&mut self.out, self.ctx.str(n));
        }
        self.out.push(')');
    }

    /// Writes `{k = v, …}` for the op's attributes except `skip`.
    pub fn print_attr_dict(&mut self, op: OpId, skip: &[&str]) {
        let ctx = self.ctx;
        let attrs: Vec<(&str, Attr)> =
            ctx.op(op).attrs.iter().map(|&(k, a)| (ctx.str(k), a)).filter(|(k, _)| !skip.contains(k)).collect();
        self.out.push('{');
        for (i, (k, a)) in attrs.into_iter().enumerate() {
            if i > 0 {
                self.out.push_str(", ");
            }
            self.print_key(k);
            self.out.push_str(" = ");
            self.print_attr(a);
        }
        self.out.push('}');
    }

    /// Whether the op has attributes other than `skip`.
    pub fn has_attrs_except(&self, op: OpId, skip: &[&str]) -> bool {
        self.ctx.op(op).attrs.iter().any(|&(k, _)| !skip.contains(&self.ctx.str(k)))
    }

    fn print_key(&mut self, k: &str) {
        if is_bare_name(k) && k.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
            self.out.push_str(k);
        } else {
            write_quoted(&mut self.out, k);
        }
    }

    /// Writes a region `{ … }`; `isolated` starts a fresh value numbering.
    pub fn print_region(&mut self, r: RegionId, isolated: bool) {
        if isolated {
            self.scopes.push(Scope { used: HashSet::new(), counter: 0 });
        }
        self.out.push('{');
        for &b in &self.ctx.region(r).blocks {
            self.print_block(b, true);
        }
        self.newline();
        self.out.push('}');
        if isolated {
            self.scopes.pop();
        }
    }

    /// Writes the ops of a block (one per line, indented one level deeper),
    /// preceded by a `^bb0(args):` label when `label` and the block has arguments.
    pub fn print_block(&mut self, b: BlockId, label: bool) {
        let ctx = self.ctx;
        let block = ctx.block(b);
        if label && !block.args.is_empty() {
            self.newline();
            self.out.push_str("^bb0(");
            for (i, &a) in block.args.iter().enumerate() {
                if i > 0 {
                    self.out.push_str(", ");
                }
                self.define_value(a);
                self.out.push_str(": ");
                self.print_type(ctx.value_type(a));
            }
            self.out.push_str("):");
        }
        self.indent += 1;
        for &op in &block.ops {
            self.newline();
            self.print_op(op);
        }
        self.indent -= 1;
    }

    /// Opens a fresh naming scope (for custom forms of isolated ops).
    pub fn push_scope(&mut self) {
        self.scopes.push(Scope { used: HashSet::new(), counter: 0 });
    }

    /// Closes the scope opened by [`Printer::push_scope`].
    pub fn pop_scope(&mut self) {
        self.scopes.pop();
    }

    /// Writes a newline and the closing `}` of a block at the current indentation.
    pub fn close_brace(&mut self) {
        self.newline();
        self.out.push('}');
    }

    /// Writes a type.
    pub fn print_type(&mut self, ty: Ty) {
        let ctx = self.ctx;
        self.print_type_data(ctx.ty(ty));
    }

    fn print_type_data(&mut self, data: &TypeData) {
        match data {
            TypeData::Tensor(t) => {
                self.out.push_str("tensor<");
                self.print_shape_body(&t.shape, t.elem, t.layout, None);
                self.out.push('>');
            }
            TypeData::Buffer(b) => {
                self.out.push_str("buffer<");
                self.print_shape_body(&b.shape, b.elem, b.layout, b.strides.as_deref());
                self.out.push('>');
            }
            TypeData::Index => self.out.push_str("index"),
            TypeData::Vector(v) => {
                let _ = write!(self.out, "vec<{}x{}>", v.lanes, v.elem);
            }
            TypeData::Scalar(e) => {
                let _ = write!(self.out, "{e}");
            }
            TypeData::Func(f) => {
                let (ins, outs) = (f.inputs.clone(), f.results.clone());
                self.print_func_type(&ins, &outs);
            }
        }
    }

    fn print_shape_body(&mut self, shape: &[Dim], elem: ElemType, layout: Layout, strides: Option<&[i64]>) {
        for d in shape {
            match d {
                Dim::Fixed(n) => {
                    let _ = write!(self.out, "{n}x");
                }
                Dim::Sym(s) => {
                    let _ = write!(self.out, "?{}x", self.ctx.str(*s));
                }
            }
        }
        let _ = write!(self.out, "{elem}");
        if layout != Layout::Nchw {
            let _ = write!(self.out, ", #{layout}");
        }
        if let Some(st) = strides {
            self.out.push_str(", strides [");
            for (i, s) in st.iter().enumerate() {
                if i > 0 {
                    self.out.push_str(", ");
                }
                let _ = write!(self.out, "{s}");
            }
            self.out.push(']');
        }
    }

    /// Writes an attribute.
    pub fn print_attr(&mut self, attr: Attr) {
        let ctx = self.ctx;
        match ctx.attr(attr) {
            AttrData::Bool(b) => {
                let _ = write!(self.out, "{b}");
            }
            AttrData::Int(i) => {
                let _ = write!(self.out, "{i}");
            }
            AttrData::Float(f) => self.out.push_str(&format_f64(f.get())),
            AttrData::Str(s) => write_quoted(&mut self.out, s),
            AttrData::Array(items) => {
                self.out.push('[');
                for (i, &a) in items.iter().enumerate() {
                    if i > 0 {
                        self.out.push_str(", ");
                    }
                    self.print_attr(a);
                }
                self.out.push(']');
            }
            AttrData::Dict(entries) => {
                self.out.push('{');
                for (i, (k, a)) in entries.iter().enumerate() {
                    if i > 0 {
                        self.out.push_str(", ");
                    }
                    self.print_key(k);
                    self.out.push_str(" = ");
                    self.print_attr(*a);
                }
                self.out.push('}');
            }
            AttrData::Type(t) => self.print_type(*t),
            AttrData::Layout(l) => {
                let _ = write!(self.out, "#{l}");
            }
            AttrData::Dense(d) => self.print_dense(d),
            AttrData::SymbolRef(s) => {
                self.out.push('@');
                if is_bare_name(s) {
                    self.out.push_str(s);
                } else {
                    write_quoted(&mut self.out, s);
                }
            }
        }
    }

    fn print_dense(&mut self, d: &DenseAttr) {
        match &d.storage {
            DenseStorage::Elided { hash } => {
                let _ = write!(self.out, "#blob<0x{hash:016x}>");
            }
            DenseStorage::Data(t) => {
                let n = t.len();
                let full = self.opts.print_large_consts;
                if n > 0 && t.is_splat() && !has_nan(t, 0..1) {
                    self.out.push_str("dense<");
                    self.print_element(t, 0);
                    self.out.push('>');
                } else if n > self.opts.large_const_threshold && !full {
                    let _ = write!(self.out, "#blob<0x{:016x}>", t.content_hash());
                } else if n > self.opts.large_const_threshold || has_nan(t, 0..n) {
                    self.out.push_str("dense<\"0x");
                    for b in t.bytes() {
                        let _ = write!(self.out, "{b:02X}");
                    }
                    self.out.push_str("\">");
                } else {
                    self.out.push_str("dense<[");
                    for i in 0..n {
                        if i > 0 {
                            self.out.push_str(", ");
                        }
                        self.print_element(t, i);
                    }
                    self.out.push_str("]>");
                }
            }
        }
        self.out.push_str(" : ");
        self.print_type(d.ty);
    }

    fn print_element(&mut self, t: &TensorData, i: usize) {
        match t.elem() {
            ElemType::F32 | ElemType::F16 | ElemType::BF16 => {
                self.out.push_str(&format_f32(t.get_f64(i) as f32));
            }
            ElemType::Bool => {
                let _ = write!(self.out, "{}", t.get_bits(i) != 0);
            }
            _ => {
                let _ = write!(self.out, "{}", t.get_i64(i));
            }
        }
    }
}

fn has_nan(t: &TensorData, range: std::ops::Range<usize>) -> bool {
    t.elem().is_float() && range.into_iter().any(|i| t.get_f64(i).is_nan())
}
