//! NetworkPolicy (networkpolicies.networking.k8s.io/v1): strategy and discovery entry.

use super::Resource;

pub static RESOURCE: Resource = Resource {
    group: "networking.k8s.io",
    version: "v1",
    kind: "NetworkPolicy",
    plural: "networkpolicies",
    singular: "networkpolicy",
    short_names: &["netpol"],
    categories: &[],
    namespaced: true,
    subresources: &[],
    storage: "networkpolicies",
    strategy: &Strategy,
};

pub struct Strategy;

impl super::Strategy for Strategy {}
