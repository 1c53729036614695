//! Recent store events, decoded once and shared. Every watcher of a write (each HTTP watch and
//! each controller informer) sees the same stored object: it is parsed once, and for each wire
//! format and event type its watch line is encoded once, however many watchers deliver it.
//!
//! Entries are keyed by the revision the value was written at (for a delete event, the delete's
//! revision), which names one value of one key; the key is checked too, so a backend that put
//! two keys at one revision only loses the sharing, never correctness.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use bytes::Bytes;
use serde_json::Value;

use super::object;
use crate::storage::{KeyValue, Revision};

/// Entries kept. Watchers normally read an event right after it is committed; one further behind
/// decodes its own copy. Bounded so that a burst of writes leaves little memory behind.
const CAPACITY: usize = 1024;

/// The wire formats whose watch lines are shared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wire {
    Json,
    Protobuf,
}

/// The watch event types that carry an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

#[derive(Default)]
pub struct EventCache {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<Revision, Arc<Decoded>>,
    order: VecDeque<Revision>,
}

/// One stored value: its decoded object and encoded watch lines, each made on first use.
pub struct Decoded {
    key: String,
    object: OnceLock<Option<Arc<Value>>>,
    lines: [OnceLock<Option<Bytes>>; 6],
}

impl Decoded {
    fn new(key: &str) -> Decoded {
        Decoded { key: key.to_owned(), object: OnceLock::new(), lines: Default::default() }
    }

    /// The object with its `resourceVersion`, or `None` when the stored bytes do not parse.
    pub fn object(&self, kv: &KeyValue) -> Option<&Arc<Value>> {
        self.object.get_or_init(|| object::decode(kv).ok().map(Arc::new)).as_ref()
    }

    /// The watch line of this value as an event of type `kind` in `wire`, made by `make` once.
    pub fn line(&self, wire: Wire, kind: EventType, make: impl FnOnce() -> Option<Bytes>) -> Option<Bytes> {
        let slot = kind as usize * 2 + wire as usize;
        self.lines[slot].get_or_init(make).clone()
    }
}

impl EventCache {
    /// The shared entry of `kv`'s value, created (empty) if it is not cached.
    pub fn get(&self, kv: &KeyValue) -> Arc<Decoded> {
        self.entry(&kv.key, kv.mod_revision)
    }

    fn entry(&self, key: &str, revision: Revision) -> Arc<Decoded> {
        let evicted;
        let d = {
            let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(d) = inner.entries.get(&revision) {
                return if d.key == key { d.clone() } else { Arc::new(Decoded::new(key)) };
            }
            let d = Arc::new(Decoded::new(key));
            inner.entries.insert(revision, d.clone());
            inner.order.push_back(revision);
            // One in, at most one out: the cache is full from then on.
            evicted = if inner.order.len() > CAPACITY {
                inner.order.pop_front().and_then(|old| inner.entries.remove(&old))
            } else {
                None
            };
            d
        };
        // Freeing a decoded object is a few hundred frees: not while other writers and watchers
        // wait for the lock.
        drop(evicted);
        d
    }

    /// The decoded object of `kv` for a one-off reader (a GET, the current object of an update):
    /// shared if the value is cached, else decoded for this reader alone, so that reading old
    /// objects does not evict the recent events that watchers are about to deliver.
    pub fn read(&self, kv: &KeyValue) -> Option<Arc<Value>> {
        let cached = {
            let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
            inner.entries.get(&kv.mod_revision).filter(|d| d.key == kv.key).cloned()
        };
        match cached {
            Some(d) => d.object(kv).cloned(),
            None => object::decode(kv).ok().map(Arc::new),
        }
    }

    /// Hands the cache the object that the writer of `key` at `revision` has already built (with
    /// that `resourceVersion`), so that the watchers and later readers of the write need not parse
    /// the stored bytes. It must be what decoding the stored value gives; a reader that got there
    /// first keeps its own decoded copy, which is equal.
    pub fn seed(&self, key: &str, revision: Revision, object: Arc<Value>) {
        let _ = self.entry(key, revision).object.set(Some(object));
    }

