//! The other side of a push: Debian's Pushgateway and tinyproxy started on free loopback ports,
//! and a hand-made HTTP server for what a real peer cannot do on demand (fail, then succeed;
//! answer 429; hang).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::{free_port, wait_for};

/// A process killed when dropped.
pub(crate) struct Peer {
    child: Child,
    pub(crate) port: u16,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Peer {
    pub(crate) fn stop(self) {}
}

fn wait_until_listening(port: u16, what: &str, child: &mut Child) {
    wait_for(what, Duration::from_secs(20), || {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("{what} exited with {status} before listening");
        }
        TcpStream::connect(("127.0.0.1", port)).ok()
    });
}

/// Debian's prometheus-pushgateway (tests/run installs it), optionally with a `--web.config.file`.
pub(crate) fn pushgateway(web_config: Option<&Path>) -> Peer {
    let port = free_port();
    let mut command = Command::new("prometheus-pushgateway");
    // Debian's build persists to one file under /var/lib by default; each test's gateway keeps
    // its groups in memory instead, so no test sees another's.
    command
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--persistence.file=")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(web_config) = web_config {
        command.arg(format!("--web.config.file={}", web_config.display()));
    }
    let mut child = command.spawn().expect("prometheus-pushgateway (Debian package; tests/run installs it)");
    wait_until_listening(port, "the Pushgateway", &mut child);
    Peer { child, port }
}

/// Debian's prometheus as a remote-write receiver, storing under `directory`.
pub(crate) fn prometheus_receiver(directory: &Path, port: u16) -> Peer {
    let config = directory.join("prometheus.yml");
    std::fs::write(&config, "global:\n  scrape_interval: 1h\n").unwrap();
    let mut child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", directory.join("tsdb").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--web.enable-remote-write-receiver")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus (Debian package; tests/run installs it)");
    wait_until_listening(port, "Prometheus", &mut child);
    wait_for("Prometheus to be ready", Duration::from_secs(30), || {
        let (status, _) = crate::support::http_get(&format!("http://127.0.0.1:{port}/-/ready"))?;
        (status == 200).then_some(())
    });
    Peer { child, port }
}

/// Debian's victoria-metrics, storing under `directory`, answering queries without delay.
pub(crate) fn victoria_metrics(directory: &Path) -> Peer {
    let port = free_port();
    let mut child = Command::new("victoria-metrics")
        .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
        .arg(format!("-storageDataPath={}", directory.join("victoria").display()))
        .arg("-search.latencyOffset=0s")
        .arg("-search.disableCache")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("victoria-metrics (Debian package; tests/run installs it)");
    wait_until_listening(port, "VictoriaMetrics", &mut child);
    Peer { child, port }
}

/// Debian's tinyproxy in the foreground, logging every request to `log`.
pub(crate) fn tinyproxy(directory: &Path) -> (Peer, std::path::PathBuf) {
    tinyproxy_with(directory, "")
}

/// Debian's tinyproxy that lets through only requests with `user` and `password` (its `BasicAuth`).
pub(crate) fn tinyproxy_with_basic_auth(directory: &Path, user: &str, password: &str) -> Peer {
    tinyproxy_with(directory, &format!("BasicAuth {user} {password}\n")).0
}

