//! PriorityClass (priorityclasses.scheduling.k8s.io/v1): strategy and discovery entry.

use super::Resource;

pub static RESOURCE: Resource = Resource {
    group: "scheduling.k8s.io",
    version: "v1",
    kind: "PriorityClass",
    plural: "priorityclasses",
    singular: "priorityclass",
    short_names: &["pc"],
    categories: &[],
    namespaced: false,
    subresources: &[],
    storage: "priorityclasses",
    strategy: &Strategy,
};

pub struct Strategy;

impl super::Strategy for Strategy {}
