//! The crash-consistency sweeps run through the component, in lockstep with the native engine.
//!
//! The host serves the guest's `cntryl:midge/fs` import from the same deterministic `SimFs` the native sweeps
//! use, so for every workload (shared with `engine/tests/crash_sweep.rs` via `common/sweep.rs`) we can demand:
//! - the native and component **I/O traces** (op kind, path, offset, length, data hash) are byte-identical —
//!   for the clean run, for every crash point, for every recovery, and for every injected I/O error;
//! - the **verdicts** are identical: the same steps acknowledged, the same crash images, the same oracle
//!   outcome after recovering natively and through the component, the same error kinds.
//!
//! Prints one JSON line of figures; any divergence or violation fails the test.
#![allow(clippy::disallowed_methods)]

#[path = "../../engine/tests/common/sweep.rs"]
mod sweep;

use cntryl_midge::prelude::*;
use cntryl_midge::storage::sim::{PersistenceModel, SimFs, TraceOp};
use midge_host::{ComponentEngine, ComponentHost, ComponentOptions};
use std::sync::{Arc, OnceLock};
use sweep::{Op, State, Step, SweepDb, open_native, states_of, verdict, workloads};

fn host() -> &'static ComponentHost {
    static HOST: OnceLock<ComponentHost> = OnceLock::new();
    HOST.get_or_init(|| ComponentHost::load(midge_conformance::plugin_component()).expect("load the plugin"))
}

/// The component client as a [`SweepDb`].
struct Wasm(ComponentEngine);

fn open_wasm(fs: &SimFs) -> MidgeResult<Wasm> {
    let opts = ComponentOptions {
        memtable_bytes: Some(sweep::MEMTABLE_BYTES),
        l0_compaction_trigger: Some(sweep::L0_TRIGGER),
        target_sst_bytes: Some(sweep::TARGET_SST_BYTES),
        wal_segment_bytes: Some(sweep::WAL_SEGMENT_BYTES),
        fixed_clock_millis: Some(sweep::CLOCK_MILLIS),
        ..Default::default()
    };
    ComponentEngine::open_with_file_system(host(), Arc::new(fs.clone()), opts).map(Wasm)
}

impl SweepDb for Wasm {
    fn cf_id(&self, name: &str) -> Option<u32> {
        self.0.get_column_family(name)
    }
    fn commit(&self, cf: u32, ops: &[Op], ttl: Option<u64>) -> MidgeResult<()> {
        let mut tx = self.0.begin_tx(cf, TransactionMode::ReadWrite)?;
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
        self.0.create_column_family(name).map(|_| ())
    }
    fn drop_cf_discarding(&self, cf: u32) -> MidgeResult<()> {
        self.0.drop_column_family_discarding_unflushed(cf)
    }
    fn flush(&self, cf: u32) -> MidgeResult<()> {
        self.0.flush_cf(cf)
    }
    fn compact(&self) -> MidgeResult<()> {
        self.0.compact_all()
    }
    fn read_all(&self) -> MidgeResult<State> {
        let mut out = State::new();
        for (id, name) in self.0.list_column_families()? {
            let tx = self.0.begin_tx(id, TransactionMode::ReadOnly)?;
            for (k, v) in tx.scan(&Query::new())? {
                out.insert((name.clone(), k.to_vec()), v.to_vec());
            }
        }
        Ok(out)
    }
    fn replayed(&self) -> MidgeResult<(u64, u64)> {
        let r = self.0.get_recovery_metrics()?;
        Ok((r.wal_recovery_records_replayed, r.wal_recovery_bytes_replayed))
    }
    fn crash(self) {
        self.0.abandon();
    }
}

#[derive(Debug, Default)]
struct Figures {
    workloads: u64,
    crash_points: u64,
    states: u64,
    recoveries_compared: u64,
    io_error_plans: u64,
    ops_compared: u64,
    violations: Vec<String>,
    divergences: Vec<String>,
}

impl Figures {
    /// Compares two traces op for op; records the first difference.
    fn same_trace(&mut self, what: &str, native: &[TraceOp], wasm: &[TraceOp]) -> bool {
        self.ops_compared += native.len() as u64;
        if native == wasm {
            return true;
        }
        let i = native.iter().zip(wasm).take_while(|(a, b)| a == b).count();
        self.divergences.push(format!(
            "{what}: traces differ at op {i} of {}/{}: native {:?} vs component {:?}",
            native.len(),
            wasm.len(),
            native.get(i),
            wasm.get(i)
        ));
        false
    }

