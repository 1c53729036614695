//! What `tc_nat` ([`crate::tc`]) and `xdp_nodeport` ([`crate::xdp`]) share: the conntrack maps
//! [`CT`] and [`CT_REV`], this node's pod CIDRs ([`LOCAL_CIDRS`]) and SNAT address
//! ([`SNAT_ADDR`]), header parsing over either context ([`PacketRead`]), and the choice of a
//! flow's backend and of its SNAT port ([`forward_entry`]). Each program keeps only its own
//! rewrite (TC patches the packet through skb helpers, XDP writes it directly), its forwarding
//! and its verdicts.
//!
//! SNAT: a new flow whose client is not a local pod and whose backend is not one either is given
//! this node's address ([`SNAT_ADDR`], else the address the client reached) and a port from
//! [`SNAT_PORT_MIN`]..=[`SNAT_PORT_MAX`] as its source. Without it the backend's node would send
//! the reply straight to the client, which would drop a reply from an address it never talked
//! to. Flows of local pods (their replies come back through their veth) and to local backends
//! (their replies leave through a pod veth here) keep the client's address, as does every flow
//! while no [`LOCAL_CIDRS`] slot is set: then nothing tells a pod from an outside client. The
//! port is reserved by inserting the flow's [`CT_REV`] entry with `BPF_NOEXIST`, so two flows to
//! one backend never share a reply tuple. A SNAT'd packet has a source address of this node
//! while it is still on its way in, which the kernel drops as a martian, so the programs forward
//! it themselves after a FIB lookup ([`fib_lookup`]).

use aya_ebpf::bindings::{
    BPF_F_MARK_MANGLED_0, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS, BPF_NOEXIST, bpf_fib_lookup as FibParams,
};
use aya_ebpf::helpers::bpf_ktime_get_coarse_ns;
use aya_ebpf::macros::map;
use aya_ebpf::maps::{Array, LruHashMap};
use keelson_ebpf_common::{
    AFFINITY_IPV4, CT_CLOSING, CT_MAX_ENTRIES, CT_REV_MAX_ENTRIES, CT_TICK_SHIFT, Counter, CtEntry, CtKey, CtRevEntry,
    IPPROTO_TCP, IPPROTO_UDP, LOCAL_CIDRS_MAX_ENTRIES, LocalCidr, SNAT_PORT_MAX, SNAT_PORT_MIN, SNAT_PORT_PROBES,
    ServiceValue, maglev_flow_hash,
};

use crate::{bump, select_backend};

#[map]
pub(crate) static CT: LruHashMap<CtKey, CtEntry> = LruHashMap::with_max_entries(CT_MAX_ENTRIES, 0);

#[map]
pub(crate) static CT_REV: LruHashMap<CtKey, CtRevEntry> = LruHashMap::with_max_entries(CT_REV_MAX_ENTRIES, 0);

#[map]
static LOCAL_CIDRS: Array<LocalCidr> = Array::with_max_entries(LOCAL_CIDRS_MAX_ENTRIES, 0);

#[map]
static SNAT_ADDR: Array<u32> = Array::with_max_entries(1, 0);

/// How many ports SNAT may use.
const SNAT_PORTS: u32 = (SNAT_PORT_MAX - SNAT_PORT_MIN) as u32 + 1;
/// `AF_INET`, for the FIB lookup and `bpf_redirect_neigh`.
pub(crate) const AF_INET: u8 = 2;

/// Length of an Ethernet header without VLAN tags.
pub(crate) const ETH_HLEN: usize = 14;
/// Offset of the EtherType.
const ETH_TYPE_OFF: usize = 12;
/// `ETH_P_IP`, host order.
const ETH_P_IP: u16 = 0x0800;
/// Offsets of IPv4 header fields in the frame.
pub(crate) const IP_TTL_OFF: usize = ETH_HLEN + 8;
pub(crate) const IP_CSUM_OFF: usize = ETH_HLEN + 10;
pub(crate) const IP_SADDR_OFF: usize = ETH_HLEN + 12;
pub(crate) const IP_DADDR_OFF: usize = ETH_HLEN + 16;
/// IPv4 "more fragments" flag and fragment offset, in the host-order `frag_off` field.
const IP_MF: u16 = 0x2000;
const IP_OFFSET: u16 = 0x1fff;
/// Minimum TCP and UDP header lengths, and where each keeps its checksum.
const TCP_HLEN: usize = 20;
const UDP_HLEN: usize = 8;
const TCP_CSUM_OFF: usize = 16;
const UDP_CSUM_OFF: usize = 6;
/// Offsets of the ports in both L4 headers.
pub(crate) const L4_SPORT_OFF: usize = 0;
pub(crate) const L4_DPORT_OFF: usize = 2;

