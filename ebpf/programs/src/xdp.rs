//! `xdp_nodeport`: the NodePort fast path on the node's external interface.
//!
//! An IPv4 TCP or UDP packet whose destination (address, port, protocol) is a frontend in
//! [`SERVICES`] — NodePort frontends are `node address:nodePort` entries there like any other —
//! gets the same backend choice and the same [`CT`] and [`CT_REV`] entries as in `tc_nat` (see
//! [`crate::nat`]), with checksums patched incrementally (RFC 1624), and then:
//!
//! - **Local backend** (inside one of this node's pod CIDRs, `LOCAL_CIDRS`, written by the
//!   datapath): DNAT and `XDP_PASS`, so the kernel routes the packet to the pod's veth. The
//!   backend's replies are reverse-translated by `tc_nat` on that veth's ingress.
//! - **Remote backend, SNAT'd flow** (the client is not a local pod either): DNAT and SNAT to
//!   the node's SNAT address and port, then forwarded from here: a FIB lookup for the new
//!   addresses (input, as if routed from this interface), the MAC addresses it gives, one hop off
//!   the TTL, and `XDP_TX` when the egress interface is this one, else `bpf_redirect` to it. The
//!   replies come back to the SNAT address and are restored by `tc_nat` on the interface they
//!   arrive on. When the FIB gives no neighbour or no route (or the packet exceeds the egress
//!   MTU), the packet passes unchanged: `tc_nat` finds the entries written here, translates it the
//!   same way and resolves the neighbour (`bpf_redirect_neigh`), so the flow's later packets take
//!   this path. On a veth (tests; a NIC puts the frame on the wire) the peer must take XDP
//!   frames: a redirect needs an XDP program or GRO on the peer, `XDP_TX` an XDP program (the
//!   driver queues the frame on the peer's ring but only schedules it for a peer with one).
//!
//! Everything XDP cannot or should not decide passes unchanged, for TC to handle or ignore: a
//! remote backend of a flow that is not SNAT'd (a local pod's; no conntrack entry is written, so
//! `tc_nat` picks and records the flow's backend itself; for a service with a Maglev table TC
//! picks the same backend XDP saw), fragments, malformed or truncated packets, and anything that
//! is not a service's, including replies. A service without backends — `externalTrafficPolicy:
//! Local` with no endpoint on this node — is dropped here, as `tc_nat` would, and so is a new
//! SNAT'd flow without a free port. With no `LOCAL_CIDRS` entry nothing is local and nothing is
//! SNAT'd: the program only drops packets to empty services.
//!
//! Packets are read and written directly (`data`..`data_end`, each access bounds-checked).
//! Frames from a NIC carry complete checksums, which are patched in place (a UDP checksum of 0,
//! "none", stays 0). A frame a local stack sent over a veth with checksum offload carries only the
//! pseudo-header seed of a `CHECKSUM_PARTIAL` packet, which XDP cannot tell apart: the fast path
//! is meant for a real external interface (the network-namespace tests turn that offload off on
//! their client's veth, as a NIC's receive path would be).

use aya_ebpf::EbpfContext as _;
use aya_ebpf::bindings::xdp_action::{XDP_DROP, XDP_PASS, XDP_TX};
use aya_ebpf::helpers::{bpf_fib_lookup, bpf_redirect};
use aya_ebpf::macros::xdp;
use aya_ebpf::programs::XdpContext;
use keelson_ebpf_common::{Counter, CtEntry, ServiceKey};

use crate::nat::{
    IP_CSUM_OFF, IP_DADDR_OFF, IP_SADDR_OFF, IP_TTL_OFF, Packet, PacketRead, Route, Skip, fib_lookup, forward_entry,
    is_local, parse, ttl_words,
};
use crate::{SERVICES, bump};

impl PacketRead for XdpContext {
    #[inline(always)]
    fn read<T: Copy>(&self, offset: usize) -> Result<T, ()> {
        let at = packet_ptr::<T>(self, offset)?;
        // SAFETY: `packet_ptr` checked that `size_of::<T>()` bytes from `at` lie inside the frame;
        // `T` is plain integers, and the read is unaligned-safe.
        Ok(unsafe { core::ptr::read_unaligned(at) })
    }
}

/// A pointer to the `T` at `offset` in the frame, after checking it lies inside.
#[inline(always)]
fn packet_ptr<T>(ctx: &XdpContext, offset: usize) -> Result<*mut T, ()> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + core::mem::size_of::<T>() > end {
        return Err(());
    }
    Ok((start + offset) as *mut T)
}

