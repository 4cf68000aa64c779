//! DIMSE command sets: a small, bounded codec for group 0000 (PS3.7 E.1).
//!
//! Command sets are always Implicit VR Little Endian. They come from the network, so this
//! parser never trusts a declared length: every element must fit in the bytes received, the
//! whole command is capped at [`MAX_COMMAND_LEN`], and nothing is allocated from a length
//! field. (dicom-rs 0.10 reserves memory from declared lengths, a known hazard, so it is not
//! used for this.)

use std::fmt;

/// Command sets are a few hundred bytes; anything larger is refused.
pub const MAX_COMMAND_LEN: usize = 64 * 1024;

/// CommandDataSetType value meaning "no data set follows" (PS3.7 E.1-1).
pub const NO_DATA_SET: u16 = 0x0101;
/// The Verification SOP Class (C-ECHO).
pub const VERIFICATION_SOP_CLASS: &str = "1.2.840.10008.1.1";

pub mod field {
    pub const C_STORE_RQ: u16 = 0x0001;
    pub const C_STORE_RSP: u16 = 0x8001;
    pub const C_ECHO_RQ: u16 = 0x0030;
    pub const C_ECHO_RSP: u16 = 0x8030;
    pub const C_CANCEL_RQ: u16 = 0x0FFF;
}

pub mod status {
    pub const SUCCESS: u16 = 0x0000;
    /// Refused: out of resources (disk full or below the free-space floor).
    pub const OUT_OF_RESOURCES: u16 = 0xA700;
    /// Error: data set does not match SOP class (or the command's SOP instance).
    pub const DATA_SET_MISMATCH: u16 = 0xA900;
    /// Error: cannot understand (the data set does not parse).
    pub const CANNOT_UNDERSTAND: u16 = 0xC000;
    /// Failure: SOP class not supported.
    pub const SOP_CLASS_NOT_SUPPORTED: u16 = 0x0122;
    /// Failure: unrecognized operation.
    pub const UNRECOGNIZED_OPERATION: u16 = 0x0211;
    /// Failure: processing failure (our own fault, e.g. an I/O error other than ENOSPC).
    pub const PROCESSING_FAILURE: u16 = 0x0110;
}

/// Why a command set was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    #[error("command set longer than {MAX_COMMAND_LEN} bytes")]
    TooLong,
    #[error("command element at offset {offset} declares {declared} bytes, {available} left")]
    Truncated {
        offset: usize,
        declared: u32,
        available: usize,
    },
    #[error("command element outside group 0000 at offset {0}")]
    NotCommandGroup(usize),
    #[error("command set has no CommandField")]
    NoCommandField,
}

/// Why a UID of a command set was not kept. Names the problem, never the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UidProblem {
    /// The element is absent.
    Missing,
    /// Present with no value (or only padding).
    Empty,
    /// More than 64 characters (this many).
    TooLong(usize),
    /// Characters other than digits and dots.
    NotAUid,
}

impl fmt::Display for UidProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UidProblem::Missing => f.write_str("missing"),
            UidProblem::Empty => f.write_str("empty"),
            UidProblem::TooLong(n) => write!(f, "{n} characters long (at most 64)"),
            UidProblem::NotAUid => f.write_str("not a UID (characters other than digits and dots)"),
        }
    }
}

/// The parts of a request command set that fiona acts on. UIDs here come from the sender and
/// must not be logged; the `Debug` impl prints none of them.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Command {
    pub command_field: u16,
    pub message_id: u16,
    pub data_set_type: u16,
    pub affected_sop_class_uid: String,
    pub affected_sop_instance_uid: String,
    pub priority: u16,
    /// Responses: Status (0000,0900), absent when the response has none (a protocol error),
    /// and Message ID Being Responded To (0000,0120).
    pub status: Option<u16>,
    pub message_id_responded: u16,
    /// Affected SOP Class UID (0000,0002) as received was not a valid UID: why.
    pub sop_class_uid_problem: Option<UidProblem>,
    /// Affected SOP Instance UID (0000,1000) as received was not a valid UID: why.
    pub sop_instance_uid_problem: Option<UidProblem>,
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Command")
            .field(
                "command_field",
                &format_args!("{:#06x}", self.command_field),
            )
            .field("message_id", &self.message_id)
            .field("has_data_set", &self.has_data_set())
            .finish_non_exhaustive()
    }
}

