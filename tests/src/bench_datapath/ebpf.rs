//! The eBPF datapaths under test (`node_agent::datapath`), at their two places in a node:
//!
//! - [`Hook::Socket`]: the client stands for a pod. On a Keelson node every pod runs in the
//!   project's cgroup subtree, where `cgroup/connect4` sends a ClusterIP connect straight to a
//!   backend, so no packet of the connection is translated in the node. Here that is a cgroup of
//!   this run's own (`kbdp-<pid>-ebpf`, under the cgroup2 hierarchy; never the root) holding this
//!   process while the mode is measured: the client threads connect from it. Unloading moves the
//!   process back to the cgroup it came from and deletes the cgroup, so the other modes run
//!   without any program on their path.
//! - [`Hook::Tc`]: the client is outside any cgroup of ours, and `tc_nat` translates every packet
//!   in the node namespace, where kube-proxy's rules act: on the ingress of the client-facing
//!   veth (DNAT to a backend, conntrack entry) and of the backend-facing one (replies get the
//!   service address back). This is the path of traffic the socket programs do not see.
//!
//! Programming is [`Datapath::sync`] (a full table onto empty maps) and [`Datapath::upsert`] (one
//! Service), timed around the map writes they make; both hooks read the same maps.

use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use node_agent::datapath::{self as lb, Config, Protocol, cgroup};

use super::datapath::Datapath;
use super::services::{SERVICE_PORT, Service, ServiceTable, TARGET_PORT};
use super::topology::Netns;

/// Where the programs act.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Socket,
    Tc,
}

/// The node namespace's interfaces `tc_nat` is attached to.
const TC_INTERFACES: [&str; 2] = ["to-client", "to-backend"];

pub struct Ebpf {
    hook: Hook,
    /// Where a private cgroup2 mount goes when the machine has none.
    scratch: PathBuf,
    state: Option<Loaded>,
}

/// What exists while the mode is measured. Field order is drop order: the programs detach before
/// the cgroup goes.
struct Loaded {
    datapath: lb::Datapath,
    cgroup: Option<Joined>,
}

/// The benchmark cgroup this process joined ([`Hook::Socket`]). The mount (if this run made one)
/// goes after the cgroup.
struct Joined {
    cgroup: cgroup::OwnedCgroup,
    /// The cgroup this process was in before it joined `cgroup`.
    home: PathBuf,
    mounted: Option<PathBuf>,
}

impl Ebpf {
    pub fn new(hook: Hook, scratch: &Path) -> Ebpf {
        Ebpf { hook, scratch: scratch.to_owned(), state: None }
    }

    fn loaded(&mut self) -> anyhow::Result<&mut lb::Datapath> {
        self.state.as_mut().map(|state| &mut state.datapath).ok_or_else(|| anyhow!("eBPF datapath not loaded"))
    }

    /// Loads the programs and attaches them where [`Self::hook`] says.
    fn load(&mut self, node: &Netns) -> anyhow::Result<()> {
        let mut datapath = lb::Datapath::load(&Config { pin_dir: None }).context("load the eBPF programs")?;
        let cgroup = match self.hook {
            Hook::Socket => Some(self.join_cgroup(&mut datapath)?),
            Hook::Tc => {
                // Attaching works on the calling thread's namespace: do it from inside the node.
                node.run(|| {
                    for iface in TC_INTERFACES {
                        datapath.attach_tc(iface).with_context(|| format!("attach tc_nat to {iface}"))?;
                    }
                    Ok(())
                })?;
                None
            }
        };
        self.state = Some(Loaded { datapath, cgroup });
        Ok(())
    }

