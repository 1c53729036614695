//! Map key and value types shared by the eBPF programs and the node agent's datapath module.
//!
//! Every type is `repr(C)` with explicit padding (the kernel compares keys byte by byte, so
//! padding must be zero and visible) and names the byte order of each field. "Network order"
//! fields hold the bytes as they appear on the wire, read as a native integer, which is how the
//! kernel hands them to the programs (`bpf_sock_addr.user_ip4`, `user_port`); the constructors
//! and accessors below convert from and to `core::net` types so that neither side does it by
//! hand. With the `user` feature every type is `aya::Pod`.
//!
//! Map and program names are constants here so that the programs (`ebpf/programs`) and the
//! loader (`node-agent/src/datapath`) cannot drift apart; the names are the Rust statics' names.
#![cfg_attr(not(test), no_std)]

use core::net::{Ipv4Addr, SocketAddrV4};

/// `cgroup/connect4`: rewrites a service address to a backend on `connect()` (TCP and UDP).
pub const PROG_CONNECT4: &str = "connect4";
/// `cgroup/sendmsg4`: the same for unconnected UDP `sendto()`/`sendmsg()`.
pub const PROG_SENDMSG4: &str = "sendmsg4";
/// `cgroup/recvmsg4`: shows the service address as the source of UDP replies.
pub const PROG_RECVMSG4: &str = "recvmsg4";
/// `cgroup/getpeername4`: shows the service address as the peer of a connected socket.
pub const PROG_GETPEERNAME4: &str = "getpeername4";
/// Every socket program, in the order the datapath attaches them.
pub const SOCKET_PROGRAMS: [&str; 4] = [PROG_CONNECT4, PROG_SENDMSG4, PROG_RECVMSG4, PROG_GETPEERNAME4];
/// TC classifier for the ingress of pod host-side veths and of the node interface: per-packet
/// DNAT of service traffic to a backend ([`CT`]) and reverse NAT of the backends' replies
/// ([`CT_REV`]), in one program.
pub const PROG_TC_NAT: &str = "tc_nat";
/// XDP program for the node's external interface: the NodePort fast path. A packet to a service
/// frontend whose backend is on this node (inside [`LOCAL_CIDRS`]) is translated as `tc_nat`
/// would (same [`CT`]/[`CT_REV`] entries) and passed up; one whose backend is on another node is
/// translated with SNAT as well and forwarded from XDP; everything else passes unchanged.
pub const PROG_XDP_NODEPORT: &str = "xdp_nodeport";

/// Hash map [`ServiceKey`] → [`ServiceValue`].
pub const SERVICES: &str = "SERVICES";
/// Hash map [`BackendKey`] → [`Backend`]: the backends of each service in dense slots `0..count`.
pub const BACKENDS: &str = "BACKENDS";
/// LRU hash map [`SockRevNatKey`] → [`ServiceAddr`]: which service a socket's backend stands for.
pub const SOCK_REV_NAT: &str = "SOCK_REV_NAT";
/// Per-CPU array of `u64` indexed by [`Counter`].
pub const COUNTERS: &str = "COUNTERS";
/// LRU hash map [`CtKey`] → [`CtEntry`]: the backend each client flow to a service was sent to,
/// keyed by the flow as the client sent it.
pub const CT: &str = "CT";
/// LRU hash map [`CtKey`] → [`CtRevEntry`]: the service a backend's reply must appear to come
/// from (and, for a SNAT'd flow, the client it must go back to), keyed by the reply as the
/// backend sends it.
pub const CT_REV: &str = "CT_REV";
/// Array of [`LocalCidr`], [`LOCAL_CIDRS_MAX_ENTRIES`] slots: the pod CIDRs of this node. A
/// backend inside one of them is local (reachable through a pod veth here), which is what
/// `xdp_nodeport` needs to know before it translates a packet itself; a client inside one is a
/// local pod. Both programs SNAT a new flow only when neither its client nor its backend is local
/// (see [`CtEntry::snat_addr`]), and only while at least one slot is in use.
pub const LOCAL_CIDRS: &str = "LOCAL_CIDRS";
/// Array of one `u32` (network order): the address SNAT'd flows get as their source, this node's
/// own (written by the datapath). 0, the initial value, means "the address the client reached"
/// (the packet's original destination).
pub const SNAT_ADDR: &str = "SNAT_ADDR";
/// LRU hash map [`AffinityKey`] → [`AffinityEntry`]: session affinity (`sessionAffinity:
/// ClientIP`), the backend each client last reached through each service and when.
pub const AFFINITY: &str = "AFFINITY";
/// Hash map [`MaglevKey`] → [`Backend`]: the Maglev lookup table of each service frontend with
/// [`SERVICE_F_MAGLEV`], [`MAGLEV_TABLE_SIZE`] entries per service. A new `tc_nat` or
/// `xdp_nodeport` flow to such a service goes to the entry at [`maglev_flow_hash`] modulo the
/// table size, so every node (and this node after losing its conntrack) picks the same backend
/// for the same flow. The entries hold the backend itself, not a [`BACKENDS`] slot: the slot
/// layout is per node (it depends on the order of updates), the table is not.
pub const MAGLEV: &str = "MAGLEV";
/// Every map the datapath owns (and pins, when asked).
pub const MAPS: [&str; 10] =
    [SERVICES, BACKENDS, SOCK_REV_NAT, COUNTERS, CT, CT_REV, LOCAL_CIDRS, SNAT_ADDR, AFFINITY, MAGLEV];

