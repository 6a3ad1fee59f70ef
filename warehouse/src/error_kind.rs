//! [`ErrorKind`]: what went wrong, whatever the protocol, and the one table that maps it to an
//! HTTP status, a gRPC code and a SQLSTATE. Every crate's error reports its kind (`kind()`);
//! every front answers with this table's status for it, so a failure means the same over
//! OTLP, Tempo's HTTP and gRPC APIs, Flight and the Postgres wire.

/// What went wrong, whatever the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The request is wrong: syntax, types, unknown names, a bad tenant or parameter.
    InvalidInput,
    /// What the request names does not exist (a trace, a prepared statement).
    NotFound,
    /// The caller did not say who it is, or not validly.
    Unauthenticated,
    /// The caller may not do what it asks.
    PermissionDenied,
    /// The request body is over its size limit.
    TooLarge,
    /// The request body's content type or encoding is not one we read.
    UnsupportedMediaType,
    /// The query is over a length, depth or operator limit.
    TooComplex,
    /// Memory, a queue or a rate limit ran out: retry later.
    ResourceExhausted,
    /// A dependency (object storage, Kafka, a live-store) did not answer, or the server is
    /// starting or stopping: retry later.
    Unavailable,
    /// The request ran past its deadline.
    Timeout,
    /// The client cancelled.
    Cancelled,
    /// The request asks for an operation this server does not offer.
    Unimplemented,
    /// The server failed.
    Internal,
}

/// The kinds, for tables and tests.
pub const ALL_ERROR_KINDS: [ErrorKind; 13] = [
    ErrorKind::InvalidInput,
    ErrorKind::NotFound,
    ErrorKind::Unauthenticated,
    ErrorKind::PermissionDenied,
    ErrorKind::TooLarge,
    ErrorKind::UnsupportedMediaType,
    ErrorKind::TooComplex,
    ErrorKind::ResourceExhausted,
    ErrorKind::Unavailable,
    ErrorKind::Timeout,
    ErrorKind::Cancelled,
    ErrorKind::Unimplemented,
    ErrorKind::Internal,
];

impl ErrorKind {
    /// The HTTP status, as a number (499 is the de-facto "client closed request").
    pub fn http_status(self) -> u16 {
        self.row().0
    }

    /// The gRPC status code, as its number (`tonic::Code` converts it).
    pub fn grpc_code(self) -> i32 {
        self.row().1
    }

    /// The SQLSTATE when nothing more specific is known (the engine refines input errors:
    /// unknown table 42P01, unknown column 42703, ...).
    pub fn sqlstate(self) -> &'static str {
        self.row().2
    }

    /// The one table: HTTP status, gRPC code, SQLSTATE.
    fn row(self) -> (u16, i32, &'static str) {
        match self {
            Self::InvalidInput => (400, 3, "22023"),
            Self::NotFound => (404, 5, "42704"),
            Self::Unauthenticated => (401, 16, "28000"),
            Self::PermissionDenied => (403, 7, "42501"),
            Self::TooLarge => (413, 8, "54000"),
            Self::UnsupportedMediaType => (415, 3, "0A000"),
            Self::TooComplex => (400, 3, "54001"),
            Self::ResourceExhausted => (429, 8, "53000"),
            Self::Unavailable => (503, 14, "58000"),
            Self::Timeout => (504, 4, "57014"),
            Self::Cancelled => (499, 1, "57014"),
            Self::Unimplemented => (501, 12, "0A000"),
            Self::Internal => (500, 13, "XX000"),
        }
    }
}

impl crate::Error {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        use crate::Error;
        match self {
            Error::InvalidSpan(_) | Error::InvalidTenant(_) => ErrorKind::InvalidInput,
            Error::Backpressure(_) => ErrorKind::ResourceExhausted,
            Error::TooLarge(_) => ErrorKind::TooLarge,
            Error::Unavailable(_) | Error::ShuttingDown | Error::ObjectStore(_) => ErrorKind::Unavailable,
            Error::Config(_)
            | Error::Conflict(_)
            | Error::Wal(_)
            | Error::Io(_)
            | Error::Arrow(_)
            | Error::Delta(_)
            | Error::Parquet(_)
            | Error::DataFusion(_) => ErrorKind::Internal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    #[test]
    fn every_kind_has_a_status_of_its_class() {
        for kind in ALL_ERROR_KINDS {
            let (http, grpc, state) = kind.row();
            let client = (400..500).contains(&http);
            assert!(client || (500..600).contains(&http), "{kind:?}");
            // gRPC's client-side codes are exactly those of HTTP 4xx answers.
            assert_eq!(client, ![4, 12, 13, 14].contains(&grpc), "{kind:?}");
            assert_eq!(state.len(), 5, "{kind:?}");
        }
    }

    #[test]
    fn storage_errors_are_never_client_errors() {
        let server_side = [
            Error::Unavailable("no live-store answered".into()),
            Error::ObjectStore(object_store::Error::Generic {
                store: "s3",
                source: "connection refused".into(),
            }),
            Error::ShuttingDown,
            Error::Wal("disk".into()),
        ];
        for e in server_side {
            assert!(e.kind().http_status() >= 500, "{e}");
        }
        assert_eq!(Error::InvalidTenant("a/b".into()).kind(), ErrorKind::InvalidInput);
        assert_eq!(Error::Backpressure("full".into()).kind().http_status(), 429);
    }
}
