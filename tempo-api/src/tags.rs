//! Tag autocomplete for Grafana's search builder: `GET /api/search/tags`,
//! `/api/v2/search/tags` (by scope), `/api/search/tag/<tag>/values` and
//! `/api/v2/search/tag/<scoped tag>/values` (typed). `q` narrows values to spans a TraceQL
//! filter matches; `limit` bounds the answer.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use tracehouse_sql::{sql_literal, text_column};
use tracehouse_traceql::ast::{AttrScope, FieldExpr, Intrinsic};

use crate::tempopb::{
    MetadataMetrics, SearchTagValuesResponse, SearchTagValuesV2Response, SearchTagsResponse, SearchTagsV2Response,
    SearchTagsV2Scope, TagValue,
};
use crate::{ApiError, ApiState, ErrorKind, admitted, json_listing, param, tenant};

/// Most tags or values returned by default, and at most.
pub const DEFAULT_LIMIT: usize = 1_000;
pub const MAX_LIMIT: usize = 10_000;

/// Intrinsics Grafana offers in the `intrinsic` scope.
pub const INTRINSICS: &[&str] = &[
    "duration",
    "event:name",
    "event:timeSinceStart",
    "instrumentation:name",
    "instrumentation:version",
    "kind",
    "link:spanID",
    "link:traceID",
    "name",
    "rootName",
    "rootServiceName",
    "span:childCount",
    "span:duration",
    "span:id",
    "span:kind",
    "span:name",
    "span:parentID",
    "span:status",
    "span:statusMessage",
    "status",
    "statusMessage",
    "trace:duration",
    "trace:id",
    "trace:rootName",
    "trace:rootService",
    "traceDuration",
];

/// What every listing takes from a request: the tenant, the `limit`, and the span rows to
/// look at (all spans, or `traceql(q)`).
struct Listing {
    tenant: String,
    limit: usize,
    from: String,
}

fn listing(tenant: &str, params: &HashMap<String, String>) -> Result<Listing, ApiError> {
    let limit = param(params, "limit", DEFAULT_LIMIT)?;
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError(
            ErrorKind::InvalidInput,
            format!("invalid limit {limit}: 1..={MAX_LIMIT}"),
        ));
    }
    Ok(Listing {
        tenant: tenant.to_string(),
        limit,
        from: source(params)?,
    })
}

/// The span rows to look at: all spans, or those `q` matches.
fn source(params: &HashMap<String, String>) -> Result<String, ApiError> {
    match params
        .get("q")
        .map(|q| q.trim())
        .filter(|q| !q.is_empty() && *q != "{}" && *q != "{ }")
    {
        None => Ok("spans".into()),
        Some(q) => {
            tracehouse_traceql::compile(q).map_err(|e| ApiError(ErrorKind::InvalidInput, e.to_string()))?;
            Ok(format!("traceql({})", sql_literal(q)))
        }
    }
}

async fn column(state: &ApiState, tenant: &str, sql: &str) -> Result<Vec<String>, ApiError> {
    let batches = admitted(state, tenant, sql, state.engine.sql(tenant, sql)).await?;
    Ok(text_column(&batches, 0))
}

async fn keys(state: &ApiState, tenant: &str, map: &str, from: &str, limit: usize) -> Result<Vec<String>, ApiError> {
    column(
        state,
        tenant,
        &format!(
            "SELECT DISTINCT k FROM (SELECT unnest(map_keys({map})) AS k FROM {from}) WHERE k IS NOT NULL ORDER BY k LIMIT {limit}"
        ),
    )
    .await
}

fn metrics() -> Option<MetadataMetrics> {
    Some(MetadataMetrics {
        total_jobs: 1,
        completed_jobs: 1,
        ..Default::default()
    })
}

/// Tag names of span and resource attributes (`/api/search/tags`).
pub async fn tag_names(
    state: &ApiState,
    tenant: &str,
    params: &HashMap<String, String>,
) -> Result<SearchTagsResponse, ApiError> {
    let Listing { tenant, limit, from } = listing(tenant, params)?;
    let mut names = keys(state, &tenant, "span_attributes", &from, limit).await?;
    names.extend(keys(state, &tenant, "resource_attributes", &from, limit).await?);
    names.sort();
    names.dedup();
    names.truncate(limit);
    Ok(SearchTagsResponse {
        tag_names: names,
        metrics: metrics(),
    })
}

