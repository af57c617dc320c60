//! Native demo: writes with each durability mode, reopens, and prints what recovery replayed.
//!
//! `cargo run -p cntryl-midge --example demo [-- <dir>]`
#![allow(clippy::disallowed_methods)] // tests drive real threads, files and clocks

use cntryl_midge::Bytes;
use cntryl_midge::prelude::*;
use std::time::{Duration, Instant};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join(format!("midge-demo-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&dir);
    println!("== Midge native demo in {}", dir.display());
    {
        let mut engine = Engine::open(OpenOptions::local(&dir).build())?;
        let cf = engine.create_column_family("users")?;
        let started = Instant::now();
        for i in 0..200u32 {
            let mut tx = engine.begin_tx(cf.id(), TransactionMode::ReadWrite)?;
            tx.put(
                format!("user:{i:04}").into_bytes(),
                format!("name-{i}").into_bytes(),
                None,
            )?;
            tx.put(
                format!("order:{i:04}").into_bytes(),
                format!("{}", i * 7).into_bytes(),
                None,
            )?;
            let opts = match i % 4 {
                0 | 1 => WriteOptions::sync(),
                2 => WriteOptions::buffered(),
                _ => WriteOptions::best_effort(),
            };
            tx.commit(opts)?;
        }
        let elapsed = started.elapsed();
        let m = engine.get_runtime_metrics()?;
        println!(
            "wrote 200 transactions (100 sync, 50 buffered, 50 best-effort) in {:.1} ms: {} WAL appends, {} fsyncs",
            elapsed.as_secs_f64() * 1e3,
            m.wal_append_count,
            m.wal_fsync_count
        );
        engine.shutdown(Duration::from_secs(5))?;
    }
    let engine = Engine::open(OpenOptions::local(&dir).build())?;
    let cf = engine
        .get_column_family("users")
        .ok_or("column family missing after reopen")?;
    let tx = engine.begin_tx(cf.id(), TransactionMode::ReadOnly)?;
    let users = tx
        .scan(&Query::new().prefix(Bytes::from_static(b"user:")))?
        .try_collect()?;
    println!(
        "after reopen: {} user rows (best-effort commits are not in the WAL, so 150 are expected)",
        users.len()
    );
    let r = engine.get_recovery_metrics()?;
    println!(
        "recovery: {} WAL records / {} bytes replayed, torn tail {} bytes",
        r.wal_recovery_records_replayed, r.wal_recovery_bytes_replayed, r.wal_torn_tail_bytes_truncated
    );
    let m = engine.get_runtime_metrics()?;
    println!(
        "runtime: health {:?}, current sequence {}, write stalled {}",
        m.health, m.current_sequence, m.write_stalled
    );
    drop(tx);
    drop(engine);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
