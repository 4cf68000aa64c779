//! The control API: HTTP/1.1 over a Unix socket in the data directory (`run/control.sock`,
//! mode 0600 in a 0700 directory), so only the daemon's user (and root) reach it. The admin
//! commands (`fiona studies`, `study`, `status`, `rejected`) are its clients; the web page
//! will serve the same handlers later.
//!
//! | route                 | answer                                   |
//! |-----------------------|------------------------------------------|
//! | `GET /v1/status`      | [`StatusView`]                           |
//! | `GET /v1/health`      | [`HealthView`] (503 when unhealthy)      |
//! | `GET /v1/studies`     | `[StudyView]`                            |
//! | `GET /v1/studies/KEY` | [`StudyDetail`] (404 if unknown)         |
//! | `GET /v1/studies/KEY/instances` | `[InstanceRecord]` (404 if unknown) |
//! | `GET /v1/rejected`    | `[RejectRecord]`                         |
//! | `POST /v1/assign`     | [`AssignBody`] -> [`AssignOutcome`] (422 with the reason if refused) |
//! | `POST /v1/coupling?replace=BOOL` | CSV body -> [`ImportReport`] (422 if any line is bad) |
//! | `GET /v1/coupling`    | `[CouplingEntry]`                        |
//! | `GET /v1/transfers?project=&state=&since=&until=` | `[TransferRecord]`, oldest first |
//! | `POST /v1/resend`     | [`ResendBody`] -> 202 [`JobView`]; its result: [`ResendOutcome`] (the transfers re-queued) |
//! | `POST /v1/verify`     | [`VerifyBody`] -> 202 [`JobView`]; its result: `[VerifyRow]` (C-FIND at each destination; changes nothing) |
//! | `GET /v1/jobs`        | `[JobView]` (without results), oldest first |
//! | `GET /v1/jobs/ID?wait_ms=` | [`JobView`]; waits up to `wait_ms` (at most 5 s) for a running job to finish (404 if unknown) |
//! | `GET /v1/audit`       | `[AuditRecord]`, oldest first            |
//! | `GET /v1/projects`    | `[ProjectView]`                          |
//!
//! `GET /v1/studies` lists the studies an admin can still assign: unassigned studies older
//! than `unassigned_visible_days` are left out unless `?all=true` (then they are marked
//! `hidden`). Every study carries its current assignments.
//!
//! Who made a change is taken from the connecting process's user ID (`SO_PEERCRED`), so the
//! audit trail names the Unix user, not what a client claims.
//!
//! No request should take long: the client's socket gives up after [`CLIENT_TIMEOUT`] of
//! silence. Operations that grow with a project (verify, resend) run as jobs (`jobs.rs`): the
//! `POST` answers at once with the job, and [`run_job`] follows it, reporting progress.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::IncomingStream;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::assign::coupling::{self, ImportReport};
use crate::assign::{
    self, AssignError, AssignOutcome, AssignmentRecord, AuditRecord, CouplingEntry, Request,
    TransferRecord, TransferState, Via,
};
use crate::index::{
    IndexHealth, InstanceRecord, IoFailure, RejectRecord, SeriesRecord, StudyRecord, Totals,
};
use crate::jobs::{JobState, JobView, Jobs};
use crate::node::Node;

/// Largest coupling list accepted (about a million rows).
pub const COUPLING_MAX_BYTES: usize = 64 << 20;

/// File name of the control socket inside `run/`.
pub const SOCKET_NAME: &str = "control.sock";

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
}

/// `GET /v1/health`: what a watchdog or a monitor checks. `healthy` is false while the
/// index is stuck on an I/O error; `problems` says why in words.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HealthView {
    pub healthy: bool,
    pub problems: Vec<String>,
    pub index: IndexHealth,
}

struct Ctl {
    node: Arc<Node>,
    /// Long operations (verify, resend) running or recently finished.
    jobs: Arc<Jobs>,
    started: Instant,
    listen: String,
}

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

