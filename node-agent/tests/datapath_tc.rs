//! Tests of `tc_nat`, the TC per-packet service NAT program, with `BPF_PROG_TEST_RUN`, as root.
//!
//! Each test loads the embedded object (private maps, nothing attached), programs services with
//! [`Datapath::sync`] and runs the program on crafted frames: the verdict, the rewritten headers
//! (checksums recomputed from scratch), the conntrack maps and the counters are checked. The
//! kernel runs the program on a buffer, so no interface or namespace is involved.
//!
//! One test, [`netns::client_reaches_a_backend_through_the_vip`], also runs real traffic: client
//! and backend namespaces joined to a "node" namespace by veths, `tc_nat` on the node-side veths'
//! ingress (see its module for the topology and cleanup).

#[path = "common/packet.rs"]
mod packet;
#[path = "common/topology.rs"]
mod topology;

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddrV4};

use aya::maps::{HashMap, Map, MapData};
use keelson_ebpf_common::{
    AFFINITY_IPV4, AffinityKey, CT_SHORT_TIMEOUT, CT_TCP_TIMEOUT, Counter, CtEntry, CtKey, PROG_TC_NAT,
};
use node_agent::datapath::{Config, Datapath, Protocol, Service, bpffs};
use packet::{
    ETH_HLEN, ETH_P_IPV6, Frame, IP_MF, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN,
};

const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
/// A service without endpoints.
const EMPTY_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 11);
/// No service at all.
const OTHER_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 12);
const TCP_BACKENDS: [SocketAddrV4; 3] = [
    SocketAddrV4::new(Ipv4Addr::new(10, 244, 1, 2), 8080),
    SocketAddrV4::new(Ipv4Addr::new(10, 244, 1, 3), 8080),
    SocketAddrV4::new(Ipv4Addr::new(10, 244, 2, 4), 8080),
];
const UDP_BACKENDS: [SocketAddrV4; 2] =
    [SocketAddrV4::new(Ipv4Addr::new(10, 244, 1, 2), 5353), SocketAddrV4::new(Ipv4Addr::new(10, 244, 2, 4), 5353)];
const CLIENT: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 244, 0, 5), 40_000);

fn web() -> SocketAddrV4 {
    SocketAddrV4::new(VIP, 80)
}

fn dns() -> SocketAddrV4 {
    SocketAddrV4::new(VIP, 53)
}

/// A datapath with a TCP service (three backends), a UDP service (two) and an empty TCP service.
struct Nat {
    datapath: Datapath,
}

impl Nat {
    fn new() -> Self {
        Self::with_config(&Config::default())
    }

    fn with_config(config: &Config) -> Self {
        let mut datapath = Datapath::load(config).expect("load the eBPF programs");
        datapath
            .sync(&[
                Service {
                    vip: VIP,
                    port: 80,
                    proto: Protocol::Tcp,
                    backends: TCP_BACKENDS.to_vec(),
                    affinity: None,
                    maglev: false,
                },
                Service {
                    vip: VIP,
                    port: 53,
                    proto: Protocol::Udp,
                    backends: UDP_BACKENDS.to_vec(),
                    affinity: None,
                    maglev: false,
                },
                Service {
                    vip: EMPTY_VIP,
                    port: 80,
                    proto: Protocol::Tcp,
                    backends: Vec::new(),
                    affinity: None,
                    maglev: false,
                },
            ])
            .expect("program the services");
        Self { datapath }
    }

    fn run(&self, frame: &[u8]) -> (u32, Vec<u8>) {
        let fd = self.datapath.program_fd(PROG_TC_NAT).expect("tc_nat is loaded");
        packet::test_run(fd, frame)
    }

    /// Runs `frame` and expects it through (`TC_ACT_OK`) with its bytes unchanged.
    fn passes_unchanged(&self, frame: &[u8], what: &str) {
        let fd = self.datapath.program_fd(PROG_TC_NAT).expect("tc_nat is loaded");
        let (verdict, out) = packet::try_test_run(fd, frame).unwrap_or_else(|error| panic!("{what}: {error}"));
        assert_eq!(verdict, TC_ACT_OK, "{what}: verdict");
        assert_eq!(out, frame, "{what}: bytes unchanged");
    }

    /// Runs `frame`, expects `TC_ACT_OK` and valid checksums, and returns the rewritten frame.
    fn translated(&self, frame: &Frame) -> (packet::Parsed, Vec<u8>) {
        let (verdict, out) = self.run(&frame.build());
        assert_eq!(verdict, TC_ACT_OK, "verdict for {frame:?}");
        (packet::parse_checked(&out), out)
    }

    fn counter(&self, which: Counter) -> u64 {
        self.datapath.counter(which).expect("read the counter")
    }
}

