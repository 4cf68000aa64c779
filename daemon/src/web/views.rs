//! The web page's handlers: one per page or form. Every handler that shows project data
//! checks the user's role in that project here, on the server, whatever the page offered;
//! a URL or a form the user could not have been given answers 403.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts, Multipart, Path as UrlPath, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use maud::{html, Markup};
use serde::Deserialize;

use super::auth::{self, Identity, SessionView, Source};
use super::pages::{self, page, Nav};
use super::Web;
use crate::config::{Grants, Role};
use crate::control::api::AssignBody;
use crate::control::ApiError;
use crate::model::{AccountRecord, AuditRecord, TransferRecord, TransferState};

/// The session cookie: `__Host-` so the browser keeps it to this host, over HTTPS, path `/`.
const COOKIE: &str = "__Host-fiona";
/// Rows per page of a listing.
const PAGE_ROWS: usize = 100;
/// Largest coupling list uploaded on the page.
const COUPLING_MAX_BYTES: usize = 16 << 20;

pub fn router(web: Arc<Web>) -> Router {
    let mut r = Router::new();
    if crate::pipeline::test_faults_enabled() {
        // Only with FIONA_TEST_FAULTS=1 (warned about at start): a handler that panics, for
        // the test that the daemon survives it.
        r = r.route("/fault/panic", get(panic_fault));
    }
    r.route("/", get(status))
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
        .route("/setup/{token}", get(setup_form).post(setup))
        .route("/assign", get(assign_list).post(assign_search))
        .route("/study/{key}", get(study_page).post(study_assign))
        .route("/transfer/{id}", get(transfer_page))
        .route("/transfer/{id}/resend", post(transfer_resend))
        .route("/transfers", get(transfers_page))
        .route("/transfers.csv", get(transfers_csv))
        .route(
            "/coupling",
            get(coupling_form)
                .post(coupling_upload)
                .layer(axum::extract::DefaultBodyLimit::max(
                    COUPLING_MAX_BYTES + 64 * 1024,
                )),
        )
        .route("/review", get(review_page))
        .route("/audit", get(audit_page))
        .route("/admin/users", get(users_page).post(user_add))
        .route("/admin/users/{name}", post(user_change))
        .route("/static/fiona.css", get(css))
        .fallback(not_found)
        .with_state(web)
}

async fn panic_fault() -> &'static str {
    panic!("test fault: a handler panics")
}

/// A path for a log line: the first segment, the rest elided (keys, names).
pub fn route_of(path: &str) -> String {
    let mut it = path.trim_start_matches('/').splitn(2, '/');
    let first = it.next().unwrap_or("");
    match it.next() {
        Some(_) => format!("/{first}/…"),
        None => format!("/{first}"),
    }
}

// ---- answers that are not a page of their own ----

/// Why a request is not served.
enum Reject {
    /// Not logged in (or the session ended): to the login page.
    Login,
    /// A fresh box: only the setup link works.
    Setup,
    Forbidden,
    NotFound,
    Bad(String),
    Internal(String),
}

impl IntoResponse for Reject {
    fn into_response(self) -> Response {
        let (code, title, text) = match self {
            Reject::Login => return Redirect::to("/login").into_response(),
            Reject::Setup => (
                StatusCode::SERVICE_UNAVAILABLE,
                "Set-up needed",
                "This box has no account yet. Open the one-time link that `fiona serve` printed in its log to set the first administrator's password.".to_string(),
            ),
            Reject::Forbidden => (
                StatusCode::FORBIDDEN,
                "Not allowed",
                "Your account does not have the role this page needs.".to_string(),
            ),
            Reject::NotFound => (
                StatusCode::NOT_FOUND,
                "Not found",
                "There is nothing at this address.".to_string(),
            ),
            Reject::Bad(m) => (StatusCode::BAD_REQUEST, "Not accepted", m),
            Reject::Internal(m) => {
                tracing::error!(error = %m, "web page: request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong",
                    "The request could not be completed; the daemon's log says why.".to_string(),
                )
            }
        };
        (
            code,
            page(title, Nav::None, None, None, html! { p { (text) } }),
        )
            .into_response()
    }
}

impl From<ApiError> for Reject {
    fn from(e: ApiError) -> Reject {
        match e.0 {
            StatusCode::NOT_FOUND => Reject::NotFound,
            StatusCode::INTERNAL_SERVER_ERROR => Reject::Internal(e.1),
            _ => Reject::Bad(e.1),
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, Reject> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Reject::Internal(format!("task: {e}")))?
        .map_err(Reject::Internal)
}

// ---- who is asking ----

/// The logged-in user of a request, with the session's cookie.
struct Who {
    s: SessionView,
    cookie: String,
}

impl Who {
    fn grants(&self) -> &Grants {
        &self.s.identity.grants
    }
    fn may(&self, project: &str, role: Role) -> bool {
        self.grants().has(project, role)
    }
    fn need(&self, project: &str, role: Role) -> Result<(), Reject> {
        if self.may(project, role) {
            Ok(())
        } else {
            Err(Reject::Forbidden)
        }
    }
    fn need_admin(&self) -> Result<(), Reject> {
        if self.grants().admin {
            Ok(())
        } else {
            Err(Reject::Forbidden)
        }
    }
    /// The projects (configured ones) where the user has at least `role`.
    fn projects(&self, web: &Web, role: Role) -> Vec<String> {
        web.node
            .config
            .projects
            .keys()
            .filter(|p| self.may(p, role))
            .cloned()
            .collect()
    }
    fn any(&self, web: &Web, role: Role) -> Result<(), Reject> {
        if self.projects(web, role).is_empty() {
            Err(Reject::Forbidden)
        } else {
            Ok(())
        }
    }
    /// A form's CSRF token must be this session's.
    fn csrf(&self, token: &str) -> Result<(), Reject> {
        if auth::same_secret(token, &self.s.csrf) {
            Ok(())
        } else {
            tracing::warn!(user = %self.s.identity.name, "web page: form without a valid CSRF token refused");
            Err(Reject::Forbidden)
        }
    }
    fn actor(&self) -> String {
        self.s.identity.actor()
    }
}

fn cookie_of(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
        .map(str::to_string)
        .next()
}

/// Is the setup link still armed (no account yet)? Disarms it once an account exists
/// (`fiona user add` made one).
async fn setup_pending(web: &Arc<Web>) -> bool {
    if !web.setup.pending() {
        return false;
    }
    let w = web.clone();
    match tokio::task::spawn_blocking(move || w.needs_setup()).await {
        Ok(Ok(false)) => {
            web.setup.disarm();
            false
        }
        _ => true,
    }
}

impl FromRequestParts<Arc<Web>> for Who {
    type Rejection = Reject;

    async fn from_request_parts(parts: &mut Parts, web: &Arc<Web>) -> Result<Who, Reject> {
        if setup_pending(web).await {
            return Err(Reject::Setup);
        }
        let cookie = cookie_of(&parts.headers).ok_or(Reject::Login)?;
        let s = web.sessions.get(&cookie).ok_or(Reject::Login)?;
        // A local account is read again: disabled or changed roles take effect at once.
        if s.identity.source == Source::Local {
            let store = web.node.store.clone();
            let name = s.identity.name.clone();
            let rec =
                blocking(move || store.account_named(&name).map_err(|e| e.to_string())).await?;
            match rec {
                Some(a) if !a.disabled => {
                    if a.grants != s.identity.grants {
                        web.sessions.refresh(&cookie, a.grants.clone());
                        let mut s = s;
                        s.identity.grants = a.grants;
                        return Ok(Who { s, cookie });
                    }
                }
                _ => {
                    web.sessions.remove_user(&s.identity.name);
                    return Err(Reject::Login);
                }
            }
        }
        if s.identity.grants.is_empty() && parts.method != Method::POST {
            // Logged in but given nothing: only logging out.
            return Err(Reject::Forbidden);
        }
        Ok(Who { s, cookie })
    }
}

fn set_cookie(value: &str) -> String {
    format!("{COOKIE}={value}; Path=/; Secure; HttpOnly; SameSite=Strict")
}

// ---- static ----

async fn css() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        pages::CSS,
    )
        .into_response()
}

