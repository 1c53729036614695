//! The datapaths under test, and the one place a new one is added: [`Mode`] lists them and
//! [`Mode::datapath`] builds each. The no-NAT floor is not a mode: it is the same traffic with no
//! rules at all.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;

use super::services::{Service, ServiceTable};
use super::topology::Netns;
use super::{ebpf, iptables, nftables};

/// How one datapath programs Services into the node namespace.
pub trait Datapath {
    /// The tool and its version, for the report.
    fn version(&self) -> String;

    /// Removes everything this datapath installed in the node namespace, then installs what must
    /// exist before a first sync (untimed).
    fn reset(&mut self, node: &Netns) -> anyhow::Result<()>;

    /// Removes everything this datapath installed, leaving no hook behind (untimed).
    fn remove(&mut self, node: &Netns) -> anyhow::Result<()>;

    /// Programs the whole table onto the reset state, as the proxy does when it starts; returns
    /// the time the programming step took.
    fn full_sync(&mut self, node: &Netns, table: &ServiceTable) -> anyhow::Result<Duration>;

    /// `table.services[changed]` has other endpoints than `before` (one endpoint removed or
    /// added); applies only that change, as the proxy's incremental sync does; returns its time.
    fn endpoint_change(
        &mut self,
        node: &Netns,
        table: &ServiceTable,
        changed: usize,
        before: &Service,
    ) -> anyhow::Result<Duration>;
}

/// The datapaths of one run, in report order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Ebpf,
    EbpfTc,
    Iptables,
    Nftables,
}

impl Mode {
    pub const ALL: [Mode; 4] = [Mode::Ebpf, Mode::EbpfTc, Mode::Iptables, Mode::Nftables];

    /// Keelson's own datapaths (the rest are kube-proxy's, the baselines).
    pub fn is_ebpf(self) -> bool {
        matches!(self, Mode::Ebpf | Mode::EbpfTc)
    }

    pub fn label(self) -> &'static str {
        match self {
            Mode::Ebpf => "eBPF",
            Mode::EbpfTc => "eBPF TC",
            Mode::Iptables => "iptables-nft",
            Mode::Nftables => "nftables",
        }
    }

    /// The datapath, or `None` when it does not exist yet. `scratch` is a private directory for
    /// rule files and mounts.
    pub fn datapath(self, scratch: &Path) -> Option<Box<dyn Datapath>> {
        match self {
            Mode::Ebpf => Some(Box::new(ebpf::Ebpf::new(ebpf::Hook::Socket, scratch))),
            Mode::EbpfTc => Some(Box::new(ebpf::Ebpf::new(ebpf::Hook::Tc, scratch))),
            Mode::Iptables => Some(Box::new(iptables::Iptables::new(scratch))),
            Mode::Nftables => Some(Box::new(nftables::Nftables::new(scratch))),
        }
    }
}

/// Writes a rule file into `scratch` and feeds it to `program args` in the node namespace; returns
/// how long the program took.
pub fn load_rules(
    scratch: &Path,
    node: &Netns,
    name: &str,
    text: &str,
    program: &str,
    args: &[&str],
) -> anyhow::Result<Duration> {
    let path = scratch.join(name);
    std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
    node.exec(program, args, Some(&path))
}

/// The first line of `program flag`, or "… version unknown".
pub fn tool_version(program: &str, flag: &str) -> String {
    Command::new(program)
        .arg(flag)
        .output()
        .ok()
        .filter(|output| output.status.success())
        .and_then(|output| String::from_utf8_lossy(&output.stdout).lines().next().map(str::to_owned))
        .unwrap_or_else(|| format!("{program}: version unknown"))
}
