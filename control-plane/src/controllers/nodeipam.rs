//! The nodeipam controller: gives each Node a pod range (`spec.podCIDR`, `spec.podCIDRs`) cut
//! from the cluster CIDR, as kube-controller-manager's range allocator does.
//!
//! The set of used ranges lives in memory only. It is rebuilt from the Nodes in the cache when
//! the controller starts (every Node's podCIDRs, including ranges set by hand), so a restart
//! neither loses nor repeats an allocation; the Node strategy makes podCIDRs immutable once set,
//! so a range once written belongs to its Node until the Node is deleted, when it is released.
//! Allocation happens under one mutex and the queue has one worker, so two Nodes can never be
//! handed the same range. Like upstream's `cidrset`, the next allocation starts after the last
//! one (wrapping around), so a released range is reused only after the others have been tried.
//! When the range is exhausted the Node gets a `CIDRNotAvailable` event and is retried when a
//! Node is deleted.

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{Value, json};
use tracing::{debug, info, warn};

use super::{Action, Controller, Ctx, Informers, Watch, key_of};
use crate::registry::nodes;
use crate::server::errors::ApiError;
use crate::server::internal::PatchType;

pub const NAME: &str = "nodeipam";

/// The cluster's pod network (`--cluster-cidr`).
pub const CLUSTER_CIDR: &str = "10.244.0.0/16";
/// The prefix length of each Node's range (`--node-cidr-mask-size`).
pub const NODE_MASK: u8 = 24;

/// How often a Node that could not get a range is looked at again (besides Node deletions).
const EXHAUSTED_RETRY: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CidrError {
    #[error("invalid CIDR {0:?}")]
    Parse(String),
    #[error("CIDR {cidr} is outside the cluster CIDR {cluster}")]
    OutOfRange { cidr: String, cluster: String },
    #[error("node mask /{node} must be between the cluster mask /{cluster} and /32")]
    Mask { cluster: u8, node: u8 },
}

/// The ranges of one IPv4 cluster CIDR, each owned by the Nodes that hold it.
#[derive(Debug)]
pub struct CidrSet {
    base: u32,
    cluster_bits: u8,
    node_bits: u8,
    count: u32,
    /// Where the next allocation starts looking.
    next: u32,
    /// Range index → Nodes holding it (more than one only when set by hand that way).
    owners: HashMap<u32, BTreeSet<String>>,
    /// Node → the range indices it holds.
    by_node: HashMap<String, Vec<u32>>,
}

fn parse_v4_cidr(s: &str) -> Result<(u32, u8), CidrError> {
    let err = || CidrError::Parse(s.to_string());
    let (ip, bits) = s.split_once('/').ok_or_else(err)?;
    let ip: Ipv4Addr = ip.parse().map_err(|_| err())?;
    let bits: u8 = bits.parse().map_err(|_| err())?;
    if bits > 32 {
        return Err(err());
    }
    let mask = if bits == 0 { 0 } else { u32::MAX << (32 - bits) };
    Ok((u32::from(ip) & mask, bits))
}

impl CidrSet {
    pub fn new(cluster: &str, node_bits: u8) -> Result<CidrSet, CidrError> {
        let (base, cluster_bits) = parse_v4_cidr(cluster)?;
        if node_bits < cluster_bits || node_bits > 32 || node_bits - cluster_bits > 24 {
            return Err(CidrError::Mask { cluster: cluster_bits, node: node_bits });
        }
        let count = 1u32 << (node_bits - cluster_bits);
        Ok(CidrSet { base, cluster_bits, node_bits, count, next: 0, owners: HashMap::new(), by_node: HashMap::new() })
    }

    fn cidr(&self, index: u32) -> String {
        let ip = Ipv4Addr::from(self.base + (index << (32 - u32::from(self.node_bits))));
        format!("{ip}/{}", self.node_bits)
    }

    fn cluster(&self) -> String {
        format!("{}/{}", Ipv4Addr::from(self.base), self.cluster_bits)
    }

    /// The range indices that `cidr` overlaps.
    fn indices(&self, cidr: &str) -> Result<std::ops::RangeInclusive<u32>, CidrError> {
        let (ip, bits) = parse_v4_cidr(cidr)?;
        let out = || CidrError::OutOfRange { cidr: cidr.to_string(), cluster: self.cluster() };
        let size = 1u64 << (32 - u32::from(bits));
        let (start, end) = (u64::from(ip), u64::from(ip) + size - 1);
        let (lo, hi) =
            (u64::from(self.base), u64::from(self.base) + (u64::from(self.count) << (32 - self.node_bits)) - 1);
        if end < lo || start > hi {
            return Err(out());
        }
        let shift = 32 - u32::from(self.node_bits);
        let first = ((start.max(lo) - lo) >> shift) as u32;
        let last = ((end.min(hi) - lo) >> shift) as u32;
        Ok(first..=last)
    }

    /// The ranges `node` holds now.
    pub fn of(&self, node: &str) -> Vec<String> {
        self.by_node.get(node).map(|ix| ix.iter().map(|&i| self.cidr(i)).collect()).unwrap_or_default()
    }

