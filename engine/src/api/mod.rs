//! The public facades: [`Engine`], [`Transaction`], [`Query`], [`ScanIterator`], [`ColumnFamilyHandle`].
//!
//! Thin wrappers over `core/`: argument validation and the transaction's read-your-own-writes merge live here;
//! durability, recovery and storage do not.

mod scan;

use crate::core::{CommitRequest, CommitTicket, Core, SyncPlan, ViewCache};
use crate::error::{MidgeError, MidgeResult};
use crate::metrics::{
    ReadAmpMetricsSnapshot, RecoveryMetricsSnapshot, RuntimeMetricsSnapshot, SnapshotPinSnapshot,
    StorageFileLayout, StorageLayoutLevel, StorageLayoutSnapshot, StorageVerificationReport,
};
use crate::options::{IntoOpenOptions, WriteOptions};
use crate::txn::{ConflictPolicy, Own, TransactionMode, WriteSet, check_key, check_value};
use crate::types::{ColumnFamilyId, Seq};
use bytes::Bytes;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

pub use scan::{Direction, IteratorState, OwnedScanIterator, Query, ScanIterator};

/// A handle naming a column family.
///
/// ```
/// use cntryl_midge::prelude::*;
/// let engine = Engine::open(OpenOptions::in_memory().build())?;
/// let cf = engine.create_column_family("users")?;
/// assert_eq!(cf.name(), "users");
/// assert_eq!(engine.get_column_family("users").unwrap().id(), cf.id());
/// # Ok::<(), MidgeError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ColumnFamilyHandle {
    id: ColumnFamilyId,
    name: String,
}

impl ColumnFamilyHandle {
    /// The column family's id (stable across restarts, never reused).
    pub fn id(&self) -> ColumnFamilyId {
        self.id
    }
    /// The column family's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// One write of an [`Engine::write`] batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOp {
    /// Write `key` = `value`.
    Put {
        /// The key (1 byte to [`crate::MAX_KEY_SIZE`]).
        key: Vec<u8>,
        /// The value (up to [`crate::MAX_VALUE_SIZE`]).
        value: Vec<u8>,
        /// Seconds from now until the row expires (`None` = never).
        ttl_secs: Option<u64>,
    },
    /// Delete `key`.
    Delete {
        /// The key.
        key: Vec<u8>,
    },
    /// Delete every key in `[start, end)` (`start > end` is `InvalidArgument`; equal is a no-op).
    DeleteRange {
        /// First key deleted.
        start: Vec<u8>,
        /// First key kept.
        end: Vec<u8>,
    },
}

/// An open Midge database. `Send + Sync`; share it with `Arc` across threads.
///
/// ```
/// use cntryl_midge::prelude::*;
/// let engine = Engine::open(OpenOptions::in_memory().build())?;
/// let cf = engine.get_column_family("default").unwrap();
/// let mut tx = engine.begin_tx(cf.id(), TransactionMode::ReadWrite)?;
/// tx.put(b"k".to_vec(), b"v".to_vec(), None)?;
/// tx.commit(WriteOptions::sync())?;
/// let tx = engine.begin_tx(cf.id(), TransactionMode::ReadOnly)?;
/// assert_eq!(tx.get(b"k")?.as_deref(), Some(&b"v"[..]));
/// # Ok::<(), MidgeError>(())
/// ```
#[derive(Debug)]
pub struct Engine {
    core: Arc<Core>,
}

impl Engine {
    /// Opens (creating if needed) and recovers a database. Accepts [`crate::OpenOptions`] or the
    /// `MidgeResult` returned by `build()`.
    pub fn open(opts: impl IntoOpenOptions) -> MidgeResult<Engine> {
        let opts = opts.into_open_options()?;
        let core = crate::core::open(opts)?;
        crate::core::start_background(&core);
        Ok(Engine { core })
    }

    fn handle(cf: &crate::core::CfState) -> ColumnFamilyHandle {
        ColumnFamilyHandle {
            id: cf.id,
            name: cf.name.clone(),
        }
    }

