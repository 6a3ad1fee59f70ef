//! The TraceQL abstract syntax tree and its `Display`, which prints a query that parses back to
//! the same tree.
//!
//! The tree is normalised while parsing: parentheses leave no node, `span:duration` and
//! `duration` are the same intrinsic, and a pipeline of one spanset stage is that spanset.

use std::fmt;

pub use crate::lexer::AttrScope;

/// A whole query: its expression and its `with(...)` hints.
#[derive(Debug, Clone)]
pub struct Query {
    pub root: Root,
    pub hints: Vec<Hint>,
    /// Where each field expression (filter body, function argument) starts, in source order;
    /// validation reports its errors there. Not part of equality.
    pub field_positions: Vec<crate::lexer::Pos>,
}

impl PartialEq for Query {
    fn eq(&self, other: &Self) -> bool {
        self.root == other.root && self.hints == other.hints
    }
}

/// A `with(name = value)` hint. Hints are accepted and carried; the metrics engine reads
/// `exemplars` and the sampling hints (`sample`, `span_sample`, `trace_sample`).
#[derive(Debug, Clone, PartialEq)]
pub struct Hint {
    pub name: String,
    pub value: Static,
}

/// What a query computes.
#[derive(Debug, Clone, PartialEq)]
pub enum Root {
    /// Spansets: a filter, an operation between spansets or a pipeline.
    Spanset(SpansetExpr),
    /// A comparison between wrapped scalar pipelines, as `({ .a } | count()) > ({ .b } | count())`.
    ScalarFilter(ScalarFilter),
    /// A metrics query (`{ } | rate() by (...)`), with second stages and arithmetic.
    Metrics(MetricsExpr),
}

/// An expression that yields spansets.
#[derive(Debug, Clone, PartialEq)]
pub enum SpansetExpr {
    /// `{ condition }`; `{ }` is `{ true }`.
    Filter(FieldExpr),
    /// `a && b`, `a > b`, ...
    Op(SpansetOp, Box<SpansetExpr>, Box<SpansetExpr>),
    /// Stages joined by `|`; never a single spanset stage.
    Pipeline(Vec<Stage>),
}

/// One stage of a spanset pipeline.
#[derive(Debug, Clone, PartialEq)]
pub enum Stage {
    Spanset(SpansetExpr),
    /// `count() > 2`, `avg(duration) > 1s`, `min(.a) < max(.b)`.
    ScalarFilter(ScalarFilter),
    /// `by(expr)`: splits each spanset by the expression's value.
    By(FieldExpr),
    /// `coalesce()`: merges a trace's spansets into one.
    Coalesce,
    /// `select(a, b)`: fields to return with each span.
    Select(Vec<FieldExpr>),
}

/// Operators between spansets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpansetOp {
    And,
    Union,
    Child,
    Descendant,
    Parent,
    Ancestor,
    Sibling,
    NotChild,
    NotDescendant,
    NotParent,
    NotAncestor,
    NotSibling,
    UnionChild,
    UnionDescendant,
    UnionParent,
    UnionAncestor,
    UnionSibling,
}

impl SpansetOp {
    pub fn symbol(self) -> &'static str {
        match self {
            Self::And => "&&",
            Self::Union => "||",
            Self::Child => ">",
            Self::Descendant => ">>",
            Self::Parent => "<",
            Self::Ancestor => "<<",
            Self::Sibling => "~",
            Self::NotChild => "!>",
            Self::NotDescendant => "!>>",
            Self::NotParent => "!<",
            Self::NotAncestor => "!<<",
            Self::NotSibling => "!~",
            Self::UnionChild => "&>",
            Self::UnionDescendant => "&>>",
            Self::UnionParent => "&<",
            Self::UnionAncestor => "&<<",
            Self::UnionSibling => "&~",
        }
    }
}

/// `lhs op rhs` between scalars.
#[derive(Debug, Clone, PartialEq)]
pub struct ScalarFilter {
    pub op: CmpOp,
    pub lhs: ScalarExpr,
    pub rhs: ScalarExpr,
}

/// A number per spanset: aggregates, constants and arithmetic.
#[derive(Debug, Clone, PartialEq)]
pub enum ScalarExpr {
    /// An int, float or duration constant.
    Static(Static),
    Aggregate(Aggregate),
    Binary(ArithOp, Box<ScalarExpr>, Box<ScalarExpr>),
    /// `(pipeline | aggregate)`: a scalar computed by its own pipeline, per trace.
    Wrapped(Box<SpansetExpr>, Aggregate),
}

