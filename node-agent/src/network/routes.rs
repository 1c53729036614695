//! Routes between nodes: `10.244.N.0/24 via <node N InternalIP>` for every other node, plus
//! `unreachable` routes for the pod and service networks at a higher metric so that nothing
//! addressed to the cluster leaves by the default route.
//!
//! Every route this module installs carries the protocol [`KEELSON_PROTO`]; [`reconcile`] only
//! ever lists, replaces or deletes routes with that marker, so routes of the machine, of the CNI
//! plugin (per-pod /32s) or of anyone else are never touched. The kernel is reached through the
//! [`RouteTable`] trait: [`super::netlink::NetlinkRouteTable`] in production, [`FakeRouteTable`]
//! in unit tests.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// `rtm_protocol` of the project's routes (user-defined range; `ip route` shows "250").
pub const KEELSON_PROTO: u8 = 0xfa;
/// Metric of the routes to other nodes' podCIDRs.
pub const POD_ROUTE_METRIC: u32 = 100;
/// Metric of the `unreachable` catch-all routes: higher, so lower priority than real routes.
pub const UNREACHABLE_METRIC: u32 = 4000;
/// The pod network; each node gets a /24 of it.
pub const POD_NETWORK: Ipv4Net = Ipv4Net { addr: Ipv4Addr::new(10, 244, 0, 0), prefix: 16 };
/// The service network.
pub const SERVICE_NETWORK: Ipv4Net = Ipv4Net { addr: Ipv4Addr::new(10, 96, 0, 0), prefix: 12 };

/// An IPv4 prefix, normalised (host bits zero).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ipv4Net {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Ipv4Net {
    /// The prefix containing `addr`, host bits cleared; `None` when `prefix > 32`.
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Option<Self> {
        if prefix > 32 {
            return None;
        }
        let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
        Some(Self { addr: Ipv4Addr::from(u32::from(addr) & mask), prefix })
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Ipv4Net {
    type Err = RouteError;
    fn from_str(s: &str) -> Result<Self, RouteError> {
        let bad = || RouteError::BadCidr(s.to_owned());
        let (addr, prefix) = s.split_once('/').ok_or_else(bad)?;
        Self::new(addr.parse().map_err(|_| bad())?, prefix.parse().map_err(|_| bad())?).ok_or_else(bad)
    }
}

/// What a project route does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RouteKind {
    /// Forward via this gateway (another node's address).
    Via(Ipv4Addr),
    /// Drop with "network unreachable".
    Unreachable,
}

/// One route owned by the project (main table, protocol [`KEELSON_PROTO`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Route {
    pub dst: Ipv4Net,
    pub kind: RouteKind,
    pub metric: u32,
}

impl Route {
    pub fn via(dst: Ipv4Net, gateway: Ipv4Addr) -> Self {
        Self { dst, kind: RouteKind::Via(gateway), metric: POD_ROUTE_METRIC }
    }
    pub fn unreachable(dst: Ipv4Net) -> Self {
        Self { dst, kind: RouteKind::Unreachable, metric: UNREACHABLE_METRIC }
    }
    /// What the kernel uses to tell routes apart in one table (destination and metric); two
    /// routes with the same key are one route, and replacing it changes the rest.
    pub fn key(&self) -> (Ipv4Net, u32) {
        (self.dst, self.metric)
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            RouteKind::Via(gw) => write!(f, "{} via {} metric {}", self.dst, gw, self.metric),
            RouteKind::Unreachable => write!(f, "unreachable {} metric {}", self.dst, self.metric),
        }
    }
}

/// Another node as the route reconciler sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerNode {
    pub name: String,
    pub pod_cidr: Ipv4Net,
    pub address: Ipv4Addr,
}

