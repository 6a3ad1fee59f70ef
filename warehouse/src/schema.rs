//! The `spans` table schema: one row per span, every OTLP span field, typed attribute maps and
//! dedicated columns for hot attributes.
//!
//! Delta Lake constrains the physical types: no unsigned integers and no nanosecond timestamps,
//! so exact times are `Int64` nanoseconds beside a microsecond `start_time` for humans and other
//! engines. Nested field names follow Delta's conventions (`element`, `key_value`, `key`,
//! `value`) so live batches and Delta scans produce the same Arrow schema.

use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};

/// Name of the Delta partition column (UTC day of the span start, `YYYY-MM-DD`).
pub const PARTITION_COLUMN: &str = "date";

/// Struct fields of one attribute value; exactly one is non-null for a set value.
pub const ATTR_VALUE_FIELDS: [&str; 7] = ["str", "int", "double", "bool", "bytes", "array", "kvlist"];

/// A dedicated column: an attribute promoted to its own column for fast, natural SQL.
#[derive(Debug, Clone, Copy)]
pub struct DedicatedColumn {
    /// Column name in the `spans` table.
    pub column: &'static str,
    /// Attribute keys that feed it, in order of preference (current semconv first).
    pub keys: &'static [&'static str],
    /// `true` for an `Int64` column, otherwise `Utf8`.
    pub is_int: bool,
}

const fn text(column: &'static str, keys: &'static [&'static str]) -> DedicatedColumn {
    DedicatedColumn {
        column,
        keys,
        is_int: false,
    }
}

/// Dedicated columns filled from resource attributes.
pub const RESOURCE_COLUMNS: &[DedicatedColumn] = &[
    text("service_name", &["service.name"]),
    text("service_namespace", &["service.namespace"]),
    text("service_version", &["service.version"]),
    text(
        "deployment_environment",
        &["deployment.environment.name", "deployment.environment"],
    ),
    text("host_name", &["host.name"]),
    text("k8s_cluster_name", &["k8s.cluster.name"]),
    text("k8s_namespace_name", &["k8s.namespace.name"]),
    text("k8s_pod_name", &["k8s.pod.name"]),
    text("k8s_container_name", &["k8s.container.name"]),
];

/// Dedicated columns filled from span attributes.
pub const SPAN_COLUMNS: &[DedicatedColumn] = &[
    text("http_method", &["http.request.method", "http.method"]),
    text("http_route", &["http.route"]),
    DedicatedColumn {
        column: "http_status_code",
        keys: &["http.response.status_code", "http.status_code"],
        is_int: true,
    },
    text("http_url", &["url.full", "http.url"]),
    text("db_system", &["db.system.name", "db.system"]),
    text("db_name", &["db.namespace", "db.name"]),
    text("rpc_system", &["rpc.system"]),
    text("rpc_service", &["rpc.service"]),
    text("rpc_method", &["rpc.method"]),
    text("messaging_system", &["messaging.system"]),
    text("peer_service", &["peer.service"]),
    text("server_address", &["server.address", "net.peer.name"]),
];

/// Arrow type of one attribute value.
pub fn attr_value_type() -> DataType {
    DataType::Struct(attr_value_fields())
}

fn attr_value_fields() -> Fields {
    Fields::from(vec![
        Field::new("str", DataType::Utf8, true),
        Field::new("int", DataType::Int64, true),
        Field::new("double", DataType::Float64, true),
        Field::new("bool", DataType::Boolean, true),
        Field::new("bytes", DataType::Binary, true),
        Field::new("array", DataType::Utf8, true),
        Field::new("kvlist", DataType::Utf8, true),
    ])
}

/// The entries field of an attribute map (`key_value: struct<key, value>`).
pub fn attr_entries_field() -> Arc<Field> {
    Arc::new(Field::new(
        "key_value",
        DataType::Struct(Fields::from(vec![
            Field::new("key", DataType::Utf8, false),
            Field::new("value", attr_value_type(), true),
        ])),
        false,
    ))
}

/// Arrow type of an attribute map.
pub fn attr_map_type() -> DataType {
    DataType::Map(attr_entries_field(), false)
}

/// Fields of one span event.
pub fn event_fields() -> Fields {
    Fields::from(vec![
        Field::new("time_unix_nano", DataType::Int64, true),
        Field::new("name", DataType::Utf8, true),
        Field::new("attributes", attr_map_type(), true),
        Field::new("dropped_attributes_count", DataType::Int32, true),
    ])
}

/// Fields of one span link.
pub fn link_fields() -> Fields {
    Fields::from(vec![
        Field::new("trace_id", DataType::Utf8, true),
        Field::new("span_id", DataType::Utf8, true),
        Field::new("trace_state", DataType::Utf8, true),
        Field::new("attributes", attr_map_type(), true),
        Field::new("dropped_attributes_count", DataType::Int32, true),
        Field::new("flags", DataType::Int64, true),
    ])
}

/// List of structs with Delta's `element` item name.
pub fn list_of(fields: Fields) -> DataType {
    DataType::List(Arc::new(Field::new("element", DataType::Struct(fields), true)))
}

static SPANS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(build_spans_schema);

/// The schema of the `spans` table, including the trailing partition column.
pub fn spans_schema() -> SchemaRef {
    SPANS_SCHEMA.clone()
}

fn build_spans_schema() -> SchemaRef {
    let mut fields = vec![
        Field::new("trace_id", DataType::Utf8, false),
        Field::new("span_id", DataType::Utf8, false),
        Field::new("parent_span_id", DataType::Utf8, true),
        Field::new("trace_state", DataType::Utf8, true),
        Field::new("name", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new(
            "start_time",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("start_time_unix_nano", DataType::Int64, false),
        Field::new("end_time_unix_nano", DataType::Int64, false),
        Field::new("duration_ns", DataType::Int64, false),
        Field::new("status_code", DataType::Utf8, false),
        Field::new("status_message", DataType::Utf8, true),
        Field::new("flags", DataType::Int64, true),
    ];
    for col in RESOURCE_COLUMNS.iter().chain(SPAN_COLUMNS) {
        let ty = if col.is_int { DataType::Int64 } else { DataType::Utf8 };
        fields.push(Field::new(col.column, ty, true));
    }
    fields.extend([
        Field::new("resource_attributes", attr_map_type(), true),
        Field::new("resource_dropped_attributes_count", DataType::Int32, true),
        Field::new("scope_name", DataType::Utf8, true),
        Field::new("scope_version", DataType::Utf8, true),
        Field::new("scope_attributes", attr_map_type(), true),
        Field::new("span_attributes", attr_map_type(), true),
        Field::new("dropped_attributes_count", DataType::Int32, true),
        Field::new("events", list_of(event_fields()), true),
        Field::new("dropped_events_count", DataType::Int32, true),
        Field::new("links", list_of(link_fields()), true),
        Field::new("dropped_links_count", DataType::Int32, true),
        Field::new(PARTITION_COLUMN, DataType::Utf8, false),
    ]);
    Arc::new(Schema::new(fields))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_column_is_last_and_names_are_unique() {
        let schema = spans_schema();
        assert_eq!(schema.fields().last().unwrap().name(), PARTITION_COLUMN);
        let mut names: Vec<_> = schema.fields().iter().map(|f| f.name().clone()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), schema.fields().len());
    }
}
