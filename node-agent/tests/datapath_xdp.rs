//! Tests of `xdp_nodeport`, the NodePort fast path, with `BPF_PROG_TEST_RUN`, as root.
//!
//! Each test loads the embedded object (private maps, nothing attached), programs NodePort
//! frontends with [`Datapath::sync`], makes `10.244.1.0/24` this node's pod CIDR and runs the
//! program on crafted frames (XDP takes the frame in `data_in` and hands the rewritten one back in
//! `data_out`): verdict, headers (checksums recomputed from scratch), conntrack maps and counters
//! are checked, and `tc_nat` is run on the same frames where the two must agree.
//!
//! SNAT (an outside client, a backend on another node) makes the programs forward packets
//! themselves after a FIB lookup, which `BPF_PROG_TEST_RUN` does in the calling thread's network
//! namespace: those tests run the programs inside a namespace of their own whose routes and
//! neighbours they set ([`snat`]), so the verdicts do not depend on the machine's.
//!
//! [`netns::node_port_reaches_a_local_backend_through_xdp_and_through_tc`] also runs real traffic
//! from an "outside" client namespace to a node namespace and on to a backend pod namespace (see
//! the module for the topology and cleanup); `datapath_snat.rs` does the same through a second node
//! to a pod behind it.

#[path = "common/ethtool.rs"]
mod ethtool;
#[path = "common/packet.rs"]
mod packet;
#[path = "common/topology.rs"]
mod topology;

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddrV4};

use keelson_ebpf_common::{Counter, CtKey, PROG_TC_NAT, PROG_XDP_NODEPORT, SNAT_PORT_MAX, SNAT_PORT_MIN};
use node_agent::datapath::{Cidr, Config, Datapath, Protocol, Service};
use packet::{ETH_HLEN, ETH_P_IPV6, Frame, IP_MF, IPPROTO_ICMP, IPPROTO_TCP, TCP_ACK, TCP_SYN};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_REDIRECT: u32 = 4;
const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;
const TC_ACT_REDIRECT: u32 = 7;

/// The node's address, which NodePort frontends are on.
const NODE_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 1);
/// This node's pod CIDR.
const POD_CIDR: &str = "10.244.1.0/24";
const LOCAL: [SocketAddrV4; 2] =
    [SocketAddrV4::new(Ipv4Addr::new(10, 244, 1, 2), 8080), SocketAddrV4::new(Ipv4Addr::new(10, 244, 1, 3), 8080)];
const REMOTE: [SocketAddrV4; 2] =
    [SocketAddrV4::new(Ipv4Addr::new(10, 244, 2, 4), 8080), SocketAddrV4::new(Ipv4Addr::new(10, 244, 3, 5), 8080)];
const LOCAL_DNS: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 244, 1, 2), 5353);
/// A client outside the cluster.
const CLIENT: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 9), 40_000);
/// A pod of this node as a client: its flows are never SNAT'd.
const POD_CLIENT: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 244, 1, 9), 40_000);

/// Local backends only.
const LOCAL_PORT: u16 = 30080;
/// The same port over UDP, one local backend.
const DNS_PORT: u16 = 30053;
/// Backends on other nodes only.
const REMOTE_PORT: u16 = 30081;
/// Local and remote backends.
const MIXED_PORT: u16 = 30082;
/// `externalTrafficPolicy: Local` and no endpoint on this node: no backends.
const EMPTY_PORT: u16 = 30083;
/// One backend on another node, [`REMOTE`]`[0]`; in [`snat`]'s namespace it is routed with a
/// known neighbour.
const SNAT_PORT: u16 = 30084;
/// One backend on another node, [`REMOTE`]`[1]`; in [`snat`]'s namespace it is routed through a
/// next hop without a neighbour entry.
const NO_NEIGH_PORT: u16 = 30085;
/// One backend on another node that [`snat`]'s namespace has no route to.
const UNROUTED_PORT: u16 = 30086;
const UNROUTED: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 244, 9, 9), 8080);

fn node_port(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(NODE_IP, port)
}

fn pod_cidr() -> Cidr {
    POD_CIDR.parse().expect("a CIDR")
}

struct Fast {
    datapath: Datapath,
}

impl Fast {
    fn new() -> Self {
        Self::with_object(None)
    }

    fn with_object(object: Option<&[u8]>) -> Self {
        let mut datapath = match object {
            Some(object) => Datapath::load_object(object, &Config::default()),
            None => Datapath::load(&Config::default()),
        }
        .expect("load the eBPF programs");
        let mixed = [LOCAL[0], REMOTE[0], REMOTE[1]].to_vec();
        datapath
            .sync(&[
                Service {
                    vip: NODE_IP,
                    port: LOCAL_PORT,
                    proto: Protocol::Tcp,
                    backends: LOCAL.to_vec(),
                    affinity: None,
                    maglev: false,
                },
                Service {
                    vip: NODE_IP,
                    port: DNS_PORT,
                    proto: Protocol::Udp,
                    backends: vec![LOCAL_DNS],
                    affinity: None,
                    maglev: false,
                },
                Service {
                    vip: NODE_IP,
                    port: REMOTE_PORT,
                    proto: Protocol::Tcp,
                    backends: REMOTE.to_vec(),
                    affinity: None,
                    maglev: false,
                },
                Service {
                    vip: NODE_IP,
                    port: MIXED_PORT,
                    proto: Protocol::Tcp,
                    backends: mixed,
                    affinity: None,
                    maglev: false,
                },
                Service {
                    vip: NODE_IP,
                    port: EMPTY_PORT,
                    proto: Protocol::Tcp,
                    backends: Vec::new(),
                    affinity: None,
                    maglev: false,
                },
                Service {
                    vip: NODE_IP,
                    port: SNAT_PORT,
                    proto: Protocol::Tcp,
                    backends: vec![REMOTE[0]],
                    affinity: None,
                    maglev: false,
                },
                Service {
                    vip: NODE_IP,
                    port: SNAT_PORT,
                    proto: Protocol::Udp,
                    backends: vec![REMOTE[0]],
                    affinity: None,
                    maglev: false,
                },
                Service {
                    vip: NODE_IP,
                    port: NO_NEIGH_PORT,
                    proto: Protocol::Tcp,
                    backends: vec![REMOTE[1]],
                    affinity: None,
                    maglev: false,
                },
                Service {
                    vip: NODE_IP,
                    port: UNROUTED_PORT,
                    proto: Protocol::Tcp,
                    backends: vec![UNROUTED],
                    affinity: None,
                    maglev: false,
                },
            ])
            .expect("program the services");
        datapath.set_local_cidrs(&[pod_cidr()]).expect("set the local pod CIDR");
        Self { datapath }
    }

