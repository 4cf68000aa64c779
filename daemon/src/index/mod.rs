//! The quarantine index: what is stored, grouped into studies and series.
//!
//! The storage engine is used only in [`redb_store`], behind the [`Store`] trait, so it can be
//! replaced. Records are JSON values (`serde`), so adding a field with a default is a
//! compatible change.
//!
//! # Invariants
//!
//! * One instance per SOP Instance UID: a re-sent instance is reported as
//!   [`CommitOutcome::Duplicate`] and counted once.
//! * Study and series counts and bytes are updated in the same transaction as the instance.
//! * Records hold patient data (this is the quarantine): their `Debug` prints keys only.

pub mod recovering;
pub mod redb_store;

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::model::{
    AccountRecord, AssignmentRecord, AuditRecord, CouplingEntry, KeyKind, OutboxRecord,
    ParticipantRecord, ReviewBatch, ReviewInventory, TransferRecord, TransferState,
};

/// Errors from the index. The message names the operation, never a record's values.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("index storage error during {op}: {source}")]
    Engine {
        op: &'static str,
        /// Set when the engine failed on file I/O (its file may need reopening).
        io: Option<IoFailure>,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("index record {0} is corrupt: {1}")]
    Corrupt(String, String),
    /// A write refused by a rule of the records (e.g. an illegal transfer state change);
    /// the transaction is rolled back.
    #[error("index write refused: {0}")]
    Refused(String),
    /// The index failed on I/O earlier and could not be reopened yet.
    #[error("index unavailable since an I/O error ({cause:?}); reopening failed: {why}")]
    Unavailable { cause: IoFailure, why: String },
}

impl From<crate::model::IllegalTransition> for StoreError {
    fn from(e: crate::model::IllegalTransition) -> StoreError {
        StoreError::Refused(e.to_string())
    }
}

/// The kind of an I/O failure under the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IoFailure {
    /// No space (ENOSPC) or quota (EDQUOT): the peer may retry later (0xA700).
    DiskFull,
    /// Any other I/O error (0x0110).
    Other,
}

impl StoreError {
    /// The I/O failure behind this error, if it is one.
    pub fn io_failure(&self) -> Option<IoFailure> {
        match self {
            StoreError::Engine { io, .. } => *io,
            StoreError::Unavailable { cause, .. } => Some(*cause),
            StoreError::Corrupt(..) | StoreError::Refused(_) => None,
        }
    }

    /// Whether this error means the disk (or quota) is full.
    pub fn is_disk_full(&self) -> bool {
        self.io_failure() == Some(IoFailure::DiskFull)
    }
}

/// Classify an I/O error from the engine.
pub fn classify_io(e: &std::io::Error) -> IoFailure {
    if crate::quarantine::is_disk_full(e) {
        IoFailure::DiskFull
    } else {
        IoFailure::Other
    }
}

pub use crate::model::{
    CommitOutcome, InstanceRecord, NewInstance, Origin, RejectRecord, SeriesRecord, StudyRecord,
    Totals,
};

