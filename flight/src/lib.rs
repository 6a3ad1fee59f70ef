//! Arrow Flight and Flight SQL for tracehouse, over the `sql` crate's query engine: plain
//! Flight, and Flight SQL statements, prepared statements with parameters (`$1`, ...),
//! `GetSqlInfo`, `GetCatalogs`, `GetDbSchemas`, `GetTables` (with schemas), `GetTableTypes`,
//! `GetXdbcTypeInfo`, and `GetPrimaryKeys` / `GetExportedKeys` / `GetImportedKeys` (no rows: the
//! span tables have no keys). The catalog a Flight SQL client sees is the tenant's. Optional
//! authentication is in [`auth`].
//!
//! One port serves both. A ticket or command that decodes as a protobuf `Any` of a Flight SQL
//! message goes to the Flight SQL service (arrow-flight's `FlightSqlService`); anything else is
//! a plain-Flight query text.
//!
//! A ticket (and a `get_flight_info` / `get_schema` command descriptor) is UTF-8 text: SQL, or
//! TraceQL when it starts with `{` or carries the prefix `traceql:`; TraceQL runs as
//! `SELECT * FROM traceql('<query>')`. The tenant is the `x-scope-orgid` header (default
//! `single-tenant`). Results stream batch by batch from DataFusion's stream, so memory stays
//! bounded by the batches in flight, not the result size. A client that cancels or
//! disconnects drops the stream, and with it the query.
//!
//! Architecture invariant: uses `tracehouse_sql::QueryEngine`, never its pgwire module, and
//! never the Tempo API crate.

pub mod auth;
pub mod prepared;

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::sql::metadata::{
    SqlInfoData, SqlInfoDataBuilder, XdbcTypeInfo, XdbcTypeInfoData, XdbcTypeInfoDataBuilder,
};
use arrow_flight::sql::server::FlightSqlService;
use arrow_flight::sql::server::PeekableFlightDataStream;
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult,
    CommandPreparedStatementQuery, DoPutPreparedStatementResult,
};
use arrow_flight::sql::{
    Any, CommandGetCatalogs, CommandGetDbSchemas, CommandGetExportedKeys, CommandGetImportedKeys,
    CommandGetPrimaryKeys, CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandGetXdbcTypeInfo,
    CommandStatementQuery, Nullable, ProstMessageExt, Searchable, SqlInfo, TicketStatementQuery, XdbcDataType,
    XdbcDatetimeSubcode,
};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest,
    HandshakeResponse, PollInfo, PutResult, SchemaAsIpc, SchemaResult, Ticket,
};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::ipc::writer::IpcWriteOptions;
use datafusion::dataframe::DataFrame;
use datafusion::datasource::TableType;
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use tonic::{Request, Response, Status, Streaming};
use tracehouse_sql::admission::{Front, Outcome};
use tracehouse_sql::{QueryEngine, sql_literal};

/// A boxed stream of gRPC results.
type Boxed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The SQL a ticket or command stands for.
pub fn query_sql(ticket: &[u8]) -> Result<String, Status> {
    let text = std::str::from_utf8(ticket)
        .map_err(|_| Status::invalid_argument("a ticket is UTF-8 text: SQL, or TraceQL"))?
        .trim();
    if text.is_empty() {
        return Err(Status::invalid_argument("empty ticket: expected SQL or TraceQL"));
    }
    let traceql = text
        .strip_prefix("traceql:")
        .map(str::trim)
        .or_else(|| text.starts_with('{').then_some(text));
    Ok(match traceql {
        Some(q) => format!("SELECT * FROM traceql({})", sql_literal(q)),
        None => text.to_string(),
    })
}

/// A query error's gRPC status, by its kind ([`tracehouse_sql::errors::ErrorKind`]'s one
/// table): bad queries and tenants are the client's, storage failures the server's.
pub fn status(e: tracehouse_sql::Error) -> Status {
    Status::new(tonic::Code::from_i32(e.kind().grpc_code()), e.to_string())
}

