//! Receivers' decoding: OTLP trace requests (protobuf or JSON, optionally gzip) into `spans`
//! record batches, with limits on request size; Jaeger (Thrift, protobuf) and Zipkin (v2 JSON
//! and protobuf, v1 JSON) into OTLP requests, as the OpenTelemetry Collector translates them;
//! and the Kafka path of microservices mode: the
//! distributor's producer, the block-builder and the live-store.
//!
//! Architecture invariant: decoding never stores or queries. The Kafka consumers write and read
//! tables only through the warehouse's shared-table API (`commit`, `committed_versions`); no
//! query engine or wire protocol is known here.

use tracehouse_warehouse::ErrorKind;

pub mod block_builder;
mod conventions;
pub mod duration;
pub mod jaeger;
pub mod kafka;
pub mod live_store;
pub mod otlp;
pub mod zipkin;

/// Errors of decoding.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("malformed {format} body: {message}")]
    Malformed { format: &'static str, message: String },
    #[error("{0}")]
    InvalidSpan(String),
    #[error("request body exceeds the limit of {limit_bytes} bytes")]
    TooLarge { limit_bytes: usize },
    #[error("unsupported content type {0:?}: use application/x-protobuf or application/json")]
    UnsupportedContentType(String),
    #[error("unsupported content encoding {0:?}: use gzip or none")]
    UnsupportedEncoding(String),
    #[error("building span batch: {0}")]
    Batch(String),
    #[error("kafka: {0}")]
    Kafka(String),
    #[error("unavailable, retry later: {0}")]
    Unavailable(String),
    #[error("{0}")]
    Warehouse(#[from] tracehouse_warehouse::Error),
}

impl Error {
    /// What kind of failure this is ([`tracehouse_warehouse::ErrorKind`]'s table gives its
    /// status on every protocol).
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Malformed { .. } | Self::InvalidSpan(_) => ErrorKind::InvalidInput,
            Self::TooLarge { .. } => ErrorKind::TooLarge,
            Self::UnsupportedContentType(_) | Self::UnsupportedEncoding(_) => ErrorKind::UnsupportedMediaType,
            Self::Kafka(_) | Self::Unavailable(_) => ErrorKind::Unavailable,
            Self::Batch(_) => ErrorKind::Internal,
            Self::Warehouse(e) => e.kind(),
        }
    }
}

/// Result of decoding.
pub type Result<T, E = Error> = std::result::Result<T, E>;
