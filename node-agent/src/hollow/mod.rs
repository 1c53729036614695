//! Hollow nodes: many simulated kubelets in one process, for scale tests of the control plane
//! (Kubernetes' kubemark). Each hollow node registers a Node, keeps a Lease in
//! `kube-node-lease`, re-posts its conditions, and reports the pods bound to it Running with an
//! address from its podCIDR, without running anything. Deleted pods are finished off at once.
//!
//! Built to stay cheap at thousands of nodes: one shared client over one HTTP/2 connection,
//! one Pod watch and one Node watch for all nodes, periodic work spread evenly over its period,
//! and every write behind one bounded semaphore. Tests drive it in-process through
//! [`HollowCluster`] (and can [`HollowCluster::pause_node`] a node to play a dead kubelet); the
//! `node-agent hollow` command wraps the same type.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::StreamExt as _;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument as _, info, info_span, warn};

mod client;
pub mod config;
mod ipam;
mod lease;
mod node;
mod pods;
mod queue;
mod schedule;
mod sweep;

pub use client::{client_for, connect};
pub use config::{HollowConfig, MAX_NODES, parse_labels};

use node::NodeSlot;
use pods::{PodKey, PodTable};
use queue::WorkQueue;

/// How long [`HollowCluster::shutdown`] waits for writes in flight.
const DRAIN: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum HollowError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("load kubeconfig {path}")]
    Kubeconfig {
        path: std::path::PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("build the API client")]
    Client(#[source] kube::Error),
    #[error("register node {node}")]
    Register {
        node: String,
        #[source]
        source: kube::Error,
    },
    #[error("no hollow node is named {0:?}")]
    UnknownNode(String),
}

/// Counts since start, for tests and benchmarks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HollowStats {
    pub nodes_registered: u64,
    pub lease_renewals: u64,
    pub lease_failures: u64,
    pub heartbeats: u64,
    pub heartbeat_failures: u64,
    pub pods_started: u64,
    pub pods_deleted: u64,
    pub pod_failures: u64,
}

#[derive(Default)]
struct Counters {
    nodes_registered: AtomicU64,
    lease_renewals: AtomicU64,
    lease_failures: AtomicU64,
    heartbeats: AtomicU64,
    heartbeat_failures: AtomicU64,
    pods_started: AtomicU64,
    pods_deleted: AtomicU64,
    pod_failures: AtomicU64,
}

impl Counters {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> HollowStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        HollowStats {
            nodes_registered: get(&self.nodes_registered),
            lease_renewals: get(&self.lease_renewals),
            lease_failures: get(&self.lease_failures),
            heartbeats: get(&self.heartbeats),
            heartbeat_failures: get(&self.heartbeat_failures),
            pods_started: get(&self.pods_started),
            pods_deleted: get(&self.pods_deleted),
            pod_failures: get(&self.pod_failures),
        }
    }
}

/// State shared by every task of one hollow cluster.
pub(crate) struct Shared {
    client: kube::Client,
    cfg: HollowConfig,
    nodes: Vec<NodeSlot>,
    by_name: HashMap<String, usize>,
    writes: Arc<Semaphore>,
    pods: PodTable,
    queue: Arc<WorkQueue<PodKey>>,
    cancel: CancellationToken,
    tracker: TaskTracker,
    counters: Counters,
}

impl Shared {
    /// A write slot, or `None` once shutting down.
    async fn write_permit(&self) -> Option<OwnedSemaphorePermit> {
        tokio::select! {
            _ = self.cancel.cancelled() => None,
            p = self.writes.clone().acquire_owned() => p.ok(),
        }
    }

    fn node(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    fn serving(&self, idx: usize) -> bool {
        let slot = &self.nodes[idx];
        !slot.paused.load(Ordering::Acquire) && !slot.gone.load(Ordering::Acquire)
    }
}

/// A running set of hollow nodes. Dropping it stops its tasks without waiting for them;
/// [`HollowCluster::shutdown`] waits.
pub struct HollowCluster {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
    runtime: tokio::runtime::Handle,
}

impl HollowCluster {
    /// Validates the configuration, connects, registers every node (creating it, or updating
    /// the status of one left by an earlier run) with its Lease, then starts the watches,
    /// heartbeats and pod handling in the background. Returns once all nodes are registered.
    pub async fn start(cfg: HollowConfig) -> Result<HollowCluster, HollowError> {
        cfg.validate()?;
        let client = connect(&cfg.kubeconfig).await?;
        Self::start_with_client(client, cfg).await
    }

