//! Issue 14, item 5: patient data is for the service only. Under umask 022 and 000, every
//! directory fiona creates under its data directory is 0700 and every file 0600 (the index,
//! the received instances, the run directory), and a local user (`nobody`) cannot list or
//! read any of it even where the parent directory is open to all. A data directory that
//! already exists with wider modes is tightened at start, and the log says so.
//!
//! One test in this binary: the umask is the process's, and the test changes it.

use fiona_tests::fiona_bin;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use fiona_tests::corpus::{self, Modality, StudySpec};
use fiona_tests::harness::{storescu, Daemon, Options};
use nix::sys::stat::{umask, Mode};

/// Every entry under `root` (itself included) with its mode.
fn modes(root: &Path) -> Vec<(PathBuf, u32, bool)> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_owned()];
    while let Some(p) = todo.pop() {
        let m = std::fs::symlink_metadata(&p).unwrap();
        out.push((p.clone(), m.permissions().mode() & 0o7777, m.is_dir()));
        if m.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                todo.push(e.unwrap().path());
            }
        }
    }
    out
}

fn assert_owner_only(root: &Path) {
    let all = modes(root);
    assert!(
        all.len() > 5,
        "too little under {}: {all:?}",
        root.display()
    );
    for (p, mode, dir) in &all {
        assert_eq!(mode & 0o077, 0, "{} is {mode:o}", p.display());
        if *dir {
            assert_eq!(*mode, 0o700, "{} is {mode:o}", p.display());
        }
    }
    assert!(
        all.iter().any(|(p, _, _)| p.ends_with("index.redb")),
        "{all:?}"
    );
    assert!(
        all.iter()
            .any(|(p, _, _)| p.extension().is_some_and(|e| e == "dcm")),
        "no instance file: {all:?}"
    );
}

/// `nobody` tries to list the data directory and read the index (root only: runuser).
fn nobody_can_read(root: &Path) -> Option<bool> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("not root: the `nobody` check is skipped (the modes are still checked)");
        return None;
    }
    let index = root.join("index.redb");
    let read = Command::new("runuser")
        .args(["-u", "nobody", "--", "head", "-c", "1"])
        .arg(&index)
        .output()
        .expect("runuser");
    let list = Command::new("runuser")
        .args(["-u", "nobody", "--", "ls"])
        .arg(root)
        .output()
        .expect("runuser");
    Some(read.status.success() || list.status.success())
}

#[test]
fn everything_under_the_data_directory_is_owner_only_whatever_the_umask() {
    let src = tempfile::tempdir().unwrap();
    let files = corpus::write_study(&StudySpec::new(41, Modality::Ct), src.path()).unwrap();
    for mask in [0o022, 0o000] {
        let old = umask(Mode::from_bits_truncate(mask));
        let tmp = tempfile::tempdir().unwrap();
        // The parent is open to all: only fiona's own modes protect the data.
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let data = tmp.path().join("data");
        let mut d = Daemon::start(&fiona_bin!(), &data, &Options::default());
        let out = storescu(d.addr, "FIONA", &[], &files);
        assert!(out.status.success(), "{out:?}");
        let status = d.json(&["status"]);
        assert_eq!(
            status["instances_stored_since_start"].as_u64(),
            Some(files.len() as u64),
            "{status}"
        );
        assert_owner_only(&data);
        if let Some(readable) = nobody_can_read(&data) {
            assert!(!readable, "nobody read the data directory (umask {mask:o})");
        }
        d.stop();
        umask(old);
    }

    // A data directory made wide by someone else is tightened at start.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(data.join("objects/20260101")).unwrap();
    std::fs::write(data.join("objects/20260101/stray.dcm"), b"x").unwrap();
    for (p, m) in [
        (data.clone(), 0o755),
        (data.join("objects"), 0o777),
        (data.join("objects/20260101"), 0o755),
        (data.join("objects/20260101/stray.dcm"), 0o644),
    ] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(m)).unwrap();
    }
    let mut d = Daemon::start(&fiona_bin!(), &data, &Options::default());
    let out = storescu(d.addr, "FIONA", &[], &files[..1]);
    assert!(out.status.success(), "{out:?}");
    assert_owner_only(&data);
    let log = d.log();
    assert!(
        log.contains("made owner-only") && log.contains("entries=4"),
        "{log}"
    );
    if let Some(readable) = nobody_can_read(&data) {
        assert!(!readable, "nobody read the tightened data directory");
    }
    d.stop();
}
