//! The C-STORE SCU (`fiona::forward`) against DCMTK `storescp` on 127.0.0.1: instances in
//! several transfer syntaxes go over one association and arrive with their data sets byte
//! for byte; a peer that accepts only uncompressed syntaxes gets the compressed ones
//! transcoded to Explicit VR Little Endian with the same samples; Orthanc (which prefers
//! uncompressed) gets each in its stored syntax; a peer that is down is an
//! association error.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

mod common;

use common::outbound::release;
use fiona::deid::outbound::Released;
use fiona::forward::{store, Peer, Stored};
use fiona_tests::corpus::{self, Modality, StudySpec, Variant};
use fiona_tests::harness::{free_port, require_tool, wait_until_listening, KillOnDrop};

fn storescp(port: u16, out: &Path, accept_all: bool) -> KillOnDrop {
    std::fs::create_dir_all(out).unwrap();
    let mut c = Command::new("storescp");
    c.args(["-aet", "RESEARCH", "-od"]).arg(out);
    if accept_all {
        c.arg("+xa");
    }
    let child = c
        .arg(port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let guard = KillOnDrop(child);
    wait_until_listening(port, "storescp");
    guard
}

fn peer(port: u16) -> Peer {
    Peer {
        host: "127.0.0.1".into(),
        port,
        called_ae_title: "RESEARCH".into(),
        calling_ae_title: "FIONA".into(),
        tls: None,
    }
}

fn run<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// A CT image native and in three compressed syntaxes, and an ultrasound image.
/// (what is sent, the native original of each).
fn files(dir: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let mut spec = StudySpec::new(801, Modality::Ct);
    spec.series = 1;
    spec.instances_per_series = 4;
    spec.rows = 32;
    spec.cols = 32;
    std::fs::create_dir_all(dir).unwrap();
    let ct = corpus::write_study(&spec, dir).unwrap();
    let mut out = vec![ct[0].clone()];
    for (i, v) in [Variant::Rle, Variant::JpegLs, Variant::JpegLossless]
        .into_iter()
        .enumerate()
    {
        let o = dir.join(format!("enc{i}.dcm"));
        corpus::transcode(&ct[i + 1], &o, v).unwrap();
        out.push(o);
    }
    let mut us = StudySpec::new(802, Modality::Us);
    us.series = 1;
    us.instances_per_series = 1;
    us.rows = 16;
    us.cols = 16;
    let us = corpus::write_study(&us, &dir.join("us")).unwrap();
    out.extend(us.iter().cloned());
    let mut originals = ct;
    originals.extend(us);
    (out, originals)
}

#[test]
fn instances_go_over_one_association_and_arrive_unchanged() {
    for t in ["storescp", "dcmcrle", "dcmcjpls", "dcmcjpeg"] {
        require_tool(t);
    }
    let tmp = tempfile::tempdir().unwrap();
    let (sent, originals) = files(&tmp.path().join("in"));
    let outgoing: Vec<Released> = release(&tmp.path().join("released"), &sent);

    // A peer that accepts everything: all stored, data sets byte for byte.
    let port = free_port();
    let received = tmp.path().join("all");
    let scp = storescp(port, &received, true);
    let r = run(store(&peer(port), &outgoing, 16384)).unwrap();
    assert_eq!(r, vec![Stored::Stored(0); 5]);
    drop(scp);
    let got: Vec<PathBuf> = std::fs::read_dir(&received)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(got.len(), 5);
    for s in &sent {
        let uid = corpus::sop_instance_uid(s).unwrap();
        let twin = got
            .iter()
            .find(|g| corpus::sop_instance_uid(g).unwrap() == uid)
            .expect("arrived");
        let (ts, a) = corpus::dataset_bytes(s).unwrap();
        let (ts2, b) = corpus::dataset_bytes(twin).unwrap();
        assert_eq!(ts, ts2);
        assert!(corpus::same_dataset(&ts, &a, &b), "data set changed");
    }

    // A peer that accepts only uncompressed syntaxes: the native ones go as they are, the
    // compressed ones are transcoded to Explicit VR Little Endian with exactly the original
    // samples (all three encodings are lossless).
    let port = free_port();
    let plain = tmp.path().join("plain");
    let scp = storescp(port, &plain, false);
    let r = run(store(&peer(port), &outgoing, 16384)).unwrap();
    drop(scp);
    assert_eq!(r, vec![Stored::Stored(0); 5]);
    for (s, original) in sent[1..4].iter().zip(&originals[1..4]) {
        let uid = corpus::sop_instance_uid(s).unwrap();
        let twin = std::fs::read_dir(&plain)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|g| corpus::sop_instance_uid(g).unwrap() == uid)
            .expect("arrived");
        let got = dicom_object::open_file(&twin).unwrap();
        assert_eq!(
            got.meta().transfer_syntax().trim_end_matches('\0'),
            "1.2.840.10008.1.2.1"
        );
        let want = dicom_object::open_file(original).unwrap();
        let pixels = |o: &dicom_object::DefaultDicomObject| {
            o.element(dicom_core::Tag(0x7FE0, 0x0010))
                .unwrap()
                .to_bytes()
                .unwrap()
                .to_vec()
        };
        assert_eq!(
            pixels(&got),
            pixels(&want),
            "samples changed in transcoding"
        );
    }

    // Nobody listening: an association error, nothing confirmed.
    let port = free_port();
    let (done, e) = run(store(&peer(port), &outgoing, 16384)).unwrap_err();
    assert!(done.is_empty());
    assert!(e.0.contains("association"), "{}", e.0);
}

/// Orthanc, which picks Explicit VR Little Endian whenever a context offers it: each
/// compressed instance arrives in its stored syntax (issue 12, item 2: with the fallback in the
/// same context, every compressed image arrived decompressed).
#[test]
fn orthanc_gets_each_instance_in_its_stored_syntax() {
    for t in ["dcmcrle", "dcmcjpls", "dcmcjpeg"] {
        require_tool(t);
    }
    let tmp = tempfile::tempdir().unwrap();
    let (sent, _) = files(&tmp.path().join("in"));
    let outgoing: Vec<Released> = release(&tmp.path().join("released"), &sent);
    let port = free_port();
    let pacs = fiona_tests::orthanc::Orthanc::start(
        &tmp.path().join("orthanc"),
        port,
        "RESEARCH",
        fiona_tests::orthanc::Settings::default(),
    );
    let r = run(store(&peer(port), &outgoing, 16384)).unwrap();
    assert_eq!(r, vec![Stored::Stored(0); 5]);
    let held = pacs.stored_paths();
    assert_eq!(held.len(), 5);
    for s in &sent {
        let uid = corpus::sop_instance_uid(s).unwrap();
        let twin = held
            .iter()
            .find(|g| corpus::sop_instance_uid(g).unwrap() == uid)
            .expect("arrived");
        let (ts, _) = corpus::dataset_bytes(s).unwrap();
        let (ts2, _) = corpus::dataset_bytes(twin).unwrap();
        assert_eq!(ts2, ts, "arrived in another transfer syntax");
    }
}
