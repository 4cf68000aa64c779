//! The control API's client, for the admin commands: hyper's HTTP/1.1 client over the
//! daemon's Unix socket ([`api::socket_path`]), one connection per request, on a
//! current-thread tokio runtime of its own (the commands are synchronous).
//!
//! Typed: a [`Call`] names the route, its body and the type of its answer (the [`api`] types
//! the server serialises), and [`Client::send`] parses the answer into that type;
//! [`Call::json`] turns any call into one that keeps the answer as the JSON the server sent
//! (`--json`). The constructors in [`call`] are the only place where the client spells a
//! route.
//!
//! Bounds: each request is answered in full within [`CLIENT_TIMEOUT`] or fails with
//! [`ClientError::Timeout`]. Every route answers well within it; operations that grow with a
//! project are jobs, which [`Client::run_job`] follows with `GET`s that wait at most
//! [`JOB_POLL`] each.

use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{ACCEPT, CONNECTION, CONTENT_TYPE, HOST};
use hyper::{Method, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::api::{self, ErrorBody, JobState, JobView};

/// How long the client waits for a whole answer on the control socket before giving up.
/// Every route answers well within it: long operations are jobs.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// How long one `GET` of a job waits for it to finish: progress is reported at this pace.
pub const JOB_POLL: Duration = Duration::from_secs(1);

/// Errors of the control client, phrased for the admin at the console.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error("cannot reach the fiona daemon at {path}: {source} (is `fiona serve` running with this data directory?)")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("control socket: {0}")]
    Http(#[from] hyper::Error),
    #[error(
        "the fiona daemon is temporarily unavailable: no answer on the control socket within {} s",
        CLIENT_TIMEOUT.as_secs()
    )]
    Timeout,
    /// The daemon refused: its status and the `error` of its [`ErrorBody`] (else the body).
    #[error("daemon answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("malformed answer from daemon: {0}")]
    Malformed(String),
    #[error("invalid request: {0}")]
    Request(#[from] hyper::http::Error),
    /// A job ran and failed: its error.
    #[error("{0}")]
    JobFailed(String),
    #[error("cannot start the control client: {0}")]
    Runtime(std::io::Error),
}

/// One request of the control API and the type of its answer.
#[derive(Debug, Clone)]
pub struct Call<A> {
    method: Method,
    /// Path and query.
    target: String,
    /// Content type and bytes.
    body: Option<(&'static str, Vec<u8>)>,
    /// A status besides 2xx whose body is still an answer (503 from an unhealthy daemon's
    /// health check, 422 for a coupling list with bad lines).
    also: Option<StatusCode>,
    answer: PhantomData<fn() -> A>,
}

impl<A> Call<A> {
    fn get(target: String) -> Self {
        Call {
            method: Method::GET,
            target,
            body: None,
            also: None,
            answer: PhantomData,
        }
    }

    fn post(target: String, content_type: &'static str, body: Vec<u8>) -> Self {
        Call {
            method: Method::POST,
            body: Some((content_type, body)),
            ..Call::get(target)
        }
    }

    fn also(self, status: StatusCode) -> Self {
        Call {
            also: Some(status),
            ..self
        }
    }

    /// The same request, its answer kept as the JSON the server sent.
    pub fn json(self) -> Call<serde_json::Value> {
        Call {
            method: self.method,
            target: self.target,
            body: self.body,
            also: self.also,
            answer: PhantomData,
        }
    }
}

/// A request that starts a job, and the type of the job's result.
#[derive(Debug, Clone)]
pub struct Job<R> {
    start: Call<JobView>,
    result: PhantomData<fn() -> R>,
}

impl<R> Job<R> {
    fn new(start: Call<JobView>) -> Self {
        Job {
            start,
            result: PhantomData,
        }
    }

    /// The same job, its result kept as the JSON the server sent.
    pub fn json(self) -> Job<serde_json::Value> {
        Job::new(self.start)
    }
}

/// The requests of the control API (see the route table in [`api`]).
pub mod call {
    use hyper::StatusCode;
    use serde::Serialize;

    use super::{Call, Job};
    use crate::control::api::{
        route, AssignBody, AssignOutcome, AuditRecord, CouplingEntry, CouplingQuery, HealthView,
        ImportReport, InstanceRecord, JobQuery, JobView, ProjectView, RejectRecord, ResendBody,
        ResendOutcome, ReviewInventory, ReviewQuery, StatusView, StudiesQuery, StudyDetail,
        StudyView, TransferQuery, TransferRecord, UserAddBody, UserChange, UserOutcome, UserView,
        VerifyBody, VerifyRow,
    };