pub const SERVICES_MAX_ENTRIES: u32 = 65_536;
pub const BACKENDS_MAX_ENTRIES: u32 = 262_144;
/// One entry per socket that reached a backend; LRU because sockets close without telling us.
pub const SOCK_REV_NAT_MAX_ENTRIES: u32 = 131_072;
/// Flows translated by `tc_nat`; LRU because flows end without telling us.
pub const CT_MAX_ENTRIES: u32 = 131_072;
/// [`CtEntry::seen`] is the monotonic clock in nanoseconds shifted right by this: ticks of
/// 1.07 s, so a `u32` lasts 146 years of uptime.
pub const CT_TICK_SHIFT: u32 = 30;
/// [`CtEntry::flags`]: a FIN or a reset of the flow was seen.
pub const CT_CLOSING: u8 = 1;
/// Idle timeout of an open TCP flow (24 h, what kube-proxy gives netfilter), in ticks.
pub const CT_TCP_TIMEOUT: u32 = ct_ticks(86_400);
/// Idle timeout of a closing TCP flow and of a UDP flow (2 min), in ticks.
pub const CT_SHORT_TIMEOUT: u32 = ct_ticks(120);

/// `secs` seconds in [`CtEntry::seen`] ticks, rounded up.
pub const fn ct_ticks(secs: u32) -> u32 {
    ((secs as u64 * 1_000_000_000).div_ceil(1 << CT_TICK_SHIFT)) as u32
}
/// One reverse entry per [`CT`] entry.
pub const CT_REV_MAX_ENTRIES: u32 = CT_MAX_ENTRIES;
/// Pod CIDRs a node can have (one IPv4 `podCIDR` today; room for more).
pub const LOCAL_CIDRS_MAX_ENTRIES: u32 = 4;
/// The source ports SNAT'd flows get, host order: above Linux's default ephemeral range
/// (`net.ipv4.ip_local_port_range` 32768–60999), so that they do not collide with the node's own
/// connections from the same address.
pub const SNAT_PORT_MIN: u16 = 61_000;
pub const SNAT_PORT_MAX: u16 = 65_535;
/// How many ports a new SNAT'd flow tries, from one picked by hashing the client's address and
/// port, before it is dropped ([`Counter::SnatPortsExhausted`]). Bounded so the programs stay
/// small for the verifier; with free ports around, the first try almost always wins.
pub const SNAT_PORT_PROBES: u16 = 8;
/// One entry per (client, service with affinity) pair; LRU because clients go away silently.
pub const AFFINITY_MAX_ENTRIES: u32 = 131_072;
/// How many slots a program searches for a client's affinity backend that moved to another slot
/// (the datapath moves the tail backend into the slot of a removed one); beyond that the client
/// gets a fresh pick.
pub const AFFINITY_SCAN_SLOTS: u32 = 64;

/// Entries of one service's Maglev table (the paper's M): a prime, so that every skip in
/// `1..M` is coprime with it and each backend's permutation visits every entry. About 100 times
/// the number of backends keeps each backend's share within about 1 % of even (the Maglev paper);
/// a service with more backends than entries leaves some without any.
pub const MAGLEV_TABLE_SIZE: u32 = 1021;
/// Service frontends that can have a Maglev table at once; the datapath programs further ones
/// without the flag (random choice) and warns.
pub const MAGLEV_MAX_SERVICES: u32 = 1024;
/// [`MAGLEV`] holds [`MAGLEV_TABLE_SIZE`] entries per Maglev service. The map is not
/// preallocated (`BPF_F_NO_PREALLOC`), so entries take memory only once written; the kernel
/// still allocates its hash buckets up front (about 16 bytes for each of the next power of two
/// above this, 16 MiB).
pub const MAGLEV_MAX_ENTRIES: u32 = MAGLEV_MAX_SERVICES * MAGLEV_TABLE_SIZE;

/// [`ServiceValue::flags`]: new flows of external traffic (`tc_nat`, `xdp_nodeport`) pick their
/// backend from the service's [`MAGLEV`] table instead of at random. The socket programs ignore
/// it: a local client's connection has no conntrack entry to lose, so random choice is kept.
pub const SERVICE_F_MAGLEV: u32 = 1;

/// The hash of a new flow that indexes a [`MAGLEV`] table: a fixed function of the client's
/// address and port, the destination port and the protocol (all as the packet carries them,
/// network order), so it does not depend on the CPU, the time or the node. The destination
/// address is left out on purpose: a NodePort flow to another node's address (the client's load
/// balancer moved it) then still reaches the same backend, since every frontend of a service
/// has the same table. Each step is the 32-bit finaliser of MurmurHash3 (`fmix32`) over the
/// running value xor the next word.
#[inline(always)]
pub const fn maglev_flow_hash(saddr: u32, sport: u16, dport: u16, proto: u8) -> u32 {
    const SEED: u32 = 0x4b65_656c; // "Keel"
    let mut hash = fmix32(SEED ^ u32::from_be(saddr));
    hash = fmix32(hash ^ (((u16::from_be(sport) as u32) << 16) | u16::from_be(dport) as u32));
    fmix32(hash ^ proto as u32)
}

/// MurmurHash3's 32-bit finaliser: every input bit affects every output bit.
#[inline(always)]
const fn fmix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// `IPPROTO_TCP`, as in `bpf_sock_addr.protocol`.
pub const IPPROTO_TCP: u8 = 6;
/// `IPPROTO_UDP`, as in `bpf_sock_addr.protocol`.
pub const IPPROTO_UDP: u8 = 17;

