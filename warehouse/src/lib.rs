//! tracehouse's storage layer: the span schema, the write-ahead log, the live buffer, Parquet
//! files in per-tenant Delta Lake tables on object storage, and the DataFusion `TableProvider`
//! that reads committed and live spans together.
//!
//! Architecture invariant: this crate knows nothing of wire protocols (OTLP, Postgres, Flight,
//! Tempo's API); receivers hand it [`span::SpanRecord`]s or finished `spans` batches.

pub mod error_kind;
pub mod id_range;
pub mod lease;
pub mod live;
pub mod map_filter;
pub mod provider;
pub mod schema;
pub mod span;
pub mod storage;
pub mod table;
pub mod trace_index;
pub mod upkeep;
pub mod wal;
mod warehouse;

pub use error_kind::ErrorKind;
pub use warehouse::{
    LiveRecord, LiveSource, MAX_IDLE_TENANT_HANDLES, MAX_SIDECARS, MAX_TENANTS_REPORTED, SpanSource,
    TABLE_REFRESH_INTERVAL, TableSize, Tenant, TraceLookup, UpkeepProgress, UpkeepReport, Warehouse, WarehouseConfig,
    WarehouseStats,
};

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid span: {0}")]
    InvalidSpan(String),
    #[error("invalid tenant id {0:?}: use 1 to 150 characters of letters, digits, '_', '-' and '.'")]
    InvalidTenant(String),
    #[error("over capacity, retry later: {0}")]
    Backpressure(String),
    #[error("too large: {0}")]
    TooLarge(String),
    #[error("unavailable, retry later: {0}")]
    Unavailable(String),
    #[error("shutting down")]
    ShuttingDown,
    #[error("configuration: {0}")]
    Config(String),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("wal: {0}")]
    Wal(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("delta: {0}")]
    Delta(#[from] deltalake::DeltaTableError),
    #[error("object store: {0}")]
    ObjectStore(#[from] object_store::Error),
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("datafusion: {0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),
}

/// Result of the storage layer.
pub type Result<T, E = Error> = std::result::Result<T, E>;
