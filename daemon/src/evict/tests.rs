//! Housekeeping rules on a real index and real files, with the clock and the free space
//! given: retention without sleeping for days, the order of eviction under pressure, what
//! never goes, and what stays in the index.

use super::*;
use crate::header::HeaderFields;
use crate::index::redb_store::RedbStore;
use crate::index::{NewInstance, Origin};
use crate::model::{Delivery, Parked, TransferKind, Via};

const T0: i64 = 1_800_000_000_000;
const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

struct Fixture {
    _dir: tempfile::TempDir,
    q: Quarantine,
    store: RedbStore,
    s: Settings,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let q = Quarantine::open(dir.path()).unwrap();
    let store = RedbStore::open(&q.index_path()).unwrap();
    let s = Settings::from_config(&Config::default());
    Fixture {
        _dir: dir,
        q,
        store,
        s,
    }
}

impl Fixture {
    /// A study of `n` instances of `bytes` each, received at `at`; returns its key.
    fn study(&self, name: &str, n: usize, bytes: u64, at: i64) -> String {
        let mut batch = Vec::new();
        for i in 0..n {
            let key = format!("{name}{i:03}").to_uppercase();
            let rel = format!("objects/d/{key}.dcm");
            let path = self.q.object_path(&rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, vec![0u8; bytes as usize]).unwrap();
            batch.push(NewInstance {
                key,
                file: rel,
                bytes,
                transfer_syntax: "1.2.840.10008.1.2.1".into(),
                received_ms: at,
                origin: Origin::default(),
                header: HeaderFields {
                    sop_instance_uid: format!("2.25.{}{i}", uid_of(name)),
                    study_instance_uid: format!("2.25.{}", uid_of(name)),
                    series_instance_uid: format!("2.25.{}9", uid_of(name)),
                    modality: "CT".into(),
                    patient_name: "Doe^Jane".into(),
                    patient_id: "12345678901".into(),
                    accession_number: format!("ACC{name}"),
                    ..HeaderFields::default()
                },
            });
        }
        let out = self
            .store
            .commit(&batch, &crate::index::NoArrival, at)
            .unwrap();
        match &out[0] {
            crate::model::CommitOutcome::Stored { study_key } => study_key.clone(),
            other => panic!("{other:?}"),
        }
    }

    /// Assign a study with one transfer in `state` (verified at `verified_at`).
    fn assign(&self, study: &str, state: TransferState, verified_at: Option<i64>, parked: bool) {
        let id = format!("T{study}");
        let t = TransferRecord {
            id: id.clone(),
            study_key: study.into(),
            project: "p".into(),
            participant: "P1".into(),
            event: "e".into(),
            kind: TransferKind::Assignment,
            via: Via::Manual,
            actor: "user:test".into(),
            created_ms: T0,
            series: vec![],
            instances: 1,
            state,
            state_ms: verified_at.unwrap_or(T0),
            reason: None,
            research_study_uid: "2.25.7".into(),
            replaces: None,
            sent: 1,
            verified_ms: verified_at,
            deidentified: 1,
            dropped: 0,
            parked: if parked {
                vec![Parked {
                    instance: "X".into(),
                    reason: "could not decode".into(),
                }]
            } else {
                vec![]
            },
            deliveries: vec![Delivery::default()],
            deid_attempts: 0,
            next_deid_ms: 0,
        };
        let a = AssignmentRecord {
            study_key: study.into(),
            project: "p".into(),
            participant: "P1".into(),
            event: "e".into(),
            via: Via::Manual,
            actor: "user:test".into(),
            assigned_ms: T0,
            research_study_uid: "2.25.7".into(),
            derived_from: None,
            transfers: vec![id.clone()],
            corrections: 0,
        };
        let keys = self.store.instances_of(study).unwrap();
        self.store
            .write_assign(&mut |tb| {
                tb.put_transfer(&t)?;
                tb.put_assignment(&a)?;
                let k: Vec<String> = keys.iter().map(|i| i.key.clone()).collect();
                tb.add_transfer_instances(&id, &k)
            })
            .unwrap();
        // Its outbound copies.
        let dir = outbound::transfer_dir(self.q.root(), &id);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("x.dcm"), b"outbound").unwrap();
    }

    fn reject(&self, key: &str, at: i64) {
        let rel = format!("rejected/{key}.dcm");
        std::fs::write(self.q.object_path(&rel), b"rejected bytes").unwrap();
        self.store
            .record_rejection(&RejectRecord {
                key: key.into(),
                file: rel,
                bytes: 14,
                received_ms: at,
                status: 0xC000,
                reason: "test".into(),
                origin: Origin::default(),
                evicted_ms: None,
            })
            .unwrap();
    }

    fn files_of(&self, study: &str) -> Vec<PathBuf> {
        self.store
            .instances_of(study)
            .unwrap()
            .iter()
            .map(|i| self.q.object_path(&i.file))
            .collect()
    }

    fn evictions(&self) -> Vec<AuditRecord> {
        self.store
            .audit_trail()
            .unwrap()
            .into_iter()
            .filter(|a| a.action == "evict")
            .collect()
    }
}

