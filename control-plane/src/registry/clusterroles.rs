//! ClusterRole (clusterroles.rbac.authorization.k8s.io/v1): strategy and discovery entry.
//!
//! The rules of [`super::roles`] (non-resource URLs allowed), plus `aggregationRule`, which
//! needs at least one valid cluster-role selector. The table is the default one.

use serde_json::Value;

use super::apps_util as util;
use super::roles::{CREATED_AT_COLUMNS, created_at_cells, validate_rules};
use super::{Column, Resource, Timestamp};
use crate::validation::FieldErrors;

pub static RESOURCE: Resource = Resource {
    group: "rbac.authorization.k8s.io",
    version: "v1",
    kind: "ClusterRole",
    plural: "clusterroles",
    singular: "clusterrole",
    short_names: &[],
    categories: &[],
    namespaced: false,
    subresources: &[],
    storage: "clusterroles",
    strategy: &Strategy,
};

pub struct Strategy;

impl super::Strategy for Strategy {
    fn name_rule(&self) -> super::NameRule {
        super::NameRule::PathSegment
    }

    fn validate(&self, obj: &Value, _old: Option<&Value>, errs: &mut FieldErrors) {
        validate_rules(obj, false, errs);
        let Some(rule) = obj.get("aggregationRule").filter(|r| !r.is_null()) else { return };
        let selectors = util::array_at(rule, "/clusterRoleSelectors");
        if selectors.is_empty() {
            errs.required(
                "aggregationRule.clusterRoleSelectors",
                "at least one clusterRoleSelector required if aggregationRule is non-nil",
            );
        }
        for (i, sel) in selectors.iter().enumerate() {
            let path = format!("aggregationRule.clusterRoleSelectors[{i}]");
            util::validate_label_selector(Some(sel), &path, errs);
            if !util::selector_parses(sel) {
                errs.invalid(path, sel.clone(), "invalid label selector.");
            }
        }
    }

    fn columns(&self) -> &'static [Column] {
        CREATED_AT_COLUMNS
    }

    fn cells(&self, obj: &Value, _now: Timestamp) -> Vec<Value> {
        created_at_cells(obj)
    }
}

#[cfg(test)]
mod tests {
    use super::super::Strategy as _;
    use super::*;
    use serde_json::json;

    #[test]
    fn non_resource_urls_and_aggregation() {
        let role =
            json!({"metadata": {"name": "health"}, "rules": [{"nonResourceURLs": ["/healthz"], "verbs": ["get"]}]});
        let mut errs = FieldErrors::default();
        Strategy.validate(&role, None, &mut errs);
        assert!(errs.is_empty(), "{errs:?}");
        let agg = json!({"metadata": {"name": "monitoring"}, "aggregationRule": {"clusterRoleSelectors": []}});
        Strategy.validate(&agg, None, &mut errs);
        assert_eq!(
            errs.0[0].to_string(),
            "aggregationRule.clusterRoleSelectors: Required value: at least one clusterRoleSelector required if aggregationRule is non-nil"
        );
        assert_eq!(Strategy.cells(&role, Timestamp::now())[0], json!("health"));
    }
}
