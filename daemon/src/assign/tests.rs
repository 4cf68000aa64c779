//! Unit tests of assignment on the in-memory tables. The daemon-level tests
//! (`daemon/tests/assign.rs`) drive the same logic through DCMTK and redb.

use super::memory::MemTables;
use super::*;
use crate::header::HeaderFields;
use crate::index::Origin;
use crate::model::StudyRecord;

const SECRET: &str = "0101010101010101010101010101010101010101010101010101010101010101";
const SECRET2: &str = "0303030303030303030303030303030303030303030303030303030303030303";
/// 2026-03-01T12:00:00Z
const NOW: i64 = 1_772_366_400_000;

fn policy(extra: &str) -> Policy {
    let text = format!(
        r#"
[projects.PROJ1]
participant_pattern = "PROJ1-[0-9]{{4}}"
events = ["baseline", "followup"]
approval_start = "2025-01-01"
approval_end = "2027-12-31"
auto_id = {{ ae_title = "PROJ1AUTO", prefix = "PROJ1-", digits = 4, event = "baseline" }}
[projects.PROJ1.deid]
secret = "{SECRET}"
[projects.OTHER2]
participant_pattern = "O2_[A-Z]{{3}}"
events = ["scan"]
approval_start = "2025-01-01"
approval_end = "2030-12-31"
[projects.OTHER2.deid]
secret = "{SECRET2}"
[projects.OLDPROJ]
participant_pattern = ".*"
events = ["x"]
state = "archived"
[projects.ENDED]
participant_pattern = ".*"
events = ["x"]
approval_start = "2025-01-01"
approval_end = "2026-02-28"
{extra}
"#
    );
    let cfg = crate::config::Config::from_toml(&text).unwrap();
    let dir = tempfile::tempdir().unwrap();
    Policy::new(cfg.compile_projects().unwrap(), dir.path(), 7.0).unwrap()
}

/// Put one instance of a study into the tables as the index would, then run `on_arrival`.
#[allow(clippy::too_many_arguments)]
fn arrive(
    t: &mut MemTables,
    p: &Policy,
    study_uid: &str,
    series_uid: &str,
    acc: &str,
    patient_id: &str,
    called_ae: &str,
    now: i64,
) -> String {
    let key = t
        .study_key_by_uid(study_uid)
        .unwrap()
        .unwrap_or_else(|| format!("S{:03}", t.studies.len() + 1));
    let study_new = !t.studies.contains_key(&key);
    let s = t.studies.entry(key.clone()).or_insert_with(|| StudyRecord {
        key: key.clone(),
        study_instance_uid: study_uid.into(),
        accession_number: acc.into(),
        study_date: String::new(),
        study_time: String::new(),
        study_description: String::new(),
        modalities: vec![],
        patient_id: patient_id.into(),
        patient_name: String::new(),
        origin: Origin::default(),
        first_received_ms: now,
        last_received_ms: now,
        series_count: 0,
        instance_count: 0,
        bytes: 0,
        evicted: None,
    });
    s.instance_count += 1;
    let study = s.clone();
    let series = t.series.entry(key.clone()).or_default();
    let series_new = !series.iter().any(|x| x.series_instance_uid == series_uid);
    if series_new {
        series.push(SeriesRecord {
            study_key: key.clone(),
            series_instance_uid: series_uid.into(),
            series_number: None,
            modality: "CT".into(),
            series_description: String::new(),
            first_received_ms: now,
            last_received_ms: now,
            instance_count: 0,
            bytes: 0,
        });
    }
    if let Some(x) = series
        .iter_mut()
        .find(|x| x.series_instance_uid == series_uid)
    {
        x.instance_count += 1;
    }
    let ikey = format!("I{:05}", t.instances.values().map(Vec::len).sum::<usize>());
    t.instances
        .entry(key.clone())
        .or_default()
        .push(ikey.clone());
    let n = NewInstance {
        key: ikey,
        file: String::new(),
        bytes: 1,
        transfer_syntax: String::new(),
        received_ms: now,
        origin: Origin {
            calling_ae: "CT1".into(),
            called_ae: called_ae.into(),
            peer: "127.0.0.1".into(),
        },
        header: HeaderFields {
            study_instance_uid: study_uid.into(),
            series_instance_uid: series_uid.into(),
            accession_number: acc.into(),
            patient_id: patient_id.into(),
            ..HeaderFields::default()
        },
    };
    on_arrival(
        t,
        p,
        &n,
        &Arrival {
            study: &study,
            study_new,
            series_new,
        },
        now,
    )
    .unwrap();
    key
}

