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
use tracehouse_sql::metrics::{MetricsLimits, MetricsRequest, Series};
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
        instant: false,
        exemplars: 0,
        limits: MetricsLimits::default(),
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
    // More series than the limit: Tempo's partial answer, cut to the limit.
    let mut r = request("{ } | rate() by (name)", 60);
    r.limits.max_series = 2;
    let cut = run(r).await.unwrap();
    assert_eq!((cut.series.len(), cut.truncated_at), (2, Some(2)));
    let whole = run(request("{ } | rate() by (name)", 60)).await.unwrap();
    assert!(whole.series.len() > 2 && whole.truncated_at.is_none());
    assert!(cut.series.iter().all(|s| whole.series.contains(s)));
    // Tempo's limits and messages: the range (24h by default) and the steps in it.
    let mut r = request("{ } | rate()", 60);
    r.start_unix_nano -= 30 * 24 * 3_600 * SECOND;
    let e = run(r).await.unwrap_err().to_string();
    assert!(e.contains("exceeds the maximum allowed duration of 24h0m0s"), "{e}");
    let mut r = request("{ } | rate()", 60);
    r.limits.max_intervals = 100;
    let e = run(r).await.unwrap_err().to_string();
    assert!(
        e.contains("step of 1m0s is too small, minimum step for given range is 1m11"),
        "{e}"
    );
    let e = run(request("({ } | rate()) % ({ } | rate())", 60))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("operator '%' is not defined between metrics"), "{e}");
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

/// A label's value as a float (`__bucket`, `p`).
fn float_label(s: &Series, name: &str) -> f64 {
    match s.labels.iter().find(|(k, _)| k == name) {
        Some((_, HitValue::Double(v))) => *v,
        other => panic!("{name} is not a float label of {s:?}: {other:?}"),
    }
}

fn text_label(s: &Series, name: &str) -> String {
    match s.labels.iter().find(|(k, _)| k == name) {
        Some((_, HitValue::Str(v))) => v.clone(),
        other => panic!("{name} is not a text label of {s:?}: {other:?}"),
    }
}

