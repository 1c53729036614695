//! The scheduler's view of the cluster: one [`NodeInfo`] per node with the pods bound (or
//! assumed) to it and their summed requests, kept up to date incrementally from informer events
//! so a scheduling decision never re-reads JSON or rebuilds the whole view.
//!
//! Pods are keyed by `namespace/name`. Terminal pods (`Succeeded`/`Failed`) hold no resources
//! and are dropped, as kube-scheduler's pod informer filters them out. A pod whose node is not
//! known yet is parked and attached when the node arrives; removing a node parks its pods.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use serde_json::Value;

use super::pod_info::PodInfo;
use super::resources::{PodRequests, Resources, pod_requests};
use super::selectors::{LabelSelector, Labels, labels_from};
use super::taint_toleration::Taint;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SnapshotError {
    #[error("object has no metadata.name")]
    MissingName,
    #[error("node {0:?} is not in the snapshot")]
    UnknownNode(String),
}

/// What the scheduler keeps of a pod bound to a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodRecord {
    /// `namespace/name`.
    pub key: String,
    pub namespace: String,
    pub labels: Labels,
    pub requests: PodRequests,
    pub priority: i32,
    /// `status.startTime` (RFC 3339); preemption spares older pods first.
    pub start_time: Option<String>,
    /// `metadata.deletionTimestamp` is set.
    pub terminating: bool,
    /// Terminating because the scheduler preempted it (`DisruptionTarget` by `PreemptionByScheduler`).
    pub preempted: bool,
    /// Placed by [`Snapshot::assume`] and not yet seen bound.
    pub assumed: bool,
}

impl PodRecord {
    /// Builds from a Pod object.
    pub fn from_json(pod: &Value) -> Result<Self, SnapshotError> {
        let meta = pod.get("metadata");
        let name = meta.and_then(|m| m.get("name")).and_then(Value::as_str).ok_or(SnapshotError::MissingName)?;
        let namespace = meta.and_then(|m| m.get("namespace")).and_then(Value::as_str).unwrap_or("default");
        let spec = pod.get("spec").unwrap_or(&Value::Null);
        let terminating = meta.and_then(|m| m.get("deletionTimestamp")).is_some_and(|v| !v.is_null());
        let preempted = terminating
            && pod.pointer("/status/conditions").and_then(Value::as_array).into_iter().flatten().any(|c| {
                c.get("type").and_then(Value::as_str) == Some("DisruptionTarget")
                    && c.get("status").and_then(Value::as_str) == Some("True")
                    && c.get("reason").and_then(Value::as_str) == Some("PreemptionByScheduler")
            });
        Ok(PodRecord {
            key: format!("{namespace}/{name}"),
            namespace: namespace.to_string(),
            labels: labels_from(meta.and_then(|m| m.get("labels"))),
            requests: pod_requests(spec),
            priority: spec.get("priority").and_then(Value::as_i64).and_then(|p| i32::try_from(p).ok()).unwrap_or(0),
            start_time: pod.pointer("/status/startTime").and_then(Value::as_str).map(str::to_string),
            terminating,
            preempted,
            assumed: false,
        })
    }

    /// The record of a pod the scheduler has just placed (assumed, not yet started).
    pub fn from_pod_info(pod: &PodInfo) -> Self {
        PodRecord {
            key: pod.key.clone(),
            namespace: pod.namespace.clone(),
            labels: pod.labels.clone(),
            requests: pod.requests.clone(),
            priority: pod.priority,
            start_time: None,
            terminating: false,
            preempted: false,
            assumed: true,
        }
    }
}

/// One node as the scheduler sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    pub name: String,
    pub labels: Labels,
    pub taints: Vec<Taint>,
    pub unschedulable: bool,
    /// `status.allocatable`; `pods` is the pod-slot count.
    pub allocatable: Resources,
    /// Sum of the requests of the pods on the node (`pods` unused).
    pub requested: Resources,
    /// Sum of requests with the scoring defaults for containers that request nothing.
    pub non_zero_milli_cpu: i64,
    pub non_zero_memory: i64,
    pub pods: Vec<Arc<PodRecord>>,
    /// Changes on every update of the node or its pods; unique across all nodes.
    pub generation: u64,
    /// Position in [`Snapshot::nodes`] (0 for a node outside a snapshot).
    pub slot: usize,
}