/// How a query that failed with gRPC `code` ended, for the query metrics.
fn outcome_of(code: tonic::Code) -> Outcome {
    use tonic::Code;
    match code {
        Code::Ok => Outcome::Ok,
        Code::DeadlineExceeded => Outcome::Timeout,
        Code::Cancelled => Outcome::Cancelled,
        Code::ResourceExhausted => Outcome::ResourceExhausted,
        Code::InvalidArgument | Code::NotFound | Code::PermissionDenied | Code::Unauthenticated => Outcome::ClientError,
        _ => Outcome::ServerError,
    }
}

fn tenant_of<T>(request: &Request<T>) -> String {
    tracehouse_sql::tenant_or_default(
        request
            .metadata()
            .get(tracehouse_sql::TENANT_HEADER)
            .map(|v| v.as_bytes()),
    )
}

/// The status of an error in the middle of a result stream: a query error keeps its kind (a
/// timeout is DeadlineExceeded, running out of memory ResourceExhausted).
fn stream_status(e: FlightError) -> Status {
    match e {
        FlightError::Tonic(status) => *status,
        FlightError::Arrow(datafusion::arrow::error::ArrowError::ExternalError(inner)) => {
            let inner = match inner.downcast::<tracehouse_sql::Error>() {
                Ok(e) => return status(*e),
                Err(other) => other,
            };
            match inner.downcast::<datafusion::error::DataFusionError>() {
                Ok(df) => status(tracehouse_sql::Error::DataFusion(*df)),
                Err(other) => Status::internal(other.to_string()),
            }
        }
        other => Status::internal(other.to_string()),
    }
}

/// Prefix of the `Any` type URLs of Flight SQL messages.
const FLIGHT_SQL_TYPE_PREFIX: &str = "type.googleapis.com/arrow.flight.protocol.sql.";

/// `true` when `bytes` is a protobuf `Any` holding a Flight SQL message.
fn is_flight_sql(bytes: &[u8]) -> bool {
    Any::decode(bytes).is_ok_and(|any| any.type_url.starts_with(FLIGHT_SQL_TYPE_PREFIX))
}

/// Counters of the Flight server, for `/metrics`.
#[derive(Debug, Default)]
pub struct FlightStats {
    /// Query result streams started.
    pub streams_started: AtomicU64,
    /// Query result streams open now.
    pub streams_active: AtomicU64,
    /// Streams dropped before their end: the client cancelled or went away.
    pub streams_cancelled: AtomicU64,
    /// Flight data messages sent (schema, dictionaries and record batches).
    pub messages_sent: AtomicU64,
}

/// A result stream that keeps [`FlightStats`]; dropping it before its end counts a cancel.
struct Tracked {
    inner: Boxed<FlightData>,
    stats: Arc<FlightStats>,
    ended: bool,
}

impl Tracked {
    fn new(inner: Boxed<FlightData>, stats: Arc<FlightStats>) -> Self {
        stats.streams_started.fetch_add(1, Ordering::Relaxed);
        stats.streams_active.fetch_add(1, Ordering::Relaxed);
        Self {
            inner,
            stats,
            ended: false,
        }
    }
}

impl Stream for Tracked {
    type Item = Result<FlightData, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = self.inner.as_mut().poll_next(cx);
        match &polled {
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => self.ended = true,
            Poll::Ready(Some(Ok(_))) => {
                self.stats.messages_sent.fetch_add(1, Ordering::Relaxed);
            }
            Poll::Pending => {}
        }
        polled
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.stats.streams_active.fetch_sub(1, Ordering::Relaxed);
        if !self.ended {
            self.stats.streams_cancelled.fetch_add(1, Ordering::Relaxed);
            tracing::debug!("flight stream dropped before its end: query cancelled");
        }
    }
}

/// What plain Flight and Flight SQL share: the engine and how a query runs.
struct Queries {
    engine: Arc<QueryEngine>,
    stats: Arc<FlightStats>,
}

impl Queries {
    /// The plan of SQL text for `tenant`.
    async fn plan_sql(&self, tenant: &str, sql: &str) -> Result<DataFrame, Status> {
        let (ctx, plan) = self.engine.plan_sql(tenant, sql).await.map_err(status)?;
        Ok(DataFrame::new(ctx.state(), plan))
    }

