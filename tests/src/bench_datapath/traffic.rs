//! The traffic: TCP servers in the backend namespace and the client's measuring loops.
//!
//! Each backend address gets one server thread that enters the backend namespace before it binds
//! (`setns` moves only that thread). A server accepts, reads one byte if one comes, answers with
//! its backend index, and closes.
//!
//! The client closes every connection with `SO_LINGER` 0 (a RST): neither side keeps a TIME_WAIT,
//! so a later connection from a reused client port is never PAWS-rejected by a TIME_WAIT left by
//! an earlier one (which costs a 12–16 ms retransmit and ruins p99).

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use super::sys;
use super::topology::Netns;

/// Accept backlog of each server: deep enough that a server thread descheduled for a while on a
/// busy machine never makes the kernel drop a SYN.
const BACKLOG: i32 = 4096;
/// Longest a sanity-check connect may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The backend servers; stopped and joined on drop.
pub struct Backends {
    stop: Arc<AtomicBool>,
    listeners: Vec<TcpListener>,
    threads: Vec<JoinHandle<()>>,
}

impl Backends {
    /// One server per address on `port`, each in a thread inside `namespace`.
    pub fn start(namespace: &Netns, addresses: &[Ipv4Addr], port: u16) -> anyhow::Result<Backends> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut backends = Backends { stop: stop.clone(), listeners: Vec::new(), threads: Vec::new() };
        for (index, address) in addresses.iter().copied().enumerate() {
            let netns = namespace.file()?;
            let name = namespace.name.clone();
            let (ready, bound) = std::sync::mpsc::channel();
            let stop = stop.clone();
            let thread = std::thread::Builder::new()
                .name(format!("backend-{index}"))
                .spawn(move || {
                    let listener = sys::enter_netns(&netns)
                        .with_context(|| format!("setns into {name}"))
                        .and_then(|()| {
                            TcpListener::bind(SocketAddrV4::new(address, port))
                                .with_context(|| format!("bind {address}:{port} in {name}"))
                        })
                        .and_then(|listener| {
                            sys::set_backlog(&listener, BACKLOG).context("raise the accept backlog")?;
                            Ok(listener)
                        });
                    let listener = match listener {
                        Ok(listener) => listener,
                        Err(error) => {
                            let _ = ready.send(Err(error));
                            return;
                        }
                    };
                    let _ = ready.send(listener.try_clone().context("duplicate the listener"));
                    serve(&listener, index as u8, &stop);
                })
                .context("spawn a backend thread")?;
            backends.threads.push(thread);
            let listener = bound.recv().context("backend thread exited early")??;
            backends.listeners.push(listener);
        }
        Ok(backends)
    }
}

impl Drop for Backends {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for listener in &self.listeners {
            let _ = sys::shutdown_listener(listener);
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn serve(listener: &TcpListener, index: u8, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        let Ok((mut stream, _)) = listener.accept() else {
            // Shut down (EINVAL) or a transient error: check the flag again.
            if stop.load(Ordering::SeqCst) {
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
            continue;
        };
        let mut byte = [0u8; 1];
        // The latency loop resets without sending; the rate loop sends one byte and waits.
        if let Ok(1) = stream.read(&mut byte) {
            let _ = stream.write_all(&[index]);
        }
    }
}

/// Connects to `target`, sends a byte and returns the backend index that answered; bounded in
/// time, for sanity checks before measuring.
pub fn probe(target: SocketAddrV4) -> anyhow::Result<u8> {
    let mut stream =
        TcpStream::connect_timeout(&target.into(), PROBE_TIMEOUT).with_context(|| format!("connect to {target}"))?;
    stream.set_read_timeout(Some(PROBE_TIMEOUT))?;
    stream.write_all(&[1]).with_context(|| format!("send to {target}"))?;
    let mut answer = [0u8; 1];
    stream.read_exact(&mut answer).with_context(|| format!("read the answer of {target}"))?;
    sys::set_abortive_close(&stream)?;
    Ok(answer[0])
}

/// `count` serial connects, round-robin over `targets`; each one timed from before `socket(2)` to
/// the return of `connect(2)` (the SYN-ACK), then reset. Returns nanoseconds.
pub fn connect_latencies(targets: &[SocketAddrV4], count: usize) -> anyhow::Result<Vec<u64>> {
    let mut latencies = Vec::with_capacity(count);
    for i in 0..count {
        if i % 256 == 0 && sys::interrupted() {
            bail!("interrupted");
        }
        let target = targets[i % targets.len()];
        let started = Instant::now();
        let stream = TcpStream::connect(target).with_context(|| format!("connect {i} to {target}"))?;
        latencies.push(started.elapsed().as_nanos() as u64);
        sys::set_abortive_close(&stream).context("SO_LINGER")?;
    }
    Ok(latencies)
}

/// Short connections back to back: connect, one-byte request, one-byte answer, reset.
#[derive(Debug, Clone, Default)]
pub struct Rate {
    pub per_second: f64,
    /// Answers per backend index.
    pub per_backend: Vec<usize>,
}

/// `count` short connections in series, round-robin over `targets`.
pub fn connection_rate(targets: &[SocketAddrV4], count: usize, backends: usize) -> anyhow::Result<Rate> {
    let mut per_backend = vec![0usize; backends];
    let started = Instant::now();
    for i in 0..count {
        if i % 256 == 0 && sys::interrupted() {
            bail!("interrupted");
        }
        let target = targets[i % targets.len()];
        let mut stream = TcpStream::connect(target).with_context(|| format!("connection {i} to {target}"))?;
        stream.write_all(&[1]).with_context(|| format!("send on connection {i} to {target}"))?;
        let mut answer = [0u8; 1];
        stream.read_exact(&mut answer).with_context(|| format!("answer on connection {i} to {target}"))?;
        sys::set_abortive_close(&stream).context("SO_LINGER")?;
        drop(stream);
        if let Some(slot) = per_backend.get_mut(usize::from(answer[0])) {
            *slot += 1;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    Ok(Rate { per_second: if secs > 0.0 { count as f64 / secs } else { 0.0 }, per_backend })
}
