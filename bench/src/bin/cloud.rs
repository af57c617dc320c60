//! `midge-cloud-bench`: commit latency and object-store requests per commit in cloud mode.
//!
//! For each object store — a local S3-compatible server (moto, started here on 127.0.0.1 and stopped at the
//! end), a directory (`cloud_simulated`'s layout) and in-memory — and for Midge natively and as a component,
//! it runs single-put transactions with `cloud_strict()` and with `cloud_async()` and reports p50/p99 commit
//! latency, commits/s, and the store requests each commit cost (counted by a wrapper around the store, so GETs,
//! HEADs, LISTs and DELETEs count as well as PUTs; the async figure includes the uploads made by `shutdown`).
//!
//! ```text
//! cargo run --release -p midge-bench --bin midge-cloud-bench -- [--commits 300] [--out <dir>] [--no-s3]
//! ```
//! Writes `cloud.json` and `cloud.md` into `--out` (default `bench/results/cloud-<unix time>/`).
#![allow(clippy::disallowed_methods)]

#[path = "../guest.rs"]
mod guest;
#[path = "../stats.rs"]
#[allow(dead_code)]
mod stats;

use cntryl_midge::Bytes;
use cntryl_midge::prelude::*;
use cntryl_midge::storage::SharedFs;
use cntryl_midge::storage::object::{
    FsObjectStore, MemoryObjectStore, ObjectError, ObjectMeta, ObjectStore, PutMode, SharedObjectStore,
};
use midge_host::{ComponentEngine, ComponentHost, ComponentOptions};
use serde::Serialize;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Counts every request that reaches the store.
#[derive(Debug)]
struct Counting {
    inner: SharedObjectStore,
    puts: AtomicU64,
    reads: AtomicU64,
    other: AtomicU64,
}

impl Counting {
    fn new(inner: SharedObjectStore) -> Arc<Counting> {
        Arc::new(Counting {
            inner,
            puts: AtomicU64::new(0),
            reads: AtomicU64::new(0),
            other: AtomicU64::new(0),
        })
    }
    fn totals(&self) -> (u64, u64, u64) {
        (
            self.puts.load(Ordering::Relaxed),
            self.reads.load(Ordering::Relaxed),
            self.other.load(Ordering::Relaxed),
        )
    }
}

impl ObjectStore for Counting {
    fn put(&self, path: &str, data: Bytes, mode: PutMode) -> Result<ObjectMeta, ObjectError> {
        self.puts.fetch_add(1, Ordering::Relaxed);
        self.inner.put(path, data, mode)
    }
    fn get(&self, path: &str) -> Result<(Bytes, ObjectMeta), ObjectError> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.inner.get(path)
    }
    fn get_range(&self, path: &str, range: Range<u64>) -> Result<Bytes, ObjectError> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.inner.get_range(path, range)
    }
    fn head(&self, path: &str) -> Result<ObjectMeta, ObjectError> {
        self.other.fetch_add(1, Ordering::Relaxed);
        self.inner.head(path)
    }
    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, ObjectError> {
        self.other.fetch_add(1, Ordering::Relaxed);
        self.inner.list(prefix)
    }
    fn delete(&self, path: &str) -> Result<(), ObjectError> {
        self.other.fetch_add(1, Ordering::Relaxed);
        self.inner.delete(path)
    }
}

#[derive(Debug, Serialize)]
struct Row {
    store: String,
    target: String,
    mode: String,
    commits: u64,
    commits_per_sec: f64,
    p50_us: f64,
    p99_us: f64,
    puts_per_commit: f64,
    reads_per_commit: f64,
    other_per_commit: f64,
    requests_per_commit: f64,
}

/// One open database, native or in the component.
enum Db {
    Native(Engine),
    Wasm(Box<ComponentEngine>),
}

impl Db {
    fn put(&self, key: Vec<u8>, value: Vec<u8>, opts: WriteOptions) -> MidgeResult<()> {
        match self {
            Db::Native(e) => {
                let mut tx = e.begin_tx(0, TransactionMode::ReadWrite)?;
                tx.put(key, value, None)?;
                tx.commit(opts)
            }
            Db::Wasm(e) => {
                let mut tx = e.begin_tx(0, TransactionMode::ReadWrite)?;
                tx.put(key, value, None)?;
                tx.commit(opts)
            }
        }
    }
    fn shutdown(self) -> MidgeResult<()> {
        match self {
            Db::Native(mut e) => e.shutdown(Duration::from_secs(30)),
            Db::Wasm(mut e) => e.shutdown(Duration::from_secs(30)),
        }
    }
}

