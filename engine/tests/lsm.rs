//! LSM behaviour: flush to L0, leveled compaction, reads across memtable/L0/L1+, reopen from SSTs with WAL
//! released, verification, corruption detection, orphan cleanup, and write stalls.
#![allow(clippy::disallowed_methods)] // tests drive real threads, files and clocks

use cntryl_midge::prelude::*;
use cntryl_midge::{Bytes, ColumnFamilyHandle, EngineHealth, MidgeError};
use std::path::Path;
use std::sync::Arc;

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir_in(std::env::var("TMPDIR").unwrap_or_else(|_| "/tmp".into())).unwrap()
}

fn tiny(path: &Path) -> OpenOptions {
    OpenOptions::local(path)
        .with_memtable_size_limit(16 << 10)
        .with_l0_compaction_trigger(3)
        .with_target_sst_size(32 << 10)
        .executor(Arc::new(cntryl_midge::runtime::InlineExecutor))
        .build()
        .unwrap()
}

/// An engine on `path` with default options and no background threads (work runs inline, deterministically).
fn inline(path: &Path) -> Engine {
    Engine::open(
        OpenOptions::local(path)
            .executor(Arc::new(cntryl_midge::runtime::InlineExecutor))
            .build()
            .unwrap(),
    )
    .unwrap()
}

fn load(engine: &Engine, n: u32, round: u32) {
    for chunk in 0..(n / 50) {
        let mut tx = engine.begin_tx(0, TransactionMode::ReadWrite).unwrap();
        for i in chunk * 50..(chunk + 1) * 50 {
            let k = format!("key{:06}", (i * 7919) % n);
            tx.put(
                k.into_bytes(),
                format!("v{round}-{i}-{}", "x".repeat(40)).into_bytes(),
                None,
            )
            .unwrap();
        }
        tx.commit(WriteOptions::buffered()).unwrap();
    }
}

fn all_rows(engine: &Engine) -> Vec<(Bytes, Bytes)> {
    let tx = engine.begin_tx(0, TransactionMode::ReadOnly).unwrap();
    tx.scan(&Query::new()).unwrap().try_collect().unwrap()
}

#[test]
fn flush_and_compaction_keep_every_row_and_survive_reopen() {
    let dir = tmp();
    let n = 4000;
    let expected;
    {
        let engine = Engine::open(tiny(dir.path())).unwrap();
        load(&engine, n, 1);
        load(&engine, n, 2);
        let mut tx = engine.begin_tx(0, TransactionMode::ReadWrite).unwrap();
        tx.delete_range(b"key001000".to_vec(), b"key002000".to_vec())
            .unwrap();
        tx.delete(b"key000007".to_vec()).unwrap();
        tx.commit(WriteOptions::sync()).unwrap();
        let m = engine.get_runtime_metrics().unwrap();
        assert!(
            m.flush_publish_count > 5,
            "tiny memtables flush often: {}",
            m.flush_publish_count
        );
        assert!(m.compactions_run > 0, "L0 trigger 3 forces compactions");
        let layout = engine.get_storage_layout().unwrap();
        assert!(
            layout.levels.iter().any(|l| l.level >= 1),
            "data moved below L0: {:?}",
            layout
                .levels
                .iter()
                .map(|l| (l.level, l.file_count))
                .collect::<Vec<_>>()
        );
        assert!(
            m.wal_segments <= 3,
            "flushed WAL segments are released: {}",
            m.wal_segments
        );
        expected = all_rows(&engine);
        assert_eq!(expected.len(), n as usize - 1000 - 1);
        assert!(
            expected.iter().all(|(_, v)| v.starts_with(b"v2-")),
            "newest version wins"
        );
        let rev: Vec<_> = {
            let tx = engine.begin_tx(0, TransactionMode::ReadOnly).unwrap();
            tx.scan(&Query::new().reverse()).unwrap().try_collect().unwrap()
        };
        assert_eq!(rev.into_iter().rev().collect::<Vec<_>>(), expected);
        engine.compact_all().unwrap();
        assert_eq!(all_rows(&engine), expected, "compact_all changes no visible row");
        let layout = engine.get_storage_layout().unwrap();
        assert!(
            layout.levels.iter().all(|l| l.level != 0),
            "compact_all empties L0"
        );
        let report = engine.verify_storage(std::time::Duration::from_secs(30)).unwrap();
        assert_eq!(report.health, EngineHealth::Healthy, "{:?}", report.problems);
        assert!(report.sst_files_verified > 0 && report.data_blocks_verified > report.sst_files_verified);
    }
    let engine = Engine::open(tiny(dir.path())).unwrap();
    assert_eq!(all_rows(&engine), expected);
    let tx = engine.begin_tx(0, TransactionMode::ReadOnly).unwrap();
    assert_eq!(
        tx.get(b"key001500").unwrap(),
        None,
        "range delete persisted through compaction"
    );
    assert_eq!(tx.get(b"key000007").unwrap(), None);
    assert!(tx.get(b"key003999").unwrap().unwrap().starts_with(b"v2-"));
    let m = engine.get_runtime_metrics().unwrap();
    assert!(m.sst_bloom_checks_total > 0);
    for i in (0..4000).step_by(13) {
        let _ = tx.get(format!("key{i:06}").as_bytes()).unwrap();
    }
    let ra = engine.get_read_amp_metrics().unwrap();
    let files = engine.get_runtime_metrics().unwrap().sst_count as f64;
    assert!(ra.reads_total > 300);
    assert!(ra.avg_ssts_per_read <= files, "{ra:?}");
    assert!(
        ra.avg_l0_ssts_per_read <= 3.0,
        "L0 stays bounded by the trigger: {ra:?}"
    );
    assert!(
        m.wal_recovery_records_replayed < 10,
        "reopen replays only the unflushed tail"
    );
}

