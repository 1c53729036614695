//! The processes the benchmark starts (control plane, etcd), each in its own temporary
//! directory, stopped by the PID it was started with; and what `/proc` says about them and about
//! the machine.

use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use http::Method;

use super::http::{Conn, Target};

/// Longest wait for a started process to serve.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A child process that is killed (by its own PID) and reaped when dropped.
pub struct Proc {
    child: Child,
    name: &'static str,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &'static str, mut command: Command, log: PathBuf) -> anyhow::Result<Proc> {
        let out = fs::File::create(&log).with_context(|| format!("create {}", log.display()))?;
        let err = out.try_clone().context("duplicate log file")?;
        command.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = command.spawn().with_context(|| format!("start {name} ({command:?})"))?;
        Ok(Proc { child, name, log })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails with the log's tail if the process has exited.
    fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait().context("wait")? {
            bail!("{} exited early ({status}); log tail:\n{}", self.name, self.log_tail());
        }
        Ok(())
    }

    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // Only the child this guard started, by its PID.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A control plane on a loopback port, with its data directory.
pub struct ControlPlane {
    // Field order matters: the process stops before its directory is removed.
    proc: Proc,
    pub data_dir: PathBuf,
    pub target: Target,
    _dir: tempfile::TempDir,
}

impl ControlPlane {
    /// Starts `binary --data-dir … --listen 127.0.0.1:0 [args…]` with `RUST_LOG=log_filter` and
    /// waits until it answers `/readyz`.
    pub async fn start(binary: &Path, args: &[String], log_filter: &str) -> anyhow::Result<ControlPlane> {
        let dir = tempfile::Builder::new().prefix("keelson-bench-").tempdir().context("temporary directory")?;
        let data_dir = dir.path().join("data");
        let log = dir.path().join("control-plane.log");
        let mut command = Command::new(binary);
        command
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["--listen", "127.0.0.1:0"])
            .env("RUST_LOG", log_filter)
            .env("NO_COLOR", "1")
            .args(args);
        let mut proc = Proc::spawn("control-plane", command, log.clone())?;
        let deadline = Instant::now() + START_TIMEOUT;
        // The binary prints this line once the store is open and the listener bound.
        while !fs::read_to_string(&log).unwrap_or_default().contains("control plane serving on https://") {
            proc.check_alive()?;
            if Instant::now() > deadline {
                bail!("control plane did not start within {START_TIMEOUT:?}; log tail:\n{}", proc.log_tail());
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
                Ok(reply) if reply.status.is_success() => break,
                _ if Instant::now() > deadline => bail!("control plane not ready; log tail:\n{}", proc.log_tail()),
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
            proc.check_alive()?;
        }
        Ok(ControlPlane { proc, data_dir, target, _dir: dir })
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Size of `state.db` plus its `-wal` (and `-shm`, reported apart).
    pub fn store_size(&self) -> StoreSize {
        let size = |suffix: &str| fs::metadata(self.data_dir.join(format!("state.db{suffix}"))).map_or(0, |m| m.len());
        StoreSize { db: size(""), wal: size("-wal"), shm: size("-shm") }
    }

    pub fn log_tail(&self) -> String {
        self.proc.log_tail()
    }

    /// Lines of the control plane's log (stdout and stderr) that contain `needle` once colour
    /// codes are removed.
    pub fn log_lines_containing(&self, needle: &str) -> usize {
        let text = fs::read_to_string(&self.proc.log).unwrap_or_default();
        text.lines().filter(|line| strip_ansi(line).contains(needle)).count()
    }
}

/// `line` without ANSI SGR sequences (`ESC [ … m`), which the server's log writer may add.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Bytes on disk of the SQLite store.
#[derive(Debug, Clone, Copy, Default)]
pub struct StoreSize {
    pub db: u64,
    pub wal: u64,
    pub shm: u64,
}

impl StoreSize {
    /// `state.db` + `state.db-wal`, the figure the report uses.
    pub fn total(&self) -> u64 {
        self.db + self.wal
    }
}

/// A one-member etcd on loopback ports with default durability (fsync on every commit).
pub struct Etcd {
    proc: Proc,
    pub endpoint: String,
    _dir: tempfile::TempDir,
}

impl Etcd {
    pub async fn start(binary: &Path) -> anyhow::Result<Etcd> {
        let dir = tempfile::Builder::new().prefix("keelson-bench-etcd-").tempdir().context("temporary directory")?;
        let (client, peer) = (free_port()?, free_port()?);
        let endpoint = format!("http://{client}");
        let peer_url = format!("http://{peer}");
        let mut command = Command::new(binary);
        command
            .args(["--name", "bench", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &endpoint, "--advertise-client-urls", &endpoint])
            .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("bench={peer_url}"), "--initial-cluster-state", "new"])
            .args(["--logger", "zap", "--log-level", "warn"]);
        let mut proc = Proc::spawn("etcd", command, dir.path().join("etcd.log"))?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let probe = async {
                let mut client = etcd_client::Client::connect([endpoint.as_str()], None).await?;
                client.get("/bench/probe", None).await
            };
            match tokio::time::timeout(Duration::from_secs(2), probe).await {
                Ok(Ok(_)) => break,
                _ if Instant::now() > deadline => bail!("etcd not ready; log tail:\n{}", proc.log_tail()),
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
            proc.check_alive()?;
        }
        Ok(Etcd { proc, endpoint, _dir: dir })
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }
}

