//! The desired state the datapath is handed: services and their backends, in plain Rust types.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use keelson_ebpf_common::{IPPROTO_TCP, IPPROTO_UDP, ServiceKey};

/// Transport protocol of a service port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// The `IPPROTO_*` number the programs match on.
    pub const fn ipproto(self) -> u8 {
        match self {
            Self::Tcp => IPPROTO_TCP,
            Self::Udp => IPPROTO_UDP,
        }
    }

    pub const fn from_ipproto(proto: u8) -> Option<Self> {
        match proto {
            IPPROTO_TCP => Some(Self::Tcp),
            IPPROTO_UDP => Some(Self::Udp),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tcp => "TCP",
            Self::Udp => "UDP",
        })
    }
}

/// One service frontend (ClusterIP, port, protocol) and the backends it balances over. An empty
/// backend list is a service without endpoints: connects and sends to it fail at once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    pub vip: Ipv4Addr,
    pub port: u16,
    pub proto: Protocol,
    pub backends: Vec<SocketAddrV4>,
    /// Session affinity `ClientIP`: a client that comes back within this time of its last
    /// connection (or `tc_nat` flow) reaches the same backend, while that is still a backend.
    /// Whole seconds, rounded up, 1 s at least; `None`: every connection picks anew.
    pub affinity: Option<Duration>,
    /// Maglev consistent hashing for flows that `tc_nat` and `xdp_nodeport` translate (NodePort
    /// traffic from outside): a new flow's backend is a fixed function of the flow and the
    /// backend set ([`super::maglev`]), the same on every node and after conntrack is lost, and
    /// removing one of `N` backends moves only about `1/N` of the flows. Connections of local
    /// clients (socket programs) still pick at random. Session affinity, when set, comes first.
    pub maglev: bool,
}

impl Service {
    /// The frontend as the programs see it.
    pub const fn key(&self) -> ServiceKey {
        ServiceKey::new(self.vip, self.port, self.proto.ipproto())
    }

    /// [`Self::affinity`] as the programs see it: seconds, 0 for none.
    pub fn affinity_timeout(&self) -> u32 {
        self.affinity.map_or(0, |timeout| {
            let seconds = timeout.as_secs().saturating_add(u64::from(timeout.subsec_nanos() > 0));
            u32::try_from(seconds).unwrap_or(u32::MAX).max(1)
        })
    }

    /// The [`Self::affinity`] of an `affinity_timeout` read back from the maps.
    pub fn affinity_from_timeout(seconds: u32) -> Option<Duration> {
        (seconds != 0).then(|| Duration::from_secs(u64::from(seconds)))
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}/{}", self.vip, self.port, self.proto)
    }
}

/// What one call that changes the maps did; `map_writes` counts every update and delete.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncStats {
    pub services_added: usize,
    pub services_updated: usize,
    pub services_removed: usize,
    pub map_writes: usize,
}

impl std::ops::AddAssign for SyncStats {
    fn add_assign(&mut self, other: Self) {
        self.services_added += other.services_added;
        self.services_updated += other.services_updated;
        self.services_removed += other.services_removed;
        self.map_writes += other.map_writes;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn affinity_timeouts_are_whole_seconds() {
        let mut service = Service {
            vip: Ipv4Addr::new(10, 96, 0, 1),
            port: 80,
            proto: Protocol::Tcp,
            backends: Vec::new(),
            affinity: None,
            maglev: false,
        };
        assert_eq!(service.affinity_timeout(), 0);
        for (timeout, seconds) in [
            (Duration::from_secs(10_800), 10_800),
            (Duration::from_millis(1_500), 2),
            (Duration::ZERO, 1),
            (Duration::from_secs(u64::MAX), u32::MAX),
        ] {
            service.affinity = Some(timeout);
            assert_eq!(service.affinity_timeout(), seconds, "{timeout:?}");
        }
        assert_eq!(Service::affinity_from_timeout(0), None);
        assert_eq!(Service::affinity_from_timeout(30), Some(Duration::from_secs(30)));
    }
}