    fn run(&self, prog: &'static str, frame: &[u8]) -> (u32, Vec<u8>) {
        let fd = self.datapath.program_fd(prog).expect("the program is loaded");
        packet::test_run(fd, frame)
    }

    fn xdp(&self, frame: &[u8]) -> (u32, Vec<u8>) {
        self.run(PROG_XDP_NODEPORT, frame)
    }

    /// Runs `frame` through XDP and expects `XDP_PASS` with its bytes unchanged.
    fn passes_unchanged(&self, frame: &[u8], what: &str) {
        let fd = self.datapath.program_fd(PROG_XDP_NODEPORT).expect("xdp_nodeport is loaded");
        let (verdict, out) = packet::try_test_run(fd, frame).unwrap_or_else(|error| panic!("{what}: {error}"));
        assert_eq!(verdict, XDP_PASS, "{what}: verdict");
        assert_eq!(out, frame, "{what}: bytes unchanged");
    }

    /// Runs `frame` through XDP, expects `XDP_PASS`, a changed frame and valid checksums.
    fn translated(&self, frame: &Frame) -> (packet::Parsed, Vec<u8>) {
        let original = frame.build();
        let (verdict, out) = self.xdp(&original);
        assert_eq!(verdict, XDP_PASS, "verdict for {frame:?}");
        assert_ne!(out, original, "{frame:?} was rewritten");
        (packet::parse_checked(&out), out)
    }

    fn counter(&self, which: Counter) -> u64 {
        self.datapath.counter(which).expect("read the counter")
    }
}

#[test]
fn node_port_syn_to_a_local_backend_is_translated_with_valid_checksums_and_tracked() {
    let fast = Fast::new();
    let syn = Frame { payload: b"hello".to_vec(), ..Frame::tcp(CLIENT, node_port(LOCAL_PORT)) };
    let (parsed, out) = fast.translated(&syn);
    assert!(LOCAL.contains(&parsed.dst), "{} is a local backend", parsed.dst);
    assert_eq!((parsed.src, parsed.proto), (CLIENT, IPPROTO_TCP), "the client's address is kept (no SNAT)");
    let original = syn.build();
    assert_eq!(out.len(), original.len());
    let (ip, tcp) = (ETH_HLEN, ETH_HLEN + 20);
    for (at, (before, after)) in original.iter().zip(&out).enumerate() {
        let rewritten = (ip + 10..ip + 12).contains(&at)
            || (ip + 16..ip + 20).contains(&at)
            || (tcp + 2..tcp + 4).contains(&at)
            || (tcp + 16..tcp + 18).contains(&at);
        if !rewritten {
            assert_eq!(before, after, "byte {at} is not the program's to change");
        }
    }

    let conntrack = fast.datapath.conntrack().expect("read CT");
    assert_eq!(conntrack.len(), 1, "{conntrack:?}");
    let (key, entry) = conntrack[0];
    assert_eq!(key, CtKey::new(CLIENT, node_port(LOCAL_PORT), IPPROTO_TCP));
    assert_eq!((entry.backend(), entry.service()), (parsed.dst, node_port(LOCAL_PORT)));
    assert_eq!(entry.snat(), None, "a local backend's replies pass this node anyway: no SNAT");
    let rev_nat = fast.datapath.rev_nat().expect("read CT_REV");
    assert_eq!(rev_nat.len(), 1, "{rev_nat:?}");
    assert_eq!(rev_nat[0].0, CtKey::new(parsed.dst, CLIENT, IPPROTO_TCP), "keyed by the backend's reply");
    assert_eq!((rev_nat[0].1.service(), rev_nat[0].1.client()), (node_port(LOCAL_PORT), None));
    assert_eq!(fast.counter(Counter::XdpDnat), 1);

    // The rest of the flow follows its entry.
    for _ in 0..10 {
        let ack = Frame { tcp_flags: TCP_ACK, payload: b"more".to_vec(), ..Frame::tcp(CLIENT, node_port(LOCAL_PORT)) };
        assert_eq!(fast.translated(&ack).0.dst, parsed.dst);
    }
    // The backend's reply is restored by tc_nat (on the pod's veth) from the entry XDP wrote.
    let syn_ack = Frame { tcp_flags: TCP_SYN | TCP_ACK, ..Frame::tcp(parsed.dst, CLIENT) };
    let (verdict, reply) = fast.run(PROG_TC_NAT, &syn_ack.build());
    assert_eq!(verdict, TC_ACT_OK);
    let reply = packet::parse_checked(&reply);
    assert_eq!((reply.src, reply.dst), (node_port(LOCAL_PORT), CLIENT), "the client sees the node port");
    assert_eq!((fast.counter(Counter::XdpDnat), fast.counter(Counter::TcRevNat)), (11, 1));
}