pub fn study_view(s: &StudyRecord, quiet_ms: i64, now: i64) -> StudyView {
    StudyView {
        key: s.key.clone(),
        accession_number: s.accession_number.clone(),
        study_date: s.study_date.clone(),
        study_time: s.study_time.clone(),
        study_description: s.study_description.clone(),
        modalities: s.modalities.clone(),
        series: s.series_count,
        instances: s.instance_count,
        bytes: s.bytes,
        state: if now - s.last_received_ms >= quiet_ms {
            "arrived".into()
        } else {
            "receiving".into()
        },
        age_secs: (now - s.first_received_ms).max(0) / 1000,
        first_received_ms: s.first_received_ms,
        last_received_ms: s.last_received_ms,
        calling_ae: s.origin.calling_ae.clone(),
        called_ae: s.origin.called_ae.clone(),
        peer: s.origin.peer.clone(),
        assignments: Vec::new(),
        hidden: false,
    }
}

fn assignment_view(a: &AssignmentRecord, state: Option<TransferState>) -> AssignmentView {
    AssignmentView {
        project: a.project.clone(),
        participant: a.participant.clone(),
        event: a.event.clone(),
        via: a.via.to_string(),
        actor: a.actor.clone(),
        assigned_ms: a.assigned_ms,
        research_study_uid: a.research_study_uid.clone(),
        derived_from: a.derived_from.clone(),
        state: state.map(|s| s.as_str()).unwrap_or("unknown").to_string(),
        transfers: a.transfers.clone(),
    }
}

/// A study's view with its assignments and whether the assign list hides it.
fn full_study_view(
    node: &Node,
    s: &StudyRecord,
    assignments: &[AssignmentRecord],
    transfers: &std::collections::HashMap<String, TransferState>,
    now: i64,
) -> StudyView {
    let quiet = node.config.quiet_period().as_millis() as i64;
    let mut v = study_view(s, quiet, now);
    v.assignments = assignments
        .iter()
        .map(|a| {
            let st = a.transfers.last().and_then(|id| transfers.get(id)).copied();
            assignment_view(a, st)
        })
        .collect();
    v.hidden =
        v.assignments.is_empty() && now - s.first_received_ms > node.policy.unassigned_visible_ms;
    v
}

fn series_view(s: &SeriesRecord) -> SeriesView {
    SeriesView {
        series_instance_uid: s.series_instance_uid.clone(),
        series_number: s.series_number,
        modality: s.modality.clone(),
        series_description: s.series_description.clone(),
        instances: s.instance_count,
        bytes: s.bytes,
        last_received_ms: s.last_received_ms,
    }
}

struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "task failed".into()))?
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e))
}

fn health_view(index: IndexHealth) -> HealthView {
    let mut problems = Vec::new();
    if !index.usable {
        problems.push("index cannot be opened after an I/O error".to_string());
    }
    if let Some(kind) = index.failing {
        problems.push(match kind {
            IoFailure::DiskFull => "the last index write failed: the disk is full".to_string(),
            IoFailure::Other => "the last index write failed with an I/O error".to_string(),
        });
    }
    HealthView {
        healthy: problems.is_empty(),
        problems,
        index,
    }
}

async fn health(State(c): State<Arc<Ctl>>) -> Response {
    let node = c.node.clone();
    let index = match tokio::task::spawn_blocking(move || node.store.health()).await {
        Ok(h) => h,
        Err(_) => {
            return ApiError(StatusCode::INTERNAL_SERVER_ERROR, "task failed".into())
                .into_response()
        }
    };
    let v = health_view(index);
    let code = if v.healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(v)).into_response()
}

