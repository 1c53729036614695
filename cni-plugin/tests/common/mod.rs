//! Helpers for the privileged plugin tests: network namespaces named `kcni-<pid>-<n>` that are deleted on
//! drop (also when a test panics), per-process pod subnets inside 10.244.192.0/18, the cluster
//! `unreachable` route, a runner for the built `keelson` binary, and an ICMP echo over a raw socket.
//!
//! Nothing here touches an interface, namespace or route the tests did not create, except the shared
//! `unreachable 10.244.0.0/16` route, which is added only when absent and removed only by whoever added it.

#![allow(dead_code, reason = "each test binary uses a different subset of these helpers")]

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use serde_json::{Value, json};

#[path = "../../../tests/support/icmp.rs"]
mod icmp;
#[allow(unused_imports, reason = "not every test binary pings")]
pub use icmp::ping;

pub const BINARY: &str = env!("CARGO_BIN_EXE_keelson");

/// Runs `ip` with `args`; returns its output (never panics on a non-zero exit).
pub fn ip(args: &[&str]) -> Output {
    Command::new("ip").args(args).output().expect("run ip (iproute2 must be installed)")
}

/// A network namespace owned by the test; deleted on drop.
pub struct Netns {
    pub name: String,
    pub path: PathBuf,
}

impl Netns {
    pub fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!("kcni-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let output = ip(&["netns", "add", &name]);
        assert!(output.status.success(), "ip netns add {name}: {}", String::from_utf8_lossy(&output.stderr));
        let path = PathBuf::from("/run/netns").join(&name);
        Self { name, path }
    }

    /// `ip -netns <name> args…` stdout.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["-netns", &self.name];
        full.extend_from_slice(args);
        String::from_utf8_lossy(&ip(&full).stdout).into_owned()
    }

    /// Runs `work` on a thread inside this namespace.
    pub fn run<T: Send>(&self, work: impl FnOnce() -> T + Send) -> T {
        let file = std::fs::File::open(&self.path).expect("open test netns");
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("enter test netns");
                    work()
                })
                .join()
                .expect("thread in test netns")
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// Per-process subnets: one /24 for large tests and one /24 cut into /28s, chosen inside 10.244.192.0/18
/// by process id, skipping any pair that already has routes (another run on the same machine).
fn subnet_octets() -> (u8, u8) {
    static OCTETS: OnceLock<(u8, u8)> = OnceLock::new();
    *OCTETS.get_or_init(|| {
        let start = std::process::id() as usize % 31;
        for attempt in 0..31 {
            let third = 192 + 2 * ((start + attempt) % 31) as u8;
            let prefix = format!("10.244.{third}.0/23");
            let routes = ip(&["-o", "route", "show", "root", &prefix]);
            if routes.stdout.is_empty() {
                return (third, third + 1);
            }
        }
        panic!("every candidate test subnet in 10.244.192.0/18 is in use");
    })
}

/// A /24 for this process (e.g. `10.244.200.0/24`).
pub fn large_subnet() -> String {
    format!("10.244.{}.0/24", subnet_octets().0)
}

/// A fresh /28 (13 pod addresses) for this process; at most 16 per process.
pub fn small_subnet() -> String {
    format!("10.244.{}.{}/28", subnet_octets().1, 16 * next_small())
}

/// A fresh /30 (exactly one pod address).
pub fn tiny_subnet() -> String {
    format!("10.244.{}.{}/30", subnet_octets().1, 16 * next_small())
}

fn next_small() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let index = NEXT.fetch_add(1, Ordering::Relaxed);
    assert!(index < 16, "test process asked for more than 16 small subnets");
    index
}

/// Holds the `unreachable 10.244.0.0/16` route while tests run: added if absent when the first holder
/// appears, removed when the last one goes, and only if this process added it.
pub struct ClusterRoute;

static CLUSTER_ROUTE: Mutex<(usize, bool)> = Mutex::new((0, false));
const CLUSTER_CIDR: &str = "10.244.0.0/16";

impl ClusterRoute {
    pub fn hold() -> Self {
        let mut state = CLUSTER_ROUTE.lock().unwrap_or_else(|poison| poison.into_inner());
        if state.0 == 0 {
            let present = !ip(&["-o", "route", "show", "exact", CLUSTER_CIDR]).stdout.is_empty();
            if !present {
                let output = ip(&["route", "add", "unreachable", CLUSTER_CIDR]);
                assert!(output.status.success(), "add unreachable route: {}", String::from_utf8_lossy(&output.stderr));
            }
            state.1 = !present;
        }
        state.0 += 1;
        Self
    }
}

impl Drop for ClusterRoute {
    fn drop(&mut self) {
        let mut state = CLUSTER_ROUTE.lock().unwrap_or_else(|poison| poison.into_inner());
        state.0 -= 1;
        if state.0 == 0 && state.1 {
            let _ = ip(&["route", "del", "unreachable", CLUSTER_CIDR]);
            state.1 = false;
        }
    }
}

/// What one plugin invocation returned.
#[derive(Debug)]
pub struct Outcome {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    /// The result JSON of a successful command.
    pub fn json(&self) -> Value {
        assert!(self.success, "plugin failed: stdout {} stderr {}", self.stdout, self.stderr);
        serde_json::from_str(&self.stdout).unwrap_or_else(|_| panic!("stdout is not JSON: {:?}", self.stdout))
    }

    /// Asserts success with nothing on stdout (DEL, CHECK, STATUS, GC).
    pub fn ok_silent(&self) {
        assert!(self.success, "plugin failed: stdout {} stderr {}", self.stdout, self.stderr);
        assert!(self.stdout.trim().is_empty(), "unexpected output {:?}", self.stdout);
    }

