//! Namespace lifecycle: a namespace marked for deletion has everything in it deleted, then its
//! `kubernetes` finalizer removed and the namespace itself deleted. Also creates the four initial
//! namespaces on start-up.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tracing::{info, warn};

use super::errors::ApiResult;
use super::{Api, rest};
use crate::registry::{self, RESOURCES};
use crate::storage::RangeRequest;

/// Namespaces every cluster has from its first start; none of them can be deleted.
pub const INITIAL: [&str; 4] = ["default", "kube-node-lease", "kube-public", "kube-system"];

fn namespaces() -> &'static registry::Resource {
    registry::find("", "v1", "namespaces").expect("namespaces are served")
}

/// Creates the initial namespaces that are missing.
pub async fn ensure_initial(api: &Api) -> ApiResult<()> {
    for name in INITIAL {
        let key = namespaces().key("", name);
        if api.store.get(&key, 0).await.map_err(|e| super::errors::ApiError::internal(e.to_string()))?.is_none() {
            rest::create_system_object(api, namespaces(), "", json!({"metadata": {"name": name}})).await?;
            info!(namespace = name, "created initial namespace");
        }
    }
    // The `kubernetes` Service, at the first address of the Service network.
    let services = registry::find("", "v1", "services").expect("services are served");
    let key = services.key("default", "kubernetes");
    if api.store.get(&key, 0).await.map_err(|e| super::errors::ApiError::internal(e.to_string()))?.is_none() {
        let svc = json!({
            "metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {
                "type": "ClusterIP",
                "clusterIP": super::allocation::KUBERNETES_SERVICE_IP,
                "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": api.advertise.port()}],
                "sessionAffinity": "None",
            },
        });
        rest::create_system_object(api, services, "default", svc).await?;
        info!("created the kubernetes Service");
    }
    Ok(())
}

/// Starts finalizing `name` in the background.
pub fn finalize_soon(api: &Api, name: &str) {
    let Some(api) = api.me.get().and_then(|w| w.upgrade()) else { return };
    let name = name.to_string();
    tokio::spawn(async move {
        // Objects held by finalizers keep the namespace Terminating for as long as they stay:
        // keep trying, backing off to a few seconds.
        let mut delay = Duration::from_millis(50);
        loop {
            match finalize(&api, &name).await {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) if e.code == 404 => return,
                Err(error) => warn!(%error, namespace = %name, "namespace finalization"),
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(3));
        }
    });
}

/// Resumes the finalization of namespaces that were terminating when the server stopped.
pub async fn resume(api: &Arc<Api>) -> ApiResult<()> {
    let resp = api
        .store
        .range(RangeRequest::prefix(&namespaces().prefix("")))
        .await
        .map_err(|e| super::errors::ApiError::internal(e.to_string()))?;
    for kv in resp.kvs {
        let ns = super::object::decode(&kv)?;
        if ns.pointer("/metadata/deletionTimestamp").is_some() {
            finalize_soon(api, super::object::name_of(&ns));
        }
    }
    Ok(())
}

/// One round: deletes what is left in the namespace; when nothing is, releases the namespace.
/// Returns true when the namespace is gone.
async fn finalize(api: &Api, name: &str) -> ApiResult<bool> {
    let mut remaining = 0;
    for res in RESOURCES.iter().filter(|r| r.namespaced) {
        let prefix = res.prefix(name);
        let resp = api
            .store
            .range(RangeRequest::prefix(&prefix))
            .await
            .map_err(|e| super::errors::ApiError::internal(e.to_string()))?;
        for kv in resp.kvs {
            remaining += 1;
            let obj = super::object::decode(&kv)?;
            if obj.pointer("/metadata/deletionTimestamp").is_none() {
                let obj_name = super::object::name_of(&obj).to_string();
                match rest::delete_system_object(api, res, name, &obj_name).await {
                    Ok(_) => {}
                    Err(e) if e.code == 404 => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    if remaining > 0 {
        return Ok(false);
    }
    // Empty: drop the `kubernetes` finalizer, which deletes the namespace when it is the last one.
    let res = namespaces();
    let r = rest::finalize_namespace(api, res, name, |cur| {
        let mut new = cur.clone();
        let fins: Vec<Value> = new
            .pointer("/spec/finalizers")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter(|f| f.as_str() != Some("kubernetes")).cloned().collect())
            .unwrap_or_default();
        new["spec"]["finalizers"] = json!(fins);
        Ok((new, None))
    })
    .await;
    match r {
        Ok(_) => {}
        Err(e) if e.code == 404 => return Ok(true),
        Err(e) => return Err(e),
    }
    // Deleted once neither spec nor metadata finalizers remain.
    let gone = api
        .store
        .get(&res.key("", name), 0)
        .await
        .map_err(|e| super::errors::ApiError::internal(e.to_string()))?
        .is_none();
    if !gone {
        // spec.finalizers are gone; metadata finalizers (if any) belong to someone else.
        let cur =
            api.store.get(&res.key("", name), 0).await.map_err(|e| super::errors::ApiError::internal(e.to_string()))?;
        if let Some(kv) = cur {
            let obj = super::object::decode(&kv)?;
            if super::object::finalizers(&obj).is_empty() {
                let _ = api.store.delete(&kv.key, kv.mod_revision).await;
                return Ok(true);
            }
        }
    }
    Ok(gone)
}
