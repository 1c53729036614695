//! `cargo xtask up` / `down`: a single-node control plane on the embedded store, running in the
//! background.
//!
//! `up` starts `target/debug/control-plane` in its own process group, records its PID in
//! `DATA_DIR/control-plane.pid` and logs to `DATA_DIR/control-plane.log`. `down` signals only the
//! PID in that file, and only if that process still is a control-plane.

use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::{cmd, setup};

const BINARY: &str = "control-plane";
const PID_FILE: &str = "control-plane.pid";
const LOG_FILE: &str = "control-plane.log";
const KUBECONFIG: &str = "admin.kubeconfig";

const READY_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(250);

/// Builds and starts the control plane unless the one in the PID file is still running.
pub fn up(root: &Path, data_dir: &Path, listen: SocketAddr) -> anyhow::Result<()> {
    let data_dir = std::path::absolute(data_dir).with_context(|| format!("resolve {}", data_dir.display()))?;
    let pid_file = data_dir.join(PID_FILE);
    if let Some(pid) = running_pid(&pid_file)? {
        println!("control-plane is already running (PID {pid}, data dir {})", data_dir.display());
        print_usage(&data_dir);
        return Ok(());
    }

    println!("{}", setup::run().context("setup failed")?);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    cmd::run(Command::new(cargo).args(["build", "-p", BINARY]).current_dir(root))?;

    fs::create_dir_all(&data_dir).with_context(|| format!("create {}", data_dir.display()))?;
    let log_path = data_dir.join(LOG_FILE);
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("open {}", log_path.display()))?;
    let log_start = log.metadata().map(|meta| meta.len()).unwrap_or(0);
    let binary = target_dir(root).join("debug").join(BINARY);
    let mut child = Command::new(&binary)
        .arg("--data-dir")
        .arg(&data_dir)
        .arg("--listen")
        .arg(listen.to_string())
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("duplicate log file handle")?)
        .stderr(log)
        // Its own process group: a Ctrl-C in this terminal does not reach it, and it outlives xtask.
        .process_group(0)
        .spawn()
        .with_context(|| format!("start {}", binary.display()))?;
    let pid = child.id();
    fs::write(&pid_file, format!("{pid}\n")).with_context(|| format!("write {}", pid_file.display()))?;
    println!("started control-plane (PID {pid}), log {}", log_path.display());

    let url = format!("https://{}/readyz", probe_address(listen));
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().context("check on control-plane")? {
            let _ = fs::remove_file(&pid_file);
            bail!("control-plane exited ({status}) before it was ready; its log:\n{}", log_since(&log_path, log_start));
        }
        if http_status(&url).as_deref() == Some("200") {
            break;
        }
        if Instant::now() >= deadline {
            bail!(
                "{url} did not answer 200 within {}s; the control-plane (PID {pid}) is still running, \
                 see {} and stop it with `cargo xtask down --data-dir {}`",
                READY_TIMEOUT.as_secs(),
                log_path.display(),
                data_dir.display()
            );
        }
        sleep(POLL);
    }
    println!("control-plane is ready at https://{listen}");
    print_usage(&data_dir);
    Ok(())
}

/// Stops the control plane recorded in the PID file: SIGTERM, then SIGKILL after 10 s.
pub fn down(data_dir: &Path) -> anyhow::Result<()> {
    let pid_file = data_dir.join(PID_FILE);
    let Some(pid) = running_pid(&pid_file)? else {
        if remove_if_present(&pid_file)? {
            println!("control-plane was not running; removed stale {}", pid_file.display());
        } else {
            println!("control-plane is not running (no {})", pid_file.display());
        }
        return Ok(());
    };
    signal(pid, "TERM")?;
    if !wait_for_exit(pid, STOP_TIMEOUT) {
        println!("control-plane (PID {pid}) still running after {}s; sending SIGKILL", STOP_TIMEOUT.as_secs());
        signal(pid, "KILL")?;
        if !wait_for_exit(pid, STOP_TIMEOUT) {
            bail!("control-plane (PID {pid}) survived SIGKILL");
        }
    }
    remove_if_present(&pid_file)?;
    println!("control-plane (PID {pid}) stopped");
    Ok(())
}