#[test]
fn tcp_syn_to_a_service_goes_to_a_backend_with_valid_checksums_and_is_tracked() {
    let nat = Nat::new();
    let syn = Frame { payload: b"hello".to_vec(), ..Frame::tcp(CLIENT, web()) };
    let (parsed, out) = nat.translated(&syn);
    assert!(TCP_BACKENDS.contains(&parsed.dst), "{} is a backend", parsed.dst);
    assert_eq!((parsed.src, parsed.proto), (CLIENT, IPPROTO_TCP), "source untouched");
    // Only the destination and the checksums changed.
    let original = syn.build();
    let ip = ETH_HLEN;
    let tcp = ETH_HLEN + 20;
    for (at, (before, after)) in original.iter().zip(&out).enumerate() {
        let rewritten = (ip + 10..ip + 12).contains(&at)
            || (ip + 16..ip + 20).contains(&at)
            || (tcp + 2..tcp + 4).contains(&at)
            || (tcp + 16..tcp + 18).contains(&at);
        if !rewritten {
            assert_eq!(before, after, "byte {at} is not the program's to change");
        }
    }
    assert_eq!(out.len(), original.len());

    let flow = CtKey::new(CLIENT, web(), IPPROTO_TCP);
    let conntrack = nat.datapath.conntrack().expect("read CT");
    assert_eq!(conntrack.len(), 1, "{conntrack:?}");
    let (key, entry) = conntrack[0];
    assert_eq!(key, flow);
    assert_eq!((entry.backend(), entry.service()), (parsed.dst, web()));
    let rev_nat = nat.datapath.rev_nat().expect("read CT_REV");
    assert_eq!(rev_nat.len(), 1, "{rev_nat:?}");
    let (reply, service) = rev_nat[0];
    assert_eq!(reply, CtKey::new(parsed.dst, CLIENT, IPPROTO_TCP), "keyed by the backend's reply");
    assert_eq!((service.service(), service.client()), (web(), None), "no SNAT without local pod CIDRs");
    assert_eq!(entry.snat(), None);
    assert_eq!(nat.counter(Counter::TcDnat), 1);
}

#[test]
fn a_flow_stays_on_its_backend_and_flows_spread() {
    let nat = Nat::new();
    let (first, _) = nat.translated(&Frame::tcp(CLIENT, web()));
    for _ in 0..30 {
        let ack = Frame { tcp_flags: TCP_ACK, payload: b"more".to_vec(), ..Frame::tcp(CLIENT, web()) };
        let (next, _) = nat.translated(&ack);
        assert_eq!(next.dst, first.dst, "every packet of the flow goes to its backend");
    }
    assert_eq!(nat.datapath.conntrack().expect("read CT").len(), 1, "one flow, one entry");

    // 60 other flows: with three backends, all on one would be a (1/3)^59 chance.
    let backends: BTreeSet<SocketAddrV4> = (1..=60)
        .map(|i| nat.translated(&Frame::tcp(SocketAddrV4::new(*CLIENT.ip(), 41_000 + i), web())).0.dst)
        .collect();
    assert!(backends.len() > 1, "new flows pick backends at random: {backends:?}");
    assert!(backends.iter().all(|b| TCP_BACKENDS.contains(b)), "{backends:?}");
    assert_eq!(nat.datapath.conntrack().expect("read CT").len(), 61);
    assert_eq!(nat.datapath.rev_nat().expect("read CT_REV").len(), 61);
    assert_eq!(nat.counter(Counter::TcDnat), 91);
}

#[test]
fn a_backend_reply_comes_from_the_service() {
    let nat = Nat::new();
    let (request, _) = nat.translated(&Frame::tcp(CLIENT, web()));
    let backend = request.dst;

    let syn_ack = Frame { tcp_flags: TCP_SYN | TCP_ACK, payload: b"welcome".to_vec(), ..Frame::tcp(backend, CLIENT) };
    let (reply, out) = nat.translated(&syn_ack);
    assert_eq!((reply.src, reply.dst), (web(), CLIENT), "the client sees the service address");
    assert_eq!(&out[out.len() - 7..], b"welcome", "payload untouched");
    assert_eq!(nat.counter(Counter::TcRevNat), 1);

    // The same backend answering another client port, or another backend: not a translated flow.
    let other_port = Frame::tcp(backend, SocketAddrV4::new(*CLIENT.ip(), 40_001)).build();
    nat.passes_unchanged(&other_port, "reply to an untracked client port");
    let other_backend = TCP_BACKENDS.into_iter().find(|b| *b != backend).expect("three backends");
    nat.passes_unchanged(&Frame::tcp(other_backend, CLIENT).build(), "reply from another backend");
    assert_eq!(nat.counter(Counter::TcRevNat), 1);
}

