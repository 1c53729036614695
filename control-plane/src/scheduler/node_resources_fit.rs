//! NodeResourcesFit: the pod's requests must fit in the node's allocatable minus what its pods
//! already request (filter), and nodes with more room left score higher (`LeastAllocated`,
//! cpu and memory with weight 1, counting requests with the 100m/200Mi defaults).

use std::borrow::Cow;

use super::{Code, CycleState, Filter, MAX_NODE_SCORE, NodeInfo, PodInfo, Reasons, Rejection, Score};

pub const NAME: &str = "NodeResourcesFit";

pub const ERR_REASON_TOO_MANY_PODS: &str = "Too many pods";

pub struct NodeResourcesFit;

/// Collects reasons without allocating for the common single-reason case.
#[derive(Default)]
struct Shortfalls {
    first: Option<Cow<'static, str>>,
    rest: Vec<Cow<'static, str>>,
    unresolvable: bool,
}

impl Shortfalls {
    fn push(&mut self, reason: Cow<'static, str>) {
        match self.first {
            None => self.first = Some(reason),
            Some(_) => self.rest.push(reason),
        }
    }

    /// Checks one resource; a request larger than the node's whole allocatable cannot be
    /// helped by preemption and makes the rejection unresolvable.
    fn check(&mut self, request: i64, allocatable: i64, requested: i64, reason: impl FnOnce() -> Cow<'static, str>) {
        if request > 0 && request > allocatable - requested {
            self.push(reason());
            self.unresolvable |= request > allocatable;
        }
    }

    fn into_result(self) -> Result<(), Rejection> {
        let Some(first) = self.first else { return Ok(()) };
        let reasons = if self.rest.is_empty() {
            Reasons::One(first)
        } else {
            Reasons::Many(std::iter::once(first).chain(self.rest).collect())
        };
        let code = if self.unresolvable { Code::UnschedulableAndUnresolvable } else { Code::Unschedulable };
        Err(Rejection { plugin: NAME, code, reasons })
    }
}

impl Filter for NodeResourcesFit {
    fn name(&self) -> &'static str {
        NAME
    }

    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<(), Rejection> {
        let mut short = Shortfalls::default();
        let slots = i64::try_from(node.pods.len()).unwrap_or(i64::MAX);
        if slots + 1 > node.allocatable.pods {
            short.push(Cow::Borrowed(ERR_REASON_TOO_MANY_PODS));
        }
        let req = &pod.requests.requests;
        if !req.is_empty_request() {
            let (alloc, used) = (&node.allocatable, &node.requested);
            short.check(req.milli_cpu, alloc.milli_cpu, used.milli_cpu, || "Insufficient cpu".into());
            short.check(req.memory, alloc.memory, used.memory, || "Insufficient memory".into());
            short.check(req.ephemeral_storage, alloc.ephemeral_storage, used.ephemeral_storage, || {
                "Insufficient ephemeral-storage".into()
            });
            for (name, amount) in &req.scalar {
                short.check(*amount, alloc.scalar(name), used.scalar(name), || format!("Insufficient {name}").into());
            }
        }
        short.into_result()
    }
}

/// `(capacity - requested) * 100 / capacity`, 0 when over capacity.
fn least_requested(requested: i64, capacity: i64) -> i64 {
    if capacity == 0 || requested > capacity {
        return 0;
    }
    (capacity - requested) * MAX_NODE_SCORE / capacity
}

