//! Zipkin's span formats into OTLP export requests: v2 JSON (decoded by the `zipkin-types`
//! crate), v2 protobuf (`zipkin.proto3.ListOfSpans`, generated and checked in) and v1 JSON
//! (annotations and binary annotations, turned into v2 spans as Zipkin's own converter does),
//! mapped as the OpenTelemetry Collector's Zipkin translator maps them: the local endpoint's
//! service is the resource, tags attributes, annotations events, the remote endpoint
//! `peer.service` / `net.peer.ip` / `net.peer.port`, and `error`, `otel.status_code` the status.

use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::span::{Event, SpanKind};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{Span, Status};
use prost::Message;
use zipkin_types::{Annotation, Endpoint, Kind, SpanId, TraceId};

use crate::conventions::{Grouper, kv, status_code_named, string_kv, take_scope, take_str, take_trace_state};
use crate::{Error, Result};

/// Zipkin's proto3 messages (generated).
#[allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub)]
#[rustfmt::skip]
#[path = "generated/zipkin.proto3.rs"]
pub mod proto;

mod v1;

/// The span formats of Zipkin's HTTP API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZipkinFormat {
    /// `POST /api/v2/spans`, `application/json`.
    V2Json,
    /// `POST /api/v2/spans`, `application/x-protobuf`.
    V2Proto,
    /// `POST /api/v1/spans`, `application/json`.
    V1Json,
}

impl ZipkinFormat {
    /// The format of a body posted to `/api/v1/spans` (`v1`) or `/api/v2/spans` with
    /// `content_type`.
    pub fn from_request(v1: bool, content_type: &str) -> Result<Self> {
        let mime = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        match (v1, mime.as_str()) {
            (false, "application/json" | "") => Ok(Self::V2Json),
            (false, "application/x-protobuf" | "application/protobuf") => Ok(Self::V2Proto),
            (true, "application/json" | "") => Ok(Self::V1Json),
            _ => Err(Error::UnsupportedContentType(content_type.to_string())),
        }
    }
}

/// How tags are read.
#[derive(Debug, Clone, Copy, Default)]
pub struct ZipkinOptions {
    /// Tags that read as an integer, a float or a boolean become attributes of that type
    /// (the Collector's `parse_string_tags`); otherwise every tag is a string.
    pub parse_string_tags: bool,
}

fn malformed(format: &'static str, e: impl std::fmt::Display) -> Error {
    Error::Malformed {
        format,
        message: e.to_string(),
    }
}

/// A decoded body's spans as an OTLP export request.
pub fn parse(body: &[u8], format: ZipkinFormat, options: ZipkinOptions) -> Result<ExportTraceServiceRequest> {
    let spans = match format {
        ZipkinFormat::V2Json => {
            serde_json::from_slice::<Vec<zipkin_types::Span>>(body).map_err(|e| malformed("zipkin json", e))?
        }
        ZipkinFormat::V2Proto => {
            let list = proto::ListOfSpans::decode(body).map_err(|e| malformed("zipkin protobuf", e))?;
            list.spans.into_iter().map(proto_span).collect::<Result<_>>()?
        }
        ZipkinFormat::V1Json => v1::parse(body)?,
    };
    spans_to_request(spans, options)
}

fn trace_id(bytes: &[u8]) -> Result<TraceId> {
    match bytes.len() {
        8 => Ok(TraceId::from(<[u8; 8]>::try_from(bytes).expect("8 bytes"))),
        16 => Ok(TraceId::from(<[u8; 16]>::try_from(bytes).expect("16 bytes"))),
        n => Err(malformed(
            "zipkin protobuf",
            format!("trace id of {n} bytes; want 8 or 16"),
        )),
    }
}

fn span_id(bytes: &[u8]) -> Result<SpanId> {
    <[u8; 8]>::try_from(bytes)
        .map(SpanId::from)
        .map_err(|_| malformed("zipkin protobuf", format!("span id of {} bytes; want 8", bytes.len())))
}

