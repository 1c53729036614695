//! `cargo xtask bench api|scheduler|cni|datapath`: builds the load generator and the control plane
//! in release mode and runs the API benchmark (control plane beside a real etcd) or the scheduler
//! benchmark (hollow nodes) on this machine; or builds the CNI plugin and its driver and runs the
//! CNI latency benchmark beside the reference plugins; or builds and runs the datapath benchmark
//! (kube-proxy's iptables and nftables datapaths on network namespaces).

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
    build_release(root, &["-p", "keelson-tests", "--bin", "bench-api", "--bin", "control-plane-under-test"])?;
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

/// Builds `bench-scheduler` and `control-plane-under-test` in release mode, then runs the
/// scheduler benchmark (hollow nodes, scheduling throughput, RSS). Needs nothing installed
/// beyond the toolchain. The report goes to stdout; progress to stderr.
pub fn scheduler(root: &Path, quick: bool, runs: Option<u16>) -> anyhow::Result<()> {
    build_release(root, &["-p", "keelson-tests", "--bin", "bench-scheduler", "--bin", "control-plane-under-test"])?;
    let release = target_dir(root).join("release");
    let mut bench = Command::new(release.join("bench-scheduler"));
    bench.arg("--control-plane").arg(release.join("control-plane-under-test"));
    if quick {
        bench.arg("--quick");
    }
    if let Some(runs) = runs {
        bench.args(["--runs", &runs.to_string()]);
    }
    cmd::run(bench.current_dir(root))
}

/// Where Debian's `containernetworking-plugins` installs the reference plugins.
const CNI_REFERENCE_DIR: &str = "/usr/lib/cni";

/// Builds the `keelson` plugin and `bench-cni` in release mode, then runs the CNI benchmark:
/// sequential ADD/DEL latency beside the reference `bridge` + `host-local` plugins. Needs root
/// (it creates network namespaces) and Debian's `containernetworking-plugins`. The report goes to
/// stdout; progress to stderr.
pub fn cni(root: &Path, quick: bool) -> anyhow::Result<()> {
    let reference = Path::new(CNI_REFERENCE_DIR);
    for plugin in ["bridge", "host-local"] {
        if !reference.join(plugin).is_file() {
            bail!(
                "{}/{plugin} is missing (Debian package containernetworking-plugins; `cargo xtask setup` installs it)",
                reference.display()
            );
        }
    }
    build_release(root, &["-p", "cni-plugin", "--bin", "keelson", "-p", "keelson-tests", "--bin", "bench-cni"])?;
    let release = target_dir(root).join("release");
    let mut bench = Command::new(release.join("bench-cni"));
    bench.arg("--keelson").arg(release.join("keelson")).arg("--reference-dir").arg(reference);
    if quick {
        bench.arg("--quick");
    }
    cmd::run(bench.current_dir(root))
}

/// Builds `bench-datapath` in release mode, then runs the datapath benchmark: kube-proxy's
/// iptables-nft and nftables rule shapes beside a no-NAT floor on a client → node → backend
/// network-namespace topology, at 1, 1 000 and 10 000 Services (1 and 1 000 with `quick`). Needs
/// root (it creates network namespaces) and Debian's `iproute2`, `iptables` and `nftables`. The
/// report goes to stdout; progress to stderr.
pub fn datapath(root: &Path, quick: bool) -> anyhow::Result<()> {
    for (tool, package) in [("ip", "iproute2"), ("iptables-restore", "iptables"), ("nft", "nftables")] {
        if !cmd::on_path(tool) {
            bail!("{tool} is missing (Debian package {package}; `cargo xtask setup` installs it)");
        }
    }
    build_release(root, &["-p", "keelson-tests", "--bin", "bench-datapath"])?;
    let mut bench = Command::new(target_dir(root).join("release").join("bench-datapath"));
    if quick {
        bench.arg("--quick");
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

/// `cargo build --release` of the given packages and binaries (`-p …`, `--bin …`) in the workspace.
fn build_release(root: &Path, what: &[&str]) -> anyhow::Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    cmd::run(Command::new(&cargo).args(["build", "--release"]).args(what).current_dir(root))
}
