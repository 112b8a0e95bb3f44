//! The Debian package that `cargo deb` builds (tests/run builds it and names it in
//! APIMETRICS_TEST_DEB): lintian finds no error or warning in it; it installs with dpkg, the
//! installed agent runs as its unit would run it, and removing then purging it leaves nothing.
//! Also the files it is made from: the man page is what the CLI writes, and the packaged config
//! says what the project's config.toml says, with the unit's paths.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::support::*;

const PACKAGE: &str = "apimetrics-agent";
const CONFIG: &str = "/etc/apimetrics-agent/config.toml";
const STATE_DIR: &str = "/var/lib/apimetrics-agent";
const UNIT: &str = "/usr/lib/systemd/system/apimetrics-agent.service";
/// What the unit's DynamicUser= would pick (systemd takes them from 61184 up), and the group a
/// drop-in's SupplementaryGroups= gives it to read the database: ids no account on the machine
/// has, so the agent can read nothing through them but what the test gives them.
const SERVICE_UID: u32 = 61_873;
const DATABASE_GID: u32 = 61_874;

fn package_file() -> PathBuf {
    let deb = std::env::var("APIMETRICS_TEST_DEB")
        .expect("APIMETRICS_TEST_DEB names the .deb: tests/run builds it with `cargo deb` and sets it");
    let deb = PathBuf::from(deb);
    assert!(deb.is_file(), "APIMETRICS_TEST_DEB={} is no file", deb.display());
    deb
}

fn run(program: &str, arguments: &[&str]) -> std::process::Output {
    Command::new(program)
        .args(arguments)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|error| panic!("{program}: {error}"))
}

fn succeeds(program: &str, arguments: &[&str]) -> String {
    let output = run(program, arguments);
    let said = format!("{}{}", stdout(&output), stderr(&output));
    assert!(output.status.success(), "{program} {arguments:?} failed: {said}");
    said
}

/// `Some(status)` ("install ok installed", "deinstall ok config-files") while dpkg knows it.
fn dpkg_status() -> Option<String> {
    let output = run("dpkg-query", &["--show", "--showformat=${Status}", PACKAGE]);
    let status = stdout(&output);
    (output.status.success() && !status.contains("not-installed")).then_some(status)
}

/// Every path under the system's folders whose name holds the package's name.
fn leftovers() -> Vec<PathBuf> {
    fn walk(path: &Path, found: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(path) else { return };
        for entry in entries.flatten() {
            let path = entry.path();
            if entry.file_name().to_string_lossy().contains(PACKAGE) {
                found.push(path.clone());
            }
            if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                walk(&path, found);
            }
        }
    }
    let mut found = Vec::new();
    for root in ["/etc", "/usr/bin", "/usr/sbin", "/usr/lib", "/usr/share", "/var/lib"] {
        walk(Path::new(root), &mut found);
    }
    found
}

/// Purges the package if a failed assertion left it installed, so the machine is as it was.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        if dpkg_status().is_some() {
            let _ = run("dpkg", &["--purge", PACKAGE]);
        }
    }
}

#[test]
fn lintian_finds_no_error_or_warning_in_the_package() {
    let deb = package_file();
    // Info-level tags (no md5sums file; SQLite's C built without _FORTIFY_SOURCE) are advice.
    let output = run("lintian", &["--fail-on", "error,warning", deb.to_str().unwrap()]);
    let said = stdout(&output);
    assert!(output.status.success(), "lintian failed ({:?}):\n{said}{}", output.status, stderr(&output));
    let flagged: Vec<&str> = said.lines().filter(|line| line.starts_with("E: ") || line.starts_with("W: ")).collect();
    assert!(flagged.is_empty(), "lintian flagged:\n{said}");

    // Each override says why, in a comment just above it.
    let overrides =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/debian/lintian-overrides")).unwrap();
    let lines: Vec<&str> = overrides.lines().collect();
    for (index, line) in lines.iter().enumerate().filter(|(_, line)| !line.is_empty() && !line.starts_with('#')) {
        assert!(index > 0 && lines[index - 1].starts_with('#'), "lintian override without a comment: {line}");
    }
}

