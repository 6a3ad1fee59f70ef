//! Spans for the warehouse's integration tests.

#![allow(dead_code)]

use std::ops::Range;

use arrow::array::RecordBatch;
use tracehouse_warehouse::span::{ScopeRecord, SpanBatchBuilder, SpanKind, SpanRecord, StatusCode};

/// For each `(trace, range, start_ns)`, spans `i` of `range` (span ids `trace * 1000 + i + 1`),
/// starting at `start_ns + i` and lasting 10 ns.
pub fn spans(traces: &[(u128, Range<usize>, u64)]) -> RecordBatch {
    let scope = ScopeRecord::default();
    let mut builder = SpanBatchBuilder::new();
    for (trace, range, start_ns) in traces {
        let trace_id = trace.to_be_bytes();
        for i in range.clone() {
            let span_id = (*trace as u64 * 1000 + i as u64 + 1).to_be_bytes();
            let span = SpanRecord {
                trace_id: &trace_id,
                span_id: &span_id,
                parent_span_id: &[],
                trace_state: "",
                name: "op",
                kind: SpanKind::Server,
                start_time_unix_nano: start_ns + i as u64,
                end_time_unix_nano: start_ns + i as u64 + 10,
                status_code: StatusCode::Unset,
                status_message: "",
                flags: 0,
                attributes: vec![],
                dropped_attributes_count: 0,
                events: vec![],
                dropped_events_count: 0,
                links: vec![],
                dropped_links_count: 0,
            };
            builder.append(&scope, &span);
        }
    }
    builder.finish().unwrap()
}

/// The directory of `tenant`'s table of a local warehouse in `dir`.
pub fn table_dir(dir: &std::path::Path, tenant: &str) -> std::path::PathBuf {
    dir.join("data/tenants").join(tenant).join("spans")
}