#[test]
fn snapshots_keep_their_view_across_flush_and_compaction() {
    let dir = tmp();
    let engine = Engine::open(tiny(dir.path())).unwrap();
    load(&engine, 1000, 1);
    let old = engine.begin_tx(0, TransactionMode::ReadOnly).unwrap();
    let before: Vec<_> = old.scan(&Query::new()).unwrap().try_collect().unwrap();
    load(&engine, 1000, 2);
    let mut tx = engine.begin_tx(0, TransactionMode::ReadWrite).unwrap();
    tx.delete_range(b"key000000".to_vec(), b"key000500".to_vec())
        .unwrap();
    tx.commit(WriteOptions::sync()).unwrap();
    engine
        .flush_cf(&engine.get_column_family("default").unwrap())
        .unwrap();
    engine.compact_all().unwrap();
    let after: Vec<_> = old.scan(&Query::new()).unwrap().try_collect().unwrap();
    assert_eq!(before, after, "a live snapshot still sees exactly its versions");
    assert_eq!(old.get(b"key000001").unwrap().unwrap(), before[1].1);
    drop(old);
    assert_eq!(all_rows(&engine).len(), 500);
}

/// A flush writes only what some snapshot can still see: versions shadowed within the memtable and versions its
/// own range tombstones hide are dropped unless a live snapshot needs them.
#[test]
fn a_flush_drops_versions_no_snapshot_can_see() {
    let flushed_bytes = |keep_snapshot: bool| {
        let dir = tmp();
        let engine = inline(dir.path());
        load(&engine, 2000, 1);
        let snap = engine.begin_tx(0, TransactionMode::ReadOnly).unwrap();
        let before: Vec<_> = snap.scan(&Query::new()).unwrap().try_collect().unwrap();
        load(&engine, 2000, 2);
        let mut tx = engine.begin_tx(0, TransactionMode::ReadWrite).unwrap();
        tx.delete_range(b"key000000".to_vec(), b"key001000".to_vec())
            .unwrap();
        tx.commit(WriteOptions::buffered()).unwrap();
        let snap = keep_snapshot.then_some(snap);
        engine
            .flush_cf(&engine.get_column_family("default").unwrap())
            .unwrap();
        let layout = engine.get_storage_layout().unwrap();
        assert_eq!(layout.levels.len(), 1, "one flush into L0: {layout:?}");
        if let Some(snap) = &snap {
            let after: Vec<_> = snap.scan(&Query::new()).unwrap().try_collect().unwrap();
            assert_eq!(
                before, after,
                "the snapshot still sees its versions after the flush"
            );
        }
        drop(snap);
        let rows = all_rows(&engine);
        assert_eq!(rows.len(), 1000);
        assert!(
            rows.iter()
                .all(|(k, v)| k.as_ref() >= b"key001000".as_slice() && v.starts_with(b"v2-"))
        );
        // Reopened from the table alone (the log was released by the flush).
        drop(engine);
        let engine = Engine::open(OpenOptions::local(dir.path()).build().unwrap()).unwrap();
        assert_eq!(all_rows(&engine), rows);
        layout.levels[0].total_bytes
    };
    let (gc, kept) = (flushed_bytes(false), flushed_bytes(true));
    // 1,000 live rows against 4,000 versions.
    assert!(
        gc * 3 < kept,
        "flushed {gc} bytes without a snapshot, {kept} with one"
    );
}

