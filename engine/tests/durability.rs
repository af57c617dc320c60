//! Durability and recovery: restart keeps committed writes, torn tails are cut and reported, corruption fails
//! Strict and is salvaged explicitly, a failed fsync is never acknowledged, group commit shares fsyncs, and
//! bad directories or files produce typed errors.
#![allow(clippy::disallowed_methods)] // tests drive real threads, files and clocks

mod common;

use common::{get, put};

use cntryl_midge::prelude::*;
use cntryl_midge::storage::SharedFs;
use cntryl_midge::{EngineHealth, RecoveryPolicy};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Barrier};
use std::time::Duration;

fn wal_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    v.sort();
    v
}

#[test]
fn committed_writes_survive_restart_and_metrics_report_the_replay() {
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = Engine::open(OpenOptions::local(dir.path()).build()).unwrap();
        let cf = engine.create_column_family("users").unwrap();
        for i in 0..20 {
            let mut tx = engine.begin_tx(cf.id(), TransactionMode::ReadWrite).unwrap();
            tx.put(format!("k{i}").into_bytes(), format!("v{i}").into_bytes(), None)
                .unwrap();
            tx.commit(if i % 2 == 0 {
                WriteOptions::sync()
            } else {
                WriteOptions::buffered()
            })
            .unwrap();
        }
        let m = engine.get_runtime_metrics().unwrap();
        assert_eq!(m.commits_total, 20);
        assert!(
            m.wal_fsync_count >= 10,
            "every sync commit is covered by an fsync"
        );
    }
    let engine = Engine::open(OpenOptions::local(dir.path()).build()).unwrap();
    let cf = engine
        .get_column_family("users")
        .expect("column family persisted");
    let tx = engine.begin_tx(cf.id(), TransactionMode::ReadOnly).unwrap();
    for i in 0..20 {
        assert_eq!(
            tx.get(format!("k{i}").as_bytes()).unwrap().unwrap(),
            format!("v{i}").as_bytes()
        );
    }
    let r = engine.get_recovery_metrics().unwrap();
    assert_eq!(r.wal_recovery_records_replayed, 20);
    assert!(r.wal_recovery_bytes_replayed > 20 * 20);
    assert_eq!(engine.get_runtime_metrics().unwrap().current_sequence, 20 * 3);
}

#[test]
fn best_effort_commits_are_visible_but_not_recovered() {
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = Engine::open(OpenOptions::local(dir.path()).build()).unwrap();
        put(&engine, "durable", "1", WriteOptions::sync()).unwrap();
        put(&engine, "volatile", "2", WriteOptions::best_effort()).unwrap();
        assert_eq!(get(&engine, "volatile").as_deref(), Some("2"));
    }
    let engine = Engine::open(OpenOptions::local(dir.path()).build()).unwrap();
    assert_eq!(get(&engine, "durable").as_deref(), Some("1"));
    assert_eq!(get(&engine, "volatile"), None);
}

#[test]
fn a_torn_wal_tail_is_truncated_reported_and_the_prefix_kept() {
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = Engine::open(OpenOptions::local(dir.path()).build()).unwrap();
        put(&engine, "a", "1", WriteOptions::sync()).unwrap();
        put(&engine, "b", "2", WriteOptions::sync()).unwrap();
    }
    let seg = wal_files(dir.path()).pop().unwrap();
    let len = std::fs::metadata(&seg).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(len - 5).unwrap();
    drop(f);
    let engine = Engine::open(OpenOptions::local(dir.path()).build()).unwrap();
    assert_eq!(get(&engine, "a").as_deref(), Some("1"));
    assert_eq!(
        get(&engine, "b"),
        None,
        "the torn transaction is absent as a whole"
    );
    let r = engine.get_recovery_metrics().unwrap();
    assert_eq!(r.wal_recovery_records_replayed, 1);
    assert!(r.wal_torn_tail_bytes_truncated > 0);
    assert_eq!(
        engine.get_runtime_metrics().unwrap().health,
        EngineHealth::Healthy
    );
    // New writes after the repaired tail survive the next restart.
    put(&engine, "c", "3", WriteOptions::sync()).unwrap();
    drop(engine);
    let engine = Engine::open(OpenOptions::local(dir.path()).build()).unwrap();
    assert_eq!(get(&engine, "a").as_deref(), Some("1"));
    assert_eq!(get(&engine, "c").as_deref(), Some("3"));
}

