//! Leader election through a `coordination.k8s.io/v1` Lease, as client-go's leaderelection does:
//! the holder renews the lease every retry period; a candidate takes it over once it has seen
//! the same record unchanged for a whole lease duration (its own clock, so clock skew between
//! replicas does not matter); a leader that cannot renew within the renew deadline stops leading.

use std::future::Future;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::registry;
use crate::server::internal::Client;

#[derive(Clone, Debug)]
pub struct LeaderConfig {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl LeaderConfig {
    pub fn new(name: &str, identity: &str) -> Self {
        LeaderConfig {
            namespace: "kube-system".into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

fn micro_now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// What a candidate last saw of the lease, and when.
struct Observed {
    record: (String, String),
    at: Instant,
}

struct Elector {
    client: Client,
    cfg: LeaderConfig,
    observed: Option<Observed>,
}

impl Elector {
    /// Tries to become or stay leader. Returns whether this process holds the lease now.
    async fn try_acquire_or_renew(&mut self) -> bool {
        let res = registry::find("coordination.k8s.io", "v1", "leases").expect("leases are served");
        let now = micro_now();
        let secs = self.cfg.lease_duration.as_secs().max(1);
        let current = match self.client.get(res, &self.cfg.namespace, &self.cfg.name).await {
            Ok(l) => l,
            Err(e) if e.code == 404 => {
                let lease = json!({
                    "metadata": {"name": self.cfg.name, "namespace": self.cfg.namespace},
                    "spec": {"holderIdentity": self.cfg.identity, "leaseDurationSeconds": secs,
                             "acquireTime": now, "renewTime": now, "leaseTransitions": 0},
                });
                return self.client.create(res, &self.cfg.namespace, lease).await.is_ok();
            }
            Err(error) => {
                warn!(%error, "get leader lease");
                return false;
            }
        };
        let spec = current.get("spec").cloned().unwrap_or_else(|| json!({}));
        let holder = spec.get("holderIdentity").and_then(Value::as_str).unwrap_or("").to_string();
        let renew = spec.get("renewTime").and_then(Value::as_str).unwrap_or("").to_string();
        let record = (holder.clone(), renew);
        if self.observed.as_ref().is_none_or(|o| o.record != record) {
            self.observed = Some(Observed { record, at: Instant::now() });
        }
        let mine = holder == self.cfg.identity;
        let expired =
            holder.is_empty() || self.observed.as_ref().is_some_and(|o| o.at.elapsed() > self.cfg.lease_duration);
        if !mine && !expired {
            return false;
        }
        let mut new = current.clone();
        new["spec"]["holderIdentity"] = json!(self.cfg.identity);
        new["spec"]["leaseDurationSeconds"] = json!(secs);
        new["spec"]["renewTime"] = json!(now);
        if !mine {
            new["spec"]["acquireTime"] = json!(now);
            let t = spec.get("leaseTransitions").and_then(Value::as_i64).unwrap_or(0);
            new["spec"]["leaseTransitions"] = json!(t + 1);
        }
        // The resourceVersion in `new` makes this a compare-and-swap.
        match self.client.update(res, &self.cfg.namespace, new).await {
            Ok(_) => true,
            Err(e) => {
                if e.code != 409 {
                    warn!(error = %e, "update leader lease");
                }
                false
            }
        }
    }

    /// Gives the lease up on shutdown so that another replica takes over at once.
    async fn release(&mut self) {
        let res = registry::find("coordination.k8s.io", "v1", "leases").expect("leases are served");
        if let Ok(mut l) = self.client.get(res, &self.cfg.namespace, &self.cfg.name).await
            && l.pointer("/spec/holderIdentity").and_then(Value::as_str) == Some(self.cfg.identity.as_str())
        {
            l["spec"]["holderIdentity"] = json!("");
            l["spec"]["leaseDurationSeconds"] = json!(1);
            let _ = self.client.update(res, &self.cfg.namespace, l).await;
        }
    }
}

/// Runs `lead` while this process holds the lease (`lead` must return when its token is
/// cancelled); returns when `cancel` fires.
pub async fn run<F, Fut>(client: Client, cfg: LeaderConfig, cancel: CancellationToken, lead: F)
where
    F: Fn(CancellationToken) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let retry = cfg.retry_period;
    let deadline = cfg.renew_deadline;
    let mut e = Elector { client, cfg, observed: None };
    while !cancel.is_cancelled() {
        if !e.try_acquire_or_renew().await {
            tokio::select! {
                () = tokio::time::sleep(retry) => continue,
                () = cancel.cancelled() => break,
            }
        }
        info!(identity = %e.cfg.identity, lease = %e.cfg.name, "became leader");
        let term = cancel.child_token();
        let task = tokio::spawn(lead(term.clone()));
        let mut renewed = Instant::now();
        loop {
            tokio::select! {
                () = tokio::time::sleep(retry) => {}
                () = cancel.cancelled() => break,
            }
            if e.try_acquire_or_renew().await {
                renewed = Instant::now();
            } else if renewed.elapsed() > deadline {
                warn!(identity = %e.cfg.identity, "lost leadership");
                break;
            }
        }
        term.cancel();
        let _ = task.await;
        if cancel.is_cancelled() {
            e.release().await;
        }
    }
}