#[xdp]
pub fn xdp_nodeport(ctx: XdpContext) -> u32 {
    match try_xdp_nodeport(&ctx) {
        Ok(verdict) => verdict,
        Err(Skip::NotOurs) => XDP_PASS,
        Err(Skip::NotLocal) => {
            bump(Counter::XdpNotLocal);
            XDP_PASS
        }
        // Nothing is written before every access is checked, so a failed rewrite left the frame
        // as it came: let TC see it.
        Err(Skip::Malformed | Skip::RewriteFailed) => {
            bump(Counter::XdpMalformed);
            XDP_PASS
        }
        Err(Skip::Fragment) => {
            bump(Counter::XdpFragment);
            XDP_PASS
        }
        Err(Skip::NoBackend) => {
            bump(Counter::XdpNoBackend);
            XDP_DROP
        }
        Err(Skip::PortsExhausted) => {
            bump(Counter::SnatPortsExhausted);
            XDP_DROP
        }
    }
}

/// Translates one packet, counts what was done and returns the verdict.
#[inline(always)]
fn try_xdp_nodeport(ctx: &XdpContext) -> Result<u32, Skip> {
    let packet = parse(ctx)?;
    let service = ServiceKey { vip: packet.ip.daddr, port: packet.dport, proto: packet.ip.proto, _pad: 0 };
    // SAFETY: the value is copied out at once; a concurrent update can only make it stale.
    let value = *unsafe { SERVICES.get(service) }.ok_or(Skip::NotOurs)?;
    // A remote backend is this program's only when the flow is SNAT'd: then its replies come
    // back here. Without SNAT (a local pod's flow) TC keeps it.
    let entry = forward_entry(&packet, value, |e| e.snat_addr != 0 || is_local(e.backend), Counter::XdpCtUpdateFailed)?;
    if entry.snat_addr == 0 {
        nat(ctx, &packet, &dnat(&packet, &entry), None)?;
        bump(Counter::XdpDnat);
        return Ok(XDP_PASS);
    }
    // SAFETY: the context's `xdp_md` is valid for the program's run.
    let ingress = unsafe { (*ctx.ctx).ingress_ifindex };
    let lookup = |params: &mut _| {
        // SAFETY: `params` is a valid `bpf_fib_lookup` for the duration of the call, and its
        // size is passed along; the context is the program's own.
        unsafe { bpf_fib_lookup(ctx.as_ptr(), params, size_of_val(params) as i32, 0) }
    };
    // XDP cannot fragment: ask for the egress MTU check.
    let tot_len = packet.ip.tot_len();
    let Ok(route) = fib_lookup(&packet, entry.snat_addr, entry.backend, ingress, tot_len, lookup) else {
        // The flow's entries are written; TC follows them and can resolve a missing neighbour.
        bump(Counter::XdpFibMiss);
        return Ok(XDP_PASS);
    };
    let snat = Change {
        old_addr: packet.ip.saddr,
        new_addr: entry.snat_addr,
        old_port: packet.sport,
        new_port: entry.snat_port,
    };
    nat(ctx, &packet, &dnat(&packet, &entry), Some((&snat, &route)))?;
    bump(Counter::XdpForward);
    if route.ifindex == ingress {
        return Ok(XDP_TX);
    }
    // SAFETY: `bpf_redirect` has no pointer arguments.
    Ok(unsafe { bpf_redirect(route.ifindex, 0) } as u32)
}

/// One address and port to replace (the destination's for DNAT, the source's for SNAT), with the
/// checksums that cover them.
struct Change {
    old_addr: u32,
    new_addr: u32,
    old_port: u16,
    new_port: u16,
}

/// The destination's change to the entry's backend.
#[inline(always)]
fn dnat(packet: &Packet, entry: &CtEntry) -> Change {
    Change { old_addr: packet.ip.daddr, new_addr: entry.backend, old_port: packet.dport, new_port: entry.backend_port }
}

