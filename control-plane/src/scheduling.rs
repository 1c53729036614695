//! The scheduler's loop: unbound pods from the pod informer, placement decisions from
//! [`crate::scheduler`], bindings and events through the in-process client. Runs on the
//! leader only, next to the controllers.
//!
//! Pending pods wait in an active queue; a pod that fits nowhere gets a `FailedScheduling` event
//! and its `PodScheduled=False` condition and waits in the unschedulable set until the cluster
//! changes (a node is added or changes, a pod goes away) or a minute has passed.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::controllers::{Change, Ctx, Informer, key_of};
use crate::registry;
use crate::scheduler::{PodInfo, ScheduleError, Scheduler, SchedulerConfig, Snapshot};
use crate::server::internal::PatchType;

/// The scheduler's name in `spec.schedulerName` and in events.
pub const SCHEDULER_NAME: &str = "default-scheduler";
/// Bindings in flight at once.
const MAX_INFLIGHT_BINDINGS: usize = 64;
/// Longest stay in the unschedulable set without a cluster change.
const UNSCHEDULABLE_RETRY: Duration = Duration::from_secs(60);

#[derive(Default)]
struct Queues {
    active: VecDeque<String>,
    queued: HashSet<String>,
    /// Pods that fit nowhere, and when they were last tried.
    unschedulable: HashMap<String, Instant>,
}

struct State {
    snapshot: Snapshot,
    queues: Queues,
}

fn wants_scheduling(pod: &Value) -> bool {
    let s = |p: &str| pod.pointer(p).and_then(Value::as_str).unwrap_or("");
    s("/spec/nodeName").is_empty()
        && pod.pointer("/metadata/deletionTimestamp").is_none()
        && matches!(s("/spec/schedulerName"), "" | SCHEDULER_NAME)
        && pod.pointer("/spec/schedulingGates").and_then(Value::as_array).is_none_or(Vec::is_empty)
        && !matches!(s("/status/phase"), "Succeeded" | "Failed")
}

impl State {
    /// Rebuilds the snapshot from the caches and queues every pod that needs a node (at start,
    /// and after missing changes).
    fn rebuild(&mut self, nodes: &Informer, pods: &Informer) {
        self.snapshot = Snapshot::new();
        for n in nodes.list("", |_| true) {
            let _ = self.snapshot.upsert_node(&n);
        }
        for p in pods.list("", |_| true) {
            let _ = self.snapshot.upsert_pod(&p);
            if wants_scheduling(&p) {
                self.enqueue(key_of(&p));
            }
        }
    }

    fn enqueue(&mut self, key: String) {
        self.queues.unschedulable.remove(&key);
        if self.queues.queued.insert(key.clone()) {
            self.queues.active.push_back(key);
        }
    }

    /// Something changed that may let waiting pods fit.
    fn flush_unschedulable(&mut self) {
        let keys: Vec<String> = self.queues.unschedulable.drain().map(|(k, _)| k).collect();
        for k in keys {
            self.enqueue(k);
        }
    }

    fn on_pod(&mut self, change: &Change) -> bool {
        let key = key_of(change.object());
        match &change.new {
            Some(pod) => {
                if let Err(error) = self.snapshot.upsert_pod(pod) {
                    debug!(%error, pod = %key, "pod not accounted");
                }
                if wants_scheduling(pod) {
                    if !self.snapshot.is_assumed(&key) && !self.queues.unschedulable.contains_key(&key) {
                        self.enqueue(key);
                        return true;
                    }
                    return false;
                }
                // Bound or finished: no longer ours to place.
                self.queues.unschedulable.remove(&key);
                let was_bound = change.old.as_ref().is_some_and(|o| !wants_scheduling(o));
                // A pod finishing frees room.
                let finished = pod
                    .pointer("/status/phase")
                    .and_then(Value::as_str)
                    .is_some_and(|p| p == "Succeeded" || p == "Failed");
                if finished && was_bound {
                    self.flush_unschedulable();
                    return true;
                }
                false
            }
            None => {
                self.snapshot.remove_pod(&key);
                self.queues.unschedulable.remove(&key);
                self.flush_unschedulable();
                true
            }
        }
    }

    fn on_node(&mut self, change: &Change) {
        match &change.new {
            Some(node) => {
                if let Err(error) = self.snapshot.upsert_node(node) {
                    warn!(%error, node = %key_of(node), "node not usable for scheduling");
                }
            }
            None => self.snapshot.remove_node(&key_of(change.object())),
        }
        self.flush_unschedulable();
    }
}