/// Tag names by scope (`/api/v2/search/tags`), all scopes or the one `scope` names.
pub async fn tag_scopes(
    state: &ApiState,
    tenant: &str,
    params: &HashMap<String, String>,
) -> Result<SearchTagsV2Response, ApiError> {
    let Listing { tenant, limit, from } = listing(tenant, params)?;
    let wanted = params
        .get("scope")
        .map(String::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or("all")
        .to_string();
    let mut scopes = Vec::new();
    for (scope, map) in [
        ("resource", "resource_attributes"),
        ("span", "span_attributes"),
        ("instrumentation", "scope_attributes"),
    ] {
        if wanted == "all" || wanted == scope {
            let tags = keys(state, &tenant, map, &from, limit).await?;
            scopes.push(SearchTagsV2Scope {
                name: scope.into(),
                tags,
            });
        }
    }
    for (scope, list) in [("event", "events"), ("link", "links")] {
        if wanted == "all" || wanted == scope {
            let sql = format!(
                "SELECT DISTINCT k FROM (SELECT unnest(map_keys(e['attributes'])) AS k FROM \
                 (SELECT unnest({list}) AS e FROM {from})) WHERE k IS NOT NULL ORDER BY k LIMIT {limit}"
            );
            let tags = column(state, &tenant, &sql).await?;
            scopes.push(SearchTagsV2Scope {
                name: scope.into(),
                tags,
            });
        }
    }
    if wanted == "all" || wanted == "intrinsic" {
        scopes.push(SearchTagsV2Scope {
            name: "intrinsic".into(),
            tags: INTRINSICS.iter().map(|s| s.to_string()).collect(),
        });
    }
    if scopes.is_empty() {
        return Err(ApiError(ErrorKind::InvalidInput, format!("unknown scope {wanted:?}")));
    }
    // Like Tempo, list only scopes that have tags (protobuf JSON would omit their empty list).
    scopes.retain(|s| !s.tags.is_empty());
    Ok(SearchTagsV2Response {
        scopes,
        metrics: metrics(),
    })
}

pub async fn tags_v1(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    respond(tag_names(&state, &tenant(&headers), &params).await, "tagNames")
}

pub async fn tags_v2(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    respond(tag_scopes(&state, &tenant(&headers), &params).await, "scopes")
}

fn respond<T: serde::Serialize>(result: Result<T, ApiError>, list: &str) -> Response {
    match result {
        Ok(v) => json_listing(&v, Some(list)),
        Err(e) => e.into_response(),
    }
}

/// Where a tag's values live: `(attribute map, key)` per scope, or an intrinsic's column
/// expression (key `None`).
fn value_sources(field: &FieldExpr) -> Result<Vec<(String, Option<String>)>, String> {
    let key = |name: &str| Some(sql_literal(name));
    Ok(match field {
        FieldExpr::Attribute(a) if !a.parent => match a.scope {
            AttrScope::Span => vec![("span_attributes".into(), key(&a.name))],
            AttrScope::Resource => vec![("resource_attributes".into(), key(&a.name))],
            AttrScope::Instrumentation => vec![("scope_attributes".into(), key(&a.name))],
            AttrScope::Unscoped => vec![
                ("span_attributes".into(), key(&a.name)),
                ("resource_attributes".into(), key(&a.name)),
            ],
            AttrScope::Event | AttrScope::Link => {
                return Err("values of event and link attributes are not listed yet".into());
            }
        },
        FieldExpr::Intrinsic(i) => {
            let col = match i {
                Intrinsic::Name => "name",
                Intrinsic::Status => "status_code",
                Intrinsic::Kind => "kind",
                Intrinsic::StatusMessage => "status_message",
                Intrinsic::RootService => "CASE WHEN parent_span_id IS NULL THEN service_name END",
                Intrinsic::InstrumentationName => "scope_name",
                Intrinsic::RootName => "CASE WHEN parent_span_id IS NULL THEN name END",
                Intrinsic::InstrumentationVersion => "scope_version",
                other => return Err(format!("values of {} are not listed", other.spelling())),
            };
            vec![(col.to_string(), None)]
        }
        _ => return Err("expected an attribute or intrinsic".into()),
    })
}

/// The typed value type Tempo names for an intrinsic.
fn intrinsic_type(field: &FieldExpr) -> &'static str {
    match field {
        FieldExpr::Intrinsic(Intrinsic::Status | Intrinsic::Kind) => "keyword",
        _ => "string",
    }
}

