//! Bloom filters over user keys, with fixed, target-independent hashes (docs/formats/sst.md).
//!
//! Tables are written with the *blocked* layout: every probe of a key lands in one 512-bit block (one cache
//! line), chosen by the key's hash, so a check costs one memory access and no division. The original layout
//! (FNV-1a, probes spread over the whole array) is still read, so tables written before stay usable.

use crate::codec::Put;
use crate::types::fmix64;

/// Set in the probe byte of a blocked filter.
const BLOCKED: u8 = 0x80;
/// Bits per block: one 64-byte cache line.
const BLOCK_BITS: u32 = 512;
/// A 64-byte aligned block, so a probe run never straddles two cache lines.
#[derive(Debug, Clone, Copy, Default)]
#[repr(align(64))]
pub(crate) struct Line([u64; 8]);

/// The original layout's hash: FNV-1a 64 with an avalanche step.
fn fnv1a(key: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // Final avalanche so short keys spread over both halves.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

/// The blocked layout's hash: the key's length, then its bytes as little-endian 8-byte words (the last one
/// zero-padded), each folded in with a multiply and a rotate; murmur3's finaliser on top.
pub(crate) fn key_hash(key: &[u8]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut h = (key.len() as u64).wrapping_mul(K) ^ 0xc2b2_ae3d_27d4_eb4f;
    let mut chunks = key.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes(c.try_into().unwrap_or_default());
        h = (h ^ w).wrapping_mul(K).rotate_left(29);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        h = (h ^ u64::from_le_bytes(w)).wrapping_mul(K).rotate_left(29);
    }
    fmix64(h)
}

/// The block a hash selects out of `blocks` (high 32 bits, multiply-shift: no division).
fn block_of(h: u64, blocks: u32) -> usize {
    (((h >> 32) * u64::from(blocks)) >> 32) as usize
}

/// The bit probe `i` of a blocked filter tests within its block: the top 9 bits of `low32(h) · φ^i`.
fn probe_bits(h: u64, probes: u8) -> impl Iterator<Item = u32> {
    let mut a = h as u32;
    (0..probes).map(move |_| {
        let bit = a >> 23;
        a = a.wrapping_mul(0x9e37_79b9);
        bit
    })
}

/// Builds a filter from key hashes.
#[derive(Debug, Default)]
pub(crate) struct BloomBuilder {
    hashes: Vec<u64>,
}

impl BloomBuilder {
    pub fn add(&mut self, key: &[u8]) {
        self.hashes.push(key_hash(key));
    }

    /// `probes|0x80 u8 | bit count u32 (a multiple of 512) | bits` (blocked layout).
    pub fn finish(&self, bits_per_key: u32) -> Vec<u8> {
        let want = (self.hashes.len() as u64 * u64::from(bits_per_key.max(1))).max(1);
        let blocks = want
            .div_ceil(u64::from(BLOCK_BITS))
            .min(u64::from(u32::MAX / BLOCK_BITS)) as u32;
        let probes = ((f64::from(bits_per_key) * 0.69) as u8).clamp(1, 30);
        let mut lines = vec![Line::default(); blocks as usize];
        for &h in &self.hashes {
            let line = &mut lines[block_of(h, blocks)];
            for bit in probe_bits(h, probes) {
                line.0[(bit / 64) as usize] |= 1 << (bit % 64);
            }
        }
        let mut out = Vec::with_capacity(5 + blocks as usize * 64);
        out.put_u8(probes | BLOCKED);
        out.put_u32(blocks * BLOCK_BITS);
        for line in &lines {
            for w in line.0 {
                out.extend_from_slice(&w.to_le_bytes());
            }
        }
        out
    }
}

/// A decoded filter.
#[derive(Debug, Clone)]
pub(crate) enum Bloom {
    /// The layout written now.
    Blocked { probes: u8, lines: Vec<Line> },
    /// Tables written before the blocked layout.
    Spread { probes: u8, nbits: u32, bits: Vec<u8> },
}

impl Bloom {
    pub fn decode(data: &[u8]) -> Option<Bloom> {
        let tag = *data.first()?;
        let nbits = u32::from_le_bytes(data.get(1..5)?.try_into().ok()?);
        let bits = data.get(5..)?;
        let probes = tag & !BLOCKED;
        if nbits == 0 || bits.len() != nbits.div_ceil(8) as usize || probes == 0 || probes > 30 {
            return None;
        }
        if tag & BLOCKED == 0 {
            return Some(Bloom::Spread {
                probes,
                nbits,
                bits: bits.to_vec(),
            });
        }
        if nbits % BLOCK_BITS != 0 {
            return None;
        }
        let lines = bits
            .chunks_exact(64)
            .map(|b| {
                let mut l = Line::default();
                for (w, c) in l.0.iter_mut().zip(b.chunks_exact(8)) {
                    *w = u64::from_le_bytes(c.try_into().unwrap_or_default());
                }
                l
            })
            .collect();
        Some(Bloom::Blocked { probes, lines })
    }

