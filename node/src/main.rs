//! `unisondb`: the node binary (server, config check, offline inspect).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use unisondb::config::{Config, ConfigExt, LogFormat, Mode};
use unisondb::db::Database;
use unisondb::http::{self, AppState};
use unisondb::models::lob;

/// How long in-flight requests get to finish after SIGTERM before the store is closed anyway.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Parser)]
#[command(
    name = "unisondb",
    version,
    about = "Log-native multi-model database for the edge"
)]
struct Cli {
    /// Log output format (overrides log.format).
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the node.
    Server {
        /// replicator (writable hub) or relayer (read-only); overrides server.mode.
        #[arg(long, value_enum)]
        mode: Option<Mode>,
        /// Config file (.toml, .yaml or .yml); embedded defaults when absent.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Config tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Offline report on the namespaces under a data directory (the server must be stopped).
    Inspect {
        dir: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a file (plus UNISONDB_* overrides) and print the effective config as YAML.
    Check { file: PathBuf },
}

fn init_logs(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_env("RUST_LOG")
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == LogFormat::Json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log_override = cli.log_format;
    match cli.command {
        Command::Config {
            command: ConfigCommand::Check { file },
        } => match Config::load(Some(&file)) {
            Ok(cfg) => {
                print!("{}", cfg.to_yaml());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        Command::Inspect { dir, json } => {
            init_logs(log_override.unwrap_or_default(), "warn");
            match unisondb::inspect::inspect(&dir) {
                Ok(report) => {
                    if json {
                        match serde_json::to_string_pretty(&report) {
                            Ok(s) => println!("{s}"),
                            Err(e) => {
                                eprintln!("error: {e}");
                                return ExitCode::FAILURE;
                            }
                        }
                    } else {
                        print!("{}", report.to_text());
                    }
                    if report.has_problems() {
                        ExitCode::from(3)
                    } else {
                        ExitCode::SUCCESS
                    }
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Server { mode, config } => {
            let mut cfg = match Config::load(config.as_deref()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            if let Some(m) = mode {
                cfg.server.mode = m;
            }
            if let Some(f) = log_override {
                cfg.log.format = f;
            }
            init_logs(cfg.log.format, &cfg.log.level);
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(serve(cfg)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "server failed");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn shutdown_requested() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot install SIGTERM handler");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}

async fn serve(cfg: Config) -> anyhow::Result<()> {
    let token = cfg.auth_token()?;
    let tls = if cfg.http.tls_cert_file.is_empty() {
        None
    } else {
        Some(http::tls::server_config(
            std::path::Path::new(&cfg.http.tls_cert_file),
            std::path::Path::new(&cfg.http.tls_key_file),
        )?)
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let state = Arc::new(AppState::new(cfg.clone(), token, stop_rx.clone()));
    let listener = tokio::net::TcpListener::bind(&cfg.http.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.http.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, tls = tls.is_some(), mode = ?cfg.server.mode, "HTTP listening");
    if cfg.server.mode == Mode::Relayer && cfg.replication.upstream.is_empty() {
        tracing::warn!("relayer mode without replication.upstream: serving read-only local data");
    }

    let app = http::router(state.clone());
    let graceful = {
        let mut rx = stop_rx.clone();
        async move {
            while !*rx.borrow_and_update() {
                if rx.changed().await.is_err() {
                    break;
                }
            }
        }
    };
    let server = match tls {
        Some(tls_cfg) => {
            let l = http::tls::TlsListener::new(listener, tls_cfg)?;
            tokio::spawn(async move { axum::serve(l, app).with_graceful_shutdown(graceful).await })
        }
        None => tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(graceful)
                .await
        }),
    };

    // Recover namespaces while /healthz already answers (and /readyz says 503).
    let opts = cfg.engine_options();
    let data_dir = cfg.server.data_dir.clone();
    let names = cfg.server.namespaces.clone();
    let opening = tokio::task::spawn_blocking(move || -> anyhow::Result<Database> {
        let db = Database::open(&data_dir, &names, &opts)
            .with_context(|| format!("cannot open data dir {}", data_dir.display()))?;
        for ns in db.namespaces() {
            match lob::collect_orphans(ns) {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    namespace = ns.name(),
                    versions = n,
                    "removed orphan LOB chunks"
                ),
                Err(e) => {
                    tracing::warn!(namespace = ns.name(), error = %e, "LOB orphan collection failed")
                }
            }
        }
        Ok(db)
    });
    let db = tokio::select! {
        r = opening => r.context("open task failed")??,
        _ = shutdown_requested() => {
            tracing::info!("shutdown requested during recovery");
            let _ = stop_tx.send(true);
            return Ok(());
        }
    };
    // gRPC (WAL streaming + health), followers (relayer mode / mirrors) and ZeroMQ notifications.
    let (replication, mut services) =
        unisondb::replication::start_from_config(&db, &cfg, stop_rx.clone())
            .await
            .context("cannot start replication / notifications")?;
    replication.install_global();
    state.set_ready(db.clone());
    tracing::info!(namespaces = ?cfg.server.namespaces, "ready");

    let reaper = {
        let st = state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let st = st.clone();
                let _ = tokio::task::spawn_blocking(move || st.txns.reap()).await;
            }
        })
    };

    let service_failure = tokio::select! {
        _ = shutdown_requested() => None,
        Some(ended) = services.join_next() => Some(match ended {
            Ok(Ok(())) => "a replication/notification service stopped unexpectedly".to_string(),
            Ok(Err(e)) => e.to_string(),
            Err(e) => format!("replication/notification task failed: {e}"),
        }),
    };
    if let Some(why) = &service_failure {
        tracing::error!(error = %why, "shutting down");
    }
    state.set_not_ready();
    let _ = stop_tx.send(true);
    match tokio::time::timeout(DRAIN_TIMEOUT, server).await {
        Ok(Ok(Ok(()))) => tracing::info!("HTTP drained"),
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "HTTP server ended with an error"),
        Ok(Err(e)) => tracing::warn!(error = %e, "HTTP task failed"),
        Err(_) => tracing::warn!("in-flight requests did not finish in time; closing anyway"),
    }
    reaper.abort();
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while let Some(ended) = services.join_next().await {
            match ended {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "service ended with an error"),
                Err(e) => tracing::warn!(error = %e, "service task failed"),
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!("replication/notification services did not stop in time");
    }
    let st = state.clone();
    tokio::task::spawn_blocking(move || {
        st.txns.abort_all();
        db.close()
    })
    .await
    .context("close task failed")?
    .context("closing the store failed")?;
    tracing::info!("store closed; bye");
    match service_failure {
        Some(why) => Err(anyhow::anyhow!(why)),
        None => Ok(()),
    }
}
