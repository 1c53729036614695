//! DaemonSet (daemonsets.apps/v1): strategy and discovery entry.
//!
//! RollingUpdate with maxUnavailable 1 / maxSurge 0 and ten revisions by default. Kubernetes
//! keeps a template generation, shown in apps/v1 as the `deprecated.daemonset.template.generation`
//! annotation: a new DaemonSet starts at "1" and each template change adds one.

use serde_json::{Value, json};

use super::apps_util::{self as util, CONTAINERS_COLUMN, IMAGES_COLUMN};
use super::{AGE_COLUMN, Column, NAME_COLUMN, Resource, Timestamp, age_cell, name_cell};
use crate::validation::FieldErrors;

pub static RESOURCE: Resource = Resource {
    group: "apps",
    version: "v1",
    kind: "DaemonSet",
    plural: "daemonsets",
    singular: "daemonset",
    short_names: &["ds"],
    categories: &["all"],
    namespaced: true,
    subresources: &["status"],
    storage: "daemonsets",
    strategy: &Strategy,
};

pub struct Strategy;

/// The annotation that carries the template generation in apps/v1.
const TEMPLATE_GENERATION: &str = "deprecated.daemonset.template.generation";

static COLUMNS: &[Column] = &[
    NAME_COLUMN,
    Column::new(
        "Desired",
        "integer",
        "The total number of nodes that should be running the daemon pod (including nodes correctly running the daemon pod). More info: https://kubernetes.io/docs/concepts/workloads/controllers/daemonset/",
    ),
    Column::new(
        "Current",
        "integer",
        "The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod. More info: https://kubernetes.io/docs/concepts/workloads/controllers/daemonset/",
    ),
    Column::new(
        "Ready",
        "integer",
        "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and ready.",
    ),
    Column::new("Up-to-date", "integer", "The total number of nodes that are running updated daemon pod"),
    Column::new(
        "Available",
        "integer",
        "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available (ready for at least spec.minReadySeconds)",
    ),
    Column::new(
        "Node Selector",
        "string",
        "NodeSelector is a selector which must be true for the pod to fit on a node. Selector which must match a node's labels for the pod to be scheduled on that node. More info: https://kubernetes.io/docs/concepts/configuration/assign-pod-node/",
    ),
    AGE_COLUMN,
    CONTAINERS_COLUMN,
    IMAGES_COLUMN,
    Column::wide(
        "Selector",
        "string",
        "A label query over pods that are managed by the daemon set. Must match in order to be controlled. If empty, defaulted to labels on Pod template. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors",
    ),
];

impl super::Strategy for Strategy {
    fn tracks_generation(&self) -> bool {
        true
    }

    fn default(&self, obj: &mut Value) {
        let Some(spec) = util::child(obj, "spec") else { return };
        if let Some(strategy) = util::child(spec, "updateStrategy") {
            util::default_str(strategy, "type", "RollingUpdate");
            if strategy["type"] == "RollingUpdate"
                && let Some(rolling) = util::child(strategy, "rollingUpdate")
            {
                util::default_field(rolling, "maxUnavailable", json!(1));
                util::default_field(rolling, "maxSurge", json!(0));
            }
        }
        util::default_field(spec, "revisionHistoryLimit", json!(10));
        util::default_template(obj);
    }

    fn prepare_create(&self, obj: &mut Value) {
        // These four counters are not omitempty in `DaemonSetStatus`.
        obj["status"] = json!({"currentNumberScheduled": 0, "numberMisscheduled": 0, "desiredNumberScheduled": 0, "numberReady": 0});
        let current = template_generation(obj).and_then(Value::as_str).and_then(|s| s.parse::<i64>().ok());
        if current.is_none_or(|g| g < 1)
            && let Some(annotations) = util::descend(obj, &["metadata", "annotations"])
        {
            annotations[TEMPLATE_GENERATION] = json!("1");
        }
    }

    fn prepare_update(&self, new: &mut Value, old: &Value) {
        // Clients cannot set the template generation; a changed template bumps it.
        let generation =
            template_generation(old).and_then(Value::as_str).and_then(|s| s.parse::<i64>().ok()).unwrap_or(0);
        let generation =
            if new.pointer("/spec/template") == old.pointer("/spec/template") { generation } else { generation + 1 };
        if generation > 0 {
            if let Some(annotations) = util::descend(new, &["metadata", "annotations"]) {
                annotations[TEMPLATE_GENERATION] = json!(generation.to_string());
            }
        } else if let Some(annotations) = new.pointer_mut("/metadata/annotations").and_then(Value::as_object_mut) {
            annotations.remove(TEMPLATE_GENERATION);
        }
    }

    fn validate(&self, obj: &Value, old: Option<&Value>, errs: &mut FieldErrors) {
        util::validate_workload_selector(obj, "daemonset", None, errs);
        util::validate_template(obj, errs);
        util::validate_long_running_template(obj, "DaemonSet", errs);
        util::nonnegative(obj, "/spec/minReadySeconds", "spec.minReadySeconds", errs);
        util::nonnegative(obj, "/spec/revisionHistoryLimit", "spec.revisionHistoryLimit", errs);
        validate_update_strategy(obj, errs);
        if let Some(g) = template_generation(obj)
            && g.as_str().and_then(|s| s.parse::<i64>().ok()).is_none()
        {
            errs.invalid(format!("metadata.annotations[{TEMPLATE_GENERATION}]"), g.clone(), "must be an integer");
        }
        util::selector_immutable(obj, old, errs);
    }

