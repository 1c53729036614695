//! Pod (pods/v1): strategy and discovery entry.
//!
//! Defaulting adds, on top of the shared pod spec defaults, what Kubernetes only fills on Pod
//! objects (requests from limits, `enableServiceLinks`, host-network host ports) and what its
//! admission plugins add to every pod (`serviceAccountName: default`, priority and preemption
//! policy of the built-in classes, the not-ready/unreachable tolerations). Validation adds the
//! update rule that a pod spec is immutable except images, `activeDeadlineSeconds`, added
//! tolerations and removed scheduling gates.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::podspec::checks::{arr, child_obj, default_field, int, is_unset, items_mut, s};
use super::podspec::quantity::Quantity;
use super::podspec::{self, checks};
use super::{AGE_COLUMN, Column, NAME_COLUMN, Resource, Timestamp};
use crate::validation::FieldErrors;

pub static RESOURCE: Resource = Resource {
    group: "",
    version: "v1",
    kind: "Pod",
    plural: "pods",
    singular: "pod",
    short_names: &["po"],
    categories: &["all"],
    namespaced: true,
    subresources: &["status", "binding", "eviction"],
    storage: "pods",
    strategy: &Strategy,
};

pub struct Strategy;

static COLUMNS: &[Column] = &[
    NAME_COLUMN,
    Column::new("Ready", "string", "The aggregate readiness state of this pod for accepting traffic."),
    Column::new("Status", "string", "The aggregate status of the containers in this pod."),
    Column::new(
        "Restarts",
        "string",
        "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
    ),
    AGE_COLUMN,
    Column::wide(
        "IP",
        "string",
        "podIP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.",
    ),
    Column::wide(
        "Node",
        "string",
        "NodeName indicates in which node this pod is scheduled. If empty, this pod is a candidate for scheduling by the scheduler defined in schedulerName. Once this field is set, the kubelet for this node becomes responsible for the lifecycle of this pod. This field should not be used to express a desire for the pod to be scheduled on a specific node. https://kubernetes.io/docs/concepts/scheduling-eviction/assign-pod-node/#nodename",
    ),
    Column::wide(
        "Nominated Node",
        "string",
        "nominatedNodeName is set only when this pod preempts other pods on the node, but it cannot be scheduled right away as preemption victims receive their graceful termination periods. This field does not guarantee that the pod will be scheduled on this node. Scheduler may decide to place the pod elsewhere if other nodes become available sooner. Scheduler may also decide to give the resources on this node to a higher priority pod that is created after preemption. As a result, this field may be different than PodSpec.nodeName when the pod is scheduled.",
    ),
    Column::wide(
        "Readiness Gates",
        "string",
        "If specified, all readiness gates will be evaluated for pod readiness. A pod is ready when all its containers are ready AND all conditions specified in the readiness gates have status equal to \"True\" More info: https://git.k8s.io/enhancements/keps/sig-network/580-pod-readiness-gates",
    ),
];

/// The message Kubernetes gives when an update touches an immutable part of the pod spec.
const POD_UPDATE_FORBIDDEN: &str = "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

impl super::Strategy for Strategy {
    fn default(&self, obj: &mut Value) {
        let Some(m) = obj.as_object_mut() else { return };
        if let Some(spec) = child_obj(m, "spec") {
            default_pod_only(spec);
        }
        if let Some(spec) = m.get_mut("spec") {
            podspec::default_pod_spec(spec);
        }
        if let Some(spec) = m.get_mut("spec").and_then(Value::as_object_mut) {
            requests_from_limits(spec);
        }
        if let Some(status) = m.get_mut("status").and_then(Value::as_object_mut) {
            mirror_ips(status, "podIP", "podIPs");
            mirror_ips(status, "hostIP", "hostIPs");
        }
    }

    fn prepare_create(&self, obj: &mut Value) {
        let qos = obj.get("spec").map_or("BestEffort", qos_class);
        let gated = obj.get("spec").is_some_and(|s| !arr(s, "schedulingGates").is_empty());
        let mut status = json!({"phase": "Pending", "qosClass": qos});
        if gated {
            status["conditions"] = json!([{
                "type": "PodScheduled",
                "status": "False",
                "lastProbeTime": null,
                "lastTransitionTime": null,
                "reason": "SchedulingGated",
                "message": "Scheduling is blocked due to non-empty scheduling gates",
            }]);
        }
        if let Some(m) = obj.as_object_mut() {
            m.insert("status".into(), status);
        }
    }

