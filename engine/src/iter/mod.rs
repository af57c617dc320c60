//! Read-side iteration: a k-way merge of version streams and the MVCC visibility filter that turns versions
//! into user rows (newest version at or below the snapshot wins; point tombstones, covering range tombstones and
//! expired values hide it), forward or reverse.
//!
//! Sources are any `Iterator<Item = MidgeResult<Entry>>` in internal order (or exactly reversed): memtable
//! cursors and SST cursors. This module does no I/O of its own and knows nothing about files.

use crate::error::MidgeResult;
use crate::memtable::MemCursor;
use crate::sst::{RunIter, SstIter};
use crate::types::{Entry, RangeTombstone, Seq, cmp_internal, cmp_keys, keys_eq};
use bytes::Bytes;
use std::cmp::Ordering;

/// A stream of versions.
#[cfg(test)]
pub(crate) type Source = Box<dyn Iterator<Item = MidgeResult<Entry>> + Send>;

/// A positioned stream of versions read in place: `current` borrows the version under the cursor, so merging
/// and filtering clone nothing until a row is returned. A new cursor is before its first version; `advance`
/// moves to the next one (the first call positions it).
pub(crate) trait Cursor {
    /// The version under the cursor; `None` before the first `advance` and at the end.
    fn current(&self) -> Option<&Entry>;
    /// Moves to the next version. After an error the cursor is at its end.
    fn advance(&mut self) -> MidgeResult<()>;
    /// True when the version after the current one is known, without comparing keys, to belong to another
    /// key (false when unknown).
    fn next_key_differs(&self) -> bool {
        false
    }
}

/// Adapts any [`Source`] to a [`Cursor`].
#[cfg(test)]
pub(crate) struct IterCursor {
    it: Source,
    cur: Option<Entry>,
}

#[cfg(test)]
impl Cursor for IterCursor {
    fn current(&self) -> Option<&Entry> {
        self.cur.as_ref()
    }
    fn advance(&mut self) -> MidgeResult<()> {
        self.cur = None;
        self.cur = self.it.next().transpose()?;
        Ok(())
    }
}

/// One merge input: a memtable, an SST or a run of disjoint SSTs (dispatched statically; tests also merge
/// boxed streams).
pub(crate) enum Input {
    Mem(MemCursor),
    Sst(SstIter),
    Run(RunIter),
    #[cfg(test)]
    Iter(IterCursor),
}

impl Input {
    /// Wraps a boxed stream.
    #[cfg(test)]
    pub fn iter(it: Source) -> Input {
        Input::Iter(IterCursor { it, cur: None })
    }
    #[inline]
    fn current(&self) -> Option<&Entry> {
        match self {
            Input::Mem(c) => c.current(),
            Input::Sst(c) => c.current(),
            Input::Run(c) => c.current(),
            #[cfg(test)]
            Input::Iter(c) => c.current(),
        }
    }
    #[inline]
    fn advance(&mut self) -> MidgeResult<()> {
        match self {
            Input::Mem(c) => c.advance(),
            Input::Sst(c) => c.advance(),
            Input::Run(c) => c.advance(),
            #[cfg(test)]
            Input::Iter(c) => c.advance(),
        }
    }
    #[inline]
    fn next_key_differs(&self) -> bool {
        match self {
            Input::Mem(c) => c.next_key_differs(),
            Input::Sst(c) => c.next_key_differs(),
            Input::Run(c) => c.next_key_differs(),
            #[cfg(test)]
            Input::Iter(c) => c.next_key_differs(),
        }
    }
}

/// Merges inputs by internal order (ascending, or descending when `reverse`) with a binary heap of input
/// indices, reading versions in place: `peek` borrows the next version, `advance` moves past it. A single
/// input (a scan over one table, the usual state after compaction) is read straight through, without a heap.
pub(crate) struct MergeIter {
    inputs: Vec<Input>,
    /// Indices of inputs that have a current version, as a heap whose root is the next version to yield
    /// (unused, so never allocated, when `single`).
    heap: Vec<usize>,
    /// Exactly one input.
    single: bool,
    /// With a single input: primed and not failed (a failed input is at its end, like one popped off the heap).
    live: bool,
    reverse: bool,
    primed: bool,
}

