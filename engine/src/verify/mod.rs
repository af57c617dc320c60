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
    let stats = std::sync::Arc::new(crate::sst::SstStats::default());
    for meta in loaded.state.files.values() {
        let path = crate::core::lsm::sst_path(meta.id);
        let checked = fs
            .open(&path, crate::storage::OpenMode::Read)
            .map_err(|e| MidgeError::from_io(&path, e))
            .and_then(|f| {
                if f.len().map_err(|e| MidgeError::from_io(&path, e))? != meta.size {
                    return Err(MidgeError::Corruption(format!(
                        "{path}: size differs from the manifest"
                    )));
                }
                crate::sst::SstReader::open(f, path.clone(), meta.id, None, stats.clone())?.verify()
            });
        match checked {
            Ok(s) => {
                report.sst_files_verified += 1;
                report.data_blocks_verified += s.data_blocks;
                report.bytes_verified += s.bytes;
            }
            Err(e) => {
                report.problems.push(e.to_string());
                report.health = EngineHealth::Corrupt;
            }
        }
    }
    let live: std::collections::BTreeSet<u64> = loaded.state.files.keys().copied().collect();
    if let Ok(names) = fs.list(crate::core::lsm::SST_DIR) {
        for n in names {
            if crate::core::lsm::parse_sst_name(&n).is_none_or(|id| !live.contains(&id)) {
                report.problems.push(format!(
                    "orphan file sst/{n} (not in the manifest; removed at next open)"
                ));
                if report.health == EngineHealth::Healthy {
                    report.health = EngineHealth::Degraded;
                }
            }
        }
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
