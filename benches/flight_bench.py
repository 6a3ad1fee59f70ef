"""Streams large span results out of a running tracehouse and measures each client, one fresh
process per measurement so client memory is its own: pyarrow plain Flight, the ADBC Flight SQL
driver, and psycopg over the Postgres wire (the peer). Called by benches/flight.sh.

    python3 benches/flight_bench.py --server-pid PID --flight-port P --pg-port Q --tenant T [--runs R]

Per measurement: rows, seconds, rows/s, MB/s, seconds to the first row, the client's peak
RSS, and the server's RSS before the query and its peak during it (VmHWM, reset before each
through clear_refs) and its CPU seconds. MB/s is the size of the result as Arrow arrays (what pyarrow decodes;
the same figure for every client of a query) over the seconds it took to arrive.

Over the Postgres wire, `SELECT *` sends the attribute maps, events and links as JSON text
(Postgres has no map type); Flight sends them as Arrow maps and lists.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

NARROW = "SELECT trace_id, span_id, service_name, name, start_time, duration_ns, status_code FROM spans"
SCALAR = (
    "SELECT trace_id, span_id, parent_span_id, trace_state, name, kind, start_time, start_time_unix_nano,"
    " end_time_unix_nano, duration_ns, status_code, status_message, flags, service_name, service_namespace,"
    " service_version, deployment_environment, host_name, k8s_cluster_name, k8s_namespace_name, k8s_pod_name,"
    " k8s_container_name, http_method, http_route, http_status_code, http_url, db_system, db_name, rpc_system,"
    " rpc_service, rpc_method, messaging_system, peer_service, server_address, resource_dropped_attributes_count,"
    " scope_name, scope_version, dropped_attributes_count, dropped_events_count, dropped_links_count, date"
    " FROM spans"
)
QUERIES = {
    "scalar (41 columns)": SCALAR,
    "narrow (7 columns)": NARROW,
    "SELECT * (maps, events)": "SELECT * FROM spans",
    "narrow x10 (UNION ALL)": " UNION ALL ".join([NARROW] * 10),
}
# Flight only: the Postgres peer of 10 million rows would take minutes and show nothing new.
FLIGHT_ONLY = {"narrow x10 (UNION ALL)"}


def one(args):
    """Runs one measurement in this process; prints its JSON. The clock starts after the
    client is imported and connected, and stops after the last row is in."""
    query = QUERIES[args.query]
    rows = arrow_bytes = 0
    first = None
    if args.client == "flight":
        import pyarrow.flight as flight

        client = flight.FlightClient(f"grpc://127.0.0.1:{args.flight_port}")
        client.wait_for_available()
        options = flight.FlightCallOptions(headers=[(b"x-scope-orgid", args.tenant.encode())])
        start = time.perf_counter()
        reader = client.do_get(flight.Ticket(query.encode()), options=options)
        while True:
            try:
                batch = reader.read_chunk().data
            except StopIteration:
                break
            first = first or time.perf_counter()
            rows += batch.num_rows
            arrow_bytes += batch.nbytes
    elif args.client == "adbc":
        import adbc_driver_flightsql.dbapi as flightsql

        conn = flightsql.connect(
            f"grpc://127.0.0.1:{args.flight_port}",
            db_kwargs={"adbc.flight.sql.rpc.call_header.x-scope-orgid": args.tenant},
            autocommit=True,
        )
        cur = conn.cursor()
        start = time.perf_counter()
        cur.execute(query)
        for batch in cur.fetch_record_batch():
            first = first or time.perf_counter()
            rows += batch.num_rows
            arrow_bytes += batch.nbytes
    else:
        import psycopg

        conn = psycopg.connect(host="127.0.0.1", port=args.pg_port, user=args.tenant, dbname=args.tenant)
        cur = conn.cursor()
        start = time.perf_counter()
        for _ in cur.stream(query):
            first = first or time.perf_counter()
            rows += 1
    seconds = time.perf_counter() - start
    print(
        json.dumps(
            {
                "rows": rows,
                "seconds": seconds,
                "first_row_s": (first or start) - start,
                "arrow_bytes": arrow_bytes,
                "client_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
    )
    # Exit at once: interpreter teardown of the clients is not what is measured.
    sys.stdout.flush()
    os._exit(0)


def server_cpu(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100.0


def server_rss_mb(pid, field):
    """`VmHWM` (peak) or `VmRSS` (now) of the server, MB."""
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) / 1024


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--server-pid", type=int)
    parser.add_argument("--flight-port", type=int, required=True)
    parser.add_argument("--pg-port", type=int, required=True)
    parser.add_argument("--tenant", required=True)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--client", help=argparse.SUPPRESS)
    parser.add_argument("--query", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        return one(args)

    plan = [(q, c) for q in QUERIES for c in ("flight", "adbc", "pg")]
    plan = [(q, c) for q, c in plan if not (q in FLIGHT_ONLY and c == "pg")]
    results = {}
    for query, client in plan:
        runs = []
        for _ in range(args.runs):
            with open(f"/proc/{args.server_pid}/clear_refs", "w") as f:
                f.write("5")  # resets the server's peak RSS
            rss_before = server_rss_mb(args.server_pid, "VmRSS")
            cpu0 = server_cpu(args.server_pid)
            out = subprocess.run(
                [sys.executable, __file__, "--one", "--client", client, "--query", query,
                 "--flight-port", str(args.flight_port), "--pg-port", str(args.pg_port), "--tenant", args.tenant],
                check=True, capture_output=True, text=True,
            )
            run = json.loads(out.stdout)
            run["server_cpu_s"] = server_cpu(args.server_pid) - cpu0
            run["server_rss_before_mb"] = rss_before
            run["server_peak_rss_mb"] = server_rss_mb(args.server_pid, "VmHWM")
            runs.append(run)
        run = sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]  # the median run
        run["seconds_all"] = [round(r["seconds"], 2) for r in runs]
        results[(query, client)] = run
        print(json.dumps({"query": query, "client": client, **run}), flush=True)

    print()
    print(f"{'query':<24} {'client':<7} {'rows':>10} {'s':>7} {'rows/s':>11} {'MB/s':>8} {'1st row s':>9} {'client MB':>9} {'server MB':>13} {'pg s / s':>8}")
    for (query, client), r in results.items():
        size = results[(query, "flight")]["arrow_bytes"]
        peer = results.get((query, "pg"))
        ratio = f"{peer['seconds'] / r['seconds']:.1f}" if peer else "-"
        print(
            f"{query:<24} {client:<7} {r['rows']:>10,} {r['seconds']:>7.2f} {r['rows'] / r['seconds']:>11,.0f} "
            f"{size / 1e6 / r['seconds']:>8.1f} {r['first_row_s']:>9.2f} {r['client_peak_rss_mb']:>9.0f} "
            f"{r['server_rss_before_mb']:>5.0f} -> {r['server_peak_rss_mb']:>4.0f} {ratio:>8}"
        )


if __name__ == "__main__":
    main()
