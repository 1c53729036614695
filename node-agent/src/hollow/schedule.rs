//! The two periodic per-node jobs, Lease renewal and condition heartbeat: one loop each for all
//! nodes, walking the nodes evenly over the period ([`super::sweep`]). A node whose previous
//! job of the same kind is still in flight is skipped for that round; paused and deleted nodes
//! are skipped always. Each job takes a write slot, so a slow API server slows the loop rather
//! than piling up requests.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::time::{Instant, MissedTickBehavior};
use tracing::{debug, warn};

use super::sweep::Sweep;
use super::{Counters, Shared, lease, node};

#[derive(Clone, Copy, Debug)]
pub(crate) enum Job {
    Lease,
    Heartbeat,
}

impl Job {
    fn busy(self, shared: &Shared, idx: usize) -> &AtomicBool {
        let slot = &shared.nodes[idx];
        match self {
            Job::Lease => &slot.lease_busy,
            Job::Heartbeat => &slot.heartbeat_busy,
        }
    }

    fn period(self, shared: &Shared) -> std::time::Duration {
        match self {
            Job::Lease => shared.cfg.renew_every,
            Job::Heartbeat => shared.cfg.heartbeat_every,
        }
    }

    async fn run(self, shared: &Shared, idx: usize) {
        let slot = &shared.nodes[idx];
        if !shared.serving(idx) {
            return;
        }
        let c = &shared.counters;
        let (result, ok, failed, what) = match self {
            Job::Lease => (lease::renew(shared, slot).await, &c.lease_renewals, &c.lease_failures, "lease renewal"),
            Job::Heartbeat => (node::heartbeat(shared, slot).await, &c.heartbeats, &c.heartbeat_failures, "heartbeat"),
        };
        match result {
            Ok(()) => Counters::bump(ok),
            // The Node was deleted; the Node watch takes it out of service.
            Err(error) if node::is_status(&error, 404) && matches!(self, Job::Heartbeat) => {
                debug!(node = %slot.name, "heartbeat: node not found");
            }
            Err(error) => {
                Counters::bump(failed);
                warn!(%error, node = %slot.name, "{what} failed");
            }
        }
    }
}

/// Runs `job` for every node, spread over its period, until shutdown.
pub(crate) async fn sweep(shared: Arc<Shared>, job: Job) {
    let mut sweep = Sweep::new(shared.nodes.len(), job.period(&shared), Instant::now());
    let mut ticker = tokio::time::interval(sweep.tick());
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shared.cancel.cancelled() => return,
            _ = ticker.tick() => {}
        }
        for idx in sweep.due(Instant::now()) {
            if shared.serving(idx) {
                run_now(&shared, idx, job).await;
            }
        }
    }
}

/// Starts `job` for node `idx` unless the same job is already in flight for it. Waits for a
/// write slot, then runs the request in the background.
pub(crate) async fn run_now(shared: &Arc<Shared>, idx: usize, job: Job) {
    if job.busy(shared, idx).swap(true, Ordering::AcqRel) {
        return;
    }
    let Some(permit) = shared.write_permit().await else {
        job.busy(shared, idx).store(false, Ordering::Release);
        return;
    };
    let s = shared.clone();
    shared.tracker.spawn(async move {
        job.run(&s, idx).await;
        drop(permit);
        job.busy(&s, idx).store(false, Ordering::Release);
    });
}
