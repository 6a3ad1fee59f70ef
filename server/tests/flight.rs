//! Arrow Flight through the real binary with the real Python clients: pyarrow's plain Flight
//! (SQL and TraceQL tickets, `get_flight_info`) and the ADBC Flight SQL driver (statements,
//! prepared statements, `GetSqlInfo`, metadata) agree with the Postgres wire on tracegen data;
//! bad queries are InvalidArgument; tenants stay apart. A Rust Flight SQL client (arrow-flight's)
//! runs a statement, a prepared statement with a parameter and the metadata calls JDBC tools
//! make. With `flight.auth` set, calls without credentials are Unauthenticated and
//! tenant-bound credentials read only their tenant (pyarrow, ADBC and Rust handshakes). A
//! client that cancels or disconnects stops its query.

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_flight_sql_client() {
    use std::sync::Arc;

    use arrow::array::{Array, AsArray, RecordBatch, StringArray};
    use arrow::datatypes::{DataType, Field, Int64Type, Schema};
    use arrow_flight::sql::client::FlightSqlServiceClient;
    use futures::TryStreamExt;

    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(dir.path(), "").await;
    let mut generator = common::generator(37);
    let mut sender = server.sender(Protocol::Grpc, false).await;
    let (req, _) = generator.request(800);
    assert_eq!(sender.send(&req, Some("shop")).await.unwrap().status, 200);
    let pg = server.pg("shop").await;
    let count = |sql: &'static str, service: Option<&'static str>| {
        let pg = &pg;
        async move {
            match service {
                None => pg.query_one(sql, &[]).await.unwrap().get::<_, i64>(0),
                Some(s) => pg.query_one(sql, &[&s]).await.unwrap().get::<_, i64>(0),
            }
        }
    };

    let channel = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{}", server.flight_port))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = FlightSqlServiceClient::new(channel);
    client.set_header("x-scope-orgid", "shop");
    async fn first_int(
        client: &mut FlightSqlServiceClient<tonic::transport::Channel>,
        info: arrow_flight::FlightInfo,
    ) -> i64 {
        let ticket = info.endpoint[0].ticket.clone().unwrap();
        let batches: Vec<RecordBatch> = client.do_get(ticket).await.unwrap().try_collect().await.unwrap();
        batches[0].column(0).as_primitive::<Int64Type>().value(0)
    }

    let info = client
        .execute("SELECT count(*) FROM spans WHERE status_code = 'error'".into(), None)
        .await
        .unwrap();
    let errors = first_int(&mut client, info).await;
    assert_eq!(
        errors,
        count("SELECT count(*) FROM spans WHERE status_code = 'error'", None).await
    );

    let mut prepared = client
        .prepare("SELECT count(*) FROM spans WHERE service_name = $1".into(), None)
        .await
        .unwrap();
    let params = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("$1", DataType::Utf8, true)])),
        vec![Arc::new(StringArray::from(vec!["checkout"]))],
    )
    .unwrap();
    prepared.set_parameters(params).unwrap();
    let info = prepared.execute().await.unwrap();
    let checkout = first_int(&mut client, info).await;
    assert_eq!(
        checkout,
        count("SELECT count(*) FROM spans WHERE service_name = $1", Some("checkout")).await
    );
    assert!(checkout > 0);
    prepared.close().await.unwrap();

    let err = client.execute("SELEC 1".into(), None).await.unwrap_err();
    assert!(
        err.to_string().contains("Client specified an invalid argument"),
        "InvalidArgument: {err}"
    );
    let names: Vec<String> = {
        let info = client.get_catalogs().await.unwrap();
        let ticket = info.endpoint[0].ticket.clone().unwrap();
        let batches: Vec<RecordBatch> = client.do_get(ticket).await.unwrap().try_collect().await.unwrap();
        batches
            .iter()
            .flat_map(|b| {
                let c = b.column(0).as_string::<i32>().clone();
                (0..c.len()).map(move |i| c.value(i).to_string())
            })
            .collect()
    };
    assert_eq!(names, vec!["shop".to_string()], "the catalog is the tenant");

    // GetXdbcTypeInfo, which JDBC's and ODBC's getTypeInfo call: all types, then one.
    async fn type_names(
        client: &mut FlightSqlServiceClient<tonic::transport::Channel>,
        data_type: Option<i32>,
    ) -> Vec<String> {
        let info = client
            .get_xdbc_type_info(arrow_flight::sql::CommandGetXdbcTypeInfo { data_type })
            .await
            .unwrap();
        let ticket = info.endpoint[0].ticket.clone().unwrap();
        let batches: Vec<RecordBatch> = client.do_get(ticket).await.unwrap().try_collect().await.unwrap();
        batches
            .iter()
            .flat_map(|b| {
                let c = b.column_by_name("type_name").unwrap().as_string::<i32>().clone();
                (0..c.len()).map(move |i| c.value(i).to_string())
            })
            .collect()
    }
    let all = type_names(&mut client, None).await;
    for t in ["VARCHAR", "BIGINT", "DOUBLE", "BOOLEAN", "TIMESTAMP"] {
        assert!(all.contains(&t.to_string()), "{t} missing from {all:?}");
    }
    let bigint = arrow_flight::sql::XdbcDataType::XdbcBigint as i32;
    assert_eq!(type_names(&mut client, Some(bigint)).await, ["BIGINT"]);

    // Key metadata JDBC tools ask for: the span tables have none, so no rows, right schema.
    let info = client
        .get_primary_keys(arrow_flight::sql::CommandGetPrimaryKeys {
            catalog: Some("shop".into()),
            db_schema: Some("public".into()),
            table: "spans".into(),
        })
        .await
        .unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let batches: Vec<RecordBatch> = client.do_get(ticket).await.unwrap().try_collect().await.unwrap();
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 0);
    let schema = info.try_decode_schema().unwrap();
    assert_eq!(schema.field(3).name(), "column_name");
    let info = client
        .get_imported_keys(arrow_flight::sql::CommandGetImportedKeys {
            catalog: Some("shop".into()),
            db_schema: Some("public".into()),
            table: "spans".into(),
        })
        .await
        .unwrap();
    assert_eq!(info.try_decode_schema().unwrap().fields().len(), 13);
}

