//! wit-bindgen exports of `cntryl:midge/engine`, delegating to `cntryl-midge`.
// Only in the code `generate!` emits, and the `export_name` attribute of the hand-written `get-short` export;
// the delegation below has none.
#![allow(unsafe_code)]

use cntryl_midge::{Bytes, MidgeError};
use std::cell::{Cell, RefCell};
use std::rc::Rc;

// `get-short` is exported by hand below (`export_get_short`), without a `post-return`.
wit_bindgen::generate!({ world: "plugin", path: "../wit", skip: ["get-short"] });

use cntryl::midge::types::{
    BatchOp as WitBatchOp, CommitTicket as WitTicket, ConflictPolicy as WitPolicy, Durability,
    Error as WitError, Health, OpenConfig, Query as WitQuery, RecoveryMetrics, RuntimeMetrics,
    TransactionMode as WitMode, VerifyReport,
};
use exports::cntryl::midge::engine::{
    Database, Guest, GuestDatabase, GuestScanIterator, GuestSyncPlan, GuestTransaction, ScanIterator,
    SyncPlan, SyncStart, Transaction,
};
use std::sync::Arc;

struct Component;

impl Guest for Component {
    type Database = Db;
    type Transaction = Tx;
    type ScanIterator = Scan;
    type SyncPlan = Plan;
    fn take_short_error() -> Option<WitError> {
        SHORT_ERROR.take()
    }
}

export!(Component);

/// Maps every engine error to the WIT variant of the same name.
fn err(e: MidgeError) -> WitError {
    use MidgeError as M;
    match e {
        M::Io(e) => WitError::Io(e.to_string()),
        M::NotFound => WitError::NotFound,
        M::InvalidArgument(s) => WitError::InvalidArgument(s),
        M::Corruption(s) => WitError::Corruption(s),
        M::NotSupported(s) => WitError::NotSupported(s),
        M::Internal(s) => WitError::Internal(s),
        M::InvalidPath => WitError::InvalidPath,
        M::NoSpace(s) => WitError::NoSpace(s),
        M::RecoveryFailed(s) => WitError::RecoveryFailed(s),
        M::CompatibilityError(s) => WitError::CompatibilityError(s),
        M::WriteStall(s) => WitError::WriteStall(s),
        M::MemoryModeViolation(s) => WitError::MemoryModeViolation(s),
        M::Fenced(s) => WitError::Fenced(s),
        M::LeaseHeld(s) => WitError::LeaseHeld(s),
        M::LeaseUnavailable(s) => WitError::LeaseUnavailable(s),
        M::LeaseIndeterminate(s) => WitError::LeaseIndeterminate(s),
        M::LeaseEpochExhausted => WitError::LeaseEpochExhausted,
        M::WriteConflict(s) => WitError::WriteConflict(s),
        M::Aborted(s) => WitError::Aborted(s),
        M::Busy(s) => WitError::Busy(s),
        M::Timeout(s) => WitError::Timeout(s),
        M::ResourceLimit(s) => WitError::ResourceLimit(s),
        M::UnflushedDataPresent { cf_id, bytes } => WitError::UnflushedDataPresent((cf_id, bytes as u64)),
        M::Poisoned(s) => WitError::Poisoned(s),
        other => WitError::Internal(other.to_string()),
    }
}

fn finished() -> WitError {
    WitError::InvalidArgument("the transaction was already committed or rolled back".into())
}

fn closed() -> WitError {
    WitError::InvalidArgument("the database was shut down".into())
}

/// The `database` resource.
pub struct Db {
    engine: RefCell<Option<cntryl_midge::Engine>>,
}

fn open(builder: cntryl_midge::OpenOptionsBuilder, memtable: Option<u64>) -> Result<Database, WitError> {
    let builder = match memtable {
        Some(b) => builder.with_memtable_size_limit(b),
        None => builder,
    };
    let engine = cntryl_midge::Engine::open(builder.build()).map_err(err)?;
    Ok(Database::new(Db {
        engine: RefCell::new(Some(engine)),
    }))
}

/// The handle of column family `cf`, or `InvalidArgument` if there is none.
fn cf_handle(e: &cntryl_midge::Engine, cf: u32) -> Result<cntryl_midge::ColumnFamilyHandle, MidgeError> {
    e.list_column_families()?
        .into_iter()
        .find(|c| c.id() == cf)
        .ok_or_else(|| MidgeError::InvalidArgument(format!("unknown column family {cf}")))
}

