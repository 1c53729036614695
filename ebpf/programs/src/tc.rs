//! `tc_nat`: per-packet service NAT for traffic the socket hooks do not see (pods in their own
//! network namespaces, and replies coming back from other nodes).
//!
//! One classifier does both directions, so the datapath attaches one program per interface:
//!
//! - **Forward (DNAT).** An IPv4 TCP or UDP packet whose destination (address, port, protocol) is
//!   a frontend in [`SERVICES`] goes to a backend: the one its flow already uses (from [`CT`],
//!   keyed by the 5-tuple as the client sent it), else one picked as `connect4` does: at random,
//!   or for a service with session affinity the one this client (by source address) last used.
//!   A new flow records its backend in [`CT`] and, in [`CT_REV`], the service its replies must
//!   appear to come from. A service without backends drops the packet (`TC_ACT_SHOT`).
//! - **Reverse (SNAT of replies).** A packet that is no service's but matches [`CT_REV`] (the
//!   backend's side of a translated flow: backend → client) gets the service address as source.
//!
//! Hooks: the ingress of each pod's host-side veth (a pod's request is translated as it leaves
//! the pod, and a local backend's reply as it leaves the backend) and the ingress of the node
//! interface (replies from backends on other nodes, whose node holds no entry for the flow).
//!
//! Checksums are patched incrementally with `bpf_l3_csum_replace` and `bpf_l4_csum_replace`
//! (pseudo-header aware, so `CHECKSUM_PARTIAL` packets from local stacks come out right too); a
//! UDP checksum of 0 ("none") stays 0. Everything this program does not translate leaves with
//! `TC_ACT_OK` and unchanged bytes: other EtherTypes and protocols, fragments (no ports to go by;
//! counted), and packets too short for their headers or with a bad IPv4 header (counted). Packet
//! bytes are read with `bpf_skb_load_bytes`, which checks bounds itself and also works on
//! non-linear buffers.
//!
//! Not handled: ICMP errors about translated flows, and hairpin. A pod whose packet to its own
//! service is translated here to its own address gets it back through its veth with its own
//! address as the source: its kernel drops such a packet (a "martian" with a local source), and
//! even if it took it, the reply would go over its loopback without passing `tc_nat`, so the
//! client would see the pod's address instead of the VIP. Making that work needs SNAT of hairpin
//! flows to an address of the node (kube-proxy masquerades them), which `tc_nat` does not do.
//! Pods on a Keelson node reach their services through the socket programs, which rewrite the
//! destination before routing, so hairpin works there without any NAT.

use aya_ebpf::bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR, BPF_NOEXIST, TC_ACT_OK, TC_ACT_SHOT};
use aya_ebpf::macros::{classifier, map};
use aya_ebpf::maps::LruHashMap;
use aya_ebpf::programs::TcContext;
use keelson_ebpf_common::{
    AFFINITY_IPV4, CT_MAX_ENTRIES, CT_REV_MAX_ENTRIES, Counter, CtEntry, CtKey, IPPROTO_TCP, IPPROTO_UDP, ServiceAddr,
    ServiceKey, ServiceValue,
};

use crate::{SERVICES, bump, select_backend};

#[map]
static CT: LruHashMap<CtKey, CtEntry> = LruHashMap::with_max_entries(CT_MAX_ENTRIES, 0);

#[map]
static CT_REV: LruHashMap<CtKey, ServiceAddr> = LruHashMap::with_max_entries(CT_REV_MAX_ENTRIES, 0);

/// Length of an Ethernet header without VLAN tags.
const ETH_HLEN: usize = 14;
/// Offset of the EtherType.
const ETH_TYPE_OFF: usize = 12;
/// `ETH_P_IP`, host order.
const ETH_P_IP: u16 = 0x0800;
/// Offsets of IPv4 header fields in the frame.
const IP_CSUM_OFF: usize = ETH_HLEN + 10;
const IP_SADDR_OFF: usize = ETH_HLEN + 12;
const IP_DADDR_OFF: usize = ETH_HLEN + 16;
/// IPv4 "more fragments" flag and fragment offset, in the host-order `frag_off` field.
const IP_MF: u16 = 0x2000;
const IP_OFFSET: u16 = 0x1fff;
/// Minimum TCP and UDP header lengths, and where each keeps its checksum.
const TCP_HLEN: usize = 20;
const UDP_HLEN: usize = 8;
const TCP_CSUM_OFF: usize = 16;
const UDP_CSUM_OFF: usize = 6;
/// Offsets of the ports in both L4 headers.
const L4_SPORT_OFF: usize = 0;
const L4_DPORT_OFF: usize = 2;

