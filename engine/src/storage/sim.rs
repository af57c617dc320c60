//! `sim`: a deterministic crash-simulating file system for the crash harness.
//!
//! Per file it keeps the **durable** bytes and the ordered **pending** (unsynced) writes and truncations; reads
//! see the visible view (durable + pending). Directory entries likewise have a durable and a visible namespace:
//! creations, renames and removals become durable only with `sync_dir` of the parent, and a file's `sync_data`
//! does not make its directory entry durable. Every mutating call has a global index and a trace entry; a fault
//! plan can crash the "machine" at op `n` (that op and every later one fail). [`SimFs::crash_image`] then
//! computes one possible post-crash disk under a [`PersistenceModel`], as a fresh `SimFs` to reopen.
//! Pure Rust, no clocks, no threads, no OS randomness: runs are replayable from a seed on every target.

use super::{File, FileSystem, LockGuard, OpenMode, parent_dir};
use crate::runtime::SeededRng;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::sync::{Arc, Mutex};

/// What survives a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PersistenceModel {
    /// P0: the process dies, the kernel survives: everything visible is kept.
    ProcessCrash,
    /// P1: power loss; all unsynced file data and directory changes are lost.
    DropUnsynced,
    /// P2: power loss; each file keeps a random prefix of its unsynced writes.
    RandomPrefix,
    /// P3: power loss; each unsynced write is kept or dropped per 4 KiB page, and a kept write may be torn at
    /// a 512-byte sector boundary.
    PageTear,
}

impl PersistenceModel {
    /// Every model, in order.
    pub const ALL: [PersistenceModel; 4] = [
        PersistenceModel::ProcessCrash,
        PersistenceModel::DropUnsynced,
        PersistenceModel::RandomPrefix,
        PersistenceModel::PageTear,
    ];
}

/// One traced operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceOp {
    /// Global index of the operation.
    pub index: u64,
    /// `create`, `write`, `set_len`, `sync`, `rename`, `remove`, `mkdir`, `sync_dir`.
    pub kind: &'static str,
    /// Path (for renames, `from -> to`).
    pub path: String,
    /// Offset (writes) or length (set_len).
    pub offset: u64,
    /// Bytes written.
    pub len: u64,
    /// FNV-1a of the written bytes.
    pub data_hash: u64,
}

#[derive(Debug, Clone)]
enum Pending {
    Write(u64, Vec<u8>),
    SetLen(u64),
}

#[derive(Debug, Clone, Default)]
struct Inode {
    durable: Vec<u8>,
    pending: Vec<Pending>,
}

fn apply(data: &mut Vec<u8>, p: &Pending) {
    match p {
        Pending::Write(off, bytes) => {
            let off = *off as usize;
            if data.len() < off + bytes.len() {
                data.resize(off + bytes.len(), 0);
            }
            data[off..off + bytes.len()].copy_from_slice(bytes);
        }
        Pending::SetLen(len) => data.resize(*len as usize, 0),
    }
}

impl Inode {
    fn visible(&self) -> Vec<u8> {
        let mut d = self.durable.clone();
        for p in &self.pending {
            apply(&mut d, p);
        }
        d
    }
}

#[derive(Debug, Default)]
struct State {
    inodes: BTreeMap<u64, Inode>,
    next_inode: u64,
    visible: BTreeMap<String, u64>,
    durable: BTreeMap<String, u64>,
    dirs: BTreeSet<String>,
    durable_dirs: BTreeSet<String>,
    ops: u64,
    crash_at: Option<u64>,
    crashed: bool,
    /// Fail op `n` with EIO (or ENOSPC), once or for every later op too.
    fail_at: Option<(u64, bool, bool)>,
    errors_injected: u64,
    failed_kinds: Vec<&'static str>,
    trace: Vec<TraceOp>,
}