    /// A fresh cgroup with the socket programs attached, and this process in it.
    fn join_cgroup(&self, datapath: &mut lb::Datapath) -> anyhow::Result<Joined> {
        let private = self.scratch.join("cgroup2");
        let (hierarchy, mounted) = cgroup::ensure_hierarchy(&private).context("a cgroup2 hierarchy")?;
        let home = own_cgroup(&hierarchy)?;
        let name = format!("kbdp-{}-ebpf", std::process::id());
        let cgroup = cgroup::OwnedCgroup::create(&hierarchy, &name).context("create the benchmark cgroup")?;
        datapath.attach_cgroup(cgroup.path()).context("attach the socket programs")?;
        cgroup.add_process(std::process::id()).context("move this process into the benchmark cgroup")?;
        Ok(Joined { cgroup, home, mounted: mounted.then_some(private) })
    }

    /// Moves this process home, then drops the programs, the cgroup and any private mount.
    fn unload(&mut self) -> anyhow::Result<()> {
        let Some(Loaded { datapath, cgroup }) = self.state.take() else { return Ok(()) };
        let Some(Joined { cgroup, home, mounted }) = cgroup else {
            drop(datapath);
            return Ok(());
        };
        let moved = std::fs::write(home.join("cgroup.procs"), std::process::id().to_string())
            .with_context(|| format!("move this process back to {}", home.display()));
        drop(datapath);
        drop(cgroup);
        if let Some(mount) = mounted
            && let Err(error) = super::sys::unmount(&mount)
        {
            eprintln!("bench-datapath: warning: umount {}: {error}", mount.display());
        }
        moved
    }
}

/// This process's cgroup v2 directory under `hierarchy` (`0::/path` in `/proc/self/cgroup`).
fn own_cgroup(hierarchy: &Path) -> anyhow::Result<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/cgroup").context("read /proc/self/cgroup")?;
    let path = text
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .ok_or_else(|| anyhow!("no cgroup v2 entry in /proc/self/cgroup"))?;
    Ok(hierarchy.join(path.trim_start_matches('/')))
}

/// One benchmark Service as the datapath takes it: ClusterIP:80/TCP → endpoints:8080.
fn service(service: &Service) -> lb::Service {
    lb::Service {
        vip: service.vip,
        port: SERVICE_PORT,
        proto: Protocol::Tcp,
        backends: service.endpoints.iter().map(|ip| SocketAddrV4::new(*ip, TARGET_PORT)).collect(),
        affinity: None,
        maglev: false,
    }
}

impl Datapath for Ebpf {
    fn version(&self) -> String {
        let programs = match self.hook {
            Hook::Socket => "socket LB: cgroup connect4/sendmsg4/recvmsg4/getpeername4",
            Hook::Tc => "tc_nat on the node's veths: per-packet DNAT, conntrack, reverse NAT",
        };
        format!(
            "keelson {programs} (object {}, sources {})",
            lb::OBJECT_ORIGIN,
            &lb::SOURCE_HASH[..lb::SOURCE_HASH.len().min(12)]
        )
    }

    fn reset(&mut self, node: &Netns) -> anyhow::Result<()> {
        self.unload()?;
        self.load(node)
    }

    fn remove(&mut self, _node: &Netns) -> anyhow::Result<()> {
        self.unload()
    }

    fn full_sync(&mut self, _node: &Netns, table: &ServiceTable) -> anyhow::Result<Duration> {
        let desired: Vec<lb::Service> = table.services.iter().map(service).collect();
        let datapath = self.loaded()?;
        let started = Instant::now();
        let stats = datapath.sync(&desired).context("sync the service maps")?;
        let took = started.elapsed();
        anyhow::ensure!(
            stats.services_added == desired.len(),
            "full sync added {} of {} services",
            stats.services_added,
            desired.len()
        );
        Ok(took)
    }

    fn endpoint_change(
        &mut self,
        _node: &Netns,
        table: &ServiceTable,
        changed: usize,
        _before: &Service,
    ) -> anyhow::Result<Duration> {
        let desired = service(&table.services[changed]);
        let datapath = self.loaded()?;
        let started = Instant::now();
        datapath.upsert(&desired).context("upsert the changed service")?;
        Ok(started.elapsed())
    }
}

impl Drop for Ebpf {
    fn drop(&mut self) {
        if let Err(error) = self.unload() {
            eprintln!("bench-datapath: warning: {error:#}");
        }
    }
}
