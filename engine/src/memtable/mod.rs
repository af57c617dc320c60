//! The memtable: an ordered in-memory table of versions (key asc, seq desc) plus range tombstones for one
//! column family, and lazy cursors over it.
//!
//! Owns only in-memory state. It never decides visibility (the iterator layer does) and never does I/O.
//! The table is a lock-free skiplist: readers never wait for a writer or each other, so point reads alongside
//! a steady stream of commits do not queue behind a lock (nor behind a preempted lock holder).
//! Cursors read in bounded chunks and re-seek after the last returned version, so a long scan never blocks
//! writers and never holds more than one chunk.

mod index;
mod list;

use crate::error::MidgeResult;
use crate::types::{Entry, EntryKind, Found, RangeTombstone, Seq, cmp_tail, key_head as head};
use bytes::{Bytes, BytesMut};
use index::{PointIndex, Probe};
use list::List;
use std::cmp::Reverse;
use std::collections::VecDeque;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// An internal key: user key ascending, then sequence descending. `head` holds the key's first 16 bytes
/// (zero-padded, big-endian words) so that most comparisons in the tree are two integer compares and never
/// touch the key's heap bytes; ties on `head` fall through to the full key, so the order is exactly
/// `(key, Reverse(seq))`. Cursors use it for their bounds.
#[derive(Debug, Clone)]
struct IKey {
    head: [u64; 2],
    key: Bytes,
    rseq: Reverse<Seq>,
}

impl IKey {
    fn new(key: Bytes, seq: Seq) -> IKey {
        IKey {
            head: head(&key),
            key,
            rseq: Reverse(seq),
        }
    }
}

/// One stored version: the skiplist's key, ordered by its internal key only (the payload rides along so the
/// point index can address a whole version with one pointer).
/// `repr(C)` with the ordering fields first: a skiplist search step reads them right next to the node's links
/// (see [`list`]).
#[derive(Debug)]
#[repr(C)]
pub(crate) struct Version {
    head: [u64; 2],
    rseq: Reverse<Seq>,
    key: Bytes,
    value: Bytes,
    expiry: Option<u64>,
    kind: EntryKind,
}

impl Version {
    fn seq(&self) -> Seq {
        self.rseq.0
    }

    /// Whether this is a version of `key`, whose head is `head`.
    fn is_of(&self, head: &[u64; 2], key: &[u8]) -> bool {
        self.head == *head && cmp_tail(&self.key, key).is_eq()
    }

    fn found(&self) -> Found {
        Found {
            seq: self.rseq.0,
            kind: self.kind,
            value: self.value.clone(),
            expiry: self.expiry,
        }
    }

    fn entry(&self) -> Entry {
        Entry {
            key: self.key.clone(),
            seq: self.rseq.0,
            kind: self.kind,
            value: self.value.clone(),
            expiry: self.expiry,
        }
    }
}

/// An internal key viewed as `(head, user key, reversed seq)`, so the map can be searched with a borrowed
/// key (no allocation per lookup). Ordered exactly like [`IKey`].
trait IKeyView {
    fn parts(&self) -> (&[u64; 2], &[u8], Reverse<Seq>);
}

impl IKeyView for IKey {
    #[inline]
    fn parts(&self) -> (&[u64; 2], &[u8], Reverse<Seq>) {
        (&self.head, &self.key, self.rseq)
    }
}

impl IKeyView for Version {
    #[inline]
    fn parts(&self) -> (&[u64; 2], &[u8], Reverse<Seq>) {
        (&self.head, &self.key, self.rseq)
    }
}

/// A borrowed search key.
struct IKeyRef<'a> {
    head: [u64; 2],
    key: &'a [u8],
    rseq: Reverse<Seq>,
}

impl IKeyView for IKeyRef<'_> {
    #[inline]
    fn parts(&self) -> (&[u64; 2], &[u8], Reverse<Seq>) {
        (&self.head, self.key, self.rseq)
    }
}

#[inline]
fn cmp_parts(a: &dyn IKeyView, b: &dyn IKeyView) -> std::cmp::Ordering {
    let (ah, ak, ar) = a.parts();
    let (bh, bk, br) = b.parts();
    ah.cmp(bh).then_with(|| cmp_tail(ak, bk)).then(ar.cmp(&br))
}

impl<'a> std::borrow::Borrow<dyn IKeyView + 'a> for IKey {
    fn borrow(&self) -> &(dyn IKeyView + 'a) {
        self
    }
}

impl PartialEq for dyn IKeyView + '_ {
    fn eq(&self, other: &Self) -> bool {
        cmp_parts(self, other).is_eq()
    }
}

impl Eq for dyn IKeyView + '_ {}

impl PartialOrd for dyn IKeyView + '_ {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for dyn IKeyView + '_ {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        cmp_parts(self, other)
    }
}

impl<'a> std::borrow::Borrow<dyn IKeyView + 'a> for Version {
    fn borrow(&self) -> &(dyn IKeyView + 'a) {
        self
    }
}

/// Orders a type exactly by its [`IKeyView`] parts (`Eq`, `PartialOrd` and `Ord` all from [`cmp_parts`]).
macro_rules! ordered_by_parts {
    ($t:ty) => {
        impl PartialEq for $t {
            fn eq(&self, other: &Self) -> bool {
                self.cmp(other).is_eq()
            }
        }

        impl Eq for $t {}

        impl PartialOrd for $t {
            fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
                Some(self.cmp(other))
            }
        }

        impl Ord for $t {
            #[inline]
            fn cmp(&self, other: &Self) -> std::cmp::Ordering {
                cmp_parts(self, other)
            }
        }
    };
}

