//! The `apimetrics-agent` binary: parses the command line, sets up logging, loads the config and
//! calls into the library. Exit codes: 0 success, 1 failure, 2 bad configuration or usage.

use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use apimetrics_agent::common::escape::escape_controls;
use apimetrics_agent::common::logging::{self, LogFormat};
use apimetrics_agent::common::redact::redact;
use apimetrics_agent::config::{self, ConfigError};
use apimetrics_agent::populate::{self, Population};
use apimetrics_agent::{check, demo, manual, run};
use clap::{CommandFactory, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Pushes a Django app's 24-hour transaction aggregate out of firewalled sites",
    long_about = "apimetrics-agent reads a Django payment app's database (SQLite, PostgreSQL, MySQL or \
MariaDB) read-only on a schedule, counts the transactions modified in the last 24 hours by API \
and status, and gets that aggregate out of the site as the gauge api_transactions: pushed to a \
Prometheus Pushgateway, sent by Prometheus remote-write through a queue on disk, and served on \
a local /metrics. The configuration file says where to read, when and where to send; \
/usr/share/doc/apimetrics-agent/README.md describes every key."
)]
struct Cli {
    /// The configuration file.
    #[arg(long, global = true, value_name = "FILE", env = "APIMETRICS_CONFIG", default_value = "config.toml")]
    config: PathBuf,
    /// How log records are written to stderr: "text" (one line each) or "json" (one object per
    /// line); overrides [log] format.
    #[arg(long, global = true, value_name = "FORMAT", env = "APIMETRICS_LOG_FORMAT")]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Clone, Subcommand)]
enum Command {
    /// Tick on the schedule and serve /metrics until SIGTERM or SIGINT (the default).
    Run,
    /// Take one snapshot now; exit 0 only if everything succeeded.
    Once {
        /// Print the exposition text that would be sent to stdout, and send nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Validate the config, open the database and show how the window will be read, and try
    /// writing to agent.state_dir; exit 0 only if all is well.
    Check {
        /// Also ask every push target for an answer: a Pushgateway's /-/ready, an empty
        /// remote-write request.
        #[arg(long)]
        targets: bool,
    },
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
    /// Print the manual page, apimetrics-agent(1), in roff.
    #[command(hide = true)]
    Man,
}

fn main() -> ExitCode {
    let inherited = hangups(libc::SIG_IGN);
    let cli = Cli::parse();
    if !matches!(cli.command, None | Some(Command::Run | Command::Demo)) {
        hangups(inherited);
    }
    match execute(cli) {
        Ok(code) => code,
        Err(error) => {
            // One line each for the chain's parts and a config's problems; nothing from a value
            // may move the cursor or start a line of its own, and no secret shows.
            let lines: Vec<String> =
                redact(&format!("{error:#}")).split('\n').map(|line| escape_controls(line, false)).collect();
            eprintln!("error: {}", lines.join("\n"));
            if error.chain().any(|cause| cause.is::<ConfigError>()) { ExitCode::from(2) } else { ExitCode::FAILURE }
        }
    }
}

/// Sets what SIGHUP does, and returns what it did. `main` ignores it at once: until `run` catches
/// it to reload, one must not end the agent, as its default action would (`systemctl reload`
/// right after a start), and one that comes before the config is read asks for nothing that
/// reading it will not do. The other commands get back what they inherited (`nohup` ignores it).
fn hangups(action: libc::sighandler_t) -> libc::sighandler_t {
    // SAFETY: sets a signal's disposition to SIG_IGN, or back to what it was on entry (SIG_DFL or
    // SIG_IGN: no handler of this program's survives exec), while no other thread exists;
    // Tokio's handler replaces it when `signals` runs.
    unsafe { libc::signal(libc::SIGHUP, action) }
}

fn execute(cli: Cli) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let outcome = execute_on(cli, &runtime);
    // A read abandoned in a hung system call must not hold up the exit.
    runtime.shutdown_timeout(Duration::from_secs(1));
    outcome
}

fn execute_on(cli: Cli, runtime: &tokio::runtime::Runtime) -> anyhow::Result<ExitCode> {
    // Logging is set up once the config is read: `--log-format` wins over its `[log] format`.
    let load = || {
        let config = config::load(&cli.config)?;
        logging::init(cli.log_format.unwrap_or(config.log_format));
        config.log_warnings();
        anyhow::Ok(config)
    };
    match cli.command.clone().unwrap_or(Command::Run) {
        Command::Run => {
            let signals = signals(runtime)?;
            let config = load()?;
            apimetrics_agent::common::open_files::raise_soft_limit();
            let (hangups, shutdown) = signals;
            runtime.block_on(run::run(config, hangups, shutdown))?;
        }
        Command::Once { dry_run } => {
            let config = load()?;
            if let Some(body) = runtime.block_on(run::once(config, dry_run))? {
                print!("{body}");
            }
        }
        Command::Check { targets } => {
            let config = load()?;
            println!("config {} is valid", cli.config.display());
            let report = runtime.block_on(check::check(&config, targets));
            print!("{}", redact(&report.text));
            if !report.failures.is_empty() {
                for failure in &report.failures {
                    eprintln!("error: {}", escape_controls(&redact(failure), false));
                }
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Populate { path, rows, seed, apis, force } => {
            logging::init(cli.log_format.unwrap_or_default());
            populate::create(&path, &Population::new(rows, apis, seed), force, true)?;
            eprintln!("created {} with {rows} transactions over the last 48 hours", path.display());
        }
        Command::Demo => {
            logging::init(cli.log_format.unwrap_or_default());
            let (hangups, shutdown) = signals(runtime)?;
            runtime.block_on(demo::run(&cli.config, hangups, shutdown))?
        }
        Command::Man => print!("{}", manual::render(Cli::command())),
    }
    Ok(ExitCode::SUCCESS)
}

/// The SIGHUPs `run` reloads on, and a future that resolves on the first SIGTERM or SIGINT. The
/// handlers are in place when this returns, so a signal that comes while the config is read or
/// the agent is still starting is not lost (nor, by the default action, the process).
fn signals(runtime: &tokio::runtime::Runtime) -> anyhow::Result<(run::Hangups, impl Future<Output = ()>)> {
    use tokio::signal::unix::{SignalKind, signal};
    let _inside = runtime.enter();
    let hangups = run::Hangups::catch()?;
    let mut terminate = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let shutdown = async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
    };
    Ok((hangups, shutdown))
}