    /// The error object of a failed command; checks its shape.
    pub fn error(&self) -> Value {
        assert!(!self.success, "plugin unexpectedly succeeded: {}", self.stdout);
        let error: Value =
            serde_json::from_str(&self.stdout).unwrap_or_else(|_| panic!("error is not JSON: {:?}", self.stdout));
        for key in ["cniVersion", "code", "msg", "details"] {
            assert!(error.get(key).is_some(), "error JSON lacks {key}: {error}");
        }
        error
    }

    /// The error code of a failed command.
    pub fn code(&self) -> u64 {
        self.error()["code"].as_u64().expect("code is a number")
    }
}

/// Runs the binary with `vars` and `stdin`.
pub fn exec(vars: &[(&str, &str)], stdin: &str) -> Outcome {
    use std::io::Write;
    let mut child = Command::new(BINARY)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(vars.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn keelson");
    child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("write config");
    let output = child.wait_with_output().expect("wait for keelson");
    Outcome {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// One network configuration with its own data directory.
pub struct Network {
    pub conf: Value,
    pub data_dir: tempfile::TempDir,
}

/// One pod: a namespace and its attachment parameters.
pub struct Pod {
    pub netns: Netns,
    pub container_id: String,
    pub ifname: String,
}

impl Pod {
    pub fn new(tag: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let container_id = format!("kcni{}-{tag}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        Self { netns: Netns::new(), container_id, ifname: "eth0".into() }
    }

    pub fn host_veth(&self) -> String {
        cni_plugin::wiring::host_veth_name(&self.container_id, &self.ifname)
    }
}

impl Network {
    pub fn new(version: &str, pod_cidr: &str) -> Self {
        let data_dir = tempfile::tempdir().expect("temp data dir");
        let conf = json!({
            "cniVersion": version,
            "name": "kcni-test",
            "type": "keelson",
            "podCIDR": pod_cidr,
            "dataDir": data_dir.path().join("state"),
        });
        Self { conf, data_dir }
    }

    /// The configuration with extra keys merged in.
    pub fn with(&self, extra: Value) -> Value {
        let mut conf = self.conf.clone();
        for (key, value) in extra.as_object().expect("extra keys form an object") {
            conf[key] = value.clone();
        }
        conf
    }

    pub fn state_dir(&self) -> PathBuf {
        self.data_dir.path().join("state")
    }

    /// ADD/DEL/CHECK for `pod` with configuration `conf`.
    pub fn attach(&self, command: &str, pod: &Pod, conf: &Value) -> Outcome {
        let netns = pod.netns.path.display().to_string();
        exec(
            &[
                ("CNI_COMMAND", command),
                ("CNI_CONTAINERID", &pod.container_id),
                ("CNI_NETNS", &netns),
                ("CNI_IFNAME", &pod.ifname),
                ("CNI_PATH", "/opt/cni/bin"),
                ("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0"),
            ],
            &conf.to_string(),
        )
    }

    pub fn add(&self, pod: &Pod) -> Outcome {
        self.attach("ADD", pod, &self.conf)
    }

    /// DEL with the ADD result as `prevResult`, as runtimes do.
    pub fn del(&self, pod: &Pod, prev_result: Option<&Value>) -> Outcome {
        let conf = match prev_result {
            Some(prev) => self.with(json!({ "prevResult": prev })),
            None => self.conf.clone(),
        };
        self.attach("DEL", pod, &conf)
    }

    pub fn check(&self, pod: &Pod, prev_result: &Value) -> Outcome {
        self.attach("CHECK", pod, &self.with(json!({ "prevResult": prev_result })))
    }

    /// A command without attachment (STATUS, GC, VERSION).
    pub fn command(&self, command: &str, conf: &Value) -> Outcome {
        exec(&[("CNI_COMMAND", command), ("CNI_PATH", "/opt/cni/bin")], &conf.to_string())
    }

    /// Allocated addresses (file names in the data directory that are IPv4 addresses).
    pub fn allocations(&self) -> Vec<Ipv4Addr> {
        allocations(&self.state_dir())
    }
}

pub fn allocations(dir: &Path) -> Vec<Ipv4Addr> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut ips: Vec<Ipv4Addr> = entries.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok()).collect();
    ips.sort();
    ips
}

/// Whether a link of this name exists in the host namespace.
pub fn host_link_exists(name: &str) -> bool {
    ip(&["-o", "link", "show", "dev", name]).status.success()
}

/// Host routes to exactly `ip/32`.
pub fn host_routes_to(address: Ipv4Addr) -> String {
    String::from_utf8_lossy(&ip(&["-o", "route", "show", "exact", &format!("{address}/32")]).stdout).into_owned()
}

/// Asserts that no trace of `pod` is left on the host or in `network`'s state.
pub fn assert_clean(network: &Network, pod: &Pod, address: Option<Ipv4Addr>) {
    assert!(!host_link_exists(&pod.host_veth()), "host veth {} left behind", pod.host_veth());
    let links = pod.netns.ip(&["-o", "link", "show"]);
    assert!(!links.contains(&format!("{}@", pod.ifname)), "pod interface left behind: {links}");
    if let Some(address) = address {
        let routes = host_routes_to(address);
        assert!(routes.is_empty(), "route to {address} left behind: {routes}");
        assert!(!network.allocations().contains(&address), "allocation of {address} left behind");
    }
}

/// The pod address of an ADD result (`ips[0].address` without the prefix).
pub fn result_ip(result: &Value) -> Ipv4Addr {
    let address = result["ips"][0]["address"].as_str().expect("ips[0].address is a string");
    address.split('/').next().expect("address part").parse().expect("address is IPv4")
}
