//! Part-10 files (PS3.10 7.1) in one place: the preamble and file meta group fiona writes
//! (on receive and for de-identified outputs), and the bounded reader of a file's meta group
//! (de-identification and forwarding). Written by hand: the reader bounds untrusted bytes
//! (the group length is checked against 64 KiB before anything is allocated), and both sides
//! need only the few elements below. [`is_valid_uid`] is the UID syntax every layer checks. [`check_data_set`] runs a stored file's data set through
//! the same bounded checker that guards receiving, before anything parses it with
//! dicom-object (de-identification, transcoding for forwarding). Only `header` is used here.

use std::io::{BufReader, Read, Seek, SeekFrom};

use crate::header::{Checker, HeaderError, HeaderFields};

/// Whether a string is a valid UID (PS3.5 9.1): at most 64 characters, components of digits
/// separated by dots, no empty component, no leading zero in a multi-digit component.
pub fn is_valid_uid(uid: &str) -> bool {
    !uid.is_empty()
        && uid.len() <= 64
        && uid.split('.').all(|c| {
            !c.is_empty()
                && c.bytes().all(|b| b.is_ascii_digit())
                && !(c.len() > 1 && c.starts_with('0'))
        })
}

/// Our implementation class UID (a 2.25 UUID-derived root) and version name for file meta.
pub const IMPLEMENTATION_CLASS_UID: &str = "2.25.160289716355129447434187452427153405527";
pub const IMPLEMENTATION_VERSION_NAME: &str = concat!("FIONA_", env!("CARGO_PKG_VERSION"));

/// Why a file is not a Part-10 file fiona can read: a fixed phrase, never file content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetaError(pub &'static str);

impl std::fmt::Display for MetaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "not a DICOM Part-10 file: {}", self.0)
    }
}

impl std::error::Error for MetaError {}

/// What the file meta group says (read by hand, bounded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaInfo {
    pub transfer_syntax: String,
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    /// Where the data set starts in the file.
    pub data_set_offset: u64,
}

/// Read the file meta group of a Part-10 file from its start.
pub fn read_meta_info(f: &mut impl Read) -> Result<MetaInfo, MetaError> {
    let mut head = [0u8; 144];
    f.read_exact(&mut head)
        .map_err(|_| MetaError("shorter than a preamble"))?;
    if &head[128..132] != b"DICM" {
        return Err(MetaError("no DICM prefix"));
    }
    if head[132..134] != [2, 0] || head[134..136] != [0, 0] || &head[136..138] != b"UL" {
        return Err(MetaError("no meta group length"));
    }
    let len = u32::from_le_bytes([head[140], head[141], head[142], head[143]]) as usize;
    if len > 64 * 1024 {
        return Err(MetaError("meta group too long"));
    }
    let mut meta = vec![0u8; len];
    f.read_exact(&mut meta)
        .map_err(|_| MetaError("meta group truncated"))?;
    let mut pos = 0;
    let mut ts = None;
    let (mut class, mut instance) = (String::new(), String::new());
    while pos + 8 <= meta.len() {
        let elem = u16::from_le_bytes([meta[pos + 2], meta[pos + 3]]);
        let vr = [meta[pos + 4], meta[pos + 5]];
        let (vlen, hlen) = if matches!(&vr, b"OB" | b"OW" | b"UN" | b"SQ" | b"UT") {
            let b = meta
                .get(pos + 8..pos + 12)
                .ok_or(MetaError("meta element truncated"))?;
            (u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize, 12)
        } else {
            (
                u16::from_le_bytes([meta[pos + 6], meta[pos + 7]]) as usize,
                8,
            )
        };
        let v = meta
            .get(pos + hlen..pos + hlen + vlen)
            .ok_or(MetaError("meta element truncated"))?;
        let text = || {
            String::from_utf8_lossy(v)
                .trim_end_matches(['\0', ' '])
                .to_string()
        };
        match elem {
            0x0010 => ts = Some(text()),
            0x0002 => class = text(),
            0x0003 => instance = text(),
            _ => {}
        }
        pos += hlen + vlen;
    }
    let ts = ts.ok_or(MetaError("no transfer syntax in meta group"))?;
    Ok(MetaInfo {
        transfer_syntax: ts,
        sop_class_uid: class,
        sop_instance_uid: instance,
        data_set_offset: 144 + len as u64,
    })
}

