//! Block encoding: prefix-compressed data blocks with restart points, and the per-block trailer
//! (`codec u8 | crc32(payload ‖ codec) u32`) with optional LZ4 compression.

use super::cache::{DecodedBlock, PackedKeys};
use super::{MIN_COMPRESS, RESTART_INTERVAL};
use crate::codec::{DecodeError, Put, Reader, crc_matches, crc32};
use crate::types::{Entry, EntryKind, Seq};
use bytes::Bytes;

const CODEC_RAW: u8 = 0;
const CODEC_LZ4: u8 = 1;
pub(crate) const TRAILER: usize = 5;

/// Builds one data block.
#[derive(Debug, Default)]
pub(crate) struct DataBlockBuilder {
    buf: Vec<u8>,
    restarts: Vec<u32>,
    last_key: Vec<u8>,
    count: usize,
}

impl DataBlockBuilder {
    pub fn add(&mut self, e: &Entry) {
        let shared = if self.count.is_multiple_of(RESTART_INTERVAL) {
            self.restarts.push(self.buf.len() as u32);
            0
        } else {
            self.last_key
                .iter()
                .zip(e.key.iter())
                .take_while(|(a, b)| a == b)
                .count()
        };
        self.buf.put_u32(shared as u32);
        self.buf.put_slice32(&e.key[shared..]);
        self.buf.put_u64(e.seq);
        self.buf.put_u8(e.kind as u8);
        self.buf.put_u8(u8::from(e.expiry.is_some()));
        if let Some(x) = e.expiry {
            self.buf.put_u64(x);
        }
        self.buf.put_slice32(&e.value);
        self.last_key.clear();
        self.last_key.extend_from_slice(&e.key);
        self.count += 1;
    }

