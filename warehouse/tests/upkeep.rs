//! Table upkeep on real Delta tables: compaction merges a tenant's small files into one sorted
//! file without losing or repeating a span (identical retried spans collapse), as a
//! `dataChange=false` OPTIMIZE commit, while appends keep landing, from this process or
//! another; the trace-id index stays exact, across restarts too; retention removes files
//! wholly past it; vacuum deletes removed and orphaned files after the grace period (a dry
//! run only lists them); the log gets a checkpoint and its old entries expire.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use arrow::array::{Array, AsArray, RecordBatch};
use tracehouse_warehouse::trace_index::INDEX_DIR;
use tracehouse_warehouse::upkeep::UpkeepConfig;
use tracehouse_warehouse::{Warehouse, WarehouseConfig};

const TENANT: &str = "t1";

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// `spans` spans of each trace (span ids `trace * 1000 + i`), starting at `start_ns`.
fn batch(traces: &[(u128, usize)], start_ns: u64) -> RecordBatch {
    let traces: Vec<_> = traces.iter().map(|&(t, n)| (t, 0..n, start_ns)).collect();
    common::spans(&traces)
}

/// Spans `i` of `range` of each trace, starting at `start_ns + i` ([`common::spans`]).
fn spans_numbered(traces: &[(u128, std::ops::Range<usize>)], start_ns: u64) -> RecordBatch {
    let traces: Vec<_> = traces.iter().map(|(t, r)| (*t, r.clone(), start_ns)).collect();
    common::spans(&traces)
}

/// Whether a load had to index files no sidecar covered (it writes a `repair-` sidecar).
fn repaired(index_dir: &std::path::Path) -> bool {
    std::fs::read_dir(index_dir)
        .unwrap()
        .any(|e| e.unwrap().file_name().to_string_lossy().starts_with("repair"))
}

/// A local warehouse in a fresh directory.
async fn open() -> (tempfile::TempDir, WarehouseConfig, std::sync::Arc<Warehouse>) {
    let dir = tempfile::tempdir().unwrap();
    let config = WarehouseConfig::local(dir.path());
    let w = Warehouse::open(config.clone()).await.unwrap();
    (dir, config, w)
}

/// The spans of each of `traces` the warehouse returns, counted by span id.
async fn spans_of(w: &Warehouse, traces: impl Iterator<Item = u128>) -> HashMap<(u128, String), usize> {
    let mut out = HashMap::new();
    for trace in traces {
        for b in w.trace_by_id(TENANT, trace, None).await.unwrap().batches {
            let ids = b.column_by_name("span_id").unwrap().as_string::<i32>().clone();
            for i in 0..ids.len() {
                *out.entry((trace, ids.value(i).to_string())).or_default() += 1;
            }
        }
    }
    out
}

async fn data_file_count(w: &Warehouse) -> usize {
    let (table, _) = w.snapshot(TENANT).await.unwrap();
    table.unwrap().snapshot().unwrap().log_data().num_files()
}

