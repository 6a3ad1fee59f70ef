//! The planner's output pinned as insta snapshots: the logical plan each construct compiles
//! to, over a spans table with the columns the planner reads.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Fields, Schema};
use datafusion::logical_expr::{LogicalPlan, logical_plan::table_scan};
use tracehouse_traceql::ast::AttrScope;
use tracehouse_traceql::{PlanOptions, compile, plan_query, plan_search};

fn attr_map() -> DataType {
    let value = DataType::Struct(Fields::from(vec![
        Field::new("str", DataType::Utf8, true),
        Field::new("int", DataType::Int64, true),
        Field::new("double", DataType::Float64, true),
        Field::new("bool", DataType::Boolean, true),
    ]));
    let entries = Field::new(
        "key_value",
        DataType::Struct(Fields::from(vec![
            Field::new("key", DataType::Utf8, false),
            Field::new("value", value, true),
        ])),
        false,
    );
    DataType::Map(Arc::new(entries), false)
}

fn list_of(fields: Vec<Field>) -> DataType {
    DataType::List(Arc::new(Field::new(
        "element",
        DataType::Struct(Fields::from(fields)),
        true,
    )))
}

fn spans() -> LogicalPlan {
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
        Field::new("resource_attributes", attr_map(), true),
        text("scope_name"),
        text("scope_version"),
        Field::new("scope_attributes", attr_map(), true),
        Field::new("span_attributes", attr_map(), true),
        Field::new(
            "events",
            list_of(vec![
                Field::new("time_unix_nano", DataType::Int64, true),
                text("name"),
                Field::new("attributes", attr_map(), true),
            ]),
            true,
        ),
        Field::new(
            "links",
            list_of(vec![
                text("trace_id"),
                text("span_id"),
                Field::new("attributes", attr_map(), true),
            ]),
            true,
        ),
    ]);
    table_scan(Some("spans"), &schema, None).unwrap().build().unwrap()
}

fn options() -> PlanOptions {
    PlanOptions {
        dedicated: vec![
            (AttrScope::Resource, "service.name".into(), "service_name".into()),
            (AttrScope::Span, "http.route".into(), "http_route".into()),
        ],
    }
}

fn plan(q: &str) -> String {
    let query = compile(q).unwrap();
    let plan = plan_query(&query, spans(), &options()).unwrap();
    format!("query: {q}\nprinted: {query}\n\n{}", plan.display_indent())
}

#[test]
fn filter_with_intrinsics_and_typed_attributes() {
    insta::assert_snapshot!(plan(
        r#"{ resource.service.name = "api" && span.http.status_code >= 500 && duration > 1s && name =~ "GET.*" }"#
    ));
}

#[test]
fn unscoped_attribute_reads_span_then_resource() {
    insta::assert_snapshot!(plan(r#"{ .team = "core" && .gone = nil }"#));
}

#[test]
fn trace_level_and_nested_set_intrinsics() {
    insta::assert_snapshot!(plan(
        r#"{ trace:rootService = "api" && nestedSetParent = -1 && span:childCount > 1 }"#
    ));
}

#[test]
fn events_links_and_parent() {
    insta::assert_snapshot!(plan(
        r#"{ event:name = "exception" || link:traceID = "ab" } && { parent.duration > 1s }"#
    ));
}

#[test]
fn structural_descendant() {
    insta::assert_snapshot!(plan(r#"{ kind = server } >> { status = error }"#));
}

#[test]
fn structural_union_sibling() {
    insta::assert_snapshot!(plan(r#"{ name = "a" } &~ { name = "b" }"#));
}

#[test]
fn pipeline_by_and_aggregate() {
    insta::assert_snapshot!(plan(
        r#"{ } | by(resource.service.name) | avg(duration) > 1s | coalesce()"#
    ));
}

#[test]
fn wrapped_scalar_pipelines() {
    insta::assert_snapshot!(plan(r#"({ .a } | count()) > ({ .b } | count())"#));
}

#[test]
fn search_plan_limits_traces_and_spans_per_spanset() {
    let query = compile("{ status = error }").unwrap();
    let plan = plan_search(&query, spans(), &options(), 20, 3).unwrap();
    insta::assert_snapshot!(plan.display_indent().to_string());
}
