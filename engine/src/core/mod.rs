//! The engine core: shared state, open/recovery orchestration, the commit path (sequence allocation, WAL
//! append, group-commit fsync, memtable apply, in-order visibility), the read path, column-family DDL and
//! shutdown.
//!
//! The public facades in `api/` call into this module; it reaches storage only through `storage::`, background
//! work only through `runtime::`, and file formats only through `wal/` and `manifest/`.

pub(crate) mod lsm;
pub(crate) mod open;
mod read;
pub(crate) use read::ViewCache;

use crate::error::{MidgeError, MidgeResult};
use crate::manifest::{Edit, Manifest};
use crate::memtable::{Memtable, packed_len};
use crate::metrics::{EngineHealth, RecoveryMetricsSnapshot, RuntimeMetricsSnapshot};
use crate::options::{DurabilityPolicy, OpenOptions, WriteOptions};
use crate::runtime::{Clock, Executor};
use crate::storage::{LockGuard, SharedFs};
use crate::txn::{SnapshotRegistry, WriteSet};
use crate::types::{ColumnFamilyId, Entry, EntryKind, RangeTombstone, Seq};
use crate::wal::Wal;
use crate::wal::record::{TxnRecord, WalOp};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};

pub(crate) use open::open;

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The memtables of one column family, newest first when read.
#[derive(Debug)]
pub(crate) struct CfMems {
    pub active: Arc<Memtable>,
    /// Frozen generations awaiting flush, oldest first (copy-on-write like `tables`).
    pub immutable: Arc<Vec<Arc<Memtable>>>,
    /// Live SSTs of this column family (all levels). Swapped together with memtables so a reader never
    /// sees a flushed memtable twice or not at all. Shared copy-on-write, so a reader's view is one `Arc` clone.
    pub tables: Arc<Vec<Arc<lsm::Table>>>,
}

/// In-memory state of one column family.
#[derive(Debug)]
pub(crate) struct CfState {
    pub id: ColumnFamilyId,
    pub name: String,
    /// Read freely; change only through [`CfState::mems_mut`], which bumps `generation`.
    pub mems: RwLock<CfMems>,
    /// Bumped whenever `mems` changes or the column family is dropped, so a transaction can keep one view of
    /// the sources across reads and revalidate it with a single load instead of a lock and three `Arc`
    /// clones per read.
    pub generation: AtomicU64,
    /// Reads since the last read-triggered compaction that had to consult an L0 table and another table
    /// (see `Core::charge_read`).
    pub read_charges: AtomicU64,
    /// Set when those reads paid for folding L0 into L1; taken by the next background run.
    pub read_compaction: AtomicBool,
}

impl CfState {
    /// A column family with an empty memtable sized for `memtable_limit` bytes.
    pub fn new(id: ColumnFamilyId, name: String, memtable_limit: u64) -> CfState {
        CfState {
            id,
            name,
            mems: RwLock::new(CfMems {
                active: Arc::new(Memtable::new(memtable_limit)),
                immutable: Arc::new(Vec::new()),
                tables: Arc::default(),
            }),
            generation: AtomicU64::new(0),
            read_charges: AtomicU64::new(0),
            read_compaction: AtomicBool::new(false),
        }
    }

    /// The memtables and tables for changing; invalidates every cached view (see [`CfState::generation`]).
    pub fn mems_mut(&self) -> std::sync::RwLockWriteGuard<'_, CfMems> {
        let g = self.mems.write().unwrap_or_else(|p| p.into_inner());
        self.generation.fetch_add(1, Ordering::AcqRel);
        g
    }

    /// Memtables newest first.
    pub fn memtables(&self) -> Vec<Arc<Memtable>> {
        let m = self.mems.read().unwrap_or_else(|p| p.into_inner());
        std::iter::once(m.active.clone())
            .chain(m.immutable.iter().rev().cloned())
            .collect()
    }
}

/// Commit-ordered state guarded by the commit lock.
#[derive(Debug)]
pub(crate) struct CommitState {
    /// Last allocated sequence.
    pub last_seq: Seq,
}

#[derive(Debug, Default)]
struct Visibility {
    visible: Seq,
    /// Completed commits waiting for earlier ones: begin_seq -> commit_seq.
    done: BTreeMap<Seq, Seq>,
    /// Threads waiting on `vis_cv` (a notify is a system call even when nobody waits).
    waiters: usize,
}

/// Counters for runtime metrics.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub commits: AtomicU64,
    pub conflicts_point: AtomicU64,
    pub conflicts_range: AtomicU64,
    pub no_space: AtomicU64,
    pub durable_seq: AtomicU64,
    pub flushes: AtomicU64,
    pub flush_failures: AtomicU64,
    pub flush_build_ns: AtomicU64,
    pub compactions: AtomicU64,
    pub compaction_bytes: AtomicU64,
    pub stalls: AtomicU64,
    pub stalls_memory: AtomicU64,
    pub stalls_l0: AtomicU64,
    pub reads: AtomicU64,
    pub reads_ssts: AtomicU64,
    pub reads_l0: AtomicU64,
}

/// A sync commit applied to its memtable, its frame appended, waiting for an fsync to cover `lsn`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PendingSync {
    pub lsn: u64,
    pub begin: Seq,
    pub commit: Seq,
    /// Committed with `defer` ([`crate::Transaction::commit_deferred`]): nobody may be driving its fsync (the
    /// caller finishes it when it chooses, or never), so whoever needs it visible syncs it (see
    /// [`Core::settle_deferred`]).
    pub deferred: bool,
}

/// The first half of a deferred sync commit (see [`crate::Transaction::commit_deferred`]), to hand to
/// [`crate::Engine::finish_commit`]. The fields are public so a host can carry a ticket across a boundary (the
/// WIT `commit-ticket` record); they are not trusted: `finish_commit` checks a ticket against the log and the
/// sequence and refuses one that names no logged commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CommitTicket {
    /// The log position an fsync must cover for the commit to be durable.
    pub log_position: u64,
    /// The commit's first sequence number.
    pub first_seq: Seq,
    /// The commit's sequence number (that of its last write).
    pub commit_seq: Seq,
    /// The column family written.
    pub cf: ColumnFamilyId,
    /// The commit filled its memtable: finishing it schedules the flush, so a host must finish this ticket
    /// itself even when another finish already covered its log position.
    pub rotated_memtable: bool,
}

