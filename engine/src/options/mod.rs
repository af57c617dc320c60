//! Open-time configuration ([`OpenOptions`] and its builder) and per-commit [`WriteOptions`].
//!
//! Pure data: everything is derived once in [`OpenOptionsBuilder::build`]; nothing here performs I/O or knows
//! about engine state.

use crate::error::{MidgeError, MidgeResult};
use crate::runtime::{Clock, Executor, SystemClock};
use crate::storage::SharedFs;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// [`Goal::Economy`]'s block cache never exceeds this, whatever the budget.
const ECONOMY_CACHE_CAP: u64 = 256 << 20;

/// Where the database lives.
#[derive(Clone)]
#[non_exhaustive]
pub enum Storage {
    /// Nothing survives the process.
    InMemory,
    /// A directory on local disk.
    Local {
        /// The database directory.
        path: PathBuf,
    },
    /// A caller-supplied [`crate::storage::FileSystem`] (a WASI host import, the crash simulator…).
    Custom {
        /// The backend.
        fs: SharedFs,
    },
    /// Cloud-backed: the object store is the source of truth; `local` is a working cache.
    Cloud {
        /// The local cache directory (or file system).
        local: CloudCache,
        /// The object store.
        store: crate::storage::object::SharedObjectStore,
        /// Key prefix for every object of this database.
        prefix: String,
    },
}

/// Where a cloud-backed database keeps its local working cache.
#[derive(Clone)]
pub enum CloudCache {
    /// A local directory.
    Path(PathBuf),
    /// Any file system (a WASI host import, the crash simulator…).
    Fs(SharedFs),
}

impl fmt::Debug for CloudCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloudCache::Path(p) => p.fmt(f),
            CloudCache::Fs(fs) => f.write_str(&fs.describe()),
        }
    }
}

impl fmt::Debug for Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Storage::InMemory => f.write_str("InMemory"),
            Storage::Local { path } => f.debug_struct("Local").field("path", path).finish(),
            Storage::Custom { fs } => f.debug_struct("Custom").field("fs", &fs.describe()).finish(),
            Storage::Cloud { local, prefix, .. } => f
                .debug_struct("Cloud")
                .field("local", local)
                .field("prefix", prefix)
                .finish_non_exhaustive(),
        }
    }
}

/// What the engine optimises its derived sizes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Goal {
    /// Small blocks and memtables; lowest read latency (default).
    #[default]
    Latency,
    /// Large blocks and memtables; highest ingest rate.
    Throughput,
    /// Moderate sizes; least memory and space.
    Economy,
}

/// The memory the engine may use in total.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MemoryBudget {
    /// Half the host's memory — the smaller of its RAM and this process's cgroup limit — and at least 64 MiB
    /// once that is 128 MiB or more; 512 MiB where the host does not say (wasm32, non-Linux systems).
    #[default]
    Auto,
    /// An explicit byte budget.
    Bytes(usize),
}

/// The dominant access pattern, used to tune derived sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WorkloadProfile {
    /// No dominant pattern (default).
    #[default]
    Mixed,
    /// Mostly writes.
    WriteHeavy,
    /// Mostly point reads.
    ReadMostly,
    /// Mostly range scans.
    RangeScan,
    /// Many values with TTLs.
    TtlHeavy,
}

/// What recovery does with a WAL it cannot fully trust.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecoveryPolicy {
    /// Fail open on any corruption other than a torn tail (default; the only production policy).
    #[default]
    Strict,
    /// Keep the verified prefix, quarantine the rest, and report `EngineHealth::SalvageMode`.
    Salvage,
}

/// Block cache eviction policy (all map to the same LRU in this version).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BlockCachePolicy {
    /// Least recently used (default).
    #[default]
    Lru,
    /// Accepted for compatibility; behaves as LRU.
    TinyLfu,
    /// Accepted for compatibility; behaves as LRU.
    ClockPro,
}

