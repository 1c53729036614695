//! End-to-end tests of the scheduling algorithm: failure messages, sampling, spreading,
//! preemption, and a micro-benchmark of one decision at 5 000 nodes.

use std::collections::BTreeMap;
use std::time::Instant;

use serde_json::{Value, json};

use super::*;

fn node(name: &str, zone: &str, cpu: &str, extra: Value) -> Value {
    let mut n = json!({
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "topology.kubernetes.io/zone": zone}},
        "status": {"allocatable": {"cpu": cpu, "memory": "32Gi", "pods": "110", "ephemeral-storage": "100Gi"}}
    });
    merge(&mut n, extra);
    n
}

fn merge(base: &mut Value, extra: Value) {
    match (base, extra) {
        (Value::Object(b), Value::Object(e)) => {
            for (k, v) in e {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, e) => *b = e,
    }
}

fn pod(name: &str, cpu: &str, extra: Value) -> Value {
    let mut p = json!({
        "metadata": {"name": name, "namespace": "ns", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": cpu, "memory": "256Mi"}}}]}
    });
    merge(&mut p, extra);
    p
}

fn snapshot(nodes: &[Value]) -> Snapshot {
    let mut s = Snapshot::new();
    for n in nodes {
        s.upsert_node(n).expect("node");
    }
    s
}

fn seeded() -> Scheduler {
    Scheduler::new(SchedulerConfig { seed: Some(7), ..SchedulerConfig::default() })
}

fn fit_error(result: Result<String, ScheduleError>) -> FitError {
    match result {
        Err(ScheduleError::Unschedulable(e)) => *e,
        other => panic!("expected a FitError, got {other:?}"),
    }
}

#[test]
fn mixed_reasons_render_like_kubernetes() {
    let snap = snapshot(&[
        node("n1", "a", "1", json!({"metadata": {"labels": {"disk": "hdd"}}})),
        node("n2", "a", "1", json!({"metadata": {"labels": {"disk": "ssd"}}})),
        node("n3", "b", "1", json!({"metadata": {"labels": {"disk": "ssd"}}})),
    ]);
    let p = pod("p", "2", json!({"spec": {"nodeSelector": {"disk": "ssd"}}}));
    let err = fit_error(seeded().schedule_one(&p, &snap));
    assert_eq!(
        err.to_string(),
        "0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, 2 Insufficient cpu. \
         preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
    );
    assert_eq!(err.unschedulable_plugins.into_iter().collect::<Vec<_>>(), vec!["NodeAffinity", "NodeResourcesFit"]);
}

#[test]
fn first_failing_filter_decides_each_node_and_resolvable_nodes_try_preemption() {
    let mut snap = snapshot(&[
        node("cordoned", "a", "4", json!({"spec": {"unschedulable": true}})),
        node("tainted", "a", "4", json!({"spec": {"taints": [{"key": "gpu", "value": "t4", "effect": "NoSchedule"}]}})),
        node("full", "b", "4", json!({"status": {"allocatable": {"pods": "1"}}})),
        node("busy", "b", "4", json!({})),
    ]);
    snap.upsert_pod(&pod("x", "100m", json!({"spec": {"nodeName": "full"}}))).expect("x");
    snap.upsert_pod(&pod("y", "3500m", json!({"spec": {"nodeName": "busy"}}))).expect("y");
    let err = fit_error(seeded().schedule_one(&pod("p", "1", json!({})), &snap));
    // Equal priorities: nothing can be evicted from the two resolvable nodes.
    assert_eq!(
        err.to_string(),
        "0/4 nodes are available: 1 Insufficient cpu, 1 Too many pods, 1 node(s) had untolerated taint(s), \
         1 node(s) were unschedulable. preemption: 0/4 nodes are available: 2 No preemption victims found for \
         incoming pod, 2 Preemption is not helpful for scheduling."
    );
    let never = pod("p", "1", json!({"spec": {"preemptionPolicy": "Never", "priority": 1000}}));
    assert!(
        fit_error(seeded().schedule_one(&never, &snap))
            .to_string()
            .ends_with("1 node(s) were unschedulable. preemption: not eligible due to preemptionPolicy=Never.")
    );
}

#[test]
fn preemption_picks_the_node_with_the_least_important_victims() {
    let mut snap = snapshot(&[node("n1", "a", "2", json!({})), node("n2", "a", "2", json!({}))]);
    let low = |name: &str, node: &str, cpu: &str, prio: i64| {
        pod(
            name,
            cpu,
            json!({"spec": {"nodeName": node, "priority": prio}, "status": {"startTime": "2026-01-01T00:00:00Z"}}),
        )
    };
    snap.upsert_pod(&low("a1", "n1", "1", 100)).expect("a1");
    snap.upsert_pod(&low("a2", "n1", "1", 10)).expect("a2");
    snap.upsert_pod(&low("b1", "n2", "1500m", 50)).expect("b1");
    let high = pod("p", "1", json!({"spec": {"priority": 1000}}));
    let err = fit_error(seeded().schedule_one(&high, &snap));
    assert_eq!(err.post_filter_msg, None);
    // n1 needs only a2 (priority 10) evicted; n2 would lose b1 (priority 50).
    assert_eq!(err.preemption, Some(PreemptionCandidate { node: "n1".into(), victims: vec!["ns/a2".into()] }));
    assert_eq!(err.to_string(), "0/2 nodes are available: 2 Insufficient cpu.");
}

#[test]
fn preemption_dry_run_reasons_are_reported() {
    let mut snap = snapshot(&[node("n1", "a", "4", json!({}))]);
    snap.upsert_pod(&pod("important", "3", json!({"spec": {"nodeName": "n1", "priority": 2000}}))).expect("pod");
    snap.upsert_pod(&pod("minor", "500m", json!({"spec": {"nodeName": "n1", "priority": 1}}))).expect("pod");
    let p = pod("p", "1500m", json!({"spec": {"priority": 1000}}));
    assert_eq!(
        fit_error(seeded().schedule_one(&p, &snap)).to_string(),
        "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available: 1 Insufficient cpu."
    );
}

#[test]
fn preemption_accounts_spread_counts_of_victims() {
    let mut snap =
        snapshot(&[node("na", "a", "8", json!({})), node("nb", "b", "8", json!({"spec": {"unschedulable": true}}))]);
    for i in 0..2 {
        snap.upsert_pod(&pod(&format!("w{i}"), "100m", json!({"spec": {"nodeName": "na"}}))).expect("pod");
    }
    let p = pod(
        "p",
        "100m",
        json!({"spec": {"priority": 100, "topologySpreadConstraints": [{"maxSkew": 1,
        "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule",
        "labelSelector": {"matchLabels": {"app": "web"}}}]}}),
    );
    let err = fit_error(seeded().schedule_one(&p, &snap));
    assert_eq!(
        err.to_string(),
        "0/2 nodes are available: 1 node(s) didn't match pod topology spread constraints, 1 node(s) were unschedulable."
    );
    let candidate = err.preemption.expect("evicting zone a's pods makes room");
    assert_eq!(candidate.node, "na");
    let mut victims = candidate.victims;
    victims.sort();
    assert_eq!(victims, vec!["ns/w0", "ns/w1"]);
}

#[test]
fn pre_filter_messages_and_pinned_nodes() {
    let snap = snapshot(&[node("n1", "a", "2", json!({})), node("n2", "a", "2", json!({}))]);
    let pinned = |names: Value| {
        pod(
            "p",
            "1",
            json!({"spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": names}]}]}}}}}),
        )
    };
    let s = seeded();
    for _ in 0..5 {
        assert_eq!(s.schedule_one(&pinned(json!(["n2"])), &snap).expect("pinned"), "n2");
    }
    assert_eq!(
        fit_error(s.schedule_one(&pinned(json!(["gone"])), &snap)).to_string(),
        "0/2 nodes are available: 2 node(s) didn't satisfy plugin(s) [NodeAffinity]. \
         preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling."
    );
    let conflict = pod(
        "p",
        "1",
        json!({"spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchFields": [
            {"key": "metadata.name", "operator": "In", "values": ["n1"]},
            {"key": "metadata.name", "operator": "In", "values": ["n2"]}]}]}}}}}),
    );
    assert_eq!(
        fit_error(s.schedule_one(&conflict, &snap)).to_string(),
        "0/2 nodes are available: pod affinity terms conflict. \
         preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling."
    );
    assert_eq!(s.schedule_one(&pod("p", "1", json!({})), &Snapshot::new()), Err(ScheduleError::NoNodesAvailable));
}

