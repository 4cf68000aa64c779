//! Sending de-identified instances to a research PACS: a C-STORE SCU over dicom-ul (async).
//!
//! One association carries many instances. Its presentation contexts are proposed from what
//! is queued: for each (SOP class, stored transfer syntax) one context offering the stored
//! syntax alone, and for each SOP class one more offering Explicit VR Little Endian alone (so
//! a peer cannot trade a stored compressed syntax for uncompressed within one context). An
//! instance goes on a context accepted with its own transfer syntax; the data set is sent as the file holds it (after the meta group), in
//! P-DATA fragments of the peer's maximum length, never loaded whole. Success (0x0000) and
//! warnings (0x0001, 0xB000-0xBFFF) count as stored; anything else is a failure with its
//! status. A peer that accepts only Explicit VR Little Endian for an instance's class gets
//! it transcoded (compressed pixel data decoded, in memory, one instance at a time).
//!
//! Log lines and errors carry AE titles, addresses, statuses and counts, never a UID.
//!
//! Runs on tokio's multi-threaded runtime only: dicom-ul 0.10's P-DATA writer finishes its
//! last fragment in `Drop` with `block_in_place`, which panics on a current-thread runtime.

use dicom_ul::association::client::ClientAssociationOptions;
use dicom_ul::pdu::{PDataValue, PDataValueType, PresentationContextResultReason};
use dicom_ul::Pdu;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use crate::deid::outbound::Released;
use crate::dimse::{self, Command};
use crate::tls::DestinationTls;

/// Explicit VR Little Endian.
const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";
/// Largest stored file transcoded, and largest decoded pixel data (bytes).
const MAX_TRANSCODE: u64 = 1 << 30;
const MAX_DECODED: u64 = 2 << 30;
/// The error when `keep_going` said no.
pub const STOPPED: &str = "stopped: the transfer is no longer to be sent";
/// Most presentation contexts one association may propose (PS3.8: odd IDs 1..255).
const MAX_CONTEXTS: usize = 128;
/// How long a peer may stay silent (connecting, answering, taking data) before the
/// association is given up.
pub const PEER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
/// Most C-FIND responses one query may return (a study's series, a series' instances).
const MAX_MATCHES: usize = 100_000;

/// Where to send: the peer's address and AE titles, and TLS when configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub host: String,
    pub port: u16,
    pub called_ae_title: String,
    pub calling_ae_title: String,
    pub tls: Option<DestinationTls>,
}

type ClientAssoc<S> = dicom_ul::association::client::AsyncClientAssociation<S>;

/// An established association, plain or over TLS.
enum Link {
    Plain(Box<ClientAssoc<tokio::net::TcpStream>>),
    Tls(Box<ClientAssoc<dicom_ul::association::client::AsyncTlsStream>>),
}

/// Connect and negotiate with `peer`, over TLS when it has TLS settings (read afresh, so a
/// renewed certificate is used without a restart). Bounded by [`PEER_TIMEOUT`] as a whole
/// (dicom-ul bounds only the TCP connect, not the TLS handshake). Nagle is switched off:
/// a C-STORE ends with a short fragment followed by a wait for the response, which would
/// otherwise stall on the peer's delayed ACK (about 40 ms per instance).
async fn connect(
    peer: &Peer,
    options: ClientAssociationOptions<'_>,
    what: &str,
) -> Result<Link, AssociationError> {
    let addr = format!("{}:{}", peer.host, peer.port);
    let refused = |e: &dyn std::fmt::Display| {
        AssociationError(format!(
            "{what} with {} at {addr} failed: {e}",
            peer.called_ae_title
        ))
    };
    let started = tokio::time::Instant::now();
    let establish = async {
        let Some(t) = &peer.tls else {
            let mut a = options
                .establish_async(addr.as_str())
                .await
                .map_err(|e| refused(&plain_establish_error(&e, started.elapsed())))?;
            let _ = a.inner_stream().set_nodelay(true);
            return Ok(Link::Plain(Box::new(a)));
        };
        let config = crate::tls::client_config(t).map_err(|e| refused(&format!("TLS: {e}")))?;
        let name =
            crate::tls::server_name(t, &peer.host).map_err(|e| refused(&format!("TLS: {e}")))?;
        let mut a = options
            .tls_config(config)
            .server_name(name)
            .establish_tls_async(addr.as_str())
            .await
            .map_err(|e| refused(&crate::ul_error::describe(&e)))?;
        let _ = a.inner_stream().get_ref().0.set_nodelay(true);
        Ok(Link::Tls(Box::new(a)))
    };
    match tokio::time::timeout(PEER_TIMEOUT, establish).await {
        Ok(r) => r,
        Err(_) => Err(refused(&format!(
            "no association within {} s",
            PEER_TIMEOUT.as_secs()
        ))),
    }
}

