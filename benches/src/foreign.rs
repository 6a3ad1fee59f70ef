//! OTLP export requests as a Jaeger or Zipkin client would send them (as the OpenTelemetry
//! SDK's Jaeger and Zipkin exporters write spans), so tracegen's traces can be sent over
//! Jaeger gRPC and Zipkin JSON in the ingest benchmark.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span};
use serde_json::{Map, Value as Json, json};
use tracehouse_ingest::jaeger::api_v2;

const KINDS: [&str; 6] = ["", "internal", "server", "client", "producer", "consumer"];

fn jaeger_tag(kv: &KeyValue) -> api_v2::KeyValue {
    let mut tag = api_v2::KeyValue {
        key: kv.key.clone(),
        ..api_v2::KeyValue::default()
    };
    let value_type = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::BoolValue(b)) => {
            tag.v_bool = *b;
            api_v2::ValueType::Bool
        }
        Some(any_value::Value::IntValue(i)) => {
            tag.v_int64 = *i;
            api_v2::ValueType::Int64
        }
        Some(any_value::Value::DoubleValue(d)) => {
            tag.v_float64 = *d;
            api_v2::ValueType::Float64
        }
        Some(any_value::Value::BytesValue(b)) => {
            tag.v_binary = b.clone();
            api_v2::ValueType::Binary
        }
        other => {
            tag.v_str = other.map(text).unwrap_or_default();
            api_v2::ValueType::String
        }
    };
    tag.v_type = value_type as i32;
    tag
}

