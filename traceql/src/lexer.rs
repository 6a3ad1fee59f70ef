//! The TraceQL lexer: text into tokens with line/column positions.
//!
//! Follows Tempo's lexical rules: attribute names run until whitespace or one of
//! `{ } ( ) = ~ ! < > & | ^ ,`; `."quoted names"` take Go string escapes; scoped attributes
//! (`span.`, `resource.`, `event.`, `link.`, `instrumentation.`, `parent.`) and scoped
//! intrinsics (`span:id`, `trace:duration`, ...) are single tokens; durations use Go's units
//! (`ns`, `us`, `µs`, `ms`, `s`, `m`, `h`, combinable as in `1h30m`).

use std::fmt;

/// A position in the query text, 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    pub line: u32,
    pub col: u32,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, col {}", self.line, self.col)
    }
}

/// Where an attribute lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttrScope {
    /// `.name`: a span attribute, else a resource attribute.
    Unscoped,
    Span,
    Resource,
    Event,
    Link,
    Instrumentation,
}

impl AttrScope {
    /// The prefix that writes this scope (`""` for unscoped).
    pub fn prefix(self) -> &'static str {
        match self {
            Self::Unscoped => "",
            Self::Span => "span",
            Self::Resource => "resource",
            Self::Event => "event",
            Self::Link => "link",
            Self::Instrumentation => "instrumentation",
        }
    }

    fn from_word(word: &str) -> Option<Self> {
        Some(match word {
            "span" => Self::Span,
            "resource" => Self::Resource,
            "event" => Self::Event,
            "link" => Self::Link,
            "instrumentation" => Self::Instrumentation,
            _ => return None,
        })
    }
}

/// One token.
#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    LBrace,
    RBrace,
    LParen,
    RParen,
    Comma,
    Pipe,
    /// `=`
    Eq,
    /// `!=`
    Neq,
    Gt,
    Gte,
    Lt,
    Lte,
    /// `=~`
    Re,
    /// `!~`: not-regex inside a filter, not-sibling between spansets.
    NotTilde,
    /// `~`: sibling.
    Tilde,
    And,
    Or,
    Not,
    Plus,
    Minus,
    Star,
    Slash,
    Percent,
    Caret,
    /// `>>`: descendant.
    Desc,
    /// `<<`: ancestor.
    Anc,
    /// `!>`, `!>>`, `!<`, `!<<`
    NotChild,
    NotDesc,
    NotParent,
    NotAnc,
    /// `&>`, `&>>`, `&<`, `&<<`, `&~`
    UnionChild,
    UnionDesc,
    UnionParent,
    UnionAnc,
    UnionSibling,
    /// `==`, never valid; kept so the parser can say so.
    EqEq,
    Str(String),
    Int(i64),
    Float(f64),
    /// A duration in nanoseconds.
    Duration(i64),
    /// A bare word: keyword, intrinsic, function or enum value.
    Ident(String),
    /// `scope:name`, as in `span:id` or `trace:duration`.
    ScopedIntrinsic {
        scope: String,
        name: String,
    },
    /// An attribute, with `parent.` when it names the parent span's attribute.
    Attr {
        parent: bool,
        scope: AttrScope,
        name: String,
    },
    Eof,
}

/// A token and where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    pub tok: Tok,
    pub pos: Pos,
}

/// A syntax error (from the lexer or the parser) with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LexError {
    pub pos: Pos,
    pub message: String,
}

impl fmt::Display for LexError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.pos, self.message)
    }
}

impl std::error::Error for LexError {}

fn is_attribute_rune(c: char) -> bool {
    !c.is_whitespace()
        && !matches!(
            c,
            '{' | '}' | '(' | ')' | '=' | '~' | '!' | '<' | '>' | '&' | '|' | '^' | ','
        )
}

struct Lexer<'a> {
    chars: std::iter::Peekable<std::str::CharIndices<'a>>,
    src: &'a str,
    line: u32,
    col: u32,
}

