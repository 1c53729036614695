//! The replicaset controller: keeps `spec.replicas` pods of each ReplicaSet's template and
//! reports their state in the ReplicaSet's status, as Kubernetes' `pkg/controller/replicaset`.
//!
//! Pods belong to the ReplicaSet that controls them (owner reference with `controller: true`);
//! matching orphans are adopted and controlled pods that stop matching are released. Creations
//! go in slow-start batches (1, 2, 4, …); scale-down deletes the least useful pods first
//! (unscheduled, pending, not ready, cheap to delete, doubled up on a node, recently ready,
//! restarting, young). Expectations of the pods it created or deleted keep a lagging cache from
//! causing a second round of creations.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::future::{BoxFuture, join_all};
use serde_json::{Map, Value, json};
use tracing::{debug, warn};

use super::deployment::common::{
    self as c, Claimer, controller_ref, int_at, is_active_pod, is_controlled_by, is_deleting, is_pod_available,
    is_pod_ready, is_terminating_pod, name, namespace, str_at, uid,
};
use super::{Action, Change, Controller, Ctx, Informer, Watch, cache_key};
use crate::registry::{pods, replicasets};
use crate::selectors::{LabelSelector, labels_of};
use crate::server::errors::ApiError;
use crate::server::internal::DeleteParams;

pub const NAME: &str = "replicaset";
const KIND: &str = "ReplicaSet";
/// Most pods created or deleted in one sync.
const BURST: usize = 500;
/// Expectations that are not met by then are given up (a watch event was lost).
const EXPECTATIONS_TIMEOUT: Duration = Duration::from_secs(300);
const DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

#[derive(Default)]
pub struct ReplicaSetController {
    expectations: Arc<Expectations>,
}

impl Controller for ReplicaSetController {
    fn name(&self) -> &'static str {
        NAME
    }

    fn watches(&self) -> Vec<Watch> {
        let exp = self.expectations.clone();
        vec![
            Watch::own(&replicasets::RESOURCE),
            Watch::mapped(&pods::RESOURCE, move |ctx, change| pod_keys(ctx, change, &exp)),
        ]
    }

    fn reconcile<'a>(&'a self, ctx: &'a Ctx, key: &'a str) -> BoxFuture<'a, Result<Action, ApiError>> {
        Box::pin(self.sync(ctx, key))
    }
}

// ---------------------------------------------------------------------------------------------
// Expectations

#[derive(Default)]
struct Pending {
    creates: HashSet<String>,
    deletes: HashSet<String>,
    since: Option<Instant>,
}

/// Per ReplicaSet key: the names of pods created or deleted whose change the cache has not shown
/// yet. A ReplicaSet with pending expectations is not resized again.
#[derive(Default)]
struct Expectations {
    pending: Mutex<HashMap<String, Pending>>,
}

impl Expectations {
    fn expect(&self, key: &str, creates: &[String], deletes: &[String]) {
        let mut all = self.pending.lock().expect("expectations lock");
        let p = all.entry(key.to_string()).or_default();
        p.creates.extend(creates.iter().cloned());
        p.deletes.extend(deletes.iter().cloned());
        p.since = Some(Instant::now());
    }

    /// The pod `pod` was seen (created), or seen gone or going (`deleted`).
    fn observed(&self, key: &str, pod: &str, deleted: bool) {
        let mut all = self.pending.lock().expect("expectations lock");
        if let Some(p) = all.get_mut(key) {
            p.creates.remove(pod);
            if deleted {
                p.deletes.remove(pod);
            }
        }
    }

    /// Whether the ReplicaSet may be resized: nothing pending (checking the cache too, in case a
    /// change was missed) or the expectations timed out.
    fn satisfied(&self, key: &str, ns: &str, pods: &Informer) -> bool {
        let mut all = self.pending.lock().expect("expectations lock");
        let Some(p) = all.get_mut(key) else { return true };
        p.creates.retain(|n| pods.get(ns, n).is_none());
        p.deletes.retain(|n| pods.get(ns, n).is_some_and(|pod| !is_deleting(&pod)));
        let done = (p.creates.is_empty() && p.deletes.is_empty())
            || p.since.is_none_or(|t| t.elapsed() > EXPECTATIONS_TIMEOUT);
        if done {
            all.remove(key);
        }
        done
    }

