//! Results: the record types, ratio computation, and the three renderings (JSON, markdown, SVG).

use crate::device::DeviceProbe;
use crate::paired::{Paired, Spread};
use crate::profile::Profile;
use crate::stats::Latency;
use crate::sys::Machine;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// One engine × workload measurement. Every throughput is "higher is better".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub engine: String,
    pub workload: String,
    /// `sync`, `buffered`, or absent for reads.
    pub durability: Option<String>,
    pub ops: u64,
    pub secs: f64,
    pub ops_per_sec: f64,
    /// What one latency sample times: `op`, `commit (1000 ops)`, `scan`, `open`.
    pub unit: String,
    pub latency: Latency,
    pub user_mb_per_sec: Option<f64>,
    pub cpu_ms_per_kop: Option<f64>,
    /// Δ /proc/self/io write_bytes ÷ user bytes, over this phase.
    pub write_amp: Option<f64>,
    pub rss_mib: f64,
    pub commits_per_fsync: Option<f64>,
    /// ops/s ÷ the best non-Midge engine's ops/s on the same workload.
    pub ratio_best_peer: Option<f64>,
    pub best_peer: Option<String>,
    /// ops/s ÷ the device probe's fdatasync rate (sync workloads).
    pub ratio_device: Option<f64>,
    /// For `midge-component`: its time per op ÷ native Midge's (native ops/s ÷ component ops/s; 1.3 means
    /// 30% slower).
    pub component_time_ratio: Option<f64>,
    /// Why the engine did not run this workload.
    pub skipped: Option<String>,
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl Record {
    pub fn ran(&self) -> bool {
        self.skipped.is_none() && self.ops_per_sec > 0.0
    }

    /// JSON has no NaN or infinity: non-finite numbers become 0 (required) or absent (optional).
    pub fn sanitize(&mut self) {
        fn f(x: &mut f64) {
            if !x.is_finite() {
                *x = 0.0;
            }
        }
        fn o(x: &mut Option<f64>) {
            if x.is_some_and(|v| !v.is_finite()) {
                *x = None;
            }
        }
        for x in [
            &mut self.secs,
            &mut self.ops_per_sec,
            &mut self.rss_mib,
            &mut self.latency.p50_us,
            &mut self.latency.p99_us,
            &mut self.latency.p999_us,
            &mut self.latency.max_us,
            &mut self.latency.mean_us,
        ] {
            f(x);
        }
        for x in [
            &mut self.user_mb_per_sec,
            &mut self.cpu_ms_per_kop,
            &mut self.write_amp,
            &mut self.commits_per_fsync,
            &mut self.ratio_best_peer,
            &mut self.ratio_device,
            &mut self.component_time_ratio,
        ] {
            o(x);
        }
    }
}

/// Per-engine facts that are not one workload's throughput.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EngineSummary {
    pub engine: String,
    pub settings: String,
    /// `ok`, `failed: …` or `unavailable: …`.
    pub status: String,
    pub secs: f64,
    pub peak_rss_mib: f64,
    /// Write amplification of the load (fillrandom + overwrite + single commits + flush).
    pub write_amp_load: Option<f64>,
    /// Every byte the engine process wrote ÷ every user byte it was given.
    pub write_amp_run: Option<f64>,
    /// du(data dir) ÷ live logical bytes after the load (flushed).
    pub space_amp_load: Option<f64>,
    /// Same after deleting half and compacting.
    pub space_amp_after_delete: Option<f64>,
    /// Seconds to reopen after SIGKILL with a large unflushed log.
    pub recovery_open_secs: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Meta {
    pub started: String,
    pub git_sha: String,
    pub machine: Machine,
    pub versions: BTreeMap<String, String>,
    pub rocksdb_compiled: bool,
    pub seed: u64,
    pub data_dir: String,
    pub total_secs: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    pub meta: Meta,
    /// The probe before the first engine ran.
    pub device: DeviceProbe,
    /// The same probe after the last engine (a shared machine drifts; the limit is the better of the two).
    pub device_end: Option<DeviceProbe>,
    pub profile: Profile,
    pub engines: Vec<EngineSummary>,
    pub records: Vec<Record>,
    /// The paired sync rounds (`crate::paired`), when Midge ran.
    #[serde(default)]
    pub paired: Option<Paired>,
}

/// Workloads whose rate is bounded by fdatasync (reported as a share of the device's limit).
pub fn is_sync_workload(name: &str) -> bool {
    name.starts_with("fillsync")
}

/// Fills in `ratio_best_peer`, `best_peer` and (for sync workloads) `ratio_device`.
pub fn compute_ratios(records: &mut [Record], fsync_limit: f64) {
    let mut best: BTreeMap<String, (f64, String)> = BTreeMap::new();
    for r in records.iter().filter(|r| r.ran() && !is_midge(&r.engine)) {
        let e = best.entry(r.workload.clone()).or_insert((0.0, String::new()));
        if r.ops_per_sec > e.0 {
            *e = (r.ops_per_sec, r.engine.clone());
        }
    }
    for r in records.iter_mut() {
        if !r.ran() {
            continue;
        }
        if let Some((b, name)) = best.get(&r.workload) {
            r.ratio_best_peer = Some(r.ops_per_sec / b);
            r.best_peer = Some(name.clone());
        }
        if is_sync_workload(&r.workload) && fsync_limit > 0.0 {
            r.ratio_device = Some(r.ops_per_sec / fsync_limit);
        }
    }
    let native: BTreeMap<String, f64> = records
        .iter()
        .filter(|r| r.ran() && r.engine == "midge")
        .map(|r| (r.workload.clone(), r.ops_per_sec))
        .collect();
    for r in records.iter_mut().filter(|r| r.ran() && r.engine == COMPONENT) {
        r.component_time_ratio = native.get(&r.workload).map(|n| n / r.ops_per_sec);
    }
}

