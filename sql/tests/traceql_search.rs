//! Tempo's search semantics over the fixtures: the first `limit` traces found, or the most
//! recent with `with(most_recent=true)`, newest first; `spss` spans per spanset with the
//! matched count, root service and name, start and duration, `by()` spansets, and the time
//! range. And for every query of the case file: the hits a search returns part by part are
//! exactly the hits of the whole-table evaluation.

mod common;

use common::{FIDELITY, Fixture, TENANT};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use tracehouse_sql::search::{HitValue, SearchPlans, SearchRequest, TraceHit, search};

fn request(query: &str, limit: usize, spss: usize) -> SearchRequest {
    SearchRequest {
        query: query.into(),
        limit,
        spss,
        start_unix_nano: None,
        end_unix_nano: None,
    }
}

/// 2026-11-20T12:00:00Z, the fixtures' time zero.
const BASE_NS: i64 = 1_795_176_000_000_000_000;
const MS: i64 = 1_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_follows_tempo_semantics() {
    let fx = &Fixture::load().await;
    let search = |r: SearchRequest| async move { fx.engine.traceql_search(TENANT, &r).await.unwrap().hits };
    let names = |hits: &[TraceHit]| hits.iter().map(|h| h.trace_id.clone()).collect::<Vec<_>>();

    // Most recent first, `limit` traces.
    let hits = search(request("{ } with(most_recent=true)", 2, 3)).await;
    assert_eq!(names(&hits), vec![fx.trace("T4"), fx.trace("T3")]);
    let t4 = &hits[0];
    assert_eq!(t4.root_service_name.as_deref(), Some("frontend"));
    assert_eq!(t4.root_trace_name.as_deref(), Some("POST /orders"));
    assert_eq!(t4.start_unix_nano, BASE_NS + 5000 * MS);
    assert_eq!(t4.duration_ns, 2000 * MS);
    // At most `spss` spans per spanset, the earliest, with the number matched.
    let t3 = &hits[1];
    assert_eq!(t3.spansets.len(), 1);
    assert_eq!(t3.spansets[0].matched, 4);
    let spans: Vec<_> = t3.spansets[0].spans.iter().map(|s| s.span_id.clone()).collect();
    assert_eq!(spans, vec![fx.span("s0"), fx.span("s1"), fx.span("s2")]);
    assert_eq!(t3.duration_ns, 1000 * MS, "trace split across flushes");

    // All four traces, and a trace whose root never arrived has no root fields.
    let hits = search(request("{ }", 20, 1)).await;
    assert_eq!(names(&hits), ["T4", "T3", "T2", "T1"].map(|t| fx.trace(t)).to_vec());
    let t2 = &hits[2];
    assert_eq!((t2.root_service_name.clone(), t2.root_trace_name.clone()), (None, None));
    assert_eq!(t2.duration_ns, 300 * MS);

    // by() makes one spanset per value, labelled.
    let hits = search(request(
        "{ trace:id = \"11111111111111111111111111111111\" } | by(resource.service.name)",
        20,
        1,
    ))
    .await;
    assert_eq!(hits.len(), 1);
    let sets: Vec<_> = hits[0]
        .spansets
        .iter()
        .map(|s| (s.attributes(), s.matched, s.spans[0].span_id.clone()))
        .collect();
    let by = |service: &str| vec![("by(resource.service.name)".to_string(), HitValue::Str(service.into()))];
    assert_eq!(
        sets,
        vec![
            (by("cart"), 3, fx.span("a1")),
            (by("frontend"), 2, fx.span("r1")),
            (by("payment"), 3, fx.span("b1")),
        ]
    );

    // The time range keeps spans that overlap it.
    let mut r = request("{ }", 20, 3);
    r.start_unix_nano = Some(BASE_NS + 4000 * MS);
    assert_eq!(names(&search(r).await), vec![fx.trace("T4")]);

    // Bad queries and bad limits are errors, not panics.
    for bad in [request("{ .a = }", 20, 3), request("{ }", 0, 3), request("{ }", 20, 0)] {
        assert!(fx.engine.traceql_search(TENANT, &bad).await.is_err());
    }
}

