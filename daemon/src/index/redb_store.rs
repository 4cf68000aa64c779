//! [`Store`] on redb. The only module that names the storage engine.
//!
//! # Tables
//!
//! | table            | key                          | value                         |
//! |------------------|------------------------------|-------------------------------|
//! | `instances`      | `study key/instance key`     | [`InstanceRecord`] JSON       |
//! | `sop_index`      | SOP Instance UID             | instance key                  |
//! | `studies`        | study key (ULID)             | [`StudyRecord`] JSON          |
//! | `study_uid_index`| Study Instance UID           | study key                     |
//! | `series`         | `study key/series UID`       | [`SeriesRecord`] JSON         |
//! | `rejected`       | reject key (ULID)            | [`RejectRecord`] JSON         |
//! | `assignments`    | `study key US project`       | [`AssignmentRecord`] JSON     |
//! | `transfers`      | transfer ID (ULID)           | [`TransferRecord`] JSON       |
//! | `participants`   | `project US participant`     | [`ParticipantRecord`] JSON    |
//! | `coupling`       | `a|u US key US project`      | [`CouplingEntry`] JSON        |
//! | `auto_ids`       | `project US keyed hash`      | participant ID                |
//! | `issued_studies` | research StudyInstanceUID    | `study key US project`        |
//! | `audit`          | sequence number (u64)        | [`AuditRecord`] JSON          |
//! | `transfer_instances` | `transfer ID US instance key` | empty                    |
//! | `counters`       | counter name                 | count (see `counters`)        |
//! | `recent_studies` | `last arrival ms (20 digits) US study key` | unused          |
//! | `project_transfers` | `project US created ms (20 digits) US transfer ID` | transfer state |
//! | `unassigned_studies` | `last arrival ms (20 digits) US study key` | first arrival ms |
//! | `transfer_states` | `state US transfer ID`       | empty                         |
//! | `review`         | project                      | [`ReviewInventory`] JSON      |
//! | `review_values`  | `project US path`            | value hashes, u64 LE each     |
//! | `review_transfers` | transfer ID                | project                       |
//!
//! The review tables (issue 17) are written in the transaction that marks a transfer
//! `deidentified` and are never removed: eviction does not touch them.
//!
//! `US` is the unit separator U+001F, which no DICOM value used in a key may contain, so a
//! prefix range never runs into a longer key. The audit table is only ever appended to.
//!
//! Every write transaction commits with `Durability::Immediate` (redb fsyncs before
//! `commit` returns). An instance touches four tables (`sop_index`, `studies`, `series`,
//! `instances`); totals are summed from `studies` and `rejected` when asked, so the hot path
//! writes as few pages as possible.

use std::path::{Path, PathBuf};
use std::sync::{RwLock, RwLockReadGuard};

use redb::{
    Database, ReadableDatabase, ReadableTable, TableDefinition, TableHandle, WriteTransaction,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::recovering::Reopen;
use super::*;

const INSTANCES: TableDefinition<&str, &[u8]> = TableDefinition::new("instances");
const SOP_INDEX: TableDefinition<&str, &str> = TableDefinition::new("sop_index");
const STUDIES: TableDefinition<&str, &[u8]> = TableDefinition::new("studies");
const STUDY_UID_INDEX: TableDefinition<&str, &str> = TableDefinition::new("study_uid_index");
const SERIES: TableDefinition<&str, &[u8]> = TableDefinition::new("series");
const REJECTED: TableDefinition<&str, &[u8]> = TableDefinition::new("rejected");
const ASSIGNMENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("assignments");
const TRANSFERS: TableDefinition<&str, &[u8]> = TableDefinition::new("transfers");
const PARTICIPANTS: TableDefinition<&str, &[u8]> = TableDefinition::new("participants");
const COUPLING: TableDefinition<&str, &[u8]> = TableDefinition::new("coupling");
const AUTO_IDS: TableDefinition<&str, &str> = TableDefinition::new("auto_ids");
const ISSUED_STUDIES: TableDefinition<&str, &str> = TableDefinition::new("issued_studies");
const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");
const TRANSFER_INSTANCES: TableDefinition<&str, &str> = TableDefinition::new("transfer_instances");
const OUTBOX: TableDefinition<&str, &[u8]> = TableDefinition::new("outbox");
/// Local web accounts by name (`AccountRecord`).
const ACCOUNTS: TableDefinition<&str, &[u8]> = TableDefinition::new("accounts");
const REVIEW: TableDefinition<&str, &[u8]> = TableDefinition::new("review");
const REVIEW_VALUES: TableDefinition<&str, &[u8]> = TableDefinition::new("review_values");
const REVIEW_TRANSFERS: TableDefinition<&str, &str> = TableDefinition::new("review_transfers");
/// Aggregates kept in the transaction that changes their records (see [`counters`]).
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");
/// Studies by last arrival: `{last_received_ms:020}{US}{study key}` (the value unused).
const RECENT: TableDefinition<&str, u64> = TableDefinition::new("recent_studies");
/// Each project's transfers by creation, `{project}{US}{created_ms:020}{US}{transfer ID}`, with
/// the transfer's state: a page of a project's transfers reads its rows only (see [`counters`]).
const PROJECT_TRANSFERS: TableDefinition<&str, &str> = TableDefinition::new("project_transfers");
/// Transfers by state, `{state}{US}{transfer ID}`: the pipeline's passes read what is in
/// flight, not every transfer (see [`counters`]).
const TRANSFER_STATES: TableDefinition<&str, &str> = TableDefinition::new("transfer_states");
/// The assign list: studies with no assignment that were never evicted, keyed as in `RECENT`,
/// with their first arrival (see [`counters`]).
const UNASSIGNED: TableDefinition<&str, i64> = TableDefinition::new("unassigned_studies");

/// Separator of composite keys in the assignment tables.
const US: char = '\u{1f}';

/// A stored instance's study after indexing, and whether the study and series are new.
type Indexed = (StudyRecord, bool, bool);

/// The redb-backed index.
///
/// After an I/O error redb refuses every later operation ("previous I/O error") until the
/// file is opened again; [`Reopen::reopen`] does that (redb's repair brings the file back to
/// its last committed transaction), and [`super::recovering::Recovering`] decides when.
pub struct RedbStore {
    path: PathBuf,
    /// `None` only while being reopened.
    db: RwLock<Option<Database>>,
}

/// A read lock on the open database.
struct Db<'a>(RwLockReadGuard<'a, Option<Database>>);

impl std::ops::Deref for Db<'_> {
    type Target = Database;
    #[allow(clippy::expect_used)]
    fn deref(&self) -> &Database {
        // Invariant: `RedbStore::db()` returns a `Db` only after checking that the option is
        // `Some`, and the read lock it holds keeps `reopen` (which takes the write lock) out.
        self.0
            .as_ref()
            .expect("database is open while a Db guard lives")
    }
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore").finish_non_exhaustive()
    }
}

fn engine<E: std::error::Error + Send + Sync + Into<redb::Error> + 'static>(
    op: &'static str,
) -> impl Fn(E) -> StoreError {
    move |e| {
        let e: redb::Error = e.into();
        let io = match &e {
            redb::Error::Io(io) => Some(classify_io(io)),
            redb::Error::PreviousIo => Some(IoFailure::Other),
            _ => None,
        };
        StoreError::Engine {
            op,
            io,
            source: Box::new(e),
        }
    }
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    // Serializing plain structs of strings and integers to JSON cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(key.to_string(), e.to_string()))
}

fn series_key(study_key: &str, series_uid: &str) -> String {
    format!("{study_key}/{series_uid}")
}

fn instance_key(study_key: &str, key: &str) -> String {
    format!("{study_key}/{key}")
}

/// Keys of one study in a `study key/...` table: '0' follows '/', and keys are base32 ULIDs.
fn study_range(study_key: &str) -> (String, String) {
    (format!("{study_key}/"), format!("{study_key}0"))
}

impl RedbStore {
    /// Open or create the index file and make sure every table exists.
    pub fn open(path: &Path) -> Result<RedbStore, StoreError> {
        let db = Self::open_db(path)?;
        Ok(RedbStore {
            path: path.to_path_buf(),
            db: RwLock::new(Some(db)),
        })
    }

    fn open_db(path: &Path) -> Result<Database, StoreError> {
        let db = Database::create(path).map_err(engine("open index"))?;
        let txn = db.begin_write().map_err(engine("begin"))?;
        {
            txn.open_table(INSTANCES).map_err(engine("create tables"))?;
            txn.open_table(SOP_INDEX).map_err(engine("create tables"))?;
            txn.open_table(STUDIES).map_err(engine("create tables"))?;
            txn.open_table(STUDY_UID_INDEX)
                .map_err(engine("create tables"))?;
            txn.open_table(SERIES).map_err(engine("create tables"))?;
            txn.open_table(REJECTED).map_err(engine("create tables"))?;
            for def in [ASSIGNMENTS, TRANSFERS, PARTICIPANTS, COUPLING] {
                txn.open_table(def).map_err(engine("create tables"))?;
            }
            txn.open_table(AUTO_IDS).map_err(engine("create tables"))?;
            txn.open_table(ISSUED_STUDIES)
                .map_err(engine("create tables"))?;
            txn.open_table(AUDIT).map_err(engine("create tables"))?;
            txn.open_table(TRANSFER_INSTANCES)
                .map_err(engine("create tables"))?;
            txn.open_table(OUTBOX).map_err(engine("create tables"))?;
            txn.open_table(ACCOUNTS).map_err(engine("create tables"))?;
            txn.open_table(REVIEW).map_err(engine("create tables"))?;
            txn.open_table(REVIEW_VALUES)
                .map_err(engine("create tables"))?;
            txn.open_table(REVIEW_TRANSFERS)
                .map_err(engine("create tables"))?;
            counters::ensure(&txn)?;
        }
        txn.commit().map_err(engine("commit"))?;
        Ok(db)
    }

