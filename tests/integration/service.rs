//! The systemd unit in contrib/, which the Debian package installs: it verifies, and systemd
//! rates it hardened, with the README's drop-in applied.

use std::process::Command;

use crate::support::*;

/// The README's drop-in: the ```ini block of "Running it as a service".
fn readme_drop_in() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = &readme[readme.find("## Running it as a service").expect("the README's service section")..];
    let block = &section[section.find("```ini\n").expect("the drop-in's ini block") + "```ini\n".len()..];
    block[..block.find("```").unwrap()].to_owned()
}

#[test]
fn the_shipped_unit_verifies_and_is_hardened_with_the_readmes_drop_in() {
    let directory = tempfile::tempdir().unwrap();
    let shipped =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/apimetrics-agent.service")).unwrap();
    assert!(shipped.contains("ExecStart=/usr/bin/apimetrics-agent --config /etc/apimetrics-agent/config.toml run"));
    // verify checks that ExecStart names an executable: point it at the one just built.
    let unit = directory.path().join("apimetrics-agent.service");
    std::fs::write(&unit, shipped.replace("/usr/bin/apimetrics-agent", env!("CARGO_BIN_EXE_apimetrics-agent")))
        .unwrap();
    // Beside the unit, as /etc/systemd/system/apimetrics-agent.service.d/ is beside the package's.
    let drop_ins = directory.path().join("apimetrics-agent.service.d");
    std::fs::create_dir(&drop_ins).unwrap();
    let drop_in = readme_drop_in();
    assert!(drop_in.contains("SupplementaryGroups=www-data"), "{drop_in}");
    std::fs::write(drop_ins.join("override.conf"), &drop_in).unwrap();

    // The man page the unit's Documentation= names is installed by the package, not here.
    let verified = Command::new("systemd-analyze").args(["verify", "--man=no"]).arg(&unit).output().unwrap();
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
    // The drop-in was read: systemd rates the supplementary group it adds.
    assert!(rating.contains("Service runs with supplementary groups"), "{rating}");
}
