//! HorizontalPodAutoscaler (horizontalpodautoscalers.autoscaling/v2): strategy and discovery entry.
//!
//! Defaults of autoscaling/v2: `minReplicas: 1`, a CPU utilization target of 80% when no metric
//! is given, and, when `behavior` is present, the default scale-up and scale-down rules filled in
//! field by field.

use serde_json::{Value, json};

use super::apps_util as util;
use super::podspec::quantity::Quantity;
use super::{AGE_COLUMN, Column, NAME_COLUMN, Resource, Timestamp, age_cell, name_cell};
use crate::validation::{self, FieldErrors};

pub static RESOURCE: Resource = Resource {
    group: "autoscaling",
    version: "v2",
    kind: "HorizontalPodAutoscaler",
    plural: "horizontalpodautoscalers",
    singular: "horizontalpodautoscaler",
    short_names: &["hpa"],
    categories: &["all"],
    namespaced: true,
    subresources: &["status"],
    storage: "horizontalpodautoscalers",
    strategy: &Strategy,
};

pub struct Strategy;

static COLUMNS: &[Column] = &[
    NAME_COLUMN,
    Column::new(
        "Reference",
        "string",
        "scaleTargetRef points to the target resource to scale, and is used to the pods for which metrics should be collected, as well as to actually change the replica count.",
    ),
    Column::new(
        "Targets",
        "string",
        "metrics contains the specifications for which to use to calculate the desired replica count (the maximum replica count across all metrics will be used).  The desired replica count is calculated multiplying the ratio between the target value and the current value by the current number of pods.  Ergo, metrics used must decrease as the pod count is increased, and vice-versa.  See the individual metric source types for more information about how each type of metric must respond.",
    ),
    Column::new(
        "MinPods",
        "string",
        "minReplicas is the lower limit for the number of replicas to which the autoscaler can scale down.  It defaults to 1 pod.  minReplicas is allowed to be 0 if the alpha feature gate HPAScaleToZero is enabled and at least one Object or External metric is configured.  Scaling is active as long as at least one metric value is available.",
    ),
    Column::new(
        "MaxPods",
        "string",
        "maxReplicas is the upper limit for the number of replicas to which the autoscaler can scale up. It cannot be less that minReplicas.",
    ),
    Column::new(
        "Replicas",
        "string",
        "currentReplicas is current number of replicas of pods managed by this autoscaler, as last seen by the autoscaler.",
    ),
    AGE_COLUMN,
];

/// Metric source types and the field each one fills.
const SOURCES: &[(&str, &str)] = &[
    ("ContainerResource", "containerResource"),
    ("External", "external"),
    ("Object", "object"),
    ("Pods", "pods"),
    ("Resource", "resource"),
];

const DEFAULT_CPU_UTILIZATION: i64 = 80;
const MAX_PERIOD_SECONDS: i64 = 1800;
const MAX_STABILIZATION_WINDOW_SECONDS: i64 = 3600;

fn default_scale_up() -> Value {
    json!({
        "stabilizationWindowSeconds": 0,
        "selectPolicy": "Max",
        "policies": [{"type": "Pods", "value": 4, "periodSeconds": 15}, {"type": "Percent", "value": 100, "periodSeconds": 15}]
    })
}