    /// The plan of a plain-Flight ticket (SQL or TraceQL text).
    async fn plan(&self, tenant: &str, query: &[u8]) -> Result<DataFrame, Status> {
        self.plan_sql(tenant, &query_sql(query)?).await
    }

    /// Plans (`frame`) and runs one query of `tenant` (`text`, for the slow-query log) as an
    /// admitted query of the Flight front, streaming its batches as Flight data; the
    /// tenant's slot is held until the stream ends ([`tracehouse_sql::admission`]).
    async fn run(
        &self,
        tenant: &str,
        text: &str,
        frame: impl std::future::Future<Output = Result<DataFrame, Status>>,
    ) -> Result<Boxed<FlightData>, Status> {
        let ticket = self.engine.admit(Front::Flight, tenant, text).map_err(status)?;
        let streamed = match frame.await {
            Ok(frame) => self.stream(frame).await,
            Err(e) => Err(e),
        };
        match streamed {
            Ok(stream) => Ok(Box::pin(stream.map(move |item| {
                if let Err(e) = &item {
                    ticket.set(outcome_of(e.code()));
                }
                item
            }))),
            Err(e) => {
                ticket.set(outcome_of(e.code()));
                Err(e)
            }
        }
    }

    /// Runs `frame`, streaming its batches as Flight data.
    async fn stream(&self, frame: DataFrame) -> Result<Boxed<FlightData>, Status> {
        let schema = Arc::new(frame.schema().as_arrow().clone());
        let (state, plan) = frame.into_parts();
        let limits = tracehouse_sql::QueryLimits::default();
        let batches = self.engine.execute(&state, plan, &limits).await.map_err(status)?;
        let batches =
            batches.map_err(|e| FlightError::from(datafusion::arrow::error::ArrowError::ExternalError(Box::new(e))));
        let stream = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(batches)
            .map_err(stream_status);
        Ok(Box::pin(Tracked::new(Box::pin(stream), self.stats.clone())))
    }

    /// Every table the tenant can query: `(catalog, schema, table, type, Arrow schema)`.
    async fn tables(&self, tenant: &str) -> Result<Vec<(String, String, String, &'static str, SchemaRef)>, Status> {
        let ctx = self.engine.context(tenant).await.map_err(status)?;
        let mut out = Vec::new();
        for catalog_name in ctx.catalog_names() {
            let Some(catalog) = ctx.catalog(&catalog_name) else {
                continue;
            };
            for schema_name in catalog.schema_names() {
                let Some(schema) = catalog.schema(&schema_name) else {
                    continue;
                };
                for table_name in schema.table_names() {
                    let Some(table) = schema.table(&table_name).await.map_err(|e| status(e.into()))? else {
                        continue;
                    };
                    let kind = match table.table_type() {
                        TableType::View => "VIEW",
                        TableType::Temporary => "LOCAL TEMPORARY",
                        TableType::Base => "TABLE",
                    };
                    out.push((
                        catalog_name.clone(),
                        schema_name.clone(),
                        table_name,
                        kind,
                        table.schema(),
                    ));
                }
            }
        }
        out.sort_by(|a, b| (&a.0, &a.1, &a.2).cmp(&(&b.0, &b.1, &b.2)));
        Ok(out)
    }

    /// One finished batch as a Flight data stream.
    fn batch_stream<E: std::fmt::Display>(batch: Result<RecordBatch, E>) -> Result<Boxed<FlightData>, Status> {
        let batch = batch.map_err(|e| Status::internal(e.to_string()))?;
        let stream = FlightDataEncoderBuilder::new()
            .with_schema(batch.schema())
            .build(futures::stream::iter([Ok(batch)]))
            .map_err(|e| Status::internal(e.to_string()));
        Ok(Box::pin(stream))
    }

    fn info(
        schema: &datafusion::arrow::datatypes::Schema,
        descriptor: FlightDescriptor,
        ticket: Vec<u8>,
    ) -> Result<FlightInfo, Status> {
        Ok(FlightInfo::new()
            .try_with_schema(schema)
            .map_err(|e| Status::internal(e.to_string()))?
            .with_descriptor(descriptor)
            .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(ticket))))
    }
}

