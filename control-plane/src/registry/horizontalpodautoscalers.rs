//! HorizontalPodAutoscaler (horizontalpodautoscalers.autoscaling/v2): strategy and discovery entry.

use super::Resource;

pub static RESOURCE: Resource = Resource {
    group: "autoscaling",
    version: "v2",
    kind: "HorizontalPodAutoscaler",
    plural: "horizontalpodautoscalers",
    singular: "horizontalpodautoscaler",
    short_names: &["hpa"],
    categories: &["all"],
    namespaced: true,
    subresources: &["status"],
    storage: "horizontalpodautoscalers",
    strategy: &Strategy,
};

pub struct Strategy;

impl super::Strategy for Strategy {}