fn fnv(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn crashed_err() -> io::Error {
    io::Error::other("sim: crashed")
}

impl State {
    /// Accounts one mutating operation; `Err` if the machine is (or now becomes) crashed.
    fn step(&mut self, kind: &'static str, path: &str, offset: u64, data: &[u8]) -> io::Result<()> {
        if self.crashed {
            return Err(crashed_err());
        }
        let index = self.ops;
        if self.crash_at == Some(index) {
            self.crashed = true;
            return Err(crashed_err());
        }
        if let Some((n, persistent, nospace)) = self.fail_at
            && (index == n || (persistent && index > n))
        {
            self.ops += 1;
            self.errors_injected += 1;
            self.failed_kinds.push(kind);
            return Err(if nospace {
                io::Error::from_raw_os_error(28)
            } else {
                io::Error::other("sim: injected EIO")
            });
        }
        self.ops += 1;
        self.trace.push(TraceOp {
            index,
            kind,
            path: path.to_string(),
            offset,
            len: data.len() as u64,
            data_hash: fnv(data),
        });
        Ok(())
    }
}

/// The simulated file system. Clones share state.
#[derive(Clone, Default)]
pub struct SimFs {
    state: Arc<Mutex<State>>,
}

impl fmt::Debug for SimFs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SimFs")
    }
}

impl SimFs {
    /// An empty disk.
    ///
    /// ```
    /// use cntryl_midge::storage::sim::{SimFs, PersistenceModel};
    /// use cntryl_midge::storage::{FileSystem, OpenMode};
    /// let fs = SimFs::new();
    /// let f = fs.open("x", OpenMode::CreateNew).unwrap();
    /// f.write_at(0, b"unsynced").unwrap();
    /// let after = fs.crash_image(PersistenceModel::DropUnsynced, 1);
    /// assert!(!after.exists("x").unwrap(), "the directory entry was never synced");
    /// ```
    pub fn new() -> SimFs {
        let fs = SimFs::default();
        {
            let mut s = fs.lock();
            s.dirs.insert(String::new());
            s.durable_dirs.insert(String::new());
        }
        fs
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Crash when mutating operation `n` (counted from 0 since creation) is attempted.
    pub fn crash_at(&self, n: Option<u64>) {
        self.lock().crash_at = n;
    }

    /// Fail mutating op `n` with EIO (ENOSPC when `nospace`), once or — when `persistent` — for every later
    /// op as well. A failed op changes nothing.
    pub fn fail_at(&self, n: u64, persistent: bool, nospace: bool) {
        self.lock().fail_at = Some((n, persistent, nospace));
    }

    /// The kinds of operation that were failed, in order.
    pub fn failed_kinds(&self) -> Vec<&'static str> {
        self.lock().failed_kinds.clone()
    }

    /// Errors injected so far.
    pub fn errors_injected(&self) -> u64 {
        self.lock().errors_injected
    }

    /// Mutating operations performed so far.
    pub fn op_count(&self) -> u64 {
        self.lock().ops
    }

    /// Whether the crash point was reached.
    pub fn crashed(&self) -> bool {
        self.lock().crashed
    }

    /// The trace of mutating operations.
    pub fn trace(&self) -> Vec<TraceOp> {
        self.lock().trace.clone()
    }

