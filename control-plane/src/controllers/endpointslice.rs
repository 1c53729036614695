//! The EndpointSlice controller: for every Service with a selector, EndpointSlices
//! (`discovery.k8s.io/v1`) listing the pods it selects, as kube-controller-manager's
//! `endpointslice` controller keeps them.
//!
//! Slices carry `kubernetes.io/service-name`, `endpointslice.kubernetes.io/managed-by` and a
//! controller ownerReference to their Service (the garbage collector removes them with it).
//! Endpoints are grouped by their resolved ports (a named targetPort may resolve differently per
//! pod), at most [`MAX_ENDPOINTS_PER_SLICE`] per slice; existing slices are kept and changed in
//! place, and a Service without endpoints has one empty placeholder slice. Writes happen only when
//! something changed. The `kubernetes` Service in `default` has no selector: its slice points at
//! the API server's address, unless that address is loopback (which a slice may not hold).
//!
//! The pod rules shared with the Endpoints controller (readiness, port resolution, which Services
//! select a pod) are here too.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use serde_json::{Map, Value, json};
use tracing::{debug, warn};

use super::{Action, Change, Controller, Ctx, Watch, cache_key, key_of};
use crate::registry::{self, Resource};
use crate::selectors::labels_of;
use crate::server::errors::ApiError;
use crate::server::internal::DeleteParams;

pub const NAME: &str = "endpointslice";
/// The value of `endpointslice.kubernetes.io/managed-by` on the slices this controller owns.
pub const CONTROLLER_NAME: &str = "endpointslice-controller.k8s.io";
pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";
pub const LABEL_MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
pub const LABEL_HEADLESS: &str = "service.kubernetes.io/headless";
pub const LABEL_ZONE: &str = "topology.kubernetes.io/zone";
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;

/// How long a write of ours may take to show up in the slice cache before we stop waiting for it.
const EXPECTATION_TTL: Duration = Duration::from_secs(10);

pub(crate) fn services() -> &'static Resource {
    &registry::services::RESOURCE
}
pub(crate) fn pods() -> &'static Resource {
    &registry::pods::RESOURCE
}
pub(crate) fn nodes() -> &'static Resource {
    &registry::nodes::RESOURCE
}
fn slices() -> &'static Resource {
    &registry::endpointslices::RESOURCE
}

// ---------------------------------------------------------------- pod and service rules

pub(crate) fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn arr<'a>(v: &'a Value, pointer: &str) -> &'a [Value] {
    v.pointer(pointer).and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

/// The Service's selector; `None` when it has none (then someone else manages its endpoints).
pub(crate) fn service_selector(svc: &Value) -> Option<BTreeMap<String, String>> {
    let m = svc.pointer("/spec/selector")?.as_object()?;
    if m.is_empty() {
        return None;
    }
    Some(m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string())).collect())
}

fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The pods in the Service's namespace that its selector matches, by name.
pub(crate) fn selected_pods(ctx: &Ctx, svc: &Value, selector: &BTreeMap<String, String>) -> Vec<Arc<Value>> {
    let ns = str_at(svc, "/metadata/namespace");
    let mut pods = ctx.informers.get(pods()).list(ns, |p| selects(selector, &labels_of(p)));
    pods.sort_by(|a, b| str_at(a, "/metadata/name").cmp(str_at(b, "/metadata/name")));
    pods
}

/// The pod's Ready condition is True.
pub(crate) fn pod_ready(pod: &Value) -> bool {
    arr(pod, "/status/conditions").iter().any(|c| str_at(c, "/type") == "Ready" && str_at(c, "/status") == "True")
}

/// The pod is `Succeeded` or `Failed`: its containers stopped for good.
fn pod_terminal(pod: &Value) -> bool {
    matches!(str_at(pod, "/status/phase"), "Succeeded" | "Failed")
}

pub(crate) fn pod_terminating(pod: &Value) -> bool {
    pod.pointer("/metadata/deletionTimestamp").is_some_and(|t| !t.is_null())
}

/// The pod's addresses (`status.podIPs`, else `status.podIP`).
pub(crate) fn pod_ips(pod: &Value) -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> =
        arr(pod, "/status/podIPs").iter().filter_map(|i| str_at(i, "/ip").parse().ok()).collect();
    if ips.is_empty()
        && let Ok(ip) = str_at(pod, "/status/podIP").parse()
    {
        ips.push(ip);
    }
    ips
}

/// Whether the pod belongs in a Service's endpoints at all: it has an address and is not
/// terminal; terminating pods only when `include_terminating`.
pub(crate) fn should_be_in_endpoints(pod: &Value, include_terminating: bool) -> bool {
    if pod_terminal(pod) || pod_ips(pod).is_empty() {
        return false;
    }
    include_terminating || !pod_terminating(pod)
}

