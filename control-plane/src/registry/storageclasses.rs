//! StorageClass (storageclasses.storage.k8s.io/v1): strategy and discovery entry.
//!
//! Defaults `reclaimPolicy: Delete` and `volumeBindingMode: Immediate`; the provisioner,
//! parameters and reclaim policy cannot change. The table marks the default class with
//! ` (default)` after its name.

use serde_json::{Value, json};

use super::apps_util as util;
use super::{AGE_COLUMN, Column, NAME_COLUMN, Resource, Timestamp, age_cell, name_cell};
use crate::validation::{self, ErrorKind, FieldErrors};

pub static RESOURCE: Resource = Resource {
    group: "storage.k8s.io",
    version: "v1",
    kind: "StorageClass",
    plural: "storageclasses",
    singular: "storageclass",
    short_names: &["sc"],
    categories: &[],
    namespaced: false,
    subresources: &[],
    storage: "storageclasses",
    strategy: &Strategy,
};

pub struct Strategy;

/// Annotations that mark the cluster's default StorageClass (the beta one is still honoured).
pub(crate) const DEFAULT_CLASS_ANNOTATIONS: &[&str] =
    &["storageclass.kubernetes.io/is-default-class", "storageclass.beta.kubernetes.io/is-default-class"];

static COLUMNS: &[Column] = &[
    NAME_COLUMN,
    Column::new("Provisioner", "string", "provisioner indicates the type of the provisioner."),
    Column::new(
        "ReclaimPolicy",
        "string",
        "reclaimPolicy controls the reclaimPolicy for dynamically provisioned PersistentVolumes of this storage class. Defaults to Delete.",
    ),
    Column::new(
        "VolumeBindingMode",
        "string",
        "volumeBindingMode indicates how PersistentVolumeClaims should be provisioned and bound.  When unset, VolumeBindingImmediate is used. This field is only honored by servers that enable the VolumeScheduling feature.",
    ),
    Column::new(
        "AllowVolumeExpansion",
        "string",
        "allowVolumeExpansion shows whether the storage class allow volume expand.",
    ),
    AGE_COLUMN,
];

const MAX_PARAMETERS: usize = 512;
const MAX_PARAMETERS_SIZE: usize = 256 * 1024;

impl super::Strategy for Strategy {
    fn default(&self, obj: &mut Value) {
        util::default_field(obj, "reclaimPolicy", json!("Delete"));
        util::default_field(obj, "volumeBindingMode", json!("Immediate"));
    }

    fn validate(&self, obj: &Value, old: Option<&Value>, errs: &mut FieldErrors) {
        let provisioner = obj.get("provisioner").and_then(Value::as_str).unwrap_or("");
        if provisioner.is_empty() {
            errs.required("provisioner", "");
        } else {
            for msg in validation::qualified_name(&provisioner.to_lowercase()) {
                errs.invalid("provisioner", json!(provisioner), msg);
            }
        }
        validate_parameters(obj.get("parameters"), errs);
        match obj.get("reclaimPolicy").filter(|p| !p.is_null()) {
            Some(p) if !matches!(p.as_str(), Some("Delete" | "Retain" | "")) => {
                errs.not_supported("reclaimPolicy", p.clone(), &["Delete", "Retain"]);
            }
            _ => {}
        }
        match obj.get("volumeBindingMode").filter(|m| !m.is_null()) {
            None => errs.required("volumeBindingMode", ""),
            Some(m) if !matches!(m.as_str(), Some("Immediate" | "WaitForFirstConsumer")) => {
                errs.not_supported("volumeBindingMode", m.clone(), &["Immediate", "WaitForFirstConsumer"]);
            }
            Some(_) => {}
        }
        validate_allowed_topologies(util::array_at(obj, "/allowedTopologies"), errs);
        if let Some(old) = old {
            let forbid = |errs: &mut FieldErrors, key: &str| {
                if obj.get(key) != old.get(key) {
                    errs.forbidden(key, format!("updates to {key} are forbidden."));
                }
            };
            forbid(errs, "parameters");
            forbid(errs, "provisioner");
            forbid(errs, "reclaimPolicy");
            errs.immutable("volumeBindingMode", obj.get("volumeBindingMode"), old.get("volumeBindingMode"));
        }
    }

    fn columns(&self) -> &'static [Column] {
        COLUMNS
    }

    fn cells(&self, obj: &Value, now: Timestamp) -> Vec<Value> {
        let mut name = name_cell(obj).as_str().unwrap_or("").to_string();
        if is_default_class(obj) {
            name.push_str(" (default)");
        }
        vec![
            json!(name),
            json!(util::str_or_empty(obj, "/provisioner")),
            json!(obj.get("reclaimPolicy").and_then(Value::as_str).unwrap_or("Delete")),
            json!(obj.get("volumeBindingMode").and_then(Value::as_str).unwrap_or("Immediate")),
            json!(obj.get("allowVolumeExpansion").and_then(Value::as_bool).unwrap_or(false)),
            age_cell(obj, now),
        ]
    }
}

