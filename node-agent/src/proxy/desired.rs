//! The desired service table: Services and EndpointSlices in, [`datapath::Service`]s out. Pure
//! functions only, so that every rule below is unit tested without a cluster or a kernel.
//!
//! The rules follow kube-proxy's:
//! - a Service gets frontends only with an IPv4 ClusterIP (`spec.clusterIPs`, else
//!   `spec.clusterIP`): headless (`None`) and `ExternalName` Services have none, and neither has a
//!   Service that asks for another proxy (label `service.kubernetes.io/service-proxy-name`);
//! - one frontend per TCP or UDP port of the Service (SCTP is not supported by the datapath);
//! - its backends come from the EndpointSlices of the same namespace labelled
//!   `kubernetes.io/service-name: <service>` with `addressType: IPv4`, at each endpoint's first
//!   address, on the port of the slice whose name and protocol equal the Service port's (empty
//!   names match);
//! - of those endpoints, the ready ones (a missing `ready` counts as ready; a terminating endpoint
//!   is not ready); when none is ready, the ones still serving while they terminate, so that a
//!   rolling restart of the last Pods drains instead of failing (`serving` missing: as `ready`);
//! - `internalTrafficPolicy: Local` narrows the endpoints to those on this node (their
//!   `nodeName`) before that choice; with none there, the Service has no backends here, as with
//!   kube-proxy. The node is known only when the proxy is told its name;
//! - a `NodePort` or `LoadBalancer` Service also gets, for each TCP/UDP port with a `nodePort`,
//!   one frontend per address of this node ([`ThisNode::addresses`]) on that node port
//!   (`allocateLoadBalancerNodePorts: false` leaves a LoadBalancer port without one, and so
//!   without node port frontends);
//! - `externalTrafficPolicy: Local` narrows the endpoints of those node port frontends (not of the
//!   ClusterIP ones, which follow `internalTrafficPolicy`) to this node's, with the same
//!   ready-then-serving-terminating choice; with none here the node port frontend has no backends
//!   and its packets are dropped, so that load balancers send the traffic to nodes that have one.
//!   Under `Local` the backend sees the client's address; under `Cluster` an outside client's
//!   flow to a backend on another node is SNAT'd by the datapath (to this node's address), as
//!   with kube-proxy, so that the reply comes back through this node.
//!   Without a node name the policy is not applied (`Cluster`: every usable endpoint);
//! - backends are deduplicated and sorted by address and port, so the same objects always give
//!   the same table;
//! - `sessionAffinity: ClientIP` gives every frontend of the Service affinity with
//!   `sessionAffinityConfig.clientIP.timeoutSeconds` (default 10 800 s, three hours; a value the
//!   API server would have refused, not in 1..=86 400, counts as the default); `None` or no
//!   value, no affinity.
//!
//! Connections already open to an endpoint that stops being a backend are not touched (the socket
//! programs act on connect only): they drain.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Service as KubeService, ServicePort};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};

use crate::datapath::{Cidr, Protocol, Service};

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Services with this label (non-empty) are programmed by another proxy, not by us.
pub const SERVICE_PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";

/// The node the proxy programs, as far as the rules need it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThisNode<'a> {
    /// Its Node name, for the `Local` traffic policies (`None`: not known, policies not applied).
    pub name: Option<&'a str>,
    /// Its addresses: each gets a frontend per node port.
    pub addresses: &'a [Ipv4Addr],
}

impl<'a> ThisNode<'a> {
    /// A node known by name only (no node port frontends).
    pub const fn named(name: &'a str) -> Self {
        Self { name: Some(name), addresses: &[] }
    }
}

/// The IPv4 `InternalIP` and `ExternalIP` addresses of a Node, in status order, without
/// duplicates: the addresses NodePort frontends are programmed on.
pub fn node_addresses(node: &Node) -> Vec<Ipv4Addr> {
    let mut addresses = Vec::new();
    let listed = node.status.iter().flat_map(|status| status.addresses.iter().flatten());
    for address in listed.filter(|a| a.type_ == "InternalIP" || a.type_ == "ExternalIP") {
        if let Ok(ip) = address.address.parse::<Ipv4Addr>()
            && !addresses.contains(&ip)
        {
            addresses.push(ip);
        }
    }
    addresses
}

/// The IPv4 pod CIDRs of a Node (`spec.podCIDRs`, else `spec.podCIDR`): its local backends.
pub fn node_pod_cidrs(node: &Node) -> Vec<Cidr> {
    let Some(spec) = node.spec.as_ref() else {
        return Vec::new();
    };
    let mut cidrs: Vec<Cidr> = Vec::new();
    for cidr in spec.pod_cidrs.iter().flatten().chain(spec.pod_cidr.iter()) {
        if let Ok(cidr) = cidr.parse::<Cidr>()
            && !cidrs.contains(&cidr)
        {
            cidrs.push(cidr);
        }
    }
    cidrs
}

/// The name of the Service an EndpointSlice belongs to, from its label.
pub fn slice_service_name(slice: &EndpointSlice) -> Option<&str> {
    slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL).map(String::as_str).filter(|name| !name.is_empty())
}

/// kube-proxy's default `sessionAffinityConfig.clientIP.timeoutSeconds`: three hours.
pub const DEFAULT_AFFINITY_TIMEOUT: Duration = Duration::from_secs(10_800);
/// The largest timeout the API server accepts: one day.
const MAX_AFFINITY_TIMEOUT_SECONDS: i32 = 86_400;

