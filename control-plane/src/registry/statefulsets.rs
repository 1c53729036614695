//! StatefulSet (statefulsets.apps/v1): strategy and discovery entry.

use super::Resource;

pub static RESOURCE: Resource = Resource {
    group: "apps",
    version: "v1",
    kind: "StatefulSet",
    plural: "statefulsets",
    singular: "statefulset",
    short_names: &["sts"],
    categories: &["all"],
    namespaced: true,
    subresources: &["status", "scale"],
    storage: "statefulsets",
    strategy: &Strategy,
};

pub struct Strategy;

impl super::Strategy for Strategy {}