/// Applies the host's tuning to an options builder.
fn configure(mut b: cntryl_midge::OpenOptionsBuilder, c: &OpenConfig) -> cntryl_midge::OpenOptionsBuilder {
    if let Some(v) = c.memory_budget {
        b = b.memory_budget(cntryl_midge::MemoryBudget::Bytes(
            usize::try_from(v).unwrap_or(usize::MAX),
        ));
    }
    if let Some(v) = c.memtable_bytes {
        b = b.with_memtable_size_limit(v);
    }
    if let Some(v) = c.l0_compaction_trigger {
        b = b.with_l0_compaction_trigger(v as usize);
    }
    if let Some(v) = c.target_sst_bytes {
        b = b.with_target_sst_size(v);
    }
    if let Some(v) = c.wal_segment_bytes {
        b = b.with_wal_segment_bytes(v);
    }
    if let Some(ms) = c.fixed_clock_millis {
        b = b.ttl_clock(cntryl_midge::ManualClock::new(ms));
    }
    b
}

impl Db {
    fn with<T>(&self, f: impl FnOnce(&cntryl_midge::Engine) -> Result<T, MidgeError>) -> Result<T, WitError> {
        let e = self.engine.borrow();
        f(e.as_ref().ok_or_else(closed)?).map_err(err)
    }
}

impl GuestDatabase for Db {
    fn open_in_memory(memtable_bytes: Option<u64>) -> Result<Database, WitError> {
        open(cntryl_midge::OpenOptions::in_memory(), memtable_bytes)
    }

    fn open_dir(path: String, memtable_bytes: Option<u64>) -> Result<Database, WitError> {
        open(cntryl_midge::OpenOptions::local(path), memtable_bytes)
    }

    fn open_imported(config: OpenConfig) -> Result<Database, WitError> {
        let fs = Arc::new(crate::imported::ImportedFs);
        open(
            configure(cntryl_midge::OpenOptions::with_file_system(fs), &config),
            None,
        )
    }

    fn open_cloud(prefix: String, config: OpenConfig) -> Result<Database, WitError> {
        let cache = Arc::new(crate::imported::ImportedFs);
        let store = Arc::new(crate::imported::ImportedObjects);
        let b = cntryl_midge::OpenOptions::cloud_with_file_system(cache, store, prefix);
        open(configure(b, &config), None)
    }

    fn drop_column_family_discarding_unflushed(&self, id: u32) -> Result<(), WitError> {
        self.with(|e| e.drop_column_family_discarding_unflushed(id))
    }

    fn create_column_family(&self, name: String) -> Result<u32, WitError> {
        self.with(|e| e.create_column_family(&name).map(|c| c.id()))
    }

    fn get_column_family(&self, name: String) -> Option<u32> {
        self.engine
            .borrow()
            .as_ref()?
            .get_column_family(&name)
            .map(|c| c.id())
    }

    fn list_column_families(&self) -> Result<Vec<(u32, String)>, WitError> {
        self.with(|e| {
            Ok(e.list_column_families()?
                .into_iter()
                .map(|c| (c.id(), c.name().to_string()))
                .collect())
        })
    }

    fn drop_column_family(&self, id: u32) -> Result<(), WitError> {
        self.with(|e| e.drop_column_family(id))
    }

    fn begin_tx(&self, cf: u32, mode: WitMode) -> Result<Transaction, WitError> {
        let mode = match mode {
            WitMode::ReadOnly => cntryl_midge::TransactionMode::ReadOnly,
            WitMode::ReadWrite => cntryl_midge::TransactionMode::ReadWrite,
        };
        let tx = self.with(|e| e.begin_tx(cf, mode))?;
        Ok(Transaction::new(Tx {
            tx: Rc::new(RefCell::new(Some(tx))),
            short: Cell::new(0),
        }))
    }

    fn flush(&self, cf: u32) -> Result<(), WitError> {
        self.with(|e| e.flush_cf(&cf_handle(e, cf)?))
    }

    fn compact_all(&self) -> Result<(), WitError> {
        self.with(|e| e.compact_all())
    }

    fn run_pending_work(&self) -> Result<bool, WitError> {
        self.with(|e| e.run_pending_work())
    }