/// The engine name of Midge inside wasmtime.
pub const COMPONENT: &str = "midge-component";

/// The fdatasync rate sync commits are compared with: the best 4 KiB pattern of either probe.
pub fn fsync_limit(res: &Results) -> f64 {
    res.device
        .fsync_limit()
        .max(res.device_end.map_or(0.0, |d| d.fsync_limit()))
}

pub fn is_midge(engine: &str) -> bool {
    engine == "midge" || engine.starts_with("midge-")
}

/// `1.23 M`, `45.6 K`, `789`.
pub fn fmt_rate(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2} M", x / 1e6)
    } else if x >= 1e4 {
        format!("{:.0} K", x / 1e3)
    } else if x >= 1e3 {
        format!("{:.1} K", x / 1e3)
    } else if x >= 10.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.2}")
    }
}

/// Microseconds, readable: `850 ns`, `12.3 µs`, `4.56 ms`, `1.20 s`.
pub fn fmt_us(us: f64) -> String {
    if us < 1.0 {
        format!("{:.0} ns", us * 1000.0)
    } else if us < 100.0 {
        format!("{us:.1} µs")
    } else if us < 1000.0 {
        format!("{us:.0} µs")
    } else if us < 1e6 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

pub fn fmt_ratio(x: Option<f64>) -> String {
    x.map_or_else(|| "—".into(), |v| format!("{v:.2}×"))
}

/// Engines in a stable order: Midge first, then peers by name.
pub fn engine_order(records: &[Record]) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for r in records {
        if !v.contains(&r.engine) {
            v.push(r.engine.clone());
        }
    }
    v.sort_by_key(|e| (!is_midge(e), e.clone()));
    v
}

/// Workloads in first-seen order.
pub fn workload_order(records: &[Record]) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for r in records {
        if !v.contains(&r.workload) {
            v.push(r.workload.clone());
        }
    }
    v
}

fn find<'a>(records: &'a [Record], engine: &str, workload: &str) -> Option<&'a Record> {
    records
        .iter()
        .find(|r| r.engine == engine && r.workload == workload)
}