fn text(v: &any_value::Value) -> String {
    match v {
        any_value::Value::StringValue(s) => s.clone(),
        any_value::Value::BoolValue(b) => b.to_string(),
        any_value::Value::IntValue(i) => i.to_string(),
        any_value::Value::DoubleValue(d) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn string_tag(key: &str, value: &str) -> api_v2::KeyValue {
    api_v2::KeyValue {
        key: key.to_string(),
        v_str: value.to_string(),
        ..api_v2::KeyValue::default()
    }
}

fn timestamp(ns: u64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: (ns / 1_000_000_000) as i64,
        nanos: (ns % 1_000_000_000) as i32,
    }
}

fn jaeger_span(span: &Span, process: &api_v2::Process) -> api_v2::Span {
    let mut tags: Vec<api_v2::KeyValue> = span.attributes.iter().map(jaeger_tag).collect();
    if let Some(kind) = KINDS.get(span.kind as usize).filter(|k| !k.is_empty()) {
        tags.push(string_tag("span.kind", kind));
    }
    match span.status.as_ref() {
        Some(status) if status.code == 2 => {
            tags.push(string_tag("otel.status_code", "ERROR"));
            tags.push(string_tag("otel.status_description", &status.message));
        }
        Some(status) if status.code == 1 => tags.push(string_tag("otel.status_code", "OK")),
        _ => {}
    }
    let mut references = Vec::new();
    if !span.parent_span_id.is_empty() {
        references.push(api_v2::SpanRef {
            trace_id: span.trace_id.clone(),
            span_id: span.parent_span_id.clone(),
            ref_type: api_v2::SpanRefType::ChildOf as i32,
        });
    }
    references.extend(span.links.iter().map(|l| api_v2::SpanRef {
        trace_id: l.trace_id.clone(),
        span_id: l.span_id.clone(),
        ref_type: api_v2::SpanRefType::FollowsFrom as i32,
    }));
    let duration_ns = span.end_time_unix_nano.saturating_sub(span.start_time_unix_nano);
    api_v2::Span {
        trace_id: span.trace_id.clone(),
        span_id: span.span_id.clone(),
        operation_name: span.name.clone(),
        references,
        start_time: Some(timestamp(span.start_time_unix_nano)),
        duration: Some(prost_types::Duration {
            seconds: (duration_ns / 1_000_000_000) as i64,
            nanos: (duration_ns % 1_000_000_000) as i32,
        }),
        tags,
        logs: (span.events.iter())
            .map(|e| api_v2::Log {
                timestamp: Some(timestamp(e.time_unix_nano)),
                fields: std::iter::once(string_tag("event", &e.name))
                    .chain(e.attributes.iter().map(jaeger_tag))
                    .collect(),
            })
            .collect(),
        process: Some(process.clone()),
        ..api_v2::Span::default()
    }
}

/// The request as one Jaeger `PostSpans` batch whose spans carry their process, as the
/// OpenTelemetry Jaeger gRPC exporter sends them.
pub fn jaeger_batch(request: &ExportTraceServiceRequest) -> api_v2::Batch {
    let mut spans = Vec::new();
    for rs in &request.resource_spans {
        let (service, attrs) = service_and_resource(rs);
        let process = api_v2::Process {
            service_name: service,
            tags: attrs
                .iter()
                .filter(|kv| kv.key != "service.name")
                .map(jaeger_tag)
                .collect(),
        };
        for ss in &rs.scope_spans {
            spans.extend(ss.spans.iter().map(|s| jaeger_span(s, &process)));
        }
    }
    api_v2::Batch { spans, process: None }
}

/// A resource's `service.name`, and all its attributes.
fn service_and_resource(rs: &ResourceSpans) -> (String, &[KeyValue]) {
    let attrs = rs
        .resource
        .as_ref()
        .map(|r| r.attributes.as_slice())
        .unwrap_or_default();
    let service = attrs.iter().find(|kv| kv.key == "service.name");
    let service = service.and_then(|kv| kv.value.as_ref()?.value.as_ref()).map(text);
    (service.unwrap_or_default(), attrs)
}

fn zipkin_span(span: &Span, service: &str, resource: &[KeyValue]) -> Json {
    let mut tags = Map::new();
    for kv in resource
        .iter()
        .filter(|kv| kv.key != "service.name")
        .chain(&span.attributes)
    {
        let value = kv.value.as_ref().and_then(|v: &AnyValue| v.value.as_ref()).map(text);
        tags.insert(kv.key.clone(), Json::String(value.unwrap_or_default()));
    }
    match span.status.as_ref() {
        Some(status) if status.code == 2 => {
            tags.insert("otel.status_code".into(), "ERROR".into());
            tags.insert("error".into(), Json::String(status.message.clone()));
        }
        Some(status) if status.code == 1 => {
            tags.insert("otel.status_code".into(), "OK".into());
        }
        _ => {}
    }
    let mut out = json!({
        "traceId": hex::encode(&span.trace_id),
        "id": hex::encode(&span.span_id),
        "name": span.name,
        "timestamp": span.start_time_unix_nano / 1_000,
        "duration": span.end_time_unix_nano.saturating_sub(span.start_time_unix_nano) / 1_000,
        "localEndpoint": {"serviceName": service},
        "tags": tags,
    });
    if !span.parent_span_id.is_empty() {
        out["parentId"] = hex::encode(&span.parent_span_id).into();
    }
    if let Some(kind) = KINDS
        .get(span.kind as usize)
        .filter(|k| !matches!(**k, "" | "internal"))
    {
        out["kind"] = kind.to_ascii_uppercase().into();
    }
    if !span.events.is_empty() {
        let annotations: Vec<Json> = (span.events.iter())
            .map(|e| json!({"timestamp": e.time_unix_nano / 1_000, "value": e.name}))
            .collect();
        out["annotations"] = annotations.into();
    }
    out
}

/// The request as a Zipkin v2 JSON body, as the OpenTelemetry Zipkin exporter writes it
/// (resource attributes as tags, every tag a string).
pub fn zipkin_json(request: &ExportTraceServiceRequest) -> Vec<u8> {
    let mut spans = Vec::new();
    for rs in &request.resource_spans {
        let (service, attrs) = service_and_resource(rs);
        for ss in &rs.scope_spans {
            spans.extend(ss.spans.iter().map(|s| zipkin_span(s, &service, attrs)));
        }
    }
    serde_json::to_vec(&spans).expect("json")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::tracegen::{TraceGen, TraceGenConfig};
    use tracehouse_ingest::zipkin::{self, ZipkinFormat, ZipkinOptions};

    /// Each span's identity, name, parent, kind and status code.
    fn spans(request: &ExportTraceServiceRequest) -> Spans {
        let all = request
            .resource_spans
            .iter()
            .flat_map(|rs| &rs.scope_spans)
            .flat_map(|ss| &ss.spans);
        all.map(|s| {
            let status = s.status.as_ref().map_or(0, |st| st.code);
            let key = (s.trace_id.clone(), s.span_id.clone());
            (key, (s.name.clone(), s.parent_span_id.clone(), s.kind, status))
        })
        .collect()
    }

    type Spans = BTreeMap<(Vec<u8>, Vec<u8>), (String, Vec<u8>, i32, i32)>;

    /// Asserts `got` is `want`, naming the first span that differs.
    fn same(got: &Spans, want: &Spans, what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: span count");
        let first = want.iter().find(|(k, v)| got.get(*k) != Some(*v));
        if let Some((k, v)) = first {
            panic!("{what}: span {} wants {v:?}, got {:?}", hex::encode(&k.1), got.get(k));
        }
    }

    fn http_failed(s: &Span) -> bool {
        let code = s
            .attributes
            .iter()
            .find(|kv| matches!(kv.key.as_str(), "http.status_code" | "http.response.status_code"));
        match code.and_then(|kv| kv.value.as_ref()?.value.as_ref()) {
            Some(any_value::Value::IntValue(c)) => *c >= 500 || (*c >= 400 && s.kind == 3),
            _ => false,
        }
    }

    #[test]
    fn tracegen_traces_survive_jaeger_and_zipkin_translation() {
        let mut generator = TraceGen::new(TraceGenConfig::default());
        let (request, n) = generator.request(2_000);
        let want = spans(&request);
        assert_eq!(want.len(), n);
        let jaeger = tracehouse_ingest::jaeger::batch_to_request(jaeger_batch(&request)).unwrap();
        // As the Collector's Jaeger translator: an unset status with a failed HTTP status
        // (5xx, or 4xx on a client) is an error.
        let mut failed = want.clone();
        let all = request
            .resource_spans
            .iter()
            .flat_map(|rs| &rs.scope_spans)
            .flat_map(|ss| &ss.spans);
        for s in all.filter(|s| http_failed(s)) {
            let v = failed
                .get_mut(&(s.trace_id.clone(), s.span_id.clone()))
                .expect("listed");
            if v.3 == 0 {
                v.3 = 2;
            }
        }
        same(&spans(&jaeger), &failed, "jaeger grpc");
        let body = zipkin_json(&request);
        let zipkin = zipkin::parse(&body, ZipkinFormat::V2Json, ZipkinOptions::default()).unwrap();
        let mut unkind = want.clone();
        // Zipkin has no internal kind: the exporter leaves it out, and it comes back unspecified.
        unkind.values_mut().filter(|v| v.2 == 1).for_each(|v| v.2 = 0);
        same(&spans(&zipkin), &unkind, "zipkin json");
    }
}
