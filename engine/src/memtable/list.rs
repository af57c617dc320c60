//! The memtable's skiplist: versions in internal-key order, inserted by one writer at a time and read by any
//! number of lock-free readers. Nodes are never removed or moved; they are freed together when the list drops.
//!
//! Owns only node memory and links. It never decides visibility (a version is invisible to readers until its
//! commit's sequence is published, so readers may or may not see a version whose insert is still running).
//!
//! Layout: a node is one span, `[tower[h-1] … tower[0]] [prev | version]`, addressed by its
//! fixed part. A search step reads a link and the next node's key head, which sit next to each other (the key
//! head leads [`Version`]) instead of a full version apart.
//!
//! Nodes are bump-allocated from blocks the list owns ([`Arena`]) and freed with them when the list drops: an
//! insert rarely calls the allocator, and dropping a flushed memtable frees a few dozen blocks, not one
//! allocation per version (which, on the flush thread, took the inserting thread's allocator lock once per
//! version while that thread was committing).
//!
//! Invariants:
//! - inserts run one at a time (the `writer` lock); a node's version and links are written before the node is
//!   published by a release store into its predecessors' links, so a reader that acquires a link to it sees it
//!   whole;
//! - at every level the links visit nodes in strictly ascending internal-key order; `prev` points at a node
//!   strictly before its own (possibly not the immediate one while an insert before it is running);
//! - every node lives until the list drops, so a pointer read from a link stays valid for `&self`'s lifetime.
#![allow(unsafe_code)]

use super::{IKeyView, Version, cmp_parts};
use std::alloc::{Layout, alloc, dealloc, handle_alloc_error};
use std::cmp::Ordering as Cmp;
use std::ops::Bound;
use std::ptr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

/// Levels at most: with half the nodes of each level reaching the next, enough for 2^24 nodes.
const MAX_HEIGHT: usize = 24;

/// The fixed part of a node; its tower of `height` links lies just below it in the same allocation.
#[repr(C)]
struct Node {
    /// The level-0 predecessor (null: the head).
    prev: AtomicPtr<Node>,
    version: Version,
}

/// A node's allocation layout and the offset of its fixed part.
fn node_layout(height: usize) -> (Layout, usize) {
    let tower = Layout::array::<AtomicPtr<Node>>(height).unwrap_or_else(|_| Layout::new::<()>());
    match tower.extend(Layout::new::<Node>()) {
        Ok(l) => l,
        // Unreachable for heights up to `MAX_HEIGHT` (a few hundred bytes).
        Err(_) => handle_alloc_error(Layout::new::<Node>()),
    }
}

/// The first block an arena allocates; each next one doubles, up to [`ARENA_BLOCK_MAX`] (a memtable that
/// holds a handful of versions, as most column families' do, keeps a small footprint).
const ARENA_BLOCK_MIN: usize = 4 << 10;
/// The largest arena block (≈ 2,000 nodes of a 16-byte key).
const ARENA_BLOCK_MAX: usize = 256 << 10;

/// Node memory: blocks handed out front to back, never freed before the arena drops (nodes are never removed).
/// Used only under the writer lock.
struct Arena {
    /// Every block allocated, with its layout.
    blocks: Vec<(*mut u8, Layout)>,
    /// The unused span of the last block: `[next, end)` (both 0 before the first block).
    next: usize,
    end: usize,
}

impl Arena {
    const fn new() -> Arena {
        Arena {
            blocks: Vec::new(),
            next: 0,
            end: 0,
        }
    }