    /// `path?query`, or `path` when the query is empty.
    fn with_query(path: &str, query: &impl Serialize) -> String {
        let q = super::encode(serde_urlencoded::to_string(query));
        if q.is_empty() {
            path.to_string()
        } else {
            format!("{path}?{q}")
        }
    }

    pub fn status() -> Call<StatusView> {
        Call::get(route::STATUS.into())
    }

    /// The health view, also when the daemon answers 503 (unhealthy).
    pub fn health() -> Call<HealthView> {
        Call::get(route::HEALTH.into()).also(StatusCode::SERVICE_UNAVAILABLE)
    }

    pub fn studies(all: bool) -> Call<Vec<StudyView>> {
        Call::get(with_query(route::STUDIES, &StudiesQuery { all }))
    }

    /// `key` must be a study key (letters and digits), as `fiona studies` prints it.
    pub fn study(key: &str) -> Call<StudyDetail> {
        Call::get(route::STUDY.replace("{key}", key))
    }

    /// `key` must be a study key (letters and digits), as `fiona studies` prints it.
    pub fn instances(key: &str) -> Call<Vec<InstanceRecord>> {
        Call::get(route::STUDY_INSTANCES.replace("{key}", key))
    }

    pub fn rejected() -> Call<Vec<RejectRecord>> {
        Call::get(route::REJECTED.into())
    }

    pub fn assign(body: &AssignBody) -> Call<AssignOutcome> {
        Call::post(
            route::ASSIGN.into(),
            "application/json",
            super::json_body(body),
        )
    }

    /// Import a coupling list (CSV). Its report comes back also when lines are bad (422).
    pub fn import_coupling(csv: Vec<u8>, replace: bool) -> Call<ImportReport> {
        Call::post(
            with_query(route::COUPLING, &CouplingQuery { replace }),
            "text/csv",
            csv,
        )
        .also(StatusCode::UNPROCESSABLE_ENTITY)
    }

    /// Offer a provisioning bundle (the tar file's bytes).
    pub fn apply_bundle(bytes: Vec<u8>) -> Call<crate::control::api::Accepted> {
        Call::post(route::BUNDLE.into(), "application/x-tar", bytes)
    }

    pub fn bundle_status() -> Call<crate::control::api::BundleStatus> {
        Call::get(route::BUNDLE.into())
    }

    pub fn selftest() -> Call<crate::control::api::SelftestReport> {
        Call::post(route::SELFTEST.into(), "application/json", b"{}".to_vec())
    }

    pub fn couplings() -> Call<Vec<CouplingEntry>> {
        Call::get(route::COUPLING.into())
    }

    pub fn transfers(query: &TransferQuery) -> Call<Vec<TransferRecord>> {
        Call::get(with_query(route::TRANSFERS, query))
    }

    pub fn resend(body: &ResendBody) -> Job<ResendOutcome> {
        Job::new(Call::post(
            route::RESEND.into(),
            "application/json",
            super::json_body(body),
        ))
    }

    pub fn verify(body: &VerifyBody) -> Job<Vec<VerifyRow>> {
        Job::new(Call::post(
            route::VERIFY.into(),
            "application/json",
            super::json_body(body),
        ))
    }

    /// A job, once it has finished or `wait` has passed.
    pub fn job(id: &str, wait: std::time::Duration) -> Call<JobView> {
        let query = JobQuery {
            wait_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
        };
        Call::get(with_query(&route::JOB.replace("{id}", id), &query))
    }

    pub fn audit() -> Call<Vec<AuditRecord>> {
        Call::get(route::AUDIT.into())
    }

    /// A project's review inventory: what left the box.
    pub fn review(project: &str) -> Call<ReviewInventory> {
        let query = ReviewQuery {
            project: Some(project.to_string()),
        };
        Call::get(with_query(route::REVIEW, &query))
    }

    pub fn projects() -> Call<Vec<ProjectView>> {
        Call::get(route::PROJECTS.into())
    }

    /// What a housekeeping pass would evict now, and why.
    pub fn evict_plan() -> Call<crate::control::api::EvictPlan> {
        Call::get(route::EVICT.into())
    }

    /// Run a housekeeping pass now.
    pub fn evict() -> Call<crate::control::api::DiskReport> {
        Call::post(route::EVICT.into(), "application/json", b"{}".to_vec())
    }

