//! The service proxy: follows Services and EndpointSlices and keeps the datapath's service table
//! equal to what they ask for (the watch half of the kube-proxy replacement; the maps and
//! programs are [`crate::datapath`]'s, which this module only hands desired state).
//!
//! - [`desired`]: the pure conversion of Services and EndpointSlices into frontends and backends;
//! - [`cache`]: the objects seen so far and the incremental changes one event causes;
//! - [`show`]: the text of `node-agent lb list|stats`;
//! - [`run`]: the watch loop. It waits for the first complete list of both kinds, then makes the
//!   datapath hold exactly the desired table with one [`LoadBalancer::sync`]; afterwards each
//!   event recomputes only the Service it touches and hands the datapath one
//!   [`LoadBalancer::upsert`] or [`LoadBalancer::remove`] per changed frontend. Events arriving
//!   within [`ProxyConfig::debounce`] of each other are applied together. A relist (the watcher
//!   restarted, e.g. after its resource version expired) and any failed datapath write lead to a
//!   full sync again; failed writes are retried with exponential backoff. Watch errors are
//!   logged and retried by the watchers' own backoff. Nothing here panics on bad input.

pub mod cache;
pub mod desired;
pub mod show;

use std::net::Ipv4Addr;
use std::time::Duration;

use futures::{Stream, StreamExt as _};
use k8s_openapi::api::core::v1::Service as KubeService;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::{WatchStreamExt as _, watcher};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument as _, debug, info, info_span, warn};

use crate::datapath::{self, Datapath, Protocol, Service, SyncStats};
use cache::{Cache, Change};

/// What the watch loop programs: the datapath, or a fake in tests.
pub trait LoadBalancer {
    /// Makes the table hold exactly `desired`.
    fn sync(&mut self, desired: &[Service]) -> Result<SyncStats, datapath::Error>;
    /// Adds or changes one frontend.
    fn upsert(&mut self, service: &Service) -> Result<SyncStats, datapath::Error>;
    /// Removes one frontend.
    fn remove(&mut self, vip: Ipv4Addr, port: u16, proto: Protocol) -> Result<SyncStats, datapath::Error>;
}

impl LoadBalancer for Datapath {
    fn sync(&mut self, desired: &[Service]) -> Result<SyncStats, datapath::Error> {
        Datapath::sync(self, desired)
    }

    fn upsert(&mut self, service: &Service) -> Result<SyncStats, datapath::Error> {
        Datapath::upsert(self, service)
    }

    fn remove(&mut self, vip: Ipv4Addr, port: u16, proto: Protocol) -> Result<SyncStats, datapath::Error> {
        Datapath::remove(self, vip, port, proto)
    }
}

/// Timing of the watch loop.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// How long after the first event of a burst the changes are applied.
    pub debounce: Duration,
    /// First retry delay after a failed datapath write; doubled per failure.
    pub retry_min: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// The node this proxy runs on, for `internalTrafficPolicy: Local` and
    /// `externalTrafficPolicy: Local` (without it neither policy is applied).
    pub node_name: Option<String>,
    /// This node's addresses: NodePort and LoadBalancer Services get a frontend on each of them
    /// per node port (none: no node port frontends).
    pub node_addresses: Vec<Ipv4Addr>,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            debounce: Duration::from_millis(20),
            retry_min: Duration::from_millis(100),
            retry_max: Duration::from_secs(10),
            node_name: None,
            node_addresses: Vec::new(),
        }
    }
}

/// One event of either watch.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "moved once from the watcher into the cache; boxing costs an allocation per event"
)]
pub enum Event {
    Service(watcher::Event<KubeService>),
    Slice(watcher::Event<EndpointSlice>),
}

