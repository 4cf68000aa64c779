//! Housekeeping on a small real file system (a tmpfs the test mounts; CI runs as root):
//! verified, unsent, parked and unassigned studies arrive through `storescu` and the pipeline
//! (DCMTK `dcmqrscp` as the research PACS); a ballast file pushes the free space below the
//! high-water mark; exactly the allowed data goes, in order, until the target; a file system
//! full of unsent data evicts nothing and refuses C-STORE with 0xA700, and status and the log
//! say why; an evicted study cannot be re-sent from fiona but arrives again under its
//! assignment; kill -9 between the index commit and the unlink loses nothing that was not
//! chosen and leaves no index entry naming a missing file (issue 16).

use std::path::{Path, PathBuf};
use std::time::Duration;

use fiona_tests::corpus::{self, Modality, StudySpec};
use fiona_tests::fiona_bin;
use fiona_tests::harness::{
    dcmqrscp, fill, free_port, is_root, make_undecodable, require_tool, storescu_responses,
    storescu_verbose, Daemon, Options, Tmpfs,
};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(120);

/// Two projects: PROJ1 sends to a research PACS, PROJ2 to one that is down (its transfers
/// stay unsent). Unassigned studies leave the assign list after about 1.7 s; verified ones
/// may go at once (no grace); a housekeeping pass every 0.3 s.
fn config(pacs: u16, down: u16) -> String {
    format!(
        "unassigned_visible_days = 0.00002\n\
         [eviction]\ngrace_hours = 0\ninterval_secs = 0.3\n\n\
         [projects.PROJ1]\nparticipant_pattern = \"PROJ1-[0-9]{{4}}\"\nevents = [\"baseline\"]\n\
         approval_start = \"2025-01-01\"\napproval_end = \"2099-12-31\"\ndestinations = [\"research\"]\n\n\
         [projects.PROJ2]\nparticipant_pattern = \"PROJ2-[0-9]{{4}}\"\nevents = [\"baseline\"]\n\
         approval_start = \"2025-01-01\"\napproval_end = \"2099-12-31\"\ndestinations = [\"down\"]\n\n\
         [destinations.research]\nhost = \"127.0.0.1\"\nport = {pacs}\nae_title = \"RESEARCH\"\n\
         retry_base_secs = 1\nverify_after_secs = 0\n\n\
         [destinations.down]\nhost = \"127.0.0.1\"\nport = {down}\nae_title = \"DOWN\"\n\
         retry_base_secs = 3600\n"
    )
}

/// A CT study of 8 instances of 512 x 512 (about 4 MB).
fn ct(dir: &Path, n: u32) -> (StudySpec, Vec<PathBuf>) {
    let mut spec = StudySpec::new(n, Modality::Ct);
    spec.series = 1;
    spec.instances_per_series = 8;
    spec.rows = 512;
    spec.cols = 512;
    let d = dir.join(n.to_string());
    std::fs::create_dir_all(&d).unwrap();
    let files = corpus::write_study(&spec, &d).unwrap();
    (spec, files)
}

fn studies(d: &Daemon) -> Vec<Value> {
    d.json(&["studies", "--all"]).as_array().unwrap().clone()
}

fn study_of(d: &Daemon, accession: &str) -> Value {
    studies(d)
        .into_iter()
        .find(|s| s["accession_number"] == accession)
        .unwrap_or_else(|| panic!("no study {accession}"))
}

/// Files of a study's instances as the index names them.
fn files_of(d: &Daemon, key: &str) -> Vec<PathBuf> {
    d.json(&["study", key, "--instances"])
        .as_array()
        .unwrap()
        .iter()
        .map(|i| d.data_dir.join(i["file"].as_str().unwrap()))
        .collect()
}

fn transfer_of(d: &Daemon, project: &str, study_key: &str) -> Value {
    d.json(&["transfers", "--project", project])
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|t| t["study_key"] == study_key)
        .cloned()
        .unwrap_or(Value::Null)
}