fn manual<'a>(
    study: &'a str,
    project: &'a str,
    participant: &'a str,
    event: &'a str,
) -> Request<'a> {
    Request {
        study_key: study,
        project,
        participant,
        event,
        via: Via::Manual,
        actor: "user:alice",
        derived_from: None,
        allow_other_patient: false,
    }
}

/// Import a coupling list as user alice at [`NOW`].
fn import(t: &mut MemTables, p: &Policy, text: &str, replace: bool) -> coupling::ImportReport {
    coupling::import(t, p, text, "user:alice", replace, NOW).unwrap()
}

fn current(t: &MemTables, study: &str, project: &str) -> TransferRecord {
    let a = &t.assignments[&(study.to_string(), project.to_string())];
    t.transfers[a.transfers.last().unwrap()].clone()
}

#[test]
fn manual_assignment_remembers_participant_and_creates_a_transfer() {
    let p = policy("");
    let mut t = MemTables::default();
    let s = arrive(&mut t, &p, "1.2.3", "1.2.3.1", "ACC1", "PAT1", "FIONA", NOW);
    assert!(t.assignments.is_empty());
    let o = assign_audited(
        &mut t,
        &p,
        &manual(&s, "PROJ1", "PROJ1-0001", "baseline"),
        NOW,
        false,
    )
    .unwrap();
    assert_eq!(o.result, "assigned");
    assert!(o.new_participant);
    assert!(o.research_study_uid.starts_with("2.25."));
    assert!(t.participant("PROJ1", "PROJ1-0001").unwrap().is_some());
    let tr = current(&t, &s, "PROJ1");
    assert_eq!(tr.state, TransferState::Requested);
    assert_eq!(tr.kind, TransferKind::Assignment);
    assert_eq!(tr.series, vec!["1.2.3.1"]);
    assert_eq!(tr.instances, 1);
    assert_eq!(tr.actor, "user:alice");
    assert_eq!(t.audit.last().unwrap().action, "assign");
    assert_eq!(
        t.issued_study(&o.research_study_uid).unwrap(),
        Some((s.clone(), "PROJ1".into()))
    );

    // The same values again change nothing.
    let again = assign(
        &mut t,
        &p,
        &manual(&s, "PROJ1", "PROJ1-0001", "baseline"),
        NOW,
    )
    .unwrap();
    assert_eq!(again.result, "unchanged");
    assert!(!again.new_participant);
    assert_eq!(t.transfers.len(), 1);

    // A second project gets its own assignment and transfer.
    let o2 = assign(&mut t, &p, &manual(&s, "OTHER2", "O2_ABC", "scan"), NOW).unwrap();
    assert_eq!(o2.result, "assigned");
    assert_ne!(o2.research_study_uid, o.research_study_uid);
    assert_eq!(t.transfers.len(), 2);
}

#[test]
fn refusals_say_why_and_are_audited() {
    let p = policy("");
    let mut t = MemTables::default();
    let s = arrive(&mut t, &p, "1.2.3", "1.2.3.1", "", "PAT1", "FIONA", NOW);
    for (r, want) in [
        (
            manual(&s, "PROJ1", "PROJ2-0001", "baseline"),
            "does not match",
        ),
        (manual(&s, "PROJ1", "PROJ1-0001", "week9"), "no event"),
        (manual(&s, "OLDPROJ", "x", "x"), "archived"),
        (manual(&s, "ENDED", "x", "x"), "ended on 2026-02-28"),
        (manual(&s, "NOSUCH", "x", "x"), "unknown project"),
    ] {
        let e = assign_audited(&mut t, &p, &r, NOW, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains(want), "{e}");
        let last = t.audit.last().unwrap();
        assert_eq!(last.action, "refused");
        assert!(last.detail.contains(want), "{}", last.detail);
    }
    assert!(t.assignments.is_empty());
    assert!(t.transfers.is_empty());
    assert!(t.participants.is_empty());
    let e = assign(
        &mut t,
        &p,
        &manual("NOPE", "PROJ1", "PROJ1-0001", "baseline"),
        NOW,
    );
    assert!(matches!(e, Err(AssignError::NoStudy(_))));
}

