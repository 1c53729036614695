//! Privileged end-to-end test of `network::routes`: three node namespaces `kna-<pid>-a/b/c` joined
//! by an underlay (one veth per node to a bridge in a fourth namespace `kna-<pid>-s`), the route
//! reconciler run over real rtnetlink inside each node namespace, one pod per node wired by the
//! `keelson` CNI plugin (or by hand, routed the same way, when the plugin binary is not built),
//! and ICMP echo between every pod and every node.
//!
//! Everything lives in namespaces this test creates; they are all deleted on drop, also when an
//! assertion fails. Nothing is added to the host's own namespace.

#[path = "../../tests/support/icmp.rs"]
mod icmp;

use std::fs::File;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeSpec, NodeStatus};
use kube::api::ObjectMeta;
use node_agent::network::routes::{KEELSON_PROTO, POD_ROUTE_METRIC, UNREACHABLE_METRIC};
use node_agent::network::{NetlinkRouteTable, RouteChanges, peers_from_nodes, reconcile};

const NODES: [&str; 3] = ["a", "b", "c"];

/// The plugin binary: `KEELSON_PLUGIN` if set (a missing path selects the hand-made pods), else the
/// workspace's debug build.
fn plugin() -> PathBuf {
    std::env::var_os("KEELSON_PLUGIN").map_or_else(
        || {
            // Built by `cargo test --workspace` in this test's target directory and profile.
            let exe = std::env::current_exe().expect("test executable");
            exe.parent().and_then(Path::parent).expect("target/<profile>/deps").join("keelson")
        },
        PathBuf::from,
    )
}

fn underlay(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(192, 168, 250, 1 + i as u8)
}

fn pod_cidr(i: usize) -> String {
    format!("10.244.{}.0/24", 1 + i)
}

/// Runs `ip args…`; panics with stderr when it fails.
fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip (iproute2 must be installed)");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The test's namespaces; all deleted on drop.
struct Topology {
    prefix: String,
    created: Vec<String>,
    data_dir: tempfile::TempDir,
}

impl Topology {
    fn ns(&self, tag: &str) -> String {
        format!("{}-{tag}", self.prefix)
    }

    fn add_ns(&mut self, tag: &str) -> String {
        let name = self.ns(tag);
        ip(&["netns", "add", &name]);
        self.created.push(name.clone());
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        name
    }

