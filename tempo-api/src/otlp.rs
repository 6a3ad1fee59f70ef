//! `spans` rows back into OTLP: one trace's batches as `tempopb.trace.v1.ResourceSpans`,
//! grouped by resource and then by instrumentation scope in order of first appearance, each
//! span once.

use std::collections::{HashMap, HashSet};

use arrow::array::{Array, AsArray, ListArray, MapArray, RecordBatch, StructArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Int32Type, Int64Type};
use serde_json::Value as Json;

use crate::tempopb::common::v1::{AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList, any_value};
use crate::tempopb::resource::v1::Resource;
use crate::tempopb::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span, status};

/// Spans of one trace in OTLP form.
pub fn resource_spans(batches: &[RecordBatch]) -> Result<Vec<ResourceSpans>, String> {
    let mut out: Vec<ResourceSpans> = Vec::new();
    let mut resources: HashMap<String, usize> = HashMap::new();
    let mut scopes: HashMap<(usize, String), usize> = HashMap::new();
    let mut seen: HashSet<(Vec<u8>, u64)> = HashSet::new();
    for batch in batches {
        let cols = Columns::new(batch)?;
        for row in 0..batch.num_rows() {
            let span = cols.span(row)?;
            if !seen.insert((span.span_id.clone(), span.start_time_unix_nano)) {
                continue;
            }
            let resource = Resource {
                attributes: attributes(cols.resource_attributes, row),
                dropped_attributes_count: cols.u32(cols.resource_dropped, row),
                ..Default::default()
            };
            let resource_key = format!("{resource:?}");
            let r = *resources.entry(resource_key).or_insert_with(|| {
                out.push(ResourceSpans {
                    resource: Some(resource),
                    ..Default::default()
                });
                out.len() - 1
            });
            let scope = InstrumentationScope {
                name: cols.text("scope_name", row),
                version: cols.text("scope_version", row),
                attributes: attributes(cols.scope_attributes, row),
                dropped_attributes_count: 0,
            };
            let scope_key = (r, format!("{scope:?}"));
            let s = *scopes.entry(scope_key).or_insert_with(|| {
                out[r].scope_spans.push(ScopeSpans {
                    scope: Some(scope),
                    ..Default::default()
                });
                out[r].scope_spans.len() - 1
            });
            out[r].scope_spans[s].spans.push(span);
        }
    }
    Ok(out)
}

/// The columns of a `spans` batch that OTLP needs, text columns as plain `Utf8`.
struct Columns<'a> {
    batch: &'a RecordBatch,
    texts: HashMap<&'static str, arrow::array::ArrayRef>,
    resource_attributes: &'a MapArray,
    resource_dropped: &'a dyn Array,
    scope_attributes: &'a MapArray,
    span_attributes: &'a MapArray,
    events: &'a ListArray,
    links: &'a ListArray,
}

const TEXT_COLUMNS: [&str; 10] = [
    "trace_id",
    "span_id",
    "parent_span_id",
    "trace_state",
    "name",
    "kind",
    "status_code",
    "status_message",
    "scope_name",
    "scope_version",
];

