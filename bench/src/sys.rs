//! What the process and machine report about themselves: /proc counters, disk usage, machine facts, time.

use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// Process counters used to attribute I/O, CPU and memory to one engine (each engine runs in its own child).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcSample {
    /// Bytes this process caused to be sent to the storage layer (`/proc/self/io` write_bytes).
    pub write_bytes: u64,
    /// Bytes fetched from the storage layer.
    pub read_bytes: u64,
    /// User + system CPU seconds.
    pub cpu_s: f64,
    /// Resident set size now, bytes.
    pub rss: u64,
    /// Peak resident set size, bytes.
    pub peak_rss: u64,
}

impl ProcSample {
    pub fn now() -> ProcSample {
        let io = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        ProcSample {
            write_bytes: field(&io, "write_bytes:").unwrap_or(0),
            read_bytes: field(&io, "read_bytes:").unwrap_or(0),
            cpu_s: cpu_seconds(&stat).unwrap_or(0.0),
            rss: field(&status, "VmRSS:").unwrap_or(0) * 1024,
            peak_rss: field(&status, "VmHWM:").unwrap_or(0) * 1024,
        }
    }
}

/// The first number after `name` in a `name value` line.
pub fn field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// utime + stime from `/proc/self/stat`, in seconds (USER_HZ is 100 on every Linux ABI Rust targets).
pub fn cpu_seconds(stat: &str) -> Option<f64> {
    // The command name may hold spaces; fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

/// Apparent-size-independent disk usage of a tree: allocated blocks, like `du`.
pub fn du(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if meta.is_dir() {
        let mut total = meta.blocks() * 512;
        if let Ok(rd) = std::fs::read_dir(path) {
            for e in rd.flatten() {
                total += du(&e.path());
            }
        }
        total
    } else {
        meta.blocks() * 512
    }
}

/// Facts about the machine that make a result comparable (or not).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Machine {
    pub cpu_model: String,
    pub cpus: usize,
    pub mem_total_gib: f64,
    pub kernel: String,
    pub filesystem: String,
    pub device: String,
    pub hostname: String,
}

impl Machine {
    pub fn probe(data_dir: &Path) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let (device, filesystem) = mount_of(data_dir);
        Machine {
            cpu_model: cpuinfo
                .lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|r| r.trim_start_matches([' ', '\t', ':']).trim().to_string())
                .unwrap_or_else(|| "unknown".into()),
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            mem_total_gib: field(&meminfo, "MemTotal:").unwrap_or(0) as f64 / (1024.0 * 1024.0),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_string(),
            filesystem,
            device,
            hostname: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .unwrap_or_default()
                .trim()
                .to_string(),
        }
    }
}

/// (device, fs type) of the mount holding `path` (longest mount-point prefix in /proc/mounts).
fn mount_of(path: &Path) -> (String, String) {
    let abs = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let mut best: Option<(usize, String, String)> = None;
    for l in mounts.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 3 {
            continue;
        }
        if abs.starts_with(f[1]) && best.as_ref().is_none_or(|b| f[1].len() > b.0) {
            best = Some((f[1].len(), f[0].to_string(), f[2].to_string()));
        }
    }
    best.map_or(("unknown".into(), "unknown".into()), |b| (b.1, b.2))
}

/// Civil UTC date-time from Unix seconds (Howard Hinnant's days-from-civil inverse).
pub fn civil_utc(unix_secs: u64) -> (i64, u32, u32, u32, u32, u32) {
    let days = (unix_secs / 86_400) as i64;
    let sod = unix_secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        m,
        d,
        (sod / 3600) as u32,
        ((sod % 3600) / 60) as u32,
        (sod % 60) as u32,
    )
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `2026-01-31T12:34:56Z`
pub fn iso_utc(unix_secs: u64) -> String {
    let (y, mo, d, h, mi, s) = civil_utc(unix_secs);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// `20260131-123456` (directory-name friendly).
pub fn stamp_utc(unix_secs: u64) -> String {
    let (y, mo, d, h, mi, s) = civil_utc(unix_secs);
    format!("{y:04}{mo:02}{d:02}-{h:02}{mi:02}{s:02}")
}

/// The repository's HEAD commit (with `-dirty` when the tree has changes), or `unknown`.
pub fn git_sha() -> String {
    let dir = env!("CARGO_MANIFEST_DIR");
    let run = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(dir)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match run(&["rev-parse", "HEAD"]) {
        Some(sha) => {
            let dirty =
                run(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
            if dirty { format!("{sha}-dirty") } else { sha }
        }
        None => "unknown".into(),
    }
}

/// Versions of the engines under test, read from the workspace lock file compiled into the binary.
pub fn crate_versions() -> Vec<(String, String)> {
    let lock = include_str!("../../Cargo.lock");
    let wanted = [
        "cntryl-midge",
        "fjall",
        "lsm-tree",
        "redb",
        "sled",
        "rusqlite",
        "libsqlite3-sys",
        "rocksdb",
        "librocksdb-sys",
        "hdrhistogram",
    ];
    let mut out = Vec::new();
    let mut name: Option<&str> = None;
    for l in lock.lines() {
        if let Some(n) = l.strip_prefix("name = ") {
            name = Some(n.trim_matches('"'));
        } else if let (Some(v), Some(n)) = (l.strip_prefix("version = "), name.take())
            && wanted.contains(&n)
        {
            out.push((n.to_string(), v.trim_matches('"').to_string()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_fields() {
        let io = "rchar: 10\nwchar: 20\nread_bytes: 4096\nwrite_bytes: 8192\ncancelled_write_bytes: 0\n";
        assert_eq!(field(io, "write_bytes:"), Some(8192));
        assert_eq!(field(io, "read_bytes:"), Some(4096));
        assert_eq!(field(io, "nope:"), None);
        let status = "Name:\tx\nVmHWM:\t    2164 kB\nVmRSS:\t  2000 kB\n";
        assert_eq!(field(status, "VmHWM:"), Some(2164));
    }

    #[test]
    fn parses_cpu_time_with_spaces_in_comm() {
        let stat = "1234 (my bench) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 1 1 1";
        assert_eq!(cpu_seconds(stat), Some(3.0));
        assert_eq!(cpu_seconds("garbage"), None);
    }

    #[test]
    fn civil_dates() {
        assert_eq!(iso_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(iso_utc(1_767_225_599), "2025-12-31T23:59:59Z");
        assert_eq!(stamp_utc(1_767_225_600), "20260101-000000");
    }

    #[test]
    fn lock_file_lists_the_peers() {
        let v = crate_versions();
        for n in ["cntryl-midge", "fjall", "redb", "sled", "rusqlite"] {
            assert!(v.iter().any(|(name, _)| name == n), "{n} missing from {v:?}");
        }
    }
}
