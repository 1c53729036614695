//! StorageClass (storageclasses.storage.k8s.io/v1): strategy and discovery entry.

use super::Resource;

pub static RESOURCE: Resource = Resource {
    group: "storage.k8s.io",
    version: "v1",
    kind: "StorageClass",
    plural: "storageclasses",
    singular: "storageclass",
    short_names: &["sc"],
    categories: &[],
    namespaced: false,
    subresources: &[],
    storage: "storageclasses",
    strategy: &Strategy,
};

pub struct Strategy;

impl super::Strategy for Strategy {}
