//! Taint-based eviction (upstream's taint-eviction controller) and the clean-up of pods left
//! terminating on Nodes that cannot finish them; only the nodelifecycle controller calls this.
//!
//! A pod bound to a Node with NoExecute taints is deleted (after a `DisruptionTarget` condition
//! and a `TaintManagerEviction` event): at once when some taint has no matching toleration, else
//! when the earliest `tolerationSeconds` of a matching toleration has passed since that taint's
//! `timeAdded` (or since this controller first saw it, for taints without one). Tolerations
//! without `tolerationSeconds` tolerate forever. Timing from `timeAdded` rather than from when the
//! controller noticed the taint (upstream) keeps evictions on time across restarts.
//!
//! The deletion is graceful, and a kubelet that stopped posting status will never finish it. So,
//! like upstream's pod GC does for `node.kubernetes.io/out-of-service` Nodes (at once), pods still
//! terminating on a Node that is Ready Unknown with the unreachable NoExecute taint are marked
//! Failed and force-deleted (grace 0) once their deletion grace period has run out. (Upstream
//! leaves those pods terminating until the Node comes back or is deleted.)

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tracing::{debug, info};

use super::{
    NO_EXECUTE, NodeLifecycleController, TAINT_OUT_OF_SERVICE, TAINT_UNREACHABLE, condition, has_taint, key_of,
    no_execute_taints, now_rfc3339, parse_time, ready_status, s, taints,
};
use crate::controllers::{Action, Change, Ctx};
use crate::registry::{nodes, pods};
use crate::server::errors::ApiError;
use crate::server::internal::{DeleteParams, PatchType};

/// A NoExecute taint without `timeAdded`, by Node: key, value, effect.
type TaintId = (String, String, String, String);

#[derive(Default)]
pub(super) struct State {
    /// Pods whose eviction is pending (for the cancellation event).
    scheduled: HashSet<String>,
    /// When taints without `timeAdded` were first seen.
    first_seen: HashMap<TaintId, DateTime<Utc>>,
}

fn taint_id(node: &str, taint: &Value) -> TaintId {
    (node.to_string(), s(taint, "key").to_string(), s(taint, "value").to_string(), s(taint, "effect").to_string())
}

impl State {
    /// Drops first-seen times of taints that are gone.
    pub(super) fn forget_taints(&mut self, nodes: &[Arc<Value>]) {
        if self.first_seen.is_empty() {
            return;
        }
        let live: HashSet<TaintId> = nodes
            .iter()
            .flat_map(|n| {
                let name = key_of(n);
                no_execute_taints(n).into_iter().map(move |t| taint_id(&name, t)).collect::<Vec<_>>()
            })
            .collect();
        self.first_seen.retain(|id, _| live.contains(id));
    }
}

/// Whether toleration `tol` tolerates `taint`.
fn tolerates(tol: &Value, taint: &Value) -> bool {
    let effect = s(tol, "effect");
    if !effect.is_empty() && effect != s(taint, "effect") {
        return false;
    }
    let key = s(tol, "key");
    if !key.is_empty() && key != s(taint, "key") {
        return false;
    }
    match s(tol, "operator") {
        "Exists" => true,
        "" | "Equal" => s(tol, "value") == s(taint, "value"),
        _ => false,
    }
}

/// When a pod with `tolerations` must leave a Node with NoExecute `taints`: `None` never,
/// `DateTime::MIN_UTC` at once. `since` gives the time each taint was added.
fn eviction_due(
    tolerations: &[Value],
    taints: &[&Value],
    mut since: impl FnMut(&Value) -> DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let mut due: Option<DateTime<Utc>> = None;
    for taint in taints {
        let Some(tol) = tolerations.iter().find(|t| tolerates(t, taint)) else {
            return Some(DateTime::<Utc>::MIN_UTC);
        };
        if let Some(secs) = tol.get("tolerationSeconds").and_then(Value::as_i64) {
            let at = since(taint) + chrono::Duration::seconds(secs.max(0));
            due = Some(due.map_or(at, |d| d.min(at)));
        }
    }
    due
}

fn node_name(pod: &Value) -> &str {
    pod.pointer("/spec/nodeName").and_then(Value::as_str).unwrap_or("")
}

/// Keys of the pods bound to `node`.
pub(super) fn pods_on(ctx: &Ctx, node: &str) -> Vec<String> {
    ctx.informers.get(&pods::RESOURCE).list("", |p| node_name(p) == node).iter().map(|p| key_of(p)).collect()
}

/// Pod changes worth a look: pods on Nodes with NoExecute (or out-of-service) taints.
pub(super) fn pod_keys(ctx: &Ctx, change: &Change) -> Vec<String> {
    let pod = change.object();
    let name = node_name(pod);
    if name.is_empty() {
        return Vec::new();
    }
    let Some(node) = ctx.informers.get(&nodes::RESOURCE).get_key(name) else { return Vec::new() };
    if taints(&node).iter().any(|t| s(t, "effect") == NO_EXECUTE || s(t, "key") == TAINT_OUT_OF_SERVICE) {
        vec![key_of(pod)]
    } else {
        Vec::new()
    }
}

