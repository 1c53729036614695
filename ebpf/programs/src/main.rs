//! Keelson's eBPF programs: socket-level service load balancing, per-packet service NAT at TC
//! (`tc_nat`, in [`tc`]) and the NodePort fast path at XDP (`xdp_nodeport`, in [`xdp`]), the
//! last two sharing parsing and conntrack ([`nat`]).
//!
//! `connect4` and `sendmsg4` rewrite a ClusterIP:port (TCP or UDP) to one of the service's
//! backends before the kernel routes anything, so local clients need no per-packet NAT; the
//! chosen backend is remembered per socket in [`SOCK_REV_NAT`] so that `recvmsg4` and
//! `getpeername4` can show the application the service address it asked for. Addresses that are
//! not services are left alone. The maps are written only by `node-agent/src/datapath`, except
//! the LRU maps the programs keep themselves ([`SOCK_REV_NAT`], [`AFFINITY`], and `tc`'s
//! conntrack).
//!
//! Session affinity (`sessionAffinity: ClientIP`): a service whose [`ServiceValue`] has an
//! affinity timeout sends each client back to the backend it last reached, as long as that was
//! within the timeout and the backend is still one of the service's; each use refreshes the time
//! (kube-proxy's `recent` match behaves the same). The socket programs run before the kernel
//! chooses a source address, so they know a client by its network namespace
//! (`bpf_get_netns_cookie`, one pod = one namespace, as Cilium does); `tc_nat` knows it by its
//! IPv4 source address. The two kinds of key never collide ([`AffinityKey::kind`]).
//!
//! Maglev consistent hashing (NodePort frontends, [`keelson_ebpf_common::SERVICE_F_MAGLEV`]): a new `tc_nat` or
//! `xdp_nodeport` flow without an affinity hit takes the backend at
//! `MAGLEV[(id, maglev_flow_hash(flow) % MAGLEV_TABLE_SIZE)]`, a table the datapath computes from
//! the backend addresses alone, so any node, or this one after losing its conntrack, sends the
//! flow to the same backend. The socket programs keep random choice: they serve local clients,
//! whose connection is bound to its backend for its lifetime and never moves between nodes.
//!
//! Built for `bpfel-unknown-none` by `node-agent/build.rs` (aya-build) or `cargo xtask ebpf`.
//! Host builds (`cargo clippy --workspace`, `cargo test --workspace` on stable) type-check the
//! same code as an ordinary binary with an empty `main`; nothing runs there.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

mod nat;
mod tc;
mod xdp;

use aya_ebpf::EbpfContext as _;
use aya_ebpf::bindings::BPF_F_NO_PREALLOC;
use aya_ebpf::helpers::{bpf_get_netns_cookie, bpf_get_prandom_u32, bpf_get_socket_cookie, bpf_ktime_get_ns};
use aya_ebpf::macros::{cgroup_sock_addr, map};
use aya_ebpf::maps::{HashMap, LruHashMap, PerCpuArray};
use aya_ebpf::programs::SockAddrContext;
use aya_log_ebpf::warn;
use keelson_ebpf_common::{
    AFFINITY_MAX_ENTRIES, AFFINITY_NETNS, AFFINITY_SCAN_SLOTS, AffinityEntry, AffinityKey, BACKENDS_MAX_ENTRIES,
    Backend, BackendKey, COUNTERS_LEN, Counter, MAGLEV_MAX_ENTRIES, MAGLEV_TABLE_SIZE, MaglevKey, SERVICES_MAX_ENTRIES,
    SOCK_REV_NAT_MAX_ENTRIES, ServiceAddr, ServiceKey, ServiceValue, SockRevNatKey,
};

/// Return value of a cgroup sock_addr program that lets the call proceed.
const SYS_PROCEED: i32 = 1;
/// Return value that fails the call with `EPERM` (only `connect4` and `sendmsg4` may use it).
const SYS_REJECT: i32 = 0;

#[map]
static SERVICES: HashMap<ServiceKey, ServiceValue> = HashMap::with_max_entries(SERVICES_MAX_ENTRIES, 0);