async fn not_found(State(web): State<Arc<Web>>) -> Response {
    if setup_pending(&web).await {
        return Reject::Setup.into_response();
    }
    Reject::NotFound.into_response()
}

// ---- login, logout, setup ----

#[derive(Deserialize)]
struct LoginForm {
    name: String,
    password: String,
}

fn login_page(message: Option<&str>) -> Markup {
    page(
        "Log in",
        Nav::None,
        None,
        None,
        html! {
            @if let Some(m) = message {
                p.error role="alert" { (m) }
            }
            form method="post" action="/login" {
                label for="name" { "Account name" }
                input id="name" name="name" autocomplete="username" required autofocus;
                label for="password" { "Password" }
                input id="password" name="password" type="password" autocomplete="current-password" required;
                div { button type="submit" { "Log in" } }
            }
        },
    )
}

async fn login_form(State(web): State<Arc<Web>>) -> Response {
    if setup_pending(&web).await {
        return Reject::Setup.into_response();
    }
    login_page(None).into_response()
}

/// Who a name and password are, if they are right: configured accounts, then local ones,
/// then the directory. `Ok(None)` for a wrong name or password.
async fn authenticate(
    web: &Arc<Web>,
    name: &str,
    password: &str,
) -> Result<Option<Identity>, String> {
    let cfg = &web.node.config.web;
    if let Some(a) = cfg.accounts.iter().find(|a| a.name == name) {
        let (hash, pw) = (a.password_hash.clone(), password.to_string());
        let ok = tokio::task::spawn_blocking(move || auth::verify_password(&hash, &pw))
            .await
            .map_err(|e| e.to_string())?;
        return Ok((ok && !a.disabled).then(|| Identity {
            name: a.name.clone(),
            source: Source::Config,
            grants: Grants {
                admin: a.admin,
                roles: a.roles.clone(),
            },
        }));
    }
    let store = web.node.store.clone();
    let (n, pw) = (name.to_string(), password.to_string());
    let local = tokio::task::spawn_blocking(move || -> Result<Option<AccountRecord>, String> {
        let rec = store.account_named(&n).map_err(|e| e.to_string())?;
        let hash = rec
            .as_ref()
            .map(|a| a.password_hash.as_str())
            .unwrap_or_else(|| auth::dummy_hash());
        let ok = auth::verify_password(hash, &pw);
        Ok(rec.filter(|a| ok && !a.disabled))
    })
    .await
    .map_err(|e| e.to_string())??;
    if let Some(a) = local {
        return Ok(Some(Identity {
            name: a.name,
            source: Source::Local,
            grants: a.grants,
        }));
    }
    if let Some(l) = &cfg.ldap {
        return ldap_login(l, name, password).await;
    }
    Ok(None)
}

/// A directory login: `Ok(None)` for wrong credentials; a user in no mapped group may not
/// log in either (logged, so an admin can tell why).
async fn ldap_login(
    cfg: &crate::config::LdapConfig,
    name: &str,
    password: &str,
) -> Result<Option<Identity>, String> {
    use crate::ldap::LdapError;
    match crate::ldap::login(cfg, name, password).await {
        Ok(grants) => Ok(Some(Identity {
            // The directory matches names without regard to case: one identity per person.
            name: name.to_lowercase(),
            source: Source::Ldap,
            grants,
        })),
        Err(LdapError::InvalidCredentials) => Ok(None),
        Err(LdapError::NoRole) => {
            tracing::warn!(user = %name, "web login: the directory account is in no group mapped to a role");
            Ok(None)
        }
        Err(e) => Err(e.to_string()),
    }
}

async fn login(
    State(web): State<Arc<Web>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Form(f): Form<LoginForm>,
) -> Response {
    if setup_pending(&web).await {
        return Reject::Setup.into_response();
    }
    let name = f.name.trim().to_string();
    let addr = peer.ip();
    let too_many = "Too many failed logins: this account or address is locked for a while. Try again later or ask an administrator.";
    if !crate::config::valid_account_name(&name) {
        return (
            StatusCode::UNAUTHORIZED,
            login_page(Some("Wrong account name or password.")),
        )
            .into_response();
    }
    // Failures count per name whatever its case (the directory ignores case).
    let key = name.to_lowercase();
    if web.throttle.check(&key, addr).is_err() {
        return (StatusCode::TOO_MANY_REQUESTS, login_page(Some(too_many))).into_response();
    }
    match authenticate(&web, &name, &f.password).await {
        Ok(Some(identity)) => {
            web.throttle.succeed(&key);
            match web.sessions.create(identity) {
                Ok(id) => {
                    tracing::info!(user = %name, "web login");
                    (
                        StatusCode::SEE_OTHER,
                        [
                            (header::SET_COOKIE, set_cookie(&id)),
                            (header::LOCATION, "/".to_string()),
                        ],
                    )
                        .into_response()
                }
                Err(e) => Reject::Internal(e).into_response(),
            }
        }
        Ok(None) => {
            let locked = web.throttle.fail(&key, addr);
            tracing::warn!(user = %name, peer = %addr, "web login failed");
            for what in locked {
                let detail = match what {
                    auth::Blocked::Account => format!(
                        "account {name} locked for {} minutes after {} failed logins",
                        web.node.config.web.lockout_minutes,
                        web.node.config.web.max_failures_per_account
                    ),
                    auth::Blocked::Address => format!(
                        "address {addr} locked for {} minutes after {} failed logins",
                        web.node.config.web.lockout_minutes,
                        web.node.config.web.max_failures_per_address
                    ),
                };
                tracing::warn!("web login lockout: {detail}");
                if let Err(e) = audit(&web, "web", "web_lockout", None, detail).await {
                    tracing::error!(error = %e, "web lockout not audited");
                }
            }
            (
                StatusCode::UNAUTHORIZED,
                login_page(Some("Wrong account name or password.")),
            )
                .into_response()
        }
        Err(e) => {
            tracing::warn!(user = %name, error = %e, "web login could not be checked");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                login_page(Some(
                    "The login could not be checked (directory unreachable?). Try again later.",
                )),
            )
                .into_response()
        }
    }
}

