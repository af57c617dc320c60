//! The public error type ([`MidgeError`], [`Severity`]) and the rich internal errors that map onto it.
//!
//! Internal code raises [`Corrupt`] (file/offset/expected/actual) and I/O errors; the public surface only ever
//! returns [`MidgeError`]. This module owns no I/O and no engine state.

use std::fmt;
use std::io;

/// Result alias used by every public Midge call.
pub type MidgeResult<T> = Result<T, MidgeError>;

/// How a caller should react to a [`MidgeError`].
///
/// ```
/// use cntryl_midge::{MidgeError, Severity};
/// let err = MidgeError::InvalidArgument("bad range".into());
/// assert_eq!(err.severity(), Severity::Caller);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Severity {
    /// The call was wrong (bad argument, wrong mode, missing key). Fix the call; retrying changes nothing.
    Caller,
    /// A passing fault; the same call may succeed later.
    Transient,
    /// The engine is protecting itself (stall, no space, busy, timeout); back off and retry.
    Backpressure,
    /// Another writer holds authority; this instance must stop writing.
    Fenced,
    /// A bug or an exceeded internal limit.
    Defect,
    /// Data cannot be trusted or the engine cannot continue; reopen (or restore) is required.
    Fatal,
}

/// Every error a public Midge call can return.
///
/// Variants follow the product contract; `Poisoned` is Midge's own addition: after a failed fsync the engine
/// never acknowledges another write and must be reopened.
///
/// ```
/// use cntryl_midge::{MidgeError, Severity};
/// let err = MidgeError::UnflushedDataPresent { cf_id: 3, bytes: 128 };
/// assert!(err.licenses_unflushed_discard());
/// assert_eq!(MidgeError::Poisoned("fsync failed".into()).severity(), Severity::Fatal);
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MidgeError {
    /// An operating-system I/O error.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// A named object (column family, file) does not exist.
    #[error("not found")]
    NotFound,
    /// A caller-supplied argument or mode is invalid.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Stored bytes failed validation (checksum, framing, bounds).
    #[error("corruption: {0}")]
    Corruption(String),
    /// The operation is not supported by this storage kind or build.
    #[error("not supported: {0}")]
    NotSupported(String),
    /// An internal invariant failed.
    #[error("internal error: {0}")]
    Internal(String),
    /// The database path is unusable.
    #[error("invalid path")]
    InvalidPath,
    /// The device is out of space.
    #[error("no space: {0}")]
    NoSpace(String),
    /// Recovery could not produce a trustworthy state.
    #[error("recovery failed: {0}")]
    RecoveryFailed(String),
    /// The stored format is not one this build reads.
    #[error("incompatible format: {0}")]
    CompatibilityError(String),
    /// Writes are stalled (memory or L0 pressure); the write did not happen.
    #[error("write stall: {0}")]
    WriteStall(String),
    /// An operation conflicts with the engine's memory mode.
    #[error("memory mode violation: {0}")]
    MemoryModeViolation(String),
    /// This instance lost writer authority.
    #[error("fenced: {0}")]
    Fenced(String),
    /// Another process holds the writer lease.
    #[error("lease held: {0}")]
    LeaseHeld(String),
    /// The lease could not be reached.
    #[error("lease unavailable: {0}")]
    LeaseUnavailable(String),
    /// Lease state is unknown.
    #[error("lease indeterminate: {0}")]
    LeaseIndeterminate(String),
    /// The lease epoch space is exhausted.
    #[error("lease epoch exhausted")]
    LeaseEpochExhausted,
    /// A commit conflicted with a newer write (AbortOnWriteConflict or assert_value).
    #[error("write conflict: {0}")]
    WriteConflict(String),
    /// The operation was aborted.
    #[error("aborted: {0}")]
    Aborted(String),
    /// The engine is busy (live transactions, publication in flight); retry.
    #[error("busy: {0}")]
    Busy(String),
    /// The caller's wait expired; the outcome of a mutation may be unknown.
    #[error("timeout: {0}")]
    Timeout(String),
    /// An internal resource limit was exceeded.
    #[error("resource limit: {0}")]
    ResourceLimit(String),
    /// A column family still holds unflushed committed data.
    #[error("column family {cf_id} has {bytes} unflushed bytes")]
    UnflushedDataPresent {
        /// The column family.
        cf_id: u32,
        /// Bytes still in its memtable.
        bytes: usize,
    },
    /// A durability step (fsync, WAL write) failed; the engine acknowledges nothing more until reopened.
    #[error("engine poisoned: {0}")]
    Poisoned(String),
}

impl MidgeError {
    /// How the caller should react to this error.
    pub fn severity(&self) -> Severity {
        use MidgeError::*;
        match self {
            NotFound
            | InvalidArgument(_)
            | NotSupported(_)
            | InvalidPath
            | MemoryModeViolation(_)
            | WriteConflict(_)
            | UnflushedDataPresent { .. } => Severity::Caller,
            Io(_) | LeaseHeld(_) | LeaseUnavailable(_) | Aborted(_) => Severity::Transient,
            NoSpace(_) | WriteStall(_) | Busy(_) | Timeout(_) => Severity::Backpressure,
            Fenced(_) | LeaseEpochExhausted | LeaseIndeterminate(_) => Severity::Fenced,
            Internal(_) | ResourceLimit(_) => Severity::Defect,
            Corruption(_) | RecoveryFailed(_) | CompatibilityError(_) | Poisoned(_) => Severity::Fatal,
        }
    }

    /// True only for [`MidgeError::UnflushedDataPresent`], the one error that licenses a destructive drop.
    pub fn licenses_unflushed_discard(&self) -> bool {
        matches!(self, MidgeError::UnflushedDataPresent { .. })
    }