    fn sync_wal(&self) -> Result<(), WitError> {
        self.with(|e| e.sync_wal())
    }

    fn write(&self, cf: u32, ops: Vec<WitBatchOp>, durability: Durability) -> Result<(), WitError> {
        self.with(|e| e.write(cf, batch_ops(ops), write_options(durability)))
    }

    fn write_deferred(
        &self,
        cf: u32,
        ops: Vec<WitBatchOp>,
        durability: Durability,
    ) -> Result<Option<WitTicket>, WitError> {
        let t = self.with(|e| e.write_deferred(cf, batch_ops(ops), write_options(durability)))?;
        Ok(t.map(wit_ticket))
    }

    fn finish_commit(&self, t: WitTicket) -> Result<u64, WitError> {
        let ticket = cntryl_midge::CommitTicket {
            log_position: t.log_position,
            first_seq: t.first_seq,
            commit_seq: t.commit_seq,
            cf: t.cf,
            rotated_memtable: t.rotated_memtable,
        };
        self.with(|e| e.finish_commit(ticket))
    }

    fn begin_sync(&self, log_position: u64) -> Result<Option<SyncStart>, WitError> {
        Ok(self.with(|e| e.begin_sync(log_position))?.map(|p| SyncStart {
            path: p.path().to_owned(),
            log_position: p.log_position(),
            plan: SyncPlan::new(Plan(RefCell::new(Some(p)))),
        }))
    }

    fn end_sync(&self, plan: SyncPlan, fsync_error: Option<String>) -> Result<u64, WitError> {
        let plan = plan
            .get::<Plan>()
            .0
            .borrow_mut()
            .take()
            .ok_or_else(|| WitError::InvalidArgument("sync plan already ended".into()))?;
        let fsync = match fsync_error {
            None => Ok(()),
            Some(m) => Err(std::io::Error::other(m)),
        };
        self.with(|e| e.end_sync(plan, fsync))
    }

    fn wait_for_write_stall_clear(&self, cf: u32, timeout_ms: u64) -> Result<bool, WitError> {
        self.with(|e| {
            let handle = cf_handle(e, cf)?;
            e.wait_for_write_stall_clear(&handle, std::time::Duration::from_millis(timeout_ms))
        })
    }

    fn verify_storage(&self, timeout_ms: u64) -> Result<VerifyReport, WitError> {
        use cntryl_midge::EngineHealth as H;
        self.with(|e| {
            let r = e.verify_storage(std::time::Duration::from_millis(timeout_ms))?;
            Ok(VerifyReport {
                health: match r.health {
                    H::Healthy => Health::Healthy,
                    H::Degraded => Health::Degraded,
                    H::SalvageMode => Health::SalvageMode,
                    H::WriteStalled => Health::WriteStalled,
                    H::Corrupt => Health::Corrupt,
                    _ => Health::Poisoned,
                },
                manifest_files_verified: r.manifest_files_verified,
                sst_files_verified: r.sst_files_verified,
                data_blocks_verified: r.data_blocks_verified,
                bytes_verified: r.bytes_verified,
                wal_records_replayed: r.wal_recovery_records_replayed,
                authoritative: r.authoritative,
                problems: r.problems,
            })
        })
    }

    fn recovery_metrics(&self) -> Result<RecoveryMetrics, WitError> {
        self.with(|e| {
            let r = e.get_recovery_metrics()?;
            Ok(RecoveryMetrics {
                wal_records_replayed: r.wal_recovery_records_replayed,
                wal_bytes_replayed: r.wal_recovery_bytes_replayed,
                intent_log_replay_runs: r.intent_log_replay_runs,
                intent_log_entries_replayed: r.intent_log_entries_replayed,
                wal_torn_tail_bytes: r.wal_torn_tail_bytes_truncated,
                manifest_torn_edit_dropped: r.manifest_torn_edit_dropped,
                orphan_files_removed: r.orphan_files_removed,
                cloud_manifest_fetched: r.cloud_manifest_fetched,
                cloud_wal_segments_fetched: r.cloud_wal_segments_fetched,
                cloud_ssts_fetched: r.cloud_ssts_fetched,
                cloud_bytes_fetched: r.cloud_bytes_fetched,
            })
        })
    }