#[test]
fn sampling_stops_early_and_rotates_the_start() {
    let nodes: Vec<Value> = (0..1000).map(|i| node(&format!("n{i:04}"), "a", "4", json!({}))).collect();
    let snap = snapshot(&nodes);
    assert_eq!(num_feasible_nodes_to_find(0, 1000), 420);
    assert_eq!(num_feasible_nodes_to_find(0, 5000), 500);
    assert_eq!(num_feasible_nodes_to_find(0, 150), 100);
    assert_eq!(num_feasible_nodes_to_find(0, 50), 50);
    assert_eq!(num_feasible_nodes_to_find(0, 10_000), 500);
    assert_eq!(num_feasible_nodes_to_find(30, 1000), 300);

    let s = seeded();
    let p = PodInfo::from_json(&pod("p", "100m", json!({}))).expect("pod");
    let r = s.schedule(&p, &snap).expect("fits");
    assert_eq!((r.evaluated_nodes, r.feasible_nodes), (420, 420));
    assert_eq!(s.next_start_node_index(), 420);
    let r = s.schedule(&p, &snap).expect("fits");
    assert_eq!(s.next_start_node_index(), 840);
    let idx = snap.node_index(&r.node).expect("chosen node exists");
    assert!((420..840).contains(&idx), "second search covers nodes 420..840, chose {idx}");
    s.schedule(&p, &snap).expect("fits");
    assert_eq!(s.next_start_node_index(), (840 + 420) % 1000, "wraps around");

    // Infeasible nodes are evaluated too and count towards the rotation.
    let mut snap = snap;
    for i in 0..100 {
        snap.upsert_node(&node(&format!("n{i:04}"), "a", "4", json!({"spec": {"unschedulable": true}})))
            .expect("cordon");
    }
    let s = seeded();
    let r = s.schedule(&p, &snap).expect("fits");
    assert_eq!((r.evaluated_nodes, r.feasible_nodes), (520, 420));
}