/// The tables a stage reads and writes inside one index write transaction (assignment:
/// `assign` implements its logic on it; the engine implements it on its transaction).
pub trait Tables {
    fn study(&self, key: &str) -> Result<Option<StudyRecord>, StoreError>;
    fn all_studies(&self) -> Result<Vec<StudyRecord>, StoreError>;
    fn study_key_by_uid(&self, uid: &str) -> Result<Option<String>, StoreError>;
    fn series_of(&self, study_key: &str) -> Result<Vec<SeriesRecord>, StoreError>;
    /// Instance keys of a study.
    fn instance_keys_of(&self, study_key: &str) -> Result<Vec<String>, StoreError>;
    /// Record that a transfer covers these instances.
    fn add_transfer_instances(&mut self, transfer: &str, keys: &[String])
        -> Result<(), StoreError>;
    /// Every current assignment (for corrections that must reach derived studies).
    fn all_assignments(&self) -> Result<Vec<AssignmentRecord>, StoreError>;
    fn assignments_of(&self, study_key: &str) -> Result<Vec<AssignmentRecord>, StoreError>;
    fn put_assignment(&mut self, a: &AssignmentRecord) -> Result<(), StoreError>;
    fn transfer(&self, id: &str) -> Result<Option<TransferRecord>, StoreError>;
    fn put_transfer(&mut self, t: &TransferRecord) -> Result<(), StoreError>;
    fn participant(&self, project: &str, id: &str)
        -> Result<Option<ParticipantRecord>, StoreError>;
    fn put_participant(&mut self, p: &ParticipantRecord) -> Result<(), StoreError>;
    /// Coupling rows for a key, for every project.
    fn coupling(&self, kind: KeyKind, key: &str) -> Result<Vec<CouplingEntry>, StoreError>;
    fn put_coupling(&mut self, e: &CouplingEntry) -> Result<(), StoreError>;
    /// The participant an auto-ID project gave the patient whose keyed hash is `hash`.
    fn auto_id(&self, project: &str, hash: &str) -> Result<Option<String>, StoreError>;
    fn put_auto_id(&mut self, project: &str, hash: &str, id: &str) -> Result<(), StoreError>;
    /// The (quarantine study key, project) a research StudyInstanceUID was issued for.
    fn issued_study(&self, uid: &str) -> Result<Option<(String, String)>, StoreError>;
    fn put_issued_study(
        &mut self,
        uid: &str,
        study_key: &str,
        project: &str,
    ) -> Result<(), StoreError>;
    /// Append to the audit trail; returns the record's sequence number.
    fn append_audit(&mut self, a: AuditRecord) -> Result<u64, StoreError>;
    /// Replace a study record (eviction marks it; counts are the index's own otherwise).
    fn put_study(&mut self, s: &StudyRecord) -> Result<(), StoreError>;
    /// Remove a study's instance records, their SOP Instance UID entries (so the instances
    /// may be received again) and its series records; returns the instances removed, whose
    /// files the caller deletes after the commit (eviction).
    fn remove_instances_of(&mut self, study_key: &str) -> Result<Vec<InstanceRecord>, StoreError>;
    /// Forget which instances a transfer covers (they were evicted).
    fn remove_transfer_instances(&mut self, transfer: &str) -> Result<(), StoreError>;
    fn rejection(&self, key: &str) -> Result<Option<RejectRecord>, StoreError>;
    fn put_rejection(&mut self, r: &RejectRecord) -> Result<(), StoreError>;
    /// Add or update a notification in the outbox.
    fn put_outbox(&mut self, r: &OutboxRecord) -> Result<(), StoreError>;
    /// Remove a delivered notification; returns whether it was there.
    fn remove_outbox(&mut self, id: &str) -> Result<bool, StoreError>;
    fn outbox_entry(&self, id: &str) -> Result<Option<OutboxRecord>, StoreError>;
    /// A local web account by name.
    fn account(&self, name: &str) -> Result<Option<AccountRecord>, StoreError>;
    /// Add or replace a local web account.
    fn put_account(&mut self, a: &AccountRecord) -> Result<(), StoreError>;
    /// A project's review inventory (issue 17), if anything of it was merged yet.
    fn review(&self, project: &str) -> Result<Option<ReviewInventory>, StoreError>;
    fn put_review(&mut self, r: &ReviewInventory) -> Result<(), StoreError>;
    /// The value hashes kept for one path of a project's inventory (its distinct count).
    fn review_values(&self, project: &str, path: &str) -> Result<Vec<u64>, StoreError>;
    fn put_review_values(
        &mut self,
        project: &str,
        path: &str,
        hashes: &[u64],
    ) -> Result<(), StoreError>;
    /// Whether a transfer's instances are counted in its project's inventory already.
    fn review_counted(&self, transfer: &str) -> Result<bool, StoreError>;
    fn put_review_counted(&mut self, transfer: &str, project: &str) -> Result<(), StoreError>;
}

