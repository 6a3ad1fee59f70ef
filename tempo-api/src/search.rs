//! `GET /api/search`: TraceQL (`q`) or the older tag form (`tags`, `minDuration`,
//! `maxDuration`), with `limit` (default 20), `spss` (default 3), `start` and `end` (Unix
//! seconds). The response is Tempo's `SearchResponse` in protobuf JSON: lowerCamel names,
//! 64-bit integers as strings, empty fields omitted.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use tracehouse_sql::search::{HitValue, SearchMetrics, SearchRequest, SpansetHit, TraceHit};
use tracehouse_traceql::ast::{format_duration, write_quoted};

use crate::tempopb::common::v1::{AnyValue, ArrayValue, KeyValue, any_value};
use crate::tempopb::{SearchResponse, ServiceStats, Span, SpanSet, TraceSearchMetadata};
use crate::{ApiError, ApiState, ErrorKind, SearchLimits, admitted, json_listing, param, tenant};

pub const DEFAULT_LIMIT: usize = 20;
/// Tempo's root service name of a trace whose root span has not arrived.
pub const ROOT_SPAN_NOT_YET_RECEIVED: &str = "<root span not yet received>";
pub const DEFAULT_SPSS: usize = 3;
/// Tempo's defaults for `query_frontend.search.max_result_limit` and `max_spans_per_span_set`.
pub const MAX_RESULT_LIMIT: usize = tracehouse_sql::traceql::MAX_SEARCH_LIMIT;
pub const MAX_SPANS_PER_SPAN_SET: usize = 100;

/// The TraceQL query of a request: `q`, or the tag form turned into TraceQL.
pub fn query_of(params: &HashMap<String, String>) -> Result<String, String> {
    if let Some(q) = params.get("q").filter(|q| !q.trim().is_empty()) {
        return Ok(q.clone());
    }
    let mut conds = Vec::new();
    if let Some(tags) = params.get("tags") {
        for pair in logfmt_pairs(tags) {
            let pair = pair.as_str();
            let Some((key, value)) = pair.split_once('=') else {
                return Err(format!("invalid tag {pair:?}: expected key=value"));
            };
            let value = value.trim_matches('"');
            let mut quoted = String::new();
            write_quoted(&mut quoted, value).map_err(|e| e.to_string())?;
            let field = match key {
                "name" => "name".to_string(),
                "status.code" => "status".to_string(),
                _ => {
                    let mut name = String::from(".");
                    write_quoted(&mut name, key).map_err(|e| e.to_string())?;
                    name
                }
            };
            if key == "status.code" {
                conds.push(format!("{field} = {value}"));
            } else {
                conds.push(format!("{field} = {quoted}"));
            }
        }
    }
    for (param, op) in [("minDuration", ">="), ("maxDuration", "<=")] {
        if let Some(d) = params.get(param).filter(|d| !d.is_empty()) {
            let ns = tracehouse_sql::metrics::go_duration_ns(d).ok_or_else(|| format!("invalid {param} {d:?}"))?;
            conds.push(format!("trace:duration {op} {}", format_duration(ns)));
        }
    }
    Ok(if conds.is_empty() {
        "{ }".into()
    } else {
        format!("{{ {} }}", conds.join(" && "))
    })
}

/// `a=b c="d e"` into `a=b`, `c="d e"`: whitespace outside quotes separates pairs.
fn logfmt_pairs(text: &str) -> Vec<String> {
    let (mut out, mut cur, mut quoted) = (Vec::new(), String::new(), false);
    for c in text.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn string_kv(key: String, value: String) -> KeyValue {
    KeyValue {
        key,
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value)),
        }),
        ..Default::default()
    }
}

pub(crate) fn hit_kv(key: &str, v: &HitValue) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(any_value(v)),
        ..Default::default()
    }
}

/// A value as Tempo answers it: nil as the text `nil`, arrays as array values.
fn any_value(v: &HitValue) -> AnyValue {
    let value = match v {
        HitValue::Str(s) => any_value::Value::StringValue(s.clone()),
        HitValue::Int(i) => any_value::Value::IntValue(*i),
        HitValue::Double(d) => any_value::Value::DoubleValue(*d),
        HitValue::Bool(b) => any_value::Value::BoolValue(*b),
        HitValue::Nil => any_value::Value::StringValue("nil".into()),
        HitValue::Array(items) => any_value::Value::ArrayValue(ArrayValue {
            values: items.iter().map(any_value).collect(),
        }),
    };
    AnyValue { value: Some(value) }
}

