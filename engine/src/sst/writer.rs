//! Writes one SST: data blocks, then bloom, range-tombstone, meta and index blocks, then the footer.

use super::block::{DataBlockBuilder, decode_data, seal, seal_reporting};
use super::bloom::BloomBuilder;
use super::cache::BlockCache;
use super::{FOOTER_LEN, MAGIC, VERSION};
use crate::codec::{Put, crc32};
use crate::error::{MidgeError, MidgeResult};
use crate::storage::File;
use crate::types::{Entry, RangeTombstone, Seq, cmp_internal, cmp_keys, keys_eq};
use bytes::Bytes;
use std::cmp::Ordering;
use std::sync::Arc;

/// How to build an SST.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SstOptions {
    pub block_size: usize,
    pub compress: bool,
    pub bloom_bits_per_key: u32,
}

/// What a finished SST holds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct SstMeta {
    pub size: u64,
    pub entries: u64,
    pub smallest_key: Bytes,
    pub largest_key: Bytes,
    pub smallest_seq: Seq,
    pub largest_seq: Seq,
    pub range_tombstones: u64,
}

impl SstMeta {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut o = Vec::new();
        o.put_u64(self.entries);
        o.put_slice32(&self.smallest_key);
        o.put_slice32(&self.largest_key);
        o.put_u64(self.smallest_seq);
        o.put_u64(self.largest_seq);
        o.put_u64(self.range_tombstones);
        o
    }
}

/// Streams sorted entries into an SST file.
#[derive(Debug)]
pub(crate) struct SstWriter {
    file: Arc<dyn File>,
    name: String,
    opts: SstOptions,
    offset: u64,
    block: DataBlockBuilder,
    index: Vec<u8>,
    index_count: u32,
    bloom: BloomBuilder,
    tombstones: Vec<RangeTombstone>,
    /// The last entry's key (a copy: no reference count to bump per entry) and sequence; `None` before the
    /// first entry.
    last_key: Vec<u8>,
    last_seq: Option<Seq>,
    meta: SstMeta,
    seqs: Option<(Seq, Seq)>,
    /// Data blocks in a row that LZ4 did not shrink (or was not tried on); see [`try_compress`].
    incompressible: u32,
    /// Where each written data block also goes, decoded, under this file's id, and the bytes it may still
    /// add there (see [`SstWriter::fill_cache`]).
    fill: Option<(Arc<BlockCache>, u64, u64)>,
}

/// After this many data blocks in a row that LZ4 did not shrink (random or already compressed values), only
/// every [`PROBE_EVERY`]th block is tried, so incompressible data does not pay for compression it never gets.
const GIVE_UP_AFTER: u32 = 8;
const PROBE_EVERY: u32 = 16;

/// Whether to try LZ4 on the next data block, `streak` data blocks in a row having not shrunk: always while it
/// pays, then one block in [`PROBE_EVERY`] once [`GIVE_UP_AFTER`] did not. Decided from the data alone, so
/// both targets write the same bytes.
pub(super) fn try_compress(enabled: bool, streak: u32) -> bool {
    enabled && (streak < GIVE_UP_AFTER || (streak - GIVE_UP_AFTER) % PROBE_EVERY == PROBE_EVERY - 1)
}

impl SstWriter {
    pub fn new(file: Arc<dyn File>, name: String, opts: SstOptions) -> SstWriter {
        SstWriter {
            file,
            name,
            opts,
            offset: 0,
            block: DataBlockBuilder::default(),
            index: Vec::new(),
            index_count: 0,
            bloom: BloomBuilder::default(),
            tombstones: Vec::new(),
            last_key: Vec::new(),
            last_seq: None,
            meta: SstMeta::default(),
            seqs: None,
            incompressible: 0,
            fill: None,
        }
    }

    /// Also puts every data block, decoded exactly as a read would decode it, into `cache` as block `id`'s
    /// (into free room only: see [`BlockCache::fill`]) while `budget` bytes last ([`SstWriter::fill_left`]):
    /// the first reads of the new table then find its blocks instead of each reading and decoding one. The
    /// cache is keyed by file id, and ids are never reused, so a table whose publication fails leaves only
    /// unreachable entries for the cache to evict.
    pub fn fill_cache(mut self, cache: Arc<BlockCache>, id: u64, budget: u64) -> SstWriter {
        self.fill = Some((cache, id, budget));
        self
    }

    /// What is left of the [`SstWriter::fill_cache`] budget (0 without one).
    pub fn fill_left(&self) -> u64 {
        self.fill.as_ref().map_or(0, |f| f.2)
    }

    fn io(&self, e: std::io::Error) -> MidgeError {
        MidgeError::from_io(&self.name, e)
    }

    fn note_key(&mut self, key: &Bytes, seq: Seq) {
        if self.seqs.is_none() {
            self.meta.smallest_key = key.clone();
            self.meta.largest_key = key.clone();
        } else {
            if *key < self.meta.smallest_key {
                self.meta.smallest_key = key.clone();
            }
            if *key > self.meta.largest_key {
                self.meta.largest_key = key.clone();
            }
        }
        self.note_seq(seq);
    }

