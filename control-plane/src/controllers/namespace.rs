//! The namespace controller: a namespace marked for deletion has everything in it deleted, and
//! once it is empty the `kubernetes` finalizer is removed from `spec.finalizers` (through the
//! `finalize` subresource), which lets the namespace go (kube-controller-manager's `namespace`
//! controller).
//!
//! Pods go first and the rest only once no pod is left (ordered namespace deletion, GA in 1.34).
//! Contents are listed from the store, not the caches, so that "empty" is never a stale answer.
//! While content remains the namespace is looked at again after upstream's estimate: the longest
//! remaining pod grace period, or 15 s for objects held by finalizers. Departing pods also wake it
//! earlier (upstream waits out the grace period; the wait is for the kubelet, whose deletion is the
//! signal). The deletion conditions (`NamespaceContentRemaining`, `NamespaceFinalizersRemaining`,
//! …) are kept on the namespace's status as kube-controller-manager keeps them.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{Value, json};
use tracing::{debug, info};

use super::{Action, Controller, Ctx, Watch};
use crate::registry::{self, RESOURCES, Resource};
use crate::server::errors::ApiError;
use crate::server::internal::DeleteParams;

pub const NAME: &str = "namespace";
/// The finalizer this controller owns.
pub const FINALIZER: &str = "kubernetes";
/// How long to wait for content held by finalizers before looking again anyway.
const FINALIZER_ESTIMATE: Duration = Duration::from_secs(15);

fn namespaces() -> &'static Resource {
    &registry::namespaces::RESOURCE
}

/// Every namespaced resource, pods first.
fn contents() -> impl Iterator<Item = &'static Resource> {
    RESOURCES.iter().copied().filter(|r| r.namespaced)
}

fn is_pods(res: &Resource) -> bool {
    res.group.is_empty() && res.plural == "pods"
}

pub struct NamespaceController;

impl Controller for NamespaceController {
    fn name(&self) -> &'static str {
        NAME
    }

    fn watches(&self) -> Vec<Watch> {
        vec![
            Watch::own(namespaces()),
            // A pod of a terminating namespace going away may be the last thing it waits for.
            Watch::mapped(&registry::pods::RESOURCE, |ctx, change| {
                if change.new.is_some() {
                    return Vec::new();
                }
                let ns = change.object().pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("");
                let terminating = ctx
                    .informers
                    .get(namespaces())
                    .get("", ns)
                    .is_some_and(|n| n.pointer("/metadata/deletionTimestamp").is_some());
                if terminating { vec![ns.to_string()] } else { Vec::new() }
            }),
        ]
    }

    fn reconcile<'a>(&'a self, ctx: &'a Ctx, key: &'a str) -> BoxFuture<'a, Result<Action, ApiError>> {
        Box::pin(sync(ctx, key))
    }
}

fn has_finalizer(ns: &Value) -> bool {
    ns.pointer("/spec/finalizers").and_then(Value::as_array).is_some_and(|f| f.iter().any(|x| x == FINALIZER))
}

async fn sync(ctx: &Ctx, name: &str) -> Result<Action, ApiError> {
    // The live object: several writers edit a terminating namespace.
    let ns = match ctx.client.get(namespaces(), "", name).await {
        Ok(ns) => ns,
        Err(e) if e.code == 404 => return Ok(Action::Done),
        Err(e) => return Err(e),
    };
    if ns.pointer("/metadata/deletionTimestamp").is_none() || !has_finalizer(&ns) {
        return Ok(Action::Done);
    }
    if ns.pointer("/status/phase").and_then(Value::as_str) != Some("Terminating") {
        let mut n = ns.clone();
        n["status"]["phase"] = json!("Terminating");
        ctx.client.update_status(namespaces(), "", n).await?;
    }
    let outcome = delete_contents(ctx, &ns).await;
    set_conditions(ctx, &ns, &outcome).await;
    if let Some(e) = outcome.errors.into_iter().next() {
        return Err(e);
    }
    if outcome.remaining.values().any(|n| *n > 0) {
        debug!(namespace = name, remaining = ?outcome.remaining, "namespace content remains");
        return Ok(Action::RequeueAfter(outcome.estimate.max(Duration::from_secs(1))));
    }
    let r = ctx
        .client
        .finalize_namespace(name, |cur| {
            let mut n = cur.clone();
            let fins: Vec<Value> = n
                .pointer("/spec/finalizers")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter(|f| *f != FINALIZER).cloned().collect())
                .unwrap_or_default();
            n["spec"]["finalizers"] = json!(fins);
            n
        })
        .await;
    match r {
        Ok(_) => {
            info!(namespace = name, "namespace finalized");
            Ok(Action::Done)
        }
        Err(e) if e.code == 404 => Ok(Action::Done),
        Err(e) => Err(e),
    }
}

