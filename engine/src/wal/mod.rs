//! The write-ahead log: one checksummed frame per committed transaction, segment files, group commit, and
//! recovery with torn-tail rules.
//!
//! Owns `wal/<20-digit id>.wal` files. Does not know about memtables, the manifest or column-family state; the
//! caller decides which replayed records to apply. All I/O goes through [`crate::storage`].
//!
//! Frame layout (all little-endian): `len u32 | crc32(payload) u32 | payload`, where
//! `payload = synced_offset u64 | record` and `record` is a [`record::TxnRecord`]. `synced_offset` is the
//! writer's fsynced length of this segment when the frame was appended: recovery uses it to tell a torn,
//! never-synced tail (dropped, reported) from corruption of bytes that an fsync had covered (fatal under
//! `Strict`). A corrupt frame is a torn tail exactly when no later valid frame proves it had been synced.
//!
//! On local storage the active segment is preallocated ahead of the appends (`set_len`, a sparse extension,
//! [`PREALLOC_STEP`] at a time), so a sync commit's `fdatasync` writes data only instead of also persisting a
//! new file size: appends into a growing file cost the file system an extra metadata write per sync. The
//! frame format is unchanged; a preallocated segment simply ends in zero bytes after its last frame. Replay
//! treats an all-zero tail of the last segment as the end of the log (and trims it); a segment is trimmed to
//! its logical length before it is sealed and at a clean close, so sealed segments never carry one. Sync
//! rounds also write zeros a little past their frames ([`ZERO_AHEAD`]) so that the blocks they overwrite next
//! are already allocated.
//!
//! Rotation (a full segment, or a memtable switch) seals the active segment with one fsync and creates the
//! next without a directory fsync; the first fsync round covering a frame in it syncs the directory before
//! acknowledging (`Active::named`), so the commit that triggers a rotation usually waits for one fsync, not
//! three.
//!
//! Group commit (sync commits): a commit's frame is buffered ([`Wal::append_deferred`]) and the leader of the
//! fsync round that covers it writes every buffered frame with one `pwrite`, then fsyncs. When the last round
//! saw concurrent committers, the leader first waits briefly for them to append ([`Wal::gather`]); waiters
//! yield for a few fsyncs' time before they sleep, and are woken directly, never through a shared mutex.

pub(crate) mod record;

use crate::codec::{FRAME_HEADER, Put, Reader, crc_matches, seal_frame};
use crate::error::{Corrupt, FileKind, MidgeError, MidgeResult};
use crate::options::RecoveryPolicy;
use crate::runtime::{Clock, WakeSlot};
use crate::storage::{File, OpenMode, SharedFs};
use crate::types::Seq;
use bytes::Bytes;
use record::TxnRecord;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

pub(crate) const WAL_DIR: &str = "wal";
/// Wake-up tokens of a group-commit waiter: its round ended, or it is to lead the next round.
const WAKE_DONE: u32 = 1;
const WAKE_LEAD: u32 = 2;
/// The longest a group-commit waiter or gathering leader yields instead of sleeping.
const MAX_SPIN_NS: u64 = 300_000;
/// Largest payload a frame may carry.
pub(crate) const MAX_PAYLOAD: usize = 64 << 20;
/// How far ahead of the appends a preallocated segment is extended (also bounds the zeros a crash leaves).
pub(crate) const PREALLOC_STEP: u64 = 4 << 20;
/// A sync round writes zeros this far past its frames (within the preallocated range) when fewer than half
/// of them are left. `set_len` reserves a sparse range: the first write into each block allocates it, and
/// then `fdatasync` must also write the changed block map (on this device ≈ +50 % per fsync). A group-commit
/// round writes a few KiB, so most rounds would allocate a block; zeros written ahead, in the same fsync,
/// allocate blocks for dozens of rounds at once. Only sync rounds do it, so buffered logging writes no extra
/// bytes.
const ZERO_AHEAD: u64 = 64 << 10;
/// The bytes a sync round writes ahead (no allocation per refill).
static ZEROS: [u8; ZERO_AHEAD as usize] = [0; ZERO_AHEAD as usize];

