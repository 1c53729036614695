//! Sequential ADD/DEL of 100 pods, printing p50/p99 latency of each (a measurement printed for the
//! record, not a timed assertion: the test only asserts that every command succeeds and cleans up).
//! Run with `--nocapture` to see the figures.

mod common;

use std::time::{Duration, Instant};

use common::{ClusterRoute, Network, Pod, assert_clean, result_ip};

const ROUNDS: usize = 100;

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    let index = ((sorted.len() as f64 * fraction).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

#[test]
fn sequential_add_del_latency() {
    let _route = ClusterRoute::hold();
    let network = Network::new("1.0.0", &common::large_subnet());
    let pods: Vec<Pod> = (0..ROUNDS).map(|_| Pod::new("lat")).collect();
    let mut adds = Vec::with_capacity(ROUNDS);
    let mut results = Vec::with_capacity(ROUNDS);
    for pod in &pods {
        let started = Instant::now();
        let outcome = network.add(pod);
        adds.push(started.elapsed());
        results.push(outcome.json());
    }
    let mut dels = Vec::with_capacity(ROUNDS);
    for (pod, result) in pods.iter().zip(&results) {
        let started = Instant::now();
        let outcome = network.del(pod, Some(result));
        dels.push(started.elapsed());
        outcome.ok_silent();
        assert_clean(&network, pod, Some(result_ip(result)));
    }
    adds.sort();
    dels.sort();
    eprintln!(
        "keelson sequential latency over {ROUNDS}: ADD p50 {:?} p99 {:?}; DEL p50 {:?} p99 {:?}",
        percentile(&adds, 0.5),
        percentile(&adds, 0.99),
        percentile(&dels, 0.5),
        percentile(&dels, 0.99),
    );
}
