//! The daemon's pipeline, first stage: DCMTK `storescu` sends an ultrasound study with text
//! burned into its pixels to fiona on 127.0.0.1; it is assigned; once the study is quiet the
//! pipeline de-identifies it, without anyone acting, into the outbound area. Checked: every
//! text box black, the research StudyInstanceUID and the pseudonym in every output, no
//! clinical identifier in any output or file name, and an instance whose pixel data cannot be
//! decoded parked with its reason, shown by `fiona transfers`, `fiona parked` and the status,
//! with no output.

use fiona_tests::fiona_bin;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use dicom_core::Tag;
use dicom_object::open_file;
use fiona::pixel::decode::decode;
use fiona_tests::burned::{burn_text, sample_burns, Burn};
use fiona_tests::corpus::{self, Modality, StudySpec};
use fiona_tests::harness::{
    dcmqrscp, free_port, require_tool, storescu, Daemon, KillOnDrop, Options,
};
use fiona_tests::orthanc::{Orthanc, Settings};
use serde_json::Value;

const PROJECT: &str = r#"
[projects.PROJ1]
participant_pattern = "PROJ1-[0-9]{4}"
events = ["baseline"]
approval_start = "2025-01-01"
approval_end = "2099-12-31"
"#;

fn burns() -> Vec<Burn> {
    sample_burns()
}