/// `count()`, `avg(expr)`, ...
#[derive(Debug, Clone, PartialEq)]
pub struct Aggregate {
    pub func: AggFunc,
    /// `None` only for `count()`.
    pub arg: Option<FieldExpr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggFunc {
    Count,
    Avg,
    Min,
    Max,
    Sum,
}

impl AggFunc {
    pub fn name(self) -> &'static str {
        match self {
            Self::Count => "count",
            Self::Avg => "avg",
            Self::Min => "min",
            Self::Max => "max",
            Self::Sum => "sum",
        }
    }
}

/// A metrics query.
#[derive(Debug, Clone, PartialEq)]
pub enum MetricsExpr {
    /// `spansets | function(...) by (...)`.
    Pipeline(Box<SpansetExpr>, MetricsFn),
    /// A second stage after a metrics expression: `| topk(5)`, `> 10`.
    Stage(Box<MetricsExpr>, MetricsStage),
    Binary(ArithOp, Box<MetricsExpr>, Box<MetricsExpr>),
    /// An int or float constant.
    Number(Static),
}

/// `rate()`, `quantile_over_time(duration, 0.9) by (name)`, ...
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsFn {
    pub func: MetricsFunc,
    pub args: Vec<FieldExpr>,
    /// `compare({ ... })`'s selection.
    pub selection: Option<Box<SpansetExpr>>,
    pub by: Vec<FieldExpr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsFunc {
    Rate,
    CountOverTime,
    MinOverTime,
    MaxOverTime,
    AvgOverTime,
    SumOverTime,
    QuantileOverTime,
    HistogramOverTime,
    Compare,
}

impl MetricsFunc {
    pub const ALL: [Self; 9] = [
        Self::Rate,
        Self::CountOverTime,
        Self::MinOverTime,
        Self::MaxOverTime,
        Self::AvgOverTime,
        Self::SumOverTime,
        Self::QuantileOverTime,
        Self::HistogramOverTime,
        Self::Compare,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Rate => "rate",
            Self::CountOverTime => "count_over_time",
            Self::MinOverTime => "min_over_time",
            Self::MaxOverTime => "max_over_time",
            Self::AvgOverTime => "avg_over_time",
            Self::SumOverTime => "sum_over_time",
            Self::QuantileOverTime => "quantile_over_time",
            Self::HistogramOverTime => "histogram_over_time",
            Self::Compare => "compare",
        }
    }
}

/// A stage after a metrics function.
#[derive(Debug, Clone, PartialEq)]
pub enum MetricsStage {
    TopK(i64),
    BottomK(i64),
    Filter(CmpOp, Static),
}

/// Comparison operators of scalar filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Neq,
    Lt,
    Lte,
    Gt,
    Gte,
}

impl CmpOp {
    pub fn symbol(self) -> &'static str {
        match self {
            Self::Eq => "=",
            Self::Neq => "!=",
            Self::Lt => "<",
            Self::Lte => "<=",
            Self::Gt => ">",
            Self::Gte => ">=",
        }
    }
}

/// Arithmetic operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
}

impl ArithOp {
    pub fn symbol(self) -> &'static str {
        match self {
            Self::Add => "+",
            Self::Sub => "-",
            Self::Mul => "*",
            Self::Div => "/",
            Self::Mod => "%",
            Self::Pow => "^",
        }
    }

    fn precedence(self) -> u8 {
        match self {
            Self::Add | Self::Sub => 3,
            Self::Mul | Self::Div | Self::Mod => 5,
            Self::Pow => 6,
        }
    }
}

/// An expression over one span, inside `{ }` or as a function argument.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldExpr {
    Static(Static),
    Intrinsic(Intrinsic),
    Attribute(Attribute),
    Binary(BinOp, Box<FieldExpr>, Box<FieldExpr>),
    Unary(UnaryOp, Box<FieldExpr>),
}

impl FieldExpr {
    /// Whether the expression reads anything of the span (an attribute or intrinsic).
    pub fn references_span(&self) -> bool {
        match self {
            Self::Static(_) => false,
            Self::Intrinsic(_) | Self::Attribute(_) => true,
            Self::Binary(_, a, b) => a.references_span() || b.references_span(),
            Self::Unary(_, a) => a.references_span(),
        }
    }

