//! Midge (`cntryl-midge`): an embedded LSM key-value engine with explicit, tested durability — linked
//! natively, or loaded as a WASI Preview 2 component, with the same bytes on disk and the same guarantees.
//!
//! What `commit()` means is chosen per commit with [`WriteOptions`]: `sync()` returns only after an fsync that
//! covers the transaction (concurrent committers share it), `buffered()` after the WAL append (fsynced within a
//! bounded window), `best_effort()` after the memtable apply. See `docs/durability.md`.
//!
//! # Quick start
//!
//! ```
//! # let _ = std::fs::remove_dir_all("./db");
//! use cntryl_midge::prelude::*;
//! use cntryl_midge::Bytes;
//! let engine = Engine::open(OpenOptions::local("./db").build())?;
//! let cf = engine.create_column_family("cf1")?;
//! let mut tx = engine.begin_tx(cf.id(), TransactionMode::ReadWrite)?;
//! tx.put(b"hello".to_vec(), b"world".to_vec(), None)?;
//! tx.commit(WriteOptions::sync())?;
//! let tx = engine.begin_tx(cf.id(), TransactionMode::ReadOnly)?;
//! let value = tx.get(b"hello")?;
//! # assert_eq!(value.as_deref(), Some(&b"world"[..]));
//! # drop(tx); drop(engine); std::fs::remove_dir_all("./db")?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Put
//!
//! ```
//! # use cntryl_midge::prelude::*;
//! # let engine = Engine::open(OpenOptions::in_memory().build())?;
//! # let cf = engine.get_column_family("default").unwrap();
//! let mut tx = engine.begin_tx(cf.id(), TransactionMode::ReadWrite)?;
//! tx.put(b"key".to_vec(), b"value".to_vec(), None)?;
//! tx.commit(WriteOptions::sync())?;
//! # Ok::<(), MidgeError>(())
//! ```
//!
//! # Get
//!
//! ```
//! # use cntryl_midge::prelude::*;
//! # let engine = Engine::open(OpenOptions::in_memory().build())?;
//! # let cf = engine.get_column_family("default").unwrap();
//! # let mut tx = engine.begin_tx(cf.id(), TransactionMode::ReadWrite)?;
//! # tx.put(b"key".to_vec(), b"value".to_vec(), None)?;
//! # tx.commit(WriteOptions::sync())?;
//! let tx = engine.begin_tx(cf.id(), TransactionMode::ReadOnly)?;
//! let value = tx.get(b"key")?;
//! # assert_eq!(value.as_deref(), Some(&b"value"[..]));
//! # Ok::<(), MidgeError>(())
//! ```
//!
//! # Delete
//!
//! ```
//! # use cntryl_midge::prelude::*;
//! # let engine = Engine::open(OpenOptions::in_memory().build())?;
//! # let cf = engine.get_column_family("default").unwrap();
//! let mut tx = engine.begin_tx(cf.id(), TransactionMode::ReadWrite)?;
//! tx.delete(b"key".to_vec())?;
//! tx.commit(WriteOptions::sync())?;
//! # Ok::<(), MidgeError>(())
//! ```
//!
//! # Delete range
//!
//! `delete_range(start, end)` deletes `[start, end)` in bytewise order. The product README's example passes
//! `b"start"` and `b"end"`, and `"start" > "end"` bytewise, so Midge rejects it with a typed
//! `InvalidArgument` rather than silently deleting nothing (the snippet below is verbatim and checks that):
//!
//! ```
//! # use cntryl_midge::prelude::*;
//! # let engine = Engine::open(OpenOptions::in_memory().build())?;
//! # let cf = engine.get_column_family("default").unwrap();
//! # let result = (|| -> MidgeResult<()> {
//! let mut tx = engine.begin_tx(cf.id(), TransactionMode::ReadWrite)?;
//! tx.delete_range(b"start".to_vec(), b"end".to_vec())?;
//! tx.commit(WriteOptions::sync())?;
//! # Ok(()) })();
//! # assert!(matches!(result, Err(MidgeError::InvalidArgument(_))));
//! # Ok::<(), MidgeError>(())
//! ```
//!
//! With the bounds in order it deletes every key in the range:
//!
//! ```
//! # use cntryl_midge::prelude::*;
//! # let engine = Engine::open(OpenOptions::in_memory().build())?;
//! # let cf = engine.get_column_family("default").unwrap();
//! let mut tx = engine.begin_tx(cf.id(), TransactionMode::ReadWrite)?;
//! tx.delete_range(b"a".to_vec(), b"m".to_vec())?;
//! tx.commit(WriteOptions::sync())?;
//! # Ok::<(), MidgeError>(())
//! ```
//!
//! # Scan
//!
//! ```
//! # use cntryl_midge::prelude::*;
//! # use cntryl_midge::Bytes;
//! # let engine = Engine::open(OpenOptions::in_memory().build())?;
//! # let cf = engine.get_column_family("default").unwrap();
//! let tx = engine.begin_tx(cf.id(), TransactionMode::ReadOnly)?;
//! let query = Query::new().prefix(Bytes::from_static(b"user:"));
//! let mut iter = tx.scan(&query)?;
//! while let Some((k, v)) = iter.next() {
//! println!("{:?} = {:?}", k, v);
//! }
//! # iter.status()?;
//! # Ok::<(), MidgeError>(())
//! ```
//!
//! # Metrics
//!
//! ```
//! # use cntryl_midge::prelude::*;
//! # let engine = Engine::open(OpenOptions::in_memory().build())?;
//! let recovery = engine.get_recovery_metrics()?;
//! println!("WAL records replayed: {}", recovery.wal_recovery_records_replayed);
//! println!("WAL bytes replayed: {}", recovery.wal_recovery_bytes_replayed);
//! println!("Intent replay runs: {}", recovery.intent_log_replay_runs);
//! println!("Intent entries replayed: {}", recovery.intent_log_entries_replayed);
//! let runtime = engine.get_runtime_metrics()?;
//! println!("Health: {:?}", runtime.health);
//! println!("Current sequence: {}", runtime.current_sequence);
//! println!("Write stalled: {}", runtime.write_stalled);
//! # Ok::<(), MidgeError>(())
//! ```
#![warn(missing_docs)]

