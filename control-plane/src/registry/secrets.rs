//! Secret (secrets/v1): strategy and discovery entry.

use super::Resource;

pub static RESOURCE: Resource = Resource {
    group: "",
    version: "v1",
    kind: "Secret",
    plural: "secrets",
    singular: "secret",
    short_names: &[],
    categories: &[],
    namespaced: true,
    subresources: &[],
    storage: "secrets",
    strategy: &Strategy,
};

pub struct Strategy;

impl super::Strategy for Strategy {}
