//! Protocol-neutral span records and the columnar builder that turns them into `spans` batches.
//!
//! Receivers (OTLP today, Jaeger and Zipkin later) convert their wire types into borrowed
//! [`SpanRecord`]s; [`SpanBatchBuilder`] appends them straight into Arrow column builders.

use std::sync::Arc;

use arrow::array::{
    ArrayBuilder, ArrayRef, BinaryBuilder, BooleanBuilder, Float64Builder, Int32Builder, Int64Builder, ListArray,
    MapArray, RecordBatch, StringBuilder, StructArray, TimestampMicrosecondBuilder,
};
use arrow::buffer::{OffsetBuffer, ScalarBuffer};
use arrow::datatypes::{DataType, Fields};
use chrono::DateTime;

use crate::schema::{
    self, DedicatedColumn, RESOURCE_COLUMNS, SPAN_COLUMNS, attr_entries_field, event_fields, link_fields,
};
use crate::{Error, Result};

/// One typed attribute value, as OTLP defines them.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue<'a> {
    /// A string value.
    Str(&'a str),
    /// A 64-bit integer value.
    Int(i64),
    /// A double value.
    Double(f64),
    /// A boolean value.
    Bool(bool),
    /// A byte-string value.
    Bytes(&'a [u8]),
    /// An array value, rendered as JSON.
    Array(String),
    /// A key-value list value, rendered as a JSON object.
    KvList(String),
    /// An attribute present without a value.
    Empty,
}

/// A key and its value.
pub type Attr<'a> = (&'a str, AttrValue<'a>);

/// Span kind, named as TraceQL names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    Unspecified,
    Internal,
    Server,
    Client,
    Producer,
    Consumer,
}

impl SpanKind {
    /// From the OTLP enum number; unknown numbers are `Unspecified`.
    pub fn from_otlp(kind: i32) -> Self {
        match kind {
            1 => Self::Internal,
            2 => Self::Server,
            3 => Self::Client,
            4 => Self::Producer,
            5 => Self::Consumer,
            _ => Self::Unspecified,
        }
    }

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::Internal => "internal",
            Self::Server => "server",
            Self::Client => "client",
            Self::Producer => "producer",
            Self::Consumer => "consumer",
        }
    }
}

/// Span status code, named as TraceQL names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusCode {
    Unset,
    Ok,
    Error,
}

impl StatusCode {
    /// From the OTLP enum number; unknown numbers are `Unset`.
    pub fn from_otlp(code: i32) -> Self {
        match code {
            1 => Self::Ok,
            2 => Self::Error,
            _ => Self::Unset,
        }
    }

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unset => "unset",
            Self::Ok => "ok",
            Self::Error => "error",
        }
    }
}

/// A span event.
#[derive(Debug, Clone)]
pub struct EventRecord<'a> {
    pub time_unix_nano: u64,
    pub name: &'a str,
    pub attributes: Vec<Attr<'a>>,
    pub dropped_attributes_count: u32,
}

/// A span link.
#[derive(Debug, Clone)]
pub struct LinkRecord<'a> {
    pub trace_id: &'a [u8],
    pub span_id: &'a [u8],
    pub trace_state: &'a str,
    pub attributes: Vec<Attr<'a>>,
    pub dropped_attributes_count: u32,
    pub flags: u32,
}

/// The resource and scope a span was reported under; shared by many spans.
#[derive(Debug, Clone, Default)]
pub struct ScopeRecord<'a> {
    pub resource_attributes: Vec<Attr<'a>>,
    pub resource_dropped_attributes_count: u32,
    pub scope_name: &'a str,
    pub scope_version: &'a str,
    pub scope_attributes: Vec<Attr<'a>>,
}

/// One span, borrowed from the decoded request.
#[derive(Debug, Clone)]
pub struct SpanRecord<'a> {
    pub trace_id: &'a [u8],
    pub span_id: &'a [u8],
    pub parent_span_id: &'a [u8],
    pub trace_state: &'a str,
    pub name: &'a str,
    pub kind: SpanKind,
    pub start_time_unix_nano: u64,
    pub end_time_unix_nano: u64,
    pub status_code: StatusCode,
    pub status_message: &'a str,
    pub flags: u32,
    pub attributes: Vec<Attr<'a>>,
    pub dropped_attributes_count: u32,
    pub events: Vec<EventRecord<'a>>,
    pub dropped_events_count: u32,
    pub links: Vec<LinkRecord<'a>>,
    pub dropped_links_count: u32,
}

