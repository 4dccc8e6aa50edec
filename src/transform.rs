//! `input_transform`: a small expression language applied to input data before
//! it is fed to a model (MegEngine evaluates a Python expression with `data` and
//! `np` bound; this is the part of that a testcase needs, without Python).
//!
//! ```text
//! expr    := term (("+" | "-") term)*
//! term    := unary (("*" | "/") unary)*
//! unary   := ("-" | "+") unary | primary
//! primary := number | "data" | "(" expr ")" | "[" expr ("," expr)* "]"
//!          | func "(" expr ("," expr)* ")"
//! func    := mean | std | min | max | clip | abs | sqrt
//! number  := digits ["." digits] [("e" | "E") ["+" | "-"] digits] | "." digits [...]
//! ```
//!
//! Values are one of three kinds, all computed in `f64`:
//! - a *scalar*: numbers and the reductions `mean(x)`, `std(x)` (population,
//!   like NumPy's default), `min(x)`, `max(x)`;
//! - *data*: the loaded tensor (its shape never changes);
//! - a *per-channel array* `[a, b, c]`: its elements must be scalars; combined
//!   with data it broadcasts along dim 1 (the channel axis of NCHW), so data of
//!   rank ≥ 2 whose dim 1 equals the array length is required.
//!
//! `+ - * /`, `clip(x, lo, hi)` (= `min(max(x, lo), hi)` elementwise), `abs` and
//! `sqrt` work elementwise and broadcast scalars everywhere. IEEE rules apply:
//! `x / 0` is ±inf, `sqrt(-1)` is NaN. The result is broadcast to the data's
//! shape (a constant expression fills it).
//!
//! ```
//! use strata::ir::{ElemType, TensorData};
//! let e = strata::transform::parse("(data - [1, 2]) * 2").unwrap();
//! let x = TensorData::from_f32(vec![1, 2, 1], &[1.0, 5.0]);
//! assert_eq!(e.eval(&x).unwrap().to_f64_vec(), vec![0.0, 6.0]);
//! ```

use crate::error::{Error, Result};
use std::fmt;
use strata_ir::{ElemType, TensorData};

/// Deepest expression tree accepted (bounds recursion in parsing, evaluation and drop).
const MAX_DEPTH: usize = 200;

/// A parsed `input_transform` expression.
#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    text: String,
    root: Node,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
}

impl BinOp {
    fn prec(self) -> u8 {
        match self {
            BinOp::Add | BinOp::Sub => 1,
            BinOp::Mul | BinOp::Div => 2,
        }
    }

