//! The plain records of the daemon, at the bottom of its layers: what the index stores
//! (instances, studies, series, rejected instances) and what assignment and the pipeline
//! record in it (assignments, transfers with their deliveries and parked instances, the
//! audit trail, participants, coupling rows). No I/O and no stage logic; every layer above
//! may use them. Records hold patient data (this is the quarantine): their `Debug` prints keys
//! only where they hold values from a data set.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::header::HeaderFields;

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
    /// Set when the study's files were evicted (its instances, series and files are gone;
    /// this record and its assignments and transfers stay). Instances that arrive again
    /// after it are indexed as new ones; the record keeps the last eviction.
    #[serde(default)]
    pub evicted: Option<Eviction>,
}

impl StudyRecord {
    /// Evicted and nothing arrived since: no instance, no file.
    pub fn is_evicted(&self) -> bool {
        self.evicted.is_some() && self.instance_count == 0
    }
}

/// Why data was evicted (housekeeping; see `evict`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EvictReason {
    /// Under disk pressure: every transfer verified at every destination, grace period over.
    Verified,
    /// Under disk pressure: unassigned and past the assign list's visibility window.
    UnassignedHidden,
    /// Under disk pressure: a rejected file past the grace period.
    Rejected,
    /// Retention: unassigned for `unassigned_retention_days`.
    UnassignedRetention,
    /// Retention: rejected for `rejected_retention_days`.
    RejectedRetention,
}

impl EvictReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EvictReason::Verified => "verified",
            EvictReason::UnassignedHidden => "unassigned_hidden",
            EvictReason::Rejected => "rejected",
            EvictReason::UnassignedRetention => "unassigned_retention",
            EvictReason::RejectedRetention => "rejected_retention",
        }
    }

    /// Whether disk pressure is the reason (not retention).
    pub fn is_pressure(self) -> bool {
        matches!(
            self,
            EvictReason::Verified | EvictReason::UnassignedHidden | EvictReason::Rejected
        )
    }
}

impl fmt::Display for EvictReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an eviction removed from a study.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Eviction {
    pub at_ms: i64,
    pub reason: EvictReason,
    pub series: u64,
    pub instances: u64,
    /// Bytes of the originals (outbound copies not counted).
    pub bytes: u64,
    /// Transfers whose outbound copies went with it (start-up recovery removes what a crash
    /// left of them).
    #[serde(default)]
    pub transfers: Vec<String>,
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
    /// Set when its file was evicted (the record stays, so start-up recovery knows to delete
    /// a file a crash left behind rather than index it again).
    #[serde(default)]
    pub evicted_ms: Option<i64>,
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

/// How an assignment came about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    Manual,
    Coupling,
    Routing,
    AutoId,
    Derived,
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Via::Manual => "manual",
            Via::Coupling => "coupling",
            Via::Routing => "routing",
            Via::AutoId => "auto_id",
            Via::Derived => "derived",
        })
    }
}

/// A study's current assignment to one project.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssignmentRecord {
    pub study_key: String,
    pub project: String,
    pub participant: String,
    pub event: String,
    pub via: Via,
    pub actor: String,
    pub assigned_ms: i64,
    /// The StudyInstanceUID the research PACS sees.
    pub research_study_uid: String,
    /// For a derived series: the quarantine study it was derived from.
    #[serde(default)]
    pub derived_from: Option<String>,
    /// Transfers of this assignment, oldest first; the last one is current.
    pub transfers: Vec<String>,
    /// How many times it was corrected.
    #[serde(default)]
    pub corrections: u32,
}

/// Where a transfer is in the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferState {
    Requested,
    Deidentified,
    Sent,
    Verified,
    Failed,
    /// Replaced by a correction before it was sent.
    Cancelled,
    /// De-identification gave no output and parked at least one instance: nothing to send,
    /// a person must look (`fiona parked`). `fiona resend` de-identifies it again.
    Parked,
}

