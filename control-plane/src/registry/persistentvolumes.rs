//! PersistentVolume (persistentvolumes/v1): strategy and discovery entry.

use serde_json::{Map, Value, json};

use super::podspec::checks::{self, arr, child_obj, obj, s};
use super::podspec::quantity::{self, Quantity};
use super::{AGE_COLUMN, Column, NAME_COLUMN, Resource, Timestamp};
use crate::validation::{self, FieldErrors};

pub static RESOURCE: Resource = Resource {
    group: "",
    version: "v1",
    kind: "PersistentVolume",
    plural: "persistentvolumes",
    singular: "persistentvolume",
    short_names: &["pv"],
    categories: &[],
    namespaced: false,
    subresources: &["status"],
    storage: "persistentvolumes",
    strategy: &Strategy,
};

pub struct Strategy;

static COLUMNS: &[Column] = &[
    NAME_COLUMN,
    Column::new(
        "Capacity",
        "string",
        "capacity is the description of the persistent volume's resources and capacity. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#capacity",
    ),
    Column::new(
        "Access Modes",
        "string",
        "accessModes contains all ways the volume can be mounted. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#access-modes",
    ),
    Column::new(
        "Reclaim Policy",
        "string",
        "persistentVolumeReclaimPolicy defines what happens to a persistent volume when released from its claim. Valid options are Retain (default for manually created PersistentVolumes), Delete (default for dynamically provisioned PersistentVolumes), and Recycle (deprecated). Recycle must be supported by the volume plugin underlying this PersistentVolume. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#reclaiming",
    ),
    Column::new(
        "Status",
        "string",
        "phase indicates if a volume is available, bound to a claim, or released by a claim. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#phase",
    ),
    Column::new(
        "Claim",
        "string",
        "claimRef is part of a bi-directional binding between PersistentVolume and PersistentVolumeClaim. Expected to be non-nil when bound. claim.VolumeName is the authoritative bind between PV and PVC. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#binding",
    ),
    Column::new("StorageClass", "string", "StorageClass of the pv"),
    Column::new("VolumeAttributesClass", "string", "VolumeAttributesClass of the pv"),
    Column::new(
        "Reason",
        "string",
        "reason is a brief CamelCase string that describes any failure and is meant for machine parsing and tidy display in the CLI.",
    ),
    AGE_COLUMN,
    Column::wide(
        "VolumeMode",
        "string",
        "volumeMode defines if a volume is intended to be used with a formatted filesystem or to remain in raw block state. Value of Filesystem is implied when not included in spec.",
    ),
];

/// Every volume source field of `PersistentVolumeSource`.
const PV_SOURCES: &[&str] = &[
    "hostPath",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "glusterfs",
    "flocker",
    "nfs",
    "rbd",
    "quobyte",
    "cephfs",
    "iscsi",
    "cinder",
    "fc",
    "flexVolume",
    "azureFile",
    "vsphereVolume",
    "photonPersistentDisk",
    "portworxVolume",
    "azureDisk",
    "scaleIO",
    "local",
    "storageos",
    "csi",
];

/// The beta annotation that older clients use instead of `storageClassName`.
pub(crate) const BETA_STORAGE_CLASS: &str = "volume.beta.kubernetes.io/storage-class";

impl super::Strategy for Strategy {
    fn default(&self, o: &mut Value) {
        let Some(m) = o.as_object_mut() else { return };
        if let Some(spec) = child_obj(m, "spec") {
            checks::default_field(spec, "persistentVolumeReclaimPolicy", json!("Retain"));
            checks::default_field(spec, "volumeMode", json!("Filesystem"));
            quantity::canonicalize_list(spec.get_mut("capacity"), true);
            if let Some(hp) = spec.get_mut("hostPath").and_then(Value::as_object_mut)
                && hp.get("type").is_none_or(Value::is_null)
            {
                hp.insert("type".into(), json!(""));
            }
        }
        if let Some(status) = child_obj(m, "status") {
            checks::default_field(status, "phase", json!("Pending"));
        }
    }

    fn prepare_create(&self, o: &mut Value) {
        if let Some(m) = o.as_object_mut() {
            let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
            m.insert("status".into(), json!({"phase": "Pending", "lastPhaseTransitionTime": now}));
        }
    }

