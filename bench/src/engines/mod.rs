//! One trait over every engine under test; Midge is one more adapter.
//!
//! Durability equivalence (see `docs/performance.md`): `Sync` means the commit is on stable storage when the
//! call returns; `Buffered` means it is in the engine's log and reaches the disk later without another call.

use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::path::Path;

#[cfg(feature = "component")]
pub mod component;
mod fjall_kv;
mod midge;
mod redb_kv;
#[cfg(feature = "rocksdb")]
mod rocks;
mod sled_kv;
mod sqlite;

/// One write in a batch. Batches commit atomically.
#[derive(Debug, Clone, Copy)]
pub enum Op<'a> {
    Put(&'a [u8], &'a [u8]),
    Delete(&'a [u8]),
    /// `[start, end)`; only sent to engines whose [`Caps::delete_range`] is true.
    DeleteRange(&'a [u8], &'a [u8]),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    Sync,
    Buffered,
}

impl Durability {
    pub fn as_str(self) -> &'static str {
        match self {
            Durability::Sync => "sync",
            Durability::Buffered => "buffered",
        }
    }
}

/// What an engine can do at equal durability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// Has a sync commit that means "on stable storage when it returns" (sled does not: #1351).
    pub sync: bool,
    /// Has a native range delete.
    pub delete_range: bool,
    /// Has a fsync counter (commits per fsync).
    pub fsync_counter: bool,
}

/// Engine counters the harness reads before and after a phase.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub fsyncs: u64,
    pub wal_appends: u64,
    /// Commits refused with a write stall (and retried).
    pub stalls: u64,
    pub compactions: u64,
}

