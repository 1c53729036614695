//! The etcd backend: [`super::Store`] over etcd's v3 API, for clusters that outgrow one machine
//! and for control-plane replicas that share one store.
//!
//! Keys are stored as given (`/registry/<resource>/<namespace>/<name>`, kube-apiserver's
//! layout), and revisions are etcd's own, so the two can share tooling (`etcdctl get --prefix
//! /registry/`). Note that etcd starts at revision 1: the first write is revision 2.
//!
//! - Writes are single transactions: `create` puts if `create_revision == 0`; `update` and
//!   `delete` act if `mod_revision == expected` (or, for `expected == 0`, if the key exists) and
//!   otherwise read the key in the same transaction, so a `Conflict` carries the value that won.
//!   A write's revision is the transaction's header revision.
//! - Reads are linearizable ranges; a read at a revision reports that revision.
//! - A watch is one etcd watch stream fed into an mpsc channel. If the stream breaks (a member
//!   dies, loses its leader, or the connection drops), it is opened again on another member
//!   from the revision after the last one delivered, so events arrive once and in order.
//! - Compaction is etcd's (logical; etcd's backend defragments separately). etcd does not report
//!   the compacted revision, so it is what this store compacted to, or learned from etcd: a
//!   watch from revision 1 is cancelled with the compacted revision.
//!
//! Members: one client per endpoint, and every request goes to the *active* member; when it
//! fails with a transport error the next member becomes active. Reads, compactions and
//! requests that never reached etcd's consensus (refused connection, member without leader)
//! are retried on the next member until [`OPERATION_DEADLINE`]; a write whose connection broke
//! after it was sent is not retried (it may have been applied): it fails with a `Backend` error
//! that says the outcome is unknown, as kube-apiserver's etcd client does.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse,
    TxnResponse, WatchOptions,
};
use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{Instrument, debug, info, warn};

use super::{
    Event, EventKind, KeyValue, RangeRequest, RangeResponse, Revision, Store, StoreError, StoreResult, WatchReceiver,
    prefix_end,
};