/// The Part-10 preamble and file meta group for a received instance (PS3.10 7.1), built from
/// the command's SOP class/instance and the presentation context's transfer syntax.
pub fn file_meta(
    sop_class: &str,
    sop_instance: &str,
    transfer_syntax: &str,
    source_ae: &str,
) -> Vec<u8> {
    fn elem(out: &mut Vec<u8>, e: u16, vr: &[u8; 2], value: &[u8], pad: u8) {
        let mut v = value.to_vec();
        if v.len() % 2 == 1 {
            v.push(pad);
        }
        out.extend_from_slice(&0x0002u16.to_le_bytes());
        out.extend_from_slice(&e.to_le_bytes());
        out.extend_from_slice(vr);
        if vr == b"OB" {
            out.extend_from_slice(&[0, 0]);
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        } else {
            out.extend_from_slice(&(v.len() as u16).to_le_bytes());
        }
        out.extend_from_slice(&v);
    }
    let clean = |s: &str| s.trim_end_matches(['\0', ' ']).to_string();
    let mut body = Vec::with_capacity(256);
    elem(&mut body, 0x0001, b"OB", &[0, 1], 0);
    elem(&mut body, 0x0002, b"UI", clean(sop_class).as_bytes(), 0);
    elem(&mut body, 0x0003, b"UI", clean(sop_instance).as_bytes(), 0);
    elem(
        &mut body,
        0x0010,
        b"UI",
        clean(transfer_syntax).as_bytes(),
        0,
    );
    elem(
        &mut body,
        0x0012,
        b"UI",
        IMPLEMENTATION_CLASS_UID.as_bytes(),
        0,
    );
    elem(
        &mut body,
        0x0013,
        b"SH",
        IMPLEMENTATION_VERSION_NAME.as_bytes(),
        b' ',
    );
    if !source_ae.trim().is_empty() {
        elem(&mut body, 0x0016, b"AE", source_ae.trim().as_bytes(), b' ');
    }
    let mut out = vec![0u8; 128];
    out.extend_from_slice(b"DICM");
    elem(
        &mut out,
        0x0000,
        b"UL",
        &(body.len() as u32).to_le_bytes(),
        0,
    );
    out.extend_from_slice(&body);
    out
}

/// Why a file's data set did not pass [`check_data_set`].
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("transfer syntax {0} has no data set encoding fiona reads")]
    Unsupported(String),
    #[error("data set does not parse: {0}")]
    Structure(#[from] HeaderError),
}

/// Check the data set of a Part-10 file (from `data_set_offset`, in `transfer_syntax`) with
/// the bounded `header::Checker`, as receiving does; returns what it found (Pixel Data's
/// range among it). Values the checker does not look into (pixel data above all) are jumped
/// over, not read: only the bytes the file really has may be jumped (its length is known).
pub fn check_data_set(
    f: &mut std::fs::File,
    transfer_syntax: &str,
    data_set_offset: u64,
) -> Result<HeaderFields, CheckError> {
    let mut checker = Checker::new(transfer_syntax)
        .ok_or_else(|| CheckError::Unsupported(transfer_syntax.to_string()))?;
    let file_len = f.metadata()?.len();
    f.seek(SeekFrom::Start(data_set_offset))?;
    let mut left = file_len.saturating_sub(data_set_offset);
    let mut r = BufReader::with_capacity(64 * 1024, f);
    let mut buf = vec![0u8; 64 * 1024];
    while left > 0 {
        let skip = checker.skippable().min(left);
        if skip >= 16 * 1024 {
            r.seek_relative(skip as i64)?;
            checker.skip(skip)?;
            left -= skip;
            continue;
        }
        let want = (buf.len() as u64).min(left) as usize;
        let n = r.read(&mut buf[..want])?;
        if n == 0 {
            break;
        }
        checker.feed(&buf[..n])?;
        left -= n as u64;
    }
    Ok(checker.finish()?)
}
