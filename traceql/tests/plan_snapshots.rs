//! The planner's output pinned as insta snapshots: the logical plan each construct compiles
//! to, over a spans table with the columns the planner reads.

mod common;

use common::spans;
use tracehouse_traceql::ast::AttrScope;
use tracehouse_traceql::{PlanOptions, compile, plan_query, plan_search};

fn options() -> PlanOptions {
    PlanOptions {
        dedicated: vec![
            (AttrScope::Resource, "service.name".into(), "service_name".into()),
            (AttrScope::Span, "http.route".into(), "http_route".into()),
        ],
        whole_traces: false,
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
fn search_plan_keeps_spss_spans_per_spanset() {
    let query = compile("{ status = error }").unwrap();
    let plan = plan_search(&query, spans(), &options(), 3).unwrap();
    insta::assert_snapshot!(plan.display_indent().to_string());
}

#[test]
fn search_plan_over_whole_traces_evaluates_the_match_once() {
    let query = compile("{ kind = server } > { status = error }").unwrap();
    let options = PlanOptions {
        whole_traces: true,
        ..options()
    };
    let plan = plan_search(&query, spans(), &options, 3).unwrap();
    insta::assert_snapshot!(plan.display_indent().to_string());
}
