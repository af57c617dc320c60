//! The workloads, run inside one engine's child process, in a fixed order on a fixed seed.

use crate::engines::{self, Durability, EngineKind, KvEngine, Op};
use crate::profile::Profile;
use crate::report::{EngineSummary, Record};
use crate::rng::{Rng, ValuePool, Zipf, key, missing_key};
use crate::stats::Recorder;
use crate::sys::{ProcSample, du};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// What a child reports to the parent, one JSON object per stdout line.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Msg {
    Progress { workload: String },
    Record { record: Box<Record> },
    Summary { summary: Box<EngineSummary> },
}

/// Every workload, in run order, with what it means (the docs table is generated from the same text).
pub const WORKLOADS: &[(&str, &str)] = &[
    (
        "fillseq",
        "load N keys in ascending order, 1,000-op buffered commits",
    ),
    (
        "fillrandom",
        "load N keys in random order, 1,000-op buffered commits",
    ),
    (
        "overwrite",
        "N random overwrites of existing keys, 1,000-op buffered commits",
    ),
    (
        "overwrite_single",
        "single-put buffered commits (per-commit overhead without fsync)",
    ),
    ("readrandom", "point reads of existing keys, uniform"),
    ("readzipf", "point reads of existing keys, Zipf 0.99 (hot set)"),
    (
        "readmissing",
        "point reads of absent keys (bloom-filter / index path)",
    ),
    ("seekrandom", "seek to a random key and read the next 10 rows"),
    ("prefixscan", "all rows under a random 14-byte prefix (≈100 rows)"),
    ("readseq", "one full forward scan; ops = rows"),
    ("readreverse", "one full reverse scan; ops = rows"),
    (
        "readwhilewriting",
        "uniform point reads while one thread overwrites (100-op buffered commits); reader ops/s",
    ),
    (
        "deleterange",
        "delete half the fillseq keys in 1,000-key blocks (range delete where the engine has one, else 1,000 point deletes per commit); ops = keys removed",
    ),
    (
        "readseq_after_delete",
        "full forward scan after the deletes and a compaction",
    ),
    ("fillsync_1", "single-put commits with sync durability, 1 writer"),
    ("fillsync_4", "single-put sync commits, 4 concurrent writers"),
    (
        "fillsync_16",
        "single-put sync commits, 16 concurrent writers (group commit)",
    ),
    (
        "recovery",
        "reopen after SIGKILL with a large unflushed log; ops = keys recovered, time = open + first read",
    ),
];

pub fn workload_names(profile: &Profile) -> Vec<String> {
    let mut v: Vec<String> = WORKLOADS
        .iter()
        .map(|(n, _)| n.to_string())
        .filter(|n| !n.starts_with("fillsync_"))
        .collect();
    let at = v.iter().position(|n| n == "recovery").unwrap_or(v.len());
    for (i, w) in profile.writers.iter().enumerate() {
        v.insert(at + i, format!("fillsync_{w}"));
    }
    v
}

/// One measured phase: time, latency, process counters and engine counters around a loop.
struct Phase {
    name: String,
    durability: Option<Durability>,
    unit: String,
    t0: Instant,
    p0: ProcSample,
    c0: engines::Counters,
    cap: Duration,
    rec: Recorder,
    ops: u64,
    commits: u64,
    user_bytes: u64,
}

impl Phase {
    fn start(name: &str, d: Option<Durability>, unit: &str, e: &dyn KvEngine, cap: Duration) -> Phase {
        Phase {
            name: name.into(),
            durability: d,
            unit: unit.into(),
            c0: e.counters(),
            p0: ProcSample::now(),
            t0: Instant::now(),
            cap,
            rec: Recorder::new(),
            ops: 0,
            commits: 0,
            user_bytes: 0,
        }
    }

    fn over_cap(&self) -> bool {
        self.t0.elapsed() >= self.cap
    }