/// A service frontend: ClusterIP, port and protocol.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    /// Network order.
    pub vip: u32,
    /// Network order.
    pub port: u16,
    /// `IPPROTO_TCP` or `IPPROTO_UDP`.
    pub proto: u8,
    pub _pad: u8,
}

impl ServiceKey {
    pub const fn new(vip: Ipv4Addr, port: u16, proto: u8) -> Self {
        Self { vip: u32::from_ne_bytes(vip.octets()), port: port.to_be(), proto, _pad: 0 }
    }

    pub const fn vip(&self) -> Ipv4Addr {
        let [a, b, c, d] = self.vip.to_ne_bytes();
        Ipv4Addr::new(a, b, c, d)
    }

    /// Host order.
    pub const fn port(&self) -> u16 {
        u16::from_be(self.port)
    }
}

/// What a service frontend leads to: the id that keys its backends, how many slots are live, its
/// session affinity and its flags.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ServiceValue {
    /// Host order; assigned by the datapath, unique among live services.
    pub id: u32,
    /// Host order; backends live in slots `0..count`. Zero means "no endpoints": reject.
    pub count: u32,
    /// Host order, seconds: session affinity `ClientIP` with this timeout (see [`AFFINITY`]);
    /// zero means no affinity.
    pub affinity_timeout: u32,
    /// Host order: [`SERVICE_F_MAGLEV`]; other bits are zero.
    pub flags: u32,
}

impl ServiceValue {
    /// Whether new external flows use the service's [`MAGLEV`] table.
    #[inline(always)]
    pub const fn maglev(&self) -> bool {
        self.flags & SERVICE_F_MAGLEV != 0
    }
}

/// One entry of a service's [`MAGLEV`] table.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MaglevKey {
    /// Host order: [`ServiceValue::id`].
    pub service: u32,
    /// Host order, `0..MAGLEV_TABLE_SIZE`.
    pub index: u32,
}

/// One backend slot of one service.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendKey {
    /// Host order: [`ServiceValue::id`].
    pub service: u32,
    /// Host order, `0..ServiceValue::count`.
    pub slot: u32,
}

/// A backend address.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Backend {
    /// Network order.
    pub addr: u32,
    /// Network order.
    pub port: u16,
    pub _pad: u16,
}

impl Backend {
    pub const fn new(addr: SocketAddrV4) -> Self {
        Self { addr: u32::from_ne_bytes(addr.ip().octets()), port: addr.port().to_be(), _pad: 0 }
    }

    pub const fn socket_addr(&self) -> SocketAddrV4 {
        let [a, b, c, d] = self.addr.to_ne_bytes();
        SocketAddrV4::new(Ipv4Addr::new(a, b, c, d), u16::from_be(self.port))
    }
}

/// Key of the reverse translation: a socket and the backend it was sent to.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SockRevNatKey {
    /// Host order: `bpf_get_socket_cookie`.
    pub cookie: u64,
    /// Network order: the backend address.
    pub addr: u32,
    /// Network order: the backend port.
    pub port: u16,
    pub _pad: u16,
}

/// The service address an application asked for, restored for `getpeername`/`recvmsg`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ServiceAddr {
    /// Network order.
    pub vip: u32,
    /// Network order.
    pub port: u16,
    pub _pad: u16,
}

impl ServiceAddr {
    pub const fn socket_addr(&self) -> SocketAddrV4 {
        let [a, b, c, d] = self.vip.to_ne_bytes();
        SocketAddrV4::new(Ipv4Addr::new(a, b, c, d), u16::from_be(self.port))
    }
}

/// A TCP or UDP flow's 5-tuple in one direction, as the packets carry it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CtKey {
    /// Network order: the packet's source address.
    pub saddr: u32,
    /// Network order: the packet's destination address.
    pub daddr: u32,
    /// Network order.
    pub sport: u16,
    /// Network order.
    pub dport: u16,
    /// `IPPROTO_TCP` or `IPPROTO_UDP`.
    pub proto: u8,
    pub _pad: [u8; 3],
}

impl CtKey {
    pub const fn new(source: SocketAddrV4, destination: SocketAddrV4, proto: u8) -> Self {
        Self {
            saddr: u32::from_ne_bytes(source.ip().octets()),
            daddr: u32::from_ne_bytes(destination.ip().octets()),
            sport: source.port().to_be(),
            dport: destination.port().to_be(),
            proto,
            _pad: [0; 3],
        }
    }

    pub const fn source(&self) -> SocketAddrV4 {
        let [a, b, c, d] = self.saddr.to_ne_bytes();
        SocketAddrV4::new(Ipv4Addr::new(a, b, c, d), u16::from_be(self.sport))
    }

    pub const fn destination(&self) -> SocketAddrV4 {
        let [a, b, c, d] = self.daddr.to_ne_bytes();
        SocketAddrV4::new(Ipv4Addr::new(a, b, c, d), u16::from_be(self.dport))
    }
}

