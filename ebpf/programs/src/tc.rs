//! `tc_nat`: per-packet service NAT for traffic the socket hooks do not see (pods in their own
//! network namespaces, and replies coming back from other nodes).
//!
//! One classifier does both directions, so the datapath attaches one program per interface:
//!
//! - **Forward (DNAT).** An IPv4 TCP or UDP packet whose destination (address, port, protocol) is
//!   a frontend in [`SERVICES`] goes to a backend: the one its flow already uses (from [`CT`],
//!   keyed by the 5-tuple as the client sent it), else one picked as `connect4` does: at random,
//!   or for a service with session affinity the one this client (by source address) last used;
//!   a service with a Maglev table (NodePort) takes the flow's entry in it instead of a random
//!   one.
//!   A new flow records its backend in [`CT`] and, in [`CT_REV`], the service its replies must
//!   appear to come from. A service without backends drops the packet (`TC_ACT_SHOT`).
//! - **SNAT.** A new flow whose client and backend are both outside this node's pod CIDRs (an
//!   outside client of a NodePort whose backend is on another node) also gets this node's SNAT
//!   address and a reserved port as its source (see [`crate::nat`]), so that the backend's reply
//!   comes back here instead of going straight to the client. No free port among those tried
//!   drops the packet.
//! - **Reverse (SNAT of replies).** A packet that is no service's but matches [`CT_REV`] (the
//!   backend's side of a translated flow: backend → client, or backend → SNAT address) gets the
//!   service address as source and, for a SNAT'd flow, the client as destination.
//!
//! A SNAT'd packet, either way, has a source address of this node while it is on its way in,
//! which the kernel drops as a martian; so `tc_nat` forwards it itself: a FIB lookup (input, as
//! if routed from the ingress interface, so forwarding must be on there), new MAC addresses, one
//! hop off the TTL and `bpf_redirect` (`TC_ACT_REDIRECT`) to the egress interface; when the next
//! hop's neighbour entry is missing, `bpf_redirect_neigh` resolves it. Without a usable route
//! (unreachable, forwarding off, TTL 1) the rewritten packet goes to the stack (`TC_ACT_OK`,
//! counted), which drops it unless the interface has `accept_local`.
//!
//! Hooks: the ingress of each pod's host-side veth (a pod's request is translated as it leaves
//! the pod, and a local backend's reply as it leaves the backend) and the ingress of the node
//! interfaces (requests of outside clients, and replies from backends on other nodes, whose node
//! holds no entry for the flow).
//!
//! Checksums are patched incrementally with `bpf_l3_csum_replace` and `bpf_l4_csum_replace`
//! (pseudo-header aware, so `CHECKSUM_PARTIAL` packets from local stacks come out right too); a
//! UDP checksum of 0 ("none") stays 0. Everything this program does not translate leaves with
//! `TC_ACT_OK` and unchanged bytes: other EtherTypes and protocols, fragments (no ports to go by;
//! counted), and packets too short for their headers or with a bad IPv4 header (counted). Packet
//! bytes are read with `bpf_skb_load_bytes`, which checks bounds itself and also works on
//! non-linear buffers. Parsing and the conntrack maps are shared with `xdp_nodeport`
//! ([`crate::nat`]).
//!
//! Conntrack entries age without a collector: each forward packet stamps its [`CT`] entry (at
//! most once per ~1 s tick), and an entry idle past its timeout (TCP 24 h; UDP, and TCP once a
//! FIN or reset passed, 2 min) is stale, so the flow's next packet picks a backend afresh; LRU
//! eviction bounds the maps. A TCP reset in either direction removes the flow's two entries at
//! once. A client SYN on a closing entry is a new connection reusing the tuple and starts over;
//! a backend's SYN-ACK whose forward entry is closing, stale or gone is another connection's (a
//! client talking straight to the backend from the port of an earlier, closed service
//! connection) and passes untranslated, the stale entries forgotten. Replies do not stamp
//! entries: a flow's clock runs on its client's packets.
//!
//! Not handled: ICMP errors about translated flows, and hairpin. A pod whose packet to its own
//! service is translated here to its own address gets it back through its veth with its own
//! address as the source: its kernel drops such a packet (a "martian" with a local source), and
//! even if it took it, the reply would go over its loopback without passing `tc_nat`, so the
//! client would see the pod's address instead of the VIP. Making that work needs SNAT of hairpin
//! flows to an address of the node (kube-proxy masquerades them), which `tc_nat` does not do
//! (its SNAT is for flows whose client and backend are both off this node).
//! Pods on a Keelson node reach their services through the socket programs, which rewrite the
//! destination before routing, so hairpin works there without any NAT.