    /// Calls `f` on every attribute and intrinsic, left to right.
    pub fn visit_fields(&self, f: &mut impl FnMut(&FieldExpr)) {
        match self {
            Self::Static(_) => {}
            Self::Intrinsic(_) | Self::Attribute(_) => f(self),
            Self::Binary(_, a, b) => {
                a.visit_fields(f);
                b.visit_fields(f);
            }
            Self::Unary(_, a) => a.visit_fields(f),
        }
    }
}

/// Binary operators inside field expressions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    Arith(ArithOp),
    Cmp(CmpOp),
    Regex,
    NotRegex,
    And,
    Or,
}

impl BinOp {
    pub fn symbol(self) -> &'static str {
        match self {
            Self::Arith(op) => op.symbol(),
            Self::Cmp(op) => op.symbol(),
            Self::Regex => "=~",
            Self::NotRegex => "!~",
            Self::And => "&&",
            Self::Or => "||",
        }
    }

    /// Binding strength, as in Tempo's grammar: `&&` and `||` bind equally and loosest.
    pub fn precedence(self) -> u8 {
        match self {
            Self::And | Self::Or => 1,
            Self::Cmp(_) | Self::Regex | Self::NotRegex => 2,
            Self::Arith(op) => op.precedence(),
        }
    }

    pub fn right_assoc(self) -> bool {
        self == Self::Arith(ArithOp::Pow)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnaryOp {
    Not,
    Neg,
}

/// Precedence of a unary operator's operand: it takes `*`, `/`, `%` and `^` but not `+`.
pub const UNARY_OPERAND_PRECEDENCE: u8 = 5;

/// A literal value.
#[derive(Debug, Clone, PartialEq)]
pub enum Static {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Nil,
    /// Nanoseconds.
    Duration(i64),
    Status(Status),
    Kind(Kind),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    Error,
    Unset,
}

impl Status {
    /// The keyword, which is also how the spans table stores it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Error => "error",
            Self::Unset => "unset",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Unspecified,
    Internal,
    Server,
    Client,
    Producer,
    Consumer,
}

impl Kind {
    /// The keyword, which is also how the spans table stores it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::Internal => "internal",
            Self::Server => "server",
            Self::Client => "client",
            Self::Producer => "producer",
            Self::Consumer => "consumer",
        }
    }
}

/// A value every span has (or its trace, event, link or scope has).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Intrinsic {
    Duration,
    Name,
    Status,
    StatusMessage,
    Kind,
    ChildCount,
    /// `parent` alone: not a value; only `parent.<attribute>` reads the parent.
    Parent,
    SpanId,
    ParentId,
    TraceId,
    TraceDuration,
    RootName,
    RootService,
    EventName,
    EventTimeSinceStart,
    LinkTraceId,
    LinkSpanId,
    InstrumentationName,
    InstrumentationVersion,
    NestedSetLeft,
    NestedSetRight,
    NestedSetParent,
}

impl Intrinsic {
    /// Every intrinsic, for tag listings.
    pub const ALL: [Self; 22] = [
        Self::Duration,
        Self::Name,
        Self::Status,
        Self::StatusMessage,
        Self::Kind,
        Self::ChildCount,
        Self::Parent,
        Self::SpanId,
        Self::ParentId,
        Self::TraceId,
        Self::TraceDuration,
        Self::RootName,
        Self::RootService,
        Self::EventName,
        Self::EventTimeSinceStart,
        Self::LinkTraceId,
        Self::LinkSpanId,
        Self::InstrumentationName,
        Self::InstrumentationVersion,
        Self::NestedSetLeft,
        Self::NestedSetRight,
        Self::NestedSetParent,
    ];

    /// The intrinsics an unscoped word names, with their words.
    const WORDS: [(&'static str, Self); 13] = [
        ("duration", Self::Duration),
        ("name", Self::Name),
        ("status", Self::Status),
        ("statusMessage", Self::StatusMessage),
        ("kind", Self::Kind),
        ("childCount", Self::ChildCount),
        ("parent", Self::Parent),
        ("rootName", Self::RootName),
        ("rootServiceName", Self::RootService),
        ("traceDuration", Self::TraceDuration),
        ("nestedSetLeft", Self::NestedSetLeft),
        ("nestedSetRight", Self::NestedSetRight),
        ("nestedSetParent", Self::NestedSetParent),
    ];

    /// The intrinsic an unscoped word names (`duration`, `rootServiceName`, ...).
    pub fn from_word(word: &str) -> Option<Self> {
        Self::WORDS.iter().find(|(w, _)| *w == word).map(|(_, i)| *i)
    }

    /// The unscoped word of the intrinsic, where it has one (as Tempo prints it in spanset
    /// attributes: `avg(duration)`).
    pub fn word(self) -> Option<&'static str> {
        Self::WORDS.iter().find(|(_, i)| *i == self).map(|(w, _)| *w)
    }

