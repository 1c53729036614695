//! Service ClusterIP and NodePort allocation, done while a Service is written as kube-apiserver's
//! service storage does. Each allocated address or port is a key in the store
//! (`/registry/ipaddresses/<ip>`, `/registry/servicenodeports/<port>`) created with
//! compare-and-swap, so one address is never handed out twice, and allocations survive restarts.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use serde_json::{Value, json};

use super::Api;
use super::errors::{ApiError, ApiResult};
use crate::registry::{self, Resource};
use crate::storage::StoreError;
use crate::validation::FieldErrors;

/// The Service network, `10.96.0.0/12`.
const SERVICE_NET: u32 = u32::from_be_bytes([10, 96, 0, 0]);
const SERVICE_BITS: u32 = 12;
/// Addresses below this offset are for clients that ask for one (kube-apiserver's static band).
const STATIC_BAND: u32 = 256;
pub const NODE_PORTS: std::ops::RangeInclusive<i64> = 30000..=32767;
/// The `kubernetes` Service's address.
pub const KUBERNETES_SERVICE_IP: &str = "10.96.0.1";

fn ip_key(ip: &str) -> String {
    format!("/registry/ipaddresses/{ip}")
}

fn port_key(port: i64) -> String {
    format!("/registry/servicenodeports/{port}")
}

/// Whether writes of `res` allocate (only Services).
pub fn applies(res: &Resource) -> bool {
    registry::find("", "v1", "services").is_some_and(|s| std::ptr::eq(s, res))
}

fn owner(svc: &Value) -> Vec<u8> {
    let ns = svc.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("");
    let name = svc.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
    serde_json::to_vec(&json!({"service": format!("{ns}/{name}")})).expect("json")
}

/// Addresses a Service holds.
fn ips(svc: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    if let Some(a) = svc.pointer("/spec/clusterIPs").and_then(Value::as_array) {
        out.extend(a.iter().filter_map(Value::as_str).map(str::to_string));
    }
    if let Some(ip) = svc.pointer("/spec/clusterIP").and_then(Value::as_str) {
        out.insert(ip.to_string());
    }
    out.retain(|ip| ip.parse::<Ipv4Addr>().is_ok());
    out
}

/// Node ports a Service holds.
fn node_ports(svc: &Value) -> BTreeSet<i64> {
    svc.pointer("/spec/ports")
        .and_then(Value::as_array)
        .map(|ps| ps.iter().filter_map(|p| p.get("nodePort").and_then(Value::as_i64)).filter(|p| *p != 0).collect())
        .unwrap_or_default()
}

fn wants_cluster_ip(svc: &Value) -> bool {
    svc.pointer("/spec/type").and_then(Value::as_str).unwrap_or("ClusterIP") != "ExternalName"
        && svc.pointer("/spec/clusterIP").and_then(Value::as_str) != Some("None")
}

fn wants_node_ports(svc: &Value) -> bool {
    matches!(svc.pointer("/spec/type").and_then(Value::as_str), Some("NodePort" | "LoadBalancer"))
}

/// Keys taken by one write, released again if the write does not happen.
#[derive(Default)]
pub struct Taken(Vec<String>);

impl Taken {
    pub async fn release(self, api: &Api) {
        for key in self.0 {
            let _ = api.store.delete(&key, 0).await;
        }
    }
}

async fn claim(api: &Api, key: &str, svc: &Value) -> ApiResult<bool> {
    match api.store.create(key, owner(svc)).await {
        Ok(_) => Ok(true),
        Err(StoreError::AlreadyExists { .. }) => Ok(false),
        Err(e) => Err(ApiError::internal(e.to_string())),
    }
}

fn invalid(res: &Resource, svc: &Value, field: &str, value: Value, detail: &str) -> ApiError {
    let mut errs = FieldErrors::default();
    errs.invalid(field, value, detail);
    ApiError::invalid(res, svc.pointer("/metadata/name").and_then(Value::as_str).unwrap_or(""), &errs)
}

/// Allocates what `svc` needs and does not hold in `old`: a cluster IP (the requested one, or a
/// free one) and node ports. Fills them into `svc`.
pub async fn allocate(api: &Api, res: &Resource, svc: &mut Value, old: Option<&Value>) -> ApiResult<Taken> {
    let mut taken = Taken::default();
    match allocate_into(api, res, svc, old, &mut taken).await {
        Ok(()) => Ok(taken),
        Err(e) => {
            taken.release(api).await;
            Err(e)
        }
    }
}