#[test]
fn ties_are_broken_at_random() {
    let snap = snapshot(&(0..4).map(|i| node(&format!("n{i}"), "a", "4", json!({}))).collect::<Vec<_>>());
    let s = Scheduler::default();
    let p = PodInfo::from_json(&pod("p", "100m", json!({}))).expect("pod");
    let mut seen = BTreeMap::new();
    for _ in 0..200 {
        *seen.entry(s.schedule(&p, &snap).expect("fits").node).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 4, "every equally good node gets picked: {seen:?}");
}

#[test]
fn scoring_prefers_emptier_nodes_and_assume_feeds_the_next_decision() {
    let mut snap = snapshot(&[node("big", "a", "8", json!({})), node("small", "a", "2", json!({}))]);
    let s = seeded();
    let p = PodInfo::from_json(&pod("p0", "1", json!({}))).expect("pod");
    let chosen = s.schedule(&p, &snap).expect("fits").node;
    assert_eq!(chosen, "big");
    // Fill "big" through assumed pods until "small" becomes the better choice.
    let mut placements = Vec::new();
    for i in 0..8 {
        let p = PodInfo::from_json(&pod(&format!("p{i}"), "1", json!({}))).expect("pod");
        let node = s.schedule(&p, &snap).expect("fits").node;
        snap.assume(&p, &node).expect("assume");
        placements.push(node);
    }
    assert!(placements.contains(&"small".to_string()), "load spreads to the small node: {placements:?}");
    let big = snap.node("big").expect("big");
    let small = snap.node("small").expect("small");
    assert_eq!(big.requested.milli_cpu + small.requested.milli_cpu, 8000);
    let p = PodInfo::from_json(&pod("last", "3", json!({}))).expect("pod");
    assert!(s.schedule(&p, &snap).is_err(), "10 cpus hold 8 one-cpu pods and no room for 3 more cpus");
}

