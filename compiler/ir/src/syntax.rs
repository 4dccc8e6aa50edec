//! Custom text forms shared by dialects.
//!
//! [`function_syntax`] prints and parses function-like ops (a `sym_name`, a
//! `function_type` and one isolated body region) as
//! `func @name(%a: T, …) -> R attributes {…} { … }`.

use crate::attrs::AttrData;
use crate::parse::{ParseError, Parser};
use crate::print::Printer;
use crate::registry::CustomSyntax;
use crate::rewriter::OpBuild;
use crate::types::{FuncType, TypeData};
use crate::{Loc, OpId};

/// The custom form of function-like ops, introduced by `keyword`.
pub const fn function_syntax(keyword: &'static str) -> CustomSyntax {
    CustomSyntax { keyword, print: print_function, parse: parse_function }
}

const RESERVED: [&str; 2] = ["sym_name", "function_type"];

fn print_function(p: &mut Printer<'_>, op: OpId) {
    let ctx = p.ctx();
    let name = match ctx.op_attr(op, "sym_name").map(|a| ctx.attr(a)) {
        Some(AttrData::Str(s)) => s.clone(),
        _ => "<unnamed>".into(),
    };
    let results = match ctx.op_attr(op, "function_type").map(|a| ctx.attr(a)) {
        Some(AttrData::Type(t)) => ctx.ty(*t).as_func().map(|f| f.results.clone()).unwrap_or_default(),
        _ => Vec::new(),
    };
    let keyword = ctx.op_def(op).and_then(|d| d.syntax).map_or("func", |s| s.keyword);
    p.write(keyword);
    p.write(" @");
    if crate::print::is_bare_name(&name) {
        p.write(&name);
    } else {
        let mut q = String::new();
        crate::print::write_quoted(&mut q, &name);
        p.write(&q);
    }
    p.push_scope();
    p.write("(");
    let block = ctx.body(op, 0);
    if let Some(b) = block {
        for (i, &a) in ctx.block(b).args.iter().enumerate() {
            if i > 0 {
                p.write(", ");
            }
            p.define_value(a);
            p.write(": ");
            p.print_type(ctx.value_type(a));
        }
    }
    p.write(")");
    if !results.is_empty() {
        p.write(" -> ");
        p.print_result_types(&results);
    }
    if p.has_attrs_except(op, &RESERVED) {
        p.write(" attributes ");
        p.print_attr_dict(op, &RESERVED);
    }
    p.write(" {");
    if let Some(b) = block {
        p.print_block(b, false);
    }
    p.close_brace();
    p.pop_scope();
}

fn parse_function(p: &mut Parser<'_>, op_name: &'static str, loc: Loc) -> Result<OpId, ParseError> {
    let name = p.parse_symbol()?;
    let args = p.parse_arg_list()?;
    let mut results = Vec::new();
    if p.peek()? == &crate::parse::lexer::Token::Arrow {
        p.bump()?;
        results = p.parse_result_types()?;
    }
    let mut attrs = Vec::new();
    if p.eat_keyword("attributes")? {
        let span = p.peek_span()?;
        attrs = p.parse_attr_dict()?;
        if let Some((k, _)) = attrs.iter().find(|(k, _)| RESERVED.contains(&k.as_str())) {
            return Err(p.error_at(span, format!("`{k}` is given by the function header")));
        }
    }
    let ctx = p.rewriter().ctx_mut();
    let inputs = args.iter().map(|a| a.1).collect();
    let fty = ctx.intern_type(TypeData::Func(FuncType { inputs, results }));
    let fty = ctx.intern_attr(AttrData::Type(fty));
    let sym = ctx.intern_attr(AttrData::Str(name));
    let mut build = OpBuild::new(op_name).attr("sym_name", sym).attr("function_type", fty).regions(1).loc(loc);
    build.attrs.extend(attrs);
    let op = p.create_op(build);
    p.parse_body(op, 0, args, true)?;
    Ok(op)
}