async fn allocate_into(
    api: &Api,
    res: &Resource,
    svc: &mut Value,
    old: Option<&Value>,
    taken: &mut Taken,
) -> ApiResult<()> {
    let held_ips = old.map(ips).unwrap_or_default();
    let held_ports = old.map(node_ports).unwrap_or_default();
    if wants_cluster_ip(svc) {
        let requested = svc.pointer("/spec/clusterIP").and_then(Value::as_str).unwrap_or("").to_string();
        if requested.is_empty() {
            let ip = pick_ip(api, svc, taken).await?;
            svc["spec"]["clusterIP"] = json!(ip);
            svc["spec"]["clusterIPs"] = json!([ip]);
        } else if !held_ips.contains(&requested) {
            let in_range = requested
                .parse::<Ipv4Addr>()
                .is_ok_and(|a| u32::from(a) >> (32 - SERVICE_BITS) == SERVICE_NET >> (32 - SERVICE_BITS));
            if !in_range {
                return Err(invalid(
                    res,
                    svc,
                    "spec.clusterIPs",
                    json!([requested]),
                    &format!(
                        "failed to allocate IP {requested}: the provided IP ({requested}) is not in the valid range. The range of valid IPs is 10.96.0.0/12"
                    ),
                ));
            }
            let key = ip_key(&requested);
            if !claim(api, &key, svc).await? {
                return Err(invalid(
                    res,
                    svc,
                    "spec.clusterIPs",
                    json!([requested]),
                    &format!("failed to allocate IP {requested}: provided IP is already allocated"),
                ));
            }
            taken.0.push(key);
            if svc.pointer("/spec/clusterIPs").and_then(Value::as_array).is_none_or(Vec::is_empty) {
                svc["spec"]["clusterIPs"] = json!([requested]);
            }
        }
    }
    if wants_node_ports(svc) {
        let n = svc.pointer("/spec/ports").and_then(Value::as_array).map_or(0, Vec::len);
        for i in 0..n {
            let requested = svc["spec"]["ports"][i].get("nodePort").and_then(Value::as_i64).unwrap_or(0);
            if requested == 0 {
                let port = pick_port(api, svc, taken).await?;
                svc["spec"]["ports"][i]["nodePort"] = json!(port);
            } else if !held_ports.contains(&requested) {
                let key = port_key(requested);
                if !claim(api, &key, svc).await? {
                    return Err(invalid(
                        res,
                        svc,
                        &format!("spec.ports[{i}].nodePort"),
                        json!(requested),
                        "provided port is already allocated",
                    ));
                }
                taken.0.push(key);
            }
        }
    }
    Ok(())
}

async fn pick_ip(api: &Api, svc: &Value, taken: &mut Taken) -> ApiResult<String> {
    let size = 1u32 << (32 - SERVICE_BITS);
    let dynamic = STATIC_BAND..size - 1;
    let start = rand::random_range(dynamic.clone());
    // Random start, then a linear probe: finds a free address whenever one exists.
    for i in 0..dynamic.len() as u32 {
        let offset = dynamic.start + (start - dynamic.start + i) % (dynamic.end - dynamic.start);
        let ip = Ipv4Addr::from(SERVICE_NET + offset).to_string();
        let key = ip_key(&ip);
        if claim(api, &key, svc).await? {
            taken.0.push(key);
            return Ok(ip);
        }
    }
    Err(ApiError::internal("failed to allocate a serviceIP: range is full"))
}

async fn pick_port(api: &Api, svc: &Value, taken: &mut Taken) -> ApiResult<i64> {
    let (lo, hi) = (*NODE_PORTS.start(), *NODE_PORTS.end());
    let span = hi - lo + 1;
    let start = rand::random_range(0..span);
    for i in 0..span {
        let port = lo + (start + i) % span;
        let key = port_key(port);
        if claim(api, &key, svc).await? {
            taken.0.push(key);
            return Ok(port);
        }
    }
    Err(ApiError::internal("failed to allocate a nodePort: range is full"))
}

/// Releases what `old` held and `new` (if any) no longer does.
pub async fn release_unused(api: &Api, old: &Value, new: Option<&Value>) {
    let keep_ips = new.map(ips).unwrap_or_default();
    let keep_ports = new.map(node_ports).unwrap_or_default();
    for ip in ips(old).difference(&keep_ips) {
        let _ = api.store.delete(&ip_key(ip), 0).await;
    }
    for port in node_ports(old).difference(&keep_ports) {
        let _ = api.store.delete(&port_key(*port), 0).await;
    }
}
