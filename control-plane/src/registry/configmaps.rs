//! ConfigMap (configmaps/v1): strategy and discovery entry.

use super::Resource;

pub static RESOURCE: Resource = Resource {
    group: "",
    version: "v1",
    kind: "ConfigMap",
    plural: "configmaps",
    singular: "configmap",
    short_names: &["cm"],
    categories: &[],
    namespaced: true,
    subresources: &[],
    storage: "configmaps",
    strategy: &Strategy,
};

pub struct Strategy;

impl super::Strategy for Strategy {}
