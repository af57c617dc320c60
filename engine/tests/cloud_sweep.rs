//! Cloud fault sweep on the object-store simulator (`storage::object_sim`): for short workloads of
//! `cloud_strict` / `cloud_async` commits, flushes and compactions (SST uploads, manifest mirrors, WAL segment
//! publication), inject a fault at **every** object-store request and check the oracle after the next writer
//! recovers from the bucket alone (the local cache is always lost):
//! - crash at request `n`: every acknowledged `cloud_strict` commit (and everything before it) is present, the
//!   state is the model at a transaction boundary (no holes, no partial transactions, nothing invented), async
//!   commits after the last strict one lost only as a suffix; crashing during that recovery and recovering again
//!   gives the same;
//! - a failed, ambiguous-applied or ambiguous-lost request: the engine absorbs it with bounded retries and
//!   read-back reconciliation, or reports a typed error — never a false `Fenced`, never an acknowledgement the
//!   bucket does not back; a following strict commit on the same engine works, and recovery agrees;
//! - listing lag: recovery never depends on listings;
//! - lost lease at every step: the old writer is `Fenced` and nothing it wrote afterwards is replayed.
//!
//! Prints its figures as one JSON line.
#![allow(clippy::disallowed_methods)]

use cntryl_midge::prelude::*;
use cntryl_midge::storage::SharedFs;
use cntryl_midge::storage::memory::MemoryFs;
use cntryl_midge::storage::object_sim::{ObjectFault, SimObjectStore};
use std::collections::BTreeMap;
use std::sync::Arc;

type State = BTreeMap<Vec<u8>, Vec<u8>>;

#[derive(Debug, Clone)]
enum Step {
    Strict(Vec<(Vec<u8>, Option<Vec<u8>>)>),
    Async(Vec<(Vec<u8>, Option<Vec<u8>>)>),
    Flush,
    Compact,
}

impl Step {
    fn is_strict(&self) -> bool {
        matches!(self, Step::Strict(_))
    }
}

fn key(i: u64) -> Vec<u8> {
    format!("key{i:03}").into_bytes()
}

fn workload() -> Vec<Step> {
    let mut rng = cntryl_midge::runtime::SeededRng::new(23);
    let mut steps = Vec::new();
    for i in 0..22u64 {
        let ops = (0..3)
            .map(|_| {
                let k = key(rng.below(30));
                if rng.below(6) == 0 {
                    (k, None)
                } else {
                    (k, Some(vec![b'a' + (i % 26) as u8; 60 + rng.below(100) as usize]))
                }
            })
            .collect();
        steps.push(if i % 3 == 2 {
            Step::Async(ops)
        } else {
            Step::Strict(ops)
        });
        if i == 9 {
            steps.push(Step::Flush);
        }
        if i == 17 {
            steps.push(Step::Flush);
            steps.push(Step::Compact);
        }
    }
    steps
}

fn apply(s: &mut State, step: &Step) {
    if let Step::Strict(ops) | Step::Async(ops) = step {
        for (k, v) in ops {
            match v {
                Some(v) => s.insert(k.clone(), v.clone()),
                None => s.remove(k),
            };
        }
    }
}

fn open(cache: &SharedFs, store: &SimObjectStore) -> MidgeResult<Engine> {
    Engine::open(
        OpenOptions::cloud_with_file_system(cache.clone(), Arc::new(store.clone()), "db")
            .with_memtable_size_limit(3 << 10)
            .with_l0_compaction_trigger(2)
            .with_target_sst_size(4 << 10)
            .executor(Arc::new(cntryl_midge::runtime::InlineExecutor))
            .build(),
    )
}

