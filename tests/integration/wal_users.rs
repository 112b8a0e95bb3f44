//! The agent and the app as two users, as the README and the systemd unit run them: the app's
//! user owns a WAL-mode database with no connection open, the agent reads it through the app's
//! group, and afterwards the app still writes. With no connection open, SQLite's read-only
//! reader creates `-wal` and `-shm` and leaves them when it closes; a side file the app's user
//! cannot write takes the app down ("unable to open database file").

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::support::*;

const APP_USER: &str = "apimetrics-test-app";
const AGENT_USER: &str = "apimetrics-test-agent";
/// The system's Python, which every user may run (a pyenv under /root is root's alone).
const PYTHON: &str = "/usr/bin/python3";

/// A user's ids.
#[derive(Debug, Clone, Copy)]
struct User {
    uid: u32,
    /// Its primary group, of its own name.
    gid: u32,
}

/// `name` as a system user with a group of its own, created if missing. Test processes run in
/// parallel and `useradd` fails while another holds the password file's lock, so creation is
/// serialized by a lock file shared by every checkout on the machine.
fn system_user(name: &str) -> User {
    let lock = std::fs::File::create("/tmp/apimetrics-test-users.lock").unwrap();
    lock.lock().unwrap();
    if !Command::new("id").arg(name).stdout(Stdio::null()).stderr(Stdio::null()).status().unwrap().success() {
        let created = Command::new("useradd")
            .args(["--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin", name])
            .output()
            .unwrap();
        assert!(created.status.success(), "useradd {name}: {}", stderr(&created));
    }
    let id = |flag: &str| -> u32 {
        let output = Command::new("id").arg(flag).arg(name).output().unwrap();
        assert!(output.status.success(), "id {flag} {name}: {}", stderr(&output));
        stdout(&output).trim().parse().unwrap()
    };
    User { uid: id("-u"), gid: id("-g") }
}

/// `program` run as `user` with exactly the supplementary `groups` and `umask`, as a service
/// manager would start it.
fn as_user(user: User, groups: &[u32], umask: &str, program: &str) -> Command {
    let mut command = Command::new("setpriv");
    command.arg(format!("--reuid={}", user.uid)).arg(format!("--regid={}", user.gid));
    if groups.is_empty() {
        command.arg("--clear-groups");
    } else {
        let groups: Vec<String> = groups.iter().map(u32::to_string).collect();
        command.arg(format!("--groups={}", groups.join(",")));
    }
    command.args(["--", "sh", "-c", &format!("umask {umask} && exec \"$0\" \"$@\""), program]);
    command.stdin(Stdio::null());
    command
}

/// `once --dry-run` as `agent` on `config`.
fn agent_once(agent: User, groups: &[u32], umask: &str, config: &Path) -> Output {
    as_user(agent, groups, umask, env!("CARGO_BIN_EXE_apimetrics-agent"))
        .arg("--config")
        .arg(config)
        .args(["once", "--dry-run"])
        .env_remove("APIMETRICS_CONFIG")
        .env("RUST_LOG", "info")
        .output()
        .unwrap()
}

/// The app as Django writes: one connection, 20 transactions of one row each, committed one by
/// one, modified `time_modified`; then the connection closes.
fn app_writes_twenty_rows(app: User, database: &Path, time_modified: &str) -> Output {
    let script = "import sqlite3, sys\n\
                  connection = sqlite3.connect(sys.argv[1], timeout=5, isolation_level=None)\n\
                  for _ in range(20):\n\
                  \x20   connection.execute('BEGIN')\n\
                  \x20   connection.execute(\"INSERT INTO apiMetrics_transaction (amount, time_created, time_modified, \
                  api_id, status_id) VALUES (10.5, ?1, ?1, 1, 1)\", (sys.argv[2],))\n\
                  \x20   connection.execute('COMMIT')\n\
                  connection.close()\n";
    as_user(app, &[], "022", PYTHON).args(["-c", script]).arg(database).arg(time_modified).output().unwrap()
}

/// A site in its own folder under /tmp (which every user may traverse), owned by the app's user:
/// the folder `folder_group`:`folder_mode`, the database and config the app's `database_mode`;
/// one API and status with 3 transactions in the window, in WAL mode with no side file present.
fn app_site(app: User, folder_group: u32, folder_mode: u32, database_mode: u32) -> (Site, PathBuf) {
    let site = Site { directory: tempfile::Builder::new().prefix("apimetrics-wal-users-").tempdir_in("/tmp").unwrap() };
    site.connect().execute_batch(SCHEMA).unwrap();
    let api = site.add_api("Mpesa Express");
    let status = site.add_status("Pending");
    site.add_transactions(3, api, status, &hours_ago(1.0));
    site.connect().pragma_update(None, "journal_mode", "wal").unwrap();
    assert_eq!(side_files(&site), Vec::<String>::new(), "the last close deletes -wal and -shm");
    let config = site.config("1m", "");
    for (path, group, mode) in [
        (site.directory.path(), folder_group, folder_mode),
        (&site.database(), app.gid, database_mode),
        (&config, app.gid, 0o640),
    ] {
        std::os::unix::fs::chown(path, Some(app.uid), Some(group)).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    (site, config)
}

/// The names in the site's folder other than the database and the config.
fn side_files(site: &Site) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(site.directory.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name != "app.sqlite3" && name != "config.toml")
        .collect();
    names.sort();
    names
}

