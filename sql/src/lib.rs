//! tracehouse's query engine: one DataFusion `SessionContext` per tenant over the warehouse's
//! tables, the `attr()` UDF and `traces` view, TraceQL search and metrics.
//!
//! Architecture invariant: the engine knows no protocol. Every front (the Postgres wire in
//! `postgres/`, Flight, Tempo's API) is a peer crate that uses [`QueryEngine`].

pub mod admission;
pub mod budget;
pub mod engine;
pub mod errors;
pub mod guard;
pub mod metrics;
pub mod resolve;
pub mod search;
pub mod stop;
pub mod traceql;
pub mod udf;

pub use engine::{QueryEngine, QueryEngineConfig, QueryLimits};

/// Errors of the query engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Warehouse(#[from] tracehouse_warehouse::Error),
    #[error("{0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),
    /// Planning failed on a name that does not resolve: an unknown table (42P01) or function
    /// (42883), found by resolving the statement's names against the catalog.
    #[error("{source}")]
    Unresolved {
        sqlstate: &'static str,
        source: datafusion::error::DataFusionError,
    },
    /// Refused before planning: over a limit, not SQL, or not read-only.
    #[error("{0}")]
    Refused(#[from] guard::Refusal),
    /// The tenant runs as many queries as it may at once.
    #[error("{0}")]
    Busy(String),
    /// The query ran past its deadline.
    #[error("canceling statement due to statement timeout ({}ms)", .0.as_millis())]
    Timeout(std::time::Duration),
    /// The client cancelled the query.
    #[error("canceling statement due to user request")]
    Cancelled,
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("internal error: {0}")]
    Internal(String),
}

pub use tracehouse_warehouse::TraceLookup;
pub use tracehouse_warehouse::storage::{DEFAULT_TENANT, TENANT_HEADER, tenant_or_default};
pub use tracehouse_warehouse::trace_index::{parse_trace_id, trace_id_hex};

/// `s` as a SQL string literal (`'...'`, quotes doubled).
pub fn sql_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Column `index` of `batches` as text (NULLs left out), for small listings such as tag names.
pub fn text_column(batches: &[arrow::array::RecordBatch], index: usize) -> Vec<String> {
    use arrow::array::{Array, AsArray};
    let mut out = Vec::new();
    for b in batches {
        let Ok(col) = arrow::compute::cast(b.column(index), &arrow::datatypes::DataType::Utf8) else {
            continue;
        };
        let strings = col.as_string::<i32>();
        out.extend(
            (0..strings.len())
                .filter(|&i| strings.is_valid(i))
                .map(|i| strings.value(i).to_string()),
        );
    }
    out
}

/// Result of the query engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;