/// Longest wait for one request to one member. Above etcd's own request timeout (5 s plus two
/// election timeouts), so a slow proposal gets etcd's answer rather than ours.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an operation keeps retrying (on other members) before it fails.
const OPERATION_DEADLINE: Duration = Duration::from_secs(15);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// HTTP/2 pings on connections with open streams (watches), to notice a member that vanished
/// without closing its sockets. etcd refuses pings more often than every 5 s by default.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(5);
const MIN_BACKOFF: Duration = Duration::from_millis(20);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Events buffered per watcher before its feeding task waits for the consumer (and etcd's
/// stream flow control holds the server back).
const WATCH_BUFFER: usize = 256;
/// A watch stream that lasted this long had been working: when it breaks, the next one is
/// opened at once.
const STABLE_STREAM: Duration = Duration::from_secs(1);
/// A watch that cannot be re-established on any member for this long ends with an error.
const WATCH_GIVE_UP: Duration = Duration::from_secs(60);
/// Longest wait for etcd to report its compacted revision.
const LEARN_TIMEOUT: Duration = Duration::from_secs(2);

/// etcd's error messages (`etcdserver: mvcc: …`); gRPC codes alone do not tell them apart.
const COMPACTED_MESSAGE: &str = "required revision has been compacted";
const FUTURE_MESSAGE: &str = "required revision is a future revision";
/// A definite refusal (the NOSPACE alarm is raised) that would otherwise look transient.
const NO_SPACE_MESSAGE: &str = "database space exceeded";
/// Refusals before a request reaches raft: retrying elsewhere cannot apply it twice.
const NOT_APPLIED_MESSAGES: [&str; 3] = ["etcdserver: no leader", "etcdserver: too many requests", "proposal dropped"];

/// Why one request failed.
#[derive(Debug)]
enum Failure {
    /// The revision asked for is compacted.
    Compacted,
    /// The revision asked for is newer than the store's.
    Future,
    /// The request never reached consensus: safe to retry anywhere.
    NotApplied(String),
    /// The request may or may not have been applied (connection lost after sending, timeout,
    /// leader lost during the proposal). Reads retry; writes report it.
    Unknown(String),
    /// etcd answered with an error that retrying will not change.
    Refused(String),
}

/// gRPC status codes (from the gRPC spec), as [`classify`] sees them.
mod grpc_code {
    pub const CANCELLED: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const DEADLINE_EXCEEDED: i32 = 4;
    pub const RESOURCE_EXHAUSTED: i32 = 8;
    pub const ABORTED: i32 = 10;
    pub const INTERNAL: i32 = 13;
    pub const UNAVAILABLE: i32 = 14;
}

fn classify(error: etcd_client::Error) -> Failure {
    let status = match error {
        etcd_client::Error::GRpcStatus(status) => status,
        etcd_client::Error::TransportError(error) => return Failure::Unknown(format!("transport: {error}")),
        etcd_client::Error::IoError(error) => return Failure::Unknown(format!("io: {error}")),
        error => return Failure::Refused(error.to_string()),
    };
    let (code, message): (i32, _) = (status.code().into(), status.message());
    if message.contains(COMPACTED_MESSAGE) {
        return Failure::Compacted;
    }
    if message.contains(FUTURE_MESSAGE) {
        return Failure::Future;
    }
    let described = format!("{:?}: {message}", status.code());
    if message.contains(NO_SPACE_MESSAGE) {
        return Failure::Refused(described);
    }
    // tonic reports a failed TCP connect as Unavailable "tcp connect error" (the I/O error is
    // its source): the member never saw the request.
    let never_connected = code == grpc_code::UNAVAILABLE
        && (message == "tcp connect error" || refused_connection(std::error::Error::source(&status)));
    if never_connected || NOT_APPLIED_MESSAGES.iter().any(|refusal| message.contains(refusal)) {
        return Failure::NotApplied(described);
    }
    match code {
        grpc_code::UNAVAILABLE
        | grpc_code::DEADLINE_EXCEEDED
        | grpc_code::UNKNOWN
        | grpc_code::INTERNAL
        | grpc_code::CANCELLED
        | grpc_code::ABORTED
        | grpc_code::RESOURCE_EXHAUSTED => Failure::Unknown(described),
        _ => Failure::Refused(described),
    }
}

/// Whether an error chain contains a refused TCP connection.
fn refused_connection(mut source: Option<&(dyn std::error::Error + 'static)>) -> bool {
    while let Some(error) = source {
        if error.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused) {
            return true;
        }
        source = error.source();
    }
    false
}

/// Whether a failed operation may be tried again on another member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Retry {
    /// Reads and compactions: repeating them changes nothing.
    Always,
    /// Writes: only when the request certainly was not applied.
    IfNotApplied,
}

/// What an operation's retries end with, before the caller adds its context.
#[derive(Debug)]
enum Failed {
    Compacted,
    Future,
    Store(StoreError),
}

/// One etcd member's client endpoint.
struct Member {
    endpoint: String,
    client: Client,
}

/// What the store handle and its watch tasks share.
struct Shared {
    members: Vec<Member>,
    /// Index into `members` of the member requests go to.
    active: AtomicUsize,
    compacted: AtomicI64,
}

/// The etcd-backed [`Store`].
pub struct EtcdStore {
    shared: Arc<Shared>,
}

