//! Assignment through the real daemon: DCMTK `storescu` sends synthetic studies to fiona on
//! 127.0.0.1, and the `fiona` CLI assigns, imports coupling lists and lists transfers and the
//! audit trail. Covers manual assignment (by accession number and key, wrong-pattern and
//! archived refusals, a second project, a correction), later series following, coupling lists
//! before and after arrival and malformed lists, a routing rule, auto-ID, a derived series,
//! the assign list's visibility period, exports, and survival of kill -9.

use fiona_tests::fiona_bin;
use std::path::{Path, PathBuf};

use fiona_tests::corpus::{self, Modality, StudySpec};
use fiona_tests::harness::{storescu, Daemon, Options};
use serde_json::Value;

const PROJECTS: &str = r#"
[projects.PROJ1]
participant_pattern = "PROJ1-[0-9]{4}"
events = ["baseline", "followup"]
approval = "REK 2025/4711"
approval_start = "2025-01-01"
approval_end = "2099-12-31"
auto_id = { ae_title = "PROJ1AUTO", prefix = "PROJ1-", digits = 4, event = "baseline" }

[projects.SECOND]
participant_pattern = "S[0-9]{3}"
events = ["scan"]
approval_start = "2025-01-01"
approval_end = "2099-12-31"

[projects.OLDPROJ]
participant_pattern = ".*"
events = ["x"]
state = "archived"

[[routing]]
name = "phantom-names"
project = "SECOND"
event = "scan"
calling_ae = "PHANTOMSCU"
field = "patient_name"
pattern = "^Phantom\\^(?P<id>S[0-9]+)$"
capture_name = "id"

[[routing]]
name = "qc-phantoms"
project = "PROJ1"
event = "followup"
called_ae = "FIONAQC"
field = "patient_id"
pattern = "^QC_(PROJ1-[0-9]{4})$"
capture = 1
"#;

fn start(tmp: &Path) -> Daemon {
    Daemon::start(
        &fiona_bin!(),
        &tmp.join("data"),
        &Options {
            extra_toml: PROJECTS.into(),
            // Studies stay "receiving" for the whole test, so the pipeline leaves every
            // transfer `requested` (these tests are about assignment; the pipeline has its
            // own, pipeline.rs).
            quiet_period_secs: 3600,
            ..Options::default()
        },
    )
}

/// Write a study (one series of `n` instances unless changed) and return its files.
fn study(tmp: &Path, name: &str, spec: &StudySpec) -> Vec<PathBuf> {
    let dir = tmp.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    corpus::write_study(spec, &dir).unwrap()
}

fn spec(n: u32, series: u32, per_series: u32) -> StudySpec {
    let mut s = StudySpec::new(n, Modality::Ct);
    s.series = series;
    s.instances_per_series = per_series;
    s.rows = 16;
    s.cols = 16;
    s
}

fn send(d: &Daemon, called_ae: &str, files: &[PathBuf]) {
    let out = storescu(d.addr, called_ae, &[], files);
    assert!(
        out.status.success(),
        "storescu failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        d.log()
    );
}

fn studies(d: &Daemon) -> Vec<Value> {
    d.json(&["studies"]).as_array().unwrap().clone()
}

fn study_by_uid(d: &Daemon, uid: &str) -> Value {
    let key = studies(d)
        .into_iter()
        .find_map(|s| {
            let k = s["key"].as_str().unwrap().to_string();
            let detail = d.json(&["study", &k]);
            (detail["study_instance_uid"] == uid).then_some(detail)
        })
        .unwrap_or_else(|| panic!("no study {uid}"));
    key
}

fn assignments(detail: &Value) -> Vec<Value> {
    detail["study"]["assignments"].as_array().unwrap().clone()
}

fn transfers(d: &Daemon, filter: &[&str]) -> Vec<Value> {
    let mut args = vec!["transfers"];
    args.extend_from_slice(filter);
    d.json(&args).as_array().unwrap().clone()
}

