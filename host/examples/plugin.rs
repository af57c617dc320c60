//! Midge loaded as a sandboxed plugin: the native engine's calls, through wasmtime, with the host serving the
//! plugin's storage from the engine's own `LocalFs` — then the same directory reopened natively.
//!
//! ```text
//! cargo build -p midge-guest --lib --target wasm32-wasip2
//! cargo run -p midge-host --example plugin -- target/wasm32-wasip2/debug/midge_guest.wasm <db dir>
//! ```
#![allow(clippy::disallowed_methods)]

use cntryl_midge::prelude::*;
use midge_host::{ComponentEngine, ComponentHost};
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn main() -> MidgeResult<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [wasm, dir] = args.as_slice() else {
        return Err(MidgeError::InvalidArgument(
            "usage: plugin <midge_guest.wasm> <db dir>".into(),
        ));
    };
    let (wasm, dir) = (PathBuf::from(wasm), PathBuf::from(dir));
    let t = Instant::now();
    let host = ComponentHost::load(&wasm)?
        .with_memory_limit(256 << 20)
        .with_call_deadline(Duration::from_secs(10));
    println!(
        "loaded the plugin in {:?} (256 MiB memory cap, 10 s per-call deadline)",
        t.elapsed()
    );
    {
        let mut engine = ComponentEngine::open(&host, &dir)?;
        let cf = match engine.get_column_family("users") {
            Some(cf) => cf,
            None => engine.create_column_family("users")?,
        };
        for (k, v) in [("alice", "admin"), ("bob", "viewer"), ("carol", "editor")] {
            let mut tx = engine.begin_tx(cf, TransactionMode::ReadWrite)?;
            tx.put(k.as_bytes().to_vec(), v.as_bytes().to_vec(), None)?;
            tx.commit(WriteOptions::sync())?;
        }
        let m = engine.get_runtime_metrics()?;
        println!(
            "in the sandbox: {} sync commits, {} WAL fsyncs (each one the host's fdatasync)",
            m.commits_total, m.wal_fsync_count
        );
        let mut tx = engine.begin_tx(cf, TransactionMode::ReadWrite)?;
        let Err(err) = tx.put(Vec::new(), b"empty keys are refused".to_vec(), None) else {
            return Err(MidgeError::Internal("an empty key was accepted".into()));
        };
        println!(
            "a bad argument crosses the boundary as a typed error: {err} ({})",
            err.kind_name()
        );
        drop(tx);
        engine.shutdown(Duration::from_secs(5))?;
    }
    let engine = Engine::open(OpenOptions::local(&dir).build())?;
    let cf = engine.get_column_family("users").ok_or(MidgeError::NotFound)?;
    let tx = engine.begin_tx(cf.id(), TransactionMode::ReadOnly)?;
    print!("reopened natively, same files:");
    for (k, v) in tx.scan(&Query::new())?.try_collect()? {
        print!(" {}={}", String::from_utf8_lossy(&k), String::from_utf8_lossy(&v));
    }
    println!();
    Ok(())
}