impl MergeIter {
    pub fn new(inputs: Vec<Input>, reverse: bool) -> MergeIter {
        let single = inputs.len() == 1;
        MergeIter {
            heap: if single {
                Vec::new()
            } else {
                Vec::with_capacity(inputs.len())
            },
            single,
            live: false,
            inputs,
            reverse,
            primed: false,
        }
    }

    /// True when the version after the one `peek` returns is known to have another key (a single input that
    /// knows it; with several inputs any of them could hold another version of the key).
    #[inline]
    pub fn next_key_differs(&self) -> bool {
        self.single && self.inputs.first().is_some_and(Input::next_key_differs)
    }

    /// True when input `a`'s current version comes before input `b`'s.
    #[inline]
    fn before(&self, a: usize, b: usize) -> bool {
        let (Some(x), Some(y)) = (self.inputs[a].current(), self.inputs[b].current()) else {
            return false;
        };
        let ord = cmp_internal(&x.key, x.seq, &y.key, y.seq);
        if self.reverse {
            ord == Ordering::Greater
        } else {
            ord == Ordering::Less
        }
    }

    fn sift_down(&mut self, mut i: usize) {
        let n = self.heap.len();
        loop {
            let l = 2 * i + 1;
            if l >= n {
                return;
            }
            let r = l + 1;
            let c = if r < n && self.before(self.heap[r], self.heap[l]) {
                r
            } else {
                l
            };
            if self.before(self.heap[c], self.heap[i]) {
                self.heap.swap(c, i);
                i = c;
            } else {
                return;
            }
        }
    }

    fn prime(&mut self) -> MidgeResult<()> {
        self.primed = true;
        if self.single {
            self.live = true;
            return self.advance();
        }
        for i in 0..self.inputs.len() {
            self.inputs[i].advance()?;
            if self.inputs[i].current().is_some() {
                self.heap.push(i);
            }
        }
        for i in (0..self.heap.len() / 2).rev() {
            self.sift_down(i);
        }
        Ok(())
    }

    /// The next version in merge order, without consuming it.
    #[inline]
    pub fn peek(&mut self) -> MidgeResult<Option<&Entry>> {
        if !self.primed {
            self.prime()?;
        }
        if self.single {
            return Ok(match self.live {
                true => self.inputs.first().and_then(Input::current),
                false => None,
            });
        }
        Ok(match self.heap.first() {
            Some(&i) => self.inputs[i].current(),
            None => None,
        })
    }

    /// Moves past the version `peek` returned.
    pub fn advance(&mut self) -> MidgeResult<()> {
        if self.single {
            if !self.live {
                return Ok(());
            }
            let res = self.inputs.first_mut().map_or(Ok(()), Input::advance);
            // An input at its end stays there; one that failed is not read again.
            self.live = res.is_ok();
            return res;
        }
        let Some(&top) = self.heap.first() else {
            return Ok(());
        };
        let res = self.inputs[top].advance();
        if res.is_err() || self.inputs[top].current().is_none() {
            self.heap.swap_remove(0);
        }
        if self.heap.len() > 1 {
            self.sift_down(0);
        }
        res
    }
}

impl Iterator for MergeIter {
    type Item = MidgeResult<Entry>;
    fn next(&mut self) -> Option<Self::Item> {
        let e = match self.peek() {
            Ok(Some(e)) => e.clone(),
            Ok(None) => return None,
            Err(e) => return Some(Err(e)),
        };
        match self.advance() {
            Ok(()) => Some(Ok(e)),
            Err(err) => Some(Err(err)),
        }
    }
}