/// `(type, value)` pairs of a tag, sorted by value; `typed` takes TraceQL field names (v2).
async fn values(
    state: &ApiState,
    tenant: &str,
    params: &HashMap<String, String>,
    tag: &str,
    typed: bool,
) -> Result<Vec<(String, String)>, ApiError> {
    let Listing { tenant, limit, from } = listing(tenant, params)?;
    let bad = |m: String| ApiError(ErrorKind::InvalidInput, m);
    // v1 takes bare names (`service.name`); v2 takes TraceQL fields (`resource.service.name`).
    let text = if typed || tag.starts_with('.') {
        tag.to_string()
    } else {
        format!(".{tag}")
    };
    let field = match tracehouse_traceql::parse(&format!("{{ {text} != nil }}")).map(|q| q.root) {
        Ok(tracehouse_traceql::ast::Root::Spanset(tracehouse_traceql::ast::SpansetExpr::Filter(
            FieldExpr::Binary(_, f, _),
        ))) => *f,
        _ => return Err(bad(format!("invalid tag name {tag:?}"))),
    };
    let sources = value_sources(&field).map_err(bad)?;
    let mut out: Vec<(String, String)> = Vec::new();
    for (expr, key) in sources {
        let sql = if let Some(key) = key {
            format!(
                "SELECT DISTINCT t, v FROM (SELECT CASE WHEN {expr}[{key}]['str'] IS NOT NULL THEN 'string' \
                 WHEN {expr}[{key}]['int'] IS NOT NULL THEN 'int' WHEN {expr}[{key}]['double'] IS NOT NULL THEN 'float' \
                 WHEN {expr}[{key}]['bool'] IS NOT NULL THEN 'bool' ELSE 'string' END AS t, attr({expr}, {key}) AS v \
                 FROM {from}) WHERE v IS NOT NULL ORDER BY v LIMIT {limit}"
            )
        } else {
            format!(
                "SELECT DISTINCT '{}' AS t, v FROM (SELECT {expr} AS v FROM {from}) WHERE v IS NOT NULL \
                 ORDER BY v LIMIT {limit}",
                intrinsic_type(&field)
            )
        };
        let batches = admitted(state, &tenant, &sql, state.engine.sql(&tenant, &sql)).await?;
        let types = text_column(&batches, 0);
        let vals = text_column(&batches, 1);
        out.extend(types.into_iter().zip(vals));
    }
    out.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0)));
    out.dedup();
    out.truncate(limit);
    Ok(out)
}

/// Values of a tag (`/api/search/tag/<tag>/values`).
pub async fn tag_values(
    state: &ApiState,
    tenant: &str,
    params: &HashMap<String, String>,
    tag: &str,
) -> Result<SearchTagValuesResponse, ApiError> {
    let mut plain: Vec<String> = values(state, tenant, params, tag, false)
        .await?
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    plain.dedup();
    Ok(SearchTagValuesResponse {
        tag_values: plain,
        metrics: metrics(),
    })
}

/// Typed values of a TraceQL field (`/api/v2/search/tag/<tag>/values`).
pub async fn tag_values_v2(
    state: &ApiState,
    tenant: &str,
    params: &HashMap<String, String>,
    tag: &str,
) -> Result<SearchTagValuesV2Response, ApiError> {
    let typed = values(state, tenant, params, tag, true).await?;
    Ok(SearchTagValuesV2Response {
        tag_values: typed
            .into_iter()
            .map(|(r#type, value)| TagValue { r#type, value })
            .collect(),
        metrics: metrics(),
    })
}

pub async fn values_v1(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(tag): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    respond(tag_values(&state, &tenant(&headers), &params, &tag).await, "tagValues")
}

pub async fn values_v2(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(tag): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    respond(
        tag_values_v2(&state, &tenant(&headers), &params, &tag).await,
        "tagValues",
    )
}
