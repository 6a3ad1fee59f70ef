//! The TraceQL parser: tokens into an [`ast::Query`], with `line L, col C` in every error.
//!
//! Parsing runs in two steps. A precedence-climbing parser reads the text into a loose tree
//! of terms (spanset filters, calls, numbers, parenthesised pipelines) joined by operators;
//! then each node is classified (spanset, scalar, wrapped scalar pipeline, metrics) and an
//! operator that joins the wrong kinds is an error at that operator. The shapes accepted are
//! Tempo's grammar, plus what Tempo parses but refuses as unsupported (arithmetic between
//! aggregates, `parent.` attributes), which tracehouse runs.

use crate::ast::*;
use crate::lexer::{Pos, Tok, Token, lex};

/// A parse error and where it is; lexing errors are parse errors too.
pub use crate::lexer::LexError as ParseError;

type Result<T> = std::result::Result<T, ParseError>;

fn err<T>(pos: Pos, message: impl Into<String>) -> Result<T> {
    Err(ParseError {
        pos,
        message: message.into(),
    })
}

/// Longest query text accepted, in bytes.
pub const MAX_QUERY_BYTES: usize = 64 * 1024;
/// Deepest nesting of parentheses, braces and operators accepted.
pub const MAX_DEPTH: usize = 64;
/// Most operators (comparison, arithmetic, logical, spanset and `|`) in one query. Chains of
/// operators build trees as deep as they are long, so this bounds the AST's depth together with
/// [`MAX_DEPTH`], and with it every recursion over the query.
pub const MAX_OPERATORS: usize = 128;

/// `true` for a token that joins or negates operands.
fn is_operator(tok: &Tok) -> bool {
    !matches!(
        tok,
        Tok::LBrace
            | Tok::RBrace
            | Tok::LParen
            | Tok::RParen
            | Tok::Comma
            | Tok::Str(_)
            | Tok::Int(_)
            | Tok::Float(_)
            | Tok::Duration(_)
            | Tok::Ident(_)
            | Tok::ScopedIntrinsic { .. }
            | Tok::Attr { .. }
            | Tok::Eof
    )
}

/// Refuses a query with more than [`MAX_OPERATORS`] operators, at the first one too many.
fn check_operator_count(tokens: &[Token]) -> Result<()> {
    match tokens.iter().filter(|t| is_operator(&t.tok)).nth(MAX_OPERATORS) {
        Some(t) => err(
            t.pos,
            format!("query is too complex: more than {MAX_OPERATORS} operators"),
        ),
        None => Ok(()),
    }
}

/// Parses a TraceQL query.
pub fn parse(src: &str) -> Result<Query> {
    if src.len() > MAX_QUERY_BYTES {
        return err(
            Pos { line: 1, col: 1 },
            format!("query is {} bytes, more than the limit of {MAX_QUERY_BYTES}", src.len()),
        );
    }
    let tokens = lex(src)?;
    check_operator_count(&tokens)?;
    let mut p = Parser {
        tokens,
        at: 0,
        depth: 0,
        field_positions: Vec::new(),
    };
    let root_pos = p.pos();
    if p.peek() == &Tok::Eof {
        return err(root_pos, "empty query: expected a spanset filter such as { }");
    }
    let stages = p.pipeline()?;
    let hints = p.hints()?;
    if p.peek() != &Tok::Eof {
        return err(p.pos(), format!("unexpected {}", describe(p.peek())));
    }
    let root = match classify_pipeline(stages, root_pos)? {
        Node::Spanset(s) => Root::Spanset(s),
        Node::WrappedCmp(f) => Root::ScalarFilter(f),
        Node::Metrics(m) => Root::Metrics(m),
        Node::ScalarCmp(f) => Root::Spanset(SpansetExpr::Pipeline(vec![Stage::ScalarFilter(f)])),
        Node::Op(stage) => Root::Spanset(SpansetExpr::Pipeline(vec![stage])),
        Node::Scalar(_) | Node::WrappedScalar(_) => {
            return err(root_pos, "a scalar needs a comparison, as in count() > 1");
        }
        Node::Const(_) => return err(root_pos, "expected a spanset filter such as { }, not a constant"),
        Node::ScalarPipeline(_, agg, pos) => {
            return err(
                pos,
                format!("an aggregate in a pipeline needs a comparison, as in {agg} > 1"),
            );
        }
        Node::MetricsFn | Node::Second(..) => {
            return err(root_pos, "a metrics function must follow a spanset, as in { } | rate()");
        }
    };
    Ok(Query {
        root,
        hints,
        field_positions: p.field_positions,
    })
}

fn describe(tok: &Tok) -> String {
    match tok {
        Tok::Eof => "end of query".into(),
        Tok::Str(s) => format!("string {s:?}"),
        Tok::Int(i) => format!("number {i}"),
        Tok::Float(x) => format!("number {x}"),
        Tok::Duration(ns) => format!("duration {}", format_duration(*ns)),
        Tok::Ident(w) => format!("'{w}'"),
        Tok::ScopedIntrinsic { scope, name } => format!("'{scope}:{name}'"),
        Tok::Attr { .. } => "attribute".into(),
        other => format!("'{}'", symbol(other)),
    }
}