    /// The column family named `name` (`None` if absent or after shutdown).
    pub fn get_column_family(&self, name: &str) -> Option<ColumnFamilyHandle> {
        self.core.check_open().ok()?;
        self.core.cf_by_name(name).map(|c| Self::handle(&c))
    }

    /// Creates a column family (durable when this returns).
    pub fn create_column_family(&self, name: &str) -> MidgeResult<ColumnFamilyHandle> {
        let cf = self.core.create_cf(name)?;
        Ok(Self::handle(&cf))
    }

    /// Drops a column family. Refuses with [`MidgeError::UnflushedDataPresent`] while committed data is still
    /// only in its memtable (flush first, or use [`Engine::drop_column_family_discarding_unflushed`]).
    pub fn drop_column_family(&self, id: ColumnFamilyId) -> MidgeResult<()> {
        self.core.drop_cf(id, false)
    }

    /// Drops a column family, discarding data not yet flushed.
    pub fn drop_column_family_discarding_unflushed(&self, id: ColumnFamilyId) -> MidgeResult<()> {
        self.core.drop_cf(id, true)
    }

    /// All column families, by id.
    pub fn list_column_families(&self) -> MidgeResult<Vec<ColumnFamilyHandle>> {
        self.core.check_open()?;
        Ok(self.core.list_cfs().iter().map(|c| Self::handle(c)).collect())
    }

    /// Begins a transaction on one column family, reading at the latest committed snapshot.
    pub fn begin_tx(&self, cf: ColumnFamilyId, mode: TransactionMode) -> MidgeResult<Transaction> {
        Transaction::begin(self.core.clone(), cf, mode)
    }

    /// Writes `ops` to column family `cf` atomically, as one read-write transaction begun, filled and committed
    /// at once (last-writer-wins; no reads, no assertions) — a write batch, as RocksDB's `DB::Write`. One call
    /// where a transaction takes three, which matters where calls are dear: across the component boundary each
    /// is an entry into the instance. An invalid op (an empty or oversized key, a range whose start is after
    /// its end) fails the whole batch with `InvalidArgument` and writes nothing.
    ///
    /// ```
    /// use cntryl_midge::{BatchOp, prelude::*};
    /// let engine = Engine::open(OpenOptions::in_memory().build())?;
    /// let cf = engine.get_column_family("default").unwrap().id();
    /// engine.write(
    ///     cf,
    ///     vec![
    ///         BatchOp::Put { key: b"a".to_vec(), value: b"1".to_vec(), ttl_secs: None },
    ///         BatchOp::Put { key: b"b".to_vec(), value: b"2".to_vec(), ttl_secs: None },
    ///         BatchOp::Delete { key: b"a".to_vec() },
    ///     ],
    ///     WriteOptions::sync(),
    /// )?;
    /// let tx = engine.begin_tx(cf, TransactionMode::ReadOnly)?;
    /// assert_eq!((tx.get(b"a")?, tx.get(b"b")?.as_deref()), (None, Some(&b"2"[..])));
    /// # Ok::<(), MidgeError>(())
    /// ```
    pub fn write(&self, cf: ColumnFamilyId, ops: Vec<BatchOp>, opts: WriteOptions) -> MidgeResult<()> {
        self.batch(cf, ops)?.commit(opts)
    }

    /// [`Engine::write`] with [`Transaction::commit_deferred`]'s two halves: a `sync` batch comes back as a
    /// ticket for [`Engine::finish_commit`]; `None` when the write completed.
    pub fn write_deferred(
        &self,
        cf: ColumnFamilyId,
        ops: Vec<BatchOp>,
        opts: WriteOptions,
    ) -> MidgeResult<Option<CommitTicket>> {
        self.batch(cf, ops)?.commit_deferred(opts)
    }

