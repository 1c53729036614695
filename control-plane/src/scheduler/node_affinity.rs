//! NodeAffinity: `spec.nodeSelector` and required node affinity must match (filter; a
//! `metadata.name In` field pins the search to those nodes at pre-filter); preferred terms add
//! their weights (score).

use std::collections::BTreeSet;

use super::{CycleState, Filter, MAX_NODE_SCORE, NodeInfo, PodInfo, PreFilter, Rejection, Score, Snapshot};

pub const NAME: &str = "NodeAffinity";

pub const ERR_REASON_POD: &str = "node(s) didn't match Pod's node affinity/selector";

/// Pre-filter reason when every required term pins conflicting node names.
pub const ERR_REASON_CONFLICT: &str = "pod affinity terms conflict";

/// `spec.nodeSelector` AND any required term (Kubernetes `RequiredNodeAffinity.Match`).
pub fn matches_required(pod: &PodInfo, node: &NodeInfo) -> bool {
    pod.node_selector.iter().all(|(k, v)| node.labels.get(k) == Some(v))
        && pod.required_terms.as_ref().is_none_or(|terms| terms.iter().any(|t| t.matches(&node.name, &node.labels)))
}

pub struct NodeAffinity;

impl Filter for NodeAffinity {
    fn name(&self) -> &'static str {
        NAME
    }

    fn pre_filter(&self, pod: &PodInfo, _: &Snapshot, _: &mut CycleState) -> PreFilter {
        let Some(terms) = &pod.required_terms else {
            return if pod.node_selector.is_empty() { PreFilter::Skip } else { PreFilter::Run };
        };
        if terms.is_empty() {
            return PreFilter::Run;
        }
        let mut names = BTreeSet::new();
        for term in terms {
            match term.pinned_node_names() {
                // A term without a node-name pin admits every node: the terms are ORed.
                None => return PreFilter::Run,
                Some(pinned) => names.extend(pinned.into_iter().map(str::to_string)),
            }
        }
        if names.is_empty() {
            return PreFilter::Reject(Rejection::unresolvable(NAME, ERR_REASON_CONFLICT));
        }
        PreFilter::Nodes(names)
    }

    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<(), Rejection> {
        if matches_required(pod, node) { Ok(()) } else { Err(Rejection::unresolvable(NAME, ERR_REASON_POD)) }
    }
}

impl Score for NodeAffinity {
    fn name(&self) -> &'static str {
        NAME
    }

    fn pre_score(&self, pod: &PodInfo, _: &Snapshot, _: &[&NodeInfo], _: &mut CycleState) -> bool {
        !pod.preferred_terms.is_empty()
    }

    fn score(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> i64 {
        pod.preferred_terms.iter().filter(|(_, t)| t.matches(&node.name, &node.labels)).map(|(w, _)| *w).sum()
    }

    fn normalize(&self, _: &CycleState, _: &[&NodeInfo], scores: &mut [i64]) {
        super::default_normalize(MAX_NODE_SCORE, false, scores);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn node(name: &str, labels: Value) -> NodeInfo {
        NodeInfo::from_json(&json!({"metadata": {"name": name, "labels": labels}})).expect("node")
    }

    fn pod(spec: Value) -> PodInfo {
        PodInfo::from_json(&json!({"metadata": {"name": "p"}, "spec": spec})).expect("pod")
    }

    #[test]
    fn node_selector_and_required_terms_are_anded() {
        let state = CycleState::default();
        let p = pod(json!({
            "nodeSelector": {"disk": "ssd"},
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a", "b"]}]},
                {"matchExpressions": [{"key": "gpu", "operator": "Exists"}]}
            ]}}}
        }));
        assert!(NodeAffinity.filter(&state, &p, &node("n1", json!({"disk": "ssd", "zone": "b"}))).is_ok());
        assert!(NodeAffinity.filter(&state, &p, &node("n2", json!({"disk": "ssd", "gpu": "t4"}))).is_ok());
        let err =
            NodeAffinity.filter(&state, &p, &node("n3", json!({"disk": "hdd", "zone": "a"}))).expect_err("selector");
        assert_eq!(err.reasons, vec![ERR_REASON_POD]);
        assert!(NodeAffinity.filter(&state, &p, &node("n4", json!({"disk": "ssd", "zone": "c"}))).is_err());
    }

    #[test]
    fn pre_filter_skips_pins_and_detects_conflicts() {
        let snap = Snapshot::new();
        let mut state = CycleState::default();
        assert!(matches!(NodeAffinity.pre_filter(&pod(json!({})), &snap, &mut state), PreFilter::Skip));
        let pinned = pod(json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}]}}}}));
        match NodeAffinity.pre_filter(&pinned, &snap, &mut state) {
            PreFilter::Nodes(names) => assert_eq!(names.into_iter().collect::<Vec<_>>(), vec!["n1".to_string()]),
            _ => panic!("expected the search to be pinned to n1"),
        }
        let conflict = pod(json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchFields": [
                {"key": "metadata.name", "operator": "In", "values": ["n1"]},
                {"key": "metadata.name", "operator": "In", "values": ["n2"]}]}]}}}}));
        match NodeAffinity.pre_filter(&conflict, &snap, &mut state) {
            PreFilter::Reject(r) => assert_eq!(r.reasons, vec![ERR_REASON_CONFLICT]),
            _ => panic!("expected a conflict"),
        }
    }

    #[test]
    fn preferred_terms_score_by_weight() {
        let state = CycleState::default();
        let p = pod(json!({"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 10, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}},
            {"weight": 30, "preference": {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}}
        ]}}}));
        let nodes = [node("a", json!({"zone": "a"})), node("b", json!({"disk": "ssd"})), node("c", json!({}))];
        let mut scores: Vec<i64> = nodes.iter().map(|n| NodeAffinity.score(&state, &p, n)).collect();
        assert_eq!(scores, vec![10, 30, 0]);
        NodeAffinity.normalize(&state, &[], &mut scores);
        assert_eq!(scores, vec![33, 100, 0]);
    }
}