/// Evicts, schedules the eviction of, or cleans up one pod.
pub(super) async fn sync_pod(ctl: &NodeLifecycleController, ctx: &Ctx, key: &str) -> Result<Action, ApiError> {
    let Some(pod) = ctx.informers.get(&pods::RESOURCE).get_key(key) else {
        ctl.lock(ctx).evictions.scheduled.remove(key);
        return Ok(Action::Done);
    };
    let node =
        Some(node_name(&pod)).filter(|n| !n.is_empty()).and_then(|n| ctx.informers.get(&nodes::RESOURCE).get_key(n));
    let Some(node) = node else {
        cancel(ctl, ctx, &pod).await;
        return Ok(Action::Done);
    };
    if pod.pointer("/metadata/deletionTimestamp").is_some() {
        ctl.lock(ctx).evictions.scheduled.remove(key);
        return clean_up_terminating(ctx, &pod, &node).await;
    }
    let taints = no_execute_taints(&node);
    if taints.is_empty() {
        cancel(ctl, ctx, &pod).await;
        return Ok(Action::Done);
    }
    let now = Utc::now();
    let tolerations = pod.pointer("/spec/tolerations").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
    let due = {
        let mut st = ctl.lock(ctx);
        let node_name = key_of(&node);
        eviction_due(tolerations, &taints, |t| match t.get("timeAdded").and_then(Value::as_str).and_then(parse_time) {
            Some(at) => at,
            None => *st.evictions.first_seen.entry(taint_id(&node_name, t)).or_insert(now),
        })
    };
    match due {
        None => {
            cancel(ctl, ctx, &pod).await;
            Ok(Action::Done)
        }
        Some(at) if at <= now => {
            ctl.lock(ctx).evictions.scheduled.remove(key);
            evict(ctx, &pod).await
        }
        Some(at) => {
            ctl.lock(ctx).evictions.scheduled.insert(key.to_string());
            let wait = (at - now).to_std().unwrap_or_default() + Duration::from_millis(10);
            debug!(pod = %key, ?wait, "eviction scheduled");
            Ok(Action::RequeueAfter(wait))
        }
    }
}

/// Forgets a pending eviction, with an event when there was one.
async fn cancel(ctl: &NodeLifecycleController, ctx: &Ctx, pod: &Value) {
    let key = key_of(pod);
    if ctl.lock(ctx).evictions.scheduled.remove(&key) {
        info!(pod = %key, "eviction cancelled");
        let message = format!("Cancelling deletion of Pod {key}");
        ctx.events.record(pod, "Pod", "v1", "Normal", "TaintManagerEviction", &message).await;
    }
}

fn has_true_condition(pod: &Value, kind: &str) -> bool {
    condition(pod, kind).is_some_and(|c| s(c, "status") == "True")
}

async fn evict(ctx: &Ctx, pod: &Value) -> Result<Action, ApiError> {
    let key = key_of(pod);
    let (ns, name) = key.split_once('/').unwrap_or(("", &key));
    info!(pod = %key, node = %node_name(pod), "deleting pod for a NoExecute taint");
    let message = format!("Marking for deletion Pod {key}");
    ctx.events.record(pod, "Pod", "v1", "Normal", "TaintManagerEviction", &message).await;
    if !has_true_condition(pod, "DisruptionTarget") {
        let patch = json!({"status": {"conditions": [{
            "type": "DisruptionTarget", "status": "True", "reason": "DeletionByTaintManager",
            "message": "Taint manager: deleting due to NoExecute taint", "lastTransitionTime": now_rfc3339(),
        }]}});
        match ctx.client.patch(&pods::RESOURCE, ns, name, PatchType::Strategic, &patch, true).await {
            Ok(_) => {}
            Err(e) if e.code == 404 => return Ok(Action::Done),
            Err(e) => return Err(e),
        }
    }
    let uid = pod.pointer("/metadata/uid").and_then(Value::as_str).map(str::to_string);
    delete(ctx, ns, name, DeleteParams { uid, ..Default::default() }).await
}

async fn delete(ctx: &Ctx, ns: &str, name: &str, params: DeleteParams) -> Result<Action, ApiError> {
    match ctx.client.delete(&pods::RESOURCE, ns, name, &params).await {
        // 409: the uid precondition failed, a new pod took the name.
        Ok(_) => Ok(Action::Done),
        Err(e) if e.code == 404 || e.code == 409 => Ok(Action::Done),
        Err(e) => Err(e),
    }
}