/// A pod with `hostname` whose `subdomain` names the Service gets its hostname published.
pub(crate) fn should_set_hostname(pod: &Value, svc: &Value) -> bool {
    let hostname = str_at(pod, "/spec/hostname");
    !hostname.is_empty()
        && str_at(pod, "/spec/subdomain") == str_at(svc, "/metadata/name")
        && str_at(pod, "/metadata/namespace") == str_at(svc, "/metadata/namespace")
}

/// A Service without a cluster IP (`None` or unset) is headless.
pub(crate) fn is_headless(svc: &Value) -> bool {
    matches!(str_at(svc, "/spec/clusterIP"), "" | "None")
}

pub(crate) fn publish_not_ready(svc: &Value) -> bool {
    svc.pointer("/spec/publishNotReadyAddresses").and_then(Value::as_bool).unwrap_or(false)
}

fn protocol_of(port: &Value) -> &str {
    match str_at(port, "/protocol") {
        "" => "TCP",
        p => p,
    }
}

/// The container port a Service port sends to on this pod: a numeric targetPort as is, a named
/// one looked up among the pod's container (and sidecar) ports of the same protocol.
pub(crate) fn find_port(pod: &Value, svc_port: &Value) -> Option<i64> {
    match svc_port.get("targetPort") {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(name)) => {
            let proto = protocol_of(svc_port);
            let sidecars = arr(pod, "/spec/initContainers").iter().filter(|c| str_at(c, "/restartPolicy") == "Always");
            arr(pod, "/spec/containers")
                .iter()
                .chain(sidecars)
                .flat_map(|c| arr(c, "/ports"))
                .find(|p| str_at(p, "/name") == name && protocol_of(p) == proto)
                .and_then(|p| p.get("containerPort").and_then(Value::as_i64))
        }
        // Defaulting sets targetPort to the port; be lenient with objects that skipped it.
        _ => svc_port.get("port").and_then(Value::as_i64),
    }
}

/// What about a pod decides its endpoints; a change elsewhere does not concern Services.
fn endpoint_projection(pod: &Value) -> Value {
    json!([
        pod.pointer("/metadata/labels"),
        pod.pointer("/metadata/deletionTimestamp"),
        pod.pointer("/metadata/uid"),
        pod_ready(pod),
        pod_ips(pod).iter().map(ToString::to_string).collect::<Vec<_>>(),
        pod.pointer("/spec/nodeName"),
        pod.pointer("/spec/hostname"),
        pod.pointer("/spec/subdomain"),
        pod.pointer("/status/phase"),
    ])
}

/// Keys of the Services that select the pod before or after a change that matters to endpoints.
pub(crate) fn services_for_pod_change(ctx: &Ctx, change: &Change) -> Vec<String> {
    if let (Some(old), Some(new)) = (&change.old, &change.new)
        && endpoint_projection(old) == endpoint_projection(new)
    {
        return Vec::new();
    }
    let pod = change.object();
    let ns = str_at(pod, "/metadata/namespace");
    let label_sets: Vec<BTreeMap<String, String>> =
        [&change.old, &change.new].into_iter().flatten().map(|p| labels_of(p)).collect();
    ctx.informers
        .get(services())
        .list(ns, |svc| service_selector(svc).is_some_and(|sel| label_sets.iter().any(|l| selects(&sel, l))))
        .iter()
        .map(|svc| key_of(svc))
        .collect()
}

/// Keys of the Services that select pods on a node, when the node appears, goes or changes zone.
fn services_for_node_change(ctx: &Ctx, change: &Change) -> Vec<String> {
    if let (Some(old), Some(new)) = (&change.old, &change.new)
        && old.pointer(&format!("/metadata/labels/{}", LABEL_ZONE.replace('/', "~1")))
            == new.pointer(&format!("/metadata/labels/{}", LABEL_ZONE.replace('/', "~1")))
    {
        return Vec::new();
    }
    let node = str_at(change.object(), "/metadata/name").to_string();
    let on_node = ctx.informers.get(pods()).list("", |p| str_at(p, "/spec/nodeName") == node);
    let svcs = ctx.informers.get(services());
    let mut keys = BTreeSet::new();
    for pod in on_node {
        let labels = labels_of(&pod);
        for svc in svcs.list(str_at(&pod, "/metadata/namespace"), |s| {
            service_selector(s).is_some_and(|sel| selects(&sel, &labels))
        }) {
            keys.insert(key_of(&svc));
        }
    }
    keys.into_iter().collect()
}

/// `true` for an address an EndpointSlice or Endpoints object may not hold.
pub(crate) fn unpublishable(ip: IpAddr) -> bool {
    ip.is_loopback() || ip.is_unspecified()
}

// ---------------------------------------------------------------- desired endpoints