/// Applies `dnat` (to the destination) and, for a forwarded packet, `forward`'s SNAT (to the
/// source), one hop off the TTL and the route's MAC addresses, patching the checksums. Every pointer is checked before the first
/// write, so an error leaves the frame as it came.
#[inline(always)]
fn nat(ctx: &XdpContext, packet: &Packet, dnat: &Change, forward: Option<(&Change, &Route)>) -> Result<(), Skip> {
    let bad = |()| Skip::RewriteFailed;
    // In order of their ends: LLVM drops a check that an earlier one implies, and the verifier
    // does not see that a check further into the packet (or at the variable L4 offset) covers
    // a field before it.
    let ip_csum = packet_ptr::<u16>(ctx, IP_CSUM_OFF).map_err(bad)?;
    let ttl = packet_ptr::<u16>(ctx, IP_TTL_OFF).map_err(bad)?;
    let macs = packet_ptr::<[u8; 12]>(ctx, 0).map_err(bad)?;
    let saddr = packet_ptr::<u32>(ctx, IP_SADDR_OFF).map_err(bad)?;
    let daddr = packet_ptr::<u32>(ctx, IP_DADDR_OFF).map_err(bad)?;
    // Both ports through one checked pointer.
    let ports = packet_ptr::<[u16; 2]>(ctx, packet.l4).map_err(bad)?;
    let l4_csum = packet_ptr::<u16>(ctx, packet.csum_off).map_err(bad)?;
    let sport = ports.cast::<u16>();
    // SAFETY: the second of the two ports `packet_ptr` checked.
    let dport = unsafe { sport.add(1) };
    let dnat_at = (daddr, dport);
    let snat_at = forward.map(|_| (saddr, sport));
    // SAFETY: each pointer was checked above to address its whole field inside the frame, which
    // the program may write; unaligned accesses are used throughout.
    unsafe {
        let mut ip_check = core::ptr::read_unaligned(ip_csum);
        let mut l4_check = core::ptr::read_unaligned(l4_csum);
        // A UDP checksum of 0 means "none" and stays so.
        let l4_none = packet.is_udp() && l4_check == 0;
        replace(&mut ip_check, &mut l4_check, l4_none, dnat, dnat_at);
        if let (Some((snat, route)), Some(snat_at)) = (forward, snat_at) {
            replace(&mut ip_check, &mut l4_check, l4_none, snat, snat_at);
            let (old, new) = ttl_words(packet);
            ip_check = csum_replace2(ip_check, old, new);
            core::ptr::write_unaligned(ttl, new);
            core::ptr::write_unaligned(macs, route.macs);
        }
        core::ptr::write_unaligned(ip_csum, ip_check);
        if !l4_none {
            // For UDP, a computed 0 is sent as all ones (0 means "no checksum").
            let l4_check = if packet.is_udp() && l4_check == 0 { 0xffff } else { l4_check };
            core::ptr::write_unaligned(l4_csum, l4_check);
        }
    }
    Ok(())
}

/// Writes one [`Change`] at `at` (its address and port fields) and folds it into the running
/// checksums; the L4 one only when the packet has one (`l4_none`: a UDP checksum of 0).
///
/// # Safety
/// `at` holds pointers checked to lie inside this context's frame.
#[inline(always)]
unsafe fn replace(ip_check: &mut u16, l4_check: &mut u16, l4_none: bool, change: &Change, at: (*mut u32, *mut u16)) {
    *ip_check = csum_replace4(*ip_check, change.old_addr, change.new_addr);
    if !l4_none {
        // The address is part of the TCP/UDP pseudo-header; the port is in the header.
        let check = csum_replace4(*l4_check, change.old_addr, change.new_addr);
        *l4_check = csum_replace2(check, change.old_port, change.new_port);
    }
    // SAFETY: the caller's contract.
    unsafe {
        core::ptr::write_unaligned(at.0, change.new_addr);
        core::ptr::write_unaligned(at.1, change.new_port);
    }
}

/// Folds a 32-bit one's complement sum of at most a few 16-bit words to 16 bits.
#[inline(always)]
fn fold(sum: u32) -> u16 {
    let sum = (sum & 0xffff) + (sum >> 16);
    let sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// RFC 1624 (eqn. 3): the checksum `check` after a 32-bit field changed from `old` to `new`. The
/// values are the field's bytes as stored, read as native integers, like `check` itself: one's
/// complement sums do not depend on the byte order as long as every word uses the same.
#[inline(always)]
fn csum_replace4(check: u16, old: u32, new: u32) -> u16 {
    let sum = u32::from(!check)
        + u32::from(!(old as u16))
        + u32::from(!((old >> 16) as u16))
        + u32::from(new as u16)
        + u32::from((new >> 16) as u16);
    !fold(sum)
}

/// As [`csum_replace4`] for a 16-bit field.
#[inline(always)]
fn csum_replace2(check: u16, old: u16, new: u16) -> u16 {
    !fold(u32::from(!check) + u32::from(!old) + u32::from(new))
}