    /// Room for `layout` (whose size is at most [`ARENA_BLOCK_MAX`]), aligned, valid until the arena drops.
    fn alloc(&mut self, layout: Layout) -> *mut u8 {
        let start = self.next.next_multiple_of(layout.align());
        if self.next == 0 || start + layout.size() > self.end {
            let size = self
                .blocks
                .last()
                .map_or(ARENA_BLOCK_MIN, |(_, l)| (l.size() * 2).min(ARENA_BLOCK_MAX))
                .max(layout.size());
            let block = Layout::from_size_align(size, layout.align().max(16))
                .unwrap_or_else(|_| handle_alloc_error(layout));
            // SAFETY: `block` has a non-zero size (at least `ARENA_BLOCK_MIN`).
            let base = unsafe { alloc(block) };
            if base.is_null() {
                handle_alloc_error(block);
            }
            self.blocks.push((base, block));
            self.next = base.addr();
            self.end = base.addr() + size;
            return self.alloc(layout);
        }
        self.next = start + layout.size();
        let (base, _) = self.blocks[self.blocks.len() - 1];
        // SAFETY: `[start, start + size)` lies inside the last block (checked above), so the offset stays
        // within its allocation; the pointer keeps that allocation's provenance.
        unsafe { base.add(start - base.addr()) }
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        for &(base, layout) in &self.blocks {
            // SAFETY: each block was allocated by `Arena::alloc` with exactly this layout, and is freed once.
            unsafe { dealloc(base, layout) };
        }
    }
}

/// What one insert at a time owns: the height generator's state and the node arena.
struct Writer {
    seed: u64,
    arena: Arena,
    /// The last node of each level (null: the level is empty, its predecessor is the head). A version after
    /// the last node — a sorted replay, a sequential load, a batch of new keys above every key here — links in
    /// after these without a search.
    tails: [*const Node; MAX_HEIGHT],
}

/// See the module docs.
pub(super) struct List {
    head: [AtomicPtr<Node>; MAX_HEIGHT],
    /// Levels in use (at least 1).
    height: AtomicUsize,
    /// Held by each insert (one writer at a time).
    writer: Mutex<Writer>,
}

// SAFETY: the list owns its nodes and their arena (freed only in `Drop`, with `&mut self`). Shared access only
// reads versions, which are immutable once published (and `Version` is `Send + Sync`), and reads or writes
// links through atomics; writers, and so every use of the arena, are serialised by `writer`.
unsafe impl Send for List {}
// SAFETY: as for `Send`.
unsafe impl Sync for List {}

