//! Every state the database's path can be in gets an answer that names the path, what is wrong
//! and what to do; the tick fails, the next one tries again, and nothing hangs or is written.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use crate::support::*;

const DEADLINE: Duration = Duration::from_secs(20);

/// Waits until `/healthz` answers 503 with a reason containing `expected`; returns the reason.
fn unhealthy_with(agent: &Running, expected: &str) -> String {
    wait_for(&format!("/healthz to say {expected:?}"), DEADLINE, || {
        let (status, body) = http_get(&agent.url("/healthz"))?;
        (status == 503 && body.contains(expected)).then_some(body)
    })
}

#[test]
fn a_path_that_is_no_database_file_fails_each_tick_until_the_file_is_back() {
    let site = site_with_transactions();
    let port = free_port();
    let config = site.config("200ms", &format!("[scrape]\nlisten = \"127.0.0.1:{port}\"\n"));
    let agent = Running::start(&config, port);
    agent.wait_for_ticks("success", 1.0);
    let database = site.database();
    let kept = site.directory.path().join("kept.sqlite3");
    std::fs::rename(&database, &kept).unwrap();

    // A named pipe would block an open for ever: it must be refused before anything opens it.
    assert!(Command::new("mkfifo").arg(&database).status().unwrap().success());
    let reason = unhealthy_with(&agent, "is a named pipe (FIFO), not a SQLite database file");
    assert!(reason.contains(&database.display().to_string()), "{reason}");
    let failed = agent.ticks("failure");
    agent.wait_for_ticks("failure", failed + 2.0);
    std::fs::remove_file(&database).unwrap();

    let socket = std::os::unix::net::UnixListener::bind(&database).unwrap();
    unhealthy_with(&agent, "is a socket, not a SQLite database file");
    drop(socket);
    std::fs::remove_file(&database).unwrap();

    std::os::unix::fs::symlink("/dev/null", &database).unwrap();
    unhealthy_with(&agent, "is a device, not a SQLite database file");
    std::fs::remove_file(&database).unwrap();

    std::fs::create_dir(&database).unwrap();
    unhealthy_with(&agent, "is a directory, not a SQLite database file");
    std::fs::remove_dir(&database).unwrap();

    unhealthy_with(&agent, "there is no file at");

    // A restore puts a file back: the next tick reads it.
    std::fs::rename(&kept, &database).unwrap();
    wait_for("healthy again", DEADLINE, || (http_get(&agent.url("/healthz"))?.0 == 200).then_some(()));
    let metrics = agent.metrics();
    assert_eq!(sample(&metrics, "api_transactions{api=\"Mpesa Express\",status=\"Pending\"}"), Some(3.0));
    assert!(!site.directory.path().join("app.sqlite3-journal").exists(), "nothing was written beside it");
    let (status, log) = agent.terminate();
    assert_eq!(status.code(), Some(0), "{log}");
}

#[test]
fn check_names_what_stands_at_the_path() {
    let site = Site::new();
    let directory = site.directory.path().join("data");
    std::fs::create_dir(&directory).unwrap();
    let config = site.write_config("config.toml", "[source]\ndatabase = \"data\"\n[schedule]\ninterval = \"1s\"\n");
    assert_config_refused(&config, &["line 2: source.database:", "data is a directory, not a SQLite database file"]);

    let pipe = site.directory.path().join("pipe.sqlite3");
    assert!(Command::new("mkfifo").arg(&pipe).status().unwrap().success());
    let config =
        site.write_config("config.toml", "[source]\ndatabase = \"pipe.sqlite3\"\n[schedule]\ninterval = \"1s\"\n");
    assert_config_refused(&config, &["pipe.sqlite3 is a named pipe (FIFO), not a SQLite database file"]);
}

