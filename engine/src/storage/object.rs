//! The object-store half of the storage seam: whole-object puts with conditional modes (how a cloud writer
//! fences others), gets, ranged gets, listing and deletes.
//!
//! Backends here are pure Rust and build for wasm32: [`MemoryObjectStore`] (tests, simulation) and
//! [`FsObjectStore`] (objects as files under a [`super::FileSystem`] — the `cloud_simulated` layout). A network store
//! (S3 via the `object_store` crate) lives in the host, which hands it to the engine through this trait.

use super::{OpenMode, SharedFs, parent_dir};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::Range;
use std::sync::{Arc, Mutex};

/// How a put treats an existing object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutMode {
    /// Fail with [`ObjectError::AlreadyExists`] if the object exists.
    Create,
    /// Replace only if the current version's tag equals this; else [`ObjectError::PreconditionFailed`].
    IfMatch(String),
    /// Replace unconditionally.
    Overwrite,
}

/// An object's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Path within the store.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Version tag; changes on every successful put.
    pub etag: String,
}

/// Object-store failures. `Ambiguous` means the request may or may not have taken effect (a timeout after
/// sending): callers must reconcile by reading back, never assume either outcome.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ObjectError {
    /// No such object.
    #[error("object not found: {0}")]
    NotFound(String),
    /// A create-only put found an existing object.
    #[error("object already exists: {0}")]
    AlreadyExists(String),
    /// An if-match put found a different version.
    #[error("precondition failed: {0}")]
    PreconditionFailed(String),
    /// The outcome is unknown.
    #[error("ambiguous outcome: {0}")]
    Ambiguous(String),
    /// Any other failure (network, permission, I/O).
    #[error("object store error: {0}")]
    Other(String),
}

/// A flat namespace of immutable-per-version objects.
pub trait ObjectStore: Send + Sync + Debug {
    /// Stores `data` at `path` under `mode`; returns the new version.
    fn put(&self, path: &str, data: Bytes, mode: PutMode) -> Result<ObjectMeta, ObjectError>;
    /// The whole object and its version.
    fn get(&self, path: &str) -> Result<(Bytes, ObjectMeta), ObjectError>;
    /// Bytes `range` of the object (clamped to its end; an empty range past the end is empty).
    fn get_range(&self, path: &str, range: Range<u64>) -> Result<Bytes, ObjectError>;
    /// The object's version without its bytes.
    fn head(&self, path: &str) -> Result<ObjectMeta, ObjectError>;
    /// Objects whose path starts with `prefix`, sorted by path.
    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, ObjectError>;
    /// Deletes the object (deleting a missing object succeeds).
    fn delete(&self, path: &str) -> Result<(), ObjectError>;
}

/// Shared handle to an object store.
pub type SharedObjectStore = Arc<dyn ObjectStore>;

fn etag_of(data: &[u8], generation: u64) -> String {
    format!("{:08x}-{generation}", crc32fast::hash(data))
}

fn slice(data: &Bytes, range: Range<u64>) -> Bytes {
    let len = data.len() as u64;
    let start = range.start.min(len) as usize;
    let end = range.end.clamp(range.start.min(len), len) as usize;
    data.slice(start..end)
}

/// Objects (bytes, etag) by path, plus a generation counter for fresh etags.
type Objects = (BTreeMap<String, (Bytes, String)>, u64);

/// An in-memory object store with real conditional-put semantics.
#[derive(Debug, Default, Clone)]
pub struct MemoryObjectStore {
    objects: Arc<Mutex<Objects>>,
}

impl MemoryObjectStore {
    /// An empty store.
    pub fn new() -> MemoryObjectStore {
        MemoryObjectStore::default()
    }
}

impl ObjectStore for MemoryObjectStore {
    fn put(&self, path: &str, data: Bytes, mode: PutMode) -> Result<ObjectMeta, ObjectError> {
        let mut g = self.objects.lock().unwrap_or_else(|p| p.into_inner());
        let (map, generation) = &mut *g;
        match (&mode, map.get(path)) {
            (PutMode::Create, Some(_)) => return Err(ObjectError::AlreadyExists(path.into())),
            (PutMode::IfMatch(_), None) => {
                return Err(ObjectError::PreconditionFailed(format!("{path} missing")));
            }
            (PutMode::IfMatch(want), Some((_, tag))) if tag != want => {
                return Err(ObjectError::PreconditionFailed(format!(
                    "{path}: {tag} != {want}"
                )));
            }
            _ => {}
        }
        *generation += 1;
        let etag = etag_of(&data, *generation);
        let size = data.len() as u64;
        map.insert(path.to_string(), (data, etag.clone()));
        Ok(ObjectMeta {
            path: path.into(),
            size,
            etag,
        })
    }