    /// The open database, read-locked for as long as the guard lives.
    fn db(&self) -> Result<Db<'_>, StoreError> {
        // A poisoned lock means a thread panicked while holding it; the database itself is
        // still consistent (redb), so go on with it.
        let g = self.db.read().unwrap_or_else(|p| p.into_inner());
        if g.is_none() {
            return Err(StoreError::Unavailable {
                cause: IoFailure::Other,
                why: "index is being reopened".into(),
            });
        }
        Ok(Db(g))
    }

    fn index_one(
        &self,
        txn: &WriteTransaction,
        n: &NewInstance,
        deltas: &mut counters::StudyDeltas,
    ) -> Result<(CommitOutcome, Option<Indexed>), StoreError> {
        let h = &n.header;
        let mut sop = txn
            .open_table(SOP_INDEX)
            .map_err(engine("open sop_index"))?;
        if let Some(existing) = sop
            .get(h.sop_instance_uid.as_str())
            .map_err(engine("read sop_index"))?
        {
            return Ok((
                CommitOutcome::Duplicate {
                    existing: existing.value().to_string(),
                },
                None,
            ));
        }
        sop.insert(h.sop_instance_uid.as_str(), n.key.as_str())
            .map_err(engine("write sop_index"))?;
        drop(sop);

        // Study: find or create.
        let mut uid_index = txn
            .open_table(STUDY_UID_INDEX)
            .map_err(engine("open study_uid_index"))?;
        let existing_study = uid_index
            .get(h.study_instance_uid.as_str())
            .map_err(engine("read study_uid_index"))?
            .map(|g| g.value().to_string());
        let mut studies = txn.open_table(STUDIES).map_err(engine("open studies"))?;
        let mut study = match &existing_study {
            Some(k) => {
                let g = studies.get(k.as_str()).map_err(engine("read studies"))?;
                match g {
                    Some(g) => decode::<StudyRecord>(k, g.value())?,
                    None => return Err(StoreError::Corrupt(k.clone(), "study missing".into())),
                }
            }
            None => {
                let key = ulid::Ulid::generate().to_string();
                uid_index
                    .insert(h.study_instance_uid.as_str(), key.as_str())
                    .map_err(engine("write study_uid_index"))?;
                StudyRecord {
                    key,
                    study_instance_uid: h.study_instance_uid.clone(),
                    accession_number: h.accession_number.clone(),
                    study_date: h.study_date.clone(),
                    study_time: h.study_time.clone(),
                    study_description: h.study_description.clone(),
                    modalities: Vec::new(),
                    patient_id: h.patient_id.clone(),
                    patient_name: h.patient_name.clone(),
                    origin: n.origin.clone(),
                    first_received_ms: n.received_ms,
                    last_received_ms: n.received_ms,
                    series_count: 0,
                    instance_count: 0,
                    bytes: 0,
                    evicted: None,
                }
            }
        };
        drop(uid_index);
        let last_before = existing_study.as_ref().map(|_| study.last_received_ms);

        // Series: find or create.
        let skey = series_key(&study.key, &h.series_instance_uid);
        let mut series_t = txn.open_table(SERIES).map_err(engine("open series"))?;
        let existing_series = series_t
            .get(skey.as_str())
            .map_err(engine("read series"))?
            .map(|g| decode::<SeriesRecord>(&skey, g.value()))
            .transpose()?;
        let study_new = existing_study.is_none();
        let series_new = existing_series.is_none();
        let mut series = match existing_series {
            Some(s) => s,
            None => {
                study.series_count += 1;
                SeriesRecord {
                    study_key: study.key.clone(),
                    series_instance_uid: h.series_instance_uid.clone(),
                    series_number: h.series_number,
                    modality: h.modality.clone(),
                    series_description: h.series_description.clone(),
                    first_received_ms: n.received_ms,
                    last_received_ms: n.received_ms,
                    instance_count: 0,
                    bytes: 0,
                }
            }
        };
        series.instance_count += 1;
        series.bytes += n.bytes;
        series.first_received_ms = series.first_received_ms.min(n.received_ms);
        series.last_received_ms = series.last_received_ms.max(n.received_ms);
        series_t
            .insert(skey.as_str(), encode(&series).as_slice())
            .map_err(engine("write series"))?;
        drop(series_t);

        study.instance_count += 1;
        study.bytes += n.bytes;
        study.first_received_ms = study.first_received_ms.min(n.received_ms);
        study.last_received_ms = study.last_received_ms.max(n.received_ms);
        if !h.modality.is_empty() && !study.modalities.contains(&h.modality) {
            study.modalities.push(h.modality.clone());
            study.modalities.sort();
        }
        // Fill in study-level fields a first instance lacked.
        for (dst, src) in [
            (&mut study.accession_number, &h.accession_number),
            (&mut study.study_date, &h.study_date),
            (&mut study.study_time, &h.study_time),
            (&mut study.study_description, &h.study_description),
            (&mut study.patient_id, &h.patient_id),
            (&mut study.patient_name, &h.patient_name),
        ] {
            if dst.is_empty() && !src.is_empty() {
                dst.clone_from(src);
            }
        }
        studies
            .insert(study.key.as_str(), encode(&study).as_slice())
            .map_err(engine("write studies"))?;
        drop(studies);
        deltas.arrival(txn, last_before, series_new, n.bytes, &study)?;

        let rec = InstanceRecord {
            key: n.key.clone(),
            study_key: study.key.clone(),
            file: n.file.clone(),
            bytes: n.bytes,
            transfer_syntax: n.transfer_syntax.clone(),
            received_ms: n.received_ms,
            origin: n.origin.clone(),
            sop_class_uid: h.sop_class_uid.clone(),
            sop_instance_uid: h.sop_instance_uid.clone(),
            study_instance_uid: h.study_instance_uid.clone(),
            series_instance_uid: h.series_instance_uid.clone(),
        };
        let ikey = instance_key(&study.key, &n.key);
        txn.open_table(INSTANCES)
            .map_err(engine("open instances"))?
            .insert(ikey.as_str(), encode(&rec).as_slice())
            .map_err(engine("write instances"))?;
        Ok((
            CommitOutcome::Stored {
                study_key: study.key.clone(),
            },
            Some((study, study_new, series_new)),
        ))
    }

    fn read_all<T: DeserializeOwned>(
        &self,
        def: TableDefinition<&str, &[u8]>,
    ) -> Result<Vec<T>, StoreError> {
        let db = self.db()?;
        let txn = db.begin_read().map_err(engine("begin read"))?;
        let t = txn.open_table(def).map_err(engine("open table"))?;
        let mut out = Vec::new();
        for row in t.iter().map_err(engine("iterate"))? {
            let (_, v) = row.map_err(engine("iterate"))?;
            out.push(decode(def.name(), v.value())?);
        }
        Ok(out)
    }

    /// Records whose keys lie in `lo..hi`, in a read transaction.
    fn read_range<T: DeserializeOwned>(
        &self,
        def: TableDefinition<&str, &[u8]>,
        (lo, hi): (String, String),
    ) -> Result<Vec<T>, StoreError> {
        let db = self.db()?;
        let txn = db.begin_read().map_err(engine("begin read"))?;
        let t = txn.open_table(def).map_err(engine("open table"))?;
        let mut out = Vec::new();
        for row in t.range(lo.as_str()..hi.as_str()).map_err(engine("range"))? {
            let (_, v) = row.map_err(engine("range"))?;
            out.push(decode(def.name(), v.value())?);
        }
        Ok(out)
    }

    fn contains(&self, def: TableDefinition<&str, &[u8]>, key: &str) -> Result<bool, StoreError> {
        let db = self.db()?;
        let txn = db.begin_read().map_err(engine("begin read"))?;
        let t = txn.open_table(def).map_err(engine("open table"))?;
        Ok(t.get(key).map_err(engine("read"))?.is_some())
    }
}

impl Reopen for RedbStore {
    fn reopen(&self) -> Result<(), StoreError> {
        let mut g = self.db.write().unwrap_or_else(|p| p.into_inner());
        // The old handle must be closed (it holds the file lock) before the file is opened.
        drop(g.take());
        *g = Some(Self::open_db(&self.path)?);
        Ok(())
    }
}

impl Store for RedbStore {
    fn commit(
        &self,
        batch: &[NewInstance],
        hook: &dyn OnArrival,
        now_ms: i64,
    ) -> Result<Vec<CommitOutcome>, StoreError> {
        let db = self.db()?;
        let txn = db.begin_write().map_err(engine("begin write"))?;
        let mut out = Vec::with_capacity(batch.len());
        let mut deltas = counters::StudyDeltas::default();
        for n in batch {
            let (outcome, arrival) = self.index_one(&txn, n, &mut deltas)?;
            if let Some((study, study_new, series_new)) = arrival {
                let mut t = TxTables { txn: &txn };
                let arrival = Arrival {
                    study: &study,
                    study_new,
                    series_new,
                };
                match hook.on_arrival(&mut t, n, &arrival, now_ms) {
                    Ok(()) => {}
                    // A damaged assignment record must not stop reception: the instance is
                    // stored and acknowledged, the study left for an admin to assign.
                    Err(StoreError::Corrupt(table, why)) => tracing::error!(
                        study = %study.key,
                        table = %table,
                        error = %why,
                        "assignment on arrival skipped: an index record is damaged"
                    ),
                    Err(e) => return Err(e),
                }
            }
            out.push(outcome);
        }
        deltas.apply(&txn)?;
        txn.commit().map_err(engine("commit"))?;
        Ok(out)
    }

    fn write_assign(
        &self,
        f: &mut dyn FnMut(&mut dyn Tables) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let db = self.db()?;
        let txn = db.begin_write().map_err(engine("begin write"))?;
        {
            let mut t = TxTables { txn: &txn };
            f(&mut t)?;
        }
        txn.commit().map_err(engine("commit"))?;
        Ok(())
    }

    fn assignments(&self, study_key: Option<&str>) -> Result<Vec<AssignmentRecord>, StoreError> {
        match study_key {
            None => self.read_all(ASSIGNMENTS),
            Some(k) => self.read_range(ASSIGNMENTS, us_range(k)),
        }
    }

    fn transfers(&self) -> Result<Vec<TransferRecord>, StoreError> {
        self.read_all(TRANSFERS)
    }

    fn transfer(&self, id: &str) -> Result<Option<TransferRecord>, StoreError> {
        let db = self.db()?;
        let txn = db.begin_read().map_err(engine("begin read"))?;
        let t = txn
            .open_table(TRANSFERS)
            .map_err(engine("open transfers"))?;
        let Some(g) = t.get(id).map_err(engine("read transfers"))? else {
            return Ok(None);
        };
        Ok(Some(decode(id, g.value())?))
    }

