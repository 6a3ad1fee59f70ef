//! OTLP trace requests into `spans` batches.

use std::io::Read;

use arrow::array::RecordBatch;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message;
use serde_json::Value as Json;
use tracehouse_warehouse::span::{
    Attr, AttrValue, EventRecord, LinkRecord, ScopeRecord, SpanBatchBuilder, SpanKind, SpanRecord, StatusCode,
    validate_ids,
};

use crate::{Error, Result};

/// Body encodings of OTLP/HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    Protobuf,
    Json,
}

impl BodyFormat {
    /// From a `Content-Type` header value.
    pub fn from_content_type(content_type: &str) -> Result<Self> {
        let mime = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        match mime.as_str() {
            "application/x-protobuf" | "application/protobuf" => Ok(Self::Protobuf),
            "application/json" => Ok(Self::Json),
            _ => Err(Error::UnsupportedContentType(content_type.to_string())),
        }
    }
}

/// Undoes `Content-Encoding`, never producing more than `limit_bytes`.
pub fn decode_body(body: &[u8], content_encoding: Option<&str>, limit_bytes: usize) -> Result<Vec<u8>> {
    let encoding = content_encoding.map(|e| e.trim().to_ascii_lowercase());
    match encoding.as_deref() {
        None | Some("") | Some("identity") => {
            if body.len() > limit_bytes {
                return Err(Error::TooLarge { limit_bytes });
            }
            Ok(body.to_vec())
        }
        Some("gzip") => {
            let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(limit_bytes));
            let read = flate2::read::GzDecoder::new(body)
                .take(limit_bytes as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| Error::Malformed {
                    format: "gzip",
                    message: e.to_string(),
                })?;
            if read > limit_bytes {
                return Err(Error::TooLarge { limit_bytes });
            }
            Ok(out)
        }
        Some(other) => Err(Error::UnsupportedEncoding(other.to_string())),
    }
}

/// Parses an export request.
pub fn parse_request(body: &[u8], format: BodyFormat) -> Result<ExportTraceServiceRequest> {
    match format {
        BodyFormat::Protobuf => ExportTraceServiceRequest::decode(body).map_err(|e| Error::Malformed {
            format: "protobuf",
            message: e.to_string(),
        }),
        BodyFormat::Json => serde_json::from_slice(body).map_err(|e| Error::Malformed {
            format: "json",
            message: e.to_string(),
        }),
    }
}

fn any_value_json(value: &AnyValue) -> Json {
    match &value.value {
        None | Some(any_value::Value::StringValueStrindex(_)) => Json::Null,
        Some(any_value::Value::StringValue(s)) => Json::String(s.clone()),
        Some(any_value::Value::BoolValue(b)) => Json::Bool(*b),
        Some(any_value::Value::IntValue(i)) => Json::from(*i),
        Some(any_value::Value::DoubleValue(d)) => serde_json::Number::from_f64(*d).map_or(Json::Null, Json::Number),
        Some(any_value::Value::BytesValue(b)) => Json::String(hex::encode(b)),
        Some(any_value::Value::ArrayValue(a)) => Json::Array(a.values.iter().map(any_value_json).collect()),
        Some(any_value::Value::KvlistValue(kv)) => Json::Object(
            kv.values
                .iter()
                .map(|kv| (kv.key.clone(), kv.value.as_ref().map_or(Json::Null, any_value_json)))
                .collect(),
        ),
    }
}

fn attr_value(value: Option<&AnyValue>) -> AttrValue<'_> {
    match value.and_then(|v| v.value.as_ref()) {
        // String-table indices belong to OTLP profiles; traces never carry them.
        None | Some(any_value::Value::StringValueStrindex(_)) => AttrValue::Empty,
        Some(any_value::Value::StringValue(s)) => AttrValue::Str(s),
        Some(any_value::Value::BoolValue(b)) => AttrValue::Bool(*b),
        Some(any_value::Value::IntValue(i)) => AttrValue::Int(*i),
        Some(any_value::Value::DoubleValue(d)) => AttrValue::Double(*d),
        Some(any_value::Value::BytesValue(b)) => AttrValue::Bytes(b),
        Some(v @ any_value::Value::ArrayValue(_)) => {
            AttrValue::Array(any_value_json(&AnyValue { value: Some(v.clone()) }).to_string())
        }
        Some(v @ any_value::Value::KvlistValue(_)) => {
            AttrValue::KvList(any_value_json(&AnyValue { value: Some(v.clone()) }).to_string())
        }
    }
}

fn attrs(kvs: &[KeyValue]) -> Vec<Attr<'_>> {
    kvs.iter()
        .map(|kv| (kv.key.as_str(), attr_value(kv.value.as_ref())))
        .collect()
}

