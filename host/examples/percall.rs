//! Measures the cost of a boundary crossing: native vs component per call, for a few call shapes.
//! `cargo run --release -p midge-host --example percall -- <midge_guest.wasm> <dir>`
#![allow(clippy::disallowed_methods)]

use cntryl_midge::prelude::*;
use midge_host::{ComponentEngine, ComponentHost};
use std::time::Instant;

fn main() -> MidgeResult<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [wasm, dir] = args.as_slice() else {
        return Err(MidgeError::InvalidArgument(
            "usage: percall <midge_guest.wasm> <dir>".into(),
        ));
    };
    let host = ComponentHost::load(wasm.as_ref())?;
    let dir = std::path::PathBuf::from(dir);
    for (label, opts, n) in [
        ("best_effort", WriteOptions::best_effort(), 20_000u64),
        ("buffered", WriteOptions::buffered(), 20_000),
        ("sync", WriteOptions::sync(), 3_000),
    ] {
        let d = dir.join(label);
        std::fs::create_dir_all(&d).unwrap();
        let wasm = ComponentEngine::open(&host, &d.join("c"))?;
        let t = Instant::now();
        for i in 0..n {
            let mut tx = wasm.begin_tx(0, TransactionMode::ReadWrite)?;
            tx.put(format!("k{i:08}").into_bytes(), vec![1; 100], None)?;
            tx.commit(opts)?;
        }
        let c = t.elapsed().as_secs_f64() * 1e6 / n as f64;
        let native = Engine::open(OpenOptions::local(d.join("n")).build())?;
        let t = Instant::now();
        for i in 0..n {
            let mut tx = native.begin_tx(0, TransactionMode::ReadWrite)?;
            tx.put(format!("k{i:08}").into_bytes(), vec![1; 100], None)?;
            tx.commit(opts)?;
        }
        let nat = t.elapsed().as_secs_f64() * 1e6 / n as f64;
        let t = Instant::now();
        for _ in 0..n {
            let _ = wasm.get_column_family("default");
        }
        let call = t.elapsed().as_secs_f64() * 1e6 / n as f64;
        println!(
            "{label}: component {c:.1} µs/commit, native {nat:.1} µs/commit (component ÷ native {:.2}×), trivial call {call:.2} µs",
            c / nat
        );
    }
    Ok(())
}
