//! Transaction-local state: the buffered write set, read-your-own-writes resolution, assertions and insert
//! checks, and snapshot pins.
//!
//! Nothing here touches the WAL or memtables: a write set becomes durable only through the core's commit path.
//! Conflict detection against committed data also lives in the core (it needs the read path).

use crate::types::{MAX_KEY_SIZE, MAX_VALUE_SIZE, Seq};
use crate::wal::record::WalOp;
use crate::{MidgeError, MidgeResult};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::ops::{Bound, RangeBounds};
use std::sync::Mutex;

/// What a transaction may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransactionMode {
    /// Reads only; any write is `InvalidArgument`; commit is a no-op.
    ReadOnly,
    /// Reads and buffered writes, applied atomically at commit.
    ReadWrite,
}

/// What commit does when another transaction wrote the same keys after this one began.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ConflictPolicy {
    /// Commit anyway; the later commit wins (default). Lost updates are possible.
    #[default]
    LastWriteWins,
    /// Fail with `WriteConflict` if any written key or deleted range was modified after `begin_tx`.
    AbortOnWriteConflict,
}

/// A transaction's own view of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Own {
    /// Not touched by this transaction: read the snapshot.
    Untouched,
    /// Written by this transaction (`None` = deleted).
    Value(Option<Bytes>),
}

/// A transaction's own rows in a range (`None` = deleted) and its range deletes.
pub(crate) type Overlay = (Vec<(Bytes, Option<Bytes>)>, Vec<(Bytes, Bytes)>);

/// The buffered writes of one transaction, in op order.
#[derive(Debug, Default)]
pub(crate) struct WriteSet {
    pub ops: Vec<WalOp>,
    /// Latest op index per point key, for sets of more than [`INDEX_AFTER`] ops (a smaller set is searched by
    /// scanning `ops`). Built by the first lookup that needs it and caught up with later ops by each lookup,
    /// never by a write: a transaction that only writes (a bulk load) clones no key (a `Bytes` clone of a
    /// vector allocates a shared header) and allocates no tree node.
    points: Mutex<PointIndex>,
    /// Range deletes with their op index.
    ranges: Vec<(Bytes, Bytes, usize)>,
    /// Keys inserted (must not exist at commit unless this txn deleted them first).
    pub inserts: Vec<Bytes>,
}

/// Ops a write set holds before it indexes its point keys (see [`WriteSet::points`]).
const INDEX_AFTER: usize = 8;

/// See [`WriteSet::points`].
#[derive(Debug, Default)]
struct PointIndex {
    latest: BTreeMap<Bytes, usize>,
    /// Ops `..upto` are indexed.
    upto: usize,
}

pub(crate) fn check_key(key: &[u8]) -> MidgeResult<()> {
    if key.is_empty() {
        return Err(MidgeError::InvalidArgument("keys must be non-empty".into()));
    }
    if key.len() > MAX_KEY_SIZE {
        return Err(MidgeError::InvalidArgument(format!(
            "key of {} bytes exceeds {MAX_KEY_SIZE}",
            key.len()
        )));
    }
    Ok(())
}

pub(crate) fn check_value(v: &[u8]) -> MidgeResult<()> {
    if v.len() > MAX_VALUE_SIZE {
        return Err(MidgeError::InvalidArgument(format!(
            "value of {} bytes exceeds {MAX_VALUE_SIZE}",
            v.len()
        )));
    }
    Ok(())
}

/// The key of a point write (`None` for a range delete).
fn point_key(op: &WalOp) -> Option<&Bytes> {
    match op {
        WalOp::Put { key, .. } | WalOp::Delete { key } => Some(key),
        WalOp::DeleteRange { .. } => None,
    }
}

impl WriteSet {
    /// Range deletes covering `key` issued after op index `after` (or at all when `None`).
    fn range_after(&self, key: &[u8], after: Option<usize>) -> bool {
        self.ranges
            .iter()
            .any(|(s, e, i)| s.as_ref() <= key && key < e.as_ref() && after.is_none_or(|a| *i > a))
    }

    fn indexed(&self) -> bool {
        self.ops.len() > INDEX_AFTER
    }

    /// Runs `f` on the point index, first indexing the ops added since the last lookup (later ones win).
    fn with_points<R>(&self, f: impl FnOnce(&BTreeMap<Bytes, usize>) -> R) -> R {
        let mut p = self.points.lock().unwrap_or_else(|e| e.into_inner());
        for i in p.upto..self.ops.len() {
            if let Some(k) = self.ops.get(i).and_then(point_key) {
                p.latest.insert(k.clone(), i);
            }
        }
        p.upto = self.ops.len();
        f(&p.latest)
    }

    /// The index of the latest point write of `key`.
    fn latest(&self, key: &[u8]) -> Option<usize> {
        if self.indexed() {
            self.with_points(|p| p.get(key).copied())
        } else {
            self.ops
                .iter()
                .rposition(|op| point_key(op).is_some_and(|k| k.as_ref() == key))
        }
    }

