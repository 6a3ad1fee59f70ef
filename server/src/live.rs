//! Between querier and live-store: the live-store's `GET /live-store/v1/spans?tenant=T`, an
//! Arrow IPC stream with one batch per Kafka record (the `spans` columns plus `__partition`
//! and `__offset`), and the querier's [`LiveSource`] that reads it from the first live-store
//! replica that answers.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, ArrayRef, Int32Array, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tracehouse_ingest::kafka::txn_app_id;
use tracehouse_ingest::live_store::LiveStore;
use tracehouse_warehouse::schema::spans_schema;
use tracehouse_warehouse::{Error as StoreError, LiveRecord, LiveSource};

/// Path of the live-store's endpoint.
pub const LIVE_PATH: &str = "/live-store/v1/spans";

fn wire_schema() -> SchemaRef {
    let mut fields: Vec<Arc<Field>> = spans_schema().fields().iter().cloned().collect();
    fields.push(Arc::new(Field::new("__partition", DataType::Int32, false)));
    fields.push(Arc::new(Field::new("__offset", DataType::Int64, false)));
    Arc::new(Schema::new(fields))
}

#[derive(serde::Deserialize)]
struct TenantQuery {
    tenant: String,
}

/// The live-store's router.
pub fn routes(store: Arc<LiveStore>) -> Router {
    Router::new().route(LIVE_PATH, get(live_spans)).with_state(store)
}

async fn live_spans(State(store): State<Arc<LiveStore>>, Query(q): Query<TenantQuery>) -> Response {
    let records = store.records(&q.tenant);
    let encoded = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, arrow::error::ArrowError> {
        let schema = wire_schema();
        let mut writer = StreamWriter::try_new(Vec::new(), &schema)?;
        for (partition, offset, batch) in records {
            let rows = batch.num_rows();
            let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
            columns.push(Arc::new(Int32Array::from(vec![partition; rows])));
            columns.push(Arc::new(Int64Array::from(vec![offset; rows])));
            writer.write(&RecordBatch::try_new(schema.clone(), columns)?)?;
        }
        writer.into_inner()
    })
    .await;
    match encoded {
        Ok(Ok(body)) => ([(header::CONTENT_TYPE, "application/vnd.apache.arrow.stream")], body).into_response(),
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, format!("encoding live spans: {e}")).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("encoding live spans: {e}")).into_response(),
    }
}

/// The querier's view of the live-store replicas.
pub struct RemoteLiveStores {
    client: reqwest::Client,
    addresses: Vec<String>,
    topic: String,
}

impl RemoteLiveStores {
    pub fn new(addresses: Vec<String>, topic: String, timeout: Duration) -> Result<Self, String> {
        assert!(!addresses.is_empty());
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| format!("live-store client: {e}"))?;
        Ok(Self {
            client,
            addresses,
            topic,
        })
    }

    async fn fetch(&self, address: &str, tenant: &str) -> Result<Vec<LiveRecord>, String> {
        let base = if address.starts_with("http://") || address.starts_with("https://") {
            address.to_string()
        } else {
            format!("http://{address}")
        };
        let response = self
            .client
            .get(format!("{base}{LIVE_PATH}"))
            .query(&[("tenant", tenant)])
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            return Err(format!("{status}: {text}"));
        }
        let body = response.bytes().await.map_err(|e| e.to_string())?;
        let topic = self.topic.clone();
        tokio::task::spawn_blocking(move || decode(&body, &topic))
            .await
            .map_err(|e| e.to_string())?
    }
}

fn decode(body: &[u8], topic: &str) -> Result<Vec<LiveRecord>, String> {
    let reader = StreamReader::try_new(std::io::Cursor::new(body), None).map_err(|e| e.to_string())?;
    let spans = spans_schema();
    let n = spans.fields().len();
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| e.to_string())?;
        if batch.num_columns() != n + 2 {
            // A live-store of another version: its spans would be misread, so say so.
            return Err(format!(
                "live-store sent {} columns, this querier reads {}",
                batch.num_columns(),
                n + 2
            ));
        }
        if batch.num_rows() == 0 {
            continue;
        }
        let partition = batch
            .column(n)
            .as_any()
            .downcast_ref::<Int32Array>()
            .ok_or("bad __partition column")?
            .value(0);
        let offset = batch
            .column(n + 1)
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or("bad __offset column")?
            .value(0);
        let columns: Vec<ArrayRef> = batch.columns()[..n].to_vec();
        let spans_batch = RecordBatch::try_new(spans.clone(), columns).map_err(|e| e.to_string())?;
        assert!(spans_batch.column(0).len() == batch.num_rows());
        out.push(LiveRecord {
            app_id: txn_app_id(topic, partition),
            version: offset,
            batch: spans_batch,
        });
    }
    Ok(out)
}

#[async_trait::async_trait]
impl LiveSource for RemoteLiveStores {
    async fn live(&self, tenant: &str) -> tracehouse_warehouse::Result<Vec<LiveRecord>> {
        let mut errors = Vec::new();
        for address in &self.addresses {
            match self.fetch(address, tenant).await {
                Ok(records) => return Ok(records),
                Err(e) => errors.push(format!("{address}: {e}")),
            }
        }
        Err(StoreError::Unavailable(format!(
            "no live-store answered ({})",
            errors.join("; ")
        )))
    }
}