    fn transfer_instances(&self, id: &str) -> Result<Vec<String>, StoreError> {
        let db = self.db()?;
        let txn = db.begin_read().map_err(engine("begin read"))?;
        let t = txn
            .open_table(TRANSFER_INSTANCES)
            .map_err(engine("open transfer_instances"))?;
        let (lo, hi) = us_range(id);
        let mut out = Vec::new();
        for row in t
            .range(lo.as_str()..hi.as_str())
            .map_err(engine("range transfer_instances"))?
        {
            let (k, _) = row.map_err(engine("range transfer_instances"))?;
            if let Some((_, key)) = k.value().split_once(US) {
                out.push(key.to_string());
            }
        }
        Ok(out)
    }

    fn audit_trail(&self) -> Result<Vec<AuditRecord>, StoreError> {
        let db = self.db()?;
        let txn = db.begin_read().map_err(engine("begin read"))?;
        let t = txn.open_table(AUDIT).map_err(engine("open audit"))?;
        let mut out = Vec::new();
        for row in t.iter().map_err(engine("iterate audit"))? {
            let (k, v) = row.map_err(engine("iterate audit"))?;
            out.push(decode(&k.value().to_string(), v.value())?);
        }
        Ok(out)
    }

    fn couplings(&self) -> Result<Vec<CouplingEntry>, StoreError> {
        self.read_all(COUPLING)
    }

    fn participants(&self) -> Result<Vec<ParticipantRecord>, StoreError> {
        self.read_all(PARTICIPANTS)
    }

    fn has_sop_instance(&self, sop_instance_uid: &str) -> Result<bool, StoreError> {
        let db = self.db()?;
        let txn = db.begin_read().map_err(engine("begin read"))?;
        let t = txn
            .open_table(SOP_INDEX)
            .map_err(engine("open sop_index"))?;
        Ok(t.get(sop_instance_uid)
            .map_err(engine("read sop_index"))?
            .is_some())
    }

    fn instance_keys(&self) -> Result<std::collections::HashSet<String>, StoreError> {
        let db = self.db()?;
        let txn = db.begin_read().map_err(engine("begin read"))?;
        let t = txn
            .open_table(INSTANCES)
            .map_err(engine("open instances"))?;
        let mut out = std::collections::HashSet::new();
        for row in t.iter().map_err(engine("iterate"))? {
            let (k, _) = row.map_err(engine("iterate"))?;
            if let Some((_, key)) = k.value().split_once('/') {
                out.insert(key.to_string());
            }
        }
        Ok(out)
    }

    fn record_rejection(&self, r: &RejectRecord) -> Result<(), StoreError> {
        let db = self.db()?;
        let txn = db.begin_write().map_err(engine("begin write"))?;
        {
            let mut t = TxTables { txn: &txn };
            t.put_rejection(r)?;
        }
        txn.commit().map_err(engine("commit"))?;
        Ok(())
    }

    fn has_rejection(&self, key: &str) -> Result<bool, StoreError> {
        self.contains(REJECTED, key)
    }

    fn rejection(&self, key: &str) -> Result<Option<RejectRecord>, StoreError> {
        let db = self.db()?;
        let txn = db.begin_read().map_err(engine("begin read"))?;
        let t = txn.open_table(REJECTED).map_err(engine("open rejected"))?;
        let Some(g) = t.get(key).map_err(engine("read rejected"))? else {
            return Ok(None);
        };
        Ok(Some(decode(key, g.value())?))
    }

    fn outbox(&self) -> Result<Vec<OutboxRecord>, StoreError> {
        self.read_all(OUTBOX)
    }

    fn accounts(&self) -> Result<Vec<AccountRecord>, StoreError> {
        self.read_all(ACCOUNTS)
    }

    fn review(&self, project: &str) -> Result<Option<ReviewInventory>, StoreError> {
        let db = self.db()?;
        let txn = db.begin_read().map_err(engine("begin read"))?;
        let t = txn.open_table(REVIEW).map_err(engine("open review"))?;
        let Some(g) = t.get(project).map_err(engine("read review"))? else {
            return Ok(None);
        };
        Ok(Some(decode(REVIEW.name(), g.value())?))
    }

    fn rejections(&self) -> Result<Vec<RejectRecord>, StoreError> {
        self.read_all(REJECTED)
    }

    fn studies(&self) -> Result<Vec<StudyRecord>, StoreError> {
        self.read_all(STUDIES)
    }

    fn study(&self, key: &str) -> Result<Option<StudyRecord>, StoreError> {
        let db = self.db()?;
        let txn = db.begin_read().map_err(engine("begin read"))?;
        let t = txn.open_table(STUDIES).map_err(engine("open studies"))?;
        let Some(g) = t.get(key).map_err(engine("read studies"))? else {
            return Ok(None);
        };
        Ok(Some(decode(key, g.value())?))
    }

    fn series_of(&self, study_key: &str) -> Result<Vec<SeriesRecord>, StoreError> {
        self.read_range(SERIES, study_range(study_key))
    }

    fn instances_of(&self, study_key: &str) -> Result<Vec<InstanceRecord>, StoreError> {
        self.read_range(INSTANCES, study_range(study_key))
    }

    fn totals(&self) -> Result<Totals, StoreError> {
        let db = self.db()?;
        let txn = db.begin_read().map_err(engine("begin read"))?;
        let c = txn.open_table(COUNTERS).map_err(engine("open counters"))?;
        let get = |k: &str| -> Result<u64, StoreError> {
            Ok(c.get(k)
                .map_err(engine("read counters"))?
                .map_or(0, |g| g.value()))
        };
        Ok(Totals {
            studies: get(counters::STUDIES)?,
            series: get(counters::SERIES)?,
            instances: get(counters::INSTANCES)?,
            bytes: get(counters::BYTES)?,
            rejected: get(counters::REJECTED)?,
            rejected_bytes: get(counters::REJECTED_BYTES)?,
        })
    }

    fn transfer_counts(&self) -> Result<TransferCounts, StoreError> {
        let db = self.db()?;
        let txn = db.begin_read().map_err(engine("begin read"))?;
        let c = txn.open_table(COUNTERS).map_err(engine("open counters"))?;
        counters::transfer_counts(&c)
    }

    fn last_arrival_ms(&self) -> Result<Option<i64>, StoreError> {
        let db = self.db()?;
        let txn = db.begin_read().map_err(engine("begin read"))?;
        let r = txn.open_table(RECENT).map_err(engine("open recent"))?;
        let last = r.last().map_err(engine("last"))?;
        Ok(last.and_then(|(k, _)| k.value().get(..20).and_then(|ms| ms.parse().ok())))
    }

    fn studies_received_since(&self, since_ms: i64) -> Result<u64, StoreError> {
        let db = self.db()?;
        let txn = db.begin_read().map_err(engine("begin read"))?;
        let r = txn.open_table(RECENT).map_err(engine("open recent"))?;
        let lo = counters::recent_prefix(since_ms);
        let mut n = 0;
        for row in r.range(lo.as_str()..).map_err(engine("range"))? {
            row.map_err(engine("range"))?;
            n += 1;
        }
        Ok(n)
    }

    /// Walks the assign list's order back to `since_ms` (keys and first arrivals only); reads
    /// the records of the studies returned.
    fn unassigned_studies(
        &self,
        since_ms: i64,
        skip: usize,
        limit: Option<usize>,
    ) -> Result<(u64, Vec<StudyRecord>), StoreError> {
        let db = self.db()?;
        let txn = db.begin_read().map_err(engine("begin read"))?;
        let list = txn
            .open_table(UNASSIGNED)
            .map_err(engine("open unassigned"))?;
        let studies = txn.open_table(STUDIES).map_err(engine("open studies"))?;
        let lo = counters::recent_prefix(since_ms);
        let mut n = 0u64;
        let mut out = Vec::new();
        for row in list.range(lo.as_str()..).map_err(engine("range"))?.rev() {
            let (k, first) = row.map_err(engine("range"))?;
            if first.value() < since_ms {
                continue;
            }
            n += 1;
            if n <= skip as u64 || limit.is_some_and(|l| out.len() >= l) {
                continue;
            }
            let Some((_, key)) = k.value().split_once(US) else {
                continue;
            };
            if let Some(v) = studies.get(key).map_err(engine("read"))? {
                out.push(decode(STUDIES.name(), v.value())?);
            }
        }
        Ok((n, out))
    }

    /// Each state's range of `transfer_states`; only those records are read.
    fn transfers_in(&self, states: &[TransferState]) -> Result<Vec<TransferRecord>, StoreError> {
        let db = self.db()?;
        let txn = db.begin_read().map_err(engine("begin read"))?;
        let index = txn
            .open_table(TRANSFER_STATES)
            .map_err(engine("open transfer states"))?;
        let transfers = txn
            .open_table(TRANSFERS)
            .map_err(engine("open transfers"))?;
        let mut ids = Vec::new();
        for s in states {
            let (lo, hi) = us_range(s.as_str());
            for row in index
                .range(lo.as_str()..hi.as_str())
                .map_err(engine("range"))?
            {
                let (k, _) = row.map_err(engine("range"))?;
                if let Some((_, id)) = k.value().split_once(US) {
                    ids.push(id.to_string());
                }
            }
        }
        ids.sort();
        ids.dedup();
        let mut out = Vec::with_capacity(ids.len());
        for id in &ids {
            if let Some(t) = transfers.get(id.as_str()).map_err(engine("read"))? {
                out.push(decode(TRANSFERS.name(), t.value())?);
            }
        }
        Ok(out)
    }

    /// From the counters when no creation window is asked for, else from the project's
    /// range of `project_transfers` (states only, no record read).
    fn project_transfer_counts(
        &self,
        project: &str,
        filter: &TransferFilter,
    ) -> Result<std::collections::BTreeMap<TransferState, u64>, StoreError> {
        let wanted = |s: TransferState| filter.state.is_none_or(|f| f == s);
        if filter.created_from_ms.is_none() && filter.created_before_ms.is_none() {
            return Ok(self
                .transfer_counts()?
                .by_state
                .into_iter()
                .filter(|((p, s), _)| p == project && wanted(*s))
                .map(|((_, s), n)| (s, n))
                .collect());
        }
        let db = self.db()?;
        let txn = db.begin_read().map_err(engine("begin read"))?;
        let t = txn
            .open_table(PROJECT_TRANSFERS)
            .map_err(engine("open project transfers"))?;
        let (lo, hi) = counters::project_range(project, filter);
        let mut out = std::collections::BTreeMap::new();
        for row in t.range(lo.as_str()..hi.as_str()).map_err(engine("range"))? {
            let (_, v) = row.map_err(engine("range"))?;
            if let Some(s) = TransferState::parse(v.value()).filter(|s| wanted(*s)) {
                *out.entry(s).or_default() += 1;
            }
        }
        Ok(out)
    }