    /// Web accounts, local and from the configuration.
    pub fn users() -> Call<Vec<UserView>> {
        Call::get(route::USERS.into())
    }

    /// Add a local web account (the daemon checks and hashes the password).
    pub fn user_add(body: &UserAddBody) -> Call<UserOutcome> {
        Call::post(
            route::USERS.into(),
            "application/json",
            super::json_body(body),
        )
    }

    /// Change a local web account. `name` must be a valid account name (letters, digits,
    /// `._-@`), which needs no escaping in a path.
    pub fn user_change(name: &str, change: &UserChange) -> Call<UserOutcome> {
        Call::post(
            route::USER.replace("{name}", name),
            "application/json",
            super::json_body(change),
        )
    }
}

/// A request body as JSON.
fn json_body(body: &impl Serialize) -> Vec<u8> {
    // The request bodies are derived structs of strings and booleans: serde_json fails only
    // on maps with non-string keys or a `Serialize` that reports an error.
    #[allow(clippy::expect_used)]
    serde_json::to_vec(body).expect("request bodies serialise")
}

/// A query string (see [`json_body`]: the queries are derived structs of strings, booleans
/// and numbers, which always encode).
fn encode(query: Result<String, serde_urlencoded::ser::Error>) -> String {
    #[allow(clippy::expect_used)]
    query.expect("queries encode")
}

/// A client of one daemon's control socket.
#[derive(Debug)]
pub struct Client {
    socket: PathBuf,
    /// Runs the requests; current-thread, so the client starts no threads.
    rt: tokio::runtime::Runtime,
}

impl Client {
    /// A client of the daemon whose data directory is `data_dir` (nothing is connected yet).
    pub fn new(data_dir: &Path) -> Result<Client, ClientError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(ClientError::Runtime)?;
        Ok(Client {
            socket: api::socket_path(data_dir),
            rt,
        })
    }

    /// Make the request and parse its answer. A non-2xx status (other than the call's
    /// expected one) is a [`ClientError::Status`] carrying the server's `error`.
    pub fn send<A: DeserializeOwned>(&self, call: &Call<A>) -> Result<A, ClientError> {
        let body = self.rt.block_on(async {
            tokio::time::timeout(CLIENT_TIMEOUT, self.exchange(call))
                .await
                .unwrap_or(Err(ClientError::Timeout))
        })?;
        serde_json::from_slice(&body).map_err(|e| ClientError::Malformed(e.to_string()))
    }

    /// Start a job, then follow it until it ends, calling `progress` whenever its count
    /// changes; returns its result. A refusal of the start is a [`ClientError::Status`]; a
    /// job that failed is a [`ClientError::JobFailed`].
    pub fn run_job<R: DeserializeOwned>(
        &self,
        job: &Job<R>,
        mut progress: impl FnMut(&JobView),
    ) -> Result<R, ClientError> {
        let mut view = self.send(&job.start)?;
        let mut shown = None;
        loop {
            if shown != Some((view.done, view.total)) {
                progress(&view);
                shown = Some((view.done, view.total));
            }
            match view.state {
                JobState::Done => {
                    let result = view.result.unwrap_or(serde_json::Value::Null);
                    return serde_json::from_value(result)
                        .map_err(|e| ClientError::Malformed(e.to_string()));
                }
                JobState::Failed => {
                    return Err(ClientError::JobFailed(view.error.unwrap_or_default()))
                }
                JobState::Running => {}
            }
            view = self.send(&call::job(&view.id, JOB_POLL))?;
        }
    }

