//! Exhaustive crash sweep on the `sim` file system: for each workload, crash before **every** mutating I/O
//! operation, build post-crash disk images under every persistence model (several seeds for the random ones),
//! reopen, and check against the model oracle:
//! - the engine opens (P0–P3 are within contract: an open failure is a violation);
//! - the state equals the model after `k` acknowledged steps, with `acked <= k <= acked + 1` (every
//!   acknowledged `sync()` commit present, no holes, no partial transactions, nothing invented or resurrected);
//! - recovery itself is crash-safe: crashing at every op of the recovery and recovering again gives the same.
//!
//! Prints its figures as one JSON line (`MIDGE_SWEEP_SEEDS` sets seeds per random model; default 16).

use cntryl_midge::prelude::*;
use cntryl_midge::storage::sim::{PersistenceModel, SimFs};
use std::collections::BTreeMap;
use std::sync::Arc;

type State = BTreeMap<(String, Vec<u8>), Vec<u8>>;

#[derive(Debug, Clone)]
enum Op {
    Put(Vec<u8>, Vec<u8>),
    Del(Vec<u8>),
    Range(Vec<u8>, Vec<u8>),
}

#[derive(Debug, Clone)]
enum Step {
    Commit(String, Vec<Op>, Option<u64>),
    CreateCf(String),
    DropCf(String),
    Flush(String),
    Compact,
}

fn options(fs: &SimFs) -> OpenOptions {
    OpenOptions::with_file_system(Arc::new(fs.clone()))
        .with_memtable_size_limit(2 << 10)
        .with_l0_compaction_trigger(2)
        .with_target_sst_size(4 << 10)
        .with_wal_segment_bytes(3 << 10)
        .ttl_clock(cntryl_midge::ManualClock::new(1_000_000))
        .executor(Arc::new(cntryl_midge::runtime::InlineExecutor))
        .build()
        .unwrap()
}

fn key(i: u64) -> Vec<u8> {
    format!("k{i:03}").into_bytes()
}

