//! The node controllers against an in-process control plane (controllers `nodeipam` and
//! `nodelifecycle` only, no scheduler, short grace periods): pod CIDR allocation across deletions,
//! restarts and exhaustion; heartbeats through Leases, NotReady and its taints, taint-based
//! eviction and recovery; cordon. The tests play kubelet: they create Nodes with status, renew
//! their Leases, and set pod status.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use control_plane::app::{Config, Running, StartError, start};
use control_plane::registry::{self, Resource};
use control_plane::server::internal::{Client, DeleteParams, PatchType};
use serde_json::{Value, json};

const CONTROLLERS: &str = "nodeipam,nodelifecycle";
const WAIT: Duration = Duration::from_secs(15);
const UNREACHABLE: &str = "node.kubernetes.io/unreachable";

fn nodes() -> &'static Resource {
    &registry::nodes::RESOURCE
}

fn pods() -> &'static Resource {
    &registry::pods::RESOURCE
}

fn leases() -> &'static Resource {
    &registry::leases::RESOURCE
}

fn events() -> &'static Resource {
    registry::find("", "v1", "events").expect("events are served")
}

/// Starts a control plane on `dir` with the node controllers and short grace periods. The same
/// identity lets a restart take the leader lease back at once.
async fn start_cp(dir: &Path) -> Running {
    // After a shutdown, tasks of the previous control plane may hold the store for a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match start(config(dir)).await {
            Ok(running) => return running,
            Err(StartError::Store(error)) if Instant::now() < deadline => {
                eprintln!("store still held ({error}); retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("control plane starts: {error}"),
        }
    }
}

fn config(dir: &Path) -> Config {
    let mut cfg = Config::new(dir.to_path_buf(), "127.0.0.1:0".parse().expect("addr"));
    cfg.controllers = CONTROLLERS.into();
    cfg.scheduler = false;
    cfg.leader.identity = "controllers-nodes-test".into();
    cfg.settings.node_monitor_grace_period = Duration::from_secs(2);
    cfg.settings.node_monitor_period = Duration::from_millis(300);
    cfg
}

/// Polls `f` until it returns `Some`, failing the test after `timeout`.
async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn now_micro() -> String {
    k8s_openapi::jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

fn now_secs() -> String {
    k8s_openapi::jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

async fn get(c: &Client, res: &Resource, ns: &str, name: &str) -> Option<Value> {
    match c.get(res, ns, name).await {
        Ok(v) => Some(v),
        Err(e) if e.code == 404 => None,
        Err(e) => panic!("get {name}: {e}"),
    }
}

async fn create_node(c: &Client, name: &str, extra_spec: Value) {
    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}, "spec": extra_spec});
    c.create(nodes(), "", node).await.expect("create node");
}

fn pod_cidr(node: &Value) -> Option<String> {
    let single = node.pointer("/spec/podCIDR").and_then(Value::as_str)?.to_string();
    assert_eq!(node.pointer("/spec/podCIDRs"), Some(&json!([single])), "podCIDRs follows podCIDR");
    Some(single)
}

async fn wait_cidr(c: &Client, name: &str) -> String {
    wait_for(WAIT, &format!("a podCIDR on {name}"), || async {
        get(c, nodes(), "", name).await.as_ref().and_then(pod_cidr)
    })
    .await
}

/// Every Node's podCIDR, by name.
async fn all_cidrs(c: &Client) -> BTreeMap<String, Option<String>> {
    let (items, _) = c.list(nodes(), "").await.expect("list nodes");
    items
        .iter()
        .map(|n| (n.pointer("/metadata/name").and_then(Value::as_str).expect("name").to_string(), pod_cidr(n)))
        .collect()
}

fn assert_distinct_in_cluster(cidrs: &BTreeMap<String, Option<String>>) {
    let mut seen = HashSet::new();
    for (node, cidr) in cidrs {
        let cidr = cidr.as_deref().unwrap_or_else(|| panic!("{node} has no podCIDR"));
        let (ip, bits) = cidr.split_once('/').expect("a CIDR");
        let octets: Vec<u8> = ip.split('.').map(|o| o.parse().expect("octet")).collect();
        assert_eq!(
            (octets[0], octets[1], octets[3], bits),
            (10, 244, 0, "24"),
            "{node}: {cidr} is a /24 of 10.244.0.0/16"
        );
        assert!(seen.insert(cidr.to_string()), "{cidr} handed out twice: {cidrs:?}");
    }
}

