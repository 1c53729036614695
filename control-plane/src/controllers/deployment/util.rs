//! Pure helpers of the deployment controller: the pod-template hash, template comparison,
//! revision and replica annotations, int-or-percent fenceposts, conditions and proportional
//! scaling arithmetic. Nothing here talks to the API; the sync code in `mod.rs`/`rollout.rs`
//! calls these on JSON objects read from the caches.

use std::cmp::Ordering;

use serde_json::{Map, Value, json};

use super::common::{int_at, now_string, str_at};

/// The label (and selector term) that ties a ReplicaSet and its pods to one pod template.
pub const HASH_LABEL: &str = "pod-template-hash";
pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
const ROLLBACK_TO: &str = "deprecated.deployment.rollback.to";
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
/// Longest `revision-history` annotation kept.
const MAX_REVISION_HISTORY_CHARS: usize = 2000;

/// Annotations of a Deployment that are never copied to its ReplicaSets (and that
/// `kubectl rollout undo` keeps from the Deployment).
pub fn skip_annotation(key: &str) -> bool {
    matches!(key, LAST_APPLIED | REVISION | REVISION_HISTORY | DESIRED_REPLICAS | MAX_REPLICAS | ROLLBACK_TO)
}

// Condition types and reasons, as the Kubernetes deployment controller words them.
pub const AVAILABLE: &str = "Available";
pub const PROGRESSING: &str = "Progressing";
pub const REPLICA_FAILURE: &str = "ReplicaFailure";
pub const NEW_RS_CREATED: &str = "NewReplicaSetCreated";
pub const FOUND_NEW_RS: &str = "FoundNewReplicaSet";
pub const RS_UPDATED: &str = "ReplicaSetUpdated";
pub const NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
pub const TIMED_OUT: &str = "ProgressDeadlineExceeded";
pub const FAILED_RS_CREATE: &str = "ReplicaSetCreateError";
pub const PAUSED: &str = "DeploymentPaused";
pub const RESUMED: &str = "DeploymentResumed";
pub const MIN_AVAILABLE: &str = "MinimumReplicasAvailable";
pub const MIN_UNAVAILABLE: &str = "MinimumReplicasUnavailable";

// ---------------------------------------------------------------------------------------------
// Templates

/// A copy without nulls, empty strings, objects and arrays, and with object keys sorted: the
/// canonical form in which two templates compare (Go's semantic equality does not tell an empty
/// map from a missing one) and hash.
pub fn normalize(v: &Value) -> Option<Value> {
    match v {
        Value::Null => None,
        Value::String(s) if s.is_empty() => None,
        Value::Array(a) => {
            let items: Vec<Value> = a.iter().map(|x| normalize(x).unwrap_or(Value::Null)).collect();
            (!items.is_empty()).then_some(Value::Array(items))
        }
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let mut out = Map::new();
            for k in keys {
                if let Some(x) = normalize(&m[k]) {
                    out.insert(k.clone(), x);
                }
            }
            (!out.is_empty()).then_some(Value::Object(out))
        }
        other => Some(other.clone()),
    }
}

fn without_hash_label(template: &Value) -> Value {
    let mut t = template.clone();
    if let Some(labels) = t.pointer_mut("/metadata/labels").and_then(Value::as_object_mut) {
        labels.remove(HASH_LABEL);
    }
    t
}

/// Whether two pod templates are equal once the `pod-template-hash` label is ignored.
pub fn equal_ignore_hash(a: &Value, b: &Value) -> bool {
    normalize(&without_hash_label(a)) == normalize(&without_hash_label(b))
}

fn fnv32a(h: &mut u32, bytes: &[u8]) {
    for b in bytes {
        *h ^= u32::from(*b);
        *h = h.wrapping_mul(16_777_619);
    }
}

/// Maps each character to the alphabet Kubernetes uses for generated names (no vowels, no 0/1/3).
pub fn safe_encode(s: &str) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    s.bytes().map(|b| ALPHABET[usize::from(b) % ALPHABET.len()] as char).collect()
}