    /// `ip -n <ns> args…`.
    fn ip_in(&self, tag: &str, args: &[&str]) -> String {
        let ns = self.ns(tag);
        let mut full = vec!["-n", ns.as_str()];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// Switch namespace with a bridge, three node namespaces each with `eth0` on the bridge.
    fn build() -> Self {
        let mut topo = Self {
            prefix: format!("kna-{}", std::process::id()),
            created: Vec::new(),
            data_dir: tempfile::tempdir().expect("temp dir for plugin state"),
        };
        let switch = topo.add_ns("s");
        ip(&["-n", &switch, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &switch, "link", "set", "br0", "up"]);
        for (i, tag) in NODES.iter().enumerate() {
            let node = topo.add_ns(tag);
            let port = format!("p{tag}");
            // Created inside the switch namespace, the peer moved straight into the node's.
            ip(&["-n", &switch, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &node]);
            ip(&["-n", &switch, "link", "set", &port, "master", "br0", "up"]);
            ip(&["-n", &node, "addr", "add", &format!("{}/24", underlay(i)), "dev", "eth0"]);
            ip(&["-n", &node, "link", "set", "eth0", "up"]);
            topo.add_ns(&format!("{tag}-pod"));
        }
        topo
    }

    fn netns_path(&self, tag: &str) -> PathBuf {
        Path::new("/run/netns").join(self.ns(tag))
    }

    /// Runs the route reconciler over rtnetlink inside node `i`'s namespace for `nodes`.
    fn reconcile(&self, i: usize, nodes: &[Node]) -> RouteChanges {
        let file = File::open(self.netns_path(NODES[i])).expect("open node netns");
        let peers = peers_from_nodes(nodes, NODES[i]);
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("enter node netns");
                    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
                    rt.block_on(async {
                        let mut table = NetlinkRouteTable::connect().expect("rtnetlink socket in node netns");
                        reconcile(&mut table, &peers).await.expect("reconcile routes")
                    })
                })
                .join()
                .expect("reconcile thread")
        })
    }

    /// Wires node `i`'s pod; returns the pod address.
    fn add_pod(&self, i: usize) -> Ipv4Addr {
        if plugin().exists() { self.add_pod_with_plugin(i) } else { self.add_pod_by_hand(i) }
    }

    fn add_pod_with_plugin(&self, i: usize) -> Ipv4Addr {
        use std::io::Write as _;
        let conf = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "keelson",
            "type": "keelson",
            "podCIDR": pod_cidr(i),
            "dataDir": self.data_dir.path().join(NODES[i]),
        });
        let pod_netns = self.netns_path(&format!("{}-pod", NODES[i]));
        // The plugin works in the namespace it runs in: the node's.
        let mut child = Command::new("ip")
            .arg("netns")
            .arg("exec")
            .arg(self.ns(NODES[i]))
            .arg(plugin())
            .env("CNI_COMMAND", "ADD")
            .env("CNI_CONTAINERID", format!("{}-{}", self.prefix, NODES[i]))
            .env("CNI_NETNS", &pod_netns)
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", "/opt/cni/bin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn keelson");
        child.stdin.take().expect("stdin").write_all(conf.to_string().as_bytes()).expect("write config");
        let out = child.wait_with_output().expect("wait for keelson");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "keelson ADD: {stdout} {}", String::from_utf8_lossy(&out.stderr));
        let result: serde_json::Value = serde_json::from_str(&stdout).expect("ADD result JSON");
        let address = result["ips"][0]["address"].as_str().expect("ips[0].address");
        address.split('/').next().expect("address").parse().expect("IPv4 pod address")
    }

    /// A routed pod like the plugin's: /32 in the pod, default via the host side, /32 route and
    /// proxy_arp on the host side.
    fn add_pod_by_hand(&self, i: usize) -> Ipv4Addr {
        let (node, pod) = (self.ns(NODES[i]), self.ns(&format!("{}-pod", NODES[i])));
        let pod_ip = Ipv4Addr::new(10, 244, 1 + i as u8, 2);
        let gateway = Ipv4Addr::new(10, 244, 1 + i as u8, 1);
        ip(&["-n", &node, "link", "add", "vpod", "type", "veth", "peer", "name", "eth0", "netns", &pod]);
        ip(&["-n", &node, "addr", "add", &format!("{gateway}/32"), "dev", "vpod"]);
        ip(&["-n", &node, "link", "set", "vpod", "up"]);
        ip(&["-n", &node, "route", "add", &format!("{pod_ip}/32"), "dev", "vpod"]);
        ip(&["-n", &pod, "addr", "add", &format!("{pod_ip}/32"), "dev", "eth0"]);
        ip(&["-n", &pod, "link", "set", "eth0", "up"]);
        ip(&["-n", &pod, "route", "add", &format!("{gateway}/32"), "dev", "eth0"]);
        ip(&["-n", &pod, "route", "add", "default", "via", &gateway.to_string()]);
        for sysctl in ["net.ipv4.ip_forward=1", "net.ipv4.conf.vpod.proxy_arp=1"] {
            let out = Command::new("ip")
                .args(["netns", "exec", &node, "sysctl", "-qw", sysctl])
                .output()
                .expect("run sysctl");
            assert!(out.status.success(), "sysctl {sysctl}: {}", String::from_utf8_lossy(&out.stderr));
        }
        pod_ip
    }

    /// Whether one ICMP echo from inside namespace `tag` to `dst` is answered within a second.
    fn ping(&self, tag: &str, dst: Ipv4Addr) -> bool {
        let file = File::open(self.netns_path(tag)).expect("open netns");
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("enter netns");
                    icmp::ping(dst, Duration::from_secs(1))
                })
                .join()
                .expect("ping thread")
        })
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        // Deleting a namespace deletes every link in it, so the veths and the bridge go too.
        for name in self.created.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", name]).output();
        }
    }
}

fn node(i: usize) -> Node {
    Node {
        metadata: ObjectMeta { name: Some(NODES[i].into()), ..Default::default() },
        spec: Some(NodeSpec { pod_cidr: Some(pod_cidr(i)), ..Default::default() }),
        status: Some(NodeStatus {
            addresses: Some(vec![NodeAddress { type_: "InternalIP".into(), address: underlay(i).to_string() }]),
            ..Default::default()
        }),
    }
}

