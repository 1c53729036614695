//! IngressClass (ingressclasses.networking.k8s.io/v1): strategy and discovery entry.

use super::Resource;

pub static RESOURCE: Resource = Resource {
    group: "networking.k8s.io",
    version: "v1",
    kind: "IngressClass",
    plural: "ingressclasses",
    singular: "ingressclass",
    short_names: &[],
    categories: &[],
    namespaced: false,
    subresources: &[],
    storage: "ingressclasses",
    strategy: &Strategy,
};

pub struct Strategy;

impl super::Strategy for Strategy {}