/// A loopback port that was free a moment ago.
fn free_port() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("bind a loopback port")?;
    listener.local_addr().context("local address")
}

/// A `kB` field of `/proc/PID/status` (`VmRSS`, `VmHWM`), in bytes.
pub fn proc_status_bytes(pid: u32, field: &str) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    let line = text
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .with_context(|| format!("{path} has no {field}"))?;
    let kb: u64 = line.trim().trim_end_matches("kB").trim().parse().with_context(|| format!("{field}: {line:?}"))?;
    Ok(kb * 1024)
}

/// What the report says about the machine.
#[derive(Debug)]
pub struct Machine {
    /// CPUs this process may run on (what `nproc` prints).
    pub cpus: usize,
    pub model: String,
    pub kernel: String,
    pub date: String,
    pub temp_fs: String,
    pub etcd_version: String,
    /// `/proc/loadavg` when the benchmark started: other work on the machine skews everything.
    pub load_at_start: String,
}

impl Machine {
    pub fn probe(etcd: &Path) -> Machine {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpus = std::thread::available_parallelism().map_or(0, usize::from);
        let model = cpuinfo
            .lines()
            .find_map(|line| line.strip_prefix("model name")?.split_once(':').map(|(_, v)| v.trim().to_owned()))
            .unwrap_or_else(|| "unknown".into());
        let kernel =
            fs::read_to_string("/proc/sys/kernel/osrelease").map_or_else(|_| "unknown".into(), |s| s.trim().into());
        let etcd_version = Command::new(etcd)
            .arg("--version")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.lines().next().map(str::to_owned))
            .unwrap_or_else(|| "unknown".into());
        Machine {
            cpus,
            model,
            kernel,
            date: utc_now(),
            temp_fs: filesystem_of(&std::env::temp_dir()),
            etcd_version,
            load_at_start: load_average(),
        }
    }
}

/// The 1, 5 and 15 minute load averages.
pub fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|text| text.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// The filesystem type and device of the mount that holds `path` (longest matching mount point).
fn filesystem_of(path: &Path) -> String {
    let mounts = fs::read_to_string("/proc/mounts").unwrap_or_default();
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (device, point, kind) = (fields.next()?, fields.next()?, fields.next()?);
            path.starts_with(point).then(|| (point.len(), format!("{kind} on {device}")))
        })
        .max_by_key(|(len, _)| *len)
        .map_or_else(|| "unknown".into(), |(_, fs)| fs)
}

/// Now in UTC as `YYYY-MM-DD HH:MM:SS UTC`.
fn utc_now() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_818), (2026, 12, 31));
    }

    #[test]
    fn ansi_codes_are_stripped() {
        let line = "\u{1b}[34mDEBUG\u{1b}[0m sqlite: compacted \u{1b}[3mrevision\u{1b}[0m\u{1b}[2m=\u{1b}[0m42";
        assert_eq!(strip_ansi(line), "DEBUG sqlite: compacted revision=42");
    }

    #[test]
    fn own_rss_is_read() {
        let rss = proc_status_bytes(std::process::id(), "VmRSS").expect("VmRSS of this test process");
        assert!(rss > 0);
    }
}