fn merge_everything() -> UpkeepConfig {
    UpkeepConfig {
        target_file_bytes: 1 << 30,
        max_input_bytes: 4 << 30,
        min_open_window_files: 2,
        grace: Duration::from_secs(3600),
        ..UpkeepConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_merges_small_files_and_keeps_every_span_once() {
    let (dir, config, w) = open().await;
    let start = now_ns() - 60_000_000_000;
    // Six flushes; trace 999 has a span in every one (a trace split across flushes), and the
    // third flush arrives twice (a client's retry: identical spans).
    for f in 0..6u128 {
        let mut traces: Vec<(u128, std::ops::Range<usize>)> = (f * 10 + 1..=f * 10 + 10).map(|t| (t, 0..3)).collect();
        traces.push((999, f as usize..f as usize + 1));
        let b = spans_numbered(&traces, start + f as u64 * 1000);
        w.append(TENANT, b.clone()).await.unwrap();
        if f == 2 {
            w.append(TENANT, b).await.unwrap();
        }
        w.flush_due(true).await.unwrap();
    }
    assert_eq!(data_file_count(&w).await, 6);
    let before = spans_of(&w, (1..=60).chain([999])).await;
    assert!(before.values().any(|n| *n == 2), "the retried flush is held twice");

    let report = w.upkeep_tenant(TENANT, &merge_everything(), false).await.unwrap();
    assert_eq!((report.merges, report.files_compacted, report.files_written), (1, 6, 1));
    assert_eq!(
        report.rows_read - report.rows_written,
        31,
        "the retried flush's rows, once more"
    );
    assert_eq!(data_file_count(&w).await, 1);

    let after = spans_of(&w, (1..=60).chain([999])).await;
    assert_eq!(
        after.keys().collect::<std::collections::HashSet<_>>(),
        before.keys().collect()
    );
    assert!(after.values().all(|n| *n == 1), "every span once");
    let split = w.trace_by_id(TENANT, 999, None).await.unwrap();
    assert_eq!(split.files_read, 1, "a trace split across flushes is in one place");

    // The commit replaced files without changing data, and the file is sorted by trace id.
    let (table, _) = w.snapshot(TENANT).await.unwrap();
    let table = table.unwrap();
    use futures::StreamExt;
    let history: Vec<_> = table.history(Some(1)).collect().await;
    assert_eq!(history[0].as_ref().unwrap().operation.as_deref(), Some("OPTIMIZE"));
    let path = table
        .snapshot()
        .unwrap()
        .log_data()
        .iter()
        .next()
        .unwrap()
        .path()
        .into_owned();
    let file = std::fs::File::open(common::table_dir(dir.path(), TENANT).join(path)).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
    assert!(reader.metadata().file_metadata().num_rows() > 0);
    let ids: Vec<String> = reader
        .build()
        .unwrap()
        .flat_map(|b| {
            let b = b.unwrap();
            let ids = b.column_by_name("trace_id").unwrap().as_string::<i32>().clone();
            (0..ids.len()).map(|i| ids.value(i).to_string()).collect::<Vec<_>>()
        })
        .collect();
    assert!(ids.is_sorted(), "rows sorted by trace id");
    w.shutdown().await.unwrap();
    drop(w);

    // After a restart the index comes from the sidecars, compaction's included: no repair.
    let w = Warehouse::open(config).await.unwrap();
    let again = spans_of(&w, (1..=60).chain([999])).await;
    assert_eq!(again, after);
    let index_dir = common::table_dir(dir.path(), TENANT).join(INDEX_DIR);
    assert!(!repaired(&index_dir), "compaction wrote the sidecar of its file");
    w.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_during_compaction_are_kept() {
    let (_dir, config, w) = open().await;
    // Another process compacts the same tables (a scheduled job), and this one too.
    let job = Warehouse::open_shared(config.clone(), None).unwrap();
    let start = now_ns() - 60_000_000_000;
    let flushes = 24u128;
    let writer = {
        let w = w.clone();
        tokio::spawn(async move {
            for f in 0..flushes {
                let traces: Vec<(u128, usize)> = (f * 5 + 1..=f * 5 + 5).map(|t| (t, 2)).collect();
                w.append(TENANT, batch(&traces, start + f as u64 * 1000)).await.unwrap();
                w.flush_due(true).await.unwrap_or_else(|e| panic!("flush {f}: {e:?}"));
            }
        })
    };
    let mut merges = 0;
    while !writer.is_finished() {
        let config = UpkeepConfig {
            max_merges_per_pass: 2,
            ..merge_everything()
        };
        let (local, other) = tokio::join!(w.upkeep_tenant(TENANT, &config, false), async {
            if job.stored_tenants().await.unwrap().is_empty() {
                return Ok(Default::default());
            }
            job.upkeep_tenant(TENANT, &config, false).await
        });
        merges += local.unwrap().merges + other.unwrap().merges;
    }
    writer.await.unwrap();
    assert!(merges > 0, "compaction ran while appends landed");
    w.shutdown().await.unwrap();
    drop(w);

    let w = Warehouse::open(config).await.unwrap();
    let spans = spans_of(&w, 1..=flushes * 5).await;
    assert_eq!(spans.len(), flushes as usize * 5 * 2, "every appended span");
    assert!(spans.values().all(|n| *n == 1), "none twice");
    w.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_then_vacuum_after_the_grace_period() {
    let (dir, config, w) = open().await;
    let day_ns = 86_400_000_000_000u64;
    let old = now_ns() - 3 * day_ns;
    for f in 0..2u128 {
        w.append(TENANT, batch(&[(f + 1, 2)], old + f as u64)).await.unwrap();
        w.flush_due(true).await.unwrap();
    }
    w.append(TENANT, batch(&[(100, 2)], now_ns())).await.unwrap();
    w.flush_due(true).await.unwrap();
    let table_dir = common::table_dir(dir.path(), TENANT);
    // A file written but never committed (a crash mid-flush).
    let orphan = table_dir.join("orphan-from-a-crash.parquet");
    std::fs::write(&orphan, b"not committed").unwrap();

    let keep_a_day = UpkeepConfig {
        block_retention: Duration::from_secs(86_400),
        grace: Duration::from_secs(3600),
        ..merge_everything()
    };
    let report = w.upkeep_tenant(TENANT, &keep_a_day, false).await.unwrap();
    assert_eq!(report.files_expired, 2);
    assert!(
        report.files_vacuumed.is_empty(),
        "within the grace period nothing is deleted"
    );
    assert_eq!(data_file_count(&w).await, 1);
    assert!(w.trace_by_id(TENANT, 1, None).await.unwrap().batches.is_empty());
    assert_eq!(w.trace_by_id(TENANT, 100, None).await.unwrap().batches.len(), 1);

    // Past the grace period: a dry run lists the two removed files and the orphan, and
    // deletes nothing; the real run deletes them.
    let no_grace = UpkeepConfig {
        grace: Duration::ZERO,
        ..keep_a_day
    };
    let listed = w.upkeep_tenant(TENANT, &no_grace, true).await.unwrap().files_vacuumed;
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert!(orphan.exists());
    let report = w.upkeep_tenant(TENANT, &no_grace, false).await.unwrap();
    assert_eq!(report.files_vacuumed.len(), 3);
    assert!(!orphan.exists());
    let parquet_files = walk(&table_dir)
        .into_iter()
        .filter(|p| {
            p.extension().is_some_and(|e| e == "parquet")
                && !p.to_string_lossy().contains("_delta_log")
                && !p.to_string_lossy().contains(INDEX_DIR)
        })
        .count();
    assert_eq!(parquet_files, 1, "only the live file is left");
    // A checkpoint, and the log before it expired.
    let log: Vec<String> = std::fs::read_dir(table_dir.join("_delta_log"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(log.iter().any(|f| f.contains(".checkpoint.")), "{log:?}");
    assert!(!log.iter().any(|f| f == "00000000000000000000.json"), "{log:?}");
    assert!(report.log_files_expired > 0);
    w.shutdown().await.unwrap();
    drop(w);

    // The table opens from its checkpoint, with the same answers.
    let w = Warehouse::open(config).await.unwrap();
    assert_eq!(w.trace_by_id(TENANT, 100, None).await.unwrap().batches.len(), 1);
    assert!(w.trace_by_id(TENANT, 2, None).await.unwrap().batches.is_empty());
    w.shutdown().await.unwrap();
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_sidecars_merge_into_one_and_the_index_holds() {
    let (dir, config, w) = open().await;
    let start = now_ns() - 60_000_000_000;
    let flushes = tracehouse_warehouse::MAX_SIDECARS as u128 + 6;
    for f in 0..flushes {
        w.append(TENANT, batch(&[(f + 1, 1)], start + f as u64)).await.unwrap();
        w.flush_due(true).await.unwrap();
    }
    let index_dir = common::table_dir(dir.path(), TENANT).join(INDEX_DIR);
    assert_eq!(std::fs::read_dir(&index_dir).unwrap().count(), flushes as usize);
    // Compaction off (one file too few for an open window): only the sidecars change. The
    // window is a long one, so that it does not close while the test runs (an hour's window
    // closed at the top of the hour and its files merged).
    let no_merge = UpkeepConfig {
        min_open_window_files: flushes as usize + 1,
        compaction_window: Duration::from_secs(366 * 86_400),
        ..merge_everything()
    };
    let report = w.upkeep_tenant(TENANT, &no_merge, false).await.unwrap();
    assert_eq!((report.merges, report.sidecars_merged), (0, flushes as usize));
    assert_eq!(std::fs::read_dir(&index_dir).unwrap().count(), 1);
    w.shutdown().await.unwrap();
    drop(w);
    let w = Warehouse::open(config).await.unwrap();
    let spans = spans_of(&w, 1..=flushes).await;
    assert_eq!(spans.len(), flushes as usize);
    assert!(!repaired(&index_dir), "the merged sidecar covers every file");
    w.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_never_look_after_a_tenant_at_once() {
    let (_dir, config, w) = open().await;
    let start = now_ns() - 60_000_000_000;
    for f in 0..40u128 {
        w.append(TENANT, batch(&[(f + 1, 3)], start + f as u64 * 1000))
            .await
            .unwrap();
        w.flush_due(true).await.unwrap();
    }
    // A second compactor replica over the same storage.
    let replica = Warehouse::open_shared(config.clone(), None).unwrap();
    let small = merge_everything();
    let (mut skipped, mut merges, mut conflicts) = (0, 0, 0);
    for _ in 0..8 {
        let (a, b) = tokio::join!(
            w.upkeep_tenant(TENANT, &small, false),
            replica.upkeep_tenant(TENANT, &small, false)
        );
        for r in [a.unwrap(), b.unwrap()] {
            skipped += usize::from(r.held_by.is_some());
            merges += r.merges;
            conflicts += r.conflicts;
        }
    }
    assert!(skipped > 0, "one replica found the other looking after the tenant");
    assert_eq!(merges, 1, "the 40 files merged once");
    assert_eq!(conflicts, 0, "no two merges of the same files ran at once");
    let spans = spans_of(&w, 1..=40).await;
    assert_eq!(spans.len(), 40 * 3);
    assert!(spans.values().all(|n| *n == 1));
    w.shutdown().await.unwrap();
}
