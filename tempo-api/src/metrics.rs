//! TraceQL metrics: `GET /api/metrics/query_range` and `GET /api/metrics/query` (instant),
//! answering Tempo's `QueryRangeResponse` / `QueryInstantResponse` in protobuf JSON, or
//! protobuf when Accept asks for it, and `tempopb.StreamingQuerier/MetricsQueryRange` and
//! `MetricsQueryInstant`.
//!
//! Parameters as Tempo takes them: the query in `q` (or `query`); `start` and `end` as unix
//! seconds (10 digits or fewer, fractions allowed), unix nanoseconds or RFC 3339, by default
//! `since` (default one hour) before `end` (default now); `step` as seconds or a Go duration,
//! by default Tempo's step for the range (about 240 points). An instant query takes the same
//! `start`, `end` and `since` and answers one value per series over `[start, end]`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use tracehouse_sql::QueryLimits;
use tracehouse_sql::metrics::{
    MetricsLimits, MetricsOutcome, MetricsRequest, default_step_ns, go_duration_ns, seconds_or_duration_ns,
    timestamp_ns,
};

use crate::search::hit_kv;
use crate::tempopb::{
    Exemplar, InstantSeries, PartialStatus, QueryInstantRequest, QueryInstantResponse, QueryRangeRequest,
    QueryRangeResponse, Sample, SearchMetrics, TimeSeries,
};
use crate::traces::{protobuf, wants_protobuf};
use crate::{ApiError, ApiState, ErrorKind, admitted, json_listing, tenant};

/// The range a request without `start` covers, before its end (Tempo's default `since`).
const DEFAULT_SINCE_NS: i64 = 3_600 * SECOND_NS;
const SECOND_NS: i64 = 1_000_000_000;

pub async fn query_range(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let tenant = tenant(&headers);
    let answer = match request_of(&params, now_ns(), state.metrics_limits(&tenant)) {
        Ok(request) => run(&state, &tenant, &request).await,
        Err(e) => Err(e),
    };
    answered(answer, &headers)
}

/// `GET /api/metrics/query`: the query over `[start, end]`, one value per series.
pub async fn query_instant(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let tenant = tenant(&headers);
    let answer = match request_of(&params, now_ns(), state.metrics_limits(&tenant)) {
        Ok(request) => run(&state, &tenant, &instant(request)).await,
        Err(e) => Err(e),
    };
    answered(answer.map(|r| instant_response_of(&r)), &headers)
}

/// An answer in protobuf when Accept asks for it, else protobuf JSON; an error as Tempo's.
fn answered<T: prost::Message + serde::Serialize>(answer: Result<T, ApiError>, headers: &HeaderMap) -> Response {
    match answer {
        Ok(response) if wants_protobuf(headers) => protobuf(&response),
        Ok(response) => json_listing(&response, Some("series")),
        Err(e) => e.into_response(),
    }
}

/// `request` as an instant query: its range is its one step.
fn instant(mut request: MetricsRequest) -> MetricsRequest {
    request.instant = true;
    request.step_ns = request.end_unix_nano - request.start_unix_nano;
    request
}

/// Tempo's instant answer of a range answer over one step: each series' value.
pub fn instant_response_of(range: &QueryRangeResponse) -> QueryInstantResponse {
    QueryInstantResponse {
        series: (range.series.iter())
            .filter_map(|s| {
                Some(InstantSeries {
                    labels: s.labels.clone(),
                    value: s.samples.first()?.value,
                })
            })
            .collect(),
        metrics: range.metrics,
        status: range.status,
        message: range.message.clone(),
    }
}

/// Runs `request` for `tenant`: Tempo's answer, or the error as Tempo's status.
pub async fn run(state: &ApiState, tenant: &str, request: &MetricsRequest) -> Result<QueryRangeResponse, ApiError> {
    let limits = QueryLimits::default();
    let query = state.engine.metrics_query_range(tenant, request, &limits);
    let outcome = admitted(state, tenant, &request.query, query).await?;
    Ok(response_of(&outcome))
}

/// The engine's request for Tempo's query range parameters, `now_ns` standing for now.
pub fn request_of(
    params: &HashMap<String, String>,
    now_ns: i64,
    limits: MetricsLimits,
) -> Result<MetricsRequest, ApiError> {
    let bad = |message: String| ApiError(ErrorKind::InvalidInput, message);
    let get = |name: &str| params.get(name).map(String::as_str).filter(|v| !v.is_empty());
    let query = get("q").or(get("query")).unwrap_or_default().to_string();
    let since = match get("since") {
        Some(v) => go_duration_ns(v).ok_or_else(|| bad(format!("could not parse 'since' parameter {v:?}")))?,
        None => DEFAULT_SINCE_NS,
    };
    let end = match get("end") {
        Some(v) => timestamp_ns(v).ok_or_else(|| bad(format!("could not parse 'end' parameter {v:?}")))?,
        None => now_ns,
    };
    let start = match get("start") {
        Some(v) => timestamp_ns(v).ok_or_else(|| bad(format!("could not parse 'start' parameter {v:?}")))?,
        None => end.min(now_ns).saturating_sub(since),
    };
    if end <= start {
        return Err(bad("invalid range: end must be after start".into()));
    }
    let step_ns = match get("step") {
        Some(v) => seconds_or_duration_ns(v).ok_or_else(|| bad(format!("cannot parse {v:?} to a valid duration")))?,
        None => default_step_ns(end - start),
    };
    if step_ns <= 0 {
        return Err(bad("step must be positive".into()));
    }
    // As Tempo reads it: a number, or the most allowed when absent or not a number.
    let exemplars = get("exemplars").and_then(|v| v.parse::<u32>().ok()).unwrap_or(0);
    Ok(MetricsRequest {
        query,
        start_unix_nano: start,
        end_unix_nano: end,
        step_ns,
        instant: false,
        exemplars,
        limits,
    })
}