/// Turns merged versions into visible `(key, value)` rows at a snapshot.
pub(crate) struct VisibleIter {
    merge: MergeIter,
    reverse: bool,
    snapshot: Seq,
    read_time: u64,
    tombstones: Fragments,
    /// The key whose versions are being skipped.
    skip: Vec<u8>,
    /// Forward: the merge still stands on the version last returned; the next call moves past its key's
    /// versions (so a scan that stops after a row never reads ahead of it, e.g. into another block).
    pending: bool,
}

impl VisibleIter {
    pub fn new(
        inputs: Vec<Input>,
        reverse: bool,
        snapshot: Seq,
        read_time: u64,
        tombstones: Vec<RangeTombstone>,
    ) -> VisibleIter {
        let visible: Vec<RangeTombstone> = tombstones.into_iter().filter(|t| t.seq <= snapshot).collect();
        let tombstones = Fragments::new(&visible);
        VisibleIter {
            merge: MergeIter::new(inputs, reverse),
            reverse,
            snapshot,
            read_time,
            tombstones,
            skip: Vec::new(),
            pending: false,
        }
    }

    /// Builds from boxed streams.
    #[cfg(test)]
    pub fn from_sources(
        sources: Vec<Source>,
        reverse: bool,
        snapshot: Seq,
        read_time: u64,
        tombstones: Vec<RangeTombstone>,
    ) -> VisibleIter {
        let inputs = sources.into_iter().map(Input::iter).collect();
        VisibleIter::new(inputs, reverse, snapshot, read_time, tombstones)
    }

    /// Forward: versions of a key arrive newest first, so the first at or below the snapshot decides (every
    /// key decided is skipped to its end, so the first such version met is always its key's newest).
    fn next_forward(&mut self) -> MidgeResult<Option<(Bytes, Bytes)>> {
        if self.pending {
            self.pending = false;
            self.skip_current_key()?;
        }
        loop {
            let Some(e) = self.merge.peek()? else {
                return Ok(None);
            };
            if e.seq > self.snapshot {
                self.merge.advance()?;
                continue;
            }
            if shows(e, self.read_time, &mut self.tombstones) {
                self.pending = true;
                return Ok(Some((e.key.clone(), e.value.clone())));
            }
            self.skip_current_key()?;
        }
    }

    /// Moves the merge past the version it stands on and every other version of that key.
    fn skip_current_key(&mut self) -> MidgeResult<()> {
        if self.merge.next_key_differs() {
            return self.merge.advance();
        }
        let Some(e) = self.merge.peek()? else {
            return Ok(());
        };
        self.skip.clear();
        self.skip.extend_from_slice(&e.key);
        self.merge.advance()?;
        skip_key(&mut self.merge, &self.skip)
    }

    /// Reverse: versions of a key arrive oldest first, so the last at or below the snapshot decides.
    fn next_reverse(&mut self) -> MidgeResult<Option<(Bytes, Bytes)>> {
        loop {
            let Some(e) = self.merge.peek()? else {
                return Ok(None);
            };
            let key = e.key.clone();
            // Some(None): the deciding version hides the key.
            let mut best: Option<Option<Bytes>> = None;
            while let Some(e) = self.merge.peek()? {
                if !keys_eq(&e.key, &key) {
                    break;
                }
                if e.seq <= self.snapshot {
                    best = Some(shows(e, self.read_time, &mut self.tombstones).then(|| e.value.clone()));
                }
                self.merge.advance()?;
            }
            if let Some(Some(v)) = best {
                return Ok(Some((key, v)));
            }
        }
    }
}

/// True when `e`, the version a reader sees for its key, reads as a row (`tombstones` holds only those at or
/// below the reader's snapshot).
#[inline]
fn shows(e: &Entry, read_time: u64, tombstones: &mut Fragments) -> bool {
    !e.is_absent_at(read_time) && tombstones.newest_covering(&e.key) <= e.seq
}

