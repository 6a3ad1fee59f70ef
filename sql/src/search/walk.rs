//! Searches that walk traces with the trace-id index, instead of reading trace-id ranges.
//!
//! The index knows, for every data file, its traces and when their rows there start and end;
//! the live spans are at hand. Reading a few traces costs a page of each column per trace and
//! file, so a walk takes them in two steps: with a candidate step, large batches are read with
//! its condition as the reader's row filter (its cheap columns decoded for every row, the trace
//! id for the rows that pass); the traces that pass are then read whole (only the pages of the
//! files that hold them) and evaluated in small chunks that grow. A first-found walk gathers
//! candidates until they may fill the result, each batch sized by the pass rate seen.
//!
//! First found ([`Search::first_found`]): the live traces, then each file's, newest file
//! first, in trace-id order, so a chunk's traces share a few pages of one file; the walk stops
//! when it has `limit` hits. Many small files cost no more than one. Its candidate step reads
//! a trace only in the source it was taken from (one read per source of a batch), and a trace
//! that fails there is taken again from the next file that holds it (not when bloom filters
//! pruned the walk: then every file of a trace is read at once).
//!
//! Most recent (`with(most_recent=true)`, [`Search::newest`]): traces newest first, each at the
//! latest its start in the window can be ([`latest_start`]); the walk stops as soon as its
//! `limit`th hit started later than any trace left can, so the answer is the one of a walk over
//! everything. A query that matches rarely would read most traces one by one: past a share of
//! the traces the walk gives up and the search reads the snapshot range by range instead.

use std::sync::Arc;

use arrow::array::RecordBatch;
use datafusion::common::HashSet;
use datafusion::error::DataFusionError;
use tracehouse_warehouse::SpanSource;
use tracehouse_warehouse::id_range::{IdRange, Read, SpanCondition, Wanted};
use tracehouse_warehouse::live::LiveSegment;
use tracehouse_warehouse::trace_index::{DataFile, TraceSpan, parse_trace_id};

use super::prepared::Step;
use super::prune::covers;
use super::ranges::MAX_RANGE_SPANS;
use super::{MAX_RANGE_ROWS, Progress, Search, SearchOutcome, TraceHit, account, sort_newest_first};
use crate::Result;

/// Traces evaluated whole at most at once; the first chunk is `limit` traces (at most
/// [`MAX_FIRST_CHUNK_TRACES`], so a large limit streams its first hits early), each next one
/// twice the last.
const MAX_CHUNK_TRACES: usize = 8_192;
const MAX_FIRST_CHUNK_TRACES: usize = 256;

/// Traces read with the candidate step's columns at once: the first batch of a most-recent
/// walk (whose traces are spread over every page), and at most.
const MIN_FILTER_TRACES: usize = 4_096;
const MAX_FILTER_TRACES: usize = 16_384;

/// The first batch of a first-found walk: traces per trace asked for, and at least.
const FIRST_FOUND_FILTER_PER_LIMIT: usize = 32;
const MIN_FIRST_FOUND_FILTER: usize = 256;

/// The walk gives up once it has taken this share of its entries (one in this many), and at
/// least [`MIN_FILTER_TRACES`], without filling the result.
const GIVE_UP_SHARE: usize = 8;

/// A trace to walk: its key (highest taken first: the latest its start in the window can be,
/// or its source's rank) and its id.
type Entry = (i64, u128);

/// Where a walk stands.
struct Walk {
    /// Traces not taken yet.
    left: Vec<Entry>,
    /// Traces taken that passed the candidate step, not evaluated yet, newest last.
    ready: Vec<Entry>,
    /// Traces taken (a trace has an entry for its files and one for its live spans).
    taken: HashSet<u128>,
    filter: usize,
    chunk: usize,
    /// The most spans per trace seen in a read ([`GUESSED_SPANS_PER_TRACE`] before the
    /// first): reads are cut to about [`MAX_RANGE_SPANS`] spans.
    spans_per_trace: Option<usize>,
    /// A read held more than a search may hold at once: the walk gives up.
    overflow: bool,
    /// The sources of a first-found walk (entries are keyed by their source, [`source_of`]),
    /// when it takes each trace from every source that holds it: its candidate step then
    /// reads each trace in the source it was taken from alone, and a trace that fails there
    /// is taken again from the next source that holds it.
    sources: Option<Arc<SourceList>>,
    /// Traces put through the candidate step, and those that passed.
    tried: usize,
    passed: usize,
    /// The candidate step is held back: one that reads text out of attribute maps costs about
    /// a whole read, more than it saves unless matches are rare, so a walk first evaluates a
    /// chunk whole and uses the step only once that chunk shows matches rare.
    candidates_held: bool,
}