/// What a returned span shows of the attributes a query compares, as Tempo 3.1 showed it on
/// the same spans: `= nil` shows nil where the span lacks the attribute (unscoped: the span
/// itself, whatever its resource holds), and an array shows the elements that matched (one
/// alone, several as an array).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_show_compared_values_as_tempo_does() {
    let fx = &Fixture::load().await;
    let shown = |query: &'static str| async move {
        let hits = fx
            .engine
            .traceql_search(FIDELITY, &request(query, 20, 20))
            .await
            .unwrap()
            .hits;
        let mut out: Vec<(String, Vec<(String, HitValue)>)> = (hits.iter())
            .flat_map(|h| &h.spansets)
            .flat_map(|s| &s.spans)
            .map(|s| (s.name.clone(), s.attributes.clone()))
            .filter(|(_, a)| !a.is_empty())
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    };
    let one = |name: &str, key: &str, v: HitValue| (name.to_string(), vec![(key.to_string(), v)]);
    let nils = shown("{ .team = nil }").await;
    assert_eq!(nils.len(), 7, "{nils:?}");
    assert!(
        nils.iter().all(|(_, a)| a == &[("team".to_string(), HitValue::Nil)]),
        "{nils:?}"
    );
    assert_eq!(
        shown("{ .team != nil }").await,
        vec![
            one("GET /items", "team", HitValue::Str("res-team".into())),
            one("cache.get", "team", HitValue::Int(7)),
            one("db.query", "team", HitValue::Str("span-team".into())),
            one("render", "team", HitValue::Int(7)),
        ]
    );
    assert_eq!(
        shown(r#"{ span.tags = "a" }"#).await,
        vec![one("GET /items", "tags", HitValue::Str("a".into()))]
    );
    assert_eq!(
        shown(r#"{ span.tags != "a" }"#).await,
        vec![
            one("GET /items", "tags", HitValue::Str("b".into())),
            one("db.query", "tags", HitValue::Str("c".into())),
        ]
    );
    assert_eq!(
        shown("{ span.nums != 2 }").await,
        vec![
            one(
                "GET /items",
                "nums",
                HitValue::Array(vec![HitValue::Int(1), HitValue::Int(3)])
            ),
            one("db.query", "nums", HitValue::Int(10)),
        ]
    );
}

/// Search looks at the table part by part and stops early; whatever it returns must be what
/// the whole-table evaluation (a limit above the number of traces) says of the same traces,
/// and it must return as many traces as there are, up to `limit`; the most recent search
/// (walking traces newest first) returns exactly the newest of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_by_parts_answers_as_the_whole_table() {
    let fx = &Fixture::load().await;
    let cases = common::cases();
    let mut checked = 0;
    let mut failures = Vec::new();
    let cases = cases
        .iter()
        .filter(|c| c.expect.is_some() && !c.query.contains("with("));
    for (i, case) in cases.enumerate() {
        let tenant = case.tenant.as_deref().unwrap_or(TENANT);
        let Ok(exact) = fx
            .engine
            .traceql_search(tenant, &request(&case.query, 1000, 1000))
            .await
        else {
            failures.push(format!("{}: the whole-table search failed", case.query));
            continue;
        };
        let recent = format!("{} with(most_recent=true)", case.query);
        for limit in [1, 2, 1000] {
            let newest = match fx.engine.traceql_search(tenant, &request(&recent, limit, 1000)).await {
                Ok(found) => found.hits,
                Err(e) => {
                    failures.push(format!("{recent} (limit {limit}): {e}"));
                    continue;
                }
            };
            if newest[..] != exact.hits[..exact.hits.len().min(limit)] {
                failures.push(format!(
                    "{recent} (limit {limit}): {newest:?}\n  not the newest of {:?}",
                    exact.hits
                ));
            }
        }
        // Every case whole; every eighth also stopping after its first trace.
        let limits: &[usize] = if i % 8 == 0 { &[1, 1000] } else { &[1000] };
        for &limit in limits {
            let found = fx
                .engine
                .traceql_search(tenant, &request(&case.query, limit, 1000))
                .await
                .unwrap()
                .hits;
            if found.len() != exact.hits.len().min(limit) {
                failures.push(format!(
                    "{} (limit {limit}): {} traces, the whole table has {}",
                    case.query,
                    found.len(),
                    exact.hits.len()
                ));
            }
            for hit in &found {
                match exact.hits.iter().find(|h| h.trace_id == hit.trace_id) {
                    Some(h) if h == hit => {}
                    Some(h) => failures.push(format!("{} (limit {limit}):\n  {hit:?}\n  {h:?}", case.query)),
                    None => failures.push(format!(
                        "{} (limit {limit}): {} matches nothing",
                        case.query, hit.trace_id
                    )),
                }
            }
        }
        checked += 1;
    }
    assert!(checked > 100, "only {checked} cases checked");
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// A lone spanset expression's hits (`{ a }`, `{ a } && { b }`, `{ a } || { b }`, ...) come
/// from its matching rows and their traces' rows, without the search plan: for every case, and
/// windows that cut traces, they are exactly the hits of the whole search plan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lone_filters_answer_as_the_whole_plan() {
    let fx = &Fixture::load().await;
    let whole = SearchPlans::whole_plans_only();
    let mut failures = Vec::new();
    let (mut lone, mut joined) = (0, 0);
    let runs = [
        (1, None, None),
        (3, Some(BASE_NS + 4000 * MS), None),
        (3, Some(BASE_NS), Some(BASE_NS + 1500 * MS)),
        (1000, None, None),
    ];
    for case in common::cases().iter().filter(|c| c.expect.is_some()) {
        let tenant = case.tenant.as_deref().unwrap_or(TENANT);
        let ctx = fx.engine.context(tenant).await.unwrap();
        let filters = lone_filters(&case.query);
        lone += usize::from(filters > 0);
        joined += usize::from(filters > 1);
        for (spss, start, end) in runs {
            let mut r = request(&case.query, 1000, spss);
            (r.start_unix_nano, r.end_unix_nano) = (start, end);
            let found = fx.engine.traceql_search(tenant, &r).await.unwrap().hits;
            let reference = search(&ctx, &whole, &fx.warehouse, tenant, &r, &mut |_| {}).await;
            let reference = reference.unwrap().hits;
            if found != reference {
                failures.push(format!(
                    "{} (spss {spss}, {start:?}..{end:?}):\n  {found:?}\n  {reference:?}",
                    case.query
                ));
            }
        }
    }
    assert!(lone > 50, "only {lone} lone spanset expressions among the cases");
    assert!(
        joined > 10,
        "only {joined} lone filters joined by && or || among the cases"
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The filters of `query` when it is a lone spanset expression (filters on each span's own
/// row joined by `&&` and `||`), else 0.
fn lone_filters(query: &str) -> usize {
    let Ok(q) = tracehouse_traceql::compile(query) else {
        return 0;
    };
    let schema = tracehouse_warehouse::schema::spans_schema();
    let scan = datafusion::logical_expr::table_scan(Some("spans"), &schema, None)
        .unwrap()
        .build()
        .unwrap();
    let options = tracehouse_traceql::PlanOptions::default();
    match tracehouse_traceql::plan_lone_filter(&q, scan, &options) {
        Ok(Some(lone)) => lone.flags,
        _ => 0,
    }
}

/// A tenant of `copies` copies of the first fixture part (3 traces, 12 spans each copy), every
/// copy under trace ids of its own spread over the id space: two flushed files and live spans
/// (appended in halves of a copy), enough spans for a search to read many trace-id ranges.
async fn many_copies(copies: usize) -> (tempfile::TempDir, tracehouse_sql::QueryEngine) {
    use tracehouse_ingest::otlp::{BodyFormat, parse_request, request_to_batch};
    use tracehouse_warehouse::{Warehouse, WarehouseConfig};
    let dir = tempfile::tempdir().unwrap();
    let warehouse = Warehouse::open(WarehouseConfig::local(dir.path())).await.unwrap();
    let body = std::fs::read_to_string(common::dir().join("part1.json")).unwrap();
    let mix = |x: u64| {
        let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let mut batches = Vec::new();
    for copy in 0..copies {
        // Each copy a second later than the one before.
        let mut text = shift_times(&body, copy as i64 * 1_000_000_000);
        for (t, digit) in ["1", "2", "3"].iter().enumerate() {
            let n = (copy * 3 + t) as u64;
            text = text.replace(
                &digit.repeat(32),
                &format!("{:016x}{:016x}", mix(n), mix(n + (1 << 40))),
            );
        }
        let batch = request_to_batch(&parse_request(text.as_bytes(), BodyFormat::Json).unwrap()).unwrap();
        if copy >= copies * 4 / 5 {
            // Live spans in many chunks (many live segments), cut in the middle of a copy's
            // traces.
            let (rows, half) = (batch.num_rows(), batch.num_rows() / 2);
            batches.push(batch);
            if batches.len() == LIVE_CHUNK_COPIES || copy + 1 == copies {
                let all = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
                let cut = all.num_rows() - rows + half;
                warehouse.append(TENANT, all.slice(0, cut)).await.unwrap();
                warehouse
                    .append(TENANT, all.slice(cut, all.num_rows() - cut))
                    .await
                    .unwrap();
                batches.clear();
            }
            continue;
        }
        batches.push(batch);
        // Two files, then the rest live.
        if copy + 1 == copies * 2 / 5 || copy + 1 == copies * 4 / 5 {
            let batch = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
            warehouse.append(TENANT, batch).await.unwrap();
            batches.clear();
            let tenant = warehouse.tenant(TENANT).unwrap();
            assert!(warehouse.flush_tenant(&tenant).await.unwrap() > 0);
        }
    }
    let engine = tracehouse_sql::QueryEngine::new(warehouse, Default::default()).unwrap();
    (dir, engine)
}

/// Copies of the fixture appended (in two chunks) at once to the live spans of [`many_copies`].
const LIVE_CHUNK_COPIES: usize = 16;

/// `json` with every `...TimeUnixNano` value `by_ns` later.
fn shift_times(json: &str, by_ns: i64) -> String {
    let key = "TimeUnixNano\": \"";
    let mut out = String::with_capacity(json.len());
    let mut rest = json;
    while let Some(at) = rest.find(key) {
        let (head, tail) = rest.split_at(at + key.len());
        let end = tail.find('"').unwrap();
        let ns: i64 = tail[..end].parse().unwrap();
        out.push_str(head);
        out.push_str(&(ns + by_ns).to_string());
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// Over many traces in files and live spans (many trace-id ranges, when a search falls back to
/// them), every search returns the traces the SQL `traceql()` function finds over the whole
/// table (all of them up to a large limit, in both modes; only such traces with a small one),
/// and each hit as the most-recent search has it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_over_many_ranges_finds_what_sql_finds() {
    let (_dir, engine) = many_copies(4_000).await;
    let mut failures = Vec::new();
    let cases = common::cases();
    let cases = cases
        .iter()
        .filter(|c| c.expect.is_some() && c.tenant.is_none() && !c.query.contains("with("))
        .step_by(4);
    let mut checked = 0;
    for case in cases {
        let sql = format!(
            "SELECT DISTINCT trace_id FROM traceql({})",
            tracehouse_sql::sql_literal(&case.query)
        );
        let Ok(batches) = engine.sql(TENANT, &sql).await else {
            continue;
        };
        let want: std::collections::BTreeSet<String> = batches
            .iter()
            .flat_map(|b| {
                let ids = arrow::array::AsArray::as_string::<i32>(b.column(0));
                ids.iter().flatten().map(str::to_string).collect::<Vec<_>>()
            })
            .collect();
        let recent = format!("{} with(most_recent=true)", case.query);
        let all = engine
            .traceql_search(TENANT, &request(&recent, 10_000, 3))
            .await
            .unwrap();
        let first = engine
            .traceql_search(TENANT, &request(&case.query, 10_000, 3))
            .await
            .unwrap();
        let few = engine
            .traceql_search(TENANT, &request(&case.query, 5, 3))
            .await
            .unwrap();
        let newest = engine.traceql_search(TENANT, &request(&recent, 5, 3)).await.unwrap();
        if newest.hits[..] != first.hits[..first.hits.len().min(5)] {
            failures.push(format!("{recent} (limit 5): not the newest five"));
        }
        if case.query.trim() == "{ }" && newest.metrics.inspected_spans * 10 > all.metrics.inspected_spans {
            failures.push(format!(
                "{recent} (limit 5): read {} spans of {}",
                newest.metrics.inspected_spans, all.metrics.inspected_spans
            ));
        }
        for (mode, found) in [("most recent", &all), ("first found", &first)] {
            let got: std::collections::BTreeSet<String> = found.hits.iter().map(|h| h.trace_id.clone()).collect();
            if !got.is_subset(&want) || got.len() != want.len().min(10_000) {
                failures.push(format!(
                    "{} ({mode}): {} traces, sql {}",
                    case.query,
                    got.len(),
                    want.len()
                ));
            }
        }
        if few.hits.len() != want.len().min(5) {
            failures.push(format!("{} (limit 5): {} traces", case.query, few.hits.len()));
        }
        for hit in &few.hits {
            if all.hits.iter().find(|h| h.trace_id == hit.trace_id) != Some(hit) {
                failures.push(format!("{} (limit 5): {} differs", case.query, hit.trace_id));
            }
        }
        if case.query.trim() == "{ }" && few.metrics.inspected_spans * 10 > first.metrics.inspected_spans {
            failures.push(format!(
                "{} (limit 5): read {} spans of {}",
                case.query, few.metrics.inspected_spans, first.metrics.inspected_spans
            ));
        }
        checked += 1;
    }
    assert!(checked > 15, "only {checked} cases checked");
    // A most-recent walk that finds nothing gives up and reads the table range by range.
    let none = engine
        .traceql_search(TENANT, &request("{ duration > 1000s } with(most_recent=true)", 5, 3))
        .await
        .unwrap();
    assert!(none.hits.is_empty());
    assert!(
        none.metrics.total_jobs >= 4,
        "{} ranges: {:?}",
        none.metrics.total_jobs,
        none.metrics
    );
    // A condition on a cheap column: the walk reads a batch of traces with it, then few whole.
    let first = engine
        .traceql_search(TENANT, &request("{ status = error }", 10_000, 3))
        .await
        .unwrap();
    let newest = engine
        .traceql_search(TENANT, &request("{ status = error } with(most_recent=true)", 5, 3))
        .await
        .unwrap();
    assert_eq!(newest.hits[..], first.hits[..5]);
    // (The candidate condition is decided on every row of the pages read, which count.)
    assert!(
        newest.metrics.inspected_spans < first.metrics.inspected_spans,
        "{} spans read of {}",
        newest.metrics.inspected_spans,
        first.metrics.inspected_spans
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// One span of trace `aa…a` as an OTLP/JSON request: `span` (hex digit repeated), its parent,
/// status code and string attribute `tag`.
fn one_span(span: char, parent: Option<char>, status: u8, tag: &str) -> arrow::array::RecordBatch {
    use tracehouse_ingest::otlp::{BodyFormat, parse_request, request_to_batch};
    let parent = parent.map_or(String::new(), |p| p.to_string().repeat(16));
    let json = format!(
        r#"{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"svc"}}}}]}},
        "scopeSpans":[{{"spans":[{{"traceId":"{trace}","spanId":"{id}","parentSpanId":"{parent}","name":"op",
        "kind":2,"startTimeUnixNano":"{BASE_NS}","endTimeUnixNano":"{end}","status":{{"code":{status}}},
        "attributes":[{{"key":"tag","value":{{"stringValue":"{tag}"}}}}]}}]}}]}}]}}"#,
        trace = "a".repeat(32),
        id = span.to_string().repeat(16),
        end = BASE_NS + 10 * MS,
    );
    request_to_batch(&parse_request(json.as_bytes(), BodyFormat::Json).unwrap()).unwrap()
}

/// A trace split across two data files, or across two live segments, where only one holds
/// the value a query needs (its bloom filters or value hashes rule the other out): the trace
/// is still evaluated whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_split_across_files_is_searched_whole() {
    let first = one_span('1', None, 0, "only-here");
    let second = one_span('2', Some('1'), 2, "elsewhere");
    // Live, the first chunk holds another trace too, so that the two stay in segments of
    // their own (the second, smaller, does not merge into the first).
    let other = one_span_traces(1, |_| "other".into());
    let first_chunk = arrow::compute::concat_batches(&first.schema(), [&first, &other]).unwrap();
    let (_files, in_files) = in_files([first, second.clone()]).await;
    let (_live, live) = in_live([first_chunk, second]).await;
    for (engine, layout) in [(in_files, "files"), (live, "live")] {
        split_trace_is_searched_whole(&engine, layout).await;
    }
}

async fn split_trace_is_searched_whole(engine: &tracehouse_sql::QueryEngine, layout: &str) {
    for hint in ["", " with(most_recent=true)"] {
        let q = format!("{{ span.tag = \"only-here\" }} > {{ status = error }}{hint}");
        let found = engine.traceql_search(TENANT, &request(&q, 20, 3)).await.unwrap();
        assert_eq!(found.hits.len(), 1, "{layout}: {q} {found:?}");
        let q = format!("{{ span.tag = \"only-here\" }}{hint}");
        let found = engine.traceql_search(TENANT, &request(&q, 20, 3)).await.unwrap();
        let stats = &found.hits[0].service_stats;
        assert_eq!((stats[0].span_count, stats[0].error_count), (2, 1), "{layout}: {q}");
        // The matching span in the older source only: a first-found walk tries the trace in
        // the newer one first, where it fails, and again in the older one.
        let q = format!("{{ status = unset && span.tag != \"other\" }}{hint}");
        let found = engine.traceql_search(TENANT, &request(&q, 20, 3)).await.unwrap();
        assert_eq!(found.hits.len(), 1, "{layout}: {q}");
        let stats = &found.hits[0].service_stats;
        assert_eq!((stats[0].span_count, stats[0].error_count), (2, 1), "{layout}: {q}");
        // Each value in another source: neither holds both, the trace does.
        let q = format!("{{ span.tag = \"only-here\" }} && {{ span.tag = \"elsewhere\" }}{hint}");
        let found = engine.traceql_search(TENANT, &request(&q, 20, 3)).await.unwrap();
        assert_eq!(found.hits.len(), 1, "{layout}: {q}");
        let q = format!("{{ span.tag = \"nowhere\" }}{hint}");
        let found = engine.traceql_search(TENANT, &request(&q, 20, 3)).await.unwrap();
        assert!(found.hits.is_empty(), "{layout}: {q}");
        let read = (found.metrics.inspected_bytes, found.metrics.inspected_spans);
        assert_eq!(read, (0, 0), "{layout}: {q}: nothing can hold it");
    }
}

/// One data file of two row groups, where only the second's bloom filters may hold the value
/// a query needs (the last trace's): a search takes only the traces within the second's trace
/// ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_groups_that_cannot_hold_a_value_are_skipped() {
    use tracehouse_warehouse::table::ROW_GROUP_ROWS;
    let traces = ROW_GROUP_ROWS + ROW_GROUP_ROWS / 8;
    let batch = one_span_traces(traces, |i| match i {
        i if i + 1 == traces => "needle".to_string(),
        i => format!("common-{}", i % 100),
    });
    let (_dir, engine) = in_files([batch]).await;
    for hint in ["", " with(most_recent=true)"] {
        let q = format!("{{ span.tag = \"needle\" }}{hint}");
        let found = engine.traceql_search(TENANT, &request(&q, 20, 3)).await.unwrap();
        assert_eq!(found.hits.len(), 1, "{q}");
        assert_eq!(found.hits[0].trace_id, format!("{traces:032x}"), "{q}");
        let inspected = found.metrics.inspected_spans;
        // Walking the first row group's traces too would inspect each of its spans.
        assert!(
            inspected > 0 && inspected < ROW_GROUP_ROWS as u64,
            "{q}: {inspected} spans"
        );
        let q = format!("{{ span.tag = \"common-7\" }}{hint}");
        let found = engine.traceql_search(TENANT, &request(&q, 20, 3)).await.unwrap();
        assert_eq!(found.hits.len(), 20, "{q}");
    }
}