async fn status(State(c): State<Arc<Ctl>>) -> Result<Json<StatusView>, ApiError> {
    let node = c.node.clone();
    let quiet = node.config.quiet_period().as_millis() as i64;
    let node2 = node.clone();
    let index = tokio::task::spawn_blocking(move || node2.store.health())
        .await
        .unwrap_or_default();
    // An index that cannot be read still gets a status: the counters and the index's own
    // health say what is wrong.
    let counts = blocking(move || {
        let totals = node.store.totals().map_err(|e| e.to_string())?;
        let now = now_ms();
        let studies = node.store.studies().map_err(|e| e.to_string())?;
        let receiving = studies
            .iter()
            .filter(|s| now - s.last_received_ms < quiet)
            .count() as u64;
        let transfers = node.store.transfers().map_err(|e| e.to_string())?;
        let parked = (
            transfers.iter().map(|t| t.parked.len() as u64).sum(),
            transfers
                .iter()
                .filter(|t| t.state == TransferState::Parked)
                .count() as u64,
        );
        Ok((totals, receiving, studies.len() as u64 - receiving, parked))
    })
    .await;
    let (index_error, (totals, receiving, arrived, parked)) = match counts {
        Ok(c) => (None, c),
        Err(ApiError(_, e)) => (Some(e), Default::default()),
    };
    let n = &c.node;
    let st = &n.stats;
    Ok(Json(StatusView {
        version: env!("CARGO_PKG_VERSION").into(),
        ae_title: n.config.ae_title.clone(),
        listen: c.listen.clone(),
        data_dir: n.quarantine.root().display().to_string(),
        uptime_secs: c.started.elapsed().as_secs(),
        totals,
        studies_receiving: receiving,
        studies_arrived: arrived,
        free_bytes: n.quarantine.free_bytes().unwrap_or(0),
        total_bytes: n.quarantine.total_bytes().unwrap_or(0),
        min_free_bytes: n.config.min_free_bytes,
        associations_active: st.associations_active.load(Ordering::Relaxed),
        associations_total: st.associations_total.load(Ordering::Relaxed),
        associations_refused: st.associations_refused.load(Ordering::Relaxed),
        instances_stored_since_start: st.instances_stored.load(Ordering::Relaxed),
        instances_duplicate_since_start: st.instances_duplicate.load(Ordering::Relaxed),
        instances_rejected_since_start: st.instances_rejected.load(Ordering::Relaxed),
        instances_out_of_resources_since_start: st
            .instances_out_of_resources
            .load(Ordering::Relaxed),
        instances_parked: parked.0,
        transfers_parked: parked.1,
        index,
        index_error,
    }))
}

#[derive(Debug, Default, Deserialize)]
struct StudiesQuery {
    #[serde(default)]
    all: bool,
}

async fn studies(
    State(c): State<Arc<Ctl>>,
    Query(q): Query<StudiesQuery>,
) -> Result<Json<Vec<StudyView>>, ApiError> {
    let node = c.node.clone();
    let mut v = blocking(move || {
        let now = now_ms();
        let studies = node.store.studies().map_err(|e| e.to_string())?;
        let mut by_study: std::collections::HashMap<String, Vec<AssignmentRecord>> =
            Default::default();
        for a in node.store.assignments(None).map_err(|e| e.to_string())? {
            by_study.entry(a.study_key.clone()).or_default().push(a);
        }
        let states = transfer_states(&node)?;
        Ok(studies
            .iter()
            .map(|s| {
                let a = by_study.get(&s.key).map(Vec::as_slice).unwrap_or(&[]);
                full_study_view(&node, s, a, &states, now)
            })
            .filter(|v| q.all || !v.hidden)
            .collect::<Vec<_>>())
    })
    .await?;
    v.sort_by_key(|s| std::cmp::Reverse(s.last_received_ms));
    Ok(Json(v))
}

fn transfer_states(
    node: &Node,
) -> Result<std::collections::HashMap<String, TransferState>, String> {
    Ok(node
        .store
        .transfers()
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|t| (t.id, t.state))
        .collect())
}

async fn study(
    State(c): State<Arc<Ctl>>,
    UrlPath(key): UrlPath<String>,
) -> Result<Json<StudyDetail>, ApiError> {
    let node = c.node.clone();
    let k = key.clone();
    let found = blocking(move || {
        let Some(s) = node.store.study(&k).map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        let mut series: Vec<SeriesView> = node
            .store
            .series_of(&k)
            .map_err(|e| e.to_string())?
            .iter()
            .map(series_view)
            .collect();
        series.sort_by_key(|s| (s.series_number.unwrap_or(i64::MAX), s.last_received_ms));
        let assignments = node
            .store
            .assignments(Some(&k))
            .map_err(|e| e.to_string())?;
        let states = transfer_states(&node)?;
        Ok(Some(StudyDetail {
            study: full_study_view(&node, &s, &assignments, &states, now_ms()),
            study_instance_uid: s.study_instance_uid.clone(),
            patient_id: s.patient_id.clone(),
            patient_name: s.patient_name.clone(),
            series,
        }))
    })
    .await?;
    found
        .map(Json)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no study with key {key}")))
}