    /// False means the key is certainly absent.
    pub fn may_contain(&self, key: &[u8]) -> bool {
        self.may_contain_hashed(key, key_hash(key))
    }

    /// Asks the CPU to start loading the line a check of the key whose [`key_hash`] is `h` reads (blocked
    /// layout; the spread layout's probes are not worth it), so a lookup can overlap that miss with other work
    /// or with other tables' checks.
    pub fn prefetch(&self, h: u64) {
        if let Bloom::Blocked { lines, .. } = self
            && let Some(line) = lines.get(block_of(h, lines.len() as u32))
        {
            crate::runtime::prefetch(line);
        }
    }

    /// [`Bloom::may_contain`] with the key's [`key_hash`] computed by the caller (once for every table a
    /// lookup checks).
    pub fn may_contain_hashed(&self, key: &[u8], h: u64) -> bool {
        match self {
            Bloom::Blocked { probes, lines } => {
                let Some(line) = lines.get(block_of(h, lines.len() as u32)) else {
                    return false;
                };
                // No early exit: the probes read one line, and a branch per probe mispredicts.
                probe_bits(h, *probes).fold(true, |all, bit| {
                    all & (line.0[(bit / 64) as usize] >> (bit % 64) & 1 == 1)
                })
            }
            Bloom::Spread { probes, nbits, bits } => {
                let h = fnv1a(key);
                let (mut a, b) = (h as u32, (h >> 32) as u32);
                // Every probe is loaded without an early exit, so their cache misses overlap.
                let mut all = 1u8;
                for _ in 0..*probes {
                    let bit = a % nbits;
                    all &= bits.get((bit / 8) as usize).map_or(0, |x| x >> (bit % 8));
                    a = a.wrapping_add(b);
                }
                all & 1 == 1
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(n: u32, tag: &str) -> Vec<Vec<u8>> {
        (0..n).map(|i| format!("{tag}{i:012}").into_bytes()).collect()
    }

    /// The spread layout as tables written before the blocked one carry it.
    fn spread(keys: &[Vec<u8>], bits_per_key: u32) -> Vec<u8> {
        let nbits = (keys.len() as u32 * bits_per_key).max(64);
        let probes = ((f64::from(bits_per_key) * 0.69) as u8).clamp(1, 30);
        let mut bits = vec![0u8; nbits.div_ceil(8) as usize];
        for k in keys {
            let h = fnv1a(k);
            let (mut a, b) = (h as u32, (h >> 32) as u32);
            for _ in 0..probes {
                let bit = a % nbits;
                bits[(bit / 8) as usize] |= 1 << (bit % 8);
                a = a.wrapping_add(b);
            }
        }
        let mut out = vec![probes];
        out.extend_from_slice(&nbits.to_le_bytes());
        out.extend_from_slice(&bits);
        out
    }

    #[test]
    fn both_layouts_have_no_false_negatives_and_few_false_positives() {
        let present = keys(20_000, "k");
        let absent = keys(20_000, "x");
        let mut b = BloomBuilder::default();
        present.iter().for_each(|k| b.add(k));
        let blocked = b.finish(10);
        assert_eq!(blocked[0], 6 | BLOCKED);
        for (name, data) in [("blocked", blocked), ("spread", spread(&present, 10))] {
            let f = Bloom::decode(&data).unwrap();
            assert!(
                present.iter().all(|k| f.may_contain(k)),
                "{name}: a false negative"
            );
            let fp = absent.iter().filter(|k| f.may_contain(k)).count();
            // 10 bits per key: ≈ 1 % (spread) and ≈ 1.2 % (blocked).
            assert!(fp < 400, "{name}: {fp} false positives in 20000");
        }
    }

    #[test]
    fn the_blocked_layout_is_fixed() {
        // Pinned bytes: a changed hash or bit order would make every existing table's filter lie.
        let mut b = BloomBuilder::default();
        b.add(b"");
        b.add(b"key");
        b.add(b"a longer key of 24 bytes");
        let data = b.finish(10);
        assert_eq!(&data[..5], &[0x86, 0, 2, 0, 0]);
        assert_eq!(key_hash(b"key"), 0x9160_7c2f_ffec_8ebb);
        assert_eq!(crc32fast::hash(&data), 777_216_986);
        let f = Bloom::decode(&data).unwrap();
        assert!(f.may_contain(b"") && f.may_contain(b"key") && f.may_contain(b"a longer key of 24 bytes"));
    }

    #[test]
    fn malformed_filters_are_rejected() {
        assert!(Bloom::decode(&[]).is_none());
        assert!(Bloom::decode(&[0x86, 0, 1, 0, 0]).is_none(), "bits missing");
        let mut odd = vec![0x86];
        odd.extend_from_slice(&64u32.to_le_bytes());
        odd.extend_from_slice(&[0u8; 8]);
        assert!(Bloom::decode(&odd).is_none(), "blocked but not a whole block");
        let mut zero = vec![0x80];
        zero.extend_from_slice(&512u32.to_le_bytes());
        zero.extend_from_slice(&[0u8; 64]);
        assert!(Bloom::decode(&zero).is_none(), "no probes");
    }
}
