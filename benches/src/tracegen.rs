//! A seeded, deterministic generator of realistic traces: a call graph of a dozen services with
//! HTTP, RPC, database and messaging spans carrying OpenTelemetry semantic-convention
//! attributes, errors with status messages and exception events, links from consumers to
//! producers, long-tail durations and some high-cardinality attributes.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link, SpanKind};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Services of the simulated shop, with their namespace.
pub const SERVICES: [(&str, &str); 12] = [
    ("frontend", "web"),
    ("api-gateway", "web"),
    ("auth", "core"),
    ("cart", "shop"),
    ("checkout", "shop"),
    ("payment", "shop"),
    ("shipping", "shop"),
    ("inventory", "shop"),
    ("recommendation", "ml"),
    ("currency", "core"),
    ("email", "notify"),
    ("ad", "ml"),
];

#[derive(Clone, Copy)]
enum Call {
    /// HTTP call to a service and route.
    Http(usize, &'static str, &'static str),
    /// gRPC call to a service and method.
    Rpc(usize, &'static str, &'static str),
    /// Database statement.
    Db(&'static str, &'static str, &'static str),
    /// Publish to a topic consumed by a service.
    Publish(&'static str, usize),
}

/// What each service calls, with the probability of each call.
fn callees(service: usize) -> &'static [(f64, Call)] {
    match service {
        0 => &[
            (1.0, Call::Http(1, "GET", "/api/products/{id}")),
            (0.6, Call::Http(11, "GET", "/ads")),
            (0.3, Call::Http(1, "POST", "/api/cart")),
        ],
        1 => &[
            (0.9, Call::Rpc(2, "auth.Auth", "Verify")),
            (0.5, Call::Rpc(3, "cart.Cart", "GetCart")),
            (0.3, Call::Rpc(4, "checkout.Checkout", "PlaceOrder")),
            (0.5, Call::Rpc(8, "reco.Recommendation", "List")),
        ],
        2 => &[(0.7, Call::Db("redis", "GET", "sessions"))],
        3 => &[
            (1.0, Call::Db("redis", "HGETALL", "carts")),
            (0.4, Call::Rpc(9, "currency.Currency", "Convert")),
        ],
        4 => &[
            (1.0, Call::Rpc(5, "payment.Payment", "Charge")),
            (0.9, Call::Rpc(6, "shipping.Shipping", "Quote")),
            (0.9, Call::Rpc(7, "inventory.Inventory", "Reserve")),
            (0.8, Call::Publish("orders", 10)),
            (1.0, Call::Db("postgresql", "INSERT", "orders")),
        ],
        5 => &[(1.0, Call::Db("postgresql", "INSERT", "payments"))],
        6 => &[(0.5, Call::Rpc(9, "currency.Currency", "Convert"))],
        7 => &[(1.0, Call::Db("postgresql", "UPDATE", "stock"))],
        8 => &[
            (0.8, Call::Rpc(7, "inventory.Inventory", "List")),
            (0.5, Call::Db("redis", "GET", "reco-cache")),
        ],
        10 => &[(0.2, Call::Db("postgresql", "SELECT", "templates"))],
        11 => &[(0.5, Call::Db("redis", "GET", "ads"))],
        _ => &[],
    }
}

/// Settings of the generator.
#[derive(Debug, Clone)]
pub struct TraceGenConfig {
    pub seed: u64,
    /// Start time of the first trace, Unix nanoseconds.
    pub start_unix_nano: u64,
    /// Time between trace starts.
    pub trace_interval_ns: u64,
    /// Probability that a leaf operation fails.
    pub error_rate: f64,
}

impl Default for TraceGenConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            start_unix_nano: 1_767_225_600_000_000_000,
            trace_interval_ns: 1_000_000,
            error_rate: 0.02,
        }
    }
}

/// A generated span and the service that reported it.
pub struct GenSpan {
    pub service: usize,
    pub span: Span,
}

/// The generator.
pub struct TraceGen {
    config: TraceGenConfig,
    rng: StdRng,
    traces: u64,
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..KeyValue::default()
    }
}

fn s(key: &str, value: impl Into<String>) -> KeyValue {
    kv(key, any_value::Value::StringValue(value.into()))
}