use aya_ebpf::EbpfContext as _;
use aya_ebpf::bindings::{BPF_F_PSEUDO_HDR, TC_ACT_OK, TC_ACT_SHOT, bpf_redir_neigh};
use aya_ebpf::helpers::{bpf_fib_lookup, bpf_redirect, bpf_redirect_neigh};
use aya_ebpf::macros::classifier;
use aya_ebpf::programs::TcContext;
use keelson_ebpf_common::{CT_CLOSING, Counter, CtKey, CtRevEntry, ServiceKey};

use crate::nat::{
    AF_INET, CT, CT_REV, IP_CSUM_OFF, IP_DADDR_OFF, IP_SADDR_OFF, IP_TTL_OFF, L4_DPORT_OFF, L4_SPORT_OFF, NoRoute,
    Packet, PacketRead, Skip, client_flow, ct_now, fib_lookup, forget, forward_entry, parse, reply_flow, ttl_words,
};
use crate::{SERVICES, bump};

impl PacketRead for TcContext {
    /// `bpf_skb_load_bytes` checks bounds itself and also reads non-linear buffers.
    #[inline(always)]
    fn read<T: Copy>(&self, offset: usize) -> Result<T, ()> {
        self.load(offset).map_err(|_| ())
    }
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

impl Rewrite {
    /// `packet`'s source address and port to become `addr` and `port` (network order).
    #[inline(always)]
    fn source(packet: &Packet, addr: u32, port: u16) -> Self {
        Self {
            addr_off: IP_SADDR_OFF,
            port_off: packet.l4 + L4_SPORT_OFF,
            old_addr: packet.ip.saddr,
            new_addr: addr,
            old_port: packet.sport,
            new_port: port,
        }
    }

