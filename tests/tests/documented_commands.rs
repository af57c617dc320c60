//! The `cargo run` commands the README, the docs and the scripts give a newcomer resolve: `cargo run -p <package>`
//! without `--bin` or `--example` fails ("could not determine which binary to run") once a package has several
//! binaries and no `default-run` — which is how `cargo run --release -p midge-bench -- --quick` broke when the
//! cloud benchmark added a second binary. Reads the workspace with `cargo metadata`; builds nothing.
#![allow(clippy::disallowed_methods)] // reads the repository's files and runs cargo

use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Each workspace package's binaries and `default-run`.
fn packages() -> Vec<(String, Vec<String>, Option<String>)> {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .current_dir(workspace())
        .output()
        .expect("running cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("cargo metadata's JSON");
    meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| {
            let bins = p["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|t| t["kind"].as_array().is_some_and(|k| k.iter().any(|k| k == "bin")))
                .map(|t| t["name"].as_str().unwrap_or_default().to_string())
                .collect();
            let default_run = p["default_run"].as_str().map(str::to_string);
            (
                p["name"].as_str().unwrap_or_default().to_string(),
                bins,
                default_run,
            )
        })
        .collect()
}

/// The package a `cargo run` line names with `-p`, unless it picks a target itself (`--bin`, `--example`).
fn runs_package(line: &str) -> Option<String> {
    let at = line.find("cargo run")?;
    let mut command = &line[at..];
    // Inline in prose (`` `cargo run …` ``): the command ends at its closing backtick.
    if line[..at].ends_with('`') {
        command = command.split('`').next().unwrap_or(command);
    }
    let words: Vec<&str> = command.split_whitespace().collect();
    let args = words.split(|w| *w == "--").next().unwrap_or(&[]);
    if args.iter().any(|w| matches!(*w, "--bin" | "--example")) {
        return None;
    }
    let i = args.iter().position(|w| matches!(*w, "-p" | "--package"))?;
    let name: String = args
        .get(i + 1)?
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        .collect();
    Some(name)
}

#[test]
fn every_documented_cargo_run_resolves_to_one_binary() {
    let packages = packages();
    let root = workspace();
    let mut files: Vec<PathBuf> = vec![root.join("README.md")];
    for dir in ["docs", "scripts"] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap().flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "md" || e == "sh") {
                files.push(path);
            }
        }
    }
    let mut checked = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let Some(name) = runs_package(line) else { continue };
            let (_, bins, default_run) = packages
                .iter()
                .find(|(p, ..)| *p == name)
                .unwrap_or_else(|| panic!("{}:{}: no workspace package `{name}`", file.display(), n + 1));
            let resolves = match (bins.len(), default_run) {
                (1, _) => true,
                (_, Some(d)) => bins.contains(d),
                _ => false,
            };
            assert!(
                resolves,
                "{}:{}: `cargo run -p {name}` cannot pick among its binaries {bins:?} (no default-run)",
                file.display(),
                n + 1
            );
            checked += 1;
        }
    }
    // The README's and docs/performance.md's benchmark commands at least.
    assert!(
        checked >= 3,
        "found only {checked} `cargo run -p` commands to check"
    );
}

#[test]
fn a_package_with_two_binaries_and_no_default_run_is_refused() {
    // The rule above, on the shape that broke: it must not pass vacuously.
    assert_eq!(
        runs_package("cargo run --release -p midge-bench -- --quick").as_deref(),
        Some("midge-bench")
    );
    assert_eq!(
        runs_package("`cargo run --release -p midge-bench --bin midge-cloud-bench`"),
        None
    );
    assert_eq!(runs_package("cargo run -q -p cntryl-midge --example demo"), None);
    let bench = packages()
        .into_iter()
        .find(|(p, ..)| p == "midge-bench")
        .expect("midge-bench");
    assert!(
        bench.1.len() > 1,
        "midge-bench has several binaries: {:?}",
        bench.1
    );
    assert_eq!(bench.2.as_deref(), Some("midge-bench"));
}