    /// The project's range of `project_transfers`, newest first; only the rows returned are
    /// read from `transfers`.
    fn project_transfers(
        &self,
        project: &str,
        filter: &TransferFilter,
        skip: usize,
        limit: Option<usize>,
    ) -> Result<Vec<TransferRecord>, StoreError> {
        let db = self.db()?;
        let txn = db.begin_read().map_err(engine("begin read"))?;
        let index = txn
            .open_table(PROJECT_TRANSFERS)
            .map_err(engine("open project transfers"))?;
        let transfers = txn
            .open_table(TRANSFERS)
            .map_err(engine("open transfers"))?;
        let (lo, hi) = counters::project_range(project, filter);
        let mut out = Vec::new();
        let mut skipped = 0;
        for row in index
            .range(lo.as_str()..hi.as_str())
            .map_err(engine("range"))?
            .rev()
        {
            if limit.is_some_and(|l| out.len() >= l) {
                break;
            }
            let (k, v) = row.map_err(engine("range"))?;
            if filter
                .state
                .is_some_and(|f| TransferState::parse(v.value()) != Some(f))
            {
                continue;
            }
            if skipped < skip {
                skipped += 1;
                continue;
            }
            let Some((_, id)) = k.value().rsplit_once(US) else {
                continue;
            };
            if let Some(t) = transfers.get(id).map_err(engine("read"))? {
                out.push(decode(TRANSFERS.name(), t.value())?);
            }
        }
        Ok(out)
    }
}

/// `(prefix US, prefix US+1)`: every key that starts with `prefix` and the separator.
fn us_range(prefix: &str) -> (String, String) {
    (format!("{prefix}{US}"), format!("{prefix}\u{20}"))
}

fn coupling_prefix(kind: KeyKind, key: &str) -> String {
    let k = match kind {
        KeyKind::AccessionNumber => 'a',
        KeyKind::StudyInstanceUid => 'u',
    };
    format!("{k}{US}{key}")
}

/// The assignment tables inside one redb write transaction.
struct TxTables<'a> {
    txn: &'a WriteTransaction,
}

impl TxTables<'_> {
    fn get_json<T: DeserializeOwned>(
        &self,
        def: TableDefinition<&str, &[u8]>,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        let t = self.txn.open_table(def).map_err(engine("open table"))?;
        let g = t.get(key).map_err(engine("read"))?;
        g.map(|g| decode(def.name(), g.value())).transpose()
    }

    fn put_json<T: Serialize>(
        &self,
        def: TableDefinition<&str, &[u8]>,
        key: &str,
        v: &T,
    ) -> Result<(), StoreError> {
        self.txn
            .open_table(def)
            .map_err(engine("open table"))?
            .insert(key, encode(v).as_slice())
            .map_err(engine("write"))?;
        Ok(())
    }

    fn range_json<T: DeserializeOwned>(
        &self,
        def: TableDefinition<&str, &[u8]>,
        (lo, hi): (String, String),
    ) -> Result<Vec<T>, StoreError> {
        let t = self.txn.open_table(def).map_err(engine("open table"))?;
        let mut out = Vec::new();
        for row in t.range(lo.as_str()..hi.as_str()).map_err(engine("range"))? {
            let (_, v) = row.map_err(engine("range"))?;
            out.push(decode(def.name(), v.value())?);
        }
        Ok(out)
    }
}

impl Tables for TxTables<'_> {
    fn put_study(&mut self, s: &StudyRecord) -> Result<(), StoreError> {
        let before: Option<StudyRecord> = self.get_json(STUDIES, &s.key)?;
        self.put_json(STUDIES, &s.key, s)?;
        let mut deltas = counters::StudyDeltas::default();
        deltas.study(self.txn, before.as_ref(), s)?;
        deltas.apply(self.txn)
    }

    fn remove_instances_of(&mut self, study_key: &str) -> Result<Vec<InstanceRecord>, StoreError> {
        let (lo, hi) = study_range(study_key);
        let removed: Vec<InstanceRecord> = self.range_json(INSTANCES, (lo.clone(), hi.clone()))?;
        let mut instances = self
            .txn
            .open_table(INSTANCES)
            .map_err(engine("open instances"))?;
        let mut sop = self
            .txn
            .open_table(SOP_INDEX)
            .map_err(engine("open sop_index"))?;
        for r in &removed {
            instances
                .remove(instance_key(study_key, &r.key).as_str())
                .map_err(engine("remove instance"))?;
            // Only the entry that names this copy: a re-sent copy indexed since under the
            // same SOP Instance UID cannot exist (the entry would have made it a duplicate).
            let names_it = sop
                .get(r.sop_instance_uid.as_str())
                .map_err(engine("read sop_index"))?
                .is_some_and(|g| g.value() == r.key);
            if names_it {
                sop.remove(r.sop_instance_uid.as_str())
                    .map_err(engine("remove sop_index"))?;
            }
        }
        drop((instances, sop));
        let mut series = self.txn.open_table(SERIES).map_err(engine("open series"))?;
        let keys: Vec<String> = series
            .range(lo.as_str()..hi.as_str())
            .map_err(engine("range series"))?
            .map(|row| row.map(|(k, _)| k.value().to_string()))
            .collect::<Result<_, _>>()
            .map_err(engine("range series"))?;
        for k in keys {
            series.remove(k.as_str()).map_err(engine("remove series"))?;
        }
        Ok(removed)
    }

    fn remove_transfer_instances(&mut self, transfer: &str) -> Result<(), StoreError> {
        let mut t = self
            .txn
            .open_table(TRANSFER_INSTANCES)
            .map_err(engine("open transfer_instances"))?;
        let (lo, hi) = us_range(transfer);
        let keys: Vec<String> = t
            .range(lo.as_str()..hi.as_str())
            .map_err(engine("range transfer_instances"))?
            .map(|row| row.map(|(k, _)| k.value().to_string()))
            .collect::<Result<_, _>>()
            .map_err(engine("range transfer_instances"))?;
        for k in keys {
            t.remove(k.as_str())
                .map_err(engine("remove transfer_instances"))?;
        }
        Ok(())
    }

    fn rejection(&self, key: &str) -> Result<Option<RejectRecord>, StoreError> {
        self.get_json(REJECTED, key)
    }

    fn put_rejection(&mut self, r: &RejectRecord) -> Result<(), StoreError> {
        let before: Option<RejectRecord> = self.get_json(REJECTED, &r.key)?;
        self.put_json(REJECTED, &r.key, r)?;
        counters::rejection(self.txn, before.as_ref(), r)
    }

    fn put_outbox(&mut self, r: &OutboxRecord) -> Result<(), StoreError> {
        self.put_json(OUTBOX, &r.id, r)
    }

    fn remove_outbox(&mut self, id: &str) -> Result<bool, StoreError> {
        let mut t = self.txn.open_table(OUTBOX).map_err(engine("open outbox"))?;
        let was = t.remove(id).map_err(engine("remove outbox"))?.is_some();
        Ok(was)
    }

    fn outbox_entry(&self, id: &str) -> Result<Option<OutboxRecord>, StoreError> {
        self.get_json(OUTBOX, id)
    }

    fn account(&self, name: &str) -> Result<Option<AccountRecord>, StoreError> {
        self.get_json(ACCOUNTS, name)
    }

    fn put_account(&mut self, a: &AccountRecord) -> Result<(), StoreError> {
        self.put_json(ACCOUNTS, &a.name, a)
    }

    fn review(&self, project: &str) -> Result<Option<ReviewInventory>, StoreError> {
        self.get_json(REVIEW, project)
    }

    fn put_review(&mut self, r: &ReviewInventory) -> Result<(), StoreError> {
        self.put_json(REVIEW, &r.project, r)
    }

    fn review_values(&self, project: &str, path: &str) -> Result<Vec<u64>, StoreError> {
        let t = self
            .txn
            .open_table(REVIEW_VALUES)
            .map_err(engine("open review_values"))?;
        let key = format!("{project}{US}{path}");
        let Some(g) = t.get(key.as_str()).map_err(engine("read review_values"))? else {
            return Ok(Vec::new());
        };
        let bytes = g.value();
        if bytes.len() % 8 != 0 {
            return Err(StoreError::Corrupt(
                REVIEW_VALUES.name().to_string(),
                format!("{} bytes is not a list of hashes", bytes.len()),
            ));
        }
        Ok(bytes
            .chunks_exact(8)
            .map(|c| {
                let mut b = [0u8; 8];
                b.copy_from_slice(c);
                u64::from_le_bytes(b)
            })
            .collect())
    }

    fn put_review_values(
        &mut self,
        project: &str,
        path: &str,
        hashes: &[u64],
    ) -> Result<(), StoreError> {
        let bytes: Vec<u8> = hashes.iter().flat_map(|h| h.to_le_bytes()).collect();
        let key = format!("{project}{US}{path}");
        self.txn
            .open_table(REVIEW_VALUES)
            .map_err(engine("open review_values"))?
            .insert(key.as_str(), bytes.as_slice())
            .map_err(engine("write review_values"))?;
        Ok(())
    }

    fn review_counted(&self, transfer: &str) -> Result<bool, StoreError> {
        let t = self
            .txn
            .open_table(REVIEW_TRANSFERS)
            .map_err(engine("open review_transfers"))?;
        let counted = t
            .get(transfer)
            .map_err(engine("read review_transfers"))?
            .is_some();
        Ok(counted)
    }

    fn put_review_counted(&mut self, transfer: &str, project: &str) -> Result<(), StoreError> {
        self.txn
            .open_table(REVIEW_TRANSFERS)
            .map_err(engine("open review_transfers"))?
            .insert(transfer, project)
            .map_err(engine("write review_transfers"))?;
        Ok(())
    }

    fn instance_keys_of(&self, study_key: &str) -> Result<Vec<String>, StoreError> {
        let t = self
            .txn
            .open_table(INSTANCES)
            .map_err(engine("open instances"))?;
        let (lo, hi) = study_range(study_key);
        let mut out = Vec::new();
        for row in t
            .range(lo.as_str()..hi.as_str())
            .map_err(engine("range instances"))?
        {
            let (k, _) = row.map_err(engine("range instances"))?;
            if let Some((_, key)) = k.value().split_once('/') {
                out.push(key.to_string());
            }
        }
        Ok(out)
    }

    fn add_transfer_instances(
        &mut self,
        transfer: &str,
        keys: &[String],
    ) -> Result<(), StoreError> {
        let mut t = self
            .txn
            .open_table(TRANSFER_INSTANCES)
            .map_err(engine("open transfer_instances"))?;
        for k in keys {
            t.insert(format!("{transfer}{US}{k}").as_str(), "")
                .map_err(engine("write transfer_instances"))?;
        }
        Ok(())
    }

    fn all_assignments(&self) -> Result<Vec<AssignmentRecord>, StoreError> {
        let t = self
            .txn
            .open_table(ASSIGNMENTS)
            .map_err(engine("open assignments"))?;
        let mut out = Vec::new();
        for row in t.iter().map_err(engine("iterate assignments"))? {
            let (_, v) = row.map_err(engine("iterate assignments"))?;
            out.push(decode("assignments", v.value())?);
        }
        Ok(out)
    }

    fn study(&self, key: &str) -> Result<Option<StudyRecord>, StoreError> {
        self.get_json(STUDIES, key)
    }

    fn all_studies(&self) -> Result<Vec<StudyRecord>, StoreError> {
        let t = self
            .txn
            .open_table(STUDIES)
            .map_err(engine("open studies"))?;
        let mut out = Vec::new();
        for row in t.iter().map_err(engine("iterate studies"))? {
            let (k, v) = row.map_err(engine("iterate studies"))?;
            out.push(decode(k.value(), v.value())?);
        }
        Ok(out)
    }

    fn study_key_by_uid(&self, uid: &str) -> Result<Option<String>, StoreError> {
        let t = self
            .txn
            .open_table(STUDY_UID_INDEX)
            .map_err(engine("open study_uid_index"))?;
        let v = t
            .get(uid)
            .map_err(engine("read study_uid_index"))?
            .map(|g| g.value().to_string());
        Ok(v)
    }

    fn series_of(&self, study_key: &str) -> Result<Vec<SeriesRecord>, StoreError> {
        self.range_json(SERIES, study_range(study_key))
    }

    fn assignments_of(&self, study_key: &str) -> Result<Vec<AssignmentRecord>, StoreError> {
        self.range_json(ASSIGNMENTS, us_range(study_key))
    }

    fn put_assignment(&mut self, a: &AssignmentRecord) -> Result<(), StoreError> {
        self.put_json(ASSIGNMENTS, &format!("{}{US}{}", a.study_key, a.project), a)?;
        let study: Option<StudyRecord> = self.get_json(STUDIES, &a.study_key)?;
        counters::assigned(self.txn, study.as_ref())
    }

    fn transfer(&self, id: &str) -> Result<Option<TransferRecord>, StoreError> {
        self.get_json(TRANSFERS, id)
    }

    fn put_transfer(&mut self, t: &TransferRecord) -> Result<(), StoreError> {
        let before: Option<TransferRecord> = self.get_json(TRANSFERS, &t.id)?;
        self.put_json(TRANSFERS, &t.id, t)?;
        counters::transfer(self.txn, before.as_ref(), t)
    }

    fn participant(
        &self,
        project: &str,
        id: &str,
    ) -> Result<Option<ParticipantRecord>, StoreError> {
        self.get_json(PARTICIPANTS, &format!("{project}{US}{id}"))
    }

    fn put_participant(&mut self, p: &ParticipantRecord) -> Result<(), StoreError> {
        self.put_json(
            PARTICIPANTS,
            &format!("{}{US}{}", p.project, p.participant),
            p,
        )
    }

    fn coupling(&self, kind: KeyKind, key: &str) -> Result<Vec<CouplingEntry>, StoreError> {
        self.range_json(COUPLING, us_range(&coupling_prefix(kind, key)))
    }

    fn put_coupling(&mut self, e: &CouplingEntry) -> Result<(), StoreError> {
        let k = format!("{}{US}{}", coupling_prefix(e.kind, &e.key), e.project);
        self.put_json(COUPLING, &k, e)
    }

    fn auto_id(&self, project: &str, hash: &str) -> Result<Option<String>, StoreError> {
        let t = self
            .txn
            .open_table(AUTO_IDS)
            .map_err(engine("open auto_ids"))?;
        let v = t
            .get(format!("{project}{US}{hash}").as_str())
            .map_err(engine("read auto_ids"))?
            .map(|g| g.value().to_string());
        Ok(v)
    }

    fn put_auto_id(&mut self, project: &str, hash: &str, id: &str) -> Result<(), StoreError> {
        self.txn
            .open_table(AUTO_IDS)
            .map_err(engine("open auto_ids"))?
            .insert(format!("{project}{US}{hash}").as_str(), id)
            .map_err(engine("write auto_ids"))?;
        Ok(())
    }

    fn issued_study(&self, uid: &str) -> Result<Option<(String, String)>, StoreError> {
        let t = self
            .txn
            .open_table(ISSUED_STUDIES)
            .map_err(engine("open issued_studies"))?;
        let v = t
            .get(uid)
            .map_err(engine("read issued_studies"))?
            .and_then(|g| {
                g.value()
                    .split_once(US)
                    .map(|(k, p)| (k.to_string(), p.to_string()))
            });
        Ok(v)
    }

    fn put_issued_study(
        &mut self,
        uid: &str,
        study_key: &str,
        project: &str,
    ) -> Result<(), StoreError> {
        self.txn
            .open_table(ISSUED_STUDIES)
            .map_err(engine("open issued_studies"))?
            .insert(uid, format!("{study_key}{US}{project}").as_str())
            .map_err(engine("write issued_studies"))?;
        Ok(())
    }

    fn append_audit(&mut self, mut a: AuditRecord) -> Result<u64, StoreError> {
        let mut t = self.txn.open_table(AUDIT).map_err(engine("open audit"))?;
        let next = t
            .last()
            .map_err(engine("read audit"))?
            .map(|(k, _)| k.value() + 1)
            .unwrap_or(1);
        a.seq = next;
        t.insert(next, encode(&a).as_slice())
            .map_err(engine("write audit"))?;
        Ok(next)
    }
}