impl<'a> Columns<'a> {
    fn new(batch: &'a RecordBatch) -> Result<Self, String> {
        let column = |name: &str| {
            batch
                .column_by_name(name)
                .ok_or_else(|| format!("spans batch has no {name} column"))
        };
        let mut texts = HashMap::new();
        for name in TEXT_COLUMNS {
            let c = cast(column(name)?, &DataType::Utf8).map_err(|e| e.to_string())?;
            texts.insert(name, c);
        }
        let map = |name: &str| -> Result<&'a MapArray, String> {
            column(name)?.as_map_opt().ok_or_else(|| format!("{name} is not a map"))
        };
        let list = |name: &str| -> Result<&'a ListArray, String> {
            column(name)?
                .as_list_opt::<i32>()
                .ok_or_else(|| format!("{name} is not a list"))
        };
        Ok(Self {
            batch,
            texts,
            resource_attributes: map("resource_attributes")?,
            resource_dropped: column("resource_dropped_attributes_count")?.as_ref(),
            scope_attributes: map("scope_attributes")?,
            span_attributes: map("span_attributes")?,
            events: list("events")?,
            links: list("links")?,
        })
    }

    fn text(&self, name: &'static str, row: usize) -> String {
        let c = self.texts[name].as_string::<i32>();
        if c.is_valid(row) {
            c.value(row).to_string()
        } else {
            String::new()
        }
    }

    fn int(&self, name: &str, row: usize) -> i64 {
        self.batch
            .column_by_name(name)
            .map(|c| c.as_primitive::<Int64Type>())
            .filter(|c| c.is_valid(row))
            .map_or(0, |c| c.value(row))
    }

    fn u32(&self, column: &dyn Array, row: usize) -> u32 {
        let c = column.as_primitive::<Int32Type>();
        if c.is_valid(row) {
            u32::try_from(c.value(row)).unwrap_or(0)
        } else {
            0
        }
    }

    fn u32_named(&self, name: &str, row: usize) -> u32 {
        self.batch.column_by_name(name).map_or(0, |c| self.u32(c.as_ref(), row))
    }

    fn span(&self, row: usize) -> Result<Span, String> {
        let id = |name: &'static str| -> Result<Vec<u8>, String> {
            let text = self.text(name, row);
            hex::decode(&text).map_err(|e| format!("bad {name} {text:?}: {e}"))
        };
        let events = (self.events.is_valid(row))
            .then(|| self.events.value(row))
            .map(|v| events(v.as_struct()))
            .unwrap_or_default();
        let links = (self.links.is_valid(row))
            .then(|| self.links.value(row))
            .map(|v| links(v.as_struct()))
            .transpose()?
            .unwrap_or_default();
        let status_message = self.text("status_message", row);
        let code = match self.text("status_code", row).as_str() {
            "ok" => status::StatusCode::Ok,
            "error" => status::StatusCode::Error,
            _ => status::StatusCode::Unset,
        };
        Ok(Span {
            trace_id: id("trace_id")?,
            span_id: id("span_id")?,
            trace_state: self.text("trace_state", row),
            parent_span_id: id("parent_span_id")?,
            flags: u32::try_from(self.int("flags", row)).unwrap_or(0),
            name: self.text("name", row),
            kind: span_kind(&self.text("kind", row)) as i32,
            start_time_unix_nano: u64::try_from(self.int("start_time_unix_nano", row)).unwrap_or(0),
            end_time_unix_nano: u64::try_from(self.int("end_time_unix_nano", row)).unwrap_or(0),
            attributes: attributes(self.span_attributes, row),
            dropped_attributes_count: self.u32_named("dropped_attributes_count", row),
            events,
            dropped_events_count: self.u32_named("dropped_events_count", row),
            links,
            dropped_links_count: self.u32_named("dropped_links_count", row),
            status: (code != status::StatusCode::Unset || !status_message.is_empty()).then_some(Status {
                message: status_message,
                code: code as i32,
            }),
        })
    }
}

fn span_kind(kind: &str) -> span::SpanKind {
    match kind {
        "internal" => span::SpanKind::Internal,
        "server" => span::SpanKind::Server,
        "client" => span::SpanKind::Client,
        "producer" => span::SpanKind::Producer,
        "consumer" => span::SpanKind::Consumer,
        _ => span::SpanKind::Unspecified,
    }
}

fn struct_text(s: &StructArray, name: &str, row: usize) -> String {
    s.column_by_name(name)
        .and_then(|c| cast(c, &DataType::Utf8).ok())
        .map(|c| {
            let c = c.as_string::<i32>();
            if c.is_valid(row) {
                c.value(row).to_string()
            } else {
                String::new()
            }
        })
        .unwrap_or_default()
}

fn struct_int(s: &StructArray, name: &str, row: usize) -> i64 {
    s.column_by_name(name)
        .and_then(|c| cast(c, &DataType::Int64).ok())
        .map(|c| {
            let c = c.as_primitive::<Int64Type>();
            if c.is_valid(row) { c.value(row) } else { 0 }
        })
        .unwrap_or(0)
}

fn struct_map<'a>(s: &'a StructArray, name: &str) -> Option<&'a MapArray> {
    s.column_by_name(name).and_then(|c| c.as_map_opt())
}

