//! A hand-written lexer over the text format. Tokens carry byte spans; the
//! parser asks for tokens one at a time, so it can switch to character-level
//! scanning inside shaped types (`tensor<1x3x?Nxf32>`).

/// A byte range in the source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
}

/// A token.
#[derive(Clone, Debug, PartialEq)]
pub enum Token<'s> {
    /// A bare identifier: `graph.conv2d`, `tensor`, `f32`, `true`.
    Ident(&'s str),
    /// `%name`.
    Value(&'s str),
    /// `@name` or `@"quoted"` (unescaped).
    Symbol(String),
    /// `^bb0`.
    Block(&'s str),
    /// `#name`.
    Hash(&'s str),
    /// An integer literal, as written (`-3`, `0x1F`).
    Int(&'s str),
    /// A float literal, as written (`1.5`, `-2e-3`, `-inf`).
    Float(&'s str),
    /// A string literal (unescaped).
    Str(String),
    /// `->`.
    Arrow,
    /// One of `( ) { } [ ] < > , : = ?`.
    Punct(char),
    /// End of input.
    Eof,
}

impl Token<'_> {
    /// How the token is named in "expected X, found Y" messages.
    pub fn describe(&self) -> String {
        match self {
            Token::Ident(s) => format!("`{s}`"),
            Token::Value(s) => format!("`%{s}`"),
            Token::Symbol(s) => format!("`@{s}`"),
            Token::Block(s) => format!("`^{s}`"),
            Token::Hash(s) => format!("`#{s}`"),
            Token::Int(s) | Token::Float(s) => format!("`{s}`"),
            Token::Str(_) => "a string".into(),
            Token::Arrow => "`->`".into(),
            Token::Punct(c) => format!("`{c}`"),
            Token::Eof => "end of input".into(),
        }
    }
}

/// A lexing failure at a span.
#[derive(Clone, Debug)]
pub struct LexError {
    /// Where.
    pub span: Span,
    /// What.
    pub message: String,
}

/// The lexer state: the source and a byte position.
#[derive(Clone, Debug)]
pub struct Lexer<'s> {
    src: &'s str,
    /// Current byte offset.
    pub pos: usize,
}

fn is_name_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'_' | b'$' | b'.')
}

impl<'s> Lexer<'s> {
    /// A lexer at the start of `src`.
    pub fn new(src: &'s str) -> Self {
        Lexer { src, pos: 0 }
    }

    /// The source.
    pub fn src(&self) -> &'s str {
        self.src
    }

    fn peek_byte(&self, off: usize) -> Option<u8> {
        self.src.as_bytes().get(self.pos + off).copied()
    }

    /// Skips whitespace and `//` comments.
    pub fn skip_trivia(&mut self) {
        let b = self.src.as_bytes();
        loop {
            while self.pos < b.len() && b[self.pos].is_ascii_whitespace() {
                self.pos += 1;
            }
            if b[self.pos..].starts_with(b"//") {
                while self.pos < b.len() && b[self.pos] != b'\n' {
                    self.pos += 1;
                }
            } else {
                break;
            }
        }
    }

    fn take_while(&mut self, f: impl Fn(u8) -> bool) -> &'s str {
        let start = self.pos;
        let b = self.src.as_bytes();
        while self.pos < b.len() && f(b[self.pos]) {
            self.pos += 1;
        }
        &self.src[start..self.pos]
    }

    /// Lexes the next token.
    pub fn next_token(&mut self) -> Result<(Token<'s>, Span), LexError> {
        self.skip_trivia();
        let start = self.pos;
        let err = |pos: usize, end: usize, message: String| LexError { span: Span { start: pos, end }, message };
        let Some(c) = self.peek_byte(0) else {
            return Ok((Token::Eof, Span { start, end: start }));
        };
        let tok = match c {
            b'%' | b'^' | b'#' => {
                self.pos += 1;
                let name = self.take_while(is_name_char);
                if name.is_empty() {
                    return Err(err(start, self.pos + 1, format!("expected a name after `{}`", c as char)));
                }
                match c {
                    b'%' => Token::Value(name),
                    b'^' => Token::Block(name),
                    _ => Token::Hash(name),
                }
            }
            b'@' => {
                self.pos += 1;
                if self.peek_byte(0) == Some(b'"') {
                    Token::Symbol(self.lex_string()?)
                } else {
                    let name = self.take_while(is_name_char);
                    if name.is_empty() {
                        return Err(err(start, self.pos + 1, "expected a symbol name after `@`".into()));
                    }
                    Token::Symbol(name.to_string())
                }
            }
            b'"' => Token::Str(self.lex_string()?),
            b'-' if self.peek_byte(1) == Some(b'>') => {
                self.pos += 2;
                Token::Arrow
            }
            b'-' if self.src[self.pos + 1..].starts_with("inf") && !self.peek_byte(4).is_some_and(is_name_char) => {
                self.pos += 4;
                Token::Float(&self.src[start..self.pos])
            }
            b'-' | b'0'..=b'9' => self.lex_number()?,
            b'(' | b')' | b'{' | b'}' | b'[' | b']' | b'<' | b'>' | b',' | b':' | b'=' | b'?' => {
                self.pos += 1;
                Token::Punct(c as char)
            }
            c if c.is_ascii_alphabetic() || c == b'_' => Token::Ident(self.take_while(is_name_char)),
            _ => {
                let ch = self.src[start..].chars().next().unwrap_or('?');
                return Err(err(start, start + ch.len_utf8(), format!("unexpected character `{}`", ch.escape_debug())));
            }
        };
        Ok((tok, Span { start, end: self.pos }))
    }

    fn lex_number(&mut self) -> Result<Token<'s>, LexError> {
        let start = self.pos;
        let b = self.src.as_bytes();
        if b[self.pos] == b'-' {
            self.pos += 1;
        }
        if !self.peek_byte(0).is_some_and(|c| c.is_ascii_digit()) {
            return Err(LexError {
                span: Span { start, end: self.pos + 1 },
                message: "expected a digit after `-`".into(),
            });
        }
        if self.src[self.pos..].starts_with("0x") || self.src[self.pos..].starts_with("0X") {
            self.pos += 2;
            let digits = self.take_while(|c| c.is_ascii_hexdigit());
            if digits.is_empty() {
                return Err(LexError {
                    span: Span { start, end: self.pos },
                    message: "expected hex digits after `0x`".into(),
                });
            }
            return Ok(Token::Int(&self.src[start..self.pos]));
        }
        self.take_while(|c| c.is_ascii_digit());
        let mut float = false;
        if self.peek_byte(0) == Some(b'.') && self.peek_byte(1).is_some_and(|c| c.is_ascii_digit()) {
            float = true;
            self.pos += 1;
            self.take_while(|c| c.is_ascii_digit());
        }
        if matches!(self.peek_byte(0), Some(b'e' | b'E')) {
            let save = self.pos;
            self.pos += 1;
            if matches!(self.peek_byte(0), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if self.peek_byte(0).is_some_and(|c| c.is_ascii_digit()) {
                float = true;
                self.take_while(|c| c.is_ascii_digit());
            } else {
                self.pos = save;
            }
        }
        let text = &self.src[start..self.pos];
        Ok(if float { Token::Float(text) } else { Token::Int(text) })
    }

    fn lex_string(&mut self) -> Result<String, LexError> {
        let start = self.pos;
        self.pos += 1;
        let mut out = String::new();
        let mut chars = self.src[self.pos..].char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.pos += i + 1;
                    return Ok(out);
                }
                '\n' => break,
                '\\' => {
                    let bad = |end: usize| LexError {
                        span: Span { start: self.pos + i, end: self.pos + end },
                        message: "invalid escape in string".into(),
                    };
                    match chars.next() {
                        Some((_, 'n')) => out.push('\n'),
                        Some((_, 't')) => out.push('\t'),
                        Some((_, 'r')) => out.push('\r'),
                        Some((_, '0')) => out.push('\0'),
                        Some((_, '"')) => out.push('"'),
                        Some((_, '\\')) => out.push('\\'),
                        Some((j, 'u')) => {
                            let rest = &self.src[self.pos + j + 1..];
                            let Some(body) = rest.strip_prefix('{') else {
                                return Err(bad(j + 1));
                            };
                            let Some(close) = body.find('}') else {
                                return Err(bad(j + 2));
                            };
                            let ch = u32::from_str_radix(&body[..close], 16)
                                .ok()
                                .and_then(char::from_u32)
                                .ok_or_else(|| bad(j + 2 + close))?;
                            out.push(ch);
                            for _ in 0..close + 2 {
                                chars.next();
                            }
                        }
                        Some((j, _)) => return Err(bad(j + 1)),
                        None => break,
                    }
                }
                c => out.push(c),
            }
        }
        Err(LexError { span: Span { start, end: start + 1 }, message: "unterminated string".into() })
    }
}
