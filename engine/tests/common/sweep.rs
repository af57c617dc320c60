//! The crash-sweep workloads and model oracle, written once against [`SweepDb`] and shared by the native sweeps
//! (`engine/tests/crash_sweep.rs`) and the native-vs-component parity sweep (`tests/tests/component_sweep.rs`,
//! which includes this file by path), so both targets run the very same steps and are judged by the very same
//! oracle.
#![allow(dead_code, clippy::disallowed_methods)]

use cntryl_midge::prelude::*;
use cntryl_midge::storage::sim::SimFs;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Every column family's rows: `(cf name, key) → value`.
pub type State = BTreeMap<(String, Vec<u8>), Vec<u8>>;

/// One write inside a transaction.
#[derive(Debug, Clone)]
pub enum Op {
    Put(Vec<u8>, Vec<u8>),
    Del(Vec<u8>),
    Range(Vec<u8>, Vec<u8>),
}

/// One workload step; each is acknowledged (or not) as a unit.
#[derive(Debug, Clone)]
pub enum Step {
    /// A `sync()` transaction on a column family, with an optional TTL for its puts.
    Commit(String, Vec<Op>, Option<u64>),
    CreateCf(String),
    DropCf(String),
    Flush(String),
    Compact,
}

/// The tuning every sweep opens with: tiny memtables, segments and SSTs so a few dozen steps rotate the WAL,
/// flush, compact and rewrite the manifest. The TTL clock is fixed so runs replay exactly.
pub const MEMTABLE_BYTES: u64 = 2 << 10;
pub const L0_TRIGGER: u32 = 2;
pub const TARGET_SST_BYTES: u64 = 4 << 10;
pub const WAL_SEGMENT_BYTES: u64 = 3 << 10;
pub const CLOCK_MILLIS: u64 = 1_000_000;

/// Native open options on a simulated file system (inline executor: no background thread, so the I/O order
/// is a pure function of the workload — as on wasm32).
pub fn native_options(fs: &SimFs) -> OpenOptions {
    OpenOptions::with_file_system(Arc::new(fs.clone()))
        .with_memtable_size_limit(MEMTABLE_BYTES)
        .with_l0_compaction_trigger(L0_TRIGGER as usize)
        .with_target_sst_size(TARGET_SST_BYTES)
        .with_wal_segment_bytes(WAL_SEGMENT_BYTES)
        .ttl_clock(cntryl_midge::ManualClock::new(CLOCK_MILLIS))
        .executor(Arc::new(cntryl_midge::runtime::InlineExecutor))
        .build()
        .unwrap()
}

pub fn key(i: u64) -> Vec<u8> {
    format!("k{i:03}").into_bytes()
}

/// Short, sharp workloads that force WAL rotation, flushes, compaction, manifest edits, CF create/drop, TTL and
/// range deletes.
pub fn workloads() -> Vec<(&'static str, Vec<Step>)> {
    let mut rng = cntryl_midge::runtime::SeededRng::new(7);
    let mut big = |n: usize, cf: &str| -> Vec<Step> {
        (0..n)
            .map(|i| {
                let ops = (0..3)
                    .map(|_| {
                        let k = rng.below(40);
                        match rng.below(10) {
                            0 => Op::Del(key(k)),
                            1 => Op::Range(key(k), key(k + 1 + rng.below(5))),
                            _ => Op::Put(key(k), vec![b'a' + (i % 26) as u8; 40 + rng.below(80) as usize]),
                        }
                    })
                    .collect();
                Step::Commit(cf.to_string(), ops, None)
            })
            .collect()
    };
    let mut w = Vec::new();
    w.push(("wal-rotation-and-flush", big(24, "default")));
    let mut cfs = vec![Step::CreateCf("users".into())];
    cfs.extend(big(10, "users"));
    cfs.push(Step::Flush("users".into()));
    cfs.extend(big(6, "default"));
    cfs.push(Step::CreateCf("tmp".into()));
    cfs.extend(big(3, "tmp"));
    cfs.push(Step::Flush("tmp".into()));
    cfs.push(Step::DropCf("tmp".into()));
    w.push(("column-families-create-drop", cfs));
    let mut comp = big(12, "default");
    comp.push(Step::Flush("default".into()));
    comp.extend(big(8, "default"));
    comp.push(Step::Compact);
    comp.push(Step::Commit(
        "default".into(),
        vec![Op::Range(key(0), key(20))],
        None,
    ));
    comp.push(Step::Flush("default".into()));
    comp.push(Step::Compact);
    w.push(("compaction-and-range-deletes", comp));
    let ttl: Vec<Step> = (0..16)
        .map(|i| {
            Step::Commit(
                "default".into(),
                vec![Op::Put(key(i), vec![b't'; 90])],
                Some(3600),
            )
        })
        .chain([Step::Flush("default".into()), Step::Compact])
        .collect();
    w.push(("ttl-values", ttl));
    w
}

/// The model: applies one step to the expected state.
pub fn apply(state: &mut State, step: &Step) {
    match step {
        Step::Commit(cf, ops, _) => {
            for op in ops {
                match op {
                    Op::Put(k, v) => {
                        state.insert((cf.clone(), k.clone()), v.clone());
                    }
                    Op::Del(k) => {
                        state.remove(&(cf.clone(), k.clone()));
                    }
                    Op::Range(a, b) => state.retain(|(c, k), _| !(c == cf && k >= a && k < b)),
                }
            }
        }
        Step::DropCf(cf) => state.retain(|(c, _), _| c != cf),
        _ => {}
    }
}

/// The model state after each prefix of `steps` (`states[k]` = after `k` steps).
pub fn states_of(steps: &[Step]) -> Vec<State> {
    let mut states = vec![State::new()];
    for s in steps {
        let mut next = states.last().unwrap().clone();
        apply(&mut next, s);
        states.push(next);
    }
    states
}

