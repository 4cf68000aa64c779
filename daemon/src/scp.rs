//! The receive stage: a DICOM C-ECHO and C-STORE SCP on tokio.
//!
//! [`run`] takes a bound listener and a shutdown token (mini-redis style), so the binary and
//! the tests drive it the same way. Each accepted connection becomes one task:
//!
//! 1. Admission (`admission`): the address allow-list at accept (closed at once), the
//!    per-address and unassociated budgets while the A-ASSOCIATE-RQ arrives, and only then
//!    an association slot (more are refused with A-ASSOCIATE-RJ "local limit exceeded"); the
//!    calling AE allow-list and called AE title are checked during negotiation
//!    (A-ASSOCIATE-RJ on mismatch), and a request without presentation contexts is refused.
//! 2. Negotiation accepts Verification and every storage SOP class of the standard
//!    dictionary, with the first proposed transfer syntax that dicom-rs registers (no
//!    transcoding on ingest).
//! 3. P-DATA is handled PDV by PDV: the data set of a C-STORE is written to the quarantine as
//!    it arrives and scanned by [`header::Scanner`] at the same time, so memory does not grow
//!    with instance size.
//! 4. At the last fragment the instance is checked, made durable and committed (see
//!    `quarantine` and `committer`); only then is the C-STORE-RSP sent.
//!
//! Bad input never ends the daemon: a data set that does not parse goes to the rejected area
//! with its reason and gets 0xC000 (or 0xA900 when it contradicts its command); the
//! association stays usable. A C-STORE whose command cannot be acted on (Affected SOP
//! Instance UID missing, empty, not a UID or too long; SOP class not the presentation
//! context's) gets 0xA900 (0x0122 on a context that is no storage class) and is treated the
//! same way: its data set is kept in the rejected area, the reason names the element and the
//! problem (never the value), it is counted and logged. A full disk (while writing the file or
//! during the index commit), or free space below the floor, gets 0xA700 and leaves nothing
//! behind; the index reopens itself after such an error (`index::recovering`).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dicom_ul::association::server::{AccessControl, AsyncServerAssociation};
use dicom_ul::association::Association;
use dicom_ul::pdu::{
    AbortRQSource, AssociationRJ, AssociationRJResult,
    AssociationRJServiceProviderPresentationReason, AssociationRJServiceUserReason,
    AssociationRJSource, PDataValue, PDataValueType, PresentationContextResultReason, UserIdentity,
};
use dicom_ul::{Pdu, ServerAssociationOptions};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::dimse::{self, field, status, Command};
use crate::header::{Checker, HeaderError, HeaderFields};
#[cfg(test)]
use crate::header::{Encoding, Scanner};
use crate::index::{CommitOutcome, NewInstance, Origin, RejectRecord};
use crate::quarantine::{is_disk_full, Incoming};
use crate::storage_classes::STORAGE_SOP_CLASSES;

/// Verification SOP Class.
pub const VERIFICATION: &str = "1.2.840.10008.1.1";
pub use crate::part10::{file_meta, IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME};

pub use crate::node::{Node, Stats};

/// Accept associations until `shutdown` fires, then give in-flight associations the
/// configured grace period and abort the rest.
pub async fn run(
    listener: TcpListener,
    node: Arc<Node>,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: CancellationToken,
) {
    let tracker = TaskTracker::new();
    let hard_stop = CancellationToken::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok((sock, peer)) => {
                    let node = node.clone();
                    let shutdown = shutdown.clone();
                    let hard_stop = hard_stop.clone();
                    let tls = tls.clone();
                    tracker.spawn(async move {
                        handle_connection(sock, peer, node, tls, shutdown, hard_stop).await;
                    });
                }
                Err(e) => {
                    // e.g. EMFILE: back off instead of spinning
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
    drop(listener);
    tracker.close();
    let grace = Duration::from_secs(node.config.shutdown_grace_secs);
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!(
            associations = tracker.len(),
            "grace period over, aborting associations"
        );
        hard_stop.cancel();
        tracker.wait().await;
    }
}

/// Access control decided per connection: the peer address is known before negotiation.
struct Access {
    peer: SocketAddr,
    allowed_callers: Vec<String>,
    accept_any_called: bool,
    /// Called AE titles answered besides `this_ae_title` (auto-ID and routing titles).
    called_titles: Vec<String>,
    /// Over TLS: takes the association slot once the request is acceptable.
    slot: Option<SlotTaker>,
}

/// Takes an association slot during negotiation (TLS, where the request cannot be seen
/// before the handshake) and keeps it for the connection.
struct SlotTaker {
    limit: Arc<Semaphore>,
    taken: Arc<std::sync::Mutex<Option<tokio::sync::OwnedSemaphorePermit>>>,
}

