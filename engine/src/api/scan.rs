//! Scans: [`Query`] bounds, and [`ScanIterator`], which merges a transaction's own writes with its snapshot.

use crate::core::{Core, ViewCache};
use crate::error::{MidgeError, MidgeResult};
use crate::iter::{VisibleIter, prefix_successor};
use crate::txn::WriteSet;
use crate::types::{ColumnFamilyId, Seq};
use bytes::Bytes;
use std::collections::VecDeque;
use std::marker::PhantomData;
use std::ops::Bound;

/// Scan direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Direction {
    /// Ascending keys (default).
    #[default]
    Forward,
    /// Descending keys.
    Reverse,
}

/// What a scan iterator has done so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IteratorState {
    /// More rows may follow.
    Active,
    /// The scan ended normally.
    Exhausted,
    /// A read failed; the error is available from [`ScanIterator::status`] and is replayed by every later
    /// [`ScanIterator::try_next`]. It never looks like a clean end.
    Failed,
}

/// Which rows a scan returns: `start` inclusive, `end` exclusive, optional prefix filter, limit, direction.
///
/// ```
/// use cntryl_midge::{Query, Bytes, Direction};
/// let q = Query::new().prefix(Bytes::from_static(b"user:")).limit(10).reverse();
/// assert_eq!(q.direction, Direction::Reverse);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// First key (inclusive); defaults to the prefix.
    pub start: Option<Bytes>,
    /// End key (exclusive); defaults to the prefix's successor.
    pub end: Option<Bytes>,
    /// Only keys starting with this.
    pub prefix: Option<Bytes>,
    /// At most this many rows.
    pub limit: Option<usize>,
    /// Key order.
    pub direction: Direction,
}

impl Query {
    /// Every row, ascending.
    pub fn new() -> Query {
        Query::default()
    }
    /// Sets the inclusive start key.
    pub fn start_key(mut self, k: Bytes) -> Query {
        self.start = Some(k);
        self
    }
    /// Sets the exclusive end key.
    pub fn end_key(mut self, k: Bytes) -> Query {
        self.end = Some(k);
        self
    }
    /// Restricts rows to keys starting with `p`.
    pub fn prefix(mut self, p: Bytes) -> Query {
        self.prefix = Some(p);
        self
    }
    /// Returns at most `n` rows (0 returns none).
    pub fn limit(mut self, n: usize) -> Query {
        self.limit = Some(n);
        self
    }
    /// Descending key order.
    pub fn reverse(mut self) -> Query {
        self.direction = Direction::Reverse;
        self
    }

    /// Effective `[lo, hi)` bounds, or `None` when the range is empty.
    pub(crate) fn bounds(&self) -> MidgeResult<Option<(Bound<Bytes>, Bound<Bytes>)>> {
        if let (Some(s), Some(e)) = (&self.start, &self.end) {
            if s > e {
                return Err(MidgeError::InvalidArgument("scan start is after end".into()));
            }
            if s == e {
                return Ok(None);
            }
        }
        if self.limit == Some(0) {
            return Ok(None);
        }
        let lo = match (&self.start, &self.prefix) {
            (Some(s), _) => Bound::Included(s.clone()),
            (None, Some(p)) if !p.is_empty() => Bound::Included(p.clone()),
            _ => Bound::Unbounded,
        };
        let hi = match (&self.end, &self.prefix) {
            (Some(e), _) => Bound::Excluded(e.clone()),
            (None, Some(p)) => prefix_successor(p).map_or(Bound::Unbounded, Bound::Excluded),
            _ => Bound::Unbounded,
        };
        Ok(Some((lo, hi)))
    }
}

/// A scan that owns everything it needs (no borrow of the transaction).
pub struct OwnedScanIterator {
    storage: Option<VisibleIter>,
    lookahead: Option<(Bytes, Bytes)>,
    overlay: VecDeque<(Bytes, Option<Bytes>)>,
    txn_ranges: Vec<(Bytes, Bytes)>,
    prefix: Option<Bytes>,
    reverse: bool,
    remaining: Option<usize>,
    state: IteratorState,
    error: Option<MidgeError>,
}

