//! The candidate step of a search: a condition on single spans that every matching trace has a
//! span for, read first over only the columns it needs, so the whole rows are read only for the
//! traces that pass it.
//!
//! From a filter `{ c }` it is `c`, or the part of it that reads the span's own row alone (its
//! conjuncts that do); from `A && B`, `A > B`, `A >> B` (and the other
//! non-negated structural operators) that of either side; from `A || B` the disjunction of
//! both sides'; from a pipeline that of its first spanset, and when that is a plain filter
//! also of its first scalar filter that bounds durations (`| by(x) | avg(duration) > 1s`: some
//! span of the filter has a duration over 1s). Only conditions on the span's own
//! columns count (no trace-level intrinsics, parent, events, links or nested-set values), and
//! a condition that holds for every span (`{ }`) is no help. Conditions on attributes are
//! decided from the maps' key and value leaves alone (`tracehouse_warehouse::map_filter`). A
//! search skips the step for the ranges left once one range finds candidates dense (more than
//! one per 256 spans).

use tracehouse_traceql::ast::{
    AggFunc, AttrScope, BinOp, CmpOp, FieldExpr, Intrinsic, Query, Root, ScalarExpr, ScalarFilter, SpansetExpr,
    SpansetOp, Stage, Static,
};

/// The span condition every trace that matches `query` has a span for, when there is a useful
/// one.
pub fn necessary_filter(query: &Query) -> Option<FieldExpr> {
    let Root::Spanset(e) = &query.root else {
        return None;
    };
    of(e).filter(|c| *c != ALWAYS)
}

const ALWAYS: FieldExpr = FieldExpr::Static(Static::Bool(true));

fn of(e: &SpansetExpr) -> Option<FieldExpr> {
    use SpansetOp as Op;
    match e {
        SpansetExpr::Filter(c) => local_part(c),
        SpansetExpr::Op(Op::And | Op::Child | Op::Descendant | Op::Parent | Op::Ancestor | Op::Sibling, a, b) => {
            let sides: Vec<FieldExpr> = [of(b), of(a)].into_iter().flatten().collect();
            let useful = sides.iter().find(|c| **c != ALWAYS);
            useful.or(sides.first()).cloned()
        }
        SpansetExpr::Op(Op::Union, a, b) => {
            let (a, b) = (of(a)?, of(b)?);
            match a == ALWAYS || b == ALWAYS {
                true => Some(ALWAYS),
                false => Some(FieldExpr::Binary(BinOp::Or, Box::new(a), Box::new(b))),
            }
        }
        SpansetExpr::Op(..) => None,
        SpansetExpr::Pipeline(stages) => match stages.first() {
            Some(Stage::Spanset(first)) => of_pipeline(first, &stages[1..]),
            _ => None,
        },
    }
}

/// A pipeline's condition: its first spanset's, and, when that is a filter on the span's own
/// row, also of the first scalar filter that needs a span of its input past a bound (every
/// stage's spans are some of the first's).
fn of_pipeline(first: &SpansetExpr, rest: &[Stage]) -> Option<FieldExpr> {
    let head = of(first);
    let bound = rest.iter().find_map(|s| match s {
        Stage::ScalarFilter(f) => needed_span(f),
        _ => None,
    });
    let whole = matches!(first, SpansetExpr::Filter(c) if span_local(c));
    match (head, bound) {
        (Some(h), Some(b)) if whole && h == ALWAYS => Some(b),
        (Some(h), Some(b)) if whole => Some(FieldExpr::Binary(BinOp::And, Box::new(h), Box::new(b))),
        (None, Some(b)) if whole => Some(b),
        (head, _) => head,
    }
}

