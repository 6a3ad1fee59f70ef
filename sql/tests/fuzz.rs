//! Fuzzing the SQL front (proptest): random token soup, deep nesting, long operator chains and
//! hostile statements go through the one entry point every front uses
//! (`QueryEngine::plan_sql` and `execute`) against a real warehouse. Nothing may panic or
//! overflow a stack; every text is either refused with an engine error or runs read-only under
//! a short timeout. Cases: `PROPTEST_CASES` (the test script bounds it).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Fixture, TENANT};
use proptest::prelude::*;
use tracehouse_sql::{QueryEngine, QueryEngineConfig, QueryLimits};

const WORDS: &[&str] = &[
    "SELECT",
    "FROM",
    "WHERE",
    "GROUP BY",
    "ORDER BY",
    "LIMIT",
    "spans",
    "traces",
    "count(*)",
    "name",
    "trace_id",
    "duration_ns",
    "attr(span_attributes, 'k')",
    "traceql('{ }')",
    "traceql('{ .a = 1 } >> { }')",
    "(",
    ")",
    ",",
    "+",
    "-",
    "*",
    "/",
    "=",
    "<>",
    "AND",
    "OR",
    "NOT",
    "1",
    "'x'",
    "NULL",
    "CASE WHEN",
    "THEN",
    "ELSE",
    "END",
    "JOIN",
    "ON",
    "UNION",
    "WITH",
    "AS",
    "t",
    "CREATE",
    "DROP",
    "TABLE",
    "VIEW",
    "EXTERNAL",
    "STORED AS CSV",
    "LOCATION '/etc/passwd'",
    "COPY",
    "TO '/tmp/x'",
    "SET",
    "datafusion.execution.batch_size",
    "=",
    "EXPLAIN",
    "INSERT INTO",
    "VALUES",
    "DELETE",
    "repeat('x', 100000000)",
    "generate_series(1, 10)",
    "range(1, 1000000000)",
    ";",
    "$1",
    "::",
    "text",
    "[",
    "]",
    "'",
    "\"",
    "--",
    "/*",
    "*/",
];

fn soup() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(WORDS), 1..40).prop_map(|w| w.join(" "))
}

/// Deep or long shapes: nesting and chains of every kind, of any length.
fn shapes() -> impl Strategy<Value = String> {
    (0usize..6, 1usize..6_000).prop_map(|(kind, n)| match kind {
        0 => format!("SELECT {}", vec!["1"; n].join("+")),
        1 => format!("SELECT {}1{}", "(".repeat(n), ")".repeat(n)),
        2 => format!(
            "SELECT count(*) FROM spans WHERE {}",
            vec!["name = 'x'"; n].join(" OR ")
        ),
        3 => format!("SELECT {}1", "-".repeat(n)),
        4 => format!(
            "SELECT count(*) FROM traceql('{}')",
            vec!["{ }"; n.min(200)].join(" >> ")
        ),
        _ => format!("SELECT {}1{}", "abs(".repeat(n.min(2_000)), ")".repeat(n.min(2_000))),
    })
}

fn engine() -> (Arc<Fixture>, Arc<QueryEngine>, tokio::runtime::Runtime) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_stack_size(32 << 20)
        .enable_all()
        .build()
        .unwrap();
    let fixture = Arc::new(runtime.block_on(Fixture::load()));
    let config = QueryEngineConfig {
        query_timeout: Duration::from_millis(500),
        max_memory_bytes: 256 << 20,
        ..QueryEngineConfig::default()
    };
    let engine = Arc::new(QueryEngine::new(fixture.warehouse.clone(), config).unwrap());
    (fixture, engine, runtime)
}

/// Plans and runs `sql`; an error is fine, a panic is not. DDL, DML and SET never succeed.
fn run(engine: &QueryEngine, runtime: &tokio::runtime::Runtime, sql: &str) {
    let started = std::time::Instant::now();
    if std::env::var_os("FUZZ_TRACE").is_some() {
        eprintln!("case: {}", &sql[..sql.len().min(300)]);
    }
    let outcome = runtime.block_on(async {
        let (ctx, plan) = engine.plan_sql(TENANT, sql).await?;
        let stream = engine.execute(&ctx.state(), plan, &QueryLimits::default()).await?;
        datafusion::physical_plan::common::collect(stream)
            .await
            .map_err(tracehouse_sql::Error::from)
    });
    if started.elapsed() > Duration::from_secs(5) {
        eprintln!("slow case ({:?}): {sql}", started.elapsed());
    }
    if outcome.is_ok() {
        let upper = sql.to_uppercase();
        for verb in ["CREATE ", "DROP ", "COPY ", "INSERT ", "DELETE ", "SET "] {
            assert!(!upper.trim_start().starts_with(verb), "ran a {verb}statement: {sql}");
        }
    }
}

#[test]
fn no_sql_text_panics_or_changes_state() {
    let (_fixture, engine, runtime) = engine();
    let before = runtime
        .block_on(engine.sql(TENANT, "SELECT count(*) FROM spans"))
        .unwrap();
    // Each case may run up to its timeout: a quarter of PROPTEST_CASES keeps the run short.
    let base = ProptestConfig::default();
    let config = ProptestConfig {
        failure_persistence: None,
        cases: (base.cases / 4).max(16),
        ..base
    };
    let cases = std::sync::atomic::AtomicUsize::new(0);
    proptest!(config, |(sql in prop_oneof![soup(), shapes()])| {
        run(&engine, &runtime, &sql);
        cases.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    });
    let ran = cases.into_inner();
    assert!(ran >= config.cases as usize, "{ran} cases ran");
    let after = runtime
        .block_on(engine.sql(TENANT, "SELECT count(*) FROM spans"))
        .unwrap();
    assert_eq!(before, after);
    runtime
        .block_on(engine.sql(TENANT, "SELECT count(*) FROM traces"))
        .unwrap();
}