fn default_scale_down() -> Value {
    json!({"selectPolicy": "Max", "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}]})
}

impl super::Strategy for Strategy {
    fn tracks_generation(&self) -> bool {
        true
    }

    fn default(&self, obj: &mut Value) {
        let Some(spec) = util::child(obj, "spec") else { return };
        util::default_field(spec, "minReplicas", json!(1));
        if util::is_empty(spec.get("metrics")) {
            spec["metrics"] = json!([{"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": DEFAULT_CPU_UTILIZATION}}}]);
        }
        for metric in spec.get_mut("metrics").and_then(Value::as_array_mut).into_iter().flatten() {
            canonicalize_targets(metric);
        }
        if let Some(behavior) = spec.get_mut("behavior").filter(|b| b.is_object()) {
            fill_rules(behavior, "scaleUp", default_scale_up());
            fill_rules(behavior, "scaleDown", default_scale_down());
        }
    }

    fn prepare_create(&self, obj: &mut Value) {
        // `desiredReplicas` and `currentMetrics` are not omitempty.
        obj["status"] = json!({"desiredReplicas": 0, "currentMetrics": null});
    }

    fn validate(&self, obj: &Value, _old: Option<&Value>, errs: &mut FieldErrors) {
        let spec = obj.get("spec").unwrap_or(&Value::Null);
        let min = spec.get("minReplicas").and_then(Value::as_i64);
        let max = util::int_at(spec, "/maxReplicas");
        if let Some(m) = min
            && m < 1
        {
            errs.invalid("spec.minReplicas", json!(m), "must be greater than or equal to 1");
        }
        if max < 1 {
            errs.invalid("spec.maxReplicas", json!(max), "must be greater than 0");
        }
        if let Some(m) = min
            && max < m
        {
            errs.invalid("spec.maxReplicas", json!(max), "must be greater than or equal to `minReplicas`");
        }
        // Kubernetes checks metrics only with a valid target, and behavior only with valid metrics.
        let before = errs.0.len();
        validate_object_ref(spec.get("scaleTargetRef").unwrap_or(&Value::Null), "spec.scaleTargetRef", errs);
        if errs.0.len() == before {
            for (i, metric) in util::array_at(spec, "/metrics").iter().enumerate() {
                validate_metric(metric, &format!("spec.metrics[{i}]"), errs);
            }
        }
        if errs.0.len() == before
            && let Some(behavior) = spec.get("behavior").filter(|b| !b.is_null())
        {
            for key in ["scaleUp", "scaleDown"] {
                if let Some(rules) = behavior.get(key).filter(|r| !r.is_null()) {
                    validate_rules(rules, &format!("spec.behavior.{key}"), errs);
                }
            }
        }
    }

    fn columns(&self) -> &'static [Column] {
        COLUMNS
    }

    fn cells(&self, obj: &Value, now: Timestamp) -> Vec<Value> {
        let reference = format!(
            "{}/{}",
            util::str_or_empty(obj, "/spec/scaleTargetRef/kind"),
            util::str_or_empty(obj, "/spec/scaleTargetRef/name")
        );
        let min =
            obj.pointer("/spec/minReplicas").and_then(Value::as_i64).map_or("<unset>".to_string(), |m| m.to_string());
        vec![
            name_cell(obj),
            json!(reference),
            json!(format_metrics(util::array_at(obj, "/spec/metrics"), util::array_at(obj, "/status/currentMetrics"))),
            json!(min),
            json!(util::int_at(obj, "/spec/maxReplicas")),
            json!(util::int_at(obj, "/status/currentReplicas")),
            age_cell(obj, now),
        ]
    }
}

/// Fills the unset fields of `behavior[key]` from `defaults` (`copyHPAScalingRules`).
fn fill_rules(behavior: &mut Value, key: &str, defaults: Value) {
    let rules = &mut behavior[key];
    if rules.is_null() {
        *rules = defaults;
        return;
    }
    if let Value::Object(d) = defaults {
        for (k, v) in d {
            util::default_field(rules, &k, v);
        }
    }
}

/// Rewrites target quantities in canonical form, as Kubernetes serialises them.
fn canonicalize_targets(metric: &mut Value) {
    for (_, field) in SOURCES {
        let Some(target) = metric.pointer_mut(&format!("/{field}/target")) else { continue };
        for key in ["value", "averageValue"] {
            if let Some(v) = target.get_mut(key)
                && let Ok(q) = Quantity::from_json(v)
            {
                *v = json!(q.to_string());
            }
        }
    }
}

/// `CrossVersionObjectReference`: kind and name are required path segments.
fn validate_object_ref(r: &Value, path: &str, errs: &mut FieldErrors) {
    for key in ["kind", "name"] {
        let v = r.get(key).and_then(Value::as_str).unwrap_or("");
        if v.is_empty() {
            errs.required(format!("{path}.{key}"), "");
        }
        for msg in validation::path_segment_name(v) {
            errs.invalid(format!("{path}.{key}"), json!(v), msg);
        }
    }
}