/// The engine's request for a gRPC `QueryRangeRequest` (times in ns); `maxSeries` can only
/// narrow the configured limit.
pub fn grpc_request_of(r: &QueryRangeRequest, mut limits: MetricsLimits) -> Result<MetricsRequest, ApiError> {
    let (start, end) = grpc_times(r.start, r.end)?;
    let step = match r.step {
        0 => default_step_ns(end.saturating_sub(start)),
        s => i64::try_from(s).map_err(|_| ApiError(ErrorKind::InvalidInput, "step out of range".into()))?,
    };
    if r.max_series != 0 {
        limits.max_series = limits.max_series.min(r.max_series as usize);
    }
    let request = MetricsRequest {
        query: r.query.clone(),
        start_unix_nano: start,
        end_unix_nano: end,
        step_ns: step,
        instant: false,
        exemplars: r.exemplars,
        limits,
    };
    Ok(match r.instant {
        Some(true) => instant(request),
        _ => request,
    })
}

/// The engine's request for a gRPC `QueryInstantRequest` (times in ns).
pub fn grpc_instant_request_of(r: &QueryInstantRequest, limits: MetricsLimits) -> Result<MetricsRequest, ApiError> {
    let (start, end) = grpc_times(r.start, r.end)?;
    Ok(instant(MetricsRequest {
        query: r.query.clone(),
        start_unix_nano: start,
        end_unix_nano: end,
        step_ns: 0,
        instant: false,
        exemplars: 0,
        limits,
    }))
}

fn grpc_times(start: u64, end: u64) -> Result<(i64, i64), ApiError> {
    let ns = |v: u64| i64::try_from(v).map_err(|_| ApiError(ErrorKind::InvalidInput, "time out of range".into()));
    let (start, end) = (ns(start)?, ns(end)?);
    if end <= start {
        return Err(ApiError(
            ErrorKind::InvalidInput,
            "invalid range: end must be after start".into(),
        ));
    }
    Ok((start, end))
}

/// Tempo's `QueryRangeResponse` of an outcome.
pub fn response_of(outcome: &MetricsOutcome) -> QueryRangeResponse {
    let series = (outcome.series.iter())
        .map(|s| TimeSeries {
            labels: s.labels.iter().map(|(k, v)| hit_kv(k, v)).collect(),
            samples: (s.samples.iter())
                .map(|&(timestamp_ms, value)| Sample { timestamp_ms, value })
                .collect(),
            exemplars: s.exemplars.iter().map(exemplar_of).collect(),
        })
        .collect();
    let (status, message) = match outcome.truncated_at {
        Some(max) => (PartialStatus::Partial, tracehouse_sql::metrics::truncated_message(max)),
        None => (PartialStatus::Complete, String::new()),
    };
    QueryRangeResponse {
        series,
        metrics: Some(SearchMetrics {
            completed_jobs: 1,
            total_jobs: 1,
            ..Default::default()
        }),
        status: status as i32,
        message,
    }
}

/// Tempo's exemplar: the span's ids as labels `trace:id` and `span:id` (hex text), its value
/// and time.
fn exemplar_of(e: &tracehouse_sql::metrics::Exemplar) -> Exemplar {
    use tracehouse_sql::traceql::HitValue;
    let mut labels = vec![hit_kv("trace:id", &HitValue::Str(e.trace_id.clone()))];
    if let Some(span) = &e.span_id {
        labels.push(hit_kv("span:id", &HitValue::Str(span.clone())));
    }
    Exemplar {
        labels,
        value: e.value,
        timestamp_ms: e.timestamp_ms,
    }
}

fn now_ns() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn parameters_are_taken_as_tempo_takes_them() {
        let now = 1_800_000_000 * SECOND_NS;
        let limits = MetricsLimits::default();
        let r = request_of(&params(&[("q", "{ } | rate()")]), now, limits).unwrap();
        assert_eq!((r.start_unix_nano, r.end_unix_nano), (now - 3_600 * SECOND_NS, now));
        assert_eq!(r.step_ns, 15 * SECOND_NS, "an hour in 240 points");
        let r = request_of(
            &params(&[
                ("query", "{ } | rate()"),
                ("start", "1700000000"),
                ("end", "1700000600.5"),
                ("step", "30"),
            ]),
            now,
            limits,
        )
        .unwrap();
        assert_eq!(r.query, "{ } | rate()");
        assert_eq!(r.start_unix_nano, 1_700_000_000 * SECOND_NS);
        assert_eq!(r.end_unix_nano, 1_700_000_600 * SECOND_NS + 500_000_000);
        assert_eq!(r.step_ns, 30 * SECOND_NS);
        let r = request_of(
            &params(&[
                ("start", "2023-11-14T22:13:20Z"),
                ("end", "1700000600000000000"),
                ("step", "1m"),
            ]),
            now,
            limits,
        )
        .unwrap();
        assert_eq!(r.start_unix_nano, 1_700_000_000 * SECOND_NS);
        assert_eq!(r.step_ns, 60 * SECOND_NS);
        for bad in [
            &[("start", "yesterday")][..],
            &[("step", "-5")],
            &[("step", "soon")],
            &[("start", "1700000600"), ("end", "1700000000")],
        ] {
            let e = request_of(&params(bad), now, limits).unwrap_err();
            assert_eq!(e.0, ErrorKind::InvalidInput, "{bad:?}: {}", e.1);
        }
    }
}