async fn instances(
    State(c): State<Arc<Ctl>>,
    UrlPath(key): UrlPath<String>,
) -> Result<Json<Vec<InstanceRecord>>, ApiError> {
    let node = c.node.clone();
    let k = key.clone();
    let found = blocking(move || {
        if node.store.study(&k).map_err(|e| e.to_string())?.is_none() {
            return Ok(None);
        }
        let mut v = node.store.instances_of(&k).map_err(|e| e.to_string())?;
        v.sort_by(|a, b| {
            a.series_instance_uid
                .cmp(&b.series_instance_uid)
                .then(a.key.cmp(&b.key))
        });
        Ok(Some(v))
    })
    .await?;
    found
        .map(Json)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no study with key {key}")))
}

async fn rejected(State(c): State<Arc<Ctl>>) -> Result<Json<Vec<RejectRecord>>, ApiError> {
    let node = c.node.clone();
    let mut v = blocking(move || node.store.rejections().map_err(|e| e.to_string())).await?;
    v.sort_by_key(|r| std::cmp::Reverse(r.received_ms));
    Ok(Json(v))
}

async fn get_projects(State(c): State<Arc<Ctl>>) -> Result<Json<Vec<ProjectView>>, ApiError> {
    let node = c.node.clone();
    Ok(Json(
        blocking(move || {
            let participants = node.store.participants().map_err(|e| e.to_string())?;
            let transfers = node.store.transfers().map_err(|e| e.to_string())?;
            let today = assign::utc_date(now_ms());
            Ok(node
                .policy
                .projects
                .projects
                .values()
                .map(|p| {
                    let cfg = &p.config;
                    let refusal = p.accepts(today).err().map(|r| r.to_string());
                    let mut by_state = std::collections::BTreeMap::new();
                    for t in transfers.iter().filter(|t| t.project == p.name) {
                        *by_state.entry(t.state.as_str().to_string()).or_insert(0) += 1;
                    }
                    ProjectView {
                        name: p.name.clone(),
                        state: format!("{:?}", cfg.state).to_lowercase(),
                        approval: cfg.approval.clone(),
                        approval_start: cfg.approval_start.map(|d| d.to_string()),
                        approval_end: cfg.approval_end.map(|d| d.to_string()),
                        accepts_assignments: refusal.is_none(),
                        refusal,
                        participant_pattern: cfg.participant_pattern.clone(),
                        events: cfg.events.clone(),
                        destinations: cfg.destinations.clone(),
                        auto_id_ae_title: cfg.auto_id.as_ref().map(|a| a.ae_title.clone()),
                        participants: participants.iter().filter(|x| x.project == p.name).count()
                            as u64,
                        transfers: by_state,
                    }
                })
                .collect())
        })
        .await?,
    ))
}

/// Who is on the other end of the control socket (from `SO_PEERCRED`).
#[derive(Debug, Clone)]
pub struct Peer {
    uid: Option<u32>,
    pid: Option<i32>,
}

impl Connected<IncomingStream<'_, tokio::net::UnixListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, tokio::net::UnixListener>) -> Self {
        match stream.io().peer_cred() {
            Ok(c) => Peer {
                uid: Some(c.uid()),
                pid: c.pid(),
            },
            Err(_) => Peer {
                uid: None,
                pid: None,
            },
        }
    }
}

fn user_name(uid: u32) -> String {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| format!("uid{uid}"))
}

/// The audit trail's actor for a change made through the socket: `user:NAME`, where NAME is
/// the peer's login user (`/proc/PID/loginuid`, which survives `sudo` and `su`), with the
/// effective user added when it differs (`user:alice (as root)`). Blocking (NSS lookups): call
/// off the async threads. `None` when the peer's credentials are unknown.
fn actor_of(peer: &Peer) -> Option<String> {
    let uid = peer.uid?;
    let login = peer
        .pid
        .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/loginuid")).ok())
        .and_then(|s| s.trim().parse::<u32>().ok())
        .filter(|&l| l != u32::MAX);
    Some(match login {
        Some(l) if l != uid => format!("user:{} (as {})", user_name(l), user_name(uid)),
        _ => format!("user:{}", user_name(uid)),
    })
}

fn no_actor() -> ApiError {
    ApiError(
        StatusCode::FORBIDDEN,
        "the caller's credentials are unknown; changes need a local user".into(),
    )
}

