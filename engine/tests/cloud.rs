//! Cloud-backed durability against in-process object stores (memory, and a directory as in `cloud_simulated`):
//! cloud_strict commits survive total loss of the local cache, a second writer fences the first, cloud_async
//! commits are lost only within the documented window, and modes are checked against the storage kind.
#![allow(clippy::disallowed_methods)] // tests drive real files

use cntryl_midge::prelude::*;
use cntryl_midge::storage::memory::MemoryFs;
use cntryl_midge::storage::object::{MemoryObjectStore, ObjectStore, SharedObjectStore};
use cntryl_midge::{MidgeError, RecoveryMetricsSnapshot};
use std::sync::Arc;
use std::time::Duration;

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir_in(std::env::var("TMPDIR").unwrap_or_else(|_| "/tmp".into())).unwrap()
}

fn open(cache: &std::path::Path, store: &SharedObjectStore) -> MidgeResult<Engine> {
    Engine::open(
        OpenOptions::cloud(cache, store.clone(), "dbs/one")
            .with_memtable_size_limit(8 << 10)
            .executor(Arc::new(cntryl_midge::runtime::InlineExecutor))
            .build(),
    )
}

fn put(engine: &Engine, cf: u32, k: &str, opts: WriteOptions) -> MidgeResult<()> {
    let mut tx = engine.begin_tx(cf, TransactionMode::ReadWrite)?;
    tx.put(k.as_bytes().to_vec(), format!("value-of-{k}").into_bytes(), None)?;
    tx.commit(opts)
}

fn keys(engine: &Engine, cf: u32) -> Vec<String> {
    let tx = engine.begin_tx(cf, TransactionMode::ReadOnly).unwrap();
    tx.scan(&Query::new())
        .unwrap()
        .try_collect()
        .unwrap()
        .into_iter()
        .map(|(k, _)| String::from_utf8(k.to_vec()).unwrap())
        .collect()
}

