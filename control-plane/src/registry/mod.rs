//! The resource registry: every served resource, its names, scope and strategy.
//!
//! A [`Strategy`] holds what differs between resources (defaulting, validation, table columns,
//! field selectors, scale paths); the generic REST machinery in `server` asks the strategy and
//! never matches on kinds. One file per resource; [`RESOURCES`] lists them all.

mod apps_util;
mod podspec;
mod table;
pub use table::*;

use serde_json::Value;

use crate::validation::{self, FieldErrors};

/// How `metadata.name` is validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameRule {
    /// RFC 1123 subdomain (most resources).
    Subdomain,
    /// RFC 1123 label (namespaces).
    Label,
    /// RFC 1035 label (services).
    Dns1035,
    /// Anything usable as a path segment (RBAC).
    PathSegment,
}

impl NameRule {
    pub fn check(self, name: &str) -> Vec<String> {
        match self {
            NameRule::Subdomain => validation::dns1123_subdomain(name),
            NameRule::Label => validation::dns1123_label(name),
            NameRule::Dns1035 => validation::dns1035_label(name),
            NameRule::PathSegment => validation::path_segment_name(name),
        }
    }
}

/// Where the scale subresource reads and writes in the object.
#[derive(Clone, Copy, Debug)]
pub struct ScalePaths {
    /// JSON pointer of the desired replicas, e.g. `/spec/replicas`.
    pub spec_replicas: &'static str,
    pub status_replicas: &'static str,
    /// JSON pointer of the label selector (`/spec/selector`).
    pub selector: &'static str,
}

/// Per-resource behaviour. Every method has a default that suits a plain object.
pub trait Strategy: Send + Sync {
    fn name_rule(&self) -> NameRule {
        NameRule::Subdomain
    }
    /// Fills the defaults Kubernetes fills (what `kubectl get -o yaml` shows). Runs on every
    /// create and update, after decoding and before validation.
    fn default(&self, _obj: &mut Value) {}
    /// Adjusts a new object before it is stored (e.g. reset status, set phase).
    fn prepare_create(&self, _obj: &mut Value) {}
    /// Adjusts an update of the main resource before validation: carries over what a client may
    /// leave out or may not change this way (e.g. allocated cluster IPs, namespace finalizers).
    fn prepare_update(&self, _new: &mut Value, _old: &Value) {}
    /// Validates an object. `old` is the stored object on update. Metadata (name, labels,
    /// annotations) is validated by the caller.
    fn validate(&self, _obj: &Value, _old: Option<&Value>, _errs: &mut FieldErrors) {}
    /// Table columns as kube-apiserver prints them, `Name` first. Priority 1 columns are `-o wide`.
    fn columns(&self) -> &'static [Column] {
        DEFAULT_COLUMNS
    }
    /// One cell per column for `obj`.
    fn cells(&self, obj: &Value, now: Timestamp) -> Vec<Value> {
        vec![name_cell(obj), age_cell(obj, now)]
    }
    /// The value of a field selector field for `obj`, or `None` when the field is not
    /// selectable for this resource. `metadata.name` and `metadata.namespace` are handled by
    /// the caller.
    fn field(&self, _obj: &Value, _path: &str) -> Option<String> {
        None
    }
    fn scale(&self) -> Option<ScalePaths> {
        None
    }
    /// Whether `metadata.generation` counts changes outside metadata and status, as Kubernetes
    /// does for workloads.
    fn tracks_generation(&self) -> bool {
        false
    }
    /// Grace period for deleting `obj`, given the one the client asked for. 0 deletes at once
    /// (unless finalizers hold the object); pods bound to a node wait for their kubelet.
    fn graceful_delete_seconds(&self, _obj: &Value, _requested: Option<i64>) -> i64 {
        0
    }
    /// Adjusts an object that is being marked for deletion (e.g. namespace phase Terminating).
    fn prepare_delete(&self, _obj: &mut Value) {}
    /// Why `obj` may not be deleted at all (e.g. an initial namespace), as the Forbidden message's tail.
    fn forbid_delete(&self, _obj: &Value) -> Option<String> {
        None
    }
    /// Whether something besides `metadata.finalizers` keeps a deleted object until it is released
    /// (a namespace's `spec.finalizers`).
    fn holds_deletion(&self, _obj: &Value) -> bool {
        false
    }
}

/// A resource as discovery shows it.
pub struct Resource {
    /// API group, `""` for core.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    pub namespaced: bool,
    /// Subresources served besides the main resource: `status`, `scale`, `binding`, `eviction`.
    pub subresources: &'static [&'static str],
    /// Storage prefix under `/registry/` (kube-apiserver's layout, e.g. `minions` for nodes).
    pub storage: &'static str,
    pub strategy: &'static dyn Strategy,
}