/// The fixed part of an IPv4 header, fields as on the wire.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct Ipv4Hdr {
    version_ihl: u8,
    pub(crate) tos: u8,
    /// Network order.
    tot_len: u16,
    id: u16,
    /// Network order: flags and fragment offset.
    frag_off: u16,
    pub(crate) ttl: u8,
    pub(crate) proto: u8,
    check: u16,
    /// Network order.
    pub(crate) saddr: u32,
    /// Network order.
    pub(crate) daddr: u32,
}

const _: () = assert!(core::mem::size_of::<Ipv4Hdr>() == 20);

impl Ipv4Hdr {
    /// Host order.
    #[inline(always)]
    pub(crate) fn tot_len(&self) -> u16 {
        u16::from_be(self.tot_len)
    }
}

/// Why a packet leaves untranslated.
pub(crate) enum Skip {
    /// Not IPv4 TCP/UDP, or not a service's or a translated flow's: none of our business.
    NotOurs,
    /// Too short for its headers, or a bad IPv4 header.
    Malformed,
    /// An IPv4 fragment: its ports, if any, cannot be trusted.
    Fragment,
    /// A packet to a service without backends.
    NoBackend,
    /// A helper failed half-way through a rewrite; the packet may be inconsistent.
    RewriteFailed,
    /// The flow's backend is not one this program may translate to (XDP: not on this node).
    NotLocal,
    /// A new flow needed SNAT and none of the ports it may use was free.
    PortsExhausted,
}

/// The parsed headers of a TCP or UDP packet.
pub(crate) struct Packet {
    pub(crate) ip: Ipv4Hdr,
    /// Offset of the L4 header in the frame.
    pub(crate) l4: usize,
    /// Network order.
    pub(crate) sport: u16,
    /// Network order.
    pub(crate) dport: u16,
    /// Offset of the L4 checksum in the frame.
    pub(crate) csum_off: usize,
    /// Extra `bpf_l4_csum_replace` flags: UDP's "0 means no checksum" (non-zero for UDP).
    pub(crate) csum_flags: u64,
    /// TCP's flags byte (0 for UDP).
    pub(crate) tcp_flags: u8,
}

/// TCP's flags.
const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;

impl Packet {
    /// The flow as the packet carries it.
    #[inline(always)]
    pub(crate) fn flow(&self) -> CtKey {
        CtKey {
            saddr: self.ip.saddr,
            daddr: self.ip.daddr,
            sport: self.sport,
            dport: self.dport,
            proto: self.ip.proto,
            _pad: [0; 3],
        }
    }

    /// Whether a checksum field of 0 means "no checksum" (UDP).
    #[inline(always)]
    pub(crate) fn is_udp(&self) -> bool {
        self.ip.proto == IPPROTO_UDP
    }

    /// A TCP reset: the connection is over, in both directions.
    #[inline(always)]
    pub(crate) fn is_reset(&self) -> bool {
        self.tcp_flags & TCP_RST != 0
    }

    /// A TCP FIN or reset: the flow is closing.
    #[inline(always)]
    pub(crate) fn ends_flow(&self) -> bool {
        self.tcp_flags & (TCP_FIN | TCP_RST) != 0
    }

    /// A client's TCP SYN: the first packet of a connection.
    #[inline(always)]
    fn opens_connection(&self) -> bool {
        self.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN
    }

    /// A server's SYN-ACK: the answer to the first packet of a connection.
    #[inline(always)]
    pub(crate) fn accepts_connection(&self) -> bool {
        self.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK
    }

