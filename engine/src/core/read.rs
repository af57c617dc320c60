//! The read path: point lookups, conflict probes and scan sources over a column family's memtables (newest
//! first) and SSTs (by descending sequence).

use super::Core;
use super::lsm::Table;
use crate::error::{MidgeError, MidgeResult};
use crate::iter::{Input, VisibleIter};
use crate::memtable::Memtable;
use crate::sst::SstIter;
use crate::types::{ColumnFamilyId, Found, RangeTombstone, Seq};
use bytes::Bytes;
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// One consistent view of a column family's sources.
struct View {
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

impl Core {
    fn view(&self, cf: ColumnFamilyId) -> MidgeResult<View> {
        let cf = self
            .cf(cf)
            .ok_or_else(|| MidgeError::InvalidArgument(format!("unknown or dropped column family {cf}")))?;
        let v = cf.mems.read().unwrap_or_else(|p| p.into_inner());
        // Tables are kept newest first by `lsm::sort_tables` whenever the set changes.
        let view = View {
            active: v.active.clone(),
            immutable: v.immutable.clone(),
            tables: v.tables.clone(),
        };
        drop(v);
        Ok(view)
    }

    /// The newest version of `key` at or below `snapshot` and the newest covering range tombstone.
    fn lookup(&self, cf: ColumnFamilyId, key: &[u8], snapshot: Seq) -> MidgeResult<(Option<Found>, Seq)> {
        let view = self.view(cf)?;
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
            newer(mem.get(key, snapshot), &mut best);
            tomb = tomb.max(mem.covering_tombstone_seq(key, snapshot));
        }
        for t in view.tables.iter() {
            // Nothing in this or any later (older) table can beat what we have.
            if t.meta.largest_seq < best.as_ref().map_or(0, |b| b.seq).max(tomb) {
                break;
            }
            if key < t.meta.smallest_key.as_ref() || key > t.meta.largest_key.as_ref() {
                continue;
            }
            self.counters.reads_ssts.fetch_add(1, Ordering::Relaxed);
            if t.meta.level == 0 {
                self.counters.reads_l0.fetch_add(1, Ordering::Relaxed);
            }
            newer(t.reader.get(key, snapshot)?, &mut best);
            tomb = tomb.max(RangeTombstone::newest_covering(
                t.reader.range_tombstones(),
                key,
                snapshot,
            ));
        }
        self.counters.reads.fetch_add(1, Ordering::Relaxed);
        Ok((best, tomb))
    }

    /// The visible value of `key` at `snapshot` for a reader at `read_time`.
    pub fn get(
        &self,
        cf: ColumnFamilyId,
        key: &[u8],
        snapshot: Seq,
        read_time: u64,
    ) -> MidgeResult<Option<Bytes>> {
        let (best, tomb) = self.lookup(cf, key, snapshot)?;
        Ok(best
            .filter(|e| e.seq > tomb && !e.is_absent_at(read_time))
            .map(|e| e.value))
    }

    /// The sequence of the newest mutation (put, delete or covering range delete) of `key`, visible or not.
    pub fn latest_mutation_seq(&self, cf: ColumnFamilyId, key: &[u8]) -> MidgeResult<Seq> {
        let (best, tomb) = self.lookup(cf, key, Seq::MAX)?;
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

    /// Visible committed rows of `cf` within bounds at `snapshot`, lazily.
    pub fn scan_rows(
        &self,
        cf: ColumnFamilyId,
        lo: Bound<Bytes>,
        hi: Bound<Bytes>,
        reverse: bool,
        snapshot: Seq,
        read_time: u64,
    ) -> MidgeResult<VisibleIter> {
        let view = self.view(cf)?;
        let mut sources: Vec<Input> = Vec::with_capacity(1 + view.immutable.len() + view.tables.len());
        let mut tombstones: Vec<RangeTombstone> = Vec::new();
        for mem in view.mems() {
            tombstones.extend(mem.range_tombstones());
            sources.push(Input::Mem(mem.cursor(lo.clone(), hi.clone(), reverse)));
        }
        for t in view.tables.iter() {
            tombstones.extend(t.reader.range_tombstones().iter().cloned());
            let outside = match (&lo, &hi) {
                (Bound::Included(l) | Bound::Excluded(l), _) if t.meta.largest_key < *l => true,
                (_, Bound::Included(h) | Bound::Excluded(h)) if t.meta.smallest_key > *h => true,
                _ => false,
            };
            if !outside {
                sources.push(Input::Sst(SstIter::new(
                    t.reader.clone(),
                    lo.clone(),
                    hi.clone(),
                    reverse,
                )));
            }
        }
        Ok(VisibleIter::new(
            sources, reverse, snapshot, read_time, tombstones,
        ))
    }
}
