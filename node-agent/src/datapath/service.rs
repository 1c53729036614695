//! The desired state the datapath is handed: services and their backends, in plain Rust types.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};

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
}

impl Service {
    /// The frontend as the programs see it.
    pub const fn key(&self) -> ServiceKey {
        ServiceKey::new(self.vip, self.port, self.proto.ipproto())
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
