//! One seeded generator for every engine: keys, values, orders and skew are identical across peers.

/// SplitMix64 seeding into xoshiro256**: fast, tiny, reproducible on every platform.
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Rng {
            s: [next(), next(), next(), next()],
        }
    }

    /// A generator derived from this seed for a named stream (so workloads do not shift each other).
    pub fn stream(seed: u64, name: &str) -> Rng {
        let mut h: u64 = 0xCBF2_9CE4_8422_2325;
        for b in name.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01B3);
        }
        Rng::new(seed ^ h)
    }

    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; the bias is below 2^-32 for our sizes).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }

    /// A random permutation of `0..n` (Fisher-Yates).
    pub fn permutation(&mut self, n: u64) -> Vec<u64> {
        let mut v: Vec<u64> = (0..n).collect();
        for i in (1..v.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            v.swap(i, j);
        }
        v
    }
}

/// Zipf-distributed ranks in `0..n` with exponent `theta` (YCSB's generator, Gray et al.).
#[derive(Debug, Clone)]
pub struct Zipf {
    n: u64,
    theta: f64,
    alpha: f64,
    zetan: f64,
    eta: f64,
}

impl Zipf {
    pub fn new(n: u64, theta: f64) -> Zipf {
        let zeta = |n: u64| (1..=n).map(|i| 1.0 / (i as f64).powf(theta)).sum::<f64>();
        let zetan = zeta(n);
        let zeta2 = zeta(2.min(n));
        let alpha = 1.0 / (1.0 - theta);
        let eta = (1.0 - (2.0 / n as f64).powf(1.0 - theta)) / (1.0 - zeta2 / zetan);
        Zipf {
            n,
            theta,
            alpha,
            zetan,
            eta,
        }
    }

    /// A rank: 0 is the hottest item.
    pub fn sample(&self, rng: &mut Rng) -> u64 {
        let u = rng.unit();
        let uz = u * self.zetan;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(self.theta) {
            return 1.min(self.n - 1);
        }
        let r = (self.n as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64;
        r.min(self.n - 1)
    }
}

/// Incompressible values: a pool of random bytes read at random offsets (db_bench's trick, without the
/// compressible half).
#[derive(Debug, Clone)]
pub struct ValuePool {
    bytes: Vec<u8>,
}

impl ValuePool {
    pub fn new(seed: u64) -> ValuePool {
        let mut bytes = vec![0u8; 1 << 20];
        Rng::stream(seed, "values").fill(&mut bytes);
        ValuePool { bytes }
    }

    pub fn value(&self, rng: &mut Rng, len: usize) -> &[u8] {
        let off = rng.below((self.bytes.len() - len) as u64) as usize;
        &self.bytes[off..off + len]
    }
}

/// The 16-byte key for index `i`: zero-padded decimal, so byte order equals numeric order and the first 14
/// digits name a group of 100 consecutive keys (the prefix-scan unit).
pub fn key(i: u64) -> [u8; 16] {
    let mut k = [b'0'; 16];
    let mut x = i;
    for slot in k.iter_mut().rev() {
        *slot = b'0' + (x % 10) as u8;
        x /= 10;
    }
    k
}

/// A key guaranteed absent: the same shape with a trailing `x` in place of the last digit.
pub fn missing_key(i: u64) -> [u8; 16] {
    let mut k = key(i);
    k[15] = b'x';
    k
}

/// The exclusive upper bound of every key that starts with `p` (`None` when unbounded).
pub fn prefix_successor(p: &[u8]) -> Option<Vec<u8>> {
    let mut v = p.to_vec();
    while let Some(last) = v.pop() {
        if last != 0xFF {
            v.push(last + 1);
            return Some(v);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream() {
        let mut a = Rng::new(42);
        let mut b = Rng::new(42);
        let xs: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..8).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(Rng::new(43).next_u64(), xs[0]);
        assert_ne!(Rng::stream(1, "a").next_u64(), Rng::stream(1, "b").next_u64());
    }

    #[test]
    fn permutation_is_a_permutation() {
        let mut p = Rng::new(7).permutation(1000);
        assert_ne!(p, (0..1000).collect::<Vec<_>>());
        p.sort_unstable();
        assert_eq!(p, (0..1000).collect::<Vec<_>>());
    }

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let mut r = Rng::new(3);
        let mut seen = [false; 10];
        for _ in 0..1000 {
            let x = r.below(10);
            assert!(x < 10);
            seen[x as usize] = true;
        }
        assert!(seen.iter().all(|s| *s));
    }

    #[test]
    fn zipf_is_skewed_toward_rank_zero() {
        let z = Zipf::new(10_000, 0.99);
        let mut r = Rng::new(9);
        let n = 100_000;
        let mut hot = 0;
        for _ in 0..n {
            let s = z.sample(&mut r);
            assert!(s < 10_000);
            if s < 100 {
                hot += 1;
            }
        }
        // With theta 0.99 the top 1% of 10K items draws roughly half of all samples.
        assert!(hot > n * 4 / 10, "hot={hot}");
        assert!(hot < n * 7 / 10, "hot={hot}");
    }

    #[test]
    fn keys_sort_numerically_and_group_by_prefix() {
        assert_eq!(&key(42), b"0000000000000042");
        assert!(key(99) < key(100));
        assert_eq!(&key(1234)[..14], &key(1299)[..14]);
        assert_ne!(&key(1234)[..14], &key(1300)[..14]);
        assert!(missing_key(5) > key(5) && missing_key(5) < key(10));
    }

    #[test]
    fn prefix_successor_rules() {
        assert_eq!(prefix_successor(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_successor(&[1, 0xFF]), Some(vec![2]));
        assert_eq!(prefix_successor(&[0xFF, 0xFF]), None);
        assert_eq!(prefix_successor(b""), None);
    }
}
