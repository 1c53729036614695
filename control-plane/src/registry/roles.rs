//! Role (roles.rbac.authorization.k8s.io/v1): strategy and discovery entry.
//!
//! Every rule needs verbs, and either API groups plus resources or (ClusterRoles only)
//! non-resource URLs. kube-apiserver has no printer for roles, so the table is the default one:
//! `Name` and `Created At`. The rule checks and that table are shared with ClusterRoles.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use super::apps_util as util;
use super::{AGE_COLUMN, Column, NAME_COLUMN, Resource, Timestamp, name_cell};
use crate::validation::FieldErrors;

pub static RESOURCE: Resource = Resource {
    group: "rbac.authorization.k8s.io",
    version: "v1",
    kind: "Role",
    plural: "roles",
    singular: "role",
    short_names: &[],
    categories: &[],
    namespaced: true,
    subresources: &[],
    storage: "roles",
    strategy: &Strategy,
};

pub struct Strategy;

/// The default table of kube-apiserver (`rest.NewDefaultTableConvertor`).
pub(super) static CREATED_AT_COLUMNS: &[Column] =
    &[NAME_COLUMN, Column { name: "Created At", kind: "date", ..AGE_COLUMN }];

impl super::Strategy for Strategy {
    fn name_rule(&self) -> super::NameRule {
        super::NameRule::PathSegment
    }

    fn validate(&self, obj: &Value, _old: Option<&Value>, errs: &mut FieldErrors) {
        validate_rules(obj, true, errs);
    }

    fn columns(&self) -> &'static [Column] {
        CREATED_AT_COLUMNS
    }

    fn cells(&self, obj: &Value, _now: Timestamp) -> Vec<Value> {
        created_at_cells(obj)
    }
}

/// `Name` and the creation time in RFC 3339, UTC.
pub(super) fn created_at_cells(obj: &Value) -> Vec<Value> {
    let created = obj
        .pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map_or_else(
            || "0001-01-01T00:00:00Z".to_string(),
            |t| t.with_timezone(&Utc).to_rfc3339_opts(SecondsFormat::Secs, true),
        );
    vec![name_cell(obj), json!(created)]
}

/// `ValidatePolicyRule` for every entry of `rules`.
pub(super) fn validate_rules(obj: &Value, namespaced: bool, errs: &mut FieldErrors) {
    for (i, rule) in util::array_at(obj, "/rules").iter().enumerate() {
        let path = format!("rules[{i}]");
        let has = |key: &str| !util::array_at(rule, &format!("/{key}")).is_empty();
        if !has("verbs") {
            errs.required(format!("{path}.verbs"), "verbs must contain at least one value");
        }
        if has("nonResourceURLs") {
            let urls = rule["nonResourceURLs"].clone();
            if namespaced {
                errs.invalid(
                    format!("{path}.nonResourceURLs"),
                    urls.clone(),
                    "namespaced rules cannot apply to non-resource URLs",
                );
            }
            if has("apiGroups") || has("resources") || has("resourceNames") {
                errs.invalid(
                    format!("{path}.nonResourceURLs"),
                    urls,
                    "rules cannot apply to both regular resources and non-resource URLs",
                );
            }
            continue;
        }
        if !has("apiGroups") {
            errs.required(format!("{path}.apiGroups"), "resource rules must supply at least one api group");
        }
        if !has("resources") {
            errs.required(format!("{path}.resources"), "resource rules must supply at least one resource");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Strategy as _;
    use super::*;

    #[test]
    fn rules_need_verbs_groups_and_resources() {
        let role = json!({"metadata": {"name": "pod-reader"}, "rules": [
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
            {"resources": ["pods"]},
            {"nonResourceURLs": ["/healthz"], "verbs": ["get"]}]});
        let mut errs = FieldErrors::default();
        Strategy.validate(&role, None, &mut errs);
        let text: Vec<String> = errs.0.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "rules[1].verbs: Required value: verbs must contain at least one value",
                "rules[1].apiGroups: Required value: resource rules must supply at least one api group",
                "rules[2].nonResourceURLs: Invalid value: [\"/healthz\"]: namespaced rules cannot apply to non-resource URLs",
            ]
        );
    }

    #[test]
    fn default_table() {
        let role = json!({"metadata": {"name": "r", "creationTimestamp": "2026-03-04T05:06:07+01:00"}});
        assert_eq!(Strategy.cells(&role, Timestamp::now()), [json!("r"), json!("2026-03-04T04:06:07Z")]);
        assert_eq!(Strategy.columns()[1].name, "Created At");
        assert_eq!(Strategy.columns()[1].kind, "date");
    }
}
