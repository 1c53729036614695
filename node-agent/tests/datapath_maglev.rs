//! Tests of Maglev consistent hashing for NodePort frontends, with `BPF_PROG_TEST_RUN`, as root.
//!
//! Each [`Node`] loads the embedded object with private maps (nothing attached, nothing pinned),
//! so two of them are two nodes that share nothing but the service table, and a fresh one is a
//! node that lost its conntrack. Frames go through `tc_nat` (and once `xdp_nodeport`); the
//! backend a flow reaches is read from the rewritten frame.

#[path = "common/packet.rs"]
#[expect(dead_code, reason = "shared with the TC and XDP tests, which use the rest of it")]
mod packet;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};

use keelson_ebpf_common::{Counter, MAGLEV_TABLE_SIZE, PROG_TC_NAT, PROG_XDP_NODEPORT, maglev_flow_hash};
use node_agent::datapath::{Cidr, Config, Datapath, Protocol, Service, maglev};
use packet::{Frame, IPPROTO_TCP};

const TC_ACT_OK: u32 = 0;
const XDP_PASS: u32 = 2;

/// The NodePort frontend's address on node A and on node B.
const NODE_A: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 1);
const NODE_B: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 2);
const NODE_PORT: u16 = 30_080;

fn backends(n: u8) -> Vec<SocketAddrV4> {
    (1..=n).map(|i| SocketAddrV4::new(Ipv4Addr::new(10, 244, i % 3, 10 + i), 8080)).collect()
}

/// The NodePort frontend `address:30080/TCP`, with Maglev.
fn node_port(address: Ipv4Addr, backends: &[SocketAddrV4]) -> Service {
    Service {
        vip: address,
        port: NODE_PORT,
        proto: Protocol::Tcp,
        backends: backends.to_vec(),
        affinity: None,
        maglev: true,
    }
}

/// `n` external clients' flows: many addresses, many ports.
fn clients(n: u16) -> Vec<SocketAddrV4> {
    (0..n).map(|i| SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, (i % 200) as u8 + 1), 20_000 + i * 7)).collect()
}

/// One node's datapath.
struct Node {
    datapath: Datapath,
    address: Ipv4Addr,
}

impl Node {
    fn new(address: Ipv4Addr, backends: &[SocketAddrV4]) -> Self {
        let mut datapath = Datapath::load(&Config::default()).expect("load the eBPF programs");
        datapath.sync(&[node_port(address, backends)]).expect("program the NodePort frontend");
        Self { datapath, address }
    }

    /// The backend `tc_nat` sends a new packet of `client`'s flow to.
    fn backend_of(&self, client: SocketAddrV4) -> SocketAddrV4 {
        self.run(PROG_TC_NAT, TC_ACT_OK, client)
    }

    fn run(&self, prog: &'static str, expected: u32, client: SocketAddrV4) -> SocketAddrV4 {
        let frame = Frame::tcp(client, SocketAddrV4::new(self.address, NODE_PORT)).build();
        let fd = self.datapath.program_fd(prog).expect("the program is loaded");
        let (verdict, out) = packet::test_run(fd, &frame);
        assert_eq!(verdict, expected, "{prog} verdict for {client}");
        let parsed = packet::parse_checked(&out);
        assert_eq!(parsed.src, client, "source untouched");
        parsed.dst
    }

    fn counter(&self, which: Counter) -> u64 {
        self.datapath.counter(which).expect("read the counter")
    }
}

/// The backend the Maglev table of `backends` gives `client`'s flow to the node port.
fn expected(backends: &[SocketAddrV4], client: SocketAddrV4) -> SocketAddrV4 {
    let table = maglev::table(backends);
    let wire = |addr: Ipv4Addr| u32::from_ne_bytes(addr.octets());
    let hash = maglev_flow_hash(wire(*client.ip()), client.port().to_be(), NODE_PORT.to_be(), IPPROTO_TCP);
    table[(hash % MAGLEV_TABLE_SIZE) as usize]
}

#[test]
fn a_flow_reaches_the_same_backend_on_every_node_and_after_conntrack_loss() {
    let set = backends(5);
    let a = Node::new(NODE_A, &set);
    let b = Node::new(NODE_B, &set);
    let flows = clients(100);
    for &client in &flows {
        let on_a = a.backend_of(client);
        assert_eq!(on_a, expected(&set, client), "{client} on node A follows the table");
        assert_eq!(b.backend_of(client), on_a, "{client} on node B (its own address, no shared state)");
    }
    assert_eq!(a.counter(Counter::MaglevPick), 100);
    assert_eq!((a.counter(Counter::MaglevMiss), b.counter(Counter::MaglevMiss)), (0, 0));
    assert_eq!(a.datapath.conntrack().expect("read CT").len(), 100);

    // Node A "restarts" with empty conntrack: a fresh datapath with the same service table.
    drop(a);
    let a = Node::new(NODE_A, &set);
    assert!(a.datapath.conntrack().expect("read CT").is_empty());
    for &client in &flows {
        assert_eq!(a.backend_of(client), expected(&set, client), "{client} after conntrack loss");
    }

    // The map holds exactly the table userspace computes.
    let mut programmed = a.datapath.maglev().expect("read MAGLEV");
    programmed.sort_by_key(|(key, _)| key.index);
    let programmed: Vec<SocketAddrV4> = programmed.iter().map(|(_, backend)| backend.socket_addr()).collect();
    assert_eq!(programmed, maglev::table(&set));
}

