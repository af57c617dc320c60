//! Open and recovery: lock → format marker → manifest → WAL replay → fresh manifest snapshot → new WAL segment.

use super::{
    CfState, CommitState, Core, Counters, Visibility, lock, record_range_tombstones, record_versions,
};
use crate::cloud::Cloud;
use crate::error::{MidgeError, MidgeResult};
use crate::manifest::{self, CURRENT, Manifest, ManifestState};
use crate::memtable::Replay;
use crate::metrics::RecoveryMetricsSnapshot;
use crate::options::{OpenOptions, RecoveryPolicy, Storage};
use crate::runtime::default_executor;
use crate::storage::local::LocalFs;
use crate::storage::memory::MemoryFs;
use crate::storage::{OpenMode, SharedFs, publish_file};
use crate::txn::SnapshotRegistry;
use crate::types::ColumnFamilyId;
use crate::wal::{self, WAL_DIR, Wal};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::{Arc, Condvar, Mutex, RwLock};

pub(crate) const FORMAT: &str = "FORMAT";
pub(crate) const FORMAT_VERSION: u32 = 1;
pub(crate) use super::lsm::SST_DIR;
const LOCK: &str = "LOCK";

fn io(ctx: &str) -> impl Fn(std::io::Error) -> MidgeError + '_ {
    move |e| MidgeError::from_io(ctx, e)
}

/// Resolves the storage backend for `opts`.
pub(crate) fn file_system(opts: &OpenOptions) -> MidgeResult<SharedFs> {
    Ok(match &opts.storage {
        Storage::InMemory => Arc::new(MemoryFs::new()),
        Storage::Local { path } => {
            let fs = LocalFs::new(path.clone());
            crate::storage::FileSystem::mkdir_all(&fs, "").map_err(|e| match e.kind() {
                std::io::ErrorKind::NotADirectory | std::io::ErrorKind::AlreadyExists => {
                    MidgeError::InvalidPath
                }
                _ => MidgeError::from_io("create database directory", e),
            })?;
            Arc::new(fs)
        }
        Storage::Custom { fs }
        | Storage::Cloud {
            local: crate::options::CloudCache::Fs(fs),
            ..
        } => {
            fs.mkdir_all("").map_err(io("create database root"))?;
            fs.clone()
        }
        Storage::Cloud {
            local: crate::options::CloudCache::Path(path),
            ..
        } => {
            let fs = LocalFs::new(path.clone());
            crate::storage::FileSystem::mkdir_all(&fs, "").map_err(io("create cache directory"))?;
            Arc::new(fs)
        }
    })
}

/// Reads the format marker. `Ok(None)` for a directory holding no database yet (possibly an interrupted
/// creation, which left only our own files).
pub(crate) fn check_format(fs: &SharedFs) -> MidgeResult<Option<u32>> {
    if !fs.exists(FORMAT).map_err(io("stat FORMAT"))? {
        let names = fs.list("").map_err(io("list database directory"))?;
        let foreign: Vec<&String> = names
            .iter()
            .filter(|n| {
                !(n.as_str() == LOCK
                    || n.as_str() == CURRENT
                    || n.starts_with("MANIFEST-")
                    || n.as_str() == WAL_DIR
                    || n.as_str() == SST_DIR
                    || n.as_str() == crate::cloud::CACHE_EPOCH
                    || n.ends_with(".tmp"))
            })
            .collect();
        if !foreign.is_empty() {
            return Err(MidgeError::CompatibilityError(format!(
                "directory is not a Midge database (no FORMAT marker; found {:?})",
                foreign.iter().take(3).collect::<Vec<_>>()
            )));
        }
        // A half-created database: if it already holds WAL data, creation completed in an older layout we do
        // not know; refuse rather than guess.
        if fs.exists(WAL_DIR).map_err(io("stat wal"))?
            && fs
                .list(WAL_DIR)
                .map_err(io("list wal"))?
                .iter()
                .any(|n| n.ends_with(".wal") && n.len() == 24)
            && fs.exists(CURRENT).map_err(io("stat CURRENT"))?
        {
            return Err(MidgeError::CompatibilityError(
                "database has WAL data but no FORMAT marker".into(),
            ));
        }
        return Ok(None);
    }
    let text = fs
        .open(FORMAT, OpenMode::Read)
        .and_then(|f| f.read_all())
        .map_err(io("read FORMAT"))?;
    let s = std::str::from_utf8(&text).unwrap_or("");
    let v = s
        .strip_prefix("midge-format=")
        .and_then(|r| r.strip_suffix('\n'))
        .and_then(|n| n.parse::<u32>().ok())
        .ok_or_else(|| MidgeError::CompatibilityError(format!("unrecognised FORMAT marker {s:?}")))?;
    if v != FORMAT_VERSION {
        return Err(MidgeError::CompatibilityError(format!(
            "database format {v} is not supported by this build (supports {FORMAT_VERSION})"
        )));
    }
    Ok(Some(v))
}

