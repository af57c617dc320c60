//! The read path: point lookups, conflict probes and scan sources over a column family's memtables (newest
//! first) and SSTs (by descending sequence).

use super::lsm::Table;
use super::{CfState, Core};
use crate::error::{MidgeError, MidgeResult};
use crate::iter::{Input, VisibleIter};
use crate::memtable::Memtable;
use crate::sst::{RunIter, SstIter, disjoint_runs, key_hash};
use crate::types::{ColumnFamilyId, Found, RangeTombstone, Seq, key_within};
use bytes::Bytes;
use std::ops::Bound;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

/// L0 bytes one charged read pays for (see `Core::charge_read`).
const BYTES_PER_CHARGE: u64 = 16 << 10;
/// Charges between checks of whether they pay for a compaction.
const CHARGE_CHECK: u64 = 64;

/// One consistent view of a column family's sources.
#[derive(Debug)]
struct View {
    cf: Arc<CfState>,
    active: Arc<Memtable>,
    /// Oldest first (read in reverse); empty, so not allocated, unless a flush is pending.
    immutable: Arc<Vec<Arc<Memtable>>>,
    tables: Arc<Vec<Arc<Table>>>,
}

impl View {
    /// Memtables newest first.
    fn mems(&self) -> impl Iterator<Item = &Arc<Memtable>> {
        std::iter::once(&self.active).chain(self.immutable.iter().rev())
    }
}

/// A transaction's cached [`View`] of one column family, valid while the column family's generation is
/// unchanged (see [`super::CfState::generation`]). Reads through it skip the column-family map lock, the
/// memtable-set lock and three shared reference counts, all contended when writers run alongside.
#[derive(Debug, Default)]
pub(crate) struct ViewCache(Mutex<Option<CachedView>>);

#[derive(Debug)]
struct CachedView {
    cf: Arc<CfState>,
    generation: u64,
    view: View,
}

impl Core {
    /// Runs `f` on a current view of `cf`, reusing the one in `cache` while it is current.
    fn with_view<R>(
        &self,
        cf: ColumnFamilyId,
        cache: &ViewCache,
        f: impl FnOnce(&View) -> MidgeResult<R>,
    ) -> MidgeResult<R> {
        let mut c = cache.0.lock().unwrap_or_else(|p| p.into_inner());
        let cached = match c.take() {
            Some(v) if v.cf.id == cf && v.cf.generation.load(Ordering::Acquire) == v.generation => v,
            _ => self.current_view(cf)?,
        };
        f(&c.insert(cached).view)
    }

    /// The column family's sources now, with the generation they belong to.
    fn current_view(&self, cf: ColumnFamilyId) -> MidgeResult<CachedView> {
        let state = self
            .cf(cf)
            .ok_or_else(|| MidgeError::InvalidArgument(format!("unknown or dropped column family {cf}")))?;
        let m = state.mems.read().unwrap_or_else(|p| p.into_inner());
        // Read under the lock: `mems_mut` bumps it while holding the write lock.
        let generation = state.generation.load(Ordering::Acquire);
        // Tables are kept newest first by `lsm::sort_tables` whenever the set changes.
        let view = View {
            cf: state.clone(),
            active: m.active.clone(),
            immutable: m.immutable.clone(),
            tables: m.tables.clone(),
        };
        drop(m);
        Ok(CachedView {
            cf: state,
            generation,
            view,
        })
    }

    fn view(&self, cf: ColumnFamilyId) -> MidgeResult<View> {
        Ok(self.current_view(cf)?.view)
    }