fn symbol(tok: &Tok) -> &'static str {
    match tok {
        Tok::LBrace => "{",
        Tok::RBrace => "}",
        Tok::LParen => "(",
        Tok::RParen => ")",
        Tok::Comma => ",",
        Tok::Pipe => "|",
        Tok::Eq => "=",
        Tok::Neq => "!=",
        Tok::Gt => ">",
        Tok::Gte => ">=",
        Tok::Lt => "<",
        Tok::Lte => "<=",
        Tok::Re => "=~",
        Tok::NotTilde => "!~",
        Tok::Tilde => "~",
        Tok::And => "&&",
        Tok::Or => "||",
        Tok::Not => "!",
        Tok::Plus => "+",
        Tok::Minus => "-",
        Tok::Star => "*",
        Tok::Slash => "/",
        Tok::Percent => "%",
        Tok::Caret => "^",
        Tok::Desc => ">>",
        Tok::Anc => "<<",
        Tok::NotChild => "!>",
        Tok::NotDesc => "!>>",
        Tok::NotParent => "!<",
        Tok::NotAnc => "!<<",
        Tok::UnionChild => "&>",
        Tok::UnionDesc => "&>>",
        Tok::UnionParent => "&<",
        Tok::UnionAnc => "&<<",
        Tok::UnionSibling => "&~",
        Tok::EqEq => "==",
        _ => "token",
    }
}

/// An operator between terms outside braces.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Spanset(SpansetOp),
    Cmp(CmpOp),
    Arith(ArithOp),
}

impl Op {
    /// `&&`/`||` loosest, then comparisons and structure, then `+ -`, `* / %`, `^`.
    fn precedence(self) -> u8 {
        match self {
            Self::Spanset(SpansetOp::And | SpansetOp::Union) => 1,
            Self::Spanset(_) | Self::Cmp(_) => 2,
            Self::Arith(op) => match op {
                ArithOp::Add | ArithOp::Sub => 3,
                ArithOp::Mul | ArithOp::Div | ArithOp::Mod => 5,
                ArithOp::Pow => 6,
            },
        }
    }

    fn from_tok(tok: &Tok) -> Option<Self> {
        Some(match tok {
            Tok::And => Self::Spanset(SpansetOp::And),
            Tok::Or => Self::Spanset(SpansetOp::Union),
            Tok::Gt => Self::Cmp(CmpOp::Gt),
            Tok::Lt => Self::Cmp(CmpOp::Lt),
            Tok::Gte => Self::Cmp(CmpOp::Gte),
            Tok::Lte => Self::Cmp(CmpOp::Lte),
            Tok::Eq => Self::Cmp(CmpOp::Eq),
            Tok::Neq => Self::Cmp(CmpOp::Neq),
            Tok::Desc => Self::Spanset(SpansetOp::Descendant),
            Tok::Anc => Self::Spanset(SpansetOp::Ancestor),
            Tok::Tilde => Self::Spanset(SpansetOp::Sibling),
            Tok::NotTilde => Self::Spanset(SpansetOp::NotSibling),
            Tok::NotChild => Self::Spanset(SpansetOp::NotChild),
            Tok::NotDesc => Self::Spanset(SpansetOp::NotDescendant),
            Tok::NotParent => Self::Spanset(SpansetOp::NotParent),
            Tok::NotAnc => Self::Spanset(SpansetOp::NotAncestor),
            Tok::UnionChild => Self::Spanset(SpansetOp::UnionChild),
            Tok::UnionDesc => Self::Spanset(SpansetOp::UnionDescendant),
            Tok::UnionParent => Self::Spanset(SpansetOp::UnionParent),
            Tok::UnionAnc => Self::Spanset(SpansetOp::UnionAncestor),
            Tok::UnionSibling => Self::Spanset(SpansetOp::UnionSibling),
            Tok::Plus => Self::Arith(ArithOp::Add),
            Tok::Minus => Self::Arith(ArithOp::Sub),
            Tok::Star => Self::Arith(ArithOp::Mul),
            Tok::Slash => Self::Arith(ArithOp::Div),
            Tok::Percent => Self::Arith(ArithOp::Mod),
            Tok::Caret => Self::Arith(ArithOp::Pow),
            _ => return None,
        })
    }

    fn symbol(self) -> &'static str {
        match self {
            Self::Spanset(op) => op.symbol(),
            Self::Cmp(op) => op.symbol(),
            Self::Arith(op) => op.symbol(),
        }
    }
}

/// A call outside braces.
#[derive(Debug, Clone)]
enum Call {
    Aggregate(Aggregate),
    Stage(Stage),
    Metrics(MetricsFn),
    TopK(i64),
    BottomK(i64),
}

/// The loose tree of the first step.
#[derive(Debug, Clone)]
enum Raw {
    Filter(FieldExpr),
    Paren(Vec<(Raw, Pos)>),
    Call(Call),
    Number(Static),
    Bin(Op, Box<(Raw, Pos)>, Box<(Raw, Pos)>),
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
    depth: usize,
    field_positions: Vec<Pos>,
}

impl Parser {
    fn peek(&self) -> &Tok {
        &self.tokens[self.at].tok
    }

    fn peek_at(&self, ahead: usize) -> &Tok {
        let i = (self.at + ahead).min(self.tokens.len() - 1);
        &self.tokens[i].tok
    }

    fn pos(&self) -> Pos {
        self.tokens[self.at].pos
    }

    fn bump(&mut self) -> Tok {
        let tok = self.tokens[self.at].tok.clone();
        if self.at + 1 < self.tokens.len() {
            self.at += 1;
        }
        tok
    }