    /// Whether `entry`, found for this packet's flow at `now`, still stands for it: not idle past
    /// its timeout, and not a closing connection whose client tuple a new connection reuses.
    #[inline(always)]
    fn continues(&self, entry: &CtEntry, now: u32) -> bool {
        !(entry.closing() && self.opens_connection()) && now.wrapping_sub(entry.seen) <= entry.timeout(self.ip.proto)
    }
}

/// The conntrack clock: [`CtEntry::seen`] ticks. The coarse clock is plenty for 1 s ticks.
#[inline(always)]
pub(crate) fn ct_now() -> u32 {
    // SAFETY: no preconditions.
    (unsafe { bpf_ktime_get_coarse_ns() } >> CT_TICK_SHIFT) as u32
}

/// Bounds-checked reads from the packet, however the context reaches its bytes.
pub(crate) trait PacketRead {
    /// The `T` at `offset` bytes into the frame; `Err` when it does not lie entirely inside.
    fn read<T: Copy>(&self, offset: usize) -> Result<T, ()>;
}

/// Reads the Ethernet, IPv4 and TCP/UDP headers, checking every length.
#[inline(always)]
pub(crate) fn parse(ctx: &impl PacketRead) -> Result<Packet, Skip> {
    let ether_type: u16 = ctx.read(ETH_TYPE_OFF).map_err(|()| Skip::Malformed)?;
    if u16::from_be(ether_type) != ETH_P_IP {
        return Err(Skip::NotOurs);
    }
    let ip: Ipv4Hdr = ctx.read(ETH_HLEN).map_err(|()| Skip::Malformed)?;
    let ihl = usize::from(ip.version_ihl & 0x0f) * 4;
    if ip.version_ihl >> 4 != 4 || ihl < core::mem::size_of::<Ipv4Hdr>() {
        return Err(Skip::Malformed);
    }
    let (min_l4, csum_off, csum_flags) = match ip.proto {
        IPPROTO_TCP => (TCP_HLEN, TCP_CSUM_OFF, 0),
        IPPROTO_UDP => (UDP_HLEN, UDP_CSUM_OFF, u64::from(BPF_F_MARK_MANGLED_0)),
        _ => return Err(Skip::NotOurs),
    };
    if u16::from_be(ip.frag_off) & (IP_MF | IP_OFFSET) != 0 {
        return Err(Skip::Fragment);
    }
    // The L4 header must lie inside the datagram, not in the frame's padding. A total length of
    // 0 is how IPv4 BIG TCP marks GSO packets over 64 KiB; their length is the buffer's.
    let tot_len = usize::from(u16::from_be(ip.tot_len));
    if tot_len != 0 && tot_len < ihl + min_l4 {
        return Err(Skip::Malformed);
    }
    let l4 = ETH_HLEN + ihl;
    // Reading the whole minimal header proves it is in the buffer.
    let (sport, dport, tcp_flags) = if ip.proto == IPPROTO_TCP {
        let tcp: [u16; TCP_HLEN / 2] = ctx.read(l4).map_err(|()| Skip::Malformed)?;
        // Bytes 12 and 13: data offset, then the flags.
        (tcp[0], tcp[1], (u16::from_be(tcp[6]) & 0xff) as u8)
    } else {
        let udp: [u16; UDP_HLEN / 2] = ctx.read(l4).map_err(|()| Skip::Malformed)?;
        (udp[0], udp[1], 0)
    };
    Ok(Packet { ip, l4, sport, dport, csum_off: l4 + csum_off, csum_flags, tcp_flags })
}

