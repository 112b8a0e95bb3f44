//! The `apimetrics-agent` binary: parses the command line, sets up logging, loads the config and
//! calls into the library. Exit codes: 0 success, 1 failure, 2 bad configuration or usage.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use apimetrics_agent::config::{self, ConfigError};
use apimetrics_agent::populate::{self, Population};
use apimetrics_agent::{demo, run, source};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(version, about = "Pushes a Django app's 24-hour transaction aggregate out of firewalled sites")]
struct Cli {
    /// The configuration file.
    #[arg(long, global = true, env = "APIMETRICS_CONFIG", default_value = "config.toml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Tick on the schedule and serve /metrics until SIGTERM or SIGINT (the default).
    Run,
    /// Take one snapshot now; exit 0 only if everything succeeded.
    Once {
        /// Print the exposition text that would be sent to stdout, and send nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Validate the config, open the database and show how the window will be read.
    Check,
    /// Create a Django-schema database with sample APIs, statuses and transactions.
    Populate {
        /// The database file to create.
        path: PathBuf,
        /// How many transactions, spread over the last 48 hours.
        #[arg(long, default_value_t = 100_000)]
        rows: u64,
        /// Seeds the random choices; a seed always gives the same data.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// How many APIs (1 to 20); there are always 6 statuses.
        #[arg(long, default_value_t = 4)]
        apis: usize,
        /// Replace the file if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Create demo.sqlite3, keep changing it as the app would, and run the agent on it.
    Demo,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    match execute(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            if error.chain().any(|cause| cause.is::<ConfigError>()) { ExitCode::from(2) } else { ExitCode::FAILURE }
        }
    }
}

fn execute(cli: Cli) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => {
            apimetrics_agent::common::open_files::raise_soft_limit();
            let config = config::load(&cli.config)?;
            runtime.block_on(run::run(config, shutdown_signal()))?;
        }
        Command::Once { dry_run } => {
            let config = config::load(&cli.config)?;
            if let Some(body) = runtime.block_on(run::once(config, dry_run))? {
                print!("{body}");
            }
        }
        Command::Check => {
            let config = config::load(&cli.config)?;
            print!("config {} is valid\n{}", cli.config.display(), source::check(config.source())?);
        }
        Command::Populate { path, rows, seed, apis, force } => {
            populate::create(&path, &Population::new(rows, apis, seed), force, true)?;
            eprintln!("created {} with {rows} transactions over the last 48 hours", path.display());
        }
        Command::Demo => runtime.block_on(demo::run(&cli.config, shutdown_signal()))?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Resolves on the first SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
