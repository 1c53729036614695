//! The deployment controller: rolls Deployments out through ReplicaSets, one per pod template,
//! as Kubernetes' `pkg/controller/deployment` does, so that `kubectl rollout
//! status|history|undo|pause|resume` and `kubectl scale` behave as on Kubernetes.
//!
//! Each sync claims the Deployment's ReplicaSets (adopting matching orphans), finds the one whose
//! template is the Deployment's (`pod-template-hash` aside) or creates it, then either scales
//! (paused, or `spec.replicas` changed: proportionally across ReplicaSets) or rolls out
//! (RollingUpdate within maxSurge/maxUnavailable, or Recreate), cleans up old ReplicaSets beyond
//! `revisionHistoryLimit` and writes status and conditions. `rollout.rs` holds the rollout steps,
//! `util.rs` the arithmetic and annotations, `common.rs` what the replicaset controller shares.

pub mod common;
mod rollout;
pub mod util;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::future::BoxFuture;
use serde_json::{Map, Value, json};

use self::common::{Claimer, controller_name, int_at, is_controlled_by, is_deleting, name, namespace, str_at, uid};
use self::util::{AVAILABLE, MIN_AVAILABLE, MIN_UNAVAILABLE, PAUSED, PROGRESSING, RESUMED, condition, spec_replicas};
use super::{Action, Change, Controller, Ctx, Watch, cache_key};
use crate::registry::{deployments, pods, replicasets};
use crate::selectors::LabelSelector;
use crate::server::errors::ApiError;

pub const NAME: &str = "deployment";
const KIND: &str = "Deployment";

pub struct DeploymentController;

impl Controller for DeploymentController {
    fn name(&self) -> &'static str {
        NAME
    }

    fn watches(&self) -> Vec<Watch> {
        vec![
            Watch::own(&deployments::RESOURCE),
            Watch::mapped(&replicasets::RESOURCE, replicaset_keys),
            Watch::mapped(&pods::RESOURCE, pod_keys),
        ]
    }

    fn reconcile<'a>(&'a self, ctx: &'a Ctx, key: &'a str) -> BoxFuture<'a, Result<Action, ApiError>> {
        Box::pin(sync(ctx, key))
    }
}

fn selector_of(obj: &Value) -> Option<LabelSelector> {
    obj.pointer("/spec/selector").and_then(|s| LabelSelector::from_object(s).ok())
}

