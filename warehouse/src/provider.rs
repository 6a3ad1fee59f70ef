//! The `spans` [`TableProvider`]: a tenant's committed Delta table and its live (acknowledged,
//! not yet flushed) spans, read as one table from a consistent snapshot.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::MemTable;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::union::UnionExec;
use deltalake::delta_datafusion::{DeltaScanConfig, DeltaScanNext};

use crate::Warehouse;
use crate::schema::spans_schema;
use crate::table::is_created;

/// One tenant's `spans` table.
pub struct SpansTable {
    warehouse: Arc<Warehouse>,
    tenant: String,
}

impl std::fmt::Debug for SpansTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpansTable").field("tenant", &self.tenant).finish()
    }
}

impl SpansTable {
    /// The table of `tenant`.
    pub fn new(warehouse: Arc<Warehouse>, tenant: impl Into<String>) -> Self {
        Self {
            warehouse,
            tenant: tenant.into(),
        }
    }
}

#[async_trait]
impl TableProvider for SpansTable {
    fn schema(&self) -> SchemaRef {
        spans_schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> Result<Vec<TableProviderFilterPushDown>> {
        // Filters prune files, row groups and pages; DataFusion re-applies them above the scan.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let (table, live) = self
            .warehouse
            .snapshot(&self.tenant)
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let mut inputs: Vec<Arc<dyn ExecutionPlan>> = Vec::with_capacity(2);
        if is_created(&table) {
            table
                .update_datafusion_session(state)
                .map_err(|e| DataFusionError::External(Box::new(e)))?;
            // Read with the live batches' types: plain Utf8 (no view types) and an undictionaried
            // partition column, so both sides of the union agree without casts.
            let mut config = DeltaScanConfig::new_from_session(state);
            config.wrap_partition_values = false;
            config.schema_force_view_types = false;
            let snapshot = table
                .snapshot()
                .map_err(|e| DataFusionError::External(Box::new(e)))?
                .snapshot()
                .clone();
            let provider = DeltaScanNext::new(snapshot, config)?;
            inputs.push(provider.scan(state, projection, filters, limit).await?);
        }
        let memory = MemTable::try_new(spans_schema(), vec![live])?;
        inputs.push(memory.scan(state, projection, filters, limit).await?);
        if inputs.len() == 1 {
            return Ok(inputs.remove(0));
        }
        UnionExec::try_new(inputs)
    }
}
