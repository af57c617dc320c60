//! sled 0.34: the buffered subset only (its sync story is excluded: sled #1351). Reads have no snapshot.

use super::{Caps, Durability, KvEngine, KvRead, Op};
use anyhow::Result;
use std::ops::Bound;
use std::path::Path;

pub struct SledKv {
    db: sled::Db,
}

impl SledKv {
    pub fn open(dir: &Path) -> Result<SledKv> {
        Ok(SledKv {
            db: sled::Config::new().path(dir).open()?,
        })
    }
}

impl KvRead for SledKv {
    fn get(&self, key: &[u8]) -> Result<Option<usize>> {
        Ok(self.db.get(key)?.map(|v| super::consume(&v)))
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
        let it = self.db.range::<&[u8], _>((Bound::Included(start), hi));
        let mut n = 0;
        if reverse {
            for r in it.rev().take(limit) {
                let (k, v) = r?;
                visit(&k, &v);
                n += 1;
            }
        } else {
            for r in it.take(limit) {
                let (k, v) = r?;
                visit(&k, &v);
                n += 1;
            }
        }
        Ok(n)
    }

    fn prefix(&self, prefix: &[u8], limit: usize, visit: &mut dyn FnMut(&[u8], &[u8])) -> Result<usize> {
        let mut n = 0;
        for r in self.db.scan_prefix(prefix).take(limit) {
            let (k, v) = r?;
            visit(&k, &v);
            n += 1;
        }
        Ok(n)
    }
}

impl KvEngine for SledKv {
    fn caps(&self) -> Caps {
        Caps {
            sync: false,
            delete_range: false,
            fsync_counter: false,
        }
    }

    fn write(&self, ops: &[Op<'_>], durability: Durability) -> Result<()> {
        anyhow::ensure!(
            durability == Durability::Buffered,
            "sled runs the buffered subset only"
        );
        let mut b = sled::Batch::default();
        for op in ops {
            match *op {
                Op::Put(k, v) => b.insert(k, v),
                Op::Delete(k) => b.remove(k),
                Op::DeleteRange(..) => anyhow::bail!("sled has no range delete"),
            }
        }
        self.db.apply_batch(b)?;
        Ok(())
    }

    fn with_reader(&self, f: &mut dyn FnMut(&dyn KvRead) -> Result<()>) -> Result<()> {
        f(self)
    }

    fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }

    fn compact(&self) -> Result<()> {
        // sled has no manual compaction; its segment cleaner runs on its own.
        self.flush()
    }

    fn close(self: Box<Self>) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }
}