/// The Flight service over a query engine: plain Flight, and Flight SQL through [`SqlService`].
pub struct TracehouseFlight {
    queries: Arc<Queries>,
    sql: SqlService,
    auth: auth::Auth,
}

/// The tonic service, ready to serve: `auth` checks every call, `stats` counts streams.
pub fn service(
    engine: Arc<QueryEngine>,
    auth: auth::Auth,
    stats: Arc<FlightStats>,
) -> FlightServiceServer<TracehouseFlight> {
    let queries = Arc::new(Queries { engine, stats });
    FlightServiceServer::new(TracehouseFlight {
        sql: SqlService {
            queries: queries.clone(),
            info: sql_info(),
            types: xdbc_types(),
            prepared: Default::default(),
        },
        queries,
        auth,
    })
}

fn sql_info() -> Arc<SqlInfoData> {
    let mut builder = SqlInfoDataBuilder::new();
    builder.append(SqlInfo::FlightSqlServerName, "tracehouse");
    builder.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    builder.append(SqlInfo::FlightSqlServerArrowVersion, "59");
    builder.append(SqlInfo::FlightSqlServerReadOnly, true);
    builder.append(SqlInfo::FlightSqlServerSql, true);
    builder.append(SqlInfo::FlightSqlServerSubstrait, false);
    builder.append(SqlInfo::FlightSqlServerTransaction, 0i32);
    Arc::new(builder.build().expect("static sql info builds"))
}

/// The SQL types of the span tables, for JDBC's and ODBC's `getTypeInfo` (`GetXdbcTypeInfo`).
fn xdbc_types() -> Arc<XdbcTypeInfoData> {
    let mut builder = XdbcTypeInfoDataBuilder::new();
    let types = [
        ("VARCHAR", XdbcDataType::XdbcVarchar, Some("'"), None),
        ("BIGINT", XdbcDataType::XdbcBigint, None, Some(19)),
        ("INTEGER", XdbcDataType::XdbcInteger, None, Some(10)),
        ("SMALLINT", XdbcDataType::XdbcSmallint, None, Some(5)),
        ("DOUBLE", XdbcDataType::XdbcDouble, None, Some(15)),
        ("BOOLEAN", XdbcDataType::XdbcBit, None, Some(1)),
        ("DATE", XdbcDataType::XdbcDate, Some("DATE '"), None),
        ("TIMESTAMP", XdbcDataType::XdbcTimestamp, Some("TIMESTAMP '"), None),
        ("BYTEA", XdbcDataType::XdbcVarbinary, None, None),
    ];
    for (name, data_type, prefix, column_size) in types {
        let is_datetime = matches!(data_type, XdbcDataType::XdbcDate | XdbcDataType::XdbcTimestamp);
        builder.append(XdbcTypeInfo {
            type_name: name.into(),
            data_type,
            column_size,
            literal_prefix: prefix.map(str::to_string),
            literal_suffix: prefix.map(|_| "'".to_string()),
            create_params: None,
            nullable: Nullable::NullabilityNullable,
            case_sensitive: data_type == XdbcDataType::XdbcVarchar,
            searchable: Searchable::Full,
            unsigned_attribute: column_size.map(|_| false),
            fixed_prec_scale: false,
            auto_increment: None,
            local_type_name: Some(name.into()),
            minimum_scale: None,
            maximum_scale: None,
            sql_data_type: if is_datetime {
                XdbcDataType::XdbcDatetime
            } else {
                data_type
            },
            datetime_subcode: match data_type {
                // ODBC's SQL_CODE_DATE is 1, which the protocol names `YEAR`.
                XdbcDataType::XdbcDate => Some(XdbcDatetimeSubcode::XdbcSubcodeYear),
                XdbcDataType::XdbcTimestamp => Some(XdbcDatetimeSubcode::XdbcSubcodeTimestamp),
                _ => None,
            },
            num_prec_radix: column_size.map(|_| 10),
            interval_precision: None,
        });
    }
    Arc::new(builder.build().expect("static type info builds"))
}