    /// Records that `node` holds `cidrs` (replacing what it held before).
    pub fn occupy(&mut self, node: &str, cidrs: &[&str]) -> Result<(), CidrError> {
        let mut held = Vec::new();
        let mut result = Ok(());
        for c in cidrs {
            match self.indices(c) {
                Ok(r) => held.extend(r),
                Err(e) => result = Err(e),
            }
        }
        self.release(node);
        for &i in &held {
            self.owners.entry(i).or_default().insert(node.to_string());
        }
        if !held.is_empty() {
            self.by_node.insert(node.to_string(), held);
        }
        result
    }

    /// Gives `node` the next free range, or `None` when every range is taken.
    pub fn allocate(&mut self, node: &str) -> Option<String> {
        let found = (0..self.count).map(|k| (self.next + k) % self.count).find(|i| !self.owners.contains_key(i))?;
        self.next = (found + 1) % self.count;
        self.owners.entry(found).or_default().insert(node.to_string());
        self.by_node.insert(node.to_string(), vec![found]);
        Some(self.cidr(found))
    }

    /// Frees what `node` holds.
    pub fn release(&mut self, node: &str) {
        for i in self.by_node.remove(node).unwrap_or_default() {
            if let Some(set) = self.owners.get_mut(&i) {
                set.remove(node);
                if set.is_empty() {
                    self.owners.remove(&i);
                }
            }
        }
    }

    pub fn used(&self) -> usize {
        self.owners.len()
    }
}

fn pod_cidrs(node: &Value) -> Vec<&str> {
    let spec = node.get("spec").unwrap_or(&Value::Null);
    let list: Vec<&str> = spec
        .get("podCIDRs")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).filter(|s| !s.is_empty()).collect())
        .unwrap_or_default();
    if !list.is_empty() {
        return list;
    }
    spec.get("podCIDR").and_then(Value::as_str).filter(|s| !s.is_empty()).into_iter().collect()
}

pub struct NodeIpamController {
    /// The used set and the leadership term (informers) it was built in; rebuilt from the cache
    /// at the first reconcile of each term, since another replica may have led meanwhile.
    set: Mutex<Option<(Weak<Informers>, CidrSet)>>,
}

impl Default for NodeIpamController {
    fn default() -> Self {
        NodeIpamController { set: Mutex::new(None) }
    }
}

impl NodeIpamController {
    /// Runs `f` on the used set, building it from every cached Node first if needed.
    fn with_set<R>(&self, ctx: &Ctx, f: impl FnOnce(&mut CidrSet) -> R) -> R {
        let mut guard = self.set.lock().expect("cidr set lock");
        let term = Arc::downgrade(&ctx.informers);
        if guard.as_ref().is_some_and(|(t, _)| !Weak::ptr_eq(t, &term)) {
            *guard = None;
        }
        let (_, set) = guard.get_or_insert_with(|| {
            let mut set = CidrSet::new(CLUSTER_CIDR, NODE_MASK).expect("the built-in cluster CIDR is valid");
            for node in ctx.informers.get(&nodes::RESOURCE).list("", |_| true) {
                let name = key_of(&node);
                let cidrs = pod_cidrs(&node);
                if cidrs.is_empty() {
                    continue;
                }
                if let Err(error) = set.occupy(&name, &cidrs) {
                    warn!(%error, node = %name, "node podCIDR not in the cluster CIDR");
                }
            }
            info!(used = set.used(), cluster = CLUSTER_CIDR, "node CIDR allocator started");
            (term, set)
        });
        f(set)
    }

    async fn sync(&self, ctx: &Ctx, name: &str) -> Result<Action, ApiError> {
        let informer = ctx.informers.get(&nodes::RESOURCE);
        informer.synced().await;
        let Some(node) = informer.get_key(name) else {
            self.with_set(ctx, |set| set.release(name));
            return Ok(Action::Done);
        };
        let existing = pod_cidrs(&node);
        if !existing.is_empty() {
            // Already has a range (ours, or set by hand): it is used as long as the Node lives.
            self.with_set(ctx, |set| {
                if set.of(name).iter().map(String::as_str).ne(existing.iter().copied())
                    && let Err(error) = set.occupy(name, &existing)
                {
                    warn!(%error, node = %name, "node podCIDR not in the cluster CIDR");
                }
            });
            return Ok(Action::Done);
        }
        // A range reserved earlier whose write the cache has not shown yet is used again.
        let cidr = self.with_set(ctx, |set| set.of(name).into_iter().next().or_else(|| set.allocate(name)));
        let Some(cidr) = cidr else {
            warn!(node = %name, cluster = CLUSTER_CIDR, "no pod CIDR left for node");
            let message = format!("Node {name} status is now: CIDRNotAvailable");
            ctx.events.record(&node, "Node", "v1", "Normal", "CIDRNotAvailable", &message).await;
            return Ok(Action::RequeueAfter(EXHAUSTED_RETRY));
        };
        let patch = json!({"spec": {"podCIDR": cidr, "podCIDRs": [cidr]}});
        match ctx.client.patch(&nodes::RESOURCE, "", name, PatchType::Merge, &patch, false).await {
            Ok(_) => {
                info!(node = %name, %cidr, "set node podCIDR");
                Ok(Action::Done)
            }
            Err(e) if e.code == 404 || e.code == 422 => {
                // Gone, or it got another range meanwhile (podCIDRs is immutable once set):
                // give ours back; the Node's next change brings its real range.
                debug!(node = %name, %cidr, error = %e, "node podCIDR not set; releasing");
                self.with_set(ctx, |set| set.release(name));
                Ok(Action::Done)
            }
            // Keep the reservation: the retry writes the same range.
            Err(e) => Err(e),
        }
    }
}