    fn validate(&self, o: &Value, old: Option<&Value>, errs: &mut FieldErrors) {
        let spec = o.get("spec").unwrap_or(&Value::Null);
        validate_access_modes(spec, "spec.accessModes", "", errs);
        let capacity = obj(spec, "capacity");
        if capacity.is_none_or(Map::is_empty) {
            errs.required("spec.capacity", "");
        }
        if capacity.is_none_or(|c| !c.contains_key("storage") || c.len() > 1) {
            errs.not_supported("spec.capacity", json!(capacity), &["storage"]);
        }
        for (name, v) in capacity.into_iter().flatten() {
            let field = format!("spec.capacity[{name}]");
            match Quantity::from_json(v) {
                Ok(q) if q <= Quantity::zero() => {
                    errs.invalid(field, json!(q.to_string()), "must be greater than zero")
                }
                Ok(_) => {}
                Err(msg) => errs.invalid(field, v.clone(), msg),
            }
        }
        let policy = s(spec, "persistentVolumeReclaimPolicy");
        if !policy.is_empty() && !matches!(policy, "Delete" | "Recycle" | "Retain") {
            errs.not_supported("spec.persistentVolumeReclaimPolicy", json!(policy), &["Delete", "Recycle", "Retain"]);
        }
        let sources: Vec<&str> =
            PV_SOURCES.iter().copied().filter(|k| spec.get(*k).is_some_and(|v| !v.is_null())).collect();
        for extra in sources.iter().skip(1) {
            errs.forbidden(format!("spec.{extra}"), "may not specify more than 1 volume type");
        }
        if sources.is_empty() {
            errs.required("spec", "must specify a volume type");
        }
        if let Some(hp) = spec.get("hostPath").filter(|v| v.is_object())
            && s(hp, "path").is_empty()
        {
            errs.required("spec.hostPath.path", "");
        }
        if let Some(local) = spec.get("local").filter(|v| v.is_object()) {
            if s(local, "path").is_empty() {
                errs.required("spec.local.path", "");
            }
            if spec.get("nodeAffinity").is_none_or(Value::is_null) {
                errs.required("spec.nodeAffinity", "Local volume requires node affinity");
            }
        }
        if let Some(nfs) = spec.get("nfs").filter(|v| v.is_object()) {
            if s(nfs, "server").is_empty() {
                errs.required("spec.nfs.server", "");
            }
            if s(nfs, "path").is_empty() {
                errs.required("spec.nfs.path", "");
            }
        }
        if let Some(csi) = spec.get("csi").filter(|v| v.is_object()) {
            if s(csi, "driver").is_empty() {
                errs.required("spec.csi.driver", "");
            }
            if s(csi, "volumeHandle").is_empty() {
                errs.required("spec.csi.volumeHandle", "");
            }
        }
        let class = s(spec, "storageClassName");
        if !class.is_empty() {
            for msg in validation::dns1123_subdomain(class) {
                errs.invalid("spec.storageClassName", json!(class), msg);
            }
        }
        validate_volume_mode(spec, errs);
        let Some(old) = old else { return };
        let old_spec = old.get("spec").unwrap_or(&Value::Null);
        let source_of = |sp: &Value| -> Vec<(&str, Value)> {
            PV_SOURCES.iter().filter_map(|k| sp.get(*k).filter(|v| !v.is_null()).map(|v| (*k, v.clone()))).collect()
        };
        if source_of(spec) != source_of(old_spec) {
            errs.forbidden("spec.persistentvolumesource", "spec.persistentvolumesource is immutable after creation");
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
        let claim = spec
            .get("claimRef")
            .filter(|c| c.is_object())
            .map_or(String::new(), |c| format!("{}/{}", s(c, "namespace"), s(c, "name")));
        let capacity = obj(spec, "capacity")
            .and_then(|c| c.get("storage"))
            .and_then(|q| Quantity::from_json(q).ok())
            .unwrap_or_else(Quantity::zero);
        let deleting = o.pointer("/metadata/deletionTimestamp").is_some_and(|d| !d.is_null());
        let phase = if deleting { "Terminating" } else { s(status, "phase") };
        vec![
            super::name_cell(o),
            json!(capacity.to_string()),
            json!(access_modes_string(arr(spec, "accessModes"))),
            json!(s(spec, "persistentVolumeReclaimPolicy")),
            json!(phase),
            json!(claim),
            json!(storage_class(o)),
            json!(unset_or(spec, "volumeAttributesClassName")),
            json!(s(status, "reason")),
            super::age_cell(o, now),
            json!(unset_or(spec, "volumeMode")),
        ]
    }

    fn field(&self, o: &Value, path: &str) -> Option<String> {
        (path == "name").then(|| o.get("metadata").map_or("", |m| s(m, "name")).to_string())
    }
}

/// The value of an optional string field, `<unset>` when absent.
pub(crate) fn unset_or(v: &Value, key: &str) -> String {
    v.get(key).and_then(Value::as_str).map_or_else(|| "<unset>".to_string(), str::to_string)
}

/// The storage class of a PV or PVC: the beta annotation when present, else `storageClassName`.
pub(crate) fn storage_class(o: &Value) -> String {
    let annotation = o.pointer("/metadata/annotations").and_then(|a| a.get(BETA_STORAGE_CLASS)).and_then(Value::as_str);
    match annotation {
        Some(class) => class.to_string(),
        None => o.get("spec").map_or("", |sp| s(sp, "storageClassName")).to_string(),
    }
}

/// `RWO,ROX,RWX,RWOP` in that order, duplicates removed.
pub(crate) fn access_modes_string(modes: &[Value]) -> String {
    let has = |m: &str| modes.iter().any(|v| v == m);
    [("ReadWriteOnce", "RWO"), ("ReadOnlyMany", "ROX"), ("ReadWriteMany", "RWX"), ("ReadWriteOncePod", "RWOP")]
        .iter()
        .filter(|(mode, _)| has(mode))
        .map(|(_, short)| *short)
        .collect::<Vec<_>>()
        .join(",")
}

const ACCESS_MODES: &[&str] = &["ReadOnlyMany", "ReadWriteMany", "ReadWriteOnce", "ReadWriteOncePod"];

/// Access modes of a PV or PVC spec; `required_detail` is the detail of the missing-field error.
pub(crate) fn validate_access_modes(spec: &Value, field: &str, required_detail: &str, errs: &mut FieldErrors) {
    let modes = arr(spec, "accessModes");
    if modes.is_empty() {
        errs.required(field, required_detail);
    }
    let (mut once_pod, mut other) = (false, false);
    for m in modes {
        let mode = m.as_str().unwrap_or("");
        if !ACCESS_MODES.contains(&mode) {
            errs.not_supported(field, m.clone(), ACCESS_MODES);
        } else if mode == "ReadWriteOncePod" {
            once_pod = true;
        } else {
            other = true;
        }
    }
    if once_pod && other {
        errs.forbidden(field, "may not use ReadWriteOncePod with other access modes");
    }
}

pub(crate) fn validate_volume_mode(spec: &Value, errs: &mut FieldErrors) {
    if let Some(mode) = spec.get("volumeMode").and_then(Value::as_str)
        && !matches!(mode, "Block" | "Filesystem")
    {
        errs.not_supported("spec.volumeMode", json!(mode), &["Block", "Filesystem"]);
    }
}

#[cfg(test)]
mod tests {
    use super::super::Strategy as _;
    use super::*;