/// The conntrack entry of a packet to a service: the flow's own, or a new one with a backend
/// from `select_backend` (the client's remembered one under session affinity, else the flow's
/// Maglev entry for a service with a Maglev table, else at random) and, when the flow needs it,
/// a SNAT address and port (see the module docs); written to [`CT`] and [`CT_REV`]. `accept` says
/// whether this program may send the flow to that backend (it sees a new entry before its SNAT
/// port is chosen: `snat_addr` is set, `snat_port` still 0); when it may not, nothing is written
/// and the packet is [`Skip::NotLocal`]. `ct_failed` counts entries that could not be written.
#[inline(always)]
pub(crate) fn forward_entry(
    packet: &Packet,
    service: ServiceValue,
    accept: impl Fn(&CtEntry) -> bool,
    ct_failed: Counter,
) -> Result<CtEntry, Skip> {
    if service.count == 0 {
        return Err(Skip::NoBackend);
    }
    let ip = &packet.ip;
    let key = packet.flow();
    let now = ct_now();
    let closing = if packet.ends_flow() { CT_CLOSING } else { 0 };
    let current = match CT.get_ptr_mut(key) {
        Some(ptr) => {
            // SAFETY: the pointer is the map value's, valid during the program's run; a
            // concurrent write by another CPU can only make the copy stale.
            let mut entry = unsafe { *ptr };
            if packet.continues(&entry, now) {
                if entry.seen != now || entry.flags & closing != closing {
                    entry.seen = now;
                    entry.flags |= closing;
                    // SAFETY: as above; plain stores into the value (at most one per tick and
                    // flow, so the cache line is not written on every packet).
                    unsafe {
                        (*ptr).seen = now;
                        (*ptr).flags = entry.flags;
                    }
                }
                Some(entry)
            } else {
                // Idle too long, or a closed connection's tuple reused: forget it (and free its
                // reply tuple, a reserved SNAT port maybe) and start over.
                forget(&key, &reply_flow(packet, &entry));
                None
            }
        }
        None => None,
    };
    // `created`: this packet wrote the flow's entry, so its reverse entry is known to be missing
    // (or a SNAT port's reservation, already the one wanted).
    let (entry, created) = match current {
        Some(entry) => (entry, false),
        None => {
            // With session affinity, a client is known by its source address here.
            let client = Some((u64::from(ip.saddr), AFFINITY_IPV4));
            // Computed only for Maglev services, so others pay nothing for it.
            let flow = service.maglev().then(|| maglev_flow_hash(ip.saddr, packet.sport, packet.dport, ip.proto));
            let backend = select_backend(service, client, flow).ok_or(Skip::NoBackend)?;
            let mut fresh = CtEntry {
                backend: backend.addr,
                vip: ip.daddr,
                backend_port: backend.port,
                vip_port: packet.dport,
                snat_addr: 0,
                snat_port: 0,
                flags: closing,
                _pad: 0,
                seen: now,
            };
            if needs_snat(ip.saddr, backend.addr) {
                fresh.snat_addr = snat_addr(ip.daddr);
            }
            if !accept(&fresh) {
                return Err(Skip::NotLocal);
            }
            if fresh.snat_addr != 0 {
                fresh.snat_port = reserve_snat_port(packet, &fresh)?;
            }
            if CT.insert(key, fresh, u64::from(BPF_NOEXIST)).is_ok() {
                (fresh, true)
            } else {
                // Another CPU created the flow's entry first (its first packets raced): follow
                // it, so the flow stays on one backend, and free the port reserved for this one.
                // Failing that, the map refused the write.
                // SAFETY: copied out at once.
                match unsafe { CT.get(key) } {
                    Some(&entry) => {
                        if fresh.snat_port != 0 {
                            let _ = CT_REV.remove(reply_flow(packet, &fresh));
                        }
                        (entry, false)
                    }
                    None => {
                        bump(ct_failed);
                        (fresh, false)
                    }
                }
            }
        }
    };
    if !accept(&entry) {
        return Err(Skip::NotLocal);
    }
    let reply = reply_flow(packet, &entry);
    let wanted = rev_entry(packet, &entry);
    if created {
        // A new flow's reverse entry: no lookup first (a SNAT'd flow's is its port reservation).
        if entry.snat_port == 0 && CT_REV.insert(reply, wanted, 0).is_err() {
            bump(ct_failed);
        }
        return Ok(entry);
    }
    // The reverse entry is checked on every later packet of the flow: LRU may evict it apart
    // from the forward one, and replies need it.
    // SAFETY: copied out at once.
    let current = unsafe { CT_REV.get(reply) }.copied();
    if current != Some(wanted) {
        // A SNAT'd flow's reply tuple is a reserved port: another flow may have taken it after
        // an eviction, and overwriting its entry would steal its replies.
        let flags = if entry.snat_port != 0 { u64::from(BPF_NOEXIST) } else { 0 };
        if CT_REV.insert(reply, wanted, flags).is_err() {
            bump(ct_failed);
        }
    }
    Ok(entry)
}

