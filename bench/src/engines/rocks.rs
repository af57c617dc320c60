//! RocksDB (the `rocksdb` crate, feature `rocksdb`): WriteBatch with `set_sync(true)` (sync) or
//! `set_sync(false)` with the WAL on (buffered); native range deletes.

use super::{Caps, Durability, KvEngine, KvRead, Op};
use anyhow::Result;
use rocksdb::{DB, Direction, IteratorMode, Options, ReadOptions, WriteBatch, WriteOptions};
use std::path::Path;

pub struct RocksKv {
    db: DB,
}

impl RocksKv {
    pub fn open(dir: &Path) -> Result<RocksKv> {
        let mut o = Options::default();
        o.create_if_missing(true);
        o.increase_parallelism(2);
        Ok(RocksKv {
            db: DB::open(&o, dir)?,
        })
    }
}

struct RocksRead<'a> {
    db: &'a DB,
    snap: rocksdb::Snapshot<'a>,
}

impl KvRead for RocksRead<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<usize>> {
        Ok(self.snap.get_pinned(key)?.map(|v| super::consume(&v)))
    }

    fn scan(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
        reverse: bool,
        visit: &mut dyn FnMut(&[u8], &[u8]),
    ) -> Result<usize> {
        let mut ro = ReadOptions::default();
        ro.set_snapshot(&self.snap);
        ro.set_iterate_lower_bound(start.to_vec());
        if let Some(e) = end {
            ro.set_iterate_upper_bound(e.to_vec());
        }
        let mode = if reverse {
            IteratorMode::End
        } else {
            IteratorMode::From(start, Direction::Forward)
        };
        let mut n = 0;
        for r in self.db.iterator_opt(mode, ro).take(limit) {
            let (k, v) = r?;
            visit(&k, &v);
            n += 1;
        }
        Ok(n)
    }
}

impl KvEngine for RocksKv {
    fn caps(&self) -> Caps {
        Caps {
            sync: true,
            delete_range: true,
            fsync_counter: false,
        }
    }

    fn write(&self, ops: &[Op<'_>], durability: Durability) -> Result<()> {
        let mut b = WriteBatch::default();
        for op in ops {
            match *op {
                Op::Put(k, v) => b.put(k, v),
                Op::Delete(k) => b.delete(k),
                Op::DeleteRange(s, e) => b.delete_range(s, e),
            }
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(durability == Durability::Sync);
        self.db.write_opt(b, &wo)?;
        Ok(())
    }

    fn with_reader(&self, f: &mut dyn FnMut(&dyn KvRead) -> Result<()>) -> Result<()> {
        f(&RocksRead {
            db: &self.db,
            snap: self.db.snapshot(),
        })
    }

    fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }

    fn compact(&self) -> Result<()> {
        self.db.flush()?;
        self.db.compact_range::<&[u8], &[u8]>(None, None);
        Ok(())
    }

    fn close(self: Box<Self>) -> Result<()> {
        self.db.flush_wal(true)?;
        Ok(())
    }
}