impl std::fmt::Debug for List {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("List")
            .field("height", &self.height.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Default for List {
    fn default() -> List {
        List {
            head: std::array::from_fn(|_| AtomicPtr::new(ptr::null_mut())),
            height: AtomicUsize::new(1),
            writer: Mutex::new(Writer {
                seed: 0x2545_f491_4f6c_dd1d,
                arena: Arena::new(),
                tails: [ptr::null(); MAX_HEIGHT],
            }),
        }
    }
}

impl List {
    /// The link at `level` leaving `n` (null: the head).
    ///
    /// SAFETY (of the dereference): a non-null `n` is a node of this list, alive for `&self`'s lifetime, and
    /// `level` is below its height (callers only pass levels they reached it on, or below its height).
    fn link(&self, n: *const Node, level: usize) -> &AtomicPtr<Node> {
        if n.is_null() {
            &self.head[level]
        } else {
            unsafe { &*(n as *const AtomicPtr<Node>).sub(level + 1) }
        }
    }

    /// The version held by node `n` (not null).
    ///
    /// SAFETY (of the dereference): `n` is a published node of this list; its version was written before it
    /// was published and never changes; it lives as long as the list.
    fn version(&self, n: *const Node) -> &Version {
        unsafe { &(*n).version }
    }

    fn cmp(&self, n: *const Node, key: &dyn IKeyView) -> Cmp {
        cmp_parts(self.version(n), key)
    }

    /// The first node at or after the lower bound (null: none).
    fn seek_ge(&self, lower: Bound<&dyn IKeyView>) -> *const Node {
        let (key, strict) = match lower {
            Bound::Included(k) => (k, false),
            Bound::Excluded(k) => (k, true),
            Bound::Unbounded => return self.head[0].load(Ordering::Acquire),
        };
        let mut x: *const Node = ptr::null();
        // The node that ended the last level's walk: the answer once that level is 0. (Not a fresh load of
        // `x`'s link, which may meanwhile lead to a node inserted before the bound.)
        let mut succ: *const Node = ptr::null();
        for level in (0..self.height.load(Ordering::Acquire)).rev() {
            loop {
                succ = self.link(x, level).load(Ordering::Acquire);
                if succ.is_null() {
                    break;
                }
                match self.cmp(succ, key) {
                    Cmp::Less => x = succ,
                    Cmp::Equal if strict => x = succ,
                    _ => break,
                }
            }
        }
        succ
    }

    /// The last node at or before the upper bound (null: none).
    fn seek_le(&self, upper: Bound<&dyn IKeyView>) -> *const Node {
        let mut x: *const Node = ptr::null();
        for level in (0..self.height.load(Ordering::Acquire)).rev() {
            loop {
                let nx = self.link(x, level).load(Ordering::Acquire);
                if nx.is_null() {
                    break;
                }
                let before = match upper {
                    Bound::Included(k) => self.cmp(nx, k) != Cmp::Greater,
                    Bound::Excluded(k) => self.cmp(nx, k) == Cmp::Less,
                    Bound::Unbounded => true,
                };
                if !before {
                    break;
                }
                x = nx;
            }
        }
        x
    }

    /// The first version at or after `lower` (the internal-key order).
    pub fn lower_bound(&self, lower: Bound<&dyn IKeyView>) -> Option<&Version> {
        let n = self.seek_ge(lower);
        (!n.is_null()).then(|| self.version(n))
    }

    /// The first version (the smallest internal key).
    pub fn first(&self) -> Option<&Version> {
        self.lower_bound(Bound::Unbounded)
    }

    /// The last version (the largest internal key).
    pub fn last(&self) -> Option<&Version> {
        let n = self.seek_le(Bound::Unbounded);
        (!n.is_null()).then(|| self.version(n))
    }

    /// Up to `max` versions within the bounds, ascending (or descending when `reverse`), each passed to `f`.
    pub fn visit(
        &self,
        lower: Bound<&dyn IKeyView>,
        upper: Bound<&dyn IKeyView>,
        reverse: bool,
        max: usize,
        mut f: impl FnMut(&Version),
    ) {
        let within = |n: *const Node, b: Bound<&dyn IKeyView>, below: bool| match b {
            Bound::Unbounded => true,
            Bound::Included(k) => {
                let c = self.cmp(n, k);
                c == Cmp::Equal || (c == Cmp::Less) == below
            }
            Bound::Excluded(k) => {
                let c = self.cmp(n, k);
                c != Cmp::Equal && (c == Cmp::Less) == below
            }
        };
        let mut n = if reverse {
            self.seek_le(upper)
        } else {
            self.seek_ge(lower)
        };
        let mut taken = 0;
        while !n.is_null() && taken < max {
            let in_bounds = if reverse {
                within(n, lower, false)
            } else {
                within(n, upper, true)
            };
            if !in_bounds {
                break;
            }
            f(self.version(n));
            taken += 1;
            n = if reverse {
                // SAFETY: `n` is a published node of this list (see `List::version`).
                unsafe { (*n).prev.load(Ordering::Acquire) }
            } else {
                self.link(n, 0).load(Ordering::Acquire)
            };
        }
    }

    /// The node holding `v`, a version of this list.
    ///
    /// SAFETY (of the pointer): `v` lies inside a node of this list, whose allocation's provenance was exposed
    /// when it was inserted; the node's fixed part starts `offset_of!(Node, version)` bytes before `v`.
    fn node_of(v: &Version) -> *const Node {
        let addr = (v as *const Version).addr() - std::mem::offset_of!(Node, version);
        ptr::with_exposed_provenance(addr)
    }

    /// Inserts `v` unless an equal version is present; returns the version in the list. `hint`, when given,
    /// is a version of this list that may directly follow `v` (the newest version of `v`'s key, for a newer
    /// `v`): a single-level node then links in next to it without a search. A wrong hint only costs the search.
    pub fn insert(&self, v: Version, hint: Option<&Version>) -> &Version {
        let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let Writer { seed, arena, tails } = &mut *w;
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        // Half the nodes of each level reach the next (a quarter made random inserts slower: more nodes
        // visited on the levels that miss the cache).
        let mut height = (1 + seed.trailing_zeros() as usize).min(MAX_HEIGHT);
        // A newer version of a key already here (an overwrite) is mostly a single-level node, so it links in
        // next to the key's newest version without a search; one in 16 keeps its drawn height, which bounds
        // the level-0 run a search for an older version of a hot key walks. Nothing else loses height: a hint
        // of another key (a sorted batch's previous key) keeps the list's balance.
        if height > 1
            && *seed >> 60 != 0
            && let Some(h) = hint
            && h.is_of(&v.head, &v.key)
        {
            height = 1;
        }
        if height == 1
            && let Some(h) = hint
        {
            let x = List::node_of(h);
            // SAFETY: `x` is a published node of this list (the hint's contract, see `node_of`).
            let p = unsafe { (*x).prev.load(Ordering::Acquire) };
            // Single writer: nothing else links in between `p` and `x` meanwhile.
            if cmp_parts(h, &v) == Cmp::Greater
                && (p.is_null() || self.cmp(p, &v) == Cmp::Less)
                && ptr::eq(self.link(p, 0).load(Ordering::Acquire), x)
            {
                let n = List::alloc_node(arena, v, [x.cast_mut()].iter().copied(), p);
                self.publish(n, &[p], x);
                return self.version(n);
            }
        }
        let mut preds = [ptr::null::<Node>(); MAX_HEIGHT];
        let top = self.height.load(Ordering::Relaxed);
        let last = tails[0];
        if !last.is_null() && self.cmp(last, &v) == Cmp::Less {
            // After every node: each level's predecessor is its last node (or the head), nothing follows.
            let n = List::alloc_node(arena, v, std::iter::repeat_n(ptr::null_mut(), height), last);
            self.publish(n, &tails[..height], ptr::null());
            tails[..height].fill(n);
            if height > top {
                self.height.store(height, Ordering::Release);
            }
            return self.version(n);
        }
        let mut x: *const Node = ptr::null();
        for level in (0..top).rev() {
            loop {
                let nx = self.link(x, level).load(Ordering::Acquire);
                if nx.is_null() {
                    break;
                }
                match self.cmp(nx, &v) {
                    Cmp::Less => x = nx,
                    // A replayed duplicate: keep the node already there (the point index may point at it).
                    Cmp::Equal => return self.version(nx),
                    Cmp::Greater => break,
                }
            }
            preds[level] = x;
        }
        let succ0 = self.link(preds[0], 0).load(Ordering::Relaxed);
        let n = List::alloc_node(
            arena,
            v,
            (0..height).map(|l| self.link(preds[l], l).load(Ordering::Relaxed)),
            preds[0],
        );
        self.publish(n, &preds[..height], succ0);
        for (level, tail) in tails.iter_mut().enumerate().take(height) {
            if self.link(n, level).load(Ordering::Relaxed).is_null() {
                *tail = n;
            }
        }
        if height > top {
            self.height.store(height, Ordering::Release);
        }
        self.version(n)
    }

    /// Allocates a node for `v` from `arena`, whose tower holds `succs` (one per level, bottom up) and whose
    /// `prev` is `prev`; exposes its provenance (see [`List::node_of`]).
    fn alloc_node(
        arena: &mut Arena,
        v: Version,
        succs: impl ExactSizeIterator<Item = *mut Node>,
        prev: *const Node,
    ) -> *const Node {
        let height = succs.len();
        let (layout, offset) = node_layout(height);
        let base = arena.alloc(layout);
        // SAFETY: `base` is `layout`'s size of unused arena memory, aligned for it. The fixed part and every
        // tower slot are written before the node is reachable; the pointers stay within that span.
        unsafe {
            let n = base.add(offset).cast::<Node>();
            ptr::write(
                n,
                Node {
                    prev: AtomicPtr::new(prev.cast_mut()),
                    version: v,
                },
            );
            for (level, s) in succs.enumerate() {
                ptr::write(n.cast::<AtomicPtr<Node>>().sub(level + 1), AtomicPtr::new(s));
            }
            let _ = n.expose_provenance();
            n
        }
    }

    /// Links the initialised node `n` in after `preds` (one per level of its tower, bottom up), then points
    /// its level-0 successor's `prev` at it.
    fn publish(&self, n: *const Node, preds: &[*const Node], succ0: *const Node) {
        for (level, p) in preds.iter().enumerate() {
            self.link(*p, level).store(n.cast_mut(), Ordering::Release);
        }
        if !succ0.is_null() {
            // SAFETY: `succ0` is a published node of this list.
            unsafe { (*succ0).prev.store(n.cast_mut(), Ordering::Release) };
        }
    }
}

impl Drop for List {
    fn drop(&mut self) {
        let mut n = self.head[0].load(Ordering::Relaxed);
        while !n.is_null() {
            // SAFETY: `&mut self`: no reader or writer remains. Each node was written by `alloc_node` into the
            // arena (still alive: it drops after this), is reached exactly once on level 0, and its successor
            // is read before its version is dropped. The arena's blocks are freed when `writer` drops.
            unsafe {
                let next = (*n.cast::<AtomicPtr<Node>>().sub(1)).load(Ordering::Relaxed);
                ptr::drop_in_place(ptr::addr_of_mut!((*n).version));
                n = next;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{EntryKind, Seq, key_head};
    use bytes::Bytes;
    use proptest::prelude::*;
    use std::cmp::Reverse;

    fn ver(key: &[u8], seq: Seq) -> Version {
        Version {
            head: key_head(key),
            rseq: Reverse(seq),
            key: Bytes::copy_from_slice(key),
            value: Bytes::from(seq.to_le_bytes().to_vec()),
            expiry: None,
            kind: EntryKind::Put,
        }
    }

    fn all(l: &List, reverse: bool) -> Vec<(Vec<u8>, Seq)> {
        let mut out = Vec::new();
        l.visit(Bound::Unbounded, Bound::Unbounded, reverse, usize::MAX, |v| {
            out.push((v.key.to_vec(), v.seq()))
        });
        out
    }

    fn bound(b: &Bound<Version>) -> Bound<&dyn IKeyView> {
        match b {
            Bound::Included(v) => Bound::Included(v),
            Bound::Excluded(v) => Bound::Excluded(v),
            Bound::Unbounded => Bound::Unbounded,
        }
    }

    fn in_bounds(x: &(Vec<u8>, Seq), lo: &Bound<(Vec<u8>, Seq)>, hi: &Bound<(Vec<u8>, Seq)>) -> bool {
        let key = |e: &(Vec<u8>, Seq)| (e.0.clone(), Reverse(e.1));
        let k = key(x);
        (match lo {
            Bound::Included(b) => k >= key(b),
            Bound::Excluded(b) => k > key(b),
            Bound::Unbounded => true,
        }) && (match hi {
            Bound::Included(b) => k <= key(b),
            Bound::Excluded(b) => k < key(b),
            Bound::Unbounded => true,
        })
    }

    /// Every level ascends strictly, each level's nodes are on the level below, and the writer's tails are
    /// each level's last node.
    fn check_levels(l: &List) {
        let top = l.height.load(Ordering::Acquire);
        let tails = l.writer.lock().unwrap().tails;
        let mut below: Vec<*const Node> = Vec::new();
        for (level, &tail) in tails.iter().enumerate() {
            let mut nodes = Vec::new();
            let mut x = l.head[level].load(Ordering::Acquire).cast_const();
            while !x.is_null() {
                if let Some(&p) = nodes.last() {
                    assert_eq!(cmp_parts(l.version(p), l.version(x)), Cmp::Less, "level {level}");
                }
                nodes.push(x);
                x = l.link(x, level).load(Ordering::Acquire);
            }
            assert!(
                level < top || nodes.is_empty(),
                "level {level} above the height {top}"
            );
            if level > 0 {
                assert!(
                    nodes.iter().all(|n| below.contains(n)),
                    "level {level} skips a level"
                );
            }
            assert_eq!(
                tail,
                nodes.last().copied().unwrap_or(ptr::null()),
                "tail of level {level}"
            );
            below = nodes;
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..Default::default() })]
        /// Whatever the insert order, duplicates and hints (right, wrong or none), the list holds each
        /// version once in internal-key order, forward and backward, and bounded visits and lower bounds
        /// agree with a sorted model.
        #[test]
        fn the_list_matches_a_sorted_model(
            mut ops in proptest::collection::vec((0u8..12, 1u64..40, 0u8..3), 1..200),
            sorted_prefix in 0usize..200,
            bounds in proptest::collection::vec(
                ((0u8..3, 0u8..13, 0u64..41), (0u8..3, 0u8..13, 0u64..41), any::<bool>(), 1usize..20),
                1..8,
            ),
        ) {
            let key = |k: u8| -> Vec<u8> {
                // Keys that share their 16-byte head, and short ones.
                if k.is_multiple_of(2) { vec![b'k', k] } else { let mut v = vec![7u8; 16]; v.push(k); v }
            };
            // A prefix in internal-key order (a sorted replay or load: each version after the last node), the
            // rest in any order.
            let cut = sorted_prefix.min(ops.len());
            ops[..cut].sort_by(|a, b| key(a.0).cmp(&key(b.0)).then(b.1.cmp(&a.1)));
            let l = List::default();
            let mut model: Vec<(Vec<u8>, Seq)> = Vec::new();
            let mut inserted: Vec<*const Version> = Vec::new();
            for &(k, seq, hint) in &ops {
                let kb = key(k);
                let newest = model.iter().filter(|(mk, _)| *mk == kb).map(|e| e.1).max();
                // 0: no hint; 1: the key's newest version (the memtable's hint); 2: any earlier version.
                let h: Option<&Version> = match hint {
                    1 => newest.and_then(|s| {
                        let v = ver(&kb, s);
                        l.lower_bound(Bound::Included(&v)).filter(|x| x.seq() == s && x.key == kb)
                    }),
                    // SAFETY (test): versions of `l`, which is alive and never frees a node.
                    2 => inserted.get(seq as usize % inserted.len().max(1)).map(|p| unsafe { &**p }),
                    _ => None,
                };
                let got = l.insert(ver(&kb, seq), h);
                prop_assert_eq!((&got.key[..], got.seq()), (&kb[..], seq));
                inserted.push(got as *const Version);
                if !model.contains(&(kb.clone(), seq)) {
                    model.push((kb, seq));
                }
            }
            model.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
            prop_assert_eq!(all(&l, false), model.clone());
            check_levels(&l);
            let mut rev = model.clone();
            rev.reverse();
            prop_assert_eq!(all(&l, true), rev);
            let mk = |(kind, k, s): (u8, u8, u64)| -> (Bound<Version>, Bound<(Vec<u8>, Seq)>) {
                match kind {
                    0 => (Bound::Included(ver(&key(k), s)), Bound::Included((key(k), s))),
                    1 => (Bound::Excluded(ver(&key(k), s)), Bound::Excluded((key(k), s))),
                    _ => (Bound::Unbounded, Bound::Unbounded),
                }
            };
            for &(lo, hi, reverse, max) in &bounds {
                let (lo, mlo) = mk(lo);
                let (hi, mhi) = mk(hi);
                let mut got = Vec::new();
                l.visit(bound(&lo), bound(&hi), reverse, max, |v| got.push((v.key.to_vec(), v.seq())));
                let mut want: Vec<_> = model.iter().filter(|e| in_bounds(e, &mlo, &mhi)).cloned().collect();
                if reverse {
                    want.reverse();
                }
                want.truncate(max);
                prop_assert_eq!(got, want);
                let first = l.lower_bound(bound(&lo)).map(|v| (v.key.to_vec(), v.seq()));
                let want = model.iter().find(|e| in_bounds(e, &mlo, &Bound::Unbounded)).cloned();
                prop_assert_eq!(first, want);
            }
        }
    }

    /// Nodes come from the list's arena: inserting thousands of versions calls the allocator a few dozen
    /// times (its blocks), not once per node, and dropping the list frees those blocks, not every node. (One
    /// allocation per node, freed on the flush thread, contended with the committing thread's allocator.)
    #[test]
    fn nodes_come_from_the_arena() {
        use crate::sst::footprint_tests::allocator_calls;
        const N: u64 = 20_000;
        let versions: Vec<Version> = (0..N)
            .map(|i| ver(format!("key{:08}", i.wrapping_mul(7919) % N).as_bytes(), i + 1))
            .collect();
        let l = List::default();
        let before = allocator_calls();
        for v in versions {
            l.insert(v, None);
        }
        let inserting = allocator_calls() - before;
        assert!(inserting < 200, "{N} inserts made {inserting} allocator calls");
        assert_eq!(all(&l, false).len(), N as usize);
        // Versions own their key and value buffers: dropping the list frees those (two per version) and the
        // arena's blocks, not a node per version on top.
        let before = allocator_calls();
        drop(l);
        let dropping = allocator_calls() - before;
        assert!(
            dropping < 2 * N + 200,
            "dropping {N} versions made {dropping} allocator calls"
        );
    }

    /// Overwrites hinted with the key's newest version are mostly single-level nodes (linked in without a
    /// search), yet about one in 32 still gets a tower; inserts hinted with another key keep the drawn
    /// heights (half of all nodes have a tower).
    #[test]
    fn hinted_overwrites_are_mostly_single_level() {
        // Nodes with a tower are exactly those linked on level 1.
        let tall_share = |l: &List| {
            let count = |level: usize| {
                let (mut n, mut c) = (l.head[level].load(Ordering::Acquire).cast_const(), 0);
                while !n.is_null() {
                    c += 1;
                    n = l.link(n, level).load(Ordering::Acquire);
                }
                c
            };
            count(1) as f64 / count(0) as f64
        };
        let hot = List::default();
        let mut newest = hot.insert(ver(b"hot", 1), None) as *const Version;
        for seq in 2..=4096 {
            // SAFETY (test): a version of `hot`, which is alive.
            newest = hot.insert(ver(b"hot", seq), Some(unsafe { &*newest })) as *const Version;
        }
        let share = tall_share(&hot);
        assert!(share > 0.01 && share < 0.08, "hot key: {share}");
        // A sorted load hinted with the previous key: heights as drawn.
        let sorted = List::default();
        let mut prev: Option<*const Version> = None;
        for i in (0..4096u32).rev() {
            // SAFETY (test): a version of `sorted`, which is alive.
            let h = prev.map(|p| unsafe { &*p });
            prev = Some(sorted.insert(ver(format!("k{i:05}").as_bytes(), 1), h) as *const Version);
        }
        let share = tall_share(&sorted);
        assert!(share > 0.4 && share < 0.6, "sorted load: {share}");
        // Search still finds every version of the hot key.
        for seq in [1, 17, 2048, 4096] {
            let t = ver(b"hot", seq);
            assert_eq!(hot.lower_bound(Bound::Included(&t)).map(|v| v.seq()), Some(seq));
        }
    }

    /// Readers walking the list forward and backward while one writer inserts (with hints) always see
    /// strictly ordered versions.
    #[test]
    fn readers_racing_inserts_see_strict_order() {
        if !crate::runtime::THREADS {
            return;
        }
        use std::sync::atomic::AtomicBool;
        let l = List::default();
        let done = AtomicBool::new(false);
        // The newest sequence inserted; every fourth insert goes to one of `hot` keys.
        let last = std::sync::atomic::AtomicU64::new(0);
        let hot = 4u64;
        std::thread::scope(|sc| {
            for reverse in [false, true] {
                let (l, done, last) = (&l, &done, &last);
                sc.spawn(move || {
                    let mut walks = 0;
                    while !done.load(Ordering::Acquire) || walks < 3 {
                        let got = all(l, reverse);
                        let ordered = got.windows(2).all(|w| {
                            let (a, b) = ((&w[0].0, Reverse(w[0].1)), (&w[1].0, Reverse(w[1].1)));
                            if reverse { a > b } else { a < b }
                        });
                        assert!(ordered, "unordered walk ({reverse})");
                        // A lower bound never lands before its target, even while newer versions of the
                        // target's key (which sort just before it) are being linked in.
                        for i in 0..2000u64 {
                            let k = (i + walks) % hot;
                            let t = ver(format!("key{k:05}").as_bytes(), last.load(Ordering::Acquire));
                            if let Some(v) = l.lower_bound(Bound::Included(&t)) {
                                assert!(cmp_parts(v, &t) != Cmp::Less, "lower bound before its target");
                            }
                        }
                        walks += 1;
                    }
                });
            }
            let mut newest: Vec<Option<*const Version>> = vec![None; 500];
            let mut x = 1u64;
            for seq in 1..30_000u64 {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let mut k = (x >> 33) as usize % newest.len();
                if seq % 4 == 0 {
                    k %= hot as usize;
                }
                // SAFETY (test): versions of `l`, alive until the scope ends.
                let hint = newest[k].map(|p| unsafe { &*p });
                let v = l.insert(ver(format!("key{k:05}").as_bytes(), seq), hint);
                newest[k] = Some(v as *const Version);
                last.store(seq, Ordering::Release);
            }
            done.store(true, Ordering::Release);
        });
        assert_eq!(all(&l, false).len(), 29_999);
    }
}