/// Whether a new flow from `client` to `backend` (network order) needs SNAT: neither is inside a
/// [`LOCAL_CIDRS`] slot, and at least one slot is set.
#[inline(always)]
fn needs_snat(client: u32, backend: u32) -> bool {
    let mut configured = false;
    let mut index = 0;
    while index < LOCAL_CIDRS_MAX_ENTRIES {
        if let Some(cidr) = LOCAL_CIDRS.get(index)
            && cidr.prefix_len != 0
        {
            if cidr.contains(client) || cidr.contains(backend) {
                return false;
            }
            configured = true;
        }
        index += 1;
    }
    configured
}

/// Whether `addr` (network order) lies in one of this node's pod CIDRs.
#[inline(always)]
pub(crate) fn is_local(addr: u32) -> bool {
    let mut index = 0;
    while index < LOCAL_CIDRS_MAX_ENTRIES {
        if LOCAL_CIDRS.get(index).is_some_and(|cidr| cidr.contains(addr)) {
            return true;
        }
        index += 1;
    }
    false
}

/// The source address of SNAT'd flows: [`SNAT_ADDR`] when the datapath set it, else the
/// address the client reached (`reached`, the packet's original destination).
#[inline(always)]
fn snat_addr(reached: u32) -> u32 {
    match SNAT_ADDR.get(0) {
        Some(&addr) if addr != 0 => addr,
        _ => reached,
    }
}

/// Reserves a SNAT port for the new flow `entry` (whose `snat_addr` is set) by inserting its
/// reverse entry with `BPF_NOEXIST`: up to [`SNAT_PORT_PROBES`] consecutive ports from one
/// picked by hashing the client's address and port, so a client's flows spread over the range
/// and the same flow tries the same ports first. Returns the port, network order.
#[inline(always)]
fn reserve_snat_port(packet: &Packet, entry: &CtEntry) -> Result<u16, Skip> {
    let start = maglev_flow_hash(packet.ip.saddr, packet.sport, packet.dport, packet.ip.proto) % SNAT_PORTS;
    let wanted = rev_entry(packet, entry);
    let mut probe = 0;
    while probe < SNAT_PORT_PROBES {
        let port = (SNAT_PORT_MIN as u32 + (start + u32::from(probe)) % SNAT_PORTS) as u16;
        let reply = CtKey {
            saddr: entry.backend,
            daddr: entry.snat_addr,
            sport: entry.backend_port,
            dport: port.to_be(),
            proto: packet.ip.proto,
            _pad: [0; 3],
        };
        if CT_REV.insert(reply, wanted, u64::from(BPF_NOEXIST)).is_ok() {
            return Ok(port.to_be());
        }
        probe += 1;
    }
    Err(Skip::PortsExhausted)
}

/// The [`CT_REV`] value for `entry`, a flow of `packet`'s client.
#[inline(always)]
fn rev_entry(packet: &Packet, entry: &CtEntry) -> CtRevEntry {
    let snat = entry.snat_addr != 0;
    CtRevEntry {
        vip: entry.vip,
        port: entry.vip_port,
        client: if snat { packet.ip.saddr } else { 0 },
        client_port: if snat { packet.sport } else { 0 },
    }
}

/// The flow of the backend's replies to `packet`, which `entry` sends to that backend: the key
/// of its [`CT_REV`] entry. A SNAT'd flow's replies go to its SNAT address and port.
#[inline(always)]
pub(crate) fn reply_flow(packet: &Packet, entry: &CtEntry) -> CtKey {
    let (daddr, dport) =
        if entry.snat_addr != 0 { (entry.snat_addr, entry.snat_port) } else { (packet.ip.saddr, packet.sport) };
    CtKey { saddr: entry.backend, daddr, sport: entry.backend_port, dport, proto: packet.ip.proto, _pad: [0; 3] }
}