/// A comparison of an integer attribute that feeds a dedicated column first
/// (`span.http.response.status_code`) is decided on that column in files whose span
/// attributes hold no double, and on the map in files that do: either way a search finds
/// exactly the spans whose value passes (doubles too, and numeric strings not).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_comparisons_find_the_same_with_or_without_doubles() {
    let key = "http.response.status_code";
    let ints = one_span_traces_with(0..200, key, |i| match i % 10 {
        0 => Value::IntValue(503),
        3 => Value::StringValue("503".into()),
        _ => Value::IntValue(200),
    });
    let doubles = one_span_traces_with(200..400, key, |i| match i % 10 {
        0 => Value::DoubleValue(503.0),
        5 => Value::IntValue(504),
        _ => Value::IntValue(200),
    });
    let mut want: Vec<String> = (0..400)
        .filter(|i| i % 10 == 0 || (*i >= 200 && i % 10 == 5))
        .map(|i| format!("{:032x}", i + 1))
        .collect();
    want.sort();
    let (_files, in_files) = in_files([ints.clone(), doubles.clone()]).await;
    let (_live, in_live) = in_live([ints, doubles]).await;
    for (engine, layout) in [(in_files, "files"), (in_live, "live")] {
        for hint in ["", " with(most_recent=true)"] {
            let q = format!("{{ span.{key} >= 500 }}{hint}");
            let found = engine.traceql_search(TENANT, &request(&q, 1000, 3)).await.unwrap();
            let mut got: Vec<String> = found.hits.into_iter().map(|h| h.trace_id).collect();
            got.sort();
            assert_eq!(got, want, "{q} over {layout}");
        }
    }
}

