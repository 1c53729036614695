//! ClusterRoleBinding (clusterrolebindings.rbac.authorization.k8s.io/v1): strategy and discovery entry.

use super::Resource;

pub static RESOURCE: Resource = Resource {
    group: "rbac.authorization.k8s.io",
    version: "v1",
    kind: "ClusterRoleBinding",
    plural: "clusterrolebindings",
    singular: "clusterrolebinding",
    short_names: &[],
    categories: &[],
    namespaced: false,
    subresources: &[],
    storage: "clusterrolebindings",
    strategy: &Strategy,
};

pub struct Strategy;

impl super::Strategy for Strategy {
    fn name_rule(&self) -> super::NameRule {
        super::NameRule::PathSegment
    }
}