/// Merge one transfer's review `batch` into its project's inventory, inside the caller's
/// transaction (the one that marks the transfer `deidentified`). A transfer merged before
/// (`fiona resend` de-identified it again) adds its values but not its instances again.
/// Nothing ever removes an inventory: eviction leaves it, so it outlives the data.
pub fn merge_review(
    t: &mut dyn Tables,
    project: &str,
    transfer: &str,
    batch: &ReviewBatch,
    now_ms: i64,
) -> Result<(), StoreError> {
    let mut inv = t
        .review(project)?
        .unwrap_or_else(|| ReviewInventory::empty(project));
    let count = !t.review_counted(transfer)?;
    let mut values = std::collections::BTreeMap::new();
    for path in inv.paths_to_count(batch) {
        let kept = t.review_values(project, &path)?;
        values.insert(path, kept.into_iter().collect());
    }
    let changed = inv.merge(batch, count, &mut values, now_ms);
    for path in changed {
        let hashes: Vec<u64> = values
            .get(&path)
            .map(|h| h.iter().copied().collect())
            .unwrap_or_default();
        t.put_review_values(project, &path, &hashes)?;
    }
    t.put_review(&inv)?;
    if count {
        t.put_review_counted(transfer, project)?;
    }
    Ok(())
}

/// What a new instance's arrival means for its study, from the index.
#[derive(Debug, Clone)]
pub struct Arrival<'a> {
    pub study: &'a StudyRecord,
    pub study_new: bool,
    pub series_new: bool,
}

/// What must happen inside the transaction that indexes a new instance (assignment on
/// arrival). The index defines the hook; `assign` implements it, so the storage engine never
/// names a stage.
pub trait OnArrival: Send + Sync {
    fn on_arrival(
        &self,
        t: &mut dyn Tables,
        n: &NewInstance,
        a: &Arrival<'_>,
        now_ms: i64,
    ) -> Result<(), StoreError>;
}

/// Transfers by (project, state), and the instances parked on them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransferCounts {
    pub by_state: std::collections::BTreeMap<(String, TransferState), u64>,
    pub parked_instances: u64,
}

impl TransferCounts {
    /// Transfers in `state`, all projects.
    pub fn in_state(&self, state: TransferState) -> u64 {
        self.by_state
            .iter()
            .filter(|((_, s), _)| *s == state)
            .map(|(_, n)| n)
            .sum()
    }
}

/// Which of a project's transfers a listing wants: one state, and a window of creation
/// times. Empty: all of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransferFilter {
    pub state: Option<TransferState>,
    /// Created at or after this (Unix ms).
    pub created_from_ms: Option<i64>,
    /// Created before this (Unix ms).
    pub created_before_ms: Option<i64>,
}

impl TransferFilter {
    pub fn matches(&self, t: &TransferRecord) -> bool {
        self.state.is_none_or(|s| t.state == s)
            && self.created_from_ms.is_none_or(|f| t.created_ms >= f)
            && self.created_before_ms.is_none_or(|b| t.created_ms < b)
    }
}

/// The order of a project's transfer listings: newest first (by creation, then by ID).
pub fn newest_first(a: &TransferRecord, b: &TransferRecord) -> std::cmp::Ordering {
    (b.created_ms, &b.id).cmp(&(a.created_ms, &a.id))
}

/// An [`OnArrival`] that does nothing: indexing without assignment (tests, tools that build
/// an index and assign afterwards).
pub struct NoArrival;

impl OnArrival for NoArrival {
    fn on_arrival(
        &self,
        _: &mut dyn Tables,
        _: &NewInstance,
        _: &Arrival<'_>,
        _: i64,
    ) -> Result<(), StoreError> {
        Ok(())
    }
}

