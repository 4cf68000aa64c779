//! Builds an index for the web page benchmark (issue 17, `bench/web.sh`) directly through the
//! `Store` API, as the committer and the assign step would write it:
//!
//! * TRANSFERS studies (100,000 by default) of PER instances each (10), arrived over the last
//!   two years, each assigned to project `BENCH` with one transfer: 90 % verified at
//!   destination `research` (every instance confirmed), 6 % failed, 4 % parked;
//! * UNASSIGNED studies (10,000) of PER instances, arrived over the last six days, so all are
//!   on the Assign list (`unassigned_visible_days` is 7 by default);
//! * a local web account `bench` with the admin grant, whose password is the first line of
//!   standard input (hashed with Argon2id, as `fiona user add` would).
//!
//! No file is written: the index names files that do not exist (the pages read only the
//! index). Synthetic values only. Usage:
//! `printf '%s\n' "$PASSWORD" | cargo run --release --example web_scale -- DATA_DIR [UNASSIGNED] [TRANSFERS] [PER]`.

use std::io::BufRead;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use fiona::clock::Clock;
use fiona::header::HeaderFields;
use fiona::index::redb_store::RedbStore;
use fiona::index::{CommitOutcome, NoArrival, Store, Tables};
use fiona::model::{
    AccountRecord, AssignmentRecord, Delivery, Grants, NewInstance, Origin, Parked, TransferKind,
    TransferRecord, TransferState, Via,
};

const DAY_MS: i64 = 86_400_000;
const PROJECT: &str = "BENCH";

/// One study to index: its number, when its instances arrived and how many there are.
struct Spec {
    n: usize,
    received_ms: i64,
    per: usize,
}

/// A study's key and the keys of its instances.
type Indexed = (String, Vec<String>);

/// Index `specs` in commits of about 2,000 instances; the study key and instance keys of each.
fn index(
    store: &RedbStore,
    specs: &[Spec],
    now: i64,
) -> Result<Vec<Indexed>, Box<dyn std::error::Error>> {
    let mut out = Vec::with_capacity(specs.len());
    for chunk in specs.chunks((2000 / specs.first().map_or(1, |s| s.per.max(1))).max(1)) {
        let mut batch = Vec::new();
        let mut keys = Vec::new();
        for s in chunk {
            let study_uid = format!("1.2.826.0.1.3680043.10.1717.{}", s.n);
            let mut inst = Vec::with_capacity(s.per);
            for i in 0..s.per {
                let key = ulid::Ulid::generate().to_string();
                batch.push(NewInstance {
                    file: format!("objects/20260101/{key}.dcm"),
                    key: key.clone(),
                    bytes: 524_288,
                    transfer_syntax: "1.2.840.10008.1.2.1".into(),
                    received_ms: s.received_ms + i as i64 * 100,
                    origin: Origin {
                        calling_ae: "MODALITY".into(),
                        called_ae: "FIONA".into(),
                        peer: "127.0.0.1".into(),
                    },
                    header: HeaderFields {
                        sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
                        sop_instance_uid: format!("{study_uid}.1.{}", i + 1),
                        study_instance_uid: study_uid.clone(),
                        series_instance_uid: format!("{study_uid}.1"),
                        study_date: "20260101".into(),
                        study_time: "120000".into(),
                        accession_number: format!("WEB{:08}", s.n),
                        modality: "CT".into(),
                        study_description: "WEB SCALE TEST".into(),
                        series_description: "AXIAL".into(),
                        series_number: Some(1),
                        patient_name: format!("WEB^PATIENT{:08}", s.n),
                        patient_id: format!("WPID{:08}", s.n),
                        ..HeaderFields::default()
                    },
                });
                inst.push(key);
            }
            keys.push(inst);
        }
        let outcomes = store.commit(&batch, &NoArrival, now)?;
        let mut it = outcomes.into_iter();
        for inst in keys {
            let mut study_key = String::new();
            for _ in 0..inst.len() {
                if let Some(CommitOutcome::Stored { study_key: k }) = it.next() {
                    study_key = k;
                }
            }
            out.push((study_key, inst));
        }
    }
    Ok(out)
}