    fn forget(&self, key: &str) {
        self.pending.lock().expect("expectations lock").remove(key);
    }
}

/// The ReplicaSets a pod change concerns: its controller (before and after), or for an orphan
/// every ReplicaSet whose selector matches it. Records what the expectations wait for.
fn pod_keys(ctx: &Ctx, change: &Change, exp: &Expectations) -> Vec<String> {
    let mut keys = Vec::new();
    let pod = change.object();
    let ns = namespace(pod);
    let owner = |p: &Value| c::controller_name(p, KIND).map(|n| cache_key(namespace(p), n));
    if let Some(new) = &change.new
        && let Some(k) = owner(new)
    {
        exp.observed(&k, name(new), is_deleting(new));
        keys.push(k);
    }
    if change.new.is_none()
        && let Some(k) = change.old.as_deref().and_then(owner)
    {
        exp.observed(&k, name(pod), true);
        keys.push(k);
    }
    if let Some(old) = &change.old
        && let Some(k) = owner(old)
        && !keys.contains(&k)
    {
        keys.push(k);
    }
    // Orphans: on creation, or when labels or owners change.
    let labels_or_owners_changed = match (&change.old, &change.new) {
        (None, Some(_)) => true,
        (Some(o), Some(n)) => {
            o.pointer("/metadata/labels") != n.pointer("/metadata/labels")
                || o.pointer("/metadata/ownerReferences") != n.pointer("/metadata/ownerReferences")
        }
        _ => false,
    };
    if labels_or_owners_changed
        && let Some(new) = &change.new
        && controller_ref(new).is_none()
        && !is_deleting(new)
    {
        let sets = ctx.informers.get(&replicasets::RESOURCE);
        for rs in sets.list(ns, |rs| selector_of(rs).is_some_and(|s| !s.is_empty() && s.matches(new))) {
            keys.push(cache_key(ns, name(&rs)));
        }
    }
    keys
}

fn selector_of(obj: &Value) -> Option<LabelSelector> {
    obj.pointer("/spec/selector").and_then(|s| LabelSelector::from_object(s).ok())
}

// ---------------------------------------------------------------------------------------------
// Sync

impl ReplicaSetController {
    async fn sync(&self, ctx: &Ctx, key: &str) -> Result<Action, ApiError> {
        let sets = ctx.informers.get(&replicasets::RESOURCE);
        let pod_cache = ctx.informers.get(&pods::RESOURCE);
        let Some(rs) = sets.get_key(key) else {
            self.expectations.forget(key);
            return Ok(Action::Done);
        };
        let ns = namespace(&rs).to_string();
        let Some(selector) = selector_of(&rs) else {
            warn!(replicaset = key, "invalid selector");
            return Ok(Action::Done);
        };
        let needs_sync = self.expectations.satisfied(key, &ns, &pod_cache);
        // This ReplicaSet's pods and orphans: nobody else's pods can be claimed.
        let rs_uid = uid(&rs).to_string();
        let all_pods = pod_cache.list(&ns, |p| {
            controller_ref(p).is_none_or(|r| r.get("uid").and_then(Value::as_str) == Some(rs_uid.as_str()))
        });
        let active: Vec<Arc<Value>> = all_pods.iter().filter(|p| is_active_pod(p)).cloned().collect();
        let claimer = Claimer {
            owner: &rs,
            owner_kind: KIND,
            owner_res: &replicasets::RESOURCE,
            child_res: &pods::RESOURCE,
            selector: &selector,
        };
        let owned = claimer.claim(ctx, active).await?;
        let terminating = all_pods
            .iter()
            .filter(|p| is_terminating_pod(p) && is_controlled_by(p, uid(&rs)) && selector.matches(p))
            .count();
        let manage_err =
            if needs_sync && !is_deleting(&rs) { self.manage(ctx, &rs, key, &owned).await.err() } else { None };
        let now = Utc::now();
        let status = calculate_status(&rs, &owned, terminating, manage_err.as_ref(), now);
        let written = update_status(ctx, &rs, status).await?;
        if let Some(e) = manage_err {
            return Err(e);
        }
        // Look again when a ready pod becomes available.
        let min_ready = int_at(&written, "/spec/minReadySeconds");
        if min_ready > 0 {
            let next = owned
                .iter()
                .filter(|p| is_pod_ready(p) && !is_pod_available(p, min_ready, now))
                .filter_map(|p| c::ready_since(p))
                .map(|t| t + chrono::Duration::seconds(min_ready))
                .min();
            if let Some(at) = next {
                let wait = (at - now).to_std().unwrap_or_default() + Duration::from_millis(50);
                return Ok(Action::RequeueAfter(wait));
            }
        }
        Ok(Action::Done)
    }

