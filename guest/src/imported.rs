//! The `imported` storage backend: the engine's [`FileSystem`] / [`File`] and [`ObjectStore`] traits over the
//! `cntryl:midge/fs` and `cntryl:midge/objects` imports. Each trait call is exactly one import call, and the
//! host serves it with one of the engine's own backends, so the I/O sequence (and every fsync) is the one the
//! native engine issues. No engine logic lives here: only type conversions.

use crate::plugin::cntryl::midge::{fs as wfs, objects as wobj};
use cntryl_midge::Bytes;
use cntryl_midge::storage::object::{ObjectError, ObjectMeta, ObjectStore, PutMode};
use cntryl_midge::storage::{File, FileSystem, LockGuard, OpenMode};
use std::io;
use std::ops::Range;
use std::sync::Arc;

fn io_err(e: wfs::IoError) -> io::Error {
    use io::ErrorKind as K;
    use wfs::ErrorKind as W;
    let kind = match e.kind {
        W::NotFound => K::NotFound,
        W::AlreadyExists => K::AlreadyExists,
        W::WouldBlock => K::WouldBlock,
        W::UnexpectedEof => K::UnexpectedEof,
        W::NoSpace => K::StorageFull,
        W::InvalidInput => K::InvalidInput,
        W::Other => K::Other,
    };
    io::Error::new(kind, e.message)
}

/// The host-granted file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct ImportedFs;

/// A file opened through the import (the handle is owned; dropping it closes the host file).
#[derive(Debug)]
struct ImportedFile(wfs::File);

#[derive(Debug)]
struct ImportedLock(#[allow(dead_code)] wfs::LockGuard);

impl LockGuard for ImportedLock {}

impl File for ImportedFile {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let len = u32::try_from(buf.len()).unwrap_or(u32::MAX);
        let data = self.0.read_at(offset, len).map_err(io_err)?;
        let n = data.len().min(buf.len());
        buf[..n].copy_from_slice(&data[..n]);
        Ok(n)
    }
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.0.write_at(offset, data).map_err(io_err)
    }
    fn len(&self) -> io::Result<u64> {
        self.0.len().map_err(io_err)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len).map_err(io_err)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data().map_err(io_err)
    }
    fn sync_all(&self) -> io::Result<()> {
        self.0.sync_all().map_err(io_err)
    }
}

impl FileSystem for ImportedFs {
    fn open(&self, path: &str, mode: OpenMode) -> io::Result<Arc<dyn File>> {
        let mode = match mode {
            OpenMode::Read => wfs::OpenMode::Read,
            OpenMode::ReadWrite => wfs::OpenMode::ReadWrite,
            OpenMode::CreateNew => wfs::OpenMode::CreateNew,
            OpenMode::CreateTruncate => wfs::OpenMode::CreateTruncate,
        };
        Ok(Arc::new(ImportedFile(wfs::open(path, mode).map_err(io_err)?)))
    }
    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        wfs::rename(from, to).map_err(io_err)
    }
    fn remove(&self, path: &str) -> io::Result<()> {
        wfs::remove(path).map_err(io_err)
    }
    fn list(&self, dir: &str) -> io::Result<Vec<String>> {
        wfs::list(dir).map_err(io_err)
    }
    fn mkdir_all(&self, dir: &str) -> io::Result<()> {
        wfs::mkdir_all(dir).map_err(io_err)
    }
    fn sync_dir(&self, dir: &str) -> io::Result<()> {
        wfs::sync_dir(dir).map_err(io_err)
    }
    fn exists(&self, path: &str) -> io::Result<bool> {
        wfs::exists(path).map_err(io_err)
    }
    fn lock(&self, path: &str) -> io::Result<Box<dyn LockGuard>> {
        Ok(Box::new(ImportedLock(wfs::acquire_lock(path).map_err(io_err)?)))
    }
    fn describe(&self) -> String {
        format!("imported({})", wfs::describe())
    }
}

/// The host-granted object store.
#[derive(Debug, Default, Clone, Copy)]
pub struct ImportedObjects;

fn obj_err(e: wobj::ObjectError) -> ObjectError {
    use wobj::ObjectError as W;
    match e {
        W::NotFound(s) => ObjectError::NotFound(s),
        W::AlreadyExists(s) => ObjectError::AlreadyExists(s),
        W::PreconditionFailed(s) => ObjectError::PreconditionFailed(s),
        W::Ambiguous(s) => ObjectError::Ambiguous(s),
        W::Other(s) => ObjectError::Other(s),
    }
}

fn meta(m: wobj::ObjectMeta) -> ObjectMeta {
    ObjectMeta {
        path: m.path,
        size: m.size,
        etag: m.etag,
    }
}

impl ObjectStore for ImportedObjects {
    fn put(&self, path: &str, data: Bytes, mode: PutMode) -> Result<ObjectMeta, ObjectError> {
        let mode = match mode {
            PutMode::Create => wobj::PutMode::Create,
            PutMode::IfMatch(tag) => wobj::PutMode::IfMatch(tag),
            PutMode::Overwrite => wobj::PutMode::Overwrite,
        };
        wobj::put(path, &data, &mode).map(meta).map_err(obj_err)
    }
    fn get(&self, path: &str) -> Result<(Bytes, ObjectMeta), ObjectError> {
        let (data, m) = wobj::get(path).map_err(obj_err)?;
        Ok((Bytes::from(data), meta(m)))
    }
    fn get_range(&self, path: &str, range: Range<u64>) -> Result<Bytes, ObjectError> {
        wobj::get_range(path, range.start, range.end)
            .map(Bytes::from)
            .map_err(obj_err)
    }
    fn head(&self, path: &str) -> Result<ObjectMeta, ObjectError> {
        wobj::head(path).map(meta).map_err(obj_err)
    }
    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, ObjectError> {
        Ok(wobj::list(prefix)
            .map_err(obj_err)?
            .into_iter()
            .map(meta)
            .collect())
    }
    fn delete(&self, path: &str) -> Result<(), ObjectError> {
        wobj::delete(path).map_err(obj_err)
    }
}
