//! The control API's server: HTTP/1.1 (axum) over a Unix socket in the data directory
//! (`run/control.sock`, mode 0600 in a 0700 directory), so only the daemon's user (and root)
//! reach it. The routes and the types they carry are in [`api`], shared with the client
//! ([`client`]) that the admin commands (`fiona studies`, `assign`, `verify`, ...) use; the web
//! page will serve the same handlers later.
//!
//! Who made a change is taken from the connecting process's user ID (`SO_PEERCRED`), so the
//! audit trail names the Unix user, not what a client claims.
//!
//! No request should take long: the client gives up after [`client::CLIENT_TIMEOUT`].
//! Operations that grow with a project (verify, resend) run as jobs (`jobs.rs`): the `POST`
//! answers at once with the job, and [`client::Client::run_job`] follows it, reporting
//! progress.

pub mod api;
pub mod client;

use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::IncomingStream;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::assign::coupling;
use crate::assign::{
    self, AssignError, AssignOutcome, AssignmentRecord, AuditRecord, CouplingEntry, Request,
    TransferRecord, TransferState, Via,
};
use crate::config::Grants;
use crate::index::{
    IndexHealth, InstanceRecord, IoFailure, RejectRecord, SeriesRecord, StudyRecord,
};
use crate::jobs::Jobs;
use crate::model::AccountRecord;
use crate::node::Node;

use api::{
    route, AssignBody, AssignmentView, CheckResult, CouplingQuery, DestinationView, DiskReport,
    ErrorBody, EvictPlan, HealthView, ImportReport, JobQuery, JobView, ProjectView, ResendBody,
    ResendOutcome, ReviewInventory, ReviewQuery, SelftestReport, SeriesView, StatusView,
    StudiesQuery, StudyDetail, StudyView, TransferQuery, UserAddBody, UserChange, UserOutcome,
    UserView, VerifyBody, SOCKET_NAME,
};

/// Largest coupling list accepted (about a million rows).
pub const COUPLING_MAX_BYTES: usize = 64 << 20;

struct Ctl {
    node: Arc<Node>,
    /// Long operations (verify, resend) running or recently finished.
    jobs: Arc<Jobs>,
    started: Instant,
    listen: String,
}

/// A study as the control API shows it at `now` (by the node's clock): `receiving` until no
/// instance has come for `quiet_ms`, then `arrived`.
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
        state: if s.is_evicted() {
            "evicted".into()
        } else if now - s.last_received_ms >= quiet_ms {
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
        evicted: s.evicted.clone(),
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
    v.hidden = hidden(&v, node.policy.unassigned_visible_ms, now);
    v
}

/// Whether the assign list leaves a study out: unassigned, and first received longer than
/// the visibility window (`unassigned_visible_days`) before `now`.
pub fn hidden(v: &StudyView, visible_ms: i64, now: i64) -> bool {
    v.assignments.is_empty() && now - v.first_received_ms > visible_ms
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

/// A refusal: the HTTP status and what went wrong, for the admin (the web page shows the
/// same message).
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(ErrorBody { error: self.1 })).into_response()
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

fn health_view(index: IndexHealth, checks: Vec<CheckResult>) -> HealthView {
    let mut problems = Vec::new();
    for c in checks.iter().filter(|c| !c.healthy) {
        problems.push(format!("{} check failing: {}", c.check, c.detail));
    }
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
        checks,
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
    let v = health_view(index, c.node.health.results());
    let code = if v.healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(v)).into_response()
}

async fn status(State(c): State<Arc<Ctl>>) -> Result<Json<StatusView>, ApiError> {
    Ok(Json(
        status_view(c.node.clone(), c.started, c.listen.clone()).await,
    ))
}

/// The daemon's status (`GET /v1/status`, the web page's status): counters and ranges of the
/// index, no scan of its records.
pub async fn status_view(node: Arc<Node>, started: Instant, listen: String) -> StatusView {
    let quiet = node.config.quiet_period().as_millis() as i64;
    let node2 = node.clone();
    let index = tokio::task::spawn_blocking(move || node2.store.health())
        .await
        .unwrap_or_default();
    let node2 = node.clone();
    // An index that cannot be read still gets a status: the counters and the index's own
    // health say what is wrong.
    let counts = blocking(move || {
        let node = node2;
        // Counters and a range of the index, no scan of its records: status stays fast at
        // a million instances (docs/BENCHMARKS.md, housekeeping at scale).
        let totals = node.store.totals().map_err(|e| e.to_string())?;
        let now = node.clock.now_ms();
        let receiving = node
            .store
            .studies_received_since(now - quiet + 1)
            .map_err(|e| e.to_string())?;
        let counts = node.store.transfer_counts().map_err(|e| e.to_string())?;
        let parked = (
            counts.parked_instances,
            counts.in_state(TransferState::Parked),
        );
        let outbox = node.store.outbox().map_err(|e| e.to_string())?;
        let last_error = outbox
            .iter()
            .filter(|r| r.last_error.is_some())
            .max_by_key(|r| r.next_attempt_ms)
            .and_then(|r| r.last_error.clone());
        let arrived = totals.studies.saturating_sub(receiving);
        Ok((
            totals,
            receiving,
            arrived,
            parked,
            (outbox.len() as u64, last_error),
        ))
    })
    .await;
    let (index_error, (totals, receiving, arrived, parked, outbox)) = match counts {
        Ok(c) => (None, c),
        Err(ApiError(_, e)) => (Some(e), Default::default()),
    };
    let n = &node;
    let st = &n.stats;
    StatusView {
        version: env!("CARGO_PKG_VERSION").into(),
        ae_title: n.config.ae_title.clone(),
        listen,
        data_dir: n.quarantine.root().display().to_string(),
        uptime_secs: started.elapsed().as_secs(),
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
        disk: n.housekeeping.report(),
        notifications_pending: outbox.0,
        notifications_last_error: outbox.1,
        checks: n.health.results(),
        config_source: Some(n.config_source.clone()),
        selftest: n.selftest.lock().unwrap_or_else(|p| p.into_inner()).clone(),
    }
}