/// The `pod-template-hash` of a template: FNV-32a of its canonical JSON (and of the collision
/// count when there is one), written in decimal and mapped onto the safe alphabet, as upstream
/// does with its own object hash.
pub fn template_hash(template: &Value, collision_count: Option<i64>) -> String {
    let canonical = normalize(template).unwrap_or_else(|| json!({}));
    let mut h: u32 = 2_166_136_261;
    fnv32a(&mut h, &serde_json::to_vec(&canonical).unwrap_or_default());
    if let Some(c) = collision_count {
        let mut buf = [0u8; 8];
        buf[..4].copy_from_slice(&(c as u32).to_le_bytes());
        fnv32a(&mut h, &buf);
    }
    safe_encode(&h.to_string())
}

// ---------------------------------------------------------------------------------------------
// Numbers

/// An int-or-percent value against `total`: integers as given, `N%` rounded up or down.
pub fn scaled_value(v: Option<&Value>, total: i64, round_up: bool) -> i64 {
    match v {
        Some(Value::Number(n)) => n.as_i64().unwrap_or(0),
        Some(Value::String(s)) => match s.strip_suffix('%').map(|p| p.trim().parse::<i64>()) {
            Some(Ok(p)) => {
                let x = (p * total).max(0);
                if round_up { (x + 99) / 100 } else { x / 100 }
            }
            // Validation only lets percentages through as strings.
            _ => 0,
        },
        _ => 0,
    }
}

pub fn spec_replicas(obj: &Value) -> i64 {
    obj.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1)
}

pub fn is_rolling(d: &Value) -> bool {
    str_at(d, "/spec/strategy/type") != "Recreate"
}

/// maxSurge rounded up and maxUnavailable rounded down; both zero becomes unavailable 1 so that
/// a rollout can proceed.
pub fn fenceposts(d: &Value) -> (i64, i64) {
    let total = spec_replicas(d);
    let ru = d.pointer("/spec/strategy/rollingUpdate");
    let surge = scaled_value(ru.and_then(|r| r.get("maxSurge")), total, true);
    let unavailable = scaled_value(ru.and_then(|r| r.get("maxUnavailable")), total, false);
    if surge == 0 && unavailable == 0 { (0, 1) } else { (surge, unavailable) }
}

pub fn max_surge(d: &Value) -> i64 {
    if is_rolling(d) { fenceposts(d).0 } else { 0 }
}

pub fn max_unavailable(d: &Value) -> i64 {
    let replicas = spec_replicas(d);
    if !is_rolling(d) || replicas == 0 {
        return 0;
    }
    fenceposts(d).1.min(replicas)
}

/// The progress deadline in seconds, unless it is unset or "infinite" (MaxInt32).
pub fn progress_deadline(d: &Value) -> Option<i64> {
    d.pointer("/spec/progressDeadlineSeconds").and_then(Value::as_i64).filter(|s| *s != i64::from(i32::MAX))
}

// ---------------------------------------------------------------------------------------------
// Annotations

fn annotations_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    let meta = &mut obj["metadata"];
    if !meta.get("annotations").is_some_and(Value::is_object) {
        meta["annotations"] = json!({});
    }
    meta["annotations"].as_object_mut().expect("annotations is an object")
}

pub fn annotation<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj.pointer("/metadata/annotations").and_then(|a| a.get(key)).and_then(Value::as_str)
}

/// The revision of a ReplicaSet or Deployment: 0 without the annotation, `None` when it does
/// not parse.
pub fn revision(obj: &Value) -> Option<i64> {
    match annotation(obj, REVISION) {
        None => Some(0),
        Some(v) => v.parse().ok(),
    }
}

pub fn max_revision<'a>(sets: impl IntoIterator<Item = &'a Value>) -> i64 {
    sets.into_iter().filter_map(revision).max().unwrap_or(0)
}

/// Sets the replica-count annotations; whether anything changed.
pub fn set_replicas_annotations(rs: &mut Value, desired: i64, max: i64) -> bool {
    let a = annotations_mut(rs);
    let mut changed = false;
    for (k, v) in [(DESIRED_REPLICAS, desired), (MAX_REPLICAS, max)] {
        let v = v.to_string();
        if a.get(k).and_then(Value::as_str) != Some(v.as_str()) {
            a.insert(k.to_string(), json!(v));
            changed = true;
        }
    }
    changed
}