    fn apply(self, a: f64, b: f64) -> f64 {
        match self {
            BinOp::Add => a + b,
            BinOp::Sub => a - b,
            BinOp::Mul => a * b,
            BinOp::Div => a / b,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Func {
    Mean,
    Std,
    Min,
    Max,
    Clip,
    Abs,
    Sqrt,
}

impl Func {
    const ALL: [Func; 7] = [Func::Mean, Func::Std, Func::Min, Func::Max, Func::Clip, Func::Abs, Func::Sqrt];

    fn name(self) -> &'static str {
        match self {
            Func::Mean => "mean",
            Func::Std => "std",
            Func::Min => "min",
            Func::Max => "max",
            Func::Clip => "clip",
            Func::Abs => "abs",
            Func::Sqrt => "sqrt",
        }
    }

    fn signature(self) -> &'static str {
        match self {
            Func::Clip => "clip(x, lo, hi)",
            _ => "one argument",
        }
    }

    fn arity(self) -> usize {
        if self == Func::Clip { 3 } else { 1 }
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Kind {
    Num(f64),
    Data,
    Array(Vec<Node>),
    Neg(Box<Node>),
    Bin(BinOp, Box<Node>, Box<Node>),
    Call(Func, Vec<Node>),
}

/// A syntax node; `at` is the byte offset of the token it is reported at.
#[derive(Clone, Debug, PartialEq)]
struct Node {
    kind: Kind,
    at: usize,
    depth: usize,
}

/// An error pointing into `src` at byte offset `at`: the message, the expression
/// and a caret under the column.
fn error_at(src: &str, at: usize, msg: impl fmt::Display) -> Error {
    let col = src.get(..at).map_or(0, |s| s.chars().count());
    let shown: String = src.chars().map(|c| if c.is_whitespace() || c.is_control() { ' ' } else { c }).collect();
    Error::Invalid(format!("input_transform: {msg} at column {}\n  {shown}\n  {}^", col + 1, " ".repeat(col)))
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Num(f64),
    Ident(String),
    Op(BinOp),
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    End,
}

#[derive(Clone, Debug)]
struct Token {
    tok: Tok,
    at: usize,
    len: usize,
}

fn tokenize(src: &str) -> Result<Vec<Token>> {
    let bytes = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let start = i;
        let single = match c {
            b'+' => Some(Tok::Op(BinOp::Add)),
            b'-' => Some(Tok::Op(BinOp::Sub)),
            b'*' => Some(Tok::Op(BinOp::Mul)),
            b'/' => Some(Tok::Op(BinOp::Div)),
            b'(' => Some(Tok::LParen),
            b')' => Some(Tok::RParen),
            b'[' => Some(Tok::LBracket),
            b']' => Some(Tok::RBracket),
            b',' => Some(Tok::Comma),
            _ => None,
        };
        if let Some(tok) = single {
            out.push(Token { tok, at: start, len: 1 });
            i += 1;
        } else if c.is_ascii_whitespace() {
            i += 1;
        } else if c.is_ascii_digit() || (c == b'.' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit)) {
            while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'.') {
                i += 1;
            }
            if i < bytes.len() && (bytes[i] == b'e' || bytes[i] == b'E') {
                let sign = usize::from(matches!(bytes.get(i + 1), Some(b'+' | b'-')));
                if bytes.get(i + 1 + sign).is_some_and(u8::is_ascii_digit) {
                    i += 1 + sign;
                    while i < bytes.len() && bytes[i].is_ascii_digit() {
                        i += 1;
                    }
                }
            }
            let text = &src[start..i];
            if i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b'.') {
                return Err(error_at(src, start, format!("malformed number starting `{text}`")));
            }
            let v: f64 = text.parse().map_err(|_| error_at(src, start, format!("malformed number `{text}`")))?;
            if !v.is_finite() {
                return Err(error_at(src, start, format!("number `{text}` is out of range")));
            }
            out.push(Token { tok: Tok::Num(v), at: start, len: i - start });
        } else if c.is_ascii_alphabetic() || c == b'_' {
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            if bytes.get(i) == Some(&b'.') {
                return Err(error_at(
                    src,
                    start,
                    format!(
                        "`{}.` attribute access is not part of this language (no NumPy); call functions by bare name, \
                         e.g. mean(data)",
                        &src[start..i]
                    ),
                ));
            }
            out.push(Token { tok: Tok::Ident(src[start..i].to_string()), at: start, len: i - start });
        } else {
            let ch = src[start..].chars().next().expect("invariant: offset is on a char boundary");
            return Err(error_at(src, start, format!("unexpected character `{ch}`")));
        }
    }
    out.push(Token { tok: Tok::End, at: src.len(), len: 0 });
    Ok(out)
}

struct Parser<'a> {
    src: &'a str,
    toks: Vec<Token>,
    pos: usize,
    nest: usize,
}

