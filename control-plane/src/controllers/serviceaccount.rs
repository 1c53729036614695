//! The ServiceAccount controller: every active namespace has a `default` ServiceAccount, created
//! when the namespace appears and again whenever it is deleted (kube-controller-manager's
//! `serviceaccount` controller). Terminating namespaces get none.

use futures::future::BoxFuture;
use serde_json::{Value, json};
use tracing::debug;

use super::{Action, Controller, Ctx, Watch};
use crate::registry::{self, Resource};
use crate::server::errors::ApiError;

pub const NAME: &str = "serviceaccount";
/// The ServiceAccounts every namespace gets.
pub const DEFAULT_NAMES: &[&str] = &["default"];

fn namespaces() -> &'static Resource {
    &registry::namespaces::RESOURCE
}

fn service_accounts() -> &'static Resource {
    &registry::serviceaccounts::RESOURCE
}

pub struct ServiceAccountController;

impl Controller for ServiceAccountController {
    fn name(&self) -> &'static str {
        NAME
    }

    fn watches(&self) -> Vec<Watch> {
        vec![
            Watch::own(namespaces()),
            Watch::mapped(service_accounts(), |_, change| {
                let sa = change.object();
                let name = sa.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
                if change.new.is_none() && DEFAULT_NAMES.contains(&name) {
                    let ns = sa.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("");
                    vec![ns.to_string()]
                } else {
                    Vec::new()
                }
            }),
        ]
    }

    fn reconcile<'a>(&'a self, ctx: &'a Ctx, key: &'a str) -> BoxFuture<'a, Result<Action, ApiError>> {
        Box::pin(sync(ctx, key))
    }
}

async fn sync(ctx: &Ctx, ns_name: &str) -> Result<Action, ApiError> {
    let Some(ns) = ctx.informers.get(namespaces()).get("", ns_name) else { return Ok(Action::Done) };
    let active = ns.pointer("/metadata/deletionTimestamp").is_none()
        && ns.pointer("/status/phase").and_then(Value::as_str).unwrap_or("Active") == "Active";
    if !active {
        return Ok(Action::Done);
    }
    let cache = ctx.informers.get(service_accounts());
    for name in DEFAULT_NAMES {
        if cache.get(ns_name, name).is_some() {
            continue;
        }
        let sa =
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": ns_name}});
        match ctx.client.create(service_accounts(), ns_name, sa).await {
            Ok(_) => debug!(namespace = ns_name, serviceaccount = name, "created ServiceAccount"),
            // Already there (the cache lags), or the namespace started terminating or went away.
            Err(e) if e.code == 409 || e.code == 403 || e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Action::Done)
}