/// The markdown summary (also printed to stdout).
pub fn markdown(res: &Results) -> String {
    let mut s = String::new();
    let m = &res.meta;
    let d = &res.device;
    let limit = fsync_limit(res);
    let _ = writeln!(s, "# midge-bench — {} ({:?} mode)\n", m.started, res.profile.mode);
    let _ = writeln!(
        s,
        "Machine: {} × {} CPU, {:.0} GiB RAM, Linux {}, {} on {}. Git {}. Seed {}. {} keys of {} + {} B.\n",
        m.machine.cpus,
        m.machine.cpu_model,
        m.machine.mem_total_gib,
        m.machine.kernel,
        m.machine.filesystem,
        m.machine.device,
        short_sha(&m.git_sha),
        m.seed,
        res.profile.keys,
        res.profile.key_len,
        res.profile.value_len,
    );
    let _ = writeln!(
        s,
        "Device probe (before the engines): 4 KiB pwrite + fdatasync, preallocated **{}/s** (p50 {}, p99 {}); appending {}/s (p50 {}, p99 {}); 1 MiB sequential + fdatasync {:.0} MB/s.",
        fmt_rate(d.prealloc_4k.ops_per_sec),
        fmt_us(d.prealloc_4k.latency.p50_us),
        fmt_us(d.prealloc_4k.latency.p99_us),
        fmt_rate(d.append_4k.ops_per_sec),
        fmt_us(d.append_4k.latency.p50_us),
        fmt_us(d.append_4k.latency.p99_us),
        d.seq_1m_mb_per_sec,
    );
    if let Some(e) = &res.device_end {
        let _ = write!(
            s,
            " After the engines: preallocated {}/s (p99 {}), appending {}/s, {:.0} MB/s.",
            fmt_rate(e.prealloc_4k.ops_per_sec),
            fmt_us(e.prealloc_4k.latency.p99_us),
            fmt_rate(e.append_4k.ops_per_sec),
            e.seq_1m_mb_per_sec,
        );
    }
    let _ = writeln!(
        s,
        " The \"× device\" column divides by the best of these, {}/s.\n",
        fmt_rate(limit)
    );
    if !m.versions.is_empty() {
        let v: Vec<String> = m
            .versions
            .iter()
            .filter(|(n, _)| n.as_str() != "rocksdb" || m.rocksdb_compiled)
            .filter(|(n, _)| n.as_str() != "librocksdb-sys" || m.rocksdb_compiled)
            .map(|(n, v)| format!("{n} {v}"))
            .collect();
        let _ = writeln!(s, "Versions: {}.\n", v.join(", "));
    }
    let engines = engine_order(&res.records);
    let workloads = workload_order(&res.records);

    s.push_str(&headline(res, &workloads));
    s.push_str(&render_targets(&targets(res)));
    if let Some(p) = &res.paired {
        s.push_str(&render_paired(p));
    }

    // Throughput.
    let _ = writeln!(s, "## Throughput (ops/s, best in bold)\n");
    let mut head = "| workload | durability |".to_string();
    let mut rule = "|---|---|".to_string();
    for e in &engines {
        let _ = write!(head, " {e} |");
        rule.push_str("---:|");
    }
    head.push_str(" midge ÷ best peer | midge × device |");
    rule.push_str("---:|---:|");
    let has_component = res.records.iter().any(|r| r.engine == COMPONENT && r.ran());
    if has_component {
        head.push_str(" component time ÷ native |");
        rule.push_str("---:|");
    }
    let _ = writeln!(s, "{head}\n{rule}");
    for w in &workloads {
        let ran: Vec<&Record> = engines
            .iter()
            .filter_map(|e| find(&res.records, e, w))
            .filter(|r| r.ran())
            .collect();
        let top = ran.iter().map(|r| r.ops_per_sec).fold(0.0, f64::max);
        let dur = res
            .records
            .iter()
            .find(|r| &r.workload == w)
            .and_then(|r| r.durability.clone())
            .unwrap_or_else(|| "—".into());
        let mut row = format!("| {w} | {dur} |");
        for e in &engines {
            let cell = match find(&res.records, e, w) {
                Some(r) if r.ran() => {
                    let v = fmt_rate(r.ops_per_sec);
                    if r.ops_per_sec >= top && ran.len() > 1 {
                        format!("**{v}**")
                    } else {
                        v
                    }
                }
                _ => "—".into(),
            };
            let _ = write!(row, " {cell} |");
        }
        let midge = find(&res.records, "midge", w).filter(|r| r.ran());
        let _ = write!(
            row,
            " {} | {} |",
            fmt_ratio(midge.and_then(|r| r.ratio_best_peer)),
            fmt_ratio(midge.and_then(|r| r.ratio_device)),
        );
        if has_component {
            let c = find(&res.records, COMPONENT, w).and_then(|r| r.component_time_ratio);
            let _ = write!(row, " {} |", fmt_ratio(c));
        }
        let _ = writeln!(s, "{row}");
    }

    // Latency.
    let _ = writeln!(s, "\n## Latency p50 / p99 (per unit)\n");
    let mut head = "| workload | unit |".to_string();
    let mut rule = "|---|---|".to_string();
    for e in &engines {
        let _ = write!(head, " {e} |");
        rule.push_str("---:|");
    }
    let _ = writeln!(s, "{head}\n{rule}");
    for w in &workloads {
        let unit = res
            .records
            .iter()
            .find(|r| &r.workload == w && r.ran())
            .map_or("—".to_string(), |r| r.unit.clone());
        let mut row = format!("| {w} | {unit} |");
        for e in &engines {
            let cell = match find(&res.records, e, w) {
                Some(r) if r.ran() => format!("{} / {}", fmt_us(r.latency.p50_us), fmt_us(r.latency.p99_us)),
                _ => "—".into(),
            };
            let _ = write!(row, " {cell} |");
        }
        let _ = writeln!(s, "{row}");
    }

    // Group commit.
    let sync_rows: Vec<&String> = workloads.iter().filter(|w| is_sync_workload(w)).collect();
    if !sync_rows.is_empty() {
        let _ = writeln!(
            s,
            "\n## Sync commits (commits/s; × device = ÷ fdatasync rate; scaling = ÷ 1 writer)\n"
        );
        let _ = writeln!(
            s,
            "| engine | {} | scaling (max writers ÷ 1) | commits per fsync |",
            sync_rows
                .iter()
                .map(|w| w.as_str())
                .collect::<Vec<_>>()
                .join(" | ")
        );
        let _ = writeln!(s, "|---|{}---:|---:|", "---:|".repeat(sync_rows.len()));
        for e in &engines {
            let cells: Vec<Option<&Record>> = sync_rows
                .iter()
                .map(|w| find(&res.records, e, w).filter(|r| r.ran()))
                .collect();
            if cells.iter().all(Option::is_none) {
                continue;
            }
            let mut row = format!("| {e} |");
            for c in &cells {
                let _ = match c {
                    Some(r) => write!(
                        row,
                        " {} ({}) |",
                        fmt_rate(r.ops_per_sec),
                        fmt_ratio(r.ratio_device)
                    ),
                    None => write!(row, " — |"),
                };
            }
            let first = cells.first().copied().flatten();
            let last = cells.last().copied().flatten();
            let scaling = match (first, last) {
                (Some(a), Some(b)) if a.ops_per_sec > 0.0 => Some(b.ops_per_sec / a.ops_per_sec),
                _ => None,
            };
            let cpf = cells
                .iter()
                .flatten()
                .filter_map(|r| r.commits_per_fsync.map(|c| format!("{c:.1}")))
                .collect::<Vec<_>>();
            let _ = write!(
                row,
                " {} | {} |",
                fmt_ratio(scaling),
                if cpf.is_empty() {
                    "—".into()
                } else {
                    cpf.join(" / ")
                }
            );
            let _ = writeln!(s, "{row}");
        }
    }

    // Amplification, recovery, memory.
    let _ = writeln!(s, "\n## Amplification, recovery, memory\n");
    let _ = writeln!(
        s,
        "| engine | status | write amp (load) | write amp (whole run) | space amp (load) | space amp (after delete + compact) | recovery open | peak RSS |"
    );
    let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|---:|");
    let opt = |x: Option<f64>| x.map_or_else(|| "—".into(), |v| format!("{v:.2}×"));
    for e in &res.engines {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {:.0} MiB |",
            e.engine,
            e.status,
            opt(e.write_amp_load),
            opt(e.write_amp_run),
            opt(e.space_amp_load),
            opt(e.space_amp_after_delete),
            e.recovery_open_secs
                .map_or_else(|| "—".into(), |v| fmt_us(v * 1e6)),
            e.peak_rss_mib,
        );
    }
    let skipped: Vec<&Record> = res.records.iter().filter(|r| r.skipped.is_some()).collect();
    if !skipped.is_empty() {
        let _ = writeln!(s, "\nSkipped:");
        for r in skipped {
            let _ = writeln!(
                s,
                "- {} / {}: {}",
                r.engine,
                r.workload,
                r.skipped.as_deref().unwrap_or("")
            );
        }
    }
    s
}