fn validate_metric(metric: &Value, path: &str, errs: &mut FieldErrors) {
    let kind = metric.get("type").and_then(Value::as_str).unwrap_or("");
    if kind.is_empty() {
        errs.required(format!("{path}.type"), "must specify a metric source type");
    }
    let present: Vec<&(&str, &str)> =
        SOURCES.iter().filter(|(_, f)| metric.get(*f).is_some_and(|v| !v.is_null())).collect();
    if let [(_, field)] = present.as_slice() {
        validate_source(field, &metric[*field], &format!("{path}.{field}"), errs);
    }
    match SOURCES.iter().find(|(t, _)| *t == kind) {
        None => {
            let types: Vec<&str> = SOURCES.iter().map(|(t, _)| *t).collect();
            errs.not_supported(format!("{path}.type"), json!(kind), &types);
        }
        Some((_, field)) if metric.get(*field).is_none_or(Value::is_null) => {
            errs.required(format!("{path}.{field}"), "must populate information for the given metric source");
        }
        Some(_) => {}
    }
    if present.len() > 1 {
        for (t, field) in present {
            if *t != kind {
                errs.forbidden(format!("{path}.{field}"), "must populate the given metric source only");
            }
        }
    }
}

fn validate_source(field: &str, src: &Value, path: &str, errs: &mut FieldErrors) {
    let target = src.get("target").unwrap_or(&Value::Null);
    let tpath = format!("{path}.target");
    let has = |k: &str| target.get(k).is_some_and(|v| !v.is_null());
    match field {
        "resource" | "containerResource" => {
            if src.get("name").and_then(Value::as_str).unwrap_or("").is_empty() {
                errs.required(format!("{path}.name"), "must specify a resource name");
            }
            if field == "containerResource" {
                let container = src.get("container").and_then(Value::as_str).unwrap_or("");
                if container.is_empty() {
                    errs.required(format!("{path}.container"), "must specify a container");
                } else {
                    for msg in validation::dns1123_label(container) {
                        errs.invalid(format!("{path}.container"), json!(container), msg);
                    }
                }
            }
            validate_target(target, &tpath, errs);
            if !has("averageUtilization") && !has("averageValue") {
                errs.required(
                    format!("{tpath}.averageUtilization"),
                    "must set either a target raw value or a target utilization",
                );
            }
            if has("averageUtilization") && has("averageValue") {
                errs.forbidden(
                    format!("{tpath}.averageValue"),
                    "may not set both a target raw value and a target utilization",
                );
            }
        }
        "pods" => {
            validate_metric_name(src, path, errs);
            validate_target(target, &tpath, errs);
            if !has("averageValue") {
                errs.required(format!("{tpath}.averageValue"), "must specify a positive target averageValue");
            }
        }
        "object" => {
            validate_object_ref(
                src.get("describedObject").unwrap_or(&Value::Null),
                &format!("{path}.describedObject"),
                errs,
            );
            validate_metric_name(src, path, errs);
            validate_target(target, &tpath, errs);
            if has("value") == has("averageValue") {
                errs.required(format!("{tpath}.averageValue"), "must set either a target value or averageValue");
            }
        }
        _ => {
            validate_metric_name(src, path, errs);
            validate_target(target, &tpath, errs);
            if !has("value") && !has("averageValue") {
                errs.required(
                    format!("{tpath}.averageValue"),
                    "must set either a target value for metric or a per-pod target",
                );
            }
            if has("value") && has("averageValue") {
                errs.forbidden(
                    format!("{tpath}.value"),
                    "may not set both a target value for metric and a per-pod target",
                );
            }
        }
    }
}

fn validate_metric_name(src: &Value, path: &str, errs: &mut FieldErrors) {
    let name = src.pointer("/metric/name").and_then(Value::as_str).unwrap_or("");
    if name.is_empty() {
        errs.required(format!("{path}.metric.name"), "must specify a metric name");
    } else {
        for msg in validation::path_segment_name(name) {
            errs.invalid(format!("{path}.metric.name"), json!(name), msg);
        }
    }
    if let Some(sel) = src.pointer("/metric/selector") {
        util::validate_label_selector(Some(sel), &format!("{path}.metric.selector"), errs);
    }
}

