//! The query engine: per-tenant DataFusion sessions over the warehouse (`spans`, the `traces`
//! view, UDFs, pg_catalog) and the one path every front plans and runs SQL through.
//!
//! That path ([`QueryEngine::plan_sql`], [`QueryEngine::plan_statement`],
//! [`QueryEngine::execute`]) checks the text against [`crate::guard`], plans on a blocking
//! thread (so a slow plan never stalls the async runtime), refuses any plan that is not
//! read-only, and runs it under a deadline and an optional cancel token. Each tenant's session
//! has its own runtime whose object-store registry starts empty (no local file system) and
//! holds only what the tenant's own table registers; all tenants share one memory pool.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::memory_pool::{FairSpillPool, MemoryPool};
use datafusion::execution::object_store::ObjectStoreRegistry;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::sqlparser::ast::Statement;
use datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_pg_catalog::setup_pg_catalog;
use futures::{FutureExt, StreamExt};
use object_store::ObjectStore;
use tokio_util::sync::CancellationToken;
use tracehouse_traceql::plan::metrics::Exemplars;
use tracehouse_warehouse::Warehouse;
use tracehouse_warehouse::provider::SpansTable;
use tracehouse_warehouse::storage::validate_tenant;

use crate::{Error, Result, guard};

/// Settings of the engine.
#[derive(Debug, Clone)]
pub struct QueryEngineConfig {
    /// Memory all running queries may hold together; big sorts and joins spill past it.
    pub max_memory_bytes: usize,
    /// Parallelism of one query.
    pub target_partitions: usize,
    /// Longest a query may plan and run, unless a session sets a shorter `statement_timeout`.
    pub query_timeout: Duration,
    /// Tenant sessions kept; the least recently used one is dropped past this.
    pub max_tenant_sessions: usize,
    /// Per-tenant concurrency and the slow-query log ([`crate::admission`]).
    pub admission: crate::admission::AdmissionConfig,
}

impl Default for QueryEngineConfig {
    fn default() -> Self {
        Self {
            max_memory_bytes: 2 << 30,
            target_partitions: std::thread::available_parallelism().map_or(2, |n| n.get()),
            query_timeout: Duration::from_secs(300),
            max_tenant_sessions: 64,
            admission: crate::admission::AdmissionConfig::default(),
        }
    }
}

/// The `traces` view: one row per trace.
pub const TRACES_VIEW_SQL: &str = "CREATE VIEW traces AS SELECT \
    trace_id, \
    max(CASE WHEN parent_span_id IS NULL THEN service_name END) AS root_service_name, \
    max(CASE WHEN parent_span_id IS NULL THEN name END) AS root_span_name, \
    min(start_time) AS start_time, \
    to_timestamp_nanos(max(end_time_unix_nano)) AS end_time, \
    min(start_time_unix_nano) AS start_time_unix_nano, \
    max(end_time_unix_nano) AS end_time_unix_nano, \
    max(end_time_unix_nano) - min(start_time_unix_nano) AS duration_ns, \
    count(*) AS span_count, \
    sum(CASE WHEN status_code = 'error' THEN 1 ELSE 0 END) AS error_count \
    FROM spans GROUP BY trace_id";

/// How one query may run: its deadline and what cancels it.
#[derive(Debug, Clone, Default)]
pub struct QueryLimits {
    /// Overrides the engine's `query_timeout` when shorter (a session's `statement_timeout`).
    pub timeout: Option<Duration>,
    /// Cancels the query when fired (a pgwire CancelRequest, a client that went away).
    pub cancel: Option<CancellationToken>,
}

/// Hands out each tenant's query session and runs queries.
pub struct QueryEngine {
    warehouse: Arc<Warehouse>,
    config: QueryEngineConfig,
    pool: Arc<dyn MemoryPool>,
    contexts: Mutex<HashMap<String, (Arc<SessionContext>, Instant)>>,
    /// TraceQL search plans prepared before (they hold no tenant data).
    search_plans: crate::search::SearchPlans,
    admission: Arc<crate::admission::Admission>,
}