fn refused(e: AssignError) -> ApiError {
    match e {
        AssignError::Refused(r) => ApiError(StatusCode::UNPROCESSABLE_ENTITY, r.to_string()),
        AssignError::NoStudy(k) => ApiError(StatusCode::NOT_FOUND, format!("no study {k}")),
        AssignError::Store(e) => ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Find a study by quarantine key, else by accession number (which must be unambiguous).
fn resolve_study(node: &Node, study: &str) -> Result<String, ApiError> {
    let internal =
        |e: crate::index::StoreError| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
    if node.store.study(study).map_err(internal)?.is_some() {
        return Ok(study.to_string());
    }
    let matches: Vec<String> = node
        .store
        .studies()
        .map_err(internal)?
        .into_iter()
        .filter(|s| !study.trim().is_empty() && s.accession_number.trim() == study.trim())
        .map(|s| s.key)
        .collect();
    match matches.len() {
        0 => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no study with key or accession number `{study}`"),
        )),
        1 => Ok(matches[0].clone()),
        _ => Err(ApiError(
            StatusCode::CONFLICT,
            format!(
                "accession number `{study}` names {} studies ({}); assign by key",
                matches.len(),
                matches.join(", ")
            ),
        )),
    }
}

async fn post_assign(
    State(c): State<Arc<Ctl>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Json(b): Json<AssignBody>,
) -> Result<Json<AssignOutcome>, ApiError> {
    let node = c.node.clone();
    let r = tokio::task::spawn_blocking(move || -> Result<AssignOutcome, ApiError> {
        let actor = actor_of(&peer).ok_or_else(no_actor)?;
        let key = resolve_study(&node, &b.study)?;
        let mut result: Option<Result<AssignOutcome, AssignError>> = None;
        node.store
            .write_assign(&mut |t| {
                let req = Request {
                    study_key: &key,
                    project: &b.project,
                    participant: &b.participant,
                    event: &b.event,
                    via: Via::Manual,
                    actor: &actor,
                    derived_from: None,
                    allow_other_patient: b.allow_other_patient,
                };
                match assign::assign_audited(t, &node.policy, &req, now_ms(), false) {
                    Err(AssignError::Store(e)) => Err(e),
                    other => {
                        result = Some(other);
                        Ok(())
                    }
                }
            })
            .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        match result {
            Some(Ok(o)) => {
                tracing::info!(study = %o.study_key, project = %o.project, result = %o.result, transfer = ?o.transfer, actor = %actor, "manual assignment");
                node.pipeline_wake.notify_one();
                Ok(o)
            }
            Some(Err(e)) => {
                if let AssignError::Refused(r) = &e {
                    tracing::warn!(study = %key, project = %b.project, reason = assign::refusal_kind(r), "manual assignment refused");
                }
                Err(refused(e))
            }
            None => Err(ApiError(StatusCode::INTERNAL_SERVER_ERROR, "no result".into())),
        }
    })
    .await
    .map_err(|_| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "task failed".into()))??;
    Ok(Json(r))
}

#[derive(Debug, Default, Deserialize)]
struct CouplingQuery {
    #[serde(default)]
    replace: bool,
}

async fn post_coupling(
    State(c): State<Arc<Ctl>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Query(q): Query<CouplingQuery>,
    body: String,
) -> Response {
    let node = c.node.clone();
    let res = blocking(move || {
        let actor = actor_of(&peer).ok_or("the caller's credentials are unknown")?;
        let mut report = None;
        node.store
            .write_assign(&mut |t| {
                report = Some(coupling::import(
                    t,
                    &node.policy,
                    &body,
                    &actor,
                    q.replace,
                    now_ms(),
                )?);
                Ok(())
            })
            .map_err(|e| e.to_string())?;
        report.ok_or_else(|| "no result".to_string())
    })
    .await;
    match res {
        Ok(r) if r.errors.is_empty() => {
            tracing::info!(import = %r.import_id, rows = r.rows, assigned = r.assigned.len(), "coupling list imported");
            c.node.pipeline_wake.notify_one();
            Json(r).into_response()
        }
        Ok(r) => {
            tracing::warn!(
                bad_lines = r.errors.len(),
                "coupling list refused, nothing loaded"
            );
            (StatusCode::UNPROCESSABLE_ENTITY, Json::<ImportReport>(r)).into_response()
        }
        Err(e) => e.into_response(),
    }
}

async fn get_coupling(State(c): State<Arc<Ctl>>) -> Result<Json<Vec<CouplingEntry>>, ApiError> {
    let node = c.node.clone();
    Ok(Json(
        blocking(move || node.store.couplings().map_err(|e| e.to_string())).await?,
    ))
}