async fn get_evict(State(c): State<Arc<Ctl>>) -> Result<Json<EvictPlan>, ApiError> {
    let node = c.node.clone();
    blocking(move || {
        let s = crate::evict::Settings::from_config(&node.config);
        let (candidates, report) =
            crate::evict::dry_run(&*node.store, &node.quarantine, &s, node.clock.now_ms())?;
        Ok(Json(EvictPlan { candidates, report }))
    })
    .await
}

async fn post_evict(
    State(c): State<Arc<Ctl>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
) -> Result<Json<DiskReport>, ApiError> {
    let node = c.node.clone();
    blocking(move || {
        let actor = actor_of(&peer).ok_or("the caller's credentials are unknown")?;
        let s = crate::evict::Settings::from_config(&node.config);
        let r = node.housekeeping.run_pass(
            &*node.store,
            &node.quarantine,
            &s,
            &actor,
            node.clock.now_ms(),
        )?;
        Ok(Json(r))
    })
    .await
}

/// The values `/metrics` reads at scrape time (`metrics::Sample`): the receive stage's
/// counters, transfers by project and state, destination queues and parked instances from
/// the index (left out when it cannot be read), free disk space, the watchdog's checks.
pub fn metrics_sample(node: &Node) -> crate::metrics::Sample {
    let st = &node.stats;
    let mut s = crate::metrics::Sample {
        instances_stored: st.instances_stored.load(Ordering::Relaxed),
        instances_duplicate: st.instances_duplicate.load(Ordering::Relaxed),
        instances_rejected: st.instances_rejected.load(Ordering::Relaxed),
        instances_out_of_resources: st.instances_out_of_resources.load(Ordering::Relaxed),
        bytes_stored: st.bytes_stored.load(Ordering::Relaxed),
        associations_active: st.associations_active.load(Ordering::Relaxed),
        associations_total: st.associations_total.load(Ordering::Relaxed),
        associations_refused: st.associations_refused.load(Ordering::Relaxed),
        free_bytes: node.quarantine.free_bytes().ok(),
        checks: node
            .health
            .results()
            .into_iter()
            .map(|c| (c.check, c.healthy))
            .collect(),
        ..Default::default()
    };
    let disk = node.housekeeping.report();
    if disk.surveyed_ms > 0 {
        s.disk = Some(crate::metrics::DiskSample {
            held_bytes: disk.held_bytes,
            evictable_bytes: disk.evictable_bytes,
            unsent_bytes: disk.unsent_bytes,
            parked_bytes: disk.parked_bytes,
            studies_evicted: disk.studies_evicted,
            pressure: disk.pressure.is_some(),
        });
    }
    match node.store.outbox() {
        Ok(o) => s.notifications_pending = o.len() as u64,
        Err(e) => tracing::warn!(error = %e, "metrics: outbox not read from the index"),
    }
    for name in node.config.destinations.keys() {
        s.queue_depth.insert(name.clone(), 0);
    }
    // Every configured project in every state, at 0 unless counted below.
    for project in node.config.projects.keys() {
        for state in TransferState::ALL {
            s.transfers
                .insert((project.clone(), state.as_str().to_string()), 0);
        }
    }
    match node.store.transfers() {
        Ok(transfers) => {
            for t in &transfers {
                *s.transfers
                    .entry((t.project.clone(), t.state.as_str().to_string()))
                    .or_default() += 1;
                s.instances_parked += t.parked.len() as u64;
                if t.state != TransferState::Deidentified {
                    continue;
                }
                let Some(p) = node.config.projects.get(&t.project) else {
                    continue;
                };
                for d in &p.destinations {
                    let finished = t
                        .deliveries
                        .iter()
                        .any(|x| &x.destination == d && (x.done || x.failed));
                    if let (false, Some(n)) = (finished, s.queue_depth.get_mut(d)) {
                        *n += 1;
                    }
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "metrics: transfers not read from the index"),
    }
    s
}

/// `GET /metrics`: the Prometheus text exposition.
async fn metrics(State(c): State<Arc<Ctl>>) -> Response {
    metrics_answer(c.node.clone()).await
}

async fn metrics_answer(node: Arc<Node>) -> Response {
    match tokio::task::spawn_blocking(move || {
        crate::metrics::encode(crate::metrics::global(), &metrics_sample(&node))
    })
    .await
    {
        Ok(text) => (
            [(
                axum::http::header::CONTENT_TYPE,
                crate::metrics::CONTENT_TYPE,
            )],
            text,
        )
            .into_response(),
        Err(_) => ApiError(StatusCode::INTERNAL_SERVER_ERROR, "task failed".into()).into_response(),
    }
}

/// Serve `GET /metrics` (only that) over plain HTTP on `listener` (`[metrics] listen`)
/// until `shutdown`.
pub async fn serve_metrics(
    node: Arc<Node>,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new().route(route::METRICS, get(move || metrics_answer(node.clone())));
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

async fn studies(
    State(c): State<Arc<Ctl>>,
    Query(q): Query<StudiesQuery>,
) -> Result<Json<Vec<StudyView>>, ApiError> {
    study_views(c.node.clone(), q.all).await.map(Json)
}

/// Every study with its assignments, newest arrival first; unassigned studies past the assign
/// list's window only with `all` (then marked `hidden`).
pub async fn study_views(node: Arc<Node>, all: bool) -> Result<Vec<StudyView>, ApiError> {
    let mut v = blocking(move || {
        let now = node.clock.now_ms();
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
            .filter(|v| all || !v.hidden)
            .collect::<Vec<_>>())
    })
    .await?;
    v.sort_by_key(|s| std::cmp::Reverse(s.last_received_ms));
    Ok(v)
}

/// What the assign list may be narrowed to (the web page's search): an accession number and
/// a study date (`YYYYMMDD`), each exactly.
#[derive(Debug, Clone, Default)]
pub struct AssignFilter {
    pub accession: Option<String>,
    pub study_date: Option<String>,
}

impl AssignFilter {
    fn is_empty(&self) -> bool {
        self.accession.is_none() && self.study_date.is_none()
    }
    fn matches(&self, s: &StudyRecord) -> bool {
        self.accession
            .as_ref()
            .is_none_or(|a| s.accession_number.trim() == a)
            && self
                .study_date
                .as_ref()
                .is_none_or(|d| s.study_date.trim() == d)
    }
}

/// One page of the assign list.
#[derive(Debug, Clone)]
pub struct StudyPage {
    /// Studies the list (and filter) selects, all pages.
    pub total: u64,
    /// This page (from 1, within `1..=pages`) and the number of pages.
    pub page: usize,
    pub pages: usize,
    pub rows: Vec<StudyView>,
}

/// `total` rows in pages of `rows`: the number of pages and `page` moved into them.
fn page_of(total: u64, page: usize, rows: usize) -> (usize, usize) {
    let pages = usize::try_from(total)
        .unwrap_or(usize::MAX)
        .div_ceil(rows.max(1))
        .max(1);
    (page.clamp(1, pages), pages)
}

/// Page `page` (from 1; past the end: the last) of `rows` rows of the assign list: studies
/// with no assignment, never evicted, first received within `unassigned_visible_days`,
/// latest arrival first (the unassigned, not hidden studies of [`study_views`]). Unfiltered,
/// only the page's studies are read ([`crate::index::Store::unassigned_studies`]); a filter
/// reads the list's records.
pub async fn assign_page(
    node: Arc<Node>,
    filter: AssignFilter,
    page: usize,
    rows: usize,
) -> Result<StudyPage, ApiError> {
    blocking(move || {
        let now = node.clock.now_ms();
        let since = now.saturating_sub(node.policy.unassigned_visible_ms);
        let quiet = node.config.quiet_period().as_millis() as i64;
        let rows = rows.max(1);
        let (total, page, pages, list) = if filter.is_empty() {
            let (total, _) = node
                .store
                .unassigned_studies(since, 0, Some(0))
                .map_err(|e| e.to_string())?;
            let (page, pages) = page_of(total, page, rows);
            let (_, list) = node
                .store
                .unassigned_studies(since, (page - 1) * rows, Some(rows))
                .map_err(|e| e.to_string())?;
            (total, page, pages, list)
        } else {
            let (_, mut all) = node
                .store
                .unassigned_studies(since, 0, None)
                .map_err(|e| e.to_string())?;
            all.retain(|s| filter.matches(s));
            let total = all.len() as u64;
            let (page, pages) = page_of(total, page, rows);
            let list = all.into_iter().skip((page - 1) * rows).take(rows).collect();
            (total, page, pages, list)
        };
        Ok(StudyPage {
            total,
            page,
            pages,
            rows: list.iter().map(|s| study_view(s, quiet, now)).collect(),
        })
    })
    .await
}

/// One page of a project's transfers, newest first.
#[derive(Debug, Clone)]
pub struct TransferPage {
    /// Transfers the filter selects, by state (all pages).
    pub by_state: std::collections::BTreeMap<TransferState, u64>,
    /// Their number.
    pub total: u64,
    /// This page (from 1, within `1..=pages`) and the number of pages.
    pub page: usize,
    pub pages: usize,
    pub rows: Vec<TransferRecord>,
}

/// Page `page` (from 1; past the end: the last) of `rows` rows of `project`'s transfers that
/// `filter` selects. Reads the counts and the page's records only
/// ([`crate::index::Store::project_transfers`]).
pub async fn transfer_page(
    node: Arc<Node>,
    project: String,
    filter: crate::index::TransferFilter,
    page: usize,
    rows: usize,
) -> Result<TransferPage, ApiError> {
    blocking(move || {
        let by_state = node
            .store
            .project_transfer_counts(&project, &filter)
            .map_err(|e| e.to_string())?;
        let total: u64 = by_state.values().sum();
        let rows = rows.max(1);
        let (page, pages) = page_of(total, page, rows);
        let list = node
            .store
            .project_transfers(&project, &filter, (page - 1) * rows, Some(rows))
            .map_err(|e| e.to_string())?;
        Ok(TransferPage {
            by_state,
            total,
            page,
            pages,
            rows: list,
        })
    })
    .await
}

/// Every transfer of `project` that `filter` selects, newest first (exports).
pub async fn project_transfers(
    node: Arc<Node>,
    project: String,
    filter: crate::index::TransferFilter,
) -> Result<Vec<TransferRecord>, ApiError> {
    blocking(move || {
        node.store
            .project_transfers(&project, &filter, 0, None)
            .map_err(|e| e.to_string())
    })
    .await
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
            study: full_study_view(&node, &s, &assignments, &states, node.clock.now_ms()),
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
    // Evicted ones keep a record (for recovery); their files are gone.
    v.retain(|r| r.evicted_ms.is_none());
    v.sort_by_key(|r| std::cmp::Reverse(r.received_ms));
    Ok(Json(v))
}

async fn get_projects(State(c): State<Arc<Ctl>>) -> Result<Json<Vec<ProjectView>>, ApiError> {
    let node = c.node.clone();
    Ok(Json(
        blocking(move || {
            let participants = node.store.participants().map_err(|e| e.to_string())?;
            let transfers = node.store.transfers().map_err(|e| e.to_string())?;
            let today = assign::utc_date(node.clock.now_ms());
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

/// Each configured destination's last verification, last problem and queue (transfers
/// de-identified and not yet finished there), from the transfers given.
pub fn destination_views(node: &Node, transfers: &[TransferRecord]) -> Vec<DestinationView> {
    let mut out: Vec<DestinationView> = node
        .config
        .destinations
        .keys()
        .map(|name| DestinationView {
            name: name.clone(),
            ..Default::default()
        })
        .collect();
    let mut error_at: Vec<i64> = vec![i64::MIN; out.len()];
    for t in transfers {
        for d in &t.deliveries {
            let Some(i) = out.iter().position(|x| x.name == d.destination) else {
                continue;
            };
            let v = &mut out[i];
            if let Some(ms) = d.verified_ms {
                v.last_verified_ms = Some(v.last_verified_ms.map_or(ms, |x| x.max(ms)));
            }
            if let Some(r) = &d.reason {
                if t.state_ms > error_at[i] {
                    error_at[i] = t.state_ms;
                    v.last_error = Some(r.clone());
                }
            }
        }
        if t.state == TransferState::Deidentified {
            if let Some(p) = node.config.projects.get(&t.project) {
                for name in &p.destinations {
                    let finished = t
                        .deliveries
                        .iter()
                        .any(|x| &x.destination == name && (x.done || x.failed));
                    if let (false, Some(v)) = (finished, out.iter_mut().find(|x| &x.name == name)) {
                        v.queue += 1;
                    }
                }
            }
        }
    }
    out
}

/// A change to a local web account.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountChange {
    Grants(Grants),
    /// A new Argon2id hash (made by the caller from a checked password).
    PasswordHash(String),
    Disable,
    Enable,
}

/// Add a local web account, audited in the same transaction; blocking. `first`: only when no
/// local account exists yet (the web page's one-time setup link).
pub fn account_add(
    node: &Node,
    actor: &str,
    name: &str,
    password_hash: String,
    grants: Grants,
    first: bool,
) -> Result<(), String> {
    if !crate::config::valid_account_name(name) {
        return Err(format!(
            "`{name}` is not a valid account name (1 to 64 letters, digits, `._-@`)"
        ));
    }
    if !password_hash.starts_with("$argon2id$") {
        return Err("the password hash must be Argon2id".into());
    }
    if node.config.web.accounts.iter().any(|a| a.name == name) {
        return Err(format!("`{name}` is an account of the configuration"));
    }
    for p in grants.roles.keys() {
        if !node.config.projects.contains_key(p) {
            return Err(format!("project {p} is not configured"));
        }
    }
    if first && !node.store.accounts().map_err(|e| e.to_string())?.is_empty() {
        return Err("an account exists already".into());
    }
    let now = node.clock.now_ms();
    let mut refusal = None;
    node.store
        .write_assign(&mut |t| {
            refusal = None;
            if t.account(name)?.is_some() {
                refusal = Some(format!("account `{name}` exists already"));
                return Ok(());
            }
            t.put_account(&AccountRecord {
                name: name.to_string(),
                password_hash: password_hash.clone(),
                grants: grants.clone(),
                disabled: false,
                created_ms: now,
                changed_ms: now,
            })?;
            t.append_audit(AuditRecord::admin(
                actor,
                "account_add",
                now,
                format!("{name}: {}", grants.describe()),
            ))?;
            Ok(())
        })
        .map_err(|e| e.to_string())?;
    match refusal {
        Some(r) => Err(r),
        None => {
            tracing::info!(account = %name, actor = %actor, "web account added");
            Ok(())
        }
    }
}

/// Change a local web account, audited in the same transaction; blocking. Returns what was
/// done, in words.
pub fn account_change(
    node: &Node,
    actor: &str,
    name: &str,
    change: AccountChange,
) -> Result<String, String> {
    if let AccountChange::Grants(g) = &change {
        for p in g.roles.keys() {
            if !node.config.projects.contains_key(p) {
                return Err(format!("project {p} is not configured"));
            }
        }
    }
    if let AccountChange::PasswordHash(h) = &change {
        if !h.starts_with("$argon2id$") {
            return Err("the password hash must be Argon2id".into());
        }
    }
    let now = node.clock.now_ms();
    let mut result: Result<String, String> = Err("no result".into());
    node.store
        .write_assign(&mut |t| {
            let Some(mut a) = t.account(name)? else {
                result = Err(if node.config.web.accounts.iter().any(|a| a.name == name) {
                    format!("`{name}` is an account of the configuration: change it there")
                } else {
                    format!("no local account `{name}`")
                });
                return Ok(());
            };
            let (action, detail) = match &change {
                AccountChange::Grants(g) => {
                    a.grants = g.clone();
                    ("account_roles", format!("{name}: {}", g.describe()))
                }
                AccountChange::PasswordHash(h) => {
                    a.password_hash = h.clone();
                    ("account_password", format!("{name}: password set"))
                }
                AccountChange::Disable => {
                    a.disabled = true;
                    ("account_disable", format!("{name} disabled"))
                }
                AccountChange::Enable => {
                    a.disabled = false;
                    ("account_enable", format!("{name} enabled"))
                }
            };
            a.changed_ms = now;
            t.put_account(&a)?;
            t.append_audit(AuditRecord::admin(actor, action, now, detail.clone()))?;
            result = Ok(detail);
            Ok(())
        })
        .map_err(|e| e.to_string())?;
    if let Ok(d) = &result {
        tracing::info!(actor = %actor, "web account changed: {d}");
    }
    result
}

/// A local account as `GET /v1/users` shows it (no hash).
fn local_user_view(a: &AccountRecord) -> UserView {
    UserView {
        name: a.name.clone(),
        source: "local".into(),
        grants: a.grants.clone(),
        disabled: a.disabled,
        created_ms: Some(a.created_ms),
        changed_ms: Some(a.changed_ms),
    }
}

/// Every web account: those of the configuration (`[[web.accounts]]`) in their order, then
/// the local ones by name; blocking. No password hash leaves this function.
pub fn user_views(node: &Node) -> Result<Vec<UserView>, String> {
    let mut v: Vec<UserView> = node
        .config
        .web
        .accounts
        .iter()
        .map(|a| UserView {
            name: a.name.clone(),
            source: "config".into(),
            grants: Grants {
                admin: a.admin,
                roles: a.roles.clone(),
            },
            disabled: a.disabled,
            created_ms: None,
            changed_ms: None,
        })
        .collect();
    let mut local = node.store.accounts().map_err(|e| e.to_string())?;
    local.sort_by(|a, b| a.name.cmp(&b.name));
    v.extend(local.iter().map(local_user_view));
    Ok(v)
}

async fn get_users(State(c): State<Arc<Ctl>>) -> Result<Json<Vec<UserView>>, ApiError> {
    let node = c.node.clone();
    Ok(Json(blocking(move || user_views(&node)).await?))
}

/// Refuse grants naming a project that is not configured (422).
fn check_grants(node: &Node, g: &Grants) -> Result<(), ApiError> {
    match g
        .roles
        .keys()
        .find(|p| !node.config.projects.contains_key(*p))
    {
        Some(p) => Err(ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("project {p} is not configured"),
        )),
        None => Ok(()),
    }
}

/// Refuse a name of `[[web.accounts]]`: such an account is changed in the configuration.
fn not_configured_account(node: &Node, name: &str) -> Result<(), ApiError> {
    if node.config.web.accounts.iter().any(|a| a.name == name) {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!(
                "`{name}` is an account of the configuration ([[web.accounts]]): change it there"
            ),
        ));
    }
    Ok(())
}

/// The local account `name` as it is now, for an answer (500 if it vanished meanwhile).
fn user_outcome(node: &Node, name: &str, done: String) -> Result<UserOutcome, ApiError> {
    let internal = |m: String| ApiError(StatusCode::INTERNAL_SERVER_ERROR, m);
    let a = node
        .store
        .account_named(name)
        .map_err(|e| internal(e.to_string()))?
        .ok_or_else(|| internal(format!("account `{name}` is gone")))?;
    Ok(UserOutcome {
        user: local_user_view(&a),
        done,
    })
}

/// `POST /v1/users`: check the name, the grants and the password, hash the password
/// (Argon2id, on a blocking thread) and add the account, audited with the caller as actor.
async fn post_users(
    State(c): State<Arc<Ctl>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Json(b): Json<UserAddBody>,
) -> Result<(StatusCode, Json<UserOutcome>), ApiError> {
    let node = c.node.clone();
    if !crate::config::valid_account_name(&b.name) {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!(
                "`{}` is not a valid account name (1 to 64 letters, digits, `._-@`)",
                b.name
            ),
        ));
    }
    not_configured_account(&node, &b.name)?;
    check_grants(&node, &b.grants)?;
    crate::password::check_new_password(&b.name, &b.password)
        .map_err(|m| ApiError(StatusCode::UNPROCESSABLE_ENTITY, m))?;
    let r = tokio::task::spawn_blocking(move || -> Result<UserOutcome, ApiError> {
        let actor = actor_of(&peer).ok_or_else(no_actor)?;
        let internal = |m: String| ApiError(StatusCode::INTERNAL_SERVER_ERROR, m);
        let exists = |name: &str| {
            ApiError(
                StatusCode::CONFLICT,
                format!("account `{name}` exists already"),
            )
        };
        if node
            .store
            .account_named(&b.name)
            .map_err(|e| internal(e.to_string()))?
            .is_some()
        {
            return Err(exists(&b.name));
        }
        let hash = crate::password::hash_password(&b.password).map_err(internal)?;
        let done = format!("{} added: {}", b.name, b.grants.describe());
        account_add(&node, &actor, &b.name, hash, b.grants, false).map_err(|e| {
            // Added by someone else since the check above, else the index failed.
            match node.store.account_named(&b.name) {
                Ok(Some(_)) => exists(&b.name),
                _ => internal(e),
            }
        })?;
        user_outcome(&node, &b.name, done)
    })
    .await
    .map_err(|_| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "task failed".into()))??;
    Ok((StatusCode::CREATED, Json(r)))
}

