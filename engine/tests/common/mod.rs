//! Test support: a file system over `MemoryFs` that fails chosen operations, and one-key put / get helpers.
#![allow(dead_code)]

pub mod sweep;

use cntryl_midge::prelude::*;
use cntryl_midge::storage::memory::MemoryFs;
use cntryl_midge::storage::{File, FileSystem, LockGuard, OpenMode};
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Counts mutating operations (create, write, truncate, sync, rename, remove, mkdir, dir sync) and fails the
/// one whose index equals `fail_at`, or every sync while `fail_syncs` is set.
#[derive(Debug, Clone, Default)]
pub struct FaultFs {
    pub inner: MemoryFs,
    pub ops: Arc<AtomicU64>,
    pub fail_at: Arc<AtomicU64>,
    pub fail_syncs: Arc<AtomicBool>,
}

impl FaultFs {
    pub fn new() -> FaultFs {
        let f = FaultFs {
            inner: MemoryFs::new(),
            ..Default::default()
        };
        f.disarm();
        f
    }
    pub fn disarm(&self) {
        self.fail_at.store(u64::MAX, Ordering::SeqCst);
    }
    /// Fails the `n`-th mutating operation from now.
    pub fn arm(&self, n: u64) {
        self.fail_at
            .store(self.ops.load(Ordering::SeqCst) + n, Ordering::SeqCst);
    }
    pub fn ops(&self) -> u64 {
        self.ops.load(Ordering::SeqCst)
    }
    fn tick(&self, sync: bool) -> io::Result<()> {
        let i = self.ops.fetch_add(1, Ordering::SeqCst);
        if i == self.fail_at.load(Ordering::SeqCst) || (sync && self.fail_syncs.load(Ordering::SeqCst)) {
            return Err(io::Error::other("injected EIO"));
        }
        Ok(())
    }
}

#[derive(Debug)]
struct FaultFile {
    inner: Arc<dyn File>,
    fs: FaultFs,
}

impl File for FaultFile {
    fn read_at(&self, o: u64, b: &mut [u8]) -> io::Result<usize> {
        self.inner.read_at(o, b)
    }
    fn write_at(&self, o: u64, d: &[u8]) -> io::Result<()> {
        self.fs.tick(false)?;
        self.inner.write_at(o, d)
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn set_len(&self, l: u64) -> io::Result<()> {
        self.fs.tick(false)?;
        self.inner.set_len(l)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.fs.tick(true)?;
        self.inner.sync_data()
    }
    fn sync_all(&self) -> io::Result<()> {
        self.fs.tick(true)?;
        self.inner.sync_all()
    }
}

impl FileSystem for FaultFs {
    fn open(&self, p: &str, m: OpenMode) -> io::Result<Arc<dyn File>> {
        if matches!(m, OpenMode::CreateNew | OpenMode::CreateTruncate) {
            self.tick(false)?;
        }
        Ok(Arc::new(FaultFile {
            inner: self.inner.open(p, m)?,
            fs: self.clone(),
        }))
    }
    fn rename(&self, a: &str, b: &str) -> io::Result<()> {
        self.tick(false)?;
        self.inner.rename(a, b)
    }
    fn remove(&self, p: &str) -> io::Result<()> {
        self.tick(false)?;
        self.inner.remove(p)
    }
    fn list(&self, d: &str) -> io::Result<Vec<String>> {
        self.inner.list(d)
    }
    fn mkdir_all(&self, d: &str) -> io::Result<()> {
        self.tick(false)?;
        self.inner.mkdir_all(d)
    }
    fn sync_dir(&self, d: &str) -> io::Result<()> {
        self.tick(true)?;
        self.inner.sync_dir(d)
    }
    fn exists(&self, p: &str) -> io::Result<bool> {
        self.inner.exists(p)
    }
    fn lock(&self, p: &str) -> io::Result<Box<dyn LockGuard>> {
        self.inner.lock(p)
    }
    fn describe(&self) -> String {
        "fault-injecting memory fs".into()
    }
}

/// Commits one put to the default column family.
pub fn put(engine: &Engine, k: &str, v: &str, opts: WriteOptions) -> MidgeResult<()> {
    let mut tx = engine.begin_tx(0, TransactionMode::ReadWrite)?;
    tx.put(k.as_bytes().to_vec(), v.as_bytes().to_vec(), None)?;
    tx.commit(opts)
}

/// Reads one key of the default column family in a fresh snapshot.
pub fn get(engine: &Engine, k: &str) -> Option<String> {
    let tx = engine.begin_tx(0, TransactionMode::ReadOnly).unwrap();
    tx.get(k.as_bytes())
        .unwrap()
        .map(|b| String::from_utf8(b.to_vec()).unwrap())
}
