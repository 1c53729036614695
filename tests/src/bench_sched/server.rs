//! The control plane under test as a separate process on a fixed loopback port and data
//! directory, so that it can be restarted with other flags on the same store (the backlog mode
//! stores every Pod with the scheduler off, then restarts with it on). Stopped by the PID it was
//! started with; `/proc` figures (RSS, CPU time) are read for that PID.

use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http::{Method, StatusCode};

use crate::bench::http::{Conn, Target};

/// Longest wait for a started process to serve.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// The leader-election Lease the control plane's scheduler and controllers run under
/// (`control_plane::app::Config::new`: `kube-system/keelson-control-plane`).
const LEADER_LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/keelson-control-plane";
const LEADER_LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases";

/// How the control plane runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flags {
    pub scheduler: bool,
}

/// A control plane process with its own temporary data directory.
pub struct Server {
    // Field order matters: the process stops before its directory is removed.
    child: Option<Child>,
    binary: PathBuf,
    listen: SocketAddr,
    data_dir: PathBuf,
    log: PathBuf,
    starts: u32,
    pub target: Target,
    dir: tempfile::TempDir,
}

impl Server {
    /// Starts `binary --data-dir … --listen 127.0.0.1:<free port> --controllers= …` and waits
    /// until it answers `/readyz`. History is compacted hourly so that a watch can resume from
    /// any revision of the run.
    pub async fn start(binary: &Path, flags: Flags) -> anyhow::Result<Server> {
        let dir = tempfile::Builder::new().prefix("keelson-bench-sched-").tempdir().context("temporary directory")?;
        let listen = free_port()?;
        let data_dir = dir.path().join("data");
        let log = dir.path().join("control-plane.1.log");
        let mut child = None;
        let target = spawn(binary, &data_dir, listen, flags, &log, &mut child).await?;
        Ok(Server { child, binary: binary.to_path_buf(), listen, log, data_dir, starts: 1, target, dir })
    }

    /// Kills the process and starts it again on the same port and store with `flags`.
    pub async fn restart(&mut self, flags: Flags) -> anyhow::Result<()> {
        self.stop();
        self.starts += 1;
        self.log = self.dir.path().join(format!("control-plane.{}.log", self.starts));
        self.target = spawn(&self.binary, &self.data_dir, self.listen, flags, &self.log, &mut self.child).await?;
        Ok(())
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.data_dir.join("admin.kubeconfig")
    }

    pub fn pid(&self) -> anyhow::Result<u32> {
        self.child.as_ref().map(Child::id).context("control plane is not running")
    }

