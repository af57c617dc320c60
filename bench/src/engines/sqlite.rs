//! SQLite via rusqlite (bundled): `kv(k BLOB PRIMARY KEY, v BLOB) WITHOUT ROWID`, journal_mode=WAL,
//! synchronous=FULL for sync and NORMAL for buffered, one transaction per batch. A connection per thread
//! (pooled), so readers run beside the writer as WAL mode allows.

use super::{Caps, Durability, KvEngine, KvRead, Op};
use anyhow::Result;
use rusqlite::{Connection, OpenFlags, TransactionBehavior, params};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

pub struct SqliteKv {
    path: PathBuf,
    pool: Mutex<Vec<Conn>>,
}

struct Conn {
    c: Connection,
    mode: Option<Durability>,
}

impl SqliteKv {
    pub fn open(dir: &Path) -> Result<SqliteKv> {
        let kv = SqliteKv {
            path: dir.join("sqlite.db"),
            pool: Mutex::new(Vec::new()),
        };
        let c = kv.connect()?;
        c.c.execute_batch(
            "CREATE TABLE IF NOT EXISTS kv (k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID;",
        )?;
        kv.put_back(c);
        Ok(kv)
    }

    fn connect(&self) -> Result<Conn> {
        let c = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        c.busy_timeout(Duration::from_secs(60))?;
        c.pragma_update(None, "journal_mode", "WAL")?;
        c.pragma_update(None, "synchronous", "NORMAL")?;
        Ok(Conn {
            c,
            mode: Some(Durability::Buffered),
        })
    }

    fn take(&self) -> Result<Conn> {
        let pooled = self
            .pool
            .lock()
            .map_err(|_| anyhow::anyhow!("pool poisoned"))?
            .pop();
        match pooled {
            Some(c) => Ok(c),
            None => self.connect(),
        }
    }

    fn put_back(&self, c: Conn) {
        if let Ok(mut p) = self.pool.lock() {
            p.push(c);
        }
    }

    fn with_conn<T>(&self, f: impl FnOnce(&mut Conn) -> Result<T>) -> Result<T> {
        let mut c = self.take()?;
        let r = f(&mut c);
        // A connection is only reused after a clean exit (no transaction left open).
        if c.c.is_autocommit() {
            self.put_back(c);
        }
        r
    }
}

struct SqliteRead<'a> {
    c: &'a Connection,
}

impl KvRead for SqliteRead<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<usize>> {
        let mut st = self.c.prepare_cached("SELECT v FROM kv WHERE k = ?1")?;
        let mut rows = st.query(params![key])?;
        Ok(match rows.next()? {
            Some(r) => Some(super::consume(r.get_ref(0)?.as_blob()?)),
            None => None,
        })
    }

    fn scan(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
        reverse: bool,
        visit: &mut dyn FnMut(&[u8], &[u8]),
    ) -> Result<usize> {
        let order = if reverse { "DESC" } else { "ASC" };
        let lim = i64::try_from(limit).unwrap_or(i64::MAX);
        let sql = match end {
            Some(_) => {
                format!("SELECT k, v FROM kv WHERE k >= ?1 AND k < ?2 ORDER BY k {order} LIMIT ?3")
            }
            None => format!("SELECT k, v FROM kv WHERE k >= ?1 ORDER BY k {order} LIMIT ?3"),
        };
        let mut st = self.c.prepare_cached(&sql)?;
        let mut rows = match end {
            Some(e) => st.query(params![start, e, lim])?,
            None => st.query(rusqlite::params_from_iter([
                rusqlite::types::Value::Blob(start.to_vec()),
                rusqlite::types::Value::Null,
                rusqlite::types::Value::Integer(lim),
            ]))?,
        };
        let mut n = 0;
        while let Some(r) = rows.next()? {
            let k = r.get_ref(0)?.as_blob()?;
            let v = r.get_ref(1)?.as_blob()?;
            visit(k, v);
            n += 1;
        }
        Ok(n)
    }
}

impl KvEngine for SqliteKv {
    fn caps(&self) -> Caps {
        Caps {
            sync: true,
            delete_range: true,
            fsync_counter: false,
        }
    }

    fn write(&self, ops: &[Op<'_>], durability: Durability) -> Result<()> {
        self.with_conn(|c| {
            if c.mode != Some(durability) {
                let level = match durability {
                    Durability::Sync => "FULL",
                    Durability::Buffered => "NORMAL",
                };
                c.c.pragma_update(None, "synchronous", level)?;
                c.mode = Some(durability);
            }
            let tx = c.c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            {
                let mut put = tx.prepare_cached("INSERT OR REPLACE INTO kv (k, v) VALUES (?1, ?2)")?;
                let mut del = tx.prepare_cached("DELETE FROM kv WHERE k = ?1")?;
                let mut del_range = tx.prepare_cached("DELETE FROM kv WHERE k >= ?1 AND k < ?2")?;
                for op in ops {
                    match *op {
                        Op::Put(k, v) => put.execute(params![k, v])?,
                        Op::Delete(k) => del.execute(params![k])?,
                        Op::DeleteRange(s, e) => del_range.execute(params![s, e])?,
                    };
                }
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn with_reader(&self, f: &mut dyn FnMut(&dyn KvRead) -> Result<()>) -> Result<()> {
        self.with_conn(|c| {
            c.c.execute_batch("BEGIN DEFERRED")?;
            let r = f(&SqliteRead { c: &c.c });
            c.c.execute_batch("COMMIT")?;
            r
        })
    }

    fn flush(&self) -> Result<()> {
        self.with_conn(|c| {
            c.c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
            Ok(())
        })
    }

    fn compact(&self) -> Result<()> {
        self.with_conn(|c| {
            c.c.execute_batch("VACUUM")?;
            c.c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
            Ok(())
        })
    }

    fn close(self: Box<Self>) -> Result<()> {
        let pool = std::mem::take(&mut *self.pool.lock().map_err(|_| anyhow::anyhow!("pool poisoned"))?);
        for c in pool {
            c.c.close().map_err(|(_, e)| e)?;
        }
        Ok(())
    }
}
