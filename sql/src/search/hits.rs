//! Search hits from a search plan's output: rows (sorted by trace, spanset, start) into
//! traces, spansets and spans with the values the query returns, and each trace's per-service
//! span and error counts. Of a lone spanset expression (`{ a }`, `{ a } && { b }`, ...), hits
//! come from its matching rows and the rows of their traces ([`lone_hits`]).

use std::collections::{BTreeMap, HashMap};

use arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use arrow::datatypes::Int64Type;
use tracehouse_traceql::array::{ElementTest, kept_elements};
use tracehouse_traceql::ast::{AttrScope, FieldExpr, Intrinsic, Query};
use tracehouse_traceql::lone_flag;
use tracehouse_traceql::plan::out;

use super::prepared::LoneStep;
use super::{HitValue, ServiceStat, SpanHit, SpansetHit, TraceHit};

/// The columns of a search plan's output that hits are built from, in [`hits_from`]'s order.
pub(crate) const HIT_COLUMNS: [&str; 17] = [
    "trace_id",
    "span_id",
    "name",
    "service_name",
    "start_time_unix_nano",
    "duration_ns",
    out::ROOT_SERVICE,
    out::ROOT_NAME,
    out::TRACE_START,
    out::TRACE_DURATION,
    out::SPANSET,
    out::MATCHED,
    "span_attributes",
    "resource_attributes",
    "status_code",
    "kind",
    "status_message",
];

/// The trace fields of [`HIT_COLUMNS`] (positions 6 to 11): root service and name, start,
/// duration, spanset label and matched count.
pub(crate) const TRACE_FIELDS: &[&str] = HIT_COLUMNS.split_at(6).1.split_at(6).0;

/// Fills `service_stats` of `hits` from their traces' spans (`spans` batches that hold them
/// whole): spans and error spans per service, by service name.
pub(crate) fn add_service_stats(hits: &mut [TraceHit], spans: &[RecordBatch]) {
    let position: HashMap<&str, usize> = hits.iter().enumerate().map(|(i, h)| (h.trace_id.as_str(), i)).collect();
    let mut stats: Vec<BTreeMap<Option<&str>, (u64, u64)>> = vec![BTreeMap::new(); hits.len()];
    for b in spans {
        let text = |name: &str| b.column_by_name(name).and_then(|c| c.as_string_opt::<i32>());
        let (Some(ids), Some(services), Some(status)) = (text("trace_id"), text("service_name"), text("status_code"))
        else {
            continue;
        };
        for row in 0..b.num_rows() {
            let id = ids.is_valid(row).then(|| ids.value(row));
            let Some(&i) = id.and_then(|t| position.get(t)) else {
                continue;
            };
            let service = services.is_valid(row).then(|| services.value(row));
            let entry = stats[i].entry(service).or_default();
            entry.0 += 1;
            entry.1 += u64::from(status.is_valid(row) && status.value(row) == "error");
        }
    }
    for (hit, stats) in hits.iter_mut().zip(stats) {
        hit.service_stats = stats
            .into_iter()
            .map(|(name, (spans, errors))| ServiceStat {
                service_name: name.unwrap_or_default().to_string(),
                span_count: spans,
                error_count: errors,
            })
            .collect();
    }
}

fn opt_str(a: &dyn Array, i: usize) -> Option<String> {
    a.is_valid(i).then(|| a.as_string::<i32>().value(i).to_string())
}

/// The value of `key` in row `row` of an attribute map, typed; of an array, the elements the
/// `tests` keep when some test holds for one ([`kept_elements`]).
fn map_value(map: &dyn Array, row: usize, key: &str, tests: &[ElementTest]) -> Option<HitValue> {
    let map = map.as_map_opt()?;
    if !map.is_valid(row) {
        return None;
    }
    let entries = map.value(row);
    let keys = entries.column(0).as_string::<i32>();
    let values = entries.column(1).as_struct();
    let i = (0..keys.len()).find(|&i| keys.value(i) == key)?;
    let field = |name: &str| values.column_by_name(name).filter(|c| c.is_valid(i));
    if let Some(c) = field("str") {
        return Some(HitValue::Str(c.as_string::<i32>().value(i).to_string()));
    }
    if let Some(c) = field("int") {
        return Some(HitValue::Int(c.as_primitive::<Int64Type>().value(i)));
    }
    if let Some(c) = field("double") {
        return Some(HitValue::Double(
            c.as_primitive::<arrow::datatypes::Float64Type>().value(i),
        ));
    }
    if let Some(c) = field("bool") {
        return Some(HitValue::Bool(c.as_boolean().value(i)));
    }
    if let Some(c) = field("array") {
        let text = c.as_string::<i32>().value(i);
        if let Some(kept) = kept_elements(text, tests) {
            return Some(kept.into());
        }
        return Some(array_value(text).unwrap_or_else(|| HitValue::Str(text.to_string())));
    }
    field("kvlist").map(|c| HitValue::Str(c.as_string::<i32>().value(i).to_string()))
}