/// Aggregates the status page and metrics read without scanning the index: totals, transfers
/// by project and state, parked instances, studies by last arrival; transfers by state (the
/// pipeline's passes read only what is in flight); and two orders the web page lists from, a
/// page at a time: each project's transfers by creation (with their state) and the assign list (studies with no assignment, never evicted, by last arrival, with their
/// first). A study enters the assign list when it is created and leaves it for good when an
/// assignment of it is written or it is evicted (assignments are never removed, and an
/// eviction is never undone). Every write of a study,
/// rejection or transfer record applies its difference in the same transaction, so they
/// cannot drift from the records; an index without them (written before they existed, or by
/// another version) gets them rebuilt from the records when it is opened.
mod counters {
    use super::*;

    /// Bumped when what the counters mean changes: the next open rebuilds them. 2: the
    /// `project_transfers` order, the `unassigned_studies` list and `transfer_states`.
    const VERSION: u64 = 2;
    const VERSION_KEY: &str = "version";
    pub const STUDIES: &str = "studies";
    pub const SERIES: &str = "series";
    pub const INSTANCES: &str = "instances";
    pub const BYTES: &str = "bytes";
    pub const REJECTED: &str = "rejected";
    pub const REJECTED_BYTES: &str = "rejected_bytes";
    const PARKED: &str = "parked_instances";
    /// `t{US}{project}{US}{state}`: transfers of a project in a state.
    const TRANSFER_PREFIX: &str = "t\u{1f}";

    fn transfer_key(t: &TransferRecord) -> String {
        format!("{TRANSFER_PREFIX}{}{US}{}", t.project, t.state.as_str())
    }

    /// The first `RECENT` key at or after `ms`.
    pub fn recent_prefix(ms: i64) -> String {
        format!("{:020}", ms.max(0))
    }

    fn recent_key(last_received_ms: i64, study_key: &str) -> String {
        format!("{}{US}{study_key}", recent_prefix(last_received_ms))
    }

    /// The transfer's key in `PROJECT_TRANSFERS`.
    fn project_key(t: &TransferRecord) -> String {
        format!("{}{US}{:020}{US}{}", t.project, t.created_ms.max(0), t.id)
    }

    /// The keys of `project`'s transfers created in `filter`'s window: `lo..hi`.
    pub fn project_range(project: &str, filter: &TransferFilter) -> (String, String) {
        let at = |ms: Option<i64>, or: &str| match ms {
            Some(ms) => format!("{project}{US}{:020}", ms.max(0)),
            None => format!("{project}{or}"),
        };
        (
            at(filter.created_from_ms, "\u{1f}"),
            at(filter.created_before_ms, "\u{20}"),
        )
    }

    fn bump(txn: &WriteTransaction, key: &str, delta: i128) -> Result<(), StoreError> {
        if delta == 0 {
            return Ok(());
        }
        let mut c = txn.open_table(COUNTERS).map_err(engine("open counters"))?;
        let now = c
            .get(key)
            .map_err(engine("read counters"))?
            .map_or(0, |g| g.value());
        // A count below zero would be a bug in a difference; 0 is the honest floor.
        let next = u64::try_from((i128::from(now) + delta).max(0)).unwrap_or(u64::MAX);
        if next == 0 {
            c.remove(key).map_err(engine("write counters"))?;
        } else {
            c.insert(key, next).map_err(engine("write counters"))?;
        }
        Ok(())
    }

    fn diff(new: u64, old: u64) -> i128 {
        i128::from(new) - i128::from(old)
    }

    /// Differences of the study totals, added up over a transaction's writes and applied
    /// once ([`StudyDeltas::apply`]): a batch of arrivals touches each counter once.
    #[derive(Debug, Default)]
    pub struct StudyDeltas {
        studies: i128,
        series: i128,
        instances: i128,
        bytes: i128,
    }