    fn runtime_metrics(&self) -> Result<RuntimeMetrics, WitError> {
        self.with(|e| {
            let m = e.get_runtime_metrics()?;
            Ok(RuntimeMetrics {
                current_sequence: m.current_sequence,
                commits: m.commits_total,
                wal_fsyncs: m.wal_fsync_count,
                sst_count: m.sst_count,
                flushes: m.flush_publish_count,
                compactions: m.compactions_run,
                write_stalled: m.write_stalled,
                sst_bytes: m.sst_bytes,
                wal_local_durable_seq: m.wal_local_durable_seq,
                wal_cloud_durable_seq: m.wal_cloud_durable_seq,
                cloud_wal_segments_uploaded: m.cloud_wal_segments_uploaded,
                cloud_object_puts: m.cloud_object_puts_total,
            })
        })
    }

    fn shutdown(&self) -> Result<(), WitError> {
        let mut slot = self.engine.borrow_mut();
        let engine = slot.as_mut().ok_or_else(closed)?;
        engine.shutdown(std::time::Duration::from_secs(5)).map_err(err)?;
        *slot = None;
        Ok(())
    }
}

/// A transaction's state, shared by its resource and (once it has a `short-handle`) the handle table.
type TxSlot = Rc<RefCell<Option<cntryl_midge::Transaction>>>;

/// The `transaction` resource.
pub struct Tx {
    tx: TxSlot,
    /// Its `short-handle` (0: none issued yet).
    short: Cell<u64>,
}

impl Drop for Tx {
    fn drop(&mut self) {
        if self.short.get() != 0 {
            SHORT.with_borrow_mut(|h| h.remove(self.short.get()));
        }
    }
}

/// The transactions named by a `short-handle`. A handle is a slot index (low 32 bits) and the slot's
/// generation (high 32 bits, never 0), so a handle whose transaction was dropped matches nothing, even after its
/// slot is reused.
struct ShortHandles {
    slots: Vec<(u32, Option<TxSlot>)>,
    free: Vec<u32>,
}

impl ShortHandles {
    fn insert(&mut self, tx: TxSlot) -> u64 {
        let i = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push((0, None));
                // wasm32: a slot per live transaction, far below u32::MAX.
                u32::try_from(self.slots.len() - 1).unwrap_or(u32::MAX)
            }
        };
        let slot = &mut self.slots[i as usize];
        slot.0 += 1;
        slot.1 = Some(tx);
        (u64::from(slot.0) << 32) | u64::from(i)
    }

    fn get(&self, handle: u64) -> Option<&TxSlot> {
        let (generation, i) = ((handle >> 32) as u32, handle as u32);
        match self.slots.get(i as usize) {
            Some((g, Some(tx))) if *g == generation => Some(tx),
            _ => None,
        }
    }

    fn remove(&mut self, handle: u64) {
        let (generation, i) = ((handle >> 32) as u32, handle as u32);
        if let Some(slot) = self.slots.get_mut(i as usize)
            && slot.0 == generation
            && slot.1.take().is_some()
            // A slot whose generation would wrap is retired rather than reused.
            && generation < u32::MAX
        {
            self.free.push(i);
        }
    }
}

thread_local! {
    static SHORT: RefCell<ShortHandles> = const {
        RefCell::new(ShortHandles {
            slots: Vec::new(),
            free: Vec::new(),
        })
    };
}

/// `get-short`: the value of `key[..len]` in the transaction with short handle `handle`.
fn get_short(handle: u64, len: usize, key: &[u8; 24]) -> Result<Option<Bytes>, WitError> {
    let key = key.get(..len).ok_or_else(|| {
        WitError::InvalidArgument(format!("get-short takes keys of at most 24 bytes, not {len}"))
    })?;
    SHORT.with_borrow(|h| {
        let tx = h.get(handle).ok_or_else(|| {
            WitError::InvalidArgument(format!("no live transaction has short handle {handle:#x}"))
        })?;
        let t = tx.borrow();
        t.as_ref().ok_or_else(finished)?.get(key).map_err(err)
    })
}

/// The canonical-ABI return area of `get-short` (`short-read`: a `u8` case at offset 0, then for `found` the
/// list's pointer and length at 4 and 8) and the value its `found` list points into: the engine's own `Bytes`
/// (a slice of the cached block), held rather than copied. Both stay untouched until the next `get-short`, by
/// which time the host has copied the result out (it lifts the result before the call returns to its caller),
/// so no `post-return` is needed to free anything.
struct ShortReturn {
    area: [u32; 3],
    value: Option<Bytes>,
}

