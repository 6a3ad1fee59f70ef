//! The one place that classifies query errors: each engine error's [`ErrorKind`] (whose one
//! table, in the warehouse crate, gives every front its HTTP status, gRPC code and SQLSTATE
//! class) and its exact SQLSTATE (the Postgres front sends it as is). Classification reads the
//! errors' variants, never their message text: DataFusion reports unknown tables and
//! functions as plain planning text, so the engine resolves those names itself when planning
//! fails ([`crate::Error::Unresolved`]).

use datafusion::arrow::error::ArrowError;
use datafusion::common::SchemaError;
use datafusion::error::DataFusionError;
pub use tracehouse_warehouse::ErrorKind;

use crate::Error;
use crate::guard::Refusal;

impl Error {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Warehouse(e) => e.kind(),
            Error::DataFusion(e) => datafusion_kind(e),
            Error::Unresolved { .. } => ErrorKind::InvalidInput,
            Error::Refused(Refusal::TooComplex(_)) => ErrorKind::TooComplex,
            Error::Refused(Refusal::Syntax(_)) => ErrorKind::InvalidInput,
            Error::Refused(Refusal::NotAllowed(_)) => ErrorKind::PermissionDenied,
            Error::Busy(_) => ErrorKind::ResourceExhausted,
            Error::Timeout(_) => ErrorKind::Timeout,
            Error::Cancelled => ErrorKind::Cancelled,
            Error::Config(_) | Error::Internal(_) => ErrorKind::Internal,
        }
    }

    /// The SQLSTATE of this error.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            Error::DataFusion(e) => sqlstate(e),
            Error::Unresolved { sqlstate, .. } => sqlstate,
            Error::Refused(Refusal::Syntax(_)) => "42601",
            Error::Warehouse(tracehouse_warehouse::Error::InvalidTenant(_)) => "3D000",
            e => e.kind().sqlstate(),
        }
    }
}

/// The kind of a TraceQL error.
pub fn traceql_kind(e: &tracehouse_traceql::Error) -> ErrorKind {
    match e {
        tracehouse_traceql::Error::TooComplex(_) => ErrorKind::TooComplex,
        tracehouse_traceql::Error::DataFusion(e) => datafusion_kind(e),
        _ => ErrorKind::InvalidInput,
    }
}

/// The kind of a DataFusion error, from its root cause.
pub fn datafusion_kind(e: &DataFusionError) -> ErrorKind {
    match e.find_root() {
        DataFusionError::SQL(_, _)
        | DataFusionError::SchemaError(_, _)
        | DataFusionError::Plan(_)
        | DataFusionError::NotImplemented(_) => ErrorKind::InvalidInput,
        DataFusionError::ResourcesExhausted(_) => ErrorKind::ResourceExhausted,
        DataFusionError::ObjectStore(_) => ErrorKind::Unavailable,
        DataFusionError::ArrowError(a, _) if is_data_error(a) => ErrorKind::InvalidInput,
        DataFusionError::External(inner) => external_kind(inner.as_ref()),
        _ => ErrorKind::Internal,
    }
}

fn external_kind(inner: &(dyn std::error::Error + Send + Sync + 'static)) -> ErrorKind {
    if let Some(e) = inner.downcast_ref::<Error>() {
        e.kind()
    } else if let Some(e) = inner.downcast_ref::<tracehouse_warehouse::Error>() {
        e.kind()
    } else if let Some(e) = inner.downcast_ref::<tracehouse_traceql::Error>() {
        traceql_kind(e)
    } else if inner.is::<object_store::Error>() {
        ErrorKind::Unavailable
    } else {
        ErrorKind::Internal
    }
}

/// Arrow errors that the data (not the server) caused: division by zero, failed casts.
fn is_data_error(e: &ArrowError) -> bool {
    matches!(
        e,
        ArrowError::DivideByZero
            | ArrowError::CastError(_)
            | ArrowError::ParseError(_)
            | ArrowError::ArithmeticOverflow(_)
    )
}

/// SQLSTATE for a DataFusion error, from its root cause.
pub fn sqlstate(e: &DataFusionError) -> &'static str {
    match e.find_root() {
        DataFusionError::SQL(_, _) => "42601",
        DataFusionError::SchemaError(s, _) => match s.as_ref() {
            SchemaError::FieldNotFound { .. } => "42703",
            SchemaError::AmbiguousReference { .. } => "42702",
            SchemaError::DuplicateQualifiedField { .. } | SchemaError::DuplicateUnqualifiedField { .. } => "42701",
        },
        DataFusionError::Plan(_) => "42000",
        DataFusionError::NotImplemented(_) => "0A000",
        DataFusionError::ResourcesExhausted(_) => "53200",
        DataFusionError::ArrowError(a, _) => match a.as_ref() {
            ArrowError::DivideByZero => "22012",
            ArrowError::ArithmeticOverflow(_) => "22003",
            ArrowError::CastError(_) | ArrowError::ParseError(_) => "22P02",
            _ => "XX000",
        },
        DataFusionError::External(inner) => external_sqlstate(inner.as_ref()),
        root => datafusion_kind(root).sqlstate(),
    }
}