#[test]
fn correction_cancels_what_has_not_been_sent_and_makes_a_new_transfer() {
    let p = policy("");
    let mut t = MemTables::default();
    let s = arrive(&mut t, &p, "1.2.3", "1.2.3.1", "", "PAT1", "FIONA", NOW);
    let first = assign(
        &mut t,
        &p,
        &manual(&s, "PROJ1", "PROJ1-0001", "baseline"),
        NOW,
    )
    .unwrap()
    .transfer
    .unwrap();
    let o = assign(
        &mut t,
        &p,
        &manual(&s, "PROJ1", "PROJ1-0002", "followup"),
        NOW + 1000,
    )
    .unwrap();
    assert_eq!(o.result, "corrected");
    let old = &t.transfers[&first];
    assert_eq!(old.state, TransferState::Cancelled);
    assert!(old.reason.as_deref().unwrap().contains("superseded"));
    let new = current(&t, &s, "PROJ1");
    assert_eq!(new.kind, TransferKind::Correction);
    assert_eq!(new.replaces.as_deref(), Some(first.as_str()));
    assert_eq!(new.participant, "PROJ1-0002");
    // The research study stays the same one.
    assert_eq!(new.research_study_uid, old.research_study_uid);
    let a = &t.assignments[&(s.clone(), "PROJ1".to_string())];
    assert_eq!((a.corrections, a.transfers.len()), (1, 2));
    let audit = t.audit.last().unwrap();
    assert_eq!(audit.action, "reassign");
    assert!(audit.detail.contains("PROJ1-0001"), "{}", audit.detail);

    // De-identified and partly sent: cancelled too (the rest of it would go out under the
    // old participant), saying how much already went.
    let mut queued = current(&t, &s, "PROJ1");
    queued.state = TransferState::Deidentified;
    queued.deliveries = vec![crate::assign::Delivery {
        destination: "research".into(),
        stored: vec!["k1".into(), "k2".into()],
        ..Default::default()
    }];
    t.put_transfer(&queued).unwrap();
    assign(
        &mut t,
        &p,
        &manual(&s, "PROJ1", "PROJ1-0004", "followup"),
        NOW + 1500,
    )
    .unwrap();
    let old = &t.transfers[&queued.id];
    assert_eq!(old.state, TransferState::Cancelled);
    let why = old.reason.as_deref().unwrap();
    assert!(why.contains("2 instances had already been sent"), "{why}");

    // Parked (nothing could be passed on): nothing went out, so a correction cancels it
    // instead of leaving it waiting for review under the old participant.
    let mut parked = current(&t, &s, "PROJ1");
    parked.state = TransferState::Parked;
    t.put_transfer(&parked).unwrap();
    assign(
        &mut t,
        &p,
        &manual(&s, "PROJ1", "PROJ1-0005", "followup"),
        NOW + 1700,
    )
    .unwrap();
    assert_eq!(t.transfers[&parked.id].state, TransferState::Cancelled);

    // A transfer that has been sent is left alone by a correction.
    let mut started = current(&t, &s, "PROJ1");
    started.state = TransferState::Sent;
    t.put_transfer(&started).unwrap();
    assign(
        &mut t,
        &p,
        &manual(&s, "PROJ1", "PROJ1-0003", "followup"),
        NOW + 2000,
    )
    .unwrap();
    assert_eq!(t.transfers[&started.id].state, TransferState::Sent);
}

#[test]
fn later_series_follow_and_become_additions_once_the_transfer_started() {
    let p = policy("");
    let mut t = MemTables::default();
    let s = arrive(&mut t, &p, "1.2.3", "1.2.3.1", "", "PAT1", "FIONA", NOW);
    assign(
        &mut t,
        &p,
        &manual(&s, "PROJ1", "PROJ1-0001", "baseline"),
        NOW,
    )
    .unwrap();
    arrive(&mut t, &p, "1.2.3", "1.2.3.1", "", "PAT1", "FIONA", NOW);
    arrive(&mut t, &p, "1.2.3", "1.2.3.2", "", "PAT1", "FIONA", NOW);
    let tr = current(&t, &s, "PROJ1");
    assert_eq!(tr.series, vec!["1.2.3.1", "1.2.3.2"]);
    assert_eq!(tr.instances, 3);
    assert_eq!(t.audit.last().unwrap().action, "series_follow");

    // The pipeline took the transfer; a new series goes out as an addition.
    let mut started = tr.clone();
    started.state = TransferState::Verified;
    t.put_transfer(&started).unwrap();
    arrive(&mut t, &p, "1.2.3", "1.2.3.3", "", "PAT1", "FIONA", NOW + 5);
    arrive(&mut t, &p, "1.2.3", "1.2.3.3", "", "PAT1", "FIONA", NOW + 6);
    arrive(&mut t, &p, "1.2.3", "1.2.3.4", "", "PAT1", "FIONA", NOW + 7);
    let add = current(&t, &s, "PROJ1");
    assert_ne!(add.id, started.id);
    assert_eq!(add.kind, TransferKind::Addition);
    assert_eq!(add.series, vec!["1.2.3.3", "1.2.3.4"]);
    assert_eq!(add.instances, 3);
    assert_eq!(add.participant, "PROJ1-0001");
    assert_eq!(add.research_study_uid, started.research_study_uid);
    assert_eq!(t.transfers[&started.id].state, TransferState::Verified);
}

