//! The nodelifecycle controller: node health from kubelet heartbeats, the node taints that follow
//! from it, and taint-based eviction, as kube-controller-manager's node-lifecycle and
//! taint-eviction controllers do.
//!
//! * Health (every `settings.node_monitor_period`): a Node whose heartbeats (its
//!   `kube-node-lease/<node>` Lease being renewed, or its Ready condition's `lastHeartbeatTime`
//!   changing) stop for `settings.node_monitor_grace_period` gets its Ready, MemoryPressure,
//!   DiskPressure and PIDPressure conditions set to Unknown (`NodeStatusUnknown`, "Kubelet stopped
//!   posting node status."), a `NodeNotReady` event, and its pods' Ready condition set to False
//!   (a `NodeNotReady` warning on each pod). Heartbeats are timed by this process's clock when it
//!   sees them change, so clock skew between nodes does not matter; after a restart every Node
//!   gets a fresh grace period (one without any status is timed from its creation).
//! * NoSchedule taints (on every Node change): conditions map to `node.kubernetes.io/*` taints
//!   (Ready False → not-ready, Ready Unknown → unreachable, memory/disk/PID pressure, network
//!   unavailable) and `spec.unschedulable` to `node.kubernetes.io/unschedulable`.
//! * NoExecute taints: a Node whose Ready is False gets `not-ready:NoExecute`, Unknown
//!   `unreachable:NoExecute`, through a per-zone rate limiter (0.1 Nodes/s, burst 1); a zone where
//!   at least 3 Nodes and 55% are not ready stops tainting (small clusters), and when every Node of
//!   every zone is not ready the controller assumes its own network is at fault, removes those
//!   taints everywhere and stops ("master disruption mode"). Both go when the Node is Ready again.
//! * Eviction ([`eviction`]): pods on a Node with NoExecute taints they do not tolerate are
//!   deleted at once; those tolerating with `tolerationSeconds` when that time has passed since the
//!   taint's `timeAdded`. Pods left terminating on an unreachable Node are force-deleted.
//!
//! Differences from upstream: the Node startup grace period is the monitor grace period; Nodes
//! newly seen after a restart keep their NoExecute taints (upstream removes and re-adds them); the
//! terminating-pod clean-up also covers unreachable Nodes (see [`eviction`]).

mod eviction;

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde_json::{Value, json};
use tracing::{debug, info, warn};

use super::{Action, Controller, Ctx, Informers, Watch, WorkQueue, key_of};
use crate::registry::{leases, nodes, pods};
use crate::server::errors::ApiError;

pub const NAME: &str = "nodelifecycle";

pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
pub const TAINT_MEMORY_PRESSURE: &str = "node.kubernetes.io/memory-pressure";
pub const TAINT_DISK_PRESSURE: &str = "node.kubernetes.io/disk-pressure";
pub const TAINT_PID_PRESSURE: &str = "node.kubernetes.io/pid-pressure";
pub const TAINT_NETWORK_UNAVAILABLE: &str = "node.kubernetes.io/network-unavailable";
pub const TAINT_OUT_OF_SERVICE: &str = "node.kubernetes.io/out-of-service";
/// Where kubelets keep their heartbeat Leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";
/// Nodes with this label do not count when judging a zone's health.
const EXCLUDE_DISRUPTION: &str = "node.kubernetes.io/exclude-disruption";

const NO_SCHEDULE: &str = "NoSchedule";
const NO_EXECUTE: &str = "NoExecute";

/// The taints the NoSchedule pass owns (others on the Node are left alone).
const MANAGED_NO_SCHEDULE: [&str; 7] = [
    TAINT_NOT_READY,
    TAINT_UNREACHABLE,
    TAINT_MEMORY_PRESSURE,
    TAINT_DISK_PRESSURE,
    TAINT_PID_PRESSURE,
    TAINT_NETWORK_UNAVAILABLE,
    TAINT_UNSCHEDULABLE,
];

