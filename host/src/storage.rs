//! The host half of the `cntryl:midge/fs` and `cntryl:midge/objects` imports: each call is served by one of the
//! engine's own storage backends (`LocalFs`, `MemoryFs`, `SimFs`, any `ObjectStore`), so a commit through the
//! component performs the very syscalls the native engine would. Guest misuse (a path escaping the root, a
//! missing capability) comes back as a typed I/O error, never a host panic.

use crate::State;
use crate::bindings::cntryl::midge::{fs as wfs, objects as wobj};
use cntryl_midge::storage::object::{ObjectError, ObjectMeta, PutMode};
use cntryl_midge::storage::{File, LockGuard, OpenMode};
use std::io;
use std::sync::Arc;
use wasmtime::component::Resource;

/// A host file handed to the guest as a `file` resource, with the path it was opened at.
#[derive(Debug)]
pub struct HostFile(Arc<dyn File>, String);

/// A held lock handed to the guest as a `lock-guard` resource; dropping it releases the lock.
#[derive(Debug)]
pub struct HostLock(#[allow(dead_code)] Box<dyn LockGuard>);

fn io_err(e: io::Error) -> wfs::IoError {
    use io::ErrorKind as K;
    use wfs::ErrorKind as W;
    let kind = match e.kind() {
        K::NotFound => W::NotFound,
        K::AlreadyExists => W::AlreadyExists,
        K::WouldBlock => W::WouldBlock,
        K::UnexpectedEof => W::UnexpectedEof,
        K::StorageFull => W::NoSpace,
        K::InvalidInput => W::InvalidInput,
        _ if e.raw_os_error() == Some(28) => W::NoSpace,
        _ => W::Other,
    };
    wfs::IoError {
        kind,
        message: e.to_string(),
    }
}

fn denied(what: &str) -> wfs::IoError {
    wfs::IoError {
        kind: wfs::ErrorKind::Other,
        message: format!("{what}: the host granted no file system to this instance"),
    }
}

fn bad_handle(e: impl std::fmt::Display) -> wfs::IoError {
    wfs::IoError {
        kind: wfs::ErrorKind::InvalidInput,
        message: format!("bad file handle: {e}"),
    }
}

/// Rejects paths that could leave the granted root (absolute, `..`, backslashes, NUL).
fn check_path(path: &str) -> Result<(), wfs::IoError> {
    let bad = path.starts_with('/')
        || path.contains('\\')
        || path.contains('\0')
        || path.split('/').any(|c| c == ".." || c == ".");
    if bad {
        return Err(wfs::IoError {
            kind: wfs::ErrorKind::InvalidInput,
            message: format!("path {path:?} is not a relative path inside the granted root"),
        });
    }
    Ok(())
}

impl State {
    fn fs(&self, what: &str) -> Result<&cntryl_midge::storage::SharedFs, wfs::IoError> {
        self.fs.as_ref().ok_or_else(|| denied(what))
    }

    fn file(&self, f: &Resource<HostFile>) -> Result<Arc<dyn File>, wfs::IoError> {
        Ok(self.table.get(f).map_err(bad_handle)?.0.clone())
    }

    /// The file the component has open at `path` through the `fs` import, if any (see
    /// [`State::open_files`]).
    pub(crate) fn open_file(&self, path: &str) -> Option<Arc<dyn File>> {
        self.open_files.get(path)?.upgrade()
    }
}

impl wfs::HostFile for State {
    fn read_at(&mut self, f: Resource<HostFile>, offset: u64, len: u32) -> Result<Vec<u8>, wfs::IoError> {
        let file = self.file(&f)?;
        // Never trust the guest's length for an allocation larger than the file.
        let avail = file.len().map_err(io_err)?.saturating_sub(offset);
        let n = usize::try_from(avail.min(u64::from(len))).unwrap_or(0);
        let mut buf = vec![0u8; n];
        let mut got = 0;
        while got < n {
            match file
                .read_at(offset + got as u64, &mut buf[got..])
                .map_err(io_err)?
            {
                0 => break,
                k => got += k,
            }
        }
        buf.truncate(got);
        Ok(buf)
    }

    fn write_at(&mut self, f: Resource<HostFile>, offset: u64, data: Vec<u8>) -> Result<(), wfs::IoError> {
        self.file(&f)?.write_at(offset, &data).map_err(io_err)
    }

    fn len(&mut self, f: Resource<HostFile>) -> Result<u64, wfs::IoError> {
        self.file(&f)?.len().map_err(io_err)
    }

    fn set_len(&mut self, f: Resource<HostFile>, len: u64) -> Result<(), wfs::IoError> {
        self.file(&f)?.set_len(len).map_err(io_err)
    }

    fn sync_data(&mut self, f: Resource<HostFile>) -> Result<(), wfs::IoError> {
        self.file(&f)?.sync_data().map_err(io_err)
    }

    fn sync_all(&mut self, f: Resource<HostFile>) -> Result<(), wfs::IoError> {
        self.file(&f)?.sync_all().map_err(io_err)
    }

    fn drop(&mut self, f: Resource<HostFile>) -> wasmtime::Result<()> {
        let HostFile(file, path) = self.table.delete(f)?;
        if self
            .open_files
            .get(&path)
            .is_some_and(|w| std::ptr::addr_eq(w.as_ptr(), Arc::as_ptr(&file)))
        {
            self.open_files.remove(&path);
        }
        Ok(())
    }
}

impl wfs::HostLockGuard for State {
    fn drop(&mut self, l: Resource<HostLock>) -> wasmtime::Result<()> {
        self.table.delete(l)?;
        Ok(())
    }
}

impl wfs::Host for State {
    fn open(&mut self, path: String, mode: wfs::OpenMode) -> Result<Resource<HostFile>, wfs::IoError> {
        check_path(&path)?;
        let mode = match mode {
            wfs::OpenMode::Read => OpenMode::Read,
            wfs::OpenMode::ReadWrite => OpenMode::ReadWrite,
            wfs::OpenMode::CreateNew => OpenMode::CreateNew,
            wfs::OpenMode::CreateTruncate => OpenMode::CreateTruncate,
        };
        let file = self.fs("open")?.open(&path, mode).map_err(io_err)?;
        self.open_files.insert(path.clone(), Arc::downgrade(&file));
        self.table.push(HostFile(file, path)).map_err(bad_handle)
    }

    fn rename(&mut self, src: String, dst: String) -> Result<(), wfs::IoError> {
        check_path(&src)?;
        check_path(&dst)?;
        self.fs("rename")?.rename(&src, &dst).map_err(io_err)
    }

    fn remove(&mut self, path: String) -> Result<(), wfs::IoError> {
        check_path(&path)?;
        self.fs("remove")?.remove(&path).map_err(io_err)
    }

    fn list(&mut self, dir: String) -> Result<Vec<String>, wfs::IoError> {
        check_path(&dir)?;
        self.fs("list")?.list(&dir).map_err(io_err)
    }

    fn mkdir_all(&mut self, dir: String) -> Result<(), wfs::IoError> {
        check_path(&dir)?;
        self.fs("mkdir")?.mkdir_all(&dir).map_err(io_err)
    }

    fn sync_dir(&mut self, dir: String) -> Result<(), wfs::IoError> {
        check_path(&dir)?;
        self.fs("sync_dir")?.sync_dir(&dir).map_err(io_err)
    }

    fn exists(&mut self, path: String) -> Result<bool, wfs::IoError> {
        check_path(&path)?;
        self.fs("exists")?.exists(&path).map_err(io_err)
    }

    fn acquire_lock(&mut self, path: String) -> Result<Resource<HostLock>, wfs::IoError> {
        check_path(&path)?;
        let guard = self.fs("lock")?.lock(&path).map_err(io_err)?;
        self.table.push(HostLock(guard)).map_err(bad_handle)
    }

    fn describe(&mut self) -> String {
        match &self.fs {
            Some(fs) => fs.describe(),
            None => "none".into(),
        }
    }
}

fn obj_err(e: ObjectError) -> wobj::ObjectError {
    use wobj::ObjectError as W;
    match e {
        ObjectError::NotFound(s) => W::NotFound(s),
        ObjectError::AlreadyExists(s) => W::AlreadyExists(s),
        ObjectError::PreconditionFailed(s) => W::PreconditionFailed(s),
        ObjectError::Ambiguous(s) => W::Ambiguous(s),
        ObjectError::Other(s) => W::Other(s),
        other => W::Other(other.to_string()),
    }
}

fn meta(m: ObjectMeta) -> wobj::ObjectMeta {
    wobj::ObjectMeta {
        path: m.path,
        size: m.size,
        etag: m.etag,
    }
}

impl State {
    fn objects(&self) -> Result<&cntryl_midge::storage::object::SharedObjectStore, wobj::ObjectError> {
        self.objects.as_ref().ok_or_else(|| {
            wobj::ObjectError::Other("the host granted no object store to this instance".into())
        })
    }
}

impl wobj::Host for State {
    fn put(
        &mut self,
        path: String,
        data: Vec<u8>,
        mode: wobj::PutMode,
    ) -> Result<wobj::ObjectMeta, wobj::ObjectError> {
        let mode = match mode {
            wobj::PutMode::Create => PutMode::Create,
            wobj::PutMode::IfMatch(tag) => PutMode::IfMatch(tag),
            wobj::PutMode::Overwrite => PutMode::Overwrite,
        };
        self.objects()?
            .put(&path, data.into(), mode)
            .map(meta)
            .map_err(obj_err)
    }

    fn get(&mut self, path: String) -> Result<(Vec<u8>, wobj::ObjectMeta), wobj::ObjectError> {
        let (data, m) = self.objects()?.get(&path).map_err(obj_err)?;
        Ok((data.to_vec(), meta(m)))
    }

    fn get_range(&mut self, path: String, start: u64, end: u64) -> Result<Vec<u8>, wobj::ObjectError> {
        if start > end {
            return Err(wobj::ObjectError::Other(format!("bad range {start}..{end}")));
        }
        let data = self.objects()?.get_range(&path, start..end).map_err(obj_err)?;
        Ok(data.to_vec())
    }

    fn head(&mut self, path: String) -> Result<wobj::ObjectMeta, wobj::ObjectError> {
        self.objects()?.head(&path).map(meta).map_err(obj_err)
    }

    fn list(&mut self, prefix: String) -> Result<Vec<wobj::ObjectMeta>, wobj::ObjectError> {
        Ok(self
            .objects()?
            .list(&prefix)
            .map_err(obj_err)?
            .into_iter()
            .map(meta)
            .collect())
    }

    fn delete(&mut self, path: String) -> Result<(), wobj::ObjectError> {
        self.objects()?.delete(&path).map_err(obj_err)
    }
}

/// The shared `types` interface has no functions; its host trait is empty.
impl crate::bindings::cntryl::midge::types::Host for State {}