#[test]
fn coupling_rows_assign_on_arrival_by_accession_or_uid() {
    let p = policy("");
    let mut t = MemTables::default();
    let r = import(
        &mut t,
        &p,
        "accession_number,study_instance_uid,project,participant,event\n\
         ACC7,,PROJ1,PROJ1-0007,baseline\n\
         ,1.9.9,OTHER2,O2_XYZ,scan\n",
        false,
    );
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.rows, 2);
    assert!(r.assigned.is_empty());
    let a = arrive(&mut t, &p, "1.2.7", "1.2.7.1", "ACC7", "PAT7", "FIONA", NOW);
    let b = arrive(
        &mut t, &p, "1.9.9", "1.9.9.1", "OTHERACC", "PAT9", "FIONA", NOW,
    );
    let c = arrive(&mut t, &p, "1.3.3", "1.3.3.1", "ACC8", "PAT8", "FIONA", NOW);
    let ta = current(&t, &a, "PROJ1");
    assert_eq!(
        (ta.participant.as_str(), ta.via),
        ("PROJ1-0007", Via::Coupling)
    );
    assert!(ta.actor.starts_with("coupling:"));
    assert_eq!(current(&t, &b, "OTHER2").participant, "O2_XYZ");
    assert!(t.assignments_of(&c).unwrap().is_empty());
}

#[test]
fn coupling_import_assigns_studies_already_waiting() {
    let p = policy("");
    let mut t = MemTables::default();
    let a = arrive(&mut t, &p, "1.2.7", "1.2.7.1", "ACC7", "PAT7", "FIONA", NOW);
    let r = import(
        &mut t,
        &p,
        "\u{feff}accession_number;project;participant;event\nACC7;PROJ1;PROJ1-0007;baseline\n",
        false,
    );
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.assigned.len(), 1);
    assert_eq!(current(&t, &a, "PROJ1").participant, "PROJ1-0007");
    // Re-importing the same list changes nothing; a conflicting one needs --replace.
    let again = import(
        &mut t,
        &p,
        "accession_number,project,participant,event\nACC7,PROJ1,PROJ1-0007,baseline\n",
        false,
    );
    assert!(again.errors.is_empty());
    assert_eq!((again.unchanged, again.assigned.len()), (1, 0));
    let conflict = import(
        &mut t,
        &p,
        "accession_number,project,participant,event\nACC7,PROJ1,PROJ1-0008,baseline\n",
        false,
    );
    assert_eq!(conflict.errors.len(), 1);
    assert_eq!(conflict.errors[0].line, 2);
    assert!(conflict.errors[0].message.contains("--replace"));
    let replaced = import(
        &mut t,
        &p,
        "accession_number,project,participant,event\nACC7,PROJ1,PROJ1-0008,baseline\n",
        true,
    );
    assert!(replaced.errors.is_empty());
    assert_eq!(replaced.replaced, 1);
    assert_eq!(current(&t, &a, "PROJ1").participant, "PROJ1-0008");
}