impl std::fmt::Debug for OwnedScanIterator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnedScanIterator")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl OwnedScanIterator {
    pub(crate) fn build(
        core: &Core,
        cf: ColumnFamilyId,
        views: &ViewCache,
        snapshot: Seq,
        read_time: u64,
        writes: &WriteSet,
        q: &Query,
    ) -> MidgeResult<OwnedScanIterator> {
        let reverse = q.direction == Direction::Reverse;
        let mut it = OwnedScanIterator {
            storage: None,
            lookahead: None,
            overlay: VecDeque::new(),
            txn_ranges: Vec::new(),
            prefix: q.prefix.clone(),
            reverse,
            remaining: q.limit,
            state: IteratorState::Active,
            error: None,
        };
        let Some((lo, hi)) = q.bounds()? else {
            it.state = IteratorState::Exhausted;
            return Ok(it);
        };
        // Bounds derived from the prefix alone already confine every row to it: no per-row prefix check.
        if q.start.is_none() && q.end.is_none() {
            it.prefix = None;
        }
        let (mut rows, ranges) = writes.overlay(&lo, &hi);
        if reverse {
            rows.reverse();
        }
        it.overlay = rows.into();
        it.txn_ranges = ranges;
        it.storage = Some(core.scan_rows_cached(cf, views, (lo, hi), reverse, snapshot, read_time)?);
        Ok(it)
    }

    /// The current state.
    pub fn state(&self) -> IteratorState {
        self.state
    }

    /// `Ok` unless a read failed, in which case the failure (same variant and message every time).
    pub fn status(&self) -> MidgeResult<()> {
        match &self.error {
            Some(e) => Err(e.duplicate()),
            None => Ok(()),
        }
    }

    fn storage_peek(&mut self) -> MidgeResult<Option<&(Bytes, Bytes)>> {
        if self.lookahead.is_none()
            && let Some(s) = self.storage.as_mut()
        {
            match s.next() {
                Some(Ok(row)) => self.lookahead = Some(row),
                Some(Err(e)) => return Err(e),
                None => self.storage = None,
            }
        }
        Ok(self.lookahead.as_ref())
    }

    fn merged_next(&mut self) -> MidgeResult<Option<(Bytes, Bytes)>> {
        // No own writes in range (read-only transactions, most scans): storage rows pass straight through.
        if self.overlay.is_empty() && self.txn_ranges.is_empty() && self.lookahead.is_none() {
            return match self.storage.as_mut().map(Iterator::next) {
                Some(Some(r)) => r.map(Some),
                Some(None) => {
                    self.storage = None;
                    Ok(None)
                }
                None => Ok(None),
            };
        }
        loop {
            let reverse = self.reverse;
            self.storage_peek()?;
            let take_overlay = match (&self.lookahead, self.overlay.front()) {
                (None, None) => return Ok(None),
                (None, Some(_)) => true,
                (Some(_), None) => false,
                (Some((s, _)), Some((o, _))) => {
                    if s == o {
                        self.lookahead = None;
                        true
                    } else {
                        (o < s) != reverse
                    }
                }
            };
            if take_overlay {
                if let Some((k, Some(v))) = self.overlay.pop_front() {
                    return Ok(Some((k, v)));
                }
                continue;
            }
            let Some((k, v)) = self.lookahead.take() else {
                continue;
            };
            if self.txn_ranges.iter().any(|(s, e)| *s <= k && k < *e) {
                continue;
            }
            return Ok(Some((k, v)));
        }
    }

    /// The next row, or the scan's error. After an error every call returns the same error.
    pub fn try_next(&mut self) -> MidgeResult<Option<(Bytes, Bytes)>> {
        match self.state {
            IteratorState::Exhausted => return Ok(None),
            IteratorState::Failed => {
                return Err(self
                    .status()
                    .err()
                    .unwrap_or(MidgeError::Internal("failed".into())));
            }
            IteratorState::Active => {}
        }
        if self.remaining == Some(0) {
            self.state = IteratorState::Exhausted;
            return Ok(None);
        }
        loop {
            match self.merged_next() {
                Ok(Some((k, v))) => {
                    if let Some(p) = &self.prefix
                        && !k.starts_with(p)
                    {
                        continue;
                    }
                    if let Some(r) = self.remaining.as_mut() {
                        *r -= 1;
                    }
                    return Ok(Some((k, v)));
                }
                Ok(None) => {
                    self.state = IteratorState::Exhausted;
                    return Ok(None);
                }
                Err(e) => {
                    self.state = IteratorState::Failed;
                    self.storage = None;
                    self.error = Some(e.duplicate());
                    return Err(e);
                }
            }
        }
    }

    /// Collects every remaining row, or the first error.
    pub fn try_collect(mut self) -> MidgeResult<Vec<(Bytes, Bytes)>> {
        let mut out = Vec::new();
        while let Some(r) = self.try_next()? {
            out.push(r);
        }
        Ok(out)
    }

    /// Up to `max` rows (fewer only at the end of the scan).
    pub fn next_batch(&mut self, max: usize) -> MidgeResult<Vec<(Bytes, Bytes)>> {
        let mut out = Vec::with_capacity(max.min(1024));
        while out.len() < max {
            match self.try_next()? {
                Some(r) => out.push(r),
                None => break,
            }
        }
        Ok(out)
    }
}