/// An engine over a warehouse holding each of `batches` in a data file of its own.
async fn in_files(
    batches: impl IntoIterator<Item = arrow::array::RecordBatch>,
) -> (tempfile::TempDir, tracehouse_sql::QueryEngine) {
    each_appended(batches, true).await
}

/// An engine over a warehouse holding each of `batches` as a chunk of live spans.
async fn in_live(
    batches: impl IntoIterator<Item = arrow::array::RecordBatch>,
) -> (tempfile::TempDir, tracehouse_sql::QueryEngine) {
    each_appended(batches, false).await
}

/// An engine over a warehouse to which each of `batches` was appended, and flushed when `flush`.
async fn each_appended(
    batches: impl IntoIterator<Item = arrow::array::RecordBatch>,
    flush: bool,
) -> (tempfile::TempDir, tracehouse_sql::QueryEngine) {
    use tracehouse_warehouse::{Warehouse, WarehouseConfig};
    let dir = tempfile::tempdir().unwrap();
    let warehouse = Warehouse::open(WarehouseConfig::local(dir.path())).await.unwrap();
    for batch in batches {
        warehouse.append(TENANT, batch).await.unwrap();
        if flush {
            let tenant = warehouse.tenant(TENANT).unwrap();
            assert!(warehouse.flush_tenant(&tenant).await.unwrap() > 0);
        }
    }
    let engine = tracehouse_sql::QueryEngine::new(warehouse, Default::default()).unwrap();
    (dir, engine)
}