#[cfg(test)]
impl<'a> SpanRecord<'a> {
    /// A server span "op" of the crate's unit tests, at 1..2 ns, with `attributes`.
    pub(crate) fn for_test(trace_id: &'a [u8], span_id: &'a [u8], attributes: Vec<Attr<'a>>) -> Self {
        Self {
            trace_id,
            span_id,
            parent_span_id: &[],
            trace_state: "",
            name: "op",
            kind: SpanKind::Server,
            start_time_unix_nano: 1,
            end_time_unix_nano: 2,
            status_code: StatusCode::Unset,
            status_message: "",
            flags: 0,
            attributes,
            dropped_attributes_count: 0,
            events: Vec::new(),
            dropped_events_count: 0,
            links: Vec::new(),
            dropped_links_count: 0,
        }
    }
}

/// Validates the identifiers of a span: a trace id of 16 bytes, not all zero; a span id of
/// 8 bytes, not all zero; a parent span id empty or of 8 bytes.
pub fn validate_ids(span: &SpanRecord<'_>) -> Result<()> {
    if span.trace_id.len() != 16 || span.trace_id.iter().all(|b| *b == 0) {
        return Err(Error::InvalidSpan(format!(
            "span {:?}: trace id must be 16 bytes and not all zero, got {} bytes",
            span.name,
            span.trace_id.len()
        )));
    }
    if span.span_id.len() != 8 || span.span_id.iter().all(|b| *b == 0) {
        return Err(Error::InvalidSpan(format!(
            "span {:?}: span id must be 8 bytes and not all zero, got {} bytes",
            span.name,
            span.span_id.len()
        )));
    }
    if !span.parent_span_id.is_empty() && span.parent_span_id.len() != 8 {
        return Err(Error::InvalidSpan(format!(
            "span {:?}: parent span id must be empty or 8 bytes, got {} bytes",
            span.name,
            span.parent_span_id.len()
        )));
    }
    Ok(())
}

/// Builds one attribute map column.
pub(crate) struct AttrMapBuilder {
    keys: StringBuilder,
    str_values: StringBuilder,
    int_values: Int64Builder,
    double_values: Float64Builder,
    bool_values: BooleanBuilder,
    bytes_values: BinaryBuilder,
    array_values: StringBuilder,
    kvlist_values: StringBuilder,
    offsets: Vec<i32>,
}

impl AttrMapBuilder {
    pub(crate) fn new() -> Self {
        Self {
            keys: StringBuilder::new(),
            str_values: StringBuilder::new(),
            int_values: Int64Builder::new(),
            double_values: Float64Builder::new(),
            bool_values: BooleanBuilder::new(),
            bytes_values: BinaryBuilder::new(),
            array_values: StringBuilder::new(),
            kvlist_values: StringBuilder::new(),
            offsets: vec![0],
        }
    }

    pub(crate) fn append(&mut self, attrs: &[Attr<'_>]) {
        for (key, value) in attrs {
            self.keys.append_value(key);
            match value {
                AttrValue::Str(s) => self.str_values.append_value(s),
                _ => self.str_values.append_null(),
            }
            self.int_values
                .append_option(if let AttrValue::Int(v) = value { Some(*v) } else { None });
            self.double_values.append_option(if let AttrValue::Double(v) = value {
                Some(*v)
            } else {
                None
            });
            self.bool_values
                .append_option(if let AttrValue::Bool(v) = value { Some(*v) } else { None });
            match value {
                AttrValue::Bytes(b) => self.bytes_values.append_value(b),
                _ => self.bytes_values.append_null(),
            }
            match value {
                AttrValue::Array(j) => self.array_values.append_value(j),
                _ => self.array_values.append_null(),
            }
            match value {
                AttrValue::KvList(j) => self.kvlist_values.append_value(j),
                _ => self.kvlist_values.append_null(),
            }
        }
        let len = i32::try_from(self.keys.len()).expect("attribute map exceeds i32 offsets");
        self.offsets.push(len);
    }

    pub(crate) fn finish(&mut self) -> Result<ArrayRef> {
        let value_fields = match schema::attr_value_type() {
            DataType::Struct(fields) => fields,
            _ => unreachable!("attribute value type is a struct"),
        };
        let values: Vec<ArrayRef> = vec![
            Arc::new(self.str_values.finish()),
            Arc::new(self.int_values.finish()),
            Arc::new(self.double_values.finish()),
            Arc::new(self.bool_values.finish()),
            Arc::new(self.bytes_values.finish()),
            Arc::new(self.array_values.finish()),
            Arc::new(self.kvlist_values.finish()),
        ];
        let value = StructArray::try_new(value_fields, values, None)?;
        let entries_field = attr_entries_field();
        let entry_fields = match entries_field.data_type() {
            DataType::Struct(fields) => fields.clone(),
            _ => unreachable!("map entries are a struct"),
        };
        let keys: ArrayRef = Arc::new(self.keys.finish());
        let entries = StructArray::try_new(entry_fields, vec![keys, Arc::new(value)], None)?;
        let offsets = OffsetBuffer::new(ScalarBuffer::from(std::mem::replace(&mut self.offsets, vec![0])));
        Ok(Arc::new(MapArray::try_new(
            entries_field,
            offsets,
            entries,
            None,
            false,
        )?))
    }
}

struct EventsBuilder {
    time: Int64Builder,
    name: StringBuilder,
    attributes: AttrMapBuilder,
    dropped: Int32Builder,
    offsets: Vec<i32>,
}

impl EventsBuilder {
    fn new() -> Self {
        Self {
            time: Int64Builder::new(),
            name: StringBuilder::new(),
            attributes: AttrMapBuilder::new(),
            dropped: Int32Builder::new(),
            offsets: vec![0],
        }
    }