impl TransferState {
    pub fn as_str(self) -> &'static str {
        match self {
            TransferState::Requested => "requested",
            TransferState::Deidentified => "deidentified",
            TransferState::Sent => "sent",
            TransferState::Verified => "verified",
            TransferState::Failed => "failed",
            TransferState::Cancelled => "cancelled",
            TransferState::Parked => "parked",
        }
    }

    /// Every state.
    pub const ALL: [TransferState; 7] = [
        TransferState::Requested,
        TransferState::Deidentified,
        TransferState::Sent,
        TransferState::Verified,
        TransferState::Failed,
        TransferState::Cancelled,
        TransferState::Parked,
    ];

    /// Whether a transfer in this state may move to `next`: the one table of legal
    /// transitions.
    ///
    /// * de-identification: `requested` -> `deidentified`, `parked` (nothing to send) or
    ///   `failed`;
    /// * sending: `deidentified` -> `sent` or `failed`;
    /// * verification: `sent` -> `verified`, `failed`, or back to `deidentified` (instances
    ///   missing at the destination are sent again);
    /// * a correction cancels what is not yet sent: `requested`, `deidentified`, `parked` ->
    ///   `cancelled` (final);
    /// * `fiona resend`: `sent`, `verified`, `failed`, `parked` -> `requested` or
    ///   `deidentified`.
    pub fn may_become(self, next: TransferState) -> bool {
        use TransferState::*;
        matches!(
            (self, next),
            (Requested, Deidentified | Parked | Failed | Cancelled)
                | (Deidentified, Sent | Failed | Cancelled)
                | (Sent, Verified | Failed | Deidentified | Requested)
                | (Verified | Failed | Parked, Requested | Deidentified)
                | (Parked, Cancelled)
        )
    }

    pub fn parse(s: &str) -> Option<TransferState> {
        TransferState::ALL.into_iter().find(|t| {
            t.as_str() == s || (s == "de-identified" && *t == TransferState::Deidentified)
        })
    }
}

/// Why a transfer exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferKind {
    /// The first transfer of an assignment.
    Assignment,
    /// A new transfer after the assignment was corrected.
    Correction,
    /// Series that arrived after the assignment's transfer had started.
    Addition,
}

/// One unit of work for the pipeline: these series of this study, to this project.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferRecord {
    /// ULID: sorts by creation time.
    pub id: String,
    pub study_key: String,
    pub project: String,
    pub participant: String,
    pub event: String,
    pub kind: TransferKind,
    pub via: Via,
    /// Who or what assigned it: `user:NAME`, `coupling:IMPORT`, `rule:NAME`, `auto_id`, ...
    pub actor: String,
    pub created_ms: i64,
    /// Series (quarantine Series Instance UIDs) the transfer covers.
    pub series: Vec<String>,
    /// Instances of those series known when it was last updated.
    pub instances: u64,
    pub state: TransferState,
    pub state_ms: i64,
    /// For `failed` and `cancelled`: why.
    #[serde(default)]
    pub reason: Option<String>,
    pub research_study_uid: String,
    /// The transfer this one replaces (for a correction).
    #[serde(default)]
    pub replaces: Option<String>,
    /// Instances stored at the destination (the forwarding side counts them).
    #[serde(default)]
    pub sent: u64,
    #[serde(default)]
    pub verified_ms: Option<i64>,
    /// Instances the pipeline de-identified into the outbound area.
    #[serde(default)]
    pub deidentified: u64,
    /// Instances the project's settings drop (no output, not an error).
    #[serde(default)]
    pub dropped: u64,
    /// Instances the pipeline could not pass on, with the reasons (shown to the admin).
    #[serde(default)]
    pub parked: Vec<Parked>,
    /// Progress towards each of the project's destinations.
    #[serde(default)]
    pub deliveries: Vec<Delivery>,
    /// De-identification passes that failed (not parked instances: the pass as a whole, e.g.
    /// the outbound area could not be written); at `deid_max_attempts` the transfer fails.
    #[serde(default)]
    pub deid_attempts: u32,
    /// Not before this time (Unix ms) for the next de-identification pass.
    #[serde(default)]
    pub next_deid_ms: i64,
}

/// A state change that [`TransferState::may_become`] does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("transfer cannot go from {} to {}", .from.as_str(), .to.as_str())]
pub struct IllegalTransition {
    pub from: TransferState,
    pub to: TransferState,
}

impl TransferRecord {
    /// Move to `next` at `now_ms`, if the table of legal transitions allows it.
    pub fn move_to(&mut self, next: TransferState, now_ms: i64) -> Result<(), IllegalTransition> {
        if !self.state.may_become(next) {
            return Err(IllegalTransition {
                from: self.state,
                to: next,
            });
        }
        self.state = next;
        self.state_ms = now_ms;
        Ok(())
    }
}

