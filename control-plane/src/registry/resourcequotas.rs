//! ResourceQuota (resourcequotas/v1): strategy and discovery entry.

use super::Resource;

pub static RESOURCE: Resource = Resource {
    group: "",
    version: "v1",
    kind: "ResourceQuota",
    plural: "resourcequotas",
    singular: "resourcequota",
    short_names: &["quota"],
    categories: &[],
    namespaced: true,
    subresources: &["status"],
    storage: "resourcequotas",
    strategy: &Strategy,
};

pub struct Strategy;

impl super::Strategy for Strategy {}
