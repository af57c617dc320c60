//! A byte-budgeted LRU cache of decoded data blocks, keyed by (file id, block offset).

use crate::types::Entry;
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Decoded entries of one block.
pub(crate) type Block = Arc<DecodedBlock>;

/// Keys packed back to back in one buffer, searchable without chasing a pointer per probe.
#[derive(Debug, Default)]
pub(crate) struct PackedKeys {
    keys: Bytes,
    /// `ends[i]` is where key `i` ends in `keys` (it starts where the previous one ends).
    ends: Vec<u32>,
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
        PackedKeys { keys, ends }
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

    /// The index of the first key failing `pred` (`pred` must hold for a prefix of the keys), like
    /// `slice::partition_point`.
    pub fn partition_point(&self, pred: impl Fn(&[u8]) -> bool) -> usize {
        let (mut lo, mut hi) = (0, self.ends.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if pred(self.key(mid)) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }
}

/// One decoded data block: its entries, plus a copy of their keys back to back for searching. A binary
/// search over the entries themselves chases one pointer per probe into a separately allocated key (two cache
/// misses a probe on a cold block); over the packed keys it touches one small, contiguous buffer.
#[derive(Debug)]
pub(crate) struct DecodedBlock {
    entries: Vec<Entry>,
    keys: PackedKeys,
}

impl DecodedBlock {
    /// From entries and their keys, packed (in the same order).
    pub fn from_parts(entries: Vec<Entry>, keys: PackedKeys) -> DecodedBlock {
        DecodedBlock { entries, keys }
    }

    /// Entry `i`'s key, from the packed copy (cheaper to touch than the entry's own).
    pub fn key(&self, i: usize) -> &[u8] {
        self.keys.key(i)
    }

    /// The index of the first entry whose key fails `pred` (`pred` must hold for a prefix of the keys), like
    /// `slice::partition_point` over the keys.
    pub fn partition_point_by_key(&self, pred: impl Fn(&[u8]) -> bool) -> usize {
        self.keys.partition_point(pred)
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
}

/// Thread-safe LRU; capacity 0 disables caching.
#[derive(Debug)]
pub(crate) struct BlockCache {
    capacity: u64,
    inner: Mutex<Inner>,
    pub hits: AtomicU64,
    pub misses: AtomicU64,
}

fn block_bytes(b: &DecodedBlock) -> u64 {
    b.iter()
        .map(|e| 2 * e.key.len() as u64 + e.value.len() as u64 + 52)
        .sum::<u64>()
        + 64
}

impl BlockCache {
    pub fn new(capacity: u64) -> BlockCache {
        BlockCache {
            capacity,
            inner: Mutex::default(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// A hit only stamps the entry with a new tick (a hash lookup, no reordering); eviction re-queues
    /// entries whose stamp moved since they were queued, so the order is still least recently used.
    pub fn get(&self, file: u64, offset: u64) -> Option<Block> {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let inner = &mut *g;
        inner.tick += 1;
        let tick = inner.tick;
        match inner.map.get_mut(&(file, offset)) {
            Some((b, t, _)) => {
                *t = tick;
                self.hits.fetch_add(1, Ordering::Relaxed);
                Some(b.clone())
            }
            None => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    pub fn insert(&self, file: u64, offset: u64, block: Block) {
        let size = block_bytes(&block);
        if size > self.capacity {
            return;
        }
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let inner = &mut *g;
        inner.tick += 1;
        let tick = inner.tick;
        if let Some((_, t, s)) = inner.map.insert((file, offset), (block, tick, size)) {
            inner.by_tick.remove(&t);
            inner.bytes -= s;
        }
        inner.by_tick.insert(tick, (file, offset));
        inner.bytes += size;
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
                        inner.bytes -= s;
                    }
                }
                None => {}
            }
        }
    }
}