impl Parser<'_> {
    fn peek(&self) -> &Token {
        &self.toks[self.pos.min(self.toks.len() - 1)]
    }

    fn bump(&mut self) -> Token {
        let t = self.peek().clone();
        if self.pos < self.toks.len() - 1 {
            self.pos += 1;
        }
        t
    }

    fn describe(&self, t: &Token) -> String {
        match t.tok {
            Tok::End => "the end of the expression".to_string(),
            _ => format!("`{}`", &self.src[t.at..t.at + t.len]),
        }
    }

    fn err(&self, at: usize, msg: impl fmt::Display) -> Error {
        error_at(self.src, at, msg)
    }

    fn node(&self, kind: Kind, at: usize) -> Result<Node> {
        let depth = 1 + match &kind {
            Kind::Num(_) | Kind::Data => 0,
            Kind::Neg(a) => a.depth,
            Kind::Bin(_, a, b) => a.depth.max(b.depth),
            Kind::Array(xs) | Kind::Call(_, xs) => xs.iter().map(|x| x.depth).max().unwrap_or(0),
        };
        if depth > MAX_DEPTH {
            return Err(self.err(at, format!("the expression nests too deeply (more than {MAX_DEPTH} levels)")));
        }
        Ok(Node { kind, at, depth })
    }

    /// Guards recursion through parentheses, brackets, calls and unary signs.
    fn enter(&mut self, at: usize) -> Result<()> {
        self.nest += 1;
        if self.nest > MAX_DEPTH {
            return Err(self.err(at, format!("the expression nests too deeply (more than {MAX_DEPTH} levels)")));
        }
        Ok(())
    }

    fn binary(&mut self, min_prec: u8) -> Result<Node> {
        let mut lhs = self.unary()?;
        while let Tok::Op(op) = self.peek().tok
            && op.prec() >= min_prec
        {
            let at = self.bump().at;
            let rhs = self.binary(op.prec() + 1)?;
            lhs = self.node(Kind::Bin(op, Box::new(lhs), Box::new(rhs)), at)?;
        }
        Ok(lhs)
    }

    fn unary(&mut self) -> Result<Node> {
        match self.peek().tok {
            Tok::Op(op @ (BinOp::Sub | BinOp::Add)) => {
                let at = self.bump().at;
                self.enter(at)?;
                let inner = self.unary()?;
                self.nest -= 1;
                if op == BinOp::Sub { self.node(Kind::Neg(Box::new(inner)), at) } else { Ok(inner) }
            }
            _ => self.primary(),
        }
    }

    /// Parses `expr ("," expr)*` up to `close`, after the opening token at `open`.
    fn list(&mut self, open: usize, close: Tok, what: &str) -> Result<Vec<Node>> {
        self.enter(open)?;
        let mut items = Vec::new();
        if self.peek().tok == close {
            return Err(self.err(self.peek().at, format!("{what} needs at least one element")));
        }
        loop {
            items.push(self.binary(1)?);
            let t = self.bump();
            if t.tok == close {
                break;
            }
            if t.tok != Tok::Comma {
                let want = if close == Tok::RParen { "`)`" } else { "`]`" };
                return Err(self.err(t.at, format!("expected `,` or {want}, found {}", self.describe(&t))));
            }
        }
        self.nest -= 1;
        Ok(items)
    }

    fn primary(&mut self) -> Result<Node> {
        let t = self.bump();
        match t.tok {
            Tok::Num(v) => self.node(Kind::Num(v), t.at),
            Tok::LParen => {
                self.enter(t.at)?;
                let inner = self.binary(1)?;
                self.nest -= 1;
                let close = self.bump();
                if close.tok != Tok::RParen {
                    let col = self.src[..t.at].chars().count() + 1;
                    return Err(self.err(
                        close.at,
                        format!("expected `)` to close the `(` at column {col}, found {}", self.describe(&close)),
                    ));
                }
                Ok(inner)
            }
            Tok::LBracket => {
                let items = self.list(t.at, Tok::RBracket, "an array")?;
                self.node(Kind::Array(items), t.at)
            }
            Tok::Ident(ref name) if name == "data" => {
                if self.peek().tok == Tok::LParen {
                    return Err(self.err(t.at, "`data` is not a function"));
                }
                self.node(Kind::Data, t.at)
            }
            Tok::Ident(ref name) => {
                let Some(f) = Func::ALL.into_iter().find(|f| f.name() == name) else {
                    let names: Vec<_> = Func::ALL.iter().map(|f| f.name()).collect();
                    return Err(self.err(t.at, format!("unknown name `{name}` (known: data, {})", names.join(", "))));
                };
                let open = self.bump();
                if open.tok != Tok::LParen {
                    return Err(self.err(open.at, format!("`{name}` is a function: write {name}(...)")));
                }
                let args = self.list(open.at, Tok::RParen, "a function call")?;
                if args.len() != f.arity() {
                    return Err(
                        self.err(t.at, format!("`{name}` takes {}, got {} argument(s)", f.signature(), args.len()))
                    );
                }
                self.node(Kind::Call(f, args), t.at)
            }
            _ => Err(self.err(t.at, format!("expected a value, found {}", self.describe(&t)))),
        }
    }
}

/// Parses an `input_transform` expression (grammar in the module docs).
///
/// Errors are [`Error::Invalid`] and quote the expression with a caret under the
/// offending column. Never panics.
pub fn parse(expr: &str) -> Result<Expr> {
    let toks = tokenize(expr)?;
    let mut p = Parser { src: expr, toks, pos: 0, nest: 0 };
    if p.peek().tok == Tok::End {
        return Err(p.err(0, "the expression is empty"));
    }
    let root = p.binary(1)?;
    let rest = p.bump();
    if rest.tok != Tok::End {
        return Err(p.err(rest.at, format!("unexpected {} after a complete expression", p.describe(&rest))));
    }
    Ok(Expr { text: expr.to_string(), root })
}