pub(crate) fn segment_path(id: u64) -> String {
    format!("{WAL_DIR}/{id:020}.wal")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".wal")?;
    if stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()) {
        stem.parse().ok()
    } else {
        None
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Counters exported through the runtime metrics.
#[derive(Debug, Default)]
pub(crate) struct WalStats {
    pub appends: AtomicU64,
    pub append_ns: AtomicU64,
    pub fsyncs: AtomicU64,
    pub fsync_ns: AtomicU64,
    pub fsync_ns_max: AtomicU64,
    pub sync_waiters_covered: AtomicU64,
}

/// Group commit: at most one fsync runs at a time (round `round`, covering the log up to `target`).
#[derive(Debug, Default)]
struct Group {
    running: bool,
    round: u64,
    target: u64,
    /// Callers waiting for round `r` are in `waiters[r % 2]`.
    waiters: [Vec<Arc<WakeSlot>>; 2],
}

struct Active {
    id: u64,
    file: Arc<dyn File>,
    /// Bytes appended to this segment: written to the file, then `pending`.
    len: u64,
    /// Frames of sync commits appended but not yet written: the next fsync round's leader writes them all
    /// with one `pwrite` before its fsync (see [`Wal::append_deferred`]). Starts at file offset
    /// `len - pending.len()`.
    pending: Vec<u8>,
    /// Reused buffer a frame is encoded into (a large transaction otherwise costs several large allocations
    /// and copies per commit). Carried over to the next segment at rotation.
    scratch: Vec<u8>,
    /// Bytes of this segment covered by a completed fsync.
    synced: u64,
    /// Global position of this segment's byte 0.
    base_lsn: u64,
    /// Highest sequence logged in this segment. Recorded in [`Wal::segments`] when the segment is sealed
    /// (only sealed segments are ever released), so an append takes no second lock for it.
    max_seq: Seq,
    /// Length the file was extended to ahead of the appends (0 when not preallocating).
    reserved: u64,
    /// Bytes of the preallocated range really written (frames or zeros), so the file system has allocated
    /// their blocks and overwriting them changes no metadata (see [`ZERO_AHEAD`]).
    filled: u64,
    /// Whether this segment's directory entry is durable (`sync_dir` ran after its creation). A rotation
    /// creates the next segment without syncing the directory; the first fsync round that covers frames in it
    /// (or the rotation that seals it) syncs the directory first, so no frame counts as durable in a segment a
    /// power loss could unlink, and a buffered commit that fills the memtable does not wait for it.
    named: bool,
}

/// What an fsync round covers: the active segment's file as it was when the round wrote its pending frames.
pub(crate) struct SyncPoint {
    pub file: Arc<dyn File>,
    /// The segment's path relative to the engine's root.
    pub path: String,
    segment: u64,
    segment_len: u64,
    /// Log position the fsync covers.
    pub target: u64,
    named: bool,
    /// When the round began (monotonic ns), for the fsync time in the stats.
    started: u64,
    /// The WAL it belongs to.
    wal: u64,
}

impl std::fmt::Debug for SyncPoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncPoint")
            .field("path", &self.path)
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// The open WAL: appends frames to the active segment and makes them durable with shared fsyncs.
pub(crate) struct Wal {
    fs: SharedFs,
    clock: Arc<dyn Clock>,
    segment_bytes: u64,
    active: Mutex<Active>,
    /// Max sequence logged in each sealed segment (for release after flush); the active segment is listed
    /// with 0 until it is sealed (its own maximum is [`Active::max_seq`]).
    segments: Mutex<BTreeMap<u64, Seq>>,
    /// Group commit state (see [`Wal::sync_to_then`]).
    group: Mutex<Group>,
    /// Preallocate the active segment ahead of the appends (local storage only).
    preallocate: bool,
    /// How far ahead of the appends to reserve: [`PREALLOC_STEP`], or the segment size if smaller.
    prealloc_step: u64,
    appended_lsn: AtomicU64,
    synced_lsn: AtomicU64,
    last_sync_nanos: AtomicU64,
    poisoned: AtomicBool,
    /// Adaptive gather before a group-commit fsync (see [`Wal::gather`]).
    gather: Gather,
    pub stats: WalStats,
    /// Tells this WAL's sync points from another's (see [`Wal::end_external_sync`]).
    instance: u64,
}

/// Source of [`Wal::instance`].
static WAL_INSTANCES: AtomicU64 = AtomicU64::new(1);

/// State for the leader's bounded wait for concurrent committers before its fsync.
#[derive(Debug, Default)]
struct Gather {
    /// Sync committers inside the commit path now (see [`Wal::sync_committer`]).
    committers: AtomicU64,
    /// The most sync committers seen at once since the last fsync round started.
    peak: AtomicU64,
    /// Frames appended so far.
    appends: AtomicU64,
    /// `appends` when the last fsync round took its target.
    covered: AtomicU64,
    /// The `appends` count a gathering leader waits for (0: nobody gathers).
    goal: AtomicU64,
    /// Smoothed fsync duration (ns), which bounds the gather.
    fsync_ewma_ns: AtomicU64,
    lock: Mutex<()>,
    cv: Condvar,
}

/// Counts one sync committer while alive (see [`Wal::sync_committer`]).
pub(crate) struct SyncCommitter<'a>(&'a Gather);

impl Drop for SyncCommitter<'_> {
    fn drop(&mut self) {
        self.0.committers.fetch_sub(1, Ordering::AcqRel);
    }
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("appended", &self.appended_lsn)
            .field("synced", &self.synced_lsn)
            .finish()
    }
}

/// What recovery found in the WAL.
#[derive(Debug, Default, Clone)]
pub(crate) struct ReplayReport {
    pub records: u64,
    pub bytes: u64,
    pub max_seq: Seq,
    pub segments: Vec<(u64, Seq)>,
    pub torn_tail_bytes: u64,
    /// Set when Salvage dropped a corrupt suffix.
    pub salvaged: Option<String>,
    pub next_segment_id: u64,
}

enum SegmentEnd {
    Clean,
    /// Only zero bytes from this offset on: the unused, preallocated part of a segment.
    Zeros(u64),
    Torn(u64),
    Corrupt(u64, String),
}

struct Frame {
    offset: u64,
    len: u64,
    synced_offset: u64,
    record_at: usize,
}

/// Parses one valid frame at `off`, if there is one.
fn frame_at(data: &[u8], off: usize) -> Option<Frame> {
    let mut r = Reader::new(data.get(off..)?);
    let len = r.u32("len").ok()? as usize;
    let crc = r.u32("crc").ok()?;
    if !(8 + 2..=MAX_PAYLOAD).contains(&len) {
        return None;
    }
    let payload = r.take(len, "payload").ok()?;
    if &payload[8..10] != record::MAGIC || !crc_matches(crc, payload) {
        return None;
    }
    let synced_offset = u64::from_le_bytes(payload[..8].try_into().ok()?);
    Some(Frame {
        offset: off as u64,
        len: (FRAME_HEADER + len) as u64,
        synced_offset,
        record_at: off + 16,
    })
}

