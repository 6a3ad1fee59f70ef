//! The Postgres wire server: datafusion-postgres's handlers, one per tenant, behind a router
//! that picks the tenant from the startup `database` parameter (`psql -d <tenant>`).
//!
//! Authentication is open by default (any user, no password), as Tempo's API is; with users
//! configured, every login needs one of them and its password, checked with SCRAM-SHA-256 by a
//! handler made for each connection (SCRAM keeps per-login state). A user may be bound to a
//! tenant: it then reads only that tenant, whatever database it asks for.
//!
//! A protocol front, a peer of `flight` and `tempo-api`: the engine crate (`tracehouse-sql`)
//! knows no Postgres wire; this crate knows no other front.
//!
//! Every statement is checked by [`tracehouse_sql::guard`] before datafusion-postgres sees it: queries
//! are planned by the engine (off the async runtime, read-only), allow-listed `SET`s change only
//! the connection's own metadata, and everything else is refused with SQLSTATE 42501. Result
//! rows stream under the statement timeout (`SET statement_timeout`, at most the engine's
//! `query_timeout`) and stop on a CancelRequest or when the client goes away. Connections past
//! `max_connections` get SQLSTATE 53300; idle ones are closed after `idle_timeout`.

use std::collections::HashMap;
use std::fmt::Debug;
use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion_postgres::DfSessionService;
use futures::{FutureExt, Sink};
use pgwire::api::auth::noop::NoopStartupHandler;
use pgwire::api::auth::sasl::SASLAuthStartupHandler;
use pgwire::api::auth::sasl::scram::{SCRAM_ITERATIONS, ScramAuth, gen_salted_password};
use pgwire::api::auth::{AuthSource, DefaultServerParameterProvider, LoginInfo, Password, StartupHandler};
use pgwire::api::cancel::DefaultCancelHandler;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{FieldInfo, Response};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, ConnectionManager, METADATA_DATABASE, PgWireServerHandlers, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use tracehouse_sql::DEFAULT_TENANT;

use tracehouse_sql::QueryEngine;
use tracehouse_sql::admission::{Admitted, Front, Outcome};

/// Settings of the Postgres server.
#[derive(Debug, Clone)]
pub struct PgServerConfig {
    pub listen: SocketAddr,
    /// User name to its password and tenant; empty means no authentication.
    pub users: HashMap<String, PgUser>,
    /// Connections served at once; further ones are refused with SQLSTATE 53300.
    pub max_connections: usize,
    /// A connection with no query running for this long is closed.
    pub idle_timeout: std::time::Duration,
}

/// One configured Postgres user.
#[derive(Debug, Clone)]
pub struct PgUser {
    pub password: String,
    /// When set, the user reads only this tenant.
    pub tenant: Option<String>,
}

type DfStatement = <DfSessionService as ExtendedQueryHandler>::Statement;

/// What the server knows of each open connection, by the client's address: the query running
/// (to cancel it), its pid and secret key (for CancelRequest), and when it was last busy.
#[derive(Default)]
pub struct Connections {
    by_addr: std::sync::Mutex<HashMap<SocketAddr, Conn>>,
}

struct Conn {
    key: Option<(i32, Vec<u8>)>,
    running: Option<tokio_util::sync::CancellationToken>,
    last_active: std::time::Instant,
}

impl Conn {
    fn new() -> Self {
        Self {
            key: None,
            running: None,
            last_active: std::time::Instant::now(),
        }
    }
}

impl Connections {
    fn open(&self, addr: SocketAddr) {
        self.by_addr.lock().expect("connections lock").insert(addr, Conn::new());
    }

    fn close(&self, addr: &SocketAddr) {
        if let Some(c) = self.by_addr.lock().expect("connections lock").remove(addr)
            && let Some(token) = c.running
        {
            token.cancel();
        }
    }