/// `POST /v1/users/NAME`: change a local account's roles or password, or disable or enable
/// it; audited with the caller as actor. A password is checked and hashed here.
async fn post_user(
    State(c): State<Arc<Ctl>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    UrlPath(name): UrlPath<String>,
    Json(b): Json<UserChange>,
) -> Result<Json<UserOutcome>, ApiError> {
    let node = c.node.clone();
    not_configured_account(&node, &name)?;
    match &b {
        UserChange::Roles { grants } => check_grants(&node, grants)?,
        UserChange::Password { password } => {
            crate::password::check_new_password(&name, password)
                .map_err(|m| ApiError(StatusCode::UNPROCESSABLE_ENTITY, m))?
        }
        UserChange::Disable | UserChange::Enable => {}
    }
    let r = tokio::task::spawn_blocking(move || -> Result<UserOutcome, ApiError> {
        let actor = actor_of(&peer).ok_or_else(no_actor)?;
        let internal = |m: String| ApiError(StatusCode::INTERNAL_SERVER_ERROR, m);
        let unknown = || ApiError(StatusCode::NOT_FOUND, format!("no local account `{name}`"));
        if !crate::config::valid_account_name(&name)
            || node
                .store
                .account_named(&name)
                .map_err(|e| internal(e.to_string()))?
                .is_none()
        {
            return Err(unknown());
        }
        let change = match b {
            UserChange::Roles { grants } => AccountChange::Grants(grants),
            UserChange::Password { password } => AccountChange::PasswordHash(
                crate::password::hash_password(&password).map_err(internal)?,
            ),
            UserChange::Disable => AccountChange::Disable,
            UserChange::Enable => AccountChange::Enable,
        };
        let done = account_change(&node, &actor, &name, change).map_err(|e| {
            match node.store.account_named(&name) {
                Ok(None) => unknown(),
                _ => internal(e),
            }
        })?;
        user_outcome(&node, &name, done)
    })
    .await
    .map_err(|_| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "task failed".into()))??;
    Ok(Json(r))
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
pub fn resolve_study(node: &Node, study: &str) -> Result<String, ApiError> {
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
        assign_as(&node, &actor, &b)
    })
    .await
    .map_err(|_| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "task failed".into()))??;
    Ok(Json(r))
}