#[test]
fn malformed_coupling_lists_load_nothing_and_name_every_bad_line() {
    let p = policy("");
    let mut t = MemTables::default();
    let text = "accession_number,project,participant,event\n\
                A1,PROJ1,PROJ1-0001,baseline\n\
                A2,PROJ1,BAD-ID,baseline\n\
                A3,NOPROJ,PROJ1-0003,baseline\n\
                A1,PROJ1,PROJ1-0004,baseline\n\
                A5,PROJ1,PROJ1-0005\n\
                \n\
                A6,OLDPROJ,x,x\n\
                A7,PROJ1,PROJ1-0007,week9\n\
                ,PROJ1,PROJ1-0008,baseline\n\
                A9,PROJ1,PROJ1-0009,baseline\n";
    let r = import(&mut t, &p, text, false);
    let lines: Vec<u64> = r.errors.iter().map(|e| e.line).collect();
    assert_eq!(lines, vec![3, 4, 5, 6, 8, 9, 10], "{:?}", r.errors);
    let msg = |l: u64| {
        r.errors
            .iter()
            .find(|e| e.line == l)
            .map(|e| e.message.clone())
            .unwrap()
    };
    assert!(msg(3).contains("pattern"));
    assert!(msg(4).contains("unknown project"));
    assert!(msg(5).contains("duplicate") && msg(5).contains("line 2"));
    assert!(msg(6).contains("columns"));
    assert!(msg(8).contains("archived"));
    assert!(msg(9).contains("event"));
    assert!(t.coupling.is_empty(), "nothing may be loaded");
    assert_eq!(t.audit.last().unwrap().action, "coupling_refused");
    for (text, want) in [
        ("", "empty"),
        ("accession_number,project,participant\n", "event"),
        ("patient,project,participant,event\n", "unknown column"),
        ("accession_number,project,participant,event\n", "no rows"),
        (
            "study_instance_uid,project,participant,event\n1.02.3,PROJ1,PROJ1-0001,baseline\n",
            "not a valid UID",
        ),
    ] {
        let e = coupling::parse(text, &p, utc_date(NOW)).unwrap_err();
        assert!(
            e.iter().any(|x| x.message.contains(want)),
            "{text:?}: {e:?}"
        );
    }
}

#[test]
fn routing_rules_take_the_id_from_the_data() {
    let p = policy(
        r#"
[[routing]]
name = "qc"
project = "PROJ1"
event = "followup"
called_ae = "FIONAQC"
pattern = "^QC_(PROJ1-[0-9]+)$"
capture = 1
"#,
    );
    let mut t = MemTables::default();
    let a = arrive(
        &mut t,
        &p,
        "1.5",
        "1.5.1",
        "",
        "QC_PROJ1-0042",
        "FIONAQC",
        NOW,
    );
    let tr = current(&t, &a, "PROJ1");
    assert_eq!(
        (tr.participant.as_str(), tr.event.as_str()),
        ("PROJ1-0042", "followup")
    );
    assert_eq!(tr.actor, "rule:qc");
    assert_eq!(t.audit.last().unwrap().action, "rule_match");
    // Wrong called AE: no match.
    let b = arrive(
        &mut t,
        &p,
        "1.6",
        "1.6.1",
        "",
        "QC_PROJ1-0042",
        "FIONA",
        NOW,
    );
    assert!(t.assignments_of(&b).unwrap().is_empty());
    // A capture that does not fit the pattern is refused, and not written to the trail.
    let c = arrive(
        &mut t,
        &p,
        "1.7",
        "1.7.1",
        "",
        "QC_PROJ1-12345678",
        "FIONAQC",
        NOW,
    );
    assert!(t.assignments_of(&c).unwrap().is_empty());
    let last = t.audit.last().unwrap();
    assert_eq!(last.action, "refused");
    assert_eq!(last.participant.as_deref(), Some(""));
    assert!(!last.detail.contains("12345678"), "{}", last.detail);
}

#[test]
fn auto_id_is_stable_per_patient_and_distinct_between_patients() {
    let p = policy("");
    let mut t = MemTables::default();
    let a1 = arrive(
        &mut t,
        &p,
        "2.1",
        "2.1.1",
        "",
        "12345678901",
        "PROJ1AUTO",
        NOW,
    );
    let a2 = arrive(
        &mut t,
        &p,
        "2.2",
        "2.2.1",
        "",
        "12345678901",
        "PROJ1AUTO",
        NOW,
    );
    let b = arrive(
        &mut t,
        &p,
        "2.3",
        "2.3.1",
        "",
        "10987654321",
        "PROJ1AUTO",
        NOW,
    );
    let (i1, i2, ib) = (
        current(&t, &a1, "PROJ1").participant,
        current(&t, &a2, "PROJ1").participant,
        current(&t, &b, "PROJ1").participant,
    );
    assert_eq!(i1, i2);
    assert_ne!(i1, ib);
    let proj = p.projects.get("PROJ1").unwrap();
    assert!(proj.check_participant(&i1).is_ok() && proj.check_participant(&ib).is_ok());
    // The original ID is not stored by assignment: not in the auto-ID table, participant
    // records, transfers or the trail (only the quarantine's study records hold it).
    let stored = format!(
        "{:?}{:?}{:?}{:?}{:?}",
        t.auto_ids, t.participants, t.transfers, t.audit, t.assignments
    );
    assert!(!stored.contains("12345678901") && !stored.contains("10987654321"));
    // Studies sent to the main AE title are not auto-assigned.
    let c = arrive(&mut t, &p, "2.4", "2.4.1", "", "12345678901", "FIONA", NOW);
    assert!(t.assignments_of(&c).unwrap().is_empty());
}