fn next_generation() -> u64 {
    static GENERATION: AtomicU64 = AtomicU64::new(1);
    GENERATION.fetch_add(1, Ordering::Relaxed)
}

impl NodeInfo {
    /// Builds a node with no pods from a Node object.
    pub fn from_json(node: &Value) -> Result<Self, SnapshotError> {
        let name = node.pointer("/metadata/name").and_then(Value::as_str).ok_or(SnapshotError::MissingName)?;
        let mut info = NodeInfo {
            name: name.to_string(),
            labels: Labels::new(),
            taints: Vec::new(),
            unschedulable: false,
            allocatable: Resources::default(),
            requested: Resources::default(),
            non_zero_milli_cpu: 0,
            non_zero_memory: 0,
            pods: Vec::new(),
            generation: 0,
            slot: 0,
        };
        info.set_node(node);
        Ok(info)
    }

    /// Replaces what comes from the Node object, keeping the pods.
    fn set_node(&mut self, node: &Value) {
        self.labels = labels_from(node.pointer("/metadata/labels"));
        self.taints = node
            .pointer("/spec/taints")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(Taint::from_json)
            .collect();
        self.unschedulable = node.pointer("/spec/unschedulable").and_then(Value::as_bool).unwrap_or(false);
        self.allocatable = Resources::from_list(node.pointer("/status/allocatable"));
        self.generation = next_generation();
    }

    pub fn add_pod(&mut self, pod: Arc<PodRecord>) {
        self.requested.add(&pod.requests.requests);
        self.non_zero_milli_cpu += pod.requests.non_zero_milli_cpu;
        self.non_zero_memory += pod.requests.non_zero_memory;
        self.pods.push(pod);
        self.generation = next_generation();
    }

    /// Removes the pod with `key`; O(pods on the node).
    pub fn remove_pod(&mut self, key: &str) -> Option<Arc<PodRecord>> {
        let i = self.pods.iter().position(|p| p.key == key)?;
        let pod = self.pods.swap_remove(i);
        self.requested.sub(&pod.requests.requests);
        self.non_zero_milli_cpu -= pod.requests.non_zero_milli_cpu;
        self.non_zero_memory -= pod.requests.non_zero_memory;
        self.generation = next_generation();
        Some(pod)
    }

    /// Pods in `namespace`, not terminating, whose labels match `selector`.
    pub fn count_matching(&self, namespace: &str, selector: &LabelSelector) -> i64 {
        let n = self
            .pods
            .iter()
            .filter(|p| !p.terminating && p.namespace == namespace && selector.matches(&p.labels))
            .count();
        i64::try_from(n).unwrap_or(i64::MAX)
    }
}

/// Per-node counts of pods matching a (namespace, selector), revalidated by node generation,
/// so topology spreading does not rescan every pod of the cluster for each pod it places.
#[derive(Debug, Default)]
struct MatchCache {
    entries: HashMap<(String, LabelSelector), Vec<(u64, i64)>>,
}

/// Selectors remembered at most; beyond this the cache starts over.
const MATCH_CACHE_ENTRIES: usize = 64;

/// Domain id of a node that lacks the topology key.
pub const NO_DOMAIN: u32 = u32::MAX;

/// The values ("domains") of one topology label key, with each node's domain id by slot, so
/// spreading works on dense arrays instead of every node's label map.
#[derive(Clone, Debug, Default)]
pub struct TopologyIndex {
    /// Domain id of each node by slot, [`NO_DOMAIN`] when it lacks the key.
    pub domain_of: Vec<u32>,
    /// Domain id → label value.
    pub domains: Vec<String>,
    ids: HashMap<String, u32>,
    /// Node generation each `domain_of` entry was computed at.
    generations: Vec<u64>,
}