impl QueryEngine {
    /// An engine over `warehouse`.
    pub fn new(warehouse: Arc<Warehouse>, config: QueryEngineConfig) -> Result<Self> {
        if config.max_tenant_sessions == 0 || config.query_timeout.is_zero() {
            return Err(Error::Config(
                "query engine: max_tenant_sessions and query_timeout must be positive".into(),
            ));
        }
        let admission = Arc::new(crate::admission::Admission::new(config.admission.clone())?);
        Ok(Self {
            warehouse,
            pool: Arc::new(FairSpillPool::new(config.max_memory_bytes)),
            config,
            contexts: Mutex::new(HashMap::new()),
            search_plans: crate::search::SearchPlans::default(),
            admission,
        })
    }

    /// The engine's settings.
    pub fn config(&self) -> &QueryEngineConfig {
        &self.config
    }

    /// The one door of every query of every front: a slot among its tenant's concurrent
    /// queries, its metrics and the slow-query log when the returned ticket drops
    /// ([`crate::admission`]).
    pub fn admit(
        &self,
        front: crate::admission::Front,
        tenant: &str,
        text: &str,
    ) -> Result<crate::admission::Admitted> {
        self.admission.admit(front, tenant, text)
    }

    /// Admission's slots and metrics.
    pub fn admission(&self) -> &Arc<crate::admission::Admission> {
        &self.admission
    }

    /// The memory pool every query draws from.
    pub fn memory_pool(&self) -> &Arc<dyn MemoryPool> {
        &self.pool
    }

