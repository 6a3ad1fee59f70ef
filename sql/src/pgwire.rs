//! The Postgres wire server: datafusion-postgres's handlers, one per tenant, behind a router
//! that picks the tenant from the startup `database` parameter (`psql -d <tenant>`).
//!
//! Authentication is open by default (any user, no password), as Tempo's API is; with users
//! configured, every login needs one of them and its password, checked with SCRAM-SHA-256.

use std::collections::HashMap;
use std::fmt::Debug;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use datafusion_postgres::DfSessionService;
use futures::Sink;
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

use tracehouse_warehouse::storage::DEFAULT_TENANT;

use crate::QueryEngine;
use crate::errors::to_pg_error;

/// Settings of the Postgres server.
#[derive(Debug, Clone)]
pub struct PgServerConfig {
    pub listen: SocketAddr,
    /// User name to password; empty means no authentication.
    pub users: HashMap<String, String>,
    /// Connections served at once; further ones are refused.
    pub max_connections: usize,
}

type DfStatement = <DfSessionService as ExtendedQueryHandler>::Statement;

/// Routes each query to its tenant's datafusion-postgres service.
pub struct TenantRouter {
    engine: Arc<QueryEngine>,
    services: RwLock<HashMap<String, Arc<DfSessionService>>>,
    parser: Arc<RouterParser>,
}

impl TenantRouter {
    fn new(engine: Arc<QueryEngine>) -> Arc<Self> {
        Arc::new_cyclic(|weak| Self {
            engine,
            services: RwLock::new(HashMap::new()),
            parser: Arc::new(RouterParser { router: weak.clone() }),
        })
    }

    async fn service<C: ClientInfo + ?Sized>(&self, client: &C) -> PgWireResult<Arc<DfSessionService>> {
        let tenant = tenant_of(client);
        if let Some(s) = self.services.read().expect("services lock").get(&tenant) {
            return Ok(s.clone());
        }
        let ctx = self
            .engine
            .context(&tenant)
            .await
            .map_err(|e| to_pg_error(PgWireError::ApiError(Box::new(e))))?;
        let service = Arc::new(session_service(ctx));
        let mut services = self.services.write().expect("services lock");
        Ok(services.entry(tenant).or_insert(service).clone())
    }
}

/// The tenant a client asked for: its database, else its user name's default, else the
/// default tenant. `postgres` (libpq's default database) means the default tenant.
fn tenant_of<C: ClientInfo + ?Sized>(client: &C) -> String {
    let md = client.metadata();
    let db = md.get(METADATA_DATABASE).map(String::as_str).unwrap_or("");
    if db.is_empty() || db == "postgres" {
        DEFAULT_TENANT.to_string()
    } else {
        db.to_string()
    }
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
        let service = self.service(client).await?;
        SimpleQueryHandler::do_query(service.as_ref(), client, query)
            .await
            .map_err(to_pg_error)
    }
}

/// Parses with the tenant's parser; statement metadata needs no tenant.
pub struct RouterParser {
    router: std::sync::Weak<TenantRouter>,
}

#[async_trait]
impl QueryParser for RouterParser {
    type Statement = DfStatement;

    async fn parse_sql<C>(&self, client: &C, sql: &str, types: &[Option<Type>]) -> PgWireResult<Option<Self::Statement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
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
        let router = self
            .router
            .upgrade()
            .ok_or_else(|| PgWireError::ApiError("server is shutting down".into()))?;
        router.any_parser().get_parameter_types(stmt)
    }

    fn get_result_schema(
        &self,
        stmt: &Self::Statement,
        column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        let router = self
            .router
            .upgrade()
            .ok_or_else(|| PgWireError::ApiError("server is shutting down".into()))?;
        router.any_parser().get_result_schema(stmt, column_format)
    }
}

impl TenantRouter {
    /// A parser for tenant-independent statement metadata (types and schemas come from the
    /// already planned statement).
    fn any_parser(&self) -> Arc<datafusion_postgres::Parser> {
        if let Some(s) = self.services.read().expect("services lock").values().next() {
            return s.query_parser();
        }
        session_service(Arc::new(datafusion::prelude::SessionContext::new())).query_parser()
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
        ExtendedQueryHandler::do_query(service.as_ref(), client, portal, max_rows)
            .await
            .map_err(to_pg_error)
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
    users: HashMap<String, String>,
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
            gen_salted_password(password, &salt, SCRAM_ITERATIONS),
        ))
    }
}

/// Open or SCRAM startup, chosen by configuration.
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