fn uid_of(name: &str) -> String {
    name.bytes().map(|b| b.to_string()).collect()
}

/// Plenty of space: no pressure.
const ROOMY: Space = Space {
    free: 900,
    total: 1000,
};

#[test]
fn retention_deletes_old_unassigned_studies_and_rejected_files_without_pressure() {
    let f = fixture();
    let old = f.study("old", 3, 100, T0);
    let young = f.study("young", 2, 100, T0 + 10 * DAY);
    let old_files = f.files_of(&old);
    f.reject("R1", T0);
    f.reject("R2", T0 + 10 * DAY);
    assert_eq!(old_files.len(), 3);
    assert!(old_files.iter().all(|p| p.exists()));

    // Day 29: nothing is old enough, and space is plenty.
    let r = pass_in(&f.store, &f.q, &f.s, "housekeeping", T0 + 29 * DAY, ROOMY).unwrap();
    assert!(r.last_pass.is_none(), "{r:?}");
    assert!(f.evictions().is_empty());

    // Day 31: the old study and the old rejected file go; the young ones stay.
    let r = pass_in(&f.store, &f.q, &f.s, "housekeeping", T0 + 31 * DAY, ROOMY).unwrap();
    let p = r.last_pass.expect("a pass that evicted");
    assert_eq!((p.studies, p.instances, p.rejected_files), (1, 3, 1));
    assert!(old_files.iter().all(|p| !p.exists()));
    let st = f.store.study(&old).unwrap().unwrap();
    assert!(st.is_evicted());
    let e = st.evicted.as_ref().unwrap();
    assert_eq!(e.reason, EvictReason::UnassignedRetention);
    assert_eq!((e.instances, e.bytes, e.series), (3, 300, 1));
    // No index entry names a missing file; nothing identifying stays.
    assert!(f.store.instances_of(&old).unwrap().is_empty());
    assert!(f.store.series_of(&old).unwrap().is_empty());
    assert!(!f.store.has_sop_instance("2.25.1111081000").unwrap());
    assert!(st.patient_name.is_empty() && st.patient_id.is_empty());
    assert!(st.accession_number.is_empty());
    assert_eq!(f.files_of(&young).len(), 2);
    assert!(f.files_of(&young).iter().all(|p| p.exists()));
    let r1 = f.store.rejection("R1").unwrap().unwrap();
    assert!(r1.evicted_ms.is_some());
    assert!(!f.q.object_path("rejected/R1.dcm").exists());
    assert!(f.q.object_path("rejected/R2.dcm").exists());
    assert_eq!(f.store.totals().unwrap().rejected, 1);
    // One audit record for the pass, with counts and no patient data.
    let a = f.evictions();
    assert_eq!(a.len(), 1, "{a:?}");
    assert!(a[0]
        .detail
        .contains("1 studies (3 instances), 1 rejected files"));
    assert!(a[0].detail.contains("unassigned_retention"));
    assert!(!a[0].detail.contains("Doe") && !a[0].detail.contains("ACC"));

    // Again: nothing more, no new audit record.
    let r = pass_in(&f.store, &f.q, &f.s, "housekeeping", T0 + 32 * DAY, ROOMY).unwrap();
    assert!(r.last_pass.is_none());
    assert_eq!(f.evictions().len(), 1);

    // Day 41: the young ones' turn.
    pass_in(&f.store, &f.q, &f.s, "housekeeping", T0 + 41 * DAY, ROOMY).unwrap();
    assert!(f.store.study(&young).unwrap().unwrap().is_evicted());
    assert!(!f.q.object_path("rejected/R2.dcm").exists());
}