#[test]
fn a_reset_in_either_direction_forgets_the_flow() {
    let nat = Nat::new();
    let (request, _) = nat.translated(&Frame::tcp(CLIENT, web()));
    let backend = request.dst;
    let reset = Frame { tcp_flags: TCP_RST | TCP_ACK, ..Frame::tcp(CLIENT, web()) };
    let (out, _) = nat.translated(&reset);
    assert_eq!(out.dst, backend, "the reset itself still reaches the backend");
    assert!(nat.datapath.conntrack().expect("read CT").is_empty(), "the client's reset ends the flow");
    assert!(nat.datapath.rev_nat().expect("read CT_REV").is_empty());

    let other = SocketAddrV4::new(*CLIENT.ip(), 40_100);
    let (request, _) = nat.translated(&Frame::tcp(other, web()));
    let reset = Frame { tcp_flags: TCP_RST, ..Frame::tcp(request.dst, other) };
    let (out, _) = nat.translated(&reset);
    assert_eq!((out.src, out.dst), (web(), other), "the backend's reset is translated back");
    assert!(nat.datapath.conntrack().expect("read CT").is_empty(), "the backend's reset ends the flow");
    assert!(nat.datapath.rev_nat().expect("read CT_REV").is_empty());
}

/// A `Nat` whose maps are pinned on a private bpffs, so that a test can write conntrack entries
/// as time or an earlier connection would have left them. Unmounted on drop.
struct PinnedNat {
    nat: Option<Nat>,
    mount: tempfile::TempDir,
}

impl PinnedNat {
    fn new() -> Self {
        let mount = tempfile::tempdir().expect("temporary directory");
        assert!(bpffs::ensure_mounted(mount.path()).expect("mount bpffs"), "a fresh directory is not bpffs yet");
        let nat = Nat::with_config(&Config { pin_dir: Some(mount.path().join("keelson")) });
        Self { nat: Some(nat), mount }
    }

    fn nat(&self) -> &Nat {
        self.nat.as_ref().expect("loaded")
    }

    /// The flow's conntrack entry.
    fn entry(&self, flow: CtKey) -> CtEntry {
        let conntrack = self.nat().datapath.conntrack().expect("read CT");
        conntrack.into_iter().find(|(key, _)| *key == flow).map(|(_, entry)| entry).expect("the flow is tracked")
    }

    /// Rewrites the flow's conntrack entry through the pinned map.
    fn set_entry(&self, flow: CtKey, entry: CtEntry) {
        let map = MapData::from_pin(self.mount.path().join("keelson").join(keelson_ebpf_common::CT)).expect("open CT");
        let mut conntrack: HashMap<MapData, CtKey, CtEntry> =
            HashMap::try_from(Map::LruHashMap(map)).expect("CT is an LRU hash map");
        conntrack.insert(flow, entry, 0).expect("write the entry");
    }
}

impl Drop for PinnedNat {
    fn drop(&mut self) {
        self.nat = None;
        if let Err(error) = nix::mount::umount2(self.mount.path(), nix::mount::MntFlags::MNT_DETACH) {
            eprintln!("unmount {}: {error}", self.mount.path().display());
        }
    }
}

/// Not one of the service's backends: where a test points an entry to see whether it is used.
const DECOY: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 244, 9, 9), 9999);

fn pointed_at_decoy(entry: CtEntry) -> CtEntry {
    CtEntry { backend: u32::from_ne_bytes(DECOY.ip().octets()), backend_port: DECOY.port().to_be(), ..entry }
}

#[test]
fn an_idle_flow_expires_and_its_next_packet_starts_afresh() {
    let pinned = PinnedNat::new();
    let nat = pinned.nat();
    let udp = CtKey::new(CLIENT, dns(), IPPROTO_UDP);
    nat.translated(&Frame::udp(CLIENT, dns()));
    let fresh = pinned.entry(udp);
    assert!(!fresh.closing());
    assert_eq!(fresh.timeout(IPPROTO_UDP), CT_SHORT_TIMEOUT);

    // A recent entry is the flow's: its packets follow it, wherever it points.
    pinned.set_entry(udp, pointed_at_decoy(fresh));
    assert_eq!(nat.translated(&Frame::udp(CLIENT, dns())).0.dst, DECOY, "a live entry is followed");

    // Idle past the UDP timeout: the next datagram picks a real backend again.
    let idle = CtEntry { seen: fresh.seen.wrapping_sub(CT_SHORT_TIMEOUT + 2), ..pointed_at_decoy(fresh) };
    pinned.set_entry(udp, idle);
    let (out, _) = nat.translated(&Frame::udp(CLIENT, dns()));
    assert!(UDP_BACKENDS.contains(&out.dst), "{} is a backend", out.dst);
    let renewed = pinned.entry(udp);
    assert_eq!(renewed.backend(), out.dst);
    assert!(renewed.seen.wrapping_sub(fresh.seen) < 5, "stamped now");

    // An open TCP connection idle as long is still live (24 h).
    let tcp = CtKey::new(CLIENT, web(), IPPROTO_TCP);
    nat.translated(&Frame::tcp(CLIENT, web()));
    let entry = pinned.entry(tcp);
    pinned.set_entry(tcp, CtEntry { seen: entry.seen.wrapping_sub(CT_SHORT_TIMEOUT + 2), ..pointed_at_decoy(entry) });
    let ack = Frame { tcp_flags: TCP_ACK, ..Frame::tcp(CLIENT, web()) };
    assert_eq!(nat.translated(&ack).0.dst, DECOY, "TCP waits 24 h");
    assert_eq!(entry.timeout(IPPROTO_TCP), CT_TCP_TIMEOUT);
    pinned.set_entry(tcp, CtEntry { seen: entry.seen.wrapping_sub(CT_TCP_TIMEOUT + 2), ..pointed_at_decoy(entry) });
    assert!(TCP_BACKENDS.contains(&nat.translated(&ack).0.dst), "then it expires too");
}