/// One row per workload for Midge: its throughput and latency next to the best peer, the device and the
/// component (the table issue #8 asks for).
pub fn headline(res: &Results, workloads: &[String]) -> String {
    let mut s = String::new();
    if !res.records.iter().any(|r| r.engine == "midge" && r.ran()) {
        return s;
    }
    let has_component = res.records.iter().any(|r| r.engine == COMPONENT && r.ran());
    let _ = writeln!(s, "## Midge at a glance\n");
    let _ = write!(
        s,
        "| workload | durability | midge ops/s | p50 / p99 | per | best peer | ÷ best peer | × device |"
    );
    let mut rule = "|---|---|---:|---:|---|---|---:|---:|".to_string();
    if has_component {
        s.push_str(" component ops/s | component time ÷ native |");
        rule.push_str("---:|---:|");
    }
    let _ = writeln!(s, "\n{rule}");
    for w in workloads {
        let Some(m) = find(&res.records, "midge", w).filter(|r| r.ran()) else {
            continue;
        };
        let peer = m
            .best_peer
            .as_deref()
            .and_then(|p| find(&res.records, p, w))
            .map_or_else(
                || "—".to_string(),
                |p| format!("{} {}", p.engine, fmt_rate(p.ops_per_sec)),
            );
        let _ = write!(
            s,
            "| {w} | {} | {} | {} / {} | {} | {peer} | {} | {} |",
            m.durability.as_deref().unwrap_or("—"),
            fmt_rate(m.ops_per_sec),
            fmt_us(m.latency.p50_us),
            fmt_us(m.latency.p99_us),
            m.unit,
            fmt_ratio(m.ratio_best_peer),
            fmt_ratio(m.ratio_device),
        );
        if has_component {
            let c = find(&res.records, COMPONENT, w).filter(|r| r.ran());
            let _ = write!(
                s,
                " {} | {} |",
                c.map_or_else(|| "—".into(), |c| fmt_rate(c.ops_per_sec)),
                fmt_ratio(c.and_then(|c| c.component_time_ratio)),
            );
        }
        s.push('\n');
    }
    s.push('\n');
    s
}

/// One of issue #8's targets, checked against this run.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub name: String,
    pub goal: String,
    pub measured: String,
    /// `None` when this run has no data for it.
    pub met: Option<bool>,
}

/// Workloads counted as "in-memory reads" for the component target.
pub const IN_MEMORY_READS: [&str; 3] = ["readrandom", "readzipf", "readmissing"];

