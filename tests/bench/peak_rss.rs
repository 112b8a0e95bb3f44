//! Peak RSS of a command, measured from a fresh process: a child spawned straight from a large
//! benchmark process would be charged that process's own peak (Linux carries it over the spawn
//! into the child's maximum RSS). Shared by the benchmarks.

use std::process::{Command, Stdio};

/// Makes a benchmark binary run the command after it and print the command's peak RSS.
pub(crate) const PEAK_RSS_FLAG: &str = "--peak-rss-of";

/// If this process was started with `PEAK_RSS_FLAG`, runs the command after it, prints its peak
/// RSS in bytes and returns true.
pub(crate) fn serve_request() -> bool {
    let Some(command) = std::env::args().skip_while(|arg| arg != PEAK_RSS_FLAG).nth(1) else { return false };
    let arguments = std::env::args().skip_while(|arg| arg != PEAK_RSS_FLAG).skip(2);
    let status = Command::new(&command).args(arguments).stdout(Stdio::null()).status().unwrap();
    assert!(status.success(), "{command} failed: {status}");
    // SAFETY: getrusage only writes into the struct it is given.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage
    };
    println!("{}", usage.ru_maxrss as u64 * 1024);
    true
}

/// Runs `command` with `arguments` through a fresh copy of this binary; returns its peak RSS in
/// bytes and what it wrote to stderr.
pub(crate) fn peak_rss_of(command: &str, arguments: &[&str]) -> u64 {
    let output = Command::new(std::env::current_exe().unwrap())
        .arg(PEAK_RSS_FLAG)
        .arg(command)
        .args(arguments)
        .output()
        .expect("running the measured command");
    assert!(output.status.success(), "{command} failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap().trim().parse().expect("a byte count")
}