/// Where `tc_nat` sent a client flow: the backend, the service frontend it stands for and, when
/// the flow is SNAT'd, the source it was given.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CtEntry {
    /// Network order: the backend address.
    pub backend: u32,
    /// Network order: the service's ClusterIP.
    pub vip: u32,
    /// Network order.
    pub backend_port: u16,
    /// Network order.
    pub vip_port: u16,
    /// Network order: the source address the flow's packets get on their way to the backend, or
    /// 0 when the client's own is kept. A flow is SNAT'd when neither its client nor its backend
    /// is local ([`LOCAL_CIDRS`]): the backend's node would otherwise send the replies straight to
    /// the client, bypassing this node and its reverse NAT.
    pub snat_addr: u32,
    /// Network order: the source port with [`Self::snat_addr`] (0 when not SNAT'd).
    pub snat_port: u16,
    /// [`CT_CLOSING`] once a FIN or a reset passed in either direction.
    pub flags: u8,
    pub _pad: u8,
    /// When a packet of the flow last passed, in [`ct_ticks`] units of the monotonic clock
    /// (`bpf_ktime_get_ns() >> CT_TICK_SHIFT`): an entry idle for longer than its timeout
    /// ([`CtEntry::timeout`]) is stale, and the flow's next packet starts a new one.
    pub seen: u32,
}

impl CtEntry {
    pub const fn backend(&self) -> SocketAddrV4 {
        let [a, b, c, d] = self.backend.to_ne_bytes();
        SocketAddrV4::new(Ipv4Addr::new(a, b, c, d), u16::from_be(self.backend_port))
    }

    pub const fn service(&self) -> SocketAddrV4 {
        let [a, b, c, d] = self.vip.to_ne_bytes();
        SocketAddrV4::new(Ipv4Addr::new(a, b, c, d), u16::from_be(self.vip_port))
    }

    /// Whether a FIN or a reset of the flow was seen.
    pub const fn closing(&self) -> bool {
        self.flags & CT_CLOSING != 0
    }

    /// How long (in ticks) the entry lives without traffic: TCP 24 h, or 2 min once closing
    /// (netfilter's TIME_WAIT); UDP 2 min (netfilter's timeout for UDP streams).
    pub const fn timeout(&self, proto: u8) -> u32 {
        if proto == IPPROTO_TCP && !self.closing() { CT_TCP_TIMEOUT } else { CT_SHORT_TIMEOUT }
    }

    /// The source the flow's packets are given, when it is SNAT'd.
    pub const fn snat(&self) -> Option<SocketAddrV4> {
        if self.snat_port == 0 {
            return None;
        }
        let [a, b, c, d] = self.snat_addr.to_ne_bytes();
        Some(SocketAddrV4::new(Ipv4Addr::new(a, b, c, d), u16::from_be(self.snat_port)))
    }
}

/// What a backend's reply must look like to its client: the service it must come from and, for a
/// SNAT'd flow, the client it must go to (its destination is then this node's SNAT address).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CtRevEntry {
    /// Network order: the service's ClusterIP (or node address, for a NodePort).
    pub vip: u32,
    /// Network order: the client's address, or 0 when the flow is not SNAT'd (the reply already
    /// goes to the client).
    pub client: u32,
    /// Network order.
    pub port: u16,
    /// Network order: the client's port (0 when not SNAT'd).
    pub client_port: u16,
}

impl CtRevEntry {
    pub const fn service(&self) -> SocketAddrV4 {
        let [a, b, c, d] = self.vip.to_ne_bytes();
        SocketAddrV4::new(Ipv4Addr::new(a, b, c, d), u16::from_be(self.port))
    }

    /// The client of a SNAT'd flow.
    pub const fn client(&self) -> Option<SocketAddrV4> {
        if self.client == 0 {
            return None;
        }
        let [a, b, c, d] = self.client.to_ne_bytes();
        Some(SocketAddrV4::new(Ipv4Addr::new(a, b, c, d), u16::from_be(self.client_port)))
    }
}

/// One local pod CIDR; a slot with `prefix_len` 0 is unused (a `/0` is never a pod CIDR).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct LocalCidr {
    /// Network order: the network address.
    pub addr: u32,
    /// 1 to 32; 0 marks an unused slot.
    pub prefix_len: u8,
    pub _pad: [u8; 3],
}

impl LocalCidr {
    /// `addr/prefix_len`, host bits cleared; `prefix_len` above 32 is taken as 32.
    pub const fn new(addr: Ipv4Addr, prefix_len: u8) -> Self {
        let prefix_len = if prefix_len > 32 { 32 } else { prefix_len };
        let network = u32::from_be_bytes(addr.octets()) & Self::mask(prefix_len);
        Self { addr: u32::from_ne_bytes(network.to_be_bytes()), prefix_len, _pad: [0; 3] }
    }

    pub const fn network(&self) -> Ipv4Addr {
        let [a, b, c, d] = self.addr.to_ne_bytes();
        Ipv4Addr::new(a, b, c, d)
    }

    /// Host order.
    const fn mask(prefix_len: u8) -> u32 {
        match prefix_len {
            0 => 0,
            32.. => u32::MAX,
            len => !(u32::MAX >> len),
        }
    }

    /// Whether `addr` (network order, as packets carry it) lies inside; never for an unused slot.
    #[inline(always)]
    pub const fn contains(&self, addr: u32) -> bool {
        let mask = Self::mask(self.prefix_len);
        self.prefix_len != 0 && u32::from_be(addr) & mask == u32::from_be(self.addr) & mask
    }
}

/// Whose backend an [`AffinityKey`] remembers: [`AffinityKey::client`] is a network-namespace
/// cookie (socket programs, which run before the source address is chosen).
pub const AFFINITY_NETNS: u8 = 1;
/// [`AffinityKey::client`] is a client's IPv4 source address (`tc_nat`).
pub const AFFINITY_IPV4: u8 = 2;