impl<'a> Lexer<'a> {
    fn pos(&self) -> Pos {
        Pos {
            line: self.line,
            col: self.col,
        }
    }

    fn peek(&mut self) -> Option<char> {
        self.chars.peek().map(|(_, c)| *c)
    }

    fn peek2(&self) -> Option<char> {
        let mut it = self.chars.clone();
        it.next();
        it.next().map(|(_, c)| c)
    }

    fn bump(&mut self) -> Option<char> {
        let (_, c) = self.chars.next()?;
        if c == '\n' {
            self.line += 1;
            self.col = 1;
        } else {
            self.col += 1;
        }
        Some(c)
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.bump();
            true
        } else {
            false
        }
    }

    fn offset(&mut self) -> usize {
        self.chars.peek().map_or(self.src.len(), |(i, _)| *i)
    }

    fn err<T>(&self, pos: Pos, message: impl Into<String>) -> Result<T, LexError> {
        Err(LexError {
            pos,
            message: message.into(),
        })
    }

    fn word(&mut self) -> String {
        let start = self.offset();
        while self.peek().is_some_and(|c| c.is_alphanumeric() || c == '_') {
            self.bump();
        }
        let end = self.offset();
        self.src[start..end].to_string()
    }

    /// A quoted string (after its opening quote), with Go's escapes for `"`.
    fn string(&mut self, quote: char, start: Pos) -> Result<String, LexError> {
        let mut out = String::new();
        loop {
            let Some(c) = self.bump() else {
                return self.err(start, "unterminated string");
            };
            if c == quote {
                return Ok(out);
            }
            if c == '\\' && quote == '"' {
                let esc_pos = self.pos();
                match self.bump() {
                    Some('"') => out.push('"'),
                    Some('\\') => out.push('\\'),
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some('r') => out.push('\r'),
                    Some('a') => out.push('\u{7}'),
                    Some('b') => out.push('\u{8}'),
                    Some('f') => out.push('\u{c}'),
                    Some('v') => out.push('\u{b}'),
                    Some('\'') => out.push('\''),
                    Some(other) => return self.err(esc_pos, format!("invalid escape \\{other} in string")),
                    None => return self.err(start, "unterminated string"),
                }
            } else {
                out.push(c);
            }
        }
    }

    /// An attribute name after its `.`: quoted, or a run of attribute runes.
    fn attr_name(&mut self, start: Pos) -> Result<String, LexError> {
        if self.eat('"') {
            let name = self.string('"', start)?;
            if name.is_empty() {
                return self.err(start, "empty attribute name");
            }
            return Ok(name);
        }
        let begin = self.offset();
        while self.peek().is_some_and(is_attribute_rune) {
            self.bump();
        }
        let end = self.offset();
        if begin == end {
            return self.err(start, "expected an attribute name after '.'");
        }
        Ok(self.src[begin..end].to_string())
    }

    fn number(&mut self, start: Pos) -> Result<Tok, LexError> {
        let begin = self.offset();
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.bump();
        }
        let mut is_float = false;
        if self.peek() == Some('.') && self.peek2().is_some_and(|c| c.is_ascii_digit()) {
            is_float = true;
            self.bump();
            while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                self.bump();
            }
        }
        if matches!(self.peek(), Some('e' | 'E'))
            && self.peek2().is_some_and(|c| c.is_ascii_digit() || c == '-' || c == '+')
        {
            is_float = true;
            self.bump();
            if matches!(self.peek(), Some('-' | '+')) {
                self.bump();
            }
            while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                self.bump();
            }
        }
        let end = self.offset();
        let text = &self.src[begin..end];
        if self.peek().is_some_and(|c| c.is_alphabetic() || c == 'µ') {
            return self.duration(text, start);
        }
        if is_float {
            text.parse()
                .map(Tok::Float)
                .or_else(|_| self.err(start, format!("invalid number {text}")))
        } else {
            text.parse()
                .map(Tok::Int)
                .or_else(|_| self.err(start, format!("integer {text} out of range")))
        }
    }

    /// A duration whose first number is `first`; more `<number><unit>` parts may follow.
    fn duration(&mut self, first: &str, start: Pos) -> Result<Tok, LexError> {
        let mut total: f64 = 0.0;
        let mut number = first.to_string();
        loop {
            let begin = self.offset();
            while self.peek().is_some_and(char::is_alphabetic) {
                self.bump();
            }
            let end = self.offset();
            let unit = &self.src[begin..end];
            let scale: f64 = match unit {
                "ns" => 1.0,
                "us" | "µs" => 1e3,
                "ms" => 1e6,
                "s" => 1e9,
                "m" => 60e9,
                "h" => 3600e9,
                other => {
                    return self.err(
                        start,
                        format!("unknown duration unit {other:?}: use ns, us, ms, s, m or h"),
                    );
                }
            };
            let value: f64 = number
                .parse()
                .or_else(|_| self.err(start, format!("invalid duration {number}{unit}")))?;
            total += value * scale;
            if !self.peek().is_some_and(|c| c.is_ascii_digit()) {
                break;
            }
            let begin = self.offset();
            while self.peek().is_some_and(|c| c.is_ascii_digit() || c == '.') {
                self.bump();
            }
            let end = self.offset();
            number = self.src[begin..end].to_string();
        }
        if !total.is_finite() || total > i64::MAX as f64 {
            return self.err(start, "duration out of range");
        }
        Ok(Tok::Duration(total.round() as i64))
    }

    fn next(&mut self) -> Result<Token, LexError> {
        while self.peek().is_some_and(char::is_whitespace) {
            self.bump();
        }
        let pos = self.pos();
        let Some(c) = self.peek() else {
            return Ok(Token { tok: Tok::Eof, pos });
        };
        let tok = match c {
            '{' | '}' | '(' | ')' | ',' | '+' | '*' | '/' | '%' | '^' | '-' => {
                self.bump();
                match c {
                    '{' => Tok::LBrace,
                    '}' => Tok::RBrace,
                    '(' => Tok::LParen,
                    ')' => Tok::RParen,
                    ',' => Tok::Comma,
                    '+' => Tok::Plus,
                    '*' => Tok::Star,
                    '/' => Tok::Slash,
                    '%' => Tok::Percent,
                    '^' => Tok::Caret,
                    _ => Tok::Minus,
                }
            }
            '|' => {
                self.bump();
                if self.eat('|') { Tok::Or } else { Tok::Pipe }
            }
            '&' => {
                self.bump();
                if self.eat('&') {
                    Tok::And
                } else if self.eat('>') {
                    if self.eat('>') { Tok::UnionDesc } else { Tok::UnionChild }
                } else if self.eat('<') {
                    if self.eat('<') { Tok::UnionAnc } else { Tok::UnionParent }
                } else if self.eat('~') {
                    Tok::UnionSibling
                } else {
                    return self.err(pos, "expected '&&', '&>', '&>>', '&<', '&<<' or '&~' after '&'");
                }
            }
            '=' => {
                self.bump();
                if self.eat('~') {
                    Tok::Re
                } else if self.eat('=') {
                    Tok::EqEq
                } else {
                    Tok::Eq
                }
            }
            '!' => {
                self.bump();
                if self.eat('=') {
                    Tok::Neq
                } else if self.eat('~') {
                    Tok::NotTilde
                } else if self.eat('>') {
                    if self.eat('>') { Tok::NotDesc } else { Tok::NotChild }
                } else if self.eat('<') {
                    if self.eat('<') { Tok::NotAnc } else { Tok::NotParent }
                } else {
                    Tok::Not
                }
            }
            '>' => {
                self.bump();
                if self.eat('=') {
                    Tok::Gte
                } else if self.eat('>') {
                    Tok::Desc
                } else {
                    Tok::Gt
                }
            }
            '<' => {
                self.bump();
                if self.eat('=') {
                    Tok::Lte
                } else if self.eat('<') {
                    Tok::Anc
                } else {
                    Tok::Lt
                }
            }
            '~' => {
                self.bump();
                Tok::Tilde
            }
            '"' | '`' => {
                self.bump();
                Tok::Str(self.string(c, pos)?)
            }
            // `.5` is a number, as Tempo's scanner reads it (`quantile_over_time(duration, .99)`).
            '.' if self.peek2().is_some_and(|c| c.is_ascii_digit()) => self.number(pos)?,
            '.' => {
                self.bump();
                Tok::Attr {
                    parent: false,
                    scope: AttrScope::Unscoped,
                    name: self.attr_name(pos)?,
                }
            }
            c if c.is_ascii_digit() => self.number(pos)?,
            c if c.is_alphabetic() || c == '_' => self.word_token(pos)?,
            other => return self.err(pos, format!("unexpected character {other:?}")),
        };
        Ok(Token { tok, pos })
    }

    /// A word: an identifier, a scoped intrinsic (`span:id`) or a scoped attribute (`span.a`,
    /// `parent.resource.a`).
    fn word_token(&mut self, pos: Pos) -> Result<Tok, LexError> {
        let word = self.word();
        if self.peek() == Some(':') && matches!(word.as_str(), "span" | "trace" | "event" | "link" | "instrumentation")
        {
            self.bump();
            let name = self.word();
            if name.is_empty() {
                return self.err(pos, format!("expected an intrinsic name after '{word}:'"));
            }
            return Ok(Tok::ScopedIntrinsic { scope: word, name });
        }
        if self.peek() == Some('.') {
            if word == "parent" {
                self.bump();
                let inner = self.pos();
                let scope_word = self.word();
                if scope_word.is_empty() {
                    return Ok(Tok::Attr {
                        parent: true,
                        scope: AttrScope::Unscoped,
                        name: self.attr_name(inner)?,
                    });
                }
                if self.peek() == Some('.')
                    && let Some(scope) = AttrScope::from_word(&scope_word)
                {
                    self.bump();
                    return Ok(Tok::Attr {
                        parent: true,
                        scope,
                        name: self.attr_name(inner)?,
                    });
                }
                // `parent.name...`: an unscoped attribute of the parent whose name starts here.
                let mut name = scope_word;
                while self.peek().is_some_and(is_attribute_rune) {
                    name.push(self.bump().unwrap_or_default());
                }
                return Ok(Tok::Attr {
                    parent: true,
                    scope: AttrScope::Unscoped,
                    name,
                });
            }
            if let Some(scope) = AttrScope::from_word(&word) {
                self.bump();
                return Ok(Tok::Attr {
                    parent: false,
                    scope,
                    name: self.attr_name(pos)?,
                });
            }
        }
        Ok(Tok::Ident(word))
    }
}

