//! The one place that turns query errors into Postgres errors with a SQLSTATE.

use datafusion::error::DataFusionError;
use datafusion::sql::sqlparser::parser::ParserError;
use pgwire::error::{ErrorInfo, PgWireError};

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
        DataFusionError::External(inner) => match inner.downcast_ref::<tracehouse_traceql::Error>() {
            Some(tracehouse_traceql::Error::Parse(_)) => "42601",
            Some(tracehouse_traceql::Error::Validate(_)) => "42804",
            Some(tracehouse_traceql::Error::Plan(_)) => "0A000",
            _ => "XX000",
        },
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

fn user_error(code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new("ERROR".into(), code.into(), message)))
}

/// Gives an `ApiError` from the query layer its proper SQLSTATE; other errors pass through.
pub fn to_pg_error(error: PgWireError) -> PgWireError {
    match error {
        PgWireError::ApiError(inner) => {
            if let Some(df) = inner.downcast_ref::<DataFusionError>() {
                user_error(sqlstate(df), df.to_string())
            } else if let Some(p) = inner.downcast_ref::<ParserError>() {
                user_error("42601", p.to_string())
            } else if let Some(e) = inner.downcast_ref::<crate::Error>() {
                match e {
                    crate::Error::DataFusion(df) => user_error(sqlstate(df), df.to_string()),
                    crate::Error::Warehouse(tracehouse_warehouse::Error::InvalidTenant(_)) => {
                        user_error("3D000", e.to_string())
                    }
                    _ => user_error("XX000", e.to_string()),
                }
            } else {
                user_error("XX000", inner.to_string())
            }
        }
        other => other,
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

    #[tokio::test]
    async fn maps_common_errors() {
        assert_eq!(code_of("SELEC 1").await, "42601");
        assert_eq!(code_of("SELECT * FROM nope").await, "42P01");
        assert_eq!(code_of("SELECT nope FROM (SELECT 1 AS a)").await, "42703");
        assert_eq!(code_of("SELECT no_such_fn(1)").await, "42883");
    }
}
