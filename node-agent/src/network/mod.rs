//! The node's pod network outside the pods: the CNI configuration and plugin the container
//! runtime uses to wire pods ([`cni`]), and the routes to the other nodes' pods ([`routes`],
//! through [`netlink`]). [`run`] follows the Node objects and keeps both in step; nothing else in
//! the node agent writes CNI files or the project's routes.
//!
//! Per-pod wiring (veth, /32 route, address) is the CNI plugin's job (`cni-plugin` crate).

pub mod cni;
pub mod netlink;
pub mod routes;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use kube::runtime::{WatchStreamExt as _, watcher};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use netlink::NetlinkRouteTable;
pub use routes::{Ipv4Net, PeerNode, Route, RouteChanges, RouteError, RouteKind, RouteTable, reconcile};

/// How often the routes and files are re-checked even without a Node event (repairs drift).
const RESYNC: Duration = Duration::from_secs(60);

/// Where the CNI files go; see [`cni`].
#[derive(Clone, Debug)]
pub struct NetworkConfig {
    /// The runtime's CNI configuration directory (usually `/etc/cni/net.d`).
    pub cni_conf_dir: PathBuf,
    /// The runtime's CNI binary directory (usually `/opt/cni/bin`).
    pub cni_bin_dir: PathBuf,
    /// The `keelson` plugin binary to install; `None` when it is installed by other means.
    pub plugin_path: Option<PathBuf>,
    /// MTU written into the CNI configuration; `None` lets the plugin choose.
    pub mtu: Option<u32>,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            cni_conf_dir: PathBuf::from("/etc/cni/net.d"),
            cni_bin_dir: PathBuf::from("/opt/cni/bin"),
            plugin_path: None,
            mtu: None,
        }
    }
}

/// Errors of the network module.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error(transparent)]
    Cni(#[from] cni::CniError),
    #[error(transparent)]
    Route(#[from] RouteError),
}

/// A Node's pod CIDR (first IPv4 one of `spec.podCIDRs`, else `spec.podCIDR`).
pub fn pod_cidr(node: &Node) -> Option<Ipv4Net> {
    let spec = node.spec.as_ref()?;
    let all = spec.pod_cidrs.iter().flatten().chain(spec.pod_cidr.iter());
    all.filter_map(|c| c.parse::<Ipv4Net>().ok()).next()
}

/// A Node's first IPv4 `InternalIP`.
pub fn internal_ip(node: &Node) -> Option<Ipv4Addr> {
    let addresses = node.status.as_ref()?.addresses.as_ref()?;
    addresses.iter().filter(|a| a.type_ == "InternalIP").find_map(|a| a.address.parse().ok())
}

/// The peers a node routes to: every Node except `self_name` that has both a podCIDR and an
/// InternalIP (a Node without one of them is not routable yet).
pub fn peers_from_nodes<'a>(nodes: impl IntoIterator<Item = &'a Node>, self_name: &str) -> Vec<PeerNode> {
    nodes
        .into_iter()
        .filter_map(|node| {
            let name = node.metadata.name.as_deref()?;
            if name == self_name {
                return None;
            }
            Some(PeerNode { name: name.to_owned(), pod_cidr: pod_cidr(node)?, address: internal_ip(node)? })
        })
        .collect()
}

/// The network state of one node: the Nodes it knows and what it last applied.
pub struct Network<T: RouteTable> {
    node_name: String,
    cfg: NetworkConfig,
    table: T,
    nodes: BTreeMap<String, Node>,
    plugin_installed: bool,
}

impl<T: RouteTable> Network<T> {
    pub fn new(node_name: &str, cfg: NetworkConfig, table: T) -> Self {
        Self { node_name: node_name.to_owned(), cfg, table, nodes: BTreeMap::new(), plugin_installed: false }
    }

    /// Replaces the whole set of known Nodes (after a list).
    pub fn set_nodes(&mut self, nodes: impl IntoIterator<Item = Node>) {
        self.nodes = nodes.into_iter().filter_map(|n| Some((n.metadata.name.clone()?, n))).collect();
    }

    /// Adds or updates one Node.
    pub fn upsert(&mut self, node: Node) {
        if let Some(name) = node.metadata.name.clone() {
            self.nodes.insert(name, node);
        }
    }

    /// Forgets one Node.
    pub fn remove(&mut self, name: &str) {
        self.nodes.remove(name);
    }

    /// The route table (tests inspect the fake through it).
    pub fn table(&self) -> &T {
        &self.table
    }

    /// Applies the known state: installs the plugin (once per process, unless it failed), writes
    /// the CNI configuration once this node has a podCIDR, and reconciles the routes. Every step
    /// is attempted; the first error is returned.
    pub async fn apply(&mut self) -> Result<RouteChanges, NetworkError> {
        let mut first: Option<NetworkError> = None;
        if !self.plugin_installed
            && let Some(plugin) = &self.cfg.plugin_path
        {
            match cni::install_plugin(plugin, &self.cfg.cni_bin_dir) {
                Ok(changed) => {
                    self.plugin_installed = true;
                    if changed {
                        info!(path = %self.cfg.cni_bin_dir.join(cni::PLUGIN_NAME).display(), "installed CNI plugin");
                    }
                }
                Err(e) => first = Some(e.into()),
            }
        }
        if let Some(cidr) = self.nodes.get(&self.node_name).and_then(pod_cidr) {
            match cni::write_conflist(&self.cfg.cni_conf_dir, &cidr.to_string(), self.cfg.mtu) {
                Ok(true) => info!(pod_cidr = %cidr, "wrote CNI configuration"),
                Ok(false) => {}
                Err(e) => {
                    first.get_or_insert(e.into());
                }
            }
        }
        let peers = peers_from_nodes(self.nodes.values(), &self.node_name);
        let routes = reconcile(&mut self.table, &peers).await;
        match (first, routes) {
            (Some(e), _) => Err(e),
            (None, Err(e)) => Err(e.into()),
            (None, Ok(changes)) => {
                if !changes.is_empty() {
                    info!(
                        added = changes.added.len(),
                        replaced = changes.replaced.len(),
                        deleted = changes.deleted.len(),
                        "reconciled pod routes"
                    );
                }
                Ok(changes)
            }
        }
    }
}