/// Range tombstones cut into sorted, non-overlapping fragments, each with the newest sequence covering it, so
/// a scan asks one fragment per row (usually the one it asked last) instead of every tombstone.
#[derive(Debug, Default)]
pub(crate) struct Fragments {
    /// Fragment `i` is `[bounds[i], bounds[i + 1])`, covered up to `seqs[i]` (0: not covered).
    bounds: Vec<Bytes>,
    seqs: Vec<Seq>,
    /// The fragment the last lookup landed in (scans move through keys in order).
    hint: usize,
}

impl Fragments {
    pub fn new(tombstones: &[RangeTombstone]) -> Fragments {
        let mut bounds: Vec<Bytes> = tombstones
            .iter()
            .filter(|t| t.start < t.end)
            .flat_map(|t| [t.start.clone(), t.end.clone()])
            .collect();
        bounds.sort_unstable_by(|a, b| cmp_keys(a, b));
        bounds.dedup();
        let mut seqs = vec![0; bounds.len().saturating_sub(1)];
        for t in tombstones.iter().filter(|t| t.start < t.end) {
            let from = bounds.partition_point(|b| cmp_keys(b, &t.start).is_lt());
            let to = bounds.partition_point(|b| cmp_keys(b, &t.end).is_lt());
            for s in seqs.iter_mut().take(to).skip(from) {
                *s = (*s).max(t.seq);
            }
        }
        Fragments {
            bounds,
            seqs,
            hint: 0,
        }
    }

    /// The newest sequence of a tombstone covering `key` (0 when none).
    #[inline]
    pub fn newest_covering(&mut self, key: &[u8]) -> Seq {
        if self.seqs.is_empty() {
            return 0;
        }
        let inside = |i: usize| {
            self.bounds.get(i).is_some_and(|lo| cmp_keys(lo, key).is_le())
                && self.bounds.get(i + 1).is_some_and(|hi| cmp_keys(key, hi).is_lt())
        };
        if !inside(self.hint) {
            let upper = self.bounds.partition_point(|b| cmp_keys(b, key).is_le());
            if upper == 0 || upper >= self.bounds.len() {
                return 0;
            }
            self.hint = upper - 1;
        }
        self.seqs.get(self.hint).copied().unwrap_or(0)
    }
}

/// Moves `merge` past every remaining version of `key`.
#[inline]
fn skip_key(merge: &mut MergeIter, key: &[u8]) -> MidgeResult<()> {
    while let Some(e) = merge.peek()? {
        if !keys_eq(&e.key, key) {
            break;
        }
        merge.advance()?;
    }
    Ok(())
}

impl Iterator for VisibleIter {
    type Item = MidgeResult<(Bytes, Bytes)>;
    fn next(&mut self) -> Option<Self::Item> {
        let r = if self.reverse {
            self.next_reverse()
        } else {
            self.next_forward()
        };
        r.transpose()
    }
}

