//! The host's S3 adapter against a real S3-compatible server (moto) that the test starts on 127.0.0.1 and
//! stops: the object-store contract incl. conditional writes, and the native engine on it (strict commits
//! surviving total cache loss, fencing with two writers). The same scenarios through the component, on every
//! store, are in `cloud.rs`.
#![allow(clippy::disallowed_methods)] // tests drive real processes, sockets and clocks

use cntryl_midge::prelude::*;
use cntryl_midge::storage::object::{ObjectError, ObjectStore, PutMode, SharedObjectStore};
use cntryl_midge::{Bytes, MidgeError};
use midge_conformance::moto::Moto;
use std::sync::Arc;

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

#[test]
fn s3_store_honours_conditional_writes_and_cloud_mode_survives_cache_loss_and_fences() {
    let moto = Moto::start();
    let s3 = moto.bucket("midge");

    // The object-store contract, conditional writes included.
    let a = s3
        .put("t/x", Bytes::from_static(b"one"), PutMode::Create)
        .unwrap();
    assert!(matches!(
        s3.put("t/x", Bytes::from_static(b"dup"), PutMode::Create),
        Err(ObjectError::AlreadyExists(_))
    ));
    let b = s3
        .put(
            "t/x",
            Bytes::from_static(b"two!"),
            PutMode::IfMatch(a.etag.clone()),
        )
        .unwrap();
    assert_ne!(a.etag, b.etag);
    assert!(matches!(
        s3.put("t/x", Bytes::from_static(b"stale"), PutMode::IfMatch(a.etag)),
        Err(ObjectError::PreconditionFailed(_))
    ));
    assert_eq!(s3.get("t/x").unwrap().0, Bytes::from_static(b"two!"));
    assert_eq!(s3.get_range("t/x", 1..3).unwrap(), Bytes::from_static(b"wo"));
    s3.put("t/y", Bytes::new(), PutMode::Overwrite).unwrap();
    assert_eq!(s3.head("t/y").unwrap().size, 0);
    let names: Vec<String> = s3.list("t/").unwrap().into_iter().map(|m| m.path).collect();
    assert_eq!(names, ["t/x", "t/y"]);
    s3.delete("t/x").unwrap();
    s3.delete("t/x").unwrap();
    assert!(matches!(s3.get("t/x"), Err(ObjectError::NotFound(_))));

    // The engine on S3: strict commits survive losing the whole local cache.
    let shared: SharedObjectStore = Arc::new(s3);
    let open = |cache: &std::path::Path| {
        Engine::open(
            OpenOptions::cloud(cache, shared.clone(), "db1")
                .with_memtable_size_limit(16 << 10)
                .build(),
        )
    };
    let cache = tmp();
    {
        let e = open(cache.path()).unwrap();
        for i in 0..40 {
            let mut tx = e.begin_tx(0, TransactionMode::ReadWrite).unwrap();
            tx.put(format!("k{i:03}").into_bytes(), vec![b'v'; 300], None)
                .unwrap();
            tx.commit(WriteOptions::cloud_strict()).unwrap();
        }
        let m = e.get_runtime_metrics().unwrap();
        println!(
            "cloud_strict on moto: {} object puts for 40 commits",
            m.cloud_object_puts_total
        );
        std::mem::forget(e);
    }
    drop(cache);
    let (cache_a, cache_b) = (tmp(), tmp());
    let a = open(cache_a.path()).unwrap();
    let tx = a.begin_tx(0, TransactionMode::ReadOnly).unwrap();
    assert_eq!(tx.scan(&Query::new()).unwrap().count(), 40);
    drop(tx);
    // A second writer fences the first.
    let b = open(cache_b.path()).unwrap();
    let mut tx = a
        .begin_tx(0, TransactionMode::ReadWrite)
        .unwrap_or_else(|e| panic!("{e}"));
    tx.put(b"zombie".to_vec(), b"x".to_vec(), None).unwrap();
    let r = tx.commit(WriteOptions::cloud_strict());
    assert!(matches!(r, Err(MidgeError::Fenced(_))), "{r:?}");
    let mut tx = b.begin_tx(0, TransactionMode::ReadWrite).unwrap();
    tx.put(b"b".to_vec(), b"x".to_vec(), None).unwrap();
    tx.commit(WriteOptions::cloud_strict()).unwrap();
}
