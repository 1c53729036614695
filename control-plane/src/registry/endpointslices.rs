//! EndpointSlice (endpointslices.discovery.k8s.io/v1): strategy and discovery entry.

use super::Resource;

pub static RESOURCE: Resource = Resource {
    group: "discovery.k8s.io",
    version: "v1",
    kind: "EndpointSlice",
    plural: "endpointslices",
    singular: "endpointslice",
    short_names: &[],
    categories: &[],
    namespaced: true,
    subresources: &[],
    storage: "endpointslices",
    strategy: &Strategy,
};

pub struct Strategy;

impl super::Strategy for Strategy {}
