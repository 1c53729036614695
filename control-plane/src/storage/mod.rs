//! Storage: the [`Store`] trait with etcd's semantics and its backends.
//!
//! Keys are laid out as kube-apiserver lays them out in etcd (`/registry/<resource>/<namespace>/<name>`).
//! Every write gets a new global revision; reads can be taken at an older revision until it is
//! compacted; a watch can start from any revision that is not compacted. Handlers only ever see
//! `Arc<dyn Store>`: the backend is chosen once at start-up.

pub mod etcd;
pub mod sqlite;
mod sqlite_memory;

use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::sync::mpsc;

/// A global, strictly increasing revision. `0` means "latest" where a revision is optional.
pub type Revision = i64;

/// One key at one revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    /// Revision of the write that created this incarnation of the key.
    pub create_revision: Revision,
    /// Revision of the last write to the key (for a delete event: the delete's revision).
    pub mod_revision: Revision,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change, as a watcher sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    /// For `Put` the new value; for `Delete` the key's last value, with `mod_revision` set to the
    /// revision of the delete.
    pub kv: KeyValue,
    /// The value before this change, if the key existed.
    pub prev: Option<KeyValue>,
}

/// A read of the keys in `[start, end)` (`end` empty: just `start`).
#[derive(Clone, Debug, Default)]
pub struct RangeRequest {
    pub start: String,
    pub end: String,
    /// Read at this revision; 0 reads the latest.
    pub revision: Revision,
    /// At most this many keys; 0 is no limit.
    pub limit: usize,
}

impl RangeRequest {
    /// All keys that begin with `prefix`.
    pub fn prefix(prefix: &str) -> Self {
        RangeRequest { start: prefix.to_string(), end: prefix_end(prefix), ..Default::default() }
    }
}

/// The smallest key greater than every key that begins with `prefix`.
pub fn prefix_end(prefix: &str) -> String {
    let mut bytes = prefix.as_bytes().to_vec();
    while let Some(last) = bytes.pop() {
        if last < 0x7f {
            bytes.push(last + 1);
            return String::from_utf8(bytes).expect("ascii prefix");
        }
    }
    // No upper bound: every key sorts below this one.
    "\u{10FFFF}".to_string()
}

#[derive(Clone, Debug, Default)]
pub struct RangeResponse {
    pub kvs: Vec<KeyValue>,
    /// More keys in the range than `limit` let through.
    pub more: bool,
    /// Keys in the whole range at that revision (for `remainingItemCount`).
    pub count: usize,
    /// The revision the read was taken at.
    pub revision: Revision,
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum StoreError {
    #[error("key {key} already exists")]
    AlreadyExists { key: String },
    #[error("key {key} not found")]
    NotFound { key: String },
    /// Compare-and-swap failed: the key changed since `expected`.
    #[error("key {key} was modified (expected revision {expected})")]
    Conflict { key: String, expected: Revision, current: Option<Box<KeyValue>> },
    #[error("revision {requested} is compacted (oldest available {compacted})")]
    Compacted { requested: Revision, compacted: Revision },
    #[error("revision {requested} is newer than the current revision {current}")]
    FutureRevision { requested: Revision, current: Revision },
    #[error("storage backend: {0}")]
    Backend(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// What a watch delivers: events in revision order, or one error and then the end.
pub type WatchReceiver = mpsc::Receiver<StoreResult<Event>>;

/// Storage with etcd's semantics. Implementations must be safe to share between tasks.
pub trait Store: Send + Sync + 'static {
    /// The latest value of `key`, or the value at `revision` when it is not 0.
    fn get(&self, key: &str, revision: Revision) -> BoxFuture<'_, StoreResult<Option<KeyValue>>>;
    fn range(&self, req: RangeRequest) -> BoxFuture<'_, StoreResult<RangeResponse>>;
    /// Creates `key`; fails with `AlreadyExists` if it exists. Returns the new revision.
    fn create(&self, key: &str, value: Vec<u8>) -> BoxFuture<'_, StoreResult<KeyValue>>;
    /// Replaces `key` if its mod revision is still `expected` (0: unconditionally, but the key
    /// must exist). Returns the stored key value.
    fn update(&self, key: &str, value: Vec<u8>, expected: Revision) -> BoxFuture<'_, StoreResult<KeyValue>>;
    /// Deletes `key` if its mod revision is still `expected` (0: unconditionally). Returns the
    /// last value with `mod_revision` set to the delete's revision.
    fn delete(&self, key: &str, expected: Revision) -> BoxFuture<'_, StoreResult<KeyValue>>;
    /// Events for keys in the range of `prefix` with revision > `after`. `after` = 0 starts at
    /// the current revision.
    fn watch(&self, prefix: &str, after: Revision) -> BoxFuture<'_, StoreResult<WatchReceiver>>;
    fn current_revision(&self) -> BoxFuture<'_, StoreResult<Revision>>;
    /// Drops history older than `revision` (the latest value of every key is kept).
    fn compact(&self, revision: Revision) -> BoxFuture<'_, StoreResult<()>>;
    /// Oldest revision that reads and watches may still ask for.
    fn compacted_revision(&self) -> Revision;
    /// Bytes the store occupies on disk (0 when not applicable).
    fn size_on_disk(&self) -> u64 {
        0
    }
}

pub type AnyStore = Arc<dyn Store>;
