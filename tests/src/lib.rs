//! midge-conformance: tests that run Midge on both targets.
//!
//! [`guest_command`] builds the `midge-cmd` command (crate `midge-guest`) natively and as a wasm32-wasip2
//! component, in a dedicated target directory (a nested cargo must never share the outer build's lock), and
//! [`wasmtime`] finds the pinned `wasmtime` CLI that `scripts/test.sh` installs. Both fail loudly rather than
//! skip: a test that needs them must not pass vacuously.
#![allow(clippy::disallowed_methods)]

pub mod moto;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Paths of the `midge-cmd` command built natively and as a component.
#[derive(Debug, Clone)]
pub struct GuestCommand {
    /// The native executable.
    pub native: PathBuf,
    /// The wasm32-wasip2 component.
    pub component: PathBuf,
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the workspace")
        .to_path_buf()
}

fn build(target_dir: &Path, target: Option<&str>) -> PathBuf {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(workspace_root())
        .args([
            "build",
            "-q",
            "-p",
            "midge-guest",
            "--bin",
            "midge-cmd",
            "--target-dir",
        ])
        .arg(target_dir);
    if let Some(t) = target {
        cmd.args(["--target", t]);
    }
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "RUSTC_WRAPPER",
        "CARGO_TARGET_DIR",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().expect("run cargo to build the guest");
    assert!(
        status.success(),
        "building midge-cmd for {target:?} failed (is the wasm32-wasip2 target installed? run scripts/test.sh)"
    );
    let dir = match target {
        Some(t) => target_dir.join(t).join("debug"),
        None => target_dir.join("debug"),
    };
    dir.join(if target.is_some() {
        "midge-cmd.wasm"
    } else {
        "midge-cmd"
    })
}

/// Builds (once per process) the `plugin` component (`midge_guest.wasm`) and returns its path.
pub fn plugin_component() -> &'static PathBuf {
    static CELL: OnceLock<PathBuf> = OnceLock::new();
    CELL.get_or_init(|| {
        let base = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace_root().join("target"));
        let dir = base.join("guest-nested");
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.current_dir(workspace_root())
            .args([
                "build",
                "-q",
                "-p",
                "midge-guest",
                "--lib",
                "--target",
                "wasm32-wasip2",
                "--target-dir",
            ])
            .arg(&dir);
        for var in [
            "RUSTFLAGS",
            "CARGO_ENCODED_RUSTFLAGS",
            "CARGO_BUILD_TARGET",
            "RUSTC_WRAPPER",
            "CARGO_TARGET_DIR",
        ] {
            cmd.env_remove(var);
        }
        assert!(
            cmd.status().expect("run cargo").success(),
            "building the plugin component failed"
        );
        dir.join("wasm32-wasip2/debug/midge_guest.wasm")
    })
}

/// Builds (once per process) the guest command natively and as a component.
pub fn guest_command() -> &'static GuestCommand {
    static CELL: OnceLock<GuestCommand> = OnceLock::new();
    CELL.get_or_init(|| {
        let base = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace_root().join("target"));
        let dir = base.join("guest-nested");
        GuestCommand {
            native: build(&dir, None),
            component: build(&dir, Some("wasm32-wasip2")),
        }
    })
}

/// The `wasmtime` CLI: `$MIDGE_WASMTIME`, then `~/.cache/midge/tools/bin/wasmtime`, then `PATH`.
pub fn wasmtime() -> PathBuf {
    let candidates = [
        std::env::var_os("MIDGE_WASMTIME").map(PathBuf::from),
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/midge/tools/bin/wasmtime")),
        Some(PathBuf::from("wasmtime")),
    ];
    for c in candidates.into_iter().flatten() {
        if Command::new(&c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return c;
        }
    }
    panic!(
        "the wasmtime CLI is required (scripts/test.sh installs wasmtime 48.0.8 into ~/.cache/midge/tools)"
    );
}

/// A `wasmtime run` command for the component with `db` granted as `/db`.
pub fn wasmtime_run(db: &Path) -> Command {
    let mut c = Command::new(wasmtime());
    c.arg("run")
        .arg("--dir")
        .arg(format!("{}::/db", db.display()))
        .arg(&guest_command().component);
    c
}

/// The native command with `db` as its database.
pub fn native_run(db: &Path) -> Command {
    let mut c = Command::new(&guest_command().native);
    c.env("MIDGE_DB", db);
    c
}
