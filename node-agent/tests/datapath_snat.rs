//! Real NodePort traffic to a backend on another node, as root: the first node SNATs the flows
//! of an outside client (`xdp_nodeport` when attached, else `tc_nat`), forwards them itself after
//! a FIB lookup, and restores and forwards the replies in `tc_nat`.
//!
//! Two topologies of network namespaces, created straight inside them (nothing is added to the
//! host's) and deleted on drop, also when an assertion fails (see `common/topology.rs`):
//!
//! - Two interfaces on the first node (`knr-<pid>-{c,n,m,b}`): the client's veth `c0`/`c1` to the
//!   node `n`, a node-to-node link `r0` (in `n`) / `r1` (in the second node `m`), and the backend
//!   pod behind `m` (`b0`/`b1`, 10.244.2.0/24, which `n` routes via `m`). `m` knows no route back
//!   to the client: only SNAT brings the replies back through `n`. XDP forwards with
//!   `bpf_redirect` from `c1` to `r0`.
//! - One interface per node (`kxt-<pid>-{l,c,n,m,b}`), as in most clusters: namespace `l` is the
//!   LAN, a bridge `kxt<pid>br` whose ports are the far ends of the client's (`c0`/`c1`), the
//!   first node's (`n0`/`n1`) and the second node's (`m0`/`m1`) only veths, all in 172.16.0.0/24,
//!   and the backend pod behind `m` as above. The client, the backend's node and `n`'s route to
//!   the pod CIDR are all out of `n0`, so `xdp_nodeport` forwards with `XDP_TX` and `tc_nat` sends
//!   the restored replies back out of the interface they came in on. The client is on the LAN
//!   that `m` reaches too: the backend seeing `n`'s address and SNAT ports is what shows SNAT.

#[path = "common/ethtool.rs"]
mod ethtool;
#[path = "common/topology.rs"]
mod topology;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use ethtool::{ETHTOOL_SGRO, ETHTOOL_STXCSUM, set_feature, veth_xdp_stat};
use keelson_ebpf_common::{Counter, SNAT_PORT_MAX, SNAT_PORT_MIN};
use node_agent::datapath::{Cidr, Config, Datapath, Protocol, Service};
use topology::Topology;

/// The first node's address that the client reaches in the two-interface topology.
const NODE_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 1);
const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 2);
/// The first node's pod CIDR (no pods needed: it only tells the outside client from a pod).
const POD_CIDR: &str = "10.244.1.0/24";
const TIMEOUT: Duration = Duration::from_secs(5);
const EXCHANGES: usize = 5;

fn pod_cidr() -> Cidr {
    POD_CIDR.parse().expect("a CIDR")
}

/// From the client namespace: [`EXCHANGES`] TCP connections and UDP exchanges with `target`,
/// served by `backend`; the client address the backend reported each time.
fn exchange(topo: &Topology, target: SocketAddrV4, backend: SocketAddrV4) -> Vec<SocketAddrV4> {
    topology::exchange(topo, target, backend, EXCHANGES, TIMEOUT)
}

/// The second node's address on the node-to-node link (on the LAN with one interface), and the
/// first node's (its SNAT address, and with one interface its node port's too).
const NODE2_LINK: Ipv4Addr = Ipv4Addr::new(172, 16, 0, 2);
const NODE1_LINK: Ipv4Addr = Ipv4Addr::new(172, 16, 0, 1);
const REMOTE_POD_GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 1);
const REMOTE_BACKEND: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 244, 2, 2), 8080);
/// `externalTrafficPolicy: Cluster`, its only endpoint [`REMOTE_BACKEND`].
const REMOTE_NODE_PORT: u16 = 30081;

/// The two-node topology (see the crate docs).
fn build_two_nodes() -> Topology {
    let mut topo = Topology::new("knr");
    let node = topo.add_ns("n");
    let node2 = topo.add_ns("m");
    for tag in ["n", "m"] {
        topo.ipv4_sysctls(tag, &[("ip_forward", "1")]);
    }
    let client = topo.add_ns("c");
    let backend = topo.add_ns("b");
    topo.wire(&client, "c", CLIENT_ADDR, NODE_IP);
    topo.veth("r", (&node, Some(NODE1_LINK)), (&node2, Some(NODE2_LINK)));
    topo.veth("b", (&backend, Some(*REMOTE_BACKEND.ip())), (&node2, Some(REMOTE_POD_GATEWAY)));
    topology::ip(&["-n", &backend, "route", "add", "default", "via", &REMOTE_POD_GATEWAY.to_string()]);
    topology::ip(&["-n", &node, "route", "add", "10.244.2.0/24", "via", &NODE2_LINK.to_string()]);
    let (c0, r1) = (topo.link("c0"), topo.link("r1"));
    // Complete checksums from the client, as from a NIC's receive path: XDP patches them in
    // place and cannot tell veth's offloaded (pseudo-header only) ones apart.
    topo.in_ns("c", || set_feature(&c0, ETHTOOL_STXCSUM, false));
    // A veth takes frames redirected from XDP into its peer only with NAPI, which GRO enables.
    topo.in_ns("m", || set_feature(&r1, ETHTOOL_SGRO, true));
    topo
}