/// Errors of the route table and the reconciler.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("open rtnetlink socket")]
    Connect(#[source] std::io::Error),
    #[error("{op} route {route}")]
    Netlink {
        op: &'static str,
        route: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("list routes")]
    List(#[source] rtnetlink::Error),
    #[error("not a CIDR: {0:?}")]
    BadCidr(String),
    #[error("fake route table: {0}")]
    Fake(String),
}

/// The project's routes in one network namespace. Implementations only ever see and change
/// routes marked with [`KEELSON_PROTO`] in the main table.
pub trait RouteTable {
    /// The project's IPv4 routes currently installed.
    fn list(&mut self) -> impl Future<Output = Result<Vec<Route>, RouteError>> + Send;
    /// Adds a route; fails if one with the same key exists.
    fn add(&mut self, route: &Route) -> impl Future<Output = Result<(), RouteError>> + Send;
    /// Adds or replaces the route with the same key.
    fn replace(&mut self, route: &Route) -> impl Future<Output = Result<(), RouteError>> + Send;
    /// Deletes the route.
    fn delete(&mut self, route: &Route) -> impl Future<Output = Result<(), RouteError>> + Send;
}

/// The routes a node wants: one per peer podCIDR plus the two unreachable catch-alls. Peers with
/// a duplicate podCIDR keep the first by name (a broken IPAM must not flap the route).
pub fn desired_routes(peers: &[PeerNode]) -> Vec<Route> {
    let mut sorted: Vec<&PeerNode> = peers.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut by_key: BTreeMap<(Ipv4Net, u32), Route> = BTreeMap::new();
    for peer in sorted {
        let route = Route::via(peer.pod_cidr, peer.address);
        by_key.entry(route.key()).or_insert(route);
    }
    for net in [POD_NETWORK, SERVICE_NETWORK] {
        let route = Route::unreachable(net);
        by_key.insert(route.key(), route);
    }
    by_key.into_values().collect()
}

/// What one reconcile pass changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteChanges {
    pub added: Vec<Route>,
    pub replaced: Vec<Route>,
    pub deleted: Vec<Route>,
}

impl RouteChanges {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.replaced.is_empty() && self.deleted.is_empty()
    }
}

/// The changes turning `present` into `desired`, keyed by [`Route::key`].
pub fn diff(present: &[Route], desired: &[Route]) -> RouteChanges {
    let present: BTreeMap<_, _> = present.iter().map(|r| (r.key(), *r)).collect();
    let desired: BTreeMap<_, _> = desired.iter().map(|r| (r.key(), *r)).collect();
    let mut changes = RouteChanges::default();
    for (key, want) in &desired {
        match present.get(key) {
            None => changes.added.push(*want),
            Some(have) if have != want => changes.replaced.push(*want),
            Some(_) => {}
        }
    }
    changes.deleted = present.iter().filter(|(k, _)| !desired.contains_key(*k)).map(|(_, r)| *r).collect();
    changes
}

/// Makes the project's routes in `table` match the routes wanted for `peers`: adds missing ones,
/// replaces changed ones, deletes stale ones (deleted nodes). Every change is attempted; the first
/// error is returned after the others were tried.
pub async fn reconcile<T: RouteTable>(table: &mut T, peers: &[PeerNode]) -> Result<RouteChanges, RouteError> {
    let present = table.list().await?;
    let changes = diff(&present, &desired_routes(peers));
    let mut first_error = None;
    // Delete first: a node re-added under a new metric must not briefly have two routes.
    for route in &changes.deleted {
        if let Err(e) = table.delete(route).await {
            first_error.get_or_insert(e);
        }
    }
    for route in &changes.added {
        if let Err(e) = table.add(route).await {
            first_error.get_or_insert(e);
        }
    }
    for route in &changes.replaced {
        if let Err(e) = table.replace(route).await {
            first_error.get_or_insert(e);
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(changes),
    }
}

/// A route as the fake table stores it: the project's routes and foreign ones side by side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FakeEntry {
    pub route: Route,
    pub protocol: u8,
}

/// An in-memory route table for unit tests. It holds foreign routes (another protocol) too, so
/// tests can check that they are never listed or changed.
#[derive(Clone, Debug, Default)]
pub struct FakeRouteTable {
    pub entries: Vec<FakeEntry>,
    /// Log of calls, e.g. `"add 10.244.2.0/24 via 192.168.1.2 metric 100"`.
    pub calls: Vec<String>,
}

impl FakeRouteTable {
    /// Adds a route that is not the project's (e.g. the machine's own).
    pub fn with_foreign(mut self, route: Route, protocol: u8) -> Self {
        self.entries.push(FakeEntry { route, protocol });
        self
    }

    fn position(&self, route: &Route) -> Option<usize> {
        self.entries.iter().position(|e| e.protocol == KEELSON_PROTO && e.route.key() == route.key())
    }

