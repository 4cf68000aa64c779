//! Scenario: a raw SCU sends malformed data sets on one association. Each gets a failure
//! status, its bytes land in the rejected area with a reason, and the same association then
//! stores a valid instance.

use fiona_tests::fiona_bin;

use fiona_tests::harness::{stored_files, Daemon, Options};
use fiona_tests::scu::{ele, minimal_ct, RawScu, CT_IMAGE_STORAGE, EXPLICIT_VR_LE};

const STUDY: &str = "2.25.77001";
const SERIES: &str = "2.25.77001.1";

#[test]
fn malformed_data_sets_are_rejected_and_association_stays_usable() {
    let tmp = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&fiona_bin!(), &tmp.path().join("data"), &Options::default());
    let mut scu = RawScu::connect(
        daemon.addr,
        "BADSCU",
        "FIONA",
        CT_IMAGE_STORAGE,
        EXPLICIT_VR_LE,
    )
    .expect("associate");

    let good = minimal_ct(STUDY, SERIES, "2.25.77001.1.1");

    // 1. Declared length larger than what was sent (truncated value).
    let mut truncated = good.clone();
    truncated.truncate(good.len() - 10);
    // 2. A small input declaring a huge element length.
    let mut huge = ele(0x0008, 0x0018, b"UI", b"2.25.77001.1.2");
    huge.extend_from_slice(&[0x10, 0x00, 0x10, 0x00, b'U', b'T', 0, 0]);
    huge.extend_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
    huge.extend_from_slice(b"short");
    // 3. Garbage.
    let garbage: Vec<u8> = (0..997u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    // 4. A sequence of undefined length that is never closed.
    let mut unclosed = minimal_ct(STUDY, SERIES, "2.25.77001.1.4");
    unclosed.extend_from_slice(&[
        0x08, 0x00, 0x15, 0x11, b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
    ]);
    unclosed.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
    // 5. No Study Instance UID.
    let mut no_study = Vec::new();
    no_study.extend(ele(0x0008, 0x0016, b"UI", CT_IMAGE_STORAGE.as_bytes()));
    no_study.extend(ele(0x0008, 0x0018, b"UI", b"2.25.77001.1.5"));
    no_study.extend(ele(0x0020, 0x000E, b"UI", SERIES.as_bytes()));
    // 6. Data set says a different SOP Instance UID than the command.
    let mismatch = minimal_ct(STUDY, SERIES, "2.25.77001.1.999");
    // 7. Empty data set.
    let empty: Vec<u8> = Vec::new();

    let cases: Vec<(&str, &str, &[u8], u16)> = vec![
        ("truncated", "2.25.77001.1.1", &truncated, 0xC000),
        ("huge length", "2.25.77001.1.2", &huge, 0xC000),
        ("garbage", "2.25.77001.1.3", &garbage, 0xC000),
        ("unclosed sequence", "2.25.77001.1.4", &unclosed, 0xC000),
        ("no study uid", "2.25.77001.1.5", &no_study, 0xC000),
        ("uid mismatch", "2.25.77001.1.6", &mismatch, 0xA900),
        ("empty", "2.25.77001.1.7", &empty, 0xC000),
    ];
    for (what, uid, data, expect) in &cases {
        let st = scu
            .store_raw(CT_IMAGE_STORAGE, uid, data)
            .unwrap_or_else(|e| panic!("{what}: association broke: {e}\n{}", daemon.log()));
        assert_eq!(st, *expect, "{what}: status {st:#06x}");
    }
    // The same association stores a valid instance afterwards.
    let st = scu
        .store_raw(CT_IMAGE_STORAGE, "2.25.77001.1.1", &good)
        .unwrap();
    assert_eq!(st, 0x0000, "valid instance after bad ones");
    scu.release().unwrap();

    // Rejected area: one file per bad instance holding exactly what was sent, with a reason.
    let rejected = daemon.json(&["rejected"]);
    let rejected = rejected.as_array().unwrap();
    assert_eq!(rejected.len(), cases.len());
    let mut sent_lengths: Vec<u64> = cases.iter().map(|c| c.2.len() as u64).collect();
    let mut got_lengths = Vec::new();
    for r in rejected {
        assert!(!r["reason"].as_str().unwrap().is_empty());
        assert_eq!(r["origin"]["calling_ae"], "BADSCU");
        let file = daemon.data_dir.join(r["file"].as_str().unwrap());
        let bytes = std::fs::read(&file).unwrap();
        let (_, ds) = fiona_tests::corpus::dataset_bytes(&file).unwrap();
        assert_eq!(
            ds.len() as u64,
            r["bytes"].as_u64().unwrap() - (bytes.len() - ds.len()) as u64
        );
        got_lengths.push(ds.len() as u64);
        // the reason never quotes a value from the data set
        assert!(!r["reason"].as_str().unwrap().contains("Testperson"));
    }
    sent_lengths.sort();
    got_lengths.sort();
    assert_eq!(
        sent_lengths, got_lengths,
        "rejected files hold the bytes sent"
    );
    let reasons: Vec<&str> = rejected
        .iter()
        .map(|r| r["reason"].as_str().unwrap())
        .collect();
    assert!(
        reasons.iter().any(|r| r.contains("StudyInstanceUID")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("differs from the command")),
        "{reasons:?}"
    );

    // Only the good instance is in the quarantine.
    let status = daemon.json(&["status"]);
    assert_eq!(status["totals"]["instances"], 1);
    assert_eq!(status["totals"]["rejected"], cases.len() as u64);
    assert_eq!(stored_files(&daemon.data_dir).len(), 1);

    // The log never carries the patient name of the data sets.
    assert!(!daemon.log().contains("Testperson"));
    assert!(!daemon.log().contains("2.25.77001"), "no UIDs in the log");
}