/// The address types the Service's slices use: its IP families.
fn address_types(svc: &Value) -> Vec<&'static str> {
    let mut types = Vec::new();
    for f in arr(svc, "/spec/ipFamilies") {
        let t = match f.as_str() {
            Some("IPv4") => "IPv4",
            Some("IPv6") => "IPv6",
            _ => continue,
        };
        if !types.contains(&t) {
            types.push(t);
        }
    }
    if !types.is_empty() {
        return types;
    }
    match str_at(svc, "/spec/clusterIP").parse::<IpAddr>() {
        Ok(IpAddr::V6(_)) => vec!["IPv6"],
        Ok(IpAddr::V4(_)) => vec!["IPv4"],
        Err(_) => vec!["IPv4", "IPv6"],
    }
}

fn family_matches(ip: &IpAddr, address_type: &str) -> bool {
    match ip {
        IpAddr::V4(_) => address_type == "IPv4",
        IpAddr::V6(_) => address_type == "IPv6",
    }
}

/// The endpoint of one pod, or `None` when it has no address of this type.
fn pod_endpoint(pod: &Value, node: Option<&Value>, svc: &Value, address_type: &str) -> Option<Value> {
    let addresses: Vec<String> =
        pod_ips(pod).iter().filter(|ip| family_matches(ip, address_type)).map(ToString::to_string).collect();
    if addresses.is_empty() {
        return None;
    }
    let serving = pod_ready(pod);
    let terminating = pod_terminating(pod);
    // Never ready while terminating, unless the Service publishes not-ready addresses.
    let ready = publish_not_ready(svc) || (serving && !terminating);
    let mut ep = Map::new();
    ep.insert("addresses".into(), json!(addresses));
    ep.insert("conditions".into(), json!({"ready": ready, "serving": serving, "terminating": terminating}));
    if should_set_hostname(pod, svc) {
        ep.insert("hostname".into(), json!(str_at(pod, "/spec/hostname")));
    }
    ep.insert(
        "targetRef".into(),
        json!({
            "kind": "Pod",
            "namespace": str_at(pod, "/metadata/namespace"),
            "name": str_at(pod, "/metadata/name"),
            "uid": str_at(pod, "/metadata/uid"),
        }),
    );
    let node_name = str_at(pod, "/spec/nodeName");
    if !node_name.is_empty() {
        ep.insert("nodeName".into(), json!(node_name));
    }
    if let Some(zone) = node.and_then(|n| n.pointer("/metadata/labels")).and_then(|l| l.get(LABEL_ZONE))
        && zone.as_str().is_some_and(|z| !z.is_empty())
    {
        ep.insert("zone".into(), zone.clone());
    }
    Some(Value::Object(ep))
}

/// The ports of the pod's endpoint: every Service port whose target the pod has.
fn endpoint_ports(svc: &Value, pod: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    for p in arr(svc, "/spec/ports") {
        let Some(num) = find_port(pod, p) else {
            debug!(pod = str_at(pod, "/metadata/name"), port = %p, "no suitable port on pod");
            continue;
        };
        let mut port = json!({"name": str_at(p, "/name"), "port": num, "protocol": protocol_of(p)});
        if let Some(app) = p.get("appProtocol").filter(|a| a.is_string()) {
            port["appProtocol"] = app.clone();
        }
        out.push(port);
    }
    out
}

/// A canonical form of a port list: endpoints with equal keys share slices.
fn port_key(ports: &[Value]) -> String {
    let mut parts: Vec<String> = ports
        .iter()
        .map(|p| {
            format!(
                "{}/{}/{}/{}",
                str_at(p, "/name"),
                p.get("port").and_then(Value::as_i64).map(|n| n.to_string()).unwrap_or_default(),
                protocol_of(p),
                str_at(p, "/appProtocol")
            )
        })
        .collect();
    parts.sort();
    parts.join(";")
}

/// What identifies an endpoint across syncs (its addresses, hostname and pod).
fn endpoint_id(ep: &Value) -> String {
    let addrs: Vec<&str> = arr(ep, "/addresses").iter().filter_map(Value::as_str).collect();
    format!(
        "{}|{}|{}/{}",
        addrs.join(","),
        str_at(ep, "/hostname"),
        str_at(ep, "/targetRef/namespace"),
        str_at(ep, "/targetRef/name")
    )
}

/// The labels a slice of the Service has: the Service's own (but the reserved ones), the headless
/// marker, the service name and the manager.
fn slice_labels(svc: &Value) -> Map<String, Value> {
    let mut labels = Map::new();
    if let Some(m) = svc.pointer("/metadata/labels").and_then(Value::as_object) {
        for (k, v) in m {
            if ![LABEL_SERVICE_NAME, LABEL_MANAGED_BY, LABEL_HEADLESS].contains(&k.as_str()) {
                labels.insert(k.clone(), v.clone());
            }
        }
    }
    if is_headless(svc) {
        labels.insert(LABEL_HEADLESS.into(), json!(""));
    }
    labels.insert(LABEL_SERVICE_NAME.into(), json!(str_at(svc, "/metadata/name")));
    labels.insert(LABEL_MANAGED_BY.into(), json!(CONTROLLER_NAME));
    labels
}