fn micros(m: u64) -> SystemTime {
    UNIX_EPOCH + std::time::Duration::from_micros(m)
}

fn proto_endpoint(e: &proto::Endpoint) -> Endpoint {
    let mut b = Endpoint::builder();
    if !e.service_name.is_empty() {
        b.service_name(&e.service_name);
    }
    if let Ok(ip) = <[u8; 4]>::try_from(e.ipv4.as_slice()) {
        b.ipv4(ip.into());
    }
    if let Ok(ip) = <[u8; 16]>::try_from(e.ipv6.as_slice()) {
        b.ipv6(ip.into());
    }
    if let Ok(port) = u16::try_from(e.port)
        && port > 0
    {
        b.port(port);
    }
    b.build()
}

fn proto_span(s: proto::Span) -> Result<zipkin_types::Span> {
    let mut b = zipkin_types::Span::builder();
    b.trace_id(trace_id(&s.trace_id)?).id(span_id(&s.id)?).name(&s.name);
    if !s.parent_id.is_empty() {
        b.parent_id(span_id(&s.parent_id)?);
    }
    match proto::span::Kind::try_from(s.kind) {
        Ok(proto::span::Kind::Client) => b.kind(Kind::Client),
        Ok(proto::span::Kind::Server) => b.kind(Kind::Server),
        Ok(proto::span::Kind::Producer) => b.kind(Kind::Producer),
        Ok(proto::span::Kind::Consumer) => b.kind(Kind::Consumer),
        _ => &mut b,
    };
    if s.timestamp != 0 {
        b.timestamp(micros(s.timestamp));
    }
    if s.duration != 0 {
        b.duration(std::time::Duration::from_micros(s.duration));
    }
    if let Some(e) = &s.local_endpoint {
        b.local_endpoint(proto_endpoint(e));
    }
    if let Some(e) = &s.remote_endpoint {
        b.remote_endpoint(proto_endpoint(e));
    }
    b.annotations(
        s.annotations
            .iter()
            .map(|a| Annotation::new(micros(a.timestamp), &a.value)),
    );
    b.tags(s.tags);
    b.debug(s.debug).shared(s.shared);
    Ok(b.build())
}

fn nanos(t: SystemTime, what: &str) -> Result<u64> {
    t.duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|d| u64::try_from(d.as_nanos()).ok())
        .ok_or_else(|| Error::InvalidSpan(format!("{what} is out of range")))
}

/// A tag's value: typed when `parse` and it reads as one.
fn tag_value(value: String, parse: bool) -> any_value::Value {
    if parse {
        if let Ok(i) = value.parse::<i64>() {
            return any_value::Value::IntValue(i);
        }
        if let Ok(f) = value.parse::<f64>()
            && f.is_finite()
        {
            return any_value::Value::DoubleValue(f);
        }
        if let Ok(b) = value.parse::<bool>() {
            return any_value::Value::BoolValue(b);
        }
    }
    any_value::Value::StringValue(value)
}

/// The endpoint's address as attributes `{prefix}.ip` and `{prefix}.port`.
fn endpoint_attrs(attrs: &mut Vec<KeyValue>, e: &Endpoint, prefix: &str) {
    if let Some(ip) = e
        .ipv4()
        .map(std::net::IpAddr::from)
        .or(e.ipv6().map(std::net::IpAddr::from))
    {
        attrs.push(string_kv(&format!("{prefix}.ip"), &ip.to_string()));
    }
    if let Some(port) = e.port() {
        attrs.push(kv(
            &format!("{prefix}.port"),
            any_value::Value::IntValue(i64::from(port)),
        ));
    }
}