    /// `packet`'s destination address and port to become `addr` and `port` (network order).
    #[inline(always)]
    fn destination(packet: &Packet, addr: u32, port: u16) -> Self {
        Self {
            addr_off: IP_DADDR_OFF,
            port_off: packet.l4 + L4_DPORT_OFF,
            old_addr: packet.ip.daddr,
            new_addr: addr,
            old_port: packet.dport,
            new_port: port,
        }
    }
}

#[classifier]
pub fn tc_nat(ctx: TcContext) -> i32 {
    match try_tc_nat(&ctx) {
        Ok(verdict) => verdict,
        // `NotLocal` is XDP's; every backend is fine here.
        Err(Skip::NotOurs | Skip::NotLocal) => TC_ACT_OK,
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
        Err(Skip::PortsExhausted) => {
            bump(Counter::SnatPortsExhausted);
            TC_ACT_SHOT
        }
    }
}

/// Translates one packet, counts what was done and returns the verdict.
#[inline(always)]
fn try_tc_nat(ctx: &TcContext) -> Result<i32, Skip> {
    let packet = parse(ctx)?;
    let ip = &packet.ip;
    let service = ServiceKey { vip: ip.daddr, port: packet.dport, proto: ip.proto, _pad: 0 };
    // SAFETY: the value is copied out at once; a concurrent update can only make it stale.
    if let Some(&value) = unsafe { SERVICES.get(service) } {
        let entry = forward_entry(&packet, value, |_| true, Counter::TcCtUpdateFailed)?;
        rewrite(ctx, &packet, &Rewrite::destination(&packet, entry.backend, entry.backend_port))?;
        if entry.snat_addr != 0 {
            rewrite(ctx, &packet, &Rewrite::source(&packet, entry.snat_addr, entry.snat_port))?;
        }
        if packet.is_reset() {
            forget(&packet.flow(), &reply_flow(&packet, &entry));
        }
        bump(Counter::TcDnat);
        if entry.snat_addr == 0 {
            return Ok(TC_ACT_OK);
        }
        bump(Counter::TcSnat);
        return forward(ctx, &packet, entry.snat_addr, entry.backend);
    }
    let reply = packet.flow();
    // SAFETY: copied out at once.
    let rev: CtRevEntry = *unsafe { CT_REV.get(reply) }.ok_or(Skip::NotOurs)?;
    if packet.accepts_connection() || packet.ends_flow() {
        check_reply(&packet, &reply, &rev)?;
    }
    rewrite(ctx, &packet, &Rewrite::source(&packet, rev.vip, rev.port))?;
    if rev.client != 0 {
        rewrite(ctx, &packet, &Rewrite::destination(&packet, rev.client, rev.client_port))?;
    }
    if packet.is_reset() {
        forget(&client_flow(&reply, &rev), &reply);
    }
    bump(Counter::TcRevNat);
    if rev.client == 0 {
        return Ok(TC_ACT_OK);
    }
    forward(ctx, &packet, rev.vip, rev.client)
}

/// The forward entry's say on a reply that opens or ends a connection (data packets are not
/// checked: their reverse entry is enough). A FIN or reset marks the flow closing. A SYN-ACK
/// whose flow is closing or idle past its timeout belongs to another connection that
/// happens to reuse the tuple (a client talking straight to the backend from the port of an
/// earlier, closed service connection): the stale entries are forgotten and the packet passes
/// untranslated.
#[inline(always)]
fn check_reply(packet: &Packet, reply: &CtKey, rev: &CtRevEntry) -> Result<(), Skip> {
    let flow = client_flow(reply, rev);
    // Without a forward entry (LRU evicted it apart from this one) the reverse entry is all
    // there is to go by: trust it.
    let Some(ptr) = CT.get_ptr_mut(flow) else { return Ok(()) };
    // SAFETY: the map value, valid during the program's run; copied out at once.
    let entry = unsafe { *ptr };
    if packet.accepts_connection() {
        if entry.closing() || ct_now().wrapping_sub(entry.seen) > entry.timeout(packet.ip.proto) {
            forget(&flow, reply);
            return Err(Skip::NotOurs);
        }
    } else if !entry.closing() {
        // SAFETY: as above; a plain store into the value.
        unsafe { (*ptr).flags = entry.flags | CT_CLOSING };
    }
    Ok(())
}

/// Sends a SNAT'd packet, rewritten to go from `src` to `dst` (network order), on towards `dst`
/// itself: it carries a source address of this node, so the stack would drop it as a martian.
/// With a route and a neighbour from the FIB: new MAC addresses, one hop off the TTL and
/// `bpf_redirect` to the egress interface. With a route whose next hop has no neighbour entry
/// yet: the same through `bpf_redirect_neigh`, which resolves it. Without a usable route:
/// counted and handed to the stack unchanged (`TC_ACT_OK`), which drops it unless the interface
/// accepts local sources (`accept_local`) and then routes it, or sends the ICMP error.
#[inline(always)]
fn forward(ctx: &TcContext, packet: &Packet, src: u32, dst: u32) -> Result<i32, Skip> {
    // SAFETY: the context's `__sk_buff` is valid for the program's run; `ifindex` is readable.
    let ingress = unsafe { (*ctx.skb.skb).ifindex };
    let lookup = |params: &mut _| {
        // SAFETY: `params` is a valid `bpf_fib_lookup` for the duration of the call, and its
        // size is passed along; the context is the program's own.
        unsafe { bpf_fib_lookup(ctx.as_ptr(), params, size_of_val(params) as i32, 0) }
    };
    // The skb path checks the MTU itself (GSO packets may be larger than it): no `tot_len`.
    match fib_lookup(packet, src, dst, ingress, 0, lookup) {
        Ok(route) => {
            decrement_ttl(ctx, packet)?;
            ctx.store(0, &route.macs, 0).map_err(|_| Skip::RewriteFailed)?;
            // SAFETY: `bpf_redirect` has no pointer arguments.
            Ok(unsafe { bpf_redirect(route.ifindex, 0) } as i32)
        }
        Err(NoRoute::NoNeighbour { ifindex, next_hop }) => {
            decrement_ttl(ctx, packet)?;
            let mut neighbour = bpf_redir_neigh {
                nh_family: u32::from(AF_INET),
                __bindgen_anon_1: aya_ebpf::bindings::bpf_redir_neigh__bindgen_ty_1 { ipv4_nh: next_hop },
            };
            // SAFETY: `neighbour` is valid for the call and its size is passed along.
            let verdict = unsafe { bpf_redirect_neigh(ifindex, &raw mut neighbour, size_of_val(&neighbour) as i32, 0) };
            Ok(verdict as i32)
        }
        Err(NoRoute::Other) => {
            bump(Counter::TcFibMiss);
            Ok(TC_ACT_OK)
        }
    }
}

/// Takes one hop off the TTL and patches the IPv4 checksum (the L4 checksums do not cover it).
#[inline(always)]
fn decrement_ttl(ctx: &TcContext, packet: &Packet) -> Result<(), Skip> {
    let failed = |_| Skip::RewriteFailed;
    let (old, new) = ttl_words(packet);
    ctx.store(IP_TTL_OFF, &new, 0).map_err(failed)?;
    ctx.l3_csum_replace(IP_CSUM_OFF, u64::from(old), u64::from(new), 2).map_err(failed)
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