/// An array attribute (JSON text) as a typed array value; one of one element is that element,
/// as Tempo shows it.
fn array_value(text: &str) -> Option<HitValue> {
    match tracehouse_traceql::label::json_value(text).map(HitValue::from)? {
        HitValue::Array(mut items) if items.len() == 1 => items.pop(),
        v => Some(v),
    }
}

/// The name of the output column that carries attribute `name` of `scope` from its dedicated
/// column (when it has one, the attribute maps are not read for it).
pub(crate) fn dedicated_name(scope: AttrScope, name: &str) -> String {
    format!("dedicated:{scope:?}:{name}")
}

/// What search shows with each span: the query's [`super::returned_fields`], with the
/// attributes its filters compare `= nil` ([`super::nil_compared`]) and the element tests its
/// filters state on each returned attribute (for arrays, [`ElementTest`]).
pub(crate) struct Shown {
    fields: Vec<FieldExpr>,
    nil_compared: Vec<FieldExpr>,
    /// One entry per field, in the same order.
    element_tests: Vec<Vec<ElementTest>>,
}

impl Shown {
    pub(crate) fn of(query: &Query) -> Self {
        let fields = super::returned_fields(query);
        let mut element_tests: Vec<Vec<ElementTest>> = fields.iter().map(|_| Vec::new()).collect();
        super::visit_spanset_fields(query, &mut |cond, selected| {
            for (f, tests) in fields.iter().zip(&mut element_tests) {
                if !selected && matches!(f, FieldExpr::Attribute(_)) {
                    ElementTest::stated(cond, f, tests);
                }
            }
        });
        Self {
            nil_compared: super::nil_compared(query),
            fields,
            element_tests,
        }
    }
}

/// The values of the fields `shown` for row `row` of a search result batch.
fn returned_values(b: &RecordBatch, row: usize, shown: &Shown) -> Vec<(String, HitValue)> {
    let (span_attrs, resource_attrs) = (b.column(12).as_ref(), b.column(13).as_ref());
    let mut out = Vec::new();
    for (f, tests) in shown.fields.iter().zip(&shown.element_tests) {
        let (name, value) = match f {
            FieldExpr::Attribute(a) => {
                let in_scope = |scope: AttrScope, map: &dyn Array| {
                    let column = b.column_by_name(&dedicated_name(scope, &a.name));
                    match column {
                        Some(c) => opt_str(c.as_ref(), row).map(HitValue::Str),
                        None => map_value(map, row, &a.name, tests),
                    }
                };
                let own = match a.scope {
                    AttrScope::Span | AttrScope::Unscoped => in_scope(AttrScope::Span, span_attrs),
                    AttrScope::Resource => in_scope(AttrScope::Resource, resource_attrs),
                    _ => None,
                };
                // Compared `= nil`, a span lacking it (unscoped: the span itself) shows nil,
                // as in Tempo; otherwise an unscoped attribute falls back to the resource's.
                let value = match own {
                    Some(v) => Some(v),
                    None if shown.nil_compared.contains(f) => Some(HitValue::Nil),
                    None if a.scope == AttrScope::Unscoped => in_scope(AttrScope::Resource, resource_attrs),
                    None => None,
                };
                (a.name.clone(), value)
            }
            FieldExpr::Intrinsic(i) => {
                let (name, col) = match i {
                    Intrinsic::Status => ("status", 14),
                    Intrinsic::Kind => ("kind", 15),
                    _ => ("statusMessage", 16),
                };
                let text = opt_str(b.column(col).as_ref(), row);
                // As in Tempo, a span without a status message has the empty one.
                let text = text.or_else(|| (name == "statusMessage").then(String::new));
                (name.to_string(), text.map(HitValue::Str))
            }
            _ => continue,
        };
        if let Some(v) = value
            && !out.iter().any(|(n, _)| *n == name)
        {
            out.push((name, v));
        }
    }
    out
}

