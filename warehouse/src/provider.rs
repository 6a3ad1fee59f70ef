//! The `spans` [`TableProvider`]: a tenant's committed Delta table and its live (acknowledged,
//! not yet flushed) spans, read as one table from a consistent snapshot.
//!
//! A scan filtered by `trace_id = '<id>'` or `trace_id IN (...)` (up to
//! [`MAX_INDEXED_TRACES`] ids) reads those traces through the trace-id index instead: only the
//! files that hold them, whatever else the query says, so SQL by trace id needs no time range.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, OnceLock};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::datasource::MemTable;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::expr::InList;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::union::UnionExec;
use deltalake::DeltaTable;
use deltalake::delta_datafusion::{DeltaScanConfig, DeltaScanNext, FileSelection, MissingSelectedFilePolicy};

use crate::Warehouse;
use crate::live::{LiveSegment, LiveSpans};
use crate::schema::spans_schema;
use crate::table::is_created;
use crate::trace_index::{DataFile, parse_trace_id};

/// Most trace ids a filter may name for the scan to go through the trace-id index.
pub const MAX_INDEXED_TRACES: usize = 1_000;

fn is_trace_id_column(e: &Expr) -> bool {
    matches!(e, Expr::Column(c) if c.name == "trace_id")
}

/// The text of a string literal (any of Arrow's string types).
pub fn text_literal(e: &Expr) -> Option<&str> {
    match e {
        Expr::Literal(
            ScalarValue::Utf8(Some(s)) | ScalarValue::Utf8View(Some(s)) | ScalarValue::LargeUtf8(Some(s)),
            _,
        ) => Some(s),
        _ => None,
    }
}

/// The trace ids a conjunct of the scan's filters restricts it to, if one does. Ids that are
/// not trace ids match no stored row and are left out.
pub fn filtered_trace_ids(filters: &[Expr]) -> Option<Vec<u128>> {
    for f in filters {
        let literals: Vec<&str> = match f {
            Expr::BinaryExpr(BinaryExpr {
                left,
                op: Operator::Eq,
                right,
            }) => match (is_trace_id_column(left), is_trace_id_column(right)) {
                (true, _) => text_literal(right).into_iter().collect(),
                (_, true) => text_literal(left).into_iter().collect(),
                _ => continue,
            },
            Expr::InList(InList {
                expr,
                list,
                negated: false,
            }) if is_trace_id_column(expr) && list.len() <= MAX_INDEXED_TRACES => {
                let texts: Vec<&str> = list.iter().filter_map(text_literal).collect();
                if texts.len() != list.len() {
                    continue;
                }
                texts
            }
            _ => continue,
        };
        if literals.is_empty() {
            continue;
        }
        let mut ids: Vec<u128> = literals
            .iter()
            .filter(|t| t.len() == 32 && t.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
            .filter_map(|t| parse_trace_id(t))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        return Some(ids);
    }
    None
}

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
        if let Some(traces) = filtered_trace_ids(filters) {
            let found = self
                .warehouse
                .traces_by_id(&self.tenant, &traces, None)
                .await
                .map_err(|e| DataFusionError::External(Box::new(e)))?;
            let memory = MemTable::try_new(spans_schema(), vec![found.batches])?;
            return memory.scan(state, projection, filters, limit).await;
        }
        let (table, live) = self
            .warehouse
            .snapshot(&self.tenant)
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        SnapshotSpans::new(table, live)
            .scan(state, projection, filters, limit)
            .await
    }
}

/// Data files of the table versions listed last, by table and version: a version's files
/// never change, and listing them from the Delta log costs a search over many small files
/// more than its reads. Bounded: starts over past this many versions or files.
static LISTINGS: LazyLock<Mutex<(Listings, usize)>> = LazyLock::new(Mutex::default);
type Listings = HashMap<(String, u64), Arc<[DataFile]>>;
const LISTED_VERSIONS: usize = 256;
const LISTED_FILES: usize = 1 << 20;

/// The data files of `table`'s version, through [`LISTINGS`].
fn listing(table: &DeltaTable) -> crate::Result<Arc<[DataFile]>> {
    let Some(version) = table.version() else {
        return Ok(crate::warehouse::data_files(table)?.into());
    };
    let key = (table.table_url().to_string(), version);
    if let Some(files) = LISTINGS.lock().expect("listings lock").0.get(&key) {
        return Ok(files.clone());
    }
    let files: Arc<[DataFile]> = crate::warehouse::data_files(table)?.into();
    let mut guard = LISTINGS.lock().expect("listings lock");
    let (listings, count) = &mut *guard;
    if listings.len() >= LISTED_VERSIONS || *count + files.len() > LISTED_FILES {
        listings.clear();
        *count = 0;
    }
    if listings.insert(key, files.clone()).is_none() {
        *count += files.len();
    }
    Ok(files)
}

/// The `spans` of one snapshot: a committed table and the live batches taken with it. A
/// search reads it one slice at a time, every slice from the same snapshot.
#[derive(Debug, Clone)]
pub struct SnapshotSpans {
    table: Option<Arc<DeltaTable>>,
    live: LiveSpans,
    /// The data files read (paths as in the Delta log); `None` reads all.
    files: Option<Vec<String>>,
    /// The table's data files, listed from the Delta log once for the snapshot and its copies.
    listed: Arc<OnceLock<Arc<[DataFile]>>>,
    /// Those of them read, chosen once for the snapshot and its copies.
    read: Arc<OnceLock<Arc<[DataFile]>>>,
}

