//! Node (nodes/v1): strategy and discovery entry.

use std::collections::{BTreeSet, HashMap, HashSet};

use serde_json::{Map, Value, json};

use super::podspec::checks::{self, arr, s};
use super::podspec::quantity;
use super::{AGE_COLUMN, Column, NAME_COLUMN, Resource, Timestamp};
use crate::validation::{self, FieldErrors};

pub static RESOURCE: Resource = Resource {
    group: "",
    version: "v1",
    kind: "Node",
    plural: "nodes",
    singular: "node",
    short_names: &["no"],
    categories: &[],
    namespaced: false,
    subresources: &["status"],
    storage: "minions",
    strategy: &Strategy,
};

pub struct Strategy;

const ADDRESSES_DOC: &str = "List of addresses reachable to the node. Queried from cloud provider, if available. More info: https://kubernetes.io/docs/reference/node/node-status/#addresses Note: This field is declared as mergeable, but the merge key is not sufficiently unique, which can cause data corruption when it is merged. Callers should instead use a full-replacement patch. See https://pr.k8s.io/79391 for an example. Consumers should assume that addresses can change during the lifetime of a Node. However, there are some exceptions where this may not be possible, such as Pods that inherit a Node's address in its own status or consumers of the downward API (status.hostIP).";

static COLUMNS: &[Column] = &[
    NAME_COLUMN,
    Column::new("Status", "string", "The status of the node"),
    Column::new("Roles", "string", "The roles of the node"),
    AGE_COLUMN,
    Column::new("Version", "string", "Deprecated. Kubelet Version reported by the node."),
    Column::wide("Internal-IP", "string", ADDRESSES_DOC),
    Column::wide("External-IP", "string", ADDRESSES_DOC),
    Column::wide(
        "OS-Image",
        "string",
        "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).",
    ),
    Column::wide(
        "Kernel-Version",
        "string",
        "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).",
    ),
    Column::wide(
        "Container-Runtime",
        "string",
        "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).",
    ),
];

const ROLE_PREFIX: &str = "node-role.kubernetes.io/";
const PODCIDR_FORBIDDEN: &str = "node updates may not change podCIDR except from \"\" to valid";

impl super::Strategy for Strategy {
    fn default(&self, obj: &mut Value) {
        let Some(m) = obj.as_object_mut() else { return };
        if let Some(spec) = m.get_mut("spec").and_then(Value::as_object_mut) {
            // v1 conversion keeps podCIDR and podCIDRs in step.
            let single = spec.get("podCIDR").and_then(Value::as_str).unwrap_or("").to_string();
            let first = spec.get("podCIDRs").and_then(Value::as_array).and_then(|a| a.first()).cloned();
            match first {
                Some(f) => {
                    spec.insert("podCIDR".into(), f);
                }
                None if !single.is_empty() => {
                    spec.insert("podCIDRs".into(), json!([single]));
                }
                None => {}
            }
        }
        if let Some(status) = m.get_mut("status").and_then(Value::as_object_mut) {
            quantity::canonicalize_list(status.get_mut("capacity"), false);
            quantity::canonicalize_list(status.get_mut("allocatable"), false);
            if status.get("allocatable").is_none_or(Value::is_null)
                && let Some(cap) = status.get("capacity").filter(|c| c.is_object()).cloned()
            {
                status.insert("allocatable".into(), cap);
            }
        }
    }

