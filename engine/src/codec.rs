//! Fixed-width little-endian encoding helpers and the checksummed frame shared by the WAL and the manifest.
//!
//! Every on-disk integer is an explicit `u8`/`u32`/`u64` in little-endian order — never `usize` — so a file
//! written on one target is byte-identical to the same file written on another. Decoding is bounds-checked and
//! returns [`DecodeError`] instead of panicking on garbage.

use bytes::Bytes;

/// A decode failure: what was being read and at which offset within the buffer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} at offset {offset}")]
pub(crate) struct DecodeError {
    pub what: &'static str,
    pub offset: usize,
}

/// Appends little-endian values to a byte vector.
pub(crate) trait Put {
    fn put_u8(&mut self, v: u8);
    fn put_u32(&mut self, v: u32);
    fn put_u64(&mut self, v: u64);
    /// A `u32` length followed by the bytes.
    fn put_slice32(&mut self, v: &[u8]);
}

impl Put for Vec<u8> {
    fn put_u8(&mut self, v: u8) {
        self.push(v);
    }
    fn put_u32(&mut self, v: u32) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn put_u64(&mut self, v: u64) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn put_slice32(&mut self, v: &[u8]) {
        self.put_u32(v.len() as u32);
        self.extend_from_slice(v);
    }
}

/// A bounds-checked little-endian reader over a byte slice.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, pos: 0 }
    }
    pub fn pos(&self) -> usize {
        self.pos
    }
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }
    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError {
                what,
                offset: self.pos,
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    pub fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }
    pub fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        let s = self.take(4, what)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    pub fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let s = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(u64::from_le_bytes(a))
    }
    /// A `u32`-length-prefixed byte string.
    pub fn slice32(&mut self, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let n = self.u32(what)? as usize;
        self.take(n, what)
    }
    pub fn bytes32(&mut self, what: &'static str) -> Result<Bytes, DecodeError> {
        Ok(Bytes::copy_from_slice(self.slice32(what)?))
    }
    /// [`Reader::bytes32`] without a copy: a slice of `whole`, the buffer this reader reads.
    pub fn shared32(&mut self, whole: &Bytes, what: &'static str) -> Result<Bytes, DecodeError> {
        Ok(whole.slice_ref(self.slice32(what)?))
    }
}

/// CRC32 (IEEE) of `data`.
pub(crate) fn crc32(data: &[u8]) -> u32 {
    let c = crc32fast::hash(data);
    if cfg!(feature = "canary-ignore-checksum") {
        0
    } else {
        c
    }
}

/// Whether a stored checksum matches (the `canary-ignore-checksum` mutant accepts anything).
pub(crate) fn crc_matches(stored: u32, data: &[u8]) -> bool {
    cfg!(feature = "canary-ignore-checksum") || stored == crc32fast::hash(data)
}

/// Bytes of a frame header: `u32 payload_len | u32 crc32(payload)`.
pub(crate) const FRAME_HEADER: usize = 8;

/// Encodes one checksummed frame.
pub(crate) fn encode_frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(FRAME_HEADER + payload.len());
    out.extend_from_slice(&[0; FRAME_HEADER]);
    out.extend_from_slice(payload);
    seal_frame(&mut out);
    out
}

/// Fills in the header of a frame encoded in place: `buf` is [`FRAME_HEADER`] placeholder bytes followed by
/// the payload. Byte-identical to [`encode_frame`] of that payload.
pub(crate) fn seal_frame(buf: &mut [u8]) {
    let (header, payload) = buf.split_at_mut(FRAME_HEADER);
    let crc = crc32(payload);
    header[..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    header[4..].copy_from_slice(&crc.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_rejects_truncated_input_without_panicking() {
        let mut v = Vec::new();
        v.put_u32(10);
        v.extend_from_slice(b"abc");
        let mut r = Reader::new(&v);
        let e = r.slice32("key").unwrap_err();
        assert_eq!(e.what, "key");
    }

    #[test]
    fn values_round_trip_little_endian() {
        let mut v = Vec::new();
        v.put_u8(1);
        v.put_u32(0x04050607);
        v.put_u64(0x08090a0b0c0d0e0f);
        v.put_slice32(b"xy");
        let mut r = Reader::new(&v);
        assert_eq!(r.u8("a").unwrap(), 1);
        assert_eq!(r.u32("c").unwrap(), 0x04050607);
        assert_eq!(r.u64("d").unwrap(), 0x08090a0b0c0d0e0f);
        assert_eq!(r.slice32("e").unwrap(), b"xy");
        assert!(r.is_empty());
    }
}