    /// A digest of the trace (kind, path, offset, length, data hash of every op): equal digests mean
    /// byte-identical I/O sequences.
    pub fn trace_digest(&self) -> u64 {
        let s = self.lock();
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        for t in &s.trace {
            for part in [
                t.kind.as_bytes(),
                t.path.as_bytes(),
                &t.offset.to_le_bytes(),
                &t.len.to_le_bytes(),
                &t.data_hash.to_le_bytes(),
            ] {
                h = (h ^ fnv(part)).wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
        h
    }

    /// One possible disk after a crash now, under `model`, as a fresh file system (op counter and trace reset,
    /// no crash point).
    pub fn crash_image(&self, model: PersistenceModel, seed: u64) -> SimFs {
        let s = self.lock();
        let mut rng = SeededRng::new(seed);
        let out = SimFs::new();
        {
            let mut o = out.lock();
            let (names, dirs) = if model == PersistenceModel::ProcessCrash {
                (&s.visible, &s.dirs)
            } else {
                (&s.durable, &s.durable_dirs)
            };
            o.dirs = dirs.clone();
            o.dirs.insert(String::new());
            o.durable_dirs = o.dirs.clone();
            for (path, ino) in names {
                let Some(node) = s.inodes.get(ino) else { continue };
                let data = match model {
                    PersistenceModel::ProcessCrash => node.visible(),
                    PersistenceModel::DropUnsynced => node.durable.clone(),
                    PersistenceModel::RandomPrefix => {
                        let keep = rng.below(node.pending.len() as u64 + 1) as usize;
                        let mut d = node.durable.clone();
                        for p in &node.pending[..keep] {
                            apply(&mut d, p);
                        }
                        d
                    }
                    PersistenceModel::PageTear => {
                        let mut d = node.durable.clone();
                        for p in &node.pending {
                            match p {
                                Pending::SetLen(_) => {
                                    if rng.below(2) == 0 {
                                        apply(&mut d, p);
                                    }
                                }
                                Pending::Write(off, bytes) => {
                                    // Each 4 KiB page of the write independently kept or dropped; a kept page
                                    // may lose its tail from a 512-byte sector on.
                                    let mut at = 0usize;
                                    while at < bytes.len() {
                                        let page_end =
                                            ((*off as usize + at) / 4096 + 1) * 4096 - *off as usize;
                                        let end = page_end.min(bytes.len());
                                        if rng.below(2) == 0 {
                                            let mut cut = end;
                                            if rng.below(4) == 0 {
                                                let sectors = (end - at).div_ceil(512);
                                                cut = (at + 512 * rng.below(sectors as u64 + 1) as usize)
                                                    .min(end);
                                            }
                                            if cut > at {
                                                apply(
                                                    &mut d,
                                                    &Pending::Write(
                                                        *off + at as u64,
                                                        bytes[at..cut].to_vec(),
                                                    ),
                                                );
                                            }
                                        }
                                        at = end;
                                    }
                                }
                            }
                        }
                        d
                    }
                };
                let ino = o.next_inode;
                o.next_inode += 1;
                o.inodes.insert(
                    ino,
                    Inode {
                        durable: data,
                        pending: Vec::new(),
                    },
                );
                o.visible.insert(path.clone(), ino);
                o.durable.insert(path.clone(), ino);
            }
        }
        out
    }

    /// Flips bit `bit` of byte `offset` of `path` (visible and durable), for corruption sweeps.
    pub fn flip_bit(&self, path: &str, offset: u64, bit: u8) -> bool {
        let mut s = self.lock();
        let Some(&ino) = s.visible.get(path) else {
            return false;
        };
        let Some(node) = s.inodes.get_mut(&ino) else {
            return false;
        };
        let mut v = node.visible();
        let Some(b) = v.get_mut(offset as usize) else {
            return false;
        };
        *b ^= 1 << (bit % 8);
        node.durable = v;
        node.pending.clear();
        true
    }

    /// Visible files and their sizes.
    pub fn files(&self) -> Vec<(String, u64)> {
        let s = self.lock();
        s.visible
            .iter()
            .map(|(p, i)| (p.clone(), s.inodes.get(i).map_or(0, |n| n.visible().len() as u64)))
            .collect()
    }
}

struct SimFile {
    fs: SimFs,
    ino: u64,
    path: String,
    writable: bool,
}

impl fmt::Debug for SimFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimFile").field("path", &self.path).finish()
    }
}

