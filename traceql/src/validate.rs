//! Validation: static types and the rules a parsed query must meet before it is planned.
//!
//! Types follow Tempo: ints, floats and durations compare and combine freely; attributes have
//! no static type and match anything; status and kind compare only with `=` and `!=`; a spanset
//! filter must be boolean; aggregates, `by()` and metrics functions must read the span.

use std::fmt;

use crate::ast::*;
use crate::lexer::Pos;

/// A validation error, at the start of the field expression it is about when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidateError {
    pub pos: Option<Pos>,
    pub message: String,
}

impl fmt::Display for ValidateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.pos {
            Some(pos) => write!(f, "{pos}: {}", self.message),
            None => write!(f, "{}", self.message),
        }
    }
}

impl std::error::Error for ValidateError {}

/// Static type of a field expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    Bool,
    Int,
    Float,
    Duration,
    /// A number of unknown kind (arithmetic on attributes).
    Number,
    Str,
    Status,
    Kind,
    Nil,
    /// An attribute: its type is known only per span.
    Attribute,
}

impl Type {
    fn name(self) -> &'static str {
        match self {
            Self::Bool => "boolean",
            Self::Int => "int",
            Self::Float => "float",
            Self::Duration => "duration",
            Self::Number => "number",
            Self::Str => "string",
            Self::Status => "status",
            Self::Kind => "kind",
            Self::Nil => "nil",
            Self::Attribute => "attribute",
        }
    }

    fn numeric(self) -> bool {
        matches!(self, Self::Int | Self::Float | Self::Duration | Self::Number)
    }

    fn numeric_or_attr(self) -> bool {
        self.numeric() || self == Self::Attribute
    }
}

/// The type of an intrinsic.
pub fn intrinsic_type(i: Intrinsic) -> Type {
    match i {
        Intrinsic::Duration | Intrinsic::TraceDuration | Intrinsic::EventTimeSinceStart => Type::Duration,
        Intrinsic::Status => Type::Status,
        Intrinsic::Kind => Type::Kind,
        Intrinsic::ChildCount | Intrinsic::NestedSetLeft | Intrinsic::NestedSetRight | Intrinsic::NestedSetParent => {
            Type::Int
        }
        Intrinsic::Parent => Type::Nil,
        _ => Type::Str,
    }
}

/// The span intrinsic `parent.<name>` reads on the parent, if `name` names one.
pub fn parent_intrinsic(attr: &Attribute) -> Option<Intrinsic> {
    if !attr.parent || attr.scope != AttrScope::Unscoped {
        return None;
    }
    match Intrinsic::from_word(&attr.name)? {
        i @ (Intrinsic::Duration
        | Intrinsic::Name
        | Intrinsic::Status
        | Intrinsic::StatusMessage
        | Intrinsic::Kind
        | Intrinsic::ChildCount) => Some(i),
        _ => None,
    }
}

type Result<T> = std::result::Result<T, String>;

fn static_type(s: &Static) -> Type {
    match s {
        Static::Str(_) => Type::Str,
        Static::Int(_) => Type::Int,
        Static::Float(_) => Type::Float,
        Static::Bool(_) => Type::Bool,
        Static::Nil => Type::Nil,
        Static::Duration(_) => Type::Duration,
        Static::Status(_) => Type::Status,
        Static::Kind(_) => Type::Kind,
    }
}

fn is_never_nil(e: &FieldExpr) -> bool {
    match e {
        FieldExpr::Intrinsic(i) => matches!(intrinsic_type(*i), Type::Status | Type::Kind),
        FieldExpr::Attribute(a) => !a.parent && a.scope == AttrScope::Resource && a.name == "service.name",
        _ => false,
    }
}

