//! Scenario: the appliance's root file system (issue 19). `os/tests/appliance-nspawn.sh`
//! builds it twice with its recipe (`os/build.sh`, mmdebstrap) and finds one SHA-256, makes
//! the UEFI disk image from it twice (`image/build.sh`: one SHA-256, ESP + root), checks
//! what is in it (fiona and its hardened units, the trusted bundle key, Tesseract's English
//! and Norwegian models, the journal's cap, the firewall) and what is not (SSH server,
//! compilers, a machine ID, a root password), boots it under `systemd-nspawn --boot` with its
//! own network, applies a signed bundle through the inbox, and sees the selftest go green, a
//! C-STORE from the host acknowledged, and a port the firewall closes closed. See the script's
//! header for what it needs (root, network access to the Debian archive; packages are cached
//! in ~/.cache/fiona-appliance).

mod common;

use common::boot_script::run_boot_script;

#[test]
fn the_appliance_rootfs_builds_reproducibly_and_boots_to_a_green_selftest() {
    let stdout = run_boot_script("appliance-nspawn", &[]);
    // The steps the script reports, so that a script that skips one cannot pass.
    for step in [
        "two builds, one SHA-256",
        "disk image: two builds, one SHA-256",
        "contents: fiona, its units",
        "the boot's selftest: warnings (exit 2)",
        "applied from the inbox",
        "selftest green (exit 0)",
        "acknowledged and listed",
        "closed to the host (firewall)",
        "journal persistent",
    ] {
        assert!(
            stdout.contains(step),
            "the script did not report '{step}':\n{stdout}"
        );
    }
}