fn open(
    target: &str,
    host: Option<&ComponentHost>,
    cache: SharedFs,
    store: SharedObjectStore,
) -> MidgeResult<Db> {
    match (target, host) {
        ("component", Some(h)) => {
            ComponentEngine::open_cloud(h, cache, store, "bench", ComponentOptions::default())
                .map(|e| Db::Wasm(Box::new(e)))
        }
        _ => Engine::open(OpenOptions::cloud_with_file_system(cache, store, "bench").build()).map(Db::Native),
    }
}

fn run_one(
    store_name: &str,
    store: SharedObjectStore,
    target: &str,
    host: Option<&ComponentHost>,
    strict: bool,
    commits: u64,
) -> anyhow::Result<Row> {
    let cache_dir = tempfile::tempdir()?;
    let cache: SharedFs = Arc::new(cntryl_midge::storage::local::LocalFs::new(cache_dir.path()));
    let counting = Counting::new(store);
    let db = open(target, host, cache, counting.clone())?;
    let before = counting.totals();
    let opts = if strict {
        WriteOptions::cloud_strict()
    } else {
        WriteOptions::cloud_async()
    };
    let mut samples = Vec::with_capacity(commits as usize);
    let start = Instant::now();
    for i in 0..commits {
        let t = Instant::now();
        db.put(
            format!("key{i:012}").into_bytes(),
            vec![(i % 251) as u8; 100],
            opts,
        )?;
        samples.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let secs = start.elapsed().as_secs_f64();
    db.shutdown()?;
    let after = counting.totals();
    let lat = stats::latency_of(&mut samples);
    let per = |a: u64, b: u64| (a - b) as f64 / commits as f64;
    let (puts, reads, other) = (
        per(after.0, before.0),
        per(after.1, before.1),
        per(after.2, before.2),
    );
    Ok(Row {
        store: store_name.into(),
        target: target.into(),
        mode: if strict { "cloud_strict" } else { "cloud_async" }.into(),
        commits,
        commits_per_sec: commits as f64 / secs,
        p50_us: lat.p50_us,
        p99_us: lat.p99_us,
        puts_per_commit: puts,
        reads_per_commit: reads,
        other_per_commit: other,
        requests_per_commit: puts + reads + other,
    })
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let commits: u64 = flag("--commits").map(|v| v.parse()).transpose()?.unwrap_or(300);
    let no_s3 = args.iter().any(|a| a == "--no-s3");
    let out = flag("--out").map(PathBuf::from).unwrap_or_else(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("results/cloud-{t}"))
    });
    std::fs::create_dir_all(&out)?;
    let host = ComponentHost::load(&guest::guest_wasm()?)?;
    let moto = if no_s3 {
        None
    } else {
        Some(midge_conformance::moto::Moto::start())
    };
    let mut rows = Vec::new();
    let bucket_dir = tempfile::tempdir()?;
    let mut n = 0;
    for store_name in ["s3 (moto, 127.0.0.1)", "directory", "memory"] {
        for target in ["native", "component"] {
            for strict in [true, false] {
                n += 1;
                let store: SharedObjectStore = match store_name {
                    "directory" => {
                        let dir = bucket_dir.path().join(format!("b{n}"));
                        std::fs::create_dir_all(&dir)?;
                        Arc::new(FsObjectStore::new(Arc::new(
                            cntryl_midge::storage::local::LocalFs::new(dir),
                        )))
                    }
                    "memory" => Arc::new(MemoryObjectStore::new()),
                    _ => match &moto {
                        Some(m) => Arc::new(m.bucket(&format!("bench{n}"))),
                        None => continue,
                    },
                };
                let row = run_one(store_name, store, target, Some(&host), strict, commits)?;
                eprintln!(
                    "{:<22} {:<9} {:<12} p50 {:>9.0} µs  p99 {:>9.0} µs  {:>5.2} requests/commit",
                    row.store, row.target, row.mode, row.p50_us, row.p99_us, row.requests_per_commit
                );
                rows.push(row);
            }
        }
    }
    drop(moto);
    let mut md = String::from(
        "| store | target | mode | commits/s | p50 | p99 | PUTs/commit | GETs/commit | other/commit | requests/commit |\n|---|---|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in &rows {
        md.push_str(&format!(
            "| {} | {} | {} | {:.0} | {:.2} ms | {:.2} ms | {:.2} | {:.2} | {:.2} | {:.2} |\n",
            r.store,
            r.target,
            r.mode,
            r.commits_per_sec,
            r.p50_us / 1000.0,
            r.p99_us / 1000.0,
            r.puts_per_commit,
            r.reads_per_commit,
            r.other_per_commit,
            r.requests_per_commit
        ));
    }
    println!("\n{md}");
    std::fs::write(out.join("cloud.md"), &md)?;
    std::fs::write(out.join("cloud.json"), serde_json::to_string_pretty(&rows)?)?;
    eprintln!("wrote {}", out.display());
    Ok(())
}
