//! Midge as a WASI component in wasmtime, through `midge_host::ComponentEngine` (same method names as the
//! native engine). The guest is built in release for wasm32-wasip2 on first use and compiled once per process.
//!
//! What the sandbox changes, by design of the host today: one store behind one lock, so calls from several
//! threads take turns (sync commits from several threads are combined by the host into one fsync per round),
//! and background flush/compaction run inline in the guest. A commit crosses the boundary once (`ComponentEngine::write`, a write batch), scans come back 256 rows per crossing.

use super::{Caps, Counters, Durability, KvEngine, KvRead, Op};
use anyhow::{Context, Result};
use cntryl_midge::{Bytes, MidgeError, Query, TransactionMode};
use midge_host::{ComponentEngine, ComponentHost, ComponentTransaction};
use std::path::Path;
use std::sync::{OnceLock, RwLock};
use std::time::Duration;

/// Builds the plugin component (release, wasm32-wasip2) and compiles it; once per process.
pub fn host() -> Result<&'static ComponentHost> {
    static HOST: OnceLock<std::result::Result<ComponentHost, String>> = OnceLock::new();
    HOST.get_or_init(|| {
        let wasm = guest_wasm().map_err(|e| format!("{e:#}"))?;
        // `MIDGE_COMPONENT_NO_DEADLINES=1`: a host compiled without deadline checks (the benchmark never sets a
        // deadline; ~7% less CPU per point-read miss). Default: the deadline-capable host most embedders load.
        let load = if std::env::var_os("MIDGE_COMPONENT_NO_DEADLINES").is_some_and(|v| v == "1") {
            ComponentHost::load_without_deadlines
        } else {
            ComponentHost::load
        };
        load(&wasm).map_err(|e| format!("loading {}: {e}", wasm.display()))
    })
    .as_ref()
    .map_err(|e| anyhow::anyhow!("{e}"))
}

pub use crate::guest::guest_wasm;

pub struct ComponentKv {
    engine: RwLock<Option<ComponentEngine>>,
    cf: u32,
}

impl ComponentKv {
    pub fn open(dir: &Path) -> Result<ComponentKv> {
        let engine = ComponentEngine::open(host()?, dir)?;
        let cf = engine
            .get_column_family("default")
            .context("no default column family")?;
        Ok(ComponentKv {
            engine: RwLock::new(Some(engine)),
            cf,
        })
    }

    fn with_engine<T>(&self, f: impl FnOnce(&ComponentEngine) -> Result<T>) -> Result<T> {
        let g = self
            .engine
            .read()
            .map_err(|_| anyhow::anyhow!("engine lock poisoned"))?;
        f(g.as_ref().context("engine closed")?)
    }

    fn commit_once(
        &self,
        e: &ComponentEngine,
        ops: &[Op<'_>],
        durability: Durability,
    ) -> cntryl_midge::MidgeResult<()> {
        e.write(self.cf, super::midge_batch(ops), super::midge_options(durability))
    }
}

struct ComponentRead<'a> {
    tx: &'a ComponentTransaction<'a>,
}

impl KvRead for ComponentRead<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<usize>> {
        Ok(self.tx.get(key)?.map(|v| super::consume(&v)))
    }

    fn scan(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
        reverse: bool,
        visit: &mut dyn FnMut(&[u8], &[u8]),
    ) -> Result<usize> {
        let mut q = Query::new().start_key(Bytes::copy_from_slice(start));
        if let Some(e) = end {
            q = q.end_key(Bytes::copy_from_slice(e));
        }
        if limit != usize::MAX {
            q = q.limit(limit);
        }
        if reverse {
            q = q.reverse();
        }
        let rows = self.tx.scan(&q)?;
        for (k, v) in &rows {
            visit(k, v);
        }
        Ok(rows.len())
    }

    fn prefix(&self, prefix: &[u8], limit: usize, visit: &mut dyn FnMut(&[u8], &[u8])) -> Result<usize> {
        let mut q = Query::new().prefix(Bytes::copy_from_slice(prefix));
        if limit != usize::MAX {
            q = q.limit(limit);
        }
        let rows = self.tx.scan(&q)?;
        for (k, v) in &rows {
            visit(k, v);
        }
        Ok(rows.len())
    }
}

impl KvEngine for ComponentKv {
    fn caps(&self) -> Caps {
        Caps {
            sync: true,
            delete_range: true,
            fsync_counter: true,
        }
    }

    fn write(&self, ops: &[Op<'_>], durability: Durability) -> Result<()> {
        self.with_engine(|e| {
            loop {
                match self.commit_once(e, ops, durability) {
                    // Inline background work runs on the next calls; back off briefly and retry.
                    Err(MidgeError::WriteStall(_)) => std::thread::sleep(Duration::from_millis(1)),
                    other => return Ok(other?),
                }
            }
        })
    }

    fn with_reader(&self, f: &mut dyn FnMut(&dyn KvRead) -> Result<()>) -> Result<()> {
        self.with_engine(|e| {
            let tx = e.begin_tx(self.cf, TransactionMode::ReadOnly)?;
            f(&ComponentRead { tx: &tx })?;
            tx.rollback()?;
            Ok(())
        })
    }

    fn flush(&self) -> Result<()> {
        self.with_engine(|e| Ok(e.flush_cf(self.cf)?))
    }

    fn compact(&self) -> Result<()> {
        self.with_engine(|e| {
            e.flush_cf(self.cf)?;
            e.compact_all()?;
            Ok(())
        })
    }

    fn counters(&self) -> Counters {
        self.with_engine(|e| Ok(Counters::of_midge(&e.get_runtime_metrics()?)))
            .unwrap_or_default()
    }

    fn open_report(&self) -> serde_json::Value {
        self.with_engine(|e| {
            let r = e.get_recovery_metrics()?;
            Ok(serde_json::json!({
                "wal_recovery_records_replayed": r.wal_recovery_records_replayed,
                "wal_recovery_bytes_replayed": r.wal_recovery_bytes_replayed,
            }))
        })
        .unwrap_or(serde_json::Value::Null)
    }

    fn close(self: Box<Self>) -> Result<()> {
        let mut g = self
            .engine
            .write()
            .map_err(|_| anyhow::anyhow!("engine lock poisoned"))?;
        if let Some(mut e) = g.take() {
            e.shutdown(Duration::from_secs(30))?;
        }
        Ok(())
    }
}