#[map]
static BACKENDS: HashMap<BackendKey, Backend> = HashMap::with_max_entries(BACKENDS_MAX_ENTRIES, 0);

#[map]
static SOCK_REV_NAT: LruHashMap<SockRevNatKey, ServiceAddr> = LruHashMap::with_max_entries(SOCK_REV_NAT_MAX_ENTRIES, 0);

#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTERS_LEN, 0);

#[map]
static AFFINITY: LruHashMap<AffinityKey, AffinityEntry> = LruHashMap::with_max_entries(AFFINITY_MAX_ENTRIES, 0);

/// Not preallocated: only the tables of programmed Maglev services take memory.
#[map]
static MAGLEV: HashMap<MaglevKey, Backend> = HashMap::with_max_entries(MAGLEV_MAX_ENTRIES, BPF_F_NO_PREALLOC);

const NANOS_PER_SECOND: u64 = 1_000_000_000;

/// The socket's peer is not a backend it was sent to by `try_translate`: nothing to restore.
struct NotTranslated;

/// Why a connect or send to a service is refused.
enum Reject {
    /// The service exists but has no (reachable) backend: fail fast, as kube-proxy's REJECT does.
    NoBackend,
}

#[cgroup_sock_addr(connect4)]
pub fn connect4(ctx: SockAddrContext) -> i32 {
    match try_translate(&ctx, Counter::Connect) {
        Ok(()) => SYS_PROCEED,
        Err(Reject::NoBackend) => SYS_REJECT,
    }
}

#[cgroup_sock_addr(sendmsg4)]
pub fn sendmsg4(ctx: SockAddrContext) -> i32 {
    match try_translate(&ctx, Counter::Sendmsg) {
        Ok(()) => SYS_PROCEED,
        Err(Reject::NoBackend) => SYS_REJECT,
    }
}

#[cgroup_sock_addr(recvmsg4)]
pub fn recvmsg4(ctx: SockAddrContext) -> i32 {
    match try_restore(&ctx, Counter::Recvmsg) {
        // The kernel accepts only "proceed" from recvmsg hooks.
        Ok(()) | Err(NotTranslated) => SYS_PROCEED,
    }
}

#[cgroup_sock_addr(getpeername4)]
pub fn getpeername4(ctx: SockAddrContext) -> i32 {
    match try_restore(&ctx, Counter::Getpeername) {
        // The kernel accepts only "proceed" from getpeername hooks.
        Ok(()) | Err(NotTranslated) => SYS_PROCEED,
    }
}

/// Service address → backend: picks a backend at random and rewrites the destination in place.
#[inline(always)]
fn try_translate(ctx: &SockAddrContext, counter: Counter) -> Result<(), Reject> {
    let sa = ctx.sock_addr;
    // SAFETY: the kernel passes a valid `bpf_sock_addr`; these fields are readable in connect4
    // and sendmsg4 (the verifier checks every access).
    let (vip, port, proto) =
        unsafe { (read(&raw const (*sa).user_ip4), read(&raw const (*sa).user_port), read(&raw const (*sa).protocol)) };
    let (port, proto) = (port as u16, proto as u8);
    let key = ServiceKey { vip, port, proto, _pad: 0 };
    // SAFETY: the value is copied out at once; a concurrent update can only make it stale.
    let Some(&service) = (unsafe { SERVICES.get(key) }) else {
        return Ok(());
    };
    let client = if service.affinity_timeout == 0 {
        None
    } else {
        // SAFETY: the context is a socket address context, for which the helper is defined.
        Some((unsafe { bpf_get_netns_cookie(ctx.as_ptr()) }, AFFINITY_NETNS))
    };
    // Maglev is for external flows only (see the module docs): no flow hash here.
    let Some(backend) = select_backend(service, client, None) else {
        bump(Counter::NoBackend);
        return Err(Reject::NoBackend);
    };
    // SAFETY: `user_ip4` and `user_port` are writable (4-byte stores) in connect4 and sendmsg4.
    unsafe {
        (*sa).user_ip4 = backend.addr;
        (*sa).user_port = u32::from(backend.port);
    }
    bump(counter);
    // SAFETY: the context is a socket address context, for which the helper is defined.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let rev_key = SockRevNatKey { cookie, addr: backend.addr, port: backend.port, _pad: 0 };
    if SOCK_REV_NAT.insert(rev_key, ServiceAddr { vip, port, _pad: 0 }, 0).is_err() {
        bump(Counter::RevNatUpdateFailed);
        warn!(ctx, "reverse entry for {:i}:{} not written", u32::from_be(vip), u16::from_be(port));
    }
    Ok(())
}

