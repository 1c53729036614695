//! TaintToleration: a node's `NoSchedule`/`NoExecute` taints must all be tolerated (filter);
//! nodes with fewer untolerated `PreferNoSchedule` taints score higher.

use serde_json::Value;

use super::{CycleState, Filter, MAX_NODE_SCORE, NodeInfo, PodInfo, Rejection, Score, default_normalize};

pub const NAME: &str = "TaintToleration";

/// The filter reason; since Kubernetes 1.35 the taint itself is not named in pod status.
pub const ERR_REASON_UNTOLERATED: &str = "node(s) had untolerated taint(s)";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Taint {
    pub key: String,
    pub value: String,
    pub effect: String,
}

impl Taint {
    pub fn from_json(v: &Value) -> Self {
        let s = |f: &str| v.get(f).and_then(Value::as_str).unwrap_or_default().to_string();
        Taint { key: s("key"), value: s("value"), effect: s("effect") }
    }

    fn blocks_scheduling(&self) -> bool {
        self.effect == "NoSchedule" || self.effect == "NoExecute"
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Toleration {
    pub key: String,
    /// `Equal` (also when empty) or `Exists`; anything else tolerates nothing.
    pub operator: String,
    pub value: String,
    /// Empty tolerates every effect.
    pub effect: String,
}

impl Toleration {
    pub fn from_json(v: &Value) -> Self {
        let s = |f: &str| v.get(f).and_then(Value::as_str).unwrap_or_default().to_string();
        Toleration { key: s("key"), operator: s("operator"), value: s("value"), effect: s("effect") }
    }

    /// Kubernetes `Toleration.ToleratesTaint`: an empty key with `Exists` matches every taint.
    pub fn tolerates(&self, taint: &Taint) -> bool {
        if !self.effect.is_empty() && self.effect != taint.effect {
            return false;
        }
        if !self.key.is_empty() && self.key != taint.key {
            return false;
        }
        match self.operator.as_str() {
            "" | "Equal" => self.value == taint.value,
            "Exists" => true,
            _ => false,
        }
    }
}

pub fn tolerated(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| t.tolerates(taint))
}

/// True when some `NoSchedule`/`NoExecute` taint of the node is not tolerated.
pub fn has_untolerated_blocking_taint(pod: &PodInfo, node: &NodeInfo) -> bool {
    node.taints.iter().any(|t| t.blocks_scheduling() && !tolerated(&pod.tolerations, t))
}

pub struct TaintToleration;

impl Filter for TaintToleration {
    fn name(&self) -> &'static str {
        NAME
    }

    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<(), Rejection> {
        if has_untolerated_blocking_taint(pod, node) {
            return Err(Rejection::unresolvable(NAME, ERR_REASON_UNTOLERATED));
        }
        Ok(())
    }
}

impl Score for TaintToleration {
    fn name(&self) -> &'static str {
        NAME
    }

    /// The number of untolerated `PreferNoSchedule` taints (tolerations with an empty effect count).
    fn score(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> i64 {
        let untolerated = node
            .taints
            .iter()
            .filter(|t| t.effect == "PreferNoSchedule")
            .filter(|t| {
                !pod.tolerations
                    .iter()
                    .any(|tol| (tol.effect.is_empty() || tol.effect == "PreferNoSchedule") && tol.tolerates(t))
            })
            .count();
        i64::try_from(untolerated).unwrap_or(i64::MAX)
    }

    fn normalize(&self, _: &CycleState, _: &[&NodeInfo], scores: &mut [i64]) {
        default_normalize(MAX_NODE_SCORE, true, scores);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node_with_taints(taints: Value) -> NodeInfo {
        NodeInfo::from_json(&json!({"metadata": {"name": "n"}, "spec": {"taints": taints}})).expect("node")
    }

    fn pod_with_tolerations(tolerations: Value) -> PodInfo {
        PodInfo::from_json(&json!({"metadata": {"name": "p"}, "spec": {"tolerations": tolerations, "containers": []}}))
            .expect("pod")
    }

    #[test]
    fn filter_rejects_untolerated_no_schedule_and_no_execute() {
        let state = CycleState::default();
        let node = node_with_taints(json!([{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"},
                                            {"key": "soft", "effect": "PreferNoSchedule"}]));
        let err = TaintToleration.filter(&state, &pod_with_tolerations(json!([])), &node).expect_err("untolerated");
        assert_eq!(err.reasons, vec![ERR_REASON_UNTOLERATED]);
        assert_eq!(err.code, super::super::Code::UnschedulableAndUnresolvable);

        let equal = pod_with_tolerations(json!([{"key": "dedicated", "operator": "Equal", "value": "gpu"}]));
        assert!(TaintToleration.filter(&state, &equal, &node).is_ok());
        let wrong_value = pod_with_tolerations(json!([{"key": "dedicated", "value": "cpu"}]));
        assert!(TaintToleration.filter(&state, &wrong_value, &node).is_err());
        let exists = pod_with_tolerations(json!([{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}]));
        assert!(TaintToleration.filter(&state, &exists, &node).is_ok());
        let wrong_effect =
            pod_with_tolerations(json!([{"key": "dedicated", "operator": "Exists", "effect": "NoExecute"}]));
        assert!(TaintToleration.filter(&state, &wrong_effect, &node).is_err());
        let everything = pod_with_tolerations(json!([{"operator": "Exists"}]));
        assert!(TaintToleration.filter(&state, &everything, &node).is_ok());

        let no_execute = node_with_taints(json!([{"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"}]));
        assert!(TaintToleration.filter(&state, &pod_with_tolerations(json!([])), &no_execute).is_err());
    }

    #[test]
    fn score_prefers_fewer_untolerated_prefer_no_schedule_taints() {
        let state = CycleState::default();
        let pod = pod_with_tolerations(json!([{"key": "a", "operator": "Exists", "effect": "PreferNoSchedule"},
                                              {"key": "b", "operator": "Exists", "effect": "NoSchedule"}]));
        let nodes = [
            node_with_taints(json!([])),
            node_with_taints(json!([{"key": "a", "effect": "PreferNoSchedule"}])),
            node_with_taints(json!([{"key": "b", "effect": "PreferNoSchedule"}])),
            node_with_taints(
                json!([{"key": "b", "effect": "PreferNoSchedule"}, {"key": "c", "effect": "PreferNoSchedule"}]),
            ),
        ];
        let mut scores: Vec<i64> = nodes.iter().map(|n| TaintToleration.score(&state, &pod, n)).collect();
        assert_eq!(scores, vec![0, 0, 1, 2]);
        TaintToleration.normalize(&state, &[], &mut scores);
        assert_eq!(scores, vec![100, 100, 50, 0]);
    }
}