fn print_usage(data_dir: &Path) {
    println!();
    println!("    export KUBECONFIG={}", data_dir.join(KUBECONFIG).display());
    println!("    kubectl get namespaces");
}

/// The PID from `pid_file` if that process is alive and is a control-plane (a PID can be reused).
fn running_pid(pid_file: &Path) -> anyhow::Result<Option<u32>> {
    let text = match fs::read_to_string(pid_file) {
        Ok(text) => text,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error).with_context(|| format!("read {}", pid_file.display())),
    };
    let Ok(pid) = text.trim().parse::<u32>() else {
        eprintln!("xtask: warning: {} does not hold a PID; treating it as stale", pid_file.display());
        return Ok(None);
    };
    Ok((is_alive(pid) && is_control_plane(pid)).then_some(pid))
}

/// Whether `pid` exists and is not a zombie.
fn is_alive(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // Format: `pid (comm) state ...`; comm may contain spaces and parentheses.
    let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next());
    !matches!(state, None | Some("Z" | "X"))
}

fn is_control_plane(pid: u32) -> bool {
    let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let argv0 = cmdline.split(|&b| b == 0).next().unwrap_or_default();
    Path::new(&*String::from_utf8_lossy(argv0)).file_name().is_some_and(|name| name == BINARY)
}

fn signal(pid: u32, name: &str) -> anyhow::Result<()> {
    // Exactly one PID; never a process group.
    cmd::run(Command::new("kill").arg(format!("-{name}")).arg(pid.to_string()))
}

/// Waits until `pid` is gone; false on timeout.
fn wait_for_exit(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while is_alive(pid) {
        if Instant::now() >= deadline {
            return false;
        }
        sleep(POLL);
    }
    true
}

fn remove_if_present(path: &Path) -> anyhow::Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(error) => Err(error).with_context(|| format!("remove {}", path.display())),
    }
}

fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), |dir| root.join(dir))
}

/// Where to reach a server listening on `listen`: loopback instead of an unspecified address.
fn probe_address(listen: SocketAddr) -> SocketAddr {
    match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::new(Ipv4Addr::LOCALHOST.into(), listen.port()),
        IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::new(Ipv6Addr::LOCALHOST.into(), listen.port()),
        _ => listen,
    }
}

/// The HTTP status code curl gets for `url` (any certificate accepted), if it got an answer.
fn http_status(url: &str) -> Option<String> {
    let out = cmd::probe(Command::new("curl").args([
        "-sk",
        "--max-time",
        "2",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        url,
    ]))?;
    Some(out.trim().to_owned())
}

/// What was appended to the log since byte `start` (at most its last 4 KiB).
fn log_since(path: &Path, start: u64) -> String {
    let read = || -> io::Result<String> {
        let mut file = fs::File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(start.max(len.saturating_sub(4096))))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    read().unwrap_or_else(|error| format!("(cannot read {}: {error})", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_listen_address_is_probed_on_loopback() {
        let any: SocketAddr = "0.0.0.0:6443".parse().expect("valid address");
        assert_eq!(probe_address(any), "127.0.0.1:6443".parse().expect("valid address"));
        let any6: SocketAddr = "[::]:7000".parse().expect("valid address");
        assert_eq!(probe_address(any6), "[::1]:7000".parse().expect("valid address"));
        let fixed: SocketAddr = "10.0.0.1:6443".parse().expect("valid address");
        assert_eq!(probe_address(fixed), fixed);
    }

    #[test]
    fn own_process_is_alive_but_not_a_control_plane() {
        assert!(is_alive(std::process::id()));
        assert!(!is_control_plane(std::process::id()));
    }

    #[test]
    fn stale_pid_file_is_not_running() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let pid_file = dir.path().join(PID_FILE);
        assert_eq!(running_pid(&pid_file).expect("missing pid file is fine"), None);
        // Our own PID is alive but not a control-plane, so it must not count (or be signalled).
        fs::write(&pid_file, format!("{}\n", std::process::id())).expect("write pid file");
        assert_eq!(running_pid(&pid_file).expect("pid file parses"), None);
        fs::write(&pid_file, "garbage").expect("write pid file");
        assert_eq!(running_pid(&pid_file).expect("garbage is stale, not an error"), None);
    }
}
