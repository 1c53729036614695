//! Deployment (deployments.apps/v1): strategy and discovery entry.
//!
//! Defaults, validation and table as kube-apiserver 1.35 has them: replicas 1, a RollingUpdate
//! strategy of 25%/25%, ten old ReplicaSets kept, a 600 s progress deadline; the selector must
//! match the template and cannot change.

use serde_json::{Value, json};

use super::apps_util::{self as util, CONTAINERS_COLUMN, IMAGES_COLUMN};
use super::{AGE_COLUMN, Column, NAME_COLUMN, Resource, ScalePaths, Timestamp, age_cell, name_cell};
use crate::validation::FieldErrors;

pub static RESOURCE: Resource = Resource {
    group: "apps",
    version: "v1",
    kind: "Deployment",
    plural: "deployments",
    singular: "deployment",
    short_names: &["deploy"],
    categories: &["all"],
    namespaced: true,
    subresources: &["status", "scale"],
    storage: "deployments",
    strategy: &Strategy,
};

pub struct Strategy;

static COLUMNS: &[Column] = &[
    NAME_COLUMN,
    Column::new("Ready", "string", "Number of the pod with ready state"),
    Column::new(
        "Up-to-date",
        "string",
        "Total number of non-terminating pods targeted by this deployment that have the desired template spec.",
    ),
    Column::new(
        "Available",
        "string",
        "Total number of available non-terminating pods (ready for at least minReadySeconds) targeted by this deployment.",
    ),
    AGE_COLUMN,
    CONTAINERS_COLUMN,
    IMAGES_COLUMN,
    Column::wide(
        "Selector",
        "string",
        "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment.",
    ),
];

impl super::Strategy for Strategy {
    fn tracks_generation(&self) -> bool {
        true
    }

    fn default(&self, obj: &mut Value) {
        let Some(spec) = util::child(obj, "spec") else { return };
        util::default_field(spec, "replicas", json!(1));
        if let Some(strategy) = util::child(spec, "strategy") {
            util::default_str(strategy, "type", "RollingUpdate");
            if strategy.get("type").and_then(Value::as_str) == Some("RollingUpdate")
                && let Some(rolling) = util::child(strategy, "rollingUpdate")
            {
                util::default_field(rolling, "maxUnavailable", json!("25%"));
                util::default_field(rolling, "maxSurge", json!("25%"));
            }
        }
        util::default_field(spec, "revisionHistoryLimit", json!(10));
        util::default_field(spec, "progressDeadlineSeconds", json!(600));
        util::default_template(obj);
    }

    fn prepare_create(&self, obj: &mut Value) {
        obj["status"] = json!({});
    }

    fn validate(&self, obj: &Value, old: Option<&Value>, errs: &mut FieldErrors) {
        util::nonnegative(obj, "/spec/replicas", "spec.replicas", errs);
        util::validate_workload_selector(obj, "deployment", Some("invalid label selector"), errs);
        util::validate_template(obj, errs);
        util::validate_long_running_template(obj, "ReplicaSet", errs);
        validate_strategy(obj, errs);
        util::nonnegative(obj, "/spec/minReadySeconds", "spec.minReadySeconds", errs);
        util::nonnegative(obj, "/spec/revisionHistoryLimit", "spec.revisionHistoryLimit", errs);
        util::nonnegative(obj, "/spec/progressDeadlineSeconds", "spec.progressDeadlineSeconds", errs);
        if let Some(deadline) = obj.pointer("/spec/progressDeadlineSeconds").and_then(Value::as_i64)
            && deadline <= util::int_at(obj, "/spec/minReadySeconds")
        {
            errs.invalid("spec.progressDeadlineSeconds", json!(deadline), "must be greater than minReadySeconds");
        }
        util::selector_immutable(obj, old, errs);
    }