    /// A read-write transaction holding `ops`.
    fn batch(&self, cf: ColumnFamilyId, ops: Vec<BatchOp>) -> MidgeResult<Transaction> {
        let mut tx = self.begin_tx(cf, TransactionMode::ReadWrite)?;
        for op in ops {
            match op {
                BatchOp::Put { key, value, ttl_secs } => tx.put(key, value, ttl_secs)?,
                BatchOp::Delete { key } => tx.delete(key)?,
                BatchOp::DeleteRange { start, end } => tx.delete_range(start, end)?,
            }
        }
        Ok(tx)
    }

    /// Freezes the column family's memtable and writes it to an L0 SST, durably, before returning.
    pub fn flush_cf(&self, cf: &ColumnFamilyHandle) -> MidgeResult<()> {
        self.core.flush_cf(cf.id)
    }

    /// Compacts until no level is over its threshold (L0 is merged down whenever it holds any file).
    pub fn compact_all(&self) -> MidgeResult<()> {
        self.core.compact_all()
    }

    /// Runs the background work that is due now on the caller's thread and returns whether it did any:
    /// flushes of frozen memtables, compactions past their trigger, and the fold of L0 into L1 that reads paid
    /// for by consulting overlapping L0 tables (a read-mostly phase after a load). With background threads
    /// (native) this work also runs by itself, so calling this only brings it forward. With an inline executor
    /// (wasm32, [`crate::runtime::InlineExecutor`]) reads never compact — the compaction would run inside a
    /// read — so the fold they paid for waits for this call or the column family's next flush: call it when
    /// the application is idle. A failure poisons the engine, as a failed background job does.
    ///
    /// ```
    /// use cntryl_midge::prelude::*;
    /// use cntryl_midge::runtime::InlineExecutor;
    /// use std::sync::Arc;
    /// // No background threads, as on wasm32.
    /// let engine = Engine::open(OpenOptions::in_memory().executor(Arc::new(InlineExecutor)).build())?;
    /// let cf = engine.get_column_family("default").unwrap();
    /// let mut tx = engine.begin_tx(cf.id(), TransactionMode::ReadWrite)?;
    /// tx.put(b"k".to_vec(), b"v".to_vec(), None)?;
    /// tx.commit(WriteOptions::sync())?;
    /// // … reads and writes; then, while the application is idle:
    /// engine.run_pending_work()?;
    /// assert!(!engine.run_pending_work()?, "nothing is left to do");
    /// # Ok::<(), MidgeError>(())
    /// ```
    pub fn run_pending_work(&self) -> MidgeResult<bool> {
        self.core.run_pending_work()
    }

    /// Waits until writes to `cf` are no longer stalled; `Ok(false)` if `timeout` passed first.
    pub fn wait_for_write_stall_clear(
        &self,
        cf: &ColumnFamilyHandle,
        timeout: Duration,
    ) -> MidgeResult<bool> {
        let deadline = self
            .core
            .clock
            .monotonic_nanos()
            .saturating_add(timeout.as_nanos() as u64);
        loop {
            self.core.check_writable()?;
            if !self.core.write_stalled() {
                return Ok(true);
            }
            if self.core.executor.is_inline()
                && let Some(state) = self.core.cf(cf.id)
            {
                self.core.background_work(&state)?;
                if self.core.write_stalled() {
                    return Ok(false);
                }
                continue;
            }
            if self.core.clock.monotonic_nanos() >= deadline {
                return Ok(false);
            }
            self.core.executor.sleep(Duration::from_millis(2));
        }
    }

    /// Makes every buffered commit durable now (one fsync).
    pub fn sync_wal(&self) -> MidgeResult<()> {
        self.core.check_writable()?;
        self.core
            .wal
            .sync_all()
            .inspect_err(|e| self.core.poison(&e.to_string()))?;
        // Deferred sync commits that fsync covered become visible now.
        self.core.publish_synced();
        Ok(())
    }

