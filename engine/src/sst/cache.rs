//! A byte-budgeted LRU cache of decoded data blocks, keyed by (file id, block offset).

use crate::types::{Entry, cmp_tail, key_head, keys_eq};
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// Decoded entries of one block.
pub(crate) type Block = Arc<DecodedBlock>;

/// Keys packed back to back in one buffer, searchable without chasing a pointer per probe.
#[derive(Debug, Default)]
pub(crate) struct PackedKeys {
    keys: Bytes,
    /// `ends[i]` is where key `i` ends in `keys` (it starts where the previous one ends).
    ends: Vec<u32>,
    /// Each key's [`key_head`]: a search probe compares one 16-byte head and reads the key itself only on a
    /// tie (never for keys of at most 16 bytes).
    heads: Vec<[u64; 2]>,
    /// Every [`FENCE`]th head, contiguous: a search binary-searches these (a few cache lines) and then scans
    /// one run of at most [`FENCE`] adjacent heads, instead of probing all over `heads`.
    fences: Fences,
    /// The length every key has, when they all have the same one of at most 16 bytes (fixed-size keys): two
    /// such keys are equal exactly when their heads are, so an equality check reads no key bytes.
    uniform_short_len: Option<usize>,
}

/// Heads per fence (16 × 16 bytes: four adjacent cache lines).
const FENCE: usize = 16;

/// Fences kept inside the owner itself (a data block of up to `INLINE_FENCES * FENCE` entries).
const INLINE_FENCES: usize = 16;

/// A search's fences: inline for a data block's few, so the search's first probes sit at a fixed offset
/// from the block header it has just loaded (fetched alongside it, not after it through a pointer); on the
/// heap for larger key sets (a table's index).
#[derive(Debug, Default)]
struct Fences {
    inline: [[u64; 2]; INLINE_FENCES],
    inline_len: usize,
    /// Non-empty exactly when there are more fences than fit inline.
    heap: Vec<[u64; 2]>,
}

impl Fences {
    fn new(fences: impl Iterator<Item = [u64; 2]>) -> Fences {
        let all: Vec<[u64; 2]> = fences.collect();
        let mut f = Fences::default();
        if all.len() <= INLINE_FENCES {
            f.inline_len = all.len();
            for (slot, x) in f.inline.iter_mut().zip(&all) {
                *slot = *x;
            }
        } else {
            f.heap = all;
        }
        f
    }

    fn as_slice(&self) -> &[[u64; 2]] {
        if self.heap.is_empty() {
            self.inline.get(..self.inline_len).unwrap_or_default()
        } else {
            &self.heap
        }
    }
}