/// Assign a study by hand (or correct its assignment) as `actor`, audited; blocking.
pub fn assign_as(node: &Node, actor: &str, b: &AssignBody) -> Result<AssignOutcome, ApiError> {
    {
        let key = resolve_study(node, &b.study)?;
        let mut result: Option<Result<AssignOutcome, AssignError>> = None;
        node.store
            .write_assign(&mut |t| {
                let req = Request {
                    study_key: &key,
                    project: &b.project,
                    participant: &b.participant,
                    event: &b.event,
                    via: Via::Manual,
                    actor,
                    derived_from: None,
                    allow_other_patient: b.allow_other_patient,
                };
                match assign::assign_audited(t, &node.policy, &req, node.clock.now_ms(), false) {
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
            None => Err(ApiError(
                StatusCode::INTERNAL_SERVER_ERROR,
                "no result".into(),
            )),
        }
    }
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
        import_coupling_as(&node, &actor, &body, q.replace)
    })
    .await;
    match res {
        Ok(r) if r.errors.is_empty() => Json(r).into_response(),
        Ok(r) => (StatusCode::UNPROCESSABLE_ENTITY, Json::<ImportReport>(r)).into_response(),
        Err(e) => e.into_response(),
    }
}

/// Import a coupling list as `actor` (all or nothing; the report lists bad lines); blocking.
pub fn import_coupling_as(
    node: &Node,
    actor: &str,
    csv: &str,
    replace: bool,
) -> Result<ImportReport, String> {
    let mut report = None;
    node.store
        .write_assign(&mut |t| {
            report = Some(coupling::import(
                t,
                &node.policy,
                csv,
                actor,
                replace,
                node.clock.now_ms(),
            )?);
            Ok(())
        })
        .map_err(|e| e.to_string())?;
    let r = report.ok_or_else(|| "no result".to_string())?;
    if r.errors.is_empty() {
        tracing::info!(import = %r.import_id, rows = r.rows, assigned = r.assigned.len(), "coupling list imported");
        node.pipeline_wake.notify_one();
    } else {
        tracing::warn!(
            bad_lines = r.errors.len(),
            "coupling list refused, nothing loaded"
        );
    }
    Ok(r)
}