/// The fixed part of an IPv4 header, fields as on the wire.
#[repr(C)]
#[derive(Clone, Copy)]
struct Ipv4Hdr {
    version_ihl: u8,
    tos: u8,
    /// Network order.
    tot_len: u16,
    id: u16,
    /// Network order: flags and fragment offset.
    frag_off: u16,
    ttl: u8,
    proto: u8,
    check: u16,
    /// Network order.
    saddr: u32,
    /// Network order.
    daddr: u32,
}

const _: () = assert!(core::mem::size_of::<Ipv4Hdr>() == 20);

/// Why a packet leaves untranslated.
enum Skip {
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
}

/// The parsed headers of a TCP or UDP packet.
struct Packet {
    ip: Ipv4Hdr,
    /// Offset of the L4 header in the frame.
    l4: usize,
    /// Network order.
    sport: u16,
    /// Network order.
    dport: u16,
    /// Offset of the L4 checksum in the frame.
    csum_off: usize,
    /// Extra `bpf_l4_csum_replace` flags: UDP's "0 means no checksum".
    csum_flags: u64,
}

/// One address and port to replace, with the checksums that cover them.
struct Rewrite {
    addr_off: usize,
    port_off: usize,
    old_addr: u32,
    new_addr: u32,
    old_port: u16,
    new_port: u16,
}

#[classifier]
pub fn tc_nat(ctx: TcContext) -> i32 {
    match try_tc_nat(&ctx) {
        Ok(counter) => {
            bump(counter);
            TC_ACT_OK
        }
        Err(Skip::NotOurs) => TC_ACT_OK,
        Err(Skip::Malformed) => {
            bump(Counter::TcMalformed);
            TC_ACT_OK
        }
        Err(Skip::Fragment) => {
            bump(Counter::TcFragment);
            TC_ACT_OK
        }
        Err(Skip::NoBackend) => {
            bump(Counter::TcNoBackend);
            TC_ACT_SHOT
        }
        Err(Skip::RewriteFailed) => {
            bump(Counter::TcRewriteFailed);
            TC_ACT_SHOT
        }
    }
}

/// Translates one packet; returns the counter of what was done.
#[inline(always)]
fn try_tc_nat(ctx: &TcContext) -> Result<Counter, Skip> {
    let packet = parse(ctx)?;
    let ip = &packet.ip;
    let service = ServiceKey { vip: ip.daddr, port: packet.dport, proto: ip.proto, _pad: 0 };
    // SAFETY: the value is copied out at once; a concurrent update can only make it stale.
    if let Some(&value) = unsafe { SERVICES.get(service) } {
        let entry = forward_entry(&packet, value)?;
        rewrite(
            ctx,
            &packet,
            &Rewrite {
                addr_off: IP_DADDR_OFF,
                port_off: packet.l4 + L4_DPORT_OFF,
                old_addr: ip.daddr,
                new_addr: entry.backend,
                old_port: packet.dport,
                new_port: entry.backend_port,
            },
        )?;
        return Ok(Counter::TcDnat);
    }
    let reply = CtKey {
        saddr: ip.saddr,
        daddr: ip.daddr,
        sport: packet.sport,
        dport: packet.dport,
        proto: ip.proto,
        _pad: [0; 3],
    };
    // SAFETY: copied out at once.
    let &ServiceAddr { vip, port, .. } = unsafe { CT_REV.get(reply) }.ok_or(Skip::NotOurs)?;
    rewrite(
        ctx,
        &packet,
        &Rewrite {
            addr_off: IP_SADDR_OFF,
            port_off: packet.l4 + L4_SPORT_OFF,
            old_addr: ip.saddr,
            new_addr: vip,
            old_port: packet.sport,
            new_port: port,
        },
    )?;
    Ok(Counter::TcRevNat)
}