thread_local! {
    static SHORT_RETURN: RefCell<ShortReturn> = const {
        RefCell::new(ShortReturn { area: [0; 3], value: None })
    };
    /// The error of the last `get-short` that returned `failed`, for `take-short-error`.
    static SHORT_ERROR: Cell<Option<WitError>> = const { Cell::new(None) };
}

/// The core export behind `get-short` (core signature `(i64, i32, i64, i64, i64) -> i32`, the result a
/// pointer to the return area). Written by hand because wit-bindgen would return a freshly allocated list
/// and export a `post-return` to free it: a second call into the component on every read. No `unsafe`
/// operation happens here; the attribute only names the export.
#[unsafe(export_name = "cntryl:midge/engine@0.1.0#get-short")]
extern "C" fn export_get_short(handle: i64, len: i32, k0: i64, k1: i64, k2: i64) -> *mut u8 {
    wit_bindgen::rt::run_ctors_once();
    let mut key = [0u8; 24];
    key[..8].copy_from_slice(&k0.to_le_bytes());
    key[8..16].copy_from_slice(&k1.to_le_bytes());
    key[16..].copy_from_slice(&k2.to_le_bytes());
    // The ABI passes a u32 as an i32 and a u64 as an i64: reinterpret, never truncate.
    let r = get_short(handle as u64, len as u32 as usize, &key);
    SHORT_RETURN.with_borrow_mut(|out| {
        out.area = match r {
            Ok(Some(v)) => {
                // wasm32: pointers and lengths are 32 bits.
                let area = [0, v.as_ptr() as u32, v.len() as u32];
                out.value = Some(v);
                area
            }
            Ok(None) => {
                out.value = None;
                [1, 0, 0]
            }
            Err(e) => {
                out.value = None;
                SHORT_ERROR.set(Some(e));
                [2, 0, 0]
            }
        };
        out.area.as_mut_ptr().cast::<u8>()
    })
}

impl Tx {
    fn with<T>(
        &self,
        f: impl FnOnce(&mut cntryl_midge::Transaction) -> Result<T, MidgeError>,
    ) -> Result<T, WitError> {
        let mut t = self.tx.borrow_mut();
        f(t.as_mut().ok_or_else(finished)?).map_err(err)
    }
}

impl GuestTransaction for Tx {
    fn put(&self, key: Vec<u8>, value: Vec<u8>, ttl_secs: Option<u64>) -> Result<(), WitError> {
        self.with(|t| t.put(key, value, ttl_secs))
    }

    fn put_many(&self, rows: Vec<(Vec<u8>, Vec<u8>)>) -> Result<(), WitError> {
        self.with(|t| rows.into_iter().try_for_each(|(k, v)| t.put(k, v, None)))
    }

    fn insert(&self, key: Vec<u8>, value: Vec<u8>, ttl_secs: Option<u64>) -> Result<(), WitError> {
        self.with(|t| t.insert(key, value, ttl_secs))
    }

    fn delete(&self, key: Vec<u8>) -> Result<(), WitError> {
        self.with(|t| t.delete(key))
    }

    fn delete_range(&self, start: Vec<u8>, end: Vec<u8>) -> Result<(), WitError> {
        self.with(|t| t.delete_range(start, end))
    }

    fn assert_value(&self, key: Vec<u8>, expected: Option<Vec<u8>>) -> Result<(), WitError> {
        self.with(|t| t.assert_value(key, expected))
    }

    fn get(&self, key: Vec<u8>) -> Result<Option<Vec<u8>>, WitError> {
        self.with(|t| Ok(t.get(&key)?.map(|b| b.to_vec())))
    }

    fn short_handle(&self) -> u64 {
        if self.short.get() == 0 {
            self.short
                .set(SHORT.with_borrow_mut(|h| h.insert(self.tx.clone())));
        }
        self.short.get()
    }

    fn get_many(&self, keys: Vec<Vec<u8>>) -> Result<Vec<Option<Vec<u8>>>, WitError> {
        self.with(|t| keys.iter().map(|k| Ok(t.get(k)?.map(|b| b.to_vec()))).collect())
    }

