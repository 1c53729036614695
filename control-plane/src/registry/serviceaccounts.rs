//! ServiceAccount (serviceaccounts/v1): strategy and discovery entry.

use serde_json::{Value, json};

use super::podspec::checks::arr;
use super::{AGE_COLUMN, Column, NAME_COLUMN, Resource, Timestamp};

pub static RESOURCE: Resource = Resource {
    group: "",
    version: "v1",
    kind: "ServiceAccount",
    plural: "serviceaccounts",
    singular: "serviceaccount",
    short_names: &["sa"],
    categories: &[],
    namespaced: true,
    subresources: &[],
    storage: "serviceaccounts",
    strategy: &Strategy,
};

pub struct Strategy;

static COLUMNS: &[Column] = &[
    NAME_COLUMN,
    Column::new(
        "Secrets",
        "string",
        "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use. Pods are only limited to this list if this service account has a \"kubernetes.io/enforce-mountable-secrets\" annotation set to \"true\". The \"kubernetes.io/enforce-mountable-secrets\" annotation is deprecated since v1.32. Prefer separate namespaces to isolate access to mounted secrets. This field should not be used to find auto-generated service account token secrets for use outside of pods. Instead, tokens can be requested directly using the TokenRequest API, or service account token secrets can be manually created. More info: https://kubernetes.io/docs/concepts/configuration/secret",
    ),
    AGE_COLUMN,
];

/// ServiceAccounts have no type-specific rules beyond metadata, which the caller validates.
impl super::Strategy for Strategy {
    fn columns(&self) -> &'static [Column] {
        COLUMNS
    }

    fn cells(&self, obj: &Value, now: Timestamp) -> Vec<Value> {
        vec![super::name_cell(obj), json!(arr(obj, "secrets").len()), super::age_cell(obj, now)]
    }
}

#[cfg(test)]
mod tests {
    use super::super::Strategy as _;
    use super::*;

    #[test]
    fn secrets_are_counted() {
        let sa = json!({"metadata": {"name": "default"}, "secrets": [{"name": "a"}]});
        assert_eq!(Strategy.cells(&sa, Timestamp::now())[..2], [json!("default"), json!(1)]);
    }
}
