//! The systemd unit in contrib/: it verifies, and systemd rates it hardened.

use std::process::Command;

use crate::support::*;

#[test]
fn the_shipped_unit_verifies_and_is_hardened() {
    let directory = tempfile::tempdir().unwrap();
    let shipped =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/apimetrics-agent.service")).unwrap();
    assert!(shipped.contains("ExecStart=/usr/local/bin/apimetrics-agent --config /etc/apimetrics/config.toml run"));
    // verify checks that ExecStart names an executable: point it at the one just built.
    let unit = directory.path().join("apimetrics-agent.service");
    std::fs::write(&unit, shipped.replace("/usr/local/bin/apimetrics-agent", env!("CARGO_BIN_EXE_apimetrics-agent")))
        .unwrap();

    let verified = Command::new("systemd-analyze").arg("verify").arg(&unit).output().expect("systemd-analyze");
    let said = format!("{}{}", stdout(&verified), stderr(&verified));
    assert!(verified.status.success() && said.trim().is_empty(), "systemd-analyze verify: {said}");

    // Exposure 0 (locked down) to 10 (exposed); systemd calls below 2 "OK".
    let rated = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--threshold=20"])
        .arg(&unit)
        .output()
        .unwrap();
    let rating = stdout(&rated);
    assert!(rated.status.success(), "{rating}");
    assert!(rating.contains("Overall exposure level for apimetrics-agent.service: 1."), "{rating}");
    for setting in ["✓ NoNewPrivileges=", "✓ ProtectSystem=", "✓ CapabilityBoundingSet="] {
        assert!(rating.contains(setting), "{setting} missing from:\n{rating}");
    }
}