/// An fsync of the log that the caller runs itself (see [`crate::Engine::begin_sync`]): `sync_data` the
/// [`SyncPlan::file`], then hand the outcome to [`crate::Engine::end_sync`].
#[derive(Debug)]
pub struct SyncPlan(crate::wal::SyncPoint);

impl SyncPlan {
    /// The log file to `sync_data` (the engine's own handle, through its storage backend).
    pub fn file(&self) -> &Arc<dyn crate::storage::File> {
        &self.0.file
    }

    /// That file's path, relative to the engine's root directory.
    pub fn path(&self) -> &str {
        &self.0.path
    }

    /// The log position the fsync covers: every [`CommitTicket`] at or below it is durable once
    /// [`crate::Engine::end_sync`] accepted a successful fsync.
    pub fn log_position(&self) -> u64 {
        self.0.target
    }
}

/// What a commit hands back to its caller.
#[derive(Debug, Default)]
pub(crate) struct Committed {
    /// A deferred sync commit's first half: finish it with [`Core::finish_commit`].
    pub ticket: Option<CommitTicket>,
    /// The column family whose memtable this commit filled. Its flush is scheduled by the caller once the
    /// transaction is dropped, so the flush never sees the committing transaction's snapshot pinned — the same
    /// flush, byte for byte, whether the commit completed here or was deferred and finished later (with an
    /// inline executor it runs right there; a pinned snapshot keeps versions the flush would otherwise drop).
    pub flush: Option<Arc<CfState>>,
}

/// Everything the engine shares between the facade, transactions and background work.
pub(crate) struct Core {
    pub opts: OpenOptions,
    pub fs: SharedFs,
    pub clock: Arc<dyn Clock>,
    pub executor: Arc<dyn Executor>,
    pub in_memory: bool,
    lock_guard: Mutex<Option<Box<dyn LockGuard>>>,
    pub commit: Mutex<CommitState>,
    pub wal: Wal,
    pub manifest: Mutex<Manifest>,
    pub cfs: RwLock<BTreeMap<ColumnFamilyId, Arc<CfState>>>,
    vis: Mutex<Visibility>,
    vis_cv: Condvar,
    /// Wakes the background WAL syncer early, when buffered appends are halfway to their bound (see
    /// [`Core::buffered_durability`]).
    sync_nudge: Arc<crate::runtime::Nudge>,
    /// Sync commits applied to their memtable and waiting for an fsync, in log order. The group-commit leader
    /// publishes the ones its fsync covered, in order, before waking the others.
    pending_sync: Mutex<std::collections::VecDeque<PendingSync>>,
    visible: AtomicU64,
    pub snapshots: SnapshotRegistry,
    pub live_txns: AtomicUsize,
    closing: AtomicBool,
    closed: AtomicBool,
    poison: Mutex<Option<String>>,
    /// Set once `poison` holds a reason: the commit path checks this instead of locking `poison`.
    poisoned: AtomicBool,
    pub salvage: bool,
    /// A weak handle to ourselves, for scheduling background work from `&self` methods.
    pub me: std::sync::Weak<Core>,
    pub recovery: RecoveryMetricsSnapshot,
    pub counters: Counters,
    pub block_cache: Arc<crate::sst::BlockCache>,
    pub sst_stats: Arc<crate::sst::SstStats>,
    flush_lock: Mutex<()>,
    compaction_lock: Mutex<()>,
    /// Cloud-backed storage, when configured.
    pub cloud: Option<crate::cloud::Cloud>,
    /// Serialises sealing + upload + catalog publication (cloud group commit).
    cloud_lock: Mutex<()>,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("fs", &self.fs.describe())
            .finish_non_exhaustive()
    }
}

/// A commit request built by a transaction.
#[derive(Debug)]
pub(crate) struct CommitRequest<'a> {
    pub cf: ColumnFamilyId,
    pub snapshot: Seq,
    pub read_time: u64,
    pub abort_on_conflict: bool,
    /// Owned: once the checks pass, its operations move into the WAL record without a copy.
    pub writes: WriteSet,
    pub asserts: &'a [(Bytes, Option<Bytes>)],
}

impl Core {
    pub fn check_open(&self) -> MidgeResult<()> {
        if self.closed.load(Ordering::Acquire) || self.closing.load(Ordering::Acquire) {
            return Err(MidgeError::InvalidArgument("engine is shut down".into()));
        }
        Ok(())
    }

    pub fn check_writable(&self) -> MidgeResult<()> {
        self.check_open()?;
        self.check_fenced()?;
        if self.poisoned.load(Ordering::Acquire)
            && let Some(p) = lock(&self.poison).as_ref()
        {
            return Err(MidgeError::Poisoned(p.clone()));
        }
        Ok(())
    }

    /// `Fenced` once another writer took the cloud lease.
    pub fn check_fenced(&self) -> MidgeResult<()> {
        match &self.cloud {
            Some(c) if c.is_fenced() => Err(MidgeError::Fenced(
                "another writer holds the lease; this engine can no longer read or write".into(),
            )),
            _ => Ok(()),
        }
    }

    /// Stops all acknowledgements until reopen.
    pub fn poison(&self, why: &str) {
        let mut p = lock(&self.poison);
        if p.is_none() {
            tracing::error!("midge engine poisoned: {why}");
            *p = Some(why.to_string());
            self.poisoned.store(true, Ordering::Release);
        }
        drop(p);
        self.vis_cv.notify_all();
    }