/// An instance the pipeline could not pass on, and why (never a value from the data set).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parked {
    /// Quarantine key of the instance.
    pub instance: String,
    pub reason: String,
}

/// A transfer's progress towards one destination. Sending is idempotent at the destination
/// (by SOP Instance UID), so a retry sends what is not yet confirmed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub destination: String,
    /// Instance keys the destination confirmed (success or warning status).
    pub stored: Vec<String>,
    /// Attempts begun so far: counted (and written) when an attempt begins, so one that a
    /// crash interrupts counts towards `max_attempts`.
    pub attempts: u32,
    /// Not before this time (Unix ms) for the next attempt.
    pub next_attempt_ms: i64,
    /// Every instance confirmed.
    pub done: bool,
    /// Given up after the destination's `max_attempts`.
    pub failed: bool,
    /// What went wrong last (statuses, network errors); never a value from a data set.
    pub reason: Option<String>,
    /// The destination's C-FIND answer matched what was sent (Unix ms).
    #[serde(default)]
    pub verified_ms: Option<i64>,
    /// Times verification found instances missing and sent them again.
    #[serde(default)]
    pub resent_after_verify: u32,
    /// Verification attempts that could not ask the destination (query refused, no answer).
    #[serde(default)]
    pub verify_errors: u32,
    /// Instance keys the destination answered 0x0111 (duplicate SOP instance: it holds one
    /// already, e.g. from an attempt a crash interrupted). Counted in `stored` only for a
    /// destination that is verified by C-FIND, which then confirms them.
    #[serde(default)]
    pub duplicates: Vec<String>,
}

/// One line of the append-only audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Position in the trail, from 1, assigned when appended.
    pub seq: u64,
    pub time_ms: i64,
    pub actor: String,
    /// `assign`, `reassign`, `refused`, `rule_match`, `auto_id`, `derived`, `series_follow`,
    /// `coupling_import`, `coupling_refused`.
    pub action: String,
    #[serde(default)]
    pub study_key: Option<String>,
    #[serde(default)]
    pub project: Option<String>,
    #[serde(default)]
    pub participant: Option<String>,
    #[serde(default)]
    pub event: Option<String>,
    #[serde(default)]
    pub transfer: Option<String>,
    pub detail: String,
}

impl AuditRecord {
    /// A record of an administrative act that names no study, project or transfer (web
    /// accounts, provisioning bundles); `seq` is assigned when it is appended.
    pub fn admin(actor: &str, action: &str, time_ms: i64, detail: String) -> AuditRecord {
        AuditRecord {
            seq: 0,
            time_ms,
            actor: actor.to_string(),
            action: action.to_string(),
            study_key: None,
            project: None,
            participant: None,
            event: None,
            transfer: None,
            detail,
        }
    }
}

/// Where an arrival notification goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// HTTP POST of the JSON body, signed (`X-Fiona-Signature`).
    Webhook { url: String },
    /// E-mail to these addresses through the configured SMTP server.
    Email { to: Vec<String> },
}

impl Channel {
    pub fn kind(&self) -> &'static str {
        match self {
            Channel::Webhook { .. } => "webhook",
            Channel::Email { .. } => "email",
        }
    }
}

/// What a notification says: a transfer verified at every destination. Nothing else (no
/// quarantine key, no clinical value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    pub project: String,
    pub participant: String,
    pub event: String,
    pub instances: u64,
    pub research_study_uid: String,
    /// RFC 3339 UTC.
    pub verified_at: String,
}

/// A notification waiting in the durable outbox: written in the transaction that marks the
/// transfer verified, removed (and audited) once delivered; retried with backoff until then.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxRecord {
    /// ULID: sorts by creation; also the delivery ID receivers may deduplicate by.
    pub id: String,
    pub transfer: String,
    pub channel: Channel,
    pub notice: Notice,
    pub created_ms: i64,
    pub attempts: u32,
    pub next_attempt_ms: i64,
    /// What went wrong last (status, network error); never a value from a data set.
    #[serde(default)]
    pub last_error: Option<String>,
}

/// A participant ID known to a project.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantRecord {
    pub project: String,
    pub participant: String,
    pub first_ms: i64,
    pub actor: String,
    /// Keyed hashes (project secret) of the PatientIDs of the studies assigned to this
    /// participant: one participant ID is one patient unless an admin says otherwise.
    #[serde(default)]
    pub patient_hashes: Vec<String>,
}

