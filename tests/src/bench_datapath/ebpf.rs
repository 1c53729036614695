//! The eBPF datapath under test: Keelson's socket load balancer (`node_agent::datapath`).
//!
//! The client stands for a pod: on a Keelson node every pod runs in the project's cgroup subtree,
//! where `cgroup/connect4` sends a ClusterIP connect straight to a backend, so no packet of the
//! connection is translated in the node. Here that is a cgroup of this run's own
//! (`kbdp-<pid>-ebpf`, under the cgroup2 hierarchy; never the root) holding this process while the
//! mode is measured: the client threads connect from it. [`Datapath::remove`] moves the process
//! back to the cgroup it came from and deletes the cgroup, so the iptables and nftables modes run
//! without any program on their path.
//!
//! Programming is [`Datapath::sync`] (a full table onto empty maps) and [`Datapath::upsert`] (one
//! Service), timed around the map writes they make.

use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use node_agent::datapath::{self as lb, Config, Protocol, cgroup};

use super::datapath::Datapath;
use super::services::{SERVICE_PORT, Service, ServiceTable, TARGET_PORT};
use super::topology::Netns;

pub struct Ebpf {
    /// Where a private cgroup2 mount goes when the machine has none.
    scratch: PathBuf,
    state: Option<Loaded>,
}

/// What exists while the mode is measured. Field order is drop order: the programs detach before
/// the cgroup goes, and the mount (if this run made one) goes last.
struct Loaded {
    datapath: lb::Datapath,
    cgroup: cgroup::OwnedCgroup,
    /// The cgroup this process was in before it joined `cgroup`.
    home: PathBuf,
    mounted: Option<PathBuf>,
}

impl Ebpf {
    pub fn new(scratch: &Path) -> Ebpf {
        Ebpf { scratch: scratch.to_owned(), state: None }
    }

    fn loaded(&mut self) -> anyhow::Result<&mut lb::Datapath> {
        self.state.as_mut().map(|state| &mut state.datapath).ok_or_else(|| anyhow!("eBPF datapath not loaded"))
    }

    /// Loads the programs, attaches them to a fresh cgroup and moves this process into it.
    fn load(&mut self) -> anyhow::Result<()> {
        let private = self.scratch.join("cgroup2");
        let (hierarchy, mounted) = cgroup::ensure_hierarchy(&private).context("a cgroup2 hierarchy")?;
        let home = own_cgroup(&hierarchy)?;
        let name = format!("kbdp-{}-ebpf", std::process::id());
        let cgroup = cgroup::OwnedCgroup::create(&hierarchy, &name).context("create the benchmark cgroup")?;
        let mut datapath = lb::Datapath::load(&Config { pin_dir: None }).context("load the eBPF programs")?;
        datapath.attach_cgroup(cgroup.path()).context("attach the socket programs")?;
        cgroup.add_process(std::process::id()).context("move this process into the benchmark cgroup")?;
        self.state = Some(Loaded { datapath, cgroup, home, mounted: mounted.then_some(private) });
        Ok(())
    }

    /// Moves this process home, then drops the programs, the cgroup and any private mount.
    fn unload(&mut self) -> anyhow::Result<()> {
        let Some(state) = self.state.take() else { return Ok(()) };
        let moved = std::fs::write(state.home.join("cgroup.procs"), std::process::id().to_string())
            .with_context(|| format!("move this process back to {}", state.home.display()));
        let Loaded { datapath, cgroup, mounted, .. } = state;
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
        format!(
            "keelson socket LB (cgroup connect4/sendmsg4/recvmsg4/getpeername4; object {}, sources {})",
            lb::OBJECT_ORIGIN,
            &lb::SOURCE_HASH[..lb::SOURCE_HASH.len().min(12)]
        )
    }

    fn reset(&mut self, _node: &Netns) -> anyhow::Result<()> {
        self.unload()?;
        self.load()
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