    fn report(&self, sweep: &str) {
        println!(
            "{{\"sweep\":\"{sweep}\",\"workloads\":{},\"crash_points\":{},\"states_checked\":{},\"recoveries_compared\":{},\"io_error_plans\":{},\"io_ops_compared\":{},\"violations\":{},\"divergences\":{}}}",
            self.workloads,
            self.crash_points,
            self.states,
            self.recoveries_compared,
            self.io_error_plans,
            self.ops_compared,
            self.violations.len(),
            self.divergences.len()
        );
        for v in self.violations.iter().chain(&self.divergences).take(10) {
            eprintln!("{v}");
        }
        assert!(
            self.violations.is_empty(),
            "violations: {:?}",
            &self.violations[..1]
        );
        assert!(
            self.divergences.is_empty(),
            "divergences: {:?}",
            &self.divergences[..1]
        );
    }
}

/// Recovers `img` natively and a copy of it through the component; both must reach the same verdict with the
/// same recovery I/O.
fn recover_both(img: &SimFs, states: &[State], acked: usize, what: &str, fig: &mut Figures) {
    let (a, b) = (
        img.crash_image(PersistenceModel::ProcessCrash, 0),
        img.crash_image(PersistenceModel::ProcessCrash, 0),
    );
    let native = verdict(open_native(&a), states, acked);
    let wasm = verdict(open_wasm(&b), states, acked);
    fig.states += 1;
    fig.recoveries_compared += 1;
    fig.same_trace(&format!("{what} recovery"), &a.trace(), &b.trace());
    if native != wasm {
        fig.divergences.push(format!(
            "{what}: verdicts differ: native {native:?} vs component {wasm:?}"
        ));
    }
    if let Err(v) = wasm {
        fig.violations.push(format!("{what}: {v}"));
    }
}