/// Converts a request into one `spans` batch. Any span with invalid ids rejects the whole
/// request, so nothing of a bad request is stored.
pub fn request_to_batch(request: &ExportTraceServiceRequest) -> Result<RecordBatch> {
    let mut builder = SpanBatchBuilder::new();
    for rs in &request.resource_spans {
        let (resource_attributes, resource_dropped) = rs
            .resource
            .as_ref()
            .map_or((Vec::new(), 0), |r| (attrs(&r.attributes), r.dropped_attributes_count));
        for ss in &rs.scope_spans {
            let scope = ScopeRecord {
                resource_attributes: resource_attributes.clone(),
                resource_dropped_attributes_count: resource_dropped,
                scope_name: ss.scope.as_ref().map_or("", |s| s.name.as_str()),
                scope_version: ss.scope.as_ref().map_or("", |s| s.version.as_str()),
                scope_attributes: ss.scope.as_ref().map_or_else(Vec::new, |s| attrs(&s.attributes)),
            };
            for span in &ss.spans {
                let status = span.status.as_ref();
                let record = SpanRecord {
                    trace_id: &span.trace_id,
                    span_id: &span.span_id,
                    parent_span_id: &span.parent_span_id,
                    trace_state: &span.trace_state,
                    name: &span.name,
                    kind: SpanKind::from_otlp(span.kind),
                    start_time_unix_nano: span.start_time_unix_nano,
                    end_time_unix_nano: span.end_time_unix_nano,
                    status_code: StatusCode::from_otlp(status.map_or(0, |s| s.code)),
                    status_message: status.map_or("", |s| s.message.as_str()),
                    flags: span.flags,
                    attributes: attrs(&span.attributes),
                    dropped_attributes_count: span.dropped_attributes_count,
                    events: span
                        .events
                        .iter()
                        .map(|e| EventRecord {
                            time_unix_nano: e.time_unix_nano,
                            name: &e.name,
                            attributes: attrs(&e.attributes),
                            dropped_attributes_count: e.dropped_attributes_count,
                        })
                        .collect(),
                    dropped_events_count: span.dropped_events_count,
                    links: span
                        .links
                        .iter()
                        .map(|l| LinkRecord {
                            trace_id: &l.trace_id,
                            span_id: &l.span_id,
                            trace_state: &l.trace_state,
                            attributes: attrs(&l.attributes),
                            dropped_attributes_count: l.dropped_attributes_count,
                            flags: l.flags,
                        })
                        .collect(),
                    dropped_links_count: span.dropped_links_count,
                };
                validate_ids(&record).map_err(|e| Error::InvalidSpan(e.to_string()))?;
                builder.append(&scope, &record);
            }
        }
    }
    builder.finish().map_err(|e| Error::Batch(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const JSON: &str = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"checkout"}}]},
      "scopeSpans":[{"scope":{"name":"manual"},"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174",
      "name":"GET /cart","kind":2,"startTimeUnixNano":"1544712660000000000","endTimeUnixNano":"1544712661000000000",
      "attributes":[{"key":"http.status_code","value":{"intValue":"500"}},{"key":"tags","value":{"arrayValue":{"values":[{"stringValue":"a"}]}}}],
      "status":{"code":2,"message":"boom"}}]}]}]}"#;

    #[test]
    fn json_request_keeps_types_and_dedicated_columns() {
        let req = parse_request(JSON.as_bytes(), BodyFormat::Json).unwrap();
        let batch = request_to_batch(&req).unwrap();
        assert_eq!(batch.num_rows(), 1);
        let pretty = arrow::util::pretty::pretty_format_batches(&[batch])
            .unwrap()
            .to_string();
        assert!(pretty.contains("5b8efff798038103d269b633813fc60c"), "{pretty}");
        assert!(pretty.contains("checkout"));
        assert!(
            pretty.contains("| 500 "),
            "http_status_code is an integer column: {pretty}"
        );
        assert!(pretty.contains(r#"["a"]"#), "arrays are kept as json: {pretty}");
        assert!(pretty.contains("2018-12-13"), "partitioned by day: {pretty}");
    }

    #[test]
    fn empty_trace_id_is_rejected() {
        let bad = JSON.replace("5b8efff798038103d269b633813fc60c", "");
        let req = parse_request(bad.as_bytes(), BodyFormat::Json).unwrap();
        let err = request_to_batch(&req).unwrap_err().to_string();
        assert!(err.contains("trace id must be 16 bytes"), "{err}");
    }

    #[test]
    fn gzip_is_bounded() {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(&vec![b'x'; 10_000]).unwrap();
        let gz = enc.finish().unwrap();
        assert_eq!(decode_body(&gz, Some("gzip"), 10_000).unwrap().len(), 10_000);
        assert!(matches!(
            decode_body(&gz, Some("gzip"), 9_999),
            Err(Error::TooLarge { .. })
        ));
        assert!(matches!(
            decode_body(b"x", Some("br"), 10),
            Err(Error::UnsupportedEncoding(_))
        ));
    }
}
