//! Builds a large index directly, for the housekeeping benchmark (issue 16,
//! `bench/housekeeping_scale.sh`): STUDIES studies of PER instances each (50,000 × 20 = one
//! million by default) written through the `Store` API in batches, as the committer would, then
//! assignments and transfers in the states a box collects over months, and rejected files:
//!
//! * 50 % verified at destination `research` 10 days ago (evictable under pressure);
//! * 20 % failed (unsent: never evicted);
//! * 5 % parked (never evicted);
//! * 20 % unassigned for 20 days (off the assign list, inside the 30-day retention);
//! * 5 % unassigned since yesterday;
//! * one rejected file per 10 studies, 3 days old.
//!
//! No file is written: the index names files that do not exist, so a pass's unlinking
//! (ENOENT, ignored) costs nothing and the timings are of the index work. Synthetic values
//! only. Usage: `cargo run --release --example scale_index -- DATA_DIR [STUDIES] [PER]`.

use std::path::PathBuf;
use std::time::Instant;

use fiona::clock::Clock;
use fiona::header::HeaderFields;
use fiona::index::redb_store::RedbStore;
use fiona::index::{CommitOutcome, NoArrival, Store, Tables};
use fiona::model::{
    AssignmentRecord, Delivery, NewInstance, Origin, Parked, RejectRecord, TransferKind,
    TransferRecord, TransferState, Via,
};

const DAY_MS: i64 = 86_400_000;

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Verified,
    Failed,
    Parked,
    Hidden,
    Recent,
}

fn kind_of(i: usize) -> Kind {
    match i % 20 {
        0..=9 => Kind::Verified,
        10..=13 => Kind::Failed,
        14 => Kind::Parked,
        15..=18 => Kind::Hidden,
        _ => Kind::Recent,
    }
}