/// Why a plain (non-TLS) association could not be established, in words. dicom-ul 0.10's
/// client reports *any* failed read of the answer (the peer closed, stayed silent until the
/// read timeout, sent garbage) as "TLS not supported", whether or not the peer sent TLS:
/// say what is known instead.
fn plain_establish_error(e: &dicom_ul::association::Error, elapsed: std::time::Duration) -> String {
    match e {
        dicom_ul::association::Error::TlsNotSupported
            if elapsed + std::time::Duration::from_secs(1) >= PEER_TIMEOUT =>
        {
            format!("no association within {} s", PEER_TIMEOUT.as_secs())
        }
        dicom_ul::association::Error::TlsNotSupported => {
            "no A-ASSOCIATE answer: the peer closed the \
             connection or answered with something else (if it expects DICOM over TLS, set `tls` \
             for this destination)"
                .to_string()
        }
        other => crate::ul_error::describe(other),
    }
}

/// What happened to one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// Success or warning: stored at the peer (the status).
    Stored(u16),
    /// A failure status from the peer.
    Refused(u16),
    /// Not sent: why (no accepted presentation context, file unreadable).
    NotSent(String),
}

impl Stored {
    pub fn is_stored(&self) -> bool {
        matches!(self, Stored::Stored(_))
    }
}

/// Whether a C-STORE status means stored (success or a warning, PS3.4 B.2.3).
pub fn status_is_stored(status: u16) -> bool {
    status == 0x0000 || status == 0x0001 || (0xB000..=0xBFFF).contains(&status)
}

/// Why an association failed as a whole (network, refused association, protocol).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AssociationError(pub String);

/// Send `files` over associations to `peer` (as many as the presentation-context limit
/// needs). Returns one result per file, in order. An association-level error (the peer is
/// down, the association is refused or aborted) stops everything: the files not yet
/// confirmed are not in the result, which is then shorter than `files`.
pub async fn store(
    peer: &Peer,
    files: &[Released],
    max_pdu: u32,
) -> Result<Vec<Stored>, (Vec<Stored>, AssociationError)> {
    let results = std::sync::Mutex::new(Vec::with_capacity(files.len()));
    let r = store_into(peer, files, max_pdu, &results, &|| true).await;
    let results = results.into_inner().unwrap_or_else(|p| p.into_inner());
    match r {
        Ok(()) => Ok(results),
        Err(e) => Err((results, e)),
    }
}

/// Asked before each instance: whether to go on (false stops the association, released,
/// with an error saying so).
pub type KeepGoing<'a> = &'a (dyn Fn() -> bool + Send + Sync);

/// Results shared with the caller while an attempt runs (it reads them to record progress).
pub type Results = std::sync::Mutex<Vec<Stored>>;

/// [`store`], pushing each file's result onto `results` as its response arrives: when the
/// future is dropped (a timeout), `results` still holds what the peer confirmed, and the
/// caller may read it meanwhile. Before each instance `keep_going` is asked (a transfer
/// cancelled meanwhile stops here).
pub async fn store_into(
    peer: &Peer,
    files: &[Released],
    max_pdu: u32,
    results: &Results,
    keep_going: KeepGoing<'_>,
) -> Result<(), AssociationError> {
    let mut start = 0;
    while start < files.len() {
        // As many files as fit in one association's contexts: one context per (SOP class,
        // stored syntax), and one more per class offering Explicit VR Little Endian alone
        // (the fallback, transcoded to).
        let mut pairs: Vec<(&str, &str)> = Vec::new();
        let mut end = start;
        while end < files.len() {
            let f = &files[end];
            let class = f.sop_class_uid();
            let wanted = [(class, f.transfer_syntax()), (class, EXPLICIT_VR_LE)];
            let new: Vec<(&str, &str)> = wanted
                .iter()
                .enumerate()
                .filter(|(i, p)| !pairs.contains(p) && (*i == 0 || p.1 != wanted[0].1))
                .map(|(_, p)| *p)
                .collect();
            if pairs.len() + new.len() > MAX_CONTEXTS {
                break;
            }
            pairs.extend(new);
            end += 1;
        }
        if !keep_going() {
            return Err(AssociationError(STOPPED.into()));
        }
        one_association(
            peer,
            &pairs,
            &files[start..end],
            max_pdu,
            results,
            keep_going,
        )
        .await?;
        start = end;
    }
    Ok(())
}

