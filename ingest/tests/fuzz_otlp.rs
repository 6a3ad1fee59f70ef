//! Fuzzing OTLP decoding (proptest): random bytes, and valid requests with bytes flipped, cut
//! or inserted, as protobuf and JSON, plain and gzipped, go through the receivers' decoding
//! path (`decode_body`, `parse_request`, `request_to_batch`). Nothing may panic; a body
//! either decodes into a valid spans batch or is an error. Cases: `PROPTEST_CASES`.

use std::io::Write;

use proptest::prelude::*;
use prost::Message;
use tracehouse_ingest::otlp::{BodyFormat, decode_body, parse_request, request_to_batch};

const LIMIT_BYTES: usize = 1 << 20;

fn valid_request() -> Vec<u8> {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    let attr = |k: &str, v: Value| KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    };
    let span = Span {
        trace_id: vec![7; 16],
        span_id: vec![9; 8],
        name: "op".into(),
        start_time_unix_nano: 1,
        end_time_unix_nano: 2,
        attributes: vec![
            attr("http.status_code", Value::IntValue(500)),
            attr("k", Value::StringValue("v".into())),
        ],
        ..Default::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![
                    span.clone(),
                    Span {
                        span_id: vec![8; 8],
                        ..span
                    },
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

const VALID_JSON: &[u8] = br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"07070707070707070707070707070707","spanId":"0909090909090909","name":"op","startTimeUnixNano":"1","endTimeUnixNano":"2","attributes":[{"key":"k","value":{"intValue":"5"}}]}]}]}]}"#;

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// Decodes like the receivers do; panics only if decoding panics.
fn decode(body: &[u8], gzipped: bool, format: BodyFormat) {
    let Ok(body) = decode_body(body, gzipped.then_some("gzip"), LIMIT_BYTES) else {
        return;
    };
    if let Ok(request) = parse_request(&body, format)
        && let Ok(batch) = request_to_batch(&request)
    {
        assert!(batch.num_rows() <= body.len());
    }
}

fn mutated(base: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = base.len();
    prop::collection::vec((0..len.max(1), any::<u8>(), 0u8..3), 1..8).prop_map(move |edits| {
        let mut b = base.clone();
        for (at, byte, how) in edits {
            let at = at.min(b.len().saturating_sub(1));
            match how {
                0 if !b.is_empty() => b[at] = byte,
                1 => b.insert(at, byte),
                _ => b.truncate(at),
            }
        }
        b
    })
}

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512), gzipped in any::<bool>()) {
        decode(&bytes, gzipped, BodyFormat::Protobuf);
        decode(&bytes, gzipped, BodyFormat::Json);
    }

    #[test]
    fn mutated_protobuf_never_panics(body in mutated(valid_request()), zip in any::<bool>()) {
        let body = if zip { gzip(&body) } else { body };
        decode(&body, zip, BodyFormat::Protobuf);
    }

    #[test]
    fn mutated_json_never_panics(body in mutated(VALID_JSON.to_vec())) {
        decode(&body, false, BodyFormat::Json);
    }
}

#[test]
fn the_valid_bodies_decode() {
    let body = decode_body(&gzip(&valid_request()), Some("gzip"), LIMIT_BYTES).unwrap();
    let batch = request_to_batch(&parse_request(&body, BodyFormat::Protobuf).unwrap()).unwrap();
    assert_eq!(batch.num_rows(), 2);
    let batch = request_to_batch(&parse_request(VALID_JSON, BodyFormat::Json).unwrap()).unwrap();
    assert_eq!(batch.num_rows(), 1);
}

#[test]
fn gzip_bombs_stop_at_the_limit() {
    let bomb = gzip(&vec![0u8; LIMIT_BYTES * 8 + 1]);
    assert!(decode_body(&bomb, Some("gzip"), LIMIT_BYTES).is_err());
}