    fn eat(&mut self, tok: &Tok) -> bool {
        if self.peek() == tok {
            self.bump();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, tok: &Tok, context: &str) -> Result<()> {
        if self.eat(tok) {
            return Ok(());
        }
        err(
            self.pos(),
            format!("expected '{}' {context}, found {}", symbol(tok), describe(self.peek())),
        )
    }

    fn enter(&mut self) -> Result<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return err(self.pos(), format!("query nests deeper than {MAX_DEPTH} levels"));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth -= 1;
    }

    // ----- stage level ------------------------------------------------------------------

    /// `stage ('|' stage)*`
    fn pipeline(&mut self) -> Result<Vec<(Raw, Pos)>> {
        let pos = self.pos();
        let mut stages = vec![(self.expr(0)?, pos)];
        while self.eat(&Tok::Pipe) {
            let pos = self.pos();
            stages.push((self.expr(0)?, pos));
        }
        Ok(stages)
    }

    /// A binary expression of terms whose operators bind at least as tightly as `min`.
    fn expr(&mut self, min: u8) -> Result<Raw> {
        self.enter()?;
        let start = self.pos();
        let mut lhs = self.term()?;
        let mut lhs_pos = start;
        loop {
            let tok = self.peek().clone();
            if tok == Tok::EqEq {
                return err(self.pos(), "'==' is not an operator; use '='");
            }
            let Some(op) = Op::from_tok(&tok) else { break };
            let p = op.precedence();
            if p < min {
                break;
            }
            let op_pos = self.pos();
            self.bump();
            let next_min = if op == Op::Arith(ArithOp::Pow) { p } else { p + 1 };
            let rhs_pos = self.pos();
            let rhs = self.expr(next_min)?;
            lhs = Raw::Bin(op, Box::new((lhs, lhs_pos)), Box::new((rhs, rhs_pos)));
            lhs_pos = op_pos;
        }
        self.leave();
        Ok(lhs)
    }

    fn term(&mut self) -> Result<Raw> {
        let pos = self.pos();
        match self.peek().clone() {
            Tok::LBrace => {
                self.bump();
                if self.peek() == &Tok::RBrace {
                    self.field_positions.push(self.pos());
                    self.bump();
                    return Ok(Raw::Filter(FieldExpr::Static(Static::Bool(true))));
                }
                let e = self.field_root()?;
                self.expect(&Tok::RBrace, "to close the spanset filter")?;
                Ok(Raw::Filter(e))
            }
            Tok::LParen => {
                self.bump();
                self.enter()?;
                let inner = self.pipeline()?;
                self.leave();
                self.expect(&Tok::RParen, "to close the parenthesis")?;
                Ok(Raw::Paren(inner))
            }
            Tok::Int(i) => {
                self.bump();
                Ok(Raw::Number(Static::Int(i)))
            }
            Tok::Float(x) => {
                self.bump();
                Ok(Raw::Number(Static::Float(x)))
            }
            Tok::Duration(ns) => {
                self.bump();
                Ok(Raw::Number(Static::Duration(ns)))
            }
            Tok::Minus => {
                self.bump();
                match self.bump() {
                    Tok::Int(i) => Ok(Raw::Number(Static::Int(-i))),
                    Tok::Float(x) => Ok(Raw::Number(Static::Float(-x))),
                    Tok::Duration(ns) => Ok(Raw::Number(Static::Duration(-ns))),
                    _ => err(pos, "'-' here must start a number"),
                }
            }
            Tok::Ident(word) => {
                if self.peek_at(1) != &Tok::LParen {
                    return err(
                        pos,
                        format!("unexpected '{word}': expected a spanset filter such as {{ }} or a function call"),
                    );
                }
                self.bump();
                self.call(&word, pos).map(Raw::Call)
            }
            Tok::Str(_) | Tok::Attr { .. } | Tok::ScopedIntrinsic { .. } => err(
                pos,
                format!(
                    "unexpected {}: conditions belong inside a spanset filter {{ }}",
                    describe(self.peek())
                ),
            ),
            other => err(pos, format!("unexpected {}", describe(&other))),
        }
    }

