//! The candidate step of a search: a condition on single spans that every matching trace has a
//! span for, read first over only the columns it needs, so the whole rows are read only for the
//! traces that pass it.
//!
//! From a filter `{ c }` it is `c`, or the part of it that reads the span's own row alone (its
//! conjuncts that do); from `A && B`, `A > B`, `A >> B` (and the other
//! non-negated structural operators) that of either side; from `A || B` the disjunction of
//! both sides'; from a pipeline that of its first spanset. Only conditions on the span's own
//! columns count (no trace-level intrinsics, parent, events, links or nested-set values), and
//! a condition that holds for every span (`{ }`) is no help. A search skips the step when the
//! condition reads the attribute maps (they cost about what the whole rows do), and for the
//! ranges left once one range finds candidates dense (more than one per 256 spans).

use tracehouse_traceql::ast::{
    AttrScope, BinOp, FieldExpr, Intrinsic, Query, Root, SpansetExpr, SpansetOp, Stage, Static,
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
            Some(Stage::Spanset(first)) => of(first),
            _ => None,
        },
    }
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
    }
}