    /// The intrinsic `scope:name` names.
    pub fn from_scoped(scope: &str, name: &str) -> Option<Self> {
        Some(match (scope, name) {
            ("span", "duration") => Self::Duration,
            ("span", "name") => Self::Name,
            ("span", "kind") => Self::Kind,
            ("span", "status") => Self::Status,
            ("span", "statusMessage") => Self::StatusMessage,
            ("span", "id") => Self::SpanId,
            ("span", "parentID") => Self::ParentId,
            ("span", "childCount") => Self::ChildCount,
            ("trace", "duration") => Self::TraceDuration,
            ("trace", "rootName") => Self::RootName,
            ("trace", "rootService") => Self::RootService,
            ("trace", "id") => Self::TraceId,
            ("event", "name") => Self::EventName,
            ("event", "timeSinceStart") => Self::EventTimeSinceStart,
            ("link", "traceID") => Self::LinkTraceId,
            ("link", "spanID") => Self::LinkSpanId,
            ("instrumentation", "name") => Self::InstrumentationName,
            ("instrumentation", "version") => Self::InstrumentationVersion,
            _ => return None,
        })
    }

    /// How the intrinsic is written: the scoped form where one exists, as Grafana shows it.
    pub fn spelling(self) -> &'static str {
        match self {
            Self::Duration => "span:duration",
            Self::Name => "span:name",
            Self::Status => "span:status",
            Self::StatusMessage => "span:statusMessage",
            Self::Kind => "span:kind",
            Self::ChildCount => "span:childCount",
            Self::Parent => "parent",
            Self::SpanId => "span:id",
            Self::ParentId => "span:parentID",
            Self::TraceId => "trace:id",
            Self::TraceDuration => "trace:duration",
            Self::RootName => "trace:rootName",
            Self::RootService => "trace:rootService",
            Self::EventName => "event:name",
            Self::EventTimeSinceStart => "event:timeSinceStart",
            Self::LinkTraceId => "link:traceID",
            Self::LinkSpanId => "link:spanID",
            Self::InstrumentationName => "instrumentation:name",
            Self::InstrumentationVersion => "instrumentation:version",
            Self::NestedSetLeft => "nestedSetLeft",
            Self::NestedSetRight => "nestedSetRight",
            Self::NestedSetParent => "nestedSetParent",
        }
    }
}

/// An attribute reference: `.a`, `span.a`, `resource."a b"`, `parent.span.a`.
#[derive(Debug, Clone, PartialEq)]
pub struct Attribute {
    pub scope: AttrScope,
    /// Reads the parent span's attribute.
    pub parent: bool,
    pub name: String,
}

// ---------------------------------------------------------------------------------------------
// Display
// ---------------------------------------------------------------------------------------------

impl fmt::Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.root)?;
        if !self.hints.is_empty() {
            write!(f, " with(")?;
            for (i, hint) in self.hints.iter().enumerate() {
                if i > 0 {
                    write!(f, ", ")?;
                }
                write!(f, "{}={}", hint.name, hint.value)?;
            }
            write!(f, ")")?;
        }
        Ok(())
    }
}

impl fmt::Display for Root {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Spanset(s) => write!(f, "{s}"),
            Self::ScalarFilter(s) => write!(f, "{s}"),
            Self::Metrics(m) => write!(f, "{m}"),
        }
    }
}

impl SpansetExpr {
    /// Writes `self` as an operand: parenthesised unless it is a plain filter.
    fn fmt_operand(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Filter(_) => write!(f, "{self}"),
            _ => write!(f, "({self})"),
        }
    }
}

