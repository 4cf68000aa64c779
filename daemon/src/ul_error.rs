//! What an upper-layer error says in fiona's logs and transfer reasons (issue 14): the kind
//! of failure, PDU types, lengths and fixed text, never bytes or values a peer sent.
//!
//! dicom-ul's own `Display` is not fit for that: for an unexpected PDU it prints the whole
//! PDU with `Debug`, so a P-DATA-TF sent before any association (a data set with a patient's
//! name, ID and UIDs) became one WARN line of up to megabytes of decimal bytes; an invalid
//! PDU variable prints its value. So every variant is described here by hand, and a variant
//! this module does not know gets a fixed text. The text is bounded ([`MAX_LEN`]).

use dicom_ul::association::Error;
use dicom_ul::pdu::{Pdu, ReadError};

/// The longest description, in bytes.
pub const MAX_LEN: usize = 240;

/// An upper-layer error, described without anything the peer sent.
pub fn describe(e: &Error) -> String {
    let s = match e {
        Error::MissingAbstractSyntax { .. } => "no abstract syntax to negotiate".to_string(),
        Error::ToAddress { source, .. } => format!("bad address: {}", io(source)),
        Error::Connect { source, .. } => format!("cannot connect: {}", io(source)),
        Error::SetReadTimeout { .. } | Error::SetWriteTimeout { .. } => {
            "cannot set socket timeouts".to_string()
        }
        Error::SendPdu { .. } => "cannot encode a PDU to send".to_string(),
        Error::ReceivePdu { source, .. } => format!("bad PDU from peer: {}", read(source)),
        Error::UnexpectedPdu { pdu, .. } => format!("unexpected {} from peer", kind(pdu)),
        Error::UnknownPdu { pdu, .. } => format!("unknown {} from peer", kind(pdu)),
        Error::ProtocolVersionMismatch { expected, got, .. } => {
            format!("protocol version mismatch: expected {expected}, got {got}")
        }
        Error::Rejected { association_rj, .. } => {
            format!("association rejected: {}", association_rj.source)
        }
        Error::Aborted { .. } => "association aborted".to_string(),
        Error::NoAcceptedPresentationContexts { .. } => {
            "no presentation context accepted".to_string()
        }
        Error::WireSend { source, .. } => format!("send failed: {}", io(source)),
        Error::WireRead { source, .. } => format!("receive failed: {}", io(source)),
        Error::Timeout { .. } => "timed out".to_string(),
        Error::Close { source, .. } => format!("close failed: {}", io(source)),
        Error::SendTooLongPdu { length, .. } => format!("PDU of {length} bytes too long to send"),
        Error::ConnectionClosed { .. } => "connection closed by peer".to_string(),
        Error::TlsHandshake { source, .. } => format!("TLS handshake failed: {}", io(source)),
        Error::TlsNotSupported => "peer sent TLS data to a port without TLS".to_string(),
        // dicom-ul's Error is non-exhaustive.
        #[allow(unreachable_patterns)]
        _ => "upper-layer protocol error".to_string(),
    };
    bounded(s)
}

/// A PDU's type and length: "P-DATA-TF (130012 bytes)".
pub fn kind(p: &Pdu) -> String {
    match p {
        Pdu::Unknown { pdu_type, data } => {
            format!("PDU of type {pdu_type:#04x} ({} bytes)", data.len())
        }
        Pdu::AssociationRQ(_) => "A-ASSOCIATE-RQ".to_string(),
        Pdu::AssociationAC(_) => "A-ASSOCIATE-AC".to_string(),
        Pdu::AssociationRJ(_) => "A-ASSOCIATE-RJ".to_string(),
        Pdu::PData { data } => {
            let bytes: usize = data.iter().map(|v| v.data.len()).sum();
            format!("P-DATA-TF ({} values, {bytes} bytes)", data.len())
        }
        Pdu::ReleaseRQ => "A-RELEASE-RQ".to_string(),
        Pdu::ReleaseRP => "A-RELEASE-RP".to_string(),
        Pdu::AbortRQ { .. } => "A-ABORT".to_string(),
    }
}