/// What a coupling list row is keyed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyKind {
    AccessionNumber,
    StudyInstanceUid,
}

/// A stored coupling list row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CouplingEntry {
    pub kind: KeyKind,
    pub key: String,
    pub project: String,
    pub participant: String,
    pub event: String,
    /// The import that loaded it, and its line in that file.
    pub import_id: String,
    pub line: u64,
}

// ---------------------------------------------------------------------------------------
// Review: what left the box, per project (issue 17).

/// Sample values kept per tag of a review inventory: the first distinct ones seen.
pub const REVIEW_SAMPLES: usize = 5;
/// Value hashes kept per tag: a distinct count is exact up to this many values; past it the
/// tag says `distinct_capped` (at least this many).
pub const REVIEW_DISTINCT_CAP: usize = 1000;
/// Tags (paths) one project's inventory holds; a path past it is left out and the inventory
/// says `tags_capped`.
pub const REVIEW_TAG_CAP: usize = 2000;
/// Private creators one project's inventory holds (past it: `creators_capped`).
pub const REVIEW_CREATOR_CAP: usize = 256;
/// Characters a sample value is cut to (the last one `…` when cut).
pub const REVIEW_VALUE_CHARS: usize = 64;

/// One element of the de-identified outputs, at any depth, in a project's review inventory.
/// Its values are de-identified values that left the box: `Debug` may print them, log lines
/// must not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReviewTag {
    /// The element: `(0010,0010)` at the top level, `(0040,A730)[].(0040,A160)` inside the
    /// items of a sequence (hex upper case).
    pub path: String,
    /// Dictionary keyword; `PrivateCreator` for a private creator, empty for other private
    /// and unknown tags.
    pub keyword: String,
    /// VR as first seen.
    pub vr: String,
    /// Instances the element occurs in (once per instance, at whatever multiplicity).
    pub instances: u64,
    /// Distinct values seen: exact up to [`REVIEW_DISTINCT_CAP`].
    pub distinct: u64,
    /// More distinct values were seen than are counted (`distinct` is a lower bound).
    pub distinct_capped: bool,
    /// The first distinct values seen (at most [`REVIEW_SAMPLES`]), cut to
    /// [`REVIEW_VALUE_CHARS`] characters; bulk and binary values (OB, OW, OF, OD, OL, OV, UN)
    /// as `<N bytes>`, sequences as `<N items>`.
    pub samples: Vec<String>,
}

/// A private creator in the de-identified outputs (an odd group's `(gggg,00xx)` element).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReviewCreator {
    pub creator: String,
    /// The group, four hex digits upper case (`0009`).
    pub group: String,
    pub instances: u64,
}

/// A project's inventory of what left the box: every element of every de-identified output
/// instance, merged in the index transaction that marks each transfer `deidentified`, and
/// kept whatever eviction removes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReviewInventory {
    pub project: String,
    /// Transfers counted (a transfer de-identified again is counted once).
    pub transfers: u64,
    /// De-identified output instances counted.
    pub instances: u64,
    /// When a transfer was last merged (ms since the epoch); 0 for an empty inventory.
    pub updated_ms: i64,
    /// Sorted by path.
    pub tags: Vec<ReviewTag>,
    /// Sorted by group, then creator.
    pub private_creators: Vec<ReviewCreator>,
    /// Some path was left out because the inventory holds [`REVIEW_TAG_CAP`] tags.
    #[serde(default)]
    pub tags_capped: bool,
    /// Some creator was left out because the inventory holds [`REVIEW_CREATOR_CAP`].
    #[serde(default)]
    pub creators_capped: bool,
}

/// One element path as collected from outputs, before it is merged into an inventory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchTag {
    pub keyword: String,
    pub vr: String,
    pub instances: u64,
    /// Hashes of the distinct values (at most [`REVIEW_DISTINCT_CAP`]).
    pub hashes: std::collections::BTreeSet<u64>,
    /// More distinct values were seen than `hashes` holds.
    pub capped: bool,
    pub samples: Vec<String>,
}

/// What the outputs of one instance, or of one transfer, hold, for the review inventory:
/// built by the de-identification stage (`deid::review`), merged into the project's
/// [`ReviewInventory`] by [`ReviewInventory::merge`]. Bounded like the inventory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReviewBatch {
    pub instances: u64,
    /// By path.
    pub tags: std::collections::BTreeMap<String, BatchTag>,
    /// (group, creator) -> instances.
    pub creators: std::collections::BTreeMap<(String, String), u64>,
}