    fn append(&mut self, events: &[EventRecord<'_>]) {
        for event in events {
            self.time.append_value(saturating_i64(event.time_unix_nano));
            self.name.append_value(event.name);
            self.attributes.append(&event.attributes);
            self.dropped
                .append_value(saturating_i32(event.dropped_attributes_count));
        }
        self.offsets
            .push(i32::try_from(self.time.len()).expect("events exceed i32 offsets"));
    }

    fn finish(&mut self) -> Result<ArrayRef> {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.time.finish()),
            Arc::new(self.name.finish()),
            self.attributes.finish()?,
            Arc::new(self.dropped.finish()),
        ];
        finish_list(event_fields(), columns, &mut self.offsets)
    }
}

struct LinksBuilder {
    trace_id: StringBuilder,
    span_id: StringBuilder,
    trace_state: StringBuilder,
    attributes: AttrMapBuilder,
    dropped: Int32Builder,
    flags: Int64Builder,
    offsets: Vec<i32>,
}

impl LinksBuilder {
    fn new() -> Self {
        Self {
            trace_id: StringBuilder::new(),
            span_id: StringBuilder::new(),
            trace_state: StringBuilder::new(),
            attributes: AttrMapBuilder::new(),
            dropped: Int32Builder::new(),
            flags: Int64Builder::new(),
            offsets: vec![0],
        }
    }

    fn append(&mut self, links: &[LinkRecord<'_>], hex_buf: &mut String) {
        for link in links {
            append_hex(&mut self.trace_id, link.trace_id, hex_buf);
            append_hex(&mut self.span_id, link.span_id, hex_buf);
            append_non_empty(&mut self.trace_state, link.trace_state);
            self.attributes.append(&link.attributes);
            self.dropped.append_value(saturating_i32(link.dropped_attributes_count));
            self.flags.append_value(i64::from(link.flags));
        }
        self.offsets
            .push(i32::try_from(self.flags.len()).expect("links exceed i32 offsets"));
    }

    fn finish(&mut self) -> Result<ArrayRef> {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.trace_id.finish()),
            Arc::new(self.span_id.finish()),
            Arc::new(self.trace_state.finish()),
            self.attributes.finish()?,
            Arc::new(self.dropped.finish()),
            Arc::new(self.flags.finish()),
        ];
        finish_list(link_fields(), columns, &mut self.offsets)
    }
}

fn finish_list(fields: Fields, columns: Vec<ArrayRef>, offsets: &mut Vec<i32>) -> Result<ArrayRef> {
    let values = StructArray::try_new(fields.clone(), columns, None)?;
    let item = match schema::list_of(fields) {
        DataType::List(item) => item,
        _ => unreachable!("list_of returns a list"),
    };
    let offsets = OffsetBuffer::new(ScalarBuffer::from(std::mem::replace(offsets, vec![0])));
    Ok(Arc::new(ListArray::try_new(item, offsets, Arc::new(values), None)?))
}

fn saturating_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn saturating_i32(v: u32) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

