//! One hollow node's identity and Node object: registration (create, or update the status of a
//! Node left by an earlier run), the periodic condition heartbeat, and the one Node watch that
//! learns every node's podCIDR and notices when a controller marked a node's conditions Unknown.

use std::collections::{BTreeMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeStatus, NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt as _, watcher};
use serde_json::json;
use tracing::{debug, info, warn};

use super::ipam::{Cidr, Ipam};
use super::{Counters, HollowError, Shared, lease, pods, schedule};

pub(crate) const KUBELET_VERSION: &str = "v1.35.2";
const RUNTIME_VERSION: &str = "hollow://1.0";
const KUBELET_PORT: i32 = 10250;
const REGISTER_ATTEMPTS: u32 = 5;

/// The conditions a kubelet owns: type, healthy status, reason, message.
const CONDITIONS: [(&str, &str, &str, &str); 4] = [
    ("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
    ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
    ("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
    ("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
];

/// A hollow node: fixed identity, flags the loops read, and state behind a lock.
pub(crate) struct NodeSlot {
    pub index: usize,
    pub name: String,
    pub address: Ipv4Addr,
    /// Paused by a test: no lease, no status, no pod handling.
    pub paused: AtomicBool,
    /// The Node was deleted from the API; a kubelet does not re-register until restarted.
    pub gone: AtomicBool,
    pub lease_busy: AtomicBool,
    pub heartbeat_busy: AtomicBool,
    state: Mutex<NodeState>,
}

pub(crate) struct NodeState {
    pub uid: Option<String>,
    pub ipam: Ipam,
    /// lastTransitionTime of each of [`CONDITIONS`].
    since: [Timestamp; 4],
    /// Conditions someone else changed (a controller marking them Unknown): the next post
    /// puts them back, and that is their transition.
    stale: [bool; 4],
}

impl NodeState {
    /// Transition times for a post at `now`.
    fn since_for_post(&mut self, now: Timestamp) -> [Timestamp; 4] {
        for (since, stale) in self.since.iter_mut().zip(self.stale.iter_mut()) {
            if std::mem::take(stale) {
                *since = now;
            }
        }
        self.since
    }
}

impl NodeSlot {
    pub fn new(index: usize, name: String) -> Self {
        let now = Timestamp::now();
        NodeSlot {
            index,
            name,
            address: node_address(index),
            paused: AtomicBool::new(false),
            gone: AtomicBool::new(false),
            lease_busy: AtomicBool::new(false),
            heartbeat_busy: AtomicBool::new(false),
            state: Mutex::new(NodeState { uid: None, ipam: Ipam::default(), since: [now; 4], stale: [false; 4] }),
        }
    }

    pub fn state(&self) -> MutexGuard<'_, NodeState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// `10.255.<i / 250>.<i % 250 + 1>`: distinct per node, never contacted.
pub(crate) fn node_address(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 255, (i / 250) as u8, (i % 250 + 1) as u8)
}

fn labels(shared: &Shared, slot: &NodeSlot) -> BTreeMap<String, String> {
    let mut l: BTreeMap<String, String> = [
        ("kubernetes.io/hostname", slot.name.as_str()),
        ("kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", "amd64"),
        ("beta.kubernetes.io/os", "linux"),
        ("beta.kubernetes.io/arch", "amd64"),
        ("node.kubernetes.io/instance-type", "hollow"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    l.extend(shared.cfg.labels.clone());
    l
}

fn conditions(since: &[Timestamp; 4], now: Timestamp) -> Vec<NodeCondition> {
    CONDITIONS
        .iter()
        .zip(since)
        .map(|(&(type_, status, reason, message), since)| NodeCondition {
            type_: type_.into(),
            status: status.into(),
            reason: Some(reason.into()),
            message: Some(message.into()),
            last_heartbeat_time: Some(Time(now)),
            last_transition_time: Some(Time(*since)),
        })
        .collect()
}

/// A stable pseudo-random id per node (machine ID, system UUID).
fn node_id(name: &str, salt: u64) -> String {
    use std::hash::{Hash as _, Hasher as _};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (name, salt).hash(&mut h);
    let a = h.finish();
    (a, name).hash(&mut h);
    format!("{a:016x}{:016x}", h.finish())
}

fn status(shared: &Shared, slot: &NodeSlot, since: &[Timestamp; 4], now: Timestamp) -> NodeStatus {
    let cfg = &shared.cfg;
    let resources: BTreeMap<String, Quantity> = [
        ("cpu", cfg.cpu.clone()),
        ("memory", cfg.memory.clone()),
        ("pods", cfg.pods.to_string()),
        ("ephemeral-storage", cfg.ephemeral_storage.clone()),
        ("hugepages-1Gi", "0".into()),
        ("hugepages-2Mi", "0".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), Quantity(v)))
    .collect();
    NodeStatus {
        capacity: Some(resources.clone()),
        allocatable: Some(resources),
        conditions: Some(conditions(since, now)),
        addresses: Some(vec![
            NodeAddress { type_: "InternalIP".into(), address: slot.address.to_string() },
            NodeAddress { type_: "Hostname".into(), address: slot.name.clone() },
        ]),
        daemon_endpoints: Some(NodeDaemonEndpoints { kubelet_endpoint: Some(DaemonEndpoint { port: KUBELET_PORT }) }),
        node_info: Some(NodeSystemInfo {
            architecture: "amd64".into(),
            operating_system: "linux".into(),
            os_image: "Hollow Linux (Keelson)".into(),
            kernel_version: "6.18.0-hollow".into(),
            container_runtime_version: RUNTIME_VERSION.into(),
            kubelet_version: KUBELET_VERSION.into(),
            kube_proxy_version: String::new(),
            machine_id: node_id(&slot.name, 1),
            system_uuid: node_id(&slot.name, 2),
            boot_id: node_id(&slot.name, now.as_second() as u64),
            swap: None,
        }),
        ..NodeStatus::default()
    }
}

fn node_object(shared: &Shared, slot: &NodeSlot, since: &[Timestamp; 4], now: Timestamp) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(slot.name.clone()),
            labels: Some(labels(shared, slot)),
            annotations: Some(BTreeMap::from([("node.alpha.kubernetes.io/ttl".to_string(), "0".to_string())])),
            ..ObjectMeta::default()
        },
        spec: None,
        status: Some(status(shared, slot, since, now)),
    }
}

pub(crate) fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

/// Whether a failed request is worth repeating (overload, server errors, connection trouble).
pub(crate) fn is_transient(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => s.code == 429 || s.code >= 500,
        _ => true,
    }
}