/// Filters of `GET /v1/transfers`; dates are `YYYY-MM-DD` (UTC), both ends included.
#[derive(Debug, Default, Deserialize)]
pub struct TransferQuery {
    #[serde(default)]
    pub project: Option<String>,
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub since: Option<String>,
    #[serde(default)]
    pub until: Option<String>,
    #[serde(default)]
    pub study: Option<String>,
}

fn day_start_ms(d: time::Date) -> i64 {
    (d.midnight().assume_utc().unix_timestamp_nanos() / 1_000_000) as i64
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

async fn post_resend(
    State(c): State<Arc<Ctl>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Json(b): Json<ResendBody>,
) -> Result<(StatusCode, Json<JobView>), ApiError> {
    let bad = |m: String| ApiError(StatusCode::BAD_REQUEST, m);
    if b.study.is_none() == b.project.is_none() {
        return Err(bad("give a study or a project (one of them)".into()));
    }
    if b.study.is_some() && b.since.is_some() {
        return Err(bad("--since goes with --project".into()));
    }
    let since = match &b.since {
        Some(s) => Some(day_start_ms(
            crate::project::parse_date(s)
                .ok_or_else(|| bad(format!("since: `{s}` is not a YYYY-MM-DD date")))?,
        )),
        None => None,
    };
    let node = c.node.clone();
    // Who and which study: answered at once (a refusal is not a job).
    let (actor, key) = tokio::task::spawn_blocking(move || -> Result<_, ApiError> {
        let actor = actor_of(&peer).ok_or_else(no_actor)?;
        let key = match &b.study {
            Some(s) => Some(resolve_study(&node, s)?),
            None => None,
        };
        Ok((actor, key))
    })
    .await
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    let node = c.node.clone();
    let project = b.project.clone();
    let job = c.jobs.start("resend", move |progress| async move {
        let ids = tokio::task::spawn_blocking(move || {
            crate::pipeline::resend(
                node.store.as_ref(),
                node.quarantine.root(),
                key.as_deref(),
                project.as_deref(),
                since,
                &actor,
                now_ms(),
                &progress,
            )
            .inspect(|ids| {
                tracing::info!(transfers = ids.len(), actor = %actor, "transfers re-queued");
                node.pipeline_wake.notify_one();
            })
        })
        .await
        .map_err(|e| e.to_string())??;
        serde_json::to_value(ResendOutcome { transfers: ids }).map_err(|e| e.to_string())
    });
    started(job)
}

/// The answer to a `POST` that starts a job: 202 with the job, or 503 when too many run.
fn started(
    job: Result<JobView, crate::jobs::JobError>,
) -> Result<(StatusCode, Json<JobView>), ApiError> {
    job.map(|v| (StatusCode::ACCEPTED, Json(v)))
        .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))
}

#[derive(Debug, Default, Deserialize)]
struct JobQuery {
    /// Wait up to this long (capped at `jobs::MAX_WAIT`) for a running job to finish.
    #[serde(default)]
    wait_ms: u64,
}

async fn get_job(
    State(c): State<Arc<Ctl>>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<JobQuery>,
) -> Result<Json<JobView>, ApiError> {
    c.jobs
        .get(&id, std::time::Duration::from_millis(q.wait_ms))
        .await
        .map(Json)
        .ok_or_else(|| {
            ApiError(
                StatusCode::NOT_FOUND,
                format!(
                    "no job {id} (finished jobs are kept for an hour; jobs end with a restart)"
                ),
            )
        })
}

async fn get_jobs(State(c): State<Arc<Ctl>>) -> Json<Vec<JobView>> {
    Json(c.jobs.list())
}

/// `POST /v1/verify`: ask the research PACS what it holds of a project's sent studies.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VerifyBody {
    pub project: String,
}

async fn post_verify(
    State(c): State<Arc<Ctl>>,
    Json(b): Json<VerifyBody>,
) -> Result<(StatusCode, Json<JobView>), ApiError> {
    if !c.node.config.projects.contains_key(&b.project) {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("project {} is not configured", b.project),
        ));
    }
    let node = c.node.clone();
    let job = c.jobs.start("verify", move |progress| async move {
        let rows = crate::pipeline::verify_report(
            &node.config,
            node.store.clone(),
            node.quarantine.root(),
            &b.project,
            &progress,
        )
        .await?;
        serde_json::to_value(rows).map_err(|e| e.to_string())
    });
    started(job)
}