/// Splits `src` into tokens, ending with [`Tok::Eof`].
pub fn lex(src: &str) -> Result<Vec<Token>, LexError> {
    let mut lexer = Lexer {
        chars: src.char_indices().peekable(),
        src,
        line: 1,
        col: 1,
    };
    let mut out = Vec::new();
    loop {
        let token = lexer.next()?;
        let done = token.tok == Tok::Eof;
        out.push(token);
        if done {
            return Ok(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(src: &str) -> Vec<Tok> {
        lex(src).unwrap().into_iter().map(|t| t.tok).collect()
    }

    fn attr(scope: AttrScope, name: &str) -> Tok {
        Tok::Attr {
            parent: false,
            scope,
            name: name.into(),
        }
    }

    #[test]
    fn filters_and_operators() {
        assert_eq!(
            toks(r#"{ .http.status_code >= 500 && resource.service.name =~ "api" }"#),
            vec![
                Tok::LBrace,
                attr(AttrScope::Unscoped, "http.status_code"),
                Tok::Gte,
                Tok::Int(500),
                Tok::And,
                attr(AttrScope::Resource, "service.name"),
                Tok::Re,
                Tok::Str("api".into()),
                Tok::RBrace,
                Tok::Eof
            ]
        );
        assert_eq!(
            toks("{} >> {} !>> {} &~ {} !~ {}"),
            vec![
                Tok::LBrace,
                Tok::RBrace,
                Tok::Desc,
                Tok::LBrace,
                Tok::RBrace,
                Tok::NotDesc,
                Tok::LBrace,
                Tok::RBrace,
                Tok::UnionSibling,
                Tok::LBrace,
                Tok::RBrace,
                Tok::NotTilde,
                Tok::LBrace,
                Tok::RBrace,
                Tok::Eof
            ]
        );
    }

    #[test]
    fn a_leading_dot_before_a_digit_is_a_number() {
        assert_eq!(
            toks("quantile_over_time(duration, .5, 0.9) .a5"),
            vec![
                Tok::Ident("quantile_over_time".into()),
                Tok::LParen,
                Tok::Ident("duration".into()),
                Tok::Comma,
                Tok::Float(0.5),
                Tok::Comma,
                Tok::Float(0.9),
                Tok::RParen,
                attr(AttrScope::Unscoped, "a5"),
                Tok::Eof
            ]
        );
    }

    #[test]
    fn intrinsics_durations_and_quoted_names() {
        assert_eq!(
            toks("{ span:id = \"ab\" && trace:duration > 1h30m && duration < 1.5ms && 2us > 3µs }")[..8],
            [
                Tok::LBrace,
                Tok::ScopedIntrinsic {
                    scope: "span".into(),
                    name: "id".into()
                },
                Tok::Eq,
                Tok::Str("ab".into()),
                Tok::And,
                Tok::ScopedIntrinsic {
                    scope: "trace".into(),
                    name: "duration".into()
                },
                Tok::Gt,
                Tok::Duration(5_400_000_000_000),
            ]
        );
        let t = toks("{ duration < 1.5ms && 2us > 3µs }");
        assert_eq!(t[3], Tok::Duration(1_500_000));
        assert_eq!(t[5], Tok::Duration(2_000));
        assert_eq!(t[7], Tok::Duration(3_000));
        assert_eq!(
            toks(r#"{ ."foo\" = \"bar" = "v" }"#)[1],
            attr(AttrScope::Unscoped, "foo\" = \"bar")
        );
        assert_eq!(toks(r#"{ span."foo bar" }"#)[1], attr(AttrScope::Span, "foo bar"));
        assert_eq!(
            toks("{ parent.resource.a = 1 }")[1],
            Tok::Attr {
                parent: true,
                scope: AttrScope::Resource,
                name: "a".into()
            }
        );
        assert_eq!(
            toks("{ parent.a = 1 }")[1],
            Tok::Attr {
                parent: true,
                scope: AttrScope::Unscoped,
                name: "a".into()
            }
        );
    }

    #[test]
    fn errors_have_positions() {
        let e = lex("{ .a = \"open }").unwrap_err();
        assert_eq!(e.to_string(), "line 1, col 8: unterminated string");
        let e = lex("{\n  .a = 3 & 4 }").unwrap_err();
        assert_eq!(e.pos, Pos { line: 2, col: 10 });
        assert!(lex("{ . }").unwrap_err().message.contains("attribute name"));
        assert!(
            lex("{ .a = 99999999999999999999 }")
                .unwrap_err()
                .message
                .contains("out of range")
        );
        assert!(
            lex("{ duration > 3d }")
                .unwrap_err()
                .message
                .contains("unknown duration unit")
        );
    }

    #[test]
    fn never_panics_on_any_prefix_of_the_examples() {
        let queries = [
            r#"{ .a = "b" } | count() > 3 | by(resource.service.name) | select(span:id)"#,
            r#"{ ."a\\b" = "v" } &>> { span:status = error } | avg(duration) > 1.5s"#,
            "{ .\"foo\tbar\" = `raw\\n` } | rate() by (span.x) with(sample=0.1)",
        ];
        for q in queries {
            for (i, _) in q.char_indices() {
                let _ = lex(&q[..i]);
            }
            assert!(lex(q).is_ok(), "{q}");
        }
    }
}
