//! Scale: load many small keys under a fixed memory budget; peak memory stays within it, L0 stays bounded,
//! and point reads touch a bounded number of files. Its own test binary so the process's peak RSS is its own.
//! CI loads 300,000 keys; `MIDGE_SCALE_KEYS=10000000 cargo test --release -p cntryl-midge --test scale` runs
//! the full 10-million-key check.
#![allow(clippy::disallowed_methods)] // tests drive real files and clocks

use cntryl_midge::MemoryBudget;
use cntryl_midge::prelude::*;

fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace()
        .nth(1)?
        .parse::<u64>()
        .ok()
        .map(|kb| kb * 1024)
}

#[test]
fn loading_many_small_keys_stays_within_the_memory_budget_with_bounded_l0_and_read_amp() {
    let keys: u64 = std::env::var("MIDGE_SCALE_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300_000);
    let budget: usize = if keys > 1_000_000 { 256 << 20 } else { 16 << 20 };
    let dir = tempfile::tempdir_in(std::env::var("TMPDIR").unwrap_or_else(|_| "/tmp".into())).unwrap();
    let engine = Engine::open(
        OpenOptions::local(dir.path())
            .memory_budget(MemoryBudget::Bytes(budget))
            .build()
            .unwrap(),
    )
    .unwrap();
    let cf = engine.get_column_family("default").unwrap();
    let baseline = peak_rss_bytes().unwrap_or(0);
    let mut rng = cntryl_midge::runtime::SeededRng::new(42);
    let per_commit = 1000;
    let mut written = 0u64;
    let mut max_l0 = 0u64;
    while written < keys {
        let mut tx = engine.begin_tx(cf.id(), TransactionMode::ReadWrite).unwrap();
        for _ in 0..per_commit.min(keys - written) {
            let k = rng.below(keys * 4);
            tx.put(
                format!("{k:016x}").into_bytes(),
                format!("value-{k:08}-padding").into_bytes(),
                None,
            )
            .unwrap();
            written += 1;
        }
        // A stalled commit did not happen: wait for the flush to catch up and count those keys as unwritten.
        match tx.commit(WriteOptions::buffered()) {
            Ok(()) => {}
            Err(MidgeError::WriteStall(_)) => {
                assert!(
                    engine
                        .wait_for_write_stall_clear(&cf, std::time::Duration::from_secs(60))
                        .unwrap()
                );
                written -= per_commit.min(written);
            }
            Err(e) => panic!("{e}"),
        }
        let layout = engine.get_storage_layout().unwrap();
        let l0 = layout
            .levels
            .iter()
            .find(|l| l.level == 0)
            .map_or(0, |l| l.file_count);
        max_l0 = max_l0.max(l0);
    }
    // Let background flushes and compactions finish before judging the shape.
    assert!(
        engine
            .wait_for_write_stall_clear(&cf, std::time::Duration::from_secs(60))
            .unwrap()
    );
    engine.sync_wal().unwrap();
    let l0_files = |e: &Engine| {
        e.get_storage_layout()
            .unwrap()
            .levels
            .iter()
            .find(|l| l.level == 0)
            .map_or(0, |l| l.file_count)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    // Quiet means: no frozen memtable still to flush (a flush adds an L0 file), no compaction running, and L0
    // below the compaction trigger.
    let busy = |e: &Engine| {
        let m = e.get_runtime_metrics().unwrap();
        m.immutable_memtables > 0 || m.flush_queue_depth > 0 || m.active_compactions > 0 || l0_files(e) >= 4
    };
    while busy(&engine) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let m = engine.get_runtime_metrics().unwrap();
    let tx = engine.begin_tx(cf.id(), TransactionMode::ReadOnly).unwrap();
    for _ in 0..2000 {
        let k = rng.below(keys * 4);
        let _ = tx.get(format!("{k:016x}").as_bytes()).unwrap();
    }
    let ra = engine.get_read_amp_metrics().unwrap();
    let levels = engine.get_storage_layout().unwrap().levels.len() as f64;
    let ceiling = 15.0; // the L0 stall ceiling for the default profile (trigger 4 + 2 frozen + 1 + 8)
    println!(
        "health={:?} failures={} keys={keys} memtable_limit={} memtable_bytes={} flushes={} compactions={} sst_count={} max_l0={max_l0} avg_ssts_per_read={:.2} peak_rss={:?} baseline={baseline}",
        m.health,
        m.flush_failures_total,
        m.memtable_size_limit,
        m.total_memtable_bytes,
        m.flush_publish_count,
        m.compactions_run,
        m.sst_count,
        ra.avg_ssts_per_read,
        peak_rss_bytes()
    );
    assert!(
        m.flush_publish_count > 2,
        "the load must exceed several memtables"
    );
    assert!(m.compactions_run > 0, "background compaction ran");
    assert!(
        l0_files(&engine) < 4,
        "background compaction drained L0 below its trigger"
    );
    assert!(
        (max_l0 as f64) <= ceiling,
        "L0 stays bounded by the stall ceiling: {max_l0}"
    );
    assert!(
        ra.avg_ssts_per_read <= ceiling + levels,
        "read amplification is bounded: {ra:?}"
    );
    if let Some(peak) = peak_rss_bytes() {
        let used = peak.saturating_sub(baseline);
        // The budget covers the transaction pool, three memtable generations and the block cache, which the
        // flushes fill (each block charged its real heap footprint). Outside it: the allocator's free but
        // resident memory (~60-170 MB at the 10 M-key peak, with or without the fill; no better with one
        // malloc arena), an SST writer's bloom hashes (8 bytes a key) and open tables' filters and indexes.
        // Measured on 2 shared cores: 1.37-1.58x at CI scale (debug and release), 1.40-1.51x at 10 M keys (one
        // run of the engine before the cache charged real footprints reached 1.70x); 1.15x at CI scale (release)
        // and 1.15-1.21x at 10 M keys once memtables packed keys and values into shared chunks and compactions
        // evicted deleted tables' blocks (session 6).
        println!("peak RSS growth = {:.2} x budget", used as f64 / budget as f64);
        assert!(
            used < 2 * budget as u64,
            "peak memory {used} exceeds 2 x the {budget}-byte budget"
        );
    }
}