#[test]
fn a_database_this_user_may_not_read_says_so() {
    let site = site_with_transactions();
    let config = site.config("1s", "");
    std::fs::set_permissions(site.directory.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(site.database(), std::fs::Permissions::from_mode(0o600)).unwrap();
    let output = run_agent_as_nobody(&config, &["check"]);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{message}");
    assert!(message.contains("this user may not read"), "{message}");
    assert!(message.contains("app.sqlite3"), "{message}");
    assert!(message.contains("SupplementaryGroups="), "{message}");
}

#[test]
fn a_database_behind_a_folder_this_user_may_not_enter_says_so() {
    let site = site_with_transactions();
    let closed = site.directory.path().join("closed");
    std::fs::create_dir(&closed).unwrap();
    std::fs::rename(site.database(), closed.join("app.sqlite3")).unwrap();
    let config = site
        .write_config("config.toml", "[source]\ndatabase = \"closed/app.sqlite3\"\n[schedule]\ninterval = \"1s\"\n");
    for (path, mode) in [(site.directory.path(), 0o755), (closed.as_path(), 0o700), (config.as_path(), 0o644)] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let output = run_agent_as_nobody(&config, &["check"]);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{message}");
    assert!(message.contains("source.database: this user may not reach"), "{message}");
    assert!(message.contains("closed/app.sqlite3 (Permission denied"), "{message}");
    assert!(message.contains("a folder on the way is closed to it"), "{message}");
    assert!(!message.contains("no such file"), "{message}");
}

#[test]
fn a_database_the_packaged_unit_cannot_see_is_warned_about() {
    let site = site_with_transactions();
    let private = tempfile::tempdir_in("/var/tmp").unwrap();
    let database = private.path().join("app.sqlite3");
    std::fs::copy(site.database(), &database).unwrap();
    let config = site.write_config(
        "config.toml",
        &format!(
            "[agent]\nstate_dir = {:?}\n[source]\ndatabase = {:?}\n[schedule]\ninterval = \"1s\"\n",
            private.path().join("state").display().to_string(),
            database.display().to_string()
        ),
    );
    let output = run_agent(&config, &["check"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let report = stdout(&output);
    let expected = format!(
        "warning: the packaged systemd unit gives the agent empty /tmp and /var/tmp folders of its own \
         (PrivateTmp=, which DynamicUser=yes keeps on), so `run` under it will not find {}: move it out of /tmp \
         and /var/tmp",
        database.display()
    );
    assert!(report.contains(&expected), "{report}");
    let expected = format!(
        "warning: agent.state_dir {}: the packaged systemd unit gives the agent empty /tmp and /var/tmp folders \
         of its own (PrivateTmp=, which DynamicUser=yes keeps on), so under it the agent's lock and queues would \
         not last past a restart or could not be written: point agent.state_dir at /var/lib/apimetrics-agent",
        private.path().join("state").display()
    );
    assert!(report.contains(&expected), "{report}");

    std::fs::remove_file(&database).unwrap();
    assert_config_refused(&config, &["source.database: no such file", "(PrivateTmp=, which DynamicUser=yes keeps on)"]);
}

#[test]
fn a_hot_journal_left_by_a_crashed_writer_is_explained_and_left_alone() {
    let site = site_with_transactions();
    let crashed = site.directory.path().join("crashed");
    std::fs::create_dir(&crashed).unwrap();
    {
        // A writer stopped mid-write: its pages spilled to the file, the journal holds the old ones.
        let writer = site.connect();
        writer.execute_batch("PRAGMA cache_size = 1").unwrap();
        writer.execute_batch("BEGIN").unwrap();
        for _ in 0..2000 {
            writer
                .execute(
                    "INSERT INTO apiMetrics_transaction (amount, time_created, time_modified, api_id, status_id) \
                     VALUES (1, '2020-01-01 00:00:00', '2020-01-01 00:00:00', 1, 1)",
                    [],
                )
                .unwrap();
        }
        let journal = site.directory.path().join("app.sqlite3-journal");
        assert!(journal.exists(), "the writer has a journal");
        std::fs::copy(site.database(), crashed.join("app.sqlite3")).unwrap();
        std::fs::copy(&journal, crashed.join("app.sqlite3-journal")).unwrap();
        writer.execute_batch("ROLLBACK").unwrap();
    }
    let config = crashed.join("config.toml");
    std::fs::write(&config, "[source]\ndatabase = \"app.sqlite3\"\n[schedule]\ninterval = \"1s\"\n").unwrap();
    let journal_before = std::fs::read(crashed.join("app.sqlite3-journal")).unwrap();
    let output = run_agent(&config, &["once", "--dry-run"]);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert!(message.contains("has a hot journal"), "{message}");
    assert!(message.contains("the app's next connection repairs it"), "{message}");
    assert_eq!(std::fs::read(crashed.join("app.sqlite3-journal")).unwrap(), journal_before, "left alone");

    // The app's next connection rolls it back; then the agent reads on.
    rusqlite::Connection::open(crashed.join("app.sqlite3"))
        .unwrap()
        .query_row("SELECT count(*) FROM apiMetrics_api", [], |row| row.get::<_, i64>(0))
        .unwrap();
    let output = run_agent(&config, &["once", "--dry-run"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(stdout(&output).contains("api_transactions{api=\"Mpesa Express\",status=\"Pending\"} 3"));
}
