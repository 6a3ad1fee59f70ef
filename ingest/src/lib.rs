//! Receivers' decoding: OTLP trace requests (protobuf or JSON, optionally gzip) into `spans`
//! record batches, with limits on request size.
//!
//! Architecture invariant: this crate decodes and validates; it never stores or queries. It
//! knows the warehouse only through its span record types and batch builder.

pub mod otlp;

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
}

/// Result of decoding.
pub type Result<T, E = Error> = std::result::Result<T, E>;