fn exec(e: &Engine, step: &Step) -> MidgeResult<()> {
    match step {
        Step::Strict(ops) | Step::Async(ops) => {
            let mut tx = e.begin_tx(0, TransactionMode::ReadWrite)?;
            for (k, v) in ops {
                match v {
                    Some(v) => tx.put(k.clone(), v.clone(), None)?,
                    None => tx.delete(k.clone())?,
                }
            }
            tx.commit(if step.is_strict() {
                WriteOptions::cloud_strict()
            } else {
                WriteOptions::cloud_async()
            })
        }
        Step::Flush => {
            let cf = e.get_column_family("default").ok_or(MidgeError::NotFound)?;
            e.flush_cf(&cf)
        }
        Step::Compact => e.compact_all(),
    }
}

fn read(e: &Engine) -> MidgeResult<State> {
    let tx = e.begin_tx(0, TransactionMode::ReadOnly)?;
    Ok(tx
        .scan(&Query::new())?
        .try_collect()?
        .into_iter()
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect())
}

/// What a run acknowledged.
#[derive(Debug, Default)]
struct Run {
    acked: usize,
    /// Steps `0..floor` are covered by an acknowledged strict commit.
    floor: usize,
    error: Option<MidgeError>,
}

fn run(e: &Engine, steps: &[Step]) -> Run {
    let mut r = Run::default();
    for (i, s) in steps.iter().enumerate() {
        match exec(e, s) {
            Ok(()) => {
                r.acked = i + 1;
                if s.is_strict() {
                    r.floor = i + 1;
                }
            }
            Err(err) => {
                r.error = Some(err);
                break;
            }
        }
    }
    r
}

#[derive(Debug, Default)]
struct Figures {
    crash_points: u64,
    states: u64,
    recovery_crash_states: u64,
    fault_plans: u64,
    faults_absorbed: u64,
    typed_errors: u64,
    lease_steals: u64,
    violations: Vec<String>,
}

/// Opens the bucket as the next writer (fresh cache) and checks the state against the model.
fn check(
    store: &SimObjectStore,
    states: &[State],
    floor: usize,
    hi: usize,
    extra: Option<&(Vec<u8>, Vec<u8>)>,
    what: &str,
    fig: &mut Figures,
) {
    fig.states += 1;
    let cache: SharedFs = Arc::new(MemoryFs::new());
    let e = match open(&cache, &store.survivor()) {
        Ok(e) => e,
        Err(err) => {
            fig.violations.push(format!("{what}: recovery failed: {err}"));
            return;
        }
    };
    let mut got = match read(&e) {
        Ok(s) => s,
        Err(err) => {
            fig.violations.push(format!("{what}: read failed: {err}"));
            return;
        }
    };
    std::mem::forget(e);
    if let Some((k, v)) = extra
        && got.remove(k).as_ref() != Some(v)
    {
        fig.violations
            .push(format!("{what}: the acknowledged probe commit is missing"));
        return;
    }
    let hi = hi.min(states.len() - 1);
    if !(floor..=hi).any(|k| states[k] == got) {
        let n = got.len();
        fig.violations.push(format!(
            "{what}: {n} rows match no boundary in {floor}..={hi} (lost acknowledged data, a hole, or invented data)"
        ));
    }
}