/// `--node-eviction-rate`, `--secondary-node-eviction-rate`, `--large-cluster-size-threshold`,
/// `--unhealthy-zone-threshold`.
const EVICTION_QPS: f64 = 0.1;
const SECONDARY_EVICTION_QPS: f64 = 0.01;
const LARGE_CLUSTER: usize = 50;
const UNHEALTHY_ZONE_THRESHOLD: f64 = 0.55;
/// How often the rate-limited NoExecute tainting runs.
const TAINT_PASS_PERIOD: Duration = Duration::from_millis(100);
/// Health checks run for this many Nodes at once.
const PARALLEL_NODES: usize = 8;
/// Conditions that go Unknown with a silent kubelet (NetworkUnavailable is the network's).
const SILENT_CONDITIONS: [&str; 4] = ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];

// ---- small accessors --------------------------------------------------------------------------

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

fn now_rfc3339() -> String {
    Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn parse_time(t: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(t).ok().map(|t| t.to_utc())
}

fn conditions(node: &Value) -> &[Value] {
    node.pointer("/status/conditions").and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

fn condition<'a>(obj: &'a Value, kind: &str) -> Option<&'a Value> {
    conditions(obj).iter().find(|c| s(c, "type") == kind)
}

/// The Node's Ready status (`True`, `False`, `Unknown`), `None` when never reported.
fn ready_status(node: &Value) -> Option<&str> {
    condition(node, "Ready").map(|c| s(c, "status"))
}

fn taints(node: &Value) -> &[Value] {
    node.pointer("/spec/taints").and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

fn has_taint(node: &Value, key: &str, effect: &str) -> bool {
    taints(node).iter().any(|t| s(t, "key") == key && s(t, "effect") == effect)
}

fn no_execute_taints(node: &Value) -> Vec<&Value> {
    taints(node).iter().filter(|t| s(t, "effect") == NO_EXECUTE).collect()
}

fn label<'a>(node: &'a Value, key: &str) -> Option<&'a str> {
    node.pointer("/metadata/labels").and_then(|l| l.get(key)).and_then(Value::as_str)
}

/// The zone a Node counts in (`region:\0:zone`, empty without topology labels).
fn zone_key(node: &Value) -> String {
    let get = |ga: &str, beta: &str| label(node, ga).or_else(|| label(node, beta)).unwrap_or("").to_string();
    let region = get("topology.kubernetes.io/region", "failure-domain.beta.kubernetes.io/region");
    let zone = get("topology.kubernetes.io/zone", "failure-domain.beta.kubernetes.io/zone");
    if region.is_empty() && zone.is_empty() { String::new() } else { format!("{region}:\x00:{zone}") }
}

/// The NoSchedule taint keys a Node's conditions and `spec.unschedulable` call for.
fn wanted_no_schedule(node: &Value) -> BTreeSet<&'static str> {
    let mut keys = BTreeSet::new();
    for c in conditions(node) {
        let key = match (s(c, "type"), s(c, "status")) {
            ("Ready", "False") => TAINT_NOT_READY,
            ("Ready", "Unknown") => TAINT_UNREACHABLE,
            ("MemoryPressure", "True") => TAINT_MEMORY_PRESSURE,
            ("DiskPressure", "True") => TAINT_DISK_PRESSURE,
            ("NetworkUnavailable", "True") => TAINT_NETWORK_UNAVAILABLE,
            ("PIDPressure", "True") => TAINT_PID_PRESSURE,
            _ => continue,
        };
        keys.insert(key);
    }
    if node.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        keys.insert(TAINT_UNSCHEDULABLE);
    }
    keys
}