/// Append one audit record (web changes that are not assignments).
async fn audit(
    web: &Arc<Web>,
    actor: &str,
    action: &str,
    project: Option<String>,
    detail: String,
) -> Result<(), String> {
    let node = web.node.clone();
    let actor = actor.to_string();
    let action = action.to_string();
    tokio::task::spawn_blocking(move || {
        let now = node.clock.now_ms();
        node.store
            .write_assign(&mut |t| {
                t.append_audit(AuditRecord {
                    seq: 0,
                    time_ms: now,
                    actor: actor.clone(),
                    action: action.clone(),
                    study_key: None,
                    project: project.clone(),
                    participant: None,
                    event: None,
                    transfer: None,
                    detail: detail.clone(),
                })?;
                Ok(())
            })
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())?
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
}

async fn logout(
    State(web): State<Arc<Web>>,
    who: Result<Who, Reject>,
    Form(f): Form<CsrfForm>,
) -> Response {
    let Ok(who) = who else {
        return Redirect::to("/login").into_response();
    };
    if let Err(r) = who.csrf(&f.csrf) {
        return r.into_response();
    }
    web.sessions.remove(&who.cookie);
    tracing::info!(user = %who.s.identity.name, "web logout");
    (
        StatusCode::SEE_OTHER,
        [
            (
                header::SET_COOKIE,
                format!("{COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0"),
            ),
            (header::LOCATION, "/login".to_string()),
        ],
    )
        .into_response()
}

#[derive(Deserialize)]
struct SetupForm {
    name: String,
    password: String,
    confirm: String,
}

fn setup_page(token: &str, message: Option<&str>) -> Markup {
    page(
        "Set up the first administrator",
        Nav::None,
        None,
        None,
        html! {
            p { "This box has no account yet. Choose the first administrator's name and password; this link works once." }
            @if let Some(m) = message { p.error role="alert" { (m) } }
            form method="post" action={ "/setup/" (token) } {
                label for="name" { "Account name" }
                input id="name" name="name" autocomplete="username" required;
                label for="password" { "Password (at least " (auth::MIN_PASSWORD_LEN) " characters)" }
                input id="password" name="password" type="password" autocomplete="new-password" required;
                label for="confirm" { "The password again" }
                input id="confirm" name="confirm" type="password" autocomplete="new-password" required;
                div { button type="submit" { "Create the administrator" } }
            }
        },
    )
}

async fn setup_form(State(web): State<Arc<Web>>, UrlPath(token): UrlPath<String>) -> Response {
    if !setup_pending(&web).await || !web.setup.matches(&token) {
        return Reject::NotFound.into_response();
    }
    setup_page(&token, None).into_response()
}

async fn setup(
    State(web): State<Arc<Web>>,
    UrlPath(token): UrlPath<String>,
    Form(f): Form<SetupForm>,
) -> Response {
    if !setup_pending(&web).await || !web.setup.matches(&token) {
        return Reject::NotFound.into_response();
    }
    let name = f.name.trim().to_string();
    let bad = |m: &str| {
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            setup_page(&token, Some(m)),
        )
            .into_response()
    };
    if !crate::config::valid_account_name(&name) {
        return bad("The name must be 1 to 64 letters, digits or . _ - @.");
    }
    if f.password != f.confirm {
        return bad("The two passwords differ.");
    }
    if let Err(m) = auth::check_new_password(&name, &f.password) {
        return bad(&m);
    }
    let grants = Grants {
        admin: true,
        ..Grants::default()
    };
    match add_account(&web, "web:setup", &name, &f.password, grants.clone(), true).await {
        Ok(()) => {}
        Err(e) => return bad(&e),
    }
    web.setup.disarm();
    tracing::info!(user = %name, "web page: first administrator set up");
    match web.sessions.create(Identity {
        name,
        source: Source::Local,
        grants,
    }) {
        Ok(id) => (
            StatusCode::SEE_OTHER,
            [
                (header::SET_COOKIE, set_cookie(&id)),
                (header::LOCATION, "/".to_string()),
            ],
        )
            .into_response(),
        Err(e) => Reject::Internal(e).into_response(),
    }
}

/// Create a local account (hash made here), audited in the same transaction. `first` refuses
/// when any account exists already (the setup link).
async fn add_account(
    web: &Arc<Web>,
    actor: &str,
    name: &str,
    password: &str,
    grants: Grants,
    first: bool,
) -> Result<(), String> {
    if web.node.config.web.accounts.iter().any(|a| a.name == name) {
        return Err(format!("`{name}` is an account of the configuration"));
    }
    let hash = {
        let pw = password.to_string();
        tokio::task::spawn_blocking(move || auth::hash_password(&pw))
            .await
            .map_err(|e| e.to_string())??
    };
    let node = web.node.clone();
    let (actor, name) = (actor.to_string(), name.to_string());
    tokio::task::spawn_blocking(move || {
        crate::control::account_add(&node, &actor, &name, hash, grants, first)
    })
    .await
    .map_err(|e| e.to_string())?
}

// ---- status ----

async fn status(State(web): State<Arc<Web>>, who: Who) -> Result<Response, Reject> {
    let v =
        crate::control::status_view(web.node.clone(), web.started, web.dicom_listen.clone()).await;
    let node = web.node.clone();
    let admin = who.grants().admin;
    let (last_arrival, dests, transfers, rejected, parked) = blocking(move || {
        let last = node.store.last_arrival_ms().map_err(|e| e.to_string())?;
        let counts = node.store.transfer_counts().map_err(|e| e.to_string())?;
        let mut by_state = std::collections::BTreeMap::new();
        for ((_, state), n) in &counts.by_state {
            *by_state.entry(state.as_str()).or_insert(0u64) += n;
        }
        let transfers = node.store.transfers().map_err(|e| e.to_string())?;
        let dests = crate::control::destination_views(&node, &transfers);
        let (rejected, parked) = if admin {
            let mut r = node.store.rejections().map_err(|e| e.to_string())?;
            r.retain(|r| r.evicted_ms.is_none());
            r.sort_by_key(|r| std::cmp::Reverse(r.received_ms));
            r.truncate(50);
            let mut p: Vec<(String, String, String)> = transfers
                .iter()
                .flat_map(|t| {
                    t.parked
                        .iter()
                        .map(move |x| (t.id.clone(), x.instance.clone(), x.reason.clone()))
                })
                .collect();
            p.truncate(50);
            (r, p)
        } else {
            (Vec::new(), Vec::new())
        };
        Ok((last, dests, by_state, rejected, parked))
    })
    .await?;
    let d = &v.disk;
    let body = html! {
        h2 { "Receiving" }
        dl.kv {
            dt { "DICOM listener" } dd { (v.ae_title) " on " (v.listen) }
            dt { "Associations now" } dd { (v.associations_active) }
            dt { "Associations since start" } dd { (v.associations_total) " (" (v.associations_refused) " refused)" }
            dt { "Instances stored since start" } dd { (v.instances_stored_since_start) " (" (v.instances_rejected_since_start) " rejected)" }
            dt { "Last arrival" } dd { (last_arrival.map(pages::time).unwrap_or_else(|| "none yet".into())) }
            dt { "Studies held" } dd { (v.totals.studies) " (" (v.studies_receiving) " receiving)" }
        }
        h2 { "Pipeline" }
        table.compact {
            thead { tr { th { "State" } th.num { "Transfers" } } }
            tbody {
                @for s in TransferState::ALL {
                    tr { td { (s.as_str()) } td.num { (transfers.get(s.as_str()).copied().unwrap_or(0)) } }
                }
            }
        }
        p { "Parked instances: " (v.instances_parked) "; notifications waiting: " (v.notifications_pending) }
        h2 { "Destinations" }
        @if dests.is_empty() {
            p { "No destination is configured." }
        } @else {
            div.scroll { table {
                thead { tr { th { "Destination" } th { "Last verified" } th { "Last error" } th.num { "Queue" } } }
                tbody {
                    @for x in &dests {
                        tr {
                            td { (x.name) }
                            td { (x.last_verified_ms.map(pages::time).unwrap_or_default()) }
                            td { (x.last_error.clone().unwrap_or_default()) }
                            td.num { (x.queue) }
                        }
                    }
                }
            } }
        }
        h2 { "Disk" }
        dl.kv {
            dt { "Free" } dd { (crate::evict::human_bytes(v.free_bytes)) " of " (crate::evict::human_bytes(v.total_bytes)) }
            dt { "Held" } dd { (crate::evict::human_bytes(d.held_bytes)) }
            dt { "Evictable" } dd { (crate::evict::human_bytes(d.evictable_bytes)) }
            dt { "Held by unsent transfers" } dd { (crate::evict::human_bytes(d.unsent_bytes)) }
            @if let Some(p) = &d.pressure { dt { "Disk pressure" } dd.error { (p) } }
        }
        h2 { "Health" }
        ul {
            @for c in &v.checks {
                li { (c.check) ": " @if c.healthy { span.ok { "ok" } } @else { span.error { "failing" } " " (c.detail) } }
            }
            @if let Some(e) = &v.index_error { li.error { "index: " (e) } }
            @match &v.selftest {
                Some(r) => {
                    li { "selftest at " (pages::time(r.time_ms)) ": "
                        @match r.verdict {
                            crate::health::Verdict::Ok => span.ok { "passed" },
                            crate::health::Verdict::Warning => span.warn { "passed with warnings" },
                            crate::health::Verdict::Failure => span.error { "failed" },
                        }
                        @for c in r.checks.iter().filter(|c| c.verdict != crate::health::Verdict::Ok) {
                            br; (c.name) ": " (c.message)
                        }
                    }
                }
                None => li { "selftest: not run since start" },
            }
            @if let Some(src) = &v.config_source { li { "configuration: " (src.describe()) } }
        }
        p.hint { "fiona " (v.version) ", up " (v.uptime_secs / 3600) " h " ((v.uptime_secs % 3600) / 60) " min" }
        @if admin {
            h2 { "Rejected instances (latest 50)" }
            @if rejected.is_empty() { p { "None." } } @else {
                div.scroll { table {
                    thead { tr { th { "Received" } th { "From" } th { "Reason" } } }
                    tbody { @for r in &rejected { tr { td { (pages::time(r.received_ms)) } td { (r.origin.calling_ae) } td { (r.reason) } } } }
                } }
            }
            h2 { "Parked instances (first 50)" }
            @if parked.is_empty() { p { "None." } } @else {
                div.scroll { table {
                    thead { tr { th { "Transfer" } th { "Instance" } th { "Reason" } } }
                    tbody { @for (t, i, r) in &parked { tr { td { a href={ "/transfer/" (t) } { (t) } } td { (i) } td { (r) } } } }
                } }
            }
        }
    };
    Ok(page("Status", Nav::Status, Some(&who.s), None, body).into_response())
}

