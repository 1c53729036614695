//! The Endpoints controller: the legacy `v1` Endpoints object named after each Service with a
//! selector, for clients that predate EndpointSlices (kube-controller-manager's `endpoint`
//! controller).
//!
//! Ready pods go to `addresses`, others to `notReadyAddresses` (all to `addresses` with
//! `publishNotReadyAddresses`); terminating pods are left out unless the Service publishes
//! not-ready addresses. Addresses sharing the same resolved ports share a subset. At most
//! [`MAX_CAPACITY`] addresses are kept (`endpoints.kubernetes.io/over-capacity: truncated`).
//! A deleted Service's Endpoints are deleted. The `kubernetes` Service in `default` gets the API
//! server's address, unless that is loopback (which Endpoints may not hold).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{Map, Value, json};
use tracing::debug;

use super::endpointslice::{
    LABEL_HEADLESS, find_port, is_headless, pod_ips, pod_ready, pods, publish_not_ready, selected_pods,
    service_selector, services, services_for_pod_change, should_be_in_endpoints, should_set_hostname, str_at,
    unpublishable,
};
use super::{Action, Controller, Ctx, Watch};
use crate::registry::{self, Resource};
use crate::server::errors::ApiError;
use crate::server::internal::DeleteParams;

pub const NAME: &str = "endpoints";
/// Most addresses one Endpoints object holds.
pub const MAX_CAPACITY: usize = 1000;
const OVER_CAPACITY: &str = "endpoints.kubernetes.io/over-capacity";

fn endpoints() -> &'static Resource {
    &registry::endpoints::RESOURCE
}

pub struct EndpointsController;

impl Controller for EndpointsController {
    fn name(&self) -> &'static str {
        NAME
    }

    fn watches(&self) -> Vec<Watch> {
        vec![
            Watch::own(services()),
            Watch::mapped(pods(), services_for_pod_change),
            // Someone deleting our Endpoints: put them back.
            Watch::mapped(endpoints(), |_, change| {
                if change.new.is_none() { vec![super::key_of(change.object())] } else { Vec::new() }
            }),
        ]
    }

    fn reconcile<'a>(&'a self, ctx: &'a Ctx, key: &'a str) -> BoxFuture<'a, Result<Action, ApiError>> {
        Box::pin(sync(ctx, key))
    }
}