    impl StudyDeltas {
        /// A study record was written (`before`: what it replaced). Moves the study in the
        /// arrival order at once; the totals wait for [`StudyDeltas::apply`].
        pub fn study(
            &mut self,
            txn: &WriteTransaction,
            before: Option<&StudyRecord>,
            s: &StudyRecord,
        ) -> Result<(), StoreError> {
            let (series, instances, bytes) =
                before.map_or((0, 0, 0), |b| (b.series_count, b.instance_count, b.bytes));
            self.studies += i128::from(before.is_none());
            self.series += diff(s.series_count, series);
            self.instances += diff(s.instance_count, instances);
            self.bytes += diff(s.bytes, bytes);
            let was_listed = match before {
                Some(b) => unlist(txn, b.last_received_ms, &b.key)?,
                None => false,
            };
            // A study written whole for the first time (a rebuild) is listed unless assigned;
            // a listed one stays listed until evicted.
            let listed = s.evicted.is_none()
                && match before {
                    Some(_) => was_listed,
                    None => !has_assignment(txn, &s.key)?,
                };
            if listed {
                list(txn, s)?;
            }
            moved(txn, before.map(|b| b.last_received_ms), s)
        }

        /// One new instance of `s` (already counted in it); `last_before` is the study's last
        /// arrival before it, `None` for a new study.
        pub fn arrival(
            &mut self,
            txn: &WriteTransaction,
            last_before: Option<i64>,
            series_new: bool,
            bytes: u64,
            s: &StudyRecord,
        ) -> Result<(), StoreError> {
            self.studies += i128::from(last_before.is_none());
            self.series += i128::from(series_new);
            self.instances += 1;
            self.bytes += i128::from(bytes);
            // A new study is on the assign list until assigned (maybe by the arrival hook, in
            // this transaction); a listed one moves with its last arrival.
            let listed = match last_before {
                None => s.evicted.is_none(),
                Some(ms) => unlist(txn, ms, &s.key)?,
            };
            if listed {
                list(txn, s)?;
            }
            moved(txn, last_before, s)
        }

        pub fn apply(self, txn: &WriteTransaction) -> Result<(), StoreError> {
            bump(txn, STUDIES, self.studies)?;
            bump(txn, SERIES, self.series)?;
            bump(txn, INSTANCES, self.instances)?;
            bump(txn, BYTES, self.bytes)
        }
    }

    /// Keep the study's place in the arrival order (`RECENT`) in step with its last arrival.
    fn moved(
        txn: &WriteTransaction,
        last_before: Option<i64>,
        s: &StudyRecord,
    ) -> Result<(), StoreError> {
        if last_before == Some(s.last_received_ms) {
            return Ok(());
        }
        let mut r = txn.open_table(RECENT).map_err(engine("open recent"))?;
        if let Some(ms) = last_before {
            r.remove(recent_key(ms, &s.key).as_str())
                .map_err(engine("write recent"))?;
        }
        r.insert(recent_key(s.last_received_ms, &s.key).as_str(), 0)
            .map_err(engine("write recent"))?;
        Ok(())
    }

    /// Put `s` on the assign list (at its last arrival, with its first).
    fn list(txn: &WriteTransaction, s: &StudyRecord) -> Result<(), StoreError> {
        txn.open_table(UNASSIGNED)
            .map_err(engine("open unassigned"))?
            .insert(
                recent_key(s.last_received_ms, &s.key).as_str(),
                s.first_received_ms,
            )
            .map_err(engine("write unassigned"))?;
        Ok(())
    }

    /// Take a study off the assign list; whether it was on it.
    fn unlist(
        txn: &WriteTransaction,
        last_received_ms: i64,
        study_key: &str,
    ) -> Result<bool, StoreError> {
        Ok(txn
            .open_table(UNASSIGNED)
            .map_err(engine("open unassigned"))?
            .remove(recent_key(last_received_ms, study_key).as_str())
            .map_err(engine("write unassigned"))?
            .is_some())
    }

    fn has_assignment(txn: &WriteTransaction, study_key: &str) -> Result<bool, StoreError> {
        let (lo, hi) = us_range(study_key);
        Ok(txn
            .open_table(ASSIGNMENTS)
            .map_err(engine("open assignments"))?
            .range(lo.as_str()..hi.as_str())
            .map_err(engine("range"))?
            .next()
            .is_some())
    }

    /// An assignment of `study` was written: it leaves the assign list.
    pub fn assigned(txn: &WriteTransaction, study: Option<&StudyRecord>) -> Result<(), StoreError> {
        if let Some(s) = study {
            unlist(txn, s.last_received_ms, &s.key)?;
        }
        Ok(())
    }

    /// A rejection record was written; evicted ones no longer count.
    pub fn rejection(
        txn: &WriteTransaction,
        before: Option<&RejectRecord>,
        r: &RejectRecord,
    ) -> Result<(), StoreError> {
        let held = |r: &RejectRecord| r.evicted_ms.is_none();
        let (n0, b0) = before.filter(|b| held(b)).map_or((0, 0), |b| (1, b.bytes));
        let (n1, b1) = if held(r) { (1, r.bytes) } else { (0, 0) };
        bump(txn, REJECTED, diff(n1, n0))?;
        bump(txn, REJECTED_BYTES, diff(b1, b0))
    }

    /// A transfer record was written.
    pub fn transfer(
        txn: &WriteTransaction,
        before: Option<&TransferRecord>,
        t: &TransferRecord,
    ) -> Result<(), StoreError> {
        if let Some(b) = before {
            bump(txn, &transfer_key(b), -1)?;
        }
        bump(txn, &transfer_key(t), 1)?;
        if before.map(|b| b.state) != Some(t.state) {
            let mut by_state = txn
                .open_table(TRANSFER_STATES)
                .map_err(engine("open transfer states"))?;
            if let Some(b) = before {
                by_state
                    .remove(format!("{}{US}{}", b.state.as_str(), b.id).as_str())
                    .map_err(engine("write transfer states"))?;
            }
            by_state
                .insert(format!("{}{US}{}", t.state.as_str(), t.id).as_str(), "")
                .map_err(engine("write transfer states"))?;
        }
        let key = project_key(t);
        let old = before.map(|b| (project_key(b), b.state));
        if old.as_ref() != Some(&(key.clone(), t.state)) {
            let mut p = txn
                .open_table(PROJECT_TRANSFERS)
                .map_err(engine("open project transfers"))?;
            if let Some((k, _)) = old.filter(|(k, _)| *k != key) {
                p.remove(k.as_str())
                    .map_err(engine("write project transfers"))?;
            }
            p.insert(key.as_str(), t.state.as_str())
                .map_err(engine("write project transfers"))?;
        }
        let parked_before = before.map_or(0, |b| b.parked.len() as u64);
        bump(txn, PARKED, diff(t.parked.len() as u64, parked_before))
    }

    pub fn transfer_counts(
        c: &redb::ReadOnlyTable<&str, u64>,
    ) -> Result<TransferCounts, StoreError> {
        let mut out = TransferCounts::default();
        let hi = format!("t{}", '\u{20}');
        for row in c
            .range(TRANSFER_PREFIX..hi.as_str())
            .map_err(engine("range"))?
        {
            let (k, v) = row.map_err(engine("range"))?;
            let rest = &k.value()[TRANSFER_PREFIX.len()..];
            let Some((project, state)) = rest.rsplit_once(US) else {
                continue;
            };
            let Some(state) = TransferState::parse(state) else {
                continue;
            };
            out.by_state.insert((project.to_string(), state), v.value());
        }
        out.parked_instances = c
            .get(PARKED)
            .map_err(engine("read counters"))?
            .map_or(0, |g| g.value());
        Ok(out)
    }

    /// Rebuild the counters from the records unless they are of this version.
    pub fn ensure(txn: &WriteTransaction) -> Result<(), StoreError> {
        {
            let c = txn.open_table(COUNTERS).map_err(engine("open counters"))?;
            if c.get(VERSION_KEY)
                .map_err(engine("read counters"))?
                .map(|g| g.value())
                == Some(VERSION)
            {
                return Ok(());
            }
        }
        txn.delete_table(COUNTERS)
            .map_err(engine("clear counters"))?;
        txn.delete_table(RECENT).map_err(engine("clear recent"))?;
        txn.delete_table(PROJECT_TRANSFERS)
            .map_err(engine("clear project transfers"))?;
        txn.delete_table(UNASSIGNED)
            .map_err(engine("clear unassigned"))?;
        txn.delete_table(TRANSFER_STATES)
            .map_err(engine("clear transfer states"))?;
        // They exist afterwards, also when there is nothing to count.
        txn.open_table(RECENT).map_err(engine("create recent"))?;
        txn.open_table(PROJECT_TRANSFERS)
            .map_err(engine("create project transfers"))?;
        txn.open_table(UNASSIGNED)
            .map_err(engine("create unassigned"))?;
        txn.open_table(TRANSFER_STATES)
            .map_err(engine("create transfer states"))?;
        let studies: Vec<StudyRecord> = all(txn, super::STUDIES)?;
        let mut deltas = StudyDeltas::default();
        for s in &studies {
            deltas.study(txn, None, s)?;
        }
        deltas.apply(txn)?;
        let rejected: Vec<RejectRecord> = all(txn, super::REJECTED)?;
        for r in &rejected {
            rejection(txn, None, r)?;
        }
        let transfers: Vec<TransferRecord> = all(txn, TRANSFERS)?;
        for t in &transfers {
            transfer(txn, None, t)?;
        }
        txn.open_table(COUNTERS)
            .map_err(engine("open counters"))?
            .insert(VERSION_KEY, VERSION)
            .map_err(engine("write counters"))?;
        if !studies.is_empty() || !transfers.is_empty() {
            tracing::info!(
                studies = studies.len(),
                transfers = transfers.len(),
                "index counters rebuilt from the records"
            );
        }
        Ok(())
    }