#[test]
fn hard_spread_balances_three_zones() {
    let mut nodes = Vec::new();
    for (i, zone) in ["a", "a", "a", "b", "b", "c"].iter().enumerate() {
        nodes.push(node(&format!("n{i}"), zone, "16", json!({})));
    }
    let mut snap = snapshot(&nodes);
    let s = seeded();
    let spread = json!({"spec": {"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
        "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "web"}}}]}});
    for i in 0..9 {
        let p = PodInfo::from_json(&pod(&format!("w{i}"), "100m", spread.clone())).expect("pod");
        let node = s.schedule(&p, &snap).expect("fits").node;
        snap.assume(&p, &node).expect("assume");
    }
    let mut per_zone: BTreeMap<String, usize> = BTreeMap::new();
    for n in snap.nodes() {
        *per_zone.entry(n.labels["topology.kubernetes.io/zone"].clone()).or_default() += n.pods.len();
    }
    assert_eq!(per_zone, [("a".to_string(), 3), ("b".to_string(), 3), ("c".to_string(), 3)].into());
}

#[test]
fn nominated_node_is_tried_first() {
    let snap = snapshot(&(0..3).map(|i| node(&format!("n{i}"), "a", "4", json!({}))).collect::<Vec<_>>());
    let s = seeded();
    let p = pod("p", "1", json!({"status": {"nominatedNodeName": "n1"}}));
    for _ in 0..5 {
        assert_eq!(s.schedule_one(&p, &snap).expect("fits"), "n1");
    }
}

#[test]
fn invalid_spread_selectors_are_reported() {
    let snap = snapshot(&[node("n", "a", "4", json!({}))]);
    let p = pod(
        "p",
        "1",
        json!({"spec": {"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone",
        "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchExpressions": [{"key": "a", "operator": "Bogus"}]}}]}}),
    );
    assert!(matches!(seeded().schedule_one(&p, &snap), Err(ScheduleError::InvalidPod(_))));
}

/// Measures one decision at 5 000 nodes (few iterations in debug builds; run with
/// `cargo test --release schedule_one_at_5000_nodes -- --nocapture` for real numbers).
#[test]
fn schedule_one_at_5000_nodes() {
    const NODES: usize = 5000;
    let zones = ["a", "b", "c"];
    let mut snap = Snapshot::new();
    for i in 0..NODES {
        let mut n = node(&format!("node-{i:05}"), zones[i % 3], "32", json!({}));
        if i % 50 == 0 {
            n["spec"] = json!({"taints": [{"key": "dedicated", "value": "infra", "effect": "NoSchedule"}]});
        }
        snap.upsert_node(&n).expect("node");
        for j in 0..4 {
            snap.upsert_pod(&pod(
                &format!("bg-{i}-{j}"),
                "500m",
                json!({"spec": {"nodeName": format!("node-{i:05}")}}),
            ))
            .expect("pod");
        }
    }
    let s = Scheduler::default();
    let iterations = if cfg!(debug_assertions) { 20 } else { 2000 };
    let pods: Vec<PodInfo> = (0..iterations)
        .map(|i| PodInfo::from_json(&pod(&format!("bench-{i}"), "250m", json!({})).clone()).expect("pod"))
        .collect();
    let started = Instant::now();
    for p in &pods {
        let r = s.schedule(p, &snap).expect("fits");
        assert_eq!(r.feasible_nodes, 500);
        snap.assume(p, &r.node).expect("assume");
    }
    let per_pod = started.elapsed() / u32::try_from(iterations).expect("small");
    println!("schedule + assume at {NODES} nodes: {per_pod:?} per pod ({iterations} pods)");

    let spread = json!({"spec": {"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
        "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "web"}}}]}});
    let spread_pods: Vec<PodInfo> = (0..iterations / 10)
        .map(|i| PodInfo::from_json(&pod(&format!("spread-{i}"), "250m", spread.clone())).expect("pod"))
        .collect();
    let started = Instant::now();
    for p in &spread_pods {
        let r = s.schedule(p, &snap).expect("fits");
        snap.assume(p, &r.node).expect("assume");
    }
    let per_pod = started.elapsed() / u32::try_from(spread_pods.len()).expect("small");
    println!("with a zone spread constraint: {per_pod:?} per pod ({} pods)", spread_pods.len());
}