    fn get(&self, path: &str) -> Result<(Bytes, ObjectMeta), ObjectError> {
        let g = self.objects.lock().unwrap_or_else(|p| p.into_inner());
        let (d, tag) = g.0.get(path).ok_or_else(|| ObjectError::NotFound(path.into()))?;
        Ok((
            d.clone(),
            ObjectMeta {
                path: path.into(),
                size: d.len() as u64,
                etag: tag.clone(),
            },
        ))
    }

    fn get_range(&self, path: &str, range: Range<u64>) -> Result<Bytes, ObjectError> {
        Ok(slice(&self.get(path)?.0, range))
    }

    fn head(&self, path: &str) -> Result<ObjectMeta, ObjectError> {
        Ok(self.get(path)?.1)
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, ObjectError> {
        let g = self.objects.lock().unwrap_or_else(|p| p.into_inner());
        Ok(g.0
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, (d, t))| ObjectMeta {
                path: k.clone(),
                size: d.len() as u64,
                etag: t.clone(),
            })
            .collect())
    }

    fn delete(&self, path: &str) -> Result<(), ObjectError> {
        self.objects
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .remove(path);
        Ok(())
    }
}

/// Objects stored as files under a [`super::FileSystem`] (the `cloud_simulated` backend). Each put is published with
/// write temp → fsync → rename → fsync dir; the version tag is the content's CRC32 and length, and conditional
/// puts are checked under a process-wide lock (single-process simulation, not a distributed store).
#[derive(Debug, Clone)]
pub struct FsObjectStore {
    fs: SharedFs,
    lock: Arc<Mutex<()>>,
}

impl FsObjectStore {
    /// A store rooted at `fs`'s root.
    pub fn new(fs: SharedFs) -> FsObjectStore {
        FsObjectStore {
            fs,
            lock: Arc::default(),
        }
    }

    fn read(&self, path: &str) -> Result<Bytes, ObjectError> {
        let f = self.fs.open(path, OpenMode::Read).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ObjectError::NotFound(path.into()),
            _ => ObjectError::Other(format!("{path}: {e}")),
        })?;
        f.read_all()
            .map(Bytes::from)
            .map_err(|e| ObjectError::Other(format!("{path}: {e}")))
    }

    fn walk(&self, dir: &str, out: &mut Vec<String>) -> Result<(), ObjectError> {
        let names = match self.fs.list(dir) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(ObjectError::Other(e.to_string())),
        };
        for n in names {
            if n.ends_with(".tmp") {
                continue;
            }
            let p = if dir.is_empty() { n } else { format!("{dir}/{n}") };
            if self.fs.open(&p, OpenMode::Read).is_ok() {
                out.push(p);
            } else {
                self.walk(&p, out)?;
            }
        }
        Ok(())
    }
}

fn tag(data: &[u8]) -> String {
    format!("{:08x}-{}", crc32fast::hash(data), data.len())
}

impl ObjectStore for FsObjectStore {
    fn put(&self, path: &str, data: Bytes, mode: PutMode) -> Result<ObjectMeta, ObjectError> {
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let current = match self.read(path) {
            Ok(d) => Some(tag(&d)),
            Err(ObjectError::NotFound(_)) => None,
            Err(e) => return Err(e),
        };
        match (&mode, &current) {
            (PutMode::Create, Some(_)) => return Err(ObjectError::AlreadyExists(path.into())),
            (PutMode::IfMatch(_), None) => {
                return Err(ObjectError::PreconditionFailed(format!("{path} missing")));
            }
            (PutMode::IfMatch(want), Some(t)) if t != want => {
                return Err(ObjectError::PreconditionFailed(format!("{path}: {t} != {want}")));
            }
            _ => {}
        }
        let io = |e: std::io::Error| ObjectError::Other(format!("{path}: {e}"));
        self.fs.mkdir_all(parent_dir(path)).map_err(io)?;
        super::publish_file(self.fs.as_ref(), path, &data).map_err(io)?;
        Ok(ObjectMeta {
            path: path.into(),
            size: data.len() as u64,
            etag: tag(&data),
        })
    }

