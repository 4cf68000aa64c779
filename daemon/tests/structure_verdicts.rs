//! Issue 12 item 7: `fiona deid` on a file and the receive path judge a data set's structure
//! the same way. Each case is sent by a raw SCU (Explicit VR Little Endian, exactly these
//! bytes) and written as a Part-10 file for `fiona deid`; the two verdicts (stored or refused,
//! output or error) must agree, and each must be the one expected: values of odd length are
//! a deviation the ecosystem reads (DCMTK and pydicom do) and bound nothing, so both accept
//! them; a value, item or sequence that does not fit where it is declared is refused by both.

use fiona_tests::fiona_bin;
use std::path::Path;

use fiona_tests::harness::{fiona_deid, require_tool, Daemon, Options};
use fiona_tests::scu::{RawScu, CT_IMAGE_STORAGE, EXPLICIT_VR_LE};

/// An element's tag (for ordering) and its encoded bytes.
type Element = (u32, Vec<u8>);

const LONG_VRS: [&[u8; 2]; 6] = [b"OB", b"OW", b"SQ", b"UN", b"UT", b"UC"];

/// One explicit VR LE element exactly as given: no padding, the length as `len` says (the
/// value's length when None).
fn raw(group: u16, element: u16, vr: &[u8; 2], value: &[u8], len: Option<u32>) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&group.to_le_bytes());
    out.extend_from_slice(&element.to_le_bytes());
    out.extend_from_slice(vr);
    let n = len.unwrap_or(value.len() as u32);
    if LONG_VRS.contains(&vr) {
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&n.to_le_bytes());
    } else {
        out.extend_from_slice(&(n as u16).to_le_bytes());
    }
    out.extend_from_slice(value);
    out
}

/// A UID value padded to even length.
fn even(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    if v.len() % 2 == 1 {
        v.push(0);
    }
    v
}

/// An item of defined length holding `content`.
fn item(content: &[u8]) -> Vec<u8> {
    let mut out = vec![0xFE, 0xFF, 0x00, 0xE0];
    out.extend_from_slice(&(content.len() as u32).to_le_bytes());
    out.extend_from_slice(content);
    out
}

/// A CT data set with `sop`, plus `extra` elements (tag, bytes), in tag order.
fn data_set(sop: &str, extra: Vec<(u32, Vec<u8>)>) -> Vec<u8> {
    let mut els: Vec<(u32, Vec<u8>)> = vec![
        (
            0x0008_0016,
            raw(0x0008, 0x0016, b"UI", &even(CT_IMAGE_STORAGE), None),
        ),
        (0x0008_0018, raw(0x0008, 0x0018, b"UI", &even(sop), None)),
        (0x0008_0060, raw(0x0008, 0x0060, b"CS", b"CT", None)),
        (
            0x0010_0010,
            raw(0x0010, 0x0010, b"PN", b"Testperson^Odd", None),
        ),
        (
            0x0010_0020,
            raw(0x0010, 0x0020, b"LO", b"FIONATEST-ODD", None),
        ),
        (0x0020_000D, raw(0x0020, 0x000D, b"UI", b"2.25.79001", None)),
        (
            0x0020_000E,
            raw(0x0020, 0x000E, b"UI", b"2.25.79001.1", None),
        ),
    ];
    els.extend(extra);
    els.sort_by_key(|(t, _)| *t);
    els.into_iter().flat_map(|(_, b)| b).collect()
}

/// `ds` as a Part-10 file (explicit VR LE).
fn part10(path: &Path, sop: &str, ds: &[u8]) {
    fiona_tests::scu::write_part10(path, CT_IMAGE_STORAGE, sop, EXPLICIT_VR_LE, ds);
}