#[test]
fn pressure_evicts_verified_then_hidden_unassigned_then_rejected_oldest_first() {
    let f = fixture();
    let now = T0 + 20 * DAY;
    // Verified long ago (two of them; the older goes first), verified within the grace.
    let v_old = f.study("vold", 2, 100, T0);
    f.assign(&v_old, TransferState::Verified, Some(T0 + DAY), false);
    let v_new = f.study("vnew", 2, 100, T0);
    f.assign(&v_new, TransferState::Verified, Some(T0 + 2 * DAY), false);
    let v_grace = f.study("vgrace", 2, 100, T0);
    f.assign(&v_grace, TransferState::Verified, Some(now - HOUR), false);
    // Never: unsent (each state), failed, parked (with a verified transfer), receiving.
    let mut never = Vec::new();
    for (i, st) in [
        TransferState::Requested,
        TransferState::Deidentified,
        TransferState::Sent,
        TransferState::Failed,
        TransferState::Parked,
    ]
    .into_iter()
    .enumerate()
    {
        let k = f.study(&format!("never{i}"), 1, 100, T0);
        f.assign(&k, st, None, false);
        never.push(k);
    }
    let parked = f.study("parked", 1, 100, T0);
    f.assign(&parked, TransferState::Verified, Some(T0 + DAY), true);
    never.push(parked);
    let receiving = f.study("recv", 1, 100, now - 1000);
    never.push(receiving);
    // Unassigned: past the assign list's window (8 days), and within it.
    let hidden = f.study("hidden", 1, 100, T0 + 10 * DAY);
    let visible = f.study("visible", 1, 100, now - DAY);
    f.reject("OLDREJ", now - 2 * DAY);
    f.reject("NEWREJ", now - HOUR);

    // Need: target 25 % of 10,000 = 2,500 free; 1,000 free: 1,500 to free. The two old
    // verified studies give 2 x (200 + 8 outbound) = 416: not enough; then the hidden
    // unassigned study (100): not enough; then the old rejected file (14).
    let tight = Space {
        free: 1000,
        total: 10_000,
    };
    let (plan, report) = dry_run_in(&f.store, f.q.root(), &f.s, now, tight).unwrap();
    let order: Vec<(&str, EvictReason)> = plan.iter().map(|c| (c.key.as_str(), c.reason)).collect();
    assert_eq!(
        order,
        vec![
            (v_old.as_str(), EvictReason::Verified),
            (v_new.as_str(), EvictReason::Verified),
            (hidden.as_str(), EvictReason::UnassignedHidden),
            ("OLDREJ", EvictReason::Rejected),
        ]
    );
    assert_eq!(plan[0].bytes, 208, "originals and outbound copies");
    assert_eq!(report.unsent_bytes, 400, "{report:?}");
    assert_eq!(report.parked_bytes, 200);
    assert_eq!(report.receiving_bytes, 100);
    assert_eq!(report.evictable_bytes, 208 + 208 + 100 + 14);
    assert!(report.pressure.is_none());

    // Less needed (1,500 - 1,190 = 310): the two verified studies, not the hidden one.
    let (plan, _) = dry_run_in(
        &f.store,
        f.q.root(),
        &f.s,
        now,
        Space {
            free: 1190,
            total: 6_000,
        },
    )
    .unwrap();
    let keys: Vec<&str> = plan.iter().map(|c| c.key.as_str()).collect();
    assert_eq!(keys, vec![v_old.as_str(), v_new.as_str()]);

    // Not below the high-water mark: nothing but retention (none due).
    let (plan, _) = dry_run_in(&f.store, f.q.root(), &f.s, now, ROOMY).unwrap();
    assert!(plan.is_empty(), "{plan:?}");

    // The pass: everything chosen goes, nothing else.
    let never_files: Vec<PathBuf> = never.iter().flat_map(|k| f.files_of(k)).collect();
    let keep_files: Vec<PathBuf> = [&v_grace, &visible]
        .iter()
        .flat_map(|k| f.files_of(k))
        .collect();
    let r = pass_in(&f.store, &f.q, &f.s, "housekeeping", now, tight).unwrap();
    let p = r.last_pass.unwrap();
    assert_eq!((p.studies, p.instances, p.rejected_files), (3, 5, 1));
    for k in [&v_old, &v_new] {
        let st = f.store.study(k).unwrap().unwrap();
        assert_eq!(st.evicted.as_ref().unwrap().reason, EvictReason::Verified);
        // The accession number stays (to fetch the study again from the PACS).
        assert!(!st.accession_number.is_empty() && st.patient_name.is_empty());
        assert!(f
            .store
            .transfer_instances(&format!("T{k}"))
            .unwrap()
            .is_empty());
        assert!(!outbound::transfer_dir(f.q.root(), &format!("T{k}")).exists());
    }
    assert!(never_files.iter().all(|p| p.exists()));
    assert!(keep_files.iter().all(|p| p.exists()));
    for k in &never {
        assert!(f.store.study(k).unwrap().unwrap().evicted.is_none());
    }
    // (The receiving study, last, has no transfer.)
    for k in &never[..never.len() - 1] {
        assert!(outbound::transfer_dir(f.q.root(), &format!("T{k}")).exists());
    }
    assert!(f.q.object_path("rejected/NEWREJ.dcm").exists());

    // Still short, nothing left that may go: the report says why.
    let (plan, report) = dry_run_in(&f.store, f.q.root(), &f.s, now, tight).unwrap();
    assert!(plan.is_empty(), "{plan:?}");
    let why = report.pressure.expect("a pressure note");
    assert!(why.contains("400 B held by unsent transfers"), "{why}");
    assert!(why.contains("0 evictable"), "{why}");
}