async fn one_association(
    peer: &Peer,
    pairs: &[(&str, &str)],
    files: &[Released],
    max_pdu: u32,
    out: &Results,
    keep_going: KeepGoing<'_>,
) -> Result<(), AssociationError> {
    let mut options = ClientAssociationOptions::new()
        .calling_ae_title(peer.calling_ae_title.clone())
        .called_ae_title(peer.called_ae_title.clone())
        .max_pdu_length(max_pdu)
        .connection_timeout(PEER_TIMEOUT)
        .read_timeout(PEER_TIMEOUT)
        .write_timeout(PEER_TIMEOUT);
    // One transfer syntax per context: a peer then accepts the stored syntax wherever it
    // can, instead of picking Explicit VR Little Endian out of one shared context (which
    // would decompress every compressed image on its way).
    for (class, ts) in pairs {
        options = options.with_presentation_context(class.to_string(), vec![ts.to_string()]);
    }
    match connect(peer, options, "association").await? {
        Link::Plain(a) => send_on(*a, files, out, keep_going).await,
        Link::Tls(a) => send_on(*a, files, out, keep_going).await,
    }
}

/// Send `files` over an established association, then release it.
async fn send_on<S>(
    mut assoc: ClientAssoc<S>,
    files: &[Released],
    out: &Results,
    keep_going: KeepGoing<'_>,
) -> Result<(), AssociationError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
{
    let contexts: Vec<(u8, String, String)> = assoc
        .presentation_contexts()
        .iter()
        .filter(|c| c.reason == PresentationContextResultReason::Acceptance)
        .map(|c| (c.id, c.abstract_syntax.clone(), c.transfer_syntax.clone()))
        .collect();
    let context = |ts: &str, class: &str| {
        contexts
            .iter()
            .find(|(_, a, t)| a == class && t == ts)
            .map(|(id, ..)| *id)
    };
    let push = |r: Stored| out.lock().unwrap_or_else(|p| p.into_inner()).push(r);
    for (i, f) in files.iter().enumerate() {
        if !keep_going() {
            let _ = assoc.release().await;
            return Err(AssociationError(STOPPED.into()));
        }
        // As stored when the peer takes that; Explicit VR Little Endian (transcoded) when
        // that is all it takes.
        let (pc, body) = match (
            context(f.transfer_syntax(), f.sop_class_uid()),
            context(EXPLICIT_VR_LE, f.sop_class_uid()),
        ) {
            (Some(pc), _) => (pc, None),
            (None, Some(pc)) => match transcode(f).await {
                Ok(bytes) => (pc, Some(bytes)),
                Err(why) => {
                    push(Stored::NotSent(why));
                    continue;
                }
            },
            (None, None) => {
                push(Stored::NotSent(
                    "the peer accepted no presentation context for its SOP class".into(),
                ));
                continue;
            }
        };
        let message_id = (i % 0xFFFF) as u16 + 1;
        match send_one(&mut assoc, pc, message_id, f, body).await {
            Ok(status) if status_is_stored(status) => push(Stored::Stored(status)),
            Ok(status) => push(Stored::Refused(status)),
            Err(SendError::File(m)) => push(Stored::NotSent(m)),
            Err(SendError::Link(m)) => {
                let _ = assoc.abort().await;
                return Err(AssociationError(m));
            }
        }
    }
    if let Err(e) = assoc.release().await {
        tracing::debug!(error = %crate::ul_error::describe(&e), "release failed after the last instance was confirmed");
    }
    Ok(())
}

/// The data set of `f` in Explicit VR Little Endian, compressed pixel data decoded, for a
/// peer that accepts nothing else (on a blocking thread; one instance in memory).
async fn transcode(f: &Released) -> Result<Vec<u8>, String> {
    // One at a time across destinations: an instance is held two or three times over in
    // memory while it is re-encoded.
    static TRANSCODING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);
    let _turn = TRANSCODING
        .acquire()
        .await
        .map_err(|e| format!("transcoding: {e}"))?;
    let path = f.path().to_path_buf();
    let work = move || -> Result<Vec<u8>, String> {
        let what = |e: &dyn std::fmt::Display| format!("{}: transcoding: {e}", path.display());
        let size = std::fs::metadata(&path).map_err(|e| what(&e))?.len();
        if size > MAX_TRANSCODE {
            return Err(what(&format!(
                "{size} bytes is too large (at most {MAX_TRANSCODE})"
            )));
        }
        // fiona's own output, but read through the same bounded check as received data
        // before dicom-object parses it (it allocates from declared lengths).
        let mut file = std::fs::File::open(&path).map_err(|e| what(&e))?;
        let meta = crate::part10::read_meta_info(&mut file).map_err(|e| what(&e))?;
        crate::part10::check_data_set(&mut file, &meta.transfer_syntax, meta.data_set_offset)
            .map_err(|e| what(&e))?;
        let mut obj = dicom_object::OpenFileOptions::new()
            .read_all()
            .open_file(&path)
            .map_err(|e| what(&e))?;
        crate::pixel::scrub::to_explicit_le(&mut obj, MAX_DECODED).map_err(|e| what(&e))?;
        let mut bytes = Vec::new();
        obj.write_dataset(&mut bytes).map_err(|e| what(&e))?;
        Ok(bytes)
    };
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| format!("transcoding stopped: {e}"))?
}

