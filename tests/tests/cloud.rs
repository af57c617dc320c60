//! Cloud-backed durability, written once and run natively and through the component (the host serves the
//! guest's `objects` import and its cache's `fs` import), on three object stores: in-memory, a directory
//! (`cloud_simulated`'s layout) and a real S3-compatible server (moto, started on 127.0.0.1 per test).
//! Each case is listed once in `cloud_suite!`, so a case cannot exist for one driver or store and not another.
#![allow(clippy::disallowed_methods)]

use cntryl_midge::prelude::*;
use cntryl_midge::storage::SharedFs;
use cntryl_midge::storage::memory::MemoryFs;
use cntryl_midge::storage::object::{FsObjectStore, MemoryObjectStore, SharedObjectStore};
use cntryl_midge::{RecoveryMetricsSnapshot, RuntimeMetricsSnapshot};
use midge_conformance::moto::Moto;
use midge_host::{ComponentEngine, ComponentHost, ComponentOptions};
use std::any::Any;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

const PREFIX: &str = "dbs/one";
const MEMTABLE: u64 = 8 << 10;

/// What the cloud cases need from an open database.
trait CloudDriver: Sized {
    fn open(cache: &SharedFs, store: &SharedObjectStore) -> MidgeResult<Self>;
    fn create_cf(&self, name: &str) -> MidgeResult<u32>;
    fn cf(&self, name: &str) -> Option<u32>;
    fn put(&self, cf: u32, key: &str, opts: WriteOptions) -> MidgeResult<()>;
    /// Asserts `key` holds `value` and commits the (empty) guarded transaction.
    fn assert_commit(&self, key: &str, value: &str, opts: WriteOptions) -> MidgeResult<()>;
    fn keys(&self, cf: u32) -> MidgeResult<Vec<String>>;
    fn begin_read(&self, cf: u32) -> MidgeResult<()>;
    fn recovery(&self) -> MidgeResult<RecoveryMetricsSnapshot>;
    fn runtime(&self) -> MidgeResult<RuntimeMetricsSnapshot>;
    /// Loses the process: no shutdown, no drop-time sync or upload.
    fn crash(self);
    fn shutdown(self) -> MidgeResult<()>;
}

fn value_of(key: &str) -> Vec<u8> {
    format!("value-of-{key}").into_bytes()
}

struct Native(Engine);

impl CloudDriver for Native {
    fn open(cache: &SharedFs, store: &SharedObjectStore) -> MidgeResult<Self> {
        let opts = OpenOptions::cloud_with_file_system(cache.clone(), store.clone(), PREFIX)
            .with_memtable_size_limit(MEMTABLE)
            .executor(Arc::new(cntryl_midge::runtime::InlineExecutor))
            .build();
        Engine::open(opts).map(Native)
    }
    fn create_cf(&self, name: &str) -> MidgeResult<u32> {
        self.0.create_column_family(name).map(|c| c.id())
    }
    fn cf(&self, name: &str) -> Option<u32> {
        self.0.get_column_family(name).map(|c| c.id())
    }
    fn put(&self, cf: u32, key: &str, opts: WriteOptions) -> MidgeResult<()> {
        let mut tx = self.0.begin_tx(cf, TransactionMode::ReadWrite)?;
        tx.put(key.as_bytes().to_vec(), value_of(key), None)?;
        tx.commit(opts)
    }
    fn assert_commit(&self, key: &str, value: &str, opts: WriteOptions) -> MidgeResult<()> {
        let mut tx = self.0.begin_tx(0, TransactionMode::ReadWrite)?;
        tx.assert_value(key.as_bytes().to_vec(), Some(value.as_bytes().to_vec()))?;
        tx.commit(opts)
    }
    fn keys(&self, cf: u32) -> MidgeResult<Vec<String>> {
        let tx = self.0.begin_tx(cf, TransactionMode::ReadOnly)?;
        let rows = tx.scan(&Query::new())?.try_collect()?;
        Ok(rows
            .into_iter()
            .map(|(k, _)| String::from_utf8_lossy(&k).into_owned())
            .collect())
    }
    fn begin_read(&self, cf: u32) -> MidgeResult<()> {
        self.0.begin_tx(cf, TransactionMode::ReadOnly).map(|_| ())
    }
    fn recovery(&self) -> MidgeResult<RecoveryMetricsSnapshot> {
        self.0.get_recovery_metrics()
    }
    fn runtime(&self) -> MidgeResult<RuntimeMetricsSnapshot> {
        self.0.get_runtime_metrics()
    }
    fn crash(self) {
        std::mem::forget(self.0);
    }
    fn shutdown(mut self) -> MidgeResult<()> {
        self.0.shutdown(Duration::from_secs(10))
    }
}