    fn all<T: DeserializeOwned>(
        txn: &WriteTransaction,
        def: TableDefinition<&str, &[u8]>,
    ) -> Result<Vec<T>, StoreError> {
        let t = txn.open_table(def).map_err(engine("open table"))?;
        let mut out = Vec::new();
        for row in t.iter().map_err(engine("iterate"))? {
            let (k, v) = row.map_err(engine("iterate"))?;
            out.push(decode(k.value(), v.value())?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assign::Policy;
    use crate::header::HeaderFields;
    use proptest::prelude::*;

    fn inst(key: &str, study: &str, series: &str, sop: &str, bytes: u64) -> NewInstance {
        NewInstance {
            key: key.into(),
            file: format!("objects/x/{key}.dcm"),
            bytes,
            transfer_syntax: "1.2.840.10008.1.2.1".into(),
            received_ms: 1000,
            origin: Origin::default(),
            header: HeaderFields {
                sop_instance_uid: sop.into(),
                study_instance_uid: study.into(),
                series_instance_uid: series.into(),
                modality: "CT".into(),
                ..HeaderFields::default()
            },
        }
    }

    #[test]
    fn counts_and_duplicates() {
        let d = tempfile::tempdir().unwrap();
        let s = RedbStore::open(&d.path().join("i.redb")).unwrap();
        let out = s
            .commit(
                &[
                    inst("A", "1.1", "1.1.1", "1.1.1.1", 10),
                    inst("B", "1.1", "1.1.1", "1.1.1.2", 20),
                    inst("C", "1.1", "1.1.2", "1.1.2.1", 30),
                    inst("D", "1.1", "1.1.2", "1.1.2.1", 30),
                ],
                &Policy::default(),
                0,
            )
            .unwrap();
        assert!(matches!(out[3], CommitOutcome::Duplicate { ref existing } if existing == "C"));
        let studies = s.studies().unwrap();
        assert_eq!(studies.len(), 1);
        assert_eq!(studies[0].instance_count, 3);
        assert_eq!(studies[0].series_count, 2);
        assert_eq!(studies[0].bytes, 60);
        let series = s.series_of(&studies[0].key).unwrap();
        assert_eq!(series.len(), 2);
        assert_eq!(s.instances_of(&studies[0].key).unwrap().len(), 3);
        let t = s.totals().unwrap();
        assert_eq!((t.studies, t.series, t.instances, t.bytes), (1, 2, 3, 60));
        assert!(s.has_sop_instance("1.1.2.1").unwrap());
        let keys = s.instance_keys().unwrap();
        assert!(keys.contains("A"));
        assert!(!keys.contains("D"));
    }

    fn transfer(id: &str, project: &str, state: TransferState, parked: usize) -> TransferRecord {
        TransferRecord {
            id: id.into(),
            study_key: "S".into(),
            project: project.into(),
            participant: "P-1".into(),
            event: "e".into(),
            kind: crate::model::TransferKind::Assignment,
            via: crate::model::Via::Manual,
            actor: "user:test".into(),
            created_ms: 0,
            series: vec![],
            instances: 1,
            state,
            state_ms: 0,
            reason: None,
            research_study_uid: "2.25.1".into(),
            replaces: None,
            sent: 0,
            verified_ms: None,
            deidentified: 0,
            dropped: 0,
            parked: (0..parked)
                .map(|i| crate::model::Parked {
                    instance: format!("I{i}"),
                    reason: "r".into(),
                })
                .collect(),
            deliveries: vec![],
            deid_attempts: 0,
            next_deid_ms: 0,
        }
    }

    fn rejected(key: &str, bytes: u64) -> RejectRecord {
        RejectRecord {
            key: key.into(),
            file: format!("rejected/{key}.dcm"),
            bytes,
            received_ms: 0,
            status: 0xA900,
            reason: "r".into(),
            origin: Origin::default(),
            evicted_ms: None,
        }
    }

    /// What the counters must say, from the records.
    fn scanned(s: &RedbStore, since_ms: i64) -> (Totals, TransferCounts, u64) {
        let mut t = Totals::default();
        let studies = s.studies().unwrap();
        for st in &studies {
            t.studies += 1;
            t.series += st.series_count;
            t.instances += st.instance_count;
            t.bytes += st.bytes;
        }
        for r in s.rejections().unwrap() {
            if r.evicted_ms.is_none() {
                t.rejected += 1;
                t.rejected_bytes += r.bytes;
            }
        }
        let mut c = TransferCounts::default();
        for tr in s.transfers().unwrap() {
            *c.by_state
                .entry((tr.project.clone(), tr.state))
                .or_default() += 1;
            c.parked_instances += tr.parked.len() as u64;
        }
        let recent = studies
            .iter()
            .filter(|st| st.last_received_ms >= since_ms)
            .count() as u64;
        (t, c, recent)
    }

    fn counted(s: &RedbStore, since_ms: i64) -> (Totals, TransferCounts, u64) {
        (
            s.totals().unwrap(),
            s.transfer_counts().unwrap(),
            s.studies_received_since(since_ms).unwrap(),
        )
    }

    #[test]
    fn counters_follow_every_write_and_are_rebuilt_when_missing() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("i.redb");
        let s = RedbStore::open(&p).unwrap();
        // A new, empty index answers too.
        assert_eq!(counted(&s, 0), scanned(&s, 0));
        let mut batch = vec![
            inst("A", "1.1", "1.1.1", "1.1.1.1", 10),
            inst("B", "1.1", "1.1.2", "1.1.2.1", 20),
            inst("C", "1.2", "1.2.1", "1.2.1.1", 30),
            inst("D", "1.3", "1.3.1", "1.3.1.1", 40),
            inst("E", "1.3", "1.3.1", "1.3.1.1", 40), // duplicate: not counted
        ];
        for (i, n) in batch.iter_mut().enumerate() {
            n.received_ms = 1000 * (i as i64 + 1);
        }
        s.commit(&batch, &Policy::default(), 0).unwrap();
        s.record_rejection(&rejected("R1", 5)).unwrap();
        s.record_rejection(&rejected("R2", 7)).unwrap();
        let key_of = |uid: &str| {
            let all = s.studies().unwrap();
            all.into_iter()
                .find(|x| x.study_instance_uid == uid)
                .unwrap()
                .key
        };
        let (k1, k3) = (key_of("1.1"), key_of("1.3"));
        s.write_assign(&mut |t| {
            t.put_transfer(&transfer("T1", "PROJA", TransferState::Requested, 0))?;
            t.put_transfer(&transfer("T1", "PROJA", TransferState::Parked, 2))?;
            t.put_transfer(&transfer("T2", "PROJB", TransferState::Sent, 0))?;
            t.put_transfer(&transfer("T2", "PROJB", TransferState::Verified, 0))?;
            t.put_transfer(&transfer("T3", "PROJA", TransferState::Verified, 0))?;
            // An eviction: the study record stays with nothing in it; a rejected file goes.
            let mut st = t.study(&k1)?.unwrap();
            t.remove_instances_of(&k1)?;
            st.instance_count = 0;
            st.series_count = 0;
            st.bytes = 0;
            t.put_study(&st)?;
            let mut r = t.rejection("R1")?.unwrap();
            r.evicted_ms = Some(9);
            t.put_rejection(&r)
        })
        .unwrap();
        // A later instance of a study moves its arrival.
        let mut late = inst("F", "1.3", "1.3.2", "1.3.2.1", 50);
        late.received_ms = 9000;
        s.commit(&[late], &Policy::default(), 0).unwrap();
        assert_eq!(s.study(&k3).unwrap().unwrap().last_received_ms, 9000);

        let want = scanned(&s, 3000);
        assert_eq!(counted(&s, 3000), want);
        let (t, c, recent) = &want;
        assert_eq!((t.studies, t.series, t.instances, t.bytes), (3, 3, 3, 120));
        assert_eq!((t.rejected, t.rejected_bytes), (1, 7));
        assert_eq!(c.in_state(TransferState::Parked), 1);
        assert_eq!(c.in_state(TransferState::Verified), 2);
        assert_eq!(c.in_state(TransferState::Requested), 0);
        assert_eq!(c.parked_instances, 2);
        assert_eq!(*recent, 2, "1.2 at 3000 and 1.3 at 9000");
        assert_eq!(s.studies_received_since(9001).unwrap(), 0);

        // An index without counters (older version): rebuilt at open, the same.
        drop(s);
        {
            let db = Database::create(&p).unwrap();
            let txn = db.begin_write().unwrap();
            txn.delete_table(COUNTERS).unwrap();
            txn.delete_table(RECENT).unwrap();
            txn.commit().unwrap();
        }
        let s = RedbStore::open(&p).unwrap();
        assert_eq!(counted(&s, 3000), want);
    }

    /// `transfers_in` (by state), `project_transfers` and `project_transfer_counts` (a key
    /// range and the counters) and `unassigned_studies` (the assign list) answer what a scan of the records does, after
    /// state changes, a moved creation time, a later arrival, an assignment, an eviction and
    /// a rebuild.
    #[test]
    fn listings_by_project_and_arrival_agree_with_a_scan() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("i.redb");
        let s = RedbStore::open(&p).unwrap();
        let states = [
            TransferState::Verified,
            TransferState::Failed,
            TransferState::Requested,
        ];
        s.write_assign(&mut |t| {
            for i in 0..40i64 {
                let project = if i % 4 == 3 { "PROJB" } else { "PROJA" };
                let mut tr = transfer(&format!("T{i:02}"), project, states[i as usize % 3], 0);
                // Some share a creation time: the ID orders them.
                tr.created_ms = 1000 * (i / 2);
                t.put_transfer(&tr)?;
            }
            // A state change and a moved creation time leave one entry each.
            let mut a = t.transfer("T05")?.unwrap();
            a.state = TransferState::Cancelled;
            t.put_transfer(&a)?;
            let mut b = t.transfer("T06")?.unwrap();
            b.created_ms = 99_000;
            t.put_transfer(&b)
        })
        .unwrap();
        let filters = [
            TransferFilter::default(),
            TransferFilter {
                state: Some(TransferState::Verified),
                ..Default::default()
            },
            TransferFilter {
                created_from_ms: Some(3000),
                created_before_ms: Some(11_000),
                ..Default::default()
            },
            TransferFilter {
                state: Some(TransferState::Failed),
                created_from_ms: Some(5000),
                ..Default::default()
            },
            TransferFilter {
                created_before_ms: Some(0),
                ..Default::default()
            },
        ];
        let check = |s: &RedbStore| {
            for states in [
                &[TransferState::Verified][..],
                &[TransferState::Failed, TransferState::Cancelled],
                &[TransferState::Sent],
            ] {
                let want: Vec<String> = s
                    .transfers()
                    .unwrap()
                    .into_iter()
                    .filter(|t| states.contains(&t.state))
                    .map(|t| t.id)
                    .collect();
                let got: Vec<String> = s
                    .transfers_in(states)
                    .unwrap()
                    .into_iter()
                    .map(|t| t.id)
                    .collect();
                assert_eq!(got, want, "{states:?}");
            }
            for project in ["PROJA", "PROJB", "NONE"] {
                for f in &filters {
                    let mut all: Vec<TransferRecord> = s
                        .transfers()
                        .unwrap()
                        .into_iter()
                        .filter(|t| t.project == project && f.matches(t))
                        .collect();
                    all.sort_by(newest_first);
                    let mut counts = std::collections::BTreeMap::new();
                    for t in &all {
                        *counts.entry(t.state).or_insert(0u64) += 1;
                    }
                    assert_eq!(
                        s.project_transfer_counts(project, f).unwrap(),
                        counts,
                        "{project} {f:?}"
                    );
                    let ids =
                        |v: Vec<TransferRecord>| v.into_iter().map(|t| t.id).collect::<Vec<_>>();
                    let want = ids(all.clone());
                    assert_eq!(ids(s.project_transfers(project, f, 0, None).unwrap()), want);
                    for (skip, limit) in [(0, 3), (2, 5), (7, 100), (100, 1)] {
                        let page = want
                            .iter()
                            .skip(skip)
                            .take(limit)
                            .cloned()
                            .collect::<Vec<_>>();
                        assert_eq!(
                            ids(s.project_transfers(project, f, skip, Some(limit)).unwrap()),
                            page,
                            "{project} {f:?} {skip} {limit}"
                        );
                    }
                }
            }
        };
        check(&s);
        assert_eq!(
            s.project_transfers("PROJA", &TransferFilter::default(), 0, Some(1))
                .unwrap()[0]
                .id,
            "T06",
            "the moved one is the newest"
        );

        // The assign list: five studies; one assigned later, one evicted, one that arrived
        // long ago, one whose later instance moves it to the front.
        let mut batch: Vec<NewInstance> = (1..=5)
            .map(|i| {
                let mut n = inst(
                    &format!("K{i}"),
                    &format!("1.{i}"),
                    &format!("1.{i}.1"),
                    &format!("1.{i}.1.1"),
                    1,
                );
                n.received_ms = 1000 * i;
                n
            })
            .collect();
        batch[0].received_ms = 10;
        s.commit(&batch, &Policy::default(), 0).unwrap();
        let mut late = inst("K6", "1.2", "1.2.1", "1.2.1.2", 1);
        late.received_ms = 8000;
        s.commit(&[late], &Policy::default(), 0).unwrap();
        let key_of = |uid: &str| {
            s.studies()
                .unwrap()
                .into_iter()
                .find(|x| x.study_instance_uid == uid)
                .unwrap()
                .key
        };
        let (assigned, evicted) = (key_of("1.3"), key_of("1.5"));
        s.write_assign(&mut |t| {
            t.put_assignment(&AssignmentRecord {
                study_key: assigned.clone(),
                project: "PROJA".into(),
                participant: "P-1".into(),
                event: "e".into(),
                via: crate::model::Via::Manual,
                actor: "user:test".into(),
                assigned_ms: 0,
                research_study_uid: "2.25.9".into(),
                derived_from: None,
                transfers: vec![],
                corrections: 0,
            })?;
            let mut st = t.study(&evicted)?.unwrap();
            st.evicted = Some(crate::model::Eviction {
                at_ms: 9000,
                reason: crate::model::EvictReason::UnassignedRetention,
                series: 1,
                instances: 1,
                bytes: 1,
                transfers: vec![],
            });
            t.put_study(&st)
        })
        .unwrap();
        let listed = |s: &RedbStore, since, skip, limit| {
            let (n, v) = s.unassigned_studies(since, skip, limit).unwrap();
            (
                n,
                v.into_iter()
                    .map(|x| x.study_instance_uid)
                    .collect::<Vec<_>>(),
            )
        };
        let all = (3, vec!["1.2".to_string(), "1.4".into(), "1.1".into()]);
        assert_eq!(listed(&s, 0, 0, None), all);
        assert_eq!(
            listed(&s, 1000, 0, None),
            (2, vec!["1.2".into(), "1.4".into()])
        );
        assert_eq!(listed(&s, 0, 1, Some(1)), (3, vec!["1.4".into()]));
        assert_eq!(listed(&s, 0, 5, Some(1)), (3, vec![]));
        assert_eq!(listed(&s, 9000, 0, None), (0, vec![]));
        // The same as the scan of the records (the trait's default).
        let scan = |s: &RedbStore, since: i64| {
            let assigned: Vec<String> = s
                .assignments(None)
                .unwrap()
                .into_iter()
                .map(|a| a.study_key)
                .collect();
            let mut v: Vec<StudyRecord> = s
                .studies()
                .unwrap()
                .into_iter()
                .filter(|x| {
                    x.first_received_ms >= since
                        && x.evicted.is_none()
                        && !assigned.contains(&x.key)
                })
                .collect();
            v.sort_by_key(|x| std::cmp::Reverse(x.last_received_ms));
            v.into_iter()
                .map(|x| x.study_instance_uid)
                .collect::<Vec<_>>()
        };
        for since in [0, 1000, 2000] {
            assert_eq!(listed(&s, since, 0, None).1, scan(&s, since));
        }

        // An index from before the order existed: rebuilt at open, the same answers.
        drop(s);
        {
            let db = Database::create(&p).unwrap();
            let txn = db.begin_write().unwrap();
            txn.delete_table(COUNTERS).unwrap();
            txn.delete_table(PROJECT_TRANSFERS).unwrap();
            txn.delete_table(UNASSIGNED).unwrap();
            txn.delete_table(TRANSFER_STATES).unwrap();
            txn.commit().unwrap();
        }
        let s = RedbStore::open(&p).unwrap();
        check(&s);
        assert_eq!(listed(&s, 0, 0, None), all);
    }

    #[test]
    fn survives_reopen() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("i.redb");
        {
            let s = RedbStore::open(&p).unwrap();
            s.commit(
                &[inst("A", "1.1", "1.1.1", "1.1.1.1", 10)],
                &Policy::default(),
                0,
            )
            .unwrap();
            s.record_rejection(&RejectRecord {
                key: "R".into(),
                file: "rejected/R.dcm".into(),
                bytes: 5,
                received_ms: 0,
                status: 0xC000,
                reason: "truncated".into(),
                origin: Origin::default(),
                evicted_ms: None,
            })
            .unwrap();
        }
        let s = RedbStore::open(&p).unwrap();
        assert_eq!(s.totals().unwrap().instances, 1);
        assert_eq!(s.rejections().unwrap().len(), 1);
        assert!(s.has_rejection("R").unwrap());
    }