fn validate_target(target: &Value, path: &str, errs: &mut FieldErrors) {
    let kind = target.get("type").and_then(Value::as_str).unwrap_or("");
    if kind.is_empty() {
        errs.required(format!("{path}.type"), "must specify a metric target type");
    }
    if !matches!(kind, "Utilization" | "Value" | "AverageValue") {
        errs.invalid(format!("{path}.type"), json!(kind), "must be either Utilization, Value, or AverageValue");
    }
    for key in ["value", "averageValue"] {
        if let Some(v) = target.get(key).filter(|v| !v.is_null()) {
            match Quantity::from_json(v) {
                Ok(q) if q.is_zero() || q.is_negative() => {
                    errs.invalid(format!("{path}.{key}"), v.clone(), "must be positive")
                }
                Ok(_) => {}
                Err(msg) => errs.invalid(format!("{path}.{key}"), v.clone(), msg),
            }
        }
    }
    if let Some(u) = target.get("averageUtilization").and_then(Value::as_i64)
        && u < 1
    {
        errs.invalid(format!("{path}.averageUtilization"), json!(u), "must be greater than 0");
    }
}

fn validate_rules(rules: &Value, path: &str, errs: &mut FieldErrors) {
    if let Some(w) = rules.get("stabilizationWindowSeconds").and_then(Value::as_i64) {
        if w < 0 {
            errs.invalid(
                format!("{path}.stabilizationWindowSeconds"),
                json!(w),
                "must be greater than or equal to zero",
            );
        }
        if w > MAX_STABILIZATION_WINDOW_SECONDS {
            errs.invalid(
                format!("{path}.stabilizationWindowSeconds"),
                json!(w),
                format!("must be less than or equal to {MAX_STABILIZATION_WINDOW_SECONDS}"),
            );
        }
    }
    if let Some(p) = rules.get("selectPolicy").filter(|p| !p.is_null())
        && !matches!(p.as_str(), Some("Max" | "Min" | "Disabled"))
    {
        errs.not_supported(format!("{path}.selectPolicy"), p.clone(), &["Disabled", "Max", "Min"]);
    }
    let policies = util::array_at(rules, "/policies");
    if policies.is_empty() {
        errs.required(format!("{path}.policies"), "must specify at least one Policy");
    }
    for (i, policy) in policies.iter().enumerate() {
        let ppath = format!("{path}.policies[{i}]");
        let kind = policy.get("type").cloned().unwrap_or_else(|| json!(""));
        if !matches!(kind.as_str(), Some("Pods" | "Percent")) {
            errs.not_supported(format!("{ppath}.type"), kind, &["Percent", "Pods"]);
        }
        let value = util::int_at(policy, "/value");
        if value <= 0 {
            errs.invalid(format!("{ppath}.value"), json!(value), "must be greater than zero");
        }
        let period = util::int_at(policy, "/periodSeconds");
        if period <= 0 {
            errs.invalid(format!("{ppath}.periodSeconds"), json!(period), "must be greater than zero");
        }
        if period > MAX_PERIOD_SECONDS {
            errs.invalid(
                format!("{ppath}.periodSeconds"),
                json!(period),
                format!("must be less than or equal to {MAX_PERIOD_SECONDS}"),
            );
        }
    }
}

/// The `Targets` cell: `cpu: 5%/80%`, `<unknown>/500m`, two metrics at most then `+ N more...`.
fn format_metrics(specs: &[Value], statuses: &[Value]) -> String {
    if specs.is_empty() {
        return "<none>".to_string();
    }
    let q = |v: Option<&Value>| v.and_then(|v| Quantity::from_json(v).ok()).map(|q| q.to_string());
    let mut list: Vec<String> = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let status = statuses.get(i);
        let current = |field: &str, key: &str| q(status.and_then(|s| s.pointer(&format!("/{field}/current/{key}"))));
        let unknown = || "<unknown>".to_string();
        let text = match spec.get("type").and_then(Value::as_str).unwrap_or("") {
            kind @ ("External" | "Object") => {
                let field = if kind == "External" { "external" } else { "object" };
                let target = spec.get(field).and_then(|s| s.get("target"));
                match q(target.and_then(|t| t.get("averageValue"))) {
                    Some(avg) => format!("{}/{avg} (avg)", current(field, "averageValue").unwrap_or_else(unknown)),
                    None => {
                        let value = q(target.and_then(|t| t.get("value"))).unwrap_or_else(|| "0".to_string());
                        format!("{}/{value}", current(field, "value").unwrap_or_else(unknown))
                    }
                }
            }
            "Pods" => {
                let target = q(spec.pointer("/pods/target/averageValue")).unwrap_or_else(|| "0".to_string());
                format!("{}/{target}", current("pods", "averageValue").unwrap_or_else(unknown))
            }
            kind @ ("Resource" | "ContainerResource") => {
                let field = if kind == "Resource" { "resource" } else { "containerResource" };
                let src = spec.get(field).unwrap_or(&Value::Null);
                let name = src.get("name").and_then(Value::as_str).unwrap_or("");
                match q(src.pointer("/target/averageValue")) {
                    Some(avg) => format!("{name}: {}/{avg}", current(field, "averageValue").unwrap_or_else(unknown)),
                    None => {
                        let cur = status
                            .and_then(|s| s.pointer(&format!("/{field}/current/averageUtilization")))
                            .and_then(Value::as_i64)
                            .map_or_else(unknown, |u| format!("{u}%"));
                        let target = src
                            .pointer("/target/averageUtilization")
                            .and_then(Value::as_i64)
                            .map_or("<auto>".to_string(), |u| format!("{u}%"));
                        format!("{name}: {cur}/{target}")
                    }
                }
            }
            _ => "<unknown type>".to_string(),
        };
        list.push(text);
    }
    const MAX: usize = 2;
    let count = list.len();
    if count > MAX {
        list.truncate(MAX);
        return format!("{} + {} more...", list.join(", "), count - MAX);
    }
    list.join(", ")
}