/// An ownerReference to the Service as its controller.
pub(crate) fn service_owner_ref(svc: &Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "name": str_at(svc, "/metadata/name"),
        "uid": str_at(svc, "/metadata/uid"),
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

fn owned_by(slice: &Value, svc: &Value) -> bool {
    let uid = str_at(svc, "/metadata/uid");
    arr(slice, "/metadata/ownerReferences")
        .iter()
        .any(|o| str_at(o, "/uid") == uid && str_at(o, "/kind") == "Service" && str_at(o, "/apiVersion") == "v1")
}

/// `generateName` of a new slice: `<service>-`.
fn slice_prefix(service: &str) -> String {
    // A Service name is a DNS label (≤ 63): with the dash it is still a valid prefix.
    format!("{service}-")
}

/// Empty lists are stored as null, as the Kubernetes API shows them.
fn list_or_null(items: Vec<Value>) -> Value {
    if items.is_empty() { Value::Null } else { Value::Array(items) }
}

fn new_slice(svc: &Value, ports: &[Value], address_type: &str) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "generateName": slice_prefix(str_at(svc, "/metadata/name")),
            "namespace": str_at(svc, "/metadata/namespace"),
            "labels": slice_labels(svc),
            "ownerReferences": [service_owner_ref(svc)],
        },
        "addressType": address_type,
        "endpoints": Value::Null,
        "ports": list_or_null(ports.to_vec()),
    })
}

fn endpoints_of(slice: &Value) -> Vec<Value> {
    arr(slice, "/endpoints").to_vec()
}

fn set_endpoints(slice: &mut Value, eps: Vec<Value>) {
    slice["endpoints"] = list_or_null(eps);
}

fn labels_map(obj: &Value) -> Map<String, Value> {
    obj.pointer("/metadata/labels").and_then(Value::as_object).cloned().unwrap_or_default()
}

/// The wanted endpoints of one port group, in pod order, each taken at most once.
struct DesiredSet {
    ports: Vec<Value>,
    endpoints: Vec<(String, Value)>,
    index: HashMap<String, usize>,
    taken: Vec<bool>,
    left: usize,
}

impl DesiredSet {
    fn new(ports: Vec<Value>) -> Self {
        DesiredSet { ports, endpoints: Vec::new(), index: HashMap::new(), taken: Vec::new(), left: 0 }
    }
    fn insert(&mut self, ep: Value) {
        let id = endpoint_id(&ep);
        if self.index.contains_key(&id) {
            return;
        }
        self.index.insert(id.clone(), self.endpoints.len());
        self.endpoints.push((id, ep));
        self.taken.push(false);
        self.left += 1;
    }
    /// The wanted version of an existing endpoint, marking it placed.
    fn take_matching(&mut self, existing: &Value) -> Option<Value> {
        let i = *self.index.get(&endpoint_id(existing))?;
        if self.taken[i] {
            return None;
        }
        self.taken[i] = true;
        self.left -= 1;
        Some(self.endpoints[i].1.clone())
    }
    fn pop(&mut self) -> Option<Value> {
        let i = self.taken.iter().position(|t| !t)?;
        self.taken[i] = true;
        self.left -= 1;
        Some(self.endpoints[i].1.clone())
    }
}

/// The writes that bring one address type's slices to the desired state.
#[derive(Default)]
struct Plan {
    create: Vec<Value>,
    update: Vec<Value>,
    delete: Vec<Arc<Value>>,
}

