//! The one place that classifies query errors: a SQLSTATE for each (the Postgres front sends
//! it as is) and an [`ErrorKind`] that every front maps to its own status.

use datafusion::error::DataFusionError;

/// SQLSTATE for a DataFusion error.
pub fn sqlstate(e: &DataFusionError) -> &'static str {
    let root = e.find_root();
    let text = root.to_string();
    match root {
        DataFusionError::SQL(_, _) => "42601",
        DataFusionError::SchemaError(_, _) => {
            if text.contains("No field named") || text.contains("not found") {
                "42703"
            } else {
                "42P01"
            }
        }
        DataFusionError::Plan(_) => {
            if text.contains("table") && text.contains("not found") {
                "42P01"
            } else if text.contains("No field named") {
                "42703"
            } else if text.contains("No function matches") || text.contains("Invalid function") {
                "42883"
            } else {
                "42000"
            }
        }
        DataFusionError::NotImplemented(_) => "0A000",
        DataFusionError::External(inner) => {
            if let Some(e) = inner.downcast_ref::<crate::Error>() {
                return engine_sqlstate(e);
            }
            match inner.downcast_ref::<tracehouse_traceql::Error>() {
                Some(tracehouse_traceql::Error::Parse(_)) => "42601",
                Some(tracehouse_traceql::Error::Validate(_)) => "42804",
                Some(tracehouse_traceql::Error::Plan(_)) => "0A000",
                Some(tracehouse_traceql::Error::TooComplex(_)) => "54001",
                _ => "XX000",
            }
        }
        DataFusionError::ResourcesExhausted(_) => "53200",
        DataFusionError::ArrowError(_, _) | DataFusionError::Execution(_) => {
            if text.contains("Divide by zero") {
                "22012"
            } else if text.contains("Cast error") || text.contains("Cannot cast") || text.contains("parse") {
                "22P02"
            } else {
                "XX000"
            }
        }
        _ => "XX000",
    }
}

/// SQLSTATE for an engine error.
pub fn engine_sqlstate(e: &crate::Error) -> &'static str {
    use crate::Error;
    use crate::guard::Refusal;
    match e {
        Error::DataFusion(df) => sqlstate(df),
        Error::Refused(Refusal::TooComplex(_)) => "54001",
        Error::Refused(Refusal::Syntax(_)) => "42601",
        Error::Refused(Refusal::NotAllowed(_)) => "42501",
        Error::Timeout(_) | Error::Cancelled => "57014",
        Error::Warehouse(tracehouse_warehouse::Error::InvalidTenant(_)) => "3D000",
        Error::Warehouse(_) | Error::Config(_) | Error::Internal(_) => "XX000",
    }
}

/// What went wrong, whatever the protocol: the one table from which HTTP statuses, gRPC codes
/// and (through [`engine_sqlstate`]) SQLSTATEs follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is wrong: syntax, types, unknown names, bad tenant.
    InvalidInput,
    /// The request is over a size, depth or complexity limit.
    TooComplex,
    /// The request asks for something the caller may not do.
    PermissionDenied,
    /// Memory or another shared resource ran out.
    ResourceExhausted,
    /// The query ran past its deadline.
    Timeout,
    /// The client cancelled.
    Cancelled,
    /// The server failed.
    Internal,
}

impl ErrorKind {
    /// The kind of an engine error.
    pub fn of(e: &crate::Error) -> Self {
        match engine_sqlstate(e) {
            "54000" | "54001" => Self::TooComplex,
            "42501" => Self::PermissionDenied,
            "53200" | "53300" => Self::ResourceExhausted,
            "57014" if matches!(e, crate::Error::Cancelled) => Self::Cancelled,
            "57014" => Self::Timeout,
            "XX000" => Self::Internal,
            _ => Self::InvalidInput,
        }
    }

    /// The HTTP status for this kind.
    pub fn http_status(self) -> u16 {
        match self {
            Self::InvalidInput | Self::TooComplex => 400,
            Self::PermissionDenied => 403,
            Self::ResourceExhausted => 429,
            Self::Timeout => 504,
            Self::Cancelled => 499,
            Self::Internal => 500,
        }
    }

    /// The gRPC status code (as its number) for this kind.
    pub fn grpc_code(self) -> i32 {
        match self {
            Self::InvalidInput | Self::TooComplex => 3,
            Self::PermissionDenied => 7,
            Self::ResourceExhausted => 8,
            Self::Timeout => 4,
            Self::Cancelled => 1,
            Self::Internal => 13,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::SessionContext;

    async fn code_of(sql: &str) -> &'static str {
        let ctx = SessionContext::new();
        let err = match ctx.sql(sql).await {
            Ok(df) => df.collect().await.unwrap_err(),
            Err(e) => e,
        };
        sqlstate(&err)
    }

    #[test]
    fn one_table_maps_kinds_to_every_protocol() {
        use crate::Error;
        use crate::guard::Refusal;
        let cases: Vec<(Error, &str, ErrorKind, u16, i32)> = vec![
            (
                Error::Refused(Refusal::Syntax("x".into())),
                "42601",
                ErrorKind::InvalidInput,
                400,
                3,
            ),
            (
                Error::Refused(Refusal::TooComplex("x".into())),
                "54001",
                ErrorKind::TooComplex,
                400,
                3,
            ),
            (
                Error::Refused(Refusal::NotAllowed("x".into())),
                "42501",
                ErrorKind::PermissionDenied,
                403,
                7,
            ),
            (
                Error::Timeout(std::time::Duration::from_secs(1)),
                "57014",
                ErrorKind::Timeout,
                504,
                4,
            ),
            (Error::Cancelled, "57014", ErrorKind::Cancelled, 499, 1),
            (Error::Internal("x".into()), "XX000", ErrorKind::Internal, 500, 13),
            (
                Error::DataFusion(DataFusionError::ResourcesExhausted("x".into())),
                "53200",
                ErrorKind::ResourceExhausted,
                429,
                8,
            ),
            (
                Error::DataFusion(DataFusionError::External(Box::new(Error::Timeout(
                    std::time::Duration::from_secs(1),
                )))),
                "57014",
                ErrorKind::Timeout,
                504,
                4,
            ),
        ];
        for (e, state, kind, http, grpc) in cases {
            assert_eq!(engine_sqlstate(&e), state, "{e}");
            let k = ErrorKind::of(&e);
            assert_eq!((k, k.http_status(), k.grpc_code()), (kind, http, grpc), "{e}");
        }
    }

    #[tokio::test]
    async fn maps_common_errors() {
        assert_eq!(code_of("SELEC 1").await, "42601");
        assert_eq!(code_of("SELECT * FROM nope").await, "42P01");
        assert_eq!(code_of("SELECT nope FROM (SELECT 1 AS a)").await, "42703");
        assert_eq!(code_of("SELECT no_such_fn(1)").await, "42883");
    }
}