// ---- assign ----

#[derive(Deserialize, Default)]
struct AssignQuery {
    #[serde(default)]
    date: Option<String>,
    #[serde(default)]
    page: Option<usize>,
}

#[derive(Deserialize)]
struct AssignSearch {
    csrf: String,
    #[serde(default)]
    accession: String,
    #[serde(default)]
    date: String,
}

async fn assign_list(
    State(web): State<Arc<Web>>,
    who: Who,
    Query(q): Query<AssignQuery>,
) -> Result<Response, Reject> {
    who.any(&web, Role::Assigner)?;
    assign_render(
        &web,
        &who,
        None,
        q.date.unwrap_or_default(),
        q.page.unwrap_or(1),
    )
    .await
}

async fn assign_search(
    State(web): State<Arc<Web>>,
    who: Who,
    Form(f): Form<AssignSearch>,
) -> Result<Response, Reject> {
    who.csrf(&f.csrf)?;
    who.any(&web, Role::Assigner)?;
    let acc = f.accession.trim().to_string();
    assign_render(&web, &who, (!acc.is_empty()).then_some(acc), f.date, 1).await
}

/// `YYYY-MM-DD` (or `YYYYMMDD`) as a DICOM date.
fn dicom_date(s: &str) -> Option<String> {
    let d: String = s.trim().chars().filter(|c| *c != '-').collect();
    (d.len() == 8 && d.bytes().all(|b| b.is_ascii_digit())).then_some(d)
}

async fn assign_render(
    web: &Arc<Web>,
    who: &Who,
    accession: Option<String>,
    date: String,
    page_no: usize,
) -> Result<Response, Reject> {
    let date_filter = match date.trim() {
        "" => None,
        d => Some(dicom_date(d).ok_or_else(|| Reject::Bad("The date must be YYYY-MM-DD.".into()))?),
    };
    // The count and this page's studies only, from the index's assign list.
    let filter = crate::control::AssignFilter {
        accession: accession.clone(),
        study_date: date_filter.clone(),
    };
    let pg = crate::control::assign_page(web.node.clone(), filter, page_no, PAGE_ROWS).await?;
    let (pages_n, page_no, shown) = (pg.pages, pg.page, &pg.rows);
    let query = date_filter
        .as_ref()
        .map(|_| format!("date={}", date.trim()))
        .unwrap_or_default();
    let body = html! {
        p { "Studies that arrived in the last " (web.node.config.unassigned_visible_days) " days and are not assigned yet. Find yours by accession number or by study date and time." }
        form.filters method="post" action="/assign" {
            (pages::csrf(&who.s))
            div { label for="accession" { "Accession number" } input id="accession" name="accession" value=(accession.clone().unwrap_or_default()); }
            div { label for="date" { "Study date" } input id="date" name="date" type="date" value=(date.trim()); }
            div { button type="submit" { "Filter" } " " a href="/assign" { "Show all" } }
        }
        p { (pg.total) " unassigned studies" @if accession.is_some() || date_filter.is_some() { " match" } "." }
        div.scroll { table {
            thead { tr {
                th { "Arrived" } th { "Study date and time" } th { "Accession" } th { "Modalities" } th { "Description" }
                th.num { "Series" } th.num { "Instances" } th { "Sent by" } th { "State" } th { span.hint { "Action" } }
            } }
            tbody {
                @for s in shown {
                    tr {
                        td { (pages::time(s.first_received_ms)) }
                        td { (pages::dicom_date_time(&s.study_date, &s.study_time)) }
                        td { (s.accession_number) }
                        td { (s.modalities.join(", ")) }
                        td { (s.study_description) }
                        td.num { (s.series) }
                        td.num { (s.instances) }
                        td { (s.calling_ae) }
                        td { (s.state) }
                        td { a href={ "/study/" (s.key) } { "Assign" } }
                    }
                }
            }
        } }
        (pages::pager("/assign", &query, page_no, pages_n))
    };
    Ok(page("Assign", Nav::Assign, Some(&who.s), None, body).into_response())
}

#[derive(Deserialize)]
struct AssignForm {
    csrf: String,
    project: String,
    participant: String,
    event: String,
    #[serde(default)]
    allow_other_patient: Option<String>,
}

async fn study_page(
    State(web): State<Arc<Web>>,
    who: Who,
    UrlPath(key): UrlPath<String>,
) -> Result<Response, Reject> {
    who.any(&web, Role::Assigner)?;
    study_render(&web, &who, &key, None, None).await
}

async fn study_render(
    web: &Arc<Web>,
    who: &Who,
    key: &str,
    message: Option<String>,
    form: Option<&AssignForm>,
) -> Result<Response, Reject> {
    let node = web.node.clone();
    let k = key.to_string();
    let assignable = who.projects(web, Role::Assigner);
    let ap = assignable.clone();
    let found = blocking(move || {
        let Some(s) = node.store.study(&k).map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        let assignments = node
            .store
            .assignments(Some(&k))
            .map_err(|e| e.to_string())?;
        let participants: BTreeSet<String> = node
            .store
            .participants()
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter(|p| ap.contains(&p.project))
            .map(|p| p.participant)
            .collect();
        let states: std::collections::HashMap<String, TransferState> = assignments
            .iter()
            .flat_map(|a| a.transfers.iter())
            .filter_map(|id| node.store.transfer(id).ok().flatten())
            .map(|t| (t.id, t.state))
            .collect();
        let now = node.clock.now_ms();
        let view =
            crate::control::study_view(&s, node.config.quiet_period().as_millis() as i64, now);
        Ok(Some((view, assignments, participants, states)))
    })
    .await?;
    let Some((s, assignments, participants, states)) = found else {
        return Err(Reject::NotFound);
    };
    let mine: Vec<_> = assignments
        .iter()
        .filter(|a| who.may(&a.project, Role::Viewer))
        .collect();
    let others = assignments.len() - mine.len();
    let projects = &web.node.config.projects;
    let body = html! {
        dl.kv {
            dt { "Arrived" } dd { (pages::time(s.first_received_ms)) }
            dt { "Study date and time" } dd { (pages::dicom_date_time(&s.study_date, &s.study_time)) }
            dt { "Accession number" } dd { (s.accession_number) }
            dt { "Modalities" } dd { (s.modalities.join(", ")) }
            dt { "Description" } dd { (s.study_description) }
            dt { "Series, instances" } dd { (s.series) ", " (s.instances) }
            dt { "Sent by" } dd { (s.calling_ae) }
            dt { "State" } dd { (s.state) }
        }
        @if !mine.is_empty() {
            h2 { "Assigned" }
            table {
                thead { tr { th { "Project" } th { "Participant" } th { "Event" } th { "By" } th { "Transfer" } } }
                tbody { @for a in &mine {
                    tr {
                        td { (a.project) } td { (a.participant) } td { (a.event) } td { (a.actor) }
                        td { @if let Some(t) = a.transfers.last() {
                            a href={ "/transfer/" (t) } { (states.get(t).map(|s| s.as_str()).unwrap_or("?")) }
                        } }
                    }
                } }
            }
        }
        @if others > 0 { p.hint { "Also assigned to " (others) " project(s) you do not see." } }
        h2 { @if mine.is_empty() { "Assign" } @else { "Assign or correct" } }
        @if let Some(m) = &message { p.error role="alert" id="assign-error" { (m) } }
        @if assignable.is_empty() {
            p { "You may not assign to any project." }
        } @else {
            form method="post" action={ "/study/" (s.key) } {
                (pages::csrf(&who.s))
                label for="project" { "Project" }
                select id="project" name="project" required {
                    @for p in &assignable {
                        option value=(p) selected[form.is_some_and(|f| &f.project == p)] { (p) }
                    }
                }
                label for="participant" { "Participant ID" }
                input id="participant" name="participant" list="participants" required autocomplete="off"
                    value=(form.map(|f| f.participant.as_str()).unwrap_or(""));
                datalist id="participants" { @for p in &participants { option value=(p) {} } }
                p.hint { "An existing participant of the project, or a new ID. Patterns: "
                    @for (i, p) in assignable.iter().enumerate() {
                        @if i > 0 { "; " }
                        (p) ": " code { (projects.get(p).map(|c| c.participant_pattern.as_str()).unwrap_or("")) }
                    }
                }
                label for="event" { "Event" }
                select id="event" name="event" required {
                    @for p in &assignable {
                        optgroup label=(p) {
                            @for e in projects.get(p).map(|c| c.events.clone()).unwrap_or_default() {
                                option value=(e) selected[form.is_some_and(|f| f.event == e && f.project == *p)] { (e) }
                            }
                        }
                    }
                }
                label { input type="checkbox" name="allow_other_patient" value="yes"; " The participant ID is knowingly used for another patient ID of the same person" }
                div { button type="submit" { "Assign" } }
            }
        }
    };
    let code = if message.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    Ok((code, page("Study", Nav::Assign, Some(&who.s), None, body)).into_response())
}