    pub fn size(&self) -> usize {
        self.buf.len() + 4 * self.restarts.len() + 4
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The block payload (before compression and trailer), in an allocation of exactly its length; resets the
    /// builder, which keeps its buffer for the next block. A payload that a writer's cache fill decodes lives as
    /// long as the cached block: handing over the builder's grown buffer instead would keep up to twice the
    /// payload's bytes (the buffer doubles past the block size) that the cache never charges.
    pub fn finish(&mut self) -> Vec<u8> {
        for r in &self.restarts {
            self.buf.put_u32(*r);
        }
        self.buf.put_u32(self.restarts.len() as u32);
        let out = self.buf.as_slice().to_vec();
        self.buf.clear();
        self.restarts.clear();
        self.last_key.clear();
        self.count = 0;
        out
    }
}

/// Decodes a data block payload into its entries, validating structure and order.
///
/// Allocation-free per entry: keys are materialized back to back in one buffer and every entry's key and value
/// are slices of that buffer and of the payload (so a row handed out keeps its block's buffers alive).
pub(crate) fn decode_data(payload: Vec<u8>) -> Result<DecodedBlock, DecodeError> {
    let bad = |what, offset| DecodeError { what, offset };
    if payload.len() < 4 {
        return Err(bad("block too short", 0));
    }
    let nr = u32::from_le_bytes([
        payload[payload.len() - 4],
        payload[payload.len() - 3],
        payload[payload.len() - 2],
        payload[payload.len() - 1],
    ]) as usize;
    let restarts_at = payload
        .len()
        .checked_sub(4 + nr.checked_mul(4).ok_or(bad("restart count", 0))?)
        .ok_or(bad("restart count", 0))?;
    struct Raw {
        seq: Seq,
        kind: EntryKind,
        expiry: Option<u64>,
        value: (usize, usize),
    }
    let mut r = Reader::new(&payload[..restarts_at]);
    let cap = nr * RESTART_INTERVAL;
    let mut raw: Vec<Raw> = Vec::with_capacity(cap);
    let mut keys: Vec<u8> = Vec::with_capacity(restarts_at / 2);
    let mut ends: Vec<u32> = Vec::with_capacity(cap);
    let mut prev = 0usize; // where the previous key starts in `keys`
    while !r.is_empty() {
        let at = r.pos();
        let shared = r.u32("shared len")? as usize;
        let prev_len = keys.len() - prev;
        if shared > prev_len || (raw.len().is_multiple_of(RESTART_INTERVAL) && shared != 0) {
            return Err(bad("bad shared prefix", at));
        }
        let suffix = r.slice32("key suffix")?;
        let start = keys.len();
        keys.extend_from_within(prev..prev + shared);
        keys.extend_from_slice(suffix);
        if keys.len() > u32::MAX as usize {
            return Err(bad("block too large", at));
        }
        let seq = r.u64("seq")?;
        let kind = match r.u8("kind")? {
            0 => EntryKind::Put,
            1 => EntryKind::Delete,
            _ => return Err(bad("unknown entry kind", at)),
        };
        let expiry = match r.u8("flags")? {
            0 => None,
            1 => Some(r.u64("expiry")?),
            _ => return Err(bad("unknown entry flags", at)),
        };
        let v = r.slice32("value")?.len();
        let value = (r.pos() - v, r.pos());
        if let Some(p) = raw.last()
            && crate::types::cmp_internal(&keys[prev..start], p.seq, &keys[start..], seq)
                != std::cmp::Ordering::Less
        {
            return Err(bad("entries out of order", at));
        }
        ends.push(keys.len() as u32);
        prev = start;
        raw.push(Raw {
            seq,
            kind,
            expiry,
            value,
        });
    }
    if raw.len().div_ceil(RESTART_INTERVAL) != nr {
        return Err(bad("restart count mismatch", restarts_at));
    }
    // The block keeps the payload (values) and the keys for as long as it is cached: both in allocations of
    // exactly their length (the keys' scratch buffer was sized by a guess), so what the cache charges for them
    // (see `DecodedBlock::footprint`) is what they hold.
    let held = payload.capacity();
    let payload = Bytes::from(payload);
    let keys = Bytes::copy_from_slice(&keys);
    let mut start = 0usize;
    let entries = raw
        .iter()
        .zip(&ends)
        .map(|(x, end)| {
            let end = *end as usize;
            let key = keys.slice(start..end);
            start = end;
            Entry {
                key,
                seq: x.seq,
                kind: x.kind,
                value: payload.slice(x.value.0..x.value.1),
                expiry: x.expiry,
            }
        })
        .collect();
    Ok(DecodedBlock::from_parts(
        entries,
        PackedKeys::from_parts(keys, ends),
        held,
    ))
}

/// Wraps a payload for storage: optional LZ4, then the trailer. See [`seal_reporting`].
pub(crate) fn seal(payload: &[u8], compress: bool) -> Vec<u8> {
    seal_reporting(payload, compress).0
}

/// [`seal`], also telling whether LZ4 was tried and paid (stored compressed).
pub(crate) fn seal_reporting(payload: &[u8], compress: bool) -> (Vec<u8>, bool) {
    let mut out;
    let codec;
    let compressed = (compress && payload.len() >= MIN_COMPRESS).then(|| lz4_flex::block::compress(payload));
    match compressed {
        Some(c) if c.len() + 4 < payload.len() => {
            out = Vec::with_capacity(c.len() + 4 + TRAILER);
            out.put_u32(payload.len() as u32);
            out.extend_from_slice(&c);
            codec = CODEC_LZ4;
        }
        _ => {
            out = Vec::with_capacity(payload.len() + TRAILER);
            out.extend_from_slice(payload);
            codec = CODEC_RAW;
        }
    }
    out.push(codec);
    let crc = crc32(&out);
    out.put_u32(crc);
    (out, codec == CODEC_LZ4)
}

/// Checks the trailer and returns the decompressed payload.
pub(crate) fn unseal(mut stored: Vec<u8>) -> Result<Vec<u8>, DecodeError> {
    if stored.len() < TRAILER {
        return Err(DecodeError {
            what: "block shorter than its trailer",
            offset: 0,
        });
    }
    let body = &stored[..stored.len() - 4];
    let crc = u32::from_le_bytes([
        stored[stored.len() - 4],
        stored[stored.len() - 3],
        stored[stored.len() - 2],
        stored[stored.len() - 1],
    ]);
    if !crc_matches(crc, body) {
        return Err(DecodeError {
            what: "block checksum mismatch",
            offset: stored.len() - 4,
        });
    }
    let codec = body[body.len() - 1];
    let data = &body[..body.len() - 1];
    match codec {
        CODEC_RAW => {
            let n = data.len();
            stored.truncate(n);
            Ok(stored)
        }
        CODEC_LZ4 => {
            let mut r = Reader::new(data);
            let n = r.u32("uncompressed length")? as usize;
            if n > 256 << 20 {
                return Err(DecodeError {
                    what: "implausible uncompressed length",
                    offset: 0,
                });
            }
            let mut out = vec![0u8; n];
            match lz4_flex::block::decompress_into(&data[4..], &mut out) {
                Ok(m) if m == n => Ok(out),
                _ => Err(DecodeError {
                    what: "lz4 payload invalid",
                    offset: 4,
                }),
            }
        }
        _ => Err(DecodeError {
            what: "unknown block codec",
            offset: body.len() - 1,
        }),
    }
}
