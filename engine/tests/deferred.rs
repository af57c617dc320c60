//! Deferred sync commits (`Transaction::commit_deferred` + `Engine::finish_commit`): not visible and not
//! acknowledged until finished, durable once finished, never a wait on a caller that does not finish, one
//! fsync for every commit logged before it, forged tickets refused, a failed fsync never acknowledged.
#![allow(clippy::disallowed_methods)] // tests drive real threads

mod common;

use common::{get, put};

use cntryl_midge::prelude::*;
use cntryl_midge::runtime::InlineExecutor;
use cntryl_midge::storage::SharedFs;
use cntryl_midge::storage::sim::{PersistenceModel, SimFs};
use cntryl_midge::{CommitTicket, OpenOptionsBuilder};
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// Single-threaded, as inside the component: no background syncer, flushes run inline.
fn builder(fs: SharedFs) -> OpenOptionsBuilder {
    OpenOptions::with_file_system(fs).executor(Arc::new(InlineExecutor))
}

fn options(fs: SharedFs) -> OpenOptions {
    builder(fs).build().unwrap()
}

fn open(fs: &SimFs) -> Engine {
    Engine::open(options(Arc::new(fs.clone()))).unwrap()
}

fn deferred(engine: &Engine, k: &str, v: &str) -> CommitTicket {
    let mut tx = engine.begin_tx(0, TransactionMode::ReadWrite).unwrap();
    tx.put(k.as_bytes().to_vec(), v.as_bytes().to_vec(), None)
        .unwrap();
    tx.commit_deferred(WriteOptions::sync())
        .unwrap()
        .expect("a sync commit with writes is deferred")
}

fn fsyncs(engine: &Engine) -> u64 {
    engine.get_runtime_metrics().unwrap().wal_fsync_count
}

/// Runs `f` on a helper thread: a test whose broken behaviour is a wait that never ends fails instead of hanging.
fn within_a_minute(f: impl FnOnce() + Send + 'static) {
    let (tx, rx) = std::sync::mpsc::channel();
    let h = std::thread::spawn(move || {
        f();
        let _ = tx.send(());
    });
    match rx.recv_timeout(std::time::Duration::from_secs(60)) {
        Ok(()) => h.join().unwrap(),
        // The body panicked: re-raise its panic.
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            std::panic::resume_unwind(h.join().unwrap_err())
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("still waiting after a minute"),
    }
}

/// What a power loss now leaves, reopened.
fn after_power_loss(fs: &SimFs) -> Engine {
    open(&fs.crash_image(PersistenceModel::DropUnsynced, 0))
}

#[test]
fn a_deferred_commit_is_neither_visible_nor_durable_until_finished() {
    let fs = SimFs::new();
    let engine = open(&fs);
    put(&engine, "before", "0", WriteOptions::sync()).unwrap();
    let t = deferred(&engine, "k", "v");
    assert_eq!(get(&engine, "k"), None, "visible before its fsync");
    assert_eq!(engine.get_runtime_metrics().unwrap().commits_total, 1);
    let lost = after_power_loss(&fs);
    assert_eq!(get(&lost, "before").as_deref(), Some("0"));
    assert_eq!(get(&lost, "k"), None, "durable before anyone finished it");
    drop(lost);

    let covered = engine.finish_commit(t).unwrap();
    assert!(covered >= t.log_position, "{covered} < {}", t.log_position);
    assert_eq!(get(&engine, "k").as_deref(), Some("v"));
    assert_eq!(engine.get_runtime_metrics().unwrap().commits_total, 2);
    let kept = after_power_loss(&fs);
    assert_eq!(get(&kept, "k").as_deref(), Some("v"), "finished but not durable");
    // Finishing twice is harmless.
    assert!(engine.finish_commit(t).unwrap() >= covered);
}