/// What a sweep needs from an open database, implemented by the native engine and the component client.
pub trait SweepDb {
    fn cf_id(&self, name: &str) -> Option<u32>;
    /// One `sync()` transaction.
    fn commit(&self, cf: u32, ops: &[Op], ttl: Option<u64>) -> MidgeResult<()>;
    fn create_cf(&self, name: &str) -> MidgeResult<()>;
    fn drop_cf_discarding(&self, cf: u32) -> MidgeResult<()>;
    fn flush(&self, cf: u32) -> MidgeResult<()>;
    fn compact(&self) -> MidgeResult<()>;
    /// Every row of every column family.
    fn read_all(&self) -> MidgeResult<State>;
    /// `(wal records replayed, wal bytes replayed)` at open.
    fn replayed(&self) -> MidgeResult<(u64, u64)>;
    /// Ends the process's use of the database as a crash would: no shutdown, no drop-time sync.
    fn crash(self);
}

/// Executes one workload step.
pub fn exec<D: SweepDb>(db: &D, step: &Step) -> MidgeResult<()> {
    let cf = |name: &str| db.cf_id(name).ok_or(MidgeError::NotFound);
    match step {
        Step::Commit(name, ops, ttl) => db.commit(cf(name)?, ops, *ttl),
        Step::CreateCf(name) => db.create_cf(name),
        Step::DropCf(name) => db.drop_cf_discarding(cf(name)?),
        Step::Flush(name) => db.flush(cf(name)?),
        Step::Compact => db.compact(),
    }
}

/// Runs the workload until the first error, then "crashes"; returns how many steps were acknowledged.
pub fn run<D: SweepDb>(opened: MidgeResult<D>, steps: &[Step]) -> usize {
    let Ok(db) = opened else {
        return 0;
    };
    let mut acked = 0;
    for step in steps {
        if exec(&db, step).is_err() {
            break;
        }
        acked += 1;
    }
    db.crash();
    acked
}

/// The oracle, on a freshly recovered database: `Ok` if the state equals the model after `k` acknowledged
/// steps with `acked <= k <= acked + 1` (every acknowledged `sync()` commit present, no holes, no partial
/// transactions, nothing invented or resurrected) and the recovery metrics agree with what could have been
/// replayed; otherwise the violation.
pub fn verdict<D: SweepDb>(opened: MidgeResult<D>, states: &[State], acked: usize) -> Result<(), String> {
    let db = opened.map_err(|e| format!("open failed: {e}"))?;
    let got = db.read_all();
    let replayed = db.replayed();
    db.crash();
    let got = got.map_err(|e| format!("read failed: {e}"))?;
    let (records, bytes) = replayed.map_err(|e| format!("metrics failed: {e}"))?;
    // Never more WAL records than commits issued, and bytes exactly when records.
    if records > states.len() as u64 || (records == 0) != (bytes == 0) {
        return Err(format!(
            "recovery metrics inconsistent: {records} records, {bytes} bytes"
        ));
    }
    let hi = (acked + 1).min(states.len() - 1);
    if (acked..=hi).any(|k| states[k] == got) {
        return Ok(());
    }
    let detail = if got.len() < states[acked].len() {
        "lost acknowledged data"
    } else {
        "hole or invented data"
    };
    Err(format!("state matches no boundary in {acked}..={hi} ({detail})"))
}

/// The native engine as a [`SweepDb`].
impl SweepDb for Engine {
    fn cf_id(&self, name: &str) -> Option<u32> {
        self.get_column_family(name).map(|c| c.id())
    }
    fn commit(&self, cf: u32, ops: &[Op], ttl: Option<u64>) -> MidgeResult<()> {
        let mut tx = self.begin_tx(cf, TransactionMode::ReadWrite)?;
        for op in ops {
            match op {
                Op::Put(k, v) => tx.put(k.clone(), v.clone(), ttl)?,
                Op::Del(k) => tx.delete(k.clone())?,
                Op::Range(a, b) => tx.delete_range(a.clone(), b.clone())?,
            }
        }
        tx.commit(WriteOptions::sync())
    }
    fn create_cf(&self, name: &str) -> MidgeResult<()> {
        self.create_column_family(name).map(|_| ())
    }
    fn drop_cf_discarding(&self, cf: u32) -> MidgeResult<()> {
        self.drop_column_family_discarding_unflushed(cf)
    }
    fn flush(&self, cf: u32) -> MidgeResult<()> {
        let h = self
            .list_column_families()?
            .into_iter()
            .find(|c| c.id() == cf)
            .ok_or(MidgeError::NotFound)?;
        self.flush_cf(&h)
    }
    fn compact(&self) -> MidgeResult<()> {
        self.compact_all()
    }
    fn read_all(&self) -> MidgeResult<State> {
        let mut out = State::new();
        for cf in self.list_column_families()? {
            let tx = self.begin_tx(cf.id(), TransactionMode::ReadOnly)?;
            for (k, v) in tx.scan(&Query::new())?.try_collect()? {
                out.insert((cf.name().to_string(), k.to_vec()), v.to_vec());
            }
        }
        Ok(out)
    }
    fn replayed(&self) -> MidgeResult<(u64, u64)> {
        let r = self.get_recovery_metrics()?;
        Ok((r.wal_recovery_records_replayed, r.wal_recovery_bytes_replayed))
    }
    fn crash(self) {
        std::mem::forget(self);
    }
}

/// Opens the native engine on a simulated file system with the sweep tuning.
pub fn open_native(fs: &SimFs) -> MidgeResult<Engine> {
    Engine::open(native_options(fs))
}
