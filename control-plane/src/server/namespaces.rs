//! The namespaces every cluster starts with (and the `kubernetes` Service). Emptying and
//! finalizing a namespace marked for deletion is the namespace controller's work
//! (`controllers::namespace`).

use serde_json::json;
use tracing::info;

use super::errors::ApiResult;
use super::{Api, rest};
use crate::registry;

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
