//! Opens an SST (footer, index, bloom, tombstones, meta), serves point lookups and lazy cursors, verifies.

use super::block::{decode_data, unseal};
use super::bloom::Bloom;
#[cfg(test)]
use super::bloom::key_hash;
use super::cache::{Block, BlockCache, PackedKeys};
use super::writer::SstMeta;
use super::{FOOTER_LEN, MAGIC, SstStats, VERSION};
use crate::codec::{DecodeError, Reader, crc_matches};
use crate::error::{Corrupt, FileKind, MidgeError, MidgeResult};
use crate::storage::File;
use crate::types::{Entry, Found, RangeTombstone, Seq, cmp_keys, key_head, key_within};
use bytes::Bytes;
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::Ordering;

#[derive(Debug, Clone)]
struct IndexEntry {
    last_key: Bytes,
    offset: u64,
    len: u64,
}

/// Values a point lookup copies out of their block rather than share (see [`SstReader::get_hashed`]).
pub(crate) const COPY_VALUES_UP_TO: usize = 256;

/// An open SST.
#[derive(Debug)]
pub(crate) struct SstReader {
    file: Arc<dyn File>,
    name: String,
    id: u64,
    size: u64,
    index: Vec<IndexEntry>,
    /// The index's last keys packed, for binary search.
    index_keys: PackedKeys,
    bloom: Option<Bloom>,
    tombstones: Vec<RangeTombstone>,
    meta: SstMeta,
    cache: Option<Arc<BlockCache>>,
    stats: Arc<SstStats>,
}

/// Verification counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct SstVerifyStats {
    pub data_blocks: u64,
    pub entries: u64,
    pub bytes: u64,
}

impl SstReader {
    fn corrupt(&self, offset: u64, expected: &str, actual: impl Into<String>) -> MidgeError {
        Corrupt::new(FileKind::Sst, &self.name, offset, expected, actual).into()
    }

    fn read(&self, offset: u64, len: u64) -> MidgeResult<Vec<u8>> {
        if offset.checked_add(len).is_none_or(|end| end > self.size) || len > 256 << 20 {
            return Err(self.corrupt(
                offset,
                "a block inside the file",
                format!("{len} bytes at {offset}"),
            ));
        }
        let mut buf = vec![0u8; len as usize];
        self.file
            .read_exact_at(offset, &mut buf)
            .map_err(|e| MidgeError::from_io(&self.name, e))?;
        Ok(buf)
    }

    fn read_block(&self, offset: u64, len: u64, what: &str) -> MidgeResult<Vec<u8>> {
        let raw = self.read(offset, len)?;
        unseal(raw).map_err(|e| self.corrupt(offset + e.offset as u64, what, e.what))
    }