    /// Creates or deletes pods so that `owned` reaches `spec.replicas`.
    async fn manage(&self, ctx: &Ctx, rs: &Value, key: &str, owned: &[Arc<Value>]) -> Result<(), ApiError> {
        let want = usize::try_from(int_at(rs, "/spec/replicas")).unwrap_or(0);
        if owned.len() < want {
            let names: Vec<String> = (0..(want - owned.len()).min(BURST)).map(|_| pod_name(name(rs))).collect();
            self.expectations.expect(key, &names, &[]);
            let template = pod_from_template(rs);
            let mut done = 0;
            let mut batch = 1;
            let mut first_err = None;
            while done < names.len() {
                let chunk = &names[done..(done + batch).min(names.len())];
                let results = join_all(chunk.iter().map(|n| self.create_pod(ctx, rs, key, &template, n))).await;
                done += chunk.len();
                if let Some(e) = results.into_iter().find_map(Result::err) {
                    first_err = Some(e);
                    break;
                }
                batch *= 2;
            }
            // Pods never attempted are not expected.
            for n in &names[done..] {
                self.expectations.observed(key, n, true);
            }
            return first_err.map_or(Ok(()), Err);
        }
        if owned.len() > want {
            let n = (owned.len() - want).min(BURST);
            let related = related_pods(ctx, rs);
            let victims = pods_to_delete(owned, &related, n, Utc::now());
            let names: Vec<String> = victims.iter().map(|p| name(p).to_string()).collect();
            self.expectations.expect(key, &[], &names);
            let results = join_all(victims.iter().map(|p| self.delete_pod(ctx, rs, key, p))).await;
            return results.into_iter().find_map(Result::err).map_or(Ok(()), Err);
        }
        Ok(())
    }

    async fn create_pod(&self, ctx: &Ctx, rs: &Value, key: &str, template: &Value, pod: &str) -> Result<(), ApiError> {
        let mut obj = template.clone();
        obj["metadata"]["name"] = json!(pod);
        match ctx.client.create(&pods::RESOURCE, namespace(rs), obj).await {
            Ok(_) => {
                let msg = format!("Created pod: {pod}");
                ctx.events.record(rs, KIND, "apps/v1", "Normal", "SuccessfulCreate", &msg).await;
                Ok(())
            }
            Err(e) => {
                self.expectations.observed(key, pod, true);
                // Nothing can be created in a namespace being deleted; not a failure.
                if e.code == 403 && e.message.contains("being terminated") {
                    return Ok(());
                }
                let msg = format!("Error creating: {}", e.message);
                ctx.events.record(rs, KIND, "apps/v1", "Warning", "FailedCreate", &msg).await;
                Err(e)
            }
        }
    }

    async fn delete_pod(&self, ctx: &Ctx, rs: &Value, key: &str, pod: &Value) -> Result<(), ApiError> {
        match ctx.client.delete(&pods::RESOURCE, namespace(pod), name(pod), &DeleteParams::default()).await {
            Ok(_) => {
                let msg = format!("Deleted pod: {}", name(pod));
                ctx.events.record(rs, KIND, "apps/v1", "Normal", "SuccessfulDelete", &msg).await;
                Ok(())
            }
            Err(e) => {
                self.expectations.observed(key, name(pod), true);
                if e.code == 404 {
                    return Ok(());
                }
                let msg = format!("Error deleting: {}", e.message);
                ctx.events.record(rs, KIND, "apps/v1", "Warning", "FailedDelete", &msg).await;
                Err(e)
            }
        }
    }
}