#[test]
fn one_finish_makes_every_earlier_deferred_commit_durable_with_one_fsync() {
    let fs = SimFs::new();
    let engine = open(&fs);
    put(&engine, "warm", "0", WriteOptions::sync()).unwrap();
    let tickets: Vec<CommitTicket> = (0..5).map(|i| deferred(&engine, &format!("k{i}"), "v")).collect();
    let before = fsyncs(&engine);
    let covered = engine.finish_commit(tickets[4]).unwrap();
    assert_eq!(fsyncs(&engine), before + 1, "one fsync for five commits");
    for (i, t) in tickets.iter().enumerate() {
        assert!(t.log_position <= covered, "ticket {i} not covered");
        assert_eq!(get(&engine, &format!("k{i}")).as_deref(), Some("v"));
    }
    // Covered tickets finish without another fsync.
    for t in &tickets[..4] {
        engine.finish_commit(*t).unwrap();
    }
    assert_eq!(fsyncs(&engine), before + 1);
    let kept = after_power_loss(&fs);
    for i in 0..5 {
        assert_eq!(get(&kept, &format!("k{i}")).as_deref(), Some("v"));
    }
}

#[test]
fn commits_and_flushes_behind_an_unfinished_ticket_never_wait_for_its_caller() {
    within_a_minute(|| {
        // One thread, as inside a component: a wait for the ticket's owner would never end.
        let fs = SimFs::new();
        let engine = open(&fs);
        let a = deferred(&engine, "a", "1");
        put(&engine, "b", "2", WriteOptions::buffered()).unwrap();
        assert_eq!(
            get(&engine, "a").as_deref(),
            Some("1"),
            "published before the later commit"
        );
        assert_eq!(get(&engine, "b").as_deref(), Some("2"));
        let kept = after_power_loss(&fs);
        assert_eq!(
            get(&kept, "a").as_deref(),
            Some("1"),
            "made durable by whoever needed it visible"
        );
        drop(kept);
        engine.finish_commit(a).unwrap();

        let c = deferred(&engine, "c", "3");
        let cf = engine.get_column_family("default").unwrap();
        engine.flush_cf(&cf).unwrap();
        assert_eq!(get(&engine, "c").as_deref(), Some("3"));
        put(&engine, "d", "4", WriteOptions::sync()).unwrap();
        engine.finish_commit(c).unwrap();
        assert_eq!(engine.get_runtime_metrics().unwrap().commits_total, 4);
        let kept = after_power_loss(&fs);
        for (k, v) in [("a", "1"), ("b", "2"), ("c", "3"), ("d", "4")] {
            assert_eq!(get(&kept, k).as_deref(), Some(v), "{k}");
        }
    });
}

#[test]
fn a_commit_that_fills_its_memtable_flushes_when_finished() {
    let fs = SimFs::new();
    let engine = Engine::open(
        builder(Arc::new(fs.clone()))
            .with_memtable_size_limit(64 << 10)
            .build()
            .unwrap(),
    )
    .unwrap();
    let mut rotated = None;
    for i in 0..2000 {
        let t = deferred(&engine, &format!("key{i:05}"), &"x".repeat(100));
        if t.rotated_memtable {
            rotated = Some(t);
            break;
        }
        engine.finish_commit(t).unwrap();
    }
    let t = rotated.expect("a commit filled the 64 KiB memtable");
    let flushes = engine.get_runtime_metrics().unwrap().flush_publish_count;
    engine.finish_commit(t).unwrap();
    assert!(
        engine.get_runtime_metrics().unwrap().flush_publish_count > flushes,
        "finishing the ticket that filled the memtable ran its flush"
    );
}

#[test]
fn forged_tickets_are_refused_and_change_nothing() {
    within_a_minute(|| {
        let fs = SimFs::new();
        let engine = open(&fs);
        put(&engine, "a", "1", WriteOptions::sync()).unwrap();
        let t = deferred(&engine, "b", "2");
        let seq = engine.get_runtime_metrics().unwrap().current_sequence;
        let forged = [
            CommitTicket {
                commit_seq: t.commit_seq + 100,
                first_seq: t.commit_seq + 1,
                ..t
            },
            CommitTicket {
                log_position: t.log_position + (1 << 40),
                ..t
            },
            CommitTicket { first_seq: 0, ..t },
            CommitTicket {
                first_seq: t.commit_seq + 1,
                ..t
            },
        ];
        for f in forged {
            let err = engine.finish_commit(f).unwrap_err();
            assert!(matches!(err, MidgeError::InvalidArgument(_)), "{f:?}: {err}");
        }
        assert_eq!(get(&engine, "b"), None, "a refused ticket published nothing");
        assert_eq!(engine.get_runtime_metrics().unwrap().current_sequence, seq);
        engine.finish_commit(t).unwrap();
        put(&engine, "c", "3", WriteOptions::sync()).unwrap();
        for (k, v) in [("a", "1"), ("b", "2"), ("c", "3")] {
            assert_eq!(get(&engine, k).as_deref(), Some(v));
        }
    });
}