#[test]
fn deid_and_receive_judge_structure_alike() {
    let sq = |content: Vec<u8>, len: Option<u32>| raw(0x0008, 0x1140, b"SQ", &content, len);
    let odd_in_item = item(&raw(
        0x0008,
        0x1150,
        b"UI",
        b"1.2.840.10008.5.1.4.1.1.2",
        None,
    ));
    // (name, extra elements, accepted?)
    let cases: Vec<(&str, Vec<Element>, bool)> = vec![
        ("valid", vec![], true),
        (
            "odd-length text value",
            vec![(0x0008_1030, raw(0x0008, 0x1030, b"LO", b"Odd", None))],
            true,
        ),
        (
            "odd-length UI value",
            vec![(0x0020_0052, raw(0x0020, 0x0052, b"UI", b"1.2.3", None))],
            true,
        ),
        (
            "odd-length value in a sequence item",
            vec![(0x0008_1140, sq(odd_in_item.clone(), None))],
            true,
        ),
        (
            "odd-length private OB value",
            vec![
                (0x0009_0010, raw(0x0009, 0x0010, b"LO", b"ACME", None)),
                (0x0009_1001, raw(0x0009, 0x1001, b"OB", &[1, 2, 3], None)),
            ],
            true,
        ),
        (
            "odd-length pixel data",
            vec![
                (
                    0x0028_0010,
                    raw(0x0028, 0x0010, b"US", &4u16.to_le_bytes(), None),
                ),
                (0x7FE0_0010, raw(0x7FE0, 0x0010, b"OB", &[7u8; 33], None)),
            ],
            true,
        ),
        (
            "odd-length pixel data, then trailing padding (read whole)",
            vec![
                (
                    0x0028_0010,
                    raw(0x0028, 0x0010, b"US", &4u16.to_le_bytes(), None),
                ),
                (0x7FE0_0010, raw(0x7FE0, 0x0010, b"OB", &[7u8; 33], None)),
                (0xFFFC_FFFC, raw(0xFFFC, 0xFFFC, b"OB", &[0u8; 4], None)),
            ],
            true,
        ),
        (
            "item longer than its sequence",
            vec![(
                0x0008_1140,
                sq(odd_in_item.clone(), Some(odd_in_item.len() as u32 - 4)),
            )],
            false,
        ),
        (
            "value longer than the data set",
            vec![(0x0008_1030, raw(0x0008, 0x1030, b"LO", b"Short", Some(501)))],
            false,
        ),
        (
            "sequence never closed",
            vec![(
                0x0008_1140,
                raw(0x0008, 0x1140, b"SQ", &odd_in_item, Some(0xFFFF_FFFF)),
            )],
            false,
        ),
    ];

    require_tool("dcmdump");
    let tmp = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&fiona_bin!(), &tmp.path().join("data"), &Options::default());
    let mut scu = RawScu::connect(
        daemon.addr,
        "ODDSCU",
        "FIONA",
        CT_IMAGE_STORAGE,
        EXPLICIT_VR_LE,
    )
    .expect("associate");
    let mut verdicts = Vec::new();
    for (i, (name, extra, accept)) in cases.into_iter().enumerate() {
        let sop = format!("2.25.79001.1.{}", i + 10);
        let ds = data_set(&sop, extra);
        let status = scu
            .store_raw(CT_IMAGE_STORAGE, &sop, &ds)
            .unwrap_or_else(|e| panic!("{name}: association broke: {e}\n{}", daemon.log()));
        let file = tmp.path().join(format!("case{i}.dcm"));
        part10(&file, &sop, &ds);
        let out_file = tmp.path().join(format!("out{i}.dcm"));
        let out = fiona_deid(
            &fiona_bin!(),
            ("--data-dir", &tmp.path().join("deid-data")),
            &file,
            &out_file,
        );
        let received = status == 0x0000;
        let deidentified = out.status.success() && out_file.is_file();
        if deidentified {
            // What fiona writes has values of even length (PS3.5 7.1.1): dcmdump reads it
            // without a warning.
            let dump = std::process::Command::new("dcmdump")
                .arg(&out_file)
                .output()
                .expect("dcmdump");
            let err = String::from_utf8_lossy(&dump.stderr);
            assert!(
                dump.status.success() && err.trim().is_empty(),
                "{name}: {err}"
            );
        }
        verdicts.push((name, received, deidentified, accept));
        println!(
            "{name}: receive {status:#06x}, deid {} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    scu.release().unwrap();
    for (name, received, deidentified, accept) in &verdicts {
        assert_eq!(
            received, deidentified,
            "{name}: the two paths disagree: {verdicts:?}"
        );
        assert_eq!(received, accept, "{name}: unexpected verdict: {verdicts:?}");
    }
    // The log names no value of the refused data sets.
    assert!(!daemon.log().contains("Testperson"));
}
