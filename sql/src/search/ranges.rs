//! Cutting a tenant's spans into trace-id ranges for search, from a histogram of trace ids
//! (the pages of the data files: smallest and largest id, rows).
//!
//! A range is evaluated alone (it holds whole traces), so a search can stop after any range.
//! The first range holds about [`FIRST_RANGE_SPANS`] spans and each next one twice as many as
//! the one before, up to [`MAX_RANGE_SPANS`]: a query that matches often reads a small slice
//! of the data, one that matches nothing reads it all once, a range at a time. Rows within a
//! page are taken as spread evenly over its ids, which holds for random trace ids and still
//! cuts skewed ones (64-bit ids fill only the low end of the id space) by where they are. A
//! range whose pages hold far more rows than the range itself (many small files, each page
//! covering much of the id space) grows until it is worth its reading.

use tracehouse_warehouse::id_range::IdRange;
use tracehouse_warehouse::trace_index::trace_id_hex;

/// Spans the first range is cut to hold.
pub const FIRST_RANGE_SPANS: u64 = 2_048;

/// Spans a range is cut to hold at most (one range is read into memory at a time).
pub const MAX_RANGE_SPANS: u64 = 131_072;

/// A range is grown while the rows of the pages it reads exceed its own by this factor.
const MAX_READ_AMPLIFICATION: f64 = 4.0;

/// One page of trace ids: smallest and largest id as positions in `[0, 1]`, and rows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Page {
    pub min: f64,
    pub max: f64,
    pub rows: f64,
}

/// The position in `[0, 1)` of a trace id in stored spelling (32 hex digits). All 128 bits
/// count, so 64-bit ids (the high half zero) get distinct, tiny positions.
pub fn position(id: &[u8]) -> f64 {
    let hex = std::str::from_utf8(&id[..id.len().min(32)]).unwrap_or("");
    let value = u128::from_str_radix(hex, 16).unwrap_or(0) as f64;
    value / 16f64.powi(hex.len().max(1) as i32)
}

/// The stored spelling of the id at `position`.
fn id_at(position: f64) -> String {
    trace_id_hex((position.clamp(0.0, 1.0) * 2f64.powi(128)) as u128)
}

/// Halvings that find a cut point: enough to part 128-bit ids near zero.
const CUT_STEPS: usize = 140;

/// The ranges of a search, cut one at a time as the search asks for them.
#[derive(Debug)]
pub struct Ranges {
    spread: Spread,
    /// Where the next range starts (`None`: all ranges given).
    next: Option<f64>,
    target: f64,
}

/// The pages as distributions: rows below any position (each page's rows spread evenly over
/// its ids, a page of one id a point), and rows of the pages that reach any interval. Built
/// once, each question answered in O(log pages).
#[derive(Debug, Default)]
struct Spread {
    /// Breakpoints: position, rows strictly below it, rows exactly at it, rows per unit of
    /// position just after it.
    points: Vec<(f64, f64, f64, f64)>,
    /// Page minimums and maximums, ascending, with the rows of the pages up to each.
    mins: Vec<(f64, f64)>,
    maxs: Vec<(f64, f64)>,
}

impl Spread {
    fn new(pages: &[Page]) -> Self {
        // (position, rows at it, change of density)
        let mut events: Vec<(f64, f64, f64)> = Vec::with_capacity(pages.len() * 2);
        for p in pages {
            let width = p.max - p.min;
            if width > 0.0 {
                events.push((p.min, 0.0, p.rows / width));
                events.push((p.max, 0.0, -p.rows / width));
            } else {
                events.push((p.min, p.rows, 0.0));
            }
        }
        events.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut points: Vec<(f64, f64, f64, f64)> = Vec::with_capacity(events.len());
        for (x, jump, delta) in events {
            if let Some(last) = points.last_mut()
                && last.0 == x
            {
                last.2 += jump;
                last.3 = (last.3 + delta).max(0.0);
                continue;
            }
            let (below, density) = match points.last() {
                Some(&(at, below, at_jump, density)) => (below + at_jump + density * (x - at), density),
                None => (0.0, 0.0),
            };
            points.push((x, below, jump, (density + delta).max(0.0)));
        }
        let prefix = |mut v: Vec<(f64, f64)>| {
            v.sort_by(|a, b| a.0.total_cmp(&b.0));
            let mut sum = 0.0;
            v.into_iter()
                .map(|(x, rows)| {
                    sum += rows;
                    (x, sum)
                })
                .collect::<Vec<_>>()
        };
        Self {
            points,
            mins: prefix(pages.iter().map(|p| (p.min, p.rows)).collect()),
            maxs: prefix(pages.iter().map(|p| (p.max, p.rows)).collect()),
        }
    }

