//! Midge as a WASI component under the real `wasmtime` CLI: SIGKILL during `sync()` commits loses no
//! acknowledged transaction, databases reopen across targets, and the same workload writes byte-identical files
//! natively and in the sandbox.
#![allow(clippy::disallowed_methods)] // tests drive real processes, files and clocks

use cntryl_midge::prelude::*;
use midge_conformance::{native_run, wasmtime_run};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir_in(std::env::var("TMPDIR").unwrap_or_else(|_| "/tmp".into())).unwrap()
}

fn native_rows(db: &Path) -> Vec<(String, String)> {
    let engine = Engine::open(OpenOptions::local(db).build()).unwrap();
    let tx = engine.begin_tx(0, TransactionMode::ReadOnly).unwrap();
    tx.scan(&Query::new())
        .unwrap()
        .try_collect()
        .unwrap()
        .into_iter()
        .map(|(k, v)| {
            (
                String::from_utf8(k.to_vec()).unwrap(),
                String::from_utf8(v.to_vec()).unwrap(),
            )
        })
        .collect()
}

fn component_rows(db: &Path) -> Vec<(String, String)> {
    let out = wasmtime_run(db).arg("scan").output().unwrap();
    assert!(
        out.status.success(),
        "component scan failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap();
            (k.to_string(), v.to_string())
        })
        .collect()
}

#[test]
fn sigkill_under_wasmtime_run_loses_no_acknowledged_transaction() {
    let iterations: u64 = std::env::var("MIDGE_WASM_CRASH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let mut rng = cntryl_midge::runtime::SeededRng::new(0xC0FFEE);
    let dir = tmp();
    let mut max_acked: Option<u64> = None;
    for iter in 0..iterations {
        let start = native_rows(dir.path()).len() as u64 / 3;
        let mut child = wasmtime_run(dir.path())
            .args(["load", &start.to_string(), "1000000"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .filter_map(|l| l.strip_prefix("ack ").and_then(|n| n.parse::<u64>().ok()))
                .collect::<Vec<u64>>()
        });
        std::thread::sleep(Duration::from_millis(150 + rng.below(400)));
        child.kill().unwrap(); // SIGKILL
        assert!(!child.wait().unwrap().success());
        if let Some(&last) = reader.join().unwrap().last() {
            max_acked = Some(max_acked.map_or(last, |m| m.max(last)));
        }
        let rows = native_rows(dir.path());
        assert_eq!(
            rows.len() % 3,
            0,
            "iteration {iter}: a transaction is half visible"
        );
        for (n, chunk) in rows.chunks(3).enumerate() {
            for (part, (k, v)) in ["a", "b", "c"].iter().zip(chunk) {
                assert_eq!(k, &format!("t{n:08}-{part}"), "iteration {iter}: hole");
                assert_eq!(v, &format!("value-{n}-{part}"));
            }
        }
        if let Some(m) = max_acked {
            assert!(
                rows.len() as u64 / 3 > m,
                "iteration {iter}: acknowledged transaction {m} lost"
            );
        }
    }
    assert!(
        max_acked.is_some(),
        "the component never acknowledged a commit; the test proved nothing"
    );
    // Reopen through the component too: the same recovered state.
    assert_eq!(component_rows(dir.path()), native_rows(dir.path()));
}

fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().is_some_and(|n| n != "LOCK") {
                out.insert(
                    p.strip_prefix(dir).unwrap().display().to_string(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    out
}

#[test]
fn the_same_workload_writes_byte_identical_databases_natively_and_in_the_component() {
    let (native, wasm) = (tmp(), tmp());
    for (db, component) in [(native.path(), false), (wasm.path(), true)] {
        for args in [
            vec!["load", "0", "40"],
            vec!["put", "hello", "world"],
            vec!["load", "40", "10"],
        ] {
            let mut cmd = if component {
                wasmtime_run(db)
            } else {
                native_run(db)
            };
            let out = cmd.args(&args).output().unwrap();
            assert!(
                out.status.success(),
                "{args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let (a, b) = (tree(native.path()), tree(wasm.path()));
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "same files"
    );
    for (path, bytes) in &a {
        assert!(bytes == &b[path], "{path} differs between native and component");
    }
    assert!(a.keys().any(|p| p.ends_with(".wal")) && a.contains_key("FORMAT"));
    // The command's `metrics` and `verify` report the same on both targets.
    for sub in ["metrics", "verify"] {
        let n = native_run(native.path()).arg(sub).output().unwrap();
        let w = wasmtime_run(wasm.path()).arg(sub).output().unwrap();
        assert!(n.status.success() && w.status.success(), "{sub} failed");
        assert_eq!(
            String::from_utf8_lossy(&n.stdout),
            String::from_utf8_lossy(&w.stdout),
            "{sub} differs between native and component"
        );
        assert!(!n.stdout.is_empty());
    }
    // Each target opens the other's database and sees the same rows.
    assert_eq!(native_rows(wasm.path()), component_rows(native.path()));
    assert_eq!(native_rows(wasm.path()).len(), 50 * 3 + 1);
}

#[test]
fn component_errors_are_typed_not_traps() {
    let dir = tmp();
    let out = wasmtime_run(dir.path()).args(["bogus"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("(invalid-argument)"));
    std::fs::write(dir.path().join("FORMAT"), "midge-format=99\n").unwrap();
    let out = wasmtime_run(dir.path()).args(["recover"]).output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("(compatibility-error)"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
