//! Endpoints (endpoints/v1): strategy and discovery entry.

use super::Resource;

pub static RESOURCE: Resource = Resource {
    group: "",
    version: "v1",
    kind: "Endpoints",
    plural: "endpoints",
    singular: "endpoints",
    short_names: &["ep"],
    categories: &[],
    namespaced: true,
    subresources: &[],
    storage: "services/endpoints",
    strategy: &Strategy,
};

pub struct Strategy;

impl super::Strategy for Strategy {}
