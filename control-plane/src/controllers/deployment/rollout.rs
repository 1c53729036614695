//! The steps of a rollout: finding or creating the new ReplicaSet (with its revision), rolling
//! update and recreate, proportional scaling, and cleaning up old ReplicaSets.

use std::sync::Arc;

use serde_json::{Value, json};
use tracing::debug;

use super::common::{int_at, is_deleting, name, str_at};
use super::util::{self, PROGRESSING, spec_replicas};
use super::{DeploymentSync, KIND};
use crate::registry::replicasets;
use crate::server::errors::ApiError;
use crate::server::internal::DeleteParams;

fn replicas(rs: &Value) -> i64 {
    int_at(rs, "/spec/replicas")
}

/// What a ReplicaSet may count as available: its reported available pods, but never more than
/// its size. A ReplicaSet just scaled down still reports the pods it is about to delete; counting
/// them would let the rollout delete more than maxUnavailable allows.
fn available(rs: &Value) -> i64 {
    int_at(rs, "/status/availableReplicas").min(replicas(rs))
}

/// Pods a ReplicaSet may have: its size, or more while it still reports pods being scaled away
/// (so that a surge never adds pods before the old ones are really going).
fn pods(rs: &Value) -> i64 {
    replicas(rs).max(int_at(rs, "/status/replicas"))
}