impl EtcdStore {
    /// Connects to an etcd cluster through any of `endpoints` (`http://host:port`; TLS is not
    /// configured). Fails unless some member answers a read.
    pub async fn connect(endpoints: &[String]) -> StoreResult<EtcdStore> {
        if endpoints.is_empty() {
            return Err(StoreError::Backend("no etcd endpoints given".to_string()));
        }
        let options = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_keep_alive(KEEP_ALIVE_INTERVAL, KEEP_ALIVE_TIMEOUT)
            // A member cut off from its leader refuses requests (and ends watch streams) instead
            // of serving stale watches or holding proposals until they time out.
            .with_require_leader(true);
        let mut members = Vec::with_capacity(endpoints.len());
        for endpoint in endpoints {
            // Connections are made lazily, on the first request.
            let client = Client::connect([endpoint.as_str()], Some(options.clone()))
                .await
                .map_err(|e| StoreError::Backend(format!("etcd endpoint {endpoint}: {e}")))?;
            members.push(Member { endpoint: endpoint.clone(), client });
        }
        let shared = Arc::new(Shared { members, active: AtomicUsize::new(0), compacted: AtomicI64::new(0) });
        let revision = shared.current_revision().await?;
        // Learn how far etcd was compacted before we came: a read at revision 1 fails if at all.
        if revision > 1 {
            let probe = shared
                .call("probe compaction", Retry::Always, |mut c| async move { c.get("/", Some(count_at(1))).await });
            match probe.await {
                Ok(_) => {}
                Err(Failed::Compacted) => {
                    shared.learn_compacted(1).await;
                }
                Err(Failed::Future) => {}
                Err(Failed::Store(error)) => return Err(error),
            }
        }
        info!(
            endpoint = shared.active_endpoint(),
            revision,
            compacted = shared.compacted.load(Ordering::SeqCst),
            "connected to etcd"
        );
        Ok(EtcdStore { shared })
    }

    /// The endpoint requests currently go to (it changes when that member fails).
    pub fn active_endpoint(&self) -> &str {
        self.shared.active_endpoint()
    }

    fn write(&self, key: &str, txn: Txn) -> impl Future<Output = StoreResult<TxnResponse>> + Send + '_ {
        let key = key.to_string();
        async move {
            self.shared
                .call("write", Retry::IfNotApplied, move |mut c| {
                    let txn = txn.clone();
                    async move { c.txn(txn).await }
                })
                .await
                .map_err(|failed| match failed {
                    Failed::Store(error) => error,
                    // A transaction without a read revision cannot hit these.
                    Failed::Compacted | Failed::Future => StoreError::Backend(format!("write {key}: {failed:?}")),
                })
        }
    }
}

/// `key` as etcd takes it: it refuses the empty key, and `"\0"` (the least key it accepts)
/// starts the same ranges.
fn etcd_key(key: &str) -> &[u8] {
    if key.is_empty() { b"\0" } else { key.as_bytes() }
}

/// A count-only read of one key at `revision` (cheap: no values, one index lookup).
fn count_at(revision: Revision) -> GetOptions {
    GetOptions::new().with_count_only().with_revision(revision)
}

fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> StoreResult<Revision> {
    header.map(|h| h.revision()).ok_or_else(|| StoreError::Backend("etcd response without a header".to_string()))
}

/// The revision a read was taken at: the one asked for, else the latest (the header's; for a
/// read at a revision etcd's header has the current revision instead).
fn resolved(requested: Revision, header: Option<&etcd_client::ResponseHeader>) -> StoreResult<Revision> {
    if requested > 0 { Ok(requested) } else { header_revision(header) }
}

fn convert(kv: &etcd_client::KeyValue) -> StoreResult<KeyValue> {
    let key = String::from_utf8(kv.key().to_vec())
        .map_err(|_| StoreError::Backend(format!("etcd key {:?} is not UTF-8", String::from_utf8_lossy(kv.key()))))?;
    Ok(KeyValue {
        key,
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
    })
}

/// The key read by a transaction's `else` branch (`None`: it does not exist).
fn else_read(response: &TxnResponse) -> StoreResult<Option<KeyValue>> {
    match response.op_responses().first() {
        Some(TxnOpResponse::Get(get)) => get.kvs().first().map(convert).transpose(),
        None => Ok(None),
        Some(other) => Err(StoreError::Backend(format!("unexpected etcd transaction response {other:?}"))),
    }
}