/// Scans a segment: every valid frame up to the first bad one, and how the segment ends.
fn scan_segment(name: &str, data: &Bytes) -> (Vec<(Frame, TxnRecord)>, SegmentEnd) {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos < data.len() {
        match frame_at(data, pos) {
            Some(f) => {
                let end = (f.offset + f.len) as usize;
                match TxnRecord::decode_shared(&data.slice(f.record_at..end)) {
                    Ok(rec) => {
                        pos = end;
                        out.push((f, rec));
                    }
                    Err(e) => {
                        let c =
                            Corrupt::new(FileKind::Wal, name, pos as u64, "a valid record", e.to_string());
                        return (out, SegmentEnd::Corrupt(pos as u64, c.to_string()));
                    }
                }
            }
            None => {
                // Everything after the last non-zero byte is preallocated space (or zeros that no frame
                // needs): no frame can start there.
                let nonzero_end = data.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
                if nonzero_end <= pos {
                    return (out, SegmentEnd::Zeros(pos as u64));
                }
                // Is there any later valid frame that proves this position had been fsynced?
                let proof = (pos + 1..data.len().saturating_sub(FRAME_HEADER + 10).min(nonzero_end))
                    .filter(|&o| data.get(o + 16..o + 18) == Some(&record::MAGIC[..]))
                    .filter_map(|o| frame_at(data, o))
                    .find(|f| f.synced_offset > pos as u64);
                return match proof {
                    None => (out, SegmentEnd::Torn(pos as u64)),
                    Some(f) => {
                        let c = Corrupt::new(
                            FileKind::Wal,
                            name,
                            pos as u64,
                            "a valid frame (a later frame at offset proves this range was fsynced)",
                            format!("checksum/length mismatch; proof frame at {}", f.offset),
                        );
                        (out, SegmentEnd::Corrupt(pos as u64, c.to_string()))
                    }
                };
            }
        }
    }
    (out, SegmentEnd::Clean)
}

/// Extends a segment to `bytes` (sparse) and returns the new reservation. The size becomes durable with the
/// next sync. A failure (typically ENOSPC) is treated like a failed WAL write: the caller poisons, so nothing
/// is acknowledged after a storage step failed, and the next open recovers.
fn preallocate_segment(file: &Arc<dyn File>, bytes: u64) -> MidgeResult<u64> {
    file.set_len(bytes)
        .map(|()| bytes)
        .map_err(|e| MidgeError::from_io("preallocate wal segment", e))
}

/// Reads a segment in chunks, leaving out a run of all-zero chunks at the end (the unused part of a
/// preallocated segment) instead of materializing it; returns the bytes up to the last chunk holding a
/// non-zero byte and the length of the zero tail after them.
fn read_segment(file: &dyn File) -> std::io::Result<(Vec<u8>, u64)> {
    const CHUNK: usize = 1 << 20;
    let len = file.len()?;
    let too_large = || std::io::Error::other("segment too large for this target");
    // Reserved once (untouched capacity costs no memory), so the log is read straight into place instead of
    // through a bounce buffer and a doubling vector.
    let mut data = Vec::with_capacity(usize::try_from(len).map_err(|_| too_large())?);
    let mut zeros = 0usize;
    let mut off = 0u64;
    while off < len {
        let n = usize::try_from((len - off).min(CHUNK as u64)).unwrap_or(CHUNK);
        let start = data.len();
        data.resize(start + n, 0);
        file.read_exact_at(off, &mut data[start..])?;
        // OR-fold per 4 KiB (vectorizes; a short-circuiting byte loop does not).
        if data[start..]
            .chunks(4096)
            .all(|c| c.iter().fold(0u8, |acc, &b| acc | b) == 0)
        {
            // A zero run is kept out of `data` unless more log follows it.
            data.truncate(start);
            zeros += n;
        } else if zeros > 0 {
            data.resize(start + n + zeros, 0);
            data.copy_within(start..start + n, start + zeros);
            data[start..start + zeros].fill(0);
            zeros = 0;
        }
        off += n as u64;
    }
    Ok((data, zeros as u64))
}

/// Reads the WAL under `policy`, calling `apply` for each record in log order. When `mutate` is true, a torn
/// tail is truncated (and fsynced) and a Salvage-dropped suffix is quarantined as `*.corrupt`; when false
/// (verification) nothing is changed.
pub(crate) fn replay(
    fs: &SharedFs,
    policy: RecoveryPolicy,
    mutate: bool,
    mut apply: impl FnMut(&TxnRecord) -> MidgeResult<()>,
) -> MidgeResult<ReplayReport> {
    let io = |ctx: &str, e| MidgeError::from_io(ctx, e);
    let mut ids: Vec<u64> = match fs.list(WAL_DIR) {
        Ok(names) => names.iter().filter_map(|n| parse_segment_name(n)).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io("list wal", e)),
    };
    ids.sort_unstable();
    let mut rep = ReplayReport {
        next_segment_id: ids.last().map_or(1, |l| l + 1),
        ..Default::default()
    };
    let mut last_commit: Seq = 0;
    for (i, &id) in ids.iter().enumerate() {
        let path = segment_path(id);
        let file = fs.open(&path, OpenMode::Read).map_err(|e| io(&path, e))?;
        let (data, zero_tail) = read_segment(&*file).map_err(|e| io(&path, e))?;
        // Shared, not copied: replayed keys and values are slices of it (see `TxnRecord::decode_shared`).
        let mut data = Bytes::from(data);
        let (mut frames, mut end) = scan_segment(&path, &data);
        if zero_tail > 0 {
            match end {
                // The frames end inside the bytes read; the rest is zeros.
                SegmentEnd::Clean => end = SegmentEnd::Zeros(data.len() as u64),
                SegmentEnd::Zeros(_) => {}
                // A frame may run on into the zeros left unread (a value of zeros): scan everything.
                SegmentEnd::Torn(_) | SegmentEnd::Corrupt(..) => {
                    let mut whole = data.to_vec();
                    whole.resize(data.len() + zero_tail as usize, 0);
                    data = Bytes::from(whole);
                    (frames, end) = scan_segment(&path, &data);
                }
            }
        }
        let file_len = data.len() as u64 + zero_tail;
        let mut seg_max = 0;
        for (f, rec) in &frames {
            if rec.begin_seq <= last_commit {
                let c = Corrupt::new(
                    FileKind::Wal,
                    &path,
                    f.offset,
                    format!("sequence above {last_commit}"),
                    format!("begin_seq {}", rec.begin_seq),
                );
                return fail_or_salvage(fs, policy, mutate, &ids[i..], f.offset, c.to_string(), rep);
            }
            apply(rec)?;
            last_commit = rec.commit_seq();
            seg_max = last_commit;
            rep.records += 1;
            rep.bytes += f.len;
        }
        rep.max_seq = rep.max_seq.max(last_commit);
        rep.segments.push((id, seg_max));
        let is_last = i + 1 == ids.len();
        match end {
            SegmentEnd::Clean => {}
            // The unused preallocated tail of the segment that was active at the crash: not a torn write
            // (nothing was written there), so not reported; trimmed so the file holds only frames.
            SegmentEnd::Zeros(at) if is_last => {
                if mutate {
                    let f = fs.open(&path, OpenMode::ReadWrite).map_err(|e| io(&path, e))?;
                    f.set_len(at).map_err(|e| io(&path, e))?;
                    f.sync_all().map_err(|e| io(&path, e))?;
                }
            }
            SegmentEnd::Torn(at) if is_last => {
                rep.torn_tail_bytes = file_len - at;
                if mutate {
                    let f = fs.open(&path, OpenMode::ReadWrite).map_err(|e| io(&path, e))?;
                    f.set_len(at).map_err(|e| io(&path, e))?;
                    f.sync_all().map_err(|e| io(&path, e))?;
                }
            }
            // Sealed segments are trimmed before the next one is created: a zero tail there is lost data.
            SegmentEnd::Torn(at) | SegmentEnd::Zeros(at) => {
                let c = Corrupt::new(
                    FileKind::Wal,
                    &path,
                    at,
                    "a complete sealed segment",
                    "a torn frame",
                );
                return fail_or_salvage(fs, policy, mutate, &ids[i..], at, c.to_string(), rep);
            }
            SegmentEnd::Corrupt(at, msg) => {
                return fail_or_salvage(fs, policy, mutate, &ids[i..], at, msg, rep);
            }
        }
    }
    Ok(rep)
}

