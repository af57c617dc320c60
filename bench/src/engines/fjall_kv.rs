//! fjall 3.x: one keyspace; batches with `PersistMode::SyncData` (sync) or its default `Buffer` (buffered).

use super::{Caps, Durability, KvEngine, KvRead, Op};
use anyhow::Result;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode, Readable, Snapshot};
use std::ops::Bound;
use std::path::Path;

pub struct FjallKv {
    db: Database,
    ks: Keyspace,
}

impl FjallKv {
    pub fn open(dir: &Path) -> Result<FjallKv> {
        let db = Database::builder(dir).open()?;
        let ks = db.keyspace("default", KeyspaceCreateOptions::default)?;
        Ok(FjallKv { db, ks })
    }
}

struct FjallRead<'a> {
    snap: Snapshot,
    ks: &'a Keyspace,
}

impl KvRead for FjallRead<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<usize>> {
        Ok(self.snap.get(self.ks, key)?.map(|v| super::consume(&v)))
    }

    fn scan(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
        reverse: bool,
        visit: &mut dyn FnMut(&[u8], &[u8]),
    ) -> Result<usize> {
        let hi = end.map_or(Bound::Unbounded, Bound::Excluded);
        let it = self.snap.range::<&[u8], _>(self.ks, (Bound::Included(start), hi));
        let mut n = 0;
        if reverse {
            for g in it.rev().take(limit) {
                let (k, v) = g.into_inner()?;
                visit(&k, &v);
                n += 1;
            }
        } else {
            for g in it.take(limit) {
                let (k, v) = g.into_inner()?;
                visit(&k, &v);
                n += 1;
            }
        }
        Ok(n)
    }

    fn prefix(&self, prefix: &[u8], limit: usize, visit: &mut dyn FnMut(&[u8], &[u8])) -> Result<usize> {
        let mut n = 0;
        for g in self.snap.prefix(self.ks, prefix).take(limit) {
            let (k, v) = g.into_inner()?;
            visit(&k, &v);
            n += 1;
        }
        Ok(n)
    }
}

impl KvEngine for FjallKv {
    fn caps(&self) -> Caps {
        Caps {
            sync: true,
            delete_range: false,
            fsync_counter: false,
        }
    }

    fn write(&self, ops: &[Op<'_>], durability: Durability) -> Result<()> {
        let mut b = self.db.batch();
        if durability == Durability::Sync {
            b = b.durability(Some(PersistMode::SyncData));
        }
        for op in ops {
            match *op {
                Op::Put(k, v) => b.insert(&self.ks, k, v),
                Op::Delete(k) => b.remove(&self.ks, k),
                Op::DeleteRange(..) => anyhow::bail!("fjall has no range delete"),
            }
        }
        b.commit()?;
        Ok(())
    }

    fn with_reader(&self, f: &mut dyn FnMut(&dyn KvRead) -> Result<()>) -> Result<()> {
        f(&FjallRead {
            snap: self.db.snapshot(),
            ks: &self.ks,
        })
    }

    fn flush(&self) -> Result<()> {
        self.ks.rotate_memtable_and_wait()?;
        self.db.persist(PersistMode::SyncData)?;
        Ok(())
    }

    fn compact(&self) -> Result<()> {
        self.flush()?;
        self.ks.major_compact()?;
        Ok(())
    }

    fn close(self: Box<Self>) -> Result<()> {
        self.db.persist(PersistMode::SyncAll)?;
        Ok(())
    }
}