/// Zipkin's status: `otel.status_code` (with `otel.status_description`), and `error` (any
/// value) for an error, taken out when it says just `true`; otherwise its value, the error's
/// description in Zipkin's convention (and OpenTelemetry's Zipkin exporters'), is also the
/// status message when no `otel.status_description` gave one.
fn status(attrs: &mut Vec<KeyValue>) -> Status {
    let mut status = Status::default();
    if let Some(name) = take_str(attrs, "otel.status_code") {
        status.code = status_code_named(&name) as i32;
        status.message = take_str(attrs, "otel.status_description").unwrap_or_default();
    }
    let Some(at) = attrs.iter().position(|kv| kv.key == "error") else {
        return status;
    };
    status.code = StatusCode::Error as i32;
    match attrs[at].value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) if s == "true" => drop(attrs.remove(at)),
        Some(any_value::Value::BoolValue(true)) => drop(attrs.remove(at)),
        Some(any_value::Value::StringValue(text)) if status.message.is_empty() => status.message = text.clone(),
        _ => {}
    }
    status
}

/// An annotation as an event: OpenTelemetry's Zipkin exporters write an event as
/// `{"NAME": {ATTRIBUTES}}`; any other value is the event's name.
fn annotation_event(value: &str) -> (String, Vec<KeyValue>) {
    let plain = || (value.to_string(), Vec::new());
    if !value.starts_with('{') {
        return plain();
    }
    let Ok(serde_json::Value::Object(outer)) = serde_json::from_str::<serde_json::Value>(value) else {
        return plain();
    };
    let mut entries = outer.into_iter();
    let (Some((name, serde_json::Value::Object(attrs))), None) = (entries.next(), entries.next()) else {
        return plain();
    };
    let attributes = attrs.into_iter().map(|(k, v)| kv(&k, json_value(v))).collect();
    (name, attributes)
}

fn json_value(v: serde_json::Value) -> any_value::Value {
    match v {
        serde_json::Value::String(s) => any_value::Value::StringValue(s),
        serde_json::Value::Bool(b) => any_value::Value::BoolValue(b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => any_value::Value::IntValue(i),
            None => any_value::Value::DoubleValue(n.as_f64().unwrap_or(0.0)),
        },
        other => any_value::Value::StringValue(other.to_string()),
    }
}

fn kind(k: Option<Kind>, attrs: &mut Vec<KeyValue>) -> SpanKind {
    match k {
        Some(Kind::Client) => SpanKind::Client,
        Some(Kind::Server) => SpanKind::Server,
        Some(Kind::Producer) => SpanKind::Producer,
        Some(Kind::Consumer) => SpanKind::Consumer,
        _ => match take_str(attrs, "span.kind").as_deref() {
            Some("internal") => SpanKind::Internal,
            _ => SpanKind::Unspecified,
        },
    }
}

fn span(s: zipkin_types::Span, options: ZipkinOptions) -> Result<(crate::conventions::ScopeKey, Span)> {
    let mut tags: Vec<(String, String)> = s.tags().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    tags.sort_unstable();
    let mut attrs: Vec<KeyValue> = (tags.into_iter())
        .map(|(k, v)| KeyValue {
            key: k,
            value: Some(opentelemetry_proto::tonic::common::v1::AnyValue {
                value: Some(tag_value(v, options.parse_string_tags)),
            }),
            ..KeyValue::default()
        })
        .collect();
    let kind = kind(s.kind(), &mut attrs);
    let scope = take_scope(&mut attrs);
    let trace_state = take_trace_state(&mut attrs);
    let status = status(&mut attrs);
    if let Some(e) = s.local_endpoint() {
        endpoint_attrs(&mut attrs, e, "net.host");
    }
    if let Some(e) = s.remote_endpoint() {
        if let Some(service) = e.service_name() {
            attrs.push(string_kv("peer.service", service));
        }
        endpoint_attrs(&mut attrs, e, "net.peer");
    }
    let start = s.timestamp().map_or(Ok(0), |t| nanos(t, "timestamp"))?;
    let duration = s.duration().map_or(Ok(0), |d| {
        u64::try_from(d.as_nanos()).map_err(|_| Error::InvalidSpan("duration is out of range".into()))
    })?;
    let mut trace_id = s.trace_id().bytes().to_vec();
    if trace_id.len() == 8 {
        trace_id.splice(0..0, [0u8; 8]);
    }
    let events = (s.annotations().iter())
        .map(|a| {
            let (name, attributes) = annotation_event(a.value());
            Ok(Event {
                time_unix_nano: nanos(a.timestamp(), "annotation timestamp")?,
                name,
                attributes,
                dropped_attributes_count: 0,
            })
        })
        .collect::<Result<_>>()?;
    let span = Span {
        trace_id,
        span_id: s.id().bytes().to_vec(),
        trace_state,
        parent_span_id: s.parent_id().map(|p| p.bytes().to_vec()).unwrap_or_default(),
        name: s.name().unwrap_or_default().to_string(),
        kind: kind as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: start
            .checked_add(duration)
            .ok_or_else(|| Error::InvalidSpan("timestamp plus duration is out of range".into()))?,
        attributes: attrs,
        events,
        status: Some(status),
        ..Span::default()
    };
    Ok((scope, span))
}

