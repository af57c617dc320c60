//! Paired sync rounds: the three sync targets of issue #8 are ratios of two rates (Midge 1 writer ÷ the
//! device's fdatasync rate, Midge N writers ÷ Midge 1 writer, Midge native ÷ Midge in the component), and on a
//! shared virtual disk the fsync rate drifts by tens of percent within minutes. The per-engine phases
//! (`fillsync_*`) measure each side minutes apart, so the ratio carries the drift. Here every side runs in
//! short slices, interleaved: each round runs the device probe, native 1 writer, the component 1 writer,
//! native N writers and the component N writers one after another, the order reversed every other round
//! (A B C D E, E D C B A — linear drift cancels), and each ratio is taken inside its round. The verdict is the median over rounds; the range is
//! reported beside it.
//!
//! Runs in its own child process (`midge-bench sync-pairs`), on fresh databases.

use crate::device::PreallocProbe;
use crate::engines::{self, Durability, EngineKind, KvEngine, Op};
use crate::profile::Profile;
use crate::rng::{Rng, ValuePool, key};
use crate::workloads::on_threads;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::{Duration, Instant};

/// One round: every rate in commits (or fdatasyncs) per second.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Round {
    pub device_fsync_per_sec: f64,
    pub native_1: f64,
    pub native_n: f64,
    /// `None` when the component was not run.
    pub component_1: Option<f64>,
    /// The component with N writers (its host combines their sync commits); `None` when not run.
    #[serde(default)]
    pub component_n: Option<f64>,
}

impl Round {
    pub fn one_vs_device(&self) -> Option<f64> {
        ratio(self.native_1, self.device_fsync_per_sec)
    }

    pub fn scaling(&self) -> Option<f64> {
        ratio(self.native_n, self.native_1)
    }

    /// Component time over native time (native rate ÷ component rate).
    pub fn component_time(&self) -> Option<f64> {
        self.component_1.and_then(|c| ratio(self.native_1, c))
    }

    /// The same with N writers on both sides.
    pub fn component_time_n(&self) -> Option<f64> {
        self.component_n.and_then(|c| ratio(self.native_n, c))
    }
}

fn ratio(a: f64, b: f64) -> Option<f64> {
    (a > 0.0 && b > 0.0).then(|| a / b)
}

/// The median and range of one per-round ratio.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    /// `None` for no values. An even count takes the mean of the middle two.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Spread> {
        let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if !n.is_multiple_of(2) {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Spread {
            median,
            min: v[0],
            max: v[n - 1],
        })
    }
}

/// What the `sync-pairs` child reports.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Paired {
    /// The N of "native N writers".
    pub writers: usize,
    pub slice_secs: f64,
    pub rounds: Vec<Round>,
}

impl Paired {
    pub fn one_vs_device(&self) -> Option<Spread> {
        Spread::of(self.rounds.iter().filter_map(Round::one_vs_device))
    }

    pub fn scaling(&self) -> Option<Spread> {
        Spread::of(self.rounds.iter().filter_map(Round::scaling))
    }

    pub fn component_time(&self) -> Option<Spread> {
        Spread::of(self.rounds.iter().filter_map(Round::component_time))
    }

    pub fn component_time_n(&self) -> Option<Spread> {
        Spread::of(self.rounds.iter().filter_map(Round::component_time_n))
    }
}

/// Rounds and slice length per profile: ≈ 12 s of slices on the quick profile, ≈ 32 s on the default one.
pub fn shape(p: &Profile) -> (usize, Duration) {
    match p.mode {
        crate::profile::Mode::Quick => (6, Duration::from_millis(500)),
        crate::profile::Mode::Default => (8, Duration::from_secs(1)),
        crate::profile::Mode::Long => (10, Duration::from_secs(2)),
    }
}

/// The five sides of a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Device,
    Native1,
    Component1,
    NativeN,
    ComponentN,
}

/// The order of round `i`: forward on even rounds, reversed on odd ones.
fn order(i: usize) -> [Side; 5] {
    let mut sides = [
        Side::Device,
        Side::Native1,
        Side::Component1,
        Side::NativeN,
        Side::ComponentN,
    ];
    if !i.is_multiple_of(2) {
        sides.reverse();
    }
    sides
}

/// Runs the rounds in `dir` (fresh databases), the component side only when `component` is true.
pub fn run(p: &Profile, seed: u64, dir: &Path, component: bool) -> Result<Paired> {
    let (rounds, slice) = shape(p);
    run_with(p, seed, dir, component, rounds, slice)
}