#[test]
fn auto_id_probes_past_taken_ids_and_refuses_when_full() {
    let p = policy(
        r#"
[projects.TINYPROJ]
participant_pattern = "T[0-9]"
events = ["b"]
approval_start = "2025-01-01"
approval_end = "2030-12-31"
auto_id = { ae_title = "TINYAUTO", prefix = "T", digits = 1, event = "b" }
[projects.TINYPROJ.deid]
secret = "0202020202020202020202020202020202020202020202020202020202020202"
"#,
    );
    let mut t = MemTables::default();
    let mut ids = std::collections::BTreeSet::new();
    for i in 0..10 {
        let k = arrive(
            &mut t,
            &p,
            &format!("3.{i}"),
            &format!("3.{i}.1"),
            "",
            &format!("PAT{i}"),
            "TINYAUTO",
            NOW,
        );
        ids.insert(current(&t, &k, "TINYPROJ").participant);
    }
    assert_eq!(ids.len(), 10, "ten patients, ten distinct IDs");
    let k = arrive(&mut t, &p, "3.99", "3.99.1", "", "PAT99", "TINYAUTO", NOW);
    assert!(t.assignments_of(&k).unwrap().is_empty());
    assert_eq!(t.audit.last().unwrap().action, "refused");
}

/// A study of PAT1 assigned by hand to PROJ1-0001 baseline.
fn assigned_study() -> (Policy, MemTables, String, AssignOutcome) {
    let p = policy("");
    let mut t = MemTables::default();
    let s = arrive(&mut t, &p, "1.2.3", "1.2.3.1", "ACC1", "PAT1", "FIONA", NOW);
    let o = assign(
        &mut t,
        &p,
        &manual(&s, "PROJ1", "PROJ1-0001", "baseline"),
        NOW,
    )
    .unwrap();
    (p, t, s, o)
}

#[test]
fn derived_series_join_the_research_study() {
    let (p, mut t, s, o) = assigned_study();
    // A workstation sends back a series in the research study.
    let d = arrive(
        &mut t,
        &p,
        &o.research_study_uid,
        "9.9.9",
        "",
        "PROJ1-0001",
        "FIONA",
        NOW + 10,
    );
    assert_ne!(d, s);
    let a = &t.assignments[&(d.clone(), "PROJ1".to_string())];
    assert_eq!(a.via, Via::Derived);
    assert_eq!(a.derived_from.as_deref(), Some(s.as_str()));
    assert_eq!(a.research_study_uid, o.research_study_uid);
    assert_eq!(
        (a.participant.as_str(), a.event.as_str()),
        ("PROJ1-0001", "baseline")
    );
    assert_eq!(t.audit.last().unwrap().action, "derived");
    // Its research UID is not re-registered as a new issued study.
    assert_eq!(t.issued[&o.research_study_uid].0, s);
}

#[test]
fn transfers_list_their_instances() {
    let p = policy("");
    let mut t = MemTables::default();
    let s = arrive(&mut t, &p, "1.2.3", "1.2.3.1", "", "PAT1", "FIONA", NOW);
    arrive(&mut t, &p, "1.2.3", "1.2.3.1", "", "PAT1", "FIONA", NOW);
    let o = assign(
        &mut t,
        &p,
        &manual(&s, "PROJ1", "PROJ1-0001", "baseline"),
        NOW,
    )
    .unwrap();
    let first = o.transfer.unwrap();
    assert_eq!(t.transfer_instances[&first].len(), 2);
    arrive(&mut t, &p, "1.2.3", "1.2.3.2", "", "PAT1", "FIONA", NOW);
    assert_eq!(t.transfer_instances[&first].len(), 3);
    // Started: a late instance of an already-sent series is an addition of that one instance.
    let mut started = t.transfers[&first].clone();
    started.state = TransferState::Sent;
    t.put_transfer(&started).unwrap();
    arrive(&mut t, &p, "1.2.3", "1.2.3.1", "", "PAT1", "FIONA", NOW + 1);
    let add = current(&t, &s, "PROJ1");
    assert_eq!(add.kind, TransferKind::Addition);
    assert_eq!(t.transfer_instances[&add.id], vec!["I00003".to_string()]);
    assert_eq!(add.instances, 1);
}