    /// Opens and validates the file's footer and metadata blocks.
    pub fn open(
        file: Arc<dyn File>,
        name: String,
        id: u64,
        cache: Option<Arc<BlockCache>>,
        stats: Arc<SstStats>,
    ) -> MidgeResult<SstReader> {
        let size = file.len().map_err(|e| MidgeError::from_io(&name, e))?;
        let mut r = SstReader {
            file,
            name,
            id,
            size,
            index: Vec::new(),
            index_keys: PackedKeys::default(),
            bloom: None,
            tombstones: Vec::new(),
            meta: SstMeta::default(),
            cache,
            stats,
        };
        if size < FOOTER_LEN as u64 {
            return Err(r.corrupt(0, "a footer", format!("a {size}-byte file")));
        }
        let foot_at = size - FOOTER_LEN as u64;
        let footer = r.read(foot_at, FOOTER_LEN as u64)?;
        let crc = u32::from_le_bytes(footer[FOOTER_LEN - 4..].try_into().unwrap_or_default());
        let mut f = Reader::new(&footer);
        let h = |f: &mut Reader<'_>| -> Result<(u64, u64), DecodeError> {
            Ok((f.u64("handle")?, f.u64("handle")?))
        };
        let handles = (|| Ok::<_, DecodeError>([h(&mut f)?, h(&mut f)?, h(&mut f)?, h(&mut f)?]))()
            .map_err(|e| r.corrupt(foot_at, "footer handles", e.what))?;
        let version = f.u32("version").unwrap_or(0);
        let magic = f.u64("magic").unwrap_or(0);
        if magic != MAGIC {
            return Err(r.corrupt(foot_at + 68, "the SST magic", format!("{magic:#x}")));
        }
        if !crc_matches(crc, &footer[..FOOTER_LEN - 4]) {
            return Err(r.corrupt(foot_at + 76, "a footer checksum match", "a mismatch"));
        }
        if version != VERSION {
            return Err(MidgeError::CompatibilityError(format!(
                "{}: SST format {version} (this build reads {VERSION})",
                r.name
            )));
        }
        let [index_h, bloom_h, tomb_h, meta_h] = handles;
        let mut end = 0u64;
        for (o, l) in [bloom_h, tomb_h, meta_h, index_h] {
            if o < end || o.checked_add(l).is_none_or(|e| e > foot_at) {
                return Err(r.corrupt(
                    foot_at,
                    "ordered, in-file metadata blocks",
                    format!("{l} bytes at {o}"),
                ));
            }
            end = o + l;
        }
        let meta = r.read_block(meta_h.0, meta_h.1, "meta block")?;
        r.meta = decode_meta(&meta).map_err(|e| r.corrupt(meta_h.0, "a valid meta block", e.what))?;
        r.meta.size = size;
        let bloom = r.read_block(bloom_h.0, bloom_h.1, "bloom block")?;
        r.bloom = Some(
            Bloom::decode(&bloom).ok_or_else(|| r.corrupt(bloom_h.0, "a valid bloom block", "garbage"))?,
        );
        let tb = r.read_block(tomb_h.0, tomb_h.1, "range tombstone block")?;
        r.tombstones =
            decode_tombstones(&tb).map_err(|e| r.corrupt(tomb_h.0, "valid range tombstones", e.what))?;
        let ib = r.read_block(index_h.0, index_h.1, "index block")?;
        r.index = decode_index(&ib, bloom_h.0).map_err(|e| r.corrupt(index_h.0, "a valid index", e.what))?;
        r.index_keys = PackedKeys::new(
            r.index.iter().map(|ix| ix.last_key.as_ref()),
            r.index.len(),
            r.index.iter().map(|ix| ix.last_key.len()).sum(),
        );
        Ok(r)
    }

    /// The table's metadata block (entry count, key and sequence ranges).
    pub fn meta(&self) -> &SstMeta {
        &self.meta
    }

    pub fn range_tombstones(&self) -> &[RangeTombstone] {
        &self.tombstones
    }

    fn block(&self, i: usize) -> MidgeResult<Block> {
        self.block_with(i, true)
    }

    /// Block `i`, from the cache when there; a block read from the file is cached only when `fill`.
    fn block_with(&self, i: usize, fill: bool) -> MidgeResult<Block> {
        let ix = &self.index[i];
        if let Some(c) = &self.cache
            && let Some(b) = c.get(self.id, ix.offset)
        {
            return Ok(b);
        }
        self.stats.blocks_read.fetch_add(1, Ordering::Relaxed);
        let payload = self.read_block(ix.offset, ix.len, "data block")?;
        let decoded =
            decode_data(payload).map_err(|e| self.corrupt(ix.offset, "a valid data block", e.what))?;
        if decoded.last().map(|e| &e.key) != Some(&ix.last_key) {
            return Err(self.corrupt(ix.offset, "a block ending at its index key", "another key"));
        }
        let b: Block = Arc::new(decoded);
        if fill && let Some(c) = &self.cache {
            c.insert(self.id, ix.offset, b.clone());
        }
        Ok(b)
    }

    /// First block whose last key is >= `key`.
    fn seek_block(&self, key: &[u8]) -> usize {
        self.index_keys.lower_bound(key, false)
    }

    /// Newest version of `key` with `seq <= snapshot` (tombstones included), using the bloom filter first.
    #[cfg(test)]
    pub fn get(&self, key: &[u8], snapshot: Seq) -> MidgeResult<Option<Found>> {
        self.get_hashed(key, key_hash(key), snapshot)
    }

    /// Starts loading the bloom filter line that a lookup of the key whose
    /// [`key_hash`](super::bloom::key_hash) is `h` checks (see [`Bloom::prefetch`]).
    pub fn prefetch_filter(&self, h: u64) {
        if let Some(b) = &self.bloom {
            b.prefetch(h);
        }
    }

    /// Newest version of `key` with `seq <= snapshot` (tombstones included), bloom filter first, for a key whose
    /// [`key_hash`](super::bloom::key_hash) is `h`.
    pub fn get_hashed(&self, key: &[u8], h: u64, snapshot: Seq) -> MidgeResult<Option<Found>> {
        if !key_within(key, &self.meta.smallest_key, &self.meta.largest_key) {
            return Ok(None);
        }
        self.stats.bloom_checks.fetch_add(1, Ordering::Relaxed);
        if self.bloom.as_ref().is_some_and(|b| !b.may_contain_hashed(key, h)) {
            self.stats.bloom_rejects.fetch_add(1, Ordering::Relaxed);
            return Ok(None);
        }
        let head = key_head(key);
        for i in self.seek_block(key)..self.index.len() {
            let b = self.block(i)?;
            // Compare against the packed heads (already warm from the search), touching only the entry found.
            for j in b.lower_bound(key, false)..b.len() {
                if !b.key_eq(j, key, &head) {
                    return Ok(None);
                }
                if b[j].seq <= snapshot {
                    let e = &b[j];
                    // A small value is copied: sharing it would bump the reference count of the block's payload,
                    // a cache line of its own (another miss on a random read), and a value the caller kept would
                    // pin the whole payload. A large one shares the block's buffer (no copy).
                    let value = if e.value.len() <= COPY_VALUES_UP_TO {
                        Bytes::copy_from_slice(&e.value)
                    } else {
                        e.value.clone()
                    };
                    return Ok(Some(Found {
                        seq: e.seq,
                        kind: e.kind,
                        value,
                        expiry: e.expiry,
                    }));
                }
            }
        }
        Ok(None)
    }

    /// Decodes and checksums every block; checks ordering and the entry count.
    pub fn verify(&self) -> MidgeResult<SstVerifyStats> {
        let mut s = SstVerifyStats {
            bytes: self.size,
            ..Default::default()
        };
        let mut last: Option<(Bytes, Seq)> = None;
        for i in 0..self.index.len() {
            let ix = &self.index[i];
            let payload = self.read_block(ix.offset, ix.len, "data block")?;
            let b =
                decode_data(payload).map_err(|e| self.corrupt(ix.offset, "a valid data block", e.what))?;
            if let (Some((k, q)), Some(f)) = (&last, b.first())
                && crate::types::cmp_internal(k, *q, &f.key, f.seq) != std::cmp::Ordering::Less
            {
                return Err(self.corrupt(ix.offset, "blocks in key order", "an overlap"));
            }
            last = b.last().map(|e| (e.key.clone(), e.seq));
            for j in 0..b.len() {
                // Lookups trust the meta bounds and the bloom filter to skip the table: an entry outside them,
                // or a key the filter says is absent, would be a silently missing row.
                self.check_in_bounds(ix.offset, b.key(j), b[j].seq)?;
                if self.bloom.as_ref().is_some_and(|f| !f.may_contain(b.key(j))) {
                    return Err(self.corrupt(ix.offset, "every key in the bloom filter", "a false negative"));
                }
            }
            s.data_blocks += 1;
            s.entries += b.len() as u64;
        }
        if s.entries != self.meta.entries {
            return Err(self.corrupt(
                0,
                &format!("{} entries", self.meta.entries),
                format!("{}", s.entries),
            ));
        }
        if self.tombstones.len() as u64 != self.meta.range_tombstones {
            return Err(self.corrupt(
                0,
                &format!("{} range tombstones", self.meta.range_tombstones),
                format!("{}", self.tombstones.len()),
            ));
        }
        for t in &self.tombstones {
            self.check_in_bounds(0, &t.start, t.seq)?;
            self.check_in_bounds(0, &t.end, t.seq)?;
        }
        Ok(s)
    }

    /// Test hook: replaces the decoded meta and bloom filter (as a writer bug or a forged file would).
    #[cfg(test)]
    pub(crate) fn tamper(&mut self, meta: impl FnOnce(&mut SstMeta), bloom: Option<Bloom>) {
        meta(&mut self.meta);
        if bloom.is_some() {
            self.bloom = bloom;
        }
    }

    /// A key and sequence inside the table's recorded bounds.
    fn check_in_bounds(&self, offset: u64, key: &[u8], seq: Seq) -> MidgeResult<()> {
        let m = &self.meta;
        if key < m.smallest_key.as_ref()
            || key > m.largest_key.as_ref()
            || seq < m.smallest_seq
            || seq > m.largest_seq
        {
            return Err(self.corrupt(
                offset,
                "keys and sequences within the table's recorded bounds",
                format!(
                    "seq {seq} outside {}..={} or a key outside the key range",
                    m.smallest_seq, m.largest_seq
                ),
            ));
        }
        Ok(())
    }
}