    fn columns(&self) -> &'static [Column] {
        COLUMNS
    }

    fn cells(&self, obj: &Value, now: Timestamp) -> Vec<Value> {
        let ready = util::int_at(obj, "/status/readyReplicas");
        let desired = util::int_at(obj, "/spec/replicas");
        let (names, images) = util::container_cells(obj.pointer("/spec/template"));
        let selector = obj.pointer("/spec/selector");
        // The Deployment printer prints an empty selector as an empty string, not `<none>`.
        let selector = match util::format_label_selector(selector).as_str() {
            "<none>" => String::new(),
            "<error>" => "<invalid>".to_string(),
            s => s.to_string(),
        };
        vec![
            name_cell(obj),
            json!(format!("{ready}/{desired}")),
            json!(util::int_at(obj, "/status/updatedReplicas")),
            json!(util::int_at(obj, "/status/availableReplicas")),
            age_cell(obj, now),
            names,
            images,
            json!(selector),
        ]
    }

    fn scale(&self) -> Option<ScalePaths> {
        Some(ScalePaths {
            spec_replicas: "/spec/replicas",
            status_replicas: "/status/replicas",
            selector: "/spec/selector",
        })
    }
}

fn validate_strategy(obj: &Value, errs: &mut FieldErrors) {
    let strategy = obj.pointer("/spec/strategy").unwrap_or(&Value::Null);
    let rolling = strategy.get("rollingUpdate").filter(|r| !r.is_null());
    match strategy.get("type").and_then(Value::as_str).unwrap_or("") {
        "Recreate" => {
            if rolling.is_some() {
                errs.forbidden(
                    "spec.strategy.rollingUpdate",
                    "may not be specified when strategy `type` is 'Recreate'",
                );
            }
        }
        "RollingUpdate" => match rolling {
            None => errs.required("spec.strategy.rollingUpdate", "this should be defaulted and never be nil"),
            Some(r) => {
                let unavailable = r.get("maxUnavailable").cloned().unwrap_or(json!(0));
                let surge = r.get("maxSurge").cloned().unwrap_or(json!(0));
                util::validate_int_or_percent(&unavailable, "spec.strategy.rollingUpdate.maxUnavailable", errs);
                util::validate_int_or_percent(&surge, "spec.strategy.rollingUpdate.maxSurge", errs);
                if util::int_or_percent_value(&unavailable) == 0 && util::int_or_percent_value(&surge) == 0 {
                    errs.invalid(
                        "spec.strategy.rollingUpdate.maxUnavailable",
                        unavailable.clone(),
                        "may not be 0 when `maxSurge` is 0",
                    );
                }
                util::not_more_than_100_percent(&unavailable, "spec.strategy.rollingUpdate.maxUnavailable", errs);
            }
        },
        other => errs.not_supported("spec.strategy.type", json!(other), &["Recreate", "RollingUpdate"]),
    }
}

#[cfg(test)]
mod tests {
    use super::super::Strategy as _;
    use super::*;