impl fmt::Display for SpansetExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Filter(FieldExpr::Static(Static::Bool(true))) => write!(f, "{{ }}"),
            Self::Filter(e) => write!(f, "{{ {e} }}"),
            Self::Op(op, a, b) => {
                a.fmt_operand(f)?;
                write!(f, " {} ", op.symbol())?;
                b.fmt_operand(f)
            }
            Self::Pipeline(stages) => {
                for (i, stage) in stages.iter().enumerate() {
                    if i > 0 {
                        write!(f, " | ")?;
                    }
                    write!(f, "{stage}")?;
                }
                Ok(())
            }
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // A pipeline nested in a pipeline keeps its parentheses.
            Self::Spanset(s @ SpansetExpr::Pipeline(_)) => write!(f, "({s})"),
            Self::Spanset(s) => write!(f, "{s}"),
            Self::ScalarFilter(s) => write!(f, "{s}"),
            Self::By(e) => write!(f, "by({e})"),
            Self::Coalesce => write!(f, "coalesce()"),
            Self::Select(fields) => {
                write!(f, "select(")?;
                for (i, e) in fields.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{e}")?;
                }
                write!(f, ")")
            }
        }
    }
}

impl fmt::Display for ScalarFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.lhs, self.op.symbol(), self.rhs)
    }
}

/// Writing an expression where operators of precedence below `min` need parentheses.
trait FmtPrec {
    fn fmt_prec(&self, f: &mut fmt::Formatter<'_>, min: u8) -> fmt::Result;
}

/// Writes `a op b` with the fewest parentheses that keep the tree: the side that would
/// re-associate gets one level more.
fn fmt_binary(
    f: &mut fmt::Formatter<'_>,
    min: u8,
    (precedence, right_assoc, symbol): (u8, bool, &str),
    a: &impl FmtPrec,
    b: &impl FmtPrec,
) -> fmt::Result {
    let p = precedence;
    let wrap = p < min;
    if wrap {
        write!(f, "(")?;
    }
    let (lp, rp) = if right_assoc { (p + 1, p) } else { (p, p + 1) };
    a.fmt_prec(f, lp)?;
    write!(f, " {symbol} ")?;
    b.fmt_prec(f, rp)?;
    if wrap {
        write!(f, ")")?;
    }
    Ok(())
}

impl FmtPrec for ScalarExpr {
    fn fmt_prec(&self, f: &mut fmt::Formatter<'_>, min: u8) -> fmt::Result {
        match self {
            Self::Binary(op, a, b) => {
                fmt_binary(f, min, (op.precedence(), *op == ArithOp::Pow, op.symbol()), &**a, &**b)
            }
            Self::Static(s) => write!(f, "{s}"),
            Self::Aggregate(a) => write!(f, "{a}"),
            Self::Wrapped(p, a) => write!(f, "({p} | {a})"),
        }
    }
}

impl fmt::Display for ScalarExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_prec(f, 0)
    }
}

impl fmt::Display for Aggregate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.arg {
            Some(arg) => write!(f, "{}({arg})", self.func.name()),
            None => write!(f, "{}()", self.func.name()),
        }
    }
}

impl FmtPrec for MetricsExpr {
    fn fmt_prec(&self, f: &mut fmt::Formatter<'_>, min: u8) -> fmt::Result {
        match self {
            Self::Binary(op, a, b) => fmt_binary(f, min, (op.precedence(), false, op.symbol()), &**a, &**b),
            Self::Number(n) => write!(f, "{n}"),
            // Pipelines and stages are operands only inside parentheses.
            Self::Pipeline(..) | Self::Stage(..) if min > 0 => write!(f, "({self})"),
            Self::Pipeline(source, func) => write!(f, "{source} | {func}"),
            Self::Stage(inner, stage) => {
                // A comparison binds tighter than `|` but looser than arithmetic.
                inner.fmt_prec(f, 0)?;
                match stage {
                    MetricsStage::TopK(k) => write!(f, " | topk({k})"),
                    MetricsStage::BottomK(k) => write!(f, " | bottomk({k})"),
                    MetricsStage::Filter(op, v) => write!(f, " {} {v}", op.symbol()),
                }
            }
        }
    }
}

impl fmt::Display for MetricsExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_prec(f, 0)
    }
}

impl fmt::Display for MetricsFn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}(", self.func.name())?;
        let mut first = true;
        if let Some(sel) = &self.selection {
            write!(f, "{sel}")?;
            first = false;
        }
        for arg in &self.args {
            if !first {
                write!(f, ", ")?;
            }
            first = false;
            write!(f, "{arg}")?;
        }
        write!(f, ")")?;
        if !self.by.is_empty() {
            write!(f, " by (")?;
            for (i, e) in self.by.iter().enumerate() {
                if i > 0 {
                    write!(f, ", ")?;
                }
                write!(f, "{e}")?;
            }
            write!(f, ")")?;
        }
        Ok(())
    }
}