#[test]
fn mid_log_corruption_fails_strict_and_salvage_keeps_the_verified_prefix() {
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = Engine::open(OpenOptions::local(dir.path()).build()).unwrap();
        for i in 0..5 {
            put(&engine, &format!("k{i}"), "v", WriteOptions::sync()).unwrap();
        }
    }
    let seg = wal_files(dir.path()).pop().unwrap();
    let mut data = std::fs::read(&seg).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0xFF;
    std::fs::write(&seg, &data).unwrap();
    let err = Engine::open(OpenOptions::local(dir.path()).build()).unwrap_err();
    assert!(matches!(err, MidgeError::RecoveryFailed(_)), "{err}");
    assert_eq!(err.severity(), cntryl_midge::Severity::Fatal);
    let report = Engine::verify_path(dir.path()).unwrap();
    assert_eq!(
        report.health,
        EngineHealth::Corrupt,
        "verification reports, never repairs"
    );
    let engine = Engine::open(
        OpenOptions::local(dir.path())
            .recovery_policy(RecoveryPolicy::Salvage)
            .build(),
    )
    .unwrap();
    assert_eq!(
        engine.get_runtime_metrics().unwrap().health,
        EngineHealth::SalvageMode
    );
    let r = engine.get_recovery_metrics().unwrap();
    assert!(r.salvage_report.is_some());
    let kept = r.wal_recovery_records_replayed;
    assert!((1..5).contains(&kept), "a strict prefix was kept: {kept}");
    for i in 0..5u64 {
        assert_eq!(
            get(&engine, &format!("k{i}")).is_some(),
            i < kept,
            "no holes: key {i}"
        );
    }
}

#[test]
fn a_failed_fsync_is_never_acknowledged_and_poisons_the_engine() {
    let fault = common::FaultFs::new();
    let fail = fault.fail_syncs.clone();
    let fs: SharedFs = Arc::new(fault);
    let engine = Engine::open(OpenOptions::with_file_system(fs.clone()).build()).unwrap();
    put(&engine, "before", "1", WriteOptions::sync()).unwrap();
    fail.store(true, Ordering::SeqCst);
    let err = put(&engine, "during", "2", WriteOptions::sync()).unwrap_err();
    assert!(matches!(err, MidgeError::Poisoned(_)), "{err}");
    assert_eq!(
        get(&engine, "during"),
        None,
        "an unacknowledged commit is never made visible"
    );
    fail.store(false, Ordering::SeqCst);
    // Even with the device healthy again, nothing more is acknowledged: no retry-and-trust.
    for opts in [
        WriteOptions::sync(),
        WriteOptions::buffered(),
        WriteOptions::best_effort(),
    ] {
        assert!(matches!(
            put(&engine, "after", "3", opts),
            Err(MidgeError::Poisoned(_))
        ));
    }
    assert!(matches!(
        engine.create_column_family("x"),
        Err(MidgeError::Poisoned(_))
    ));
    assert_eq!(
        engine.get_runtime_metrics().unwrap().health,
        EngineHealth::Poisoned
    );
    assert_eq!(get(&engine, "before").as_deref(), Some("1"), "reads keep working");
    drop(engine);
    let engine = Engine::open(OpenOptions::with_file_system(fs).build()).unwrap();
    assert_eq!(get(&engine, "before").as_deref(), Some("1"));
    put(&engine, "after-reopen", "4", WriteOptions::sync()).unwrap();
}

