//! Pod (pods/v1): strategy and discovery entry.

use super::Resource;

pub static RESOURCE: Resource = Resource {
    group: "",
    version: "v1",
    kind: "Pod",
    plural: "pods",
    singular: "pod",
    short_names: &["po"],
    categories: &["all"],
    namespaced: true,
    subresources: &["status", "binding", "eviction"],
    storage: "pods",
    strategy: &Strategy,
};

pub struct Strategy;

impl super::Strategy for Strategy {}
