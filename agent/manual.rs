//! The manual page, apimetrics-agent(1), written from the command line's own definition so it
//! cannot drift from `--help`: clap_mangen renders the name, synopsis, description and global
//! options; this module adds each command with its options, and the sections a man page reader
//! looks for (exit status, signals, environment, files) that the CLI does not describe.
//! `contrib/apimetrics-agent.1` is this output, committed for cargo-deb; a test keeps it equal.

use clap_mangen::Man;
use clap_mangen::roff::{Roff, bold, italic, roman};

use crate::config::PACKAGED_PATH as PACKAGED_CONFIG;

/// The packaged configuration's agent.state_dir, which the unit's StateDirectory= makes.
const PACKAGED_STATE_DIR: &str = "/var/lib/apimetrics-agent";

/// The whole page, in roff, for `command` (the binary's `Cli::command()`).
pub fn render(command: clap::Command) -> String {
    let mut command = command.disable_help_subcommand(true);
    command.build();
    // The release's date, not today's: the page changes only when the CLI or the release does.
    let man = Man::new(command.clone()).date(release_date()).manual("apimetrics-agent manual");
    let mut page = Vec::new();
    for section in [Man::render_title, Man::render_name_section] {
        section(&man, &mut page).expect("writing to a Vec cannot fail");
    }
    // clap_mangen's synopsis leaves out what an option takes (`[--config]`).
    let mut synopsis = Roff::new();
    synopsis_section(&mut synopsis, &command);
    page.extend(synopsis.to_roff().into_bytes());
    man.render_description_section(&mut page).expect("writing to a Vec cannot fail");
    man.render_options_section(&mut page).expect("writing to a Vec cannot fail");

    let mut roff = Roff::new();
    commands(&mut roff, &command);
    closing_sections(&mut roff);
    let mut page = String::from_utf8(page).expect("clap_mangen writes UTF-8");
    page.push_str(&roff.to_roff());
    page
}

/// The date of the package's latest release, from its changelog's trailer line
/// (` -- maintainer <address>  Thu, 26 Nov 2026 07:30:00 +0000`), as YYYY-MM-DD.
fn release_date() -> String {
    let changelog = include_str!("../contrib/debian/changelog");
    let trailer = changelog.lines().find(|line| line.starts_with(" -- ")).expect("the changelog has a trailer line");
    let (_, date) = trailer.split_once(">  ").expect("the trailer line has the maintainer, two spaces, then the date");
    let date = chrono::DateTime::parse_from_rfc2822(date).expect("the changelog's date is RFC 2822, as dpkg wants it");
    date.format("%Y-%m-%d").to_string()
}

/// SYNOPSIS: the global options with what they take, then the command.
fn synopsis_section(roff: &mut Roff, command: &clap::Command) {
    roff.control("SH", ["SYNOPSIS"]);
    let mut synopsis = vec![bold(command.get_name())];
    for argument in command.get_arguments().filter(|argument| !argument.is_hide_set()) {
        synopsis.push(roman(" ["));
        match argument.get_id().as_str() {
            "help" => synopsis.extend([bold("-h"), roman("|"), bold("--help")]),
            "version" => synopsis.extend([bold("-V"), roman("|"), bold("--version")]),
            _ => synopsis.extend(usage(argument)),
        }
        synopsis.push(roman("]"));
    }
    synopsis.extend([roman(" ["), italic("COMMAND"), roman("]")]);
    roff.text(synopsis);
}

/// COMMANDS: each visible subcommand, its synopsis, what it does and its own options.
fn commands(roff: &mut Roff, command: &clap::Command) {
    roff.control("SH", ["COMMANDS"]);
    for subcommand in command.get_subcommands().filter(|subcommand| !subcommand.is_hide_set()) {
        let arguments: Vec<&clap::Arg> = subcommand
            .get_arguments()
            .filter(|argument| !argument.is_hide_set() && !argument.is_global_set())
            .filter(|argument| !matches!(argument.get_id().as_str(), "help" | "version"))
            .collect();
        let mut synopsis = vec![bold(format!("{} {}", command.get_name(), subcommand.get_name()))];
        for argument in &arguments {
            synopsis.push(roman(" "));
            let optional = !argument.is_required_set();
            if optional {
                synopsis.push(roman("["));
            }
            synopsis.extend(usage(argument));
            if optional {
                synopsis.push(roman("]"));
            }
        }
        roff.control("TP", []);
        roff.text(synopsis);
        let about = subcommand.get_long_about().or_else(|| subcommand.get_about()).map(ToString::to_string);
        roff.text([roman(about.unwrap_or_default())]);
        if arguments.is_empty() {
            continue;
        }
        roff.control("RS", []);
        for argument in arguments {
            roff.control("TP", []);
            roff.text(usage(argument));
            let mut help = argument.get_long_help().or_else(|| argument.get_help()).map(ToString::to_string);
            let takes_value = argument.get_num_args().is_some_and(|range| range.takes_values());
            if let Some(default) = argument.get_default_values().first().filter(|_| takes_value) {
                let default = default.to_string_lossy();
                help = Some(format!("{} (default: {default})", help.unwrap_or_default()));
            }
            roff.text([roman(help.unwrap_or_default())]);
        }
        roff.control("RE", []);
    }
}