    fn note_seq(&mut self, seq: Seq) {
        self.seqs = Some(match self.seqs {
            None => (seq, seq),
            Some((lo, hi)) => (lo.min(seq), hi.max(seq)),
        });
    }

    /// The key of the last version added; `None` before the first (range tombstones do not count).
    pub fn last_key(&self) -> Option<&[u8]> {
        self.last_seq.map(|_| &self.last_key[..])
    }

    /// Adds one version; versions must arrive in internal order (key asc, seq desc).
    pub fn add(&mut self, e: &Entry) -> MidgeResult<()> {
        let new_key = match self.last_seq {
            Some(s) => match cmp_internal(&self.last_key, s, &e.key, e.seq) {
                Ordering::Less => !keys_eq(&self.last_key, &e.key),
                _ => {
                    return Err(MidgeError::Internal(format!(
                        "{}: entries added out of order",
                        self.name
                    )));
                }
            },
            None => true,
        };
        if new_key {
            self.bloom.add(&e.key);
            self.last_key.clear();
            self.last_key.extend_from_slice(&e.key);
        }
        // Entries ascend, so only the first can lower the smallest key (range tombstones may have set it), and
        // the last one's key is settled against the largest in `finish`.
        if self.last_seq.is_none() {
            self.note_key(&e.key, e.seq);
        } else {
            self.note_seq(e.seq);
        }
        self.last_seq = Some(e.seq);
        self.meta.entries += 1;
        self.block.add(e);
        if self.block.size() >= self.opts.block_size {
            self.flush_block()?;
        }
        Ok(())
    }

    /// Adds a range tombstone (any order).
    pub fn add_range_tombstone(&mut self, t: RangeTombstone) {
        let end = t.end.clone();
        self.note_key(&t.start, t.seq);
        self.note_key(&end, t.seq);
        self.meta.range_tombstones += 1;
        self.tombstones.push(t);
    }

    /// Bytes written so far plus the pending block.
    pub fn estimated_size(&self) -> u64 {
        self.offset + self.block.size() as u64
    }

    fn write(&mut self, data: &[u8]) -> MidgeResult<(u64, u64)> {
        let at = self.offset;
        self.file.write_at(at, data).map_err(|e| self.io(e))?;
        self.offset += data.len() as u64;
        Ok((at, data.len() as u64))
    }

    fn flush_block(&mut self) -> MidgeResult<()> {
        if self.block.is_empty() {
            return Ok(());
        }
        let payload = self.block.finish();
        let tried = try_compress(self.opts.compress, self.incompressible);
        let (stored, paid) = seal_reporting(&payload, tried);
        self.incompressible = if paid { 0 } else { self.incompressible + 1 };
        let (off, len) = self.write(&stored)?;
        if let Some((cache, id, budget)) = &mut self.fill
            && *budget > 0
        {
            // The decoded block holds at least its payload.
            let at_least = payload.len() as u64;
            let added = cache.fill(*id, off, at_least, || decode_data(payload).ok().map(Arc::new));
            *budget = budget.saturating_sub(added);
        }
        self.index.put_slice32(&self.last_key);
        self.index.put_u64(self.last_seq.unwrap_or_default());
        self.index.put_u64(off);
        self.index.put_u64(len);
        self.index_count += 1;
        Ok(())
    }

    /// Writes the remaining blocks and footer, then `sync_all`: the file is durable when this returns.
    pub fn finish(mut self) -> MidgeResult<SstMeta> {
        self.flush_block()?;
        let bloom = seal(&self.bloom.finish(self.opts.bloom_bits_per_key), false);
        let bloom_h = self.write(&bloom)?;
        let mut tb = Vec::new();
        tb.put_u32(self.tombstones.len() as u32);
        for t in &self.tombstones {
            tb.put_slice32(&t.start);
            tb.put_slice32(&t.end);
            tb.put_u64(t.seq);
        }
        let tomb_h = self.write(&seal(&tb, false))?;
        if self.last_seq.is_some() && cmp_keys(&self.last_key, &self.meta.largest_key).is_gt() {
            self.meta.largest_key = Bytes::copy_from_slice(&self.last_key);
        }
        if let Some((lo, hi)) = self.seqs {
            self.meta.smallest_seq = lo;
            self.meta.largest_seq = hi;
        }
        let meta_h = self.write(&seal(&self.meta.encode(), false))?;
        let mut ib = Vec::with_capacity(self.index.len() + 4);
        ib.put_u32(self.index_count);
        ib.extend_from_slice(&self.index);
        let index_h = self.write(&seal(&ib, false))?;
        let mut footer = Vec::with_capacity(FOOTER_LEN);
        for (o, l) in [index_h, bloom_h, tomb_h, meta_h] {
            footer.put_u64(o);
            footer.put_u64(l);
        }
        footer.put_u32(VERSION);
        footer.put_u64(MAGIC);
        let crc = crc32(&footer);
        footer.put_u32(crc);
        self.write(&footer)?;
        self.file
            .sync_all()
            .map_err(|e| MidgeError::Poisoned(format!("{}: fsync failed: {e}", self.name)))?;
        self.meta.size = self.offset;
        Ok(self.meta)
    }
}
