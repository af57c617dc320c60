//! A word-at-a-time `memcmp`/`bcmp` for the wasm32 guest.
//!
//! Every key comparison in the engine (slice `Ord`/`Eq` on keys: block binary searches, memtable lookups, the
//! merge of sorted runs) ends in `memcmp`. On wasm32-wasip2 that symbol comes from wasi-libc, whose `memcmp`
//! is musl's byte-at-a-time loop; profiles of the component's point reads showed it costing several times the
//! SST lookup that called it (Midge's keys often share long prefixes). Defining the symbols here makes the
//! linker take these instead of libc's archive members. They compare eight bytes per step and locate the first
//! differing byte with `ctz` (one wasm instruction). Native builds are untouched: this module is only
//! compiled for wasm32, where platform glue belongs in this crate, not in the engine.
//!
//! Correctness is tested natively by `tests` below against `<[u8]>::cmp` (the functions are plain Rust).
#![allow(unsafe_code)] // the libc ABI: raw pointers in, the C contract out

/// Compares the first `n` bytes at `a` and `b` as unsigned bytes: negative, zero or positive, like C's.
///
/// # Safety
/// `a` and `b` must be valid for reads of `n` bytes (the C contract).
#[cfg_attr(target_arch = "wasm32", unsafe(no_mangle))]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut i = 0usize;
    while i + 8 <= n {
        // SAFETY: i + 8 <= n, and the caller guarantees n readable bytes at both pointers.
        let (x, y) = unsafe {
            (
                (a.add(i) as *const u64).read_unaligned(),
                (b.add(i) as *const u64).read_unaligned(),
            )
        };
        if x != y {
            // Native byte order: the lowest address is the least significant byte on little-endian (wasm32 is
            // little-endian by definition), so the first differing byte is at the lowest set bit of x ^ y.
            let d = if cfg!(target_endian = "little") {
                (x ^ y).trailing_zeros()
            } else {
                (x ^ y).leading_zeros()
            } as usize
                / 8;
            // SAFETY: d < 8, so i + d < n.
            let (p, q) = unsafe { (*a.add(i + d), *b.add(i + d)) };
            return i32::from(p) - i32::from(q);
        }
        i += 8;
    }
    while i < n {
        // SAFETY: i < n.
        let (p, q) = unsafe { (*a.add(i), *b.add(i)) };
        if p != q {
            return i32::from(p) - i32::from(q);
        }
        i += 1;
    }
    0
}

/// Equality-only comparison (LLVM lowers slice `==` to it): zero when equal.
///
/// # Safety
/// As [`memcmp`].
#[cfg_attr(target_arch = "wasm32", unsafe(no_mangle))]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: the same contract.
    unsafe { memcmp(a, b, n) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cmp::Ordering;

    fn sign(x: i32) -> Ordering {
        x.cmp(&0)
    }

    #[test]
    fn agrees_with_slice_ordering_on_every_length_and_difference_position() {
        for n in 0..40usize {
            let base: Vec<u8> = (0..n).map(|i| (i * 37 + 11) as u8).collect();
            // SAFETY: both slices hold n bytes.
            assert_eq!(unsafe { memcmp(base.as_ptr(), base.as_ptr(), n) }, 0);
            for pos in 0..n {
                for delta in [1u8, 0x80, 0xff] {
                    let mut other = base.clone();
                    other[pos] = other[pos].wrapping_add(delta);
                    // SAFETY: both slices hold n bytes.
                    let got = unsafe { memcmp(base.as_ptr(), other.as_ptr(), n) };
                    assert_eq!(sign(got), base.cmp(&other), "n={n} pos={pos} delta={delta}");
                    // SAFETY: both slices hold n bytes.
                    let eq = unsafe { bcmp(other.as_ptr(), base.as_ptr(), n) };
                    assert_ne!(eq, 0);
                }
            }
        }
    }
}
