//! Arrow Flight through the real binary with the real Python clients: pyarrow's plain Flight
//! (SQL and TraceQL tickets, `get_flight_info`) and the ADBC Flight SQL driver (statements,
//! `GetSqlInfo`) agree with the Postgres wire on tracegen data; bad queries are
//! InvalidArgument; tenants stay apart.

mod common;

use common::TestServer;
use tracehouse_benches::send::Protocol;

/// Runs pyarrow against the Flight port; prints one line per check.
const PYARROW: &str = r#"
import sys
import pyarrow as pa
import pyarrow.flight as flight

port = sys.argv[1]
client = flight.FlightClient(f"grpc://127.0.0.1:{port}")
shop = flight.FlightCallOptions(headers=[(b"x-scope-orgid", b"shop")])
other = flight.FlightCallOptions(headers=[(b"x-scope-orgid", b"someone-else")])

sql = b"SELECT service_name, count(*) AS spans FROM spans GROUP BY 1 ORDER BY 1"
table = client.do_get(flight.Ticket(sql), options=shop).read_all()
print("sql", ";".join(f"{s}={n}" for s, n in zip(table["service_name"].to_pylist(), table["spans"].to_pylist())))

info = client.get_flight_info(flight.FlightDescriptor.for_command(sql), options=shop)
print("schema", ",".join(info.schema.names))
table = client.do_get(info.endpoints[0].ticket, options=shop).read_all()
print("info_rows", table.num_rows)

reader = client.do_get(flight.Ticket(b"{ status = error }"), options=shop)
errors = reader.read_all()
print("traceql", errors.num_rows, set(errors["status_code"].to_pylist()))

print("other_tenant", client.do_get(flight.Ticket(b"SELECT count(*) AS n FROM spans"), options=other).read_all()["n"][0].as_py())

for bad in [b"SELEC nonsense", b"{ .a = }"]:
    try:
        client.do_get(flight.Ticket(bad), options=shop).read_all()
        print("bad_accepted", bad)
    except pa.ArrowInvalid as e:
        # pyarrow raises ArrowInvalid for gRPC InvalidArgument.
        print("bad ArrowInvalid", "invalid argument" in str(e))
"#;

/// Runs the ADBC Flight SQL driver against the Flight port; prints one line per check.
const ADBC: &str = r#"
import sys
import adbc_driver_flightsql.dbapi as flightsql

port = sys.argv[1]
def connect(tenant):
    return flightsql.connect(
        f"grpc://127.0.0.1:{port}",
        db_kwargs={"adbc.flight.sql.rpc.call_header.x-scope-orgid": tenant},
        autocommit=True,
    )

conn = connect("shop")
cur = conn.cursor()
cur.execute("SELECT service_name, count(*) AS spans FROM spans GROUP BY 1 ORDER BY 1")
table = cur.fetch_arrow_table()
print("adbc", ";".join(f"{s}={n}" for s, n in zip(table["service_name"].to_pylist(), table["spans"].to_pylist())))
cur.execute("SELECT count(*) AS n FROM traceql('{ status = error }')")
print("adbc_traceql", cur.fetchone()[0])
print("vendor", conn.adbc_get_info()["vendor_name"])
for service in ("checkout", "frontend"):
    cur.execute("SELECT count(*) FROM spans WHERE service_name = $1", parameters=(service,))
    print("prepared", service, cur.fetchone()[0])
try:
    cur.execute("SELEC nonsense")
    cur.fetchall()
    print("bad_accepted")
except flightsql.Error as e:
    print("adbc_bad", type(e).__name__)
print("table_types", ",".join(sorted(conn.adbc_get_table_types())))
print("spans_columns", ",".join(conn.adbc_get_table_schema("spans").names[:3]))
objects = conn.adbc_get_objects(depth="tables").read_all().to_pylist()
tables = sorted(
    f"{c['catalog_name']}.{s['db_schema_name']}.{t['table_name']}"
    for c in objects for s in (c["catalog_db_schemas"] or []) for t in (s["db_schema_tables"] or [])
)
print("objects", "shop.public.spans" in tables, "shop.public.traces" in tables)
other = connect("someone-else").cursor()
other.execute("SELECT count(*) FROM spans")
print("adbc_other_tenant", other.fetchone()[0])
"#;

/// Runs a Python client script with the Flight port; its output lines.
fn python(script: &str, port: u16) -> Vec<String> {
    let out = std::process::Command::new("python3")
        .args(["-c", script, &port.to_string()])
        .output()
        .expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "python client failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout.lines().map(str::to_string).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyarrow_and_adbc_read_spans() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(dir.path(), "").await;
    let mut generator = common::generator(31);
    let mut sender = server.sender(Protocol::HttpProtobuf, false).await;
    for _ in 0..3 {
        let (req, _) = generator.request(500);
        assert_eq!(sender.send(&req, Some("shop")).await.unwrap().status, 200);
    }
    let pg = server.pg("shop").await;
    let by_service: Vec<String> = pg
        .query("SELECT service_name, count(*) FROM spans GROUP BY 1 ORDER BY 1", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| format!("{}={}", r.get::<_, String>(0), r.get::<_, i64>(1)))
        .collect();
    let errors: i64 = pg
        .query_one("SELECT count(*) FROM spans WHERE status_code = 'error'", &[])
        .await
        .unwrap()
        .get(0);
    assert!(errors > 0);

    let lines = python(PYARROW, server.flight_port);
    assert_eq!(
        lines[0],
        format!("sql {}", by_service.join(";")),
        "Flight agrees with Postgres"
    );
    assert_eq!(lines[1], "schema service_name,spans");
    assert_eq!(lines[2], format!("info_rows {}", by_service.len()));
    assert_eq!(lines[3], format!("traceql {errors} {{'error'}}"));
    assert_eq!(lines[4], "other_tenant 0", "tenants stay apart");
    assert_eq!(
        &lines[5..7],
        ["bad ArrowInvalid True"; 2],
        "invalid SQL and TraceQL are InvalidArgument"
    );
    assert_eq!(lines.len(), 7, "{lines:?}");

    // Flight SQL through ADBC: the same answers, server info from GetSqlInfo.
    let lines = python(ADBC, server.flight_port);
    assert_eq!(lines[0], format!("adbc {}", by_service.join(";")));
    assert_eq!(lines[1], format!("adbc_traceql {errors}"));
    assert_eq!(lines[2], "vendor tracehouse");
    // Prepared statements with a bound parameter.
    for (line, service) in lines[3..5].iter().zip(["checkout", "frontend"]) {
        let n: i64 = pg
            .query_one("SELECT count(*) FROM spans WHERE service_name = $1", &[&service])
            .await
            .unwrap()
            .get(0);
        assert!(n > 0);
        assert_eq!(*line, format!("prepared {service} {n}"));
    }
    // The rest of the checks follow the two prepared-statement lines.
    let lines = &lines[2..];
    assert_eq!(lines[3], "adbc_bad ProgrammingError", "invalid SQL is InvalidArgument");
    // Metadata calls drivers make: GetTableTypes, GetTables with schemas, GetCatalogs and
    // GetDbSchemas (through get_objects; the catalog is the tenant).
    assert_eq!(lines[4], "table_types LOCAL TEMPORARY,TABLE,VIEW");
    assert_eq!(lines[5], "spans_columns trace_id,span_id,parent_span_id");
    assert_eq!(lines[6], "objects True True");
    assert_eq!(lines[7], "adbc_other_tenant 0", "tenants stay apart");
}