/// Strict: fail. Salvage: keep the verified prefix (segment `rest[0]` up to `at`), quarantine the rest.
fn fail_or_salvage(
    fs: &SharedFs,
    policy: RecoveryPolicy,
    mutate: bool,
    rest: &[u64],
    at: u64,
    msg: String,
    mut rep: ReplayReport,
) -> MidgeResult<ReplayReport> {
    if policy == RecoveryPolicy::Strict {
        return Err(MidgeError::RecoveryFailed(msg));
    }
    let io = |ctx: &str, e| MidgeError::from_io(ctx, e);
    if mutate {
        for (j, &id) in rest.iter().enumerate() {
            let path = segment_path(id);
            let src = fs.open(&path, OpenMode::Read).map_err(|e| io(&path, e))?;
            let data = src.read_all().map_err(|e| io(&path, e))?;
            let q = format!("{path}.corrupt");
            let dst = fs.open(&q, OpenMode::CreateTruncate).map_err(|e| io(&q, e))?;
            dst.write_at(0, &data).map_err(|e| io(&q, e))?;
            dst.sync_all().map_err(|e| io(&q, e))?;
            if j == 0 {
                let f = fs.open(&path, OpenMode::ReadWrite).map_err(|e| io(&path, e))?;
                f.set_len(at).map_err(|e| io(&path, e))?;
                f.sync_all().map_err(|e| io(&path, e))?;
            } else {
                fs.remove(&path).map_err(|e| io(&path, e))?;
            }
        }
        fs.sync_dir(WAL_DIR).map_err(|e| io(WAL_DIR, e))?;
    }
    rep.salvaged = Some(msg);
    Ok(rep)
}

impl Wal {
    /// Starts a fresh segment `next_id` for appends; earlier segments (from replay) stay until released.
    /// `preallocate` extends each new segment to `segment_bytes` up front (see the module docs).
    pub fn create(
        fs: SharedFs,
        clock: Arc<dyn Clock>,
        segment_bytes: u64,
        next_id: u64,
        replayed: &[(u64, Seq)],
        preallocate: bool,
    ) -> MidgeResult<Wal> {
        let path = segment_path(next_id);
        let file = fs
            .open(&path, OpenMode::CreateNew)
            .map_err(|e| MidgeError::from_io("create wal segment", e))?;
        let prealloc_step = PREALLOC_STEP.min(segment_bytes.max(1));
        let reserved = if preallocate {
            preallocate_segment(&file, prealloc_step)?
        } else {
            0
        };
        fs.sync_dir(WAL_DIR)
            .map_err(|e| MidgeError::from_io("sync wal dir", e))?;
        let mut segments: BTreeMap<u64, Seq> = replayed.iter().copied().collect();
        segments.insert(next_id, 0);
        Ok(Wal {
            fs,
            last_sync_nanos: AtomicU64::new(clock.monotonic_nanos()),
            clock,
            segment_bytes,
            active: Mutex::new(Active {
                id: next_id,
                file,
                len: 0,
                pending: Vec::new(),
                scratch: Vec::new(),
                synced: 0,
                base_lsn: 0,
                max_seq: 0,
                reserved,
                named: true,
                filled: 0,
            }),
            segments: Mutex::new(segments),
            group: Mutex::new(Group::default()),
            preallocate,
            prealloc_step,
            appended_lsn: AtomicU64::new(0),
            synced_lsn: AtomicU64::new(0),
            poisoned: AtomicBool::new(false),
            gather: Gather::default(),
            stats: WalStats::default(),
            instance: WAL_INSTANCES.fetch_add(1, Ordering::Relaxed),
        })
    }