async fn get_coupling(State(c): State<Arc<Ctl>>) -> Result<Json<Vec<CouplingEntry>>, ApiError> {
    let node = c.node.clone();
    Ok(Json(
        blocking(move || node.store.couplings().map_err(|e| e.to_string())).await?,
    ))
}

fn day_start_ms(d: time::Date) -> i64 {
    (d.midnight().assume_utc().unix_timestamp_nanos() / 1_000_000) as i64
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
        if let Some(k) = &key {
            let st = node
                .store
                .study(k)
                .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
            if let Some(e) = st
                .as_ref()
                .filter(|s| s.is_evicted())
                .and_then(|s| s.evicted.as_ref())
            {
                return Err(ApiError(StatusCode::CONFLICT, evicted_message(k, e)));
            }
        }
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
                node.clock.now_ms(),
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

/// Why a study cannot be sent again from fiona: its originals are gone.
pub fn evicted_message(key: &str, e: &crate::model::Eviction) -> String {
    format!(
        "study {key}: its originals were evicted at {} ({}, {} instances); send the study again from the PACS: its assignments apply when it arrives",
        crate::clock::iso_ms(e.at_ms),
        e.reason,
        e.instances
    )
}

/// The answer to a `POST` that starts a job: 202 with the job, or 503 when too many run.
fn started(
    job: Result<JobView, crate::jobs::JobError>,
) -> Result<(StatusCode, Json<JobView>), ApiError> {
    job.map(|v| (StatusCode::ACCEPTED, Json(v)))
        .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))
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

