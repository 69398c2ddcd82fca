//! `unisondb`: the node binary (server, relay, replica, config check, offline inspect and WAL tools,
//! and a terminal client for the HTTP API).
//!
//! CLI parsing and logging only: the process wiring lives in `unisondb::server`, the admin and
//! client commands in `unisondb::cli`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use unisondb::cli::client::{ClientArgs, KvCommand, LobCommand, RowCommand, WatchArgs};
use unisondb::cli::probe::ProbeArgs;
use unisondb::cli::wal::WalCommand;
use unisondb::config::{Config, LogFormat, Mode};

/// mimalloc rather than glibc's malloc: per-request buffers (1 KiB values, JSON, frames) are freed
/// on other threads than they were allocated on, where glibc's free lists cost ~10% of a write's CPU.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

/// Where the node's config comes from: `-c/--config`, else `$UNISONDB_CONFIG`, else `./config.toml`
/// when it exists, else the embedded defaults.
#[derive(clap::Args)]
struct ConfigArg {
    /// Config file: ours (.toml, .yaml, .yml) or UnisonDB's config.toml (detected by its keys).
    /// Default: $UNISONDB_CONFIG, else ./config.toml when present, else embedded defaults.
    #[arg(short = 'c', long = "config", env = "UNISONDB_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the node: a writable hub (UnisonDB's `server`), or what --mode says.
    Server {
        /// replicator (writable hub) or relayer (read-only); overrides server.mode.
        #[arg(long, value_enum)]
        mode: Option<Mode>,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Run a read-only relay: follows its upstream(s) and serves its WAL downstream (= --mode relayer).
    Relay {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Run a read-only replica (= --mode relayer; its gRPC port still serves the WAL downstream).
    Replica {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Config tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Offline, read-only report on the namespaces under a data directory (the server must be
    /// stopped). Changes nothing unless --repair is given.
    Inspect {
        dir: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Truncate a torn WAL tail (crash debris past the durable bound), and nothing else.
        #[arg(long)]
        repair: bool,
    },
    /// Offline, read-only WAL tools (UnisonDB's `udbctl`): list, inspect, stats.
    Wal {
        #[command(subcommand)]
        command: WalCommand,
    },
    /// Key-value client: get, put, delete, scan.
    Kv {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: KvCommand,
    },
    /// Wide-column row client: get, put, delete.
    Row {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: RowCommand,
    },
    /// Large-object client: put a file, get to a file or stdout.
    Lob {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: LobCommand,
    },
    /// Print live changes of a namespace (server-sent events) until interrupted.
    Watch {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        watch: WatchArgs,
    },
    /// Take a complete, consistent backup of a namespace through a running node.
    Backup {
        #[command(flatten)]
        client: ClientArgs,
        /// Directory under the node's backup directory (default: the backup directory itself).
        #[arg(long, conflicts_with = "object_store")]
        dir: Option<String>,
        /// Into the node's archive object store (`archive.*`) instead of its backup directory.
        #[arg(long)]
        object_store: bool,
        /// Also write the answer as compact JSON to this file (`error: ...` on failure), e.g.
        /// `/dev/termination-log` in a Kubernetes Job.
        #[arg(long)]
        result_file: Option<PathBuf>,
    },
    /// A hub group's membership: list, add or remove members, hand off the leadership.
    Cluster {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: unisondb::cli::client::ClusterCommand,
        /// Also write the answer as compact JSON to this file (`error: ...` on failure), e.g.
        /// `/dev/termination-log` in a Kubernetes Job.
        #[arg(long, global = true)]
        result_file: Option<PathBuf>,
    },
    /// Restore a namespace from a backup, offline (the server stopped), optionally to a point in time.
    Restore(unisondb::cli::restore::RestoreArgs),
    /// GET a URL and exit 0 when it answers with the expected status (Helm test hooks, debugging).
    Probe {
        #[command(flatten)]
        probe: ProbeArgs,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a file (ours or UnisonDB's, plus UNISONDB_* overrides) and print the effective
    /// config as YAML; warnings go to stderr.
    Check { file: PathBuf },
}

/// Whether the command line (or `UNISONDB_NAMESPACE`) names a namespace: `unisondb cluster` acts on
/// every group unless one is named.
fn namespace_given() -> bool {
    std::env::var_os("UNISONDB_NAMESPACE").is_some()
        || std::env::args().any(|a| {
            a == "-n" || a == "--namespace" || a.starts_with("--namespace=") || {
                a.starts_with("-n") && !a.starts_with("--") && a.len() > 2
            }
        })
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

/// The file to load and, when it was found rather than given, a note saying so.
fn config_path(arg: ConfigArg) -> (Option<PathBuf>, Option<String>) {
    if let Some(p) = arg.config.filter(|p| !p.as_os_str().is_empty()) {
        return (Some(p), None);
    }
    let local = Path::new("config.toml");
    if local.is_file() {
        return (
            Some(local.to_path_buf()),
            Some("using ./config.toml (no -c/--config or $UNISONDB_CONFIG given)".into()),
        );
    }
    (None, None)
}

/// Loads the config, applies the command's mode, starts logging and runs the node.
fn run_node(
    arg: ConfigArg,
    mode: Option<Mode>,
    command: &str,
    log_override: Option<LogFormat>,
) -> ExitCode {
    let (path, note) = config_path(arg);
    let loaded = match Config::load_verbose(path.as_deref()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let mut cfg = loaded.config;
    if let Some(m) = mode {
        cfg.server.mode = m;
    }
    if let Some(f) = log_override {
        cfg.log.format = f;
    }
    init_logs(cfg.log.format, &cfg.log.level);
    if let Some(note) = note {
        tracing::info!("{note}");
    }
    if let Some(p) = &path {
        tracing::info!(file = %p.display(), format = ?loaded.format, "config loaded");
    }
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    if cfg.server.mode == Mode::Replicator && !cfg.replication.upstream.is_empty() {
        tracing::warn!(
            upstream = %cfg.replication.upstream,
            "replication.upstream is set but `unisondb {command}` runs a writable hub that does not follow it; use `unisondb relay` (or `server --mode relayer`)"
        );
    }
    if command == "replica" {
        tracing::info!(
            grpc = %cfg.grpc.listen,
            "replica: read-only; its gRPC listener still serves its WAL to anyone who follows it"
        );
    }
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
    match rt.block_on(unisondb::server::run(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "server failed");
            ExitCode::FAILURE
        }
    }
}

/// Lets a client command die quietly when its output pipe closes (`unisondb kv scan | head`)
/// instead of panicking in `println!`; the server keeps Rust's default (SIGPIPE ignored).
fn default_sigpipe() {
    // SAFETY: restoring the default disposition of one signal before any thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log_override = cli.log_format;
    if !matches!(
        cli.command,
        Command::Server { .. } | Command::Relay { .. } | Command::Replica { .. }
    ) {
        default_sigpipe();
    }
    match cli.command {
        Command::Config {
            command: ConfigCommand::Check { file },
        } => match Config::load_verbose(Some(&file)) {
            Ok(l) => {
                for w in &l.warnings {
                    eprintln!("warning: {w}");
                }
                eprintln!("# format: {:?}", l.format);
                print!("{}", l.config.to_yaml());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        Command::Inspect { dir, json, repair } => {
            init_logs(log_override.unwrap_or_default(), "warn");
            let opts = unisondb::inspect::InspectOptions { repair };
            match unisondb::inspect::inspect_with(&dir, opts) {
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
        Command::Wal { command } => {
            init_logs(log_override.unwrap_or_default(), "warn");
            unisondb::cli::wal::run(command)
        }
        Command::Kv { client, command } => unisondb::cli::client::run_kv(client, command),
        Command::Row { client, command } => unisondb::cli::client::run_row(client, command),
        Command::Lob { client, command } => unisondb::cli::client::run_lob(client, command),
        Command::Watch { client, watch } => unisondb::cli::client::run_watch(client, watch),
        Command::Backup {
            client,
            dir,
            object_store,
            result_file,
        } => unisondb::cli::client::run_backup(client, dir, object_store, result_file),
        Command::Cluster {
            client,
            command,
            result_file,
        } => {
            let given = namespace_given();
            unisondb::cli::client::run_cluster(client, command, given, result_file)
        }
        Command::Restore(args) => {
            init_logs(log_override.unwrap_or_default(), "warn");
            unisondb::cli::restore::run(args)
        }
        Command::Probe { probe } => unisondb::cli::probe::run(probe),
        Command::Server { mode, config } => run_node(config, mode, "server", log_override),
        Command::Relay { config } => run_node(config, Some(Mode::Relayer), "relay", log_override),
        Command::Replica { config } => {
            run_node(config, Some(Mode::Relayer), "replica", log_override)
        }
    }
}