/// Checks issue #8's targets against the records.
pub fn targets(res: &Results) -> Vec<Target> {
    let rec = |e: &str, w: &str| find(&res.records, e, w).filter(|r| r.ran());
    let mut out = Vec::new();
    let paired = res.paired.as_ref();
    let rounds = paired.map_or(0, |p| p.rounds.len());
    let one = rec("midge", "fillsync_1");
    // The disk's rate drifts over a run on shared machines: both denominators are shown, the run-wide best
    // probe and the rate probed right before this engine's sync phases, and the target is judged against
    // the higher of the two (the lower ratio).
    let now = one.and_then(|r| {
        r.extra
            .get("device_fsync_per_sec_just_before")
            .and_then(serde_json::Value::as_f64)
            .filter(|v| *v > 0.0)
            .map(|n| r.ops_per_sec / n)
    });
    out.push(judge_paired(
        Target {
            name: "sync commits, 1 writer".into(),
            goal: "≥ 0.90 × the device's fdatasync rate".into(),
            measured: one.map_or_else(
                || "—".into(),
                |r| match now {
                    Some(n) => format!(
                        "{}/s = {} of the rate probed just before ({} of the run's best probe)",
                        fmt_rate(r.ops_per_sec),
                        fmt_ratio(Some(n)),
                        fmt_ratio(r.ratio_device)
                    ),
                    None => format!("{}/s = {}", fmt_rate(r.ops_per_sec), fmt_ratio(r.ratio_device)),
                },
            ),
            met: match (now, one.and_then(|r| r.ratio_device)) {
                (Some(a), Some(b)) => Some(a.min(b) >= 0.9),
                (a, b) => a.or(b).map(|x| x >= 0.9),
            },
        },
        paired.and_then(Paired::one_vs_device),
        "the fdatasync rate probed in the same round",
        rounds,
        |x| x >= 0.9,
    ));
    let max_w = res.profile.writers.iter().copied().max().unwrap_or(1);
    let many = rec("midge", &format!("fillsync_{max_w}"));
    let scaling = match (one, many) {
        (Some(a), Some(b)) if a.ops_per_sec > 0.0 && max_w > 1 => Some(b.ops_per_sec / a.ops_per_sec),
        _ => None,
    };
    out.push(judge_paired(
        Target {
            name: format!("group commit, {max_w} writers"),
            goal: "≥ 8 × one writer".into(),
            measured: match (many, scaling) {
                (Some(b), Some(x)) => format!(
                    "{}/s = {x:.2}× one writer, {} commits per fsync",
                    fmt_rate(b.ops_per_sec),
                    b.commits_per_fsync
                        .map_or_else(|| "?".into(), |c| format!("{c:.1}"))
                ),
                _ => "—".into(),
            },
            met: scaling.map(|x| x >= 8.0),
        },
        paired.filter(|p| p.writers == max_w).and_then(Paired::scaling),
        "one writer in the same round",
        rounds,
        |x| x >= 8.0,
    ));
    let with_peer: Vec<&Record> = res
        .records
        .iter()
        .filter(|r| r.engine == "midge" && r.ran() && r.ratio_best_peer.is_some())
        .collect();
    let behind: Vec<String> = with_peer
        .iter()
        .filter(|r| r.ratio_best_peer.unwrap_or(0.0) < 1.0)
        .map(|r| format!("{} {}", r.workload, fmt_ratio(r.ratio_best_peer)))
        .collect();
    out.push(Target {
        name: "every workload vs the best peer".into(),
        goal: "≥ 1.00 × the best peer at the same durability".into(),
        measured: if with_peer.is_empty() {
            "—".into()
        } else if behind.is_empty() {
            format!("ahead or level on all {}", with_peer.len())
        } else {
            format!(
                "ahead or level on {} of {}; behind on {}",
                with_peer.len() - behind.len(),
                with_peer.len(),
                behind.join(", ")
            )
        },
        met: (!with_peer.is_empty()).then_some(behind.is_empty()),
    });
    let comp = |w: &str| rec(COMPONENT, w).and_then(|r| r.component_time_ratio);
    let sync = comp("fillsync_1");
    out.push(judge_paired(
        Target {
            name: "component, sync commits (1 writer)".into(),
            goal: "≤ 1.30 × native time".into(),
            measured: fmt_ratio(sync),
            met: sync.map(|x| x <= 1.3),
        },
        paired.and_then(Paired::component_time),
        "native time in the same round",
        rounds,
        |x| x <= 1.3,
    ));
    if max_w > 1 {
        let sync_n = comp(&format!("fillsync_{max_w}"));
        out.push(judge_paired(
            Target {
                name: format!("component, sync commits ({max_w} writers)"),
                goal: "≤ 1.30 × native time".into(),
                measured: fmt_ratio(sync_n),
                met: sync_n.map(|x| x <= 1.3),
            },
            paired
                .filter(|p| p.writers == max_w)
                .and_then(Paired::component_time_n),
            "native time in the same round",
            rounds,
            |x| x <= 1.3,
        ));
    }
    let reads: Vec<(&str, f64)> = IN_MEMORY_READS
        .iter()
        .filter_map(|w| comp(w).map(|x| (*w, x)))
        .collect();
    out.push(Target {
        name: "component, in-memory reads".into(),
        goal: "≤ 2.00 × native time".into(),
        measured: if reads.is_empty() {
            "—".into()
        } else {
            reads
                .iter()
                .map(|(w, x)| format!("{w} {x:.2}×"))
                .collect::<Vec<_>>()
                .join(", ")
        },
        met: (!reads.is_empty()).then(|| reads.iter().all(|(_, x)| *x <= 2.0)),
    });
    out
}

/// A sync target measured by the paired rounds too: the rounds' median decides (each ratio is taken inside
/// one round, so the disk's drift between phases minutes apart does not enter it); the phase figure stays
/// beside it. Without paired rounds the phase's verdict stands.
fn judge_paired(
    mut t: Target,
    spread: Option<Spread>,
    of: &str,
    rounds: usize,
    ok: impl Fn(f64) -> bool,
) -> Target {
    if let Some(s) = spread {
        t.measured = format!(
            "paired rounds: median {:.2}× {of} ({:.2}–{:.2}× over {rounds} rounds); phase: {}",
            s.median, s.min, s.max, t.measured
        );
        t.met = Some(ok(s.median));
    }
    t
}

/// The paired sync rounds, one row per round.
pub fn render_paired(p: &Paired) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "## Paired sync rounds\n\nSingle-put sync commits in {:.1} s slices, interleaved (device, native 1 writer, component 1 writer, native {n} writers, component {n} writers; reversed every other round); each ratio is taken inside its round.\n",
        p.slice_secs,
        n = p.writers
    );
    let _ = writeln!(
        s,
        "| round | device fdatasync/s | native 1 | 1 ÷ device | native {n} | {n} ÷ 1 | component 1 | component time ÷ native | component {n} | component {n} time ÷ native |\n|---|---|---|---|---|---|---|---|---|---|",
        n = p.writers
    );
    let rate = |x: Option<f64>| x.map_or_else(|| "—".into(), fmt_rate);
    for (i, r) in p.rounds.iter().enumerate() {
        let _ = writeln!(
            s,
            "| {i} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            fmt_rate(r.device_fsync_per_sec),
            fmt_rate(r.native_1),
            fmt_ratio(r.one_vs_device()),
            fmt_rate(r.native_n),
            fmt_ratio(r.scaling()),
            rate(r.component_1),
            fmt_ratio(r.component_time()),
            rate(r.component_n),
            fmt_ratio(r.component_time_n()),
        );
    }
    let med = |x: Option<Spread>| x.map_or_else(|| "—".into(), |s| fmt_ratio(Some(s.median)));
    let _ = writeln!(
        s,
        "| median | | | {} | | {} | | {} | | {} |\n",
        med(p.one_vs_device()),
        med(p.scaling()),
        med(p.component_time()),
        med(p.component_time_n())
    );
    s
}

pub fn render_targets(t: &[Target]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "## Targets (issue #8)\n");
    let _ = writeln!(s, "| target | goal | measured | met |\n|---|---|---|---|");
    for t in t {
        let met = match t.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "—",
        };
        let _ = writeln!(s, "| {} | {} | {} | {met} |", t.name, t.goal, t.measured);
    }
    s.push('\n');
    s
}