/// A client of one service with session affinity.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AffinityKey {
    /// Host order: a `bpf_get_netns_cookie` value ([`AFFINITY_NETNS`]), or an IPv4 address in
    /// network order widened to 64 bits ([`AFFINITY_IPV4`]).
    pub client: u64,
    /// Host order: [`ServiceValue::id`].
    pub service: u32,
    /// [`AFFINITY_NETNS`] or [`AFFINITY_IPV4`], so that the two kinds of client never collide.
    pub kind: u8,
    pub _pad: [u8; 3],
}

impl AffinityKey {
    /// The key of a client known by its IPv4 source address.
    pub const fn ipv4(client: Ipv4Addr, service: u32) -> Self {
        Self { client: u32::from_ne_bytes(client.octets()) as u64, service, kind: AFFINITY_IPV4, _pad: [0; 3] }
    }

    /// The client's address, for [`AFFINITY_IPV4`] keys.
    pub const fn ipv4_client(&self) -> Option<Ipv4Addr> {
        if self.kind != AFFINITY_IPV4 {
            return None;
        }
        let [a, b, c, d] = (self.client as u32).to_ne_bytes();
        Some(Ipv4Addr::new(a, b, c, d))
    }
}

/// The backend a client was last sent to, the slot it had then, and when.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AffinityEntry {
    /// Host order: `bpf_ktime_get_ns` at the last connection or flow that used it.
    pub last_used: u64,
    /// Network order: the backend address.
    pub addr: u32,
    /// Network order: the backend port.
    pub port: u16,
    /// Host order: the backend's slot when last used (a hint; the address is what counts).
    pub slot: u16,
}

impl AffinityEntry {
    pub const fn backend(&self) -> SocketAddrV4 {
        let [a, b, c, d] = self.addr.to_ne_bytes();
        SocketAddrV4::new(Ipv4Addr::new(a, b, c, d), u16::from_be(self.port))
    }
}

/// Indices of the per-CPU [`COUNTERS`] array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Counter {
    /// `connect()` to a service rewritten to a backend.
    Connect = 0,
    /// Unconnected UDP send to a service rewritten to a backend.
    Sendmsg = 1,
    /// UDP reply source restored to the service address.
    Recvmsg = 2,
    /// `getpeername()` restored to the service address.
    Getpeername = 3,
    /// Connect or send to a service without backends, rejected.
    NoBackend = 4,
    /// The reverse entry could not be written; `getpeername`/`recvmsg` will show the backend.
    RevNatUpdateFailed = 5,
    /// `tc_nat`: a packet to a service rewritten to a backend.
    TcDnat = 6,
    /// `tc_nat`: a backend's reply rewritten to come from the service.
    TcRevNat = 7,
    /// `tc_nat`: a packet to a service without backends, dropped.
    TcNoBackend = 8,
    /// `tc_nat`: a TCP or UDP IPv4 fragment, passed unchanged (no ports to translate by).
    TcFragment = 9,
    /// `tc_nat`: a packet too short for its headers or with a bad IPv4 header, passed unchanged.
    TcMalformed = 10,
    /// `tc_nat`: a conntrack or reverse entry could not be written; the packet was still
    /// translated, but later packets of the flow may pick another backend or miss reverse NAT.
    TcCtUpdateFailed = 11,
    /// `tc_nat`: a rewrite helper failed half-way; the packet was dropped.
    TcRewriteFailed = 12,
    /// `xdp_nodeport`: a packet to a service rewritten to a local backend and passed up.
    XdpDnat = 13,
    /// `xdp_nodeport`: a packet to a service whose backend is not local and whose flow is not
    /// SNAT'd (a local pod's, or no local CIDRs set), passed unchanged (TC translates it).
    XdpNotLocal = 14,
    /// `xdp_nodeport`: a packet to a service without backends (e.g. `externalTrafficPolicy:
    /// Local` with no endpoint here), dropped.
    XdpNoBackend = 15,
    /// `xdp_nodeport`: a TCP or UDP IPv4 fragment, passed unchanged.
    XdpFragment = 16,
    /// `xdp_nodeport`: a packet too short for its headers or with a bad IPv4 header, passed
    /// unchanged.
    XdpMalformed = 17,
    /// `xdp_nodeport`: a conntrack or reverse entry could not be written; the packet was still
    /// translated.
    XdpCtUpdateFailed = 18,
    /// A connect, send or new `tc_nat` flow to a service with session affinity went to the
    /// client's remembered backend.
    AffinityHit = 19,
    /// An [`AFFINITY`] entry could not be written; the client's next connection may pick anew.
    AffinityUpdateFailed = 20,
    /// A new `tc_nat` or `xdp_nodeport` flow to a service with [`SERVICE_F_MAGLEV`] got its
    /// backend from the [`MAGLEV`] table. Counted per lookup: a flow that `xdp_nodeport` leaves
    /// to `tc_nat` (remote backend, not SNAT'd) counts twice, with the same backend both times.
    MaglevPick = 21,
    /// A service has [`SERVICE_F_MAGLEV`] but its table lacked the flow's entry (an update in
    /// progress): the backend was picked at random.
    MaglevMiss = 22,
    /// `tc_nat`: a packet to a service rewritten to a backend on another node and given this
    /// node's SNAT address and port as its source (also counted as [`Counter::TcDnat`]).
    TcSnat = 23,
    /// `tc_nat`: a SNAT'd packet (either direction) for which the FIB had no usable route, so
    /// it was handed to the kernel's stack after the rewrite (which drops it as a martian unless
    /// the ingress interface has `accept_local`).
    TcFibMiss = 24,
    /// `tc_nat` or `xdp_nodeport`: a new flow that needed SNAT found no free port among the ones
    /// it may try ([`SNAT_PORT_PROBES`]); dropped.
    SnatPortsExhausted = 25,
    /// `xdp_nodeport`: a packet to a service rewritten (DNAT and SNAT) to a backend on another
    /// node and sent on from XDP (`XDP_TX` or redirect).
    XdpForward = 26,
    /// `xdp_nodeport`: a packet that needs SNAT to a backend on another node, for which the FIB
    /// lookup did not give an interface and a neighbour; passed unchanged for `tc_nat`.
    XdpFibMiss = 27,
}

