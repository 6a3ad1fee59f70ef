//! OTLP receivers: `POST /v1/traces` (protobuf or JSON, optionally gzip) and gRPC
//! `TraceService/Export`; and the [`Receiver`] every receiver (OTLP, Jaeger, Zipkin) hands its
//! decoded requests to. The tenant comes from `X-Scope-OrgID` (header or metadata). A request
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
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use tracehouse_ingest::kafka::Producer;
use tracehouse_ingest::otlp::{BodyFormat, decode_body, parse_request, request_to_batch};
use tracehouse_warehouse::Warehouse;
use tracehouse_warehouse::storage::{tenant_or_default, validate_tenant};

use crate::errors::Error;
use crate::limits::{Discarded, Limiter};
use crate::metrics::ReceiverStats;
use crate::tempo_metrics::{DiscardReason, TempoMetrics};

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
    pub metrics: Arc<TempoMetrics>,
    pub limiter: Arc<Limiter>,
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
    /// Counts a refused request by its status.
    pub(crate) fn count_error(&self, e: &Error) {
        let counter = match e.http_status() {
            StatusCode::PAYLOAD_TOO_LARGE => &self.stats.requests_rejected_too_large,
            StatusCode::TOO_MANY_REQUESTS => &self.stats.requests_rejected_backpressure,
            s if s.is_client_error() => &self.stats.requests_rejected_client,
            _ => &self.stats.requests_failed_server,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Runs `decode` (all CPU work of one request: decompress, parse, translate, limit,
    /// convert and validate) in one blocking task, then stores the spans, or sends them to
    /// Kafka. `receiver` and `transport` label Tempo's receiver series; `ingress_bytes` is the
    /// body's size as sent, when known.
    pub(crate) async fn ingest(
        &self,
        receiver: &'static str,
        transport: &'static str,
        tenant: &str,
        ingress_bytes: Option<u64>,
        decode: impl FnOnce() -> Result<ExportTraceServiceRequest, Error> + Send + 'static,
    ) -> Result<Ingested, Error> {
        // A bad tenant id gets no limiter state and no series.
        validate_tenant(tenant)?;
        let started = std::time::Instant::now();
        if let Some(bytes) = ingress_bytes {
            self.metrics.ingress(tenant, bytes);
        }
        let result = self.store(tenant, decode).await;
        self.metrics.push_took(started.elapsed());
        match &result {
            Ok(done) => {
                let spans = done.spans as u64;
                self.metrics
                    .accepted(receiver, transport, tenant, spans, done.bytes as u64);
                self.stats.spans_received.fetch_add(spans, Ordering::Relaxed);
                for (reason, n) in done.discarded.by_reason() {
                    if n > 0 {
                        self.metrics.discarded(tenant, reason, n);
                    }
                }
                self.metrics.refused(receiver, transport, done.discarded.spans());
            }
            Err((e, spans)) => {
                self.metrics.refused(receiver, transport, *spans as u64);
                if let Some(reason) = discard_reason(e) {
                    self.metrics.discarded(tenant, reason, *spans as u64);
                }
            }
        }
        result.map_err(|(e, _)| e)
    }

    /// Decodes, limits and stores; returns what was stored, or the error and the spans refused
    /// (0 when the request did not decode).
    async fn store(
        &self,
        tenant: &str,
        decode: impl FnOnce() -> Result<ExportTraceServiceRequest, Error> + Send + 'static,
    ) -> Result<Ingested, (Error, usize)> {
        let (limiter, owned_tenant) = (self.limiter.clone(), tenant.to_string());
        let decoded = tokio::task::spawn_blocking(move || limited(&limiter, &owned_tenant, decode))
            .await
            .map_err(|e| (Error::Internal(e.to_string()), 0))?;
        let (request, batch, discarded) = decoded.map_err(|refused| *refused)?;
        let spans = batch.num_rows();
        let bytes = request.encoded_len();
        let stored = match &self.sink {
            Sink::Warehouse(warehouse) => warehouse.append(tenant, batch).await.map_err(Error::from),
            Sink::Kafka(_) if spans == 0 => Ok(()),
            Sink::Kafka(producer) => producer.send(tenant, &request).await.map(|_| ()).map_err(Error::from),
        };
        match stored {
            Ok(()) => Ok(Ingested {
                spans,
                bytes,
                discarded,
            }),
            Err(e) => Err((e, spans)),
        }
    }
}

/// What one request stored, and what the per-trace limits took out of it.
#[derive(Debug)]
pub(crate) struct Ingested {
    pub spans: usize,
    pub bytes: usize,
    pub discarded: Discarded,
}

type Limited = (ExportTraceServiceRequest, RecordBatch, Discarded);

/// An error, and the spans of the request it refused.
type Refused = Box<(Error, usize)>;

/// Decodes a request, applies the tenant's limits and converts what is left: the blocking
/// part of [`Receiver::ingest`]. A request every span of which a limit refused is an error.
fn limited(
    limiter: &Limiter,
    tenant: &str,
    decode: impl FnOnce() -> Result<ExportTraceServiceRequest, Error>,
) -> Result<Limited, Refused> {
    let mut request = decode().map_err(|e| Box::new((e, 0)))?;
    let spans_in = span_count(&request);
    let discarded = limiter.admit(tenant, &mut request).map_err(|refused| {
        let retry_after_secs = refused.retry_after.as_secs_f64().ceil() as u64;
        let e = Error::RateLimited {
            message: refused.message,
            retry_after_secs,
        };
        Box::new((e, spans_in))
    })?;
    if spans_in > 0 && discarded.spans() as usize == spans_in {
        let message = discarded.message.clone().unwrap_or_default();
        let e = match discarded.trace_too_large {
            0 => Error::LiveTracesExceeded(message),
            _ => Error::TraceTooLarge(message),
        };
        return Err(Box::new((e, spans_in)));
    }
    let batch = request_to_batch(&request).map_err(|e| Box::new((e.into(), span_count(&request))))?;
    Ok((request, batch, discarded))
}

fn span_count(request: &ExportTraceServiceRequest) -> usize {
    (request.resource_spans.iter())
        .flat_map(|rs| &rs.scope_spans)
        .map(|ss| ss.spans.len())
        .sum()
}

/// The reason Tempo's `tempo_discarded_spans_total` gives a refused request's spans.
fn discard_reason(e: &Error) -> Option<DiscardReason> {
    match e {
        Error::RateLimited { .. } => Some(DiscardReason::RateLimited),
        Error::TraceTooLarge(_) => Some(DiscardReason::TraceTooLarge),
        Error::LiveTracesExceeded(_) => Some(DiscardReason::LiveTracesExceeded),
        Error::Decode(tracehouse_ingest::Error::InvalidSpan(_)) => Some(DiscardReason::InvalidTraceId),
        _ => None,
    }
}

/// The OTLP/JSON response: `{}`, or the partial success (int64 as a string, as protobuf's JSON
/// mapping writes it).
fn json_response(response: &ExportTraceServiceResponse) -> String {
    match &response.partial_success {
        None => "{}".to_string(),
        Some(p) => serde_json::json!({
            "partialSuccess": {"rejectedSpans": p.rejected_spans.to_string(), "errorMessage": p.error_message}
        })
        .to_string(),
    }
}

/// The OTLP response: empty, or naming the spans the limits refused.
fn export_response(done: &Ingested) -> ExportTraceServiceResponse {
    let partial_success = (done.discarded.spans() > 0).then(|| ExportTracePartialSuccess {
        rejected_spans: done.discarded.spans() as i64,
        error_message: done.discarded.message.clone().unwrap_or_default(),
    });
    ExportTraceServiceResponse { partial_success }
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
    let body_len = body.len() as u64;
    let result = match parsed_format {
        Err(e) => Err(e.into()),
        Ok(body_format) => {
            let decode = move || {
                let body = decode_body(&body, encoding.as_deref(), limit)?;
                Ok(parse_request(&body, body_format)?)
            };
            let ingress = Some(body_len);
            receiver.ingest("otlp", "http", &tenant, ingress, decode).await
        }
    };
    match (result, format) {
        (Ok(done), Some(BodyFormat::Json)) => {
            let body = json_response(&export_response(&done));
            (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        (Ok(done), _) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/x-protobuf")],
            export_response(&done).encode_to_vec(),
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
                let retry = HeaderValue::from_str(&e.retry_after_secs().to_string()).expect("digits");
                response.headers_mut().insert(header::RETRY_AFTER, retry);
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
        let ingress = Some(request.encoded_len() as u64);
        match receiver
            .ingest("otlp", "grpc", &tenant, ingress, move || Ok(request))
            .await
        {
            Ok(done) => Ok(tonic::Response::new(export_response(&done))),
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