impl File for SimFile {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let s = self.fs.lock();
        if s.crashed {
            return Err(crashed_err());
        }
        let data = s.inodes.get(&self.ino).map(Inode::visible).unwrap_or_default();
        let off = offset as usize;
        if off >= data.len() {
            return Ok(0);
        }
        let n = buf.len().min(data.len() - off);
        buf[..n].copy_from_slice(&data[off..off + n]);
        Ok(n)
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        if !self.writable {
            return Err(io::Error::new(io::ErrorKind::PermissionDenied, "read-only"));
        }
        let mut s = self.fs.lock();
        s.step("write", &self.path, offset, data)?;
        if let Some(n) = s.inodes.get_mut(&self.ino) {
            n.pending.push(Pending::Write(offset, data.to_vec()));
        }
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        let s = self.fs.lock();
        if s.crashed {
            return Err(crashed_err());
        }
        Ok(s.inodes.get(&self.ino).map_or(0, |n| n.visible().len() as u64))
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut s = self.fs.lock();
        s.step("set_len", &self.path, len, &[])?;
        if let Some(n) = s.inodes.get_mut(&self.ino) {
            n.pending.push(Pending::SetLen(len));
        }
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut s = self.fs.lock();
        s.step("sync", &self.path, 0, &[])?;
        if let Some(n) = s.inodes.get_mut(&self.ino) {
            n.durable = n.visible();
            n.pending.clear();
        }
        Ok(())
    }

    fn sync_all(&self) -> io::Result<()> {
        self.sync_data()
    }
}

#[derive(Debug)]
struct SimLock;
impl LockGuard for SimLock {}

fn not_found(p: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{p}: not found"))
}