/// `value` cut to [`REVIEW_VALUE_CHARS`] characters, the last one `…` when cut.
pub fn review_sample(value: &str) -> String {
    if value.chars().count() <= REVIEW_VALUE_CHARS {
        return value.to_string();
    }
    let mut s: String = value.chars().take(REVIEW_VALUE_CHARS - 1).collect();
    s.push('…');
    s
}

/// Add `sample` to `samples` unless it is there or they are full.
fn add_sample(samples: &mut Vec<String>, sample: &str) {
    if samples.len() < REVIEW_SAMPLES && !samples.iter().any(|s| s == sample) {
        samples.push(sample.to_string());
    }
}

impl ReviewBatch {
    /// A batch for one instance (`instances` 1): fill it with [`ReviewBatch::element`] and
    /// [`ReviewBatch::creator`].
    pub fn instance() -> ReviewBatch {
        ReviewBatch {
            instances: 1,
            ..ReviewBatch::default()
        }
    }

    /// One occurrence of an element in this instance: its value's hash and its sample (made
    /// only when it may be kept).
    pub fn element(
        &mut self,
        path: String,
        keyword: &str,
        vr: &str,
        hash: u64,
        sample: impl FnOnce() -> String,
    ) {
        let t = self.tags.entry(path).or_insert_with(|| BatchTag {
            keyword: keyword.to_string(),
            vr: vr.to_string(),
            instances: 1,
            ..BatchTag::default()
        });
        if !t.hashes.contains(&hash) {
            if t.hashes.len() < REVIEW_DISTINCT_CAP {
                t.hashes.insert(hash);
            } else {
                t.capped = true;
            }
        }
        if t.samples.len() < REVIEW_SAMPLES {
            add_sample(&mut t.samples, &sample());
        }
    }

    /// A private creator in this instance.
    pub fn creator(&mut self, group: u16, creator: &str) {
        self.creators
            .insert((format!("{group:04X}"), creator.to_string()), 1);
    }

    /// Add the batch of the instances that follow this one's (samples: this one's first).
    pub fn absorb(&mut self, other: ReviewBatch) {
        self.instances += other.instances;
        for (path, o) in other.tags {
            match self.tags.get_mut(&path) {
                None => {
                    self.tags.insert(path, o);
                }
                Some(t) => {
                    t.instances += o.instances;
                    t.capped |= o.capped;
                    for h in o.hashes {
                        if t.hashes.len() >= REVIEW_DISTINCT_CAP {
                            t.capped |= !t.hashes.contains(&h);
                        } else {
                            t.hashes.insert(h);
                        }
                    }
                    for s in &o.samples {
                        add_sample(&mut t.samples, s);
                    }
                }
            }
        }
        for (k, n) in other.creators {
            *self.creators.entry(k).or_default() += n;
        }
    }
}

impl ReviewInventory {
    /// The inventory of a project nothing has left yet.
    pub fn empty(project: &str) -> ReviewInventory {
        ReviewInventory {
            project: project.to_string(),
            transfers: 0,
            instances: 0,
            updated_ms: 0,
            tags: Vec::new(),
            private_creators: Vec::new(),
            tags_capped: false,
            creators_capped: false,
        }
    }

    /// The paths of `batch` whose value hashes [`ReviewInventory::merge`] needs: those it
    /// may still count distinct values of (not capped, and room for a new tag).
    pub fn paths_to_count(&self, batch: &ReviewBatch) -> Vec<String> {
        batch
            .tags
            .keys()
            .filter(|p| match self.tag_at(p) {
                Ok(i) => !self.tags[i].distinct_capped,
                Err(_) => self.tags.len() < REVIEW_TAG_CAP,
            })
            .cloned()
            .collect()
    }

    fn tag_at(&self, path: &str) -> Result<usize, usize> {
        self.tags.binary_search_by(|t| t.path.as_str().cmp(path))
    }