/// The result schema of `GetPrimaryKeys` (Flight SQL's `FlightSql.proto`).
fn primary_keys_schema() -> datafusion::arrow::datatypes::Schema {
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    Schema::new(vec![
        Field::new("catalog_name", DataType::Utf8, true),
        Field::new("db_schema_name", DataType::Utf8, true),
        Field::new("table_name", DataType::Utf8, false),
        Field::new("column_name", DataType::Utf8, false),
        Field::new("key_name", DataType::Utf8, true),
        Field::new("key_sequence", DataType::Int32, false),
    ])
}

/// The result schema of `GetExportedKeys` and `GetImportedKeys` (Flight SQL's `FlightSql.proto`).
fn foreign_keys_schema() -> datafusion::arrow::datatypes::Schema {
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    let text = |name: &str, nullable| Field::new(name, DataType::Utf8, nullable);
    Schema::new(vec![
        text("pk_catalog_name", true),
        text("pk_db_schema_name", true),
        text("pk_table_name", false),
        text("pk_column_name", false),
        text("fk_catalog_name", true),
        text("fk_db_schema_name", true),
        text("fk_table_name", false),
        text("fk_column_name", false),
        Field::new("key_sequence", DataType::Int32, false),
        text("fk_key_name", true),
        text("pk_key_name", true),
        Field::new("update_rule", DataType::UInt8, false),
        Field::new("delete_rule", DataType::UInt8, false),
    ])
}

/// No rows of `schema`: the span tables have no primary or foreign keys.
fn no_keys(schema: datafusion::arrow::datatypes::Schema) -> Result<Response<Boxed<FlightData>>, Status> {
    Ok(Response::new(Queries::batch_stream(Ok::<_, Status>(
        RecordBatch::new_empty(Arc::new(schema)),
    ))?))
}

/// A fresh id for a prepared-statement handle.
fn fresh_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{nanos:x}-{:x}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The `FlightInfo` of a command: its result schema, and the command as the ticket.
fn metadata_info<M: ProstMessageExt>(
    schema: &datafusion::arrow::datatypes::Schema,
    query: &M,
    request: Request<FlightDescriptor>,
) -> Result<Response<FlightInfo>, Status> {
    let info = Queries::info(schema, request.into_inner(), query.as_any().encode_to_vec())?;
    Ok(Response::new(info))
}

/// Flight SQL: statements and prepared statements run on the engine, `GetSqlInfo` describes
/// the server, the metadata calls list the tenant's catalog.
pub struct SqlService {
    queries: Arc<Queries>,
    info: Arc<SqlInfoData>,
    types: Arc<XdbcTypeInfoData>,
    /// Open prepared statements and their bound parameters. A handle is a fresh id, `:`, the SQL.
    prepared: prepared::Prepared,
}

fn handle_sql(handle: &[u8]) -> Result<&str, Status> {
    std::str::from_utf8(handle)
        .ok()
        .and_then(|h| h.split_once(':'))
        .map(|(_, sql)| sql)
        .ok_or_else(|| Status::invalid_argument("unknown prepared statement handle"))
}

impl SqlService {
    /// The plan of a prepared statement with its bound parameters.
    async fn prepared_plan(&self, tenant: &str, handle: &[u8]) -> Result<DataFrame, Status> {
        let frame = self.queries.plan_sql(tenant, handle_sql(handle)?).await?;
        let params = self.prepared.params(tenant, handle)?;
        match params {
            values if !values.is_empty() => frame
                .with_param_values(datafusion::common::ParamValues::List(
                    values.into_iter().map(Into::into).collect(),
                ))
                .map_err(|e| status(e.into())),
            _ => Ok(frame),
        }
    }
}

#[tonic::async_trait]
impl FlightSqlService for SqlService {
    type FlightService = SqlService;

