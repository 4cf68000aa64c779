//! DICOM over TLS, with certificates made by the test (`openssl`):
//!
//! - fiona's TLS listener (second port) takes a C-STORE from DCMTK `storescu` presenting a
//!   client certificate from the configured CA, and refuses a certificate from another CA, no
//!   certificate, a plain connection, and TLS 1.1; the plain port keeps working. fiona's
//!   client side does not talk to a TLS 1.1-only server either.
//! - Forwarding over mutual TLS: a study sent to fiona over TLS, assigned, reaches Orthanc
//!   (DICOM TLS, client certificates required) de-identified and is verified by C-FIND over
//!   TLS. With a CA that does not match Orthanc's certificate, nothing is sent and the
//!   transfer shows the certificate problem.

mod common;

use fiona_tests::fiona_bin;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use fiona_tests::corpus::{self, Modality, StudySpec};
use fiona_tests::harness::{free_port, storescu, Daemon, Options};
use fiona_tests::orthanc::{Orthanc, Settings};
use fiona_tests::pki::{Ca, Identity};

use common::pipeline::PROJECT;

/// The test's certificates: fiona's CA (signs fiona, the modality and the research PACS) and
/// an unrelated one.
struct Pki {
    ca: Ca,
    fiona: Identity,
    modality: Identity,
    pacs: Identity,
    rogue_ca: Ca,
    rogue: Identity,
}

fn pki(dir: &Path) -> Pki {
    let ca = Ca::new(&dir.join("ca"), "fiona-test-ca");
    let rogue_ca = Ca::new(&dir.join("rogue"), "rogue-ca");
    Pki {
        fiona: ca.leaf("fiona"),
        modality: ca.leaf("modality"),
        pacs: ca.leaf("pacs"),
        rogue: rogue_ca.leaf("rogue"),
        ca,
        rogue_ca,
    }
}

fn listen_tls(p: &Pki) -> String {
    format!(
        "[tls]\nlisten = \"127.0.0.1:0\"\ncertificate = \"{}\"\nprivate_key = \"{}\"\nclient_ca = \"{}\"\n",
        p.fiona.cert.display(),
        p.fiona.key.display(),
        p.ca.id.cert.display()
    )
}

fn tls_addr(d: &Daemon) -> SocketAddr {
    std::fs::read_to_string(d.data_dir.join("run/dicom-tls.addr"))
        .expect("run/dicom-tls.addr")
        .trim()
        .parse()
        .expect("tls addr")
}

/// DCMTK's TLS options: `identity` (or anonymous TLS), trusting `ca`.
fn tls_args<'a>(identity: Option<&'a Identity>, ca: &'a Path) -> Vec<String> {
    let mut a = Vec::new();
    match identity {
        Some(id) => a.extend([
            "+tls".to_string(),
            id.key.display().to_string(),
            id.cert.display().to_string(),
        ]),
        None => a.push("+tla".to_string()),
    }
    a.extend(["+cf".to_string(), ca.display().to_string()]);
    a
}