fn spanset(s: &SpansetHit) -> SpanSet {
    SpanSet {
        spans: s
            .spans
            .iter()
            .map(|sp| Span {
                span_id: sp.span_id.clone(),
                name: sp.name.clone(),
                start_time_unix_nano: u64::try_from(sp.start_unix_nano).unwrap_or(0),
                duration_nanos: u64::try_from(sp.duration_ns).unwrap_or(0),
                attributes: sp
                    .service_name
                    .iter()
                    .map(|svc| string_kv("service.name".into(), svc.clone()))
                    .chain(
                        sp.attributes
                            .iter()
                            .filter(|(k, _)| k != "service.name")
                            .map(|(k, v)| hit_kv(k, v)),
                    )
                    .collect(),
            })
            .collect(),
        matched: u32::try_from(s.matched).unwrap_or(u32::MAX),
        attributes: s.attributes().iter().map(|(k, v)| hit_kv(k, v)).collect(),
    }
}

/// A search hit as Tempo's `TraceSearchMetadata`.
pub fn trace_metadata(t: &TraceHit) -> TraceSearchMetadata {
    let span_sets: Vec<SpanSet> = t.spansets.iter().map(spanset).collect();
    TraceSearchMetadata {
        trace_id: t.trace_id.clone(),
        root_service_name: match t.root_service_name.as_deref() {
            None | Some("") => ROOT_SPAN_NOT_YET_RECEIVED.to_string(),
            Some(name) => name.to_string(),
        },
        root_trace_name: t.root_trace_name.clone().unwrap_or_default(),
        start_time_unix_nano: u64::try_from(t.start_unix_nano).unwrap_or(0),
        duration_ms: u32::try_from(t.duration_ns.max(0) / 1_000_000).unwrap_or(u32::MAX),
        span_set: span_sets.first().cloned(),
        span_sets,
        service_stats: t
            .service_stats
            .iter()
            .map(|s| {
                (
                    s.service_name.clone(),
                    ServiceStats {
                        span_count: u32::try_from(s.span_count).unwrap_or(u32::MAX),
                        error_count: u32::try_from(s.error_count).unwrap_or(u32::MAX),
                    },
                )
            })
            .collect(),
    }
}

pub async fn handler(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    match search(&state, &tenant(&headers), &params).await {
        Ok(body) => json_listing(&body, Some("traces")),
        Err(e) => e.into_response(),
    }
}

/// The engine's search request for Tempo's search parameters.
pub fn request_of(params: &HashMap<String, String>, bounds: SearchLimits) -> Result<SearchRequest, ApiError> {
    let query = query_of(params).map_err(|e| ApiError(ErrorKind::InvalidInput, e))?;
    let (limit, spss) = limits_of(params, bounds)?;
    let start: Option<i64> = params.get("start").map(|_| param(params, "start", 0)).transpose()?;
    let end: Option<i64> = params.get("end").map(|_| param(params, "end", 0)).transpose()?;
    Ok(SearchRequest {
        query,
        limit,
        spss,
        start_unix_nano: start.filter(|s| *s > 0).map(|s| s.saturating_mul(1_000_000_000)),
        end_unix_nano: end
            .filter(|e| *e > 0)
            .map(|e| e.saturating_add(1).saturating_mul(1_000_000_000)),
    })
}

/// `limit` and `spss` as Tempo's frontend takes them: an explicit `limit=0` and a limit over
/// the maximum are refused, `spss` over its maximum too, and `spss=0` asks for every span of
/// a spanset (held to the engine's [`tracehouse_sql::traceql::MAX_SPSS`]).
fn limits_of(params: &HashMap<String, String>, bounds: SearchLimits) -> Result<(usize, usize), ApiError> {
    let bad = |message: String| ApiError(ErrorKind::InvalidInput, message);
    let limit = param(params, "limit", DEFAULT_LIMIT)?;
    if limit == 0 {
        return Err(bad("invalid limit: must be a positive number".into()));
    }
    let max_limit = bounds.max_result_limit;
    if limit > max_limit {
        return Err(bad(format!("limit {limit} exceeds max limit {max_limit}")));
    }
    let spss = param(params, "spss", DEFAULT_SPSS)?;
    let max_spss = bounds.max_spans_per_span_set;
    if spss > max_spss {
        return Err(bad(format!("spans per span set exceeds {max_spss}. received {spss}")));
    }
    let every_span = tracehouse_sql::traceql::MAX_SPSS;
    Ok((limit, if spss == 0 { every_span } else { spss }))
}