#[test]
fn the_package_installs_runs_as_its_unit_would_and_purges_without_a_trace() {
    let deb = package_file();
    assert!(
        dpkg_status().is_none() && !Path::new(CONFIG).exists() && !Path::new(STATE_DIR).exists(),
        "{PACKAGE} is already on this machine ({:?}); this test installs and purges it: `dpkg --purge {PACKAGE}` first",
        dpkg_status()
    );
    let _purge_on_failure = Installed;

    succeeds("dpkg", &["--install", deb.to_str().unwrap()]);
    assert_eq!(dpkg_status().as_deref(), Some("install ok installed"));
    let installed = ["/usr/bin/apimetrics-agent", UNIT, CONFIG, "/usr/share/man/man1/apimetrics-agent.1.gz"];
    for path in installed.iter().chain(&["/usr/share/doc/apimetrics-agent/copyright"]) {
        assert!(Path::new(path).is_file(), "{path} is not installed");
    }
    let conffiles = succeeds("dpkg-query", &["--show", "--showformat=${Conffiles}", PACKAGE]);
    assert!(conffiles.contains(CONFIG), "{CONFIG} is not a conffile: {conffiles}");
    let version = succeeds("/usr/bin/apimetrics-agent", &["--version"]);
    assert_eq!(version.trim(), format!("apimetrics-agent {}", env!("CARGO_PKG_VERSION")));
    // Without --config, in a folder with no config.toml, it points at the package's config.
    let elsewhere = tempfile::tempdir().unwrap();
    let lost = Command::new("/usr/bin/apimetrics-agent")
        .arg("check")
        .current_dir(elsewhere.path())
        .env_remove("APIMETRICS_CONFIG")
        .output()
        .unwrap();
    assert_eq!(lost.status.code(), Some(2));
    assert!(stderr(&lost).contains(&format!("pass --config {CONFIG}, where the Debian package installed it")));
    // The installed unit verifies, its ExecStart naming the installed binary.
    let verified = run("systemd-analyze", &["verify", UNIT]);
    let said = format!("{}{}", stdout(&verified), stderr(&verified));
    assert!(verified.status.success() && said.trim().is_empty(), "systemd-analyze verify: {said}");

    // The site: the app's database in a folder of its group's, as www-data keeps it.
    let site = site_with_transactions();
    std::os::unix::fs::chown(site.directory.path(), Some(0), Some(DATABASE_GID)).unwrap();
    std::fs::set_permissions(site.directory.path(), std::fs::Permissions::from_mode(0o750)).unwrap();
    std::os::unix::fs::chown(site.database(), Some(0), Some(DATABASE_GID)).unwrap();
    std::fs::set_permissions(site.database(), std::fs::Permissions::from_mode(0o640)).unwrap();
    // The operator sets source.database in the installed config, and the port for this test.
    let port = free_port();
    let shipped = std::fs::read_to_string(CONFIG).unwrap();
    let edited = shipped
        .replace("database = \"/srv/payments/db.sqlite3\"", &format!("database = {:?}", site.database()))
        .replace("listen = \"127.0.0.1:9184\"", &format!("listen = \"127.0.0.1:{port}\""))
        .replace("interval = \"15s\"", "interval = \"1s\"");
    assert_ne!(edited, shipped);
    std::fs::write(CONFIG, edited).unwrap();
    // StateDirectory=apimetrics-agent with StateDirectoryMode=0700, for the service's user.
    std::fs::create_dir(STATE_DIR).unwrap();
    std::os::unix::fs::chown(STATE_DIR, Some(SERVICE_UID), Some(SERVICE_UID)).unwrap();
    std::fs::set_permissions(STATE_DIR, std::fs::Permissions::from_mode(0o700)).unwrap();

    // The unit's ExecStart, as its user: no capabilities, no new privileges, UMask=0077.
    let unit = std::fs::read_to_string(UNIT).unwrap();
    let exec_start: Vec<&str> = unit
        .lines()
        .find_map(|line| line.strip_prefix("ExecStart="))
        .expect("the unit has an ExecStart")
        .split_whitespace()
        .collect();
    assert_eq!(exec_start[..3], ["/usr/bin/apimetrics-agent", "--config", CONFIG]);
    let as_the_unit = |arguments: &[&str]| {
        let mut command = Command::new("setpriv");
        command
            .arg(format!("--reuid={SERVICE_UID}"))
            .arg(format!("--regid={SERVICE_UID}"))
            .arg(format!("--groups={DATABASE_GID}"))
            .args(["--no-new-privs", "--inh-caps=-all", "--bounding-set=-all", "--"])
            .args(["sh", "-c", "umask 0077 && exec \"$@\"", "sh"])
            .args(arguments)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("STATE_DIRECTORY", STATE_DIR)
            .stdin(Stdio::null());
        command
    };

    let check = as_the_unit(&[exec_start[0], exec_start[1], exec_start[2], "check"]).output().unwrap();
    assert!(check.status.success(), "check as the unit's user: {}{}", stdout(&check), stderr(&check));

    let log = site.directory.path().join("installed.log");
    let child =
        as_the_unit(&exec_start).stdout(Stdio::null()).stderr(std::fs::File::create(&log).unwrap()).spawn().unwrap();
    let running = Running::adopt(child, port, log);
    let metrics = running.wait_for_ticks("success", 1.0);
    let expected = [
        (("Mpesa B2C".to_owned(), "Failed".to_owned()), 2),
        (("Mpesa B2C".to_owned(), "Pending".to_owned()), 0),
        (("Mpesa Express".to_owned(), "Failed".to_owned()), 0),
        (("Mpesa Express".to_owned(), "Pending".to_owned()), 3),
    ];
    assert_eq!(counts_in(&metrics), expected.into_iter().collect());
    let lock = std::fs::metadata(Path::new(STATE_DIR).join("agent.lock")).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&lock), SERVICE_UID);
    let (status, logged) = running.terminate();
    assert!(status.success(), "exit {status:?} on SIGTERM; logged:\n{logged}");

    // Removed: the program, its unit, page and documents go; the edited config and the state
    // stay, for a reinstall to pick up.
    succeeds("dpkg", &["--remove", PACKAGE]);
    for path in installed.iter().filter(|path| **path != CONFIG) {
        assert!(!Path::new(path).exists(), "{path} is left after removal");
    }
    assert!(!Path::new("/usr/share/doc/apimetrics-agent").exists());
    assert!(Path::new(CONFIG).is_file() && Path::new(STATE_DIR).is_dir());

    // Purged: nothing of it left anywhere, config and state included.
    succeeds("dpkg", &["--purge", PACKAGE]);
    assert_eq!(dpkg_status(), None);
    assert_eq!(leftovers(), Vec::<PathBuf>::new(), "left after purge");
}