fn append_hex(builder: &mut StringBuilder, bytes: &[u8], buf: &mut String) {
    if bytes.is_empty() {
        builder.append_null();
        return;
    }
    buf.clear();
    for b in bytes {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        buf.push(HEX[usize::from(b >> 4)] as char);
        buf.push(HEX[usize::from(b & 0x0f)] as char);
    }
    builder.append_value(buf.as_str());
}

fn append_non_empty(builder: &mut StringBuilder, s: &str) {
    if s.is_empty() {
        builder.append_null();
    } else {
        builder.append_value(s);
    }
}

/// Value of the first key of `col` present in `attrs`, as the column's type wants it.
fn dedicated_value<'a>(col: &DedicatedColumn, attrs: &'a [Attr<'a>]) -> Option<&'a AttrValue<'a>> {
    col.keys
        .iter()
        .find_map(|want| attrs.iter().find(|(k, _)| k == want).map(|(_, v)| v))
}

enum DedicatedBuilder {
    Text(StringBuilder),
    Int(Int64Builder),
}

impl DedicatedBuilder {
    fn new(col: &DedicatedColumn) -> Self {
        if col.is_int {
            Self::Int(Int64Builder::new())
        } else {
            Self::Text(StringBuilder::new())
        }
    }

    fn append(&mut self, value: Option<&AttrValue<'_>>) {
        match self {
            Self::Text(b) => match value {
                Some(AttrValue::Str(s)) => b.append_value(s),
                Some(AttrValue::Int(i)) => b.append_value(i.to_string()),
                Some(AttrValue::Double(d)) => b.append_value(d.to_string()),
                Some(AttrValue::Bool(v)) => b.append_value(if *v { "true" } else { "false" }),
                _ => b.append_null(),
            },
            Self::Int(b) => match value {
                Some(AttrValue::Int(i)) => b.append_value(*i),
                Some(AttrValue::Str(s)) => b.append_option(s.parse::<i64>().ok()),
                _ => b.append_null(),
            },
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Self::Text(b) => Arc::new(b.finish()),
            Self::Int(b) => Arc::new(b.finish()),
        }
    }
}

/// Appends spans, column by column, into one `spans` record batch.
pub struct SpanBatchBuilder {
    trace_id: StringBuilder,
    span_id: StringBuilder,
    parent_span_id: StringBuilder,
    trace_state: StringBuilder,
    name: StringBuilder,
    kind: StringBuilder,
    start_time: TimestampMicrosecondBuilder,
    start_ns: Int64Builder,
    end_ns: Int64Builder,
    duration_ns: Int64Builder,
    status_code: StringBuilder,
    status_message: StringBuilder,
    flags: Int64Builder,
    resource_dedicated: Vec<DedicatedBuilder>,
    span_dedicated: Vec<DedicatedBuilder>,
    resource_attributes: AttrMapBuilder,
    resource_dropped: Int32Builder,
    scope_name: StringBuilder,
    scope_version: StringBuilder,
    scope_attributes: AttrMapBuilder,
    span_attributes: AttrMapBuilder,
    dropped_attributes: Int32Builder,
    events: EventsBuilder,
    dropped_events: Int32Builder,
    links: LinksBuilder,
    dropped_links: Int32Builder,
    date: StringBuilder,
    hex_buf: String,
}