impl Controller for NodeIpamController {
    fn name(&self) -> &'static str {
        NAME
    }

    fn watches(&self) -> Vec<Watch> {
        vec![Watch::mapped(&nodes::RESOURCE, |ctx, change| {
            let name = key_of(change.object());
            if change.new.is_some() {
                return vec![name];
            }
            // A deletion frees a range: Nodes still waiting for one get another chance. The
            // deleted Node comes first, and the single worker keeps that order.
            let mut keys = vec![name];
            let waiting = ctx.informers.get(&nodes::RESOURCE).list("", |n| pod_cidrs(n).is_empty());
            keys.extend(waiting.iter().map(|n| key_of(n)));
            keys
        })]
    }

    fn reconcile<'a>(&'a self, ctx: &'a Ctx, key: &'a str) -> BoxFuture<'a, Result<Action, ApiError>> {
        Box::pin(self.sync(ctx, key))
    }

    fn workers(&self) -> usize {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_distinct_ranges_in_order_and_wraps_to_released_ones() {
        let mut set = CidrSet::new("10.244.0.0/22", 24).expect("valid");
        assert_eq!(set.allocate("a").as_deref(), Some("10.244.0.0/24"));
        assert_eq!(set.allocate("b").as_deref(), Some("10.244.1.0/24"));
        set.occupy("manual", &["10.244.2.0/24"]).expect("in range");
        assert_eq!(set.allocate("c").as_deref(), Some("10.244.3.0/24"));
        // Full: nothing left.
        assert_eq!(set.allocate("d"), None);
        // A release makes the range available again (after wrapping around).
        set.release("a");
        assert_eq!(set.allocate("d").as_deref(), Some("10.244.0.0/24"));
        assert_eq!(set.allocate("e"), None);
        assert_eq!(set.of("d"), vec!["10.244.0.0/24".to_string()]);
        assert_eq!(set.used(), 4);
    }

    #[test]
    fn rotates_instead_of_reusing_a_just_released_range() {
        let mut set = CidrSet::new(CLUSTER_CIDR, NODE_MASK).expect("valid");
        assert_eq!(set.allocate("a").as_deref(), Some("10.244.0.0/24"));
        set.release("a");
        assert_eq!(set.allocate("b").as_deref(), Some("10.244.1.0/24"));
    }

    #[test]
    fn occupies_hand_set_ranges_of_any_size() {
        let mut set = CidrSet::new("10.244.0.0/22", 24).expect("valid");
        set.occupy("big", &["10.244.0.0/23"]).expect("in range");
        set.occupy("small", &["10.244.2.128/25"]).expect("in range");
        assert_eq!(set.used(), 3);
        assert_eq!(set.allocate("x").as_deref(), Some("10.244.3.0/24"));
        assert_eq!(
            set.occupy("far", &["192.168.0.0/24"]),
            Err(CidrError::OutOfRange { cidr: "192.168.0.0/24".into(), cluster: "10.244.0.0/22".into() })
        );
        // Two Nodes claiming one range: it stays used until both are gone.
        set.occupy("twin", &["10.244.3.0/24"]).expect("in range");
        set.release("x");
        assert_eq!(set.allocate("y"), None);
        set.release("twin");
        set.release("big");
        assert_eq!(set.allocate("y").as_deref(), Some("10.244.0.0/24"));
    }

    #[test]
    fn rejects_bad_input() {
        assert!(matches!(CidrSet::new("10.244.0.0/16", 8), Err(CidrError::Mask { .. })));
        assert!(matches!(CidrSet::new("nonsense", 24), Err(CidrError::Parse(_))));
        let set = CidrSet::new(CLUSTER_CIDR, NODE_MASK).expect("valid");
        assert_eq!(set.cidr(255), "10.244.255.0/24");
        assert_eq!(set.indices("10.244.7.9/24"), Ok(7..=7));
    }

    #[test]
    fn reads_pod_cidrs_from_either_field() {
        assert_eq!(pod_cidrs(&json!({"spec": {"podCIDR": "10.244.1.0/24"}})), vec!["10.244.1.0/24"]);
        assert_eq!(pod_cidrs(&json!({"spec": {"podCIDRs": ["10.244.2.0/24"]}})), vec!["10.244.2.0/24"]);
        assert!(pod_cidrs(&json!({"spec": {"podCIDR": ""}})).is_empty());
    }
}