async fn sync(ctx: &Ctx, key: &str) -> Result<Action, ApiError> {
    let (ns, name) = key.split_once('/').unwrap_or(("", key));
    let current = ctx.informers.get(endpoints()).get(ns, name);
    let Some(svc) = ctx.informers.get(services()).get_key(key) else {
        if current.is_some() {
            match ctx.client.delete(endpoints(), ns, name, &DeleteParams::default()).await {
                Ok(_) => debug!(service = key, "deleted Endpoints of a deleted Service"),
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        return Ok(Action::Done);
    };
    if key == "default/kubernetes" {
        return sync_kubernetes(ctx, &svc, current.as_deref()).await;
    }
    if str_at(&svc, "/spec/type") == "ExternalName" {
        return Ok(Action::Done);
    }
    let Some(selector) = service_selector(&svc) else { return Ok(Action::Done) };
    let subsets = desired_subsets(&svc, &selected_pods(ctx, &svc, &selector));
    let (subsets, truncated) = truncate(subsets);
    let mut labels = svc.pointer("/metadata/labels").and_then(Value::as_object).cloned().unwrap_or_default();
    if is_headless(&svc) {
        labels.insert(LABEL_HEADLESS.into(), json!(""));
    } else {
        labels.remove(LABEL_HEADLESS);
    }
    let subsets_value = if subsets.is_empty() { None } else { Some(Value::Array(subsets)) };
    if let Some(cur) = &current {
        let same_subsets = cur.get("subsets").filter(|s| !s.is_null() && s.as_array().is_none_or(|a| !a.is_empty()))
            == subsets_value.as_ref();
        let cur_labels = cur.pointer("/metadata/labels").and_then(Value::as_object).cloned().unwrap_or_default();
        let marked = cur.pointer(&format!("/metadata/annotations/{}", OVER_CAPACITY.replace('/', "~1"))).is_some();
        if same_subsets && cur_labels == labels && marked == truncated {
            return Ok(Action::Done);
        }
    }
    let mut obj = match &current {
        Some(cur) => (**cur).clone(),
        None => json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": name, "namespace": ns}}),
    };
    let meta = obj["metadata"].as_object_mut().expect("metadata is an object");
    meta.insert("labels".into(), Value::Object(labels));
    let mut annotations = meta.get("annotations").and_then(Value::as_object).cloned().unwrap_or_default();
    if truncated {
        annotations.insert(OVER_CAPACITY.into(), json!("truncated"));
    } else {
        annotations.remove(OVER_CAPACITY);
    }
    if annotations.is_empty() {
        meta.remove("annotations");
    } else {
        meta.insert("annotations".into(), Value::Object(annotations));
    }
    let map = obj.as_object_mut().expect("object");
    match subsets_value {
        Some(s) => map.insert("subsets".into(), s),
        None => map.remove("subsets"),
    };
    let result = if current.is_some() {
        ctx.client.update(endpoints(), ns, obj).await
    } else {
        ctx.client.create(endpoints(), ns, obj).await
    };
    match result {
        Ok(_) => Ok(Action::Done),
        // The namespace is terminating (or gone): nothing can be created in it any more.
        Err(e) if current.is_none() && (e.code == 403 || e.code == 404) => Ok(Action::Done),
        Err(e) => {
            if e.code != 409 {
                let (reason, msg) = if current.is_some() {
                    ("FailedToUpdateEndpoint", format!("Failed to update endpoint {key}: {}", e.message))
                } else {
                    ("FailedToCreateEndpoint", format!("Failed to create endpoint for service {key}: {}", e.message))
                };
                let about = json!({"metadata": {"name": name, "namespace": ns, "uid": str_at(&svc, "/metadata/uid")}});
                ctx.events.record(&about, "Endpoints", "v1", "Warning", reason, &msg).await;
            }
            Err(e)
        }
    }
}

/// The address family the Service's Endpoints use: its first IP family, else its cluster IP's.
fn wants_ipv6(svc: &Value, pod_first: Option<&IpAddr>) -> bool {
    match svc.pointer("/spec/ipFamilies").and_then(Value::as_array).and_then(|f| f.first()).and_then(Value::as_str) {
        Some(f) => f == "IPv6",
        None => match str_at(svc, "/spec/clusterIP").parse::<IpAddr>() {
            Ok(ip) => ip.is_ipv6(),
            Err(_) => pod_first.is_some_and(IpAddr::is_ipv6),
        },
    }
}

/// Ports, ready addresses and not-ready addresses of one subset in the making.
type Group = (Vec<Value>, Vec<Value>, Vec<Value>);

/// One address per pod (with its node and pod reference), grouped into subsets by port set.
fn desired_subsets(svc: &Value, pods: &[std::sync::Arc<Value>]) -> Vec<Value> {
    let tolerate_unready = publish_not_ready(svc);
    let svc_ports = svc.pointer("/spec/ports").and_then(Value::as_array).cloned().unwrap_or_default();
    // port set key → (ports, ready addresses, not-ready addresses)
    let mut groups: BTreeMap<String, Group> = BTreeMap::new();
    for pod in pods {
        if !should_be_in_endpoints(pod, tolerate_unready) {
            continue;
        }
        let ips = pod_ips(pod);
        let v6 = wants_ipv6(svc, ips.first());
        let Some(ip) = ips.iter().find(|ip| ip.is_ipv6() == v6) else { continue };
        let mut addr = Map::new();
        addr.insert("ip".into(), json!(ip.to_string()));
        if should_set_hostname(pod, svc) {
            addr.insert("hostname".into(), json!(str_at(pod, "/spec/hostname")));
        }
        let node = str_at(pod, "/spec/nodeName");
        if !node.is_empty() {
            addr.insert("nodeName".into(), json!(node));
        }
        addr.insert(
            "targetRef".into(),
            json!({
                "kind": "Pod",
                "namespace": str_at(pod, "/metadata/namespace"),
                "name": str_at(pod, "/metadata/name"),
                "uid": str_at(pod, "/metadata/uid"),
            }),
        );
        let addr = Value::Object(addr);
        let ready = tolerate_unready || pod_ready(pod);
        let mut add = |ports: Vec<Value>| {
            let key = ports.iter().map(Value::to_string).collect::<Vec<_>>().join(";");
            let g = groups.entry(key).or_insert_with(|| (ports, Vec::new(), Vec::new()));
            if ready { g.1.push(addr.clone()) } else { g.2.push(addr.clone()) }
        };
        if svc_ports.is_empty() {
            // A headless Service may have no ports.
            if str_at(svc, "/spec/clusterIP") == "None" {
                add(Vec::new());
            }
            continue;
        }
        for p in &svc_ports {
            let Some(num) = find_port(pod, p) else { continue };
            let mut port = Map::new();
            if !str_at(p, "/name").is_empty() {
                port.insert("name".into(), json!(str_at(p, "/name")));
            }
            port.insert("port".into(), json!(num));
            port.insert(
                "protocol".into(),
                json!(if str_at(p, "/protocol").is_empty() { "TCP" } else { str_at(p, "/protocol") }),
            );
            if let Some(app) = p.get("appProtocol").filter(|a| a.is_string()) {
                port.insert("appProtocol".into(), app.clone());
            }
            add(vec![Value::Object(port)]);
        }
    }
    // Repack: addresses that share every port form one subset.
    let mut by_address: BTreeMap<(String, bool), (Value, Vec<Value>)> = BTreeMap::new();
    for (ports, ready, not_ready) in groups.into_values() {
        for (list, is_ready) in [(ready, true), (not_ready, false)] {
            for a in list {
                let k = (address_sort_key(&a), is_ready);
                by_address.entry(k).or_insert_with(|| (a.clone(), Vec::new())).1.extend(ports.iter().cloned());
            }
        }
    }
    let mut subsets: BTreeMap<String, Group> = BTreeMap::new();
    for ((_, is_ready), (addr, mut ports)) in by_address {
        ports.sort_by_key(|p| (str_at(p, "/name").to_string(), p.get("port").and_then(Value::as_i64)));
        let key = ports.iter().map(Value::to_string).collect::<Vec<_>>().join(";");
        let s = subsets.entry(key).or_insert_with(|| (ports, Vec::new(), Vec::new()));
        if is_ready { s.1.push(addr) } else { s.2.push(addr) }
    }
    subsets
        .into_values()
        .map(|(ports, ready, not_ready)| {
            let mut s = Map::new();
            if !ready.is_empty() {
                s.insert("addresses".into(), Value::Array(ready));
            }
            if !not_ready.is_empty() {
                s.insert("notReadyAddresses".into(), Value::Array(not_ready));
            }
            if !ports.is_empty() {
                s.insert("ports".into(), Value::Array(ports));
            }
            Value::Object(s)
        })
        .collect()
}

/// Addresses sort by IP (numerically), then by pod uid.
fn address_sort_key(a: &Value) -> String {
    let ip = match str_at(a, "/ip").parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => format!("{:032x}", u128::from(v4.to_ipv6_mapped())),
        Ok(IpAddr::V6(v6)) => format!("{:032x}", u128::from(v6)),
        Err(_) => str_at(a, "/ip").to_string(),
    };
    format!("{ip}/{}", str_at(a, "/targetRef/uid"))
}

/// Keeps at most [`MAX_CAPACITY`] addresses, ready ones first, spread over the subsets in
/// proportion. Returns whether anything was cut.
fn truncate(mut subsets: Vec<Value>) -> (Vec<Value>, bool) {
    let count = |s: &Value, k: &str| s.get(k).and_then(Value::as_array).map_or(0, Vec::len);
    let ready: usize = subsets.iter().map(|s| count(s, "addresses")).sum();
    let not_ready: usize = subsets.iter().map(|s| count(s, "notReadyAddresses")).sum();
    if ready + not_ready <= MAX_CAPACITY {
        return (subsets, false);
    }
    let truncate_ready = ready > MAX_CAPACITY;
    let (max, total, field) = if truncate_ready {
        (MAX_CAPACITY, ready, "addresses")
    } else {
        (MAX_CAPACITY - ready, not_ready, "notReadyAddresses")
    };
    let mut can_add = max;
    for s in &mut subsets {
        let n = count(s, field);
        let share = (n * max).div_ceil(total.max(1)).min(can_add);
        if let Some(list) = s.get_mut(field).and_then(Value::as_array_mut) {
            list.truncate(share);
        }
        can_add -= count(s, field);
        if truncate_ready && let Some(m) = s.as_object_mut() {
            m.remove("notReadyAddresses");
        }
    }
    subsets.retain(|s| count(s, "addresses") + count(s, "notReadyAddresses") > 0);
    (subsets, true)
}

/// The Endpoints of the `kubernetes` Service: the API server's address, when Endpoints may hold it.
async fn sync_kubernetes(ctx: &Ctx, svc: &Value, current: Option<&Value>) -> Result<Action, ApiError> {
    let advertise = ctx.client.api().advertise;
    if unpublishable(advertise.ip()) {
        return Ok(Action::Done);
    }
    let port_name = svc.pointer("/spec/ports/0/name").and_then(Value::as_str).unwrap_or("https");
    let subsets = json!([{
        "addresses": [{"ip": advertise.ip().to_string()}],
        "ports": [{"name": port_name, "port": advertise.port(), "protocol": "TCP"}],
    }]);
    match current {
        Some(cur) if cur.get("subsets") == Some(&subsets) => Ok(Action::Done),
        Some(cur) => {
            let mut n = cur.clone();
            n["subsets"] = subsets;
            ctx.client.update(endpoints(), "default", n).await?;
            Ok(Action::Done)
        }
        None => {
            let obj = json!({"metadata": {"name": "kubernetes", "namespace": "default",
                "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}}, "subsets": subsets});
            match ctx.client.create(endpoints(), "default", obj).await {
                Ok(_) => Ok(Action::Done),
                Err(e) if e.code == 409 => Ok(Action::RequeueAfter(Duration::from_millis(200))),
                Err(e) => Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn pod(name: &str, ip: &str, ready: bool) -> Arc<Value> {
        Arc::new(json!({"metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}]},
            "status": {"phase": "Running", "podIPs": [{"ip": ip}],
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}}))
    }

    #[test]
    fn ready_and_not_ready_addresses_share_a_subset() {
        let svc = json!({"metadata": {"name": "web", "namespace": "default"},
            "spec": {"clusterIP": "10.96.0.5", "ports": [{"port": 80, "protocol": "TCP", "targetPort": "http"}]}});
        let subsets = desired_subsets(
            &svc,
            &[pod("b", "10.244.0.9", true), pod("a", "10.244.0.10", false), pod("c", "10.244.0.2", true)],
        );
        assert_eq!(subsets.len(), 1, "{subsets:?}");
        let ips = |k: &str| -> Vec<String> {
            subsets[0][k].as_array().expect("list").iter().map(|a| a["ip"].as_str().expect("ip").to_string()).collect()
        };
        assert_eq!(ips("addresses"), ["10.244.0.2", "10.244.0.9"]);
        assert_eq!(ips("notReadyAddresses"), ["10.244.0.10"]);
        assert_eq!(subsets[0]["ports"], json!([{"port": 8080, "protocol": "TCP"}]));
    }

    #[test]
    fn truncates_to_capacity_ready_first() {
        let addrs =
            |n: usize| (0..n).map(|i| json!({"ip": format!("10.0.{}.{}", i / 250, i % 250)})).collect::<Vec<_>>();
        let subsets = vec![json!({"addresses": addrs(900), "notReadyAddresses": addrs(300), "ports": [{"port": 1}]})];
        let (out, cut) = truncate(subsets);
        assert!(cut);
        assert_eq!(out[0]["addresses"].as_array().expect("ready").len(), 900);
        assert_eq!(out[0]["notReadyAddresses"].as_array().expect("not ready").len(), 100);
    }
}