/// The type of `e`, or why it has none.
pub fn type_of(e: &FieldExpr) -> Result<Type> {
    match e {
        FieldExpr::Static(s) => Ok(static_type(s)),
        FieldExpr::Intrinsic(Intrinsic::Parent) => {
            Err("'parent' alone is not a value; read the parent span with parent.<attribute>".into())
        }
        FieldExpr::Intrinsic(i) => Ok(intrinsic_type(*i)),
        FieldExpr::Attribute(a) => Ok(parent_intrinsic(a).map_or(Type::Attribute, intrinsic_type)),
        FieldExpr::Unary(op, a) => {
            let t = type_of(a)?;
            match op {
                UnaryOp::Neg if t.numeric_or_attr() => Ok(if t == Type::Attribute { Type::Number } else { t }),
                UnaryOp::Neg => Err(format!("cannot negate {} {a}", t.name())),
                UnaryOp::Not if matches!(t, Type::Bool | Type::Attribute) => Ok(Type::Bool),
                UnaryOp::Not => Err(format!("'!' needs a boolean, not {} {a}", t.name())),
            }
        }
        FieldExpr::Binary(op, a, b) => {
            let (ta, tb) = (type_of(a)?, type_of(b)?);
            match op {
                BinOp::Arith(arith) => {
                    if !ta.numeric_or_attr() || !tb.numeric_or_attr() {
                        return Err(format!(
                            "'{}' needs numbers, not {} {a} and {} {b}",
                            arith.symbol(),
                            ta.name(),
                            tb.name()
                        ));
                    }
                    Ok(match (ta, tb) {
                        (Type::Int, Type::Int) => Type::Int,
                        (Type::Duration, _) | (_, Type::Duration) => Type::Duration,
                        (Type::Float, Type::Int | Type::Float) | (Type::Int, Type::Float) => Type::Float,
                        _ => Type::Number,
                    })
                }
                BinOp::Cmp(cmp) => {
                    compare_types(*cmp, a, ta, b, tb)?;
                    Ok(Type::Bool)
                }
                BinOp::Regex | BinOp::NotRegex => {
                    for (t, e) in [(ta, a), (tb, b)] {
                        if !matches!(t, Type::Str | Type::Attribute) {
                            return Err(format!("'{}' needs strings, not {} {e}", op.symbol(), t.name()));
                        }
                    }
                    if let FieldExpr::Static(Static::Str(pattern)) = &**b {
                        regex::Regex::new(pattern)
                            .map_err(|e| format!("invalid regular expression {pattern:?}: {e}"))?;
                    }
                    Ok(Type::Bool)
                }
                BinOp::And | BinOp::Or => {
                    for (t, e) in [(ta, a), (tb, b)] {
                        if !matches!(t, Type::Bool | Type::Attribute) {
                            return Err(format!("'{}' needs booleans, not {} {e}", op.symbol(), t.name()));
                        }
                    }
                    Ok(Type::Bool)
                }
            }
        }
    }
}

fn compare_types(op: CmpOp, a: &FieldExpr, ta: Type, b: &FieldExpr, tb: Type) -> Result<()> {
    let mismatch = || {
        Err(format!(
            "cannot compare {} {a} with {} {b} using '{}'",
            ta.name(),
            tb.name(),
            op.symbol()
        ))
    };
    if ta == Type::Nil || tb == Type::Nil {
        let other = if ta == Type::Nil { b } else { a };
        // As in Tempo: `intrinsic = nil` is refused (`!= nil` is not).
        if op == CmpOp::Eq && matches!(other, FieldExpr::Intrinsic(_)) {
            return Err(format!("{other}=nil is not valid because intrinsics cannot be nil"));
        }
        if (ta == Type::Nil && is_never_nil(b)) || (tb == Type::Nil && is_never_nil(a)) {
            let other = if ta == Type::Nil { b } else { a };
            return Err(format!("{other} always has a value; it cannot be compared with nil"));
        }
        return if matches!(op, CmpOp::Eq | CmpOp::Neq) {
            Ok(())
        } else {
            mismatch()
        };
    }
    let ordered = !matches!(op, CmpOp::Eq | CmpOp::Neq);
    if ta == Type::Attribute || tb == Type::Attribute {
        let other = if ta == Type::Attribute { tb } else { ta };
        if ordered && matches!(other, Type::Bool | Type::Status | Type::Kind) {
            return mismatch();
        }
        return Ok(());
    }
    if ta.numeric() && tb.numeric() {
        return Ok(());
    }
    if ta != tb {
        return mismatch();
    }
    if ordered && matches!(ta, Type::Bool | Type::Status | Type::Kind) {
        return mismatch();
    }
    Ok(())
}

/// Checks `query`; the first problem found is the error.
pub fn validate(query: &Query) -> std::result::Result<(), ValidateError> {
    let mut v = Validator {
        positions: &query.field_positions,
        next: 0,
    };
    v.root(&query.root).map_err(|(index, message)| ValidateError {
        pos: index.and_then(|i| query.field_positions.get(i).copied()),
        message,
    })
}

/// Walks the tree in source order, so the n-th field expression visited is the n-th parsed.
struct Validator<'a> {
    positions: &'a [Pos],
    next: usize,
}

type VResult = std::result::Result<(), (Option<usize>, String)>;

