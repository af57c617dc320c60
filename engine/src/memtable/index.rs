//! A hash index over one memtable's newest version of each key, so a point read costs a hash and about one
//! cache miss instead of a skiplist descent (≈ 20 dependent misses once the memtable holds a few hundred
//! thousand versions, which is what reads alongside a steady stream of writes pay).
//!
//! Owns only the slot table. The versions it points at are nodes of the memtable's skiplist; it never
//! allocates, frees or orders a version, and it never decides visibility beyond "newest at or below a
//! snapshot, or ask the skiplist".
//!
//! Invariants (the memtable upholds them; see `Memtable`):
//! - every pointer in a slot is the address of a `Version` inside a node of the skiplist that owns this index;
//!   the skiplist never removes or replaces a node (see `list.rs`), so a node lives until the skiplist and
//!   this index are dropped together;
//! - a slot only moves to a newer version of the same key (compare-and-swap on the sequence), so it always
//!   holds the newest version published to it;
//! - an insert that finds no slot sets `overflowed` before its commit becomes visible, after which every lookup
//!   answers [`Probe::Unknown`] (the caller falls back to the skiplist).
#![allow(unsafe_code)]

use super::Version;
use crate::types::fmix64;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// Slots probed before an insert gives up (and the index overflows) or a lookup concludes "absent".
const MAX_PROBE: usize = 32;
/// Memtable bytes per slot. A version costs at least `ENTRY_OVERHEAD` (200) bytes of the memtable budget, so
/// a full memtable holds at most `limit / 200` keys: ≈ 64 % of the slots at 128 bytes per slot.
pub(super) const BYTES_PER_SLOT: u64 = 128;
const MIN_SLOTS: usize = 64;
const MAX_SLOTS: usize = 1 << 24;
/// A slot is `tag << ADDR_BITS | address`: the tag (the top bits of the key's hash) rules out most other keys
/// sharing a probe run without reading their version. Addresses are below 2^48 on every supported target
/// (wasm32 has 32-bit addresses); an insert whose version lies above overflows the index instead.
const ADDR_BITS: u32 = 48;
const ADDR_MASK: u64 = (1 << ADDR_BITS) - 1;

/// What the index knows about a key.
#[derive(Debug)]
pub(super) enum Probe<'a> {
    /// The newest version of the key in the memtable.
    Newest(&'a Version),
    /// The memtable holds no version of the key (as of the caller's snapshot).
    Absent,
    /// The index cannot tell: ask the skiplist.
    Unknown,
}

/// See the module docs. Aligned so that what every lookup reads (`slots`, `mask`, `overflowed`) shares a
/// cache line with nothing a writer changes: `used`, which every insert of a new key increments, sits on a line
/// of its own.
#[repr(align(128))]
pub(super) struct PointIndex {
    slots: Box<[AtomicU64]>,
    mask: usize,
    overflowed: AtomicBool,
    /// Keys placed; the index stops taking new keys at three quarters full, keeping probe runs short.
    used: Used,
}

#[derive(Debug, Default)]
#[repr(align(128))]
struct Used(AtomicUsize);

impl std::fmt::Debug for PointIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PointIndex")
            .field("slots", &self.slots.len())
            .field("used", &self.used.0.load(Ordering::Relaxed))
            .field("overflowed", &self.overflowed.load(Ordering::Relaxed))
            .finish()
    }
}

fn tag_of(hash: u64) -> u64 {
    // Never zero, so a tagged slot is never mistaken for an empty one.
    (hash >> ADDR_BITS).max(1)
}

/// The version a non-empty slot points at.
///
/// SAFETY (of the dereference): a non-empty slot holds the exposed address of a version inside a node of the
/// skiplist that owns this index; the skiplist never removes a node, so it lives as long as `index`.
fn version_at(_index: &PointIndex, slot: u64) -> &Version {
    let p: *const Version = std::ptr::with_exposed_provenance((slot & ADDR_MASK) as usize);
    unsafe { &*p }
}