#[test]
fn only_sync_commits_with_writes_are_deferred() {
    let fs = SimFs::new();
    let engine = open(&fs);
    for opts in [WriteOptions::buffered(), WriteOptions::best_effort()] {
        let mut tx = engine.begin_tx(0, TransactionMode::ReadWrite).unwrap();
        tx.put(b"k".to_vec(), b"v".to_vec(), None).unwrap();
        assert_eq!(
            tx.commit_deferred(opts).unwrap(),
            None,
            "{opts:?} completes at once"
        );
    }
    let tx = engine.begin_tx(0, TransactionMode::ReadWrite).unwrap();
    assert_eq!(
        tx.commit_deferred(WriteOptions::sync()).unwrap(),
        None,
        "nothing to write"
    );
    let tx = engine.begin_tx(0, TransactionMode::ReadOnly).unwrap();
    assert_eq!(tx.commit_deferred(WriteOptions::sync()).unwrap(), None);
    assert_eq!(get(&engine, "k").as_deref(), Some("v"));
}

#[test]
fn a_deferred_commit_whose_fsync_fails_is_never_acknowledged() {
    let fault = common::FaultFs::new();
    let fail = fault.fail_syncs.clone();
    let engine = Engine::open(options(Arc::new(fault))).unwrap();
    put(&engine, "before", "1", WriteOptions::sync()).unwrap();
    let t = deferred(&engine, "during", "2");
    fail.store(true, Ordering::SeqCst);
    let err = engine.finish_commit(t).unwrap_err();
    assert!(matches!(err, MidgeError::Poisoned(_)), "{err}");
    assert_eq!(get(&engine, "during"), None, "never made visible");
    fail.store(false, Ordering::SeqCst);
    let err = engine.finish_commit(t).unwrap_err();
    assert!(
        matches!(err, MidgeError::Poisoned(_)),
        "no retry-and-trust: {err}"
    );
    assert_eq!(get(&engine, "during"), None);
}