/// Compares desired endpoints with the existing slices of one address type (upstream's
/// `reconcileByAddressType`): keep slices, drop endpoints no longer wanted, refresh changed
/// ones, fill slices being written anyway, then fit the rest into the closest unchanged slice or
/// new ones.
fn plan(svc: &Value, existing: &[Arc<Value>], mut desired: BTreeMap<String, DesiredSet>, address_type: &str) -> Plan {
    let mut plan = Plan::default();
    let labels = slice_labels(svc);
    let mut by_ports: BTreeMap<String, Vec<Arc<Value>>> = BTreeMap::new();
    for s in existing {
        if owned_by(s, svc) {
            by_ports.entry(port_key(arr(s, "/ports"))).or_default().push(s.clone());
        } else {
            plan.delete.push(s.clone());
        }
    }
    for (pk, set) in desired.iter_mut() {
        let mut to_update: Vec<Value> = Vec::new();
        let mut unchanged: Vec<Arc<Value>> = Vec::new();
        for s in by_ports.get(pk).map_or(&[][..], Vec::as_slice) {
            let old = endpoints_of(s);
            let mut kept = Vec::new();
            let mut changed = false;
            for ep in &old {
                if let Some(want) = set.take_matching(ep) {
                    changed |= &want != ep;
                    kept.push(want);
                }
            }
            let labels_changed = labels_map(s) != labels;
            if changed || kept.len() != old.len() {
                if kept.is_empty() {
                    plan.delete.push(s.clone());
                } else {
                    let mut n = (**s).clone();
                    set_endpoints(&mut n, kept);
                    n["metadata"]["labels"] = Value::Object(labels.clone());
                    to_update.push(n);
                }
            } else if labels_changed {
                let mut n = (**s).clone();
                n["metadata"]["labels"] = Value::Object(labels.clone());
                to_update.push(n);
            } else {
                unchanged.push(s.clone());
            }
        }
        // Fill the slices being written anyway, fullest first.
        to_update.sort_by_key(|s| std::cmp::Reverse(arr(s, "/endpoints").len()));
        for s in &mut to_update {
            let mut eps = endpoints_of(s);
            while set.left > 0 && eps.len() < MAX_ENDPOINTS_PER_SLICE {
                eps.extend(set.pop());
            }
            set_endpoints(s, eps);
        }
        // The rest: into the unchanged slice closest to full, or into new slices.
        while set.left > 0 {
            let mut target: Option<Value> = None;
            if set.left < MAX_ENDPOINTS_PER_SLICE {
                let best = unchanged
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| arr(s, "/endpoints").len() + set.left <= MAX_ENDPOINTS_PER_SLICE)
                    .max_by_key(|(_, s)| arr(s, "/endpoints").len())
                    .map(|(i, _)| i);
                if let Some(i) = best {
                    target = Some((*unchanged.remove(i)).clone());
                }
            }
            let is_new = target.is_none();
            let mut s = target.unwrap_or_else(|| new_slice(svc, &set.ports, address_type));
            let mut eps = endpoints_of(&s);
            while set.left > 0 && eps.len() < MAX_ENDPOINTS_PER_SLICE {
                eps.extend(set.pop());
            }
            set_endpoints(&mut s, eps);
            if is_new { plan.create.push(s) } else { to_update.push(s) }
        }
        plan.update.extend(to_update);
    }
    for (pk, slices) in by_ports {
        if !desired.contains_key(&pk) {
            plan.delete.extend(slices);
        }
    }
    // A Service without endpoints still has one (empty) slice.
    if existing.len() == plan.delete.len() && plan.create.is_empty() {
        let placeholder = new_slice(svc, &[], address_type);
        if plan.delete.len() == 1 && same_placeholder(&plan.delete[0], &placeholder) {
            plan.delete.clear();
        } else {
            plan.create.push(placeholder);
        }
    }
    // Reuse slices about to be deleted for slices about to be created.
    let mut i = 0;
    while i < plan.delete.len() && !plan.create.is_empty() {
        let old = &plan.delete[i];
        if str_at(old, "/addressType") == address_type && owned_by(old, svc) {
            let mut s = plan.create.pop().expect("checked non-empty");
            let meta = s["metadata"].as_object_mut().expect("metadata");
            meta.remove("generateName");
            meta.insert("name".into(), json!(str_at(old, "/metadata/name")));
            plan.update.push(s);
            plan.delete.remove(i);
        } else {
            i += 1;
        }
    }
    plan
}

fn same_placeholder(existing: &Value, placeholder: &Value) -> bool {
    str_at(existing, "/metadata/namespace") == str_at(placeholder, "/metadata/namespace")
        && labels_map(existing) == labels_map(placeholder)
        && existing.pointer("/metadata/ownerReferences") == placeholder.pointer("/metadata/ownerReferences")
        && str_at(existing, "/addressType") == str_at(placeholder, "/addressType")
        && arr(existing, "/endpoints").is_empty()
        && arr(existing, "/ports").is_empty()
}

// ---------------------------------------------------------------- expectations

/// What the slice cache must show before a Service is synced again: our last writes.
enum Expect {
    AtLeast(i64),
    Gone,
}

/// Our writes not yet seen in the slice cache, per Service key and slice name (upstream's
/// `EndpointSliceTracker`): syncing from a cache without them would create duplicates.
#[derive(Default)]
struct Tracker {
    pending: HashMap<String, HashMap<String, (Expect, Instant)>>,
}

fn rv_of(obj: &Value) -> i64 {
    str_at(obj, "/metadata/resourceVersion").parse().unwrap_or(0)
}

impl Tracker {
    fn satisfied(expect: &Expect, cached: Option<&Value>) -> bool {
        match (expect, cached) {
            (Expect::AtLeast(rv), Some(c)) => rv_of(c) >= *rv,
            (Expect::AtLeast(_), None) => false,
            (Expect::Gone, c) => c.is_none(),
        }
    }

    fn record(&mut self, svc_key: &str, slice: &str, expect: Expect, cached: Option<&Value>) {
        if !Self::satisfied(&expect, cached) {
            self.pending.entry(svc_key.to_string()).or_default().insert(slice.to_string(), (expect, Instant::now()));
        }
    }

