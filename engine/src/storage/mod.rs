//! The I/O seam: every byte the engine reads or writes goes through [`FileSystem`] and [`File`].
//!
//! Backends: [`local`] (std::fs; also what a `wasmtime run` command component uses over wasi:filesystem),
//! and [`memory`] (for `OpenOptions::in_memory()`); any other backend (a WASI host import, a fault simulator)
//! implements the same traits and is passed with `OpenOptions::with_file_system`.
//! Platform `cfg`s are allowed here and in `runtime/` only. Paths are relative to the database root and use
//! `/` separators on every target, so the engine never builds an OS path itself.

use std::fmt::Debug;
use std::io;
use std::sync::Arc;

pub mod local;
pub mod memory;
pub mod object;
pub mod object_sim;
pub mod sim;

/// How [`FileSystem::open`] treats an existing or missing file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Open an existing file for reading only.
    Read,
    /// Open an existing file for reading and writing.
    ReadWrite,
    /// Create a new file; fails with `AlreadyExists` if it exists.
    CreateNew,
    /// Create the file if missing, truncating it to zero length if present.
    CreateTruncate,
}

/// One open file. All methods take `&self` and are positional, so one handle can be appended to by a committer
/// while another thread syncs it.
#[allow(clippy::len_without_is_empty)]
pub trait File: Send + Sync + Debug {
    /// Reads up to `buf.len()` bytes at `offset`; returns how many were read (0 at end of file).
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize>;
    /// Writes all of `data` at `offset`, extending the file as needed. The bytes are visible to readers at once
    /// but are **not durable** until a later [`File::sync_data`] returns `Ok`.
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Current length in bytes.
    fn len(&self) -> io::Result<u64>;
    /// Truncates or extends the file. Durable only after [`File::sync_all`].
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Makes every write issued before this call durable (data and the size needed to read it back).
    /// An error means an unknown prefix of those writes may be lost: the caller must not acknowledge them and
    /// must not retry-and-trust (see "fsyncgate").
    fn sync_data(&self) -> io::Result<()>;
    /// Like [`File::sync_data`] and also flushes metadata such as the length after `set_len`.
    fn sync_all(&self) -> io::Result<()>;

    /// Reads exactly `buf.len()` bytes at `offset`, failing with `UnexpectedEof` on a short file.
    fn read_exact_at(&self, mut offset: u64, mut buf: &mut [u8]) -> io::Result<()> {
        while !buf.is_empty() {
            let n = self.read_at(offset, buf)?;
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "short read"));
            }
            offset += n as u64;
            buf = &mut buf[n..];
        }
        Ok(())
    }

    /// Reads the whole file.
    fn read_all(&self) -> io::Result<Vec<u8>> {
        let len = self.len()?;
        let len = usize::try_from(len).map_err(|_| io::Error::other("file too large for this target"))?;
        let mut buf = vec![0u8; len];
        self.read_exact_at(0, &mut buf)?;
        Ok(buf)
    }
}

/// A held exclusive lock; released on drop.
pub trait LockGuard: Send + Sync + Debug {}

/// A directory tree rooted at the database directory.
pub trait FileSystem: Send + Sync + Debug {
    /// Opens `path` (relative to the root).
    fn open(&self, path: &str, mode: OpenMode) -> io::Result<Arc<dyn File>>;
    /// Atomically replaces `to` with `from`. Durable only after [`FileSystem::sync_dir`] of the parent.
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    /// Removes a file. Durable only after [`FileSystem::sync_dir`] of the parent.
    fn remove(&self, path: &str) -> io::Result<()>;
    /// File names (not paths) directly inside `dir`, sorted bytewise. A missing directory is `NotFound`.
    fn list(&self, dir: &str) -> io::Result<Vec<String>>;
    /// Creates `dir` and its parents. Durable only after syncing each parent directory.
    fn mkdir_all(&self, dir: &str) -> io::Result<()>;
    /// Makes creations, renames and removals of entries in `dir` durable. `""` is the root.
    fn sync_dir(&self, dir: &str) -> io::Result<()>;
    /// Whether `path` exists (file or directory).
    fn exists(&self, path: &str) -> io::Result<bool>;
    /// Takes an exclusive, non-blocking lock on `path` (created if missing). `WouldBlock` if held elsewhere.
    fn lock(&self, path: &str) -> io::Result<Box<dyn LockGuard>>;
    /// A short description of the backend (for diagnostics).
    fn describe(&self) -> String;
}

/// Shared handle to a file system backend.
pub type SharedFs = Arc<dyn FileSystem>;

/// The parent directory of a relative path (`""` for the root).
pub(crate) fn parent_dir(path: &str) -> &str {
    match path.rfind('/') {
        Some(i) => &path[..i],
        None => "",
    }
}

/// Names (not paths) of the entries directly inside `dir`, among `paths` (files and directories), sorted.
pub(crate) fn children<'a>(paths: impl Iterator<Item = &'a String>, dir: &str) -> Vec<String> {
    let mut out: Vec<String> = paths
        .filter(|p| !p.is_empty() && parent_dir(p) == dir)
        .map(|p| p.rsplit('/').next().unwrap_or(p).to_string())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// `dir` and each of its ancestors, shallowest first (`"a/b"` → `["a", "a/b"]`).
pub(crate) fn ancestry(dir: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for c in dir.split('/').filter(|c| !c.is_empty()) {
        if !cur.is_empty() {
            cur.push('/');
        }
        cur.push_str(c);
        out.push(cur.clone());
    }
    out
}

/// Writes `data` to `path` with the publish protocol: write a temp file, fsync it, rename over `path`, fsync
/// the directory. After `Ok`, a crash leaves either the old file or the new one, never a mix.
pub(crate) fn publish_file(fs: &dyn FileSystem, path: &str, data: &[u8]) -> io::Result<()> {
    let tmp = format!("{path}.tmp");
    let f = fs.open(&tmp, OpenMode::CreateTruncate)?;
    f.write_at(0, data)?;
    if !cfg!(feature = "canary-rename-before-fsync") {
        f.sync_all()?;
    }
    drop(f);
    fs.rename(&tmp, path)?;
    if !cfg!(feature = "canary-skip-dir-fsync") {
        fs.sync_dir(parent_dir(path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