    pub fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire) || self.wal.is_poisoned()
    }

    /// Maps a durability error, poisoning the engine when it means an unknown amount was lost.
    pub(crate) fn durability_failed(&self, e: MidgeError) -> MidgeError {
        match &e {
            MidgeError::NoSpace(_) => {
                self.counters.no_space.fetch_add(1, Ordering::Relaxed);
            }
            MidgeError::InvalidArgument(_) => return e,
            _ => {}
        }
        self.poison(&e.to_string());
        // A fenced writer stays `Fenced` (its own severity class); everything else becomes `Poisoned`.
        if matches!(e, MidgeError::Poisoned(_) | MidgeError::Fenced(_)) {
            e
        } else {
            MidgeError::Poisoned(e.to_string())
        }
    }

    pub fn visible_seq(&self) -> Seq {
        self.visible.load(Ordering::Acquire)
    }

    pub fn cf(&self, id: ColumnFamilyId) -> Option<Arc<CfState>> {
        self.cfs
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
    }

    /// Whether column family `id` exists (no reference count taken: every transaction begins with this).
    pub fn has_cf(&self, id: ColumnFamilyId) -> bool {
        self.cfs
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&id)
    }

    pub fn cf_by_name(&self, name: &str) -> Option<Arc<CfState>> {
        self.cfs
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .find(|c| c.name == name)
            .cloned()
    }

    pub fn list_cfs(&self) -> Vec<Arc<CfState>> {
        self.cfs
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    fn check_policy(&self, opts: WriteOptions) -> MidgeResult<()> {
        use DurabilityPolicy::*;
        match (opts.policy(), self.cloud.is_some()) {
            (BestEffort, _) | (Sync | Buffered, false) | (CloudAsync | CloudStrict, true) => Ok(()),
            (CloudAsync | CloudStrict, false) => Err(MidgeError::InvalidArgument(
                "cloud durability modes need cloud storage; use sync(), buffered() or best_effort()".into(),
            )),
            (Sync | Buffered, true) => Err(MidgeError::InvalidArgument(
                "cloud storage commits use cloud_strict(), cloud_async() or best_effort()".into(),
            )),
        }
    }

    /// Applies a manifest edit durably and, on cloud storage, mirrors the new manifest before returning.
    pub(crate) fn apply_edit(&self, m: &mut crate::manifest::Manifest, edit: Edit) -> MidgeResult<()> {
        m.apply(edit).map_err(|e| self.durability_failed(e))?;
        if let Some(cloud) = &self.cloud {
            cloud
                .upload_manifest(bytes::Bytes::from(m.snapshot_bytes()))
                .map_err(|e| self.durability_failed(e))?;
        }
        Ok(())
    }

    /// Cloud group commit: seals the WAL through `lsn`, uploads and reads back every sealed segment, and
    /// publishes them in the catalog. Returns once `lsn` is covered by a published segment.
    pub(crate) fn cloud_sync(&self, lsn: u64) -> MidgeResult<()> {
        let Some(cloud) = &self.cloud else { return Ok(()) };
        if cloud.durable_lsn.load(Ordering::Acquire) >= lsn {
            return Ok(());
        }
        let _g = lock(&self.cloud_lock);
        if cloud.durable_lsn.load(Ordering::Acquire) >= lsn {
            return Ok(());
        }
        let target = self.wal.appended_lsn();
        cloud.pending_commits.store(0, Ordering::Release);
        self.wal.rotate()?;
        cloud.publish_sealed(&self.fs, &self.wal.sealed_segments())?;
        cloud.durable_lsn.fetch_max(target, Ordering::AcqRel);
        Ok(())
    }

    /// Commits a write set atomically with one contiguous sequence range; with `defer`, only the first half of
    /// a sync commit: logged (the frame waits for the next fsync round) and applied, neither durable nor
    /// visible, and a ticket for [`Core::finish_commit`] comes back (see
    /// [`crate::Transaction::commit_deferred`]). A commit that filled its memtable leaves the flush to its
    /// caller, to schedule once the transaction's snapshot is released (see [`Committed::flush`]).
    pub fn commit(
        &self,
        mut req: CommitRequest<'_>,
        opts: WriteOptions,
        defer: bool,
    ) -> MidgeResult<Committed> {
        self.check_writable()?;
        self.check_policy(opts)?;
        let policy = opts.policy();
        let _committer = (policy == DurabilityPolicy::Sync && !defer).then(|| self.wal.sync_committer());
        let encoded: usize = req.writes.ops.iter().map(WalOp::encoded_len).sum::<usize>() + 64;
        if policy != DurabilityPolicy::BestEffort && encoded > crate::wal::MAX_PAYLOAD {
            return Err(MidgeError::InvalidArgument(format!(
                "transaction of {encoded} bytes exceeds the {} byte WAL frame limit",
                crate::wal::MAX_PAYLOAD
            )));
        }
        let mut c = lock(&self.commit);
        self.check_writable()?;
        let cf = self
            .cf(req.cf)
            .ok_or_else(|| MidgeError::InvalidArgument(format!("column family {} was dropped", req.cf)))?;
        self.check_conflicts(&req)?;
        let ops = std::mem::take(&mut req.writes.ops);
        if ops.is_empty() {
            drop(c);
            // Assertion-only or empty commits allocate no sequence but honour the durability barrier.
            match policy {
                DurabilityPolicy::Sync => self.wal.sync_all().map_err(|e| self.durability_failed(e))?,
                DurabilityPolicy::CloudStrict => self
                    .cloud_sync(self.wal.appended_lsn())
                    .map_err(|e| self.durability_failed(e))?,
                _ => {}
            }
            return Ok(Committed::default());
        }
        let active = self.check_stall(&cf)?;
        let begin = c.last_seq + 1;
        let record = TxnRecord {
            cf: req.cf,
            begin_seq: begin,
            ops,
        };
        let commit_seq = record.commit_seq();
        let lsn = if policy == DurabilityPolicy::BestEffort {
            0
        } else {
            // A sync commit's frame is written by the fsync round that covers it, with its peers'.
            let appended = if policy == DurabilityPolicy::Sync {
                self.wal.append_deferred(&record)
            } else {
                self.wal.append(&record)
            };
            match appended {
                Ok(l) => l,
                Err(e) => return Err(self.durability_failed(e)),
            }
        };
        c.last_seq = commit_seq;
        apply_record(&active, record);
        let rotated = active.approximate_bytes() >= self.opts.memtable_flush_threshold;
        if rotated && let Err(e) = self.rotate_locked(&cf) {
            return Err(self.durability_failed(e));
        }
        let leader_publishes = policy == DurabilityPolicy::Sync && !cfg!(feature = "canary-ack-before-sync");
        if leader_publishes {
            lock(&self.pending_sync).push_back(PendingSync {
                lsn,
                begin,
                commit: commit_seq,
                deferred: defer,
            });
        }
        drop(c);
        if defer && leader_publishes {
            return Ok(Committed {
                ticket: Some(CommitTicket {
                    log_position: lsn,
                    first_seq: begin,
                    commit_seq,
                    cf: req.cf,
                    rotated_memtable: rotated,
                }),
                flush: None,
            });
        }
        let durable = match policy {
            DurabilityPolicy::Sync if !cfg!(feature = "canary-ack-before-sync") => {
                self.wal.sync_to_then(lsn, &|| {
                    self.publish_synced();
                })
            }
            DurabilityPolicy::CloudStrict
                if !cfg!(feature = "canary-ack-before-sync")
                    && !cfg!(feature = "canary-cloud-ack-before-upload") =>
            {
                self.cloud_sync(lsn)
            }
            DurabilityPolicy::CloudAsync
                if self.cloud.as_ref().is_some_and(|c| {
                    c.pending_commits.fetch_add(1, Ordering::AcqRel) + 1 >= self.opts.cloud_seal_commits
                }) || self.wal.buffered_sync_due(
                    self.opts.cloud_seal_bytes,
                    self.opts.cloud_seal_delay.as_nanos() as u64,
                ) =>
            {
                self.cloud_sync(lsn)
            }
            DurabilityPolicy::Buffered => self.buffered_durability(lsn),
            _ => Ok(()),
        };
        if let Err(e) = durable {
            return Err(self.durability_failed(e));
        }
        if policy == DurabilityPolicy::Sync {
            self.counters.durable_seq.fetch_max(commit_seq, Ordering::AcqRel);
        }
        // Usually the group-commit leader already published this commit (then it and every entry before it
        // left `pending_sync`): skip both locks, which all of a round's waiters would take at once.
        if self.visible.load(Ordering::Acquire) < commit_seq {
            if leader_publishes {
                // Covered by an fsync that did not publish it (a background or buffered-mode sync): publish
                // it and anything else such a sync covered, so the queue never outlives its fsyncs.
                self.publish_synced();
            }
            self.publish(begin, commit_seq)?;
        }
        self.counters.commits.fetch_add(1, Ordering::Relaxed);
        Ok(Committed {
            ticket: None,
            flush: rotated.then_some(cf),
        })
    }

    /// The second half of a deferred sync commit: returns once an fsync covers it (sharing the round with
    /// concurrent committers) and it is visible, with the log position that fsync covered. A ticket is checked
    /// against the log and the sequence; one that names no logged commit is `InvalidArgument` and changes
    /// nothing (visibility only ever advances over commits the engine itself queued).
    pub fn finish_commit(&self, t: CommitTicket) -> MidgeResult<u64> {
        self.check_open()?;
        let last = lock(&self.commit).last_seq;
        if t.first_seq == 0
            || t.first_seq > t.commit_seq
            || t.commit_seq > last
            || t.log_position > self.wal.appended_lsn()
        {
            return Err(MidgeError::InvalidArgument(format!(
                "commit ticket {t:?} names no logged commit (last sequence {last})"
            )));
        }
        let synced = self.sync_and_publish(t.log_position)?;
        self.wait_visible(t.commit_seq)?;
        if t.rotated_memtable
            && let Some(cf) = self.cf(t.cf)
            && let Some(me) = self.me.upgrade()
        {
            me.schedule(cf);
        }
        Ok(synced)
    }

    /// See [`crate::Engine::begin_sync`].
    pub fn begin_sync(&self, log_position: u64) -> MidgeResult<Option<SyncPlan>> {
        self.check_writable()?;
        if log_position > self.wal.appended_lsn() {
            return Err(MidgeError::InvalidArgument(format!(
                "log position {log_position} is past the end of the log ({})",
                self.wal.appended_lsn()
            )));
        }
        let point = self
            .wal
            .begin_external_sync(log_position)
            .map_err(|e| self.durability_failed(e))?;
        Ok(point.map(SyncPlan))
    }

    /// See [`crate::Engine::end_sync`].
    pub fn end_sync(&self, plan: SyncPlan, fsync: std::io::Result<()>) -> MidgeResult<u64> {
        self.wal
            .end_external_sync(plan.0, fsync)
            .map_err(|e| self.durability_failed(e))?;
        Ok(self.publish_synced())
    }

    /// Syncs and publishes every deferred commit queued at or below `upto` whose caller has not finished it:
    /// whoever needs such a commit visible (a later commit's publication, a flush) makes it durable itself
    /// instead of waiting for a caller that may finish it late or never (on a single thread: never, while it
    /// waits). Commits of other policies are in flight on their own threads and need nothing from here.
    pub(crate) fn settle_deferred(&self, upto: Seq) -> MidgeResult<()> {
        let lsn = lock(&self.pending_sync)
            .iter()
            .filter(|p| p.deferred && p.begin <= upto)
            .map(|p| p.lsn)
            .max();
        if let Some(lsn) = lsn {
            self.sync_and_publish(lsn)?;
        }
        Ok(())
    }

    /// Makes the log durable through `lsn` (joining or leading a group-commit round) and publishes every sync
    /// commit the log's fsyncs now cover — also when an earlier fsync already covered `lsn` and nobody
    /// published behind it. Returns the log position published up to.
    fn sync_and_publish(&self, lsn: u64) -> MidgeResult<u64> {
        if self.is_poisoned() || self.wal.synced_lsn() < lsn {
            self.wal
                .sync_to_then(lsn, &|| {
                    self.publish_synced();
                })
                .map_err(|e| self.durability_failed(e))?;
        }
        Ok(self.publish_synced())
    }

    /// The buffered-mode bound: a buffered commit returns with fewer than `buffered_sync_bytes` appended and
    /// not yet fsynced, and no more than `buffered_sync_interval` since the last fsync, or else it fsyncs
    /// through `lsn` itself. With a background syncer running (threaded executors), a commit that finds the
    /// log halfway to either bound nudges the syncer instead, so the fsync normally runs beside the writer and
    /// the commit path never waits for it; the commit still fsyncs itself if the syncer has not caught up by
    /// the bound. The bound is the same either way; only who pays for the fsync changes.
    fn buffered_durability(&self, lsn: u64) -> MidgeResult<()> {
        let Some((pending, age)) = self.wal.unsynced() else {
            return Ok(());
        };
        let (bytes, nanos) = (
            self.opts.buffered_sync_bytes,
            self.opts.buffered_sync_interval.as_nanos() as u64,
        );
        if pending >= bytes || age >= nanos {
            return self.wal.sync_to(lsn);
        }
        if (pending >= bytes / 2 || age >= nanos / 2) && self.sync_nudge.has_waiter() {
            self.sync_nudge.nudge();
        }
        Ok(())
    }

    /// Writes are refused before touching the WAL while memtables or L0 are over their ceilings. Returns the
    /// active memtable (called under the commit lock, so it is the one the commit applies to).
    fn check_stall(&self, cf: &CfState) -> MidgeResult<Arc<Memtable>> {
        let v = cf.mems.read().unwrap_or_else(|p| p.into_inner());
        let frozen = v.immutable.len();
        let l0 = v.tables.iter().filter(|t| t.meta.level == 0).count();
        let active = v.active.clone();
        drop(v);
        let (why, counter) = if frozen > self.opts.max_immutable_memtables {
            (
                format!("{frozen} memtables await flush"),
                &self.counters.stalls_memory,
            )
        } else if l0 >= self.opts.l0_stall_ceiling {
            (
                format!("{l0} L0 files await compaction"),
                &self.counters.stalls_l0,
            )
        } else {
            return Ok(active);
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.counters.stalls.fetch_add(1, Ordering::Relaxed);
        if let Some(me) = self.me.upgrade()
            && let Some(cf) = self.cf(cf.id)
        {
            me.schedule(cf);
        }
        Err(MidgeError::WriteStall(why))
    }

    /// Whether any column family is over a stall ceiling now.
    pub fn write_stalled(&self) -> bool {
        self.list_cfs().iter().any(|cf| {
            let v = cf.mems.read().unwrap_or_else(|p| p.into_inner());
            v.immutable.len() > self.opts.max_immutable_memtables
                || v.tables.iter().filter(|t| t.meta.level == 0).count() >= self.opts.l0_stall_ceiling
        })
    }

    /// Marks `[begin, commit]` ready (idempotent) and advances `visible` over every ready commit in order.
    /// Wakes visibility waiters only when `visible` moved (a group of commits finishing out of order would
    /// otherwise wake every waiter once per commit).
    fn mark_ready(&self, v: &mut Visibility, ready: impl IntoIterator<Item = (Seq, Seq)>) {
        let was = v.visible;
        for (begin, commit) in ready {
            if begin == v.visible + 1 && v.done.is_empty() {
                // The common uncontended case: next in line, nothing parked.
                v.visible = commit;
            } else if begin > v.visible {
                v.done.insert(begin, commit);
            }
        }
        while let Some((&b, &c)) = v.done.first_key_value() {
            if b != v.visible + 1 {
                break;
            }
            v.visible = c;
            v.done.remove(&b);
        }
        if v.visible != was {
            self.visible.store(v.visible, Ordering::Release);
            if v.waiters > 0 {
                self.vis_cv.notify_all();
            }
        }
    }

    /// Run by the group-commit leader after its fsync, before it wakes the waiters: publishes every sync
    /// commit that fsync covered, in log order, so the waiters find themselves visible instead of each
    /// waiting in turn for its predecessors. Returns the log position it published up to.
    pub(crate) fn publish_synced(&self) -> u64 {
        let synced = self.wal.synced_lsn();
        let ready: Vec<PendingSync> = {
            let mut q = lock(&self.pending_sync);
            let n = q.iter().take_while(|p| p.lsn <= synced).count();
            q.drain(..n).collect()
        };
        if !ready.is_empty() {
            for p in &ready {
                self.counters.durable_seq.fetch_max(p.commit, Ordering::AcqRel);
                // A deferred commit counts once durable (its caller may never finish it).
                if p.deferred {
                    self.counters.commits.fetch_add(1, Ordering::Relaxed);
                }
            }
            let mut v = lock(&self.vis);
            self.mark_ready(&mut v, ready.iter().map(|p| (p.begin, p.commit)));
        }
        synced
    }

    /// Makes `[begin, commit]` visible once every earlier commit is visible (it may already be, when a
    /// group-commit leader published it).
    fn publish(&self, begin: Seq, commit: Seq) -> MidgeResult<()> {
        {
            let mut v = lock(&self.vis);
            if v.visible < commit {
                self.mark_ready(&mut v, [(begin, commit)]);
            }
            if v.visible >= commit {
                return Ok(());
            }
        }
        // An earlier commit is still in flight on another thread, or deferred and unfinished.
        self.wait_visible(commit)
    }

    /// Assertions, write-write conflicts and insert checks, run under the commit lock before any WAL write.
    fn check_conflicts(&self, req: &CommitRequest<'_>) -> MidgeResult<()> {
        for (key, expected) in req.asserts {
            let seen = self.get(req.cf, key, req.snapshot, req.read_time)?;
            let newer = self.latest_mutation_seq(req.cf, key)? > req.snapshot;
            if newer || seen.as_deref() != expected.as_deref() {
                self.counters.conflicts_point.fetch_add(1, Ordering::Relaxed);
                return Err(MidgeError::WriteConflict(format!(
                    "assert_value failed for key {:?}",
                    String::from_utf8_lossy(key)
                )));
            }
        }
        if req.abort_on_conflict {
            for key in req.writes.point_keys() {
                if self.latest_mutation_seq(req.cf, key)? > req.snapshot {
                    self.counters.conflicts_point.fetch_add(1, Ordering::Relaxed);
                    return Err(MidgeError::WriteConflict(format!(
                        "key {:?} was modified after this transaction began",
                        String::from_utf8_lossy(key)
                    )));
                }
            }
            for (s, e) in req.writes.ranges() {
                if self.range_modified_after(req.cf, s, e, req.snapshot)? {
                    self.counters.conflicts_range.fetch_add(1, Ordering::Relaxed);
                    return Err(MidgeError::WriteConflict(
                        "a deleted range was modified after begin".into(),
                    ));
                }
            }
        }
        let now = if req.writes.inserts.is_empty() {
            0
        } else {
            self.clock.now_millis()
        };
        for key in &req.writes.inserts {
            if self.get(req.cf, key, Seq::MAX, now)?.is_some() {
                return Err(MidgeError::InvalidArgument(format!(
                    "insert: key {:?} already exists",
                    String::from_utf8_lossy(key)
                )));
            }
        }
        Ok(())
    }

    pub fn create_cf(&self, name: &str) -> MidgeResult<Arc<CfState>> {
        validate_cf_name(name)?;
        self.check_writable()?;
        let _c = lock(&self.commit);
        if self.cf_by_name(name).is_some() {
            return Err(MidgeError::InvalidArgument(format!(
                "column family {name:?} already exists"
            )));
        }
        let mut m = lock(&self.manifest);
        let id = m.state().next_cf_id;
        if id == u32::MAX {
            return Err(MidgeError::ResourceLimit(
                "column family id space exhausted".into(),
            ));
        }
        let edit = Edit {
            create_cf: vec![(id, name.to_string())],
            next_cf_id: Some(id + 1),
            ..Default::default()
        };
        self.apply_edit(&mut m, edit)?;
        let cf = Arc::new(CfState::new(id, name.to_string(), self.opts.memtable_size_limit));
        self.cfs
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, cf.clone());
        Ok(cf)
    }

    pub fn drop_cf(&self, id: ColumnFamilyId, discard_unflushed: bool) -> MidgeResult<()> {
        self.check_writable()?;
        if id == 0 {
            return Err(MidgeError::InvalidArgument(
                "the default column family cannot be dropped".into(),
            ));
        }
        let _c = lock(&self.commit);
        let cf = self.cf(id).ok_or(MidgeError::NotFound)?;
        if !discard_unflushed {
            let bytes: u64 = cf.memtables().iter().map(|m| m.approximate_bytes()).sum();
            if bytes > 0 {
                return Err(MidgeError::UnflushedDataPresent {
                    cf_id: id,
                    bytes: bytes as usize,
                });
            }
        }
        let mut m = lock(&self.manifest);
        let files: Vec<u64> = m
            .state()
            .files
            .values()
            .filter(|f| f.cf == id)
            .map(|f| f.id)
            .collect();
        let edit = Edit {
            drop_cf: vec![id],
            remove_files: files.clone(),
            ..Default::default()
        };
        self.apply_edit(&mut m, edit)?;
        drop(m);
        if let Some(cf) = self.cfs.write().unwrap_or_else(|p| p.into_inner()).remove(&id) {
            cf.generation.fetch_add(1, Ordering::AcqRel);
        }
        // Live readers keep their open handles; a crash before these removals leaves orphans, removed at open.
        self.block_cache.evict_files(&files);
        for f in &files {
            let _ = self.fs.remove(&lsm::sst_path(*f));
        }
        if let Some(cloud) = &self.cloud {
            cloud.delete_ssts(&files);
        }
        Ok(())
    }

    /// Begins closing: refuses new work; `Busy` while transactions are alive.
    pub fn shutdown(&self) -> MidgeResult<()> {
        if self.closed.load(Ordering::Acquire) {
            return Ok(());
        }
        self.closing.store(true, Ordering::Release);
        let live = self.live_txns.load(Ordering::Acquire);
        if live > 0 {
            return Err(MidgeError::Busy(format!("{live} transactions are still alive")));
        }
        self.close()
    }

    /// Makes buffered WAL data durable and releases the directory lock. Idempotent.
    pub fn close(&self) -> MidgeResult<()> {
        self.closing.store(true, Ordering::Release);
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        // Never release the directory lock while a flush or compaction may still write: wait for the one in
        // flight (they hold these locks while writing); later ones see `closed` and stand down.
        let _flush = lock(&self.flush_lock);
        let _compaction = lock(&self.compaction_lock);
        let r = if self.is_poisoned() {
            Ok(())
        } else if self.cloud.is_some() {
            self.cloud_sync(self.wal.appended_lsn())
        } else {
            let r = self.wal.sync_all();
            if r.is_ok() {
                self.wal.trim_active();
            }
            r
        };
        lock(&self.lock_guard).take();
        r
    }

    pub fn runtime_metrics(&self) -> RuntimeMetricsSnapshot {
        let now = self.clock.now_millis();
        let cfs = self.list_cfs();
        let mut active = 0;
        let mut immutable = 0;
        let mut bytes = 0;
        for cf in &cfs {
            let m = cf.mems.read().unwrap_or_else(|p| p.into_inner());
            active += 1;
            immutable += m.immutable.len() as u64;
            bytes +=
                m.active.approximate_bytes() + m.immutable.iter().map(|x| x.approximate_bytes()).sum::<u64>();
        }
        let (last_persisted, next_file, sst_count, sst_bytes) = {
            let m = lock(&self.manifest);
            let s = m.state();
            (
                s.last_seq,
                s.next_file_id,
                s.files.len() as u64,
                s.files.values().map(|f| f.size).sum(),
            )
        };
        let snaps = self.snapshots.list();
        let (cache_hits, cache_misses) = self.block_cache.hits_and_misses();
        let ws = &self.wal.stats;
        RuntimeMetricsSnapshot {
            health: self.health(),
            current_sequence: self.visible_seq(),
            manifest_last_persisted_sequence: last_persisted,
            manifest_next_wal_seq: next_file,
            active_memtables: active,
            immutable_memtables: immutable,
            total_memtable_bytes: bytes,
            memtable_size_limit: self.opts.memtable_size_limit,
            memtable_flush_threshold: self.opts.memtable_flush_threshold,
            write_stalled: self.write_stalled(),
            wal_current_segment_id: self.wal.active_segment_id(),
            wal_pending_bytes: self.wal.appended_lsn() - self.wal.synced_lsn(),
            wal_local_durable_seq: self.counters.durable_seq.load(Ordering::Relaxed),
            wal_cloud_durable_seq: self
                .cloud
                .as_ref()
                .map_or(0, |c| c.durable_seq.load(Ordering::Relaxed)),
            cloud_wal_segments_uploaded: self
                .cloud
                .as_ref()
                .map_or(0, |c| c.uploads.load(Ordering::Relaxed)),
            cloud_object_puts_total: self.cloud.as_ref().map_or(0, |c| c.puts.load(Ordering::Relaxed)),
            cloud_objects_deleted_total: self
                .cloud
                .as_ref()
                .map_or(0, |c| c.deletes.load(Ordering::Relaxed)),
            cloud_request_retries_total: self
                .cloud
                .as_ref()
                .map_or(0, |c| c.retries.load(Ordering::Relaxed)),
            wal_segments: self.wal.segment_count() as u64,
            active_snapshots: self.snapshots.count() as u64,
            oldest_snapshot_age_seconds: snaps
                .iter()
                .map(|s| now.saturating_sub(s.2) / 1000)
                .max()
                .unwrap_or(0),
            sst_count,
            sst_bytes,
            salvage_mode_opens: u64::from(self.salvage),
            no_space_events: self.counters.no_space.load(Ordering::Relaxed),
            write_conflicts_total: self.counters.conflicts_point.load(Ordering::Relaxed)
                + self.counters.conflicts_range.load(Ordering::Relaxed),
            write_conflicts_point_total: self.counters.conflicts_point.load(Ordering::Relaxed),
            write_conflicts_range_total: self.counters.conflicts_range.load(Ordering::Relaxed),
            wal_append_count: ws.appends.load(Ordering::Relaxed),
            wal_fsync_count: ws.fsyncs.load(Ordering::Relaxed),
            wal_append_ns_total: ws.append_ns.load(Ordering::Relaxed),
            wal_fsync_ns_total: ws.fsync_ns.load(Ordering::Relaxed),
            wal_fsync_ns_max: ws.fsync_ns_max.load(Ordering::Relaxed),
            durability_waiters_fanned_out_total: ws.sync_waiters_covered.load(Ordering::Relaxed),
            commits_total: self.counters.commits.load(Ordering::Relaxed),
            write_stalls_total: self.counters.stalls.load(Ordering::Relaxed),
            write_stalls_memory_total: self.counters.stalls_memory.load(Ordering::Relaxed),
            write_stalls_compaction_total: self.counters.stalls_l0.load(Ordering::Relaxed),
            compactions_run: self.counters.compactions.load(Ordering::Relaxed),
            compaction_bytes_rewritten: self.counters.compaction_bytes.load(Ordering::Relaxed),
            cache_hits,
            cache_misses,
            sst_bloom_checks_total: self.sst_stats.bloom_checks.load(Ordering::Relaxed),
            sst_bloom_rejects_total: self.sst_stats.bloom_rejects.load(Ordering::Relaxed),
            sst_data_blocks_read_total: self.sst_stats.blocks_read.load(Ordering::Relaxed),
            flush_queue_depth: immutable,
            flush_publish_count: self.counters.flushes.load(Ordering::Relaxed),
            flush_failures_total: self.counters.flush_failures.load(Ordering::Relaxed),
            flush_build_ns_total: self.counters.flush_build_ns.load(Ordering::Relaxed),
            wal_recovery_records_replayed: self.recovery.wal_recovery_records_replayed,
            wal_recovery_bytes_replayed: self.recovery.wal_recovery_bytes_replayed,
            intent_log_replay_runs: self.recovery.intent_log_replay_runs,
            intent_log_entries_replayed: self.recovery.intent_log_entries_replayed,
            ..Default::default()
        }
    }

    pub fn health(&self) -> EngineHealth {
        if self.is_poisoned() {
            EngineHealth::Poisoned
        } else if self.salvage {
            EngineHealth::SalvageMode
        } else if self.write_stalled() {
            EngineHealth::WriteStalled
        } else {
            EngineHealth::Healthy
        }
    }
}