/// Whether `obj` is annotated as the default StorageClass.
pub(crate) fn is_default_class(obj: &Value) -> bool {
    let annotations = obj.pointer("/metadata/annotations");
    DEFAULT_CLASS_ANNOTATIONS
        .iter()
        .any(|a| annotations.and_then(|m| m.get(*a)).and_then(Value::as_str) == Some("true"))
}

fn validate_parameters(params: Option<&Value>, errs: &mut FieldErrors) {
    let Some(map) = params.and_then(Value::as_object) else { return };
    if map.len() > MAX_PARAMETERS {
        errs.push(
            ErrorKind::TooLong,
            "parameters",
            None,
            format!("may not have more than {MAX_PARAMETERS} parameters"),
        );
        return;
    }
    let mut size = 0;
    for (k, v) in map {
        if k.is_empty() {
            errs.invalid("parameters", json!(k), "field can not be empty.");
        }
        size += k.len() + v.as_str().map_or(0, str::len);
    }
    if size > MAX_PARAMETERS_SIZE {
        errs.push(ErrorKind::TooLong, "parameters", None, format!("may not be more than {MAX_PARAMETERS_SIZE} bytes"));
    }
}

/// `TopologySelectorTerm`s: label keys, and at least one valid value per requirement.
fn validate_allowed_topologies(terms: &[Value], errs: &mut FieldErrors) {
    for (i, term) in terms.iter().enumerate() {
        for (j, req) in util::array_at(term, "/matchLabelExpressions").iter().enumerate() {
            let path = format!("allowedTopologies[{i}].matchLabelExpressions[{j}]");
            let key = req.get("key").and_then(Value::as_str).unwrap_or("");
            for msg in validation::qualified_name(key) {
                errs.invalid(format!("{path}.key"), json!(key), msg);
            }
            let values = util::array_at(req, "/values");
            if values.is_empty() {
                errs.required(format!("{path}.values"), "must specify as least one value");
            }
            for (k, v) in values.iter().enumerate() {
                for msg in validation::label_value(v.as_str().unwrap_or("")) {
                    errs.invalid(format!("{path}.values[{k}]"), v.clone(), msg);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Strategy as _;
    use super::*;

    fn class() -> Value {
        json!({"metadata": {"name": "local-path", "creationTimestamp": "2026-01-01T00:00:00Z",
            "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": "rancher.io/local-path"})
    }

    fn errors(obj: &Value, old: Option<&Value>) -> Vec<String> {
        let mut errs = FieldErrors::default();
        Strategy.validate(obj, old, &mut errs);
        errs.0.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn defaults_and_default_class_name() {
        let mut c = class();
        Strategy.default(&mut c);
        assert_eq!(c["reclaimPolicy"], json!("Delete"));
        assert_eq!(c["volumeBindingMode"], json!("Immediate"));
        assert_eq!(errors(&c, None), Vec::<String>::new());
        let cells = Strategy.cells(&c, Timestamp::now());
        assert_eq!(
            cells[..5],
            [
                json!("local-path (default)"),
                json!("rancher.io/local-path"),
                json!("Delete"),
                json!("Immediate"),
                json!(false)
            ]
        );
        c["metadata"]["annotations"] = json!({"storageclass.kubernetes.io/is-default-class": "false"});
        assert_eq!(Strategy.cells(&c, Timestamp::now())[0], json!("local-path"));
    }

    #[test]
    fn validation_and_immutability() {
        let mut c = class();
        c["reclaimPolicy"] = json!("Recycle");
        c.as_object_mut().expect("object").remove("provisioner");
        Strategy.default(&mut c);
        assert_eq!(
            errors(&c, None),
            [
                "provisioner: Required value",
                "reclaimPolicy: Unsupported value: \"Recycle\": supported values: \"Delete\", \"Retain\"",
            ]
        );
        let mut old = class();
        Strategy.default(&mut old);
        let mut new = old.clone();
        new["provisioner"] = json!("example.com/other");
        new["parameters"] = json!({"type": "ssd"});
        new["allowVolumeExpansion"] = json!(true);
        assert_eq!(
            errors(&new, Some(&old)),
            [
                "parameters: Forbidden: updates to parameters are forbidden.",
                "provisioner: Forbidden: updates to provisioner are forbidden."
            ]
        );
    }
}