#[test]
fn a_study_that_changed_since_the_survey_is_not_evicted() {
    let f = fixture();
    let now = T0 + 20 * DAY;
    let k = f.study("chg", 2, 100, T0);
    f.assign(&k, TransferState::Verified, Some(T0 + DAY), false);
    let tight = Space {
        free: 0,
        total: 10_000,
    };
    let (plan, _) = dry_run_in(&f.store, f.q.root(), &f.s, now, tight).unwrap();
    assert_eq!(plan.len(), 1);
    // Re-sent between the survey and the commit: the transaction sees it and skips it.
    f.store
        .write_assign(&mut |t| {
            let mut tr = t.transfer(&format!("T{k}"))?.unwrap();
            tr.move_to(TransferState::Requested, now)?;
            t.put_transfer(&tr)
        })
        .unwrap();
    let mut summary = PassSummary::default();
    let mut doomed = Doomed::default();
    f.store
        .write_assign(&mut |t| {
            let done = evict_study(
                t,
                &f.s,
                f.q.root(),
                &plan[0],
                now,
                &mut summary,
                &mut doomed,
            )?;
            assert!(!done);
            Ok(())
        })
        .unwrap();
    assert!(doomed.files.is_empty());
    assert!(f.files_of(&k).iter().all(|p| p.exists()));
}

#[test]
fn recovery_removes_what_a_crash_left_after_the_commit() {
    let f = fixture();
    let now = T0 + 20 * DAY;
    let k = f.study("crash", 2, 100, T0);
    f.assign(&k, TransferState::Verified, Some(T0 + DAY), false);
    f.reject("REJ", T0);
    let files = f.files_of(&k);
    // The commit happens, the unlink does not (a crash in between).
    let (plan, _) = dry_run_in(
        &f.store,
        f.q.root(),
        &f.s,
        now,
        Space {
            free: 0,
            total: 10_000,
        },
    )
    .unwrap();
    let mut summary = PassSummary::default();
    let mut doomed = Doomed::default();
    f.store
        .write_assign(&mut |t| {
            summary = PassSummary::default();
            doomed = Doomed::default();
            for c in &plan {
                if c.kind == "study" {
                    evict_study(t, &f.s, f.q.root(), c, now, &mut summary, &mut doomed)?;
                } else {
                    evict_rejected(t, f.q.root(), c, now, &mut summary, &mut doomed)?;
                }
            }
            Ok(())
        })
        .unwrap();
    assert!(files.iter().all(|p| p.exists()));
    // Start-up recovery, as `serve` runs it.
    let indexed = f.store.instance_keys().unwrap();
    let rec =
        f.q.recover(
            &|key| indexed.contains(key),
            &|key| match f.store.rejection(key).unwrap() {
                Some(r) if r.evicted_ms.is_some() => crate::quarantine::RejectedFile::Evicted,
                Some(_) => crate::quarantine::RejectedFile::Recorded,
                None => crate::quarantine::RejectedFile::Unknown,
            },
            &mut |_, _, _, _| panic!("nothing to index again"),
        )
        .unwrap();
    assert_eq!(rec.orphans_removed, 2);
    assert_eq!(rec.evicted_removed, 1);
    assert_eq!(recover(&f.store, f.q.root()).unwrap(), 1);
    assert!(files.iter().all(|p| !p.exists()));
    assert!(!outbound::transfer_dir(f.q.root(), &format!("T{k}")).exists());
}

/// A project's review inventory (what left the box) is kept when the studies it was built
/// from are evicted: eviction removes instance records, never the inventory.
#[test]
fn eviction_keeps_the_review_inventory() {
    let f = fixture();
    let now = T0 + 20 * DAY;
    let k = f.study("reviewed", 2, 100, T0);
    f.assign(&k, TransferState::Verified, Some(T0 + DAY), false);
    let mut batch = crate::model::ReviewBatch::instance();
    batch.element("(0010,0020)".into(), "PatientID", "LO", 1, || "P1".into());
    f.store
        .write_assign(&mut |t| crate::index::merge_review(t, "p", &format!("T{k}"), &batch, T0))
        .unwrap();
    let before = f.store.review("p").unwrap().unwrap();
    let tight = Space {
        free: 1000,
        total: 10_000,
    };
    let r = pass_in(&f.store, &f.q, &f.s, "housekeeping", now, tight).unwrap();
    assert_eq!(r.last_pass.expect("a pass that evicted").studies, 1);
    assert!(f.store.study(&k).unwrap().unwrap().is_evicted());
    assert_eq!(f.store.review("p").unwrap(), Some(before));
}
