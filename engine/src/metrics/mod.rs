//! Observability snapshots: recovery, runtime, read amplification, storage layout and verification reports.
//!
//! Plain serializable data. The core fills them; this module owns no engine state and does no I/O.

use serde::{Deserialize, Serialize};

/// Overall engine health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[non_exhaustive]
pub enum EngineHealth {
    /// Everything is as expected.
    #[default]
    Healthy,
    /// Working, with anomalies (orphan files, pending cleanup).
    Degraded,
    /// Opened under `RecoveryPolicy::Salvage`.
    SalvageMode,
    /// Writes are currently stalled.
    WriteStalled,
    /// Stored data failed validation.
    Corrupt,
    /// A durability step failed; nothing more is acknowledged until reopen.
    Poisoned,
}

/// What recovery did at open.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryMetricsSnapshot {
    /// WAL transaction records applied.
    pub wal_recovery_records_replayed: u64,
    /// Bytes of WAL frames applied.
    pub wal_recovery_bytes_replayed: u64,
    /// Intent-log replays run (publications finished or discarded at open).
    pub intent_log_replay_runs: u64,
    /// Intent entries acted on.
    pub intent_log_entries_replayed: u64,
    /// Bytes of torn WAL tail truncated.
    pub wal_torn_tail_bytes_truncated: u64,
    /// The manifest ended in an incomplete edit (a crash during its append, or damage to its final frame),
    /// which was dropped.
    pub manifest_torn_edit_dropped: bool,
    /// Orphan SST files removed.
    pub orphan_files_removed: u64,
    /// Set when Salvage dropped a corrupt WAL suffix (what and where).
    pub salvage_report: Option<String>,
    /// Cloud: WAL segments downloaded because the cache lacked them.
    pub cloud_wal_segments_fetched: u64,
    /// Cloud: SSTs downloaded because the cache lacked them.
    pub cloud_ssts_fetched: u64,
    /// Cloud: bytes downloaded during recovery.
    pub cloud_bytes_fetched: u64,
    /// Cloud: whether the manifest was restored from the object store.
    pub cloud_manifest_fetched: bool,
}

/// What the engine is doing now. Counters are totals since open.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RuntimeMetricsSnapshot {
    /// Overall health.
    pub health: EngineHealth,
    /// Latest visible commit sequence.
    pub current_sequence: u64,
    /// Highest sequence recorded in the manifest.
    pub manifest_last_persisted_sequence: u64,
    /// Next file id the manifest will allocate.
    pub manifest_next_wal_seq: u64,
    /// Active memtables (one per column family).
    pub active_memtables: u64,
    /// Frozen memtables awaiting flush.
    pub immutable_memtables: u64,
    /// Bytes held by all memtables.
    pub total_memtable_bytes: u64,
    /// Memtable size limit.
    pub memtable_size_limit: u64,
    /// Memtable flush threshold.
    pub memtable_flush_threshold: u64,
    /// Whether writes are stalled now.
    pub write_stalled: bool,
    /// Active WAL segment id.
    pub wal_current_segment_id: u64,
    /// WAL bytes appended but not yet fsynced.
    pub wal_pending_bytes: u64,
    /// Highest sequence covered by a completed WAL fsync.
    pub wal_local_durable_seq: u64,
    /// Cloud: highest sequence in a published (uploaded, read back, catalogued) WAL segment.
    pub wal_cloud_durable_seq: u64,
    /// Cloud: WAL segments uploaded and catalogued.
    pub cloud_wal_segments_uploaded: u64,
    /// Cloud: object PUTs issued (WAL, catalog, SSTs, manifest, lease).
    pub cloud_object_puts_total: u64,
    /// Cloud: obsolete objects deleted (pruned WAL segments, compacted-away SSTs).
    pub cloud_objects_deleted_total: u64,
    /// Cloud: requests reissued after a transient or ambiguous failure.
    pub cloud_request_retries_total: u64,
    /// WAL segment files on disk.
    pub wal_segments: u64,
    /// Live snapshots (transactions).
    pub active_snapshots: u64,
    /// Age of the oldest live snapshot.
    pub oldest_snapshot_age_seconds: u64,
    /// Live SST files.
    pub sst_count: u64,
    /// Bytes in live SST files.
    pub sst_bytes: u64,
    /// 1 when this open used Salvage.
    pub salvage_mode_opens: u64,
    /// Out-of-space errors seen.
    pub no_space_events: u64,
    /// Compactions completed.
    pub compactions_run: u64,
    /// Bytes written by compactions.
    pub compaction_bytes_rewritten: u64,
    /// Compactions that failed.
    pub compaction_failures: u64,
    /// Compactions in progress.
    pub active_compactions: u64,
    /// Writes rejected with `WriteStall`.
    pub write_stalls_total: u64,
    /// Stalls caused by memtable memory.
    pub write_stalls_memory_total: u64,
    /// Stalls caused by L0 debt.
    pub write_stalls_compaction_total: u64,
    /// Commits rejected with `WriteConflict`.
    pub write_conflicts_total: u64,
    /// Conflicts on point keys.
    pub write_conflicts_point_total: u64,
    /// Conflicts on deleted ranges.
    pub write_conflicts_range_total: u64,
    /// Block cache hits.
    pub cache_hits: u64,
    /// Block cache misses.
    pub cache_misses: u64,
    /// WAL frames appended.
    pub wal_append_count: u64,
    /// WAL fsyncs performed.
    pub wal_fsync_count: u64,
    /// Time spent appending to the WAL.
    pub wal_append_ns_total: u64,
    /// Time spent in WAL fsync.
    pub wal_fsync_ns_total: u64,
    /// Slowest WAL fsync.
    pub wal_fsync_ns_max: u64,
    /// Sync commits that found their frame already covered by another committer's fsync (group commit).
    pub durability_waiters_fanned_out_total: u64,
    /// Commits acknowledged.
    pub commits_total: u64,
    /// Bloom filter probes that ruled a file out.
    pub sst_bloom_rejects_total: u64,
    /// Bloom filter probes.
    pub sst_bloom_checks_total: u64,
    /// SST data blocks read.
    pub sst_data_blocks_read_total: u64,
    /// Flushes waiting to run.
    pub flush_queue_depth: u64,
    /// Flushes completed.
    pub flush_publish_count: u64,
    /// Flushes that failed.
    pub flush_failures_total: u64,
    /// Time spent building flush outputs.
    pub flush_build_ns_total: u64,
    /// From recovery: WAL records replayed.
    pub wal_recovery_records_replayed: u64,
    /// From recovery: WAL bytes replayed.
    pub wal_recovery_bytes_replayed: u64,
    /// From recovery: intent replay runs.
    pub intent_log_replay_runs: u64,
    /// From recovery: intent entries replayed.
    pub intent_log_entries_replayed: u64,
}