    /// The project's routes, sorted.
    pub fn own(&self) -> Vec<Route> {
        let mut own: Vec<Route> =
            self.entries.iter().filter(|e| e.protocol == KEELSON_PROTO).map(|e| e.route).collect();
        own.sort();
        own
    }
}

impl RouteTable for FakeRouteTable {
    async fn list(&mut self) -> Result<Vec<Route>, RouteError> {
        self.calls.push("list".into());
        Ok(self.own())
    }

    async fn add(&mut self, route: &Route) -> Result<(), RouteError> {
        self.calls.push(format!("add {route}"));
        // Like the kernel: the key is shared with routes of other protocols too.
        if self.entries.iter().any(|e| e.route.key() == route.key()) {
            return Err(RouteError::Fake(format!("route exists: {route}")));
        }
        self.entries.push(FakeEntry { route: *route, protocol: KEELSON_PROTO });
        Ok(())
    }

    async fn replace(&mut self, route: &Route) -> Result<(), RouteError> {
        self.calls.push(format!("replace {route}"));
        match self.position(route) {
            Some(i) => self.entries[i].route = *route,
            None => self.entries.push(FakeEntry { route: *route, protocol: KEELSON_PROTO }),
        }
        Ok(())
    }

    async fn delete(&mut self, route: &Route) -> Result<(), RouteError> {
        self.calls.push(format!("delete {route}"));
        match self.position(route) {
            Some(i) => {
                self.entries.remove(i);
                Ok(())
            }
            None => Err(RouteError::Fake(format!("no such route: {route}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().expect("valid CIDR")
    }

    fn peer(name: &str, cidr: &str, addr: [u8; 4]) -> PeerNode {
        PeerNode { name: name.into(), pod_cidr: net(cidr), address: Ipv4Addr::from(addr) }
    }

    fn run<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().expect("runtime").block_on(f)
    }

    #[test]
    fn cidr_parsing_normalises_and_rejects_garbage() {
        assert_eq!(net("10.244.1.7/24"), Ipv4Net { addr: Ipv4Addr::new(10, 244, 1, 0), prefix: 24 });
        assert_eq!(net("0.0.0.0/0").to_string(), "0.0.0.0/0");
        assert_eq!(net("10.1.2.3/32").to_string(), "10.1.2.3/32");
        for bad in ["10.244.1.0", "10.244.1.0/33", "x/24", "10.244.1.0/x", "fd00::/64"] {
            assert!(bad.parse::<Ipv4Net>().is_err(), "{bad} must not parse");
        }
    }

    #[test]
    fn desired_has_peers_and_unreachables_with_lower_priority() {
        let routes = desired_routes(&[peer("b", "10.244.2.0/24", [192, 168, 1, 2])]);
        assert_eq!(routes.len(), 3);
        assert!(routes.contains(&Route::via(net("10.244.2.0/24"), Ipv4Addr::new(192, 168, 1, 2))));
        let unreach: Vec<_> = routes.iter().filter(|r| r.kind == RouteKind::Unreachable).collect();
        assert_eq!(unreach.len(), 2);
        assert!(unreach.iter().any(|r| r.dst == POD_NETWORK));
        assert!(unreach.iter().any(|r| r.dst == SERVICE_NETWORK));
        assert!(unreach.iter().all(|r| r.metric > POD_ROUTE_METRIC));
    }

    #[test]
    fn duplicate_pod_cidr_keeps_the_first_node_by_name() {
        let routes = desired_routes(&[
            peer("z", "10.244.2.0/24", [192, 168, 1, 9]),
            peer("b", "10.244.2.0/24", [192, 168, 1, 2]),
        ]);
        let via: Vec<_> = routes.iter().filter(|r| matches!(r.kind, RouteKind::Via(_))).collect();
        assert_eq!(via, vec![&Route::via(net("10.244.2.0/24"), Ipv4Addr::new(192, 168, 1, 2))]);
    }

    #[test]
    fn reconcile_adds_then_is_idempotent() {
        let mut table = FakeRouteTable::default();
        let peers = [peer("b", "10.244.2.0/24", [192, 168, 1, 2]), peer("c", "10.244.3.0/24", [192, 168, 1, 3])];
        let changes = run(reconcile(&mut table, &peers)).expect("reconcile");
        assert_eq!(changes.added.len(), 4);
        assert!(changes.replaced.is_empty() && changes.deleted.is_empty());
        assert_eq!(table.own(), desired_routes(&peers));
        table.calls.clear();
        let again = run(reconcile(&mut table, &peers)).expect("reconcile again");
        assert!(again.is_empty());
        assert_eq!(table.calls, vec!["list".to_string()], "a converged table sees no writes");
    }

    #[test]
    fn reconcile_replaces_a_changed_address_and_deletes_a_removed_node() {
        let mut table = FakeRouteTable::default();
        let b = peer("b", "10.244.2.0/24", [192, 168, 1, 2]);
        let c = peer("c", "10.244.3.0/24", [192, 168, 1, 3]);
        run(reconcile(&mut table, &[b.clone(), c.clone()])).expect("initial");
        let moved = peer("b", "10.244.2.0/24", [192, 168, 1, 22]);
        let changes = run(reconcile(&mut table, &[moved])).expect("after change");
        assert_eq!(changes.replaced, vec![Route::via(b.pod_cidr, Ipv4Addr::new(192, 168, 1, 22))]);
        assert_eq!(changes.deleted, vec![Route::via(c.pod_cidr, c.address)]);
        assert!(changes.added.is_empty());
        assert!(table.calls.contains(&"delete 10.244.3.0/24 via 192.168.1.3 metric 100".to_string()));
        assert!(table.calls.contains(&"replace 10.244.2.0/24 via 192.168.1.22 metric 100".to_string()));
        assert_eq!(table.own().len(), 3);
    }

    #[test]
    fn reconcile_never_touches_foreign_routes() {
        // The machine's default route, a CNI /32 to a local pod, and a foreign route to the same
        // destination as one of ours but another metric.
        let default = Route { dst: net("0.0.0.0/0"), kind: RouteKind::Via(Ipv4Addr::new(192, 168, 1, 254)), metric: 0 };
        let pod = Route { dst: net("10.244.1.2/32"), kind: RouteKind::Via(Ipv4Addr::new(169, 254, 1, 1)), metric: 0 };
        let other = Route { dst: net("10.244.3.0/24"), kind: RouteKind::Unreachable, metric: 7 };
        let mut table = FakeRouteTable::default()
            .with_foreign(default, 4 /* static */)
            .with_foreign(pod, 3 /* boot */)
            .with_foreign(other, 4);
        // A stale own route of a deleted node.
        run(table.add(&Route::via(net("10.244.9.0/24"), Ipv4Addr::new(192, 168, 1, 9)))).expect("seed stale route");
        let peers = [peer("c", "10.244.3.0/24", [192, 168, 1, 3])];
        let changes = run(reconcile(&mut table, &peers)).expect("reconcile");
        assert_eq!(changes.deleted, vec![Route::via(net("10.244.9.0/24"), Ipv4Addr::new(192, 168, 1, 9))]);
        let foreign: Vec<_> = table.entries.iter().filter(|e| e.protocol != KEELSON_PROTO).map(|e| e.route).collect();
        assert_eq!(foreign, vec![default, pod, other], "foreign routes are untouched");
        assert_eq!(table.own(), desired_routes(&peers));
        for call in &table.calls {
            assert!(!call.contains("0.0.0.0/0") && !call.contains("10.244.1.2/32"), "touched foreign: {call}");
        }
    }

    #[test]
    fn reconcile_reports_the_first_error_but_tries_everything() {
        struct Failing(FakeRouteTable);
        impl RouteTable for Failing {
            async fn list(&mut self) -> Result<Vec<Route>, RouteError> {
                self.0.list().await
            }
            async fn add(&mut self, route: &Route) -> Result<(), RouteError> {
                if route.dst == POD_NETWORK {
                    return Err(RouteError::Fake("boom".into()));
                }
                self.0.add(route).await
            }
            async fn replace(&mut self, route: &Route) -> Result<(), RouteError> {
                self.0.replace(route).await
            }
            async fn delete(&mut self, route: &Route) -> Result<(), RouteError> {
                self.0.delete(route).await
            }
        }
        let mut table = Failing(FakeRouteTable::default());
        let err =
            run(reconcile(&mut table, &[peer("b", "10.244.2.0/24", [192, 168, 1, 2])])).expect_err("one add fails");
        assert!(matches!(err, RouteError::Fake(_)));
        assert_eq!(table.0.own().len(), 2, "the other routes were still added");
    }
}