impl Counter {
    pub const ALL: [Self; 28] = [
        Self::Connect,
        Self::Sendmsg,
        Self::Recvmsg,
        Self::Getpeername,
        Self::NoBackend,
        Self::RevNatUpdateFailed,
        Self::TcDnat,
        Self::TcRevNat,
        Self::TcNoBackend,
        Self::TcFragment,
        Self::TcMalformed,
        Self::TcCtUpdateFailed,
        Self::TcRewriteFailed,
        Self::XdpDnat,
        Self::XdpNotLocal,
        Self::XdpNoBackend,
        Self::XdpFragment,
        Self::XdpMalformed,
        Self::XdpCtUpdateFailed,
        Self::AffinityHit,
        Self::AffinityUpdateFailed,
        Self::MaglevPick,
        Self::MaglevMiss,
        Self::TcSnat,
        Self::TcFibMiss,
        Self::SnatPortsExhausted,
        Self::XdpForward,
        Self::XdpFibMiss,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Sendmsg => "sendmsg",
            Self::Recvmsg => "recvmsg",
            Self::Getpeername => "getpeername",
            Self::NoBackend => "no_backend",
            Self::RevNatUpdateFailed => "rev_nat_update_failed",
            Self::TcDnat => "tc_dnat",
            Self::TcRevNat => "tc_rev_nat",
            Self::TcNoBackend => "tc_no_backend",
            Self::TcFragment => "tc_fragment",
            Self::TcMalformed => "tc_malformed",
            Self::TcCtUpdateFailed => "tc_ct_update_failed",
            Self::TcRewriteFailed => "tc_rewrite_failed",
            Self::XdpDnat => "xdp_dnat",
            Self::XdpNotLocal => "xdp_not_local",
            Self::XdpNoBackend => "xdp_no_backend",
            Self::XdpFragment => "xdp_fragment",
            Self::XdpMalformed => "xdp_malformed",
            Self::XdpCtUpdateFailed => "xdp_ct_update_failed",
            Self::AffinityHit => "affinity_hit",
            Self::AffinityUpdateFailed => "affinity_update_failed",
            Self::MaglevPick => "maglev_pick",
            Self::MaglevMiss => "maglev_miss",
            Self::TcSnat => "tc_snat",
            Self::TcFibMiss => "tc_fib_miss",
            Self::SnatPortsExhausted => "snat_ports_exhausted",
            Self::XdpForward => "xdp_forward",
            Self::XdpFibMiss => "xdp_fib_miss",
        }
    }
}

/// Entries of the [`COUNTERS`] array.
pub const COUNTERS_LEN: u32 = Counter::ALL.len() as u32;

const _: () = assert!(core::mem::size_of::<ServiceKey>() == 8);
const _: () = assert!(core::mem::size_of::<ServiceValue>() == 16);
const _: () = assert!(core::mem::size_of::<BackendKey>() == 8);
const _: () = assert!(core::mem::size_of::<Backend>() == 8);
const _: () = assert!(core::mem::size_of::<SockRevNatKey>() == 16);
const _: () = assert!(core::mem::size_of::<ServiceAddr>() == 8);
const _: () = assert!(core::mem::size_of::<CtKey>() == 16);
const _: () = assert!(core::mem::size_of::<CtEntry>() == 24);
const _: () = assert!(core::mem::size_of::<CtRevEntry>() == 12);
const _: () = assert!(core::mem::size_of::<LocalCidr>() == 8);
const _: () = assert!(core::mem::size_of::<AffinityKey>() == 16);
const _: () = assert!(core::mem::size_of::<AffinityEntry>() == 16);
const _: () = assert!(core::mem::size_of::<MaglevKey>() == 8);