    /// A call whose name has been read; the next token is `(`.
    fn call(&mut self, name: &str, pos: Pos) -> Result<Call> {
        self.expect(&Tok::LParen, "after the function name")?;
        let agg = match name {
            "count" => Some(AggFunc::Count),
            "avg" => Some(AggFunc::Avg),
            "min" => Some(AggFunc::Min),
            "max" => Some(AggFunc::Max),
            "sum" => Some(AggFunc::Sum),
            _ => None,
        };
        if let Some(func) = agg {
            if func == AggFunc::Count {
                self.expect(&Tok::RParen, "after 'count(': count takes no argument")?;
                return Ok(Call::Aggregate(Aggregate { func, arg: None }));
            }
            if self.peek() == &Tok::RParen {
                return err(
                    self.pos(),
                    format!("{name}() needs an argument, as in {name}(duration)"),
                );
            }
            let arg = self.field_root()?;
            self.expect(&Tok::RParen, &format!("to close {name}("))?;
            return Ok(Call::Aggregate(Aggregate { func, arg: Some(arg) }));
        }
        match name {
            "by" => {
                if self.peek() == &Tok::RParen {
                    return err(self.pos(), "by() needs an expression, as in by(resource.service.name)");
                }
                let e = self.field_root()?;
                self.expect(&Tok::RParen, "to close by(")?;
                Ok(Call::Stage(Stage::By(e)))
            }
            "coalesce" => {
                self.expect(&Tok::RParen, "after 'coalesce(': coalesce takes no argument")?;
                Ok(Call::Stage(Stage::Coalesce))
            }
            "select" => {
                if self.peek() == &Tok::RParen {
                    return err(self.pos(), "select() needs at least one attribute or intrinsic");
                }
                let mut fields = Vec::new();
                loop {
                    let fpos = self.pos();
                    let e = self.field_root()?;
                    if !matches!(e, FieldExpr::Attribute(_) | FieldExpr::Intrinsic(_)) {
                        return err(fpos, "select() takes attributes and intrinsics only");
                    }
                    fields.push(e);
                    if !self.eat(&Tok::Comma) {
                        break;
                    }
                }
                self.expect(&Tok::RParen, "to close select(")?;
                Ok(Call::Stage(Stage::Select(fields)))
            }
            "topk" | "bottomk" => {
                let k = match self.bump() {
                    Tok::Int(k) => k,
                    _ => return err(self.pos(), format!("{name}() takes a non-negative whole number")),
                };
                self.expect(&Tok::RParen, &format!("to close {name}("))?;
                Ok(if name == "topk" {
                    Call::TopK(k)
                } else {
                    Call::BottomK(k)
                })
            }
            _ => {
                let Some(func) = MetricsFunc::ALL.into_iter().find(|f| f.name() == name) else {
                    return err(
                        pos,
                        format!(
                            "unknown function '{name}': expected count, avg, min, max, sum, by, coalesce, select, \
                             a metrics function or topk/bottomk"
                        ),
                    );
                };
                let mut selection = None;
                let mut args = Vec::new();
                if func == MetricsFunc::Compare {
                    let spos = self.pos();
                    match self.term()? {
                        Raw::Filter(e) => selection = Some(Box::new(SpansetExpr::Filter(e))),
                        _ => return err(spos, "compare() takes a spanset filter first"),
                    }
                    while self.eat(&Tok::Comma) {
                        args.push(self.field_root()?);
                    }
                } else if self.peek() != &Tok::RParen {
                    loop {
                        args.push(self.field_root()?);
                        if !self.eat(&Tok::Comma) {
                            break;
                        }
                    }
                }
                self.expect(&Tok::RParen, &format!("to close {name}("))?;
                check_metrics_args(func, &args, pos)?;
                let mut by = Vec::new();
                if self.peek() == &Tok::Ident("by".into()) {
                    self.bump();
                    self.expect(&Tok::LParen, "after 'by'")?;
                    loop {
                        by.push(self.field_root()?);
                        if !self.eat(&Tok::Comma) {
                            break;
                        }
                    }
                    self.expect(&Tok::RParen, "to close by(")?;
                }
                Ok(Call::Metrics(MetricsFn {
                    func,
                    args,
                    selection,
                    by,
                }))
            }
        }
    }

    /// `with(name = value, ...)` at the end of a query.
    fn hints(&mut self) -> Result<Vec<Hint>> {
        if self.peek() != &Tok::Ident("with".into()) {
            return Ok(Vec::new());
        }
        self.bump();
        self.expect(&Tok::LParen, "after 'with'")?;
        let mut hints = Vec::new();
        loop {
            let pos = self.pos();
            let Tok::Ident(name) = self.bump() else {
                return err(pos, "expected a hint name, as in with(sample=0.1)");
            };
            self.expect(&Tok::Eq, "after the hint name")?;
            let vpos = self.pos();
            let value = match self.bump() {
                Tok::Int(i) => Static::Int(i),
                Tok::Float(x) => Static::Float(x),
                Tok::Str(s) => Static::Str(s),
                Tok::Duration(d) => Static::Duration(d),
                Tok::Ident(w) if w == "true" => Static::Bool(true),
                Tok::Ident(w) if w == "false" => Static::Bool(false),
                _ => return err(vpos, "a hint value must be a number, string, duration or boolean"),
            };
            hints.push(Hint { name, value });
            if !self.eat(&Tok::Comma) {
                break;
            }
        }
        self.expect(&Tok::RParen, "to close with(")?;
        Ok(hints)
    }

    // ----- field expressions --------------------------------------------------------------

    /// A whole field expression (a filter body or a function argument), its start recorded.
    fn field_root(&mut self) -> Result<FieldExpr> {
        self.field_positions.push(self.pos());
        self.field_expr(0)
    }

