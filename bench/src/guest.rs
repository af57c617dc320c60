//! Where the benchmarks get the plugin component: `$MIDGE_GUEST_WASM`, or a release build of `midge-guest` for
//! wasm32-wasip2 (the target added with rustup when missing). Shared by `midge-bench` and `midge-cloud-bench`.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// `$MIDGE_GUEST_WASM`, or a build of `midge-guest` in `<target>/bench-guest` with the workspace's
/// `release-wasm` profile (release plus fat LTO) and LLVM's select optimisation (see below).
pub fn guest_wasm() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("MIDGE_GUEST_WASM") {
        return Ok(PathBuf::from(p));
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("workspace root")?
        .to_path_buf();
    // The target dir this binary was built into (…/target/release/midge-bench).
    let target = std::env::current_exe()?
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| workspace.join("target"));
    let dir = target.join("bench-guest");
    let wasm = dir.join("wasm32-wasip2/release-wasm/midge_guest.wasm");
    // Add the target when missing (a fresh machine), then build; cargo makes a warm build a no-op.
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("wasm32-wasip2"))
        .unwrap_or(true);
    if !installed {
        let ok = Command::new("rustup")
            .args(["target", "add", "wasm32-wasip2"])
            .status()?
            .success();
        anyhow::ensure!(ok, "rustup target add wasm32-wasip2 failed");
    }
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(&workspace)
        .args([
            "build",
            "-q",
            "--profile",
            "release-wasm",
            // LLVM's wasm backend turns the engine's binary searches (cache-miss bound on cold blocks) into
            // `select`s, which Cranelift lowers to `cmov`: each probe's load then waits for the previous
            // compare. The generic SelectOptimize pass (off by default) turns such loop-carried selects back
            // into branches, as x86's own cmov converter does natively: ~10% off component point-read hits.
            "--config",
            r#"target.wasm32-wasip2.rustflags=["-C", "llvm-args=-disable-select-optimize=false"]"#,
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
    let ok = cmd.status().context("running cargo for the guest")?.success();
    anyhow::ensure!(ok, "building the plugin component (midge-guest) failed");
    Ok(wasm)
}
