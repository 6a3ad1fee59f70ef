//! Shared fixture for the TraceQL tests: a real warehouse on a temp dir, fed the OTLP JSON
//! fixtures of `tests/traceql/` (part 1 flushed, part 2 flushed apart, part 3 left live), and
//! `deep_wide.json` in a tenant of its own.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{AsArray, RecordBatch};
use tracehouse_ingest::otlp::{BodyFormat, parse_request, request_to_batch};
use tracehouse_sql::{QueryEngine, QueryEngineConfig};
use tracehouse_warehouse::{Warehouse, WarehouseConfig};

pub const TENANT: &str = "single-tenant";
/// The tenant holding `deep_wide.json`: a 30-deep chain and a 40-wide fan-out.
pub const DEEP_WIDE: &str = "deep-wide";
/// The tenant holding `fidelity.json`: array, boolean and two-typed attributes, integers
/// beyond 2^53, a trace id with leading zeros, a trace whose root never arrived and one with
/// an orphaned span (the cases on it were checked against Tempo 3.1).
pub const FIDELITY: &str = "fidelity";

/// One query of `cases.yaml`: its tenant (the fixture tenant when absent), and either the
/// expected trace and span names or a fragment of the expected error.
#[derive(serde::Deserialize)]
pub struct Case {
    #[serde(default)]
    pub tenant: Option<String>,
    pub query: String,
    #[serde(default)]
    pub expect: Option<BTreeMap<String, Vec<String>>>,
    #[serde(default)]
    pub error: Option<String>,
    /// The attributes of each trace's spansets (`by()` labels and aggregate values, typed as
    /// YAML types them: `200` an int, `"200"` a string, `2.0` a float, `~` Tempo's nil).
    #[serde(default)]
    pub spansets: Option<BTreeMap<String, Vec<serde_yaml::Mapping>>>,
}

/// The cases of `cases.yaml`.
pub fn cases() -> Vec<Case> {
    serde_yaml::from_str(&std::fs::read_to_string(dir().join("cases.yaml")).unwrap()).unwrap()
}

pub fn dir() -> PathBuf {
    manifest_dir().join("tests/traceql")
}

pub fn row_count(batches: &[RecordBatch]) -> usize {
    batches.iter().map(RecordBatch::num_rows).sum()
}

/// The (trace_id, span_id) pairs of the first two columns.
pub fn id_pairs(batches: &[RecordBatch]) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for b in batches {
        let (t, s) = (b.column(0).as_string::<i32>(), b.column(1).as_string::<i32>());
        for i in 0..b.num_rows() {
            out.insert((t.value(i).to_string(), s.value(i).to_string()));
        }
    }
    out
}

#[derive(serde::Deserialize)]
struct Ids {
    traces: BTreeMap<String, String>,
    spans: BTreeMap<String, String>,
}

pub struct Fixture {
    _dir: tempfile::TempDir,
    pub warehouse: Arc<Warehouse>,
    pub engine: QueryEngine,
    ids: Ids,
}

impl Fixture {
    pub async fn load() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let warehouse = Warehouse::open(WarehouseConfig::local(dir.path())).await.unwrap();
        for (part, flush) in [("part1.json", true), ("part2.json", true), ("part3.json", false)] {
            let body = std::fs::read(dir_path(part)).unwrap();
            let request = parse_request(&body, BodyFormat::Json).unwrap();
            let batch = request_to_batch(&request).unwrap();
            warehouse.append(TENANT, batch).await.unwrap();
            if flush {
                let tenant = warehouse.tenant(TENANT).unwrap();
                assert!(warehouse.flush_tenant(&tenant).await.unwrap() > 0);
            }
        }
        for (tenant, file) in [(DEEP_WIDE, "deep_wide.json"), (FIDELITY, "fidelity.json")] {
            let body = std::fs::read(dir_path(file)).unwrap();
            let batch = request_to_batch(&parse_request(&body, BodyFormat::Json).unwrap()).unwrap();
            warehouse.append(tenant, batch).await.unwrap();
            warehouse
                .flush_tenant(&warehouse.tenant(tenant).unwrap())
                .await
                .unwrap();
        }
        let engine = QueryEngine::new(warehouse.clone(), QueryEngineConfig::default()).unwrap();
        let ids: Ids = serde_yaml::from_str(&std::fs::read_to_string(dir_path("ids.yaml")).unwrap()).unwrap();
        Self {
            _dir: dir,
            warehouse,
            engine,
            ids,
        }
    }

    pub fn trace(&self, name: &str) -> String {
        self.ids
            .traces
            .get(name)
            .unwrap_or_else(|| panic!("unknown trace {name}"))
            .clone()
    }

    pub fn span(&self, name: &str) -> String {
        self.ids
            .spans
            .get(name)
            .unwrap_or_else(|| panic!("unknown span {name}"))
            .clone()
    }

    /// Readable names of id pairs, for failure messages.
    pub fn names(&self, pairs: &BTreeSet<(String, String)>) -> Vec<String> {
        let name = |map: &BTreeMap<String, String>, id: &str| {
            map.iter()
                .find(|(_, v)| *v == id)
                .map_or(id.to_string(), |(k, _)| k.clone())
        };
        pairs
            .iter()
            .map(|(t, s)| format!("{}/{}", name(&self.ids.traces, t), name(&self.ids.spans, s)))
            .collect()
    }
}

fn dir_path(file: &str) -> PathBuf {
    dir().join(file)
}

/// This package's directory, read when the test runs: a test binary built in another checkout
/// that shares the target directory must still read this checkout's files.
pub fn manifest_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
}