#[test]
fn a_syn_reusing_a_closed_connections_tuple_starts_a_new_flow() {
    let pinned = PinnedNat::new();
    let nat = pinned.nat();
    let tcp = CtKey::new(CLIENT, web(), IPPROTO_TCP);
    nat.translated(&Frame::tcp(CLIENT, web()));
    // A retransmitted SYN of an open connection stays on the flow's backend.
    pinned.set_entry(tcp, pointed_at_decoy(pinned.entry(tcp)));
    assert_eq!(nat.translated(&Frame::tcp(CLIENT, web())).0.dst, DECOY);

    let fin = Frame { tcp_flags: TCP_FIN | TCP_ACK, ..Frame::tcp(CLIENT, web()) };
    assert_eq!(nat.translated(&fin).0.dst, DECOY, "the FIN still goes where the flow went");
    let closing = pinned.entry(tcp);
    assert!(closing.closing(), "a FIN marks the flow closing");
    assert_eq!(closing.timeout(IPPROTO_TCP), CT_SHORT_TIMEOUT);
    assert_eq!(nat.translated(&Frame { tcp_flags: TCP_ACK, ..Frame::tcp(CLIENT, web()) }).0.dst, DECOY, "last ACK");

    // A new connection from the same client port: a backend of its own, a fresh entry.
    let (out, _) = nat.translated(&Frame::tcp(CLIENT, web()));
    assert!(TCP_BACKENDS.contains(&out.dst), "{} is a backend", out.dst);
    let renewed = pinned.entry(tcp);
    assert!(!renewed.closing());
    assert_eq!(renewed.backend(), out.dst);
}

#[test]
fn a_syn_ack_on_a_closed_flows_tuple_is_another_connections_and_passes() {
    let pinned = PinnedNat::new();
    let nat = pinned.nat();
    let (request, _) = nat.translated(&Frame::tcp(CLIENT, web()));
    let backend = request.dst;
    let syn_ack = Frame { tcp_flags: TCP_SYN | TCP_ACK, ..Frame::tcp(backend, CLIENT) };
    assert_eq!(nat.translated(&syn_ack).0.src, web(), "the flow's own SYN-ACK is translated");

    // The backend closes; the flow is closing (marked by the reply's FIN).
    let fin = Frame { tcp_flags: TCP_FIN | TCP_ACK, ..Frame::tcp(backend, CLIENT) };
    assert_eq!(nat.translated(&fin).0.src, web());
    assert!(pinned.entry(CtKey::new(CLIENT, web(), IPPROTO_TCP)).closing(), "the reply's FIN marks the flow");

    // The client now connects straight to the backend from the same port: the backend's SYN-ACK
    // is not the service's and must reach the client as sent.
    nat.passes_unchanged(&syn_ack.build(), "SYN-ACK of a direct connection");
    assert!(nat.datapath.conntrack().expect("read CT").is_empty(), "the stale flow is forgotten");
    assert!(nat.datapath.rev_nat().expect("read CT_REV").is_empty());
    nat.passes_unchanged(&Frame { tcp_flags: TCP_ACK, ..Frame::tcp(backend, CLIENT) }.build(), "its data");
}

#[test]
fn udp_flows_to_a_removed_backend_are_forgotten_tcp_flows_drain() {
    let mut nat = Nat::new();
    let (udp, _) = nat.translated(&Frame::udp(CLIENT, dns()));
    let (tcp, _) = nat.translated(&Frame::tcp(CLIENT, web()));
    let other_client = SocketAddrV4::new(*CLIENT.ip(), 40_001);
    let (kept, _) = nat.translated(&Frame::udp(other_client, dns()));
    assert_eq!(nat.datapath.conntrack().expect("read CT").len(), 3);

    // The UDP flow's backend leaves the service (and so does the TCP flow's, from its own).
    let left: Vec<SocketAddrV4> = UDP_BACKENDS.into_iter().filter(|b| *b != udp.dst).collect();
    let service = |port, proto, backends: Vec<SocketAddrV4>| Service {
        vip: VIP,
        port,
        proto,
        backends,
        affinity: None,
        maglev: false,
    };
    nat.datapath.upsert(&service(53, Protocol::Udp, left.clone())).expect("remove a UDP backend");
    let tcp_left: Vec<SocketAddrV4> = TCP_BACKENDS.into_iter().filter(|b| *b != tcp.dst).collect();
    nat.datapath.upsert(&service(80, Protocol::Tcp, tcp_left)).expect("remove a TCP backend");

    let conntrack = nat.datapath.conntrack().expect("read CT");
    let flows: BTreeSet<CtKey> = conntrack.iter().map(|(key, _)| *key).collect();
    assert!(!flows.contains(&CtKey::new(CLIENT, dns(), IPPROTO_UDP)), "the UDP flow to the gone backend is forgotten");
    assert!(flows.contains(&CtKey::new(CLIENT, web(), IPPROTO_TCP)), "the TCP flow drains on its backend");
    let other_kept = flows.contains(&CtKey::new(other_client, dns(), IPPROTO_UDP));
    assert_eq!(other_kept, kept.dst != udp.dst, "a UDP flow to a remaining backend stays");
    let replies: Vec<SocketAddrV4> =
        nat.datapath.rev_nat().expect("read CT_REV").iter().map(|(key, _)| key.source()).collect();
    assert!(!replies.contains(&udp.dst), "no reverse entry from the gone backend is left: {replies:?}");
    // Its next datagram goes to a live backend.
    assert!(left.contains(&nat.translated(&Frame::udp(CLIENT, dns())).0.dst));
    assert_eq!(nat.translated(&Frame { tcp_flags: TCP_ACK, ..Frame::tcp(CLIENT, web()) }).0.dst, tcp.dst);

    // A removed UDP service takes its flows along.
    nat.datapath.remove(VIP, 53, Protocol::Udp).expect("remove the UDP service");
    let conntrack = nat.datapath.conntrack().expect("read CT");
    assert!(conntrack.iter().all(|(key, _)| key.proto != IPPROTO_UDP), "{conntrack:?}");
    assert!(nat.datapath.rev_nat().expect("read CT_REV").iter().all(|(key, _)| key.proto != IPPROTO_UDP));
}