/// The agent, its user in the app's group with `umask`, reads the database; then the app writes
/// 20 transactions and the agent sees them.
fn agent_then_app_writes(umask: &str) {
    let app = system_user(APP_USER);
    let agent = system_user(AGENT_USER);
    let (site, config) = app_site(app, app.gid, 0o770, 0o640);

    let output = agent_once(agent, &[app.gid], umask, &config);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("api_transactions{api=\"Mpesa Express\",status=\"Pending\"} 3\n"),
        "{}",
        stdout(&output)
    );

    let written = app_writes_twenty_rows(app, &site.database(), &hours_ago(0.5));
    assert_eq!(written.status.code(), Some(0), "the app's writes failed after the agent read:\n{}", stderr(&written));
    assert_eq!(side_files(&site), Vec::<String>::new(), "the app's last close deletes -wal and -shm");
    let output = agent_once(agent, &[app.gid], umask, &config);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("api_transactions{api=\"Mpesa Express\",status=\"Pending\"} 23\n"),
        "{}",
        stdout(&output)
    );

    // What the agent left: the two side files, the agent's, in the app's group, with the
    // database's mode and the group given the owner's bits (rw-r----- → rw-rw----).
    assert_eq!(side_files(&site), ["app.sqlite3-shm", "app.sqlite3-wal"]);
    for name in ["app.sqlite3-shm", "app.sqlite3-wal"] {
        let metadata = std::fs::metadata(site.directory.path().join(name)).unwrap();
        let found = (metadata.uid(), metadata.gid(), metadata.mode() & 0o7777);
        assert_eq!(found, (agent.uid, app.gid, 0o660), "{name}: (uid, gid, mode)");
    }
    // The one zero byte it was made with: SQLite leaves a non-empty file's mode alone.
    assert_eq!(std::fs::read(site.directory.path().join("app.sqlite3-wal")).unwrap(), [0]);
    let written = app_writes_twenty_rows(app, &site.database(), &hours_ago(0.5));
    assert_eq!(written.status.code(), Some(0), "{}", stderr(&written));
    let n_rows: i64 =
        site.connect().query_row("SELECT count(*) FROM apiMetrics_transaction", [], |row| row.get(0)).unwrap();
    assert_eq!(n_rows, 43);
}

#[test]
fn wal_database_stays_writable_for_the_app_after_the_agent_reads_it_with_umask_022() {
    agent_then_app_writes("022");
}

#[test]
fn wal_database_stays_writable_for_the_app_after_the_agent_reads_it_with_umask_077() {
    agent_then_app_writes("077");
}

/// A folder the agent may write through its own group, and a database of a group it is not in:
/// any side file it made would be out of the app's reach, so it makes none and says why.
#[test]
fn wal_database_of_a_group_the_agent_is_not_in_is_refused_and_left_alone() {
    let app = system_user(APP_USER);
    let agent = system_user(AGENT_USER);
    let (site, config) = app_site(app, agent.gid, 0o770, 0o644);
    std::os::unix::fs::chown(&config, Some(app.uid), Some(agent.gid)).unwrap();

    let output = agent_once(agent, &[], "022", &config);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert!(message.contains(&format!("is not in the database's group ({APP_USER})")), "{message}");
    assert!(message.contains("SupplementaryGroups="), "{message}");
    assert_eq!(side_files(&site), Vec::<String>::new());

    let written = app_writes_twenty_rows(app, &site.database(), &hours_ago(0.5));
    assert_eq!(written.status.code(), Some(0), "{}", stderr(&written));
}

/// As the app's own user the agent leaves the side files to SQLite, which makes them the app's.
#[test]
fn wal_database_read_by_the_apps_own_user_gets_side_files_of_the_app() {
    let app = system_user(APP_USER);
    let (site, config) = app_site(app, app.gid, 0o770, 0o640);

    let output = agent_once(app, &[], "077", &config);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(side_files(&site), ["app.sqlite3-shm", "app.sqlite3-wal"]);
    for name in ["app.sqlite3-shm", "app.sqlite3-wal"] {
        let metadata = std::fs::metadata(site.directory.path().join(name)).unwrap();
        let found = (metadata.uid(), metadata.gid(), metadata.mode() & 0o7777);
        assert_eq!(found, (app.uid, app.gid, 0o640), "{name}: (uid, gid, mode)");
    }
    let written = app_writes_twenty_rows(app, &site.database(), &hours_ago(0.5));
    assert_eq!(written.status.code(), Some(0), "{}", stderr(&written));
    assert_eq!(side_files(&site), Vec::<String>::new(), "the app's last close deletes -wal and -shm");
}
