//! [`PodInfo`]: everything the plugins need from a pod to schedule, parsed from its JSON once
//! per scheduling attempt so the per-node loop never touches JSON.

use serde_json::Value;

use super::ScheduleError;
use super::pod_topology_spread::SpreadConstraint;
use super::resources::{PodRequests, pod_requests};
use super::selectors::{LabelSelector, Labels, NodeSelectorTerm, labels_from};
use super::taint_toleration::{Taint, Toleration, tolerated};

/// A pod to schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodInfo {
    /// `namespace/name`, the key the snapshot uses.
    pub key: String,
    pub namespace: String,
    pub name: String,
    pub labels: Labels,
    /// `spec.nodeName` (normally empty for a pod the scheduler sees).
    pub node_name: String,
    /// `status.nominatedNodeName`, set after a preemption: that node is tried first.
    pub nominated_node_name: String,
    pub priority: i32,
    /// `spec.preemptionPolicy: Never`.
    pub preemption_never: bool,
    pub requests: PodRequests,
    pub tolerations: Vec<Toleration>,
    /// The pod tolerates `node.kubernetes.io/unschedulable:NoSchedule`.
    pub tolerates_unschedulable: bool,
    /// `spec.nodeSelector`.
    pub node_selector: Vec<(String, String)>,
    /// `requiredDuringSchedulingIgnoredDuringExecution` terms (ORed); `None` when absent.
    pub required_terms: Option<Vec<NodeSelectorTerm>>,
    /// `preferredDuringSchedulingIgnoredDuringExecution` (weight, term), zero weights dropped.
    pub preferred_terms: Vec<(i64, NodeSelectorTerm)>,
    /// `DoNotSchedule` topology spread constraints.
    pub hard_spread: Vec<SpreadConstraint>,
    /// `ScheduleAnyway` topology spread constraints.
    pub soft_spread: Vec<SpreadConstraint>,
    /// Selector for Kubernetes' default soft spreading (hostname maxSkew 3, zone maxSkew 5),
    /// used when the pod has no spread constraints of its own. The caller builds it from the
    /// Services/ReplicaSets/StatefulSets selecting the pod; `None` disables default spreading.
    pub default_spread_selector: Option<LabelSelector>,
}

impl PodInfo {
    /// Parses a Pod object. Invalid spread-constraint selectors are an error (the scheduler
    /// cannot evaluate the pod); invalid node-affinity terms simply match no node.
    pub fn from_json(pod: &Value) -> Result<Self, ScheduleError> {
        let meta = pod.get("metadata");
        let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_string();
        let name = text(meta.and_then(|m| m.get("name")));
        let namespace = meta.and_then(|m| m.get("namespace")).and_then(Value::as_str).unwrap_or("default").to_string();
        let key = format!("{namespace}/{name}");
        let spec = pod.get("spec").unwrap_or(&Value::Null);
        let labels = labels_from(meta.and_then(|m| m.get("labels")));

        let tolerations: Vec<Toleration> = spec
            .get("tolerations")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(Toleration::from_json)
            .collect();
        let unschedulable_taint = Taint {
            key: "node.kubernetes.io/unschedulable".to_string(),
            value: String::new(),
            effect: "NoSchedule".to_string(),
        };
        let node_selector = spec
            .get("nodeSelector")
            .and_then(Value::as_object)
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect())
            .unwrap_or_default();
        let node_affinity = spec.pointer("/affinity/nodeAffinity");
        let required_terms = node_affinity
            .and_then(|a| a.get("requiredDuringSchedulingIgnoredDuringExecution"))
            .filter(|r| !r.is_null())
            .map(|r| {
                r.get("nodeSelectorTerms")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .map(NodeSelectorTerm::from_json)
                    .collect()
            });
        let preferred_terms = node_affinity
            .and_then(|a| a.get("preferredDuringSchedulingIgnoredDuringExecution"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|p| {
                let weight = p.get("weight").and_then(Value::as_i64).unwrap_or(0);
                (weight != 0)
                    .then(|| (weight, NodeSelectorTerm::from_json(p.get("preference").unwrap_or(&Value::Null))))
            })
            .collect();

        let mut hard_spread = Vec::new();
        let mut soft_spread = Vec::new();
        for c in spec.get("topologySpreadConstraints").and_then(Value::as_array).into_iter().flatten() {
            let constraint = SpreadConstraint::from_json(c, &labels)
                .map_err(|reason| ScheduleError::InvalidPod(format!("{key}: topologySpreadConstraints: {reason}")))?;
            match c.get("whenUnsatisfiable").and_then(Value::as_str) {
                Some("DoNotSchedule") => hard_spread.push(constraint),
                Some("ScheduleAnyway") => soft_spread.push(constraint),
                _ => {}
            }
        }

        Ok(PodInfo {
            key,
            name,
            namespace,
            labels,
            node_name: text(spec.get("nodeName")),
            nominated_node_name: text(pod.pointer("/status/nominatedNodeName")),
            priority: spec.get("priority").and_then(Value::as_i64).and_then(|p| i32::try_from(p).ok()).unwrap_or(0),
            preemption_never: spec.get("preemptionPolicy").and_then(Value::as_str) == Some("Never"),
            requests: pod_requests(spec),
            tolerates_unschedulable: tolerated(&tolerations, &unschedulable_taint),
            tolerations,
            node_selector,
            required_terms,
            preferred_terms,
            hard_spread,
            soft_spread,
            default_spread_selector: None,
        })
    }
}