    /// Fails with the log's tail if the process has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(child) = self.child.as_mut()
            && let Some(status) = child.try_wait().context("wait")?
        {
            bail!("control plane exited ({status}); log tail:\n{}", log_tail(&self.log));
        }
        Ok(())
    }

    pub fn log_tail(&self) -> String {
        log_tail(&self.log)
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Only the child this guard started, by its PID.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn spawn(
    binary: &Path,
    data_dir: &Path,
    listen: SocketAddr,
    flags: Flags,
    log: &Path,
    slot: &mut Option<Child>,
) -> anyhow::Result<Target> {
    let out = fs::File::create(log).with_context(|| format!("create {}", log.display()))?;
    let err = out.try_clone().context("duplicate log file")?;
    let mut command = Command::new(binary);
    command
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--listen")
        .arg(listen.to_string())
        .arg("--controllers=")
        .arg(format!("--scheduler={}", flags.scheduler))
        .args(["--compact-interval", "3600"])
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    let child = command.spawn().with_context(|| format!("start {command:?}"))?;
    let child = slot.insert(child);
    let deadline = Instant::now() + START_TIMEOUT;
    // The binary prints this line once the store is open and the listener bound.
    while !fs::read_to_string(log).unwrap_or_default().contains("control plane serving on https://") {
        if let Some(status) = child.try_wait().context("wait")? {
            bail!("control plane exited early ({status}); log tail:\n{}", log_tail(log));
        }
        if Instant::now() > deadline {
            bail!("control plane did not start within {START_TIMEOUT:?}; log tail:\n{}", log_tail(log));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let target = Target::from_kubeconfig(&data_dir.join("admin.kubeconfig"))?;
    loop {
        let ready = async {
            let mut conn = Conn::connect(&target).await?;
            conn.call(Method::GET, "/readyz", None).await
        };
        match ready.await {
            Ok(reply) if reply.status.is_success() => return Ok(target),
            _ if Instant::now() > deadline => bail!("control plane not ready; log tail:\n{}", log_tail(log)),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

fn log_tail(log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// A loopback port that was free a moment ago.
fn free_port() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("bind a loopback port")?;
    listener.local_addr().context("local address")
}

/// Takes the control plane's leader Lease for `keelson-bench`, so that a control plane started
/// next waits as a candidate (its scheduler off) until [`release_leader_lease`]. It would take
/// the Lease over after seeing it unchanged for its lease duration (15 s by default).
pub async fn hold_leader_lease(target: &Target) -> anyhow::Result<()> {
    let body = r#"{"apiVersion":"coordination.k8s.io/v1","kind":"Lease","metadata":{"name":"keelson-control-plane","namespace":"kube-system"},"spec":{"holderIdentity":"keelson-bench","leaseDurationSeconds":15,"acquireTime":"2025-01-01T00:00:00.000000Z","renewTime":"2025-01-01T00:00:00.000000Z","leaseTransitions":0}}"#;
    let mut conn = Conn::connect(target).await?;
    let reply = conn.call(Method::POST, LEADER_LEASES, Some(Bytes::from_static(body.as_bytes()))).await?;
    if reply.status != StatusCode::CREATED {
        bail!("POST {LEADER_LEASES} → {} {}", reply.status, reply.snippet());
    }
    Ok(())
}

/// Deletes the Lease [`hold_leader_lease`] took: the waiting control plane creates it and leads
/// at its next retry.
pub async fn release_leader_lease(target: &Target) -> anyhow::Result<()> {
    let mut conn = Conn::connect(target).await?;
    let reply = conn.call(Method::DELETE, LEADER_LEASE, None).await?;
    if !reply.status.is_success() {
        bail!("DELETE {LEADER_LEASE} → {} {}", reply.status, reply.snippet());
    }
    Ok(())
}

/// CPU time (user + system) a process has used so far, from `/proc/PID/stat`.
pub fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let path = format!("/proc/{pid}/stat");
    let text = fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = text.rsplit_once(')').map(|(_, r)| r).context("malformed stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after `(comm)`.
    let ticks = |i: usize| -> anyhow::Result<u64> {
        fields.get(i).context("short stat line")?.parse().with_context(|| format!("stat field {i}"))
    };
    let total = ticks(11)? + ticks(12)?;
    Ok(Duration::from_secs_f64(total as f64 / clock_ticks_per_second()))
}

/// CPU time the whole machine spent busy (not idle, not waiting for I/O) and in all, from the
/// first line of `/proc/stat`, in clock ticks.
pub fn machine_ticks() -> anyhow::Result<(u64, u64)> {
    let text = fs::read_to_string("/proc/stat").context("read /proc/stat")?;
    let line = text.lines().next().context("empty /proc/stat")?;
    let ticks: Vec<u64> = line.split_whitespace().skip(1).map(|v| v.parse().unwrap_or(0)).collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let total: u64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
    Ok((total - idle, total))
}

/// Cores busy on the whole machine between two [`machine_ticks`] readings `secs` apart.
pub fn machine_cores(before: (u64, u64), after: (u64, u64), secs: f64) -> f64 {
    let busy = after.0.saturating_sub(before.0) as f64 / clock_ticks_per_second();
    if secs > 0.0 { busy / secs } else { 0.0 }
}

/// `sysconf(_SC_CLK_TCK)`: 100 on every Linux configuration in use (`USER_HZ`).
fn clock_ticks_per_second() -> f64 {
    100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_cpu_time_is_read() {
        let spin = Instant::now();
        let mut x = 0u64;
        while spin.elapsed() < Duration::from_millis(30) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        std::hint::black_box(x);
        let used = cpu_time(std::process::id()).expect("CPU time of this test process");
        assert!(used > Duration::ZERO, "spinning 30 ms shows up in /proc/self/stat");
    }

    #[test]
    fn machine_ticks_grow() {
        let (busy, total) = machine_ticks().expect("/proc/stat");
        assert!(total >= busy && total > 0);
        assert!((machine_cores((0, 0), (250, 500), 2.5) - 1.0).abs() < 1e-9, "250 ticks in 2.5 s is one core");
    }
}
