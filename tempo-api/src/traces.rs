//! Trace by id: `GET /api/traces/<id>` (protobuf `tempopb.Trace` when Accept asks for
//! `application/protobuf`, else Tempo's v1 JSON `{"batches": [...]}`; unknown id 404) and
//! `GET /api/v2/traces/<id>` (`TraceByIDResponse`, protobuf or JSON; unknown id 200 with an
//! empty trace). `start` and `end` (unix seconds) are optional: the warehouse's trace-id index
//! finds the trace without them and only narrows the files with them.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use prost::Message;

use crate::tempopb::{Trace, TraceByIdMetrics, TraceByIdResponse, trace_by_id_response};
use crate::{ApiError, ApiState, ErrorKind, admitted, json, param, tenant};

/// Content type of protobuf responses (and the Accept value that asks for them).
pub const PROTOBUF: &str = "application/protobuf";

/// The trace id of a path segment: 1 to 32 hex digits, as Tempo accepts them.
pub fn trace_id(text: &str) -> Result<u128, ApiError> {
    tracehouse_sql::parse_trace_id(text.trim()).ok_or_else(|| {
        ApiError(
            ErrorKind::InvalidInput,
            format!("invalid trace id {text:?}: expected 1 to 32 hex digits"),
        )
    })
}

/// `start`/`end` (unix seconds) as an inclusive range in unix ns, when both are given.
fn range_of(params: &HashMap<String, String>) -> Result<Option<(i64, i64)>, ApiError> {
    let start: i64 = param(params, "start", 0)?;
    let end: i64 = param(params, "end", 0)?;
    if start <= 0 || end <= 0 {
        return Ok(None);
    }
    if start > end {
        return Err(ApiError(
            ErrorKind::InvalidInput,
            format!("invalid range: start {start} is after end {end}"),
        ));
    }
    Ok(Some((
        start.saturating_mul(1_000_000_000),
        end.saturating_add(1).saturating_mul(1_000_000_000) - 1,
    )))
}

pub(crate) fn wants_protobuf(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains(PROTOBUF))
}

pub(crate) fn protobuf(message: &impl Message) -> Response {
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(PROTOBUF))],
        message.encode_to_vec(),
    )
        .into_response()
}

/// The trace and the bytes of the files read for it; `None` when no span of it is stored.
async fn find(
    state: &ApiState,
    headers: &HeaderMap,
    id: &str,
    params: &HashMap<String, String>,
) -> Result<(Option<Trace>, u64), ApiError> {
    let trace = trace_id(id)?;
    let range = range_of(params)?;
    let tenant = tenant(headers);
    let text = format!("trace {id}");
    let found = admitted(state, &tenant, &text, state.engine.trace_by_id(&tenant, trace, range)).await?;
    let resource_spans = crate::otlp::resource_spans(&found.batches).map_err(|e| ApiError(ErrorKind::Internal, e))?;
    let trace = (!resource_spans.is_empty()).then_some(Trace { resource_spans });
    Ok((trace, found.bytes_inspected))
}

pub async fn v1(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    match find(&state, &headers, &id, &params).await {
        Err(e) => e.into_response(),
        Ok((None, _)) => (StatusCode::NOT_FOUND, format!("trace not found: {id}")).into_response(),
        Ok((Some(trace), _)) if wants_protobuf(&headers) => protobuf(&trace),
        Ok((Some(trace), _)) => {
            // Tempo's v1 JSON names the resource spans `batches` (the field's old name).
            let value = match serde_json::to_value(&trace) {
                Ok(serde_json::Value::Object(mut map)) => {
                    let batches = map.remove("resourceSpans").unwrap_or_else(|| serde_json::json!([]));
                    serde_json::json!({ "batches": batches })
                }
                Ok(other) => other,
                Err(e) => return ApiError(ErrorKind::Internal, e.to_string()).into_response(),
            };
            json(&value)
        }
    }
}

pub async fn v2(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    match find(&state, &headers, &id, &params).await {
        Err(e) => e.into_response(),
        Ok((trace, inspected_bytes)) => {
            let response = TraceByIdResponse {
                trace: Some(trace.unwrap_or_default()),
                metrics: Some(TraceByIdMetrics { inspected_bytes }),
                status: trace_by_id_response::Status::Complete as i32,
                message: String::new(),
            };
            if wants_protobuf(&headers) {
                protobuf(&response)
            } else {
                json(&response)
            }
        }
    }
}
