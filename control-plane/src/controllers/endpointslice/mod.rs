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
//! `rules` holds what makes a pod an endpoint (shared with the Endpoints controller), `plan` the
//! comparison of desired endpoints with existing slices; this file the controller and its
//! bookkeeping of writes not yet seen in the cache.

mod plan;
mod rules;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use serde_json::{Value, json};
use tracing::{debug, warn};

use super::{Action, Change, Controller, Ctx, Watch, cache_key, key_of};
use crate::registry::{self, Resource};
use crate::server::errors::ApiError;
use crate::server::internal::DeleteParams;
use plan::{DesiredSet, Plan, address_types, endpoint_ports, labels_map, plan, pod_endpoint, port_key};
pub(crate) use rules::*;

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
