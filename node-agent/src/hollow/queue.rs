//! A keyed work queue with client-go's guarantees: a key waits in the queue at most once, is
//! never handled by two workers at the same time, and a key added while it is being handled is
//! handled again afterwards. Failed keys come back after an exponential delay.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

const BASE_DELAY: Duration = Duration::from_millis(50);
const MAX_DELAY: Duration = Duration::from_secs(30);

pub(crate) struct WorkQueue<K> {
    inner: Mutex<Inner<K>>,
    notify: Notify,
}

struct Inner<K> {
    queue: VecDeque<K>,
    /// Keys waiting to be handled (in `queue`, or to be re-queued when their worker is done).
    dirty: HashSet<K>,
    processing: HashSet<K>,
    failures: HashMap<K, u32>,
    closed: bool,
}

impl<K: Clone + Eq + Hash + Send + 'static> WorkQueue<K> {
    pub fn new() -> Arc<Self> {
        Arc::new(WorkQueue {
            inner: Mutex::new(Inner {
                queue: VecDeque::new(),
                dirty: HashSet::new(),
                processing: HashSet::new(),
                failures: HashMap::new(),
                closed: false,
            }),
            notify: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<K>> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn add(&self, key: K) {
        let mut q = self.lock();
        if q.closed || !q.dirty.insert(key.clone()) {
            return;
        }
        if !q.processing.contains(&key) {
            q.queue.push_back(key);
            drop(q);
            self.notify.notify_one();
        }
    }

    /// Adds the key again after a delay that doubles with each consecutive failure.
    pub fn retry(self: &Arc<Self>, key: K) {
        let delay = {
            let mut q = self.lock();
            let n = q.failures.entry(key.clone()).or_insert(0);
            *n = n.saturating_add(1);
            BASE_DELAY.saturating_mul(1 << (*n - 1).min(16)).min(MAX_DELAY)
        };
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if let Some(q) = me.upgrade() {
                q.add(key);
            }
        });
    }

    /// Clears the failure count of a key that succeeded.
    pub fn forget(&self, key: &K) {
        self.lock().failures.remove(key);
    }

    /// The next key to handle; `None` once the queue is closed. Call [`WorkQueue::done`] after.
    pub async fn next(&self) -> Option<K> {
        loop {
            let notified = self.notify.notified();
            {
                let mut q = self.lock();
                if q.closed {
                    return None;
                }
                if let Some(key) = q.queue.pop_front() {
                    q.dirty.remove(&key);
                    q.processing.insert(key.clone());
                    return Some(key);
                }
            }
            notified.await;
        }
    }

    pub fn done(&self, key: &K) {
        let mut q = self.lock();
        q.processing.remove(key);
        if q.dirty.contains(key) && !q.closed {
            q.queue.push_back(key.clone());
            drop(q);
            self.notify.notify_one();
        }
    }

    /// Wakes every worker with `None`.
    pub fn close(&self) {
        self.lock().closed = true;
        self.notify.notify_waiters();
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn deduplicates_and_requeues_keys_added_while_processing() {
        let q = WorkQueue::new();
        q.add("a");
        q.add("a");
        q.add("b");
        assert_eq!(q.len(), 2, "a waits once");
        let a = q.next().await.expect("open");
        assert_eq!(a, "a");
        q.add("a");
        assert_eq!(q.len(), 1, "a is being processed: not queued beside b");
        q.done(&a);
        assert_eq!(q.next().await, Some("b"));
        assert_eq!(q.next().await, Some("a"), "re-queued after done");
    }

    #[tokio::test]
    async fn close_wakes_waiting_workers() {
        let q = WorkQueue::<u32>::new();
        let waiter = tokio::spawn({
            let q = q.clone();
            async move { q.next().await }
        });
        tokio::task::yield_now().await;
        q.close();
        assert_eq!(waiter.await.expect("joins"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_back_off() {
        let q = WorkQueue::new();
        q.retry(7u32);
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(q.len(), 0);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(q.len(), 1);
        assert_eq!(q.next().await, Some(7));
        q.done(&7);
        q.retry(7);
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(q.len(), 0, "second failure waits 100 ms");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(q.len(), 1);
    }
}