mod api;
mod cloud;
mod codec;
mod compaction;
mod core;
mod error;
mod iter;
mod manifest;
mod memtable;
mod metrics;
mod options;
pub mod runtime;
mod sst;
pub mod storage;
mod txn;
mod types;
mod verify;
mod wal;

pub use crate::core::{CommitTicket, SyncPlan};
pub use api::{
    BatchOp, ColumnFamilyHandle, Direction, Engine, IteratorState, OwnedScanIterator, Query, ScanIterator,
    Transaction,
};
pub use bytes::{Bytes, BytesMut};
/// How many times cloud mode issues one object-store request before reporting a transient or ambiguous failure
/// as a typed error (idempotent requests are reissued; conditional puts are reconciled by reading back).
///
/// ```
/// assert!(cntryl_midge::CLOUD_REQUEST_ATTEMPTS >= 2);
/// ```
pub use cloud::ATTEMPTS as CLOUD_REQUEST_ATTEMPTS;
pub use error::{MidgeError, MidgeResult, Severity};
pub use metrics::{
    EngineHealth, ReadAmpMetricsSnapshot, RecoveryMetricsSnapshot, RuntimeMetricsSnapshot,
    SnapshotPinSnapshot, StorageFileLayout, StorageLayoutLevel, StorageLayoutSnapshot,
    StorageVerificationReport,
};
pub use options::{
    BlockCachePolicy, CloudCache, DurabilityPolicy, Goal, IntoOpenOptions, MemoryBudget, OpenOptions,
    OpenOptionsBuilder, RecoveryPolicy, Storage, WorkloadProfile, WriteOptions,
};
pub use runtime::{Clock, ManualClock, SystemClock};
pub use txn::{ConflictPolicy, TransactionMode};
pub use types::{ColumnFamilyId, MAX_KEY_SIZE, MAX_VALUE_SIZE};

/// A key (cheaply cloneable bytes).
pub type Key = Bytes;
/// A value (cheaply cloneable bytes).
pub type Value = Bytes;

/// The names most programs need: `use cntryl_midge::prelude::*;`.
pub mod prelude {
    pub use crate::{
        ColumnFamilyId, ConflictPolicy, Direction, Engine, IteratorState, Key, MidgeError, MidgeResult,
        OpenOptions, Query, ScanIterator, Storage, Transaction, TransactionMode, Value, WriteOptions,
    };
}
