//! `xdp_nodeport`: the NodePort fast path on the node's external interface.
//!
//! An IPv4 TCP or UDP packet whose destination (address, port, protocol) is a frontend in
//! [`SERVICES`] — NodePort frontends are `node address:nodePort` entries there like any other —
//! is handled here when its flow's backend is **local**, that is inside one of this node's pod
//! CIDRs ([`LOCAL_CIDRS`], written by the datapath): the same DNAT as `tc_nat` (same [`CT`] and
//! [`CT_REV`] entries, same backend choice, see [`crate::nat`]), checksums patched
//! incrementally (RFC 1624) and `XDP_PASS`, so the kernel routes the packet to the pod's veth. The
//! backend's replies are reverse-translated by `tc_nat` on that veth's ingress, from [`CT_REV`].
//!
//! Everything XDP cannot or should not decide passes unchanged, for TC to handle or ignore: a
//! backend on another node (no conntrack entry is written, so `tc_nat` picks and records the
//! flow's backend itself; later packets of such a flow find that entry, see a remote backend and
//! pass too; for a service with a Maglev table TC picks the same backend XDP saw), fragments, malformed or truncated packets, and anything that is not a service's.
//! A service without backends — `externalTrafficPolicy: Local` with no endpoint on this node —
//! is dropped here, as `tc_nat` would. With no [`LOCAL_CIDRS`] entry nothing is local, and the
//! program only drops packets to empty services.
//!
//! Packets are read and written directly (`data`..`data_end`, each access bounds-checked).
//! Frames from a NIC carry complete checksums, which are patched in place (a UDP checksum of 0,
//! "none", stays 0). A frame a local stack sent over a veth with checksum offload carries only the
//! pseudo-header seed of a `CHECKSUM_PARTIAL` packet, which XDP cannot tell apart: the fast path
//! is meant for a real external interface (the network-namespace test turns that offload off on
//! its client's veth, as a NIC's receive path would be).

use aya_ebpf::bindings::xdp_action::{XDP_DROP, XDP_PASS};
use aya_ebpf::macros::{map, xdp};
use aya_ebpf::maps::Array;
use aya_ebpf::programs::XdpContext;
use keelson_ebpf_common::{Counter, CtEntry, LOCAL_CIDRS_MAX_ENTRIES, LocalCidr, ServiceKey};

use crate::nat::{IP_CSUM_OFF, IP_DADDR_OFF, L4_DPORT_OFF, Packet, PacketRead, Skip, forward_entry, parse};
use crate::{SERVICES, bump};

#[map]
static LOCAL_CIDRS: Array<LocalCidr> = Array::with_max_entries(LOCAL_CIDRS_MAX_ENTRIES, 0);

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
        Ok(()) => {
            bump(Counter::XdpDnat);
            XDP_PASS
        }
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
    }
}

#[inline(always)]
fn try_xdp_nodeport(ctx: &XdpContext) -> Result<(), Skip> {
    let packet = parse(ctx)?;
    let service = ServiceKey { vip: packet.ip.daddr, port: packet.dport, proto: packet.ip.proto, _pad: 0 };
    // SAFETY: the value is copied out at once; a concurrent update can only make it stale.
    let value = *unsafe { SERVICES.get(service) }.ok_or(Skip::NotOurs)?;
    let entry = forward_entry(&packet, value, is_local, Counter::XdpCtUpdateFailed)?;
    dnat(ctx, &packet, &entry)
}

/// Whether the entry's backend lies in one of this node's pod CIDRs.
#[inline(always)]
fn is_local(entry: &CtEntry) -> bool {
    let mut index = 0;
    while index < LOCAL_CIDRS_MAX_ENTRIES {
        if LOCAL_CIDRS.get(index).is_some_and(|cidr| cidr.contains(entry.backend)) {
            return true;
        }
        index += 1;
    }
    false
}

/// Rewrites the destination to the entry's backend and patches the checksums. Every pointer is
/// checked before the first write.
#[inline(always)]
fn dnat(ctx: &XdpContext, packet: &Packet, entry: &CtEntry) -> Result<(), Skip> {
    let bad = |()| Skip::RewriteFailed;
    let ip_csum = packet_ptr::<u16>(ctx, IP_CSUM_OFF).map_err(bad)?;
    let daddr = packet_ptr::<u32>(ctx, IP_DADDR_OFF).map_err(bad)?;
    let dport = packet_ptr::<u16>(ctx, packet.l4 + L4_DPORT_OFF).map_err(bad)?;
    let l4_csum = packet_ptr::<u16>(ctx, packet.csum_off).map_err(bad)?;
    let (old_addr, new_addr) = (packet.ip.daddr, entry.backend);
    let (old_port, new_port) = (packet.dport, entry.backend_port);
    // SAFETY: each pointer was checked above to address its whole field inside the frame, which
    // the program may write; unaligned accesses are used throughout.
    unsafe {
        let check = core::ptr::read_unaligned(ip_csum);
        core::ptr::write_unaligned(ip_csum, csum_replace4(check, old_addr, new_addr));
        core::ptr::write_unaligned(daddr, new_addr);
        let check = core::ptr::read_unaligned(l4_csum);
        if !(packet.is_udp() && check == 0) {
            // The address is part of the TCP/UDP pseudo-header; the port is in the header.
            let check = csum_replace2(csum_replace4(check, old_addr, new_addr), old_port, new_port);
            // For UDP, a computed 0 is sent as all ones (0 means "no checksum").
            let check = if packet.is_udp() && check == 0 { 0xffff } else { check };
            core::ptr::write_unaligned(l4_csum, check);
        }
        core::ptr::write_unaligned(dport, new_port);
    }
    Ok(())
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