/// Copies the Deployment's annotations (but the skipped ones) onto the new ReplicaSet, moves its
/// revision to `new_revision` (keeping the old number in `revision-history` when a template is
/// re-used), and on creation sets the replica annotations. Whether anything changed.
pub fn set_new_rs_annotations(d: &Value, rs: &mut Value, new_revision: i64, exists: bool) -> bool {
    let mut changed = false;
    let source: Vec<(String, Value)> = d
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .map(|m| m.iter().filter(|(k, _)| !skip_annotation(k)).map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    let a = annotations_mut(rs);
    for (k, v) in source {
        if a.get(&k) != Some(&v) {
            a.insert(k, v);
            changed = true;
        }
    }
    let old = a.get(REVISION).and_then(Value::as_str).map(str::to_string);
    let old_int = match old.as_deref() {
        None => 0,
        Some(s) => match s.parse::<i64>() {
            Ok(v) => v,
            // An unparsable revision is left alone, as upstream does.
            Err(_) => return changed,
        },
    };
    if old_int < new_revision {
        a.insert(REVISION.into(), json!(new_revision.to_string()));
        changed = true;
        if let Some(old) = old {
            let history = a.get(REVISION_HISTORY).and_then(Value::as_str).unwrap_or("").to_string();
            if history.is_empty() {
                a.insert(REVISION_HISTORY.into(), json!(old));
            } else {
                let mut parts: Vec<&str> = history.split(',').collect();
                let mut total = history.len() + old.len() + 1;
                let mut start = 0;
                while total > MAX_REVISION_HISTORY_CHARS && start < parts.len() {
                    total -= parts[start].len() + 1;
                    start += 1;
                }
                if total <= MAX_REVISION_HISTORY_CHARS {
                    parts = parts.split_off(start);
                    parts.push(&old);
                    a.insert(REVISION_HISTORY.into(), json!(parts.join(",")));
                }
            }
        }
    }
    if !exists {
        let replicas = spec_replicas(d);
        changed |= set_replicas_annotations(rs, replicas, replicas + max_surge(d));
    }
    changed
}

/// Sets the Deployment's revision annotation; whether it changed.
pub fn set_deployment_revision(d: &mut Value, revision: &str) -> bool {
    let a = annotations_mut(d);
    if a.get(REVISION).and_then(Value::as_str) == Some(revision) {
        return false;
    }
    a.insert(REVISION.into(), json!(revision));
    true
}

// ---------------------------------------------------------------------------------------------
// Conditions

pub fn condition<'a>(status: &'a Value, ty: &str) -> Option<&'a Value> {
    status.get("conditions")?.as_array()?.iter().find(|c| c.get("type").and_then(Value::as_str) == Some(ty))
}

/// A Deployment condition stamped now.
pub fn new_condition(ty: &str, status: &str, reason: &str, message: &str) -> Value {
    let now = now_string();
    json!({"type": ty, "status": status, "lastUpdateTime": now, "lastTransitionTime": now, "reason": reason, "message": message})
}

/// Sets a condition as upstream's `SetDeploymentCondition`: nothing when status and reason are
/// the same, the old transition time when only the reason changes, and the condition moves to
/// the end.
pub fn set_condition(status: &mut Value, mut cond: Value) {
    let ty = str_at(&cond, "/type").to_string();
    if let Some(cur) = condition(status, &ty) {
        if cur.get("status") == cond.get("status") && cur.get("reason") == cond.get("reason") {
            return;
        }
        if cur.get("status") == cond.get("status")
            && let Some(t) = cur.get("lastTransitionTime")
        {
            cond["lastTransitionTime"] = t.clone();
        }
    }
    remove_condition(status, &ty);
    if !status.get("conditions").is_some_and(Value::is_array) {
        status["conditions"] = json!([]);
    }
    status["conditions"].as_array_mut().expect("conditions array").push(cond);
}