#[test]
fn every_object_store_fault_keeps_every_acknowledged_strict_commit() {
    let steps = workload();
    let mut states = vec![State::new()];
    for s in &steps {
        let mut n = states.last().unwrap().clone();
        apply(&mut n, s);
        states.push(n);
    }
    let mut fig = Figures::default();
    // The clean run: how many requests to sweep.
    let probe = SimObjectStore::new();
    let total = {
        let cache: SharedFs = Arc::new(MemoryFs::new());
        let e = open(&cache, &probe).unwrap();
        let r = run(&e, &steps);
        assert_eq!(r.acked, steps.len(), "clean run: {:?}", r.error);
        let m = e.get_runtime_metrics().unwrap();
        assert!(m.flush_publish_count > 0, "the workload must publish SSTs: {m:?}");
        std::mem::forget(e);
        probe.op_count()
    };
    assert!(total > 20, "too few requests to sweep: {total}");

    // 1. Crash (machine loss) at every request; then crash the recovery at every request of its own.
    for n in 0..total {
        let store = SimObjectStore::new();
        store.plan(n, ObjectFault::Crash);
        let cache: SharedFs = Arc::new(MemoryFs::new());
        let r = match open(&cache, &store) {
            Ok(e) => {
                let r = run(&e, &steps);
                std::mem::forget(e);
                r
            }
            Err(_) => Run::default(),
        };
        fig.crash_points += 1;
        let what = format!("crash at request {n}");
        check(&store, &states, r.floor, r.acked + 1, None, &what, &mut fig);
        if n % 4 == 0 {
            let survivor = store.survivor();
            let rec_ops = {
                let s = survivor.survivor();
                std::mem::forget(open(&(Arc::new(MemoryFs::new()) as SharedFs), &s));
                s.op_count()
            };
            for m in 0..rec_ops {
                let s = survivor.survivor();
                s.plan(m, ObjectFault::Crash);
                std::mem::forget(open(&(Arc::new(MemoryFs::new()) as SharedFs), &s));
                fig.recovery_crash_states += 1;
                check(
                    &s,
                    &states,
                    r.floor,
                    r.acked + 1,
                    None,
                    &format!("{what}, recovery crash at {m}"),
                    &mut fig,
                );
            }
        }
    }

    // 2. One failed / ambiguous request at every position, then a probe strict commit on the same engine.
    let probe_row = (b"zz-probe".to_vec(), b"after the fault".to_vec());
    for n in 0..total {
        for fault in [
            ObjectFault::Fail,
            ObjectFault::AmbiguousApplied,
            ObjectFault::AmbiguousLost,
            // Longer than the retry budget: must surface as a typed error.
            ObjectFault::FailTimes(cntryl_midge::CLOUD_REQUEST_ATTEMPTS as u64),
        ] {
            let store = SimObjectStore::new();
            store.plan(n, fault);
            let cache: SharedFs = Arc::new(MemoryFs::new());
            fig.fault_plans += 1;
            let what = format!("{fault:?} at request {n}");
            let e = match open(&cache, &store) {
                Ok(e) => e,
                Err(err) => {
                    fig.typed_errors += 1;
                    if matches!(err, MidgeError::Fenced(_)) {
                        fig.violations
                            .push(format!("{what}: open reported a false Fenced: {err}"));
                    }
                    check(&store, &states, 0, 0, None, &what, &mut fig);
                    continue;
                }
            };
            let r = run(&e, &steps);
            let probe_acked = e.begin_tx(0, TransactionMode::ReadWrite).and_then(|mut tx| {
                tx.put(probe_row.0.clone(), probe_row.1.clone(), None)?;
                tx.commit(WriteOptions::cloud_strict())
            });
            std::mem::forget(e);
            match &r.error {
                None => fig.faults_absorbed += 1,
                Some(err) => {
                    fig.typed_errors += 1;
                    if matches!(err, MidgeError::Fenced(_) | MidgeError::Internal(_)) {
                        fig.violations
                            .push(format!("{what}: step {} failed with {err}", r.acked));
                    }
                }
            }
            if let Err(err) = &probe_acked
                && matches!(err, MidgeError::Fenced(_))
            {
                fig.violations.push(format!(
                    "{what}: a strict commit after the fault was falsely fenced: {err}"
                ));
            }
            match probe_acked {
                // The probe covers every step the engine applied before it: the failed step may or may not be in.
                Ok(()) => check(
                    &store,
                    &states,
                    r.acked,
                    r.acked + 1,
                    Some(&probe_row),
                    &what,
                    &mut fig,
                ),
                Err(_) => {
                    let s = store.survivor();
                    let cache: SharedFs = Arc::new(MemoryFs::new());
                    if let Ok(e) = open(&cache, &s) {
                        // An unacknowledged probe may or may not have landed; judge the rest.
                        let mut tx = e.begin_tx(0, TransactionMode::ReadWrite).unwrap();
                        tx.delete(probe_row.0.clone()).unwrap();
                        tx.commit(WriteOptions::cloud_strict()).unwrap();
                        std::mem::forget(e);
                    }
                    check(&s, &states, r.floor, r.acked + 1, None, &what, &mut fig);
                }
            }
        }
    }

    // 3. Listing lag never matters: recovery reads the catalog and manifest, not listings.
    {
        let store = SimObjectStore::new();
        store.set_listing_lag(1_000_000);
        let cache: SharedFs = Arc::new(MemoryFs::new());
        let e = open(&cache, &store).unwrap();
        let r = run(&e, &steps);
        assert!(r.error.is_none(), "{:?}", r.error);
        std::mem::forget(e);
        let s = store.survivor();
        s.set_listing_lag(1_000_000);
        let e = open(&(Arc::new(MemoryFs::new()) as SharedFs), &s).unwrap();
        if read(&e).unwrap() != *states.last().unwrap() {
            fig.violations
                .push("listing lag changed what recovery found".into());
        }
        std::mem::forget(e);
    }

    // 4. A second writer steals the lease before every step.
    for i in 0..steps.len() {
        let store = SimObjectStore::new();
        let a = open(&(Arc::new(MemoryFs::new()) as SharedFs), &store).unwrap();
        let before = run(&a, &steps[..i]);
        assert!(before.error.is_none());
        let b = open(&(Arc::new(MemoryFs::new()) as SharedFs), &store.survivor()).unwrap();
        fig.lease_steals += 1;
        let seen = read(&b).unwrap();
        let what = format!("lease stolen before step {i}");
        if !(before.floor..=i).any(|k| states[k] == seen) {
            fig.violations
                .push(format!("{what}: the new writer lost acknowledged strict commits"));
        }
        // The old writer keeps going. A cloud_async commit only appends locally, so it may be acknowledged
        // before the writer learns it is fenced (and is then lost, as the async contract allows); a strict commit
        // never is.
        let after = run(&a, &steps[i..]);
        if steps[i..i + after.acked].iter().any(Step::is_strict) {
            fig.violations
                .push(format!("{what}: the fenced writer acknowledged a strict commit"));
        }
        if let Some(err) = &after.error
            && !matches!(err, MidgeError::Fenced(_))
        {
            fig.violations
                .push(format!("{what}: the old writer got {err}, not Fenced"));
        }
        let mut tx = b.begin_tx(0, TransactionMode::ReadWrite).unwrap();
        tx.put(b"zz-b".to_vec(), b"b".to_vec(), None).unwrap();
        tx.commit(WriteOptions::cloud_strict()).unwrap();
        drop(a);
        drop(b);
        let c = open(&(Arc::new(MemoryFs::new()) as SharedFs), &store.survivor()).unwrap();
        let mut got = read(&c).unwrap();
        if got.remove(b"zz-b".as_slice()).is_none() || got != seen {
            fig.violations
                .push(format!("{what}: the third writer saw writes of the fenced one"));
        }
    }

    println!(
        "{{\"sweep\":\"cloud_faults\",\"requests_swept\":{total},\"crash_points\":{},\"states_checked\":{},\"recovery_crash_states\":{},\"fault_plans\":{},\"faults_absorbed\":{},\"typed_errors\":{},\"lease_steals\":{},\"violations\":{}}}",
        fig.crash_points,
        fig.states,
        fig.recovery_crash_states,
        fig.fault_plans,
        fig.faults_absorbed,
        fig.typed_errors,
        fig.lease_steals,
        fig.violations.len()
    );
    assert!(
        fig.typed_errors > 0,
        "a failure beyond the retry budget must surface"
    );
    assert!(
        fig.faults_absorbed > 0,
        "single transient faults must be absorbed by retries"
    );
    for v in fig.violations.iter().take(15) {
        eprintln!("violation: {v}");
    }
    assert!(
        fig.violations.is_empty(),
        "{} violations, first: {}",
        fig.violations.len(),
        fig.violations[0]
    );
}
