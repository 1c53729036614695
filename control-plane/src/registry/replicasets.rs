//! ReplicaSet (replicasets.apps/v1): strategy and discovery entry.

use super::Resource;

pub static RESOURCE: Resource = Resource {
    group: "apps",
    version: "v1",
    kind: "ReplicaSet",
    plural: "replicasets",
    singular: "replicaset",
    short_names: &["rs"],
    categories: &["all"],
    namespaced: true,
    subresources: &["status", "scale"],
    storage: "replicasets",
    strategy: &Strategy,
};

pub struct Strategy;

impl super::Strategy for Strategy {}
