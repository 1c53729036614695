//! The service proxy (`node_agent::proxy`) against a real control plane and a real eBPF datapath
//! (privileged: run as root). The test creates a Service with a TCP and a UDP port and an
//! EndpointSlice through the API, runs the proxy's watch loop programming a `Datapath` whose maps
//! are pinned in a private bpffs mount (nothing is attached to any cgroup, so no traffic is
//! touched), and checks that the programmed table follows the objects: the first complete table
//! by one full sync, later changes by upserts and removals only. It also runs `node-agent lb
//! list|stats` against the pins. The bpffs mount (and with it the pins) goes on drop, also when
//! an assertion fails.

mod common;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Cluster, wait_for};
use k8s_openapi::api::core::v1::{Namespace, Service as KubeService};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use node_agent::datapath::{self, Datapath, Protocol, Service, SyncStats, bpffs};
use node_agent::proxy::{LoadBalancer, ProxyConfig};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(10);
const READY_A: Ipv4Addr = Ipv4Addr::new(10, 244, 77, 1);
const READY_B: Ipv4Addr = Ipv4Addr::new(10, 244, 77, 2);
const NOT_READY: Ipv4Addr = Ipv4Addr::new(10, 244, 77, 3);

/// A bpffs mounted in a temp dir for this test, unmounted (taking its pins along) on drop.
struct PrivateBpffs {
    mount_point: PathBuf,
    _dir: tempfile::TempDir,
}

impl PrivateBpffs {
    fn mount() -> Self {
        let dir = tempfile::Builder::new().prefix("keelson-proxy-").tempdir().expect("temp dir");
        let mount_point = dir.path().join("bpffs");
        assert!(bpffs::ensure_mounted(&mount_point).expect("mount bpffs (run as root)"), "a fresh mount");
        Self { mount_point, _dir: dir }
    }

    fn pin_dir(&self) -> PathBuf {
        self.mount_point.join("keelson")
    }
}

impl Drop for PrivateBpffs {
    fn drop(&mut self) {
        if let Err(error) = bpffs::remove_pins(&self.pin_dir()) {
            eprintln!("remove pins: {error}");
        }
        if let Err(error) = nix::mount::umount2(self.mount_point.as_path(), nix::mount::MntFlags::MNT_DETACH) {
            eprintln!("unmount {}: {error}", self.mount_point.display());
        }
    }
}

/// The datapath shared between the proxy loop and the test, with a log of the calls made.
#[derive(Clone)]
struct Shared {
    datapath: Arc<Mutex<Datapath>>,
    calls: Arc<Mutex<Vec<&'static str>>>,
}

impl Shared {
    fn record(&self, call: &'static str) {
        self.calls.lock().expect("calls lock").push(call);
    }

    /// How many calls of each kind were made so far.
    fn counts(&self) -> BTreeMap<&'static str, usize> {
        let mut counts = BTreeMap::new();
        for call in self.calls.lock().expect("calls lock").iter() {
            *counts.entry(*call).or_default() += 1;
        }
        counts
    }

    /// The programmed frontends of `vip`.
    fn table_of(&self, vip: Ipv4Addr) -> Vec<Service> {
        let mut datapath = self.datapath.lock().expect("datapath lock");
        let table = datapath.services().expect("read the programmed services");
        table.into_iter().filter(|s| s.vip == vip).collect()
    }
}

impl LoadBalancer for Shared {
    fn sync(&mut self, desired: &[Service]) -> Result<SyncStats, datapath::Error> {
        self.record("sync");
        self.datapath.lock().expect("datapath lock").sync(desired)
    }

    fn upsert(&mut self, service: &Service) -> Result<SyncStats, datapath::Error> {
        self.record("upsert");
        self.datapath.lock().expect("datapath lock").upsert(service)
    }

    fn remove(&mut self, vip: Ipv4Addr, port: u16, proto: Protocol) -> Result<SyncStats, datapath::Error> {
        self.record("remove");
        self.datapath.lock().expect("datapath lock").remove(vip, port, proto)
    }
}

