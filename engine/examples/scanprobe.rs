//! Full-scan probe on the benchmark's shape: loads `n` keys (16-byte zero-padded decimal, 100 pseudo-random
//! bytes each) in 1,000-op buffered batches, deletes every other 1,000-key block with a range delete and
//! compacts (as `readseq_after_delete` does), then times forward scans that fold every value's bytes. Prints
//! ns per row for the scans before and after the delete, so the scan path can be profiled on its own (`perf
//! record`). `cargo run --release -p cntryl-midge --example scanprobe -- <dir> [keys] [rounds]`
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
    for block in 0..n.div_ceil(1000) {
        let ops = (block * 1000..((block + 1) * 1000).min(n))
            .map(|i| {
                let value = (0..100)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x as u8
                    })
                    .collect();
                BatchOp::Put {
                    key: key(i),
                    value,
                    ttl_secs: None,
                }
            })
            .collect();
        engine.write(cf.id(), ops, WriteOptions::buffered())?;
    }
    engine.flush_cf(&cf)?;
    engine.compact_all()?;
    let (ns, rows) = scans(&engine, &cf, rounds)?;
    println!("loaded: {rows} rows, best {ns:.1} ns per row");
    for block in (0..n.div_ceil(1000)).step_by(2) {
        let ops = vec![BatchOp::DeleteRange {
            start: key(block * 1000),
            end: key((block + 1) * 1000),
        }];
        engine.write(cf.id(), ops, WriteOptions::buffered())?;
    }
    engine.flush_cf(&cf)?;
    engine.compact_all()?;
    let (ns, rows) = scans(&engine, &cf, rounds)?;
    println!("after delete + compact: {rows} rows, best {ns:.1} ns per row");
    Ok(())
}