/// The session affinity timeout of a Service with `sessionAffinity: ClientIP`; `None` without
/// affinity.
pub fn session_affinity(service: &KubeService) -> Option<Duration> {
    let spec = service.spec.as_ref()?;
    if spec.session_affinity.as_deref() != Some("ClientIP") {
        return None;
    }
    let seconds = spec
        .session_affinity_config
        .as_ref()
        .and_then(|config| config.client_ip.as_ref())
        .and_then(|client_ip| client_ip.timeout_seconds)
        .filter(|seconds| (1..=MAX_AFFINITY_TIMEOUT_SECONDS).contains(seconds));
    Some(seconds.map_or(DEFAULT_AFFINITY_TIMEOUT, |seconds| Duration::from_secs(seconds.unsigned_abs().into())))
}

/// The IPv4 ClusterIP of a Service that gets frontends; `None` for headless, `ExternalName`,
/// IPv6-only and other-proxy Services.
pub fn cluster_ip(service: &KubeService) -> Option<Ipv4Addr> {
    let other_proxy = service
        .metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get(SERVICE_PROXY_NAME_LABEL))
        .is_some_and(|name| !name.is_empty());
    let spec = service.spec.as_ref()?;
    if other_proxy || spec.type_.as_deref() == Some("ExternalName") {
        return None;
    }
    // "None" (headless) and "" do not parse; the first IPv4 family wins in dual-stack.
    let mut ips = spec.cluster_ips.iter().flatten().chain(spec.cluster_ip.iter());
    ips.find_map(|ip| ip.parse::<Ipv4Addr>().ok())
}

/// The frontends of one Service and their backends, from the EndpointSlices given (slices of
/// other Services, other namespaces or other address types are ignored, so the caller may pass
/// more than the Service's own). Ordered by port, then protocol.
pub fn service_frontends<'a>(
    service: &KubeService,
    slices: impl IntoIterator<Item = &'a EndpointSlice> + Clone,
) -> Vec<Service> {
    service_frontends_on(service, slices, ThisNode::default())
}

/// [`service_frontends`] as seen from `node`: the `Local` traffic policies need its name, node
/// port frontends its addresses. Ordered by address, port, then protocol.
pub fn service_frontends_on<'a>(
    service: &KubeService,
    slices: impl IntoIterator<Item = &'a EndpointSlice> + Clone,
    node: ThisNode<'_>,
) -> Vec<Service> {
    let Some(vip) = cluster_ip(service) else {
        return Vec::new();
    };
    let (Some(name), namespace) = (service.metadata.name.as_deref(), service.metadata.namespace.as_deref()) else {
        return Vec::new();
    };
    let spec = service.spec.as_ref();
    let local = |policy: Option<&str>| node.name.filter(|_| policy == Some("Local"));
    let internal_local = local(spec.and_then(|spec| spec.internal_traffic_policy.as_deref()));
    let external_local = local(spec.and_then(|spec| spec.external_traffic_policy.as_deref()));
    let has_node_ports = matches!(spec.and_then(|spec| spec.type_.as_deref()), Some("NodePort" | "LoadBalancer"));
    let affinity = session_affinity(service);
    let own: Vec<&EndpointSlice> = slices
        .into_iter()
        .filter(|slice| {
            slice.address_type == "IPv4"
                && slice_service_name(slice) == Some(name)
                && slice.metadata.namespace.as_deref() == namespace
        })
        .collect();
    let mut frontends = Vec::new();
    for port in spec.iter().flat_map(|spec| spec.ports.iter().flatten()) {
        let Some(proto) = protocol(port.protocol.as_deref()) else {
            continue;
        };
        let Some(port_number) = u16::try_from(port.port).ok().filter(|&p| p != 0) else {
            continue;
        };
        frontends.push(Service {
            vip,
            port: port_number,
            proto,
            backends: backends(port, proto, &own, internal_local),
            affinity,
            // Local clients reach the ClusterIP through the socket programs, which pick at random.
            maglev: false,
        });
        let node_port = port.node_port.and_then(|p| u16::try_from(p).ok()).filter(|&p| p != 0 && has_node_ports);
        if let Some(node_port) = node_port {
            let external = backends(port, proto, &own, external_local);
            for &address in node.addresses {
                // External flows may reach any node, and the node may lose its conntrack: Maglev
                // sends each to the same backend everywhere.
                let backends = external.clone();
                frontends.push(Service { vip: address, port: node_port, proto, backends, affinity, maglev: true });
            }
        }
    }
    // A stable sort: of two Service ports with one number and protocol (invalid) the first stays.
    frontends.sort_by_key(|s| (s.vip, s.port, s.proto));
    frontends.dedup_by_key(|s| (s.vip, s.port, s.proto));
    frontends
}