    /// Rows with ids strictly below `x`.
    fn below(&self, x: f64) -> f64 {
        let i = self.points.partition_point(|p| p.0 < x);
        let Some(&(at, below, jump, density)) = i.checked_sub(1).and_then(|i| self.points.get(i)) else {
            return 0.0;
        };
        // Past the last page the density is zero (up to rounding).
        let spread = if x.is_finite() { density * (x - at) } else { 0.0 };
        below + jump + spread
    }

    /// Rows of the pages whose ids reach `[low, high)`.
    fn read(&self, low: f64, high: f64) -> f64 {
        let upto = |v: &[(f64, f64)], x: f64| {
            let i = v.partition_point(|p| p.0 < x);
            i.checked_sub(1).map_or(0.0, |i| v[i].1)
        };
        (upto(&self.mins, high) - upto(&self.maxs, low)).max(0.0)
    }
}

impl Ranges {
    pub fn new(pages: Vec<Page>) -> Self {
        Self {
            spread: Spread::new(&pages),
            next: Some(0.0),
            target: FIRST_RANGE_SPANS as f64,
        }
    }

    /// Estimated rows with ids in `[low, high)` (`high` 1.0: to the end), and rows of the
    /// pages that reach it.
    fn rows(&self, low: f64, high: f64) -> (f64, f64) {
        let end = if high >= 1.0 { f64::INFINITY } else { high };
        let inside = self.spread.below(end) - self.spread.below(low);
        (inside.max(0.0), self.spread.read(low, end))
    }

