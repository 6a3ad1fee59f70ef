//! Loads tracegen spans into a real warehouse for in-process benchmarks: Delta tables on local
//! disk, flushed every `flush_spans` spans (one set of files per flush, as blocks in Tempo),
//! everything flushed at the end.

use std::collections::HashMap;
use std::sync::Arc;

use tracehouse_ingest::otlp::request_to_batch;
use tracehouse_warehouse::{Warehouse, WarehouseConfig};

use crate::tracegen::{TraceGen, TraceGenConfig};

/// What was loaded: the warehouse, the span count, and each trace's first start (unix ns).
pub struct Loaded {
    pub warehouse: Arc<Warehouse>,
    pub spans: usize,
    pub trace_starts: HashMap<Vec<u8>, u64>,
}

/// Loads at least `spans` spans for `tenant` under `dir`.
pub async fn load(dir: &std::path::Path, tenant: &str, spans: usize, flush_spans: usize) -> Loaded {
    let warehouse = Warehouse::open(WarehouseConfig::local(dir))
        .await
        .expect("open warehouse");
    let mut generator = TraceGen::new(TraceGenConfig::default());
    let handle = warehouse.tenant(tenant).expect("tenant");
    let (mut loaded, mut since_flush) = (0, 0);
    let mut trace_starts: HashMap<Vec<u8>, u64> = HashMap::new();
    while loaded < spans {
        let (req, n) = generator.request(5_000);
        for span in req
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
        {
            let start = trace_starts.entry(span.trace_id.clone()).or_insert(u64::MAX);
            *start = (*start).min(span.start_time_unix_nano);
        }
        warehouse
            .append(tenant, request_to_batch(&req).expect("convert"))
            .await
            .expect("append");
        loaded += n;
        since_flush += n;
        if since_flush >= flush_spans {
            warehouse.flush_tenant(&handle).await.expect("flush");
            since_flush = 0;
        }
    }
    warehouse.flush_tenant(&handle).await.expect("flush");
    Loaded {
        warehouse,
        spans: loaded,
        trace_starts,
    }
}