ordered_by_parts!(Version);
ordered_by_parts!(IKey);

/// Per-entry bookkeeping counted toward the memtable's size: the skiplist node (internal key with its inline
/// head, version fields, tower: ≈ 130 bytes plus the allocator's header) and the two `Bytes` handles' shared
/// headers — ≈ 200 bytes beyond key and value (with keys and values packed into shared chunks the 10 M-key
/// scale test peaks at 1.15–1.21× its budget).
/// The point index is a fixed cost per memtable ([`INDEX_BYTES_PER_LIMIT_BYTE`]), which the memory budget
/// sets aside with the memtables.
const ENTRY_OVERHEAD: u64 = 200;
/// The point index's slot table, per byte of the memtable limit (8-byte slots, one per
/// [`index::BYTES_PER_SLOT`] bytes).
pub(crate) const INDEX_BYTES_PER_LIMIT_BYTE: f64 = 8.0 / index::BYTES_PER_SLOT as f64;
/// Versions read per refill: the first chunk is small (a short seek clones little), later ones double up to
/// `CHUNK`.
const CHUNK: usize = 256;
const FIRST_CHUNK: usize = 16;
/// Versions whose point-index slots are read ahead of their inserts (see `Memtable::insert_entries`).
const LOOKAHEAD: usize = 8;
/// Batches of at least this many versions are inserted in key order (see `Memtable::insert_batch`).
const SORT_BATCH_FROM: usize = 32;

/// One memtable generation.
///
/// ```text
///   point index (hash of key → newest version)      skiplist (key asc, seq desc)
///   [ · | ─┼──────────────────────────────────────▶  b@9 → b@4 → c@7 → …
/// ```
/// Versions live in the skiplist, which never removes one; the index points at each key's newest version so a
/// point read at a snapshot that already covers it needs no descent.
#[derive(Debug)]
pub(crate) struct Memtable {
    /// Lock-free: readers never wait for a writer (or each other), which matters when point reads run
    /// alongside a steady stream of commits. Never has a node removed (see [`index`]).
    map: List,
    index: PointIndex,
    ranges: RwLock<Vec<RangeTombstone>>,
    /// Whether `ranges` holds any: a point read looks here before taking the lock, so reads do not write the
    /// lock's state (a shared cache line) when there are none.
    has_ranges: AtomicBool,
    /// Read by every point read; written once, by the first insert (lowered only when a lower sequence comes).
    min_seq: AtomicU64,
    /// Written by every commit, on a cache line of its own, so a commit does not take away the line every
    /// point read reads (`min_seq`, the range lock).
    written: Written,
    /// The room left in the chunk the last commit packed into, which the next commit packs into first (see
    /// [`Packer`]). Only commits take it (one at a time), so the lock is never contended.
    spare: Mutex<Spare>,
}

/// A memtable's per-commit counters, on their own cache line (see [`Memtable::written`]).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Written {
    bytes: AtomicU64,
    max_seq: AtomicU64,
}

impl Memtable {
    /// An empty memtable that rotates at about `limit_bytes` (which sizes its point index).
    pub fn new(limit_bytes: u64) -> Memtable {
        Memtable {
            map: List::default(),
            index: PointIndex::for_limit(limit_bytes),
            ranges: RwLock::new(Vec::new()),
            has_ranges: AtomicBool::new(false),
            min_seq: AtomicU64::new(Seq::MAX),
            written: Written::default(),
            spare: Mutex::default(),
        }
    }

    /// Adds one version.
    #[cfg(test)]
    pub fn insert(&self, e: Entry) {
        let packed = packed_len(&e.key) + packed_len(&e.value);
        self.insert_many(std::iter::once(e), packed);
    }

    /// Adds versions (a transaction's puts and deletes). Readers never wait: a version is invisible to them
    /// until the commit's sequence is published, whatever order the inserts land in. `packed` is the sum of
    /// [`packed_len`] over the entries' keys and values (it sizes the shared chunks they are copied into; see
    /// [`Packer`]).
    pub fn insert_many(&self, entries: impl IntoIterator<Item = Entry>, packed: usize) {
        let entries = entries.into_iter();
        if packed == 0 {
            // Nothing to copy: every key and value keeps its own bytes.
            return self.insert_batch(entries.map(version));
        }
        let mut spare = self.spare.lock().unwrap_or_else(|p| p.into_inner());
        let mut p = Packer::new(std::mem::take(&mut *spare), packed);
        self.insert_batch(entries.map(|e| p.version(e)));
        *spare = p.spare;
    }

    /// Inserts a batch's versions; a large batch in key order: its keys, written in any order, would each
    /// walk cold skiplist levels, while in key order each insert walks the upper levels the previous one
    /// warmed. A batch already in order (a sequential load) is only checked.
    fn insert_batch(&self, versions: impl Iterator<Item = Version>) {
        // The upper bound: a commit's versions come filtered out of its log record (range deletes aside).
        if versions.size_hint().1.is_some_and(|n| n < SORT_BATCH_FROM) {
            return self.insert_entries(versions);
        }
        let mut batch: Vec<Version> = versions.collect();
        if !batch.is_sorted() {
            batch.sort_unstable();
        }
        self.insert_entries(batch);
    }

    /// [`Memtable::insert_replay`] of entries in any order (tests).
    #[cfg(test)]
    pub fn insert_unordered(&self, entries: Vec<Entry>) {
        let mut r = Replay::default();
        entries.into_iter().for_each(|e| r.push(e));
        self.insert_replay(r);
    }