async fn get_transfers(
    State(c): State<Arc<Ctl>>,
    Query(q): Query<TransferQuery>,
) -> Result<Json<Vec<TransferRecord>>, ApiError> {
    let bad = |m: String| ApiError(StatusCode::BAD_REQUEST, m);
    let state = match &q.state {
        Some(s) => Some(TransferState::parse(s).ok_or_else(|| {
            bad(format!(
                "unknown state `{s}` (requested, deidentified, sent, verified, failed, cancelled, parked)"
            ))
        })?),
        None => None,
    };
    let date = |s: &Option<String>, what: &str| -> Result<Option<time::Date>, ApiError> {
        match s {
            Some(s) => crate::project::parse_date(s)
                .map(Some)
                .ok_or_else(|| bad(format!("{what}: `{s}` is not a YYYY-MM-DD date"))),
            None => Ok(None),
        }
    };
    let since = date(&q.since, "since")?.map(day_start_ms);
    let until = date(&q.until, "until")?
        .and_then(|d| d.next_day())
        .map(day_start_ms);
    let node = c.node.clone();
    let v = blocking(move || node.store.transfers().map_err(|e| e.to_string())).await?;
    Ok(Json(
        v.into_iter()
            .filter(|t| q.project.as_ref().is_none_or(|p| &t.project == p))
            .filter(|t| q.study.as_ref().is_none_or(|s| &t.study_key == s))
            .filter(|t| state.is_none_or(|s| t.state == s))
            .filter(|t| since.is_none_or(|s| t.created_ms >= s))
            .filter(|t| until.is_none_or(|u| t.created_ms < u))
            .collect(),
    ))
}

async fn get_audit(State(c): State<Arc<Ctl>>) -> Result<Json<Vec<AuditRecord>>, ApiError> {
    let node = c.node.clone();
    Ok(Json(
        blocking(move || node.store.audit_trail().map_err(|e| e.to_string())).await?,
    ))
}

/// Serve the control API on the data directory's socket until `shutdown` fires.
pub async fn serve(
    node: Arc<Node>,
    listen: String,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let run = node.quarantine.run_dir();
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700))?;
    let path = run.join(SOCKET_NAME);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = tokio::net::UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    let ctl = Arc::new(Ctl {
        node,
        jobs: Arc::default(),
        started: Instant::now(),
        listen,
    });
    let app = Router::new()
        .route("/v1/status", get(status))
        .route("/v1/health", get(health))
        .route("/v1/studies", get(studies))
        .route("/v1/studies/{key}", get(study))
        .route("/v1/studies/{key}/instances", get(instances))
        .route("/v1/rejected", get(rejected))
        .route("/v1/assign", post(post_assign))
        .route(
            "/v1/coupling",
            post(post_coupling)
                .get(get_coupling)
                .layer(axum::extract::DefaultBodyLimit::max(COUPLING_MAX_BYTES)),
        )
        .route("/v1/transfers", get(get_transfers))
        .route("/v1/resend", post(post_resend))
        .route("/v1/verify", post(post_verify))
        .route("/v1/jobs", get(get_jobs))
        .route("/v1/jobs/{id}", get(get_job))
        .route("/v1/audit", get(get_audit))
        .route("/v1/projects", get(get_projects))
        .with_state(ctl);
    axum::serve(listener, app.into_make_service_with_connect_info::<Peer>())
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// Errors of the control client, phrased for the admin at the console.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the fiona daemon at {path}: {source} (is `fiona serve` running with this data directory?)")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("control socket I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("daemon answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("malformed answer from daemon: {0}")]
    Malformed(String),
    #[error("{0}")]
    JobFailed(String),
}