    /// This transaction's latest intent for `key`.
    pub fn own(&self, key: &[u8]) -> Own {
        match self.latest(key) {
            Some(i) => {
                if self.range_after(key, Some(i)) {
                    return Own::Value(None);
                }
                match &self.ops[i] {
                    WalOp::Put { value, .. } => Own::Value(Some(value.clone())),
                    _ => Own::Value(None),
                }
            }
            None if self.range_after(key, None) => Own::Value(None),
            None => Own::Untouched,
        }
    }

    /// Appends an op (indexed by the next lookup that needs it).
    fn push(&mut self, op: WalOp) {
        self.ops.push(op);
    }

    pub fn put(&mut self, key: Bytes, value: Bytes, expiry: Option<u64>) {
        self.push(WalOp::Put { key, value, expiry });
    }

    pub fn delete(&mut self, key: Bytes) {
        self.push(WalOp::Delete { key });
    }

    pub fn delete_range(&mut self, start: Bytes, end: Bytes) {
        self.ranges.push((start.clone(), end.clone(), self.ops.len()));
        self.push(WalOp::DeleteRange { start, end });
    }

    /// Distinct point keys written, in key order, within `lo..hi`.
    fn keys_in<'a>(&'a self, lo: Bound<&[u8]>, hi: Bound<&[u8]>) -> Vec<&'a Bytes> {
        if self.indexed() {
            // Each key as its latest op holds it (the index's own copy cannot outlive the lock).
            return self.with_points(|p| {
                p.range::<[u8], _>((lo, hi))
                    .filter_map(|(_, &i)| self.ops.get(i).and_then(point_key))
                    .collect()
            });
        }
        let mut keys: Vec<&Bytes> = self
            .ops
            .iter()
            .filter_map(point_key)
            .filter(|k| RangeBounds::<[u8]>::contains(&(lo, hi), k.as_ref()))
            .collect();
        keys.sort_unstable();
        keys.dedup();
        keys
    }

    /// Distinct point keys written, in key order (for conflict checks).
    pub fn point_keys(&self) -> Vec<&Bytes> {
        self.keys_in(Bound::Unbounded, Bound::Unbounded)
    }

    /// Ranges deleted (for conflict checks).
    pub fn ranges(&self) -> impl Iterator<Item = (&Bytes, &Bytes)> {
        self.ranges.iter().map(|(s, e, _)| (s, e))
    }

    /// This transaction's resolved rows within bounds, in key order: `(key, Some(value))` for writes,
    /// `(key, None)` for deletes, and the range deletes (which hide older committed rows).
    pub fn overlay(&self, lo: &Bound<Bytes>, hi: &Bound<Bytes>) -> Overlay {
        fn bound(b: &Bound<Bytes>) -> Bound<&[u8]> {
            b.as_ref().map(|k| k.as_ref())
        }
        let rows = self
            .keys_in(bound(lo), bound(hi))
            .into_iter()
            .map(|k| match self.own(k) {
                Own::Value(v) => (k.clone(), v),
                Own::Untouched => (k.clone(), None),
            })
            .collect();
        let ranges = self
            .ranges
            .iter()
            .map(|(s, e, _)| (s.clone(), e.clone()))
            .collect();
        (rows, ranges)
    }
}

/// Live snapshot pins: how many transactions read at each sequence.
///
/// A vector sorted by sequence rather than a map: snapshots are taken in sequence order, so a pin appends and
/// the vector keeps its capacity, where a map allocated and freed a node for every transaction.
#[derive(Debug, Default)]
pub(crate) struct SnapshotRegistry {
    /// `(sequence, ref count, pinned-at ms)`, ascending by sequence.
    pins: Mutex<Vec<(Seq, usize, u64)>>,
}

impl SnapshotRegistry {
    /// Pins `seq` (taken at `now_ms`).
    pub fn pin(&self, seq: Seq, now_ms: u64) {
        let mut p = self.pins.lock().unwrap_or_else(|e| e.into_inner());
        match p.binary_search_by_key(&seq, |e| e.0) {
            Ok(i) => {
                if let Some(e) = p.get_mut(i) {
                    e.1 += 1;
                }
            }
            Err(i) => p.insert(i, (seq, 1, now_ms)),
        }
    }

    pub fn unpin(&self, seq: Seq) {
        let mut p = self.pins.lock().unwrap_or_else(|e| e.into_inner());
        if let Ok(i) = p.binary_search_by_key(&seq, |e| e.0)
            && let Some(e) = p.get_mut(i)
        {
            e.1 -= 1;
            if e.1 == 0 {
                p.remove(i);
            }
        }
    }

    /// The oldest pinned sequence, if any (the garbage-collection horizon for compaction).
    pub fn oldest(&self) -> Option<Seq> {
        self.pins
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .first()
            .map(|e| e.0)
    }

    /// `(sequence, ref count, pinned-at ms)` for each pinned snapshot.
    pub fn list(&self) -> Vec<(Seq, usize, u64)> {
        self.pins.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn count(&self) -> usize {
        self.pins
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|e| e.1)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::from(s.to_string())
    }

