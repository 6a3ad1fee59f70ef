//! Errors answering an ingest request, with their status on HTTP and gRPC taken from
//! [`ErrorKind`]'s one table.

use axum::http::StatusCode;
use tracehouse_ingest::Error as DecodeError;
use tracehouse_warehouse::Error as StoreError;
use tracehouse_warehouse::ErrorKind;

/// An error answering an ingest request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Decode(#[from] DecodeError),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("internal: {0}")]
    Internal(String),
    /// Over the tenant's ingestion rate: nothing of the request is stored.
    #[error("{message}")]
    RateLimited { message: String, retry_after_secs: u64 },
    /// Every span of the request would take its trace over `max_bytes_per_trace`.
    #[error("{0}")]
    TraceTooLarge(String),
    /// Every span of the request belongs to a new trace beyond `max_traces_per_user`.
    #[error("{0}")]
    LiveTracesExceeded(String),
}

impl Error {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Decode(e) => e.kind(),
            Self::Store(e) => e.kind(),
            Self::Internal(_) => ErrorKind::Internal,
            Self::RateLimited { .. } | Self::LiveTracesExceeded(_) => ErrorKind::ResourceExhausted,
            Self::TraceTooLarge(_) => ErrorKind::InvalidInput,
        }
    }

    /// The HTTP status for this error, from [`ErrorKind`]'s one table.
    pub fn http_status(&self) -> StatusCode {
        http_status(self.kind())
    }

    /// The gRPC status for this error, from [`ErrorKind`]'s one table.
    pub fn grpc_status(&self) -> tonic::Status {
        grpc_status(self.kind(), self.to_string())
    }

    /// Seconds a client pushed back (429, 503) should wait before retrying.
    pub fn retry_after_secs(&self) -> u64 {
        match self {
            Self::RateLimited { retry_after_secs, .. } => (*retry_after_secs).max(1),
            _ => 1,
        }
    }

    /// The google.rpc.Code number matching the gRPC status, for OTLP/HTTP error bodies.
    pub fn rpc_code(&self) -> i32 {
        self.kind().grpc_code()
    }
}

/// `kind`'s HTTP status.
fn http_status(kind: ErrorKind) -> StatusCode {
    StatusCode::from_u16(kind.http_status()).expect("the kind table holds valid statuses")
}

/// A gRPC status of `kind`.
fn grpc_status(kind: ErrorKind, message: String) -> tonic::Status {
    tonic::Status::new(tonic::Code::from_i32(kind.grpc_code()), message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        let e = Error::Store(StoreError::Backpressure("full".into()));
        assert_eq!(e.http_status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(e.grpc_status().code(), tonic::Code::ResourceExhausted);
        let e = Error::Decode(DecodeError::Malformed {
            format: "json",
            message: "eof".into(),
        });
        assert_eq!(e.http_status(), StatusCode::BAD_REQUEST);
        assert_eq!(e.grpc_status().code(), tonic::Code::InvalidArgument);
        assert_eq!(
            Error::Decode(DecodeError::TooLarge { limit_bytes: 1 }).http_status(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        let e = Error::Decode(DecodeError::Unavailable("broker down".into()));
        assert_eq!(e.http_status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(e.grpc_status().code(), tonic::Code::Unavailable);
    }
}
