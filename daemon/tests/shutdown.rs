//! Scenario: SIGTERM while `storescu` is sending. The daemon ends in-flight associations,
//! exits 0, and after a restart every acknowledged instance is indexed and intact; no temp
//! file is left.

use fiona_tests::fiona_bin;
use std::time::{Duration, Instant};

use fiona_tests::corpus::{self, Modality, StudySpec};
use fiona_tests::harness::{
    acknowledged, output_text, spawn_storescu_verbose, stored_files, Daemon, Options,
};

#[test]
fn sigterm_mid_transfer_is_clean() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("corpus");
    std::fs::create_dir_all(&src).unwrap();
    let mut spec = StudySpec::new(5150, Modality::Ct);
    spec.series = 2;
    spec.instances_per_series = 400;
    let files = corpus::write_study(&spec, &src).unwrap();
    let mut d = Daemon::start(
        &fiona_bin!(),
        &tmp.path().join("data"),
        &Options {
            extra_toml: "shutdown_grace_secs = 5\n".into(),
            ..Options::default()
        },
    );
    let child = spawn_storescu_verbose(d.addr, "TERMSCU", &["-R", "-xe"], &files);
    // SIGTERM once the transfer is under way.
    let t = Instant::now();
    loop {
        let n = d.json(&["status"])["totals"]["instances"].as_u64().unwrap();
        if n >= 10 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "transfer never started"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let t = Instant::now();
    // Exits by itself, 0: a daemon that ignored the grace period would be killed by the
    // harness after 30 s and not exit successfully.
    let st = d.stop().expect("daemon was running");
    eprintln!("stopped in {:?}", t.elapsed());
    assert!(st.success(), "exit status {st:?}\n{}", d.log());
    let acked = acknowledged(&output_text(child.wait_with_output().unwrap()));
    eprintln!("{} acknowledged before SIGTERM took effect", acked.len());
    assert!(acked.len() < files.len(), "SIGTERM landed mid-transfer");
    assert!(d.log().contains("fiona stopped"));

    d.restart();
    let status = d.json(&["status"]);
    assert_eq!(
        status["totals"]["instances"].as_u64().unwrap(),
        acked.len() as u64
    );
    let stored = stored_files(&d.data_dir);
    assert_eq!(stored.len(), acked.len());
    let stored_uids: std::collections::BTreeSet<String> = stored
        .iter()
        .map(|s| corpus::sop_instance_uid(s).unwrap())
        .collect();
    for f in &acked {
        assert!(stored_uids.contains(&corpus::sop_instance_uid(f).unwrap()));
    }
}