/// Starts background work: natively a WAL syncer that bounds the buffered-mode loss window. Inline executors
/// (wasm32) get the same bound from the check in the commit path instead.
pub(crate) fn start_background(core: &Arc<Core>) {
    if core.executor.is_inline() {
        return;
    }
    let weak = Arc::downgrade(core);
    let interval = core.opts.buffered_sync_interval;
    // Local storage: buffered commits nudge this thread when their log is halfway to its bound. Only where
    // waiting is the OS clock: an executor with its own notion of time gets every wait through its `sleep`.
    let nudge =
        (core.cloud.is_none() && core.executor.sleeps_in_real_time()).then(|| core.sync_nudge.clone());
    core.executor.spawn(
        "wal-sync-ticker",
        Box::new(move || {
            if let Some(n) = &nudge {
                n.register();
            }
            let mut nudged = false;
            loop {
                let Some(c) = weak.upgrade() else { return };
                if c.closed.load(Ordering::Acquire) {
                    return;
                }
                let due = |bytes: u64, age: std::time::Duration| {
                    !c.is_poisoned() && c.wal.buffered_sync_due(bytes, age.as_nanos() as u64)
                };
                if c.cloud.is_some() {
                    if due(1, c.opts.cloud_seal_delay)
                        && let Err(e) = c.cloud_sync(c.wal.appended_lsn())
                    {
                        c.poison(&e.to_string());
                    }
                } else if (if nudged {
                    // The nudge's own test (a nudge left from before the last fsync may be stale).
                    due(c.opts.buffered_sync_bytes / 2, interval / 2)
                } else {
                    due(1, interval)
                }) && let Err(e) = c.wal.sync_all()
                {
                    c.poison(&e.to_string());
                }
                let exec = c.executor.clone();
                drop(c);
                // Never waits holding the engine, so dropping it ends this loop within one period.
                match &nudge {
                    Some(n) => nudged = n.wait(interval / 2),
                    None => exec.sleep(interval / 2),
                }
            }
        }),
    );
}