    /// Whether the cache still misses writes of ours for this Service.
    fn stale(&mut self, svc_key: &str, ns: &str, ctx: &Ctx) -> bool {
        let Some(pending) = self.pending.get_mut(svc_key) else { return false };
        let cache = ctx.informers.get(slices());
        pending.retain(|name, (expect, at)| {
            at.elapsed() < EXPECTATION_TTL && !Self::satisfied(expect, cache.get(ns, name).as_deref())
        });
        let stale = !pending.is_empty();
        if !stale {
            self.pending.remove(svc_key);
        }
        stale
    }

    /// A slice deleted by anyone satisfies whatever we expected of it.
    fn observe(&mut self, change: &Change) {
        let obj = change.object();
        let svc_key = cache_key(str_at(obj, "/metadata/namespace"), &service_name_label(obj));
        let Some(pending) = self.pending.get_mut(&svc_key) else { return };
        let name = str_at(obj, "/metadata/name");
        let done = match (&change.new, pending.get(name)) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(n), Some((e, _))) => Self::satisfied(e, Some(n)),
        };
        if done {
            pending.remove(name);
        }
    }
}

fn service_name_label(slice: &Value) -> String {
    slice
        .pointer("/metadata/labels")
        .and_then(|l| l.get(LABEL_SERVICE_NAME))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

fn managed_by_us(slice: &Value) -> bool {
    slice.pointer("/metadata/labels").and_then(|l| l.get(LABEL_MANAGED_BY)).and_then(Value::as_str)
        == Some(CONTROLLER_NAME)
}

// ---------------------------------------------------------------- the controller

#[derive(Default)]
pub struct EndpointSliceController {
    tracker: Arc<Mutex<Tracker>>,
}

impl Controller for EndpointSliceController {
    fn name(&self) -> &'static str {
        NAME
    }

    fn watches(&self) -> Vec<Watch> {
        let tracker = self.tracker.clone();
        vec![
            Watch::own(services()),
            Watch::mapped(pods(), services_for_pod_change),
            Watch::mapped(slices(), move |_, change| {
                let slice = change.object();
                tracker.lock().expect("tracker lock").observe(change);
                let svc = service_name_label(slice);
                if svc.is_empty() || !(managed_by_us(slice) || svc == "kubernetes") {
                    return Vec::new();
                }
                vec![cache_key(str_at(slice, "/metadata/namespace"), &svc)]
            }),
            Watch::mapped(nodes(), services_for_node_change),
        ]
    }

    fn reconcile<'a>(&'a self, ctx: &'a Ctx, key: &'a str) -> BoxFuture<'a, Result<Action, ApiError>> {
        Box::pin(self.sync(ctx, key))
    }
}

impl EndpointSliceController {
    async fn sync(&self, ctx: &Ctx, key: &str) -> Result<Action, ApiError> {
        // A deleted Service's slices go with it through their ownerReference (garbage collector).
        let Some(svc) = ctx.informers.get(services()).get_key(key) else { return Ok(Action::Done) };
        if key == "default/kubernetes" {
            return sync_kubernetes_slice(ctx, &svc).await;
        }
        if str_at(&svc, "/spec/type") == "ExternalName" {
            return Ok(Action::Done);
        }
        let Some(selector) = service_selector(&svc) else { return Ok(Action::Done) };
        let ns = str_at(&svc, "/metadata/namespace");
        if self.tracker.lock().expect("tracker lock").stale(key, ns, ctx) {
            debug!(service = key, "slice cache behind our writes; waiting");
            return Ok(Action::RequeueAfter(Duration::from_millis(200)));
        }
        let name = str_at(&svc, "/metadata/name");
        let pods = selected_pods(ctx, &svc, &selector);
        let existing = ctx.informers.get(slices()).list(ns, |s| managed_by_us(s) && service_name_label(s) == name);
        let node_cache = ctx.informers.get(nodes());
        let types = address_types(&svc);
        let mut missing_node = false;
        let mut plans = Vec::new();
        for s in &existing {
            if !types.contains(&str_at(s, "/addressType")) {
                plans.push(Plan { delete: vec![s.clone()], ..Default::default() });
            }
        }
        for address_type in &types {
            let mut desired: BTreeMap<String, DesiredSet> = BTreeMap::new();
            for pod in &pods {
                if !should_be_in_endpoints(pod, true) {
                    continue;
                }
                let node = node_cache.get("", str_at(pod, "/spec/nodeName"));
                if node.is_none() && !publish_not_ready(&svc) {
                    // A pod on a node that does not exist (yet) is left out until the node shows up.
                    debug!(service = key, pod = str_at(pod, "/metadata/name"), "node not found; pod skipped");
                    missing_node = true;
                    continue;
                }
                let ports = endpoint_ports(&svc, pod);
                let Some(ep) = pod_endpoint(pod, node.as_deref(), &svc, address_type) else { continue };
                desired.entry(port_key(&ports)).or_insert_with(|| DesiredSet::new(ports)).insert(ep);
            }
            let of_type: Vec<Arc<Value>> =
                existing.iter().filter(|s| str_at(s, "/addressType") == *address_type).cloned().collect();
            plans.push(plan(&svc, &of_type, desired, address_type));
        }
        let deleting = svc.pointer("/metadata/deletionTimestamp").is_some();
        for p in plans {
            self.apply(ctx, key, &svc, p, deleting).await?;
        }
        Ok(if missing_node { Action::RequeueAfter(Duration::from_secs(10)) } else { Action::Done })
    }