    /// The review inventory through the index (issue 17): merged inside a write
    /// transaction, a transfer merged again adds no instances, the distinct counts go on
    /// from the hashes kept, a rolled-back merge leaves nothing, and it survives a reopen.
    #[test]
    fn review_merges_once_per_transfer_and_survives_reopen() {
        use crate::model::ReviewBatch;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("i.redb");
        let one = |value: &str| {
            let mut b = ReviewBatch::instance();
            let h = value.len() as u64;
            b.element("(0010,0010)".into(), "PatientName", "PN", h, || {
                value.to_string()
            });
            b
        };
        let mut two = one("P-1");
        two.absorb(one("P-22"));
        let merge = |s: &RedbStore, transfer: &str, b: &ReviewBatch| {
            s.write_assign(&mut |t| super::super::merge_review(t, "PROJ", transfer, b, 9))
                .unwrap()
        };
        {
            let s = RedbStore::open(&p).unwrap();
            assert_eq!(Store::review(&s, "PROJ").unwrap(), None);
            merge(&s, "T1", &two);
            merge(&s, "T1", &one("P-333"));
            // A transaction that fails after merging leaves nothing of it.
            let r = s.write_assign(&mut |t| {
                super::super::merge_review(t, "PROJ", "T2", &two, 9)?;
                Err(StoreError::Refused("test".into()))
            });
            assert!(r.is_err());
        }
        let s = RedbStore::open(&p).unwrap();
        let inv = Store::review(&s, "PROJ").unwrap().unwrap();
        assert_eq!((inv.transfers, inv.instances), (1, 2), "{inv:?}");
        let t = &inv.tags[0];
        assert_eq!((t.instances, t.distinct), (2, 3));
        assert_eq!(t.samples, ["P-1", "P-22", "P-333"]);
        merge(&s, "T2", &one("P-1"));
        let inv = Store::review(&s, "PROJ").unwrap().unwrap();
        assert_eq!((inv.transfers, inv.instances), (2, 3));
        assert_eq!((inv.tags[0].instances, inv.tags[0].distinct), (3, 3));
        assert_eq!(Store::review(&s, "OTHER").unwrap(), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        /// The index agrees with a model (a map SOP UID -> (study, series, bytes)) under any
        /// sequence of batches with re-sends.
        #[test]
        fn index_matches_model(ops in proptest::collection::vec(
            proptest::collection::vec((0u8..3, 0u8..3, 0u8..12, 1u64..100), 1..6), 1..8)) {
            let d = tempfile::tempdir().unwrap();
            let s = RedbStore::open(&d.path().join("i.redb")).unwrap();
            let mut model: std::collections::BTreeMap<String, (String, String, u64)> = Default::default();
            let mut n = 0;
            for batch in ops {
                let b: Vec<NewInstance> = batch.iter().map(|(st, se, i, bytes)| {
                    n += 1;
                    let study = format!("1.{st}");
                    let series = format!("1.{st}.{se}");
                    let sop = format!("1.{st}.{se}.{i}");
                    inst(&format!("K{n:05}"), &study, &series, &sop, *bytes)
                }).collect();
                let out = s.commit(&b, &Policy::default(), 0).unwrap();
                for (x, o) in b.iter().zip(out) {
                    let dup = model.contains_key(&x.header.sop_instance_uid);
                    prop_assert_eq!(dup, matches!(o, CommitOutcome::Duplicate{..}));
                    model.entry(x.header.sop_instance_uid.clone()).or_insert((
                        x.header.study_instance_uid.clone(), x.header.series_instance_uid.clone(), x.bytes));
                }
            }
            let t = s.totals().unwrap();
            prop_assert_eq!(t.instances, model.len() as u64);
            prop_assert_eq!(t.bytes, model.values().map(|v| v.2).sum::<u64>());
            let studies = s.studies().unwrap();
            let model_studies: std::collections::BTreeSet<_> = model.values().map(|v| v.0.clone()).collect();
            prop_assert_eq!(studies.len(), model_studies.len());
            for st in studies {
                let cnt = model.values().filter(|v| v.0 == st.study_instance_uid).count() as u64;
                prop_assert_eq!(st.instance_count, cnt);
                let series: std::collections::BTreeSet<_> = model.values()
                    .filter(|v| v.0 == st.study_instance_uid).map(|v| v.1.clone()).collect();
                prop_assert_eq!(st.series_count, series.len() as u64);
                prop_assert_eq!(s.instances_of(&st.key).unwrap().len() as u64, cnt);
            }
        }
    }
}
