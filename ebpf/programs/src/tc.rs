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
//! non-linear buffers. Parsing and the conntrack maps are shared with `xdp_nodeport`
//! ([`crate::nat`]).
//!
//! Entries have no timer: a TCP reset in either direction removes the flow's two entries; other
//! finished flows stay until LRU eviction. Not handled yet: a connection straight to a backend
//! that reuses the client port of an earlier, FIN-closed service connection to that backend has
//! its replies rewritten by the stale reverse entry (netfilter's conntrack would have timed it
//! out; that needs timestamps and a collector).
//!
//! Not handled: ICMP errors about translated flows, and hairpin. A pod whose packet to its own
//! service is translated here to its own address gets it back through its veth with its own
//! address as the source: its kernel drops such a packet (a "martian" with a local source), and
//! even if it took it, the reply would go over its loopback without passing `tc_nat`, so the
//! client would see the pod's address instead of the VIP. Making that work needs SNAT of hairpin
//! flows to an address of the node (kube-proxy masquerades them), which `tc_nat` does not do.
//! Pods on a Keelson node reach their services through the socket programs, which rewrite the
//! destination before routing, so hairpin works there without any NAT.

use aya_ebpf::bindings::{BPF_F_PSEUDO_HDR, TC_ACT_OK, TC_ACT_SHOT};
use aya_ebpf::macros::classifier;
use aya_ebpf::programs::TcContext;
use keelson_ebpf_common::{Counter, CtKey, ServiceAddr, ServiceKey};

use crate::nat::{
    CT_REV, IP_CSUM_OFF, IP_DADDR_OFF, IP_SADDR_OFF, L4_DPORT_OFF, L4_SPORT_OFF, Packet, PacketRead, Skip, forget,
    forward_entry, parse, reply_flow,
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

#[classifier]
pub fn tc_nat(ctx: TcContext) -> i32 {
    match try_tc_nat(&ctx) {
        Ok(counter) => {
            bump(counter);
            TC_ACT_OK
        }
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
        let entry = forward_entry(&packet, value, |_| true, Counter::TcCtUpdateFailed)?;
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
        if packet.is_reset() {
            forget(&packet.flow(), &reply_flow(&packet, &entry));
        }
        return Ok(Counter::TcDnat);
    }
    let reply = packet.flow();
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
    if packet.is_reset() {
        let flow =
            CtKey { saddr: ip.daddr, daddr: vip, sport: packet.dport, dport: port, proto: ip.proto, _pad: [0; 3] };
        forget(&flow, &reply);
    }
    Ok(Counter::TcRevNat)
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