#[cfg(test)]
mod tests {
    use super::super::Strategy as _;
    use super::*;

    /// What `kubectl autoscale deployment web --max=5` sends.
    fn hpa() -> Value {
        json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}, "maxReplicas": 5}
        })
    }

    fn errors(obj: &Value) -> Vec<String> {
        let mut errs = FieldErrors::default();
        Strategy.validate(obj, None, &mut errs);
        errs.0.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn defaults() {
        let mut h = hpa();
        Strategy.default(&mut h);
        Strategy.prepare_create(&mut h);
        assert_eq!(h["spec"]["minReplicas"], json!(1));
        assert_eq!(
            h["spec"]["metrics"],
            json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}])
        );
        assert!(h["spec"].get("behavior").is_none());
        assert_eq!(h["status"], json!({"desiredReplicas": 0, "currentMetrics": null}));
        assert_eq!(errors(&h), Vec::<String>::new());
    }

    #[test]
    fn behavior_is_filled_field_by_field() {
        let mut h = hpa();
        h["spec"]["behavior"] = json!({"scaleDown": {"stabilizationWindowSeconds": 60}});
        Strategy.default(&mut h);
        assert_eq!(h["spec"]["behavior"]["scaleUp"], default_scale_up());
        assert_eq!(
            h["spec"]["behavior"]["scaleDown"],
            json!({"stabilizationWindowSeconds": 60, "selectPolicy": "Max",
                "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}]})
        );
        assert_eq!(errors(&h), Vec::<String>::new());
    }

    #[test]
    fn validation() {
        let mut h = hpa();
        h["spec"]["minReplicas"] = json!(3);
        h["spec"]["maxReplicas"] = json!(2);
        h["spec"]["metrics"] =
            json!([{"type": "Pods", "pods": {"metric": {"name": "qps"}, "target": {"type": "AverageValue"}}}]);
        Strategy.default(&mut h);
        assert_eq!(
            errors(&h),
            [
                "spec.maxReplicas: Invalid value: 2: must be greater than or equal to `minReplicas`",
                "spec.metrics[0].pods.target.averageValue: Required value: must specify a positive target averageValue",
            ]
        );
        h["spec"]["scaleTargetRef"] = json!({"kind": "Deployment"});
        assert_eq!(errors(&h)[1], "spec.scaleTargetRef.name: Required value");
    }

    #[test]
    fn targets_cell() {
        let mut h = hpa();
        Strategy.default(&mut h);
        h["status"] = json!({"currentReplicas": 2, "currentMetrics": [
            {"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 5, "averageValue": "12m"}}}]});
        let cells = Strategy.cells(&h, Timestamp::now());
        assert_eq!(cells[1..6], [json!("Deployment/web"), json!("cpu: 5%/80%"), json!("1"), json!(5), json!(2)]);
        let specs = [
            json!({"type": "Pods", "pods": {"target": {"averageValue": "1000m"}}}),
            json!({"type": "External", "external": {"target": {"value": "10"}}}),
            json!({"type": "Object", "object": {"target": {"averageValue": "2"}}}),
        ];
        assert_eq!(format_metrics(&specs, &[]), "<unknown>/1, <unknown>/10 + 1 more...");
    }
}