#[test]
fn a_flow_keeps_its_backend_while_the_backends_change() {
    let mut nat = Nat::new();
    let (first, _) = nat.translated(&Frame::tcp(CLIENT, web()));
    // The flow's backend moves to another slot and others come and go: the flow follows CT.
    let mut backends: Vec<SocketAddrV4> = TCP_BACKENDS.iter().rev().copied().collect();
    backends.push(SocketAddrV4::new(Ipv4Addr::new(10, 244, 3, 9), 8080));
    backends.retain(|b| *b == first.dst || *b != TCP_BACKENDS[0]);
    nat.datapath
        .upsert(&Service {
            vip: VIP,
            port: 80,
            proto: Protocol::Tcp,
            backends: backends.clone(),
            affinity: None,
            maglev: false,
        })
        .expect("change the backends");
    for _ in 0..10 {
        let ack = Frame { tcp_flags: TCP_ACK, ..Frame::tcp(CLIENT, web()) };
        assert_eq!(nat.translated(&ack).0.dst, first.dst, "an established flow stays put");
    }

    // Service gone: its address is left alone, but replies of tracked flows are still restored.
    nat.datapath.remove(VIP, 80, Protocol::Tcp).expect("remove the service");
    nat.passes_unchanged(&Frame { tcp_flags: TCP_ACK, ..Frame::tcp(CLIENT, web()) }.build(), "no service any more");
    let (reply, _) = nat.translated(&Frame { tcp_flags: TCP_ACK, ..Frame::tcp(first.dst, CLIENT) });
    assert_eq!(reply.src, web());
}

#[test]
fn client_ip_affinity_sends_every_flow_of_a_client_to_one_backend() {
    let mut nat = Nat::new();
    let web_service = |backends: &[SocketAddrV4]| Service {
        vip: VIP,
        port: 80,
        proto: Protocol::Tcp,
        backends: backends.to_vec(),
        affinity: Some(std::time::Duration::from_secs(3_600)),
        maglev: false,
    };
    nat.datapath.upsert(&web_service(&TCP_BACKENDS)).expect("affinity on");
    let flow_from = |client: Ipv4Addr, port: u16| Frame::tcp(SocketAddrV4::new(client, port), web());

    // Two flows (source ports) from one client, and 18 more: one backend.
    let served: BTreeSet<SocketAddrV4> =
        (0..20).map(|i| nat.translated(&flow_from(*CLIENT.ip(), 42_000 + i)).0.dst).collect();
    assert_eq!(served.len(), 1, "every flow of the client reaches one backend: {served:?}");
    let pinned = *served.first().expect("one");
    assert_eq!(nat.counter(Counter::AffinityHit), 19);
    assert_eq!(nat.datapath.conntrack().expect("read CT").len(), 20, "still one conntrack entry per flow");
    let entries = nat.datapath.affinity().expect("read AFFINITY");
    assert_eq!(entries.len(), 1, "{entries:?}");
    let (key, entry) = entries[0];
    assert_eq!((key.kind, key.ipv4_client()), (AFFINITY_IPV4, Some(*CLIENT.ip())), "keyed by the source address");
    assert_eq!(key, AffinityKey::ipv4(*CLIENT.ip(), key.service));
    assert_eq!(entry.backend(), pinned);

    // Other clients pick their own; some land on the backend in the last slot.
    let web_slots = |nat: &mut Nat| {
        let services = nat.datapath.services().expect("list");
        services.into_iter().find(|s| s.port == 80 && s.vip == VIP).expect("the web service").backends
    };
    let slots = web_slots(&mut nat);
    let tail = slots[2];
    let clients: Vec<(Ipv4Addr, SocketAddrV4)> = (1..=40)
        .map(|i| {
            let client = Ipv4Addr::new(10, 244, 5, i);
            (client, nat.translated(&flow_from(client, 40_000)).0.dst)
        })
        .collect();
    let spread: BTreeSet<SocketAddrV4> = clients.iter().map(|(_, backend)| *backend).collect();
    assert!(spread.len() > 1, "clients spread: {spread:?}");
    let (on_tail, _) = *clients.iter().find(|(_, backend)| *backend == tail).expect("a client on the last slot");

    // Removing the backend in slot 0 moves the last one into it: its clients follow it there,
    // the removed one's clients move on.
    nat.datapath.upsert(&web_service(&slots[1..])).expect("remove slot 0");
    assert_eq!(web_slots(&mut nat)[0], tail, "the tail moved to slot 0");
    assert_eq!(nat.translated(&flow_from(on_tail, 40_001)).0.dst, tail, "a client follows its moved backend");
    let next = nat.translated(&flow_from(*CLIENT.ip(), 43_000)).0.dst;
    if pinned == slots[0] {
        assert!(slots[1..].contains(&next), "the removed backend's client moved on to {next}");
    } else {
        assert_eq!(next, pinned, "a kept backend keeps its clients");
    }
    // Established flows keep their backend (conntrack), affinity or not.
    let ack = Frame { tcp_flags: TCP_ACK, ..flow_from(*CLIENT.ip(), 42_000) };
    assert_eq!(nat.translated(&ack).0.dst, pinned);
}

