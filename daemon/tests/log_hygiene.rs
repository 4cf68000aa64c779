//! Issue 14, items 1 and 2 (and the colour codes of item 8): no bytes a peer sent reach the
//! log, at any level, and no log line is unbounded.
//!
//! - A connection whose first PDU is a P-DATA-TF carrying a data set (a known patient name,
//!   ID and study UID, 100 KB; and one over the maximum PDU length), and one with an unknown
//!   PDU type carrying the same bytes:
//!   fiona refuses both, and its log (at debug level) holds neither the name, nor the ID,
//!   nor the UID, nor any byte array, and no line over the bound; it names the PDU type and
//!   length.
//! - A bare TCP connect (a port check) is logged at INFO, not WARN.
//! - Calling and called AE titles with a newline, ESC and NUL: refused, logged escaped on
//!   one line; no forged line, no escape byte anywhere in the log.

use fiona_tests::fiona_bin;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use fiona_tests::harness::{Daemon, Options};
use fiona_tests::scu::{ele, RawScu, CT_IMAGE_STORAGE, EXPLICIT_VR_LE};

const NAME: &str = "HYGIENE^SECRETNAME";
const PATIENT_ID: &str = "ID4242424242";
const STUDY_UID: &str = "2.25.9191919191919191";
/// fiona's bound on a log line (`fiona::logging::MAX_LINE`).
const MAX_LINE: usize = fiona::logging::MAX_LINE;

fn start(tmp: &std::path::Path) -> Daemon {
    // Every level fiona and its libraries log at, not only the default.
    std::env::set_var("FIONA_TEST_LOG", "debug");
    Daemon::start(&fiona_bin!(), &tmp.join("data"), &Options::default())
}

/// A data set with the patient's identity and a large value, as a modality would send it.
fn data_set() -> Vec<u8> {
    let mut d = Vec::new();
    d.extend(ele(0x0010, 0x0010, b"PN", NAME.as_bytes()));
    d.extend(ele(0x0010, 0x0020, b"LO", PATIENT_ID.as_bytes()));
    d.extend(ele(0x0020, 0x000D, b"UI", STUDY_UID.as_bytes()));
    d.extend(ele(0x7FE0, 0x0010, b"OB", &vec![0x55; 100 * 1024]));
    d
}

/// A PDU of `pdu_type` whose body is one PDV item (context 1, last data fragment).
fn pdu(pdu_type: u8, data: &[u8]) -> Vec<u8> {
    let mut item = Vec::new();
    item.extend_from_slice(&(data.len() as u32 + 2).to_be_bytes());
    item.push(1);
    item.push(0x02);
    item.extend_from_slice(data);
    let mut out = vec![pdu_type, 0];
    out.extend_from_slice(&(item.len() as u32).to_be_bytes());
    out.extend(item);
    out
}

/// Send `bytes` as the first thing on a connection and read until fiona closes it.
fn send_first(addr: SocketAddr, bytes: &[u8]) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    // fiona may close while we still write: that is a refusal too.
    let _ = s.write_all(bytes);
    let mut sink = Vec::new();
    let _ = s.read_to_end(&mut sink);
}

