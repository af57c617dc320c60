//! A byte-budgeted LRU cache of decoded data blocks, keyed by (file id, block offset).

use crate::types::Entry;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Decoded entries of one block.
pub(crate) type Block = Arc<Vec<Entry>>;

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<(u64, u64), (Block, u64, u64)>,
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

fn block_bytes(b: &[Entry]) -> u64 {
    b.iter()
        .map(|e| e.key.len() as u64 + e.value.len() as u64 + 48)
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

    pub fn get(&self, file: u64, offset: u64) -> Option<Block> {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let inner = &mut *g;
        inner.tick += 1;
        let tick = inner.tick;
        match inner.map.get_mut(&(file, offset)) {
            Some((b, t, _)) => {
                inner.by_tick.remove(t);
                *t = tick;
                inner.by_tick.insert(tick, (file, offset));
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
            let Some((_, key)) = inner.by_tick.pop_first() else {
                break;
            };
            if let Some((_, _, s)) = inner.map.remove(&key) {
                inner.bytes -= s;
            }
        }
    }
}
