//! Latency summaries: an HDR histogram for workloads and exact nearest-rank percentiles for small samples.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
}

/// Nearest-rank percentile of an ascending slice: the smallest value with at least `q`% of the samples at
/// or below it. `q` in `0..=100`; an empty slice gives `None`.
pub fn percentile_sorted(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let q = q.clamp(0.0, 100.0);
    let rank = ((q / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Exact percentiles of raw samples (microseconds).
pub fn latency_of(samples: &mut [f64]) -> Latency {
    samples.sort_by(f64::total_cmp);
    let p = |q| percentile_sorted(samples, q).unwrap_or(0.0);
    let mean = if samples.is_empty() {
        0.0
    } else {
        samples.iter().sum::<f64>() / samples.len() as f64
    };
    Latency {
        p50_us: p(50.0),
        p99_us: p(99.0),
        p999_us: p(99.9),
        max_us: samples.last().copied().unwrap_or(0.0),
        mean_us: mean,
    }
}

/// Per-operation latency recorder (nanoseconds, 3 significant digits, up to 100 s).
#[derive(Debug, Clone)]
pub struct Recorder {
    h: Histogram<u64>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder {
            h: Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid histogram bounds"),
        }
    }

    pub fn record(&mut self, d: Duration) {
        let ns = (d.as_nanos() as u64).clamp(1, 100_000_000_000);
        self.h.saturating_record(ns);
    }

    pub fn merge(&mut self, other: &Recorder) {
        // Same bounds by construction, so `add` cannot fail.
        let _ = self.h.add(&other.h);
    }

    #[cfg(test)]
    pub fn count(&self) -> u64 {
        self.h.len()
    }

    pub fn summary(&self) -> Latency {
        if self.h.is_empty() {
            return Latency::default();
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        Latency {
            p50_us: us(self.h.value_at_quantile(0.50)),
            p99_us: us(self.h.value_at_quantile(0.99)),
            p999_us: us(self.h.value_at_quantile(0.999)),
            max_us: us(self.h.max()),
            mean_us: self.h.mean() / 1000.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile_sorted(&v, 50.0), Some(50.0));
        assert_eq!(percentile_sorted(&v, 99.0), Some(99.0));
        assert_eq!(percentile_sorted(&v, 99.9), Some(100.0));
        assert_eq!(percentile_sorted(&v, 100.0), Some(100.0));
        assert_eq!(percentile_sorted(&v, 0.0), Some(1.0));
        assert_eq!(percentile_sorted(&[], 50.0), None);
        assert_eq!(percentile_sorted(&[7.0], 99.0), Some(7.0));
        // Four samples: p50 is the 2nd, p75 the 3rd, p76 the 4th.
        let w = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile_sorted(&w, 50.0), Some(2.0));
        assert_eq!(percentile_sorted(&w, 75.0), Some(3.0));
        assert_eq!(percentile_sorted(&w, 76.0), Some(4.0));
    }

    #[test]
    fn latency_of_sorts_and_summarises() {
        let mut v = vec![5.0, 1.0, 3.0, 2.0, 4.0];
        let l = latency_of(&mut v);
        assert_eq!(l.p50_us, 3.0);
        assert_eq!(l.p99_us, 5.0);
        assert_eq!(l.max_us, 5.0);
        assert!((l.mean_us - 3.0).abs() < 1e-9);
        assert_eq!(latency_of(&mut []), Latency::default());
    }

    #[test]
    fn recorder_matches_exact_within_precision() {
        let mut r = Recorder::new();
        for us in 1..=1000u64 {
            r.record(Duration::from_micros(us));
        }
        let s = r.summary();
        assert_eq!(r.count(), 1000);
        // 3 significant digits: within 0.1% of the exact nearest-rank values.
        assert!((s.p50_us - 500.0).abs() <= 0.5, "{s:?}");
        assert!((s.p99_us - 990.0).abs() <= 1.0, "{s:?}");
        assert!((s.max_us - 1000.0).abs() <= 1.0, "{s:?}");
        let mut other = Recorder::new();
        other.record(Duration::from_millis(50));
        r.merge(&other);
        assert_eq!(r.count(), 1001);
        assert!((r.summary().max_us - 50_000.0).abs() <= 50.0);
    }
}