#[test]
fn strict_commits_survive_total_loss_of_the_local_cache() {
    let store: SharedObjectStore = Arc::new(MemoryObjectStore::new());
    let cache = tmp();
    let cf_id;
    {
        let engine = open(cache.path(), &store).unwrap();
        let cf = engine.create_column_family("orders").unwrap();
        cf_id = cf.id();
        for i in 0..300 {
            put(&engine, cf_id, &format!("k{i:04}"), WriteOptions::cloud_strict()).unwrap();
        }
        let m = engine.get_runtime_metrics().unwrap();
        assert!(
            m.flush_publish_count > 0,
            "tiny memtables flushed SSTs to the object store"
        );
        assert!(m.wal_cloud_durable_seq >= m.current_sequence - 1);
        assert!(m.cloud_wal_segments_uploaded > 0);
        // Simulate losing the machine: no shutdown, the cache directory vanishes.
        std::mem::forget(engine);
    }
    drop(cache);
    let fresh = tmp();
    let engine = open(fresh.path(), &store).unwrap();
    let cf = engine
        .get_column_family("orders")
        .expect("column family restored from the object store");
    assert_eq!(cf.id(), cf_id);
    let got = keys(&engine, cf_id);
    assert_eq!(got, (0..300).map(|i| format!("k{i:04}")).collect::<Vec<_>>());
    let r: RecoveryMetricsSnapshot = engine.get_recovery_metrics().unwrap();
    assert!(r.cloud_manifest_fetched);
    assert!(
        r.cloud_ssts_fetched > 0 && r.cloud_wal_segments_fetched > 0,
        "{r:?}"
    );
    assert!(r.cloud_bytes_fetched > 0);
    let report = engine.verify_storage(Duration::from_secs(10)).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

#[test]
fn a_second_writer_fences_the_first_and_keeps_everything_it_acknowledged() {
    let store: SharedObjectStore = Arc::new(MemoryObjectStore::new());
    let (ca, cb) = (tmp(), tmp());
    let a = open(ca.path(), &store).unwrap();
    for i in 0..20 {
        put(&a, 0, &format!("a{i:02}"), WriteOptions::cloud_strict()).unwrap();
    }
    let b = open(cb.path(), &store).unwrap();
    assert_eq!(
        keys(&b, 0).len(),
        20,
        "the new writer recovers every acknowledged commit"
    );
    let err = put(&a, 0, "zombie", WriteOptions::cloud_strict()).unwrap_err();
    assert!(matches!(err, MidgeError::Fenced(_)), "{err}");
    assert_eq!(err.severity(), cntryl_midge::Severity::Fenced);
    assert!(matches!(
        a.begin_tx(0, TransactionMode::ReadOnly),
        Err(MidgeError::Fenced(_))
    ));
    put(&b, 0, "b00", WriteOptions::cloud_strict()).unwrap();
    drop(a);
    drop(b);
    let c = open(tmp().path(), &store).unwrap();
    let got = keys(&c, 0);
    assert!(
        !got.contains(&"zombie".to_string()),
        "nothing a fenced writer wrote is replayed"
    );
    assert!(got.contains(&"b00".to_string()));
    assert_eq!(got.len(), 21);
}

#[test]
fn async_commits_are_lost_only_within_the_window_and_never_out_of_order() {
    let store: SharedObjectStore = Arc::new(MemoryObjectStore::new());
    let cache = tmp();
    {
        let engine = open(cache.path(), &store).unwrap();
        for i in 0..10 {
            put(&engine, 0, &format!("s{i:02}"), WriteOptions::cloud_strict()).unwrap();
        }
        for i in 0..10 {
            put(&engine, 0, &format!("t{i:02}"), WriteOptions::cloud_async()).unwrap();
        }
        assert_eq!(keys(&engine, 0).len(), 20, "async commits are visible at once");
        std::mem::forget(engine);
    }
    drop(cache);
    let engine = open(tmp().path(), &store).unwrap();
    let got = keys(&engine, 0);
    let strict: Vec<_> = got.iter().filter(|k| k.starts_with('s')).collect();
    assert_eq!(strict.len(), 10, "every strict commit survives cache loss");
    let asyncs: Vec<_> = got.iter().filter(|k| k.starts_with('t')).cloned().collect();
    let expect_prefix: Vec<String> = (0..asyncs.len()).map(|i| format!("t{i:02}")).collect();
    assert_eq!(asyncs, expect_prefix, "async losses are a suffix, never a hole");
}

#[test]
fn same_cache_restart_keeps_async_commits_and_clean_shutdown_uploads_them() {
    let store: SharedObjectStore = Arc::new(MemoryObjectStore::new());
    let cache = tmp();
    {
        let mut engine = open(cache.path(), &store).unwrap();
        for i in 0..5 {
            put(&engine, 0, &format!("t{i}"), WriteOptions::cloud_async()).unwrap();
        }
        engine.shutdown(Duration::from_secs(5)).unwrap();
    }
    assert_eq!(
        keys(&open(cache.path(), &store).unwrap(), 0).len(),
        5,
        "same-cache restart"
    );
    assert_eq!(
        keys(&open(tmp().path(), &store).unwrap(), 0).len(),
        5,
        "shutdown uploaded them"
    );
}

#[test]
fn durability_modes_must_match_the_storage_kind() {
    let store: SharedObjectStore = Arc::new(MemoryObjectStore::new());
    let engine = open(tmp().path(), &store).unwrap();
    for opts in [WriteOptions::sync(), WriteOptions::buffered()] {
        assert!(matches!(
            put(&engine, 0, "x", opts),
            Err(MidgeError::InvalidArgument(_))
        ));
    }
    put(&engine, 0, "y", WriteOptions::best_effort()).unwrap();
    let mut tx = engine.begin_tx(0, TransactionMode::ReadWrite).unwrap();
    tx.assert_value(b"y".to_vec(), Some(b"value-of-y".to_vec()))
        .unwrap();
    tx.commit(WriteOptions::cloud_strict()).unwrap();
}

#[test]
fn cloud_simulated_uses_a_directory_as_the_bucket() {
    let (cache, bucket) = (tmp(), tmp());
    let opts = |c: &std::path::Path| OpenOptions::cloud_simulated(c, bucket.path(), "/tenant/a/").build();
    {
        let engine = Engine::open(opts(cache.path())).unwrap();
        put(&engine, 0, "k", WriteOptions::cloud_strict()).unwrap();
        std::mem::forget(engine);
    }
    assert!(
        bucket.path().join("tenant/a/wal/catalog").exists(),
        "objects live under the trimmed prefix"
    );
    let engine = Engine::open(opts(tmp().path())).unwrap();
    assert_eq!(keys(&engine, 0), vec!["k".to_string()]);
    let _ = MemoryFs::new();
    let listing = cntryl_midge::storage::object::FsObjectStore::new(Arc::new(
        cntryl_midge::storage::local::LocalFs::new(bucket.path()),
    ))
    .list("tenant/a/wal/")
    .unwrap();
    assert!(listing.iter().any(|m| m.path.ends_with(".wal")));
}

#[test]
fn the_bucket_stays_bounded_pruned_segments_and_compacted_ssts_are_deleted() {
    let store: SharedObjectStore = Arc::new(MemoryObjectStore::new());
    let commits = 1500;
    let cache = tmp();
    {
        let engine = open(cache.path(), &store).unwrap();
        for i in 0..commits {
            // Overwrite a small key space so compaction has garbage to drop.
            put(
                &engine,
                0,
                &format!("k{:03}", i % 150),
                WriteOptions::cloud_strict(),
            )
            .unwrap();
        }
        let m = engine.get_runtime_metrics().unwrap();
        assert!(
            m.cloud_wal_segments_uploaded >= commits as u64,
            "one segment per strict commit: {m:?}"
        );
        assert!(m.flush_publish_count > 5 && m.compactions_run > 0, "{m:?}");
        assert!(m.cloud_objects_deleted_total > 0, "{m:?}");
        std::mem::forget(engine);
    }
    let count = |p: &str| store.list(&format!("dbs/one/{p}")).unwrap().len();
    let (wal, sst) = (count("wal/"), count("sst/"));
    assert!(
        wal < 200,
        "{wal} WAL objects for {commits} strict commits: flushed segments must be pruned"
    );
    assert!(sst < 20, "{sst} SST objects: compacted-away SSTs must be deleted");
    // Everything is still recoverable from the bucket alone.
    let fresh = tmp();
    let engine = open(fresh.path(), &store).unwrap();
    assert_eq!(keys(&engine, 0).len(), 150);
    let tx = engine.begin_tx(0, TransactionMode::ReadOnly).unwrap();
    let last = format!("k{:03}", (commits - 1) % 150);
    assert_eq!(
        tx.get(last.as_bytes()).unwrap().unwrap().as_ref(),
        format!("value-of-{last}").as_bytes()
    );
}

#[test]
fn async_commits_are_sealed_after_the_pending_commit_threshold() {
    let store: SharedObjectStore = Arc::new(MemoryObjectStore::new());
    let cache = tmp();
    {
        let engine = Engine::open(
            OpenOptions::cloud(cache.path(), store.clone(), "dbs/one")
                .with_cloud_seal_thresholds(1 << 30, Duration::from_secs(3600), 5)
                .executor(Arc::new(cntryl_midge::runtime::InlineExecutor))
                .build(),
        )
        .unwrap();
        for i in 0..12 {
            put(&engine, 0, &format!("t{i:02}"), WriteOptions::cloud_async()).unwrap();
        }
        let m = engine.get_runtime_metrics().unwrap();
        assert_eq!(
            m.cloud_wal_segments_uploaded, 2,
            "sealed at the 5th and 10th commit: {m:?}"
        );
        std::mem::forget(engine);
    }
    let fresh = tmp();
    let engine = open(fresh.path(), &store).unwrap();
    let got = keys(&engine, 0);
    assert_eq!(
        got,
        (0..10).map(|i| format!("t{i:02}")).collect::<Vec<_>>(),
        "the last two were within the window"
    );
}
