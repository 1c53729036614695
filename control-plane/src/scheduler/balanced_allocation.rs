//! NodeResourcesBalancedAllocation: favours nodes whose cpu and memory utilisation (with the
//! pod placed, actual requests) stay close to each other. Skipped for best-effort pods.

use super::{CycleState, MAX_NODE_SCORE, NodeInfo, PodInfo, Score, Snapshot};

pub const NAME: &str = "NodeResourcesBalancedAllocation";

pub struct BalancedAllocation;

impl Score for BalancedAllocation {
    fn name(&self) -> &'static str {
        NAME
    }

    fn pre_score(&self, pod: &PodInfo, _: &Snapshot, _: &[&NodeInfo], _: &mut CycleState) -> bool {
        let r = &pod.requests.requests;
        r.milli_cpu != 0 || r.memory != 0
    }

    fn score(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> i64 {
        let fraction = |requested: i64, allocatable: i64| {
            (allocatable != 0).then(|| (requested as f64 / allocatable as f64).min(1.0))
        };
        let cpu = fraction(node.requested.milli_cpu + pod.requests.requests.milli_cpu, node.allocatable.milli_cpu);
        let memory = fraction(node.requested.memory + pod.requests.requests.memory, node.allocatable.memory);
        // Standard deviation of the fractions; with two resources it is half their difference.
        let std = match (cpu, memory) {
            (Some(c), Some(m)) => ((c - m) / 2.0).abs(),
            _ => 0.0,
        };
        ((1.0 - std) * MAX_NODE_SCORE as f64) as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn pod(requests: Value) -> PodInfo {
        PodInfo::from_json(&json!({"metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "resources": {"requests": requests}}]}}))
        .expect("pod")
    }

    #[test]
    fn balanced_nodes_score_higher_and_best_effort_pods_skip() {
        let state = CycleState::default();
        let node = NodeInfo::from_json(&json!({"metadata": {"name": "n"},
            "status": {"allocatable": {"cpu": "4", "memory": "4Gi", "pods": "10"}}}))
        .expect("node");
        // cpu 50%, memory 50% → perfectly balanced.
        assert_eq!(BalancedAllocation.score(&state, &pod(json!({"cpu": "2", "memory": "2Gi"})), &node), 100);
        // cpu 100%, memory 0% → std 0.5.
        assert_eq!(BalancedAllocation.score(&state, &pod(json!({"cpu": "4"})), &node), 50);
        // cpu 75%, memory 25% → std 0.25.
        assert_eq!(BalancedAllocation.score(&state, &pod(json!({"cpu": "3", "memory": "1Gi"})), &node), 75);
        let snap = Snapshot::new();
        assert!(!BalancedAllocation.pre_score(&pod(json!({})), &snap, &[], &mut CycleState::default()));
    }
}
