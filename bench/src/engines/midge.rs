//! Midge, natively, through its public API only.

use super::{Caps, Counters, Durability, KvEngine, KvRead, Op};
use anyhow::Result;
use cntryl_midge::prelude::*;
use cntryl_midge::{Bytes, ColumnFamilyHandle};
use std::path::Path;
use std::sync::RwLock;
use std::time::Duration;

pub struct MidgeKv {
    // `shutdown` needs `&mut Engine`; readers and writers share the read side (Engine is Send + Sync).
    engine: RwLock<Option<Engine>>,
    cf: ColumnFamilyHandle,
}

impl MidgeKv {
    pub fn open(dir: &Path) -> Result<MidgeKv> {
        let engine = Engine::open(OpenOptions::local(dir).build())?;
        let cf = engine
            .get_column_family("default")
            .ok_or_else(|| anyhow::anyhow!("no default column family"))?;
        Ok(MidgeKv {
            engine: RwLock::new(Some(engine)),
            cf,
        })
    }

    fn with_engine<T>(&self, f: impl FnOnce(&Engine) -> Result<T>) -> Result<T> {
        let guard = self
            .engine
            .read()
            .map_err(|_| anyhow::anyhow!("engine lock poisoned"))?;
        f(guard.as_ref().ok_or_else(|| anyhow::anyhow!("engine closed"))?)
    }
}

impl MidgeKv {
    fn commit_once(&self, e: &Engine, ops: &[Op<'_>], durability: Durability) -> MidgeResult<()> {
        e.write(
            self.cf.id(),
            super::midge_batch(ops),
            super::midge_options(durability),
        )
    }
}

struct MidgeRead<'a> {
    tx: &'a Transaction,
}

impl KvRead for MidgeRead<'_> {
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
        drain(self.tx.scan(&q)?, visit)
    }

    fn prefix(&self, prefix: &[u8], limit: usize, visit: &mut dyn FnMut(&[u8], &[u8])) -> Result<usize> {
        let mut q = Query::new().prefix(Bytes::copy_from_slice(prefix));
        if limit != usize::MAX {
            q = q.limit(limit);
        }
        drain(self.tx.scan(&q)?, visit)
    }
}

fn drain(mut it: ScanIterator<'_>, visit: &mut dyn FnMut(&[u8], &[u8])) -> Result<usize> {
    let mut n = 0;
    for (k, v) in it.by_ref() {
        visit(&k, &v);
        n += 1;
    }
    it.status()?;
    Ok(n)
}

impl KvEngine for MidgeKv {
    fn caps(&self) -> Caps {
        Caps {
            sync: true,
            delete_range: true,
            fsync_counter: true,
        }
    }

    fn write(&self, ops: &[Op<'_>], durability: Durability) -> Result<()> {
        self.with_engine(|e| {
            // A stalled write was refused before WAL admission: wait as a user would, then retry. The wait
            // is part of this commit's latency.
            loop {
                match self.commit_once(e, ops, durability) {
                    Err(MidgeError::WriteStall(_)) => {
                        e.wait_for_write_stall_clear(&self.cf, Duration::from_secs(60))?;
                    }
                    other => return Ok(other?),
                }
            }
        })
    }

    fn with_reader(&self, f: &mut dyn FnMut(&dyn KvRead) -> Result<()>) -> Result<()> {
        self.with_engine(|e| {
            let tx = e.begin_tx(self.cf.id(), TransactionMode::ReadOnly)?;
            f(&MidgeRead { tx: &tx })?;
            tx.rollback()?;
            Ok(())
        })
    }

    fn flush(&self) -> Result<()> {
        self.with_engine(|e| Ok(e.flush_cf(&self.cf)?))
    }

    fn compact(&self) -> Result<()> {
        self.with_engine(|e| {
            e.flush_cf(&self.cf)?;
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
        let mut guard = self
            .engine
            .write()
            .map_err(|_| anyhow::anyhow!("engine lock poisoned"))?;
        if let Some(mut e) = guard.take() {
            e.shutdown(Duration::from_secs(30))?;
        }
        Ok(())
    }
}
