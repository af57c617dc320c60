//! Exhaustive crash sweep on the `sim` file system: for each workload, crash before **every** mutating I/O
//! operation, build post-crash disk images under every persistence model (several seeds for the random ones),
//! reopen, and check against the model oracle:
//! - the engine opens (P0–P3 are within contract: an open failure is a violation);
//! - the state equals the model after `k` acknowledged steps, with `acked <= k <= acked + 1` (every
//!   acknowledged `sync()` commit present, no holes, no partial transactions, nothing invented or resurrected);
//! - recovery itself is crash-safe: crashing at every op of the recovery and recovering again gives the same.
//!
//! Prints its figures as one JSON line (`MIDGE_SWEEP_SEEDS` sets seeds per random model; default 16).

mod common;

use cntryl_midge::prelude::*;
use cntryl_midge::storage::sim::{PersistenceModel, SimFs};
use common::sweep::{State, Step, SweepDb, exec, open_native, states_of, verdict, workloads};
use std::collections::BTreeMap;

fn options(fs: &SimFs) -> OpenOptions {
    common::sweep::native_options(fs)
}

fn run(fs: &SimFs, steps: &[Step]) -> usize {
    common::sweep::run(open_native(fs), steps)
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
    match verdict(open_native(img), states, acked) {
        Ok(()) => true,
        Err(v) => {
            fig.violations.push(format!("{what}: {v}"));
            false
        }
    }
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
        let states = states_of(&steps);
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
        let states = states_of(&steps);
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
    let Ok(engine) = open_native(fs) else {
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
        let states = states_of(&steps);
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
                    let state = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| e.read_all()))
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