#[test]
fn udp_node_port_is_translated_with_and_without_checksum() {
    let fast = Fast::new();
    let (request, _) = fast.translated(&Frame::udp(CLIENT, node_port(DNS_PORT)));
    assert_eq!((request.src, request.dst), (CLIENT, LOCAL_DNS));
    assert_ne!(request.l4_checksum, 0, "a UDP checksum stays present");
    let other = SocketAddrV4::new(*CLIENT.ip(), 40_001);
    let (bare, _) = fast.translated(&Frame { udp_no_checksum: true, ..Frame::udp(other, node_port(DNS_PORT)) });
    assert_eq!((bare.dst, bare.l4_checksum), (LOCAL_DNS, 0), "checksum 0 (none) stays 0");
    assert_eq!(fast.datapath.conntrack().expect("read CT").len(), 2);
}

#[test]
fn ipv4_options_are_skipped_by_ihl() {
    let fast = Fast::new();
    let options = vec![0x94, 0x04, 0x00, 0x00, 0x01, 0x01, 0x01, 0x00];
    let syn =
        Frame { ip_options: options.clone(), payload: b"opts".to_vec(), ..Frame::tcp(CLIENT, node_port(LOCAL_PORT)) };
    let (request, out) = fast.translated(&syn);
    assert!(LOCAL.contains(&request.dst), "{}", request.dst);
    assert_eq!(&out[ETH_HLEN + 20..ETH_HLEN + 28], &options[..], "options untouched");
}

/// A local pod's flow to a remote backend is not SNAT'd (its replies come back through its veth
/// anyway), so XDP has nothing to forward.
#[test]
fn a_remote_backend_without_snat_is_left_to_tc() {
    let fast = Fast::new();
    let syn = Frame::tcp(POD_CLIENT, node_port(REMOTE_PORT)).build();
    fast.passes_unchanged(&syn, "first packet, remote backend");
    assert!(fast.datapath.conntrack().expect("read CT").is_empty(), "XDP records no flow it does not translate");
    assert_eq!(fast.counter(Counter::XdpNotLocal), 1);

    // tc_nat picks the backend and records it; XDP then sees the remote entry and still passes.
    let (verdict, out) = fast.run(PROG_TC_NAT, &syn);
    assert_eq!(verdict, TC_ACT_OK);
    let out = packet::parse_checked(&out);
    assert!(REMOTE.contains(&out.dst), "{}", out.dst);
    assert_eq!(out.src, POD_CLIENT, "no SNAT");
    fast.passes_unchanged(
        &Frame { tcp_flags: TCP_ACK, ..Frame::tcp(POD_CLIENT, node_port(REMOTE_PORT)) }.build(),
        "later packet",
    );
    assert_eq!(fast.counter(Counter::XdpNotLocal), 2);
    assert_eq!(fast.counter(Counter::XdpDnat), 0);
    assert_eq!(fast.datapath.conntrack().expect("read CT").len(), 1);
}

/// From a local pod (no SNAT, so XDP forwards nothing itself).
#[test]
fn with_local_and_remote_backends_only_flows_to_local_ones_are_translated() {
    let fast = Fast::new();
    let mut translated = BTreeSet::new();
    let mut passed = 0;
    for i in 0..60 {
        let frame = Frame::tcp(SocketAddrV4::new(*POD_CLIENT.ip(), 41_000 + i), node_port(MIXED_PORT)).build();
        let (verdict, out) = fast.xdp(&frame);
        assert_eq!(verdict, XDP_PASS);
        if out == frame {
            passed += 1;
        } else {
            translated.insert(packet::parse_checked(&out).dst);
        }
    }
    // One local backend of three: 60 flows all on one side would be a 2·(2/3)^60-ish chance.
    assert_eq!(translated.into_iter().collect::<Vec<_>>(), [LOCAL[0]], "only the local backend");
    assert!(passed > 0, "flows picking a remote backend pass");
    assert_eq!(fast.counter(Counter::XdpNotLocal), passed);
    assert_eq!(fast.datapath.conntrack().expect("read CT").len() as u64, 60 - passed);
}

#[test]
fn without_local_cidrs_nothing_is_local() {
    let mut fast = Fast::new();
    assert_eq!(fast.datapath.local_cidrs().expect("read"), [pod_cidr()]);
    fast.datapath.set_local_cidrs(&[]).expect("clear the local CIDRs");
    assert_eq!(fast.datapath.local_cidrs().expect("read"), []);
    fast.passes_unchanged(&Frame::tcp(CLIENT, node_port(LOCAL_PORT)).build(), "no local CIDR");
    // Nothing tells an outside client from a pod: no SNAT, so XDP leaves remote backends to TC,
    // which translates without SNAT.
    let syn = Frame::tcp(CLIENT, node_port(SNAT_PORT)).build();
    fast.passes_unchanged(&syn, "remote backend, no local CIDR");
    let (verdict, out) = fast.run(PROG_TC_NAT, &syn);
    let out = packet::parse_checked(&out);
    assert_eq!((verdict, out.src, out.dst), (TC_ACT_OK, CLIENT, REMOTE[0]), "DNAT only");
    assert_eq!(fast.counter(Counter::TcSnat), 0);
    let five: Vec<Cidr> = (0..5).map(|i| format!("10.244.{i}.0/24").parse().expect("cidr")).collect();
    assert!(fast.datapath.set_local_cidrs(&five).is_err(), "more than the map holds");
}

