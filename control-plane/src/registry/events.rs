//! Event (events/v1): strategy and discovery entry.

use super::Resource;

pub static RESOURCE: Resource = Resource {
    group: "",
    version: "v1",
    kind: "Event",
    plural: "events",
    singular: "event",
    short_names: &["ev"],
    categories: &[],
    namespaced: true,
    subresources: &[],
    storage: "events",
    strategy: &Strategy,
};

pub struct Strategy;

impl super::Strategy for Strategy {}
