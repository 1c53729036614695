//! StatefulSet (statefulsets.apps/v1): strategy and discovery entry.
//!
//! Defaults as in 1.35: one replica, `OrderedReady` pods, a RollingUpdate strategy with
//! partition 0 and maxUnavailable 1 (the `MaxUnavailableStatefulSet` gate is on by default),
//! ten revisions, PVCs retained. Only a few spec fields may change after creation.

use serde_json::{Value, json};

use super::apps_util::{self as util, CONTAINERS_COLUMN, IMAGES_COLUMN};
use super::{AGE_COLUMN, Column, NAME_COLUMN, Resource, ScalePaths, Timestamp, age_cell, name_cell};
use crate::validation::FieldErrors;

pub static RESOURCE: Resource = Resource {
    group: "apps",
    version: "v1",
    kind: "StatefulSet",
    plural: "statefulsets",
    singular: "statefulset",
    short_names: &["sts"],
    categories: &["all"],
    namespaced: true,
    subresources: &["status", "scale"],
    storage: "statefulsets",
    strategy: &Strategy,
};

pub struct Strategy;

static COLUMNS: &[Column] = &[
    NAME_COLUMN,
    Column::new("Ready", "string", "Number of the pod with ready state"),
    AGE_COLUMN,
    CONTAINERS_COLUMN,
    IMAGES_COLUMN,
];

/// Spec fields an update may change; any other change is forbidden.
const MUTABLE: &[&str] = &[
    "replicas",
    "ordinals",
    "template",
    "updateStrategy",
    "revisionHistoryLimit",
    "persistentVolumeClaimRetentionPolicy",
    "minReadySeconds",
];

impl super::Strategy for Strategy {
    fn tracks_generation(&self) -> bool {
        true
    }

    fn default(&self, obj: &mut Value) {
        let Some(spec) = util::child(obj, "spec") else { return };
        util::default_str(spec, "podManagementPolicy", "OrderedReady");
        if let Some(strategy) = util::child(spec, "updateStrategy") {
            if util::is_empty(strategy.get("type")) {
                strategy["type"] = json!("RollingUpdate");
                util::child(strategy, "rollingUpdate");
            }
            if strategy["type"] == "RollingUpdate"
                && let Some(rolling) = strategy.get_mut("rollingUpdate").filter(|r| r.is_object())
            {
                util::default_field(rolling, "partition", json!(0));
                util::default_field(rolling, "maxUnavailable", json!(1));
            }
        }
        if let Some(policy) = util::child(spec, "persistentVolumeClaimRetentionPolicy") {
            util::default_str(policy, "whenDeleted", "Retain");
            util::default_str(policy, "whenScaled", "Retain");
        }
        util::default_field(spec, "replicas", json!(1));
        util::default_field(spec, "revisionHistoryLimit", json!(10));
        for claim in spec.get_mut("volumeClaimTemplates").and_then(Value::as_array_mut).into_iter().flatten() {
            default_claim_template(claim);
        }
        util::default_template(obj);
    }

    fn prepare_create(&self, obj: &mut Value) {
        // `replicas` and `availableReplicas` are not omitempty in `StatefulSetStatus`.
        obj["status"] = json!({"replicas": 0, "availableReplicas": 0});
    }