/// A chunk with fewer hits than one per this many traces shows matches rare.
const RARE_HITS_PER_TRACE: usize = 16;

/// How many times the traces the pass rate seen says are needed a candidate batch takes: a
/// read costs about a millisecond more than its rows, so a batch that falls short (and needs
/// another read) costs more than one that reads too many.
const FILTER_MARGIN: usize = 2;

/// Spans per trace assumed before the first read.
const GUESSED_SPANS_PER_TRACE: usize = 64;

impl Walk {
    fn new(left: Vec<Entry>, filter: usize, chunk: usize) -> Self {
        Self {
            left,
            ready: Vec::new(),
            taken: HashSet::new(),
            filter,
            chunk,
            spans_per_trace: None,
            overflow: false,
            sources: None,
            tried: 0,
            passed: 0,
            candidates_held: false,
        }
    }

    /// Sizes the next candidate batch to find the `needed` candidates still missing at the
    /// rate seen so far (times [`FILTER_MARGIN`]), growing at least twofold, at most to
    /// [`MAX_FILTER_TRACES`].
    fn grow_filter(&mut self, needed: usize) {
        let at_rate = match self.passed {
            0 => self.filter * 4,
            passed => (needed.saturating_mul(self.tried) / passed).saturating_mul(FILTER_MARGIN),
        };
        self.filter = at_rate.max(self.filter * 2).min(MAX_FILTER_TRACES);
    }

    /// `n` traces, or fewer when that many would read more than [`MAX_RANGE_SPANS`] spans.
    fn cap(&self, n: usize) -> usize {
        let per_trace = self.spans_per_trace.unwrap_or(GUESSED_SPANS_PER_TRACE).max(1);
        n.min((MAX_RANGE_SPANS as usize / per_trace).max(1))
    }
}

/// The sources of a first-found walk: the live segments (oldest first) and the data files
/// (newest first). The walk takes the newest segment first, then the others, then the files.
pub(super) struct SourceList {
    live: Arc<[Arc<LiveSegment>]>,
    files: Arc<[DataFile]>,
}

/// The sources of a first-found walk, in its order; each with a key lower than the last's.
struct Sources<'a> {
    list: Arc<SourceList>,
    /// The key of the last source opened: the `j`th source (from 0) is `-j` ([`source_of`]).
    key: i64,
    current: Option<Source<'a>>,
}

impl Sources<'_> {
    fn new(list: Arc<SourceList>) -> Self {
        Self {
            list,
            key: 1,
            current: None,
        }
    }

    /// The next source and its key; `None` after the last.
    fn next_source(&mut self) -> Option<(i64, SpanSource)> {
        let key = self.key - 1;
        let source = source_of(&self.list, key)?;
        self.key = key;
        Some((key, source))
    }
}

/// The source of a first-found walk's `key` (the `-key`th source, from 0: the live segments
/// newest first, then the files); `None` past the last.
fn source_of(list: &SourceList, key: i64) -> Option<SpanSource> {
    let at = usize::try_from(key.checked_neg()?).ok()?;
    match list.live.len().checked_sub(at + 1) {
        Some(segment) => Some(SpanSource::Live(list.live[segment].clone())),
        None => list.files.get(at - list.live.len()).cloned().map(SpanSource::File),
    }
}

/// One source's traces (sorted), taken from the last down, so that a batch takes them in
/// trace-id order (see [`take_newest`]).
struct Source<'a> {
    key: i64,
    traces: Arc<[TraceSpan]>,
    /// Traces not looked at yet: those before this index.
    left: usize,
    /// Where a match may be among them, when bloom filters said ([`super::prune::MayHold`]).
    may_hold: Option<&'a [(u128, u128)]>,
}