#[test]
fn concurrent_sync_writers_share_fsyncs_and_stay_atomic() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(Engine::open(OpenOptions::local(dir.path()).build()).unwrap());
    let writers = 8;
    let per = 40;
    let barrier = Arc::new(Barrier::new(writers));
    let handles: Vec<_> = (0..writers)
        .map(|w| {
            let engine = engine.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                for i in 0..per {
                    let mut tx = engine.begin_tx(0, TransactionMode::ReadWrite).unwrap();
                    for part in ["a", "b", "c"] {
                        tx.put(
                            format!("w{w}-{i}-{part}").into_bytes(),
                            format!("{i}").into_bytes(),
                            None,
                        )
                        .unwrap();
                    }
                    tx.commit(WriteOptions::sync()).unwrap();
                }
            })
        })
        .collect();
    // A reader that must only ever see whole transactions.
    let reader = {
        let engine = engine.clone();
        std::thread::spawn(move || {
            for _ in 0..200 {
                let tx = engine.begin_tx(0, TransactionMode::ReadOnly).unwrap();
                let rows = tx.scan(&Query::new()).unwrap().try_collect().unwrap();
                assert_eq!(rows.len() % 3, 0, "a transaction was partially visible");
                let again = tx.scan(&Query::new()).unwrap().try_collect().unwrap();
                assert_eq!(rows, again, "snapshot reads are repeatable");
            }
        })
    };
    for h in handles {
        h.join().unwrap();
    }
    reader.join().unwrap();
    let m = engine.get_runtime_metrics().unwrap();
    let commits = (writers * per) as u64;
    assert_eq!(m.commits_total, commits);
    assert!(m.wal_fsync_count <= commits, "never more fsyncs than commits");
    let engine = Arc::try_unwrap(engine).unwrap();
    drop(engine);
    let engine = Engine::open(OpenOptions::local(dir.path()).build()).unwrap();
    let tx = engine.begin_tx(0, TransactionMode::ReadOnly).unwrap();
    assert_eq!(tx.scan(&Query::new()).unwrap().count(), writers * per * 3);
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _engine = Engine::open(OpenOptions::local(dir.path()).build()).unwrap();
    let err = Engine::open(OpenOptions::local(dir.path()).build()).unwrap_err();
    assert!(matches!(err, MidgeError::LeaseHeld(_)), "{err}");
}

#[test]
fn foreign_directories_future_formats_and_garbage_files_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "hello").unwrap();
    let err = Engine::open(OpenOptions::local(dir.path()).build()).unwrap_err();
    assert!(matches!(err, MidgeError::CompatibilityError(_)), "{err}");

    let dir = tempfile::tempdir().unwrap();
    drop(Engine::open(OpenOptions::local(dir.path()).build()).unwrap());
    std::fs::write(dir.path().join("FORMAT"), "midge-format=99\n").unwrap();
    let err = Engine::open(OpenOptions::local(dir.path()).build()).unwrap_err();
    assert!(matches!(err, MidgeError::CompatibilityError(_)), "{err}");
    std::fs::write(dir.path().join("FORMAT"), [0xff, 0x00, 0x13]).unwrap();
    assert!(matches!(
        Engine::open(OpenOptions::local(dir.path()).build()),
        Err(MidgeError::CompatibilityError(_))
    ));

    let dir = tempfile::tempdir().unwrap();
    drop(Engine::open(OpenOptions::local(dir.path()).build()).unwrap());
    std::fs::write(dir.path().join("CURRENT"), "garbage").unwrap();
    assert!(matches!(
        Engine::open(OpenOptions::local(dir.path()).build()),
        Err(MidgeError::Corruption(_))
    ));

    let dir = tempfile::tempdir().unwrap();
    drop(Engine::open(OpenOptions::local(dir.path()).build()).unwrap());
    let current = std::fs::read_to_string(dir.path().join("CURRENT")).unwrap();
    std::fs::write(dir.path().join(current.trim()), vec![0x5a; 100]).unwrap();
    assert!(Engine::open(OpenOptions::local(dir.path()).build()).is_err());

    let file = tempfile::NamedTempFile::new().unwrap();
    assert!(
        Engine::open(OpenOptions::local(file.path()).build()).is_err(),
        "a plain file is not a database"
    );
}

