//! Helpers shared by the deployment and replicaset controllers: JSON field access, times, pod
//! readiness and availability, controller references, and claiming (upstream's
//! `ControllerRefManager`): a controller adopts orphans its selector matches and releases the
//! children it no longer matches.

use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use tracing::debug;

use crate::controllers::Ctx;
use crate::registry::Resource;
use crate::selectors::LabelSelector;
use crate::server::errors::ApiError;

pub fn str_at<'a>(obj: &'a Value, pointer: &str) -> &'a str {
    obj.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

pub fn int_at(obj: &Value, pointer: &str) -> i64 {
    obj.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

pub fn uid(obj: &Value) -> &str {
    str_at(obj, "/metadata/uid")
}

pub fn name(obj: &Value) -> &str {
    str_at(obj, "/metadata/name")
}

pub fn namespace(obj: &Value) -> &str {
    str_at(obj, "/metadata/namespace")
}

pub fn is_deleting(obj: &Value) -> bool {
    obj.pointer("/metadata/deletionTimestamp").is_some_and(|t| !t.is_null())
}

pub fn now_string() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s).ok().map(|t| t.with_timezone(&Utc))
}

// ---------------------------------------------------------------------------------------------
// Pods

fn ready_condition(pod: &Value) -> Option<&Value> {
    pod.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some("Ready"))
}

pub fn is_pod_ready(pod: &Value) -> bool {
    ready_condition(pod).is_some_and(|c| c.get("status").and_then(Value::as_str) == Some("True"))
}

/// When a ready pod became ready.
pub fn ready_since(pod: &Value) -> Option<DateTime<Utc>> {
    if !is_pod_ready(pod) {
        return None;
    }
    ready_condition(pod).and_then(|c| c.get("lastTransitionTime")).and_then(Value::as_str).and_then(parse_time)
}

/// Ready for at least `min_ready` seconds at `now`.
pub fn is_pod_available(pod: &Value, min_ready: i64, now: DateTime<Utc>) -> bool {
    if !is_pod_ready(pod) {
        return false;
    }
    if min_ready <= 0 {
        return true;
    }
    ready_since(pod).is_some_and(|t| t + chrono::Duration::seconds(min_ready) < now)
}

fn phase(pod: &Value) -> &str {
    str_at(pod, "/status/phase")
}

fn terminal(pod: &Value) -> bool {
    matches!(phase(pod), "Succeeded" | "Failed")
}

/// Neither finished nor being deleted.
pub fn is_active_pod(pod: &Value) -> bool {
    !terminal(pod) && !is_deleting(pod)
}

/// Being deleted but not finished yet.
pub fn is_terminating_pod(pod: &Value) -> bool {
    is_deleting(pod) && !terminal(pod)
}

// ---------------------------------------------------------------------------------------------
// Owners

/// The owner reference marked `controller: true`.
pub fn controller_ref(obj: &Value) -> Option<&Value> {
    obj.pointer("/metadata/ownerReferences")?
        .as_array()?
        .iter()
        .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
}

/// The name of the controller of `obj` when it is of `kind`.
pub fn controller_name<'a>(obj: &'a Value, kind: &str) -> Option<&'a str> {
    let r = controller_ref(obj)?;
    (r.get("kind").and_then(Value::as_str) == Some(kind)).then(|| r.get("name").and_then(Value::as_str)).flatten()
}

pub fn is_controlled_by(obj: &Value, owner_uid: &str) -> bool {
    controller_ref(obj).and_then(|r| r.get("uid")).and_then(Value::as_str) == Some(owner_uid)
}

/// The controller reference that `owner` (an apps/v1 object of `kind`) puts on its children.
pub fn owner_ref(owner: &Value, kind: &str) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": kind,
        "name": name(owner),
        "uid": uid(owner),
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

/// The owner and the kind of children it claims.
pub struct Claimer<'a> {
    pub owner: &'a Value,
    pub owner_kind: &'static str,
    pub owner_res: &'static Resource,
    pub child_res: &'static Resource,
    pub selector: &'a LabelSelector,
}