/// The backend for a new connection or flow of `client` (an [`AffinityKey`]'s `client` and
/// `kind`, given when the service has session affinity): the client's remembered backend while
/// it is fresh and still the service's, else a new pick, which is then remembered. The new pick
/// is the service's Maglev entry for `flow` (a [`keelson_ebpf_common::maglev_flow_hash`], given
/// for external flows) when the service has [`keelson_ebpf_common::SERVICE_F_MAGLEV`], else one at random. `None`
/// when the service has no backend.
#[inline(always)]
pub(crate) fn select_backend(service: ServiceValue, client: Option<(u64, u8)>, flow: Option<u32>) -> Option<Backend> {
    let Some((client, kind)) = client.filter(|_| service.affinity_timeout != 0) else {
        return new_backend(service, flow).map(|(backend, _)| backend);
    };
    if service.count == 0 {
        return None;
    }
    let key = AffinityKey { client, service: service.id, kind, _pad: [0; 3] };
    // SAFETY: `bpf_ktime_get_ns` has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: copied out at once; a concurrent update can only make the value stale.
    if let Some(&entry) = unsafe { AFFINITY.get(key) } {
        // Another CPU may have stored a later time than `now`: that is fresh too.
        let fresh = now.saturating_sub(entry.last_used) <= u64::from(service.affinity_timeout) * NANOS_PER_SECOND;
        if fresh && let Some((backend, slot)) = find_backend(service, &entry) {
            remember(&key, backend, slot, now);
            bump(Counter::AffinityHit);
            return Some(backend);
        }
    }
    let (backend, slot) = new_backend(service, flow)?;
    remember(&key, backend, slot, now);
    Some(backend)
}

/// A backend for a flow without conntrack or affinity entry, and its slot (a hint for
/// [`remember`]): from the Maglev table when the service has one and `flow` is given, else at
/// random. `None` when the service has no backend.
#[inline(always)]
fn new_backend(service: ServiceValue, flow: Option<u32>) -> Option<(Backend, u32)> {
    if service.count == 0 {
        return None;
    }
    if service.maglev()
        && let Some(hash) = flow
    {
        let key = MaglevKey { service: service.id, index: hash % MAGLEV_TABLE_SIZE };
        // SAFETY: copied out at once; a concurrent update can only make the value stale.
        if let Some(&backend) = unsafe { MAGLEV.get(key) } {
            bump(Counter::MaglevPick);
            // The table does not know slots; 0 is a hint like any other (`find_backend` scans).
            return Some((backend, 0));
        }
        // The table is being written or deleted: fall back rather than drop the flow.
        bump(Counter::MaglevMiss);
    }
    pick_backend(service)
}

/// Stores (or refreshes) a client's backend.
#[inline(always)]
fn remember(key: &AffinityKey, backend: Backend, slot: u32, now: u64) {
    // The slot is only a hint for the next lookup (a truncated one just misses).
    let entry = AffinityEntry { last_used: now, addr: backend.addr, port: backend.port, slot: slot as u16 };
    if AFFINITY.insert(key, entry, 0).is_err() {
        bump(Counter::AffinityUpdateFailed);
    }
}

