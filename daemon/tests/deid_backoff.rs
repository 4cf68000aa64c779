//! Issue 15: a de-identification pass that keeps failing (here: the outbound area cannot be
//! written, a regular file stands where its directory should be) is retried with backoff and
//! ends `failed` with its reason after `deid_max_attempts`, instead of being retried every
//! second forever. `fiona resend` would queue it again.

use fiona_tests::corpus::{self, Modality, StudySpec};
use fiona_tests::fiona_bin;
use fiona_tests::harness::{storescu, Daemon, Options};

const PROJECT: &str = "deid_max_attempts = 2\ndeid_retry_base_secs = 1\n\n[projects.PROJ1]\n\
    participant_pattern = \"PROJ1-[0-9]{4}\"\nevents = [\"baseline\"]\n\
    approval_start = \"2025-01-01\"\napproval_end = \"2099-12-31\"\n";

#[test]
fn a_failing_deidentification_backs_off_and_fails_with_its_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(
        &fiona_bin!(),
        &tmp.path().join("data"),
        &Options {
            extra_toml: PROJECT.into(),
            quiet_period_secs: 1,
            ..Options::default()
        },
    );
    // The outbound area cannot be written.
    let outbound = d.data_dir.join("outbound");
    let _ = std::fs::remove_dir_all(&outbound);
    std::fs::write(&outbound, b"not a directory").unwrap();

    let src = tmp.path().join("in");
    std::fs::create_dir_all(&src).unwrap();
    let spec = StudySpec {
        series: 1,
        instances_per_series: 1,
        rows: 16,
        cols: 16,
        ..StudySpec::new(1516, Modality::Ct)
    };
    let files = corpus::write_study(&spec, &src).unwrap();
    assert!(storescu(d.addr, "FIONA", &[], &files).status.success());
    d.assign(&spec.accession, "PROJ1", "PROJ1-1516", "baseline");
    let t = d.transfer_when("the transfer to fail", |t| t["state"] == "failed");
    assert_eq!(t["deid_attempts"], 2, "{t:#}");
    let reason = t["reason"].as_str().unwrap();
    assert!(
        reason.contains("de-identification failed 2 times"),
        "{reason}"
    );
    assert!(reason.contains("outbound"), "{reason}");
    let log = d.log();
    assert_eq!(
        log.matches("transfer not de-identified; retried later")
            .count(),
        1,
        "one retry, then failed\n{log}"
    );
    assert!(
        d.audit_has(|a| a["action"] == "failed" && a["transfer"] == t["id"]),
        "{:#}",
        d.json(&["audit"])
    );
}