impl PackedKeys {
    pub fn new<'a>(keys: impl Iterator<Item = &'a [u8]>, count: usize, bytes: usize) -> PackedKeys {
        let mut buf = Vec::with_capacity(bytes);
        let mut ends = Vec::with_capacity(count);
        for k in keys {
            buf.extend_from_slice(k);
            ends.push(buf.len() as u32);
        }
        PackedKeys::from_parts(Bytes::from(buf), ends)
    }

    /// From a buffer and the end offset of each key in it.
    pub fn from_parts(keys: Bytes, ends: Vec<u32>) -> PackedKeys {
        let mut p = PackedKeys {
            keys,
            ends,
            heads: Vec::new(),
            fences: Fences::default(),
            uniform_short_len: None,
        };
        p.heads = (0..p.ends.len()).map(|i| key_head(p.key(i))).collect();
        p.fences = Fences::new(p.heads.iter().step_by(FENCE).copied());
        let len0 = p.key(0).len();
        p.uniform_short_len =
            (len0 <= 16 && (0..p.ends.len()).all(|i| p.key(i).len() == len0)).then_some(len0);
        p
    }

    /// Whether key `i` equals `key`, whose [`key_head`] is `head`.
    pub fn eq_at(&self, i: usize, key: &[u8], head: &[u64; 2]) -> bool {
        match self.uniform_short_len {
            Some(len) if i < self.heads.len() => len == key.len() && self.heads.get(i) == Some(head),
            _ => keys_eq(self.key(i), key),
        }
    }

    /// The index of the first key `>= key` (`strict`: `> key`): a binary search over the fences, then a scan
    /// of one run of adjacent heads.
    pub fn lower_bound(&self, key: &[u8], strict: bool) -> usize {
        let h = key_head(key);
        // Whether key `i`, whose head is `head`, still sorts before the bound. On a head tie between keys of
        // at most 16 bytes only the lengths decide (see [`cmp_tail`]): with uniform short keys that length is
        // known, so the tie (the key found, in a point read) reads neither `ends` nor the key bytes.
        let before = |i: usize, head: &[u64; 2]| {
            let ord = head.cmp(&h).then_with(|| match self.uniform_short_len {
                Some(len) if key.len() <= 16 => len.cmp(&key.len()),
                _ => cmp_tail(self.key(i), key),
            });
            ord.is_lt() || (strict && ord.is_eq())
        };
        let fences = self.fences.as_slice();
        let (mut lo, mut hi) = (0, fences.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if fences.get(mid).is_some_and(|f| before(mid * FENCE, f)) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        // Fence `lo` (if any) is the first not before the bound; the answer is in the run ending there.
        let (start, end) = if lo == 0 {
            (0, 0)
        } else {
            ((lo - 1) * FENCE + 1, (lo * FENCE).min(self.heads.len()))
        };
        let mut i = start;
        while i < end && self.heads.get(i).is_some_and(|x| before(i, x)) {
            i += 1;
        }
        i
    }

    /// Whether no two adjacent keys are equal (keys are sorted, so: no key appears twice).
    pub fn all_distinct(&self) -> bool {
        match self.uniform_short_len {
            // Fixed-size keys of at most 16 bytes are equal exactly when their heads are.
            Some(_) => self.heads.windows(2).all(|w| w[0] != w[1]),
            None => (1..self.ends.len()).all(|i| !keys_eq(self.key(i - 1), self.key(i))),
        }
    }

    /// Heap bytes these keys hold (see [`heap_cost`]): the key buffer, taken to be exactly as long as its keys
    /// (true of both constructors), and the offset, head and fence arrays.
    fn heap_bytes(&self) -> usize {
        // A `Bytes` made from a `Vec` allocates a small shared header once it is first sliced or cloned.
        const SHARED_HEADER: usize = 3 * std::mem::size_of::<usize>();
        heap_cost(self.keys.len())
            + heap_cost(SHARED_HEADER)
            + heap_cost(self.ends.capacity() * std::mem::size_of::<u32>())
            + heap_cost(self.heads.capacity() * std::mem::size_of::<[u64; 2]>())
            + heap_cost(self.fences.heap.capacity() * std::mem::size_of::<[u64; 2]>())
    }

    /// Key `i` (empty when out of range).
    pub fn key(&self, i: usize) -> &[u8] {
        let start = if i == 0 {
            0
        } else {
            self.ends.get(i - 1).map_or(0, |e| *e as usize)
        };
        let end = self.ends.get(i).map_or(start, |e| *e as usize);
        self.keys.get(start..end).unwrap_or_default()
    }
}

/// One decoded data block: its entries, plus a copy of their keys back to back for searching. A binary
/// search over the entries themselves chases one pointer per probe into a separately allocated key (two cache
/// misses a probe on a cold block); over the packed keys it touches one small, contiguous buffer.
#[derive(Debug)]
pub(crate) struct DecodedBlock {
    entries: Vec<Entry>,
    keys: PackedKeys,
    /// No key has two versions in this block (typical of a compaction's output): a cursor moving to the next
    /// entry inside the block knows it reaches another key without comparing keys.
    distinct: bool,
    /// Heap bytes the block holds while it is alive: what the cache charges for it.
    footprint: u64,
}

/// What an allocation of `bytes` costs the heap: a general-purpose allocator (glibc's malloc here) adds an
/// 8-byte header and rounds a chunk up to 16 bytes, 32 at least. Counting this keeps the cache's charge for a
/// block of a few hundred small entries honest.
pub(crate) fn heap_cost(bytes: usize) -> usize {
    if bytes == 0 {
        0
    } else {
        (bytes + 8).next_multiple_of(16).max(32)
    }
}

impl DecodedBlock {
    /// From entries and their keys, packed (in the same order); `held` is the heap bytes the entries' values
    /// (and keys, where they are not slices of the packed copy) hold besides, e.g. the decoded payload's
    /// buffer.
    pub fn from_parts(entries: Vec<Entry>, keys: PackedKeys, held: usize) -> DecodedBlock {
        let distinct = keys.all_distinct();
        // The `Arc` holding the block (two counters and the block itself), its entry array, its packed keys,
        // and what the entries point into.
        let footprint = heap_cost(2 * std::mem::size_of::<usize>() + std::mem::size_of::<DecodedBlock>())
            + heap_cost(entries.capacity() * std::mem::size_of::<Entry>())
            + keys.heap_bytes()
            + heap_cost(held)
            + heap_cost(3 * std::mem::size_of::<usize>());
        DecodedBlock {
            entries,
            keys,
            distinct,
            footprint: footprint as u64,
        }
    }

