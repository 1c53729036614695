//! Event (events.events.k8s.io/v1): strategy and discovery entry.

use super::Resource;

pub static RESOURCE: Resource = Resource {
    group: "events.k8s.io",
    version: "v1",
    kind: "Event",
    plural: "events",
    singular: "event",
    short_names: &["ev"],
    categories: &[],
    namespaced: true,
    subresources: &[],
    storage: "events.k8s.io/events",
    strategy: &Strategy,
};

pub struct Strategy;

impl super::Strategy for Strategy {}
