//! Job (jobs.batch/v1): strategy and discovery entry.

use super::Resource;

pub static RESOURCE: Resource = Resource {
    group: "batch",
    version: "v1",
    kind: "Job",
    plural: "jobs",
    singular: "job",
    short_names: &[],
    categories: &["all"],
    namespaced: true,
    subresources: &["status"],
    storage: "jobs",
    strategy: &Strategy,
};

pub struct Strategy;

impl super::Strategy for Strategy {}
