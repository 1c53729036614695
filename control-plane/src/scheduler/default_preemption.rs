//! DefaultPreemption (post-filter): when no node fits, looks for nodes where evicting
//! lower-priority pods would make room, and otherwise explains why preemption cannot help
//! (`preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling.`).
//!
//! Only nodes rejected with [`Code::Unschedulable`] are tried. On each, all lower-priority pods
//! are removed; if the pod then fits, victims are re-added from the most important down and
//! those that must stay evicted are the victims. PodDisruptionBudgets are not consulted.

use std::cmp::Reverse;
use std::sync::Arc;

use rand::Rng;

use super::fit_error::{NodeStatuses, PreemptionCandidate, render};
use super::snapshot::PodRecord;
use super::{Code, CycleState, Filter, NodeInfo, PodInfo, Rejection, Snapshot, run_filters};

pub const NAME: &str = "DefaultPreemption";

pub const REASON_NOT_HELPFUL: &str = "Preemption is not helpful for scheduling";
pub const REASON_NO_VICTIMS: &str = "No preemption victims found for incoming pod";

const MIN_CANDIDATE_NODES_PERCENTAGE: usize = 10;
const MIN_CANDIDATE_NODES_ABSOLUTE: usize = 100;

/// The post-filter result: a message (without the `preemption: ` prefix) when preemption
/// cannot help, or the chosen candidate.
pub struct Outcome {
    pub message: Option<String>,
    pub candidate: Option<PreemptionCandidate>,
}

impl Outcome {
    fn message(m: impl Into<String>) -> Self {
        Outcome { message: Some(m.into()), candidate: None }
    }
}

pub fn post_filter(
    rng: &mut impl Rng,
    pod: &PodInfo,
    snap: &Snapshot,
    state: &CycleState,
    filters: &[&dyn Filter],
    statuses: &NodeStatuses,
) -> Outcome {
    let nodes = snap.nodes();
    let mut codes: Vec<Option<Code>> = vec![None; nodes.len()];
    for (i, r) in &statuses.explicit {
        codes[*i] = Some(r.code);
    }
    let absent = statuses.absent.as_ref().map_or(Code::UnschedulableAndUnresolvable, |r| r.code);
    let code_of = |i: usize| codes[i].unwrap_or(absent);

    if pod.preemption_never {
        return Outcome::message("not eligible due to preemptionPolicy=Never.");
    }
    if let Some(i) = snap.node_index(&pod.nominated_node_name)
        && code_of(i) != Code::UnschedulableAndUnresolvable
        && nodes[i].pods.iter().any(|p| p.priority < pod.priority && p.preempted)
    {
        return Outcome::message("not eligible due to a terminating pod on the nominated node.");
    }

    let potential: Vec<usize> = (0..nodes.len()).filter(|&i| code_of(i) == Code::Unschedulable).collect();
    let mut dry_run = NodeStatuses::default();
    let mut candidates: Vec<(usize, Vec<Arc<PodRecord>>)> = Vec::new();
    if !potential.is_empty() {
        let wanted = (potential.len() * MIN_CANDIDATE_NODES_PERCENTAGE / 100)
            .max(MIN_CANDIDATE_NODES_ABSOLUTE)
            .min(potential.len());
        let offset = rng.random_range(0..potential.len());
        for k in 0..potential.len() {
            let i = potential[(offset + k) % potential.len()];
            match select_victims(pod, &nodes[i], state, filters) {
                Ok(victims) => {
                    candidates.push((i, victims));
                    if candidates.len() >= wanted {
                        break;
                    }
                }
                Err(rejection) => dry_run.explicit.push((i, rejection)),
            }
        }
    }
    if candidates.is_empty() {
        dry_run.absent = Some(Rejection::unresolvable(NAME, REASON_NOT_HELPFUL));
        return Outcome::message(render(nodes.len(), None, &dry_run.histogram(nodes.len())));
    }

    // Fewest/least important victims first: lowest top priority, lowest priority sum, fewest
    // pods, then the latest start among the top-priority victims; ties keep search order.
    let (node, victims) = candidates
        .into_iter()
        .min_by_key(|(_, victims)| {
            let top = victims[0].priority;
            let sum: i64 = victims.iter().map(|v| i64::from(v.priority) + (1i64 << 31)).sum();
            let earliest_top = victims
                .iter()
                .filter(|v| v.priority == top)
                .map(|v| start_key(v))
                .min()
                .map(|(unstarted, at)| (unstarted, at.to_string()));
            (top, sum, victims.len(), Reverse(earliest_top))
        })
        .expect("candidates is not empty");
    Outcome {
        message: None,
        candidate: Some(PreemptionCandidate {
            node: nodes[node].name.clone(),
            victims: victims.iter().map(|v| v.key.clone()).collect(),
        }),
    }
}

/// Start time ordering key: pods that have not started count as starting now (latest).
fn start_key(p: &PodRecord) -> (bool, &str) {
    (p.start_time.is_none(), p.start_time.as_deref().unwrap_or_default())
}

/// Higher priority first, then the longer-running pod.
fn more_important_first(a: &Arc<PodRecord>, b: &Arc<PodRecord>) -> std::cmp::Ordering {
    b.priority.cmp(&a.priority).then_with(|| start_key(a).cmp(&start_key(b)))
}

/// The minimal set of lower-priority pods to evict from `node` so the pod fits.
fn select_victims(
    pod: &PodInfo,
    node: &NodeInfo,
    state: &CycleState,
    filters: &[&dyn Filter],
) -> Result<Vec<Arc<PodRecord>>, Rejection> {
    let mut potential: Vec<Arc<PodRecord>> = node.pods.iter().filter(|p| p.priority < pod.priority).cloned().collect();
    if potential.is_empty() {
        return Err(Rejection::unresolvable(NAME, REASON_NO_VICTIMS));
    }
    let mut node = node.clone();
    let mut state = state.clone();
    let apply = |node: &mut NodeInfo, state: &mut CycleState, p: &Arc<PodRecord>, delta: i64| {
        if delta > 0 {
            node.add_pod(Arc::clone(p));
        } else {
            node.remove_pod(&p.key);
        }
        if let Some(spread) = &mut state.spread_filter {
            spread.update_with_pod(pod, p, node, delta);
        }
    };
    for p in &potential {
        apply(&mut node, &mut state, p, -1);
    }
    run_filters(filters, &state, pod, &node)?;
    potential.sort_by(more_important_first);
    let mut victims = Vec::new();
    for p in potential {
        apply(&mut node, &mut state, &p, 1);
        if run_filters(filters, &state, pod, &node).is_err() {
            apply(&mut node, &mut state, &p, -1);
            victims.push(p);
        }
    }
    if victims.is_empty() {
        return Err(Rejection::unresolvable(NAME, "expected at least one victim pod on the node"));
    }
    Ok(victims)
}
