//! The device's own limits, measured in the same run: the denominators for "share of the fsync limit".

use crate::stats::{Latency, latency_of};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// One fdatasync'd write pattern.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct SyncRate {
    pub ops: u64,
    pub ops_per_sec: f64,
    pub latency: Latency,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct DeviceProbe {
    /// 4 KiB pwrite + fdatasync into a preallocated file (no metadata change): the floor for a WAL that
    /// preallocates.
    pub prealloc_4k: SyncRate,
    /// 4 KiB append + fdatasync (the file grows, so the journal commits metadata too).
    pub append_4k: SyncRate,
    /// 1 MiB sequential writes, each followed by fdatasync, MB/s (10^6 bytes).
    pub seq_1m_mb_per_sec: f64,
}

impl DeviceProbe {
    /// The fsync limit a 1-writer sync commit can reach: the better of the two 4 KiB patterns (an engine
    /// that preallocates gets the first; one that appends pays the second).
    pub fn fsync_limit(&self) -> f64 {
        self.prealloc_4k.ops_per_sec.max(self.append_4k.ops_per_sec)
    }
}

/// Runs the probe in `dir` for about `3 × unit` (2 units preallocated, 1 appending, 1 sequential).
pub fn probe(dir: &Path, unit: Duration) -> std::io::Result<DeviceProbe> {
    std::fs::create_dir_all(dir)?;
    let pre = dir.join("probe-prealloc");
    let app = dir.join("probe-append");
    let seq = dir.join("probe-seq");
    let out = DeviceProbe {
        prealloc_4k: prealloc(&pre, unit * 2)?,
        append_4k: append(&app, unit)?,
        seq_1m_mb_per_sec: sequential(&seq, unit)?,
    };
    for p in [pre, app, seq] {
        let _ = std::fs::remove_file(p);
    }
    Ok(out)
}

/// A short preallocated-file fdatasync rate, taken right before an engine's sync phases: on a shared
/// machine the device's rate drifts, and this says what it was at that moment.
pub fn quick_fsync_rate(dir: &Path, dur: Duration) -> std::io::Result<SyncRate> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join("probe-now");
    let r = prealloc(&path, dur);
    let _ = std::fs::remove_file(&path);
    r
}

const PAGE: usize = 4096;

fn page() -> Vec<u8> {
    let mut buf = vec![0u8; PAGE];
    crate::rng::Rng::new(0xD15C).fill(&mut buf);
    buf
}

fn prealloc(path: &Path, dur: Duration) -> std::io::Result<SyncRate> {
    PreallocProbe::new(path)?.run(dur)
}

/// 4 KiB pwrite + fdatasync rounds over a fully allocated 64 MiB file, reusable: the paired sync rounds
/// (`crate::paired`) probe the device many times without re-allocating the file each time.
pub struct PreallocProbe {
    file: File,
    buf: Vec<u8>,
    off: u64,
}

impl PreallocProbe {
    const SIZE: u64 = 64 << 20;

    pub fn new(path: &Path) -> std::io::Result<PreallocProbe> {
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(path)?;
        // Really allocate (write every block), so later overwrites change no metadata.
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..(Self::SIZE >> 20) {
            file.write_all(&zeros)?;
        }
        file.sync_all()?;
        Ok(PreallocProbe {
            file,
            buf: page(),
            off: 0,
        })
    }

    /// fdatasync'd 4 KiB overwrites for `dur`.
    pub fn run(&mut self, dur: Duration) -> std::io::Result<SyncRate> {
        let PreallocProbe { file, buf, off } = self;
        timed(dur, || {
            file.write_all_at(buf, *off)?;
            file.sync_data()?;
            *off = (*off + PAGE as u64) % Self::SIZE;
            Ok(())
        })
    }
}

fn append(path: &Path, dur: Duration) -> std::io::Result<SyncRate> {
    let mut f = File::create(path)?;
    f.sync_all()?;
    let buf = page();
    timed(dur, || {
        f.write_all(&buf)?;
        f.sync_data()
    })
}

fn sequential(path: &Path, dur: Duration) -> std::io::Result<f64> {
    let mut f = File::create(path)?;
    let mut buf = vec![0u8; 1 << 20];
    crate::rng::Rng::new(0x5E0).fill(&mut buf);
    let start = Instant::now();
    let mut bytes = 0u64;
    while start.elapsed() < dur {
        f.write_all(&buf)?;
        f.sync_data()?;
        bytes += buf.len() as u64;
    }
    Ok(bytes as f64 / start.elapsed().as_secs_f64() / 1e6)
}

fn timed(dur: Duration, mut op: impl FnMut() -> std::io::Result<()>) -> std::io::Result<SyncRate> {
    let mut samples = Vec::new();
    let start = Instant::now();
    while start.elapsed() < dur {
        let t = Instant::now();
        op()?;
        samples.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let secs = start.elapsed().as_secs_f64();
    let ops = samples.len() as u64;
    Ok(SyncRate {
        ops,
        ops_per_sec: ops as f64 / secs,
        latency: latency_of(&mut samples),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fsync_limit_is_the_better_pattern() {
        let mut p = DeviceProbe::default();
        p.prealloc_4k.ops_per_sec = 5000.0;
        p.append_4k.ops_per_sec = 3000.0;
        assert_eq!(p.fsync_limit(), 5000.0);
        p.append_4k.ops_per_sec = 6000.0;
        assert_eq!(p.fsync_limit(), 6000.0);
    }
}
