//! What makes a pod an endpoint of a Service, shared with the Endpoints controller: readiness,
//! addresses, port resolution, and which Services select a pod.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use serde_json::{Value, json};

use super::{LABEL_ZONE, pods, services};
use crate::controllers::{Change, Ctx, key_of};
use crate::selectors::labels_of;

pub(crate) fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

pub(super) fn arr<'a>(v: &'a Value, pointer: &str) -> &'a [Value] {
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

pub(super) fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
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
pub(super) fn pod_terminal(pod: &Value) -> bool {
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

pub(super) fn protocol_of(port: &Value) -> &str {
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
pub(super) fn endpoint_projection(pod: &Value) -> Value {
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
pub(super) fn services_for_node_change(ctx: &Ctx, change: &Change) -> Vec<String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_target_port_resolves_per_pod() {
        let p = json!({"spec": {"containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]}]}});
        assert_eq!(find_port(&p, &json!({"targetPort": "http", "protocol": "TCP"})), Some(8080));
        assert_eq!(find_port(&p, &json!({"targetPort": "http", "protocol": "UDP"})), None);
        assert_eq!(find_port(&p, &json!({"targetPort": 9000})), Some(9000));
        assert_eq!(find_port(&p, &json!({"targetPort": "metrics"})), None);
    }
}