impl Claimer<'_> {
    /// The candidates that belong to the owner: those it controls and its selector matches, plus
    /// matching orphans it adopts now; controlled ones that no longer match are released.
    pub async fn claim(&self, ctx: &Ctx, candidates: Vec<Arc<Value>>) -> Result<Vec<Arc<Value>>, ApiError> {
        let owner_uid = uid(self.owner);
        let deleting = is_deleting(self.owner);
        let mut claimed = Vec::with_capacity(candidates.len());
        let mut adoption_checked = false;
        let mut first_err = None;
        for child in candidates {
            let matches = self.selector.matches(&child);
            match controller_ref(&child) {
                Some(r) => {
                    if r.get("uid").and_then(Value::as_str) != Some(owner_uid) {
                        continue;
                    }
                    if matches {
                        claimed.push(child);
                    } else if !deleting && let Err(e) = self.release(ctx, &child).await {
                        first_err.get_or_insert(e);
                    }
                }
                None => {
                    if deleting || !matches || is_deleting(&child) {
                        continue;
                    }
                    if !adoption_checked {
                        self.can_adopt(ctx).await?;
                        adoption_checked = true;
                    }
                    match self.adopt(ctx, &child).await {
                        Ok(Some(adopted)) => claimed.push(Arc::new(adopted)),
                        Ok(None) => {}
                        Err(e) => {
                            first_err.get_or_insert(e);
                        }
                    }
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(claimed),
        }
    }

    /// Adoption needs the owner as stored now, not as cached: same uid and not being deleted.
    async fn can_adopt(&self, ctx: &Ctx) -> Result<(), ApiError> {
        let fresh = ctx.client.get(self.owner_res, namespace(self.owner), name(self.owner)).await?;
        if uid(&fresh) != uid(self.owner) {
            return Err(ApiError::new(
                409,
                "Conflict",
                format!("original {} is gone: got uid {}, wanted {}", name(self.owner), uid(&fresh), uid(self.owner)),
            ));
        }
        if is_deleting(&fresh) {
            return Err(ApiError::new(409, "Conflict", format!("{} has just been deleted", name(self.owner))));
        }
        Ok(())
    }

    async fn adopt(&self, ctx: &Ctx, child: &Value) -> Result<Option<Value>, ApiError> {
        let mut new = child.clone();
        let mut refs = new.pointer("/metadata/ownerReferences").and_then(Value::as_array).cloned().unwrap_or_default();
        refs.push(owner_ref(self.owner, self.owner_kind));
        new["metadata"]["ownerReferences"] = json!(refs);
        debug!(owner = name(self.owner), child = name(child), "adopting");
        match ctx.client.update(self.child_res, namespace(child), new).await {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.code == 404 => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn release(&self, ctx: &Ctx, child: &Value) -> Result<(), ApiError> {
        let mut new = child.clone();
        if let Some(refs) = new.pointer_mut("/metadata/ownerReferences").and_then(Value::as_array_mut) {
            refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(uid(self.owner)));
            if refs.is_empty()
                && let Some(m) = new["metadata"].as_object_mut()
            {
                m.remove("ownerReferences");
            }
        }
        debug!(owner = name(self.owner), child = name(child), "releasing");
        match ctx.client.update(self.child_res, namespace(child), new).await {
            Ok(_) => Ok(()),
            Err(e) if e.code == 404 => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn availability_waits_for_min_ready_seconds() {
        let now = Utc::now();
        let since = (now - chrono::Duration::seconds(5)).to_rfc3339_opts(SecondsFormat::Secs, true);
        let pod = json!({"status": {"phase": "Running",
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": since}]}});
        assert!(is_pod_ready(&pod));
        assert!(is_pod_available(&pod, 0, now));
        assert!(is_pod_available(&pod, 3, now));
        assert!(!is_pod_available(&pod, 10, now));
        let unready = json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}});
        assert!(!is_pod_available(&unready, 0, now));
    }

    #[test]
    fn active_and_terminating() {
        let running = json!({"status": {"phase": "Running"}});
        let deleting =
            json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}, "status": {"phase": "Running"}});
        let done = json!({"status": {"phase": "Succeeded"}});
        assert!(is_active_pod(&running) && !is_terminating_pod(&running));
        assert!(!is_active_pod(&deleting) && is_terminating_pod(&deleting));
        assert!(!is_active_pod(&done) && !is_terminating_pod(&done));
    }

    #[test]
    fn controller_reference() {
        let rs = json!({"metadata": {"name": "web-1", "uid": "u1"}});
        let pod = json!({"metadata": {"ownerReferences": [
            {"kind": "Other", "name": "x", "uid": "u0"}, owner_ref(&rs, "ReplicaSet")]}});
        assert_eq!(controller_name(&pod, "ReplicaSet"), Some("web-1"));
        assert_eq!(controller_name(&pod, "Deployment"), None);
        assert!(is_controlled_by(&pod, "u1"));
        assert!(!is_controlled_by(&pod, "u0"));
    }
}
