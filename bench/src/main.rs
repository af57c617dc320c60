//! `midge-bench`: Midge and its peers on the same workloads, one seeded generator, one machine, one run.
//!
//! The parent probes the device, then runs each engine in a child process of this same binary (so RSS and
//! /proc/self/io belong to one engine), collects the records and writes `results.json`, `summary.md` and
//! `throughput.svg`.

mod device;
mod engines;
mod guest;
mod paired;
mod profile;
mod report;
mod rng;
mod stats;
mod sys;
mod workloads;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use engines::EngineKind;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use profile::{Mode, Profile};
use report::{EngineSummary, Meta, Record, Results};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;
use workloads::Msg;

#[derive(Debug, Parser)]
#[command(
    name = "midge-bench",
    about = "Midge vs fjall, redb, sled, SQLite (and RocksDB) on db_bench-style workloads, with the device's own limits"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// Small sizes; finishes in under 5 minutes on 2 cores with every peer.
    #[arg(long, conflicts_with = "long")]
    quick: bool,
    /// Workstation sizes (10 M keys, long phases).
    #[arg(long)]
    long: bool,
    /// Engines to run, comma-separated (midge, fjall, redb, sled, sqlite, rocksdb, midge-component).
    /// Default: every engine this build can run.
    #[arg(long, value_delimiter = ',')]
    engines: Option<Vec<String>>,
    /// Output directory (default bench/results/<UTC timestamp>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Where the databases live (default <out>/data; keep it on the disk you mean to measure, not tmpfs).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The generator seed (same seed, same keys, values and orders for every engine).
    #[arg(long, default_value_t = 0x006D_6964_6765)]
    seed: u64,
    /// Run only these workloads (debugging; later reads may then find an empty database).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Keep the databases after the run.
    #[arg(long)]
    keep_data: bool,
}

/// What every measuring child is told: the profile, the generator seed and its data directory.
#[derive(Debug, clap::Args)]
struct ChildArgs {
    #[arg(long, value_enum)]
    mode: Mode,
    #[arg(long)]
    seed: u64,
    #[arg(long)]
    dir: PathBuf,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// (internal) Run every workload for one engine, reporting JSON lines on stdout.
    #[command(hide = true)]
    Engine {
        #[arg(long)]
        engine: String,
        #[command(flatten)]
        child: ChildArgs,
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
    },
    /// (internal) The paired sync rounds (native, component, device interleaved), reported as one JSON line.
    #[command(hide = true)]
    SyncPairs {
        #[command(flatten)]
        child: ChildArgs,
        #[arg(long)]
        component: bool,
    },
    /// (internal) Load keys, make them durable, print READY, wait to be killed.
    #[command(hide = true)]
    CrashWriter {
        #[arg(long)]
        engine: String,
        #[arg(long)]
        keys: u64,
        #[arg(long)]
        seed: u64,
        #[arg(long)]
        dir: PathBuf,
    },
}

fn kind(name: &str) -> Result<EngineKind> {
    EngineKind::parse(name).with_context(|| format!("unknown engine {name:?}"))
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Some(Cmd::Engine {
            ref engine,
            ref child,
            ref only,
        }) => run_engine_child(kind(engine)?, child.mode, child.seed, &child.dir, only.clone()),
        Some(Cmd::CrashWriter {
            ref engine,
            keys,
            seed,
            ref dir,
        }) => workloads::crash_writer(kind(engine)?, dir, keys, seed),
        Some(Cmd::SyncPairs { ref child, component }) => {
            let got = paired::run(&Profile::new(child.mode), child.seed, &child.dir, component)?;
            println!("{}", serde_json::to_string(&got)?);
            Ok(())
        }
        None => run_parent(&cli),
    }
}

fn run_engine_child(k: EngineKind, mode: Mode, seed: u64, dir: &Path, only: Vec<String>) -> Result<()> {
    let p = Profile::new(mode);
    let stdout = std::io::stdout();
    let mut emit = |m: Msg| {
        let mut out = stdout.lock();
        let _ = serde_json::to_writer(&mut out, &m);
        let _ = out.write_all(b"\n");
        let _ = out.flush();
    };
    let summary = workloads::Runner::new(k, &p, seed, dir, only, &mut emit).run();
    emit(Msg::Summary {
        summary: Box::new(summary),
    });
    Ok(())
}

