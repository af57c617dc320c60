//! How much memory the host lets this process use, for [`crate::MemoryBudget::Auto`].
//!
//! Linux reports its RAM in `/proc/meminfo` and a container's limit in its cgroup (v2 `memory.max` on the
//! process's cgroup and every ancestor, or v1 `memory.limit_in_bytes`). Other targets, wasm32 among them,
//! report nothing and the budget falls back to a fixed size. Only the readers live here; the parsers are pure
//! so they are tested on every target.

/// The budget [`crate::MemoryBudget::Auto`] stands for when the host's memory is unknown.
pub const FALLBACK_BUDGET: u64 = 512 << 20;

/// The budget [`crate::MemoryBudget::Auto`] derives from the host's memory `limit` (the smaller of RAM and the
/// cgroup limit): half of it, at least 64 MiB once the limit is 128 MiB or more; [`FALLBACK_BUDGET`] when the
/// limit is unknown.
pub fn auto_budget(limit: Option<u64>) -> u64 {
    match limit {
        None => FALLBACK_BUDGET,
        Some(l) if l >= 128 << 20 => (l / 2).max(64 << 20),
        Some(l) => (l / 2).max(1),
    }
}

/// The smaller of the machine's RAM and this process's cgroup memory limit, when the platform says.
pub fn host_memory_limit() -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        let read = |p: &str| std::fs::read_to_string(p).ok();
        let ram = read("/proc/meminfo").and_then(|t| parse_meminfo_total(&t));
        let cgroup = read("/proc/self/cgroup").and_then(|own| {
            cgroup_limit_paths(&own)
                .into_iter()
                .filter_map(|p| read(&p).and_then(|t| parse_cgroup_limit(&t)))
                .min()
        });
        match (ram, cgroup) {
            (Some(r), Some(c)) => Some(r.min(c)),
            (r, c) => r.or(c),
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// `MemTotal` of a `/proc/meminfo` text, in bytes.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub fn parse_meminfo_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut words = line["MemTotal:".len()..].split_whitespace();
    let n: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => n.checked_mul(1024),
        None => Some(n),
        Some(_) => None,
    }
}

/// A cgroup limit file's value in bytes; `None` for "max" (no limit), v1's "unlimited" sentinel (any value
/// of 2^62 or more) and anything unreadable.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub fn parse_cgroup_limit(text: &str) -> Option<u64> {
    let v: u64 = text.trim().parse().ok()?;
    (v < 1 << 62).then_some(v)
}

/// The limit files that bound a process whose `/proc/self/cgroup` reads `own`: for cgroup v2 `memory.max` of
/// its cgroup and of each ancestor below the root; for v1 the memory controller's `memory.limit_in_bytes`.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub fn cgroup_limit_paths(own: &str) -> Vec<String> {
    let mut paths = Vec::new();
    for line in own.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if controllers.is_empty() {
            // v2: the limit of any ancestor applies too (a container's limit often sits above the leaf).
            let mut p = path.trim_end_matches('/');
            loop {
                paths.push(format!("/sys/fs/cgroup{p}/memory.max"));
                match p.rfind('/') {
                    Some(i) => p = &p[..i],
                    None => break,
                }
            }
        } else if controllers.split(',').any(|c| c == "memory") {
            paths.push(format!(
                "/sys/fs/cgroup/memory{}/memory.limit_in_bytes",
                path.trim_end_matches('/')
            ));
        }
    }
    paths
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_budget_is_half_the_limit_with_a_floor_and_a_fallback() {
        assert_eq!(auto_budget(None), 512 << 20);
        assert_eq!(auto_budget(Some(24 << 30)), 12 << 30);
        // At 128 MiB and above the budget is never below 64 MiB; below that it is half.
        assert_eq!(auto_budget(Some(128 << 20)), 64 << 20);
        assert_eq!(auto_budget(Some(100 << 20)), 50 << 20);
        assert_eq!(auto_budget(Some(0)), 1);
    }

    #[test]
    fn meminfo_total_is_read_in_bytes() {
        let text = "MemTotal:       24684096 kB\nMemFree:         8845000 kB\n";
        assert_eq!(parse_meminfo_total(text), Some(24684096 * 1024));
        assert_eq!(parse_meminfo_total("MemFree: 1 kB\n"), None);
        assert_eq!(parse_meminfo_total("MemTotal: lots kB\n"), None);
        assert_eq!(parse_meminfo_total("MemTotal: 5 MB\n"), None);
    }

    #[test]
    fn cgroup_limits_parse_and_unlimited_is_none() {
        assert_eq!(parse_cgroup_limit("1073741824\n"), Some(1 << 30));
        assert_eq!(parse_cgroup_limit("max\n"), None);
        assert_eq!(parse_cgroup_limit("9223372036854771712\n"), None);
        assert_eq!(parse_cgroup_limit(""), None);
    }

    #[test]
    fn cgroup_paths_cover_v2_ancestors_and_v1_memory() {
        assert_eq!(
            cgroup_limit_paths("0::/system.slice/app.service\n"),
            vec![
                "/sys/fs/cgroup/system.slice/app.service/memory.max",
                "/sys/fs/cgroup/system.slice/memory.max",
                "/sys/fs/cgroup/memory.max",
            ]
        );
        assert_eq!(cgroup_limit_paths("0::/\n"), vec!["/sys/fs/cgroup/memory.max"]);
        assert_eq!(
            cgroup_limit_paths("12:cpu,cpuacct:/a\n7:memory:/docker/abc\n"),
            vec!["/sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes"]
        );
        assert!(cgroup_limit_paths("garbage").is_empty());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn linux_reports_a_plausible_limit() {
        let l = host_memory_limit().expect("Linux has /proc/meminfo");
        assert!(l >= 16 << 20, "{l}");
    }
}
