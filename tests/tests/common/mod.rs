//! Test harness: a control plane in this process on a free loopback port, and the real kubectl.

#![allow(dead_code, reason = "each test binary uses a different part of the harness")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use control_plane::app::{Config, Running, start};

/// A control plane on its own runtime thread, stopped on drop.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
    pub addr: std::net::SocketAddr,
    pub api: Arc<control_plane::server::Api>,
    rt: Option<tokio::runtime::Runtime>,
    running: Option<Running>,
}

impl Cluster {
    /// A control plane with every controller and the scheduler, as `control-plane` runs by default.
    pub fn start() -> Cluster {
        Self::start_with(|_| {})
    }

    /// The API server alone: no controllers, no scheduler, so nothing writes but the test.
    pub fn start_standalone() -> Cluster {
        Self::start_with(|cfg| {
            cfg.controllers = String::new();
            cfg.scheduler = false;
        })
    }

    /// A control plane with a configuration adjusted by `tune`.
    pub fn start_with(tune: impl FnOnce(&mut Config)) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        let mut cfg = Config::new(dir.path().to_path_buf(), "127.0.0.1:0".parse().expect("addr"));
        cfg.leader.retry_period = std::time::Duration::from_millis(200);
        tune(&mut cfg);
        let running = rt.block_on(start(cfg)).expect("control plane starts");
        Cluster {
            kubeconfig: running.kubeconfig.clone(),
            addr: running.addr,
            api: running.api.clone(),
            dir,
            rt: Some(rt),
            running: Some(running),
        }
    }

    pub fn runtime(&self) -> &tokio::runtime::Runtime {
        self.rt.as_ref().expect("runtime")
    }

    /// The admin bearer token (from the kubeconfig).
    pub fn token(&self) -> String {
        self.api.admin_token.clone()
    }

    /// Runs kubectl with this cluster's kubeconfig.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_in(args, None, &[])
    }

    /// Runs kubectl with `stdin` as its standard input and extra environment variables.
    pub fn kubectl_in(&self, args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(kubectl_path());
        cmd.args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", self.dir.path())
            .env_remove("KUBERNETES_SERVICE_HOST");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("kubectl runs (is it installed? cargo xtask setup)");
        if let Some(input) = stdin {
            use std::io::Write as _;
            child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write stdin");
        }
        child.wait_with_output().expect("kubectl finishes")
    }

    /// Runs kubectl and returns stdout, failing the test with stderr when it fails.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {} failed: {}\nstdout: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    }

    /// Runs kubectl with a manifest on stdin (`-f -`).
    pub fn ok_stdin(&self, args: &[&str], stdin: &str) -> String {
        let out = self.kubectl_in(args, Some(stdin), &[]);
        assert!(out.status.success(), "kubectl {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).expect("utf-8 output")
    }

    /// Runs kubectl expecting failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            !out.status.success(),
            "kubectl {} should fail; stdout: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// `kubectl get … -o json` parsed.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&a)).expect("kubectl prints JSON")
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.path(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&p, contents).expect("write file");
        p
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let (Some(rt), Some(running)) = (self.rt.take(), self.running.take()) {
            rt.block_on(running.shutdown());
            rt.shutdown_timeout(std::time::Duration::from_secs(2));
        }
    }
}

/// The kubectl the tests use: `KEELSON_KUBECTL`, else the one `cargo xtask setup` installs.
pub fn kubectl_path() -> PathBuf {
    std::env::var_os("KEELSON_KUBECTL")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new("/usr/local/bin/kubectl").to_path_buf())
}

pub fn helm_path() -> PathBuf {
    std::env::var_os("KEELSON_HELM")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new("/usr/local/bin/helm").to_path_buf())
}

/// Path of a file under the repository's `tests/` folder.
pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// A single-member etcd on free loopback ports in its own temp dir, killed (by PID) on drop.
pub struct Etcd {
    pub endpoint: String,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

impl Etcd {
    pub fn start() -> Etcd {
        let dir = tempfile::tempdir().expect("temp dir");
        let (client, peer) = (free_port(), free_port());
        let endpoint = format!("http://127.0.0.1:{client}");
        let child = Command::new("etcd")
            .args([
                "--data-dir",
                dir.path().join("etcd").to_str().expect("utf-8"),
                "--listen-client-urls",
                &endpoint,
                "--advertise-client-urls",
                &endpoint,
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{peer}"),
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{peer}"),
                "--initial-cluster",
                &format!("default=http://127.0.0.1:{peer}"),
                "--heartbeat-interval",
                "100",
                "--election-timeout",
                "500",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd runs (cargo xtask setup installs etcd-server)");
        let etcd = Etcd { endpoint, child, _dir: dir };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", client)).is_err() {
            assert!(std::time::Instant::now() < deadline, "etcd did not start");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        etcd
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `f` until it returns `Some`, failing the test with `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: std::time::Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