#[test]
fn udp_is_translated_both_ways() {
    let nat = Nat::new();
    let (request, _) = nat.translated(&Frame::udp(CLIENT, dns()));
    assert!(UDP_BACKENDS.contains(&request.dst), "{}", request.dst);
    assert_eq!((request.src, request.proto), (CLIENT, IPPROTO_UDP));
    assert_ne!(request.l4_checksum, 0, "a UDP checksum stays present");
    for _ in 0..10 {
        assert_eq!(nat.translated(&Frame::udp(CLIENT, dns())).0.dst, request.dst, "UDP flows stick too");
    }
    let (reply, _) = nat.translated(&Frame::udp(request.dst, CLIENT));
    assert_eq!((reply.src, reply.dst), (dns(), CLIENT));
    assert_eq!((nat.counter(Counter::TcDnat), nat.counter(Counter::TcRevNat)), (11, 1));
}

#[test]
fn udp_without_checksum_keeps_none() {
    let nat = Nat::new();
    let query = Frame { udp_no_checksum: true, ..Frame::udp(CLIENT, dns()) };
    let (request, _) = nat.translated(&query);
    assert!(UDP_BACKENDS.contains(&request.dst), "{}", request.dst);
    assert_eq!(request.l4_checksum, 0, "checksum 0 (none) stays 0");
    let answer = Frame { udp_no_checksum: true, ..Frame::udp(request.dst, CLIENT) };
    let (reply, _) = nat.translated(&answer);
    assert_eq!((reply.src, reply.l4_checksum), (dns(), 0));
}

#[test]
fn ipv4_options_are_skipped_by_ihl() {
    let nat = Nat::new();
    // Router alert (4 bytes), then NOP, NOP, NOP, end of list.
    let options = vec![0x94, 0x04, 0x00, 0x00, 0x01, 0x01, 0x01, 0x00];
    let syn = Frame { ip_options: options.clone(), payload: b"opts".to_vec(), ..Frame::tcp(CLIENT, web()) };
    let (request, out) = nat.translated(&syn);
    assert!(TCP_BACKENDS.contains(&request.dst), "{}", request.dst);
    assert_eq!(request.src, CLIENT);
    assert_eq!(&out[ETH_HLEN + 20..ETH_HLEN + 28], &options[..], "options untouched");
    let udp = Frame { ip_options: options, ..Frame::udp(CLIENT, dns()) };
    assert!(UDP_BACKENDS.contains(&nat.translated(&udp).0.dst));
    let reply = Frame { ip_options: vec![0x01, 0x01, 0x01, 0x00], ..Frame::tcp(request.dst, CLIENT) };
    assert_eq!(nat.translated(&reply).0.src, web(), "reverse NAT with options too");
}

#[test]
fn traffic_that_is_not_a_service_passes_unchanged() {
    let nat = Nat::new();
    let cases = [
        ("unknown VIP", Frame::tcp(CLIENT, SocketAddrV4::new(OTHER_VIP, 80))),
        ("service address, other port", Frame::tcp(CLIENT, SocketAddrV4::new(VIP, 81))),
        ("UDP to a TCP-only port", Frame::udp(CLIENT, web())),
        ("TCP to a UDP-only port", Frame::tcp(CLIENT, dns())),
        ("pod to pod", Frame::tcp(CLIENT, TCP_BACKENDS[0])),
        (
            "ICMP to a service address",
            Frame { proto: IPPROTO_ICMP, payload: vec![8, 0, 0, 0], ..Frame::tcp(CLIENT, web()) },
        ),
        ("not IPv4", Frame { ether_type: ETH_P_IPV6, ..Frame::tcp(CLIENT, web()) }),
    ];
    for (what, frame) in cases {
        nat.passes_unchanged(&frame.build(), what);
    }
    assert!(nat.datapath.conntrack().expect("read CT").is_empty());
    for counter in [Counter::TcDnat, Counter::TcRevNat, Counter::TcMalformed, Counter::TcFragment] {
        assert_eq!(nat.counter(counter), 0, "{}", counter.name());
    }
}