fn wait_for(d: &Daemon, what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A study of `series` x `per_series` instances, written under `dir`.
fn write(
    dir: &Path,
    n: u32,
    m: Modality,
    series: u32,
    per_series: u32,
    size: u16,
) -> (StudySpec, Vec<PathBuf>) {
    let mut spec = StudySpec::new(n, m);
    spec.series = series;
    spec.instances_per_series = per_series;
    spec.rows = size;
    spec.cols = size;
    std::fs::create_dir_all(dir).unwrap();
    let files = corpus::write_study(&spec, dir).unwrap();
    (spec, files)
}

/// A de-identified file: no clinical identifier in its bytes, the research study and the
/// pseudonym in its header.
fn check_deidentified(path: &Path, spec: &StudySpec, research_uid: &str, participant: &str) {
    let bytes = std::fs::read(path).unwrap();
    for secret in [
        spec.patient_id.as_bytes(),
        spec.accession.as_bytes(),
        spec.study_uid.as_bytes(),
    ] {
        assert!(
            !contains(&bytes, secret),
            "{} keeps a clinical identifier",
            path.display()
        );
    }
    let obj = open_file(path).unwrap();
    let text = |tag| header_text(&obj, tag);
    assert_eq!(text(Tag(0x0020, 0x000D)), research_uid);
    assert_eq!(text(Tag(0x0010, 0x0020)), participant);
}

/// fiona with project PROJ1 forwarding to `[destinations.research]` (its settings after
/// host and port in `extra`), a study sent to it and assigned to `participant`.
fn forwarding(
    tmp: &Path,
    port: u16,
    extra: &str,
    study: (u32, Modality, u32, u32),
    participant: &str,
) -> (Daemon, StudySpec) {
    let d = Daemon::start(
        &fiona_bin!(),
        &tmp.join("data"),
        &Options {
            extra_toml: format!(
                "{}destinations = [\"research\"]\n\n[destinations.research]\nhost = \"127.0.0.1\"\n\
                 port = {port}\nae_title = \"RESEARCH\"\n{extra}",
                PROJECT.trim_start()
            ),
            quiet_period_secs: 1,
            ..Options::default()
        },
    );
    let (n, m, series, per) = study;
    let (spec, files) = write(&tmp.join("in"), n, m, series, per, 32);
    let out = storescu(d.addr, "FIONA", &[], &files);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    d.json(&[
        "assign",
        &spec.accession,
        "--project",
        "PROJ1",
        "--participant",
        participant,
        "--event",
        "baseline",
    ]);
    (d, spec)
}

fn header_text(obj: &dicom_object::DefaultDicomObject, tag: Tag) -> String {
    obj.element(tag)
        .unwrap()
        .to_str()
        .unwrap()
        .trim_end_matches(['\0', ' '])
        .to_string()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn an_assigned_study_is_deidentified_and_scrubbed_without_anyone_acting() {
    require_tool("dcmodify");
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let d = Daemon::start(
        &fiona_bin!(),
        &data,
        &Options {
            extra_toml: PROJECT.into(),
            quiet_period_secs: 1,
            ..Options::default()
        },
    );

    // Three ultrasound images with burned-in text, and a fourth whose pixel data does not
    // fit its attributes (it is stored, but cannot be decoded).
    let (spec, files) = write(&tmp.path().join("in"), 701, Modality::Us, 1, 4, 256);
    for f in &files[..3] {
        burn_text(f, &burns()).unwrap();
    }
    let st = Command::new("dcmodify")
        .args(["-nb", "-i", "(0028,0010)=300"])
        .arg(&files[3])
        .status()
        .unwrap();
    assert!(st.success());
    let out = storescu(d.addr, "FIONA", &[], &files);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let assigned = d.json(&[
        "assign",
        &spec.accession,
        "--project",
        "PROJ1",
        "--participant",
        "PROJ1-0042",
        "--event",
        "baseline",
    ]);
    let transfer = assigned["transfer"].as_str().unwrap().to_string();

    let t = d.transfer_when("the transfer to be de-identified", |t| {
        t["state"] == "deidentified"
    });
    assert_eq!(t["id"], transfer.as_str());
    assert_eq!(t["instances"], 4);
    assert_eq!(t["deidentified"], 3);
    let parked = t["parked"].as_array().unwrap();
    assert_eq!(parked.len(), 1, "{t}");
    let reason = parked[0]["reason"].as_str().unwrap();
    assert!(reason.contains("pixel data cannot be scrubbed"), "{reason}");

    // Shown to the admin: the parked list, the transfers table and the status.
    let p = d.cli(&["parked"]);
    let text = String::from_utf8_lossy(&p.stdout);
    assert!(p.status.success());
    assert!(
        text.contains(&transfer) && text.contains(parked[0]["instance"].as_str().unwrap()),
        "{text}"
    );
    assert!(text.contains("pixel data cannot be scrubbed"), "{text}");
    assert_eq!(d.json(&["status"])["instances_parked"], 1);
    let table = String::from_utf8_lossy(&d.cli(&["transfers"]).stdout).to_string();
    assert!(
        table.contains("PARKED") && table.contains("deidentified"),
        "{table}"
    );

    // The outputs: in the data directory, named by fiona's keys, de-identified and scrubbed.
    let outbound = data.join("outbound").join(&transfer);
    let outputs: Vec<PathBuf> = std::fs::read_dir(&outbound)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(outputs.len(), 3, "{outputs:?}");
    assert!(!outputs
        .iter()
        .any(|o| o.file_name().unwrap().to_string_lossy()
            == format!("{}.dcm", parked[0]["instance"].as_str().unwrap())));
    let research_uid = t["research_study_uid"].as_str().unwrap();
    for o in &outputs {
        let name = o.file_name().unwrap().to_string_lossy().to_string();
        assert!(!name.contains(&spec.study_uid) && !name.contains(&spec.patient_id));
        check_deidentified(o, &spec, research_uid, "PROJ1-0042");
        let obj = open_file(o).unwrap();
        let text = |tag| header_text(&obj, tag);
        assert_eq!(text(Tag(0x0028, 0x0301)), "NO");
        let dec = decode(&obj, 1 << 30).unwrap();
        let cols = dec.layout.columns;
        for (bx, by, bw, bh) in burns().iter().map(Burn::rect) {
            for y in by..by + bh {
                for x in bx..bx + bw {
                    let at = ((y * cols + x) * 3) as usize;
                    assert_eq!(
                        &dec.data[at..at + 3],
                        &[0, 0, 0],
                        "{name}: ({x},{y}) not black"
                    );
                }
            }
        }
    }
    // Nothing of the study's pixels outside the data directory: no temp images.
    let stray: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n != "data" && n != "in" && !n.ends_with(".toml") && !n.ends_with(".log"))
        .collect();
    assert!(stray.is_empty(), "{stray:?}");
    // The log tells what happened (the parked instance and why) with no patient data.
    let log = d.log();
    assert!(log.contains("instance parked") && log.contains("transfer de-identified"));
    for secret in [
        &spec.patient_id,
        &spec.patient_name,
        &spec.accession,
        &spec.study_uid,
    ] {
        assert!(!log.contains(secret.as_str()), "the log holds patient data");
    }
}

#[test]
fn a_study_goes_out_to_the_research_pacs_once_it_is_back() {
    require_tool("storescp");
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let (d, spec) = forwarding(
        tmp.path(),
        port,
        "retry_base_secs = 1\nretry_max_secs = 2\nmax_attempts = 50\nverify = false\n",
        (702, Modality::Ct, 2, 3),
        "PROJ1-0007",
    );

    // The research PACS is down: attempts fail, the reason is on the transfer.
    let t = d.transfer_when("a failed attempt", |t| {
        t["deliveries"][0]["attempts"].as_u64().unwrap_or(0) >= 1
    });
    assert_eq!(t["state"], "deidentified");
    let reason = t["deliveries"][0]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("association"), "{reason}");

    // It comes back: everything arrives, nothing twice (storescp +uf: a unique file name per
    // instance received, so a duplicate would show as a seventh file).
    let received = tmp.path().join("pacs");
    std::fs::create_dir_all(&received).unwrap();
    let child = Command::new("storescp")
        .args(["-aet", "RESEARCH", "+xa", "+uf", "-od"])
        .arg(&received)
        .arg(port.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _scp = KillOnDrop(child);
    let t = d.transfer_when("the transfer to be sent", |t| t["state"] == "sent");
    assert_eq!(t["sent"], 6);
    let got: Vec<PathBuf> = std::fs::read_dir(&received)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(got.len(), 6, "{got:?}");
    let research_uid = t["research_study_uid"].as_str().unwrap();
    for g in &got {
        check_deidentified(g, &spec, research_uid, "PROJ1-0007");
    }
    let audit = d.json(&["audit"]);
    assert!(audit
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["action"] == "sent"));

    // The research PACS lost the study: `fiona resend` sends it again, all of it.
    let r = d.json(&["resend", "--study", &spec.accession]);
    assert_eq!(r["transfers"].as_array().unwrap().len(), 1, "{r}");
    d.transfer_when("the resent transfer to be sent", |t| {
        t["state"] == "sent" && t["deliveries"][0]["attempts"] == 1
    });
    let got: Vec<PathBuf> = std::fs::read_dir(&received)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(got.len(), 12, "every instance once more");
    let mut uids: Vec<String> = got
        .iter()
        .map(|g| corpus::sop_instance_uid(g).unwrap())
        .collect();
    uids.sort();
    uids.dedup();
    assert_eq!(
        uids.len(),
        6,
        "the same SOP Instance UIDs: the PACS keeps one copy of each"
    );
    // By project and date: none created after a future date, this one (created today)
    // since an old date; a request naming neither is refused.
    let r = d.json(&["resend", "--project", "PROJ1", "--since", "2099-01-01"]);
    assert_eq!(r["transfers"].as_array().unwrap().len(), 0, "{r}");
    let r = d.json(&["resend", "--project", "PROJ1", "--since", "2020-01-01"]);
    assert_eq!(r["transfers"].as_array().unwrap().len(), 1, "{r}");
    assert!(!d.cli(&["resend"]).status.success());
    assert!(d
        .json(&["audit"])
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["action"] == "resend"));
}

