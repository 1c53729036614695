//! A small synchronous rtnetlink client: `netlink-packet-route` builds and parses the messages, a blocking
//! `netlink-sys` socket carries them, one request at a time with an acknowledgement.
//!
//! Why not the `ip` command: ADD needs about a dozen link, address, route and neighbour changes, and each
//! fork/exec of `ip` costs milliseconds; the target is an ADD well under the reference bridge plugin's
//! 10 ms. Why not the async `rtnetlink` crate: a short-lived plugin gains nothing from an async runtime,
//! and starting one would slow down every invocation, VERSION included.
//!
//! A netlink socket stays bound to the network namespace it was opened in; [`crate::netns::NetNs::netlink`]
//! opens one inside a container's namespace. Only the wiring code ([`crate::wiring`]) uses this module.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, BorrowedFd};

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST, NetlinkBuffer, NetlinkHeader,
    NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage, State,
};
use netlink_packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

/// Routes keelson installs carry this protocol number (`ip route show proto 75`), so they can be told
/// apart from anyone else's.
pub const ROUTE_PROTOCOL: u8 = 75;

const ENODEV: i32 = 19;
const ENOENT: i32 = 2;
const ESRCH: i32 = 3;
const EEXIST: i32 = 17;
const EAGAIN: i32 = 11;
const EBUSY: i32 = 16;

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("open netlink socket")]
    Open(#[source] io::Error),
    #[error("{op}: netlink socket")]
    Socket {
        op: String,
        #[source]
        source: io::Error,
    },
    #[error("{op}: undecodable reply: {reason}")]
    Decode { op: String, reason: String },
    #[error("{op}")]
    Kernel {
        op: String,
        #[source]
        source: io::Error,
    },
}

impl NetlinkError {
    /// The errno the kernel answered with, if this is a kernel refusal.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Kernel { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }

    /// "File exists": what a create of something already there answers.
    pub fn is_exists(&self) -> bool {
        self.errno() == Some(EEXIST)
    }

    /// EAGAIN or EBUSY: a condition that clears by itself (CNI code 11).
    pub fn is_transient(&self) -> bool {
        matches!(self.errno(), Some(EAGAIN | EBUSY))
    }

    /// "No such device / entry": what a delete of something already gone answers.
    pub fn is_not_found(&self) -> bool {
        matches!(self.errno(), Some(ENODEV | ENOENT | ESRCH))
    }
}

/// A MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mac(pub [u8; 6]);

impl std::fmt::Display for Mac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// What CHECK and ADD need to know about a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Option<Mac>,
    pub mtu: Option<u32>,
    pub up: bool,
    /// Operational state is up: the kernel's link watcher has seen the carrier and activated the queue
    /// discipline, so the link passes traffic (until then packets are dropped).
    pub running: bool,
    /// `veth`, `bridge`, … from IFLA_INFO_KIND.
    pub kind: Option<String>,
}

/// An IPv4 address on an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Address {
    pub index: u32,
    pub address: Ipv4Addr,
    pub prefix: u8,
}

/// An IPv4 route of the main table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub dst: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
    pub oif: Option<u32>,
    pub scope: RouteScope,
    pub kind: RouteType,
}

/// A veth pair whose peer is created directly inside another namespace (one request).
pub struct VethPair<'a> {
    pub host_name: &'a str,
    pub host_mac: Mac,
    pub peer_name: &'a str,
    pub peer_mac: Mac,
    pub peer_netns: BorrowedFd<'a>,
    pub mtu: u32,
}

/// A route to add to the main table.
#[derive(Debug, Clone, Copy)]
pub struct NewRoute {
    pub dst: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
    pub oif: u32,
    pub scope: RouteScope,
}

/// A blocking rtnetlink socket in the namespace it was opened in.
pub struct Netlink {
    socket: Socket,
    sequence: u32,
    receive: Vec<u8>,
}