impl AccessControl for Access {
    fn check_access(
        &self,
        this_ae_title: &str,
        calling_ae_title: &str,
        called_ae_title: &str,
        _user_identity: Option<&UserIdentity>,
    ) -> Result<(), AssociationRJServiceUserReason> {
        // Titles outside the AE repertoire (a newline, ESC, NUL, backslash) are refused
        // before anything else uses them; the log shows them escaped.
        use crate::ul_error::{escape_ae, valid_ae};
        if !valid_ae(called_ae_title) {
            tracing::warn!(
                peer = %self.peer,
                called_ae = %escape_ae(called_ae_title),
                "association refused: called AE title outside the AE repertoire"
            );
            return Err(AssociationRJServiceUserReason::CalledAETitleNotRecognized);
        }
        if !valid_ae(calling_ae_title) {
            tracing::warn!(
                peer = %self.peer,
                calling_ae = %escape_ae(calling_ae_title),
                "association refused: calling AE title outside the AE repertoire"
            );
            return Err(AssociationRJServiceUserReason::CallingAETitleNotRecognized);
        }
        if !self.accept_any_called
            && called_ae_title.trim() != this_ae_title.trim()
            && !self
                .called_titles
                .iter()
                .any(|t| t == called_ae_title.trim())
        {
            return Err(AssociationRJServiceUserReason::CalledAETitleNotRecognized);
        }
        if !self.allowed_callers.is_empty()
            && !self
                .allowed_callers
                .iter()
                .any(|a| a.trim() == calling_ae_title.trim())
        {
            return Err(AssociationRJServiceUserReason::CallingAETitleNotRecognized);
        }
        if let Some(slot) = &self.slot {
            let Ok(permit) = slot.limit.clone().try_acquire_owned() else {
                tracing::warn!(
                    peer = %self.peer,
                    "association refused: limit of concurrent associations reached"
                );
                return Err(AssociationRJServiceUserReason::NoReasonGiven);
            };
            if let Ok(mut g) = slot.taken.lock() {
                *g = Some(permit);
            }
        }
        Ok(())
    }
}

/// Refuse an association: read (and drop) its A-ASSOCIATE-RQ, so closing does not reset the
/// connection before the peer reads our answer, then send the A-ASSOCIATE-RJ `pdu`. Bounded
/// in time and bytes.
async fn refuse_with<S>(mut sock: S, pdu: Pdu)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::AsyncReadExt;
    let read_rq = async {
        let mut head = [0u8; 6];
        sock.read_exact(&mut head).await?;
        let len = u32::from_be_bytes([head[2], head[3], head[4], head[5]]);
        // An A-ASSOCIATE-RQ is a few KiB; drop at most 64 KiB of it.
        let mut rest = (&mut sock).take(u64::from(len.min(64 * 1024)));
        tokio::io::copy(&mut rest, &mut tokio::io::sink()).await?;
        Ok::<(), std::io::Error>(())
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), read_rq).await;
    let mut buf = Vec::new();
    if dicom_ul::write_pdu(&mut buf, &pdu).is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(5), sock.write_all(&buf)).await;
    }
    // Over TLS the shutdown sends close_notify: bounded like the rest.
    let _ = tokio::time::timeout(Duration::from_secs(5), sock.shutdown()).await;
}

/// Count a connection refused before association and log it (throttled: a flood of them
/// writes one line per 10 s, with the number left out).
fn refused(node: &Node, peer: SocketAddr, why: &'static str) {
    node.stats
        .associations_refused
        .fetch_add(1, Ordering::Relaxed);
    if let Some(left_out) = node.refusals_logged.allow() {
        tracing::warn!(peer = %peer.ip(), left_out, "{why}");
    }
}

