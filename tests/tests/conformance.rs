//! One conformance suite, two drivers: every case is written once against [`Driver`] and expanded by
//! `conformance!` for the native engine and for the WASI component in wasmtime. A case missing from a driver
//! does not compile, because the macro generates both.
#![allow(clippy::disallowed_methods)]

use cntryl_midge::prelude::*;
use cntryl_midge::{BatchOp, Bytes, MidgeError};
use midge_host::{ComponentEngine, ComponentHost};
use std::path::Path;
use std::sync::OnceLock;

/// The operations a conformance case needs, over either target.
trait Driver: Sync {
    fn open(dir: &Path) -> MidgeResult<Self>
    where
        Self: Sized;
    fn cf(&self, name: &str) -> Option<u32>;
    fn create_cf(&self, name: &str) -> MidgeResult<u32>;
    fn drop_cf(&self, id: u32) -> MidgeResult<()>;
    fn cf_names(&self) -> MidgeResult<Vec<String>>;
    /// Runs `writes` in one transaction and commits with `opts`.
    fn write(&self, cf: u32, policy: ConflictPolicy, writes: &[W], opts: WriteOptions) -> MidgeResult<()>;
    /// A write batch (`Engine::write` / `ComponentEngine::write`).
    fn batch(&self, cf: u32, ops: &[BatchOp], opts: WriteOptions) -> MidgeResult<()>;
    fn get(&self, cf: u32, key: &[u8]) -> MidgeResult<Option<Bytes>>;
    /// Applies `writes` in a read-write transaction, reads `keys` in it (own writes first, then the snapshot)
    /// and rolls it back.
    fn read_own_writes(&self, cf: u32, writes: &[W], keys: &[Vec<u8>]) -> MidgeResult<Vec<Option<Bytes>>>;
    fn scan(&self, cf: u32, q: &Query) -> MidgeResult<Vec<(Bytes, Bytes)>>;
    fn write_read_only(&self, cf: u32) -> MidgeResult<()>;
    fn records_replayed(&self) -> MidgeResult<u64>;
    fn metrics(&self) -> MidgeResult<cntryl_midge::RuntimeMetricsSnapshot>;
    fn flush(&self, cf: u32) -> MidgeResult<()>;
    fn compact(&self) -> MidgeResult<()>;
    fn shutdown(&mut self) -> MidgeResult<()>;
    fn begin_after_shutdown(&self) -> MidgeResult<()>;
    fn sync_wal(&self) -> MidgeResult<()>;
    fn wait_stall_clear(&self, cf: u32) -> MidgeResult<bool>;
    fn verify(&self) -> MidgeResult<cntryl_midge::StorageVerificationReport>;
}