/// Follows the Node objects and keeps this node's CNI files and pod routes in step until
/// `cancel` fires. Opens its rtnetlink socket in the calling thread's network namespace.
pub async fn run(
    client: kube::Client,
    node_name: &str,
    cfg: NetworkConfig,
    cancel: CancellationToken,
) -> Result<(), NetworkError> {
    let table = NetlinkRouteTable::connect()?;
    let mut net = Network::new(node_name, cfg, table);
    let api: Api<Node> = Api::all(client);
    let mut events = watcher(api, watcher::Config::default()).default_backoff().boxed();
    // Nodes of a re-list in progress; `None` outside of one.
    let mut relist: Option<Vec<Node>> = None;
    let mut synced = false;
    let mut resync = tokio::time::interval(RESYNC);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let changed = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = resync.tick() => synced,
            ev = events.next() => match ev {
                None => return Ok(()),
                Some(Ok(watcher::Event::Init)) => { relist = Some(Vec::new()); false }
                Some(Ok(watcher::Event::InitApply(node))) => {
                    relist.get_or_insert_with(Vec::new).push(node);
                    false
                }
                Some(Ok(watcher::Event::InitDone)) => {
                    net.set_nodes(relist.take().unwrap_or_default());
                    synced = true;
                    true
                }
                Some(Ok(watcher::Event::Apply(node))) => { net.upsert(node); synced }
                Some(Ok(watcher::Event::Delete(node))) => {
                    if let Some(name) = node.metadata.name.as_deref() {
                        net.remove(name);
                    }
                    synced
                }
                Some(Err(error)) => { warn!(%error, "node watch failed; retrying"); false }
            },
        };
        // Before the first full list, applying would delete the routes of nodes not seen yet.
        if changed && let Err(error) = net.apply().await {
            warn!(%error, "network apply failed; retrying at the next event or resync");
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{NodeAddress, NodeSpec, NodeStatus};
    use kube::api::ObjectMeta;

    use super::routes::FakeRouteTable;
    use super::*;

    fn node(name: &str, cidr: Option<&str>, ip: Option<&str>) -> Node {
        Node {
            metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
            spec: Some(NodeSpec { pod_cidr: cidr.map(Into::into), ..Default::default() }),
            status: Some(NodeStatus {
                addresses: Some(
                    [
                        NodeAddress { type_: "Hostname".into(), address: name.into() },
                        NodeAddress { type_: "InternalIP".into(), address: ip.unwrap_or("").into() },
                    ]
                    .into_iter()
                    .filter(|a| !a.address.is_empty())
                    .collect(),
                ),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn peers_skip_self_and_unroutable_nodes() {
        let nodes = [
            node("a", Some("10.244.1.0/24"), Some("192.168.1.1")),
            node("b", Some("10.244.2.0/24"), Some("192.168.1.2")),
            node("c", None, Some("192.168.1.3")),
            node("d", Some("10.244.4.0/24"), None),
        ];
        let peers = peers_from_nodes(&nodes, "a");
        assert_eq!(
            peers,
            vec![PeerNode {
                name: "b".into(),
                pod_cidr: "10.244.2.0/24".parse().expect("cidr"),
                address: Ipv4Addr::new(192, 168, 1, 2)
            }]
        );
    }

    #[test]
    fn apply_writes_files_and_routes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let plugin = dir.path().join("keelson-src");
        std::fs::write(&plugin, b"plugin").expect("write plugin");
        let cfg = NetworkConfig {
            cni_conf_dir: dir.path().join("net.d"),
            cni_bin_dir: dir.path().join("bin"),
            plugin_path: Some(plugin),
            mtu: Some(1450),
        };
        let mut net = Network::new("a", cfg, FakeRouteTable::default());
        net.set_nodes([
            node("a", Some("10.244.1.0/24"), Some("192.168.1.1")),
            node("b", Some("10.244.2.0/24"), Some("192.168.1.2")),
        ]);
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        let changes = rt.block_on(net.apply()).expect("apply");
        assert_eq!(changes.added.len(), 3);
        let conf = std::fs::read_to_string(dir.path().join("net.d").join(cni::CONFLIST_NAME)).expect("conflist");
        assert!(conf.contains("10.244.1.0/24") && conf.contains("1450"));
        assert_eq!(std::fs::read(dir.path().join("bin/keelson")).expect("plugin"), b"plugin");
        net.remove("b");
        let changes = rt.block_on(net.apply()).expect("apply after delete");
        assert_eq!(changes.deleted.len(), 1);
        assert_eq!(net.table().own().len(), 2, "only the unreachable routes remain");
    }
}