async fn client(cluster: &Cluster) -> kube::Client {
    let kc = Kubeconfig::read_from(&cluster.kubeconfig).expect("kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.expect("client config");
    kube::Client::try_from(cfg).expect("client")
}

fn frontend(vip: Ipv4Addr, port: u16, proto: Protocol, backends: &[Ipv4Addr], target: u16) -> Service {
    Service {
        vip,
        port,
        proto,
        backends: backends.iter().map(|ip| SocketAddrV4::new(*ip, target)).collect(),
        affinity: None,
        maglev: false,
    }
}

fn endpoint(ip: Ipv4Addr, ready: bool) -> serde_json::Value {
    json!({"addresses": [ip.to_string()], "conditions": {"ready": ready}})
}

fn node_agent(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_node-agent-under-test")).args(args).output().expect("run node-agent")
}

fn lb(command: &str, pin_dir: &Path) -> String {
    let out = node_agent(&["lb", command, "--pin-dir", pin_dir.to_str().expect("utf-8 path")]);
    assert!(out.status.success(), "node-agent lb {command} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8 output")
}

#[test]
fn proxy_programs_services_and_endpoint_slices_and_follows_changes() {
    let bpffs = PrivateBpffs::mount();
    let datapath =
        Datapath::load(&datapath::Config { pin_dir: Some(bpffs.pin_dir()) }).expect("load the eBPF datapath");
    let shared = Shared { datapath: Arc::new(Mutex::new(datapath)), calls: Arc::default() };
    let cluster = Cluster::start_standalone();
    let rt = cluster.runtime();
    let client = rt.block_on(client(&cluster));
    let ns = format!("svc-proxy-{}", std::process::id());

    // The objects: a Service with a TCP and a UDP port, one slice with two ready endpoints and
    // one that is not ready.
    let vip: Ipv4Addr = rt.block_on(async {
        let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}})).expect("namespace");
        Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &namespace).await.expect("namespace");
        let service: KubeService = serde_json::from_value(json!({
            "metadata": {"name": "web"},
            "spec": {"ports": [
                {"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"},
                {"name": "dns", "port": 53, "targetPort": 5353, "protocol": "UDP"},
            ]},
        }))
        .expect("service");
        let created = Api::<KubeService>::namespaced(client.clone(), &ns)
            .create(&PostParams::default(), &service)
            .await
            .expect("create the Service");
        let slice: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": "web-1", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [
                {"name": "http", "port": 8080, "protocol": "TCP"},
                {"name": "dns", "port": 5353, "protocol": "UDP"},
            ],
            "endpoints": [endpoint(READY_A, true), endpoint(READY_B, true), endpoint(NOT_READY, false)],
        }))
        .expect("endpoint slice");
        Api::<EndpointSlice>::namespaced(client.clone(), &ns)
            .create(&PostParams::default(), &slice)
            .await
            .expect("create the EndpointSlice");
        created.spec.and_then(|s| s.cluster_ip).expect("a ClusterIP").parse().expect("an IPv4 ClusterIP")
    });

    let cancel = CancellationToken::new();
    let mut target = shared.clone();
    let stop = cancel.clone();
    let proxy_client = client.clone();
    let task =
        rt.spawn(async move { node_agent::proxy::run(proxy_client, &mut target, &ProxyConfig::default(), stop).await });

    // The first table: both frontends, the ready endpoints only, on the slice's ports.
    let expected = vec![
        frontend(vip, 53, Protocol::Udp, &[READY_A, READY_B], 5353),
        frontend(vip, 80, Protocol::Tcp, &[READY_A, READY_B], 8080),
    ];
    wait_for("the Service programmed", WAIT, || (shared.table_of(vip) == expected).then_some(()));
    assert_eq!(shared.counts().get("sync"), Some(&1), "one full sync at start: {:?}", shared.counts());

    // What an operator sees.
    let list = lb("list", &bpffs.pin_dir());
    for needle in [
        format!("{vip}:80/TCP"),
        format!("=> {READY_A}:8080/TCP"),
        format!("=> {READY_B}:8080/TCP"),
        format!("{vip}:53/UDP"),
        format!("=> {READY_A}:5353/UDP"),
    ] {
        assert!(list.contains(&needle), "`lb list` shows {needle}:\n{list}");
    }
    assert!(!list.contains(&NOT_READY.to_string()), "not-ready endpoints are not programmed:\n{list}");
    assert!(list.starts_with("ID"), "{list}");
    let stats = lb("stats", &bpffs.pin_dir());
    assert!(stats.contains("connect") && stats.contains("no_backend"), "{stats}");

    // One endpoint goes not-ready: the table follows through upserts, without a full sync.
    rt.block_on(async {
        let patch =
            json!({"endpoints": [endpoint(READY_A, true), endpoint(READY_B, false), endpoint(NOT_READY, false)]});
        Api::<EndpointSlice>::namespaced(client.clone(), &ns)
            .patch("web-1", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("patch the EndpointSlice");
    });
    let expected =
        vec![frontend(vip, 53, Protocol::Udp, &[READY_A], 5353), frontend(vip, 80, Protocol::Tcp, &[READY_A], 8080)];
    wait_for("the not-ready endpoint removed", WAIT, || (shared.table_of(vip) == expected).then_some(()));
    let counts = shared.counts();
    assert_eq!(counts.get("sync"), Some(&1), "changes are applied incrementally: {counts:?}");
    assert!(counts.get("upsert").is_some_and(|&n| n >= 2), "{counts:?}");

    // The Service goes: its frontends are removed.
    rt.block_on(async {
        Api::<KubeService>::namespaced(client.clone(), &ns)
            .delete("web", &DeleteParams::default())
            .await
            .expect("delete the Service");
    });
    wait_for("the Service's frontends removed", WAIT, || shared.table_of(vip).is_empty().then_some(()));
    let counts = shared.counts();
    assert_eq!((counts.get("sync"), counts.get("remove")), (Some(&1), Some(&2)), "{counts:?}");
    let list = lb("list", &bpffs.pin_dir());
    assert!(!list.contains(&format!("{vip}:")), "{list}");

    cancel.cancel();
    rt.block_on(task).expect("the proxy loop ends on cancel");
}

