//! Scheduling failures and the exact message kube-scheduler writes into the pod's
//! `PodScheduled` condition and the `FailedScheduling` event:
//! `0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, 2 Insufficient cpu.
//! preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling.`

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use super::Rejection;

/// Why a pod could not be placed.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ScheduleError {
    #[error("no nodes available to schedule pods")]
    NoNodesAvailable,
    /// Boxed: a `FitError` is large and failures are the uncommon path.
    #[error(transparent)]
    Unschedulable(Box<FitError>),
    /// The pod cannot be evaluated (e.g. an invalid topology spread selector).
    #[error("{0}")]
    InvalidPod(String),
}

impl From<FitError> for ScheduleError {
    fn from(e: FitError) -> Self {
        ScheduleError::Unschedulable(Box::new(e))
    }
}

/// Nodes whose pods preemption would evict so the pod fits; the caller deletes the victims and
/// sets the pod's `status.nominatedNodeName` to `node`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreemptionCandidate {
    pub node: String,
    /// `namespace/name` of each victim, most important first.
    pub victims: Vec<String>,
}

/// No node fits the pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FitError {
    pub num_all_nodes: usize,
    /// Set when a pre-filter rejected the pod for every node.
    pub pre_filter_msg: Option<String>,
    /// Filter reason → number of nodes that gave it.
    pub reasons: BTreeMap<String, usize>,
    /// The preemption outcome, already prefixed (`preemption: …`), when preemption did not help.
    pub post_filter_msg: Option<String>,
    /// Plugins that rejected the pod somewhere (for requeueing on relevant cluster events).
    pub unschedulable_plugins: BTreeSet<&'static str>,
    /// Set when preemption found room: evict the victims and retry.
    pub preemption: Option<PreemptionCandidate>,
}

impl std::error::Error for FitError {}

impl fmt::Display for FitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&render(self.num_all_nodes, self.pre_filter_msg.as_deref(), &self.reasons))?;
        if let Some(post) = &self.post_filter_msg {
            write!(f, " {post}")?;
        }
        Ok(())
    }
}

/// `0/N nodes are available: <pre-filter message>.` or the sorted `count reason` histogram.
pub(super) fn render(num_all_nodes: usize, pre_filter_msg: Option<&str>, reasons: &BTreeMap<String, usize>) -> String {
    let mut msg = format!("0/{num_all_nodes} nodes are available:");
    if let Some(pre) = pre_filter_msg {
        msg.push_str(&format!(" {pre}."));
        return msg;
    }
    // Kubernetes sorts the rendered "count reason" strings, so "10 x" sorts before "2 y".
    let mut lines: Vec<String> = reasons.iter().map(|(reason, count)| format!("{count} {reason}")).collect();
    lines.sort();
    if !lines.is_empty() {
        msg.push_str(&format!(" {}.", lines.join(", ")));
    }
    msg
}

/// Per-node filter outcomes of one attempt: explicit rejections by node index, plus the status
/// of nodes that were never evaluated (absent), counted `num_all_nodes - explicit` times.
#[derive(Clone, Debug, Default)]
pub(super) struct NodeStatuses {
    pub explicit: Vec<(usize, Rejection)>,
    pub absent: Option<Rejection>,
}

impl NodeStatuses {
    pub fn histogram(&self, num_all_nodes: usize) -> BTreeMap<String, usize> {
        let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
        for (_, r) in &self.explicit {
            for reason in r.reasons.iter() {
                *reasons.entry(reason.to_string()).or_default() += 1;
            }
        }
        let absent_nodes = num_all_nodes.saturating_sub(self.explicit.len());
        if let Some(r) = &self.absent
            && absent_nodes > 0
        {
            for reason in r.reasons.iter() {
                *reasons.entry(reason.to_string()).or_default() += absent_nodes;
            }
        }
        reasons
    }

    pub fn plugins(&self) -> BTreeSet<&'static str> {
        self.explicit.iter().map(|(_, r)| r.plugin).chain(self.absent.iter().map(|r| r.plugin)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_strings_sort_lexically_like_go() {
        let reasons: BTreeMap<String, usize> =
            [("Insufficient cpu".to_string(), 2), ("node(s) were unschedulable".to_string(), 10)].into();
        assert_eq!(
            render(12, None, &reasons),
            "0/12 nodes are available: 10 node(s) were unschedulable, 2 Insufficient cpu."
        );
        assert_eq!(
            render(3, Some("pod affinity terms conflict"), &reasons),
            "0/3 nodes are available: pod affinity terms conflict."
        );
        assert_eq!(render(0, None, &BTreeMap::new()), "0/0 nodes are available:");
    }

    #[test]
    fn schedule_error_messages() {
        assert_eq!(ScheduleError::NoNodesAvailable.to_string(), "no nodes available to schedule pods");
        let fit = FitError {
            num_all_nodes: 1,
            pre_filter_msg: None,
            reasons: [("Too many pods".to_string(), 1)].into(),
            post_filter_msg: Some("preemption: not eligible due to preemptionPolicy=Never.".into()),
            unschedulable_plugins: BTreeSet::new(),
            preemption: None,
        };
        assert_eq!(
            ScheduleError::from(fit).to_string(),
            "0/1 nodes are available: 1 Too many pods. preemption: not eligible due to preemptionPolicy=Never."
        );
    }
}