/// Events about `name` with `reason`.
async fn events_for(c: &Client, ns: &str, name: &str, reason: &str) -> Vec<Value> {
    let (items, _) = c.list(events(), ns).await.expect("list events");
    items
        .into_iter()
        .filter(|e| {
            e.pointer("/involvedObject/name").and_then(Value::as_str) == Some(name)
                && e.get("reason").and_then(Value::as_str) == Some(reason)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_cidrs_are_distinct_survive_restarts_and_are_reused_after_release() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cp = start_cp(dir.path()).await;
    let c = Client::new(cp.api.clone());

    // Three Nodes get three distinct /24s; a hand-set range is kept.
    for n in ["n1", "n2", "n3"] {
        create_node(&c, n, json!({})).await;
    }
    create_node(&c, "manual", json!({"podCIDR": "10.244.3.0/24"})).await;
    for n in ["n1", "n2", "n3"] {
        wait_cidr(&c, n).await;
    }
    let cidrs = all_cidrs(&c).await;
    assert_distinct_in_cluster(&cidrs);
    assert_eq!(cidrs["manual"].as_deref(), Some("10.244.3.0/24"));

    // podCIDR is immutable once set.
    let err = c
        .patch(
            nodes(),
            "",
            "n1",
            PatchType::Merge,
            &json!({"spec": {"podCIDR": "10.244.99.0/24", "podCIDRs": ["10.244.99.0/24"]}}),
            false,
        )
        .await
        .expect_err("podCIDR cannot change");
    assert_eq!(err.code, 422, "{err}");

    // A deletion and a creation: no duplicate.
    c.delete(nodes(), "", "n2", &DeleteParams::default()).await.expect("delete n2");
    create_node(&c, "n4", json!({})).await;
    wait_cidr(&c, "n4").await;
    let before_restart = all_cidrs(&c).await;
    assert_distinct_in_cluster(&before_restart);

    // A restart on the same data: CIDRs kept, a new Node collides with none.
    drop(c);
    cp.shutdown().await;
    let cp = start_cp(dir.path()).await;
    let c = Client::new(cp.api.clone());
    create_node(&c, "n5", json!({})).await;
    wait_cidr(&c, "n5").await;
    let after_restart = all_cidrs(&c).await;
    assert_distinct_in_cluster(&after_restart);
    for (node, cidr) in &before_restart {
        assert_eq!(&after_restart[node], cidr, "{node} kept its range over the restart");
    }

    // Fill the cluster CIDR: 256 /24s in a /16.
    let used = after_restart.len();
    let fill: Vec<String> = (0..256 - used).map(|i| format!("fill-{i:03}")).collect();
    for n in &fill {
        create_node(&c, n, json!({})).await;
    }
    for n in &fill {
        wait_cidr(&c, n).await;
    }
    let full = all_cidrs(&c).await;
    assert_eq!(full.len(), 256);
    assert_distinct_in_cluster(&full);

    // Exhausted: the next Node waits with a CIDRNotAvailable event…
    create_node(&c, "extra", json!({})).await;
    let ev = wait_for(WAIT, "a CIDRNotAvailable event", || async {
        events_for(&c, "default", "extra", "CIDRNotAvailable").await.into_iter().next()
    })
    .await;
    assert_eq!(ev["message"], json!("Node extra status is now: CIDRNotAvailable"));
    assert_eq!(ev.pointer("/involvedObject/kind"), Some(&json!("Node")));
    assert!(pod_cidr(&get(&c, nodes(), "", "extra").await.expect("extra exists")).is_none());

    // …and gets the range a deleted Node releases.
    let released = full["n1"].clone().expect("n1 had a range");
    c.delete(nodes(), "", "n1", &DeleteParams::default()).await.expect("delete n1");
    assert_eq!(Some(wait_cidr(&c, "extra").await), Some(released));
    assert_distinct_in_cluster(&all_cidrs(&c).await);
    cp.shutdown().await;
}

// ---- heartbeats, taints, eviction -------------------------------------------------------------

/// A Node as a kubelet registers it: Ready, with fresh heartbeats.
fn ready_node(name: &str) -> Value {
    let now = now_secs();
    let cond = |kind: &str, status: &str, reason: &str| {
        json!({"type": kind, "status": status, "reason": reason, "message": reason,
               "lastHeartbeatTime": now, "lastTransitionTime": now})
    };
    json!({
        "apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "spec": {},
        "status": {"conditions": [
            cond("MemoryPressure", "False", "KubeletHasSufficientMemory"),
            cond("DiskPressure", "False", "KubeletHasNoDiskPressure"),
            cond("PIDPressure", "False", "KubeletHasSufficientPID"),
            cond("Ready", "True", "KubeletReady"),
        ]}
    })
}

/// Renews the Leases of the Nodes in `alive` every 300 ms, as kubelets do every 10 s.
fn spawn_heartbeats(c: Client, alive: Arc<Mutex<BTreeSet<String>>>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let names: Vec<String> = alive.lock().expect("lock").iter().cloned().collect();
            for n in names {
                let lease = json!({
                    "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": n, "namespace": "kube-node-lease"},
                    "spec": {"holderIdentity": n, "leaseDurationSeconds": 40, "renewTime": now_micro()},
                });
                match c.get(leases(), "kube-node-lease", &n).await {
                    Ok(_) => {
                        let patch = json!({"spec": {"renewTime": now_micro()}});
                        let _ = c.patch(leases(), "kube-node-lease", &n, PatchType::Merge, &patch, false).await;
                    }
                    Err(_) => {
                        let _ = c.create(leases(), "kube-node-lease", lease).await;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    })
}

/// A pod bound to `node`, Running and Ready as its kubelet would report.
async fn running_pod(c: &Client, name: &str, node: &str, tolerations: Value) {
    let mut spec = json!({"nodeName": node, "terminationGracePeriodSeconds": 1,
                          "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]});
    if !tolerations.is_null() {
        spec["tolerations"] = tolerations;
    }
    let pod =
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"}, "spec": spec});
    c.create(pods(), "default", pod).await.expect("create pod");
    let now = now_secs();
    let status = json!({"status": {"phase": "Running", "podIP": "10.244.0.10", "podIPs": [{"ip": "10.244.0.10"}],
        "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now}]}});
    c.patch(pods(), "default", name, PatchType::Merge, &status, true).await.expect("pod status");
}

fn condition<'a>(obj: &'a Value, kind: &str) -> Option<&'a Value> {
    obj.pointer("/status/conditions")?.as_array()?.iter().find(|c| c["type"] == kind)
}

fn node_taints(node: &Value) -> Vec<(String, String)> {
    node.pointer("/spec/taints")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|t| (t["key"].as_str().unwrap_or("").into(), t["effect"].as_str().unwrap_or("").into()))
                .collect()
        })
        .unwrap_or_default()
}

fn kubectl(kubeconfig: &Path, home: &Path, args: &[&str]) -> String {
    let out = Command::new(common::kubectl_path())
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("HOME", home)
        .output()
        .expect("kubectl runs");
    assert!(out.status.success(), "kubectl {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_nodes_go_not_ready_are_tainted_evicted_and_recover() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cp = start_cp(dir.path()).await;
    let c = Client::new(cp.api.clone());
    let kubeconfig: PathBuf = cp.kubeconfig.clone();
    let alive: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    for n in ["hb-1", "hb-2", "hb-3"] {
        c.create(nodes(), "", ready_node(n)).await.expect("create node");
        alive.lock().expect("lock").insert(n.to_string());
    }
    let heartbeats = spawn_heartbeats(c.clone(), alive.clone());

    let short = json!([
        {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 1},
        {"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 1},
    ]);
    running_pod(&c, "fast", "hb-3", short.clone()).await;
    running_pod(&c, "slow", "hb-3", Value::Null).await; // the default 300 s tolerations
    running_pod(&c, "safe", "hb-1", short).await;

    // Lease renewals alone keep the Nodes ready well past the grace period.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for n in ["hb-1", "hb-2", "hb-3"] {
        let node = get(&c, nodes(), "", n).await.expect("node");
        assert_eq!(condition(&node, "Ready").map(|r| &r["status"]), Some(&json!("True")), "{n} stays ready");
        assert!(node_taints(&node).is_empty(), "{n} has no taints: {node}");
    }

    // hb-3's kubelet goes silent.
    alive.lock().expect("lock").remove("hb-3");
    let silent_since = Instant::now();
    let node = wait_for(WAIT, "hb-3 unreachable with both taints", || async {
        let node = get(&c, nodes(), "", "hb-3").await?;
        let taints = node_taints(&node);
        let want =
            [(UNREACHABLE.to_string(), "NoSchedule".to_string()), (UNREACHABLE.to_string(), "NoExecute".to_string())];
        want.iter().all(|t| taints.contains(t)).then_some(node)
    })
    .await;
    assert!(silent_since.elapsed() >= Duration::from_secs(2), "not before the grace period");
    let ready = condition(&node, "Ready").expect("Ready condition");
    assert_eq!(ready["status"], json!("Unknown"));
    assert_eq!(ready["reason"], json!("NodeStatusUnknown"));
    assert_eq!(ready["message"], json!("Kubelet stopped posting node status."));
    for kind in ["MemoryPressure", "DiskPressure", "PIDPressure"] {
        assert_eq!(condition(&node, kind).map(|c| &c["status"]), Some(&json!("Unknown")), "{kind}");
    }
    let no_execute =
        node["spec"]["taints"].as_array().expect("taints").iter().find(|t| t["effect"] == "NoExecute").cloned();
    assert!(
        no_execute.and_then(|t| t["timeAdded"].as_str().map(str::to_string)).is_some(),
        "NoExecute taint has timeAdded"
    );
    let ev = wait_for(WAIT, "a NodeNotReady event on hb-3", || async {
        events_for(&c, "default", "hb-3", "NodeNotReady").await.into_iter().next()
    })
    .await;
    assert_eq!(ev["message"], json!("Node hb-3 status is now: NodeNotReady"));

    // Its pods are marked not ready; the one tolerating 1 s is evicted and, its kubelet being
    // gone, force-deleted once its grace period ran out.
    wait_for(WAIT, "slow marked not ready", || async {
        let pod = get(&c, pods(), "default", "slow").await?;
        (condition(&pod, "Ready")?["status"] == "False").then_some(())
    })
    .await;
    let ev = wait_for(WAIT, "a NodeNotReady warning on slow", || async {
        events_for(&c, "default", "slow", "NodeNotReady").await.into_iter().next()
    })
    .await;
    assert_eq!((ev["type"].as_str(), ev["message"].as_str()), (Some("Warning"), Some("Node is not ready")));
    wait_for(WAIT, "fast deleted", || async { get(&c, pods(), "default", "fast").await.is_none().then_some(()) }).await;
    let ev = events_for(&c, "default", "fast", "TaintManagerEviction").await;
    assert_eq!(ev.first().map(|e| e["message"].clone()), Some(json!("Marking for deletion Pod default/fast")));
    let slow = get(&c, pods(), "default", "slow").await.expect("slow tolerates 300 s");
    assert!(slow.pointer("/metadata/deletionTimestamp").is_none(), "slow is not being deleted");
    let safe = get(&c, pods(), "default", "safe").await.expect("pods on ready nodes stay");
    assert_eq!(condition(&safe, "Ready").map(|r| &r["status"]), Some(&json!("True")));
    for n in ["hb-1", "hb-2"] {
        let node = get(&c, nodes(), "", n).await.expect("node");
        assert_eq!(condition(&node, "Ready").map(|r| &r["status"]), Some(&json!("True")), "{n} is still ready");
        assert!(node_taints(&node).is_empty(), "{n} untainted");
    }

    // The kubelet comes back: Lease renewed, status Ready again; the taints go.
    alive.lock().expect("lock").insert("hb-3".into());
    let now = now_secs();
    let status = json!({"status": {"conditions": [
        {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status",
         "lastHeartbeatTime": now, "lastTransitionTime": now}]}});
    c.patch(nodes(), "", "hb-3", PatchType::Strategic, &status, true).await.expect("node status");
    wait_for(WAIT, "hb-3 untainted", || async {
        let node = get(&c, nodes(), "", "hb-3").await?;
        node_taints(&node).is_empty().then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let node = get(&c, nodes(), "", "hb-3").await.expect("node");
    assert_eq!(condition(&node, "Ready").map(|r| &r["status"]), Some(&json!("True")), "hb-3 ready: {node}");
    assert!(get(&c, pods(), "default", "slow").await.is_some(), "slow survived the outage");

    // A NoExecute taint a pod does not tolerate evicts it at once; a pod tolerating it forever stays.
    running_pod(&c, "intolerant", "hb-2", Value::Null).await;
    running_pod(
        &c,
        "tolerant",
        "hb-2",
        json!([{"key": "example.com/drain", "operator": "Exists", "effect": "NoExecute"}]),
    )
    .await;
    kubectl(&kubeconfig, dir.path(), &["taint", "node", "hb-2", "example.com/drain=now:NoExecute"]);
    wait_for(WAIT, "intolerant evicted", || async {
        let pod = get(&c, pods(), "default", "intolerant").await?;
        pod.pointer("/metadata/deletionTimestamp").is_some().then_some(())
    })
    .await;
    let pod = get(&c, pods(), "default", "intolerant").await.expect("still terminating on a live node");
    let target = condition(&pod, "DisruptionTarget").expect("DisruptionTarget condition");
    assert_eq!(target["reason"], json!("DeletionByTaintManager"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let tolerant = get(&c, pods(), "default", "tolerant").await.expect("tolerant stays");
    assert!(tolerant.pointer("/metadata/deletionTimestamp").is_none());

    // Cordon taints, uncordon untaints.
    kubectl(&kubeconfig, dir.path(), &["cordon", "hb-1"]);
    let unschedulable = ("node.kubernetes.io/unschedulable".to_string(), "NoSchedule".to_string());
    wait_for(WAIT, "hb-1 unschedulable taint", || async {
        let node = get(&c, nodes(), "", "hb-1").await?;
        node_taints(&node).contains(&unschedulable).then_some(())
    })
    .await;
    kubectl(&kubeconfig, dir.path(), &["uncordon", "hb-1"]);
    wait_for(WAIT, "hb-1 unschedulable taint removed", || async {
        let node = get(&c, nodes(), "", "hb-1").await?;
        (!node_taints(&node).contains(&unschedulable)).then_some(())
    })
    .await;

    heartbeats.abort();
    cp.shutdown().await;
}