    fn validate(&self, obj: &Value, old: Option<&Value>, errs: &mut FieldErrors) {
        let spec = obj.get("spec").unwrap_or(&Value::Null);
        podspec::validate_pod_spec(spec, &"spec", errs);
        if let Some(res) = spec.get("resources").filter(|r| r.is_object()) {
            podspec::validate_resources(res, &"spec.resources", errs);
        }
        match old {
            None => {
                for key in ["containers", "initContainers"] {
                    check_image_whitespace(arr(spec, key), &format!("spec.{key}"), errs);
                }
                if !arr(spec, "ephemeralContainers").is_empty() {
                    errs.forbidden("spec.ephemeralContainers", "cannot be set on create");
                }
                if !s(spec, "nodeName").is_empty() && !arr(spec, "schedulingGates").is_empty() {
                    errs.forbidden("spec.nodeName", "cannot be set until all schedulingGates have been cleared");
                }
            }
            Some(old) => validate_update(spec, old.get("spec").unwrap_or(&Value::Null), errs),
        }
    }

    fn columns(&self) -> &'static [Column] {
        COLUMNS
    }

    fn cells(&self, obj: &Value, now: Timestamp) -> Vec<Value> {
        pod_cells(obj, now)
    }

    /// Pods carry `metadata.generation` since Kubernetes 1.33 (pod generation tracking).
    fn tracks_generation(&self) -> bool {
        true
    }

    /// `podStrategy.CheckGracefulDelete`: the requested period, else the pod's
    /// `terminationGracePeriodSeconds`; at once for unscheduled or finished pods; never negative.
    fn graceful_delete_seconds(&self, obj: &Value, requested: Option<i64>) -> i64 {
        let spec = obj.get("spec").unwrap_or(&Value::Null);
        let phase = obj.pointer("/status/phase").and_then(Value::as_str).unwrap_or("");
        let mut period = requested.or_else(|| int(spec, "terminationGracePeriodSeconds")).unwrap_or(0);
        if s(spec, "nodeName").is_empty() || phase == "Failed" || phase == "Succeeded" {
            period = 0;
        }
        if period < 0 { 1 } else { period }
    }

    fn field(&self, obj: &Value, path: &str) -> Option<String> {
        let spec = obj.get("spec").unwrap_or(&Value::Null);
        let status = obj.get("status").unwrap_or(&Value::Null);
        Some(match path {
            "spec.nodeName" => s(spec, "nodeName").into(),
            "spec.restartPolicy" => s(spec, "restartPolicy").into(),
            "spec.schedulerName" => s(spec, "schedulerName").into(),
            "spec.serviceAccountName" => s(spec, "serviceAccountName").into(),
            "spec.hostNetwork" => checks::is_true(spec, "hostNetwork").to_string(),
            "status.phase" => s(status, "phase").into(),
            "status.podIP" => arr(status, "podIPs").first().map_or_else(|| s(status, "podIP"), |ip| s(ip, "ip")).into(),
            "status.nominatedNodeName" => s(status, "nominatedNodeName").into(),
            _ => return None,
        })
    }
}

// ---- defaulting --------------------------------------------------------------------------------

const NOT_READY_TAINT: &str = "node.kubernetes.io/not-ready";
const UNREACHABLE_TAINT: &str = "node.kubernetes.io/unreachable";

