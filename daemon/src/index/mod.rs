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

use crate::assign::{
    AssignmentRecord, AuditRecord, CouplingEntry, ParticipantRecord, Policy, Tables, TransferRecord,
};
use crate::header::HeaderFields;

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
    /// The index failed on I/O earlier and could not be reopened yet.
    #[error("index unavailable since an I/O error ({cause:?}); reopening failed: {why}")]
    Unavailable { cause: IoFailure, why: String },
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
            StoreError::Corrupt(..) => None,
        }
    }

    /// Whether this error means the disk (or quota) is full.
    pub fn is_disk_full(&self) -> bool {
        self.io_failure() == Some(IoFailure::DiskFull)
    }
}

/// Classify an I/O error from the engine.
pub fn classify_io(e: &std::io::Error) -> IoFailure {
    let full = [nix::libc::ENOSPC, nix::libc::EDQUOT];
    if matches!(e.raw_os_error(), Some(code) if full.contains(&code)) {
        IoFailure::DiskFull
    } else {
        IoFailure::Other
    }
}

/// Where an instance came from on the network.
#[derive(Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Origin {
    pub calling_ae: String,
    pub called_ae: String,
    pub peer: String,
}

impl fmt::Debug for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Origin")
            .field("calling_ae", &self.calling_ae)
            .field("called_ae", &self.called_ae)
            .finish_non_exhaustive()
    }
}

/// An instance made durable on disk, to be indexed.
#[derive(Clone)]
pub struct NewInstance {
    pub key: String,
    /// File path relative to the data directory.
    pub file: String,
    pub bytes: u64,
    pub transfer_syntax: String,
    pub received_ms: i64,
    pub origin: Origin,
    pub header: HeaderFields,
}

impl fmt::Debug for NewInstance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewInstance")
            .field("key", &self.key)
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

/// What the index did with a new instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitOutcome {
    /// Indexed under its key, in the study with this key.
    Stored { study_key: String },
    /// Its SOP Instance UID was already stored under `existing`; this copy is not indexed.
    Duplicate { existing: String },
}

#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InstanceRecord {
    pub key: String,
    pub study_key: String,
    pub file: String,
    pub bytes: u64,
    pub transfer_syntax: String,
    pub received_ms: i64,
    pub origin: Origin,
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub study_instance_uid: String,
    pub series_instance_uid: String,
}

impl fmt::Debug for InstanceRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InstanceRecord")
            .field("key", &self.key)
            .field("study_key", &self.study_key)
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StudyRecord {
    pub key: String,
    pub study_instance_uid: String,
    pub accession_number: String,
    pub study_date: String,
    pub study_time: String,
    pub study_description: String,
    pub modalities: Vec<String>,
    pub patient_id: String,
    pub patient_name: String,
    pub origin: Origin,
    pub first_received_ms: i64,
    pub last_received_ms: i64,
    pub series_count: u64,
    pub instance_count: u64,
    pub bytes: u64,
}

impl fmt::Debug for StudyRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StudyRecord")
            .field("key", &self.key)
            .field("instance_count", &self.instance_count)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SeriesRecord {
    pub study_key: String,
    pub series_instance_uid: String,
    pub series_number: Option<i64>,
    pub modality: String,
    pub series_description: String,
    pub first_received_ms: i64,
    pub last_received_ms: i64,
    pub instance_count: u64,
    pub bytes: u64,
}

impl fmt::Debug for SeriesRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SeriesRecord")
            .field("study_key", &self.study_key)
            .field("instance_count", &self.instance_count)
            .finish_non_exhaustive()
    }
}

/// A refused instance kept in the rejected area.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RejectRecord {
    pub key: String,
    pub file: String,
    pub bytes: u64,
    pub received_ms: i64,
    /// DIMSE status sent to the peer (0 when unknown, e.g. recovered after a crash).
    pub status: u16,
    /// Why it was refused: structural, never a value from the data set.
    pub reason: String,
    pub origin: Origin,
}

/// Counts over the whole index.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Totals {
    pub studies: u64,
    pub series: u64,
    pub instances: u64,
    pub bytes: u64,
    pub rejected: u64,
    pub rejected_bytes: u64,
}

/// The index operations fiona needs. One implementation per storage engine.
pub trait Store: Send + Sync + 'static {
    /// Index a batch of durable instances in one atomic, durable commit, together with the
    /// assignments their arrival triggers ([`crate::assign::on_arrival`]).
    fn commit(
        &self,
        batch: &[NewInstance],
        policy: &Policy,
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
    fn rejections(&self) -> Result<Vec<RejectRecord>, StoreError>;
    fn studies(&self) -> Result<Vec<StudyRecord>, StoreError>;
    fn study(&self, key: &str) -> Result<Option<StudyRecord>, StoreError>;
    fn series_of(&self, study_key: &str) -> Result<Vec<SeriesRecord>, StoreError>;
    fn instances_of(&self, study_key: &str) -> Result<Vec<InstanceRecord>, StoreError>;
    fn totals(&self) -> Result<Totals, StoreError>;
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