async fn study_assign(
    State(web): State<Arc<Web>>,
    who: Who,
    UrlPath(key): UrlPath<String>,
    Form(f): Form<AssignForm>,
) -> Result<Response, Reject> {
    who.csrf(&f.csrf)?;
    who.need(&f.project, Role::Assigner)?;
    let body = AssignBody {
        study: key.clone(),
        project: f.project.clone(),
        participant: f.participant.trim().to_string(),
        event: f.event.clone(),
        allow_other_patient: f.allow_other_patient.is_some(),
    };
    let node = web.node.clone();
    let actor = who.actor();
    // Only a study key from this page (never an accession number typed into the URL).
    let k = key.clone();
    let exists = {
        let node = node.clone();
        blocking(move || {
            node.store
                .study(&k)
                .map(|s| s.is_some())
                .map_err(|e| e.to_string())
        })
        .await?
    };
    if !exists {
        return Err(Reject::NotFound);
    }
    let r = tokio::task::spawn_blocking(move || crate::control::assign_as(&node, &actor, &body))
        .await
        .map_err(|e| Reject::Internal(e.to_string()))?;
    match r {
        Ok(o) => match o.transfer {
            Some(t) => Ok(Redirect::to(&format!("/transfer/{t}")).into_response()),
            None => study_render(&web, &who, &key, None, None).await,
        },
        Err(ApiError(code, m))
            if code == StatusCode::UNPROCESSABLE_ENTITY || code == StatusCode::CONFLICT =>
        {
            study_render(&web, &who, &key, Some(m), Some(&f)).await
        }
        Err(e) => Err(e.into()),
    }
}

// ---- transfers ----

fn final_state(s: TransferState) -> bool {
    matches!(
        s,
        TransferState::Verified
            | TransferState::Failed
            | TransferState::Cancelled
            | TransferState::Parked
    )
}

async fn load_transfer(web: &Arc<Web>, id: &str) -> Result<TransferRecord, Reject> {
    let node = web.node.clone();
    let id = id.to_string();
    blocking(move || node.store.transfer(&id).map_err(|e| e.to_string()))
        .await?
        .ok_or(Reject::NotFound)
}

async fn transfer_page(
    State(web): State<Arc<Web>>,
    who: Who,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, Reject> {
    let t = load_transfer(&web, &id).await?;
    who.need(&t.project, Role::Viewer)?;
    Ok(transfer_render(&who, &t, None).into_response())
}

fn transfer_render(who: &Who, t: &TransferRecord, message: Option<&str>) -> Markup {
    let refresh = (!final_state(t.state)).then_some(3);
    let body = html! {
        @if let Some(m) = message { p.ok role="status" { (m) } }
        dl.kv {
            dt { "Project" } dd { (t.project) }
            dt { "Participant" } dd { (t.participant) }
            dt { "Event" } dd { (t.event) }
            dt { "State" } dd { span id="transfer-state" class={ "state-" (t.state.as_str()) } { (t.state.as_str()) }
                @if refresh.is_some() { span.hint { " (this page refreshes itself)" } } }
            dt { "Instances" } dd { (t.instances) " (" (t.deidentified) " de-identified, " (t.sent) " sent, " (t.dropped) " dropped)" }
            dt { "Created" } dd { (pages::time(t.created_ms)) " by " (t.actor) }
            dt { "State since" } dd { (pages::time(t.state_ms)) }
            @if let Some(v) = t.verified_ms { dt { "Verified" } dd { (pages::time(v)) } }
            @if let Some(r) = &t.reason { dt { "Reason" } dd.error { (r) } }
        }
        @if !t.deliveries.is_empty() {
            h2 { "Destinations" }
            div.scroll { table {
                thead { tr { th { "Destination" } th.num { "Stored" } th.num { "Attempts" } th { "Verified" } th { "Last problem" } } }
                tbody { @for d in &t.deliveries {
                    tr {
                        td { (d.destination) } td.num { (d.stored.len()) } td.num { (d.attempts) }
                        td { (d.verified_ms.map(pages::time).unwrap_or_default()) }
                        td { (d.reason.clone().unwrap_or_default()) @if d.failed { " (given up)" } }
                    }
                } }
            } }
        }
        @if !t.parked.is_empty() {
            h2 { "Parked instances" }
            ul { @for p in &t.parked { li { (p.instance) ": " (p.reason) } } }
        }
        @if who.may(&t.project, Role::Manager) && matches!(t.state, TransferState::Sent | TransferState::Verified | TransferState::Failed | TransferState::Parked) {
            form method="post" action={ "/transfer/" (t.id) "/resend" } {
                (pages::csrf(&who.s))
                button type="submit" { "Send again" }
            }
        }
        p { a href={ "/transfers?project=" (t.project) } { "All transfers of " (t.project) } }
    };
    page("Transfer", Nav::Transfers, Some(&who.s), refresh, body)
}

async fn transfer_resend(
    State(web): State<Arc<Web>>,
    who: Who,
    UrlPath(id): UrlPath<String>,
    Form(f): Form<CsrfForm>,
) -> Result<Response, Reject> {
    who.csrf(&f.csrf)?;
    let t = load_transfer(&web, &id).await?;
    who.need(&t.project, Role::Manager)?;
    let node = web.node.clone();
    let actor = who.actor();
    let (study, project) = (t.study_key.clone(), t.project.clone());
    let evicted = {
        let node = node.clone();
        let s = study.clone();
        blocking(move || node.store.study(&s).map_err(|e| e.to_string())).await?
    };
    if let Some(e) = evicted
        .as_ref()
        .filter(|s| s.is_evicted())
        .and_then(|s| s.evicted.as_ref())
    {
        return Err(Reject::Bad(crate::control::evicted_message(&study, e)));
    }
    let ids = blocking(move || {
        let ids = crate::pipeline::resend(
            node.store.as_ref(),
            node.quarantine.root(),
            Some(&study),
            Some(&project),
            None,
            &actor,
            node.clock.now_ms(),
            &crate::jobs::Progress::default(),
        )?;
        tracing::info!(transfers = ids.len(), actor = %actor, "transfers re-queued");
        node.pipeline_wake.notify_one();
        Ok(ids)
    })
    .await?;
    match ids.first() {
        Some(n) => Ok(Redirect::to(&format!("/transfer/{n}")).into_response()),
        None => {
            let t = load_transfer(&web, &id).await?;
            Ok(transfer_render(
                &who,
                &t,
                Some("Nothing was re-queued (nothing sendable is left)."),
            )
            .into_response())
        }
    }
}

#[derive(Deserialize, Default, Clone)]
struct TransfersQuery {
    #[serde(default)]
    project: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    since: Option<String>,
    #[serde(default)]
    until: Option<String>,
    #[serde(default)]
    page: Option<usize>,
}

impl TransfersQuery {
    fn query_string(&self) -> String {
        let mut v: Vec<(&str, &str)> = Vec::new();
        for (k, val) in [
            ("project", &self.project),
            ("state", &self.state),
            ("since", &self.since),
            ("until", &self.until),
        ] {
            if let Some(x) = val.as_deref().filter(|x| !x.is_empty()) {
                v.push((k, x));
            }
        }
        serde_urlencoded::to_string(v).unwrap_or_default()
    }
}

fn day_ms(s: &str) -> Result<i64, Reject> {
    let d = crate::project::parse_date(s.trim())
        .ok_or_else(|| Reject::Bad("Dates must be YYYY-MM-DD.".into()))?;
    Ok((d.midnight().assume_utc().unix_timestamp_nanos() / 1_000_000) as i64)
}

/// The project's transfers the query selects, newest first; checks the role.
async fn select_transfers(
    web: &Arc<Web>,
    who: &Who,
    q: &TransfersQuery,
) -> Result<(String, Vec<TransferRecord>), Reject> {
    let (project, filter) = transfer_filter(who, q)?;
    let v = crate::control::project_transfers(web.node.clone(), project.clone(), filter).await?;
    Ok((project, v))
}

/// The project and the filter of a Transfers query; checks the role.
fn transfer_filter(
    who: &Who,
    q: &TransfersQuery,
) -> Result<(String, crate::index::TransferFilter), Reject> {
    let project = q
        .project
        .clone()
        .filter(|p| !p.is_empty())
        .ok_or(Reject::Bad("Choose a project.".into()))?;
    who.need(&project, Role::Viewer)?;
    let state = match q.state.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => {
            Some(TransferState::parse(s).ok_or_else(|| Reject::Bad("Unknown state.".into()))?)
        }
        None => None,
    };
    let since = q
        .since
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(day_ms)
        .transpose()?;
    let until = q
        .until
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(day_ms)
        .transpose()?
        .map(|u| u + 86_400_000);
    let filter = crate::index::TransferFilter {
        state,
        created_from_ms: since,
        created_before_ms: until,
    };
    Ok((project, filter))
}