/// A value during evaluation; `Data` always has the data's shape.
enum Val {
    Scalar(f64),
    Channels(Vec<f64>),
    Data(Vec<f64>),
}

/// The common form several values broadcast to.
#[derive(Clone, Copy, PartialEq)]
enum Form {
    Scalar,
    Channels(usize),
    Data,
}

struct Eval<'a> {
    expr: &'a Expr,
    shape: &'a [usize],
    data: &'a [f64],
    /// Data elements per channel: the product of the dims after dim 1 (at least 1).
    per_channel: usize,
}

impl Eval<'_> {
    fn err(&self, at: usize, msg: impl fmt::Display) -> Error {
        error_at(&self.expr.text, at, msg)
    }

    fn check_channels(&self, len: usize, at: usize) -> Result<()> {
        if self.shape.len() >= 2 && self.shape[1] == len {
            Ok(())
        } else {
            Err(self.err(
                at,
                format!(
                    "a per-channel array of {len} values needs data with {len} channels on dim 1 (NCHW), \
                     but data has shape {:?}",
                    self.shape
                ),
            ))
        }
    }

    fn form(&self, vals: &[&Val], at: usize) -> Result<Form> {
        let has_data = vals.iter().any(|v| matches!(v, Val::Data(_)));
        let mut channels = None;
        for v in vals {
            if let Val::Channels(c) = v {
                match channels {
                    Some(n) if n != c.len() => {
                        return Err(
                            self.err(at, format!("per-channel arrays of {n} and {} values do not match", c.len()))
                        );
                    }
                    _ => channels = Some(c.len()),
                }
            }
        }
        Ok(match (has_data, channels) {
            (true, Some(n)) => {
                self.check_channels(n, at)?;
                Form::Data
            }
            (true, None) => Form::Data,
            (false, Some(n)) => Form::Channels(n),
            (false, None) => Form::Scalar,
        })
    }

    fn len(&self, form: Form) -> usize {
        match form {
            Form::Scalar => 1,
            Form::Channels(n) => n,
            Form::Data => self.data.len(),
        }
    }

    /// Element `i` of `v` seen in `form` (which `v` broadcasts to).
    fn get(&self, v: &Val, form: Form, i: usize) -> f64 {
        match v {
            Val::Scalar(x) => *x,
            Val::Data(d) => d[i],
            Val::Channels(c) if form == Form::Data => c[(i / self.per_channel) % c.len()],
            Val::Channels(c) => c[i],
        }
    }

    fn build(form: Form, values: Vec<f64>) -> Val {
        match form {
            Form::Scalar => Val::Scalar(values[0]),
            Form::Channels(_) => Val::Channels(values),
            Form::Data => Val::Data(values),
        }
    }

    fn map(&self, vals: &[&Val], at: usize, f: impl Fn(&[f64]) -> f64) -> Result<Val> {
        let form = self.form(vals, at)?;
        let mut args = vec![0.0; vals.len()];
        let values = (0..self.len(form))
            .map(|i| {
                for (a, v) in args.iter_mut().zip(vals) {
                    *a = self.get(v, form, i);
                }
                f(&args)
            })
            .collect();
        Ok(Self::build(form, values))
    }

    fn reduce(&self, f: Func, v: &Val, at: usize) -> Result<f64> {
        let xs: &[f64] = match v {
            Val::Scalar(x) => std::slice::from_ref(x),
            Val::Channels(c) | Val::Data(c) => c,
        };
        if xs.is_empty() {
            return Err(self.err(at, format!("`{}` of an empty tensor", f.name())));
        }
        let n = xs.len() as f64;
        let mean = xs.iter().sum::<f64>() / n;
        let pick = |keep_first: fn(f64, f64) -> bool| {
            xs.iter().copied().fold(xs[0], |a, b| {
                if a.is_nan() || b.is_nan() {
                    f64::NAN
                } else if keep_first(a, b) {
                    a
                } else {
                    b
                }
            })
        };
        Ok(match f {
            Func::Mean => mean,
            Func::Std => (xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n).sqrt(),
            Func::Min => pick(|a, b| a <= b),
            Func::Max => pick(|a, b| a >= b),
            _ => unreachable!("invariant: only reductions are reduced"),
        })
    }

    fn eval(&self, n: &Node) -> Result<Val> {
        Ok(match &n.kind {
            Kind::Num(v) => Val::Scalar(*v),
            Kind::Data => Val::Data(self.data.to_vec()),
            Kind::Array(items) => {
                let mut values = Vec::with_capacity(items.len());
                for item in items {
                    match self.eval(item)? {
                        Val::Scalar(v) => values.push(v),
                        _ => return Err(self.err(item.at, "array elements must be scalars")),
                    }
                }
                Val::Channels(values)
            }
            Kind::Neg(a) => {
                let a = self.eval(a)?;
                self.map(&[&a], n.at, |x| -x[0])?
            }
            Kind::Bin(op, a, b) => {
                let (a, b) = (self.eval(a)?, self.eval(b)?);
                self.map(&[&a, &b], n.at, |x| op.apply(x[0], x[1]))?
            }
            Kind::Call(f, args) => {
                let vals = args.iter().map(|a| self.eval(a)).collect::<Result<Vec<_>>>()?;
                match f {
                    Func::Mean | Func::Std | Func::Min | Func::Max => Val::Scalar(self.reduce(*f, &vals[0], n.at)?),
                    Func::Abs => self.map(&[&vals[0]], n.at, |x| x[0].abs())?,
                    Func::Sqrt => self.map(&[&vals[0]], n.at, |x| x[0].sqrt())?,
                    Func::Clip => {
                        let refs: Vec<&Val> = vals.iter().collect();
                        self.map(&refs, n.at, |x| x[0].max(x[1]).min(x[2]))?
                    }
                }
            }
        })
    }
}