/// Immutable, validated open-time configuration. Make one with [`OpenOptions::local`] or
/// [`OpenOptions::in_memory`] and [`OpenOptionsBuilder::build`].
///
/// ```
/// use cntryl_midge::prelude::*;
/// let opts = OpenOptions::in_memory().with_memtable_size_limit(8 << 20).build()?;
/// assert_eq!(opts.memtable_size_limit(), 8 << 20);
/// # Ok::<(), MidgeError>(())
/// ```
#[derive(Clone)]
pub struct OpenOptions {
    pub(crate) storage: Storage,
    pub(crate) goal: Goal,
    pub(crate) workload: WorkloadProfile,
    pub(crate) memory_budget: usize,
    pub(crate) memtable_size_limit: u64,
    pub(crate) memtable_flush_threshold: u64,
    pub(crate) block_size: usize,
    pub(crate) target_sst_size: u64,
    pub(crate) l0_compaction_trigger: usize,
    pub(crate) l0_stall_ceiling: usize,
    pub(crate) max_immutable_memtables: usize,
    pub(crate) block_cache_bytes: u64,
    pub(crate) compression: bool,
    pub(crate) background_compaction: bool,
    pub(crate) recovery_policy: RecoveryPolicy,
    pub(crate) storage_io_timeout: Duration,
    pub(crate) runtime_response_timeout: Duration,
    pub(crate) wal_segment_bytes: u64,
    pub(crate) buffered_sync_interval: Duration,
    pub(crate) buffered_sync_bytes: u64,
    pub(crate) cloud_seal_bytes: u64,
    pub(crate) cloud_seal_delay: Duration,
    pub(crate) cloud_seal_commits: u64,
    pub(crate) wal_preallocate: bool,
    pub(crate) ttl_clock: Arc<dyn Clock>,
    pub(crate) executor: Option<Arc<dyn Executor>>,
}

impl fmt::Debug for OpenOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenOptions")
            .field("storage", &self.storage)
            .field("goal", &self.goal)
            .field("memtable_size_limit", &self.memtable_size_limit)
            .field("recovery_policy", &self.recovery_policy)
            .finish_non_exhaustive()
    }
}

impl OpenOptions {
    /// A database that lives only in this process.
    pub fn in_memory() -> OpenOptionsBuilder {
        OpenOptionsBuilder::new(Storage::InMemory)
    }
    /// A database in the directory `path` (created if missing).
    pub fn local(path: impl Into<PathBuf>) -> OpenOptionsBuilder {
        OpenOptionsBuilder::new(Storage::Local { path: path.into() })
    }
    /// A database on a caller-supplied storage backend, such as the WASI host import or the crash simulator.
    pub fn with_file_system(fs: SharedFs) -> OpenOptionsBuilder {
        OpenOptionsBuilder::new(Storage::Custom { fs })
    }
    /// A cloud-backed database on `store` under `prefix`, with a local cache directory. Commits use
    /// `cloud_strict()`, `cloud_async()` or `best_effort()`.
    pub fn cloud(
        local_cache_path: impl Into<PathBuf>,
        store: crate::storage::object::SharedObjectStore,
        prefix: impl Into<String>,
    ) -> OpenOptionsBuilder {
        OpenOptionsBuilder::new(Storage::Cloud {
            local: CloudCache::Path(local_cache_path.into()),
            store,
            prefix: prefix.into(),
        })
    }

    /// A cloud-backed database whose "bucket" is a local directory (deterministic tests and experiments).
    pub fn cloud_simulated(
        local_cache_path: impl Into<PathBuf>,
        bucket: impl Into<PathBuf>,
        prefix: impl Into<String>,
    ) -> OpenOptionsBuilder {
        let bucket = crate::storage::local::LocalFs::new(bucket.into());
        let store = crate::storage::object::FsObjectStore::new(std::sync::Arc::new(bucket));
        OpenOptions::cloud(local_cache_path, std::sync::Arc::new(store), prefix)
    }

    /// A cloud-backed database whose local cache is any file system (the component's host import, the
    /// simulator).
    pub fn cloud_with_file_system(
        local: SharedFs,
        store: crate::storage::object::SharedObjectStore,
        prefix: impl Into<String>,
    ) -> OpenOptionsBuilder {
        OpenOptionsBuilder::new(Storage::Cloud {
            local: CloudCache::Fs(local),
            store,
            prefix: prefix.into(),
        })
    }