enum SendError {
    /// This file only (it cannot be read); the association is still fine.
    File(String),
    /// The association is broken.
    Link(String),
}

async fn send_one<S>(
    assoc: &mut dicom_ul::association::client::AsyncClientAssociation<S>,
    pc: u8,
    message_id: u16,
    f: &Released,
    transcoded: Option<Vec<u8>>,
) -> Result<u16, SendError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
{
    // The data set: from the file as stored, or transcoded bytes.
    let mut source: Box<dyn tokio::io::AsyncRead + Unpin + Send> = match transcoded {
        Some(bytes) => Box::new(std::io::Cursor::new(bytes)),
        None => {
            let mut file = tokio::fs::File::open(f.path())
                .await
                .map_err(|e| SendError::File(format!("{}: {e}", f.path().display())))?;
            file.seek(std::io::SeekFrom::Start(f.data_set_offset()))
                .await
                .map_err(|e| SendError::File(format!("{}: {e}", f.path().display())))?;
            Box::new(file)
        }
    };
    let link = |e: &dyn std::fmt::Display| SendError::Link(format!("association broke: {e}"));
    let cmd = dimse::encode_store_request(message_id, f.sop_class_uid(), f.sop_instance_uid());
    assoc
        .send(&Pdu::PData {
            data: vec![PDataValue {
                presentation_context_id: pc,
                value_type: PDataValueType::Command,
                is_last: true,
                data: cmd,
            }],
        })
        .await
        .map_err(|e| link(&crate::ul_error::describe(&e)))?;
    {
        let mut w = assoc.send_pdata(pc);
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = source.read(&mut buf).await.map_err(|e| link(&e))?;
            if n == 0 {
                break;
            }
            w.write_all(&buf[..n]).await.map_err(|e| link(&e))?;
        }
        w.finish().await.map_err(|e| link(&e))?;
    }
    // The response: command fragments until the last one.
    let mut bytes = Vec::new();
    loop {
        let pdu = assoc
            .receive()
            .await
            .map_err(|e| link(&crate::ul_error::describe(&e)))?;
        match pdu {
            Pdu::PData { data } => {
                let mut last = false;
                for v in data {
                    if v.value_type == PDataValueType::Command {
                        bytes.extend_from_slice(&v.data);
                        last |= v.is_last;
                    }
                }
                if bytes.len() > dimse::MAX_COMMAND_LEN {
                    return Err(SendError::Link("response too large".into()));
                }
                if last {
                    break;
                }
            }
            Pdu::AbortRQ { .. } => return Err(SendError::Link("the peer aborted".into())),
            Pdu::ReleaseRQ => return Err(SendError::Link("the peer released mid-transfer".into())),
            _ => return Err(SendError::Link("unexpected PDU from the peer".into())),
        }
    }
    let rsp = Command::parse(&bytes).map_err(|e| SendError::Link(format!("bad response: {e}")))?;
    if rsp.command_field != dimse::field::C_STORE_RSP || rsp.message_id_responded != message_id {
        return Err(SendError::Link(
            "response does not answer the request".into(),
        ));
    }
    rsp.status
        .ok_or_else(|| SendError::Link("response without a status".into()))
}

/// Study Root Query/Retrieve Information Model - FIND.
const STUDY_ROOT_FIND: &str = "1.2.840.10008.5.1.4.1.2.2.1";
/// Implicit VR Little Endian (what the queries use).
const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";
/// Largest C-FIND response identifier accepted.
const MAX_IDENTIFIER: usize = 1 << 20;

/// What the research PACS holds of a study.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Holdings {
    /// NumberOfStudyRelatedInstances, when the PACS returns it (study level).
    pub study_count: Option<u64>,
    /// The SOP Instance UIDs it lists (series then image level); `None` when not asked.
    pub instances: Option<Vec<String>>,
}

/// Ask `peer` (its query AE) what it holds of `study_uid`: the study-level count, and, when
/// `list` is true or the count is missing, every SOP Instance UID (series level, then image
/// level per series). One association.
pub async fn holdings(
    peer: &Peer,
    study_uid: &str,
    list: bool,
) -> Result<Holdings, AssociationError> {
    let options = one_context(peer, STUDY_ROOT_FIND);
    match connect(peer, options, "query association").await? {
        Link::Plain(a) => query_on(*a, study_uid, list).await,
        Link::Tls(a) => query_on(*a, study_uid, list).await,
    }
}

