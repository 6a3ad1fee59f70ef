//! Jaeger and Zipkin receivers, beside OTLP's (`otlp.rs`) and handing spans to the same
//! [`Receiver`]: Jaeger's Thrift over HTTP (`POST /api/traces`), gRPC
//! (`jaeger.api_v2.CollectorService/PostSpans`) and the agent's UDP ports (Thrift compact and
//! binary), and Zipkin's `POST /api/v2/spans` (JSON, protobuf) and `POST /api/v1/spans` (JSON).
//! The tenant comes from `X-Scope-OrgID` where the protocol has headers; UDP datagrams go to
//! the default tenant.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use tokio::net::UdpSocket;
use tokio::sync::{Semaphore, watch};
use tracehouse_ingest::jaeger::api_v2::collector_service_server::{CollectorService, CollectorServiceServer};
use tracehouse_ingest::jaeger::api_v2::{PostSpansRequest, PostSpansResponse};
use tracehouse_ingest::jaeger::{self, ThriftProtocol};
use tracehouse_ingest::otlp::decode_body;
use tracehouse_ingest::zipkin::{self, ZipkinFormat, ZipkinOptions};
use tracehouse_warehouse::storage::tenant_or_default;

use crate::errors::Error;
use crate::otlp::{Receiver, TENANT_HEADER};

/// The largest UDP datagram.
const MAX_DATAGRAM_BYTES: usize = 65_535;

/// Datagrams being stored at once per UDP port; past it the port stops reading (and the
/// kernel drops what overflows its buffer, as UDP does).
const MAX_UDP_IN_FLIGHT: usize = 64;

fn tenant(headers: &HeaderMap) -> String {
    tenant_or_default(headers.get(TENANT_HEADER).map(HeaderValue::as_bytes))
}

fn header(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// A refused request: its status, the message as text, and `Retry-After` when retrying helps.
fn refused(receiver: &Receiver, e: &Error, what: &str) -> Response {
    receiver.count_error(e);
    let status = e.http_status();
    if status.is_server_error() {
        tracing::error!(error = %e, "{what} failed");
    }
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{e}\n"),
    )
        .into_response();
    if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
        let retry = HeaderValue::from_str(&e.retry_after_secs().to_string()).expect("digits");
        response.headers_mut().insert(header::RETRY_AFTER, retry);
    }
    response
}

/// The Jaeger collector's Thrift-over-HTTP router.
pub fn jaeger_http_app(receiver: Arc<Receiver>) -> Router {
    let limit = receiver.max_request_bytes;
    Router::new()
        .route("/api/traces", post(jaeger_thrift_http))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(receiver)
}