#[test]
fn deferred_commits_from_threads_are_all_acknowledged_and_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(Engine::open(OpenOptions::local(dir.path()).build()).unwrap());
    let (writers, per) = (4, 50);
    let handles: Vec<_> = (0..writers)
        .map(|w| {
            let engine = engine.clone();
            std::thread::spawn(move || {
                for i in 0..per {
                    let t = deferred(&engine, &format!("w{w}-{i}"), "v");
                    engine.finish_commit(t).unwrap();
                    assert_eq!(get(&engine, &format!("w{w}-{i}")).as_deref(), Some("v"));
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let m = engine.get_runtime_metrics().unwrap();
    assert_eq!(m.commits_total, (writers * per) as u64);
    drop(engine);
    let engine = Engine::open(OpenOptions::local(dir.path()).build()).unwrap();
    let tx = engine.begin_tx(0, TransactionMode::ReadOnly).unwrap();
    assert_eq!(tx.scan(&Query::new()).unwrap().count(), writers * per);
}

// The split fsync (`Engine::begin_sync` / `Engine::end_sync`): the caller runs the log's fsync itself.

#[test]
fn an_fsync_run_by_the_caller_makes_its_commits_durable_then_visible() {
    let fs = SimFs::new();
    let engine = open(&fs);
    put(&engine, "warm", "0", WriteOptions::sync()).unwrap();
    let tickets: Vec<CommitTicket> = (0..3).map(|i| deferred(&engine, &format!("k{i}"), "v")).collect();
    let before = fsyncs(&engine);
    let plan = engine
        .begin_sync(tickets[2].log_position)
        .unwrap()
        .expect("not durable yet");
    assert!(plan.log_position() >= tickets[2].log_position);
    assert!(plan.path().starts_with("wal/"), "{}", plan.path());
    let lost = after_power_loss(&fs);
    assert_eq!(get(&lost, "k0"), None, "durable before the caller's fsync");
    drop(lost);
    plan.file().sync_data().unwrap();
    assert_eq!(
        get(&engine, "k0"),
        None,
        "visible before the fsync's outcome was handed back"
    );
    let kept = after_power_loss(&fs);
    assert_eq!(
        get(&kept, "k2").as_deref(),
        Some("v"),
        "the caller's fsync covered the frames"
    );
    drop(kept);
    let covered = engine.end_sync(plan, Ok(())).unwrap();
    assert!(covered >= tickets[2].log_position);
    for i in 0..3 {
        assert_eq!(get(&engine, &format!("k{i}")).as_deref(), Some("v"));
    }
    assert_eq!(fsyncs(&engine), before + 1, "the caller's fsync is counted");
    for t in tickets {
        assert!(engine.finish_commit(t).unwrap() >= covered);
    }
    assert_eq!(
        fsyncs(&engine),
        before + 1,
        "covered tickets finish without another fsync"
    );
    assert_eq!(
        engine.begin_sync(covered).unwrap().map(|p| p.log_position()),
        None,
        "durable already"
    );
}

#[test]
fn overlapping_fsyncs_each_publish_what_they_cover() {
    let fs = SimFs::new();
    let engine = open(&fs);
    let a = deferred(&engine, "a", "1");
    let first = engine.begin_sync(a.log_position).unwrap().unwrap();
    let b = deferred(&engine, "b", "2");
    let second = engine.begin_sync(b.log_position).unwrap().unwrap();
    assert!(first.log_position() < second.log_position());
    // The later fsync ends first: it covers both.
    let r = second.file().sync_data();
    engine.end_sync(second, r).unwrap();
    assert_eq!(get(&engine, "a").as_deref(), Some("1"));
    assert_eq!(get(&engine, "b").as_deref(), Some("2"));
    let r = first.file().sync_data();
    assert!(engine.end_sync(first, r).unwrap() >= b.log_position);
    let kept = after_power_loss(&fs);
    assert_eq!(get(&kept, "b").as_deref(), Some("2"));
}

#[test]
fn a_failed_fsync_run_by_the_caller_poisons_and_is_never_acknowledged() {
    let fs = SimFs::new();
    let engine = open(&fs);
    put(&engine, "before", "1", WriteOptions::sync()).unwrap();
    let t = deferred(&engine, "during", "2");
    let plan = engine.begin_sync(t.log_position).unwrap().unwrap();
    let err = engine
        .end_sync(plan, Err(std::io::Error::other("device gone")))
        .unwrap_err();
    assert!(matches!(err, MidgeError::Poisoned(_)), "{err}");
    assert_eq!(get(&engine, "during"), None, "never made visible");
    for err in [
        engine.finish_commit(t).unwrap_err(),
        engine.begin_sync(t.log_position).map(|_| ()).unwrap_err(),
        put(&engine, "after", "3", WriteOptions::sync()).unwrap_err(),
    ] {
        assert!(
            matches!(err, MidgeError::Poisoned(_)),
            "no retry-and-trust: {err}"
        );
    }
    assert_eq!(get(&engine, "during"), None);
}

#[test]
fn bad_sync_plans_are_refused_and_change_nothing() {
    within_a_minute(|| {
        let fs = SimFs::new();
        let engine = open(&fs);
        let other = open(&SimFs::new());
        let t = deferred(&engine, "k", "v");
        let err = engine.begin_sync(t.log_position + 1).map(|_| ()).unwrap_err();
        assert!(matches!(err, MidgeError::InvalidArgument(_)), "{err}");
        // A plan of another engine, even one that covers more of its own log.
        for i in 0..3 {
            deferred(&other, &format!("o{i}"), "x");
        }
        let last = deferred(&other, "o3", "x");
        let foreign = other
            .begin_sync(last.log_position)
            .unwrap()
            .expect("other's log is not durable");
        let r = foreign.file().sync_data();
        let err = engine.end_sync(foreign, r).unwrap_err();
        assert!(matches!(err, MidgeError::InvalidArgument(_)), "{err}");
        assert_eq!(get(&engine, "k"), None, "a refused plan published nothing");
        // A plan dropped unended changes nothing either; a finish still makes the commit durable.
        drop(engine.begin_sync(t.log_position).unwrap());
        assert_eq!(get(&engine, "k"), None);
        engine.finish_commit(t).unwrap();
        assert_eq!(get(&engine, "k").as_deref(), Some("v"));
        assert_eq!(get(&after_power_loss(&fs), "k").as_deref(), Some("v"));
    });
}
