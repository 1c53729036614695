//! NodeUnschedulable: cordoned nodes (`spec.unschedulable`) take only pods that tolerate the
//! `node.kubernetes.io/unschedulable:NoSchedule` taint.

use super::{CycleState, Filter, NodeInfo, PodInfo, Rejection};

pub const NAME: &str = "NodeUnschedulable";

pub const ERR_REASON: &str = "node(s) were unschedulable";

pub struct NodeUnschedulable;

impl Filter for NodeUnschedulable {
    fn name(&self) -> &'static str {
        NAME
    }

    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<(), Rejection> {
        if node.unschedulable && !pod.tolerates_unschedulable {
            return Err(Rejection::unresolvable(NAME, ERR_REASON));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cordoned_nodes_need_the_unschedulable_toleration() {
        let node =
            NodeInfo::from_json(&json!({"metadata": {"name": "n"}, "spec": {"unschedulable": true}})).expect("n");
        let state = CycleState::default();
        let plain = PodInfo::from_json(&json!({"metadata": {"name": "p"}, "spec": {}})).expect("pod");
        assert_eq!(NodeUnschedulable.filter(&state, &plain, &node).expect_err("cordoned").reasons, vec![ERR_REASON]);
        let tolerant = PodInfo::from_json(&json!({"metadata": {"name": "p"}, "spec": {"tolerations": [
            {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}]}}))
        .expect("pod");
        assert!(NodeUnschedulable.filter(&state, &tolerant, &node).is_ok());
        let other = NodeInfo::from_json(&json!({"metadata": {"name": "m"}})).expect("m");
        assert!(NodeUnschedulable.filter(&state, &plain, &other).is_ok());
    }
}
