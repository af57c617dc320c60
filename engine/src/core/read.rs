//! The read path: point lookups and scan sources over a column family's memtables (newest first).

use super::Core;
use crate::error::{MidgeError, MidgeResult};
use crate::iter::{Source, VisibleIter};
use crate::types::{ColumnFamilyId, Entry, RangeTombstone, Seq};
use bytes::Bytes;
use std::ops::Bound;

impl Core {
    fn cf_or_err(&self, cf: ColumnFamilyId) -> MidgeResult<std::sync::Arc<super::CfState>> {
        self.cf(cf)
            .ok_or_else(|| MidgeError::InvalidArgument(format!("unknown or dropped column family {cf}")))
    }

    /// The newest version of `key` at or below `snapshot` and the newest covering range tombstone.
    fn lookup(&self, cf: ColumnFamilyId, key: &[u8], snapshot: Seq) -> MidgeResult<(Option<Entry>, Seq)> {
        let cf = self.cf_or_err(cf)?;
        let mut best: Option<Entry> = None;
        let mut tomb: Seq = 0;
        for mem in cf.memtables() {
            let floor = best.as_ref().map_or(0, |b| b.seq).max(tomb);
            if mem.max_seq() < floor {
                break;
            }
            if let Some(e) = mem.get(key, snapshot)
                && best.as_ref().is_none_or(|b| e.seq > b.seq)
            {
                best = Some(e);
            }
            for rt in mem.range_tombstones() {
                if rt.seq <= snapshot && rt.covers(key) {
                    tomb = tomb.max(rt.seq);
                }
            }
        }
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
        let cf = self.cf_or_err(cf)?;
        for mem in cf.memtables() {
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
            for e in mem.cursor(
                Bound::Included(start.clone()),
                Bound::Excluded(end.clone()),
                false,
            ) {
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
        let cf = self.cf_or_err(cf)?;
        let mut sources: Vec<Source> = Vec::new();
        let mut tombstones: Vec<RangeTombstone> = Vec::new();
        for mem in cf.memtables() {
            tombstones.extend(mem.range_tombstones());
            sources.push(Box::new(mem.cursor(lo.clone(), hi.clone(), reverse)));
        }
        Ok(VisibleIter::new(
            sources, reverse, snapshot, read_time, tombstones,
        ))
    }
}