/// Registers node `idx` and its Lease (one write slot for both), retrying transient failures.
pub(crate) async fn register(shared: &Arc<Shared>, idx: usize) -> Result<(), HollowError> {
    let slot = &shared.nodes[idx];
    let mut delay = Duration::from_millis(100);
    let mut attempt = 1;
    loop {
        let permit = shared.write_permit().await;
        let result = match register_once(shared, slot).await {
            Ok(()) => lease::renew(shared, slot).await,
            Err(e) => Err(e),
        };
        drop(permit);
        match result {
            Ok(()) => {
                Counters::bump(&shared.counters.nodes_registered);
                return Ok(());
            }
            Err(error) if attempt < REGISTER_ATTEMPTS && is_transient(&error) => {
                warn!(%error, node = %slot.name, attempt, "node registration failed; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
                attempt += 1;
            }
            Err(source) => return Err(HollowError::Register { node: slot.name.clone(), source }),
        }
    }
}

async fn register_once(shared: &Shared, slot: &NodeSlot) -> Result<(), kube::Error> {
    let api: Api<Node> = Api::all(shared.client.clone());
    let now = Timestamp::now();
    let since = slot.state().since_for_post(now);
    let node = node_object(shared, slot, &since, now);
    match api.create(&PostParams::default(), &node).await {
        Ok(created) => {
            observe(slot, &created);
            // A server that drops status on create (the status subresource rule) gets it posted.
            if created.status.as_ref().and_then(|s| s.capacity.as_ref()).is_none() {
                let patch = json!({"status": node.status});
                api.patch_status(&slot.name, &PatchParams::default(), &Patch::Strategic(&patch)).await?;
            }
            debug!(node = %slot.name, "node created");
            Ok(())
        }
        Err(e) if is_status(&e, 409) => {
            // Re-registration after a restart: keep what others set, refresh what a kubelet owns.
            let current = api.get(&slot.name).await?;
            observe(slot, &current);
            let wanted = labels(shared, slot);
            let have = current.metadata.labels.clone().unwrap_or_default();
            if wanted.iter().any(|(k, v)| have.get(k) != Some(v)) {
                let patch = json!({"metadata": {"labels": wanted}});
                api.patch(&slot.name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
            }
            let since = slot.state().since_for_post(now);
            let patch = json!({"status": status(shared, slot, &since, now)});
            api.patch_status(&slot.name, &PatchParams::default(), &Patch::Strategic(&patch)).await?;
            info!(node = %slot.name, "existing node re-registered");
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Takes what the API says about our node: uid, podCIDR, and which of our conditions someone
/// else changed (their transition time restarts when we put them back). Returns whether the
/// podCIDR changed and whether the conditions need re-posting.
fn observe(slot: &NodeSlot, node: &Node) -> (bool, bool) {
    let mut st = slot.state();
    st.uid = node.metadata.uid.clone();
    let cidr_changed = match node.spec.as_ref().and_then(|s| s.pod_cidr.as_deref()).filter(|c| !c.is_empty()) {
        Some(text) => match Cidr::parse(text) {
            Ok(cidr) => st.ipam.set_cidr(cidr),
            Err(error) => {
                warn!(%error, node = %slot.name, "ignoring podCIDR");
                false
            }
        },
        None => false,
    };
    let server = node.status.as_ref().and_then(|s| s.conditions.as_deref()).unwrap_or_default();
    let mut stale = false;
    for (i, &(type_, status, ..)) in CONDITIONS.iter().enumerate() {
        match server.iter().find(|c| c.type_ == type_) {
            Some(c) if c.status == status => {
                if let Some(t) = &c.last_transition_time {
                    st.since[i] = t.0;
                }
                st.stale[i] = false;
            }
            _ => {
                st.stale[i] = true;
                stale = true;
            }
        }
    }
    (cidr_changed, stale)
}

/// Reads the Node back and takes in what others changed in its conditions, as a kubelet does
/// before it posts its status: a node coming back from a pause must not trust a watch that may
/// not have delivered the controller's `Unknown` yet (it would post `Ready` with the old
/// transition time). A failed read leaves the watch's view in place.
pub(crate) async fn refresh(shared: &Shared, slot: &NodeSlot) {
    let api: Api<Node> = Api::all(shared.client.clone());
    match api.get(&slot.name).await {
        Ok(node) => {
            observe(slot, &node);
        }
        Err(error) => warn!(%error, node = %slot.name, "reading the node back"),
    }
}

/// Re-posts the node's conditions with a fresh `lastHeartbeatTime`.
pub(crate) async fn heartbeat(shared: &Shared, slot: &NodeSlot) -> Result<(), kube::Error> {
    let api: Api<Node> = Api::all(shared.client.clone());
    let now = Timestamp::now();
    let since = slot.state().since_for_post(now);
    let patch = json!({"status": {"conditions": conditions(&since, now)}});
    api.patch_status(&slot.name, &PatchParams::default(), &Patch::Strategic(&patch)).await.map(drop)
}

/// Watches all Nodes; only ours matter. Ends when the cluster shuts down.
pub(crate) async fn watch(shared: Arc<Shared>) {
    let api: Api<Node> = Api::all(shared.client.clone());
    let mut events = watcher(api, watcher::Config::default()).default_backoff().boxed();
    let mut seen: Option<HashSet<usize>> = None;
    loop {
        let ev = tokio::select! {
            _ = shared.cancel.cancelled() => return,
            ev = events.next() => ev,
        };
        let Some(ev) = ev else { return };
        match ev {
            Ok(watcher::Event::Init) => seen = Some(HashSet::new()),
            Ok(watcher::Event::InitApply(node)) => {
                if let Some(idx) = applied(&shared, &node)
                    && let Some(seen) = seen.as_mut()
                {
                    seen.insert(idx);
                }
            }
            Ok(watcher::Event::InitDone) => {
                // Nodes missing from a re-list were deleted while we were not watching.
                if let Some(seen) = seen.take() {
                    for slot in shared.nodes.iter().filter(|s| !seen.contains(&s.index)) {
                        if !slot.gone.swap(true, Ordering::AcqRel) {
                            warn!(node = %slot.name, "node is gone from the API; no longer serving it");
                        }
                    }
                }
            }
            Ok(watcher::Event::Apply(node)) => {
                applied(&shared, &node);
            }
            Ok(watcher::Event::Delete(node)) => {
                if let Some(idx) = node.metadata.name.as_deref().and_then(|n| shared.node(n))
                    && !shared.nodes[idx].gone.swap(true, Ordering::AcqRel)
                {
                    warn!(node = %shared.nodes[idx].name, "node deleted from the API; no longer serving it");
                }
            }
            Err(error) => warn!(%error, "node watch failed; retrying"),
        }
    }
}

/// Handles one current Node; returns its index when it is ours.
fn applied(shared: &Arc<Shared>, node: &Node) -> Option<usize> {
    let idx = shared.node(node.metadata.name.as_deref()?)?;
    let slot = &shared.nodes[idx];
    if slot.gone.swap(false, Ordering::AcqRel) {
        info!(node = %slot.name, "node is back in the API");
    }
    let (cidr_changed, stale) = observe(slot, node);
    if cidr_changed {
        debug!(node = %slot.name, "podCIDR known");
        pods::enqueue_node(shared, idx);
    }
    if stale && shared.serving(idx) {
        let shared = shared.clone();
        shared.tracker.clone().spawn(async move { schedule::run_now(&shared, idx, schedule::Job::Heartbeat).await });
    }
    Some(idx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_distinct_and_outside_cluster_ranges() {
        assert_eq!(node_address(0), Ipv4Addr::new(10, 255, 0, 1));
        assert_eq!(node_address(249), Ipv4Addr::new(10, 255, 0, 250));
        assert_eq!(node_address(250), Ipv4Addr::new(10, 255, 1, 1));
        assert_eq!(node_address(super::super::MAX_NODES - 1), Ipv4Addr::new(10, 255, 255, 250));
        let all: HashSet<_> = (0..super::super::MAX_NODES).map(node_address).collect();
        assert_eq!(all.len(), super::super::MAX_NODES);
    }

    #[test]
    fn conditions_are_the_kubelet_set() {
        let t = Timestamp::now();
        let c = conditions(&[t; 4], t);
        let ready = c.iter().find(|c| c.type_ == "Ready").expect("Ready");
        assert_eq!((ready.status.as_str(), ready.reason.as_deref()), ("True", Some("KubeletReady")));
        assert!(c.iter().filter(|c| c.type_ != "Ready").all(|c| c.status == "False"));
        let v = serde_json::to_value(&c).expect("serializes");
        assert!(v[0]["lastHeartbeatTime"].as_str().is_some_and(|s| s.ends_with('Z')));
    }

    #[test]
    fn observe_keeps_matching_transition_times_and_flags_foreign_changes() {
        let slot = NodeSlot::new(0, "hollow-0".into());
        let old: Timestamp = "2026-01-01T00:00:00Z".parse().expect("time");
        let mut conds = conditions(&[old; 4], old);
        let node = |conds: Vec<NodeCondition>, cidr: Option<&str>| Node {
            spec: Some(k8s_openapi::api::core::v1::NodeSpec {
                pod_cidr: cidr.map(str::to_string),
                ..Default::default()
            }),
            status: Some(NodeStatus { conditions: Some(conds), ..Default::default() }),
            ..Default::default()
        };
        assert_eq!(observe(&slot, &node(conds.clone(), None)), (false, false));
        assert_eq!(slot.state().since, [old; 4]);
        conds[3].status = "Unknown".into();
        assert_eq!(observe(&slot, &node(conds, Some("10.244.0.0/24"))), (true, true));
        assert_eq!(slot.state().since[3], old, "unchanged until we post again");
        let now = Timestamp::now();
        let since = slot.state().since_for_post(now);
        assert_eq!((since[0], since[3]), (old, now), "Ready transitions when re-posted");
        assert_eq!(slot.state().since_for_post(Timestamp::now())[3], now, "once");
    }
}
