//! The web page (issue 17): HTTPS only (rustls, TLS 1.2 and 1.3), served by the daemon on
//! `[web] listen` (embedded default `127.0.0.1:8443`). Server-rendered HTML (maud); every page
//! works without JavaScript.
//!
//! - `auth.rs`: passwords (Argon2id), sessions in memory, CSRF tokens, login throttling, the
//!   one-time setup link of a box without accounts.
//! - `cert.rs`: the configured certificate, or a self-signed one made at first start.
//! - `pages.rs`: the page frame and shared pieces (escaping by maud).
//! - `views.rs`: the handlers, one per page or form.
//!
//! Every request passes [`guard`]: security headers on every answer (HSTS, a CSP that allows
//! no inline script, `X-Frame-Options: DENY`, `Cache-Control: no-store` on everything but the
//! style sheet); a `POST` must come from our own origin (`Origin`, else 403) and, once logged
//! in, carry the session's CSRF token (checked by the form extractors in `views.rs`). A panic
//! in a handler answers 500 and leaves the daemon running (`CatchPanicLayer`).
//!
//! Roles are checked on the server for every page and form ([`views`]); no patient value or
//! accession number goes into a URL, a page title or a log line: studies are named by their
//! quarantine keys, filters that take an accession number are `POST` forms.

pub mod auth;
pub mod cert;
mod pages;
mod views;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::node::Node;

/// Connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 512;
/// A TLS handshake must finish within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Request headers must arrive within this.
const HEADER_TIMEOUT: Duration = Duration::from_secs(15);

/// The page's shared state.
pub struct Web {
    pub(crate) node: Arc<Node>,
    pub(crate) sessions: auth::Sessions,
    pub(crate) throttle: auth::Throttle,
    pub(crate) setup: auth::Setup,
    pub(crate) started: Instant,
    /// The DICOM listener's address (status).
    pub(crate) dicom_listen: String,
    /// Origins whose forms are accepted besides `https://` + the request's Host.
    pub(crate) origins: Vec<String>,
}

/// The bound listener, made before the daemon says it is ready.
pub struct Bound {
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    pub addr: SocketAddr,
}

/// Bind `[web] listen` with its certificate (made when none is configured). `None` when the
/// page is switched off.
pub async fn bind(node: &Node) -> Result<Option<Bound>, String> {
    let cfg = &node.config.web;
    if !cfg.enabled {
        return Ok(None);
    }
    let (cert, key, made) = cert::ensure(cfg, node.quarantine.root())?;
    if made {
        tracing::info!(
            cert = %cert.display(),
            "web page: no certificate configured, made a self-signed one"
        );
    }
    let tls = crate::tls::web_server_config(&cert, &key)?;
    let listener = TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| format!("web.listen {}: {e}", cfg.listen))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("web.listen {}: {e}", cfg.listen))?;
    Ok(Some(Bound {
        listener,
        tls,
        addr,
    }))
}

impl Web {
    fn new(node: Arc<Node>, dicom_listen: String, addr: SocketAddr) -> Web {
        let cfg = &node.config.web;
        let mut origins = vec![format!("https://{addr}")];
        if let Some(u) = &cfg.public_url {
            origins.push(u.trim_end_matches('/').to_string());
        }
        Web {
            sessions: auth::Sessions::new(cfg),
            throttle: auth::Throttle::new(cfg),
            setup: auth::Setup::default(),
            started: Instant::now(),
            dicom_listen,
            origins,
            node,
        }
    }

    /// The address the setup link names.
    fn base_url(&self) -> String {
        self.origins
            .last()
            .cloned()
            .unwrap_or_else(|| "https://localhost".into())
    }

    /// Is there no way to log in yet (no account in the index or the configuration, and no
    /// directory group that makes an admin)?
    fn needs_setup(&self) -> Result<bool, String> {
        let cfg = &self.node.config.web;
        if !cfg.accounts.is_empty() {
            return Ok(false);
        }
        if cfg.ldap.as_ref().is_some_and(|l| {
            l.groups.values().flatten().any(|g| {
                matches!(
                    crate::config::Grant::parse(g),
                    Ok(crate::config::Grant::Admin)
                )
            })
        }) {
            return Ok(false);
        }
        Ok(self
            .node
            .store
            .accounts()
            .map_err(|e| e.to_string())?
            .is_empty())
    }
}

/// Serve the page on `bound` until `shutdown`. On a box without accounts, log the one-time
/// setup link first.
pub async fn serve(
    bound: Bound,
    node: Arc<Node>,
    dicom_listen: String,
    shutdown: CancellationToken,
) {
    let web = Arc::new(Web::new(node, dicom_listen, bound.addr));
    let w = web.clone();
    match tokio::task::spawn_blocking(move || w.needs_setup()).await {
        Ok(Ok(true)) => match web.setup.arm() {
            Ok(token) => tracing::warn!(
                "no web account yet: open {}/setup/{token} once to set the first admin's password (nothing else is reachable until then)",
                web.base_url()
            ),
            Err(e) => tracing::error!(error = %e, "web page: no setup link"),
        },
        Ok(Ok(false)) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "web page: accounts not read from the index"),
        Err(e) => tracing::error!(error = %e, "web page: setup check"),
    }
    tracing::info!(listen = %bound.addr, "fiona serving the web page (HTTPS)");
    let app = views::router(web.clone())
        .layer(axum::middleware::from_fn_with_state(web.clone(), guard))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(on_panic));
    let acceptor = tokio_rustls::TlsAcceptor::from(bound.tls);
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = bound.listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "web page: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                // Scanners and browsers that do not trust the certificate end here; nothing
                // worth a log line.
                _ => return,
            };
            let svc = hyper::service::service_fn(
                move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut()
                        .insert(axum::extract::ConnectInfo(peer));
                    let mut app = app.clone();
                    async move {
                        use tower::Service;
                        app.call(req.map(axum::body::Body::new)).await
                    }
                },
            );
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(64 * 1024)
                .serve_connection(hyper_util::rt::TokioIo::new(tls), svc);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
                }
            }
        });
    }
    tracing::info!("web page stopped");
}

fn on_panic(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    // The panic message is not repeated: it could hold a value.
    tracing::error!("web page: a handler panicked; answered 500");
    (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
}

/// The Content-Security-Policy of every answer: our own style sheet, no script at all
/// (nothing inline, nothing from elsewhere), forms only to ourselves, no framing.
pub const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Every request: a `POST` from another origin is refused; every answer gets the security
/// headers.
async fn guard(State(web): State<Arc<Web>>, req: Request, next: Next) -> Response {
    if req.method() == Method::POST && !same_origin(&web, &req) {
        tracing::warn!(path = %views::route_of(req.uri().path()), "web page: form from another origin refused");
        let mut r = (
            StatusCode::FORBIDDEN,
            "forms are accepted only from this page",
        )
            .into_response();
        security_headers(&mut r, false);
        return r;
    }
    let cacheable = req.uri().path().starts_with("/static/");
    let mut r = next.run(req).await;
    security_headers(&mut r, cacheable);
    r
}

fn same_origin(web: &Web, req: &Request) -> bool {
    let Some(origin) = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok());
    host.is_some_and(|h| origin == format!("https://{h}"))
        || web.origins.iter().any(|o| o == origin)
}

fn security_headers(r: &mut Response, cacheable: bool) {
    let h = r.headers_mut();
    h.insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static("max-age=31536000"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Not `no-referrer`: with it, browsers send `Origin: null` with a form, and the origin
    // check needs the real one. No URL carries patient data.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(if cacheable {
            "max-age=3600"
        } else {
            "no-store"
        }),
    );
}