/// Spans as an OTLP export request, one resource per local service.
pub fn spans_to_request(spans: Vec<zipkin_types::Span>, options: ZipkinOptions) -> Result<ExportTraceServiceRequest> {
    let mut grouper = Grouper::default();
    for s in spans {
        let service = (s.local_endpoint())
            .and_then(|e| e.service_name())
            .unwrap_or_default()
            .to_string();
        let (scope, span) = span(s, options)?;
        let resource = || match service.is_empty() {
            true => Vec::new(),
            false => vec![string_kv("service.name", &service)],
        };
        grouper.push(&service, resource, scope, span)?;
    }
    Ok(grouper.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    const V2: &str = r#"[{"traceId":"5b8efff798038103d269b633813fc60c","id":"eee19b7ec3c1b174","parentId":"eee19b7ec3c1b173",
      "name":"get /cart","kind":"SERVER","timestamp":1544712660000000,"duration":1000,
      "localEndpoint":{"serviceName":"frontend","ipv4":"10.0.0.1","port":8080},
      "remoteEndpoint":{"serviceName":"browser","ipv4":"10.0.0.2"},
      "annotations":[{"timestamp":1544712660000100,"value":"{\"retry\": {\"attempt\": 2}}"},
                     {"timestamp":1544712660000200,"value":"ws"}],
      "tags":{"http.status_code":"500","otel.status_code":"ERROR","otel.status_description":"boom",
              "error":"true","otel.library.name":"lib"}}]"#;

    fn value(kvs: &[KeyValue], key: &str) -> Option<any_value::Value> {
        kvs.iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.clone()?.value)
    }

    #[test]
    fn v2_json_maps_as_the_collector_maps_it() {
        let options = ZipkinOptions {
            parse_string_tags: true,
        };
        let request = parse(V2.as_bytes(), ZipkinFormat::V2Json, options).unwrap();
        let rs = &request.resource_spans[0];
        let resource = &rs.resource.as_ref().unwrap().attributes;
        assert_eq!(
            value(resource, "service.name"),
            Some(any_value::Value::StringValue("frontend".into()))
        );
        assert_eq!(rs.scope_spans[0].scope.as_ref().unwrap().name, "lib");
        let span = &rs.scope_spans[0].spans[0];
        assert_eq!(span.kind, SpanKind::Server as i32);
        let status = span.status.as_ref().unwrap();
        assert_eq!(
            (status.code, status.message.as_str()),
            (StatusCode::Error as i32, "boom")
        );
        assert_eq!(
            value(&span.attributes, "http.status_code"),
            Some(any_value::Value::IntValue(500))
        );
        assert_eq!(
            value(&span.attributes, "peer.service"),
            Some(any_value::Value::StringValue("browser".into()))
        );
        assert_eq!(
            value(&span.attributes, "net.host.port"),
            Some(any_value::Value::IntValue(8080))
        );
        assert!(value(&span.attributes, "error").is_none(), "error=true is taken out");
        assert_eq!(span.events[0].name, "retry");
        assert_eq!(
            value(&span.events[0].attributes, "attempt"),
            Some(any_value::Value::IntValue(2))
        );
        assert_eq!(span.events[1].name, "ws");
        assert_eq!(span.end_time_unix_nano - span.start_time_unix_nano, 1_000_000);
        let strings = parse(V2.as_bytes(), ZipkinFormat::V2Json, ZipkinOptions::default()).unwrap();
        let span = &strings.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(
            value(&span.attributes, "http.status_code"),
            Some(any_value::Value::StringValue("500".into()))
        );
    }

    #[test]
    fn v1_json_becomes_client_and_shared_server_spans() {
        let v1 = r#"[{"traceId":"5b8efff798038103","id":"eee19b7ec3c1b174","name":"get",
          "annotations":[{"timestamp":10,"value":"cs","endpoint":{"serviceName":"web"}},
                         {"timestamp":20,"value":"sr","endpoint":{"serviceName":"api"}},
                         {"timestamp":30,"value":"ss","endpoint":{"serviceName":"api"}},
                         {"timestamp":40,"value":"cr","endpoint":{"serviceName":"web"}}],
          "binaryAnnotations":[{"key":"http.path","value":"/a","endpoint":{"serviceName":"api"}},
                               {"key":"sa","value":true,"endpoint":{"serviceName":"api","ipv4":"10.0.0.9"}}]}]"#;
        let request = parse(v1.as_bytes(), ZipkinFormat::V1Json, ZipkinOptions::default()).unwrap();
        assert_eq!(request.resource_spans.len(), 2, "one resource per service");
        let web = &request.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(web.kind, SpanKind::Client as i32);
        assert_eq!(web.end_time_unix_nano - web.start_time_unix_nano, 30_000);
        assert_eq!(hex::encode(&web.trace_id), "00000000000000005b8efff798038103");
        assert_eq!(
            value(&web.attributes, "net.peer.ip"),
            Some(any_value::Value::StringValue("10.0.0.9".into()))
        );
        let api = &request.resource_spans[1].scope_spans[0].spans[0];
        assert_eq!(api.kind, SpanKind::Server as i32);
        assert_eq!(api.end_time_unix_nano - api.start_time_unix_nano, 10_000);
    }

    #[test]
    fn protobuf_and_malformed_bodies() {
        let span = proto::Span {
            trace_id: vec![1; 16],
            id: vec![2; 8],
            name: "op".into(),
            kind: proto::span::Kind::Consumer as i32,
            timestamp: 5,
            duration: 7,
            tags: [("k".to_string(), "v".to_string())].into(),
            ..proto::Span::default()
        };
        let body = proto::ListOfSpans { spans: vec![span] }.encode_to_vec();
        let request = parse(&body, ZipkinFormat::V2Proto, ZipkinOptions::default()).unwrap();
        let span = &request.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(
            (span.kind, span.start_time_unix_nano),
            (SpanKind::Consumer as i32, 5_000)
        );
        let bad_id = proto::ListOfSpans {
            spans: vec![proto::Span {
                trace_id: vec![1; 3],
                ..proto::Span::default()
            }],
        };
        assert!(parse(&bad_id.encode_to_vec(), ZipkinFormat::V2Proto, ZipkinOptions::default()).is_err());
        for (body, format) in [
            (&b"[{\"traceId\":5}]"[..], ZipkinFormat::V2Json),
            (b"\x0a\xff\xff", ZipkinFormat::V2Proto),
            (b"{}", ZipkinFormat::V1Json),
        ] {
            let err = parse(body, format, ZipkinOptions::default()).unwrap_err();
            assert!(matches!(err, Error::Malformed { .. }), "{err}");
        }
        assert!(ZipkinFormat::from_request(false, "application/x-thrift").is_err());
    }
}