/// Schedules pods until `ctx.cancel` fires.
pub async fn run(ctx: Ctx) {
    let pods = ctx.informers.get(&registry::pods::RESOURCE);
    let nodes = ctx.informers.get(&registry::nodes::RESOURCE);
    let mut pod_rx = pods.subscribe();
    let mut node_rx = nodes.subscribe();
    pods.synced().await;
    nodes.synced().await;
    let state = Arc::new(Mutex::new(State { snapshot: Snapshot::new(), queues: Queues::default() }));
    let wake = Arc::new(Notify::new());
    state.lock().expect("scheduler lock").rebuild(&nodes, &pods);
    wake.notify_one();

    // Keep the snapshot and queues current.
    let feeder = {
        let (state, wake, pods, nodes) = (state.clone(), wake.clone(), pods.clone(), nodes.clone());
        tokio::spawn(async move {
            use tokio::sync::broadcast::error::RecvError;
            loop {
                let lagged = tokio::select! {
                    r = pod_rx.recv() => match r {
                        Ok(c) => { if state.lock().expect("scheduler lock").on_pod(&c) { wake.notify_one(); } false }
                        Err(RecvError::Lagged(_)) => true,
                        Err(RecvError::Closed) => return,
                    },
                    r = node_rx.recv() => match r {
                        Ok(c) => { state.lock().expect("scheduler lock").on_node(&c); wake.notify_one(); false }
                        Err(RecvError::Lagged(_)) => true,
                        Err(RecvError::Closed) => return,
                    },
                };
                if lagged {
                    state.lock().expect("scheduler lock").rebuild(&nodes, &pods);
                    wake.notify_one();
                }
            }
        })
    };
    // Retry pods that waited long enough without a cluster change.
    let retrier = {
        let (state, wake) = (state.clone(), wake.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let mut st = state.lock().expect("scheduler lock");
                let due: Vec<String> = st
                    .queues
                    .unschedulable
                    .iter()
                    .filter(|(_, t)| t.elapsed() >= UNSCHEDULABLE_RETRY)
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in due {
                    st.enqueue(k);
                }
                drop(st);
                wake.notify_one();
            }
        })
    };

    let scheduler = Scheduler::new(SchedulerConfig::default());
    let bindings = Arc::new(Semaphore::new(MAX_INFLIGHT_BINDINGS));
    loop {
        let next = state.lock().expect("scheduler lock").queues.active.pop_front();
        let Some(key) = next else {
            tokio::select! {
                () = wake.notified() => continue,
                () = ctx.cancel.cancelled() => break,
            }
        };
        state.lock().expect("scheduler lock").queues.queued.remove(&key);
        let Some(pod) = pods.get_key(&key) else { continue };
        if !wants_scheduling(&pod) {
            continue;
        }
        let info = match PodInfo::from_json(&pod) {
            Ok(i) => i,
            Err(error) => {
                warn!(%error, pod = %key, "pod cannot be scheduled");
                continue;
            }
        };
        let decision = {
            let mut st = state.lock().expect("scheduler lock");
            match scheduler.schedule(&info, &st.snapshot) {
                Ok(r) => match st.snapshot.assume(&info, &r.node) {
                    Ok(()) => Ok(r.node),
                    Err(e) => Err(e.to_string()),
                },
                Err(ScheduleError::InvalidPod(e)) => Err(e),
                Err(e) => {
                    st.queues.unschedulable.insert(key.clone(), Instant::now());
                    Err(e.to_string())
                }
            }
        };
        match decision {
            Ok(node) => {
                let permit = tokio::select! {
                    p = bindings.clone().acquire_owned() => p.expect("semaphore open"),
                    () = ctx.cancel.cancelled() => break,
                };
                let (ctx, state, wake, pod) = (ctx.clone(), state.clone(), wake.clone(), pod.clone());
                tokio::spawn(async move {
                    bind(&ctx, &pod, &key, &node, &state, &wake).await;
                    drop(permit);
                });
            }
            Err(message) => {
                let ctx = ctx.clone();
                tokio::spawn(async move { record_unschedulable(&ctx, &pod, &message).await });
            }
        }
    }
    feeder.abort();
    retrier.abort();
}

async fn bind(ctx: &Ctx, pod: &Value, key: &str, node: &str, state: &Mutex<State>, wake: &Notify) {
    let ns = pod.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("");
    let name = pod.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
    match ctx.client.bind(&registry::pods::RESOURCE, ns, name, node).await {
        Ok(bound) => {
            ctx.events
                .record(
                    &bound,
                    "Pod",
                    "v1",
                    "Normal",
                    "Scheduled",
                    &format!("Successfully assigned {ns}/{name} to {node}"),
                )
                .await;
        }
        Err(error) => {
            // Forget the placement; a pod that still needs a node goes back in line.
            let mut st = state.lock().expect("scheduler lock");
            st.snapshot.remove_pod(key);
            if error.code != 404 && error.code != 409 {
                warn!(%error, pod = %key, node, "binding failed");
            }
            if error.code != 404 {
                st.enqueue(key.to_string());
                wake.notify_one();
            }
        }
    }
}

async fn record_unschedulable(ctx: &Ctx, pod: &Value, message: &str) {
    ctx.events.record(pod, "Pod", "v1", "Warning", "FailedScheduling", message).await;
    let ns = pod.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("");
    let name = pod.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
    let already = pod.pointer("/status/conditions").and_then(Value::as_array).is_some_and(|cs| {
        cs.iter().any(|c| c["type"] == "PodScheduled" && c["status"] == "False" && c["message"] == message)
    });
    if already {
        return;
    }
    let patch = json!({"status": {"conditions": [{
        "type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message,
        "lastProbeTime": null,
        "lastTransitionTime": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    }]}});
    if let Err(error) = ctx.client.patch(&registry::pods::RESOURCE, ns, name, PatchType::Strategic, &patch, true).await
        && error.code != 404
    {
        debug!(%error, pod = %format!("{ns}/{name}"), "PodScheduled condition not set");
    }
}