/// Config of the auth test: a bearer token for every tenant, basic credentials bound to `shop`.
const AUTH_YAML: &str = "
flight:
  auth:
    - bearer_token: s3cret
    - username: ana
      password: pw
      tenant: shop
";

/// pyarrow and ADBC against a server with auth on; prints one line per check.
const AUTH: &str = r#"
import sys
import pyarrow.flight as flight
import adbc_driver_flightsql.dbapi as flightsql

port = sys.argv[1]
url = f"grpc://127.0.0.1:{port}"
client = flight.FlightClient(url)
count = b"SELECT count(*) AS n FROM spans"

def n(headers):
    return client.do_get(flight.Ticket(count), options=flight.FlightCallOptions(headers=headers)).read_all()["n"][0].as_py()

def outcome(headers):
    try:
        return f"ok {n(headers)}"
    except flight.FlightUnauthenticatedError:
        return "unauthenticated"
    except flight.FlightUnauthorizedError:
        return "permission_denied"

print("none", outcome([(b"x-scope-orgid", b"shop")]))
print("wrong_token", outcome([(b"authorization", b"Bearer nope"), (b"x-scope-orgid", b"shop")]))
print("token_shop", outcome([(b"authorization", b"Bearer s3cret"), (b"x-scope-orgid", b"shop")]))
print("token_other", outcome([(b"authorization", b"Bearer s3cret"), (b"x-scope-orgid", b"other")]))
try:
    client.authenticate_basic_token("ana", "wrong")
    print("bad_login accepted")
except flight.FlightUnauthenticatedError:
    print("bad_login unauthenticated")