    /// The newest version of `key` at or below `snapshot` and the newest covering range tombstone; a user's
    /// read (`charge`) that consulted several tables is charged for a read compaction.
    fn lookup(
        &self,
        view: &View,
        key: &[u8],
        snapshot: Seq,
        charge: bool,
    ) -> MidgeResult<(Option<Found>, Seq)> {
        let mut best: Option<Found> = None;
        let mut tomb: Seq = 0;
        let newer = |e: Option<Found>, best: &mut Option<Found>| {
            if let Some(e) = e
                && best.as_ref().is_none_or(|b| e.seq > b.seq)
            {
                *best = Some(e);
            }
        };
        for mem in view.mems() {
            // Nothing here for this snapshot: skip the point-index probe and the lock on its range tombstones.
            if !mem.holds_any_at(snapshot) {
                continue;
            }
            newer(mem.get(key, snapshot), &mut best);
            tomb = tomb.max(mem.covering_tombstone_seq(key, snapshot));
        }
        // Every table whose range holds the key checks its bloom filter, each a likely cache miss: start them
        // all now so they overlap instead of queueing one behind the other (and hash the key once).
        let h = key_hash(key);
        for t in view.tables.iter() {
            if t.meta.largest_seq < best.as_ref().map_or(0, |b| b.seq).max(tomb) {
                break;
            }
            if key_within(key, &t.meta.smallest_key, &t.meta.largest_key) {
                t.reader.prefetch_filter(h);
            }
        }
        let (mut touched, mut l0) = (0u32, 0u32);
        for t in view.tables.iter() {
            // Nothing in this or any later (older) table can beat what we have.
            if t.meta.largest_seq < best.as_ref().map_or(0, |b| b.seq).max(tomb) {
                break;
            }
            // Inline word compares: a slice compare is a `memcmp` call, two per table on every lookup.
            if !key_within(key, &t.meta.smallest_key, &t.meta.largest_key) {
                continue;
            }
            touched += 1;
            self.counters.reads_ssts.fetch_add(1, Ordering::Relaxed);
            if t.meta.level == 0 {
                l0 += 1;
                self.counters.reads_l0.fetch_add(1, Ordering::Relaxed);
            }
            newer(t.reader.get_hashed(key, h, snapshot)?, &mut best);
            tomb = tomb.max(RangeTombstone::newest_covering(
                t.reader.range_tombstones(),
                key,
                snapshot,
            ));
        }
        self.counters.reads.fetch_add(1, Ordering::Relaxed);
        if charge && touched >= 2 && l0 >= 1 {
            self.charge_read(view);
        }
        Ok((best, tomb))
    }

    /// Charges a read that consulted an L0 table and another one to its column family. Once the charges pay
    /// for compacting L0 — one per [`BYTES_PER_CHARGE`] of L0, as in LevelDB's seek compaction — L0 is folded
    /// into L1 in the background although it is below its file-count trigger, so a read-mostly phase after a
    /// load stops merging overlapping tables on every read. An inline executor (wasm32) would run that
    /// compaction inside this read, so there the fold is only recorded as due: it runs with the column
    /// family's next background work (a flush) or when the embedder calls `Engine::run_pending_work`.
    fn charge_read(&self, view: &View) {
        if !self.opts.background_compaction {
            return;
        }
        let cf = &view.cf;
        let after = cf.read_charges.fetch_add(1, Ordering::Relaxed) + 1;
        if !after.is_multiple_of(CHARGE_CHECK) {
            return;
        }
        let l0: u64 = view
            .tables
            .iter()
            .filter(|t| t.meta.level == 0)
            .map(|t| t.meta.size)
            .sum();
        if after.saturating_mul(BYTES_PER_CHARGE) < l0 {
            return;
        }
        cf.read_charges.store(0, Ordering::Relaxed);
        if !cf.read_compaction.swap(true, Ordering::AcqRel)
            && !self.executor.is_inline()
            && let Some(core) = self.me.upgrade()
        {
            core.schedule(cf.clone());
        }
    }

    /// The visible value of `key` at `snapshot` for a reader at `read_time`.
    pub fn get(
        &self,
        cf: ColumnFamilyId,
        key: &[u8],
        snapshot: Seq,
        read_time: u64,
    ) -> MidgeResult<Option<Bytes>> {
        let (best, tomb) = self.lookup(&self.view(cf)?, key, snapshot, true)?;
        Ok(visible(best, tomb, read_time))
    }

    /// [`Core::get`] through a transaction's [`ViewCache`].
    pub fn get_cached(
        &self,
        cf: ColumnFamilyId,
        cache: &ViewCache,
        key: &[u8],
        snapshot: Seq,
        read_time: u64,
    ) -> MidgeResult<Option<Bytes>> {
        let (best, tomb) = self.with_view(cf, cache, |v| self.lookup(v, key, snapshot, true))?;
        Ok(visible(best, tomb, read_time))
    }

    /// The sequence of the newest mutation (put, delete or covering range delete) of `key`, visible or not.
    pub fn latest_mutation_seq(&self, cf: ColumnFamilyId, key: &[u8]) -> MidgeResult<Seq> {
        // A commit's conflict probe: not a read to charge (a write load must not trigger read compactions).
        let (best, tomb) = self.lookup(&self.view(cf)?, key, Seq::MAX, false)?;
        Ok(best.map_or(0, |e| e.seq).max(tomb))
    }