/// Defaults that Kubernetes applies to Pod objects only (never to templates).
fn default_pod_only(spec: &mut Map<String, Value>) {
    if spec.get("enableServiceLinks").is_none_or(Value::is_null) {
        spec.insert("enableServiceLinks".into(), json!(true));
    }
    if spec.get("hostNetwork").and_then(Value::as_bool) == Some(true) {
        for key in ["containers", "initContainers"] {
            for c in items_mut(spec, key) {
                for p in c.get_mut("ports").and_then(Value::as_array_mut).into_iter().flatten() {
                    if let Some(p) = p.as_object_mut()
                        && p.get("hostPort").and_then(Value::as_i64).unwrap_or(0) == 0
                    {
                        let cp = p.get("containerPort").cloned().unwrap_or(json!(0));
                        p.insert("hostPort".into(), cp);
                    }
                }
            }
        }
    }
    // ServiceAccount admission.
    if is_unset(spec, "serviceAccountName") && is_unset(spec, "serviceAccount") {
        spec.insert("serviceAccountName".into(), json!("default"));
    }
    // Priority admission: the built-in classes and the no-class default. Pods naming another
    // PriorityClass need a store lookup, which the REST layer must do.
    let class = spec.get("priorityClassName").and_then(Value::as_str).unwrap_or("");
    let builtin = match class {
        "" => Some(0),
        "system-node-critical" => Some(2_000_001_000),
        "system-cluster-critical" => Some(2_000_000_000),
        _ => None,
    };
    if let Some(priority) = builtin {
        default_field(spec, "priority", json!(priority));
        default_field(spec, "preemptionPolicy", json!("PreemptLowerPriority"));
    }
    // DefaultTolerationSeconds admission.
    let tolerations = spec.get("tolerations").and_then(Value::as_array).cloned().unwrap_or_default();
    let tolerates = |taint: &str| {
        tolerations.iter().any(|t| {
            let key = s(t, "key");
            let effect = s(t, "effect");
            (key == taint || key.is_empty()) && (effect == "NoExecute" || effect.is_empty())
        })
    };
    let mut added = Vec::new();
    for taint in [NOT_READY_TAINT, UNREACHABLE_TAINT] {
        if !tolerates(taint) {
            added.push(json!({"key": taint, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}));
        }
    }
    if !added.is_empty() {
        let mut all = tolerations;
        all.extend(added);
        spec.insert("tolerations".into(), Value::Array(all));
    }
}

/// `SetDefaults_Pod`: a container with limits but no request for a resource requests its limit.
fn requests_from_limits(spec: &mut Map<String, Value>) {
    for key in ["containers", "initContainers"] {
        for c in items_mut(spec, key) {
            let Some(res) = c.get_mut("resources").and_then(Value::as_object_mut) else { continue };
            let Some(limits) = res.get("limits").and_then(Value::as_object).cloned() else { continue };
            if let Some(requests) = child_obj(res, "requests") {
                for (k, v) in limits {
                    requests.entry(k).or_insert(v);
                }
            }
        }
    }
}

/// Keeps the singular and plural IP fields of the status in step (v1 conversion).
fn mirror_ips(status: &mut Map<String, Value>, single: &str, plural: &str) {
    let first = status.get(plural).and_then(Value::as_array).and_then(|a| a.first()).map(|ip| s(ip, "ip").to_string());
    match first {
        Some(ip) => {
            status.insert(single.into(), json!(ip));
        }
        None => {
            let ip = status.get(single).and_then(Value::as_str).unwrap_or("");
            if !ip.is_empty() {
                let list = json!([{"ip": ip}]);
                status.insert(plural.into(), list);
            }
        }
    }
}