    /// A fresh cancel token for the query `client` starts now.
    fn start_query<C: ClientInfo + ?Sized>(&self, client: &C) -> tokio_util::sync::CancellationToken {
        let token = tokio_util::sync::CancellationToken::new();
        let (pid, secret) = client.pid_and_secret_key();
        let mut conns = self.by_addr.lock().expect("connections lock");
        let conn = conns.entry(client.socket_addr()).or_insert_with(Conn::new);
        conn.key = Some((pid, secret.to_bytes().to_vec()));
        conn.running = Some(token.clone());
        conn.last_active = std::time::Instant::now();
        token
    }

    fn touch(&self, addr: &SocketAddr) {
        if let Some(c) = self.by_addr.lock().expect("connections lock").get_mut(addr) {
            c.last_active = std::time::Instant::now();
        }
    }

    /// Cancels the running query of the connection with this pid and secret key.
    fn cancel(&self, pid: i32, secret: &[u8]) -> bool {
        let conns = self.by_addr.lock().expect("connections lock");
        let found = conns
            .values()
            .find(|c| c.key.as_ref().is_some_and(|(p, s)| *p == pid && s.as_slice() == secret));
        match found.and_then(|c| c.running.clone()) {
            Some(token) => {
                token.cancel();
                true
            }
            None => false,
        }
    }

    /// `true` when `addr` has been idle (no rows streaming, nothing asked) for `idle`.
    fn is_idle(&self, addr: &SocketAddr, idle: std::time::Duration) -> bool {
        let conns = self.by_addr.lock().expect("connections lock");
        conns
            .get(addr)
            .is_some_and(|c| c.running.as_ref().is_none_or(|t| t.is_cancelled()) && c.last_active.elapsed() >= idle)
    }
}

/// Routes each query to its tenant's datafusion-postgres service, after [`guard`] accepted it.
pub struct TenantRouter {
    engine: Arc<QueryEngine>,
    users: HashMap<String, PgUser>,
    connections: Arc<Connections>,
    parser: Arc<RouterParser>,
}

impl TenantRouter {
    fn new(engine: Arc<QueryEngine>, users: HashMap<String, PgUser>, connections: Arc<Connections>) -> Arc<Self> {
        Arc::new_cyclic(|weak| Self {
            engine,
            users,
            connections,
            parser: Arc::new(RouterParser {
                router: weak.clone(),
                metadata: DfSessionService::new(Arc::new(datafusion::prelude::SessionContext::new())).query_parser(),
            }),
        })
    }

    /// The session service of the client's tenant. Services are cheap and made per call: the
    /// per-connection state lives in the client, none in the service.
    async fn service<C: ClientInfo + ?Sized>(&self, client: &C) -> PgWireResult<DfSessionService> {
        let tenant = tenant_of(client, &self.users)?;
        let ctx = self
            .engine
            .context(&tenant)
            .await
            .map_err(|e| to_pg_error(PgWireError::ApiError(Box::new(e))))?;
        Ok(session_service(ctx, self.engine.clone()))
    }

    /// A slot for a query of `client`'s tenant ([`tracehouse_sql::admission`]), held until
    /// its rows end.
    fn admit<C: ClientInfo + ?Sized>(&self, client: &C, text: &str) -> PgWireResult<Arc<Admitted>> {
        let tenant = tenant_of(client, &self.users)?;
        let ticket = self.engine.admit(Front::Postgres, &tenant, text);
        Ok(Arc::new(
            ticket.map_err(|e| to_pg_error(PgWireError::ApiError(Box::new(e))))?,
        ))
    }

    /// How long a statement of `client` may run: its `statement_timeout`, at most the engine's.
    fn timeout<C: ClientInfo + ?Sized>(&self, client: &C) -> std::time::Duration {
        let max = self.engine.config().query_timeout;
        client
            .metadata()
            .get(METADATA_STATEMENT_TIMEOUT)
            .and_then(|ms| ms.parse::<u64>().ok())
            .filter(|&ms| ms > 0)
            .map_or(max, |ms| std::time::Duration::from_millis(ms).min(max))
    }