pub fn remove_condition(status: &mut Value, ty: &str) {
    if let Some(list) = status.get_mut("conditions").and_then(Value::as_array_mut) {
        list.retain(|c| c.get("type").and_then(Value::as_str) != Some(ty));
        if list.is_empty()
            && let Some(m) = status.as_object_mut()
        {
            m.remove("conditions");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// ReplicaSet lists

fn created(obj: &Value) -> &str {
    str_at(obj, "/metadata/creationTimestamp")
}

fn name(obj: &Value) -> &str {
    str_at(obj, "/metadata/name")
}

/// Oldest first; ties by name.
pub fn by_creation(a: &Value, b: &Value) -> Ordering {
    created(a).cmp(created(b)).then_with(|| name(a).cmp(name(b)))
}

/// Lowest revision first; ties by creation.
pub fn by_revision(a: &Value, b: &Value) -> Ordering {
    revision(a).unwrap_or(0).cmp(&revision(b).unwrap_or(0)).then_with(|| by_creation(a, b))
}

/// Largest first; among equal sizes the newer first (scaling up) or the older first (down).
pub fn by_size(a: &Value, b: &Value, newer_first: bool) -> Ordering {
    let size = |r: &Value| int_at(r, "/spec/replicas");
    size(b).cmp(&size(a)).then_with(|| if newer_first { by_creation(b, a) } else { by_creation(a, b) })
}

/// How many replicas `rs` gains (or loses) when the Deployment grows (shrinks) by
/// `to_add` in total, of which `added` are handed out already.
pub fn proportion(rs: &Value, d: &Value, to_add: i64, added: i64) -> i64 {
    let replicas = int_at(rs, "/spec/replicas");
    if replicas == 0 || to_add == 0 || to_add == added {
        return 0;
    }
    let fraction = fraction(rs, d);
    let allowed = to_add - added;
    if to_add > 0 { fraction.min(allowed) } else { fraction.max(allowed) }
}

/// The replicas `rs` should gain for the Deployment's new size, from its share of the size
/// recorded in its `max-replicas` annotation.
fn fraction(rs: &Value, d: &Value) -> i64 {
    let replicas = int_at(rs, "/spec/replicas");
    let desired = spec_replicas(d);
    if desired == 0 {
        return -replicas;
    }
    let deployment_replicas = desired + max_surge(d);
    let annotated = annotation(rs, MAX_REPLICAS)
        .and_then(|v| v.parse::<i64>().ok())
        .unwrap_or_else(|| int_at(d, "/status/replicas"));
    if annotated == 0 {
        return 0;
    }
    let size = (replicas * deployment_replicas) as f64 / annotated as f64;
    size.round() as i64 - replicas
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(replicas: i64, surge: Value, unavailable: Value) -> Value {
        json!({"metadata": {"name": "web", "annotations": {}}, "spec": {"replicas": replicas,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}}}})
    }

    #[test]
    fn fenceposts_round_surge_up_and_unavailable_down() {
        assert_eq!(fenceposts(&deployment(3, json!("25%"), json!("25%"))), (1, 0));
        assert_eq!(fenceposts(&deployment(10, json!("25%"), json!("25%"))), (3, 2));
        assert_eq!(fenceposts(&deployment(10, json!(0), json!("5%"))), (0, 1), "both zero: unavailable 1");
        assert_eq!(fenceposts(&deployment(4, json!(2), json!(1))), (2, 1));
        assert_eq!(max_unavailable(&deployment(2, json!(0), json!(5))), 2, "capped at replicas");
        let mut recreate = deployment(3, json!(1), json!(1));
        recreate["spec"]["strategy"] = json!({"type": "Recreate"});
        assert_eq!((max_surge(&recreate), max_unavailable(&recreate)), (0, 0));
    }

    #[test]
    fn hash_is_stable_and_ignores_empties_and_key_order() {
        let a = json!({"metadata": {"labels": {"app": "web", "x": "y"}, "creationTimestamp": null},
            "spec": {"containers": [{"name": "c", "image": "i", "resources": {}}]}});
        let b = json!({"spec": {"containers": [{"image": "i", "name": "c"}]},
            "metadata": {"labels": {"x": "y", "app": "web"}}});
        let h = template_hash(&a, None);
        assert_eq!(h, template_hash(&b, None));
        assert!(!h.is_empty() && h.len() <= 10);
        assert!(h.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)), "{h}");
        assert_ne!(h, template_hash(&a, Some(1)), "the collision count changes the hash");
        let mut c = a.clone();
        c["spec"]["containers"][0]["image"] = json!("j");
        assert_ne!(h, template_hash(&c, None));
    }

    #[test]
    fn templates_compare_without_the_hash_label() {
        let a = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c"}]}});
        let mut b = a.clone();
        b["metadata"]["labels"][HASH_LABEL] = json!("abc");
        assert!(equal_ignore_hash(&a, &b));
        b["spec"]["containers"][0]["name"] = json!("d");
        assert!(!equal_ignore_hash(&a, &b));
    }

    #[test]
    fn revision_annotations_move_and_keep_history() {
        let d = json!({"metadata": {"annotations": {"kubernetes.io/change-cause": "why", REVISION: "1",
            LAST_APPLIED: "{}"}}, "spec": {"replicas": 3, "strategy": {"type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}}});
        let mut rs = json!({"metadata": {}});
        assert!(set_new_rs_annotations(&d, &mut rs, 1, false));
        let a = &rs["metadata"]["annotations"];
        assert_eq!(a["kubernetes.io/change-cause"], "why");
        assert_eq!(a[REVISION], "1");
        assert_eq!(a[DESIRED_REPLICAS], "3");
        assert_eq!(a[MAX_REPLICAS], "4");
        assert!(a.get(LAST_APPLIED).is_none());
        assert!(!set_new_rs_annotations(&d, &mut rs, 1, true), "nothing new");
        assert!(set_new_rs_annotations(&d, &mut rs, 3, true));
        assert_eq!(rs["metadata"]["annotations"][REVISION], "3");
        assert_eq!(rs["metadata"]["annotations"][REVISION_HISTORY], "1");
        assert!(set_new_rs_annotations(&d, &mut rs, 5, true));
        assert_eq!(rs["metadata"]["annotations"][REVISION_HISTORY], "1,3");
    }

    #[test]
    fn conditions_keep_transition_time_when_status_holds() {
        let mut status = json!({});
        let mut first = new_condition(PROGRESSING, "True", NEW_RS_CREATED, "Created");
        first["lastTransitionTime"] = json!("2020-01-01T00:00:00Z");
        set_condition(&mut status, first);
        set_condition(&mut status, new_condition(AVAILABLE, "True", MIN_AVAILABLE, "ok"));
        set_condition(&mut status, new_condition(PROGRESSING, "True", NEW_RS_AVAILABLE, "done"));
        let conds = status["conditions"].as_array().expect("conditions");
        assert_eq!(conds[0]["type"], AVAILABLE, "a changed condition moves to the end");
        assert_eq!(conds[1]["reason"], NEW_RS_AVAILABLE);
        assert_eq!(conds[1]["lastTransitionTime"], "2020-01-01T00:00:00Z");
        set_condition(&mut status, new_condition(PROGRESSING, "False", TIMED_OUT, "late"));
        assert_ne!(condition(&status, PROGRESSING).expect("set")["lastTransitionTime"], "2020-01-01T00:00:00Z");
        remove_condition(&mut status, PROGRESSING);
        remove_condition(&mut status, AVAILABLE);
        assert_eq!(status, json!({}));
    }

    #[test]
    fn proportional_shares_round_to_nearest() {
        // 10 replicas (+3 surge) scaled to 20 (+5 surge): an RS of 6 recorded at max 13 gets 6*25/13 ≈ 12.
        let d = deployment(20, json!("25%"), json!("25%"));
        let rs = json!({"metadata": {"annotations": {MAX_REPLICAS: "13"}}, "spec": {"replicas": 6}});
        assert_eq!(proportion(&rs, &d, 12, 0), 6);
        assert_eq!(proportion(&rs, &d, 4, 0), 4, "never more than what is left to add");
        let d0 = deployment(0, json!(1), json!(0));
        assert_eq!(proportion(&rs, &d0, -6, 0), -6);
    }
}