fn decode_meta(b: &[u8]) -> Result<SstMeta, DecodeError> {
    let mut r = Reader::new(b);
    let m = SstMeta {
        entries: r.u64("entries")?,
        smallest_key: r.bytes32("smallest key")?,
        largest_key: r.bytes32("largest key")?,
        smallest_seq: r.u64("smallest seq")?,
        largest_seq: r.u64("largest seq")?,
        range_tombstones: r.u64("range tombstones")?,
        size: 0,
    };
    if !r.is_empty() {
        return Err(DecodeError {
            what: "trailing meta bytes",
            offset: r.pos(),
        });
    }
    Ok(m)
}

fn decode_tombstones(b: &[u8]) -> Result<Vec<RangeTombstone>, DecodeError> {
    let mut r = Reader::new(b);
    let n = r.u32("tombstone count")? as usize;
    let mut out = Vec::with_capacity(n.min(r.remaining() / 16));
    for _ in 0..n {
        let at = r.pos();
        let t = RangeTombstone {
            start: r.bytes32("start")?,
            end: r.bytes32("end")?,
            seq: r.u64("seq")?,
        };
        // The engine never writes an empty or inverted range (delete_range rejects start > end, drops start == end).
        if t.start >= t.end {
            return Err(DecodeError {
                what: "range tombstone with start >= end",
                offset: at,
            });
        }
        out.push(t);
    }
    if !r.is_empty() {
        return Err(DecodeError {
            what: "trailing tombstone bytes",
            offset: r.pos(),
        });
    }
    Ok(out)
}