/// A workload's ops as a Midge write batch (`Engine::write`, `ComponentEngine::write`): both Midge columns
/// commit through one call, as RocksDB's db_bench commits a `WriteBatch`.
pub fn midge_batch(ops: &[Op<'_>]) -> Vec<cntryl_midge::BatchOp> {
    use cntryl_midge::BatchOp as B;
    ops.iter()
        .map(|op| match *op {
            Op::Put(k, v) => B::Put {
                key: k.to_vec(),
                value: v.to_vec(),
                ttl_secs: None,
            },
            Op::Delete(k) => B::Delete { key: k.to_vec() },
            Op::DeleteRange(s, e) => B::DeleteRange {
                start: s.to_vec(),
                end: e.to_vec(),
            },
        })
        .collect()
}

/// Midge's write options for a workload's durability.
pub fn midge_options(d: Durability) -> cntryl_midge::WriteOptions {
    match d {
        Durability::Sync => cntryl_midge::WriteOptions::sync(),
        Durability::Buffered => cntryl_midge::WriteOptions::buffered(),
    }
}

impl Counters {
    /// Midge's counters from its runtime metrics (native, or the component's, whose WIT record carries no
    /// append or stall counts: those stay 0).
    pub fn of_midge(m: &cntryl_midge::RuntimeMetricsSnapshot) -> Counters {
        Counters {
            fsyncs: m.wal_fsync_count,
            wal_appends: m.wal_append_count,
            stalls: m.write_stalls_total,
            compactions: m.compactions_run,
        }
    }
}

/// What the workloads do with each value a read returns: fold every byte of it, as an application that uses
/// the value would, and hand back its length. An engine that returns a reference into its cache would
/// otherwise never pay for the value's cache misses, while one that must copy it (the component, whose host
/// lifts the value out of linear memory) pays them in full.
pub fn consume(v: &[u8]) -> usize {
    std::hint::black_box(v.iter().fold(0u8, |a, &b| a ^ b));
    v.len()
}

/// A consistent read view (a snapshot or read transaction) for a run of reads.
pub trait KvRead {
    /// The value's length, if the key exists, after [`consume`] read it.
    fn get(&self, key: &[u8]) -> Result<Option<usize>>;
    /// Rows in `[start, end)` (unbounded end when `None`), ascending or descending, at most `limit`; calls
    /// `visit` per row and returns the row count.
    fn scan(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
        reverse: bool,
        visit: &mut dyn FnMut(&[u8], &[u8]),
    ) -> Result<usize>;
    /// Rows starting with `prefix`.
    fn prefix(&self, prefix: &[u8], limit: usize, visit: &mut dyn FnMut(&[u8], &[u8])) -> Result<usize> {
        let end = crate::rng::prefix_successor(prefix);
        self.scan(prefix, end.as_deref(), limit, false, visit)
    }
}

pub trait KvEngine: Send + Sync {
    fn caps(&self) -> Caps;
    /// Commits `ops` atomically at `durability`.
    fn write(&self, ops: &[Op<'_>], durability: Durability) -> Result<()>;
    /// Runs `f` against one read view.
    fn with_reader(&self, f: &mut dyn FnMut(&dyn KvRead) -> Result<()>) -> Result<()>;
    /// Moves buffered state to its on-disk form (memtable flush, WAL checkpoint).
    fn flush(&self) -> Result<()>;
    /// Full compaction / vacuum, so space reflects only live data.
    fn compact(&self) -> Result<()>;
    fn counters(&self) -> Counters {
        Counters::default()
    }
    /// Engine-specific facts worth recording after open (e.g. Midge's recovery metrics).
    fn open_report(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
    /// A clean close (makes buffered commits durable).
    fn close(self: Box<Self>) -> Result<()>;
}

/// The engines this binary knows. `MidgeComponent` is the slot for `midge_host::ComponentEngine`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EngineKind {
    Midge,
    MidgeComponent,
    Fjall,
    Redb,
    Sled,
    Sqlite,
    Rocksdb,
}

impl EngineKind {
    pub const ALL: [EngineKind; 7] = [
        EngineKind::Midge,
        EngineKind::MidgeComponent,
        EngineKind::Fjall,
        EngineKind::Redb,
        EngineKind::Sled,
        EngineKind::Sqlite,
        EngineKind::Rocksdb,
    ];

    pub fn name(self) -> &'static str {
        match self {
            EngineKind::Midge => "midge",
            EngineKind::MidgeComponent => "midge-component",
            EngineKind::Fjall => "fjall",
            EngineKind::Redb => "redb",
            EngineKind::Sled => "sled",
            EngineKind::Sqlite => "sqlite",
            EngineKind::Rocksdb => "rocksdb",
        }
    }

    pub fn parse(s: &str) -> Option<EngineKind> {
        EngineKind::ALL.into_iter().find(|k| k.name() == s)
    }

    /// Why this build cannot run the engine, if it cannot.
    pub fn unavailable(self) -> Option<&'static str> {
        match self {
            EngineKind::MidgeComponent if !cfg!(feature = "component") => {
                Some("built without the `component` feature")
            }
            EngineKind::Rocksdb if !cfg!(feature = "rocksdb") => Some("built without `--features rocksdb`"),
            _ => None,
        }
    }

    /// The equal-durability settings, as recorded in the results.
    pub fn settings(self) -> &'static str {
        match self {
            EngineKind::Midge => "sync: WriteOptions::sync(); buffered: WriteOptions::buffered()",
            EngineKind::MidgeComponent => {
                "as midge, inside wasmtime via midge_host::ComponentEngine (release guest, one store behind one lock)"
            }
            EngineKind::Fjall => {
                "sync: WriteBatch::durability(Some(PersistMode::SyncData)); buffered: durability(None)"
            }
            EngineKind::Redb => {
                "sync: Durability::Immediate; buffered: Durability::None (flagged: redb #810, #1066)"
            }
            EngineKind::Sled => "buffered only: default config (flush_every_ms 500); sync excluded (#1351)",
            EngineKind::Sqlite => {
                "journal_mode=WAL; sync: synchronous=FULL; buffered: synchronous=NORMAL; one txn per batch"
            }
            EngineKind::Rocksdb => "sync: WriteOptions::set_sync(true); buffered: set_sync(false), WAL on",
        }
    }
}

/// Work that must not count in a timed open (building and compiling the component).
pub fn prepare(kind: EngineKind) -> Result<()> {
    #[cfg(feature = "component")]
    if kind == EngineKind::MidgeComponent {
        component::host()?;
    }
    let _ = kind;
    Ok(())
}