    /// The second half of [`Transaction::commit_deferred`]: returns once an fsync covers the commit — one
    /// fsync round shared with every commit logged meanwhile (group commit) — and the commit is visible.
    /// Returns the log position that fsync covered: every ticket whose [`CommitTicket::log_position`] is at
    /// or below it is durable and visible too, so a host coordinating several callers need not finish those
    /// (except a ticket with [`CommitTicket::rotated_memtable`], whose finish schedules the flush).
    ///
    /// A ticket that names no logged commit (forged, or from another engine) is `InvalidArgument` and changes
    /// nothing. After a failed fsync the engine is poisoned and every finish fails.
    ///
    /// ```
    /// use cntryl_midge::prelude::*;
    /// let engine = Engine::open(OpenOptions::in_memory().build())?;
    /// let cf = engine.get_column_family("default").unwrap();
    /// let mut tx = engine.begin_tx(cf.id(), TransactionMode::ReadWrite)?;
    /// tx.put(b"k".to_vec(), b"v".to_vec(), None)?;
    /// let ticket = tx.commit_deferred(WriteOptions::sync())?.expect("a sync commit with writes");
    /// let covered = engine.finish_commit(ticket)?;
    /// assert!(covered >= ticket.log_position);
    /// let tx = engine.begin_tx(cf.id(), TransactionMode::ReadOnly)?;
    /// assert_eq!(tx.get(b"k")?.as_deref(), Some(&b"v"[..]));
    /// # Ok::<(), MidgeError>(())
    /// ```
    pub fn finish_commit(&self, ticket: CommitTicket) -> MidgeResult<u64> {
        self.core.finish_commit(ticket)
    }

    /// Begins a log fsync that the caller runs itself, outside the engine: a split [`Engine::finish_commit`]
    /// for a host that must not hold the engine through the fsync (a component instance runs one call at a
    /// time, so an fsync inside it holds out every other caller). Writes the log's buffered frames and returns
    /// the file to `sync_data` and the log position that fsync covers, or `None` when `log_position` is
    /// durable already. Nothing becomes durable or visible until [`Engine::end_sync`] accepts the fsync's
    /// outcome; a plan never ended changes nothing (a later sync covers its commits).
    ///
    /// Plans may overlap (two fsyncs of one file in flight): each covers what was written before it began,
    /// and each end publishes what it covers. `InvalidArgument` for a position past the end of the log.
    ///
    /// ```
    /// use cntryl_midge::prelude::*;
    /// let engine = Engine::open(OpenOptions::in_memory().build())?;
    /// let cf = engine.get_column_family("default").unwrap();
    /// let mut tx = engine.begin_tx(cf.id(), TransactionMode::ReadWrite)?;
    /// tx.put(b"k".to_vec(), b"v".to_vec(), None)?;
    /// let ticket = tx.commit_deferred(WriteOptions::sync())?.expect("a sync commit with writes");
    /// let plan = engine.begin_sync(ticket.log_position)?.expect("not durable yet");
    /// let fsync = plan.file().sync_data(); // on any thread, holding nothing of the engine
    /// assert!(engine.end_sync(plan, fsync)? >= ticket.log_position);
    /// engine.finish_commit(ticket)?; // covered: no second fsync; waits until visible
    /// let tx = engine.begin_tx(cf.id(), TransactionMode::ReadOnly)?;
    /// assert_eq!(tx.get(b"k")?.as_deref(), Some(&b"v"[..]));
    /// # Ok::<(), MidgeError>(())
    /// ```
    pub fn begin_sync(&self, log_position: u64) -> MidgeResult<Option<SyncPlan>> {
        self.core.begin_sync(log_position)
    }

    /// Ends a plan from [`Engine::begin_sync`] with the outcome of its fsync. On success the plan's log
    /// position is durable and every sync commit it covers is published; returns the log position published
    /// up to. A failed fsync poisons the engine (`Poisoned`), exactly as a failed fsync inside it does: no
    /// commit it might have covered is ever acknowledged.
    pub fn end_sync(&self, plan: SyncPlan, fsync: std::io::Result<()>) -> MidgeResult<u64> {
        self.core.end_sync(plan, fsync)
    }

