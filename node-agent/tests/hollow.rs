//! Hollow nodes against an in-process control plane. The first test turns controllers and
//! scheduler off and plays node-IPAM and scheduler itself: registration, Leases, pods started
//! with an address from the podCIDR, graceful deletion finished, restart, pause and resume. The
//! second runs the node-IPAM and node-lifecycle controllers: a paused node goes Unknown and
//! its pod NotReady, and both recover on resume.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::Ipv4Addr;
use std::time::Duration;

use control_plane::app::{Config, Running, start};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use node_agent::hollow::{HollowCluster, HollowConfig, HollowError};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(10);

/// A control plane in this process, serving on a free loopback port.
struct Plane {
    _dir: tempfile::TempDir,
    running: Running,
}

async fn control_plane(controllers: &str) -> Plane {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cfg = Config::new(dir.path().to_path_buf(), "127.0.0.1:0".parse().expect("addr"));
    cfg.controllers = controllers.into();
    cfg.scheduler = false;
    cfg.settings.node_monitor_grace_period = Duration::from_secs(2);
    cfg.settings.node_monitor_period = Duration::from_millis(200);
    let running = start(cfg).await.expect("control plane starts");
    Plane { _dir: dir, running }
}

/// A plain kube client (HTTP/1.1), independent of the one the hollow nodes use.
async fn client(plane: &Plane) -> kube::Client {
    let kc = Kubeconfig::read_from(&plane.running.kubeconfig).expect("kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.expect("client config");
    kube::Client::try_from(cfg).expect("client")
}

fn hollow_config(plane: &Plane) -> HollowConfig {
    let mut cfg = HollowConfig::new(&plane.running.kubeconfig, 3);
    cfg.renew_every = Duration::from_millis(200);
    cfg.heartbeat_every = Duration::from_millis(500);
    cfg.lease_seconds = 5;
    cfg.labels = BTreeMap::from([("topology.kubernetes.io/zone".to_string(), "zone-a".to_string())]);
    cfg
}

/// Polls `f` every 50 ms until it returns `Some`, failing the test after [`WAIT`].
async fn wait_for<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn renew_time(leases: &Api<Lease>, name: &str) -> Timestamp {
    let lease = leases.get(name).await.expect("lease exists");
    lease.spec.and_then(|s| s.renew_time).expect("renewTime set").0
}

async fn create_pod(pods: &Api<Pod>, name: &str, node: Option<&str>) -> Pod {
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "containers": [{"name": "app", "image": "busybox:local", "command": ["sleep", "3600"]}],
            "initContainers": [{"name": "setup", "image": "busybox:local"}],
        },
    });
    if let Some(node) = node {
        pod["spec"]["nodeName"] = json!(node);
    }
    let pod: Pod = serde_json::from_value(pod).expect("pod manifest");
    pods.create(&PostParams::default(), &pod).await.expect("pod created")
}

/// Waits for the pod to be reported Running and returns its address.
async fn running_ip(pods: &Api<Pod>, name: &str) -> Ipv4Addr {
    let pod = wait_for(&format!("pod {name} Running"), || async {
        let p = pods.get(name).await.expect("get pod");
        let s = p.status.as_ref()?;
        (s.phase.as_deref() == Some("Running") && s.pod_ip.is_some()).then_some(p)
    })
    .await;
    let status = pod.status.expect("status");
    let conds = status.conditions.expect("conditions");
    for t in ["PodReadyToStartContainers", "Initialized", "ContainersReady", "Ready", "PodScheduled"] {
        assert!(conds.iter().any(|c| c.type_ == t && c.status == "True"), "{name}: condition {t} True in {conds:?}");
    }
    let cs = &status.container_statuses.expect("containerStatuses")[0];
    assert!(cs.ready && cs.started == Some(true) && cs.restart_count == 0, "{cs:?}");
    assert_eq!(cs.image_id, "hollow://busybox:local");
    let uid = pod.metadata.uid.expect("uid");
    assert_eq!(cs.container_id.as_deref(), Some(format!("hollow://{uid}-app").as_str()));
    assert!(cs.state.as_ref().and_then(|s| s.running.as_ref()).is_some(), "container running");
    let init = &status.init_container_statuses.expect("init container statuses")[0];
    assert_eq!(init.state.as_ref().and_then(|s| s.terminated.as_ref()).map(|t| t.exit_code), Some(0));
    assert!(status.start_time.is_some());
    let ip: Ipv4Addr = status.pod_ip.expect("podIP").parse().expect("IPv4 podIP");
    assert_eq!(status.pod_ips.expect("podIPs")[0].ip, ip.to_string());
    ip
}

