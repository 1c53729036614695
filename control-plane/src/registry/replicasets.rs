//! ReplicaSet (replicasets.apps/v1): strategy and discovery entry.
//!
//! Replicas default to 1; the selector is required, must match the template and cannot change;
//! `status.replicas` is a field selector.

use serde_json::{Value, json};

use super::apps_util::{self as util, CONTAINERS_COLUMN, IMAGES_COLUMN};
use super::{AGE_COLUMN, Column, NAME_COLUMN, Resource, ScalePaths, Timestamp, age_cell, name_cell};
use crate::validation::FieldErrors;

pub static RESOURCE: Resource = Resource {
    group: "apps",
    version: "v1",
    kind: "ReplicaSet",
    plural: "replicasets",
    singular: "replicaset",
    short_names: &["rs"],
    categories: &["all"],
    namespaced: true,
    subresources: &["status", "scale"],
    storage: "replicasets",
    strategy: &Strategy,
};

pub struct Strategy;

static COLUMNS: &[Column] = &[
    NAME_COLUMN,
    Column::new(
        "Desired",
        "integer",
        "Replicas is the number of desired pods. This is a pointer to distinguish between explicit zero and unspecified. Defaults to 1. More info: https://kubernetes.io/docs/concepts/workloads/controllers/replicaset",
    ),
    Column::new(
        "Current",
        "integer",
        "Replicas is the most recently observed number of non-terminating pods. More info: https://kubernetes.io/docs/concepts/workloads/controllers/replicaset",
    ),
    Column::new(
        "Ready",
        "integer",
        "The number of non-terminating pods targeted by this ReplicaSet with a Ready Condition.",
    ),
    AGE_COLUMN,
    CONTAINERS_COLUMN,
    IMAGES_COLUMN,
    Column::wide(
        "Selector",
        "string",
        "Selector is a label query over pods that should match the replica count. If the selector is empty, it is defaulted to the labels present on the pod template. Label keys and values that must match in order to be controlled by this replica set. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors",
    ),
];

impl super::Strategy for Strategy {
    fn tracks_generation(&self) -> bool {
        true
    }

    fn default(&self, obj: &mut Value) {
        if let Some(spec) = util::child(obj, "spec") {
            util::default_field(spec, "replicas", json!(1));
        }
        util::default_template(obj);
    }

    fn prepare_create(&self, obj: &mut Value) {
        // `ReplicaSetStatus.replicas` is not omitempty.
        obj["status"] = json!({"replicas": 0});
    }

    fn validate(&self, obj: &Value, old: Option<&Value>, errs: &mut FieldErrors) {
        util::nonnegative(obj, "/spec/replicas", "spec.replicas", errs);
        util::nonnegative(obj, "/spec/minReadySeconds", "spec.minReadySeconds", errs);
        // Kubernetes says "deployment" here too.
        util::validate_workload_selector(obj, "deployment", Some("invalid label selector"), errs);
        util::validate_template(obj, errs);
        util::validate_long_running_template(obj, "ReplicaSet", errs);
        util::selector_immutable(obj, old, errs);
    }

    fn columns(&self) -> &'static [Column] {
        COLUMNS
    }

    fn cells(&self, obj: &Value, now: Timestamp) -> Vec<Value> {
        let (names, images) = util::container_cells(obj.pointer("/spec/template"));
        vec![
            name_cell(obj),
            json!(util::int_at(obj, "/spec/replicas")),
            json!(util::int_at(obj, "/status/replicas")),
            json!(util::int_at(obj, "/status/readyReplicas")),
            age_cell(obj, now),
            names,
            images,
            json!(util::format_label_selector(obj.pointer("/spec/selector"))),
        ]
    }

    fn field(&self, obj: &Value, path: &str) -> Option<String> {
        (path == "status.replicas").then(|| util::int_at(obj, "/status/replicas").to_string())
    }

    fn scale(&self) -> Option<ScalePaths> {
        Some(ScalePaths {
            spec_replicas: "/spec/replicas",
            status_replicas: "/status/replicas",
            selector: "/spec/selector",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::Strategy as _;
    use super::*;

    fn rs() -> Value {
        json!({
            "metadata": {"name": "web-1", "namespace": "default"},
            "spec": {
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
            }
        })
    }

    #[test]
    fn defaults_status_and_field_selector() {
        let mut r = rs();
        Strategy.default(&mut r);
        Strategy.prepare_create(&mut r);
        assert_eq!(r["spec"]["replicas"], json!(1));
        assert_eq!(r["status"], json!({"replicas": 0}));
        assert_eq!(Strategy.field(&r, "status.replicas").as_deref(), Some("0"));
        assert_eq!(Strategy.field(&r, "spec.replicas"), None);
        let mut errs = FieldErrors::default();
        Strategy.validate(&r, None, &mut errs);
        assert!(errs.is_empty(), "{errs:?}");
    }

    #[test]
    fn template_must_restart_always_and_match() {
        let mut r = rs();
        r["spec"]["template"]["spec"]["restartPolicy"] = json!("Never");
        r["spec"]["template"]["metadata"]["labels"] = json!({"app": "db"});
        Strategy.default(&mut r);
        let mut errs = FieldErrors::default();
        Strategy.validate(&r, None, &mut errs);
        let text: Vec<String> = errs.0.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "spec.template.metadata.labels: Invalid value: {\"app\":\"db\"}: `selector` does not match template `labels`",
                "spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\"",
            ]
        );
    }

    #[test]
    fn cells_are_integers() {
        let mut r = rs();
        Strategy.default(&mut r);
        r["status"] = json!({"replicas": 2, "readyReplicas": 1});
        let cells = Strategy.cells(&r, Timestamp::now());
        assert_eq!(cells[1..4], [json!(1), json!(2), json!(1)]);
        assert_eq!(cells[7], json!("app=web"));
    }
}