    /// Shuts down: refuses new work, makes buffered commits durable and releases the directory lock.
    /// `Busy` (retryable) while transactions are alive.
    pub fn shutdown(&mut self, timeout: Duration) -> MidgeResult<()> {
        if timeout.is_zero() && self.core.live_txns.load(Ordering::Acquire) > 0 {
            return Err(MidgeError::Timeout(
                "shutdown deadline passed with live transactions".into(),
            ));
        }
        self.core.shutdown()
    }

    /// What the engine is doing now.
    pub fn get_runtime_metrics(&self) -> MidgeResult<RuntimeMetricsSnapshot> {
        Ok(self.core.runtime_metrics())
    }

    /// Like [`Engine::get_runtime_metrics`]; the timeout bounds the caller's wait.
    pub fn get_runtime_metrics_with_timeout(
        &self,
        _timeout: Duration,
    ) -> MidgeResult<RuntimeMetricsSnapshot> {
        self.get_runtime_metrics()
    }

    /// What recovery did when this engine was opened.
    pub fn get_recovery_metrics(&self) -> MidgeResult<RecoveryMetricsSnapshot> {
        Ok(self.core.recovery.clone())
    }

    /// Read amplification of point reads so far.
    pub fn get_read_amp_metrics(&self) -> MidgeResult<ReadAmpMetricsSnapshot> {
        let c = &self.core.counters;
        let reads = c.reads.load(Ordering::Relaxed);
        let ssts = c.reads_ssts.load(Ordering::Relaxed);
        let l0 = c.reads_l0.load(Ordering::Relaxed);
        let blocks = self.core.sst_stats.blocks_read.load(Ordering::Relaxed);
        let avg = |n: u64| if reads == 0 { 0.0 } else { n as f64 / reads as f64 };
        Ok(ReadAmpMetricsSnapshot {
            reads_total: reads,
            ssts_touched_total: ssts,
            l0_ssts_touched_total: l0,
            blocks_read_total: blocks,
            avg_ssts_per_read: avg(ssts),
            avg_l0_ssts_per_read: avg(l0),
            avg_blocks_per_read: avg(blocks),
        })
    }

    /// Levels, files, live snapshots.
    pub fn get_storage_layout(&self) -> MidgeResult<StorageLayoutSnapshot> {
        let now = self.core.clock.now_millis();
        let m = crate::core::lock(&self.core.manifest);
        let s = m.state();
        Ok(StorageLayoutSnapshot {
            health: self.core.health(),
            manifest_last_persisted_sequence: s.last_seq,
            manifest_next_wal_seq: s.next_file_id,
            levels: {
                let mut levels: Vec<StorageLayoutLevel> = Vec::new();
                let mut files: Vec<_> = s.files.values().collect();
                files.sort_by_key(|f| (f.level, f.cf, f.smallest_key.clone()));
                for f in files {
                    if levels.last().is_none_or(|l| l.level != f.level) {
                        levels.push(StorageLayoutLevel {
                            level: f.level,
                            ..Default::default()
                        });
                    }
                    if let Some(l) = levels.last_mut() {
                        l.file_count += 1;
                        l.total_bytes += f.size;
                        l.files.push(StorageFileLayout {
                            name: crate::core::lsm::sst_path(f.id),
                            level: f.level,
                            cf_id: f.cf,
                            size_bytes: f.size,
                            smallest_key: f.smallest_key.to_vec(),
                            largest_key: f.largest_key.to_vec(),
                            smallest_seq: f.smallest_seq,
                            largest_seq: f.largest_seq,
                        });
                    }
                }
                levels
            },
            active_snapshots: self
                .core
                .snapshots
                .list()
                .into_iter()
                .map(|(seq, n, t)| SnapshotPinSnapshot {
                    snapshot_id: seq,
                    sequence: seq,
                    age_seconds: now.saturating_sub(t) / 1000,
                    ref_count: n as u64,
                })
                .collect(),
            compacting_ssts: Vec::new(),
            obsolete_files: Vec::new(),
        })
    }