    /// Merge one transfer's `batch`. `count`: whether its instances are counted (false
    /// when this transfer was merged before: `fiona resend` de-identified it again; then
    /// only values and tags never seen in the project are added, a new tag with the batch's
    /// instance count). `values` holds, per path of [`ReviewInventory::paths_to_count`],
    /// the value hashes kept so far (missing: none); the paths whose hashes changed are
    /// returned, for the caller to store.
    pub fn merge(
        &mut self,
        batch: &ReviewBatch,
        count: bool,
        values: &mut std::collections::BTreeMap<String, std::collections::BTreeSet<u64>>,
        now_ms: i64,
    ) -> std::collections::BTreeSet<String> {
        let mut changed = std::collections::BTreeSet::new();
        for (path, b) in &batch.tags {
            let i = match self.tag_at(path) {
                Ok(i) => {
                    if count {
                        self.tags[i].instances += b.instances;
                    }
                    i
                }
                Err(_) if self.tags.len() >= REVIEW_TAG_CAP => {
                    self.tags_capped = true;
                    continue;
                }
                Err(i) => {
                    self.tags.insert(
                        i,
                        ReviewTag {
                            path: path.clone(),
                            keyword: b.keyword.clone(),
                            vr: b.vr.clone(),
                            instances: b.instances,
                            distinct: 0,
                            distinct_capped: false,
                            samples: Vec::new(),
                        },
                    );
                    i
                }
            };
            let t = &mut self.tags[i];
            for s in &b.samples {
                add_sample(&mut t.samples, s);
            }
            if t.distinct_capped {
                continue;
            }
            let kept = values.entry(path.clone()).or_default();
            for h in &b.hashes {
                if kept.contains(h) {
                    continue;
                }
                if kept.len() >= REVIEW_DISTINCT_CAP {
                    t.distinct_capped = true;
                    break;
                }
                kept.insert(*h);
                changed.insert(path.clone());
            }
            t.distinct_capped |= b.capped;
            t.distinct = kept.len() as u64;
        }
        for ((group, creator), n) in &batch.creators {
            let at = self.private_creators.binary_search_by(|c| {
                (c.group.as_str(), c.creator.as_str()).cmp(&(group.as_str(), creator.as_str()))
            });
            match at {
                Ok(i) if count => self.private_creators[i].instances += n,
                Ok(_) => {}
                Err(_) if self.private_creators.len() >= REVIEW_CREATOR_CAP => {
                    self.creators_capped = true;
                }
                Err(i) => self.private_creators.insert(
                    i,
                    ReviewCreator {
                        creator: creator.clone(),
                        group: group.clone(),
                        instances: *n,
                    },
                ),
            }
        }
        if count {
            self.transfers += 1;
            self.instances += batch.instances;
        }
        self.updated_ms = now_ms;
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(values: &[(&str, &[&str])]) -> ReviewBatch {
        let mut b = ReviewBatch::instance();
        for (path, vs) in values {
            for v in *vs {
                let h = v
                    .bytes()
                    .fold(7u64, |h, c| h.wrapping_mul(31).wrapping_add(c as u64));
                b.element(path.to_string(), "Kw", "LO", h, || v.to_string());
            }
        }
        b
    }

    fn merge(inv: &mut ReviewInventory, b: &ReviewBatch, count: bool, values: &mut Values) {
        let mut v = std::collections::BTreeMap::new();
        for p in inv.paths_to_count(b) {
            v.insert(p.clone(), values.get(&p).cloned().unwrap_or_default());
        }
        for p in inv.merge(b, count, &mut v, 5) {
            values.insert(p.clone(), v[&p].clone());
        }
    }

    type Values = std::collections::BTreeMap<String, std::collections::BTreeSet<u64>>;

    /// Instances count once per instance, distinct values across instances, samples are the
    /// first distinct ones in order, creators add up; a transfer merged again adds values
    /// but no instances, and a tag it brings that was never seen.
    #[test]
    fn review_merge_counts_once_and_keeps_the_first_samples() {
        let mut t = batch(&[("(0010,0010)", &["A"]), ("(0008,0060)", &["CT", "CT"])]);
        t.creator(0x0009, "ACME");
        let mut second = batch(&[("(0010,0010)", &["B"]), ("(0008,0060)", &["CT"])]);
        second.creator(0x0009, "ACME");
        t.absorb(second);
        t.absorb(batch(&[("(0010,0010)", &["A"])]));
        assert_eq!(t.instances, 3);
        assert_eq!(t.tags["(0010,0010)"].instances, 3);
        assert_eq!(t.tags["(0008,0060)"].instances, 2, "once per instance");
        assert_eq!(t.tags["(0010,0010)"].samples, ["A", "B"]);
        assert_eq!(t.creators[&("0009".into(), "ACME".into())], 2);

        let mut inv = ReviewInventory::empty("P");
        let mut values = Values::new();
        merge(&mut inv, &t, true, &mut values);
        let tag = |inv: &ReviewInventory, p: &str| {
            inv.tags.iter().find(|t| t.path == p).cloned().unwrap()
        };
        assert_eq!((inv.transfers, inv.instances), (1, 3));
        assert_eq!(
            inv.tags.iter().map(|t| t.path.as_str()).collect::<Vec<_>>(),
            ["(0008,0060)", "(0010,0010)"],
            "sorted by path"
        );
        let pn = tag(&inv, "(0010,0010)");
        assert_eq!(
            (pn.instances, pn.distinct, pn.distinct_capped),
            (3, 2, false)
        );
        assert_eq!(inv.private_creators[0].instances, 2);
        assert_eq!(inv.updated_ms, 5);

        // The same transfer again (re-queued): a new value and a new tag, no new instances.
        let again = batch(&[("(0010,0010)", &["C"]), ("(0020,0011)", &["1"])]);
        merge(&mut inv, &again, false, &mut values);
        assert_eq!((inv.transfers, inv.instances), (1, 3));
        let pn = tag(&inv, "(0010,0010)");
        assert_eq!((pn.instances, pn.distinct), (3, 3));
        assert_eq!(pn.samples, ["A", "B", "C"]);
        assert_eq!(
            tag(&inv, "(0020,0011)").instances,
            1,
            "a tag never seen is added"
        );
        // Another transfer counts.
        merge(
            &mut inv,
            &batch(&[("(0010,0010)", &["A"])]),
            true,
            &mut values,
        );
        assert_eq!((inv.transfers, inv.instances), (2, 4));
        let pn = tag(&inv, "(0010,0010)");
        assert_eq!((pn.instances, pn.distinct), (4, 3), "A is not new");
    }

    /// Samples, distinct values, tags and creators are bounded; past the bound the
    /// inventory says so.
    #[test]
    fn review_is_bounded() {
        let many: Vec<String> = (0..REVIEW_DISTINCT_CAP + 10)
            .map(|i| format!("v{i}"))
            .collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        // Within one batch.
        let b = batch(&[("(0008,0018)", &refs)]);
        let t = &b.tags["(0008,0018)"];
        assert_eq!(t.hashes.len(), REVIEW_DISTINCT_CAP);
        assert!(t.capped);
        assert_eq!(t.samples, ["v0", "v1", "v2", "v3", "v4"]);
        // Across batches: exact up to the cap, then capped and never counted again.
        let mut inv = ReviewInventory::empty("P");
        let mut values = Values::new();
        for chunk in refs.chunks(100) {
            merge(
                &mut inv,
                &batch(&[("(0008,0018)", chunk)]),
                true,
                &mut values,
            );
            let t = &inv.tags[0];
            let seen = (inv.instances as usize * 100).min(REVIEW_DISTINCT_CAP);
            assert_eq!(t.distinct as usize, seen);
            assert_eq!(
                t.distinct_capped,
                inv.instances as usize * 100 > REVIEW_DISTINCT_CAP
            );
        }
        assert!(inv
            .paths_to_count(&batch(&[("(0008,0018)", &["x"])]))
            .is_empty());
        assert_eq!(values["(0008,0018)"].len(), REVIEW_DISTINCT_CAP);
        assert_eq!(inv.tags[0].samples.len(), REVIEW_SAMPLES);
        // Tags and creators per project.
        let mut b = ReviewBatch::instance();
        for i in 0..REVIEW_TAG_CAP + 1 {
            b.element(format!("(0009,{i:04X})"), "", "LO", 1, || "x".into());
        }
        for i in 0..REVIEW_CREATOR_CAP + 1 {
            b.creator(0x0009, &format!("C{i}"));
        }
        let mut inv = ReviewInventory::empty("P");
        merge(&mut inv, &b, true, &mut Values::new());
        assert_eq!(inv.tags.len(), REVIEW_TAG_CAP);
        assert!(inv.tags_capped);
        assert_eq!(inv.private_creators.len(), REVIEW_CREATOR_CAP);
        assert!(inv.creators_capped);
        // Values are cut to their bound, in characters.
        let cut = review_sample(&"é".repeat(100));
        assert_eq!(cut.chars().count(), REVIEW_VALUE_CHARS);
        assert!(cut.ends_with('…'));
        assert_eq!(review_sample("short"), "short");
    }

    /// Every pair of states, against the table written out by hand.
    #[test]
    fn every_transition_is_checked() {
        use TransferState::*;
        let legal = [
            (Requested, Deidentified),
            (Requested, Parked),
            (Requested, Failed),
            (Requested, Cancelled),
            (Deidentified, Sent),
            (Deidentified, Failed),
            (Deidentified, Cancelled),
            (Sent, Verified),
            (Sent, Failed),
            (Sent, Deidentified),
            (Sent, Requested),
            (Verified, Requested),
            (Verified, Deidentified),
            (Failed, Requested),
            (Failed, Deidentified),
            (Parked, Requested),
            (Parked, Deidentified),
            (Parked, Cancelled),
        ];
        let mut n = 0;
        for from in TransferState::ALL {
            for to in TransferState::ALL {
                let expected = legal.contains(&(from, to));
                assert_eq!(
                    from.may_become(to),
                    expected,
                    "{} -> {}",
                    from.as_str(),
                    to.as_str()
                );
                n += 1;
            }
        }
        assert_eq!(n, 49);
        // Cancelled is final; nothing returns to itself.
        assert!(TransferState::ALL.iter().all(|s| !Cancelled.may_become(*s)));
        assert!(TransferState::ALL.iter().all(|s| !s.may_become(*s)));
    }
}

// ---- web accounts and roles (issue 17) ----

/// A user's role in one project (`[web]`): each includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Status and the project's transfers.
    Viewer,
    /// Also assigns studies to the project and uploads its coupling lists.
    Assigner,
    /// Also Review, resend and the project's audit trail.
    Manager,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "assigner" => Some(Role::Assigner),
            "manager" => Some(Role::Manager),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Assigner => "assigner",
            Role::Manager => "manager",
        }
    }
}