/// `<replicaset>-<5 random characters>`, the base cut to leave room as `generateName` does. The
/// controller picks the name itself so that it can expect the pod by name before creating it.
fn pod_name(rs_name: &str) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut base = format!("{rs_name}-");
    base.truncate(58);
    let suffix: String = (0..5).map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char).collect();
    format!("{base}{suffix}")
}

/// A pod for the ReplicaSet's template: its labels, annotations, finalizers and spec, and the
/// ReplicaSet as controller.
fn pod_from_template(rs: &Value) -> Value {
    let t = rs.pointer("/spec/template").cloned().unwrap_or_else(|| json!({}));
    let mut meta = Map::new();
    let mut prefix = format!("{}-", name(rs));
    prefix.truncate(58);
    meta.insert("generateName".into(), json!(prefix));
    meta.insert("namespace".into(), json!(namespace(rs)));
    for f in ["labels", "annotations", "finalizers"] {
        if let Some(v) = t.pointer(&format!("/metadata/{f}")).filter(|v| !v.is_null()) {
            meta.insert(f.into(), v.clone());
        }
    }
    meta.insert("ownerReferences".into(), json!([c::owner_ref(rs, KIND)]));
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": t.get("spec").cloned().unwrap_or_else(|| json!({}))})
}

/// Pods of the ReplicaSets that share this one's controller (for the doubled-up rank).
fn related_pods(ctx: &Ctx, rs: &Value) -> Vec<Arc<Value>> {
    let owners: HashSet<String> = match controller_ref(rs).and_then(|r| r.get("uid")).and_then(Value::as_str) {
        Some(owner) => ctx
            .informers
            .get(&replicasets::RESOURCE)
            .list(namespace(rs), |s| is_controlled_by(s, owner))
            .iter()
            .map(|s| uid(s).to_string())
            .collect(),
        None => HashSet::from([uid(rs).to_string()]),
    };
    ctx.informers.get(&pods::RESOURCE).list(namespace(rs), |p| {
        controller_ref(p).and_then(|r| r.get("uid")).and_then(Value::as_str).is_some_and(|u| owners.contains(u))
    })
}

// ---------------------------------------------------------------------------------------------
// Which pods go first

fn phase_rank(pod: &Value) -> u8 {
    match str_at(pod, "/status/phase") {
        "Pending" => 0,
        "Unknown" => 1,
        "Running" => 2,
        _ => 0,
    }
}

fn deletion_cost(pod: &Value) -> i64 {
    pod.pointer("/metadata/annotations")
        .and_then(|a| a.get(DELETION_COST))
        .and_then(Value::as_str)
        .and_then(|v| v.parse::<i32>().ok())
        .map_or(0, i64::from)
}

fn max_restarts(pod: &Value) -> i64 {
    ["initContainerStatuses", "containerStatuses"]
        .iter()
        .filter_map(|f| pod.pointer(&format!("/status/{f}")).and_then(Value::as_array))
        .flatten()
        .map(|s| int_at(s, "/restartCount"))
        .max()
        .unwrap_or(0)
}

/// The base-2 logarithm of the age of `t` in nanoseconds (-1 for the future): pods of about
/// the same age fall in one bucket. Unknown times come first.
fn log_bucket(t: Option<DateTime<Utc>>, now: DateTime<Utc>) -> i64 {
    let Some(t) = t else { return i64::MIN };
    let age = (now - t).num_nanoseconds().unwrap_or(i64::MAX);
    if age > 0 { (age as f64).log2() as i64 } else { -1 }
}

/// Sort key: pods that sort first are deleted first. Unscheduled before scheduled, Pending before
/// Unknown before Running, not ready before ready, lower deletion cost first, more related pods
/// on the same node first, recently ready first, more restarts first, younger first.
fn deletion_rank(pod: &Value, on_node: usize, now: DateTime<Utc>) -> impl Ord + use<> {
    let ready = is_pod_ready(pod);
    let ready_bucket = if ready { log_bucket(c::ready_since(pod), now) } else { 0 };
    let created = log_bucket(c::parse_time(str_at(pod, "/metadata/creationTimestamp")), now);
    (
        !str_at(pod, "/spec/nodeName").is_empty(),
        phase_rank(pod),
        ready,
        deletion_cost(pod),
        std::cmp::Reverse(on_node),
        ready_bucket,
        std::cmp::Reverse(max_restarts(pod)),
        created,
        uid(pod).to_string(),
    )
}