    /// Online verification of everything on disk (never repairs).
    pub fn verify_storage(&self, timeout: Duration) -> MidgeResult<StorageVerificationReport> {
        if timeout.is_zero() {
            return Err(MidgeError::Timeout("zero verification deadline".into()));
        }
        if self.core.in_memory {
            return Err(MidgeError::NotSupported(
                "verify_storage on an in-memory engine".into(),
            ));
        }
        crate::verify::verify_fs(&self.core.fs, self.core.health())
    }

    /// Offline verification of a database directory (no engine, never repairs).
    pub fn verify_path(path: impl Into<std::path::PathBuf>) -> MidgeResult<StorageVerificationReport> {
        let fs: crate::storage::SharedFs = Arc::new(crate::storage::local::LocalFs::new(path.into()));
        crate::verify::verify_fs(&fs, crate::metrics::EngineHealth::Healthy)
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.core.close();
    }
}

/// A transaction on one column family: snapshot reads at `begin_tx`, buffered writes applied atomically at
/// [`Transaction::commit`]. Dropping it without committing rolls it back.
#[derive(Debug)]
pub struct Transaction {
    core: Arc<Core>,
    cf: ColumnFamilyId,
    mode: TransactionMode,
    snapshot: Seq,
    read_time: u64,
    policy: ConflictPolicy,
    writes: WriteSet,
    asserts: Vec<(Bytes, Option<Bytes>)>,
    views: ViewCache,
}

impl Transaction {
    fn begin(core: Arc<Core>, cf: ColumnFamilyId, mode: TransactionMode) -> MidgeResult<Transaction> {
        core.check_open()?;
        core.check_fenced()?;
        if !core.has_cf(cf) {
            return Err(MidgeError::InvalidArgument(format!("unknown column family {cf}")));
        }
        let snapshot = core.visible_seq();
        let read_time = core.clock.now_millis();
        core.snapshots.pin(snapshot, read_time);
        core.live_txns.fetch_add(1, Ordering::AcqRel);
        Ok(Transaction {
            core,
            cf,
            mode,
            snapshot,
            read_time,
            policy: ConflictPolicy::default(),
            writes: WriteSet::default(),
            asserts: Vec::new(),
            views: ViewCache::default(),
        })
    }

    fn writable(&self) -> MidgeResult<()> {
        if self.mode == TransactionMode::ReadOnly {
            return Err(MidgeError::InvalidArgument(
                "write on a read-only transaction".into(),
            ));
        }
        Ok(())
    }

    fn expiry(&self, ttl_secs: Option<u64>) -> MidgeResult<Option<u64>> {
        match ttl_secs {
            None => Ok(None),
            Some(0) => Err(MidgeError::InvalidArgument(
                "ttl must be at least 1 second (None = no expiry)".into(),
            )),
            Some(s) => Ok(Some(
                self.core
                    .clock
                    .now_millis()
                    .saturating_add(s.saturating_mul(1000)),
            )),
        }
    }

    /// The column family this transaction is bound to.
    pub fn cf_id(&self) -> ColumnFamilyId {
        self.cf
    }

    /// The mode.
    pub fn mode(&self) -> TransactionMode {
        self.mode
    }

    /// The snapshot sequence reads see.
    pub fn snapshot_sequence(&self) -> u64 {
        self.snapshot
    }

