//! The control API's wire contract, one definition for both ends: the server
//! (`control/mod.rs`, axum) serialises these types and the client (`control/client.rs`,
//! hyper) deserialises them, so the two cannot drift apart. Types only the API uses are
//! defined here; records a stage produces (transfers, audit, jobs, verification rows) are
//! re-exported from where they live.
//!
//! HTTP/1.1 over the Unix socket [`socket_path`]; JSON bodies; a refusal answers with a
//! non-2xx status and an [`ErrorBody`].
//!
//! | route                 | answer                                   |
//! |-----------------------|------------------------------------------|
//! | `GET /v1/status`      | [`StatusView`]                           |
//! | `GET /v1/health`      | [`HealthView`] (503 when unhealthy)      |
//! | `GET /v1/studies?all=BOOL` | `[StudyView]` ([`StudiesQuery`])    |
//! | `GET /v1/studies/KEY` | [`StudyDetail`] (404 if unknown)         |
//! | `GET /v1/studies/KEY/instances` | `[InstanceRecord]` (404 if unknown) |
//! | `GET /v1/rejected`    | `[RejectRecord]`                         |
//! | `POST /v1/assign`     | [`AssignBody`] -> [`AssignOutcome`] (422 with the reason if refused) |
//! | `POST /v1/coupling?replace=BOOL` | CSV body -> [`ImportReport`] (422 if any line is bad) |
//! | `GET /v1/coupling`    | `[CouplingEntry]`                        |
//! | `GET /v1/transfers?project=&state=&since=&until=&study=` | `[TransferRecord]` ([`TransferQuery`]), oldest first |
//! | `POST /v1/resend`     | [`ResendBody`] -> 202 [`JobView`]; its result: [`ResendOutcome`] (the transfers re-queued) |
//! | `POST /v1/verify`     | [`VerifyBody`] -> 202 [`JobView`]; its result: `[VerifyRow]` (C-FIND at each destination; changes nothing) |
//! | `GET /v1/jobs`        | `[JobView]` (without results), oldest first |
//! | `GET /v1/jobs/ID?wait_ms=` | [`JobView`]; waits up to `wait_ms` (at most 5 s) for a running job to finish (404 if unknown) |
//! | `GET /v1/audit`       | `[AuditRecord]`, oldest first            |
//! | `GET /v1/review?project=P` | [`ReviewInventory`] ([`ReviewQuery`]): what left the box for the project (every element of its de-identified outputs, counts, samples, private creators); empty for a configured project nothing has left yet, 404 for an unknown one |
//! | `GET /v1/projects`    | `[ProjectView]`                          |
//! | `GET /v1/evict`       | [`EvictPlan`]: what a pass would evict now and why (`fiona evict --dry-run`) |
//! | `POST /v1/evict`      | [`DiskReport`] after a housekeeping pass run now (`fiona evict`) |
//! | `GET /v1/users`       | `[UserView]`: web accounts, local (`fiona user add`) and from the configuration (`[[web.accounts]]`); never a hash |
//! | `POST /v1/users`      | [`UserAddBody`] -> [`UserOutcome`] (400 bad name, 409 exists or in the configuration, 422 bad password or unknown project) |
//! | `POST /v1/users/NAME` | [`UserChange`] -> [`UserOutcome`] (404 unknown, 409 an account of the configuration, 422 bad password or unknown project) |
//! | `POST /v1/bundle`     | a provisioning bundle (the tar's bytes) -> [`Accepted`] (the daemon then restarts on it and runs the selftest), 422 with the refusal (`refused (CODE): reason`) |
//! | `GET /v1/bundle`      | [`BundleStatus`]: the box's ID and key, the current bundle, the highest serial, a trial, the last attempt |
//! | `POST /v1/selftest`   | [`SelftestReport`] (every check; also kept for `GET /v1/status`) |
//! | `GET /metrics`        | Prometheus text format 0.0.4 (`metrics.rs`); also on `[metrics] listen` |
//!
//! Passwords travel only in the bodies of `POST /v1/users` and `POST /v1/users/NAME` (over the
//! owner-only socket); the daemon checks them (`password::check_new_password`), keeps only
//! their Argon2id hash and never logs or answers either.
//!
//! `GET /v1/studies` lists the studies an admin can still assign: unassigned studies older
//! than `unassigned_visible_days` are left out unless `?all=true` (then they are marked
//! `hidden`). Every study carries its current assignments.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::index::{IndexHealth, Totals};
use crate::model::Grants;