impl Drop for Core {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

/// Applies a logged transaction to a memtable with its original sequences; the memtable copies short keys and
/// values into a few shared chunks (see `memtable::Packer`).
pub(crate) fn apply_record(mem: &Memtable, rec: TxnRecord) {
    let mut ranges = Vec::new();
    let packed = rec
        .ops
        .iter()
        .map(|op| match op {
            WalOp::Put { key, value, .. } => packed_len(key) + packed_len(value),
            WalOp::Delete { key } => packed_len(key),
            WalOp::DeleteRange { .. } => 0,
        })
        .sum();
    mem.insert_many(
        (rec.begin_seq + 1..)
            .zip(rec.ops)
            .filter_map(|(seq, op)| match op {
                WalOp::Put { key, value, expiry } => Some(Entry {
                    key,
                    seq,
                    kind: EntryKind::Put,
                    value,
                    expiry,
                }),
                WalOp::Delete { key } => Some(Entry {
                    key,
                    seq,
                    kind: EntryKind::Delete,
                    value: Bytes::new(),
                    expiry: None,
                }),
                WalOp::DeleteRange { start, end } => {
                    ranges.push(RangeTombstone { start, end, seq });
                    None
                }
            }),
        packed,
    );
    for t in ranges {
        mem.insert_range(t);
    }
}

/// A transaction record's versions (puts and point deletes), each with its sequence.
pub(crate) fn record_versions(rec: &TxnRecord) -> impl Iterator<Item = Entry> + '_ {
    (rec.begin_seq + 1..)
        .zip(&rec.ops)
        .filter_map(|(seq, op)| version(seq, op))
}