/// A ReplicaSet change concerns its controlling Deployment, or for an orphan every Deployment
/// whose selector matches it.
fn replicaset_keys(ctx: &Ctx, change: &Change) -> Vec<String> {
    let mut keys = Vec::new();
    for rs in [&change.old, &change.new].into_iter().flatten() {
        if let Some(d) = controller_name(rs, KIND) {
            let k = cache_key(namespace(rs), d);
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
    }
    if let Some(rs) = &change.new
        && common::controller_ref(rs).is_none()
        && !is_deleting(rs)
    {
        let ns = namespace(rs);
        let deps = ctx.informers.get(&deployments::RESOURCE);
        for d in deps.list(ns, |d| selector_of(d).is_some_and(|s| !s.is_empty() && s.matches(rs))) {
            keys.push(cache_key(ns, name(&d)));
        }
    }
    keys
}

/// A deleted pod concerns a Recreate Deployment waiting for its old pods to be gone.
fn pod_keys(ctx: &Ctx, change: &Change) -> Vec<String> {
    if change.new.is_some() {
        return Vec::new();
    }
    let pod = change.object();
    let ns = namespace(pod);
    let Some(rs) =
        controller_name(pod, "ReplicaSet").and_then(|n| ctx.informers.get(&replicasets::RESOURCE).get(ns, n))
    else {
        return Vec::new();
    };
    let Some(d) = controller_name(&rs, KIND).and_then(|n| ctx.informers.get(&deployments::RESOURCE).get(ns, n)) else {
        return Vec::new();
    };
    if str_at(&d, "/spec/strategy/type") == "Recreate" { vec![cache_key(ns, name(&d))] } else { Vec::new() }
}

async fn sync(ctx: &Ctx, key: &str) -> Result<Action, ApiError> {
    let Some(cached) = ctx.informers.get(&deployments::RESOURCE).get_key(key) else {
        return Ok(Action::Done);
    };
    let mut s = DeploymentSync { ctx, d: (*cached).clone(), sets: Vec::new(), new: None, requeue: None };
    let Some(selector) = selector_of(&s.d) else {
        return Ok(Action::Done);
    };
    if selector.is_empty() {
        let msg = "This deployment is selecting all pods. A non-empty selector is required.";
        ctx.events.record(&s.d, KIND, "apps/v1", "Warning", "SelectingAll", msg).await;
        if int_at(&s.d, "/status/observedGeneration") < int_at(&s.d, "/metadata/generation") {
            s.d["status"]["observedGeneration"] = s.d["metadata"]["generation"].clone();
            s.save(false, true).await?;
        }
        return Ok(Action::Done);
    }
    s.claim_replica_sets(&selector).await?;
    if is_deleting(&s.d) {
        s.find_new_rs().await?;
        s.sync_deployment_status().await?;
        return Ok(Action::Done);
    }
    s.check_paused_conditions().await?;
    s.find_new_rs().await?;
    if s.d.pointer("/spec/paused").and_then(Value::as_bool) == Some(true) || s.is_scaling_event() {
        s.scale_only().await?;
    } else if util::is_rolling(&s.d) {
        s.rollout_rolling().await?;
    } else {
        let pods = s.pod_map(&selector);
        s.rollout_recreate(&pods).await?;
    }
    Ok(s.requeue.map_or(Action::Done, Action::RequeueAfter))
}

/// One sync of one Deployment: the Deployment and its ReplicaSets as last read or written.
struct DeploymentSync<'a> {
    ctx: &'a Ctx,
    d: Value,
    /// Every ReplicaSet the Deployment owns, new and old.
    sets: Vec<Value>,
    /// Name of the ReplicaSet with the Deployment's template, if there is one.
    new: Option<String>,
    requeue: Option<Duration>,
}