    /// The variant's stable name (used across the WIT boundary and in JSON reports).
    pub fn kind_name(&self) -> &'static str {
        use MidgeError::*;
        match self {
            Io(_) => "io",
            NotFound => "not-found",
            InvalidArgument(_) => "invalid-argument",
            Corruption(_) => "corruption",
            NotSupported(_) => "not-supported",
            Internal(_) => "internal",
            InvalidPath => "invalid-path",
            NoSpace(_) => "no-space",
            RecoveryFailed(_) => "recovery-failed",
            CompatibilityError(_) => "compatibility-error",
            WriteStall(_) => "write-stall",
            MemoryModeViolation(_) => "memory-mode-violation",
            Fenced(_) => "fenced",
            LeaseHeld(_) => "lease-held",
            LeaseUnavailable(_) => "lease-unavailable",
            LeaseIndeterminate(_) => "lease-indeterminate",
            LeaseEpochExhausted => "lease-epoch-exhausted",
            WriteConflict(_) => "write-conflict",
            Aborted(_) => "aborted",
            Busy(_) => "busy",
            Timeout(_) => "timeout",
            ResourceLimit(_) => "resource-limit",
            UnflushedDataPresent { .. } => "unflushed-data-present",
            Poisoned(_) => "poisoned",
        }
    }

    /// Maps an I/O error, turning "no space" into [`MidgeError::NoSpace`].
    pub(crate) fn from_io(context: &str, err: io::Error) -> MidgeError {
        if is_no_space(&err) {
            return MidgeError::NoSpace(format!("{context}: {err}"));
        }
        MidgeError::Io(io::Error::new(err.kind(), format!("{context}: {err}")))
    }

    /// A cheap structural copy (io errors keep kind and message). Used to replay a failed iterator's error.
    pub fn duplicate(&self) -> MidgeError {
        use MidgeError::*;
        match self {
            Io(e) => Io(io::Error::new(e.kind(), e.to_string())),
            NotFound => NotFound,
            InvalidArgument(s) => InvalidArgument(s.clone()),
            Corruption(s) => Corruption(s.clone()),
            NotSupported(s) => NotSupported(s.clone()),
            Internal(s) => Internal(s.clone()),
            InvalidPath => InvalidPath,
            NoSpace(s) => NoSpace(s.clone()),
            RecoveryFailed(s) => RecoveryFailed(s.clone()),
            CompatibilityError(s) => CompatibilityError(s.clone()),
            WriteStall(s) => WriteStall(s.clone()),
            MemoryModeViolation(s) => MemoryModeViolation(s.clone()),
            Fenced(s) => Fenced(s.clone()),
            LeaseHeld(s) => LeaseHeld(s.clone()),
            LeaseUnavailable(s) => LeaseUnavailable(s.clone()),
            LeaseIndeterminate(s) => LeaseIndeterminate(s.clone()),
            LeaseEpochExhausted => LeaseEpochExhausted,
            WriteConflict(s) => WriteConflict(s.clone()),
            Aborted(s) => Aborted(s.clone()),
            Busy(s) => Busy(s.clone()),
            Timeout(s) => Timeout(s.clone()),
            ResourceLimit(s) => ResourceLimit(s.clone()),
            UnflushedDataPresent { cf_id, bytes } => UnflushedDataPresent {
                cf_id: *cf_id,
                bytes: *bytes,
            },
            Poisoned(s) => Poisoned(s.clone()),
        }
    }
}

fn is_no_space(err: &io::Error) -> bool {
    if err.kind() == io::ErrorKind::StorageFull {
        return true;
    }
    if err.raw_os_error() == Some(28) {
        return true;
    }
    let msg = err.to_string().to_ascii_lowercase();
    msg.contains("no space") || msg.contains("disk full")
}

/// What kind of stored file a [`Corrupt`] error refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileKind {
    Wal,
    Sst,
    Manifest,
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileKind::Wal => "wal",
            FileKind::Sst => "sst",
            FileKind::Manifest => "manifest",
        })
    }
}

/// A rich internal corruption report: which file, where, what was expected and what was found.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{kind} file {file} at offset {offset}: expected {expected}, found {actual}")]
pub(crate) struct Corrupt {
    pub kind: FileKind,
    pub file: String,
    pub offset: u64,
    pub expected: String,
    pub actual: String,
}

impl Corrupt {
    pub fn new(
        kind: FileKind,
        file: impl Into<String>,
        offset: u64,
        expected: impl Into<String>,
        actual: impl Into<String>,
    ) -> Corrupt {
        Corrupt {
            kind,
            file: file.into(),
            offset,
            expected: expected.into(),
            actual: actual.into(),
        }
    }
}

impl From<Corrupt> for MidgeError {
    fn from(c: Corrupt) -> MidgeError {
        MidgeError::Corruption(c.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_space_io_errors_map_to_no_space() {
        let e = MidgeError::from_io("wal append", io::Error::from_raw_os_error(28));
        assert!(matches!(e, MidgeError::NoSpace(_)));
        assert_eq!(e.severity(), Severity::Backpressure);
        let e = MidgeError::from_io("wal append", io::Error::other("boom"));
        assert!(matches!(e, MidgeError::Io(_)));
    }

    #[test]
    fn duplicate_keeps_variant_and_message() {
        let e = MidgeError::Corruption("block 3".into());
        let d = e.duplicate();
        assert_eq!(e.to_string(), d.to_string());
        assert_eq!(e.kind_name(), d.kind_name());
    }
}
