//! `cargo xtask bench api`: builds the load generator and the control plane in release mode and
//! runs the API benchmark (control plane beside a real etcd) on this machine.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use crate::{cmd, setup};

/// Where Debian's `etcd-server` installs etcd.
const ETCD_DEFAULT: &str = "/usr/bin/etcd";

/// Runs setup, builds `bench-api` and `control-plane-under-test`, then runs the benchmark. The
/// report goes to stdout; progress to stderr.
pub fn api(root: &Path, quick: bool, runs: Option<u16>) -> anyhow::Result<()> {
    println!("{}", setup::run().context("setup failed")?);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    cmd::run(
        Command::new(&cargo)
            .args([
                "build",
                "--release",
                "-p",
                "keelson-tests",
                "--bin",
                "bench-api",
                "--bin",
                "control-plane-under-test",
            ])
            .current_dir(root),
    )?;
    let release = target_dir(root).join("release");
    let etcd = find_etcd()?;
    let mut bench = Command::new(release.join("bench-api"));
    bench.arg("--control-plane").arg(release.join("control-plane-under-test")).arg("--etcd").arg(&etcd);
    if quick {
        bench.arg("--quick");
    }
    if let Some(runs) = runs {
        bench.args(["--runs", &runs.to_string()]);
    }
    cmd::run(bench.current_dir(root))
}

/// Cargo's target directory: `CARGO_TARGET_DIR` if set, else `target/` under the workspace.
fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root.join(dir),
        None => root.join("target"),
    }
}

/// etcd from `PATH`, else where Debian installs it.
fn find_etcd() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("PATH")
        .and_then(|path| std::env::split_paths(&path).map(|dir| dir.join("etcd")).find(|p| p.is_file()))
    {
        return Ok(path);
    }
    let fallback = PathBuf::from(ETCD_DEFAULT);
    if !fallback.is_file() {
        bail!("etcd is not installed (Debian package etcd-server; `cargo xtask setup` installs it)");
    }
    Ok(fallback)
}