#[test]
fn xdp_sends_a_flow_where_tc_does() {
    let set = backends(4);
    let mut a = Node::new(NODE_A, &set);
    let pods: Cidr = "10.244.0.0/16".parse().expect("cidr");
    a.datapath.set_local_cidrs(&[pods]).expect("every backend is local");
    let b = Node::new(NODE_B, &set);
    for client in clients(40) {
        assert_eq!(a.run(PROG_XDP_NODEPORT, XDP_PASS, client), b.backend_of(client), "{client}");
    }
    assert_eq!(a.counter(Counter::XdpDnat), 40);
    assert_eq!(a.counter(Counter::MaglevPick), 40);
}

#[test]
fn flows_spread_evenly_over_the_backends() {
    let set = backends(5);
    let node = Node::new(NODE_A, &set);
    let mut served: BTreeMap<SocketAddrV4, usize> = BTreeMap::new();
    for client in clients(1_000) {
        *served.entry(node.backend_of(client)).or_default() += 1;
    }
    assert_eq!(served.len(), 5, "every backend serves: {served:?}");
    // 200 each on average; a fair 1-in-5 draw stays within ±60 of it far beyond 4 sigma.
    assert!(served.values().all(|n| (140..=260).contains(n)), "{served:?}");
}

#[test]
fn removing_a_backend_moves_only_its_flows() {
    let set = backends(5);
    let before = Node::new(NODE_A, &set);
    let flows = clients(200);
    let placed: Vec<SocketAddrV4> = flows.iter().map(|client| before.backend_of(*client)).collect();

    // Another node gets the same change through an update (the table is diffed in place) and
    // holds no conntrack for these flows.
    let removed = set[2];
    let kept: Vec<SocketAddrV4> = set.iter().copied().filter(|b| *b != removed).collect();
    let mut after = Node::new(NODE_B, &set);
    let stats = after.datapath.upsert(&node_port(NODE_B, &kept)).expect("remove one backend");
    assert!(
        stats.map_writes < (MAGLEV_TABLE_SIZE / 5 + MAGLEV_TABLE_SIZE / 20) as usize,
        "about a fifth of the table is rewritten: {stats:?}"
    );
    let mut stayed = 0;
    let mut others = 0;
    for (client, was) in flows.iter().zip(&placed) {
        let now = after.backend_of(*client);
        assert_ne!(now, removed, "{client}");
        if *was != removed {
            others += 1;
            stayed += usize::from(now == *was);
        }
    }
    assert!(others > 100, "most flows were on the kept backends: {others}");
    assert!(stayed * 100 >= others * 90, "{stayed} of {others} flows kept their backend");
    assert_eq!(after.counter(Counter::MaglevMiss), 0);
}

#[test]
fn session_affinity_comes_before_maglev() {
    let set = backends(5);
    let mut node = Node::new(NODE_A, &set);
    let service = Service { affinity: Some(std::time::Duration::from_secs(600)), ..node_port(NODE_A, &set) };
    node.datapath.upsert(&service).expect("affinity on");
    let one_client: Vec<SocketAddrV4> =
        (0..20).map(|i| SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 9), 30_000 + i)).collect();
    let first = node.backend_of(one_client[0]);
    assert_eq!(first, expected(&set, one_client[0]), "the first flow is placed by Maglev");
    for client in &one_client[1..] {
        assert_eq!(node.backend_of(*client), first, "{client} follows its client's affinity");
    }
    assert_eq!(node.counter(Counter::AffinityHit), 19);
    assert_eq!(node.counter(Counter::MaglevPick), 1);
}

#[test]
fn a_frontend_without_the_flag_has_no_table() {
    let set = backends(3);
    let mut node = Node::new(NODE_A, &set);
    assert_eq!(node.datapath.maglev().expect("read MAGLEV").len(), MAGLEV_TABLE_SIZE as usize);
    node.datapath.upsert(&Service { maglev: false, ..node_port(NODE_A, &set) }).expect("flag off");
    assert!(node.datapath.maglev().expect("read MAGLEV").is_empty());
    assert!(!node.datapath.services().expect("services")[0].maglev);
    node.backend_of(clients(1)[0]);
    assert_eq!(node.counter(Counter::MaglevPick), 0);
}
