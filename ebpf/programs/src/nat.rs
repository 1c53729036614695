//! What `tc_nat` ([`crate::tc`]) and `xdp_nodeport` ([`crate::xdp`]) share: the conntrack maps
//! [`CT`] and [`CT_REV`], header parsing over either context ([`PacketRead`]), and the choice of a
//! flow's backend ([`forward_entry`]). Each program keeps only its own rewrite (TC patches the
//! packet through skb helpers, XDP writes it directly) and its verdicts.

use aya_ebpf::bindings::{BPF_F_MARK_MANGLED_0, BPF_NOEXIST};
use aya_ebpf::macros::map;
use aya_ebpf::maps::LruHashMap;
use keelson_ebpf_common::{
    AFFINITY_IPV4, CT_MAX_ENTRIES, CT_REV_MAX_ENTRIES, Counter, CtEntry, CtKey, IPPROTO_TCP, IPPROTO_UDP, ServiceAddr,
    ServiceValue, maglev_flow_hash,
};

use crate::{bump, select_backend};

#[map]
pub(crate) static CT: LruHashMap<CtKey, CtEntry> = LruHashMap::with_max_entries(CT_MAX_ENTRIES, 0);

#[map]
pub(crate) static CT_REV: LruHashMap<CtKey, ServiceAddr> = LruHashMap::with_max_entries(CT_REV_MAX_ENTRIES, 0);

/// Length of an Ethernet header without VLAN tags.
pub(crate) const ETH_HLEN: usize = 14;
/// Offset of the EtherType.
const ETH_TYPE_OFF: usize = 12;
/// `ETH_P_IP`, host order.
const ETH_P_IP: u16 = 0x0800;
/// Offsets of IPv4 header fields in the frame.
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
    tos: u8,
    /// Network order.
    tot_len: u16,
    id: u16,
    /// Network order: flags and fragment offset.
    frag_off: u16,
    ttl: u8,
    pub(crate) proto: u8,
    check: u16,
    /// Network order.
    pub(crate) saddr: u32,
    /// Network order.
    pub(crate) daddr: u32,
}

const _: () = assert!(core::mem::size_of::<Ipv4Hdr>() == 20);

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

/// TCP's reset flag.
const TCP_RST: u8 = 0x04;

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
/// Maglev entry for a service with a Maglev table, else at random; written to [`CT`] and
/// [`CT_REV`]). `accept` says whether this program may send the
/// flow to that backend; when it may not, nothing is written and the packet is
/// [`Skip::NotLocal`]. `ct_failed` counts entries that could not be written.
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
    // SAFETY: copied out at once; a concurrent update can only make the value stale.
    let entry = match unsafe { CT.get(key) } {
        Some(&entry) => entry,
        None => {
            // With session affinity, a client is known by its source address here.
            let client = Some((u64::from(ip.saddr), AFFINITY_IPV4));
            // Computed only for Maglev services, so others pay nothing for it.
            let flow = service.maglev().then(|| maglev_flow_hash(ip.saddr, packet.sport, packet.dport, ip.proto));
            let backend = select_backend(service, client, flow).ok_or(Skip::NoBackend)?;
            let fresh =
                CtEntry { backend: backend.addr, vip: ip.daddr, backend_port: backend.port, vip_port: packet.dport };
            if !accept(&fresh) {
                return Err(Skip::NotLocal);
            }
            if CT.insert(key, fresh, u64::from(BPF_NOEXIST)).is_ok() {
                fresh
            } else {
                // Another CPU created the flow's entry first (its first packets raced): follow
                // it, so the flow stays on one backend. Failing that, the map refused the write.
                // SAFETY: copied out at once.
                match unsafe { CT.get(key) } {
                    Some(&entry) => entry,
                    None => {
                        bump(ct_failed);
                        fresh
                    }
                }
            }
        }
    };
    if !accept(&entry) {
        return Err(Skip::NotLocal);
    }
    // The reverse entry is checked on every packet of the flow: LRU may evict it apart from the
    // forward one, and replies need it.
    let reply = reply_flow(packet, &entry);
    let service_addr = ServiceAddr { vip: entry.vip, port: entry.vip_port, _pad: 0 };
    // SAFETY: copied out at once.
    let current = unsafe { CT_REV.get(reply) }.copied();
    if current != Some(service_addr) && CT_REV.insert(reply, service_addr, 0).is_err() {
        bump(ct_failed);
    }
    Ok(entry)
}

/// The flow of the backend's replies to `packet`, which `entry` sends to that backend: the key
/// of its [`CT_REV`] entry.
#[inline(always)]
pub(crate) fn reply_flow(packet: &Packet, entry: &CtEntry) -> CtKey {
    CtKey {
        saddr: entry.backend,
        daddr: packet.ip.saddr,
        sport: entry.backend_port,
        dport: packet.sport,
        proto: packet.ip.proto,
        _pad: [0; 3],
    }
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