/// Opens (creating or recovering) an engine's database in `dir`.
pub fn open(kind: EngineKind, dir: &Path) -> Result<Box<dyn KvEngine>> {
    if let Some(why) = kind.unavailable() {
        anyhow::bail!("{} unavailable: {why}", kind.name());
    }
    std::fs::create_dir_all(dir)?;
    Ok(match kind {
        EngineKind::Midge => Box::new(midge::MidgeKv::open(dir)?),
        #[cfg(feature = "component")]
        EngineKind::MidgeComponent => Box::new(component::ComponentKv::open(dir)?),
        EngineKind::Fjall => Box::new(fjall_kv::FjallKv::open(dir)?),
        EngineKind::Redb => Box::new(redb_kv::RedbKv::open(dir)?),
        EngineKind::Sled => Box::new(sled_kv::SledKv::open(dir)?),
        EngineKind::Sqlite => Box::new(sqlite::SqliteKv::open(dir)?),
        #[cfg(feature = "rocksdb")]
        EngineKind::Rocksdb => Box::new(rocks::RocksKv::open(dir)?),
        other => anyhow::bail!("{} is not wired in this build", other.name()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for k in EngineKind::ALL {
            assert_eq!(EngineKind::parse(k.name()), Some(k));
        }
        assert_eq!(EngineKind::parse("lmdb"), None);
        assert!(crate::report::is_midge(EngineKind::MidgeComponent.name()));
        assert!(!crate::report::is_midge(EngineKind::Fjall.name()));
    }

    /// Every adapter must agree on the same small script (catches a wrong bound or direction).
    #[test]
    fn adapters_agree_on_a_script() {
        let tmp = tempfile::tempdir().unwrap();
        for kind in EngineKind::ALL {
            if kind.unavailable().is_some() {
                continue;
            }
            let dir = tmp.path().join(kind.name());
            let e = open(kind, &dir).unwrap();
            let keys: Vec<[u8; 16]> = (0..300).map(crate::rng::key).collect();
            let v = [7u8; 10];
            let ops: Vec<Op> = keys.iter().map(|k| Op::Put(k, &v)).collect();
            e.write(&ops, Durability::Buffered).unwrap();
            if e.caps().delete_range {
                e.write(&[Op::DeleteRange(&keys[100], &keys[200])], Durability::Buffered)
                    .unwrap();
            } else {
                let dels: Vec<Op> = keys[100..200].iter().map(|k| Op::Delete(k)).collect();
                e.write(&dels, Durability::Buffered).unwrap();
            }
            let sync = if e.caps().sync {
                Durability::Sync
            } else {
                Durability::Buffered
            };
            e.write(&[Op::Delete(&keys[0])], sync).unwrap();
            e.flush().unwrap();
            e.with_reader(&mut |r| {
                assert_eq!(r.get(&keys[1])?, Some(10), "{}", kind.name());
                assert_eq!(r.get(&keys[0])?, None, "{}", kind.name());
                assert_eq!(r.get(&keys[150])?, None, "{}", kind.name());
                assert_eq!(r.get(&crate::rng::missing_key(5))?, None);
                let mut seen = Vec::new();
                let n = r.scan(&keys[95], Some(&keys[205]), 8, false, &mut |k, _| {
                    seen.push(k.to_vec())
                })?;
                assert_eq!(n, 8, "{}", kind.name());
                assert_eq!(seen[0], keys[95]);
                assert_eq!(seen[5], keys[200], "{}", kind.name());
                let mut rev = Vec::new();
                let n = r.scan(&keys[250], Some(&keys[260]), 100, true, &mut |k, _| {
                    rev.push(k.to_vec())
                })?;
                assert_eq!(n, 10, "{}", kind.name());
                assert_eq!(rev[0], keys[259], "{}", kind.name());
                assert_eq!(rev[9], keys[250]);
                let n = r.scan(b"", None, usize::MAX, true, &mut |_, _| {})?;
                assert_eq!(n, 199, "{}", kind.name());
                let n = r.prefix(&keys[230][..14], usize::MAX, &mut |k, _| {
                    assert!(k.starts_with(&keys[230][..14]))
                })?;
                assert_eq!(n, 100, "{}", kind.name());
                Ok(())
            })
            .unwrap();
            e.compact().unwrap();
            e.close().unwrap();
        }
    }
}