fn external_sqlstate(inner: &(dyn std::error::Error + Send + Sync + 'static)) -> &'static str {
    if let Some(e) = inner.downcast_ref::<Error>() {
        return e.sqlstate();
    }
    match inner.downcast_ref::<tracehouse_traceql::Error>() {
        Some(tracehouse_traceql::Error::Parse(_)) => "42601",
        Some(tracehouse_traceql::Error::Validate(_)) => "42804",
        Some(tracehouse_traceql::Error::Plan(_)) => "0A000",
        Some(tracehouse_traceql::Error::TooComplex(_)) => "54001",
        Some(tracehouse_traceql::Error::DataFusion(e)) => sqlstate(e),
        _ => external_kind(inner).sqlstate(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{QueryEngine, QueryEngineConfig};
    use std::time::Duration;

    async fn error_of(sql: &str) -> Error {
        let dir = tempfile::tempdir().unwrap();
        let warehouse = tracehouse_warehouse::Warehouse::open(tracehouse_warehouse::WarehouseConfig::local(dir.path()))
            .await
            .unwrap();
        let engine = QueryEngine::new(warehouse, QueryEngineConfig::default()).unwrap();
        engine.sql("single-tenant", sql).await.unwrap_err()
    }

    fn df(e: DataFusionError) -> Error {
        Error::DataFusion(e)
    }

    /// The one table: each error's kind, SQLSTATE, HTTP status and gRPC code.
    #[test]
    fn one_table_maps_errors_to_every_protocol() {
        use tracehouse_warehouse::Error as Store;
        let external = |e: Box<dyn std::error::Error + Send + Sync>| df(DataFusionError::External(e));
        let cases: Vec<(Error, ErrorKind, &str, u16, i32)> = vec![
            (
                Error::Refused(Refusal::Syntax("x".into())),
                ErrorKind::InvalidInput,
                "42601",
                400,
                3,
            ),
            (
                Error::Refused(Refusal::TooComplex("x".into())),
                ErrorKind::TooComplex,
                "54001",
                400,
                3,
            ),
            (
                Error::Refused(Refusal::NotAllowed("x".into())),
                ErrorKind::PermissionDenied,
                "42501",
                403,
                7,
            ),
            (
                Error::Timeout(Duration::from_secs(1)),
                ErrorKind::Timeout,
                "57014",
                504,
                4,
            ),
            (Error::Cancelled, ErrorKind::Cancelled, "57014", 499, 1),
            (Error::Internal("x".into()), ErrorKind::Internal, "XX000", 500, 13),
            (
                df(DataFusionError::ResourcesExhausted("x".into())),
                ErrorKind::ResourceExhausted,
                "53200",
                429,
                8,
            ),
            (
                external(Box::new(Error::Timeout(Duration::from_secs(1)))),
                ErrorKind::Timeout,
                "57014",
                504,
                4,
            ),
            (
                Error::Warehouse(Store::InvalidTenant("a/b".into())),
                ErrorKind::InvalidInput,
                "3D000",
                400,
                3,
            ),
            // Storage failing is the server's problem, never the client's.
            (
                Error::Warehouse(Store::Unavailable("no live-store answered".into())),
                ErrorKind::Unavailable,
                "58000",
                503,
                14,
            ),
            (
                external(Box::new(Store::Unavailable("object store".into()))),
                ErrorKind::Unavailable,
                "58000",
                503,
                14,
            ),
            (
                df(DataFusionError::ObjectStore(Box::new(object_store::Error::Generic {
                    store: "s3",
                    source: "connection refused".into(),
                }))),
                ErrorKind::Unavailable,
                "58000",
                503,
                14,
            ),
            (
                Error::Warehouse(Store::Wal("disk full".into())),
                ErrorKind::Internal,
                "XX000",
                500,
                13,
            ),
            (
                df(DataFusionError::Execution("x".into())),
                ErrorKind::Internal,
                "XX000",
                500,
                13,
            ),
            (
                external(Box::new(tracehouse_traceql::Error::Plan("x".into()))),
                ErrorKind::InvalidInput,
                "0A000",
                400,
                3,
            ),
            (
                external(Box::new(tracehouse_traceql::Error::TooComplex("x".into()))),
                ErrorKind::TooComplex,
                "54001",
                400,
                3,
            ),
            (
                df(DataFusionError::ArrowError(Box::new(ArrowError::DivideByZero), None)),
                ErrorKind::InvalidInput,
                "22012",
                400,
                3,
            ),
        ];
        for (e, kind, state, http, grpc) in cases {
            let k = e.kind();
            assert_eq!(
                (k, e.sqlstate(), k.http_status(), k.grpc_code()),
                (kind, state, http, grpc),
                "{e}"
            );
        }
    }

    /// SQL errors are classified by what failed, through the real engine.
    #[tokio::test]
    async fn sql_errors_get_their_sqlstate() {
        let cases = [
            ("SELEC 1", "42601"),
            ("SELECT * FROM nope", "42P01"),
            ("SELECT * FROM spans JOIN nope ON true", "42P01"),
            ("SELECT nope FROM (SELECT 1 AS a)", "42703"),
            ("SELECT no_such_fn(1)", "42883"),
            ("SELECT a FROM (SELECT 1 AS a) x, (SELECT 2 AS a) y", "42702"),
            ("SELECT 1 / 0", "22012"),
            ("SELECT CAST('x' AS INT)", "22P02"),
            ("COPY spans TO '/tmp/x'", "42501"),
        ];
        for (sql, state) in cases {
            let e = error_of(sql).await;
            assert_eq!(e.sqlstate(), state, "{sql}: {e}");
            assert!(e.kind().http_status() < 500, "{sql}: {e}");
        }
    }
}