/// A datapath with a TCP and a UDP node port on `address` whose only backend is the pod behind
/// the second node, SNAT'd to the first node's link address.
fn remote_node_port(address: Ipv4Addr) -> Datapath {
    let mut datapath = Datapath::load(&Config::default()).expect("load the eBPF programs");
    let services: Vec<Service> = [Protocol::Tcp, Protocol::Udp]
        .into_iter()
        .map(|proto| Service {
            vip: address,
            port: REMOTE_NODE_PORT,
            proto,
            backends: vec![REMOTE_BACKEND],
            affinity: None,
            maglev: true,
        })
        .collect();
    datapath.sync(&services).expect("program the services");
    datapath.set_local_cidrs(&[pod_cidr()]).expect("set the local pod CIDR");
    datapath.set_snat_addr(Some(NODE1_LINK)).expect("set the SNAT address");
    datapath
}

#[test]
fn node_port_reaches_a_backend_on_another_node_through_snat() {
    let topo = build_two_nodes();
    let mut datapath = remote_node_port(NODE_IP);
    let (c1, r0) = (topo.link("c1"), topo.link("r0"));
    topo.in_ns("n", || {
        datapath.attach_tc(&c1).expect("attach tc_nat to the node's external veth");
        datapath.attach_tc(&r0).expect("attach tc_nat to the node-to-node veth");
        datapath.attach_xdp(&c1).expect("attach xdp_nodeport to the node's external veth");
    });
    let target = SocketAddrV4::new(NODE_IP, REMOTE_NODE_PORT);

    // (a) XDP translates and forwards the client's packets (the very first waits for TC to
    // resolve the second node's MAC); TC on r0 restores and forwards the replies.
    let seen = exchange(&topo, target, REMOTE_BACKEND);
    assert_snatted(&seen);
    let forwarded = count(&datapath, Counter::XdpForward);
    assert!(forwarded > 0, "XDP forwarded packets itself");
    assert!(count(&datapath, Counter::TcRevNat) >= 2 * EXCHANGES as u64, "TC restored every flow's replies");
    assert_eq!(count(&datapath, Counter::TcFibMiss), 0, "nothing was left to the stack");
    assert_tracked_as_snatted(&datapath, CLIENT_ADDR);

    // (b) Without XDP, tc_nat on c1 does the same.
    topo.in_ns("n", || datapath.detach_xdp(&c1).expect("detach xdp_nodeport"));
    tc_alone_snats(&topo, &datapath, target, forwarded);

    topo.in_ns("n", || {
        datapath.detach_tc(&c1).expect("detach");
        datapath.detach_tc(&r0).expect("detach");
    });
}

/// A client on the LAN of [`build_one_nic`].
const LAN_CLIENT: Ipv4Addr = Ipv4Addr::new(172, 16, 0, 3);

/// The single-interface topology (see the crate docs): namespace `l` holds the LAN bridge whose
/// ports are the far ends of the client's (`c`), the first node's (`n`) and the second
/// node's (`m`) only veths.
fn build_one_nic() -> Topology {
    let mut topo = Topology::new("kxt");
    let lan = topo.add_ns("l");
    let node = topo.add_ns("n");
    let node2 = topo.add_ns("m");
    for tag in ["n", "m"] {
        topo.ipv4_sysctls(tag, &[("ip_forward", "1")]);
    }
    let client = topo.add_ns("c");
    let backend = topo.add_ns("b");
    topo.veth("c", (&client, Some(LAN_CLIENT)), (&lan, None));
    topo.veth("n", (&node, Some(NODE1_LINK)), (&lan, None));
    topo.veth("m", (&node2, Some(NODE2_LINK)), (&lan, None));
    topo.bridge(&lan, "br", &["c1", "n1", "m1"].map(|end| topo.link(end)));
    topo.veth("b", (&backend, Some(*REMOTE_BACKEND.ip())), (&node2, Some(REMOTE_POD_GATEWAY)));
    topology::ip(&["-n", &backend, "route", "add", "default", "via", &REMOTE_POD_GATEWAY.to_string()]);
    topology::ip(&["-n", &node, "route", "add", "10.244.2.0/24", "via", &NODE2_LINK.to_string()]);
    let c0 = topo.link("c0");
    // Complete checksums from the client, as from a NIC's receive path: XDP patches them in
    // place and cannot tell veth's offloaded (pseudo-header only) ones apart.
    topo.in_ns("c", || set_feature(&c0, ETHTOOL_STXCSUM, false));
    topo
}