impl Shared {
    fn active_endpoint(&self) -> &str {
        &self.members[self.active.load(Ordering::SeqCst) % self.members.len()].endpoint
    }

    /// Makes the member after `failed` active, unless another request already moved on.
    fn fail_over(&self, failed: usize, reason: &str) {
        let next = (failed + 1) % self.members.len();
        if self.active.compare_exchange(failed, next, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
            warn!(
                failed = %self.members[failed].endpoint,
                next = %self.members[next].endpoint,
                reason,
                "etcd member failed; using the next one"
            );
        }
    }

    /// Runs `op` against the active member, failing over and retrying as `retry` allows.
    async fn call<T, F, Fut>(&self, what: &str, retry: Retry, mut op: F) -> Result<T, Failed>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let deadline = Instant::now() + OPERATION_DEADLINE;
        let mut backoff = MIN_BACKOFF;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let index = self.active.load(Ordering::SeqCst) % self.members.len();
            let member = &self.members[index];
            let failure = match tokio::time::timeout(ATTEMPT_TIMEOUT, op(member.client.clone())).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(error)) => classify(error),
                Err(_) => Failure::Unknown(format!("no answer within {ATTEMPT_TIMEOUT:?}")),
            };
            let reason = match failure {
                Failure::Compacted => return Err(Failed::Compacted),
                Failure::Future => return Err(Failed::Future),
                Failure::Refused(reason) => {
                    return Err(Failed::Store(StoreError::Backend(format!(
                        "etcd {}: {what}: {reason}",
                        member.endpoint
                    ))));
                }
                Failure::Unknown(reason) if retry == Retry::IfNotApplied => {
                    self.fail_over(index, &reason);
                    return Err(Failed::Store(StoreError::Backend(format!(
                        "etcd {}: {what}: outcome unknown: {reason}",
                        member.endpoint
                    ))));
                }
                Failure::NotApplied(reason) | Failure::Unknown(reason) => reason,
            };
            if Instant::now() + backoff > deadline {
                return Err(Failed::Store(StoreError::Backend(format!(
                    "etcd: {what}: no member answered within {OPERATION_DEADLINE:?} ({attempts} attempts); \
                     last error from {}: {reason}",
                    member.endpoint
                ))));
            }
            self.fail_over(index, &reason);
            // Try each member once at once; then wait between rounds.
            if attempts >= self.members.len() {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }

    async fn current_revision(&self) -> StoreResult<Revision> {
        let response = self
            .call("read the revision", Retry::Always, |mut c| async move {
                c.get("/", Some(GetOptions::new().with_count_only())).await
            })
            .await
            .map_err(|failed| self.plain(failed))?;
        header_revision(response.header())
    }

    /// A failure that cannot be about revisions.
    fn plain(&self, failed: Failed) -> StoreError {
        match failed {
            Failed::Store(error) => error,
            failed => StoreError::Backend(format!("etcd: unexpected {failed:?}")),
        }
    }

    /// The store error for a failed read at `requested`.
    async fn revision_error(&self, failed: Failed, requested: Revision) -> StoreError {
        match failed {
            Failed::Compacted => StoreError::Compacted { requested, compacted: self.compacted_above(requested).await },
            Failed::Future => match self.current_revision().await {
                Ok(current) => StoreError::FutureRevision { requested, current },
                Err(error) => error,
            },
            Failed::Store(error) => error,
        }
    }

    /// The compacted revision, known to be above `requested`: what we remember if that is
    /// enough, else what etcd reports.
    async fn compacted_above(&self, requested: Revision) -> Revision {
        let known = self.compacted.load(Ordering::SeqCst);
        if known > requested { known } else { self.learn_compacted(requested).await }
    }

    /// Asks etcd for its compacted revision, known to be above `below`: a watch from revision 1
    /// is cancelled with it. Falls back to `below + 1`, the least it can be.
    async fn learn_compacted(&self, below: Revision) -> Revision {
        let index = self.active.load(Ordering::SeqCst) % self.members.len();
        let mut watch = self.members[index].client.watch_client();
        let probe = async {
            let mut stream = watch.watch("/", Some(WatchOptions::new().with_start_revision(1))).await?;
            while let Some(response) = stream.message().await? {
                if response.compact_revision() > 0 {
                    return Ok(Some(response.compact_revision()));
                }
                if response.canceled() {
                    break;
                }
            }
            Ok::<_, etcd_client::Error>(None)
        };
        let learned = match tokio::time::timeout(LEARN_TIMEOUT, probe).await {
            Ok(Ok(Some(revision))) => revision,
            outcome => {
                debug!(?outcome, below, "etcd did not report its compacted revision");
                below + 1
            }
        };
        self.note_compacted(learned)
    }

    /// Records that etcd is compacted at least to `revision`; returns the compacted revision.
    fn note_compacted(&self, revision: Revision) -> Revision {
        self.compacted.fetch_max(revision, Ordering::SeqCst).max(revision)
    }

    /// Fails with `Compacted` unless history after `after` can still be watched: the same rule
    /// as reads (`after` itself must not be compacted), which is one revision stricter than
    /// etcd's own watch.
    async fn check_watchable(&self, prefix: &str, after: Revision) -> StoreResult<()> {
        let compacted = self.compacted.load(Ordering::SeqCst);
        if after < compacted {
            return Err(StoreError::Compacted { requested: after, compacted });
        }
        let key = etcd_key(prefix).to_vec();
        let result = self
            .call("check the watch revision", Retry::Always, move |mut c| {
                let key = key.clone();
                async move { c.get(key, Some(count_at(after))).await }
            })
            .await;
        match result {
            // A watch from the future waits for it.
            Ok(_) | Err(Failed::Future) => Ok(()),
            Err(failed) => Err(self.revision_error(failed, after).await),
        }
    }

    async fn range(&self, req: RangeRequest) -> StoreResult<RangeResponse> {
        if req.revision < 0 {
            return Err(StoreError::Backend(format!("negative revision {}", req.revision)));
        }
        let mut options = GetOptions::new().with_revision(req.revision);
        if !req.end.is_empty() {
            options = options.with_range(req.end.as_bytes());
        } else if req.start.is_empty() {
            // The empty key cannot exist (etcd refuses it), but the read still checks the revision.
            options = options.with_count_only();
        }
        if req.limit > 0 {
            options = options.with_limit(i64::try_from(req.limit).unwrap_or(i64::MAX));
        }
        let start = etcd_key(&req.start).to_vec();
        let result = self
            .call("range", Retry::Always, move |mut c| {
                let (start, options) = (start.clone(), options.clone());
                async move { c.get(start, Some(options)).await }
            })
            .await;
        let response = match result {
            Ok(response) => response,
            Err(failed) => return Err(self.revision_error(failed, req.revision).await),
        };
        if req.start.is_empty() && req.end.is_empty() {
            return Ok(RangeResponse {
                revision: resolved(req.revision, response.header())?,
                ..RangeResponse::default()
            });
        }
        let kvs = response.kvs().iter().map(convert).collect::<StoreResult<Vec<_>>>()?;
        Ok(RangeResponse {
            kvs,
            more: response.more(),
            count: usize::try_from(response.count()).unwrap_or(0),
            revision: resolved(req.revision, response.header())?,
        })
    }
}

