//! Command line of the `control-plane` binary: flags, logging, runtime, signals. Lives in the
//! library so that test crates can build the same binary (`anyhow` is used here as in a `main.rs`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;

#[derive(Parser, Debug)]
#[command(name = "control-plane", version, about = "Keelson control plane: Kubernetes-compatible API server")]
struct Args {
    /// Directory for the database, certificates and admin.kubeconfig.
    #[arg(long, env = "KEELSON_DATA_DIR")]
    data_dir: PathBuf,
    /// Address the HTTPS API listens on.
    #[arg(long, env = "KEELSON_LISTEN", default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// How often to compact storage history, in seconds.
    #[arg(long, env = "KEELSON_COMPACT_INTERVAL", default_value_t = 300)]
    compact_interval: u64,
    /// Controllers to run: `*` for all, `name` to enable, `-name` to disable (comma-separated).
    #[arg(long, env = "KEELSON_CONTROLLERS", default_value = "*")]
    controllers: String,
    /// Run the scheduler (`--scheduler=false` to disable).
    #[arg(long, env = "KEELSON_SCHEDULER", default_value_t = true, action = clap::ArgAction::Set)]
    scheduler: bool,
    /// etcd endpoints (comma-separated `http://host:port`); without it the embedded store is used.
    #[arg(long, env = "KEELSON_ETCD_SERVERS", value_delimiter = ',')]
    etcd_servers: Vec<String>,
    /// This replica's identity in leader election (default: hostname and a random suffix).
    #[arg(long, env = "KEELSON_IDENTITY")]
    identity: Option<String>,
    /// Leader election lease duration, in seconds (renew deadline and retry period scale with it).
    #[arg(long, env = "KEELSON_LEASE_DURATION", default_value_t = 15)]
    lease_duration: u64,
}

/// Runs the control plane as the `control-plane` binary does.
pub fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(64) } else { ExitCode::SUCCESS };
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("control-plane: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let mut cfg = crate::app::Config::new(args.data_dir, args.listen);
    cfg.compact_every = std::time::Duration::from_secs(args.compact_interval.max(1));
    cfg.controllers = args.controllers;
    cfg.scheduler = args.scheduler;
    cfg.etcd_servers = args.etcd_servers;
    if let Some(id) = args.identity {
        cfg.leader.identity = id;
    }
    let lease = std::time::Duration::from_secs(args.lease_duration.max(1));
    cfg.leader.lease_duration = lease;
    cfg.leader.renew_deadline = lease * 2 / 3;
    cfg.leader.retry_period = (lease / 7).max(std::time::Duration::from_millis(200));
    let running = crate::app::start(cfg).await.context("start control plane")?;
    println!("control plane serving on https://{}; kubeconfig: {}", running.addr, running.kubeconfig.display());
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).context("SIGTERM handler")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutting down");
    running.shutdown().await;
    Ok(())
}