fn host() -> &'static ComponentHost {
    static HOST: OnceLock<ComponentHost> = OnceLock::new();
    HOST.get_or_init(|| ComponentHost::load(midge_conformance::plugin_component()).expect("load the plugin"))
}

struct Wasm(ComponentEngine);

impl CloudDriver for Wasm {
    fn open(cache: &SharedFs, store: &SharedObjectStore) -> MidgeResult<Self> {
        let opts = ComponentOptions {
            memtable_bytes: Some(MEMTABLE),
            ..Default::default()
        };
        ComponentEngine::open_cloud(host(), cache.clone(), store.clone(), PREFIX, opts).map(Wasm)
    }
    fn create_cf(&self, name: &str) -> MidgeResult<u32> {
        self.0.create_column_family(name)
    }
    fn cf(&self, name: &str) -> Option<u32> {
        self.0.get_column_family(name)
    }
    fn put(&self, cf: u32, key: &str, opts: WriteOptions) -> MidgeResult<()> {
        let mut tx = self.0.begin_tx(cf, TransactionMode::ReadWrite)?;
        tx.put(key.as_bytes().to_vec(), value_of(key), None)?;
        tx.commit(opts)
    }
    fn assert_commit(&self, key: &str, value: &str, opts: WriteOptions) -> MidgeResult<()> {
        let mut tx = self.0.begin_tx(0, TransactionMode::ReadWrite)?;
        tx.assert_value(key.as_bytes().to_vec(), Some(value.as_bytes().to_vec()))?;
        tx.commit(opts)
    }
    fn keys(&self, cf: u32) -> MidgeResult<Vec<String>> {
        let tx = self.0.begin_tx(cf, TransactionMode::ReadOnly)?;
        Ok(tx
            .scan(&Query::new())?
            .into_iter()
            .map(|(k, _)| String::from_utf8_lossy(&k).into_owned())
            .collect())
    }
    fn begin_read(&self, cf: u32) -> MidgeResult<()> {
        self.0.begin_tx(cf, TransactionMode::ReadOnly).map(|_| ())
    }
    fn recovery(&self) -> MidgeResult<RecoveryMetricsSnapshot> {
        self.0.get_recovery_metrics()
    }
    fn runtime(&self) -> MidgeResult<RuntimeMetricsSnapshot> {
        self.0.get_runtime_metrics()
    }
    fn crash(self) {
        self.0.abandon();
    }
    fn shutdown(mut self) -> MidgeResult<()> {
        self.0.shutdown(Duration::from_secs(10))
    }
}

/// Which object store a case runs on.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Memory,
    Directory,
    S3,
}

/// A store plus whatever keeps it alive (a temp directory, a moto server).
struct Bucket {
    store: SharedObjectStore,
    _keep: Box<dyn Any>,
    /// Commits per case: fewer against the HTTP server.
    scale: usize,
}

fn bucket(kind: Kind) -> Bucket {
    match kind {
        Kind::Memory => Bucket {
            store: Arc::new(MemoryObjectStore::new()),
            _keep: Box::new(()),
            scale: 200,
        },
        Kind::Directory => {
            let dir =
                tempfile::tempdir_in(std::env::var("TMPDIR").unwrap_or_else(|_| "/tmp".into())).unwrap();
            let fs = Arc::new(cntryl_midge::storage::local::LocalFs::new(dir.path()));
            Bucket {
                store: Arc::new(FsObjectStore::new(fs)),
                _keep: Box::new(dir),
                scale: 120,
            }
        }
        Kind::S3 => {
            let moto = Moto::start();
            let store = moto.bucket("midge");
            Bucket {
                store: Arc::new(store),
                _keep: Box::new(moto),
                scale: 60,
            }
        }
    }
}