/// A transaction record's range tombstones, each with its sequence.
pub(crate) fn record_range_tombstones(rec: &TxnRecord) -> impl Iterator<Item = RangeTombstone> + '_ {
    (rec.begin_seq + 1..)
        .zip(&rec.ops)
        .filter_map(|(seq, op)| range_tombstone(seq, op))
}

/// The version a put or point delete at `seq` writes (`None` for a range delete).
fn version(seq: Seq, op: &WalOp) -> Option<Entry> {
    match op {
        WalOp::Put { key, value, expiry } => Some(Entry {
            key: key.clone(),
            seq,
            kind: EntryKind::Put,
            value: value.clone(),
            expiry: *expiry,
        }),
        WalOp::Delete { key } => Some(Entry {
            key: key.clone(),
            seq,
            kind: EntryKind::Delete,
            value: Bytes::new(),
            expiry: None,
        }),
        WalOp::DeleteRange { .. } => None,
    }
}

/// The tombstone a range delete at `seq` writes.
fn range_tombstone(seq: Seq, op: &WalOp) -> Option<RangeTombstone> {
    match op {
        WalOp::DeleteRange { start, end } => Some(RangeTombstone {
            start: start.clone(),
            end: end.clone(),
            seq,
        }),
        _ => None,
    }
}