fn i(key: &str, value: i64) -> KeyValue {
    kv(key, any_value::Value::IntValue(value))
}

impl TraceGen {
    pub fn new(config: TraceGenConfig) -> Self {
        Self {
            rng: StdRng::seed_from_u64(config.seed),
            config,
            traces: 0,
        }
    }

    fn id<const N: usize>(&mut self) -> Vec<u8> {
        let mut id = [0u8; N];
        self.rng.fill(&mut id[..]);
        id[0] |= 1; // never all zero
        id.to_vec()
    }

    /// Long-tail duration around `median_ns`: log-normal with 1% slow outliers.
    fn duration(&mut self, median_ns: u64) -> u64 {
        let u1: f64 = self.rng.random_range(1e-9..1.0);
        let u2: f64 = self.rng.random();
        let normal = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        let mut d = median_ns as f64 * (0.6 * normal).exp();
        if self.rng.random_bool(0.01) {
            d *= 20.0;
        }
        d.max(1_000.0) as u64
    }

    /// Generates the next trace's spans.
    pub fn next_trace(&mut self) -> Vec<GenSpan> {
        let start = self.config.start_unix_nano + self.traces * self.config.trace_interval_ns;
        self.traces += 1;
        let trace_id = self.id::<16>();
        let mut spans = Vec::new();
        let user = self.rng.random_range(0..100_000u32);
        let request_id = hex::encode(self.id::<8>());
        let root_route = if self.rng.random_bool(0.7) {
            "/product/{id}"
        } else {
            "/cart"
        };
        let root = Span {
            trace_id: trace_id.clone(),
            span_id: self.id::<8>(),
            name: format!("GET {root_route}"),
            kind: SpanKind::Server as i32,
            start_time_unix_nano: start,
            attributes: vec![
                s("http.request.method", "GET"),
                s("http.route", root_route),
                s(
                    "url.full",
                    format!(
                        "https://shop.example.com{}?rid={request_id}",
                        root_route.replace("{id}", &user.to_string())
                    ),
                ),
                s("user.id", format!("user-{user}")),
                s("request.id", request_id),
                s(
                    "client.address",
                    format!(
                        "10.{}.{}.{}",
                        user % 256,
                        (user / 256) % 256,
                        self.rng.random_range(1..255)
                    ),
                ),
            ],
            ..Span::default()
        };
        let (end, failed) = self.children(&trace_id, 0, &root, 0, &mut spans);
        let mut root = root;
        root.end_time_unix_nano = end.max(start + self.duration(200_000));
        let status = if failed { 500 } else { 200 };
        root.attributes.push(i("http.response.status_code", status));
        if failed {
            root.status = Some(Status {
                code: StatusCode::Error as i32,
                message: "internal error downstream".into(),
            });
        }
        spans.push(GenSpan { service: 0, span: root });
        spans
    }

    /// Generates the calls made by `parent` (of `service`); returns the end time and whether
    /// any call failed.
    fn children(
        &mut self,
        trace_id: &[u8],
        service: usize,
        parent: &Span,
        depth: usize,
        out: &mut Vec<GenSpan>,
    ) -> (u64, bool) {
        let mut t = parent.start_time_unix_nano + self.duration(50_000);
        let mut failed = false;
        if depth > 6 {
            return (t, false);
        }
        for (p, call) in callees(service) {
            if !self.rng.random_bool(*p) {
                continue;
            }
            let (end, f) = self.call(trace_id, service, parent, t, *call, depth, out);
            failed |= f;
            t = end + self.duration(20_000);
        }
        (t, failed)
    }