header = client.authenticate_basic_token("ana", "pw")
print("login", header[0].decode(), header[1].decode().startswith("Bearer "))
print("session_default_tenant", outcome([header]))
print("session_shop", outcome([header, (b"x-scope-orgid", b"shop")]))
print("session_other", outcome([header, (b"x-scope-orgid", b"other")]))
try:
    client.get_flight_info(flight.FlightDescriptor.for_command(count))
    print("info accepted")
except flight.FlightUnauthenticatedError:
    print("info unauthenticated")

def adbc(db_kwargs):
    try:
        with flightsql.connect(url, db_kwargs=db_kwargs, autocommit=True) as conn:
            cur = conn.cursor()
            cur.execute("SELECT count(*) FROM spans")
            return f"ok {cur.fetchone()[0]}"
    except flightsql.Error as e:
        return "unauthenticated" if "Unauthenticated" in str(e) or "UNAUTHENTICATED" in str(e) else f"error {e}"

print("adbc_none", adbc({"adbc.flight.sql.rpc.call_header.x-scope-orgid": "shop"}))
print("adbc_login", adbc({"username": "ana", "password": "pw"}))
print("adbc_bad_login", adbc({"username": "ana", "password": "wrong"}))
print("adbc_token", adbc({"adbc.flight.sql.authorization_header": "Bearer s3cret",
                          "adbc.flight.sql.rpc.call_header.x-scope-orgid": "shop"}))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_tokens_basic_and_tenant_binding() {
    use arrow::array::{AsArray, RecordBatch};
    use arrow::datatypes::Int64Type;
    use arrow_flight::sql::client::FlightSqlServiceClient;
    use futures::TryStreamExt;

    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(dir.path(), AUTH_YAML).await;
    let mut generator = common::generator(41);
    let mut sender = server.sender(Protocol::HttpProtobuf, false).await;
    let (req, _) = generator.request(600);
    assert_eq!(sender.send(&req, Some("shop")).await.unwrap().status, 200);
    let (req, _) = generator.request(200);
    assert_eq!(sender.send(&req, Some("other")).await.unwrap().status, 200);
    let shop = server.span_count("shop").await;
    let other = server.span_count("other").await;
    assert!(shop > 0 && other > 0 && shop != other);

    let lines = python(AUTH, server.flight_port);
    let expected = [
        "none unauthenticated".to_string(),
        "wrong_token unauthenticated".into(),
        format!("token_shop ok {shop}"),
        // A token bound to no tenant reads the tenant the call names.
        format!("token_other ok {other}"),
        "bad_login unauthenticated".into(),
        "login authorization True".into(),
        // Basic credentials bound to shop: shop by default, never another tenant.
        format!("session_default_tenant ok {shop}"),
        format!("session_shop ok {shop}"),
        "session_other permission_denied".into(),
        "info unauthenticated".into(),
        "adbc_none unauthenticated".into(),
        format!("adbc_login ok {shop}"),
        "adbc_bad_login unauthenticated".into(),
        format!("adbc_token ok {shop}"),
    ];
    assert_eq!(lines, expected);

    // arrow-flight's Rust Flight SQL client logs in with a handshake.
    let channel = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{}", server.flight_port))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = FlightSqlServiceClient::new(channel);
    let err = client.execute("SELECT 1".into(), None).await.unwrap_err();
    assert!(
        err.to_string().contains("valid authentication credentials")
            && err.to_string().contains("authentication required"),
        "Unauthenticated with our message: {err}"
    );
    assert!(client.handshake("ana", "wrong").await.is_err());
    client.handshake("ana", "pw").await.unwrap();
    let info = client.execute("SELECT count(*) FROM spans".into(), None).await.unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let batches: Vec<RecordBatch> = client.do_get(ticket).await.unwrap().try_collect().await.unwrap();
    assert_eq!(batches[0].column(0).as_primitive::<Int64Type>().value(0), shop);
}