/// The whole desired table for `services` and `slices`, ordered by frontend. A frontend claimed
/// by two Services (possible only for a moment, while a ClusterIP moves from a deleted Service to
/// a new one) goes to the first by namespace and name.
pub fn desired_table<'a>(
    services: impl IntoIterator<Item = &'a KubeService>,
    slices: impl IntoIterator<Item = &'a EndpointSlice> + Clone,
    node: ThisNode<'_>,
) -> Vec<Service> {
    let mut services: Vec<&KubeService> = services.into_iter().collect();
    services.sort_by(|a, b| {
        (a.metadata.namespace.as_deref(), a.metadata.name.as_deref())
            .cmp(&(b.metadata.namespace.as_deref(), b.metadata.name.as_deref()))
    });
    let mut seen = BTreeSet::new();
    let mut table: Vec<Service> = services
        .into_iter()
        .flat_map(|service| service_frontends_on(service, slices.clone(), node))
        .filter(|frontend| seen.insert((frontend.vip, frontend.port, frontend.proto)))
        .collect();
    table.sort_by_key(|s| (s.vip, s.port, s.proto));
    table
}

/// `TCP` (the default) or `UDP`; `None` for SCTP and anything else.
fn protocol(name: Option<&str>) -> Option<Protocol> {
    match name.unwrap_or("TCP") {
        "TCP" => Some(Protocol::Tcp),
        "UDP" => Some(Protocol::Udp),
        _ => None,
    }
}

/// The backends of one Service port across its slices (see the module documentation), sorted and
/// deduplicated; only endpoints on node `local_only` when it is given (a `Local` policy).
fn backends(
    port: &ServicePort,
    proto: Protocol,
    slices: &[&EndpointSlice],
    local_only: Option<&str>,
) -> Vec<SocketAddrV4> {
    let name = port.name.as_deref().unwrap_or("");
    let mut ready = BTreeSet::new();
    let mut terminating = BTreeSet::new();
    for slice in slices {
        let target = slice
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref().unwrap_or("") == name && protocol(p.protocol.as_deref()) == Some(proto));
        // A slice without this port (or with a nil port, "all ports") has no backends for it.
        let Some(target) = target.and_then(|p| p.port).and_then(|p| u16::try_from(p).ok()).filter(|&p| p != 0) else {
            continue;
        };
        let here = |endpoint: &&Endpoint| local_only.is_none_or(|node| endpoint.node_name.as_deref() == Some(node));
        for endpoint in slice.endpoints.iter().filter(here) {
            // Every address of an endpoint is the same Pod, so kube-proxy uses the first.
            let Some(addr) = endpoint.addresses.first().and_then(|a| a.parse::<Ipv4Addr>().ok()) else {
                continue;
            };
            match state(endpoint) {
                EndpointState::Ready => ready.insert(SocketAddrV4::new(addr, target)),
                EndpointState::ServingTerminating => terminating.insert(SocketAddrV4::new(addr, target)),
                EndpointState::Unusable => false,
            };
        }
    }
    let chosen = if ready.is_empty() { terminating } else { ready };
    chosen.into_iter().collect()
}

enum EndpointState {
    /// Takes new connections.
    Ready,
    /// Terminating but still serving: takes new connections only when no endpoint is ready.
    ServingTerminating,
    Unusable,
}

