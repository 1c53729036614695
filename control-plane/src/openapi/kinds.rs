//! The k8s-openapi types behind the kinds the documents describe.
//!
//! Served resources name their kind by strings; this table connects a (group, version, kind) to
//! the Rust type whose `JsonSchema` implementation produces its definition. A resource whose kind
//! is missing here is left out of the documents (a unit test keeps the table complete).

use std::borrow::Cow;

use k8s_openapi::api::{
    apps, autoscaling, batch, coordination, core, discovery, events, networking, node, policy, rbac, scheduling,
    storage,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_openapi::{ListableResource, Resource};
use schemars::{JsonSchema, Schema, SchemaGenerator};

/// A kind with a generated schema.
pub(super) struct KindType {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    /// The kind of its list (`PodList`) when the kind is listable.
    pub list_kind: Option<&'static str>,
    /// The OpenAPI definition name, e.g. `io.k8s.api.core.v1.Pod`.
    pub name: fn() -> Cow<'static, str>,
    /// Adds the definition (and everything it references) to a generator.
    pub generate: fn(&mut SchemaGenerator) -> Schema,
}

impl KindType {
    pub fn is(&self, group: &str, version: &str, kind: &str) -> bool {
        self.group == group && self.version == version && self.kind == kind
    }
}

fn subschema<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}

const fn listable<T: ListableResource + JsonSchema>() -> KindType {
    KindType {
        group: T::GROUP,
        version: T::VERSION,
        kind: T::KIND,
        list_kind: Some(T::LIST_KIND),
        name: T::schema_name,
        generate: subschema::<T>,
    }
}

const fn single<T: Resource + JsonSchema>() -> KindType {
    KindType {
        group: T::GROUP,
        version: T::VERSION,
        kind: T::KIND,
        list_kind: None,
        name: T::schema_name,
        generate: subschema::<T>,
    }
}

/// Every kind a served resource may have, plus the kinds of subresources.
pub(super) static KINDS: &[KindType] = &[
    listable::<core::v1::ConfigMap>(),
    listable::<core::v1::Endpoints>(),
    listable::<core::v1::Event>(),
    listable::<core::v1::LimitRange>(),
    listable::<core::v1::Namespace>(),
    listable::<core::v1::Node>(),
    listable::<core::v1::PersistentVolume>(),
    listable::<core::v1::PersistentVolumeClaim>(),
    listable::<core::v1::Pod>(),
    listable::<core::v1::PodTemplate>(),
    listable::<core::v1::ReplicationController>(),
    listable::<core::v1::ResourceQuota>(),
    listable::<core::v1::Secret>(),
    listable::<core::v1::Service>(),
    listable::<core::v1::ServiceAccount>(),
    listable::<apps::v1::ControllerRevision>(),
    listable::<apps::v1::DaemonSet>(),
    listable::<apps::v1::Deployment>(),
    listable::<apps::v1::ReplicaSet>(),
    listable::<apps::v1::StatefulSet>(),
    listable::<autoscaling::v1::HorizontalPodAutoscaler>(),
    listable::<autoscaling::v2::HorizontalPodAutoscaler>(),
    listable::<batch::v1::CronJob>(),
    listable::<batch::v1::Job>(),
    listable::<coordination::v1::Lease>(),
    listable::<discovery::v1::EndpointSlice>(),
    listable::<events::v1::Event>(),
    listable::<networking::v1::Ingress>(),
    listable::<networking::v1::IngressClass>(),
    listable::<networking::v1::NetworkPolicy>(),
    listable::<node::v1::RuntimeClass>(),
    listable::<policy::v1::PodDisruptionBudget>(),
    listable::<rbac::v1::ClusterRole>(),
    listable::<rbac::v1::ClusterRoleBinding>(),
    listable::<rbac::v1::Role>(),
    listable::<rbac::v1::RoleBinding>(),
    listable::<scheduling::v1::PriorityClass>(),
    listable::<storage::v1::CSIDriver>(),
    listable::<storage::v1::CSINode>(),
    listable::<storage::v1::StorageClass>(),
    listable::<storage::v1::VolumeAttachment>(),
    // Subresource bodies.
    single::<core::v1::Binding>(),
    single::<autoscaling::v1::Scale>(),
    single::<policy::v1::Eviction>(),
    // Shared API machinery.
    single::<meta::Status>(),
];

/// Looks a kind up.
pub(super) fn find(group: &str, version: &str, kind: &str) -> Option<&'static KindType> {
    KINDS.iter().find(|k| k.is(group, version, kind))
}

/// Adds `DeleteOptions` and `WatchEvent`, which are not resources.
pub(super) fn generate_meta(generator: &mut SchemaGenerator) {
    generator.subschema_for::<meta::DeleteOptions>();
    generator.subschema_for::<meta::WatchEvent<core::v1::Pod>>();
}
