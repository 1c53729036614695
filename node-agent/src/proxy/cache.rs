//! The Services and EndpointSlices the proxy knows, and what it last asked the datapath for.
//!
//! Events mark the Services they touch as dirty; [`Cache::changes`] recomputes only those
//! (through [`super::desired`]) and returns the frontends whose desired state changed, as upserts
//! and removals, so one EndpointSlice update costs one datapath call per frontend of its Service.
//! [`Cache::table`] gives the whole desired table for a full sync. No I/O here.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Service as KubeService;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::desired::{ThisNode, service_frontends_on, slice_service_name};
use crate::datapath::{Protocol, Service};

/// Namespace and name of an object.
type ObjectKey = (String, String);
/// A frontend as the datapath keys it.
type Frontend = (Ipv4Addr, u16, Protocol);

/// One change to hand to the datapath.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Add the frontend or replace its backends.
    Upsert(Service),
    /// Remove the frontend.
    Remove { vip: Ipv4Addr, port: u16, proto: Protocol },
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct Cache {
    services: BTreeMap<ObjectKey, KubeService>,
    /// By the slice's own namespace and name.
    slices: BTreeMap<ObjectKey, EndpointSlice>,
    /// Service (namespace, name) → the names of its slices.
    slices_by_service: BTreeMap<ObjectKey, BTreeSet<String>>,
    /// The frontends each Service had when last computed.
    frontends_by_service: BTreeMap<ObjectKey, Vec<Service>>,
    /// Which Services claim each frontend; the first one owns it.
    owners: BTreeMap<Frontend, BTreeSet<ObjectKey>>,
    /// The desired table as last returned by [`Cache::changes`] or [`Cache::table`].
    desired: BTreeMap<Frontend, Service>,
    /// Services to recompute.
    dirty: BTreeSet<ObjectKey>,
    /// The node the proxy runs on, for the `Local` traffic policies.
    node: Option<String>,
    /// The node's addresses, for node port frontends.
    node_addresses: Vec<Ipv4Addr>,
}

fn object_key(meta: &kube::api::ObjectMeta) -> Option<ObjectKey> {
    Some((meta.namespace.clone().unwrap_or_default(), meta.name.clone()?))
}

fn frontend(service: &Service) -> Frontend {
    (service.vip, service.port, service.proto)
}

impl Cache {
    /// An empty cache for the proxy of node `node` (`None`: not known) whose node port frontends
    /// are on `node_addresses`.
    pub fn for_node(node: Option<String>, node_addresses: Vec<Ipv4Addr>) -> Self {
        Self { node, node_addresses, ..Self::default() }
    }

    /// Adds or updates a Service.
    pub fn apply_service(&mut self, service: KubeService) {
        if let Some(key) = object_key(&service.metadata) {
            self.dirty.insert(key.clone());
            self.services.insert(key, service);
        }
    }

    /// Forgets a Service.
    pub fn delete_service(&mut self, service: &KubeService) {
        if let Some(key) = object_key(&service.metadata) {
            self.services.remove(&key);
            self.dirty.insert(key);
        }
    }

    /// Replaces every Service (after a list).
    pub fn replace_services(&mut self, services: impl IntoIterator<Item = KubeService>) {
        self.dirty.extend(std::mem::take(&mut self.services).into_keys());
        for service in services {
            self.apply_service(service);
        }
    }

    /// Adds or updates an EndpointSlice.
    pub fn apply_slice(&mut self, slice: EndpointSlice) {
        let Some(key) = object_key(&slice.metadata) else {
            return;
        };
        self.forget_slice(&key);
        if let Some(service) = slice_service_name(&slice) {
            let service = (key.0.clone(), service.to_owned());
            self.slices_by_service.entry(service.clone()).or_default().insert(key.1.clone());
            self.dirty.insert(service);
        }
        self.slices.insert(key, slice);
    }

    /// Forgets an EndpointSlice.
    pub fn delete_slice(&mut self, slice: &EndpointSlice) {
        if let Some(key) = object_key(&slice.metadata) {
            self.forget_slice(&key);
        }
    }

    /// Replaces every EndpointSlice (after a list).
    pub fn replace_slices(&mut self, slices: impl IntoIterator<Item = EndpointSlice>) {
        let keys: Vec<ObjectKey> = self.slices.keys().cloned().collect();
        for key in keys {
            self.forget_slice(&key);
        }
        for slice in slices {
            self.apply_slice(slice);
        }
    }