fn state(endpoint: &Endpoint) -> EndpointState {
    let conditions = endpoint.conditions.as_ref();
    let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
    let serving = conditions.and_then(|c| c.serving).unwrap_or(ready);
    let terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
    match (ready && !terminating, serving && terminating) {
        (true, _) => EndpointState::Ready,
        (false, true) => EndpointState::ServingTerminating,
        (false, false) => EndpointState::Unusable,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use k8s_openapi::api::core::v1::{ClientIPConfig, ServiceSpec, SessionAffinityConfig};
    use k8s_openapi::api::discovery::v1::{EndpointConditions, EndpointPort};
    use kube::api::ObjectMeta;

    use super::*;

    pub(crate) const NS: &str = "default";

    /// A ClusterIP Service; `ports` are (name, port, protocol).
    pub(crate) fn kube_service(name: &str, ip: &str, ports: &[(&str, i32, &str)]) -> KubeService {
        KubeService {
            metadata: ObjectMeta { name: Some(name.into()), namespace: Some(NS.into()), ..Default::default() },
            spec: Some(ServiceSpec {
                cluster_ip: Some(ip.into()),
                cluster_ips: Some(vec![ip.into()]),
                type_: Some("ClusterIP".into()),
                ports: Some(
                    ports
                        .iter()
                        .map(|&(name, port, proto)| ServicePort {
                            name: (!name.is_empty()).then(|| name.into()),
                            port,
                            protocol: Some(proto.into()),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            status: None,
        }
    }

    /// An endpoint with an explicit ready and terminating condition (`None` leaves it out).
    pub(crate) fn endpoint(addr: &str, ready: Option<bool>, terminating: Option<bool>) -> Endpoint {
        Endpoint {
            addresses: vec![addr.into()],
            conditions: Some(EndpointConditions { ready, serving: ready, terminating }),
            ..Default::default()
        }
    }

    pub(crate) fn ready(addr: &str) -> Endpoint {
        endpoint(addr, Some(true), None)
    }

    /// An IPv4 slice of `service`; `ports` are (name, port, protocol).
    pub(crate) fn slice(
        name: &str,
        service: &str,
        ports: &[(&str, i32, &str)],
        endpoints: Vec<Endpoint>,
    ) -> EndpointSlice {
        EndpointSlice {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(NS.into()),
                labels: Some([(SERVICE_NAME_LABEL.to_string(), service.to_string())].into()),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            endpoints,
            ports: Some(
                ports
                    .iter()
                    .map(|&(name, port, proto)| EndpointPort {
                        name: Some(name.into()),
                        port: Some(port),
                        protocol: Some(proto.into()),
                        app_protocol: None,
                    })
                    .collect(),
            ),
        }
    }

    fn addr(s: &str) -> SocketAddrV4 {
        s.parse().expect("socket address")
    }

    fn frontend(vip: &str, port: u16, proto: Protocol, backends: &[&str]) -> Service {
        Service {
            vip: vip.parse().expect("vip"),
            port,
            proto,
            backends: backends.iter().map(|b| addr(b)).collect(),
            affinity: None,
            maglev: false,
        }
    }

    /// A node port frontend: [`frontend`] with Maglev.
    fn node_port_frontend(vip: &str, port: u16, proto: Protocol, backends: &[&str]) -> Service {
        Service { maglev: true, ..frontend(vip, port, proto, backends) }
    }

    fn with_affinity(affinity: Option<&str>, timeout: Option<i32>) -> KubeService {
        let mut svc = kube_service("web", "10.96.0.20", &[("http", 80, "TCP"), ("dns", 53, "UDP")]);
        let spec = svc.spec.as_mut().expect("spec");
        spec.session_affinity = affinity.map(Into::into);
        spec.session_affinity_config = timeout.map(|seconds| SessionAffinityConfig {
            client_ip: Some(ClientIPConfig { timeout_seconds: Some(seconds) }),
        });
        svc
    }

    #[test]
    fn client_ip_session_affinity_sets_every_frontends_timeout() {
        let slices = [slice(
            "web-1",
            "web",
            &[("http", 8080, "TCP"), ("dns", 5353, "UDP")],
            vec![ready("10.244.1.5"), ready("10.244.2.7")],
        )];
        let timeouts = |svc: &KubeService| -> Vec<Option<Duration>> {
            service_frontends(svc, &slices).into_iter().map(|frontend| frontend.affinity).collect()
        };
        let three_hours = Some(Duration::from_secs(10_800));
        assert_eq!(timeouts(&with_affinity(Some("ClientIP"), Some(60))), [Some(Duration::from_secs(60)); 2]);
        assert_eq!(timeouts(&with_affinity(Some("ClientIP"), None)), [three_hours; 2], "default: three hours");
        assert_eq!(timeouts(&with_affinity(Some("ClientIP"), Some(86_400))), [Some(Duration::from_secs(86_400)); 2]);
        for invalid in [0, -5, 86_401] {
            assert_eq!(timeouts(&with_affinity(Some("ClientIP"), Some(invalid))), [three_hours; 2], "{invalid}");
        }
        assert_eq!(timeouts(&with_affinity(Some("None"), Some(60))), [None; 2], "None: no affinity");
        assert_eq!(timeouts(&with_affinity(None, Some(60))), [None; 2], "unset: no affinity");

        // The rest of the frontend is as without affinity, and the table carries it too.
        let svc = with_affinity(Some("ClientIP"), Some(30));
        let mut expected = frontend("10.96.0.20", 80, Protocol::Tcp, &["10.244.1.5:8080", "10.244.2.7:8080"]);
        expected.affinity = Some(Duration::from_secs(30));
        assert_eq!(service_frontends(&svc, &slices)[1], expected);
        assert_eq!(desired_table([&svc], &slices, ThisNode::default())[1], expected);
    }

    #[test]
    fn named_ports_take_the_slice_port_of_the_same_name_and_protocol() {
        let svc = kube_service("web", "10.96.0.20", &[("http", 80, "TCP"), ("dns", 53, "UDP"), ("dns-tcp", 53, "TCP")]);
        let slices = [slice(
            "web-1",
            "web",
            &[("dns", 5353, "UDP"), ("http", 8080, "TCP"), ("dns-tcp", 5354, "TCP"), ("http", 9999, "UDP")],
            vec![ready("10.244.1.5"), ready("10.244.2.7")],
        )];
        assert_eq!(
            service_frontends(&svc, &slices),
            vec![
                frontend("10.96.0.20", 53, Protocol::Tcp, &["10.244.1.5:5354", "10.244.2.7:5354"]),
                frontend("10.96.0.20", 53, Protocol::Udp, &["10.244.1.5:5353", "10.244.2.7:5353"]),
                frontend("10.96.0.20", 80, Protocol::Tcp, &["10.244.1.5:8080", "10.244.2.7:8080"]),
            ]
        );
    }

    #[test]
    fn unnamed_port_matches_the_empty_slice_port_name() {
        let svc = kube_service("one", "10.96.0.21", &[("", 80, "TCP")]);
        let slices = [slice("one-1", "one", &[("", 8080, "TCP")], vec![ready("10.244.1.5")])];
        assert_eq!(
            service_frontends(&svc, &slices),
            vec![frontend("10.96.0.21", 80, Protocol::Tcp, &["10.244.1.5:8080"])]
        );
        // A slice port without a number ("all ports") gives no backend.
        let mut no_number = slices[0].clone();
        no_number.ports.as_mut().expect("ports")[0].port = None;
        assert_eq!(service_frontends(&svc, [&no_number]), vec![frontend("10.96.0.21", 80, Protocol::Tcp, &[])]);
    }

    #[test]
    fn several_slices_are_merged_sorted_and_deduplicated() {
        let svc = kube_service("web", "10.96.0.20", &[("http", 80, "TCP")]);
        let slices = [
            slice("web-b", "web", &[("http", 8080, "TCP")], vec![ready("10.244.2.7"), ready("10.244.1.5")]),
            // The same endpoint in two slices (it is moving between them) counts once.
            slice("web-a", "web", &[("http", 8080, "TCP")], vec![ready("10.244.1.5"), ready("10.244.0.9")]),
            // A slice can name the port differently from its siblings during a rollout.
            slice("web-c", "web", &[("http", 8081, "TCP")], vec![ready("10.244.3.1")]),
        ];
        assert_eq!(
            service_frontends(&svc, &slices),
            vec![frontend(
                "10.96.0.20",
                80,
                Protocol::Tcp,
                &["10.244.0.9:8080", "10.244.1.5:8080", "10.244.2.7:8080", "10.244.3.1:8081"]
            )]
        );
    }

    /// A terminating endpoint with its own serving condition.
    fn terminating(addr: &str, serving: bool) -> Endpoint {
        Endpoint {
            addresses: vec![addr.into()],
            conditions: Some(EndpointConditions {
                ready: Some(false),
                serving: Some(serving),
                terminating: Some(true),
            }),
            ..Default::default()
        }
    }

    fn on_node(mut endpoint: Endpoint, node: &str) -> Endpoint {
        endpoint.node_name = Some(node.into());
        endpoint
    }

    #[test]
    fn serving_terminating_endpoints_are_used_only_when_none_is_ready() {
        let svc = kube_service("web", "10.96.0.20", &[("http", 80, "TCP")]);
        let draining = vec![terminating("10.244.1.1", true), terminating("10.244.1.2", false)];
        let slices = [slice("web-1", "web", &[("http", 8080, "TCP")], draining.clone())];
        assert_eq!(
            service_frontends(&svc, &slices),
            vec![frontend("10.96.0.20", 80, Protocol::Tcp, &["10.244.1.1:8080"])],
            "the last Pods drain: the serving one still takes connections, the one not serving does not"
        );
        let mut mixed = draining;
        mixed.push(ready("10.244.1.3"));
        let slices = [slice("web-1", "web", &[("http", 8080, "TCP")], mixed)];
        assert_eq!(
            service_frontends(&svc, &slices),
            vec![frontend("10.96.0.20", 80, Protocol::Tcp, &["10.244.1.3:8080"])],
            "with a ready endpoint, terminating ones get no new connections"
        );
    }

    #[test]
    fn internal_traffic_policy_local_keeps_this_nodes_endpoints() {
        let mut svc = kube_service("web", "10.96.0.20", &[("http", 80, "TCP")]);
        let endpoints = vec![
            on_node(ready("10.244.1.1"), "node-a"),
            on_node(ready("10.244.2.1"), "node-b"),
            on_node(terminating("10.244.1.2", true), "node-a"),
            ready("10.244.3.1"),
        ];
        let slices = [slice("web-1", "web", &[("http", 8080, "TCP")], endpoints)];
        let all = ["10.244.1.1:8080", "10.244.2.1:8080", "10.244.3.1:8080"];
        assert_eq!(
            service_frontends_on(&svc, &slices, ThisNode::named("node-a")),
            vec![frontend("10.96.0.20", 80, Protocol::Tcp, &all)],
            "Cluster (the default) uses every node's endpoints"
        );
        svc.spec.as_mut().expect("spec").internal_traffic_policy = Some("Local".into());
        assert_eq!(
            service_frontends_on(&svc, &slices, ThisNode::named("node-a")),
            vec![frontend("10.96.0.20", 80, Protocol::Tcp, &["10.244.1.1:8080"])]
        );
        assert_eq!(
            service_frontends_on(&svc, &slices, ThisNode::named("node-c")),
            vec![frontend("10.96.0.20", 80, Protocol::Tcp, &[])],
            "no local endpoint: no backend here, as with kube-proxy"
        );
        assert_eq!(
            service_frontends_on(&svc, &slices, ThisNode::default()),
            vec![frontend("10.96.0.20", 80, Protocol::Tcp, &all)],
            "a proxy that does not know its node applies no locality"
        );
        let local_draining = [slice(
            "web-1",
            "web",
            &[("http", 8080, "TCP")],
            vec![on_node(terminating("10.244.1.2", true), "node-a"), on_node(ready("10.244.2.1"), "node-b")],
        )];
        assert_eq!(
            service_frontends_on(&svc, &local_draining, ThisNode::named("node-a")),
            vec![frontend("10.96.0.20", 80, Protocol::Tcp, &["10.244.1.2:8080"])],
            "the local fallback is the local serving-terminating endpoint, not a remote ready one"
        );
    }

    #[test]
    fn only_ready_endpoints_that_are_not_terminating_are_backends() {
        let svc = kube_service("web", "10.96.0.20", &[("http", 80, "TCP")]);
        let mut no_conditions = ready("10.244.1.4");
        no_conditions.conditions = None;
        let endpoints = vec![
            ready("10.244.1.1"),
            endpoint("10.244.1.2", None, None),
            endpoint("10.244.1.3", Some(false), None),
            endpoint("10.244.1.5", Some(false), Some(true)),
            endpoint("10.244.1.6", None, Some(true)),
            endpoint("10.244.1.7", Some(true), Some(false)),
            no_conditions,
        ];
        let slices = [slice("web-1", "web", &[("http", 8080, "TCP")], endpoints)];
        assert_eq!(
            service_frontends(&svc, &slices),
            vec![frontend(
                "10.96.0.20",
                80,
                Protocol::Tcp,
                &["10.244.1.1:8080", "10.244.1.2:8080", "10.244.1.4:8080", "10.244.1.7:8080"]
            )]
        );
    }

    #[test]
    fn endpoints_use_their_first_address_and_skip_bad_ones() {
        let svc = kube_service("web", "10.96.0.20", &[("http", 80, "TCP")]);
        let mut two = ready("10.244.1.1");
        two.addresses.push("10.244.1.2".into());
        let mut none = ready("x");
        none.addresses.clear();
        let slices = [slice("web-1", "web", &[("http", 8080, "TCP")], vec![two, none, ready("not-an-ip")])];
        assert_eq!(
            service_frontends(&svc, &slices),
            vec![frontend("10.96.0.20", 80, Protocol::Tcp, &["10.244.1.1:8080"])]
        );
    }

    #[test]
    fn headless_external_name_other_proxy_and_ipv6_services_have_no_frontends() {
        let slices = [slice("s-1", "s", &[("http", 8080, "TCP")], vec![ready("10.244.1.1")])];
        let headless = kube_service("s", "None", &[("http", 80, "TCP")]);
        assert_eq!(service_frontends(&headless, &slices), vec![]);
        let mut external = kube_service("s", "", &[("http", 80, "TCP")]);
        external.spec.as_mut().expect("spec").type_ = Some("ExternalName".into());
        assert_eq!(service_frontends(&external, &slices), vec![]);
        let mut other = kube_service("s", "10.96.0.30", &[("http", 80, "TCP")]);
        other.metadata.labels = Some([(SERVICE_PROXY_NAME_LABEL.to_string(), "other".to_string())].into());
        assert_eq!(service_frontends(&other, &slices), vec![]);
        let v6 = kube_service("s", "fd00::10", &[("http", 80, "TCP")]);
        assert_eq!(service_frontends(&v6, &slices), vec![]);
        // Dual stack, IPv6 first: the IPv4 family is used.
        let mut dual = kube_service("s", "fd00::10", &[("http", 80, "TCP")]);
        dual.spec.as_mut().expect("spec").cluster_ips = Some(vec!["fd00::10".into(), "10.96.0.31".into()]);
        assert_eq!(
            service_frontends(&dual, &slices),
            vec![frontend("10.96.0.31", 80, Protocol::Tcp, &["10.244.1.1:8080"])]
        );
        // NodePort and LoadBalancer Services have a ClusterIP like any other.
        let mut node_port = kube_service("s", "10.96.0.32", &[("http", 80, "TCP")]);
        node_port.spec.as_mut().expect("spec").type_ = Some("NodePort".into());
        assert_eq!(service_frontends(&node_port, &slices).len(), 1);
    }

    #[test]
    fn sctp_ports_are_skipped_and_udp_kept() {
        let svc = kube_service("s", "10.96.0.40", &[("a", 36412, "SCTP"), ("dns", 53, "UDP")]);
        let slices = [slice("s-1", "s", &[("a", 36412, "SCTP"), ("dns", 53, "UDP")], vec![ready("10.244.1.1")])];
        assert_eq!(
            service_frontends(&svc, &slices),
            vec![frontend("10.96.0.40", 53, Protocol::Udp, &["10.244.1.1:53"])]
        );
    }

    #[test]
    fn ipv6_and_foreign_slices_are_ignored() {
        let svc = kube_service("web", "10.96.0.20", &[("http", 80, "TCP")]);
        let mut v6 = slice("web-v6", "web", &[("http", 8080, "TCP")], vec![ready("fd00::1")]);
        v6.address_type = "IPv6".into();
        let mut fqdn = slice("web-fqdn", "web", &[("http", 8080, "TCP")], vec![ready("10.244.9.9")]);
        fqdn.address_type = "FQDN".into();
        let mut elsewhere = slice("web-x", "web", &[("http", 8080, "TCP")], vec![ready("10.244.9.8")]);
        elsewhere.metadata.namespace = Some("other".into());
        let other_service = slice("api-1", "api", &[("http", 8080, "TCP")], vec![ready("10.244.9.7")]);
        let mut unlabelled = slice("web-u", "web", &[("http", 8080, "TCP")], vec![ready("10.244.9.6")]);
        unlabelled.metadata.labels = None;
        let own = slice("web-1", "web", &[("http", 8080, "TCP")], vec![ready("10.244.1.5")]);
        let slices = [v6, fqdn, elsewhere, other_service, unlabelled, own];
        assert_eq!(
            service_frontends(&svc, &slices),
            vec![frontend("10.96.0.20", 80, Protocol::Tcp, &["10.244.1.5:8080"])]
        );
    }

    #[test]
    fn a_service_without_slices_has_frontends_without_backends() {
        let svc = kube_service("web", "10.96.0.20", &[("http", 80, "TCP"), ("dns", 53, "UDP")]);
        assert_eq!(
            service_frontends(&svc, &[]),
            vec![frontend("10.96.0.20", 53, Protocol::Udp, &[]), frontend("10.96.0.20", 80, Protocol::Tcp, &[])]
        );
    }

    #[test]
    fn table_ignores_slices_of_missing_services_and_resolves_shared_frontends() {
        let services = [
            kube_service("b", "10.96.0.2", &[("", 80, "TCP")]),
            kube_service("a", "10.96.0.1", &[("", 443, "TCP")]),
            // A new Service that was handed the ClusterIP of `b` while `b` is still known.
            kube_service("c", "10.96.0.2", &[("", 80, "TCP")]),
        ];
        let slices = [
            slice("a-1", "a", &[("", 6443, "TCP")], vec![ready("192.168.1.1")]),
            slice("b-1", "b", &[("", 8080, "TCP")], vec![ready("10.244.1.1")]),
            slice("c-1", "c", &[("", 8080, "TCP")], vec![ready("10.244.1.2")]),
            slice("gone-1", "gone", &[("", 8080, "TCP")], vec![ready("10.244.1.3")]),
        ];
        assert_eq!(
            desired_table(&services, &slices, ThisNode::default()),
            vec![
                frontend("10.96.0.1", 443, Protocol::Tcp, &["192.168.1.1:6443"]),
                frontend("10.96.0.2", 80, Protocol::Tcp, &["10.244.1.1:8080"]),
            ]
        );
    }

    const NODE_ADDRESSES: [Ipv4Addr; 2] = [Ipv4Addr::new(192, 168, 77, 1), Ipv4Addr::new(203, 0, 113, 7)];

    /// This node, `node-a`, with two addresses.
    fn node_a() -> ThisNode<'static> {
        ThisNode { name: Some("node-a"), addresses: &NODE_ADDRESSES }
    }

    /// A Service of `type_` whose ports are (name, port, protocol, nodePort).
    fn node_port_service(type_: &str, ports: &[(&str, i32, &str, Option<i32>)]) -> KubeService {
        let plain: Vec<(&str, i32, &str)> = ports.iter().map(|&(n, p, proto, _)| (n, p, proto)).collect();
        let mut svc = kube_service("web", "10.96.0.20", &plain);
        let spec = svc.spec.as_mut().expect("spec");
        spec.type_ = Some(type_.into());
        for (port, &(_, _, _, node_port)) in spec.ports.as_mut().expect("ports").iter_mut().zip(ports) {
            port.node_port = node_port;
        }
        svc
    }

    #[test]
    fn node_port_services_get_a_frontend_per_node_address_and_port() {
        let svc = node_port_service(
            "NodePort",
            &[("http", 80, "TCP", Some(30080)), ("dns", 53, "UDP", Some(30053)), ("admin", 81, "TCP", None)],
        );
        let slices = [slice(
            "web-1",
            "web",
            &[("http", 8080, "TCP"), ("dns", 5353, "UDP"), ("admin", 8081, "TCP")],
            vec![on_node(ready("10.244.1.5"), "node-a"), on_node(ready("10.244.2.7"), "node-b")],
        )];
        let http = ["10.244.1.5:8080", "10.244.2.7:8080"];
        let dns = ["10.244.1.5:5353", "10.244.2.7:5353"];
        assert_eq!(
            service_frontends_on(&svc, &slices, node_a()),
            vec![
                frontend("10.96.0.20", 53, Protocol::Udp, &dns),
                frontend("10.96.0.20", 80, Protocol::Tcp, &http),
                frontend("10.96.0.20", 81, Protocol::Tcp, &["10.244.1.5:8081", "10.244.2.7:8081"]),
                node_port_frontend("192.168.77.1", 30053, Protocol::Udp, &dns),
                node_port_frontend("192.168.77.1", 30080, Protocol::Tcp, &http),
                node_port_frontend("203.0.113.7", 30053, Protocol::Udp, &dns),
                node_port_frontend("203.0.113.7", 30080, Protocol::Tcp, &http),
            ],
            "a port without nodePort has its ClusterIP frontend only; node port frontends have Maglev"
        );
        assert_eq!(
            service_frontends_on(&svc, &slices, ThisNode::named("node-a")).len(),
            3,
            "a node without known addresses has no node port frontends"
        );
    }

    #[test]
    fn load_balancer_services_have_node_ports_and_cluster_ip_ones_do_not() {
        let slices = [slice("web-1", "web", &[("http", 8080, "TCP")], vec![ready("10.244.1.5")])];
        let lb = node_port_service("LoadBalancer", &[("http", 80, "TCP", Some(31000))]);
        assert_eq!(
            service_frontends_on(&lb, &slices, node_a()),
            vec![
                frontend("10.96.0.20", 80, Protocol::Tcp, &["10.244.1.5:8080"]),
                node_port_frontend("192.168.77.1", 31000, Protocol::Tcp, &["10.244.1.5:8080"]),
                node_port_frontend("203.0.113.7", 31000, Protocol::Tcp, &["10.244.1.5:8080"]),
            ]
        );
        // `allocateLoadBalancerNodePorts: false`: no nodePort, so no node port frontend.
        let without = node_port_service("LoadBalancer", &[("http", 80, "TCP", None)]);
        assert_eq!(service_frontends_on(&without, &slices, node_a()).len(), 1);
        // A nodePort left on a Service changed back to ClusterIP is not served.
        let stale = node_port_service("ClusterIP", &[("http", 80, "TCP", Some(31000))]);
        assert_eq!(service_frontends_on(&stale, &slices, node_a()).len(), 1);
        let mut headless = node_port_service("NodePort", &[("http", 80, "TCP", Some(31000))]);
        headless.spec.as_mut().expect("spec").cluster_ip = Some("None".into());
        headless.spec.as_mut().expect("spec").cluster_ips = Some(vec!["None".into()]);
        assert_eq!(service_frontends_on(&headless, &slices, node_a()), vec![]);
    }

    #[test]
    fn external_traffic_policy_local_narrows_node_port_frontends_only() {
        let mut svc = node_port_service("NodePort", &[("http", 80, "TCP", Some(30080))]);
        let endpoints = vec![
            on_node(ready("10.244.1.5"), "node-a"),
            on_node(ready("10.244.2.7"), "node-b"),
            on_node(terminating("10.244.1.6", true), "node-a"),
        ];
        let slices = [slice("web-1", "web", &[("http", 8080, "TCP")], endpoints)];
        let all = ["10.244.1.5:8080", "10.244.2.7:8080"];
        let node_port = |table: &[Service]| -> Vec<Vec<SocketAddrV4>> {
            table.iter().filter(|s| s.port == 30080).map(|s| s.backends.clone()).collect()
        };
        svc.spec.as_mut().expect("spec").external_traffic_policy = Some("Cluster".into());
        let cluster = service_frontends_on(&svc, &slices, node_a());
        assert_eq!(node_port(&cluster), vec![vec![addr(all[0]), addr(all[1])]; 2], "Cluster: every endpoint");

        svc.spec.as_mut().expect("spec").external_traffic_policy = Some("Local".into());
        let local = service_frontends_on(&svc, &slices, node_a());
        assert_eq!(local[0], frontend("10.96.0.20", 80, Protocol::Tcp, &all), "the ClusterIP is not affected");
        assert_eq!(node_port(&local), vec![vec![addr("10.244.1.5:8080")]; 2], "Local: this node's endpoints");

        let elsewhere = ThisNode { name: Some("node-c"), addresses: &NODE_ADDRESSES };
        let none_here = service_frontends_on(&svc, &slices, elsewhere);
        assert_eq!(node_port(&none_here), vec![Vec::<SocketAddrV4>::new(); 2], "no local endpoint: no backends");
        assert_eq!(none_here[0].backends.len(), 2, "while the ClusterIP keeps them all");

        let unnamed = ThisNode { name: None, addresses: &NODE_ADDRESSES };
        assert_eq!(
            node_port(&service_frontends_on(&svc, &slices, unnamed)),
            vec![vec![addr(all[0]), addr(all[1])]; 2],
            "a proxy that does not know its node applies no locality"
        );

        // Local with only a draining local endpoint: it serves, not the ready remote one.
        let draining = [slice(
            "web-1",
            "web",
            &[("http", 8080, "TCP")],
            vec![on_node(terminating("10.244.1.6", true), "node-a"), on_node(ready("10.244.2.7"), "node-b")],
        )];
        assert_eq!(node_port(&service_frontends_on(&svc, &draining, node_a())), vec![vec![addr("10.244.1.6:8080")]; 2]);

        // Both policies Local: each frontend kind follows its own.
        svc.spec.as_mut().expect("spec").internal_traffic_policy = Some("Local".into());
        let both = service_frontends_on(&svc, &slices, node_a());
        assert_eq!(both[0].backends, vec![addr("10.244.1.5:8080")]);
    }

    #[test]
    fn node_addresses_are_the_ipv4_internal_and_external_ones() {
        use k8s_openapi::api::core::v1::{NodeAddress, NodeStatus};
        let address = |type_: &str, address: &str| NodeAddress { type_: type_.into(), address: address.into() };
        let node = Node {
            status: Some(NodeStatus {
                addresses: Some(vec![
                    address("Hostname", "node-a"),
                    address("InternalIP", "192.168.77.1"),
                    address("InternalIP", "fd00::1"),
                    address("ExternalIP", "203.0.113.7"),
                    address("InternalDNS", "node-a.local"),
                    address("ExternalIP", "192.168.77.1"),
                ]),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(node_addresses(&node), NODE_ADDRESSES.to_vec());
        assert_eq!(node_addresses(&Node::default()), Vec::<Ipv4Addr>::new());
    }

    #[test]
    fn node_pod_cidrs_are_the_ipv4_ones() {
        use k8s_openapi::api::core::v1::NodeSpec;
        let node = Node {
            spec: Some(NodeSpec {
                pod_cidr: Some("10.244.1.0/24".into()),
                pod_cidrs: Some(vec!["fd00:1::/64".into(), "10.244.1.0/24".into()]),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(node_pod_cidrs(&node), ["10.244.1.0/24".parse::<Cidr>().expect("cidr")]);
        assert_eq!(node_pod_cidrs(&Node::default()), Vec::<Cidr>::new());
    }

    #[test]
    fn table_holds_node_port_frontends_in_frontend_order() {
        let services = [
            node_port_service("NodePort", &[("http", 80, "TCP", Some(30080))]),
            kube_service("api", "10.96.0.1", &[("", 443, "TCP")]),
        ];
        let slices = [slice("web-1", "web", &[("http", 8080, "TCP")], vec![ready("10.244.1.5")])];
        let table = desired_table(&services, &slices, node_a());
        let frontends: Vec<String> = table.iter().map(ToString::to_string).collect();
        assert_eq!(
            frontends,
            ["10.96.0.1:443/TCP", "10.96.0.20:80/TCP", "192.168.77.1:30080/TCP", "203.0.113.7:30080/TCP"]
        );
    }
}