/// The `n` pods of `owned` to delete first.
fn pods_to_delete(owned: &[Arc<Value>], related: &[Arc<Value>], n: usize, now: DateTime<Utc>) -> Vec<Arc<Value>> {
    if n >= owned.len() {
        return owned.to_vec();
    }
    let mut on_node: HashMap<&str, usize> = HashMap::new();
    for p in related.iter().filter(|p| is_active_pod(p)) {
        *on_node.entry(str_at(p, "/spec/nodeName")).or_default() += 1;
    }
    let mut ranked = owned.to_vec();
    ranked
        .sort_by_cached_key(|p| deletion_rank(p, on_node.get(str_at(p, "/spec/nodeName")).copied().unwrap_or(0), now));
    ranked.truncate(n);
    ranked
}

// ---------------------------------------------------------------------------------------------
// Status

fn calculate_status(
    rs: &Value,
    owned: &[Arc<Value>],
    terminating: usize,
    manage_err: Option<&ApiError>,
    now: DateTime<Utc>,
) -> Value {
    let template_labels = rs
        .pointer("/spec/template/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string())).collect::<Vec<_>>())
        .unwrap_or_default();
    let min_ready = int_at(rs, "/spec/minReadySeconds");
    let fully_labeled = owned
        .iter()
        .filter(|p| {
            let labels = labels_of(p);
            template_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
        })
        .count();
    let ready = owned.iter().filter(|p| is_pod_ready(p)).count();
    let available = owned.iter().filter(|p| is_pod_available(p, min_ready, now)).count();
    let mut status = Map::new();
    status.insert("replicas".into(), json!(owned.len()));
    for (k, v) in [("fullyLabeledReplicas", fully_labeled), ("readyReplicas", ready), ("availableReplicas", available)]
    {
        if v > 0 {
            status.insert(k.into(), json!(v));
        }
    }
    status.insert("terminatingReplicas".into(), json!(terminating));
    let generation = int_at(rs, "/metadata/generation");
    if generation > 0 {
        status.insert("observedGeneration".into(), json!(generation));
    }
    let mut conditions: Vec<Value> =
        rs.pointer("/status/conditions").and_then(Value::as_array).cloned().unwrap_or_default();
    let has_failure = conditions.iter().any(|c| str_at(c, "/type") == "ReplicaFailure");
    match manage_err {
        Some(e) if !has_failure => {
            let want = usize::try_from(int_at(rs, "/spec/replicas")).unwrap_or(0);
            let reason = if owned.len() < want { "FailedCreate" } else { "FailedDelete" };
            conditions.push(json!({"type": "ReplicaFailure", "status": "True",
                "lastTransitionTime": c::now_string(), "reason": reason, "message": e.message}));
        }
        None if has_failure => conditions.retain(|c| str_at(c, "/type") != "ReplicaFailure"),
        _ => {}
    }
    if !conditions.is_empty() {
        status.insert("conditions".into(), json!(conditions));
    }
    Value::Object(status)
}

/// Writes the status when it changed; returns the ReplicaSet as it now stands.
async fn update_status(ctx: &Ctx, rs: &Arc<Value>, status: Value) -> Result<Value, ApiError> {
    if rs.get("status") == Some(&status) {
        return Ok((**rs).clone());
    }
    let mut new = (**rs).clone();
    new["status"] = status;
    debug!(replicaset = name(rs), status = %new["status"], "status");
    match ctx.client.update_status(&replicasets::RESOURCE, namespace(rs), new).await {
        Ok(v) => Ok(v),
        // Deleted meanwhile: nothing left to report on.
        Err(e) if e.code == 404 => Ok((**rs).clone()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, node: &str, phase: &str, ready_secs_ago: Option<i64>, created_secs_ago: i64) -> Arc<Value> {
        let now = Utc::now();
        let ts = |s: i64| c::parse_time(&(now - chrono::Duration::seconds(s)).to_rfc3339()).map(|t| t.to_rfc3339());
        let mut p = json!({"metadata": {"name": name, "uid": name, "creationTimestamp": ts(created_secs_ago)},
            "spec": {"nodeName": node}, "status": {"phase": phase}});
        if let Some(r) = ready_secs_ago {
            p["status"]["conditions"] = json!([{"type": "Ready", "status": "True", "lastTransitionTime": ts(r)}]);
        }
        Arc::new(p)
    }

    #[test]
    fn scale_down_prefers_unscheduled_then_pending_then_unready_then_young() {
        let owned = vec![
            pod("old-ready", "n1", "Running", Some(1000), 2000),
            pod("young-ready", "n2", "Running", Some(10), 20),
            pod("running-unready", "n3", "Running", None, 3000),
            pod("pending", "n4", "Pending", None, 3000),
            pod("unscheduled", "", "Pending", None, 3000),
        ];
        let order: Vec<String> =
            pods_to_delete(&owned, &owned, 4, Utc::now()).iter().map(|p| name(p).to_string()).collect();
        assert_eq!(order, ["unscheduled", "pending", "running-unready", "young-ready"]);
    }

    #[test]
    fn doubled_up_pods_go_before_lonely_ones() {
        let a = pod("a", "n1", "Running", Some(1000), 2000);
        let b = pod("b", "n2", "Running", Some(1000), 2000);
        let sibling = pod("s", "n2", "Running", Some(1000), 2000);
        let order = pods_to_delete(&[a.clone(), b.clone()], &[a, b, sibling], 1, Utc::now());
        assert_eq!(name(&order[0]), "b");
    }

    #[test]
    fn deletion_cost_is_respected() {
        let mut a = (*pod("a", "n1", "Running", Some(10), 20)).clone();
        a["metadata"]["annotations"] = json!({DELETION_COST: "100"});
        let b = pod("b", "n2", "Running", Some(1000), 2000);
        let order = pods_to_delete(&[Arc::new(a), b], &[], 1, Utc::now());
        assert_eq!(name(&order[0]), "b");
    }

    #[test]
    fn template_becomes_a_controlled_pod() {
        let rs = json!({"metadata": {"name": "web-abc", "namespace": "ns", "uid": "u"},
            "spec": {"template": {"metadata": {"labels": {"app": "web"}, "annotations": {"a": "b"}},
                "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        let p = pod_from_template(&rs);
        assert_eq!(p["metadata"]["generateName"], "web-abc-");
        assert_eq!(p["metadata"]["labels"], json!({"app": "web"}));
        assert_eq!(p["metadata"]["ownerReferences"][0]["controller"], true);
        assert_eq!(p["metadata"]["ownerReferences"][0]["kind"], "ReplicaSet");
        assert_eq!(p["spec"]["containers"][0]["image"], "i");
        let n = pod_name("web-abc");
        assert!(n.starts_with("web-abc-") && n.len() == 13, "{n}");
        assert!(pod_name(&"x".repeat(100)).len() == 63);
    }

    #[test]
    fn status_counts_and_failure_condition() {
        let rs = json!({"metadata": {"generation": 2}, "spec": {"replicas": 3, "minReadySeconds": 0,
            "template": {"metadata": {"labels": {"app": "web"}}}}});
        let mut a = (*pod("a", "n1", "Running", Some(5), 10)).clone();
        a["metadata"]["labels"] = json!({"app": "web"});
        let b = pod("b", "n1", "Pending", None, 10);
        let err = ApiError::forbidden("exceeded quota");
        let s = calculate_status(&rs, &[Arc::new(a), b], 1, Some(&err), Utc::now());
        assert_eq!(s["replicas"], 2);
        assert_eq!(s["fullyLabeledReplicas"], 1);
        assert_eq!(s["readyReplicas"], 1);
        assert_eq!(s["availableReplicas"], 1);
        assert_eq!(s["terminatingReplicas"], 1);
        assert_eq!(s["observedGeneration"], 2);
        assert_eq!(s["conditions"][0]["reason"], "FailedCreate");
        let mut rs2 = rs.clone();
        rs2["status"] = s;
        let cleared = calculate_status(&rs2, &[], 0, None, Utc::now());
        assert!(cleared.get("conditions").is_none());
        assert_eq!(cleared["replicas"], 0);
    }
}