impl Expr {
    /// The expression text as given to [`parse`].
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Evaluates over `values` (row-major, of `shape`): the result has the same
    /// shape (scalars and per-channel arrays are broadcast to it).
    pub fn eval_values(&self, shape: &[usize], values: &[f64]) -> Result<Vec<f64>> {
        if strata_ir::tensor::num_elements(shape) != Some(values.len()) {
            return Err(Error::Invalid(format!(
                "input_transform: {} values do not fill shape {shape:?}",
                values.len()
            )));
        }
        let per_channel = shape.iter().skip(2).product::<usize>().max(1);
        let ev = Eval { expr: self, shape, data: values, per_channel };
        let result = ev.eval(&self.root)?;
        let full = Val::Data(Vec::new());
        Ok(match result {
            Val::Data(d) => d,
            other => {
                let form = ev.form(&[&other, &full], self.root.at)?;
                (0..values.len()).map(|i| ev.get(&other, form, i)).collect()
            }
        })
    }

    /// Evaluates with `data` bound to `data` and casts the result to `elem`
    /// (like [`TensorData::from_f64`]: floats round to nearest, integers truncate
    /// toward zero and saturate, NaN becomes 0; quantised types take the stored
    /// integer, and `data` is read as stored integers too).
    pub fn eval_as(&self, data: &TensorData, elem: ElemType) -> Result<TensorData> {
        let values = self.eval_values(data.shape(), &data.to_f64_vec())?;
        TensorData::from_f64(elem, data.shape().to_vec(), &values).map_err(|e| Error::Invalid(e.to_string()))
    }