#[test]
fn traffic_that_is_not_a_node_port_passes_unchanged() {
    let fast = Fast::new();
    let cases = [
        ("unknown port", Frame::tcp(CLIENT, node_port(30999))),
        ("other address, same port", Frame::tcp(CLIENT, SocketAddrV4::new(Ipv4Addr::new(192, 168, 77, 2), LOCAL_PORT))),
        ("UDP to a TCP node port", Frame::udp(CLIENT, node_port(LOCAL_PORT))),
        ("straight to a pod", Frame::tcp(CLIENT, LOCAL[0])),
        (
            "ICMP to the node",
            Frame { proto: IPPROTO_ICMP, payload: vec![8, 0, 0, 0], ..Frame::tcp(CLIENT, node_port(LOCAL_PORT)) },
        ),
        ("not IPv4", Frame { ether_type: ETH_P_IPV6, ..Frame::tcp(CLIENT, node_port(LOCAL_PORT)) }),
        ("a backend's reply", Frame::tcp(LOCAL[0], CLIENT)),
    ];
    for (what, frame) in cases {
        fast.passes_unchanged(&frame.build(), what);
    }
    assert!(fast.datapath.conntrack().expect("read CT").is_empty());
    for counter in [Counter::XdpDnat, Counter::XdpNotLocal, Counter::XdpMalformed, Counter::XdpFragment] {
        assert_eq!(fast.counter(counter), 0, "{}", counter.name());
    }
}

#[test]
fn external_traffic_policy_local_without_a_local_endpoint_drops_in_xdp_and_tc() {
    let fast = Fast::new();
    let syn = Frame::tcp(CLIENT, node_port(EMPTY_PORT)).build();
    assert_eq!(fast.xdp(&syn).0, XDP_DROP);
    assert_eq!(fast.counter(Counter::XdpNoBackend), 1);
    assert_eq!(fast.run(PROG_TC_NAT, &syn).0, TC_ACT_SHOT, "TC alone drops it too");
    assert_eq!(fast.counter(Counter::TcNoBackend), 1);
    assert!(fast.datapath.conntrack().expect("read CT").is_empty());
}

#[test]
fn fragments_pass_unchanged_and_are_counted() {
    let fast = Fast::new();
    let first = Frame { frag_off: IP_MF, ..Frame::udp(CLIENT, node_port(DNS_PORT)) };
    fast.passes_unchanged(&first.build(), "first fragment (MF)");
    let later = Frame { frag_off: 185, ..Frame::udp(CLIENT, node_port(DNS_PORT)) };
    fast.passes_unchanged(&later.build(), "last fragment (offset)");
    let middle = Frame { frag_off: IP_MF | 1, ..Frame::tcp(CLIENT, node_port(LOCAL_PORT)) };
    fast.passes_unchanged(&middle.build(), "middle TCP fragment");
    assert_eq!(fast.counter(Counter::XdpFragment), 3);
    assert_eq!(fast.counter(Counter::XdpDnat), 0);
    assert!(fast.datapath.conntrack().expect("read CT").is_empty());
}

#[test]
fn truncated_and_malformed_frames_pass_unchanged_and_are_counted() {
    let fast = Fast::new();
    for (what, frame) in packet::malformed(CLIENT, node_port(LOCAL_PORT), node_port(DNS_PORT)) {
        fast.passes_unchanged(&frame, what);
    }
    let fd = fast.datapath.program_fd(PROG_XDP_NODEPORT).expect("the program is loaded");
    let ran = packet::short_frames_pass(fd, &Frame::tcp(CLIENT, node_port(LOCAL_PORT)).build(), XDP_PASS);
    assert_eq!(fast.counter(Counter::XdpMalformed), 8 + ran);
    assert_eq!(fast.counter(Counter::XdpDnat), 0);
    assert!(fast.datapath.conntrack().expect("read CT").is_empty());
}

#[test]
fn the_committed_object_has_the_fast_path_too() {
    static PREBUILT: &[u8] = aya::include_bytes_aligned!("../../ebpf/prebuilt/keelson.bpf.o");
    let fast = Fast::with_object(Some(PREBUILT));
    let (request, _) = fast.translated(&Frame::tcp(CLIENT, node_port(LOCAL_PORT)));
    assert!(LOCAL.contains(&request.dst), "{}", request.dst);
}

/// SNAT of NodePort flows from outside clients to backends on other nodes, run inside a namespace
/// `ksx-<pid>-n` (`ip_forward` on) whose routes make the FIB lookups deterministic: a veth pair
/// `ksx<pid>r0`/`r1` (both ends inside, `r0` holding [`snat::LINK_ADDR`] with MAC
/// [`snat::LINK_MAC`]), [`REMOTE`]`[0]`'s /24 and the client's via a next hop with a permanent
/// neighbour entry ([`snat::NEXT_HOP_MAC`]), [`REMOTE`]`[1]`'s via one without, and no route to
/// [`UNROUTED`]. The namespace is deleted on drop, also when an assertion fails.
mod snat {
    use super::*;
    use topology::{Topology, ip};