    fn field_expr(&mut self, min: u8) -> Result<FieldExpr> {
        self.enter()?;
        let mut lhs = self.field_unary()?;
        loop {
            let op = match self.peek() {
                Tok::And => BinOp::And,
                Tok::Or => BinOp::Or,
                Tok::Eq => BinOp::Cmp(CmpOp::Eq),
                Tok::Neq => BinOp::Cmp(CmpOp::Neq),
                Tok::Lt => BinOp::Cmp(CmpOp::Lt),
                Tok::Lte => BinOp::Cmp(CmpOp::Lte),
                Tok::Gt => BinOp::Cmp(CmpOp::Gt),
                Tok::Gte => BinOp::Cmp(CmpOp::Gte),
                Tok::Re => BinOp::Regex,
                Tok::NotTilde => BinOp::NotRegex,
                Tok::Plus => BinOp::Arith(ArithOp::Add),
                Tok::Minus => BinOp::Arith(ArithOp::Sub),
                Tok::Star => BinOp::Arith(ArithOp::Mul),
                Tok::Slash => BinOp::Arith(ArithOp::Div),
                Tok::Percent => BinOp::Arith(ArithOp::Mod),
                Tok::Caret => BinOp::Arith(ArithOp::Pow),
                Tok::EqEq => return err(self.pos(), "'==' is not an operator; use '='"),
                _ => break,
            };
            let p = op.precedence();
            if p < min {
                break;
            }
            self.bump();
            let rhs = self.field_expr(if op.right_assoc() { p } else { p + 1 })?;
            lhs = FieldExpr::Binary(op, Box::new(lhs), Box::new(rhs));
        }
        self.leave();
        Ok(lhs)
    }

    fn field_unary(&mut self) -> Result<FieldExpr> {
        let op = match self.peek() {
            Tok::Not => UnaryOp::Not,
            Tok::Minus => UnaryOp::Neg,
            _ => return self.field_primary(),
        };
        self.bump();
        self.enter()?;
        let operand = self.field_expr(UNARY_OPERAND_PRECEDENCE)?;
        self.leave();
        Ok(FieldExpr::Unary(op, Box::new(operand)))
    }

    fn field_primary(&mut self) -> Result<FieldExpr> {
        let pos = self.pos();
        let tok = self.bump();
        Ok(match tok {
            Tok::LParen => {
                let e = self.field_expr(0)?;
                self.expect(&Tok::RParen, "to close the parenthesis")?;
                e
            }
            Tok::Str(s) => FieldExpr::Static(Static::Str(s)),
            Tok::Int(i) => FieldExpr::Static(Static::Int(i)),
            Tok::Float(x) => FieldExpr::Static(Static::Float(x)),
            Tok::Duration(ns) => FieldExpr::Static(Static::Duration(ns)),
            Tok::Attr { parent, scope, name } => FieldExpr::Attribute(Attribute { scope, parent, name }),
            Tok::ScopedIntrinsic { scope, name } => match Intrinsic::from_scoped(&scope, &name) {
                Some(i) => FieldExpr::Intrinsic(i),
                None => return err(pos, format!("unknown intrinsic '{scope}:{name}'")),
            },
            Tok::Ident(word) => match static_word(&word) {
                Some(s) => FieldExpr::Static(s),
                None => match Intrinsic::from_word(&word) {
                    Some(i) => FieldExpr::Intrinsic(i),
                    None => {
                        return err(
                            pos,
                            format!(
                                "unknown identifier '{word}': attributes start with '.', 'span.', \
                                 'resource.', 'event.', 'link.', 'instrumentation.' or 'parent.'"
                            ),
                        );
                    }
                },
            },
            other => {
                return err(
                    pos,
                    format!("expected a value, attribute or intrinsic, found {}", describe(&other)),
                );
            }
        })
    }
}

fn static_word(word: &str) -> Option<Static> {
    Some(match word {
        "true" => Static::Bool(true),
        "false" => Static::Bool(false),
        "nil" => Static::Nil,
        "ok" => Static::Status(Status::Ok),
        "error" => Static::Status(Status::Error),
        "unset" => Static::Status(Status::Unset),
        "unspecified" => Static::Kind(Kind::Unspecified),
        "internal" => Static::Kind(Kind::Internal),
        "server" => Static::Kind(Kind::Server),
        "client" => Static::Kind(Kind::Client),
        "producer" => Static::Kind(Kind::Producer),
        "consumer" => Static::Kind(Kind::Consumer),
        _ => return None,
    })
}

fn check_metrics_args(func: MetricsFunc, args: &[FieldExpr], pos: Pos) -> Result<()> {
    let (min, max) = match func {
        MetricsFunc::Rate | MetricsFunc::CountOverTime => (0, 0),
        MetricsFunc::MinOverTime
        | MetricsFunc::MaxOverTime
        | MetricsFunc::AvgOverTime
        | MetricsFunc::SumOverTime
        | MetricsFunc::HistogramOverTime => (1, 1),
        MetricsFunc::QuantileOverTime => (2, usize::MAX),
        MetricsFunc::Compare => (0, 3),
    };
    if args.len() < min || args.len() > max {
        return err(
            pos,
            format!(
                "{}() takes {}",
                func.name(),
                match (min, max) {
                    (0, 0) => "no arguments".to_string(),
                    (1, 1) => "one field".to_string(),
                    (2, _) => "a field and at least one quantile".to_string(),
                    _ => "a spanset filter and up to three numbers".to_string(),
                }
            ),
        );
    }
    if func == MetricsFunc::QuantileOverTime {
        for q in &args[1..] {
            if !matches!(q, FieldExpr::Static(Static::Int(_) | Static::Float(_))) {
                return err(pos, "quantiles must be numbers between 0 and 1");
            }
        }
    }
    Ok(())
}

// ----- classification ---------------------------------------------------------------------

