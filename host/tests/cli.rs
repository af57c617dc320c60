//! `midge verify --json`: schema and exit codes.
#![allow(clippy::disallowed_methods)]

use cntryl_midge::prelude::*;
use std::process::Command;

fn verify(path: &std::path::Path) -> (i32, serde_json::Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_midge"))
        .args(["verify", "--json"])
        .arg(path)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is one JSON document");
    (out.status.code().unwrap(), v)
}

#[test]
fn verify_reports_health_with_contract_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = Engine::open(OpenOptions::local(dir.path()).build()).unwrap();
        let mut tx = engine.begin_tx(0, TransactionMode::ReadWrite).unwrap();
        tx.put(b"k".to_vec(), b"v".to_vec(), None).unwrap();
        tx.commit(WriteOptions::sync()).unwrap();
    }
    let (code, v) = verify(dir.path());
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["schema_version"], 1);
    assert_eq!(v["verification_scope"], "local_path");
    assert_eq!(v["health"], "Healthy");
    assert_eq!(v["wal_recovery_records_replayed"], 1);

    let wal = std::fs::read_dir(dir.path().join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .max()
        .unwrap();
    let mut data = std::fs::read(&wal).unwrap();
    data.extend_from_slice(&[0xABu8; 100]); // garbage after the last frame (all-zero bytes would be preallocated space)
    std::fs::write(&wal, &data).unwrap();
    let (code, v) = verify(dir.path());
    assert_eq!(code, 1, "a torn tail is degraded: {v}");

    std::fs::write(dir.path().join("FORMAT"), "midge-format=42\n").unwrap();
    let (code, v) = verify(dir.path());
    assert_eq!((code, v["error_kind"].as_str()), (4, Some("corruption")), "{v}");

    let (code, v) = verify(&dir.path().join("missing"));
    assert_eq!((code, v["status"].as_str()), (3, Some("error")));
    let out = Command::new(env!("CARGO_BIN_EXE_midge"))
        .arg("bogus")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