    /// Performs one plan's writes, remembering them until the cache shows them.
    async fn apply(&self, ctx: &Ctx, key: &str, svc: &Value, plan: Plan, deleting: bool) -> Result<(), ApiError> {
        let ns = str_at(svc, "/metadata/namespace");
        let cache = ctx.informers.get(slices());
        // No new slices for a Service being deleted: the garbage collector would race them.
        if !deleting {
            for s in plan.create {
                match ctx.client.create(slices(), ns, s).await {
                    Ok(created) => {
                        let name = str_at(&created, "/metadata/name");
                        debug!(service = key, slice = name, "created EndpointSlice");
                        let mut t = self.tracker.lock().expect("tracker lock");
                        t.record(key, name, Expect::AtLeast(rv_of(&created)), cache.get(ns, name).as_deref());
                    }
                    // The namespace is terminating: nothing more will be created in it.
                    Err(e) if e.code == 403 || e.code == 404 => return Ok(()),
                    Err(e) => return Err(self.failed(ctx, svc, e).await),
                }
            }
        }
        for s in plan.update {
            let name = str_at(&s, "/metadata/name").to_string();
            match ctx.client.update(slices(), ns, s).await {
                Ok(updated) => {
                    debug!(service = key, slice = %name, "updated EndpointSlice");
                    let mut t = self.tracker.lock().expect("tracker lock");
                    t.record(key, &name, Expect::AtLeast(rv_of(&updated)), cache.get(ns, &name).as_deref());
                }
                Err(e) => return Err(self.failed(ctx, svc, e).await),
            }
        }
        for s in plan.delete {
            let name = str_at(&s, "/metadata/name");
            match ctx.client.delete(slices(), ns, name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(self.failed(ctx, svc, e).await),
            }
            let mut t = self.tracker.lock().expect("tracker lock");
            t.record(key, name, Expect::Gone, cache.get(ns, name).as_deref());
        }
        Ok(())
    }

    async fn failed(&self, ctx: &Ctx, svc: &Value, e: ApiError) -> ApiError {
        if e.code != 409 {
            let msg = format!("Error updating Endpoint Slices for Service {}: {}", key_of(svc), e.message);
            ctx.events.record(svc, "Service", "v1", "Warning", "FailedToUpdateEndpointSlices", &msg).await;
        }
        e
    }
}