fn echoscu(addr: SocketAddr, extra: &[String]) -> Output {
    fiona_tests::harness::echoscu_with(addr, "TESTSCU", "FIONA", extra)
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn write(dir: &Path, n: u32, series: u32, per: u32) -> (StudySpec, Vec<PathBuf>) {
    let mut spec = StudySpec::new(n, Modality::Ct);
    spec.series = series;
    spec.instances_per_series = per;
    spec.rows = 32;
    spec.cols = 32;
    std::fs::create_dir_all(dir).unwrap();
    let files = corpus::write_study(&spec, dir).unwrap();
    (spec, files)
}

/// `openssl s_client` with `version` (e.g. `-tls1_1`) and fiona's client certificate:
/// whether the handshake completed.
fn handshake(addr: SocketAddr, version: &str, p: &Pki) -> (bool, String) {
    // OpenSSL 3 refuses TLS 1.0/1.1 itself at its default security level: level 0 lets it
    // offer them, so that a refusal is fiona's.
    let out = Command::new("openssl")
        .args(["s_client", version, "-cipher", "DEFAULT:@SECLEVEL=0"])
        .args(["-connect", &addr.to_string()])
        .args(["-cert", &p.modality.cert.to_string_lossy()])
        .args(["-key", &p.modality.key.to_string_lossy()])
        .args(["-CAfile", &p.ca.id.cert.to_string_lossy()])
        .args(["-verify_return_error", "-brief"])
        .stdin(Stdio::null())
        .output()
        .expect("run openssl s_client");
    let t = text(&out);
    (t.contains("CONNECTION ESTABLISHED"), t)
}

#[test]
fn the_tls_listener_takes_mutual_tls_and_refuses_everything_else() {
    let tmp = tempfile::tempdir().unwrap();
    let p = pki(&tmp.path().join("pki"));
    let d = Daemon::start(
        &fiona_bin!(),
        &tmp.path().join("data"),
        &Options {
            extra_toml: listen_tls(&p),
            ..Options::default()
        },
    );
    let addr = tls_addr(&d);
    assert_ne!(addr.port(), d.addr.port());

    // The modality's certificate from fiona's CA: a study is stored over TLS.
    let (_, files) = write(&tmp.path().join("in"), 801, 1, 3);
    let ok = tls_args(Some(&p.modality), &p.ca.id.cert);
    let argv: Vec<&str> = ok.iter().map(String::as_str).collect();
    let out = storescu(addr, "FIONA", &argv, &files);
    assert!(out.status.success(), "{}", text(&out));
    let status = d.json(&["status"]);
    assert_eq!(status["instances_stored_since_start"], 3, "{status}");

    // Refused: a certificate from another CA, no certificate, plain DICOM on the TLS port.
    let refused_before = status["associations_refused"].as_u64().unwrap();
    for (what, args) in [
        (
            "a certificate from another CA",
            tls_args(Some(&p.rogue), &p.ca.id.cert),
        ),
        ("no client certificate", tls_args(None, &p.ca.id.cert)),
        ("a plain connection", Vec::new()),
    ] {
        let out = echoscu(addr, &args);
        assert!(!out.status.success(), "{what} was accepted: {}", text(&out));
    }
    // A peer fiona's certificate does not chain for refuses fiona (the client checks too).
    let out = echoscu(addr, &tls_args(Some(&p.modality), &p.rogue_ca.id.cert));
    assert!(!out.status.success(), "{}", text(&out));
    // The log says why, per refusal (written by fiona's connection task, which may finish
    // after the peer has given up: wait for the lines).
    let log = log_with(
        &d,
        &[
            "UnknownIssuer",
            "peer sent no certificates",
            "InvalidContentType",
        ],
    );
    let status = d.json(&["status"]);
    assert!(
        status["associations_refused"].as_u64().unwrap() >= refused_before + 3,
        "{status}"
    );
    assert_eq!(status["instances_stored_since_start"], 3, "{status}\n{log}");

    // TLS 1.2 minimum: a TLS 1.1 handshake fails, 1.2 and 1.3 complete.
    let (established, t) = handshake(addr, "-tls1_1", &p);
    assert!(!established, "TLS 1.1 was accepted: {t}");
    let start = Instant::now();
    loop {
        let log = d.log();
        if log.contains("incompatible") || log.contains("ProtocolVersion") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "fiona did not refuse TLS 1.1 itself:\n{t}\n{log}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for v in ["-tls1_2", "-tls1_3"] {
        let (established, t) = handshake(addr, v, &p);
        assert!(established, "{v} failed: {t}");
    }

    // The plain port is unchanged.
    let out = echoscu(d.addr, &[]);
    assert!(out.status.success(), "{}", text(&out));
}

/// fiona listening on TLS and forwarding to `[destinations.research]` over TLS with `ca`;
/// a study sent to it over TLS and assigned.
fn forwarding_over_tls(tmp: &Path, p: &Pki, port: u16, ca: &Path) -> (Daemon, StudySpec) {
    let d = Daemon::start(
        &fiona_bin!(),
        &tmp.join("data"),
        &Options {
            extra_toml: format!(
                "{}destinations = [\"research\"]\n\n{}\n[destinations.research]\nhost = \"127.0.0.1\"\n\
                 port = {port}\nae_title = \"RESEARCH\"\nretry_base_secs = 1\nmax_attempts = 2\n\
                 verify_after_secs = 0\n\
                 [destinations.research.tls]\nca = \"{}\"\ncertificate = \"{}\"\nprivate_key = \"{}\"\n",
                PROJECT.trim_start(),
                listen_tls(p),
                ca.display(),
                p.fiona.cert.display(),
                p.fiona.key.display(),
            ),
            quiet_period_secs: 1,
            ..Options::default()
        },
    );
    let (spec, files) = write(&tmp.join("in"), 802, 2, 3);
    let args = tls_args(Some(&p.modality), &p.ca.id.cert);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = storescu(tls_addr(&d), "FIONA", &argv, &files);
    assert!(out.status.success(), "{}", text(&out));
    d.assign(&spec.accession, "PROJ1", "PROJ1-0801", "baseline");
    (d, spec)
}

/// What Orthanc lists of a study, asked over TLS with fiona's identity.
fn orthanc_holds(o: &Orthanc, p: &Pki, study_uid: &str, dir: &Path) -> usize {
    o.held(
        study_uid,
        "FIONA",
        &tls_args(Some(&p.fiona), &p.ca.id.cert),
        dir,
    )
}

/// Orthanc as the research PACS, DICOM over TLS only, client certificates from the test CA.
fn tls_orthanc(tmp: &Path, p: &Pki) -> (Orthanc, u16) {
    let port = free_port();
    let o = Orthanc::start(
        &tmp.join("orthanc"),
        port,
        "RESEARCH",
        Settings {
            tls: Some((&p.pacs, &p.ca.id.cert)),
            ..Settings::default()
        },
    );
    (o, port)
}

#[test]
fn a_study_goes_to_orthanc_over_mutual_tls_and_is_verified() {
    let tmp = tempfile::tempdir().unwrap();
    let p = pki(&tmp.path().join("pki"));
    let (orthanc, port) = tls_orthanc(tmp.path(), &p);
    let (d, spec) = forwarding_over_tls(tmp.path(), &p, port, &p.ca.id.cert);
    let t = d.transfer_when("the transfer to be verified", |t| {
        t["state"] == "verified" || t["state"] == "failed"
    });
    assert_eq!(t["state"], "verified", "{t}\n{}", d.log());
    assert_eq!(t["sent"], 6, "{t}");
    let research_uid = t["research_study_uid"].as_str().expect("research uid");
    assert_ne!(research_uid, spec.study_uid);
    assert_eq!(
        orthanc_holds(&orthanc, &p, research_uid, &tmp.path().join("q1")),
        6
    );
    assert_eq!(
        orthanc_holds(&orthanc, &p, &spec.study_uid, &tmp.path().join("q2")),
        0
    );
    let rows = d.json(&["verify", "--project", "PROJ1"]);
    assert_eq!(rows[0]["held"], 6, "{rows}");

    // What arrived (Orthanc keeps each instance as a DICOM file): no clinical identifier
    // anywhere in the bytes (the original series and instance UIDs begin with the study
    // UID), the pseudonym and the research study in the header.
    let files = orthanc.stored_paths();
    assert_eq!(files.len(), 6);
    let family = spec.patient_name.split('^').next().unwrap();
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        for secret in [&spec.patient_id, &spec.accession, &spec.study_uid, family] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{} keeps a clinical identifier",
                f.display()
            );
        }
        let obj = dicom_object::open_file(f).unwrap();
        let text = |g, e| {
            obj.element(dicom_core::Tag(g, e))
                .unwrap()
                .to_str()
                .unwrap()
                .trim_end_matches(['\0', ' '])
                .to_string()
        };
        assert_eq!(text(0x0020, 0x000D), research_uid);
        assert_eq!(text(0x0010, 0x0020), "PROJ1-0801");
    }
}