impl Iterator for OwnedScanIterator {
    type Item = (Bytes, Bytes);
    /// The next row; `None` at the end **or on error** — check [`OwnedScanIterator::state`] or
    /// [`OwnedScanIterator::status`] after the loop (or use `try_next`).
    fn next(&mut self) -> Option<(Bytes, Bytes)> {
        self.try_next().ok().flatten()
    }
}

/// A lazy scan over a transaction's view. Rows come in key order (descending for reverse queries).
///
/// As a plain [`Iterator`] it yields `(key, value)` and stops at the end **or at the first error**; a scan error
/// never looks like a clean end as long as you check [`ScanIterator::status`] / [`ScanIterator::state`]
/// afterwards, or use [`ScanIterator::try_next`] / [`ScanIterator::try_collect`], which return it.
///
/// ```
/// use cntryl_midge::prelude::*;
/// use cntryl_midge::Bytes;
/// let engine = Engine::open(OpenOptions::in_memory().build())?;
/// let cf = engine.get_column_family("default").unwrap();
/// let mut tx = engine.begin_tx(cf.id(), TransactionMode::ReadWrite)?;
/// for k in ["user:1", "user:2", "order:1"] {
///     tx.put(k.as_bytes().to_vec(), b"x".to_vec(), None)?;
/// }
/// let mut iter = tx.scan(&Query::new().prefix(Bytes::from_static(b"user:")))?;
/// let mut n = 0;
/// while let Some((_k, _v)) = iter.next() {
///     n += 1;
/// }
/// iter.status()?; // surfaces a read error instead of a silent short scan
/// assert_eq!(n, 2);
/// assert_eq!(iter.state(), IteratorState::Exhausted);
/// # Ok::<(), MidgeError>(())
/// ```
pub struct ScanIterator<'tx> {
    inner: OwnedScanIterator,
    _tx: PhantomData<&'tx ()>,
}

impl std::fmt::Debug for ScanIterator<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

impl ScanIterator<'_> {
    pub(crate) fn new(inner: OwnedScanIterator) -> Self {
        ScanIterator {
            inner,
            _tx: PhantomData,
        }
    }
    /// The current state.
    pub fn state(&self) -> IteratorState {
        self.inner.state()
    }
    /// True once the scan ended normally.
    pub fn exhausted(&self) -> bool {
        self.inner.state() == IteratorState::Exhausted
    }
    /// True once a read failed.
    pub fn failed(&self) -> bool {
        self.inner.state() == IteratorState::Failed
    }
    /// The scan direction.
    pub fn direction(&self) -> Direction {
        if self.inner.reverse {
            Direction::Reverse
        } else {
            Direction::Forward
        }
    }
    /// `Ok` unless a read failed.
    pub fn status(&self) -> MidgeResult<()> {
        self.inner.status()
    }
    /// The next row or the scan's error (replayed on every later call).
    pub fn try_next(&mut self) -> MidgeResult<Option<(Bytes, Bytes)>> {
        self.inner.try_next()
    }
    /// Every remaining row, or the first error.
    pub fn try_collect(self) -> MidgeResult<Vec<(Bytes, Bytes)>> {
        self.inner.try_collect()
    }
    /// Up to `max` rows.
    pub fn next_batch(&mut self, max: usize) -> MidgeResult<Vec<(Bytes, Bytes)>> {
        self.inner.next_batch(max)
    }
}

impl Iterator for ScanIterator<'_> {
    type Item = (Bytes, Bytes);
    fn next(&mut self) -> Option<(Bytes, Bytes)> {
        self.inner.next()
    }
}
