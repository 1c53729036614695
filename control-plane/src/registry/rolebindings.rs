//! RoleBinding (rolebindings.rbac.authorization.k8s.io/v1): strategy and discovery entry.
//!
//! `roleRef` is required, points at a Role or ClusterRole of the RBAC group and cannot change;
//! subjects are Users, Groups or ServiceAccounts. The defaulting, checks and cells here are
//! shared with ClusterRoleBindings.

use serde_json::{Value, json};

use super::apps_util as util;
use super::{AGE_COLUMN, Column, NAME_COLUMN, Resource, Timestamp, age_cell, name_cell};
use crate::validation::{self, FieldErrors};

pub static RESOURCE: Resource = Resource {
    group: "rbac.authorization.k8s.io",
    version: "v1",
    kind: "RoleBinding",
    plural: "rolebindings",
    singular: "rolebinding",
    short_names: &[],
    categories: &[],
    namespaced: true,
    subresources: &[],
    storage: "rolebindings",
    strategy: &Strategy,
};

pub struct Strategy;

pub(super) const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

static COLUMNS: &[Column] = &[
    NAME_COLUMN,
    Column::new(
        "Role",
        "string",
        "RoleRef can reference a Role in the current namespace or a ClusterRole in the global namespace. If the RoleRef cannot be resolved, the Authorizer must return an error.",
    ),
    AGE_COLUMN,
    Column::wide("Users", "string", "Users in the roleBinding"),
    Column::wide("Groups", "string", "Groups in the roleBinding"),
    Column::wide("ServiceAccounts", "string", "ServiceAccounts in the roleBinding"),
];

impl super::Strategy for Strategy {
    fn name_rule(&self) -> super::NameRule {
        super::NameRule::PathSegment
    }

    fn default(&self, obj: &mut Value) {
        default_binding(obj);
    }

    fn validate(&self, obj: &Value, old: Option<&Value>, errs: &mut FieldErrors) {
        validate_binding(obj, old, &["Role", "ClusterRole"], true, errs);
    }

    fn columns(&self) -> &'static [Column] {
        COLUMNS
    }

    fn cells(&self, obj: &Value, now: Timestamp) -> Vec<Value> {
        binding_cells(obj, now)
    }
}

/// `roleRef.apiGroup` and the apiGroup of User and Group subjects default to the RBAC group.
pub(super) fn default_binding(obj: &mut Value) {
    if let Some(role_ref) = util::child(obj, "roleRef") {
        util::default_str(role_ref, "apiGroup", RBAC_GROUP);
    }
    for subject in obj.get_mut("subjects").and_then(Value::as_array_mut).into_iter().flatten() {
        if matches!(subject.get("kind").and_then(Value::as_str), Some("User" | "Group")) {
            util::default_str(subject, "apiGroup", RBAC_GROUP);
        }
    }
}

/// `ValidateRoleBinding`/`ValidateClusterRoleBinding`; `kinds` are the allowed `roleRef.kind`s.
pub(super) fn validate_binding(
    obj: &Value,
    old: Option<&Value>,
    kinds: &[&str],
    namespaced: bool,
    errs: &mut FieldErrors,
) {
    let role_ref = obj.get("roleRef").unwrap_or(&Value::Null);
    let group = role_ref.get("apiGroup").cloned().unwrap_or_else(|| json!(""));
    if group != RBAC_GROUP {
        errs.not_supported("roleRef.apiGroup", group, &[RBAC_GROUP]);
    }
    let kind = role_ref.get("kind").cloned().unwrap_or_else(|| json!(""));
    if !kinds.iter().any(|k| kind == *k) {
        errs.not_supported("roleRef.kind", kind, kinds);
    }
    let name = role_ref.get("name").and_then(Value::as_str).unwrap_or("");
    if name.is_empty() {
        errs.required("roleRef.name", "");
    } else {
        for msg in validation::path_segment_name(name) {
            errs.invalid("roleRef.name", json!(name), msg);
        }
    }
    for (i, subject) in util::array_at(obj, "/subjects").iter().enumerate() {
        validate_subject(subject, namespaced, &format!("subjects[{i}]"), errs);
    }
    if let Some(old) = old
        && obj.get("roleRef") != old.get("roleRef")
    {
        errs.invalid("roleRef", role_ref.clone(), "cannot change roleRef");
    }
}

