//! TraceQL metrics over the fixtures (part 1 and 2 in files, part 3 live): every series and
//! sample of a query range equal to what SQL counts with Tempo's right-closed buckets, the
//! samples stamped at their bucket's end, typed `by()` labels with Tempo's nil series, the
//! ungrouped series named `__name__`, and the errors of queries that are not metrics queries
//! or return too many series.

mod common;

use std::collections::BTreeMap;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Float64Type, Int64Type};
use common::{FIDELITY, Fixture, TENANT};
use tracehouse_sql::QueryLimits;
use tracehouse_sql::metrics::{MetricsRequest, Series};
use tracehouse_sql::search::HitValue;

/// 2026-11-20T12:00:00Z, the fixtures' time zero.
const BASE_NS: i64 = 1_795_176_000_000_000_000;
const SECOND: i64 = 1_000_000_000;

fn request(query: &str, step_s: i64) -> MetricsRequest {
    MetricsRequest {
        query: query.into(),
        // Not on a step: the range is aligned as Tempo aligns it.
        start_unix_nano: BASE_NS - 3_600 * SECOND + 7 * SECOND,
        end_unix_nano: BASE_NS + 3_600 * SECOND - 3 * SECOND,
        step_ns: step_s * SECOND,
        max_series: 1_000,
    }
}

async fn series(fx: &Fixture, tenant: &str, r: &MetricsRequest) -> Vec<Series> {
    let limits = QueryLimits::default();
    fx.engine.metrics_query_range(tenant, r, &limits).await.unwrap().series
}

/// `(label text, timestamp ms) -> value` of `sql`'s rows `(label, bucket, value)`, bucket `b`
/// stamped at the end of `(start + b*step, start + (b+1)*step]`; the range as Tempo aligns it.
async fn sql_samples(
    fx: &Fixture,
    tenant: &str,
    r: &MetricsRequest,
    label: &str,
    value: &str,
) -> BTreeMap<(String, i64), f64> {
    let step = r.step_ns;
    let start = r.start_unix_nano - r.start_unix_nano % step - step;
    let end = r.end_unix_nano + (step - r.end_unix_nano % step) % step;
    // ceil((t - start) / step) - 1, computed apart from the planner's formula.
    let bucket = format!("CAST(ceil(CAST(start_time_unix_nano - {start} AS DOUBLE) / {step}) AS BIGINT) - 1");
    let sql = format!(
        "SELECT {label}, {bucket} AS b, {value} FROM spans WHERE start_time_unix_nano > {start} \
         AND start_time_unix_nano <= {end} GROUP BY 1, 2"
    );
    let mut out = BTreeMap::new();
    for b in fx.engine.sql(tenant, &sql).await.unwrap() {
        let label = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Utf8).unwrap();
        let (label, value) = (label.as_string::<i32>(), b.column(2).as_primitive::<Float64Type>());
        let bucket = b.column(1).as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            let ts_ms = (start + (bucket.value(i) + 1) * step) / 1_000_000;
            let text = if label.is_null(i) {
                "nil".to_string()
            } else {
                label.value(i).to_string()
            };
            if value.is_valid(i) {
                out.insert((text, ts_ms), value.value(i));
            }
        }
    }
    out
}

