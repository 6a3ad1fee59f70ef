//! Zipkin v1 JSON spans into v2 spans, as Zipkin's own v1 converter does: the core annotations
//! (`cs`/`cr`, `sr`/`ss`, `ms`, `mr`) give the kind, timestamps and local endpoint (a span both
//! sides reported becomes a client span and a shared server span), the address annotations
//! (`ca`, `sa`, `ma`) the remote endpoint, and other binary annotations tags.

use std::time::Duration;

use serde::Deserialize;
use zipkin_types::{Annotation, Endpoint, Kind, SpanId, TraceId};

use super::micros;
use crate::{Error, Result};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct V1Span {
    trace_id: String,
    id: String,
    parent_id: Option<String>,
    name: Option<String>,
    timestamp: Option<u64>,
    duration: Option<u64>,
    #[serde(default)]
    annotations: Vec<V1Annotation>,
    #[serde(default)]
    binary_annotations: Vec<V1BinaryAnnotation>,
    #[serde(default)]
    debug: bool,
}

#[derive(Deserialize)]
struct V1Annotation {
    timestamp: u64,
    value: String,
    endpoint: Option<V1Endpoint>,
}

#[derive(Deserialize)]
struct V1BinaryAnnotation {
    key: String,
    value: serde_json::Value,
    endpoint: Option<V1Endpoint>,
}

#[derive(Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
struct V1Endpoint {
    service_name: Option<String>,
    ipv4: Option<String>,
    ipv6: Option<String>,
    port: Option<u16>,
}

fn malformed(e: impl std::fmt::Display) -> Error {
    Error::Malformed {
        format: "zipkin v1 json",
        message: e.to_string(),
    }
}

/// A v1 JSON body's spans as v2 spans.
pub(super) fn parse(body: &[u8]) -> Result<Vec<zipkin_types::Span>> {
    let spans: Vec<V1Span> = serde_json::from_slice(body).map_err(malformed)?;
    let mut out = Vec::with_capacity(spans.len());
    for s in spans {
        convert(s, &mut out)?;
    }
    Ok(out)
}

fn endpoint(e: &V1Endpoint) -> Endpoint {
    let mut b = Endpoint::builder();
    if let Some(name) = e.service_name.as_deref().filter(|n| !n.is_empty()) {
        b.service_name(name);
    }
    if let Some(ip) = e.ipv4.as_deref().and_then(|ip| ip.parse().ok()) {
        b.ipv4(ip);
    }
    if let Some(ip) = e.ipv6.as_deref().and_then(|ip| ip.parse().ok()) {
        b.ipv6(ip);
    }
    if let Some(port) = e.port.filter(|p| *p > 0) {
        b.port(port);
    }
    b.build()
}

/// One side of an RPC or messaging span: its kind, start, end and the endpoint that reported
/// it.
struct Side {
    kind: Kind,
    start: Option<u64>,
    end: Option<u64>,
    local: Option<V1Endpoint>,
    remote_key: &'static str,
}

fn sides(annotations: &[V1Annotation]) -> Vec<Side> {
    let find = |v: &str| annotations.iter().find(|a| a.value == v);
    let side = |kind, begin: &str, finish: &str, remote_key| {
        let (b, f) = (find(begin), find(finish));
        (b.is_some() || f.is_some()).then(|| Side {
            kind,
            start: b.map(|a| a.timestamp),
            end: f.map(|a| a.timestamp),
            local: b.or(f).and_then(|a| a.endpoint.clone()),
            remote_key,
        })
    };
    [
        side(Kind::Client, "cs", "cr", "sa"),
        side(Kind::Server, "sr", "ss", "ca"),
        side(Kind::Producer, "ms", "ws", "ma"),
        side(Kind::Consumer, "wr", "mr", "ma"),
    ]
    .into_iter()
    .flatten()
    .collect()
}

const CORE: [&str; 8] = ["cs", "cr", "sr", "ss", "ms", "ws", "wr", "mr"];

fn ids(s: &V1Span) -> Result<(TraceId, SpanId, Option<SpanId>)> {
    let trace_id = s.trace_id.parse::<TraceId>().map_err(malformed)?;
    let id = s.id.parse::<SpanId>().map_err(malformed)?;
    let parent = s
        .parent_id
        .as_deref()
        .map(str::parse::<SpanId>)
        .transpose()
        .map_err(malformed)?;
    Ok((trace_id, id, parent))
}

fn convert(s: V1Span, out: &mut Vec<zipkin_types::Span>) -> Result<()> {
    let (trace_id, id, parent) = ids(&s)?;
    let sides = sides(&s.annotations);
    let shared = sides.len() > 1;
    let parts: Vec<Option<&Side>> = if sides.is_empty() {
        vec![None]
    } else {
        sides.iter().map(Some).collect()
    };
    for (i, side) in parts.into_iter().enumerate() {
        let mut b = zipkin_types::Span::builder();
        b.trace_id(trace_id).id(id).debug(s.debug);
        if let Some(name) = &s.name {
            b.name(name);
        }
        if let Some(p) = parent {
            b.parent_id(p);
        }
        let (start, end) = side.map_or((None, None), |x| (x.start, x.end));
        let (start, duration) = match (i, start, end) {
            (0, _, _) if s.timestamp.is_some() => (s.timestamp, s.duration),
            (_, Some(a), Some(z)) => (Some(a), z.checked_sub(a)),
            (_, a, _) => (a, None),
        };
        if let Some(t) = start {
            b.timestamp(micros(t));
        }
        if let Some(d) = duration {
            b.duration(Duration::from_micros(d));
        }
        if let Some(side) = side {
            b.kind(side.kind);
            b.shared(shared && matches!(side.kind, Kind::Server));
        }
        let local = side.and_then(|x| x.local.clone()).or_else(|| any_endpoint(&s));
        if let Some(e) = &local {
            b.local_endpoint(endpoint(e));
        }
        annotate(&s, side, &mut b);
        out.push(b.build());
    }
    Ok(())
}

fn any_endpoint(s: &V1Span) -> Option<V1Endpoint> {
    (s.annotations.iter().filter_map(|a| a.endpoint.clone()))
        .chain(s.binary_annotations.iter().filter_map(|a| a.endpoint.clone()))
        .next()
}

/// Annotations other than the core ones, tags from binary annotations, and the remote
/// endpoint from the address annotation this side reads.
fn annotate(s: &V1Span, side: Option<&Side>, b: &mut zipkin_types::span::Builder) {
    for a in s.annotations.iter().filter(|a| !CORE.contains(&a.value.as_str())) {
        b.annotation(Annotation::new(micros(a.timestamp), &a.value));
    }
    for a in &s.binary_annotations {
        if matches!(a.key.as_str(), "ca" | "sa" | "ma") {
            if side.is_some_and(|x| x.remote_key == a.key)
                && let Some(e) = &a.endpoint
            {
                b.remote_endpoint(endpoint(e));
            }
            continue;
        }
        let value = match &a.value {
            serde_json::Value::String(v) => v.clone(),
            other => other.to_string(),
        };
        b.tag(&a.key, &value);
    }
}