/// Kubernetes' `GetPodQOS`: BestEffort without cpu/memory requests or limits, Guaranteed when
/// every container limits cpu and memory and requests equal limits, Burstable otherwise. Uses
/// the pod-level `resources` when set.
pub(crate) fn qos_class(spec: &Value) -> &'static str {
    let mut requests: BTreeMap<&str, Quantity> = BTreeMap::new();
    let mut limits: BTreeMap<&str, Quantity> = BTreeMap::new();
    let mut guaranteed = true;
    let pod_level = spec.get("resources").filter(|r| r.as_object().is_some_and(|o| !o.is_empty()));
    let sources: Vec<&Value> = match pod_level {
        Some(r) => vec![r],
        None => arr(spec, "containers")
            .iter()
            .chain(arr(spec, "initContainers"))
            .map(|c| c.get("resources").unwrap_or(&Value::Null))
            .collect(),
    };
    for res in sources {
        let lim_map = checks::obj(res, "limits");
        // A missing request is the limit (SetDefaults_Pod), whatever order the hooks run in.
        let req_map = checks::obj(res, "requests");
        for name in ["cpu", "memory"] {
            let req = req_map.and_then(|m| m.get(name)).or_else(|| lim_map.and_then(|m| m.get(name)));
            if let Some(q) = req.and_then(|v| Quantity::from_json(v).ok()).filter(|q| *q > Quantity::zero()) {
                let e = requests.entry(name).or_insert_with(Quantity::zero);
                *e = e.add(&q);
            }
        }
        let mut found = 0;
        for name in ["cpu", "memory"] {
            if let Some(q) = lim_map
                .and_then(|m| m.get(name))
                .and_then(|v| Quantity::from_json(v).ok())
                .filter(|q| *q > Quantity::zero())
            {
                found += 1;
                let e = limits.entry(name).or_insert_with(Quantity::zero);
                *e = e.add(&q);
            }
        }
        if found < 2 {
            guaranteed = false;
        }
    }
    if requests.is_empty() && limits.is_empty() {
        return "BestEffort";
    }
    if guaranteed && requests.iter().all(|(k, v)| limits.get(k) == Some(v)) && requests.len() == limits.len() {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

// ---- validation --------------------------------------------------------------------------------

fn check_image_whitespace(containers: &[Value], path: &str, errs: &mut FieldErrors) {
    for (i, c) in containers.iter().enumerate() {
        let image = s(c, "image");
        if image.trim() != image {
            errs.invalid(format!("{path}[{i}].image"), json!(image), "must not have leading or trailing whitespace");
        }
    }
}

/// `ValidatePodUpdate`'s spec rules.
fn validate_update(new: &Value, old: &Value, errs: &mut FieldErrors) {
    for key in ["containers", "initContainers"] {
        let (n, o) = (arr(new, key), arr(old, key));
        if n.len() != o.len() {
            errs.forbidden(format!("spec.{key}"), "pod updates may not add or remove containers");
            return;
        }
        for (i, c) in n.iter().enumerate() {
            let image = s(c, "image");
            if image.is_empty() {
                errs.required(format!("spec.{key}[{i}].image"), "");
            }
            if image.trim() != image {
                errs.invalid(
                    format!("spec.{key}[{i}].image"),
                    json!(image),
                    "must not have leading or trailing whitespace",
                );
            }
        }
    }
    match (int(new, "activeDeadlineSeconds"), int(old, "activeDeadlineSeconds")) {
        (Some(n), _) if !(0..=i64::from(i32::MAX)).contains(&n) => {
            errs.invalid("spec.activeDeadlineSeconds", json!(n), checks::range_error(0, i64::from(i32::MAX)));
            return;
        }
        (Some(n), Some(o)) if o < n => {
            errs.invalid("spec.activeDeadlineSeconds", json!(n), "must be less than or equal to previous value");
            return;
        }
        (None, Some(_)) => {
            errs.invalid(
                "spec.activeDeadlineSeconds",
                Value::Null,
                "must not update from a positive integer to nil value",
            );
        }
        _ => {}
    }
    validate_only_added_tolerations(arr(new, "tolerations"), arr(old, "tolerations"), errs);
    let old_gates: Vec<&str> = arr(old, "schedulingGates").iter().map(|g| s(g, "name")).collect();
    for g in arr(new, "schedulingGates") {
        let name = s(g, "name");
        if !old_gates.contains(&name) {
            errs.forbidden(
                "spec.schedulingGates",
                format!("only deletion is allowed, but found new scheduling gate '{name}'"),
            );
        }
    }
    if new == old {
        return;
    }
    // Compare with the mutable fields taken from the old spec.
    let mut munged = new.clone();
    if let Some(m) = munged.as_object_mut() {
        for key in ["containers", "initContainers"] {
            for (i, c) in items_mut(m, key).enumerate() {
                if let Some(c) = c.as_object_mut() {
                    match arr(old, key).get(i).and_then(|oc| oc.get("image")) {
                        Some(img) => c.insert("image".into(), img.clone()),
                        None => c.remove("image"),
                    };
                }
            }
        }
        for key in ["activeDeadlineSeconds", "schedulingGates", "tolerations", "ephemeralContainers"] {
            match old.get(key) {
                Some(v) => m.insert(key.into(), v.clone()),
                None => m.remove(key),
            };
        }
        if int(old, "terminationGracePeriodSeconds").is_some_and(|v| v < 0)
            && int(new, "terminationGracePeriodSeconds") == Some(1)
        {
            m.insert("terminationGracePeriodSeconds".into(), old["terminationGracePeriodSeconds"].clone());
        }
    }
    if &munged != old {
        errs.forbidden("spec", POD_UPDATE_FORBIDDEN);
    }
}

fn validate_only_added_tolerations(new: &[Value], old: &[Value], errs: &mut FieldErrors) {
    let strip = |t: &Value| {
        let mut t = t.clone();
        if let Some(m) = t.as_object_mut() {
            m.remove("tolerationSeconds");
        }
        t
    };
    for o in old {
        let o = strip(o);
        if !new.iter().any(|n| strip(n) == o) {
            errs.forbidden("spec.tolerations", "existing toleration can not be modified except its tolerationSeconds");
            return;
        }
    }
}

// ---- table -------------------------------------------------------------------------------------

fn pod_cells(obj: &Value, now: Timestamp) -> Vec<Value> {
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    let status = obj.get("status").unwrap_or(&Value::Null);
    let meta = obj.get("metadata").unwrap_or(&Value::Null);
    let init_specs = arr(spec, "initContainers");
    let restartable = |name: &str| init_specs.iter().any(|c| s(c, "name") == name && s(c, "restartPolicy") == "Always");

    let total = arr(spec, "containers").len() + init_specs.iter().filter(|c| s(c, "restartPolicy") == "Always").count();
    let mut ready = 0;
    let mut restarts: i64 = 0;
    let mut sidecar_restarts: i64 = 0;
    let mut last_restart: Option<String> = None;
    let mut last_sidecar_restart: Option<String> = None;
    let phase = s(status, "phase");
    let mut reason = if s(status, "reason").is_empty() { phase.to_string() } else { s(status, "reason").to_string() };
    if arr(status, "conditions").iter().any(|c| s(c, "type") == "PodScheduled" && s(c, "reason") == "SchedulingGated") {
        reason = "SchedulingGated".into();
    }

    let later = |cur: &mut Option<String>, cs: &Value| {
        if let Some(t) = cs.pointer("/lastState/terminated/finishedAt").and_then(Value::as_str)
            && cur.as_deref().is_none_or(|c| parse_time(c) < parse_time(t))
        {
            *cur = Some(t.to_string());
        }
    };

    let init_statuses = arr(status, "initContainerStatuses");
    let mut initializing = false;
    for (i, cs) in init_statuses.iter().enumerate() {
        restarts += int(cs, "restartCount").unwrap_or(0);
        later(&mut last_restart, cs);
        let sidecar = restartable(s(cs, "name"));
        if sidecar {
            sidecar_restarts += int(cs, "restartCount").unwrap_or(0);
            later(&mut last_sidecar_restart, cs);
        }
        let state = cs.get("state").unwrap_or(&Value::Null);
        let terminated = state.get("terminated").filter(|t| t.is_object());
        let waiting = state.get("waiting").filter(|w| w.is_object());
        if terminated.is_some_and(|t| int(t, "exitCode") == Some(0)) {
            continue;
        }
        if sidecar && cs.get("started").and_then(Value::as_bool) == Some(true) {
            if checks::is_true(cs, "ready") {
                ready += 1;
            }
            continue;
        }
        if let Some(t) = terminated {
            reason = if !s(t, "reason").is_empty() {
                format!("Init:{}", s(t, "reason"))
            } else if int(t, "signal").unwrap_or(0) != 0 {
                format!("Init:Signal:{}", int(t, "signal").unwrap_or(0))
            } else {
                format!("Init:ExitCode:{}", int(t, "exitCode").unwrap_or(0))
            };
        } else if let Some(w) = waiting.filter(|w| !s(w, "reason").is_empty() && s(w, "reason") != "PodInitializing") {
            reason = format!("Init:{}", s(w, "reason"));
        } else {
            reason = format!("Init:{i}/{}", init_specs.len());
        }
        initializing = true;
        break;
    }

    let initialized =
        arr(status, "conditions").iter().any(|c| s(c, "type") == "Initialized" && s(c, "status") == "True");
    if !initializing || initialized {
        restarts = sidecar_restarts;
        last_restart = last_sidecar_restart;
        let mut has_running = false;
        for cs in arr(status, "containerStatuses").iter().rev() {
            restarts += int(cs, "restartCount").unwrap_or(0);
            later(&mut last_restart, cs);
            let state = cs.get("state").unwrap_or(&Value::Null);
            let waiting = state.get("waiting").filter(|w| w.is_object());
            let terminated = state.get("terminated").filter(|t| t.is_object());
            if let Some(w) = waiting.filter(|w| !s(w, "reason").is_empty()) {
                reason = s(w, "reason").into();
            } else if let Some(t) = terminated {
                reason = if !s(t, "reason").is_empty() {
                    s(t, "reason").into()
                } else if int(t, "signal").unwrap_or(0) != 0 {
                    format!("Signal:{}", int(t, "signal").unwrap_or(0))
                } else {
                    format!("ExitCode:{}", int(t, "exitCode").unwrap_or(0))
                };
            } else if checks::is_true(cs, "ready") && state.get("running").is_some_and(Value::is_object) {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            let pod_ready =
                arr(status, "conditions").iter().any(|c| s(c, "type") == "Ready" && s(c, "status") == "True");
            reason = if pod_ready { "Running".into() } else { "NotReady".into() };
        }
    }

    let deleting = meta.get("deletionTimestamp").is_some_and(|d| !d.is_null());
    if deleting && s(status, "reason") == "NodeLost" {
        reason = "Unknown".into();
    } else if deleting && phase != "Succeeded" && phase != "Failed" {
        reason = "Terminating".into();
    }

    let restarts_cell = match last_restart {
        Some(t) if restarts != 0 => format!("{restarts} ({} ago)", super::age_since(Some(&t), now)),
        _ => restarts.to_string(),
    };

    let non_empty = |v: &str| if v.is_empty() { "<none>".to_string() } else { v.to_string() };
    let ip = arr(status, "podIPs").first().map_or("", |ip| s(ip, "ip"));
    let gates = arr(spec, "readinessGates");
    let gates_cell = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let true_count = gates
            .iter()
            .filter(|g| {
                arr(status, "conditions")
                    .iter()
                    .find(|c| s(c, "type") == s(g, "conditionType"))
                    .is_some_and(|c| s(c, "status") == "True")
            })
            .count();
        format!("{true_count}/{}", gates.len())
    };
    vec![
        super::name_cell(obj),
        json!(format!("{ready}/{total}")),
        json!(reason),
        json!(restarts_cell),
        super::age_cell(obj, now),
        json!(non_empty(ip)),
        json!(non_empty(s(spec, "nodeName"))),
        json!(non_empty(s(status, "nominatedNodeName"))),
        json!(gates_cell),
    ]
}

fn parse_time(t: &str) -> Option<chrono::DateTime<chrono::FixedOffset>> {
    chrono::DateTime::parse_from_rfc3339(t).ok()
}

#[cfg(test)]
mod tests {
    use super::super::Strategy as _;
    use super::*;

    fn created(pod: Value) -> Value {
        let mut pod = pod;
        Strategy.default(&mut pod);
        Strategy.prepare_create(&mut pod);
        pod
    }

    fn errors(obj: &Value, old: Option<&Value>) -> Vec<String> {
        let mut errs = FieldErrors::default();
        Strategy.validate(obj, old, &mut errs);
        errs.0.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn minimal_pod_defaults_match_kubectl_output() {
        // `kubectl run web --image=nginx` on Kubernetes 1.35 (minus the token volume).
        let pod = created(json!({"metadata": {"name": "web", "labels": {"run": "web"}},
            "spec": {"containers": [{"name": "web", "image": "nginx"}]}}));
        assert_eq!(
            pod["spec"],
            json!({
                "containers": [{
                    "name": "web", "image": "nginx", "imagePullPolicy": "Always", "resources": {},
                    "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File"
                }],
                "dnsPolicy": "ClusterFirst",
                "enableServiceLinks": true,
                "preemptionPolicy": "PreemptLowerPriority",
                "priority": 0,
                "restartPolicy": "Always",
                "schedulerName": "default-scheduler",
                "securityContext": {},
                "serviceAccount": "default",
                "serviceAccountName": "default",
                "terminationGracePeriodSeconds": 30,
                "tolerations": [
                    {"effect": "NoExecute", "key": "node.kubernetes.io/not-ready", "operator": "Exists", "tolerationSeconds": 300},
                    {"effect": "NoExecute", "key": "node.kubernetes.io/unreachable", "operator": "Exists", "tolerationSeconds": 300}
                ]
            })
        );
        assert_eq!(pod["status"], json!({"phase": "Pending", "qosClass": "BestEffort"}));
        assert!(errors(&pod, None).is_empty(), "{:?}", errors(&pod, None));
    }

    #[test]
    fn qos_classes() {
        let with =
            |res: Value| created(json!({"spec": {"containers": [{"name": "a", "image": "b", "resources": res}]}}));
        assert_eq!(with(json!({"limits": {"cpu": "1", "memory": "1Gi"}}))["status"]["qosClass"], "Guaranteed");
        let g = with(json!({"limits": {"cpu": "1", "memory": "1Gi"}}));
        assert_eq!(g["spec"]["containers"][0]["resources"]["requests"], json!({"cpu": "1", "memory": "1Gi"}));
        assert_eq!(with(json!({"requests": {"cpu": "100m"}}))["status"]["qosClass"], "Burstable");
        assert_eq!(
            with(json!({"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}}))["status"]
                ["qosClass"],
            "Burstable"
        );
    }

    #[test]
    fn update_may_only_change_images() {
        let old = created(json!({"spec": {"containers": [{"name": "web", "image": "nginx:1"}]}}));
        let mut new = old.clone();
        new["spec"]["containers"][0]["image"] = json!("nginx:2");
        assert!(errors(&new, Some(&old)).is_empty());
        new["spec"]["containers"][0]["ports"] = json!([{"containerPort": 80, "protocol": "TCP"}]);
        assert_eq!(errors(&new, Some(&old)), vec![format!("spec: Forbidden: {POD_UPDATE_FORBIDDEN}")]);
        let mut fewer = old.clone();
        fewer["spec"]["containers"] = json!([]);
        assert!(
            errors(&fewer, Some(&old))
                .contains(&"spec.containers: Forbidden: pod updates may not add or remove containers".to_string())
        );
    }

    #[test]
    fn running_pod_with_restarts_prints_like_kubectl() {
        let now = Timestamp(chrono::DateTime::parse_from_rfc3339("2026-01-01T01:00:00Z").expect("time").to_utc());
        let pod = json!({
            "metadata": {"name": "web-1", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"nodeName": "node-1", "containers": [{"name": "a"}, {"name": "b"}]},
            "status": {
                "phase": "Running",
                "podIP": "10.244.1.5", "podIPs": [{"ip": "10.244.1.5"}],
                "conditions": [{"type": "Ready", "status": "False"}],
                "containerStatuses": [
                    {"name": "a", "ready": true, "restartCount": 3, "state": {"running": {}},
                     "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2026-01-01T00:55:00Z"}}},
                    {"name": "b", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}
                ]
            }
        });
        assert_eq!(
            Strategy.cells(&pod, now),
            vec![
                json!("web-1"),
                json!("1/2"),
                json!("CrashLoopBackOff"),
                json!("3 (5m ago)"),
                json!("60m"),
                json!("10.244.1.5"),
                json!("node-1"),
                json!("<none>"),
                json!("<none>")
            ]
        );
        let pending = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}]},
            "status": {"phase": "Pending", "containerStatuses": [{"name": "a", "state": {"waiting": {"reason": "ContainerCreating"}}}]}});
        assert_eq!(Strategy.cells(&pending, now)[2], json!("ContainerCreating"));
        let done = json!({"metadata": {"name": "p", "deletionTimestamp": "2026-01-01T00:59:00Z"}, "spec": {"containers": [{"name": "a"}]},
            "status": {"phase": "Running", "containerStatuses": [{"name": "a", "ready": true, "state": {"running": {}}}]}});
        assert_eq!(Strategy.cells(&done, now)[2], json!("Terminating"));
    }

    #[test]
    fn graceful_deletion() {
        let bound =
            json!({"spec": {"nodeName": "n1", "terminationGracePeriodSeconds": 30}, "status": {"phase": "Running"}});
        assert_eq!(Strategy.graceful_delete_seconds(&bound, None), 30);
        assert_eq!(Strategy.graceful_delete_seconds(&bound, Some(0)), 0);
        assert_eq!(Strategy.graceful_delete_seconds(&bound, Some(-5)), 1);
        let pending = json!({"spec": {"terminationGracePeriodSeconds": 30}});
        assert_eq!(Strategy.graceful_delete_seconds(&pending, None), 0);
    }

    #[test]
    fn field_selectors() {
        let pod = json!({"spec": {"nodeName": "n1", "hostNetwork": true}, "status": {"phase": "Running", "podIPs": [{"ip": "10.0.0.1"}]}});
        assert_eq!(Strategy.field(&pod, "spec.nodeName").as_deref(), Some("n1"));
        assert_eq!(Strategy.field(&pod, "spec.hostNetwork").as_deref(), Some("true"));
        assert_eq!(Strategy.field(&pod, "status.podIP").as_deref(), Some("10.0.0.1"));
        assert_eq!(Strategy.field(&pod, "spec.restartPolicy").as_deref(), Some(""));
        assert_eq!(Strategy.field(&pod, "spec.bogus"), None);
    }
}