    /// What `kubectl create deployment web --image=nginx` (1.35) sends.
    fn kubectl_create() -> Value {
        json!({
            "kind": "Deployment", "apiVersion": "apps/v1",
            "metadata": {"name": "web", "namespace": "default", "uid": "u1", "labels": {"app": "web"}},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "nginx", "image": "nginx", "resources": {}}]}},
                "strategy": {}
            },
            "status": {}
        })
    }

    fn errors(obj: &Value, old: Option<&Value>) -> Vec<String> {
        let mut errs = FieldErrors::default();
        Strategy.validate(obj, old, &mut errs);
        errs.0.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn defaults_match_kubectl_get_o_yaml() {
        let mut d = kubectl_create();
        Strategy.default(&mut d);
        Strategy.prepare_create(&mut d);
        // `spec` and `status` of `kubectl get deployment web -o yaml` right after creation.
        let expected = json!({
            "progressDeadlineSeconds": 600,
            "replicas": 1,
            "revisionHistoryLimit": 10,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}, "type": "RollingUpdate"},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [{
                        "image": "nginx",
                        "imagePullPolicy": "Always",
                        "name": "nginx",
                        "resources": {},
                        "terminationMessagePath": "/dev/termination-log",
                        "terminationMessagePolicy": "File"
                    }],
                    "dnsPolicy": "ClusterFirst",
                    "restartPolicy": "Always",
                    "schedulerName": "default-scheduler",
                    "securityContext": {},
                    "terminationGracePeriodSeconds": 30
                }
            }
        });
        assert_eq!(d["spec"], expected);
        assert_eq!(d["status"], json!({}));
        assert_eq!(errors(&d, None), Vec::<String>::new());
        // Defaulting twice changes nothing (it also runs on every update).
        let mut again = d.clone();
        Strategy.default(&mut again);
        assert_eq!(again, d);
    }

    #[test]
    fn template_defaults_come_from_the_pod_rules() {
        let mut d = kubectl_create();
        Strategy.default(&mut d);
        let mut tmpl = kubectl_create()["spec"]["template"].clone();
        super::super::podspec::default_pod_template(&mut tmpl);
        assert_eq!(d["spec"]["template"], tmpl);
    }

    #[test]
    fn recreate_strategy_gets_no_rolling_update() {
        let mut d = kubectl_create();
        d["spec"]["strategy"] = json!({"type": "Recreate"});
        Strategy.default(&mut d);
        assert_eq!(d["spec"]["strategy"], json!({"type": "Recreate"}));
    }

    #[test]
    fn selector_must_match_template_labels() {
        let mut d = kubectl_create();
        d["spec"]["selector"] = json!({"matchLabels": {"app": "other"}});
        Strategy.default(&mut d);
        assert_eq!(
            errors(&d, None),
            [
                "spec.template.metadata.labels: Invalid value: {\"app\":\"web\"}: `selector` does not match template `labels`"
            ]
        );
        d["spec"]["selector"] = json!({});
        assert_eq!(errors(&d, None), ["spec.selector: Invalid value: {}: empty selector is invalid for deployment"]);
        d["spec"].as_object_mut().expect("spec").remove("selector");
        assert_eq!(errors(&d, None), ["spec.selector: Required value"]);
    }

    #[test]
    fn selector_is_immutable() {
        let mut old = kubectl_create();
        Strategy.default(&mut old);
        let mut new = old.clone();
        new["spec"]["selector"]["matchLabels"]["tier"] = json!("x");
        new["spec"]["template"]["metadata"]["labels"]["tier"] = json!("x");
        let errs = errors(&new, Some(&old));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].starts_with("spec.selector: Invalid value: ") && errs[0].ends_with("field is immutable"));
    }

    #[test]
    fn strategy_rules() {
        let mut d = kubectl_create();
        d["spec"]["strategy"] =
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}});
        d["spec"]["replicas"] = json!(-1);
        Strategy.default(&mut d);
        assert_eq!(
            errors(&d, None),
            [
                "spec.replicas: Invalid value: -1: must be greater than or equal to 0",
                "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: \"0%\": may not be 0 when `maxSurge` is 0",
            ]
        );
        d["spec"]["replicas"] = json!(1);
        d["spec"]["strategy"] = json!({"type": "Blue"});
        assert_eq!(
            errors(&d, None),
            ["spec.strategy.type: Unsupported value: \"Blue\": supported values: \"Recreate\", \"RollingUpdate\""]
        );
    }

    #[test]
    fn cells_show_ready_over_desired() {
        let mut d = kubectl_create();
        Strategy.default(&mut d);
        d["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
        d["spec"]["replicas"] = json!(3);
        d["status"] = json!({"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2});
        let now = Timestamp(
            chrono::DateTime::parse_from_rfc3339("2026-01-01T00:05:00Z")
                .expect("valid time")
                .with_timezone(&chrono::Utc),
        );
        let cells = Strategy.cells(&d, now);
        assert_eq!(
            cells,
            [
                json!("web"),
                json!("2/3"),
                json!(3),
                json!(2),
                json!("5m"),
                json!("nginx"),
                json!("nginx"),
                json!("app=web")
            ]
        );
        assert_eq!(cells.len(), Strategy.columns().len());
    }
}
