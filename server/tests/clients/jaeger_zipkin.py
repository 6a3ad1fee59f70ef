"""Sends one trace through a real Jaeger or Zipkin client library (OpenTelemetry's Jaeger
Thrift and protobuf exporters, with the Jaeger IDL's generated Thrift agent client, and
OpenTelemetry's Zipkin JSON and protobuf exporters), or its OTLP twin through OpenTelemetry's
OTLP exporter, for server/tests/receivers.rs.

The trace: a SERVER span `GET /cart` of service SERVICE, and its CLIENT child `SELECT cart`
with typed attributes, an event, a link, and an error status. Prints the trace id in hex.

usage: jaeger_zipkin.py PROTOCOL ENDPOINT TENANT SERVICE
PROTOCOL: otlp-http, jaeger-thrift-http, jaeger-thrift-compact, jaeger-thrift-binary, jaeger-grpc,
          zipkin-json, zipkin-v1-json, zipkin-proto
"""

import sys

import grpc
import requests
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

TENANT_HEADER = "X-Scope-OrgID"


class TenantInterceptor(grpc.UnaryUnaryClientInterceptor):
    """Adds the tenant to every gRPC call's metadata."""

    def __init__(self, tenant):
        self.tenant = tenant

    def intercept_unary_unary(self, continuation, details, request):
        metadata = list(details.metadata or []) + [(TENANT_HEADER.lower(), self.tenant)]
        details = details._replace(metadata=metadata)
        return continuation(details, request)


def jaeger_thrift(protocol, endpoint, tenant):
    from opentelemetry.exporter.jaeger.thrift import JaegerExporter
    from opentelemetry.exporter.jaeger.thrift.gen.agent import Agent
    from thrift.protocol import TBinaryProtocol

    host, port = endpoint.rsplit(":", 1)
    if protocol == "jaeger-thrift-http":
        exporter = JaegerExporter(collector_endpoint=f"http://{endpoint}/api/traces")
        exporter._collector_http_client.http_transport.setCustomHeaders({TENANT_HEADER: tenant})
        return exporter
    exporter = JaegerExporter(agent_host_name=host, agent_port=int(port))
    if protocol == "jaeger-thrift-binary":
        agent = exporter._agent_client
        agent.client = Agent.Client(iprot=TBinaryProtocol.TBinaryProtocol(trans=agent.buffer))
    return exporter


def jaeger_grpc(endpoint, tenant):
    from opentelemetry.exporter.jaeger.proto.grpc import JaegerExporter
    from opentelemetry.exporter.jaeger.proto.grpc.gen.collector_pb2_grpc import CollectorServiceStub

    exporter = JaegerExporter(collector_endpoint=endpoint, insecure=True)
    channel = grpc.intercept_channel(grpc.insecure_channel(endpoint), TenantInterceptor(tenant))
    exporter._grpc_client = CollectorServiceStub(channel)
    return exporter


def zipkin(protocol, endpoint, tenant):
    session = requests.Session()
    session.headers[TENANT_HEADER] = tenant
    if protocol == "zipkin-proto":
        from opentelemetry.exporter.zipkin.proto.http import ZipkinExporter

        return ZipkinExporter(endpoint=f"http://{endpoint}/api/v2/spans", session=session)
    from opentelemetry.exporter.zipkin.json import ZipkinExporter
    from opentelemetry.exporter.zipkin.encoder import Protocol

    if protocol == "zipkin-v1-json":
        # The v1 encoder needs a tag length bound (it compares None with 0 otherwise).
        url = f"http://{endpoint}/api/v1/spans"
        return ZipkinExporter(Protocol.V1, endpoint=url, session=session, max_tag_value_length=4096)
    return ZipkinExporter(Protocol.V2, endpoint=f"http://{endpoint}/api/v2/spans", session=session)


def otlp(endpoint, tenant):
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=f"http://{endpoint}/v1/traces", headers={TENANT_HEADER: tenant})


def exporter_for(protocol, endpoint, tenant):
    if protocol == "otlp-http":
        return otlp(endpoint, tenant)
    if protocol == "jaeger-grpc":
        return jaeger_grpc(endpoint, tenant)
    if protocol.startswith("jaeger-"):
        return jaeger_thrift(protocol, endpoint, tenant)
    if protocol.startswith("zipkin-"):
        return zipkin(protocol, endpoint, tenant)
    raise SystemExit(f"unknown protocol {protocol}")


def main():
    protocol, endpoint, tenant, service = sys.argv[1:5]
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(exporter_for(protocol, endpoint, tenant)))
    tracer = provider.get_tracer("shop.instrumentation", "1.4.0")
    with tracer.start_as_current_span("GET /cart", kind=SpanKind.SERVER) as parent:
        parent.set_attribute("http.status_code", 404)
        context = parent.get_span_context()
        with tracer.start_as_current_span(
            "SELECT cart", kind=SpanKind.CLIENT, links=[Link(context, {"link.kind": "parent"})]
        ) as child:
            child.set_attribute("db.system", "postgresql")
            child.set_attribute("db.rows", 42)
            child.set_attribute("db.cost", 1.5)
            child.set_attribute("db.cached", True)
            child.add_event("retry", {"attempt": 2})
            child.set_status(Status(StatusCode.ERROR, "connection reset"))
    provider.shutdown()
    print(format(context.trace_id, "032x"))


if __name__ == "__main__":
    main()