fn audit(d: &Daemon) -> Vec<Value> {
    d.json(&["audit"]).as_array().unwrap().clone()
}

fn cli_text(d: &Daemon, args: &[&str]) -> (bool, String, String) {
    let out = d.cli(args);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn manual_assignment_corrections_later_series_and_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let mut d = start(tmp.path());
    let s = spec(11, 2, 2);
    let files = study(tmp.path(), "a", &s);
    // Series 1 now; series 2 later.
    let (first, later): (Vec<_>, Vec<_>) = files.into_iter().partition(|f| {
        corpus::sop_instance_uid(f)
            .unwrap()
            .starts_with(&s.series_uid(1))
    });
    send(&d, "FIONA", &first);
    let detail = study_by_uid(&d, &s.study_uid);
    let key = detail["study"]["key"].as_str().unwrap().to_string();
    assert!(assignments(&detail).is_empty());

    // A participant ID that does not fit the pattern is refused, and nothing is assigned.
    let (ok, _, err) = cli_text(
        &d,
        &[
            "assign",
            &s.accession,
            "--project",
            "PROJ1",
            "--participant",
            "P-0001",
            "--event",
            "baseline",
        ],
    );
    assert!(!ok);
    assert!(
        err.contains("does not match") && err.contains("PROJ1-[0-9]{4}"),
        "{err}"
    );
    // An unknown event, an archived project, an unknown study.
    for (args, want) in [
        (
            vec![
                "assign",
                key.as_str(),
                "--project",
                "PROJ1",
                "--participant",
                "PROJ1-0001",
                "--event",
                "week9",
            ],
            "no event",
        ),
        (
            vec![
                "assign",
                key.as_str(),
                "--project",
                "OLDPROJ",
                "--participant",
                "x",
                "--event",
                "x",
            ],
            "archived",
        ),
        (
            vec![
                "assign",
                "NOSUCHSTUDY",
                "--project",
                "PROJ1",
                "--participant",
                "PROJ1-0001",
                "--event",
                "baseline",
            ],
            "no study",
        ),
    ] {
        let (ok, _, err) = cli_text(&d, &args);
        assert!(!ok, "{args:?}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    assert!(transfers(&d, &[]).is_empty());

    // By accession number: assigned, new participant remembered, one transfer requested.
    let (ok, out, err) = cli_text(
        &d,
        &[
            "assign",
            &s.accession,
            "--project",
            "PROJ1",
            "--participant",
            "PROJ1-0001",
            "--event",
            "baseline",
        ],
    );
    assert!(ok, "{err}");
    assert!(out.contains("assigned") && out.contains("(new)"), "{out}");
    let t = transfers(&d, &[]);
    assert_eq!(t.len(), 1);
    assert_eq!(t[0]["state"], "requested");
    assert_eq!(t[0]["instances"], 2);
    assert_eq!(t[0]["study_key"], key.as_str());
    assert!(t[0]["actor"].as_str().unwrap().starts_with("user:"));
    let research_uid = t[0]["research_study_uid"].as_str().unwrap().to_string();
    assert!(research_uid.starts_with("2.25.") && research_uid != s.study_uid);

    // The same again: unchanged. A second project: its own transfer.
    let (ok, out, _) = cli_text(
        &d,
        &[
            "assign",
            &key,
            "--project",
            "PROJ1",
            "--participant",
            "PROJ1-0001",
            "--event",
            "baseline",
        ],
    );
    assert!(ok && out.contains("already assigned"), "{out}");
    let v = d.assign(&key, "SECOND", "S001", "scan");
    assert_eq!(v["result"], "assigned");
    assert_eq!(transfers(&d, &[]).len(), 2);

    // A correction: the unstarted transfer is cancelled, a new one replaces it.
    let v = d.assign(&key, "PROJ1", "PROJ1-0002", "followup");
    assert_eq!(v["result"], "corrected");
    let cancelled = transfers(&d, &["--state", "cancelled"]);
    assert_eq!(cancelled.len(), 1);
    assert_eq!(cancelled[0]["participant"], "PROJ1-0001");
    let current: Vec<Value> = transfers(&d, &["--project", "PROJ1", "--state", "requested"]);
    assert_eq!(current.len(), 1);
    assert_eq!(current[0]["kind"], "correction");
    assert_eq!(current[0]["participant"], "PROJ1-0002");
    assert_eq!(current[0]["research_study_uid"], research_uid.as_str());

    // A later series follows without anyone acting, for both projects.
    send(&d, "FIONA", &later);
    for project in ["PROJ1", "SECOND"] {
        let t = transfers(&d, &["--project", project, "--state", "requested"]);
        assert_eq!(t.len(), 1, "{project}");
        assert_eq!(t[0]["series"].as_array().unwrap().len(), 2, "{project}");
        assert_eq!(t[0]["instances"], 4, "{project}");
    }
    let detail = study_by_uid(&d, &s.study_uid);
    let a = assignments(&detail);
    assert_eq!(a.len(), 2);

    // The trail, in order.
    let actions: Vec<String> = audit(&d)
        .iter()
        .map(|a| a["action"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        actions,
        [
            "refused",
            "refused",
            "refused",
            "assign",
            "assign",
            "reassign",
            "series_follow",
            "series_follow"
        ],
        "{actions:?}"
    );

    // Exports for the project's records.
    let (ok, csv, err) = cli_text(&d, &["transfers", "--project", "PROJ1", "--export", "csv"]);
    assert!(ok, "{err}");
    let lines: Vec<&str> = csv.lines().collect();
    assert!(lines[0].starts_with("transfer_id,study_key,project,participant,event"));
    assert_eq!(lines.len(), 3, "{csv}");
    let json_file = tmp.path().join("export.json");
    let (ok, _, err) = cli_text(
        &d,
        &[
            "transfers",
            "--project",
            "PROJ1",
            "--export",
            "json",
            "-o",
            json_file.to_str().unwrap(),
        ],
    );
    assert!(ok, "{err}");
    let raw = std::fs::read_to_string(&json_file).unwrap();
    let exported: Vec<Value> = serde_json::from_str(&raw).unwrap();
    assert_eq!(exported.len(), 2);
    // Nothing from the clinical side: no original UIDs, accession, patient name or ID.
    for (what, v) in [
        ("study UID", s.study_uid.as_str()),
        ("accession", s.accession.as_str()),
        ("patient ID", s.patient_id.as_str()),
    ] {
        assert!(!raw.contains(v) && !csv.contains(v), "{what} in export");
    }
    let family = s.patient_name.split('^').next().unwrap();
    assert!(!raw.contains(family) && !csv.contains(family));
    // An export is one project's records.
    let (ok, _, err) = cli_text(&d, &["transfers", "--export", "csv"]);
    assert!(!ok && err.contains("--project"), "{err}");
    // One study's transfers.
    assert_eq!(transfers(&d, &["--study", &key]).len(), 3);
    assert!(transfers(&d, &["--study", "NOSUCHKEY"]).is_empty());
    // Date filters: everything was created today; nothing tomorrow.
    let today = time::OffsetDateTime::now_utc().date();
    let tomorrow = today.next_day().unwrap();
    let fmt = |d: time::Date| format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day());
    assert_eq!(
        transfers(&d, &["--since", &fmt(today), "--until", &fmt(today)]).len(),
        3
    );
    assert!(transfers(&d, &["--since", &fmt(tomorrow)]).is_empty());
    let (ok, _, err) = cli_text(&d, &["transfers", "--since", "yesterday"]);
    assert!(!ok && err.contains("YYYY-MM-DD"), "{err}");

    // The project overview: who takes assignments, participants known, transfers by state.
    let projects = d.json(&["projects"]);
    let by_name = |n: &str| {
        projects
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == n)
            .unwrap()
            .clone()
    };
    let p1 = by_name("PROJ1");
    assert_eq!(p1["accepts_assignments"], true);
    assert_eq!(p1["participants"], 2);
    assert_eq!(p1["transfers"]["requested"], 1);
    assert_eq!(p1["transfers"]["cancelled"], 1);
    let old = by_name("OLDPROJ");
    assert_eq!(old["accepts_assignments"], false);
    assert!(old["refusal"].as_str().unwrap().contains("archived"));

    // kill -9: assignments, transfers and the audit trail are all still there.
    let before = (
        transfers(&d, &[]),
        audit(&d),
        assignments(&study_by_uid(&d, &s.study_uid)),
    );
    d.kill9();
    d.restart();
    let after = (
        transfers(&d, &[]),
        audit(&d),
        assignments(&study_by_uid(&d, &s.study_uid)),
    );
    assert_eq!(before, after);
}

#[test]
fn coupling_lists_before_and_after_arrival_and_malformed_lists() {
    let tmp = tempfile::tempdir().unwrap();
    let d = start(tmp.path());
    let before = spec(21, 1, 2);
    let waiting = spec(22, 1, 2);
    let other = spec(23, 1, 1);
    // A study already waiting when the list is loaded.
    send(&d, "FIONA", &study(tmp.path(), "waiting", &waiting));
    send(&d, "FIONA", &study(tmp.path(), "other", &other));

    // A malformed list: every bad line reported, nothing loaded.
    let bad = tmp.path().join("bad.csv");
    std::fs::write(
        &bad,
        format!(
            "accession_number,project,participant,event\n\
             {},PROJ1,PROJ1-0021,baseline\n\
             {},PROJ1,BAD,baseline\n\
             XYZ1,NOPROJ,PROJ1-0003,baseline\n\
             {},PROJ1,PROJ1-0024,baseline\n\
             XYZ2,PROJ1,PROJ1-0005\n",
            before.accession, waiting.accession, before.accession
        ),
    )
    .unwrap();
    let (ok, _, err) = cli_text(&d, &["coupling", "import", bad.to_str().unwrap()]);
    assert!(!ok);
    for want in [
        "bad.csv:3: participant ID `BAD` does not match",
        "bad.csv:4: unknown project `NOPROJ`",
        "bad.csv:5: duplicate key",
        "bad.csv:6: 3 columns, the header has 4",
        "nothing was loaded",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
    assert!(d.json(&["coupling", "list"]).as_array().unwrap().is_empty());
    assert!(transfers(&d, &[]).is_empty());
    assert_eq!(audit(&d).last().unwrap()["action"], "coupling_refused");

    // A good list: the waiting study is assigned at once.
    let good = tmp.path().join("good.csv");
    std::fs::write(
        &good,
        format!(
            "accession_number,project,participant,event\n\
             {},PROJ1,PROJ1-0021,baseline\n\
             {},PROJ1,PROJ1-0022,followup\n",
            before.accession, waiting.accession
        ),
    )
    .unwrap();
    let (ok, out, err) = cli_text(&d, &["coupling", "import", good.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(
        out.contains("2 rows loaded") && out.contains("assigned study"),
        "{out}"
    );
    let a = assignments(&study_by_uid(&d, &waiting.study_uid));
    assert_eq!(a.len(), 1);
    assert_eq!(a[0]["participant"], "PROJ1-0022");
    assert_eq!(a[0]["event"], "followup");
    assert_eq!(a[0]["via"], "coupling");

    // The study in the list that had not arrived is assigned when it arrives.
    send(&d, "FIONA", &study(tmp.path(), "before", &before));
    let a = assignments(&study_by_uid(&d, &before.study_uid));
    assert_eq!(a.len(), 1);
    assert_eq!(a[0]["participant"], "PROJ1-0021");
    // The one not in the list stays unassigned.
    assert!(assignments(&study_by_uid(&d, &other.study_uid)).is_empty());

    // By StudyInstanceUID too.
    let by_uid = spec(24, 1, 1);
    let uid_csv = tmp.path().join("uid.csv");
    std::fs::write(
        &uid_csv,
        format!(
            "study_instance_uid,project,participant,event\n{},SECOND,S024,scan\n",
            by_uid.study_uid
        ),
    )
    .unwrap();
    let (ok, _, err) = cli_text(&d, &["coupling", "import", uid_csv.to_str().unwrap()]);
    assert!(ok, "{err}");
    send(&d, "FIONA", &study(tmp.path(), "byuid", &by_uid));
    let a = assignments(&study_by_uid(&d, &by_uid.study_uid));
    assert_eq!(
        (a[0]["project"].as_str(), a[0]["participant"].as_str()),
        (Some("SECOND"), Some("S024"))
    );

    assert_eq!(d.json(&["coupling", "list"]).as_array().unwrap().len(), 3);
    let imports = audit(&d)
        .iter()
        .filter(|a| a["action"] == "coupling_import")
        .count();
    assert_eq!(imports, 2);
}

#[test]
fn routing_rule_auto_id_and_derived_series() {
    let tmp = tempfile::tempdir().unwrap();
    let d = start(tmp.path());

    // Routing: already pseudonymized QC data sent to FIONAQC.
    let mut qc = spec(31, 1, 1);
    qc.patient_id = "QC_PROJ1-0042".into();
    send(&d, "FIONAQC", &study(tmp.path(), "qc", &qc));
    let a = assignments(&study_by_uid(&d, &qc.study_uid));
    assert_eq!(a.len(), 1);
    assert_eq!(
        (
            a[0]["participant"].as_str(),
            a[0]["event"].as_str(),
            a[0]["actor"].as_str()
        ),
        (
            Some("PROJ1-0042"),
            Some("followup"),
            Some("rule:qc-phantoms")
        )
    );
    // The same data sent to the main AE title matches no rule.
    let mut qc2 = spec(32, 1, 1);
    qc2.patient_id = "QC_PROJ1-0043".into();
    send(&d, "FIONA", &study(tmp.path(), "qc2", &qc2));
    assert!(assignments(&study_by_uid(&d, &qc2.study_uid)).is_empty());
    // By PatientName, for one calling AE title only.
    let mut ph = spec(38, 1, 1);
    ph.patient_name = "Phantom^S038".into();
    let files = study(tmp.path(), "ph", &ph);
    let out = std::process::Command::new("storescu")
        .env("TCP_NODELAY", "1")
        .args(["-aet", "PHANTOMSCU", "-aec", "FIONA"])
        .arg(d.addr.ip().to_string())
        .arg(d.addr.port().to_string())
        .args(&files)
        .output()
        .unwrap();
    assert!(out.status.success());
    let a = assignments(&study_by_uid(&d, &ph.study_uid));
    assert_eq!(
        (
            a[0]["project"].as_str(),
            a[0]["participant"].as_str(),
            a[0]["actor"].as_str()
        ),
        (Some("SECOND"), Some("S038"), Some("rule:phantom-names"))
    );
    let mut ph2 = spec(39, 1, 1);
    ph2.patient_name = "Phantom^S039".into();
    send(&d, "FIONA", &study(tmp.path(), "ph2", &ph2)); // calling AE TESTSCU: no match
    assert!(assignments(&study_by_uid(&d, &ph2.study_uid)).is_empty());

    // An AE title nobody configured is refused at association.
    let out = storescu(
        d.addr,
        "NOBODY",
        &[],
        &study(tmp.path(), "nobody", &spec(33, 1, 1)),
    );
    assert!(!out.status.success());

    // Auto-ID: the same patient gets the same ID in two studies; another patient another.
    let p1a = spec(34, 1, 1);
    let mut p1b = spec(35, 1, 1);
    p1b.patient_id = p1a.patient_id.clone();
    p1b.patient_name = p1a.patient_name.clone();
    let p2 = spec(36, 1, 1);
    assert_ne!(p2.patient_id, p1a.patient_id);
    for (n, s) in [("p1a", &p1a), ("p1b", &p1b), ("p2", &p2)] {
        send(&d, "PROJ1AUTO", &study(tmp.path(), n, s));
    }
    let id = |s: &StudySpec| {
        let a = assignments(&study_by_uid(&d, &s.study_uid));
        assert_eq!(a.len(), 1);
        assert_eq!(a[0]["via"], "auto_id");
        a[0]["participant"].as_str().unwrap().to_string()
    };
    let (i1a, i1b, i2) = (id(&p1a), id(&p1b), id(&p2));
    assert_eq!(i1a, i1b);
    assert_ne!(i1a, i2);
    let pattern = regex::Regex::new("^PROJ1-[0-9]{4}$").unwrap();
    assert!(
        pattern.is_match(&i1a) && pattern.is_match(&i2),
        "{i1a} {i2}"
    );
    // The original patient ID is not stored in the clear outside the quarantine index:
    // nothing the CLI shows about transfers or the trail carries it.
    let all = format!("{:?}{:?}", transfers(&d, &[]), audit(&d));
    assert!(!all.contains(&p1a.patient_id) && !all.contains(&p2.patient_id));

    // Derived: a workstation sends a series back in the research study fiona issued.
    let t = transfers(&d, &["--project", "PROJ1"]);
    let orig = t
        .iter()
        .find(|x| x["participant"] == i1a.as_str())
        .unwrap()
        .clone();
    let research_uid = orig["research_study_uid"].as_str().unwrap();
    let mut derived = spec(37, 1, 2);
    derived.study_uid = research_uid.to_string();
    derived.patient_id = i1a.clone();
    derived.patient_name = i1a.clone();
    send(&d, "FIONA", &study(tmp.path(), "derived", &derived));
    let detail = study_by_uid(&d, research_uid);
    let a = assignments(&detail);
    assert_eq!(a.len(), 1, "{detail}");
    assert_eq!(a[0]["via"], "derived");
    assert_eq!(a[0]["participant"], i1a.as_str());
    assert_eq!(a[0]["research_study_uid"], research_uid);
    assert_eq!(a[0]["derived_from"], orig["study_key"]);
}

#[test]
fn unassigned_studies_leave_the_assign_list_after_the_visibility_period() {
    let tmp = tempfile::tempdir().unwrap();
    // 0.0001 days is 8.64 seconds: long enough for the sends and CLI calls under load.
    let d = Daemon::start(
        &fiona_bin!(),
        &tmp.path().join("data"),
        &Options {
            extra_toml: format!("unassigned_visible_days = 0.0001\n{PROJECTS}"),
            ..Options::default()
        },
    );
    let (s1, s2) = (spec(41, 1, 1), spec(42, 1, 1));
    send(&d, "FIONA", &study(tmp.path(), "s1", &s1));
    send(&d, "FIONA", &study(tmp.path(), "s2", &s2));
    let v = studies(&d);
    assert_eq!(v.len(), 2);
    assert!(v.iter().all(|s| s["hidden"] == false));
    let k2 = study_by_uid(&d, &s2.study_uid)["study"]["key"]
        .as_str()
        .unwrap()
        .to_string();
    d.assign(&k2, "SECOND", "S042", "scan");
    std::thread::sleep(std::time::Duration::from_millis(9000));
    // The unassigned one is gone from the list; the assigned one stays.
    let v = studies(&d);
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0]["key"], k2.as_str());
    let (_, text, _) = cli_text(&d, &["studies"]);
    assert!(!text.contains(&s1.accession), "{text}");
    // --all shows it, marked hidden; nothing was deleted.
    let all = d.json(&["studies", "--all"]);
    let all = all.as_array().unwrap();
    assert_eq!(all.len(), 2);
    let hidden: Vec<&Value> = all.iter().filter(|s| s["hidden"] == true).collect();
    assert_eq!(hidden.len(), 1);
    assert_eq!(hidden[0]["accession_number"], s1.accession.as_str());
    assert_eq!(hidden[0]["instances"], 1);
    // It can still be assigned by key, and then it is back in the list.
    let k1 = hidden[0]["key"].as_str().unwrap().to_string();
    d.assign(&k1, "SECOND", "S041", "scan");
    assert_eq!(studies(&d).len(), 2);
}
