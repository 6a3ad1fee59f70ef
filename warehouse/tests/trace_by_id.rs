//! Trace-by-id through the trace-id index: spans found in flushed files and the live buffer,
//! only the files holding the trace opened, the time range honoured, the index reloaded from
//! its sidecars after a restart and rebuilt when they are gone; the live spans' index counted
//! in the live bytes that bound them.

mod common;

use std::collections::HashSet;

use arrow::array::{Array, AsArray, RecordBatch};
use tracehouse_warehouse::trace_index::INDEX_DIR;
use tracehouse_warehouse::{Warehouse, WarehouseConfig};

const TENANT: &str = "t1";
const DAY_NS: u64 = 86_400_000_000_000;
const BASE_NS: u64 = 1_780_000_000_000_000_000;

/// `spans` spans of trace `trace` (span ids `trace * 1000 + i`), starting at `start_ns`.
fn batch(traces: &[(u128, usize, u64)]) -> RecordBatch {
    let traces: Vec<_> = traces.iter().map(|&(t, n, start)| (t, 0..n, start)).collect();
    common::spans(&traces)
}

fn span_ids(batches: &[RecordBatch]) -> HashSet<String> {
    batches
        .iter()
        .flat_map(|b| {
            let ids = b.column_by_name("span_id").unwrap().as_string::<i32>().clone();
            (0..ids.len()).map(move |i| ids.value(i).to_string())
        })
        .collect()
}

#[tokio::test]
async fn trace_by_id_uses_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let config = WarehouseConfig::local(dir.path());
    let w = Warehouse::open(config.clone()).await.unwrap();
    // Flush 1: traces 1..=50 on day 0. Flush 2: traces 51..=100 on day 0, and more of trace 7
    // on day 1. Live: trace 7 again and trace 200.
    let first: Vec<_> = (1..=50).map(|t| (t, 3, BASE_NS + t as u64)).collect();
    w.append(TENANT, batch(&first)).await.unwrap();
    w.flush_due(true).await.unwrap();
    let mut second: Vec<_> = (51..=100).map(|t| (t, 2, BASE_NS + t as u64)).collect();
    second.push((7, 4, BASE_NS + DAY_NS));
    w.append(TENANT, batch(&second)).await.unwrap();
    w.flush_due(true).await.unwrap();
    w.append(TENANT, batch(&[(7, 5, BASE_NS + 2 * DAY_NS), (200, 1, BASE_NS)]))
        .await
        .unwrap();

    let found = w.trace_by_id(TENANT, 7, None).await.unwrap();
    // 3 + 4 + 5 rows, but span ids repeat across the three appends (same numbering).
    assert_eq!(found.batches.iter().map(|b| b.num_rows()).sum::<usize>(), 12);
    assert_eq!(
        found.files_read, 2,
        "trace 7 is in flush 1's file and flush 2's day-1 file"
    );
    assert!(found.bytes_inspected > 0);

    let one = w.trace_by_id(TENANT, 60, None).await.unwrap();
    assert_eq!(
        span_ids(&one.batches),
        HashSet::from(["000000000000ea61".into(), "000000000000ea62".into()])
    );
    assert_eq!(one.files_read, 1);

    // A time range narrows the files: only day 1 of trace 7, plus the live rows.
    let ranged = w
        .trace_by_id(
            TENANT,
            7,
            Some(((BASE_NS + DAY_NS) as i64, (BASE_NS + DAY_NS + 100) as i64)),
        )
        .await
        .unwrap();
    assert_eq!(ranged.files_read, 1);
    assert_eq!(ranged.batches.iter().map(|b| b.num_rows()).sum::<usize>(), 4 + 5);

    let live_only = w.trace_by_id(TENANT, 200, None).await.unwrap();
    assert_eq!((live_only.files_read, live_only.batches.len()), (0, 1));
    let unknown = w.trace_by_id(TENANT, 999, None).await.unwrap();
    assert_eq!((unknown.files_read, unknown.batches.len()), (0, 0));
    let other_tenant = w.trace_by_id("t2", 7, None).await.unwrap();
    assert!(other_tenant.batches.is_empty());

    // Spans flushed after the index was loaded are indexed too.
    w.flush_due(true).await.unwrap();
    let after_flush = w.trace_by_id(TENANT, 200, None).await.unwrap();
    assert_eq!(
        (
            after_flush.files_read,
            after_flush.batches.iter().map(|b| b.num_rows()).sum::<usize>()
        ),
        (1, 1)
    );
    w.shutdown().await.unwrap();
    drop(w);

    // Restart: the index comes back from the sidecars.
    let w = Warehouse::open(config.clone()).await.unwrap();
    let again = w.trace_by_id(TENANT, 7, None).await.unwrap();
    assert_eq!(
        (
            again.files_read,
            again.batches.iter().map(|b| b.num_rows()).sum::<usize>()
        ),
        (3, 12)
    );
    w.shutdown().await.unwrap();
    drop(w);

    // Sidecars lost: the index is rebuilt from the data files, with the same answers.
    let index_dir = common::table_dir(dir.path(), TENANT).join(INDEX_DIR);
    assert!(index_dir.read_dir().unwrap().count() >= 3, "one sidecar per flush");
    std::fs::remove_dir_all(&index_dir).unwrap();
    let w = Warehouse::open(config).await.unwrap();
    let rebuilt = w.trace_by_id(TENANT, 7, None).await.unwrap();
    assert_eq!(
        (
            rebuilt.files_read,
            rebuilt.batches.iter().map(|b| b.num_rows()).sum::<usize>()
        ),
        (3, 12)
    );
    assert_eq!(index_dir.read_dir().unwrap().count(), 1, "a repair sidecar is written");
    w.shutdown().await.unwrap();
}

/// The index of the live spans (by trace id) counts in the live bytes, appended or replayed
/// from the WAL, and leaves them with its spans on a flush.
#[tokio::test]
async fn the_live_index_counts_in_the_live_bytes() {
    use std::sync::atomic::Ordering::Acquire;
    let dir = tempfile::tempdir().unwrap();
    let config = WarehouseConfig::local(dir.path());
    let spans = batch(&(1..=500).map(|t| (t, 4, BASE_NS + t as u64)).collect::<Vec<_>>());
    let (rows, spans_bytes) = (spans.num_rows(), spans.get_array_memory_size());
    let w = Warehouse::open(config.clone()).await.unwrap();
    w.append(TENANT, spans).await.unwrap();
    let live = w.stats().live_bytes.load(Acquire);
    // At least a (chunk, row) position per row, and an id, a start and an end per trace.
    assert!(live >= spans_bytes + rows * 8 + 500 * 32, "{live} of {spans_bytes}");
    drop(w);
    // Replayed, the spans are one buffer each (their encoded body), counted once.
    let replayed = Warehouse::open(config).await.unwrap();
    let again = replayed.stats().live_bytes.load(Acquire);
    assert!(again > live - spans_bytes && again <= live, "{again} of {live}");
    replayed.flush_due(true).await.unwrap();
    assert_eq!(replayed.stats().live_bytes.load(Acquire), 0);
}