    /// `response`'s rows, ended by the deadline or `cancel`; the connection counts as busy
    /// until they end.
    fn bound(
        &self,
        response: Response,
        deadline: tokio::time::Instant,
        timeout: std::time::Duration,
        cancel: &tokio_util::sync::CancellationToken,
        addr: SocketAddr,
        ticket: &Arc<Admitted>,
    ) -> Response {
        let Response::Query(mut query) = response else {
            return response;
        };
        let rows = std::mem::replace(&mut query.data_rows, Box::pin(futures::stream::empty()));
        let done = QueryDone {
            cancel: cancel.clone(),
            connections: self.connections.clone(),
            addr,
            _ticket: ticket.clone(),
        };
        let marking = ticket.clone();
        let stop = stop_signal(deadline, timeout, cancel.clone())
            .map(move |e| marked::<()>(&marking, Err(e)).expect_err("an error stays an error"));
        query.data_rows = Box::pin(tracehouse_sql::stop::UntilStopped::new(rows, stop, done));
        Response::Query(query)
    }
}

/// Marks a connection's query finished (idle from now) when its rows are dropped.
struct QueryDone {
    cancel: tokio_util::sync::CancellationToken,
    connections: Arc<Connections>,
    addr: SocketAddr,
    /// The query's admission slot, released (and its metrics recorded) with the rows.
    _ticket: Arc<Admitted>,
}

impl Drop for QueryDone {
    fn drop(&mut self) {
        // Cancelling a finished query's token only marks it over.
        self.cancel.cancel();
        self.connections.touch(&self.addr);
    }
}

/// `result`, with its failure (by SQLSTATE) set as the outcome of `ticket`.
fn marked<T>(ticket: &Admitted, result: PgWireResult<T>) -> PgWireResult<T> {
    if let Err(e) = &result {
        let outcome = match e {
            PgWireError::UserError(info) => Outcome::of_sqlstate(&info.code),
            _ => Outcome::ServerError,
        };
        ticket.set(outcome);
    }
    result
}

/// The error that stops a statement: its deadline, or a cancel.
async fn stop_signal(
    deadline: tokio::time::Instant,
    timeout: std::time::Duration,
    cancel: tokio_util::sync::CancellationToken,
) -> PgWireError {
    let e = tracehouse_sql::stop::signal(deadline, timeout, cancel).await;
    to_pg_error(PgWireError::ApiError(Box::new(e)))
}

/// datafusion-postgres keeps a session's `statement_timeout` here, in milliseconds.
const METADATA_STATEMENT_TIMEOUT: &str = "statement_timeout_ms";

/// The tenant a client reads: a tenant-bound user's tenant (asking for another database is
/// refused), else its database, else the default tenant. `postgres` (libpq's default
/// database) means the default tenant.
fn tenant_of<C: ClientInfo + ?Sized>(client: &C, users: &HashMap<String, PgUser>) -> PgWireResult<String> {
    let md = client.metadata();
    let db = md.get(METADATA_DATABASE).map(String::as_str).unwrap_or("");
    let asked = (!db.is_empty() && db != "postgres").then_some(db);
    let user = md.get(pgwire::api::METADATA_USER).map(String::as_str).unwrap_or("");
    match (users.get(user).and_then(|u| u.tenant.as_deref()), asked) {
        (Some(bound), Some(asked)) if asked != bound => Err(PgWireError::UserError(Box::new(ErrorInfo::new(
            "FATAL".into(),
            "42501".into(),
            format!("permission denied: user \"{user}\" may read only tenant \"{bound}\", not \"{asked}\""),
        )))),
        (Some(bound), _) => Ok(bound.to_string()),
        (None, Some(asked)) => Ok(asked.to_string()),
        (None, None) => Ok(DEFAULT_TENANT.to_string()),
    }
}

/// Checks a SQL text with [`guard`] before anything else parses it: limits first, then the
/// read-only policy for every statement in it.
fn check_sql(sql: &str) -> PgWireResult<()> {
    let statements = tracehouse_sql::guard::parse(sql).map_err(refused)?;
    for s in &statements {
        tracehouse_sql::guard::classify(s).map_err(refused)?;
    }
    Ok(())
}