/// A flush (and `compact_all`) puts the blocks it writes into the block cache: the first reads of a fresh
/// table read no block from the file (a reopened engine does).
#[test]
fn a_flushed_table_is_read_from_the_block_cache_first() {
    let dir = tmp();
    let open = || inline(dir.path());
    let blocks_read = |e: &Engine| {
        let tx = e.begin_tx(0, TransactionMode::ReadOnly).unwrap();
        for i in (0..2000).step_by(7) {
            assert!(tx.get(format!("key{i:06}").as_bytes()).unwrap().is_some());
        }
        e.get_read_amp_metrics().unwrap().blocks_read_total
    };
    let engine = open();
    load(&engine, 2000, 1);
    engine
        .flush_cf(&engine.get_column_family("default").unwrap())
        .unwrap();
    assert_eq!(blocks_read(&engine), 0, "every block came from the cache");
    drop(engine);
    let engine = open();
    let cold = blocks_read(&engine);
    assert!(cold > 0, "a reopened engine starts cold");
    // An explicit full compaction hands its outputs to the cache as well.
    engine.compact_all().unwrap();
    assert_eq!(
        blocks_read(&engine),
        cold,
        "compact_all's blocks came from the cache"
    );
}

/// A table of 2,000 keys (flushed straight to L1, nothing under it) and two L0 tables over the same range with a
/// newer version of every 100th key (+2 and +3): most reads find their key in the oldest table.
fn overlapping_tables(engine: &Engine, cf: &ColumnFamilyHandle) {
    load(engine, 2000, 1);
    engine.flush_cf(cf).unwrap();
    for round in 2..=3u32 {
        let mut tx = engine.begin_tx(0, TransactionMode::ReadWrite).unwrap();
        for i in (0..2000u32).step_by(100) {
            tx.put(
                format!("key{:06}", i + round).into_bytes(),
                format!("v{round}").into_bytes(),
                None,
            )
            .unwrap();
        }
        tx.commit(WriteOptions::buffered()).unwrap();
        engine.flush_cf(cf).unwrap();
    }
}

/// L0 files of the default column family.
fn l0_files(e: &Engine) -> u64 {
    e.get_storage_layout()
        .unwrap()
        .levels
        .iter()
        .filter(|l| l.level == 0)
        .map(|l| l.file_count)
        .sum::<u64>()
}

