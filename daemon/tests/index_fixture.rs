//! Issue 15: the records moved between modules, the on-disk format did not change. A data
//! directory written by fiona before issue 15 (`fixtures/data-before-issue-15/`: three
//! synthetic CT studies, two assigned on arrival by a coupling list, one by hand, all three
//! transfers de-identified; made by the release binary built from the tree of c5f0ae2, with the
//! project below)
//! opens with today's fiona, which shows the same studies, transfers, audit trail and coupling
//! rows, and goes on working on it: a new study is stored, assigned and de-identified.

use std::path::{Path, PathBuf};

use fiona_tests::corpus::{self, Modality, StudySpec};
use fiona_tests::fiona_bin;
use fiona_tests::harness::{storescu, Daemon, Options};
use serde_json::Value;

const PROJECT: &str = "[projects.PROJ1]\nparticipant_pattern = \"PROJ1-[0-9]{5}\"\n\
    events = [\"baseline\"]\napproval_start = \"2025-01-01\"\napproval_end = \"2099-12-31\"\n";

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/data-before-issue-15")
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let dest = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_tree(&p, &dest);
        } else {
            std::fs::copy(&p, &dest).unwrap();
        }
    }
}

fn expected(name: &str) -> Value {
    serde_json::from_slice(&std::fs::read(fixture().join("expected").join(name)).unwrap()).unwrap()
}

/// The fields of each element of `v` named in `keys`, as a comparable list.
fn pick(v: &Value, keys: &[&str]) -> Vec<Vec<Value>> {
    let mut out: Vec<Vec<Value>> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|x| keys.iter().map(|k| x[*k].clone()).collect())
        .collect();
    out.sort_by_key(|r| r[0].to_string());
    out
}

#[test]
fn a_data_directory_written_before_issue_15_opens_and_serves() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    copy_tree(&fixture().join("data"), &data);
    let d = Daemon::start(
        &fiona_bin!(),
        &data,
        &Options {
            extra_toml: PROJECT.into(),
            quiet_period_secs: 1,
            ..Options::default()
        },
    );

    let studies = d.json(&["studies", "--all"]);
    let keys = [
        "key",
        "accession_number",
        "study_date",
        "instances",
        "bytes",
        "first_received_ms",
    ];
    assert_eq!(
        pick(&studies, &keys),
        pick(&expected("studies.json"), &keys),
        "{studies:#}"
    );
    let transfers = d.json(&["transfers"]);
    let keys = [
        "id",
        "study_key",
        "project",
        "participant",
        "event",
        "state",
        "deidentified",
        "research_study_uid",
        "actor",
        "via",
        "series",
    ];
    assert_eq!(
        pick(&transfers, &keys),
        pick(&expected("transfers.json"), &keys),
        "{transfers:#}"
    );
    let audit = d.json(&["audit"]);
    let keys = ["seq", "action", "actor", "detail", "study_key", "transfer"];
    assert_eq!(pick(&audit, &keys), pick(&expected("audit.json"), &keys));
    let coupling = d.json(&["coupling", "list"]);
    assert_eq!(coupling.as_array().unwrap().len(), 2, "{coupling:#}");
    let status = d.json(&["status"]);
    assert_eq!(status["totals"]["instances"], 3, "{status:#}");
    assert_eq!(status["index"]["io_errors"], 0, "{status:#}");

    // It goes on working: a new study is stored, assigned and de-identified.
    let src = tmp.path().join("in");
    std::fs::create_dir_all(&src).unwrap();
    let spec = StudySpec::new(1515, Modality::Ct);
    let files = corpus::write_study(
        &StudySpec {
            series: 1,
            instances_per_series: 2,
            rows: 16,
            cols: 16,
            ..spec.clone()
        },
        &src,
    )
    .unwrap();
    assert!(storescu(d.addr, "FIONA", &[], &files).status.success());
    d.assign(&spec.accession, "PROJ1", "PROJ1-01515", "baseline");
    let start = std::time::Instant::now();
    loop {
        let t = d.json(&["transfers"]);
        let new = t
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["participant"] == "PROJ1-01515")
            .cloned()
            .unwrap_or(Value::Null);
        if new["state"] == "deidentified" {
            assert_eq!(new["deidentified"], 2, "{new:#}");
            break;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "{t:#}\n{}",
            d.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(d.json(&["status"])["totals"]["instances"], 5);
}
