//! Controllers: level-triggered reconcile loops over keyed work queues, fed by shared informers.
//!
//! Each controller is one file with a type implementing [`Controller`]; [`REGISTRY`] lists them by
//! name so that `--controllers=*,-gc` can switch them. [`run`] starts the enabled ones; it is
//! called by the leader only (see `leader`).

pub mod deployment;
pub mod endpoints;
pub mod endpointslice;
pub mod events;
pub mod garbagecollector;
pub mod informer;
pub mod leader;
pub mod namespace;
pub mod nodeipam;
pub mod nodelifecycle;
pub mod queue;
pub mod replicaset;
pub mod serviceaccount;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument as _, debug, info_span, warn};

use crate::registry::Resource;
use crate::server::errors::ApiError;
use crate::server::internal::Client;
pub use informer::{Change, Informer, Informers, cache_key, key_of};
pub use queue::WorkQueue;

/// What a controller needs: the client for writes, the informers for reads, events.
#[derive(Clone)]
pub struct Ctx {
    pub client: Client,
    pub informers: Arc<Informers>,
    pub events: events::Recorder,
    pub cancel: CancellationToken,
    pub settings: Arc<Settings>,
}

/// Tunables shared by the controllers (tests shorten them).
#[derive(Clone, Debug)]
pub struct Settings {
    /// How long a node may be silent before it is NotReady (node lifecycle).
    pub node_monitor_grace_period: Duration,
    /// How often node health is checked.
    pub node_monitor_period: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { node_monitor_grace_period: Duration::from_secs(40), node_monitor_period: Duration::from_secs(5) }
    }
}

/// After a reconcile: done, or look again later.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Done,
    RequeueAfter(Duration),
}

/// Maps a change to the keys to reconcile.
pub type KeyMapper = Box<dyn Fn(&Ctx, &Change) -> Vec<String> + Send + Sync>;

/// A source of keys: changes of `resource` mapped to the keys to reconcile.
pub struct Watch {
    pub resource: &'static Resource,
    pub keys: KeyMapper,
}

impl Watch {
    /// Changes of `resource` enqueue the changed object's own key.
    pub fn own(resource: &'static Resource) -> Watch {
        Watch { resource, keys: Box::new(|_, c| vec![key_of(c.object())]) }
    }

    /// Changes of `resource` enqueue the keys that `f` derives.
    pub fn mapped(
        resource: &'static Resource,
        f: impl Fn(&Ctx, &Change) -> Vec<String> + Send + Sync + 'static,
    ) -> Watch {
        Watch { resource, keys: Box::new(f) }
    }
}

pub trait Controller: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    /// Which changes enqueue which keys. The first watch is the primary resource: on start and
    /// on a lagging subscription every key of its cache is enqueued.
    fn watches(&self) -> Vec<Watch>;
    /// Brings the object named by `key` (`namespace/name`) to its desired state, reading the caches.
    fn reconcile<'a>(&'a self, ctx: &'a Ctx, key: &'a str) -> BoxFuture<'a, Result<Action, ApiError>>;
    fn workers(&self) -> usize {
        2
    }
    /// Background work besides the queue (periodic checks); runs until `ctx.cancel`.
    fn background<'a>(&'a self, _ctx: &'a Ctx, _queue: &'a WorkQueue) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }
}

/// Every controller, by name.
pub fn registry() -> Vec<Arc<dyn Controller>> {
    vec![
        Arc::new(deployment::DeploymentController),
        Arc::new(replicaset::ReplicaSetController::default()),
        Arc::new(endpointslice::EndpointSliceController::default()),
        Arc::new(endpoints::EndpointsController),
        Arc::new(serviceaccount::ServiceAccountController),
        Arc::new(garbagecollector::GarbageCollector::default()),
        Arc::new(namespace::NamespaceController),
        Arc::new(nodeipam::NodeIpamController::default()),
        Arc::new(nodelifecycle::NodeLifecycleController::default()),
    ]
}

/// Parses `--controllers`: `*` is every controller, `name` enables, `-name` disables.
pub fn enabled(spec: &str, name: &str) -> bool {
    let mut on = false;
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part {
            "*" => on = true,
            p if p.strip_prefix('-') == Some(name) => return false,
            p if p == name => on = true,
            _ => {}
        }
    }
    on
}

/// Runs one controller until `ctx.cancel` fires.
pub async fn run_controller(ctx: Ctx, controller: Arc<dyn Controller>) {
    let queue = WorkQueue::new();
    let name = controller.name();
    let watches = controller.watches();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, w) in watches.into_iter().enumerate() {
        let informer = ctx.informers.get(w.resource);
        let mut rx = informer.subscribe();
        let (q, c) = (queue.clone(), ctx.clone());
        tasks.spawn(async move {
            informer.synced().await;
            if i == 0 {
                for k in informer.keys() {
                    q.add(k);
                }
            }
            loop {
                match rx.recv().await {
                    Ok(change) => {
                        for k in (w.keys)(&c, &change) {
                            q.add(k);
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        // Missed changes: look at everything again.
                        if i == 0 {
                            for k in informer.keys() {
                                q.add(k);
                            }
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }
    for _ in 0..controller.workers().max(1) {
        let (q, c, ctl) = (queue.clone(), ctx.clone(), controller.clone());
        tasks.spawn(async move {
            while let Some(key) = q.next().await {
                let span = info_span!("reconcile", controller = ctl.name(), object = %key);
                let result = ctl.reconcile(&c, &key).instrument(span).await;
                match result {
                    Ok(Action::Done) => q.forget(&key),
                    Ok(Action::RequeueAfter(d)) => {
                        q.forget(&key);
                        q.add_after(key.clone(), d);
                    }
                    Err(error) if error.code == 409 => {
                        debug!(controller = ctl.name(), object = %key, %error, "conflict; retrying");
                        q.add_rate_limited(key.clone());
                    }
                    Err(error) => {
                        warn!(controller = ctl.name(), object = %key, %error, "reconcile failed");
                        q.add_rate_limited(key.clone());
                    }
                }
                q.done(&key);
            }
        });
    }
    {
        let (c, ctl, q) = (ctx.clone(), controller.clone(), queue.clone());
        tasks.spawn(async move { ctl.background(&c, &q).await });
    }
    ctx.cancel.cancelled().await;
    queue.shut_down();
    tasks.abort_all();
    debug!(controller = name, "stopped");
}

/// Starts every enabled controller; returns when `ctx.cancel` fires.
pub async fn run(ctx: Ctx, controllers: Vec<Arc<dyn Controller>>) {
    let mut set = tokio::task::JoinSet::new();
    for c in controllers {
        set.spawn(run_controller(ctx.clone(), c));
    }
    while set.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controller_selection() {
        assert!(enabled("*", "gc"));
        assert!(!enabled("*,-gc", "gc"));
        assert!(enabled("*,-gc", "deployment"));
        assert!(enabled("deployment", "deployment"));
        assert!(!enabled("deployment", "gc"));
        assert!(!enabled("", "gc"));
    }
}