impl Command {
    pub fn has_data_set(&self) -> bool {
        self.data_set_type != NO_DATA_SET
    }

    /// Parse an Implicit VR Little Endian command set.
    pub fn parse(bytes: &[u8]) -> Result<Command, CommandError> {
        if bytes.len() > MAX_COMMAND_LEN {
            return Err(CommandError::TooLong);
        }
        let mut cmd = Command {
            data_set_type: NO_DATA_SET,
            sop_class_uid_problem: Some(UidProblem::Missing),
            sop_instance_uid_problem: Some(UidProblem::Missing),
            ..Command::default()
        };
        let mut have_field = false;
        let mut pos = 0usize;
        while pos < bytes.len() {
            let Some(head) = bytes.get(pos..pos + 8) else {
                return Err(CommandError::Truncated {
                    offset: pos,
                    declared: 8,
                    available: bytes.len() - pos,
                });
            };
            let group = u16::from_le_bytes([head[0], head[1]]);
            let elem = u16::from_le_bytes([head[2], head[3]]);
            let len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
            if group != 0x0000 {
                return Err(CommandError::NotCommandGroup(pos));
            }
            let start = pos + 8;
            let available = bytes.len() - start;
            if len as usize > available {
                return Err(CommandError::Truncated {
                    offset: pos,
                    declared: len,
                    available,
                });
            }
            let value = &bytes[start..start + len as usize];
            match elem {
                0x0002 => {
                    (cmd.affected_sop_class_uid, cmd.sop_class_uid_problem) = uid_value(value)
                }
                0x0100 => {
                    cmd.command_field = us_value(value);
                    have_field = true;
                }
                0x0110 => cmd.message_id = us_value(value),
                0x0700 => cmd.priority = us_value(value),
                0x0800 => cmd.data_set_type = us_value(value),
                0x1000 => {
                    (cmd.affected_sop_instance_uid, cmd.sop_instance_uid_problem) = uid_value(value)
                }
                0x0900 => cmd.status = Some(us_value(value)),
                0x0120 => cmd.message_id_responded = us_value(value),
                _ => {}
            }
            pos = start + len as usize;
        }
        if !have_field {
            return Err(CommandError::NoCommandField);
        }
        Ok(cmd)
    }
}

fn us_value(v: &[u8]) -> u16 {
    match v {
        [a, b, ..] => u16::from_le_bytes([*a, *b]),
        _ => 0,
    }
}

/// A UID from a command: kept only if it is a valid UID (1 to 64 digits and dots, PS3.5 9.1);
/// anything else becomes empty, with the reason, so an invalid UID is never echoed or written
/// to a file meta.
fn uid_value(v: &[u8]) -> (String, Option<UidProblem>) {
    let trimmed = trim_uid(v);
    if is_valid_uid(trimmed) {
        // checked above: ASCII digits and dots only
        (String::from_utf8_lossy(trimmed).into_owned(), None)
    } else {
        (String::new(), Some(uid_problem(trimmed)))
    }
}

/// Why bytes that are not a valid UID are not one.
fn uid_problem(v: &[u8]) -> UidProblem {
    if v.is_empty() {
        UidProblem::Empty
    } else if v.len() > 64 {
        UidProblem::TooLong(v.len())
    } else {
        UidProblem::NotAUid
    }
}

fn trim_uid(v: &[u8]) -> &[u8] {
    let end = v
        .iter()
        .rposition(|b| *b != 0 && *b != b' ')
        .map_or(0, |p| p + 1);
    &v[..end]
}

/// Whether bytes form a valid UID: 1 to 64 characters, digits and dots.
pub fn is_valid_uid(v: &[u8]) -> bool {
    !v.is_empty() && v.len() <= 64 && v.iter().all(|b| b.is_ascii_digit() || *b == b'.')
}