fn refused(r: tracehouse_sql::guard::Refusal) -> PgWireError {
    to_pg_error(PgWireError::ApiError(Box::new(tracehouse_sql::Error::Refused(r))))
}

#[async_trait]
impl SimpleQueryHandler for TenantRouter {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        check_sql(query)?;
        let service = self.service(client).await?;
        let ticket = self.admit(client, query)?;
        let cancel = self.connections.start_query(client);
        let started = tokio::time::Instant::now();
        let timeout = self.timeout(client);
        let run = SimpleQueryHandler::do_query(&service, client, query);
        let responses = tokio::select! {
            r = run => marked(&ticket, r.map_err(to_pg_error))?,
            e = stop_signal(started + timeout, timeout, cancel.clone()) => return marked(&ticket, Err(e)),
        };
        // A `SET statement_timeout` earlier in the same text applies to the rows after it.
        let timeout = self.timeout(client);
        let deadline = started + timeout;
        let addr = client.socket_addr();
        Ok(responses
            .into_iter()
            .map(|r| self.bound(r, deadline, timeout, &cancel, addr, &ticket))
            .collect())
    }
}

/// Parses with the tenant's parser; statement metadata needs no tenant.
pub struct RouterParser {
    router: std::sync::Weak<TenantRouter>,
    /// Reads types and schemas of already planned statements; built once.
    metadata: Arc<datafusion_postgres::Parser>,
}

#[async_trait]
impl QueryParser for RouterParser {
    type Statement = DfStatement;

    async fn parse_sql<C>(&self, client: &C, sql: &str, types: &[Option<Type>]) -> PgWireResult<Option<Self::Statement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        check_sql(sql)?;
        let router = self
            .router
            .upgrade()
            .ok_or_else(|| PgWireError::ApiError("server is shutting down".into()))?;
        let service = router.service(client).await?;
        service
            .query_parser()
            .parse_sql(client, sql, types)
            .await
            .map_err(to_pg_error)
    }

    fn get_parameter_types(&self, stmt: &Self::Statement) -> PgWireResult<Vec<Type>> {
        self.metadata.get_parameter_types(stmt)
    }

    fn get_result_schema(
        &self,
        stmt: &Self::Statement,
        column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        self.metadata.get_result_schema(stmt, column_format)
    }
}

#[async_trait]
impl ExtendedQueryHandler for TenantRouter {
    type Statement = DfStatement;
    type QueryParser = RouterParser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        self.parser.clone()
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
        max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let service = self.service(client).await?;
        let ticket = self.admit(client, &portal.statement.statement.0)?;
        let cancel = self.connections.start_query(client);
        let timeout = self.timeout(client);
        let deadline = tokio::time::Instant::now() + timeout;
        let run = ExtendedQueryHandler::do_query(&service, client, portal, max_rows);
        let response = tokio::select! {
            r = run => marked(&ticket, r.map_err(to_pg_error))?,
            e = stop_signal(deadline, timeout, cancel.clone()) => return marked(&ticket, Err(e)),
        };
        let addr = client.socket_addr();
        Ok(self.bound(response, deadline, timeout, &cancel, addr, &ticket))
    }
}

/// Accepts everybody (no users configured).
pub struct OpenStartup {
    connections: Arc<ConnectionManager>,
}

impl NoopStartupHandler for OpenStartup {
    fn connection_manager(&self) -> Option<Arc<ConnectionManager>> {
        Some(self.connections.clone())
    }
}

/// Passwords of configured users, served salted for SCRAM.
#[derive(Debug)]
struct UserPasswords {
    users: HashMap<String, PgUser>,
}

#[async_trait]
impl AuthSource for UserPasswords {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        let user = login.user().unwrap_or("");
        let password = self.users.get(user).ok_or_else(|| {
            PgWireError::UserError(Box::new(ErrorInfo::new(
                "FATAL".into(),
                "28P01".into(),
                format!("password authentication failed for user \"{user}\""),
            )))
        })?;
        // A per-user salt; SCRAM's proof still changes with every connection's nonce.
        let salt = format!("tracehouse:{user}").into_bytes();
        Ok(Password::new(
            Some(salt.clone()),
            gen_salted_password(&password.password, &salt, SCRAM_ITERATIONS),
        ))
    }
}