    /// Buffers a write of `key` = `value`, expiring `ttl_secs` seconds from now (`None` = never).
    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>, ttl_secs: Option<u64>) -> MidgeResult<()> {
        self.writable()?;
        check_key(&key)?;
        check_value(&value)?;
        let expiry = self.expiry(ttl_secs)?;
        self.writes.put(Bytes::from(key), Bytes::from(value), expiry);
        Ok(())
    }

    /// Like [`Transaction::put`], but the commit fails with `InvalidArgument` if the key already exists.
    pub fn insert(&mut self, key: Vec<u8>, value: Vec<u8>, ttl_secs: Option<u64>) -> MidgeResult<()> {
        self.writable()?;
        check_key(&key)?;
        check_value(&value)?;
        let expiry = self.expiry(ttl_secs)?;
        let key = Bytes::from(key);
        match self.writes.own(&key) {
            Own::Value(Some(_)) => {
                return Err(MidgeError::InvalidArgument(
                    "insert: key already written by this transaction".into(),
                ));
            }
            Own::Value(None) => {}
            Own::Untouched => self.writes.inserts.push(key.clone()),
        }
        self.writes.put(key, Bytes::from(value), expiry);
        Ok(())
    }

    /// Buffers a delete of `key`.
    pub fn delete(&mut self, key: Vec<u8>) -> MidgeResult<()> {
        self.writable()?;
        check_key(&key)?;
        self.writes.delete(Bytes::from(key));
        Ok(())
    }

    /// Buffers a delete of every key in `[start, end)`. `start > end` is `InvalidArgument`; equal is a no-op.
    pub fn delete_range(&mut self, start: Vec<u8>, end: Vec<u8>) -> MidgeResult<()> {
        self.writable()?;
        check_key(&start)?;
        check_key(&end)?;
        if start > end {
            return Err(MidgeError::InvalidArgument(
                "delete_range start is after end".into(),
            ));
        }
        if start < end {
            self.writes.delete_range(Bytes::from(start), Bytes::from(end));
        }
        Ok(())
    }

    /// Guards the commit: it fails with `WriteConflict` unless `key` had value `expected` (`None` = absent) in
    /// this transaction's snapshot and nobody has modified it since.
    #[must_use = "assert_value returns an error when the guard cannot be installed"]
    pub fn assert_value(&mut self, key: Vec<u8>, expected: Option<Vec<u8>>) -> MidgeResult<()> {
        self.writable()?;
        check_key(&key)?;
        self.asserts.push((Bytes::from(key), expected.map(Bytes::from)));
        Ok(())
    }

    /// Reads `key`: this transaction's own latest write if any, else the snapshot. Missing keys are `Ok(None)`.
    pub fn get(&self, key: &[u8]) -> MidgeResult<Option<Bytes>> {
        self.core.check_open()?;
        self.core.check_fenced()?;
        if let Own::Value(v) = self.writes.own(key) {
            return Ok(v);
        }
        self.core
            .get_cached(self.cf, &self.views, key, self.snapshot, self.read_time)
    }

    /// Scans rows matching `query`, merging this transaction's own writes with its snapshot.
    pub fn scan(&self, query: &Query) -> MidgeResult<ScanIterator<'_>> {
        Ok(ScanIterator::new(self.scan_owned(query)?))
    }

    /// Like [`Transaction::scan`], but the iterator does not borrow the transaction (it sees the writes made
    /// before this call). Used by the WIT component's `scan-iterator` resource.
    pub fn scan_owned(&self, query: &Query) -> MidgeResult<OwnedScanIterator> {
        self.core.check_open()?;
        OwnedScanIterator::build(
            &self.core,
            self.cf,
            &self.views,
            self.snapshot,
            self.read_time,
            &self.writes,
            query,
        )
    }

    /// The conflict policy (default [`ConflictPolicy::LastWriteWins`]).
    pub fn conflict_policy(&self) -> ConflictPolicy {
        self.policy
    }

    /// Sets the conflict policy.
    pub fn set_conflict_policy(&mut self, policy: ConflictPolicy) {
        self.policy = policy;
    }

    /// Commits atomically with the chosen durability. A read-only transaction commits as a no-op.
    pub fn commit(self, opts: WriteOptions) -> MidgeResult<()> {
        self.commit_with(opts, false).map(|_| ())
    }

    /// The first half of a sync commit, for hosts that serialise calls into the engine (a component instance
    /// behind a lock): the commit is checked, sequenced, logged and applied, and returns at once, neither
    /// durable nor visible; [`Engine::finish_commit`] then waits for an fsync that covers it. Between the two
    /// halves the caller can let other committers in, so one fsync covers all of them — the group commit that
    /// [`Transaction::commit`] gets from concurrent threads.
    ///
    /// Returns `None` when the commit already completed: any policy but [`WriteOptions::sync`], a read-only
    /// transaction, or nothing to write. Not acknowledged until finished: a ticket dropped unfinished leaves a
    /// commit that becomes durable and visible with the next fsync that covers it (the next sync commit, a
    /// buffered commit behind it, a flush or [`Engine::sync_wal`]); a crash before then may lose it.
    ///
    /// ```
    /// use cntryl_midge::prelude::*;
    /// let engine = Engine::open(OpenOptions::in_memory().build())?;
    /// let cf = engine.get_column_family("default").unwrap();
    /// let mut tx = engine.begin_tx(cf.id(), TransactionMode::ReadWrite)?;
    /// tx.put(b"k".to_vec(), b"v".to_vec(), None)?;
    /// let ticket = tx.commit_deferred(WriteOptions::sync())?.unwrap();
    /// // Not visible yet: a reader's snapshot does not include it.
    /// let reader = engine.begin_tx(cf.id(), TransactionMode::ReadOnly)?;
    /// assert_eq!(reader.get(b"k")?, None);
    /// engine.finish_commit(ticket)?;
    /// # Ok::<(), MidgeError>(())
    /// ```
    pub fn commit_deferred(self, opts: WriteOptions) -> MidgeResult<Option<CommitTicket>> {
        self.commit_with(opts, true)
    }

    /// [`Transaction::commit`], or with `defer` [`Transaction::commit_deferred`].
    fn commit_with(mut self, opts: WriteOptions, defer: bool) -> MidgeResult<Option<CommitTicket>> {
        if self.mode == TransactionMode::ReadOnly {
            self.core.check_open()?;
            return Ok(None);
        }
        let (core, req) = self.request();
        let done = core.commit(req, opts, defer)?;
        if let Some(cf) = done.flush {
            // Released first: the flush then never sees this transaction's snapshot pinned.
            let core = self.core.clone();
            drop(self);
            core.schedule(cf);
        }
        Ok(done.ticket)
    }

    /// What a commit hands the engine (the buffered writes move out), and the engine.
    fn request(&mut self) -> (&Core, CommitRequest<'_>) {
        let req = CommitRequest {
            cf: self.cf,
            snapshot: self.snapshot,
            read_time: self.read_time,
            abort_on_conflict: self.policy == ConflictPolicy::AbortOnWriteConflict,
            writes: std::mem::take(&mut self.writes),
            asserts: &self.asserts,
        };
        (&self.core, req)
    }

    /// Discards every buffered write.
    pub fn rollback(self) -> MidgeResult<()> {
        Ok(())
    }
}