    /// One request on a new connection; the answer's body when its status is expected.
    async fn exchange<A>(&self, call: &Call<A>) -> Result<Bytes, ClientError> {
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|source| ClientError::Connect {
                path: self.socket.clone(),
                source,
            })?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        // The connection does the I/O beside the request; it ends when the sender is gone
        // and the answer is read (or with the runtime).
        tokio::spawn(connection);
        let mut request = hyper::Request::builder()
            .method(call.method.clone())
            .uri(call.target.as_str())
            .header(HOST, "fiona")
            .header(CONNECTION, "close")
            .header(ACCEPT, "application/json");
        let mut bytes = Vec::new();
        if let Some((content_type, body)) = &call.body {
            request = request.header(CONTENT_TYPE, *content_type);
            bytes.clone_from(body);
        }
        let answer = sender
            .send_request(request.body(Full::new(Bytes::from(bytes)))?)
            .await?;
        let status = answer.status();
        let body = answer.into_body().collect().await?.to_bytes();
        if status.is_success() || call.also == Some(status) {
            return Ok(body);
        }
        let message = serde_json::from_slice::<ErrorBody>(&body)
            .map(|e| e.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
        Err(ClientError::Status {
            status: status.as_u16(),
            body: message,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::api::{route, HealthView, StudyView, TransferQuery};
    use axum::http::StatusCode;
    use axum::routing::get;
    use axum::{Json, Router};

    /// Serve `app` on `dir`'s control socket from a thread of its own (left running).
    fn serve(dir: &Path, app: Router) {
        let path = api::socket_path(dir);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        listener.set_nonblocking(true).unwrap();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::UnixListener::from_std(listener).unwrap();
                axum::serve(listener, app).await.unwrap();
            });
        });
    }

    fn unhealthy() -> HealthView {
        HealthView {
            healthy: false,
            problems: vec!["the disk is full".into()],
            index: Default::default(),
            checks: Vec::new(),
        }
    }

    #[test]
    fn answers_are_typed_and_refusals_carry_the_servers_error() {
        let tmp = tempfile::tempdir().unwrap();
        let app = Router::new()
            .route(
                route::STUDIES,
                get(|| async { Json(Vec::<StudyView>::new()) }),
            )
            .route(
                route::STUDY,
                get(|| async {
                    (
                        StatusCode::NOT_FOUND,
                        Json(ErrorBody {
                            error: "no study with key X".into(),
                        }),
                    )
                }),
            )
            .route(
                route::HEALTH,
                get(|| async { (StatusCode::SERVICE_UNAVAILABLE, Json(unhealthy())) }),
            )
            .route(
                route::REJECTED,
                get(|| async { (StatusCode::SERVICE_UNAVAILABLE, "plain text") }),
            );
        serve(tmp.path(), app);
        let client = Client::new(tmp.path()).unwrap();
        assert!(client.send(&call::studies(true)).unwrap().is_empty());
        assert_eq!(
            client.send(&call::studies(false).json()).unwrap(),
            serde_json::json!([])
        );
        let e = client.send(&call::study("X")).unwrap_err();
        assert!(
            matches!(&e, ClientError::Status { status: 404, body } if body == "no study with key X"),
            "{e:?}"
        );
        assert_eq!(e.to_string(), "daemon answered 404: no study with key X");
        // 503 is an answer for the health check only.
        let h = client.send(&call::health()).unwrap();
        assert!(!h.healthy && h.problems == ["the disk is full"]);
        let e = client.send(&call::rejected()).unwrap_err().to_string();
        assert_eq!(e, "daemon answered 503: plain text");
        // A route the server does not have.
        let e = client.send(&call::audit()).unwrap_err().to_string();
        assert!(e.starts_with("daemon answered 404"), "{e}");
    }

    #[test]
    fn nothing_listening_is_said_plainly() {
        let tmp = tempfile::tempdir().unwrap();
        let e = Client::new(tmp.path())
            .unwrap()
            .send(&call::status())
            .unwrap_err();
        assert!(matches!(e, ClientError::Connect { .. }), "{e:?}");
        let e = e.to_string();
        assert!(
            e.starts_with("cannot reach the fiona daemon at ") && e.contains("control.sock"),
            "{e}"
        );
    }

    #[test]
    fn queries_are_encoded() {
        assert_eq!(call::studies(true).target, "/v1/studies?all=true");
        assert_eq!(
            call::transfers(&TransferQuery::default()).target,
            "/v1/transfers"
        );
        let q = TransferQuery {
            project: Some("A B&C".into()),
            since: Some("2024-01-02".into()),
            ..TransferQuery::default()
        };
        assert_eq!(
            call::transfers(&q).target,
            "/v1/transfers?project=A+B%26C&since=2024-01-02"
        );
        assert_eq!(
            call::job("01J", Duration::from_secs(1)).target,
            "/v1/jobs/01J?wait_ms=1000"
        );
        assert_eq!(call::study("01ABC").target, "/v1/studies/01ABC");
        assert_eq!(
            call::user_change("a.b-c@x", &crate::control::api::UserChange::Disable).target,
            "/v1/users/a.b-c@x"
        );
        assert_eq!(call::health().also, Some(StatusCode::SERVICE_UNAVAILABLE));
    }
}
