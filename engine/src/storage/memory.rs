//! `memory`: an in-process file system for `OpenOptions::in_memory()` and tests.
//!
//! Every write is immediately "durable" for the life of the process; nothing survives it. Syncs are counted so
//! tests can see them.

use super::{File, FileSystem, LockGuard, OpenMode, parent_dir};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

type Data = Arc<RwLock<Vec<u8>>>;

#[derive(Debug, Default)]
struct State {
    files: BTreeMap<String, Data>,
    dirs: BTreeSet<String>,
    locks: BTreeSet<String>,
}

/// A [`FileSystem`] held in memory. Clones share the same tree.
#[derive(Clone, Default)]
pub struct MemoryFs {
    state: Arc<Mutex<State>>,
    syncs: Arc<AtomicU64>,
}

impl fmt::Debug for MemoryFs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MemoryFs")
    }
}

impl MemoryFs {
    /// An empty tree.
    pub fn new() -> MemoryFs {
        let fs = MemoryFs::default();
        fs.lock_state().dirs.insert(String::new());
        fs
    }

    /// How many `sync_data`/`sync_all`/`sync_dir` calls were made.
    pub fn sync_count(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn not_found(path: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{path}: not found"))
}

struct MemFile {
    data: Data,
    syncs: Arc<AtomicU64>,
    writable: bool,
}

impl fmt::Debug for MemFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MemFile")
    }
}

impl File for MemFile {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let d = self.data.read().unwrap_or_else(|p| p.into_inner());
        let Ok(off) = usize::try_from(offset) else {
            return Ok(0);
        };
        if off >= d.len() {
            return Ok(0);
        }
        let n = buf.len().min(d.len() - off);
        buf[..n].copy_from_slice(&d[off..off + n]);
        Ok(n)
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        if !self.writable {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "file opened read-only",
            ));
        }
        let off = usize::try_from(offset).map_err(|_| io::Error::other("offset too large"))?;
        let mut d = self.data.write().unwrap_or_else(|p| p.into_inner());
        if d.len() < off + data.len() {
            d.resize(off + data.len(), 0);
        }
        d[off..off + data.len()].copy_from_slice(data);
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.data.read().unwrap_or_else(|p| p.into_inner()).len() as u64)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let len = usize::try_from(len).map_err(|_| io::Error::other("length too large"))?;
        self.data
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .resize(len, 0);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.syncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn sync_all(&self) -> io::Result<()> {
        self.sync_data()
    }
}

#[derive(Debug)]
struct MemLock {
    state: Arc<Mutex<State>>,
    path: String,
}

impl Drop for MemLock {
    fn drop(&mut self) {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .locks
            .remove(&self.path);
    }
}

impl LockGuard for MemLock {}

impl FileSystem for MemoryFs {
    fn open(&self, path: &str, mode: OpenMode) -> io::Result<Arc<dyn File>> {
        let mut st = self.lock_state();
        if !st.dirs.contains(parent_dir(path)) {
            return Err(not_found(parent_dir(path)));
        }
        let data = match (mode, st.files.get(path)) {
            (OpenMode::Read | OpenMode::ReadWrite, Some(d)) => d.clone(),
            (OpenMode::Read | OpenMode::ReadWrite, None) => return Err(not_found(path)),
            (OpenMode::CreateNew, Some(_)) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{path} exists"),
                ));
            }
            (OpenMode::CreateTruncate, Some(d)) => {
                d.write().unwrap_or_else(|p| p.into_inner()).clear();
                d.clone()
            }
            (OpenMode::CreateNew | OpenMode::CreateTruncate, None) => {
                let d: Data = Arc::default();
                st.files.insert(path.to_string(), d.clone());
                d
            }
        };
        Ok(Arc::new(MemFile {
            data,
            syncs: self.syncs.clone(),
            writable: mode != OpenMode::Read,
        }))
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut st = self.lock_state();
        let d = st.files.remove(from).ok_or_else(|| not_found(from))?;
        st.files.insert(to.to_string(), d);
        Ok(())
    }

    fn remove(&self, path: &str) -> io::Result<()> {
        self.lock_state()
            .files
            .remove(path)
            .map(|_| ())
            .ok_or_else(|| not_found(path))
    }

    fn list(&self, dir: &str) -> io::Result<Vec<String>> {
        let st = self.lock_state();
        if !st.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        Ok(super::children(st.files.keys().chain(st.dirs.iter()), dir))
    }

    fn mkdir_all(&self, dir: &str) -> io::Result<()> {
        self.lock_state().dirs.extend(super::ancestry(dir));
        Ok(())
    }

    fn sync_dir(&self, dir: &str) -> io::Result<()> {
        if !self.lock_state().dirs.contains(dir) {
            return Err(not_found(dir));
        }
        self.syncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn exists(&self, path: &str) -> io::Result<bool> {
        let st = self.lock_state();
        Ok(st.files.contains_key(path) || st.dirs.contains(path))
    }

    fn lock(&self, path: &str) -> io::Result<Box<dyn LockGuard>> {
        let mut st = self.lock_state();
        if !st.locks.insert(path.to_string()) {
            return Err(io::Error::new(io::ErrorKind::WouldBlock, "lock held"));
        }
        Ok(Box::new(MemLock {
            state: self.state.clone(),
            path: path.to_string(),
        }))
    }

    fn describe(&self) -> String {
        "memory".to_string()
    }
}
