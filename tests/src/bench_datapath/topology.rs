//! The network-namespace topology: `kbdp-<pid>-client` → `kbdp-<pid>-node` (the rules, IPv4
//! forwarding) → `kbdp-<pid>-backend` (three backend addresses). Every link is created inside the
//! namespaces (`ip -n … link add … peer … netns …`), so nothing appears on the host's interfaces,
//! and deleting the namespaces (the drop guard, also on failure) removes everything.
//!
//! Addresses: the client is a pod `10.244.1.2/24` whose default route is the node (`10.244.1.1`);
//! the node reaches the backend pods `10.244.9.10-12` on `10.244.9.0/24`. Service VIPs
//! (`10.96.0.0/12`) reach the node through the client's default route; the node and the backend
//! namespace hold `unreachable 10.96.0.0/12`, so an unprogrammed VIP fails fast instead of
//! following a default route.

use std::fs::File;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail, ensure};

use super::sys;

/// Prefix of every namespace this program creates; the pid follows.
pub const PREFIX: &str = "kbdp-";
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 2);
pub const NODE_CLIENT_SIDE: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 1);
pub const NODE_BACKEND_SIDE: Ipv4Addr = Ipv4Addr::new(10, 244, 9, 1);
pub const BACKENDS: [Ipv4Addr; 3] =
    [Ipv4Addr::new(10, 244, 9, 10), Ipv4Addr::new(10, 244, 9, 11), Ipv4Addr::new(10, 244, 9, 12)];
/// The Service network, unreachable except through the rules.
pub const SERVICE_CIDR: &str = "10.96.0.0/12";

/// One named network namespace, open so threads can `setns` into it.
pub struct Netns {
    pub name: String,
    file: File,
}

impl Netns {
    /// Runs `work` on a new thread that has entered this namespace (setns affects only the
    /// calling thread; processes that thread spawns start in the namespace too).
    pub fn run<T: Send>(&self, work: impl FnOnce() -> anyhow::Result<T> + Send) -> anyhow::Result<T> {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    sys::enter_netns(&self.file).with_context(|| format!("setns into {}", self.name))?;
                    work()
                })
                .join()
                .unwrap_or_else(|_| Err(anyhow!("thread in {} panicked", self.name)))
        })
    }

    /// A handle for threads that enter this namespace themselves.
    pub fn file(&self) -> anyhow::Result<File> {
        self.file.try_clone().with_context(|| format!("duplicate the handle of {}", self.name))
    }

    /// Runs `program args…` inside the namespace with `stdin` from a file; returns the wall time
    /// from spawn to exit. Fails with the program's stderr on a non-zero exit.
    pub fn exec(&self, program: &str, args: &[&str], stdin: Option<&Path>) -> anyhow::Result<Duration> {
        self.run(|| {
            let input = match stdin {
                Some(path) => Stdio::from(File::open(path).with_context(|| format!("open {}", path.display()))?),
                None => Stdio::null(),
            };
            let started = Instant::now();
            let output = Command::new(program)
                .args(args)
                .stdin(input)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .output()
                .with_context(|| format!("run {program}"))?;
            let took = started.elapsed();
            if !output.status.success() {
                bail!(
                    "{program} {} in {} failed ({}): {}{}",
                    args.join(" "),
                    self.name,
                    output.status,
                    String::from_utf8_lossy(&output.stderr).trim(),
                    String::from_utf8_lossy(&output.stdout).trim()
                );
            }
            Ok(took)
        })
    }

    /// Deletes the namespace's IPv4 conntrack entries; returns how many were left right after.
    pub fn flush_conntrack(&self) -> anyhow::Result<u64> {
        self.run(|| {
            sys::flush_conntrack().with_context(|| format!("flush conntrack in {}", self.name))?;
            // /proc/sys/net resolves to the calling thread's namespace.
            let count = std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_count")
                .ok()
                .and_then(|text| text.trim().parse().ok())
                .unwrap_or(0);
            Ok(count)
        })
    }

    /// `TcpExt: ListenOverflows` + `ListenDrops` of this namespace: SYNs or handshakes a full
    /// accept queue dropped.
    pub fn listen_drops(&self) -> anyhow::Result<u64> {
        self.run(|| {
            let text = std::fs::read_to_string("/proc/thread-self/net/netstat")
                .context("read /proc/thread-self/net/netstat")?;
            let mut lines = text.lines().filter(|line| line.starts_with("TcpExt:"));
            let (Some(names), Some(values)) = (lines.next(), lines.next()) else { return Ok(0) };
            Ok(names
                .split_whitespace()
                .zip(values.split_whitespace())
                .filter(|(name, _)| matches!(*name, "ListenOverflows" | "ListenDrops"))
                .filter_map(|(_, value)| value.parse::<u64>().ok())
                .sum())
        })
    }

    /// TCP sockets in TIME_WAIT in this namespace (from `/proc/thread-self/net/tcp`).
    pub fn time_wait_sockets(&self) -> anyhow::Result<usize> {
        self.run(|| {
            let table =
                std::fs::read_to_string("/proc/thread-self/net/tcp").context("read /proc/thread-self/net/tcp")?;
            // Column 4 is the state; 06 is TCP_TIME_WAIT.
            Ok(table.lines().skip(1).filter(|line| line.split_whitespace().nth(3) == Some("06")).count())
        })
    }
}