/// What one round of deleting a namespace's contents left behind.
#[derive(Default)]
struct Outcome {
    /// `resource.group` → objects still there.
    remaining: BTreeMap<String, usize>,
    /// finalizer → objects it still holds.
    finalizers: BTreeMap<String, usize>,
    estimate: Duration,
    errors: Vec<ApiError>,
}

/// Deletes what is in the namespace: pods first, everything else once the pods are gone.
async fn delete_contents(ctx: &Ctx, ns: &Value) -> Outcome {
    let name = ns.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
    let mut out = Outcome::default();
    let (pods, rest): (Vec<&'static Resource>, Vec<&'static Resource>) = contents().partition(|r| is_pods(r));
    for phase in [pods, rest] {
        for res in phase {
            if let Err(e) = delete_all_of(ctx, res, name, ns, &mut out).await {
                out.errors.push(e);
            }
        }
        if out.remaining.values().any(|n| *n > 0) || !out.errors.is_empty() {
            break;
        }
    }
    out
}

async fn delete_all_of(
    ctx: &Ctx,
    res: &'static Resource,
    ns_name: &str,
    ns: &Value,
    out: &mut Outcome,
) -> Result<(), ApiError> {
    let (items, _) = ctx.client.list(res, ns_name).await?;
    if items.is_empty() {
        return Ok(());
    }
    let background = DeleteParams { propagation: Some("Background".into()), ..Default::default() };
    for item in &items {
        if item.pointer("/metadata/deletionTimestamp").is_some() {
            continue;
        }
        let obj_name = item.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
        match ctx.client.delete(res, ns_name, obj_name, &background).await {
            Ok(_) => {}
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    let (left, _) = ctx.client.list(res, ns_name).await?;
    if left.is_empty() {
        return Ok(());
    }
    *out.remaining.entry(format!("{}.{}", res.plural, res.group)).or_default() += left.len();
    for item in &left {
        for f in item.pointer("/metadata/finalizers").and_then(Value::as_array).into_iter().flatten() {
            *out.finalizers.entry(f.as_str().unwrap_or("").to_string()).or_default() += 1;
        }
    }
    let mut estimate = Duration::ZERO;
    if is_pods(res) {
        estimate = pod_grace_estimate(&left, ns);
    }
    if estimate.is_zero()
        && left
            .iter()
            .any(|i| i.pointer("/metadata/finalizers").is_some_and(|f| f.as_array().is_some_and(|a| !a.is_empty())))
    {
        estimate = FINALIZER_ESTIMATE;
    }
    out.estimate = out.estimate.max(estimate);
    Ok(())
}

/// The longest grace period of the remaining running pods, less the time since the namespace was
/// marked for deletion.
fn pod_grace_estimate(pods: &[Value], ns: &Value) -> Duration {
    let grace = pods
        .iter()
        .filter(|p| !matches!(p.pointer("/status/phase").and_then(Value::as_str), Some("Succeeded" | "Failed")))
        .filter_map(|p| p.pointer("/spec/terminationGracePeriodSeconds").and_then(Value::as_i64))
        .max()
        .unwrap_or(0);
    let since = ns
        .pointer("/metadata/deletionTimestamp")
        .and_then(Value::as_str)
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| (chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_seconds())
        .unwrap_or(0);
    if since >= grace { Duration::ZERO } else { Duration::from_secs(u64::try_from(grace - since).unwrap_or(0)) }
}

/// The five deletion conditions kube-controller-manager sets, in its order.
fn conditions(out: &Outcome) -> Vec<(&'static str, &'static str, &'static str, String)> {
    let mut c = vec![
        (
            "NamespaceDeletionDiscoveryFailure",
            "False",
            "ResourcesDiscovered",
            "All resources successfully discovered".to_string(),
        ),
        (
            "NamespaceDeletionGroupVersionParsingFailure",
            "False",
            "ParsedGroupVersions",
            "All legacy kube types successfully parsed".to_string(),
        ),
    ];
    if out.errors.is_empty() {
        c.push((
            "NamespaceDeletionContentFailure",
            "False",
            "ContentDeleted",
            "All content successfully deleted, may be waiting on finalization".to_string(),
        ));
    } else {
        let mut msgs: Vec<String> = out.errors.iter().map(|e| e.message.clone()).collect();
        msgs.sort();
        c.push((
            "NamespaceDeletionContentFailure",
            "True",
            "ContentDeletionFailed",
            format!("Failed to delete all resource types, {} remaining: {}", msgs.len(), msgs.join(", ")),
        ));
    }
    let remaining: Vec<String> =
        out.remaining.iter().filter(|(_, n)| **n > 0).map(|(r, n)| format!("{r} has {n} resource instances")).collect();
    if remaining.is_empty() {
        c.push((
            "NamespaceContentRemaining",
            "False",
            "ContentRemoved",
            "All content successfully removed".to_string(),
        ));
    } else {
        c.push((
            "NamespaceContentRemaining",
            "True",
            "SomeResourcesRemain",
            format!("Some resources are remaining: {}", remaining.join(", ")),
        ));
    }
    let fins: Vec<String> =
        out.finalizers.iter().filter(|(_, n)| **n > 0).map(|(f, n)| format!("{f} in {n} resource instances")).collect();
    if fins.is_empty() {
        c.push((
            "NamespaceFinalizersRemaining",
            "False",
            "ContentRemoved",
            "All content successfully removed".to_string(),
        ));
    } else {
        c.push((
            "NamespaceFinalizersRemaining",
            "True",
            "SomeFinalizerRemain",
            format!("Some finalizers are remaining: {}", fins.join(", ")),
        ));
    }
    c
}

/// Writes the deletion conditions when they changed; best effort.
async fn set_conditions(ctx: &Ctx, ns: &Value, out: &Outcome) {
    let mut list: Vec<Value> = ns.pointer("/status/conditions").and_then(Value::as_array).cloned().unwrap_or_default();
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut changed = false;
    for (kind, status, reason, message) in conditions(out) {
        let new =
            json!({"type": kind, "status": status, "lastTransitionTime": now, "reason": reason, "message": message});
        match list.iter_mut().find(|c| c.get("type").and_then(Value::as_str) == Some(kind)) {
            None => {
                list.push(new);
                changed = true;
            }
            Some(old) => {
                let same = |f: &str| old.get(f) == new.get(f);
                if !(same("status") && same("reason") && same("message")) {
                    if !same("status") {
                        old["lastTransitionTime"] = json!(now);
                    }
                    old["status"] = json!(status);
                    old["reason"] = json!(reason);
                    old["message"] = json!(message);
                    changed = true;
                }
            }
        }
    }
    if !changed {
        return;
    }
    let mut n = ns.clone();
    n["status"]["conditions"] = Value::Array(list);
    if let Err(error) = ctx.client.update_status(namespaces(), "", n).await {
        debug!(%error, "namespace conditions not updated");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_name_what_remains() {
        let mut out = Outcome::default();
        out.remaining.insert("configmaps.".into(), 1);
        out.finalizers.insert("keelson.test/hold".into(), 1);
        let c = conditions(&out);
        assert_eq!(c.len(), 5);
        assert_eq!(c[3].3, "Some resources are remaining: configmaps. has 1 resource instances");
        assert_eq!(c[4].3, "Some finalizers are remaining: keelson.test/hold in 1 resource instances");
        let done = conditions(&Outcome::default());
        assert!(done.iter().all(|(_, status, _, _)| *status == "False"));
    }

    #[test]
    fn pod_estimate_shrinks_with_time() {
        let pods = [json!({"spec": {"terminationGracePeriodSeconds": 30}, "status": {"phase": "Running"}})];
        let fresh = json!({"metadata": {"deletionTimestamp": chrono::Utc::now().to_rfc3339()}});
        assert!(pod_grace_estimate(&pods, &fresh) > Duration::from_secs(25));
        let old = json!({"metadata": {"deletionTimestamp": "2020-01-01T00:00:00Z"}});
        assert_eq!(pod_grace_estimate(&pods, &old), Duration::ZERO);
    }
}