fn evicted(d: &Daemon, accession: &str) -> bool {
    study_of(d, accession)["state"] == "evicted"
}

/// Every instance the index names has its file.
fn index_names_only_present_files(d: &Daemon) {
    for s in studies(d) {
        for f in files_of(d, s["key"].as_str().unwrap()) {
            assert!(f.exists(), "the index names a missing file {}", f.display());
        }
    }
}

struct Box4 {
    d: Daemon,
    mnt: PathBuf,
    _pacs: fiona_tests::harness::KillOnDrop,
    verified: (StudySpec, Vec<PathBuf>, String),
    unsent: (StudySpec, String),
    parked: (StudySpec, String),
    unassigned: (StudySpec, String),
}

/// The four kinds of data on a 64 MiB tmpfs, settled: one study verified at the PACS, one
/// unsent (its PACS is down), one parked (an undecodable ultrasound), one unassigned and off
/// the assign list.
fn four_studies(tmp: &Path, env: Vec<(String, String)>) -> (Tmpfs, Box4) {
    require_tool("dcmodify");
    let mnt = tmp.join("small");
    let fs = Tmpfs::mount(&mnt, "64m");
    let pacs_port = free_port();
    let pacs = dcmqrscp(&tmp.join("pacs"), pacs_port);
    let d = Daemon::start(
        &fiona_bin!(),
        &mnt.join("data"),
        &Options {
            extra_toml: config(pacs_port, free_port()),
            quiet_period_secs: 1,
            min_free_bytes: 2_000_000,
            env,
            ..Options::default()
        },
    );
    let input = tmp.join("in");
    let (v, v_files) = ct(&input, 1601);
    let (s, s_files) = ct(&input, 1602);
    let (u, u_files) = ct(&input, 1604);
    let mut p = StudySpec::new(1603, Modality::Us);
    p.series = 1;
    p.instances_per_series = 1;
    p.rows = 64;
    p.cols = 64;
    let p_dir = input.join("1603");
    std::fs::create_dir_all(&p_dir).unwrap();
    let p_files = corpus::write_study(&p, &p_dir).unwrap();
    make_undecodable(&p_files[0]);
    for files in [&v_files, &s_files, &p_files, &u_files] {
        d.store_ok(files);
    }
    d.assign(&v.accession, "PROJ1", "PROJ1-0001", "baseline");
    d.assign(&s.accession, "PROJ2", "PROJ2-0001", "baseline");
    d.assign(&p.accession, "PROJ1", "PROJ1-0002", "baseline");
    let key = |spec: &StudySpec| {
        study_of(&d, &spec.accession)["key"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (vk, sk, pk, uk) = (key(&v), key(&s), key(&p), key(&u));
    d.wait_for("the verified, unsent and parked transfers", WAIT, || {
        transfer_of(&d, "PROJ1", &vk)["state"] == "verified"
            && transfer_of(&d, "PROJ1", &pk)["state"] == "parked"
            && transfer_of(&d, "PROJ2", &sk)["state"] == "deidentified"
            && study_of(&d, &u.accession)["hidden"] == true
    });
    (
        fs,
        Box4 {
            d,
            mnt,
            _pacs: pacs,
            verified: (v, v_files, vk),
            unsent: (s, sk),
            parked: (p, pk),
            unassigned: (u, uk),
        },
    )
}

fn disk(d: &Daemon) -> Value {
    d.json(&["status"])["disk"].clone()
}

/// Fill the file system so that `below` bytes fewer than the high-water mark are free.
fn pressure(b: &Box4, below: u64) -> PathBuf {
    let high = disk(&b.d)["high_water_free_bytes"].as_u64().unwrap();
    let ballast = b.mnt.join("ballast");
    let _ = std::fs::remove_file(&ballast);
    fill(&b.mnt, high - below)
}

#[test]
fn pressure_evicts_the_allowed_data_in_order_and_never_unsent_or_parked() {
    if !is_root() {
        eprintln!("SKIPPED: mounting a small tmpfs needs root (CI runs as root)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (_fs, b) = four_studies(tmp.path(), vec![]);
    let d = &b.d;
    let (v, v_files, vk) = &b.verified;
    let (s, sk) = &b.unsent;
    let (p, pk) = &b.parked;
    let (u, uk) = &b.unassigned;
    let keep: Vec<PathBuf> = [sk, pk, uk].iter().flat_map(|k| files_of(d, k)).collect();
    assert_eq!(keep.len(), 8 + 1 + 8);
    let v_transfer = transfer_of(d, "PROJ1", vk)["id"]
        .as_str()
        .unwrap()
        .to_string();
    let outbound = d.data_dir.join("outbound").join(&v_transfer);
    assert!(outbound.is_dir());

    // Plenty of space: nothing would go; status says what is held where.
    let plan = d.json(&["evict", "--dry-run"]);
    assert_eq!(plan["candidates"], serde_json::json!([]), "{plan}");
    // A survey after the unassigned study was hidden (it counts as evictable from then on).
    d.wait_for("a housekeeping survey", WAIT, || {
        let st = disk(d);
        st["unsent_bytes"].as_u64().unwrap() > 4_000_000
            && st["waiting_bytes"].as_u64().unwrap() == 0
    });
    let st = disk(d);
    assert!(st["parked_bytes"].as_u64().unwrap() > 0, "{st}");
    assert!(st["evictable_bytes"].as_u64().unwrap() > 8_000_000, "{st}");

    // 1 MB below the high-water mark: the verified study (originals and outbound copies,
    // about 8 MB) is enough to reach the target; the unassigned one stays.
    // (The order within and across categories is shown on a given free space by
    // `evict::tests`; here the pass runs on its own every 0.3 s.)
    let ballast = pressure(&b, 1_000_000);
    d.wait_for("the verified study evicted", WAIT, || {
        evicted(d, &v.accession)
    });
    std::fs::remove_file(ballast).unwrap();
    assert!(v_files.iter().all(|f| f.exists()), "the test's own copies");
    assert!(files_of(d, vk).is_empty(), "no instance records left");
    assert!(!outbound.exists(), "outbound copies gone");
    assert!(!evicted(d, &u.accession));
    assert!(keep.iter().all(|f| f.exists()));
    let ev = study_of(d, &v.accession);
    assert_eq!(ev["evicted"]["reason"], "verified");
    assert_eq!(ev["evicted"]["instances"], 8);
    assert_eq!(ev["accession_number"], v.accession.as_str());
    assert!(d.audit_has(|a| a["action"] == "evict"
        && a["detail"]
            .as_str()
            .unwrap()
            .starts_with("1 studies (8 instances)")));

    // Again 1 MB below: next in order, the unassigned study off the assign list.
    let ballast = pressure(&b, 1_000_000);
    d.wait_for("the unassigned study evicted", WAIT, || {
        evicted(d, &u.accession)
    });
    assert!(!evicted(d, &s.accession) && !evicted(d, &p.accession));
    let keep: Vec<PathBuf> = [sk, pk].iter().flat_map(|k| files_of(d, k)).collect();
    assert_eq!(keep.len(), 9);
    assert!(keep.iter().all(|f| f.exists()));
    std::fs::remove_file(ballast).unwrap();

    // Full of unsent and parked data: nothing may go. C-STORE is refused with 0xA700 and
    // status and the log say why.
    let ballast = {
        let _ = std::fs::remove_file(b.mnt.join("ballast"));
        fill(&b.mnt, 1_000_000)
    };
    d.wait_for("the pressure note", WAIT, || {
        disk(d)["pressure"]
            .as_str()
            .is_some_and(|p| p.contains("held by unsent transfers"))
    });
    let note = disk(d)["pressure"].as_str().unwrap().to_string();
    assert!(note.contains("0 evictable"), "{note}");
    let plan = d.json(&["evict", "--dry-run"]);
    assert_eq!(plan["candidates"], serde_json::json!([]), "{plan}");
    assert_eq!(plan["report"]["evictable_bytes"], 0, "{plan}");
    let text = String::from_utf8_lossy(&d.cli(&["status"]).stdout).to_string();
    assert!(text.contains("DISK PRESSURE"), "{text}");
    d.wait_for("the log line", WAIT, || {
        d.log().contains("nothing may be evicted")
    });
    let (_, more) = ct(&tmp.path().join("more"), 1605);
    let log = storescu_verbose(d.addr, "FULLSCU", &["-nh", "-R", "-xe"], &more[..1]);
    let r = storescu_responses(&log);
    assert!(r[0].1.contains("OutOfResources"), "{log}");
    assert!(keep.iter().all(|f| f.exists()));
    assert!(!evicted(d, &s.accession) && !evicted(d, &p.accession));
    std::fs::remove_file(ballast).unwrap();
    index_names_only_present_files(d);

    // An evicted study cannot be re-sent from fiona...
    let out = d.cli(&["resend", "--study", &v.accession]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("evicted"), "{err}");
    assert!(err.contains("send the study again from the PACS"), "{err}");
    // ... but sent again from the PACS, its assignment applies (as to a later series).
    d.store_ok(v_files);
    d.wait_for("the study sent again and verified", WAIT, || {
        let t = transfer_of(d, "PROJ1", vk);
        t["kind"] == "addition" && t["state"] == "verified"
    });
    let again = study_of(d, &v.accession);
    assert_eq!(again["instances"], 8);
    assert_eq!(again["state"], "arrived");
}

#[test]
fn kill_9_between_commit_and_unlink_loses_nothing_unchosen() {
    if !is_root() {
        eprintln!("SKIPPED: mounting a small tmpfs needs root (CI runs as root)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let pause = vec![(
        "FIONA_TEST_EVICT_PAUSE_MS".to_string(),
        "600000".to_string(),
    )];
    let (_fs, mut b) = four_studies(tmp.path(), pause);
    let (vk, sk, pk, uk) = (
        b.verified.2.clone(),
        b.unsent.1.clone(),
        b.parked.1.clone(),
        b.unassigned.1.clone(),
    );
    let chosen: Vec<PathBuf> = [&vk, &uk].iter().flat_map(|k| files_of(&b.d, k)).collect();
    let keep: Vec<PathBuf> = [&sk, &pk].iter().flat_map(|k| files_of(&b.d, k)).collect();
    let v_transfer = transfer_of(&b.d, "PROJ1", &vk)["id"]
        .as_str()
        .unwrap()
        .to_string();
    let outbound = b.d.data_dir.join("outbound").join(&v_transfer);

    // 6 MB below the mark: the verified study is not enough, the unassigned one goes too.
    let _ballast = pressure(&b, 6_000_000);
    b.d.wait_for("the pass to pause after its commit", WAIT, || {
        b.d.log()
            .contains("eviction recorded, pausing before unlinking")
    });
    b.d.kill9();
    assert!(
        chosen.iter().all(|f| f.exists()),
        "killed before the unlink"
    );
    assert!(outbound.is_dir());

    b.d.env.clear();
    b.d.restart();
    let v = &b.verified.0;
    let u = &b.unassigned.0;
    assert!(evicted(&b.d, &v.accession) && evicted(&b.d, &u.accession));
    assert!(
        chosen.iter().all(|f| !f.exists()),
        "recovery removed what the index no longer names"
    );
    assert!(!outbound.exists());
    assert!(keep.iter().all(|f| f.exists()), "nothing unchosen lost");
    assert_eq!(files_of(&b.d, &sk).len(), 8);
    assert_eq!(files_of(&b.d, &pk).len(), 1);
    index_names_only_present_files(&b.d);
    assert!(b.d.log().contains("orphans_removed=16"), "{}", b.d.log());
}
