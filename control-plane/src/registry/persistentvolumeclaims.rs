//! PersistentVolumeClaim (persistentvolumeclaims/v1): strategy and discovery entry.

use serde_json::{Value, json};

use super::persistentvolumes::{
    access_modes_string, storage_class, unset_or, validate_access_modes, validate_volume_mode,
};
use super::podspec::checks::{self, arr, child_obj, obj, s};
use super::podspec::quantity::Quantity;
use super::{AGE_COLUMN, Column, NAME_COLUMN, Resource, Timestamp};
use crate::validation::{self, FieldErrors};

pub static RESOURCE: Resource = Resource {
    group: "",
    version: "v1",
    kind: "PersistentVolumeClaim",
    plural: "persistentvolumeclaims",
    singular: "persistentvolumeclaim",
    short_names: &["pvc"],
    categories: &[],
    namespaced: true,
    subresources: &["status"],
    storage: "persistentvolumeclaims",
    strategy: &Strategy,
};

pub struct Strategy;

static COLUMNS: &[Column] = &[
    NAME_COLUMN,
    Column::new("Status", "string", "phase represents the current phase of PersistentVolumeClaim."),
    Column::new("Volume", "string", "volumeName is the binding reference to the PersistentVolume backing this claim."),
    Column::new("Capacity", "string", "capacity represents the actual resources of the underlying volume."),
    Column::new(
        "Access Modes",
        "string",
        "accessModes contains the actual access modes the volume backing the PVC has. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#access-modes-1",
    ),
    Column::new("StorageClass", "string", "StorageClass of the pvc"),
    Column::new("VolumeAttributesClass", "string", "VolumeAttributesClass of the pvc"),
    AGE_COLUMN,
    Column::wide(
        "VolumeMode",
        "string",
        "volumeMode defines what type of volume is required by the claim. Value of Filesystem is implied when not included in claim spec.",
    ),
];

const SPEC_IMMUTABLE: &str =
    "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims";

impl super::Strategy for Strategy {
    fn default(&self, o: &mut Value) {
        let Some(m) = o.as_object_mut() else { return };
        if let Some(spec) = m.get_mut("spec") {
            super::podspec::default_pvc_spec(spec);
        }
        if let Some(status) = child_obj(m, "status") {
            checks::default_field(status, "phase", json!("Pending"));
        }
    }

    fn prepare_create(&self, o: &mut Value) {
        if let Some(m) = o.as_object_mut() {
            m.insert("status".into(), json!({"phase": "Pending"}));
        }
    }

    fn validate(&self, o: &Value, old: Option<&Value>, errs: &mut FieldErrors) {
        let spec = o.get("spec").unwrap_or(&Value::Null);
        validate_pvc_spec(spec, "spec", errs);
        let Some(old) = old else { return };
        let old_spec = old.get("spec").unwrap_or(&Value::Null);
        let mut new_clone = spec.clone();
        let mut old_clone = old_spec.clone();
        if s(old_spec, "volumeName").is_empty()
            && let Some(m) = old_clone.as_object_mut()
        {
            match spec.get("volumeName") {
                Some(v) => m.insert("volumeName".into(), v.clone()),
                None => m.remove("volumeName"),
            };
        }
        let bound = o.pointer("/status/phase").and_then(Value::as_str) == Some("Bound");
        if bound && let Some(req) = new_clone.pointer_mut("/resources/requests").and_then(Value::as_object_mut) {
            match old_spec.pointer("/resources/requests/storage") {
                Some(v) => req.insert("storage".into(), v.clone()),
                None => req.remove("storage"),
            };
        }
        if let Some(m) = new_clone.as_object_mut() {
            match old_spec.get("volumeAttributesClassName") {
                Some(v) => m.insert("volumeAttributesClassName".into(), v.clone()),
                None => m.remove("volumeAttributesClassName"),
            };
        }
        if new_clone != old_clone {
            errs.forbidden("spec", SPEC_IMMUTABLE);
        }
        let size =
            |v: &Value, p: &str| v.pointer(p).and_then(|q| Quantity::from_json(q).ok()).unwrap_or_else(Quantity::zero);
        let (old_size, new_size) =
            (size(old_spec, "/resources/requests/storage"), size(spec, "/resources/requests/storage"));
        if new_size < old_size && new_size <= size(old, "/status/capacity/storage") {
            errs.forbidden("spec.resources.requests.storage", "field can not be less than status.capacity");
        }
        if spec.get("volumeMode") != old_spec.get("volumeMode") {
            errs.invalid("volumeMode", spec.get("volumeMode").cloned().unwrap_or(Value::Null), "field is immutable");
        }
    }

