//! ServiceAccount (serviceaccounts/v1): strategy and discovery entry.

use super::Resource;

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

impl super::Strategy for Strategy {}