#[test]
fn a_service_without_backends_drops() {
    let nat = Nat::new();
    let (verdict, _) = nat.run(&Frame::tcp(CLIENT, SocketAddrV4::new(EMPTY_VIP, 80)).build());
    assert_eq!(verdict, TC_ACT_SHOT);
    assert_eq!(nat.counter(Counter::TcNoBackend), 1);
    assert!(nat.datapath.conntrack().expect("read CT").is_empty());
}

#[test]
fn fragments_pass_unchanged_and_are_counted() {
    let nat = Nat::new();
    let first = Frame { frag_off: IP_MF, ..Frame::udp(CLIENT, dns()) };
    nat.passes_unchanged(&first.build(), "first fragment (MF)");
    let later = Frame { frag_off: 185, ..Frame::udp(CLIENT, dns()) };
    nat.passes_unchanged(&later.build(), "last fragment (offset)");
    let middle = Frame { frag_off: IP_MF | 1, ..Frame::tcp(CLIENT, web()) };
    nat.passes_unchanged(&middle.build(), "middle TCP fragment");
    assert_eq!(nat.counter(Counter::TcFragment), 3);
    assert_eq!(nat.counter(Counter::TcDnat), 0);
    assert!(nat.datapath.conntrack().expect("read CT").is_empty());
}

#[test]
fn truncated_and_malformed_frames_pass_unchanged_and_are_counted() {
    let nat = Nat::new();
    for (what, frame) in packet::malformed(CLIENT, web(), dns()) {
        nat.passes_unchanged(&frame, what);
    }
    let fd = nat.datapath.program_fd(PROG_TC_NAT).expect("the program is loaded");
    let ran = packet::short_frames_pass(fd, &Frame::tcp(CLIENT, web()).build(), TC_ACT_OK);
    assert_eq!(nat.counter(Counter::TcMalformed), 8 + ran);
    assert_eq!(nat.counter(Counter::TcDnat), 0);
    assert!(nat.datapath.conntrack().expect("read CT").is_empty());
}

/// The checks above would see a bad checksum: a rewrite without fixing it is caught.
#[test]
fn the_checksum_check_catches_a_stale_checksum() {
    let mut frame = Frame::tcp(CLIENT, web()).build();
    packet::parse_checked(&frame);
    // Destination port 80 → 81 without touching the TCP checksum.
    frame[ETH_HLEN + 20 + 3] = 81;
    let caught = std::panic::catch_unwind(|| packet::parse_checked(&frame));
    assert!(caught.is_err(), "a stale TCP checksum must fail the check");
}

#[test]
fn the_committed_object_translates_too() {
    static PREBUILT: &[u8] = aya::include_bytes_aligned!("../../ebpf/prebuilt/keelson.bpf.o");
    let mut datapath = Datapath::load_object(PREBUILT, &Config::default()).expect("load the committed object");
    datapath
        .sync(&[Service {
            vip: VIP,
            port: 80,
            proto: Protocol::Tcp,
            backends: TCP_BACKENDS[..1].to_vec(),
            affinity: None,
            maglev: false,
        }])
        .expect("program");
    let fd = datapath.program_fd(PROG_TC_NAT).expect("tc_nat is loaded");
    let (verdict, out) = packet::test_run(fd, &Frame::tcp(CLIENT, web()).build());
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(packet::parse_checked(&out).dst, TCP_BACKENDS[0]);
}

/// Real traffic through `tc_nat` attached with TCX: namespaces `ktc-<pid>-{c,n,b}` for the client,
/// the node and the backend; veths `ktc<pid>c0`/`c1` (client ↔ node) and `ktc<pid>b0`/`b1`
/// (backend ↔ node), created straight inside the namespaces (never in the host's). The node
/// forwards between its two veths and runs `tc_nat` on both of their ingresses: the client's
/// request is translated on `c1`, the backend's reply on `b1`. Everything is deleted on drop,
/// also when an assertion fails.
mod netns {
    use std::io::Read as _;
    use std::net::{TcpListener, TcpStream, UdpSocket};
    use std::time::Duration;

    use super::*;
    use topology::Topology;