    pub const LINK_ADDR: Ipv4Addr = Ipv4Addr::new(172, 16, 0, 1);
    pub const LINK_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x11];
    const NEXT_HOP: Ipv4Addr = Ipv4Addr::new(172, 16, 0, 2);
    pub const NEXT_HOP_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x22];
    /// A next hop nobody answers for; its neighbour entry is never there.
    const SILENT_HOP: Ipv4Addr = Ipv4Addr::new(172, 16, 0, 3);

    /// The namespace and its routes (see the module).
    fn routed(prefix: &'static str) -> Topology {
        let mut topo = Topology::new(prefix);
        let ns = topo.add_ns("n");
        topo.ipv4_sysctls("n", &[("ip_forward", "1")]);
        topo.veth("r", (&ns, Some(LINK_ADDR)), (&ns, None));
        let r0 = topo.link("r0");
        let mac = LINK_MAC.map(|b| format!("{b:02x}")).join(":");
        ip(&["-n", &ns, "link", "set", &r0, "address", &mac]);
        let hop_mac = NEXT_HOP_MAC.map(|b| format!("{b:02x}")).join(":");
        ip(&["-n", &ns, "neigh", "add", &NEXT_HOP.to_string(), "lladdr", &hop_mac, "dev", &r0, "nud", "permanent"]);
        for (net, via) in [("10.244.2.0/24", NEXT_HOP), ("198.51.100.0/24", NEXT_HOP), ("10.244.3.0/24", SILENT_HOP)] {
            ip(&["-n", &ns, "route", "add", net, "via", &via.to_string()]);
        }
        topo
    }

    /// Runs `prog` on `frame` inside the namespace.
    fn run_in(topo: &Topology, fast: &Fast, prog: &'static str, frame: &[u8]) -> (u32, Vec<u8>) {
        let fd = fast.datapath.program_fd(prog).expect("the program is loaded");
        topo.in_ns("n", || packet::test_run(fd, frame))
    }

    /// The frame's MAC addresses (destination, source) and IPv4 TTL.
    fn link_layer(frame: &[u8]) -> ([u8; 6], [u8; 6], u8) {
        let mac = |at: usize| <[u8; 6]>::try_from(&frame[at..at + 6]).expect("six bytes");
        (mac(0), mac(6), frame[ETH_HLEN + 8])
    }

    fn in_snat_range(addr: SocketAddrV4) -> bool {
        (SNAT_PORT_MIN..=SNAT_PORT_MAX).contains(&addr.port())
    }

    #[test]
    fn xdp_snats_and_forwards_a_flow_to_a_remote_backend_and_tc_restores_the_reply() {
        let topo = routed("ksx");
        let fast = Fast::new();
        assert_eq!(fast.datapath.snat_addr().expect("read"), None, "unset: the address the client reached");
        let syn = Frame { payload: b"hello".to_vec(), ..Frame::tcp(CLIENT, node_port(SNAT_PORT)) };
        let (verdict, out) = run_in(&topo, &fast, PROG_XDP_NODEPORT, &syn.build());
        assert_eq!(verdict, XDP_REDIRECT, "sent on to r0 from XDP");
        let request = packet::parse_checked(&out);
        assert_eq!(request.dst, REMOTE[0]);
        assert_eq!(*request.src.ip(), NODE_IP, "SNAT to the node address the client reached");
        assert!(in_snat_range(request.src), "{}", request.src);
        assert_eq!(link_layer(&out), (NEXT_HOP_MAC, LINK_MAC, 63), "MACs from the FIB, one hop off the TTL");
        assert_eq!(fast.counter(Counter::XdpForward), 1);

        let conntrack = fast.datapath.conntrack().expect("read CT");
        assert_eq!(conntrack.len(), 1, "{conntrack:?}");
        let (key, entry) = conntrack[0];
        assert_eq!(key, CtKey::new(CLIENT, node_port(SNAT_PORT), IPPROTO_TCP));
        assert_eq!(
            (entry.backend(), entry.service(), entry.snat()),
            (REMOTE[0], node_port(SNAT_PORT), Some(request.src))
        );
        let rev_nat = fast.datapath.rev_nat().expect("read CT_REV");
        assert_eq!(rev_nat.len(), 1, "{rev_nat:?}");
        assert_eq!(rev_nat[0].0, CtKey::new(REMOTE[0], request.src, IPPROTO_TCP), "keyed by the backend's reply");
        assert_eq!((rev_nat[0].1.service(), rev_nat[0].1.client()), (node_port(SNAT_PORT), Some(CLIENT)));

        // The next packet follows the entry, same port.
        let ack = Frame { tcp_flags: TCP_ACK, ..Frame::tcp(CLIENT, node_port(SNAT_PORT)) };
        let (verdict, out) = run_in(&topo, &fast, PROG_XDP_NODEPORT, &ack.build());
        assert_eq!((verdict, packet::parse_checked(&out).src), (XDP_REDIRECT, request.src));

        // The backend's reply, to the SNAT address, goes back to the client from the node port.
        let syn_ack =
            Frame { tcp_flags: TCP_SYN | TCP_ACK, payload: b"hi".to_vec(), ..Frame::tcp(REMOTE[0], request.src) };
        let (verdict, out) = run_in(&topo, &fast, PROG_TC_NAT, &syn_ack.build());
        assert_eq!(verdict, TC_ACT_REDIRECT, "forwarded by TC, not handed to the stack");
        let reply = packet::parse_checked(&out);
        assert_eq!((reply.src, reply.dst), (node_port(SNAT_PORT), CLIENT));
        assert_eq!(link_layer(&out), (NEXT_HOP_MAC, LINK_MAC, 63));
        assert_eq!(fast.counter(Counter::TcRevNat), 1);
        // XDP leaves replies alone.
        fast.passes_unchanged(&syn_ack.build(), "a reply to the SNAT address");
    }

    #[test]
    fn tc_snats_to_the_configured_address_restores_replies_and_forgets_on_reset() {
        let topo = routed("kst");
        let mut fast = Fast::new();
        fast.datapath.set_snat_addr(Some(LINK_ADDR)).expect("set the SNAT address");
        assert_eq!(fast.datapath.snat_addr().expect("read"), Some(LINK_ADDR));
        for frame in [Frame::tcp(CLIENT, node_port(SNAT_PORT)), Frame::udp(CLIENT, node_port(SNAT_PORT))] {
            let (verdict, out) = run_in(&topo, &fast, PROG_TC_NAT, &frame.build());
            assert_eq!(verdict, TC_ACT_REDIRECT, "{frame:?}");
            let request = packet::parse_checked(&out);
            assert_eq!((*request.src.ip(), request.dst), (LINK_ADDR, REMOTE[0]));
            assert!(in_snat_range(request.src), "{}", request.src);
            assert_eq!(link_layer(&out), (NEXT_HOP_MAC, LINK_MAC, 63));

            let reply = Frame { tcp_flags: TCP_SYN | TCP_ACK, ..frame.clone() };
            let reply = Frame { src: REMOTE[0], dst: request.src, ..reply };
            let (verdict, out) = run_in(&topo, &fast, PROG_TC_NAT, &reply.build());
            assert_eq!(verdict, TC_ACT_REDIRECT);
            let restored = packet::parse_checked(&out);
            assert_eq!((restored.src, restored.dst), (node_port(SNAT_PORT), CLIENT), "{frame:?}");
        }
        assert_eq!((fast.counter(Counter::TcDnat), fast.counter(Counter::TcSnat)), (2, 2));
        assert_eq!(fast.counter(Counter::TcRevNat), 2);
        let udp_flow = CtKey::new(CLIENT, node_port(SNAT_PORT), packet::IPPROTO_UDP);
        let conntrack = fast.datapath.conntrack().expect("read CT");
        assert_eq!(conntrack.len(), 2);
        let ports: BTreeSet<u16> = conntrack.iter().filter_map(|(_, e)| e.snat()).map(|a| a.port()).collect();
        assert_eq!(ports.len(), 2, "TCP and UDP flows each have their own port: {conntrack:?}");

        // The backend resets the TCP flow: both of its entries go, the UDP flow's stay.
        let (_, tcp_entry) = conntrack.iter().find(|(key, _)| key.proto == IPPROTO_TCP).copied().expect("the TCP flow");
        let snat = tcp_entry.snat().expect("SNAT'd");
        let rst = Frame { tcp_flags: packet::TCP_RST, ..Frame::tcp(REMOTE[0], snat) };
        let (verdict, out) = run_in(&topo, &fast, PROG_TC_NAT, &rst.build());
        assert_eq!(verdict, TC_ACT_REDIRECT);
        assert_eq!(packet::parse_checked(&out).dst, CLIENT);
        let keys: Vec<CtKey> = fast.datapath.conntrack().expect("read CT").iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, [udp_flow], "the reset forgot the TCP flow");
        assert_eq!(fast.datapath.rev_nat().expect("read CT_REV").len(), 1);
    }

    #[test]
    fn local_clients_and_local_backends_are_not_snatted() {
        let topo = routed("ksl");
        let fast = Fast::new();
        // A pod of this node to a remote backend: DNAT only, handed to the stack.
        let (verdict, out) = run_in(&topo, &fast, PROG_TC_NAT, &Frame::tcp(POD_CLIENT, node_port(SNAT_PORT)).build());
        let out = packet::parse_checked(&out);
        assert_eq!((verdict, out.src, out.dst), (TC_ACT_OK, POD_CLIENT, REMOTE[0]));
        // An outside client to a local backend: DNAT only, in XDP and in TC.
        let syn = Frame::tcp(CLIENT, node_port(LOCAL_PORT)).build();
        let (verdict, out) = run_in(&topo, &fast, PROG_XDP_NODEPORT, &syn);
        let out = packet::parse_checked(&out);
        assert_eq!((verdict, out.src), (XDP_PASS, CLIENT));
        assert!(LOCAL.contains(&out.dst), "{}", out.dst);
        let other = Frame::tcp(SocketAddrV4::new(*CLIENT.ip(), 40_001), node_port(LOCAL_PORT)).build();
        let (verdict, out) = run_in(&topo, &fast, PROG_TC_NAT, &other);
        assert_eq!((verdict, packet::parse_checked(&out).src.port()), (TC_ACT_OK, 40_001));
        assert!(fast.datapath.conntrack().expect("read CT").iter().all(|(_, entry)| entry.snat().is_none()));
        assert_eq!((fast.counter(Counter::TcSnat), fast.counter(Counter::XdpForward)), (0, 0));
    }

    #[test]
    fn without_a_neighbour_or_a_route_xdp_passes_and_tc_follows_its_entry() {
        let topo = routed("ksm");
        let fast = Fast::new();
        // No neighbour for the next hop: XDP passes the frame unchanged but keeps the flow's
        // entries; TC translates it as they say and has the kernel resolve the neighbour.
        let syn = Frame::tcp(CLIENT, node_port(NO_NEIGH_PORT)).build();
        let (verdict, out) = run_in(&topo, &fast, PROG_XDP_NODEPORT, &syn);
        assert_eq!((verdict, out.as_slice()), (XDP_PASS, syn.as_slice()), "passed unchanged");
        assert_eq!(fast.counter(Counter::XdpFibMiss), 1);
        let conntrack = fast.datapath.conntrack().expect("read CT");
        let snat = conntrack[0].1.snat().expect("XDP wrote a SNAT entry");
        let (verdict, out) = run_in(&topo, &fast, PROG_TC_NAT, &syn);
        assert_eq!(verdict, TC_ACT_REDIRECT, "bpf_redirect_neigh");
        let request = packet::parse_checked(&out);
        assert_eq!((request.src, request.dst), (snat, REMOTE[1]), "TC followed XDP's entry");
        assert_eq!(out[ETH_HLEN + 8], 63, "one hop off the TTL");
        assert_eq!(fast.counter(Counter::TcFibMiss), 0);

        // No route at all: XDP passes; TC rewrites and hands the packet to the stack.
        let syn = Frame::tcp(CLIENT, node_port(UNROUTED_PORT)).build();
        let (verdict, out) = run_in(&topo, &fast, PROG_XDP_NODEPORT, &syn);
        assert_eq!((verdict, out.as_slice()), (XDP_PASS, syn.as_slice()));
        assert_eq!(fast.counter(Counter::XdpFibMiss), 2);
        let (verdict, out) = run_in(&topo, &fast, PROG_TC_NAT, &syn);
        assert_eq!(verdict, TC_ACT_OK);
        let request = packet::parse_checked(&out);
        assert_eq!(request.dst, UNROUTED);
        assert!(in_snat_range(request.src), "{}", request.src);
        assert_eq!(out[ETH_HLEN + 8], 64, "the stack takes the hop");
        assert_eq!(fast.counter(Counter::TcFibMiss), 1);
        assert_eq!(fast.counter(Counter::XdpForward), 0);
    }
}