#[test]
fn lb_list_shows_node_port_frontends_and_stats_the_xdp_and_maglev_counters() {
    let bpffs = PrivateBpffs::mount();
    let mut datapath =
        Datapath::load(&datapath::Config { pin_dir: Some(bpffs.pin_dir()) }).expect("load the eBPF datapath");
    let node_ip = Ipv4Addr::new(192, 168, 77, 1);
    let node_port = Service { maglev: true, ..frontend(node_ip, 30080, Protocol::Tcp, &[READY_A], 8080) };
    datapath.sync(&[node_port]).expect("program a node port");
    let list = lb("list", &bpffs.pin_dir());
    assert!(
        list.contains(&format!("{node_ip}:30080/TCP (maglev)")) && list.contains(&format!("=> {READY_A}:8080/TCP")),
        "{list}"
    );
    let stats = lb("stats", &bpffs.pin_dir());
    assert!(stats.contains("xdp_dnat") && stats.contains("xdp_no_backend"), "{stats}");
    assert!(stats.contains("maglev_pick") && stats.contains("maglev_miss"), "{stats}");
}

#[test]
fn lb_list_without_pins_fails_clearly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pin_dir = dir.path().join("nothing-here");
    for command in ["list", "stats"] {
        let out = node_agent(&["lb", command, "--pin-dir", pin_dir.to_str().expect("utf-8 path")]);
        assert!(!out.status.success(), "lb {command} must fail without pins");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("no datapath pinned at {}; is `node-agent proxy` running?", pin_dir.display())),
            "{stderr}"
        );
    }
}