    /// The decoded object of `kv`, shared with every other reader of the same event.
    pub fn object(&self, kv: &KeyValue) -> Option<Arc<Value>> {
        self.get(kv).object(kv).cloned()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner).entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, rev: Revision, value: &str) -> KeyValue {
        KeyValue { key: key.into(), value: value.as_bytes().to_vec(), create_revision: rev, mod_revision: rev }
    }

    #[test]
    fn one_value_is_decoded_once_and_shared() {
        let cache = EventCache::default();
        let a = kv("/registry/pods/d/a", 7, r#"{"metadata":{"name":"a"}}"#);
        let first = cache.object(&a).expect("decodes");
        let second = cache.object(&a).expect("decodes");
        assert!(Arc::ptr_eq(&first, &second), "the second reader gets the first one's object");
        assert_eq!(first.pointer("/metadata/resourceVersion"), Some(&Value::from("7")));
        let mut made = 0;
        let entry = cache.get(&a);
        for _ in 0..3 {
            let line = entry.line(Wire::Json, EventType::Modified, || {
                made += 1;
                Some(Bytes::from_static(b"x"))
            });
            assert_eq!(line.as_deref(), Some(&b"x"[..]));
        }
        assert_eq!(made, 1, "a line is encoded once");
        let other = entry.line(Wire::Json, EventType::Added, || Some(Bytes::from_static(b"y")));
        assert_eq!(other.as_deref(), Some(&b"y"[..]), "each event type has its own line");
    }

    #[test]
    fn a_seeded_object_is_what_readers_get() {
        let cache = EventCache::default();
        let written = Arc::new(serde_json::json!({"metadata": {"name": "a", "resourceVersion": "9"}}));
        cache.seed("/a", 9, written.clone());
        let read = cache.object(&kv("/a", 9, r#"{"metadata":{"name":"a"}}"#)).expect("cached");
        assert!(Arc::ptr_eq(&read, &written), "the writer's object is shared, not parsed again");
        let other = cache.object(&kv("/b", 9, r#"{"metadata":{"name":"b"}}"#)).expect("b");
        assert_eq!(object::name_of(&other), "b", "a seed is for its own key only");
    }

    #[test]
    fn a_reader_shares_a_cached_value_but_does_not_cache_an_old_one() {
        let cache = EventCache::default();
        let written = Arc::new(serde_json::json!({"metadata": {"name": "a", "resourceVersion": "4"}}));
        cache.seed("/a", 4, written.clone());
        let read = cache.read(&kv("/a", 4, r#"{"metadata":{"name":"a"}}"#)).expect("cached");
        assert!(Arc::ptr_eq(&read, &written), "a recent write is shared");
        let old = cache.read(&kv("/b", 2, r#"{"metadata":{"name":"b"}}"#)).expect("decodes");
        assert_eq!(old.pointer("/metadata/resourceVersion"), Some(&Value::from("2")));
        assert_eq!(cache.len(), 1, "reading an old value leaves the cache as it was");
        assert!(cache.read(&kv("/c", 3, "{not json")).is_none());
    }

    #[test]
    fn another_key_at_the_same_revision_is_not_confused() {
        let cache = EventCache::default();
        let a = cache.object(&kv("/a", 3, r#"{"metadata":{"name":"a"}}"#)).expect("a");
        let b = cache.object(&kv("/b", 3, r#"{"metadata":{"name":"b"}}"#)).expect("b");
        assert_eq!(object::name_of(&a), "a");
        assert_eq!(object::name_of(&b), "b");
    }

    #[test]
    fn corrupt_values_decode_to_nothing_and_the_cache_stays_bounded() {
        let cache = EventCache::default();
        assert!(cache.object(&kv("/bad", 1, "{not json")).is_none());
        for rev in 2..(CAPACITY as i64 + 500) {
            cache.get(&kv("/k", rev, "{}"));
        }
        assert_eq!(cache.len(), CAPACITY);
    }
}