#[test]
fn a_sent_study_is_verified_by_c_find_at_the_research_pacs() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let pacs = dcmqrscp(&tmp.path().join("pacs"), port);
    let (d, _) = forwarding(
        tmp.path(),
        port,
        "retry_base_secs = 1\nverify_after_secs = 0\n",
        (703, Modality::Mr, 2, 2),
        "PROJ1-0003",
    );
    let t = d.transfer_when("the transfer to be verified", |t| t["state"] == "verified");
    assert_eq!(t["sent"], 4);
    assert!(t["verified_ms"].as_i64().unwrap() > 0);
    assert!(t["deliveries"][0]["verified_ms"].as_i64().is_some());
    let audit = d.json(&["audit"]);
    assert!(audit
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["action"] == "verified"));

    // On demand: `fiona verify` asks the PACS again and reports nothing missing...
    let r = d.cli(&["verify", "--project", "PROJ1"]);
    let text = String::from_utf8_lossy(&r.stdout).to_string();
    assert!(
        r.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&r.stderr)
    );
    assert!(
        text.contains("1 transfers checked, 0 instances missing"),
        "{text}"
    );
    let rows = d.json(&["verify", "--project", "PROJ1"]);
    assert_eq!(rows[0]["sent"], 4, "{rows}");
    assert_eq!(rows[0]["held"], 4, "{rows}");
    // ... and fails, saying so, when the PACS cannot be asked.
    drop(pacs);
    let r = d.cli(&["verify", "--project", "PROJ1"]);
    let text = String::from_utf8_lossy(&r.stdout).to_string();
    assert!(!r.status.success(), "{text}");
    assert!(text.contains("1 destinations not answering"), "{text}");
}