/// Open or SCRAM startup, chosen by configuration; a SCRAM handler holds one login's state,
/// so each connection gets its own.
pub enum Startup {
    Open(OpenStartup),
    Scram(SASLAuthStartupHandler<DefaultServerParameterProvider>),
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(&self, client: &mut C, message: PgWireFrontendMessage) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match self {
            Self::Open(h) => h.on_startup(client, message).await,
            Self::Scram(h) => h.on_startup(client, message).await,
        }
    }
}

/// The handlers pgwire asks for, one set per connection.
pub struct Handlers {
    router: Arc<TenantRouter>,
    startup: Arc<Startup>,
    cancel: Arc<Cancel>,
}

/// A CancelRequest stops the connection's running query (its rows, and so its execution),
/// besides pgwire's own signal.
pub struct Cancel {
    default: DefaultCancelHandler,
    connections: Arc<Connections>,
}

#[async_trait]
impl pgwire::api::cancel::CancelHandler for Cancel {
    async fn on_cancel_request(&self, request: pgwire::messages::cancel::CancelRequest) {
        let found = self.connections.cancel(request.pid, &request.secret_key.to_bytes());
        tracing::debug!(pid = request.pid, found, "postgres cancel request");
        self.default.on_cancel_request(request).await;
    }
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.router.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.router.clone()
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        self.startup.clone()
    }

    fn cancel_handler(&self) -> Arc<impl pgwire::api::cancel::CancelHandler> {
        self.cancel.clone()
    }
}

/// Builds each connection's [`Handlers`] over one engine and configuration.
pub struct Server {
    engine: Arc<QueryEngine>,
    config: PgServerConfig,
    pids: Arc<ConnectionManager>,
    connections: Arc<Connections>,
    router: Arc<TenantRouter>,
}

impl Server {
    /// A server for `engine` with `config`'s authentication and limits.
    pub fn new(engine: Arc<QueryEngine>, config: PgServerConfig) -> Result<Self, String> {
        if config.max_connections == 0 || config.idle_timeout.is_zero() {
            return Err("postgres: max_connections and idle_timeout must be positive".into());
        }
        let connections = Arc::new(Connections::default());
        Ok(Self {
            router: TenantRouter::new(engine.clone(), config.users.clone(), connections.clone()),
            engine,
            config,
            pids: Arc::new(ConnectionManager::new()),
            connections,
        })
    }

    /// The engine behind the server.
    pub fn engine(&self) -> &Arc<QueryEngine> {
        &self.engine
    }

    /// Fresh handlers for one connection (its own SCRAM state).
    fn handlers(&self) -> Handlers {
        let startup = if self.config.users.is_empty() {
            Startup::Open(OpenStartup {
                connections: self.pids.clone(),
            })
        } else {
            let source = Arc::new(UserPasswords {
                users: self.config.users.clone(),
            });
            Startup::Scram(
                SASLAuthStartupHandler::new(Arc::new(DefaultServerParameterProvider::default()))
                    .with_scram(ScramAuth::new(source))
                    .with_connection_manager(self.pids.clone()),
            )
        };
        Handlers {
            router: self.router.clone(),
            startup: Arc::new(startup),
            cancel: Arc::new(Cancel {
                default: DefaultCancelHandler::new(self.pids.clone()),
                connections: self.connections.clone(),
            }),
        }
    }
}

/// Binds the listener (so a bad address fails at start) and returns it.
pub async fn bind(config: &PgServerConfig) -> std::io::Result<TcpListener> {
    TcpListener::bind(config.listen).await
}