fn decode_index(b: &[u8], data_end: u64) -> Result<Vec<IndexEntry>, DecodeError> {
    let mut r = Reader::new(b);
    let n = r.u32("index count")? as usize;
    let mut out: Vec<IndexEntry> = Vec::with_capacity(n.min(r.remaining() / 28));
    let mut next_off = 0u64;
    for _ in 0..n {
        let at = r.pos();
        let last_key = r.bytes32("index key")?;
        let _seq = r.u64("index seq")?;
        let offset = r.u64("block offset")?;
        let len = r.u64("block len")?;
        if offset != next_off || len < 5 || offset.checked_add(len).is_none_or(|e| e > data_end) {
            return Err(DecodeError {
                what: "block handles not contiguous",
                offset: at,
            });
        }
        if out.last().is_some_and(|p| p.last_key > last_key) {
            return Err(DecodeError {
                what: "index keys out of order",
                offset: at,
            });
        }
        next_off = offset + len;
        out.push(IndexEntry {
            last_key,
            offset,
            len,
        });
    }
    if !r.is_empty() || next_off != data_end {
        return Err(DecodeError {
            what: "index does not cover the data",
            offset: r.pos(),
        });
    }
    Ok(out)
}

/// A lazy cursor over one SST: all versions with user key in bounds, in internal order or exactly reversed.
///
/// It walks the cached, decoded block in place (cloning only the entries it yields) and binary-searches the
/// bound inside each block it loads, so a short seek costs a few comparisons, not a copy of the block.
#[derive(Debug)]
pub(crate) struct SstIter {
    reader: Arc<SstReader>,
    lo: Bound<Bytes>,
    hi: Bound<Bytes>,
    reverse: bool,
    /// Next block to load (forward) or one past it (reverse).
    next_block: usize,
    block: Option<Block>,
    /// Forward: the next entry to yield. Reverse: one past it.
    pos: usize,
    /// The entry under the cursor (an index into `block`).
    cur: Option<usize>,
    /// Whether the loaded block reaches past the far bound (so each entry must be checked against it).
    check_far: bool,
    /// Whether a block was loaded (and searched for the near bound) yet.
    searched: bool,
    /// Whether blocks read from the file go into the block cache (not for compaction inputs, which are about
    /// to be deleted and would only evict blocks readers use).
    fill_cache: bool,
    done: bool,
}