    fn validate(&self, obj: &Value, old: Option<&Value>, errs: &mut FieldErrors) {
        let spec = obj.get("spec").unwrap_or(&Value::Null);
        let status = obj.get("status").unwrap_or(&Value::Null);
        validate_taints(arr(spec, "taints"), "metadata.taints", errs);
        for key in ["capacity", "allocatable"] {
            for (name, v) in checks::obj(status, key).into_iter().flatten() {
                checks::check_quantity_value(name, v, &format!("status.{key}.{name}"), errs);
            }
        }
        let cidrs = arr(spec, "podCIDRs");
        for (i, c) in cidrs.iter().enumerate() {
            checks::check_cidr(c.as_str().unwrap_or(""), &format!("spec.podCIDRs[{i}]"), errs);
        }
        if cidrs.len() > 1 {
            let families: Vec<bool> =
                cidrs.iter().filter_map(|c| checks::parse_cidr(c.as_str()?)).map(|(ip, _)| ip.is_ipv6()).collect();
            let dual = families.len() == 2 && families[0] != families[1];
            if !dual || cidrs.len() > 2 {
                errs.invalid("spec.podCIDRs", json!(cidrs), "may specify no more than one CIDR for each IP family");
            }
            let mut seen = HashSet::new();
            for (i, c) in cidrs.iter().enumerate() {
                if !seen.insert(c.as_str().unwrap_or("")) {
                    checks::duplicate(errs, format!("spec.podCIDRs[{i}]"), c.clone());
                }
            }
        }
        let Some(old) = old else { return };
        let old_spec = old.get("spec").unwrap_or(&Value::Null);
        let mut seen = HashSet::new();
        for (i, a) in arr(status, "addresses").iter().enumerate() {
            if !seen.insert((s(a, "type"), s(a, "address"))) {
                checks::duplicate(errs, format!("status.addresses[{i}]"), a.clone());
            }
        }
        let old_cidrs = arr(old_spec, "podCIDRs");
        if !old_cidrs.is_empty() {
            if old_cidrs.len() != cidrs.len() {
                errs.forbidden("spec.podCIDRs", PODCIDR_FORBIDDEN);
            } else {
                for (o, n) in old_cidrs.iter().zip(cidrs) {
                    if o != n {
                        errs.forbidden("spec.podCIDRs", PODCIDR_FORBIDDEN);
                    }
                }
            }
        }
        let old_provider = s(old_spec, "providerID");
        if !old_provider.is_empty() && old_provider != s(spec, "providerID") {
            errs.forbidden("spec.providerID", "node updates may not change providerID except from \"\" to valid");
        }
        if s(spec, "externalID") != s(old_spec, "externalID") {
            errs.forbidden("spec.externalID", "may not be updated");
        }
    }

    fn columns(&self) -> &'static [Column] {
        COLUMNS
    }

    fn cells(&self, obj: &Value, now: Timestamp) -> Vec<Value> {
        let spec = obj.get("spec").unwrap_or(&Value::Null);
        let status = obj.get("status").unwrap_or(&Value::Null);
        let info = status.get("nodeInfo").unwrap_or(&Value::Null);
        let conditions: HashMap<&str, &str> =
            arr(status, "conditions").iter().map(|c| (s(c, "type"), s(c, "status"))).collect();
        let mut state = match conditions.get("Ready") {
            Some(&"True") => vec!["Ready"],
            Some(_) => vec!["NotReady"],
            None => vec!["Unknown"],
        };
        if checks::is_true(spec, "unschedulable") {
            state.push("SchedulingDisabled");
        }
        let labels = obj.pointer("/metadata/labels").and_then(Value::as_object);
        let roles = node_roles(labels);
        let address = |kind: &str| {
            arr(status, "addresses")
                .iter()
                .find(|a| s(a, "type") == kind)
                .map_or_else(|| "<none>".to_string(), |a| s(a, "address").to_string())
        };
        let or_unknown = |v: &str| if v.is_empty() { "<unknown>".to_string() } else { v.to_string() };
        vec![
            super::name_cell(obj),
            json!(state.join(",")),
            json!(if roles.is_empty() { "<none>".to_string() } else { roles.join(",") }),
            super::age_cell(obj, now),
            json!(s(info, "kubeletVersion")),
            json!(address("InternalIP")),
            json!(address("ExternalIP")),
            json!(or_unknown(s(info, "osImage"))),
            json!(or_unknown(s(info, "kernelVersion"))),
            json!(or_unknown(s(info, "containerRuntimeVersion"))),
        ]
    }

    fn field(&self, obj: &Value, path: &str) -> Option<String> {
        match path {
            "spec.unschedulable" => {
                Some(obj.get("spec").is_some_and(|sp| checks::is_true(sp, "unschedulable")).to_string())
            }
            _ => None,
        }
    }
}

