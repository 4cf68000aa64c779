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

#[cfg(test)]
mod tests {
    use super::*;

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
