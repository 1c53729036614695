//! PersistentVolumeClaim (persistentvolumeclaims/v1): strategy and discovery entry.

use super::Resource;

pub static RESOURCE: Resource = Resource {
    group: "",
    version: "v1",
    kind: "PersistentVolumeClaim",
    plural: "persistentvolumeclaims",
    singular: "persistentvolumeclaim",
    short_names: &["pvc"],
    categories: &[],
    namespaced: true,
    subresources: &["status"],
    storage: "persistentvolumeclaims",
    strategy: &Strategy,
};

pub struct Strategy;

impl super::Strategy for Strategy {}