/// Orthanc as the research PACS on `port` (plain DICOM), with a Lua script.
fn orthanc(tmp: &Path, port: u16, lua: &str) -> Orthanc {
    Orthanc::start(
        &tmp.join("orthanc"),
        port,
        "RESEARCH",
        Settings {
            lua: Some(lua),
            ..Settings::default()
        },
    )
}

/// Orthanc with `lua` as the research PACS, fiona forwarding to it (`extra` destination
/// settings) with a study assigned.
fn to_orthanc(
    tmp: &Path,
    lua: &str,
    extra: &str,
    study: (u32, Modality, u32, u32),
    participant: &str,
) -> (Orthanc, Daemon) {
    let port = free_port();
    let pacs = orthanc(tmp, port, lua);
    let (d, _) = forwarding(tmp, port, extra, study, participant);
    (pacs, d)
}

fn finished(t: &Value) -> bool {
    t["state"] == "verified" || t["state"] == "failed"
}

#[test]
fn a_research_pacs_refusing_one_instance_fails_the_transfer_with_the_status() {
    let tmp = tempfile::tempdir().unwrap();
    // Orthanc 1.10 answers 0xA700 for an instance its filter raises an error on.
    let (pacs, d) = to_orthanc(
        tmp.path(),
        "function ReceivedInstanceFilter(dicom, origin, info)\n\
           if dicom.InstanceNumber == '3' then error('refused by the test filter') end\n\
           return true\nend\n",
        "retry_base_secs = 1\nretry_max_secs = 1\nmax_attempts = 3\nverify_after_secs = 0\n",
        (704, Modality::Ct, 1, 4),
        "PROJ1-0004",
    );
    let t = d.transfer_when("the transfer to fail", |t| t["state"] == "failed");
    let reason = t["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("status 0xa700"), "{t}");
    assert!(reason.contains("research:"), "{t}");
    assert_eq!(t["deliveries"][0]["attempts"], 3, "{t}");
    // The three others were stored once each, and only they.
    assert_eq!(t["deliveries"][0]["stored"].as_array().unwrap().len(), 3);
    let uid = t["research_study_uid"].as_str().unwrap();
    assert_eq!(pacs.held(uid, "FIONA", &[], &tmp.path().join("q")), 3);
    // The admin sees it in the transfers table.
    let table = String::from_utf8_lossy(&d.cli(&["transfers"]).stdout).to_string();
    assert!(
        table.contains("failed") && table.contains("0xa700"),
        "{table}"
    );
}

#[test]
fn an_instance_the_pacs_acknowledged_but_lost_is_found_by_verification_and_sent_again() {
    let tmp = tempfile::tempdir().unwrap();
    // The first time instance 2 arrives, Orthanc answers success and drops it (its filter
    // returns false); the second time it keeps it.
    let (pacs, d) = to_orthanc(
        tmp.path(),
        "seen = false\n\
         function ReceivedInstanceFilter(dicom, origin, info)\n\
           if dicom.InstanceNumber == '2' and not seen then seen = true return false end\n\
           return true\nend\n",
        "retry_base_secs = 1\nverify_after_secs = 0\n",
        (705, Modality::Mr, 1, 4),
        "PROJ1-0005",
    );
    let t = d.transfer_when("the transfer to be verified", finished);
    assert_eq!(t["state"], "verified", "{t}");
    assert_eq!(t["deliveries"][0]["resent_after_verify"], 1, "{t}");
    let audit = d.json(&["audit"]);
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["action"] == "resend"
                && a["detail"].as_str().unwrap_or("").contains("lacks 1 of 4")),
        "{audit}"
    );
    let uid = t["research_study_uid"].as_str().unwrap();
    assert_eq!(pacs.held(uid, "FIONA", &[], &tmp.path().join("q")), 4);
}