    const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 2);
    const NODE_CLIENT_SIDE: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 1);
    const BACKEND: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 244, 1, 2), 8080);
    const NODE_BACKEND_SIDE: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 1);
    const TIMEOUT: Duration = Duration::from_secs(5);
    const EXCHANGES: usize = 5;

    fn build() -> Topology {
        let mut topo = Topology::new("ktc");
        topo.add_ns("n");
        // Before the veths exist, so that they inherit `default`: the reply enters b1 with the
        // VIP as source, which the node has no route back to, so no reverse-path check.
        topo.ipv4_sysctls("n", &[("ip_forward", "1"), ("conf/*/rp_filter", "0")]);
        let client = topo.add_ns("c");
        let backend = topo.add_ns("b");
        topo.wire(&client, "c", CLIENT_ADDR, NODE_CLIENT_SIDE);
        topo.wire(&backend, "b", *BACKEND.ip(), NODE_BACKEND_SIDE);
        topo
    }

    #[test]
    fn client_reaches_a_backend_through_the_vip() {
        let topo = build();
        let mut datapath = Datapath::load(&Config::default()).expect("load the eBPF programs");
        datapath
            .sync(&[
                Service {
                    vip: VIP,
                    port: 80,
                    proto: Protocol::Tcp,
                    backends: vec![BACKEND],
                    affinity: None,
                    maglev: false,
                },
                Service {
                    vip: VIP,
                    port: 53,
                    proto: Protocol::Udp,
                    backends: vec![BACKEND],
                    affinity: None,
                    maglev: false,
                },
            ])
            .expect("program the services");
        let (c1, b1) = (topo.link("c1"), topo.link("b1"));
        topo.in_ns("n", || {
            for iface in [&c1, &b1] {
                datapath.attach_tc(iface).expect("attach tc_nat to a node-side veth");
            }
            assert!(
                matches!(datapath.attach_tc(&c1), Err(node_agent::datapath::Error::TcAttachedAlready { .. })),
                "attaching twice is refused"
            );
        });
        assert_eq!(datapath.tc_interfaces(), [c1.as_str(), b1.as_str()]);

        let (listener, udp) = topo.in_ns("b", || {
            (TcpListener::bind(BACKEND).expect("bind TCP"), UdpSocket::bind(BACKEND).expect("bind UDP"))
        });
        let server = topo.spawn_in_ns("b", move || topology::serve(listener, udp, EXCHANGES, TIMEOUT));

        let (tcp_seen, udp_seen) = topo.in_ns("c", || {
            let service = SocketAddrV4::new(VIP, 80);
            let tcp: Vec<(String, std::net::SocketAddr)> = (0..EXCHANGES)
                .map(|_| {
                    let mut stream = TcpStream::connect_timeout(&service.into(), TIMEOUT).expect("connect to the VIP");
                    stream.set_read_timeout(Some(TIMEOUT)).expect("timeout");
                    let mut reply = String::new();
                    stream.read_to_string(&mut reply).expect("read the backend's reply");
                    (reply.trim().to_owned(), stream.peer_addr().expect("peer"))
                })
                .collect();
            let dns = SocketAddrV4::new(VIP, 53);
            let udp: Vec<String> = (0..EXCHANGES)
                .map(|_| {
                    // A connected socket only accepts datagrams from the address it sent to.
                    let socket = UdpSocket::bind("0.0.0.0:0").expect("bind UDP client");
                    socket.set_read_timeout(Some(TIMEOUT)).expect("timeout");
                    socket.connect(dns).expect("connect UDP");
                    socket.send(b"who").expect("send");
                    let mut buf = [0; 64];
                    let len = socket.recv(&mut buf).expect("a reply from the VIP");
                    String::from_utf8_lossy(&buf[..len]).into_owned()
                })
                .collect();
            (tcp, udp)
        });
        server.join().expect("the server thread");
        for (seen_by_backend, peer) in &tcp_seen {
            assert_eq!(*peer, SocketAddrV4::new(VIP, 80).into(), "the client's peer is the VIP");
            let seen: SocketAddrV4 = seen_by_backend.parse().expect("the backend reports the client");
            assert_eq!(*seen.ip(), CLIENT_ADDR, "the backend sees the client (no SNAT)");
        }
        for seen_by_backend in &udp_seen {
            let seen: SocketAddrV4 = seen_by_backend.parse().expect("the backend reports the client");
            assert_eq!(*seen.ip(), CLIENT_ADDR);
        }

        let counter = |which| datapath.counter(which).expect("read the counter");
        assert!(counter(Counter::TcDnat) >= 2 * EXCHANGES as u64, "{}", counter(Counter::TcDnat));
        assert!(counter(Counter::TcRevNat) >= 2 * EXCHANGES as u64, "{}", counter(Counter::TcRevNat));
        let conntrack = datapath.conntrack().expect("read CT");
        assert!(conntrack.len() >= 2 * EXCHANGES, "{conntrack:?}");
        assert!(conntrack.iter().all(|(key, entry)| *key.source().ip() == CLIENT_ADDR && entry.backend() == BACKEND));

        topo.in_ns("n", || {
            datapath.detach_tc(&c1).expect("detach");
            datapath.detach_tc(&b1).expect("detach");
        });
        assert!(datapath.tc_interfaces().is_empty());
    }
}