    fn validate(&self, obj: &Value, old: Option<&Value>, errs: &mut FieldErrors) {
        match obj.pointer("/spec/podManagementPolicy").and_then(Value::as_str).unwrap_or("") {
            "" => errs.required("spec.podManagementPolicy", ""),
            "OrderedReady" | "Parallel" => {}
            other => errs.invalid("spec.podManagementPolicy", json!(other), "must be 'OrderedReady' or 'Parallel'"),
        }
        validate_update_strategy(obj, errs);
        validate_retention_policy(obj, errs);
        util::nonnegative(obj, "/spec/replicas", "spec.replicas", errs);
        util::nonnegative(obj, "/spec/minReadySeconds", "spec.minReadySeconds", errs);
        util::nonnegative(obj, "/spec/revisionHistoryLimit", "spec.revisionHistoryLimit", errs);
        util::nonnegative(obj, "/spec/ordinals/start", "spec.ordinals.start", errs);
        util::validate_workload_selector(obj, "statefulset", Some(""), errs);
        util::validate_template(obj, errs);
        util::validate_long_running_template(obj, "StatefulSet", errs);
        for (i, claim) in util::array_at(obj, "/spec/volumeClaimTemplates").iter().enumerate() {
            if util::str_or_empty(claim, "/metadata/name").is_empty() {
                errs.required(
                    format!("spec.volumeClaimTemplates[{i}].metadata.name"),
                    "name or generateName is required",
                );
            }
        }
        if let Some(old) = old {
            validate_update(obj, old, errs);
        }
    }

    fn columns(&self) -> &'static [Column] {
        COLUMNS
    }

    fn cells(&self, obj: &Value, now: Timestamp) -> Vec<Value> {
        let ready = util::int_at(obj, "/status/readyReplicas");
        let desired = util::int_at(obj, "/spec/replicas");
        let (names, images) = util::container_cells(obj.pointer("/spec/template"));
        vec![name_cell(obj), json!(format!("{ready}/{desired}")), age_cell(obj, now), names, images]
    }

    fn scale(&self) -> Option<ScalePaths> {
        Some(ScalePaths {
            spec_replicas: "/spec/replicas",
            status_replicas: "/status/replicas",
            selector: "/spec/selector",
        })
    }
}

/// The defaults a `PersistentVolumeClaim` template gets inside a StatefulSet.
fn default_claim_template(claim: &mut Value) {
    if !claim.is_object() {
        return;
    }
    util::default_str(claim, "apiVersion", "v1");
    util::default_str(claim, "kind", "PersistentVolumeClaim");
    if let Some(spec) = util::child(claim, "spec") {
        super::podspec::default_pvc_spec(spec);
    }
    if let Some(status) = util::child(claim, "status") {
        util::default_str(status, "phase", "Pending");
    }
}

fn validate_update_strategy(obj: &Value, errs: &mut FieldErrors) {
    let strategy = obj.pointer("/spec/updateStrategy").unwrap_or(&Value::Null);
    let rolling = strategy.get("rollingUpdate").filter(|r| !r.is_null());
    match strategy.get("type").and_then(Value::as_str).unwrap_or("") {
        "" => errs.required("spec.updateStrategy", ""),
        "OnDelete" => {
            if let Some(r) = rolling {
                errs.invalid(
                    "spec.updateStrategy.rollingUpdate",
                    r.clone(),
                    "only allowed for updateStrategy 'RollingUpdate'",
                );
            }
        }
        "RollingUpdate" => {
            if let Some(r) = rolling {
                util::nonnegative(r, "/partition", "spec.updateStrategy.rollingUpdate.partition", errs);
                if let Some(max) = r.get("maxUnavailable").filter(|m| !m.is_null()) {
                    let field = "spec.updateStrategy.rollingUpdate.maxUnavailable";
                    util::validate_int_or_percent(max, field, errs);
                    if util::int_or_percent_value(max) == 0 {
                        errs.invalid(field, max.clone(), "must be greater than 0");
                    }
                    util::not_more_than_100_percent(max, field, errs);
                }
            }
        }
        _ => errs.invalid("spec.updateStrategy", strategy.clone(), "must be 'RollingUpdate' or 'OnDelete'"),
    }
}

fn validate_retention_policy(obj: &Value, errs: &mut FieldErrors) {
    let Some(policy) = obj.pointer("/spec/persistentVolumeClaimRetentionPolicy").filter(|p| !p.is_null()) else {
        return;
    };
    for key in ["whenDeleted", "whenScaled"] {
        let v = policy.get(key).cloned().unwrap_or_else(|| json!(""));
        if !matches!(v.as_str(), Some("Retain" | "Delete")) {
            errs.not_supported(format!("spec.persistentVolumeClaimRetentionPolicy.{key}"), v, &["Retain", "Delete"]);
        }
    }
}