    fn columns(&self) -> &'static [Column] {
        COLUMNS
    }

    fn cells(&self, o: &Value, now: Timestamp) -> Vec<Value> {
        let spec = o.get("spec").unwrap_or(&Value::Null);
        let status = o.get("status").unwrap_or(&Value::Null);
        let deleting = o.pointer("/metadata/deletionTimestamp").is_some_and(|d| !d.is_null());
        let phase = if deleting { "Terminating" } else { s(status, "phase") };
        let volume = s(spec, "volumeName");
        let (capacity, modes) = if volume.is_empty() {
            (String::new(), String::new())
        } else {
            let cap = obj(status, "capacity")
                .and_then(|c| c.get("storage"))
                .and_then(|q| Quantity::from_json(q).ok())
                .unwrap_or_else(Quantity::zero);
            (cap.to_string(), access_modes_string(arr(status, "accessModes")))
        };
        vec![
            super::name_cell(o),
            json!(phase),
            json!(volume),
            json!(capacity),
            json!(modes),
            json!(storage_class(o)),
            json!(unset_or(spec, "volumeAttributesClassName")),
            super::age_cell(o, now),
            json!(unset_or(spec, "volumeMode")),
        ]
    }

    fn field(&self, o: &Value, path: &str) -> Option<String> {
        (path == "name").then(|| o.get("metadata").map_or("", |m| s(m, "name")).to_string())
    }
}

/// `ValidatePersistentVolumeClaimSpec` (also for StatefulSet `volumeClaimTemplates` and
/// ephemeral volumes); `path` is the spec's path.
pub(crate) fn validate_pvc_spec(spec: &Value, path: &str, errs: &mut FieldErrors) {
    validate_access_modes(spec, &format!("{path}.accessModes"), "at least 1 access mode is required", errs);
    let storage_field = format!("{path}.resources[storage]");
    match spec.pointer("/resources/requests/storage") {
        None => errs.required(&storage_field, ""),
        Some(v) => match Quantity::from_json(v) {
            Ok(q) if q <= Quantity::zero() => {
                errs.invalid(&storage_field, json!(q.to_string()), "must be greater than zero")
            }
            Ok(_) => {}
            Err(msg) => errs.invalid(&storage_field, v.clone(), msg),
        },
    }
    if let Some(class) = spec.get("storageClassName").and_then(Value::as_str).filter(|c| !c.is_empty()) {
        for msg in validation::dns1123_subdomain(class) {
            errs.invalid(format!("{path}.storageClassName"), json!(class), msg);
        }
    }
    if path == "spec" {
        validate_volume_mode(spec, errs);
    } else if let Some(mode) = spec.get("volumeMode").and_then(Value::as_str)
        && !matches!(mode, "Block" | "Filesystem")
    {
        errs.not_supported(format!("{path}.volumeMode"), json!(mode), &["Block", "Filesystem"]);
    }
}

#[cfg(test)]
mod tests {
    use super::super::Strategy as _;
    use super::*;

    #[test]
    fn pvc_rules_and_table() {
        let mut pvc = json!({"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}}}});
        Strategy.default(&mut pvc);
        Strategy.prepare_create(&mut pvc);
        assert_eq!(pvc["spec"]["volumeMode"], "Filesystem");
        assert_eq!(pvc["status"], json!({"phase": "Pending"}));
        let mut errs = FieldErrors::default();
        Strategy.validate(&pvc, None, &mut errs);
        assert!(errs.is_empty(), "{errs:?}");
        let cells = Strategy.cells(&pvc, Timestamp::now());
        assert_eq!(cells[1..7], [json!("Pending"), json!(""), json!(""), json!(""), json!(""), json!("<unset>")]);

        let mut errs = FieldErrors::default();
        Strategy.validate(&json!({"spec": {}}), None, &mut errs);
        let msgs: Vec<String> = errs.0.iter().map(ToString::to_string).collect();
        assert_eq!(
            msgs,
            vec![
                "spec.accessModes: Required value: at least 1 access mode is required",
                "spec.resources[storage]: Required value"
            ]
        );

        let mut bound = pvc.clone();
        bound["spec"]["volumeName"] = json!("pv1");
        let mut errs = FieldErrors::default();
        Strategy.validate(&bound, Some(&pvc), &mut errs);
        assert!(errs.is_empty(), "binding is allowed once: {errs:?}");
        let mut changed = bound.clone();
        changed["spec"]["accessModes"] = json!(["ReadWriteMany"]);
        let mut errs = FieldErrors::default();
        Strategy.validate(&changed, Some(&bound), &mut errs);
        assert_eq!(errs.0[0].to_string(), format!("spec: Forbidden: {SPEC_IMMUTABLE}"));
    }
}