/// Real traffic to a NodePort: namespaces `knp-<pid>-{c,n,b}` for an outside client, the node and
/// a backend pod; veths `knp<pid>c0`/`c1` (client ↔ node, the node's "external" interface holding
/// the node address) and `knp<pid>b0`/`b1` (pod ↔ node, the pod /24), created straight inside the
/// namespaces. The node forwards between them; `tc_nat` runs on the ingress of `c1` and `b1`, and
/// `xdp_nodeport` on `c1` for the first half of the test.
///
/// Every address lives inside these namespaces; nothing is added to the host's. Everything is
/// deleted on drop, also when an assertion fails.
mod netns {
    use std::net::TcpStream;
    use std::time::Duration;

    use k8s_openapi::api::core::v1::{Service as KubeService, ServicePort, ServiceSpec};
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort, EndpointSlice};
    use kube::api::ObjectMeta;
    use node_agent::proxy::desired::{SERVICE_NAME_LABEL, ThisNode, desired_table};

    use super::*;
    use ethtool::{ETHTOOL_STXCSUM, set_feature};
    use topology::Topology;

    const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 2);
    const POD_GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 1);
    const BACKEND: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 244, 1, 2), 8080);
    const NODE_NAME: &str = "node-a";
    const NODE_PORT: u16 = 30080;
    /// `externalTrafficPolicy: Local` with its only endpoint on another node.
    const ELSEWHERE_PORT: u16 = 30090;
    const TIMEOUT: Duration = Duration::from_secs(5);
    const EXCHANGES: usize = 5;

    fn build() -> Topology {
        let mut topo = Topology::new("knp");
        topo.add_ns("n");
        // Before the veths exist, so that they inherit `default`. A reply reverse-translated
        // on b1 comes in with the node's own address as its source, which the kernel drops as
        // martian unless `accept_local` is set (a node needs it on its pod veths for NodePort).
        topo.ipv4_sysctls("n", &[("ip_forward", "1"), ("conf/*/rp_filter", "0"), ("conf/*/accept_local", "1")]);
        let client = topo.add_ns("c");
        let backend = topo.add_ns("b");
        topo.wire(&client, "c", CLIENT_ADDR, NODE_IP);
        topo.wire(&backend, "b", *BACKEND.ip(), POD_GATEWAY);
        // Like a NIC's receive path, the node gets complete checksums from the client rather
        // than veth's offloaded (pseudo-header only) ones, so the backend's stack really
        // checks what XDP patched.
        let c0 = topo.link("c0");
        topo.in_ns("c", || set_feature(&c0, ETHTOOL_STXCSUM, false));
        topo
    }

    /// A NodePort Service `web` (TCP and UDP on port 80 / node port [`NODE_PORT`]) with
    /// `externalTrafficPolicy: Local`, its endpoint [`BACKEND`] on this node, and a second one,
    /// `far`, whose only endpoint is on another node.
    fn cluster_objects() -> (Vec<KubeService>, Vec<EndpointSlice>) {
        let service = |name: &str, ip: &str, node_port: u16| KubeService {
            metadata: ObjectMeta { name: Some(name.into()), namespace: Some("default".into()), ..Default::default() },
            spec: Some(ServiceSpec {
                cluster_ip: Some(ip.into()),
                cluster_ips: Some(vec![ip.into()]),
                type_: Some("NodePort".into()),
                external_traffic_policy: Some("Local".into()),
                ports: Some(
                    ["TCP", "UDP"]
                        .iter()
                        .map(|proto| ServicePort {
                            name: Some(proto.to_lowercase()),
                            port: 80,
                            node_port: Some(i32::from(node_port)),
                            protocol: Some((*proto).into()),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            status: None,
        };
        let slice = |name: &str, addr: &str, node: &str| EndpointSlice {
            metadata: ObjectMeta {
                name: Some(format!("{name}-1")),
                namespace: Some("default".into()),
                labels: Some([(SERVICE_NAME_LABEL.to_string(), name.to_string())].into()),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            endpoints: vec![Endpoint {
                addresses: vec![addr.into()],
                node_name: Some(node.into()),
                ..Default::default()
            }],
            ports: Some(
                ["TCP", "UDP"]
                    .iter()
                    .map(|proto| EndpointPort {
                        name: Some(proto.to_lowercase()),
                        port: Some(i32::from(BACKEND.port())),
                        protocol: Some((*proto).into()),
                        app_protocol: None,
                    })
                    .collect(),
            ),
        };
        (
            vec![service("web", "10.96.0.80", NODE_PORT), service("far", "10.96.0.90", ELSEWHERE_PORT)],
            vec![slice("web", &BACKEND.ip().to_string(), NODE_NAME), slice("far", "10.244.2.9", "node-b")],
        )
    }

    #[test]
    fn node_port_reaches_a_local_backend_through_xdp_and_through_tc() {
        let topo = build();
        let mut datapath = Datapath::load(&Config::default()).expect("load the eBPF programs");
        let (services, slices) = cluster_objects();
        let node = ThisNode { name: Some(NODE_NAME), addresses: &[NODE_IP] };
        let table = desired_table(&services, &slices, node);
        let node_ports: Vec<&Service> = table.iter().filter(|s| s.vip == NODE_IP).collect();
        assert_eq!(node_ports.len(), 4, "two node ports, TCP and UDP: {table:?}");
        assert!(node_ports.iter().all(|s| if s.port == NODE_PORT {
            s.backends == [BACKEND]
        } else {
            s.backends.is_empty()
        }));
        datapath.sync(&table).expect("program the services");
        datapath.set_local_cidrs(&[pod_cidr()]).expect("set the local pod CIDR");
        let (c1, b1) = (topo.link("c1"), topo.link("b1"));
        topo.in_ns("n", || {
            datapath.attach_tc(&c1).expect("attach tc_nat to the node's external veth");
            datapath.attach_tc(&b1).expect("attach tc_nat to the pod's host-side veth");
            datapath.attach_xdp(&c1).expect("attach xdp_nodeport to the node's external veth");
            assert!(
                matches!(datapath.attach_xdp(&c1), Err(node_agent::datapath::Error::XdpAttachedAlready { .. })),
                "attaching twice is refused"
            );
        });
        assert_eq!(datapath.xdp_interfaces(), [c1.as_str()]);

        // (a) XDP translates the client's packets; TC on c1 then has nothing to do but replies
        // are restored on b1.
        let seen = topology::exchange(&topo, SocketAddrV4::new(NODE_IP, NODE_PORT), BACKEND, EXCHANGES, TIMEOUT);
        assert!(seen.iter().all(|s| *s.ip() == CLIENT_ADDR), "the backend sees the client's own address: {seen:?}");
        let xdp_dnat = datapath.counter(Counter::XdpDnat).expect("read the counter");
        assert!(xdp_dnat >= 2 * EXCHANGES as u64, "XDP translated every flow: {xdp_dnat}");
        assert_eq!(datapath.counter(Counter::TcDnat).expect("read the counter"), 0, "nothing was left for TC");
        assert!(datapath.counter(Counter::TcRevNat).expect("read the counter") >= 2 * EXCHANGES as u64);

        // ETP Local with no endpoint here: dropped in XDP, the connect times out.
        let far = SocketAddrV4::new(NODE_IP, ELSEWHERE_PORT);
        let refused = topo.in_ns("c", || TcpStream::connect_timeout(&far.into(), Duration::from_millis(300)).is_err());
        assert!(refused, "no local endpoint: no connection");
        assert!(datapath.counter(Counter::XdpNoBackend).expect("read the counter") >= 1);

        // (b) Without XDP, tc_nat on c1 does the same.
        topo.in_ns("n", || datapath.detach_xdp(&c1).expect("detach xdp_nodeport"));
        assert!(datapath.xdp_interfaces().is_empty());
        let seen = topology::exchange(&topo, SocketAddrV4::new(NODE_IP, NODE_PORT), BACKEND, EXCHANGES, TIMEOUT);
        assert!(seen.iter().all(|s| *s.ip() == CLIENT_ADDR), "the backend sees the client's own address: {seen:?}");
        assert_eq!(datapath.counter(Counter::XdpDnat).expect("read the counter"), xdp_dnat, "XDP is gone");
        assert!(
            datapath.counter(Counter::TcDnat).expect("read the counter") >= 2 * EXCHANGES as u64,
            "TC translated every flow"
        );
        let conntrack = datapath.conntrack().expect("read CT");
        assert!(conntrack.iter().all(|(key, entry)| *key.source().ip() == CLIENT_ADDR && entry.backend() == BACKEND));
        assert!(conntrack.len() >= 2 * EXCHANGES, "{conntrack:?}");

        topo.in_ns("n", || {
            datapath.detach_tc(&c1).expect("detach");
            datapath.detach_tc(&b1).expect("detach");
        });
    }
}