#[test]
fn a_research_pacs_whose_certificate_does_not_chain_gets_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let p = pki(&tmp.path().join("pki"));
    let (orthanc, port) = tls_orthanc(tmp.path(), &p);
    // fiona trusts only the rogue CA: Orthanc's certificate is refused.
    let (d, spec) = forwarding_over_tls(tmp.path(), &p, port, &p.rogue_ca.id.cert);
    let t = d.transfer_when("the transfer to fail", |t| t["state"] == "failed");
    let reason = t["deliveries"][0]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("certificate"), "{t}");
    assert_eq!(t["sent"], 0, "{t}");
    let out = d.cli(&["transfers"]);
    assert!(text(&out).contains("certificate"), "{}", text(&out));
    assert_ne!(t["research_study_uid"], spec.study_uid.as_str());
    let research_uid = t["research_study_uid"].as_str().expect("research uid");
    assert_eq!(
        orthanc_holds(&orthanc, &p, research_uid, &tmp.path().join("q")),
        0
    );
}

#[test]
fn fiona_does_not_send_to_a_peer_that_speaks_only_tls_1_1() {
    let tmp = tempfile::tempdir().unwrap();
    let p = pki(&tmp.path().join("pki"));
    let port = free_port();
    // OpenSSL as a TLS 1.1-only server (security level 0 so that it offers 1.1 at all).
    let server = Command::new("openssl")
        .args(["s_server", "-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"])
        .args(["-accept", &port.to_string()])
        .args(["-cert", &p.pacs.cert.to_string_lossy()])
        .args(["-key", &p.pacs.key.to_string_lossy()])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_server");
    let _server = fiona_tests::harness::KillOnDrop(server);
    fiona_tests::harness::wait_until_listening(port, "openssl s_server");
    let (_, files) = write(&tmp.path().join("in"), 803, 1, 1);
    let outgoing = common::outbound::release(&tmp.path().join("released"), &files);
    let peer = fiona::forward::Peer {
        host: "127.0.0.1".into(),
        port,
        called_ae_title: "RESEARCH".into(),
        calling_ae_title: "FIONA".into(),
        tls: Some(fiona::tls::DestinationTls {
            ca: p.ca.id.cert.clone(),
            certificate: Some(p.fiona.cert.clone()),
            private_key: Some(p.fiona.key.clone()),
            server_name: None,
        }),
    };
    let r = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(fiona::forward::store(&peer, &outgoing, 16384));
    let (done, e) = r.expect_err("a TLS 1.1 peer was accepted");
    assert!(done.is_empty());
    // fiona offers 1.2 and 1.3 only; the 1.1 server answers with a protocol_version alert.
    assert!(e.0.contains("ProtocolVersion"), "{}", e.0);
}

/// fiona's log once it holds every one of `lines` (it is written by connection tasks that
/// may end after the peer gave up); fails after 30 s with the log.
fn log_with(d: &Daemon, lines: &[&str]) -> String {
    let start = Instant::now();
    loop {
        let log = d.log();
        if lines.iter().all(|l| log.contains(l)) {
            return log;
        }
        let missing: Vec<_> = lines.iter().filter(|l| !log.contains(*l)).collect();
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no {missing:?} in the log:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