// SAFETY: each type is `repr(C)`, `Copy`, made of integers only, and its padding is an explicit
// field, so every byte is initialised and any bit pattern is a valid value.
#[cfg(feature = "user")]
unsafe impl aya::Pod for ServiceKey {}
// SAFETY: as above.
#[cfg(feature = "user")]
unsafe impl aya::Pod for ServiceValue {}
// SAFETY: as above.
#[cfg(feature = "user")]
unsafe impl aya::Pod for BackendKey {}
// SAFETY: as above.
#[cfg(feature = "user")]
unsafe impl aya::Pod for Backend {}
// SAFETY: as above.
#[cfg(feature = "user")]
unsafe impl aya::Pod for SockRevNatKey {}
// SAFETY: as above.
#[cfg(feature = "user")]
unsafe impl aya::Pod for ServiceAddr {}
// SAFETY: as above.
#[cfg(feature = "user")]
unsafe impl aya::Pod for CtKey {}
// SAFETY: as above.
#[cfg(feature = "user")]
unsafe impl aya::Pod for CtEntry {}
// SAFETY: as above.
#[cfg(feature = "user")]
unsafe impl aya::Pod for CtRevEntry {}
// SAFETY: as above.
#[cfg(feature = "user")]
unsafe impl aya::Pod for LocalCidr {}
// SAFETY: as above.
#[cfg(feature = "user")]
unsafe impl aya::Pod for AffinityKey {}
// SAFETY: as above.
#[cfg(feature = "user")]
unsafe impl aya::Pod for AffinityEntry {}
// SAFETY: as above.
#[cfg(feature = "user")]
unsafe impl aya::Pod for MaglevKey {}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes of a value as the kernel sees them.
    fn bytes<T: Copy, const N: usize>(value: T) -> [u8; N] {
        assert_eq!(size_of::<T>(), N);
        // SAFETY: `T` is one of this crate's padding-free `repr(C)` integer structs of size `N`.
        unsafe { core::mem::transmute_copy(&value) }
    }

    #[test]
    fn service_key_is_wire_order() {
        let key = ServiceKey::new(Ipv4Addr::new(10, 96, 0, 10), 53, IPPROTO_UDP);
        assert_eq!(bytes::<_, 8>(key), [10, 96, 0, 10, 0, 53, IPPROTO_UDP, 0]);
        assert_eq!(key.vip(), Ipv4Addr::new(10, 96, 0, 10));
        assert_eq!(key.port(), 53);
    }

    #[test]
    fn backend_round_trips_and_is_wire_order() {
        let addr = SocketAddrV4::new(Ipv4Addr::new(10, 244, 1, 7), 8080);
        let backend = Backend::new(addr);
        assert_eq!(bytes::<_, 8>(backend), [10, 244, 1, 7, 0x1f, 0x90, 0, 0]);
        assert_eq!(backend.socket_addr(), addr);
    }

    #[test]
    fn rev_nat_key_layout() {
        let key = SockRevNatKey { cookie: 0x0102_0304_0506_0708, addr: 1, port: 2, _pad: 0 };
        let raw = bytes::<_, 16>(key);
        assert_eq!(&raw[..8], &0x0102_0304_0506_0708u64.to_ne_bytes());
        assert_eq!(&raw[8..12], &1u32.to_ne_bytes());
        assert_eq!(&raw[12..14], &2u16.to_ne_bytes());
    }

    #[test]
    fn counters_are_dense_and_named_uniquely() {
        for (i, counter) in Counter::ALL.iter().enumerate() {
            assert_eq!(*counter as u32, i as u32);
            assert!(Counter::ALL[..i].iter().all(|other| other.name() != counter.name()));
        }
        assert_eq!(COUNTERS_LEN, 28);
    }

    #[test]
    fn ct_key_is_wire_order() {
        let client = SocketAddrV4::new(Ipv4Addr::new(10, 244, 0, 5), 40_000);
        let service = SocketAddrV4::new(Ipv4Addr::new(10, 96, 0, 10), 80);
        let key = CtKey::new(client, service, IPPROTO_TCP);
        assert_eq!(bytes::<_, 16>(key), [10, 244, 0, 5, 10, 96, 0, 10, 0x9c, 0x40, 0, 80, IPPROTO_TCP, 0, 0, 0]);
        assert_eq!((key.source(), key.destination()), (client, service));
    }

    #[test]
    fn ct_entry_layout() {
        let entry = CtEntry {
            backend: 1,
            vip: 2,
            backend_port: 3,
            vip_port: 4,
            snat_addr: 5,
            snat_port: 6,
            flags: CT_CLOSING,
            _pad: 0,
            seen: 7,
        };
        let raw = bytes::<_, 24>(entry);
        assert_eq!(&raw[..4], &1u32.to_ne_bytes());
        assert_eq!(&raw[4..8], &2u32.to_ne_bytes());
        assert_eq!(&raw[8..10], &3u16.to_ne_bytes());
        assert_eq!(&raw[10..12], &4u16.to_ne_bytes());
        assert_eq!(&raw[12..16], &5u32.to_ne_bytes());
        assert_eq!(&raw[16..18], &6u16.to_ne_bytes());
        assert_eq!(&raw[18..20], &[CT_CLOSING, 0]);
        assert_eq!(&raw[20..], &7u32.to_ne_bytes());
        assert_eq!(CtEntry { snat_port: 0, ..entry }.snat(), None, "no port, no SNAT");
        assert!(entry.closing());
        assert_eq!(entry.timeout(IPPROTO_TCP), CT_SHORT_TIMEOUT, "closing TCP");
        assert_eq!(CtEntry { flags: 0, ..entry }.timeout(IPPROTO_TCP), CT_TCP_TIMEOUT);
        assert_eq!(CtEntry { flags: 0, ..entry }.timeout(IPPROTO_UDP), CT_SHORT_TIMEOUT);
    }

    #[test]
    fn conntrack_ticks_are_about_a_second() {
        assert_eq!(ct_ticks(0), 0);
        assert_eq!(ct_ticks(1), 1, "rounded up");
        assert_eq!(ct_ticks(120), 112);
        assert_eq!(ct_ticks(86_400), 80_467);
    }

    #[test]
    fn ct_rev_entry_is_wire_order() {
        let entry = CtRevEntry {
            vip: u32::from_ne_bytes([192, 168, 0, 1]),
            client: u32::from_ne_bytes([203, 0, 113, 7]),
            port: 30_080u16.to_be(),
            client_port: 40_000u16.to_be(),
        };
        assert_eq!(bytes::<_, 12>(entry), [192, 168, 0, 1, 203, 0, 113, 7, 0x75, 0x80, 0x9c, 0x40]);
        assert_eq!(entry.service(), SocketAddrV4::new(Ipv4Addr::new(192, 168, 0, 1), 30_080));
        assert_eq!(entry.client(), Some(SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 7), 40_000)));
        assert_eq!(CtRevEntry { client: 0, client_port: 0, ..entry }.client(), None);
    }

    #[test]
    fn local_cidr_matches_its_network_only() {
        let cidr = LocalCidr::new(Ipv4Addr::new(10, 244, 1, 77), 24);
        assert_eq!(cidr.network(), Ipv4Addr::new(10, 244, 1, 0));
        assert_eq!(bytes::<_, 8>(cidr), [10, 244, 1, 0, 24, 0, 0, 0]);
        let wire = |a: Ipv4Addr| u32::from_ne_bytes(a.octets());
        assert!(cidr.contains(wire(Ipv4Addr::new(10, 244, 1, 2))));
        assert!(cidr.contains(wire(Ipv4Addr::new(10, 244, 1, 255))));
        assert!(!cidr.contains(wire(Ipv4Addr::new(10, 244, 2, 1))));
        assert!(!cidr.contains(wire(Ipv4Addr::new(11, 244, 1, 1))));
        assert!(!LocalCidr::default().contains(wire(Ipv4Addr::new(10, 244, 1, 2))), "unused slot");
        let host = LocalCidr::new(Ipv4Addr::new(10, 244, 1, 2), 40);
        assert_eq!(host.prefix_len, 32);
        assert!(host.contains(wire(Ipv4Addr::new(10, 244, 1, 2))));
        assert!(!host.contains(wire(Ipv4Addr::new(10, 244, 1, 3))));
    }

    #[test]
    fn service_value_and_affinity_layout() {
        let value = ServiceValue { id: 1, count: 2, affinity_timeout: 10_800, flags: SERVICE_F_MAGLEV };
        let raw = bytes::<_, 16>(value);
        assert_eq!(&raw[8..12], &10_800u32.to_ne_bytes());
        assert_eq!(&raw[12..], &1u32.to_ne_bytes());
        assert!(value.maglev());
        let key = AffinityKey::ipv4(Ipv4Addr::new(10, 244, 0, 5), 7);
        let raw = bytes::<_, 16>(key);
        assert_eq!(&raw[..4], &[10, 244, 0, 5], "the address in wire order in the low half");
        assert_eq!(&raw[4..8], &[0; 4]);
        assert_eq!(&raw[8..12], &7u32.to_ne_bytes());
        assert_eq!(&raw[12..], &[AFFINITY_IPV4, 0, 0, 0]);
        assert_eq!(key.ipv4_client(), Some(Ipv4Addr::new(10, 244, 0, 5)));
        let entry = AffinityEntry { last_used: 5, addr: 1, port: 2, slot: 3 };
        let raw = bytes::<_, 16>(entry);
        assert_eq!(&raw[..8], &5u64.to_ne_bytes());
        assert_eq!(&raw[12..14], &2u16.to_ne_bytes());
        assert_eq!(&raw[14..], &3u16.to_ne_bytes());
    }

    #[test]
    fn maglev_flow_hash_is_fixed_and_ignores_the_destination_address() {
        let key = |client: [u8; 4], sport: u16| {
            CtKey::new(
                SocketAddrV4::new(Ipv4Addr::from(client), sport),
                SocketAddrV4::new(Ipv4Addr::new(192, 168, 0, 1), 30_080),
                IPPROTO_TCP,
            )
        };
        let hash = |k: CtKey| maglev_flow_hash(k.saddr, k.sport, k.dport, k.proto);
        let a = key([203, 0, 113, 7], 40_000);
        // Pinned: a change of the function moves every Maglev flow in a mixed-version cluster.
        assert_eq!(hash(a), hash(a));
        assert_eq!(hash(a), MAGLEV_FLOW_HASH_PINNED);
        let mut other_node = a;
        other_node.daddr = u32::from_ne_bytes([192, 168, 0, 2]);
        assert_eq!(hash(other_node), hash(a));
        assert_ne!(hash(key([203, 0, 113, 7], 40_001)), hash(a));
        assert_ne!(hash(key([203, 0, 113, 8], 40_000)), hash(a));
        let mut udp = a;
        udp.proto = IPPROTO_UDP;
        assert_ne!(hash(udp), hash(a));
    }

    /// [`maglev_flow_hash`] of 203.0.113.7:40000 → :30080/TCP.
    const MAGLEV_FLOW_HASH_PINNED: u32 = 241_857_935;

    #[test]
    fn kernel_names_fit() {
        // BPF_OBJ_NAME_LEN is 16 with the terminating NUL.
        for name in MAPS.iter().chain(SOCKET_PROGRAMS.iter()).chain([PROG_TC_NAT, PROG_XDP_NODEPORT].iter()) {
            assert!(name.len() <= 15, "{name}");
        }
    }
}