/// What a refused connection reads: a Postgres ErrorResponse, SQLSTATE 53300.
fn too_many_connections() -> Vec<u8> {
    let mut fields = Vec::new();
    for (tag, value) in [
        (b'S', "FATAL"),
        (b'V', "FATAL"),
        (b'C', "53300"),
        (b'M', "sorry, too many clients already"),
    ] {
        fields.push(tag);
        fields.extend_from_slice(value.as_bytes());
        fields.push(0);
    }
    fields.push(0);
    let mut message = vec![b'E'];
    message.extend_from_slice(&((fields.len() + 4) as u32).to_be_bytes());
    message.extend_from_slice(&fields);
    message
}

/// Serves connections on `listener` until `shutdown` resolves.
pub async fn serve(listener: TcpListener, server: Arc<Server>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let limiter = Arc::new(Semaphore::new(server.config.max_connections));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        let (mut socket, addr) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "postgres accept failed");
                continue;
            }
        };
        let Ok(permit) = limiter.clone().try_acquire_owned() else {
            tracing::warn!(%addr, max_connections = server.config.max_connections, "postgres connection refused: too many connections");
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                let _ = socket.write_all(&too_many_connections()).await;
                let _ = socket.shutdown().await;
            });
            continue;
        };
        let server = server.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let (socket, watch) = match watched(socket) {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(%addr, error = %e, "postgres connection dropped: cannot watch it");
                    return;
                }
            };
            server.connections.open(addr);
            let idle = server.config.idle_timeout;
            let served = pgwire::tokio::process_socket(socket, None, server.handlers());
            tokio::select! {
                r = served => if let Err(e) = r {
                    tracing::debug!(%addr, error = %e, "postgres connection ended with an error");
                },
                _ = idle_watch(&server.connections, addr, idle) => {
                    tracing::debug!(%addr, "postgres connection closed: idle");
                }
                _ = client_gone(&watch) => {
                    tracing::debug!(%addr, "postgres client went away: its query is dropped");
                }
            }
            server.connections.close(&addr);
        });
    }
}

/// The socket, and a second handle on it that only ever peeks, to see the client leave while
/// pgwire is busy running its query (and so not reading).
fn watched(socket: tokio::net::TcpStream) -> std::io::Result<(tokio::net::TcpStream, tokio::net::TcpStream)> {
    let socket = socket.into_std()?;
    let watch = socket.try_clone()?;
    Ok((
        tokio::net::TcpStream::from_std(socket)?,
        tokio::net::TcpStream::from_std(watch)?,
    ))
}

/// Resolves once the client has closed its side of the connection. Data waiting to be read
/// (the client's next message) is left for pgwire and looked at again a little later.
async fn client_gone(watch: &tokio::net::TcpStream) {
    let mut byte = [0u8; 1];
    loop {
        match watch.peek(&mut byte).await {
            Ok(0) | Err(_) => return,
            Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(250)).await,
        }
    }
}

/// Resolves once `addr` has been idle for `idle`.
async fn idle_watch(connections: &Connections, addr: SocketAddr, idle: std::time::Duration) {
    let tick = (idle / 4).clamp(std::time::Duration::from_millis(50), std::time::Duration::from_secs(5));
    loop {
        tokio::time::sleep(tick).await;
        if connections.is_idle(&addr, idle) {
            return;
        }
    }
}

/// A tenant's pgwire session service: [`Guard`] first, then datafusion-postgres's own hooks
/// (cursors, `SET`/`SHOW`, transactions).
fn session_service(ctx: Arc<datafusion::prelude::SessionContext>, engine: Arc<QueryEngine>) -> DfSessionService {
    use datafusion_postgres::hooks::{
        cursor::CursorStatementHook, set_show::SetShowHook, transactions::TransactionStatementHook,
    };
    DfSessionService::new_with_hooks(
        ctx,
        vec![
            Arc::new(Guard { engine }),
            Arc::new(CursorStatementHook),
            Arc::new(SetShowHook),
            Arc::new(TransactionStatementHook),
        ],
    )
}