fn short_sha(sha: &str) -> &str {
    let end = sha.find('-').unwrap_or(sha.len()).min(12);
    if sha.ends_with("-dirty") && end < sha.len() {
        // keep the marker visible
        return sha;
    }
    &sha[..end]
}

const COLORS: [&str; 8] = [
    "#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f",
];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Throughput per workload as grouped horizontal bars, each bar relative to the workload's best engine and
/// labelled with its absolute ops/s.
pub fn svg(records: &[Record], title: &str) -> String {
    let engines = engine_order(records);
    let workloads = workload_order(records);
    let (label_w, bar_w, value_w) = (170.0, 560.0, 90.0);
    let bar_h = 11.0;
    let group_h = engines.len() as f64 * bar_h + 12.0;
    let top = 58.0;
    let width = label_w + bar_w + value_w + 20.0;
    let height = top + workloads.len() as f64 * group_h + 24.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(
        s,
        r#"<rect width="100%" height="100%" fill="white"/><text x="10" y="20" font-size="14" font-weight="bold">{}</text>"#,
        esc(title)
    );
    let _ = writeln!(
        s,
        r##"<text x="10" y="36" fill="#555">bar = ops/s relative to the best engine on that workload; label = absolute ops/s</text>"##
    );
    for (i, e) in engines.iter().enumerate() {
        let x = 10.0 + i as f64 * 110.0;
        let _ = writeln!(
            s,
            r#"<rect x="{x}" y="42" width="10" height="10" fill="{}"/><text x="{}" y="51">{}</text>"#,
            COLORS[i % COLORS.len()],
            x + 14.0,
            esc(e)
        );
    }
    for (wi, w) in workloads.iter().enumerate() {
        let y0 = top + wi as f64 * group_h;
        let best = records
            .iter()
            .filter(|r| &r.workload == w && r.ran())
            .map(|r| r.ops_per_sec)
            .fold(0.0, f64::max);
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
            label_w - 8.0,
            y0 + group_h / 2.0,
            esc(w)
        );
        if wi > 0 {
            let _ = writeln!(
                s,
                r##"<line x1="10" x2="{}" y1="{}" y2="{}" stroke="#ddd"/>"##,
                width - 10.0,
                y0 - 2.0,
                y0 - 2.0
            );
        }
        for (ei, e) in engines.iter().enumerate() {
            let y = y0 + ei as f64 * bar_h;
            let Some(r) = find(records, e, w).filter(|r| r.ran()) else {
                continue;
            };
            let len = if best > 0.0 {
                (r.ops_per_sec / best * bar_w).max(1.0)
            } else {
                1.0
            };
            let _ = writeln!(
                s,
                r#"<rect class="bar" x="{label_w}" y="{y}" width="{len:.1}" height="{}" fill="{}"><title>{} {}: {:.0} ops/s</title></rect><text x="{:.1}" y="{}" font-size="9">{}</text>"#,
                bar_h - 2.0,
                COLORS[ei % COLORS.len()],
                esc(e),
                esc(w),
                r.ops_per_sec,
                label_w + len + 4.0,
                y + bar_h - 3.0,
                esc(&fmt_rate(r.ops_per_sec))
            );
        }
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(engine: &str, workload: &str, ops_s: f64) -> Record {
        Record {
            engine: engine.into(),
            workload: workload.into(),
            ops: 1000,
            secs: 1000.0 / ops_s,
            ops_per_sec: ops_s,
            unit: "op".into(),
            ..Record::default()
        }
    }

    fn sample() -> Vec<Record> {
        let mut v = vec![
            rec("midge", "fillseq", 300.0),
            rec("fjall", "fillseq", 200.0),
            rec("redb", "fillseq", 100.0),
            rec("midge", "fillsync_1", 900.0),
            rec("fjall", "fillsync_1", 450.0),
            rec("midge", "fillsync_16", 7200.0),
            rec("fjall", "fillsync_16", 500.0),
        ];
        let mut sled = rec("sled", "fillsync_1", 0.0);
        sled.skipped = Some("no sync".into());
        v.push(sled);
        v
    }

    #[test]
    fn ratios_use_the_best_non_midge_engine() {
        let mut v = sample();
        compute_ratios(&mut v, 1000.0);
        let get = |e: &str, w: &str| v.iter().find(|r| r.engine == e && r.workload == w).unwrap();
        assert_eq!(get("midge", "fillseq").ratio_best_peer, Some(1.5));
        assert_eq!(get("midge", "fillseq").best_peer.as_deref(), Some("fjall"));
        assert_eq!(get("fjall", "fillseq").ratio_best_peer, Some(1.0));
        assert_eq!(get("redb", "fillseq").ratio_best_peer, Some(0.5));
        // Device ratio only for sync workloads.
        assert_eq!(get("midge", "fillseq").ratio_device, None);
        assert_eq!(get("midge", "fillsync_1").ratio_device, Some(0.9));
        assert_eq!(get("midge", "fillsync_16").ratio_device, Some(7.2));
        assert_eq!(get("midge", "fillsync_1").ratio_best_peer, Some(2.0));
        // Skipped records get nothing.
        assert_eq!(get("sled", "fillsync_1").ratio_best_peer, None);
        assert_eq!(get("sled", "fillsync_1").ratio_device, None);
    }

    #[test]
    fn component_ratio_is_native_over_component_throughput() {
        let mut v = vec![
            rec("midge", "fillsync_1", 1000.0),
            rec(COMPONENT, "fillsync_1", 800.0),
            rec("fjall", "fillsync_1", 500.0),
            rec(COMPONENT, "readseq", 10.0),
        ];
        compute_ratios(&mut v, 0.0);
        assert_eq!(v[1].component_time_ratio, Some(1.25));
        // The component is Midge, not a peer: the best peer is fjall.
        assert_eq!(v[1].best_peer.as_deref(), Some("fjall"));
        assert_eq!(v[0].ratio_best_peer, Some(2.0));
        assert_eq!(v[0].component_time_ratio, None);
        // No native record for readseq: no ratio.
        assert_eq!(v[3].component_time_ratio, None);
        let md = markdown(&results(v));
        let row = section(&md, "## Throughput")
            .lines()
            .find(|l| l.starts_with("| fillsync_1 |"))
            .unwrap();
        assert!(row.ends_with("| 2.00× | — | 1.25× |"), "{row}");
    }

    #[test]
    fn no_peer_means_no_peer_ratio() {
        let mut v = vec![rec("midge", "readseq", 10.0)];
        compute_ratios(&mut v, 0.0);
        assert_eq!(v[0].ratio_best_peer, None);
        assert_eq!(v[0].ratio_device, None);
    }

    #[test]
    fn number_formatting() {
        assert_eq!(fmt_rate(1_234_567.0), "1.23 M");
        assert_eq!(fmt_rate(45_600.0), "46 K");
        assert_eq!(fmt_rate(4_560.0), "4.6 K");
        assert_eq!(fmt_rate(789.4), "789");
        assert_eq!(fmt_rate(2.5), "2.50");
        assert_eq!(fmt_us(0.85), "850 ns");
        assert_eq!(fmt_us(12.34), "12.3 µs");
        assert_eq!(fmt_us(450.0), "450 µs");
        assert_eq!(fmt_us(4560.0), "4.56 ms");
        assert_eq!(fmt_us(1_200_000.0), "1.20 s");
        assert_eq!(fmt_ratio(Some(0.5)), "0.50×");
        assert_eq!(fmt_ratio(None), "—");
    }

    /// The markdown from `heading` up to the next section.
    fn section<'a>(md: &'a str, heading: &str) -> &'a str {
        let start = md.find(heading).expect("section present");
        let rest = &md[start + heading.len()..];
        &rest[..rest.find("\n## ").unwrap_or(rest.len())]
    }

    fn results(records: Vec<Record>) -> Results {
        Results {
            meta: Meta {
                started: "2026-01-01T00:00:00Z".into(),
                git_sha: "0123456789abcdef".into(),
                versions: [("fjall", "3.1.0"), ("rocksdb", "0.25.0")]
                    .into_iter()
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .collect(),
                ..Meta::default()
            },
            device: DeviceProbe::default(),
            device_end: None,
            profile: Profile::new(crate::profile::Mode::Quick),
            engines: vec![EngineSummary {
                engine: "midge".into(),
                status: "ok".into(),
                write_amp_load: Some(2.5),
                ..EngineSummary::default()
            }],
            records,
            paired: None,
        }
    }

    #[test]
    fn markdown_table_bolds_the_best_and_shows_ratios() {
        let mut v = sample();
        compute_ratios(&mut v, 1000.0);
        let md = markdown(&results(v));
        assert!(
            md.contains("| workload | durability | midge | fjall | redb | sled |"),
            "{md}"
        );
        let table = section(&md, "## Throughput");
        let fillseq = table.lines().find(|l| l.starts_with("| fillseq |")).unwrap();
        assert_eq!(fillseq, "| fillseq | — | **300** | 200 | 100 | — | 1.50× | — |");
        let sync1 = table.lines().find(|l| l.starts_with("| fillsync_1 |")).unwrap();
        assert!(sync1.ends_with("| 2.00× | 0.90× |"), "{sync1}");
        // Group-commit table: scaling 7200/900 = 8x.
        let gc = md.lines().find(|l| l.starts_with("| midge | 900")).unwrap();
        assert!(gc.contains("| 8.00× |"), "{gc}");
        assert!(md.contains("| midge | ok | 2.50× |"), "{md}");
        assert!(md.contains("- sled / fillsync_1: no sync"));
        assert!(md.contains("0123456789ab"));
        // RocksDB is in the lock file but was not compiled in: not listed.
        assert!(md.contains("Versions: fjall 3.1.0."), "{md}");
    }

    #[test]
    fn headline_and_targets_cover_issue_8() {
        let mut v = sample();
        v.push(rec("redb", "readrandom", 1000.0));
        v.push(rec("midge", "readrandom", 500.0));
        v.push(rec(COMPONENT, "readrandom", 200.0));
        v.push(rec(COMPONENT, "fillsync_1", 800.0));
        v[3].commits_per_fsync = Some(1.0);
        v[5].commits_per_fsync = Some(8.0);
        v[3].extra
            .insert("device_fsync_per_sec_just_before".into(), 900.0.into());
        compute_ratios(&mut v, 1000.0);
        let mut r = results(v);
        r.profile.writers = vec![1, 16];
        let t = targets(&r);
        let get = |n: &str| t.iter().find(|t| t.name.starts_with(n)).unwrap();
        // 900 / 900 = 1.00 of the rate probed just before, 0.90 of the run's best probe: met on both.
        assert_eq!(get("sync commits, 1 writer").met, Some(true));
        let m = &get("sync commits, 1 writer").measured;
        assert!(
            m.contains("1.00× of the rate probed just before (0.90× of the run's best probe)"),
            "{m}"
        );
        // 7200 / 900 = 8x.
        assert_eq!(get("group commit, 16").met, Some(true));
        assert!(get("group commit, 16").measured.contains("8.0 commits per fsync"));
        let peers = get("every workload");
        assert_eq!(peers.met, Some(false));
        assert!(
            peers.measured.contains("behind on readrandom 0.50×"),
            "{}",
            peers.measured
        );
        // 900 / 800 = 1.125 ≤ 1.3; readrandom 500 / 200 = 2.5 > 2.
        assert_eq!(get("component, sync").met, Some(true));
        assert_eq!(get("component, in-memory").met, Some(false));
        let md = markdown(&r);
        assert!(md.contains("## Midge at a glance"), "{md}");
        assert!(md.contains("## Targets (issue #8)"), "{md}");
        let row = md
            .lines()
            .find(|l| l.starts_with("| readrandom | — | 500 |"))
            .unwrap();
        assert!(row.contains("| redb 1.0 K | 0.50× | — | 200 | 2.50× |"), "{row}");
    }

    /// With paired rounds the sync targets follow the rounds' median, not the phases minutes apart.
    #[test]
    fn paired_rounds_decide_the_sync_targets() {
        use crate::paired::Round;
        let mut v = sample();
        v.push(rec(COMPONENT, "fillsync_1", 600.0));
        v[3].extra
            .insert("device_fsync_per_sec_just_before".into(), 900.0.into());
        compute_ratios(&mut v, 1000.0);
        let mut r = results(v);
        r.profile.writers = vec![1, 16];
        // Phases: component 900 / 600 = 1.5× (missed). Rounds: 1.2×, 1.25×, 2.0× → median 1.25× (met);
        // scaling 7.0×, 7.5×, 9.0× → 7.5× (missed, the phase said 8.0×); 1 ÷ device 0.95×, 0.8×, 1.0×.
        // Component 16 writers ÷ native 16 writers: 1.1×, 1.4×, 1.2× → median 1.2× (met).
        let round = |dev: f64, one: f64, n: f64, c: f64, cn: f64| Round {
            device_fsync_per_sec: dev,
            native_1: one,
            native_n: n,
            component_1: Some(c),
            component_n: Some(n / cn),
        };
        r.paired = Some(Paired {
            writers: 16,
            slice_secs: 0.5,
            rounds: vec![
                round(1000.0, 950.0, 6650.0, 950.0 / 1.2, 1.1),
                round(1000.0, 800.0, 6000.0, 800.0 / 1.25, 1.4),
                round(900.0, 900.0, 8100.0, 450.0, 1.2),
            ],
        });
        let t = targets(&r);
        let get = |n: &str| t.iter().find(|t| t.name.starts_with(n)).unwrap();
        assert_eq!(get("component, sync commits (1 writer)").met, Some(true));
        let m = &get("component, sync commits (1 writer)").measured;
        assert!(
            m.starts_with("paired rounds: median 1.25× native time in the same round (1.20–2.00× over 3 rounds); phase: 1.50×"),
            "{m}"
        );
        let n = get("component, sync commits (16 writers)");
        assert_eq!(n.met, Some(true), "{n:?}");
        assert!(
            n.measured.starts_with("paired rounds: median 1.20× native time in the same round (1.10–1.40× over 3 rounds); phase: —"),
            "{n:?}"
        );
        assert_eq!(get("group commit, 16").met, Some(false));
        assert!(get("group commit, 16").measured.contains("median 7.50×"));
        assert_eq!(get("sync commits, 1 writer").met, Some(true));
        assert!(get("sync commits, 1 writer").measured.contains("median 0.95×"));
        // Paired rounds of another writer count do not judge this run's group-commit target.
        r.paired.as_mut().unwrap().writers = 4;
        assert_eq!(targets(&r)[1].met, Some(true));
        let md = markdown(&r);
        let table = section(&md, "## Paired sync rounds");
        assert!(
            table.contains("| 2 | 900 | 900 | 1.00× | 8.1 K | 9.00× | 450 | 2.00× | 6.8 K | 1.20× |"),
            "{table}"
        );
        assert!(
            table.contains("| median | | | 0.95× | | 7.50× | | 1.25× | | 1.20× |"),
            "{table}"
        );
    }

    #[test]
    fn json_round_trips() {
        let mut v = sample();
        compute_ratios(&mut v, 1000.0);
        // The skipped record has 0 ops/s and an infinite duration: JSON cannot carry that.
        assert!(v.iter().any(|r| !r.secs.is_finite()));
        v.iter_mut().for_each(Record::sanitize);
        assert!(v.iter().all(|r| r.secs.is_finite()));
        let r = results(v);
        let text = serde_json::to_string_pretty(&r).unwrap();
        let back: Results = serde_json::from_str(&text).unwrap();
        assert_eq!(back.records, r.records);
        assert_eq!(back.engines, r.engines);
        let val: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(val["records"][0]["engine"], "midge");
        assert_eq!(val["records"][0]["ratio_best_peer"], 1.5);
        assert!(val["device"]["prealloc_4k"]["ops_per_sec"].is_number());
    }

    #[test]
    fn svg_has_one_bar_per_ran_record_and_escapes_text() {
        let mut v = sample();
        v.push(rec("a<b", "x&y", 5.0));
        let out = svg(&v, "t");
        assert!(out.starts_with("<svg"));
        assert!(out.trim_end().ends_with("</svg>"));
        let ran = v.iter().filter(|r| r.ran()).count();
        assert_eq!(out.matches(r#"class="bar""#).count(), ran);
        assert!(out.contains("a&lt;b") && out.contains("x&amp;y"));
        assert!(!out.contains("a<b"));
        // The best bar on a workload spans the full width.
        assert!(out.contains(r#"width="560.0""#));
    }
}