/// Adds (with `timeAdded`, keeping an existing one as it is) and removes taints by key and effect,
/// re-reading the Node and writing with its resourceVersion until the write holds.
async fn swap_taints(ctx: &Ctx, name: &str, add: &[(&str, &str)], remove: &[(&str, &str)]) -> Result<(), ApiError> {
    for _ in 0..5 {
        let mut node = match ctx.client.get(&nodes::RESOURCE, "", name).await {
            Ok(n) => n,
            Err(e) if e.code == 404 => return Ok(()),
            Err(e) => return Err(e),
        };
        let current = taints(&node).to_vec();
        let matches = |t: &Value, (k, e): &(&str, &str)| s(t, "key") == *k && s(t, "effect") == *e;
        let mut next: Vec<Value> = current.iter().filter(|t| !remove.iter().any(|r| matches(t, r))).cloned().collect();
        let now = now_rfc3339();
        for a in add {
            if !next.iter().any(|t| matches(t, a)) {
                next.push(json!({"key": a.0, "effect": a.1, "timeAdded": now}));
            }
        }
        if next == current {
            return Ok(());
        }
        let Some(spec) = node.get_mut("spec").and_then(Value::as_object_mut) else {
            return Err(ApiError::internal(format!("node {name} has no spec")));
        };
        if next.is_empty() {
            spec.remove("taints");
        } else {
            spec.insert("taints".into(), Value::Array(next));
        }
        match ctx.client.update(&nodes::RESOURCE, "", node).await {
            Ok(_) => {
                debug!(node = %name, ?add, ?remove, "node taints updated");
                return Ok(());
            }
            Err(e) if e.code == 409 => continue,
            Err(e) if e.code == 404 => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Err(ApiError::conflict(&nodes::RESOURCE, name))
}

// ---- zones and their tainting rate ------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ZoneState {
    Initial,
    Normal,
    PartialDisruption,
    FullDisruption,
}

/// A zone's state from its Nodes' readiness: no Node ready is a full disruption, more than two and
/// at least the threshold not ready a partial one.
fn zone_state(ready: &[bool]) -> ZoneState {
    let up = ready.iter().filter(|r| **r).count();
    let down = ready.len() - up;
    if up == 0 && down > 0 {
        ZoneState::FullDisruption
    } else if down > 2 && down as f64 / ready.len() as f64 >= UNHEALTHY_ZONE_THRESHOLD {
        ZoneState::PartialDisruption
    } else {
        ZoneState::Normal
    }
}

/// The tainting rate for a zone entering `state`.
fn zone_qps(state: ZoneState, size: usize) -> Option<f64> {
    match state {
        ZoneState::Initial => None,
        ZoneState::Normal | ZoneState::FullDisruption => Some(EVICTION_QPS),
        ZoneState::PartialDisruption => Some(if size > LARGE_CLUSTER { SECONDARY_EVICTION_QPS } else { 0.0 }),
    }
}

/// A token bucket with a burst of one; a rate of zero never admits.
#[derive(Debug)]
struct TokenBucket {
    qps: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(qps: f64) -> TokenBucket {
        TokenBucket { qps, tokens: 1.0, last: Instant::now() }
    }

    fn try_accept(&mut self) -> bool {
        if self.qps <= 0.0 {
            return false;
        }
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * self.qps).min(1.0);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Nodes of one zone waiting for their NoExecute taint. A Node stays in `set` after it was
/// processed, so it is not queued again until it is marked reachable or its taint went missing.
#[derive(Debug)]
struct Tainter {
    queue: VecDeque<String>,
    set: HashSet<String>,
    limiter: TokenBucket,
}

impl Tainter {
    fn new() -> Tainter {
        Tainter { queue: VecDeque::new(), set: HashSet::new(), limiter: TokenBucket::new(EVICTION_QPS) }
    }

    fn add(&mut self, name: &str) {
        if self.set.insert(name.to_string()) {
            self.queue.push_back(name.to_string());
        }
    }

    fn remove(&mut self, name: &str) {
        self.set.remove(name);
        self.queue.retain(|n| n != name);
    }
}

// ---- controller state ------------------------------------------------------------------------

/// What the controller last saw of a Node's heartbeats, and when (its own clock).
#[derive(Debug)]
struct Health {
    probe: DateTime<Utc>,
    heartbeat: Option<String>,
    lease_renew: Option<DateTime<Utc>>,
}

#[derive(Default)]
struct State {
    term: Weak<Informers>,
    health: HashMap<String, Health>,
    /// Nodes seen by the monitor, for `RegisteredNode`/`RemovingNode`.
    known: HashMap<String, Arc<Value>>,
    zone_states: HashMap<String, ZoneState>,
    tainters: HashMap<String, Tainter>,
    /// Nodes whose pods could not all be marked not ready.
    retry_pods: HashSet<String>,
    evictions: eviction::State,
}

#[derive(Default)]
pub struct NodeLifecycleController {
    state: Mutex<State>,
}

impl NodeLifecycleController {
    /// The state of the current leadership term: a new term (new informers) starts afresh, as
    /// a newly started upstream controller does.
    fn lock(&self, ctx: &Ctx) -> MutexGuard<'_, State> {
        let mut st = self.state.lock().expect("node lifecycle state lock");
        let term = Arc::downgrade(&ctx.informers);
        if !Weak::ptr_eq(&st.term, &term) {
            *st = State { term, ..State::default() };
        }
        st
    }

    /// The NoSchedule pass for one Node.
    async fn sync_node(&self, ctx: &Ctx, name: &str) -> Result<Action, ApiError> {
        let Some(node) = ctx.informers.get(&nodes::RESOURCE).get_key(name) else { return Ok(Action::Done) };
        let wanted = wanted_no_schedule(&node);
        let have: BTreeSet<&str> = taints(&node)
            .iter()
            .filter(|t| s(t, "effect") == NO_SCHEDULE && MANAGED_NO_SCHEDULE.contains(&s(t, "key")))
            .map(|t| s(t, "key"))
            .collect();
        let add: Vec<(&str, &str)> = wanted.iter().filter(|k| !have.contains(*k)).map(|k| (*k, NO_SCHEDULE)).collect();
        let remove: Vec<(&str, &str)> =
            have.iter().filter(|k| !wanted.contains(*k)).map(|k| (*k, NO_SCHEDULE)).collect();
        if !add.is_empty() || !remove.is_empty() {
            swap_taints(ctx, name, &add, &remove).await?;
        }
        Ok(Action::Done)
    }

    async fn run_background(&self, ctx: &Ctx, queue: &WorkQueue) {
        let (node_inf, pod_inf, lease_inf) = (
            ctx.informers.get(&nodes::RESOURCE),
            ctx.informers.get(&pods::RESOURCE),
            ctx.informers.get(&leases::RESOURCE),
        );
        node_inf.synced().await;
        pod_inf.synced().await;
        lease_inf.synced().await;
        // Pods already on tainted Nodes: their evictions are (re)scheduled from the taints.
        for node in node_inf.list("", |n| !no_execute_taints(n).is_empty()) {
            for key in eviction::pods_on(ctx, &key_of(&node)) {
                queue.add(key);
            }
        }
        let mut monitor = tokio::time::interval(ctx.settings.node_monitor_period);
        monitor.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut tainting = tokio::time::interval(TAINT_PASS_PERIOD);
        tainting.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = monitor.tick() => self.monitor(ctx).await,
                _ = tainting.tick() => self.no_execute_pass(ctx).await,
                () = ctx.cancel.cancelled() => return,
            }
        }
    }

    /// One health pass over every Node.
    async fn monitor(&self, ctx: &Ctx) {
        let nodes = ctx.informers.get(&nodes::RESOURCE).list("", |_| true);
        let (added, deleted) = {
            let mut st = self.lock(ctx);
            let names: HashSet<String> = nodes.iter().map(|n| key_of(n)).collect();
            let added: Vec<Arc<Value>> = nodes.iter().filter(|n| !st.known.contains_key(&key_of(n))).cloned().collect();
            let deleted: Vec<Arc<Value>> =
                st.known.iter().filter(|(k, _)| !names.contains(*k)).map(|(_, v)| v.clone()).collect();
            for n in &nodes {
                let zone = zone_key(n);
                st.tainters.entry(zone.clone()).or_insert_with(Tainter::new);
                st.zone_states.entry(zone).or_insert(ZoneState::Initial);
                st.known.insert(key_of(n), n.clone());
            }
            for d in &deleted {
                let name = key_of(d);
                st.known.remove(&name);
                st.health.remove(&name);
                st.retry_pods.remove(&name);
                st.tainters.values_mut().for_each(|t| t.remove(&name));
            }
            st.evictions.forget_taints(&nodes);
            (added, deleted)
        };
        for n in &added {
            let name = key_of(n);
            info!(node = %name, "observed a new node");
            let message = format!("Node {name} event: Registered Node {name} in Controller");
            ctx.events.record(n, "Node", "v1", "Normal", "RegisteredNode", &message).await;
        }
        for n in &deleted {
            let name = key_of(n);
            info!(node = %name, "observed a node deletion");
            let message = format!("Node {name} event: Removing Node {name} from Controller");
            ctx.events.record(n, "Node", "v1", "Normal", "RemovingNode", &message).await;
        }
        let mut zones: HashMap<String, Vec<bool>> = HashMap::new();
        for chunk in nodes.chunks(PARALLEL_NODES) {
            let checked = futures::future::join_all(chunk.iter().map(|n| self.check_node(ctx, n))).await;
            for (zone, ready) in checked.into_iter().flatten() {
                zones.entry(zone).or_default().push(ready);
            }
        }
        self.handle_disruption(ctx, zones, &nodes).await;
    }

    /// Updates one Node's health; returns its zone and whether it is ready, unless the Node does
    /// not count for its zone's health.
    async fn check_node(&self, ctx: &Ctx, node: &Arc<Value>) -> Option<(String, bool)> {
        let name = key_of(node);
        let (observed, current) = match self.update_health(ctx, node).await {
            Ok(r) => r,
            Err(error) => {
                warn!(node = %name, %error, "node health not updated; no pods will be evicted");
                return None;
            }
        };
        let counted =
            label(node, EXCLUDE_DISRUPTION).is_none().then(|| (zone_key(node), current.as_deref() == Some("True")));
        let Some(current) = current else { return counted };
        self.taint_for_readiness(ctx, node, &observed).await;
        let retry = self.lock(ctx).retry_pods.contains(&name);
        let became_not_ready = current != "True" && observed == "True";
        if became_not_ready {
            let message = format!("Node {name} status is now: NodeNotReady");
            ctx.events.record(node, "Node", "v1", "Normal", "NodeNotReady", &message).await;
        }
        if (became_not_ready || (retry && observed != "True"))
            && let Err(error) = eviction::mark_pods_not_ready(ctx, &name).await
        {
            warn!(node = %name, %error, "pods not all marked not ready; will retry");
            self.lock(ctx).retry_pods.insert(name);
            return counted;
        }
        self.lock(ctx).retry_pods.remove(&name);
        counted
    }

    /// Records heartbeats and marks a silent Node's conditions Unknown. Returns the Ready status
    /// seen in the cache (Unknown when missing) and the one now stored (`None` when missing).
    async fn update_health(&self, ctx: &Ctx, node: &Arc<Value>) -> Result<(String, Option<String>), ApiError> {
        let name = key_of(node);
        let mut node = (**node).clone();
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self.try_update_health(ctx, &name, &node).await {
                Err(e) if e.code == 409 && attempts < 5 => node = ctx.client.get(&nodes::RESOURCE, "", &name).await?,
                r => return r,
            }
        }
    }

    async fn try_update_health(
        &self,
        ctx: &Ctx,
        name: &str,
        node: &Value,
    ) -> Result<(String, Option<String>), ApiError> {
        let ready = condition(node, "Ready");
        let observed = ready.map_or("Unknown", |c| s(c, "status")).to_string();
        let heartbeat = ready.map(|c| s(c, "lastHeartbeatTime").to_string());
        let lease = ctx.informers.get(&leases::RESOURCE).get(LEASE_NAMESPACE, name);
        let renewed =
            lease.as_ref().and_then(|l| l.pointer("/spec/renewTime")).and_then(Value::as_str).and_then(parse_time);
        let now = Utc::now();
        let grace = chrono::Duration::from_std(ctx.settings.node_monitor_grace_period).unwrap_or(chrono::Duration::MAX);
        let expired = {
            let mut st = self.lock(ctx);
            let h = st.health.entry(name.to_string()).or_insert_with(|| {
                // Never reported: timed from creation, so an old silent Node is caught at once.
                let created = node.pointer("/metadata/creationTimestamp").and_then(Value::as_str).and_then(parse_time);
                let probe = if ready.is_none() { created.unwrap_or(now) } else { now };
                Health { probe, heartbeat: heartbeat.clone(), lease_renew: None }
            });
            if h.heartbeat != heartbeat {
                h.heartbeat = heartbeat;
                h.probe = now;
            }
            if let Some(r) = renewed
                && h.lease_renew.is_none_or(|old| old < r)
            {
                h.lease_renew = Some(r);
                h.probe = now;
            }
            now > h.probe + grace
        };
        let stored = ready.map(|c| s(c, "status").to_string());
        if !expired {
            return Ok((observed, stored));
        }
        let mut new = node.clone();
        let ts = now_rfc3339();
        let created = node.pointer("/metadata/creationTimestamp").cloned().unwrap_or(Value::Null);
        let Some(status) = new.as_object_mut().and_then(|m| {
            m.entry("status").or_insert_with(|| json!({}));
            m.get_mut("status").and_then(Value::as_object_mut)
        }) else {
            return Err(ApiError::internal(format!("node {name} status is not an object")));
        };
        let conds = status.entry("conditions").or_insert_with(|| json!([]));
        if !conds.is_array() {
            *conds = json!([]);
        }
        let conds = conds.as_array_mut().expect("an array");
        for kind in SILENT_CONDITIONS {
            match conds.iter_mut().find(|c| s(c, "type") == kind) {
                Some(c) if s(c, "status") != "Unknown" => {
                    c["status"] = json!("Unknown");
                    c["reason"] = json!("NodeStatusUnknown");
                    c["message"] = json!("Kubelet stopped posting node status.");
                    c["lastTransitionTime"] = json!(ts);
                }
                Some(_) => {}
                None => conds.push(json!({
                    "type": kind, "status": "Unknown", "reason": "NodeStatusNeverUpdated",
                    "message": "Kubelet never posted node status.",
                    "lastHeartbeatTime": created, "lastTransitionTime": ts,
                })),
            }
        }
        if condition(&new, "Ready") == ready {
            return Ok((observed, stored));
        }
        ctx.client.update_status(&nodes::RESOURCE, "", new).await?;
        info!(node = %name, was = %observed, "node stopped posting status; conditions set to Unknown");
        Ok((observed, Some("Unknown".to_string())))
    }

    /// Queues a not-ready or unreachable Node for its NoExecute taint (swapping at once when it
    /// has the other one), or removes both from a ready Node.
    async fn taint_for_readiness(&self, ctx: &Ctx, node: &Value, observed: &str) {
        let name = key_of(node);
        let (want, other) = match observed {
            "False" => (TAINT_NOT_READY, TAINT_UNREACHABLE),
            "Unknown" => (TAINT_UNREACHABLE, TAINT_NOT_READY),
            "True" => {
                self.mark_reachable(ctx, node).await;
                return;
            }
            _ => return,
        };
        if has_taint(node, other, NO_EXECUTE) {
            if let Err(error) = swap_taints(ctx, &name, &[(want, NO_EXECUTE)], &[(other, NO_EXECUTE)]).await {
                warn!(node = %name, %error, "NoExecute taint not swapped; will retry");
            }
            return;
        }
        let mut st = self.lock(ctx);
        let tainter = st.tainters.entry(zone_key(node)).or_insert_with(Tainter::new);
        if !has_taint(node, want, NO_EXECUTE) {
            tainter.remove(&name);
        }
        tainter.add(&name);
    }

    /// Removes the not-ready and unreachable NoExecute taints and forgets the queued tainting.
    async fn mark_reachable(&self, ctx: &Ctx, node: &Value) {
        let name = key_of(node);
        if has_taint(node, TAINT_UNREACHABLE, NO_EXECUTE) || has_taint(node, TAINT_NOT_READY, NO_EXECUTE) {
            let remove = [(TAINT_UNREACHABLE, NO_EXECUTE), (TAINT_NOT_READY, NO_EXECUTE)];
            if let Err(error) = swap_taints(ctx, &name, &[], &remove).await {
                warn!(node = %name, %error, "NoExecute taints not removed; will retry");
                return;
            }
            info!(node = %name, "node is reachable again; NoExecute taints removed");
        }
        if let Some(t) = self.lock(ctx).tainters.get_mut(&zone_key(node)) {
            t.remove(&name);
        }
    }

    /// Adds the queued NoExecute taints, as fast as each zone's limiter allows.
    async fn no_execute_pass(&self, ctx: &Ctx) {
        let work: Vec<(String, String)> = {
            let mut st = self.lock(ctx);
            let mut work = Vec::new();
            for (zone, t) in st.tainters.iter_mut() {
                while !t.queue.is_empty() && t.limiter.try_accept() {
                    if let Some(name) = t.queue.pop_front() {
                        work.push((zone.clone(), name));
                    }
                }
            }
            work
        };
        for (zone, name) in work {
            let Some(node) = ctx.informers.get(&nodes::RESOURCE).get_key(&name) else { continue };
            let result = match ready_status(&node) {
                None => Err(ApiError::internal("no Ready condition yet")),
                Some("False") => {
                    swap_taints(ctx, &name, &[(TAINT_NOT_READY, NO_EXECUTE)], &[(TAINT_UNREACHABLE, NO_EXECUTE)]).await
                }
                Some("Unknown") => {
                    swap_taints(ctx, &name, &[(TAINT_UNREACHABLE, NO_EXECUTE)], &[(TAINT_NOT_READY, NO_EXECUTE)]).await
                }
                Some(_) => Ok(()),
            };
            match result {
                Ok(()) => debug!(node = %name, "NoExecute tainting done"),
                Err(error) => {
                    debug!(node = %name, %error, "NoExecute tainting retried");
                    let mut st = self.lock(ctx);
                    if let Some(t) = st.tainters.get_mut(&zone)
                        && t.set.contains(&name)
                    {
                        t.queue.push_back(name);
                    }
                }
            }
        }
    }

    /// Adjusts each zone's tainting rate to its health; stops everything when no Node anywhere is
    /// ready.
    async fn handle_disruption(&self, ctx: &Ctx, zones: HashMap<String, Vec<bool>>, nodes: &[Arc<Value>]) {
        let new_states: HashMap<&String, ZoneState> = zones.iter().map(|(z, r)| (z, zone_state(r))).collect();
        let all_are_full = new_states.values().all(|s| *s == ZoneState::FullDisruption);
        let entering = {
            let mut st = self.lock(ctx);
            for z in zones.keys() {
                st.zone_states.entry(z.clone()).or_insert(ZoneState::Initial);
            }
            st.zone_states.retain(|z, _| zones.contains_key(z));
            let all_were_full = st.zone_states.values().all(|s| *s == ZoneState::FullDisruption);
            if all_are_full && all_were_full {
                return;
            }
            let st = &mut *st;
            if all_are_full {
                info!("no node is ready: entering master disruption mode, tainting and eviction stop");
                for (z, state) in st.zone_states.iter_mut() {
                    *state = ZoneState::FullDisruption;
                    st.tainters.entry(z.clone()).or_insert_with(Tainter::new).limiter = TokenBucket::new(0.0);
                }
                true
            } else {
                if all_were_full {
                    info!("some nodes are ready: leaving master disruption mode");
                    let now = Utc::now();
                    st.health.values_mut().for_each(|h| h.probe = now);
                }
                for (z, state) in st.zone_states.iter_mut() {
                    let new = new_states.get(z).copied().unwrap_or(ZoneState::Normal);
                    if *state == new && !all_were_full {
                        continue;
                    }
                    info!(zone = %z.replace('\0', ""), from = ?*state, to = ?new, "zone state changed");
                    if let Some(qps) = zone_qps(new, zones.get(z).map_or(0, Vec::len)) {
                        st.tainters.entry(z.clone()).or_insert_with(Tainter::new).limiter = TokenBucket::new(qps);
                    }
                    *state = new;
                }
                false
            }
        };
        if entering {
            for n in nodes {
                self.mark_reachable(ctx, n).await;
            }
        }
    }
}

