//! Internal record types shared by the memtable, WAL, SST and iterator layers.
//!
//! A version of a key is an [`Entry`]: user key, sequence number, kind, value and optional absolute expiry.
//! Ordering inside every sorted structure is key ascending, then sequence **descending** (newest first).
//! Range deletes are [`RangeTombstone`]s: they hide every version in `[start, end)` with a smaller sequence.

use bytes::Bytes;
use std::cmp::Ordering;

/// Global, monotonic sequence number.
pub(crate) type Seq = u64;

/// Column family id (a `u32`, never reused after drop).
pub type ColumnFamilyId = u32;

/// What a version records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum EntryKind {
    /// A value.
    Put = 0,
    /// A point tombstone.
    Delete = 1,
}

/// One version of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub key: Bytes,
    pub seq: Seq,
    pub kind: EntryKind,
    /// Empty for tombstones.
    pub value: Bytes,
    /// Absolute expiry in milliseconds since the epoch; `None` never expires.
    pub expiry: Option<u64>,
}

impl Entry {
    /// True when this version reads as absent at `now_ms` (a tombstone, or an expired value).
    pub fn is_absent_at(&self, now_ms: u64) -> bool {
        absent_at(self.kind, self.expiry, now_ms)
    }
}

fn absent_at(kind: EntryKind, expiry: Option<u64>, now_ms: u64) -> bool {
    kind == EntryKind::Delete || expiry.is_some_and(|e| e <= now_ms)
}

/// A version found by a point lookup: an [`Entry`] without its key, which the caller already holds (so a
/// lookup never clones or touches the stored key's bytes). Fields as in [`Entry`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Found {
    pub seq: Seq,
    pub kind: EntryKind,
    pub value: Bytes,
    pub expiry: Option<u64>,
}

impl Found {
    /// As [`Entry::is_absent_at`].
    pub fn is_absent_at(&self, now_ms: u64) -> bool {
        absent_at(self.kind, self.expiry, now_ms)
    }
}

impl From<&Entry> for Found {
    fn from(e: &Entry) -> Found {
        Found {
            seq: e.seq,
            kind: e.kind,
            value: e.value.clone(),
            expiry: e.expiry,
        }
    }
}

/// Internal key order: user key ascending, then sequence descending.
#[inline]
pub(crate) fn cmp_internal(ak: &[u8], aseq: Seq, bk: &[u8], bseq: Seq) -> Ordering {
    cmp_keys(ak, bk).then(bseq.cmp(&aseq))
}

/// murmur3's 64-bit finaliser: every output bit depends on every input bit. Part of the blocked bloom filter's
/// on-disk hash (docs/formats/sst.md), so it must never change.
pub(crate) fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Whether `key` lies in `[smallest, largest]` (a table's key range), by [`cmp_keys`].
#[inline]
pub(crate) fn key_within(key: &[u8], smallest: &[u8], largest: &[u8]) -> bool {
    cmp_keys(key, smallest).is_ge() && cmp_keys(key, largest).is_le()
}

/// Byte-wise key order (same as `<[u8]>::cmp`), comparing eight bytes at a time inline: hot loops compare
/// short keys, where a `memcmp` call costs more than the comparison.
#[inline]
pub(crate) fn cmp_keys(a: &[u8], b: &[u8]) -> Ordering {
    let n = a.len().min(b.len());
    let mut i = 0;
    while i + 8 <= n {
        let x = u64::from_be_bytes(a[i..i + 8].try_into().unwrap_or_default());
        let y = u64::from_be_bytes(b[i..i + 8].try_into().unwrap_or_default());
        if x != y {
            return x.cmp(&y);
        }
        i += 8;
    }
    // Fewer than eight common bytes left: a short loop (a slice compare would still call memcmp).
    while i < n {
        if a[i] != b[i] {
            return a[i].cmp(&b[i]);
        }
        i += 1;
    }
    a.len().cmp(&b.len())
}

/// The first 16 bytes of `key`, zero-padded, as two big-endian words. Comparing heads orders keys as their
/// bytes do, except that keys equal in their first 16 bytes (or differing only by trailing zeros there) tie
/// and must be settled by [`cmp_tail`]. Sorted structures keep heads inline so a search compares integers
/// in memory it already touches instead of chasing each key's bytes.
#[inline]
pub(crate) fn key_head(key: &[u8]) -> [u64; 2] {
    // Keys of 16 bytes or more: two fixed-size loads, no variable-length copy (a `memcpy` call).
    if let (Some(hi), Some(lo)) = (key.get(..8), key.get(8..16)) {
        return [
            u64::from_be_bytes(hi.try_into().unwrap_or_default()),
            u64::from_be_bytes(lo.try_into().unwrap_or_default()),
        ];
    }
    let mut b = [0u8; 16];
    let n = key.len().min(16);
    b[..n].copy_from_slice(&key[..n]);
    let (hi, lo) = b.split_at(8);
    [
        u64::from_be_bytes(hi.try_into().unwrap_or_default()),
        u64::from_be_bytes(lo.try_into().unwrap_or_default()),
    ]
}

/// Orders two keys whose [`key_head`]s are equal. Two keys of at most 16 bytes with equal heads differ only
/// in trailing zeros, so the shorter one is a prefix of the other and sorts first: their lengths decide
/// without reading the key bytes.
#[inline]
pub(crate) fn cmp_tail(a: &[u8], b: &[u8]) -> Ordering {
    if a.len() <= 16 && b.len() <= 16 {
        a.len().cmp(&b.len())
    } else {
        cmp_keys(a, b)
    }
}

/// Key equality, eight bytes at a time inline (see [`cmp_keys`]).
#[inline]
pub(crate) fn keys_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i + 8 <= a.len() {
        if a[i..i + 8] != b[i..i + 8] {
            return false;
        }
        i += 8;
    }
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// A range delete: hides versions of keys in `[start, end)` whose sequence is below `seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RangeTombstone {
    pub start: Bytes,
    pub end: Bytes,
    pub seq: Seq,
}

impl RangeTombstone {
    pub fn covers(&self, key: &[u8]) -> bool {
        self.start.as_ref() <= key && key < self.end.as_ref()
    }
    /// The sequence of the newest tombstone in `ts` at or below `snapshot` covering `key` (0 when none).
    pub fn newest_covering(ts: &[RangeTombstone], key: &[u8], snapshot: Seq) -> Seq {
        ts.iter()
            .filter(|t| t.seq <= snapshot && t.covers(key))
            .map(|t| t.seq)
            .max()
            .unwrap_or(0)
    }
}

/// Largest key size accepted (bytes).
pub const MAX_KEY_SIZE: usize = 64 * 1024;
/// Largest value size accepted (bytes).
pub const MAX_VALUE_SIZE: usize = 32 * 1024 * 1024;

#[cfg(test)]
mod key_order_tests {
    use super::*;

    #[test]
    fn inline_key_compares_match_the_slice_order() {
        let mut keys: Vec<Vec<u8>> = vec![vec![]];
        for len in 1..=19usize {
            for v in [0u8, 1, 0x7F, 0x80, 0xFF] {
                let mut k = vec![b'a'; len];
                k[len - 1] = v;
                keys.push(k.clone());
                k[0] = v;
                keys.push(k);
            }
        }
        for a in &keys {
            for b in &keys {
                assert_eq!(cmp_keys(a, b), a.cmp(b), "{a:?} vs {b:?}");
                assert_eq!(keys_eq(a, b), a == b, "{a:?} vs {b:?}");
            }
        }
    }
}
