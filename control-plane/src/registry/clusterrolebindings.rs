//! ClusterRoleBinding (clusterrolebindings.rbac.authorization.k8s.io/v1): strategy and discovery entry.
//!
//! The RoleBinding rules of [`super::rolebindings`], except that `roleRef` must be a ClusterRole
//! and ServiceAccount subjects need a namespace.

use serde_json::Value;

use super::rolebindings::{binding_cells, default_binding, validate_binding};
use super::{AGE_COLUMN, Column, NAME_COLUMN, Resource, Timestamp};
use crate::validation::FieldErrors;

pub static RESOURCE: Resource = Resource {
    group: "rbac.authorization.k8s.io",
    version: "v1",
    kind: "ClusterRoleBinding",
    plural: "clusterrolebindings",
    singular: "clusterrolebinding",
    short_names: &[],
    categories: &[],
    namespaced: false,
    subresources: &[],
    storage: "clusterrolebindings",
    strategy: &Strategy,
};

pub struct Strategy;

static COLUMNS: &[Column] = &[
    NAME_COLUMN,
    Column::new(
        "Role",
        "string",
        "RoleRef can only reference a ClusterRole in the global namespace. If the RoleRef cannot be resolved, the Authorizer must return an error.",
    ),
    AGE_COLUMN,
    Column::wide("Users", "string", "Users in the clusterRoleBinding"),
    Column::wide("Groups", "string", "Groups in the clusterRoleBinding"),
    Column::wide("ServiceAccounts", "string", "ServiceAccounts in the clusterRoleBinding"),
];

impl super::Strategy for Strategy {
    fn name_rule(&self) -> super::NameRule {
        super::NameRule::PathSegment
    }

    fn default(&self, obj: &mut Value) {
        default_binding(obj);
    }

    fn validate(&self, obj: &Value, old: Option<&Value>, errs: &mut FieldErrors) {
        validate_binding(obj, old, &["ClusterRole"], false, errs);
    }

    fn columns(&self) -> &'static [Column] {
        COLUMNS
    }

    fn cells(&self, obj: &Value, now: Timestamp) -> Vec<Value> {
        binding_cells(obj, now)
    }
}

#[cfg(test)]
mod tests {
    use super::super::Strategy as _;
    use super::*;
    use serde_json::json;

    #[test]
    fn cluster_role_only_and_namespaced_service_accounts() {
        let b = json!({"metadata": {"name": "admins"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "x"},
            "subjects": [{"kind": "ServiceAccount", "name": "ci"}]});
        let mut errs = FieldErrors::default();
        Strategy.validate(&b, None, &mut errs);
        let text: Vec<String> = errs.0.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "roleRef.kind: Unsupported value: \"Role\": supported values: \"ClusterRole\"",
                "subjects[0].namespace: Required value",
            ]
        );
        assert_eq!(Strategy.cells(&b, Timestamp::now())[5], json!("/ci"));
    }
}