/// Crash before every I/O op of every workload, natively and in the component: identical traces, identical
/// acknowledgements, identical crash images and identical verdicts after recovery under every persistence model.
#[test]
fn every_crash_point_gives_identical_io_and_verdicts_natively_and_in_the_component() {
    let seeds: u64 = std::env::var("MIDGE_PARITY_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let mut fig = Figures::default();
    for (name, steps) in workloads() {
        fig.workloads += 1;
        let states = states_of(&steps);
        let (pn, pw) = (SimFs::new(), SimFs::new());
        let acked_n = sweep::run(open_native(&pn), &steps);
        let acked_w = sweep::run(open_wasm(&pw), &steps);
        assert_eq!(
            acked_w,
            steps.len(),
            "{name}: the clean component run must acknowledge every step"
        );
        assert_eq!(acked_n, acked_w);
        fig.same_trace(&format!("{name} clean run"), &pn.trace(), &pw.trace());
        let total = pn.op_count();
        for n in 0..total {
            let (fs_n, fs_w) = (SimFs::new(), SimFs::new());
            fs_n.crash_at(Some(n));
            fs_w.crash_at(Some(n));
            let acked_n = sweep::run(open_native(&fs_n), &steps);
            let acked = sweep::run(open_wasm(&fs_w), &steps);
            fig.crash_points += 1;
            let what = format!("{name} crash at op {n}");
            if acked_n != acked {
                fig.divergences.push(format!(
                    "{what}: acknowledged {acked_n} natively, {acked} in the component"
                ));
            }
            if !fig.same_trace(&what, &fs_n.trace(), &fs_w.trace()) {
                continue;
            }
            for model in PersistenceModel::ALL {
                let runs = match model {
                    PersistenceModel::ProcessCrash | PersistenceModel::DropUnsynced => 1,
                    _ => seeds,
                };
                for seed in 0..runs {
                    let img = fs_w.crash_image(model, n * 1000 + seed);
                    if img.files() != fs_n.crash_image(model, n * 1000 + seed).files() {
                        fig.divergences
                            .push(format!("{what} {model:?}: crash images differ"));
                    }
                    recover_both(
                        &img,
                        &states,
                        acked,
                        &format!("{what} {model:?} seed {seed}"),
                        &mut fig,
                    );
                }
            }
        }
    }
    fig.report("component_crash_parity");
}

/// Every op fails once (EIO), persistently (EIO), or with ENOSPC, natively and in the component: the same
/// steps acknowledged, the same typed error kinds, identical traces, and identical recovery verdicts.
#[test]
fn every_io_error_gives_identical_outcomes_natively_and_in_the_component() {
    let mut fig = Figures::default();
    for (name, steps) in workloads() {
        fig.workloads += 1;
        let states = states_of(&steps);
        let probe = SimFs::new();
        sweep::run(open_native(&probe), &steps);
        for n in 0..probe.op_count() {
            for (persistent, nospace) in [(false, false), (true, false), (false, true)] {
                let (fs_n, fs_w) = (SimFs::new(), SimFs::new());
                fs_n.fail_at(n, persistent, nospace);
                fs_w.fail_at(n, persistent, nospace);
                let out_n = outcome(open_native(&fs_n), &steps);
                let out_w = outcome(open_wasm(&fs_w), &steps);
                fig.io_error_plans += 1;
                let what = format!("{name} fail op {n} persistent={persistent} nospace={nospace}");
                if out_n != out_w {
                    fig.divergences
                        .push(format!("{what}: native {out_n:?} vs component {out_w:?}"));
                }
                if fig.same_trace(&what, &fs_n.trace(), &fs_w.trace()) {
                    let img = fs_w.crash_image(PersistenceModel::DropUnsynced, n);
                    recover_both(&img, &states, out_w.0, &what, &mut fig);
                }
            }
        }
    }
    fig.report("component_io_error_parity");
}

/// Runs until the first error: `(steps acknowledged, the error's kind)`.
fn outcome<D: SweepDb>(opened: MidgeResult<D>, steps: &[Step]) -> (usize, Option<String>) {
    let db = match opened {
        Ok(db) => db,
        Err(e) => return (0, Some(e.kind_name().to_string())),
    };
    let mut acked = 0;
    let mut err = None;
    for step in steps {
        match sweep::exec(&db, step) {
            Ok(()) => acked += 1,
            Err(e) => {
                err = Some(e.kind_name().to_string());
                break;
            }
        }
    }
    db.crash();
    (acked, err)
}

/// Bit flips in every durable file of each finished workload, recovered natively and through the component:
/// the same classification (typed error kind, or the exact state read back) — never a silent wrong answer.
#[test]
fn every_bit_flip_is_judged_identically_natively_and_in_the_component() {
    let mut fig = Figures::default();
    let (mut flips, mut detected) = (0u64, 0u64);
    for (name, steps) in workloads() {
        fig.workloads += 1;
        let states = states_of(&steps);
        let fs = SimFs::new();
        sweep::run(open_native(&fs), &steps);
        let base = fs.crash_image(PersistenceModel::DropUnsynced, 0);
        let mut rng = cntryl_midge::runtime::SeededRng::new(13);
        for (path, size) in base.files() {
            if size == 0 || path.ends_with(".tmp") || path == "LOCK" {
                continue;
            }
            for _ in 0..6 {
                let (at, bit) = (rng.below(size), rng.below(8) as u8);
                let judge = |open: &dyn Fn(&SimFs) -> Result<State, MidgeError>| {
                    let img = base.crash_image(PersistenceModel::ProcessCrash, 0);
                    img.flip_bit(&path, at, bit);
                    match open(&img) {
                        Err(e) => Err(e.kind_name().to_string()),
                        Ok(state) => Ok(state),
                    }
                };
                let native = judge(&|img| read_crashed(open_native(img)));
                let wasm = judge(&|img| read_crashed(open_wasm(img)));
                flips += 1;
                let what = format!("{name} {path}@{at} bit {bit}");
                match &wasm {
                    Err(_) => detected += 1,
                    Ok(state) if states.contains(state) => {}
                    Ok(_) => fig.violations.push(format!("{what}: wrong data, no error")),
                }
                if native != wasm {
                    fig.divergences
                        .push(format!("{what}: native {native:?} vs component {wasm:?}"));
                }
            }
        }
    }
    fig.states = flips;
    println!("{{\"sweep\":\"component_corruption_flips\",\"flips\":{flips},\"detected\":{detected}}}");
    assert!(
        detected > 0,
        "no flip was detected: the sweep is not reaching checksummed bytes"
    );
    fig.report("component_corruption_parity");
}

fn read_crashed<D: SweepDb>(opened: MidgeResult<D>) -> MidgeResult<State> {
    let db = opened?;
    let r = db.read_all();
    db.crash();
    r
}

/// The parity check itself can fail: the same workload with a different WAL segment size in the component
/// must be reported as a divergence.
#[test]
fn the_parity_check_catches_a_component_that_does_different_io() {
    let (_, steps) = workloads().remove(0);
    let (pn, pw) = (SimFs::new(), SimFs::new());
    sweep::run(open_native(&pn), &steps);
    let opts = ComponentOptions {
        memtable_bytes: Some(sweep::MEMTABLE_BYTES),
        wal_segment_bytes: Some(sweep::WAL_SEGMENT_BYTES * 2),
        fixed_clock_millis: Some(sweep::CLOCK_MILLIS),
        ..Default::default()
    };
    let db = ComponentEngine::open_with_file_system(host(), Arc::new(pw.clone()), opts).map(Wasm);
    sweep::run(db, &steps);
    let mut fig = Figures::default();
    assert!(!fig.same_trace("mutant", &pn.trace(), &pw.trace()));
    assert_eq!(fig.divergences.len(), 1);
}
