//! Routed pod wiring, no bridge: one veth pair per attachment.
//!
//! Pod side (`CNI_IFNAME`): the pod address as a /32, a link-scope route to the gateway, a default route
//! via the gateway, and a permanent neighbour entry for the gateway (the host veth's MAC), as Cilium and
//! Calico do. A /32 means the pod has no on-link subnet: every packet, even to a pod on the same node, goes
//! to the host, where the node-agent's TC programs see it.
//!
//! Host side (`kl` + 13 hex digits of SHA-256(container ID, ifname), 15 characters, a prefix only keelson
//! uses): the gateway address (first host address of the podCIDR) as a /32, so the pod's gateway is a real
//! local address of the node, which also becomes the source of host-to-pod traffic; a /32 route to the pod
//! (protocol 75); a permanent neighbour entry for the pod. With both neighbour entries static no ARP is
//! needed, so no proxy_arp. `rp_filter` is set loose (2) on the host veth and `ip_forward` turned on.
//! `accept_local` is set on the host veth: a NodePort reply that the node-agent's `tc_nat` has
//! reverse-translated on this veth's ingress carries the node's own address as its source, which
//! the kernel would otherwise drop as a martian.
//!
//! The pod's loopback device is not touched: runtimes bring it up themselves (containerd's CRI plugin
//! always runs the `loopback` plugin first).
//!
//! Deleting the host veth removes its peer and every address, route and neighbour entry above, which is all
//! DEL and the ADD rollback have to do.

use std::io;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use netlink_packet_route::route::{RouteScope, RouteType};
use sha2::{Digest, Sha256};

use crate::error::{CniError, ErrorCode};
use crate::netlink::{Mac, Netlink, NetlinkError, NewRoute, VethPair};
use crate::netns::NetNs;

/// Prefix of every host-side interface keelson creates.
pub const HOST_VETH_PREFIX: &str = "kl";

/// The host-side veth name of an attachment.
pub fn host_veth_name(container_id: &str, ifname: &str) -> String {
    let digest = digest(container_id, ifname, b"name");
    let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("{HOST_VETH_PREFIX}{}", &hex[..13])
}

/// A stable, locally administered unicast MAC for one side of an attachment.
fn mac(container_id: &str, ifname: &str, side: &[u8]) -> Mac {
    let digest = digest(container_id, ifname, side);
    let mut bytes = [0u8; 6];
    bytes.copy_from_slice(&digest[..6]);
    bytes[0] = (bytes[0] & 0xfc) | 0x02;
    Mac(bytes)
}

fn digest(container_id: &str, ifname: &str, purpose: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(container_id.as_bytes());
    hasher.update([0]);
    hasher.update(ifname.as_bytes());
    hasher.update([0]);
    hasher.update(purpose);
    hasher.finalize().into()
}

/// Everything that describes one attachment's wiring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodWiring {
    pub host_veth: String,
    pub host_mac: Mac,
    pub ifname: String,
    pub pod_mac: Mac,
    pub pod_ip: Ipv4Addr,
    pub gateway: Ipv4Addr,
    pub mtu: u32,
}