/// The smallest key greater than every key with `prefix` (None when unbounded, e.g. all-0xFF prefixes).
pub(crate) fn prefix_successor(prefix: &[u8]) -> Option<Bytes> {
    let mut p = prefix.to_vec();
    while let Some(last) = p.pop() {
        if last < 0xFF {
            p.push(last + 1);
            return Some(Bytes::from(p));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::MidgeError;
    use crate::types::EntryKind;

    fn e(k: &str, seq: Seq, kind: EntryKind) -> Entry {
        Entry {
            key: Bytes::from(k.to_string()),
            seq,
            kind,
            value: Bytes::from(format!("{k}{seq}")),
            expiry: None,
        }
    }

    fn src(mut v: Vec<Entry>, reverse: bool) -> Source {
        v.sort_by(|a, b| cmp_internal(&a.key, a.seq, &b.key, b.seq));
        if reverse {
            v.reverse();
        }
        Box::new(v.into_iter().map(Ok))
    }

    #[test]
    fn visibility_respects_snapshot_tombstones_ranges_and_direction() {
        use EntryKind::*;
        let a = vec![e("a", 1, Put), e("b", 2, Put), e("c", 3, Put), e("d", 9, Put)];
        let b = vec![e("a", 5, Delete), e("b", 6, Put), e("e", 4, Put)];
        let rts = vec![RangeTombstone {
            start: Bytes::from("c"),
            end: Bytes::from("e"),
            seq: 7,
        }];
        for reverse in [false, true] {
            let rows: Vec<_> = VisibleIter::from_sources(
                vec![src(a.clone(), reverse), src(b.clone(), reverse)],
                reverse,
                8,
                0,
                rts.clone(),
            )
            .map(|r| r.unwrap())
            .collect();
            let mut want = vec![
                (Bytes::from("b"), Bytes::from("b6")),
                (Bytes::from("e"), Bytes::from("e4")),
            ];
            if reverse {
                want.reverse();
            }
            assert_eq!(rows, want, "reverse={reverse}");
        }
        let old: Vec<_> = VisibleIter::from_sources(
            vec![src(a.clone(), false), src(b.clone(), false)],
            false,
            4,
            0,
            rts,
        )
        .map(|r| r.unwrap().0)
        .collect();
        assert_eq!(
            old,
            vec![
                Bytes::from("a"),
                Bytes::from("b"),
                Bytes::from("c"),
                Bytes::from("e")
            ]
        );
    }

    #[test]
    fn expired_values_are_hidden() {
        let mut x = e("a", 1, EntryKind::Put);
        x.expiry = Some(100);
        let rows: Vec<_> =
            VisibleIter::from_sources(vec![src(vec![x.clone()], false)], false, 10, 100, vec![]).collect();
        assert!(rows.is_empty());
        let rows: Vec<_> =
            VisibleIter::from_sources(vec![src(vec![x], false)], false, 10, 99, vec![]).collect();
        assert_eq!(rows.len(), 1);
    }

    #[test]
    fn errors_surface_in_order() {
        let s: Source = Box::new(
            vec![
                Ok(e("a", 1, EntryKind::Put)),
                Err(MidgeError::Corruption("x".into())),
            ]
            .into_iter(),
        );
        let mut it = VisibleIter::from_sources(vec![s], false, 10, 0, vec![]);
        // The row is complete before the failure (its newest version decides), so it comes first; the error
        // follows and ends the stream.
        assert_eq!(it.next().unwrap().unwrap().0, Bytes::from("a"));
        assert!(it.next().unwrap().is_err());
        assert!(it.next().is_none());
    }

    #[test]
    fn prefix_successor_handles_ff() {
        assert_eq!(prefix_successor(b"ab"), Some(Bytes::from("ac")));
        assert_eq!(prefix_successor(&[b'a', 0xFF]), Some(Bytes::from("b")));
        assert_eq!(prefix_successor(&[0xFF, 0xFF]), None);
        assert_eq!(prefix_successor(b""), None);
    }

    proptest::proptest! {
        /// Fragments answer exactly what checking every tombstone would, in any lookup order (the hint must
        /// never stick to a stale fragment).
        #[test]
        fn fragments_match_checking_every_tombstone(
            ts in proptest::collection::vec((0u8..12, 0u8..12, 1u64..20), 0..12),
            probes in proptest::collection::vec(0u8..14, 0..40),
        ) {
            let ts: Vec<RangeTombstone> = ts
                .iter()
                .map(|(a, b, seq)| RangeTombstone {
                    start: Bytes::from(vec![*a]),
                    end: Bytes::from(vec![*b]),
                    seq: *seq,
                })
                .collect();
            let mut f = Fragments::new(&ts);
            for p in probes {
                let want = RangeTombstone::newest_covering(&ts, &[p], Seq::MAX);
                proptest::prop_assert_eq!(f.newest_covering(&[p]), want, "key {}", p);
            }
        }
    }
}
