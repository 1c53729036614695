//! PodTopologySpread: `DoNotSchedule` constraints bound the skew of matching pods between
//! topology domains (filter); `ScheduleAnyway` constraints, or Kubernetes' default spreading
//! when the caller supplies the pod's default selector, favour less crowded domains (score).
//!
//! Counting follows kube-scheduler: only pods in the incoming pod's namespace, not terminating,
//! on nodes that carry every topology key of the constraints and pass the constraint's node
//! inclusion policies (node affinity honoured and taints ignored by default).

use std::sync::Arc;

use serde_json::Value;

use super::node_affinity::matches_required;
use super::selectors::{LabelSelector, Labels};
use super::snapshot::{NO_DOMAIN, PodRecord, TopologyIndex};
use super::taint_toleration::has_untolerated_blocking_taint;
use super::{CycleState, Filter, MAX_NODE_SCORE, NodeInfo, PodInfo, PreFilter, Rejection, Score, Snapshot};

pub const NAME: &str = "PodTopologySpread";

pub const ERR_REASON_CONSTRAINTS_NOT_MATCH: &str = "node(s) didn't match pod topology spread constraints";
pub const ERR_REASON_NODE_LABEL_NOT_MATCH: &str =
    "node(s) didn't match pod topology spread constraints (missing required label)";

const LABEL_HOSTNAME: &str = "kubernetes.io/hostname";
const LABEL_ZONE: &str = "topology.kubernetes.io/zone";

/// A parsed `TopologySpreadConstraint` (the `whenUnsatisfiable` side is where it is stored).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpreadConstraint {
    pub max_skew: i64,
    pub topology_key: String,
    pub selector: LabelSelector,
    pub min_domains: i64,
    /// `nodeAffinityPolicy` (default `Honor`): only nodes matching the pod's node affinity count.
    pub honor_node_affinity: bool,
    /// `nodeTaintsPolicy` (default `Ignore`): with `Honor`, only nodes whose taints the pod tolerates count.
    pub honor_node_taints: bool,
}

impl SpreadConstraint {
    /// Parses a constraint; `matchLabelKeys` values from the pod's labels are ANDed into the
    /// selector (unless the API server already did).
    pub fn from_json(c: &Value, pod_labels: &Labels) -> Result<Self, String> {
        let mut selector = LabelSelector::from_json(c.get("labelSelector"))?;
        for key in c.get("matchLabelKeys").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
            if let Some(value) = pod_labels.get(key)
                && !selector.constrains(key)
            {
                selector.require(key, value);
            }
        }
        Ok(SpreadConstraint {
            max_skew: c.get("maxSkew").and_then(Value::as_i64).unwrap_or(1),
            topology_key: c.get("topologyKey").and_then(Value::as_str).unwrap_or_default().to_string(),
            selector,
            min_domains: c.get("minDomains").and_then(Value::as_i64).unwrap_or(1),
            honor_node_affinity: c.get("nodeAffinityPolicy").and_then(Value::as_str) != Some("Ignore"),
            honor_node_taints: c.get("nodeTaintsPolicy").and_then(Value::as_str) == Some("Honor"),
        })
    }

    fn default_constraint(key: &str, max_skew: i64, selector: &LabelSelector) -> Self {
        SpreadConstraint {
            max_skew,
            topology_key: key.to_string(),
            selector: selector.clone(),
            min_domains: 1,
            honor_node_affinity: true,
            honor_node_taints: false,
        }
    }

    /// True when the inclusion policies cannot exclude any node for this pod.
    fn includes_every_node(&self, pod: &PodInfo) -> bool {
        !self.honor_node_taints
            && (!self.honor_node_affinity || (pod.node_selector.is_empty() && pod.required_terms.is_none()))
    }

    fn includes_node(&self, pod: &PodInfo, node: &NodeInfo) -> bool {
        (!self.honor_node_affinity || matches_required(pod, node))
            && (!self.honor_node_taints || !has_untolerated_blocking_taint(pod, node))
    }
}

/// Matching-pod counts per domain (by [`TopologyIndex`] id) of one hard constraint.
#[derive(Clone, Debug)]
struct DomainCounts {
    index: Arc<TopologyIndex>,
    /// `None` for domains without an eligible node.
    counts: Vec<Option<i64>>,
    eligible_domains: i64,
    min: i64,
    /// The incoming pod matches the constraint's selector itself.
    self_match: i64,
}