/// A transaction that runs `op` if `key`'s mod revision is `expected` (0: if the key exists),
/// and otherwise reads the key.
fn conditional(key: &str, expected: Revision, op: TxnOp) -> Txn {
    let condition = if expected == 0 {
        Compare::create_revision(key, CompareOp::Greater, 0)
    } else {
        // A missing key compares as mod revision 0, so this also requires the key to exist.
        Compare::mod_revision(key, CompareOp::Equal, expected)
    };
    Txn::new().when([condition]).and_then([op]).or_else([TxnOp::get(key, None)])
}

/// The error for a conditional write whose condition failed.
fn condition_failed(key: String, expected: Revision, response: &TxnResponse) -> StoreResult<StoreError> {
    Ok(match else_read(response)? {
        None => StoreError::NotFound { key },
        // Only a wrong `expected` fails when the key exists (0 never does).
        Some(current) => StoreError::Conflict { key, expected, current: Some(Box::new(current)) },
    })
}

impl Store for EtcdStore {
    fn get(&self, key: &str, revision: Revision) -> BoxFuture<'_, StoreResult<Option<KeyValue>>> {
        let req = RangeRequest { start: key.to_string(), revision, ..Default::default() };
        Box::pin(async move { Ok(self.shared.range(req).await?.kvs.into_iter().next()) })
    }

    fn range(&self, req: RangeRequest) -> BoxFuture<'_, StoreResult<RangeResponse>> {
        Box::pin(self.shared.range(req))
    }

    fn create(&self, key: &str, value: Vec<u8>) -> BoxFuture<'_, StoreResult<KeyValue>> {
        let key = key.to_string();
        Box::pin(async move {
            let txn = Txn::new()
                .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(key.as_str(), value.clone(), None)]);
            let response = self.write(&key, txn).await?;
            if !response.succeeded() {
                return Err(StoreError::AlreadyExists { key });
            }
            let revision = header_revision(response.header())?;
            Ok(KeyValue { key, value, create_revision: revision, mod_revision: revision })
        })
    }

    fn update(&self, key: &str, value: Vec<u8>, expected: Revision) -> BoxFuture<'_, StoreResult<KeyValue>> {
        let key = key.to_string();
        Box::pin(async move {
            let put = TxnOp::put(key.as_str(), value.clone(), Some(PutOptions::new().with_prev_key()));
            let response = self.write(&key, conditional(&key, expected, put)).await?;
            if !response.succeeded() {
                return Err(condition_failed(key, expected, &response)?);
            }
            let revision = header_revision(response.header())?;
            let create_revision = match response.op_responses().first() {
                Some(TxnOpResponse::Put(put)) => put.prev_key().map(|prev| prev.create_revision()),
                _ => None,
            };
            let create_revision = create_revision
                .ok_or_else(|| StoreError::Backend(format!("etcd update of {key} returned no previous value")))?;
            Ok(KeyValue { key, value, create_revision, mod_revision: revision })
        })
    }

    fn delete(&self, key: &str, expected: Revision) -> BoxFuture<'_, StoreResult<KeyValue>> {
        let key = key.to_string();
        Box::pin(async move {
            let delete = TxnOp::delete(key.as_str(), Some(DeleteOptions::new().with_prev_key()));
            let response = self.write(&key, conditional(&key, expected, delete)).await?;
            if !response.succeeded() {
                return Err(condition_failed(key, expected, &response)?);
            }
            let revision = header_revision(response.header())?;
            let last = match response.op_responses().first() {
                Some(TxnOpResponse::Delete(delete)) => delete.prev_kvs().first().map(convert).transpose()?,
                _ => None,
            };
            let last =
                last.ok_or_else(|| StoreError::Backend(format!("etcd delete of {key} returned no previous value")))?;
            Ok(KeyValue { mod_revision: revision, ..last })
        })
    }

    fn watch(&self, prefix: &str, after: Revision) -> BoxFuture<'_, StoreResult<WatchReceiver>> {
        let prefix = prefix.to_string();
        Box::pin(async move {
            let after = match after {
                0 => self.shared.current_revision().await?,
                after if after < 0 => return Err(StoreError::Backend(format!("negative watch revision {after}"))),
                after => {
                    self.shared.check_watchable(&prefix, after).await?;
                    after
                }
            };
            let (tx, rx) = mpsc::channel(WATCH_BUFFER);
            let span = tracing::debug_span!("etcd_watch", %prefix, after);
            let task =
                WatchTask { shared: Arc::clone(&self.shared), end: prefix_end(&prefix), prefix, tx, resume: after };
            tokio::spawn(task.run().instrument(span));
            Ok(rx)
        })
    }

    fn current_revision(&self) -> BoxFuture<'_, StoreResult<Revision>> {
        Box::pin(self.shared.current_revision())
    }

    fn compact(&self, revision: Revision) -> BoxFuture<'_, StoreResult<()>> {
        Box::pin(async move {
            if revision <= self.shared.compacted.load(Ordering::SeqCst) {
                return Ok(());
            }
            let result = self
                .shared
                .call("compact", Retry::Always, |mut c| async move { c.compact(revision, None).await })
                .await;
            match result {
                Ok(_) => {
                    self.shared.note_compacted(revision);
                    Ok(())
                }
                // Someone compacted as far or further (or our retried request got there first).
                Err(Failed::Compacted) => {
                    self.shared.compacted_above(revision - 1).await;
                    Ok(())
                }
                Err(failed) => Err(self.shared.revision_error(failed, revision).await),
            }
        })
    }

    fn compacted_revision(&self) -> Revision {
        self.shared.compacted.load(Ordering::SeqCst)
    }
}

