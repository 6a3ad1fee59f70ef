//! One tenant's Delta Lake table: open, append sorted Parquet with idempotent commits.
//!
//! Every append carries a Delta `txn` action: app id `tracehouse-wal-<wal id>`, version = the
//! highest WAL sequence number in the data. WAL replay skips records at or below the committed
//! version, so a crash between commit and WAL truncation neither loses nor duplicates spans.

use arrow::array::{Array, ArrayRef, RecordBatch};
use arrow::compute::{SortColumn, concat, interleave_record_batch, lexsort_to_indices};
use deltalake::kernel::Transaction;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::protocol::SaveMode;
use deltalake::{DeltaTable, DeltaTableBuilder, DeltaTableError};
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::Result;
use crate::schema::{PARTITION_COLUMN, RESOURCE_COLUMNS, SPAN_COLUMNS, spans_schema};
use crate::storage::Storage;

/// Rows per Parquet row group; also the bloom filter's expected distinct trace ids. Bloom
/// filters rule out values per row group, so a search for a rare attribute value reads of a
/// file only the row groups that may hold it: 16 Ki rows read a quarter of what 64 Ki did
/// (500k spans: 39 -> 17 ms) for about 2.4% larger files.
pub const ROW_GROUP_ROWS: usize = 16 * 1024;

/// Opens the tenant's table, loaded when it exists, unloaded (ready to be created by the first
/// append) when it does not.
pub async fn open(storage: &Storage, tenant: &str) -> Result<DeltaTable> {
    let url = storage.table_url(tenant)?;
    if let Ok(path) = url.to_file_path() {
        // The kernel wants a local table's directory to exist even before the first commit.
        std::fs::create_dir_all(path)?;
    }
    let mut table = DeltaTableBuilder::from_url(url.clone())?
        .with_storage_backend(storage.store.clone(), url)
        .build()?;
    match table.load().await {
        Ok(()) => Ok(table),
        Err(DeltaTableError::NotATable(_)) => Ok(table),
        Err(e) => Err(e.into()),
    }
}

/// `true` when the table has a committed version.
pub fn is_created(table: &DeltaTable) -> bool {
    table.version().is_some()
}

/// The highest WAL sequence number committed by `app_id`, if any.
pub async fn committed_seq(table: &DeltaTable, app_id: &str) -> Result<Option<u64>> {
    if !is_created(table) {
        return Ok(None);
    }
    let state = table.snapshot()?;
    let version = state.transaction_version(table.log_store().as_ref(), app_id).await?;
    Ok(version.and_then(|v| u64::try_from(v).ok()))
}

/// Rows per data page at most: a search by trace-id range reads only the pages it overlaps.
pub const PAGE_ROWS: usize = 4 * 1024;

/// The string values of the span and resource attribute maps, as Parquet leaf paths: each has
/// a bloom filter per row group.
pub const ATTRIBUTE_STRING_LEAVES: [&str; 2] = [
    "span_attributes.key_value.value.str",
    "resource_attributes.key_value.value.str",
];

/// Distinct attribute values a row group's bloom filter is sized for (a few high-cardinality
/// attributes per span).
const ATTRIBUTE_VALUES_NDV: u64 = 2 * ROW_GROUP_ROWS as u64;

/// Bytes of a column chunk's dictionary page at most; past it the column falls back to plain
/// pages. A read of any rows of a row group decodes the whole dictionary page of each column
/// it reads, so a large one (of a high-cardinality column) is a fixed cost of every search
/// range; small ones (service names, span names, attribute keys) stay whole.
pub const DICTIONARY_PAGE_BYTES: usize = 64 << 10;

/// Bytes of `trace_id`'s dictionary page at most: a row group's trace ids (a few thousand
/// traces of 16 Ki spans), so its pages hold small indexes instead of 32-byte ids, which makes
/// reading trace ids (every search range does) cheap, and files smaller.
pub const TRACE_ID_DICTIONARY_BYTES: usize = 512 << 10;

/// Bytes of a data page of `span_id` and `parent_span_id` at most, instead of
/// [`PAGE_ROWS`] rows: unique ids, compressed, so reading any row of a page decompresses all
/// of it, and a search reads its hits' traces scattered over many pages. At 500k tracegen
/// spans in 1 file: `dedicated + duration` 14.4 -> 11.2 ms, files 1.0% larger.
pub const ID_PAGE_BYTES: usize = 8 << 10;