    fn finish(self, engine: EngineKind, e: &dyn KvEngine) -> Record {
        let secs = self.t0.elapsed().as_secs_f64();
        let p1 = ProcSample::now();
        let c1 = e.counters();
        let fsyncs = c1.fsyncs.saturating_sub(self.c0.fsyncs);
        let mut r = Record {
            engine: engine.name().into(),
            workload: self.name,
            durability: self.durability.map(|d| d.as_str().to_string()),
            ops: self.ops,
            secs,
            ops_per_sec: if secs > 0.0 { self.ops as f64 / secs } else { 0.0 },
            unit: self.unit,
            latency: self.rec.summary(),
            rss_mib: p1.rss as f64 / (1 << 20) as f64,
            cpu_ms_per_kop: (self.ops > 0)
                .then(|| (p1.cpu_s - self.p0.cpu_s) * 1000.0 / (self.ops as f64 / 1000.0)),
            ..Record::default()
        };
        if self.user_bytes > 0 {
            r.user_mb_per_sec = Some(self.user_bytes as f64 / secs / 1e6);
            r.write_amp =
                Some(p1.write_bytes.saturating_sub(self.p0.write_bytes) as f64 / self.user_bytes as f64);
        }
        for (name, before, after) in [
            ("write_stalls", self.c0.stalls, c1.stalls),
            ("compactions", self.c0.compactions, c1.compactions),
        ] {
            if after > before {
                r.extra.insert(name.into(), (after - before).into());
            }
        }
        if e.caps().fsync_counter && fsyncs > 0 && self.commits > 0 {
            r.commits_per_fsync = Some(self.commits as f64 / fsyncs as f64);
            r.extra.insert("fsyncs".into(), fsyncs.into());
        }
        r
    }
}

pub struct Runner<'a> {
    kind: EngineKind,
    p: &'a Profile,
    seed: u64,
    root: PathBuf,
    only: Vec<String>,
    emit: &'a mut dyn FnMut(Msg),
    summary: EngineSummary,
    user_bytes: u64,
    /// Bytes the harness itself wrote in this process (the pre-sync device probe), kept out of write amp.
    harness_write_bytes: u64,
    values: ValuePool,
}

