//! A keyed work queue as Kubernetes controllers use it: a key is queued at most once, a key being
//! processed is not handed to a second worker (it is queued again once done if it was added
//! meanwhile), and failures are retried with per-key exponential backoff.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

#[derive(Default)]
struct State {
    queue: VecDeque<String>,
    queued: HashSet<String>,
    processing: HashSet<String>,
    /// Added while being processed: queue again when done.
    dirty: HashSet<String>,
    failures: HashMap<String, u32>,
    shut_down: bool,
}

#[derive(Clone, Default)]
pub struct WorkQueue {
    state: Arc<Mutex<State>>,
    notify: Arc<Notify>,
}

const BASE_DELAY: Duration = Duration::from_millis(5);
const MAX_DELAY: Duration = Duration::from_secs(300);

impl WorkQueue {
    pub fn new() -> WorkQueue {
        WorkQueue::default()
    }

    pub fn add(&self, key: impl Into<String>) {
        let key = key.into();
        let mut s = self.state.lock().expect("queue lock");
        if s.shut_down {
            return;
        }
        if s.processing.contains(&key) {
            s.dirty.insert(key);
            return;
        }
        if s.queued.insert(key.clone()) {
            s.queue.push_back(key);
            drop(s);
            self.notify.notify_one();
        }
    }

    /// Adds `key` after `delay`.
    pub fn add_after(&self, key: impl Into<String>, delay: Duration) {
        let (q, key) = (self.clone(), key.into());
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            q.add(key);
        });
    }

    /// Adds `key` after its backoff, which doubles with each failure.
    pub fn add_rate_limited(&self, key: impl Into<String>) {
        let key = key.into();
        let n = {
            let mut s = self.state.lock().expect("queue lock");
            let n = s.failures.entry(key.clone()).or_default();
            *n += 1;
            *n
        };
        let delay = BASE_DELAY.saturating_mul(1u32 << (n - 1).min(20)).min(MAX_DELAY);
        self.add_after(key, delay);
    }

    /// Clears the backoff of `key` after a success.
    pub fn forget(&self, key: &str) {
        self.state.lock().expect("queue lock").failures.remove(key);
    }

    /// The next key, waiting for one; `None` after shutdown.
    pub async fn next(&self) -> Option<String> {
        loop {
            let notified = self.notify.notified();
            {
                let mut s = self.state.lock().expect("queue lock");
                if s.shut_down {
                    return None;
                }
                if let Some(key) = s.queue.pop_front() {
                    s.queued.remove(&key);
                    s.processing.insert(key.clone());
                    if !s.queue.is_empty() {
                        drop(s);
                        self.notify.notify_one();
                    }
                    return Some(key);
                }
            }
            notified.await;
        }
    }

    /// Marks `key` processed.
    pub fn done(&self, key: &str) {
        let mut s = self.state.lock().expect("queue lock");
        s.processing.remove(key);
        if s.dirty.remove(key) && s.queued.insert(key.to_string()) {
            s.queue.push_back(key.to_string());
            drop(s);
            self.notify.notify_one();
        }
    }

    pub fn len(&self) -> usize {
        self.state.lock().expect("queue lock").queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn shut_down(&self) {
        self.state.lock().expect("queue lock").shut_down = true;
        self.notify.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keys_are_deduplicated_and_not_processed_twice_at_once() {
        let q = WorkQueue::new();
        q.add("a");
        q.add("a");
        q.add("b");
        assert_eq!(q.len(), 2);
        let k = q.next().await.expect("a");
        assert_eq!(k, "a");
        q.add("a"); // while processing: deferred
        assert_eq!(q.next().await.as_deref(), Some("b"));
        assert!(q.is_empty());
        q.done("a");
        assert_eq!(q.next().await.as_deref(), Some("a"));
        q.done("a");
        q.done("b");
        q.shut_down();
        assert_eq!(q.next().await, None);
    }

    #[tokio::test]
    async fn failures_back_off() {
        let q = WorkQueue::new();
        q.add_rate_limited("x");
        let t = tokio::time::Instant::now();
        assert_eq!(q.next().await.as_deref(), Some("x"));
        assert!(t.elapsed() >= BASE_DELAY);
    }
}