impl TopologyIndex {
    /// The domain id of `node`'s value: `None` if it lacks the key, `Some(None)` if the value
    /// is not indexed. Uses the dense array when `node` is the indexed version of its slot.
    pub fn domain(&self, node: &NodeInfo, key: &str) -> Option<Option<u32>> {
        if self.generations.get(node.slot) == Some(&node.generation) {
            let id = self.domain_of[node.slot];
            return (id != NO_DOMAIN).then_some(Some(id));
        }
        node.labels.get(key).map(|v| self.ids.get(v).copied())
    }

    fn refresh(&mut self, key: &str, nodes: &[NodeInfo]) {
        if self.domains.len() > 2 * nodes.len() + 16 {
            *self = TopologyIndex::default();
        }
        self.domain_of.resize(nodes.len(), NO_DOMAIN);
        self.generations.resize(nodes.len(), 0);
        for (slot, node) in nodes.iter().enumerate() {
            if self.generations[slot] == node.generation {
                continue;
            }
            self.generations[slot] = node.generation;
            self.domain_of[slot] = match node.labels.get(key) {
                None => NO_DOMAIN,
                Some(value) => match self.ids.get(value) {
                    Some(&id) => id,
                    None => {
                        let id = u32::try_from(self.domains.len()).unwrap_or(NO_DOMAIN - 1);
                        self.ids.insert(value.clone(), id);
                        self.domains.push(value.clone());
                        id
                    }
                },
            };
        }
    }
}

/// All nodes, indexable by position (for the rotating search) and by name.
#[derive(Debug, Default)]
pub struct Snapshot {
    nodes: Vec<NodeInfo>,
    index: HashMap<String, usize>,
    /// Pod key → node name, for pods attached to a node or parked.
    pod_nodes: HashMap<String, String>,
    /// Pods bound to nodes the snapshot does not have (yet).
    parked: HashMap<String, Vec<Arc<PodRecord>>>,
    match_cache: Mutex<MatchCache>,
    topology_cache: Mutex<HashMap<String, Arc<TopologyIndex>>>,
}

impl Clone for Snapshot {
    fn clone(&self) -> Self {
        Snapshot {
            nodes: self.nodes.clone(),
            index: self.index.clone(),
            pod_nodes: self.pod_nodes.clone(),
            parked: self.parked.clone(),
            match_cache: Mutex::default(),
            topology_cache: Mutex::default(),
        }
    }
}

