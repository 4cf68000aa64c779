//! Tolerate what the ecosystem tolerates: a Deflated Explicit VR Little Endian data set with
//! stray bytes after the end of its deflate stream (pydicom's `image_dfl.dcm` has 8; pydicom,
//! DCMTK and Orthanc read it). Made here with DCMTK `dcmconv +td` and 8 bytes appended: a raw
//! SCU stores its data set as sent (0x0000, the stray bytes noted in the log by count), and
//! `fiona deid` de-identifies the file. Both judge with the same `header::Checker`.

use fiona_tests::fiona_bin;
use std::process::Command;

use fiona_tests::corpus::{self, Modality, StudySpec, TS_DEFLATED_EXPLICIT_VR_LE};
use fiona_tests::harness::{fiona_deid, require_tool, Daemon, Options};
use fiona_tests::scu::{RawScu, CT_IMAGE_STORAGE};

#[test]
fn stray_bytes_after_a_deflate_stream_are_accepted_and_noted() {
    require_tool("dcmconv");
    let tmp = tempfile::tempdir().unwrap();
    let mut spec = StudySpec::new(911, Modality::Ct);
    spec.series = 1;
    spec.instances_per_series = 1;
    spec.rows = 16;
    spec.cols = 16;
    let dir = tmp.path().join("in");
    std::fs::create_dir_all(&dir).unwrap();
    let plain = corpus::write_study(&spec, &dir).unwrap().remove(0);
    let stray = tmp.path().join("stray.dcm");
    let st = Command::new("dcmconv")
        .arg("+td")
        .arg(&plain)
        .arg(&stray)
        .status()
        .unwrap();
    assert!(st.success());
    let mut bytes = std::fs::read(&stray).unwrap();
    bytes.extend_from_slice(&[0x20, 0x00, 0x10, 0x00, 0xAB, 0xCD, 0x00, 0x01]);
    std::fs::write(&stray, &bytes).unwrap();
    let (ts, ds) = corpus::dataset_bytes(&stray).unwrap();
    assert_eq!(ts, TS_DEFLATED_EXPLICIT_VR_LE);

    // `fiona deid` accepts the file.
    let out = fiona_deid(
        &fiona_bin!(),
        ("--data-dir", &tmp.path().join("deid-data")),
        &stray,
        &tmp.path().join("out.dcm"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(tmp.path().join("out.dcm").is_file());

    // Receiving accepts the data set as sent, stray bytes included, and notes them.
    let d = Daemon::start(&fiona_bin!(), &tmp.path().join("data"), &Options::default());
    let mut scu = RawScu::connect(
        d.addr,
        "DFLSCU",
        "FIONA",
        CT_IMAGE_STORAGE,
        TS_DEFLATED_EXPLICIT_VR_LE,
    )
    .expect("associate");
    let sop = corpus::sop_instance_uid(&stray).unwrap();
    let st = scu.store_raw(CT_IMAGE_STORAGE, &sop, &ds).unwrap();
    assert_eq!(st, 0x0000, "status {st:#06x}\n{}", d.log());
    scu.release().unwrap();
    let status = d.json(&["status"]);
    assert_eq!(status["totals"]["instances"], 1, "{status}");
    assert_eq!(status["totals"]["rejected"], 0, "{status}");
    let log = d.log();
    let note: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("stray bytes after the deflated data set ignored"))
        .collect();
    assert_eq!(note.len(), 1, "{log}");
    assert!(uncoloured(note[0]).contains("bytes=8"), "{log}");
    assert!(!log.contains(&sop), "no UID in the log");
}

/// A log line without its terminal colour codes.
fn uncoloured(line: &str) -> String {
    let mut out = String::new();
    let mut esc = false;
    for c in line.chars() {
        match (esc, c) {
            (false, '\u{1b}') => esc = true,
            (true, 'm') => esc = false,
            (true, _) => {}
            (false, c) => out.push(c),
        }
    }
    out
}