/// The log once `pred` holds for it (lines are written by connection tasks that may finish
/// after the peer is gone).
fn log_when(d: &Daemon, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let start = Instant::now();
    loop {
        let log = d.log();
        if pred(&log) {
            return log;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "log never showed {what}:\n{}",
            &log[..log.len().min(20_000)]
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A run of `n` or more comma-separated decimal numbers: a byte array as `Debug` prints it.
fn has_byte_array(s: &str, n: usize) -> bool {
    let mut run = 0;
    for part in s.split(", ") {
        let digits = part.trim_start_matches('[');
        let digits = digits.trim_end_matches(']');
        if !digits.is_empty() && digits.len() <= 3 && digits.bytes().all(|b| b.is_ascii_digit()) {
            run += 1;
            if run >= n {
                return true;
            }
        } else {
            run = if digits.bytes().last().is_some_and(|b| b.is_ascii_digit()) {
                1
            } else {
                0
            };
        }
    }
    false
}

fn assert_clean(log: &str) {
    for secret in [NAME, "SECRETNAME", PATIENT_ID, STUDY_UID] {
        assert!(!log.contains(secret), "the log holds {secret:?}");
    }
    assert!(!has_byte_array(log, 8), "the log holds a byte array");
    for line in log.lines() {
        assert!(
            line.len() <= MAX_LINE,
            "a log line of {} bytes: {}...",
            line.len(),
            &line[..200]
        );
    }
    assert!(
        !log.bytes().any(|b| b == 0x1b || b == 0),
        "the log holds ESC or NUL bytes"
    );
}

#[test]
fn a_data_set_sent_before_association_leaves_nothing_of_itself_in_the_log() {
    assert!(has_byte_array("pdu: [4, 0, 0, 2, 16, 1, 2, 3, 9]", 8));
    assert!(!has_byte_array("stored=3 failed=0 bytes=1024", 8));
    let tmp = tempfile::tempdir().unwrap();
    let d = start(tmp.path());
    let body = data_set();
    for _ in 0..3 {
        send_first(d.addr, &pdu(0x04, &body));
    }
    send_first(d.addr, &pdu(0x42, &body));
    // Over the maximum PDU length (128 KiB): refused by its length alone.
    let mut big = body.clone();
    big.extend(ele(0x0009, 0x0010, b"OB", &vec![0x55; 40 * 1024]));
    send_first(d.addr, &pdu(0x04, &big));
    let log = log_when(&d, "the three kinds of refusal", |l| {
        l.matches("unexpected P-DATA-TF (1 values, ").count() >= 3
            && l.contains("PDU of type 0x42")
            && l.contains("over the maximum")
    });
    assert_clean(&log);
    // A bare TCP connect (a port check) is logged, but not as a warning (item 8).
    drop(TcpStream::connect(d.addr).expect("connect"));
    let log = log_when(&d, "the bare connect", |l| {
        l.contains("connection closed before an association was requested")
    });
    let line = log
        .lines()
        .find(|l| l.contains("connection closed before an association was requested"))
        .unwrap_or_default();
    assert!(line.contains(" INFO "), "{line}");
    // The refusals are counted, and fiona still answers.
    let status = d.json(&["status"]);
    assert!(
        status["associations_refused"].as_u64().unwrap_or(0) >= 6,
        "{status}"
    );
    let mut scu = RawScu::connect(d.addr, "GOODSCU", "FIONA", CT_IMAGE_STORAGE, EXPLICIT_VR_LE)
        .expect("a valid association after the refusals");
    assert_eq!(scu.echo(), Ok(0));
    scu.release().expect("release");
    assert_clean(&d.log());
}

#[test]
fn ae_titles_with_control_characters_are_refused_and_logged_escaped() {
    let tmp = tempfile::tempdir().unwrap();
    let d = start(tmp.path());
    let bad = [
        ("A\nFORGED LINE", "FIONA", "calling_ae=A\\x0aFORGED LINE"),
        ("B\x1b[31mRED", "FIONA", "calling_ae=B\\x1b[31mRED"),
        ("C\0NUL", "FIONA", "calling_ae=C\\x00NUL"),
        ("GOODSCU", "FIO\nNA", "called_ae=FIO\\x0aNA"),
    ];
    for (calling, called, _) in bad {
        let r = RawScu::connect(d.addr, calling, called, CT_IMAGE_STORAGE, EXPLICIT_VR_LE);
        assert!(r.is_err(), "{calling:?} -> {called:?} was accepted");
    }
    let log = log_when(&d, "the four refusals, escaped", |l| {
        bad.iter().all(|(_, _, shown)| l.contains(shown))
    });
    assert_clean(&log);
    // No line starts with what followed the newline.
    assert!(
        !log.lines()
            .any(|l| l.starts_with("FORGED") || l.starts_with("NA")),
        "a forged log line:\n{log}"
    );
    // A valid title still gets through.
    let mut scu = RawScu::connect(
        d.addr,
        "GOOD SCU-1",
        "FIONA",
        CT_IMAGE_STORAGE,
        EXPLICIT_VR_LE,
    )
    .expect("a valid title is accepted");
    assert_eq!(scu.echo(), Ok(0));
    scu.release().expect("release");
}
