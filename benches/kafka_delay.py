"""Acknowledgement-to-queryable delay in microservices mode (used by benches/kafka.sh).

Sends one small OTLP/HTTP JSON request with a fresh trace id to the distributor, takes the
moment the 200 arrives, then polls two queriers' trace-by-id endpoint until the trace is
there: one that asks the live-store, and one that reads only the committed tables.
Prints one JSON object per probe. Standard library only.
usage: kafka_delay.py DISTRIBUTOR_OTLP_HTTP LIVE_QUERIER_HTTP TABLES_QUERIER_HTTP PROBES TENANT
"""
import json
import os
import sys
import time
import urllib.error
import urllib.request

otlp, live, tables, probes, tenant = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]


def visible(base, trace_id):
    try:
        req = urllib.request.Request(f"{base}/api/traces/{trace_id}", headers={"X-Scope-OrgID": tenant})
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status == 200
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return False
        raise


for _ in range(probes):
    trace_id = os.urandom(16).hex()
    now = time.time_ns()
    body = {"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "probe"}}]},
            "scopeSpans": [{"spans": [{"traceId": trace_id, "spanId": os.urandom(8).hex(), "name": "probe", "kind": 2,
                                        "startTimeUnixNano": str(now - 1_000_000), "endTimeUnixNano": str(now)}]}]}]}
    req = urllib.request.Request(f"{otlp}/v1/traces", data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json", "X-Scope-OrgID": tenant})
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.status == 200
    acked = time.monotonic()
    delays = {}
    deadline = acked + 120
    while len(delays) < 2 and time.monotonic() < deadline:
        for name, base in (("live", live), ("tables", tables)):
            if name not in delays and visible(base, trace_id):
                delays[name] = time.monotonic() - acked
        time.sleep(0.01)
    print(json.dumps({"trace_id": trace_id, **{k: round(v, 3) for k, v in delays.items()}}), flush=True)
