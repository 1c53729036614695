//! The desired endpoints of a Service and the writes that bring its existing slices there
//! (upstream's `reconcileByAddressType` and `reconcileByPortMapping`).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use serde_json::{Map, Value, json};
use tracing::debug;

use super::rules::{
    arr, find_port, is_headless, pod_ips, pod_ready, pod_terminating, protocol_of, publish_not_ready,
    should_set_hostname, str_at,
};
use super::{
    CONTROLLER_NAME, LABEL_HEADLESS, LABEL_MANAGED_BY, LABEL_SERVICE_NAME, LABEL_ZONE, MAX_ENDPOINTS_PER_SLICE,
};

/// The address types the Service's slices use: its IP families.
pub(super) fn address_types(svc: &Value) -> Vec<&'static str> {
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

pub(super) fn family_matches(ip: &IpAddr, address_type: &str) -> bool {
    match ip {
        IpAddr::V4(_) => address_type == "IPv4",
        IpAddr::V6(_) => address_type == "IPv6",
    }
}

/// The endpoint of one pod, or `None` when it has no address of this type.
pub(super) fn pod_endpoint(pod: &Value, node: Option<&Value>, svc: &Value, address_type: &str) -> Option<Value> {
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
pub(super) fn endpoint_ports(svc: &Value, pod: &Value) -> Vec<Value> {
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
pub(super) fn port_key(ports: &[Value]) -> String {
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
pub(super) fn endpoint_id(ep: &Value) -> String {
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
pub(super) fn slice_labels(svc: &Value) -> Map<String, Value> {
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

pub(super) fn owned_by(slice: &Value, svc: &Value) -> bool {
    let uid = str_at(svc, "/metadata/uid");
    arr(slice, "/metadata/ownerReferences")
        .iter()
        .any(|o| str_at(o, "/uid") == uid && str_at(o, "/kind") == "Service" && str_at(o, "/apiVersion") == "v1")
}

/// `generateName` of a new slice: `<service>-`.
pub(super) fn slice_prefix(service: &str) -> String {
    // A Service name is a DNS label (≤ 63): with the dash it is still a valid prefix.
    format!("{service}-")
}

/// Empty lists are stored as null, as the Kubernetes API shows them.
pub(super) fn list_or_null(items: Vec<Value>) -> Value {
    if items.is_empty() { Value::Null } else { Value::Array(items) }
}

pub(super) fn new_slice(svc: &Value, ports: &[Value], address_type: &str) -> Value {
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

pub(super) fn endpoints_of(slice: &Value) -> Vec<Value> {
    arr(slice, "/endpoints").to_vec()
}

pub(super) fn set_endpoints(slice: &mut Value, eps: Vec<Value>) {
    slice["endpoints"] = list_or_null(eps);
}

pub(super) fn labels_map(obj: &Value) -> Map<String, Value> {
    obj.pointer("/metadata/labels").and_then(Value::as_object).cloned().unwrap_or_default()
}

/// The wanted endpoints of one port group, in pod order, each taken at most once.
pub(super) struct DesiredSet {
    ports: Vec<Value>,
    endpoints: Vec<(String, Value)>,
    index: HashMap<String, usize>,
    taken: Vec<bool>,
    left: usize,
}

impl DesiredSet {
    pub(super) fn new(ports: Vec<Value>) -> Self {
        DesiredSet { ports, endpoints: Vec::new(), index: HashMap::new(), taken: Vec::new(), left: 0 }
    }
    pub(super) fn insert(&mut self, ep: Value) {
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
pub(super) struct Plan {
    pub(super) create: Vec<Value>,
    pub(super) update: Vec<Value>,
    pub(super) delete: Vec<Arc<Value>>,
}

/// Compares desired endpoints with the existing slices of one address type (upstream's
/// `reconcileByAddressType`): keep slices, drop endpoints no longer wanted, refresh changed
/// ones, fill slices being written anyway, then fit the rest into the closest unchanged slice or
/// new ones.
pub(super) fn plan(
    svc: &Value,
    existing: &[Arc<Value>],
    mut desired: BTreeMap<String, DesiredSet>,
    address_type: &str,
) -> Plan {
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

pub(super) fn same_placeholder(existing: &Value, placeholder: &Value) -> bool {
    str_at(existing, "/metadata/namespace") == str_at(placeholder, "/metadata/namespace")
        && labels_map(existing) == labels_map(placeholder)
        && existing.pointer("/metadata/ownerReferences") == placeholder.pointer("/metadata/ownerReferences")
        && str_at(existing, "/addressType") == str_at(placeholder, "/addressType")
        && arr(existing, "/endpoints").is_empty()
        && arr(existing, "/ports").is_empty()
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