/// The first hook of every session: refuses what [`tracehouse_sql::guard`] refuses, plans queries
/// through the engine (off the async runtime, read-only) with columns Postgres has no type for
/// (Arrow maps, and lists or structs holding them: the attribute maps, `events`, `links`)
/// wrapped in `to_json(...)` so `SELECT *` works over the wire, and keeps `SET`s that would
/// touch the tenant's shared session (time zone) in the connection's own metadata.
struct Guard {
    engine: Arc<QueryEngine>,
}

/// The engine's plan of a query statement with every column the Postgres wire cannot carry
/// wrapped in `to_json(...)`.
async fn json_plan(
    engine: &QueryEngine,
    statement: &datafusion::sql::sqlparser::ast::Statement,
    ctx: &datafusion::prelude::SessionContext,
) -> PgWireResult<datafusion::logical_expr::LogicalPlan> {
    use datafusion::logical_expr::{Expr, LogicalPlanBuilder};
    let api = |e: tracehouse_sql::Error| to_pg_error(PgWireError::ApiError(Box::new(e)));
    let plan = engine
        .plan_statement(&ctx.state(), statement.clone())
        .await
        .map_err(api)?;
    let unsupported = |f: &datafusion::arrow::datatypes::Field| {
        datafusion_postgres::arrow_pg::datatypes::into_pg_type(f.data_type()).is_err()
    };
    if !plan.schema().fields().iter().any(|f| unsupported(f)) {
        return Ok(plan);
    }
    let to_json = datafusion::logical_expr::ScalarUDF::from(tracehouse_sql::udf::ToJsonUdf::new());
    let columns: Vec<Expr> = plan
        .schema()
        .iter()
        .map(|(qualifier, field)| {
            let column = Expr::Column(datafusion::common::Column::from((qualifier, field)));
            if unsupported(field) {
                to_json.call(vec![column]).alias(field.name())
            } else {
                column
            }
        })
        .collect();
    let wrapped = LogicalPlanBuilder::from(plan)
        .project(columns)
        .and_then(|b| b.build())
        .map_err(|e| api(e.into()))?;
    Ok(wrapped)
}

impl Guard {
    /// Runs a query of the simple protocol: planned by the engine, rows as text.
    async fn simple_query(
        &self,
        statement: &datafusion::sql::sqlparser::ast::Statement,
        ctx: &datafusion::prelude::SessionContext,
        client: &(dyn ClientInfo + Send + Sync),
    ) -> PgWireResult<Response> {
        use datafusion_postgres::arrow_pg::datatypes::{arrow_schema_to_pg_fields, encode_recordbatch};
        use futures::StreamExt;
        let plan = json_plan(&self.engine, statement, ctx).await?;
        let stream = self
            .engine
            .execute(&ctx.state(), plan, &tracehouse_sql::QueryLimits::default())
            .await
            .map_err(|e| to_pg_error(PgWireError::ApiError(Box::new(e))))?;
        let options = Arc::new(pgwire::types::format::FormatOptions::from_client_metadata(
            client.metadata(),
        ));
        let fields = Arc::new(arrow_schema_to_pg_fields(
            stream.schema().as_ref(),
            &Format::UnifiedText,
            Some(options),
        )?);
        let row_fields = fields.clone();
        let rows = stream
            .map(move |batch| {
                let rows: Box<dyn Iterator<Item = PgWireResult<pgwire::messages::data::DataRow>> + Send + Sync> =
                    match batch {
                        Ok(b) => encode_recordbatch(row_fields.clone(), b),
                        Err(e) => Box::new(std::iter::once(Err(to_pg_error(PgWireError::ApiError(Box::new(e)))))),
                    };
                futures::stream::iter(rows)
            })
            .flatten();
        Ok(Response::Query(pgwire::api::results::QueryResponse::new(fields, rows)))
    }