/// Force-deletes a terminating pod whose Node cannot finish it: at once on an out-of-service Node
/// that is not ready, after the deletion grace period on an unreachable one.
async fn clean_up_terminating(ctx: &Ctx, pod: &Value, node: &Value) -> Result<Action, ApiError> {
    let ready = ready_status(node);
    let out_of_service = ready != Some("True") && taints(node).iter().any(|t| s(t, "key") == TAINT_OUT_OF_SERVICE);
    let unreachable = ready == Some("Unknown") && has_taint(node, TAINT_UNREACHABLE, NO_EXECUTE);
    if !out_of_service && !unreachable {
        return Ok(Action::Done);
    }
    if !out_of_service
        && let Some(deadline) = pod.pointer("/metadata/deletionTimestamp").and_then(Value::as_str).and_then(parse_time)
    {
        let now = Utc::now();
        if now < deadline {
            return Ok(Action::RequeueAfter((deadline - now).to_std().unwrap_or_default() + Duration::from_millis(10)));
        }
    }
    let key = key_of(pod);
    let (ns, name) = key.split_once('/').unwrap_or(("", &key));
    info!(pod = %key, node = %node_name(pod), out_of_service, "force-deleting pod terminating on a lost node");
    let phase = pod.pointer("/status/phase").and_then(Value::as_str).unwrap_or("");
    if phase != "Succeeded" && phase != "Failed" {
        let patch = json!({"status": {"phase": "Failed"}});
        match ctx.client.patch(&pods::RESOURCE, ns, name, PatchType::Merge, &patch, true).await {
            Ok(_) => {}
            Err(e) if e.code == 404 => return Ok(Action::Done),
            Err(e) => return Err(e),
        }
    }
    let uid = pod.pointer("/metadata/uid").and_then(Value::as_str).map(str::to_string);
    delete(ctx, ns, name, DeleteParams { grace_period_seconds: Some(0), uid, ..Default::default() }).await
}

/// Sets the Ready condition of every pod on `node` to False, with a `NodeNotReady` warning each.
pub(super) async fn mark_pods_not_ready(ctx: &Ctx, node: &str) -> Result<(), ApiError> {
    let mut failed = None;
    for pod in ctx.informers.get(&pods::RESOURCE).list("", |p| node_name(p) == node) {
        let Some(ready) = condition(&pod, "Ready") else { continue };
        if s(ready, "status") == "False" {
            continue;
        }
        let key = key_of(&pod);
        let (ns, name) = key.split_once('/').unwrap_or(("", &key));
        let patch = json!({"status": {"conditions": [
            {"type": "Ready", "status": "False", "lastTransitionTime": now_rfc3339()}
        ]}});
        match ctx.client.patch(&pods::RESOURCE, ns, name, PatchType::Strategic, &patch, true).await {
            Ok(_) => {
                debug!(pod = %key, %node, "pod marked not ready");
                ctx.events.record(&pod, "Pod", "v1", "Warning", "NodeNotReady", "Node is not ready").await;
            }
            Err(e) if e.code == 404 => {}
            Err(e) => failed = Some(e),
        }
    }
    failed.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).expect("valid time")
    }

    #[test]
    fn tolerations_match_taints_like_upstream() {
        let taint = json!({"key": "k", "value": "v", "effect": "NoExecute"});
        assert!(tolerates(&json!({"operator": "Exists"}), &taint));
        assert!(tolerates(&json!({"key": "k", "operator": "Exists", "effect": "NoExecute"}), &taint));
        assert!(tolerates(&json!({"key": "k", "value": "v"}), &taint));
        assert!(!tolerates(&json!({"key": "k", "value": "w"}), &taint));
        assert!(!tolerates(&json!({"key": "k", "operator": "Exists", "effect": "NoSchedule"}), &taint));
        assert!(!tolerates(&json!({"key": "j", "operator": "Exists"}), &taint));
    }

    #[test]
    fn eviction_time_is_the_earliest_toleration_expiry() {
        let unreachable = json!({"key": TAINT_UNREACHABLE, "effect": "NoExecute"});
        let custom = json!({"key": "example.com/x", "effect": "NoExecute"});
        let tol = |key: &str, secs: Option<i64>| {
            let mut t = json!({"key": key, "operator": "Exists", "effect": "NoExecute"});
            if let Some(s) = secs {
                t["tolerationSeconds"] = json!(s);
            }
            t
        };
        let since = |t: &Value| if s(t, "key") == TAINT_UNREACHABLE { at(1000) } else { at(2000) };
        // Not tolerated: at once.
        assert_eq!(
            eviction_due(&[tol(TAINT_UNREACHABLE, Some(5))], &[&unreachable, &custom], since),
            Some(DateTime::<Utc>::MIN_UTC)
        );
        // Tolerated for a while.
        assert_eq!(eviction_due(&[tol(TAINT_UNREACHABLE, Some(5))], &[&unreachable], since), Some(at(1005)));
        // The earliest of several.
        let both = [tol(TAINT_UNREACHABLE, Some(300)), tol("example.com/x", Some(1))];
        assert_eq!(eviction_due(&both, &[&unreachable, &custom], since), Some(at(1300).min(at(2001))));
        // Forever.
        assert_eq!(eviction_due(&[tol(TAINT_UNREACHABLE, None)], &[&unreachable], since), None);
        // Negative seconds: at the taint's time.
        assert_eq!(eviction_due(&[tol(TAINT_UNREACHABLE, Some(-3))], &[&unreachable], since), Some(at(1000)));
    }
}