fn validate_subject(subject: &Value, namespaced: bool, path: &str, errs: &mut FieldErrors) {
    let name = subject.get("name").and_then(Value::as_str).unwrap_or("");
    if name.is_empty() {
        errs.required(format!("{path}.name"), "");
    }
    let group = subject.get("apiGroup").and_then(Value::as_str).unwrap_or("");
    match subject.get("kind").and_then(Value::as_str).unwrap_or("") {
        "ServiceAccount" => {
            if !name.is_empty() {
                for msg in validation::dns1123_subdomain(name) {
                    errs.invalid(format!("{path}.name"), json!(name), msg);
                }
            }
            if !group.is_empty() {
                errs.not_supported(format!("{path}.apiGroup"), json!(group), &[""]);
            }
            if !namespaced && subject.get("namespace").and_then(Value::as_str).unwrap_or("").is_empty() {
                errs.required(format!("{path}.namespace"), "");
            }
        }
        "User" | "Group" => {
            if group != RBAC_GROUP {
                errs.not_supported(format!("{path}.apiGroup"), json!(group), &[RBAC_GROUP]);
            }
        }
        other => errs.not_supported(format!("{path}.kind"), json!(other), &["ServiceAccount", "User", "Group"]),
    }
}

/// `Name`, `Kind/name` of the role, age, then users, groups and `namespace/name` service accounts.
pub(super) fn binding_cells(obj: &Value, now: Timestamp) -> Vec<Value> {
    let role = format!("{}/{}", util::str_or_empty(obj, "/roleRef/kind"), util::str_or_empty(obj, "/roleRef/name"));
    let (mut users, mut groups, mut accounts) = (Vec::new(), Vec::new(), Vec::new());
    for s in util::array_at(obj, "/subjects") {
        let name = util::str_or_empty(s, "/name");
        match util::str_or_empty(s, "/kind") {
            "ServiceAccount" => accounts.push(format!("{}/{name}", util::str_or_empty(s, "/namespace"))),
            "User" => users.push(name.to_string()),
            "Group" => groups.push(name.to_string()),
            _ => {}
        }
    }
    vec![
        name_cell(obj),
        json!(role),
        age_cell(obj, now),
        json!(users.join(", ")),
        json!(groups.join(", ")),
        json!(accounts.join(", ")),
    ]
}

#[cfg(test)]
mod tests {
    use super::super::Strategy as _;
    use super::*;

    /// What `kubectl create rolebinding read --role=pod-reader --user=jane --serviceaccount=default:app` sends.
    fn binding() -> Value {
        json!({"metadata": {"name": "read", "namespace": "default"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "jane"},
                {"kind": "ServiceAccount", "name": "app", "namespace": "default"}]})
    }

    fn errors(obj: &Value, old: Option<&Value>) -> Vec<String> {
        let mut errs = FieldErrors::default();
        Strategy.validate(obj, old, &mut errs);
        errs.0.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn defaults_and_cells() {
        let mut b = json!({"roleRef": {"kind": "Role", "name": "r"}, "subjects": [{"kind": "Group", "name": "devs"}]});
        Strategy.default(&mut b);
        assert_eq!(b["roleRef"]["apiGroup"], json!(RBAC_GROUP));
        assert_eq!(b["subjects"][0]["apiGroup"], json!(RBAC_GROUP));
        let cells = Strategy.cells(&binding(), Timestamp::now());
        assert_eq!(cells[1], json!("Role/pod-reader"));
        assert_eq!(cells[3..], [json!("jane"), json!(""), json!("default/app")]);
    }

    #[test]
    fn role_ref_rules() {
        assert_eq!(errors(&binding(), None), Vec::<String>::new());
        let mut b = binding();
        b["roleRef"] = json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Pod"});
        b["subjects"][1]["kind"] = json!("Robot");
        assert_eq!(
            errors(&b, None),
            [
                "roleRef.kind: Unsupported value: \"Pod\": supported values: \"Role\", \"ClusterRole\"",
                "roleRef.name: Required value",
                "subjects[1].kind: Unsupported value: \"Robot\": supported values: \"ServiceAccount\", \"User\", \"Group\"",
            ]
        );
        let old = binding();
        let mut new = binding();
        new["roleRef"]["name"] = json!("admin");
        let errs = errors(&new, Some(&old));
        assert_eq!(errs.len(), 1);
        assert!(errs[0].starts_with("roleRef: Invalid value: ") && errs[0].ends_with("cannot change roleRef"));
    }
}