    /// A `SET` that tracehouse answers itself, or `None` for datafusion-postgres's hook (which
    /// keeps the rest of the allow-listed variables in the connection's metadata).
    async fn set(
        &self,
        set: &datafusion::sql::sqlparser::ast::Set,
        client: &mut dyn datafusion_postgres::hooks::HookClient,
    ) -> Option<PgWireResult<Response>> {
        use datafusion::sql::sqlparser::ast::Set;
        let ok = || Some(Ok(Response::Execution(pgwire::api::results::Tag::new("SET"))));
        match tracehouse_sql::guard::set_variable(set)?.as_str() {
            "timezone" | "time zone" => {
                let value = match set {
                    Set::SetTimeZone { value, .. } => value.to_string(),
                    Set::SingleAssignment { values, .. } => values.first()?.to_string(),
                    _ => return None,
                };
                let zone = value.trim_matches(|c| c == '\'' || c == '"').to_string();
                client.metadata_mut().insert("timezone".into(), zone.clone());
                let status = pgwire::messages::startup::ParameterStatus::new("TimeZone".into(), zone);
                if let Err(e) = client.send_message(PgWireBackendMessage::ParameterStatus(status)).await {
                    return Some(Err(e));
                }
                ok()
            }
            "client_encoding" | "client_min_messages" | "standard_conforming_strings" => ok(),
            _ => None,
        }
    }
}

fn refused_statement(statement: &datafusion::sql::sqlparser::ast::Statement) -> Option<PgWireError> {
    tracehouse_sql::guard::classify(statement).err().map(refused)
}

#[async_trait]
impl datafusion_postgres::QueryHook for Guard {
    async fn handle_simple_query(
        &self,
        statement: &datafusion::sql::sqlparser::ast::Statement,
        ctx: &datafusion::prelude::SessionContext,
        client: &mut dyn datafusion_postgres::hooks::HookClient,
    ) -> Option<PgWireResult<Response>> {
        use datafusion::sql::sqlparser::ast::Statement;
        if let Some(e) = refused_statement(statement) {
            return Some(Err(e));
        }
        match statement {
            Statement::Query(_) | Statement::Explain { .. } => Some(self.simple_query(statement, ctx, &*client).await),
            Statement::Set(set) => self.set(set, client).await,
            _ => None,
        }
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &datafusion::sql::sqlparser::ast::Statement,
        ctx: &datafusion::prelude::SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<datafusion::logical_expr::LogicalPlan>> {
        use datafusion::sql::sqlparser::ast::Statement;
        if let Some(e) = refused_statement(statement) {
            return Some(Err(e));
        }
        match statement {
            Statement::Query(_) | Statement::Explain { .. } => Some(json_plan(&self.engine, statement, ctx).await),
            _ => None,
        }
    }

    async fn handle_extended_query(
        &self,
        statement: &datafusion::sql::sqlparser::ast::Statement,
        _plan: &datafusion::logical_expr::LogicalPlan,
        _params: &datafusion::common::ParamValues,
        _ctx: &datafusion::prelude::SessionContext,
        client: &mut dyn datafusion_postgres::hooks::HookClient,
    ) -> Option<PgWireResult<Response>> {
        match statement {
            datafusion::sql::sqlparser::ast::Statement::Set(set) => self.set(set, client).await,
            _ => None,
        }
    }
}

fn user_error(code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new("ERROR".into(), code.into(), message)))
}

/// Gives an `ApiError` from the query layer its SQLSTATE, from the engine's one table
/// ([`tracehouse_sql::errors`]); other errors pass through.
pub fn to_pg_error(error: PgWireError) -> PgWireError {
    use datafusion::error::DataFusionError;
    use datafusion::sql::sqlparser::parser::ParserError;
    use tracehouse_sql::errors::sqlstate;
    match error {
        PgWireError::ApiError(inner) => {
            if let Some(df) = inner.downcast_ref::<DataFusionError>() {
                user_error(sqlstate(df), df.to_string())
            } else if let Some(p) = inner.downcast_ref::<ParserError>() {
                user_error("42601", p.to_string())
            } else if let Some(e) = inner.downcast_ref::<tracehouse_sql::Error>() {
                user_error(e.sqlstate(), e.to_string())
            } else {
                user_error("XX000", inner.to_string())
            }
        }
        other => other,
    }
}