/// XDP_TX on the single interface: the client, this node and the backend's node share one
/// LAN, so the FIB sends the translated packet back out of the interface it came in on.
#[test]
fn node_port_to_another_node_over_one_interface_uses_xdp_tx() {
    let topo = build_one_nic();
    let mut datapath = remote_node_port(NODE1_LINK);
    let (n0, n1) = (topo.link("n0"), topo.link("n1"));
    topo.in_ns("n", || {
        datapath.attach_tc(&n0).expect("attach tc_nat to the node's only interface");
        datapath.attach_xdp(&n0).expect("attach xdp_nodeport to the node's only interface");
    });
    // A veth hands XDP_TX frames to its peer's NAPI ring but schedules that NAPI only when the
    // peer has an XDP program of its own (GRO, enough for `bpf_redirect`, is not: the frames
    // would wait in the ring). A NIC puts them on the wire; here the bridge port gets a
    // program, xdp_nodeport itself, which passes everything it sees (no frame the node sends
    // is addressed to a node port).
    topo.in_ns("l", || datapath.attach_xdp(&n1).expect("attach an XDP program to the bridge port"));
    // `/proc/thread-self/net/dev`: the interfaces of the namespace the thread is in.
    let dev = topo.in_ns("n", || std::fs::read_to_string("/proc/thread-self/net/dev").expect("read net/dev"));
    let links: Vec<&str> = dev.lines().skip(2).filter_map(|line| line.split(':').next()).map(str::trim).collect();
    assert_eq!(links.len(), 2, "{links:?}");
    assert!(links.contains(&"lo") && links.contains(&n0.as_str()), "one interface besides lo: {links:?}");
    let target = SocketAddrV4::new(NODE1_LINK, REMOTE_NODE_PORT);

    // (a) XDP translates the client's packets and sends them back out of n0 (XDP_TX); TC on
    // n0 restores the replies and redirects them to n0 itself.
    let seen = exchange(&topo, target, REMOTE_BACKEND);
    assert_snatted(&seen);
    let forwarded = count(&datapath, Counter::XdpForward);
    assert!(forwarded > 0, "XDP forwarded packets itself");
    let (tx, redirected) = topo.in_ns("n", || (veth_xdp_stat(&n0, "xdp_tx"), veth_xdp_stat(&n0, "xdp_redirect")));
    assert_eq!((tx, redirected), (forwarded, 0), "every forwarded packet went out with XDP_TX");
    assert!(count(&datapath, Counter::TcRevNat) >= 2 * EXCHANGES as u64, "TC restored every flow's replies");
    assert_eq!(count(&datapath, Counter::TcFibMiss), 0, "nothing was left to the stack");
    assert_tracked_as_snatted(&datapath, LAN_CLIENT);

    // (b) Without XDP, tc_nat on n0 translates and redirects both ways to n0 itself.
    topo.in_ns("n", || datapath.detach_xdp(&n0).expect("detach xdp_nodeport"));
    tc_alone_snats(&topo, &datapath, target, forwarded);

    topo.in_ns("n", || datapath.detach_tc(&n0).expect("detach"));
    topo.in_ns("l", || datapath.detach_xdp(&n1).expect("detach"));
}

/// Every exchange reached the backend from the first node's SNAT address and a SNAT port.
fn assert_snatted(seen: &[SocketAddrV4]) {
    assert!(
        seen.len() == 2 * EXCHANGES
            && seen.iter().all(|s| *s.ip() == NODE1_LINK && (SNAT_PORT_MIN..=SNAT_PORT_MAX).contains(&s.port())),
        "the backend sees the first node's SNAT address and ports: {seen:?}"
    );
}

/// Every tracked flow is `client`'s, to the remote backend, SNAT'd to the first node's address.
fn assert_tracked_as_snatted(datapath: &Datapath, client: Ipv4Addr) {
    let conntrack = datapath.conntrack().expect("read CT");
    assert!(
        conntrack.iter().all(|(key, entry)| *key.source().ip() == client
            && entry.backend() == REMOTE_BACKEND
            && entry.snat().is_some_and(|snat| *snat.ip() == NODE1_LINK)),
        "{conntrack:?}"
    );
}

/// With XDP detached (`forwarded` packets it had forwarded), `tc_nat` alone SNATs and forwards
/// every exchange to `target`, and leaves nothing to the stack.
fn tc_alone_snats(topo: &Topology, datapath: &Datapath, target: SocketAddrV4, forwarded: u64) {
    let snat_before = count(datapath, Counter::TcSnat);
    assert_snatted(&exchange(topo, target, REMOTE_BACKEND));
    assert_eq!(count(datapath, Counter::XdpForward), forwarded, "XDP is gone");
    assert!(count(datapath, Counter::TcSnat) >= snat_before + 2 * EXCHANGES as u64, "TC SNAT'd every flow");
    assert_eq!(count(datapath, Counter::TcFibMiss), 0, "nothing was left to the stack");
}

fn count(datapath: &Datapath, which: Counter) -> u64 {
    datapath.counter(which).expect("read the counter")
}
