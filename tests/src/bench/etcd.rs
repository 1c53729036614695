//! The storage floor: raw etcd puts and gets through the gRPC client, one connection per client.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use tokio::task::JoinSet;

use super::stats::{Phase, XorShift};

/// Size of every value written: about what a bench Pod takes in Keelson's store (its JSON with the
/// defaults the API server adds; the report prints the measured size beside it), so that the floor
/// stores as many bytes per write as a create does. Until 2026-11-26 this was 256 bytes, which
/// made etcd's put rate ~20 % higher than with pod-sized values on the reference machine.
pub const VALUE_BYTES: usize = 1200;

async fn connect(endpoint: &str, clients: usize) -> anyhow::Result<Vec<etcd_client::Client>> {
    let mut out = Vec::with_capacity(clients);
    for _ in 0..clients {
        let mut client = etcd_client::Client::connect([endpoint], None)
            .await
            .with_context(|| format!("connect etcd at {endpoint}"))?;
        // One request answered before a timed phase, as for the API's connections.
        client.status().await.with_context(|| format!("etcd status at {endpoint}"))?;
        out.push(client);
    }
    Ok(out)
}

/// `clients` clients put `count` keys in all (`{prefix}/{client}/{n}`, [`VALUE_BYTES`] each);
/// returns the phase and the keys written.
pub async fn put(
    endpoint: &str,
    clients: usize,
    count: usize,
    prefix: &str,
    deadline: Instant,
) -> anyhow::Result<(Phase, Vec<String>)> {
    let conns = connect(endpoint, clients).await?;
    let value = Arc::new(vec![b'v'; VALUE_BYTES]);
    let start = Instant::now();
    let mut set = JoinSet::new();
    for (i, mut client) in conns.into_iter().enumerate() {
        let quota = count / clients + usize::from(i < count % clients);
        let (value, prefix) = (value.clone(), prefix.to_owned());
        set.spawn(async move {
            let mut phase = Phase::default();
            let mut keys = Vec::with_capacity(quota);
            for n in 0..quota {
                if Instant::now() > deadline {
                    phase.capped = true;
                    break;
                }
                let key = format!("{prefix}/{i}/{n:07}");
                let started = Instant::now();
                match client.put(key.as_str(), value.as_slice(), None).await {
                    Ok(_) => {
                        phase.latencies.push(started.elapsed().as_nanos() as u64);
                        keys.push(key);
                    }
                    Err(error) => phase.fail(|| format!("etcd put {key}: {error}")),
                }
            }
            (phase, keys)
        });
    }
    let mut phase = Phase::default();
    let mut keys = Vec::with_capacity(count);
    while let Some(joined) = set.join_next().await {
        let (part, written) = joined.context("an etcd client task panicked")?;
        phase.absorb(part);
        keys.extend(written);
    }
    phase.wall = start.elapsed();
    Ok((phase, keys))
}

/// `clients` clients get `count` keys in all, picked at random from `keys`; each must exist.
pub async fn get(
    endpoint: &str,
    clients: usize,
    count: usize,
    keys: Arc<Vec<String>>,
    deadline: Instant,
) -> anyhow::Result<Phase> {
    let conns = connect(endpoint, clients).await?;
    let start = Instant::now();
    let mut set = JoinSet::new();
    for (i, mut client) in conns.into_iter().enumerate() {
        let quota = count / clients + usize::from(i < count % clients);
        let keys = keys.clone();
        set.spawn(async move {
            let mut phase = Phase::default();
            let mut rng = XorShift::new(i as u64 + 1);
            for _ in 0..quota {
                if Instant::now() > deadline {
                    phase.capped = true;
                    break;
                }
                let key = &keys[rng.below(keys.len())];
                let started = Instant::now();
                match client.get(key.as_str(), None).await {
                    Ok(response) if response.kvs().len() == 1 => {
                        phase.latencies.push(started.elapsed().as_nanos() as u64)
                    }
                    Ok(response) => phase.fail(|| format!("etcd get {key}: {} values", response.kvs().len())),
                    Err(error) => phase.fail(|| format!("etcd get {key}: {error}")),
                }
            }
            phase
        });
    }
    let mut phase = Phase::default();
    while let Some(joined) = set.join_next().await {
        phase.absorb(joined.context("an etcd client task panicked")?);
    }
    phase.wall = start.elapsed();
    Ok(phase)
}
