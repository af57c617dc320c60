//! Real-process crash test: a child process commits 3-key transactions with `sync()` and prints `ack <i>` after
//! each commit returns; the parent SIGKILLs it at a random moment, reopens the directory and checks that every
//! acknowledged transaction is present, that no transaction is half-visible, and that there are no holes.
#![allow(clippy::disallowed_methods)] // tests drive real threads, files and clocks

use cntryl_midge::prelude::*;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "MIDGE_CRASH_CHILD_DIR";
/// When set, the child uses tiny memtables with inline flush/compaction, so kills land inside them.
const LSM_ENV: &str = "MIDGE_CRASH_CHILD_LSM";

fn child_options(dir: &str) -> OpenOptions {
    let b = OpenOptions::local(dir);
    let b = if std::env::var(LSM_ENV).is_ok() {
        b.with_memtable_size_limit(8 << 10)
            .with_l0_compaction_trigger(2)
            .with_target_sst_size(16 << 10)
            .executor(std::sync::Arc::new(cntryl_midge::runtime::InlineExecutor))
    } else {
        b
    };
    b.build().unwrap()
}

/// The writer half. Runs only when the parent re-executes this test binary with `--ignored`.
#[test]
#[ignore = "helper process for sigkill_during_sync_commits_loses_no_acknowledged_transaction"]
fn crash_child_writer() {
    let dir = std::env::var(CHILD_ENV).expect("run by the parent test");
    let engine = Engine::open(child_options(&dir)).unwrap();
    let start: u64 = {
        let tx = engine.begin_tx(0, TransactionMode::ReadOnly).unwrap();
        tx.scan(&Query::new()).unwrap().count() as u64 / 3
    };
    let mut out = std::io::stdout().lock();
    for i in start.. {
        let mut tx = engine.begin_tx(0, TransactionMode::ReadWrite).unwrap();
        for part in ["a", "b", "c"] {
            tx.put(
                format!("t{i:08}-{part}").into_bytes(),
                vec![b'x'; 100 + (i as usize % 900)],
                None,
            )
            .unwrap();
        }
        tx.commit(WriteOptions::sync()).unwrap();
        writeln!(out, "ack {i}").unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn sigkill_during_sync_commits_loses_no_acknowledged_transaction() {
    sigkill_sweep(false);
}

#[test]
fn sigkill_during_flush_and_compaction_loses_no_acknowledged_transaction() {
    sigkill_sweep(true);
}

fn sigkill_sweep(lsm: bool) {
    let iterations: u64 = std::env::var("MIDGE_CRASH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(25);
    let seed: u64 = std::env::var("MIDGE_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed);
    let mut rng = cntryl_midge::runtime::SeededRng::new(seed);
    println!("crash test seed={seed} iterations={iterations}");
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut max_acked: Option<u64> = None;
    for iter in 0..iterations {
        let mut child = Command::new(&exe)
            .args([
                "--ignored",
                "--exact",
                "crash_child_writer",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .env(if lsm { LSM_ENV } else { "MIDGE_CRASH_CHILD_PLAIN" }, "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let deadline = Instant::now() + Duration::from_millis(50 + rng.below(400));
        let reader = std::thread::spawn(move || {
            let mut acks = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(n) = line.strip_prefix("ack ") {
                    acks.push(n.trim().parse::<u64>().unwrap());
                }
            }
            acks
        });
        // Kill at a random wall-clock moment: sometimes before the first commit, usually mid-stream.
        std::thread::sleep(Duration::from_millis(20 + rng.below(30)));
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill().unwrap(); // SIGKILL on unix
        let status = child.wait().unwrap();
        assert!(!status.success(), "the child must die by the signal, not exit");
        let acks = reader.join().unwrap();
        if let Some(&last) = acks.last() {
            max_acked = Some(max_acked.map_or(last, |m| m.max(last)));
        }
        let engine = Engine::open(child_options(dir.path().to_str().unwrap())).unwrap();
        let tx = engine.begin_tx(0, TransactionMode::ReadOnly).unwrap();
        let rows = tx.scan(&Query::new()).unwrap().try_collect().unwrap();
        assert_eq!(
            rows.len() % 3,
            0,
            "iteration {iter}: a transaction is half visible"
        );
        let txns = rows.len() as u64 / 3;
        for (n, chunk) in rows.chunks(3).enumerate() {
            for (part, (k, _)) in ["a", "b", "c"].iter().zip(chunk) {
                assert_eq!(
                    k.as_ref(),
                    format!("t{n:08}-{part}").as_bytes(),
                    "iteration {iter}: hole or stray key"
                );
            }
        }
        if let Some(m) = max_acked {
            assert!(
                txns > m,
                "iteration {iter}: acknowledged transaction {m} lost (recovered {txns})"
            );
        }
        drop(tx);
        drop(engine);
    }
    assert!(
        max_acked.is_some(),
        "the child never acknowledged a commit; the test proved nothing"
    );
}
