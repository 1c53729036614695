//! Pods bound to hollow nodes. One watch (`spec.nodeName!=`, all namespaces) feeds a compact
//! cache; a keyed work queue runs a level-triggered reconcile per pod that reads the cache by
//! key: a new pod gets an address from its node's podCIDR and a Running status (phase,
//! addresses, conditions, container statuses); a pod marked for deletion gives its address back
//! and is deleted with a zero grace period, as a kubelet does once its containers are stopped.
//! A running pod whose Ready condition someone else turned False (the node lifecycle controller,
//! while the node was unreachable) is made Ready again, as a kubelet's status sync would.
//! Pods of paused or deleted nodes, and pods of other nodes, are left alone.
//!
//! Addresses a pod already carries (reported by an earlier run) are claimed when the pod is
//! cached, and the queue only starts after the first full list, so a restart never hands out
//! an address twice.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex, MutexGuard};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStatus, HostIP, Pod, PodCondition, PodIP,
    PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::{WatchStreamExt as _, watcher};
use serde_json::json;
use tracing::{debug, warn};

use super::ipam::IpamError;
use super::node::is_status;
use super::{Counters, Shared};

/// Only pods bound to some node.
const BOUND: &str = "spec.nodeName!=";

/// Conditions of a running pod, in the order a kubelet reports them.
const RUNNING_CONDITIONS: [&str; 5] =
    ["PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled"];

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct PodKey {
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for PodKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum PodError {
    #[error("allocate a pod address")]
    Ipam(#[from] IpamError),
    #[error("report pod status")]
    Status(#[source] kube::Error),
    #[error("delete pod")]
    Delete(#[source] kube::Error),
}

/// What reconciling needs of a pod; the cache keeps this rather than whole Pods.
#[derive(Clone, Debug, Default)]
struct PodView {
    uid: String,
    node: usize,
    deleting: bool,
    phase: String,
    pod_ip: Option<IpAddr>,
    /// The Ready condition is True.
    ready: bool,
    host_network: bool,
    generation: Option<i64>,
    /// (name, image)
    containers: Vec<(String, String)>,
    /// (name, image, restartPolicy Always: a sidecar that keeps running)
    init_containers: Vec<(String, String, bool)>,
}

/// An address this process holds for a pod.
#[derive(Debug)]
struct Owned {
    uid: String,
    node: usize,
    ip: IpAddr,
    /// False for host-network pods, whose address is the node's.
    in_ipam: bool,
    /// The pod was reported Running with this address.
    reported: bool,
}

pub(crate) struct PodTable {
    inner: Mutex<Table>,
}

struct Table {
    cache: HashMap<PodKey, PodView>,
    by_node: Vec<HashSet<PodKey>>,
    owned: HashMap<PodKey, Owned>,
    /// The first full list is in; the queue may run.
    synced: bool,
    /// Pods of a (re-)list in progress.
    relist: Option<HashMap<PodKey, PodView>>,
}

impl PodTable {
    pub fn new(nodes: usize) -> Self {
        PodTable {
            inner: Mutex::new(Table {
                cache: HashMap::new(),
                by_node: vec![HashSet::new(); nodes],
                owned: HashMap::new(),
                synced: false,
                relist: None,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn release(shared: &Shared, o: &Owned) {
    if o.in_ipam {
        shared.nodes[o.node].state().ipam.release(o.ip);
    }
}

impl Table {
    fn put(&mut self, shared: &Shared, key: PodKey, view: PodView) {
        if let Some(ip) = view.pod_ip
            && self.owned.get(&key).is_none_or(|o| o.uid != view.uid)
        {
            // Started before (an earlier run): its address is taken.
            if let Some(stale) = self.owned.remove(&key) {
                release(shared, &stale);
            }
            let in_ipam = !view.host_network;
            if in_ipam {
                shared.nodes[view.node].state().ipam.claim(ip);
            }
            let reported = view.phase == "Running";
            self.owned.insert(key.clone(), Owned { uid: view.uid.clone(), node: view.node, ip, in_ipam, reported });
        }
        self.by_node[view.node].insert(key.clone());
        if let Some(old) = self.cache.insert(key.clone(), view)
            && let Some(new) = self.cache.get(&key)
            && old.node != new.node
        {
            self.by_node[old.node].remove(&key);
        }
    }

    fn remove(&mut self, key: &PodKey) -> bool {
        match self.cache.remove(key) {
            Some(old) => {
                self.by_node[old.node].remove(key);
                true
            }
            None => false,
        }
    }
}

fn view_of(shared: &Shared, pod: &Pod) -> Option<(PodKey, PodView)> {
    let spec = pod.spec.as_ref()?;
    let node = shared.node(spec.node_name.as_deref()?)?;
    let key = PodKey { namespace: pod.metadata.namespace.clone()?, name: pod.metadata.name.clone()? };
    let status = pod.status.as_ref();
    let view = PodView {
        uid: pod.metadata.uid.clone().unwrap_or_default(),
        node,
        deleting: pod.metadata.deletion_timestamp.is_some(),
        phase: status.and_then(|s| s.phase.clone()).unwrap_or_default(),
        pod_ip: status.and_then(|s| s.pod_ip.as_deref()).and_then(|ip| ip.parse().ok()),
        ready: status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True")),
        host_network: spec.host_network == Some(true),
        generation: pod.metadata.generation,
        containers: spec.containers.iter().map(|c| (c.name.clone(), c.image.clone().unwrap_or_default())).collect(),
        init_containers: spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| {
                (c.name.clone(), c.image.clone().unwrap_or_default(), c.restart_policy.as_deref() == Some("Always"))
            })
            .collect(),
    };
    Some((key, view))
}

fn key_of(pod: &Pod) -> Option<PodKey> {
    Some(PodKey { namespace: pod.metadata.namespace.clone()?, name: pod.metadata.name.clone()? })
}

/// Queues every pod of node `idx` (its podCIDR arrived, or it was resumed).
pub(crate) fn enqueue_node(shared: &Shared, idx: usize) {
    let keys: Vec<PodKey> = {
        let t = shared.pods.lock();
        if !t.synced {
            return;
        }
        t.by_node[idx].iter().cloned().collect()
    };
    for k in keys {
        shared.queue.add(k);
    }
}

/// Watches bound pods until shutdown, keeping the cache and feeding the queue.
pub(crate) async fn watch(shared: Arc<Shared>) {
    let api: Api<Pod> = Api::all(shared.client.clone());
    let mut events = watcher(api, watcher::Config::default().fields(BOUND)).default_backoff().boxed();
    loop {
        let ev = tokio::select! {
            _ = shared.cancel.cancelled() => return,
            ev = events.next() => ev,
        };
        let Some(ev) = ev else { return };
        let mut queue = Vec::new();
        {
            let mut t = shared.pods.lock();
            match ev {
                Ok(watcher::Event::Init) => t.relist = Some(HashMap::new()),
                Ok(watcher::Event::InitApply(pod)) => {
                    if let Some((key, view)) = view_of(&shared, &pod) {
                        match t.relist.as_mut() {
                            Some(relist) => {
                                relist.insert(key, view);
                            }
                            None => t.put(&shared, key, view),
                        }
                    }
                }
                Ok(watcher::Event::InitDone) => {
                    let fresh = t.relist.take().unwrap_or_default();
                    let gone: Vec<PodKey> = t.cache.keys().filter(|k| !fresh.contains_key(*k)).cloned().collect();
                    for k in &gone {
                        t.remove(k);
                    }
                    queue.extend(gone);
                    queue.extend(t.owned.keys().cloned());
                    for (k, v) in fresh {
                        queue.push(k.clone());
                        t.put(&shared, k, v);
                    }
                    t.synced = true;
                    debug!(pods = t.cache.len(), "pod list synced");
                }
                Ok(watcher::Event::Apply(pod)) => match view_of(&shared, &pod) {
                    Some((key, view)) => {
                        t.put(&shared, key.clone(), view);
                        queue.push(key);
                    }
                    // Bound elsewhere: drop a same-named pod of ours whose deletion we missed.
                    None => {
                        if let Some(key) = key_of(&pod)
                            && t.remove(&key)
                        {
                            queue.push(key);
                        }
                    }
                },
                Ok(watcher::Event::Delete(pod)) => {
                    if let Some(key) = key_of(&pod)
                        && t.remove(&key)
                    {
                        queue.push(key);
                    }
                }
                Err(error) => warn!(%error, "pod watch failed; retrying"),
            }
            if !t.synced {
                queue.clear();
            }
        }
        for k in queue {
            shared.queue.add(k);
        }
    }
}

/// Takes keys off the queue until it closes.
pub(crate) async fn worker(shared: Arc<Shared>) {
    while let Some(key) = shared.queue.next().await {
        match reconcile(&shared, &key).await {
            Ok(()) => shared.queue.forget(&key),
            Err(error) => {
                Counters::bump(&shared.counters.pod_failures);
                warn!(error = %ErrorChain(&error), pod = %key, "pod sync failed; will retry");
                shared.queue.retry(key.clone());
            }
        }
        shared.queue.done(&key);
    }
}

/// `error: cause: cause` on one line.
struct ErrorChain<'a>(&'a dyn std::error::Error);

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

enum Action {
    Nothing,
    Delete { uid: String },
    Start { view: PodView, ip: IpAddr, host_ip: Ipv4Addr },
    Ready { generation: Option<i64> },
}

/// Decides under the lock, then writes without it.
fn decide(shared: &Shared, key: &PodKey) -> Result<Action, PodError> {
    let mut t = shared.pods.lock();
    let view = t.cache.get(key).cloned();
    if let Some(o) = t.owned.get(key)
        && view.as_ref().is_none_or(|v| v.uid != o.uid)
        && let Some(o) = t.owned.remove(key)
    {
        release(shared, &o);
    }
    let Some(view) = view else { return Ok(Action::Nothing) };
    if !shared.serving(view.node) {
        return Ok(Action::Nothing);
    }
    if view.deleting {
        if let Some(o) = t.owned.remove(key) {
            release(shared, &o);
        }
        return Ok(Action::Delete { uid: view.uid });
    }
    if view.phase == "Running" && view.pod_ip.is_some() {
        // Every pod we report is Ready; not Ready means someone else said so.
        return Ok(if view.ready { Action::Nothing } else { Action::Ready { generation: view.generation } });
    }
    // Reported already (the cache lags behind our write), or finished.
    let reported = t.owned.get(key).is_some_and(|o| o.reported);
    if reported || view.phase == "Succeeded" || view.phase == "Failed" {
        return Ok(Action::Nothing);
    }
    let host_ip = shared.nodes[view.node].address;
    let ip = match t.owned.get(key) {
        Some(o) => o.ip,
        None => {
            let (ip, in_ipam) = if view.host_network {
                (IpAddr::V4(host_ip), false)
            } else {
                match shared.nodes[view.node].state().ipam.allocate()? {
                    Some(ip) => (ip, true),
                    // No podCIDR yet: the Node watch queues the node's pods when it comes.
                    None => return Ok(Action::Nothing),
                }
            };
            let owned = Owned { uid: view.uid.clone(), node: view.node, ip, in_ipam, reported: false };
            t.owned.insert(key.clone(), owned);
            ip
        }
    };
    Ok(Action::Start { view, ip, host_ip })
}

async fn reconcile(shared: &Shared, key: &PodKey) -> Result<(), PodError> {
    let action = decide(shared, key)?;
    if matches!(action, Action::Nothing) {
        return Ok(());
    }
    let Some(_permit) = shared.write_permit().await else { return Ok(()) };
    let api: Api<Pod> = Api::namespaced(shared.client.clone(), &key.namespace);
    match action {
        Action::Nothing => Ok(()),
        Action::Delete { uid } => {
            let params = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions { uid: Some(uid), resource_version: None }),
                ..DeleteParams::default()
            };
            match api.delete(&key.name, &params).await {
                Ok(_) => {
                    Counters::bump(&shared.counters.pods_deleted);
                    debug!(pod = %key, "pod deleted");
                    Ok(())
                }
                // Gone already, or the name now belongs to a new pod.
                Err(e) if is_status(&e, 404) || is_status(&e, 409) => Ok(()),
                Err(e) => Err(PodError::Delete(e)),
            }
        }
        Action::Start { view, ip, host_ip } => {
            let patch = json!({"status": running_status(&view, key, host_ip, ip, Timestamp::now())});
            match api.patch_status(&key.name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(_) => {
                    if let Some(o) = shared.pods.lock().owned.get_mut(key)
                        && o.uid == view.uid
                    {
                        o.reported = true;
                    }
                    Counters::bump(&shared.counters.pods_started);
                    debug!(pod = %key, %ip, "pod running");
                    Ok(())
                }
                // Deleted meanwhile: the Delete event gives the address back.
                Err(e) if is_status(&e, 404) => Ok(()),
                Err(e) => Err(PodError::Status(e)),
            }
        }
        Action::Ready { generation } => {
            let ready = PodCondition {
                type_: "Ready".into(),
                status: "True".into(),
                last_transition_time: Some(Time(Timestamp::now())),
                observed_generation: generation,
                ..Default::default()
            };
            let patch = json!({"status": {"conditions": [ready]}});
            match api.patch_status(&key.name, &PatchParams::default(), &Patch::Strategic(&patch)).await {
                Ok(_) => {
                    debug!(pod = %key, "pod Ready again");
                    Ok(())
                }
                Err(e) if is_status(&e, 404) => Ok(()),
                Err(e) => Err(PodError::Status(e)),
            }
        }
    }
}

/// The status of a pod whose containers all started at `now`.
fn running_status(view: &PodView, key: &PodKey, host_ip: Ipv4Addr, ip: IpAddr, now: Timestamp) -> PodStatus {
    let hollow_id = |name: &str| format!("hollow://{}-{name}", if view.uid.is_empty() { &key.name } else { &view.uid });
    let running = || ContainerState {
        running: Some(ContainerStateRunning { started_at: Some(Time(now)) }),
        ..Default::default()
    };
    let status = |name: &str, image: &str, state: ContainerState, started: bool| ContainerStatus {
        name: name.into(),
        image: image.into(),
        image_id: format!("hollow://{image}"),
        container_id: Some(hollow_id(name)),
        ready: true,
        started: Some(started),
        restart_count: 0,
        state: Some(state),
        ..Default::default()
    };
    let init = view
        .init_containers
        .iter()
        .map(|(name, image, sidecar)| {
            if *sidecar {
                status(name, image, running(), true)
            } else {
                let done = ContainerStateTerminated {
                    exit_code: 0,
                    reason: Some("Completed".into()),
                    started_at: Some(Time(now)),
                    finished_at: Some(Time(now)),
                    container_id: Some(hollow_id(name)),
                    ..Default::default()
                };
                status(name, image, ContainerState { terminated: Some(done), ..Default::default() }, false)
            }
        })
        .collect::<Vec<_>>();
    PodStatus {
        phase: Some("Running".into()),
        observed_generation: view.generation,
        host_ip: Some(host_ip.to_string()),
        host_ips: Some(vec![HostIP { ip: host_ip.to_string() }]),
        pod_ip: Some(ip.to_string()),
        pod_ips: Some(vec![PodIP { ip: ip.to_string() }]),
        start_time: Some(Time(now)),
        conditions: Some(
            RUNNING_CONDITIONS
                .iter()
                .map(|t| PodCondition {
                    type_: (*t).into(),
                    status: "True".into(),
                    last_transition_time: Some(Time(now)),
                    observed_generation: view.generation,
                    ..Default::default()
                })
                .collect(),
        ),
        container_statuses: Some(
            view.containers.iter().map(|(name, image)| status(name, image, running(), true)).collect(),
        ),
        init_container_statuses: (!init.is_empty()).then_some(init),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_status_reports_every_container() {
        let view = PodView {
            uid: "u1".into(),
            generation: Some(1),
            containers: vec![("app".into(), "busybox:local".into())],
            init_containers: vec![
                ("setup".into(), "busybox:local".into(), false),
                ("proxy".into(), "envoy".into(), true),
            ],
            ..Default::default()
        };
        let key = PodKey { namespace: "default".into(), name: "p".into() };
        let s = running_status(
            &view,
            &key,
            Ipv4Addr::new(10, 255, 0, 1),
            "10.244.0.2".parse().expect("ip"),
            Timestamp::now(),
        );
        let v = serde_json::to_value(&s).expect("serializes");
        assert_eq!(v["phase"], "Running");
        assert_eq!(v["podIPs"], json!([{"ip": "10.244.0.2"}]));
        assert_eq!(v["hostIP"], "10.255.0.1");
        let types: Vec<_> = v["conditions"].as_array().expect("conditions").iter().map(|c| c["type"].clone()).collect();
        assert_eq!(types.len(), 5);
        assert!(v["conditions"].as_array().expect("conditions").iter().all(|c| c["status"] == "True"));
        let app = &v["containerStatuses"][0];
        assert_eq!(app["containerID"], "hollow://u1-app");
        assert_eq!(app["imageID"], "hollow://busybox:local");
        assert_eq!(
            (app["ready"].as_bool(), app["started"].as_bool(), app["restartCount"].as_i64()),
            (Some(true), Some(true), Some(0))
        );
        assert!(app["state"]["running"]["startedAt"].is_string());
        assert_eq!(v["initContainerStatuses"][0]["state"]["terminated"]["reason"], "Completed");
        assert!(v["initContainerStatuses"][1]["state"]["running"].is_object(), "sidecars keep running");
    }
}
