//! DaemonSet (daemonsets.apps/v1): strategy and discovery entry.

use super::Resource;

pub static RESOURCE: Resource = Resource {
    group: "apps",
    version: "v1",
    kind: "DaemonSet",
    plural: "daemonsets",
    singular: "daemonset",
    short_names: &["ds"],
    categories: &["all"],
    namespaced: true,
    subresources: &["status"],
    storage: "daemonsets",
    strategy: &Strategy,
};

pub struct Strategy;

impl super::Strategy for Strategy {}
