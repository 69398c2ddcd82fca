//! `unisondb-operator`: `crd` prints the CRDs; `run` runs the controllers with metrics, health
//! endpoints and Lease-based leader election.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use clap::{Parser, Subcommand};
use futures::FutureExt;
use tokio_util::sync::CancellationToken;

use unisondb_operator::leader::{Elector, LeaseConfig};
use unisondb_operator::metrics::Metrics;
use unisondb_operator::reconcile::Context;
use unisondb_operator::{controller, crd};

#[derive(Parser)]
#[command(
    name = "unisondb-operator",
    version,
    about = "Kubernetes operator for UnisonDB"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Print the CustomResourceDefinitions as YAML.
    Crd,
    /// Run the operator.
    Run(Box<RunArgs>),
}

#[derive(clap::Args)]
struct RunArgs {
    /// Address for /metrics, /healthz and /readyz.
    #[arg(long, env = "OPERATOR_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// Watch only this namespace (namespace-scoped install); all namespaces when unset.
    #[arg(long, env = "WATCH_NAMESPACE")]
    watch_namespace: Option<String>,
    /// Disable leader election (only for a single replica).
    #[arg(long)]
    no_leader_elect: bool,
    #[arg(long, env = "LEASE_NAME", default_value = "unisondb-operator")]
    lease_name: String,
    /// Namespace of the Lease; defaults to the watch namespace, then `default`.
    #[arg(long, env = "POD_NAMESPACE")]
    lease_namespace: Option<String>,
    /// Identity written to the Lease; defaults to hostname-pid.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    #[arg(long, default_value_t = 15)]
    lease_duration_secs: u64,
    #[arg(long, default_value_t = 5)]
    lease_renew_secs: u64,
    #[arg(long, env = "CLUSTER_DOMAIN", default_value = unisondb_operator::build::DEFAULT_CLUSTER_DOMAIN)]
    cluster_domain: String,
    /// Node image for hubs and relayers that do not set `spec.image` (the chart passes the image of
    /// its own version, so an operator upgrade rolls the nodes it manages).
    #[arg(long, env = "OPERATOR_NODE_IMAGE", default_value = unisondb_operator::build::DEFAULT_NODE_IMAGE)]
    node_image: String,
    /// Log format: text or json.
    #[arg(long, default_value = "text")]
    log_format: String,
}

#[derive(Clone)]
struct HttpState {
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
}

async fn metrics_handler(
    State(s): State<HttpState>,
) -> (StatusCode, [(&'static str, &'static str); 1], String) {
    (
        StatusCode::OK,
        [("content-type", "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
}

async fn readyz(State(s): State<HttpState>) -> (StatusCode, &'static str) {
    if s.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting")
    }
}

fn init_logs(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn"));
    let b = tracing_subscriber::fmt().with_env_filter(filter);
    if format == "json" {
        b.json().init();
    } else {
        b.init();
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c().map(|_| ());
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return ctrl_c.await,
            };
        tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
    }
    #[cfg(not(unix))]
    ctrl_c.await;
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    init_logs(&args.log_format);
    let client = kube::Client::try_default()
        .await
        .context("building the Kubernetes client (KUBECONFIG or in-cluster)")?;
    let metrics = Arc::new(Metrics::new());
    let ready = Arc::new(AtomicBool::new(false));
    let identity = args.identity.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/etc/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "operator".into());
        format!("{host}-{}", std::process::id())
    });

    // One cancellation tree: the signal cancels `stop`; the controllers stop on a child token,
    // cancelled too when leadership is lost.
    let stop = CancellationToken::new();
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            tracing::info!("shutdown requested");
            stop.cancel();
        });
    }

    // HTTP: /metrics /healthz /readyz
    let state = HttpState {
        metrics: metrics.clone(),
        ready: ready.clone(),
    };
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    tracing::info!(listen = %args.listen, "serving /metrics /healthz /readyz");
    let http_stop = stop.clone().cancelled_owned();
    let http = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(http_stop)
            .await
    });

    let elector = if args.no_leader_elect {
        None
    } else {
        let ns = args
            .lease_namespace
            .clone()
            .or_else(|| args.watch_namespace.clone())
            .unwrap_or_else(|| "default".into());
        Some(Arc::new(Elector::new(
            client.clone(),
            LeaseConfig {
                name: args.lease_name.clone(),
                namespace: ns,
                identity: identity.clone(),
                lease_duration: Duration::from_secs(args.lease_duration_secs),
                renew_every: Duration::from_secs(args.lease_renew_secs),
            },
        )))
    };
    // A standby replica is healthy and ready; it just does not reconcile.
    ready.store(true, Ordering::Relaxed);

    let mut lost_leadership = false;
    if let Some(el) = &elector {
        tokio::select! {
            _ = el.acquire() => {},
            _ = stop.cancelled() => { let _ = http.await; return Ok(()); }
        }
    }
    // Without election this replica is the only reconciler: it leads (the NoLeader alert reads this).
    metrics.is_leader.set(1);

    let ctx = Arc::new(
        Context::new(
            client.clone(),
            metrics.clone(),
            args.cluster_domain.clone(),
            identity.clone(),
        )
        .with_node_image(args.node_image.clone()),
    );
    // Controllers stop on a signal or when leadership is lost.
    let ctrl_stop = stop.child_token();
    let controllers = tokio::spawn(controller::run(
        client.clone(),
        ctx,
        args.watch_namespace.clone(),
        ctrl_stop.clone(),
    ));
    let hold = {
        let el = elector.clone();
        async move {
            match el {
                Some(el) => el.hold().await,
                None => futures::future::pending::<()>().await,
            }
        }
    };
    tokio::select! {
        _ = stop.cancelled() => {},
        _ = hold => { lost_leadership = true; }
    }
    ctrl_stop.cancel();
    if tokio::time::timeout(Duration::from_secs(20), controllers)
        .await
        .is_err()
    {
        tracing::warn!("controllers did not stop within 20s");
    }
    if let Some(el) = &elector {
        if !lost_leadership {
            el.release().await;
        }
    }
    metrics.is_leader.set(0);
    if lost_leadership {
        anyhow::bail!("lost leadership; exiting so a fresh process can re-elect");
    }
    let _ = http.await;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Crd => {
            print!("{}", crd::crds_yaml()?);
            Ok(())
        }
        Cmd::Run(args) => run(*args).await,
    }
}