async fn transfers_page(
    State(web): State<Arc<Web>>,
    who: Who,
    Query(mut q): Query<TransfersQuery>,
) -> Result<Response, Reject> {
    let visible = who.projects(&web, Role::Viewer);
    if visible.is_empty() {
        return Err(Reject::Forbidden);
    }
    if q.project.as_deref().is_none_or(str::is_empty) {
        if visible.len() == 1 {
            q.project = visible.first().cloned();
        } else {
            let body = html! {
                p { "Choose a project:" }
                ul { @for p in &visible { li { a href={ "/transfers?project=" (p) } { (p) } } } }
            };
            return Ok(page("Transfers", Nav::Transfers, Some(&who.s), None, body).into_response());
        }
    }
    let (project, filter) = transfer_filter(&who, &q)?;
    // The counts and this page's rows only, from the index's order of the project's transfers.
    let pg = crate::control::transfer_page(
        web.node.clone(),
        project.clone(),
        filter,
        q.page.unwrap_or(1),
        PAGE_ROWS,
    )
    .await?;
    let (pages_n, page_no, shown) = (pg.pages, pg.page, &pg.rows);
    let counts: std::collections::BTreeMap<&str, u64> =
        pg.by_state.iter().map(|(s, n)| (s.as_str(), *n)).collect();
    let qs = q.query_string();
    let body = html! {
        form.filters method="get" action="/transfers" {
            div { label for="project" { "Project" }
                select id="project" name="project" { @for p in &visible { option value=(p) selected[*p == project] { (p) } } } }
            div { label for="state" { "State" }
                select id="state" name="state" {
                    option value="" { "any" }
                    @for s in TransferState::ALL { option value=(s.as_str()) selected[q.state.as_deref() == Some(s.as_str())] { (s.as_str()) } }
                } }
            div { label for="since" { "Created from" } input id="since" name="since" type="date" value=(q.since.clone().unwrap_or_default()); }
            div { label for="until" { "to" } input id="until" name="until" type="date" value=(q.until.clone().unwrap_or_default()); }
            div { button type="submit" { "Show" } }
        }
        p { (pg.total) " transfers"
            @for (s, n) in &counts { " · " (s) " " (n) }
            " · " a href={ "/transfers.csv?" (qs) } download { "Download CSV" } }
        div.scroll { table {
            thead { tr { th { "Created" } th { "Participant" } th { "Event" } th { "State" } th.num { "Instances" } th.num { "Sent" } th { "Verified" } th { "Problem" } } }
            tbody { @for t in shown {
                tr {
                    td { a href={ "/transfer/" (t.id) } { (pages::time(t.created_ms)) } }
                    td { (t.participant) } td { (t.event) }
                    td class={ "state-" (t.state.as_str()) } { (t.state.as_str()) }
                    td.num { (t.instances) } td.num { (t.sent) }
                    td { (t.verified_ms.map(pages::time).unwrap_or_default()) }
                    td { (t.reason.clone().unwrap_or_default()) }
                }
            } }
        } }
        (pages::pager("/transfers", &qs, page_no, pages_n))
    };
    Ok(page("Transfers", Nav::Transfers, Some(&who.s), None, body).into_response())
}

async fn transfers_csv(
    State(web): State<Arc<Web>>,
    who: Who,
    Query(q): Query<TransfersQuery>,
) -> Result<Response, Reject> {
    let (project, list) = select_transfers(&web, &who, &q).await?;
    let mut w = csv::Writer::from_writer(Vec::new());
    let row = |w: &mut csv::Writer<Vec<u8>>, r: &[String]| {
        w.write_record(r)
            .map_err(|e| Reject::Internal(e.to_string()))
    };
    row(
        &mut w,
        &[
            "transfer",
            "created",
            "project",
            "participant",
            "event",
            "state",
            "instances",
            "deidentified",
            "sent",
            "verified",
            "reason",
        ]
        .map(String::from),
    )?;
    for t in &list {
        row(
            &mut w,
            &[
                t.id.clone(),
                crate::clock::iso_ms(t.created_ms),
                t.project.clone(),
                t.participant.clone(),
                t.event.clone(),
                t.state.as_str().to_string(),
                t.instances.to_string(),
                t.deidentified.to_string(),
                t.sent.to_string(),
                t.verified_ms.map(crate::clock::iso_ms).unwrap_or_default(),
                t.reason.clone().unwrap_or_default(),
            ],
        )?;
    }
    let bytes = w
        .into_inner()
        .map_err(|e| Reject::Internal(e.to_string()))?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"transfers-{project}.csv\""),
            ),
        ],
        bytes,
    )
        .into_response())
}

// ---- coupling lists ----

fn coupling_page(who: &Who, projects: &[String], result: Option<Markup>) -> Markup {
    page(
        "Coupling lists",
        Nav::Coupling,
        Some(&who.s),
        None,
        html! {
            @if let Some(r) = result { (r) }
            p { "A CSV file with the columns " code { "accession_number" } " or " code { "study_instance_uid" } ", "
                code { "project" } ", " code { "participant" } ", " code { "event" }
                ". It is loaded whole or not at all; every bad line is reported with its number. Projects you may fill: " (projects.join(", ")) "." }
            form method="post" action="/coupling" enctype="multipart/form-data" {
                (pages::csrf(&who.s))
                label for="file" { "CSV file" }
                input id="file" name="file" type="file" accept=".csv,text/csv" required;
                label { input type="checkbox" name="replace" value="yes"; " Replace earlier couplings of the same keys" }
                div { button type="submit" { "Upload" } }
            }
        },
    )
}

async fn coupling_form(State(web): State<Arc<Web>>, who: Who) -> Result<Response, Reject> {
    let projects = who.projects(&web, Role::Assigner);
    if projects.is_empty() {
        return Err(Reject::Forbidden);
    }
    Ok(coupling_page(&who, &projects, None).into_response())
}