pub use crate::bundle::ConfigSource;
pub use crate::health::{CheckResult, SelftestCheck, SelftestReport, Verdict};
pub use crate::provision::{Accepted, BundleStatus};

pub use crate::assign::coupling::ImportReport;
pub use crate::assign::AssignOutcome;
pub use crate::evict::{Candidate, DiskReport, PassSummary};
pub use crate::jobs::{JobState, JobView};
pub use crate::model::{
    AuditRecord, CouplingEntry, InstanceRecord, RejectRecord, ReviewCreator, ReviewInventory,
    ReviewTag, TransferRecord,
};
pub use crate::pipeline::VerifyRow;

/// The routes, as the server mounts them; the client fills in `{key}` and `{id}`.
pub mod route {
    pub const STATUS: &str = "/v1/status";
    pub const HEALTH: &str = "/v1/health";
    pub const STUDIES: &str = "/v1/studies";
    pub const STUDY: &str = "/v1/studies/{key}";
    pub const STUDY_INSTANCES: &str = "/v1/studies/{key}/instances";
    pub const REJECTED: &str = "/v1/rejected";
    pub const ASSIGN: &str = "/v1/assign";
    pub const COUPLING: &str = "/v1/coupling";
    pub const TRANSFERS: &str = "/v1/transfers";
    pub const RESEND: &str = "/v1/resend";
    pub const VERIFY: &str = "/v1/verify";
    pub const JOBS: &str = "/v1/jobs";
    pub const JOB: &str = "/v1/jobs/{id}";
    pub const AUDIT: &str = "/v1/audit";
    pub const REVIEW: &str = "/v1/review";
    pub const PROJECTS: &str = "/v1/projects";
    pub const BUNDLE: &str = "/v1/bundle";
    pub const SELFTEST: &str = "/v1/selftest";
    pub const EVICT: &str = "/v1/evict";
    pub const USERS: &str = "/v1/users";
    pub const USER: &str = "/v1/users/{name}";
    pub const METRICS: &str = "/metrics";
}

/// The body of every refusal (a non-2xx answer): what went wrong, for the admin.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

/// File name of the control socket inside `run/`.
pub const SOCKET_NAME: &str = "control.sock";

/// Where the control socket of the daemon on `data_dir` is.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("run").join(SOCKET_NAME)
}

/// One study as the admin sees it in a listing.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StudyView {
    pub key: String,
    pub accession_number: String,
    pub study_date: String,
    pub study_time: String,
    pub study_description: String,
    pub modalities: Vec<String>,
    pub series: u64,
    pub instances: u64,
    pub bytes: u64,
    /// `receiving` until the quiet period has passed since the last instance, then `arrived`.
    pub state: String,
    /// Seconds since the first instance arrived.
    pub age_secs: i64,
    pub first_received_ms: i64,
    pub last_received_ms: i64,
    pub calling_ae: String,
    pub called_ae: String,
    pub peer: String,
    /// Current assignments (project, participant, event, transfer state).
    #[serde(default)]
    pub assignments: Vec<AssignmentView>,
    /// Unassigned for longer than `unassigned_visible_days`: left out of the assign list
    /// and eligible for eviction.
    #[serde(default)]
    pub hidden: bool,
    /// Its files were evicted (state `evicted` while nothing arrived since).
    #[serde(default)]
    pub evicted: Option<crate::model::Eviction>,
}