#[derive(Debug, Clone)]
enum W {
    Put(Vec<u8>, Vec<u8>),
    Insert(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
    Range(Vec<u8>, Vec<u8>),
    Assert(Vec<u8>, Option<Vec<u8>>),
}

struct Native(Engine);

/// Applies `writes` to a transaction of either driver (the native and component transactions share the
/// method names but no trait).
macro_rules! apply_writes {
    ($tx:ident, $writes:expr) => {
        for w in $writes {
            match w.clone() {
                W::Put(k, v) => $tx.put(k, v, None)?,
                W::Insert(k, v) => $tx.insert(k, v, None)?,
                W::Delete(k) => $tx.delete(k)?,
                W::Range(a, b) => $tx.delete_range(a, b)?,
                W::Assert(k, v) => $tx.assert_value(k, v)?,
            }
        }
    };
}

/// Reads `keys` in a read-write transaction of either driver after applying `writes`, then rolls back.
macro_rules! read_own_writes {
    ($engine:expr, $cf:expr, $writes:expr, $keys:expr) => {{
        let mut tx = $engine.begin_tx($cf, TransactionMode::ReadWrite)?;
        apply_writes!(tx, $writes);
        let got = $keys.iter().map(|k| tx.get(k)).collect();
        tx.rollback()?;
        got
    }};
}

impl Driver for Native {
    fn open(dir: &Path) -> MidgeResult<Self> {
        Ok(Native(Engine::open(
            OpenOptions::local(dir).with_memtable_size_limit(64 << 10).build(),
        )?))
    }
    fn cf(&self, name: &str) -> Option<u32> {
        self.0.get_column_family(name).map(|c| c.id())
    }
    fn create_cf(&self, name: &str) -> MidgeResult<u32> {
        Ok(self.0.create_column_family(name)?.id())
    }
    fn drop_cf(&self, id: u32) -> MidgeResult<()> {
        self.0.drop_column_family(id)
    }
    fn cf_names(&self) -> MidgeResult<Vec<String>> {
        Ok(self
            .0
            .list_column_families()?
            .iter()
            .map(|c| c.name().to_string())
            .collect())
    }
    fn write(&self, cf: u32, policy: ConflictPolicy, writes: &[W], opts: WriteOptions) -> MidgeResult<()> {
        let mut tx = self.0.begin_tx(cf, TransactionMode::ReadWrite)?;
        tx.set_conflict_policy(policy);
        apply_writes!(tx, writes);
        tx.commit(opts)
    }
    fn batch(&self, cf: u32, ops: &[BatchOp], opts: WriteOptions) -> MidgeResult<()> {
        self.0.write(cf, ops.to_vec(), opts)
    }
    fn get(&self, cf: u32, key: &[u8]) -> MidgeResult<Option<Bytes>> {
        self.0.begin_tx(cf, TransactionMode::ReadOnly)?.get(key)
    }
    fn read_own_writes(&self, cf: u32, writes: &[W], keys: &[Vec<u8>]) -> MidgeResult<Vec<Option<Bytes>>> {
        read_own_writes!(self.0, cf, writes, keys)
    }
    fn scan(&self, cf: u32, q: &Query) -> MidgeResult<Vec<(Bytes, Bytes)>> {
        self.0
            .begin_tx(cf, TransactionMode::ReadOnly)?
            .scan(q)?
            .try_collect()
    }
    fn write_read_only(&self, cf: u32) -> MidgeResult<()> {
        self.0
            .begin_tx(cf, TransactionMode::ReadOnly)?
            .put(b"k".to_vec(), b"v".to_vec(), None)
    }
    fn records_replayed(&self) -> MidgeResult<u64> {
        Ok(self.0.get_recovery_metrics()?.wal_recovery_records_replayed)
    }
    fn metrics(&self) -> MidgeResult<cntryl_midge::RuntimeMetricsSnapshot> {
        self.0.get_runtime_metrics()
    }
    fn flush(&self, cf: u32) -> MidgeResult<()> {
        let h = self
            .0
            .list_column_families()?
            .into_iter()
            .find(|c| c.id() == cf)
            .ok_or(MidgeError::NotFound)?;
        self.0.flush_cf(&h)
    }
    fn compact(&self) -> MidgeResult<()> {
        self.0.compact_all()
    }
    fn shutdown(&mut self) -> MidgeResult<()> {
        self.0.shutdown(std::time::Duration::from_secs(5))
    }
    fn begin_after_shutdown(&self) -> MidgeResult<()> {
        self.0.begin_tx(0, TransactionMode::ReadOnly).map(|_| ())
    }
    fn sync_wal(&self) -> MidgeResult<()> {
        self.0.sync_wal()
    }
    fn wait_stall_clear(&self, cf: u32) -> MidgeResult<bool> {
        let h = self
            .0
            .list_column_families()?
            .into_iter()
            .find(|c| c.id() == cf)
            .ok_or(MidgeError::NotFound)?;
        self.0
            .wait_for_write_stall_clear(&h, std::time::Duration::from_secs(5))
    }
    fn verify(&self) -> MidgeResult<cntryl_midge::StorageVerificationReport> {
        self.0.verify_storage(std::time::Duration::from_secs(10))
    }
}

fn host() -> &'static ComponentHost {
    static HOST: OnceLock<ComponentHost> = OnceLock::new();
    HOST.get_or_init(|| ComponentHost::load(midge_conformance::plugin_component()).expect("load the plugin"))
}

struct Wasm(ComponentEngine);

