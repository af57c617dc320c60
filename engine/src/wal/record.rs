//! The WAL record: one committed transaction as one payload.
//!
//! ```text
//! payload  = "MW" | version u8 (=1) | kind u8 (=1 TxnBatch) | cf u32 | begin_seq u64 | commit_seq u64
//!            | op_count u32 | op*
//! op       = code u8 (0 put, 1 delete, 2 delete-range) | seq u64 | flags u8 (bit0: expiry present)
//!            | [expiry u64] | key (u32 len + bytes) | put: value (u32 len + bytes) | range: end (u32 len + bytes)
//! ```
//! Invariants checked on decode: `op_count > 0`, op seqs are `begin_seq+1 ..= begin_seq+op_count`,
//! `commit_seq == begin_seq + op_count + 1`, no unknown flag bits, no trailing bytes.

use crate::codec::{DecodeError, Put, Reader};
use crate::types::{ColumnFamilyId, Seq};
use bytes::Bytes;

pub(crate) const MAGIC: &[u8; 2] = b"MW";
const VERSION: u8 = 1;
const KIND_TXN_BATCH: u8 = 1;

/// One operation inside a committed transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WalOp {
    Put {
        key: Bytes,
        value: Bytes,
        expiry: Option<u64>,
    },
    Delete {
        key: Bytes,
    },
    DeleteRange {
        start: Bytes,
        end: Bytes,
    },
}

impl WalOp {
    pub fn encoded_len(&self) -> usize {
        1 + 8
            + 1
            + 8
            + 4
            + 4
            + match self {
                WalOp::Put { key, value, .. } => key.len() + value.len(),
                WalOp::Delete { key } => key.len(),
                WalOp::DeleteRange { start, end } => start.len() + end.len(),
            }
    }
}

/// A committed transaction as logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TxnRecord {
    pub cf: ColumnFamilyId,
    pub begin_seq: Seq,
    pub ops: Vec<WalOp>,
}

impl TxnRecord {
    pub fn commit_seq(&self) -> Seq {
        self.begin_seq + self.ops.len() as u64 + 1
    }

