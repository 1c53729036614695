//! Lease (leases.coordination.k8s.io/v1): strategy and discovery entry.
//!
//! No defaults. The duration must be positive, transitions non-negative, and a preferred holder
//! needs a coordinated-election strategy.

use serde_json::{Value, json};

use super::apps_util as util;
use super::{AGE_COLUMN, Column, NAME_COLUMN, Resource, Timestamp, age_cell, name_cell};
use crate::validation::FieldErrors;

pub static RESOURCE: Resource = Resource {
    group: "coordination.k8s.io",
    version: "v1",
    kind: "Lease",
    plural: "leases",
    singular: "lease",
    short_names: &[],
    categories: &[],
    namespaced: true,
    subresources: &[],
    storage: "leases",
    strategy: &Strategy,
};

pub struct Strategy;

static COLUMNS: &[Column] = &[
    NAME_COLUMN,
    Column::new(
        "Holder",
        "string",
        "holderIdentity contains the identity of the holder of a current lease. If Coordinated Leader Election is used, the holder identity must be equal to the elected LeaseCandidate.metadata.name field.",
    ),
    AGE_COLUMN,
];

impl super::Strategy for Strategy {
    fn validate(&self, obj: &Value, _old: Option<&Value>, errs: &mut FieldErrors) {
        util::positive(obj, "/spec/leaseDurationSeconds", "spec.leaseDurationSeconds", errs);
        util::nonnegative(obj, "/spec/leaseTransitions", "spec.leaseTransitions", errs);
        let strategy = obj.pointer("/spec/strategy").and_then(Value::as_str).unwrap_or("");
        if let Some(s) = obj.pointer("/spec/strategy").filter(|s| !s.is_null())
            && s.as_str() != Some("OldestEmulationVersion")
        {
            errs.not_supported("spec.strategy", s.clone(), &["OldestEmulationVersion"]);
        }
        let preferred = obj.pointer("/spec/preferredHolder").and_then(Value::as_str).unwrap_or("");
        if !preferred.is_empty() && strategy.is_empty() {
            errs.forbidden("spec.preferredHolder", "may only be specified if `strategy` is defined");
        }
    }

    fn columns(&self) -> &'static [Column] {
        COLUMNS
    }

    fn cells(&self, obj: &Value, now: Timestamp) -> Vec<Value> {
        vec![name_cell(obj), json!(util::str_or_empty(obj, "/spec/holderIdentity")), age_cell(obj, now)]
    }
}

#[cfg(test)]
mod tests {
    use super::super::Strategy as _;
    use super::*;

    #[test]
    fn lease_rules_and_holder() {
        let lease = json!({"metadata": {"name": "kube-scheduler", "namespace": "kube-system"},
            "spec": {"holderIdentity": "cp-1_4f2a", "leaseDurationSeconds": 15, "leaseTransitions": 0}});
        let mut errs = FieldErrors::default();
        Strategy.validate(&lease, None, &mut errs);
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(Strategy.cells(&lease, Timestamp::now())[1], json!("cp-1_4f2a"));
        let bad = json!({"spec": {"leaseDurationSeconds": 0, "leaseTransitions": -1, "preferredHolder": "x"}});
        Strategy.validate(&bad, None, &mut errs);
        let text: Vec<String> = errs.0.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0",
                "spec.leaseTransitions: Invalid value: -1: must be greater than or equal to 0",
                "spec.preferredHolder: Forbidden: may only be specified if `strategy` is defined",
            ]
        );
        assert_eq!(Strategy.cells(&json!({}), Timestamp::now())[1], json!(""));
    }
}
