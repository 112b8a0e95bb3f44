//! `check` tries what `run` needs: the database, `agent.state_dir` where remote-write queues
//! live, and with `--targets` every push target, against Debian's Pushgateway and Prometheus up
//! and down.

use std::os::unix::fs::PermissionsExt;

use crate::peers::{prometheus_receiver, pushgateway};
use crate::support::*;

fn remote_write_to(port: u16) -> String {
    format!("[[remote_write]]\nname = \"central\"\nurl = \"http://127.0.0.1:{port}/api/v1/write\"\ntimeout = \"2s\"\n")
}

#[test]
fn check_refuses_a_state_dir_that_cannot_be_written() {
    let site = site_with_transactions();
    // A path under a file, which no user can create.
    let config = site.config("15s", &format!("[agent]\nstate_dir = \"app.sqlite3/state\"\n{}", remote_write_to(9)));
    let output = run_agent(&config, &["check"]);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert!(
        message.contains("agent.state_dir ") && message.contains("app.sqlite3/state: cannot be written"),
        "{message}"
    );
    assert!(message.contains("is not a directory"), "{message}");
    assert!(stdout(&output).contains("opened read-only"), "the database was still checked: {}", stdout(&output));

    // A folder the agent's user may not write: root's, 0755, with the agent as nobody.
    let folder = site.directory.path().join("root-only");
    std::fs::create_dir(&folder).unwrap();
    std::fs::set_permissions(site.directory.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(site.database(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let config = site.config("15s", &format!("[agent]\nstate_dir = \"root-only/state\"\n{}", remote_write_to(9)));
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let output = run_agent_as_nobody(&config, &["check"]);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert!(
        message.contains("root-only/state: cannot be written") && message.contains("Permission denied"),
        "{message}"
    );
    assert!(!folder.join("state").exists(), "check created nothing");
    // `run` says the same, with the same remedy, before it starts anything.
    let output = run_agent_as_nobody(&config, &["run"]);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert!(message.contains("error: cannot create agent.state_dir "), "{message}");
    assert!(message.contains("root-only/state (Permission denied"), "{message}");
    assert!(
        message.contains("create it writable to the agent's user, or point agent.state_dir elsewhere"),
        "{message}"
    );

    // Without remote-write targets too: the agent's lock lives there.
    let config = site.config("15s", "[agent]\nstate_dir = \"app.sqlite3/state\"\n");
    let output = run_agent(&config, &["check"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
}

#[test]
fn one_agent_per_state_dir_and_a_killed_one_leaves_nothing_to_clean_up() {
    let site = site_with_transactions();
    let port = free_port();
    let config = site.config("15s", &format!("[scrape]\nlisten = \"127.0.0.1:{port}\"\n{}", remote_write_to(9)));
    let mut first = Running::start(&config, port);
    let pid = first.child.id();
    let state_dir = site.directory.path().join("state");

    // A second `run` on the same state_dir (another scrape port) is refused, naming both.
    let other_port = free_port();
    let second = site.write_config(
        "second.toml",
        &std::fs::read_to_string(&config).unwrap().replace(&port.to_string(), &other_port.to_string()),
    );
    for command in [&["run"][..], &["once"]] {
        let output = run_agent(&second, command);
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{command:?}: {message}");
        let expected = format!("another agent (pid {pid}) is running on agent.state_dir {}", state_dir.display());
        assert!(message.contains(&expected), "{command:?}: {message}");
    }
    // `once --dry-run` sends nothing and queues nothing: it may run beside.
    assert_eq!(run_agent(&second, &["once", "--dry-run"]).status.code(), Some(0));
    // `check` does not take the lock, and says who holds it.
    let output = run_agent(&second, &["check"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(stdout(&output).contains(&format!("in use by a running agent (pid {pid})")), "{}", stdout(&output));

    // Killed without a word, the first leaves the lock to the next agent.
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    drop(first);
    let next = Running::start(&second, other_port);
    let (status, log) = next.terminate();
    assert_eq!(status.code(), Some(0), "{log}");
}

#[test]
fn a_state_dir_or_lock_file_that_is_something_else_is_refused_by_name() {
    let site = site_with_transactions();
    let once_on = |state_dir: &str| {
        let config = site.config("15s", &format!("[agent]\nstate_dir = \"{state_dir}\"\n{}", remote_write_to(9)));
        let output = run_agent(&config, &["once"]);
        assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
        stderr(&output)
    };

    // A named pipe where the folder should be: said so, not "File exists".
    mkfifo(&site.directory.path().join("pipe"));
    let message = once_on("pipe");
    assert!(
        message.contains("agent.state_dir ") && message.contains("pipe is a named pipe (FIFO), not a folder"),
        "{message}"
    );

    // A link that points nowhere where the folder should be.
    std::os::unix::fs::symlink(site.directory.path().join("nowhere"), site.directory.path().join("dangling")).unwrap();
    let message = once_on("dangling");
    assert!(message.contains("dangling is a symbolic link that points nowhere"), "{message}");

    // The lock file a symbolic link to a file the agent may write: not followed, the file untouched.
    let state_dir = site.directory.path().join("linked");
    std::fs::create_dir(&state_dir).unwrap();
    let target = site.directory.path().join("precious.txt");
    std::fs::write(&target, "keep me\n").unwrap();
    std::os::unix::fs::symlink(&target, state_dir.join("agent.lock")).unwrap();
    let message = once_on("linked");
    assert!(message.contains("linked/agent.lock is a symbolic link"), "{message}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me\n");

    // A named pipe and a folder in its place: named, and the agent does not hang on the pipe.
    let state_dir = site.directory.path().join("piped");
    std::fs::create_dir(&state_dir).unwrap();
    mkfifo(&state_dir.join("agent.lock"));
    let message = once_on("piped");
    assert!(message.contains("piped/agent.lock is a named pipe (FIFO), not the agent's lock file"), "{message}");
    let state_dir = site.directory.path().join("foldered");
    std::fs::create_dir_all(state_dir.join("agent.lock")).unwrap();
    let message = once_on("foldered");
    assert!(message.contains("foldered/agent.lock is a directory, not the agent's lock file"), "{message}");
}

#[test]
fn check_targets_asks_every_target_and_says_how_each_answered() {
    let site = site_with_transactions();
    let gateway = pushgateway(None);
    let receiver_port = free_port();
    let receiver = prometheus_receiver(site.directory.path(), receiver_port);
    let config = site.config(
        "15s",
        &format!(
            "[[pushgateway]]\nurl = \"http://127.0.0.1:{}\"\ntimeout = \"2s\"\n{}",
            gateway.port,
            remote_write_to(receiver_port)
        ),
    );
    let output = run_agent(&config, &["check", "--targets"]);
    let (out, err) = (stdout(&output), stderr(&output));
    assert_eq!(output.status.code(), Some(0), "{out}\n{err}");
    let gateway_line = out.lines().find(|line| line.starts_with("pushgateway[0] ")).unwrap_or_else(|| panic!("{out}"));
    assert!(gateway_line.contains(": ready in ") && gateway_line.ends_with(" ms"), "{gateway_line}");
    let receiver_line =
        out.lines().find(|line| line.starts_with("remote_write[0] central")).unwrap_or_else(|| panic!("{out}"));
    assert!(receiver_line.contains("accepted an empty write request in "), "{receiver_line}");
    // Nothing was stored by the probe: the receiver has no series.
    let (_, series) = http_get(&format!(
        "http://127.0.0.1:{receiver_port}/api/v1/series?match[]={{__name__=~\".+\",job!=\"prometheus\"}}"
    ))
    .unwrap();
    assert!(series.contains("\"data\":[]"), "{series}");
    // Without --targets, nothing is asked.
    assert!(!stdout(&run_agent(&config, &["check"])).contains("pushgateway[0]"));

    // Both down: check fails, naming each target and what went wrong.
    gateway.stop();
    receiver.stop();
    let output = run_agent(&config, &["check", "--targets"]);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(
        err.lines().any(|line| line.starts_with("error: pushgateway[0] ") && line.contains("cannot connect")),
        "{err}"
    );
    assert!(
        err.lines().any(|line| line.starts_with("error: remote_write[0] central") && line.contains("cannot connect")),
        "{err}"
    );
    assert!(stdout(&output).contains("opened read-only"), "the database was still checked");
}

/// Runs `check` on `config`, failing the test if it has not finished within ten seconds.
fn check_within_seconds(config: &std::path::Path) -> std::process::Output {
    let mut child = agent(config)
        .arg("check")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let finished = wait_for("check to finish", std::time::Duration::from_secs(10), || child.try_wait().unwrap());
    assert!(finished.code().is_some());
    child.wait_with_output().unwrap()
}

fn mkfifo(path: &std::path::Path) {
    let name = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0, "mkfifo {}", path.display());
}

#[test]
fn a_named_pipe_where_the_config_names_a_file_is_refused_never_waited_on() {
    let site = site_with_transactions();
    let fifo_config = site.directory.path().join("fifo.toml");
    mkfifo(&fifo_config);
    let output = check_within_seconds(&fifo_config);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("cannot read it: it is a named pipe (FIFO), not a regular file"),
        "{}",
        stderr(&output)
    );

    mkfifo(&site.directory.path().join("password"));
    mkfifo(&site.directory.path().join("ca.pem"));
    let config = site.config(
        "15s",
        "[[remote_write]]\nname = \"central\"\nurl = \"https://127.0.0.1:9/api/v1/write\"\n\
         basic_auth = { username = \"site\", password_file = \"password\" }\ntls = { ca_file = \"ca.pem\" }\n",
    );
    let output = check_within_seconds(&config);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{message}");
    assert!(message.contains("password: it is a named pipe (FIFO), not a regular file"), "{message}");
    assert!(message.contains("ca.pem: it is a named pipe (FIFO), not a regular file"), "{message}");
}

#[test]
fn check_targets_gives_up_on_a_target_that_never_answers() {
    use crate::peers::{FakeServer, Reply};
    let site = site_with_transactions();
    let hanging = FakeServer::start(vec![Reply::status(200).after(std::time::Duration::from_secs(3600))]);
    let config = site.config("15s", &format!("[[pushgateway]]\nurl = \"{}\"\ntimeout = \"10min\"\n", hanging.url()));
    let asked = std::time::Instant::now();
    let output = run_agent(&config, &["check", "--targets"]);
    let took = asked.elapsed();
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert!(message.contains(": no answer within 10s"), "{message}");
    assert!(took < std::time::Duration::from_secs(15), "check took {took:?}");
}

#[test]
fn a_queue_file_the_agent_may_not_write_stops_the_start() {
    use std::os::unix::fs::PermissionsExt;
    let site = site_with_transactions();
    let queues = site.directory.path().join("state/remote_write");
    std::fs::create_dir_all(&queues).unwrap();
    // A queue root made (a restore run as root), with a batch waiting.
    let queue = apimetrics_agent::remote_write::queue::Queue::open(&queues.join("central.sqlite3")).unwrap();
    queue.push(1, &[], 10, None).unwrap();
    drop(queue);
    std::fs::set_permissions(queues.join("central.sqlite3"), std::fs::Permissions::from_mode(0o644)).unwrap();
    for folder in [site.directory.path().to_owned(), site.directory.path().join("state"), queues.clone()] {
        std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    std::fs::set_permissions(site.database(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let config = site.config("15s", &remote_write_to(9));
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let output = run_agent_as_nobody(&config, &["once"]);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert!(message.contains("central.sqlite3 cannot be written by this user"), "{message}");
    assert!(!message.contains("corrupt"), "a file it may not write is not damaged: {message}");
}
