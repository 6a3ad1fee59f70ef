//! Span clients: send an export request over OTLP/HTTP (protobuf or JSON, optionally gzip),
//! OTLP/gRPC, or translated (`crate::foreign`) over Jaeger gRPC or Zipkin v2 JSON, with a
//! tenant header.

use std::io::Write;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;

/// How to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    HttpProtobuf,
    HttpJson,
    Grpc,
    /// `jaeger.api_v2.CollectorService/PostSpans` (endpoint `http://host:14250`).
    JaegerGrpc,
    /// Zipkin `POST /api/v2/spans`, JSON (endpoint `http://host:9411`).
    ZipkinJson,
}

impl std::str::FromStr for Protocol {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "http" | "http/protobuf" => Ok(Self::HttpProtobuf),
            "http/json" => Ok(Self::HttpJson),
            "grpc" => Ok(Self::Grpc),
            "jaeger/grpc" => Ok(Self::JaegerGrpc),
            "zipkin/json" => Ok(Self::ZipkinJson),
            other => Err(format!(
                "unknown protocol {other:?}: use http/protobuf, http/json, grpc, jaeger/grpc or zipkin/json"
            )),
        }
    }
}

/// The answer to one export.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status, or 200 for a gRPC OK.
    pub status: u16,
    /// gRPC code when the protocol is gRPC.
    pub grpc_code: Option<tonic::Code>,
    pub body: String,
    /// The HTTP `Retry-After` header, when present.
    pub retry_after: Option<String>,
}

/// A client for one endpoint (`http://host:4318` or `http://host:4317`).
pub struct Sender {
    protocol: Protocol,
    endpoint: String,
    gzip: bool,
    http: reqwest::Client,
    grpc: Option<TraceServiceClient<tonic::transport::Channel>>,
    jaeger: Option<JaegerClient>,
}

type JaegerClient =
    tracehouse_ingest::jaeger::api_v2::collector_service_client::CollectorServiceClient<tonic::transport::Channel>;

impl Sender {
    pub async fn connect(protocol: Protocol, endpoint: &str, gzip: bool) -> Result<Self, String> {
        let grpc = if protocol == Protocol::Grpc {
            let client = TraceServiceClient::connect(endpoint.to_string())
                .await
                .map_err(|e| format!("connecting to {endpoint}: {e}"))?;
            let client = client.max_encoding_message_size(usize::MAX);
            Some(if gzip {
                client.send_compressed(tonic::codec::CompressionEncoding::Gzip)
            } else {
                client
            })
        } else {
            None
        };
        let jaeger = match protocol {
            Protocol::JaegerGrpc => Some(
                JaegerClient::connect(endpoint.to_string())
                    .await
                    .map_err(|e| format!("connecting to {endpoint}: {e}"))?
                    .max_encoding_message_size(usize::MAX),
            ),
            _ => None,
        };
        Ok(Self {
            protocol,
            endpoint: endpoint.trim_end_matches('/').to_string(),
            gzip,
            http: reqwest::Client::new(),
            grpc,
            jaeger,
        })
    }

    /// Sends one request for `tenant` (no header when `None`).
    pub async fn send(&mut self, request: &ExportTraceServiceRequest, tenant: Option<&str>) -> Result<Reply, String> {
        match self.protocol {
            Protocol::Grpc => {
                let client = self.grpc.as_mut().ok_or("grpc client missing")?;
                let mut req = tonic::Request::new(request.clone());
                if let Some(t) = tenant {
                    req.metadata_mut()
                        .insert("x-scope-orgid", t.parse().map_err(|_| "bad tenant")?);
                }
                match client.export(req).await {
                    Ok(_) => Ok(Reply {
                        status: 200,
                        grpc_code: Some(tonic::Code::Ok),
                        body: String::new(),
                        retry_after: None,
                    }),
                    Err(status) => Ok(Reply {
                        status: 0,
                        grpc_code: Some(status.code()),
                        body: status.message().to_string(),
                        retry_after: None,
                    }),
                }
            }
            Protocol::JaegerGrpc => {
                let client = self.jaeger.as_mut().ok_or("jaeger client missing")?;
                let batch = crate::foreign::jaeger_batch(request);
                let mut req =
                    tonic::Request::new(tracehouse_ingest::jaeger::api_v2::PostSpansRequest { batch: Some(batch) });
                if let Some(t) = tenant {
                    req.metadata_mut()
                        .insert("x-scope-orgid", t.parse().map_err(|_| "bad tenant")?);
                }
                Ok(match client.post_spans(req).await {
                    Ok(_) => Reply {
                        status: 200,
                        grpc_code: Some(tonic::Code::Ok),
                        body: String::new(),
                        retry_after: None,
                    },
                    Err(status) => Reply {
                        status: 0,
                        grpc_code: Some(status.code()),
                        body: status.message().to_string(),
                        retry_after: None,
                    },
                })
            }
            Protocol::ZipkinJson => {
                let body = crate::foreign::zipkin_json(request);
                self.post_to("/api/v2/spans", &body, "application/json", tenant).await
            }
            Protocol::HttpProtobuf | Protocol::HttpJson => {
                let (body, content_type) = if self.protocol == Protocol::HttpJson {
                    (
                        serde_json::to_vec(request).map_err(|e| e.to_string())?,
                        "application/json",
                    )
                } else {
                    (request.encode_to_vec(), "application/x-protobuf")
                };
                self.post_raw(&body, content_type, tenant).await
            }
        }
    }

    /// Posts raw bytes to `/v1/traces` (for malformed-input tests).
    pub async fn post_raw(&self, body: &[u8], content_type: &str, tenant: Option<&str>) -> Result<Reply, String> {
        self.post_to("/v1/traces", body, content_type, tenant).await
    }

    /// Posts `body` to `path` of the endpoint.
    async fn post_to(
        &self,
        path: &str,
        body: &[u8],
        content_type: &str,
        tenant: Option<&str>,
    ) -> Result<Reply, String> {
        let mut req = self
            .http
            .post(format!("{}{path}", self.endpoint))
            .header("content-type", content_type);
        let body = if self.gzip {
            req = req.header("content-encoding", "gzip");
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            enc.write_all(body).map_err(|e| e.to_string())?;
            enc.finish().map_err(|e| e.to_string())?
        } else {
            body.to_vec()
        };
        if let Some(t) = tenant {
            req = req.header("x-scope-orgid", t);
        }
        let resp = req
            .body(body)
            .send()
            .await
            .map_err(|e| format!("posting to {}: {e}", self.endpoint))?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = resp.bytes().await.map_err(|e| e.to_string())?;
        Ok(Reply {
            status,
            grpc_code: None,
            body: String::from_utf8_lossy(&bytes).into_owned(),
            retry_after,
        })
    }
}