/// The flow as its client sent it, for a backend's reply `reply` that [`CT_REV`] maps to `rev`.
#[inline(always)]
pub(crate) fn client_flow(reply: &CtKey, rev: &CtRevEntry) -> CtKey {
    let (saddr, sport) = if rev.client != 0 { (rev.client, rev.client_port) } else { (reply.daddr, reply.dport) };
    CtKey { saddr, daddr: rev.vip, sport, dport: rev.port, proto: reply.proto, _pad: [0; 3] }
}

/// Where a translated packet leaves: its egress interface and the MAC addresses for it.
pub(crate) struct Route {
    pub(crate) ifindex: u32,
    /// Destination then source MAC, as they go into the Ethernet header.
    pub(crate) macs: [u8; 12],
}

/// Why [`fib_lookup`] gave no [`Route`].
pub(crate) enum NoRoute {
    /// The route is known but its next hop's MAC is not (yet): `ifindex` and `next_hop`
    /// (network order) are what `bpf_redirect_neigh` needs to resolve it.
    NoNeighbour { ifindex: u32, next_hop: u32 },
    /// No usable route (unreachable, not forwarded, forwarding disabled on the ingress interface,
    /// too big for the egress MTU, TTL about to run out, …): the kernel's stack must decide.
    Other,
}

/// The kernel's forwarding decision for a packet from `src` to `dst` (network order) with the
/// headers of `packet`, as if it arrived on `ingress`: an input lookup, so it needs forwarding
/// enabled on that interface, like the stack's own forwarding would. `tot_len` asks for an MTU
/// check (XDP, which cannot fragment; 0 skips it). `lookup` calls the context's
/// `bpf_fib_lookup`.
#[inline(always)]
pub(crate) fn fib_lookup(
    packet: &Packet,
    src: u32,
    dst: u32,
    ingress: u32,
    tot_len: u16,
    lookup: impl FnOnce(&mut FibParams) -> i64,
) -> Result<Route, NoRoute> {
    // Forwarding would take the last hop: leave the ICMP error to the stack.
    if packet.ip.ttl <= 1 {
        return Err(NoRoute::Other);
    }
    // SAFETY: `bpf_fib_lookup` is plain integers and unions of them; all zeroes is valid.
    let mut params: FibParams = unsafe { core::mem::zeroed() };
    params.family = AF_INET;
    params.l4_protocol = packet.ip.proto;
    params.ifindex = ingress;
    params.__bindgen_anon_1.tot_len = tot_len;
    params.__bindgen_anon_2.tos = packet.ip.tos;
    params.__bindgen_anon_3.ipv4_src = src;
    params.__bindgen_anon_4.ipv4_dst = dst;
    match lookup(&mut params) as u32 {
        BPF_FIB_LKUP_RET_SUCCESS => {
            let mut macs = [0; 12];
            macs[..6].copy_from_slice(&params.dmac);
            macs[6..].copy_from_slice(&params.smac);
            Ok(Route { ifindex: params.ifindex, macs })
        }
        // SAFETY: the kernel set the next hop (a union of addresses; IPv4 here) with the
        // interface before it looked for the neighbour.
        BPF_FIB_LKUP_RET_NO_NEIGH => {
            Err(NoRoute::NoNeighbour { ifindex: params.ifindex, next_hop: unsafe { params.__bindgen_anon_4.ipv4_dst } })
        }
        _ => Err(NoRoute::Other),
    }
}

/// The TTL byte and the protocol byte after it, as one 16-bit word of the IPv4 header (as stored,
/// read as a native integer): before and after one hop's decrement, for the checksum update.
#[inline(always)]
pub(crate) fn ttl_words(packet: &Packet) -> (u16, u16) {
    let ttl = packet.ip.ttl;
    (u16::from_ne_bytes([ttl, packet.ip.proto]), u16::from_ne_bytes([ttl.wrapping_sub(1), packet.ip.proto]))
}

/// Forgets a translated flow: its forward entry (`flow`, as the client sends it) and the reverse
/// entry of its backend (`reply`). Called when a TCP reset passes in either direction, so that a
/// later connection that reuses the client's port starts afresh.
#[inline(always)]
pub(crate) fn forget(flow: &CtKey, reply: &CtKey) {
    // Absent entries (another CPU was first, or LRU evicted them) are no error.
    let _ = CT.remove(flow);
    let _ = CT_REV.remove(reply);
}