fn run_with(
    p: &Profile,
    seed: u64,
    dir: &Path,
    component: bool,
    rounds: usize,
    slice: Duration,
) -> Result<Paired> {
    let writers = p.writers.iter().copied().max().unwrap_or(1);
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    let mut probe = PreallocProbe::new(&dir.join("probe"))?;
    let native = engines::open(EngineKind::Midge, &dir.join("native"))?;
    let comp = if component {
        engines::prepare(EngineKind::MidgeComponent)?;
        Some(engines::open(EngineKind::MidgeComponent, &dir.join("component"))?)
    } else {
        None
    };
    let pool = ValuePool::new(seed);
    let writer = SyncWriter { p, pool: &pool, seed };
    // Warm up each side (first segment, first allocations), unmeasured.
    let warm = slice / 4;
    probe.run(warm)?;
    writer.rate(&*native, 1, warm, "warm")?;
    if let Some(c) = &comp {
        writer.rate(&**c, 1, warm, "warm")?;
    }
    writer.rate(&*native, writers, warm, "warm")?;
    if let Some(c) = &comp {
        writer.rate(&**c, writers, warm, "warm")?;
    }
    let mut out = Paired {
        writers,
        slice_secs: slice.as_secs_f64(),
        rounds: Vec::with_capacity(rounds),
    };
    for i in 0..rounds {
        let mut r = Round::default();
        for side in order(i) {
            let tag = format!("r{i}");
            match side {
                Side::Device => r.device_fsync_per_sec = probe.run(slice)?.ops_per_sec,
                Side::Native1 => r.native_1 = writer.rate(&*native, 1, slice, &tag)?,
                Side::NativeN => r.native_n = writer.rate(&*native, writers, slice, &tag)?,
                Side::Component1 => {
                    if let Some(c) = &comp {
                        r.component_1 = Some(writer.rate(&**c, 1, slice, &tag)?);
                    }
                }
                Side::ComponentN => {
                    if let Some(c) = &comp {
                        r.component_n = Some(writer.rate(&**c, writers, slice, &tag)?);
                    }
                }
            }
        }
        out.rounds.push(r);
    }
    native.close()?;
    if let Some(c) = comp {
        c.close()?;
    }
    let _ = std::fs::remove_dir_all(dir);
    Ok(out)
}

/// Single-put sync commits of random keys, the same shape as the `fillsync_*` phases.
struct SyncWriter<'a> {
    p: &'a Profile,
    pool: &'a ValuePool,
    seed: u64,
}

impl SyncWriter<'_> {
    /// Commits/s of `writers` threads committing for `dur`.
    fn rate(&self, e: &dyn KvEngine, writers: usize, dur: Duration, tag: &str) -> Result<f64> {
        let t0 = Instant::now();
        let counts = on_threads(writers, |w| {
            let mut r = Rng::stream(self.seed, &format!("paired-{tag}-{writers}-{w}"));
            let mut done = 0u64;
            while t0.elapsed() < dur {
                let k = key(r.below(self.p.keys));
                let v = self.pool.value(&mut r, self.p.value_len);
                e.write(&[Op::Put(&k, v)], Durability::Sync)?;
                done += 1;
            }
            Ok(done)
        })?;
        let secs = t0.elapsed().as_secs_f64();
        Ok(counts.iter().sum::<u64>() as f64 / secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_is_median_and_range() {
        assert_eq!(Spread::of([]), None);
        assert_eq!(
            Spread::of([3.0, 1.0, 2.0]),
            Some(Spread {
                median: 2.0,
                min: 1.0,
                max: 3.0
            })
        );
        let s = Spread::of([4.0, 1.0, 2.0, 10.0, f64::NAN]).unwrap();
        assert_eq!((s.median, s.min, s.max), (3.0, 1.0, 10.0));
    }

    #[test]
    fn rounds_alternate_their_order() {
        assert_eq!(order(0)[0], Side::Device);
        assert_eq!(order(1), {
            let mut f = order(0);
            f.reverse();
            f
        });
        assert_eq!(order(2), order(0));
    }

    #[test]
    fn ratios_are_taken_inside_each_round() {
        let p = Paired {
            writers: 16,
            slice_secs: 0.5,
            rounds: vec![
                Round {
                    device_fsync_per_sec: 10_000.0,
                    native_1: 9_000.0,
                    native_n: 90_000.0,
                    component_1: Some(7_500.0),
                    component_n: Some(60_000.0),
                },
                // A slow round: everything halves, the ratios do not.
                Round {
                    device_fsync_per_sec: 5_000.0,
                    native_1: 4_500.0,
                    native_n: 45_000.0,
                    component_1: Some(3_750.0),
                    component_n: Some(30_000.0),
                },
                Round {
                    device_fsync_per_sec: 8_000.0,
                    native_1: 8_000.0,
                    native_n: 56_000.0,
                    component_1: None,
                    component_n: None,
                },
            ],
        };
        let d = p.one_vs_device().unwrap();
        assert!((d.median - 0.9).abs() < 1e-9 && (d.max - 1.0).abs() < 1e-9);
        let s = p.scaling().unwrap();
        assert!((s.median - 10.0).abs() < 1e-9 && (s.min - 7.0).abs() < 1e-9);
        let c = p.component_time().unwrap();
        assert!((c.median - 1.2).abs() < 1e-9 && (c.min - 1.2).abs() < 1e-9);
        let n = p.component_time_n().unwrap();
        assert!((n.median - 1.5).abs() < 1e-9 && (n.max - 1.5).abs() < 1e-9);
        assert_eq!(Round::default().scaling(), None);
    }

    /// A real (tiny) paired run on native Midge: every round has positive rates.
    #[test]
    fn a_native_only_run_fills_every_round() {
        let tmp = tempfile::tempdir().unwrap();
        let mut p = Profile::new(crate::profile::Mode::Quick);
        p.writers = vec![1, 4];
        let got = run_with(&p, 7, tmp.path(), false, 2, Duration::from_millis(60)).unwrap();
        assert_eq!(got.rounds.len(), 2);
        assert_eq!(got.writers, 4);
        for r in &got.rounds {
            assert!(
                r.device_fsync_per_sec > 0.0 && r.native_1 > 0.0 && r.native_n > 0.0,
                "{r:?}"
            );
            assert_eq!((r.component_1, r.component_n), (None, None));
        }
        assert!(got.scaling().is_some() && got.component_time().is_none());
    }
}