    /// Evaluates with `data` bound to `data`; the result has `data`'s shape and
    /// element type (see [`Expr::eval_as`] for the cast). Use `eval_as` when the
    /// data is narrower than the result should be (an 8-bit image scaled to 0..1).
    pub fn eval(&self, data: &TensorData) -> Result<TensorData> {
        self.eval_as(data, data.elem())
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(expr: &str, shape: &[usize], values: &[f64]) -> Vec<f64> {
        parse(expr).unwrap_or_else(|e| panic!("{expr}: {e}")).eval_values(shape, values).unwrap()
    }

    fn close(a: &[f64], b: &[f64]) {
        assert_eq!(a.len(), b.len(), "{a:?} vs {b:?}");
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-12, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn arithmetic_and_precedence() {
        close(&run("(data - 128) / 2", &[4], &[0.0, 128.0, 255.0, 10.0]), &[-64.0, 0.0, 63.5, -59.0]);
        close(&run("1 + 2 * 3 - -4 / 2", &[2], &[7.0, 8.0]), &[9.0, 9.0]);
        close(&run("2 * -data + +1", &[2], &[1.5, -2.0]), &[-2.0, 5.0]);
        close(&run("8 / 2 / 2 - 1 - 1", &[1], &[0.0]), &[0.0]);
        close(&run("data * data - data", &[3], &[2.0, 3.0, -1.0]), &[2.0, 6.0, 2.0]);
        close(&run(".5e1 + 1E-1 + 2.", &[1], &[0.0]), &[5.1 + 2.0]);
        assert_eq!(run("1 / data", &[2], &[0.0, -0.0]), vec![f64::INFINITY, f64::NEG_INFINITY]);
    }

    #[test]
    fn functions_and_reductions() {
        let x = [1.0, 2.0, 3.0, 4.0];
        let std = 1.25f64.sqrt();
        close(&run("(data - mean(data)) / std(data)", &[2, 2], &x), &[-1.5 / std, -0.5 / std, 0.5 / std, 1.5 / std]);
        close(&run("clip(data, 1.5, 3)", &[4], &x), &[1.5, 2.0, 3.0, 3.0]);
        close(&run("abs(2 - data) + sqrt(data * 4)", &[4], &x), &[3.0, 8f64.sqrt(), 1.0 + 12f64.sqrt(), 6.0]);
        close(&run("max(data) - min(data)", &[4], &x), &[3.0; 4]);
        close(&run("std(3) + mean([1, 2, 6])", &[1], &[0.0]), &[3.0]);
        close(&run("min(-data)", &[4], &x), &[-4.0; 4]);
        assert!(run("sqrt(data)", &[1], &[-1.0])[0].is_nan());
        let e = parse("mean(data)").unwrap().eval_values(&[0], &[]).unwrap_err().to_string();
        assert!(e.contains("`mean` of an empty tensor"), "{e}");
    }

    #[test]
    fn per_channel_arrays() {
        let x: Vec<f64> = (0..6).map(f64::from).collect();
        close(&run("(data - [1, 2, 3]) * [1, 10, 100]", &[1, 3, 1, 2], &x), &[-1.0, 0.0, 0.0, 10.0, 100.0, 200.0]);
        // Batch 2, two channels, no spatial dims: channel index is dim 1.
        close(&run("data / [2, -1]", &[2, 2], &[4.0, 4.0, 6.0, 6.0]), &[2.0, -4.0, 3.0, -6.0]);
        close(&run("clip(data, [1, 0, 0], [2, 2, 4])", &[1, 3, 2], &x), &[1.0, 1.0, 2.0, 2.0, 4.0, 4.0]);
        close(&run("[1, 2] * 3", &[1, 2, 2], &[0.0; 4]), &[3.0, 3.0, 6.0, 6.0]);
        close(&run("[-1/2, 1+1]", &[1, 2], &[0.0; 2]), &[-0.5, 2.0]);
        let err = parse("data - [1, 2]").unwrap().eval_values(&[1, 3, 2, 2], &[0.0; 12]).unwrap_err().to_string();
        assert!(err.contains("array of 2 values needs data with 2 channels on dim 1"), "{err}");
        assert!(err.contains("[1, 3, 2, 2]"), "{err}");
        let err = parse("[1, 2] + [1, 2, 3]").unwrap().eval_values(&[1, 2], &[0.0; 2]).unwrap_err().to_string();
        assert!(err.contains("arrays of 2 and 3 values"), "{err}");
        let err = parse("[data]").unwrap().eval_values(&[1, 1], &[0.0]).unwrap_err().to_string();
        assert!(err.contains("array elements must be scalars"), "{err}");
        let err = parse("data + [1]").unwrap().eval_values(&[3], &[0.0; 3]).unwrap_err().to_string();
        assert!(err.contains("shape [3]"), "{err}");
    }

    #[test]
    fn tensor_element_types() {
        let img = TensorData::from_f64(ElemType::U8, vec![1, 1, 1, 3], &[0.0, 51.0, 255.0]).unwrap();
        let e = parse("data / 255").unwrap();
        let f = e.eval_as(&img, ElemType::F32).unwrap();
        assert_eq!(f.elem(), ElemType::F32);
        assert_eq!(f.shape(), &[1, 1, 1, 3]);
        assert_eq!(f.to_f64_vec(), vec![0.0, 0.2f32 as f64, 1.0]);
        // Same element type: the result is truncated back to u8.
        assert_eq!(e.eval(&img).unwrap().to_f64_vec(), vec![0.0, 0.0, 1.0]);
        let sat = parse("data * 2 - 100").unwrap().eval(&img).unwrap();
        assert_eq!(sat.to_f64_vec(), vec![0.0, 2.0, 255.0]);
        assert_eq!(e.text(), "data / 255");
    }

    fn parse_err(expr: &str) -> String {
        match parse(expr) {
            Ok(e) => panic!("`{expr}` parsed as {e:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn parse_errors_point_at_the_column() {
        assert_eq!(
            parse_err("data + * 2"),
            "input_transform: expected a value, found `*` at column 8\n  data + * 2\n         ^"
        );
        assert_eq!(
            parse_err("(data - 1"),
            "input_transform: expected `)` to close the `(` at column 1, found the end of the expression at column 10\n  \
             (data - 1\n           ^"
        );
        assert_eq!(
            parse_err("foo(data)"),
            "input_transform: unknown name `foo` (known: data, mean, std, min, max, clip, abs, sqrt) at column 1\n  \
             foo(data)\n  ^"
        );
        let cases = [
            ("", "the expression is empty at column 1"),
            ("clip(data, 1)", "`clip` takes clip(x, lo, hi), got 2 argument(s) at column 1"),
            ("mean data", "`mean` is a function: write mean(...) at column 6"),
            ("data(1)", "`data` is not a function at column 1"),
            ("np.mean(data)", "attribute access is not part of this language"),
            ("data 2", "unexpected `2` after a complete expression at column 6"),
            ("1.2.3", "malformed number `1.2.3` at column 1"),
            ("2x", "malformed number starting `2` at column 1"),
            ("1e999", "number `1e999` is out of range"),
            ("data % 2", "unexpected character `%` at column 6"),
            ("[]", "an array needs at least one element at column 2"),
            ("abs()", "a function call needs at least one element at column 5"),
            ("[1, 2", "expected `,` or `]`, found the end of the expression at column 6"),
            ("é + data", "unexpected character `é` at column 1"),
        ];
        for (expr, want) in cases {
            let got = parse_err(expr);
            assert!(got.contains(want), "`{expr}`: {got}");
            assert!(got.ends_with('^'), "`{expr}`: {got}");
        }
        // Tabs and newlines are shown as spaces so the caret stays aligned.
        assert!(parse_err("data\n+\t)").ends_with("  data + )\n         ^"));
        // Unicode columns count characters, not bytes.
        assert!(parse_err("[é]").contains("at column 2\n  [é]\n   ^"));
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = format!("{}data{}", "(".repeat(5000), ")".repeat(5000));
        assert!(parse_err(&deep).contains("nests too deeply"));
        let negs = format!("{}data", "-".repeat(5000));
        assert!(parse_err(&negs).contains("nests too deeply"));
        let chain = vec!["1"; 5000].join("+");
        assert!(parse_err(&chain).contains("nests too deeply"));
        let ok = vec!["data"; 150].join("+");
        close(&run(&ok, &[1], &[2.0]), &[300.0]);
    }

    #[test]
    fn random_strings_never_panic() {
        const PIECES: [&str; 26] = [
            "data", "mean", "std", "min", "max", "clip", "abs", "sqrt", "(", ")", "[", "]", ",", "+", "-", "*", "/",
            "1", "2.5", ".", "e", "3e-2", " ", "é", "np.", "x",
        ];
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let (mut parsed, mut evaluated) = (0, 0);
        let data = TensorData::from_f32(vec![1, 3, 1, 2], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        for _ in 0..20000 {
            let len = (next() % 12) as usize;
            let s: String = (0..len).map(|_| PIECES[(next() % PIECES.len() as u64) as usize]).collect();
            match parse(&s) {
                Ok(e) => {
                    parsed += 1;
                    if let Ok(r) = e.eval(&data) {
                        evaluated += 1;
                        assert_eq!(r.shape(), data.shape(), "{s}");
                    }
                }
                Err(e) => {
                    let msg = e.to_string();
                    assert!(msg.starts_with("input_transform: ") && msg.ends_with('^'), "`{s}`: {msg}");
                }
            }
        }
        assert!(parsed > 100 && evaluated > 50, "parsed {parsed}, evaluated {evaluated}");
        // Arbitrary bytes (as lossy UTF-8) as well.
        for _ in 0..5000 {
            let bytes: Vec<u8> = (0..(next() % 16)).map(|_| next() as u8).collect();
            let s = String::from_utf8_lossy(&bytes);
            if let Ok(e) = parse(&s) {
                let _ = e.eval(&data);
            }
        }
    }
}