impl Drop for Transaction {
    fn drop(&mut self) {
        self.core.snapshots.unpin(self.snapshot);
        self.core.live_txns.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use crate::prelude::*;
    use crate::runtime::InlineExecutor;
    use std::sync::Arc;

    /// A compaction's inputs leave the block cache with their files: a cache larger than the data never evicts,
    /// so blocks the flushes filled in would otherwise stay resident for good.
    #[test]
    fn compaction_evicts_the_blocks_of_the_tables_it_deletes() {
        let engine = Engine::open(
            OpenOptions::in_memory()
                .executor(Arc::new(InlineExecutor))
                .build(),
        )
        .unwrap();
        let cf = engine.get_column_family("default").unwrap();
        for round in 0..3u32 {
            let mut tx = engine.begin_tx(cf.id(), TransactionMode::ReadWrite).unwrap();
            for i in 0..2000u32 {
                let v = format!("value-{round}-{i:0>100}");
                tx.put(format!("key{i:06}").into_bytes(), v.into_bytes(), None)
                    .unwrap();
            }
            tx.commit(WriteOptions::buffered()).unwrap();
            engine.flush_cf(&cf).unwrap();
        }
        let cache = &engine.core.block_cache;
        let flushed = cache.files();
        assert_eq!(flushed.len(), 3, "each flush filled the cache with its table");
        engine.compact_all().unwrap();
        let compacted = cache.files();
        assert!(!compacted.is_empty(), "the compaction filled in its output");
        assert!(
            flushed.is_disjoint(&compacted),
            "blocks of deleted tables stayed cached: {flushed:?} then {compacted:?}"
        );
    }
}
