//! The remote-write benchmark: `cargo bench --bench remote_write`.
//!
//! 1. Encode + snappy-compress one request of 1, 100 and 100,000 series (one sample each, the
//!    agent's label shape): ns per series and bytes on the wire per series, against the raw
//!    protobuf size as the baseline for the compression ratio.
//! 2. A 24-hour backlog at a 15 s interval (5,760 ticks of 123 series: 20 APIs × 6 statuses plus
//!    the agent's row counts): the time to queue it, its size on disk, and the peak RSS and
//!    time of `apimetrics-agent once` draining it into Debian's victoria-metrics, which takes
//!    day-old samples (Prometheus would refuse them as out of bounds).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use apimetrics_agent::populate::{self, Population};
use apimetrics_agent::remote_write::queue::Queue;
use apimetrics_agent::remote_write::request::proto::{Label, Sample, TimeSeries};
use apimetrics_agent::remote_write::request::{encode, label_set};
use prost::Message;

mod peak_rss;

fn main() {
    if peak_rss::serve_request() {
        return;
    }
    println!("encode + compress one request:");
    println!("  {:>9} {:>12} {:>14} {:>16}", "series", "ns/series", "wire B/series", "vs raw protobuf");
    for n_series in [1, 100, 100_000] {
        let series = tick(n_series, 1_764_000_000_000);
        let n_runs = (1_000_000 / n_series).clamp(5, 10_000);
        let started = Instant::now();
        let mut wire_bytes = 0;
        for _ in 0..n_runs {
            wire_bytes = std::hint::black_box(encode(&series)).len();
        }
        let per_series = started.elapsed().as_nanos() as f64 / (n_runs * n_series) as f64;
        let raw: usize = series.iter().map(|one| one.encoded_len() + 3).sum();
        println!(
            "  {n_series:>9} {per_series:>12.0} {:>14.1} {:>15.2}x",
            wire_bytes as f64 / n_series as f64,
            raw as f64 / wire_bytes as f64
        );
    }

    let directory = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let n_ticks = 24 * 3600 / 15;
    let queue_path = directory.path().join("state/remote_write/central.sqlite3");
    let queue = Queue::open(&queue_path).unwrap();
    let now_ms = chrono::Utc::now().timestamp_millis();
    let started = Instant::now();
    for index in 0..n_ticks {
        let timestamp_ms = now_ms - (n_ticks - index) as i64 * 15_000;
        queue.push(timestamp_ms, &tick(123, timestamp_ms), 2000, None).unwrap();
    }
    let queued_in = started.elapsed();
    drop(queue);
    let disk_bytes: u64 = std::fs::read_dir(queue_path.parent().unwrap())
        .unwrap()
        .map(|entry| entry.unwrap().metadata().unwrap().len())
        .sum();
    let n_samples = n_ticks * 123;
    println!("\na 24-hour backlog at 15 s: {n_ticks} ticks, {n_samples} samples");
    println!(
        "  queued in {:.1} s ({:.2} ms per tick, each committed with fsync)",
        queued_in.as_secs_f64(),
        queued_in.as_secs_f64() * 1000.0 / n_ticks as f64
    );
    println!(
        "  on disk: {:.1} MB ({:.0} bytes per sample)",
        disk_bytes as f64 / 1e6,
        disk_bytes as f64 / n_samples as f64
    );

    let victoria = VictoriaMetrics::start(directory.path());
    let database = directory.path().join("app.sqlite3");
    populate::create(&database, &Population::new(1000, 20, 1), false, false).unwrap();
    let config = directory.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nstate_dir = \"state\"\n[source]\ndatabase = \"app.sqlite3\"\n[schedule]\ninterval = \"15s\"\n\
             [[remote_write]]\nname = \"central\"\nurl = \"http://127.0.0.1:{}/api/v1/write\"\nqueue = {{ max_age = \"25h\" }}\n",
            victoria.port
        ),
    )
    .unwrap();
    let started = Instant::now();
    let rss =
        peak_rss::peak_rss_of(env!("CARGO_BIN_EXE_apimetrics-agent"), &["--config", config.to_str().unwrap(), "once"])
            as f64;
    let drained_in = started.elapsed();
    println!(
        "  drained by `once` in {:.1} s ({:.0} samples/s, at most 20 requests/s by design); peak RSS {:.1} MB",
        drained_in.as_secs_f64(),
        n_samples as f64 / drained_in.as_secs_f64(),
        rss / 1e6
    );
}

/// One tick of `n_series` series shaped like the agent's, at `timestamp_ms`.
fn tick(n_series: usize, timestamp_ms: i64) -> Vec<TimeSeries> {
    let constant = [("job".to_owned(), "apimetrics".to_owned()), ("site".to_owned(), "nairobi-1".to_owned())].into();
    (0..n_series)
        .map(|index| {
            let (api, status) = (format!("API number {}", index / 6), format!("Status {}", index % 6));
            let labels: Vec<Label> = label_set("api_transactions", &[("api", &api), ("status", &status)], &constant);
            TimeSeries { labels, samples: vec![Sample { value: (index % 977) as f64, timestamp: timestamp_ms }] }
        })
        .collect()
}

struct VictoriaMetrics {
    child: std::process::Child,
    port: u16,
}

impl VictoriaMetrics {
    fn start(directory: &Path) -> VictoriaMetrics {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("victoria-metrics")
            .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
            .arg(format!("-storageDataPath={}", directory.join("victoria").display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("victoria-metrics (Debian package; tests/run installs it)");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "victoria-metrics did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        VictoriaMetrics { child, port }
    }
}

impl Drop for VictoriaMetrics {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