    pub fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }

    fn poison(&self) {
        self.poisoned.store(true, Ordering::Release);
    }

    /// Appends one transaction. Returns the log position that a covering sync must reach. The caller holds
    /// the engine's commit lock, so appends are ordered by sequence.
    pub fn append(&self, rec: &TxnRecord) -> MidgeResult<u64> {
        self.append_frame(rec, false)
    }

    /// [`Wal::append`] for a commit that will wait for a covering [`Wal::sync_to`]: the frame is kept in
    /// memory and written, together with every other frame appended meanwhile, by the fsync round that
    /// covers it (one `pwrite` per round instead of one per commit). Any plain append, rotation or sync
    /// writes the pending frames first, so the file always receives frames in log order.
    pub fn append_deferred(&self, rec: &TxnRecord) -> MidgeResult<u64> {
        self.append_frame(rec, true)
    }

    /// Most bytes a deferred append leaves pending before it writes them itself.
    const MAX_PENDING: usize = 1 << 20;

    fn append_frame(&self, rec: &TxnRecord, defer: bool) -> MidgeResult<u64> {
        if self.is_poisoned() {
            return Err(MidgeError::Poisoned(
                "WAL failed earlier; reopen the engine".into(),
            ));
        }
        let started = self.clock.monotonic_nanos();
        let mut a = lock(&self.active);
        let mut frame = std::mem::take(&mut a.scratch);
        frame.clear();
        frame.extend_from_slice(&[0; FRAME_HEADER]);
        frame.put_u64(a.synced);
        rec.encode_into(&mut frame);
        let payload_len = frame.len() - FRAME_HEADER;
        if payload_len > MAX_PAYLOAD {
            return Err(MidgeError::InvalidArgument(format!(
                "transaction encodes to {payload_len} bytes; the limit is {MAX_PAYLOAD}"
            )));
        }
        seal_frame(&mut frame);
        let res = self.place_frame(&mut a, &frame, defer);
        if frame.capacity() <= Self::MAX_SCRATCH {
            a.scratch = frame;
        }
        res?;
        let lsn = a.base_lsn + a.len;
        self.appended_lsn.store(lsn, Ordering::Release);
        a.max_seq = rec.commit_seq();
        if a.len >= self.segment_bytes {
            self.rotate_locked(&mut a)?;
        }
        drop(a);
        let n = self.gather.appends.fetch_add(1, Ordering::SeqCst) + 1;
        if self.gather.goal.load(Ordering::SeqCst) == n {
            // The gathering leader waits for exactly this append: wake it (under its lock, so the wake-up
            // cannot fall between its check and its wait).
            let _g = lock(&self.gather.lock);
            self.gather.cv.notify_one();
        }
        self.stats.appends.fetch_add(1, Ordering::Relaxed);
        self.stats.append_ns.fetch_add(
            self.clock.monotonic_nanos().saturating_sub(started),
            Ordering::Relaxed,
        );
        Ok(lsn)
    }

    /// Largest encode buffer kept for the next append.
    const MAX_SCRATCH: usize = 4 << 20;

    /// Puts one sealed frame at the end of the active segment: buffered for the next fsync round when
    /// deferred (and there is room), else written now after any pending frames. Advances `a.len`.
    fn place_frame(&self, a: &mut Active, frame: &[u8], defer: bool) -> MidgeResult<()> {
        let end = a.len + frame.len() as u64;
        if self.preallocate && end > a.reserved {
            a.reserved =
                preallocate_segment(&a.file, end + self.prealloc_step).inspect_err(|_| self.poison())?;
        }
        if defer && a.pending.len() + frame.len() <= Self::MAX_PENDING {
            a.pending.extend_from_slice(frame);
        } else {
            self.write_pending(a)?;
            if let Err(e) = a.file.write_at(a.len, frame) {
                // A failed write may have left a partial frame; later appends would sit behind garbage.
                self.poison();
                return Err(MidgeError::from_io("wal append", e));
            }
        }
        a.len += frame.len() as u64;
        Ok(())
    }

    /// Seals the active segment (fsync) and starts a new one. Everything appended so far becomes durable.
    pub fn rotate(&self) -> MidgeResult<()> {
        let mut a = lock(&self.active);
        if a.len == 0 {
            return Ok(());
        }
        self.rotate_locked(&mut a)
    }

    /// Writes the frames of deferred appends to the file (one `pwrite`). A failure poisons: the commits
    /// they belong to are never acknowledged, and later frames would sit behind a hole.
    fn write_pending(&self, a: &mut Active) -> MidgeResult<()> {
        if a.pending.is_empty() {
            return Ok(());
        }
        if self.is_poisoned() {
            return Err(MidgeError::Poisoned(
                "WAL failed earlier; reopen the engine".into(),
            ));
        }
        let at = a.len - a.pending.len() as u64;
        if let Err(e) = a.file.write_at(at, &a.pending) {
            self.poison();
            return Err(MidgeError::from_io("wal append", e));
        }
        a.pending.clear();
        a.filled = a.filled.max(a.len);
        if self.preallocate && a.filled < a.len + ZERO_AHEAD / 2 && a.filled < a.reserved {
            // Beyond every frame, so only zeros are overwritten: replay reads them as the unused tail. A
            // failure poisons like any failed WAL write (nothing is acknowledged after a failed storage step).
            let to = (a.len + ZERO_AHEAD).min(a.reserved);
            let zeros = &ZEROS[..(to - a.filled) as usize];
            if let Err(e) = a.file.write_at(a.filled, zeros) {
                self.poison();
                return Err(MidgeError::from_io("wal preallocate", e));
            }
            a.filled = to;
        }
        Ok(())
    }

    fn rotate_locked(&self, a: &mut Active) -> MidgeResult<()> {
        self.write_pending(a)?;
        if self.preallocate {
            // The sealed segment must end at its last frame before the next one exists (replay rejects a
            // zero tail anywhere but in the last segment): trimmed first, then one fsync makes its frames and
            // its new length durable together. (A crash in between leaves it the last segment, whose torn or
            // zero tail replay cuts off.)
            if let Err(e) = a.file.set_len(a.len) {
                self.poison();
                return Err(MidgeError::from_io("trim sealed wal segment", e));
            }
            self.fsync_with(&a.file, true)?;
        } else {
            self.fsync(&a.file)?;
        }
        let synced_to = a.base_lsn + a.len;
        let (sealed, sealed_max) = (a.id, a.max_seq);
        let next = a.id + 1;
        let path = segment_path(next);
        let file = self.fs.open(&path, OpenMode::CreateNew).map_err(|e| {
            self.poison();
            MidgeError::from_io("create wal segment", e)
        })?;
        let reserved = if self.preallocate {
            preallocate_segment(&file, self.prealloc_step).inspect_err(|_| self.poison())?
        } else {
            0
        };
        // The sealed segment's frames count as durable below: its name must be too. One directory sync then
        // also names the next segment; otherwise the next one stays unnamed until a round covers it.
        let named = !a.named;
        if named {
            self.sync_wal_dir()?;
        }
        *a = Active {
            named,
            id: next,
            file,
            len: 0,
            pending: Vec::new(),
            scratch: std::mem::take(&mut a.scratch),
            synced: 0,
            base_lsn: synced_to,
            max_seq: 0,
            reserved,
            filled: 0,
        };
        {
            let mut segments = lock(&self.segments);
            segments.insert(sealed, sealed_max);
            segments.insert(next, 0);
        }
        self.synced_lsn.fetch_max(synced_to, Ordering::AcqRel);
        Ok(())
    }

    /// Makes the WAL directory's entries durable; a failure poisons the WAL (the segments' names may be lost).
    fn sync_wal_dir(&self) -> MidgeResult<()> {
        self.fs.sync_dir(WAL_DIR).map_err(|e| {
            self.poison();
            MidgeError::from_io("sync wal dir", e)
        })
    }

    fn fsync(&self, file: &Arc<dyn File>) -> MidgeResult<()> {
        self.fsync_with(file, false)
    }

    /// An fsync of `file` (`all`: data and metadata, else data and what reading it back needs), counted in
    /// the WAL's stats; a failure poisons the WAL.
    fn fsync_with(&self, file: &Arc<dyn File>, all: bool) -> MidgeResult<()> {
        let started = self.clock.monotonic_nanos();
        let sync = || if all { file.sync_all() } else { file.sync_data() };
        let mut r = sync();
        if r.is_err() && cfg!(feature = "canary-retry-fsync") {
            r = sync();
        }
        self.fsync_done(started, r)
    }

    /// Accounts for an fsync of the log that began at `started` (monotonic ns) and ended with `r`: a
    /// failure poisons the WAL (never retried and trusted); a success is counted in the WAL's stats.
    fn fsync_done(&self, started: u64, r: std::io::Result<()>) -> MidgeResult<()> {
        if let Err(e) = r {
            self.poison();
            return Err(MidgeError::Poisoned(format!("WAL fsync failed: {e}")));
        }
        let ns = self.clock.monotonic_nanos().saturating_sub(started);
        self.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
        self.stats.fsync_ns.fetch_add(ns, Ordering::Relaxed);
        self.stats.fsync_ns_max.fetch_max(ns, Ordering::Relaxed);
        let ewma = self.gather.fsync_ewma_ns.load(Ordering::Relaxed);
        let ewma = if ewma == 0 { ns } else { (ewma * 7 + ns) / 8 };
        self.gather.fsync_ewma_ns.store(ewma, Ordering::Relaxed);
        self.last_sync_nanos
            .store(self.clock.monotonic_nanos(), Ordering::Relaxed);
        Ok(())
    }

    /// Returns once everything up to `lsn` is durable (group commit). One caller at a time (the leader) runs
    /// an fsync covering everything appended when it starts. A caller arriving meanwhile waits for the round
    /// that will cover it: the running one if its position is inside the leader's target, else the next.
    /// When a round completes, everyone waiting for it wakes and returns, and exactly one waiter of the next
    /// round is woken to lead it, so the device is never idle while commits wait and nobody wakes for nothing.
    /// (Queuing on one mutex instead wakes waiters one by one, each finding itself covered in turn, while the
    /// device idles; one shared condition variable wakes every waiter on every fsync.)
    pub fn sync_to(&self, lsn: u64) -> MidgeResult<()> {
        self.sync_to_then(lsn, &|| {})
    }

    /// [`Wal::sync_to`]; when this caller leads an fsync, `after` runs once it succeeded and before the
    /// waiters it covered are woken.
    pub fn sync_to_then(&self, lsn: u64, after: &dyn Fn()) -> MidgeResult<()> {
        if self.synced_lsn.load(Ordering::Acquire) >= lsn && !self.is_poisoned() {
            self.stats.sync_waiters_covered.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let mut g = lock(&self.group);
        // Set when the last round's leader picked this caller to lead the next round.
        let mut heir = false;
        loop {
            if self.is_poisoned() {
                return Err(MidgeError::Poisoned(
                    "WAL fsync failed earlier; reopen the engine".into(),
                ));
            }
            if self.synced_lsn.load(Ordering::Acquire) >= lsn {
                // Covered after all (an fsync reached further than its round's target, or a rotation
                // synced): an heir passes the lead on, so the next round's waiters are not stranded.
                let next = ((g.round + 1) % 2) as usize;
                if heir
                    && !g.running
                    && let Some(w) = g.waiters[next].pop()
                {
                    w.wake(WAKE_LEAD);
                }
                self.stats.sync_waiters_covered.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            if !g.running {
                break;
            }
            let round = if lsn <= g.target { g.round } else { g.round + 1 };
            let slot = WakeSlot::new();
            g.waiters[(round % 2) as usize].push(slot.clone());
            drop(g);
            heir = slot.wait(self.spin_budget()) == WAKE_LEAD;
            // Woken when the round ended (usually covering us) or to lead the next one.
            if !heir && self.synced_lsn.load(Ordering::Acquire) >= lsn && !self.is_poisoned() {
                self.stats.sync_waiters_covered.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            g = lock(&self.group);
        }
        g.running = true;
        g.round += 1;
        let round = g.round;
        if self.gather_due() {
            // Callers arriving while the leader gathers wait for this round; one that appended after the
            // target was taken wakes at its end, finds itself not covered and goes round again.
            g.target = u64::MAX;
            drop(g);
            self.gather();
            g = lock(&self.group);
        }
        // Every append up to here is in the segment (appends hold `active`), so this fsync covers it.
        g.target = self.appended_lsn.load(Ordering::Acquire);
        self.gather
            .covered
            .store(self.gather.appends.load(Ordering::SeqCst), Ordering::Relaxed);
        drop(g);
        let r = self.sync_active();
        if r.is_ok() {
            after();
        }
        let mut g = lock(&self.group);
        g.running = false;
        let done = std::mem::take(&mut g.waiters[(round % 2) as usize]);
        let next = &mut g.waiters[((round + 1) % 2) as usize];
        // After a failure everyone wakes (to see the poison); else one waiter of the next round leads it.
        let (wake, token): (Vec<Arc<WakeSlot>>, u32) = if r.is_err() {
            (std::mem::take(next), WAKE_DONE)
        } else {
            (next.pop().into_iter().collect(), WAKE_LEAD)
        };
        drop(g);
        // The next leader first, so the device is busy again while the others are woken. The leader wakes
        // every waiter of its round itself: most are still yielding (their wake-up is an atomic store, no
        // system call), and all of them become runnable at once. Waking in a tree (each woken waiter waking
        // two more) made them run one after another, and the next round's gather waited longer for them.
        for w in &wake {
            w.wake(token);
        }
        for w in &done {
            w.wake(WAKE_DONE);
        }
        r
    }

    /// Counts the caller as a sync committer until the guard drops: the group-commit leader uses the peak
    /// count to decide how many commits to gather before its fsync.
    pub fn sync_committer(&self) -> SyncCommitter<'_> {
        let n = self.gather.committers.fetch_add(1, Ordering::AcqRel) + 1;
        self.gather.peak.fetch_max(n, Ordering::AcqRel);
        SyncCommitter(&self.gather)
    }

    /// How many appends a new round should gather: the most sync committers seen at once during the last
    /// round (each of them commits again soon), when that is more than one and not yet all appended.
    fn gather_due(&self) -> bool {
        let g = &self.gather;
        let want = g
            .peak
            .swap(g.committers.load(Ordering::Acquire), Ordering::AcqRel);
        if !crate::runtime::THREADS || want <= 1 {
            return false;
        }
        let goal = g.covered.load(Ordering::Relaxed) + want;
        if g.appends.load(Ordering::SeqCst) >= goal {
            return false;
        }
        g.goal.store(goal, Ordering::Relaxed);
        true
    }

    /// Group commit on a device whose fsync costs more than a commit's CPU: N writers settle into two
    /// alternating groups (one in its fsync, one gathering), so a round carries about N/2 commits. When the
    /// last round saw concurrent committers, the leader waits (at most half the measured fsync time) until
    /// as many commits are appended as there were committers, so one fsync covers them all. A lone writer
    /// never waits.
    fn gather(&self) {
        let g = &self.gather;
        let goal = g.goal.load(Ordering::Relaxed);
        let budget = (g.fsync_ewma_ns.load(Ordering::Relaxed) / 2).min(2_000_000);
        let deadline = self.clock.monotonic_nanos().saturating_add(budget);
        // The commits gathered for are usually a few microseconds of CPU each away: yield first.
        let spin = std::time::Duration::from_nanos(budget.min(MAX_SPIN_NS));
        if crate::runtime::spin_until(spin, || g.appends.load(Ordering::SeqCst) >= goal) {
            g.goal.store(0, Ordering::SeqCst);
            return;
        }
        let mut l = lock(&g.lock);
        g.goal.store(goal, Ordering::SeqCst);
        loop {
            if g.appends.load(Ordering::SeqCst) >= goal {
                break;
            }
            let now = self.clock.monotonic_nanos();
            if now >= deadline {
                break;
            }
            let (next, timeout) =
                g.cv.wait_timeout(l, std::time::Duration::from_nanos(deadline - now))
                    .unwrap_or_else(|p| p.into_inner());
            l = next;
            if timeout.timed_out() {
                break;
            }
        }
        g.goal.store(0, Ordering::SeqCst);
    }

    /// How long a group-commit waiter yields before it sleeps: three fsyncs, at most [`MAX_SPIN_NS`]. With
    /// many writers a waiter that joins a gathering round waits for the gather, the fsync and the wake-up
    /// (≈ 1.5–2 fsyncs on 2 vCPUs); with two fsyncs' budget ≈ 10 % of 16 writers' waits still ended in a
    /// sleep and a futex wake-up (three: ≈ 3 %, and ≈ 3–5 % more commits/s).
    fn spin_budget(&self) -> std::time::Duration {
        let ewma = self.gather.fsync_ewma_ns.load(Ordering::Relaxed);
        std::time::Duration::from_nanos((ewma * 3).min(MAX_SPIN_NS))
    }

    /// Fsyncs the active segment, covering everything appended to it before the call.
    fn sync_active(&self) -> MidgeResult<()> {
        let point = self.sync_point()?;
        self.fsync(&point.file)?;
        self.synced_through(&point)
    }

    /// The first half of an fsync round: writes the pending frames and says what an fsync of which file
    /// covers now.
    fn sync_point(&self) -> MidgeResult<SyncPoint> {
        let mut a = lock(&self.active);
        self.write_pending(&mut a)?;
        Ok(SyncPoint {
            file: a.file.clone(),
            path: segment_path(a.id),
            segment: a.id,
            segment_len: a.len,
            target: a.base_lsn + a.len,
            named: a.named,
            started: self.clock.monotonic_nanos(),
            wal: self.instance,
        })
    }

    /// The last half of an fsync round, once the fsync of `point.file` succeeded: names the segment durably
    /// if no round did yet, then counts its frames as durable.
    fn synced_through(&self, point: &SyncPoint) -> MidgeResult<()> {
        // A segment a rotation created without syncing the directory: named before its frames count.
        if !point.named {
            self.sync_wal_dir()?;
        }
        {
            let mut a = lock(&self.active);
            if a.id == point.segment {
                a.synced = a.synced.max(point.segment_len);
                a.named = true;
            }
        }
        self.synced_lsn.fetch_max(point.target, Ordering::AcqRel);
        Ok(())
    }

    /// Begins an fsync round whose fsync the caller runs itself, outside the engine (a host that must not
    /// hold the engine through the fsync; see [`crate::Engine::begin_sync`]): writes the pending frames and
    /// returns the file to `sync_data` and the position that covers, or `None` when `lsn` is durable already.
    /// Independent of [`Wal::sync_to`]'s rounds: two fsyncs of one file may overlap, and each covers what was
    /// written before it began.
    pub fn begin_external_sync(&self, lsn: u64) -> MidgeResult<Option<SyncPoint>> {
        if self.is_poisoned() {
            return Err(MidgeError::Poisoned(
                "WAL fsync failed earlier; reopen the engine".into(),
            ));
        }
        if self.synced_lsn.load(Ordering::Acquire) >= lsn {
            return Ok(None);
        }
        self.sync_point().map(Some)
    }

    /// Ends a round [`Wal::begin_external_sync`] began, with the outcome of the caller's fsync: a failure
    /// poisons the WAL, as any failed fsync does; a success makes the point's frames durable.
    /// A point from another WAL is `InvalidArgument` and changes nothing.
    pub fn end_external_sync(&self, point: SyncPoint, fsync: std::io::Result<()>) -> MidgeResult<()> {
        if point.wal != self.instance {
            return Err(MidgeError::InvalidArgument(
                "sync plan belongs to another engine".into(),
            ));
        }
        self.fsync_done(point.started, fsync)?;
        if self.is_poisoned() {
            return Err(MidgeError::Poisoned(
                "WAL fsync failed earlier; reopen the engine".into(),
            ));
        }
        self.synced_through(&point)
    }

    /// At a clean close, after the final sync: trims the preallocated tail of the active segment so the file
    /// ends at its last frame. Best effort: a zero tail left behind is harmless (replay trims it).
    pub fn trim_active(&self) {
        if !self.preallocate || self.is_poisoned() {
            return;
        }
        let mut a = lock(&self.active);
        if self.write_pending(&mut a).is_err() {
            return;
        }
        if let Err(e) = a.file.set_len(a.len).and_then(|()| a.file.sync_all()) {
            tracing::warn!("trimming the preallocated WAL segment at close failed: {e}");
        }
    }

    /// Syncs everything appended so far.
    pub fn sync_all(&self) -> MidgeResult<()> {
        self.sync_to(self.appended_lsn.load(Ordering::Acquire))
    }

    /// True when buffered appends are older or larger than the bounded window.
    pub fn buffered_sync_due(&self, max_bytes: u64, max_nanos: u64) -> bool {
        self.unsynced()
            .is_some_and(|(pending, age)| pending >= max_bytes || age >= max_nanos)
    }

    /// Bytes appended but not yet covered by an fsync, and nanoseconds since the last fsync completed; `None`
    /// (without reading the clock) when every append is synced.
    pub fn unsynced(&self) -> Option<(u64, u64)> {
        let pending = self.appended_lsn.load(Ordering::Acquire) - self.synced_lsn.load(Ordering::Acquire);
        if pending == 0 {
            return None;
        }
        let age = self
            .clock
            .monotonic_nanos()
            .saturating_sub(self.last_sync_nanos.load(Ordering::Relaxed));
        Some((pending, age))
    }

    pub fn appended_lsn(&self) -> u64 {
        self.appended_lsn.load(Ordering::Acquire)
    }

    pub fn synced_lsn(&self) -> u64 {
        self.synced_lsn.load(Ordering::Acquire)
    }

    pub fn active_segment_id(&self) -> u64 {
        lock(&self.active).id
    }

    /// Deletes sealed segments whose every record is at or below `flushed` (covered by published SSTs).
    /// Returns how many were removed.
    pub fn release_upto(&self, flushed: Seq) -> MidgeResult<usize> {
        let active = self.active_segment_id();
        let victims: Vec<u64> = lock(&self.segments)
            .iter()
            .filter(|(id, max)| **id < active && **max <= flushed)
            .map(|(id, _)| *id)
            .collect();
        for id in &victims {
            let path = segment_path(*id);
            match self.fs.remove(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(MidgeError::from_io("remove wal segment", e)),
            }
            lock(&self.segments).remove(id);
        }
        if !victims.is_empty() {
            self.fs
                .sync_dir(WAL_DIR)
                .map_err(|e| MidgeError::from_io("sync wal dir", e))?;
        }
        Ok(victims.len())
    }

    /// Sealed segments (below the active one) with the highest sequence each holds.
    pub fn sealed_segments(&self) -> Vec<(u64, Seq)> {
        let active = self.active_segment_id();
        lock(&self.segments)
            .iter()
            .filter(|(id, _)| **id < active)
            .map(|(id, m)| (*id, *m))
            .collect()
    }

    /// Number of WAL segment files (sealed + active).
    pub fn segment_count(&self) -> usize {
        lock(&self.segments).len()
    }
}

#[cfg(test)]
mod tests;