impl FileSystem for SimFs {
    fn open(&self, path: &str, mode: OpenMode) -> io::Result<Arc<dyn File>> {
        let mut s = self.lock();
        if s.crashed {
            return Err(crashed_err());
        }
        if !s.dirs.contains(parent_dir(path)) {
            return Err(not_found(parent_dir(path)));
        }
        let existing = s.visible.get(path).copied();
        let ino = match (mode, existing) {
            (OpenMode::Read | OpenMode::ReadWrite, Some(i)) => i,
            (OpenMode::Read | OpenMode::ReadWrite, None) => return Err(not_found(path)),
            (OpenMode::CreateNew, Some(_)) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{path} exists"),
                ));
            }
            (OpenMode::CreateTruncate, Some(i)) => {
                s.step("truncate", path, 0, &[])?;
                if let Some(n) = s.inodes.get_mut(&i) {
                    n.pending.push(Pending::SetLen(0));
                }
                i
            }
            (OpenMode::CreateNew | OpenMode::CreateTruncate, None) => {
                s.step("create", path, 0, &[])?;
                let i = s.next_inode;
                s.next_inode += 1;
                s.inodes.insert(i, Inode::default());
                s.visible.insert(path.to_string(), i);
                i
            }
        };
        Ok(Arc::new(SimFile {
            fs: self.clone(),
            ino,
            path: path.to_string(),
            writable: mode != OpenMode::Read,
        }))
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut s = self.lock();
        s.step("rename", &format!("{from} -> {to}"), 0, &[])?;
        let ino = s.visible.remove(from).ok_or_else(|| not_found(from))?;
        s.visible.insert(to.to_string(), ino);
        Ok(())
    }

    fn remove(&self, path: &str) -> io::Result<()> {
        let mut s = self.lock();
        s.step("remove", path, 0, &[])?;
        s.visible.remove(path).map(|_| ()).ok_or_else(|| not_found(path))
    }

    fn list(&self, dir: &str) -> io::Result<Vec<String>> {
        let s = self.lock();
        if s.crashed {
            return Err(crashed_err());
        }
        if !s.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        Ok(super::children(s.visible.keys().chain(s.dirs.iter()), dir))
    }

    fn mkdir_all(&self, dir: &str) -> io::Result<()> {
        let mut s = self.lock();
        for d in super::ancestry(dir) {
            if !s.dirs.contains(&d) {
                s.step("mkdir", &d, 0, &[])?;
                s.dirs.insert(d);
            }
        }
        Ok(())
    }

    fn sync_dir(&self, dir: &str) -> io::Result<()> {
        let mut s = self.lock();
        s.step("sync_dir", dir, 0, &[])?;
        if !s.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        // Entries directly in `dir` become durable as they are visible now; so do its subdirectories.
        let st = &mut *s;
        st.durable.retain(|p, _| parent_dir(p) != dir);
        for (p, i) in st.visible.iter().filter(|(p, _)| parent_dir(p) == dir) {
            st.durable.insert(p.clone(), *i);
        }
        let subdirs: Vec<String> = st
            .dirs
            .iter()
            .filter(|d| !d.is_empty() && parent_dir(d) == dir)
            .cloned()
            .collect();
        st.durable_dirs.extend(subdirs);
        Ok(())
    }

    fn exists(&self, path: &str) -> io::Result<bool> {
        let s = self.lock();
        if s.crashed {
            return Err(crashed_err());
        }
        Ok(s.visible.contains_key(path) || s.dirs.contains(path))
    }

    fn lock(&self, _path: &str) -> io::Result<Box<dyn LockGuard>> {
        Ok(Box::new(SimLock))
    }

    fn describe(&self) -> String {
        "sim".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synced_data_survives_every_model_and_unsynced_data_only_some() {
        let fs = SimFs::new();
        let f = fs.open("a", OpenMode::CreateNew).unwrap();
        f.write_at(0, b"durable").unwrap();
        f.sync_data().unwrap();
        fs.sync_dir("").unwrap();
        f.write_at(7, b"-tail").unwrap();
        for m in PersistenceModel::ALL {
            for seed in 0..20 {
                let img = fs.crash_image(m, seed);
                let d = img.open("a", OpenMode::Read).unwrap().read_all().unwrap();
                assert!(d.starts_with(b"durable"), "{m:?}");
                if m == PersistenceModel::DropUnsynced {
                    assert_eq!(d, b"durable");
                }
                if m == PersistenceModel::ProcessCrash {
                    assert_eq!(d, b"durable-tail");
                }
                assert!(d.len() <= 12, "nothing is invented");
            }
        }
    }

    #[test]
    fn renames_and_creations_need_a_directory_sync() {
        let fs = SimFs::new();
        fs.mkdir_all("d").unwrap();
        fs.sync_dir("").unwrap();
        let f = fs.open("d/x.tmp", OpenMode::CreateNew).unwrap();
        f.write_at(0, b"new").unwrap();
        f.sync_all().unwrap();
        fs.rename("d/x.tmp", "d/x").unwrap();
        let img = fs.crash_image(PersistenceModel::DropUnsynced, 0);
        assert!(!img.exists("d/x").unwrap() && !img.exists("d/x.tmp").unwrap());
        fs.sync_dir("d").unwrap();
        let img = fs.crash_image(PersistenceModel::DropUnsynced, 0);
        assert_eq!(
            img.open("d/x", OpenMode::Read).unwrap().read_all().unwrap(),
            b"new"
        );
    }

    #[test]
    fn crash_at_stops_that_op_and_every_later_one() {
        let fs = SimFs::new();
        let f = fs.open("a", OpenMode::CreateNew).unwrap();
        fs.crash_at(Some(fs.op_count() + 1));
        f.write_at(0, b"x").unwrap();
        assert!(f.sync_data().is_err());
        assert!(f.write_at(1, b"y").is_err());
        assert!(fs.crashed());
    }

    #[test]
    fn same_ops_give_the_same_trace_digest_and_images() {
        let run = || {
            let fs = SimFs::new();
            let f = fs.open("a", OpenMode::CreateNew).unwrap();
            for i in 0..10u8 {
                f.write_at(u64::from(i) * 1000, &[i; 700]).unwrap();
            }
            fs
        };
        let (a, b) = (run(), run());
        assert_eq!(a.trace_digest(), b.trace_digest());
        let ia = a.crash_image(PersistenceModel::PageTear, 9).files();
        let ib = b.crash_image(PersistenceModel::PageTear, 9).files();
        assert_eq!(ia, ib);
    }
}