fn fresh_cache() -> SharedFs {
    Arc::new(MemoryFs::new())
}

fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i:04}")).collect()
}

/// Every `cloud_strict` commit survives total loss of the local cache; recovery reports what it fetched.
fn strict_commits_survive_total_loss_of_the_local_cache<D: CloudDriver>(kind: Kind) {
    let b = bucket(kind);
    let db = D::open(&fresh_cache(), &b.store).unwrap();
    let cf = db.create_cf("orders").unwrap();
    for k in names("k", b.scale) {
        db.put(cf, &k, WriteOptions::cloud_strict()).unwrap();
    }
    let m = db.runtime().unwrap();
    assert!(
        m.flush_publish_count > 0,
        "tiny memtables flushed SSTs to the store: {m:?}"
    );
    assert!(
        m.cloud_wal_segments_uploaded > 0 && m.wal_cloud_durable_seq > 0,
        "{m:?}"
    );
    db.crash();
    let db = D::open(&fresh_cache(), &b.store).unwrap();
    let cf2 = db
        .cf("orders")
        .expect("column family restored from the object store");
    assert_eq!(cf2, cf);
    assert_eq!(db.keys(cf).unwrap(), names("k", b.scale));
    let r = db.recovery().unwrap();
    assert!(r.cloud_manifest_fetched, "{r:?}");
    assert!(
        r.cloud_ssts_fetched > 0 && r.cloud_wal_segments_fetched > 0 && r.cloud_bytes_fetched > 0,
        "{r:?}"
    );
}

/// A second writer fences the first: its commits and reads fail with `Fenced`, and nothing it wrote after
/// being fenced is ever replayed.
fn a_second_writer_fences_the_first<D: CloudDriver>(kind: Kind) {
    let b = bucket(kind);
    let a = D::open(&fresh_cache(), &b.store).unwrap();
    for k in names("a", 20) {
        a.put(0, &k, WriteOptions::cloud_strict()).unwrap();
    }
    let second = D::open(&fresh_cache(), &b.store).unwrap();
    assert_eq!(
        second.keys(0).unwrap(),
        names("a", 20),
        "the new writer recovers every acknowledged commit"
    );
    let err = a.put(0, "zombie", WriteOptions::cloud_strict()).unwrap_err();
    assert!(matches!(err, MidgeError::Fenced(_)), "{err}");
    assert_eq!(err.severity(), cntryl_midge::Severity::Fenced);
    assert!(matches!(a.begin_read(0), Err(MidgeError::Fenced(_))));
    second.put(0, "b0000", WriteOptions::cloud_strict()).unwrap();
    a.crash();
    second.crash();
    let third = D::open(&fresh_cache(), &b.store).unwrap();
    let got = third.keys(0).unwrap();
    assert!(
        !got.contains(&"zombie".to_string()),
        "nothing a fenced writer wrote is replayed"
    );
    assert_eq!(got.len(), 21);
    assert!(got.contains(&"b0000".to_string()));
}

/// `cloud_async` commits are visible at once and, after losing the machine, lost only as a suffix — never a
/// hole, never ahead of a strict commit.
fn async_commits_are_lost_only_as_a_suffix<D: CloudDriver>(kind: Kind) {
    let b = bucket(kind);
    let db = D::open(&fresh_cache(), &b.store).unwrap();
    for k in names("s", 10) {
        db.put(0, &k, WriteOptions::cloud_strict()).unwrap();
    }
    for k in names("t", 10) {
        db.put(0, &k, WriteOptions::cloud_async()).unwrap();
    }
    assert_eq!(db.keys(0).unwrap().len(), 20, "async commits are visible at once");
    db.crash();
    let db = D::open(&fresh_cache(), &b.store).unwrap();
    let got = db.keys(0).unwrap();
    let strict: Vec<String> = got.iter().filter(|k| k.starts_with('s')).cloned().collect();
    assert_eq!(strict, names("s", 10), "every strict commit survives cache loss");
    let asyncs: Vec<String> = got.iter().filter(|k| k.starts_with('t')).cloned().collect();
    assert_eq!(
        asyncs,
        names("t", asyncs.len()),
        "async losses are a suffix, never a hole"
    );
}