/// The samples of `series` keyed as [`sql_samples`] keys them, by the text of label `label`.
fn keyed(series: &[Series], label: &str) -> BTreeMap<(String, i64), f64> {
    let text = |v: &HitValue| match v {
        HitValue::Str(s) => s.clone(),
        HitValue::Int(i) => i.to_string(),
        HitValue::Nil => "nil".into(),
        other => format!("{other:?}"),
    };
    let mut out = BTreeMap::new();
    for s in series {
        let (_, v) = s.labels.iter().find(|(k, _)| k == label).expect("the label");
        for (ts, value) in &s.samples {
            if *value != 0.0 {
                out.insert((text(v), *ts), *value);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_and_rates_equal_sql_per_bucket() {
    let fx = &Fixture::load().await;
    let r = request("{ } | count_over_time() by (resource.service.name)", 60);
    let got = series(fx, TENANT, &r).await;
    assert!(got.len() >= 3, "{got:?}");
    // Counts fill every bucket of the aligned range: 10:59 to 13:00 in minutes.
    for s in &got {
        assert_eq!(s.samples.len(), 121, "{s:?}");
        assert_eq!(s.samples[0].0, (BASE_NS - 3_600 * SECOND) / 1_000_000);
        assert!(s.samples.windows(2).all(|w| w[1].0 - w[0].0 == 60_000));
        assert!(matches!(s.labels.as_slice(), [(k, HitValue::Str(_))] if k == "resource.service.name"));
    }
    let want = sql_samples(fx, TENANT, &r, "service_name", "CAST(count(*) AS DOUBLE)").await;
    assert!(!want.is_empty());
    assert_eq!(keyed(&got, "resource.service.name"), want);

    // rate() is the count per second of step; without by() one series named __name__=rate.
    let r = request("{ status = error } | rate()", 30);
    let got = series(fx, TENANT, &r).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        got[0].labels,
        vec![("__name__".to_string(), HitValue::Str("rate".into()))]
    );
    let want = sql_samples(
        fx,
        TENANT,
        &r,
        "'rate'",
        "CAST(count(CASE WHEN status_code = 'error' THEN 1 END) AS DOUBLE) / 30",
    )
    .await;
    let got: BTreeMap<(String, i64), f64> = (got[0].samples.iter())
        .filter(|(_, v)| *v != 0.0)
        .map(|(ts, v)| (("rate".to_string(), *ts), *v))
        .collect();
    let want: BTreeMap<(String, i64), f64> = want.into_iter().filter(|(_, v)| *v != 0.0).collect();
    assert!(!want.is_empty());
    assert_eq!(got, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_time_functions_equal_sql_and_skip_empty_buckets() {
    let fx = &Fixture::load().await;
    for (func, agg) in [("min", "min"), ("max", "max"), ("avg", "avg"), ("sum", "sum")] {
        let r = request(
            &format!("{{ kind = server }} | {func}_over_time(duration) by (resource.service.name)"),
            60,
        );
        let got = series(fx, TENANT, &r).await;
        // Durations in seconds, as Tempo gives them; buckets without server spans have no
        // sample (SQL's null), so SQL over kind = server only.
        let want = sql_samples(
            fx,
            TENANT,
            &r,
            "service_name",
            &format!("{agg}(CASE WHEN kind = 'server' THEN CAST(duration_ns AS DOUBLE) END) / 1e9"),
        )
        .await;
        assert!(!want.is_empty(), "{func}");
        let got = keyed(&got, "resource.service.name");
        assert_eq!(got.len(), want.len(), "{func}: {got:?} vs {want:?}");
        for (k, v) in &want {
            let g = got.get(k).unwrap_or_else(|| panic!("{func}: no sample {k:?}"));
            assert!((g - v).abs() < 1e-9, "{func} {k:?}: {g} vs {v}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_keeps_label_types_and_nil() {
    let fx = &Fixture::load().await;
    let r = request("{ } | count_over_time() by (span.http.response.status_code)", 3_600);
    let got = series(fx, TENANT, &r).await;
    let mut totals: BTreeMap<String, f64> = BTreeMap::new();
    for s in &got {
        let [(k, v)] = s.labels.as_slice() else { panic!("{s:?}") };
        assert_eq!(k, "span.http.response.status_code");
        let key = match v {
            HitValue::Int(i) => i.to_string(),
            HitValue::Nil => "nil".into(),
            other => panic!("a status code label typed {other:?}"),
        };
        *totals.entry(key).or_default() += s.samples.iter().map(|(_, v)| v).sum::<f64>();
    }
    assert!(totals.contains_key("nil"), "{totals:?}");
    // The fixtures write the attribute under its current key only: the dedicated column holds it.
    let want = fx
        .engine
        .sql(
            TENANT,
            "SELECT CAST(coalesce(CAST(http_status_code AS VARCHAR), 'nil') AS VARCHAR), \
             CAST(count(*) AS DOUBLE) FROM spans GROUP BY 1",
        )
        .await
        .unwrap();
    let mut sql: BTreeMap<String, f64> = BTreeMap::new();
    for b in &want {
        let k = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Utf8).unwrap();
        let (k, v) = (k.as_string::<i32>(), b.column(1).as_primitive::<Float64Type>());
        for i in 0..b.num_rows() {
            sql.insert(k.value(i).to_string(), v.value(i));
        }
    }
    assert_eq!(totals, sql);

    // The fidelity tenant's `code` is an int on some spans and a string on another: one
    // series each (200 and "200" apart), and nil for the spans without it.
    let r = request("{ } | count_over_time() by (span.code)", 3_600);
    let labels: Vec<HitValue> = series(fx, FIDELITY, &r)
        .await
        .into_iter()
        .map(|s| s.labels[0].1.clone())
        .collect();
    for want in [
        HitValue::Int(200),
        HitValue::Str("200".into()),
        HitValue::Int(404),
        HitValue::Nil,
    ] {
        assert!(labels.contains(&want), "{want:?} in {labels:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_errors_are_clear() {
    let fx = &Fixture::load().await;
    let limits = &QueryLimits::default();
    let run = |r: MetricsRequest| async move { fx.engine.metrics_query_range(TENANT, &r, limits).await };
    let e = run(request("{ status = error }", 60)).await.unwrap_err().to_string();
    assert!(e.contains("not a metrics query"), "{e}");
    let e = run(request("{ } | rate(", 60)).await.unwrap_err().to_string();
    assert!(e.contains("parse error"), "{e}");
    let mut r = request("{ } | rate() by (name)", 60);
    r.max_series = 2;
    let e = run(r).await.unwrap_err().to_string();
    assert!(e.contains("more than 2 series"), "{e}");
    let mut r = request("{ } | rate()", 1);
    r.start_unix_nano -= 30 * 24 * 3_600 * SECOND;
    let e = run(r).await.unwrap_err().to_string();
    assert!(e.contains("steps"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sql_function_answers_as_the_api() {
    let fx = &Fixture::load().await;
    let r = request("{ } | count_over_time() by (resource.service.name)", 60);
    let api = keyed(&series(fx, TENANT, &r).await, "resource.service.name");
    let sql = format!(
        "SELECT \"resource.service.name\", CAST(time AS BIGINT) / 1000000, value \
         FROM traceql_metrics('{{ }} | count_over_time() by (resource.service.name)', {}, {}, '1m')",
        r.start_unix_nano, r.end_unix_nano
    );
    let mut rows = BTreeMap::new();
    for b in fx.engine.sql(TENANT, &sql).await.unwrap() {
        let label = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Utf8).unwrap();
        let (label, ts, value) = (
            label.as_string::<i32>(),
            b.column(1).as_primitive::<Int64Type>(),
            b.column(2).as_primitive::<Float64Type>(),
        );
        for i in 0..b.num_rows() {
            rows.insert((label.value(i).to_string(), ts.value(i)), value.value(i));
        }
    }
    assert!(!rows.is_empty());
    assert_eq!(rows, api);

    // Times as text (unix seconds, RFC 3339), a step in seconds; ungrouped: time and value.
    let batches = fx
        .engine
        .sql(
            TENANT,
            "SELECT sum(value) FROM traceql_metrics('{ status = error } | count_over_time()', \
             '2026-11-20T11:00:00Z', '1795179600', '30')",
        )
        .await
        .unwrap();
    let errors = fx
        .engine
        .sql(
            TENANT,
            "SELECT CAST(count(*) AS DOUBLE) FROM spans WHERE status_code = 'error'",
        )
        .await
        .unwrap();
    assert_eq!(
        batches[0].column(0).as_primitive::<Float64Type>().value(0),
        errors[0].column(0).as_primitive::<Float64Type>().value(0)
    );
    let e = fx
        .engine
        .sql(
            TENANT,
            "SELECT * FROM traceql_metrics('{ } | rate()', 'soon', 'later', '1m')",
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("traceql_metrics() takes four literals"), "{e}");
}
