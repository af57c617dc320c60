//! Verification: checks the format marker, manifest and WAL of a database without changing anything.
//!
//! Never repairs and never mutates: the WAL is replayed read-only under the Strict rules. SST checks join here
//! when SST files are live.

use crate::core::open::check_format;
use crate::error::{MidgeError, MidgeResult};
use crate::manifest;
use crate::metrics::{EngineHealth, StorageVerificationReport};
use crate::options::RecoveryPolicy;
use crate::storage::SharedFs;
use crate::wal;

/// Verifies everything reachable through `fs`. `health` is the caller's current view (online) or Healthy.
pub(crate) fn verify_fs(fs: &SharedFs, health: EngineHealth) -> MidgeResult<StorageVerificationReport> {
    if check_format(fs)?.is_none() {
        return Err(MidgeError::NotFound);
    }
    let loaded = manifest::load(fs)?;
    let mut report = StorageVerificationReport {
        manifest_epoch: loaded.number,
        manifest_files_verified: loaded.state.files.len() as u64,
        authoritative: true,
        health,
        ..Default::default()
    };
    if loaded.torn_tail {
        report.problems.push(format!(
            "manifest MANIFEST-{:06} ends in a torn edit (ignored; rewritten at next open); {} edits valid",
            loaded.number, loaded.edits
        ));
        report.health = EngineHealth::Degraded;
    }
    let rep = wal::replay(fs, RecoveryPolicy::Strict, false, |_| Ok(()));
    match rep {
        Ok(r) => {
            report.wal_boundary = (r.max_seq > 0).then_some(r.max_seq);
            report.wal_recovery_records_replayed = r.records;
            report.wal_recovery_bytes_replayed = r.bytes;
            report.bytes_verified += r.bytes;
            if r.torn_tail_bytes > 0 {
                report.problems.push(format!(
                    "WAL has a torn tail of {} bytes (repaired at next open)",
                    r.torn_tail_bytes
                ));
                if report.health == EngineHealth::Healthy {
                    report.health = EngineHealth::Degraded;
                }
            }
        }
        Err(e) => {
            report.problems.push(e.to_string());
            report.health = EngineHealth::Corrupt;
        }
    }
    Ok(report)
}
