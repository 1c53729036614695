//! Node (nodes/v1): strategy and discovery entry.

use super::Resource;

pub static RESOURCE: Resource = Resource {
    group: "",
    version: "v1",
    kind: "Node",
    plural: "nodes",
    singular: "node",
    short_names: &["no"],
    categories: &[],
    namespaced: false,
    subresources: &["status"],
    storage: "minions",
    strategy: &Strategy,
};

pub struct Strategy;

impl super::Strategy for Strategy {}