/// Reads that keep consulting overlapping L0 tables pay for folding L0 into L1 although L0 is below its
/// file-count trigger; every read answers correctly before, during and after.
#[test]
fn reads_over_overlapping_l0_tables_trigger_their_compaction() {
    let dir = tmp();
    let engine = Engine::open(
        OpenOptions::local(dir.path())
            .with_l0_compaction_trigger(4)
            .build()
            .unwrap(),
    )
    .unwrap();
    let cf = engine.get_column_family("default").unwrap();
    overlapping_tables(&engine, &cf);
    let want = |i: u32| match i % 100 {
        2 => "v2".to_string(),
        3 => "v3".to_string(),
        _ => String::new(),
    };
    // The first flush had no table under it and went straight to L1; the other two overlap it.
    assert_eq!(
        l0_files(&engine),
        2,
        "below the trigger, nothing compacts by itself"
    );
    // Commits probe the tables for conflicts on keys inside their range; that is a write load, not reads to
    // pay for a compaction.
    for i in 0..5000u32 {
        let mut tx = engine.begin_tx(0, TransactionMode::ReadWrite).unwrap();
        tx.set_conflict_policy(cntryl_midge::ConflictPolicy::AbortOnWriteConflict);
        tx.put(format!("key{:06}w", i % 1999).into_bytes(), b"w".to_vec(), None)
            .unwrap();
        tx.commit(WriteOptions::buffered()).unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(l0_files(&engine), 2, "commits alone trigger no read compaction");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut reads = 0u64;
    while l0_files(&engine) > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no read-triggered compaction after {reads} reads"
        );
        let tx = engine.begin_tx(0, TransactionMode::ReadOnly).unwrap();
        for i in 0..2000u32 {
            let v = tx.get(format!("key{i:06}").as_bytes()).unwrap().unwrap();
            match want(i) {
                w if w.is_empty() => assert!(v.starts_with(b"v1-"), "key {i}"),
                w => assert_eq!(v, w.as_bytes(), "the newest version of key {i}"),
            }
            reads += 1;
        }
    }
    assert!(reads >= 64, "it took reads to pay for it");
    // The manifest (which the layout reports) is edited just before the in-memory table set is swapped:
    // poll until reads see the new set.
    let touched_per_100 = || {
        let before = engine.get_read_amp_metrics().unwrap().ssts_touched_total;
        let tx = engine.begin_tx(0, TransactionMode::ReadOnly).unwrap();
        for i in 0..100 {
            assert!(tx.get(format!("key{i:06}").as_bytes()).unwrap().is_some());
        }
        engine.get_read_amp_metrics().unwrap().ssts_touched_total - before
    };
    while touched_per_100() != 100 {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            engine.get_storage_layout().unwrap().levels
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// With an inline executor (wasm32) reads never compact — the compaction would run inside a read — but what
/// they pay for is kept: `run_pending_work` (an embedder's idle hook) folds L0 then, and reads consult one table.
#[test]
fn inline_reads_leave_their_paid_compaction_pending_for_run_pending_work() {
    let dir = tmp();
    let engine = Engine::open(
        OpenOptions::local(dir.path())
            .with_l0_compaction_trigger(4)
            .executor(Arc::new(cntryl_midge::runtime::InlineExecutor))
            .build()
            .unwrap(),
    )
    .unwrap();
    let cf = engine.get_column_family("default").unwrap();
    overlapping_tables(&engine, &cf);
    // The first flush had no table under it and went straight to L1; the other two overlap it.
    assert_eq!(l0_files(&engine), 2);
    assert!(!engine.run_pending_work().unwrap(), "nothing is due before reads");
    let read_all = |e: &Engine| {
        let tx = e.begin_tx(0, TransactionMode::ReadOnly).unwrap();
        for i in 0..2000u32 {
            let v = tx.get(format!("key{i:06}").as_bytes()).unwrap().unwrap();
            match i % 100 {
                r @ (2 | 3) => assert_eq!(v, format!("v{r}").as_bytes(), "key {i}"),
                _ => assert!(v.starts_with(b"v1-"), "key {i}"),
            }
        }
    };
    // Far more reads than it takes to pay for the fold; none of them compacts.
    for _ in 0..20 {
        read_all(&engine);
    }
    let m = engine.get_runtime_metrics().unwrap();
    assert_eq!(m.compactions_run, 0, "no read ran a compaction");
    assert_eq!(l0_files(&engine), 2);
    assert!(
        engine.run_pending_work().unwrap(),
        "the fold the reads paid for runs now"
    );
    assert_eq!(
        l0_files(&engine),
        0,
        "{:?}",
        engine.get_storage_layout().unwrap().levels
    );
    assert!(!engine.run_pending_work().unwrap(), "and only once");
    let before = engine.get_read_amp_metrics().unwrap();
    read_all(&engine);
    let after = engine.get_read_amp_metrics().unwrap();
    assert_eq!(
        after.ssts_touched_total - before.ssts_touched_total,
        2000,
        "each read consults one table"
    );
    assert_eq!(after.l0_ssts_touched_total, before.l0_ssts_touched_total);
}

/// A background compaction keeps warm data warm: when its inputs' blocks are cached (flushes filled them),
/// its outputs' blocks go into the cache as they are written, so reads after it read no block from the file.
/// It fills only as many bytes as its inputs held: after a reopen (a cold cache) most of its output stays
/// on disk until a read wants it.
#[test]
fn a_compaction_keeps_cached_inputs_cached_and_cold_ones_cold() {
    let dir = tmp();
    let open = || {
        Engine::open(
            OpenOptions::local(dir.path())
                .with_l0_compaction_trigger(2)
                .executor(Arc::new(cntryl_midge::runtime::InlineExecutor))
                .build()
                .unwrap(),
        )
        .unwrap()
    };
    // Reads every key; returns the blocks these reads took from files and the compactions run so far.
    let read_all = |e: &Engine| {
        let before = e.get_runtime_metrics().unwrap().sst_data_blocks_read_total;
        let tx = e.begin_tx(0, TransactionMode::ReadOnly).unwrap();
        for i in 0..4000 {
            assert!(tx.get(format!("key{i:06}").as_bytes()).unwrap().is_some());
        }
        let m = e.get_runtime_metrics().unwrap();
        (m.sst_data_blocks_read_total - before, m.compactions_run)
    };
    // Two flushes that overlap what is in L1 (every `step`th key): L0 reaches its trigger and is merged.
    let flush_rounds = |e: &Engine, first: u32, step: usize| {
        let cf = e.get_column_family("default").unwrap();
        for round in first..first + 2 {
            let mut tx = e.begin_tx(0, TransactionMode::ReadWrite).unwrap();
            for i in (0..4000).step_by(step) {
                let v = format!("v{round}-{i}-{}", "y".repeat(40));
                tx.put(format!("key{i:06}").into_bytes(), v.into_bytes(), None)
                    .unwrap();
            }
            tx.commit(WriteOptions::buffered()).unwrap();
            e.flush_cf(&cf).unwrap();
        }
        // No read has charged L0 yet: only the file-count trigger's compaction is due.
        assert!(e.run_pending_work().unwrap());
        assert_eq!(l0_files(e), 0, "the trigger merged L0 into L1");
    };
    let engine = open();
    load(&engine, 4000, 1);
    engine
        .flush_cf(&engine.get_column_family("default").unwrap())
        .unwrap();
    flush_rounds(&engine, 2, 1);
    let (blocks, compactions) = read_all(&engine);
    assert!(compactions >= 1);
    assert_eq!(blocks, 0, "every block of the merged output came from the cache");
    drop(engine);
    // Cold: the L1 table's blocks are not cached and the new L0 tables are small, so the merge fills about as
    // much as those two held.
    let engine = open();
    flush_rounds(&engine, 4, 40);
    let (blocks, compactions) = read_all(&engine);
    assert!(compactions >= 1);
    assert!(
        blocks > 0,
        "a merge of cold inputs leaves part of its output uncached"
    );
}

#[test]
fn corrupt_sst_bytes_are_reported_by_verify_and_reads_never_return_wrong_values() {
    let dir = tmp();
    {
        let engine = Engine::open(tiny(dir.path())).unwrap();
        load(&engine, 2000, 1);
        engine
            .flush_cf(&engine.get_column_family("default").unwrap())
            .unwrap();
        engine.compact_all().unwrap();
    }
    let good = {
        let engine = Engine::open(tiny(dir.path())).unwrap();
        all_rows(&engine)
    };
    let sst = std::fs::read_dir(dir.path().join("sst"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let pristine = std::fs::read(&sst).unwrap();
    for (n, at) in (0..pristine.len()).step_by(pristine.len() / 40 + 1).enumerate() {
        let mut data = pristine.clone();
        data[at] ^= 0x5a;
        std::fs::write(&sst, &data).unwrap();
        let report = Engine::verify_path(dir.path()).unwrap();
        assert_eq!(
            report.health,
            EngineHealth::Corrupt,
            "flip {n} at {at} undetected by verify"
        );
        match Engine::open(tiny(dir.path())) {
            Err(e) => assert!(
                matches!(e, MidgeError::Corruption(_) | MidgeError::CompatibilityError(_)),
                "{e}"
            ),
            Ok(engine) => {
                let tx = engine.begin_tx(0, TransactionMode::ReadOnly).unwrap();
                let mut it = tx.scan(&Query::new()).unwrap();
                let rows: Vec<_> = it.by_ref().collect();
                if it.status().is_ok() {
                    assert_eq!(rows, good, "flip {n} at {at} silently changed data");
                } else {
                    assert!(matches!(it.status(), Err(MidgeError::Corruption(_))));
                    assert_eq!(it.state(), IteratorState::Failed);
                    assert!(
                        it.try_next().is_err(),
                        "the failure is replayed, never a clean end"
                    );
                }
                for (k, v) in good.iter().step_by(97) {
                    match tx.get(k) {
                        Ok(Some(got)) => assert_eq!(&got, v, "wrong value after flip at {at}"),
                        Ok(None) => panic!("flip at {at}: a row vanished without an error"),
                        Err(e) => assert!(matches!(e, MidgeError::Corruption(_)), "{e}"),
                    }
                }
            }
        }
    }
    std::fs::write(&sst, &pristine).unwrap();
    assert_eq!(
        Engine::verify_path(dir.path()).unwrap().health,
        EngineHealth::Healthy
    );
}

#[test]
fn orphan_ssts_are_never_trusted_and_removed_at_open() {
    let dir = tmp();
    {
        let engine = Engine::open(tiny(dir.path())).unwrap();
        load(&engine, 500, 1);
        engine
            .flush_cf(&engine.get_column_family("default").unwrap())
            .unwrap();
    }
    let orphan = dir.path().join("sst").join(format!("{:020}.sst", 999_999));
    let any = std::fs::read_dir(dir.path().join("sst"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::copy(any, &orphan).unwrap();
    let report = Engine::verify_path(dir.path()).unwrap();
    assert_eq!(report.health, EngineHealth::Degraded);
    assert!(orphan.exists(), "verification never repairs");
    let engine = Engine::open(tiny(dir.path())).unwrap();
    assert!(!orphan.exists());
    let r = engine.get_recovery_metrics().unwrap();
    assert_eq!(r.orphan_files_removed, 1);
    assert_eq!(r.intent_log_entries_replayed, 1);
    assert_eq!(all_rows(&engine).len(), 500);
}

#[test]
fn dropping_a_flushed_column_family_removes_its_files() {
    let dir = tmp();
    let engine = Engine::open(tiny(dir.path())).unwrap();
    let cf = engine.create_column_family("tmp").unwrap();
    let mut tx = engine.begin_tx(cf.id(), TransactionMode::ReadWrite).unwrap();
    for i in 0..300 {
        tx.put(format!("k{i}").into_bytes(), vec![7; 100], None).unwrap();
    }
    tx.commit(WriteOptions::sync()).unwrap();
    engine.flush_cf(&cf).unwrap();
    let files = || std::fs::read_dir(dir.path().join("sst")).unwrap().count();
    assert!(files() > 0);
    engine.drop_column_family(cf.id()).unwrap();
    assert_eq!(files(), 0);
    drop(engine);
    let engine = Engine::open(tiny(dir.path())).unwrap();
    assert!(engine.get_column_family("tmp").is_none());
}

#[test]
fn writes_stall_before_the_wal_when_flushes_fall_behind_and_recover() {
    // A threaded engine whose flushes cannot keep up with a burst of large commits stalls some of them.
    let dir = tmp();
    let engine = Engine::open(
        OpenOptions::local(dir.path())
            .with_memtable_size_limit(4 << 10)
            .build()
            .unwrap(),
    )
    .unwrap();
    let cf = engine.get_column_family("default").unwrap();
    let mut stalled = 0;
    let mut committed = 0u32;
    for i in 0..400u32 {
        let mut tx = engine.begin_tx(0, TransactionMode::ReadWrite).unwrap();
        tx.put(format!("k{i:05}").into_bytes(), vec![1; 3000], None)
            .unwrap();
        match tx.commit(WriteOptions::buffered()) {
            Ok(()) => committed += 1,
            Err(MidgeError::WriteStall(_)) => {
                stalled += 1;
                assert!(
                    engine
                        .wait_for_write_stall_clear(&cf, std::time::Duration::from_secs(20))
                        .unwrap()
                );
            }
            Err(e) => panic!("{e}"),
        }
    }
    let m = engine.get_runtime_metrics().unwrap();
    assert_eq!(m.write_stalls_total, stalled);
    assert_eq!(
        all_rows(&engine).len() as u32,
        committed,
        "a stalled write never happened"
    );
}

mod common;

/// Fails every mutating I/O operation of a flush + full compaction in turn. Whatever fails, the engine never
/// acknowledges a write it cannot keep, and reopening (the process-crash image) yields exactly the committed
/// rows: the whole old file set or the whole new one.
#[test]
fn an_io_failure_at_any_publication_step_never_loses_or_invents_data() {
    let rows = |engine: &Engine| all_rows(engine);
    let open = |fs: &common::FaultFs| {
        Engine::open(
            OpenOptions::with_file_system(Arc::new(fs.clone()))
                .with_memtable_size_limit(1 << 20)
                .with_l0_compaction_trigger(2)
                .with_target_sst_size(8 << 10)
                .executor(Arc::new(cntryl_midge::runtime::InlineExecutor))
                .build()
                .unwrap(),
        )
    };
    // Learn how many mutating operations the step performs.
    let setup = |fs: &common::FaultFs| -> (Engine, Vec<(Bytes, Bytes)>) {
        let engine = open(fs).unwrap();
        let cf = engine.get_column_family("default").unwrap();
        for round in 0..3u32 {
            load(&engine, 300, round);
            engine.flush_cf(&cf).unwrap();
        }
        load(&engine, 300, 9);
        let expected = rows(&engine);
        (engine, expected)
    };
    let probe = common::FaultFs::new();
    let (engine, _) = setup(&probe);
    let before = probe.ops();
    engine
        .flush_cf(&engine.get_column_family("default").unwrap())
        .unwrap();
    engine.compact_all().unwrap();
    let total = probe.ops() - before;
    assert!(total > 10, "the step must do real I/O ({total} ops)");
    drop(engine);
    for n in 0..total {
        let fs = common::FaultFs::new();
        let (engine, expected) = setup(&fs);
        fs.arm(n);
        let cf = engine.get_column_family("default").unwrap();
        let result = engine.flush_cf(&cf).and_then(|()| engine.compact_all());
        if result.is_err() {
            // Nothing more is acknowledged after a failed durability step.
            let mut tx = engine.begin_tx(0, TransactionMode::ReadWrite).unwrap();
            tx.put(b"late".to_vec(), b"x".to_vec(), None).unwrap();
            assert!(
                tx.commit(WriteOptions::sync()).is_err(),
                "op {n}: acknowledged after a failure"
            );
        }
        assert_eq!(rows(&engine), expected, "op {n}: live view changed");
        drop(engine);
        fs.disarm();
        let engine = open(&fs).unwrap_or_else(|e| panic!("op {n}: reopen failed: {e}"));
        assert_eq!(
            rows(&engine),
            expected,
            "op {n}: recovered state differs ({result:?})"
        );
        let report = engine.verify_storage(std::time::Duration::from_secs(10)).unwrap();
        assert!(report.problems.is_empty(), "op {n}: {:?}", report.problems);
    }
}

#[test]
fn ttl_range_deletes_and_tombstones_hide_rows_across_memtable_l0_and_deeper_levels() {
    let dir = tmp();
    let clock = cntryl_midge::ManualClock::new(1_000_000);
    let engine = Engine::open(
        OpenOptions::local(dir.path())
            .with_memtable_size_limit(16 << 10)
            .with_l0_compaction_trigger(3)
            .ttl_clock(clock.clone())
            .executor(Arc::new(cntryl_midge::runtime::InlineExecutor))
            .build()
            .unwrap(),
    )
    .unwrap();
    let cf = engine.get_column_family("default").unwrap();
    let put = |k: &str, ttl: Option<u64>| {
        let mut tx = engine.begin_tx(0, TransactionMode::ReadWrite).unwrap();
        tx.put(k.as_bytes().to_vec(), k.as_bytes().to_vec(), ttl).unwrap();
        tx.commit(WriteOptions::sync()).unwrap();
    };
    // Deep level: short and long TTLs, a plain value, rows to be range-deleted and point-deleted later.
    for i in 0..50 {
        put(&format!("deep-short-{i:02}"), Some(5));
        put(&format!("deep-long-{i:02}"), Some(3600));
        put(&format!("deep-plain-{i:02}"), None);
    }
    engine.flush_cf(&cf).unwrap();
    engine.compact_all().unwrap();
    // L0: more TTL rows and deletes covering deep rows.
    for i in 0..20 {
        put(&format!("l0-short-{i:02}"), Some(5));
    }
    let mut tx = engine.begin_tx(0, TransactionMode::ReadWrite).unwrap();
    tx.delete_range(b"deep-plain-10".to_vec(), b"deep-plain-20".to_vec())
        .unwrap();
    tx.delete(b"deep-long-00".to_vec()).unwrap();
    tx.commit(WriteOptions::sync()).unwrap();
    engine.flush_cf(&cf).unwrap();
    // Memtable: overwrite a short-TTL deep row with a permanent value.
    put("deep-short-07", None);
    clock.advance_millis(6_000);
    let tx = engine.begin_tx(0, TransactionMode::ReadOnly).unwrap();
    let fwd: Vec<String> = tx
        .scan(&Query::new())
        .unwrap()
        .try_collect()
        .unwrap()
        .into_iter()
        .map(|(k, _)| String::from_utf8(k.to_vec()).unwrap())
        .collect();
    let mut want: Vec<String> = (1..50).map(|i| format!("deep-long-{i:02}")).collect();
    want.extend(
        (0..50)
            .filter(|i| !(10..20).contains(i))
            .map(|i| format!("deep-plain-{i:02}")),
    );
    want.push("deep-short-07".into());
    want.sort();
    assert_eq!(fwd, want);
    let mut rev: Vec<String> = tx
        .scan(&Query::new().reverse())
        .unwrap()
        .try_collect()
        .unwrap()
        .into_iter()
        .map(|(k, _)| String::from_utf8(k.to_vec()).unwrap())
        .collect();
    rev.reverse();
    assert_eq!(rev, want);
    assert_eq!(tx.get(b"deep-short-03").unwrap(), None, "expired in a deep level");
    assert_eq!(tx.get(b"l0-short-03").unwrap(), None, "expired in L0");
    assert_eq!(tx.get(b"deep-plain-15").unwrap(), None, "range-deleted");
    drop(tx);
    // Compaction may now drop the expired and deleted versions physically; the view is unchanged.
    engine.compact_all().unwrap();
    let tx = engine.begin_tx(0, TransactionMode::ReadOnly).unwrap();
    assert_eq!(tx.scan(&Query::new()).unwrap().count(), want.len());
}

/// A sequential load's disjoint L0 files may be re-levelled without a rewrite, but an explicit full
/// compaction after range deletes must drop the deleted rows (not just hide them): when the data and its
/// tombstones are flushed into one file, and when the data was flushed (and perhaps moved) before.
#[test]
fn compacting_after_range_deletes_reclaims_the_deleted_rows() {
    let n = 4000u32;
    let total = |e: &Engine| -> u64 {
        e.get_storage_layout()
            .unwrap()
            .levels
            .iter()
            .map(|l| l.total_bytes)
            .sum()
    };
    // `flush_every`: flush after that many 100-row commits (0: never). `keep`: load only the rows that survive.
    let run = |flush_every: u32, delete: bool, keep_only: bool| -> (Engine, tempfile::TempDir) {
        let dir = tmp();
        let opts = OpenOptions::local(dir.path())
            .with_memtable_size_limit(8 << 20)
            .with_l0_compaction_trigger(2)
            .executor(Arc::new(cntryl_midge::runtime::InlineExecutor))
            .build()
            .unwrap();
        let engine = Engine::open(opts).unwrap();
        let cf = engine.get_column_family("default").unwrap();
        for chunk in 0..n / 100 {
            if keep_only && chunk % 2 == 0 {
                continue;
            }
            let mut tx = engine.begin_tx(0, TransactionMode::ReadWrite).unwrap();
            for i in chunk * 100..(chunk + 1) * 100 {
                tx.put(format!("key{i:06}").into_bytes(), vec![b'v'; 60], None)
                    .unwrap();
            }
            tx.commit(WriteOptions::buffered()).unwrap();
            if flush_every > 0 && chunk % flush_every == flush_every - 1 {
                engine.flush_cf(&cf).unwrap();
            }
        }
        if delete {
            for b in (0..n / 100).step_by(2) {
                let mut tx = engine.begin_tx(0, TransactionMode::ReadWrite).unwrap();
                tx.delete_range(
                    format!("key{:06}", b * 100).into_bytes(),
                    format!("key{:06}", (b + 1) * 100).into_bytes(),
                )
                .unwrap();
                tx.commit(WriteOptions::buffered()).unwrap();
            }
        }
        engine.flush_cf(&cf).unwrap();
        engine.compact_all().unwrap();
        (engine, dir)
    };
    let (reference, _d) = run(0, false, true);
    let survivors = total(&reference);
    for flush_every in [0, 5, 10] {
        let (engine, _dir) = run(flush_every, true, false);
        assert_eq!(all_rows(&engine).len(), (n / 2) as usize);
        let after = total(&engine);
        assert!(
            after * 10 <= survivors * 13,
            "flush_every={flush_every}: {after} bytes after deleting half and compacting, but the survivors \
             alone take {survivors}: {:?}",
            engine.get_storage_layout().unwrap().levels
        );
    }
}

#[test]
fn a_flush_with_no_table_under_its_span_goes_to_l1_and_keeps_only_what_snapshots_need() {
    let dir = tmp();
    let opts = OpenOptions::local(dir.path())
        .with_memtable_size_limit(8 << 20)
        .executor(Arc::new(cntryl_midge::runtime::InlineExecutor))
        .build()
        .unwrap();
    let engine = Engine::open(opts).unwrap();
    let cf = engine.get_column_family("default").unwrap();
    let key = |i: u32| format!("key{i:06}").into_bytes();
    let write = |f: &dyn Fn(&mut Transaction)| {
        let mut tx = engine.begin_tx(0, TransactionMode::ReadWrite).unwrap();
        f(&mut tx);
        tx.commit(WriteOptions::buffered()).unwrap();
    };
    let get = |i: u32| {
        let tx = engine.begin_tx(0, TransactionMode::ReadOnly).unwrap();
        tx.get(&key(i)).unwrap()
    };
    let levels = |e: &Engine| -> Vec<(u32, u64)> {
        e.get_storage_layout()
            .unwrap()
            .levels
            .iter()
            .map(|l| (l.level, l.file_count))
            .collect()
    };
    write(&|tx| {
        for i in 0..1000 {
            tx.put(key(i), vec![b'a'; 60], None).unwrap();
        }
    });
    write(&|tx| {
        tx.delete_range(key(100), key(200)).unwrap();
        tx.delete(key(500)).unwrap();
    });
    engine.flush_cf(&cf).unwrap();
    // Nothing older under its keys: written once, straight to L1, so compacting everything has nothing to do.
    assert_eq!(levels(&engine), vec![(1, 1)]);
    let compactions = engine.get_runtime_metrics().unwrap().compactions_run;
    engine.compact_all().unwrap();
    assert_eq!(engine.get_runtime_metrics().unwrap().compactions_run, compactions);
    assert_eq!(all_rows(&engine).len(), 1000 - 100 - 1);
    assert_eq!((get(150), get(500)), (None, None));
    assert_eq!(get(50).unwrap(), vec![b'a'; 60]);

    // Over keys an L1 table holds: to L0, tombstones carried, so the older rows they hide stay hidden.
    write(&|tx| {
        tx.delete_range(key(0), key(10)).unwrap();
        tx.put(key(50), vec![b'b'; 60], None).unwrap();
    });
    engine.flush_cf(&cf).unwrap();
    assert_eq!(levels(&engine), vec![(0, 1), (1, 1)]);
    assert_eq!((get(5), get(150), get(500)), (None, None, None));
    assert_eq!(get(50).unwrap(), vec![b'b'; 60]);
    engine.compact_all().unwrap();
    assert_eq!(all_rows(&engine).len(), 1000 - 100 - 1 - 10);

    // A snapshot older than the deletes still sees what they hide after a flush to L1.
    let dir2 = tmp();
    let engine = inline(dir2.path());
    let cf = engine.get_column_family("default").unwrap();
    let mut tx = engine.begin_tx(0, TransactionMode::ReadWrite).unwrap();
    for i in 0..100 {
        tx.put(key(i), vec![b'a'; 10], None).unwrap();
    }
    tx.commit(WriteOptions::buffered()).unwrap();
    let old = engine.begin_tx(0, TransactionMode::ReadOnly).unwrap();
    let mut tx = engine.begin_tx(0, TransactionMode::ReadWrite).unwrap();
    tx.delete_range(key(0), key(50)).unwrap();
    tx.delete(key(70)).unwrap();
    tx.commit(WriteOptions::buffered()).unwrap();
    engine.flush_cf(&cf).unwrap();
    assert_eq!(levels(&engine), vec![(1, 1)]);
    for i in [10, 70] {
        assert_eq!(old.get(&key(i)).unwrap().unwrap(), vec![b'a'; 10]);
        let now = engine.begin_tx(0, TransactionMode::ReadOnly).unwrap();
        assert_eq!(now.get(&key(i)).unwrap(), None);
    }
    drop(old);
    engine.compact_all().unwrap();
    assert_eq!(all_rows(&engine).len(), 49);
}
