//! Full-scan probe on the benchmark's shape: loads `n` keys (16-byte zero-padded decimal, 100 pseudo-random
//! bytes each) in 1,000-op buffered batches, deletes every other 1,000-key block with a range delete and
//! compacts (as `readseq_after_delete` does), then times forward scans that fold every value's bytes. Prints
//! ns per row for the scans before and after the delete, so the scan path can be profiled on its own (`perf
//! record`). `cargo run --release -p cntryl-midge --example scanprobe -- <dir> [keys] [rounds] [seq|seek|bench]`
//!
//! `seek` times the benchmark's seekrandom after the scans of the loaded, compacted table (seek to a random key,
//! read ten rows; best of `rounds` × 100,000). `bench` loads as the benchmark's main database does instead:
//! every key once in a random order, then as many random overwrites, then a flush and no compaction; it prints
//! the layout and times the first scan (the benchmark's readseq) and the best of `rounds`, then stops.
#![allow(clippy::disallowed_methods)] // a probe: real files and clocks

use cntryl_midge::prelude::*;
use cntryl_midge::{BatchOp, ColumnFamilyHandle};
use std::time::Instant;

fn key(i: u64) -> Vec<u8> {
    format!("{i:016}").into_bytes()
}

/// Times `rounds` full forward scans; returns the best ns per row and the row count.
fn scans(engine: &Engine, cf: &ColumnFamilyHandle, rounds: usize) -> MidgeResult<(f64, u64)> {
    let mut best = f64::MAX;
    let mut rows = 0;
    for _ in 0..rounds {
        let tx = engine.begin_tx(cf.id(), TransactionMode::ReadOnly)?;
        let t = Instant::now();
        let (mut n, mut fold) = (0u64, 0u64);
        let mut it = tx.scan(&Query::new())?;
        for (k, v) in it.by_ref() {
            // As the benchmark's `consume`: every byte of the value read.
            fold = fold.wrapping_add(k.len() as u64);
            fold ^= u64::from(std::hint::black_box(v.iter().fold(0u8, |a, &b| a ^ b)));
            n += 1;
        }
        it.status()?;
        let ns = t.elapsed().as_nanos() as f64 / n.max(1) as f64;
        std::hint::black_box(fold);
        best = best.min(ns);
        rows = n;
    }
    Ok((best, rows))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let dir = std::path::PathBuf::from(args.get(1).ok_or("usage: scanprobe <dir> [keys] [rounds]")?);
    let n: u64 = args.get(2).map_or(Ok(200_000), |s| s.parse())?;
    let rounds: usize = args.get(3).map_or(Ok(20), |s| s.parse())?;
    let _ = std::fs::remove_dir_all(&dir);
    let engine = Engine::open(OpenOptions::local(&dir).build())?;
    let cf = engine.get_column_family("default").ok_or("no default cf")?;
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    if args.get(4).map(String::as_str) == Some("bench") {
        return bench_shape(&engine, &cf, n, rounds, &mut x);
    }
    for block in 0..n.div_ceil(1000) {
        let ops = (block * 1000..((block + 1) * 1000).min(n))
            .map(|i| {
                let value = (0..100).map(|_| xorshift(&mut x) as u8).collect();
                BatchOp::Put {
                    key: key(i),
                    value,
                    ttl_secs: None,
                }
            })
            .collect();
        engine.write(cf.id(), ops, WriteOptions::buffered())?;
    }
    let t = Instant::now();
    engine.flush_cf(&cf)?;
    let flushed = t.elapsed();
    engine.compact_all()?;
    println!(
        "flush {flushed:.2?}, then compact_all {:.2?}",
        t.elapsed() - flushed
    );
    let (ns, rows) = scans(&engine, &cf, rounds)?;
    println!("loaded: {rows} rows, best {ns:.1} ns per row");
    if args.get(4).map(String::as_str) == Some("seek") {
        return seeks(&engine, &cf, n, rounds, &mut x);
    }
    for block in (0..n.div_ceil(1000)).step_by(2) {
        let ops = vec![BatchOp::DeleteRange {
            start: key(block * 1000),
            end: key((block + 1) * 1000),
        }];
        engine.write(cf.id(), ops, WriteOptions::buffered())?;
    }
    let t = Instant::now();
    engine.flush_cf(&cf)?;
    let flushed = t.elapsed();
    engine.compact_all()?;
    println!(
        "flush {flushed:.2?}, then compact_all {:.2?}",
        t.elapsed() - flushed
    );
    let (ns, rows) = scans(&engine, &cf, rounds)?;
    println!("after delete + compact: {rows} rows, best {ns:.1} ns per row");
    Ok(())
}

fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// Prints the files and bytes of each non-empty level, each line after `label`.
fn print_layout(engine: &Engine, label: &str) -> MidgeResult<()> {
    for l in engine.get_storage_layout()?.levels {
        let (files, mib) = (l.file_count, l.total_bytes >> 20);
        println!("{label}L{}: {files} files, {mib} MiB", l.level);
    }
    Ok(())
}

/// The benchmark's main database: a random-order load, as many random overwrites, a flush; then scans.
fn bench_shape(
    engine: &Engine,
    cf: &ColumnFamilyHandle,
    n: u64,
    rounds: usize,
    x: &mut u64,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut order: Vec<u64> = (0..n).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, (xorshift(x) % (i as u64 + 1)) as usize);
    }
    let overwrites: Vec<u64> = (0..n).map(|_| xorshift(x) % n).collect();
    for chunk in order.chunks(1000).chain(overwrites.chunks(1000)) {
        let ops = chunk
            .iter()
            .map(|&i| BatchOp::Put {
                key: key(i),
                value: (0..100).map(|_| xorshift(x) as u8).collect(),
                ttl_secs: None,
            })
            .collect::<Vec<_>>();
        // As the benchmark: a commit refused with a write stall waits for it to clear and retries.
        while let Err(e) = engine.write(cf.id(), ops.clone(), WriteOptions::buffered()) {
            if !matches!(e, MidgeError::WriteStall(_)) {
                return Err(e.into());
            }
            engine.wait_for_write_stall_clear(cf, std::time::Duration::from_secs(60))?;
        }
    }
    engine.flush_cf(cf)?;
    print_layout(engine, "")?;
    if std::env::var_os("SCANPROBE_PAUSE").is_some() {
        // Time to attach a profiler to the scans alone.
        println!("loaded");
        std::thread::sleep(std::time::Duration::from_secs(2));
    }
    let (first, rows) = scans(engine, cf, 1)?;
    let (best, _) = scans(engine, cf, rounds)?;
    println!("bench shape: {rows} rows, first scan {first:.1} ns per row, best of {rounds} {best:.1}");
    print_layout(engine, "after the scans ")?;
    Ok(())
}

/// The benchmark's seekrandom on the loaded, compacted table: seek to a random key and read ten rows.
fn seeks(
    engine: &Engine,
    cf: &ColumnFamilyHandle,
    n: u64,
    rounds: usize,
    x: &mut u64,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut best = f64::MAX;
    for _ in 0..rounds {
        let tx = engine.begin_tx(cf.id(), TransactionMode::ReadOnly)?;
        let t = Instant::now();
        let mut fold = 0u64;
        for _ in 0..100_000 {
            let q = Query::new().start_key(key(xorshift(x) % n).into()).limit(10);
            for (k, v) in tx.scan(&q)? {
                fold = fold.wrapping_add(k.len() as u64 + v.len() as u64);
            }
        }
        std::hint::black_box(fold);
        best = best.min(t.elapsed().as_nanos() as f64 / 100_000.0);
    }
    println!("seek + 10 rows: best {best:.0} ns");
    Ok(())
}