/// An instance the PACS acknowledges and always loses: re-sent three times, then the
/// transfer fails and says so (it said "re-send 4 of 3").
#[test]
fn an_instance_the_pacs_always_loses_fails_the_transfer_after_three_resends() {
    let tmp = tempfile::tempdir().unwrap();
    let (_pacs, d) = to_orthanc(
        tmp.path(),
        "function ReceivedInstanceFilter(dicom, origin, info)\n\
           return dicom.InstanceNumber ~= '2'\nend\n",
        "retry_base_secs = 1\nverify_after_secs = 0\n",
        (707, Modality::Mr, 1, 3),
        "PROJ1-0007",
    );
    let t = d.transfer_when("the transfer to finish", finished);
    assert_eq!(t["state"], "failed", "{t}");
    assert_eq!(t["deliveries"][0]["resent_after_verify"], 4, "{t}");
    let reason = t["reason"].as_str().unwrap_or_default();
    assert!(
        reason.ends_with("the destination lacks 1 of 3 instances after 3 re-sends"),
        "{t}"
    );
}

#[test]
fn after_kill_9_mid_transfer_the_transfer_completes_and_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let total = 60;
    // A slow PACS (a busy loop per instance) so that fiona is killed mid-association.
    let (pacs, mut d) = to_orthanc(
        tmp.path(),
        "function ReceivedInstanceFilter(dicom, origin, info)\n\
           local x = 0\n for i = 1, 3000000 do x = x + i end\n return true\nend\n",
        "retry_base_secs = 1\nverify_after_secs = 0\n",
        (706, Modality::Ct, 1, total),
        "PROJ1-0006",
    );
    let start = Instant::now();
    let mut at_kill = 0;
    while at_kill < 3 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "nothing reached the PACS\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(20));
        at_kill = pacs.stored_files();
    }
    d.kill9();
    assert!(
        (at_kill as u32) < total,
        "not killed mid-transfer: {at_kill} stored"
    );
    d.restart();
    let t = d.transfer_when("the transfer to be verified after the restart", finished);
    assert_eq!(t["state"], "verified", "{t}");
    // Complete by the replay itself, not by verification finding gaps.
    assert_eq!(t["deliveries"][0]["resent_after_verify"], 0, "{t}");
    assert_eq!(t["sent"], total, "{t}");
    let uid = t["research_study_uid"].as_str().unwrap();
    assert_eq!(
        pacs.held(uid, "FIONA", &[], &tmp.path().join("q")),
        total as usize
    );
}