#[test]
fn auto_id_before_approval_reserves_nothing_and_never_shares_an_id() {
    let p = policy(
        r#"
[projects.LATEPROJ]
participant_pattern = "T[0-9]"
events = ["b"]
approval_start = "2026-06-01"
approval_end = "2030-12-31"
auto_id = { ae_title = "LATEAUTO", prefix = "T", digits = 1, event = "b" }
[projects.LATEPROJ.deid]
secret = "0404040404040404040404040404040404040404040404040404040404040404"
"#,
    );
    let mut t = MemTables::default();
    // Before the approval starts: refused, no ID generated.
    for i in 0..6 {
        let k = arrive(
            &mut t,
            &p,
            &format!("4.{i}"),
            &format!("4.{i}.1"),
            "",
            &format!("PAT{i}"),
            "LATEAUTO",
            NOW,
        );
        assert!(t.assignments_of(&k).unwrap().is_empty());
    }
    assert!(t.auto_ids.is_empty());
    assert!(t
        .audit
        .last()
        .unwrap()
        .detail
        .contains("starts on 2026-06-01"));
    // After: ten patients, ten distinct IDs.
    let later = NOW + 120 * 86_400_000;
    let mut ids = std::collections::BTreeSet::new();
    for i in 0..10 {
        let k = arrive(
            &mut t,
            &p,
            &format!("5.{i}"),
            &format!("5.{i}.1"),
            "",
            &format!("PAT{i}"),
            "LATEAUTO",
            later,
        );
        ids.insert(current(&t, &k, "LATEPROJ").participant);
    }
    assert_eq!(ids.len(), 10);
}

#[test]
fn later_series_are_not_added_once_the_approval_ended() {
    let p = policy("");
    let mut t = MemTables::default();
    let s = arrive(&mut t, &p, "1.2.3", "1.2.3.1", "", "PAT1", "FIONA", NOW);
    assign(
        &mut t,
        &p,
        &manual(&s, "PROJ1", "PROJ1-0001", "baseline"),
        NOW,
    )
    .unwrap();
    // PROJ1's approval ends 2027-12-31.
    let after = NOW + 700 * 86_400_000;
    arrive(&mut t, &p, "1.2.3", "1.2.3.2", "", "PAT1", "FIONA", after);
    let tr = current(&t, &s, "PROJ1");
    assert_eq!(tr.series, vec!["1.2.3.1"]);
    assert_eq!(tr.instances, 1);
    let last = t.audit.last().unwrap();
    assert_eq!(last.action, "refused");
    assert!(
        last.detail.contains("ended on 2027-12-31"),
        "{}",
        last.detail
    );
}

#[test]
fn one_participant_id_is_one_patient_unless_the_admin_says_so() {
    let p = policy("");
    let mut t = MemTables::default();
    let a = arrive(&mut t, &p, "1.1", "1.1.1", "", "PAT1", "FIONA", NOW);
    let b = arrive(&mut t, &p, "1.2", "1.2.1", "", "PAT2", "FIONA", NOW);
    let c = arrive(&mut t, &p, "1.3", "1.3.1", "", "PAT1", "FIONA", NOW);
    assign(
        &mut t,
        &p,
        &manual(&a, "PROJ1", "PROJ1-0001", "baseline"),
        NOW,
    )
    .unwrap();
    // The same patient's next study: fine.
    assign(
        &mut t,
        &p,
        &manual(&c, "PROJ1", "PROJ1-0001", "followup"),
        NOW,
    )
    .unwrap();
    // Another patient under the same ID: refused, with a way out.
    let e = assign_audited(
        &mut t,
        &p,
        &manual(&b, "PROJ1", "PROJ1-0001", "followup"),
        NOW,
        false,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("another patient") && e.contains("--allow-other-patient"),
        "{e}"
    );
    let ok = Request {
        allow_other_patient: true,
        ..manual(&b, "PROJ1", "PROJ1-0001", "followup")
    };
    assert_eq!(assign(&mut t, &p, &ok, NOW).unwrap().result, "assigned");
    // Hashes only: no PatientID in the participant record.
    let rec = t.participant("PROJ1", "PROJ1-0001").unwrap().unwrap();
    assert_eq!(rec.patient_hashes.len(), 2);
    assert!(!format!("{rec:?}").contains("PAT1"));
}