/// How one argument is written: `--rows <ROWS>`, `--force`, `<PATH>`.
fn usage(argument: &clap::Arg) -> Vec<clap_mangen::roff::Inline> {
    let value = argument
        .get_value_names()
        .and_then(|names| names.first())
        .map(ToString::to_string)
        .unwrap_or_else(|| argument.get_id().as_str().to_uppercase());
    match argument.get_long() {
        None => vec![italic(format!("<{value}>"))],
        Some(long) if argument.get_num_args().is_some_and(|range| range.takes_values()) => {
            vec![bold(format!("--{long}")), roman(" "), italic(format!("<{value}>"))]
        }
        Some(long) => vec![bold(format!("--{long}"))],
    }
}

/// EXIT STATUS, SIGNALS, ENVIRONMENT, FILES, SEE ALSO.
fn closing_sections(roff: &mut Roff) {
    let entry = |roff: &mut Roff, term: &str, text: &str| {
        roff.control("TP", []);
        roff.text([bold(term)]);
        roff.text([roman(text)]);
    };

    roff.control("SH", ["EXIT STATUS"]);
    entry(roff, "0", "Success; for run, a clean stop on SIGTERM or SIGINT.");
    entry(roff, "1", "Failure: the database, a push target or the state directory; the message says which and why.");
    entry(
        roff,
        "2",
        "Bad configuration or usage: every problem in the file is listed with its line and key before the agent \
         refuses to start.",
    );

    roff.control("SH", ["SIGNALS"]);
    entry(
        roff,
        "SIGHUP",
        "Re-read the configuration file. A bad one is refused with its problems logged, and the agent runs on with \
         the old one. One that comes while run or demo is starting does not end it: it is taken once the agent \
         runs. Under the packaged unit (Type=notify), systemd folds a systemctl reload asked for while the agent \
         starts into that start, without a signal: reload again once it is active.",
    );
    entry(
        roff,
        "SIGTERM, SIGINT",
        "Stop: the tick in progress is ended, queued remote-write samples stay on disk for the next start, and the \
         agent exits within 10 seconds.",
    );

    roff.control("SH", ["ENVIRONMENT"]);
    entry(roff, "APIMETRICS_CONFIG", "The configuration file, as --config.");
    entry(roff, "APIMETRICS_LOG_FORMAT", "text or json, as --log-format.");
    entry(roff, "RUST_LOG", "Which log records are written, e.g. info (the default) or apimetrics_agent=debug.");
    entry(roff, "HTTP_PROXY, HTTPS_PROXY, ALL_PROXY, NO_PROXY", "The proxy for a push target that sets no proxy_url.");
    entry(
        roff,
        "NOTIFY_SOCKET",
        "Set by systemd for a unit of Type=notify: run says READY=1 there once it serves, its queues are open and \
         SIGHUP reloads, and STOPPING=1 at SIGTERM.",
    );
    entry(
        roff,
        "CREDENTIALS_DIRECTORY",
        "Set by systemd when LoadCredential= hands the service files. Without it, a *_file key naming \
         /run/credentials/UNIT/NAME, which exists only inside the service, is read from the first of \
         /etc/credstore/NAME, /run/credstore/NAME, /usr/local/lib/credstore/NAME and /usr/lib/credstore/NAME, where \
         LoadCredential=NAME takes it from; with it, from that folder.",
    );

    roff.control("SH", ["FILES"]);
    entry(
        roff,
        PACKAGED_CONFIG,
        "The configuration the Debian package installs and its systemd unit reads: set source.database to the \
         app's database. Relative paths in it are relative to its folder.",
    );
    entry(
        roff,
        PACKAGED_STATE_DIR,
        "agent.state_dir of the packaged configuration: the instance lock and the remote-write queues. The unit \
         makes it (StateDirectory=); purging the package removes it.",
    );
    entry(
        roff,
        "/usr/lib/systemd/system/apimetrics-agent.service",
        "The hardened unit. Give it read access to the app's SQLite database with a drop-in setting \
         SupplementaryGroups= (systemctl edit apimetrics-agent).",
    );
    entry(
        roff,
        "/usr/share/doc/apimetrics-agent/",
        "The README (every configuration key), the covering index for Django, alert rules for Prometheus and a \
         Grafana dashboard.",
    );

    roff.control("SH", ["SEE ALSO"]);
    roff.text([roman("systemctl(1), systemd.exec(5), prometheus(1), prometheus-pushgateway(1)")]);
}