    async fn do_handshake(
        &self,
        _request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Boxed<HandshakeResponse>>, Status> {
        Ok(Response::new(Box::pin(futures::stream::empty())))
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let tenant = tenant_of(&request);
        let frame = self.queries.plan_sql(&tenant, &query.query).await?;
        let ticket = TicketStatementQuery {
            statement_handle: query.query.into_bytes().into(),
        };
        let info = Queries::info(
            frame.schema().as_arrow(),
            request.into_inner(),
            ticket.as_any().encode_to_vec(),
        )?;
        Ok(Response::new(info))
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<Boxed<FlightData>>, Status> {
        let tenant = tenant_of(&request);
        let sql = std::str::from_utf8(&ticket.statement_handle)
            .map_err(|_| Status::invalid_argument("statement handle is not UTF-8"))?;
        let frame = self.queries.plan_sql(&tenant, sql);
        Ok(Response::new(self.queries.run(&tenant, sql, frame).await?))
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        metadata_info(&self.info.schema(), &query, request)
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<Boxed<FlightData>>, Status> {
        Ok(Response::new(Queries::batch_stream(
            self.info.record_batch(query.info),
        )?))
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        metadata_info(&query.into_builder().schema(), &query, request)
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<Boxed<FlightData>>, Status> {
        let mut builder = query.into_builder();
        let mut names: Vec<String> = self
            .queries
            .tables(&tenant_of(&request))
            .await?
            .into_iter()
            .map(|t| t.0)
            .collect();
        names.dedup();
        for name in names {
            builder.append(name);
        }
        Ok(Response::new(Queries::batch_stream(builder.build())?))
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        metadata_info(&query.clone().into_builder().schema(), &query, request)
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<Boxed<FlightData>>, Status> {
        let mut builder = query.into_builder();
        let mut pairs: Vec<(String, String)> = self
            .queries
            .tables(&tenant_of(&request))
            .await?
            .into_iter()
            .map(|t| (t.0, t.1))
            .collect();
        pairs.dedup();
        for (catalog, schema) in pairs {
            builder.append(catalog, schema);
        }
        Ok(Response::new(Queries::batch_stream(builder.build())?))
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        metadata_info(&query.clone().into_builder().schema(), &query, request)
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<Boxed<FlightData>>, Status> {
        let mut builder = query.into_builder();
        for (catalog, schema, table, kind, table_schema) in self.queries.tables(&tenant_of(&request)).await? {
            builder
                .append(catalog, schema, table, kind, &table_schema)
                .map_err(|e| Status::internal(e.to_string()))?;
        }
        Ok(Response::new(Queries::batch_stream(builder.build())?))
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        metadata_info(&query.into_builder().schema(), &query, request)
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        _request: Request<Ticket>,
    ) -> Result<Response<Boxed<FlightData>>, Status> {
        let mut builder = query.into_builder();
        for kind in ["LOCAL TEMPORARY", "TABLE", "VIEW"] {
            builder.append(kind);
        }
        Ok(Response::new(Queries::batch_stream(builder.build())?))
    }

    async fn get_flight_info_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        metadata_info(&self.types.schema(), &query, request)
    }

    async fn do_get_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<Boxed<FlightData>>, Status> {
        Ok(Response::new(Queries::batch_stream(
            query.into_builder(&self.types).build(),
        )?))
    }

    async fn get_flight_info_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        metadata_info(&primary_keys_schema(), &query, request)
    }

    async fn do_get_primary_keys(
        &self,
        _query: CommandGetPrimaryKeys,
        _request: Request<Ticket>,
    ) -> Result<Response<Boxed<FlightData>>, Status> {
        no_keys(primary_keys_schema())
    }

    async fn get_flight_info_exported_keys(
        &self,
        query: CommandGetExportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        metadata_info(&foreign_keys_schema(), &query, request)
    }

    async fn do_get_exported_keys(
        &self,
        _query: CommandGetExportedKeys,
        _request: Request<Ticket>,
    ) -> Result<Response<Boxed<FlightData>>, Status> {
        no_keys(foreign_keys_schema())
    }

    async fn get_flight_info_imported_keys(
        &self,
        query: CommandGetImportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        metadata_info(&foreign_keys_schema(), &query, request)
    }

    async fn do_get_imported_keys(
        &self,
        _query: CommandGetImportedKeys,
        _request: Request<Ticket>,
    ) -> Result<Response<Boxed<FlightData>>, Status> {
        no_keys(foreign_keys_schema())
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let tenant = tenant_of(&request);
        let frame = self.queries.plan_sql(&tenant, &query.query).await?;
        let ipc = |schema: &datafusion::arrow::datatypes::Schema| -> Result<bytes::Bytes, Status> {
            let message: arrow_flight::IpcMessage = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
                .try_into()
                .map_err(|e: datafusion::arrow::error::ArrowError| Status::internal(e.to_string()))?;
            Ok(message.0)
        };
        let parameters = frame
            .logical_plan()
            .get_parameter_types()
            .map_err(|e| status(e.into()))?;
        let mut names: Vec<&String> = parameters.keys().collect();
        names.sort_by_key(|n| n.trim_start_matches('$').parse::<usize>().unwrap_or(usize::MAX));
        let parameter_schema = datafusion::arrow::datatypes::Schema::new(
            names
                .iter()
                .map(|n| {
                    let ty = parameters[*n]
                        .clone()
                        .unwrap_or(datafusion::arrow::datatypes::DataType::Null);
                    datafusion::arrow::datatypes::Field::new(n.as_str(), ty, true)
                })
                .collect::<Vec<_>>(),
        );
        let handle = format!("{}:{}", fresh_id(), query.query).into_bytes();
        self.prepared.open(&tenant, handle.clone())?;
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: handle.into(),
            dataset_schema: ipc(frame.schema().as_arrow())?,
            parameter_schema: ipc(&parameter_schema)?,
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        self.prepared
            .close(&tenant_of(&request), query.prepared_statement_handle.as_ref());
        Ok(())
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let tenant = tenant_of(&request);
        let flight_data = request.into_inner().map_err(|e| FlightError::Tonic(Box::new(e)));
        let batches: Vec<RecordBatch> = FlightRecordBatchStream::new_from_flight_data(flight_data)
            .try_collect()
            .await
            .map_err(|e| Status::invalid_argument(format!("bad parameters: {e}")))?;
        let mut values = Vec::new();
        if let Some(batch) = batches.iter().find(|b| b.num_rows() > 0) {
            for column in batch.columns() {
                values.push(
                    datafusion::common::ScalarValue::try_from_array(column, 0)
                        .map_err(|e| Status::invalid_argument(e.to_string()))?,
                );
            }
        }
        let handle = query.prepared_statement_handle.to_vec();
        self.prepared.bind(&tenant, &handle, values)?;
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(handle.into()),
        })
    }

    async fn get_flight_info_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let frame = self
            .prepared_plan(&tenant_of(&request), &query.prepared_statement_handle)
            .await?;
        let schema = frame.schema().as_arrow().clone();
        metadata_info(&schema, &query, request)
    }

    async fn do_get_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<Boxed<FlightData>>, Status> {
        let tenant = tenant_of(&request);
        let handle = &query.prepared_statement_handle;
        let text = String::from_utf8_lossy(handle);
        let frame = self.prepared_plan(&tenant, handle);
        Ok(Response::new(self.queries.run(&tenant, &text, frame).await?))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

#[tonic::async_trait]
impl FlightService for TracehouseFlight {
    type HandshakeStream = Boxed<HandshakeResponse>;
    type ListFlightsStream = Boxed<FlightInfo>;
    type DoGetStream = Boxed<FlightData>;
    type DoPutStream = Boxed<PutResult>;
    type DoActionStream = Boxed<arrow_flight::Result>;
    type ListActionsStream = Boxed<ActionType>;
    type DoExchangeStream = Boxed<FlightData>;

    async fn do_get(&self, mut request: Request<Ticket>) -> Result<Response<Self::DoGetStream>, Status> {
        self.auth.authorize(&mut request)?;
        if is_flight_sql(&request.get_ref().ticket) {
            return FlightService::do_get(&self.sql, request).await;
        }
        let tenant = tenant_of(&request);
        let ticket = &request.get_ref().ticket;
        let text = String::from_utf8_lossy(ticket);
        let frame = self.queries.plan(&tenant, ticket);
        Ok(Response::new(self.queries.run(&tenant, &text, frame).await?))
    }

    async fn get_flight_info(&self, mut request: Request<FlightDescriptor>) -> Result<Response<FlightInfo>, Status> {
        self.auth.authorize(&mut request)?;
        if is_flight_sql(&request.get_ref().cmd) {
            return FlightService::get_flight_info(&self.sql, request).await;
        }
        let tenant = tenant_of(&request);
        let descriptor = request.into_inner();
        let frame = self.queries.plan(&tenant, &descriptor.cmd).await?;
        let ticket = descriptor.cmd.to_vec();
        let info = Queries::info(frame.schema().as_arrow(), descriptor, ticket)?;
        Ok(Response::new(info))
    }

    async fn get_schema(&self, mut request: Request<FlightDescriptor>) -> Result<Response<SchemaResult>, Status> {
        self.auth.authorize(&mut request)?;
        let tenant = tenant_of(&request);
        let frame = self.queries.plan(&tenant, &request.get_ref().cmd).await?;
        let schema = frame.schema().as_arrow().clone();
        let result = SchemaAsIpc::new(&schema, &IpcWriteOptions::default())
            .try_into()
            .map_err(|e: datafusion::arrow::error::ArrowError| Status::internal(e.to_string()))?;
        Ok(Response::new(result))
    }

    /// Logs in: with auth on, valid credentials get `authorization: Bearer <token>` back (in
    /// the response headers, where Flight clients look, and as the payload).
    async fn handshake(
        &self,
        mut request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        let Some(token) = self.auth.handshake(&mut request)? else {
            return Ok(Response::new(Box::pin(futures::stream::empty())));
        };
        let reply = HandshakeResponse {
            protocol_version: 0,
            payload: token.clone().into_bytes().into(),
        };
        let mut response: Response<Self::HandshakeStream> =
            Response::new(Box::pin(futures::stream::once(async move { Ok(reply) })));
        let header = format!("Bearer {token}")
            .parse()
            .map_err(|_| Status::internal("token is not a valid header"))?;
        response.metadata_mut().insert("authorization", header);
        Ok(response)
    }

    async fn list_flights(&self, mut request: Request<Criteria>) -> Result<Response<Self::ListFlightsStream>, Status> {
        self.auth.authorize(&mut request)?;
        Ok(Response::new(Box::pin(futures::stream::empty())))
    }

    async fn poll_flight_info(&self, mut request: Request<FlightDescriptor>) -> Result<Response<PollInfo>, Status> {
        self.auth.authorize(&mut request)?;
        Err(Status::unimplemented("poll_flight_info: use get_flight_info"))
    }

    async fn do_put(&self, mut request: Request<Streaming<FlightData>>) -> Result<Response<Self::DoPutStream>, Status> {
        self.auth.authorize(&mut request)?;
        // Only Flight SQL uses do_put here (binding parameters); spans arrive over OTLP.
        FlightService::do_put(&self.sql, request).await
    }

    async fn do_action(&self, mut request: Request<Action>) -> Result<Response<Self::DoActionStream>, Status> {
        self.auth.authorize(&mut request)?;
        FlightService::do_action(&self.sql, request).await
    }

    async fn list_actions(&self, mut request: Request<Empty>) -> Result<Response<Self::ListActionsStream>, Status> {
        self.auth.authorize(&mut request)?;
        FlightService::list_actions(&self.sql, request).await
    }

    async fn do_exchange(
        &self,
        mut request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        self.auth.authorize(&mut request)?;
        Err(Status::unimplemented("do_exchange"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_are_sql_or_traceql() {
        assert_eq!(query_sql(b" SELECT 1 ").unwrap(), "SELECT 1");
        assert_eq!(
            query_sql(b"{ status = error }").unwrap(),
            "SELECT * FROM traceql('{ status = error }')"
        );
        assert_eq!(
            query_sql(b"traceql: { .a = 'x' }").unwrap(),
            "SELECT * FROM traceql('{ .a = ''x'' }')"
        );
        assert_eq!(query_sql(b"").unwrap_err().code(), tonic::Code::InvalidArgument);
        assert_eq!(query_sql(&[0xff]).unwrap_err().code(), tonic::Code::InvalidArgument);
    }
}