/// The three namespaces; deleted on drop (the guard is the last field, so the handles close
/// first).
pub struct Topology {
    pub client: Netns,
    pub node: Netns,
    pub backend: Netns,
    _created: Created,
}

impl Topology {
    /// Creates the namespaces, links, addresses and routes. On an error, what was created is
    /// deleted before returning.
    pub fn create() -> anyhow::Result<Topology> {
        let prefix = format!("{PREFIX}{}-", std::process::id());
        eprintln!("bench-datapath: creating network namespaces {prefix}{{client,node,backend}}");
        let mut created = Created(Vec::new());
        let client = created.add(&format!("{prefix}client"))?;
        let node = created.add(&format!("{prefix}node"))?;
        let backend = created.add(&format!("{prefix}backend"))?;
        let topology = Topology { client, node, backend, _created: created };
        topology.wire()?;
        Ok(topology)
    }

    fn wire(&self) -> anyhow::Result<()> {
        let (client, node, backend) = (&self.client.name, &self.node.name, &self.backend.name);
        let cidr24 = |address: Ipv4Addr| format!("{address}/24");
        let steps: Vec<Vec<String>> = vec![
            // Links are created inside the namespaces: the host never sees them.
            args(&["-n", client, "link", "add", "eth0", "type", "veth", "peer", "name", "to-client", "netns", node]),
            args(&["-n", node, "link", "add", "to-backend", "type", "veth", "peer", "name", "eth0", "netns", backend]),
            args(&["-n", client, "addr", "add", &cidr24(CLIENT), "dev", "eth0"]),
            args(&["-n", client, "link", "set", "lo", "up"]),
            args(&["-n", client, "link", "set", "eth0", "up"]),
            args(&["-n", client, "route", "add", "default", "via", &NODE_CLIENT_SIDE.to_string()]),
            args(&["-n", node, "addr", "add", &cidr24(NODE_CLIENT_SIDE), "dev", "to-client"]),
            args(&["-n", node, "addr", "add", &cidr24(NODE_BACKEND_SIDE), "dev", "to-backend"]),
            args(&["-n", node, "link", "set", "lo", "up"]),
            args(&["-n", node, "link", "set", "to-client", "up"]),
            args(&["-n", node, "link", "set", "to-backend", "up"]),
            args(&["-n", node, "route", "add", "unreachable", SERVICE_CIDR]),
            args(&["-n", backend, "link", "set", "lo", "up"]),
            args(&["-n", backend, "link", "set", "eth0", "up"]),
        ];
        for step in &steps {
            ip(&step.iter().map(String::as_str).collect::<Vec<_>>())?;
        }
        for address in BACKENDS {
            ip(&["-n", backend, "addr", "add", &cidr24(address), "dev", "eth0"])?;
        }
        ip(&["-n", backend, "route", "add", "default", "via", &NODE_BACKEND_SIDE.to_string()])?;
        ip(&["-n", backend, "route", "add", "unreachable", SERVICE_CIDR])?;
        self.node.run(|| {
            // /proc/sys/net resolves to the calling thread's namespace.
            std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").context("enable ip_forward in the node namespace")
        })?;
        let forwarding = self.node.run(|| Ok(std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")?))?;
        ensure!(forwarding.trim() == "1", "ip_forward did not stick in {node}");
        Ok(())
    }

    /// True when none of this run's links shows up in the host namespace.
    pub fn host_untouched(&self) -> bool {
        let links = Command::new("ip").args(["-o", "link", "show"]).output();
        let links = links.map(|output| String::from_utf8_lossy(&output.stdout).into_owned()).unwrap_or_default();
        !links.lines().any(|line| line.contains("to-client") || line.contains("to-backend"))
    }
}

/// Every namespace created so far; deletes them on drop (also when a step fails).
struct Created(Vec<String>);

impl Created {
    fn add(&mut self, name: &str) -> anyhow::Result<Netns> {
        ip(&["netns", "add", name])?;
        self.0.push(name.to_owned());
        let file = File::open(netns_path(name)).with_context(|| format!("open namespace {name}"))?;
        Ok(Netns { name: name.to_owned(), file })
    }
}

impl Drop for Created {
    fn drop(&mut self) {
        if self.0.is_empty() {
            return;
        }
        eprintln!("bench-datapath: deleting network namespaces {}", self.0.join(" "));
        // Deleting a namespace destroys its veth ends, and with them their peers.
        for name in self.0.drain(..).rev() {
            if let Err(error) = ip(&["netns", "del", &name]) {
                eprintln!("bench-datapath: warning: {error:#}");
            }
        }
    }
}

/// Namespaces named like ours whose program is gone (a run that was killed with SIGKILL). They
/// are only reported: another user's namespaces are not this program's to delete.
pub fn stale_namespaces() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/run/netns") else { return Vec::new() };
    entries
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| {
            let Some(rest) = name.strip_prefix(PREFIX) else { return false };
            let pid = rest.split('-').next().unwrap_or_default();
            !pid.is_empty() && !Path::new("/proc").join(pid).exists()
        })
        .collect()
}

fn netns_path(name: &str) -> PathBuf {
    Path::new("/run/netns").join(name)
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn ip(arguments: &[&str]) -> anyhow::Result<()> {
    let output = Command::new("ip").args(arguments).output().context("run ip (iproute2)")?;
    ensure!(output.status.success(), "ip {}: {}", arguments.join(" "), String::from_utf8_lossy(&output.stderr).trim());
    Ok(())
}