/// What a loose node turned out to be.
#[derive(Debug, Clone)]
enum Node {
    Spanset(SpansetExpr),
    /// Aggregates and constants inside a pipeline (contains an aggregate).
    Scalar(ScalarExpr),
    /// A constant expression (no aggregate, no pipeline).
    Const(ScalarExpr),
    /// `lhs op rhs` inside a pipeline.
    ScalarCmp(ScalarFilter),
    /// A pipeline ending in an aggregate, before it is wrapped.
    ScalarPipeline(SpansetExpr, Aggregate, Pos),
    /// Arithmetic over wrapped scalar pipelines.
    WrappedScalar(ScalarExpr),
    WrappedCmp(ScalarFilter),
    /// `by`, `coalesce`, `select`.
    Op(Stage),
    /// A metrics function outside a pipeline stage: always an error, reported by kind.
    MetricsFn,
    Metrics(MetricsExpr),
    /// `topk(k)` / `bottomk(k)`, optionally compared.
    Second(Vec<MetricsStage>),
}

fn kind_name(node: &Node) -> &'static str {
    match node {
        Node::Spanset(_) => "a spanset",
        Node::Scalar(_) => "an aggregate",
        Node::Const(_) => "a constant",
        Node::ScalarCmp(_) | Node::WrappedCmp(_) => "a scalar filter",
        Node::ScalarPipeline(..) => "a scalar pipeline",
        Node::WrappedScalar(_) => "a scalar pipeline",
        Node::Op(Stage::By(_)) => "by()",
        Node::Op(Stage::Coalesce) => "coalesce()",
        Node::Op(_) => "select()",
        Node::MetricsFn | Node::Metrics(_) => "a metrics query",
        Node::Second(_) => "topk()/bottomk()",
    }
}

fn has_duration(e: &ScalarExpr) -> bool {
    match e {
        ScalarExpr::Static(Static::Duration(_)) => true,
        ScalarExpr::Binary(_, a, b) => has_duration(a) || has_duration(b),
        _ => false,
    }
}

/// Folds a constant metrics operand into a metrics expression.
fn const_to_metrics(e: ScalarExpr, pos: Pos) -> Result<MetricsExpr> {
    match e {
        ScalarExpr::Static(s @ (Static::Int(_) | Static::Float(_))) => Ok(MetricsExpr::Number(s)),
        ScalarExpr::Static(_) => err(pos, "metrics arithmetic takes plain numbers, not durations"),
        ScalarExpr::Binary(op, a, b) => Ok(MetricsExpr::Binary(
            op,
            Box::new(const_to_metrics(*a, pos)?),
            Box::new(const_to_metrics(*b, pos)?),
        )),
        _ => err(pos, "expected a number"),
    }
}

fn classify(raw: Raw, pos: Pos) -> Result<Node> {
    match raw {
        Raw::Filter(e) => Ok(Node::Spanset(SpansetExpr::Filter(e))),
        Raw::Number(s) => Ok(Node::Const(ScalarExpr::Static(s))),
        Raw::Call(Call::Aggregate(a)) => Ok(Node::Scalar(ScalarExpr::Aggregate(a))),
        Raw::Call(Call::Stage(s)) => Ok(Node::Op(s)),
        Raw::Call(Call::Metrics(_)) => Ok(Node::MetricsFn),
        Raw::Call(Call::TopK(k)) => Ok(Node::Second(vec![MetricsStage::TopK(k)])),
        Raw::Call(Call::BottomK(k)) => Ok(Node::Second(vec![MetricsStage::BottomK(k)])),
        Raw::Paren(stages) => match classify_pipeline(stages, pos)? {
            Node::ScalarPipeline(p, a, _) => Ok(Node::WrappedScalar(ScalarExpr::Wrapped(Box::new(p), a))),
            Node::ScalarCmp(f) => Ok(Node::Spanset(SpansetExpr::Pipeline(vec![Stage::ScalarFilter(f)]))),
            Node::Op(stage @ (Stage::By(_) | Stage::Select(_))) => {
                Ok(Node::Spanset(SpansetExpr::Pipeline(vec![stage])))
            }
            Node::MetricsFn => err(pos, "a metrics function must follow a spanset, as in { } | rate()"),
            other => Ok(other),
        },
        Raw::Bin(op, lhs, rhs) => {
            let (lraw, lpos) = *lhs;
            let (rraw, rpos) = *rhs;
            let l = classify(lraw, lpos)?;
            let r = classify(rraw, rpos)?;
            combine(op, l, r, pos, rpos)
        }
    }
}