    /// True for cloud-backed storage.
    pub fn is_cloud(&self) -> bool {
        matches!(self.storage, Storage::Cloud { .. })
    }

    /// Where the database lives.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }
    /// Active memtable size at which it is frozen and flushed.
    pub fn memtable_size_limit(&self) -> u64 {
        self.memtable_size_limit
    }
    /// The recovery policy.
    pub fn recovery_policy(&self) -> RecoveryPolicy {
        self.recovery_policy
    }
    /// Memtable size that triggers a flush.
    pub fn memtable_flush_threshold(&self) -> u64 {
        self.memtable_flush_threshold
    }
    /// The optimisation goal and workload profile the sizes were derived from.
    pub fn profile(&self) -> (Goal, WorkloadProfile) {
        (self.goal, self.workload)
    }
    /// Total memory budget in bytes.
    pub fn memory_budget_bytes(&self) -> usize {
        self.memory_budget
    }
    /// Derived SST block size in bytes.
    pub fn block_size(&self) -> usize {
        self.block_size
    }
    /// Derived target SST file size in bytes.
    pub fn target_sst_size(&self) -> u64 {
        self.target_sst_size
    }
    /// L0 file count that triggers compaction, and the count at which writes stall.
    pub fn l0_thresholds(&self) -> (usize, usize) {
        (self.l0_compaction_trigger, self.l0_stall_ceiling)
    }
    /// Frozen memtables allowed per column family before writes stall.
    pub fn max_immutable_memtables(&self) -> usize {
        self.max_immutable_memtables
    }
    /// Block cache capacity in bytes.
    pub fn block_cache_bytes(&self) -> u64 {
        self.block_cache_bytes
    }
    /// Whether SST blocks are compressed, and whether compaction runs in the background.
    pub fn compression_and_background(&self) -> (bool, bool) {
        (self.compression, self.background_compaction)
    }
    /// Storage I/O timeout and the caller-facing response timeout.
    pub fn timeouts(&self) -> (Duration, Duration) {
        (self.storage_io_timeout, self.runtime_response_timeout)
    }
}

/// Builds [`OpenOptions`]; all derivation and validation happens in [`OpenOptionsBuilder::build`].
#[derive(Clone)]
pub struct OpenOptionsBuilder {
    storage: Storage,
    goal: Goal,
    workload: WorkloadProfile,
    memory_budget: MemoryBudget,
    memtable_size_limit: Option<u64>,
    memtable_flush_threshold: Option<u64>,
    target_sst_size: Option<u64>,
    block_cache_policy: BlockCachePolicy,
    background_compaction: bool,
    recovery_policy: RecoveryPolicy,
    storage_io_timeout: Duration,
    runtime_response_timeout: Option<Duration>,
    l0_compaction_trigger: Option<usize>,
    wal_segment_bytes: Option<u64>,
    cloud_seal: (u64, Duration, u64),
    wal_preallocation: Option<bool>,
    ttl_clock: Arc<dyn Clock>,
    executor: Option<Arc<dyn Executor>>,
    transaction_memory_pool_size: Option<usize>,
}

impl fmt::Debug for OpenOptionsBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenOptionsBuilder")
            .field("storage", &self.storage)
            .finish_non_exhaustive()
    }
}

impl OpenOptionsBuilder {
    fn new(storage: Storage) -> OpenOptionsBuilder {
        OpenOptionsBuilder {
            storage,
            goal: Goal::default(),
            workload: WorkloadProfile::default(),
            memory_budget: MemoryBudget::default(),
            memtable_size_limit: None,
            memtable_flush_threshold: None,
            target_sst_size: None,
            block_cache_policy: BlockCachePolicy::default(),
            background_compaction: true,
            recovery_policy: RecoveryPolicy::default(),
            storage_io_timeout: Duration::from_secs(30),
            runtime_response_timeout: None,
            l0_compaction_trigger: None,
            wal_segment_bytes: None,
            cloud_seal: (16 << 20, Duration::from_millis(500), 4096),
            wal_preallocation: None,
            ttl_clock: Arc::new(SystemClock::new()),
            executor: None,
            transaction_memory_pool_size: None,
        }
    }