/// The association and the first presentation context the peer accepted; none: abort, with
/// `refusal` as the error.
async fn accepted_context<S>(
    assoc: ClientAssoc<S>,
    refusal: &str,
) -> Result<(ClientAssoc<S>, u8), AssociationError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
{
    let pc = assoc
        .presentation_contexts()
        .iter()
        .find(|c| c.reason == PresentationContextResultReason::Acceptance)
        .map(|c| c.id);
    match pc {
        Some(pc) => Ok((assoc, pc)),
        None => {
            let _ = assoc.abort().await;
            Err(AssociationError(refusal.to_string()))
        }
    }
}

/// The queries of [`holdings`] over an established association.
async fn query_on<S>(
    assoc: ClientAssoc<S>,
    study_uid: &str,
    list: bool,
) -> Result<Holdings, AssociationError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
{
    let (mut assoc, pc) =
        accepted_context(assoc, "the peer does not answer Study Root C-FIND").await?;
    let mut out = Holdings::default();
    let study = find(
        &mut assoc,
        pc,
        1,
        vec![
            (0x0008, 0x0052, "STUDY".into()),
            (0x0020, 0x000D, study_uid.into()),
            (0x0020, 0x1208, String::new()),
        ],
    )
    .await?;
    out.study_count = study
        .iter()
        .find_map(|r| r.get(&(0x0020, 0x1208)))
        .and_then(|v| v.trim().parse().ok());
    if list || out.study_count.is_none() {
        let series = find(
            &mut assoc,
            pc,
            2,
            vec![
                (0x0008, 0x0052, "SERIES".into()),
                (0x0020, 0x000D, study_uid.into()),
                (0x0020, 0x000E, String::new()),
            ],
        )
        .await?;
        let mut sops = Vec::new();
        for (i, s) in series
            .iter()
            .filter_map(|r| r.get(&(0x0020, 0x000E)))
            .enumerate()
        {
            let images = find(
                &mut assoc,
                pc,
                (3 + i % 60000) as u16,
                vec![
                    (0x0008, 0x0018, String::new()),
                    (0x0008, 0x0052, "IMAGE".into()),
                    (0x0020, 0x000D, study_uid.into()),
                    (0x0020, 0x000E, s.clone()),
                ],
            )
            .await?;
            sops.extend(
                images
                    .iter()
                    .filter_map(|r| r.get(&(0x0008, 0x0018)).cloned()),
            );
        }
        out.instances = Some(sops);
    }
    let _ = assoc.release().await;
    Ok(out)
}

/// How our own listener answered the watchdog's C-ECHO.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EchoAnswer {
    /// C-ECHO-RSP with success status.
    Echoed,
    /// A-ASSOCIATE-RJ, transient (every association slot taken): the listener answers, it is
    /// busy.
    Busy,
}

/// C-ECHO `peer` over plain DICOM (the watchdog's check of the daemon's own listener): one
/// association, Verification with Implicit VR Little Endian, success status expected,
/// released. Bounded by `limit` as a whole.
pub async fn echo(peer: &Peer, limit: std::time::Duration) -> Result<EchoAnswer, AssociationError> {
    let addr = format!("{}:{}", peer.host, peer.port);
    let run = async {
        let established = ClientAssociationOptions::new()
            .calling_ae_title(peer.calling_ae_title.clone())
            .called_ae_title(peer.called_ae_title.clone())
            .connection_timeout(limit)
            .read_timeout(limit)
            .write_timeout(limit)
            .with_presentation_context(dimse::VERIFICATION_SOP_CLASS, vec![IMPLICIT_VR_LE])
            .establish_async(addr.as_str())
            .await;
        match established {
            Ok(a) => echo_on(a).await.map(|()| EchoAnswer::Echoed),
            Err(dicom_ul::association::Error::Rejected { association_rj, .. })
                if association_rj.result == dicom_ul::pdu::AssociationRJResult::Transient =>
            {
                Ok(EchoAnswer::Busy)
            }
            Err(e) => Err(AssociationError(format!(
                "echo association with {} at {addr} failed: {}",
                peer.called_ae_title,
                crate::ul_error::describe(&e)
            ))),
        }
    };
    match tokio::time::timeout(limit, run).await {
        Ok(r) => r,
        Err(_) => Err(AssociationError(format!(
            "no C-ECHO answer within {} s",
            limit.as_secs()
        ))),
    }
}

