//! The whole receive path over a socket: a real fiona node (the daemon's `serve::Daemon`, with
//! its index, quarantine and committer, in a temporary data directory) listens on 127.0.0.1;
//! each input is written to a new TCP connection as it is (PDU reader, association
//! negotiation, DIMSE command and data set, in whatever order and shape the bytes have), the
//! write side is closed, and what the node answers is read until it closes.
//!
//! Properties:
//! - nothing panics, in any thread (libFuzzer's panic hook aborts the process);
//! - the node closes the connection by itself once the input ends (no session hangs: bounded
//!   by [`SESSION_LIMIT`]);
//! - afterwards the node still accepts an association and answers C-ECHO with success (no
//!   slot, budget or index left broken by the input);
//! - it never answers more bytes than a bound (no amplification).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest a session may take after the input is written.
pub const SESSION_LIMIT: Duration = Duration::from_secs(10);
/// Most bytes the node may answer to one input.
pub const MAX_ANSWER: usize = 16 << 20;

struct Node {
    rt: tokio::runtime::Runtime,
    addr: SocketAddr,
    _dir: PathBuf,
}

fn node() -> &'static Node {
    static NODE: OnceLock<Node> = OnceLock::new();
    NODE.get_or_init(|| {
        // On tmpfs when there is one: every store and rejection fsyncs (file, directory,
        // index), which on a disk costs more than the rest of a session.
        let shm = PathBuf::from("/dev/shm");
        let base = if shm.is_dir() {
            shm
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("fiona-fuzz-socket-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut cfg = fiona::config::Config::default();
        cfg.ae_title = "FIONA".into();
        cfg.listen = "127.0.0.1:0".parse().expect("address");
        cfg.data_dir = dir.clone();
        cfg.min_free_bytes = 0;
        cfg.acse_timeout_secs = 2;
        cfg.idle_timeout_secs = 2;
        cfg.max_associations = 64;
        cfg.max_unassociated = 64;
        cfg.max_connections_per_address = 4096;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let daemon = fiona::serve::Daemon::open(cfg).expect("open the node");
        let stop = tokio_util::sync::CancellationToken::new();
        rt.spawn(async move {
            daemon.run(stop).await.expect("node runs");
        });
        let addr_file = dir.join("run").join("dicom.addr");
        let mut addr = None;
        for _ in 0..500 {
            if let Ok(s) = std::fs::read_to_string(&addr_file) {
                if let Ok(a) = s.trim().parse() {
                    addr = Some(a);
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Node {
            rt,
            addr: addr.expect("the node publishes its address"),
            _dir: dir,
        }
    })
}

/// Write `input`, close the write side, read the answer until the node closes. Returns the
/// bytes answered.
async fn session(addr: SocketAddr, input: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.expect("connect to the node");
    // The node may close early (a refused request): what it did not read is not an error.
    let (mut r, mut w) = s.split();
    let write = async {
        let _ = w.write_all(input).await;
        let _ = w.shutdown().await;
    };
    let read = async {
        let mut answer = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    answer.extend_from_slice(&buf[..n]);
                    assert!(answer.len() <= MAX_ANSWER, "answer over {MAX_ANSWER} bytes");
                }
            }
        }
        answer
    };
    let ((), answer) = tokio::time::timeout(SESSION_LIMIT, async { tokio::join!(write, read) })
        .await
        .expect("the node closes the connection once the input ends");
    answer
}

fn item(ty: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![ty, 0];
    v.extend_from_slice(&(body.len() as u16).to_be_bytes());
    v.extend_from_slice(body);
    v
}

/// A PDU of type `ty` with `body`.
pub fn pdu(ty: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![ty, 0];
    v.extend_from_slice(&(body.len() as u32).to_be_bytes());
    v.extend_from_slice(body);
    v
}

/// An A-ASSOCIATE-RQ from `FUZZSCU` to `FIONA` proposing `abstract_syntax` in implicit VR
/// LE as presentation context 1.
pub fn associate_rq(abstract_syntax: &str) -> Vec<u8> {
    let mut rq = vec![0, 1, 0, 0];
    rq.extend_from_slice(b"FIONA           ");
    rq.extend_from_slice(b"FUZZSCU         ");
    rq.extend_from_slice(&[0; 32]);
    rq.extend(item(0x10, b"1.2.840.10008.3.1.1.1"));
    let mut pc = vec![1, 0, 0, 0];
    pc.extend(item(0x30, abstract_syntax.as_bytes()));
    pc.extend(item(0x40, b"1.2.840.10008.1.2"));
    rq.extend(item(0x20, &pc));
    rq.extend(item(0x50, &item(0x51, &16384u32.to_be_bytes())));
    pdu(0x01, &rq)
}

/// An implicit VR LE element.
pub fn element(g: u16, e: u16, v: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&g.to_le_bytes());
    b.extend_from_slice(&e.to_le_bytes());
    b.extend_from_slice(&(v.len() as u32).to_le_bytes());
    b.extend_from_slice(v);
    b
}