    /// The session of `tenant`, created on first use and kept while recently used. Its
    /// default catalog is named after the tenant, with schemas `public` (`spans`, `traces`)
    /// and `pg_catalog`. Creating a session creates nothing on storage.
    pub async fn context(&self, tenant: &str) -> Result<Arc<SessionContext>> {
        if let Some((ctx, used)) = self.contexts.lock().expect("contexts lock").get_mut(tenant) {
            *used = Instant::now();
            return Ok(ctx.clone());
        }
        validate_tenant(tenant)?;
        let ctx = Arc::new(self.build_context(tenant).await?);
        let mut contexts = self.contexts.lock().expect("contexts lock");
        while contexts.len() >= self.config.max_tenant_sessions {
            let oldest = contexts
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(t, _)| t.clone());
            let Some((t, (evicted, _))) = oldest.and_then(|t| contexts.remove_entry(&t)) else {
                break;
            };
            release(&evicted, &t);
        }
        let entry = contexts.entry(tenant.to_string()).or_insert((ctx, Instant::now()));
        Ok(entry.0.clone())
    }

    /// Tenant sessions held now.
    pub fn session_count(&self) -> usize {
        self.contexts.lock().expect("contexts lock").len()
    }

    fn runtime(&self) -> Result<Arc<RuntimeEnv>> {
        Ok(RuntimeEnvBuilder::new()
            .with_memory_pool(self.pool.clone())
            .with_object_store_registry(Arc::new(TenantStores::default()))
            .build_arc()?)
    }

    async fn build_context(&self, tenant: &str) -> Result<SessionContext> {
        let mut config = SessionConfig::new()
            .with_default_catalog_and_schema(tenant, "public")
            .with_create_default_catalog_and_schema(true)
            .with_information_schema(true)
            .with_target_partitions(self.config.target_partitions);
        let options = config.options_mut();
        options.execution.parquet.pushdown_filters = true;
        options.execution.parquet.reorder_filters = true;
        options.execution.parquet.bloom_filter_on_read = true;
        options.sql_parser.recursion_limit = datafusion::config::ConfigNonZeroUsize::try_new(guard::MAX_SQL_NESTING)?;
        // DataFusion 55's `push_down_leaf_projections` fails on plans where a projection renames
        // a qualified column to its own bare name below a struct or map access (TraceQL plans
        // and views over them do); run every other default rule.
        let rules: Vec<_> = datafusion::optimizer::Optimizer::new()
            .rules
            .into_iter()
            .filter(|r| r.name() != "push_down_leaf_projections")
            .collect();
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(self.runtime()?)
            .with_default_features()
            .with_optimizer_rules(rules)
            .build();
        let ctx = SessionContext::new_with_state(state);
        let spans = Arc::new(SpansTable::new(self.warehouse.clone(), tenant));
        ctx.register_table("spans", spans.clone())?;
        ctx.register_udtf("traceql", Arc::new(crate::traceql::TraceqlFunction::new(spans.clone())));
        ctx.register_udtf(
            "traceql_metrics",
            Arc::new(crate::traceql::TraceqlMetricsFunction::new(spans)),
        );
        ctx.sql(TRACES_VIEW_SQL).await?.collect().await?;
        crate::udf::register(&ctx, self.pool.clone());
        setup_pg_catalog(&ctx, tenant, EmptyContextProvider).map_err(|e| *e)?;
        Ok(ctx)
    }

    /// The plan of one SQL query for `tenant`, after every check of [`guard`].
    pub async fn plan_sql(&self, tenant: &str, sql: &str) -> Result<(Arc<SessionContext>, LogicalPlan)> {
        let statement = guard::parse_query(sql)?;
        let ctx = self.context(tenant).await?;
        let plan = self.plan_statement(&ctx.state(), statement).await?;
        Ok((ctx, plan))
    }

    /// Plans an already checked query statement on a blocking thread, within the query
    /// timeout, and refuses any plan that would change state.
    pub async fn plan_statement(&self, state: &SessionState, statement: Statement) -> Result<LogicalPlan> {
        guard::check_depth(&statement)?;
        if guard::classify(&statement)? != guard::Kind::Query {
            return Err(Error::Refused(guard::Refusal::NotAllowed(
                "permission denied: only queries are planned".into(),
            )));
        }
        let planning_state = state.clone();
        let wrapped = datafusion::sql::parser::Statement::Statement(Box::new(statement.clone()));
        let runtime = tokio::runtime::Handle::current();
        let planning = tokio::task::spawn_blocking(move || runtime.block_on(planning_state.statement_to_plan(wrapped)));
        let planned = tokio::time::timeout(self.config.query_timeout, planning)
            .await
            .map_err(|_| Error::Timeout(self.config.query_timeout))?
            .map_err(|e| Error::Internal(format!("planning failed: {e}")))?;
        let plan = match planned {
            Ok(plan) => plan,
            Err(e) if matches!(e.find_root(), DataFusionError::Plan(_)) => {
                return Err(match crate::resolve::unresolved(state, &statement) {
                    Some(sqlstate) => Error::Unresolved { sqlstate, source: e },
                    None => Error::DataFusion(e),
                });
            }
            Err(e) => return Err(e.into()),
        };
        read_only().verify_plan(&plan)?;
        Ok(plan)
    }

    /// Runs `plan` on `ctx`, streaming its batches until the deadline of `limits` (or the
    /// engine's `query_timeout`) passes or its cancel token fires.
    pub async fn execute(
        &self,
        state: &SessionState,
        plan: LogicalPlan,
        limits: &QueryLimits,
    ) -> Result<SendableRecordBatchStream> {
        read_only().verify_plan(&plan)?;
        let timeout = limits
            .timeout
            .map_or(self.config.query_timeout, |t| t.min(self.config.query_timeout));
        let deadline = tokio::time::Instant::now() + timeout;
        let cancel = limits.cancel.clone().unwrap_or_default();
        // Optimising and physical planning run on a blocking thread too: they are CPU work
        // without await points, which would hold a runtime thread (and miss the deadline).
        let planning_state = state.clone();
        let runtime = tokio::runtime::Handle::current();
        let planning =
            tokio::task::spawn_blocking(move || runtime.block_on(planning_state.create_physical_plan(&plan)));
        let start = async {
            let physical = planning
                .await
                .map_err(|e| Error::Internal(format!("planning failed: {e}")))??;
            Ok::<_, Error>(datafusion::physical_plan::execute_stream(physical, state.task_ctx())?)
        };
        let stream = tokio::select! {
            s = start => s?,
            e = crate::stop::signal(deadline, timeout, cancel.clone()) => return Err(e),
        };
        Ok(bounded_stream(stream, deadline, timeout, cancel))
    }

    /// Runs one SQL query for `tenant` and collects the result.
    pub async fn sql(&self, tenant: &str, sql: &str) -> Result<Vec<RecordBatch>> {
        let (ctx, plan) = self.plan_sql(tenant, sql).await?;
        let stream = self.execute(&ctx.state(), plan, &QueryLimits::default()).await?;
        Ok(datafusion::physical_plan::common::collect(stream).await?)
    }

    /// Runs a TraceQL search for `tenant`, within the query timeout.
    pub async fn traceql_search(
        &self,
        tenant: &str,
        request: &crate::search::SearchRequest,
    ) -> Result<crate::search::SearchOutcome> {
        self.traceql_search_with(tenant, request, &mut |_| {}).await
    }

    /// [`Self::traceql_search`], calling `progress` with the hits so far as parts of the
    /// tenant's data are searched (for streaming partial results).
    pub async fn traceql_search_with(
        &self,
        tenant: &str,
        request: &crate::search::SearchRequest,
        progress: crate::search::Progress<'_>,
    ) -> Result<crate::search::SearchOutcome> {
        let ctx = self.context(tenant).await?;
        let timeout = self.config.query_timeout;
        let search = crate::search::search(&ctx, &self.search_plans, &self.warehouse, tenant, request, progress);
        tokio::time::timeout(timeout, unpanicked(search))
            .await
            .map_err(|_| Error::Timeout(timeout))?
    }

    /// Runs a TraceQL metrics query over a range for `tenant` ([`crate::metrics`]), within the
    /// query timeout and the engine's memory limits.
    pub async fn metrics_query_range(
        &self,
        tenant: &str,
        request: &crate::metrics::MetricsRequest,
        limits: &QueryLimits,
    ) -> Result<crate::metrics::MetricsOutcome> {
        self.metrics_query_range_with(tenant, request, limits, None).await
    }

    /// [`Self::metrics_query_range`]; with `progress`, in parts of the range, newest first
    /// ([`crate::metrics::parts`]), `progress` called with each part's series as it completes.
    /// The parts' rows together are the whole range's: buckets never straddle parts.
    pub async fn metrics_query_range_with(
        &self,
        tenant: &str,
        request: &crate::metrics::MetricsRequest,
        limits: &QueryLimits,
        mut progress: Option<crate::metrics::Progress<'_>>,
    ) -> Result<crate::metrics::MetricsOutcome> {
        use crate::metrics::{only_part, outcome_of, parts, spans_in_part};
        let (query, range) = crate::metrics::prepare(request)?;
        let ctx = self.context(tenant).await?;
        let spans = ctx.table("spans").await?.into_unoptimized_plan();
        let max_series = request.limits.max_series;
        let exemplars = crate::metrics::exemplars_of(&query, request);
        let sampling = crate::metrics::Sampling::of(&query);
        let spans = sampling.sampled(crate::metrics::spans_in(spans, &range)?)?;
        let times = match exemplars {
            0 => Exemplars::None,
            _ => Exemplars::Times,
        };
        let parts = parts(&query, &range, progress.is_some());
        let mut runs: Vec<(
            Vec<datafusion::arrow::array::RecordBatch>,
            tracehouse_traceql::MetricsShape,
        )> = Vec::new();
        for &part in &parts {
            let part_spans = match parts.len() {
                1 => spans.clone(),
                _ => spans_in_part(spans.clone(), &range, part)?,
            };
            let mut part_runs = Vec::new();
            for (plan, shape) in crate::metrics::plans(&query, part_spans, &range, times)? {
                part_runs.push((self.collect_plan(&ctx, plan, limits).await?, shape));
            }
            if let Some(progress) = progress.as_mut() {
                let none = vec![Default::default(); part_runs.len()];
                let outcome = outcome_of(&query, &part_runs, &range, max_series, none, sampling.multiplier())?;
                progress(&only_part(outcome, &range, part));
            }
            match runs.is_empty() {
                true => runs = part_runs,
                false => (runs.iter_mut().zip(part_runs)).for_each(|(all, (rows, _))| all.0.extend(rows)),
            }
        }
        let mut at = Vec::new();
        for (rows, _) in &runs {
            at.extend(crate::metrics::exemplar_times(rows, exemplars)?);
        }
        let found = self.exemplar_spans(&ctx, &query, spans, &range, at, limits).await?;
        outcome_of(&query, &runs, &range, max_series, found, sampling.multiplier())
    }

    async fn collect_plan(
        &self,
        ctx: &SessionContext,
        plan: datafusion::logical_expr::LogicalPlan,
        limits: &QueryLimits,
    ) -> Result<Vec<datafusion::arrow::array::RecordBatch>> {
        let stream = self.execute(&ctx.state(), plan, limits).await?;
        Ok(datafusion::physical_plan::common::collect(stream).await?)
    }

    /// The exemplar spans of each pipeline of `query`: its rows again, over only the spans
    /// that start `at` the exemplar times the first runs found (a few rows, their ids read).
    /// A group's exemplar time is its earliest span's, so among these spans it is still the
    /// group's earliest.
    async fn exemplar_spans(
        &self,
        ctx: &SessionContext,
        query: &tracehouse_traceql::ast::Query,
        spans: datafusion::logical_expr::LogicalPlan,
        range: &tracehouse_traceql::StepRange,
        mut at: Vec<i64>,
        limits: &QueryLimits,
    ) -> Result<Vec<crate::metrics::ExemplarSpans>> {
        use datafusion::logical_expr::{LogicalPlanBuilder, col, lit};
        let pipelines = crate::metrics::pipeline_count(query);
        if at.is_empty() {
            return Ok(vec![Default::default(); pipelines]);
        }
        at.sort_unstable();
        at.dedup();
        let times = at.into_iter().map(lit).collect();
        let narrowed = LogicalPlanBuilder::from(spans)
            .filter(col("start_time_unix_nano").in_list(times, false))?
            .build()?;
        let mut found = Vec::with_capacity(pipelines);
        for (plan, _) in crate::metrics::plans(query, narrowed, range, Exemplars::Spans)? {
            let rows = self.collect_plan(ctx, plan, limits).await?;
            found.push(crate::metrics::exemplar_spans(&rows)?);
        }
        Ok(found)
    }

    /// The spans of one trace of `tenant`, found through the warehouse's trace-id index;
    /// `range_ns` (unix ns, inclusive) narrows the files opened.
    pub async fn trace_by_id(
        &self,
        tenant: &str,
        trace: u128,
        range_ns: Option<(i64, i64)>,
    ) -> Result<tracehouse_warehouse::TraceLookup> {
        validate_tenant(tenant)?;
        unpanicked(async { Ok(self.warehouse.trace_by_id(tenant, trace, range_ns).await?) }).await
    }
}