impl DomainCounts {
    fn add(&mut self, id: u32, n: i64) {
        let Some(slot) = self.counts.get_mut(id as usize) else { return };
        match slot {
            Some(v) => *v += n,
            None => {
                *slot = Some(n);
                self.eligible_domains += 1;
            }
        }
    }

    fn refresh_min(&mut self) {
        self.min = self.counts.iter().flatten().copied().min().unwrap_or(i64::from(i32::MAX));
    }
}

/// Pre-filter state: counts for each `DoNotSchedule` constraint of the pod.
#[derive(Clone, Debug, Default)]
pub struct FilterState {
    domains: Vec<DomainCounts>,
}

impl FilterState {
    fn compute(pod: &PodInfo, snap: &Snapshot) -> Self {
        let mut domains: Vec<DomainCounts> = pod
            .hard_spread
            .iter()
            .map(|c| {
                let index = snap.topology_index(&c.topology_key);
                DomainCounts {
                    counts: vec![None; index.domains.len()],
                    index,
                    eligible_domains: 0,
                    min: 0,
                    self_match: i64::from(c.selector.matches(&pod.labels)),
                }
            })
            .collect();
        let matching: Vec<Vec<i64>> =
            pod.hard_spread.iter().map(|c| snap.matching_counts(&pod.namespace, &c.selector)).collect();
        let everywhere: Vec<bool> = pod.hard_spread.iter().map(|c| c.includes_every_node(pod)).collect();
        for (slot, node) in snap.nodes().iter().enumerate() {
            // Only nodes carrying every topology key of the constraints count.
            if domains.iter().any(|d| d.index.domain_of[slot] == NO_DOMAIN) {
                continue;
            }
            for (((c, d), counts), everywhere) in
                pod.hard_spread.iter().zip(&mut domains).zip(&matching).zip(&everywhere)
            {
                if *everywhere || c.includes_node(pod, node) {
                    let id = d.index.domain_of[slot];
                    d.add(id, counts[slot]);
                }
            }
        }
        for d in &mut domains {
            d.refresh_min();
        }
        FilterState { domains }
    }

    /// Accounts `record` being added to (`delta` 1) or removed from (-1) `node`; preemption
    /// uses it to evaluate a node without its victims.
    pub fn update_with_pod(&mut self, pod: &PodInfo, record: &PodRecord, node: &NodeInfo, delta: i64) {
        if record.namespace != pod.namespace {
            return;
        }
        let ids: Option<Vec<Option<u32>>> =
            pod.hard_spread.iter().zip(&self.domains).map(|(c, d)| d.index.domain(node, &c.topology_key)).collect();
        let Some(ids) = ids else { return };
        for ((c, d), id) in pod.hard_spread.iter().zip(&mut self.domains).zip(ids) {
            if let Some(id) = id
                && c.selector.matches(&record.labels)
                && c.includes_node(pod, node)
            {
                d.add(id, delta);
                d.refresh_min();
            }
        }
    }
}

/// Pre-score state: the soft constraints in force and per-domain counts over all nodes.
#[derive(Clone, Debug, Default)]
pub struct ScoreState {
    constraints: Vec<SpreadConstraint>,
    require_all_topologies: bool,
    indexes: Vec<Arc<TopologyIndex>>,
    /// Per constraint, count by domain id; `Some` only for domains of scored nodes.
    counts: Vec<Vec<Option<i64>>>,
    weights: Vec<f64>,
}

impl ScoreState {
    fn ignored(&self, node: &NodeInfo) -> bool {
        self.require_all_topologies
            && self.constraints.iter().zip(&self.indexes).any(|(c, ix)| ix.domain(node, &c.topology_key).is_none())
    }
}

pub struct PodTopologySpread;

impl Filter for PodTopologySpread {
    fn name(&self) -> &'static str {
        NAME
    }

    fn pre_filter(&self, pod: &PodInfo, snap: &Snapshot, state: &mut CycleState) -> PreFilter {
        if pod.hard_spread.is_empty() {
            return PreFilter::Skip;
        }
        state.spread_filter = Some(FilterState::compute(pod, snap));
        PreFilter::Run
    }

    fn filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<(), Rejection> {
        let Some(s) = &state.spread_filter else { return Ok(()) };
        for (c, d) in pod.hard_spread.iter().zip(&s.domains) {
            let Some(id) = d.index.domain(node, &c.topology_key) else {
                return Err(Rejection::unresolvable(NAME, ERR_REASON_NODE_LABEL_NOT_MATCH));
            };
            // Fewer eligible domains than minDomains: the global minimum counts as 0.
            let min = if d.eligible_domains < c.min_domains { 0 } else { d.min };
            let matching = id.and_then(|id| d.counts.get(id as usize).copied().flatten()).unwrap_or(0);
            if matching + d.self_match - min > c.max_skew {
                return Err(Rejection::unschedulable(NAME, ERR_REASON_CONSTRAINTS_NOT_MATCH));
            }
        }
        Ok(())
    }
}

