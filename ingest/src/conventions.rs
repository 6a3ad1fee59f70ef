//! What Jaeger and Zipkin spans say with conventional tags where OTLP has fields
//! (`span.kind`, `otel.status_code`, `error`, `otel.scope.name`, `w3c.tracestate`), taken out
//! of the attributes into the span as the OpenTelemetry Collector's translators do; and the
//! grouping of translated spans into OTLP's resource and scope spans.

use std::collections::HashMap;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

use crate::{Error, Result};

/// An attribute.
pub(crate) fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..KeyValue::default()
    }
}

/// A string attribute.
pub(crate) fn string_kv(key: &str, value: &str) -> KeyValue {
    kv(key, any_value::Value::StringValue(value.to_string()))
}

/// Removes the attribute `key` (its first occurrence) and returns its value.
pub(crate) fn take(attrs: &mut Vec<KeyValue>, key: &str) -> Option<any_value::Value> {
    let at = attrs.iter().position(|kv| kv.key == key)?;
    attrs.remove(at).value.and_then(|v| v.value)
}

/// Removes the string attribute `key` and returns it; any other type stays.
pub(crate) fn take_str(attrs: &mut Vec<KeyValue>, key: &str) -> Option<String> {
    let at = attrs.iter().position(|kv| {
        kv.key == key
            && matches!(
                kv.value.as_ref().and_then(|v| v.value.as_ref()),
                Some(any_value::Value::StringValue(_))
            )
    })?;
    match attrs.remove(at).value.and_then(|v| v.value) {
        Some(any_value::Value::StringValue(s)) => Some(s),
        _ => None,
    }
}

/// The value of the attribute `key` (its first occurrence).
pub(crate) fn get<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

/// The span kind a `span.kind` tag names (taken out), else `None`.
pub(crate) fn take_kind(attrs: &mut Vec<KeyValue>) -> Option<SpanKind> {
    let kind = match get(attrs, "span.kind") {
        Some(any_value::Value::StringValue(s)) => match s.to_ascii_lowercase().as_str() {
            "client" => SpanKind::Client,
            "server" => SpanKind::Server,
            "producer" => SpanKind::Producer,
            "consumer" => SpanKind::Consumer,
            "internal" => SpanKind::Internal,
            _ => return None,
        },
        _ => return None,
    };
    take(attrs, "span.kind");
    Some(kind)
}

/// The instrumentation scope `otel.scope.name` / `otel.library.name` (and their versions)
/// name, taken out of the attributes.
pub(crate) fn take_scope(attrs: &mut Vec<KeyValue>) -> ScopeKey {
    // OpenTelemetry's exporters write both names; the newer wins.
    let (library, library_version) = (
        take_str(attrs, "otel.library.name"),
        take_str(attrs, "otel.library.version"),
    );
    let name = take_str(attrs, "otel.scope.name").or(library);
    let version = take_str(attrs, "otel.scope.version").or(library_version);
    (name.unwrap_or_default(), version.unwrap_or_default())
}

/// The W3C trace state a `w3c.tracestate` tag carries, taken out.
pub(crate) fn take_trace_state(attrs: &mut Vec<KeyValue>) -> String {
    take_str(attrs, "w3c.tracestate").unwrap_or_default()
}

/// Whether `http.status_code` marks a failure: 5xx, or 4xx seen by a client.
pub(crate) fn http_status_failed(attrs: &[KeyValue], kind: SpanKind) -> bool {
    let code = match get(attrs, "http.status_code").or_else(|| get(attrs, "http.response.status_code")) {
        Some(any_value::Value::IntValue(i)) => *i,
        Some(any_value::Value::StringValue(s)) => s.parse().unwrap_or(0),
        _ => return false,
    };
    code >= 500 || (code >= 400 && kind == SpanKind::Client)
}

/// `otel.status_code`'s value as an OTLP status code.
pub(crate) fn status_code_named(name: &str) -> StatusCode {
    match name.to_ascii_uppercase().as_str() {
        "OK" => StatusCode::Ok,
        "ERROR" => StatusCode::Error,
        _ => StatusCode::Unset,
    }
}

/// A span's instrumentation scope: name and version.
pub(crate) type ScopeKey = (String, String);

/// Most resources (and scopes in one) a request may group its spans into: one per span at
/// most, so this bounds nothing a request's size does not; it keeps the index honest.
const MAX_GROUPS: usize = 1 << 20;

/// Translated spans grouped by resource, then by scope, into an OTLP export request.
#[derive(Default)]
pub(crate) struct Grouper {
    resources: Vec<ResourceSpans>,
    /// resource key -> (index in `resources`, scope key -> index in its scope spans)
    index: HashMap<String, (usize, HashMap<ScopeKey, usize>)>,
}

impl Grouper {
    /// Adds `span` under the resource `resource_key` names (made by `resource` when new) and
    /// the scope `scope` names.
    pub(crate) fn push(
        &mut self,
        resource_key: &str,
        resource: impl FnOnce() -> Vec<KeyValue>,
        scope: ScopeKey,
        span: Span,
    ) -> Result<()> {
        if !self.index.contains_key(resource_key) {
            if self.resources.len() >= MAX_GROUPS {
                return Err(Error::InvalidSpan("too many resources in one request".into()));
            }
            self.resources.push(ResourceSpans {
                resource: Some(Resource {
                    attributes: resource(),
                    ..Resource::default()
                }),
                ..ResourceSpans::default()
            });
            let entry = (self.resources.len() - 1, HashMap::new());
            self.index.insert(resource_key.to_string(), entry);
        }
        let (at, scopes) = self.index.get_mut(resource_key).expect("inserted above");
        let rs = &mut self.resources[*at];
        let next = rs.scope_spans.len();
        let scope_at = *scopes.entry(scope.clone()).or_insert(next);
        if scope_at == next {
            let (name, version) = scope;
            rs.scope_spans.push(ScopeSpans {
                scope: Some(InstrumentationScope {
                    name,
                    version,
                    ..InstrumentationScope::default()
                }),
                ..ScopeSpans::default()
            });
        }
        rs.scope_spans[scope_at].spans.push(span);
        Ok(())
    }

    /// The export request.
    pub(crate) fn finish(self) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: self.resources,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conventional_tags_come_out_of_the_attributes() {
        let mut attrs = vec![
            string_kv("span.kind", "SERVER"),
            string_kv("otel.library.name", "lib"),
            string_kv("otel.scope.version", "1.2"),
            string_kv("otel.library.version", "1.1"),
            string_kv("w3c.tracestate", "a=b"),
            kv("http.status_code", any_value::Value::IntValue(503)),
        ];
        assert_eq!(take_kind(&mut attrs), Some(SpanKind::Server));
        assert_eq!(take_scope(&mut attrs), ("lib".into(), "1.2".into()));
        assert_eq!(take_trace_state(&mut attrs), "a=b");
        assert!(http_status_failed(&attrs, SpanKind::Server));
        assert_eq!(attrs.len(), 1, "only http.status_code is left");
    }
}