/// `traces` traces of one span each, trace `i` with id `i + 1`, starting `i` ms after the
/// fixtures' time zero, with the string attribute `tag` of `tag(i)`.
fn one_span_traces(traces: usize, tag: impl Fn(usize) -> String) -> arrow::array::RecordBatch {
    one_span_traces_with(0..traces, "tag", |i| Value::StringValue(tag(i)))
}

/// Traces of one span each, trace `i` (of `ids`) with id `i + 1`, starting `i` ms after the
/// fixtures' time zero, with the attribute `key` of `value(i)`.
fn one_span_traces_with(
    ids: std::ops::Range<usize>,
    key: &str,
    value: impl Fn(usize) -> Value,
) -> arrow::array::RecordBatch {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    let spans = ids
        .map(|i| {
            let start = (BASE_NS + i as i64 * MS) as u64;
            Span {
                trace_id: (i as u128 + 1).to_be_bytes().to_vec(),
                span_id: (i as u64 + 1).to_be_bytes().to_vec(),
                name: "op".into(),
                kind: 2,
                start_time_unix_nano: start,
                end_time_unix_nano: start + MS as u64,
                attributes: vec![KeyValue {
                    key: key.into(),
                    value: Some(AnyValue { value: Some(value(i)) }),
                    ..Default::default()
                }],
                ..Default::default()
            }
        })
        .collect();
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    tracehouse_ingest::otlp::request_to_batch(&request).unwrap()
}