/// Association options for `peer` with one presentation context (`sop_class`, Implicit VR
/// Little Endian), every step bounded by [`PEER_TIMEOUT`].
fn one_context<'a>(peer: &Peer, sop_class: &'a str) -> ClientAssociationOptions<'a> {
    ClientAssociationOptions::new()
        .calling_ae_title(peer.calling_ae_title.clone())
        .called_ae_title(peer.called_ae_title.clone())
        .connection_timeout(PEER_TIMEOUT)
        .read_timeout(PEER_TIMEOUT)
        .write_timeout(PEER_TIMEOUT)
        .with_presentation_context(sop_class, vec![IMPLICIT_VR_LE])
}

/// C-ECHO a destination the way the pipeline reaches it: plain or over TLS as configured,
/// within [`PEER_TIMEOUT`] to associate (the selftest's check of each destination).
pub async fn echo_destination(peer: &Peer) -> Result<(), AssociationError> {
    let options = one_context(peer, dimse::VERIFICATION_SOP_CLASS);
    let run = async {
        match connect(peer, options, "echo association").await? {
            Link::Plain(a) => echo_on(*a).await,
            Link::Tls(a) => echo_on(*a).await,
        }
    };
    match tokio::time::timeout(PEER_TIMEOUT * 2, run).await {
        Ok(r) => r,
        Err(_) => Err(AssociationError(format!(
            "no C-ECHO answer within {} s",
            (PEER_TIMEOUT * 2).as_secs()
        ))),
    }
}

/// The C-ECHO of [`echo`] over an established association.
async fn echo_on<S>(assoc: ClientAssoc<S>) -> Result<(), AssociationError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
{
    let err = |m: String| AssociationError(m);
    let (mut assoc, pc) = accepted_context(assoc, "the peer does not accept Verification").await?;
    assoc
        .send(&Pdu::PData {
            data: vec![PDataValue {
                presentation_context_id: pc,
                value_type: PDataValueType::Command,
                is_last: true,
                data: dimse::encode_echo_request(1),
            }],
        })
        .await
        .map_err(|e| err(format!("echo failed: {}", crate::ul_error::describe(&e))))?;
    let mut cmd = Vec::new();
    loop {
        let pdu = assoc
            .receive()
            .await
            .map_err(|e| err(format!("echo failed: {}", crate::ul_error::describe(&e))))?;
        let Pdu::PData { data: values } = pdu else {
            return Err(err("the peer ended the echo".into()));
        };
        for v in values {
            if v.value_type != PDataValueType::Command {
                return Err(err("echo response with a data set".into()));
            }
            cmd.extend_from_slice(&v.data);
            if cmd.len() > dimse::MAX_COMMAND_LEN {
                return Err(err("echo response too large".into()));
            }
            if v.is_last {
                let r = Command::parse(&cmd).map_err(|e| err(format!("bad echo response: {e}")))?;
                let _ = assoc.release().await;
                return match (r.command_field, r.status) {
                    (0x8030, Some(0x0000)) => Ok(()),
                    (0x8030, Some(s)) => Err(err(format!("echo answered status {s:#06x}"))),
                    _ => Err(err("echo response does not answer the echo".into())),
                };
            }
        }
    }
}

/// A C-FIND response identifier: top-level element values as text, by (group, element).
pub type Identifier = std::collections::BTreeMap<(u16, u16), String>;

/// Encode a flat identifier in Implicit VR Little Endian (elements in tag order).
fn encode_identifier(keys: &[(u16, u16, String)]) -> Vec<u8> {
    let mut keys = keys.to_vec();
    keys.sort_by_key(|(g, e, _)| (*g, *e));
    let mut out = Vec::new();
    for (g, e, v) in keys {
        let mut b = v.into_bytes();
        if b.len() % 2 == 1 {
            // UIDs pad with NUL, text with a space.
            b.push(if (g, e) == (0x0008, 0x0052) { b' ' } else { 0 });
        }
        out.extend_from_slice(&g.to_le_bytes());
        out.extend_from_slice(&e.to_le_bytes());
        out.extend_from_slice(&(b.len() as u32).to_le_bytes());
        out.extend_from_slice(&b);
    }
    out
}

