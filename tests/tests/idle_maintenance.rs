//! The component's deferred background work. It has no threads, so its reads never compact (the compaction
//! would run inside a read); what they pay for — folding overlapping L0 tables into L1, which the native
//! engine does on a background thread — waits for `run_pending_work`, which the host's idle maintenance calls
//! once the instance has been quiet for a while.
#![allow(clippy::disallowed_methods)]

use cntryl_midge::storage::local::LocalFs;
use cntryl_midge::{TransactionMode, WriteOptions};
use midge_host::{ComponentEngine, ComponentHost, ComponentOptions};
use std::sync::Arc;
use std::time::{Duration, Instant};

const KEYS: u32 = 2000;

fn key(i: u32) -> Vec<u8> {
    format!("key{i:06}").into_bytes()
}

/// Three overlapping L0 tables below the file-count trigger: every key in the oldest, a few newer versions in
/// the other two, so most reads consult all three.
fn open_loaded(host: &ComponentHost, dir: &std::path::Path) -> ComponentEngine {
    let opts = ComponentOptions {
        l0_compaction_trigger: Some(4),
        ..Default::default()
    };
    let e = ComponentEngine::open_with_file_system(host, Arc::new(LocalFs::new(dir.to_path_buf())), opts)
        .unwrap();
    let mut tx = e.begin_tx(0, TransactionMode::ReadWrite).unwrap();
    let rows: Vec<(Vec<u8>, Vec<u8>)> = (0..KEYS)
        .map(|i| (key(i), format!("v1-{i}").into_bytes()))
        .collect();
    tx.put_many(&rows).unwrap();
    tx.commit(WriteOptions::buffered()).unwrap();
    e.flush_cf(0).unwrap();
    for round in 2..=3u32 {
        let mut tx = e.begin_tx(0, TransactionMode::ReadWrite).unwrap();
        for i in (0..KEYS).step_by(100) {
            tx.put(key(i + round), format!("v{round}").into_bytes(), None)
                .unwrap();
        }
        tx.commit(WriteOptions::buffered()).unwrap();
        e.flush_cf(0).unwrap();
    }
    assert_eq!(e.get_runtime_metrics().unwrap().sst_count, 3);
    e
}

/// Reads every key, checking the newest version of each.
fn read_all(e: &ComponentEngine) {
    let tx = e.begin_tx(0, TransactionMode::ReadOnly).unwrap();
    for i in 0..KEYS {
        let v = tx.get(&key(i)).unwrap().unwrap();
        let want = match i % 100 {
            r @ (2 | 3) => format!("v{r}"),
            _ => format!("v1-{i}"),
        };
        assert_eq!(v, want.as_bytes(), "key {i}");
    }
}

#[test]
fn reads_pay_for_a_fold_that_runs_only_when_asked() {
    let host = ComponentHost::load(midge_conformance::plugin_component()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let e = open_loaded(&host, dir.path());
    assert!(!e.run_pending_work().unwrap(), "nothing is due before reads");
    // Far more reads than it takes to pay for the fold (one per 16 KiB of L0, checked every 64 reads).
    for _ in 0..10 {
        read_all(&e);
    }
    std::thread::sleep(Duration::from_millis(300));
    let m = e.get_runtime_metrics().unwrap();
    assert_eq!(
        (m.compactions_run, m.sst_count),
        (0, 3),
        "no read compacts, and without idle maintenance nothing runs by itself"
    );
    assert!(
        e.run_pending_work().unwrap(),
        "the fold the reads paid for runs now"
    );
    let m = e.get_runtime_metrics().unwrap();
    assert!(
        m.compactions_run >= 1 && m.sst_count == 1,
        "L0 folded into one table: {m:?}"
    );
    assert!(!e.run_pending_work().unwrap(), "and only once");
    read_all(&e);
}

#[test]
fn idle_maintenance_folds_l0_once_the_instance_is_quiet() {
    let host = ComponentHost::load(midge_conformance::plugin_component())
        .unwrap()
        .with_idle_maintenance(Duration::from_millis(20));
    let dir = tempfile::tempdir().unwrap();
    let e = open_loaded(&host, dir.path());
    for _ in 0..10 {
        read_all(&e);
    }
    // Each poll is itself a call; the spells between polls are quiet.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let m = e.get_runtime_metrics().unwrap();
        if m.sst_count == 1 {
            assert!(m.compactions_run >= 1);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "idle maintenance never folded L0: {m:?}"
        );
    }
    read_all(&e);
    assert!(!e.run_pending_work().unwrap(), "nothing was left over");
}
