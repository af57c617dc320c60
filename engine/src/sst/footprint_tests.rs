//! The block cache charges a decoded block what it really holds on the heap. A counting allocator (this test
//! binary's global allocator) tallies each thread's live allocations, each at [`heap_cost`] of its size, so a
//! block's real holding is what dropping it frees.
#![allow(unsafe_code)] // a global allocator is an unsafe trait; this one only forwards to the system's

use super::block::{DataBlockBuilder, decode_data};
use super::cache::{block_bytes, heap_cost};
use crate::types::{Entry, EntryKind};
use bytes::Bytes;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;

/// Forwards to the system allocator and counts, per thread, the live bytes it handed out.
struct Counting;

thread_local! {
    static LIVE: Cell<i64> = const { Cell::new(0) };
    static CALLS: Cell<u64> = const { Cell::new(0) };
}

fn note(delta: i64) {
    // `try_with`: allocations during thread teardown are not counted.
    let _ = LIVE.try_with(|l| l.set(l.get() + delta));
    let _ = CALLS.try_with(|c| c.set(c.get() + 1));
}

/// Allocator calls (allocations, frees and reallocations) this thread has made so far.
pub(crate) fn allocator_calls() -> u64 {
    CALLS.with(Cell::get)
}

// SAFETY: every call forwards to `System` with the same arguments; the bookkeeping allocates nothing.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is passed on unchanged.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            note(heap_cost(layout.size()) as i64);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            note(heap_cost(layout.size()) as i64);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note(-(heap_cost(layout.size()) as i64));
        // SAFETY: as for `alloc`.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            note(heap_cost(new_size) as i64 - heap_cost(layout.size()) as i64);
        }
        p
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

fn live() -> i64 {
    LIVE.with(Cell::get)
}

/// Entries shaped like the scale test's (16-byte hex keys, 22-byte values), long keys, and larger values.
fn shapes() -> Vec<(&'static str, Vec<Entry>)> {
    let row = |k: String, v: Vec<u8>, seq: u64| Entry {
        key: Bytes::from(k),
        seq,
        kind: EntryKind::Put,
        value: Bytes::from(v),
        expiry: None,
    };
    let small = (0..2000u64)
        .map(|i| {
            row(
                format!("{:016x}", i * 7919),
                format!("value-{i:08}-padding").into_bytes(),
                i + 1,
            )
        })
        .collect();
    let long_keys = (0..2000u64)
        .map(|i| row(format!("user/{:040}/profile", i * 31), vec![b'v'; 8], i + 1))
        .collect();
    let big_values = (0..2000u64)
        .map(|i| row(format!("{i:08}"), vec![b'x'; 100 + (i as usize % 900)], i + 1))
        .collect();
    vec![
        ("small", small),
        ("long keys", long_keys),
        ("big values", big_values),
    ]
}

/// A writer's cache fill decodes the payload the block builder hands it: that block's charge covers the heap it
/// keeps (what dropping it frees), and overstates it by little.
#[test]
fn a_decoded_blocks_charge_covers_what_it_holds() {
    for (shape, entries) in shapes() {
        let mut b = DataBlockBuilder::default();
        let mut blocks = 0;
        for e in &entries {
            b.add(e);
            // The default profile's block size; every full block is checked, each after the builder's buffer
            // has grown through earlier blocks as a writer's does.
            if b.size() >= 16 << 10 {
                let payload = b.finish();
                assert_eq!(
                    payload.capacity(),
                    payload.len(),
                    "{shape}: a payload comes in an allocation of its own length"
                );
                let block = Arc::new(decode_data(payload).unwrap());
                let charged = block_bytes(&block) as i64;
                let before = live();
                drop(block);
                let held = before - live();
                assert!(
                    charged >= held,
                    "{shape}: the cache charges {charged} bytes for a block holding {held}"
                );
                assert!(
                    charged <= held + held / 20,
                    "{shape}: the charge {charged} overstates the {held} bytes held"
                );
                blocks += 1;
            }
        }
        assert!(blocks >= 3, "{shape}: {blocks} blocks checked");
    }
}
