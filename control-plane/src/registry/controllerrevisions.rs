//! ControllerRevision (controllerrevisions.apps/v1): strategy and discovery entry.

use super::Resource;

pub static RESOURCE: Resource = Resource {
    group: "apps",
    version: "v1",
    kind: "ControllerRevision",
    plural: "controllerrevisions",
    singular: "controllerrevision",
    short_names: &[],
    categories: &[],
    namespaced: true,
    subresources: &[],
    storage: "controllerrevisions",
    strategy: &Strategy,
};

pub struct Strategy;

impl super::Strategy for Strategy {}