/// The slice of the `kubernetes` Service: the API server's address, when it is one a slice may
/// hold; otherwise nothing is written.
async fn sync_kubernetes_slice(ctx: &Ctx, svc: &Value) -> Result<Action, ApiError> {
    let advertise = ctx.client.api().advertise;
    let ip = advertise.ip();
    if unpublishable(ip) {
        return Ok(Action::Done);
    }
    let address_type = if ip.is_ipv4() { "IPv4" } else { "IPv6" };
    let port_name = arr(svc, "/spec/ports").first().map_or("https", |p| str_at(p, "/name"));
    let want = json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": {LABEL_SERVICE_NAME: "kubernetes"}},
        "addressType": address_type,
        "endpoints": [{"addresses": [ip.to_string()], "conditions": {"ready": true}}],
        "ports": [{"name": port_name, "port": advertise.port(), "protocol": "TCP"}],
    });
    match ctx.informers.get(slices()).get("default", "kubernetes") {
        None => match ctx.client.create(slices(), "default", want).await {
            Ok(_) => Ok(Action::Done),
            Err(e) if e.code == 409 => Ok(Action::RequeueAfter(Duration::from_millis(200))),
            Err(e) => Err(e),
        },
        Some(cur) => {
            let same = ["addressType", "endpoints", "ports"].iter().all(|f| cur.get(*f) == want.get(*f))
                && labels_map(&cur).get(LABEL_SERVICE_NAME) == Some(&json!("kubernetes"));
            if same {
                return Ok(Action::Done);
            }
            if str_at(&cur, "/addressType") != address_type {
                ctx.client.delete(slices(), "default", "kubernetes", &DeleteParams::default()).await?;
                return Ok(Action::RequeueAfter(Duration::from_millis(200)));
            }
            let mut n = (*cur).clone();
            for f in ["endpoints", "ports"] {
                n[f] = want[f].clone();
            }
            n["metadata"]["labels"][LABEL_SERVICE_NAME] = json!("kubernetes");
            ctx.client.update(slices(), "default", n).await?;
            warn!(address = %ip, "kubernetes EndpointSlice updated");
            Ok(Action::Done)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc() -> Value {
        json!({"metadata": {"name": "web", "namespace": "default", "uid": "svc-uid", "labels": {"app": "web"}},
            "spec": {"selector": {"app": "web"}, "clusterIP": "10.96.0.20", "ipFamilies": ["IPv4"],
                "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http"}]}})
    }

    fn pod(name: &str, ip: &str, ready: bool) -> Value {
        json!({"metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"), "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]}]},
            "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}})
    }

    fn desired(svc: &Value, pods: &[Value]) -> BTreeMap<String, DesiredSet> {
        let mut d: BTreeMap<String, DesiredSet> = BTreeMap::new();
        for p in pods {
            let ports = endpoint_ports(svc, p);
            let ep = pod_endpoint(p, None, svc, "IPv4").expect("an IPv4 endpoint");
            d.entry(port_key(&ports)).or_insert_with(|| DesiredSet::new(ports)).insert(ep);
        }
        d
    }

    #[test]
    fn named_target_port_resolves_per_pod() {
        let p = pod("a", "10.244.1.5", true);
        assert_eq!(find_port(&p, &json!({"targetPort": "http", "protocol": "TCP"})), Some(8080));
        assert_eq!(find_port(&p, &json!({"targetPort": "http", "protocol": "UDP"})), None);
        assert_eq!(find_port(&p, &json!({"targetPort": 9000})), Some(9000));
        assert_eq!(find_port(&p, &json!({"targetPort": "metrics"})), None);
    }

    #[test]
    fn conditions_follow_readiness_and_termination() {
        let s = svc();
        let ep = pod_endpoint(&pod("a", "10.244.1.5", false), None, &s, "IPv4").expect("endpoint");
        assert_eq!(ep["conditions"], json!({"ready": false, "serving": false, "terminating": false}));
        let mut t = pod("b", "10.244.1.6", true);
        t["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        let ep = pod_endpoint(&t, None, &s, "IPv4").expect("endpoint");
        assert_eq!(ep["conditions"], json!({"ready": false, "serving": true, "terminating": true}));
        assert!(pod_endpoint(&t, None, &s, "IPv6").is_none());
        let node = json!({"metadata": {"labels": {LABEL_ZONE: "z1"}}});
        assert_eq!(pod_endpoint(&t, Some(&node), &s, "IPv4").expect("endpoint")["zone"], "z1");
    }

    #[test]
    fn creates_then_keeps_then_adds_in_place() {
        let s = svc();
        let p = plan(&s, &[], desired(&s, &[pod("a", "10.244.1.5", true)]), "IPv4");
        assert_eq!((p.create.len(), p.update.len(), p.delete.len()), (1, 0, 0));
        let mut created = p.create[0].clone();
        created["metadata"]["name"] = json!("web-abcde");
        assert_eq!(created["ports"], json!([{"name": "http", "port": 8080, "protocol": "TCP"}]));
        assert_eq!(created["metadata"]["labels"][LABEL_MANAGED_BY], CONTROLLER_NAME);
        let existing = vec![Arc::new(created)];
        let same = plan(&s, &existing, desired(&s, &[pod("a", "10.244.1.5", true)]), "IPv4");
        assert_eq!((same.create.len(), same.update.len(), same.delete.len()), (0, 0, 0));
        let two =
            plan(&s, &existing, desired(&s, &[pod("a", "10.244.1.5", true), pod("b", "10.244.1.6", true)]), "IPv4");
        assert_eq!((two.create.len(), two.update.len(), two.delete.len()), (0, 1, 0));
        assert_eq!(arr(&two.update[0], "/endpoints").len(), 2);
        // No pods left: the slice becomes the placeholder rather than being deleted.
        let none = plan(&s, &existing, BTreeMap::new(), "IPv4");
        assert_eq!((none.create.len(), none.update.len(), none.delete.len()), (0, 1, 0));
        assert!(none.update[0]["endpoints"].is_null() && none.update[0]["ports"].is_null());
    }

    #[test]
    fn at_most_a_hundred_endpoints_per_slice() {
        let s = svc();
        let pods: Vec<Value> =
            (0..250).map(|i| pod(&format!("p{i}"), &format!("10.244.{}.{}", i / 200, i % 200 + 1), true)).collect();
        let p = plan(&s, &[], desired(&s, &pods), "IPv4");
        let sizes: Vec<usize> = p.create.iter().map(|c| arr(c, "/endpoints").len()).collect();
        assert_eq!(sizes, [100, 100, 50]);
    }
}