    /// Optimisation goal (default [`Goal::Latency`]).
    pub fn goal(mut self, goal: Goal) -> Self {
        self.goal = goal;
        self
    }
    /// Total memory budget (default [`MemoryBudget::Auto`]).
    pub fn memory_budget(mut self, budget: MemoryBudget) -> Self {
        self.memory_budget = budget;
        self
    }
    /// Workload profile (default [`WorkloadProfile::Mixed`]).
    pub fn workload(mut self, workload: WorkloadProfile) -> Self {
        self.workload = workload;
        self
    }
    /// Memtable size at which it is frozen and flushed to an SST.
    pub fn with_memtable_size_limit(mut self, bytes: u64) -> Self {
        self.memtable_size_limit = Some(bytes);
        self
    }
    /// Memtable size that triggers a background flush (defaults to the limit; must not exceed it).
    pub fn with_memtable_flush_threshold(mut self, bytes: u64) -> Self {
        self.memtable_flush_threshold = Some(bytes);
        self
    }
    /// Target SST file size for flush and compaction outputs.
    pub fn with_target_sst_size(mut self, bytes: u64) -> Self {
        self.target_sst_size = Some(bytes);
        self
    }
    /// Number of L0 files that triggers compaction.
    pub fn with_l0_compaction_trigger(mut self, files: usize) -> Self {
        self.l0_compaction_trigger = Some(files);
        self
    }
    /// WAL segment size at which a new segment is started.
    pub fn with_wal_segment_bytes(mut self, bytes: u64) -> Self {
        self.wal_segment_bytes = Some(bytes);
        self
    }
    /// When `cloud_async()` commits are sealed and uploaded: after `bytes` of WAL, `delay` since the last
    /// upload, or `pending_commits` commits, whichever comes first (defaults: 16 MiB, 500 ms, 4096). This bounds
    /// what losing the machine can cost. Zeros are raised to 1.
    ///
    /// ```
    /// use cntryl_midge::OpenOptions;
    /// use std::time::Duration;
    /// let opts = OpenOptions::cloud_simulated("./cache", "./bucket", "db")
    ///     .with_cloud_seal_thresholds(1 << 20, Duration::from_millis(100), 64)
    ///     .build();
    /// # let _ = opts;
    /// ```
    pub fn with_cloud_seal_thresholds(mut self, bytes: u64, delay: Duration, pending_commits: u64) -> Self {
        self.cloud_seal = (
            bytes.max(1),
            delay.max(Duration::from_millis(1)),
            pending_commits.max(1),
        );
        self
    }
    /// Whether the active WAL segment is extended (sparsely, a few MiB at a time) ahead of the appends, so a
    /// sync commit's `fdatasync` persists data only instead of also journaling a new file size. On by default
    /// for local and custom file systems (the component's host import, the crash simulator); off for in-memory
    /// databases and cloud mode (whose strict commits seal a segment each, so a reservation would be trimmed
    /// away at once).
    ///
    /// ```
    /// use cntryl_midge::OpenOptions;
    /// let opts = OpenOptions::local("./db").with_wal_preallocation(false).build();
    /// # let _ = opts;
    /// ```
    pub fn with_wal_preallocation(mut self, on: bool) -> Self {
        self.wal_preallocation = Some(on);
        self
    }
    /// Budget for buffered transaction writes.
    pub fn transaction_memory_pool_size(mut self, bytes: usize) -> Self {
        self.transaction_memory_pool_size = Some(bytes);
        self
    }
    /// Block cache policy.
    pub fn block_cache_policy(mut self, policy: BlockCachePolicy) -> Self {
        self.block_cache_policy = policy;
        self
    }
    /// Whether compaction runs in the background (default on). `compact_all` works either way.
    pub fn background_compaction(mut self, on: bool) -> Self {
        self.background_compaction = on;
        self
    }
    /// Recovery policy (default [`RecoveryPolicy::Strict`]).
    pub fn recovery_policy(mut self, policy: RecoveryPolicy) -> Self {
        self.recovery_policy = policy;
        self
    }
    /// Storage I/O timeout (must be non-zero).
    pub fn storage_io_timeout(mut self, t: Duration) -> Self {
        self.storage_io_timeout = t;
        self
    }
    /// Bound on how long a caller waits for the engine (must exceed the storage timeout).
    pub fn runtime_response_timeout(mut self, t: Duration) -> Self {
        self.runtime_response_timeout = Some(t);
        self
    }
    /// The clock used for TTL expiry (inject a [`crate::ManualClock`] in tests).
    pub fn ttl_clock(mut self, clock: impl Clock + 'static) -> Self {
        self.ttl_clock = Arc::new(clock);
        self
    }
    /// The executor for background work (defaults to threads natively, inline on wasm32).
    pub fn executor(mut self, executor: Arc<dyn Executor>) -> Self {
        self.executor = Some(executor);
        self
    }