/// A grant parsed from `[web.ldap.groups]`: `admin` or a role in one project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    Admin,
    Project(String, Role),
}

impl Grant {
    pub fn parse(s: &str) -> Result<Grant, String> {
        if s == "admin" {
            return Ok(Grant::Admin);
        }
        let (p, r) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("`{s}` is neither `admin` nor `PROJECT:ROLE`"))?;
        let role = Role::parse(r)
            .ok_or_else(|| format!("`{r}` in `{s}` is not a role (viewer, assigner, manager)"))?;
        Ok(Grant::Project(p.to_string(), role))
    }
}

/// What a web user may do: `admin` everywhere, else a role per project. Local accounts
/// carry theirs; an LDAP user's come from the groups (`[web.ldap.groups]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct Grants {
    #[serde(default)]
    pub admin: bool,
    #[serde(default)]
    pub roles: BTreeMap<String, Role>,
}

impl Grants {
    /// Add a grant; a project keeps the highest role granted.
    pub fn add(&mut self, g: &Grant) {
        match g {
            Grant::Admin => self.admin = true,
            Grant::Project(p, r) => {
                let e = self.roles.entry(p.clone()).or_insert(*r);
                *e = (*e).max(*r);
            }
        }
    }
    /// Does the user have at least `role` in `project` (admins have every role)?
    pub fn has(&self, project: &str, role: Role) -> bool {
        self.admin || self.roles.get(project).is_some_and(|r| *r >= role)
    }
    /// `admin PROJ1:assigner PROJ2:viewer`, or `no role`.
    pub fn describe(&self) -> String {
        let mut v: Vec<String> = Vec::new();
        if self.admin {
            v.push("admin".into());
        }
        v.extend(
            self.roles
                .iter()
                .map(|(p, r)| format!("{p}:{}", r.as_str())),
        );
        if v.is_empty() {
            "no role".into()
        } else {
            v.join(" ")
        }
    }
    /// No grant at all: such a user may not log in.
    pub fn is_empty(&self) -> bool {
        !self.admin && self.roles.is_empty()
    }
}

/// A local web account (`fiona user add`), kept in the index. Its `Debug` never prints the
/// password hash.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountRecord {
    pub name: String,
    /// Argon2id, PHC string format.
    pub password_hash: String,
    pub grants: Grants,
    #[serde(default)]
    pub disabled: bool,
    pub created_ms: i64,
    pub changed_ms: i64,
}

impl std::fmt::Debug for AccountRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountRecord")
            .field("name", &self.name)
            .field("grants", &self.grants)
            .field("disabled", &self.disabled)
            .finish_non_exhaustive()
    }
}