/// Watches every Service and EndpointSlice through `client` and keeps `lb` in step until
/// `cancel` fires.
pub async fn run(client: kube::Client, lb: &mut impl LoadBalancer, config: &ProxyConfig, cancel: CancellationToken) {
    let services = watcher(Api::<KubeService>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .map(|event| event.map(Event::Service));
    let slices = watcher(Api::<EndpointSlice>::all(client), watcher::Config::default())
        .default_backoff()
        .map(|event| event.map(Event::Slice));
    let events = futures::stream::select(services.boxed(), slices.boxed());
    run_events(events, lb, config, cancel).instrument(info_span!("proxy")).await;
}

/// The loop of [`run`] over any stream of watch events (tests feed it by hand).
pub async fn run_events<S>(events: S, lb: &mut impl LoadBalancer, config: &ProxyConfig, cancel: CancellationToken)
where
    S: Stream<Item = Result<Event, watcher::Error>>,
{
    let mut events = std::pin::pin!(events);
    let mut state =
        State { cache: Cache::for_node(config.node_name.clone(), config.node_addresses.clone()), ..State::default() };
    let mut flush_at: Option<Instant> = None;
    let mut retry = config.retry_min;
    loop {
        let deadline = flush_at;
        tokio::select! {
            biased;
            () = cancel.cancelled() => return,
            () = sleep_until(deadline), if deadline.is_some() => {
                flush_at = None;
                match state.flush(lb) {
                    Ok(()) => retry = config.retry_min,
                    Err(error) => {
                        warn!(error = %ErrorChain(&error), retry_in = ?retry, "programming the datapath failed");
                        flush_at = Some(Instant::now() + retry);
                        retry = (retry * 2).min(config.retry_max);
                    }
                }
            }
            event = events.next() => match event {
                None => return,
                Some(Ok(event)) => {
                    if state.handle(event) && flush_at.is_none() {
                        flush_at = Some(Instant::now() + config.debounce);
                    }
                }
                Some(Err(error)) => warn!(error = %ErrorChain(&error), "watch failed; retrying"),
            },
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// The loop's state between events.
#[derive(Default)]
struct State {
    cache: Cache,
    /// Objects of a relist in progress.
    relist_services: Option<Vec<KubeService>>,
    relist_slices: Option<Vec<EndpointSlice>>,
    /// Whether each kind has been listed completely once.
    listed_services: bool,
    listed_slices: bool,
    /// The next flush syncs the whole table.
    full_sync: bool,
}

impl State {
    /// Takes one event in; says whether there is something to apply.
    fn handle(&mut self, event: Event) -> bool {
        match event {
            Event::Service(watcher::Event::Init) => self.relist_services = Some(Vec::new()),
            Event::Service(watcher::Event::InitApply(service)) => {
                self.relist_services.get_or_insert_with(Vec::new).push(service);
            }
            Event::Service(watcher::Event::InitDone) => {
                self.cache.replace_services(self.relist_services.take().unwrap_or_default());
                self.listed_services = true;
                self.full_sync = true;
                return true;
            }
            Event::Service(watcher::Event::Apply(service)) => {
                self.cache.apply_service(service);
                return true;
            }
            Event::Service(watcher::Event::Delete(service)) => {
                self.cache.delete_service(&service);
                return true;
            }
            Event::Slice(watcher::Event::Init) => self.relist_slices = Some(Vec::new()),
            Event::Slice(watcher::Event::InitApply(slice)) => {
                self.relist_slices.get_or_insert_with(Vec::new).push(slice);
            }
            Event::Slice(watcher::Event::InitDone) => {
                self.cache.replace_slices(self.relist_slices.take().unwrap_or_default());
                self.listed_slices = true;
                self.full_sync = true;
                return true;
            }
            Event::Slice(watcher::Event::Apply(slice)) => {
                self.cache.apply_slice(slice);
                return true;
            }
            Event::Slice(watcher::Event::Delete(slice)) => {
                self.cache.delete_slice(&slice);
                return true;
            }
        }
        false
    }

    /// Applies what changed; nothing until both kinds were listed (a table built from Services
    /// without their slices would drop every backend for a moment).
    fn flush(&mut self, lb: &mut impl LoadBalancer) -> Result<(), datapath::Error> {
        if !(self.listed_services && self.listed_slices) {
            return Ok(());
        }
        if self.full_sync {
            let table = self.cache.table();
            let stats = lb.sync(&table)?;
            self.full_sync = false;
            info!(
                services = table.len(),
                added = stats.services_added,
                updated = stats.services_updated,
                removed = stats.services_removed,
                map_writes = stats.map_writes,
                "synced the service table"
            );
            return Ok(());
        }
        for change in self.cache.changes() {
            let applied = match &change {
                Change::Upsert(service) => lb.upsert(service),
                Change::Remove { vip, port, proto } => lb.remove(*vip, *port, *proto),
            };
            match applied {
                Ok(stats) => debug!(?change, map_writes = stats.map_writes, "applied"),
                Err(error) => {
                    // The cache already counts the rest as applied: repair with a full sync.
                    self.full_sync = true;
                    return Err(error);
                }
            }
        }
        Ok(())
    }
}

/// Shows an error and its sources on one line.
struct ErrorChain<'a>(&'a dyn std::error::Error);

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(error) = source {
            write!(f, ": {error}")?;
            source = error.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    use super::desired::tests::{kube_service, ready, slice};
    use super::*;

    /// Records every call and keeps the table it would program.
    #[derive(Clone, Default)]
    struct FakeLb(Arc<Mutex<FakeState>>);

    #[derive(Default)]
    struct FakeState {
        calls: Vec<String>,
        table: BTreeMap<(Ipv4Addr, u16, Protocol), Service>,
        /// Fail this many calls from now on.
        failures: usize,
    }

    impl FakeLb {
        fn call(&self, what: String) -> Result<SyncStats, datapath::Error> {
            let mut state = self.0.lock().expect("fake lock");
            state.calls.push(what);
            if state.failures > 0 {
                state.failures -= 1;
                return Err(datapath::Error::ServiceIdsExhausted);
            }
            Ok(SyncStats::default())
        }

        fn calls(&self) -> Vec<String> {
            std::mem::take(&mut self.0.lock().expect("fake lock").calls)
        }

        fn table(&self) -> Vec<Service> {
            self.0.lock().expect("fake lock").table.values().cloned().collect()
        }
    }

    impl LoadBalancer for FakeLb {
        fn sync(&mut self, desired: &[Service]) -> Result<SyncStats, datapath::Error> {
            let stats = self.call(format!("sync {}", desired.len()))?;
            self.0.lock().expect("fake lock").table =
                desired.iter().map(|s| ((s.vip, s.port, s.proto), s.clone())).collect();
            Ok(stats)
        }

        fn upsert(&mut self, service: &Service) -> Result<SyncStats, datapath::Error> {
            let stats = self.call(format!("upsert {service}"))?;
            self.0.lock().expect("fake lock").table.insert((service.vip, service.port, service.proto), service.clone());
            Ok(stats)
        }

        fn remove(&mut self, vip: Ipv4Addr, port: u16, proto: Protocol) -> Result<SyncStats, datapath::Error> {
            let stats = self.call(format!("remove {vip}:{port}/{proto}"))?;
            self.0.lock().expect("fake lock").table.remove(&(vip, port, proto));
            Ok(stats)
        }
    }

    type Sender = tokio::sync::mpsc::UnboundedSender<Result<Event, watcher::Error>>;

    /// The loop on a paused clock, fed through the returned sender.
    fn start() -> (Sender, FakeLb, CancellationToken, tokio::task::JoinHandle<()>) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let lb = FakeLb::default();
        let cancel = CancellationToken::new();
        let mut target = lb.clone();
        let stop = cancel.clone();
        let task = tokio::spawn(async move {
            let events = tokio_stream_from(rx);
            run_events(events, &mut target, &ProxyConfig::default(), stop).await;
        });
        (tx, lb, cancel, task)
    }

    fn tokio_stream_from(
        mut rx: tokio::sync::mpsc::UnboundedReceiver<Result<Event, watcher::Error>>,
    ) -> impl Stream<Item = Result<Event, watcher::Error>> {
        futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
    }

    fn send(tx: &Sender, event: Event) {
        tx.send(Ok(event)).expect("loop running");
    }

    /// Lets the loop run until the debounce (and any retry) has passed.
    async fn settle(by: Duration) {
        tokio::time::sleep(by).await;
    }

    fn initial_lists(tx: &Sender) {
        send(tx, Event::Service(watcher::Event::Init));
        send(tx, Event::Service(watcher::Event::InitApply(kube_service("web", "10.96.0.20", &[("http", 80, "TCP")]))));
        send(tx, Event::Service(watcher::Event::InitDone));
        send(tx, Event::Slice(watcher::Event::Init));
        send(
            tx,
            Event::Slice(watcher::Event::InitApply(slice(
                "web-1",
                "web",
                &[("http", 8080, "TCP")],
                vec![ready("10.244.1.1")],
            ))),
        );
        send(tx, Event::Slice(watcher::Event::InitDone));
    }

    #[tokio::test(start_paused = true)]
    async fn full_sync_after_both_lists_then_incremental_changes() {
        let (tx, lb, cancel, task) = start();
        send(&tx, Event::Service(watcher::Event::Init));
        send(&tx, Event::Service(watcher::Event::InitApply(kube_service("web", "10.96.0.20", &[("http", 80, "TCP")]))));
        send(&tx, Event::Service(watcher::Event::InitDone));
        settle(Duration::from_secs(1)).await;
        assert_eq!(lb.calls(), Vec::<String>::new(), "nothing is programmed before the slices are listed");

        send(&tx, Event::Slice(watcher::Event::Init));
        send(
            &tx,
            Event::Slice(watcher::Event::InitApply(slice(
                "web-1",
                "web",
                &[("http", 8080, "TCP")],
                vec![ready("10.244.1.1")],
            ))),
        );
        send(&tx, Event::Slice(watcher::Event::InitDone));
        settle(Duration::from_millis(100)).await;
        assert_eq!(lb.calls(), vec!["sync 1"]);

        // A burst of slice updates within the debounce window: one upsert with the final state.
        for backends in [vec![ready("10.244.1.1"), ready("10.244.1.2")], vec![ready("10.244.1.2"), ready("10.244.1.3")]]
        {
            send(&tx, Event::Slice(watcher::Event::Apply(slice("web-1", "web", &[("http", 8080, "TCP")], backends))));
        }
        settle(Duration::from_millis(100)).await;
        assert_eq!(lb.calls(), vec!["upsert 10.96.0.20:80/TCP"]);
        assert_eq!(
            lb.table()[0].backends,
            vec!["10.244.1.2:8080".parse().expect("a"), "10.244.1.3:8080".parse().expect("a")]
        );

        send(&tx, Event::Service(watcher::Event::Delete(kube_service("web", "10.96.0.20", &[]))));
        settle(Duration::from_millis(100)).await;
        assert_eq!(lb.calls(), vec!["remove 10.96.0.20:80/TCP"]);
        assert!(lb.table().is_empty());

        // A watch error changes nothing; the relist that follows syncs the whole table again.
        tx.send(Err(watcher::Error::NoResourceVersion)).expect("loop running");
        initial_lists(&tx);
        settle(Duration::from_millis(100)).await;
        assert_eq!(lb.calls(), vec!["sync 1"]);
        assert_eq!(lb.table().len(), 1);

        cancel.cancel();
        task.await.expect("loop ends on cancel");
    }

    #[tokio::test(start_paused = true)]
    async fn failed_writes_are_retried_with_a_full_sync_and_backoff() {
        let (tx, lb, cancel, task) = start();
        initial_lists(&tx);
        settle(Duration::from_millis(100)).await;
        assert_eq!(lb.calls(), vec!["sync 1"]);

        lb.0.lock().expect("fake lock").failures = 2;
        send(&tx, Event::Slice(watcher::Event::Apply(slice("web-1", "web", &[("http", 8080, "TCP")], vec![]))));
        // First attempt at +20 ms fails, the retry at +120 ms fails, the one at +320 ms works.
        settle(Duration::from_millis(200)).await;
        assert_eq!(lb.calls(), vec!["upsert 10.96.0.20:80/TCP", "sync 1"]);
        settle(Duration::from_millis(200)).await;
        assert_eq!(lb.calls(), vec!["sync 1"]);
        assert_eq!(lb.table()[0].backends, vec![]);

        cancel.cancel();
        task.await.expect("loop ends on cancel");
    }
}