/// Parquet settings of every span file: zstd, dictionaries (not for the unique ids), page
/// statistics, and bloom filters on `trace_id` and the string attribute values, sized for one
/// row group.
pub fn writer_properties() -> WriterProperties {
    let trace_id = ColumnPath::from("trace_id");
    let mut builder = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).unwrap_or_default()))
        .set_dictionary_enabled(true)
        .set_dictionary_page_size_limit(DICTIONARY_PAGE_BYTES)
        .set_column_dictionary_enabled(ColumnPath::from("span_id"), false)
        .set_column_dictionary_enabled(ColumnPath::from("parent_span_id"), false)
        .set_column_data_page_size_limit(ColumnPath::from("span_id"), ID_PAGE_BYTES)
        .set_column_data_page_size_limit(ColumnPath::from("parent_span_id"), ID_PAGE_BYTES)
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_data_page_row_count_limit(PAGE_ROWS)
        .set_column_dictionary_page_size_limit(trace_id.clone(), TRACE_ID_DICTIONARY_BYTES)
        .set_column_bloom_filter_enabled(trace_id.clone(), true)
        .set_column_bloom_filter_fpp(trace_id.clone(), 0.01)
        .set_column_bloom_filter_max_ndv(trace_id, ROW_GROUP_ROWS as u64);
    // String attribute values: a search for `span.x = "v"` skips files that cannot hold "v".
    for leaf in ATTRIBUTE_STRING_LEAVES {
        let path = ColumnPath::from(leaf.split('.').map(str::to_string).collect::<Vec<_>>());
        builder = builder
            .set_column_bloom_filter_enabled(path.clone(), true)
            .set_column_bloom_filter_fpp(path.clone(), 0.01)
            .set_column_bloom_filter_max_ndv(path, ATTRIBUTE_VALUES_NDV);
    }
    for column in UNCOMPRESSED_COLUMNS.iter().chain(dedicated_uncompressed()) {
        builder = builder.set_column_compression(ColumnPath::from(*column), Compression::UNCOMPRESSED);
    }
    for column in DELTA_COLUMNS {
        let path = ColumnPath::from(column);
        builder = builder
            .set_column_dictionary_enabled(path.clone(), false)
            .set_column_encoding(path.clone(), Encoding::DELTA_BINARY_PACKED)
            .set_column_compression(path, Compression::UNCOMPRESSED);
    }
    builder.build()
}

/// Columns stored delta-encoded (DELTA_BINARY_PACKED) and not compressed: the times every
/// search reads. Smaller than LZ4 over plain values (52.9 instead of 58.7 bytes per span in
/// all at 500k tracegen spans) and faster to decode (searches 10-25% faster).
pub const DELTA_COLUMNS: [&str; 3] = ["start_time_unix_nano", "end_time_unix_nano", "duration_ns"];

/// Columns stored without compression: dictionary-encoded or small, so compression saves
/// little (under 1.5 bytes per span in all) and costs a decompression on every read.
pub const UNCOMPRESSED_COLUMNS: &[&str] = &[
    "trace_id",
    "trace_state",
    "name",
    "kind",
    "status_code",
    "status_message",
    "flags",
    "scope_name",
    "scope_version",
    "resource_dropped_attributes_count",
    "dropped_attributes_count",
    "dropped_events_count",
    "dropped_links_count",
];

/// Dedicated columns stored without compression: all but the URL.
fn dedicated_uncompressed() -> impl Iterator<Item = &'static &'static str> {
    RESOURCE_COLUMNS
        .iter()
        .chain(SPAN_COLUMNS)
        .map(|c| &c.column)
        .filter(|c| **c != "http_url")
}

/// Merges `batches` into one batch sorted by trace id, then start time. Only the two key
/// columns are concatenated; every other column is gathered once, straight from its source
/// batch, in sorted order (`interleave`), instead of a full concat followed by a take.
pub fn sort_by_trace(batches: &[RecordBatch]) -> Result<RecordBatch> {
    let schema = spans_schema();
    let key = |name: &str| -> Result<ArrayRef> {
        let idx = schema.index_of(name)?;
        let columns: Vec<&dyn Array> = batches.iter().map(|b| b.column(idx).as_ref()).collect();
        Ok(concat(&columns)?)
    };
    let sort_columns = [
        SortColumn {
            values: key("trace_id")?,
            options: None,
        },
        SortColumn {
            values: key("start_time_unix_nano")?,
            options: None,
        },
    ];
    let order = lexsort_to_indices(&sort_columns, None)?;
    // Global row number -> (batch, row within batch).
    let mut starts = Vec::with_capacity(batches.len());
    let mut total = 0usize;
    for b in batches {
        starts.push(total);
        total += b.num_rows();
    }
    let positions: Vec<(usize, usize)> = order
        .values()
        .iter()
        .map(|&global| {
            let global = global as usize;
            let batch = starts.partition_point(|&s| s <= global) - 1;
            (batch, global - starts[batch])
        })
        .collect();
    let refs: Vec<&RecordBatch> = batches.iter().collect();
    Ok(interleave_record_batch(&refs, &positions)?)
}

/// The `txn` action recording WAL sequence `seq` for `app_id`.
pub fn wal_txn(app_id: &str, seq: u64) -> Transaction {
    Transaction::new(app_id, i64::try_from(seq).unwrap_or(i64::MAX))
}

/// Appends `batches` (sorted here) to the table in one commit that records `seq` for `app_id`.
pub async fn append(table: DeltaTable, batches: &[RecordBatch], app_id: &str, seq: u64) -> Result<DeltaTable> {
    append_txns(table, batches, vec![wal_txn(app_id, seq)]).await
}

/// Appends `batches` (sorted here) to the table in one commit carrying `txns`. Delta's conflict
/// check fails the commit when a concurrent one recorded any of the same application ids.
pub async fn append_txns(table: DeltaTable, batches: &[RecordBatch], txns: Vec<Transaction>) -> Result<DeltaTable> {
    let sorted = sort_by_trace(batches)?;
    let commit = CommitProperties::default().with_application_transactions(txns);
    let table = table
        .write(vec![sorted])
        .with_save_mode(SaveMode::Append)
        .with_partition_columns(vec![PARTITION_COLUMN.to_string()])
        .with_writer_properties(writer_properties())
        .with_commit_properties(commit)
        .await?;
    Ok(table)
}
