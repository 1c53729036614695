//! LimitRange (limitranges/v1): strategy and discovery entry.

use super::Resource;

pub static RESOURCE: Resource = Resource {
    group: "",
    version: "v1",
    kind: "LimitRange",
    plural: "limitranges",
    singular: "limitrange",
    short_names: &["limits"],
    categories: &[],
    namespaced: true,
    subresources: &[],
    storage: "limitranges",
    strategy: &Strategy,
};

pub struct Strategy;

impl super::Strategy for Strategy {}
