//! The scrape endpoint sheds what it should: a flood of idle connections on an agent whose
//! open-file limit is 1,024 (soft and hard) leaves ticks and `/metrics` working and is closed by
//! the agent; a half-sent request head and an idle keep-alive connection are closed after the
//! header timeout; a large `POST /-/reload` body is refused unread; and the open-file limit is
//! raised to the hard limit at start.

use std::cell::Cell;
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::peers::{parse_exposition, value_of};
use crate::support::*;

/// How long the agent gives a client to send a request head (`http_server`).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How late past that a closing may come on a busy two-core machine.
const MARGIN: Duration = Duration::from_secs(5);
const N_IDLE_CONNECTIONS: usize = 1_500;

#[test]
fn an_idle_flood_is_shed_while_ticks_and_metrics_go_on() {
    hold_at_least(N_IDLE_CONNECTIONS as u64 + 256);
    let site = site_with_transactions();
    let port = free_port();
    let config = site.config("500ms", &format!("[scrape]\nlisten = \"127.0.0.1:{port}\"\n"));
    let agent = start_with_open_file_limit(&config, port, 1024, 1024);
    agent.wait_for_ticks("success", 1.0);
    let failures_before = agent.ticks("failure");
    let log = agent.log();
    assert!(log.contains("open-file limit (RLIMIT_NOFILE) soft=1024 hard=1024"), "{log}");
    assert!(log.contains("scrape endpoint limits max_connections=384 open_file_limit=1024"), "{log}");

    let flood_began = Instant::now();
    let mut idle: Vec<TcpStream> = (0..N_IDLE_CONNECTIONS).map(|_| connect(port)).collect();
    let flood_opened = Instant::now();

    // While the flood stays open: a new client is answered, ticks go on, none fails, and the
    // agent keeps most of its descriptors free.
    let most_descriptors = Cell::new(0);
    let ticks = |page: &str| {
        most_descriptors.set(most_descriptors.get().max(open_descriptors(&agent)));
        let samples = parse_exposition(page);
        let count = |result| value_of(&samples, "apimetrics_agent_ticks_total", &[("result", result)]).unwrap();
        (count("success"), count("failure"))
    };
    let answered = wait_for("/metrics to answer during the flood", Duration::from_secs(30), || {
        http_get(&agent.url("/metrics")).filter(|(status, _)| *status == 200)
    });
    let answered_after = flood_opened.elapsed();
    let (successes, failures) = ticks(&answered.1);
    assert_eq!(failures, failures_before, "{}", agent.log());
    wait_for("three more ticks during the flood", Duration::from_secs(20), || {
        let (status, page) = http_get(&agent.url("/metrics"))?;
        assert_eq!(status, 200);
        let (now_successes, now_failures) = ticks(&page);
        assert_eq!(now_failures, failures_before, "a tick failed during the flood:\n{}", agent.log());
        (now_successes >= successes + 3.0).then_some(())
    });
    let most_descriptors = most_descriptors.get();
    assert!(most_descriptors <= 512, "the agent held {most_descriptors} of its 1,024 descriptors");

    // The agent closes every idle connection itself, the last ones once the header timeout passes.
    let deadline = flood_opened + HEADER_READ_TIMEOUT + MARGIN;
    for (index, connection) in idle.iter_mut().enumerate() {
        let said = wait_closed(connection, deadline).unwrap_or_else(|| {
            panic!("idle connection {index} still open {:?} after the flood", deadline - flood_opened)
        });
        assert!(said.is_empty(), "the agent wrote to an idle connection: {:?}", String::from_utf8_lossy(&said));
    }
    let shed_after = flood_opened.elapsed();
    let (_, failures_after) = ticks(&agent.metrics());
    assert_eq!(failures_after, failures_before, "{}", agent.log());
    eprintln!(
        "{N_IDLE_CONNECTIONS} idle connections opened in {:?}; /metrics answered {answered_after:?} after, every one \
         closed by the agent {shed_after:?} after; the agent held {most_descriptors} descriptors at most",
        flood_opened - flood_began
    );
    let (status, log) = agent.terminate();
    assert_eq!(status.code(), Some(0), "{log}");
}

#[test]
fn slow_and_idle_clients_are_closed_and_a_large_reload_body_is_refused() {
    let site = site_with_transactions();
    let port = free_port();
    let config = site.config("1s", &format!("[scrape]\nlisten = \"127.0.0.1:{port}\"\nenable_reload = true\n"));
    let agent = Running::start(&config, port);

    let mut half_a_head = connect(port);
    half_a_head.write_all(b"GET /metrics HTTP/1.1\r\nHost: agent\r\n").unwrap();
    let half_sent = Instant::now();

    // Keep-alive works: a second request on the connection after it sat idle for two seconds.
    let mut kept_alive = connect(port);
    assert!(exchange(&mut kept_alive, "GET /healthz HTTP/1.1\r\nHost: agent\r\n\r\n").starts_with("HTTP/1.1 "));
    std::thread::sleep(Duration::from_secs(2));
    assert!(exchange(&mut kept_alive, "GET /metrics HTTP/1.1\r\nHost: agent\r\n\r\n").starts_with("HTTP/1.1 200"));
    let last_answered = Instant::now();

    // As curl sends a large body: the head, then the body only after "100 Continue", which the
    // agent never asks for. Nothing is reloaded.
    let last_reload = || {
        let samples = parse_exposition(&agent.metrics());
        value_of(&samples, "apimetrics_agent_config_last_reload_timestamp_seconds", &[]).unwrap()
    };
    let loaded_at = last_reload();
    for (length, said) in [
        (10_000_000, "this endpoint takes request bodies of 65536 bytes at most\n"),
        (4096, "POST /-/reload takes no body (1024 bytes at most are ignored)\n"),
    ] {
        let refusal = exchange(
            &mut connect(port),
            &format!(
                "POST /-/reload HTTP/1.1\r\nHost: agent\r\nContent-Length: {length}\r\nExpect: 100-continue\r\n\r\n"
            ),
        );
        assert!(refusal.starts_with("HTTP/1.1 413 Payload Too Large\r\n"), "{refusal}");
        assert!(refusal.ends_with(said), "{refusal}");
    }
    assert_eq!(last_reload(), loaded_at);

    for (what, connection, since) in [
        ("half a request head", &mut half_a_head, half_sent),
        ("an idle keep-alive connection", &mut kept_alive, last_answered),
    ] {
        let said = wait_closed(connection, since + HEADER_READ_TIMEOUT + MARGIN)
            .unwrap_or_else(|| panic!("{what} still open {:?} on", HEADER_READ_TIMEOUT + MARGIN));
        let closed_after = since.elapsed();
        assert!(said.is_empty(), "{what} got {:?}", String::from_utf8_lossy(&said));
        assert!(closed_after >= HEADER_READ_TIMEOUT - Duration::from_secs(1), "{what} closed after {closed_after:?}");
    }
    assert_eq!(http_get(&agent.url("/healthz")).map(|(status, _)| status), Some(200));
    let (status, log) = agent.terminate();
    assert_eq!(status.code(), Some(0), "{log}");
}

