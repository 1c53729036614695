//! NodeName: a pod that names its node (`spec.nodeName`) fits only that node.

use super::{CycleState, Filter, NodeInfo, PodInfo, Rejection};

pub const NAME: &str = "NodeName";

pub const ERR_REASON: &str = "node(s) didn't match the requested node name";

pub struct NodeName;

impl Filter for NodeName {
    fn name(&self) -> &'static str {
        NAME
    }

    fn pre_filter(&self, pod: &PodInfo, _: &super::Snapshot, _: &mut CycleState) -> super::PreFilter {
        if pod.node_name.is_empty() { super::PreFilter::Skip } else { super::PreFilter::Run }
    }

    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<(), Rejection> {
        if pod.node_name.is_empty() || pod.node_name == node.name {
            Ok(())
        } else {
            Err(Rejection::unresolvable(NAME, ERR_REASON))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_the_named_node_fits() {
        let pod = PodInfo::from_json(&json!({"metadata": {"name": "p"}, "spec": {"nodeName": "a"}})).expect("pod");
        let a = NodeInfo::from_json(&json!({"metadata": {"name": "a"}})).expect("a");
        let b = NodeInfo::from_json(&json!({"metadata": {"name": "b"}})).expect("b");
        let state = CycleState::default();
        assert!(NodeName.filter(&state, &pod, &a).is_ok());
        assert_eq!(NodeName.filter(&state, &pod, &b).expect_err("b").reasons, vec![ERR_REASON]);
    }
}