fn events(s: &StructArray) -> Vec<span::Event> {
    (0..s.len())
        .filter(|&i| s.is_valid(i))
        .map(|i| span::Event {
            time_unix_nano: u64::try_from(struct_int(s, "time_unix_nano", i)).unwrap_or(0),
            name: struct_text(s, "name", i),
            attributes: struct_map(s, "attributes")
                .map(|m| attributes(m, i))
                .unwrap_or_default(),
            dropped_attributes_count: u32::try_from(struct_int(s, "dropped_attributes_count", i)).unwrap_or(0),
        })
        .collect()
}

fn links(s: &StructArray) -> Result<Vec<span::Link>, String> {
    (0..s.len())
        .filter(|&i| s.is_valid(i))
        .map(|i| {
            let id = |name: &str| {
                let text = struct_text(s, name, i);
                hex::decode(&text).map_err(|e| format!("bad link {name} {text:?}: {e}"))
            };
            Ok(span::Link {
                trace_id: id("trace_id")?,
                span_id: id("span_id")?,
                trace_state: struct_text(s, "trace_state", i),
                attributes: struct_map(s, "attributes")
                    .map(|m| attributes(m, i))
                    .unwrap_or_default(),
                dropped_attributes_count: u32::try_from(struct_int(s, "dropped_attributes_count", i)).unwrap_or(0),
                flags: u32::try_from(struct_int(s, "flags", i)).unwrap_or(0),
            })
        })
        .collect()
}

/// Row `row` of an attribute map as OTLP key-values.
fn attributes(map: &MapArray, row: usize) -> Vec<KeyValue> {
    if !map.is_valid(row) {
        return Vec::new();
    }
    let entries = map.value(row);
    let keys = entries.column(0).as_string::<i32>();
    let values = entries.column(1).as_struct();
    (0..entries.len())
        .map(|i| KeyValue {
            key: keys.value(i).to_string(),
            value: Some(AnyValue {
                value: attr_value(values, i),
            }),
            ..Default::default()
        })
        .collect()
}

/// One stored attribute value (a struct with one non-null field) as an OTLP value.
fn attr_value(v: &StructArray, i: usize) -> Option<any_value::Value> {
    if !v.is_valid(i) {
        return None;
    }
    let field = |name: &str| v.column_by_name(name).filter(|c| c.is_valid(i));
    if let Some(c) = field("str") {
        return Some(any_value::Value::StringValue(c.as_string::<i32>().value(i).to_string()));
    }
    if let Some(c) = field("int") {
        return Some(any_value::Value::IntValue(c.as_primitive::<Int64Type>().value(i)));
    }
    if let Some(c) = field("double") {
        return Some(any_value::Value::DoubleValue(
            c.as_primitive::<arrow::datatypes::Float64Type>().value(i),
        ));
    }
    if let Some(c) = field("bool") {
        return Some(any_value::Value::BoolValue(c.as_boolean().value(i)));
    }
    if let Some(c) = field("bytes") {
        return Some(any_value::Value::BytesValue(c.as_binary::<i32>().value(i).to_vec()));
    }
    for name in ["array", "kvlist"] {
        if let Some(c) = field(name) {
            let text = c.as_string::<i32>().value(i);
            return Some(match serde_json::from_str::<Json>(text) {
                Ok(json) => json_value(&json)?,
                Err(_) => any_value::Value::StringValue(text.to_string()),
            });
        }
    }
    None
}

/// A JSON-rendered array or key-value list back into OTLP (bytes inside stay hex text).
fn json_value(json: &Json) -> Option<any_value::Value> {
    Some(match json {
        Json::Null => return None,
        Json::Bool(b) => any_value::Value::BoolValue(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => any_value::Value::IntValue(i),
            None => any_value::Value::DoubleValue(n.as_f64().unwrap_or(0.0)),
        },
        Json::String(s) => any_value::Value::StringValue(s.clone()),
        Json::Array(items) => any_value::Value::ArrayValue(ArrayValue {
            values: items.iter().map(|v| AnyValue { value: json_value(v) }).collect(),
        }),
        Json::Object(entries) => any_value::Value::KvlistValue(KeyValueList {
            values: entries
                .iter()
                .map(|(k, v)| KeyValue {
                    key: k.clone(),
                    value: Some(AnyValue { value: json_value(v) }),
                    ..Default::default()
                })
                .collect(),
        }),
    })
}