impl std::fmt::Debug for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Resource({}/{})", self.api_version(), self.plural)
    }
}

impl Resource {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.to_string() } else { format!("{}/{}", self.group, self.version) }
    }
    /// `pods` or `deployments.apps`, as in Kubernetes' error messages.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() { self.plural.to_string() } else { format!("{}.{}", self.plural, self.group) }
    }
    /// `Deployment.apps`, as in "Deployment.apps \"web\" is invalid".
    pub fn qualified_kind(&self) -> String {
        if self.group.is_empty() { self.kind.to_string() } else { format!("{}.{}", self.kind, self.group) }
    }
    pub fn has_subresource(&self, name: &str) -> bool {
        self.subresources.contains(&name)
    }
    /// The protobuf package and the OpenAPI package segment: `core`, `apps`, `networking`, `rbac`…
    pub fn package(&self) -> &'static str {
        if self.group.is_empty() { "core" } else { self.group.split('.').next().unwrap_or(self.group) }
    }
    /// Protobuf message name of the kind, e.g. `k8s.io.api.apps.v1.Deployment`.
    pub fn proto_message(&self) -> String {
        format!("k8s.io.api.{}.{}.{}", self.package(), self.version, self.kind)
    }
    /// OpenAPI definition name, e.g. `io.k8s.api.apps.v1.Deployment`.
    pub fn openapi_name(&self) -> String {
        format!("io.k8s.api.{}.{}.{}", self.package(), self.version, self.kind)
    }
    /// Storage key of one object; `namespace` is ignored for cluster-scoped resources.
    pub fn key(&self, namespace: &str, name: &str) -> String {
        if self.namespaced {
            format!("/registry/{}/{namespace}/{name}", self.storage)
        } else {
            format!("/registry/{}/{name}", self.storage)
        }
    }
    /// Storage prefix of a list: one namespace, or all of them when `namespace` is empty.
    pub fn prefix(&self, namespace: &str) -> String {
        if self.namespaced && !namespace.is_empty() {
            format!("/registry/{}/{namespace}/", self.storage)
        } else {
            format!("/registry/{}/", self.storage)
        }
    }
}

macro_rules! resources {
    ($($module:ident),* $(,)?) => {
        $(pub mod $module;)*
        /// Every served resource, in discovery order.
        pub static RESOURCES: &[&Resource] = &[$(&$module::RESOURCE),*];
    };
}

resources!(
    namespaces,
    pods,
    services,
    endpoints,
    configmaps,
    secrets,
    serviceaccounts,
    nodes,
    events,
    persistentvolumes,
    persistentvolumeclaims,
    resourcequotas,
    limitranges,
    deployments,
    replicasets,
    statefulsets,
    daemonsets,
    controllerrevisions,
    jobs,
    cronjobs,
    horizontalpodautoscalers,
    ingresses,
    ingressclasses,
    networkpolicies,
    endpointslices,
    storageclasses,
    roles,
    rolebindings,
    clusterroles,
    clusterrolebindings,
    leases,
    events_k8s_io,
    poddisruptionbudgets,
    priorityclasses,
);

/// Looks a resource up by group, version and plural name.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    RESOURCES.iter().copied().find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Looks a resource up by group, version and kind.
pub fn find_kind(group: &str, version: &str, kind: &str) -> Option<&'static Resource> {
    RESOURCES.iter().copied().find(|r| r.group == group && r.version == version && r.kind == kind)
}

/// A strategy with every default, for resources that need nothing special.
pub struct Plain;
impl Strategy for Plain {}

/// Reads a string at a JSON pointer.
pub fn str_at<'a>(obj: &'a Value, pointer: &str) -> Option<&'a str> {
    obj.pointer(pointer).and_then(Value::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_per_group_version() {
        for (i, a) in RESOURCES.iter().enumerate() {
            for b in &RESOURCES[i + 1..] {
                assert!(!(a.group == b.group && a.version == b.version && a.plural == b.plural), "{} twice", a.plural);
            }
        }
    }

    #[test]
    fn columns_and_cells_agree() {
        let obj = serde_json::json!({"metadata": {"name": "x", "namespace": "default", "creationTimestamp": "2026-01-01T00:00:00Z"}});
        for r in RESOURCES {
            let cells = r.strategy.cells(&obj, Timestamp::now());
            assert_eq!(cells.len(), r.strategy.columns().len(), "{}", r.plural);
            assert!(r.strategy.columns().iter().any(|c| c.format == "name"), "{} has a name column", r.plural);
        }
    }
}
