//! How big each workload is, per mode. Every phase also has a time cap so a slow peer cannot stall the run
//! (the record then says how many operations it managed).

use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Quick,
    Default,
    Long,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Profile {
    pub mode: Mode,
    /// Keys loaded by fillseq / fillrandom (and overwritten by overwrite).
    pub keys: u64,
    /// Operations per commit for the bulk phases.
    pub batch: usize,
    pub key_len: usize,
    pub value_len: usize,
    /// Single-put buffered commits after overwrite (redb's "nosync writes").
    pub single_commits: u64,
    pub reads: u64,
    pub misses: u64,
    pub seeks: u64,
    /// Rows read after each seek.
    pub seek_next: usize,
    pub prefixes: u64,
    pub read_while_writing: Duration,
    /// The readwhilewriting writer's pace in user bytes per second (db_bench's
    /// `--benchmark_write_rate_limit`, which RocksDB's benchmark.sh sets for this workload): every engine's
    /// readers then share the machine with the same write load. An engine slower than the pace writes flat out.
    pub rww_write_bytes_per_sec: u64,
    /// Sync commits for the 1-writer run; the N-writer runs do `sync_commits_per_writer` each.
    pub sync_commits: u64,
    pub sync_commits_per_writer: u64,
    pub writers: Vec<usize>,
    /// Keys written (buffered) before the crash in the recovery workload.
    pub recovery_keys: u64,
    pub phase_cap: Duration,
    /// One unit of the device probe (it runs about 4 units).
    pub probe_unit: Duration,
}

impl Profile {
    pub fn new(mode: Mode) -> Profile {
        let base = Profile {
            mode,
            keys: 1_000_000,
            batch: 1000,
            key_len: 16,
            value_len: 100,
            single_commits: 50_000,
            reads: 500_000,
            misses: 200_000,
            seeks: 200_000,
            seek_next: 10,
            prefixes: 1000,
            read_while_writing: Duration::from_secs(10),
            rww_write_bytes_per_sec: 4 << 20,
            sync_commits: 10_000,
            sync_commits_per_writer: 2000,
            writers: vec![1, 4, 16],
            recovery_keys: 1_000_000,
            phase_cap: Duration::from_secs(30),
            probe_unit: Duration::from_secs(1),
        };
        match mode {
            Mode::Default => base,
            Mode::Quick => Profile {
                keys: 200_000,
                single_commits: 20_000,
                reads: 200_000,
                misses: 100_000,
                seeks: 50_000,
                prefixes: 1000,
                read_while_writing: Duration::from_secs(4),
                // Long enough that a 4- or 16-writer phase is not a ~50 ms blip on a noisy shared disk.
                sync_commits: 4000,
                sync_commits_per_writer: 1000,
                recovery_keys: 500_000,
                phase_cap: Duration::from_secs(10),
                probe_unit: Duration::from_secs(1),
                ..base
            },
            Mode::Long => Profile {
                keys: 10_000_000,
                single_commits: 200_000,
                reads: 2_000_000,
                misses: 500_000,
                seeks: 500_000,
                prefixes: 5000,
                read_while_writing: Duration::from_secs(60),
                sync_commits: 20_000,
                sync_commits_per_writer: 4000,
                writers: vec![1, 4, 16, 64],
                recovery_keys: 5_000_000,
                phase_cap: Duration::from_secs(300),
                probe_unit: Duration::from_secs(2),
                ..base
            },
        }
    }

    /// Bytes of one key-value pair as the user wrote it.
    pub fn pair_bytes(&self) -> u64 {
        (self.key_len + self.value_len) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_is_smaller_than_default_smaller_than_long() {
        let (q, d, l) = (
            Profile::new(Mode::Quick),
            Profile::new(Mode::Default),
            Profile::new(Mode::Long),
        );
        assert!(q.keys < d.keys && d.keys < l.keys);
        assert!(q.phase_cap < d.phase_cap && d.phase_cap < l.phase_cap);
        assert_eq!(q.pair_bytes(), 116);
        assert!(q.writers.contains(&16));
    }
}