impl Default for SpanBatchBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl SpanBatchBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self {
            trace_id: StringBuilder::new(),
            span_id: StringBuilder::new(),
            parent_span_id: StringBuilder::new(),
            trace_state: StringBuilder::new(),
            name: StringBuilder::new(),
            kind: StringBuilder::new(),
            start_time: TimestampMicrosecondBuilder::new().with_timezone("UTC"),
            start_ns: Int64Builder::new(),
            end_ns: Int64Builder::new(),
            duration_ns: Int64Builder::new(),
            status_code: StringBuilder::new(),
            status_message: StringBuilder::new(),
            flags: Int64Builder::new(),
            resource_dedicated: RESOURCE_COLUMNS.iter().map(DedicatedBuilder::new).collect(),
            span_dedicated: SPAN_COLUMNS.iter().map(DedicatedBuilder::new).collect(),
            resource_attributes: AttrMapBuilder::new(),
            resource_dropped: Int32Builder::new(),
            scope_name: StringBuilder::new(),
            scope_version: StringBuilder::new(),
            scope_attributes: AttrMapBuilder::new(),
            span_attributes: AttrMapBuilder::new(),
            dropped_attributes: Int32Builder::new(),
            events: EventsBuilder::new(),
            dropped_events: Int32Builder::new(),
            links: LinksBuilder::new(),
            dropped_links: Int32Builder::new(),
            date: StringBuilder::new(),
            hex_buf: String::with_capacity(32),
        }
    }

    /// Appends one span reported under `scope`. The span's ids must have passed [`validate_ids`].
    pub fn append(&mut self, scope: &ScopeRecord<'_>, span: &SpanRecord<'_>) {
        debug_assert!(validate_ids(span).is_ok());
        append_hex(&mut self.trace_id, span.trace_id, &mut self.hex_buf);
        append_hex(&mut self.span_id, span.span_id, &mut self.hex_buf);
        append_hex(&mut self.parent_span_id, span.parent_span_id, &mut self.hex_buf);
        append_non_empty(&mut self.trace_state, span.trace_state);
        self.name.append_value(span.name);
        self.kind.append_value(span.kind.as_str());
        let start = saturating_i64(span.start_time_unix_nano);
        let end = saturating_i64(span.end_time_unix_nano);
        self.start_time.append_value(start / 1_000);
        self.start_ns.append_value(start);
        self.end_ns.append_value(end);
        self.duration_ns.append_value(end.saturating_sub(start).max(0));
        self.status_code.append_value(span.status_code.as_str());
        append_non_empty(&mut self.status_message, span.status_message);
        self.flags.append_value(i64::from(span.flags));
        for (col, builder) in RESOURCE_COLUMNS.iter().zip(&mut self.resource_dedicated) {
            builder.append(dedicated_value(col, &scope.resource_attributes));
        }
        for (col, builder) in SPAN_COLUMNS.iter().zip(&mut self.span_dedicated) {
            builder.append(dedicated_value(col, &span.attributes));
        }
        self.resource_attributes.append(&scope.resource_attributes);
        self.resource_dropped
            .append_value(saturating_i32(scope.resource_dropped_attributes_count));
        append_non_empty(&mut self.scope_name, scope.scope_name);
        append_non_empty(&mut self.scope_version, scope.scope_version);
        self.scope_attributes.append(&scope.scope_attributes);
        self.span_attributes.append(&span.attributes);
        self.dropped_attributes
            .append_value(saturating_i32(span.dropped_attributes_count));
        self.events.append(&span.events);
        self.dropped_events
            .append_value(saturating_i32(span.dropped_events_count));
        self.links.append(&span.links, &mut self.hex_buf);
        self.dropped_links
            .append_value(saturating_i32(span.dropped_links_count));
        self.date.append_value(day_of(start));
    }

    /// Finishes the appended rows into one batch and resets the builder.
    pub fn finish(&mut self) -> Result<RecordBatch> {
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(self.trace_id.finish()),
            Arc::new(self.span_id.finish()),
            Arc::new(self.parent_span_id.finish()),
            Arc::new(self.trace_state.finish()),
            Arc::new(self.name.finish()),
            Arc::new(self.kind.finish()),
            Arc::new(self.start_time.finish()),
            Arc::new(self.start_ns.finish()),
            Arc::new(self.end_ns.finish()),
            Arc::new(self.duration_ns.finish()),
            Arc::new(self.status_code.finish()),
            Arc::new(self.status_message.finish()),
            Arc::new(self.flags.finish()),
        ];
        columns.extend(self.resource_dedicated.iter_mut().map(DedicatedBuilder::finish));
        columns.extend(self.span_dedicated.iter_mut().map(DedicatedBuilder::finish));
        columns.extend([
            self.resource_attributes.finish()?,
            Arc::new(self.resource_dropped.finish()) as ArrayRef,
            Arc::new(self.scope_name.finish()),
            Arc::new(self.scope_version.finish()),
            self.scope_attributes.finish()?,
            self.span_attributes.finish()?,
            Arc::new(self.dropped_attributes.finish()),
            self.events.finish()?,
            Arc::new(self.dropped_events.finish()),
            self.links.finish()?,
            Arc::new(self.dropped_links.finish()),
            Arc::new(self.date.finish()),
        ]);
        Ok(RecordBatch::try_new(schema::spans_schema(), columns)?)
    }
}

/// The UTC day (`YYYY-MM-DD`) of a Unix time in nanoseconds.
pub fn day_of(unix_nano: i64) -> String {
    DateTime::from_timestamp_nanos(unix_nano).format("%Y-%m-%d").to_string()
}