    /// As [`HollowCluster::start`], on a client the caller built (`cfg.kubeconfig` is unused).
    pub async fn start_with_client(client: kube::Client, cfg: HollowConfig) -> Result<HollowCluster, HollowError> {
        cfg.validate()?;
        let nodes: Vec<NodeSlot> = (0..cfg.nodes).map(|i| NodeSlot::new(i, cfg.node_name(i))).collect();
        let by_name = nodes.iter().map(|n| (n.name.clone(), n.index)).collect();
        let shared = Arc::new(Shared {
            client,
            writes: Arc::new(Semaphore::new(cfg.max_inflight)),
            pods: PodTable::new(cfg.nodes),
            queue: WorkQueue::new(),
            cancel: CancellationToken::new(),
            tracker: TaskTracker::new(),
            counters: Counters::default(),
            nodes,
            by_name,
            cfg,
        });
        let started = std::time::Instant::now();
        let mut results = futures::stream::iter(0..shared.cfg.nodes)
            .map(|i| node::register(&shared, i))
            .buffer_unordered(shared.cfg.max_inflight);
        while let Some(r) = results.next().await {
            r?;
        }
        drop(results);
        info!(nodes = shared.cfg.nodes, elapsed_ms = started.elapsed().as_millis(), "hollow nodes registered");

        let s = &shared;
        let mut tasks = vec![
            tokio::spawn(node::watch(s.clone()).instrument(info_span!("node_watch"))),
            tokio::spawn(pods::watch(s.clone()).instrument(info_span!("pod_watch"))),
            tokio::spawn(schedule::sweep(s.clone(), schedule::Job::Lease).instrument(info_span!("lease_renewals"))),
            tokio::spawn(schedule::sweep(s.clone(), schedule::Job::Heartbeat).instrument(info_span!("heartbeats"))),
        ];
        let workers = (shared.cfg.max_inflight / 2).clamp(1, 64);
        tasks.extend(
            (0..workers).map(|w| tokio::spawn(pods::worker(s.clone()).instrument(info_span!("pod_worker", w)))),
        );
        Ok(HollowCluster { shared, tasks, runtime: tokio::runtime::Handle::current() })
    }

    /// Names of the simulated nodes, in index order.
    pub fn node_names(&self) -> Vec<String> {
        self.shared.nodes.iter().map(|n| n.name.clone()).collect()
    }

    /// The shared API client.
    pub fn client(&self) -> kube::Client {
        self.shared.client.clone()
    }

    pub fn stats(&self) -> HollowStats {
        self.shared.counters.snapshot()
    }

    /// Plays a dead kubelet: the node stops renewing its Lease, stops posting status and stops
    /// handling its pods (new pods stay Pending, deleted ones stay Terminating).
    pub fn pause_node(&self, name: &str) -> Result<(), HollowError> {
        let idx = self.shared.node(name).ok_or_else(|| HollowError::UnknownNode(name.to_string()))?;
        self.shared.nodes[idx].paused.store(true, Ordering::Release);
        info!(node = name, "hollow node paused");
        Ok(())
    }

    /// Brings a paused node back: it renews its Lease and posts its status at once, then
    /// catches up with its pods.
    pub fn resume_node(&self, name: &str) -> Result<(), HollowError> {
        let idx = self.shared.node(name).ok_or_else(|| HollowError::UnknownNode(name.to_string()))?;
        if !self.shared.nodes[idx].paused.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        info!(node = name, "hollow node resumed");
        let shared = self.shared.clone();
        self.runtime.spawn(async move {
            schedule::run_now(&shared, idx, schedule::Job::Lease).await;
            node::refresh(&shared, &shared.nodes[idx]).await;
            schedule::run_now(&shared, idx, schedule::Job::Heartbeat).await;
            pods::enqueue_node(&shared, idx);
        });
        Ok(())
    }

    /// Stops every task and waits briefly for writes in flight. Nodes and Leases stay in the
    /// API (as when kubelets stop), so the control plane sees them expire.
    pub async fn shutdown(mut self) {
        self.shared.cancel.cancel();
        self.shared.queue.close();
        for t in std::mem::take(&mut self.tasks) {
            if let Err(error) = t.await
                && error.is_panic()
            {
                warn!(%error, "hollow task panicked");
            }
        }
        self.shared.tracker.close();
        if tokio::time::timeout(DRAIN, self.shared.tracker.wait()).await.is_err() {
            warn!("hollow writes still in flight after shutdown grace period");
        }
        info!("hollow nodes stopped");
    }
}

impl Drop for HollowCluster {
    fn drop(&mut self) {
        self.shared.cancel.cancel();
        self.shared.queue.close();
    }
}