impl Driver for Wasm {
    fn open(dir: &Path) -> MidgeResult<Self> {
        Ok(Wasm(ComponentEngine::open_with_memtable(host(), dir, 64 << 10)?))
    }
    fn cf(&self, name: &str) -> Option<u32> {
        self.0.get_column_family(name)
    }
    fn create_cf(&self, name: &str) -> MidgeResult<u32> {
        self.0.create_column_family(name)
    }
    fn drop_cf(&self, id: u32) -> MidgeResult<()> {
        self.0.drop_column_family(id)
    }
    fn cf_names(&self) -> MidgeResult<Vec<String>> {
        Ok(self
            .0
            .list_column_families()?
            .into_iter()
            .map(|(_, n)| n)
            .collect())
    }
    fn write(&self, cf: u32, policy: ConflictPolicy, writes: &[W], opts: WriteOptions) -> MidgeResult<()> {
        let mut tx = self.0.begin_tx(cf, TransactionMode::ReadWrite)?;
        tx.set_conflict_policy(policy);
        apply_writes!(tx, writes);
        tx.commit(opts)
    }
    fn batch(&self, cf: u32, ops: &[BatchOp], opts: WriteOptions) -> MidgeResult<()> {
        self.0.write(cf, ops.to_vec(), opts)
    }
    fn get(&self, cf: u32, key: &[u8]) -> MidgeResult<Option<Bytes>> {
        self.0.begin_tx(cf, TransactionMode::ReadOnly)?.get(key)
    }
    fn read_own_writes(&self, cf: u32, writes: &[W], keys: &[Vec<u8>]) -> MidgeResult<Vec<Option<Bytes>>> {
        read_own_writes!(self.0, cf, writes, keys)
    }
    fn scan(&self, cf: u32, q: &Query) -> MidgeResult<Vec<(Bytes, Bytes)>> {
        self.0.begin_tx(cf, TransactionMode::ReadOnly)?.scan(q)
    }
    fn write_read_only(&self, cf: u32) -> MidgeResult<()> {
        self.0
            .begin_tx(cf, TransactionMode::ReadOnly)?
            .put(b"k".to_vec(), b"v".to_vec(), None)
    }
    fn records_replayed(&self) -> MidgeResult<u64> {
        Ok(self.0.get_recovery_metrics()?.wal_recovery_records_replayed)
    }
    fn metrics(&self) -> MidgeResult<cntryl_midge::RuntimeMetricsSnapshot> {
        self.0.get_runtime_metrics()
    }
    fn flush(&self, cf: u32) -> MidgeResult<()> {
        self.0.flush_cf(cf)
    }
    fn compact(&self) -> MidgeResult<()> {
        self.0.compact_all()
    }
    fn shutdown(&mut self) -> MidgeResult<()> {
        self.0.shutdown(std::time::Duration::from_secs(5))
    }
    fn begin_after_shutdown(&self) -> MidgeResult<()> {
        self.0.begin_tx(0, TransactionMode::ReadOnly).map(|_| ())
    }
    fn sync_wal(&self) -> MidgeResult<()> {
        self.0.sync_wal()
    }
    fn wait_stall_clear(&self, cf: u32) -> MidgeResult<bool> {
        self.0
            .wait_for_write_stall_clear(cf, std::time::Duration::from_secs(5))
    }
    fn verify(&self) -> MidgeResult<cntryl_midge::StorageVerificationReport> {
        self.0.verify_storage(std::time::Duration::from_secs(10))
    }
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir_in(std::env::var("TMPDIR").unwrap_or_else(|_| "/tmp".into())).unwrap()
}