// Inline comparisons (`cmp_keys`), not slice operators: a prefix scan checks its far bound on every row of
// its last block, and a `memcmp` call costs more than comparing a short key.
fn in_lo(lo: &Bound<Bytes>, k: &[u8]) -> bool {
    match lo {
        Bound::Included(b) => cmp_keys(k, b).is_ge(),
        Bound::Excluded(b) => cmp_keys(k, b).is_gt(),
        Bound::Unbounded => true,
    }
}

fn in_hi(hi: &Bound<Bytes>, k: &[u8]) -> bool {
    match hi {
        Bound::Included(b) => cmp_keys(k, b).is_le(),
        Bound::Excluded(b) => cmp_keys(k, b).is_lt(),
        Bound::Unbounded => true,
    }
}

/// Entries a cursor asks the CPU to load as it enters a block (a short scan's worth).
const PREFETCH_ENTRIES: usize = 8;

impl SstIter {
    pub fn new(reader: Arc<SstReader>, lo: Bound<Bytes>, hi: Bound<Bytes>, reverse: bool) -> SstIter {
        let next_block = if reverse {
            match &hi {
                Bound::Unbounded => reader.index.len(),
                // Versions of one key may continue into the next block, so include one block past the bound.
                Bound::Included(k) => (reader.index_keys.lower_bound(k, true) + 1).min(reader.index.len()),
                Bound::Excluded(k) => (reader.seek_block(k) + 1).min(reader.index.len()),
            }
        } else {
            match &lo {
                Bound::Unbounded => 0,
                Bound::Included(k) | Bound::Excluded(k) => reader.seek_block(k),
            }
        };
        SstIter {
            reader,
            lo,
            hi,
            reverse,
            next_block,
            block: None,
            pos: 0,
            cur: None,
            check_far: true,
            searched: false,
            fill_cache: true,
            done: false,
        }
    }

    /// Reads blocks missing from the cache without caching them.
    pub fn without_cache_fill(mut self) -> SstIter {
        self.fill_cache = false;
        self
    }

