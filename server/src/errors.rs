//! The one place that maps ingest and storage errors to HTTP statuses and gRPC codes.

use axum::http::StatusCode;
use tracehouse_ingest::Error as DecodeError;
use tracehouse_warehouse::Error as StoreError;

/// An error answering an ingest request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Decode(#[from] DecodeError),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("internal: {0}")]
    Internal(String),
}

impl Error {
    /// The HTTP status for this error.
    pub fn http_status(&self) -> StatusCode {
        match self {
            Self::Decode(DecodeError::TooLarge { .. }) | Self::Store(StoreError::TooLarge(_)) => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            Self::Decode(DecodeError::UnsupportedContentType(_) | DecodeError::UnsupportedEncoding(_)) => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            Self::Decode(DecodeError::Malformed { .. } | DecodeError::InvalidSpan(_)) => StatusCode::BAD_REQUEST,
            Self::Store(StoreError::InvalidSpan(_) | StoreError::InvalidTenant(_)) => StatusCode::BAD_REQUEST,
            Self::Store(StoreError::Backpressure(_)) => StatusCode::TOO_MANY_REQUESTS,
            Self::Store(StoreError::ShuttingDown | StoreError::Unavailable(_))
            | Self::Decode(DecodeError::Unavailable(_)) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Decode(DecodeError::Warehouse(StoreError::InvalidTenant(_) | StoreError::InvalidSpan(_))) => {
                StatusCode::BAD_REQUEST
            }
            Self::Decode(DecodeError::Batch(_) | DecodeError::Kafka(_) | DecodeError::Warehouse(_))
            | Self::Store(_)
            | Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The gRPC status for this error.
    pub fn grpc_status(&self) -> tonic::Status {
        let message = self.to_string();
        match self.http_status() {
            StatusCode::BAD_REQUEST | StatusCode::UNSUPPORTED_MEDIA_TYPE => tonic::Status::invalid_argument(message),
            StatusCode::PAYLOAD_TOO_LARGE | StatusCode::TOO_MANY_REQUESTS => tonic::Status::resource_exhausted(message),
            StatusCode::SERVICE_UNAVAILABLE => tonic::Status::unavailable(message),
            _ => tonic::Status::internal(message),
        }
    }

    /// The google.rpc.Code number matching the gRPC status, for OTLP/HTTP error bodies.
    pub fn rpc_code(&self) -> i32 {
        self.grpc_status().code() as i32
    }
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