impl<'a> Source<'a> {
    fn new(key: i64, traces: Arc<[TraceSpan]>, may_hold: Option<&'a [(u128, u128)]>) -> Self {
        let left = traces.len();
        Self {
            key,
            traces,
            left,
            may_hold,
        }
    }
}

impl Search<'_> {
    /// The `limit` most recent hits, walking traces newest first; `None` when the walk cannot
    /// be done (the trace-id index does not cover the snapshot) or gives up.
    pub(super) async fn newest(&self, found: &mut SearchOutcome, progress: Progress<'_>) -> Result<Option<()>> {
        let Some(left) = self.entries().await? else {
            return Ok(None);
        };
        let limit = self.request.limit;
        // Counted in entries taken: a trace in several sources has an entry in each.
        let (entries, give_up) = (left.len(), left.len().div_ceil(GIVE_UP_SHARE).max(MIN_FILTER_TRACES));
        let filter = MIN_FILTER_TRACES.max(left.len() / 32).min(MAX_FILTER_TRACES);
        let mut walk = self.walk(left, filter);
        found.metrics.total_jobs = 1;
        loop {
            let latest_left = walk.left.iter().map(|e| e.0).max();
            let latest_ready = walk.ready.last().map(|e| e.0);
            let Some(latest) = latest_left.max(latest_ready) else {
                break;
            };
            if can_stop(&found.hits, limit, latest) {
                break;
            }
            if latest_ready.is_some_and(|r| latest_left.is_none_or(|l| r >= l)) {
                self.evaluate_chunk(&mut walk, found, &mut *progress).await?;
            } else if entries - walk.left.len() >= give_up && found.hits.len() < limit {
                return Ok(None);
            } else {
                self.take_batch(&mut walk, found).await?;
            }
            if walk.overflow {
                return Ok(None);
            }
        }
        found.metrics.total_jobs = found.metrics.completed_jobs;
        Ok(Some(()))
    }

    /// The first `limit` hits found walking the live segments' traces, then each file's,
    /// newest first; `None` when the trace-id index does not cover the snapshot.
    pub(super) async fn first_found(&self, found: &mut SearchOutcome, progress: Progress<'_>) -> Result<Option<()>> {
        let Some(files) = self.warehouse.files_newest_first(self.tenant, &self.walked).await? else {
            return Ok(None);
        };
        let limit = self.request.limit;
        // Traces here are taken in order of their pages: a small batch reads few of them.
        let filter = (limit * FIRST_FOUND_FILTER_PER_LIMIT).clamp(MIN_FIRST_FOUND_FILTER, MAX_FILTER_TRACES);
        let list = Arc::new(SourceList {
            live: self.walked.live_segments()?,
            files: files.into(),
        });
        let mut walk = self.walk(Vec::new(), filter);
        // A trace is taken from every source that holds it, unless bloom filters ruled some out.
        walk.sources = (!self.may_hold.pruned()).then(|| list.clone());
        found.metrics.total_jobs = 1;
        let mut sources = Sources::new(list);
        loop {
            let needed = limit.saturating_sub(found.hits.len());
            if needed == 0 {
                break;
            }
            // With a candidate step, candidates are gathered until they may fill the result:
            // each read costs about the same for a few traces as for many.
            let more = match self.candidates(&walk) {
                Some(_) => walk.ready.len() < needed,
                None => walk.ready.is_empty(),
            };
            if more {
                let wanted = match self.candidates(&walk) {
                    Some(_) => walk.filter,
                    None => walk.chunk,
                };
                if !self.fill(&mut sources, &mut walk.left, wanted).await? {
                    return Ok(None);
                }
            }
            if more && !walk.left.is_empty() {
                self.take_batch(&mut walk, found).await?;
            } else if !walk.ready.is_empty() {
                self.evaluate_chunk(&mut walk, found, &mut *progress).await?;
            } else {
                break;
            }
            if walk.overflow {
                return Ok(None);
            }
        }
        found.metrics.total_jobs = found.metrics.completed_jobs;
        Ok(Some(()))
    }

    /// Fills `left` up to `wanted` traces from `sources`, in their order: those a match may
    /// be, with rows in the window. `false` when the trace-id index does not cover the
    /// snapshot.
    async fn fill<'s>(&'s self, sources: &mut Sources<'s>, left: &mut Vec<Entry>, wanted: usize) -> Result<bool> {
        let window = (self.request.start_unix_nano, self.request.end_unix_nano);
        while left.len() < wanted {
            let Some(source) = sources.current.as_mut().filter(|s| s.left > 0) else {
                match sources.next_source() {
                    Some(next) => match self.open(next).await? {
                        Some(source) => sources.current = Some(source),
                        None => return Ok(false),
                    },
                    None => return Ok(true),
                }
                continue;
            };
            source.left -= 1;
            let (trace, start, end) = source.traces[source.left];
            let may_hold = source.may_hold.is_none_or(|spans| covers(spans, trace));
            if may_hold && latest_start(start, end, window).is_some() {
                left.push((source.key, trace));
            }
        }
        Ok(true)
    }

    /// The traces of a source of a first-found walk and where a match may be among them;
    /// `None` when the trace-id index does not cover the snapshot.
    async fn open(&self, (key, source): (i64, SpanSource)) -> Result<Option<Source<'_>>> {
        let file = match source {
            SpanSource::Live(segment) => {
                let may_hold = self.may_hold.spans_in_segment(&segment);
                return Ok(Some(Source::new(key, segment.traces().clone(), may_hold)));
            }
            SpanSource::File(file) => file,
        };
        let traces = self.warehouse.traces_in_file(self.tenant, &self.walked, &file).await?;
        let may_hold = self.may_hold.spans_in(&file.path);
        Ok(traces.map(|traces| Source::new(key, traces, may_hold)))
    }

    /// Takes the newest traces left into `walk.ready`: with a candidate step a large batch,
    /// those that pass it; without one, the next chunk.
    async fn take_batch(&self, walk: &mut Walk, found: &mut SearchOutcome) -> Result<()> {
        let step = self.candidates(walk);
        // A read with the candidate condition holds only the rows that pass it.
        let n = match step {
            Some(step) if step.condition.is_some() => walk.filter,
            Some(_) => walk.cap(walk.filter),
            None => walk.cap(walk.chunk),
        };
        // A trace is taken once, but for a candidate step that reads each trace's source alone.
        let by_source = step.is_some() && walk.sources.is_some();
        let batch: Vec<Entry> = take_newest(&mut walk.left, n)
            .into_iter()
            .filter(|e| match by_source {
                true => !walk.taken.contains(&e.1),
                false => walk.taken.insert(e.1),
            })
            .collect();
        let passed: Vec<Entry> = match step {
            Some(step) => {
                let ids = match by_source {
                    true => self.candidates_by_source(walk, &batch, step, found).await?,
                    false => {
                        let mut traces: Vec<u128> = batch.iter().map(|e| e.1).collect();
                        traces.sort_unstable();
                        self.candidates_of(walk, &traces, step, found).await?
                    }
                };
                walk.tried += batch.len();
                let passed = batch.into_iter().filter(|e| ids.contains(&e.1));
                passed.filter(|e| !by_source || walk.taken.insert(e.1)).collect()
            }
            None => batch,
        };
        walk.passed += passed.len();
        walk.ready.extend(passed);
        walk.ready.sort_unstable();
        if step.is_some() {
            walk.grow_filter(self.request.limit.saturating_sub(found.hits.len() + walk.ready.len()));
        }
        Ok(())
    }

    /// Evaluates the next chunk of `walk.ready`, newest first, into `found`; reports what
    /// was found so far first, unless this is the first chunk.
    async fn evaluate_chunk(&self, walk: &mut Walk, found: &mut SearchOutcome, progress: Progress<'_>) -> Result<()> {
        if found.metrics.completed_jobs > 0 {
            progress(found);
        }
        let at = walk.ready.len().saturating_sub(walk.cap(walk.chunk));
        let mut traces: Vec<u128> = walk.ready.split_off(at).into_iter().map(|e| e.1).collect();
        traces.sort_unstable();
        walk.chunk = (walk.chunk * 2).min(MAX_CHUNK_TRACES);
        // With a candidate step, its read counted the spans.
        let count = self.candidates(walk).is_none();
        let whole = self
            .read_traces(walk, &traces, self.prepared.whole(), None, count, found)
            .await?;
        let hits = self.evaluate(&whole, &mut found.metrics).await?;
        if walk.candidates_held && hits.len() * RARE_HITS_PER_TRACE < traces.len() {
            walk.candidates_held = false;
            walk.tried += traces.len();
            walk.passed += hits.len();
            walk.grow_filter(self.request.limit.saturating_sub(found.hits.len() + hits.len()));
        }
        found.hits.extend(hits);
        sort_newest_first(&mut found.hits);
        found.hits.truncate(self.request.limit);
        found.metrics.completed_jobs += 1;
        found.metrics.total_jobs = found.metrics.completed_jobs + 1;
        Ok(())
    }

    /// One entry per trace of the snapshot's data files and one per trace of each live
    /// segment (a trace in several has several), for those with rows in the window; `None`
    /// when the trace-id index does not cover the snapshot.
    async fn entries(&self) -> Result<Option<Vec<Entry>>> {
        let Some(times) = self.warehouse.trace_times(self.tenant, &self.walked).await? else {
            return Ok(None);
        };
        let window = (self.request.start_unix_nano, self.request.end_unix_nano);
        let in_files = times
            .into_iter()
            .filter(|(trace, _, _)| self.may_hold.in_any_file(*trace));
        let segments = self.walked.live_segments()?;
        let live = segments.iter().flat_map(|s| {
            let may_hold = self.may_hold.spans_in_segment(s);
            let traces = s.traces().iter().copied();
            traces.filter(move |(trace, _, _)| may_hold.is_none_or(|spans| covers(spans, *trace)))
        });
        let mut entries: Vec<Entry> = in_files
            .chain(live)
            .filter_map(|(trace, start, end)| latest_start(start, end, window).map(|at| (at, trace)))
            .collect();
        entries.shrink_to_fit();
        Ok(Some(entries))
    }

    /// A walk over `left` whose first candidate batch is `filter` traces and first chunk
    /// `limit` (at most [`MAX_FIRST_CHUNK_TRACES`]), holding back a candidate step that reads
    /// text out of attribute maps. When bloom filters ruled out row groups, matches are rare
    /// already: the step starts at once, with the largest batch.
    fn walk(&self, left: Vec<Entry>, filter: usize) -> Walk {
        let rare = self.may_hold.rare();
        let filter = if rare { MAX_FILTER_TRACES } else { filter };
        let mut walk = Walk::new(left, filter, self.request.limit.min(MAX_FIRST_CHUNK_TRACES));
        walk.candidates_held = !rare && self.prepared.candidates.as_ref().is_some_and(|c| c.reads_map_text);
        walk
    }

    /// The candidate step of `walk` now, unless it has none or holds it back.
    fn candidates(&self, walk: &Walk) -> Option<&Step> {
        self.prepared.candidates.as_ref().filter(|_| !walk.candidates_held)
    }

    /// Those of `traces` (sorted) that pass the candidate `step`.
    async fn candidates_of(
        &self,
        walk: &mut Walk,
        traces: &[u128],
        step: &Step,
        found: &mut SearchOutcome,
    ) -> Result<HashSet<u128>> {
        let condition = step.condition.as_ref();
        let rows = self.read_traces(walk, traces, step, condition, true, found).await?;
        let ids = self.passing(step, rows).await?;
        Ok(ids.iter().filter_map(|t| parse_trace_id(t)).collect())
    }

    /// Those of `batch`'s traces that pass the candidate `step` in the source each was taken
    /// from (one read of each source's rows from its first to its last trace in the batch).
    async fn candidates_by_source(
        &self,
        walk: &mut Walk,
        batch: &[Entry],
        step: &Step,
        found: &mut SearchOutcome,
    ) -> Result<HashSet<u128>> {
        let Some(list) = walk.sources.clone() else {
            return Err(DataFusionError::Internal("a walk by source without its sources".into()).into());
        };
        let mut spans: std::collections::BTreeMap<i64, (u128, u128)> = std::collections::BTreeMap::new();
        for &(key, trace) in batch {
            let span = spans.entry(key).or_insert((trace, trace));
            *span = (span.0.min(trace), span.1.max(trace));
        }
        let mut sources = Vec::with_capacity(spans.len());
        for (key, (first, last)) in spans {
            let source =
                source_of(&list, key).ok_or_else(|| DataFusionError::Internal("a walk's source is gone".into()))?;
            sources.push((source, IdRange::spanning(first, last)));
        }
        let (condition, columns) = (step.condition.as_ref(), step.read_columns());
        let parts: Vec<(SpanSource, Wanted<'_>)> = (sources.iter())
            .map(|(source, range)| {
                let wanted = Wanted {
                    range,
                    traces: None,
                    condition,
                };
                (source.clone(), wanted)
            })
            .collect();
        let (tenant, narrowed) = (self.tenant, step.narrowed.as_ref());
        let read = (self.warehouse).read_parts(tenant, &parts, &columns, narrowed).await?;
        let rows = self.took(walk, read, batch.len(), condition, true, found)?;
        let ids = self.passing(step, rows).await?;
        Ok(ids.iter().filter_map(|t| parse_trace_id(t)).collect())
    }

    /// The rows of `traces` (sorted) that pass `condition` when given, with the columns
    /// `step` reads ([`Step::read_columns`]), of every file that holds them ([`Self::took`]).
    async fn read_traces(
        &self,
        walk: &mut Walk,
        traces: &[u128],
        step: &Step,
        condition: Option<&SpanCondition>,
        count: bool,
        found: &mut SearchOutcome,
    ) -> Result<Vec<RecordBatch>> {
        let (columns, narrowed) = (step.read_columns(), step.narrowed.as_ref());
        let read = self
            .warehouse
            .read_traces_of(self.tenant, &self.snapshot, traces, &columns, condition, narrowed)
            .await?;
        let Some(read) = read else {
            return Err(DataFusionError::Internal("the trace-id index no longer covers the search".into()).into());
        };
        self.took(walk, read, traces.len(), condition, count, found)
    }

    /// The rows of `read`, a read of `traces` traces (that pass `condition` when given);
    /// `count` adds the spans read to the inspected spans. Learns the spans per trace of `walk`
    /// from a read without a condition; none when it read more than one read may hold
    /// (`walk.overflow`).
    fn took(
        &self,
        walk: &mut Walk,
        read: Read,
        traces: usize,
        condition: Option<&SpanCondition>,
        count: bool,
        found: &mut SearchOutcome,
    ) -> Result<Vec<RecordBatch>> {
        let spans: usize = read.batches.iter().map(RecordBatch::num_rows).sum();
        if condition.is_none() {
            let seen = spans.div_ceil(traces.max(1));
            walk.spans_per_trace = Some(walk.spans_per_trace.map_or(seen, |s| s.max(seen)));
        }
        if spans as u64 > MAX_RANGE_ROWS {
            walk.overflow = true;
            return Ok(Vec::new());
        }
        account(&read, count, condition.is_some(), &mut found.metrics)?;
        Ok(read.batches)
    }
}

