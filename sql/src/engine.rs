//! Per-tenant DataFusion sessions over the warehouse: `spans`, the `traces` view, UDFs and
//! pg_catalog, with Parquet filter pushdown on and one memory pool shared by every query.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use arrow::array::RecordBatch;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_postgres::datafusion_pg_catalog::setup_pg_catalog;
use tracehouse_warehouse::Warehouse;
use tracehouse_warehouse::provider::SpansTable;
use tracehouse_warehouse::storage::validate_tenant;

use crate::Result;

/// Settings of the engine.
#[derive(Debug, Clone)]
pub struct QueryEngineConfig {
    /// Memory all running queries may hold together; big sorts and joins spill past it.
    pub max_memory_bytes: usize,
    /// Parallelism of one query.
    pub target_partitions: usize,
}

impl Default for QueryEngineConfig {
    fn default() -> Self {
        Self {
            max_memory_bytes: 2 << 30,
            target_partitions: std::thread::available_parallelism().map_or(2, |n| n.get()),
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

/// Hands out each tenant's query session.
pub struct QueryEngine {
    warehouse: Arc<Warehouse>,
    config: QueryEngineConfig,
    runtime: Arc<RuntimeEnv>,
    contexts: RwLock<HashMap<String, Arc<SessionContext>>>,
}

impl QueryEngine {
    /// An engine over `warehouse`.
    pub fn new(warehouse: Arc<Warehouse>, config: QueryEngineConfig) -> Result<Self> {
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(FairSpillPool::new(config.max_memory_bytes)))
            .build_arc()?;
        Ok(Self {
            warehouse,
            config,
            runtime,
            contexts: RwLock::new(HashMap::new()),
        })
    }

    /// The session of `tenant`, created on first use. Its default catalog is named after the
    /// tenant, with schemas `public` (`spans`, `traces`) and `pg_catalog`.
    pub async fn context(&self, tenant: &str) -> Result<Arc<SessionContext>> {
        if let Some(ctx) = self.contexts.read().expect("contexts lock").get(tenant) {
            return Ok(ctx.clone());
        }
        validate_tenant(tenant)?;
        let ctx = Arc::new(self.build_context(tenant).await?);
        let mut contexts = self.contexts.write().expect("contexts lock");
        Ok(contexts.entry(tenant.to_string()).or_insert(ctx).clone())
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
            .with_runtime_env(self.runtime.clone())
            .with_default_features()
            .with_optimizer_rules(rules)
            .build();
        let ctx = SessionContext::new_with_state(state);
        let spans = Arc::new(SpansTable::new(self.warehouse.clone(), tenant));
        ctx.register_table("spans", spans.clone())?;
        ctx.register_udtf("traceql", Arc::new(crate::traceql::TraceqlFunction::new(spans)));
        ctx.sql(TRACES_VIEW_SQL).await?.collect().await?;
        crate::udf::register(&ctx);
        setup_pg_catalog(&ctx, tenant, EmptyContextProvider).map_err(|e| *e)?;
        Ok(ctx)
    }

    /// Runs a TraceQL search for `tenant`.
    pub async fn traceql_search(
        &self,
        tenant: &str,
        request: &crate::traceql::SearchRequest,
    ) -> Result<Vec<crate::traceql::TraceHit>> {
        let ctx = self.context(tenant).await?;
        crate::traceql::search(&ctx, request).await
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
        Ok(self.warehouse.trace_by_id(tenant, trace, range_ns).await?)
    }

    /// Runs `sql` for `tenant` and collects the result.
    pub async fn sql(&self, tenant: &str, sql: &str) -> Result<Vec<RecordBatch>> {
        let ctx = self.context(tenant).await?;
        Ok(ctx.sql(sql).await?.collect().await?)
    }
}
