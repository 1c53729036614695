//! Spreads periodic per-node work evenly over its period: node `i` of `n` is due at
//! `first + (k·n + i)·period/n` for every round `k`, so 5 000 nodes renewing every 10 s make a
//! steady 500 writes/s rather than a burst every 10 s. Pure arithmetic; the loops that act on it
//! are in `super::schedule`.

use std::ops::Range;
use std::time::Duration;

use tokio::time::Instant;

/// Timers are not precise below a few milliseconds; several nodes share a tick then.
const MIN_TICK: Duration = Duration::from_millis(5);

pub(crate) struct Sweep {
    n: u64,
    period: Duration,
    first: Instant,
    /// Slots handed out so far; slot `s` is node `s % n`.
    issued: u64,
}

impl Sweep {
    pub fn new(n: usize, period: Duration, first: Instant) -> Self {
        Sweep { n: n.max(1) as u64, period: period.max(Duration::from_nanos(1)), first, issued: 0 }
    }

    /// How often to call [`Sweep::due`]: one slot, but not finer than [`MIN_TICK`].
    pub fn tick(&self) -> Duration {
        (self.period / u32::try_from(self.n).unwrap_or(u32::MAX)).max(MIN_TICK)
    }

    /// Slots that fell due since the last call. After a stall, each node comes at most once
    /// (the older slots are dropped, not replayed).
    pub fn due(&mut self, now: Instant) -> Slots {
        let Some(elapsed) = now.checked_duration_since(self.first) else { return Slots { range: 0..0, n: self.n } };
        let passed = elapsed.as_nanos() * u128::from(self.n) / self.period.as_nanos();
        let total = u64::try_from(passed).unwrap_or(u64::MAX - 1) + 1;
        let from = self.issued.max(total.saturating_sub(self.n));
        self.issued = total.max(self.issued);
        Slots { range: from..self.issued, n: self.n }
    }
}

/// Node indices due now, in order.
pub(crate) struct Slots {
    range: Range<u64>,
    n: u64,
}

impl Iterator for Slots {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        self.range.next().map(|s| (s % self.n) as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreads_nodes_over_the_period() {
        let t0 = Instant::now();
        let mut s = Sweep::new(4, Duration::from_secs(4), t0);
        assert_eq!(s.tick(), Duration::from_secs(1));
        assert_eq!(s.due(t0).collect::<Vec<_>>(), vec![0]);
        assert_eq!(s.due(t0 + Duration::from_millis(500)).count(), 0);
        assert_eq!(s.due(t0 + Duration::from_millis(1000)).collect::<Vec<_>>(), vec![1]);
        assert_eq!(s.due(t0 + Duration::from_millis(3500)).collect::<Vec<_>>(), vec![2, 3]);
        assert_eq!(s.due(t0 + Duration::from_millis(4000)).collect::<Vec<_>>(), vec![0]);
    }

    #[test]
    fn a_stall_renews_each_node_once() {
        let t0 = Instant::now();
        let mut s = Sweep::new(3, Duration::from_secs(3), t0);
        assert_eq!(s.due(t0).count(), 1);
        let mut late: Vec<_> = s.due(t0 + Duration::from_secs(30)).collect();
        late.sort_unstable();
        assert_eq!(late, vec![0, 1, 2]);
    }

    #[test]
    fn nothing_before_the_first_slot() {
        let t0 = Instant::now();
        let mut s = Sweep::new(2, Duration::from_secs(1), t0 + Duration::from_secs(5));
        assert_eq!(s.due(t0).count(), 0);
    }

    #[test]
    fn many_nodes_tick_no_finer_than_the_floor() {
        let s = Sweep::new(5000, Duration::from_secs(10), Instant::now());
        assert_eq!(s.tick(), MIN_TICK);
        let mut s = Sweep::new(5000, Duration::from_secs(10), Instant::now());
        let t = s.first;
        // 10 ms of a 500/s schedule: about 5 nodes per tick.
        assert_eq!(s.due(t + Duration::from_millis(10)).count(), 6);
        assert_eq!(s.due(t + Duration::from_millis(20)).count(), 5);
    }
}