impl DeploymentSync<'_> {
    fn ns(&self) -> String {
        namespace(&self.d).to_string()
    }

    fn new_rs(&self) -> Option<&Value> {
        let n = self.new.as_deref()?;
        self.sets.iter().find(|rs| name(rs) == n)
    }

    fn old_sets(&self) -> Vec<Value> {
        self.sets.iter().filter(|rs| Some(name(rs)) != self.new.as_deref()).cloned().collect()
    }

    /// Records a ReplicaSet as written.
    fn put(&mut self, rs: Value) {
        match self.sets.iter_mut().find(|s| name(s) == name(&rs)) {
            Some(slot) => *slot = rs,
            None => self.sets.push(rs),
        }
    }

    /// The ReplicaSets in the namespace that this Deployment controls, adopting matching orphans
    /// and releasing those it no longer selects.
    async fn claim_replica_sets(&mut self, selector: &LabelSelector) -> Result<(), ApiError> {
        let candidates = self.ctx.informers.get(&replicasets::RESOURCE).list(&self.ns(), |_| true);
        let claimer = Claimer {
            owner: &self.d,
            owner_kind: KIND,
            owner_res: &deployments::RESOURCE,
            child_res: &replicasets::RESOURCE,
            selector,
        };
        let claimed = claimer.claim(self.ctx, candidates).await?;
        self.sets = claimed.iter().map(|rs| (**rs).clone()).collect();
        Ok(())
    }

    /// Pods of the Deployment's ReplicaSets, terminating ones included, by ReplicaSet uid.
    fn pod_map(&self, selector: &LabelSelector) -> Vec<(String, Arc<Value>)> {
        let uids: Vec<String> = self.sets.iter().map(|rs| uid(rs).to_string()).collect();
        self.ctx
            .informers
            .get(&pods::RESOURCE)
            .list(&self.ns(), |p| selector.matches(p) && uids.iter().any(|u| is_controlled_by(p, u)))
            .into_iter()
            .map(|p| {
                let owner = common::controller_ref(&p).map(|r| str_at(r, "/uid").to_string()).unwrap_or_default();
                (owner, p)
            })
            .collect()
    }

    /// Writes the Deployment: its metadata (annotations) with `meta`, its status with `status`.
    async fn save(&mut self, meta: bool, status: bool) -> Result<(), ApiError> {
        let ns = self.ns();
        let local_status = self.d.get("status").cloned().unwrap_or_else(|| json!({}));
        if meta {
            self.d = self.ctx.client.update(&deployments::RESOURCE, &ns, self.d.clone()).await?;
            self.d["status"] = local_status;
        }
        if status {
            self.d = self.ctx.client.update_status(&deployments::RESOURCE, &ns, self.d.clone()).await?;
        }
        Ok(())
    }

    /// Progressing is Unknown while paused (DeploymentPaused) and right after (DeploymentResumed),
    /// so that time spent paused does not count against the progress deadline.
    async fn check_paused_conditions(&mut self) -> Result<(), ApiError> {
        if util::progress_deadline(&self.d).is_none() {
            return Ok(());
        }
        let status = self.d.get("status").cloned().unwrap_or_else(|| json!({}));
        let reason = condition(&status, PROGRESSING).map(|c| str_at(c, "/reason").to_string());
        if reason.as_deref() == Some(util::TIMED_OUT) {
            return Ok(());
        }
        let paused = self.d.pointer("/spec/paused").and_then(Value::as_bool) == Some(true);
        let paused_cond = reason.as_deref() == Some(PAUSED);
        let cond = if paused && !paused_cond {
            util::new_condition(PROGRESSING, "Unknown", PAUSED, "Deployment is paused")
        } else if !paused && paused_cond {
            util::new_condition(PROGRESSING, "Unknown", RESUMED, "Deployment is resumed")
        } else {
            return Ok(());
        };
        let mut status = status;
        util::set_condition(&mut status, cond);
        self.d["status"] = status;
        self.save(false, true).await
    }

    /// Whether a ReplicaSet carries a desired size other than the Deployment's: the user scaled.
    fn is_scaling_event(&self) -> bool {
        let replicas = spec_replicas(&self.d);
        self.sets.iter().filter(|rs| int_at(rs, "/spec/replicas") > 0).any(|rs| {
            util::annotation(rs, util::DESIRED_REPLICAS)
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v != replicas)
        })
    }

    /// Scaling only: paused Deployments and changes of `spec.replicas`.
    async fn scale_only(&mut self) -> Result<(), ApiError> {
        self.scale().await?;
        if self.d.pointer("/spec/paused").and_then(Value::as_bool) == Some(true) {
            self.cleanup().await?;
        }
        self.sync_deployment_status().await
    }

    // -----------------------------------------------------------------------------------------
    // Status

    fn calculate_status(&self) -> Value {
        let sum = |f: &str| self.sets.iter().map(|rs| int_at(rs, f)).sum::<i64>();
        let available = sum("/status/availableReplicas");
        let total = sum("/spec/replicas");
        let mut status = Map::new();
        let generation = int_at(&self.d, "/metadata/generation");
        let updated = self.new_rs().map_or(0, |rs| int_at(rs, "/status/replicas"));
        for (k, v) in [
            ("observedGeneration", generation),
            ("replicas", sum("/status/replicas")),
            ("updatedReplicas", updated),
            ("readyReplicas", sum("/status/readyReplicas")),
            ("availableReplicas", available),
            ("unavailableReplicas", (total - available).max(0)),
        ] {
            if v != 0 {
                status.insert(k.into(), json!(v));
            }
        }
        // Unknown (absent) while any ReplicaSet has not reported it yet.
        if self.sets.iter().all(|rs| rs.pointer("/status/terminatingReplicas").is_some()) {
            status.insert("terminatingReplicas".into(), json!(sum("/status/terminatingReplicas")));
        }
        if let Some(c) = self.d.pointer("/status/collisionCount") {
            status.insert("collisionCount".into(), c.clone());
        }
        if let Some(c) = self.d.pointer("/status/conditions").filter(|c| c.as_array().is_some_and(|a| !a.is_empty())) {
            status.insert("conditions".into(), c.clone());
        }
        let mut status = Value::Object(status);
        let cond = if available >= spec_replicas(&self.d) - util::max_unavailable(&self.d) {
            util::new_condition(AVAILABLE, "True", MIN_AVAILABLE, "Deployment has minimum availability.")
        } else {
            util::new_condition(AVAILABLE, "False", MIN_UNAVAILABLE, "Deployment does not have minimum availability.")
        };
        util::set_condition(&mut status, cond);
        status
    }

    async fn write_status_if_changed(&mut self, status: Value) -> Result<bool, ApiError> {
        if self.d.get("status") == Some(&status) {
            return Ok(false);
        }
        self.d["status"] = status;
        self.save(false, true).await?;
        Ok(true)
    }

    async fn sync_deployment_status(&mut self) -> Result<(), ApiError> {
        let status = self.calculate_status();
        self.write_status_if_changed(status).await.map(|_| ())
    }

    /// Status plus the Progressing condition: complete, progressing, or past its deadline; and
    /// ReplicaFailure carried over from the ReplicaSets.
    async fn sync_rollout_status(&mut self) -> Result<(), ApiError> {
        let mut status = self.calculate_status();
        let deadline = util::progress_deadline(&self.d);
        if deadline.is_none() {
            util::remove_condition(&mut status, PROGRESSING);
        }
        let old_status = self.d.get("status").cloned().unwrap_or_else(|| json!({}));
        let current = condition(&old_status, PROGRESSING).cloned();
        let complete_before = int_at(&status, "/replicas") == int_at(&status, "/updatedReplicas")
            && current.as_ref().is_some_and(|c| str_at(c, "/reason") == util::NEW_RS_AVAILABLE);
        if deadline.is_some() && !complete_before {
            let subject = match self.new_rs() {
                Some(rs) => format!("ReplicaSet \"{}\"", name(rs)),
                None => format!("Deployment \"{}\"", name(&self.d)),
            };
            if deployment_complete(&self.d, &status) {
                let msg = format!("{subject} has successfully progressed.");
                util::set_condition(
                    &mut status,
                    util::new_condition(PROGRESSING, "True", util::NEW_RS_AVAILABLE, &msg),
                );
            } else if progressing(&old_status, &status) {
                let msg = format!("{subject} is progressing.");
                let mut cond = util::new_condition(PROGRESSING, "True", util::RS_UPDATED, &msg);
                if let Some(cur) = &current {
                    if str_at(cur, "/status") == "True" {
                        cond["lastTransitionTime"] = cur["lastTransitionTime"].clone();
                    }
                    util::remove_condition(&mut status, PROGRESSING);
                }
                util::set_condition(&mut status, cond);
            } else if timed_out(&self.d, &status) {
                let msg = format!("{subject} has timed out progressing.");
                util::set_condition(&mut status, util::new_condition(PROGRESSING, "False", util::TIMED_OUT, &msg));
            }
        }
        match self.replica_failure() {
            Some(c) => util::set_condition(&mut status, c),
            None => util::remove_condition(&mut status, util::REPLICA_FAILURE),
        }
        if !self.write_status_if_changed(status.clone()).await? {
            self.requeue_stuck(&status);
        }
        Ok(())
    }

    /// The ReplicaFailure condition of the new ReplicaSet, else of any old one.
    fn replica_failure(&self) -> Option<Value> {
        let failure = |rs: &Value| condition(rs.get("status")?, util::REPLICA_FAILURE).cloned();
        let c = self.new_rs().and_then(failure).or_else(|| self.sets.iter().find_map(failure))?;
        Some(json!({
            "type": util::REPLICA_FAILURE,
            "status": c["status"],
            "lastUpdateTime": c["lastTransitionTime"],
            "lastTransitionTime": c["lastTransitionTime"],
            "reason": c["reason"],
            "message": c["message"],
        }))
    }

    /// Looks again when the progress deadline passes without news.
    fn requeue_stuck(&mut self, new_status: &Value) {
        let Some(deadline) = util::progress_deadline(&self.d) else { return };
        let Some(cur) = self.d.get("status").and_then(|s| condition(s, PROGRESSING)) else { return };
        if deployment_complete(&self.d, new_status) || str_at(cur, "/reason") == util::TIMED_OUT {
            return;
        }
        let Some(last) = common::parse_time(str_at(cur, "/lastUpdateTime")) else { return };
        let after = (last + chrono::Duration::seconds(deadline) - Utc::now()).to_std().unwrap_or_default();
        self.requeue = Some(after + Duration::from_secs(1));
    }
}