impl PointIndex {
    /// An index sized for a memtable that rotates at `limit_bytes`.
    pub fn for_limit(limit_bytes: u64) -> PointIndex {
        let want = usize::try_from(limit_bytes / BYTES_PER_SLOT).unwrap_or(MAX_SLOTS);
        let n = want.clamp(MIN_SLOTS, MAX_SLOTS).next_power_of_two();
        // Zeroed memory straight from the allocator (large tables come from fresh, lazily mapped pages), so a
        // rotation under the commit lock does not write megabytes of empty slots.
        let zeros: Box<[u64]> = vec![0u64; n].into_boxed_slice();
        // SAFETY: `AtomicU64` has the same size and bit validity as `u64`; its alignment is 8 on the targets
        // with 64-bit atomics, where `u64`'s is 8 as well (checked below at compile time).
        const _: () = assert!(std::mem::align_of::<AtomicU64>() == std::mem::align_of::<u64>());
        let slots = unsafe { Box::from_raw(Box::into_raw(zeros) as *mut [AtomicU64]) };
        PointIndex {
            slots,
            mask: n - 1,
            overflowed: AtomicBool::new(false),
            used: Used::default(),
        }
    }

    /// Starts loading the key's first slot, so a batch's slot misses overlap instead of each stalling its own
    /// publish.
    pub fn prefetch(&self, hash: u64) {
        crate::runtime::prefetch(&self.slots[hash as usize & self.mask]);
    }

    /// Points the key's slot at `v` unless it already holds a version at least as new. `v` must be a node of
    /// the owning skiplist (see the module invariants).
    pub fn publish(&self, hash: u64, v: &Version) {
        if self.overflowed.load(Ordering::Relaxed) {
            return;
        }
        let addr = (v as *const Version).expose_provenance() as u64;
        let tag = tag_of(hash);
        if addr > ADDR_MASK {
            self.overflowed.store(true, Ordering::Release);
            return;
        }
        let new = tag << ADDR_BITS | addr;
        let mut i = hash as usize & self.mask;
        for _ in 0..MAX_PROBE {
            let slot = &self.slots[i];
            let mut cur = slot.load(Ordering::Acquire);
            loop {
                if cur == 0 {
                    if self.used.0.fetch_add(1, Ordering::Relaxed) >= self.slots.len() / 4 * 3 {
                        break;
                    }
                    match slot.compare_exchange(0, new, Ordering::AcqRel, Ordering::Acquire) {
                        Ok(_) => return,
                        Err(now) => {
                            self.used.0.fetch_sub(1, Ordering::Relaxed);
                            cur = now;
                            continue;
                        }
                    }
                }
                if cur >> ADDR_BITS != tag {
                    break;
                }
                let c = version_at(self, cur);
                if !c.is_of(&v.head, &v.key) {
                    break;
                }
                if c.seq() >= v.seq() {
                    return;
                }
                match slot.compare_exchange(cur, new, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => return,
                    Err(now) => cur = now,
                }
            }
            if cur == 0 {
                // The table is three quarters full.
                break;
            }
            i = (i + 1) & self.mask;
        }
        self.overflowed.store(true, Ordering::Release);
    }

    /// The newest version of `key` (whose head is `head`) the index holds. Versions published before the
    /// caller's snapshot became visible are all reflected.
    pub fn lookup(&self, hash: u64, head: &[u64; 2], key: &[u8]) -> Probe<'_> {
        if self.overflowed.load(Ordering::Acquire) {
            return Probe::Unknown;
        }
        let tag = tag_of(hash);
        let mut i = hash as usize & self.mask;
        for _ in 0..MAX_PROBE {
            let s = self.slots[i].load(Ordering::Acquire);
            if s == 0 {
                return Probe::Absent;
            }
            if s >> ADDR_BITS == tag {
                let v = version_at(self, s);
                if v.is_of(head, key) {
                    return Probe::Newest(v);
                }
            }
            i = (i + 1) & self.mask;
        }
        Probe::Absent
    }
}

/// The slot hash of a key: its 16-byte head, its length and any bytes beyond the head, mixed so that the low
/// bits (the slot number) depend on every input bit.
pub(super) fn hash(head: &[u64; 2], key: &[u8]) -> u64 {
    const K0: u64 = 0x9e37_79b9_7f4a_7c15;
    const K1: u64 = 0xc2b2_ae3d_27d4_eb4f;
    let mut h = (head[0] ^ K0).wrapping_mul(K1) ^ (head[1] ^ key.len() as u64).wrapping_mul(K0);
    if key.len() > 16 {
        for chunk in key[16..].chunks(8) {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            h = (h ^ u64::from_le_bytes(w)).wrapping_mul(K1).rotate_left(31);
        }
    }
    fmix64(h)
}