    /// Heap bytes this block holds: its entry array, packed keys with their search arrays, the buffer its
    /// entries' values point into and its own header, each with the allocator's per-chunk overhead.
    pub fn footprint(&self) -> u64 {
        self.footprint
    }

    /// Whether every entry's key differs from its neighbours' (each key has one version in the block).
    pub fn distinct_keys(&self) -> bool {
        self.distinct
    }

    /// Entry `i`'s key, from the packed copy (cheaper to touch than the entry's own).
    pub fn key(&self, i: usize) -> &[u8] {
        self.keys.key(i)
    }

    /// The index of the first entry whose key is `>= key` (`strict`: `> key`).
    pub fn lower_bound(&self, key: &[u8], strict: bool) -> usize {
        self.keys.lower_bound(key, strict)
    }

    /// Whether entry `i`'s key equals `key`, whose [`key_head`] is `head` (see [`PackedKeys::eq_at`]).
    pub fn key_eq(&self, i: usize, key: &[u8], head: &[u64; 2]) -> bool {
        self.keys.eq_at(i, key, head)
    }
}

impl std::ops::Deref for DecodedBlock {
    type Target = [Entry];
    fn deref(&self) -> &[Entry] {
        &self.entries
    }
}

/// A fast, non-cryptographic hasher for the cache's `(file id, offset)` keys (the keys are not attacker-chosen).
#[derive(Debug, Default, Clone, Copy)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }
    fn write_u64(&mut self, x: u64) {
        self.0 = (self.0.rotate_left(5) ^ x).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<(u64, u64), (Block, u64, u64), std::hash::BuildHasherDefault<IdHasher>>,
    by_tick: BTreeMap<u64, (u64, u64)>,
    tick: u64,
    bytes: u64,
    /// Counted under the shard's lock, which a lookup holds anyway: no shared counter written per read.
    hits: u64,
    misses: u64,
    /// The largest block cached here so far: what a fill expects the next block to need.
    largest: u64,
    /// Bytes charged per file: what a compaction's inputs hold here (see [`BlockCache::cached_bytes`]).
    per_file: HashMap<u64, u64, std::hash::BuildHasherDefault<IdHasher>>,
}

impl Inner {
    /// Accounts for `size` bytes of `file` entering this shard.
    fn charge(&mut self, file: u64, size: u64) {
        self.bytes += size;
        *self.per_file.entry(file).or_default() += size;
    }

    /// Accounts for `size` bytes of `file` leaving this shard.
    fn discharge(&mut self, file: u64, size: u64) {
        self.bytes -= size;
        if let Some(b) = self.per_file.get_mut(&file) {
            *b -= size;
            if *b == 0 {
                self.per_file.remove(&file);
            }
        }
    }
}

/// One shard on cache lines of its own, so readers on different shards never write to one line.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard(Mutex<Inner>);

/// Shards of the cache, each its own LRU under its own lock, so concurrent readers rarely share a lock.
const SHARDS: usize = 16;

/// Thread-safe LRU, sharded by block; capacity 0 disables caching.
#[derive(Debug)]
pub(crate) struct BlockCache {
    /// Per shard.
    capacity: u64,
    shards: Box<[Shard]>,
}

/// Memory a decoded block holds, as the cache counts it: its real heap footprint ([`DecodedBlock::footprint`]).
/// Undercounting lets a cache that flushes fill hold more than its budget.
pub(crate) fn block_bytes(b: &DecodedBlock) -> u64 {
    b.footprint()
}

impl BlockCache {
    pub fn new(capacity: u64) -> BlockCache {
        BlockCache {
            capacity: capacity / SHARDS as u64,
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
        }
    }

    /// Lookups that found their block, and those that did not, since the cache was created.
    pub fn hits_and_misses(&self) -> (u64, u64) {
        self.shards.iter().fold((0, 0), |(h, m), s| {
            let g = s.0.lock().unwrap_or_else(|p| p.into_inner());
            (h + g.hits, m + g.misses)
        })
    }

    /// A hit only stamps the entry with a new tick (a hash lookup, no reordering); eviction re-queues
    /// entries whose stamp moved since they were queued, so the order is still least recently used.
    fn shard(&self, file: u64, offset: u64) -> &Mutex<Inner> {
        use std::hash::Hasher;
        let mut h = IdHasher::default();
        h.write_u64(file);
        h.write_u64(offset);
        // The multiply leaves the best-mixed bits on top.
        &self.shards[(h.finish() >> 60) as usize % SHARDS].0
    }