fn run_parent(cli: &Cli) -> Result<()> {
    let started = Instant::now();
    let mode = if cli.quick {
        Mode::Quick
    } else if cli.long {
        Mode::Long
    } else {
        Mode::Default
    };
    let p = Profile::new(mode);
    let now = sys::unix_now();
    let out = cli.out.clone().unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("results")
            .join(sys::stamp_utc(now))
    });
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let data = cli.data_dir.clone().unwrap_or_else(|| out.join("data"));
    std::fs::create_dir_all(&data)?;

    let kinds: Vec<EngineKind> = match &cli.engines {
        Some(list) => list.iter().map(|n| kind(n)).collect::<Result<_>>()?,
        None => EngineKind::ALL
            .into_iter()
            .filter(|k| k.unavailable().is_none())
            .collect(),
    };
    let names = workloads::workload_names(&p);
    let bar = ProgressBar::with_draw_target(
        Some(3 + (kinds.len() * names.len()) as u64),
        ProgressDrawTarget::stderr(),
    );
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:32}] {pos}/{len} {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );

    // Build the guest once, before anything is measured; children get its path and skip the build.
    #[cfg(feature = "component")]
    let guest: Option<PathBuf> = if kinds.contains(&EngineKind::MidgeComponent) {
        bar.set_message("building the guest component (release, wasm32-wasip2)");
        Some(engines::component::guest_wasm().context("building the guest component")?)
    } else {
        None
    };
    #[cfg(not(feature = "component"))]
    let guest: Option<PathBuf> = None;
    bar.set_message("device probe");
    let device = device::probe(&data.join("probe"), p.probe_unit).context("device probe")?;
    bar.inc(1);

    let mut records: Vec<Record> = Vec::new();
    let mut summaries: Vec<EngineSummary> = Vec::new();
    for k in &kinds {
        if let Some(why) = k.unavailable() {
            summaries.push(EngineSummary {
                engine: k.name().into(),
                settings: k.settings().into(),
                status: format!("unavailable: {why}"),
                ..EngineSummary::default()
            });
            bar.inc(names.len() as u64);
            continue;
        }
        let dir = data.join(k.name());
        let _ = std::fs::remove_dir_all(&dir);
        let (recs, summary) = run_child(*k, mode, cli.seed, &dir, &cli.only, guest.as_deref(), &bar)?;
        records.extend(recs);
        summaries.push(summary);
        if !cli.keep_data {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    // The sync targets' ratios, measured in interleaved rounds (see `paired`): only for a full run with Midge.
    let paired = if kinds.contains(&EngineKind::Midge) && cli.only.is_empty() {
        bar.set_message("paired sync rounds");
        let with_component = kinds.contains(&EngineKind::MidgeComponent) && guest.is_some();
        match run_paired(
            mode,
            cli.seed,
            &data.join("paired"),
            with_component,
            guest.as_deref(),
        ) {
            Ok(p) => Some(p),
            Err(e) => {
                bar.println(format!("[paired] failed: {e:#}"));
                None
            }
        }
    } else {
        None
    };
    bar.inc(1);
    bar.set_message("device probe (again)");
    let device_end = device::probe(&data.join("probe"), p.probe_unit).context("device probe")?;
    bar.inc(1);
    bar.finish_and_clear();
    if !cli.keep_data {
        let _ = std::fs::remove_dir_all(data.join("probe"));
        let _ = std::fs::remove_dir(&data);
    }

    let mut results = Results {
        meta: Meta {
            started: sys::iso_utc(now),
            git_sha: sys::git_sha(),
            machine: sys::Machine::probe(&out),
            versions: sys::crate_versions().into_iter().collect(),
            rocksdb_compiled: cfg!(feature = "rocksdb"),
            seed: cli.seed,
            data_dir: data.display().to_string(),
            total_secs: started.elapsed().as_secs_f64(),
        },
        device,
        device_end: Some(device_end),
        profile: p,
        engines: summaries,
        records,
        paired,
    };
    let limit = report::fsync_limit(&results);
    report::compute_ratios(&mut results.records, limit);
    results.records.iter_mut().for_each(Record::sanitize);
    std::fs::write(out.join("results.json"), serde_json::to_string_pretty(&results)?)?;
    let md = report::markdown(&results);
    std::fs::write(out.join("summary.md"), &md)?;
    let title = format!(
        "midge-bench {:?} — {} — throughput per workload",
        results.profile.mode, results.meta.started
    );
    std::fs::write(out.join("throughput.svg"), report::svg(&results.records, &title))?;
    println!("{md}");
    println!(
        "Wrote {}/{{results.json,summary.md,throughput.svg}} in {:.0} s.",
        out.display(),
        results.meta.total_secs
    );
    Ok(())
}

/// A measuring child of this same binary: `sub` with its [`ChildArgs`], and the prebuilt guest's path.
fn child_command(sub: &str, mode: Mode, seed: u64, dir: &Path, guest: Option<&Path>) -> Result<Command> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args([sub, "--mode"])
        .arg(format!("{mode:?}").to_lowercase())
        .args(["--seed", &seed.to_string(), "--dir"])
        .arg(dir);
    if let Some(wasm) = guest {
        cmd.env("MIDGE_GUEST_WASM", wasm);
    }
    Ok(cmd)
}

