//! Single-put sync commits from N threads, native vs component, on the benchmark's shape (16-byte keys,
//! 100-byte values, a fresh database per side): prints commits/s, commits per fsync and CPU µs per commit for
//! each side, so the component's group commit can be profiled on its own (`perf record` with
//! `MIDGE_WASM_PERFMAP=1`). `cargo run --release -p midge-host --example syncwriters -- <midge_guest.wasm> <dir>
//! [writers] [seconds] [side]` (`side`: `native` or `component` runs one side only).
#![allow(clippy::disallowed_methods)]

use cntryl_midge::BatchOp;
use cntryl_midge::prelude::*;
use midge_host::{ComponentEngine, ComponentHost};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// This process's CPU time (user + system) in nanoseconds, from `/proc/self/stat` (10 ms ticks).
fn cpu_ns() -> u128 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0;
    };
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    rest.split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|x| x.parse::<u128>().ok())
        .sum::<u128>()
        * 10_000_000
}

/// Runs `writers` threads committing single puts through `commit` for `secs`; returns commits.
fn drive(writers: usize, secs: f64, commit: &(dyn Fn(&[u8], &[u8]) + Sync)) -> u64 {
    let stop = AtomicBool::new(false);
    let done = AtomicU64::new(0);
    std::thread::scope(|s| {
        for w in 0..writers {
            let (stop, done) = (&stop, &done);
            s.spawn(move || {
                let mut i = 0u64;
                let value = [b'v'; 100];
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("{w:02}{i:014}");
                    commit(key.as_bytes(), &value);
                    i += 1;
                }
                done.fetch_add(i, Ordering::Relaxed);
            });
        }
        std::thread::sleep(Duration::from_secs_f64(secs));
        stop.store(true, Ordering::Relaxed);
    });
    done.load(Ordering::Relaxed)
}

/// A one-put write batch.
fn put(key: &[u8], value: &[u8]) -> Vec<BatchOp> {
    vec![BatchOp::Put {
        key: key.to_vec(),
        value: value.to_vec(),
        ttl_secs: None,
    }]
}

fn report(side: &str, commits: u64, fsyncs: u64, took: Duration, cpu: u128) {
    println!(
        "{side:>9}: {:>8.0} commits/s, {:>5.1} commits per fsync, {:>6.1} µs CPU per commit",
        commits as f64 / took.as_secs_f64(),
        commits as f64 / fsyncs.max(1) as f64,
        cpu as f64 / 1e3 / commits.max(1) as f64,
    );
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let wasm = args
        .get(1)
        .ok_or("usage: syncwriters <wasm> <dir> [writers] [seconds] [side]")?;
    let dir = std::path::PathBuf::from(args.get(2).ok_or("missing <dir>")?);
    let writers: usize = args.get(3).map_or(Ok(16), |s| s.parse())?;
    let secs: f64 = args.get(4).map_or(Ok(3.0), |s| s.parse())?;
    let side = args.get(5).map(String::as_str).unwrap_or("both");

    if side != "component" {
        let d = dir.join("native");
        let _ = std::fs::remove_dir_all(&d);
        let engine = Engine::open(OpenOptions::local(&d).build())?;
        let cf = engine.get_column_family("default").ok_or("no default cf")?;
        let before = engine.get_runtime_metrics()?.wal_fsync_count;
        let (t, c) = (Instant::now(), cpu_ns());
        let commits = drive(writers, secs, &|k, v| {
            let ops = vec![BatchOp::Put {
                key: k.to_vec(),
                value: v.to_vec(),
                ttl_secs: None,
            }];
            engine
                .write(cf.id(), ops, WriteOptions::sync())
                .expect("sync write");
        });
        let (took, cpu) = (t.elapsed(), cpu_ns() - c);
        let fsyncs = engine.get_runtime_metrics()?.wal_fsync_count - before;
        report("native", commits, fsyncs, took, cpu);
    }
    if side != "native" {
        let d = dir.join("component");
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d)?;
        let host = ComponentHost::load(std::path::Path::new(wasm))?;
        let engine = ComponentEngine::open(&host, &d)?;
        let cf = engine.get_column_family("default").ok_or("no default cf")?;
        let before = engine.get_runtime_metrics()?.wal_fsync_count;
        let (t, c) = (Instant::now(), cpu_ns());
        let commits = drive(writers, secs, &|k, v| {
            engine
                .write(cf, put(k, v), WriteOptions::sync())
                .expect("sync write");
        });
        let (took, cpu) = (t.elapsed(), cpu_ns() - c);
        let fsyncs = engine.get_runtime_metrics()?.wal_fsync_count - before;
        report("component", commits, fsyncs, took, cpu);
    }
    Ok(())
}