#[test]
fn a_hung_research_pacs_holds_neither_the_other_destination_nor_the_receive_side() {
    let tmp = tempfile::tempdir().unwrap();
    // "stuck" accepts connections and never answers.
    let stuck = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let stuck_port = stuck.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in stuck.incoming() {
            held.push(c);
        }
    });
    let port = free_port();
    let pacs = orthanc(tmp.path(), port, "");
    let d = Daemon::start(
        &fiona_bin!(),
        &tmp.path().join("data"),
        &Options {
            extra_toml: format!(
                "{}destinations = [\"stuck\", \"research\"]\n\n\
                 [destinations.stuck]\nhost = \"127.0.0.1\"\nport = {stuck_port}\nae_title = \"STUCK\"\n\n\
                 [destinations.research]\nhost = \"127.0.0.1\"\nport = {port}\nae_title = \"RESEARCH\"\n\
                 verify_after_secs = 0\n",
                PROJECT.trim_start()
            ),
            quiet_period_secs: 1,
            ..Options::default()
        },
    );
    let (spec, files) = write(&tmp.path().join("in"), 707, Modality::Ct, 1, 3, 32);
    assert!(storescu(d.addr, "FIONA", &[], &files).status.success());
    d.json(&[
        "assign",
        &spec.accession,
        "--project",
        "PROJ1",
        "--participant",
        "PROJ1-0007",
        "--event",
        "baseline",
    ]);
    let delivery = |t: &Value, name: &str| {
        t["deliveries"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["destination"] == name).cloned())
            .unwrap_or(Value::Null)
    };
    let t = d.transfer_when("the responsive destination to be verified", |t| {
        delivery(t, "research")["verified_ms"].is_i64()
    });
    // The responsive destination did not wait for the stuck one (no wall clock needed): the
    // stuck one has begun its first attempt (counted when it begins) and not finished it (no
    // reason yet; its bound is 30 s + 5 s per instance), and the transfer as a whole waits.
    let stuck = delivery(&t, "stuck");
    assert_eq!(stuck["attempts"].as_u64().unwrap_or(0), 1, "{t}");
    assert!(stuck["reason"].is_null() && stuck["done"] == false, "{t}");
    assert_eq!(t["state"], "deidentified", "{t}");
    let uid = t["research_study_uid"].as_str().unwrap();
    assert_eq!(pacs.held(uid, "FIONA", &[], &tmp.path().join("q")), 3);
    // Receiving goes on meanwhile, while the stuck attempt still runs.
    let (_, more) = write(&tmp.path().join("more"), 708, Modality::Ct, 1, 2, 32);
    assert!(storescu(d.addr, "FIONA", &[], &more).status.success());
    let t = d.json(&["transfers"])[0].clone();
    assert!(delivery(&t, "stuck")["reason"].is_null(), "{t}");
}

#[test]
fn a_correction_stops_a_transfer_that_is_being_sent() {
    let tmp = tempfile::tempdir().unwrap();
    let total = 60;
    let (pacs, d) = to_orthanc(
        tmp.path(),
        "function ReceivedInstanceFilter(dicom, origin, info)\n\
           local x = 0\n for i = 1, 3000000 do x = x + i end\n return true\nend\n",
        "retry_base_secs = 1\nverify_after_secs = 0\n",
        (709, Modality::Ct, 1, total),
        "PROJ1-0009",
    );
    let start = Instant::now();
    while pacs.stored_files() < 3 {
        assert!(start.elapsed() < Duration::from_secs(60), "{}", d.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    let first = d.json(&["transfers"])[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let accession = StudySpec::new(709, Modality::Ct).accession;
    d.json(&[
        "assign",
        &accession,
        "--project",
        "PROJ1",
        "--participant",
        "PROJ1-0010",
        "--event",
        "baseline",
    ]);
    // The old transfer stops within an instance or so, and says how much went out.
    let old = |d: &Daemon| {
        d.json(&["transfers"])
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == first.as_str())
            .cloned()
            .unwrap()
    };
    let audit_says = |d: &Daemon| {
        d.json(&["audit"]).as_array().unwrap().iter().any(|a| {
            a["action"] == "cancelled_send"
                && a["transfer"] == first.as_str()
                && a["detail"]
                    .as_str()
                    .unwrap_or("")
                    .contains("when the correction stopped it")
        })
    };
    wait_for(&d, "the stopped send to be recorded", || audit_says(&d));
    let t = old(&d);
    assert_eq!(t["state"], "cancelled", "{t}");
    let sent_before = t["deliveries"][0]["stored"].as_array().unwrap().len();
    assert!(sent_before < total as usize, "{t}");
    // The correction goes out in full and is verified.
    let mut t = Value::Null;
    wait_for(&d, "the correction to be verified", || {
        t = d
            .json(&["transfers"])
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] != first.as_str())
            .cloned()
            .unwrap_or(Value::Null);
        finished(&t)
    });
    assert_eq!(t["state"], "verified", "{t}");
    assert_eq!(t["participant"], "PROJ1-0010", "{t}");
}