async fn coupling_upload(
    State(web): State<Arc<Web>>,
    who: Who,
    mut mp: Multipart,
) -> Result<Response, Reject> {
    let projects = who.projects(&web, Role::Assigner);
    if projects.is_empty() {
        return Err(Reject::Forbidden);
    }
    let (mut csrf, mut file, mut replace) = (None, None, false);
    while let Some(field) = mp
        .next_field()
        .await
        .map_err(|e| Reject::Bad(format!("The upload could not be read: {e}")))?
    {
        match field.name() {
            Some("csrf") => {
                csrf = Some(field.text().await.map_err(|e| Reject::Bad(e.to_string()))?)
            }
            Some("replace") => replace = true,
            Some("file") => {
                let b = field
                    .bytes()
                    .await
                    .map_err(|e| Reject::Bad(format!("The file could not be read: {e}")))?;
                if b.len() > COUPLING_MAX_BYTES {
                    return Err(Reject::Bad("The file is too large.".into()));
                }
                file = Some(b);
            }
            _ => {}
        }
    }
    who.csrf(csrf.as_deref().unwrap_or(""))?;
    let Some(file) = file else {
        return Err(Reject::Bad("Choose a file.".into()));
    };
    let text = match String::from_utf8(file.to_vec()) {
        Ok(t) => t,
        Err(_) => {
            let r = html! { p.error role="alert" { "The file is not UTF-8 text: nothing was loaded." } };
            return Ok((
                StatusCode::UNPROCESSABLE_ENTITY,
                coupling_page(&who, &projects, Some(r)),
            )
                .into_response());
        }
    };
    let node = web.node.clone();
    let actor = who.actor();
    let mine = projects.clone();
    let report = blocking(move || {
        // Every project the file names must be one the user may assign to: checked on the
        // parsed rows before anything is loaded.
        let today = crate::assign::utc_date(node.clock.now_ms());
        if let Ok(rows) = crate::assign::coupling::parse(&text, &node.policy, today) {
            let foreign: Vec<crate::assign::coupling::LineError> = rows
                .iter()
                .filter(|r| !mine.contains(&r.project))
                .map(|r| crate::assign::coupling::LineError {
                    line: r.line,
                    message: format!("you may not assign to project {}", r.project),
                })
                .collect();
            if !foreign.is_empty() {
                return Ok(crate::assign::coupling::ImportReport {
                    errors: foreign,
                    ..Default::default()
                });
            }
        }
        crate::control::import_coupling_as(&node, &actor, &text, replace)
    })
    .await?;
    let ok = report.errors.is_empty();
    let r = html! {
        @if ok {
            div.box role="status" {
                p.ok { "Loaded " (report.rows) " rows (" (report.unchanged) " unchanged, " (report.replaced) " replaced)." }
                @if !report.assigned.is_empty() { p { (report.assigned.len()) " studies already here were assigned." } }
                @for x in &report.refused { p.error { (x) } }
            }
        } @else {
            div.box role="alert" {
                p.error { "Nothing was loaded: " (report.errors.len()) " bad lines." }
                table {
                    thead { tr { th.num { "Line" } th { "Problem" } } }
                    tbody { @for e in &report.errors { tr { td.num { (e.line) } td { (e.message) } } } }
                }
            }
        }
    };
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    Ok((code, coupling_page(&who, &projects, Some(r))).into_response())
}

// ---- review ----

#[derive(Deserialize, Default)]
struct ProjectQuery {
    #[serde(default)]
    project: Option<String>,
}

async fn review_page(
    State(web): State<Arc<Web>>,
    who: Who,
    Query(q): Query<ProjectQuery>,
) -> Result<Response, Reject> {
    let managed = who.projects(&web, Role::Manager);
    let project = match q.project.filter(|p| !p.is_empty()) {
        Some(p) => {
            who.need(&p, Role::Manager)?;
            if !web.node.config.projects.contains_key(&p) {
                return Err(Reject::NotFound);
            }
            p
        }
        None if managed.len() == 1 => {
            return Ok(Redirect::to(&format!("/review?project={}", managed[0])).into_response())
        }
        None if managed.is_empty() => return Err(Reject::Forbidden),
        None => {
            let body = html! { p { "Choose a project:" } ul { @for p in &managed { li { a href={ "/review?project=" (p) } { (p) } } } } };
            return Ok(page("Review", Nav::Review, Some(&who.s), None, body).into_response());
        }
    };
    let node = web.node.clone();
    let p = project.clone();
    let inv = blocking(move || node.store.review(&p).map_err(|e| e.to_string()))
        .await?
        .unwrap_or_else(|| crate::model::ReviewInventory::empty(&project));
    let body = html! {
        p { "Every element that left the box for " strong { (project) } " after de-identification: "
            (inv.transfers) " transfers, " (inv.instances) " instances"
            @if inv.updated_ms > 0 { ", last added " (pages::time(inv.updated_ms)) } ". "
            "Look for a value that should not be there." }
        @if inv.tags_capped { p.error { "More elements left than the inventory keeps (2000): some are not listed." } }
        div.scroll { table id="review-tags" {
            caption.hint { "Distinct values are counted exactly up to 1000; samples are the first five distinct values, cut to 64 characters." }
            thead { tr { th { "Element" } th { "Keyword" } th { "VR" } th.num { "Instances" } th.num { "Distinct" } th { "Sample values" } } }
            tbody { @for t in &inv.tags {
                tr {
                    td { code { (t.path) } } td { (t.keyword) } td { (t.vr) }
                    td.num { (t.instances) }
                    td.num { (t.distinct) @if t.distinct_capped { "+" } }
                    td { @for (i, v) in t.samples.iter().enumerate() {
                        @if i > 0 { br; }
                        @if v.is_empty() { span.hint { "(empty)" } } @else { (v) }
                    } }
                }
            } }
        } }
        h2 { "Private creators" }
        @if inv.private_creators.is_empty() {
            p { "None: no private element left the box." }
        } @else {
            table {
                thead { tr { th { "Group" } th { "Creator" } th.num { "Instances" } } }
                tbody { @for c in &inv.private_creators { tr { td { (c.group) } td { (c.creator) } td.num { (c.instances) } } } }
            }
        }
    };
    Ok(page("Review", Nav::Review, Some(&who.s), None, body).into_response())
}

// ---- audit ----

#[derive(Deserialize, Default)]
struct AuditQuery {
    #[serde(default)]
    project: Option<String>,
    #[serde(default)]
    page: Option<usize>,
}

async fn audit_page(
    State(web): State<Arc<Web>>,
    who: Who,
    Query(q): Query<AuditQuery>,
) -> Result<Response, Reject> {
    let managed = who.projects(&web, Role::Manager);
    let project = q.project.clone().filter(|p| !p.is_empty());
    match &project {
        Some(p) => who.need(p, Role::Manager)?,
        None if who.grants().admin => {}
        None if managed.len() == 1 => {
            return Ok(Redirect::to(&format!("/audit?project={}", managed[0])).into_response());
        }
        None if managed.is_empty() => return Err(Reject::Forbidden),
        None => {
            let body = html! { p { "Choose a project:" } ul { @for p in &managed { li { a href={ "/audit?project=" (p) } { (p) } } } } };
            return Ok(page("Audit", Nav::Audit, Some(&who.s), None, body).into_response());
        }
    }
    let node = web.node.clone();
    let p = project.clone();
    let mut v = blocking(move || node.store.audit_trail().map_err(|e| e.to_string())).await?;
    v.retain(|a| p.as_ref().is_none_or(|p| a.project.as_ref() == Some(p)));
    v.reverse();
    let pages_n = v.len().div_ceil(PAGE_ROWS).max(1);
    let page_no = q.page.unwrap_or(1).clamp(1, pages_n);
    let shown = &v[(page_no - 1) * PAGE_ROWS..(page_no * PAGE_ROWS).min(v.len())];
    let qs = project
        .as_ref()
        .map(|p| format!("project={p}"))
        .unwrap_or_default();
    let body = html! {
        p { @if let Some(p) = &project { "Changes to project " (p) ", newest first." } @else { "Every change, newest first." } }
        @if who.grants().admin {
            p { "Project: " a href="/audit" { "all" } @for p in web.node.config.projects.keys() { " · " a href={ "/audit?project=" (p) } { (p) } } }
        }
        div.scroll { table {
            thead { tr { th.num { "#" } th { "Time" } th { "Who" } th { "What" } th { "Project" } th { "Participant" } th { "Event" } th { "Detail" } } }
            tbody { @for a in shown {
                tr {
                    td.num { (a.seq) } td { (pages::time(a.time_ms)) } td { (a.actor) } td { (a.action) }
                    td { (a.project.clone().unwrap_or_default()) } td { (a.participant.clone().unwrap_or_default()) }
                    td { (a.event.clone().unwrap_or_default()) } td { (a.detail) }
                }
            } }
        } }
        (pages::pager("/audit", &qs, page_no, pages_n))
    };
    Ok(page("Audit", Nav::Audit, Some(&who.s), None, body).into_response())
}