/// The remembered backend of an affinity entry and its current slot, if it is still one of the
/// service's backends: at its remembered slot, else (it moved when another backend was removed)
/// in the first [`AFFINITY_SCAN_SLOTS`] slots.
#[inline(always)]
fn find_backend(ServiceValue { id, count, .. }: ServiceValue, entry: &AffinityEntry) -> Option<(Backend, u32)> {
    let is_it = |slot: u32| {
        // SAFETY: copied out at once.
        unsafe { BACKENDS.get(BackendKey { service: id, slot }) }
            .copied()
            .filter(|backend| backend.addr == entry.addr && backend.port == entry.port)
            .map(|backend| (backend, slot))
    };
    let hint = u32::from(entry.slot);
    if hint < count
        && let Some(found) = is_it(hint)
    {
        return Some(found);
    }
    for slot in 0..AFFINITY_SCAN_SLOTS {
        if slot >= count {
            break;
        }
        if let Some(found) = is_it(slot) {
            return Some(found);
        }
    }
    None
}

/// One of the service's backends, at random, and its slot; `None` when it has none.
#[inline(always)]
fn pick_backend(ServiceValue { id, count, .. }: ServiceValue) -> Option<(Backend, u32)> {
    // SAFETY: `bpf_get_prandom_u32` has no preconditions.
    let slot = (unsafe { bpf_get_prandom_u32() }).checked_rem(count)?;
    // A slot at or above the count is being dropped by the datapath (it shrinks the count before
    // deleting the tail); slot 0 stays valid while the count is not zero.
    // SAFETY: copied out at once; a concurrent update can only make the value stale.
    unsafe {
        match BACKENDS.get(BackendKey { service: id, slot }) {
            Some(&backend) => Some((backend, slot)),
            None => BACKENDS.get(BackendKey { service: id, slot: 0 }).map(|&backend| (backend, 0)),
        }
    }
}

/// Backend → service address, for a socket that `try_translate` sent to that backend.
#[inline(always)]
fn try_restore(ctx: &SockAddrContext, counter: Counter) -> Result<(), NotTranslated> {
    let sa = ctx.sock_addr;
    // SAFETY: the context is a socket address context, for which the helper is defined.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    // SAFETY: `user_ip4`/`user_port` are readable in recvmsg4 and getpeername4.
    let (addr, port) = unsafe { (read(&raw const (*sa).user_ip4), read(&raw const (*sa).user_port) as u16) };
    // SAFETY: copied out at once.
    let &ServiceAddr { vip, port: service_port, .. } =
        unsafe { SOCK_REV_NAT.get(SockRevNatKey { cookie, addr, port, _pad: 0 }) }.ok_or(NotTranslated)?;
    // SAFETY: `user_ip4` and `user_port` are writable (4-byte stores) in these hooks.
    unsafe {
        (*sa).user_ip4 = vip;
        (*sa).user_port = u32::from(service_port);
    }
    bump(counter);
    Ok(())
}

/// A full 4-byte context load: the verifier rejects the narrower loads LLVM would otherwise make
/// of fields such as `protocol` when only their low byte is used.
///
/// # Safety
/// `field` points into the program's `bpf_sock_addr` context.
#[inline(always)]
unsafe fn read(field: *const u32) -> u32 {
    // SAFETY: the caller's contract.
    unsafe { core::ptr::read_volatile(field) }
}

#[inline(always)]
fn bump(counter: Counter) {
    if let Some(value) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: a per-CPU slot, so no other program writes it concurrently.
        unsafe { *value += 1 };
    }
}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Unreachable in verified code: the verifier rejects a program whose panic path is live.
    loop {
        core::hint::spin_loop();
    }
}

/// Host builds only type-check the programs.
#[cfg(not(target_arch = "bpf"))]
fn main() {}

/// The kernel needs a license string, and a GPL-compatible one for `bpf_fib_lookup` (GPL-only),
/// which `tc_nat` and `xdp_nodeport` need to forward SNAT'd packets themselves. The kernel
/// accepts only a fixed list of strings (`license_is_gpl_compatible`), which has no Apache-2.0
/// and no SPDX expressions; "Dual MIT/GPL" is aya's template default. The other helpers used here
/// are not GPL-only.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