    pub fn get(&self, file: u64, offset: u64) -> Option<Block> {
        let mut g = self.shard(file, offset).lock().unwrap_or_else(|p| p.into_inner());
        let inner = &mut *g;
        inner.tick += 1;
        let tick = inner.tick;
        match inner.map.get_mut(&(file, offset)) {
            Some((b, t, _)) => {
                *t = tick;
                inner.hits += 1;
                Some(b.clone())
            }
            None => {
                inner.misses += 1;
                None
            }
        }
    }

    pub fn insert(&self, file: u64, offset: u64, block: Block) {
        self.insert_with(file, offset, block, true);
    }

    /// Caches a block a writer just wrote, but only into room the shard has: a speculative fill never evicts a
    /// block somebody read, and `decode` (the block's cost) runs only while a block as large as the largest
    /// cached so far, and at least `at_least` bytes (a lower bound such as the payload's length), still fits.
    /// Returns the bytes the cache now charges for the block (0: not cached).
    pub fn fill(&self, file: u64, offset: u64, at_least: u64, decode: impl FnOnce() -> Option<Block>) -> u64 {
        let full = {
            let g = self.shard(file, offset).lock().unwrap_or_else(|p| p.into_inner());
            g.bytes + at_least.max(g.largest) > self.capacity
        };
        match (!full).then(decode).flatten() {
            Some(block) => self.insert_with(file, offset, block, false),
            None => 0,
        }
    }

    /// Bytes the cache charges for blocks of `files`: how warm a compaction's inputs are.
    pub fn cached_bytes(&self, files: &[u64]) -> u64 {
        self.shards
            .iter()
            .map(|s| {
                let g = s.0.lock().unwrap_or_else(|p| p.into_inner());
                files.iter().filter_map(|f| g.per_file.get(f)).sum::<u64>()
            })
            .sum()
    }

    /// Drops every cached block of `files`, tables a compaction or a dropped column family deleted. Only scans
    /// already open on them could read those blocks again, and a cache larger than the data never evicts:
    /// without this, every flush's and compaction's fill would stay resident long after its table was gone.
    pub fn evict_files(&self, files: &[u64]) {
        if files.is_empty() {
            return;
        }
        for shard in self.shards.iter() {
            let mut g = shard.0.lock().unwrap_or_else(|p| p.into_inner());
            let inner = &mut *g;
            let mut freed = 0;
            inner.map.retain(|(file, _), (_, _, size)| {
                let gone = files.contains(file);
                if gone {
                    freed += *size;
                }
                !gone
            });
            inner.bytes -= freed;
            for f in files {
                inner.per_file.remove(f);
            }
            inner.by_tick.retain(|_, (file, _)| !files.contains(file));
        }
    }

    /// Bytes the cache charges for the blocks it holds.
    #[cfg(test)]
    pub fn charged_bytes(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.0.lock().unwrap_or_else(|p| p.into_inner()).bytes)
            .sum()
    }

    /// The files whose blocks the cache holds.
    #[cfg(test)]
    pub fn files(&self) -> std::collections::BTreeSet<u64> {
        self.shards
            .iter()
            .flat_map(|s| {
                let g = s.0.lock().unwrap_or_else(|p| p.into_inner());
                g.map.keys().map(|k| k.0).collect::<Vec<_>>()
            })
            .collect()
    }

    /// Caches `block`; returns the bytes charged for it (0: not cached). Without `evict`, only into free room.
    fn insert_with(&self, file: u64, offset: u64, block: Block, evict: bool) -> u64 {
        let size = block_bytes(&block);
        if size > self.capacity {
            return 0;
        }
        let mut g = self.shard(file, offset).lock().unwrap_or_else(|p| p.into_inner());
        let inner = &mut *g;
        inner.largest = inner.largest.max(size);
        if !evict && inner.bytes + size > self.capacity {
            return 0;
        }
        inner.tick += 1;
        let tick = inner.tick;
        if let Some((_, t, s)) = inner.map.insert((file, offset), (block, tick, size)) {
            inner.by_tick.remove(&t);
            inner.discharge(file, s);
        }
        inner.by_tick.insert(tick, (file, offset));
        inner.charge(file, size);
        while inner.bytes > self.capacity {
            let Some((queued, key)) = inner.by_tick.pop_first() else {
                break;
            };
            match inner.map.get(&key) {
                // Used since it was queued: queue it again at its last use.
                Some((_, t, _)) if *t != queued => {
                    let t = *t;
                    inner.by_tick.insert(t, key);
                }
                Some(_) => {
                    if let Some((_, _, s)) = inner.map.remove(&key) {
                        inner.discharge(key.0, s);
                    }
                }
                None => {}
            }
        }
        size
    }
}