    /// Loads the next block in iteration order and positions inside it; false at the end.
    fn load_next(&mut self) -> MidgeResult<bool> {
        let i = if self.reverse {
            if self.next_block == 0 {
                return Ok(false);
            }
            self.next_block -= 1;
            self.next_block
        } else {
            if self.next_block >= self.reader.index.len() {
                return Ok(false);
            }
            self.next_block += 1;
            self.next_block - 1
        };
        let b = self.reader.block_with(i, self.fill_cache)?;
        // Keys ascend within a block, so "inside the near bound" is false then true (forward) and "inside
        // the far bound" true then false (reverse): start at the partition point.
        // Only the first block loaded needs a search: the index search started the walk at the block where
        // the near bound falls, so later blocks lie inside it, except for versions of an excluded bound key
        // that continue into the next block (checked on the block's first key, which the walk reads next).
        let searched = self.searched;
        self.searched = true;
        self.pos = if self.reverse {
            match &self.hi {
                Bound::Unbounded => b.len(),
                _ if searched && !b.is_empty() && in_hi(&self.hi, b.key(b.len() - 1)) => b.len(),
                Bound::Included(k) => b.lower_bound(k, true),
                Bound::Excluded(k) => b.lower_bound(k, false),
            }
        } else {
            match &self.lo {
                Bound::Unbounded => 0,
                _ if searched && !b.is_empty() && in_lo(&self.lo, b.key(0)) => 0,
                Bound::Included(k) => b.lower_bound(k, false),
                Bound::Excluded(k) => b.lower_bound(k, true),
            }
        };
        // An unbounded far side needs no check (and no read of the block's edge key).
        self.check_far = if self.reverse {
            !matches!(self.lo, Bound::Unbounded) && (b.is_empty() || !in_lo(&self.lo, b.key(0)))
        } else {
            !matches!(self.hi, Bound::Unbounded) && (b.is_empty() || !in_hi(&self.hi, b.key(b.len() - 1)))
        };
        // The entries after the start are read one by one, each from a cold cache line on a random seek:
        // ask for the next few at once so their misses overlap instead of queueing behind each other.
        let ahead = if self.reverse {
            self.pos.saturating_sub(PREFETCH_ENTRIES)..self.pos
        } else {
            self.pos..(self.pos + PREFETCH_ENTRIES).min(b.len())
        };
        for e in b.get(ahead).unwrap_or_default() {
            crate::runtime::prefetch(e);
        }
        self.block = Some(b);
        Ok(true)
    }
}

impl crate::iter::Cursor for SstIter {
    #[inline]
    fn current(&self) -> Option<&Entry> {
        self.block.as_ref()?.get(self.cur?)
    }

    /// Known only inside a block without repeated keys: the next entry in the block has another key (one in
    /// the next block may continue the current key's versions).
    #[inline]
    fn next_key_differs(&self) -> bool {
        match (&self.block, self.cur) {
            (Some(b), Some(i)) if b.distinct_keys() => {
                if self.reverse {
                    i > 0
                } else {
                    i + 1 < b.len()
                }
            }
            _ => false,
        }
    }

    fn advance(&mut self) -> MidgeResult<()> {
        self.cur = None;
        loop {
            if self.done {
                return Ok(());
            }
            if let Some(b) = &self.block {
                let i = if self.reverse {
                    if self.pos > 0 {
                        self.pos -= 1;
                        Some(self.pos)
                    } else {
                        None
                    }
                } else if self.pos < b.len() {
                    self.pos += 1;
                    Some(self.pos - 1)
                } else {
                    None
                };
                if let Some(i) = i {
                    // `load_next` started past the near bound, so only the far one can end the walk, and only
                    // in a block that crosses it.
                    if self.check_far {
                        let k = b.key(i);
                        let past = if self.reverse {
                            !in_lo(&self.lo, k)
                        } else {
                            !in_hi(&self.hi, k)
                        };
                        if past {
                            self.done = true;
                            self.block = None;
                            return Ok(());
                        }
                    }
                    self.cur = Some(i);
                    return Ok(());
                }
            }
            match self.load_next() {
                Ok(true) => {}
                Ok(false) => {
                    self.done = true;
                    self.block = None;
                    return Ok(());
                }
                Err(e) => {
                    self.done = true;
                    self.block = None;
                    return Err(e);
                }
            }
        }
    }
}

impl Iterator for SstIter {
    type Item = MidgeResult<Entry>;
    fn next(&mut self) -> Option<Self::Item> {
        use crate::iter::Cursor;
        if let Err(e) = self.advance() {
            return Some(Err(e));
        }
        self.current().cloned().map(Ok)
    }
}