    fn columns(&self) -> &'static [Column] {
        COLUMNS
    }

    fn cells(&self, obj: &Value, now: Timestamp) -> Vec<Value> {
        let (names, images) = util::container_cells(obj.pointer("/spec/template"));
        vec![
            name_cell(obj),
            json!(util::int_at(obj, "/status/desiredNumberScheduled")),
            json!(util::int_at(obj, "/status/currentNumberScheduled")),
            json!(util::int_at(obj, "/status/numberReady")),
            json!(util::int_at(obj, "/status/updatedNumberScheduled")),
            json!(util::int_at(obj, "/status/numberAvailable")),
            json!(util::format_labels(obj.pointer("/spec/template/spec/nodeSelector"))),
            age_cell(obj, now),
            names,
            images,
            json!(util::format_label_selector(obj.pointer("/spec/selector"))),
        ]
    }
}

fn template_generation(obj: &Value) -> Option<&Value> {
    obj.pointer("/metadata/annotations").and_then(|a| a.get(TEMPLATE_GENERATION))
}

fn validate_update_strategy(obj: &Value, errs: &mut FieldErrors) {
    let strategy = obj.pointer("/spec/updateStrategy").unwrap_or(&Value::Null);
    match strategy.get("type").and_then(Value::as_str).unwrap_or("") {
        "OnDelete" => {}
        "RollingUpdate" => {
            let Some(r) = strategy.get("rollingUpdate").filter(|r| !r.is_null()) else {
                errs.required("spec.updateStrategy.rollingUpdate", "");
                return;
            };
            let unavailable = r.get("maxUnavailable").cloned().unwrap_or(json!(0));
            let surge = r.get("maxSurge").cloned().unwrap_or(json!(0));
            let base = "spec.updateStrategy.rollingUpdate";
            util::validate_int_or_percent(&unavailable, &format!("{base}.maxUnavailable"), errs);
            util::validate_int_or_percent(&surge, &format!("{base}.maxSurge"), errs);
            util::not_more_than_100_percent(&unavailable, &format!("{base}.maxUnavailable"), errs);
            util::not_more_than_100_percent(&surge, &format!("{base}.maxSurge"), errs);
            let has_unavailable = util::int_or_percent_value(&unavailable) != 0;
            let has_surge = util::int_or_percent_value(&surge) != 0;
            if has_unavailable && has_surge {
                errs.invalid(format!("{base}.maxSurge"), surge, "may not be set when maxUnavailable is non-zero");
            } else if !has_unavailable && !has_surge {
                errs.required(format!("{base}.maxUnavailable"), "cannot be 0 when maxSurge is 0");
            }
        }
        other => errs.not_supported("spec.updateStrategy", json!(other), &["RollingUpdate", "OnDelete"]),
    }
}

#[cfg(test)]
mod tests {
    use super::super::Strategy as _;
    use super::*;

    fn ds() -> Value {
        json!({
            "metadata": {"name": "agent", "namespace": "kube-system"},
            "spec": {
                "selector": {"matchLabels": {"app": "agent"}},
                "template": {"metadata": {"labels": {"app": "agent"}},
                    "spec": {"nodeSelector": {"zone": "a", "disk": "ssd"}, "containers": [{"name": "c", "image": "busybox"}]}}
            }
        })
    }

    fn errors(obj: &Value) -> Vec<String> {
        let mut errs = FieldErrors::default();
        Strategy.validate(obj, None, &mut errs);
        errs.0.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn defaults_and_generation() {
        let mut d = ds();
        Strategy.default(&mut d);
        Strategy.prepare_create(&mut d);
        assert_eq!(
            d["spec"]["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}})
        );
        assert_eq!(d["spec"]["revisionHistoryLimit"], json!(10));
        assert_eq!(d["metadata"]["annotations"][TEMPLATE_GENERATION], json!("1"));
        assert_eq!(d["status"]["numberReady"], json!(0));
        assert_eq!(errors(&d), Vec::<String>::new());
    }

    #[test]
    fn template_changes_bump_the_generation() {
        let mut old = ds();
        Strategy.default(&mut old);
        Strategy.prepare_create(&mut old);
        // A client that drops the annotation and changes nothing else keeps generation 1.
        let mut same = old.clone();
        same["metadata"]["annotations"] = json!({});
        Strategy.prepare_update(&mut same, &old);
        assert_eq!(same["metadata"]["annotations"][TEMPLATE_GENERATION], json!("1"));
        let mut changed = old.clone();
        changed["spec"]["template"]["spec"]["containers"][0]["image"] = json!("busybox:2");
        changed["metadata"]["annotations"][TEMPLATE_GENERATION] = json!("7");
        Strategy.prepare_update(&mut changed, &old);
        assert_eq!(changed["metadata"]["annotations"][TEMPLATE_GENERATION], json!("2"));
    }

    #[test]
    fn surge_and_unavailable_are_exclusive() {
        let mut d = ds();
        d["spec"]["updateStrategy"] =
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": "10%"}});
        Strategy.default(&mut d);
        assert_eq!(
            errors(&d),
            [
                "spec.updateStrategy.rollingUpdate.maxSurge: Invalid value: \"10%\": may not be set when maxUnavailable is non-zero"
            ]
        );
        d["spec"]["updateStrategy"]["rollingUpdate"] = json!({"maxUnavailable": 0, "maxSurge": 0});
        assert_eq!(
            errors(&d),
            ["spec.updateStrategy.rollingUpdate.maxUnavailable: Required value: cannot be 0 when maxSurge is 0"]
        );
    }

    #[test]
    fn cells_show_sorted_node_selector() {
        let mut d = ds();
        Strategy.default(&mut d);
        let cells = Strategy.cells(&d, Timestamp::now());
        assert_eq!(cells[6], json!("disk=ssd,zone=a"));
        assert_eq!(cells[1..6], [json!(0), json!(0), json!(0), json!(0), json!(0)]);
        assert_eq!(cells.len(), COLUMNS.len());
    }
}