#[test]
fn the_open_file_limit_is_raised_to_the_hard_limit_at_start() {
    let site = site_with_transactions();
    let port = free_port();
    let config = site.config("1s", &format!("[scrape]\nlisten = \"127.0.0.1:{port}\"\n"));
    let agent = start_with_open_file_limit(&config, port, 512, 2048);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", agent.child.id())).unwrap();
    let open_files = limits.lines().find(|line| line.starts_with("Max open files")).unwrap();
    assert_eq!(open_files.split_whitespace().collect::<Vec<_>>(), ["Max", "open", "files", "2048", "2048", "files"]);
    let log = agent.log();
    assert!(
        log.contains("raised the open-file limit (RLIMIT_NOFILE) to the hard limit soft=2048 hard=2048 was=512"),
        "{log}"
    );
    // Half of what 256 reserved descriptors leave.
    assert!(log.contains("scrape endpoint limits max_connections=896 open_file_limit=2048"), "{log}");
}

/// Starts `run` with the open-file limits `soft` and `hard`, as a service manager would set them.
fn start_with_open_file_limit(config: &Path, port: u16, soft: u64, hard: u64) -> Running {
    hold_at_least(hard);
    let log = config.with_extension("log");
    let mut command = agent(config);
    command.arg("run").stdin(Stdio::null()).stdout(Stdio::null()).stderr(File::create(&log).unwrap());
    let limit = libc::rlimit { rlim_cur: soft, rlim_max: hard };
    // SAFETY: between fork and exec the child only calls setrlimit, which is async-signal-safe,
    // on a value copied into the closure.
    unsafe {
        command.pre_exec(move || {
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Running::adopt(command.spawn().unwrap(), port, log)
}

/// Makes this process's soft open-file limit at least `n_files`, raising the hard one too when it
/// may (as root); the agents it starts may then be given as much.
fn hold_at_least(n_files: u64) {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read or write the struct they are given.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        if limit.rlim_cur >= n_files {
            return;
        }
        let wanted = libc::rlimit { rlim_cur: n_files, rlim_max: limit.rlim_max.max(n_files) };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) != 0 {
            let soft_to_hard = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &soft_to_hard), 0);
            assert!(
                limit.rlim_max >= n_files,
                "this test needs {n_files} open files, and the hard limit is {} (raise it: ulimit -Hn)",
                limit.rlim_max
            );
        }
    }
}

fn connect(port: u16) -> TcpStream {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(10)).unwrap()
}

/// How many descriptors the agent holds now.
fn open_descriptors(agent: &Running) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", agent.child.id())).unwrap().count()
}

/// Sends `request` and reads one answer.
fn exchange(connection: &mut TcpStream, request: &str) -> String {
    connection.write_all(request.as_bytes()).unwrap();
    read_answer(connection)
}

/// Reads one answer, whose body has a Content-Length; returns it whole.
fn read_answer(connection: &mut TcpStream) -> String {
    connection.set_read_timeout(Some(MARGIN)).unwrap();
    let mut answer = Vec::new();
    let mut buffer = [0; 4096];
    loop {
        let n_read = connection.read(&mut buffer).unwrap();
        assert!(n_read > 0, "closed after {:?}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&buffer[..n_read]);
        let text = String::from_utf8_lossy(&answer).into_owned();
        let Some((head, body)) = text.split_once("\r\n\r\n") else { continue };
        let length =
            head.lines().find_map(|line| line.to_ascii_lowercase().strip_prefix("content-length: ")?.parse().ok());
        if body.len() >= length.expect("a Content-Length") {
            return text;
        }
    }
}

/// Reads until the agent closes the connection or `deadline` passes; returns what it sent
/// before closing, or `None` if it was still open at the deadline.
fn wait_closed(connection: &mut TcpStream, deadline: Instant) -> Option<Vec<u8>> {
    let mut said = Vec::new();
    let mut buffer = [0; 4096];
    loop {
        let left = deadline.checked_duration_since(Instant::now()).filter(|left| !left.is_zero())?;
        connection.set_read_timeout(Some(left)).unwrap();
        match connection.read(&mut buffer) {
            Ok(0) => return Some(said),
            Ok(n_read) => said.extend_from_slice(&buffer[..n_read]),
            Err(error) if error.kind() == ErrorKind::ConnectionReset => return Some(said),
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return None,
            Err(error) => panic!("reading: {error}"),
        }
    }
}