impl Score for NodeResourcesFit {
    fn name(&self) -> &'static str {
        NAME
    }

    fn score(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> i64 {
        let mut total = 0;
        let mut weights = 0;
        let cpu = node.allocatable.milli_cpu;
        if cpu != 0 {
            total += least_requested(node.non_zero_milli_cpu + pod.requests.non_zero_milli_cpu, cpu);
            weights += 1;
        }
        let memory = node.allocatable.memory;
        if memory != 0 {
            total += least_requested(node.non_zero_memory + pod.requests.non_zero_memory, memory);
            weights += 1;
        }
        if weights == 0 { 0 } else { total / weights }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn node(cpu: &str, memory: &str, pods: &str, extra: Value) -> NodeInfo {
        let mut alloc = json!({"cpu": cpu, "memory": memory, "pods": pods, "ephemeral-storage": "10Gi"});
        if let (Value::Object(a), Value::Object(e)) = (&mut alloc, extra) {
            a.extend(e);
        }
        NodeInfo::from_json(&json!({"metadata": {"name": "n"}, "status": {"allocatable": alloc}})).expect("node")
    }

    fn pod(requests: Value) -> PodInfo {
        PodInfo::from_json(&json!({"metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "resources": {"requests": requests}}]}}))
        .expect("pod")
    }

    #[test]
    fn filter_reports_every_insufficient_resource() {
        let state = CycleState::default();
        let mut n = node("2", "4Gi", "110", json!({"example.com/gpu": "1"}));
        let used = pod(json!({"cpu": "1500m", "memory": "3Gi"}));
        n.add_pod(std::sync::Arc::new(super::super::PodRecord::from_pod_info(&used)));

        assert!(NodeResourcesFit.filter(&state, &pod(json!({"cpu": "500m", "memory": "1Gi"})), &n).is_ok());
        let err = NodeResourcesFit
            .filter(
                &state,
                &pod(json!({"cpu": "1", "memory": "2Gi", "example.com/gpu": "2", "ephemeral-storage": "1Gi"})),
                &n,
            )
            .expect_err("too big");
        assert_eq!(err.reasons, vec!["Insufficient cpu", "Insufficient memory", "Insufficient example.com/gpu"]);
        assert_eq!(err.code, Code::UnschedulableAndUnresolvable, "2 gpus exceed the node's single gpu");

        let err = NodeResourcesFit.filter(&state, &pod(json!({"cpu": "1"})), &n).expect_err("cpu");
        assert_eq!(err.reasons, vec!["Insufficient cpu"]);
        assert_eq!(err.code, Code::Unschedulable);
        let err = NodeResourcesFit.filter(&state, &pod(json!({"cpu": "3"})), &n).expect_err("cpu");
        assert_eq!(err.code, Code::UnschedulableAndUnresolvable, "more than the whole node");
    }

    #[test]
    fn filter_counts_pod_slots_even_for_best_effort_pods() {
        let state = CycleState::default();
        let mut n = node("2", "4Gi", "1", json!({}));
        assert!(NodeResourcesFit.filter(&state, &pod(json!({})), &n).is_ok());
        n.add_pod(std::sync::Arc::new(super::super::PodRecord::from_pod_info(&pod(json!({})))));
        let err = NodeResourcesFit.filter(&state, &pod(json!({})), &n).expect_err("full");
        assert_eq!(err.reasons, vec![ERR_REASON_TOO_MANY_PODS]);
        assert_eq!(err.code, Code::Unschedulable);
    }

    #[test]
    fn least_allocated_prefers_emptier_nodes() {
        let state = CycleState::default();
        let p = pod(json!({"cpu": "1", "memory": "1Gi"}));
        let empty = node("4", "4Gi", "110", json!({}));
        let mut busy = node("4", "4Gi", "110", json!({}));
        busy.add_pod(std::sync::Arc::new(super::super::PodRecord::from_pod_info(&pod(
            json!({"cpu": "2", "memory": "2Gi"}),
        ))));
        // cpu (4-1)/4 = 75, memory (4-1)/4 = 75.
        assert_eq!(NodeResourcesFit.score(&state, &p, &empty), 75);
        // cpu (4-3)/4 = 25, memory 25.
        assert_eq!(NodeResourcesFit.score(&state, &p, &busy), 25);
        // A best-effort pod still counts as 100m / 200Mi.
        let be = pod(json!({}));
        assert_eq!(NodeResourcesFit.score(&state, &be, &empty), (97 + 95) / 2);
    }
}