/// Rows (sorted by trace, spanset, start) into traces: the first `limit`.
pub(crate) fn hits_from(batches: &[RecordBatch], fields: &Shown, limit: usize) -> Vec<TraceHit> {
    let mut traces: Vec<TraceHit> = Vec::new();
    for b in batches {
        let c = |i: usize| b.column(i).as_ref();
        for row in 0..b.num_rows() {
            let trace_id = opt_str(c(0), row).unwrap_or_default();
            let new_trace = traces.last().is_none_or(|t| t.trace_id != trace_id);
            if new_trace && traces.len() == limit {
                return traces;
            }
            let label = opt_str(c(10), row).unwrap_or_default();
            let span = span_hit(b, row, fields);
            let matched = c(11).as_primitive::<Int64Type>().value(row).max(0) as u64;
            if new_trace {
                traces.push(TraceHit {
                    trace_id: trace_id.clone(),
                    root_service_name: opt_str(c(6), row),
                    root_trace_name: opt_str(c(7), row),
                    start_unix_nano: c(8).as_primitive::<Int64Type>().value(row),
                    duration_ns: c(9).as_primitive::<Int64Type>().value(row),
                    spansets: Vec::new(),
                    service_stats: Vec::new(),
                });
            }
            let trace = traces.last_mut().expect("pushed above");
            if trace.spansets.last().is_none_or(|s| s.label != label) {
                trace.spansets.push(SpansetHit {
                    label,
                    matched,
                    spans: Vec::new(),
                });
            }
            trace.spansets.last_mut().expect("pushed above").spans.push(span);
        }
    }
    traces
}

/// A trace's start, end, root name and root service, as the search plan's trace fields have
/// them: over its rows in the window, the root being a span without a parent (the greatest
/// value when several are).
#[derive(Default)]
struct TraceFields<'a> {
    start: Option<i64>,
    end: Option<i64>,
    root_name: Option<&'a str>,
    root_service: Option<&'a str>,
}

/// A span a lone step passed: start, span id, batch, row, and the flags of the filters it
/// passes (one bit each).
type Match<'a> = (i64, &'a str, usize, usize, u64);

/// Hits of a lone spanset expression ([`super::prepared::Prepared::lone`]): `rows` are the
/// spans that pass one of its filters (in [`HIT_COLUMNS`]' layout, without the trace fields,
/// then the filters' flags), `spans` their traces' rows in the window (for the trace fields).
/// The same traces, spansets and spans as [`hits_from`] over the search plan's output: the
/// traces whose rows `lone.set` keeps some of, newest first (then by id), the first `limit`;
/// each with one spanset of the rows kept, the `spss` earliest (then by span id).
pub(crate) fn lone_hits(
    rows: &[RecordBatch],
    spans: &[RecordBatch],
    lone: &LoneStep,
    fields: &Shown,
    (spss, limit): (usize, usize),
) -> Vec<TraceHit> {
    let mut matches = lone_matches(rows, lone);
    let info = trace_fields(spans, &matches);
    let mut order: Vec<(&str, &TraceFields)> = info.iter().map(|(id, f)| (*id, f)).collect();
    order.sort_by(|a, b| b.1.start.cmp(&a.1.start).then_with(|| a.0.cmp(b.0)));
    order.truncate(limit);
    let mut hits = Vec::with_capacity(order.len());
    for (id, f) in order {
        let Some(mut found) = matches.remove(id) else {
            continue;
        };
        let matched = found.len() as u64;
        found.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1)));
        found.truncate(spss);
        let (start, end) = (f.start.unwrap_or_default(), f.end.unwrap_or_default());
        hits.push(TraceHit {
            trace_id: id.to_string(),
            root_service_name: f.root_service.map(str::to_string),
            root_trace_name: f.root_name.map(str::to_string),
            start_unix_nano: start,
            duration_ns: end - start,
            spansets: vec![SpansetHit {
                label: String::new(),
                matched,
                spans: found
                    .iter()
                    .map(|&(_, _, i, row, _)| span_hit(&rows[i], row, fields))
                    .collect(),
            }],
            service_stats: Vec::new(),
        });
    }
    hits
}