    /// Validates and derives the final options.
    ///
    /// Errors: a zero storage timeout, a zero memtable limit or threshold, a threshold above the limit, or a
    /// runtime timeout not above the storage timeout is `InvalidArgument`; sizes that do not fit the memory
    /// budget are `ResourceLimit`.
    pub fn build(self) -> MidgeResult<OpenOptions> {
        let bad = |m: &str| Err(MidgeError::InvalidArgument(m.to_string()));
        if self.storage_io_timeout.is_zero() {
            return bad("storage_io_timeout must be non-zero");
        }
        if let Storage::Local { path } = &self.storage
            && path.as_os_str().is_empty()
        {
            return bad("local storage path is empty");
        }
        let budget = match self.memory_budget {
            MemoryBudget::Auto => {
                let m = crate::runtime::memory::auto_budget(crate::runtime::memory::host_memory_limit());
                usize::try_from(m).unwrap_or(usize::MAX)
            }
            MemoryBudget::Bytes(0) => return bad("memory budget must be non-zero"),
            MemoryBudget::Bytes(b) => b,
        };
        let (block_size, target_sst, base_memtable, l0_trigger) = match self.goal {
            Goal::Latency => (16 << 10, 64u64 << 20, 64u64 << 20, 4),
            Goal::Throughput => {
                let bs = if self.workload == WorkloadProfile::RangeScan {
                    128 << 10
                } else {
                    64 << 10
                };
                let trig = if self.workload == WorkloadProfile::WriteHeavy {
                    8
                } else {
                    6
                };
                (bs, 256 << 20, 256 << 20, trig)
            }
            Goal::Economy => (32 << 10, 64 << 20, 32 << 20, 4),
        };
        let pool = self.transaction_memory_pool_size.unwrap_or(budget / 10);
        if pool > budget {
            return Err(MidgeError::ResourceLimit(
                "transaction pool exceeds the memory budget".into(),
            ));
        }
        let mut memtable = match self.workload {
            WorkloadProfile::WriteHeavy => base_memtable * 2,
            WorkloadProfile::ReadMostly => base_memtable / 2,
            _ => base_memtable,
        };
        memtable = memtable.min(((budget - pool) / 4) as u64).max(64 << 10);
        let limit = match self.memtable_size_limit {
            Some(0) => return bad("memtable size limit must be non-zero"),
            Some(l) => l,
            None => memtable,
        };
        let threshold = match self.memtable_flush_threshold {
            Some(0) => return bad("memtable flush threshold must be non-zero"),
            Some(t) if t > limit => return bad("memtable flush threshold exceeds the memtable size limit"),
            Some(t) => t,
            None => limit,
        };
        let max_immutable = 2usize;
        if limit.saturating_mul(1 + max_immutable as u64) > budget as u64
            && self.memtable_size_limit.is_some()
        {
            return Err(MidgeError::ResourceLimit(format!(
                "memtable limit {limit} x {} generations does not fit the memory budget {budget}",
                1 + max_immutable
            )));
        }
        let runtime_timeout = match self.runtime_response_timeout {
            Some(t) if t <= self.storage_io_timeout => {
                return bad("runtime_response_timeout must exceed storage_io_timeout");
            }
            Some(t) => t,
            None => Duration::from_secs(60).max(self.storage_io_timeout + Duration::from_secs(30)),
        };
        let l0_trigger = match self.l0_compaction_trigger {
            Some(0) => return bad("l0 compaction trigger must be non-zero"),
            Some(t) => t,
            None => l0_trigger,
        };
        let target_sst = match self.target_sst_size {
            Some(0) => return bad("target SST size must be non-zero"),
            Some(t) => t,
            None => target_sst.min(limit.max(1 << 20) * 2),
        };
        let wal_segment_bytes = match self.wal_segment_bytes {
            Some(0) => return bad("WAL segment size must be non-zero"),
            Some(b) => b,
            None => 64 << 20,
        };
        // Each memtable generation also holds its point index (1/16 of its limit).
        let index = (limit as f64 * crate::memtable::INDEX_BYTES_PER_LIMIT_BYTE) as u64;
        let used = pool as u64 + (limit + index) * (1 + max_immutable as u64);
        let mut cache = (budget as u64).saturating_sub(used).max(1 << 20);
        if self.goal == Goal::Economy {
            cache = cache.min(ECONOMY_CACHE_CAP);
        }
        let _ = self.block_cache_policy;
        let wal_preallocate = self
            .wal_preallocation
            .unwrap_or(!matches!(self.storage, Storage::InMemory | Storage::Cloud { .. }));
        Ok(OpenOptions {
            storage: self.storage,
            goal: self.goal,
            workload: self.workload,
            memory_budget: budget,
            memtable_size_limit: limit,
            memtable_flush_threshold: threshold,
            block_size,
            target_sst_size: target_sst,
            l0_compaction_trigger: l0_trigger,
            l0_stall_ceiling: l0_trigger + max_immutable + 1 + 8,
            max_immutable_memtables: max_immutable,
            block_cache_bytes: cache,
            compression: true,
            background_compaction: self.background_compaction,
            recovery_policy: self.recovery_policy,
            storage_io_timeout: self.storage_io_timeout,
            runtime_response_timeout: runtime_timeout,
            wal_segment_bytes,
            buffered_sync_interval: Duration::from_millis(100),
            buffered_sync_bytes: 1 << 20,
            cloud_seal_bytes: self.cloud_seal.0,
            cloud_seal_delay: self.cloud_seal.1,
            cloud_seal_commits: self.cloud_seal.2,
            wal_preallocate,
            ttl_clock: self.ttl_clock,
            executor: self.executor,
        })
    }
}