/// The transfer of assigned study `n` (created at `at`), in the state its number gives.
fn transfer(n: usize, study_key: &str, inst: &[String], at: i64) -> TransferRecord {
    let state = match n % 50 {
        0..=2 => TransferState::Failed,
        3..=4 => TransferState::Parked,
        _ => TransferState::Verified,
    };
    let done = state == TransferState::Verified;
    let parked = state == TransferState::Parked;
    let id = ulid::Ulid::from_datetime(SystemTime::UNIX_EPOCH + Duration::from_millis(at as u64));
    TransferRecord {
        id: id.to_string(),
        study_key: study_key.to_string(),
        project: PROJECT.into(),
        participant: format!("BENCH-{n:06}"),
        event: "baseline".into(),
        kind: TransferKind::Assignment,
        via: Via::Manual,
        actor: "user:bench".into(),
        created_ms: at,
        series: vec![format!("1.2.826.0.1.3680043.10.1717.{n}.1")],
        instances: inst.len() as u64,
        state,
        state_ms: at + 3_600_000,
        reason: (state == TransferState::Failed).then(|| "association refused".into()),
        research_study_uid: format!("2.25.{}", 1_000_000 + n),
        replaces: None,
        sent: if done { inst.len() as u64 } else { 0 },
        verified_ms: done.then_some(at + 3_600_000),
        deidentified: if parked { 0 } else { inst.len() as u64 },
        dropped: 0,
        parked: if parked {
            vec![Parked {
                instance: inst[0].clone(),
                reason: "pixel data cannot be decoded".into(),
            }]
        } else {
            Vec::new()
        },
        deliveries: if parked {
            Vec::new()
        } else {
            vec![Delivery {
                destination: "research".into(),
                stored: if done { inst.to_vec() } else { Vec::new() },
                attempts: if done { 1 } else { 10 },
                done,
                failed: !done,
                reason: (!done).then(|| "association refused".into()),
                verified_ms: done.then_some(at + 3_600_000),
                ..Delivery::default()
            }]
        },
        deid_attempts: 0,
        next_deid_ms: 0,
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: web_scale DATA_DIR [UNASSIGNED] [TRANSFERS] [PER] (password on stdin)";
    let dir = PathBuf::from(args.next().ok_or(usage)?);
    let unassigned: usize = args.next().map_or(Ok(10_000), |s| s.parse())?;
    let transfers: usize = args.next().map_or(Ok(100_000), |s| s.parse())?;
    let per: usize = args.next().map_or(Ok(10), |s| s.parse())?;
    let mut password = String::new();
    std::io::stdin().lock().read_line(&mut password)?;
    let password = password.trim_end_matches(['\n', '\r']);
    fiona::password::check_new_password("bench", password)?;

    std::fs::create_dir_all(&dir)?;
    let store = RedbStore::open(&dir.join("index.redb"))?;
    let now = fiona::clock::SystemClock.now_ms();
    let started = Instant::now();

    // Assigned studies, oldest first over two years; then the unassigned ones over six days.
    let span = 730 * DAY_MS;
    let specs: Vec<Spec> = (0..transfers)
        .map(|n| Spec {
            n,
            received_ms: arrived_ms(now, span, transfers, n),
            per,
        })
        .collect();
    let assigned = index(&store, &specs, now)?;
    let window = 6 * DAY_MS;
    let specs: Vec<Spec> = (0..unassigned)
        .map(|k| Spec {
            n: transfers + k,
            received_ms: arrived_ms(now, window, unassigned, k),
            per,
        })
        .collect();
    index(&store, &specs, now)?;
    let indexed = started.elapsed();

    for (c, chunk) in assigned.chunks(1000).enumerate() {
        store.write_assign(&mut |t: &mut dyn Tables| {
            for (j, (study_key, inst)) in chunk.iter().enumerate() {
                let n = c * 1000 + j;
                let at = arrived_ms(now, span, transfers, n) + 3_600_000;
                let tr = transfer(n, study_key, inst, at);
                t.put_transfer(&tr)?;
                t.add_transfer_instances(&tr.id, inst)?;
                t.put_assignment(&AssignmentRecord {
                    study_key: study_key.clone(),
                    project: PROJECT.into(),
                    participant: tr.participant.clone(),
                    event: "baseline".into(),
                    via: Via::Manual,
                    actor: "user:bench".into(),
                    assigned_ms: at,
                    research_study_uid: tr.research_study_uid.clone(),
                    derived_from: None,
                    transfers: vec![tr.id.clone()],
                    corrections: 0,
                })?;
            }
            Ok(())
        })?;
    }
    let hash = fiona::password::hash_password(password)?;
    store.write_assign(&mut |t: &mut dyn Tables| {
        t.put_account(&AccountRecord {
            name: "bench".into(),
            password_hash: hash.clone(),
            grants: Grants {
                admin: true,
                ..Grants::default()
            },
            disabled: false,
            created_ms: now,
            changed_ms: now,
        })
    })?;
    let totals = store.totals()?;
    println!(
        "index: {} studies ({unassigned} unassigned), {} instances, {transfers} transfers of {PROJECT}, account bench (admin); instances {:.1} s, total {:.1} s",
        totals.studies,
        totals.instances,
        indexed.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// When study `n` of `count` spread evenly over the `span` before `now` arrived.
fn arrived_ms(now: i64, span: i64, count: usize, n: usize) -> i64 {
    now - span + (span / count.max(1) as i64) * n as i64
}