/// Whether `hits` (newest first) are final when no trace left can start after `latest`.
fn can_stop(hits: &[TraceHit], limit: usize, latest: i64) -> bool {
    // A trace starting at the same time as the last hit may still precede it by id.
    hits.len() >= limit && hits.last().is_some_and(|h| h.start_unix_nano > latest)
}

/// The (at most) `n` entries with the latest starts, taken out of `entries`.
fn take_newest(entries: &mut Vec<Entry>, n: usize) -> Vec<Entry> {
    if n < entries.len() {
        entries.select_nth_unstable_by(n - 1, |a, b| b.cmp(a));
        let rest = entries.split_off(n);
        return std::mem::replace(entries, rest);
    }
    std::mem::take(entries)
}

/// The latest a trace's first start among its spans that overlap the window `[from, to]` can
/// be, given some of its rows: those starting at `start` at the earliest and ending at `end`
/// at the latest. `None` when none of those rows overlaps the window.
///
/// When their earliest row starts in the window it is the trace's first there or later ones
/// are not; otherwise the one ending last, if it overlaps, starts before its end and the
/// window's.
fn latest_start(start: i64, end: i64, (from, to): (Option<i64>, Option<i64>)) -> Option<i64> {
    let (from, to) = (from.unwrap_or(i64::MIN), to.unwrap_or(i64::MAX));
    if start > to || end < from {
        return None;
    }
    Some(if start >= from { start } else { end.min(to) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latest_start_bounds_the_first_start_in_the_window() {
        let w = (Some(100), Some(200));
        assert_eq!(latest_start(120, 300, w), Some(120));
        assert_eq!(latest_start(50, 150, w), Some(150));
        assert_eq!(latest_start(50, 250, w), Some(200));
        assert_eq!(latest_start(50, 90, w), None);
        assert_eq!(latest_start(210, 250, w), None);
        assert_eq!(latest_start(-5, 7, (None, None)), Some(-5));
    }

    #[test]
    fn reads_are_cut_by_the_spans_per_trace_seen() {
        let mut walk = Walk::new(Vec::new(), 4_096, 20);
        assert_eq!(walk.cap(4_096), MAX_RANGE_SPANS as usize / GUESSED_SPANS_PER_TRACE);
        walk.spans_per_trace = Some(10);
        assert_eq!(walk.cap(4_096), 4_096);
        walk.spans_per_trace = Some(1_000_000);
        assert_eq!(walk.cap(4_096), 1, "one trace at least");
    }

    #[test]
    fn candidate_batches_grow_to_the_rate_seen() {
        let mut walk = Walk::new(Vec::new(), 320, 20);
        (walk.tried, walk.passed) = (320, 2);
        walk.grow_filter(18);
        assert_eq!(walk.filter, 5_760, "18 more at 1 in 160, twice");
        walk.grow_filter(0);
        assert_eq!(walk.filter, 11_520, "twofold at least");
        walk.passed = 0;
        walk.grow_filter(18);
        assert_eq!(walk.filter, MAX_FILTER_TRACES);
    }

    #[test]
    fn keys_name_their_sources() {
        use arrow::array::{ArrayRef, Int64Array, StringArray};
        use tracehouse_warehouse::trace_index::trace_id_hex;
        let file = |p: &str| DataFile {
            path: p.into(),
            size: 1,
            date: "2026-12-02".into(),
        };
        let segment = |trace: u128| {
            let ids: ArrayRef = Arc::new(StringArray::from(vec![trace_id_hex(trace)]));
            let times: ArrayRef = Arc::new(Int64Array::from(vec![1]));
            let batch = RecordBatch::try_from_iter([
                ("trace_id", ids),
                ("start_time_unix_nano", times.clone()),
                ("end_time_unix_nano", times),
            ])
            .unwrap();
            Arc::new(LiveSegment::of(vec![batch]).unwrap())
        };
        let list = SourceList {
            live: vec![segment(1), segment(2)].into(),
            files: vec![file("new"), file("old")].into(),
        };
        let name = |source: Option<SpanSource>| match source {
            Some(SpanSource::Live(s)) => format!("live {}", s.traces()[0].0),
            Some(SpanSource::File(f)) => f.path,
            None => "none".into(),
        };
        assert_eq!(name(source_of(&list, 0)), "live 2", "the newest segment first");
        assert_eq!(name(source_of(&list, -1)), "live 1");
        assert_eq!(name(source_of(&list, -2)), "new");
        assert_eq!(name(source_of(&list, -3)), "old");
        assert_eq!(name(source_of(&list, -4)), "none");
        assert_eq!(name(source_of(&list, 1)), "none");
        assert_eq!(name(source_of(&list, i64::MIN)), "none");
        let mut sources = Sources::new(Arc::new(list));
        let keys: Vec<(i64, String)> = std::iter::from_fn(|| sources.next_source())
            .map(|(k, s)| (k, name(Some(s))))
            .collect();
        let want = [(0, "live 2"), (-1, "live 1"), (-2, "new"), (-3, "old")];
        assert_eq!(keys, want.map(|(k, n)| (k, n.to_string())));
    }

    #[test]
    fn newest_entries_come_first() {
        let mut entries: Vec<Entry> = (0..10).map(|i| ((i * 7) % 10, i as u128)).collect();
        let taken = take_newest(&mut entries, 3);
        let mut starts: Vec<i64> = taken.iter().map(|e| e.0).collect();
        starts.sort_unstable();
        assert_eq!(starts, vec![7, 8, 9]);
        assert_eq!(entries.len(), 7);
        assert!(entries.iter().all(|e| e.0 < 7));
        assert_eq!(take_newest(&mut entries, 100).len(), 7);
        assert!(entries.is_empty());
    }
}
