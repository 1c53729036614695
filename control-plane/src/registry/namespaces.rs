//! Namespace (namespaces/v1): strategy and discovery entry.
//!
//! Every namespace carries the `kubernetes.io/metadata.name` label and, from creation, the
//! `kubernetes` finalizer and phase `Active`. [`prepare_update`] keeps the finalizers and status
//! of the stored object on a plain update (they change only through `/finalize` and `/status`).

use serde_json::{Value, json};

use super::podspec::checks::{self, arr, child_obj, s};
use super::{AGE_COLUMN, Column, NAME_COLUMN, Resource, Timestamp};
use crate::validation::{self, FieldErrors};

pub static RESOURCE: Resource = Resource {
    group: "",
    version: "v1",
    kind: "Namespace",
    plural: "namespaces",
    singular: "namespace",
    short_names: &["ns"],
    categories: &[],
    namespaced: false,
    subresources: &["status", "finalize"],
    storage: "namespaces",
    strategy: &Strategy,
};

pub struct Strategy;

/// The label every namespace carries with its own name.
pub(crate) const NAME_LABEL: &str = "kubernetes.io/metadata.name";

static COLUMNS: &[Column] = &[NAME_COLUMN, Column::new("Status", "string", "The status of the namespace"), AGE_COLUMN];

impl super::Strategy for Strategy {
    fn prepare_update(&self, new: &mut Value, old: &Value) {
        prepare_update(new, old);
    }
    fn name_rule(&self) -> super::NameRule {
        super::NameRule::Label
    }

    fn default(&self, obj: &mut Value) {
        let Some(m) = obj.as_object_mut() else { return };
        let name = m.get("metadata").map(|meta| s(meta, "name").to_string()).unwrap_or_default();
        if !name.is_empty()
            && let Some(labels) = child_obj(m, "metadata").and_then(|meta| child_obj(meta, "labels"))
        {
            labels.insert(NAME_LABEL.into(), json!(name));
        }
        if let Some(status) = child_obj(m, "status") {
            checks::default_field(status, "phase", json!("Active"));
        }
    }

    fn prepare_create(&self, obj: &mut Value) {
        let Some(m) = obj.as_object_mut() else { return };
        m.insert("status".into(), json!({"phase": "Active"}));
        if let Some(spec) = child_obj(m, "spec") {
            let finalizers = spec.entry("finalizers").or_insert_with(|| json!([]));
            if let Some(list) = finalizers.as_array_mut()
                && !list.iter().any(|f| f == "kubernetes")
            {
                list.push(json!("kubernetes"));
            }
        }
    }

    fn validate(&self, obj: &Value, _old: Option<&Value>, errs: &mut FieldErrors) {
        let spec = obj.get("spec").unwrap_or(&Value::Null);
        for f in arr(spec, "finalizers") {
            validate_finalizer_name(f.as_str().unwrap_or(""), "spec.finalizers", errs);
        }
    }

    fn columns(&self) -> &'static [Column] {
        COLUMNS
    }

    fn cells(&self, obj: &Value, now: Timestamp) -> Vec<Value> {
        let phase = obj.get("status").map_or("", |st| s(st, "phase"));
        vec![super::name_cell(obj), json!(phase), super::age_cell(obj, now)]
    }

    /// A namespace being deleted is `Terminating` until its finalizers are done.
    fn forbid_delete(&self, obj: &Value) -> Option<String> {
        let name = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
        ["default", "kube-system", "kube-public", "kube-node-lease"]
            .contains(&name)
            .then(|| "this namespace may not be deleted".to_string())
    }

    fn holds_deletion(&self, obj: &Value) -> bool {
        obj.pointer("/spec/finalizers").and_then(Value::as_array).is_some_and(|f| !f.is_empty())
    }

    fn prepare_delete(&self, obj: &mut Value) {
        if let Some(status) = obj.as_object_mut().and_then(|m| child_obj(m, "status")) {
            status.insert("phase".into(), json!("Terminating"));
        }
    }

    fn field(&self, obj: &Value, path: &str) -> Option<String> {
        match path {
            "status.phase" => Some(obj.get("status").map_or("", |st| s(st, "phase")).into()),
            "name" => Some(obj.get("metadata").map_or("", |m| s(m, "name")).into()),
            _ => None,
        }
    }
}

/// A finalizer: a qualified name, or one of the standard unqualified names.
pub(crate) fn validate_finalizer_name(name: &str, field: &str, errs: &mut FieldErrors) {
    let msgs = validation::qualified_name(name);
    let invalid = !msgs.is_empty();
    for msg in msgs {
        errs.invalid(field, json!(name), msg);
    }
    if !invalid && !name.contains('/') && !matches!(name, "kubernetes" | "orphan" | "foregroundDeletion") {
        errs.invalid(field, json!(name), "name is neither a standard finalizer name nor is it fully qualified");
    }
}

/// On a plain update the finalizers and status stay as stored (`namespaceStrategy.PrepareForUpdate`).
pub(crate) fn prepare_update(new: &mut Value, old: &Value) {
    let Some(m) = new.as_object_mut() else { return };
    match old.pointer("/spec/finalizers") {
        Some(f) => {
            if let Some(spec) = child_obj(m, "spec") {
                spec.insert("finalizers".into(), f.clone());
            }
        }
        None => {
            if let Some(spec) = m.get_mut("spec").and_then(Value::as_object_mut) {
                spec.remove("finalizers");
            }
        }
    }
    if let Some(status) = old.get("status") {
        m.insert("status".into(), status.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::super::Strategy as _;
    use super::*;

    #[test]
    fn namespace_defaults_match_kubectl_output() {
        let mut ns = json!({"metadata": {"name": "team-a"}});
        Strategy.default(&mut ns);
        Strategy.prepare_create(&mut ns);
        assert_eq!(
            ns,
            json!({
                "metadata": {"name": "team-a", "labels": {"kubernetes.io/metadata.name": "team-a"}},
                "spec": {"finalizers": ["kubernetes"]},
                "status": {"phase": "Active"}
            })
        );
        assert_eq!(Strategy.field(&ns, "status.phase").as_deref(), Some("Active"));
        let mut update = json!({"metadata": {"name": "team-a"}, "spec": {}});
        prepare_update(&mut update, &ns);
        assert_eq!(update["spec"]["finalizers"], json!(["kubernetes"]));
        assert_eq!(update["status"]["phase"], "Active");
        Strategy.prepare_delete(&mut ns);
        assert_eq!(Strategy.cells(&ns, Timestamp::now())[1], json!("Terminating"));
        let mut errs = FieldErrors::default();
        Strategy.validate(&json!({"spec": {"finalizers": ["custom"]}}), None, &mut errs);
        assert_eq!(
            errs.0[0].to_string(),
            "spec.finalizers: Invalid value: \"custom\": name is neither a standard finalizer name nor is it fully qualified"
        );
    }
}
