//! Ingress (ingresses.networking.k8s.io/v1): strategy and discovery entry.

use super::Resource;

pub static RESOURCE: Resource = Resource {
    group: "networking.k8s.io",
    version: "v1",
    kind: "Ingress",
    plural: "ingresses",
    singular: "ingress",
    short_names: &["ing"],
    categories: &[],
    namespaced: true,
    subresources: &["status"],
    storage: "ingress",
    strategy: &Strategy,
};

pub struct Strategy;

impl super::Strategy for Strategy {}