/// A P-DATA-TF with one PDV on presentation context 1 (`header`: 0x03 last command
/// fragment, 0x02 last data fragment).
pub fn p_data(header: u8, data: &[u8]) -> Vec<u8> {
    let mut pdv = Vec::new();
    pdv.extend_from_slice(&((data.len() + 2) as u32).to_be_bytes());
    pdv.push(1);
    pdv.push(header);
    pdv.extend_from_slice(data);
    pdu(0x04, &pdv)
}

/// A command set: the group length, then `elements`.
pub fn command(elements: &[Vec<u8>]) -> Vec<u8> {
    let body: Vec<u8> = elements.concat();
    let mut c = element(0, 0x0000, &(body.len() as u32).to_le_bytes());
    c.extend(body);
    c
}

/// A-ASSOCIATE-RQ proposing Verification, P-DATA with a C-ECHO-RQ, A-RELEASE-RQ.
pub fn echo_session() -> Vec<u8> {
    let mut out = associate_rq("1.2.840.10008.1.1");
    out.extend(p_data(
        0x03,
        &command(&[
            element(0, 0x0002, b"1.2.840.10008.1.1\0"),
            element(0, 0x0100, &0x0030u16.to_le_bytes()),
            element(0, 0x0110, &1u16.to_le_bytes()),
            element(0, 0x0800, &0x0101u16.to_le_bytes()),
        ]),
    ));
    out.extend(pdu(0x05, &[0; 4]));
    out
}

/// A-ASSOCIATE-RQ for CT Image Storage, a C-STORE-RQ of `dataset` (implicit VR LE) for
/// `sop`, A-RELEASE-RQ.
pub fn store_session(sop: &str, dataset: &[u8]) -> Vec<u8> {
    const CT: &str = "1.2.840.10008.5.1.4.1.1.2";
    let even = |s: &str| {
        let mut v = s.as_bytes().to_vec();
        if v.len() % 2 == 1 {
            v.push(0);
        }
        v
    };
    let mut out = associate_rq(CT);
    out.extend(p_data(
        0x03,
        &command(&[
            element(0, 0x0002, &even(CT)),
            element(0, 0x0100, &0x0001u16.to_le_bytes()),
            element(0, 0x0110, &1u16.to_le_bytes()),
            element(0, 0x0700, &0u16.to_le_bytes()),
            element(0, 0x0800, &0x0000u16.to_le_bytes()),
            element(0, 0x1000, &even(sop)),
        ]),
    ));
    out.extend(p_data(0x02, dataset));
    out.extend(pdu(0x05, &[0; 4]));
    out
}

/// Whether an answer to [`echo_session`] (or [`store_session`]) is A-ASSOCIATE-AC, then a
/// response with status success, then A-RELEASE-RP.
pub fn echo_answer_ok(a: &[u8]) -> bool {
    let mut at = 0;
    let mut types = Vec::new();
    let mut status = None;
    while at + 6 <= a.len() {
        let len = u32::from_be_bytes([a[at + 2], a[at + 3], a[at + 4], a[at + 5]]) as usize;
        let body = &a[at + 6..(at + 6 + len).min(a.len())];
        if a[at] == 0x04 && body.len() > 6 {
            // Status (0000,0900) US in the command: the 2 bytes after its 8-byte header.
            let cmd = &body[6..];
            status = cmd
                .windows(8)
                .position(|w| w[..4] == [0, 0, 0, 9] && w[4..] == [2, 0, 0, 0])
                .and_then(|p| cmd.get(p + 8..p + 10))
                .map(|v| u16::from_le_bytes([v[0], v[1]]));
        }
        types.push(a[at]);
        at += 6 + len;
    }
    types == [0x02, 0x04, 0x06] && status == Some(0)
}

/// What the node answers to one session with `input`.
pub fn answer(input: &[u8]) -> Vec<u8> {
    let n = node();
    n.rt.block_on(session(n.addr, input))
}

/// One fuzz input: a session with the input, then a C-ECHO that must succeed.
pub fn socket(input: &[u8]) {
    let n = node();
    n.rt.block_on(async {
        let _ = session(n.addr, input).await;
        let answer = session(n.addr, &echo_session()).await;
        assert!(
            echo_answer_ok(&answer),
            "the node no longer answers C-ECHO after this input ({} bytes back)",
            answer.len()
        );
    });
}