    /// Whether any key in `[start, end)` was mutated, or a range delete overlapping it was logged, after
    /// `snapshot`.
    pub fn range_modified_after(
        &self,
        cf: ColumnFamilyId,
        start: &Bytes,
        end: &Bytes,
        snapshot: Seq,
    ) -> MidgeResult<bool> {
        let view = self.view(cf)?;
        let lo = Bound::Included(start.clone());
        let hi = Bound::Excluded(end.clone());
        for mem in view.mems() {
            if mem.max_seq() <= snapshot {
                continue;
            }
            if mem
                .range_tombstones()
                .iter()
                .any(|t| t.seq > snapshot && t.start < *end && *start < t.end)
            {
                return Ok(true);
            }
            for e in mem.cursor(lo.clone(), hi.clone(), false) {
                if e?.seq > snapshot {
                    return Ok(true);
                }
            }
        }
        for t in view.tables.iter().filter(|t| t.meta.largest_seq > snapshot) {
            if t.reader
                .range_tombstones()
                .iter()
                .any(|r| r.seq > snapshot && r.start < *end && *start < r.end)
            {
                return Ok(true);
            }
            for e in SstIter::new(t.reader.clone(), lo.clone(), hi.clone(), false) {
                if e?.seq > snapshot {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// Visible committed rows of `cf` within bounds at `snapshot`, lazily, through a transaction's
    /// [`ViewCache`] (a transaction that scans many times, e.g. short seeks, builds the view once).
    pub fn scan_rows_cached(
        &self,
        cf: ColumnFamilyId,
        cache: &ViewCache,
        (lo, hi): (Bound<Bytes>, Bound<Bytes>),
        reverse: bool,
        snapshot: Seq,
        read_time: u64,
    ) -> MidgeResult<VisibleIter> {
        self.with_view(cf, cache, |v| {
            let (rows, overlap) = scan_view(v, lo, hi, reverse, snapshot, read_time);
            if overlap {
                self.charge_read(v);
            }
            Ok(rows)
        })
    }
}

/// A lazy scan of `view` within bounds at `snapshot`, and whether it merges an L0 table with another table.
fn scan_view(
    view: &View,
    lo: Bound<Bytes>,
    hi: Bound<Bytes>,
    reverse: bool,
    snapshot: Seq,
    read_time: u64,
) -> (VisibleIter, bool) {
    let mut sources: Vec<Input> = Vec::with_capacity(1 + view.immutable.len() + view.tables.len());
    let mut tombstones: Vec<RangeTombstone> = Vec::new();
    for mem in view.mems() {
        if mem.holds_any_at(snapshot) {
            mem.extend_range_tombstones(&mut tombstones);
            sources.push(Input::Mem(mem.cursor(lo.clone(), hi.clone(), reverse)));
        }
    }
    let (mut tables, mut l0) = (0, false);
    // Tables below L0: each level's disjoint tables are read as runs (one merge input per run).
    let mut deeper: Vec<&Arc<Table>> = Vec::new();
    for t in view.tables.iter() {
        tombstones.extend(t.reader.range_tombstones().iter().cloned());
        // Tables wholly outside the bounds contribute no versions (their range tombstones still count).
        let outside = match (&lo, &hi) {
            (Bound::Included(l) | Bound::Excluded(l), _) if t.meta.largest_key < *l => true,
            (_, Bound::Excluded(h)) if t.meta.smallest_key >= *h => true,
            (_, Bound::Included(h)) if t.meta.smallest_key > *h => true,
            _ => false,
        };
        if outside {
            continue;
        }
        tables += 1;
        if t.meta.level == 0 {
            l0 = true;
            let it = SstIter::new(t.reader.clone(), lo.clone(), hi.clone(), reverse);
            sources.push(Input::Sst(it));
        } else {
            deeper.push(t);
        }
    }
    for run in disjoint_runs(&mut deeper, |t| {
        (t.meta.level, &t.meta.smallest_key, &t.meta.largest_key)
    }) {
        sources.push(match run {
            [only] => Input::Sst(SstIter::new(only.reader.clone(), lo.clone(), hi.clone(), reverse)),
            _ => {
                let readers = run.iter().map(|t| t.reader.clone()).collect();
                Input::Run(RunIter::new(readers, lo.clone(), hi.clone(), reverse))
            }
        });
    }
    let rows = VisibleIter::new(sources, reverse, snapshot, read_time, tombstones);
    (rows, tables >= 2 && l0)
}

/// The value a lookup's newest version and newest covering tombstone leave visible at `read_time`.
fn visible(best: Option<Found>, tomb: Seq, read_time: u64) -> Option<Bytes> {
    best.filter(|e| e.seq > tomb && !e.is_absent_at(read_time))
        .map(|e| e.value)
}