/// A query whose attributes are all compared reads of the attribute maps only the value
/// fields it compares (`span.items >= 3` the keys and the ints); its hits, with the attributes
/// they return, are those of the same query read whole (`&& true` makes a query read maps
/// whole), in both modes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn narrowed_map_reads_return_what_whole_reads_do() {
    let (_dir, engine) = many_copies(200).await;
    let queries = [
        "{ span.items >= 3 }",
        "{ .items > 1 && span.ratio > 0.5 }",
        r#"{ .db.system = "postgres" && span.items = 7 }"#,
        r#"{ .db.system =~ "post.*" && duration > 1ms }"#,
        r#"{ resource.service.name = "cart" && .items > 0 }"#,
    ];
    for query in queries {
        for hint in ["", " with(most_recent=true)"] {
            let narrowed = format!("{query}{hint}");
            let whole = format!("{} && true }}{hint}", query.trim_end_matches('}').trim_end());
            let a = engine
                .traceql_search(TENANT, &request(&narrowed, 50, 100))
                .await
                .unwrap();
            let b = engine.traceql_search(TENANT, &request(&whole, 50, 100)).await.unwrap();
            assert!(!a.hits.is_empty(), "{narrowed} finds nothing");
            assert_eq!(a.hits, b.hits, "{narrowed} and {whole}");
            let returned = a.hits.iter().flat_map(|h| &h.spansets).flat_map(|s| &s.spans);
            assert!(returned.clone().all(|s| !s.attributes.is_empty()), "{narrowed}: values");
            assert!(
                a.metrics.inspected_bytes < b.metrics.inspected_bytes,
                "{narrowed} read {} bytes, {whole} {}",
                a.metrics.inspected_bytes,
                b.metrics.inspected_bytes
            );
        }
    }
}