/// A project's review inventory: what left the box. A configured project nothing has left
/// yet has an empty one; a project that is neither configured nor has an inventory is
/// unknown (404). The answer carries de-identified values: it is never logged.
async fn get_review(
    State(c): State<Arc<Ctl>>,
    Query(q): Query<ReviewQuery>,
) -> Result<Json<ReviewInventory>, ApiError> {
    let Some(project) = q.project.filter(|p| !p.is_empty()) else {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "which project? (`?project=NAME`)".into(),
        ));
    };
    let node = c.node.clone();
    let p = project.clone();
    let inv = blocking(move || node.store.review(&p).map_err(|e| e.to_string())).await?;
    match inv {
        Some(inv) => Ok(Json(inv)),
        None if c.node.config.projects.contains_key(&project) => {
            Ok(Json(ReviewInventory::empty(&project)))
        }
        None => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("unknown project {project} (see `fiona projects`)"),
        )),
    }
}

/// Bind the control socket (`run/control.sock`, 0600 in a 0700 directory), replacing a
/// leftover one. Needs a tokio runtime.
pub fn bind(node: &Node) -> std::io::Result<tokio::net::UnixListener> {
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
    Ok(listener)
}

/// `POST /v1/bundle`: verify and switch to a bundle, then restart on it (`provision`).
async fn post_bundle(
    State(c): State<Arc<Ctl>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    body: axum::body::Bytes,
) -> Response {
    let node = c.node.clone();
    let res = tokio::task::spawn_blocking(move || {
        let actor = actor_of(&peer).unwrap_or_else(|| "unknown".into());
        crate::provision::apply(&node, &body, &actor)
    })
    .await;
    match res {
        Ok(Ok(a)) => {
            crate::provision::restart_soon(&c.node, Duration::from_millis(300));
            Json(a).into_response()
        }
        Ok(Err(r)) => ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("refused ({}): {r}", r.code()),
        )
        .into_response(),
        Err(_) => ApiError(StatusCode::INTERNAL_SERVER_ERROR, "task failed".into()).into_response(),
    }
}

