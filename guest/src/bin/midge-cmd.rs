//! `midge-cmd`: a thin command-line front end to the engine, for `wasmtime run` recovery tests.
//!
//! ```text
//! midge-cmd put <key> <value>        one sync commit
//! midge-cmd get <key>                prints the value or (none)
//! midge-cmd scan                     prints key=value lines in order
//! midge-cmd load <start> <count>     commits 3-key sync transactions, printing `ack <i>` after each commit
//! midge-cmd recover                  opens, prints recovery metrics and the row count
//! midge-cmd metrics                  opens, prints runtime and recovery metrics
//! midge-cmd verify                   offline verification summary
//! ```
//! The database directory is `$MIDGE_DB` or `/db` (the directory `wasmtime run --dir <host>::/db` grants).
#![allow(clippy::disallowed_methods)]

use cntryl_midge::prelude::*;
use std::io::Write;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let db = std::env::var("MIDGE_DB").unwrap_or_else(|_| "/db".to_string());
    if let Err(e) = run(&db, &args) {
        eprintln!("error: {} ({})", e, e.kind_name());
        std::process::exit(1);
    }
}

fn run(db: &str, args: &[String]) -> MidgeResult<()> {
    let out = std::io::stdout();
    let mut out = out.lock();
    let arg = |i: usize| {
        args.get(i)
            .cloned()
            .ok_or_else(|| MidgeError::InvalidArgument("missing argument".into()))
    };
    match args.first().map(String::as_str) {
        Some("put") => {
            let engine = Engine::open(OpenOptions::local(db).build())?;
            let mut tx = engine.begin_tx(0, TransactionMode::ReadWrite)?;
            tx.put(arg(1)?.into_bytes(), arg(2)?.into_bytes(), None)?;
            tx.commit(WriteOptions::sync())?;
            let _ = writeln!(out, "ok");
        }
        Some("get") => {
            let engine = Engine::open(OpenOptions::local(db).build())?;
            let tx = engine.begin_tx(0, TransactionMode::ReadOnly)?;
            match tx.get(arg(1)?.as_bytes())? {
                Some(v) => {
                    let _ = writeln!(out, "{}", String::from_utf8_lossy(&v));
                }
                None => {
                    let _ = writeln!(out, "(none)");
                }
            }
        }
        Some("scan") => {
            let engine = Engine::open(OpenOptions::local(db).build())?;
            let tx = engine.begin_tx(0, TransactionMode::ReadOnly)?;
            let mut it = tx.scan(&Query::new())?;
            while let Some((k, v)) = it.try_next()? {
                let _ = writeln!(
                    out,
                    "{}={}",
                    String::from_utf8_lossy(&k),
                    String::from_utf8_lossy(&v)
                );
            }
        }
        Some("load") => {
            let start: u64 = arg(1)?
                .parse()
                .map_err(|_| MidgeError::InvalidArgument("start".into()))?;
            let count: u64 = arg(2)?
                .parse()
                .map_err(|_| MidgeError::InvalidArgument("count".into()))?;
            let engine = Engine::open(OpenOptions::local(db).build())?;
            for i in start..start + count {
                let mut tx = engine.begin_tx(0, TransactionMode::ReadWrite)?;
                for part in ["a", "b", "c"] {
                    tx.put(
                        format!("t{i:08}-{part}").into_bytes(),
                        format!("value-{i}-{part}").into_bytes(),
                        None,
                    )?;
                }
                tx.commit(WriteOptions::sync())?;
                let _ = writeln!(out, "ack {i}");
                let _ = out.flush();
            }
        }
        Some("recover") => {
            let engine = Engine::open(OpenOptions::local(db).build())?;
            let r = engine.get_recovery_metrics()?;
            let tx = engine.begin_tx(0, TransactionMode::ReadOnly)?;
            let rows = tx.scan(&Query::new())?.try_collect()?.len();
            let _ = writeln!(
                out,
                "records_replayed={} bytes_replayed={} torn_tail_bytes={} rows={rows}",
                r.wal_recovery_records_replayed,
                r.wal_recovery_bytes_replayed,
                r.wal_torn_tail_bytes_truncated
            );
        }
        Some("metrics") => {
            let engine = Engine::open(OpenOptions::local(db).build())?;
            let r = engine.get_recovery_metrics()?;
            let m = engine.get_runtime_metrics()?;
            let _ = writeln!(
                out,
                "current_sequence={} sst_count={} sst_bytes={} wal_segments={} records_replayed={} torn_tail_bytes={}",
                m.current_sequence,
                m.sst_count,
                m.sst_bytes,
                m.wal_segments,
                r.wal_recovery_records_replayed,
                r.wal_torn_tail_bytes_truncated
            );
        }
        Some("verify") => {
            let rep = Engine::verify_path(db)?;
            let _ = writeln!(
                out,
                "health={:?} sst_files={} wal_records={} problems={}",
                rep.health,
                rep.sst_files_verified,
                rep.wal_recovery_records_replayed,
                rep.problems.len()
            );
        }
        _ => {
            return Err(MidgeError::InvalidArgument(
                "usage: midge-cmd put|get|scan|load|recover|metrics|verify …".into(),
            ));
        }
    }
    Ok(())
}
