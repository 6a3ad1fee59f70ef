//! OTLP receivers: `POST /v1/traces` (protobuf or JSON, optionally gzip) and gRPC
//! `TraceService/Export`. The tenant comes from `X-Scope-OrgID` (header or metadata). A request
//! is acknowledged once its spans are in the local WAL (monolithic) or acknowledged by Kafka
//! (distributor).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use arrow::array::RecordBatch;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use prost::Message;
use tracehouse_ingest::kafka::Producer;
use tracehouse_ingest::otlp::{BodyFormat, decode_body, parse_request, request_to_batch};
use tracehouse_warehouse::Warehouse;
use tracehouse_warehouse::storage::{tenant_or_default, validate_tenant};

use crate::errors::Error;
use crate::metrics::ReceiverStats;

/// Header (and gRPC metadata key) naming the tenant, as in Tempo.
pub use tracehouse_sql::TENANT_HEADER;

/// Where acknowledged spans go.
#[derive(Clone)]
pub enum Sink {
    /// Monolithic: the local warehouse (WAL first).
    Warehouse(Arc<Warehouse>),
    /// Distributor: Kafka, acknowledged by the brokers.
    Kafka(Arc<Producer>),
}

/// What the receivers share.
pub struct Receiver {
    pub sink: Sink,
    pub stats: Arc<ReceiverStats>,
    pub max_request_bytes: usize,
}

/// google.rpc.Status, the OTLP/HTTP error body.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

impl Receiver {
    fn count_error(&self, e: &Error) {
        let counter = match e.http_status() {
            StatusCode::PAYLOAD_TOO_LARGE => &self.stats.requests_rejected_too_large,
            StatusCode::TOO_MANY_REQUESTS => &self.stats.requests_rejected_backpressure,
            s if s.is_client_error() => &self.stats.requests_rejected_client,
            _ => &self.stats.requests_failed_server,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Runs `decode` (all CPU work of one request: decompress, parse, convert and validate) in
    /// one blocking task, then stores the spans, or sends them to Kafka; returns the number of
    /// spans acknowledged.
    async fn ingest(
        &self,
        tenant: &str,
        decode: impl FnOnce() -> Result<ExportTraceServiceRequest, Error> + Send + 'static,
    ) -> Result<usize, Error> {
        let (request, batch) = tokio::task::spawn_blocking(move || {
            let request = decode()?;
            let batch: RecordBatch = request_to_batch(&request)?;
            Ok::<_, Error>((request, batch))
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))??;
        let spans = batch.num_rows();
        match &self.sink {
            Sink::Warehouse(warehouse) => warehouse.append(tenant, batch).await?,
            Sink::Kafka(producer) => {
                validate_tenant(tenant)?;
                if spans > 0 {
                    producer.send(tenant, &request).await?;
                }
            }
        }
        self.stats.spans_received.fetch_add(spans as u64, Ordering::Relaxed);
        Ok(spans)
    }
}

/// The OTLP/HTTP router.
pub fn http_app(receiver: Arc<Receiver>) -> Router {
    // Compressed bodies are bounded here; decompressed ones in `decode_body`.
    let limit = receiver.max_request_bytes;
    Router::new()
        .route("/v1/traces", post(export_http))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(receiver)
}

async fn export_http(State(receiver): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> Response {
    receiver.stats.otlp_http_requests.fetch_add(1, Ordering::Relaxed);
    let header_str = |name| headers.get(name).and_then(|v: &HeaderValue| v.to_str().ok());
    let content_type = header_str(header::CONTENT_TYPE.as_str()).unwrap_or("");
    let parsed_format = BodyFormat::from_content_type(content_type);
    let format = parsed_format.as_ref().ok().copied();
    let tenant = tenant_or_default(headers.get(TENANT_HEADER).map(HeaderValue::as_bytes));
    let encoding = header_str(header::CONTENT_ENCODING.as_str()).map(str::to_string);
    let limit = receiver.max_request_bytes;
    let result = match parsed_format {
        Err(e) => Err(e.into()),
        Ok(body_format) => {
            let decode = move || {
                let body = decode_body(&body, encoding.as_deref(), limit)?;
                Ok(parse_request(&body, body_format)?)
            };
            receiver.ingest(&tenant, decode).await
        }
    };
    match (result, format) {
        (Ok(_), Some(BodyFormat::Json)) => {
            (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], "{}").into_response()
        }
        (Ok(_), _) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/x-protobuf")],
            ExportTraceServiceResponse::default().encode_to_vec(),
        )
            .into_response(),
        (Err(e), format) => {
            receiver.count_error(&e);
            let status = e.http_status();
            if status.is_server_error() {
                tracing::error!(error = %e, "otlp/http export failed");
            }
            let mut response = match format {
                Some(BodyFormat::Json) => {
                    let body = serde_json::json!({ "code": e.rpc_code(), "message": e.to_string() });
                    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
                }
                Some(BodyFormat::Protobuf) => {
                    let body = RpcStatus {
                        code: e.rpc_code(),
                        message: e.to_string(),
                    }
                    .encode_to_vec();
                    (status, [(header::CONTENT_TYPE, "application/x-protobuf")], body).into_response()
                }
                None => (
                    status,
                    [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                    e.to_string(),
                )
                    .into_response(),
            };
            if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            response
        }
    }
}

/// The OTLP/gRPC trace service.
pub struct GrpcReceiver(pub Arc<Receiver>);

#[tonic::async_trait]
impl TraceService for GrpcReceiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let receiver = &self.0;
        receiver.stats.otlp_grpc_requests.fetch_add(1, Ordering::Relaxed);
        let tenant = tenant_or_default(request.metadata().get(TENANT_HEADER).map(|v| v.as_bytes()));
        let request = request.into_inner();
        match receiver.ingest(&tenant, move || Ok(request)).await {
            Ok(_) => Ok(tonic::Response::new(ExportTraceServiceResponse::default())),
            Err(e) => {
                receiver.count_error(&e);
                if e.http_status().is_server_error() {
                    tracing::error!(error = %e, "otlp/grpc export failed");
                }
                Err(e.grpc_status())
            }
        }
    }
}

/// The gRPC service with size limits and gzip.
pub fn grpc_service(receiver: Arc<Receiver>) -> TraceServiceServer<GrpcReceiver> {
    let limit = receiver.max_request_bytes;
    TraceServiceServer::new(GrpcReceiver(receiver))
        .max_decoding_message_size(limit)
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
}