    #[test]
    fn later_point_write_supersedes_earlier_range_delete_and_vice_versa() {
        let mut w = WriteSet::default();
        w.put(b("k"), b("1"), None);
        w.delete_range(b("a"), b("z"));
        assert_eq!(w.own(b"k"), Own::Value(None));
        assert_eq!(w.own(b"m"), Own::Value(None));
        assert_eq!(w.own(b"zz"), Own::Untouched);
        w.put(b("k"), b("2"), None);
        assert_eq!(w.own(b"k"), Own::Value(Some(b("2"))));
        w.delete(b("k"));
        assert_eq!(w.own(b"k"), Own::Value(None));
        let (rows, ranges) = w.overlay(&Bound::Unbounded, &Bound::Unbounded);
        assert_eq!(rows, vec![(b("k"), None)]);
        assert_eq!(ranges.len(), 1);
    }

    /// The write set answers like a plain scan of its ops in order, below and above the size at which it
    /// indexes its point keys.
    #[test]
    fn small_and_indexed_write_sets_resolve_like_a_scan_of_the_ops() {
        use proptest::prelude::*;
        #[derive(Debug, Clone)]
        enum Op {
            Put(u8, u8),
            Del(u8),
            Range(u8, u8),
        }
        let op = prop_oneof![
            (0u8..12, any::<u8>()).prop_map(|(k, v)| Op::Put(k, v)),
            (0u8..12).prop_map(Op::Del),
            (0u8..12, 0u8..12).prop_map(|(a, b)| Op::Range(a.min(b), a.max(b) + 1)),
        ];
        let key = |k: u8| Bytes::from(vec![b'k', b'a' + k]);
        proptest!(|(ops in proptest::collection::vec(op, 0..(3 * INDEX_AFTER)))| {
            // The model: the last op (of the first `n`) touching a key decides it.
            let model_at = |n: usize, k: u8| -> Own {
                for op in ops[..n].iter().rev() {
                    match *op {
                        Op::Put(x, v) if x == k => return Own::Value(Some(Bytes::from(vec![v]))),
                        Op::Del(x) if x == k => return Own::Value(None),
                        Op::Range(a, b) if a <= k && k < b => return Own::Value(None),
                        _ => {}
                    }
                }
                Own::Untouched
            };
            let mut w = WriteSet::default();
            for (i, op) in ops.iter().enumerate() {
                match *op {
                    Op::Put(k, v) => w.put(key(k), Bytes::from(vec![v]), None),
                    Op::Del(k) => w.delete(key(k)),
                    Op::Range(a, b) => w.delete_range(key(a), key(b)),
                }
                // Reads between writes: the lazily built index catches up with the ops added since.
                if i % 3 == 0 {
                    let k = (i % 13) as u8;
                    prop_assert_eq!(w.own(&key(k)), model_at(i + 1, k));
                }
            }
            let model = |k: u8| model_at(ops.len(), k);
            let mut written: Vec<u8> = ops
                .iter()
                .filter_map(|op| match *op {
                    Op::Put(k, _) | Op::Del(k) => Some(k),
                    Op::Range(..) => None,
                })
                .collect();
            written.sort_unstable();
            written.dedup();
            for k in 0..13 {
                prop_assert_eq!(w.own(&key(k)), model(k));
            }
            let keys: Vec<Bytes> = written.iter().map(|&k| key(k)).collect();
            prop_assert_eq!(w.point_keys().into_iter().cloned().collect::<Vec<_>>(), keys);
            let (lo, hi) = (3u8, 9u8);
            let (rows, ranges) = w.overlay(&Bound::Included(key(lo)), &Bound::Excluded(key(hi)));
            let want: Vec<(Bytes, Option<Bytes>)> = written
                .iter()
                .filter(|&&k| lo <= k && k < hi)
                .map(|&k| match model(k) {
                    Own::Value(v) => (key(k), v),
                    Own::Untouched => (key(k), None),
                })
                .collect();
            prop_assert_eq!(rows, want);
            prop_assert_eq!(ranges.len(), ops.iter().filter(|o| matches!(o, Op::Range(..))).count());
        });
    }

    #[test]
    fn key_and_value_limits_are_typed_errors() {
        assert!(check_key(b"").is_err());
        assert!(check_key(&vec![0; MAX_KEY_SIZE]).is_ok());
        assert!(check_key(&vec![0; MAX_KEY_SIZE + 1]).is_err());
        assert!(check_value(&vec![0; MAX_VALUE_SIZE + 1]).is_err());
    }

    #[test]
    fn snapshot_pins_count_and_release() {
        let r = SnapshotRegistry::default();
        r.pin(5, 0);
        r.pin(5, 0);
        r.pin(9, 0);
        assert_eq!(r.oldest(), Some(5));
        assert_eq!(r.count(), 3);
        r.unpin(5);
        r.unpin(5);
        assert_eq!(r.oldest(), Some(9));
        // Out of order, and unpinning what is not pinned changes nothing.
        r.pin(7, 1);
        r.pin(3, 2);
        r.unpin(4);
        assert_eq!(r.list(), vec![(3, 1, 2), (7, 1, 1), (9, 1, 0)]);
        r.unpin(3);
        r.unpin(9);
        r.unpin(7);
        assert_eq!((r.oldest(), r.count()), (None, 0));
    }
}
