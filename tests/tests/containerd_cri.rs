//! containerd 1.6's CRI plugin with the keelson CNI plugin: a pod sandbox created through CRI gets its address
//! from `keelson`, answers ICMP echo from the host, and leaves nothing behind once stopped and removed
//! (privileged: run as root, with `containerd`, `runc`, `containernetworking-plugins` and `busybox-static`
//! installed by `cargo xtask setup`).
//!
//! The test runs a private containerd (its own root, state, socket, runc state, CNI directories and network
//! namespace mounts, all in a temp dir) as a child process, killed by PID on drop; the system's containerd, if
//! any, is not touched. The sandbox's cgroups live under `/keelson-cri-<pid>` (cgroupfs driver, as this VM
//! has hybrid cgroups), removed at the end. containerd 1.6 fixes its shims' socket directory at
//! `/run/containerd/s`; the sockets go with the shims, the empty directory stays. Pods get addresses from
//! 10.244.240.0/24, which no other test uses. It expects the plugin binary at
//! `target/debug/keelson`: `cargo test --workspace` builds it (cni-plugin's integration tests need it), and
//! when this test runs alone, `cargo build -p cni-plugin` must come first.

#[path = "../support/icmp.rs"]
mod icmp;
mod support_images;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    LinuxPodSandboxConfig, LinuxSandboxSecurityContext, NamespaceMode, NamespaceOption, PodSandboxConfig,
    PodSandboxMetadata, PodSandboxStatusRequest, PodSandboxStatusResponse, RemovePodSandboxRequest,
    RunPodSandboxRequest, StatusRequest, StopPodSandboxRequest, VersionRequest,
};
use tonic::transport::{Channel, Endpoint};

/// The plugin binary built by `cargo build -p cni-plugin`.
/// The `keelson` plugin that `cargo test --workspace` built beside this test: the same target
/// directory and profile, wherever `CARGO_TARGET_DIR` puts them.
fn keelson_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    exe.parent().and_then(Path::parent).expect("target/<profile>/deps").join("keelson")
}
/// containernetworking-plugins' loopback plugin, which containerd's CRI runs for every sandbox.
const LOOPBACK: &str = "/usr/lib/cni/loopback";
const POD_CIDR: &str = "10.244.240.0/24";
const PAUSE_IMAGE: &str = "keelson.local/pause:1";
const CRI_NAMESPACE: &str = "k8s.io";

/// A private containerd child process, stopped (by PID) on drop.
struct Containerd {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
}

impl Containerd {
    /// Writes the configuration into `dir` and starts containerd; waits until its CRI service answers.
    fn start(dir: &Path, cni_bin: &Path, cni_conf: &Path) -> Self {
        let socket = dir.join("containerd.sock");
        let config = format!(
            r#"version = 2
root = "{root}"
state = "{state}"

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[debug]
  level = "info"

[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  systemd_cgroup = false
  disable_apparmor = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{cni_conf}"
    max_conf_num = 1

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{runc_root}"
"#,
            root = dir.join("root").display(),
            state = dir.join("state").display(),
            socket = socket.display(),
            opt = dir.join("opt").display(),
            runc_root = dir.join("runc").display(),
            cni_bin = cni_bin.display(),
            cni_conf = cni_conf.display(),
        );
        let config_path = dir.join("containerd.toml");
        std::fs::write(&config_path, config).expect("write containerd config");
        let log = dir.join("containerd.log");
        let log_file = std::fs::File::create(&log).expect("create containerd log");
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("clone log handle"))
            .stderr(log_file)
            .spawn()
            .expect("start containerd (install the Debian containerd package: cargo xtask setup)");
        let mut containerd = Self { child, socket, log };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !containerd.socket.exists() {
            if let Some(status) = containerd.child.try_wait().expect("poll containerd") {
                panic!("containerd exited with {status} before serving:\n{}", containerd.log_tail());
            }
            assert!(Instant::now() < deadline, "containerd socket never appeared:\n{}", containerd.log_tail());
            std::thread::sleep(Duration::from_millis(50));
        }
        containerd
    }

    /// The last lines of containerd's log, for failure messages.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) on the PID of our own child, which has not been reaped yet.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The sandbox's cgroup parent, `/keelson-cri-<pid>` in every cgroup hierarchy; runc removes the sandbox's
/// own cgroup, and drop removes this (empty) parent.
struct CgroupParent {
    name: String,
}

impl CgroupParent {
    fn new() -> Self {
        Self { name: format!("keelson-cri-{}", std::process::id()) }
    }