/// The condition a span of a spanset must pass for `f` to hold: `avg`, `min` or `max` of
/// durations above (below) a duration has a duration above (below) it.
fn needed_span(f: &ScalarFilter) -> Option<FieldExpr> {
    let (ScalarExpr::Aggregate(agg), ScalarExpr::Static(bound @ Static::Duration(_))) = (&f.lhs, &f.rhs) else {
        return None;
    };
    let op = f.op;
    let duration = FieldExpr::Intrinsic(Intrinsic::Duration);
    let bounded = matches!(agg.func, AggFunc::Avg | AggFunc::Min | AggFunc::Max)
        && agg.arg.as_ref() == Some(&duration)
        && matches!(op, CmpOp::Gt | CmpOp::Gte | CmpOp::Lt | CmpOp::Lte);
    bounded.then(|| {
        FieldExpr::Binary(
            BinOp::Cmp(op),
            Box::new(duration),
            Box::new(FieldExpr::Static(bound.clone())),
        )
    })
}

/// What a span that passes `c` must pass on its own row: `c` itself when it reads only that,
/// else its conjuncts and disjunctions of such.
fn local_part(c: &FieldExpr) -> Option<FieldExpr> {
    if span_local(c) {
        return Some(c.clone());
    }
    match c {
        FieldExpr::Binary(BinOp::And, a, b) => match (local_part(a), local_part(b)) {
            (Some(a), Some(b)) => Some(FieldExpr::Binary(BinOp::And, Box::new(a), Box::new(b))),
            (one, other) => one.or(other),
        },
        FieldExpr::Binary(BinOp::Or, a, b) => Some(FieldExpr::Binary(
            BinOp::Or,
            Box::new(local_part(a)?),
            Box::new(local_part(b)?),
        )),
        _ => None,
    }
}

/// Whether `c` reads only the span's own row.
fn span_local(c: &FieldExpr) -> bool {
    let mut local = true;
    c.visit_fields(&mut |f| {
        local &= match f {
            FieldExpr::Attribute(a) => {
                !a.parent && matches!(a.scope, AttrScope::Span | AttrScope::Resource | AttrScope::Unscoped)
            }
            FieldExpr::Intrinsic(i) => matches!(
                i,
                Intrinsic::Duration
                    | Intrinsic::Name
                    | Intrinsic::Status
                    | Intrinsic::StatusMessage
                    | Intrinsic::Kind
                    | Intrinsic::SpanId
                    | Intrinsic::TraceId
            ),
            _ => false,
        };
    });
    local
}

#[cfg(test)]
mod tests {
    use tracehouse_traceql::compile;

    use super::*;

    fn filter(q: &str) -> Option<String> {
        necessary_filter(&compile(q).expect("query")).map(|c| format!("{c}"))
    }

    #[test]
    fn conditions_every_match_needs() {
        assert_eq!(filter("{ }"), None);
        assert!(filter(r#"{ resource.service.name = "a" && duration > 5ms }"#).is_some());
        assert!(filter("{ kind = server } > { status = error }").is_some_and(|c| c.contains("error")));
        assert!(filter("{ status = error } | count() > 2").is_some());
        assert!(filter("{ status = error } || { kind = client }").is_some_and(|c| c.contains("||")));
        assert_eq!(filter("{ status = error } !> { kind = client }"), None);
        assert_eq!(filter(r#"{ trace:rootService = "a" }"#), None);
        let part = filter(r#"{ trace:rootService = "a" && status = error }"#);
        assert!(part.is_some_and(|c| c.contains("error") && !c.contains("root")));
        assert_eq!(filter(r#"{ trace:rootService = "a" || status = error }"#), None);
        assert_eq!(filter(r#"{ parent.x = "a" }"#), None);
        assert_eq!(filter("{ status = error } || { }"), None);
        let by = filter("{ kind = server } | by(resource.service.name) | avg(duration) > 100ms");
        assert!(by.is_some_and(|c| c.contains("server") && c.contains("duration")));
        assert!(filter("{ } | max(duration) > 1s").is_some_and(|c| c.contains("duration")));
        assert!(filter("{ } | min(duration) <= 1s").is_some_and(|c| c.contains("duration <=")));
        assert_eq!(filter("{ } | sum(duration) > 1s"), None);
        assert_eq!(filter("{ } | avg(duration) = 1s"), None);
        let structural = filter("{ kind = server } > { status = error } | avg(duration) > 1s");
        assert!(structural.is_some_and(|c| !c.contains("duration")));
    }
}