fn origin() -> Origin {
    Origin {
        calling_ae: "MODALITY".into(),
        called_ae: "FIONA".into(),
        peer: "127.0.0.1".into(),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(
        args.next()
            .ok_or("usage: scale_index DATA_DIR [STUDIES] [PER]")?,
    );
    let studies: usize = args.next().map_or(Ok(50_000), |s| s.parse())?;
    let per: usize = args.next().map_or(Ok(20), |s| s.parse())?;
    std::fs::create_dir_all(&dir)?;
    let store = RedbStore::open(&dir.join("index.redb"))?;
    let now = fiona::clock::SystemClock.now_ms();
    let started = Instant::now();

    // Instances, 100 studies (2,000 instances) per commit.
    let mut keys: Vec<(String, Vec<String>)> = Vec::with_capacity(studies);
    let mut batch = Vec::new();
    let mut batch_studies = Vec::new();
    for s in 0..studies {
        let age = match kind_of(s) {
            Kind::Hidden => 20 * DAY_MS,
            Kind::Recent => DAY_MS,
            _ => 12 * DAY_MS,
        };
        let study_uid = format!("1.2.826.0.1.3680043.10.1234.{}", s + 1);
        let mut inst = Vec::with_capacity(per);
        for i in 0..per {
            let key = ulid::Ulid::generate().to_string();
            let header = HeaderFields {
                sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
                sop_instance_uid: format!("{study_uid}.1.{}", i + 1),
                study_instance_uid: study_uid.clone(),
                series_instance_uid: format!("{study_uid}.1"),
                study_date: "20260101".into(),
                study_time: "120000".into(),
                accession_number: format!("ACC{s:07}"),
                modality: "CT".into(),
                study_description: "SCALE TEST".into(),
                series_description: "AXIAL".into(),
                series_number: Some(1),
                patient_name: format!("SCALE^PATIENT{s:07}"),
                patient_id: format!("PID{s:07}"),
                ..HeaderFields::default()
            };
            batch.push(NewInstance {
                file: format!("objects/20260101/{key}.dcm"),
                key: key.clone(),
                bytes: 524_288,
                transfer_syntax: "1.2.840.10008.1.2.1".into(),
                received_ms: now - age,
                origin: origin(),
                header,
            });
            inst.push(key);
        }
        batch_studies.push(inst);
        if batch_studies.len() == 100 || s + 1 == studies {
            let out = store.commit(&batch, &NoArrival, now)?;
            let mut it = out.into_iter();
            for inst in batch_studies.drain(..) {
                let mut study_key = String::new();
                for _ in 0..inst.len() {
                    if let Some(CommitOutcome::Stored { study_key: k }) = it.next() {
                        study_key = k;
                    }
                }
                keys.push((study_key, inst));
            }
            batch.clear();
        }
    }
    let indexed = started.elapsed();

    // Assignments and transfers, 500 studies per transaction.
    for (chunk_no, chunk) in keys.chunks(500).enumerate() {
        store.write_assign(&mut |t: &mut dyn Tables| {
            for (j, (study_key, inst)) in chunk.iter().enumerate() {
                let s = chunk_no * 500 + j;
                let kind = kind_of(s);
                let state = match kind {
                    Kind::Verified => TransferState::Verified,
                    Kind::Failed => TransferState::Failed,
                    Kind::Parked => TransferState::Parked,
                    Kind::Hidden | Kind::Recent => continue,
                };
                let assigned = now - 11 * DAY_MS;
                let at = now - 10 * DAY_MS;
                let id = ulid::Ulid::generate().to_string();
                let participant = format!("PROJ1-{:06}", s + 1);
                let research_study_uid = format!("2.25.{}", 1_000_000 + s);
                let done = kind == Kind::Verified;
                let tr = TransferRecord {
                    id: id.clone(),
                    study_key: study_key.clone(),
                    project: "PROJ1".into(),
                    participant: participant.clone(),
                    event: "baseline".into(),
                    kind: TransferKind::Assignment,
                    via: Via::Manual,
                    actor: "user:bench".into(),
                    created_ms: assigned,
                    series: vec![format!("1.2.826.0.1.3680043.10.1234.{}.1", s + 1)],
                    instances: inst.len() as u64,
                    state,
                    state_ms: at,
                    reason: (kind == Kind::Failed).then(|| "association refused".into()),
                    research_study_uid: research_study_uid.clone(),
                    replaces: None,
                    sent: if done { inst.len() as u64 } else { 0 },
                    verified_ms: done.then_some(at),
                    deidentified: if kind == Kind::Parked {
                        0
                    } else {
                        inst.len() as u64
                    },
                    dropped: 0,
                    parked: if kind == Kind::Parked {
                        vec![Parked {
                            instance: inst[0].clone(),
                            reason: "pixel data cannot be decoded".into(),
                        }]
                    } else {
                        Vec::new()
                    },
                    deliveries: if kind == Kind::Parked {
                        Vec::new()
                    } else {
                        vec![Delivery {
                            destination: "research".into(),
                            stored: if done { inst.clone() } else { Vec::new() },
                            attempts: if done { 1 } else { 10 },
                            next_attempt_ms: 0,
                            done,
                            failed: !done,
                            reason: (!done).then(|| "association refused".into()),
                            verified_ms: done.then_some(at),
                            ..Delivery::default()
                        }]
                    },
                    deid_attempts: 0,
                    next_deid_ms: 0,
                };
                t.put_transfer(&tr)?;
                t.add_transfer_instances(&id, inst)?;
                t.put_assignment(&AssignmentRecord {
                    study_key: study_key.clone(),
                    project: "PROJ1".into(),
                    participant,
                    event: "baseline".into(),
                    via: Via::Manual,
                    actor: "user:bench".into(),
                    assigned_ms: assigned,
                    research_study_uid,
                    derived_from: None,
                    transfers: vec![id],
                    corrections: 0,
                })?;
            }
            Ok(())
        })?;
    }
    let assigned = started.elapsed() - indexed;

    let rejected = studies / 10;
    for r in 0..rejected {
        let key = ulid::Ulid::generate().to_string();
        store.record_rejection(&RejectRecord {
            file: format!("rejected/{key}.dcm"),
            key,
            bytes: 65_536,
            received_ms: now - 3 * DAY_MS,
            status: 0xA900,
            reason: "not a storage SOP class this node accepts".into(),
            origin: origin(),
            evicted_ms: None,
        })?;
        if r % 1000 == 999 {
            eprint!(".");
        }
    }
    let totals = store.totals()?;
    println!(
        "index: {} studies, {} instances, {} rejected; instances {:.1} s, assignments {:.1} s, total {:.1} s",
        totals.studies,
        totals.instances,
        totals.rejected,
        indexed.as_secs_f64(),
        assigned.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