/// The index operations fiona needs. One implementation per storage engine.
pub trait Store: Send + Sync + 'static {
    /// Index a batch of durable instances in one atomic, durable commit, together with what
    /// `hook` does on their arrival (assignment, in the daemon).
    fn commit(
        &self,
        batch: &[NewInstance],
        hook: &dyn OnArrival,
        now_ms: i64,
    ) -> Result<Vec<CommitOutcome>, StoreError>;
    /// Run `f` on the assignment tables in one write transaction, committed (durably) when
    /// `f` returns `Ok`, rolled back otherwise.
    fn write_assign(
        &self,
        f: &mut dyn FnMut(&mut dyn Tables) -> Result<(), StoreError>,
    ) -> Result<(), StoreError>;
    /// Current assignments, of one study or of all.
    fn assignments(&self, study_key: Option<&str>) -> Result<Vec<AssignmentRecord>, StoreError>;
    fn transfers(&self) -> Result<Vec<TransferRecord>, StoreError>;
    fn transfer(&self, id: &str) -> Result<Option<TransferRecord>, StoreError>;
    /// Keys of the instances a transfer covers.
    fn transfer_instances(&self, id: &str) -> Result<Vec<String>, StoreError>;
    /// The whole audit trail, oldest first.
    fn audit_trail(&self) -> Result<Vec<AuditRecord>, StoreError>;
    fn couplings(&self) -> Result<Vec<CouplingEntry>, StoreError>;
    fn participants(&self) -> Result<Vec<ParticipantRecord>, StoreError>;
    /// Whether a SOP Instance UID is already stored (fast path for re-sends).
    fn has_sop_instance(&self, sop_instance_uid: &str) -> Result<bool, StoreError>;
    /// Every indexed object key (for start-up recovery).
    fn instance_keys(&self) -> Result<std::collections::HashSet<String>, StoreError>;
    /// Record a rejected instance durably.
    fn record_rejection(&self, r: &RejectRecord) -> Result<(), StoreError>;
    fn has_rejection(&self, key: &str) -> Result<bool, StoreError>;
    fn rejection(&self, key: &str) -> Result<Option<RejectRecord>, StoreError>;
    fn rejections(&self) -> Result<Vec<RejectRecord>, StoreError>;
    /// Notifications not yet delivered, oldest first.
    fn outbox(&self) -> Result<Vec<OutboxRecord>, StoreError>;
    /// Local web accounts, by name.
    fn accounts(&self) -> Result<Vec<AccountRecord>, StoreError>;
    /// One local web account.
    fn account_named(&self, name: &str) -> Result<Option<AccountRecord>, StoreError> {
        Ok(self.accounts()?.into_iter().find(|a| a.name == name))
    }
    /// A project's review inventory: what left the box (issue 17); `None` when nothing of
    /// the project was de-identified yet.
    fn review(&self, project: &str) -> Result<Option<ReviewInventory>, StoreError>;
    fn studies(&self) -> Result<Vec<StudyRecord>, StoreError>;
    fn study(&self, key: &str) -> Result<Option<StudyRecord>, StoreError>;
    fn series_of(&self, study_key: &str) -> Result<Vec<SeriesRecord>, StoreError>;
    fn instances_of(&self, study_key: &str) -> Result<Vec<InstanceRecord>, StoreError>;
    /// Counts over the whole index (the engine keeps them; no scan).
    fn totals(&self) -> Result<Totals, StoreError>;
    /// Transfers by project and state and the parked instances on them. The default scans
    /// every transfer; an engine may keep them as counters.
    fn transfer_counts(&self) -> Result<TransferCounts, StoreError> {
        let mut out = TransferCounts::default();
        for t in self.transfers()? {
            *out.by_state
                .entry((t.project.clone(), t.state))
                .or_default() += 1;
            out.parked_instances += t.parked.len() as u64;
        }
        Ok(out)
    }
    /// When the latest instance arrived (Unix ms), if any study is known. The default scans
    /// every study; an engine may keep them in order of arrival.
    fn last_arrival_ms(&self) -> Result<Option<i64>, StoreError> {
        Ok(self.studies()?.iter().map(|s| s.last_received_ms).max())
    }
    /// Studies whose last instance arrived at or after `since_ms`. The default scans every
    /// study; an engine may keep them in order of arrival.
    fn studies_received_since(&self, since_ms: i64) -> Result<u64, StoreError> {
        Ok(self
            .studies()?
            .iter()
            .filter(|s| s.last_received_ms >= since_ms)
            .count() as u64)
    }
    /// The assign list: studies without an assignment, never evicted, whose first instance
    /// arrived at or after `since_ms`, the latest arrival first: how many there are, and
    /// those after the first `skip`, at most `limit` (all without one). The default scans
    /// every study and assignment; an engine may keep the list in order of arrival.
    fn unassigned_studies(
        &self,
        since_ms: i64,
        skip: usize,
        limit: Option<usize>,
    ) -> Result<(u64, Vec<StudyRecord>), StoreError> {
        let assigned: std::collections::HashSet<String> = self
            .assignments(None)?
            .into_iter()
            .map(|a| a.study_key)
            .collect();
        let mut v: Vec<StudyRecord> = self
            .studies()?
            .into_iter()
            .filter(|s| {
                s.first_received_ms >= since_ms && s.evicted.is_none() && !assigned.contains(&s.key)
            })
            .collect();
        v.sort_by(|a, b| (b.last_received_ms, &b.key).cmp(&(a.last_received_ms, &a.key)));
        let n = v.len() as u64;
        Ok((
            n,
            v.into_iter()
                .skip(skip)
                .take(limit.unwrap_or(usize::MAX))
                .collect(),
        ))
    }
    /// The transfers in one of `states`, by ID (oldest first): what the pipeline's passes
    /// work on. The default scans every transfer; an engine may keep them by state, so a
    /// pass costs what is in flight, not every transfer ever made.
    fn transfers_in(&self, states: &[TransferState]) -> Result<Vec<TransferRecord>, StoreError> {
        Ok(self
            .transfers()?
            .into_iter()
            .filter(|t| states.contains(&t.state))
            .collect())
    }
    /// How many of `project`'s transfers `filter` selects, by state. The default scans every
    /// transfer; an engine may keep counts and an index by project and creation time.
    fn project_transfer_counts(
        &self,
        project: &str,
        filter: &TransferFilter,
    ) -> Result<std::collections::BTreeMap<TransferState, u64>, StoreError> {
        let mut out = std::collections::BTreeMap::new();
        for t in self.transfers()? {
            if t.project == project && filter.matches(&t) {
                *out.entry(t.state).or_default() += 1;
            }
        }
        Ok(out)
    }
    /// `project`'s transfers that `filter` selects, newest first ([`newest_first`]), without
    /// the first `skip`, at most `limit` (all without one): a page of a listing reads only its
    /// rows. The default scans every transfer.
    fn project_transfers(
        &self,
        project: &str,
        filter: &TransferFilter,
        skip: usize,
        limit: Option<usize>,
    ) -> Result<Vec<TransferRecord>, StoreError> {
        let mut v: Vec<TransferRecord> = self
            .transfers()?
            .into_iter()
            .filter(|t| t.project == project && filter.matches(t))
            .collect();
        v.sort_by(newest_first);
        Ok(v.into_iter()
            .skip(skip)
            .take(limit.unwrap_or(usize::MAX))
            .collect())
    }
    /// Whether the index works, for status and health checks. An engine without its own
    /// failure tracking is always healthy; [`recovering::Recovering`] tracks failures.
    fn health(&self) -> IndexHealth {
        IndexHealth::default()
    }
}

/// The index's state for `fiona status` and the health check.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct IndexHealth {
    /// False while the index cannot be opened after an I/O error (every operation fails).
    pub usable: bool,
    /// `None` while index writes work; otherwise the kind of I/O failure of the last write
    /// that failed (cleared by the next write that succeeds).
    pub failing: Option<IoFailure>,
    /// Since when it has failed (ms since the epoch).
    pub failing_since_ms: Option<i64>,
    /// Index operations that failed on I/O since start.
    pub io_errors: u64,
    /// Times the index was reopened after an I/O error since start.
    pub reopened: u64,
    /// The last I/O error: the operation and the OS error, never a record's value.
    pub last_error: Option<String>,
}

impl Default for IndexHealth {
    fn default() -> IndexHealth {
        IndexHealth {
            usable: true,
            failing: None,
            failing_since_ms: None,
            io_errors: 0,
            reopened: 0,
            last_error: None,
        }
    }
}