/// Runs the paired sync rounds in a child process (fresh databases, its own RSS) and parses its report.
fn run_paired(
    mode: Mode,
    seed: u64,
    dir: &Path,
    component: bool,
    guest: Option<&Path>,
) -> Result<paired::Paired> {
    let mut cmd = child_command("sync-pairs", mode, seed, dir, guest)?;
    cmd.stderr(Stdio::inherit());
    if component {
        cmd.arg("--component");
    }
    let out = cmd.output().context("spawning the paired sync rounds")?;
    anyhow::ensure!(out.status.success(), "sync-pairs exited with {}", out.status);
    let line = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(line.trim()).context("parsing the paired rounds")
}

/// Runs one engine's child and gathers what it reports.
fn run_child(
    k: EngineKind,
    mode: Mode,
    seed: u64,
    dir: &Path,
    only: &[String],
    guest: Option<&Path>,
    bar: &ProgressBar,
) -> Result<(Vec<Record>, EngineSummary)> {
    let mut cmd = child_command("engine", mode, seed, dir, guest)?;
    cmd.args(["--engine", k.name()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if !only.is_empty() {
        cmd.arg("--only").arg(only.join(","));
    }
    let mut child = cmd.spawn().with_context(|| format!("spawning {}", k.name()))?;
    let stderr = child.stderr.take().context("child stderr")?;
    let name = k.name();
    let err_bar = bar.clone();
    let forward = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            err_bar.println(format!("[{name}] {line}"));
        }
    });
    let mut records = Vec::new();
    let mut summary = None;
    let stdout = child.stdout.take().context("child stdout")?;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        match serde_json::from_str::<Msg>(&line) {
            Ok(Msg::Progress { workload }) => {
                bar.set_message(format!("{name}: {workload}"));
                bar.inc(1);
            }
            Ok(Msg::Record { record }) => {
                if let Some(why) = &record.skipped {
                    bar.println(format!("[{name}] {}: {why}", record.workload));
                }
                records.push(*record);
            }
            Ok(Msg::Summary { summary: s }) => summary = Some(*s),
            Err(_) => bar.println(format!("[{name}] {line}")),
        }
    }
    let status = child.wait()?;
    let _ = forward.join();
    let summary = summary.unwrap_or_else(|| EngineSummary {
        engine: name.into(),
        settings: k.settings().into(),
        status: format!("failed: child exited with {status}"),
        ..EngineSummary::default()
    });
    Ok((records, summary))
}
