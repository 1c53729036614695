//! The scheduler's algorithm: Kubernetes' default profile (filters, scores with their weights,
//! node sampling, random tie-break, preemption diagnosis) as a pure, synchronous core over a
//! [`Snapshot`] of nodes and the pods bound to them.
//!
//! Callers (the scheduler loop in the control plane) own the snapshot and keep it current from
//! informer events ([`Snapshot::upsert_node`], [`Snapshot::upsert_pod`], …), call
//! [`Scheduler::schedule`] for each pending pod, [`Snapshot::assume`] the result before binding,
//! and on [`ScheduleError::Unschedulable`] write the [`FitError`] message into the pod's
//! `PodScheduled` condition (evicting [`FitError::preemption`] victims when set).
//!
//! One file per plugin, each with `pub const NAME` and its [`Filter`]/[`Score`] impls.
//! Not implemented from the default profile: NodePorts, volume plugins, InterPodAffinity,
//! ImageLocality, DynamicResources, nominated pods of other preemptors.

mod balanced_allocation;
mod default_preemption;
mod fit_error;
mod node_affinity;
mod node_name;
mod node_resources_fit;
mod node_unschedulable;
mod pod_info;
mod pod_topology_spread;
mod resources;
mod selectors;
mod snapshot;
mod taint_toleration;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

pub use fit_error::{FitError, PreemptionCandidate, ScheduleError};
pub use pod_info::PodInfo;
pub use pod_topology_spread::SpreadConstraint;
pub use resources::{PodRequests, Resources};
pub use selectors::{LabelSelector, Labels, NodeSelectorTerm};
pub use snapshot::{NodeInfo, PodRecord, Snapshot, SnapshotError};
pub use taint_toleration::{Taint, Toleration};

use fit_error::NodeStatuses;

/// The highest score a plugin gives a node (before weighting).
pub const MAX_NODE_SCORE: i64 = 100;

const MIN_FEASIBLE_NODES_TO_FIND: usize = 100;
const MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND: usize = 5;

/// Filter plugins in the default profile's order; a node's evaluation stops at the first rejection.
const FILTERS: [&dyn Filter; 6] = [
    &node_unschedulable::NodeUnschedulable,
    &node_name::NodeName,
    &taint_toleration::TaintToleration,
    &node_affinity::NodeAffinity,
    &node_resources_fit::NodeResourcesFit,
    &pod_topology_spread::PodTopologySpread,
];

/// Score plugins with the default profile's weights.
const SCORERS: [(&dyn Score, i64); 5] = [
    (&taint_toleration::TaintToleration, 3),
    (&node_affinity::NodeAffinity, 2),
    (&node_resources_fit::NodeResourcesFit, 1),
    (&pod_topology_spread::PodTopologySpread, 2),
    (&balanced_allocation::BalancedAllocation, 1),
];

/// How a rejection can be resolved: `Unschedulable` nodes may fit after preemption.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    Unschedulable,
    UnschedulableAndUnresolvable,
}

/// A plugin's refusal of a node (or, at pre-filter, of every node).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub plugin: &'static str,
    pub code: Code,
    pub reasons: Reasons,
}

