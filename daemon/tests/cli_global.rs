//! Scenarios for the command line's global options and its control client: `--config`,
//! `--data-dir` and `--json` mean the same before and after the command; `check-config`
//! without a file says what it needs; an admin command whose daemon is not running (no
//! socket, or a socket left behind by a killed daemon) fails with the "cannot reach" message
//! and exit status 1, printing nothing on stdout.

use std::path::Path;
use std::process::{Command, Output};

use fiona_tests::fiona_bin;
use fiona_tests::harness::{Daemon, Options};
use fiona_tests::scu::{minimal_ct, RawScu, CT_IMAGE_STORAGE, EXPLICIT_VR_LE};

fn fiona(args: &[&str]) -> Output {
    Command::new(fiona_bin!()).args(args).output().unwrap()
}

fn json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

/// The studies listing without what changes from one second to the next.
fn studies_now(v: serde_json::Value) -> serde_json::Value {
    let mut v = v;
    for s in v.as_array_mut().unwrap() {
        let s = s.as_object_mut().unwrap();
        s.remove("age_secs");
        s.remove("state");
    }
    v
}

#[test]
fn global_options_work_before_and_after_the_command() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(&fiona_bin!(), &tmp.path().join("data"), &Options::default());
    let mut scu = RawScu::connect(d.addr, "GLOBAL", "FIONA", CT_IMAGE_STORAGE, EXPLICIT_VR_LE)
        .expect("associate");
    let st = scu
        .store_raw(
            CT_IMAGE_STORAGE,
            "2.25.91001.1.1",
            &minimal_ct("2.25.91001", "2.25.91001.1", "2.25.91001.1.1"),
        )
        .unwrap();
    assert_eq!(st, 0x0000, "store: status {st:#06x}");
    drop(scu);

    let dir = d.data_dir.to_str().unwrap();
    let cfg = d.config_path.to_str().unwrap();
    let after = json(&fiona(&["studies", "--data-dir", dir, "--json"]));
    let before = json(&fiona(&["--json", "--data-dir", dir, "studies"]));
    let mixed = json(&fiona(&["--json", "studies", "--data-dir", dir]));
    let by_config = json(&fiona(&["-c", cfg, "studies", "--json"]));
    assert_eq!(after.as_array().map(Vec::len), Some(1), "{after}");
    let after = studies_now(after);
    assert_eq!(studies_now(before), after);
    assert_eq!(studies_now(mixed), after);
    assert_eq!(studies_now(by_config), after);

    // A nested command takes them too, and without --json it prints the table.
    let coupling = fiona(&["--data-dir", dir, "coupling", "list"]);
    assert!(coupling.status.success());
    assert!(String::from_utf8_lossy(&coupling.stdout).starts_with("KIND"));
    assert_eq!(
        json(&fiona(&["coupling", "list", "--json", "--config", cfg])),
        serde_json::json!([])
    );
    let key = after[0]["key"].as_str().unwrap();
    let study = fiona(&["study", key, "-c", cfg]);
    let text = String::from_utf8_lossy(&study.stdout);
    assert!(
        study.status.success() && text.contains(&format!("study        {key}")),
        "{text}"
    );

    // check-config takes --config before or after it, and needs it.
    for args in [["check-config", "-c", cfg], ["-c", cfg, "check-config"]] {
        let out = fiona(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("valid"));
    }
    let out = fiona(&["check-config"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--config FILE"), "{err}");
    // --json is refused where there is no JSON to print.
    let out = fiona(&["--json", "check-config", "-c", cfg]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no JSON output"));
}

fn assert_cannot_reach(dir: &Path) {
    let dir = dir.to_str().unwrap();
    for args in [
        vec!["status", "--data-dir", dir],
        vec!["--json", "--data-dir", dir, "studies"],
        vec![
            "assign",
            "X",
            "--project",
            "P",
            "--participant",
            "I",
            "--event",
            "E",
            "--data-dir",
            dir,
        ],
        vec!["verify", "--project", "P", "--data-dir", dir],
        vec!["health", "--data-dir", dir],
    ] {
        let out = fiona(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.starts_with("fiona: ")
                && err.contains("cannot reach the fiona daemon")
                && err.contains("control.sock")
                && err.contains("is `fiona serve` running"),
            "{args:?}: {err}"
        );
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn a_daemon_that_is_not_running_cannot_be_reached() {
    let tmp = tempfile::tempdir().unwrap();
    // No socket at all.
    assert_cannot_reach(tmp.path());
    // The socket of a daemon killed with -9: the file is there, nobody listens.
    let d = tmp.path().join("stale");
    std::fs::create_dir_all(d.join("run")).unwrap();
    drop(std::os::unix::net::UnixListener::bind(d.join("run/control.sock")).unwrap());
    assert!(d.join("run/control.sock").exists());
    assert_cannot_reach(&d);
}
