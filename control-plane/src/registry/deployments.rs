//! Deployment (deployments.apps/v1): strategy and discovery entry.

use super::Resource;

pub static RESOURCE: Resource = Resource {
    group: "apps",
    version: "v1",
    kind: "Deployment",
    plural: "deployments",
    singular: "deployment",
    short_names: &["deploy"],
    categories: &["all"],
    namespaced: true,
    subresources: &["status", "scale"],
    storage: "deployments",
    strategy: &Strategy,
};

pub struct Strategy;

impl super::Strategy for Strategy {}