fn combine(op: Op, l: Node, r: Node, pos: Pos, rpos: Pos) -> Result<Node> {
    let bad = |l: &Node, r: &Node| {
        err(
            pos,
            format!(
                "operator '{}' cannot join {} and {}",
                op.symbol(),
                kind_name(l),
                kind_name(r)
            ),
        )
    };
    match (op, l, r) {
        // Spanset operators; `>` and `<` between spansets are child and parent.
        (Op::Spanset(sop), Node::Spanset(a), Node::Spanset(b)) => {
            Ok(Node::Spanset(SpansetExpr::Op(sop, Box::new(a), Box::new(b))))
        }
        (Op::Cmp(c @ (CmpOp::Gt | CmpOp::Lt)), Node::Spanset(a), Node::Spanset(b)) => {
            let sop = if c == CmpOp::Gt {
                SpansetOp::Child
            } else {
                SpansetOp::Parent
            };
            Ok(Node::Spanset(SpansetExpr::Op(sop, Box::new(a), Box::new(b))))
        }
        // Scalars inside a pipeline.
        (Op::Arith(a), l @ (Node::Scalar(_) | Node::Const(_)), r @ (Node::Scalar(_) | Node::Const(_))) => {
            let any_agg = matches!(l, Node::Scalar(_)) || matches!(r, Node::Scalar(_));
            let (Node::Scalar(x) | Node::Const(x)) = l else {
                unreachable!()
            };
            let (Node::Scalar(y) | Node::Const(y)) = r else {
                unreachable!()
            };
            let e = ScalarExpr::Binary(a, Box::new(x), Box::new(y));
            Ok(if any_agg { Node::Scalar(e) } else { Node::Const(e) })
        }
        (Op::Cmp(c), Node::Scalar(x), r @ (Node::Scalar(_) | Node::Const(_))) => {
            let (Node::Scalar(y) | Node::Const(y)) = r else {
                unreachable!()
            };
            Ok(Node::ScalarCmp(ScalarFilter { op: c, lhs: x, rhs: y }))
        }
        (Op::Cmp(_), l @ Node::Const(_), r @ (Node::Scalar(_) | Node::Const(_))) => {
            let _ = r;
            err(
                pos,
                format!(
                    "a scalar filter needs an aggregate on its left, as in count() > 1; found {}",
                    kind_name(&l)
                ),
            )
        }
        // Wrapped scalar pipelines.
        (Op::Arith(a), Node::WrappedScalar(x), Node::WrappedScalar(y)) => {
            Ok(Node::WrappedScalar(ScalarExpr::Binary(a, Box::new(x), Box::new(y))))
        }
        (Op::Cmp(c), Node::WrappedScalar(x), Node::WrappedScalar(y)) => {
            Ok(Node::WrappedCmp(ScalarFilter { op: c, lhs: x, rhs: y }))
        }
        (Op::Cmp(c), Node::WrappedScalar(x), Node::Const(y)) => {
            if !matches!(y, ScalarExpr::Static(_)) {
                return err(
                    rpos,
                    "a scalar pipeline compares with a single number, not an expression",
                );
            }
            Ok(Node::WrappedCmp(ScalarFilter { op: c, lhs: x, rhs: y }))
        }
        (Op::Cmp(_), Node::Const(_), Node::WrappedScalar(_)) => {
            err(pos, "put the number on the right: ({ } | count()) > 2")
        }
        // Metrics.
        (Op::Arith(a), l @ (Node::Metrics(_) | Node::Const(_)), r @ (Node::Metrics(_) | Node::Const(_)))
            if matches!(l, Node::Metrics(_)) || matches!(r, Node::Metrics(_)) =>
        {
            if matches!(a, ArithOp::Mod | ArithOp::Pow) {
                return err(pos, format!("operator '{}' is not defined between metrics", a.symbol()));
            }
            let lm = match l {
                Node::Metrics(m) => m,
                Node::Const(c) => const_to_metrics(c, pos)?,
                _ => unreachable!(),
            };
            let rm = match r {
                Node::Metrics(m) => m,
                Node::Const(c) => const_to_metrics(c, rpos)?,
                _ => unreachable!(),
            };
            Ok(Node::Metrics(MetricsExpr::Binary(a, Box::new(lm), Box::new(rm))))
        }
        (Op::Cmp(c), Node::Metrics(m), Node::Const(v)) => Ok(Node::Metrics(MetricsExpr::Stage(
            Box::new(m),
            MetricsStage::Filter(c, metrics_threshold(v, rpos)?),
        ))),
        (Op::Cmp(c), Node::Second(mut stages), Node::Const(v)) => {
            stages.push(MetricsStage::Filter(c, metrics_threshold(v, rpos)?));
            Ok(Node::Second(stages))
        }
        (_, l, r) => bad(&l, &r),
    }
}

/// The constant a metrics result is compared with: a number (constant arithmetic folded) or
/// a single duration.
fn metrics_threshold(v: ScalarExpr, pos: Pos) -> Result<Static> {
    match v {
        ScalarExpr::Static(s) => Ok(s),
        e => {
            if has_duration(&e) {
                return err(
                    pos,
                    "metrics comparisons take a number or a single duration, not duration arithmetic",
                );
            }
            Ok(fold(&e).ok_or(ParseError {
                pos,
                message: "expected a number".into(),
            })?)
        }
    }
}

fn fold(e: &ScalarExpr) -> Option<Static> {
    match e {
        ScalarExpr::Static(s) => Some(s.clone()),
        ScalarExpr::Binary(op, a, b) => {
            let to_f = |s: Static| match s {
                Static::Int(i) => Some(i as f64),
                Static::Float(x) => Some(x),
                _ => None,
            };
            let (x, y) = (to_f(fold(a)?)?, to_f(fold(b)?)?);
            Some(Static::Float(match op {
                ArithOp::Add => x + y,
                ArithOp::Sub => x - y,
                ArithOp::Mul => x * y,
                ArithOp::Div => x / y,
                ArithOp::Mod => x % y,
                ArithOp::Pow => x.powf(y),
            }))
        }
        _ => None,
    }
}