/// A study's assignment to one project, as listings show it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AssignmentView {
    pub project: String,
    pub participant: String,
    pub event: String,
    pub via: String,
    pub actor: String,
    pub assigned_ms: i64,
    pub research_study_uid: String,
    #[serde(default)]
    pub derived_from: Option<String>,
    /// State of the current transfer.
    pub state: String,
    pub transfers: Vec<String>,
}

/// A project as the people assigning studies need to see it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProjectView {
    pub name: String,
    pub state: String,
    pub approval: String,
    pub approval_start: Option<String>,
    pub approval_end: Option<String>,
    /// Whether it takes new assignments today, and if not why.
    pub accepts_assignments: bool,
    pub refusal: Option<String>,
    pub participant_pattern: String,
    pub events: Vec<String>,
    pub destinations: Vec<String>,
    pub auto_id_ae_title: Option<String>,
    pub participants: u64,
    /// Transfers by state.
    pub transfers: std::collections::BTreeMap<String, u64>,
}

/// `POST /v1/assign`: STUDY is a quarantine key or an accession number.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AssignBody {
    pub study: String,
    pub project: String,
    pub participant: String,
    pub event: String,
    /// The participant ID is known to be used for another PatientID of the same person.
    #[serde(default)]
    pub allow_other_patient: bool,
}

/// One study with its series, for `fiona study KEY`. Holds the patient identity the assign
/// step needs: it is shown to the admin on request, never logged.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StudyDetail {
    pub study: StudyView,
    pub study_instance_uid: String,
    pub patient_id: String,
    pub patient_name: String,
    pub series: Vec<SeriesView>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeriesView {
    pub series_instance_uid: String,
    pub series_number: Option<i64>,
    pub modality: String,
    pub series_description: String,
    pub instances: u64,
    pub bytes: u64,
    pub last_received_ms: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusView {
    pub version: String,
    pub ae_title: String,
    pub listen: String,
    pub data_dir: String,
    pub uptime_secs: u64,
    pub totals: Totals,
    pub studies_receiving: u64,
    pub studies_arrived: u64,
    pub free_bytes: u64,
    pub total_bytes: u64,
    pub min_free_bytes: u64,
    pub associations_active: u64,
    pub associations_total: u64,
    pub associations_refused: u64,
    pub instances_stored_since_start: u64,
    pub instances_duplicate_since_start: u64,
    pub instances_rejected_since_start: u64,
    pub instances_out_of_resources_since_start: u64,
    /// Instances the pipeline parked (all transfers); `fiona parked` lists them.
    #[serde(default)]
    pub instances_parked: u64,
    /// Transfers in state `parked`: nothing could be passed on, a person must look.
    #[serde(default)]
    pub transfers_parked: u64,
    /// Whether the index works (I/O errors, reopens).
    #[serde(default)]
    pub index: IndexHealth,
    /// Why the index could not be read for this view (the counts above are then zero).
    #[serde(default)]
    pub index_error: Option<String>,
    /// Bytes held, evictable and held by unsent transfers, from the last housekeeping pass
    /// (every `eviction.interval_secs`), with the last pass that evicted something.
    #[serde(default)]
    pub disk: DiskReport,
    /// Arrival notifications waiting in the outbox (not yet delivered).
    #[serde(default)]
    pub notifications_pending: u64,
    /// The last delivery error of a waiting notification, if any.
    #[serde(default)]
    pub notifications_last_error: Option<String>,
    /// The watchdog's checks, latest round (`runtime`, `committer`, `pipeline`, `echo`).
    #[serde(default)]
    pub checks: Vec<CheckResult>,
    /// Where the running configuration came from (a bundle, a file, the defaults).
    #[serde(default)]
    pub config_source: Option<ConfigSource>,
    /// The last selftest (at boot, after a bundle, or `fiona selftest`), if one ran since
    /// start.
    #[serde(default)]
    pub selftest: Option<SelftestReport>,
}

/// One destination on the status page: its last verification, last problem and queue.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DestinationView {
    pub name: String,
    pub last_verified_ms: Option<i64>,
    pub last_error: Option<String>,
    /// Transfers de-identified and not yet finished at this destination.
    pub queue: u64,
}