impl PodWiring {
    pub fn new(container_id: &str, ifname: &str, pod_ip: Ipv4Addr, gateway: Ipv4Addr, mtu: u32) -> Self {
        Self {
            host_veth: host_veth_name(container_id, ifname),
            host_mac: mac(container_id, ifname, b"host"),
            ifname: ifname.to_owned(),
            pod_mac: mac(container_id, ifname, b"pod"),
            pod_ip,
            gateway,
            mtu,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WiringError {
    #[error("interface {ifname} already exists in {}", netns.display())]
    InterfaceExists { ifname: String, netns: PathBuf },
    #[error("host namespace")]
    Host(#[source] NetlinkError),
    #[error("pod namespace")]
    Pod(#[source] NetlinkError),
    #[error("host veth {0} vanished right after it was created")]
    Vanished(String),
    #[error("write {path}")]
    Sysctl {
        path: String,
        #[source]
        source: io::Error,
    },
}

impl From<WiringError> for CniError {
    fn from(error: WiringError) -> Self {
        let (code, msg) = match &error {
            WiringError::InterfaceExists { .. } => (ErrorCode::InterfaceExists, "interface already exists"),
            WiringError::Host(netlink) | WiringError::Pod(netlink) if netlink.is_transient() => {
                (ErrorCode::TryAgainLater, "kernel busy, try again")
            }
            _ => (ErrorCode::Kernel, "failed to wire the pod interface"),
        };
        CniError::new(code, msg, crate::error::chain(&error))
    }
}

/// Creates the veth pair: the host end (up) in the host namespace, the peer called `ifname` in the pod's.
///
/// Fails with [`WiringError::InterfaceExists`], changing nothing, when the pod already has `ifname` (the
/// spec requires ADD to fail then). A host veth of the same name without that peer is a leftover of an
/// interrupted attachment with the same container ID and ifname; it is replaced, and `Ok(true)` says so.
/// The common case is a single request: the checks run only after the kernel answered EEXIST.
pub fn create_pair(
    host: &mut Netlink,
    pod: &mut Netlink,
    netns: &NetNs,
    wiring: &PodWiring,
) -> Result<bool, WiringError> {
    let pair = VethPair {
        host_name: &wiring.host_veth,
        host_mac: wiring.host_mac,
        peer_name: &wiring.ifname,
        peer_mac: wiring.pod_mac,
        peer_netns: netns.fd(),
        mtu: wiring.mtu,
    };
    match host.create_veth(&pair) {
        Err(error) if error.is_exists() => {}
        other => return other.map(|()| false).map_err(WiringError::Host),
    }
    if pod.link(&wiring.ifname).map_err(WiringError::Pod)?.is_some() {
        return Err(WiringError::InterfaceExists { ifname: wiring.ifname.clone(), netns: netns.path().to_path_buf() });
    }
    host.delete_link(&wiring.host_veth).map_err(WiringError::Host)?;
    host.create_veth(&pair).map(|()| true).map_err(WiringError::Host)
}

/// Configures both ends of a pair made by [`create_pair`]. On error the caller removes the host veth
/// ([`teardown`]), which undoes everything done here.
pub fn configure(host: &mut Netlink, pod: &mut Netlink, wiring: &PodWiring) -> Result<(), WiringError> {
    let host_index = host
        .link(&wiring.host_veth)
        .map_err(WiringError::Host)?
        .ok_or_else(|| WiringError::Vanished(wiring.host_veth.clone()))?
        .index;
    write_sysctl(&format!("/proc/sys/net/ipv4/conf/{}/rp_filter", wiring.host_veth), "2")?;
    write_sysctl(&format!("/proc/sys/net/ipv4/conf/{}/accept_local", wiring.host_veth), "1")?;
    enable_forwarding()?;
    host.add_address(host_index, wiring.gateway, 32).map_err(WiringError::Host)?;
    host.add_route(&NewRoute {
        dst: wiring.pod_ip,
        prefix: 32,
        gateway: None,
        oif: host_index,
        scope: RouteScope::Link,
    })
    .map_err(WiringError::Host)?;
    host.add_neighbour(host_index, wiring.pod_ip, wiring.pod_mac).map_err(WiringError::Host)?;

    let pod_index = pod
        .link(&wiring.ifname)
        .map_err(WiringError::Pod)?
        .ok_or_else(|| WiringError::Vanished(wiring.ifname.clone()))?
        .index;
    pod.set_up(pod_index).map_err(WiringError::Pod)?;
    pod.add_address(pod_index, wiring.pod_ip, 32).map_err(WiringError::Pod)?;
    pod.add_route(&NewRoute {
        dst: wiring.gateway,
        prefix: 32,
        gateway: None,
        oif: pod_index,
        scope: RouteScope::Link,
    })
    .map_err(WiringError::Pod)?;
    pod.add_route(&NewRoute {
        dst: Ipv4Addr::UNSPECIFIED,
        prefix: 0,
        gateway: Some(wiring.gateway),
        oif: pod_index,
        scope: RouteScope::Universe,
    })
    .map_err(WiringError::Pod)?;
    pod.add_neighbour(pod_index, wiring.gateway, wiring.host_mac).map_err(WiringError::Pod)?;

    // Return only once both ends pass traffic: until the kernel's link watcher has run (usually already
    // done by now, but it is a work item and can lag on a busy node) packets to the pod are dropped.
    let deadline = Instant::now() + RUNNING_TIMEOUT;
    while !(running(host, &wiring.host_veth).map_err(WiringError::Host)?
        && running(pod, &wiring.ifname).map_err(WiringError::Pod)?)
    {
        if Instant::now() >= deadline {
            eprintln!(
                "keelson: {} / {} not operationally up after {RUNNING_TIMEOUT:?}",
                wiring.host_veth, wiring.ifname
            );
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

/// How long ADD waits for the veth pair to become operational before returning anyway.
const RUNNING_TIMEOUT: Duration = Duration::from_secs(2);

fn running(netlink: &mut Netlink, name: &str) -> Result<bool, NetlinkError> {
    Ok(netlink.link(name)?.is_some_and(|link| link.running))
}

/// Removes the host veth (and with it the pod side and all routes); `false` if it was already gone.
pub fn teardown(host: &mut Netlink, host_veth: &str) -> Result<bool, WiringError> {
    host.delete_link(host_veth).map_err(WiringError::Host)
}

/// Compares the kernel's state with `wiring`; returns one line per difference (empty: no drift).
pub fn check(host: &mut Netlink, pod: &mut Netlink, wiring: &PodWiring) -> Result<Vec<String>, WiringError> {
    let mut drift = Vec::new();
    match host.link(&wiring.host_veth).map_err(WiringError::Host)? {
        None => drift.push(format!("host veth {} is missing", wiring.host_veth)),
        Some(link) => {
            if !link.up {
                drift.push(format!("host veth {} is down", wiring.host_veth));
            }
            let routes = host.routes().map_err(WiringError::Host)?;
            if !routes.iter().any(|r| is_unicast_to(r, wiring.pod_ip, 32) && r.oif == Some(link.index)) {
                drift.push(format!("host route {}/32 dev {} is missing", wiring.pod_ip, wiring.host_veth));
            }
            let addresses = host.addresses(link.index).map_err(WiringError::Host)?;
            if !addresses.iter().any(|a| a.address == wiring.gateway) {
                drift.push(format!("gateway {} is not on host veth {}", wiring.gateway, wiring.host_veth));
            }
        }
    }
    match pod.link(&wiring.ifname).map_err(WiringError::Pod)? {
        None => drift.push(format!("pod interface {} is missing", wiring.ifname)),
        Some(link) => {
            if !link.up {
                drift.push(format!("pod interface {} is down", wiring.ifname));
            }
            if link.mac != Some(wiring.pod_mac) {
                drift.push(format!(
                    "pod interface {} has MAC {:?}, expected {}",
                    wiring.ifname, link.mac, wiring.pod_mac
                ));
            }
            let addresses = pod.addresses(link.index).map_err(WiringError::Pod)?;
            if !addresses.iter().any(|a| a.address == wiring.pod_ip && a.prefix == 32) {
                drift.push(format!("address {}/32 is missing on pod interface {}", wiring.pod_ip, wiring.ifname));
            }
            let routes = pod.routes().map_err(WiringError::Pod)?;
            if !routes.iter().any(|r| is_unicast_to(r, wiring.gateway, 32) && r.oif == Some(link.index)) {
                drift.push(format!("pod route {}/32 dev {} is missing", wiring.gateway, wiring.ifname));
            }
            if !routes.iter().any(|r| {
                is_unicast_to(r, Ipv4Addr::UNSPECIFIED, 0)
                    && r.gateway == Some(wiring.gateway)
                    && r.oif == Some(link.index)
            }) {
                drift.push(format!("pod default route via {} is missing", wiring.gateway));
            }
        }
    }
    Ok(drift)
}

fn is_unicast_to(route: &crate::netlink::Route, dst: Ipv4Addr, prefix: u8) -> bool {
    route.kind == RouteType::Unicast && route.dst == dst && route.prefix == prefix
}

fn write_sysctl(path: &str, value: &str) -> Result<(), WiringError> {
    std::fs::write(path, value).map_err(|source| WiringError::Sysctl { path: path.to_owned(), source })
}

/// Turns on IPv4 forwarding unless it already is (a write would reset per-interface settings).
fn enable_forwarding() -> Result<(), WiringError> {
    const PATH: &str = "/proc/sys/net/ipv4/ip_forward";
    match std::fs::read_to_string(PATH) {
        Ok(value) if value.trim() == "1" => Ok(()),
        _ => write_sysctl(PATH, "1"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_veth_names_are_short_prefixed_and_distinct() {
        let a = host_veth_name("0123456789abcdef", "eth0");
        assert_eq!(a.len(), 15);
        assert!(a.starts_with(HOST_VETH_PREFIX));
        assert!(a[2..].chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(a, host_veth_name("0123456789abcdef", "eth0"), "stable across invocations");
        assert_ne!(a, host_veth_name("0123456789abcdef", "net1"), "ifname is part of the key");
        assert_ne!(a, host_veth_name("0123456789abcdeg", "eth0"));
    }

    #[test]
    fn macs_are_unicast_locally_administered_and_differ_per_side() {
        let wiring = PodWiring::new("abc", "eth0", Ipv4Addr::new(10, 244, 1, 2), Ipv4Addr::new(10, 244, 1, 1), 1500);
        for mac in [wiring.host_mac, wiring.pod_mac] {
            assert_eq!(mac.0[0] & 0x01, 0, "unicast");
            assert_eq!(mac.0[0] & 0x02, 0x02, "locally administered");
        }
        assert_ne!(wiring.host_mac, wiring.pod_mac);
    }
}