    #[test]
    fn pv_defaults_validation_and_table() {
        let mut pv = json!({"metadata": {"name": "pv1", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"capacity": {"storage": "1024Mi"}, "accessModes": ["ReadWriteOnce", "ReadOnlyMany"],
                "hostPath": {"path": "/data/pv1"}, "storageClassName": "manual",
                "claimRef": {"namespace": "default", "name": "data"}}});
        Strategy.default(&mut pv);
        Strategy.prepare_create(&mut pv);
        assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Retain");
        assert_eq!(pv["spec"]["volumeMode"], "Filesystem");
        assert_eq!(pv["spec"]["capacity"]["storage"], "1Gi");
        assert_eq!(pv["status"]["phase"], "Pending");
        let mut errs = FieldErrors::default();
        Strategy.validate(&pv, None, &mut errs);
        assert!(errs.is_empty(), "{errs:?}");
        pv["status"] = json!({"phase": "Bound"});
        let now = Timestamp(chrono::DateTime::parse_from_rfc3339("2026-01-01T02:00:00Z").expect("time").to_utc());
        assert_eq!(
            Strategy.cells(&pv, now),
            vec![
                json!("pv1"),
                json!("1Gi"),
                json!("RWO,ROX"),
                json!("Retain"),
                json!("Bound"),
                json!("default/data"),
                json!("manual"),
                json!("<unset>"),
                json!(""),
                json!("120m"),
                json!("Filesystem")
            ]
        );
        let mut errs = FieldErrors::default();
        Strategy.validate(&json!({"spec": {"hostPath": {"path": "/x"}}}), None, &mut errs);
        let msgs: Vec<String> = errs.0.iter().map(ToString::to_string).collect();
        assert_eq!(msgs[0], "spec.accessModes: Required value");
        assert_eq!(msgs[1], "spec.capacity: Required value");
    }
}