async fn jaeger_thrift_http(State(receiver): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> Response {
    let content_type = header(&headers, header::CONTENT_TYPE).unwrap_or("");
    let mime = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if !matches!(
        mime.as_str(),
        "application/x-thrift" | "application/vnd.apache.thrift.binary"
    ) {
        let e = Error::Decode(tracehouse_ingest::Error::UnsupportedContentType(
            content_type.to_string(),
        ));
        return refused(&receiver, &e, "jaeger thrift_http");
    }
    let encoding = header(&headers, header::CONTENT_ENCODING).map(str::to_string);
    let limit = receiver.max_request_bytes;
    let decode = move || {
        let body = decode_body(&body, encoding.as_deref(), limit)?;
        Ok(jaeger::thrift_http_body(&body)?)
    };
    match receiver
        .ingest(
            "jaeger",
            "collector_http",
            &tenant(&headers),
            body_len(&headers),
            decode,
        )
        .await
    {
        Ok(_) => StatusCode::ACCEPTED.into_response(),
        Err(e) => refused(&receiver, &e, "jaeger thrift_http"),
    }
}

fn body_len(headers: &HeaderMap) -> Option<u64> {
    header(headers, header::CONTENT_LENGTH).and_then(|v| v.parse().ok())
}

/// Jaeger's gRPC CollectorService.
pub struct JaegerGrpc(pub Arc<Receiver>);

#[tonic::async_trait]
impl CollectorService for JaegerGrpc {
    async fn post_spans(
        &self,
        request: tonic::Request<PostSpansRequest>,
    ) -> Result<tonic::Response<PostSpansResponse>, tonic::Status> {
        let tenant = tenant_or_default(request.metadata().get(TENANT_HEADER).map(|v| v.as_bytes()));
        let batch = request.into_inner().batch.unwrap_or_default();
        let decode = move || Ok(jaeger::batch_to_request(batch)?);
        match self.0.ingest("jaeger", "grpc", &tenant, None, decode).await {
            Ok(_) => Ok(tonic::Response::new(PostSpansResponse {})),
            Err(e) => {
                self.0.count_error(&e);
                if e.http_status().is_server_error() {
                    tracing::error!(error = %e, "jaeger grpc failed");
                }
                Err(e.grpc_status())
            }
        }
    }
}

/// The Jaeger gRPC service with size limits and gzip.
pub fn jaeger_grpc_service(receiver: Arc<Receiver>) -> CollectorServiceServer<JaegerGrpc> {
    let limit = receiver.max_request_bytes;
    CollectorServiceServer::new(JaegerGrpc(receiver))
        .max_decoding_message_size(limit)
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
}

/// Reads the agent's datagrams from `socket` until shutdown, storing each in the default
/// tenant; waits for the datagrams in hand before returning.
pub async fn serve_jaeger_udp(
    socket: UdpSocket,
    protocol: ThriftProtocol,
    receiver: Arc<Receiver>,
    mut shutdown: watch::Receiver<bool>,
) {
    let in_flight = Arc::new(Semaphore::new(MAX_UDP_IN_FLIGHT));
    let mut buf = vec![0u8; MAX_DATAGRAM_BYTES];
    let transport = match protocol {
        ThriftProtocol::Compact => "udp_thrift_compact",
        ThriftProtocol::Binary => "udp_thrift_binary",
    };
    loop {
        let len = tokio::select! {
            _ = shutdown.changed() => break,
            read = socket.recv_from(&mut buf) => match read {
                Ok((len, _)) => len,
                Err(e) => {
                    tracing::warn!(error = %e, "jaeger {transport}: reading a datagram");
                    continue;
                }
            },
        };
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            break;
        };
        let datagram = buf[..len].to_vec();
        let receiver = receiver.clone();
        tokio::spawn(async move {
            let tenant = tenant_or_default(None);
            let decode = move || Ok(jaeger::agent_datagram(&datagram, protocol)?);
            if let Err(e) = receiver
                .ingest("jaeger", transport, &tenant, Some(len as u64), decode)
                .await
            {
                receiver.count_error(&e);
                tracing::debug!(error = %e, "jaeger {transport}: datagram refused");
            }
            drop(permit);
        });
    }
    let _ = in_flight.acquire_many(MAX_UDP_IN_FLIGHT as u32).await;
}

/// What the Zipkin routes share.
pub struct ZipkinState {
    pub receiver: Arc<Receiver>,
    pub options: ZipkinOptions,
}

/// Zipkin's span-reporting router.
pub fn zipkin_app(state: Arc<ZipkinState>) -> Router {
    let limit = state.receiver.max_request_bytes;
    Router::new()
        .route("/api/v2/spans", post(zipkin_v2))
        .route("/api/v1/spans", post(zipkin_v1))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

async fn zipkin_v2(state: State<Arc<ZipkinState>>, headers: HeaderMap, body: Bytes) -> Response {
    zipkin_spans(state, false, headers, body).await
}

async fn zipkin_v1(state: State<Arc<ZipkinState>>, headers: HeaderMap, body: Bytes) -> Response {
    zipkin_spans(state, true, headers, body).await
}

async fn zipkin_spans(State(state): State<Arc<ZipkinState>>, v1: bool, headers: HeaderMap, body: Bytes) -> Response {
    let receiver = &state.receiver;
    let content_type = header(&headers, header::CONTENT_TYPE).unwrap_or("");
    let format = match ZipkinFormat::from_request(v1, content_type) {
        Ok(f) => f,
        Err(e) => return refused(receiver, &e.into(), "zipkin"),
    };
    let encoding = header(&headers, header::CONTENT_ENCODING).map(str::to_string);
    let (limit, options) = (receiver.max_request_bytes, state.options);
    let decode = move || {
        let body = decode_body(&body, encoding.as_deref(), limit)?;
        Ok(zipkin::parse(&body, format, options)?)
    };
    // The Collector's transport names, as Tempo's receiver series carry them.
    let transport = match format {
        ZipkinFormat::V2Json => "http_v2_json",
        ZipkinFormat::V2Proto => "http_v2_proto",
        ZipkinFormat::V1Json => "http_v1_json",
    };
    match receiver
        .ingest("zipkin", transport, &tenant(&headers), body_len(&headers), decode)
        .await
    {
        Ok(_) => StatusCode::ACCEPTED.into_response(),
        Err(e) => refused(receiver, &e, "zipkin"),
    }
}