impl FmtPrec for FieldExpr {
    fn fmt_prec(&self, f: &mut fmt::Formatter<'_>, min: u8) -> fmt::Result {
        match self {
            Self::Binary(op, a, b) => fmt_binary(f, min, (op.precedence(), op.right_assoc(), op.symbol()), &**a, &**b),
            Self::Unary(op, a) => {
                // A unary operator takes an operand of at least multiplicative precedence;
                // writing it inside parentheses when it is itself unary keeps `- -1` apart.
                let wrap = min > UNARY_OPERAND_PRECEDENCE;
                if wrap {
                    write!(f, "(")?;
                }
                write!(f, "{}", if *op == UnaryOp::Not { "!" } else { "-" })?;
                if matches!(**a, Self::Unary(..)) {
                    write!(f, "(")?;
                    a.fmt_prec(f, 0)?;
                    write!(f, ")")?;
                } else {
                    a.fmt_prec(f, UNARY_OPERAND_PRECEDENCE)?;
                }
                if wrap {
                    write!(f, ")")?;
                }
                Ok(())
            }
            Self::Static(s) => write!(f, "{s}"),
            // `{:#}` writes intrinsics by their unscoped word, as Tempo prints labels.
            Self::Intrinsic(i) if f.alternate() => write!(f, "{}", i.word().unwrap_or(i.spelling())),
            Self::Intrinsic(i) => write!(f, "{}", i.spelling()),
            Self::Attribute(a) => write!(f, "{a}"),
        }
    }
}

/// Written with `{:#}`, a field expression names its intrinsics by their unscoped words
/// (`duration * 2`), as Tempo prints them in spanset attributes; plain `{}` writes the scoped
/// form (`span:duration * 2`).
impl fmt::Display for FieldExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_prec(f, 0)
    }
}

/// Writes `s` as a double-quoted string with Go's escapes.
pub fn write_quoted(f: &mut impl fmt::Write, s: &str) -> fmt::Result {
    f.write_char('"')?;
    for c in s.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\t' => f.write_str("\\t")?,
            '\r' => f.write_str("\\r")?,
            c => f.write_char(c)?,
        }
    }
    f.write_char('"')
}

fn needs_quotes(name: &str) -> bool {
    name.is_empty()
        || name.starts_with('"')
        || name.chars().any(|c| {
            c.is_whitespace()
                || matches!(
                    c,
                    '{' | '}' | '(' | ')' | '=' | '~' | '!' | '<' | '>' | '&' | '|' | '^' | ','
                )
        })
}

impl fmt::Display for Attribute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.parent {
            write!(f, "parent")?;
        }
        match self.scope {
            AttrScope::Unscoped => write!(f, ".")?,
            scope => {
                if self.parent {
                    write!(f, ".")?;
                }
                write!(f, "{}.", scope.prefix())?;
            }
        }
        if needs_quotes(&self.name) || (self.parent && self.scope == AttrScope::Unscoped) {
            write_quoted(f, &self.name)
        } else {
            write!(f, "{}", self.name)
        }
    }
}

/// Writes a duration in nanoseconds with the largest unit that keeps it exact.
pub fn format_duration(ns: i64) -> String {
    const UNITS: [(i64, &str); 6] = [
        (3_600_000_000_000, "h"),
        (60_000_000_000, "m"),
        (1_000_000_000, "s"),
        (1_000_000, "ms"),
        (1_000, "us"),
        (1, "ns"),
    ];
    let sign = if ns < 0 { "-" } else { "" };
    let abs = ns.unsigned_abs();
    if abs == 0 {
        return "0s".into();
    }
    for (unit_ns, unit) in UNITS {
        let unit_ns = unit_ns as u64;
        if abs.is_multiple_of(unit_ns) {
            return format!("{sign}{}{unit}", abs / unit_ns);
        }
    }
    unreachable!("every duration is a whole number of nanoseconds")
}

impl fmt::Display for Static {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Str(s) => write_quoted(f, s),
            Self::Int(i) => write!(f, "{i}"),
            Self::Float(x) => {
                let s = format!("{x:?}");
                // `1e300` lexes back as a float; `inf` and `NaN` cannot occur (the lexer refuses them).
                write!(f, "{s}")
            }
            Self::Bool(b) => write!(f, "{b}"),
            Self::Nil => write!(f, "nil"),
            Self::Duration(ns) => write!(f, "{}", format_duration(*ns)),
            Self::Status(s) => write!(f, "{}", s.name()),
            Self::Kind(k) => write!(f, "{}", k.name()),
        }
    }
}