fn read(e: &ReadError) -> String {
    match e {
        ReadError::InvalidMaxPdu { max_pdu_length, .. } => {
            format!("maximum PDU length {max_pdu_length} not acceptable")
        }
        ReadError::NoPduAvailable { .. } => "no PDU".to_string(),
        ReadError::ReadPdu { source, .. }
        | ReadError::ReadPduItem { source, .. }
        | ReadError::ReadReserved { source, .. } => io(source),
        ReadError::ReadPduField { field, source, .. } => format!("field {field}: {}", io(source)),
        ReadError::InvalidItemLength { length } => format!("invalid item length {length}"),
        ReadError::PduTooLarge {
            pdu_length,
            max_pdu_length,
            ..
        } => format!("PDU of {pdu_length} bytes over the maximum {max_pdu_length}"),
        ReadError::DecodeText { field, .. } => format!("field {field} not decodable as text"),
        // The rest carry no numbers worth keeping, and one (an invalid PDU variable) carries
        // the peer's value: a fixed text for all.
        _ => "malformed PDU".to_string(),
    }
}

/// An I/O error: the OS's message, or for an error wrapped by a library (rustls inside
/// tokio-rustls) the library's message, which names the failure (an alert, a certificate
/// problem), not the bytes.
fn io(e: &std::io::Error) -> String {
    match e.get_ref() {
        Some(inner) => inner.to_string(),
        None => e.to_string(),
    }
}

/// Whether an AE title is valid (PS3.5 6.2, AE: the default repertoire without backslash
/// and control characters; PS3.8 9.3.2: ISO 646 G0). A peer's title outside it is refused
/// at association, so no accepted title can forge a log line or carry escape sequences.
pub fn valid_ae(s: &str) -> bool {
    s.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'\\')
}

/// An AE title as a log shows it: printable ASCII as is, backslash doubled, every other
/// byte as `\xNN` (a refused title with a newline, ESC or NUL stays on its one line).
pub fn escape_ae(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes().take(64) {
        match b {
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(char::from(b)),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out
}

/// At most [`MAX_LEN`] bytes, on a character boundary, control characters replaced.
pub fn bounded(s: String) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if out.len() > MAX_LEN {
        let mut end = MAX_LEN - 3;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_ul::pdu::{PDataValue, PDataValueType};

    // dicom-ul's error variants cannot be built outside it: `describe` of an unexpected
    // P-DATA-TF is shown against the running daemon (tests/hardening.rs).
    #[test]
    fn a_pdu_is_described_by_type_and_length_only() {
        let name = b"DOE^JANE".repeat(1000);
        let p = Pdu::PData {
            data: vec![PDataValue {
                presentation_context_id: 1,
                value_type: PDataValueType::Data,
                is_last: true,
                data: name.clone(),
            }],
        };
        assert_eq!(kind(&p), "P-DATA-TF (1 values, 8000 bytes)");
        let unknown = Pdu::Unknown {
            pdu_type: 0x42,
            data: name,
        };
        assert_eq!(kind(&unknown), "PDU of type 0x42 (8000 bytes)");
    }

    #[test]
    fn ae_titles_outside_the_repertoire_are_invalid_and_escaped() {
        assert!(valid_ae("STORESCU"));
        assert!(valid_ae("MY AE-1_x"));
        for bad in ["A\nFORGED", "A\x1b[31m", "A\0", "A\\B", "Å"] {
            assert!(!valid_ae(bad), "{bad:?}");
        }
        assert_eq!(escape_ae("A\nB\x1b\0\\C"), "A\\x0aB\\x1b\\x00\\\\C");
        assert_eq!(escape_ae("Å"), "\\xc3\\x85");
    }

    #[test]
    fn descriptions_are_bounded_and_single_line() {
        let long = format!("a\nb\x1b[31m{}", "é".repeat(500));
        let b = bounded(long);
        assert!(b.len() <= MAX_LEN, "{}", b.len());
        assert!(b.starts_with("a?b?[31m"), "{b}");
        assert!(b.ends_with("..."));
    }
}