    fn get(&self, path: &str) -> Result<(Bytes, ObjectMeta), ObjectError> {
        let d = self.read(path)?;
        let meta = ObjectMeta {
            path: path.into(),
            size: d.len() as u64,
            etag: tag(&d),
        };
        Ok((d, meta))
    }

    fn get_range(&self, path: &str, range: Range<u64>) -> Result<Bytes, ObjectError> {
        Ok(slice(&self.read(path)?, range))
    }

    fn head(&self, path: &str) -> Result<ObjectMeta, ObjectError> {
        Ok(self.get(path)?.1)
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, ObjectError> {
        let mut paths = Vec::new();
        self.walk(parent_dir(prefix), &mut paths)?;
        paths.retain(|p| p.starts_with(prefix));
        paths.sort();
        paths.iter().map(|p| self.head(p)).collect()
    }

    fn delete(&self, path: &str) -> Result<(), ObjectError> {
        match self.fs.remove(path) {
            Ok(()) => self
                .fs
                .sync_dir(parent_dir(path))
                .map_err(|e| ObjectError::Other(e.to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(ObjectError::Other(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::memory::MemoryFs;

    fn contract(store: &dyn ObjectStore) {
        let a = store
            .put("wal/1.wal", Bytes::from_static(b"one"), PutMode::Create)
            .unwrap();
        assert_eq!(
            store.put("wal/1.wal", Bytes::from_static(b"dup"), PutMode::Create),
            Err(ObjectError::AlreadyExists("wal/1.wal".into()))
        );
        assert!(matches!(
            store.put(
                "wal/1.wal",
                Bytes::from_static(b"x"),
                PutMode::IfMatch("nope".into())
            ),
            Err(ObjectError::PreconditionFailed(_))
        ));
        let b = store
            .put(
                "wal/1.wal",
                Bytes::from_static(b"two!"),
                PutMode::IfMatch(a.etag.clone()),
            )
            .unwrap();
        assert_ne!(a.etag, b.etag);
        assert!(matches!(
            store.put("wal/1.wal", Bytes::from_static(b"x"), PutMode::IfMatch(a.etag)),
            Err(ObjectError::PreconditionFailed(_)),
        ));
        assert_eq!(store.get("wal/1.wal").unwrap().0, Bytes::from_static(b"two!"));
        assert_eq!(
            store.get_range("wal/1.wal", 1..3).unwrap(),
            Bytes::from_static(b"wo")
        );
        assert_eq!(
            store.get_range("wal/1.wal", 3..99).unwrap(),
            Bytes::from_static(b"!")
        );
        assert!(store.get_range("wal/1.wal", 50..60).unwrap().is_empty());
        store.put("wal/2.wal", Bytes::new(), PutMode::Overwrite).unwrap();
        store
            .put("sst/9.sst", Bytes::from_static(b"s"), PutMode::Overwrite)
            .unwrap();
        assert_eq!(store.head("wal/2.wal").unwrap().size, 0, "zero-byte objects work");
        let listed: Vec<String> = store.list("wal/").unwrap().into_iter().map(|m| m.path).collect();
        assert_eq!(listed, vec!["wal/1.wal".to_string(), "wal/2.wal".to_string()]);
        store.delete("wal/1.wal").unwrap();
        store.delete("wal/1.wal").unwrap();
        assert!(matches!(store.get("wal/1.wal"), Err(ObjectError::NotFound(_))));
        assert!(matches!(
            store.put("x", Bytes::new(), PutMode::IfMatch("t".into())),
            Err(ObjectError::PreconditionFailed(_))
        ));
    }

    #[test]
    fn memory_object_store_honours_the_contract() {
        contract(&MemoryObjectStore::new());
    }

    #[test]
    fn fs_object_store_honours_the_contract() {
        contract(&FsObjectStore::new(Arc::new(MemoryFs::new())));
    }

    #[test]
    fn exactly_one_of_many_racing_creates_wins() {
        let store = Arc::new(MemoryObjectStore::new());
        let wins: usize = (0..16)
            .map(|i| {
                store
                    .put("lease", Bytes::from(vec![i as u8]), PutMode::Create)
                    .is_ok() as usize
            })
            .sum();
        assert_eq!(wins, 1);
    }
}