    #[allow(clippy::too_many_arguments)]
    fn call(
        &mut self,
        trace_id: &[u8],
        service: usize,
        parent: &Span,
        start: u64,
        call: Call,
        depth: usize,
        out: &mut Vec<GenSpan>,
    ) -> (u64, bool) {
        let client_id = self.id::<8>();
        let mut client = Span {
            trace_id: trace_id.to_vec(),
            span_id: client_id.clone(),
            parent_span_id: parent.span_id.clone(),
            start_time_unix_nano: start,
            ..Span::default()
        };
        let mut failed = false;
        let end;
        match call {
            Call::Db(system, op, table) => {
                client.name = format!("{op} {table}");
                client.kind = SpanKind::Client as i32;
                let median = if system == "redis" { 300_000 } else { 2_000_000 };
                end = start + self.duration(median);
                client.attributes = vec![
                    s("db.system", system),
                    s("db.operation.name", op),
                    s("db.namespace", if system == "redis" { "0" } else { "shop" }),
                    s(
                        "db.query.text",
                        format!("{op} {table} WHERE id = ${}", self.rng.random_range(1..4)),
                    ),
                    s("server.address", format!("{system}.db.svc")),
                    i("server.port", if system == "redis" { 6379 } else { 5432 }),
                ];
                if self.rng.random_bool(self.config.error_rate) {
                    failed = true;
                    self.fail(&mut client, end, "db.ConnectionError", "connection reset by peer");
                }
            }
            Call::Publish(topic, consumer) => {
                client.name = format!("publish {topic}");
                client.kind = SpanKind::Producer as i32;
                end = start + self.duration(500_000);
                client.attributes = vec![
                    s("messaging.system", "kafka"),
                    s("messaging.destination.name", topic),
                    s("messaging.operation.type", "publish"),
                    i("messaging.kafka.message.offset", self.rng.random_range(0..10_000_000)),
                ];
                // The consumer runs later, in its own trace, linked to the producer span.
                let consumer_trace = self.id::<16>();
                let mut consume = Span {
                    trace_id: consumer_trace.clone(),
                    span_id: self.id::<8>(),
                    name: format!("process {topic}"),
                    kind: SpanKind::Consumer as i32,
                    start_time_unix_nano: end + self.duration(5_000_000),
                    attributes: vec![
                        s("messaging.system", "kafka"),
                        s("messaging.destination.name", topic),
                        s("messaging.operation.type", "process"),
                    ],
                    links: vec![Link {
                        trace_id: trace_id.to_vec(),
                        span_id: client_id.clone(),
                        attributes: vec![s("link.kind", "producer")],
                        ..Link::default()
                    }],
                    ..Span::default()
                };
                let (cend, cfail) = self.children(&consumer_trace, consumer, &consume, depth + 1, out);
                consume.end_time_unix_nano = cend + self.duration(100_000);
                if cfail {
                    consume.status = Some(Status {
                        code: StatusCode::Error as i32,
                        message: "processing failed".into(),
                    });
                }
                out.push(GenSpan {
                    service: consumer,
                    span: consume,
                });
            }
            Call::Http(callee, method, route) | Call::Rpc(callee, method, route) => {
                let is_http = matches!(call, Call::Http(..));
                let (name, attrs) = if is_http {
                    (
                        format!("{method} {route}"),
                        vec![
                            s("http.request.method", method),
                            s("http.route", route),
                            s("server.address", SERVICES[callee].0),
                        ],
                    )
                } else {
                    (
                        format!("{method}/{route}"),
                        vec![
                            s("rpc.system", "grpc"),
                            s("rpc.service", method),
                            s("rpc.method", route),
                            s("server.address", SERVICES[callee].0),
                        ],
                    )
                };
                client.name = name.clone();
                client.kind = SpanKind::Client as i32;
                client.attributes = attrs.clone();
                if !is_http {
                    client.attributes.push(s("peer.service", SERVICES[callee].0));
                }
                let mut server = Span {
                    trace_id: trace_id.to_vec(),
                    span_id: self.id::<8>(),
                    parent_span_id: client_id.clone(),
                    name,
                    kind: SpanKind::Server as i32,
                    start_time_unix_nano: start + self.duration(100_000),
                    attributes: attrs,
                    ..Span::default()
                };
                let (inner_end, inner_failed) = self.children(trace_id, callee, &server, depth + 1, out);
                let own_fail = self.rng.random_bool(self.config.error_rate);
                server.end_time_unix_nano = inner_end + self.duration(300_000);
                failed = inner_failed || own_fail;
                if is_http {
                    let code = if failed {
                        500
                    } else if self.rng.random_bool(0.03) {
                        404
                    } else {
                        200
                    };
                    server.attributes.push(i("http.response.status_code", code));
                    client.attributes.push(i("http.response.status_code", code));
                } else {
                    server
                        .attributes
                        .push(i("rpc.grpc.status_code", if failed { 13 } else { 0 }));
                }
                if own_fail {
                    self.fail(
                        &mut server,
                        inner_end,
                        "InternalError",
                        &format!("{} failed", SERVICES[callee].0),
                    );
                } else if inner_failed {
                    server.status = Some(Status {
                        code: StatusCode::Error as i32,
                        message: "downstream call failed".into(),
                    });
                }
                if self.rng.random_bool(0.1) {
                    server.events.push(Event {
                        time_unix_nano: server.start_time_unix_nano + 1_000,
                        name: "cache.miss".into(),
                        attributes: vec![s("cache.key", format!("k{}", self.rng.random_range(0..1_000_000)))],
                        ..Event::default()
                    });
                }
                end = server.end_time_unix_nano + self.duration(50_000);
                out.push(GenSpan {
                    service: callee,
                    span: server,
                });
            }
        }
        client.end_time_unix_nano = end;
        if failed && client.status.is_none() {
            client.status = Some(Status {
                code: StatusCode::Error as i32,
                message: "call failed".into(),
            });
        }
        out.push(GenSpan { service, span: client });
        (end, failed)
    }