/// One or more reasons; a single reason needs no allocation, which matters when thousands of
/// nodes are rejected in one attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reasons {
    One(Cow<'static, str>),
    Many(Vec<Cow<'static, str>>),
}

impl std::ops::Deref for Reasons {
    type Target = [Cow<'static, str>];

    fn deref(&self) -> &Self::Target {
        match self {
            Reasons::One(r) => std::slice::from_ref(r),
            Reasons::Many(v) => v,
        }
    }
}

impl<T> PartialEq<Vec<T>> for Reasons
where
    Cow<'static, str>: PartialEq<T>,
{
    fn eq(&self, other: &Vec<T>) -> bool {
        self[..] == other[..]
    }
}

impl Rejection {
    pub fn unschedulable(plugin: &'static str, reason: &'static str) -> Self {
        Rejection { plugin, code: Code::Unschedulable, reasons: Reasons::One(Cow::Borrowed(reason)) }
    }

    pub fn unresolvable(plugin: &'static str, reason: &'static str) -> Self {
        Rejection { plugin, code: Code::UnschedulableAndUnresolvable, reasons: Reasons::One(Cow::Borrowed(reason)) }
    }

    /// The status message: reasons joined with ", ".
    pub fn message(&self) -> String {
        self.reasons.join(", ")
    }
}

/// Outcome of a filter plugin's pre-filter step.
pub enum PreFilter {
    /// The plugin has nothing to check for this pod.
    Skip,
    /// Run the filter on every node.
    Run,
    /// Run the filter, and only on these nodes.
    Nodes(BTreeSet<String>),
    /// No node can fit.
    Reject(Rejection),
}

/// Per-attempt state computed by pre-filter/pre-score steps.
#[derive(Clone, Debug, Default)]
pub struct CycleState {
    spread_filter: Option<pod_topology_spread::FilterState>,
    spread_score: Option<pod_topology_spread::ScoreState>,
}

pub trait Filter: Sync {
    fn name(&self) -> &'static str;

    fn pre_filter(&self, _pod: &PodInfo, _snap: &Snapshot, _state: &mut CycleState) -> PreFilter {
        PreFilter::Run
    }

    fn filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<(), Rejection>;
}

pub trait Score: Sync {
    fn name(&self) -> &'static str;

    /// Prepares state from the feasible nodes; `false` skips the plugin for this pod.
    fn pre_score(&self, _pod: &PodInfo, _snap: &Snapshot, _feasible: &[&NodeInfo], _state: &mut CycleState) -> bool {
        true
    }

    fn score(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> i64;

    /// Maps raw scores onto 0..=[`MAX_NODE_SCORE`].
    fn normalize(&self, _state: &CycleState, _feasible: &[&NodeInfo], _scores: &mut [i64]) {}
}

/// Kubernetes `DefaultNormalizeScore`: scale to `max_priority` by the highest score, reversed
/// (fewer is better) when asked.
pub fn default_normalize(max_priority: i64, reverse: bool, scores: &mut [i64]) {
    let max = scores.iter().copied().max().unwrap_or(0).max(0);
    if max == 0 {
        if reverse {
            scores.fill(max_priority);
        }
        return;
    }
    for s in scores {
        *s = max_priority * *s / max;
        if reverse {
            *s = max_priority - *s;
        }
    }
}

/// How many feasible nodes to find before scoring (`percentageOfNodesToScore`; 0 = adaptive:
/// 50% minus 1% per 125 nodes, at least 5%, and never fewer than 100 nodes).
pub fn num_feasible_nodes_to_find(percentage_of_nodes_to_score: u32, num_all_nodes: usize) -> usize {
    if num_all_nodes < MIN_FEASIBLE_NODES_TO_FIND {
        return num_all_nodes;
    }
    let percentage = match percentage_of_nodes_to_score {
        0 => 50usize.saturating_sub(num_all_nodes / 125).max(MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND),
        p => p as usize,
    };
    (num_all_nodes * percentage / 100).max(MIN_FEASIBLE_NODES_TO_FIND)
}

fn run_filters(filters: &[&dyn Filter], state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<(), Rejection> {
    filters.iter().try_for_each(|f| f.filter(state, pod, node))
}

#[derive(Clone, Debug, Default)]
pub struct SchedulerConfig {
    /// `percentageOfNodesToScore`; 0 selects Kubernetes' adaptive default.
    pub percentage_of_nodes_to_score: u32,
    /// Seed for tie-breaking and preemption offsets (tests); `None` seeds from the OS.
    pub seed: Option<u64>,
}

/// A placement decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduleResult {
    pub node: String,
    /// Nodes run through the filters (feasible + rejected).
    pub evaluated_nodes: usize,
    pub feasible_nodes: usize,
}

/// The scheduling algorithm. Shareable (`&self`); the only state is where the next search
/// starts and the tie-break random source.
pub struct Scheduler {
    config: SchedulerConfig,
    next_start_node_index: AtomicUsize,
    rng: Mutex<StdRng>,
}

impl Default for Scheduler {
    fn default() -> Self {
        Scheduler::new(SchedulerConfig::default())
    }
}

impl Scheduler {
    pub fn new(config: SchedulerConfig) -> Self {
        let rng = match config.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        Scheduler { config, next_start_node_index: AtomicUsize::new(0), rng: Mutex::new(rng) }
    }

    /// Where the next search starts (index into [`Snapshot::nodes`]).
    pub fn next_start_node_index(&self) -> usize {
        self.next_start_node_index.load(Ordering::Relaxed)
    }

    /// Parses the Pod object and picks a node for it.
    pub fn schedule_one(&self, pod: &Value, snap: &Snapshot) -> Result<String, ScheduleError> {
        let info = PodInfo::from_json(pod)?;
        self.schedule(&info, snap).map(|r| r.node)
    }

    /// Picks a node: pre-filters, filters nodes from a rotating offset until enough feasible
    /// ones are found, scores them and takes the best (random among equals). On failure runs
    /// the preemption analysis and returns the Kubernetes-worded [`FitError`].
    pub fn schedule(&self, pod: &PodInfo, snap: &Snapshot) -> Result<ScheduleResult, ScheduleError> {
        let all = snap.nodes();
        if all.is_empty() {
            return Err(ScheduleError::NoNodesAvailable);
        }
        let mut state = CycleState::default();
        let mut filters: Vec<&dyn Filter> = Vec::with_capacity(FILTERS.len());
        let mut pinned: Option<BTreeSet<String>> = None;
        let mut pinning_plugins: Vec<&'static str> = Vec::new();
        for f in FILTERS {
            match f.pre_filter(pod, snap, &mut state) {
                PreFilter::Skip => {}
                PreFilter::Run => filters.push(f),
                PreFilter::Nodes(names) => {
                    filters.push(f);
                    pinning_plugins.push(f.name());
                    pinned = Some(match pinned {
                        None => names,
                        Some(prev) => prev.intersection(&names).cloned().collect(),
                    });
                }
                PreFilter::Reject(rejection) => {
                    let msg = rejection.message();
                    let statuses = NodeStatuses { explicit: Vec::new(), absent: Some(rejection) };
                    return Err(self.fit_error(pod, snap, &state, &filters, statuses, Some(msg)));
                }
            }
        }

        // A node nominated by an earlier preemption is tried first.
        if let Some(node) = snap.node(&pod.nominated_node_name)
            && run_filters(&filters, &state, pod, node).is_ok()
        {
            return Ok(ScheduleResult { node: node.name.clone(), evaluated_nodes: 1, feasible_nodes: 1 });
        }

        let mut statuses = NodeStatuses::default();
        let candidates: Option<Vec<usize>> = pinned.map(|names| {
            pinning_plugins.sort_unstable();
            statuses.absent = Some(Rejection {
                plugin: pinning_plugins[0],
                code: Code::UnschedulableAndUnresolvable,
                reasons: Reasons::One(Cow::Owned(format!(
                    "node(s) didn't satisfy plugin(s) [{}]",
                    pinning_plugins.join(" ")
                ))),
            });
            names.iter().filter_map(|n| snap.node_index(n)).collect()
        });
        let n = candidates.as_ref().map_or(all.len(), Vec::len);
        let to_find = num_feasible_nodes_to_find(self.config.percentage_of_nodes_to_score, n);
        let start = self.next_start_node_index.load(Ordering::Relaxed);
        let mut feasible: Vec<usize> = Vec::with_capacity(to_find);
        for i in 0..n {
            let idx = match &candidates {
                Some(c) => c[(start + i) % n],
                None => (start + i) % n,
            };
            match run_filters(&filters, &state, pod, &all[idx]) {
                Ok(()) => {
                    feasible.push(idx);
                    if feasible.len() >= to_find {
                        break;
                    }
                }
                Err(rejection) => statuses.explicit.push((idx, rejection)),
            }
        }
        let evaluated_nodes = feasible.len() + statuses.explicit.len();
        self.next_start_node_index.store((start + evaluated_nodes) % all.len(), Ordering::Relaxed);

        let best = match feasible.len() {
            0 => return Err(self.fit_error(pod, snap, &state, &filters, statuses, None)),
            1 => feasible[0],
            _ => {
                let nodes: Vec<&NodeInfo> = feasible.iter().map(|&i| &all[i]).collect();
                let totals = prioritize(pod, snap, &nodes, &mut state);
                feasible[self.select_host(&totals)]
            }
        };
        Ok(ScheduleResult { node: all[best].name.clone(), evaluated_nodes, feasible_nodes: feasible.len() })
    }

    /// The highest total; ties broken uniformly at random (reservoir sampling).
    fn select_host(&self, totals: &[i64]) -> usize {
        let mut rng = self.rng.lock().unwrap_or_else(PoisonError::into_inner);
        let mut best = 0;
        let mut ties = 0u32;
        for (i, &t) in totals.iter().enumerate() {
            if t > totals[best] {
                best = i;
                ties = 1;
            } else if t == totals[best] {
                ties += 1;
                if rng.random_range(0..ties) == 0 {
                    best = i;
                }
            }
        }
        best
    }

    fn fit_error(
        &self,
        pod: &PodInfo,
        snap: &Snapshot,
        state: &CycleState,
        filters: &[&dyn Filter],
        statuses: NodeStatuses,
        pre_filter_msg: Option<String>,
    ) -> ScheduleError {
        let outcome = {
            let mut rng = self.rng.lock().unwrap_or_else(PoisonError::into_inner);
            default_preemption::post_filter(&mut *rng, pod, snap, state, filters, &statuses)
        };
        ScheduleError::from(FitError {
            num_all_nodes: snap.len(),
            pre_filter_msg,
            reasons: statuses.histogram(snap.len()),
            post_filter_msg: outcome.message.map(|m| format!("preemption: {m}")),
            unschedulable_plugins: statuses.plugins(),
            preemption: outcome.candidate,
        })
    }
}

/// Runs every score plugin over the feasible nodes and sums the weighted, normalized scores.
fn prioritize(pod: &PodInfo, snap: &Snapshot, nodes: &[&NodeInfo], state: &mut CycleState) -> Vec<i64> {
    let mut totals = vec![0i64; nodes.len()];
    let mut scores = vec![0i64; nodes.len()];
    for (plugin, weight) in SCORERS {
        if !plugin.pre_score(pod, snap, nodes, state) {
            continue;
        }
        for (score, node) in scores.iter_mut().zip(nodes) {
            *score = plugin.score(state, pod, node);
        }
        plugin.normalize(state, nodes, &mut scores);
        for (total, score) in totals.iter_mut().zip(&scores) {
            *total += score * weight;
        }
    }
    totals
}