/// Lets an evicted session be freed: its `pg_catalog` schema holds the session's catalog list,
/// which holds the schema (a reference cycle), so it is taken out first.
fn release(ctx: &SessionContext, tenant: &str) {
    if let Some(catalog) = ctx.catalog(tenant)
        && let Err(e) = catalog.deregister_schema("pg_catalog", true)
    {
        tracing::warn!(tenant, error = %e, "evicted tenant session keeps its pg_catalog");
    }
}

/// DataFusion's own check that a plan creates, changes and sets nothing.
fn read_only() -> datafusion::execution::context::SQLOptions {
    datafusion::execution::context::SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

/// `stream`, ended with an error at `deadline` or when `cancel` fires.
fn bounded_stream(
    stream: SendableRecordBatchStream,
    deadline: tokio::time::Instant,
    timeout: Duration,
    cancel: CancellationToken,
) -> SendableRecordBatchStream {
    let stop = async move {
        let e = crate::stop::signal(deadline, timeout, cancel).await;
        datafusion::error::DataFusionError::External(Box::new(e))
    };
    let schema = stream.schema();
    let batches = crate::stop::UntilStopped::new(stream, stop, ());
    let batches = std::panic::AssertUnwindSafe(batches).catch_unwind().map(|polled| {
        polled.unwrap_or_else(|panic| {
            let e = panicked(panic);
            Err(datafusion::error::DataFusionError::External(Box::new(e)))
        })
    });
    Box::pin(datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(
        schema, batches,
    ))
}

/// `work`'s result, or an internal error if it panicked: a panic deep in a reader or an
/// operator fails the one request with a message instead of dropping its connection.
async fn unpanicked<T>(work: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    std::panic::AssertUnwindSafe(work)
        .catch_unwind()
        .await
        .unwrap_or_else(|panic| Err(panicked(panic)))
}

/// The internal error a caught panic becomes (its message when it has one, which is logged).
fn panicked(panic: Box<dyn std::any::Any + Send>) -> Error {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("no message");
    tracing::error!(panic = message, "a query panicked");
    Error::Internal(format!("the query failed unexpectedly: {message}"))
}

/// A tenant session's object stores: empty at first (no local file system, no URL reads), then
/// only the stores its own table registers, at most [`MAX_TENANT_STORES`].
#[derive(Debug, Default)]
struct TenantStores {
    stores: Mutex<HashMap<String, Arc<dyn ObjectStore>>>,
}

/// Most object stores one tenant session holds.
const MAX_TENANT_STORES: usize = 8;

fn store_key(url: &url::Url) -> String {
    format!(
        "{}://{}",
        url.scheme(),
        &url[url::Position::BeforeHost..url::Position::AfterPort]
    )
}

impl ObjectStoreRegistry for TenantStores {
    fn register_store(&self, url: &url::Url, store: Arc<dyn ObjectStore>) -> Option<Arc<dyn ObjectStore>> {
        let mut stores = self.stores.lock().expect("stores lock");
        let key = store_key(url);
        if stores.len() >= MAX_TENANT_STORES && !stores.contains_key(&key) {
            tracing::warn!(%key, "tenant object store registry is full; store not registered");
            return None;
        }
        stores.insert(key, store)
    }

    fn get_store(&self, url: &url::Url) -> datafusion::error::Result<Arc<dyn ObjectStore>> {
        self.stores
            .lock()
            .expect("stores lock")
            .get(&store_key(url))
            .cloned()
            .ok_or_else(|| {
                datafusion::error::DataFusionError::Plan(format!("permission denied: no access to {}", url.scheme()))
            })
    }
}

#[cfg(test)]
mod tests {
    use arrow::datatypes::Schema;
    use datafusion::physical_plan::stream::RecordBatchStreamAdapter;

    use super::*;

    fn broken_row_filter() -> Result<usize> {
        panic!("row filter broke")
    }

    #[tokio::test]
    async fn a_panicking_search_is_an_internal_error() {
        let e = unpanicked(async { broken_row_filter() }).await.expect_err("panicked");
        assert!(
            matches!(&e, Error::Internal(m) if m.contains("row filter broke")),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_panicking_stream_ends_with_an_error() {
        let schema = Arc::new(Schema::empty());
        let batches = futures::stream::iter([0, 1]).map(|i| {
            assert_eq!(i, 0, "operator broke");
            Ok(RecordBatch::new_empty(Arc::new(Schema::empty())))
        });
        let stream = Box::pin(RecordBatchStreamAdapter::new(schema, batches));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let mut bounded = bounded_stream(stream, deadline, Duration::from_secs(60), CancellationToken::new());
        assert!(bounded.next().await.expect("first").is_ok());
        let e = bounded.next().await.expect("second").expect_err("panicked");
        assert!(e.to_string().contains("operator broke"), "{e}");
        assert!(bounded.next().await.is_none(), "the stream ends after a panic");
    }

    /// However many tenants clients name, the engine holds at most `max_tenant_sessions`
    /// sessions, dropping the least recently used; an invalid tenant creates none.
    #[tokio::test]
    async fn tenant_sessions_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let warehouse = Warehouse::open(tracehouse_warehouse::WarehouseConfig::local(dir.path()))
            .await
            .unwrap();
        let config = QueryEngineConfig {
            max_tenant_sessions: 3,
            ..QueryEngineConfig::default()
        };
        let engine = QueryEngine::new(warehouse, config).unwrap();
        let recent = engine.context("t0").await.unwrap();
        for i in 1..20 {
            engine.context("t0").await.unwrap();
            engine.context(&format!("t{i}")).await.unwrap();
            assert!(engine.session_count() <= 3);
        }
        assert!(
            Arc::ptr_eq(&recent, &engine.context("t0").await.unwrap()),
            "the busy tenant stays"
        );
        assert!(engine.context("a/b").await.is_err());
        assert!(engine.session_count() <= 3);
        assert_eq!(
            engine.sql("t5", "SELECT count(*) FROM spans").await.unwrap()[0].num_rows(),
            1
        );
    }
}