/// Parse a C-FIND response identifier (Implicit VR Little Endian): the top-level elements'
/// values as trimmed text (sequences, which a PACS may add, are skipped, not an error).
/// Bounded first: the data set's structure is checked by `header::Checker` (every length
/// against the bytes received, sequences of undefined length included), so dicom-object,
/// which parses it then, never allocates from a declared length.
pub fn parse_identifier(b: &[u8]) -> Result<Identifier, String> {
    use dicom_core::header::Header;
    if b.is_empty() {
        return Ok(Identifier::new());
    }
    if b.len() > MAX_IDENTIFIER {
        return Err("query response too large".into());
    }
    let mut checker = crate::header::Checker::new(IMPLICIT_VR_LE)
        .ok_or_else(|| "identifier: no decoder for implicit VR LE".to_string())?;
    checker
        .feed(b)
        .and_then(|()| checker.finish().map(|_| ()))
        .map_err(|e| format!("identifier does not parse: {e}"))?;
    let ts = dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN.erased();
    let obj = dicom_object::InMemDicomObject::read_dataset_with_ts(b, &ts)
        .map_err(|e| format!("identifier does not parse: {e}"))?;
    let mut out = Identifier::new();
    for el in obj.iter() {
        if el.vr() == dicom_core::VR::SQ {
            continue;
        }
        let t = el.tag();
        let v = el
            .to_str()
            .map(|v| v.trim_end_matches(['\0', ' ']).trim_start().to_string())
            .unwrap_or_default();
        out.insert((t.group(), t.element()), v);
    }
    Ok(out)
}

