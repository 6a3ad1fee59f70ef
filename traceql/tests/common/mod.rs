//! The spans table shape the planner tests plan against.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Fields, Schema};
use datafusion::logical_expr::{LogicalPlan, logical_plan::table_scan};

/// A spans table with the columns the planner reads.
pub fn spans() -> LogicalPlan {
    let value = DataType::Struct(Fields::from(vec![
        Field::new("str", DataType::Utf8, true),
        Field::new("int", DataType::Int64, true),
        Field::new("double", DataType::Float64, true),
        Field::new("bool", DataType::Boolean, true),
        Field::new("bytes", DataType::Binary, true),
        Field::new("array", DataType::Utf8, true),
        Field::new("kvlist", DataType::Utf8, true),
    ]));
    let map = DataType::Map(
        Arc::new(Field::new(
            "key_value",
            DataType::Struct(Fields::from(vec![
                Field::new("key", DataType::Utf8, false),
                Field::new("value", value, true),
            ])),
            false,
        )),
        false,
    );
    let list = |fields: Vec<Field>| {
        DataType::List(Arc::new(Field::new(
            "element",
            DataType::Struct(Fields::from(fields)),
            true,
        )))
    };
    let text = |n: &str| Field::new(n, DataType::Utf8, true);
    let int = |n: &str| Field::new(n, DataType::Int64, false);
    let schema = Schema::new(vec![
        text("trace_id"),
        text("span_id"),
        text("parent_span_id"),
        text("name"),
        text("kind"),
        int("start_time_unix_nano"),
        int("end_time_unix_nano"),
        int("duration_ns"),
        text("status_code"),
        text("status_message"),
        text("service_name"),
        text("http_route"),
        Field::new("resource_attributes", map.clone(), true),
        text("scope_name"),
        text("scope_version"),
        Field::new("scope_attributes", map.clone(), true),
        Field::new("span_attributes", map.clone(), true),
        Field::new(
            "events",
            list(vec![
                int("time_unix_nano"),
                text("name"),
                Field::new("attributes", map.clone(), true),
            ]),
            true,
        ),
        Field::new(
            "links",
            list(vec![
                text("trace_id"),
                text("span_id"),
                Field::new("attributes", map, true),
            ]),
            true,
        ),
    ]);
    table_scan(Some("spans"), &schema, None).unwrap().build().unwrap()
}