/// Creates an empty database: directories, first manifest, and the FORMAT marker last (its presence means
/// creation completed).
fn create(fs: &SharedFs) -> MidgeResult<()> {
    fs.mkdir_all(WAL_DIR).map_err(io("create wal dir"))?;
    fs.mkdir_all(SST_DIR).map_err(io("create sst dir"))?;
    fs.sync_dir("").map_err(io("sync database dir"))?;
    Manifest::create(fs.clone(), 1, ManifestState::initial(), None)?;
    publish_file(
        fs.as_ref(),
        FORMAT,
        format!("midge-format={FORMAT_VERSION}\n").as_bytes(),
    )
    .map_err(io("publish FORMAT"))?;
    Ok(())
}

/// Opens (creating if needed) and recovers a database.
pub(crate) fn open(opts: OpenOptions) -> MidgeResult<Arc<Core>> {
    let fs = file_system(&opts)?;
    let in_memory = matches!(opts.storage, Storage::InMemory);
    let guard = fs.lock(LOCK).map_err(|e| {
        if e.kind() == std::io::ErrorKind::WouldBlock {
            MidgeError::LeaseHeld("the database is open in another process or engine".into())
        } else {
            MidgeError::from_io("lock database", e)
        }
    })?;
    let executor = opts.executor.clone().unwrap_or_else(default_executor);
    let attached = match &opts.storage {
        Storage::Cloud { store, prefix, .. } => Some(Cloud::attach(
            &fs,
            store.clone(),
            prefix,
            executor.clone(),
            opts.ttl_clock.as_ref(),
        )?),
        _ => None,
    };
    if check_format(&fs)?.is_none() {
        create(&fs)?;
    }
    let loaded = manifest::load(&fs)?;
    let manifest_torn = loaded.torn_tail;
    if manifest_torn {
        tracing::warn!(
            "manifest MANIFEST-{:06} ended in an incomplete edit; it was dropped",
            loaded.number
        );
    }
    let state = loaded.state;
    let cfs: BTreeMap<_, _> = state
        .cfs
        .values()
        .map(|c| {
            let cf = CfState::new(c.id, c.name.clone(), opts.memtable_size_limit);
            (c.id, Arc::new(cf))
        })
        .collect();
    let flushed: BTreeMap<_, _> = state.cfs.values().map(|c| (c.id, c.flushed_seq)).collect();
    // Replayed versions are gathered per column family and inserted once the log is read, so the memtable
    // can insert them in key order (see `Memtable::insert_replay`).
    let mut replayed: BTreeMap<ColumnFamilyId, Replay> = BTreeMap::new();
    let report = wal::replay(&fs, opts.recovery_policy, true, |rec| {
        // Records of dropped column families, or already covered by published SSTs, are skipped. `flushed` is
        // the highest operation sequence in a flushed memtable; a transaction's last op is commit_seq - 1.
        if let (Some(cf), Some(&f)) = (cfs.get(&rec.cf), flushed.get(&rec.cf))
            && rec.commit_seq() - 1 > f
        {
            let r = replayed.entry(rec.cf).or_default();
            record_versions(rec).for_each(|e| r.push(e));
            let mems = cf.mems.read().unwrap_or_else(|p| p.into_inner());
            for t in record_range_tombstones(rec) {
                mems.active.insert_range(t);
            }
        }
        Ok(())
    })?;
    for (id, versions) in replayed {
        if let Some(cf) = cfs.get(&id) {
            let mems = cf.mems.read().unwrap_or_else(|p| p.into_inner());
            mems.active.insert_replay(versions);
        }
    }
    let last_seq = report.max_seq.max(state.last_seq);
    let (cloud, mut fetched) = match attached {
        Some((c, r)) => (Some(c), r),
        None => (None, Default::default()),
    };
    if let Some(c) = &cloud {
        let ids: Vec<u64> = state.files.keys().copied().collect();
        c.restore_ssts(&fs, &ids, &mut fetched)?;
    }
    let manifest = Manifest::create(fs.clone(), loaded.number + 1, state, Some(loaded.number))?;
    if let Some(c) = &cloud {
        c.upload_manifest(bytes::Bytes::from(manifest.snapshot_bytes()))?;
    }
    manifest::remove_stale(&fs, manifest.number())?;
    let wal = Wal::create(
        fs.clone(),
        Arc::new(crate::runtime::SystemClock::new()),
        opts.wal_segment_bytes,
        report.next_segment_id,
        &report.segments,
        // Preallocated segments save each sync commit a metadata journal write on a real file system. On by
        // default everywhere but in memory, so the crash simulator and the component's host import exercise
        // the same durable steps as a local disk.
        opts.wal_preallocate,
    )?;
    // Orphans (outputs of unpublished flushes or compactions, inputs whose deletion was interrupted) are
    // never trusted: remove them before anything allocates a file id. This is the intent replay of the
    // publication protocol: the manifest edit is the commit point, so finishing means deleting the leftovers.
    let live: std::collections::BTreeSet<u64> = manifest.state().files.keys().copied().collect();
    let orphans = super::lsm::remove_orphans(&fs, &live)?;
    let salvage = opts.recovery_policy == RecoveryPolicy::Salvage;
    let recovery = RecoveryMetricsSnapshot {
        wal_recovery_records_replayed: report.records,
        wal_recovery_bytes_replayed: report.bytes,
        wal_torn_tail_bytes_truncated: report.torn_tail_bytes,
        manifest_torn_edit_dropped: manifest_torn,
        orphan_files_removed: orphans,
        intent_log_replay_runs: u64::from(orphans > 0),
        intent_log_entries_replayed: orphans,
        salvage_report: report.salvaged.clone(),
        cloud_wal_segments_fetched: fetched.segments_fetched,
        cloud_ssts_fetched: fetched.ssts_fetched,
        cloud_bytes_fetched: fetched.bytes_fetched,
        cloud_manifest_fetched: fetched.manifest_fetched,
    };
    let block_cache = Arc::new(crate::sst::BlockCache::new(opts.block_cache_bytes));
    let core = Arc::new_cyclic(|me| Core {
        me: me.clone(),
        block_cache,
        sst_stats: Arc::default(),
        flush_lock: Mutex::new(()),
        compaction_lock: Mutex::new(()),
        cloud,
        cloud_lock: Mutex::new(()),
        clock: opts.ttl_clock.clone(),
        executor,
        in_memory,
        lock_guard: Mutex::new(Some(guard)),
        commit: Mutex::new(CommitState { last_seq }),
        wal,
        manifest: Mutex::new(manifest),
        cfs: RwLock::new(cfs),
        vis: Mutex::new(Visibility {
            visible: last_seq,
            done: BTreeMap::new(),
            waiters: 0,
        }),
        vis_cv: Condvar::new(),
        sync_nudge: Arc::default(),
        pending_sync: Mutex::new(std::collections::VecDeque::new()),
        visible: AtomicU64::new(last_seq),
        snapshots: SnapshotRegistry::default(),
        live_txns: AtomicUsize::new(0),
        closing: AtomicBool::new(false),
        closed: AtomicBool::new(false),
        poison: Mutex::new(None),
        poisoned: AtomicBool::new(false),
        salvage,
        recovery,
        counters: Counters::default(),
        fs,
        opts,
    });
    let mut files: Vec<_> = lock(&core.manifest).state().files.values().cloned().collect();
    if cfg!(feature = "canary-trust-listing") {
        // Canary mutant: trust what the directory lists over what the manifest says.
        let live: std::collections::BTreeSet<u64> = files.iter().map(|f| f.id).collect();
        for name in core.fs.list(SST_DIR).unwrap_or_default() {
            if let Some(id) = super::lsm::parse_sst_name(&name).filter(|id| !live.contains(id)) {
                let path = super::lsm::sst_path(id);
                let Ok(file) = core.fs.open(&path, OpenMode::Read) else {
                    continue;
                };
                let Ok(r) = crate::sst::SstReader::open(file, path, id, None, Default::default()) else {
                    continue;
                };
                let m = r.meta();
                files.push(crate::manifest::FileMeta {
                    id,
                    cf: 0,
                    level: 0,
                    size: m.size,
                    entries: m.entries,
                    smallest_key: m.smallest_key.clone(),
                    largest_key: m.largest_key.clone(),
                    smallest_seq: m.smallest_seq,
                    largest_seq: m.largest_seq,
                });
            }
        }
    }
    for meta in files {
        let cf = core.cf(meta.cf).ok_or_else(|| {
            MidgeError::Corruption(format!(
                "manifest lists SST {} of unknown column family {}",
                meta.id, meta.cf
            ))
        })?;
        let table = core.open_table(meta)?;
        let mut v = cf.mems_mut();
        let all = std::sync::Arc::make_mut(&mut v.tables);
        all.push(table);
        super::lsm::sort_tables(all);
    }
    Ok(core)
}