/// Accepted by [`crate::Engine::open`]: either built options or the result of [`OpenOptionsBuilder::build`]
/// (so `Engine::open(OpenOptions::local("./db").build())` works and reports a build error from `open`).
pub trait IntoOpenOptions {
    /// Converts into validated options.
    fn into_open_options(self) -> MidgeResult<OpenOptions>;
}

impl IntoOpenOptions for OpenOptions {
    fn into_open_options(self) -> MidgeResult<OpenOptions> {
        Ok(self)
    }
}

impl IntoOpenOptions for MidgeResult<OpenOptions> {
    fn into_open_options(self) -> MidgeResult<OpenOptions> {
        self
    }
}

impl IntoOpenOptions for OpenOptionsBuilder {
    fn into_open_options(self) -> MidgeResult<OpenOptions> {
        self.build()
    }
}

/// Which boundary `commit()` waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DurabilityPolicy {
    /// WAL frame appended and fsynced (shared with concurrent committers) before `commit` returns.
    Sync,
    /// WAL frame appended; fsynced within a bounded interval (100 ms or 1 MiB).
    Buffered,
    /// No WAL; survives only if a later flush publishes it.
    BestEffort,
    /// Cloud storage: local WAL append; upload continues in the background.
    CloudAsync,
    /// Cloud storage: returns after the covering WAL segment is uploaded and published.
    CloudStrict,
}

/// Per-commit durability choice. There is deliberately no `Default`: every commit names its guarantee.
///
/// ```
/// use cntryl_midge::{WriteOptions, DurabilityPolicy};
/// assert!(WriteOptions::sync().is_sync());
/// assert_eq!(WriteOptions::buffered().policy(), DurabilityPolicy::Buffered);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WriteOptions {
    policy: DurabilityPolicy,
}