    fn scan(&self, q: WitQuery) -> Result<ScanIterator, WitError> {
        let mut query = cntryl_midge::Query::new();
        if let Some(s) = q.start {
            query = query.start_key(Bytes::from(s));
        }
        if let Some(e) = q.end {
            query = query.end_key(Bytes::from(e));
        }
        if let Some(p) = q.prefix {
            query = query.prefix(Bytes::from(p));
        }
        if let Some(l) = q.limit {
            query = query.limit(l as usize);
        }
        if q.reverse {
            query = query.reverse();
        }
        let it = self.with(|t| t.scan_owned(&query))?;
        Ok(ScanIterator::new(Scan { it: RefCell::new(it) }))
    }

    fn set_conflict_policy(&self, policy: WitPolicy) {
        if let Some(t) = self.tx.borrow_mut().as_mut() {
            t.set_conflict_policy(match policy {
                WitPolicy::LastWriteWins => cntryl_midge::ConflictPolicy::LastWriteWins,
                WitPolicy::AbortOnWriteConflict => cntryl_midge::ConflictPolicy::AbortOnWriteConflict,
            });
        }
    }

    fn commit(&self, durability: Durability) -> Result<(), WitError> {
        let tx = self.tx.borrow_mut().take().ok_or_else(finished)?;
        tx.commit(write_options(durability)).map_err(err)
    }

    fn commit_deferred(&self, durability: Durability) -> Result<Option<WitTicket>, WitError> {
        let tx = self.tx.borrow_mut().take().ok_or_else(finished)?;
        let t = tx.commit_deferred(write_options(durability)).map_err(err)?;
        Ok(t.map(wit_ticket))
    }

    fn rollback(&self) -> Result<(), WitError> {
        let tx = self.tx.borrow_mut().take().ok_or_else(finished)?;
        tx.rollback().map_err(err)
    }
}

fn wit_ticket(t: cntryl_midge::CommitTicket) -> WitTicket {
    WitTicket {
        log_position: t.log_position,
        first_seq: t.first_seq,
        commit_seq: t.commit_seq,
        cf: t.cf,
        rotated_memtable: t.rotated_memtable,
    }
}

fn batch_ops(ops: Vec<WitBatchOp>) -> Vec<cntryl_midge::BatchOp> {
    use cntryl_midge::BatchOp as B;
    ops.into_iter()
        .map(|op| match op {
            WitBatchOp::Put((key, value, ttl_secs)) => B::Put { key, value, ttl_secs },
            WitBatchOp::Delete(key) => B::Delete { key },
            WitBatchOp::DeleteRange((start, end)) => B::DeleteRange { start, end },
        })
        .collect()
}

fn write_options(durability: Durability) -> cntryl_midge::WriteOptions {
    match durability {
        Durability::Sync => cntryl_midge::WriteOptions::sync(),
        Durability::Buffered => cntryl_midge::WriteOptions::buffered(),
        Durability::BestEffort => cntryl_midge::WriteOptions::best_effort(),
        Durability::CloudAsync => cntryl_midge::WriteOptions::cloud_async(),
        Durability::CloudStrict => cntryl_midge::WriteOptions::cloud_strict(),
    }
}

/// A `sync-plan`: the engine's plan until `end-sync` takes it.
pub struct Plan(RefCell<Option<cntryl_midge::SyncPlan>>);

impl GuestSyncPlan for Plan {}

/// The `scan-iterator` resource.
pub struct Scan {
    it: RefCell<cntryl_midge::OwnedScanIterator>,
}

impl GuestScanIterator for Scan {
    fn next_batch(&self, max: u32) -> Result<Vec<(Vec<u8>, Vec<u8>)>, WitError> {
        let rows = self.it.borrow_mut().next_batch(max as usize).map_err(err)?;
        Ok(rows.into_iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect())
    }

    fn next_batch_flat(&self, max: u32) -> Result<Vec<u8>, WitError> {
        let rows = self.it.borrow_mut().next_batch(max as usize).map_err(err)?;
        let len = rows.iter().map(|(k, v)| 8 + k.len() + v.len()).sum();
        let mut out = Vec::with_capacity(len);
        for (k, v) in &rows {
            for part in [k, v] {
                let n = u32::try_from(part.len())
                    .map_err(|_| WitError::InvalidArgument("a row longer than 4 GiB".into()))?;
                out.extend_from_slice(&n.to_le_bytes());
                out.extend_from_slice(part);
            }
        }
        Ok(out)
    }
}