    fn fail(&mut self, span: &mut Span, at: u64, kind: &str, message: &str) {
        span.status = Some(Status {
            code: StatusCode::Error as i32,
            message: message.into(),
        });
        span.events.push(Event {
            time_unix_nano: at,
            name: "exception".into(),
            attributes: vec![s("exception.type", kind), s("exception.message", message)],
            ..Event::default()
        });
    }

    /// Whole traces until at least `min_spans` spans, grouped by service into one request.
    pub fn request(&mut self, min_spans: usize) -> (ExportTraceServiceRequest, usize) {
        let mut by_service: Vec<Vec<Span>> = vec![Vec::new(); SERVICES.len()];
        let mut n = 0;
        while n < min_spans.max(1) {
            for g in self.next_trace() {
                by_service[g.service].push(g.span);
                n += 1;
            }
        }
        let resource_spans = by_service
            .into_iter()
            .enumerate()
            .filter(|(_, spans)| !spans.is_empty())
            .map(|(svc, spans)| ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![
                        s("service.name", SERVICES[svc].0),
                        s("service.namespace", SERVICES[svc].1),
                        s("service.version", "1.4.2"),
                        s("deployment.environment.name", "production"),
                        s("k8s.namespace.name", SERVICES[svc].1),
                        s("k8s.pod.name", format!("{}-7d9f8b-{}", SERVICES[svc].0, svc * 7 % 5)),
                        s("host.name", format!("node-{}", svc % 4)),
                    ],
                    ..Resource::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "io.opentelemetry.contrib".into(),
                        version: "0.1.0".into(),
                        ..InstrumentationScope::default()
                    }),
                    spans,
                    ..ScopeSpans::default()
                }],
                ..ResourceSpans::default()
            })
            .collect();
        (ExportTraceServiceRequest { resource_spans }, n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn deterministic_and_realistic() {
        let a = TraceGen::new(TraceGenConfig::default()).request(500).0.encode_to_vec();
        let b = TraceGen::new(TraceGenConfig::default()).request(500).0.encode_to_vec();
        assert_eq!(a, b, "same seed, same bytes");
        let (req, n) = TraceGen::new(TraceGenConfig::default()).request(2_000);
        assert!(n >= 2_000);
        let spans: Vec<&Span> = req
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .collect();
        assert_eq!(spans.len(), n);
        assert!(req.resource_spans.len() >= 10, "most services report");
        assert!(
            spans.iter().any(|s| s.status.as_ref().is_some_and(|st| st.code == 2)),
            "some errors"
        );
        assert!(spans.iter().any(|s| !s.links.is_empty()), "some links");
        assert!(spans.iter().any(|s| !s.events.is_empty()), "some events");
        assert!(
            spans
                .iter()
                .any(|s| s.kind == SpanKind::Client as i32 && s.attributes.iter().any(|a| a.key == "db.system"))
        );
        assert!(spans.iter().all(|s| s.end_time_unix_nano >= s.start_time_unix_nano));
    }
}