impl Validator<'_> {
    fn field(&mut self, e: &FieldExpr, check: impl FnOnce(&FieldExpr, Type) -> Result<()>) -> VResult {
        let index = self.next;
        self.next += 1;
        let at = (index < self.positions.len()).then_some(index);
        let t = type_of(e).map_err(|m| (at, m))?;
        check(e, t).map_err(|m| (at, m))
    }

    fn root(&mut self, root: &Root) -> VResult {
        match root {
            Root::Spanset(s) => self.spanset(s),
            Root::ScalarFilter(f) => self.scalar_filter(f),
            Root::Metrics(m) => self.metrics(m, true),
        }
    }

    fn spanset(&mut self, s: &SpansetExpr) -> VResult {
        match s {
            SpansetExpr::Filter(e) => self.field(e, |e, t| {
                if matches!(t, Type::Bool | Type::Attribute) {
                    Ok(())
                } else {
                    Err(format!(
                        "a spanset filter must be a condition, but {e} is a {}",
                        t.name()
                    ))
                }
            }),
            SpansetExpr::Op(_, a, b) => {
                self.spanset(a)?;
                self.spanset(b)
            }
            SpansetExpr::Pipeline(stages) => {
                for stage in stages {
                    match stage {
                        Stage::Spanset(s) => self.spanset(s)?,
                        Stage::ScalarFilter(f) => self.scalar_filter(f)?,
                        Stage::By(e) => self.field(e, |e, _| {
                            if e.references_span() {
                                Ok(())
                            } else {
                                Err(format!("by({e}) must read the span: use an attribute or intrinsic"))
                            }
                        })?,
                        Stage::Coalesce => {}
                        Stage::Select(fields) => {
                            for e in fields {
                                self.field(e, |_, _| Ok(()))?;
                            }
                        }
                    }
                }
                Ok(())
            }
        }
    }

    fn scalar_filter(&mut self, f: &ScalarFilter) -> VResult {
        self.scalar(&f.lhs)?;
        self.scalar(&f.rhs)
    }

    fn scalar(&mut self, e: &ScalarExpr) -> VResult {
        match e {
            ScalarExpr::Static(_) => Ok(()),
            ScalarExpr::Aggregate(a) => self.aggregate(a),
            ScalarExpr::Binary(_, a, b) => {
                self.scalar(a)?;
                self.scalar(b)
            }
            ScalarExpr::Wrapped(p, a) => {
                self.spanset(p)?;
                self.aggregate(a)
            }
        }
    }

    fn aggregate(&mut self, a: &Aggregate) -> VResult {
        let Some(arg) = &a.arg else { return Ok(()) };
        let name = a.func.name();
        self.field(arg, |e, t| {
            if !e.references_span() {
                return Err(format!("{name}({e}) must read the span: use an attribute or intrinsic"));
            }
            if !t.numeric_or_attr() {
                return Err(format!("{name}() needs a number, but {e} is a {}", t.name()));
            }
            Ok(())
        })
    }

    fn metrics(&mut self, m: &MetricsExpr, alone: bool) -> VResult {
        match m {
            MetricsExpr::Number(_) => Ok(()),
            MetricsExpr::Binary(_, a, b) => {
                self.metrics(a, false)?;
                self.metrics(b, false)
            }
            MetricsExpr::Stage(inner, stage) => {
                if let MetricsStage::TopK(k) | MetricsStage::BottomK(k) = stage
                    && *k <= 0
                {
                    return Err((None, "topk() and bottomk() need a positive number of series".into()));
                }
                self.metrics(inner, false)
            }
            MetricsExpr::Pipeline(source, f) => {
                if f.func == MetricsFunc::Compare && !alone {
                    return Err((
                        None,
                        "compare() cannot be followed by topk, bottomk, comparisons or arithmetic".into(),
                    ));
                }
                self.spanset(source)?;
                if let Some(sel) = &f.selection {
                    self.spanset(sel)?;
                }
                let name = f.func.name();
                for (i, arg) in f.args.iter().enumerate() {
                    let is_field = i == 0 && f.func != MetricsFunc::Compare;
                    self.field(arg, |e, t| {
                        if is_field {
                            if !e.references_span() {
                                return Err(format!("{name}({e}) must read the span"));
                            }
                            if !t.numeric_or_attr() {
                                return Err(format!("{name}() needs a number, but {e} is a {}", t.name()));
                            }
                        } else if f.func == MetricsFunc::QuantileOverTime {
                            let q = match e {
                                FieldExpr::Static(Static::Int(i)) => *i as f64,
                                FieldExpr::Static(Static::Float(x)) => *x,
                                _ => -1.0,
                            };
                            if !(0.0..=1.0).contains(&q) {
                                return Err(format!("quantile {e} is not between 0 and 1"));
                            }
                        }
                        Ok(())
                    })?;
                }
                for e in &f.by {
                    self.field(e, |e, _| {
                        if e.references_span() {
                            Ok(())
                        } else {
                            Err(format!("by({e}) must read the span"))
                        }
                    })?;
                }
                Ok(())
            }
        }
    }
}
