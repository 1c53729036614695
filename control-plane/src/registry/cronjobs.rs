//! CronJob (cronjobs.batch/v1): strategy and discovery entry.

use super::Resource;

pub static RESOURCE: Resource = Resource {
    group: "batch",
    version: "v1",
    kind: "CronJob",
    plural: "cronjobs",
    singular: "cronjob",
    short_names: &["cj"],
    categories: &["all"],
    namespaced: true,
    subresources: &["status"],
    storage: "cronjobs",
    strategy: &Strategy,
};

pub struct Strategy;

impl super::Strategy for Strategy {}