/// Encode a response command set (C-ECHO-RSP, C-STORE-RSP, or a failure response to any
/// request) in Implicit VR Little Endian, group length first.
pub fn encode_response(
    rsp_field: u16,
    message_id_responded: u16,
    sop_class_uid: &str,
    sop_instance_uid: Option<&str>,
    status: u16,
) -> Vec<u8> {
    let mut body = Vec::with_capacity(256);
    if !sop_class_uid.is_empty() {
        put_uid(&mut body, 0x0002, sop_class_uid);
    }
    put_us(&mut body, 0x0100, rsp_field);
    put_us(&mut body, 0x0120, message_id_responded);
    put_us(&mut body, 0x0800, NO_DATA_SET);
    put_us(&mut body, 0x0900, status);
    if let Some(uid) = sop_instance_uid.filter(|u| !u.is_empty()) {
        put_uid(&mut body, 0x1000, uid);
    }
    let mut out = Vec::with_capacity(body.len() + 12);
    put_elem(&mut out, 0x0000, &(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// Encode a C-STORE-RQ command set (a data set follows), Implicit VR Little Endian, group
/// length first.
pub fn encode_store_request(
    message_id: u16,
    sop_class_uid: &str,
    sop_instance_uid: &str,
) -> Vec<u8> {
    let mut body = Vec::with_capacity(256);
    put_uid(&mut body, 0x0002, sop_class_uid);
    put_us(&mut body, 0x0100, field::C_STORE_RQ);
    put_us(&mut body, 0x0110, message_id);
    put_us(&mut body, 0x0700, 0);
    put_us(&mut body, 0x0800, 0x0000);
    put_uid(&mut body, 0x1000, sop_instance_uid);
    let mut out = Vec::with_capacity(body.len() + 12);
    put_elem(&mut out, 0x0000, &(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// Encode a C-ECHO-RQ command set (no data set), Implicit VR Little Endian.
pub fn encode_echo_request(message_id: u16) -> Vec<u8> {
    let mut body = Vec::with_capacity(96);
    put_uid(&mut body, 0x0002, VERIFICATION_SOP_CLASS);
    put_us(&mut body, 0x0100, field::C_ECHO_RQ);
    put_us(&mut body, 0x0110, message_id);
    put_us(&mut body, 0x0800, NO_DATA_SET);
    let mut out = Vec::with_capacity(body.len() + 12);
    put_elem(&mut out, 0x0000, &(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// Encode a C-FIND-RQ command set (an identifier follows).
pub fn encode_find_request(message_id: u16, sop_class_uid: &str) -> Vec<u8> {
    let mut body = Vec::with_capacity(128);
    put_uid(&mut body, 0x0002, sop_class_uid);
    put_us(&mut body, 0x0100, 0x0020);
    put_us(&mut body, 0x0110, message_id);
    put_us(&mut body, 0x0700, 0);
    put_us(&mut body, 0x0800, 0x0000);
    let mut out = Vec::with_capacity(body.len() + 12);
    put_elem(&mut out, 0x0000, &(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

fn put_elem(out: &mut Vec<u8>, elem: u16, value: &[u8]) {
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&elem.to_le_bytes());
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(value);
}

fn put_us(out: &mut Vec<u8>, elem: u16, v: u16) {
    put_elem(out, elem, &v.to_le_bytes());
}

fn put_uid(out: &mut Vec<u8>, elem: u16, uid: &str) {
    let mut v = uid.as_bytes().to_vec();
    if v.len() % 2 == 1 {
        v.push(0);
    }
    put_elem(out, elem, &v);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_rq() -> Vec<u8> {
        encode_store_request(7, "1.2.840.10008.5.1.4.1.1.2", "1.2.3.4.5")
    }

    #[test]
    fn parses_store_request() {
        let c = Command::parse(&store_rq()).unwrap();
        assert_eq!(c.command_field, field::C_STORE_RQ);
        assert_eq!(c.message_id, 7);
        assert!(c.has_data_set());
        assert_eq!(c.affected_sop_class_uid, "1.2.840.10008.5.1.4.1.1.2");
        assert_eq!(c.affected_sop_instance_uid, "1.2.3.4.5");
    }

    #[test]
    fn debug_prints_no_uid() {
        let c = Command::parse(&store_rq()).unwrap();
        let s = format!("{c:?}");
        assert!(!s.contains("1.2.3.4.5"), "{s}");
    }

    #[test]
    fn huge_declared_length_is_refused_without_allocation() {
        let mut b = store_rq();
        // declare 4 GB for the last element
        let n = b.len();
        let last = n - 10 - 8;
        b[last + 4..last + 8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            Command::parse(&b),
            Err(CommandError::Truncated { .. })
        ));
        assert!(matches!(
            Command::parse(&b[..5]),
            Err(CommandError::Truncated { .. })
        ));
    }

    #[test]
    fn response_round_trips() {
        let r = encode_response(field::C_STORE_RSP, 7, "1.2.840.1", Some("1.2.3"), 0xA700);
        assert_eq!(r.len() % 2, 0);
        let c = Command::parse(&r).unwrap();
        assert_eq!(c.command_field, field::C_STORE_RSP);
        assert_eq!(c.affected_sop_instance_uid, "1.2.3");
        assert!(!c.has_data_set());
    }

    /// Regression (fuzzing): an invalid, very long UID is not kept, so it is never echoed
    /// into a response (which then could not be parsed again).
    #[test]
    fn invalid_uids_are_dropped() {
        let mut body = Vec::new();
        put_us(&mut body, 0x0100, field::C_STORE_RQ);
        put_elem(&mut body, 0x0002, &vec![0xFF; 21_826]);
        put_uid(&mut body, 0x1000, "1.2.3");
        let c = Command::parse(&body).unwrap();
        assert_eq!(c.affected_sop_class_uid, "");
        assert_eq!(c.sop_class_uid_problem, Some(UidProblem::TooLong(21_826)));
        assert_eq!(c.affected_sop_instance_uid, "1.2.3");
        assert_eq!(c.sop_instance_uid_problem, None);
        let r = encode_response(field::C_STORE_RSP, 1, &c.affected_sop_class_uid, None, 0);
        Command::parse(&r).unwrap();
        assert!(!is_valid_uid(b"1.2.x"));
        assert!(!is_valid_uid(&[b'1'; 65]));
        assert!(is_valid_uid(b"1.2.840.10008.1.1"));
    }

    /// Each way a command's UID can be unusable is told apart (the receive stage names it
    /// in the rejection), and the `Debug` of the command still prints no value.
    #[test]
    fn uid_problems_are_named() {
        let with = |uid: Option<&[u8]>| {
            let mut body = Vec::new();
            put_us(&mut body, 0x0100, field::C_STORE_RQ);
            put_uid(&mut body, 0x0002, "1.2.840.10008.5.1.4.1.1.2");
            if let Some(u) = uid {
                put_elem(&mut body, 0x1000, u);
            }
            Command::parse(&body).unwrap()
        };
        assert_eq!(
            with(Some(b"1.2.3.abc")).sop_instance_uid_problem,
            Some(UidProblem::NotAUid)
        );
        assert_eq!(
            with(Some(&[b'1'; 66])).sop_instance_uid_problem,
            Some(UidProblem::TooLong(66))
        );
        assert_eq!(
            with(Some(b"\0\0")).sop_instance_uid_problem,
            Some(UidProblem::Empty)
        );
        assert_eq!(
            with(None).sop_instance_uid_problem,
            Some(UidProblem::Missing)
        );
        let ok = with(Some(b"1.2.3.4\0"));
        assert_eq!(ok.sop_instance_uid_problem, None);
        assert_eq!(ok.sop_class_uid_problem, None);
        assert_eq!(ok.affected_sop_instance_uid, "1.2.3.4");
        let bad = with(Some(b"1.2.3.abc"));
        assert!(!format!("{bad:?}").contains("abc"));
        assert!(!UidProblem::NotAUid.to_string().contains("abc"));
    }

    #[test]
    fn other_groups_refused() {
        let mut b = store_rq();
        b[0] = 0x08;
        assert!(matches!(
            Command::parse(&b),
            Err(CommandError::NotCommandGroup(0))
        ));
    }
}
