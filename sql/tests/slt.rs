//! SQL behaviour as sqllogictest files (`tests/slt/*.slt`), run by the `sqllogictest` crate
//! over the TraceQL fixture (`common::Fixture`: three OTLP parts, two flushed, one live) through
//! the engine's one entry point, as tenant `single-tenant`. An error reads
//! `SQLSTATE <code>: <message>`, so `statement error SQLSTATE 42P01` pins a code.
//!
//! `SLT_COMPLETE=1` rewrites the files' expected results from the engine's answers (review the
//! diff). The engine here has a 256 MiB memory pool and a 2 s query timeout, so memory and timeout
//! errors are cheap to reach.

mod common;

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, RecordBatch};
use arrow::datatypes::DataType;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use sqllogictest::{DBOutput, DefaultColumnType};
use tracehouse_sql::{QueryEngine, QueryEngineConfig};

/// An engine error as sqllogictest matches it: its SQLSTATE, then its message.
#[derive(Debug, thiserror::Error)]
#[error("SQLSTATE {sqlstate}: {message}")]
struct SqlError {
    sqlstate: &'static str,
    message: String,
}

struct Engine {
    engine: Arc<QueryEngine>,
}

#[async_trait::async_trait]
impl sqllogictest::AsyncDB for Engine {
    type Error = SqlError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SqlError> {
        let batches = self.engine.sql(common::TENANT, sql).await.map_err(|e| SqlError {
            sqlstate: e.sqlstate(),
            message: e.to_string(),
        })?;
        Ok(output(&batches))
    }

    async fn shutdown(&mut self) {}

    async fn sleep(dur: Duration) {
        tokio::time::sleep(dur).await;
    }
}

fn column_type(t: &DataType) -> DefaultColumnType {
    match t {
        t if t.is_integer() => DefaultColumnType::Integer,
        t if t.is_floating() => DefaultColumnType::FloatingPoint,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => DefaultColumnType::Text,
        _ => DefaultColumnType::Any,
    }
}

/// Rows as text: `NULL` for nulls, `(empty)` for empty text, arrow's display otherwise.
fn output(batches: &[RecordBatch]) -> DBOutput<DefaultColumnType> {
    let Some(first) = batches.first() else {
        return DBOutput::Rows {
            types: Vec::new(),
            rows: Vec::new(),
        };
    };
    let types = first
        .schema()
        .fields()
        .iter()
        .map(|f| column_type(f.data_type()))
        .collect();
    let options = FormatOptions::default().with_null("NULL");
    let mut rows = Vec::new();
    for batch in batches {
        let formatters: Vec<_> = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).expect("a displayable column"))
            .collect();
        for row in 0..batch.num_rows() {
            let cells = formatters.iter().zip(batch.columns()).map(|(f, c)| {
                let text = f.value(row).to_string();
                match text.is_empty() && c.is_valid(row) {
                    true => "(empty)".to_string(),
                    false => text,
                }
            });
            rows.push(cells.collect());
        }
    }
    DBOutput::Rows { types, rows }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_behaviour_files() {
    let fixture = common::Fixture::load().await;
    let config = QueryEngineConfig {
        max_memory_bytes: 256 << 20,
        query_timeout: Duration::from_secs(2),
        ..QueryEngineConfig::default()
    };
    let engine = Arc::new(QueryEngine::new(fixture.warehouse.clone(), config).unwrap());
    let mut files: Vec<_> = std::fs::read_dir(common::manifest_dir().join("tests/slt"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .slt files");
    for file in files {
        let engine = engine.clone();
        let mut runner = sqllogictest::Runner::new(move || {
            let engine = engine.clone();
            async move { Ok(Engine { engine }) }
        });
        if std::env::var_os("SLT_COMPLETE").is_some() {
            // Rewrites the file's expected results from what the engine answers now.
            runner
                .update_test_file(
                    &file,
                    " ",
                    sqllogictest::default_validator,
                    sqllogictest::default_normalizer,
                    sqllogictest::default_column_validator,
                )
                .await
                .unwrap();
        } else if let Err(e) = runner.run_file_async(&file).await {
            panic!("{}: {}", file.display(), e.display(true));
        }
    }
}