fn b(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

fn keys(rows: &[(Bytes, Bytes)]) -> Vec<String> {
    rows.iter()
        .map(|(k, _)| String::from_utf8(k.to_vec()).unwrap())
        .collect()
}

const LWW: ConflictPolicy = ConflictPolicy::LastWriteWins;

fn reads_writes_and_scans<D: Driver>() {
    let dir = tmp();
    let e = D::open(dir.path()).unwrap();
    let cf = e.cf("default").unwrap();
    let rows: Vec<W> = ["user:1", "user:2", "user:3", "order:1", "z"]
        .iter()
        .map(|k| W::Put(b(k), b(k)))
        .collect();
    e.write(cf, LWW, &rows, WriteOptions::sync()).unwrap();
    e.write(
        cf,
        LWW,
        &[W::Delete(b("z")), W::Range(b("user:2"), b("user:3"))],
        WriteOptions::buffered(),
    )
    .unwrap();
    assert_eq!(e.get(cf, b"user:1").unwrap().as_deref(), Some(&b"user:1"[..]));
    assert_eq!(e.get(cf, b"user:2").unwrap(), None);
    assert_eq!(
        keys(&e.scan(cf, &Query::new()).unwrap()),
        ["order:1", "user:1", "user:3"]
    );
    assert_eq!(
        keys(
            &e.scan(cf, &Query::new().prefix(Bytes::from("user:")).reverse().limit(1))
                .unwrap()
        ),
        ["user:3"]
    );
    let err = e
        .scan(
            cf,
            &Query::new().start_key(Bytes::from("b")).end_key(Bytes::from("a")),
        )
        .unwrap_err();
    assert!(matches!(err, MidgeError::InvalidArgument(_)), "{err}");
}

fn error_variants_cross_the_boundary<D: Driver>() {
    let dir = tmp();
    let e = D::open(dir.path()).unwrap();
    let cf = e.cf("default").unwrap();
    e.write(cf, LWW, &[W::Put(b("k"), b("1"))], WriteOptions::sync())
        .unwrap();
    let err = e
        .write(cf, LWW, &[W::Insert(b("k"), b("2"))], WriteOptions::sync())
        .unwrap_err();
    assert!(
        matches!(err, MidgeError::InvalidArgument(_)),
        "insert on an existing key: {err}"
    );
    let err = e
        .write(cf, LWW, &[W::Assert(b("k"), Some(b("9")))], WriteOptions::sync())
        .unwrap_err();
    assert!(matches!(err, MidgeError::WriteConflict(_)), "{err}");
    let err = e
        .write(cf, LWW, &[W::Put(b("x"), b("y"))], WriteOptions::cloud_strict())
        .unwrap_err();
    assert!(
        matches!(err, MidgeError::InvalidArgument(_)),
        "cloud mode on local storage: {err}"
    );
    let err = e.write_read_only(cf).unwrap_err();
    assert!(matches!(err, MidgeError::InvalidArgument(_)), "{err}");
    let err = e
        .write(cf, LWW, &[W::Put(vec![], b("v"))], WriteOptions::sync())
        .unwrap_err();
    assert!(matches!(err, MidgeError::InvalidArgument(_)), "empty key: {err}");
    let err = e.get(999, b"k").unwrap_err();
    assert!(
        matches!(err, MidgeError::InvalidArgument(_)),
        "unknown column family: {err}"
    );
    let c = e.create_cf("c").unwrap();
    e.write(c, LWW, &[W::Put(b("a"), b("b"))], WriteOptions::sync())
        .unwrap();
    let err = e.drop_cf(c).unwrap_err();
    assert!(matches!(err, MidgeError::UnflushedDataPresent { .. }), "{err}");
    assert!(matches!(e.drop_cf(0), Err(MidgeError::InvalidArgument(_))));
    // A second open of the same directory (here: the same driver kind) finds the lock held.
    let second = D::open(dir.path());
    assert!(
        matches!(second, Err(MidgeError::LeaseHeld(_))),
        "second open: {:?}",
        second.err()
    );
    assert_eq!(
        MidgeError::LeaseHeld(String::new()).severity(),
        cntryl_midge::Severity::Transient
    );
}

fn conflict_policy_aborts_on_concurrent_writes<D: Driver>() {
    let dir = tmp();
    let e = D::open(dir.path()).unwrap();
    let cf = e.cf("default").unwrap();
    e.write(
        cf,
        ConflictPolicy::AbortOnWriteConflict,
        &[W::Put(b("k"), b("1"))],
        WriteOptions::sync(),
    )
    .unwrap();
    // A guard on a value that changed since the snapshot must abort, whatever the policy.
    let err = e
        .write(
            cf,
            ConflictPolicy::AbortOnWriteConflict,
            &[W::Assert(b("k"), None), W::Put(b("k"), b("2"))],
            WriteOptions::sync(),
        )
        .unwrap_err();
    assert!(matches!(err, MidgeError::WriteConflict(_)));
    assert_eq!(
        e.get(cf, b"k").unwrap().as_deref(),
        Some(&b"1"[..]),
        "a rejected commit wrote nothing"
    );
}

fn column_families_and_recovery_metrics_survive_reopen<D: Driver>() {
    let dir = tmp();
    {
        let mut e = D::open(dir.path()).unwrap();
        let users = e.create_cf("users").unwrap();
        for i in 0..30 {
            e.write(
                users,
                LWW,
                &[W::Put(format!("u{i:02}").into_bytes(), vec![b'x'; 100])],
                WriteOptions::sync(),
            )
            .unwrap();
        }
        e.flush(users).unwrap();
        for i in 30..40 {
            e.write(
                users,
                LWW,
                &[W::Put(format!("u{i:02}").into_bytes(), vec![b'y'; 100])],
                WriteOptions::sync(),
            )
            .unwrap();
        }
        e.compact().unwrap();
        e.shutdown().unwrap();
        assert!(
            e.begin_after_shutdown().is_err(),
            "a shut-down engine refuses work"
        );
    }
    let e = D::open(dir.path()).unwrap();
    assert_eq!(e.cf_names().unwrap(), ["default", "users"]);
    let users = e.cf("users").unwrap();
    assert_eq!(e.scan(users, &Query::new()).unwrap().len(), 40);
    assert_eq!(
        e.records_replayed().unwrap(),
        10,
        "only the unflushed tail is replayed"
    );
}

fn large_keys_and_values_cross_the_boundary<D: Driver>() {
    let dir = tmp();
    let e = D::open(dir.path()).unwrap();
    let cf = e.cf("default").unwrap();
    let key = vec![7u8; 64 * 1024];
    let value: Vec<u8> = (0..2_000_000u32).map(|i| (i % 251) as u8).collect();
    e.write(
        cf,
        LWW,
        &[W::Put(key.clone(), value.clone())],
        WriteOptions::sync(),
    )
    .unwrap();
    assert_eq!(e.get(cf, &key).unwrap().as_deref(), Some(&value[..]));
    let err = e
        .write(
            cf,
            LWW,
            &[W::Put(vec![1u8; 64 * 1024 + 1], b("v"))],
            WriteOptions::sync(),
        )
        .unwrap_err();
    assert!(matches!(err, MidgeError::InvalidArgument(_)));
    let many: Vec<W> = (0..3000)
        .map(|i| W::Put(format!("m{i:05}").into_bytes(), vec![1; 10]))
        .collect();
    e.write(cf, LWW, &many, WriteOptions::sync()).unwrap();
    assert_eq!(
        e.scan(cf, &Query::new().prefix(Bytes::from("m"))).unwrap().len(),
        3000,
        "scans cross in batches"
    );
}

/// Point reads of keys on both sides of the component's 24-byte `get-short` limit (lengths 0 to 40, keys that
/// differ only in trailing zero bytes, all-0xff bytes), from the memtable and from SSTs, and inside a read-write
/// transaction whose own puts, deletes and range deletes must win over the snapshot.
fn point_reads_across_key_lengths_see_own_writes_then_the_snapshot<D: Driver>() {
    let dir = tmp();
    let e = D::open(dir.path()).unwrap();
    let cf = e.cf("default").unwrap();
    let mut keys: Vec<Vec<u8>> = [1, 7, 8, 9, 15, 16, 17, 23, 24, 25, 31, 32, 33, 40]
        .iter()
        .map(|&n| (0..n).map(|i| b'a' + (i % 26) as u8).collect())
        .collect();
    keys.extend([
        b("z"),
        b("z\0"),
        b("z\0\0"),
        vec![0xff; 24],
        vec![0xff; 25],
        vec![0; 24],
    ]);
    let value = |k: &[u8]| [b"v:".as_slice(), k].concat();
    // Half the keys in an SST, half in the memtable.
    let (flushed, live) = keys.split_at(keys.len() / 2);
    let puts = |ks: &[Vec<u8>]| -> Vec<W> { ks.iter().map(|k| W::Put(k.clone(), value(k))).collect() };
    e.write(cf, LWW, &puts(flushed), WriteOptions::sync()).unwrap();
    e.flush(cf).unwrap();
    e.write(cf, LWW, &puts(live), WriteOptions::sync()).unwrap();
    for k in &keys {
        assert_eq!(e.get(cf, k).unwrap().as_deref(), Some(&value(k)[..]), "{k:?}");
    }
    for missing in [
        b(""),
        b("y"),
        b("z\0\0\0"),
        vec![0xff; 23],
        vec![0; 23],
        vec![0; 25],
        b("abcdefghijklmnopqrstuvwxy_"),
    ] {
        assert_eq!(e.get(cf, &missing).unwrap(), None, "{missing:?}");
    }
    // Own writes first: a put over a flushed key, a delete of a live key, a range delete, a new key.
    let fresh = b("fresh-key-of-24-bytes-xx");
    let writes = [
        W::Put(keys[0].clone(), b("mine")),
        W::Delete(keys[keys.len() - 1].clone()),
        W::Range(b("z"), b("z\0\0")),
        W::Put(fresh.clone(), b("new")),
    ];
    let mut probe = keys.clone();
    probe.push(fresh.clone());
    let got = e.read_own_writes(cf, &writes, &probe).unwrap();
    for (k, v) in probe.iter().zip(&got) {
        let want = if *k == keys[0] {
            Some(b("mine"))
        } else if *k == keys[keys.len() - 1] || *k == b("z") || *k == b("z\0") {
            None
        } else if *k == fresh {
            Some(b("new"))
        } else {
            Some(value(k))
        };
        assert_eq!(v.as_deref(), want.as_deref(), "{k:?}");
    }
    // Rolled back: the snapshot is unchanged.
    assert_eq!(
        e.get(cf, &keys[0]).unwrap().as_deref(),
        Some(&value(&keys[0])[..])
    );
    assert_eq!(e.get(cf, &fresh).unwrap(), None);
}

/// `sync_wal`, `wait_for_write_stall_clear` and `verify_storage` behave the same on both targets: buffered
/// commits made durable on demand, a verification of every SST that finds nothing wrong, and — after flipping a
/// byte in an SST — a report (or a typed error) that says so.
fn maintenance_calls_sync_verify_and_report_damage<D: Driver>() {
    let dir = tmp();
    {
        let db = D::open(dir.path()).unwrap();
        for i in 0..200 {
            let k = format!("k{i:04}").into_bytes();
            db.write(
                0,
                ConflictPolicy::LastWriteWins,
                &[W::Put(k, vec![b'x'; 200])],
                WriteOptions::buffered(),
            )
            .unwrap();
        }
        db.sync_wal().unwrap();
        db.flush(0).unwrap();
        assert!(db.wait_stall_clear(0).unwrap());
        let r = db.verify().unwrap();
        assert_eq!(r.health, cntryl_midge::EngineHealth::Healthy, "{r:?}");
        assert!(
            r.problems.is_empty() && r.sst_files_verified >= 1 && r.bytes_verified > 0,
            "{r:?}"
        );
        assert!(db.wait_stall_clear(999).is_err(), "unknown column family");
    }
    // Damage one SST block and verify again on the same target.
    let sst = std::fs::read_dir(dir.path())
        .unwrap()
        .chain(std::fs::read_dir(dir.path().join("sst")).into_iter().flatten())
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "sst"))
        .expect("an SST file");
    let mut bytes = std::fs::read(&sst).unwrap();
    bytes[100] ^= 0x40;
    std::fs::write(&sst, bytes).unwrap();
    match D::open(dir.path()).and_then(|db| db.verify()) {
        Ok(r) => assert!(
            !r.problems.is_empty() && r.health == cntryl_midge::EngineHealth::Corrupt,
            "{r:?}"
        ),
        Err(e) => assert!(matches!(e, MidgeError::Corruption(_)), "{e:?}"),
    }
}

