//! A bloom filter over user keys with a fixed, target-independent hash (FNV-1a 64, double hashing).

use crate::codec::Put;

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

/// Builds a filter from key hashes.
#[derive(Debug, Default)]
pub(crate) struct BloomBuilder {
    hashes: Vec<u64>,
}

impl BloomBuilder {
    pub fn add(&mut self, key: &[u8]) {
        self.hashes.push(fnv1a(key));
    }

    /// `probes u8 | bit count u32 | bits`.
    pub fn finish(&self, bits_per_key: u32) -> Vec<u8> {
        let nbits =
            (self.hashes.len() as u64 * u64::from(bits_per_key.max(1))).clamp(64, u64::from(u32::MAX)) as u32;
        let probes = ((f64::from(bits_per_key) * 0.69) as u8).clamp(1, 30);
        let mut bits = vec![0u8; nbits.div_ceil(8) as usize];
        for h in &self.hashes {
            let (mut a, b) = (*h as u32, (*h >> 32) as u32);
            for _ in 0..probes {
                let bit = a % nbits;
                bits[(bit / 8) as usize] |= 1 << (bit % 8);
                a = a.wrapping_add(b);
            }
        }
        let mut out = Vec::with_capacity(5 + bits.len());
        out.put_u8(probes);
        out.put_u32(nbits);
        out.extend_from_slice(&bits);
        out
    }
}

/// A decoded filter.
#[derive(Debug, Clone)]
pub(crate) struct Bloom {
    probes: u8,
    nbits: u32,
    bits: Vec<u8>,
}

impl Bloom {
    pub fn decode(data: &[u8]) -> Option<Bloom> {
        let probes = *data.first()?;
        let nbits = u32::from_le_bytes(data.get(1..5)?.try_into().ok()?);
        let bits = data.get(5..)?.to_vec();
        if nbits == 0 || bits.len() != nbits.div_ceil(8) as usize || probes == 0 || probes > 30 {
            return None;
        }
        Some(Bloom { probes, nbits, bits })
    }

    /// False means the key is certainly absent.
    pub fn may_contain(&self, key: &[u8]) -> bool {
        let h = fnv1a(key);
        let (mut a, b) = (h as u32, (h >> 32) as u32);
        // Every probe is loaded without an early exit, so their cache misses overlap instead of queueing.
        let mut all = 1u8;
        for _ in 0..self.probes {
            let bit = a % self.nbits;
            all &= self.bits.get((bit / 8) as usize).map_or(0, |x| x >> (bit % 8));
            a = a.wrapping_add(b);
        }
        all & 1 == 1
    }
}
