//! `local`: the storage seam over `std::fs`, rooted at the database directory.
//!
//! Natively this is plain POSIX I/O; inside a `wasmtime run` command component the same code reaches the host
//! through wasi:filesystem (`sync_data` becomes a host `fsync`). Positional I/O uses `FileExt` on unix and a
//! seek under a mutex elsewhere.
#![allow(clippy::disallowed_methods)]

use super::{File, FileSystem, LockGuard, OpenMode};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How long `lock` keeps retrying a lock that looks held (see there) before reporting it held.
#[cfg(not(target_os = "wasi"))]
const LOCK_RETRY_WINDOW: std::time::Duration = std::time::Duration::from_millis(250);

/// A [`FileSystem`] over a real directory.
#[derive(Debug, Clone)]
pub struct LocalFs {
    root: PathBuf,
}

impl LocalFs {
    /// A file system rooted at `root` (which need not exist yet; see [`FileSystem::mkdir_all`]`("")`).
    pub fn new(root: impl Into<PathBuf>) -> LocalFs {
        LocalFs { root: root.into() }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn full(&self, rel: &str) -> io::Result<PathBuf> {
        if rel.split('/').any(|c| c == "..")
            || rel.starts_with('/')
            || rel.contains('\\')
            || rel.contains('\0')
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("path escapes the root: {rel}"),
            ));
        }
        let mut p = self.root.clone();
        for c in rel.split('/').filter(|c| !c.is_empty()) {
            p.push(c);
        }
        Ok(p)
    }
}

struct LocalFile {
    #[cfg(unix)]
    file: std::fs::File,
    #[cfg(not(unix))]
    file: std::sync::Mutex<std::fs::File>,
    path: PathBuf,
}

impl fmt::Debug for LocalFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalFile").field("path", &self.path).finish()
    }
}

impl LocalFile {
    fn new(file: std::fs::File, path: PathBuf) -> LocalFile {
        #[cfg(unix)]
        {
            LocalFile { file, path }
        }
        #[cfg(not(unix))]
        {
            LocalFile {
                file: std::sync::Mutex::new(file),
                path,
            }
        }
    }

    #[cfg(not(unix))]
    fn with<T>(&self, f: impl FnOnce(&mut std::fs::File) -> io::Result<T>) -> io::Result<T> {
        let mut g = self.file.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }
}

impl File for LocalFile {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::FileExt;
            self.file.read_at(buf, offset)
        }
        #[cfg(not(unix))]
        {
            use std::io::{Read, Seek, SeekFrom};
            self.with(|f| {
                f.seek(SeekFrom::Start(offset))?;
                f.read(buf)
            })
        }
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::FileExt;
            self.file.write_all_at(data, offset)
        }
        #[cfg(not(unix))]
        {
            use std::io::{Seek, SeekFrom, Write};
            self.with(|f| {
                f.seek(SeekFrom::Start(offset))?;
                f.write_all(data)
            })
        }
    }

    fn len(&self) -> io::Result<u64> {
        #[cfg(unix)]
        {
            Ok(self.file.metadata()?.len())
        }
        #[cfg(not(unix))]
        {
            self.with(|f| Ok(f.metadata()?.len()))
        }
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        #[cfg(unix)]
        {
            self.file.set_len(len)
        }
        #[cfg(not(unix))]
        {
            self.with(|f| f.set_len(len))
        }
    }

    fn sync_data(&self) -> io::Result<()> {
        #[cfg(unix)]
        {
            self.file.sync_data()
        }
        #[cfg(not(unix))]
        {
            self.with(|f| f.sync_data())
        }
    }

    fn sync_all(&self) -> io::Result<()> {
        #[cfg(unix)]
        {
            self.file.sync_all()
        }
        #[cfg(not(unix))]
        {
            self.with(|f| f.sync_all())
        }
    }
}

struct LocalLock {
    _file: std::fs::File,
}

impl fmt::Debug for LocalLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LocalLock")
    }
}

impl LockGuard for LocalLock {}

impl FileSystem for LocalFs {
    fn open(&self, path: &str, mode: OpenMode) -> io::Result<Arc<dyn File>> {
        let full = self.full(path)?;
        let mut o = std::fs::OpenOptions::new();
        match mode {
            OpenMode::Read => o.read(true),
            OpenMode::ReadWrite => o.read(true).write(true),
            OpenMode::CreateNew => o.read(true).write(true).create_new(true),
            OpenMode::CreateTruncate => o.read(true).write(true).create(true).truncate(true),
        };
        let file = o.open(&full)?;
        if file.metadata()?.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                format!("{path} is a directory"),
            ));
        }
        Ok(Arc::new(LocalFile::new(file, full)))
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        std::fs::rename(self.full(from)?, self.full(to)?)
    }

    fn remove(&self, path: &str) -> io::Result<()> {
        std::fs::remove_file(self.full(path)?)
    }

    fn list(&self, dir: &str) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for e in std::fs::read_dir(self.full(dir)?)? {
            let e = e?;
            if let Some(n) = e.file_name().to_str() {
                names.push(n.to_string());
            }
        }
        names.sort();
        Ok(names)
    }

    fn mkdir_all(&self, dir: &str) -> io::Result<()> {
        std::fs::create_dir_all(self.full(dir)?)
    }

    fn sync_dir(&self, dir: &str) -> io::Result<()> {
        let d = std::fs::File::open(self.full(dir)?)?;
        d.sync_all()
    }

    fn exists(&self, path: &str) -> io::Result<bool> {
        match std::fs::metadata(self.full(path)?) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn lock(&self, path: &str) -> io::Result<Box<dyn LockGuard>> {
        let full = self.full(path)?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(full)?;
        #[cfg(not(target_os = "wasi"))]
        {
            // flock belongs to the open file description, and a child process being spawned by any thread of
            // this process holds a copy of every descriptor until its exec closes them. So a lock released by a
            // close a moment ago can still look held: retry for a short, bounded window before reporting it.
            let mut backoff = std::time::Duration::from_millis(1);
            let mut waited = std::time::Duration::ZERO;
            loop {
                match file.try_lock() {
                    Ok(()) => break,
                    Err(std::fs::TryLockError::WouldBlock) if waited < LOCK_RETRY_WINDOW => {
                        std::thread::sleep(backoff);
                        waited += backoff;
                        backoff = (backoff * 2).min(std::time::Duration::from_millis(50));
                    }
                    Err(std::fs::TryLockError::WouldBlock) => {
                        return Err(io::Error::new(
                            io::ErrorKind::WouldBlock,
                            "database is locked by another process",
                        ));
                    }
                    Err(std::fs::TryLockError::Error(e)) => return Err(e),
                }
            }
        }
        // wasi:filesystem has no advisory locks; the host that grants the directory is the single writer.
        Ok(Box::new(LocalLock { _file: file }))
    }

    fn describe(&self) -> String {
        format!("local:{}", self.root.display())
    }
}