/// Roles from `node-role.kubernetes.io/<role>` labels and the `kubernetes.io/role` label, sorted.
fn node_roles(labels: Option<&Map<String, Value>>) -> Vec<String> {
    let mut roles = BTreeSet::new();
    for (k, v) in labels.into_iter().flatten() {
        if let Some(role) = k.strip_prefix(ROLE_PREFIX).filter(|r| !r.is_empty()) {
            roles.insert(role.to_string());
        } else if k == "kubernetes.io/role" && v.as_str().is_some_and(|v| !v.is_empty()) {
            roles.insert(v.as_str().unwrap_or_default().to_string());
        }
    }
    roles.into_iter().collect()
}

/// Node taints: qualified keys, label values, a known effect, unique by key and effect.
pub(crate) fn validate_taints(taints: &[Value], path: &str, errs: &mut FieldErrors) {
    let mut unique = HashSet::new();
    for (i, t) in taints.iter().enumerate() {
        let p = format!("{path}[{i}]");
        let key = s(t, "key");
        for msg in validation::qualified_name(key) {
            errs.invalid(format!("{p}.key"), json!(key), msg);
        }
        let value = s(t, "value");
        let msgs = validation::label_value(value);
        if !msgs.is_empty() {
            errs.invalid(format!("{p}.value"), json!(value), msgs.join(";"));
        }
        let effect = s(t, "effect");
        match effect {
            "" => errs.required(format!("{p}.effect"), ""),
            "NoSchedule" | "PreferNoSchedule" | "NoExecute" => {}
            other => errs.not_supported(
                format!("{p}.effect"),
                json!(other),
                &["NoSchedule", "PreferNoSchedule", "NoExecute"],
            ),
        }
        if !unique.insert((effect, key)) {
            errs.push(
                validation::ErrorKind::Duplicate,
                p,
                Some(t.clone()),
                "taints must be unique by key and effect pair",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Strategy as _;
    use super::*;

    #[test]
    fn node_table_and_cidr_rules() {
        let now = Timestamp(chrono::DateTime::parse_from_rfc3339("2026-01-02T00:00:00Z").expect("time").to_utc());
        let mut node = json!({
            "metadata": {"name": "n1", "creationTimestamp": "2026-01-01T00:00:00Z",
                "labels": {"node-role.kubernetes.io/control-plane": "", "kubernetes.io/hostname": "n1"}},
            "spec": {"podCIDR": "10.244.1.0/24", "unschedulable": true},
            "status": {"capacity": {"cpu": "2", "memory": "4045632Ki", "pods": "110"},
                "conditions": [{"type": "Ready", "status": "True"}],
                "addresses": [{"type": "InternalIP", "address": "192.168.1.10"}],
                "nodeInfo": {"kubeletVersion": "v1.35.0", "osImage": "Debian GNU/Linux 12 (bookworm)"}}
        });
        Strategy.default(&mut node);
        assert_eq!(node["spec"]["podCIDRs"], json!(["10.244.1.0/24"]));
        assert_eq!(node["status"]["allocatable"], node["status"]["capacity"]);
        let cells = Strategy.cells(&node, now);
        assert_eq!(cells[1], json!("Ready,SchedulingDisabled"));
        assert_eq!(cells[2], json!("control-plane"));
        assert_eq!(cells[3], json!("24h"));
        assert_eq!(cells[4], json!("v1.35.0"));
        assert_eq!(cells[5], json!("192.168.1.10"));
        assert_eq!(cells[6], json!("<none>"));
        assert_eq!(cells[8], json!("<unknown>"));
        assert_eq!(Strategy.field(&node, "spec.unschedulable").as_deref(), Some("true"));

        let mut errs = FieldErrors::default();
        let mut bad = json!({"spec": {"podCIDR": "10.244.1.0/33"}});
        Strategy.default(&mut bad);
        Strategy.validate(&bad, None, &mut errs);
        assert_eq!(
            errs.0[0].to_string(),
            "spec.podCIDRs[0]: Invalid value: \"10.244.1.0/33\": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"
        );
        let mut errs = FieldErrors::default();
        let mut changed = node.clone();
        changed["spec"]["podCIDRs"] = json!(["10.244.2.0/24"]);
        Strategy.validate(&changed, Some(&node), &mut errs);
        assert_eq!(errs.0[0].to_string(), format!("spec.podCIDRs: Forbidden: {PODCIDR_FORBIDDEN}"));
    }
}