#[test]
fn the_committed_man_page_is_what_the_cli_writes() {
    let output = Command::new(env!("CARGO_BIN_EXE_apimetrics-agent")).arg("man").output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let committed = concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/apimetrics-agent.1");
    assert!(
        std::fs::read_to_string(committed).unwrap() == stdout(&output),
        "contrib/apimetrics-agent.1 is not what the CLI writes now: \
         `cargo run --quiet -- man > contrib/apimetrics-agent.1`"
    );
    // Every command and option is on the page.
    let page = stdout(&output);
    for word in ["run", "once", "check", "populate", "demo", "dry\\-run", "targets", "log\\-format", "SIGHUP"] {
        assert!(page.contains(word), "{word} is not on the man page");
    }
    // man renders it without a warning from groff.
    let rendered = Command::new("man")
        .args(["--warnings", "--local-file", committed])
        .env("MANWIDTH", "80")
        .env("MAN_KEEP_STDERR", "1")
        .output()
        .unwrap();
    assert!(rendered.status.success() && stderr(&rendered).is_empty(), "{}", stderr(&rendered));
    assert!(stdout(&rendered).contains("EXIT STATUS"));
}

#[test]
fn the_packaged_config_is_the_shipped_one_with_the_units_paths() {
    let read = |path: &str| -> toml::Table {
        let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap();
        text.parse().unwrap_or_else(|error| panic!("{path}: {error}"))
    };
    let mut shipped = read("config.toml");
    let packaged = read("contrib/debian/config.toml");
    shipped["agent"]["state_dir"] = STATE_DIR.into();
    shipped["source"]["database"] = "/srv/payments/db.sqlite3".into();
    assert_eq!(packaged, shipped);

    // It validates: with an existing database, `check` gets past the config to the database.
    let site = site_with_transactions();
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/debian/config.toml")).unwrap();
    let config = site.write_config(
        "packaged.toml",
        &text
            .replace("\"/srv/payments/db.sqlite3\"", "\"app.sqlite3\"")
            .replace(STATE_DIR, &site.directory.path().join("state").display().to_string()),
    );
    let output = run_agent(&config, &["once", "--dry-run"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("api_transactions{api=\"Mpesa Express\",status=\"Pending\"} 3"));
}