/// How one watch stream ended.
enum StreamEnd {
    /// The receiver was dropped.
    ConsumerGone,
    /// The watch is over: this error goes to the consumer.
    Fatal(StoreError),
    /// The stream broke; `healthy` when it had been working (created, and it delivered or lasted).
    Broken { reason: String, healthy: bool },
}

/// Feeds one watcher from etcd watch streams, re-opening them as members fail.
struct WatchTask {
    shared: Arc<Shared>,
    prefix: String,
    end: String,
    tx: mpsc::Sender<StoreResult<Event>>,
    /// Every event up to here has been sent: a new stream starts after it. Progress
    /// notifications move it on when nothing under the prefix changed.
    resume: Revision,
}

impl WatchTask {
    async fn run(mut self) {
        let mut backoff = MIN_BACKOFF;
        let mut failing_since: Option<Instant> = None;
        loop {
            let index = self.shared.active.load(Ordering::SeqCst) % self.shared.members.len();
            let (reason, healthy) = match self.follow(index).await {
                StreamEnd::ConsumerGone => return,
                StreamEnd::Fatal(error) => {
                    let _ = self.tx.send(Err(error)).await;
                    return;
                }
                StreamEnd::Broken { reason, healthy } => (reason, healthy),
            };
            self.shared.fail_over(index, &reason);
            if healthy {
                backoff = MIN_BACKOFF;
                failing_since = None;
                // Straight to the next member: the one that failed is likely gone.
                continue;
            }
            let since = *failing_since.get_or_insert_with(Instant::now);
            if since.elapsed() > WATCH_GIVE_UP {
                let error = format!("etcd watch of {} lost for {WATCH_GIVE_UP:?}: {reason}", self.prefix);
                let _ = self.tx.send(Err(StoreError::Backend(error))).await;
                return;
            }
            debug!(%reason, resume = self.resume, "etcd watch stream failed; retrying");
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = self.tx.closed() => return,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Follows one etcd watch stream on member `index` from `resume + 1` until it ends.
    async fn follow(&mut self, index: usize) -> StreamEnd {
        let member = &self.shared.members[index];
        let options = WatchOptions::new()
            .with_range(self.end.as_bytes())
            .with_start_revision(self.resume + 1)
            .with_prev_key()
            .with_progress_notify();
        let mut client = member.client.watch_client();
        let opened = tokio::select! {
            opened = tokio::time::timeout(ATTEMPT_TIMEOUT, client.watch(etcd_key(&self.prefix), Some(options))) => opened,
            () = self.tx.closed() => return StreamEnd::ConsumerGone,
        };
        let mut stream = match opened {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => return StreamEnd::Broken { reason: format!("open: {error}"), healthy: false },
            Err(_) => return StreamEnd::Broken { reason: "open: timed out".to_string(), healthy: false },
        };
        // Nothing at or before this is sent again (etcd would not send it either).
        let floor = self.resume;
        let opened = Instant::now();
        let (mut created, mut progressed) = (false, false);
        // A stream that was created and then lasted or delivered: the next one may go at once.
        let healthy = |created: bool, progressed: bool| created && (progressed || opened.elapsed() >= STABLE_STREAM);
        loop {
            let message = tokio::select! {
                message = stream.message() => message,
                () = self.tx.closed() => return StreamEnd::ConsumerGone,
            };
            let response = match message {
                Ok(Some(response)) => response,
                Ok(None) => {
                    let healthy = healthy(created, progressed);
                    return StreamEnd::Broken { reason: "stream ended".to_string(), healthy };
                }
                Err(error) => {
                    return StreamEnd::Broken { reason: error.to_string(), healthy: healthy(created, progressed) };
                }
            };
            if response.compact_revision() > 0 {
                let compacted = self.shared.note_compacted(response.compact_revision());
                return StreamEnd::Fatal(StoreError::Compacted { requested: self.resume, compacted });
            }
            if response.canceled() {
                // E.g. "etcdserver: no leader": another member may do better.
                let reason = format!("cancelled by etcd: {}", response.cancel_reason());
                return StreamEnd::Broken { reason, healthy: healthy(created, progressed) };
            }
            if response.created() {
                created = true;
                continue;
            }
            if response.events().is_empty() {
                // A progress notification: every event up to its revision has been sent.
                if let Some(header) = response.header() {
                    self.resume = self.resume.max(header.revision());
                }
                progressed = true;
                continue;
            }
            // etcd never splits one revision's events across responses (without `fragment`;
            // a transaction of another client can write several keys in one revision), so after
            // a whole response the stream can resume right after its last revision.
            let mut last = self.resume;
            for event in response.events() {
                let event = match self.event_from(event) {
                    Ok(event) => event,
                    Err(error) => return StreamEnd::Fatal(error),
                };
                let revision = event.kv.mod_revision;
                if revision <= floor {
                    continue;
                }
                if self.tx.send(Ok(event)).await.is_err() {
                    return StreamEnd::ConsumerGone;
                }
                last = last.max(revision);
                progressed = true;
            }
            self.resume = last;
        }
    }

    fn event_from(&self, event: &etcd_client::Event) -> StoreResult<Event> {
        let kv = event.kv().ok_or_else(|| StoreError::Backend("etcd watch event without a key".to_string()))?;
        let revision = kv.mod_revision();
        let prev = event.prev_kv().map(convert).transpose()?;
        // etcd leaves `prev_kv` out when the previous version is compacted: the watcher fell
        // behind compaction, and an event without its previous value would mislead.
        let prev_lost = |compacted: &Shared| StoreError::Compacted {
            requested: revision - 1,
            compacted: compacted.note_compacted(revision),
        };
        match event.event_type() {
            etcd_client::EventType::Put => {
                if prev.is_none() && kv.version() > 1 {
                    return Err(prev_lost(&self.shared));
                }
                Ok(Event { kind: EventKind::Put, kv: convert(kv)?, prev })
            }
            etcd_client::EventType::Delete => {
                let Some(prev) = prev else { return Err(prev_lost(&self.shared)) };
                let kv = KeyValue { mod_revision: revision, ..prev.clone() };
                Ok(Event { kind: EventKind::Delete, kv, prev: Some(prev) })
            }
        }
    }
}