/// How long the client waits for any answer on the control socket before giving up (the
/// socket's `SO_RCVTIMEO`; `EAGAIN` when it passes). Every route answers well within it: long
/// operations are jobs.
pub const CLIENT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// How long one `GET` of a job waits for it to finish: progress is reported at this pace.
const JOB_POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// `POST path` with a JSON body to start a job, then follow it until it ends, calling
/// `progress` whenever its count changes; returns the job's result as JSON. A refusal of the
/// `POST` is a [`ClientError::Status`]; a job that failed is a [`ClientError::JobFailed`].
pub fn run_job(
    data_dir: &Path,
    path: &str,
    body: &[u8],
    mut progress: impl FnMut(&JobView),
) -> Result<Vec<u8>, ClientError> {
    let (status, answer) = request_post(data_dir, path, "application/json", body)?;
    let answer = check_status(status, answer)?;
    let mut job: JobView =
        serde_json::from_slice(&answer).map_err(|e| ClientError::Malformed(e.to_string()))?;
    let mut shown = None;
    loop {
        if shown != Some((job.done, job.total)) {
            progress(&job);
            shown = Some((job.done, job.total));
        }
        match job.state {
            JobState::Done => {
                let result = job.result.unwrap_or(serde_json::Value::Null);
                return serde_json::to_vec(&result)
                    .map_err(|e| ClientError::Malformed(e.to_string()));
            }
            JobState::Failed => {
                return Err(ClientError::JobFailed(job.error.unwrap_or_default()));
            }
            JobState::Running => {}
        }
        let next = request(
            data_dir,
            &format!("/v1/jobs/{}?wait_ms={}", job.id, JOB_POLL.as_millis()),
        )?;
        job = serde_json::from_slice(&next).map_err(|e| ClientError::Malformed(e.to_string()))?;
    }
}

/// `GET path` on the control socket; returns the body of a 2xx answer.
pub fn request(data_dir: &Path, path: &str) -> Result<Vec<u8>, ClientError> {
    send(data_dir, "GET", path, None).and_then(|(status, body)| check_status(status, body))
}

/// `POST path` with a body (`content_type`); returns the status and body, whatever the status.
pub fn request_post(
    data_dir: &Path,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> Result<(u16, Vec<u8>), ClientError> {
    send(data_dir, "POST", path, Some((content_type, body)))
}

/// Percent-encode a query value.
pub fn encode_query(v: &str) -> String {
    v.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn send(
    data_dir: &Path,
    method: &str,
    path: &str,
    body: Option<(&str, &[u8])>,
) -> Result<(u16, Vec<u8>), ClientError> {
    let sock = socket_path(data_dir);
    let mut s =
        std::os::unix::net::UnixStream::connect(&sock).map_err(|source| ClientError::Connect {
            path: sock.clone(),
            source,
        })?;
    s.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: fiona\r\nConnection: close\r\nAccept: application/json\r\n"
    );
    if let Some((ct, b)) = body {
        head.push_str(&format!(
            "Content-Type: {ct}\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())?;
    if let Some((_, b)) = body {
        s.write_all(b)?;
    }
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    split_response(&raw)
}

#[cfg(test)]
fn parse_response(raw: &[u8]) -> Result<Vec<u8>, ClientError> {
    split_response(raw).and_then(|(status, body)| check_status(status, body))
}

/// A non-2xx status as an error carrying the answer's `error` message.
pub fn check_status(status: u16, body: Vec<u8>) -> Result<Vec<u8>, ClientError> {
    if !(200..300).contains(&status) {
        let msg = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(String::from))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        return Err(ClientError::Status { status, body: msg });
    }
    Ok(body)
}

fn split_response(raw: &[u8]) -> Result<(u16, Vec<u8>), ClientError> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| ClientError::Malformed("no header end".into()))?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut body = raw[split + 4..].to_vec();
    let status: u16 = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| ClientError::Malformed("no status line".into()))?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    if chunked {
        body = dechunk(&body)?;
    }
    Ok((status, body))
}

fn dechunk(mut b: &[u8]) -> Result<Vec<u8>, ClientError> {
    let mut out = Vec::new();
    loop {
        let line_end = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| ClientError::Malformed("bad chunk".into()))?;
        let size_s = String::from_utf8_lossy(&b[..line_end]);
        let size = usize::from_str_radix(size_s.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| ClientError::Malformed("bad chunk size".into()))?;
        b = &b[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if b.len() < size + 2 {
            return Err(ClientError::Malformed("short chunk".into()));
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked() {
        let r = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n[]";
        assert_eq!(parse_response(r).unwrap(), b"[]");
        let r = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_response(r).unwrap(), b"abcde");
        let r = b"HTTP/1.1 404 Not Found\r\n\r\n{\"error\":\"no study with key X\"}";
        let e = parse_response(r).unwrap_err().to_string();
        assert!(e.contains("404") && e.contains("no study"), "{e}");
    }
}