// ---- users (admin) ----

/// The role fields of a user form; `id` prefixes the element IDs (unique on the page).
fn role_fields(web: &Web, id: &str, g: Option<&Grants>) -> Markup {
    html! {
        label { input type="checkbox" name="admin" value="yes" checked[g.is_some_and(|g| g.admin)]; " Administrator (everything)" }
        @for p in web.node.config.projects.keys() {
            label for={ (id) "-role-" (p) } { "Role in " (p) }
            select id={ (id) "-role-" (p) } name={ "role." (p) } {
                option value="" { "none" }
                @for r in [Role::Viewer, Role::Assigner, Role::Manager] {
                    option value=(r.as_str()) selected[g.and_then(|g| g.roles.get(p)) == Some(&r)] { (r.as_str()) }
                }
            }
        }
    }
}

async fn users_render(
    web: &Arc<Web>,
    who: &Who,
    message: Option<(bool, String)>,
) -> Result<Response, Reject> {
    let node = web.node.clone();
    let local = blocking(move || node.store.accounts().map_err(|e| e.to_string())).await?;
    let cfg = &web.node.config.web;
    let body = html! {
        @if let Some((ok, m)) = &message {
            @if *ok { p.ok role="status" { (m) } } @else { p.error role="alert" { (m) } }
        }
        h2 { "Accounts" }
        div.scroll { table {
            thead { tr { th { "Name" } th { "From" } th { "Roles" } th { "State" } th { "Change" } } }
            tbody {
                @for a in &cfg.accounts {
                    tr { td { (a.name) } td { "configuration" } td { (Grants { admin: a.admin, roles: a.roles.clone() }.describe()) }
                         td { @if a.disabled { "disabled" } @else { "active" } } td { span.hint { "change it in the configuration bundle" } } }
                }
                @for a in &local {
                    tr {
                        td { (a.name) } td { "local" } td { (a.grants.describe()) }
                        td { @if a.disabled { "disabled" } @else { "active" } }
                        td {
                            details {
                                summary { "Change " (a.name) }
                                form method="post" action={ "/admin/users/" (a.name) } {
                                    (pages::csrf(&who.s))
                                    input type="hidden" name="op" value="roles";
                                    (role_fields(web, &format!("user-{}", a.name), Some(&a.grants)))
                                    div { button type="submit" { "Save roles" } }
                                }
                                form method="post" action={ "/admin/users/" (a.name) } {
                                    (pages::csrf(&who.s))
                                    input type="hidden" name="op" value="password";
                                    label for={ "pw-" (a.name) } { "New password" }
                                    input id={ "pw-" (a.name) } name="password" type="password" autocomplete="new-password";
                                    div { button type="submit" { "Set password" } }
                                }
                                form method="post" action={ "/admin/users/" (a.name) } {
                                    (pages::csrf(&who.s))
                                    input type="hidden" name="op" value=(if a.disabled { "enable" } else { "disable" });
                                    button type="submit" { @if a.disabled { "Enable" } @else { "Disable" } }
                                }
                            }
                        }
                    }
                }
            }
        } }
        @if let Some(l) = &cfg.ldap {
            p.hint { "Directory accounts log in through " (l.url) "; their roles come from their groups." }
        }
        h2 { "Add a local account" }
        form method="post" action="/admin/users" {
            (pages::csrf(&who.s))
            label for="new-name" { "Account name" }
            input id="new-name" name="name" required autocomplete="off";
            label for="new-password" { "Password (at least " (auth::MIN_PASSWORD_LEN) " characters)" }
            input id="new-password" name="password" type="password" required autocomplete="new-password";
            (role_fields(web, "new", None))
            div { button type="submit" { "Add" } }
        }
    };
    let code = match &message {
        Some((false, _)) => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::OK,
    };
    Ok((code, page("Users", Nav::Users, Some(&who.s), None, body)).into_response())
}

async fn users_page(State(web): State<Arc<Web>>, who: Who) -> Result<Response, Reject> {
    who.need_admin()?;
    users_render(&web, &who, None).await
}

/// The roles of a user form: `admin=yes` and `role.PROJECT=ROLE`.
fn grants_of(web: &Web, form: &[(String, String)]) -> Result<Grants, Reject> {
    let mut g = Grants::default();
    for (k, v) in form {
        if k == "admin" {
            g.admin = v == "yes";
        } else if let Some(p) = k.strip_prefix("role.") {
            if v.is_empty() {
                continue;
            }
            if !web.node.config.projects.contains_key(p) {
                return Err(Reject::Bad(format!("Project {p} is not configured.")));
            }
            let r = Role::parse(v).ok_or_else(|| Reject::Bad(format!("{v} is not a role.")))?;
            g.roles.insert(p.to_string(), r);
        }
    }
    Ok(g)
}

fn field<'a>(form: &'a [(String, String)], name: &str) -> &'a str {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or("")
}

async fn user_add(
    State(web): State<Arc<Web>>,
    who: Who,
    Form(form): Form<Vec<(String, String)>>,
) -> Result<Response, Reject> {
    who.csrf(field(&form, "csrf"))?;
    who.need_admin()?;
    let name = field(&form, "name").trim().to_string();
    let password = field(&form, "password").to_string();
    if !crate::config::valid_account_name(&name) {
        return users_render(
            &web,
            &who,
            Some((
                false,
                "The name must be 1 to 64 letters, digits or . _ - @.".into(),
            )),
        )
        .await;
    }
    if let Err(m) = auth::check_new_password(&name, &password) {
        return users_render(&web, &who, Some((false, m))).await;
    }
    let g = grants_of(&web, &form)?;
    match add_account(&web, &who.actor(), &name, &password, g, false).await {
        Ok(()) => users_render(&web, &who, Some((true, format!("Account {name} added.")))).await,
        Err(m) => users_render(&web, &who, Some((false, m))).await,
    }
}

async fn user_change(
    State(web): State<Arc<Web>>,
    who: Who,
    UrlPath(name): UrlPath<String>,
    Form(form): Form<Vec<(String, String)>>,
) -> Result<Response, Reject> {
    who.csrf(field(&form, "csrf"))?;
    who.need_admin()?;
    let change = match field(&form, "op") {
        "roles" => crate::control::AccountChange::Grants(grants_of(&web, &form)?),
        "disable" => crate::control::AccountChange::Disable,
        "enable" => crate::control::AccountChange::Enable,
        "password" => {
            let pw = field(&form, "password").to_string();
            if let Err(m) = auth::check_new_password(&name, &pw) {
                return users_render(&web, &who, Some((false, m))).await;
            }
            let hash = blocking(move || auth::hash_password(&pw)).await?;
            crate::control::AccountChange::PasswordHash(hash)
        }
        _ => return Err(Reject::Bad("Unknown change.".into())),
    };
    let ends_sessions = !matches!(
        change,
        crate::control::AccountChange::Grants(_) | crate::control::AccountChange::Enable
    );
    let node = web.node.clone();
    let (actor, n) = (who.actor(), name.clone());
    let r = blocking(move || Ok(crate::control::account_change(&node, &actor, &n, change))).await?;
    match r {
        Ok(what) => {
            if ends_sessions {
                web.sessions.remove_user(&name);
            }
            users_render(&web, &who, Some((true, what))).await
        }
        Err(m) => users_render(&web, &who, Some((false, m))).await,
    }
}