/// Tempo's search parameters of a gRPC `SearchRequest` (zero means unset, as in Tempo).
pub fn params_of(r: &crate::tempopb::SearchRequest) -> HashMap<String, String> {
    let mut params = HashMap::new();
    if !r.query.is_empty() {
        params.insert("q".to_string(), r.query.clone());
    }
    if !r.tags.is_empty() {
        let mut tags: Vec<_> = r.tags.iter().collect();
        tags.sort();
        let logfmt: Vec<String> = tags.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
        params.insert("tags".to_string(), logfmt.join(" "));
    }
    for (name, value) in [
        ("limit", r.limit),
        ("spss", r.spans_per_span_set),
        ("start", r.start),
        ("end", r.end),
    ] {
        if value > 0 {
            params.insert(name.to_string(), value.to_string());
        }
    }
    for (name, ms) in [("minDuration", r.min_duration_ms), ("maxDuration", r.max_duration_ms)] {
        if ms > 0 {
            params.insert(name.to_string(), format!("{ms}ms"));
        }
    }
    params
}

/// Runs a search for `tenant`.
pub async fn search(
    state: &ApiState,
    tenant: &str,
    params: &HashMap<String, String>,
) -> Result<SearchResponse, ApiError> {
    let request = request_of(params, state.limits)?;
    state.check_search_range(tenant, &request)?;
    let outcome = admitted(
        state,
        tenant,
        &request.query,
        state.engine.traceql_search(tenant, &request),
    )
    .await?;
    Ok(response_of(&outcome.hits, &outcome.metrics))
}

/// Tempo's `SearchResponse` of `hits` and a search's metrics.
pub fn response_of(hits: &[TraceHit], m: &SearchMetrics) -> SearchResponse {
    let u32_of = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
    SearchResponse {
        metrics: Some(crate::tempopb::SearchMetrics {
            inspected_traces: u32_of(m.inspected_traces),
            inspected_bytes: m.inspected_bytes,
            inspected_spans: m.inspected_spans,
            total_blocks: u32_of(m.total_blocks),
            total_block_bytes: m.total_block_bytes,
            completed_jobs: m.completed_jobs,
            total_jobs: m.total_jobs,
        }),
        traces: hits.iter().map(trace_metadata).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn tag_form_becomes_traceql() {
        assert_eq!(query_of(&params(&[("q", "{ .a = 1 }")])).unwrap(), "{ .a = 1 }");
        assert_eq!(query_of(&params(&[])).unwrap(), "{ }");
        let q = query_of(&params(&[
            ("tags", "service.name=frontend name=\"GET /\" status.code=error"),
            ("minDuration", "100ms"),
            ("maxDuration", "2s"),
        ]))
        .unwrap();
        assert_eq!(
            q,
            r#"{ ."service.name" = "frontend" && name = "GET /" && status = error && trace:duration >= 100ms && trace:duration <= 2s }"#
        );
        tracehouse_traceql::compile(&q).unwrap();
        assert!(query_of(&params(&[("tags", "novalue")])).is_err());
        assert!(query_of(&params(&[("minDuration", "soon")])).is_err());
    }

    #[test]
    fn limits_are_taken_as_tempo_takes_them() {
        let limits = |pairs: &[(&str, &str)]| {
            limits_of(&params(pairs), SearchLimits::default()).map_err(|e| (e.0.http_status(), e.1))
        };
        assert_eq!(limits(&[]), Ok((20, 3)));
        assert_eq!(limits(&[("limit", "100000"), ("spss", "100")]), Ok((100_000, 100)));
        assert_eq!(
            limits(&[("spss", "0")]).map(|l| l.1),
            Ok(tracehouse_sql::traceql::MAX_SPSS)
        );
        assert_eq!(
            limits(&[("limit", "0")]),
            Err((400, "invalid limit: must be a positive number".into()))
        );
        assert_eq!(
            limits(&[("limit", "262145")]),
            Err((400, "limit 262145 exceeds max limit 262144".into()))
        );
        assert_eq!(
            limits(&[("spss", "101")]),
            Err((400, "spans per span set exceeds 100. received 101".into()))
        );
        assert_eq!(limits(&[("limit", "-1")]).map_err(|e| e.0), Err(400));
    }

    #[test]
    fn spanset_attributes_keep_their_types() {
        let hit = SpansetHit {
            label: r#"[["by(span.code)",200],["by(span.flag)",null],["avg(duration)","1.5s"],["avg(span.x)",2.0]]"#
                .into(),
            matched: 1,
            spans: Vec::new(),
        };
        let attrs = spanset(&hit).attributes;
        let kv: Vec<_> = attrs
            .iter()
            .map(|a| (a.key.as_str(), a.value.as_ref().and_then(|v| v.value.clone())))
            .collect();
        use any_value::Value::*;
        assert_eq!(
            kv,
            vec![
                ("by(span.code)", Some(IntValue(200))),
                ("by(span.flag)", Some(StringValue("nil".into()))),
                ("avg(duration)", Some(StringValue("1.5s".into()))),
                ("avg(span.x)", Some(DoubleValue(2.0))),
            ]
        );
    }
}