impl Score for PodTopologySpread {
    fn name(&self) -> &'static str {
        NAME
    }

    fn pre_score(&self, pod: &PodInfo, snap: &Snapshot, feasible: &[&NodeInfo], state: &mut CycleState) -> bool {
        let own = !pod.hard_spread.is_empty() || !pod.soft_spread.is_empty();
        let (constraints, require_all_topologies) = match (&pod.default_spread_selector, own) {
            (_, true) => (pod.soft_spread.clone(), true),
            (Some(sel), false) => (
                vec![
                    SpreadConstraint::default_constraint(LABEL_HOSTNAME, 3, sel),
                    SpreadConstraint::default_constraint(LABEL_ZONE, 5, sel),
                ],
                false,
            ),
            (None, false) => return false,
        };
        if constraints.is_empty() || snap.is_empty() {
            return false;
        }
        let indexes: Vec<Arc<TopologyIndex>> =
            constraints.iter().map(|c| snap.topology_index(&c.topology_key)).collect();
        let mut s = ScoreState {
            counts: indexes.iter().map(|ix| vec![None; ix.domains.len()]).collect(),
            weights: Vec::with_capacity(constraints.len()),
            indexes,
            constraints,
            require_all_topologies,
        };
        // Domains of the scored nodes; nodes without the key form one extra ("") domain.
        let mut keyless = vec![false; s.constraints.len()];
        let mut scored_nodes = 0usize;
        for node in feasible {
            if s.ignored(node) {
                continue;
            }
            scored_nodes += 1;
            for (i, c) in s.constraints.iter().enumerate() {
                if c.topology_key == LABEL_HOSTNAME {
                    continue;
                }
                match s.indexes[i].domain(node, &c.topology_key) {
                    Some(Some(id)) => {
                        s.counts[i][id as usize].get_or_insert(0);
                    }
                    Some(None) => {}
                    None => keyless[i] = true,
                }
            }
        }
        for (i, c) in s.constraints.iter().enumerate() {
            let size = if c.topology_key == LABEL_HOSTNAME {
                scored_nodes
            } else {
                s.counts[i].iter().flatten().count() + usize::from(keyless[i])
            };
            s.weights.push(((size + 2) as f64).ln());
        }
        let nodes = snap.nodes();
        for (i, c) in s.constraints.iter().enumerate() {
            // Hostname counts are per node and computed at score time.
            if c.topology_key == LABEL_HOSTNAME {
                continue;
            }
            let matching = snap.matching_counts(&pod.namespace, &c.selector);
            let everywhere = c.includes_every_node(pod);
            for (slot, n) in matching.into_iter().enumerate() {
                let id = s.indexes[i].domain_of[slot];
                if n == 0 || id == NO_DOMAIN {
                    continue;
                }
                if s.require_all_topologies && s.indexes.iter().any(|ix| ix.domain_of[slot] == NO_DOMAIN) {
                    continue;
                }
                if !everywhere && !c.includes_node(pod, &nodes[slot]) {
                    continue;
                }
                if let Some(total) = s.counts[i][id as usize].as_mut() {
                    *total += n;
                }
            }
        }
        state.spread_score = Some(s);
        true
    }

    /// Matching pods in the node's domains, weighted by how many domains each key has.
    fn score(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> i64 {
        let Some(s) = &state.spread_score else { return 0 };
        if s.ignored(node) {
            return 0;
        }
        let mut score = 0.0;
        for (((c, counts), weight), index) in s.constraints.iter().zip(&s.counts).zip(&s.weights).zip(&s.indexes) {
            let Some(id) = index.domain(node, &c.topology_key) else { continue };
            let count = if c.topology_key == LABEL_HOSTNAME {
                node.count_matching(&pod.namespace, &c.selector)
            } else {
                id.and_then(|id| counts.get(id as usize).copied().flatten()).unwrap_or(0)
            };
            score += count as f64 * weight + (c.max_skew - 1) as f64;
        }
        score.round() as i64
    }

    /// Fewer matching pods → higher score; ignored nodes get 0.
    fn normalize(&self, state: &CycleState, feasible: &[&NodeInfo], scores: &mut [i64]) {
        let Some(s) = &state.spread_score else { return };
        let mut min = i64::MAX;
        let mut max = 0;
        for (node, score) in feasible.iter().zip(scores.iter()) {
            if !s.ignored(node) {
                min = min.min(*score);
                max = max.max(*score);
            }
        }
        for (node, score) in feasible.iter().zip(scores.iter_mut()) {
            *score = if s.ignored(node) {
                0
            } else if max == 0 {
                MAX_NODE_SCORE
            } else {
                MAX_NODE_SCORE * (max + min - *score) / max
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Three zones with two nodes each; `placed[i]` app=web pods on node i.
    fn cluster(placed: [usize; 6]) -> Snapshot {
        let mut snap = Snapshot::new();
        for (i, zone) in ["a", "a", "b", "b", "c", "c"].iter().enumerate() {
            snap.upsert_node(&json!({"metadata": {"name": format!("n{i}"), "labels": {
                    "kubernetes.io/hostname": format!("n{i}"), "topology.kubernetes.io/zone": zone}},
                "status": {"allocatable": {"cpu": "8", "memory": "16Gi", "pods": "110"}}}))
                .expect("node");
            for p in 0..placed[i] {
                snap.upsert_pod(
                    &json!({"metadata": {"name": format!("w{i}-{p}"), "namespace": "ns", "labels": {"app": "web"}},
                    "spec": {"nodeName": format!("n{i}"), "containers": []}}),
                )
                .expect("pod");
            }
        }
        snap
    }

    fn web_pod(when: &str, max_skew: i64, key: &str, extra: Value) -> PodInfo {
        let mut c = json!({"maxSkew": max_skew, "topologyKey": key, "whenUnsatisfiable": when,
                           "labelSelector": {"matchLabels": {"app": "web"}}});
        if let (Value::Object(c), Value::Object(e)) = (&mut c, extra) {
            c.extend(e);
        }
        PodInfo::from_json(&json!({"metadata": {"name": "new", "namespace": "ns", "labels": {"app": "web"}},
            "spec": {"topologySpreadConstraints": [c], "containers": []}}))
        .expect("pod")
    }

    fn filter_all(pod: &PodInfo, snap: &Snapshot) -> Vec<bool> {
        let mut state = CycleState::default();
        assert!(matches!(PodTopologySpread.pre_filter(pod, snap, &mut state), PreFilter::Run));
        snap.nodes().iter().map(|n| PodTopologySpread.filter(&state, pod, n).is_ok()).collect()
    }

    #[test]
    fn zone_skew_is_bounded_across_three_zones() {
        // Zone a has 2 pods, b has 1, c has 0: with maxSkew 1 only zone c is allowed.
        let snap = cluster([1, 1, 1, 0, 0, 0]);
        let pod = web_pod("DoNotSchedule", 1, LABEL_ZONE, json!({}));
        assert_eq!(filter_all(&pod, &snap), vec![false, false, false, false, true, true]);
        let mut state = CycleState::default();
        PodTopologySpread.pre_filter(&pod, &snap, &mut state);
        let err = PodTopologySpread.filter(&state, &pod, &snap.nodes()[0]).expect_err("zone a");
        assert_eq!(err.reasons, vec![ERR_REASON_CONSTRAINTS_NOT_MATCH]);
        assert_eq!(err.code, super::super::Code::Unschedulable);
        // maxSkew 2 admits zone b as well.
        let pod = web_pod("DoNotSchedule", 2, LABEL_ZONE, json!({}));
        assert_eq!(filter_all(&pod, &snap), vec![false, false, true, true, true, true]);
    }

    #[test]
    fn min_domains_treats_missing_domains_as_empty() {
        // Zones a and b have one pod, c none: the minimum is 0 either way.
        let snap = cluster([1, 0, 1, 0, 0, 0]);
        let pod = web_pod("DoNotSchedule", 1, LABEL_ZONE, json!({"minDomains": 4}));
        assert_eq!(filter_all(&pod, &snap), vec![false, false, false, false, true, true]);
        let relaxed = web_pod("DoNotSchedule", 1, LABEL_ZONE, json!({}));
        assert_eq!(filter_all(&relaxed, &snap), vec![false, false, false, false, true, true]);
        let snap = cluster([1, 0, 1, 0, 1, 0]);
        assert_eq!(filter_all(&relaxed, &snap), vec![true; 6]);
        let pod = web_pod("DoNotSchedule", 1, LABEL_ZONE, json!({"minDomains": 4}));
        assert_eq!(filter_all(&pod, &snap), vec![false; 6]);
    }

    #[test]
    fn nodes_without_the_topology_label_are_unresolvable() {
        let mut snap = cluster([0; 6]);
        snap.upsert_node(&json!({"metadata": {"name": "bare"}})).expect("bare");
        let pod = web_pod("DoNotSchedule", 1, LABEL_ZONE, json!({}));
        let mut state = CycleState::default();
        PodTopologySpread.pre_filter(&pod, &snap, &mut state);
        let err = PodTopologySpread.filter(&state, &pod, snap.node("bare").expect("bare")).expect_err("no label");
        assert_eq!(err.reasons, vec![ERR_REASON_NODE_LABEL_NOT_MATCH]);
        assert_eq!(err.code, super::super::Code::UnschedulableAndUnresolvable);
    }

    #[test]
    fn node_affinity_policy_excludes_nodes_from_the_counts() {
        // Zone a is full of pods but the pod only wants zones b and c: zone a does not count.
        let snap = cluster([3, 3, 1, 0, 0, 0]);
        let mut pod = web_pod("DoNotSchedule", 1, LABEL_ZONE, json!({}));
        pod.node_selector = Vec::new();
        pod.required_terms = Some(vec![super::super::selectors::NodeSelectorTerm::from_json(&json!({
            "matchExpressions": [{"key": LABEL_ZONE, "operator": "In", "values": ["b", "c"]}]}))]);
        assert_eq!(filter_all(&pod, &snap)[4..], [true, true]);
        let mut ignore = web_pod("DoNotSchedule", 1, LABEL_ZONE, json!({"nodeAffinityPolicy": "Ignore"}));
        ignore.required_terms = pod.required_terms.clone();
        // With the policy ignored zone a counts too; the minimum is still zone c's 0, so zone b
        // (1 pod) is refused and zone c admitted.
        assert_eq!(filter_all(&ignore, &snap)[2..], [false, false, true, true]);
    }

    #[test]
    fn soft_constraints_score_emptier_zones_higher() {
        let snap = cluster([2, 1, 1, 0, 0, 0]);
        let pod = web_pod("ScheduleAnyway", 1, LABEL_ZONE, json!({}));
        let feasible: Vec<&NodeInfo> = snap.nodes().iter().collect();
        let mut state = CycleState::default();
        assert!(PodTopologySpread.pre_score(&pod, &snap, &feasible, &mut state));
        let mut scores: Vec<i64> = feasible.iter().map(|n| PodTopologySpread.score(&state, &pod, n)).collect();
        // weight ln(3 + 2) ≈ 1.609: zone a 3 pods → 5, b 1 → 2, c 0 → 0.
        assert_eq!(scores, vec![5, 5, 2, 2, 0, 0]);
        PodTopologySpread.normalize(&state, &feasible, &mut scores);
        assert_eq!(scores, vec![0, 0, 60, 60, 100, 100]);
    }

    #[test]
    fn default_spreading_needs_a_selector() {
        let snap = cluster([1, 0, 0, 0, 0, 0]);
        let feasible: Vec<&NodeInfo> = snap.nodes().iter().collect();
        let mut pod =
            PodInfo::from_json(&json!({"metadata": {"name": "x", "namespace": "ns", "labels": {"app": "web"}},
            "spec": {"containers": []}}))
            .expect("pod");
        let mut state = CycleState::default();
        assert!(!PodTopologySpread.pre_score(&pod, &snap, &feasible, &mut state));
        pod.default_spread_selector =
            Some(LabelSelector::from_json(Some(&json!({"matchLabels": {"app": "web"}}))).expect("selector"));
        assert!(PodTopologySpread.pre_score(&pod, &snap, &feasible, &mut state));
        let mut scores: Vec<i64> = feasible.iter().map(|n| PodTopologySpread.score(&state, &pod, n)).collect();
        PodTopologySpread.normalize(&state, &feasible, &mut scores);
        assert!(scores[0] < scores[1], "the node already running a replica scores lowest: {scores:?}");
        assert!(scores[1] < scores[2], "its zone peer scores below other zones: {scores:?}");
    }
}