    #[cfg(test)]
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    /// Appends the encoding to `out` (reserving its exact size first).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.reserve(32 + self.ops.iter().map(WalOp::encoded_len).sum::<usize>());
        out.extend_from_slice(MAGIC);
        out.put_u8(VERSION);
        out.put_u8(KIND_TXN_BATCH);
        out.put_u32(self.cf);
        out.put_u64(self.begin_seq);
        out.put_u64(self.commit_seq());
        out.put_u32(self.ops.len() as u32);
        for (i, op) in self.ops.iter().enumerate() {
            let seq = self.begin_seq + 1 + i as u64;
            match op {
                WalOp::Put { key, value, expiry } => {
                    out.put_u8(0);
                    out.put_u64(seq);
                    out.put_u8(u8::from(expiry.is_some()));
                    if let Some(e) = expiry {
                        out.put_u64(*e);
                    }
                    out.put_slice32(key);
                    out.put_slice32(value);
                }
                WalOp::Delete { key } => {
                    out.put_u8(1);
                    out.put_u64(seq);
                    out.put_u8(0);
                    out.put_slice32(key);
                }
                WalOp::DeleteRange { start, end } => {
                    out.put_u8(2);
                    out.put_u64(seq);
                    out.put_u8(0);
                    out.put_slice32(start);
                    out.put_slice32(end);
                }
            }
        }
    }

    /// [`TxnRecord::decode_shared`] of a copy of `buf`.
    #[cfg(test)]
    pub fn decode(buf: &[u8]) -> Result<TxnRecord, DecodeError> {
        TxnRecord::decode_shared(&Bytes::copy_from_slice(buf))
    }

    /// Decodes a record (checking the invariants above); its keys and values are slices of `buf`, not copies:
    /// replay decodes a whole segment this way, so its records cost no allocation per key and value and the
    /// memtable keeps the bytes as read (they pin the segment's buffer until that memtable is flushed).
    pub fn decode_shared(buf: &Bytes) -> Result<TxnRecord, DecodeError> {
        let mut r = Reader::new(buf);
        let bad = |what, offset| DecodeError { what, offset };
        if r.take(2, "magic")? != MAGIC {
            return Err(bad("bad record magic", 0));
        }
        if r.u8("version")? != VERSION {
            return Err(bad("unknown record version", 2));
        }
        if r.u8("kind")? != KIND_TXN_BATCH {
            return Err(bad("unknown record kind", 3));
        }
        let cf = r.u32("cf")?;
        let begin_seq = r.u64("begin_seq")?;
        let commit_seq = r.u64("commit_seq")?;
        let count = r.u32("op_count")? as u64;
        if count == 0 || begin_seq.checked_add(count + 1) != Some(commit_seq) {
            return Err(bad("inconsistent sequence range", 8));
        }
        let mut ops = Vec::with_capacity(count.min(1 << 16) as usize);
        for i in 0..count {
            let at = r.pos();
            let code = r.u8("op code")?;
            if r.u64("op seq")? != begin_seq + 1 + i {
                return Err(bad("non-contiguous op sequence", at));
            }
            let flags = r.u8("op flags")?;
            if flags & !1 != 0 || (flags & 1 == 1 && code != 0) {
                return Err(bad("unknown op flags", at));
            }
            let expiry = if flags & 1 == 1 {
                Some(r.u64("expiry")?)
            } else {
                None
            };
            let key = r.shared32(buf, "key")?;
            ops.push(match code {
                0 => WalOp::Put {
                    key,
                    value: r.shared32(buf, "value")?,
                    expiry,
                },
                1 => WalOp::Delete { key },
                2 => WalOp::DeleteRange {
                    start: key,
                    end: r.shared32(buf, "range end")?,
                },
                _ => return Err(bad("unknown op code", at)),
            });
        }
        if !r.is_empty() {
            return Err(bad("trailing bytes", r.pos()));
        }
        Ok(TxnRecord { cf, begin_seq, ops })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn op() -> impl Strategy<Value = WalOp> {
        let b = || proptest::collection::vec(any::<u8>(), 0..20).prop_map(Bytes::from);
        prop_oneof![
            (b(), b(), proptest::option::of(any::<u64>())).prop_map(|(key, value, expiry)| WalOp::Put {
                key,
                value,
                expiry
            }),
            b().prop_map(|key| WalOp::Delete { key }),
            (b(), b()).prop_map(|(start, end)| WalOp::DeleteRange { start, end }),
        ]
    }

    proptest! {
        #[test]
        fn records_round_trip(cf in any::<u32>(), begin in 0u64..u64::MAX / 2,
                              ops in proptest::collection::vec(op(), 1..8)) {
            let rec = TxnRecord { cf, begin_seq: begin, ops };
            prop_assert_eq!(TxnRecord::decode(&rec.encode()).unwrap(), rec.clone());
            // The shared decode gives the same record, its bytes inside the buffer it was given.
            let buf = Bytes::from(rec.encode());
            let shared = TxnRecord::decode_shared(&buf).unwrap();
            let range = buf.as_ptr_range();
            for op in &shared.ops {
                let (a, b) = match op {
                    WalOp::Put { key, value, .. } => (key, value),
                    WalOp::Delete { key } => (key, key),
                    WalOp::DeleteRange { start, end } => (start, end),
                };
                for x in [a, b].into_iter().filter(|x| !x.is_empty()) {
                    prop_assert!(range.contains(&x.as_ptr()), "copied, not shared");
                }
            }
            prop_assert_eq!(shared, rec);
        }

        #[test]
        fn truncated_or_extended_records_are_rejected(ops in proptest::collection::vec(op(), 1..4), cut in 0usize..200) {
            let rec = TxnRecord { cf: 1, begin_seq: 10, ops };
            let enc = rec.encode();
            let cut = cut % enc.len();
            prop_assert!(TxnRecord::decode(&enc[..cut]).is_err());
            let mut longer = enc.clone();
            longer.push(0);
            prop_assert!(TxnRecord::decode(&longer).is_err());
        }
    }

    #[test]
    fn inconsistent_sequence_range_is_rejected() {
        let rec = TxnRecord {
            cf: 1,
            begin_seq: 10,
            ops: vec![WalOp::Delete {
                key: Bytes::from_static(b"a"),
            }],
        };
        let mut enc = rec.encode();
        enc[16] ^= 1; // commit_seq low byte
        assert!(TxnRecord::decode(&enc).is_err());
    }
}