impl<'a> Runner<'a> {
    pub fn new(
        kind: EngineKind,
        p: &'a Profile,
        seed: u64,
        root: &Path,
        only: Vec<String>,
        emit: &'a mut dyn FnMut(Msg),
    ) -> Runner<'a> {
        Runner {
            kind,
            p,
            seed,
            root: root.to_path_buf(),
            only,
            emit,
            summary: EngineSummary {
                engine: kind.name().into(),
                settings: kind.settings().into(),
                status: "ok".into(),
                ..EngineSummary::default()
            },
            user_bytes: 0,
            harness_write_bytes: 0,
            values: ValuePool::new(seed),
        }
    }

    fn wanted(&self, w: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| o == w)
    }

    fn emit_record(&mut self, r: Record) {
        (self.emit)(Msg::Record { record: Box::new(r) });
    }

    /// Runs one workload: progress, the body, and a record (or a skipped record on error).
    fn step(&mut self, name: &str, body: impl FnOnce(&mut Self) -> Result<Option<Record>>) {
        (self.emit)(Msg::Progress {
            workload: name.into(),
        });
        if !self.wanted(name) {
            return;
        }
        let rec = match body(self) {
            Ok(Some(mut r)) => {
                r.workload = name.into();
                r
            }
            Ok(None) => return,
            Err(e) => Record {
                engine: self.kind.name().into(),
                workload: name.into(),
                skipped: Some(format!("failed: {e:#}")),
                ..Record::default()
            },
        };
        self.emit_record(rec);
    }

    fn skip(&mut self, name: &str, why: &str) {
        (self.emit)(Msg::Progress {
            workload: name.into(),
        });
        if self.wanted(name) {
            let r = Record {
                engine: self.kind.name().into(),
                workload: name.into(),
                skipped: Some(why.into()),
                ..Record::default()
            };
            self.emit_record(r);
        }
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Runs every workload; returns the engine summary.
    pub fn run(mut self) -> EngineSummary {
        let t0 = Instant::now();
        let start = ProcSample::now();
        if let Err(e) = self.run_all() {
            self.summary.status = format!("failed: {e:#}");
        }
        let end = ProcSample::now();
        self.summary.secs = t0.elapsed().as_secs_f64();
        self.summary.peak_rss_mib = end.peak_rss as f64 / (1 << 20) as f64;
        if self.user_bytes > 0 {
            let engine_bytes = end
                .write_bytes
                .saturating_sub(start.write_bytes)
                .saturating_sub(self.harness_write_bytes);
            self.summary.write_amp_run = Some(engine_bytes as f64 / self.user_bytes as f64);
        }
        self.summary
    }

    fn run_all(&mut self) -> Result<()> {
        let p = self.p;
        let n = p.keys;

        // fillseq into its own database (reused by the delete workload after a clean reopen).
        {
            let seq = engines::open(self.kind, &self.dir("seq"))?;
            self.step("fillseq", |s| {
                s.fill(&*seq, "fillseq", &mut (0..n), n, Durability::Buffered)
                    .map(Some)
            });
            seq.close()?;
        }

        // fillrandom + overwrite + single commits: the load that write/space amplification describe.
        let main_dir = self.dir("main");
        let main = engines::open(self.kind, &main_dir)?;
        let load0 = ProcSample::now();
        let load_user0 = self.user_bytes;
        self.step("fillrandom", |s| {
            let mut order = Rng::stream(s.seed, "fillrandom").permutation(n).into_iter();
            s.fill(&*main, "fillrandom", &mut order, n, Durability::Buffered)
                .map(Some)
        });
        self.step("overwrite", |s| {
            let mut r = Rng::stream(s.seed, "overwrite");
            let mut it = std::iter::from_fn(move || Some(r.below(n)));
            s.fill(&*main, "overwrite", &mut it, n, Durability::Buffered)
                .map(Some)
        });
        self.step("overwrite_single", |s| s.single_commits(&*main).map(Some));
        main.flush()?;
        let load1 = ProcSample::now();
        if self.user_bytes > load_user0 {
            self.summary.write_amp_load = Some(
                load1.write_bytes.saturating_sub(load0.write_bytes) as f64
                    / (self.user_bytes - load_user0) as f64,
            );
        }
        self.summary.space_amp_load = Some(du(&main_dir) as f64 / (n * p.pair_bytes()) as f64);

        // Reads on the loaded database.
        let mut hits = Rng::stream(self.seed, "readrandom");
        self.step("readrandom", |s| {
            s.point_reads(&*main, p.reads, true, &mut || key(hits.below(n)))
                .map(Some)
        });
        let zipf = Zipf::new(n, 0.99);
        let mut zr = Rng::stream(self.seed, "readzipf");
        self.step("readzipf", |s| {
            // Scatter ranks over the key space so the hot set is not one contiguous block.
            s.point_reads(&*main, p.reads, true, &mut || {
                key(zipf.sample(&mut zr).wrapping_mul(0x9E37_79B9_7F4A_7C15) % n)
            })
            .map(Some)
        });
        let mut mr = Rng::stream(self.seed, "readmissing");
        self.step("readmissing", |s| {
            s.point_reads(&*main, p.misses, false, &mut || missing_key(mr.below(n)))
                .map(Some)
        });
        self.step("seekrandom", |s| s.seeks(&*main).map(Some));
        self.step("prefixscan", |s| s.prefix_scans(&*main).map(Some));
        self.step("readseq", |s| s.full_scan(&*main, false, n).map(Some));
        self.step("readreverse", |s| s.full_scan(&*main, true, n).map(Some));
        self.step("readwhilewriting", |s| s.read_while_writing(&*main).map(Some));
        main.close()?;

        // Delete half of the fillseq database, compact, measure space, scan what is left.
        {
            let t = Instant::now();
            let seq_dir = self.dir("seq");
            let seq = engines::open(self.kind, &seq_dir)?;
            let reopen = t.elapsed().as_secs_f64();
            let mut removed = 0;
            self.step("deleterange", |s| {
                let (mut r, k) = s.delete_half(&*seq)?;
                removed = k;
                r.extra.insert("clean_reopen_secs".into(), reopen.into());
                let c = Instant::now();
                seq.compact()?;
                let compact = c.elapsed().as_secs_f64();
                r.extra.insert("compact_secs".into(), compact.into());
                r.extra.insert("delete_secs".into(), r.secs.into());
                // The cost of deleting is paid at compaction: count it.
                r.secs += compact;
                r.ops_per_sec = r.ops as f64 / r.secs;
                let live = n - removed;
                let amp = du(&seq_dir) as f64 / (live.max(1) * p.pair_bytes()) as f64;
                r.extra.insert("space_amp_after".into(), amp.into());
                s.summary.space_amp_after_delete = Some(amp);
                Ok(Some(r))
            });
            self.step("readseq_after_delete", |s| {
                s.full_scan(&*seq, false, n - removed).map(Some)
            });
            seq.close()?;
        }

        // Sync commits, 1..16 writers, on a fresh database. First let the earlier phases' write-back drain
        // (every engine gets the same pause), so fsyncs measure this engine rather than the one before.
        settle(p.probe_unit / 2);
        let writers = p.writers.clone();
        let sync = engines::open(self.kind, &self.dir("sync"))?;
        let before = ProcSample::now();
        let now = crate::device::quick_fsync_rate(&self.dir("probe"), p.probe_unit / 2)
            .map(|r| r.ops_per_sec)
            .unwrap_or(0.0);
        self.harness_write_bytes += ProcSample::now().write_bytes.saturating_sub(before.write_bytes);
        for w in writers {
            let name = format!("fillsync_{w}");
            if !sync.caps().sync {
                self.skip(&name, "no equal-durability sync commit (sled #1351)");
                continue;
            }
            let per = if w == 1 {
                p.sync_commits
            } else {
                p.sync_commits_per_writer
            };
            self.step(&name, |s| {
                let mut r = s.sync_writers(&*sync, &name, w, per)?;
                r.extra
                    .insert("device_fsync_per_sec_just_before".into(), now.into());
                Ok(Some(r))
            });
        }
        sync.close()?;

        self.step("recovery", |s| s.recovery().map(Some));
        Ok(())
    }

    /// Batched buffered puts of `count` keys drawn from `order`.
    fn fill(
        &mut self,
        e: &dyn KvEngine,
        name: &str,
        order: &mut dyn Iterator<Item = u64>,
        count: u64,
        d: Durability,
    ) -> Result<Record> {
        let p = self.p;
        let mut vr = Rng::stream(self.seed, &format!("{name}-values"));
        let unit = format!("commit ({} ops)", p.batch);
        let mut ph = Phase::start(name, Some(d), &unit, e, p.phase_cap);
        let mut keys: Vec<[u8; 16]> = Vec::with_capacity(p.batch);
        let mut left = count;
        while left > 0 && !ph.over_cap() {
            keys.clear();
            keys.extend(order.take(p.batch.min(left as usize)).map(key));
            if keys.is_empty() {
                break;
            }
            let ops: Vec<Op> = keys
                .iter()
                .map(|k| Op::Put(k, self.values.value(&mut vr, p.value_len)))
                .collect();
            let t = Instant::now();
            e.write(&ops, d)?;
            ph.rec.record(t.elapsed());
            ph.ops += keys.len() as u64;
            ph.commits += 1;
            left -= keys.len() as u64;
        }
        ph.user_bytes = ph.ops * p.pair_bytes();
        self.user_bytes += ph.user_bytes;
        let mut r = ph.finish(self.kind, e);
        if left > 0 {
            r.extra.insert("capped".into(), true.into());
        }
        Ok(r)
    }

    fn single_commits(&mut self, e: &dyn KvEngine) -> Result<Record> {
        let p = self.p;
        let mut r = Rng::stream(self.seed, "single");
        let mut ph = Phase::start(
            "overwrite_single",
            Some(Durability::Buffered),
            "commit (1 op)",
            e,
            p.phase_cap,
        );
        while ph.ops < p.single_commits && !ph.over_cap() {
            let k = key(r.below(p.keys));
            let v = self.values.value(&mut r, p.value_len);
            let t = Instant::now();
            e.write(&[Op::Put(&k, v)], Durability::Buffered)?;
            ph.rec.record(t.elapsed());
            ph.ops += 1;
            ph.commits += 1;
        }
        ph.user_bytes = ph.ops * p.pair_bytes();
        self.user_bytes += ph.user_bytes;
        Ok(ph.finish(self.kind, e))
    }

    /// `count` gets in read views of 1,000; `expect_hit` checks every answer.
    fn point_reads(
        &mut self,
        e: &dyn KvEngine,
        count: u64,
        expect_hit: bool,
        next: &mut dyn FnMut() -> [u8; 16],
    ) -> Result<Record> {
        let mut ph = Phase::start("reads", None, "op", e, self.p.phase_cap);
        let mut wrong = 0u64;
        let value_len = self.p.value_len;
        while ph.ops < count && !ph.over_cap() {
            let chunk = (count - ph.ops).min(1000);
            e.with_reader(&mut |r| {
                for _ in 0..chunk {
                    let k = next();
                    let t = Instant::now();
                    let got = r.get(&k)?;
                    ph.rec.record(t.elapsed());
                    if got != expect_hit.then_some(value_len) {
                        wrong += 1;
                    }
                }
                Ok(())
            })?;
            ph.ops += chunk;
        }
        let mut r = ph.finish(self.kind, e);
        if wrong > 0 {
            r.extra.insert("wrong_answers".into(), wrong.into());
        }
        Ok(r)
    }

    fn seeks(&mut self, e: &dyn KvEngine) -> Result<Record> {
        let p = self.p;
        let mut rng = Rng::stream(self.seed, "seek");
        let mut ph = Phase::start("seek", None, "seek + 10 rows", e, p.phase_cap);
        let mut rows = 0u64;
        while ph.ops < p.seeks && !ph.over_cap() {
            let chunk = (p.seeks - ph.ops).min(1000);
            e.with_reader(&mut |r| {
                for _ in 0..chunk {
                    let k = key(rng.below(p.keys));
                    let t = Instant::now();
                    rows += r.scan(&k, None, p.seek_next, false, &mut |k, v| {
                        engines::consume(v);
                        std::hint::black_box(k);
                    })? as u64;
                    ph.rec.record(t.elapsed());
                }
                Ok(())
            })?;
            ph.ops += chunk;
        }
        let mut r = ph.finish(self.kind, e);
        r.extra.insert("rows".into(), rows.into());
        Ok(r)
    }

    fn prefix_scans(&mut self, e: &dyn KvEngine) -> Result<Record> {
        let p = self.p;
        let mut rng = Rng::stream(self.seed, "prefix");
        let mut ph = Phase::start("prefix", None, "prefix scan", e, p.phase_cap);
        let mut rows = 0u64;
        while ph.ops < p.prefixes && !ph.over_cap() {
            let chunk = (p.prefixes - ph.ops).min(100);
            e.with_reader(&mut |r| {
                for _ in 0..chunk {
                    let k = key(rng.below(p.keys));
                    let t = Instant::now();
                    rows += r.prefix(&k[..14], usize::MAX, &mut |k, v| {
                        engines::consume(v);
                        std::hint::black_box(k);
                    })? as u64;
                    ph.rec.record(t.elapsed());
                }
                Ok(())
            })?;
            ph.ops += chunk;
        }
        let mut r = ph.finish(self.kind, e);
        r.extra.insert("rows".into(), rows.into());
        r.extra
            .insert("rows_per_sec".into(), (rows as f64 / r.secs.max(1e-9)).into());
        Ok(r)
    }

    fn full_scan(&mut self, e: &dyn KvEngine, reverse: bool, expect: u64) -> Result<Record> {
        let mut ph = Phase::start("scan", None, "full scan", e, self.p.phase_cap);
        let mut rows = 0u64;
        let mut bytes = 0u64;
        e.with_reader(&mut |r| {
            let t = Instant::now();
            rows = r.scan(b"", None, usize::MAX, reverse, &mut |k, v| {
                bytes += (k.len() + engines::consume(v)) as u64;
            })? as u64;
            ph.rec.record(t.elapsed());
            Ok(())
        })?;
        ph.ops = rows;
        let mut r = ph.finish(self.kind, e);
        r.extra.insert("bytes".into(), bytes.into());
        if rows != expect {
            r.extra.insert("expected_rows".into(), expect.into());
        }
        Ok(r)
    }

    fn read_while_writing(&mut self, e: &dyn KvEngine) -> Result<Record> {
        let p = self.p;
        let stop = AtomicBool::new(false);
        let values = &self.values;
        let seed = self.seed;
        let mut ph = Phase::start(
            "rww",
            Some(Durability::Buffered),
            "op (reader)",
            e,
            p.read_while_writing,
        );
        let (writes, read_res) = std::thread::scope(|sc| {
            let writer = sc.spawn(|| -> Result<u64> {
                let mut r = Rng::stream(seed, "rww-writer");
                let mut written = 0u64;
                let start = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    // Paced: batch n starts no earlier than n batches' bytes at the write rate.
                    let due = Duration::from_secs_f64(
                        (written * p.pair_bytes()) as f64 / p.rww_write_bytes_per_sec as f64,
                    );
                    if let Some(wait) = due.checked_sub(start.elapsed()) {
                        std::thread::sleep(wait.min(Duration::from_millis(50)));
                        continue;
                    }
                    let keys: Vec<[u8; 16]> = (0..100).map(|_| key(r.below(p.keys))).collect();
                    let ops: Vec<Op> = keys
                        .iter()
                        .map(|k| Op::Put(k, values.value(&mut r, p.value_len)))
                        .collect();
                    e.write(&ops, Durability::Buffered)?;
                    written += 100;
                }
                Ok(written)
            });
            let mut rr = Rng::stream(seed, "rww-reader");
            let res = (|| -> Result<()> {
                // Up to 1,000 reads per snapshot. Each read counts, and the cap is checked every 64 reads, so a
                // reader that the writer holds up is measured over the phase rather than in whole batches that
                // can overrun the cap.
                while !ph.over_cap() {
                    e.with_reader(&mut |r| {
                        for i in 0..1000 {
                            if i % 64 == 63 && ph.over_cap() {
                                break;
                            }
                            let k = key(rr.below(p.keys));
                            let t = Instant::now();
                            let got = r.get(&k)?;
                            ph.rec.record(t.elapsed());
                            ph.ops += 1;
                            std::hint::black_box(got);
                        }
                        Ok(())
                    })?;
                }
                Ok(())
            })();
            stop.store(true, Ordering::Relaxed);
            (writer.join(), res)
        });
        read_res?;
        let written = writes.map_err(|_| anyhow::anyhow!("writer thread panicked"))??;
        let user = written * p.pair_bytes();
        self.user_bytes += user;
        let mut r = ph.finish(self.kind, e);
        r.extra
            .insert("writer_ops_per_sec".into(), (written as f64 / r.secs).into());
        Ok(r)
    }

    /// Deletes every other block of 1,000 fillseq keys; returns the record and the keys removed.
    fn delete_half(&mut self, e: &dyn KvEngine) -> Result<(Record, u64)> {
        let n = self.p.keys;
        let block = 1000u64;
        let range = e.caps().delete_range;
        let unit = if range {
            "commit (1 range)"
        } else {
            "commit (1,000 deletes)"
        };
        let mut ph = Phase::start("delete", Some(Durability::Buffered), unit, e, self.p.phase_cap);
        let mut removed = 0u64;
        let mut b = 0u64;
        while b * block < n && !ph.over_cap() {
            let lo = b * block;
            let hi = ((b + 1) * block).min(n);
            let t = Instant::now();
            if range {
                let (s, end) = (key(lo), key(hi));
                e.write(&[Op::DeleteRange(&s, &end)], Durability::Buffered)?;
            } else {
                let keys: Vec<[u8; 16]> = (lo..hi).map(key).collect();
                let ops: Vec<Op> = keys.iter().map(|k| Op::Delete(k)).collect();
                e.write(&ops, Durability::Buffered)?;
            }
            ph.rec.record(t.elapsed());
            ph.commits += 1;
            removed += hi - lo;
            b += 2;
        }
        ph.ops = removed;
        let mut r = ph.finish(self.kind, e);
        r.extra.insert("native_range_delete".into(), range.into());
        Ok((r, removed))
    }

    fn sync_writers(
        &mut self,
        e: &dyn KvEngine,
        name: &str,
        writers: usize,
        per_writer: u64,
    ) -> Result<Record> {
        let p = self.p;
        let values = &self.values;
        let seed = self.seed;
        let mut ph = Phase::start(name, Some(Durability::Sync), "commit (1 op)", e, p.phase_cap);
        let cap = p.phase_cap;
        let t0 = ph.t0;
        let results = on_threads(writers, |w| {
            let mut r = Rng::stream(seed, &format!("{name}-{w}"));
            let mut rec = Recorder::new();
            let mut done = 0;
            while done < per_writer && t0.elapsed() < cap {
                let k = key(r.below(p.keys));
                let v = values.value(&mut r, p.value_len);
                let t = Instant::now();
                e.write(&[Op::Put(&k, v)], Durability::Sync)?;
                rec.record(t.elapsed());
                done += 1;
            }
            Ok((rec, done))
        })?;
        for (rec, done) in results {
            ph.rec.merge(&rec);
            ph.ops += done;
            ph.commits += done;
        }
        ph.user_bytes = ph.ops * p.pair_bytes();
        self.user_bytes += ph.user_bytes;
        let mut r = ph.finish(self.kind, e);
        r.extra.insert("writers".into(), writers.into());
        Ok(r)
    }

    /// A grandchild loads keys and makes them durable, we SIGKILL it, then time the reopen.
    fn recovery(&mut self) -> Result<Record> {
        let dir = self.dir("crash");
        let keys = self.p.recovery_keys;
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .args([
                "crash-writer",
                "--engine",
                self.kind.name(),
                "--keys",
                &keys.to_string(),
                "--seed",
                &self.seed.to_string(),
                "--dir",
            ])
            .arg(&dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("spawning the crash writer")?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("crash writer stdout")?).read_line(&mut line)?;
        let ready = line.trim() == "READY";
        child.kill()?;
        child.wait()?;
        anyhow::ensure!(ready, "crash writer did not get ready: {line:?}");
        let on_disk = du(&dir);

        engines::prepare(self.kind)?;
        let p0 = ProcSample::now();
        let t = Instant::now();
        let e = engines::open(self.kind, &dir)?;
        let mut marker = None;
        e.with_reader(&mut |r| {
            marker = r.get(MARKER)?;
            Ok(())
        })?;
        let secs = t.elapsed().as_secs_f64();
        let p1 = ProcSample::now();
        let mut rows = 0u64;
        e.with_reader(&mut |r| {
            rows = r.scan(b"", None, usize::MAX, false, &mut |_, _| {})? as u64;
            Ok(())
        })?;
        let report = e.open_report();
        e.close()?;
        self.summary.recovery_open_secs = Some(secs);
        let mut rec = Recorder::new();
        rec.record(Duration::from_secs_f64(secs));
        let mut r = Record {
            engine: self.kind.name().into(),
            workload: "recovery".into(),
            ops: keys,
            secs,
            ops_per_sec: keys as f64 / secs,
            unit: "open + first read".into(),
            latency: rec.summary(),
            rss_mib: p1.rss as f64 / (1 << 20) as f64,
            cpu_ms_per_kop: Some((p1.cpu_s - p0.cpu_s) * 1000.0 / (keys as f64 / 1000.0)),
            ..Record::default()
        };
        r.extra.insert("bytes_on_disk_before_open".into(), on_disk.into());
        r.extra.insert("marker_present".into(), marker.is_some().into());
        r.extra.insert("rows_after_recovery".into(), rows.into());
        if !report.is_null() {
            r.extra.insert("engine_report".into(), report);
        }
        Ok(r)
    }
}