fn own_routes(topo: &Topology, i: usize) -> String {
    topo.ip_in(NODES[i], &["route", "show", "proto", &KEELSON_PROTO.to_string()])
}

#[test]
fn routes_connect_pods_across_node_namespaces() {
    let topo = Topology::build();
    let nodes: Vec<Node> = (0..3).map(node).collect();

    // Someone else's route in node a, to a destination inside the pod network: never touched.
    topo.ip_in("a", &["route", "add", "10.244.77.0/24", "via", &underlay(2).to_string(), "proto", "static"]);

    for (i, name) in NODES.iter().enumerate() {
        let changes = topo.reconcile(i, &nodes);
        assert_eq!(changes.added.len(), 4, "node {}: two peers and two unreachable routes", name);
        assert!(topo.reconcile(i, &nodes).is_empty(), "node {}: second pass changes nothing", name);
        let routes = own_routes(&topo, i);
        for j in (0..3).filter(|&j| j != i) {
            let want = format!("{} via {} dev eth0 metric {POD_ROUTE_METRIC}", pod_cidr(j), underlay(j));
            assert!(routes.contains(&want), "node {}: missing `{want}` in:\n{routes}", name);
        }
        assert!(!routes.contains(&pod_cidr(i)), "node {}: no route to its own podCIDR:\n{routes}", name);
        for net in ["10.244.0.0/16", "10.96.0.0/12"] {
            let want = format!("unreachable {net} metric {UNREACHABLE_METRIC}");
            assert!(routes.contains(&want), "node {}: missing `{want}` in:\n{routes}", name);
        }
    }
    let foreign = topo.ip_in("a", &["route", "show", "10.244.77.0/24"]);
    assert!(foreign.contains("proto static"), "foreign route kept: {foreign}");

    let pods: Vec<Ipv4Addr> = (0..3).map(|i| topo.add_pod(i)).collect();
    for (i, pod_ip) in pods.iter().enumerate() {
        assert_eq!(pod_ip.octets()[..3], [10, 244, 1 + i as u8], "pod {} is in its node's podCIDR", NODES[i]);
    }

    for (i, name) in NODES.iter().enumerate() {
        let from = format!("{}-pod", name);
        for (j, pod_ip) in pods.iter().enumerate().filter(|&(j, _)| j != i) {
            assert!(topo.ping(&from, *pod_ip), "pod {} cannot reach pod {} ({pod_ip})", name, NODES[j]);
        }
        for (j, peer) in NODES.iter().enumerate() {
            assert!(topo.ping(&from, underlay(j)), "pod {name} cannot reach node {peer} ({})", underlay(j));
        }
    }

    // Node c is deleted: a and b drop its route; its pod is unreachable from theirs.
    let remaining = &nodes[..2];
    for (i, name) in NODES.iter().enumerate().take(2) {
        let changes = topo.reconcile(i, remaining);
        assert_eq!(changes.deleted.len(), 1, "node {}: one stale route deleted: {changes:?}", name);
        assert!(changes.added.is_empty() && changes.replaced.is_empty());
        let routes = own_routes(&topo, i);
        assert!(!routes.contains(&pod_cidr(2)), "node {}: route to c still there:\n{routes}", name);
        assert!(routes.contains("unreachable 10.244.0.0/16"), "unreachable routes stay:\n{routes}");
    }
    assert!(!topo.ping("a-pod", pods[2]), "pod a still reaches pod c after c was deleted");
    assert!(!topo.ping("b-pod", pods[2]), "pod b still reaches pod c after c was deleted");
    assert!(topo.ping("a-pod", pods[1]), "pod a lost pod b");
    assert!(topo.ping("b-pod", pods[0]), "pod b lost pod a");

    // A changed address is replaced in place.
    let mut moved = remaining.to_vec();
    moved[1].status.as_mut().expect("status").addresses.as_mut().expect("addresses")[0].address =
        "192.168.250.22".into();
    let changes = topo.reconcile(0, &moved);
    assert_eq!(changes.replaced.len(), 1, "{changes:?}");
    assert!(own_routes(&topo, 0).contains("10.244.2.0/24 via 192.168.250.22"), "{}", own_routes(&topo, 0));

    let foreign = topo.ip_in("a", &["route", "show", "10.244.77.0/24"]);
    assert!(foreign.contains("proto static"), "foreign route kept after deletes: {foreign}");
}