/// Issue 12 item 8: a workstation takes an instance from the research PACS, makes a derived
/// series of it (new Series and SOP Instance UIDs, everything else as fiona sent it) and
/// sends it back to fiona. fiona recognises the research StudyInstanceUID it issued, assigns
/// the instance to the original's participant and event, keeps the UIDs it issued (study,
/// frame of reference) instead of mapping them again, does not shift the dates a second
/// time, and the instance joins the original research study at Orthanc, verified.
#[test]
fn a_derived_series_sent_back_joins_its_research_study() {
    require_tool("dcmodify");
    let tmp = tempfile::tempdir().unwrap();
    let (pacs, d) = to_orthanc(
        tmp.path(),
        "function ReceivedInstanceFilter(dicom, origin, info) return true end\n",
        "retry_base_secs = 1\nretry_max_secs = 1\nmax_attempts = 3\nverify_after_secs = 0\n",
        (706, Modality::Ct, 1, 2),
        "PROJ1-0006",
    );
    let first = d.transfer_when("the study to be verified", finished);
    assert_eq!(first["state"], "verified", "{first}");
    let research_uid = first["research_study_uid"].as_str().unwrap().to_string();
    assert_eq!(
        pacs.held(&research_uid, "FIONA", &[], &tmp.path().join("q1")),
        2
    );

    // The workstation's copy: one instance as Orthanc holds it, with new series and instance
    // UIDs (dcmodify updates the file meta to match).
    let held = pacs.stored_paths();
    let original = open_file(&held[0]).unwrap();
    let text = |o: &dicom_object::DefaultDicomObject, g, e| header_text(o, Tag(g, e));
    let derived_dir = tmp.path().join("derived");
    std::fs::create_dir_all(&derived_dir).unwrap();
    let derived = derived_dir.join("derived.dcm");
    std::fs::copy(&held[0], &derived).unwrap();
    let out = Command::new("dcmodify")
        .args(["-nb", "-m", "(0020,000e)=1.2.826.0.1.3680043.8.498.4242.1"])
        .args(["-m", "(0008,0018)=1.2.826.0.1.3680043.8.498.4242.1.1"])
        .args(["-i", "(0008,103e)=AI segmentation"])
        .arg(&derived)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = storescu(d.addr, "FIONA", &[], std::slice::from_ref(&derived));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A second transfer, for the derived study, to the same research study, verified.
    let start = Instant::now();
    let second = loop {
        let all = d.json(&["transfers"]);
        let done: Vec<&Value> = all
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["id"] != first["id"] && finished(t))
            .collect();
        if let Some(t) = done.first() {
            break (*t).clone();
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "timed out waiting for the derived transfer: {all}\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(second["state"], "verified", "{second}");
    assert_eq!(
        second["research_study_uid"],
        research_uid.as_str(),
        "{second}"
    );
    assert_eq!(second["participant"], "PROJ1-0006", "{second}");
    assert_eq!(second["event"], "baseline", "{second}");
    assert_eq!(
        pacs.held(&research_uid, "FIONA", &[], &tmp.path().join("q2")),
        3
    );

    // What Orthanc holds of it: the study, frame of reference and dates as the research
    // study has them; new series and instance UIDs, mapped (not the workstation's).
    let now = pacs.stored_paths();
    let arrived: Vec<_> = now
        .iter()
        .filter(|p| !held.contains(p))
        .map(|p| open_file(p).unwrap())
        .collect();
    assert_eq!(arrived.len(), 1);
    let a = &arrived[0];
    assert_eq!(text(a, 0x0020, 0x000D), research_uid);
    for (g, e) in [
        (0x0020, 0x0052),
        (0x0008, 0x0020),
        (0x0008, 0x0030),
        (0x0010, 0x0020),
    ] {
        assert_eq!(
            text(a, g, e),
            text(&original, g, e),
            "({g:04x},{e:04x}) differs from the research study's"
        );
    }
    let series = text(a, 0x0020, 0x000E);
    assert_ne!(series, text(&original, 0x0020, 0x000E));
    assert!(
        series.starts_with("2.25.") && !series.contains("4242"),
        "the workstation's series UID is mapped: {series}"
    );
    assert!(!text(a, 0x0008, 0x0018).contains("4242"));
}

/// A research PACS (pynetdicom, `tests/real/dup_pacs.py`) that answers 0x0111 to an instance
/// it holds already, slowed to `delay_ms` per instance, in `dir`.
fn dup_pacs(dir: &Path, port: u16, delay_ms: u32) -> KillOnDrop {
    let python = fiona_tests::harness::venv_python();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/real/dup_pacs.py");
    let child = Command::new(python)
        .arg(script)
        .arg(port.to_string())
        .arg("RESEARCH")
        .arg(dir)
        .args(["--delay-ms", &delay_ms.to_string()])
        .spawn()
        .expect("start dup_pacs.py");
    let guard = KillOnDrop(child);
    let start = Instant::now();
    while !dir.join("ready").exists() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "dup_pacs.py did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    fiona_tests::harness::wait_until_listening(port, "dup_pacs.py");
    guard
}

fn lines(p: &Path) -> usize {
    std::fs::read_to_string(p).map_or(0, |s| s.lines().count())
}

/// Issue 14, item 7: after a kill -9 mid-send the attempt in flight is sent again; a PACS
/// that answers 0x0111 (duplicate) for what it already holds does not fail the transfer: the
/// duplicates count as stored once C-FIND confirms them, and the transfer says so. Progress
/// is recorded during the attempt, so the restart re-sends only the last second's instances,
/// and the interrupted attempt is counted.
#[test]
fn a_pacs_answering_duplicate_after_kill_9_ends_verified() {
    let tmp = tempfile::tempdir().unwrap();
    let total = 40;
    let port = free_port();
    let state = tmp.path().join("pacs");
    let _pacs = dup_pacs(&state, port, 100);
    let (mut d, _) = forwarding(
        tmp.path(),
        port,
        "retry_base_secs = 1\nverify_after_secs = 0\n",
        (714, Modality::Ct, 1, total),
        "PROJ1-0714",
    );
    let start = Instant::now();
    while lines(&state.join("held.txt")) < 12 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "nothing reached the PACS\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    d.kill9();
    let at_kill = lines(&state.join("held.txt"));
    assert!(at_kill < total as usize, "not killed mid-transfer");
    d.restart();
    let t = d.transfer_when("the transfer to be verified after the restart", finished);
    assert_eq!(t["state"], "verified", "{t}");
    let dups = lines(&state.join("dups.txt"));
    let delivery = &t["deliveries"][0];
    eprintln!(
        "killed with {at_kill} held; {dups} instances sent again and answered 0x0111; attempts {}",
        delivery["attempts"]
    );
    assert!(dups >= 1, "the instance in flight was sent again: {t}");
    // Progress is written every second (10 instances at 100 ms each), plus the one in flight.
    assert!(
        dups <= 12,
        "{dups} re-sent: progress was not recorded during the attempt"
    );
    assert_eq!(
        delivery["duplicates"].as_array().unwrap().len(),
        dups,
        "{t}"
    );
    assert_eq!(
        delivery["attempts"], 2,
        "the interrupted attempt counts: {t}"
    );
    assert_eq!(delivery["resent_after_verify"], 0, "{t}");
    assert!(
        delivery["reason"]
            .as_str()
            .is_some_and(|r| r.contains("C-FIND confirmed")),
        "{t}"
    );
    assert_eq!(lines(&state.join("held.txt")), total as usize);
    let audit = String::from_utf8_lossy(&d.cli(&["audit"]).stdout).into_owned();
    assert!(audit.contains("answered duplicate 0x0111"), "{audit}");
}

/// A crash loop ends at `max_attempts`: every attempt a kill interrupts counts.
#[test]
fn attempts_interrupted_by_kill_9_count_towards_max_attempts() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let state = tmp.path().join("pacs");
    let _pacs = dup_pacs(&state, port, 300);
    let (mut d, _) = forwarding(
        tmp.path(),
        port,
        "retry_base_secs = 1\nmax_attempts = 2\n",
        (715, Modality::Ct, 1, 30),
        "PROJ1-0715",
    );
    for round in 1..=2 {
        let before = lines(&state.join("held.txt"));
        let start = Instant::now();
        while lines(&state.join("held.txt")) < before + 2 {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "round {round}: nothing sent\n{}",
                d.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        d.kill9();
        d.restart();
    }
    let t = d.transfer_when("the transfer to fail", finished);
    assert_eq!(t["state"], "failed", "{t}");
    let delivery = &t["deliveries"][0];
    assert_eq!(delivery["attempts"], 2, "{t}");
    assert!(t["reason"].as_str().unwrap().contains("interrupted"), "{t}");
}
