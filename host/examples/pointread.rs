//! Point reads, native vs component, on the benchmark's shape: 16-byte keys, 100-byte values, keys loaded in
//! random order then as many random overwrites, flushed, then read in views of 1,000 reads. Prints ns/op for
//! hits and misses on each side, then the cost of two trivial component calls (so the fixed per-call cost and
//! the in-guest lookup cost can be told apart; profile with `perf record` and `MIDGE_WASM_PERFMAP=1`).
//! `cargo run --release -p midge-host --example pointread -- <midge_guest.wasm> <dir> [keys] [reads] [side] [phase]`
//! (`side`: `native` or `component` runs one side only; `phase`: `hit`, `miss` or `calls` runs one part only).
#![allow(clippy::disallowed_methods)]

use cntryl_midge::prelude::*;
use midge_host::{ComponentEngine, ComponentHost};
use std::time::Instant;

fn key(i: u64) -> [u8; 16] {
    let mut k = [b'0'; 16];
    let mut x = i;
    for slot in k.iter_mut().rev() {
        *slot = b'0' + (x % 10) as u8;
        x /= 10;
    }
    k
}

fn missing(i: u64) -> [u8; 16] {
    let mut k = key(i);
    k[15] = b'x';
    k
}

/// One commit's puts.
type Rows = Vec<(Vec<u8>, Vec<u8>)>;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// This process's CPU time (user + system) in nanoseconds, from `/proc/self/stat` (clock ticks, 10 ms on
/// Linux); 0 where that file does not exist. Wall time on a shared machine counts other tenants' work too.
fn cpu_ns() -> u128 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0;
    };
    // Fields after the command name (which ends at the last ')'): utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u128> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|x| x.parse().ok())
        .collect();
    f.iter().sum::<u128>() * 10_000_000
}

fn value(r: &mut Rng) -> Vec<u8> {
    (0..100).map(|_| r.next() as u8).collect()
}

fn main() -> MidgeResult<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (wasm, dir) = match args.as_slice() {
        [w, d, ..] => (w.clone(), std::path::PathBuf::from(d)),
        _ => {
            return Err(MidgeError::InvalidArgument(
                "usage: pointread <midge_guest.wasm> <dir> [keys] [reads] [native|component] [hit|miss|calls]"
                    .into(),
            ));
        }
    };
    let n: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(200_000);
    let total: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(1_000_000);
    let only = args.get(4).cloned().unwrap_or_default();
    let phase = args.get(5).cloned().unwrap_or_default();
    // `calls` runs no reads; an empty phase runs everything.
    let phases: Vec<(&str, bool)> = [("hit", false), ("miss", true)]
        .into_iter()
        .filter(|(l, _)| phase.is_empty() || phase == *l)
        .collect();

    let load = |put: &mut dyn FnMut(Rows) -> MidgeResult<()>| -> MidgeResult<()> {
        let mut r = Rng(0x9E37_79B9_7F4A_7C15);
        let mut order: Vec<u64> = (0..n).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, (r.next() % (i as u64 + 1)) as usize);
        }
        for chunk in order.chunks(1000) {
            put(chunk.iter().map(|&i| (key(i).to_vec(), value(&mut r))).collect())?;
        }
        // Then overwrite as many random keys (as the benchmark's `overwrite` does before its reads).
        for _ in 0..n / 1000 {
            put((0..1000)
                .map(|_| (key(r.next() % n).to_vec(), value(&mut r)))
                .collect())?;
        }
        Ok(())
    };

    // Times every phase's point reads (native and component transactions share the method names but no
    // trait).
    macro_rules! read_phases {
        ($e:ident, $who:literal) => {
            for &(label, miss) in &phases {
                let mut r = Rng(12345);
                let mut found = 0usize;
                let (t, c) = (Instant::now(), cpu_ns());
                let mut done = 0;
                while done < total {
                    let tx = $e.begin_tx(0, TransactionMode::ReadOnly)?;
                    for _ in 0..1000 {
                        let i = r.next() % n;
                        let k = if miss { missing(i) } else { key(i) };
                        found += tx.get(&k)?.map_or(0, |v| v.len());
                    }
                    tx.rollback()?;
                    done += 1000;
                }
                let ns = t.elapsed().as_nanos() as f64 / total as f64;
                let cpu = (cpu_ns() - c) as f64 / total as f64;
                println!("{} {label:5} {ns:8.1} ns/op, cpu {cpu:8.1} ns/op (found bytes {found})", $who);
            }
        };
    }

    if only != "component" {
        let d = dir.join("native");
        let _ = std::fs::remove_dir_all(&d);
        let e = Engine::open(OpenOptions::local(&d).build())?;
        load(&mut |rows| {
            let mut tx = e.begin_tx(0, TransactionMode::ReadWrite)?;
            for (k, v) in rows {
                tx.put(k, v, None)?;
            }
            tx.commit(WriteOptions::buffered())
        })?;
        let cf = e.get_column_family("default").expect("default cf");
        e.flush_cf(&cf)?;
        println!("native    ssts {}", e.get_runtime_metrics()?.sst_count);
        read_phases!(e, "native   ");
    }

    if only != "native" {
        // `MIDGE_COMPONENT_NO_DEADLINES=1`: compile without deadline checks (`load_without_deadlines`).
        let host = if std::env::var_os("MIDGE_COMPONENT_NO_DEADLINES").is_some_and(|v| v == "1") {
            ComponentHost::load_without_deadlines(wasm.as_ref())?
        } else {
            ComponentHost::load(wasm.as_ref())?
        };
        let d = dir.join("component");
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).map_err(MidgeError::Io)?;
        let e = ComponentEngine::open(&host, &d)?;
        load(&mut |rows| {
            let mut tx = e.begin_tx(0, TransactionMode::ReadWrite)?;
            tx.put_many(&rows)?;
            tx.commit(WriteOptions::buffered())
        })?;
        e.flush_cf(0)?;
        println!("component ssts {}", e.get_runtime_metrics()?.sst_count);
        read_phases!(e, "component");
        if !(phase.is_empty() || phase == "calls") {
            return Ok(());
        }
        let (t, c) = (Instant::now(), cpu_ns());
        for _ in 0..total {
            let _ = e.get_column_family("default");
        }
        let ns = t.elapsed().as_nanos() as f64 / total as f64;
        let cpu = (cpu_ns() - c) as f64 / total as f64;
        println!("component get-column-family call {ns:8.1} ns/op, cpu {cpu:8.1} ns/op");
        let mut tx = e.begin_tx(0, TransactionMode::ReadOnly)?;
        let (t, c) = (Instant::now(), cpu_ns());
        for _ in 0..total {
            tx.set_conflict_policy(ConflictPolicy::LastWriteWins);
        }
        let ns = t.elapsed().as_nanos() as f64 / total as f64;
        let cpu = (cpu_ns() - c) as f64 / total as f64;
        println!("component set-conflict-policy call {ns:8.1} ns/op, cpu {cpu:8.1} ns/op");
        tx.rollback()?;
    }
    Ok(())
}