#[test]
fn a_correction_reaches_derived_studies() {
    let (p, mut t, s, o) = assigned_study();
    let d = arrive(
        &mut t,
        &p,
        &o.research_study_uid,
        "9.9.9",
        "",
        "PROJ1-0001",
        "FIONA",
        NOW,
    );
    assign(
        &mut t,
        &p,
        &manual(&s, "PROJ1", "PROJ1-0002", "followup"),
        NOW + 1,
    )
    .unwrap();
    let a = &t.assignments[&(d.clone(), "PROJ1".to_string())];
    assert_eq!(
        (a.participant.as_str(), a.event.as_str()),
        ("PROJ1-0002", "followup")
    );
    assert_eq!(a.research_study_uid, o.research_study_uid);
    assert_eq!(current(&t, &d, "PROJ1").kind, TransferKind::Correction);
}

#[test]
fn replace_corrects_only_what_the_list_itself_assigned() {
    let p = policy("");
    let mut t = MemTables::default();
    let a = arrive(&mut t, &p, "1.7", "1.7.1", "ACC7", "PAT7", "FIONA", NOW);
    let b = arrive(&mut t, &p, "1.8", "1.8.1", "ACC8", "PAT8", "FIONA", NOW);
    let r = import(
        &mut t,
        &p,
        "accession_number,project,participant,event\nACC7,PROJ1,PROJ1-0007,baseline\nACC8,PROJ1,PROJ1-0008,baseline\n",
        false,
    );
    assert_eq!(r.assigned.len(), 2);
    // The admin corrects study a by hand.
    assign(
        &mut t,
        &p,
        &manual(&a, "PROJ1", "PROJ1-0009", "baseline"),
        NOW,
    )
    .unwrap();
    // Re-importing the same list with --replace does not undo the manual correction.
    let again = import(
        &mut t,
        &p,
        "accession_number,project,participant,event\nACC7,PROJ1,PROJ1-0007,baseline\nACC8,PROJ1,PROJ1-0008,baseline\n",
        true,
    );
    assert_eq!((again.unchanged, again.replaced), (2, 0));
    assert_eq!(current(&t, &a, "PROJ1").participant, "PROJ1-0009");
    assert!(
        again.refused.iter().any(|x| x.contains("not changed")),
        "{:?}",
        again.refused
    );
    // A real replacement corrects the coupled study b, and still leaves a alone.
    let changed = import(
        &mut t,
        &p,
        "accession_number,project,participant,event\nACC7,PROJ1,PROJ1-0017,baseline\nACC8,PROJ1,PROJ1-0018,baseline\n",
        true,
    );
    assert_eq!(changed.replaced, 2);
    assert_eq!(current(&t, &b, "PROJ1").participant, "PROJ1-0018");
    assert_eq!(current(&t, &a, "PROJ1").participant, "PROJ1-0009");
}

#[test]
fn csv_line_numbers_survive_blank_lines_and_cr_endings() {
    let p = policy("");
    let today = utc_date(NOW);
    // Leading blank lines, semicolons, CR-only line ends.
    let text = "\r\raccession_number;project;participant;event\rA1;PROJ1;BAD;baseline\r";
    let e = coupling::parse(text, &p, today).unwrap_err();
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].line, 4, "{e:?}");
    let e = coupling::parse("\n\npatient,project,participant,event\n", &p, today).unwrap_err();
    assert!(e.iter().all(|x| x.line == 3), "{e:?}");
    // Quotes and invisible characters in an accession number are refused.
    for acc in ["\" \"\"A1\"\"\"", "A\u{200b}1"] {
        let text = format!(
            "accession_number,project,participant,event\n{acc},PROJ1,PROJ1-0001,baseline\n"
        );
        let e = coupling::parse(&text, &p, today).unwrap_err();
        assert!(e[0].message.contains("accession number"), "{acc:?}: {e:?}");
    }
}