/// Read amplification of point lookups (reads and conflict probes). `ssts_touched` counts files whose key
/// range and sequence could hold the key (the bloom filter may still rule them out without a block read);
/// `blocks_read_total` counts data blocks read from storage by all reads (cache misses).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReadAmpMetricsSnapshot {
    /// Point reads served.
    pub reads_total: u64,
    /// SST files consulted.
    pub ssts_touched_total: u64,
    /// L0 files consulted.
    pub l0_ssts_touched_total: u64,
    /// Data blocks read.
    pub blocks_read_total: u64,
    /// Average SSTs per read.
    pub avg_ssts_per_read: f64,
    /// Average L0 SSTs per read.
    pub avg_l0_ssts_per_read: f64,
    /// Average blocks per read.
    pub avg_blocks_per_read: f64,
}

/// One live file in the layout.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageFileLayout {
    /// File name (relative to the database directory).
    pub name: String,
    /// Level.
    pub level: u32,
    /// Column family.
    pub cf_id: u32,
    /// Size in bytes.
    pub size_bytes: u64,
    /// Smallest key.
    pub smallest_key: Vec<u8>,
    /// Largest key.
    pub largest_key: Vec<u8>,
    /// Smallest sequence.
    pub smallest_seq: u64,
    /// Largest sequence.
    pub largest_seq: u64,
}

/// One level in the layout.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageLayoutLevel {
    /// Level number.
    pub level: u32,
    /// Files in the level.
    pub file_count: u64,
    /// Bytes in the level.
    pub total_bytes: u64,
    /// The files.
    pub files: Vec<StorageFileLayout>,
}

/// A live snapshot pin.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotPinSnapshot {
    /// Identifier (the pinned sequence).
    pub snapshot_id: u64,
    /// Pinned sequence.
    pub sequence: u64,
    /// Age in seconds.
    pub age_seconds: u64,
    /// Transactions sharing this pin.
    pub ref_count: u64,
}

/// The storage layout.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageLayoutSnapshot {
    /// Health.
    pub health: EngineHealth,
    /// Highest sequence recorded in the manifest.
    pub manifest_last_persisted_sequence: u64,
    /// Next file id.
    pub manifest_next_wal_seq: u64,
    /// Levels (only non-empty ones).
    pub levels: Vec<StorageLayoutLevel>,
    /// Live snapshots.
    pub active_snapshots: Vec<SnapshotPinSnapshot>,
    /// Files being compacted.
    pub compacting_ssts: Vec<String>,
    /// Files no longer live but not yet deleted.
    pub obsolete_files: Vec<String>,
}

/// The result of `verify_storage` / `verify_path`. Verification never repairs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageVerificationReport {
    /// Manifest file number verified.
    pub manifest_epoch: u64,
    /// Files listed by the manifest.
    pub manifest_files_verified: u64,
    /// SST files opened and fully checked.
    pub sst_files_verified: u64,
    /// SST bytes plus decoded WAL bytes.
    pub bytes_verified: u64,
    /// Data blocks decoded and checksummed.
    pub data_blocks_verified: u64,
    /// Highest WAL sequence.
    pub wal_boundary: Option<u64>,
    /// WAL records that would be replayed.
    pub wal_recovery_records_replayed: u64,
    /// WAL bytes that would be replayed.
    pub wal_recovery_bytes_replayed: u64,
    /// Intent entries loaded.
    pub intent_entries_loaded: u64,
    /// Whether this report is authoritative (local storage).
    pub authoritative: bool,
    /// Health verdict.
    pub health: EngineHealth,
    /// Problems found (empty when healthy).
    pub problems: Vec<String>,
}
