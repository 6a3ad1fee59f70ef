//! tracehouse's query engine: one DataFusion `SessionContext` per tenant over the warehouse's
//! tables, the `attr()` UDF and `traces` view, and the Postgres wire server.
//!
//! Architecture invariant: protocol front ends other than Postgres (Flight, Tempo's API) use
//! [`QueryEngine`] and never the [`pgwire`] module.

pub mod engine;
pub mod errors;
pub mod pgwire;
pub mod traceql;
pub mod udf;

pub use engine::{QueryEngine, QueryEngineConfig};

/// Errors of the query engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Warehouse(#[from] tracehouse_warehouse::Error),
    #[error("{0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),
}

/// Result of the query engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;