async fn get_bundle(
    State(c): State<Arc<Ctl>>,
) -> Result<Json<crate::provision::BundleStatus>, ApiError> {
    let node = c.node.clone();
    blocking(move || Ok(crate::provision::status(&node)))
        .await
        .map(Json)
}

/// `POST /v1/selftest`: run every check now; the report is kept for `GET /v1/status`.
async fn post_selftest(State(c): State<Arc<Ctl>>) -> Result<Json<SelftestReport>, ApiError> {
    let addr: std::net::SocketAddr = c
        .listen
        .parse()
        .map_err(|_| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "listener address".into()))?;
    let report = crate::selftest::run(c.node.clone(), addr).await;
    *c.node.selftest.lock().unwrap_or_else(|p| p.into_inner()) = Some(report.clone());
    Ok(Json(report))
}

/// Serve the control API on the socket [`bind`] made until `shutdown` fires.
pub async fn serve_on(
    listener: tokio::net::UnixListener,
    node: Arc<Node>,
    listen: String,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let ctl = Arc::new(Ctl {
        node,
        jobs: Arc::default(),
        started: Instant::now(),
        listen,
    });
    let app = Router::new()
        .route(route::STATUS, get(status))
        .route(route::HEALTH, get(health))
        .route(route::STUDIES, get(studies))
        .route(route::STUDY, get(study))
        .route(route::STUDY_INSTANCES, get(instances))
        .route(route::REJECTED, get(rejected))
        .route(route::ASSIGN, post(post_assign))
        .route(
            route::COUPLING,
            post(post_coupling)
                .get(get_coupling)
                .layer(axum::extract::DefaultBodyLimit::max(COUPLING_MAX_BYTES)),
        )
        .route(route::TRANSFERS, get(get_transfers))
        .route(route::RESEND, post(post_resend))
        .route(route::VERIFY, post(post_verify))
        .route(route::JOBS, get(get_jobs))
        .route(route::JOB, get(get_job))
        .route(route::AUDIT, get(get_audit))
        .route(route::REVIEW, get(get_review))
        .route(route::PROJECTS, get(get_projects))
        .route(route::EVICT, get(get_evict).post(post_evict))
        .route(route::USERS, get(get_users).post(post_users))
        .route(route::USER, post(post_user))
        .route(
            route::BUNDLE,
            post(post_bundle)
                .get(get_bundle)
                .layer(axum::extract::DefaultBodyLimit::max(
                    crate::bundle::format::MAX_BUNDLE_BYTES as usize,
                )),
        )
        .route(route::SELFTEST, post(post_selftest))
        .route(route::METRICS, get(metrics))
        .with_state(ctl);
    axum::serve(listener, app.into_make_service_with_connect_info::<Peer>())
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Origin;

    const T0: i64 = 1_800_000_000_000;

    fn study() -> StudyRecord {
        StudyRecord {
            key: "S1".into(),
            study_instance_uid: "2.25.1".into(),
            accession_number: String::new(),
            study_date: String::new(),
            study_time: String::new(),
            study_description: String::new(),
            modalities: vec![],
            patient_id: String::new(),
            patient_name: String::new(),
            origin: Origin::default(),
            first_received_ms: T0,
            last_received_ms: T0 + 1_000,
            series_count: 1,
            instance_count: 2,
            bytes: 10,
            evicted: None,
        }
    }

    /// The quiet period and the visibility window are decided by the `now` the node's clock
    /// gives, not by the wall clock.
    #[test]
    fn quiet_period_and_visibility_window_follow_the_clock() {
        let s = study();
        let quiet = 5_000;
        assert_eq!(
            study_view(&s, quiet, T0 + 1_000 + quiet - 1).state,
            "receiving"
        );
        assert_eq!(study_view(&s, quiet, T0 + 1_000 + quiet).state, "arrived");
        let day = 86_400_000;
        let v = study_view(&s, quiet, T0 + 7 * day);
        assert!(
            !hidden(&v, 7 * day, T0 + 7 * day),
            "visible through the window"
        );
        assert!(hidden(&v, 7 * day, T0 + 7 * day + 1), "hidden after it");
        let mut assigned = v.clone();
        assigned.assignments.push(AssignmentView {
            project: "PROJ1".into(),
            participant: "PROJ1-1".into(),
            event: "baseline".into(),
            via: "manual".into(),
            actor: "test".into(),
            assigned_ms: T0,
            research_study_uid: "2.25.9".into(),
            derived_from: None,
            state: "requested".into(),
            transfers: vec![],
        });
        assert!(
            !hidden(&assigned, 7 * day, T0 + 30 * day),
            "assigned studies stay"
        );
    }
}
