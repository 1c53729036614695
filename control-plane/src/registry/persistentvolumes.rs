//! PersistentVolume (persistentvolumes/v1): strategy and discovery entry.

use super::Resource;

pub static RESOURCE: Resource = Resource {
    group: "",
    version: "v1",
    kind: "PersistentVolume",
    plural: "persistentvolumes",
    singular: "persistentvolume",
    short_names: &["pv"],
    categories: &[],
    namespaced: false,
    subresources: &["status"],
    storage: "persistentvolumes",
    strategy: &Strategy,
};

pub struct Strategy;

impl super::Strategy for Strategy {}