impl Controller for NodeLifecycleController {
    fn name(&self) -> &'static str {
        NAME
    }

    fn watches(&self) -> Vec<Watch> {
        vec![
            Watch::mapped(&nodes::RESOURCE, |ctx, change| {
                let name = key_of(change.object());
                let before = change.old.as_deref().map(no_execute_taints).unwrap_or_default();
                let after = change.new.as_deref().map(no_execute_taints).unwrap_or_default();
                let mut keys = if before == after { Vec::new() } else { eviction::pods_on(ctx, &name) };
                keys.insert(0, name);
                keys
            }),
            Watch::mapped(&pods::RESOURCE, eviction::pod_keys),
        ]
    }

    /// Keys are Node names (the NoSchedule pass) or `namespace/name` of pods (eviction).
    fn reconcile<'a>(&'a self, ctx: &'a Ctx, key: &'a str) -> BoxFuture<'a, Result<Action, ApiError>> {
        Box::pin(async move {
            if key.contains('/') { eviction::sync_pod(self, ctx, key).await } else { self.sync_node(ctx, key).await }
        })
    }

    fn workers(&self) -> usize {
        4
    }

    fn background<'a>(&'a self, ctx: &'a Ctx, queue: &'a WorkQueue) -> BoxFuture<'a, ()> {
        Box::pin(self.run_background(ctx, queue))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_and_cordon_map_to_no_schedule_taints() {
        let node = json!({
            "spec": {"unschedulable": true},
            "status": {"conditions": [
                {"type": "Ready", "status": "Unknown"},
                {"type": "MemoryPressure", "status": "True"},
                {"type": "DiskPressure", "status": "False"},
                {"type": "NetworkUnavailable", "status": "True"},
            ]}
        });
        let want: Vec<&str> = wanted_no_schedule(&node).into_iter().collect();
        assert_eq!(
            want,
            vec![TAINT_MEMORY_PRESSURE, TAINT_NETWORK_UNAVAILABLE, TAINT_UNREACHABLE, TAINT_UNSCHEDULABLE]
        );
        let ready = json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}});
        assert_eq!(wanted_no_schedule(&ready).into_iter().collect::<Vec<_>>(), vec![TAINT_NOT_READY]);
        assert!(wanted_no_schedule(&json!({})).is_empty());
    }

    #[test]
    fn zone_states_follow_upstream_thresholds() {
        assert_eq!(zone_state(&[false]), ZoneState::FullDisruption);
        assert_eq!(zone_state(&[true, false, false]), ZoneState::Normal);
        assert_eq!(zone_state(&[true, false, false, false]), ZoneState::PartialDisruption);
        assert_eq!(zone_state(&[true, true, false, false, false, true, true]), ZoneState::Normal);
        assert_eq!(zone_state(&[]), ZoneState::Normal);
        assert_eq!(zone_qps(ZoneState::PartialDisruption, 10), Some(0.0));
        assert_eq!(zone_qps(ZoneState::PartialDisruption, 51), Some(SECONDARY_EVICTION_QPS));
        assert_eq!(zone_qps(ZoneState::FullDisruption, 3), Some(EVICTION_QPS));
    }

    #[test]
    fn token_bucket_admits_one_then_waits() {
        let mut b = TokenBucket::new(0.1);
        assert!(b.try_accept());
        assert!(!b.try_accept());
        let mut never = TokenBucket::new(0.0);
        assert!(!never.try_accept());
    }

    #[test]
    fn tainter_queues_a_node_once_until_removed() {
        let mut t = Tainter::new();
        t.add("a");
        t.add("a");
        assert_eq!(t.queue.len(), 1);
        t.queue.pop_front();
        t.add("a");
        assert!(t.queue.is_empty(), "processed nodes stay in the set");
        t.remove("a");
        t.add("a");
        assert_eq!(t.queue.len(), 1);
    }

    #[test]
    fn zone_keys_from_topology_labels() {
        assert_eq!(zone_key(&json!({"metadata": {}})), "");
        let n = json!({"metadata": {"labels": {"topology.kubernetes.io/region": "r", "failure-domain.beta.kubernetes.io/zone": "z"}}});
        assert_eq!(zone_key(&n), "r:\x00:z");
    }
}