/// Wait until the whole first PDU (the A-ASSOCIATE-RQ) is in the socket's receive buffer,
/// without reading it: `Ok(Some(bytes))` when it is (or when it is not an A-ASSOCIATE-RQ, which
/// negotiation then refuses at once), `Ok(None)` when the peer closed first (also after
/// part of a request). A peer that trickles its request waits here, holding no association
/// slot. Returns the bytes peeked (at most 64 KiB).
async fn wait_for_request(sock: &TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    const MAX: usize = 64 * 1024;
    let mut buf = vec![0u8; 6];
    // Whether `buf` is sized for the whole PDU yet (the header's length read).
    let mut sized = false;
    loop {
        let n = sock.peek(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        if n >= buf.len() {
            if sized || buf[0] != 0x01 {
                return Ok(Some(buf));
            }
            // The header is here: wait for the whole PDU (also when it declares no body,
            // which negotiation then refuses).
            let len = u32::from_be_bytes([buf[2], buf[3], buf[4], buf[5]]) as usize;
            buf = vec![0u8; (6 + len).min(MAX)];
            sized = true;
            continue;
        }
        // Part of it is here. A peer that closed its side after part of a request will never
        // send the rest (`peek` keeps returning what is there, never 0): closed. Otherwise
        // `peek` would return at once again, so wait a little.
        let ready = sock.ready(tokio::io::Interest::READABLE).await?;
        if ready.is_read_closed() {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether a complete A-ASSOCIATE-RQ (as peeked) proposes at least one presentation context
/// (item type 0x20 after the 68-byte fixed part). Anything malformed counts as proposing
/// one: negotiation refuses it with its own reason.
fn proposes_context(rq: &[u8]) -> bool {
    if rq.len() < 74 || rq[0] != 0x01 {
        return true;
    }
    let mut at = 74;
    while at + 4 <= rq.len() {
        if rq[at] == 0x20 {
            return true;
        }
        at += 4 + u16::from_be_bytes([rq[at + 2], rq[at + 3]]) as usize;
    }
    at != rq.len()
}

/// A-ASSOCIATE-RJ for a request without presentation contexts: permanent, by the service
/// user, no reason given (PS3.8 9.3.4).
fn no_context_rj() -> Pdu {
    Pdu::AssociationRJ(AssociationRJ {
        result: AssociationRJResult::Permanent,
        source: AssociationRJSource::ServiceUser(AssociationRJServiceUserReason::NoReasonGiven),
    })
}

fn busy_rj() -> Pdu {
    Pdu::AssociationRJ(AssociationRJ {
        result: AssociationRJResult::Transient,
        source: AssociationRJSource::ServiceProviderPresentation(
            AssociationRJServiceProviderPresentationReason::LocalLimitExceeded,
        ),
    })
}

async fn handle_connection(
    sock: TcpStream,
    peer: SocketAddr,
    node: Arc<Node>,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: CancellationToken,
    hard_stop: CancellationToken,
) {
    let _ = sock.set_nodelay(true);
    let cfg = &node.config;
    // 1. Address allow-list: closed at once, before any byte or slot.
    if !(node.allow_addrs.is_empty() || node.allow_addrs.iter().any(|n| n.contains(peer.ip()))) {
        refused(
            &node,
            peer,
            "connection closed: address not on the allow-list",
        );
        return;
    }
    // 2, 3. Per-address and unassociated budgets.
    let mut ticket = match node.admission.admit(peer.ip()) {
        Ok(t) => t,
        Err(r) => {
            refused(&node, peer, r.text());
            return;
        }
    };
    let access = Access {
        peer,
        allowed_callers: cfg.allow.calling_ae_titles.clone(),
        accept_any_called: cfg.accept_any_called_ae,
        called_titles: node.called_titles.clone(),
        slot: tls.as_ref().map(|_| SlotTaker {
            limit: node.limit.clone(),
            taken: Arc::default(),
        }),
    };
    let tls_slot = access.slot.as_ref().map(|s| s.taken.clone());
    let mut options = ServerAssociationOptions::new()
        .ae_access_control(access)
        .ae_title(cfg.ae_title.as_str())
        .max_pdu_length(cfg.max_pdu)
        .strict(true)
        .read_timeout(cfg.idle_timeout())
        .write_timeout(cfg.idle_timeout())
        .with_abstract_syntax(VERIFICATION);
    for (uid, _) in STORAGE_SOP_CLASSES {
        options = options.with_abstract_syntax(*uid);
    }
    // The ARTIM bound covers the wait for the request, the TLS handshake and negotiation.
    let artim = tokio::time::Instant::now() + cfg.acse_timeout();
    match tls {
        None => {
            // Wait for the whole request holding only the unassociated budget.
            let rq = match tokio::time::timeout_at(artim, wait_for_request(&sock)).await {
                Ok(Ok(Some(rq))) => rq,
                Ok(Ok(None)) | Ok(Err(_)) => return closed_early(&node, peer, false),
                Err(_) => {
                    refused(
                        &node,
                        peer,
                        "connection closed: no association request within acse_timeout_secs",
                    );
                    return;
                }
            };
            ticket.associating();
            if !proposes_context(&rq) {
                refused(
                    &node,
                    peer,
                    "association refused: no presentation context proposed",
                );
                refuse_with(sock, no_context_rj()).await;
                return;
            }
            // 4. An association slot, only now.
            let Ok(_permit) = node.limit.clone().try_acquire_owned() else {
                refused(
                    &node,
                    peer,
                    "association refused: limit of concurrent associations reached",
                );
                refuse_with(sock, busy_rj()).await;
                return;
            };
            let r = tokio::time::timeout_at(artim, options.establish_async(sock)).await;
            if let Some(assoc) = established(r, &node, peer, false) {
                serve_association(assoc, peer, node, false, shutdown, hard_stop).await;
            }
        }
        Some(config) => {
            // Over TLS the request cannot be seen before the handshake: negotiation takes the
            // slot (`SlotTaker`, refused with A-ASSOCIATE-RJ when none is free).
            let options = options.tls_config(config);
            let r = tokio::time::timeout_at(artim, options.establish_tls_async(sock)).await;
            ticket.associating();
            let permit = tls_slot.and_then(|t| t.lock().ok().and_then(|mut g| g.take()));
            if let Some(assoc) = established(r, &node, peer, true) {
                if permit.is_none() {
                    // Invariant: negotiation succeeds only after `SlotTaker` took a permit.
                    tracing::error!(peer = %peer, "association without a slot aborted");
                    return;
                }
                if assoc.presentation_contexts().is_empty() {
                    refused(
                        &node,
                        peer,
                        "association aborted: no presentation context proposed",
                    );
                    let _ = assoc.abort().await;
                    return;
                }
                serve_association(assoc, peer, node, true, shutdown, hard_stop).await;
            }
            drop(permit);
        }
    }
}

/// A connection that ended before it asked for an association (a port check or a load
/// balancer's probe: connect, then close): counted as refused, logged at INFO, not WARN.
fn closed_early(node: &Node, peer: SocketAddr, tls: bool) {
    node.stats
        .associations_refused
        .fetch_add(1, Ordering::Relaxed);
    tracing::info!(peer = %peer, tls, "connection closed before an association was requested");
}

/// The association, or `None` after counting and logging why there is none.
fn established<S>(
    r: Result<
        Result<AsyncServerAssociation<S>, dicom_ul::association::Error>,
        tokio::time::error::Elapsed,
    >,
    node: &Node,
    peer: SocketAddr,
    tls: bool,
) -> Option<AsyncServerAssociation<S>> {
    let (why, closed) = match r {
        Ok(Ok(a)) => return Some(a),
        Ok(Err(e)) => (
            crate::ul_error::describe(&e),
            matches!(e, dicom_ul::association::Error::ConnectionClosed { .. }),
        ),
        Err(_) => ("association request timed out".to_string(), false),
    };
    if closed {
        closed_early(node, peer, tls);
        return None;
    }
    node.stats
        .associations_refused
        .fetch_add(1, Ordering::Relaxed);
    tracing::warn!(peer = %peer, tls, error = %why, "association not established");
    None
}

async fn serve_association<S>(
    assoc: AsyncServerAssociation<S>,
    peer: SocketAddr,
    node: Arc<Node>,
    tls: bool,
    shutdown: CancellationToken,
    hard_stop: CancellationToken,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
{
    node.stats
        .associations_active
        .fetch_add(1, Ordering::Relaxed);
    node.stats
        .associations_total
        .fetch_add(1, Ordering::Relaxed);
    let origin = Origin {
        calling_ae: assoc.peer_ae_title().trim().to_string(),
        called_ae: assoc.called_ae_title().trim().to_string(),
        peer: peer.ip().to_string(),
    };
    let started = Instant::now();
    let mut a = AssocTask {
        node: node.clone(),
        assoc,
        origin,
        cmd_buf: Vec::new(),
        pending: None,
        stored: 0,
        failed: 0,
        bytes: 0,
    };
    let end = a.serve(shutdown, hard_stop).await;
    // The watchdog's own C-ECHO (`watchdog.rs`: our AE title calling, from this host,
    // nothing stored) every minute would fill the log: it is logged at debug level.
    let self_echo = a.stored == 0
        && a.failed == 0
        && !tls
        && a.origin.calling_ae == node.config.ae_title.trim()
        && peer.ip().is_loopback();
    macro_rules! ended {
        ($log:ident) => {
            tracing::$log!(
                peer_ae = %a.origin.calling_ae,
                peer = %a.origin.peer,
                tls,
                stored = a.stored,
                failed = a.failed,
                bytes = a.bytes,
                millis = started.elapsed().as_millis() as u64,
                end = end,
                "association ended"
            )
        };
    }
    if self_echo {
        ended!(debug);
    } else {
        ended!(info);
    }
    node.stats
        .associations_active
        .fetch_sub(1, Ordering::Relaxed);
}

/// A C-STORE whose data set is arriving.
struct Pending {
    cmd: Command,
    pc_id: u8,
    transfer_syntax: String,
    job: Job,
}

enum Job {
    /// Receive into the quarantine.
    Store(Box<StoreJob>),
    /// Read and drop the data set, then answer with this status.
    Discard { status: u16 },
}

struct StoreJob {
    incoming: Incoming,
    /// The command cannot be acted on (status, reason): the data set goes to the rejected
    /// area.
    refusal: Option<(u16, String)>,
    checker: Option<Checker>,
    check_error: Option<HeaderError>,
    write_error: Option<std::io::Error>,
    started: Instant,
}

/// Run blocking file I/O from async code without stalling the runtime's other tasks.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// Why the association loop ended, for the log.
type End = &'static str;

struct AssocTask<S> {
    node: Arc<Node>,
    assoc: AsyncServerAssociation<S>,
    origin: Origin,
    /// Command fragments collected so far.
    cmd_buf: Vec<u8>,
    /// The C-STORE whose data set is arriving, if any.
    pending: Option<Pending>,
    stored: u64,
    failed: u64,
    bytes: u64,
}

impl<S> AssocTask<S>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
{
    async fn serve(&mut self, shutdown: CancellationToken, hard_stop: CancellationToken) -> End {
        let deadline = self
            .node
            .config
            .association_timeout()
            .map(|d| tokio::time::Instant::now() + d);
        let idle_limit = self.node.config.association_idle();
        // When the association last stored (or began): C-ECHO does not count.
        let mut last_work = tokio::time::Instant::now();
        loop {
            let idle = self.pending.is_none() && self.cmd_buf.is_empty();
            let idle_deadline = idle_limit.map(|d| last_work + d);
            let pdu = tokio::select! {
                biased;
                _ = hard_stop.cancelled() => {
                    self.abort().await;
                    return "aborted at shutdown";
                }
                _ = shutdown.cancelled(), if idle => {
                    self.abort().await;
                    return "closed at shutdown";
                }
                _ = sleep_until_opt(deadline) => {
                    self.abort().await;
                    return "association timeout";
                }
                _ = sleep_until_opt(idle_deadline), if idle => {
                    self.abort().await;
                    return "nothing stored for association_idle_secs";
                }
                r = self.assoc.receive() => r,
            };
            match pdu {
                Ok(Pdu::PData { data }) => {
                    let done = self.stored + self.failed;
                    for pdv in data {
                        if let Err(why) = self.on_pdv(pdv).await {
                            self.abort().await;
                            return why;
                        }
                    }
                    let storing = matches!(
                        &self.pending,
                        Some(Pending {
                            job: Job::Store(_),
                            ..
                        })
                    );
                    if storing || self.stored + self.failed != done {
                        last_work = tokio::time::Instant::now();
                    }
                }
                Ok(Pdu::ReleaseRQ) => {
                    let _ = self.assoc.send(&Pdu::ReleaseRP).await;
                    return "released";
                }
                Ok(Pdu::AbortRQ { source }) => {
                    return match source {
                        AbortRQSource::ServiceUser => "aborted by peer",
                        _ => "aborted by peer's provider",
                    };
                }
                Ok(_) => {
                    self.abort().await;
                    return "unexpected PDU";
                }
                Err(e) => {
                    tracing::debug!(error = %crate::ul_error::describe(&e), "receive ended");
                    return if matches!(e, dicom_ul::association::Error::Timeout { .. }) {
                        "idle timeout"
                    } else {
                        "connection lost"
                    };
                }
            }
        }
    }

    async fn abort(&mut self) {
        // Dropping a pending job removes its temp file.
        self.pending = None;
        let _ = self
            .assoc
            .send(&Pdu::AbortRQ {
                source: AbortRQSource::ServiceUser,
            })
            .await;
    }

    async fn on_pdv(&mut self, pdv: PDataValue) -> Result<(), End> {
        match pdv.value_type {
            PDataValueType::Command => {
                if self.pending.is_some() {
                    return Err("command fragment while a data set was expected");
                }
                if self.cmd_buf.len() + pdv.data.len() > dimse::MAX_COMMAND_LEN {
                    return Err("command set too long");
                }
                self.cmd_buf.extend_from_slice(&pdv.data);
                if pdv.is_last {
                    let bytes = std::mem::take(&mut self.cmd_buf);
                    let cmd = Command::parse(&bytes).map_err(|e| {
                        tracing::warn!(error = %e, "unparsable command set");
                        "unparsable command set"
                    })?;
                    self.on_command(cmd, pdv.presentation_context_id).await?;
                }
                Ok(())
            }
            PDataValueType::Data => {
                let Some(p) = self.pending.as_mut() else {
                    return Err("data fragment without a command");
                };
                if p.pc_id != pdv.presentation_context_id {
                    return Err("data set on a different presentation context");
                }
                if let Job::Store(job) = &mut p.job {
                    if job.write_error.is_none() {
                        let inc = &mut job.incoming;
                        if let Err(e) = blocking(|| inc.write(&pdv.data)) {
                            job.write_error = Some(e);
                        }
                    }
                    if job.check_error.is_none() {
                        if let Some(c) = job.checker.as_mut() {
                            if let Err(e) = c.feed(&pdv.data) {
                                job.check_error = Some(e);
                            }
                        }
                    }
                }
                if pdv.is_last {
                    if let Some(p) = self.pending.take() {
                        self.finish_store(p).await?;
                    }
                }
                Ok(())
            }
        }
    }

    fn context(&self, pc_id: u8) -> Option<(String, String)> {
        self.assoc
            .presentation_contexts()
            .iter()
            .find(|pc| pc.id == pc_id && pc.reason == PresentationContextResultReason::Acceptance)
            .map(|pc| (pc.abstract_syntax.clone(), pc.transfer_syntax.clone()))
    }

    async fn respond(
        &mut self,
        pc_id: u8,
        cmd: &Command,
        rsp_field: u16,
        st: u16,
    ) -> Result<(), End> {
        let instance =
            (rsp_field == field::C_STORE_RSP).then_some(cmd.affected_sop_instance_uid.as_str());
        let data = dimse::encode_response(
            rsp_field,
            cmd.message_id,
            &cmd.affected_sop_class_uid,
            instance,
            st,
        );
        self.assoc
            .send(&Pdu::PData {
                data: vec![PDataValue {
                    presentation_context_id: pc_id,
                    value_type: PDataValueType::Command,
                    is_last: true,
                    data,
                }],
            })
            .await
            .map_err(|_| "could not send response")
    }

    /// C-ECHO answers 0x0110 while the index cannot be used (an I/O error that a reopen does
    /// not cure), so an echo from a modality or a monitor does not report a node that fails
    /// every instance as working. A full disk alone leaves the echo green, as below the
    /// free-space floor: C-STORE answers 0xA700 then, which tells the sender to retry.
    async fn echo_status(&self) -> u16 {
        let store = self.node.store.clone();
        match tokio::task::spawn_blocking(move || store.health()).await {
            Ok(h) if h.usable => status::SUCCESS,
            _ => {
                tracing::warn!(
                    peer_ae = %self.origin.calling_ae,
                    "C-ECHO answered 0x0110: the index is failing"
                );
                status::PROCESSING_FAILURE
            }
        }
    }

    async fn on_command(&mut self, cmd: Command, pc_id: u8) -> Result<(), End> {
        let Some((abstract_syntax, ts)) = self.context(pc_id) else {
            return Err("command on a presentation context that was not accepted");
        };
        match cmd.command_field {
            field::C_ECHO_RQ => {
                let st = self.echo_status().await;
                if cmd.has_data_set() {
                    self.pending = Some(Pending {
                        cmd,
                        pc_id,
                        transfer_syntax: ts,
                        job: Job::Discard { status: st },
                    });
                    return Ok(());
                }
                self.respond(pc_id, &cmd, field::C_ECHO_RSP, st).await
            }
            field::C_STORE_RQ => {
                if !cmd.has_data_set() {
                    // Nothing received to keep: counted and logged like other refusals.
                    self.failed += 1;
                    self.node
                        .stats
                        .instances_rejected
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        peer_ae = %self.origin.calling_ae,
                        status = format_args!("{:#06x}", status::DATA_SET_MISMATCH),
                        reason = "C-STORE-RQ without a data set (CommandDataSetType (0000,0800))",
                        "instance rejected"
                    );
                    return self
                        .respond(pc_id, &cmd, field::C_STORE_RSP, status::DATA_SET_MISMATCH)
                        .await;
                }
                let job = self.admit_store(&cmd, &abstract_syntax, &ts);
                self.pending = Some(Pending {
                    cmd,
                    pc_id,
                    transfer_syntax: ts,
                    job,
                });
                Ok(())
            }
            field::C_CANCEL_RQ => Ok(()),
            other => {
                tracing::info!(
                    command = format_args!("{other:#06x}"),
                    "unsupported DIMSE command"
                );
                if cmd.has_data_set() {
                    self.pending = Some(Pending {
                        cmd,
                        pc_id,
                        transfer_syntax: ts,
                        job: Job::Discard {
                            status: status::UNRECOGNIZED_OPERATION,
                        },
                    });
                    Ok(())
                } else {
                    self.respond(pc_id, &cmd, other | 0x8000, status::UNRECOGNIZED_OPERATION)
                        .await
                }
            }
        }
    }

    /// Decide how to receive a C-STORE's data set. One whose command cannot be acted on is
    /// still received, into the rejected area with its reason (see [`command_refusal`]).
    fn admit_store(&self, cmd: &Command, abstract_syntax: &str, ts: &str) -> Job {
        let refusal = command_refusal(cmd, abstract_syntax);
        let q = &self.node.quarantine;
        match q.free_bytes() {
            Ok(free) if free < self.node.config.min_free_bytes => {
                tracing::warn!(
                    free_bytes = free,
                    floor = self.node.config.min_free_bytes,
                    "free space below floor, refusing instance"
                );
                return Job::Discard {
                    status: status::OUT_OF_RESOURCES,
                };
            }
            _ => {}
        }
        let begin = blocking(|| -> std::io::Result<Incoming> {
            let mut inc = q.begin(time::OffsetDateTime::now_utc())?;
            inc.write(&file_meta(
                &cmd.affected_sop_class_uid,
                &cmd.affected_sop_instance_uid,
                ts,
                &self.origin.calling_ae,
            ))?;
            Ok(inc)
        });
        match begin {
            Ok(incoming) => Job::Store(Box::new(StoreJob {
                incoming,
                // A refused command's data set is kept as received, not checked.
                checker: if refusal.is_none() {
                    Checker::new(ts)
                } else {
                    None
                },
                refusal,
                check_error: None,
                write_error: None,
                started: Instant::now(),
            })),
            Err(e) => {
                tracing::error!(error = %e, "cannot create quarantine file");
                Job::Discard {
                    status: if is_disk_full(&e) {
                        status::OUT_OF_RESOURCES
                    } else {
                        status::PROCESSING_FAILURE
                    },
                }
            }
        }
    }

    async fn finish_store(&mut self, p: Pending) -> Result<(), End> {
        let Pending {
            cmd,
            pc_id,
            transfer_syntax,
            job,
        } = p;
        let rsp_field = if cmd.command_field == field::C_ECHO_RQ {
            field::C_ECHO_RSP
        } else {
            cmd.command_field | 0x8000
        };
        let st = match job {
            Job::Discard { status } => {
                if status != status::SUCCESS {
                    self.failed += 1;
                    if status == status::OUT_OF_RESOURCES {
                        self.node
                            .stats
                            .instances_out_of_resources
                            .fetch_add(1, Ordering::Relaxed);
                    }
                }
                status
            }
            Job::Store(job) => self.store(*job, &cmd, &transfer_syntax).await,
        };
        self.respond(pc_id, &cmd, rsp_field, st).await
    }

    /// Check, make durable, index. Returns the status to send.
    async fn store(&mut self, job: StoreJob, cmd: &Command, ts: &str) -> u16 {
        let node = self.node.clone();
        let StoreJob {
            incoming,
            refusal,
            checker,
            check_error,
            write_error,
            started,
        } = job;
        let key = incoming.key().to_string();
        let written = incoming.written();
        if let Some(e) = write_error {
            drop(incoming); // removes the temp file: nothing half-written stays
            self.failed += 1;
            if is_disk_full(&e) {
                node.stats
                    .instances_out_of_resources
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(instance = %key, "disk full while receiving");
                return status::OUT_OF_RESOURCES;
            }
            tracing::error!(instance = %key, error = %e, "write failed while receiving");
            return status::PROCESSING_FAILURE;
        }
        let checked: Result<HeaderFields, (u16, String)> = match (refusal, check_error, checker) {
            (Some(r), _, _) => Err(r),
            (None, Some(e), _) => Err((status::CANNOT_UNDERSTAND, e.to_string())),
            (None, None, None) => Err((
                status::CANNOT_UNDERSTAND,
                "transfer syntax has no readable data set encoding".to_string(),
            )),
            (None, None, Some(c)) => c
                .finish()
                .and_then(|f| f.check_required().map(|_| f))
                .map_err(|e| (status::CANNOT_UNDERSTAND, e.to_string()))
                .and_then(|f| {
                    if f.sop_instance_uid != cmd.affected_sop_instance_uid {
                        Err((
                            status::DATA_SET_MISMATCH,
                            "SOP Instance UID in data set differs from the command".into(),
                        ))
                    } else if !f.sop_class_uid.is_empty()
                        && f.sop_class_uid != cmd.affected_sop_class_uid
                    {
                        Err((
                            status::DATA_SET_MISMATCH,
                            "SOP Class UID in data set differs from the command".into(),
                        ))
                    } else {
                        Ok(f)
                    }
                }),
        };
        let header = match checked {
            Ok(h) => h,
            Err((st, reason)) => {
                self.failed += 1;
                node.stats
                    .instances_rejected
                    .fetch_add(1, Ordering::Relaxed);
                let origin = self.origin.clone();
                let n2 = node.clone();
                let key_for_log = key.clone();
                let reason_for_log = reason.clone();
                let r = tokio::task::spawn_blocking(move || -> Result<(), String> {
                    let file = n2.quarantine.reject(incoming).map_err(|e| e.to_string())?;
                    n2.store
                        .record_rejection(&RejectRecord {
                            key: key.clone(),
                            file,
                            bytes: written,
                            received_ms: now_ms(),
                            status: st,
                            reason: reason.clone(),
                            origin,
                            evicted_ms: None,
                        })
                        .map_err(|e| e.to_string())
                })
                .await;
                match r {
                    Ok(Ok(())) => tracing::warn!(
                        instance = %key_for_log,
                        peer_ae = %self.origin.calling_ae,
                        status = format_args!("{st:#06x}"),
                        bytes = written,
                        reason = %reason_for_log,
                        "instance rejected"
                    ),
                    Ok(Err(e)) => {
                        tracing::error!(instance = %key_for_log, error = %e, "could not keep rejected instance")
                    }
                    Err(_) => {
                        tracing::error!(instance = %key_for_log, "rejected-instance task failed")
                    }
                }
                return st;
            }
        };
        if header.trailing_after_deflate > 0 {
            // Tolerated as other readers do (header::MAX_TRAILING_AFTER_DEFLATE); noted.
            tracing::info!(
                instance = %key,
                peer_ae = %self.origin.calling_ae,
                bytes = header.trailing_after_deflate,
                "stray bytes after the deflated data set ignored"
            );
        }
        // Re-sent instance: already durable and indexed.
        if let Ok(true) = node.store.has_sop_instance(&header.sop_instance_uid) {
            drop(incoming);
            node.stats
                .instances_duplicate
                .fetch_add(1, Ordering::Relaxed);
            self.stored += 1;
            tracing::debug!(instance = %key, "duplicate instance, already stored");
            return status::SUCCESS;
        }
        let received_us = started.elapsed().as_micros() as u64;
        let t_durable = Instant::now();
        let durable = match tokio::task::spawn_blocking(move || incoming.make_durable()).await {
            Ok(Ok(d)) => d,
            Ok(Err(e)) => {
                self.failed += 1;
                tracing::error!(instance = %key, error = %e, "fsync/rename failed");
                return if is_disk_full(&e) {
                    status::OUT_OF_RESOURCES
                } else {
                    status::PROCESSING_FAILURE
                };
            }
            Err(_) => {
                self.failed += 1;
                return status::PROCESSING_FAILURE;
            }
        };
        let new = NewInstance {
            key: key.clone(),
            file: durable.relative.clone(),
            bytes: durable.bytes,
            transfer_syntax: ts.trim_end_matches('\0').to_string(),
            received_ms: now_ms(),
            origin: self.origin.clone(),
            header,
        };
        let durable_us = t_durable.elapsed().as_micros() as u64;
        let t_commit = Instant::now();
        match node.committer.commit(&durable, new).await {
            Ok(outcome) => {
                self.stored += 1;
                self.bytes += durable.bytes;
                match outcome {
                    CommitOutcome::Stored { study_key } => {
                        node.stats.instances_stored.fetch_add(1, Ordering::Relaxed);
                        node.stats
                            .bytes_stored
                            .fetch_add(durable.bytes, Ordering::Relaxed);
                        tracing::debug!(
                            instance = %key,
                            study = %study_key,
                            peer_ae = %self.origin.calling_ae,
                            status = "0x0000",
                            bytes = durable.bytes,
                            micros = started.elapsed().as_micros() as u64,
                            received_us,
                            durable_us,
                            commit_us = t_commit.elapsed().as_micros() as u64,
                            "stored"
                        );
                    }
                    CommitOutcome::Duplicate { .. } => {
                        node.stats
                            .instances_duplicate
                            .fetch_add(1, Ordering::Relaxed);
                    }
                }
                status::SUCCESS
            }
            Err(e) => {
                self.failed += 1;
                if e.disk_full {
                    node.stats
                        .instances_out_of_resources
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(instance = %key, "disk full during the index commit");
                    status::OUT_OF_RESOURCES
                } else {
                    tracing::error!(instance = %key, error = %e, "index commit failed");
                    status::PROCESSING_FAILURE
                }
            }
        }
    }
}

/// Why a C-STORE-RQ cannot be acted on, from its command alone: the status to answer and a
/// reason naming the element (never its value), or `None`.
fn command_refusal(cmd: &Command, abstract_syntax: &str) -> Option<(u16, String)> {
    if !STORAGE_SOP_CLASSES
        .iter()
        .any(|(u, _)| *u == abstract_syntax)
    {
        return Some((
            status::SOP_CLASS_NOT_SUPPORTED,
            "C-STORE on a presentation context that is not a storage SOP class".into(),
        ));
    }
    if let Some(p) = cmd.sop_class_uid_problem {
        return Some((
            status::DATA_SET_MISMATCH,
            format!("command: Affected SOP Class UID (0000,0002) is {p}"),
        ));
    }
    if cmd.affected_sop_class_uid != abstract_syntax {
        return Some((
            status::DATA_SET_MISMATCH,
            "command: Affected SOP Class UID (0000,0002) differs from the presentation context"
                .into(),
        ));
    }
    if let Some(p) = cmd.sop_instance_uid_problem {
        return Some((
            status::DATA_SET_MISMATCH,
            format!("command: Affected SOP Instance UID (0000,1000) is {p}"),
        ));
    }
    None
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every way a C-STORE's command can be unusable gets a failure status and a reason that
    /// names the element and the problem, never the value.
    #[test]
    fn command_refusals_name_the_element_not_the_value() {
        const CT: &str = "1.2.840.10008.5.1.4.1.1.2";
        let cmd = |instance: &[u8]| {
            let mut raw = Vec::new();
            for (e, v) in [
                (0x0002u16, CT.as_bytes()),
                (0x0100, &1u16.to_le_bytes()[..]),
                (0x0800, &[0, 0]),
                (0x1000, instance),
            ] {
                raw.extend_from_slice(&0u16.to_le_bytes());
                raw.extend_from_slice(&e.to_le_bytes());
                raw.extend_from_slice(&(v.len() as u32).to_le_bytes());
                raw.extend_from_slice(v);
            }
            Command::parse(&raw).unwrap()
        };
        assert_eq!(command_refusal(&cmd(b"1.2.3.4"), CT), None);
        let (st, why) = command_refusal(&cmd(b"1.2.3.abc"), CT).unwrap();
        assert_eq!(st, status::DATA_SET_MISMATCH);
        assert!(
            why.contains("(0000,1000)") && why.contains("not a UID"),
            "{why}"
        );
        assert!(!why.contains("abc"), "{why}");
        let (_, why) = command_refusal(&cmd(&[b'7'; 70]), CT).unwrap();
        assert!(why.contains("70 characters"), "{why}");
        assert!(!why.contains("777"), "{why}");
        let (_, why) = command_refusal(&cmd(b""), CT).unwrap();
        assert!(why.contains("(0000,1000) is empty"), "{why}");
        let (_, why) = command_refusal(&cmd(b"1.2.3.4"), "1.2.840.10008.5.1.4.1.1.4").unwrap();
        assert!(why.contains("(0000,0002) differs"), "{why}");
        let (st, _) = command_refusal(&cmd(b"1.2.3.4"), VERIFICATION).unwrap();
        assert_eq!(st, status::SOP_CLASS_NOT_SUPPORTED);
        let mut missing = cmd(b"1.2.3.4");
        missing.sop_instance_uid_problem = Some(dimse::UidProblem::Missing);
        let (_, why) = command_refusal(&missing, CT).unwrap();
        assert!(why.contains("(0000,1000) is missing"), "{why}");
    }

    #[test]
    fn meta_group_is_well_formed() {
        let m = file_meta(
            "1.2.840.10008.5.1.4.1.1.2",
            "1.2.3",
            "1.2.840.10008.1.2.1",
            "CT1",
        );
        assert_eq!(&m[128..132], b"DICM");
        let group_len = u32::from_le_bytes([m[140], m[141], m[142], m[143]]) as usize;
        assert_eq!(m.len(), 144 + group_len);
        assert_eq!(m.len() % 2, 0);
        // the scanner accepts the meta group as explicit VR LE elements
        let mut s = Scanner::new(Encoding::ExplicitLittle);
        s.feed(&m[132..]).unwrap();
        s.finish().unwrap();
    }

    #[test]
    fn access_control() {
        let peer: SocketAddr = "127.0.0.1:4242".parse().unwrap();
        let a = Access {
            peer,
            allowed_callers: vec!["CT1".into()],
            accept_any_called: false,
            called_titles: vec!["PROJ1AUTO".into()],
            slot: None,
        };
        assert!(a.check_access("FIONA", "CT1", "PROJ1AUTO", None).is_ok());
        assert!(a.check_access("FIONA", "CT1", "FIONA", None).is_ok());
        assert_eq!(
            a.check_access("FIONA", "CT2", "FIONA", None),
            Err(AssociationRJServiceUserReason::CallingAETitleNotRecognized)
        );
        assert_eq!(
            a.check_access("FIONA", "CT1", "OTHER", None),
            Err(AssociationRJServiceUserReason::CalledAETitleNotRecognized)
        );
        // Titles outside the AE repertoire, even from an allowed caller's prefix.
        assert_eq!(
            a.check_access("FIONA", "CT1\n", "FIONA", None),
            Err(AssociationRJServiceUserReason::CallingAETitleNotRecognized)
        );
        assert_eq!(
            a.check_access("FIONA", "CT1", "FIONA\0", None),
            Err(AssociationRJServiceUserReason::CalledAETitleNotRecognized)
        );
        // Over TLS the slot is taken during negotiation: none free, refused.
        let limit = Arc::new(Semaphore::new(1));
        let b = Access {
            peer,
            allowed_callers: vec![],
            accept_any_called: true,
            called_titles: vec![],
            slot: Some(SlotTaker {
                limit: limit.clone(),
                taken: Arc::default(),
            }),
        };
        assert!(b.check_access("FIONA", "X", "Y", None).is_ok());
        assert_eq!(limit.available_permits(), 0);
        let c = Access {
            slot: Some(SlotTaker {
                limit,
                taken: Arc::default(),
            }),
            ..b
        };
        assert_eq!(
            c.check_access("FIONA", "X", "Y", None),
            Err(AssociationRJServiceUserReason::NoReasonGiven)
        );
    }
    #[test]
    fn presentation_contexts_in_a_request() {
        let mut rq = vec![0x01, 0, 0, 0, 0, 0];
        rq.extend_from_slice(&[0u8; 68]);
        let with_app_only = [rq.clone(), vec![0x10, 0, 0, 2, b'1', b'2']].concat();
        assert!(!proposes_context(&with_app_only));
        let with_pc = [with_app_only.clone(), vec![0x20, 0, 0, 1, 1]].concat();
        assert!(proposes_context(&with_pc));
        // Truncated or malformed: left to negotiation, which refuses it itself.
        assert!(proposes_context(
            &[with_app_only, vec![0x10, 0, 0, 9]].concat()
        ));
        assert!(proposes_context(&rq[..20]));
    }
}