/// Classifies the stages of one pipeline.
fn classify_pipeline(stages: Vec<(Raw, Pos)>, pos: Pos) -> Result<Node> {
    let count = stages.len();
    let mut iter = stages.into_iter();
    let (first_raw, first_pos) = iter.next().expect("a pipeline has a stage");
    let first = classify_stage(first_raw, first_pos)?;
    if count == 1 {
        return match first {
            StageNode::Node(n) => Ok(n),
            StageNode::MetricsFn(..) => err(
                first_pos,
                "a metrics function must follow a spanset, as in { } | rate()",
            ),
        };
    }
    let mut spanset_stages: Vec<Stage> = Vec::new();
    let push_first = |node: Node, spanset_stages: &mut Vec<Stage>| -> Result<()> {
        match node {
            Node::Spanset(s) => spanset_stages.push(Stage::Spanset(s)),
            Node::ScalarCmp(f) => spanset_stages.push(Stage::ScalarFilter(f)),
            Node::Op(Stage::Coalesce) => return err(first_pos, "a pipeline cannot start with coalesce()"),
            Node::Op(stage) => spanset_stages.push(stage),
            Node::Metrics(_) => unreachable!("handled by the caller"),
            other => return err(first_pos, format!("{} cannot start a pipeline", kind_name(&other))),
        }
        Ok(())
    };
    let mut metrics: Option<MetricsExpr> = None;
    match first {
        StageNode::Node(Node::Metrics(m)) => metrics = Some(m),
        StageNode::Node(n) => push_first(n, &mut spanset_stages)?,
        StageNode::MetricsFn(..) => {
            return err(
                first_pos,
                "a metrics function must follow a spanset, as in { } | rate()",
            );
        }
    }
    let mut rest: Vec<(Raw, Pos)> = iter.collect();
    let last_index = rest.len() - 1;
    for (i, (raw, spos)) in rest.drain(..).enumerate() {
        let node = classify_stage(raw, spos)?;
        if let Some(m) = metrics.take() {
            // After a metrics function only second stages follow.
            match node {
                StageNode::Node(Node::Second(stages)) => {
                    let mut m = m;
                    for s in stages {
                        m = MetricsExpr::Stage(Box::new(m), s);
                    }
                    metrics = Some(m);
                }
                StageNode::Node(other) => {
                    return err(
                        spos,
                        format!(
                            "expected topk() or bottomk() after a metrics query, found {}",
                            kind_name(&other)
                        ),
                    );
                }
                StageNode::MetricsFn(..) => return err(spos, "only one metrics function per pipeline"),
            }
            continue;
        }
        match node {
            StageNode::MetricsFn(f, filters) => {
                let source = pipeline_expr(std::mem::take(&mut spanset_stages));
                let mut m = MetricsExpr::Pipeline(Box::new(source), f);
                for s in filters {
                    m = MetricsExpr::Stage(Box::new(m), s);
                }
                metrics = Some(m);
            }
            StageNode::Node(Node::Spanset(s)) => spanset_stages.push(Stage::Spanset(s)),
            StageNode::Node(Node::ScalarCmp(f)) => spanset_stages.push(Stage::ScalarFilter(f)),
            StageNode::Node(Node::Op(stage)) => spanset_stages.push(stage),
            StageNode::Node(Node::Scalar(ScalarExpr::Aggregate(a))) if i == last_index => {
                return Ok(Node::ScalarPipeline(pipeline_expr(spanset_stages), a, spos));
            }
            StageNode::Node(Node::Scalar(_)) => {
                return err(spos, "an aggregate in a pipeline needs a comparison, as in count() > 1");
            }
            StageNode::Node(Node::Second(_)) => {
                return err(
                    spos,
                    "topk() and bottomk() follow a metrics function, as in { } | rate() | topk(5)",
                );
            }
            StageNode::Node(other) => {
                return err(spos, format!("{} cannot be a pipeline stage", kind_name(&other)));
            }
        }
    }
    if let Some(m) = metrics {
        return Ok(Node::Metrics(m));
    }
    let _ = pos;
    Ok(Node::Spanset(pipeline_expr(spanset_stages)))
}

/// A stage: a node, or a metrics function with the filters right after it (`rate() > 10`).
enum StageNode {
    Node(Node),
    MetricsFn(MetricsFn, Vec<MetricsStage>),
}

fn classify_stage(raw: Raw, pos: Pos) -> Result<StageNode> {
    match raw {
        Raw::Call(Call::Metrics(f)) => Ok(StageNode::MetricsFn(f, Vec::new())),
        Raw::Bin(Op::Cmp(c), lhs, rhs) if matches!(lhs.0, Raw::Call(Call::Metrics(_))) => {
            let (Raw::Call(Call::Metrics(f)), _) = *lhs else {
                unreachable!()
            };
            let (rraw, rpos) = *rhs;
            match classify(rraw, rpos)? {
                Node::Const(v) => Ok(StageNode::MetricsFn(
                    f,
                    vec![MetricsStage::Filter(c, metrics_threshold(v, rpos)?)],
                )),
                other => err(
                    rpos,
                    format!("a metrics function compares with a number, not {}", kind_name(&other)),
                ),
            }
        }
        other => {
            let node = classify(other, pos)?;
            if let Node::MetricsFn = node {
                return err(
                    pos,
                    "a metrics function cannot be combined with other operators outside parentheses",
                );
            }
            Ok(StageNode::Node(node))
        }
    }
}

/// Stages as one spanset expression: a lone spanset stage is that spanset.
fn pipeline_expr(mut stages: Vec<Stage>) -> SpansetExpr {
    if stages.len() == 1 && matches!(stages[0], Stage::Spanset(_)) {
        let Some(Stage::Spanset(s)) = stages.pop() else {
            unreachable!()
        };
        return s;
    }
    SpansetExpr::Pipeline(stages)
}
