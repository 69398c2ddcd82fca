//! `unisondb`: the node binary (server, config check, offline inspect).
//!
//! CLI parsing and logging only: the process wiring lives in `unisondb::server`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use unisondb::config::{Config, LogFormat, Mode};

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
            match rt.block_on(unisondb::server::run(cfg)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "server failed");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
