//! Lease (leases.coordination.k8s.io/v1): strategy and discovery entry.

use super::Resource;

pub static RESOURCE: Resource = Resource {
    group: "coordination.k8s.io",
    version: "v1",
    kind: "Lease",
    plural: "leases",
    singular: "lease",
    short_names: &[],
    categories: &[],
    namespaced: true,
    subresources: &[],
    storage: "leases",
    strategy: &Strategy,
};

pub struct Strategy;

impl super::Strategy for Strategy {}