/// Reads the Ethernet, IPv4 and TCP/UDP headers, checking every length.
#[inline(always)]
fn parse(ctx: &TcContext) -> Result<Packet, Skip> {
    let ether_type: u16 = ctx.load(ETH_TYPE_OFF).map_err(|_| Skip::Malformed)?;
    if u16::from_be(ether_type) != ETH_P_IP {
        return Err(Skip::NotOurs);
    }
    let ip: Ipv4Hdr = ctx.load(ETH_HLEN).map_err(|_| Skip::Malformed)?;
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
    // Loading the whole minimal header proves it is in the buffer.
    let (sport, dport) = if ip.proto == IPPROTO_TCP {
        let tcp: [u16; TCP_HLEN / 2] = ctx.load(l4).map_err(|_| Skip::Malformed)?;
        (tcp[0], tcp[1])
    } else {
        let udp: [u16; UDP_HLEN / 2] = ctx.load(l4).map_err(|_| Skip::Malformed)?;
        (udp[0], udp[1])
    };
    Ok(Packet { ip, l4, sport, dport, csum_off: l4 + csum_off, csum_flags })
}

/// The conntrack entry of a packet to a service: the flow's own, or a new one with a backend
/// chosen by `select_backend` (written to [`CT`] and [`CT_REV`]).
#[inline(always)]
fn forward_entry(packet: &Packet, service: ServiceValue) -> Result<CtEntry, Skip> {
    if service.count == 0 {
        return Err(Skip::NoBackend);
    }
    let ip = &packet.ip;
    let key = CtKey {
        saddr: ip.saddr,
        daddr: ip.daddr,
        sport: packet.sport,
        dport: packet.dport,
        proto: ip.proto,
        _pad: [0; 3],
    };
    // SAFETY: copied out at once.
    let entry = match unsafe { CT.get(key) } {
        Some(&entry) => entry,
        None => {
            let backend = select_backend(service, Some((u64::from(ip.saddr), AFFINITY_IPV4))).ok_or(Skip::NoBackend)?;
            let fresh =
                CtEntry { backend: backend.addr, vip: ip.daddr, backend_port: backend.port, vip_port: packet.dport };
            if CT.insert(key, fresh, u64::from(BPF_NOEXIST)).is_ok() {
                fresh
            } else {
                // Another CPU created the flow's entry first (its first packets raced): follow
                // it, so the flow stays on one backend. Failing that, the map refused the write.
                // SAFETY: copied out at once.
                match unsafe { CT.get(key) } {
                    Some(&entry) => entry,
                    None => {
                        bump(Counter::TcCtUpdateFailed);
                        fresh
                    }
                }
            }
        }
    };
    // The reverse entry is checked on every packet of the flow: LRU may evict it apart from the
    // forward one, and replies need it.
    let reply = CtKey {
        saddr: entry.backend,
        daddr: ip.saddr,
        sport: entry.backend_port,
        dport: packet.sport,
        proto: ip.proto,
        _pad: [0; 3],
    };
    let service_addr = ServiceAddr { vip: entry.vip, port: entry.vip_port, _pad: 0 };
    // SAFETY: copied out at once.
    let current = unsafe { CT_REV.get(reply) }.copied();
    if current != Some(service_addr) && CT_REV.insert(reply, service_addr, 0).is_err() {
        bump(Counter::TcCtUpdateFailed);
    }
    Ok(entry)
}

/// Replaces an address and a port and patches the IPv4 and L4 checksums to match.
#[inline(always)]
fn rewrite(ctx: &TcContext, packet: &Packet, change: &Rewrite) -> Result<(), Skip> {
    let failed = |_| Skip::RewriteFailed;
    ctx.store(change.addr_off, &change.new_addr, 0).map_err(failed)?;
    ctx.l3_csum_replace(IP_CSUM_OFF, u64::from(change.old_addr), u64::from(change.new_addr), 4).map_err(failed)?;
    // The address is part of the TCP/UDP pseudo-header.
    let flags = packet.csum_flags | u64::from(BPF_F_PSEUDO_HDR);
    ctx.l4_csum_replace(packet.csum_off, u64::from(change.old_addr), u64::from(change.new_addr), flags | 4)
        .map_err(failed)?;
    ctx.store(change.port_off, &change.new_port, 0).map_err(failed)?;
    ctx.l4_csum_replace(packet.csum_off, u64::from(change.old_port), u64::from(change.new_port), packet.csum_flags | 2)
        .map_err(failed)?;
    Ok(())
}