    fn forget_slice(&mut self, key: &ObjectKey) {
        let Some(old) = self.slices.remove(key) else {
            return;
        };
        if let Some(service) = slice_service_name(&old) {
            let service = (key.0.clone(), service.to_owned());
            if let Some(names) = self.slices_by_service.get_mut(&service) {
                names.remove(&key.1);
                if names.is_empty() {
                    self.slices_by_service.remove(&service);
                }
            }
            self.dirty.insert(service);
        }
    }

    /// The frontends whose desired state changed since the last call (or [`Cache::table`]),
    /// removals first; the cache then assumes they were applied.
    pub fn changes(&mut self) -> Vec<Change> {
        let affected = self.recompute_dirty();
        let mut removals = Vec::new();
        let mut upserts = Vec::new();
        for key in affected {
            match self.owner(&key) {
                Some(service) => {
                    if self.desired.get(&key) != Some(&service) {
                        self.desired.insert(key, service.clone());
                        upserts.push(Change::Upsert(service));
                    }
                }
                None => {
                    if self.desired.remove(&key).is_some() {
                        removals.push(Change::Remove { vip: key.0, port: key.1, proto: key.2 });
                    }
                }
            }
        }
        removals.extend(upserts);
        removals
    }

    /// The whole desired table, ordered by frontend (for a full sync).
    pub fn table(&mut self) -> Vec<Service> {
        // Brings `desired` up to date; the table replaces whatever the changes would have been.
        let _ = self.changes();
        self.desired.values().cloned().collect()
    }

    /// Recomputes the dirty Services; returns every frontend they had or have.
    fn recompute_dirty(&mut self) -> BTreeSet<Frontend> {
        let mut affected = BTreeSet::new();
        for key in std::mem::take(&mut self.dirty) {
            for old in self.frontends_by_service.remove(&key).unwrap_or_default() {
                let f = frontend(&old);
                if let Some(owners) = self.owners.get_mut(&f) {
                    owners.remove(&key);
                    if owners.is_empty() {
                        self.owners.remove(&f);
                    }
                }
                affected.insert(f);
            }
            let Some(service) = self.services.get(&key) else {
                continue;
            };
            let slices = self
                .slices_by_service
                .get(&key)
                .into_iter()
                .flatten()
                .filter_map(|name| self.slices.get(&(key.0.clone(), name.clone())));
            let this_node = ThisNode { name: self.node.as_deref(), addresses: &self.node_addresses };
            let frontends = service_frontends_on(service, slices, this_node);
            for new in &frontends {
                let f = frontend(new);
                self.owners.entry(f).or_default().insert(key.clone());
                affected.insert(f);
            }
            if !frontends.is_empty() {
                self.frontends_by_service.insert(key, frontends);
            }
        }
        affected
    }