    /// Adds the versions a log replay gathered, in any order: sorted first, since inserting random-order keys
    /// one by one misses the cache at every level of the skiplist, while sorted inserts walk a warm path (and
    /// into an empty memtable each links in after the last node). Keys and values are kept as decoded, not
    /// packed: a replay has already copied each out of the log once. A large replay is sorted in its two halves
    /// at once ([`crate::runtime::join`]: two threads natively, one after the other on wasm32) and the halves
    /// are merged as they are inserted.
    pub fn insert_replay(&self, r: Replay) {
        let [mut a, mut b] = r.halves;
        if a.len() + b.len() < SORT_IN_HALVES_FROM {
            a.append(&mut b);
            return self.insert_batch(a.into_iter());
        }
        crate::runtime::join(|| a.sort_unstable(), || b.sort_unstable());
        self.insert_entries(Merge {
            a: a.into_iter().peekable(),
            b: b.into_iter().peekable(),
        });
    }

    fn insert_entries(&self, entries: impl IntoIterator<Item = Version>) {
        let (mut bytes, mut lo, mut hi) = (0u64, Seq::MAX, 0);
        // A ring of the next versions, whose index slots were prefetched when they entered it: a batch's slot
        // misses (one per key, all over the table) overlap instead of each stalling its own insert.
        let mut ring: [Option<(Version, u64)>; LOOKAHEAD] = Default::default();
        let mut entries = entries.into_iter();
        let mut next = 0usize;
        loop {
            let mut refill = |slot: &mut Option<(Version, u64)>| {
                if let Some(v) = entries.next() {
                    let h = index::hash(&v.head, &v.key);
                    self.index.prefetch(h);
                    *slot = Some((v, h));
                }
            };
            if next == 0 {
                ring.iter_mut().for_each(&mut refill);
            }
            let Some((v, h)) = ring[next % LOOKAHEAD].take() else {
                break;
            };
            refill(&mut ring[next % LOOKAHEAD]);
            next += 1;
            bytes += v.key.len() as u64 + v.value.len() as u64 + ENTRY_OVERHEAD;
            lo = lo.min(v.seq());
            hi = hi.max(v.seq());
            // The key's newest version so far, which a newer version directly precedes: most new versions
            // link in next to it without a search (the slot was prefetched).
            let hint = match self.index.lookup(h, &v.head, &v.key) {
                Probe::Newest(x) if x.seq() < v.seq() => Some(x),
                _ => None,
            };
            // A replayed duplicate of a version is kept once (the list never replaces a node the index may
            // point at).
            let e = self.map.insert(v, hint);
            self.index.publish(h, e);
        }
        if bytes > 0 {
            self.written.bytes.fetch_add(bytes, Ordering::Relaxed);
            self.written.max_seq.fetch_max(hi, Ordering::Relaxed);
            self.lower_min_seq(lo);
        }
    }

    /// Adds a range tombstone.
    pub fn insert_range(&self, rt: RangeTombstone) {
        self.written.bytes.fetch_add(
            rt.start.len() as u64 + rt.end.len() as u64 + ENTRY_OVERHEAD,
            Ordering::Relaxed,
        );
        self.written.max_seq.fetch_max(rt.seq, Ordering::Relaxed);
        self.lower_min_seq(rt.seq);
        self.ranges.write().unwrap_or_else(|p| p.into_inner()).push(rt);
        self.has_ranges.store(true, Ordering::Release);
    }

    /// Lowers `min_seq` to `seq`, writing it only when `seq` is lower (a read-modify-write takes the cache line
    /// from every reader even when it changes nothing).
    fn lower_min_seq(&self, seq: Seq) {
        if seq < self.min_seq.load(Ordering::Relaxed) {
            self.min_seq.fetch_min(seq, Ordering::Relaxed);
        }
    }

    /// Approximate memory held (keys, values and overhead).
    pub fn approximate_bytes(&self) -> u64 {
        self.written.bytes.load(Ordering::Relaxed)
    }

    /// Highest sequence held (0 when empty).
    pub fn max_seq(&self) -> Seq {
        self.written.max_seq.load(Ordering::Relaxed)
    }

    /// Lowest sequence held (`None` when empty).
    pub fn min_seq(&self) -> Option<Seq> {
        let s = self.min_seq.load(Ordering::Relaxed);
        (s != Seq::MAX).then_some(s)
    }

    /// Newest version of `key` with `seq <= snapshot`. The point index answers when the key's newest version
    /// is already covered by the snapshot (or the key is absent); otherwise the skiplist is searched.
    pub fn get(&self, key: &[u8], snapshot: Seq) -> Option<Found> {
        let head = head(key);
        match self.index.lookup(index::hash(&head, key), &head, key) {
            Probe::Newest(v) if v.seq() <= snapshot => return Some(v.found()),
            Probe::Absent => return None,
            Probe::Newest(_) | Probe::Unknown => {}
        }
        self.get_in_list(key, head, snapshot)
    }

    /// [`Memtable::get`] by a skiplist descent alone.
    fn get_in_list(&self, key: &[u8], head: [u64; 2], snapshot: Seq) -> Option<Found> {
        let from = IKeyRef {
            head,
            key,
            rseq: Reverse(snapshot),
        };
        let v = self.map.lower_bound(Bound::Included(&from))?;
        v.is_of(&head, key).then(|| v.found())
    }