/// One C-FIND: every pending response's identifier.
async fn find<S>(
    assoc: &mut dicom_ul::association::client::AsyncClientAssociation<S>,
    pc: u8,
    message_id: u16,
    keys: Vec<(u16, u16, String)>,
) -> Result<Vec<Identifier>, AssociationError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
{
    let err = |m: String| AssociationError(m);
    assoc
        .send(&Pdu::PData {
            data: vec![
                PDataValue {
                    presentation_context_id: pc,
                    value_type: PDataValueType::Command,
                    is_last: true,
                    data: dimse::encode_find_request(message_id, STUDY_ROOT_FIND),
                },
                PDataValue {
                    presentation_context_id: pc,
                    value_type: PDataValueType::Data,
                    is_last: true,
                    data: encode_identifier(&keys),
                },
            ],
        })
        .await
        .map_err(|e| err(format!("query failed: {}", crate::ul_error::describe(&e))))?;
    let mut found = Vec::new();
    // Messages may share a PDU, and one may span several: PDVs are taken one at a time and
    // each response is handled when its command (and identifier, if any) is complete.
    let (mut cmd, mut data) = (Vec::new(), Vec::new());
    let mut rsp: Option<Command> = None;
    loop {
        let pdu = assoc
            .receive()
            .await
            .map_err(|e| err(format!("query failed: {}", crate::ul_error::describe(&e))))?;
        let Pdu::PData { data: values } = pdu else {
            return Err(err("the peer ended the query".into()));
        };
        for v in values {
            let mut complete = false;
            match v.value_type {
                PDataValueType::Command => {
                    if rsp.is_some() {
                        return Err(err("query response out of order".into()));
                    }
                    cmd.extend_from_slice(&v.data);
                    if cmd.len() > dimse::MAX_COMMAND_LEN {
                        return Err(err("query response too large".into()));
                    }
                    if v.is_last {
                        let r = Command::parse(&cmd)
                            .map_err(|e| err(format!("bad query response: {e}")))?;
                        if r.command_field != 0x8020 || r.message_id_responded != message_id {
                            return Err(err("query response does not answer the query".into()));
                        }
                        complete = !r.has_data_set();
                        rsp = Some(r);
                        cmd.clear();
                    }
                }
                PDataValueType::Data => {
                    if rsp.is_none() {
                        return Err(err("query identifier before its response".into()));
                    }
                    data.extend_from_slice(&v.data);
                    if data.len() > MAX_IDENTIFIER {
                        return Err(err("query response too large".into()));
                    }
                    complete = v.is_last;
                }
            }
            if !complete {
                continue;
            }
            let Some(r) = rsp.take() else {
                return Err(err("no query response".into()));
            };
            let identifier = std::mem::take(&mut data);
            match r.status {
                Some(0xFF00 | 0xFF01) => {
                    if found.len() >= MAX_MATCHES {
                        return Err(err("query returned too many matches".into()));
                    }
                    found.push(parse_identifier(&identifier).map_err(err)?);
                }
                Some(0x0000) => return Ok(found),
                Some(s) => return Err(err(format!("query failed with status {s:#06x}"))),
                None => return Err(err("query response without a status".into())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(port: u16) -> Peer {
        Peer {
            host: "127.0.0.1".into(),
            port,
            called_ae_title: "RESEARCH".into(),
            calling_ae_title: "FIONA".into(),
            tls: None,
        }
    }

    fn options() -> ClientAssociationOptions<'static> {
        ClientAssociationOptions::new()
            .calling_ae_title("FIONA")
            .called_ae_title("RESEARCH")
            .connection_timeout(PEER_TIMEOUT)
            .read_timeout(PEER_TIMEOUT)
            .with_presentation_context("1.2.840.10008.1.1", vec!["1.2.840.10008.1.2"])
    }

    /// Issue 14, item 8: a destination that accepts and closes, or accepts and never
    /// answers, is not reported as "sending TLS data" (dicom-ul's word for any failed read).
    #[tokio::test]
    async fn a_peer_that_closes_is_not_said_to_send_tls() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                drop(s);
            }
        });
        let Err(e) = connect(&peer(port), options(), "association").await else {
            panic!("associated with a peer that closes");
        };
        assert!(!e.0.contains("TLS data"), "{e}");
        assert!(e.0.contains("closed the connection"), "{e}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_peer_is_reported_as_silent_on_every_attempt() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = l.accept().await {
                held.push(s);
            }
        });
        for attempt in 0..3 {
            let Err(e) = connect(&peer(port), options(), "association").await else {
                panic!("associated with a silent peer");
            };
            assert!(
                e.0.contains("no association within 60 s"),
                "attempt {attempt}: {e}"
            );
        }
    }

    fn el(g: u16, e: u16, v: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&g.to_le_bytes());
        b.extend_from_slice(&e.to_le_bytes());
        b.extend_from_slice(&(v.len() as u32).to_le_bytes());
        b.extend_from_slice(v);
        b
    }

    /// Issue 15: a response identifier that carries a sequence (as some PACS add, e.g. Other
    /// Patient IDs Sequence) is read, not refused; what is malformed or declares more than it
    /// has is refused without allocating from the declared length.
    #[test]
    fn identifiers_with_sequences_parse_and_bad_ones_are_refused() {
        let item = [
            vec![0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF],
            el(0x0010, 0x0020, b"X1"),
            vec![0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0],
        ]
        .concat();
        let undefined_sq = [
            vec![0x10, 0x00, 0x02, 0x10, 0xFF, 0xFF, 0xFF, 0xFF],
            item.clone(),
            vec![0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0],
        ]
        .concat();
        let id = [
            el(0x0008, 0x0052, b"STUDY "),
            undefined_sq,
            el(0x0020, 0x000D, b"1.2.3\0"),
            el(0x0020, 0x1208, b"40"),
        ]
        .concat();
        let parsed = parse_identifier(&id).unwrap();
        assert_eq!(parsed[&(0x0020, 0x000D)], "1.2.3");
        assert_eq!(parsed[&(0x0020, 0x1208)], "40");
        assert_eq!(parsed[&(0x0008, 0x0052)], "STUDY");
        assert!(!parsed.contains_key(&(0x0010, 0x1002)));
        // A defined-length sequence too.
        let defined = [el(0x0010, 0x1002, &item), el(0x0020, 0x000D, b"1.2.3\0")].concat();
        assert_eq!(
            parse_identifier(&defined).unwrap()[&(0x0020, 0x000D)],
            "1.2.3"
        );
        // Truncated, and a value declaring 4 GB that is not there.
        assert!(parse_identifier(&id[..id.len() - 1]).is_err());
        let mut huge = el(0x0020, 0x000D, b"1.2");
        huge[4..8].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
        assert!(parse_identifier(&huge).is_err());
        assert!(parse_identifier(&[]).unwrap().is_empty());
    }

    /// Issue 15: the transcoding path reads fiona's own outputs through the same bounded check
    /// as received data: a file whose data set declares more than it has is refused before
    /// dicom-object parses it.
    #[tokio::test]
    async fn transcoding_checks_the_file_first() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("out.dcm");
        let mut meta = Vec::new();
        for (e, v) in [
            (0x0002u16, &b"1.2.840.10008.5.1.4.1.1.7\0"[..]),
            (0x0003, b"1.2.3.4\0"),
            (0x0010, b"1.2.840.10008.1.2.1\0"),
        ] {
            meta.extend_from_slice(&2u16.to_le_bytes());
            meta.extend_from_slice(&e.to_le_bytes());
            meta.extend_from_slice(b"UI");
            meta.extend_from_slice(&(v.len() as u16).to_le_bytes());
            meta.extend_from_slice(v);
        }
        let mut f = vec![0u8; 128];
        f.extend_from_slice(b"DICM");
        f.extend_from_slice(&[2, 0, 0, 0, b'U', b'L', 4, 0]);
        f.extend_from_slice(&(meta.len() as u32).to_le_bytes());
        f.extend(meta);
        // (0010,0010) UT declaring 4 GB, followed by 4 bytes.
        f.extend_from_slice(&[0x10, 0, 0x10, 0, b'U', b'T', 0, 0]);
        f.extend_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
        f.extend_from_slice(b"abcd");
        std::fs::write(&path, f).unwrap();
        let out = Released::open_for_test(&path).unwrap();
        let e = transcode(&out).await.unwrap_err();
        assert!(e.contains("does not parse"), "{e}");
    }
}