fn validate_update(obj: &Value, old: &Value, errs: &mut FieldErrors) {
    let strip = |v: &Value| {
        let mut spec = v.get("spec").cloned().unwrap_or_else(|| json!({}));
        if let Some(m) = spec.as_object_mut() {
            m.retain(|k, _| !MUTABLE.contains(&k.as_str()));
        }
        spec
    };
    if strip(obj) != strip(old) {
        errs.forbidden(
            "spec",
            "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::super::Strategy as _;
    use super::*;

    fn sts() -> Value {
        json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "serviceName": "web",
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "c", "image": "busybox"}]}},
                "volumeClaimTemplates": [{"metadata": {"name": "www"},
                    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]
            }
        })
    }

    fn errors(obj: &Value, old: Option<&Value>) -> Vec<String> {
        let mut errs = FieldErrors::default();
        Strategy.validate(obj, old, &mut errs);
        errs.0.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn defaults() {
        let mut s = sts();
        Strategy.default(&mut s);
        let spec = &s["spec"];
        assert_eq!(spec["replicas"], json!(1));
        assert_eq!(spec["podManagementPolicy"], json!("OrderedReady"));
        assert_eq!(
            spec["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0, "maxUnavailable": 1}})
        );
        assert_eq!(spec["revisionHistoryLimit"], json!(10));
        assert_eq!(
            spec["persistentVolumeClaimRetentionPolicy"],
            json!({"whenDeleted": "Retain", "whenScaled": "Retain"})
        );
        let claim = &spec["volumeClaimTemplates"][0];
        assert_eq!(claim["apiVersion"], json!("v1"));
        assert_eq!(claim["kind"], json!("PersistentVolumeClaim"));
        assert_eq!(claim["spec"]["volumeMode"], json!("Filesystem"));
        assert_eq!(claim["status"], json!({"phase": "Pending"}));
        assert_eq!(errors(&s, None), Vec::<String>::new());
    }

    #[test]
    fn on_delete_keeps_no_rolling_update() {
        let mut s = sts();
        s["spec"]["updateStrategy"] = json!({"type": "OnDelete"});
        Strategy.default(&mut s);
        assert_eq!(s["spec"]["updateStrategy"], json!({"type": "OnDelete"}));
    }

    #[test]
    fn only_some_fields_may_change() {
        let mut old = sts();
        Strategy.default(&mut old);
        let mut new = old.clone();
        new["spec"]["replicas"] = json!(5);
        new["spec"]["template"]["spec"]["containers"][0]["image"] = json!("busybox:2");
        assert_eq!(errors(&new, Some(&old)), Vec::<String>::new());
        new["spec"]["serviceName"] = json!("other");
        let errs = errors(&new, Some(&old));
        assert_eq!(errs.len(), 1);
        assert!(errs[0].starts_with("spec: Forbidden: updates to statefulset spec for fields other than"), "{errs:?}");
    }

    #[test]
    fn policies_are_checked() {
        let mut s = sts();
        s["spec"]["podManagementPolicy"] = json!("Random");
        s["spec"]["updateStrategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0}});
        Strategy.default(&mut s);
        assert_eq!(
            errors(&s, None),
            [
                "spec.podManagementPolicy: Invalid value: \"Random\": must be 'OrderedReady' or 'Parallel'",
                "spec.updateStrategy.rollingUpdate.maxUnavailable: Invalid value: 0: must be greater than 0",
            ]
        );
    }

    #[test]
    fn cells() {
        let mut s = sts();
        Strategy.default(&mut s);
        s["spec"]["replicas"] = json!(3);
        s["status"] = json!({"readyReplicas": 1});
        let cells = Strategy.cells(&s, Timestamp::now());
        assert_eq!(cells[1], json!("1/3"));
        assert_eq!(cells.len(), COLUMNS.len());
    }
}