fn tinyproxy_with(directory: &Path, extra: &str) -> (Peer, std::path::PathBuf) {
    let port = free_port();
    let log = directory.join("tinyproxy.log");
    let config = directory.join("tinyproxy.conf");
    std::fs::write(
        &config,
        format!(
            "Port {port}\nListen 127.0.0.1\nTimeout 30\nAllow 127.0.0.1\nLogFile \"{}\"\nLogLevel Connect\nMaxClients 20\n{extra}",
            log.display()
        ),
    )
    .unwrap();
    let mut child = Command::new("tinyproxy")
        .args(["-d", "-c"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("tinyproxy (Debian package; tests/run installs it)");
    wait_until_listening(port, "tinyproxy", &mut child);
    (Peer { child, port }, log)
}

/// Debian's vmauth in front of `upstream_port`, letting in `user` with `password` only; it
/// answers any other credentials with a 400 that quotes the `Authorization` header it got.
pub(crate) fn vmauth(directory: &Path, user: &str, password: &str, upstream_port: u16) -> Peer {
    let port = free_port();
    let config = directory.join("vmauth.yml");
    std::fs::write(
        &config,
        format!(
            "users:\n- username: {user:?}\n  password: {password:?}\n  url_prefix: \"http://127.0.0.1:{upstream_port}/\"\n"
        ),
    )
    .unwrap();
    let mut child = Command::new("vmauth")
        .arg(format!("-auth.config={}", config.display()))
        .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("vmauth (Debian's victoria-metrics package; tests/run installs it)");
    wait_until_listening(port, "vmauth", &mut child);
    Peer { child, port }
}

/// One series of an exposition: name, labels, value.
pub(crate) type Sample = (String, BTreeMap<String, String>, f64);

/// Reads an exposition's samples, undoing the format's escapes; comments are skipped.
pub(crate) fn parse_exposition(exposition: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    for line in exposition.lines().filter(|line| !line.starts_with('#') && !line.is_empty()) {
        let Some(open) = line.find('{') else {
            let (name, value) = line.split_once(' ').unwrap();
            samples.push((name.to_owned(), BTreeMap::new(), value.parse().unwrap()));
            continue;
        };
        let name = &line[..open];
        let mut labels = BTreeMap::new();
        let mut rest = &line[open + 1..];
        while !rest.starts_with('}') {
            let (label, after) = rest.split_once("=\"").unwrap();
            let mut value = String::new();
            let mut characters = after.char_indices();
            let end = loop {
                match characters.next().unwrap() {
                    (_, '\\') => match characters.next().unwrap().1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    (index, '"') => break index,
                    (_, other) => value.push(other),
                }
            };
            labels.insert(label.trim_start_matches(',').to_owned(), value);
            rest = after[end + 1..].trim_start_matches(',');
        }
        let value = rest[1..].trim().split(' ').next().unwrap();
        samples.push((name.to_owned(), labels, value.parse().unwrap()));
    }
    samples
}

/// The value of the series `name` whose labels include all of `labels`, if exactly one has them.
pub(crate) fn value_of(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut matching = samples.iter().filter(|(sample_name, sample_labels, _)| {
        sample_name == name
            && labels.iter().all(|(label, value)| sample_labels.get(*label).map(String::as_str) == Some(value))
    });
    let found = matching.next()?;
    assert!(matching.next().is_none(), "more than one {name} series has {labels:?}");
    Some(found.2)
}

/// What the hand-made server answers to one request.
#[derive(Clone, Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: String,
    /// Say nothing for this long first (a hang, when longer than the client's timeout).
    pub(crate) delay: Duration,
    /// Start the body with every header of the request, one `name: value` line each, as a
    /// careless receiver or proxy does in an error.
    pub(crate) echo_headers: bool,
}

impl Reply {
    pub(crate) fn status(status: u16) -> Reply {
        Reply { status, headers: Vec::new(), body: String::new(), delay: Duration::ZERO, echo_headers: false }
    }

    pub(crate) fn with_body(mut self, body: &str) -> Reply {
        self.body = body.to_owned();
        self
    }

    pub(crate) fn with_header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub(crate) fn echoing_headers(mut self) -> Reply {
        self.echo_headers = true;
        self
    }

    pub(crate) fn after(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }
}

/// A request as the hand-made server received it.
#[derive(Clone, Debug)]
pub(crate) struct Received {
    pub(crate) method: String,
    pub(crate) path: String,
    /// Header names in lower case.
    pub(crate) headers: BTreeMap<String, String>,
    pub(crate) body: Vec<u8>,
    pub(crate) at: Instant,
}

/// A scripted HTTP/1.1 server: the n-th request gets the n-th reply (the last one repeats, or
/// with `cycling` the script starts over).
pub(crate) struct FakeServer {
    pub(crate) port: u16,
    received: Arc<Mutex<Vec<Received>>>,
}

impl FakeServer {
    pub(crate) fn start(replies: Vec<Reply>) -> FakeServer {
        FakeServer::serve(replies, false)
    }

    /// Answers with `replies` in turn, over and over.
    pub(crate) fn cycling(replies: Vec<Reply>) -> FakeServer {
        FakeServer::serve(replies, true)
    }

    fn serve(replies: Vec<Reply>, cycling: bool) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let replies = Arc::new(replies);
        let log = received.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let (log, replies) = (log.clone(), replies.clone());
                std::thread::spawn(move || serve_connection(stream, &log, &replies, cycling));
            }
        });
        FakeServer { port, received }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub(crate) fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

fn serve_connection(stream: TcpStream, log: &Mutex<Vec<Received>>, replies: &[Reply], cycling: bool) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = request_line.split_whitespace();
        let (method, path) = (parts.next().unwrap_or_default().to_owned(), parts.next().unwrap_or_default().to_owned());
        let mut headers = BTreeMap::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').unwrap();
            headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
        }
        let length: usize = headers.get("content-length").map_or(0, |length| length.parse().unwrap());
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let echoed: String = headers.iter().map(|(name, value)| format!("{name}: {value}\n")).collect();
        let mut reply = {
            let mut log = log.lock().unwrap();
            log.push(Received { method, path, headers, body, at: Instant::now() });
            let index = log.len() - 1;
            replies[if cycling { index % replies.len() } else { index.min(replies.len() - 1) }].clone()
        };
        if reply.echo_headers {
            reply.body.insert_str(0, &echoed);
        }
        std::thread::sleep(reply.delay);
        let mut response = format!("HTTP/1.1 {} Scripted\r\nContent-Length: {}\r\n", reply.status, reply.body.len());
        for (name, value) in &reply.headers {
            response.push_str(&format!("{name}: {value}\r\n"));
        }
        response.push_str("\r\n");
        response.push_str(&reply.body);
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

/// The answer of Prometheus (or VictoriaMetrics) on 127.0.0.1:`port` to the instant query
/// `promql`, as JSON, whatever its status.
pub(crate) fn instant_query(port: u16, promql: &str) -> serde_json::Value {
    let url =
        reqwest::Url::parse_with_params(&format!("http://127.0.0.1:{port}/api/v1/query"), [("query", promql)]).unwrap();
    let body = reqwest::blocking::Client::new().get(url).send().unwrap().text().unwrap();
    serde_json::from_str(&body).unwrap_or_else(|error| panic!("{error}: {body}"))
}