impl Snapshot {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn nodes(&self) -> &[NodeInfo] {
        &self.nodes
    }

    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.index.get(name).map(|&i| &self.nodes[i])
    }

    pub(super) fn node_index(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// The node a pod is accounted on, if any.
    pub fn pod_node(&self, key: &str) -> Option<&str> {
        self.pod_nodes.get(key).map(String::as_str)
    }

    /// For each node (by index), the number of its pods in `namespace` matching `selector`
    /// ([`NodeInfo::count_matching`]); only nodes changed since the last call are recounted.
    pub fn matching_counts(&self, namespace: &str, selector: &LabelSelector) -> Vec<i64> {
        let mut cache = self.match_cache.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (namespace.to_string(), selector.clone());
        if !cache.entries.contains_key(&key) && cache.entries.len() >= MATCH_CACHE_ENTRIES {
            cache.entries.clear();
        }
        let slots = cache.entries.entry(key).or_default();
        slots.resize(self.nodes.len(), (0, 0));
        self.nodes
            .iter()
            .zip(slots.iter_mut())
            .map(|(node, slot)| {
                if slot.0 != node.generation {
                    *slot = (node.generation, node.count_matching(namespace, selector));
                }
                slot.1
            })
            .collect()
    }

    /// The domains of topology key `key` and each node's domain, refreshed for changed nodes.
    pub fn topology_index(&self, key: &str) -> Arc<TopologyIndex> {
        let mut cache = self.topology_cache.lock().unwrap_or_else(PoisonError::into_inner);
        if !cache.contains_key(key) && cache.len() >= MATCH_CACHE_ENTRIES {
            cache.clear();
        }
        let index = cache.entry(key.to_string()).or_default();
        Arc::make_mut(index).refresh(key, &self.nodes);
        Arc::clone(index)
    }

    /// Adds a node or updates its labels, taints, schedulability and allocatable.
    pub fn upsert_node(&mut self, node: &Value) -> Result<(), SnapshotError> {
        let name = node.pointer("/metadata/name").and_then(Value::as_str).ok_or(SnapshotError::MissingName)?;
        if let Some(&i) = self.index.get(name) {
            self.nodes[i].set_node(node);
            return Ok(());
        }
        let mut info = NodeInfo::from_json(node)?;
        for pod in self.parked.remove(name).unwrap_or_default() {
            info.add_pod(pod);
        }
        info.slot = self.nodes.len();
        self.index.insert(info.name.clone(), self.nodes.len());
        self.nodes.push(info);
        Ok(())
    }

    /// Removes a node; its pods are parked until it comes back or they are deleted.
    pub fn remove_node(&mut self, name: &str) {
        let Some(i) = self.index.remove(name) else { return };
        let removed = self.nodes.swap_remove(i);
        if let Some(moved) = self.nodes.get_mut(i) {
            moved.slot = i;
            moved.generation = next_generation();
            self.index.insert(moved.name.clone(), i);
        }
        if !removed.pods.is_empty() {
            self.parked.insert(removed.name, removed.pods);
        }
    }

    /// Applies a pod add/update event: accounts it on `spec.nodeName`, moves it if that
    /// changed, and drops it when it is terminal or unbound (an unbound update leaves an
    /// assumed placement alone: the binding may still be in flight).
    pub fn upsert_pod(&mut self, pod: &Value) -> Result<(), SnapshotError> {
        let record = PodRecord::from_json(pod)?;
        let node = pod.pointer("/spec/nodeName").and_then(Value::as_str).unwrap_or_default();
        let phase = pod.pointer("/status/phase").and_then(Value::as_str).unwrap_or_default();
        let terminal = phase == "Succeeded" || phase == "Failed";
        if node.is_empty() && !terminal && self.is_assumed(&record.key) {
            return Ok(());
        }
        self.remove_pod(&record.key);
        if node.is_empty() || terminal {
            return Ok(());
        }
        self.attach(node, Arc::new(record));
        Ok(())
    }

    /// True when the pod is accounted through [`Snapshot::assume`] and not yet seen bound.
    pub fn is_assumed(&self, key: &str) -> bool {
        let Some(node) = self.pod_nodes.get(key) else { return false };
        let pods = match self.index.get(node) {
            Some(&i) => &self.nodes[i].pods,
            None => match self.parked.get(node) {
                Some(pods) => pods,
                None => return false,
            },
        };
        pods.iter().any(|p| p.key == key && p.assumed)
    }

    /// Applies a pod delete event (or forgets an assumed pod whose binding failed).
    pub fn remove_pod(&mut self, key: &str) -> Option<Arc<PodRecord>> {
        let node = self.pod_nodes.remove(key)?;
        if let Some(&i) = self.index.get(&node) {
            return self.nodes[i].remove_pod(key);
        }
        let parked = self.parked.get_mut(&node)?;
        let i = parked.iter().position(|p| p.key == key)?;
        let pod = parked.swap_remove(i);
        if parked.is_empty() {
            self.parked.remove(&node);
        }
        Some(pod)
    }

    /// Accounts a pod the scheduler just placed on `node`, before the binding is confirmed, so
    /// the next decision sees its requests. The later informer event for the bound pod
    /// replaces it ([`Snapshot::upsert_pod`]); on a failed binding call [`Snapshot::remove_pod`].
    pub fn assume(&mut self, pod: &PodInfo, node: &str) -> Result<(), SnapshotError> {
        if !self.index.contains_key(node) {
            return Err(SnapshotError::UnknownNode(node.to_string()));
        }
        self.remove_pod(&pod.key);
        self.attach(node, Arc::new(PodRecord::from_pod_info(pod)));
        Ok(())
    }

    fn attach(&mut self, node: &str, record: Arc<PodRecord>) {
        self.pod_nodes.insert(record.key.clone(), node.to_string());
        match self.index.get(node) {
            Some(&i) => self.nodes[i].add_pod(record),
            None => self.parked.entry(node.to_string()).or_default().push(record),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str) -> Value {
        json!({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
               "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}}})
    }

    fn pod(name: &str, node: &str, cpu: &str) -> Value {
        json!({"metadata": {"name": name, "namespace": "ns"},
               "spec": {"nodeName": node, "containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}]},
               "status": {"phase": "Running"}})
    }

    #[test]
    fn pods_are_accounted_moved_and_dropped_incrementally() {
        let mut s = Snapshot::new();
        s.upsert_node(&node("a")).expect("node a");
        s.upsert_node(&node("b")).expect("node b");
        s.upsert_pod(&pod("p1", "a", "500m")).expect("p1");
        s.upsert_pod(&pod("p2", "a", "250m")).expect("p2");
        let a = s.node("a").expect("a");
        assert_eq!((a.requested.milli_cpu, a.pods.len()), (750, 2));
        assert_eq!(a.non_zero_memory, 2 * super::super::resources::DEFAULT_MEMORY_REQUEST);

        s.upsert_pod(&pod("p2", "b", "250m")).expect("p2 moved");
        assert_eq!(s.node("a").expect("a").requested.milli_cpu, 500);
        assert_eq!(s.node("b").expect("b").requested.milli_cpu, 250);

        let mut done = pod("p1", "a", "500m");
        done["status"]["phase"] = json!("Succeeded");
        s.upsert_pod(&done).expect("p1 done");
        assert_eq!(s.node("a").expect("a").requested.milli_cpu, 0);
        assert!(s.remove_pod("ns/p2").is_some());
        assert_eq!(s.node("b").expect("b").requested, Resources::default());
        assert!(s.remove_pod("ns/p2").is_none());
    }

    #[test]
    fn pods_of_unknown_nodes_are_parked_until_the_node_arrives() {
        let mut s = Snapshot::new();
        s.upsert_pod(&pod("p", "late", "1")).expect("p");
        assert!(s.is_empty());
        s.upsert_node(&node("late")).expect("late");
        assert_eq!(s.node("late").expect("late").requested.milli_cpu, 1000);
        s.remove_node("late");
        assert_eq!(s.pod_node("ns/p"), Some("late"));
        s.upsert_node(&node("late")).expect("late again");
        assert_eq!(s.node("late").expect("late").pods.len(), 1);
    }

    #[test]
    fn node_updates_keep_pods_and_removal_fixes_the_index() {
        let mut s = Snapshot::new();
        for n in ["a", "b", "c"] {
            s.upsert_node(&node(n)).expect("node");
        }
        s.upsert_pod(&pod("p", "c", "1")).expect("p");
        let mut c = node("c");
        c["spec"] = json!({"unschedulable": true});
        s.upsert_node(&c).expect("update c");
        assert!(s.node("c").expect("c").unschedulable);
        assert_eq!(s.node("c").expect("c").pods.len(), 1);
        s.remove_node("a");
        assert_eq!(s.len(), 2);
        assert_eq!(s.node("c").expect("c").name, "c");
        assert_eq!(s.node("b").expect("b").name, "b");
        assert!(s.node("a").is_none());
    }

    #[test]
    fn assume_requires_a_known_node() {
        let mut s = Snapshot::new();
        s.upsert_node(&node("a")).expect("a");
        let p = PodInfo::from_json(&pod("x", "", "2")).expect("pod");
        assert_eq!(s.assume(&p, "zz"), Err(SnapshotError::UnknownNode("zz".into())));
        s.assume(&p, "a").expect("assume");
        assert_eq!(s.node("a").expect("a").requested.milli_cpu, 2000);
        assert!(s.is_assumed("ns/x"));
        // An update of the still-unbound pod (binding in flight) keeps the assumed placement.
        s.upsert_pod(&pod("x", "", "2")).expect("unbound update");
        assert_eq!(s.node("a").expect("a").requested.milli_cpu, 2000);
        // The informer's bound-pod event replaces the assumed record instead of doubling it.
        s.upsert_pod(&pod("x", "a", "2")).expect("bound");
        assert_eq!(s.node("a").expect("a").requested.milli_cpu, 2000);
        assert!(!s.is_assumed("ns/x"));
        assert!(s.remove_pod("ns/x").is_some());
        assert_eq!(s.node("a").expect("a").requested.milli_cpu, 0);
    }
}