    /// The desired state of a frontend: the one its first owner (by namespace and name) wants.
    fn owner(&self, f: &Frontend) -> Option<Service> {
        let owner = self.owners.get(f)?.first()?;
        self.frontends_by_service.get(owner)?.iter().find(|s| frontend(s) == *f).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::super::desired::tests::{endpoint, kube_service, ready, slice};
    use super::*;

    fn service(vip: &str, port: u16, proto: Protocol, backends: &[&str]) -> Service {
        Service {
            vip: vip.parse().expect("vip"),
            port,
            proto,
            backends: backends.iter().map(|b| b.parse().expect("backend")).collect(),
            affinity: None,
            maglev: false,
        }
    }

    fn upsert(vip: &str, port: u16, proto: Protocol, backends: &[&str]) -> Change {
        Change::Upsert(service(vip, port, proto, backends))
    }

    /// The upsert of the node port frontend 192.168.77.1:30080/TCP, which has Maglev.
    fn node_port_upsert(backends: &[&str]) -> Change {
        Change::Upsert(Service { maglev: true, ..service("192.168.77.1", 30080, Protocol::Tcp, backends) })
    }

    fn remove(vip: &str, port: u16, proto: Protocol) -> Change {
        Change::Remove { vip: vip.parse().expect("vip"), port, proto }
    }

    const WEB_PORTS: &[(&str, i32, &str)] = &[("http", 80, "TCP"), ("dns", 53, "UDP")];
    const WEB_SLICE_PORTS: &[(&str, i32, &str)] = &[("http", 8080, "TCP"), ("dns", 5353, "UDP")];

    #[test]
    fn a_slice_change_touches_only_the_frontends_it_changes() {
        let mut cache = Cache::default();
        cache.replace_services([
            kube_service("web", "10.96.0.20", WEB_PORTS),
            kube_service("db", "10.96.0.21", &[("", 5432, "TCP")]),
        ]);
        cache.replace_slices([
            slice("web-1", "web", WEB_SLICE_PORTS, vec![ready("10.244.1.1"), ready("10.244.1.2")]),
            slice("db-1", "db", &[("", 5432, "TCP")], vec![ready("10.244.2.1")]),
        ]);
        assert_eq!(
            cache.table(),
            vec![
                service("10.96.0.20", 53, Protocol::Udp, &["10.244.1.1:5353", "10.244.1.2:5353"]),
                service("10.96.0.20", 80, Protocol::Tcp, &["10.244.1.1:8080", "10.244.1.2:8080"]),
                service("10.96.0.21", 5432, Protocol::Tcp, &["10.244.2.1:5432"]),
            ]
        );
        assert_eq!(cache.changes(), vec![], "the table is what was programmed");

        // One endpoint goes not-ready: both frontends of `web` change, `db` is not looked at.
        cache.apply_slice(slice(
            "web-1",
            "web",
            WEB_SLICE_PORTS,
            vec![ready("10.244.1.1"), endpoint("10.244.1.2", Some(false), None)],
        ));
        assert_eq!(
            cache.changes(),
            vec![
                upsert("10.96.0.20", 53, Protocol::Udp, &["10.244.1.1:5353"]),
                upsert("10.96.0.20", 80, Protocol::Tcp, &["10.244.1.1:8080"]),
            ]
        );

        // An update that changes nothing the datapath sees (a new label) is no change.
        let mut relabelled = kube_service("db", "10.96.0.21", &[("", 5432, "TCP")]);
        relabelled.metadata.labels = Some([("tier".to_string(), "data".to_string())].into());
        cache.apply_service(relabelled);
        assert_eq!(cache.changes(), vec![]);

        // Deleting the Service removes its frontends; its slice alone programs nothing.
        cache.delete_service(&kube_service("web", "10.96.0.20", WEB_PORTS));
        assert_eq!(
            cache.changes(),
            vec![remove("10.96.0.20", 53, Protocol::Udp), remove("10.96.0.20", 80, Protocol::Tcp)]
        );
        assert_eq!(cache.table(), vec![service("10.96.0.21", 5432, Protocol::Tcp, &["10.244.2.1:5432"])]);
    }

    #[test]
    fn node_port_frontends_follow_the_service_type_and_external_traffic_policy() {
        let mut cache = Cache::for_node(Some("node-a".into()), vec!["192.168.77.1".parse().expect("ip")]);
        let mut web = kube_service("web", "10.96.0.20", &[("http", 80, "TCP")]);
        cache.replace_services([web.clone()]);
        let mut far = ready("10.244.2.1");
        far.node_name = Some("node-b".into());
        let mut near = ready("10.244.1.1");
        near.node_name = Some("node-a".into());
        cache.replace_slices([slice("web-1", "web", &[("http", 8080, "TCP")], vec![near, far])]);
        let both = ["10.244.1.1:8080", "10.244.2.1:8080"];
        assert_eq!(cache.table(), vec![service("10.96.0.20", 80, Protocol::Tcp, &both)]);

        // Becoming a NodePort adds the node port frontend only.
        let spec = web.spec.as_mut().expect("spec");
        spec.type_ = Some("NodePort".into());
        spec.ports.as_mut().expect("ports")[0].node_port = Some(30080);
        cache.apply_service(web.clone());
        assert_eq!(cache.changes(), vec![node_port_upsert(&both)]);

        // externalTrafficPolicy: Local narrows the node port frontend only.
        web.spec.as_mut().expect("spec").external_traffic_policy = Some("Local".into());
        cache.apply_service(web.clone());
        assert_eq!(cache.changes(), vec![node_port_upsert(&["10.244.1.1:8080"])]);

        // Back to ClusterIP: the node port frontend goes.
        web.spec.as_mut().expect("spec").type_ = Some("ClusterIP".into());
        cache.apply_service(web);
        assert_eq!(cache.changes(), vec![remove("192.168.77.1", 30080, Protocol::Tcp)]);
    }

    #[test]
    fn turning_session_affinity_on_upserts_every_frontend_of_the_service() {
        let mut cache = Cache::default();
        cache.replace_services([kube_service("web", "10.96.0.20", WEB_PORTS)]);
        cache.replace_slices([slice("web-1", "web", WEB_SLICE_PORTS, vec![ready("10.244.1.1")])]);
        let _ = cache.table();
        let mut sticky = kube_service("web", "10.96.0.20", WEB_PORTS);
        sticky.spec.as_mut().expect("spec").session_affinity = Some("ClientIP".into());
        cache.apply_service(sticky);
        let hours = Some(std::time::Duration::from_secs(10_800));
        let with_affinity = |mut change: Change| {
            if let Change::Upsert(service) = &mut change {
                service.affinity = hours;
            }
            change
        };
        assert_eq!(
            cache.changes(),
            vec![
                with_affinity(upsert("10.96.0.20", 53, Protocol::Udp, &["10.244.1.1:5353"])),
                with_affinity(upsert("10.96.0.20", 80, Protocol::Tcp, &["10.244.1.1:8080"])),
            ]
        );
        assert_eq!(cache.changes(), vec![]);
    }

    #[test]
    fn a_slice_that_arrives_before_its_service_is_used_when_the_service_comes() {
        let mut cache = Cache::default();
        cache.apply_slice(slice("web-1", "web", WEB_SLICE_PORTS, vec![ready("10.244.1.1")]));
        assert_eq!(cache.changes(), vec![]);
        cache.apply_service(kube_service("web", "10.96.0.20", &[("http", 80, "TCP")]));
        assert_eq!(cache.changes(), vec![upsert("10.96.0.20", 80, Protocol::Tcp, &["10.244.1.1:8080"])]);
        // A second slice adds backends; deleting the first takes its backends away.
        cache.apply_slice(slice("web-2", "web", WEB_SLICE_PORTS, vec![ready("10.244.1.2")]));
        assert_eq!(
            cache.changes(),
            vec![upsert("10.96.0.20", 80, Protocol::Tcp, &["10.244.1.1:8080", "10.244.1.2:8080"])]
        );
        cache.delete_slice(&slice("web-1", "web", &[], vec![]));
        assert_eq!(cache.changes(), vec![upsert("10.96.0.20", 80, Protocol::Tcp, &["10.244.1.2:8080"])]);
    }

    #[test]
    fn a_slice_moved_to_another_service_leaves_the_first() {
        let mut cache = Cache::default();
        cache.replace_services([
            kube_service("a", "10.96.0.1", &[("", 80, "TCP")]),
            kube_service("b", "10.96.0.2", &[("", 80, "TCP")]),
        ]);
        cache.apply_slice(slice("s", "a", &[("", 8080, "TCP")], vec![ready("10.244.1.1")]));
        let _ = cache.table();
        cache.apply_slice(slice("s", "b", &[("", 8080, "TCP")], vec![ready("10.244.1.1")]));
        assert_eq!(
            cache.changes(),
            vec![
                upsert("10.96.0.1", 80, Protocol::Tcp, &[]),
                upsert("10.96.0.2", 80, Protocol::Tcp, &["10.244.1.1:8080"]),
            ]
        );
    }

    #[test]
    fn a_shared_frontend_passes_to_the_next_owner() {
        let mut cache = Cache::default();
        cache.apply_service(kube_service("a", "10.96.0.9", &[("", 80, "TCP")]));
        cache.apply_service(kube_service("b", "10.96.0.9", &[("", 80, "TCP")]));
        cache.apply_slice(slice("a-1", "a", &[("", 8080, "TCP")], vec![ready("10.244.1.1")]));
        cache.apply_slice(slice("b-1", "b", &[("", 8080, "TCP")], vec![ready("10.244.1.2")]));
        assert_eq!(cache.table(), vec![service("10.96.0.9", 80, Protocol::Tcp, &["10.244.1.1:8080"])]);
        cache.delete_service(&kube_service("a", "10.96.0.9", &[]));
        assert_eq!(cache.changes(), vec![upsert("10.96.0.9", 80, Protocol::Tcp, &["10.244.1.2:8080"])]);
    }

    #[test]
    fn a_relist_drops_what_is_gone() {
        let mut cache = Cache::default();
        cache.replace_services([
            kube_service("a", "10.96.0.1", &[("", 80, "TCP")]),
            kube_service("b", "10.96.0.2", &[("", 80, "TCP")]),
        ]);
        cache.replace_slices([slice("a-1", "a", &[("", 8080, "TCP")], vec![ready("10.244.1.1")])]);
        let _ = cache.table();
        cache.replace_services([kube_service("b", "10.96.0.2", &[("", 80, "TCP")])]);
        cache.replace_slices([slice("b-1", "b", &[("", 8080, "TCP")], vec![ready("10.244.1.2")])]);
        assert_eq!(cache.table(), vec![service("10.96.0.2", 80, Protocol::Tcp, &["10.244.1.2:8080"])]);
    }
}
