//! PodDisruptionBudget (poddisruptionbudgets.policy/v1): strategy and discovery entry.

use super::Resource;

pub static RESOURCE: Resource = Resource {
    group: "policy",
    version: "v1",
    kind: "PodDisruptionBudget",
    plural: "poddisruptionbudgets",
    singular: "poddisruptionbudget",
    short_names: &["pdb"],
    categories: &[],
    namespaced: true,
    subresources: &["status"],
    storage: "poddisruptionbudgets",
    strategy: &Strategy,
};

pub struct Strategy;

impl super::Strategy for Strategy {}