/// Starts queries that would run for minutes, then goes away: the first cancels its reader
/// after the schema arrives, the second exits mid-stream without a word.
const CANCEL: &str = r#"
import os, sys, time
import pyarrow.flight as flight

port, mode = sys.argv[1], sys.argv[2]
client = flight.FlightClient(f"grpc://127.0.0.1:{port}")
shop = flight.FlightCallOptions(headers=[(b"x-scope-orgid", b"shop")])
if mode == "cancel":
    # An aggregate over a three-way cross join: billions of rows, no output until the end.
    reader = client.do_get(flight.Ticket(b"SELECT count(*) FROM spans a, spans b, spans c WHERE a.duration_ns + b.duration_ns > c.duration_ns"), options=shop)
    print("schema", reader.schema.names, flush=True)
    time.sleep(1.5)
    reader.cancel()
    print("cancelled", flush=True)
else:
    reader = client.do_get(flight.Ticket(b"SELECT a.span_id, b.name, c.trace_id FROM spans a, spans b, spans c"), options=shop)
    chunk = reader.read_chunk()
    print("rows", chunk.data.num_rows > 0, flush=True)
    os._exit(0)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_or_disconnect_stops_the_query() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(dir.path(), "").await;
    let mut generator = common::generator(43);
    let mut sender = server.sender(Protocol::HttpProtobuf, false).await;
    let (req, _) = generator.request(2_000);
    assert_eq!(sender.send(&req, Some("shop")).await.unwrap().status, 200);

    /// Waits until no Flight stream is open, then until the server is idle: the CPU seconds
    /// it used in the first one-second window under 0.2 CPU s, within 10 s (a query's tasks
    /// stop at their next yield point, which takes longer on a loaded machine); the smallest
    /// window seen if none was.
    async fn settled_cpu(server: &TestServer) -> f64 {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while server.metric("tracehouse_flight_streams_active").await > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "a Flight stream is still open 10 s after its client went away"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let mut least = f64::MAX;
        for _ in 0..10 {
            let before = server.cpu_seconds();
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            least = least.min(server.cpu_seconds() - before);
            if least < 0.2 {
                break;
            }
        }
        least
    }

    let run = |mode: &'static str| {
        let port = server.flight_port.to_string();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new("python3")
                .args(["-c", CANCEL, &port, mode])
                .output()
                .expect("python3")
        })
    };

    let before = server.cpu_seconds();
    let out = run("cancel").await.unwrap();
    let busy = server.cpu_seconds() - before;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout, "schema ['count(*)']\ncancelled\n");
    // The query was really running until the cancel (1.5 s of a busy server).
    assert!(busy > 1.0, "the server used only {busy:.2} CPU s while the query ran");
    let idle = settled_cpu(&server).await;
    assert!(
        idle < 0.2,
        "the server still burned {idle:.2} CPU s a second, 10 s after the client cancelled"
    );
    assert_eq!(server.metric("tracehouse_flight_streams_cancelled_total").await, 1);

    let out = run("disconnect").await.unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "rows True\n");
    let idle = settled_cpu(&server).await;
    assert!(
        idle < 0.2,
        "the server still burned {idle:.2} CPU s a second, 10 s after the client went away"
    );
    assert_eq!(server.metric("tracehouse_flight_streams_cancelled_total").await, 2);
    assert_eq!(server.metric("tracehouse_flight_streams_started_total").await, 2);

    // The server still answers.
    let lines = python(PYARROW_COUNT, server.flight_port);
    assert_eq!(lines, [format!("n {}", server.span_count("shop").await)]);
}

const PYARROW_COUNT: &str = r#"
import sys
import pyarrow.flight as flight
client = flight.FlightClient(f"grpc://127.0.0.1:{sys.argv[1]}")
shop = flight.FlightCallOptions(headers=[(b"x-scope-orgid", b"shop")])
print("n", client.do_get(flight.Ticket(b"SELECT count(*) AS n FROM spans"), options=shop).read_all()["n"][0].as_py())
"#;
