//! Issue 14, item 6: association slots. While a refused address floods connections, another
//! address holds silent sockets, a third trickles its association requests byte by byte, and
//! a peer keeps an association alive with one C-ECHO a second, a legitimate `storescu` still
//! stores, more than once. Refused and over-budget connections are closed at once, the
//! echo-only association is aborted once `association_idle_secs` pass without a store, and
//! the refusals are counted and logged throttled (a flood writes a few lines, not one each).
//!
//! Peers use distinct loopback source addresses (127.0.0.2 and up), as distinct hosts would.

use fiona_tests::fiona_bin;
use std::net::SocketAddr;
use std::time::Duration;

use fiona_tests::corpus::{self, Modality, StudySpec};
use fiona_tests::harness::{storescu_responses, storescu_verbose, Daemon, Options};
use fiona_tests::scu::{RawScu, CT_IMAGE_STORAGE, EXPLICIT_VR_LE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

async fn connect_from(source: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpSocket::new_v4()?;
    s.bind(format!("{source}:0").parse().unwrap())?;
    s.connect(to).await
}

/// Whether the daemon closes this connection (EOF or reset) within `within`.
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let mut b = [0u8; 64];
    matches!(
        tokio::time::timeout(within, s.read(&mut b)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

/// An A-ASSOCIATE-RQ header and fixed part: enough bytes to trickle forever.
fn rq_start() -> Vec<u8> {
    let mut v = vec![0x01, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00];
    v.extend_from_slice(b"FIONA           TRICKLE         ");
    v.extend_from_slice(&[0u8; 32]);
    v
}

#[test]
fn a_sender_gets_through_while_others_hold_connections() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("corpus");
    std::fs::create_dir_all(&src).unwrap();
    let mut spec = StudySpec::new(1406, Modality::Mr);
    spec.rows = 32;
    spec.cols = 32;
    spec.series = 1;
    spec.instances_per_series = 5;
    let files = corpus::write_study(&spec, &src).unwrap();
    let d = Daemon::start(
        &fiona_bin!(),
        &tmp.path().join("data"),
        &Options {
            extra_toml: "max_associations = 4\nmax_unassociated = 8\n\
                         max_connections_per_address = 4\nassociation_idle_secs = 3\n\
                         [allow]\naddresses = [\"127.0.0.1/32\", \"127.0.0.2/32\", \"127.0.0.4/32\"]\n"
                .into(),
            ..Options::default()
        },
    );
    let addr = d.addr;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    // A refused address: every connection is closed at once, nothing read from it.
    let refused_closed = rt.block_on(async {
        let mut n = 0;
        for _ in 0..20 {
            let mut s = connect_from("127.0.0.3", addr).await.unwrap();
            let _ = s.write_all(&rq_start()).await;
            if closed_within(&mut s, Duration::from_secs(2)).await {
                n += 1;
            }
        }
        n
    });
    assert_eq!(refused_closed, 20, "{}", d.log());

    // Silent sockets from one address: its share waits, the rest is closed at once.
    let (silent, silent_closed) = rt.block_on(async {
        let mut held = Vec::new();
        let mut closed = 0;
        for _ in 0..20 {
            let mut s = connect_from("127.0.0.2", addr).await.unwrap();
            if closed_within(&mut s, Duration::from_millis(300)).await {
                closed += 1;
            } else {
                held.push(s);
            }
        }
        (held, closed)
    });
    assert!(silent_closed >= 18, "{silent_closed} of 20 closed");

    // Trickling requests from another address: one byte every 200 ms, for as long as the
    // daemon lets them.
    let trickle = rt.spawn(async move {
        let mut socks = Vec::new();
        for _ in 0..6 {
            if let Ok(s) = connect_from("127.0.0.4", addr).await {
                socks.push(s);
            }
        }
        let rq = rq_start();
        for b in rq.iter().cycle().take(200) {
            for s in &mut socks {
                let _ = s.write_all(&[*b]).await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        socks.len()
    });

    // A peer that only echoes, once a second: aborted after association_idle_secs.
    let mut holder =
        RawScu::connect(addr, "ECHOER", "FIONA", CT_IMAGE_STORAGE, EXPLICIT_VR_LE).unwrap();
    let echoer = std::thread::spawn(move || {
        for i in 0..30 {
            if holder.echo().is_err() {
                return Some(i);
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        None
    });

    // Meanwhile the legitimate sender stores, three times.
    for round in 0..3 {
        let log = storescu_verbose(addr, "GOODSCU", &["-nh", "-R", "-xe"], &files);
        let r = storescu_responses(&log);
        assert_eq!(r.len(), files.len(), "round {round}: {log}\n{}", d.log());
        assert!(
            r.iter().all(|(_, l)| l.contains("(Success)")),
            "round {round}: {log}"
        );
    }
    let echoes = echoer.join().unwrap();
    assert!(
        matches!(echoes, Some(n) if (2..=8).contains(&n)),
        "echo-only association ended after {echoes:?} echoes"
    );
    // The daemon logs why it ended the echo-only association just after aborting it: wait for
    // the line (the echoer may see the abort first).
    d.wait_for("the idle abort in the log", Duration::from_secs(30), || {
        d.log().contains("nothing stored for association_idle_secs")
    });
    let log = d.log();
    drop(silent);
    trickle.abort();

    let status = d.json(&["status"]);
    assert!(
        status["associations_refused"].as_u64().unwrap() >= 38,
        "{status:#}"
    );
    assert_eq!(status["totals"]["instances"], files.len() as u64);
    // Throttled: 40 refusals in a few seconds are a handful of lines.
    let lines = log
        .lines()
        .filter(|l| l.contains("connection closed: "))
        .count();
    assert!((1..=6).contains(&lines), "{lines} refusal lines:\n{log}");
}

/// A request whose every byte has arrived but that proposes no presentation context is
/// refused (A-ASSOCIATE-RJ), not accepted.
#[test]
fn a_request_without_presentation_contexts_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(&fiona_bin!(), &tmp.path().join("data"), &Options::default());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let answer = rt.block_on(async {
        let mut s = connect_from("127.0.0.1", d.addr).await.unwrap();
        // Fixed part, then only the application context item (no 0x20 item).
        let ctx = b"1.2.840.10008.3.1.1.1";
        let mut body = vec![0x00, 0x01, 0x00, 0x00];
        body.extend_from_slice(b"FIONA           NOCONTEXT       ");
        body.extend_from_slice(&[0u8; 32]);
        body.extend_from_slice(&[0x10, 0x00, 0x00, ctx.len() as u8]);
        body.extend_from_slice(ctx);
        let mut pdu = vec![0x01, 0x00];
        pdu.extend_from_slice(&(body.len() as u32).to_be_bytes());
        pdu.extend(body);
        s.write_all(&pdu).await.unwrap();
        let mut head = [0u8; 10];
        tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut head))
            .await
            .expect("an answer")
            .expect("read");
        head
    });
    assert_eq!(answer[0], 0x03, "A-ASSOCIATE-RJ, not {:#04x}", answer[0]);
    assert_eq!(answer[7], 1, "permanent");
    d.wait_for("the refusal in the log", Duration::from_secs(30), || {
        d.log().contains("no presentation context proposed")
    });
}

/// With ARTIM at 120 s, send `bytes` (then close the write side when `close`): whether the
/// daemon closes the connection within 60 s; then wait for its log to say `logged` (the line
/// is written just after the close).
fn closed_well_before_artim(bytes: &[u8], close: bool, logged: &str) -> bool {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(
        &fiona_bin!(),
        &tmp.path().join("data"),
        &Options {
            extra_toml: "acse_timeout_secs = 120\n".into(),
            ..Options::default()
        },
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let closed = rt.block_on(async {
        let mut s = connect_from("127.0.0.1", d.addr).await.unwrap();
        s.write_all(bytes).await.unwrap();
        if close {
            s.shutdown().await.unwrap();
        }
        closed_within(&mut s, Duration::from_secs(60)).await
    });
    if closed {
        d.wait_for(logged, Duration::from_secs(30), || d.log().contains(logged));
    }
    closed
}

/// A peer that sends part of a request and then closes its side is closed at once, not
/// after `acse_timeout_secs` (its unassociated budget comes back).
#[test]
fn a_partial_request_then_close_is_closed_at_once() {
    let closed = closed_well_before_artim(
        &rq_start()[..20],
        true,
        "connection closed before an association was requested",
    );
    assert!(closed, "not closed within 60 s");
}

/// Regression (socket fuzz target): an A-ASSOCIATE-RQ whose header declares no body made the
/// wait for the whole request spin on one core until `acse_timeout_secs`. It is now handed to
/// negotiation at once, which refuses it.
#[test]
fn a_request_declaring_no_body_is_answered_at_once() {
    // Header only, length 0; the write side stays open.
    let closed = closed_well_before_artim(
        &[0x01, 0x00, 0, 0, 0, 0],
        false,
        "association not established",
    );
    assert!(closed, "not closed within 60 s");
}