#[test]
fn every_wal_byte_flip_is_either_detected_or_harmless() {
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = Engine::open(OpenOptions::local(dir.path()).build()).unwrap();
        for i in 0..3 {
            put(&engine, &format!("k{i}"), &format!("v{i}"), WriteOptions::sync()).unwrap();
        }
    }
    let seg = wal_files(dir.path()).pop().unwrap();
    let pristine = std::fs::read(&seg).unwrap();
    for i in 0..pristine.len() {
        let mut data = pristine.clone();
        data[i] ^= 0x01;
        std::fs::write(&seg, &data).unwrap();
        match Engine::open(OpenOptions::local(dir.path()).build()) {
            Err(e) => assert!(
                matches!(e, MidgeError::RecoveryFailed(_) | MidgeError::Corruption(_)),
                "{e}"
            ),
            Ok(engine) => {
                // Only a flip in the final frame can read as a torn tail; then the earlier frames are intact.
                for k in 0..3 {
                    if let Some(v) = get(&engine, &format!("k{k}")) {
                        assert_eq!(v, format!("v{k}"), "never a wrong value (flip at {i})");
                    }
                }
            }
        }
        // Restore (recovery may have truncated the file).
        for p in wal_files(dir.path()) {
            std::fs::remove_file(p).unwrap();
        }
        std::fs::write(&seg, &pristine).unwrap();
    }
}

#[test]
fn shutdown_is_busy_while_transactions_live_and_then_refuses_work() {
    let mut engine = Engine::open(OpenOptions::in_memory().build()).unwrap();
    let tx = engine.begin_tx(0, TransactionMode::ReadOnly).unwrap();
    assert!(matches!(
        engine.shutdown(Duration::from_secs(1)),
        Err(MidgeError::Busy(_))
    ));
    assert!(matches!(
        engine.begin_tx(0, TransactionMode::ReadOnly),
        Err(MidgeError::InvalidArgument(_))
    ));
    drop(tx);
    engine.shutdown(Duration::from_secs(1)).unwrap();
    assert!(engine.get_column_family("default").is_none());
    assert!(engine.create_column_family("x").is_err());
}

/// Buffered commits never return with a megabyte or more of log unsynced, whether the background syncer
/// (nudged halfway) or the committing thread ran the fsync.
#[test]
fn buffered_commits_stay_within_the_unsynced_bound() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(OpenOptions::local(dir.path()).build()).unwrap();
    let value = vec![7u8; 4000];
    for i in 0..1500u32 {
        let mut tx = engine.begin_tx(0, TransactionMode::ReadWrite).unwrap();
        tx.put(format!("k{i:05}").into_bytes(), value.clone(), None)
            .unwrap();
        tx.commit(WriteOptions::buffered()).unwrap();
        let m = engine.get_runtime_metrics().unwrap();
        assert!(
            m.wal_pending_bytes < 1 << 20,
            "commit {i} returned with {} bytes unsynced",
            m.wal_pending_bytes
        );
    }
    // ≈ 6 MiB logged: at least one fsync per megabyte.
    assert!(engine.get_runtime_metrics().unwrap().wal_fsync_count >= 5);
}

/// An executor whose time is its own (as a simulator's would be): threads for jobs, but it counts every wait
/// the engine asks of it.
#[derive(Debug, Default)]
struct CountingExecutor {
    threads: cntryl_midge::runtime::ThreadExecutor,
    sleeps: std::sync::atomic::AtomicU64,
}

impl cntryl_midge::runtime::Executor for CountingExecutor {
    fn spawn(&self, name: &str, job: cntryl_midge::runtime::Job) {
        self.threads.spawn(name, job);
    }
    fn is_inline(&self) -> bool {
        false
    }
    fn sleep(&self, d: Duration) {
        self.sleeps.fetch_add(1, Ordering::Relaxed);
        std::thread::sleep(d);
    }
}

/// The WAL syncer parks its thread (to be nudged awake) only on an executor that sleeps in real time; on any
/// other every wait goes through the executor's `sleep`, so a simulated clock stays in charge.
#[test]
fn the_wal_syncer_waits_through_an_executors_own_sleep() {
    let dir = tempfile::tempdir().unwrap();
    let exec = Arc::new(CountingExecutor::default());
    let engine = Engine::open(OpenOptions::local(dir.path()).executor(exec.clone()).build()).unwrap();
    let mut tx = engine.begin_tx(0, TransactionMode::ReadWrite).unwrap();
    tx.put(b"k".to_vec(), b"v".to_vec(), None).unwrap();
    tx.commit(WriteOptions::buffered()).unwrap();
    let start = std::time::Instant::now();
    while exec.sleeps.load(Ordering::Relaxed) < 2 && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        exec.sleeps.load(Ordering::Relaxed) >= 2,
        "the syncer never waited through the executor"
    );
}