    /// The newest range tombstone at or below `snapshot` covering `key` (0 when none), without copying the
    /// tombstone list.
    pub fn covering_tombstone_seq(&self, key: &[u8], snapshot: Seq) -> Seq {
        // Published after the tombstone is in the list, and the tombstone's commit only becomes visible to a
        // snapshot after that: a reader whose snapshot covers a tombstone sees the flag.
        if !self.has_ranges.load(Ordering::Acquire) {
            return 0;
        }
        let ranges = self.ranges.read().unwrap_or_else(|p| p.into_inner());
        RangeTombstone::newest_covering(&ranges, key, snapshot)
    }

    /// Range tombstones overlapping `[lower, upper]` (all of them when unbounded).
    pub fn range_tombstones(&self) -> Vec<RangeTombstone> {
        self.ranges.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Appends the range tombstones to `out` (no allocation when there are none).
    pub fn extend_range_tombstones(&self, out: &mut Vec<RangeTombstone>) {
        out.extend(
            self.ranges
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .cloned(),
        );
    }

    /// The smallest and largest user key its versions and range tombstones touch (a tombstone's exclusive
    /// end counted as touched), or `None` when it holds neither.
    pub fn key_span(&self) -> Option<(Bytes, Bytes)> {
        let (mut lo, mut hi) = (
            self.map.first().map(|v| v.key.clone()),
            self.map.last().map(|v| v.key.clone()),
        );
        for t in self.ranges.read().unwrap_or_else(|p| p.into_inner()).iter() {
            if lo.as_ref().is_none_or(|l| t.start < *l) {
                lo = Some(t.start.clone());
            }
            if hi.as_ref().is_none_or(|h| t.end > *h) {
                hi = Some(t.end.clone());
            }
        }
        Some((lo?, hi?))
    }

    /// Whether the memtable holds a version or range tombstone a reader at `snapshot` can see. A reader's
    /// snapshot covers only what was inserted (and counted into `min_seq`) before that snapshot's sequence
    /// was published, so a memtable empty, or holding only newer writes, has nothing for it.
    pub fn holds_any_at(&self, snapshot: Seq) -> bool {
        self.min_seq().is_some_and(|m| m <= snapshot)
    }

    /// A lazy cursor over versions with user key in bounds, in internal order (or exactly reversed).
    pub fn cursor(self: &Arc<Self>, lower: Bound<Bytes>, upper: Bound<Bytes>, reverse: bool) -> MemCursor {
        let lo = match lower {
            Bound::Included(k) => Bound::Included(IKey::new(k, Seq::MAX)),
            Bound::Excluded(k) => Bound::Excluded(IKey::new(k, 0)),
            Bound::Unbounded => Bound::Unbounded,
        };
        let hi = match upper {
            Bound::Included(k) => Bound::Included(IKey::new(k, 0)),
            Bound::Excluded(k) => Bound::Excluded(IKey::new(k, Seq::MAX)),
            Bound::Unbounded => Bound::Unbounded,
        };
        MemCursor {
            mem: self.clone(),
            lo,
            hi,
            reverse,
            buf: VecDeque::new(),
            chunk: FIRST_CHUNK,
            done: false,
        }
    }
}

/// A cursor bound as the skiplist searches it.
fn view(b: &Bound<IKey>) -> Bound<&dyn IKeyView> {
    match b {
        Bound::Included(k) => Bound::Included(k),
        Bound::Excluded(k) => Bound::Excluded(k),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// Keys and values longer than this keep their own allocation in the memtable; shorter ones are copied into
/// shared chunks (see [`Packer`]).
const PACK_MAX: usize = 1024;
/// The largest shared chunk: whoever keeps one value read from the memtable keeps at most this much alive
/// (a value read from an SST keeps its 16 KiB block payload the same way).
const PACK_CHUNK: usize = 32 << 10;

/// The bytes [`Packer`] copies for a key or value of `b`'s length: its length when it is packed, else 0.
pub(crate) fn packed_len(b: &[u8]) -> usize {
    if b.is_empty() || b.len() > PACK_MAX {
        0
    } else {
        b.len()
    }
}

/// Copies a batch's short keys and values back to back into a few shared chunks, so a memtable holds one
/// allocation per ≈ 32 KiB of them instead of two per version. Each `Bytes` it hands out is a slice sharing
/// its chunk's reference count, so:
/// - reading a version's value (or a flush cloning its key and value) is one atomic increment, where a
///   `Bytes` built from the caller's vector first allocates a shared header on its first clone (a malloc on
///   the reader's or the flush's thread);
/// - dropping a memtable is an atomic decrement per key and value and one `free` per chunk, where it freed
///   every key and value (and every shared header) one by one, on the flush thread, away from the thread that
///   allocated them.
///
/// A batch packs into the room the memtable's previous batch left in its last chunk first ([`Spare`]). A new
/// chunk holds what is left of the batch, or as much as the memtable has packed so far if that is more (at
/// most [`PACK_CHUNK`]): a memtable's first single put allocates exactly its key and value, and a stream of
/// single puts allocates chunks that double up to 32 KiB, one per ≈ 280 puts of a 16-byte key and a 100-byte
/// value at the cap, where each put allocated its own chunk and its shared header (two mallocs per commit).
struct Packer {
    spare: Spare,
    /// Bytes still to pack in this batch.
    left: usize,
}

/// The chunk a memtable's batches pack into next (its room left, after its packed bytes were split off) and
/// the bytes the memtable has packed.
#[derive(Debug, Default)]
struct Spare {
    chunk: BytesMut,
    packed: usize,
}

impl Packer {
    fn new(spare: Spare, packed: usize) -> Packer {
        Packer { spare, left: packed }
    }

    fn pack(&mut self, b: Bytes) -> Bytes {
        let n = packed_len(&b);
        if n == 0 {
            return b;
        }
        let s = &mut self.spare;
        // After a split, `capacity` is the room left in the current chunk.
        if s.chunk.capacity() < n {
            s.chunk = BytesMut::with_capacity(self.left.max(s.packed).min(PACK_CHUNK).max(n));
        }
        self.left = self.left.saturating_sub(n);
        s.packed += n;
        s.chunk.extend_from_slice(&b);
        s.chunk.split().freeze()
    }

    /// A version as the skiplist stores it, its key and value packed.
    fn version(&mut self, e: Entry) -> Version {
        let key = self.pack(e.key);
        let value = self.pack(e.value);
        version(Entry { key, value, ..e })
    }
}

/// Replayed versions from which [`Memtable::insert_replay`] sorts in halves.
const SORT_IN_HALVES_FROM: usize = 1 << 16;

/// Versions replayed from the log for one memtable, gathered straight into two halves as the log is read (no
/// intermediate list of entries), for [`Memtable::insert_replay`].
#[derive(Debug, Default)]
pub(crate) struct Replay {
    halves: [Vec<Version>; 2],
}

impl Replay {
    /// Adds a replayed version (to the shorter half).
    pub fn push(&mut self, e: Entry) {
        let i = usize::from(self.halves[0].len() > self.halves[1].len());
        self.halves[i].push(version(e));
    }
}

/// Two sorted runs of versions, merged into one in order.
struct Merge {
    a: std::iter::Peekable<std::vec::IntoIter<Version>>,
    b: std::iter::Peekable<std::vec::IntoIter<Version>>,
}

impl Iterator for Merge {
    type Item = Version;

    fn next(&mut self) -> Option<Version> {
        let from_a = match (self.a.peek(), self.b.peek()) {
            (Some(x), Some(y)) => x <= y,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if from_a { self.a.next() } else { self.b.next() }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.a.len() + self.b.len();
        (n, Some(n))
    }
}

/// A version as the skiplist stores it, its key and value as they are.
fn version(e: Entry) -> Version {
    Version {
        head: head(&e.key),
        key: e.key,
        rseq: Reverse(e.seq),
        kind: e.kind,
        value: e.value,
        expiry: e.expiry,
    }
}

/// A chunked cursor over one memtable; see [`Memtable::cursor`].
#[derive(Debug)]
pub(crate) struct MemCursor {
    mem: Arc<Memtable>,
    lo: Bound<IKey>,
    hi: Bound<IKey>,
    reverse: bool,
    buf: VecDeque<Entry>,
    chunk: usize,
    done: bool,
}

impl MemCursor {
    fn refill(&mut self) {
        if matches!((&self.lo, &self.hi), (Bound::Included(a) | Bound::Excluded(a), Bound::Included(b) | Bound::Excluded(b)) if a > b)
        {
            self.done = true;
            return;
        }
        let want = self.chunk;
        self.chunk = (want * 2).min(CHUNK);
        let mut chunk: Vec<Entry> = Vec::with_capacity(want);
        self.mem
            .map
            .visit(view(&self.lo), view(&self.hi), self.reverse, want, |v| {
                chunk.push(v.entry())
            });
        if chunk.len() < want {
            self.done = true;
        }
        if let Some(last) = chunk.last() {
            let pos = Bound::Excluded(IKey::new(last.key.clone(), last.seq));
            if self.reverse {
                self.hi = pos;
            } else {
                self.lo = pos;
            }
        }
        self.buf.extend(chunk);
    }
}

impl crate::iter::Cursor for MemCursor {
    #[inline]
    fn current(&self) -> Option<&Entry> {
        self.buf.front()
    }

    fn advance(&mut self) -> MidgeResult<()> {
        self.buf.pop_front();
        if self.buf.is_empty() && !self.done {
            self.refill();
        }
        Ok(())
    }
}

impl Iterator for MemCursor {
    type Item = MidgeResult<Entry>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.is_empty() && !self.done {
            self.refill();
        }
        self.buf.pop_front().map(Ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(m: &Memtable, k: &str, seq: Seq) {
        m.insert(Entry {
            key: Bytes::from(k.to_string()),
            seq,
            kind: EntryKind::Put,
            value: Bytes::from(format!("{k}@{seq}")),
            expiry: None,
        });
    }

    #[test]
    fn get_returns_newest_version_at_or_below_the_snapshot() {
        let m = Memtable::new(1 << 20);
        put(&m, "a", 2);
        put(&m, "a", 5);
        put(&m, "b", 3);
        assert_eq!(m.get(b"a", 10).unwrap().seq, 5);
        assert_eq!(m.get(b"a", 4).unwrap().seq, 2);
        assert!(m.get(b"a", 1).is_none());
        assert!(m.get(b"c", 10).is_none());
        assert_eq!(m.max_seq(), 5);
    }

    #[test]
    fn insert_many_keeps_every_version_and_the_accounting() {
        let n = 101;
        let entries = || {
            (0..n).map(|i| Entry {
                key: Bytes::from(format!("k{i:03}")),
                seq: 100 + i,
                kind: if i % 2 == 0 {
                    EntryKind::Put
                } else {
                    EntryKind::Delete
                },
                value: Bytes::from(vec![7u8; (i % 3) as usize]),
                expiry: None,
            })
        };
        // In order through `insert_many`, and reversed through `insert_unordered` (which sorts first).
        let (ordered, unordered) = (Memtable::new(1 << 20), Memtable::new(1 << 20));
        ordered.insert_many(entries(), 0);
        unordered.insert_unordered(entries().rev().collect());
        let bytes: u64 = (0..n).map(|i| 4 + i % 3 + ENTRY_OVERHEAD).sum();
        for m in [&ordered, &unordered] {
            for i in 0..n {
                let e = m.get(format!("k{i:03}").as_bytes(), Seq::MAX).unwrap();
                assert_eq!(e.seq, 100 + i);
            }
            assert_eq!((m.min_seq(), m.max_seq()), (Some(100), 100 + n - 1));
            assert_eq!(m.approximate_bytes(), bytes);
            m.insert_many(std::iter::empty(), 0);
            assert_eq!(m.approximate_bytes(), bytes);
        }
    }

    /// The merge of two sorted runs is one sorted run holding both (so a replay sorted in halves still
    /// inserts each version after the last: the skiplist's append path).
    #[test]
    fn merging_sorted_halves_keeps_internal_key_order() {
        let v = |k: &str, seq: Seq| {
            version(Entry {
                key: Bytes::from(k.to_string()),
                seq,
                kind: EntryKind::Put,
                value: Bytes::new(),
                expiry: None,
            })
        };
        let a = || vec![v("a", 3), v("c", 9), v("c", 2), v("e", 1)];
        let b = || vec![v("b", 1), v("c", 5), v("d", 4), v("f", 7), v("g", 1)];
        let m = Merge {
            a: a().into_iter().peekable(),
            b: b().into_iter().peekable(),
        };
        assert_eq!(m.size_hint(), (9, Some(9)));
        let got: Vec<Version> = m.collect();
        assert!(got.is_sorted());
        let keys =
            |vs: &[Version]| -> Vec<(Bytes, Seq)> { vs.iter().map(|v| (v.key.clone(), v.seq())).collect() };
        let mut want: Vec<Version> = a().into_iter().chain(b()).collect();
        want.sort_unstable();
        assert_eq!(keys(&got), keys(&want));
    }

    /// A replay large enough to be sorted in two halves (and merged as it is inserted) holds exactly what
    /// inserting it in order holds: every version once (replayed duplicates too), in internal-key order.
    #[test]
    fn a_large_unordered_replay_sorted_in_halves_matches_ordered_inserts() {
        let n = SORT_IN_HALVES_FROM as u64 + 4_321;
        // Three versions of most keys, some replayed twice (a duplicate frame), in scrambled order.
        let entry = |i: u64| Entry {
            key: Bytes::from(format!("key{:07}", i.wrapping_mul(7_919) % (n / 3))),
            seq: 1 + i % (n - 50),
            kind: EntryKind::Put,
            value: Bytes::from((i % (n - 50)).to_le_bytes().to_vec()),
            expiry: None,
        };
        let mut log: Vec<Entry> = (0..n).map(entry).collect();
        log.sort_by_key(|e| {
            e.key
                .iter()
                .rev()
                .fold(0u64, |h, &b| h.wrapping_mul(31) ^ u64::from(b))
        });
        let mut sorted = log.clone();
        sorted.sort_by(|a, b| a.key.cmp(&b.key).then(b.seq.cmp(&a.seq)));
        sorted.dedup_by(|a, b| a.key == b.key && a.seq == b.seq);
        let (ordered, unordered) = (Arc::new(Memtable::new(1 << 30)), Arc::new(Memtable::new(1 << 30)));
        ordered.insert_many(sorted.iter().cloned(), 0);
        unordered.insert_unordered(log);
        let all = |m: &Arc<Memtable>| -> Vec<(Bytes, Seq, Bytes)> {
            m.cursor(Bound::Unbounded, Bound::Unbounded, false)
                .map(|e| e.map(|e| (e.key, e.seq, e.value)).unwrap())
                .collect()
        };
        let want: Vec<_> = sorted
            .iter()
            .map(|e| (e.key.clone(), e.seq, e.value.clone()))
            .collect();
        assert!(want.len() > SORT_IN_HALVES_FROM, "{} versions", want.len());
        assert_eq!(all(&unordered), want);
        assert_eq!(all(&ordered), want);
        assert_eq!(
            (unordered.min_seq(), unordered.max_seq()),
            (ordered.min_seq(), ordered.max_seq())
        );
    }

    #[test]
    fn short_keys_and_values_are_packed_into_shared_chunks() {
        let entry = |i: u64, len: usize| Entry {
            key: Bytes::from(format!("k{i:03}")),
            seq: 1 + i,
            kind: EntryKind::Put,
            value: Bytes::from(vec![i as u8; len]),
            expiry: None,
        };
        let batch: Vec<Entry> = (0..400).map(|i| entry(i, 100 + (i as usize % 7))).collect();
        let packed: usize = batch
            .iter()
            .map(|e| packed_len(&e.key) + packed_len(&e.value))
            .sum();
        let m = Memtable::new(1 << 24);
        m.insert_many(batch.clone(), packed);
        let mut p = Packer::new(Spare::default(), packed);
        let versions: Vec<Version> = batch.iter().cloned().map(|e| p.version(e)).collect();
        let (mut chunks, mut at) = (1, versions[0].key.as_ptr());
        for (v, e) in versions.iter().zip(&batch) {
            assert_eq!((&v.key, &v.value), (&e.key, &e.value));
            // A key is followed by its value, and a version by the next one, unless a new chunk began.
            for b in [&v.key, &v.value] {
                if b.as_ptr() != at {
                    chunks += 1;
                }
                at = b.as_ptr().wrapping_add(b.len());
            }
        }
        // ≈ 43 KiB of keys and values: two chunks, the second as large as the first (the memtable had packed
        // that much), its room left kept for the next batch.
        assert_eq!(chunks, 2);
        assert_eq!(p.spare.packed, packed);
        let room = p.spare.chunk.capacity();
        assert!(room > PACK_CHUNK / 2 && room < PACK_CHUNK, "{room}");
        // The next batch continues right after this one's last value.
        let mut p = Packer::new(std::mem::take(&mut p.spare), 4);
        assert_eq!(p.pack(Bytes::from_static(b"next")).as_ptr(), at);
        assert_eq!(p.spare.chunk.capacity(), room - 4);
        for e in &batch {
            let got = m.get(&e.key, Seq::MAX).unwrap();
            assert_eq!((got.seq, got.value), (e.seq, e.value.clone()));
        }
        // Long values and empty ones keep their own bytes; a memtable's first single put allocates exactly its
        // key and value.
        let long = Bytes::from(vec![1u8; PACK_MAX + 1]);
        let mut p = Packer::new(Spare::default(), 4);
        assert_eq!(p.pack(long.clone()).as_ptr(), long.as_ptr());
        assert!(p.pack(Bytes::new()).is_empty());
        assert_eq!(p.pack(Bytes::from_static(b"abcd")), Bytes::from_static(b"abcd"));
        assert_eq!(p.spare.chunk.capacity(), 0);
    }

    /// Single-put commits pack into the room earlier ones left: chunks double (up to [`PACK_CHUNK`]) instead
    /// of each commit allocating its own, and every version still reads back its own key and value.
    #[test]
    fn single_puts_share_chunks_that_grow_with_the_memtable() {
        let m = Memtable::new(1 << 24);
        let n = 600u64;
        for i in 0..n {
            let e = Entry {
                key: Bytes::from(format!("key{i:013}")),
                seq: 1 + i,
                kind: EntryKind::Put,
                value: Bytes::from(vec![i as u8; 100]),
                expiry: None,
            };
            m.insert_many([e.clone()], packed_len(&e.key) + packed_len(&e.value));
        }
        let (mut chunks, mut at) = (0, std::ptr::null());
        for i in 0..n {
            let got = m.get(format!("key{i:013}").as_bytes(), Seq::MAX).unwrap();
            assert_eq!((got.seq, &got.value[..]), (1 + i, &[i as u8; 100][..]));
            // Each put's key sits just before its value; a new chunk begins where the value does not follow
            // the previous put's.
            if got.value.as_ptr() != at {
                chunks += 1;
            }
            at = got.value.as_ptr().wrapping_add(100 + 16);
        }
        // 600 × 116 B ≈ 68 KiB: chunks of 116, 116, 232, … 29,696 B, then one of 32 KiB (600 without
        // the spare room).
        assert_eq!(chunks, 11);
        let spare = m.spare.lock().unwrap();
        assert_eq!(spare.packed, 600 * 116);
    }

    #[test]
    fn point_reads_see_range_tombstones_and_sequences_across_the_split_fields() {
        let m = Memtable::new(1 << 20);
        put(&m, "k", 5);
        assert_eq!(
            (m.covering_tombstone_seq(b"k", Seq::MAX), m.min_seq(), m.max_seq()),
            (0, Some(5), 5)
        );
        m.insert_range(RangeTombstone {
            start: Bytes::from_static(b"a"),
            end: Bytes::from_static(b"z"),
            seq: 7,
        });
        assert_eq!(m.covering_tombstone_seq(b"k", Seq::MAX), 7);
        assert_eq!(
            m.covering_tombstone_seq(b"k", 6),
            0,
            "not at a snapshot before it"
        );
        assert_eq!(
            m.covering_tombstone_seq(b"z", Seq::MAX),
            0,
            "the end is exclusive"
        );
        put(&m, "j", 3);
        put(&m, "l", 4);
        assert_eq!((m.min_seq(), m.max_seq()), (Some(3), 7));
        assert!(m.holds_any_at(3) && !m.holds_any_at(2));
    }

    #[test]
    fn cursors_cover_bounds_in_both_directions_across_chunks() {
        let m = Arc::new(Memtable::new(1 << 20));
        for i in 0..1000u64 {
            put(&m, &format!("k{i:04}"), i + 1);
            put(&m, &format!("k{i:04}"), i + 5000);
        }
        let fwd: Vec<Entry> = m
            .cursor(
                Bound::Included(Bytes::from("k0100")),
                Bound::Excluded(Bytes::from("k0700")),
                false,
            )
            .map(Result::unwrap)
            .collect();
        assert_eq!(fwd.len(), 1200);
        assert_eq!(fwd[0].key, Bytes::from("k0100"));
        assert!(fwd[0].seq > fwd[1].seq, "newest version first");
        let mut rev: Vec<Entry> = m
            .cursor(
                Bound::Included(Bytes::from("k0100")),
                Bound::Excluded(Bytes::from("k0700")),
                true,
            )
            .map(Result::unwrap)
            .collect();
        rev.reverse();
        assert_eq!(fwd, rev);
        let excl: Vec<Entry> = m
            .cursor(
                Bound::Excluded(Bytes::from("k0100")),
                Bound::Included(Bytes::from("k0101")),
                false,
            )
            .map(Result::unwrap)
            .collect();
        assert_eq!(excl.len(), 2);
        assert!(excl.iter().all(|e| e.key == "k0101"));
        let empty: Vec<_> = m
            .cursor(
                Bound::Included(Bytes::from("z")),
                Bound::Excluded(Bytes::from("a")),
                false,
            )
            .collect();
        assert!(empty.is_empty());
    }

    #[test]
    fn a_replayed_duplicate_version_is_kept_once() {
        let m = Memtable::new(1 << 20);
        put(&m, "a", 3);
        put(&m, "a", 3);
        put(&m, "a", 1);
        assert_eq!(m.get(b"a", 10).unwrap().seq, 3);
        assert_eq!(m.get(b"a", 2).unwrap().seq, 1);
        let seqs: Vec<Seq> = Arc::new(m)
            .cursor(Bound::Unbounded, Bound::Unbounded, false)
            .map(|e| e.unwrap().seq)
            .collect();
        assert_eq!(seqs, [3, 1]);
    }

    /// Readers racing a writer see, at each published sequence, exactly the newest version at or below it —
    /// through the point index, and through the skiplist once a tiny index has overflowed mid-run.
    #[test]
    fn point_reads_racing_inserts_see_the_newest_published_version() {
        if !crate::runtime::THREADS {
            return; // wasm32: no threads to race
        }
        use std::sync::atomic::AtomicBool;
        const KEYS: u64 = 100;
        const LAST: Seq = 20_000;
        for limit in [0, 1 << 20] {
            let m = Memtable::new(limit);
            let visible = AtomicU64::new(0);
            let done = AtomicBool::new(false);
            std::thread::scope(|sc| {
                for r in 0..2u64 {
                    let (m, visible, done) = (&m, &visible, &done);
                    sc.spawn(move || {
                        let mut checked = 0u64;
                        let mut x = r + 1;
                        while !done.load(Ordering::Acquire) || checked < 1000 {
                            x = x
                                .wrapping_mul(6364136223846793005)
                                .wrapping_add(1442695040888963407);
                            let snap = visible.load(Ordering::Acquire);
                            let k = (x >> 33) % KEYS;
                            // Version `s` belongs to key `s % KEYS`.
                            let want = (snap >= k).then(|| snap - (snap - k) % KEYS).filter(|s| *s >= 1);
                            let got = m.get(format!("k{k:03}").as_bytes(), snap).map(|f| f.seq);
                            assert_eq!(got, want, "key {k} at snapshot {snap}");
                            checked += 1;
                        }
                    });
                }
                for s in 1..=LAST {
                    put(&m, &format!("k{:03}", s % KEYS), s);
                    visible.store(s, Ordering::Release);
                }
                done.store(true, Ordering::Release);
            });
            assert_eq!(
                m.get(b"k007", Seq::MAX).unwrap().seq,
                LAST - LAST % KEYS + 7 - KEYS
            );
        }
    }

    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..Default::default() })]
        /// The inline 16-byte heads order keys exactly as their bytes do: keys that share 16 bytes, differ
        /// only by trailing zeros, or are empty; and point reads through the index (or past an overflowed
        /// one) find the newest version at or below every snapshot.
        #[test]
        fn order_and_lookups_match_a_sorted_model(
            keys in proptest::collection::vec(
                proptest::collection::vec(prop_oneof![Just(0u8), Just(1u8), Just(0xffu8)], 0..20),
                1..60,
            ),
            probes in proptest::collection::vec(
                proptest::collection::vec(prop_oneof![Just(0u8), Just(1u8), Just(0xffu8)], 0..20),
                0..20,
            ),
            // 0: a 64-slot point index that overflows after 48 keys (lookups fall back to the skiplist).
            limit in prop_oneof![Just(0u64), Just(1u64 << 20)],
            // Versions of a key arrive newest-last or newest-first (the index keeps the newest either way).
            descending in any::<bool>(),
            // 0: one by one; 1: all at once through `insert_unordered` (a replay); 2: as one commit's batch
            // through `insert_many` (sorted first when large).
            how in 0u8..3,
        ) {
            let m = Arc::new(Memtable::new(limit));
            let mut model: Vec<(Vec<u8>, Seq)> = Vec::new();
            let mut batch = Vec::new();
            for (i, k) in keys.iter().enumerate() {
                let seq = if descending { (keys.len() - i) as Seq } else { i as Seq + 1 };
                let e = Entry {
                    key: Bytes::from(k.clone()),
                    seq,
                    kind: EntryKind::Put,
                    value: Bytes::from(seq.to_le_bytes().to_vec()),
                    expiry: None,
                };
                if how == 0 {
                    m.insert(e);
                } else {
                    batch.push(e);
                }
                model.push((k.clone(), seq));
            }
            if how == 1 {
                m.insert_unordered(batch);
            } else {
                let packed = batch.iter().map(|e| packed_len(&e.key) + packed_len(&e.value)).sum();
                m.insert_many(batch, packed);
            }
            model.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
            let got: Vec<(Vec<u8>, Seq)> = m
                .cursor(Bound::Unbounded, Bound::Unbounded, false)
                .map(|e| e.map(|e| (e.key.to_vec(), e.seq)))
                .collect::<MidgeResult<_>>()
                .unwrap();
            prop_assert_eq!(&got, &model);
            for k in keys.iter().chain(&probes) {
                for snap in [1, keys.len() as Seq / 2, Seq::MAX] {
                    let want = model.iter().find(|(mk, s)| mk == k && *s <= snap).map(|(_, s)| *s);
                    prop_assert_eq!(m.get(k, snap).map(|f| f.seq), want);
                }
            }
        }
    }
}