/// SQL's power-of-two bucket of a duration in seconds (an expression apart from the planner's).
const SQL_BOUND: &str = "power(2, ceil(log2(CAST(duration_ns AS DOUBLE)))) / 1e9";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histograms_count_spans_per_power_of_two_bucket() {
    let fx = &Fixture::load().await;
    let r = request(
        "{ kind = server } | histogram_over_time(duration) by (resource.service.name)",
        300,
    );
    let got = series(fx, TENANT, &r).await;
    let mut counts: BTreeMap<(String, String, i64), f64> = BTreeMap::new();
    for s in &got {
        // by() labels, then __bucket (seconds, a float); every bucket of the range has a sample.
        assert_eq!(s.labels[0].0, "resource.service.name", "{s:?}");
        assert_eq!(s.labels[1].0, "__bucket", "{s:?}");
        assert_eq!(s.samples.len(), 25, "{s:?}");
        let bound = float_label(s, "__bucket");
        for &(ts, v) in s.samples.iter().filter(|(_, v)| *v != 0.0) {
            counts.insert((text_label(s, "resource.service.name"), format!("{bound:e}"), ts), v);
        }
    }
    let label = format!("service_name || '|' || CAST({SQL_BOUND} AS VARCHAR)");
    let want = sql_samples(
        fx,
        TENANT,
        &r,
        &label,
        "CAST(count(CASE WHEN kind = 'server' AND duration_ns >= 2 THEN 1 END) AS DOUBLE)",
    )
    .await;
    let want: BTreeMap<(String, String, i64), f64> = (want.into_iter())
        .filter(|(_, v)| *v != 0.0)
        .map(|((label, ts), v)| {
            let (service, bound) = label.split_once('|').unwrap();
            (
                (service.to_string(), format!("{:e}", bound.parse::<f64>().unwrap()), ts),
                v,
            )
        })
        .collect();
    assert!(!want.is_empty());
    assert_eq!(counts, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quantiles_fall_in_the_bucket_of_the_exact_value() {
    let fx = &Fixture::load().await;
    let r = request(
        "{ kind = server } | quantile_over_time(duration, 0.5, 1) by (resource.service.name)",
        3_600,
    );
    let got = series(fx, TENANT, &r).await;
    // Exact quantiles per service and hour: the ceil(p * n)-th smallest duration.
    let (step, start) = (r.step_ns, r.start_unix_nano - r.start_unix_nano % r.step_ns - r.step_ns);
    let sql = format!(
        "SELECT service_name, CAST(ceil(CAST(start_time_unix_nano - {start} AS DOUBLE) / {step}) AS BIGINT) - 1, \
         array_sort(array_agg(duration_ns)) FROM spans WHERE kind = 'server' AND duration_ns >= 2 GROUP BY 1, 2"
    );
    let mut exact: BTreeMap<(String, i64), Vec<i64>> = BTreeMap::new();
    for b in fx.engine.sql(TENANT, &sql).await.unwrap() {
        let names = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Utf8).unwrap();
        let (buckets, lists) = (b.column(1).as_primitive::<Int64Type>(), b.column(2).as_list::<i32>());
        for i in 0..b.num_rows() {
            let d = lists.value(i);
            let ts_ms = (start + (buckets.value(i) + 1) * step) / 1_000_000;
            let key = (names.as_string::<i32>().value(i).to_string(), ts_ms);
            exact.insert(key, d.as_primitive::<Int64Type>().values().to_vec());
        }
    }
    let bound = |ns: i64| (ns as f64).log2().ceil().exp2() / 1e9;
    // Each exemplar goes to one quantile series, as Tempo gives it to the closest quantile.
    let mut seen = std::collections::BTreeSet::new();
    for s in &got {
        for e in &s.exemplars {
            let service = text_label(s, "resource.service.name");
            assert!(
                seen.insert((service, e.trace_id.clone(), e.span_id.clone())),
                "{e:?} twice"
            );
        }
    }
    assert!(!seen.is_empty());
    let mut checked = 0;
    for s in &got {
        let (service, p) = (text_label(s, "resource.service.name"), float_label(s, "p"));
        assert_eq!(s.labels.len(), 2, "{s:?}");
        // Zero where the hour has no server span of the service, as Tempo fills it.
        for &(ts, v) in &s.samples {
            let Some(durations) = exact.get(&(service.clone(), ts)) else {
                assert_eq!(v, 0.0, "{s:?}");
                continue;
            };
            let nth = ((p * durations.len() as f64).ceil() as usize).max(1);
            let want = bound(durations[nth - 1]);
            if p == 1.0 {
                assert_eq!(v, want, "{service}: the largest bucket's bound");
            } else {
                assert!(v > 0.0 && v <= want, "{service} p{p}: {v} above the bucket {want}");
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 2 * exact.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instant_queries_count_the_whole_range() {
    let fx = &Fixture::load().await;
    let mut r = request("{ } | count_over_time() by (resource.service.name)", 60);
    r.instant = true;
    let (start, end) = (BASE_NS - 3_600 * SECOND, BASE_NS + 3_600 * SECOND);
    (r.start_unix_nano, r.end_unix_nano, r.step_ns) = (start, end, end - start);
    let got = series(fx, TENANT, &r).await;
    let mut counts = BTreeMap::new();
    for s in &got {
        let [(ts, v)] = s.samples.as_slice() else {
            panic!("one value: {s:?}")
        };
        assert_eq!(*ts, end / 1_000_000);
        counts.insert(text_label(s, "resource.service.name"), *v);
    }
    let sql = format!(
        "SELECT service_name, CAST(count(*) AS DOUBLE) FROM spans \
         WHERE start_time_unix_nano >= {start} AND start_time_unix_nano <= {end} GROUP BY 1"
    );
    let mut want = BTreeMap::new();
    for b in fx.engine.sql(TENANT, &sql).await.unwrap() {
        let names = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Utf8).unwrap();
        for i in 0..b.num_rows() {
            let n = b.column(1).as_primitive::<Float64Type>().value(i);
            want.insert(names.as_string::<i32>().value(i).to_string(), n);
        }
    }
    assert!(!want.is_empty());
    assert_eq!(counts, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_stages_and_arithmetic_apply_to_the_series() {
    let fx = &Fixture::load().await;
    let all = series(
        fx,
        TENANT,
        &request("{ } | count_over_time() by (resource.service.name)", 600),
    )
    .await;
    // topk(2): at each timestamp, the two highest values.
    let top = series(
        fx,
        TENANT,
        &request("{ } | count_over_time() by (resource.service.name) | topk(2)", 600),
    )
    .await;
    let mut at: BTreeMap<i64, Vec<f64>> = BTreeMap::new();
    for s in &all {
        for &(ts, v) in &s.samples {
            at.entry(ts).or_default().push(v);
        }
    }
    for (ts, mut values) in at {
        values.sort_by(|a, b| b.total_cmp(a));
        let mut kept: Vec<f64> = (top.iter())
            .flat_map(|s| s.samples.iter().filter(|(t, _)| *t == ts).map(|(_, v)| *v))
            .collect();
        kept.sort_by(|a, b| b.total_cmp(a));
        assert_eq!(kept, values[..2.min(values.len())], "at {ts}");
    }
    // A filter keeps the samples above it, and the series that have one.
    let over = series(
        fx,
        TENANT,
        &request("{ } | count_over_time() by (resource.service.name) > 3", 600),
    )
    .await;
    let want: usize = all
        .iter()
        .map(|s| s.samples.iter().filter(|(_, v)| *v > 3.0).count())
        .sum();
    assert!(want > 0);
    assert_eq!(over.iter().map(|s| s.samples.len()).sum::<usize>(), want);
    assert!(over.iter().all(|s| s.samples.iter().all(|(_, v)| *v > 3.0)));

    // The error share per service: errors by service over the unlabelled total, times 100.
    let q = "100 * (({ status = error } | count_over_time() by (resource.service.name)) / ({ } | count_over_time()))";
    let share = series(fx, TENANT, &request(q, 600)).await;
    let errors = series(
        fx,
        TENANT,
        &request("{ status = error } | count_over_time() by (resource.service.name)", 600),
    )
    .await;
    let total = &series(fx, TENANT, &request("{ } | count_over_time()", 600)).await[0];
    let mut compared = 0;
    for e in &errors {
        let s = share
            .iter()
            .find(|s| s.labels == e.labels)
            .expect("a share per service");
        for &(ts, n) in &e.samples {
            let t = total.samples.iter().find(|(x, _)| *x == ts).unwrap().1;
            let got = s.samples.iter().find(|(x, _)| *x == ts).map(|(_, v)| *v);
            if t == 0.0 {
                assert_eq!(got, None, "0 / 0 is NaN: no sample");
            } else {
                assert_eq!(got, Some(100.0 * n / t), "{ts}");
                compared += 1;
            }
        }
    }
    assert!(compared > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exemplars_are_matching_spans_of_their_series() {
    let fx = &Fixture::load().await;
    let q = "{ kind = server } | max_over_time(duration) by (resource.service.name)";
    let got = series(fx, TENANT, &request(q, 600)).await;
    let mut checked = 0;
    for s in &got {
        let service = text_label(s, "resource.service.name");
        assert!(!s.exemplars.is_empty() && s.exemplars.len() <= 100, "{s:?}");
        for e in &s.exemplars {
            // The exemplar is a server span of the series, its value its duration in seconds,
            // stamped at its start, inside a bucket the series has a sample for.
            let sql = format!(
                "SELECT service_name, kind, duration_ns, start_time_unix_nano FROM spans \
                 WHERE trace_id = '{}' AND span_id = '{}'",
                e.trace_id,
                e.span_id.as_deref().unwrap()
            );
            let rows = fx.engine.sql(TENANT, &sql).await.unwrap();
            let b = &rows[0];
            let text = |i: usize| {
                let c = arrow::compute::cast(b.column(i), &arrow::datatypes::DataType::Utf8).unwrap();
                c.as_string::<i32>().value(0).to_string()
            };
            assert_eq!((text(0), text(1)), (service.clone(), "server".to_string()));
            let duration = b.column(2).as_primitive::<Int64Type>().value(0);
            assert_eq!(e.value, duration as f64 / 1e9);
            assert_eq!(
                e.timestamp_ms,
                b.column(3).as_primitive::<Int64Type>().value(0) / 1_000_000
            );
            let sample = s
                .samples
                .iter()
                .find(|(t, _)| *t >= e.timestamp_ms)
                .expect("its bucket");
            assert!(
                sample.0 - e.timestamp_ms < 600_000 && sample.1 >= e.value,
                "{e:?} in {sample:?}"
            );
            checked += 1;
        }
    }
    assert!(checked > 0);

    // Counts: the exemplar's value is its bucket's count. Asked for fewer, or none by a hint.
    let mut r = request("{ } | count_over_time() by (resource.service.name)", 60);
    r.exemplars = 3;
    for s in series(fx, TENANT, &r).await {
        assert!(!s.exemplars.is_empty() && s.exemplars.len() <= 3, "{s:?}");
        for e in &s.exemplars {
            let sample = s.samples.iter().find(|(t, _)| *t >= e.timestamp_ms).unwrap();
            assert_eq!(e.value, sample.1);
        }
    }
    let none = request("{ } | rate() with(exemplars=false)", 60);
    assert!(series(fx, TENANT, &none).await[0].exemplars.is_empty());
}

/// `compare()`'s series of one `__meta_type` and attribute, keyed `(value text, ts) -> spans`
/// (zero samples left out, as [`sql_samples`] has none).
fn compared(series: &[Series], meta: &str, attribute: &str) -> BTreeMap<(String, i64), f64> {
    let side: Vec<Series> = (series.iter())
        .filter(|s| s.labels.first() == Some(&("__meta_type".to_string(), HitValue::Str(meta.into()))))
        .filter(|s| s.labels.get(1).is_some_and(|(k, _)| k == attribute))
        .map(|s| Series {
            labels: s.labels[1..].to_vec(),
            ..s.clone()
        })
        .collect();
    keyed(&side, attribute)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_counts_every_attribute_value_of_selection_and_baseline() {
    let fx = &Fixture::load().await;
    let r = request("{ } | compare({ status = error }, 1000)", 600);
    let got = series(fx, TENANT, &r).await;
    // Every series is named by its side and one attribute.
    let metas = ["baseline", "selection", "baseline_total", "selection_total"];
    for s in &got {
        assert_eq!(s.labels.len(), 2, "{s:?}");
        assert!(matches!(&s.labels[0], (k, HitValue::Str(m)) if k == "__meta_type" && metas.contains(&m.as_str())));
        let total = matches!(&s.labels[0].1, HitValue::Str(m) if m.ends_with("_total"));
        assert_eq!(total, s.labels[1].1 == HitValue::Nil, "{s:?}");
        assert_eq!(s.samples.len(), 13, "zero-filled: {s:?}");
    }
    // Values per side equal SQL's counts, typed as stored.
    let service = |errors: bool| {
        let not = if errors { "" } else { "NOT" };
        let sel = format!("CASE WHEN {not} (status_code = 'error') THEN 1 END");
        format!("CAST(count({sel}) AS DOUBLE)")
    };
    for (meta, errors) in [("selection", true), ("baseline", false)] {
        let mut want = sql_samples(fx, TENANT, &r, "service_name", &service(errors)).await;
        want.retain(|_, v| *v > 0.0);
        assert!(!want.is_empty());
        assert_eq!(compared(&got, meta, "resource.service.name"), want, "{meta}");
    }
    let errors = sql_samples(fx, TENANT, &r, "status_code", "CAST(count(*) AS DOUBLE)").await;
    let error_spans: BTreeMap<i64, f64> = (errors.iter())
        .filter(|((s, _), _)| s == "error")
        .map(|((_, ts), v)| (*ts, *v))
        .collect();
    let totals = |meta: &str, attribute: &str| -> BTreeMap<i64, f64> {
        (compared(&got, meta, attribute).into_iter())
            .map(|((_, ts), v)| (ts, v))
            .collect()
    };
    assert_eq!(totals("selection_total", "name"), error_spans);
    assert_eq!(
        compared(&got, "selection", "status")
            .keys()
            .map(|k| k.0.as_str())
            .collect::<std::collections::BTreeSet<_>>(),
        ["error"].into()
    );
    assert!(compared(&got, "baseline", "status").keys().all(|k| k.0 != "error"));

    // Every map attribute's totals, both sides, are the spans that have it.
    let per_key = |map: &str| {
        format!(
            "SELECT k, CAST(ceil(CAST(t - {s} AS DOUBLE) / {step}) AS BIGINT) AS b, CAST(count(*) AS DOUBLE) \
             FROM (SELECT unnest(map_keys({map})) AS k, start_time_unix_nano AS t FROM spans) \
             WHERE t > {s} AND t <= {e} GROUP BY 1, 2",
            s = r.start_unix_nano - r.start_unix_nano % r.step_ns - r.step_ns,
            e = r.end_unix_nano + (r.step_ns - r.end_unix_nano % r.step_ns) % r.step_ns,
            step = r.step_ns,
        )
    };
    for (map, prefix) in [("span_attributes", "span."), ("resource_attributes", "resource.")] {
        let mut want: BTreeMap<(String, i64), f64> = BTreeMap::new();
        for b in fx.engine.sql(TENANT, &per_key(map)).await.unwrap() {
            let (k, bucket, n) = (
                b.column(0).as_string::<i32>(),
                b.column(1).as_primitive::<Int64Type>(),
                b.column(2).as_primitive::<Float64Type>(),
            );
            for i in 0..b.num_rows() {
                let start = r.start_unix_nano - r.start_unix_nano % r.step_ns - r.step_ns;
                let ts = (start + bucket.value(i) * r.step_ns) / 1_000_000;
                want.insert((format!("{prefix}{}", k.value(i)), ts), n.value(i));
            }
        }
        assert!(!want.is_empty());
        let mut have: BTreeMap<(String, i64), f64> = BTreeMap::new();
        for s in got.iter().filter(|s| s.labels[1].0.starts_with(prefix)) {
            if matches!(&s.labels[0].1, HitValue::Str(m) if m.ends_with("_total")) {
                for (ts, v) in s.samples.iter().filter(|(_, v)| *v > 0.0) {
                    *have.entry((s.labels[1].0.clone(), *ts)).or_default() += v;
                }
            }
        }
        assert_eq!(have, want, "{map}");
    }

    // topN = 1: one value per side and attribute, the one with the most spans.
    let top = series(fx, TENANT, &request("{ } | compare({ status = error }, 1)", 600)).await;
    let mut seen = std::collections::BTreeSet::new();
    for s in top.iter().filter(|s| s.labels[1].1 != HitValue::Nil) {
        assert!(seen.insert(format!("{:?}{}", s.labels[0].1, s.labels[1].0)), "{s:?}");
    }
    let most = |meta: &str| {
        let mut per_value: BTreeMap<String, f64> = BTreeMap::new();
        for ((v, _), n) in compared(&got, meta, "resource.service.name") {
            *per_value.entry(v).or_default() += n;
        }
        per_value.values().cloned().fold(0.0, f64::max)
    };
    for meta in ["baseline", "selection"] {
        let kept: f64 = compared(&top, meta, "resource.service.name").values().sum();
        assert_eq!(kept, most(meta), "{meta}");
    }

    // A window: only the matching spans that start in (start, end] are the selection.
    // From the earliest error span (left out: the window's start is exclusive) to the last.
    let bounds = &fx
        .engine
        .sql(
            TENANT,
            "SELECT min(start_time_unix_nano), max(start_time_unix_nano) FROM spans WHERE status_code = 'error'",
        )
        .await
        .unwrap()[0];
    let (ws, we) = (
        bounds.column(0).as_primitive::<Int64Type>().value(0),
        bounds.column(1).as_primitive::<Int64Type>().value(0),
    );
    let q = format!("{{ }} | compare({{ status = error }}, 10, {ws}, {we})");
    let windowed = series(fx, TENANT, &request(&q, 600)).await;
    let in_window: f64 = (fx.engine.sql(
        TENANT,
        &format!(
            "SELECT CAST(count(*) AS DOUBLE) FROM spans WHERE status_code = 'error' \
         AND start_time_unix_nano > {ws} AND start_time_unix_nano <= {we}"
        ),
    ))
    .await
    .unwrap()[0]
        .column(0)
        .as_primitive::<Float64Type>()
        .value(0);
    let selected: f64 = compared(&windowed, "selection_total", "name").values().sum();
    assert_eq!(selected, in_window);
    assert!(
        selected < error_spans.values().sum::<f64>(),
        "the window leaves some out"
    );

    // A selection on events matches each span once: the spans search finds.
    let q = "{ } | compare({ event:name = \"exception\" })";
    let by_event = series(fx, TENANT, &request(q, 600)).await;
    let selected: f64 = compared(&by_event, "selection_total", "name").values().sum();
    let found = &fx
        .engine
        .sql(
            TENANT,
            "SELECT CAST(count(DISTINCT span_id) AS DOUBLE) FROM traceql('{ event:name = \"exception\" }')",
        )
        .await
        .unwrap()[0];
    let found = found.column(0).as_primitive::<Float64Type>().value(0);
    assert!(found > 0.0);
    assert_eq!(selected, found);

    // Tempo's checks of its arguments.
    let limits = &QueryLimits::default();
    for (q, e) in [
        ("{ } | compare({ status = error }, 0)", "between 1 and 1000"),
        (
            "{ } | compare({ status = error }, 2, 5, 3)",
            "end timestamp must be greater",
        ),
        (
            "{ } | compare({ status = error }, 2, 0, 3)",
            "positive integer unix nanoseconds",
        ),
        ("{ } | compare({ status = error }, 2, 3)", "compare() takes"),
    ] {
        let err = fx
            .engine
            .metrics_query_range(TENANT, &request(q, 600), limits)
            .await
            .unwrap_err();
        assert!(err.to_string().contains(e), "{q}: {err}");
    }

    // SQL: the side, attribute and value as columns.
    let sql = format!(
        "SELECT attribute_value, sum(value) FROM traceql_metrics('{{ }} | compare({{ status = error }})', {}, {}, '10m') \
         WHERE __meta_type = 'selection' AND attribute = 'status' GROUP BY 1",
        r.start_unix_nano, r.end_unix_nano
    );
    let b = &fx.engine.sql(TENANT, &sql).await.unwrap()[0];
    assert_eq!(b.num_rows(), 1);
    assert_eq!(b.column(0).as_string::<i32>().value(0), "error");
    assert_eq!(
        b.column(1).as_primitive::<Float64Type>().value(0),
        error_spans.values().sum::<f64>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_answered_in_parts_equals_the_whole() {
    let fx = &Fixture::load().await;
    let limits = &QueryLimits::default();
    for q in [
        "{ } | count_over_time() by (resource.service.name)",
        "{ kind = server } | quantile_over_time(duration, .5, .99) by (resource.service.name)",
        "{ } | histogram_over_time(duration)",
        "{ } | avg_over_time(duration) by (name) | topk(2)",
        "({ status = error } | rate()) / ({ } | rate())",
    ] {
        let mut r = request(q, 300);
        r.exemplars = 5;
        let whole = fx.engine.metrics_query_range(TENANT, &r, limits).await.unwrap();
        let mut parts = Vec::new();
        let mut progress = |o: &tracehouse_sql::metrics::MetricsOutcome| parts.push(o.clone());
        let streamed = (fx.engine)
            .metrics_query_range_with(TENANT, &r, limits, Some(&mut progress))
            .await
            .unwrap();
        assert_eq!(streamed, whole, "{q}");
        assert_eq!(parts.len(), 4, "{q}");
        // Each part holds its own samples; together, every sample of the whole (but the zeros
        // of counts in parts without spans, whose series a part does not hold).
        let mut samples: BTreeMap<(String, i64), f64> = BTreeMap::new();
        for s in parts.iter().flat_map(|p| &p.series) {
            for &(ts, v) in &s.samples {
                let prior = samples.insert((format!("{:?}", s.labels), ts), v);
                assert!(prior.is_none(), "{q}: a sample in two parts");
            }
        }
        samples.retain(|_, v| *v != 0.0);
        let want: BTreeMap<(String, i64), f64> = (whole.series.iter())
            .flat_map(|s| {
                s.samples
                    .iter()
                    .map(move |&(ts, v)| ((format!("{:?}", s.labels), ts), v))
            })
            .filter(|(_, v)| *v != 0.0)
            .collect();
        assert!(!want.is_empty(), "{q}");
        if !q.contains("topk") {
            assert_eq!(samples, want, "{q}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampling_hints_read_a_fraction_and_scale_counts() {
    let fx = &Fixture::load().await;
    let samples = |q: &'static str| async move {
        let r = request(q, 600);
        keyed(&series(fx, TENANT, &r).await, "resource.service.name")
    };
    let sql = |kept: &'static str, value: &'static str| async move {
        let r = request("{ }", 600);
        let value = format!("CAST({value} AS DOUBLE)").replace("KEPT", kept);
        let mut want = sql_samples(fx, TENANT, &r, "service_name", &value).await;
        want.retain(|_, v| *v != 0.0);
        want
    };
    // span_sample=0.4: the spans whose id starts below 0x66666666, counts scaled by 2.5.
    let spans_kept = "left(span_id, 8) < '66666666'";
    let got = samples("{ } | count_over_time() by (resource.service.name) with(span_sample=0.4)").await;
    let want = sql(spans_kept, "2.5 * count(CASE WHEN KEPT THEN 1 END)").await;
    let all = sql("true", "count(*)").await;
    assert!(!want.is_empty() && want != all, "some spans are left out");
    assert_eq!(got, want);
    // trace_sample=0.25: whole traces whose id ends below 0x40000000, scaled by 4.
    let got = samples("{ } | count_over_time() by (resource.service.name) with(trace_sample=0.25)").await;
    let want = sql(
        "right(trace_id, 8) < '40000000'",
        "4 * count(CASE WHEN KEPT THEN 1 END)",
    )
    .await;
    assert!(!want.is_empty() && want != all.iter().map(|(k, v)| (k.clone(), 4.0 * v)).collect());
    assert_eq!(got, want);
    // Averages are not scaled: the average of the sampled spans.
    let got = samples("{ } | avg_over_time(duration) by (resource.service.name) with(span_sample=0.4)").await;
    let want = sql(spans_kept, "avg(CASE WHEN KEPT THEN duration_ns END) / 1e9").await;
    assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>());
    for (k, v) in &got {
        assert!((v - want[k]).abs() < 1e-9, "{k:?}: {v} {}", want[k]);
    }
    // sample=0.xx samples traces for a structural query, spans otherwise; sample=true is exact.
    let structural = samples("{ } >> { } | count_over_time() by (resource.service.name) with(sample=0.25)").await;
    let by_trace = samples("{ } >> { } | count_over_time() by (resource.service.name) with(trace_sample=0.25)").await;
    assert_eq!(structural, by_trace);
    let plain = samples("{ } | count_over_time() by (resource.service.name) with(sample=0.4)").await;
    assert_eq!(plain, sql(spans_kept, "2.5 * count(CASE WHEN KEPT THEN 1 END)").await);
    assert_eq!(
        samples("{ } | count_over_time() by (resource.service.name) with(sample=true)").await,
        all
    );
}
