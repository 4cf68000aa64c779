//! Scenarios: who may open an association, how many at once, and how long a silent peer may
//! hold one.

use fiona_tests::fiona_bin;
use std::time::Duration;

use fiona_tests::harness::{echoscu, Daemon, Options};
use fiona_tests::scu::{RawScu, CT_IMAGE_STORAGE, EXPLICIT_VR_LE};

fn start(tmp: &std::path::Path, name: &str, extra: &str) -> Daemon {
    Daemon::start(
        &fiona_bin!(),
        &tmp.join(name),
        &Options {
            extra_toml: extra.into(),
            ..Options::default()
        },
    )
}

fn ok(o: &std::process::Output) -> bool {
    o.status.success()
}

#[test]
fn called_ae_title_must_match() {
    let tmp = tempfile::tempdir().unwrap();
    let d = start(tmp.path(), "d", "");
    assert!(ok(&echoscu(d.addr, "ANY", "FIONA")));
    let wrong = echoscu(d.addr, "ANY", "NOTFIONA");
    assert!(!ok(&wrong));
    let err = String::from_utf8_lossy(&wrong.stderr);
    assert!(err.contains("Called AE Title Not Recognized"), "{err}");
}

#[test]
fn calling_ae_allow_list() {
    let tmp = tempfile::tempdir().unwrap();
    let d = start(
        tmp.path(),
        "d",
        "[allow]\ncalling_ae_titles = [\"GOODSCU\"]\n",
    );
    assert!(ok(&echoscu(d.addr, "GOODSCU", "FIONA")));
    let bad = echoscu(d.addr, "BADSCU", "FIONA");
    assert!(!ok(&bad));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("Calling AE Title Not Recognized"), "{err}");
    let status = d.json(&["status"]);
    assert_eq!(status["associations_refused"], 1);
}

#[test]
fn address_allow_list() {
    let tmp = tempfile::tempdir().unwrap();
    let refused = start(tmp.path(), "a", "[allow]\naddresses = [\"10.0.0.0/8\"]\n");
    let out = echoscu(refused.addr, "ANY", "FIONA");
    assert!(!ok(&out), "127.0.0.1 is outside 10.0.0.0/8");
    // Closed at once, before any byte is read: no association, not even a rejection.
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("Association Accepted"), "{err}");
    assert!(
        refused
            .log()
            .contains("connection closed: address not on the allow-list"),
        "{}",
        refused.log()
    );
    assert_eq!(refused.json(&["status"])["associations_refused"], 1);
    let allowed = start(
        tmp.path(),
        "b",
        "[allow]\naddresses = [\"10.0.0.0/8\", \"127.0.0.0/8\"]\n",
    );
    assert!(ok(&echoscu(allowed.addr, "ANY", "FIONA")));
}

#[test]
fn association_limit_refuses_with_local_limit_exceeded() {
    let tmp = tempfile::tempdir().unwrap();
    let d = start(tmp.path(), "d", "max_associations = 1\n");
    let held =
        RawScu::connect(d.addr, "HOLDER", "FIONA", CT_IMAGE_STORAGE, EXPLICIT_VR_LE).unwrap();
    let refused = echoscu(d.addr, "SECOND", "FIONA");
    assert!(!ok(&refused));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("Association Rejected"), "{err}");
    assert!(err.to_lowercase().contains("local limit exceeded"), "{err}");
    held.release().unwrap();
    // The slot is free again (the daemon notices the release asynchronously).
    let mut freed = false;
    for _ in 0..50 {
        if ok(&echoscu(d.addr, "THIRD", "FIONA")) {
            freed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(freed, "slot released after the first association ended");
}

#[test]
fn silent_peer_is_dropped_after_idle_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let d = start(
        tmp.path(),
        "d",
        "idle_timeout_secs = 1\nmax_associations = 1\n",
    );
    let mut scu =
        RawScu::connect(d.addr, "SILENT", "FIONA", CT_IMAGE_STORAGE, EXPLICIT_VR_LE).unwrap();
    assert_eq!(scu.echo().unwrap(), 0, "alive before going silent");
    // Wait for the event (the daemon ends the association), not for a time.
    d.wait_for("the idle timeout", Duration::from_secs(30), || {
        d.log().contains("idle timeout")
    });
    // The daemon closed the association: the slot is free for someone else.
    assert!(ok(&echoscu(d.addr, "NEXT", "FIONA")), "{}", d.log());
    assert!(scu.echo().is_err(), "the silent association was closed");
}

#[test]
fn peer_that_never_associates_is_dropped_after_acse_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let d = start(
        tmp.path(),
        "d",
        "acse_timeout_secs = 1\nmax_associations = 1\n",
    );
    let mut silent = std::net::TcpStream::connect(d.addr).unwrap();
    // A silent connection holds no association slot (issue 14): another peer associates
    // at once, while it waits.
    assert!(ok(&echoscu(d.addr, "NEXT", "FIONA")), "{}", d.log());
    // The daemon closes it once acse_timeout_secs pass: its read ends (EOF), and the log
    // says why.
    silent
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut b = [0u8; 16];
    let n = std::io::Read::read(&mut silent, &mut b);
    assert!(
        matches!(n, Ok(0) | Err(_))
            && !matches!(&n, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "{n:?}"
    );
    d.wait_for(
        "the ARTIM refusal in the log",
        Duration::from_secs(30),
        || {
            d.log()
                .contains("no association request within acse_timeout_secs")
        },
    );
}
