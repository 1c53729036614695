//! ResourceQuota (resourcequotas/v1): strategy and discovery entry.

use std::collections::{BTreeMap, HashSet};

use serde_json::{Value, json};

use super::podspec::checks::{self, arr, obj};
use super::podspec::quantity::{self, Quantity};
use super::{AGE_COLUMN, Column, NAME_COLUMN, Resource, Timestamp};
use crate::validation::{self, FieldErrors};

pub static RESOURCE: Resource = Resource {
    group: "",
    version: "v1",
    kind: "ResourceQuota",
    plural: "resourcequotas",
    singular: "resourcequota",
    short_names: &["quota"],
    categories: &[],
    namespaced: true,
    subresources: &["status"],
    storage: "resourcequotas",
    strategy: &Strategy,
};

pub struct Strategy;

static COLUMNS: &[Column] = &[
    NAME_COLUMN,
    Column::new("Request", "string", "Request represents a minimum amount of cpu/memory that a container may consume."),
    Column::new(
        "Limit",
        "string",
        "Limits control the maximum amount of cpu/memory that a container may use independent of contention on the node.",
    ),
    AGE_COLUMN,
];

const STANDARD_QUOTA_RESOURCES: &[&str] = &[
    "pods",
    "cpu",
    "memory",
    "ephemeral-storage",
    "requests.cpu",
    "requests.memory",
    "requests.storage",
    "requests.ephemeral-storage",
    "limits.cpu",
    "limits.memory",
    "limits.ephemeral-storage",
    "persistentvolumeclaims",
    "configmaps",
    "replicationcontrollers",
    "resourcequotas",
    "secrets",
    "services",
    "services.nodeports",
    "services.loadbalancers",
];

const STANDARD_SCOPES: &[&str] = &[
    "Terminating",
    "NotTerminating",
    "BestEffort",
    "NotBestEffort",
    "PriorityClass",
    "CrossNamespacePodAffinity",
    "VolumeAttributesClass",
];

impl super::Strategy for Strategy {
    fn default(&self, o: &mut Value) {
        if let Some(hard) = o.pointer_mut("/spec/hard") {
            quantity::canonicalize_list(Some(hard), true);
        }
        for key in ["hard", "used"] {
            if let Some(list) = o.get_mut("status").and_then(|st| st.get_mut(key)) {
                quantity::canonicalize_list(Some(list), true);
            }
        }
    }

    fn prepare_create(&self, o: &mut Value) {
        if let Some(m) = o.as_object_mut() {
            m.insert("status".into(), json!({}));
        }
    }

    fn validate(&self, o: &Value, old: Option<&Value>, errs: &mut FieldErrors) {
        let spec = o.get("spec").unwrap_or(&Value::Null);
        check_list(obj(spec, "hard"), "spec.hard", errs);
        let scopes: Vec<&str> = arr(spec, "scopes").iter().filter_map(Value::as_str).collect();
        if scopes.iter().any(|s| !STANDARD_SCOPES.contains(s)) {
            errs.invalid("spec.scopes", json!(scopes), "unsupported scope");
        }
        let set: HashSet<&str> = scopes.iter().copied().collect();
        for pair in [["BestEffort", "NotBestEffort"], ["Terminating", "NotTerminating"]] {
            if pair.iter().all(|s| set.contains(s)) {
                errs.invalid("spec.scopes", json!(scopes), "conflicting scopes");
            }
        }
        match old {
            None => {
                let status = o.get("status").unwrap_or(&Value::Null);
                check_list(obj(status, "hard"), "status.hard", errs);
                check_list(obj(status, "used"), "status.used", errs);
            }
            Some(old) => {
                let old_scopes: HashSet<&str> = old
                    .pointer("/spec/scopes")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                if old_scopes != set {
                    errs.invalid("spec.scopes", json!(scopes), "field is immutable");
                }
            }
        }
    }

    fn columns(&self) -> &'static [Column] {
        COLUMNS
    }

    fn cells(&self, o: &Value, now: Timestamp) -> Vec<Value> {
        let status = o.get("status").unwrap_or(&Value::Null);
        let hard: BTreeMap<&String, &Value> = obj(status, "hard").into_iter().flatten().collect();
        let used = obj(status, "used");
        let (mut request, mut limit) = (Vec::new(), Vec::new());
        for (name, h) in hard {
            let fmt = |v: Option<&Value>| {
                v.and_then(|q| Quantity::from_json(q).ok()).unwrap_or_else(Quantity::zero).to_string()
            };
            let entry = format!("{name}: {}/{}", fmt(used.and_then(|u| u.get(name.as_str()))), fmt(Some(h)));
            if name.split('.').count() > 1 && name.starts_with("limits.") {
                limit.push(entry);
            } else {
                request.push(entry);
            }
        }
        vec![super::name_cell(o), json!(request.join(", ")), json!(limit.join(", ")), super::age_cell(o, now)]
    }
}

/// Quota resource names and values.
fn check_list(list: Option<&serde_json::Map<String, Value>>, path: &str, errs: &mut FieldErrors) {
    for (name, v) in list.into_iter().flatten() {
        let field = format!("{path}[{name}]");
        let msgs = validation::qualified_name(name);
        let qualified_ok = msgs.is_empty();
        for msg in msgs {
            errs.invalid(&field, json!(name), msg);
        }
        if qualified_ok && !name.contains('/') {
            let hugepages = name.starts_with("hugepages-") || name.starts_with("requests.hugepages-");
            if !STANDARD_QUOTA_RESOURCES.contains(&name.as_str()) && !hugepages {
                errs.invalid(&field, json!(name), "must be a standard resource type or fully qualified");
            }
        }
        checks::check_quantity_value(name, v, &field, errs);
    }
}

#[cfg(test)]
mod tests {
    use super::super::Strategy as _;
    use super::*;

    #[test]
    fn quota_table_and_rules() {
        let rq = json!({"metadata": {"name": "compute"}, "status": {
            "hard": {"requests.cpu": "1", "limits.memory": "2Gi", "pods": "10", "requests.memory": "1Gi"},
            "used": {"requests.cpu": "500m", "pods": "3"}
        }});
        let cells = Strategy.cells(&rq, Timestamp::now());
        assert_eq!(cells[1], json!("pods: 3/10, requests.cpu: 500m/1, requests.memory: 0/1Gi"));
        assert_eq!(cells[2], json!("limits.memory: 0/2Gi"));
        let mut errs = FieldErrors::default();
        Strategy.validate(&json!({"spec": {"hard": {"pods": "1.5", "widgets": "1"}}}), None, &mut errs);
        let msgs: Vec<String> = errs.0.iter().map(ToString::to_string).collect();
        assert!(
            msgs.contains(&"spec.hard[pods]: Invalid value: \"1500m\": must be an integer".to_string()),
            "{msgs:?}"
        );
        assert!(
            msgs.contains(
                &"spec.hard[widgets]: Invalid value: \"widgets\": must be a standard resource type or fully qualified"
                    .into()
            ),
            "{msgs:?}"
        );
    }
}