impl Netlink {
    /// Opens a socket in the calling thread's network namespace.
    pub fn open() -> Result<Self, NetlinkError> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(NetlinkError::Open)?;
        socket.bind_auto().map_err(NetlinkError::Open)?;
        socket.connect(&SocketAddr::new(0, 0)).map_err(NetlinkError::Open)?;
        Ok(Self { socket, sequence: 0, receive: Vec::with_capacity(256 * 1024) })
    }

    /// Sends one request and collects the replies until the acknowledgement (or NLMSG_DONE for dumps).
    fn exchange(
        &mut self,
        op: &dyn Fn() -> String,
        message: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        self.sequence = self.sequence.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = self.sequence;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(message));
        packet.finalize();
        let mut bytes = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut bytes);
        self.socket.send(&bytes, 0).map_err(|source| NetlinkError::Socket { op: op(), source })?;

        let mut replies = Vec::new();
        loop {
            self.receive.clear();
            let size = self
                .socket
                .recv(&mut self.receive, libc::MSG_TRUNC)
                .map_err(|source| NetlinkError::Socket { op: op(), source })?;
            if size > self.receive.len() {
                return Err(NetlinkError::Decode { op: op(), reason: format!("datagram of {size} bytes truncated") });
            }
            let mut offset = 0;
            while offset < self.receive.len() {
                let chunk = &self.receive[offset..];
                let length = NetlinkBuffer::new_checked(chunk)
                    .map_err(|error| NetlinkError::Decode { op: op(), reason: error.to_string() })?
                    .length() as usize;
                offset += length.max(16).next_multiple_of(4);
                // A message this crate cannot parse (an attribute it does not know) is skipped, not fatal.
                let Ok(parsed) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&chunk[..length]) else {
                    continue;
                };
                if parsed.header.sequence_number != self.sequence {
                    continue;
                }
                match parsed.payload {
                    NetlinkPayload::Done(_) => return Ok(replies),
                    NetlinkPayload::Error(error) => {
                        return match error.code {
                            None => Ok(replies),
                            Some(code) => Err(NetlinkError::Kernel {
                                op: op(),
                                source: io::Error::from_raw_os_error(-code.get()),
                            }),
                        };
                    }
                    NetlinkPayload::InnerMessage(inner) => replies.push(inner),
                    _ => {}
                }
            }
        }
    }

    fn request(
        &mut self,
        op: &dyn Fn() -> String,
        message: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<(), NetlinkError> {
        self.exchange(op, message, flags | NLM_F_ACK).map(drop)
    }

    /// The link called `name`, if there is one.
    pub fn link(&mut self, name: &str) -> Result<Option<Link>, NetlinkError> {
        let mut message = LinkMessage::default();
        message.attributes.push(LinkAttribute::IfName(name.to_owned()));
        match self.exchange(&|| format!("get link {name}"), RouteNetlinkMessage::GetLink(message), NLM_F_ACK) {
            Ok(replies) => Ok(replies.into_iter().find_map(|reply| match reply {
                RouteNetlinkMessage::NewLink(link) => Some(link_from_message(link)),
                _ => None,
            })),
            Err(error) if error.is_not_found() => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Creates a veth pair, the host end up, the peer (still down) already in its namespace.
    pub fn create_veth(&mut self, pair: &VethPair<'_>) -> Result<(), NetlinkError> {
        // The peer cannot be created up: with IFLA_NET_NS_FD the kernel (6.18) then answers ENOTCONN.
        let mut peer = LinkMessage::default();
        peer.attributes = vec![
            LinkAttribute::IfName(pair.peer_name.to_owned()),
            LinkAttribute::Address(pair.peer_mac.0.to_vec()),
            LinkAttribute::Mtu(pair.mtu),
            LinkAttribute::NetNsFd(pair.peer_netns.as_raw_fd()),
        ];
        let mut link = LinkMessage::default();
        link.header.flags = LinkFlags::Up;
        link.header.change_mask = LinkFlags::Up;
        link.attributes = vec![
            LinkAttribute::IfName(pair.host_name.to_owned()),
            LinkAttribute::Address(pair.host_mac.0.to_vec()),
            LinkAttribute::Mtu(pair.mtu),
            LinkAttribute::LinkInfo(vec![
                LinkInfo::Kind(InfoKind::Veth),
                LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
            ]),
        ];
        self.request(
            &|| format!("create veth pair {} / {}", pair.host_name, pair.peer_name),
            RouteNetlinkMessage::NewLink(link),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// Deletes the link called `name`; `false` when there was none.
    pub fn delete_link(&mut self, name: &str) -> Result<bool, NetlinkError> {
        let mut message = LinkMessage::default();
        message.attributes.push(LinkAttribute::IfName(name.to_owned()));
        match self.request(&|| format!("delete link {name}"), RouteNetlinkMessage::DelLink(message), 0) {
            Ok(()) => Ok(true),
            Err(error) if error.is_not_found() => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Sets a link administratively up.
    pub fn set_up(&mut self, index: u32) -> Result<(), NetlinkError> {
        let mut message = LinkMessage::default();
        message.header.index = index;
        message.header.flags = LinkFlags::Up;
        message.header.change_mask = LinkFlags::Up;
        self.request(&|| format!("set link {index} up"), RouteNetlinkMessage::SetLink(message), 0)
    }

    /// Adds `address/prefix` to interface `index`.
    pub fn add_address(&mut self, index: u32, address: Ipv4Addr, prefix: u8) -> Result<(), NetlinkError> {
        let mut message = AddressMessage::default();
        message.header.family = AddressFamily::Inet;
        message.header.prefix_len = prefix;
        message.header.scope = AddressScope::Universe;
        message.header.index = index;
        message.attributes = vec![AddressAttribute::Local(address.into()), AddressAttribute::Address(address.into())];
        self.request(
            &|| format!("add address {address}/{prefix} to link {index}"),
            RouteNetlinkMessage::NewAddress(message),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
    }

    /// IPv4 addresses of interface `index`.
    pub fn addresses(&mut self, index: u32) -> Result<Vec<Address>, NetlinkError> {
        let mut message = AddressMessage::default();
        message.header.family = AddressFamily::Inet;
        let replies =
            self.exchange(&|| "list addresses".to_owned(), RouteNetlinkMessage::GetAddress(message), NLM_F_DUMP)?;
        Ok(replies
            .into_iter()
            .filter_map(|reply| match reply {
                RouteNetlinkMessage::NewAddress(message) if message.header.index == index => {
                    message.attributes.iter().find_map(|attribute| match attribute {
                        AddressAttribute::Local(std::net::IpAddr::V4(address)) => {
                            Some(Address { index, address: *address, prefix: message.header.prefix_len })
                        }
                        _ => None,
                    })
                }
                _ => None,
            })
            .collect())
    }

    /// Adds a unicast route to the main table with keelson's protocol number.
    pub fn add_route(&mut self, route: &NewRoute) -> Result<(), NetlinkError> {
        let mut message = RouteMessage::default();
        message.header.address_family = AddressFamily::Inet;
        message.header.destination_prefix_length = route.prefix;
        message.header.table = RouteHeader::RT_TABLE_MAIN;
        message.header.protocol = RouteProtocol::Other(ROUTE_PROTOCOL);
        message.header.scope = route.scope;
        message.header.kind = RouteType::Unicast;
        if route.prefix > 0 {
            message.attributes.push(RouteAttribute::Destination(RouteAddress::Inet(route.dst)));
        }
        if let Some(gateway) = route.gateway {
            message.attributes.push(RouteAttribute::Gateway(RouteAddress::Inet(gateway)));
        }
        message.attributes.push(RouteAttribute::Oif(route.oif));
        self.request(
            &|| format!("add route {}/{} via {:?} dev {}", route.dst, route.prefix, route.gateway, route.oif),
            RouteNetlinkMessage::NewRoute(message),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
    }

    /// The IPv4 routes of the main table.
    pub fn routes(&mut self) -> Result<Vec<Route>, NetlinkError> {
        let mut message = RouteMessage::default();
        message.header.address_family = AddressFamily::Inet;
        let replies =
            self.exchange(&|| "list routes".to_owned(), RouteNetlinkMessage::GetRoute(message), NLM_F_DUMP)?;
        Ok(replies
            .into_iter()
            .filter_map(|reply| match reply {
                RouteNetlinkMessage::NewRoute(message) => route_from_message(&message),
                _ => None,
            })
            .collect())
    }

    /// Adds (or replaces) a permanent neighbour entry: no ARP is ever needed for `address`.
    pub fn add_neighbour(&mut self, index: u32, address: Ipv4Addr, mac: Mac) -> Result<(), NetlinkError> {
        let mut message = NeighbourMessage::default();
        message.header.family = AddressFamily::Inet;
        message.header.ifindex = index;
        message.header.state = NeighbourState::Permanent;
        message.attributes = vec![
            NeighbourAttribute::Destination(NeighbourAddress::Inet(address)),
            NeighbourAttribute::LinkLayerAddress(mac.0.to_vec()),
        ];
        self.request(
            &|| format!("add neighbour {address} lladdr {mac} dev {index}"),
            RouteNetlinkMessage::NewNeighbour(message),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
    }
}

fn link_from_message(message: LinkMessage) -> Link {
    let mut link = Link {
        index: message.header.index,
        name: String::new(),
        mac: None,
        mtu: None,
        up: message.header.flags.contains(LinkFlags::Up),
        running: false,
        kind: None,
    };
    for attribute in message.attributes {
        match attribute {
            LinkAttribute::IfName(name) => link.name = name,
            LinkAttribute::Address(bytes) => link.mac = <[u8; 6]>::try_from(bytes.as_slice()).ok().map(Mac),
            LinkAttribute::Mtu(mtu) => link.mtu = Some(mtu),
            LinkAttribute::OperState(state) => link.running = state == State::Up,
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    if let LinkInfo::Kind(kind) = info {
                        link.kind = Some(kind.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    link
}

fn route_from_message(message: &RouteMessage) -> Option<Route> {
    let mut table = u32::from(message.header.table);
    let mut route = Route {
        dst: Ipv4Addr::UNSPECIFIED,
        prefix: message.header.destination_prefix_length,
        gateway: None,
        oif: None,
        scope: message.header.scope,
        kind: message.header.kind,
    };
    for attribute in &message.attributes {
        match attribute {
            RouteAttribute::Destination(RouteAddress::Inet(dst)) => route.dst = *dst,
            RouteAttribute::Gateway(RouteAddress::Inet(gateway)) => route.gateway = Some(*gateway),
            RouteAttribute::Oif(oif) => route.oif = Some(*oif),
            RouteAttribute::Table(id) => table = *id,
            _ => {}
        }
    }
    (table == u32::from(RouteHeader::RT_TABLE_MAIN)).then_some(route)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_formats_as_colon_hex() {
        assert_eq!(Mac([0x02, 0xab, 0, 1, 0x10, 0xff]).to_string(), "02:ab:00:01:10:ff");
    }

    #[test]
    fn not_found_errors_are_recognised() {
        let error = NetlinkError::Kernel { op: "delete".into(), source: io::Error::from_raw_os_error(ENODEV) };
        assert!(error.is_not_found());
        let error = NetlinkError::Kernel { op: "create".into(), source: io::Error::from_raw_os_error(17) };
        assert!(!error.is_not_found());
    }
}