/// The rows of a lone step's output `rows` per trace, only those its set keeps; traces it
/// keeps none of are left out.
fn lone_matches<'a>(rows: &'a [RecordBatch], lone: &LoneStep) -> HashMap<&'a str, Vec<Match<'a>>> {
    let mut matches: HashMap<&str, Vec<Match>> = HashMap::new();
    for (i, b) in rows.iter().enumerate() {
        let (ids, span_ids) = (b.column(0).as_string::<i32>(), b.column(1).as_string::<i32>());
        let starts = b.column(4).as_primitive::<Int64Type>();
        // (bit, flags of that filter); one filter alone has no flag column: every row passes it.
        let flags: Vec<(usize, BooleanArray)> = match lone.flags {
            0 | 1 => Vec::new(),
            n => (0..n)
                .filter_map(|f| Some((f, b.column_by_name(&lone_flag(f))?.as_boolean().clone())))
                .collect(),
        };
        for row in 0..b.num_rows() {
            let span = if span_ids.is_valid(row) {
                span_ids.value(row)
            } else {
                ""
            };
            let mask = match lone.flags {
                0 | 1 => 1,
                _ => (flags.iter())
                    .filter(|(_, f)| f.value(row))
                    .fold(0u64, |m, (bit, _)| m | 1 << bit),
            };
            let entry = (starts.value(row), span, i, row, mask);
            matches.entry(ids.value(row)).or_default().push(entry);
        }
    }
    matches.retain(|_, found| {
        let present = found.iter().fold(0, |m, f| m | f.4);
        let kept = lone.set.kept(present);
        found.retain(|f| f.4 & kept != 0);
        !found.is_empty()
    });
    matches
}

/// The [`TraceFields`] of the traces of `matches`, from their rows `spans`.
fn trace_fields<'a, T>(spans: &'a [RecordBatch], matches: &HashMap<&str, T>) -> HashMap<&'a str, TraceFields<'a>> {
    let mut out: HashMap<&'a str, TraceFields<'a>> = HashMap::with_capacity(matches.len());
    for b in spans {
        let text = |name: &str| b.column_by_name(name).and_then(|c| c.as_string_opt::<i32>());
        let int = |name: &str| b.column_by_name(name).and_then(|c| c.as_primitive_opt::<Int64Type>());
        let (Some(ids), Some(parents), Some(names), Some(services)) = (
            text("trace_id"),
            text("parent_span_id"),
            text("name"),
            text("service_name"),
        ) else {
            continue;
        };
        let (Some(starts), Some(ends)) = (int("start_time_unix_nano"), int("end_time_unix_nano")) else {
            continue;
        };
        for row in 0..b.num_rows() {
            let id = ids.value(row);
            if !matches.contains_key(id) {
                continue;
            }
            let f = out.entry(id).or_default();
            f.start = Some(f.start.map_or(starts.value(row), |s| s.min(starts.value(row))));
            f.end = Some(f.end.map_or(ends.value(row), |e| e.max(ends.value(row))));
            if parents.is_null(row) {
                let greater = |now: Option<&'a str>, a: &'a arrow::array::StringArray| {
                    let v = a.is_valid(row).then(|| a.value(row));
                    now.max(v)
                };
                f.root_name = greater(f.root_name, names);
                f.root_service = greater(f.root_service, services);
            }
        }
    }
    out
}

/// The span of row `row` of a search result batch.
fn span_hit(b: &RecordBatch, row: usize, fields: &Shown) -> SpanHit {
    let c = |i: usize| b.column(i).as_ref();
    SpanHit {
        span_id: opt_str(c(1), row).unwrap_or_default(),
        name: opt_str(c(2), row).unwrap_or_default(),
        service_name: opt_str(c(3), row),
        start_unix_nano: c(4).as_primitive::<Int64Type>().value(row),
        duration_ns: c(5).as_primitive::<Int64Type>().value(row),
        attributes: returned_values(b, row, fields),
    }
}