/// `GET /v1/evict`: what a housekeeping pass would evict now, in order, and why.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvictPlan {
    pub candidates: Vec<Candidate>,
    pub report: DiskReport,
}

/// `GET /v1/health`: what a watchdog or a monitor checks. `healthy` is false while the
/// index is stuck on an I/O error or a watchdog check fails; `problems` says why in words.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HealthView {
    pub healthy: bool,
    pub problems: Vec<String>,
    pub index: IndexHealth,
    /// The watchdog's checks, latest round; a failing one is also among `problems`.
    #[serde(default)]
    pub checks: Vec<CheckResult>,
}

/// Query of `GET /v1/studies`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct StudiesQuery {
    /// Also the unassigned studies past the visibility period (marked `hidden`).
    #[serde(default)]
    pub all: bool,
}

/// Query of `POST /v1/coupling`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct CouplingQuery {
    /// Let rows change the participant or event of keys already coupled.
    #[serde(default)]
    pub replace: bool,
}

/// Filters of `GET /v1/transfers`; dates are `YYYY-MM-DD` (UTC), both ends included.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TransferQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub study: Option<String>,
}

/// `GET /v1/review`: the project whose review inventory is asked for (required).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReviewQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
}

/// `POST /v1/resend`: re-queue the transfers of a study (key or accession number), or of a
/// project (optionally those created on or after `since`, YYYY-MM-DD).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ResendBody {
    #[serde(default)]
    pub study: Option<String>,
    #[serde(default)]
    pub project: Option<String>,
    #[serde(default)]
    pub since: Option<String>,
}

/// What `POST /v1/resend` did: the transfers re-queued.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResendOutcome {
    pub transfers: Vec<String>,
}

/// Query of `GET /v1/jobs/ID`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct JobQuery {
    /// Wait up to this long (capped at `jobs::MAX_WAIT`) for a running job to finish.
    #[serde(default)]
    pub wait_ms: u64,
}

/// `POST /v1/verify`: ask the research PACS what it holds of a project's sent studies.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VerifyBody {
    pub project: String,
}

/// One web account as `GET /v1/users` lists it: who, from where, with which roles. The
/// password hash is not part of it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserView {
    pub name: String,
    /// `local` (the index, `fiona user add`) or `config` (`[[web.accounts]]`, changed only
    /// in the configuration).
    pub source: String,
    pub grants: Grants,
    pub disabled: bool,
    /// When a local account was made and last changed (Unix ms); none for configured ones.
    #[serde(default)]
    pub created_ms: Option<i64>,
    #[serde(default)]
    pub changed_ms: Option<i64>,
}

/// `POST /v1/users`: a new local account. Its `Debug` never prints the password.
#[derive(Clone, Serialize, Deserialize)]
pub struct UserAddBody {
    pub name: String,
    pub password: String,
    pub grants: Grants,
}

impl std::fmt::Debug for UserAddBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserAddBody")
            .field("name", &self.name)
            .field("grants", &self.grants)
            .finish_non_exhaustive()
    }
}

/// `POST /v1/users/NAME`: one change to a local account. Its `Debug` never prints a
/// password.
#[derive(Clone, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum UserChange {
    /// Replace the account's roles.
    Roles {
        grants: Grants,
    },
    /// Set a new password (checked and hashed by the daemon).
    Password {
        password: String,
    },
    Disable,
    Enable,
}

impl std::fmt::Debug for UserChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UserChange::Roles { grants } => {
                f.debug_struct("Roles").field("grants", grants).finish()
            }
            UserChange::Password { .. } => f.debug_struct("Password").finish_non_exhaustive(),
            UserChange::Disable => f.write_str("Disable"),
            UserChange::Enable => f.write_str("Enable"),
        }
    }
}

/// What `POST /v1/users` and `POST /v1/users/NAME` did: the account as it is now, and the
/// change in words (as the audit record says it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserOutcome {
    pub user: UserView,
    pub done: String,
}
