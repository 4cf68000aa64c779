//! A transfer whose every instance is parked says so: DCMTK `storescu` sends a study whose only
//! image cannot be decoded for the pixel stage (its Rows do not fit its pixel data), it is
//! assigned to a project forwarding to a research PACS (DCMTK `dcmqrscp`), and the transfer
//! ends `parked` with nothing sent, not `verified` with 0 sent. Shown by `fiona transfers`
//! (and its state filter), `fiona status` and `fiona projects`; `fiona resend` de-identifies
//! it again (it is parked again, nothing goes out).

use fiona_tests::fiona_bin;
use std::time::{Duration, Instant};

use fiona_tests::corpus::{self, Modality, StudySpec};
use fiona_tests::harness::{dcmqrscp, free_port, require_tool, Daemon, Options};

/// The pipeline has finished with the transfer (nothing more will happen without a person).
fn settled(t: &serde_json::Value) -> bool {
    ["parked", "sent", "verified", "failed", "cancelled"]
        .iter()
        .any(|s| t["state"] == *s)
}

fn audit_count(d: &Daemon, action: &str) -> usize {
    d.json(&["audit"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["action"] == action)
        .count()
}

#[test]
fn a_transfer_whose_only_image_is_parked_is_parked_not_verified() {
    require_tool("dcmodify");
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let _pacs = dcmqrscp(&tmp.path().join("pacs"), port);
    let d = Daemon::start(
        &fiona_bin!(),
        &tmp.path().join("data"),
        &Options {
            extra_toml: format!(
                "[projects.PROJ1]\nparticipant_pattern = \"PROJ1-[0-9]{{4}}\"\n\
                 events = [\"baseline\"]\napproval_start = \"2025-01-01\"\n\
                 approval_end = \"2099-12-31\"\ndestinations = [\"research\"]\n\n\
                 [destinations.research]\nhost = \"127.0.0.1\"\nport = {port}\n\
                 ae_title = \"RESEARCH\"\nretry_base_secs = 1\nverify_after_secs = 0\n"
            ),
            quiet_period_secs: 1,
            ..Options::default()
        },
    );

    // One ultrasound image (the pixel stage must scrub it) whose pixel data does not fit its
    // Rows: stored, but it cannot be decoded, so it is parked.
    let mut spec = StudySpec::new(711, Modality::Us);
    spec.series = 1;
    spec.instances_per_series = 1;
    spec.rows = 64;
    spec.cols = 64;
    let dir = tmp.path().join("in");
    std::fs::create_dir_all(&dir).unwrap();
    let files = corpus::write_study(&spec, &dir).unwrap();
    fiona_tests::harness::make_undecodable(&files[0]);
    d.store_ok(&files);
    let assigned = d.assign(&spec.accession, "PROJ1", "PROJ1-0011", "baseline");
    let id = assigned["transfer"].as_str().unwrap().to_string();

    let t = d.transfer_when("the pipeline to finish with the transfer", settled);
    assert_eq!(t["id"], id.as_str());
    assert_eq!(t["state"], "parked", "{t}");
    assert_eq!(t["deidentified"], 0, "{t}");
    assert_eq!(t["sent"], 0, "{t}");
    assert_eq!(t["parked"].as_array().unwrap().len(), 1, "{t}");
    assert!(
        t["deliveries"].as_array().unwrap().is_empty(),
        "nothing to send, nothing sent: {t}"
    );

    // Shown: the transfers table and its state filter, the status, the projects.
    let table = String::from_utf8_lossy(&d.cli(&["transfers"]).stdout).to_string();
    assert!(table.contains(&id) && table.contains("parked"), "{table}");
    let only = d.json(&["transfers", "--state", "parked"]);
    assert_eq!(only.as_array().unwrap().len(), 1, "{only}");
    let none = d.json(&["transfers", "--state", "verified"]);
    assert!(none.as_array().unwrap().is_empty(), "{none}");
    let status = d.json(&["status"]);
    assert_eq!(status["transfers_parked"], 1, "{status}");
    assert_eq!(status["instances_parked"], 1, "{status}");
    let text = String::from_utf8_lossy(&d.cli(&["status"]).stdout).to_string();
    assert!(text.contains("1 transfers with nothing to send"), "{text}");
    let projects = d.json(&["projects"]);
    assert_eq!(projects[0]["transfers"]["parked"], 1, "{projects}");
    let text = String::from_utf8_lossy(&d.cli(&["projects"]).stdout).to_string();
    assert!(text.contains("1 parked"), "{text}");
    assert_eq!(audit_count(&d, "parked"), 1);

    // Resend de-identifies it again: still nothing to pass on, parked again, nothing sent.
    let r = d.json(&["resend", "--study", &spec.accession]);
    assert_eq!(r["transfers"].as_array().unwrap().len(), 1, "{r}");
    let start = Instant::now();
    while audit_count(&d, "parked") < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "the resent transfer was not de-identified again\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let t = d.transfer_when("the resent transfer to settle", settled);
    assert_eq!(t["state"], "parked", "{t}");
    assert_eq!(t["sent"], 0, "{t}");
    // Logged just after the state is recorded: wait for the line.
    d.wait_for(
        "the parked transfer in the log",
        Duration::from_secs(30),
        || d.log().contains("transfer parked"),
    );
    let log = d.log();
    for secret in [&spec.patient_id, &spec.patient_name, &spec.accession] {
        assert!(!log.contains(secret.as_str()), "the log holds patient data");
    }
}