/// Sync commits from several threads: every one acknowledged is visible whole and recovered, and they share
/// fsyncs (the component's host combines them; the native engine's group commit).
fn concurrent_sync_writers_share_fsyncs_and_stay_atomic<D: Driver>() {
    let dir = tmp();
    let (writers, per) = (8, 25);
    {
        let d = D::open(dir.path()).unwrap();
        let before = d.metrics().unwrap();
        std::thread::scope(|s| {
            for w in 0..writers {
                let d = &d;
                s.spawn(move || {
                    for i in 0..per {
                        let keys = ["a", "b", "c"].map(|part| b(&format!("w{w}-{i:03}-{part}")));
                        // Half the writers commit transactions, half write batches: both are grouped.
                        if w % 2 == 0 {
                            let rows: Vec<W> = keys.iter().map(|k| W::Put(k.clone(), b("v"))).collect();
                            d.write(0, LWW, &rows, WriteOptions::sync()).unwrap();
                        } else {
                            let ops: Vec<BatchOp> = keys
                                .iter()
                                .map(|k| BatchOp::Put {
                                    key: k.clone(),
                                    value: b("v"),
                                    ttl_secs: None,
                                })
                                .collect();
                            d.batch(0, &ops, WriteOptions::sync()).unwrap();
                        }
                        let seen = d.get(0, format!("w{w}-{i:03}-c").as_bytes()).unwrap();
                        assert_eq!(seen.as_deref(), Some(&b"v"[..]), "acknowledged but not visible");
                    }
                });
            }
            let d = &d;
            s.spawn(move || {
                for _ in 0..50 {
                    let rows = d.scan(0, &Query::new()).unwrap();
                    assert_eq!(rows.len() % 3, 0, "a transaction was partly visible");
                }
            });
        });
        let m = d.metrics().unwrap();
        let commits = (writers * per) as u64;
        assert_eq!(m.commits_total - before.commits_total, commits);
        let fsyncs = m.wal_fsync_count - before.wal_fsync_count;
        assert!(
            fsyncs < commits,
            "{fsyncs} fsyncs for {commits} concurrent sync commits: none shared"
        );
    }
    let d = D::open(dir.path()).unwrap();
    assert_eq!(d.scan(0, &Query::new()).unwrap().len(), writers * per * 3);
}