/// Runs `f(0..n)` on `n` scoped threads at once and returns their results in order (the first error, if any).
pub fn on_threads<T: Send>(n: usize, f: impl Fn(usize) -> Result<T> + Sync) -> Result<Vec<T>> {
    let f = &f;
    std::thread::scope(|sc| {
        let handles: Vec<_> = (0..n).map(|i| sc.spawn(move || f(i))).collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("writer panicked")))
            })
            .collect()
    })
}

/// Flushes every dirty page system-wide (`sync`, where the command exists) and pauses for `pause`.
fn settle(pause: Duration) {
    let _ = Command::new("sync")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    std::thread::sleep(pause);
}

/// The last key the crash writer commits (sync) before it reports ready.
pub const MARKER: &[u8] = b"~recovery-marker";

/// The crash writer: load `keys` keys in random order (1,000-op buffered commits), make them durable with a
/// final sync commit (sled: its flush), print READY and wait to be killed.
pub fn crash_writer(kind: EngineKind, dir: &Path, keys: u64, seed: u64) -> Result<()> {
    let e = engines::open(kind, dir)?;
    let pool = ValuePool::new(seed);
    let mut r = Rng::stream(seed, "crash");
    let order = r.permutation(keys);
    for chunk in order.chunks(1000) {
        let ks: Vec<[u8; 16]> = chunk.iter().map(|&i| key(i)).collect();
        let ops: Vec<Op> = ks.iter().map(|k| Op::Put(k, pool.value(&mut r, 100))).collect();
        e.write(&ops, Durability::Buffered)?;
    }
    if e.caps().sync {
        e.write(&[Op::Put(MARKER, b"1")], Durability::Sync)?;
    } else {
        e.write(&[Op::Put(MARKER, b"1")], Durability::Buffered)?;
        e.flush()?;
    }
    println!("READY");
    use std::io::Write;
    std::io::stdout().flush()?;
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::Mode;

    #[test]
    fn workload_names_follow_the_writer_list() {
        let mut p = Profile::new(Mode::Quick);
        let names = workload_names(&p);
        assert_eq!(names.first().map(String::as_str), Some("fillseq"));
        assert_eq!(names.last().map(String::as_str), Some("recovery"));
        assert!(names.contains(&"fillsync_16".to_string()));
        p.writers = vec![1, 2];
        let names = workload_names(&p);
        assert!(names.contains(&"fillsync_2".to_string()));
        assert!(!names.contains(&"fillsync_16".to_string()));
        let i = names.iter().position(|n| n == "fillsync_2").unwrap();
        assert_eq!(names[i + 1], "recovery");
    }

    /// A tiny end-to-end run on one engine: every workload produces a record that ran, with correct answers.
    #[test]
    fn tiny_run_on_midge_produces_every_record() {
        let mut p = Profile::new(Mode::Quick);
        p.keys = 3000;
        p.single_commits = 50;
        p.reads = 500;
        p.misses = 200;
        p.seeks = 100;
        p.prefixes = 20;
        p.read_while_writing = Duration::from_millis(200);
        p.rww_write_bytes_per_sec = 2000 * p.pair_bytes(); // 2,000 puts/s
        p.sync_commits = 20;
        p.sync_commits_per_writer = 5;
        p.writers = vec![1, 4];
        p.recovery_keys = 0; // no grandchild in unit tests (the binary is the test harness)
        let tmp = tempfile::tempdir().unwrap();
        let mut msgs = Vec::new();
        let mut emit = |m: Msg| msgs.push(m);
        let only: Vec<String> = workload_names(&p)
            .into_iter()
            .filter(|w| w != "recovery")
            .collect();
        let summary = Runner::new(EngineKind::Midge, &p, 1, tmp.path(), only, &mut emit).run();
        assert_eq!(summary.status, "ok");
        let records: Vec<Record> = msgs
            .iter()
            .filter_map(|m| match m {
                Msg::Record { record } => Some((**record).clone()),
                _ => None,
            })
            .collect();
        assert_eq!(records.len(), workload_names(&p).len() - 1);
        for r in &records {
            assert!(r.ran(), "{} did not run: {:?}", r.workload, r.skipped);
            assert!(!r.extra.contains_key("wrong_answers"), "{r:?}");
            assert!(!r.extra.contains_key("expected_rows"), "{r:?}");
        }
        let get = |w: &str| records.iter().find(|r| r.workload == w).unwrap();
        assert_eq!(get("fillseq").ops, 3000);
        assert_eq!(get("readseq").ops, 3000);
        assert_eq!(get("deleterange").ops, 2000); // blocks 0 and 2 of 3
        assert_eq!(get("readseq_after_delete").ops, 1000);
        assert_eq!(get("fillsync_4").ops, 20);
        assert!(get("fillsync_1").commits_per_fsync.is_some());
        assert!(summary.space_amp_load.is_some());
        // The readwhilewriting writer keeps its pace (unpaced, Midge writes a few hundred thousand puts/s).
        let w = get("readwhilewriting").extra["writer_ops_per_sec"]
            .as_f64()
            .unwrap();
        assert!(w > 0.0 && w < 4000.0, "writer at {w} puts/s");
    }
}