impl WriteOptions {
    /// Wait for an fsync covering the transaction.
    pub fn sync() -> WriteOptions {
        WriteOptions {
            policy: DurabilityPolicy::Sync,
        }
    }
    /// Append to the WAL; fsync later (bounded window).
    pub fn buffered() -> WriteOptions {
        WriteOptions {
            policy: DurabilityPolicy::Buffered,
        }
    }
    /// Skip the WAL.
    pub fn best_effort() -> WriteOptions {
        WriteOptions {
            policy: DurabilityPolicy::BestEffort,
        }
    }
    /// Cloud storage: local append, asynchronous upload.
    pub fn cloud_async() -> WriteOptions {
        WriteOptions {
            policy: DurabilityPolicy::CloudAsync,
        }
    }
    /// Cloud storage: wait for the upload to be published.
    pub fn cloud_strict() -> WriteOptions {
        WriteOptions {
            policy: DurabilityPolicy::CloudStrict,
        }
    }
    /// The policy.
    pub fn policy(&self) -> DurabilityPolicy {
        self.policy
    }
    /// True for [`WriteOptions::sync`].
    pub fn is_sync(&self) -> bool {
        self.policy == DurabilityPolicy::Sync
    }
    /// True for [`WriteOptions::best_effort`].
    pub fn is_best_effort(&self) -> bool {
        self.policy == DurabilityPolicy::BestEffort
    }
    /// True for [`WriteOptions::cloud_async`].
    pub fn is_cloud_async(&self) -> bool {
        self.policy == DurabilityPolicy::CloudAsync
    }
    /// True for [`WriteOptions::cloud_strict`].
    pub fn is_cloud_strict(&self) -> bool {
        self.policy == DurabilityPolicy::CloudStrict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_rejects_invalid_settings_with_typed_errors() {
        let e = OpenOptions::in_memory()
            .storage_io_timeout(Duration::ZERO)
            .build()
            .unwrap_err();
        assert!(matches!(e, MidgeError::InvalidArgument(_)));
        let e = OpenOptions::in_memory()
            .with_memtable_size_limit(0)
            .build()
            .unwrap_err();
        assert!(matches!(e, MidgeError::InvalidArgument(_)));
        let e = OpenOptions::in_memory()
            .with_memtable_size_limit(1 << 20)
            .with_memtable_flush_threshold(2 << 20)
            .build()
            .unwrap_err();
        assert!(matches!(e, MidgeError::InvalidArgument(_)));
        let e = OpenOptions::in_memory()
            .storage_io_timeout(Duration::from_secs(30))
            .runtime_response_timeout(Duration::from_secs(10))
            .build()
            .unwrap_err();
        assert!(matches!(e, MidgeError::InvalidArgument(_)));
        let e = OpenOptions::in_memory()
            .memory_budget(MemoryBudget::Bytes(1 << 20))
            .with_memtable_size_limit(1 << 20)
            .build()
            .unwrap_err();
        assert!(matches!(e, MidgeError::ResourceLimit(_)));
        let e = OpenOptions::local("").build().unwrap_err();
        assert!(matches!(e, MidgeError::InvalidArgument(_)));
    }

    #[test]
    fn flush_threshold_defaults_to_the_limit() {
        let o = OpenOptions::in_memory()
            .with_memtable_size_limit(1 << 20)
            .build()
            .unwrap();
        assert_eq!(o.memtable_flush_threshold, 1 << 20);
        assert!(o.l0_stall_ceiling > o.l0_compaction_trigger);
    }

    #[test]
    fn auto_budget_follows_the_host_and_economy_caps_the_cache() {
        let o = OpenOptions::in_memory().build().unwrap();
        let want = crate::runtime::memory::auto_budget(crate::runtime::memory::host_memory_limit());
        assert_eq!(o.memory_budget_bytes() as u64, want);
        let budget = MemoryBudget::Bytes(1 << 30);
        let latency = OpenOptions::in_memory().memory_budget(budget).build().unwrap();
        let economy = OpenOptions::in_memory()
            .memory_budget(budget)
            .goal(Goal::Economy)
            .build()
            .unwrap();
        assert!(latency.block_cache_bytes() > ECONOMY_CACHE_CAP);
        assert_eq!(economy.block_cache_bytes(), ECONOMY_CACHE_CAP);
    }
}