    /// The end of the range from `low` that holds about `target` rows (1.0: the rest).
    fn end_for(&self, low: f64, target: f64) -> f64 {
        if self.rows(low, 1.0).0 <= target {
            return 1.0;
        }
        let (mut lo, mut hi) = (low, 1.0);
        for _ in 0..CUT_STEPS {
            let mid = (lo + hi) / 2.0;
            if self.rows(low, mid).0 < target {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        hi
    }
}

impl Iterator for Ranges {
    type Item = IdRange;

    fn next(&mut self) -> Option<IdRange> {
        let low = self.next?;
        let mut target = self.target;
        let mut high = self.end_for(low, target);
        while high < 1.0 && target < MAX_RANGE_SPANS as f64 {
            let (inside, read) = self.rows(low, high);
            if read <= inside.max(1.0) * MAX_READ_AMPLIFICATION {
                break;
            }
            target = (target * 2.0).min(MAX_RANGE_SPANS as f64);
            high = self.end_for(low, target);
        }
        self.target = (target * 2.0).min(MAX_RANGE_SPANS as f64);
        let (low_id, high_id) = (id_at(low), id_at(high));
        // Cut points share the spelling of their position: a range too thin to part two ids is
        // merged into the next.
        if high < 1.0 && high_id <= low_id {
            self.next = Some(high);
            return self.next();
        }
        self.next = (high < 1.0).then_some(high);
        Some(IdRange {
            low: (low > 0.0).then_some(low_id),
            high: (high < 1.0).then_some(high_id),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uniform(files: usize, pages_per_file: usize, rows: f64) -> Vec<Page> {
        let mut out = Vec::new();
        for _ in 0..files {
            for p in 0..pages_per_file {
                let w = 1.0 / pages_per_file as f64;
                out.push(Page {
                    min: p as f64 * w,
                    max: (p + 1) as f64 * w,
                    rows,
                });
            }
        }
        out
    }

    fn check_cover(ranges: &[IdRange]) {
        assert!(ranges.first().is_some_and(|r| r.low.is_none()));
        assert!(ranges.last().is_some_and(|r| r.high.is_none()));
        for w in ranges.windows(2) {
            assert_eq!(w[0].high, w[1].low, "ranges meet");
            assert!(w[1].low.is_some());
        }
        for r in ranges {
            if let (Some(l), Some(h)) = (&r.low, &r.high) {
                assert!(l < h, "{l} < {h}");
            }
        }
    }

    #[test]
    fn ranges_grow_from_small_and_cover_the_id_space() {
        // 500k spans in 2 files of 4,096-row pages.
        let ranges: Vec<IdRange> = Ranges::new(uniform(2, 61, 4096.0)).collect();
        check_cover(&ranges);
        assert!(ranges.len() >= 5 && ranges.len() <= 12, "{}", ranges.len());
        let first = ranges[0].high.as_deref().map(|h| position(h.as_bytes())).unwrap();
        assert!(first < 0.01, "the first range is a small slice: {first}");
    }

    #[test]
    fn many_small_files_are_read_in_few_ranges() {
        // 200 files of one page each, every page spanning the whole id space.
        let ranges: Vec<IdRange> = Ranges::new(uniform(200, 1, 2500.0)).collect();
        check_cover(&ranges);
        assert!(ranges.len() <= 4, "{}", ranges.len());
    }

    #[test]
    fn skewed_ids_are_cut_where_they_are() {
        // 64-bit ids: the high half zero, all in the lowest 2^-64 of the space.
        let pages: Vec<Page> = (0..100)
            .map(|i| Page {
                min: i as f64 * 1e-22,
                max: (i + 1) as f64 * 1e-22,
                rows: 4096.0,
            })
            .collect();
        let ranges: Vec<IdRange> = Ranges::new(pages).collect();
        check_cover(&ranges);
        assert!(ranges.len() >= 5, "{}", ranges.len());
    }

    #[test]
    fn spread_answers_as_summing_every_page() {
        // Pages of varied widths, overlapping, some of a single id.
        let mut seed = 7u64;
        let mut next = || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 11) as f64 / (1u64 << 53) as f64
        };
        let pages: Vec<Page> = (0..300)
            .map(|i| {
                let (a, b) = (next(), next());
                let (min, max) = if i % 7 == 0 { (a, a) } else { (a.min(b), a.max(b)) };
                Page {
                    min,
                    max,
                    rows: 1.0 + (next() * 4096.0).floor(),
                }
            })
            .collect();
        let ranges = Ranges::new(pages.clone());
        for _ in 0..200 {
            let (a, b) = (next(), next());
            let (low, high) = (a.min(b), a.max(b));
            let (mut inside, mut read) = (0.0, 0.0);
            for p in &pages {
                if p.max < low || p.min >= high {
                    continue;
                }
                read += p.rows;
                inside += match p.max > p.min {
                    true => p.rows * ((p.max.min(high) - p.min.max(low)) / (p.max - p.min)).clamp(0.0, 1.0),
                    false => p.rows,
                };
            }
            let (i, r) = ranges.rows(low, high);
            assert!(
                (i - inside).abs() < 1e-6 * inside.max(1.0) + 1e-6,
                "inside {i} vs {inside}"
            );
            assert!((r - read).abs() < 1e-9, "read {r} vs {read}");
        }
    }

    #[test]
    fn no_pages_is_one_range() {
        let ranges: Vec<IdRange> = Ranges::new(Vec::new()).collect();
        assert_eq!(ranges, vec![IdRange::default()]);
    }

    #[test]
    fn positions_follow_ids() {
        assert_eq!(position(b"00000000000000000000000000000000"), 0.0);
        assert!(position(b"0000000000000000000000000000000f") > 0.0);
        assert!((position(b"80000000000000000000000000000000") - 0.5).abs() < 1e-12);
        assert_eq!(id_at(0.5), "80000000000000000000000000000000");
    }
}
