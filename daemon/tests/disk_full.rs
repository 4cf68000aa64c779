//! Scenarios: below the free-space floor every C-STORE is refused with 0xA700 and nothing is
//! written; on a really full file system (a small tmpfs) what was acknowledged is intact and
//! indexed, what was refused left nothing behind, and the daemon keeps answering.

use std::path::PathBuf;
use std::process::Command;

use fiona_tests::corpus::{self, Modality, StudySpec};
use fiona_tests::harness::{
    echoscu, indexed_instances, partial_temp_files, stored_files, storescu_responses as responses,
    storescu_verbose, Daemon, Options,
};

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_fiona"))
}

#[test]
fn below_free_space_floor_refuses_with_a700() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("corpus");
    std::fs::create_dir_all(&src).unwrap();
    let files = corpus::write_study(&StudySpec::new(9001, Modality::Mr), &src).unwrap();
    let d = Daemon::start(
        &bin(),
        &tmp.path().join("data"),
        &Options {
            min_free_bytes: 1 << 60,
            ..Options::default()
        },
    );
    let log = storescu_verbose(d.addr, "FULLSCU", &["-nh", "-R", "-xe"], &files);
    let r = responses(&log);
    assert_eq!(r.len(), files.len(), "{log}");
    for (_, line) in &r {
        assert!(line.contains("OutOfResources"), "{line}");
    }
    let status = d.json(&["status"]);
    assert_eq!(status["totals"]["instances"], 0);
    assert_eq!(
        status["instances_out_of_resources_since_start"],
        files.len() as u64
    );
    assert!(stored_files(&d.data_dir).is_empty());
    assert!(partial_temp_files(&d.data_dir).is_empty());
    assert!(echoscu(d.addr, "ANY", "FIONA").status.success());
}

#[test]
fn full_file_system_keeps_acknowledged_and_leaves_nothing_half_written() {
    if !nix_is_root() {
        eprintln!("SKIPPED: mounting a small tmpfs needs root (CI runs as root)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("corpus");
    std::fs::create_dir_all(&src).unwrap();
    let mut spec = StudySpec::new(9002, Modality::Ct);
    spec.rows = 512;
    spec.cols = 512;
    spec.series = 1;
    spec.instances_per_series = 30; // 15 MiB into a 8 MiB file system
    let files = corpus::write_study(&spec, &src).unwrap();
    let mnt = tmp.path().join("small");
    std::fs::create_dir_all(&mnt).unwrap();
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(st.success(), "mount tmpfs");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _guard = Unmount(mnt.clone());

    let mut d = Daemon::start(&bin(), &mnt.join("data"), &Options::default());
    let log = storescu_verbose(d.addr, "FULLSCU", &["-nh", "-R", "-xe"], &files);
    let r = responses(&log);
    let ok: Vec<&PathBuf> = r
        .iter()
        .filter(|(_, l)| l.contains("(Success)"))
        .map(|(f, _)| f)
        .collect();
    let refused = r.len() - ok.len();
    eprintln!(
        "{} acknowledged, {refused} refused on a full disk",
        ok.len()
    );
    assert!(!ok.is_empty(), "some fit: {log}");
    assert!(refused > 0, "the disk filled up");
    for (_, l) in r.iter().filter(|(_, l)| !l.contains("(Success)")) {
        assert!(l.contains("OutOfResources"), "{l}");
    }
    assert!(
        partial_temp_files(&d.data_dir).is_empty(),
        "nothing half-written"
    );
    assert!(
        echoscu(d.addr, "ANY", "FIONA").status.success(),
        "still answering"
    );

    // Acknowledged = indexed = on disk, bytes intact; also after a restart.
    for round in 0..2 {
        let idx = indexed_instances(&d);
        assert_eq!(idx.len(), ok.len(), "round {round}");
        for f in &ok {
            let stored = &idx[&corpus::sop_instance_uid(f).unwrap()];
            assert!(
                corpus::dataset_bytes(f).unwrap().1 == corpus::dataset_bytes(stored).unwrap().1
            );
        }
        assert_eq!(stored_files(&d.data_dir).len(), ok.len());
        d.restart();
    }
}

fn nix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}