/// A write batch is atomic, honours every op kind and durability, and an invalid op fails the whole batch
/// with a typed error and nothing written.
fn write_batches_are_atomic_and_refuse_bad_input<D: Driver>() {
    let dir = tmp();
    let d = D::open(dir.path()).unwrap();
    let put = |k: &str, v: &str| BatchOp::Put {
        key: b(k),
        value: b(v),
        ttl_secs: None,
    };
    d.batch(
        0,
        &[put("a", "1"), put("b", "2"), put("c", "3"), put("d", "4")],
        WriteOptions::sync(),
    )
    .unwrap();
    d.batch(
        0,
        &[
            BatchOp::Delete { key: b("a") },
            BatchOp::DeleteRange {
                start: b("c"),
                end: b("d"),
            },
            put("e", "5"),
        ],
        WriteOptions::buffered(),
    )
    .unwrap();
    let rows = |d: &D| keys(&d.scan(0, &Query::new()).unwrap());
    assert_eq!(rows(&d), ["b", "d", "e"]);
    for bad in [
        vec![put("f", "6"), put("", "empty key")],
        vec![
            put("f", "6"),
            BatchOp::DeleteRange {
                start: b("z"),
                end: b("a"),
            },
        ],
    ] {
        let err = d.batch(0, &bad, WriteOptions::sync()).unwrap_err();
        assert!(matches!(err, MidgeError::InvalidArgument(_)), "{err:?}");
    }
    assert!(
        d.batch(99, &[put("f", "6")], WriteOptions::sync()).is_err(),
        "unknown column family"
    );
    assert_eq!(rows(&d), ["b", "d", "e"], "a refused batch wrote nothing");
    drop(d);
    let d = D::open(dir.path()).unwrap();
    assert_eq!(rows(&d), ["b", "d", "e"], "recovered");
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod native {
            $( #[test] fn $case() { super::$case::<super::Native>(); } )*
        }
        mod component {
            $( #[test] fn $case() { super::$case::<super::Wasm>(); } )*
        }
    };
}

conformance!(
    reads_writes_and_scans,
    error_variants_cross_the_boundary,
    conflict_policy_aborts_on_concurrent_writes,
    column_families_and_recovery_metrics_survive_reopen,
    large_keys_and_values_cross_the_boundary,
    point_reads_across_key_lengths_see_own_writes_then_the_snapshot,
    maintenance_calls_sync_verify_and_report_damage,
    concurrent_sync_writers_share_fsyncs_and_stay_atomic,
    write_batches_are_atomic_and_refuse_bad_input,
);

#[test]
fn a_database_written_natively_opens_in_the_component_and_vice_versa() {
    let dir = tmp();
    {
        let n = Native::open(dir.path()).unwrap();
        n.write(0, LWW, &[W::Put(b("from"), b("native"))], WriteOptions::sync())
            .unwrap();
    }
    {
        let w = Wasm::open(dir.path()).unwrap();
        assert_eq!(w.get(0, b"from").unwrap().as_deref(), Some(&b"native"[..]));
        w.write(0, LWW, &[W::Put(b("back"), b("component"))], WriteOptions::sync())
            .unwrap();
    }
    let n = Native::open(dir.path()).unwrap();
    assert_eq!(n.get(0, b"back").unwrap().as_deref(), Some(&b"component"[..]));
}