/// The handlers pgwire asks for.
pub struct Handlers {
    router: Arc<TenantRouter>,
    startup: Arc<Startup>,
    cancel: Arc<DefaultCancelHandler>,
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

impl Handlers {
    /// Handlers serving `engine` with `config`'s authentication.
    pub fn new(engine: Arc<QueryEngine>, config: &PgServerConfig) -> Self {
        let connections = Arc::new(ConnectionManager::new());
        let startup = if config.users.is_empty() {
            Startup::Open(OpenStartup {
                connections: connections.clone(),
            })
        } else {
            let source = Arc::new(UserPasswords {
                users: config.users.clone(),
            });
            Startup::Scram(
                SASLAuthStartupHandler::new(Arc::new(DefaultServerParameterProvider::default()))
                    .with_scram(ScramAuth::new(source))
                    .with_connection_manager(connections.clone()),
            )
        };
        Self {
            router: TenantRouter::new(engine),
            startup: Arc::new(startup),
            cancel: Arc::new(DefaultCancelHandler::new(connections)),
        }
    }
}

/// Binds the listener (so a bad address fails at start) and returns it.
pub async fn bind(config: &PgServerConfig) -> std::io::Result<TcpListener> {
    TcpListener::bind(config.listen).await
}

/// Serves connections on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    handlers: Arc<Handlers>,
    max_connections: usize,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let limiter = Arc::new(Semaphore::new(max_connections.max(1)));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        let (socket, addr) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "postgres accept failed");
                continue;
            }
        };
        let Ok(permit) = limiter.clone().try_acquire_owned() else {
            tracing::warn!(%addr, max_connections, "postgres connection refused: too many connections");
            continue;
        };
        let handlers = handlers.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = pgwire::tokio::process_socket(socket, None, handlers).await {
                tracing::debug!(%addr, error = %e, "postgres connection ended with an error");
            }
        });
    }
}

/// A tenant's pgwire session service: datafusion-postgres's own hooks (cursors, `SET`/`SHOW`,
/// transactions), then [`NestedAsJson`].
fn session_service(ctx: Arc<datafusion::prelude::SessionContext>) -> DfSessionService {
    use datafusion_postgres::hooks::{
        cursor::CursorStatementHook, set_show::SetShowHook, transactions::TransactionStatementHook,
    };
    DfSessionService::new_with_hooks(
        ctx,
        vec![
            Arc::new(CursorStatementHook),
            Arc::new(SetShowHook),
            Arc::new(TransactionStatementHook),
            Arc::new(NestedAsJson),
        ],
    )
}

/// Sends columns that Postgres has no type for (Arrow maps, and lists or structs holding
/// them: the attribute maps, `events`, `links`) as JSON text, so `SELECT *` works over the
/// Postgres wire. Queries without such columns take datafusion-postgres's own path.
struct NestedAsJson;

/// The plan of a query statement with every column the Postgres wire cannot carry wrapped in
/// `to_json(...)`, and whether anything was wrapped; `None` for other statements and for
/// queries that fail to plan (the default path reports the error).
async fn json_plan(
    statement: &datafusion::sql::sqlparser::ast::Statement,
    ctx: &datafusion::prelude::SessionContext,
) -> Option<(datafusion::logical_expr::LogicalPlan, bool)> {
    use datafusion::logical_expr::{Expr, LogicalPlanBuilder};
    if !matches!(statement, datafusion::sql::sqlparser::ast::Statement::Query(_)) {
        return None;
    }
    let plan = ctx
        .state()
        .statement_to_plan(datafusion::sql::parser::Statement::Statement(Box::new(
            statement.clone(),
        )))
        .await
        .ok()?;
    let unsupported = |f: &datafusion::arrow::datatypes::Field| {
        datafusion_postgres::arrow_pg::datatypes::into_pg_type(f.data_type()).is_err()
    };
    if !plan.schema().fields().iter().any(|f| unsupported(f)) {
        return Some((plan, false));
    }
    let to_json = datafusion::logical_expr::ScalarUDF::from(crate::udf::ToJsonUdf::new());
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
    let wrapped = LogicalPlanBuilder::from(plan).project(columns).ok()?.build().ok()?;
    Some((wrapped, true))
}

#[async_trait]
impl datafusion_postgres::QueryHook for NestedAsJson {
    async fn handle_simple_query(
        &self,
        statement: &datafusion::sql::sqlparser::ast::Statement,
        ctx: &datafusion::prelude::SessionContext,
        client: &mut dyn datafusion_postgres::hooks::HookClient,
    ) -> Option<PgWireResult<Response>> {
        // Plain queries keep datafusion-postgres's own path (and its statement timeout).
        let (plan, true) = json_plan(statement, ctx).await? else {
            return None;
        };
        let run = async {
            let frame = ctx
                .execute_logical_plan(plan)
                .await
                .map_err(|e| PgWireError::ApiError(Box::new(e)))?;
            let options = Arc::new(pgwire::types::format::FormatOptions::from_client_metadata(
                client.metadata(),
            ));
            let response = datafusion_postgres::arrow_pg::datatypes::df::encode_dataframe(
                frame,
                &Format::UnifiedText,
                Some(options),
            )
            .await?;
            Ok(Response::Query(response))
        };
        Some(run.await)
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &datafusion::sql::sqlparser::ast::Statement,
        ctx: &datafusion::prelude::SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<datafusion::logical_expr::LogicalPlan>> {
        // The plan, wrapped or not, so the parser does not plan the statement again.
        json_plan(statement, ctx).await.map(|(plan, _)| Ok(plan))
    }

    async fn handle_extended_query(
        &self,
        _statement: &datafusion::sql::sqlparser::ast::Statement,
        _plan: &datafusion::logical_expr::LogicalPlan,
        _params: &datafusion::common::ParamValues,
        _ctx: &datafusion::prelude::SessionContext,
        _client: &mut dyn datafusion_postgres::hooks::HookClient,
    ) -> Option<PgWireResult<Response>> {
        None
    }
}