/// A clean shutdown uploads pending async commits: they survive both a same-cache restart and cache loss.
fn clean_shutdown_uploads_async_commits<D: CloudDriver>(kind: Kind) {
    let b = bucket(kind);
    let cache = fresh_cache();
    let db = D::open(&cache, &b.store).unwrap();
    for k in names("t", 5) {
        db.put(0, &k, WriteOptions::cloud_async()).unwrap();
    }
    db.shutdown().unwrap();
    let same = D::open(&cache, &b.store).unwrap();
    assert_eq!(same.keys(0).unwrap(), names("t", 5), "same-cache restart");
    same.shutdown().unwrap();
    let fresh = D::open(&fresh_cache(), &b.store).unwrap();
    assert_eq!(fresh.keys(0).unwrap(), names("t", 5), "shutdown uploaded them");
}

/// Local-disk modes are `InvalidArgument` on cloud storage; `best_effort` and guarded commits work.
fn durability_modes_must_match_the_storage_kind<D: CloudDriver>(kind: Kind) {
    let b = bucket(kind);
    let db = D::open(&fresh_cache(), &b.store).unwrap();
    for opts in [WriteOptions::sync(), WriteOptions::buffered()] {
        let r = db.put(0, "x", opts);
        assert!(matches!(r, Err(MidgeError::InvalidArgument(_))), "{r:?}");
    }
    db.put(0, "y", WriteOptions::best_effort()).unwrap();
    db.assert_commit("y", "value-of-y", WriteOptions::cloud_strict())
        .unwrap();
    let r = db.assert_commit("y", "something else", WriteOptions::cloud_strict());
    assert!(matches!(r, Err(MidgeError::WriteConflict(_))), "{r:?}");
}

macro_rules! cloud_suite {
    ($($module:ident: $driver:ty, $kind:expr;)*) => {$(
        mod $module {
            use super::*;
            #[test]
            fn strict_commits_survive_total_loss_of_the_local_cache() {
                super::strict_commits_survive_total_loss_of_the_local_cache::<$driver>($kind)
            }
            #[test]
            fn a_second_writer_fences_the_first() {
                super::a_second_writer_fences_the_first::<$driver>($kind)
            }
            #[test]
            fn async_commits_are_lost_only_as_a_suffix() {
                super::async_commits_are_lost_only_as_a_suffix::<$driver>($kind)
            }
            #[test]
            fn clean_shutdown_uploads_async_commits() {
                super::clean_shutdown_uploads_async_commits::<$driver>($kind)
            }
            #[test]
            fn durability_modes_must_match_the_storage_kind() {
                super::durability_modes_must_match_the_storage_kind::<$driver>($kind)
            }
        }
    )*};
}

cloud_suite! {
    native_memory: Native, Kind::Memory;
    native_directory: Native, Kind::Directory;
    native_s3: Native, Kind::S3;
    component_memory: Wasm, Kind::Memory;
    component_directory: Wasm, Kind::Directory;
    component_s3: Wasm, Kind::S3;
}

/// A cloud database written natively is recovered by the component from the bucket alone, and vice versa.
#[test]
fn a_cloud_database_moves_between_native_and_component_through_the_bucket() {
    let b = bucket(Kind::Memory);
    let n = Native::open(&fresh_cache(), &b.store).unwrap();
    for k in names("n", 40) {
        n.put(0, &k, WriteOptions::cloud_strict()).unwrap();
    }
    n.crash();
    let w = Wasm::open(&fresh_cache(), &b.store).unwrap();
    assert_eq!(w.keys(0).unwrap(), names("n", 40));
    for k in names("w", 40) {
        w.put(0, &k, WriteOptions::cloud_strict()).unwrap();
    }
    w.crash();
    let n = Native::open(&fresh_cache(), &b.store).unwrap();
    let mut expect = names("n", 40);
    expect.extend(names("w", 40));
    assert_eq!(n.keys(0).unwrap(), expect);
}