/// All replicas updated and available, and the latest spec observed.
fn deployment_complete(d: &Value, status: &Value) -> bool {
    let replicas = spec_replicas(d);
    int_at(status, "/updatedReplicas") == replicas
        && int_at(status, "/replicas") == replicas
        && int_at(status, "/availableReplicas") == replicas
        && int_at(status, "/observedGeneration") >= int_at(d, "/metadata/generation")
}

/// Whether the new status shows progress over the old.
fn progressing(old: &Value, new: &Value) -> bool {
    let old_old = int_at(old, "/replicas") - int_at(old, "/updatedReplicas");
    let new_old = int_at(new, "/replicas") - int_at(new, "/updatedReplicas");
    int_at(new, "/updatedReplicas") > int_at(old, "/updatedReplicas")
        || new_old < old_old
        || int_at(new, "/readyReplicas") > int_at(old, "/readyReplicas")
        || int_at(new, "/availableReplicas") > int_at(old, "/availableReplicas")
}

/// Whether the Progressing condition is older than the deadline.
fn timed_out(d: &Value, status: &Value) -> bool {
    let Some(deadline) = util::progress_deadline(d) else { return false };
    let Some(cond) = condition(status, PROGRESSING) else { return false };
    match str_at(cond, "/reason") {
        util::NEW_RS_AVAILABLE => false,
        util::TIMED_OUT => true,
        _ => common::parse_time(str_at(cond, "/lastUpdateTime"))
            .is_some_and(|t| t + chrono::Duration::seconds(deadline) < Utc::now()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completeness_and_progress() {
        let d = json!({"metadata": {"generation": 2}, "spec": {"replicas": 3}});
        let done = json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3});
        assert!(deployment_complete(&d, &done));
        let stale = json!({"observedGeneration": 1, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3});
        assert!(!deployment_complete(&d, &stale));
        let before = json!({"replicas": 4, "updatedReplicas": 1, "availableReplicas": 3});
        let after = json!({"replicas": 4, "updatedReplicas": 2, "availableReplicas": 3});
        assert!(progressing(&before, &after));
        assert!(!progressing(&after, &after));
    }

    #[test]
    fn deadline_counts_from_the_last_update() {
        let d = json!({"spec": {"progressDeadlineSeconds": 5}});
        let mut old = util::new_condition(PROGRESSING, "True", util::RS_UPDATED, "x");
        old["lastUpdateTime"] = json!("2020-01-01T00:00:00Z");
        assert!(timed_out(&d, &json!({"conditions": [old]})));
        let fresh = util::new_condition(PROGRESSING, "True", util::RS_UPDATED, "x");
        assert!(!timed_out(&d, &json!({"conditions": [fresh]})));
        let infinite = json!({"spec": {"progressDeadlineSeconds": i32::MAX}});
        assert_eq!(util::progress_deadline(&infinite), None);
    }
}