    fn path(&self) -> String {
        format!("/{}", self.name)
    }
}

impl Drop for CgroupParent {
    fn drop(&mut self) {
        let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else { return };
        for hierarchy in hierarchies.flatten() {
            let _ = std::fs::remove_dir(hierarchy.path().join(&self.name));
        }
    }
}

/// A blocking CRI v1 runtime client over containerd's unix socket.
struct Cri {
    runtime: tokio::runtime::Runtime,
    client: RuntimeServiceClient<Channel>,
}

impl Cri {
    fn connect(socket: &Path) -> Self {
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime for the client");
        let path = socket.to_path_buf();
        let channel = runtime
            .block_on(
                // The URI is required by the builder but unused: every connection goes to the socket.
                Endpoint::from_static("http://[::]:50051").connect_with_connector(tower::service_fn(move |_| {
                    let path = path.clone();
                    async move {
                        Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                            tokio::net::UnixStream::connect(path).await?,
                        ))
                    }
                })),
            )
            .expect("connect to containerd's socket");
        Self { runtime, client: RuntimeServiceClient::new(channel) }
    }

    /// Waits until the runtime reports RuntimeReady and NetworkReady (the CNI configuration is loaded).
    fn wait_ready(&mut self, containerd: &Containerd) {
        let version = self
            .runtime
            .block_on(self.client.version(VersionRequest { version: "v1".into() }))
            .expect("CRI Version")
            .into_inner();
        eprintln!(
            "CRI runtime {} {} (API {})",
            version.runtime_name, version.runtime_version, version.runtime_api_version
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = self
                .runtime
                .block_on(self.client.status(StatusRequest { verbose: false }))
                .expect("CRI Status")
                .into_inner();
            let conditions = status.status.map(|status| status.conditions).unwrap_or_default();
            let ready = ["RuntimeReady", "NetworkReady"]
                .iter()
                .all(|kind| conditions.iter().any(|condition| condition.r#type == *kind && condition.status));
            if ready {
                return;
            }
            assert!(Instant::now() < deadline, "CRI never became ready: {conditions:?}\n{}", containerd.log_tail());
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn run_sandbox(&mut self, config: PodSandboxConfig) -> Result<String, tonic::Status> {
        let request = RunPodSandboxRequest { config: Some(config), runtime_handler: String::new() };
        Ok(self.runtime.block_on(self.client.run_pod_sandbox(request))?.into_inner().pod_sandbox_id)
    }

    fn sandbox_status(&mut self, id: &str) -> PodSandboxStatusResponse {
        let request = PodSandboxStatusRequest { pod_sandbox_id: id.into(), verbose: true };
        self.runtime.block_on(self.client.pod_sandbox_status(request)).expect("PodSandboxStatus").into_inner()
    }

    fn stop_sandbox(&mut self, id: &str) -> Result<(), tonic::Status> {
        let request = StopPodSandboxRequest { pod_sandbox_id: id.into() };
        self.runtime.block_on(self.client.stop_pod_sandbox(request)).map(drop)
    }

    fn remove_sandbox(&mut self, id: &str) -> Result<(), tonic::Status> {
        let request = RemovePodSandboxRequest { pod_sandbox_id: id.into() };
        self.runtime.block_on(self.client.remove_pod_sandbox(request)).map(drop)
    }
}

/// Whether a link of this name exists in the host namespace.
fn host_link_exists(name: &str) -> bool {
    Command::new("ip").args(["-o", "link", "show", "dev", name]).output().expect("run ip").status.success()
}

fn in_pod_cidr(address: Ipv4Addr) -> bool {
    let (network, prefix) = POD_CIDR.split_once('/').expect("CIDR");
    let network: Ipv4Addr = network.parse().expect("network address");
    let mask = u32::MAX << (32 - prefix.parse::<u32>().expect("prefix length"));
    u32::from(address) & mask == u32::from(network)
}

#[test]
fn cri_sandbox_gets_its_address_from_keelson_and_is_reachable() {
    let keelson = keelson_binary();
    assert!(
        keelson.exists(),
        "{} is missing: run `cargo build -p cni-plugin` first (cargo test --workspace builds it)",
        keelson.display()
    );
    assert!(
        Path::new(LOOPBACK).exists(),
        "{LOOPBACK} is missing: install containernetworking-plugins (cargo xtask setup)"
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let cni_bin = dir.path().join("cni-bin");
    let cni_conf = dir.path().join("cni-conf");
    let data_dir = dir.path().join("keelson-ipam");
    std::fs::create_dir_all(&cni_bin).expect("create CNI bin dir");
    std::fs::create_dir_all(&cni_conf).expect("create CNI conf dir");
    std::os::unix::fs::symlink(&keelson, cni_bin.join("keelson")).expect("link keelson into the CNI bin dir");
    std::os::unix::fs::symlink(LOOPBACK, cni_bin.join("loopback")).expect("link loopback into the CNI bin dir");
    let conflist = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "keelson",
        "plugins": [{ "type": "keelson", "podCIDR": POD_CIDR, "dataDir": data_dir }],
    });
    std::fs::write(cni_conf.join("10-keelson.conflist"), conflist.to_string()).expect("write CNI conflist");

    let containerd = Containerd::start(dir.path(), &cni_bin, &cni_conf);
    let archive = dir.path().join("pause.tar");
    let image = support_images::busybox_image_tar(PAUSE_IMAGE, &["/bin/busybox", "sleep", "2147483647"]);
    std::fs::write(&archive, image).expect("write pause image tar");
    support_images::ctr_import(&containerd.socket, CRI_NAMESPACE, &archive);

    let mut cri = Cri::connect(&containerd.socket);
    cri.wait_ready(&containerd);

    let cgroup_parent = CgroupParent::new();
    let uid = format!("keelson-cri-{}", std::process::id());
    let config = PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: "web-0".into(),
            uid: uid.clone(),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: "web-0".into(),
        log_directory: dir.path().join("pod-logs").display().to_string(),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: cgroup_parent.path(),
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    network: NamespaceMode::Pod as i32,
                    pid: NamespaceMode::Container as i32,
                    ipc: NamespaceMode::Pod as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let id = match cri.run_sandbox(config) {
        Ok(id) => id,
        Err(status) => panic!("RunPodSandbox: {status}\ncontainerd log:\n{}", containerd.log_tail()),
    };
    eprintln!("sandbox {id}");
    let host_veth = cni_plugin::wiring::host_veth_name(&id, "eth0");

    // Checks while the sandbox runs; the sandbox is stopped and removed whatever they find.
    let checks = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let status = cri.sandbox_status(&id);
        let sandbox = status.status.as_ref().expect("sandbox status");
        let metadata = sandbox.metadata.as_ref().expect("sandbox metadata");
        assert_eq!((metadata.name.as_str(), metadata.uid.as_str()), ("web-0", uid.as_str()));
        let network = sandbox.network.as_ref().expect("sandbox network status");
        let address: Ipv4Addr =
            network.ip.parse().unwrap_or_else(|_| panic!("sandbox IP {:?} is not IPv4", network.ip));
        eprintln!("sandbox IP {address}");
        assert!(in_pod_cidr(address), "sandbox IP {address} is outside the keelson podCIDR {POD_CIDR}");
        assert!(data_dir.join(address.to_string()).exists(), "keelson recorded no allocation for {address}");
        assert!(host_link_exists(&host_veth), "host veth {host_veth} of the sandbox is missing");
        let netns = status
            .info
            .get("info")
            .and_then(|info| serde_json::from_str::<serde_json::Value>(info).ok())
            .and_then(|info| info["runtimeSpec"]["linux"]["namespaces"].as_array().cloned())
            .and_then(|namespaces| {
                namespaces
                    .iter()
                    .find(|ns| ns["type"] == "network")
                    .and_then(|ns| ns["path"].as_str().map(PathBuf::from))
            });
        let deadline = Instant::now() + Duration::from_secs(10);
        while !icmp::ping(address, Duration::from_millis(500)) {
            assert!(Instant::now() < deadline, "sandbox {address} never answered ICMP echo from the host");
        }
        (address, netns)
    }));

    let stopped = cri.stop_sandbox(&id);
    let removed = cri.remove_sandbox(&id);
    let (address, netns) = match checks {
        Ok(found) => found,
        Err(panic) => std::panic::resume_unwind(panic),
    };
    stopped.unwrap_or_else(|status| panic!("StopPodSandbox: {status}\n{}", containerd.log_tail()));
    removed.unwrap_or_else(|status| panic!("RemovePodSandbox: {status}\n{}", containerd.log_tail()));

    assert!(!data_dir.join(address.to_string()).exists(), "allocation of {address} left behind");
    assert!(!host_link_exists(&host_veth), "host veth {host_veth} left behind");
    let routes = Command::new("ip").args(["-o", "route", "show", "exact", &format!("{address}/32")]).output();
    let routes = String::from_utf8_lossy(&routes.expect("run ip").stdout).into_owned();
    assert!(routes.is_empty(), "route to {address} left behind: {routes}");
    match netns {
        Some(path) => assert!(!path.exists(), "sandbox network namespace {} left behind", path.display()),
        None => eprintln!("sandbox status carried no network namespace path; skipped that check"),
    }
    drop(containerd);
    drop(cgroup_parent);
}