/// Short, sharp workloads that force WAL rotation, flushes, compaction, manifest edits, CF create/drop, TTL and
/// range deletes.
fn workloads() -> Vec<(&'static str, Vec<Step>)> {
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

fn apply(state: &mut State, step: &Step) {
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

/// Executes one workload step against an open engine.
fn exec(engine: &Engine, step: &Step) -> MidgeResult<()> {
    let cf = |name: &str| engine.get_column_family(name);
    match step {
        Step::Commit(name, ops, ttl) => {
            let cf = cf(name).ok_or(MidgeError::NotFound)?;
            let mut tx = engine.begin_tx(cf.id(), TransactionMode::ReadWrite)?;
            for op in ops {
                match op {
                    Op::Put(k, v) => tx.put(k.clone(), v.clone(), *ttl)?,
                    Op::Del(k) => tx.delete(k.clone())?,
                    Op::Range(a, b) => tx.delete_range(a.clone(), b.clone())?,
                }
            }
            tx.commit(WriteOptions::sync())
        }
        Step::CreateCf(name) => engine.create_column_family(name).map(|_| ()),
        Step::DropCf(name) => cf(name)
            .ok_or(MidgeError::NotFound)
            .and_then(|c| engine.drop_column_family_discarding_unflushed(c.id())),
        Step::Flush(name) => cf(name)
            .ok_or(MidgeError::NotFound)
            .and_then(|c| engine.flush_cf(&c)),
        Step::Compact => engine.compact_all(),
    }
}

/// Runs the workload until the first error; returns how many steps were acknowledged.
fn run(fs: &SimFs, steps: &[Step]) -> usize {
    let Ok(engine) = Engine::open(options(fs)) else {
        return 0;
    };
    let mut acked = 0;
    for step in steps {
        let r = exec(&engine, step);
        if r.is_err() {
            break;
        }
        acked += 1;
    }
    std::mem::forget(engine); // a crash: no shutdown, no drop-time sync
    acked
}

fn read_all(engine: &Engine) -> State {
    let mut out = State::new();
    for cf in engine.list_column_families().unwrap() {
        let tx = engine.begin_tx(cf.id(), TransactionMode::ReadOnly).unwrap();
        for (k, v) in tx.scan(&Query::new()).unwrap().try_collect().unwrap() {
            out.insert((cf.name().to_string(), k.to_vec()), v.to_vec());
        }
    }
    out
}

#[derive(Debug, Default)]
struct Figures {
    workloads: u64,
    crash_points: u64,
    states: BTreeMap<&'static str, u64>,
    recovery_crash_states: u64,
    violations: Vec<String>,
}

fn check(img: &SimFs, states: &[State], acked: usize, what: &str, fig: &mut Figures) -> bool {
    let engine = match Engine::open(options(img)) {
        Ok(e) => e,
        Err(e) => {
            fig.violations.push(format!("{what}: open failed: {e}"));
            return false;
        }
    };
    let got = read_all(&engine);
    // Recovery metrics must agree with what could have been replayed: never more WAL records than commits
    // issued, and bytes exactly when records.
    let r = engine.get_recovery_metrics().unwrap();
    let issued = states.len() as u64; // an upper bound on commit records in any image
    if r.wal_recovery_records_replayed > issued
        || (r.wal_recovery_records_replayed == 0) != (r.wal_recovery_bytes_replayed == 0)
    {
        fig.violations
            .push(format!("{what}: recovery metrics inconsistent: {r:?}"));
    }
    let hi = (acked + 1).min(states.len() - 1);
    let ok = (acked..=hi).any(|k| states[k] == got);
    if !ok {
        let detail = if got.len() < states[acked].len() {
            "lost acknowledged data"
        } else {
            "hole or invented data"
        };
        fig.violations.push(format!(
            "{what}: state matches no boundary in {acked}..={hi} ({detail})"
        ));
    }
    std::mem::forget(engine);
    ok
}

#[test]
fn every_crash_point_under_every_persistence_model_recovers_an_acknowledged_boundary() {
    let seeds: u64 = std::env::var("MIDGE_SWEEP_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    let mut fig = Figures::default();
    for (name, steps) in workloads() {
        fig.workloads += 1;
        let mut states = vec![State::new()];
        for s in &steps {
            let mut next = states.last().unwrap().clone();
            apply(&mut next, s);
            states.push(next);
        }
        let probe = SimFs::new();
        let acked = run(&probe, &steps);
        assert_eq!(
            acked,
            steps.len(),
            "{name}: the clean run must acknowledge every step"
        );
        let total = probe.op_count();
        assert!(total > 50, "{name}: too little I/O to sweep ({total})");
        for n in 0..total {
            let fs = SimFs::new();
            fs.crash_at(Some(n));
            let acked = run(&fs, &steps);
            fig.crash_points += 1;
            for model in PersistenceModel::ALL {
                let runs = match model {
                    PersistenceModel::ProcessCrash | PersistenceModel::DropUnsynced => 1,
                    _ => seeds,
                };
                for seed in 0..runs {
                    let img = fs.crash_image(model, n * 1000 + seed);
                    let label = format!("{name} op {n} {model:?} seed {seed}");
                    *fig.states.entry(model_name(model)).or_default() += 1;
                    if !check(&img, &states, acked, &label, &mut fig) {
                        continue;
                    }
                    // Crash during recovery too (for the strictest model): every op of the reopen, then again.
                    if model == PersistenceModel::DropUnsynced && n % 3 == 0 {
                        let img = fs.crash_image(model, seed);
                        let rec_ops = {
                            let probe = img.crash_image(PersistenceModel::ProcessCrash, 0);
                            std::mem::forget(Engine::open(options(&probe)));
                            probe.op_count()
                        };
                        for m in 0..rec_ops {
                            let again = img.crash_image(PersistenceModel::ProcessCrash, 0);
                            again.crash_at(Some(m));
                            std::mem::forget(Engine::open(options(&again)));
                            let after = again.crash_image(PersistenceModel::DropUnsynced, m);
                            fig.recovery_crash_states += 1;
                            check(
                                &after,
                                &states,
                                acked,
                                &format!("{label} recovery-crash {m}"),
                                &mut fig,
                            );
                        }
                    }
                }
            }
        }
    }
    let total_states: u64 = fig.states.values().sum::<u64>() + fig.recovery_crash_states;
    println!(
        "{{\"sweep\":\"crash\",\"workloads\":{},\"crash_points\":{},\"states_checked\":{},\"by_model\":{{{}}},\"recovery_crash_states\":{},\"violations\":{}}}",
        fig.workloads,
        fig.crash_points,
        total_states,
        fig.states
            .iter()
            .map(|(k, v)| format!("\"{k}\":{v}"))
            .collect::<Vec<_>>()
            .join(","),
        fig.recovery_crash_states,
        fig.violations.len()
    );
    for v in fig.violations.iter().take(10) {
        eprintln!("violation: {v}");
    }
    assert!(
        fig.violations.is_empty(),
        "{} violations, first: {}",
        fig.violations.len(),
        fig.violations[0]
    );
}

fn model_name(m: PersistenceModel) -> &'static str {
    match m {
        PersistenceModel::ProcessCrash => "P0_process_crash",
        PersistenceModel::DropUnsynced => "P1_drop_unsynced",
        PersistenceModel::RandomPrefix => "P2_random_prefix",
        PersistenceModel::PageTear => "P3_page_tear",
    }
}

/// I/O-error sweep: every mutating op fails once, then persistently, with EIO or ENOSPC. After the first
/// failure no step may be acknowledged (no retry-and-trust), the error is typed, and the post-crash image
/// recovers an acknowledged boundary.
#[test]
fn every_io_error_is_typed_never_followed_by_an_acknowledgement_and_recovers() {
    let mut fig = Figures::default();
    let mut injected = 0u64;
    for (name, steps) in workloads() {
        fig.workloads += 1;
        let mut states = vec![State::new()];
        for s in &steps {
            let mut next = states.last().unwrap().clone();
            apply(&mut next, s);
            states.push(next);
        }
        let probe = SimFs::new();
        run(&probe, &steps);
        let total = probe.op_count();
        for n in 0..total {
            for (persistent, nospace) in [(false, false), (true, false), (false, true)] {
                let fs = SimFs::new();
                fs.fail_at(n, persistent, nospace);
                let acked_before = acked_until_error(&fs, &steps, &mut fig, &format!("{name} op {n}"));
                injected += fs.errors_injected();
                fig.crash_points += 1;
                let img = fs.crash_image(PersistenceModel::DropUnsynced, n);
                *fig.states.entry("P1_after_io_error").or_default() += 1;
                check(
                    &img,
                    &states,
                    acked_before,
                    &format!("{name} io-error op {n} persistent={persistent}"),
                    &mut fig,
                );
            }
        }
    }
    println!(
        "{{\"sweep\":\"io_error\",\"workloads\":{},\"error_plans\":{},\"errors_injected\":{injected},\"violations\":{}}}",
        fig.workloads,
        fig.crash_points,
        fig.violations.len()
    );
    for v in fig.violations.iter().take(10) {
        eprintln!("violation: {v}");
    }
    assert!(injected > 0);
    assert!(
        fig.violations.is_empty(),
        "{} violations, first: {}",
        fig.violations.len(),
        fig.violations[0]
    );
}

/// Runs the workload; returns the steps acknowledged before the first failure and records a violation if any
/// step is acknowledged after one.
fn acked_until_error(fs: &SimFs, steps: &[Step], fig: &mut Figures, label: &str) -> usize {
    let Ok(engine) = Engine::open(options(fs)) else {
        return 0;
    };
    let mut acked = 0;
    for step in steps {
        // The contract: never acknowledge after a failed fsync or a failed write of durable data. A failed
        // cleanup (removing an obsolete file) may go unnoticed: orphans are removed at open. A step whose own
        // durability point came before a failure it triggered (an inline flush after the commit's fsync) is
        // rightly acknowledged; so only failures before the step starts count.
        let failed_before = fs
            .failed_kinds()
            .iter()
            .any(|k| matches!(*k, "sync" | "write" | "create" | "set_len"));
        let r = exec(&engine, step);
        match r {
            Ok(()) if failed_before => {
                fig.violations.push(format!(
                    "{label}: step acknowledged after a failed {:?}",
                    fs.failed_kinds()
                ));
                return acked;
            }
            Ok(()) => acked += 1,
            Err(e) => {
                let typed = matches!(
                    e,
                    MidgeError::Poisoned(_)
                        | MidgeError::Io(_)
                        | MidgeError::NoSpace(_)
                        | MidgeError::NotFound
                );
                if !typed {
                    fig.violations.push(format!("{label}: unexpected error kind {e}"));
                }
            }
        }
    }
    std::mem::forget(engine);
    acked
}

/// Corruption sweep: flip bits across every durable file of a finished database. Each flip is detected as a
/// typed error, or harmless (the exact final state), or reported as a torn WAL tail (a suffix of commits
/// dropped with `wal_torn_tail_bytes_truncated > 0`). Anything else is a silent corruption.
#[test]
fn every_bit_flip_is_detected_harmless_or_reported_never_silent() {
    let (mut flips, mut detected, mut harmless, mut torn) = (0u64, 0u64, 0u64, 0u64);
    let mut silent = Vec::new();
    for (name, steps) in workloads() {
        let mut states = vec![State::new()];
        for s in &steps {
            let mut next = states.last().unwrap().clone();
            apply(&mut next, s);
            states.push(next);
        }
        let fs = SimFs::new();
        run(&fs, &steps);
        let base = fs.crash_image(PersistenceModel::DropUnsynced, 0);
        let mut rng = cntryl_midge::runtime::SeededRng::new(11);
        for (path, size) in base.files() {
            if size == 0 || path.ends_with(".tmp") || path == "LOCK" {
                continue;
            }
            for _ in 0..24 {
                let img = base.crash_image(PersistenceModel::ProcessCrash, 0);
                let at = rng.below(size);
                img.flip_bit(&path, at, rng.below(8) as u8);
                flips += 1;
                let outcome = Engine::open(options(&img)).and_then(|e| {
                    let state =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| read_all_checked(&e)))
                            .map_err(|_| MidgeError::Internal("panic while reading".into()))??;
                    let r = e.get_recovery_metrics()?;
                    let torn = r.wal_torn_tail_bytes_truncated > 0 || r.manifest_torn_edit_dropped;
                    std::mem::forget(e);
                    Ok((state, torn))
                });
                match outcome {
                    Err(MidgeError::Internal(m)) => silent.push(format!("{name} {path}@{at}: {m}")),
                    Err(_) => detected += 1,
                    Ok((state, _)) if state == *states.last().unwrap() => harmless += 1,
                    Ok((state, true)) if states.contains(&state) => torn += 1,
                    Ok(_) => silent.push(format!("{name} {path}@{at}: wrong data, no error")),
                }
            }
        }
    }
    println!(
        "{{\"sweep\":\"corruption\",\"flips\":{flips},\"detected\":{detected},\"harmless\":{harmless},\"reported_torn_tail\":{torn},\"silent\":{}}}",
        silent.len()
    );
    for s in silent.iter().take(10) {
        eprintln!("silent: {s}");
    }
    assert!(detected > 0);
    assert!(
        silent.is_empty(),
        "{} silent corruptions, first: {}",
        silent.len(),
        silent[0]
    );
}

fn read_all_checked(engine: &Engine) -> MidgeResult<State> {
    let mut out = State::new();
    for cf in engine.list_column_families()? {
        let tx = engine.begin_tx(cf.id(), TransactionMode::ReadOnly)?;
        for (k, v) in tx.scan(&Query::new())?.try_collect()? {
            out.insert((cf.name().to_string(), k.to_vec()), v.to_vec());
        }
    }
    Ok(out)
}