impl SnapshotSpans {
    /// Everything in the snapshot.
    pub fn new(table: Option<Arc<DeltaTable>>, live: LiveSpans) -> Self {
        Self {
            table: table.filter(|t| is_created(t)),
            live,
            files: None,
            listed: Arc::default(),
            read: Arc::default(),
        }
    }

    /// The same snapshot reading only `files` of its data files, and all its live spans.
    pub fn with_files(&self, files: Vec<String>) -> Self {
        Self {
            files: Some(files),
            read: Arc::default(),
            ..self.clone()
        }
    }

    /// The same snapshot with only `segments` of its live segments (those a search walks);
    /// its live batches stay whole.
    pub fn with_live_segments(&self, segments: Vec<Arc<LiveSegment>>) -> Self {
        Self {
            live: self.live.with_segments(segments),
            ..self.clone()
        }
    }

    /// Every committed data file of the snapshot (paths as in the Delta log), with its size
    /// and partition value.
    pub fn all_files(&self) -> crate::Result<Vec<DataFile>> {
        if let Some(files) = self.listed.get() {
            return Ok(files.to_vec());
        }
        let files = match self.table.as_deref() {
            Some(table) => listing(table)?,
            None => Arc::default(),
        };
        Ok(self.listed.get_or_init(|| files).to_vec())
    }

    /// The committed data files read: all of them, or those [`Self::with_files`] chose.
    pub fn files(&self) -> crate::Result<Vec<DataFile>> {
        Ok(self.read_files()?.to_vec())
    }

    /// The committed data files read, shared (a search asks for them at every step).
    pub fn read_files(&self) -> crate::Result<Arc<[DataFile]>> {
        if let Some(files) = self.read.get() {
            return Ok(files.clone());
        }
        let mut files = self.all_files()?;
        if let Some(chosen) = &self.files {
            let chosen: std::collections::HashSet<&str> = chosen.iter().map(String::as_str).collect();
            files.retain(|f| chosen.contains(f.path.as_str()));
        }
        Ok(self.read.get_or_init(|| files.into()).clone())
    }

    /// The committed table of the snapshot, when there is one.
    pub fn table(&self) -> Option<Arc<DeltaTable>> {
        self.table.clone()
    }

    /// The live (not yet committed) batches of the snapshot.
    pub fn live(&self) -> &[RecordBatch] {
        self.live.batches()
    }

    /// The live batches indexed by trace id, oldest first ([`LiveSpans::segments`]).
    pub fn live_segments(&self) -> crate::Result<Arc<[Arc<LiveSegment>]>> {
        self.live.segments()
    }
}

#[async_trait]
impl TableProvider for SnapshotSpans {
    fn schema(&self) -> SchemaRef {
        spans_schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let mut inputs: Vec<Arc<dyn ExecutionPlan>> = Vec::with_capacity(2);
        let wanted = self.files.as_ref().is_none_or(|f| !f.is_empty());
        if let Some(table) = self.table.as_ref().filter(|_| wanted) {
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
            let mut provider = DeltaScanNext::new(snapshot, config)?;
            if let Some(files) = &self.files {
                let selection = FileSelection::from_file_paths(files.iter().cloned())
                    .with_missing_file_policy(MissingSelectedFilePolicy::Ignore);
                provider = provider.with_file_selection(selection);
            }
            inputs.push(provider.scan(state, projection, filters, limit).await?);
        }
        let memory = MemTable::try_new(spans_schema(), vec![self.live.batches().to_vec()])?;
        inputs.push(memory.scan(state, projection, filters, limit).await?);
        if inputs.len() == 1 {
            return Ok(inputs.remove(0));
        }
        UnionExec::try_new(inputs)
    }
}

#[cfg(test)]
mod tests {
    use datafusion::logical_expr::{col, lit};

    use super::*;

    #[test]
    fn trace_id_filters_are_recognised() {
        let id = "0000000000000000000000000000abcd";
        assert_eq!(filtered_trace_ids(&[col("trace_id").eq(lit(id))]), Some(vec![0xabcd]));
        assert_eq!(filtered_trace_ids(&[lit(id).eq(col("trace_id"))]), Some(vec![0xabcd]));
        let list = col("trace_id").in_list(
            vec![lit(id), lit("0000000000000000000000000000000f"), lit("NOPE")],
            false,
        );
        assert_eq!(
            filtered_trace_ids(&[col("name").eq(lit("x")), list]),
            Some(vec![0xf, 0xabcd])
        );
        // Upper case or short ids match no stored id: an empty set, not a full scan.
        assert_eq!(
            filtered_trace_ids(&[col("trace_id").eq(lit(id.to_uppercase()))]),
            Some(vec![])
        );
        assert_eq!(filtered_trace_ids(&[col("trace_id").not_eq(lit(id))]), None);
        assert_eq!(
            filtered_trace_ids(&[col("trace_id").in_list(vec![lit(id)], true)]),
            None
        );
        assert_eq!(filtered_trace_ids(&[col("span_id").eq(lit(id))]), None);
    }
}