/// Column family name rules: non-empty UTF-8, at most 255 bytes, no NUL, not `default`.
pub(crate) fn validate_cf_name(name: &str) -> MidgeResult<()> {
    if name.is_empty() || name.len() > 255 || name.contains('\0') {
        return Err(MidgeError::InvalidArgument(
            "column family names are 1..=255 bytes of UTF-8 without NUL".into(),
        ));
    }
    if name == "default" {
        return Err(MidgeError::InvalidArgument(
            "the default column family always exists".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A committed record lands in the memtable with one sequence per op, in op order.
    #[test]
    fn apply_record_inserts_every_op_with_its_sequence() {
        let b = |s: &str| Bytes::from(s.to_string());
        let mem = Memtable::new(1 << 20);
        let rec = TxnRecord {
            cf: 0,
            begin_seq: 10,
            ops: vec![
                WalOp::Put {
                    key: b("a"),
                    value: b("1"),
                    expiry: Some(99),
                },
                WalOp::DeleteRange {
                    start: b("m"),
                    end: b("p"),
                },
                WalOp::Delete { key: b("b") },
                WalOp::Put {
                    key: b("a"),
                    value: b("2"),
                    expiry: None,
                },
            ],
        };
        apply_record(&mem, rec);
        let a = mem.get(b"a", Seq::MAX).unwrap();
        assert_eq!(
            (a.seq, a.kind, a.value, a.expiry),
            (14, EntryKind::Put, b("2"), None)
        );
        let a = mem.get(b"a", 13).unwrap();
        assert_eq!(
            (a.seq, a.kind, a.value, a.expiry),
            (11, EntryKind::Put, b("1"), Some(99))
        );
        let d = mem.get(b"b", Seq::MAX).unwrap();
        assert_eq!((d.seq, d.kind), (13, EntryKind::Delete));
        assert_eq!(
            mem.range_tombstones(),
            vec![RangeTombstone {
                start: b("m"),
                end: b("p"),
                seq: 12
            }]
        );
        assert_eq!((mem.min_seq(), mem.max_seq()), (Some(11), 14));
    }
}
