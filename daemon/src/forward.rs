//! Sending de-identified instances to a research PACS: a C-STORE SCU over dicom-ul (async).
//!
//! One association carries many instances. Its presentation contexts are proposed from what
//! is queued: for each (SOP class, stored transfer syntax) one context offering the stored
//! syntax and Explicit VR Little Endian. An instance goes on a context accepted with its own
//! transfer syntax; the data set is sent as the file holds it (after the meta group), in
//! P-DATA fragments of the peer's maximum length, never loaded whole. Success (0x0000) and
//! warnings (0x0001, 0xB000-0xBFFF) count as stored; anything else is a failure with its
//! status. Transcoding for a peer that accepts only Explicit VR Little Endian is not done
//! yet: such an instance fails with that reason.
//!
//! Log lines and errors carry AE titles, addresses, statuses and counts, never a UID.
//!
//! Runs on tokio's multi-threaded runtime only: dicom-ul 0.10's P-DATA writer finishes its
//! last fragment in `Drop` with `block_in_place`, which panics on a current-thread runtime.

use std::path::{Path, PathBuf};

use dicom_ul::association::client::ClientAssociationOptions;
use dicom_ul::pdu::{PDataValue, PDataValueType, PresentationContextResultReason};
use dicom_ul::Pdu;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use crate::deid::file::read_meta_info;
use crate::dimse::{self, Command};

/// Explicit VR Little Endian.
const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";
/// Most presentation contexts one association may propose (PS3.8: odd IDs 1..255).
const MAX_CONTEXTS: usize = 128;

/// A file to send, as its meta group describes it.
#[derive(Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub path: PathBuf,
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub transfer_syntax: String,
    pub data_set_offset: u64,
}

impl std::fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The path is fiona's own key; UIDs are left out of logs by rule.
        f.debug_struct("Outgoing")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Outgoing {
    /// Read a Part-10 file's meta group.
    pub fn open(path: &Path) -> Result<Outgoing, String> {
        let mut f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let m = read_meta_info(&mut f).map_err(|e| format!("{}: {e}", path.display()))?;
        if m.sop_class_uid.is_empty() || m.sop_instance_uid.is_empty() {
            return Err(format!(
                "{}: no SOP class or instance in the meta group",
                path.display()
            ));
        }
        Ok(Outgoing {
            path: path.to_path_buf(),
            sop_class_uid: m.sop_class_uid,
            sop_instance_uid: m.sop_instance_uid,
            transfer_syntax: m.transfer_syntax,
            data_set_offset: m.data_set_offset,
        })
    }
}

/// Where to send: the peer's address and AE titles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub host: String,
    pub port: u16,
    pub called_ae_title: String,
    pub calling_ae_title: String,
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
    files: &[Outgoing],
    max_pdu: u32,
) -> Result<Vec<Stored>, (Vec<Stored>, AssociationError)> {
    let mut results = Vec::with_capacity(files.len());
    let mut start = 0;
    while start < files.len() {
        // As many files as fit in one association's contexts.
        let mut pairs: Vec<(&str, &str)> = Vec::new();
        let mut end = start;
        while end < files.len() {
            let f = &files[end];
            let pair = (f.sop_class_uid.as_str(), f.transfer_syntax.as_str());
            if !pairs.contains(&pair) {
                if pairs.len() == MAX_CONTEXTS {
                    break;
                }
                pairs.push(pair);
            }
            end += 1;
        }
        match one_association(peer, &pairs, &files[start..end], max_pdu).await {
            Ok(r) => results.extend(r),
            Err((partial, e)) => {
                results.extend(partial);
                return Err((results, e));
            }
        }
        start = end;
    }
    Ok(results)
}

async fn one_association(
    peer: &Peer,
    pairs: &[(&str, &str)],
    files: &[Outgoing],
    max_pdu: u32,
) -> Result<Vec<Stored>, (Vec<Stored>, AssociationError)> {
    let fail = |done: Vec<Stored>, m: String| (done, AssociationError(m));
    let mut options = ClientAssociationOptions::new()
        .calling_ae_title(peer.calling_ae_title.clone())
        .called_ae_title(peer.called_ae_title.clone())
        .max_pdu_length(max_pdu);
    for (class, ts) in pairs {
        let mut offered = vec![ts.to_string()];
        if *ts != EXPLICIT_VR_LE {
            offered.push(EXPLICIT_VR_LE.to_string());
        }
        options = options.with_presentation_context(class.to_string(), offered);
    }
    let addr = format!("{}:{}", peer.host, peer.port);
    let mut assoc = options.establish_async(addr.as_str()).await.map_err(|e| {
        fail(
            Vec::new(),
            format!(
                "association with {} at {addr} failed: {e}",
                peer.called_ae_title
            ),
        )
    })?;
    let contexts: Vec<(u8, String, String)> = assoc
        .presentation_contexts()
        .iter()
        .filter(|c| c.reason == PresentationContextResultReason::Acceptance)
        .map(|c| (c.id, c.abstract_syntax.clone(), c.transfer_syntax.clone()))
        .collect();
    let mut out = Vec::with_capacity(files.len());
    for (i, f) in files.iter().enumerate() {
        let Some(pc) = contexts
            .iter()
            .find(|(_, a, t)| *a == f.sop_class_uid && *t == f.transfer_syntax)
            .map(|(id, ..)| *id)
        else {
            out.push(Stored::NotSent(
                "the peer accepted no presentation context for its SOP class in its transfer syntax (transcoding is not done yet)".into(),
            ));
            continue;
        };
        let message_id = (i % 0xFFFF) as u16 + 1;
        match send_one(&mut assoc, pc, message_id, f).await {
            Ok(status) if status_is_stored(status) => out.push(Stored::Stored(status)),
            Ok(status) => out.push(Stored::Refused(status)),
            Err(SendError::File(m)) => out.push(Stored::NotSent(m)),
            Err(SendError::Link(m)) => {
                let _ = assoc.abort().await;
                return Err(fail(out, m));
            }
        }
    }
    if let Err(e) = assoc.release().await {
        tracing::debug!(error = %e, "release failed after the last instance was confirmed");
    }
    Ok(out)
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
    f: &Outgoing,
) -> Result<u16, SendError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
{
    let mut file = tokio::fs::File::open(&f.path)
        .await
        .map_err(|e| SendError::File(format!("{}: {e}", f.path.display())))?;
    file.seek(std::io::SeekFrom::Start(f.data_set_offset))
        .await
        .map_err(|e| SendError::File(format!("{}: {e}", f.path.display())))?;
    let link = |e: &dyn std::fmt::Display| SendError::Link(format!("association broke: {e}"));
    let cmd = dimse::encode_store_request(message_id, &f.sop_class_uid, &f.sop_instance_uid);
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
        .map_err(|e| link(&e))?;
    {
        let mut w = assoc.send_pdata(pc);
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = file.read(&mut buf).await.map_err(|e| link(&e))?;
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
        let pdu = assoc.receive().await.map_err(|e| link(&e))?;
        match pdu {
            Pdu::PData { data } => {
                let mut last = false;
                for v in data {
                    if v.value_type == PDataValueType::Command {
                        bytes.extend_from_slice(&v.data);
                        last |= v.is_last;
                    }
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
    Ok(rsp.status)
}