impl DeploymentSync<'_> {
    // -----------------------------------------------------------------------------------------
    // The new ReplicaSet

    fn next_revision(&self) -> i64 {
        util::max_revision(self.old_sets().iter()) + 1
    }

    /// Finds the ReplicaSet with the Deployment's template, brings its annotations and revision
    /// up to date, and the Deployment's revision with it.
    pub(super) async fn find_new_rs(&mut self) -> Result<(), ApiError> {
        let template = self.d.pointer("/spec/template").cloned().unwrap_or_default();
        let mut sorted: Vec<&Value> = self.sets.iter().collect();
        sorted.sort_by(|a, b| util::by_creation(a, b));
        let found = sorted
            .into_iter()
            .find(|rs| util::equal_ignore_hash(rs.pointer("/spec/template").unwrap_or(&Value::Null), &template))
            .cloned();
        let Some(existing) = found else {
            self.new = None;
            return Ok(());
        };
        self.new = Some(name(&existing).to_string());
        let revision = self.next_revision();
        let mut copy = existing.clone();
        let annotations_changed = util::set_new_rs_annotations(&self.d, &mut copy, revision, true);
        let min_ready = self.d.pointer("/spec/minReadySeconds").cloned().unwrap_or(json!(0));
        let min_ready_changed = int_at(&copy, "/spec/minReadySeconds") != min_ready.as_i64().unwrap_or(0);
        if annotations_changed || min_ready_changed {
            copy["spec"]["minReadySeconds"] = min_ready;
            copy = self.ctx.client.update(&replicasets::RESOURCE, &self.ns(), copy).await?;
            self.put(copy.clone());
        }
        let rs_revision = util::annotation(&copy, util::REVISION).unwrap_or("").to_string();
        let meta_changed = util::set_deployment_revision(&mut self.d, &rs_revision);
        let mut status_changed = false;
        if util::progress_deadline(&self.d).is_some() && util::condition(&self.d["status"], PROGRESSING).is_none() {
            let msg = format!("Found new replica set \"{}\"", name(&copy));
            self.set_condition(util::new_condition(PROGRESSING, "True", util::FOUND_NEW_RS, &msg));
            status_changed = true;
        }
        if meta_changed || status_changed {
            self.save(meta_changed, status_changed).await?;
        }
        Ok(())
    }

    fn set_condition(&mut self, cond: Value) {
        if !self.d.get("status").is_some_and(Value::is_object) {
            self.d["status"] = json!({});
        }
        util::set_condition(&mut self.d["status"], cond);
    }

    /// How big the new ReplicaSet may be now.
    fn new_rs_new_replicas(&self, new_rs: &Value, all: &[&Value]) -> i64 {
        let desired = spec_replicas(&self.d);
        if !util::is_rolling(&self.d) {
            return desired;
        }
        let surge = util::scaled_value(self.d.pointer("/spec/strategy/rollingUpdate/maxSurge"), desired, true);
        let current: i64 = all.iter().map(|rs| pods(rs)).sum();
        let max_total = desired + surge;
        if current >= max_total {
            return replicas(new_rs);
        }
        replicas(new_rs) + (max_total - current).min(desired - replicas(new_rs))
    }

    /// Creates the ReplicaSet for the Deployment's template, `<deployment>-<hash>`.
    async fn create_new_rs(&mut self) -> Result<(), ApiError> {
        let ns = self.ns();
        let template = self.d.pointer("/spec/template").cloned().unwrap_or_else(|| json!({}));
        let collisions = self.d.pointer("/status/collisionCount").and_then(Value::as_i64);
        let hash = util::template_hash(&template, collisions);
        let mut rs_template = template.clone();
        rs_template["metadata"]["labels"][util::HASH_LABEL] = json!(hash);
        let mut selector = self.d.pointer("/spec/selector").cloned().unwrap_or_else(|| json!({}));
        selector["matchLabels"][util::HASH_LABEL] = json!(hash);
        let rs_name = format!("{}-{hash}", name(&self.d));
        let mut new_rs = json!({
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": rs_name,
                "namespace": ns,
                "labels": rs_template["metadata"]["labels"],
                "ownerReferences": [super::common::owner_ref(&self.d, KIND)],
            },
            "spec": {
                "replicas": 0,
                "minReadySeconds": self.d.pointer("/spec/minReadySeconds").cloned().unwrap_or(json!(0)),
                "selector": selector,
                "template": rs_template,
            },
        });
        let old = self.old_sets();
        let mut all: Vec<&Value> = old.iter().collect();
        all.push(&new_rs);
        let count = self.new_rs_new_replicas(&new_rs, &all);
        new_rs["spec"]["replicas"] = json!(count);
        let revision = self.next_revision();
        util::set_new_rs_annotations(&self.d, &mut new_rs, revision, false);
        let (created, already_existed) = match self.ctx.client.create(&replicasets::RESOURCE, &ns, new_rs).await {
            Ok(rs) => (rs, false),
            Err(e) if e.code == 409 && e.reason == "AlreadyExists" => {
                let existing = self.ctx.client.get(&replicasets::RESOURCE, &ns, &rs_name).await?;
                let ours = super::common::is_controlled_by(&existing, super::common::uid(&self.d));
                if ours
                    && util::equal_ignore_hash(&template, existing.pointer("/spec/template").unwrap_or(&Value::Null))
                {
                    (existing, true)
                } else {
                    // A different template hashed to the same name: count the collision, which
                    // changes the hash, and try again.
                    let next = collisions.unwrap_or(0) + 1;
                    debug!(deployment = name(&self.d), collisions = next, "hash collision");
                    self.d["status"]["collisionCount"] = json!(next);
                    self.save(false, true).await?;
                    return Err(e);
                }
            }
            // Nothing can be created in a namespace being deleted; nothing to report either.
            Err(e) if e.code == 403 && e.message.contains("being terminated") => return Err(e),
            Err(e) => {
                let msg = format!("Failed to create new replica set \"{rs_name}\": {}", e.message);
                if util::progress_deadline(&self.d).is_some() {
                    self.set_condition(util::new_condition(PROGRESSING, "False", util::FAILED_RS_CREATE, &msg));
                    let _ = self.save(false, true).await;
                }
                self.ctx.events.record(&self.d, KIND, "apps/v1", "Warning", util::FAILED_RS_CREATE, &msg).await;
                return Err(e);
            }
        };
        if !already_existed && count > 0 {
            let msg = format!("Scaled up replica set {} from 0 to {count}", name(&created));
            self.ctx.events.record(&self.d, KIND, "apps/v1", "Normal", "ScalingReplicaSet", &msg).await;
        }
        self.new = Some(name(&created).to_string());
        let rs_revision = util::annotation(&created, util::REVISION).unwrap_or("").to_string();
        self.put(created.clone());
        let meta_changed = util::set_deployment_revision(&mut self.d, &rs_revision);
        let mut status_changed = false;
        if !already_existed && util::progress_deadline(&self.d).is_some() {
            let msg = format!("Created new replica set \"{}\"", name(&created));
            self.set_condition(util::new_condition(PROGRESSING, "True", util::NEW_RS_CREATED, &msg));
            status_changed = true;
        }
        if meta_changed || status_changed {
            self.save(meta_changed, status_changed).await?;
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Scaling one ReplicaSet

    /// Resizes `rs` (by name) and records the event; whether its size changed.
    async fn scale_and_record(&mut self, rs_name: &str, size: i64) -> Result<bool, ApiError> {
        let Some(rs) = self.sets.iter().find(|r| name(r) == rs_name).cloned() else { return Ok(false) };
        if replicas(&rs) == size {
            return Ok(false);
        }
        let op = if replicas(&rs) < size { "up" } else { "down" };
        self.scale_rs(&rs, size, op).await
    }

    /// Writes the size and the replica annotations when either changed; whether the size did.
    async fn scale_rs(&mut self, rs: &Value, size: i64, op: &str) -> Result<bool, ApiError> {
        let desired = spec_replicas(&self.d);
        let mut copy = rs.clone();
        let size_changed = replicas(rs) != size;
        let annotations_changed =
            util::set_replicas_annotations(&mut copy, desired, desired + util::max_surge(&self.d));
        if !size_changed && !annotations_changed {
            return Ok(false);
        }
        copy["spec"]["replicas"] = json!(size);
        let written = self.ctx.client.update(&replicasets::RESOURCE, &self.ns(), copy).await?;
        self.put(written);
        if size_changed {
            let msg = format!("Scaled {op} replica set {} from {} to {size}", name(rs), replicas(rs));
            self.ctx.events.record(&self.d, KIND, "apps/v1", "Normal", "ScalingReplicaSet", &msg).await;
        }
        Ok(size_changed)
    }

    // -----------------------------------------------------------------------------------------
    // Rolling update

    pub(super) async fn rollout_rolling(&mut self) -> Result<(), ApiError> {
        if self.new.is_none() {
            self.create_new_rs().await?;
        }
        if self.reconcile_new_rs().await? || self.reconcile_old_rs().await? {
            return self.sync_rollout_status().await;
        }
        let status = self.d.get("status").cloned().unwrap_or_default();
        if super::deployment_complete(&self.d, &status) {
            self.cleanup().await?;
        }
        self.sync_rollout_status().await
    }

    async fn reconcile_new_rs(&mut self) -> Result<bool, ApiError> {
        let Some(new_rs) = self.new_rs().cloned() else { return Ok(false) };
        let desired = spec_replicas(&self.d);
        if replicas(&new_rs) == desired {
            return Ok(false);
        }
        if replicas(&new_rs) > desired {
            return self.scale_and_record(name(&new_rs), desired).await;
        }
        let all: Vec<&Value> = self.sets.iter().collect();
        let count = self.new_rs_new_replicas(&new_rs, &all);
        self.scale_and_record(name(&new_rs), count).await
    }

    /// Scales old ReplicaSets down as far as availability allows: first their unavailable
    /// pods, then available ones while at least `replicas - maxUnavailable` stay available.
    async fn reconcile_old_rs(&mut self) -> Result<bool, ApiError> {
        let Some(new_rs) = self.new_rs().cloned() else { return Ok(false) };
        let old_pods: i64 = self.old_sets().iter().map(replicas).sum();
        if old_pods == 0 {
            return Ok(false);
        }
        let all_pods: i64 = self.sets.iter().map(replicas).sum();
        let min_available = spec_replicas(&self.d) - util::max_unavailable(&self.d);
        let new_unavailable = replicas(&new_rs) - available(&new_rs);
        let max_scaled_down = all_pods - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return Ok(false);
        }
        let cleaned = self.cleanup_unhealthy(max_scaled_down).await?;
        let scaled = self.scale_down_old_for_rolling().await?;
        Ok(cleaned + scaled > 0)
    }

    fn active_old_by_creation(&self) -> Vec<Value> {
        let mut old: Vec<Value> = self.old_sets().into_iter().filter(|rs| replicas(rs) > 0).collect();
        old.sort_by(util::by_creation);
        old
    }

    /// Removes the unavailable pods of old ReplicaSets, oldest first, up to `max`.
    async fn cleanup_unhealthy(&mut self, max: i64) -> Result<i64, ApiError> {
        let mut total = 0;
        for rs in self.active_old_by_creation() {
            if total >= max {
                break;
            }
            let unhealthy = replicas(&rs) - available(&rs);
            if unhealthy == 0 {
                continue;
            }
            let n = (max - total).min(unhealthy);
            self.scale_and_record(name(&rs), replicas(&rs) - n).await?;
            total += n;
        }
        Ok(total)
    }

    async fn scale_down_old_for_rolling(&mut self) -> Result<i64, ApiError> {
        let min_available = spec_replicas(&self.d) - util::max_unavailable(&self.d);
        let available_pods: i64 = self.sets.iter().map(available).sum();
        if available_pods <= min_available {
            return Ok(0);
        }
        let to_scale_down = available_pods - min_available;
        let mut total = 0;
        for rs in self.active_old_by_creation() {
            if total >= to_scale_down {
                break;
            }
            let n = replicas(&rs).min(to_scale_down - total);
            self.scale_and_record(name(&rs), replicas(&rs) - n).await?;
            total += n;
        }
        Ok(total)
    }

    // -----------------------------------------------------------------------------------------
    // Recreate

    /// Scales every old ReplicaSet to zero, waits until their pods are gone, then creates and
    /// scales up the new one.
    pub(super) async fn rollout_recreate(&mut self, pod_map: &[(String, Arc<Value>)]) -> Result<(), ApiError> {
        let mut scaled_down = false;
        for rs in self.active_old_by_creation() {
            scaled_down |= self.scale_and_record(name(&rs), 0).await?;
        }
        if scaled_down || self.old_pods_running(pod_map) {
            return self.sync_rollout_status().await;
        }
        if self.new.is_none() {
            self.create_new_rs().await?;
        }
        if let Some(new_rs) = self.new.clone() {
            self.scale_and_record(&new_rs, spec_replicas(&self.d)).await?;
        }
        let status = self.d.get("status").cloned().unwrap_or_default();
        if super::deployment_complete(&self.d, &status) {
            self.cleanup().await?;
        }
        self.sync_rollout_status().await
    }

    fn old_pods_running(&self, pod_map: &[(String, Arc<Value>)]) -> bool {
        let old = self.old_sets();
        if old.iter().map(|rs| int_at(rs, "/status/replicas")).sum::<i64>() > 0 {
            return true;
        }
        let new_uid = self.new_rs().map(|rs| super::common::uid(rs).to_string());
        pod_map.iter().any(|(owner, pod)| {
            Some(owner) != new_uid.as_ref() && !matches!(str_at(pod, "/status/phase"), "Failed" | "Succeeded")
        })
    }

    // -----------------------------------------------------------------------------------------
    // Scaling (paused or resized Deployments)

    /// Resizes the ReplicaSets for a new `spec.replicas`: the only active one (or the newest)
    /// takes it all; during a rollout the change is shared in proportion to their sizes.
    pub(super) async fn scale(&mut self) -> Result<(), ApiError> {
        let desired = spec_replicas(&self.d);
        if let Some(target) = self.active_or_latest() {
            if replicas(&target) != desired {
                self.scale_and_record(name(&target), desired).await?;
            }
            return Ok(());
        }
        if let Some(new_rs) = self.new_rs().cloned()
            && self.is_saturated(&new_rs)
        {
            for rs in self.active_old_by_creation() {
                self.scale_and_record(name(&rs), 0).await?;
            }
            return Ok(());
        }
        if !util::is_rolling(&self.d) {
            return Ok(());
        }
        let mut active: Vec<Value> = self.sets.iter().filter(|rs| replicas(rs) > 0).cloned().collect();
        let current: i64 = active.iter().map(replicas).sum();
        let allowed = if desired > 0 { desired + util::max_surge(&self.d) } else { 0 };
        let to_add = allowed - current;
        let op = match to_add.signum() {
            1 => {
                active.sort_by(|a, b| util::by_size(a, b, true));
                "up"
            }
            -1 => {
                active.sort_by(|a, b| util::by_size(a, b, false));
                "down"
            }
            _ => "",
        };
        let mut added = 0;
        let mut sizes = Vec::with_capacity(active.len());
        for rs in &active {
            let p = util::proportion(rs, &self.d, to_add, added);
            added += p;
            sizes.push(replicas(rs) + p);
        }
        for (i, rs) in active.iter().enumerate() {
            let mut size = sizes[i];
            if i == 0 && to_add != 0 {
                size = (size + to_add - added).max(0);
            }
            self.scale_rs(rs, size, op).await?;
        }
        Ok(())
    }

    /// The only ReplicaSet with replicas, or the newest when none has any; none during a rollout.
    fn active_or_latest(&self) -> Option<Value> {
        let mut old = self.old_sets();
        let new_rs = self.new_rs().cloned();
        if new_rs.is_none() && old.is_empty() {
            return None;
        }
        old.sort_by(|a, b| util::by_creation(b, a));
        let active: Vec<&Value> = old.iter().chain(new_rs.iter()).filter(|rs| replicas(rs) > 0).collect();
        match active.len() {
            0 => new_rs.clone().or_else(|| old.first().cloned()),
            1 => Some(active[0].clone()),
            _ => None,
        }
    }

    fn is_saturated(&self, rs: &Value) -> bool {
        let desired = spec_replicas(&self.d);
        util::annotation(rs, util::DESIRED_REPLICAS).and_then(|v| v.parse::<i64>().ok()) == Some(desired)
            && int_at(rs, "/status/availableReplicas") == desired
            && replicas(rs) == desired
    }

    // -----------------------------------------------------------------------------------------
    // History

    /// Deletes the oldest empty old ReplicaSets beyond `revisionHistoryLimit`.
    pub(super) async fn cleanup(&mut self) -> Result<(), ApiError> {
        let Some(limit) = self.d.pointer("/spec/revisionHistoryLimit").and_then(Value::as_i64) else {
            return Ok(());
        };
        let mut cleanable: Vec<Value> = self.old_sets().into_iter().filter(|rs| !is_deleting(rs)).collect();
        let diff = cleanable.len() as i64 - limit;
        if diff <= 0 {
            return Ok(());
        }
        cleanable.sort_by(util::by_revision);
        for rs in cleanable.iter().take(usize::try_from(diff).unwrap_or(0)) {
            if int_at(rs, "/status/replicas") != 0
                || replicas(rs) != 0
                || int_at(rs, "/metadata/generation") > int_at(rs, "/status/observedGeneration")
            {
                continue;
            }
            debug!(deployment = name(&self.d), replicaset = name(rs), "deleting old replica set");
            match self.ctx.client.delete(&replicasets::RESOURCE, &self.ns(), name(rs), &DeleteParams::default()).await {
                Ok(_) => self.sets.retain(|s| name(s) != name(rs)),
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}
