//! redb 4.x: one table of byte slices; `Durability::Immediate` (sync) or `Durability::None` (buffered).
//!
//! Flag for readers: redb's `None` commits are not persisted until a later `Immediate` commit, and a long
//! run of them grows the file (redb #810, #1066); buffered here is weaker than a WAL's buffered mode.

use super::{Caps, Durability as D, KvEngine, KvRead, Op};
use anyhow::Result;
use redb::{Database, Durability, ReadOnlyTable, ReadableDatabase, TableDefinition};
use std::ops::Bound;
use std::path::Path;
use std::sync::RwLock;

const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");

pub struct RedbKv {
    // `compact` needs `&mut Database`; everything else shares the read side.
    db: RwLock<Database>,
}

impl RedbKv {
    pub fn open(dir: &Path) -> Result<RedbKv> {
        let db = Database::create(dir.join("redb.db"))?;
        let tx = db.begin_write()?;
        tx.open_table(TABLE)?;
        tx.commit()?;
        Ok(RedbKv { db: RwLock::new(db) })
    }

    fn db(&self) -> Result<std::sync::RwLockReadGuard<'_, Database>> {
        self.db.read().map_err(|_| anyhow::anyhow!("redb lock poisoned"))
    }
}

struct RedbRead {
    t: ReadOnlyTable<&'static [u8], &'static [u8]>,
}

impl KvRead for RedbRead {
    fn get(&self, key: &[u8]) -> Result<Option<usize>> {
        Ok(self.t.get(key)?.map(|v| super::consume(v.value())))
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
        let it = self.t.range::<&[u8]>((Bound::Included(start), hi))?;
        let mut n = 0;
        if reverse {
            for r in it.rev().take(limit) {
                let (k, v) = r?;
                visit(k.value(), v.value());
                n += 1;
            }
        } else {
            for r in it.take(limit) {
                let (k, v) = r?;
                visit(k.value(), v.value());
                n += 1;
            }
        }
        Ok(n)
    }
}

impl KvEngine for RedbKv {
    fn caps(&self) -> Caps {
        Caps {
            sync: true,
            delete_range: false,
            fsync_counter: false,
        }
    }

    fn write(&self, ops: &[Op<'_>], durability: D) -> Result<()> {
        let db = self.db()?;
        let mut tx = db.begin_write()?;
        tx.set_durability(match durability {
            D::Sync => Durability::Immediate,
            D::Buffered => Durability::None,
        })?;
        {
            let mut t = tx.open_table(TABLE)?;
            for op in ops {
                match *op {
                    Op::Put(k, v) => {
                        t.insert(k, v)?;
                    }
                    Op::Delete(k) => {
                        t.remove(k)?;
                    }
                    Op::DeleteRange(..) => anyhow::bail!("redb adapter has no range delete"),
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn with_reader(&self, f: &mut dyn FnMut(&dyn KvRead) -> Result<()>) -> Result<()> {
        let db = self.db()?;
        let tx = db.begin_read()?;
        let t = tx.open_table(TABLE)?;
        f(&RedbRead { t })
    }

    fn flush(&self) -> Result<()> {
        // An empty Immediate commit makes every earlier `None` commit durable.
        let db = self.db()?;
        let mut tx = db.begin_write()?;
        tx.set_durability(Durability::Immediate)?;
        tx.commit()?;
        Ok(())
    }

    fn compact(&self) -> Result<()> {
        self.flush()?;
        let mut db = self
            .db
            .write()
            .map_err(|_| anyhow::anyhow!("redb lock poisoned"))?;
        while db.compact()? {}
        Ok(())
    }

    fn close(self: Box<Self>) -> Result<()> {
        self.flush()
    }
}
