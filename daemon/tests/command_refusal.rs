//! Scenario: a raw SCU sends C-STOREs whose command cannot be acted on (the Affected SOP
//! Instance UID is not a UID, or too long; `pydicom-data`'s `bad_sequence.dcm` is such a
//! file). Each gets a failure status and leaves a trace like any other refused instance: the
//! rejected-instance counters of `fiona status`, a record in `fiona rejected` whose reason
//! names the element but not the value, the bytes received in the rejected area, and a WARN
//! line in the log without the value. The association stays usable.

use fiona_tests::fiona_bin;

use fiona_tests::harness::{Daemon, Options};
use fiona_tests::scu::{minimal_ct, RawScu, CT_IMAGE_STORAGE, EXPLICIT_VR_LE};

const STUDY: &str = "2.25.78001";
const SERIES: &str = "2.25.78001.1";
/// Not a UID: letters.
const NOT_A_UID: &str = "1.2.3.abc";

#[test]
fn a_c_store_refused_at_the_command_is_counted_logged_and_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&fiona_bin!(), &tmp.path().join("data"), &Options::default());
    let mut scu = RawScu::connect(
        daemon.addr,
        "BADCMD",
        "FIONA",
        CT_IMAGE_STORAGE,
        EXPLICIT_VR_LE,
    )
    .expect("associate");

    let too_long = format!("2.25.{}", "7".repeat(70));
    let bad = minimal_ct(STUDY, SERIES, NOT_A_UID);
    let long = minimal_ct(STUDY, SERIES, &too_long);
    let st = scu.store_raw(CT_IMAGE_STORAGE, NOT_A_UID, &bad).unwrap();
    assert_eq!(st, 0xA900, "not a UID: status {st:#06x}");
    let st = scu.store_raw(CT_IMAGE_STORAGE, &too_long, &long).unwrap();
    assert_eq!(st, 0xA900, "too long: status {st:#06x}");
    // The association goes on.
    let good = minimal_ct(STUDY, SERIES, "2.25.78001.1.1");
    let st = scu
        .store_raw(CT_IMAGE_STORAGE, "2.25.78001.1.1", &good)
        .unwrap();
    assert_eq!(st, 0x0000);
    scu.release().unwrap();

    // Counted like other refusals.
    let status = daemon.json(&["status"]);
    assert_eq!(status["instances_rejected_since_start"], 2, "{status}");
    assert_eq!(status["totals"]["rejected"], 2, "{status}");
    assert_eq!(status["totals"]["instances"], 1, "{status}");

    // Visible to the admin, the reason naming the element and the problem, never the value;
    // the bytes received kept in the rejected area.
    let rejected = daemon.json(&["rejected"]);
    let rejected = rejected.as_array().unwrap();
    assert_eq!(rejected.len(), 2, "{rejected:?}");
    let mut reasons = Vec::new();
    for r in rejected {
        let reason = r["reason"].as_str().unwrap().to_string();
        assert!(reason.contains("(0000,1000)"), "{reason}");
        assert!(
            !reason.contains("abc") && !reason.contains("7777"),
            "{reason}"
        );
        assert_eq!(r["status"], 0xA900);
        assert_eq!(r["origin"]["calling_ae"], "BADCMD");
        let file = daemon.data_dir.join(r["file"].as_str().unwrap());
        let (_, ds) = fiona_tests::corpus::dataset_bytes(&file).unwrap();
        assert!(
            ds == bad || ds == long,
            "the rejected file holds the data set sent"
        );
        reasons.push(reason);
    }
    assert!(
        reasons.iter().any(|r| r.contains("not a UID")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("characters long")),
        "{reasons:?}"
    );
    let text = String::from_utf8_lossy(&daemon.cli(&["rejected"]).stdout).to_string();
    assert!(
        text.contains("0xa900") && text.contains("(0000,1000)"),
        "{text}"
    );

    // Logged at WARN with the reason, without the value.
    let log = daemon.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("instance rejected"))
        .collect();
    assert_eq!(lines.len(), 2, "{log}");
    assert!(
        lines
            .iter()
            .all(|l| l.contains("WARN") && l.contains("(0000,1000)")),
        "{log}"
    );
    assert!(
        !log.contains(NOT_A_UID) && !log.contains(&too_long),
        "no value in the log"
    );
    assert!(
        !log.contains("Testperson") && !log.contains(STUDY),
        "no patient data in the log"
    );
}