fn in_cidr(ip: Ipv4Addr, net: [u8; 3]) -> bool {
    ip.octets()[..3] == net
}

async fn assert_pending(pods: &Api<Pod>, name: &str, why: &str) {
    let p = pods.get(name).await.expect("get pod");
    let s = p.status.expect("status");
    assert_eq!(s.phase.as_deref(), Some("Pending"), "{name} stays Pending: {why}");
    assert!(s.pod_ip.is_none(), "{name} has no address: {why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hollow_nodes_register_renew_and_run_pods() {
    let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("node_agent=debug,warn").try_init();
    let plane = control_plane("").await;
    let client = client(&plane).await;
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");

    let hollow = HollowCluster::start(hollow_config(&plane)).await.expect("hollow nodes start");
    assert_eq!(hollow.node_names(), ["hollow-0", "hollow-1", "hollow-2"]);
    assert!(matches!(hollow.pause_node("nope"), Err(HollowError::UnknownNode(_))));

    // Nodes: Ready, capacity, addresses, node info, labels.
    for (i, name) in hollow.node_names().iter().enumerate() {
        let node = nodes.get(name).await.expect("node registered");
        let labels = node.metadata.labels.clone().expect("labels");
        assert_eq!(labels.get("kubernetes.io/hostname"), Some(name));
        assert_eq!(labels.get("node.kubernetes.io/instance-type").map(String::as_str), Some("hollow"));
        assert_eq!(labels.get("topology.kubernetes.io/zone").map(String::as_str), Some("zone-a"));
        let status = node.status.expect("node status");
        let ready = status.conditions.iter().flatten().find(|c| c.type_ == "Ready").expect("Ready condition");
        assert_eq!((ready.status.as_str(), ready.reason.as_deref()), ("True", Some("KubeletReady")));
        for t in ["MemoryPressure", "DiskPressure", "PIDPressure"] {
            assert!(status.conditions.iter().flatten().any(|c| c.type_ == t && c.status == "False"), "{t} False");
        }
        let cap = status.capacity.expect("capacity");
        assert_eq!(cap["cpu"].0, "4");
        assert_eq!(cap["memory"].0, "16Gi");
        assert_eq!(cap["pods"].0, "110");
        assert!(cap.contains_key("ephemeral-storage"));
        assert_eq!(status.allocatable.expect("allocatable")["pods"].0, "110");
        let addrs = status.addresses.expect("addresses");
        let internal = addrs.iter().find(|a| a.type_ == "InternalIP").expect("InternalIP");
        assert_eq!(internal.address, format!("10.255.0.{}", i + 1));
        assert!(addrs.iter().any(|a| a.type_ == "Hostname" && &a.address == name));
        let info = status.node_info.expect("nodeInfo");
        assert_eq!(
            (info.kubelet_version.as_str(), info.container_runtime_version.as_str()),
            ("v1.35.2", "hollow://1.0")
        );
        assert_eq!((info.operating_system.as_str(), info.architecture.as_str()), ("linux", "amd64"));

        let lease = leases.get(name).await.expect("lease created at registration");
        let spec = lease.spec.expect("lease spec");
        assert_eq!(spec.holder_identity.as_deref(), Some(name.as_str()));
        assert_eq!(spec.lease_duration_seconds, Some(5));
        let owner = &lease.metadata.owner_references.expect("owned by its node")[0];
        assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("Node", name.as_str()));
    }

    // Leases are renewed, and heartbeats move lastHeartbeatTime.
    let first = renew_time(&leases, "hollow-0").await;
    wait_for("hollow-0 lease renewed", || async { (renew_time(&leases, "hollow-0").await > first).then_some(()) })
        .await;
    let heartbeat = |n: Node| {
        n.status
            .and_then(|s| s.conditions)
            .and_then(|c| c.into_iter().find(|c| c.type_ == "Ready"))?
            .last_heartbeat_time
    };
    let hb = heartbeat(nodes.get("hollow-0").await.expect("node")).expect("heartbeat time").0;
    wait_for("hollow-0 heartbeat", || async {
        let now = heartbeat(nodes.get("hollow-0").await.expect("node"))?.0;
        (now > hb).then_some(())
    })
    .await;

    // A pod bound to a node without a podCIDR waits for one; unbound pods are not ours.
    create_pod(&pods, "unbound", None).await;
    create_pod(&pods, "p1", Some("hollow-1")).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_pending(&pods, "p1", "its node has no podCIDR yet").await;
    let cidr = json!({"spec": {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24"]}});
    nodes.patch("hollow-1", &PatchParams::default(), &Patch::Merge(&cidr)).await.expect("set podCIDR");
    let ip1 = running_ip(&pods, "p1").await;
    assert!(in_cidr(ip1, [10, 244, 1]), "{ip1} inside 10.244.1.0/24");
    let p1 = pods.get("p1").await.expect("p1");
    let p1_status = p1.status.expect("status");
    assert_eq!(p1_status.host_ip.as_deref(), Some("10.255.0.2"));
    assert_eq!(p1_status.host_ips.expect("hostIPs")[0].ip, "10.255.0.2");
    create_pod(&pods, "p2", Some("hollow-1")).await;
    let ip2 = running_ip(&pods, "p2").await;
    assert!(in_cidr(ip2, [10, 244, 1]) && ip2 != ip1, "{ip2} is a second address");
    assert_pending(&pods, "unbound", "no node").await;

    // kubectl-style delete (default grace): the hollow kubelet finishes it.
    let deleting = pods.delete("p1", &DeleteParams::default()).await.expect("delete p1");
    assert!(deleting.left().is_some_and(|p| p.metadata.deletion_timestamp.is_some()), "graceful: marked first");
    wait_for("p1 gone", || async { pods.get_opt("p1").await.expect("get p1").is_none().then_some(()) }).await;
    // The kubelet counts a deletion once its DELETE has returned, which can be just after the
    // watch above saw the pod go.
    wait_for("the deletion counted", || async { (hollow.stats().pods_deleted >= 1).then_some(()) }).await;
    assert!(hollow.stats().pods_started >= 2, "{:?}", hollow.stats());

    // Restart: nodes re-register; addresses in use are not handed out again.
    hollow.shutdown().await;
    let hollow = HollowCluster::start(hollow_config(&plane)).await.expect("hollow nodes restart");
    assert_eq!(hollow.stats().nodes_registered, 3);
    let node = nodes.get("hollow-1").await.expect("node");
    assert_eq!(
        node.spec.and_then(|s| s.pod_cidr).as_deref(),
        Some("10.244.1.0/24"),
        "re-registration keeps the podCIDR"
    );
    create_pod(&pods, "p3", Some("hollow-1")).await;
    let ip3 = running_ip(&pods, "p3").await;
    assert!(in_cidr(ip3, [10, 244, 1]) && ip3 != ip2, "{ip3} differs from p2's {ip2}");
    assert_eq!(running_ip(&pods, "p2").await, ip2, "p2 keeps its address");

    // Pause: the lease stops moving and new pods are not served; resume catches up.
    let cidr = json!({"spec": {"podCIDR": "10.244.2.0/24"}});
    nodes.patch("hollow-2", &PatchParams::default(), &Patch::Merge(&cidr)).await.expect("set podCIDR");
    hollow.pause_node("hollow-2").expect("pause");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let paused_at = renew_time(&leases, "hollow-2").await;
    let other_at = renew_time(&leases, "hollow-0").await;
    create_pod(&pods, "p4", Some("hollow-2")).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(renew_time(&leases, "hollow-2").await, paused_at, "paused node's lease is not renewed");
    assert!(renew_time(&leases, "hollow-0").await > other_at, "other nodes keep renewing");
    assert_pending(&pods, "p4", "its node is paused").await;
    hollow.resume_node("hollow-2").expect("resume");
    wait_for("hollow-2 lease renewed again", || async {
        (renew_time(&leases, "hollow-2").await > paused_at).then_some(())
    })
    .await;
    let ip4 = running_ip(&pods, "p4").await;
    assert!(in_cidr(ip4, [10, 244, 2]), "{ip4} inside 10.244.2.0/24");

    let stats = hollow.stats();
    assert_eq!((stats.lease_failures, stats.heartbeat_failures, stats.pod_failures), (0, 0, 0), "{stats:?}");
    hollow.shutdown().await;
    plane.running.shutdown().await;
}

fn ready_condition(node: &Node) -> Option<(String, Timestamp)> {
    let c = node.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == "Ready")?;
    Some((c.status.clone(), c.last_transition_time.as_ref()?.0))
}

fn pod_ready(pod: &Pod) -> Option<String> {
    let c = pod.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == "Ready")?;
    Some(c.status.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_node_controllers_a_paused_node_goes_unknown_and_recovers() {
    let plane = control_plane("nodeipam,nodelifecycle").await;
    let client = client(&plane).await;
    let nodes: Api<Node> = Api::all(client.clone());
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let mut cfg = hollow_config(&plane);
    cfg.nodes = 2;
    cfg.lease_seconds = 2;
    let hollow = HollowCluster::start(cfg).await.expect("hollow nodes start");

    // The node-IPAM controller gives the node its range; the pod's address comes from it.
    let cidr = wait_for("hollow-0 podCIDR", || async {
        nodes.get("hollow-0").await.expect("node").spec?.pod_cidr.filter(|c| !c.is_empty())
    })
    .await;
    let net: Ipv4Addr = cidr.split('/').next().expect("address part").parse().expect("IPv4 podCIDR");
    create_pod(&pods, "w", Some("hollow-0")).await;
    let ip = running_ip(&pods, "w").await;
    let o = net.octets();
    assert!(cidr.ends_with("/24") && in_cidr(ip, [o[0], o[1], o[2]]), "{ip} inside {cidr}");

    // A dead kubelet: the lifecycle controller marks the node Unknown and its pod not Ready.
    hollow.pause_node("hollow-0").expect("pause");
    wait_for("hollow-0 Ready Unknown", || async {
        let (status, _) = ready_condition(&nodes.get("hollow-0").await.expect("node"))?;
        (status == "Unknown").then_some(())
    })
    .await;
    wait_for("pod w not Ready", || async { (pod_ready(&pods.get("w").await.expect("pod"))? == "False").then_some(()) })
        .await;
    let other = ready_condition(&nodes.get("hollow-1").await.expect("node")).expect("Ready condition");
    assert_eq!(other.0, "True", "the other node stays Ready");

    // Back: Ready again, transition at the resume, taints lifted, pod Ready again.
    let resumed_at = Timestamp::now();
    hollow.resume_node("hollow-0").expect("resume");
    let since = wait_for("hollow-0 Ready again", || async {
        let (status, since) = ready_condition(&nodes.get("hollow-0").await.expect("node"))?;
        (status == "True").then_some(since)
    })
    .await;
    assert!(since.as_second() >= resumed_at.as_second(), "Ready since {since}, resumed at {resumed_at}");
    wait_for("unreachable taints removed", || async {
        let taints = nodes.get("hollow-0").await.expect("node").spec?.taints.unwrap_or_default();
        taints.iter().all(|t| !t.key.starts_with("node.kubernetes.io/")).then_some(())
    })
    .await;
    wait_for("pod w Ready again", || async {
        (pod_ready(&pods.get("w").await.expect("pod"))? == "True").then_some(())
    })
    .await;
    assert_eq!(running_ip(&pods, "w").await, ip, "same address");

    hollow.shutdown().await;
    plane.running.shutdown().await;
}
