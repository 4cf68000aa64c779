//! A push-parser that checks the structure of a received data set and picks out the header
//! fields the index needs, while the bytes stream to disk.
//!
//! # Why our own parser
//!
//! The data set comes from the network. dicom-rs 0.10 allocates from declared lengths (a
//! small input declaring a huge element length makes it reserve gigabytes), so received bytes
//! are never handed to it before this scanner has proven every length fits. The scanner holds
//! at most one element header and the few short values it keeps, whatever the instance size;
//! it never allocates from a length field.
//!
//! # What it checks
//!
//! * Every element header is complete and every defined length fits inside the bytes sent and
//!   inside its enclosing sequence or item.
//! * Sequences and items of undefined length are closed by their delimiters; encapsulated pixel
//!   data is a run of items closed by a sequence delimiter.
//! * Sequences are entered at every depth (SQ in explicit VR; in implicit VR by dictionary VR
//!   or undefined length), and UN of undefined length is read as implicit VR little endian
//!   (PS3.5 6.2.2).
//!
//! # What it keeps
//!
//! Top-level elements of interest (see [`Wanted`]) of at most [`MAX_KEPT_VALUE`] bytes, read
//! only until Pixel Data. Values are decoded with the data set's Specific Character Set.

use std::fmt;

use dicom_encoding::text::{SpecificCharacterSet, TextCodec};

/// Longest value kept for the index; longer values of wanted tags are skipped.
pub const MAX_KEPT_VALUE: u32 = 1024;
/// Bytes accepted (and ignored, counted) after the end of a deflate stream. PS3.5 A.5 allows
/// one pad byte; writers leave more (pydicom's `image_dfl.dcm` has 8), and pydicom, DCMTK and
/// Orthanc read such files. They are not part of the data set: no reader sees them. More
/// than this is refused rather than kept unexplained.
pub const MAX_TRAILING_AFTER_DEFLATE: usize = 64 * 1024;
/// Deepest nesting of sequences and items accepted.
pub const MAX_DEPTH: usize = 64;

/// Bounds on inflating a deflated data set (a decompression bomb: 1 MB of deflate can
/// declare a gigabyte). Refused as soon as either is passed, while inflating into a fixed
/// buffer: the bytes are never held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InflateLimits {
    /// Largest inflated data set.
    pub max_bytes: u64,
    /// Largest ratio of inflated to deflated bytes, checked once more than
    /// [`RATIO_CHECKED_FROM`] bytes are inflated (small data sets of padding compress well).
    pub max_ratio: u64,
}

/// Inflated size from which [`InflateLimits::max_ratio`] applies.
pub const RATIO_CHECKED_FROM: u64 = 16 << 20;

/// Default of [`InflateLimits::max_bytes`] (and of the configuration's `max_inflated_bytes`).
pub const DEFAULT_MAX_INFLATED_BYTES: u64 = 512 << 20;
/// Default of [`InflateLimits::max_ratio`] (and of `max_inflation_ratio`).
pub const DEFAULT_MAX_INFLATION_RATIO: u64 = 200;

impl Default for InflateLimits {
    fn default() -> InflateLimits {
        InflateLimits {
            max_bytes: DEFAULT_MAX_INFLATED_BYTES,
            max_ratio: DEFAULT_MAX_INFLATION_RATIO,
        }
    }
}

static LIMIT_BYTES: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(DEFAULT_MAX_INFLATED_BYTES);
static LIMIT_RATIO: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(DEFAULT_MAX_INFLATION_RATIO);

impl InflateLimits {
    /// The limits every [`Checker`] uses: set once from the configuration at start
    /// ([`InflateLimits::install`]), the defaults until then. Process-wide so that receive,
    /// the pipeline and `fiona deid` bound inflation the same way.
    pub fn current() -> InflateLimits {
        use std::sync::atomic::Ordering::Relaxed;
        InflateLimits {
            max_bytes: LIMIT_BYTES.load(Relaxed),
            max_ratio: LIMIT_RATIO.load(Relaxed),
        }
    }

    pub fn install(self) {
        use std::sync::atomic::Ordering::Relaxed;
        LIMIT_BYTES.store(self.max_bytes, Relaxed);
        LIMIT_RATIO.store(self.max_ratio, Relaxed);
    }
}

const UNDEFINED: u32 = 0xFFFF_FFFF;
const ITEM: u32 = 0xFFFE_E000;
const ITEM_DELIM: u32 = 0xFFFE_E00D;
const SEQ_DELIM: u32 = 0xFFFE_E0DD;
const PIXEL_DATA: u32 = 0x7FE0_0010;

/// How the data set's elements are encoded (the transfer syntax, less compression).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    ImplicitLittle,
    ExplicitLittle,
    ExplicitBig,
}

impl Encoding {
    /// The element encoding of a transfer syntax, and whether the data set is deflated.
    /// `None` for transfer syntaxes whose data set encoding we cannot read.
    pub fn of_transfer_syntax(uid: &str) -> Option<(Encoding, bool)> {
        let uid = uid.trim_end_matches(['\0', ' ']);
        match uid {
            "1.2.840.10008.1.2" => Some((Encoding::ImplicitLittle, false)),
            "1.2.840.10008.1.2.2" => Some((Encoding::ExplicitBig, false)),
            "1.2.840.10008.1.2.1.99" => Some((Encoding::ExplicitLittle, true)),
            // JPIP referenced deflate
            "1.2.840.10008.1.2.4.95" => Some((Encoding::ExplicitLittle, true)),
            _ => {
                let ts = dicom_transfer_syntax_registry::TransferSyntaxRegistry;
                use dicom_encoding::TransferSyntaxIndex;
                let t = ts.get(uid)?;
                if t.endianness() == dicom_encoding::transfer_syntax::Endianness::Big {
                    Some((Encoding::ExplicitBig, false))
                } else {
                    Some((Encoding::ExplicitLittle, false))
                }
            }
        }
    }
}

/// Why a data set was refused. Messages carry offsets and tags, never values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    #[error("data set ends inside an element header at offset {0}")]
    TruncatedHeader(u64),
    #[error("element ({group:04X},{elem:04X}) at offset {offset} declares {declared} bytes but the data set ends first")]
    TruncatedValue {
        group: u16,
        elem: u16,
        offset: u64,
        declared: u32,
    },
    #[error("element ({group:04X},{elem:04X}) at offset {offset} runs past the end of its enclosing item or sequence")]
    CrossesContainer { group: u16, elem: u16, offset: u64 },
    #[error("undefined length on ({group:04X},{elem:04X}) with VR {vr} at offset {offset}")]
    UndefinedLength {
        group: u16,
        elem: u16,
        vr: String,
        offset: u64,
    },
    #[error("element ({group:04X},{elem:04X}) at offset {offset} inside encapsulated pixel data, where only items may appear")]
    NotAnItem { group: u16, elem: u16, offset: u64 },
    #[error("unexpected delimiter ({group:04X},{elem:04X}) at offset {offset}")]
    UnexpectedDelimiter { group: u16, elem: u16, offset: u64 },
    #[error("sequence or item of undefined length opened at offset {0} is never closed")]
    Unclosed(u64),
    #[error("invalid VR bytes {0:02X?} at offset {1}")]
    BadVr([u8; 2], u64),
    #[error("sequences nested deeper than {MAX_DEPTH}")]
    TooDeep,
    #[error("data set is empty")]
    Empty,
    #[error("missing required attribute {0}")]
    Missing(&'static str),
    #[error("deflated data set is corrupt: {0}")]
    Deflate(String),
    #[error("deflated data set stream is truncated")]
    DeflateTruncated,
    #[error("more than {MAX_TRAILING_AFTER_DEFLATE} bytes after the end of the deflated data set")]
    TrailingData,
    #[error("element ({group:04X},{elem:04X}) at offset {offset}: {vr} value of {len} bytes is not a whole number of values")]
    PartialValue {
        group: u16,
        elem: u16,
        vr: String,
        len: u32,
        offset: u64,
    },
    #[error("deflated data set inflates to more than {limit} bytes (max_inflated_bytes)")]
    InflatedTooLarge { limit: u64 },
    #[error("deflated data set inflates more than {limit} times its size (max_inflation_ratio): {inflated} bytes from {deflated}")]
    InflationRatio {
        limit: u64,
        inflated: u64,
        deflated: u64,
    },
}

/// Top-level attributes kept for the index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wanted {
    SpecificCharacterSet,
    SopClassUid,
    SopInstanceUid,
    StudyDate,
    StudyTime,
    AccessionNumber,
    Modality,
    StudyDescription,
    SeriesDescription,
    PatientName,
    PatientId,
    StudyInstanceUid,
    SeriesInstanceUid,
    SeriesNumber,
    NumberOfFrames,
}

impl Wanted {
    fn of(tag: u32) -> Option<Wanted> {
        Some(match tag {
            0x0008_0005 => Wanted::SpecificCharacterSet,
            0x0008_0016 => Wanted::SopClassUid,
            0x0008_0018 => Wanted::SopInstanceUid,
            0x0008_0020 => Wanted::StudyDate,
            0x0008_0030 => Wanted::StudyTime,
            0x0008_0050 => Wanted::AccessionNumber,
            0x0008_0060 => Wanted::Modality,
            0x0008_1030 => Wanted::StudyDescription,
            0x0008_103E => Wanted::SeriesDescription,
            0x0010_0010 => Wanted::PatientName,
            0x0010_0020 => Wanted::PatientId,
            0x0020_000D => Wanted::StudyInstanceUid,
            0x0020_000E => Wanted::SeriesInstanceUid,
            0x0020_0011 => Wanted::SeriesNumber,
            0x0028_0008 => Wanted::NumberOfFrames,
            _ => return None,
        })
    }
}

/// Header fields of one instance. Holds patient data: its `Debug` prints no values.
#[derive(Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HeaderFields {
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    pub study_date: String,
    pub study_time: String,
    pub accession_number: String,
    pub modality: String,
    pub study_description: String,
    pub series_description: String,
    pub series_number: Option<i64>,
    pub patient_name: String,
    pub patient_id: String,
    pub number_of_frames: Option<u32>,
    /// Byte range of the top-level Pixel Data element (header included) in the data set, for
    /// copying pixels through without reading them.
    #[serde(default)]
    pub pixel_data: Option<(u64, u64)>,
    /// Length of the whole data set in bytes (after inflation for deflated data sets).
    #[serde(default)]
    pub data_set_length: u64,
    /// Bytes after the end of the deflate stream of a deflated data set (ignored; see
    /// [`MAX_TRAILING_AFTER_DEFLATE`]).
    #[serde(default)]
    pub trailing_after_deflate: u64,
}

impl fmt::Debug for HeaderFields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeaderFields")
            .field("modality", &self.modality.len())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Sequence,
    Item,
    Fragments,
}

#[derive(Debug, Clone, Copy)]
struct Container {
    kind: Kind,
    /// Absolute end offset for defined lengths.
    end: Option<u64>,
    /// Offset where it was opened, for error messages.
    opened_at: u64,
    /// Content is implicit VR little endian (UN of undefined length).
    implicit: bool,
}

#[derive(Debug)]
enum State {
    /// Collecting an element header into `head[..have]`.
    Header { have: usize },
    /// Skipping `remaining` bytes of a value.
    Skip { remaining: u64 },
    /// Keeping a value of interest.
    Keep { what: Wanted, remaining: u32 },
}

/// The scanner. Feed it the data set bytes in any chunking, then call [`Scanner::finish`].
pub struct Scanner {
    encoding: Encoding,
    pos: u64,
    state: State,
    head: [u8; 12],
    stack: Vec<Container>,
    /// Pixel Data reached at top level: stop keeping values.
    past_pixels: bool,
    /// Start and (once known) end of the top-level Pixel Data element.
    pixel: Option<(u64, Option<u64>)>,
    kept: Vec<(Wanted, Vec<u8>)>,
    keep_buf: Vec<u8>,
    /// The element whose value is being read: group, element, header offset, length.
    value_of: (u16, u16, u64, u32),
}

impl fmt::Debug for Scanner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scanner")
            .field("pos", &self.pos)
            .field("depth", &self.stack.len())
            .finish_non_exhaustive()
    }
}

fn is_long_vr(vr: [u8; 2]) -> bool {
    matches!(
        &vr,
        b"OB"
            | b"OD"
            | b"OF"
            | b"OL"
            | b"OV"
            | b"OW"
            | b"SQ"
            | b"UC"
            | b"UN"
            | b"UR"
            | b"UT"
            | b"SV"
            | b"UV"
    )
}

/// Size of one value of a binary VR (`US` 2, `UL` 4, `FD` 8, ...); `None` for the others.
fn vr_unit(vr: [u8; 2]) -> Option<u32> {
    match &vr {
        b"US" | b"SS" | b"OW" => Some(2),
        b"UL" | b"SL" | b"FL" | b"AT" | b"OL" | b"OF" => Some(4),
        b"FD" | b"SV" | b"UV" | b"OD" | b"OV" => Some(8),
        _ => None,
    }
}

/// The standard dictionary's VR of a tag (for implicit VR data), when it has one.
fn dictionary_vr(tag: u32) -> Option<[u8; 2]> {
    use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
    use dicom_core::Tag;
    let t = Tag((tag >> 16) as u16, tag as u16);
    dicom_dictionary_std::StandardDataDictionary
        .by_tag(t)
        .map(|e| e.vr().relaxed().to_bytes())
}

impl Scanner {
    pub fn new(encoding: Encoding) -> Scanner {
        Scanner {
            encoding,
            pos: 0,
            state: State::Header { have: 0 },
            head: [0; 12],
            stack: Vec::new(),
            past_pixels: false,
            pixel: None,
            kept: Vec::new(),
            keep_buf: Vec::new(),
            value_of: (0, 0, 0, 0),
        }
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// How many of the next bytes the scanner would only skip (the rest of a value it does
    /// not keep). A reader that can seek may jump over them with [`Scanner::skip`] instead of
    /// feeding them.
    pub fn skippable(&self) -> u64 {
        match self.state {
            State::Skip { remaining } => remaining,
            _ => 0,
        }
    }

    /// Advance over `n` bytes the caller jumped over, `n <= self.skippable()`. The caller
    /// must know the bytes exist (e.g. from the file length): skipping is not evidence.
    pub fn skip(&mut self, n: u64) -> Result<(), HeaderError> {
        let State::Skip { remaining } = self.state else {
            return Ok(());
        };
        let n = n.min(remaining);
        self.pos += n;
        if n == remaining {
            self.state = State::Header { have: 0 };
            self.close_defined()?;
        } else {
            self.state = State::Skip {
                remaining: remaining - n,
            };
        }
        Ok(())
    }

    fn current_implicit(&self) -> bool {
        self.encoding == Encoding::ImplicitLittle || self.stack.last().is_some_and(|c| c.implicit)
    }

    fn big_endian(&self) -> bool {
        self.encoding == Encoding::ExplicitBig && !self.stack.last().is_some_and(|c| c.implicit)
    }

    fn in_fragments(&self) -> bool {
        self.stack.last().is_some_and(|c| c.kind == Kind::Fragments)
    }

    fn header_len(&self, have: usize) -> usize {
        // Items and delimiters are always tag + 4-byte length.
        if have >= 4 {
            let tag = self.tag_of();
            if tag >> 16 == 0xFFFE {
                return 8;
            }
        }
        if self.current_implicit() || self.in_fragments() {
            return 8;
        }
        if have >= 6 && is_long_vr([self.head[4], self.head[5]]) {
            12
        } else {
            8
        }
    }

    fn tag_of(&self) -> u32 {
        let h = &self.head;
        if self.big_endian() {
            (u32::from(u16::from_be_bytes([h[0], h[1]])) << 16)
                | u32::from(u16::from_be_bytes([h[2], h[3]]))
        } else {
            (u32::from(u16::from_le_bytes([h[0], h[1]])) << 16)
                | u32::from(u16::from_le_bytes([h[2], h[3]]))
        }
    }

    fn u32_at(&self, i: usize) -> u32 {
        let b = [
            self.head[i],
            self.head[i + 1],
            self.head[i + 2],
            self.head[i + 3],
        ];
        if self.big_endian() {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    }

    fn u16_at(&self, i: usize) -> u16 {
        let b = [self.head[i], self.head[i + 1]];
        if self.big_endian() {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        }
    }

    /// Feed the next bytes of the data set.
    pub fn feed(&mut self, mut data: &[u8]) -> Result<(), HeaderError> {
        while !data.is_empty() {
            match self.state {
                State::Header { have } => {
                    let need = self.header_len(have);
                    // header_len may grow once the VR is known: take bytes one phase at a time
                    let want = if have < 6 { 6.min(need) } else { need };
                    let take = (want - have).min(data.len());
                    self.head[have..have + take].copy_from_slice(&data[..take]);
                    data = &data[take..];
                    self.pos += take as u64;
                    let have = have + take;
                    if have == self.header_len(have) {
                        self.state = State::Header { have: 0 };
                        self.on_header(have)?;
                    } else {
                        self.state = State::Header { have };
                    }
                }
                State::Skip { remaining } => {
                    let take = remaining.min(data.len() as u64);
                    data = &data[take as usize..];
                    self.pos += take;
                    if take == remaining {
                        self.state = State::Header { have: 0 };
                        self.close_defined()?;
                    } else {
                        self.state = State::Skip {
                            remaining: remaining - take,
                        };
                    }
                }
                State::Keep { what, remaining } => {
                    let take = (remaining as usize).min(data.len());
                    self.keep_buf.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    self.pos += take as u64;
                    if take == remaining as usize {
                        let v = std::mem::take(&mut self.keep_buf);
                        self.kept.push((what, v));
                        self.state = State::Header { have: 0 };
                        self.close_defined()?;
                    } else {
                        self.state = State::Keep {
                            what,
                            remaining: remaining - take as u32,
                        };
                    }
                }
            }
        }
        Ok(())
    }

    /// Pop every defined-length container that ends exactly here; fail if one was overrun.
    fn close_defined(&mut self) -> Result<(), HeaderError> {
        while let Some(c) = self.stack.last() {
            match c.end {
                Some(end) if end == self.pos => {
                    self.stack.pop();
                }
                Some(end) if end < self.pos => {
                    return Err(HeaderError::CrossesContainer {
                        group: 0xFFFE,
                        elem: 0xE000,
                        offset: c.opened_at,
                    });
                }
                _ => break,
            }
        }
        Ok(())
    }

    fn push(&mut self, c: Container) -> Result<(), HeaderError> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(HeaderError::TooDeep);
        }
        self.stack.push(c);
        // An empty defined-length container closes at once.
        self.close_defined()
    }

    fn on_header(&mut self, hlen: usize) -> Result<(), HeaderError> {
        let start = self.pos - hlen as u64;
        let tag = self.tag_of();
        let group = (tag >> 16) as u16;
        let elem = tag as u16;
        let (vr, len) = if tag >> 16 == 0xFFFE || self.current_implicit() || self.in_fragments() {
            (None, self.u32_at(4))
        } else {
            let vr = [self.head[4], self.head[5]];
            if !vr.iter().all(|b| b.is_ascii_uppercase()) {
                return Err(HeaderError::BadVr(vr, start));
            }
            if hlen == 12 {
                (Some(vr), self.u32_at(8))
            } else {
                (Some(vr), u32::from(self.u16_at(6)))
            }
        };

        // Bounds: a defined length must fit within the enclosing container.
        if len != UNDEFINED {
            if let Some(end) = self.stack.iter().rev().find_map(|c| c.end) {
                if self.pos + u64::from(len) > end {
                    return Err(HeaderError::CrossesContainer {
                        group,
                        elem,
                        offset: start,
                    });
                }
            }
        }

        match tag {
            ITEM => {
                match self.stack.last().map(|c| c.kind) {
                    Some(Kind::Fragments) => {
                        if len == UNDEFINED {
                            return Err(HeaderError::UndefinedLength {
                                group,
                                elem,
                                vr: "fragment".into(),
                                offset: start,
                            });
                        }
                        self.start_value(None, len, (group, elem, start));
                    }
                    Some(Kind::Sequence) => {
                        let implicit = self.stack.last().is_some_and(|c| c.implicit);
                        self.push(Container {
                            kind: Kind::Item,
                            end: (len != UNDEFINED).then(|| self.pos + u64::from(len)),
                            opened_at: start,
                            implicit,
                        })?;
                    }
                    _ => {
                        return Err(HeaderError::UnexpectedDelimiter {
                            group,
                            elem,
                            offset: start,
                        })
                    }
                }
                Ok(())
            }
            ITEM_DELIM => {
                match self.stack.last() {
                    Some(c) if c.kind == Kind::Item && c.end.is_none() => {
                        self.stack.pop();
                    }
                    _ => {
                        return Err(HeaderError::UnexpectedDelimiter {
                            group,
                            elem,
                            offset: start,
                        })
                    }
                }
                self.close_defined()
            }
            SEQ_DELIM => {
                match self.stack.last() {
                    Some(c)
                        if matches!(c.kind, Kind::Sequence | Kind::Fragments)
                            && c.end.is_none() =>
                    {
                        let fragments = c.kind == Kind::Fragments;
                        self.stack.pop();
                        if fragments && self.stack.is_empty() {
                            if let Some((start, None)) = self.pixel {
                                self.pixel = Some((start, Some(self.pos)));
                            }
                        }
                    }
                    _ => {
                        return Err(HeaderError::UnexpectedDelimiter {
                            group,
                            elem,
                            offset: start,
                        })
                    }
                }
                self.close_defined()
            }
            _ => {
                if self.in_fragments() {
                    return Err(HeaderError::NotAnItem {
                        group,
                        elem,
                        offset: start,
                    });
                }
                if self.stack.last().is_some_and(|c| c.kind == Kind::Sequence) {
                    // Only items may appear directly in a sequence.
                    return Err(HeaderError::UnexpectedDelimiter {
                        group,
                        elem,
                        offset: start,
                    });
                }
                let top = self.stack.is_empty();
                if top && tag == PIXEL_DATA {
                    self.past_pixels = true;
                    let end = (len != UNDEFINED).then(|| self.pos + u64::from(len));
                    self.pixel = Some((start, end));
                }
                // The VR: stated (explicit VR), or the dictionary's (implicit VR).
                let as_vr = vr.or_else(|| dictionary_vr(tag));
                let is_sq = as_vr == Some(*b"SQ") || (vr.is_none() && len == UNDEFINED);
                if tag == PIXEL_DATA && len == UNDEFINED {
                    return self.push(Container {
                        kind: Kind::Fragments,
                        end: None,
                        opened_at: start,
                        implicit: false,
                    });
                }
                if is_sq {
                    let implicit = self.current_implicit();
                    return self.push(Container {
                        kind: Kind::Sequence,
                        end: (len != UNDEFINED).then(|| self.pos + u64::from(len)),
                        opened_at: start,
                        implicit,
                    });
                }
                if len == UNDEFINED {
                    if vr == Some(*b"UN") {
                        // PS3.5 6.2.2: UN of undefined length holds an implicit VR LE sequence.
                        return self.push(Container {
                            kind: Kind::Sequence,
                            end: None,
                            opened_at: start,
                            implicit: true,
                        });
                    }
                    return Err(HeaderError::UndefinedLength {
                        group,
                        elem,
                        vr: vr
                            .map(|v| String::from_utf8_lossy(&v).into_owned())
                            .unwrap_or_else(|| "implicit".into()),
                        offset: start,
                    });
                }
                // A binary value must hold whole values: dicom-rs, which parses what this
                // check passed, reads `len / size` values and goes on from there, out of step
                // (found by fuzzing: a 6-byte UL made it read a length from text and reserve
                // 775 MB).
                if let Some((unit, v)) = as_vr.and_then(|v| vr_unit(v).map(|u| (u, v))) {
                    if len % unit != 0 {
                        return Err(HeaderError::PartialValue {
                            group,
                            elem,
                            vr: String::from_utf8_lossy(&v).into_owned(),
                            len,
                            offset: start,
                        });
                    }
                }
                // Keep the first occurrence only: a data set repeating a wanted tag must not
                // make the scanner's memory grow with the instance.
                let keep = if top && !self.past_pixels && len <= MAX_KEPT_VALUE {
                    Wanted::of(tag).filter(|w| !self.kept.iter().any(|(k, _)| k == w))
                } else {
                    None
                };
                self.start_value(keep, len, (group, elem, start));
                Ok(())
            }
        }
    }

    /// Begin a value of `len` bytes of the element `(group, elem)` whose header starts at
    /// `offset` (remembered for the error if the data set ends inside it).
    fn start_value(
        &mut self,
        keep: Option<Wanted>,
        len: u32,
        (group, elem, offset): (u16, u16, u64),
    ) {
        self.value_of = (group, elem, offset, len);
        if len == 0 {
            if let Some(w) = keep {
                self.kept.push((w, Vec::new()));
            }
            self.state = State::Header { have: 0 };
            // close_defined cannot fail for a zero-length value we just bounds-checked
            let _ = self.close_defined();
            return;
        }
        self.state = match keep {
            Some(what) => {
                self.keep_buf.clear();
                State::Keep {
                    what,
                    remaining: len,
                }
            }
            None => State::Skip {
                remaining: u64::from(len),
            },
        };
    }

    /// The data set is complete: check nothing is left open and return the kept fields.
    pub fn finish(self) -> Result<HeaderFields, HeaderError> {
        match self.state {
            State::Header { have: 0 } => {}
            State::Header { .. } => return Err(HeaderError::TruncatedHeader(self.pos)),
            State::Skip { .. } | State::Keep { .. } => {
                let (group, elem, offset, declared) = self.value_of;
                return Err(HeaderError::TruncatedValue {
                    group,
                    elem,
                    offset,
                    declared,
                });
            }
        }
        if let Some(c) = self.stack.last() {
            return Err(HeaderError::Unclosed(c.opened_at));
        }
        if self.pos == 0 {
            return Err(HeaderError::Empty);
        }
        let big = self.encoding == Encoding::ExplicitBig;
        let mut f = build_fields(self.kept, big);
        f.pixel_data = self.pixel.and_then(|(s, e)| e.map(|e| (s, e)));
        f.data_set_length = self.pos;
        Ok(f)
    }
}

/// Checks a data set in any transfer syntax as it arrives: inflates deflated ones first.
pub enum Checker {
    Plain(Scanner),
    Deflated(Box<Inflater>),
}

impl fmt::Debug for Checker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Checker::Plain(_) => "Checker::Plain",
            Checker::Deflated(_) => "Checker::Deflated",
        })
    }
}

impl Checker {
    /// `None` when the transfer syntax has no data set encoding we can read.
    pub fn new(transfer_syntax: &str) -> Option<Checker> {
        let (enc, deflated) = Encoding::of_transfer_syntax(transfer_syntax)?;
        Some(if deflated {
            Checker::Deflated(Box::new(Inflater::with_limits(
                Scanner::new(enc),
                InflateLimits::current(),
            )))
        } else {
            Checker::Plain(Scanner::new(enc))
        })
    }

    pub fn feed(&mut self, data: &[u8]) -> Result<(), HeaderError> {
        match self {
            Checker::Plain(s) => s.feed(data),
            Checker::Deflated(d) => d.feed(data),
        }
    }

    /// See [`Scanner::skippable`]; always 0 for deflated data (every byte must be inflated).
    pub fn skippable(&self) -> u64 {
        match self {
            Checker::Plain(s) => s.skippable(),
            Checker::Deflated(_) => 0,
        }
    }

    /// See [`Scanner::skip`].
    pub fn skip(&mut self, n: u64) -> Result<(), HeaderError> {
        match self {
            Checker::Plain(s) => s.skip(n),
            Checker::Deflated(_) => Ok(()),
        }
    }

    pub fn finish(self) -> Result<HeaderFields, HeaderError> {
        match self {
            Checker::Plain(s) => s.finish(),
            Checker::Deflated(d) => d.finish(),
        }
    }
}

/// Inflates a deflated data set (raw deflate, PS3.5 A.5) into a [`Scanner`] through a fixed
/// buffer. The stream must end properly; up to [`MAX_TRAILING_AFTER_DEFLATE`] bytes after its
/// end are ignored and counted (`HeaderFields::trailing_after_deflate`).
pub struct Inflater {
    d: flate2::Decompress,
    buf: Vec<u8>,
    ended: bool,
    trailing: usize,
    scanner: Scanner,
    limits: InflateLimits,
}

impl Inflater {
    pub fn new(scanner: Scanner) -> Inflater {
        Inflater::with_limits(scanner, InflateLimits::default())
    }

    pub fn with_limits(scanner: Scanner, limits: InflateLimits) -> Inflater {
        Inflater {
            d: flate2::Decompress::new(false),
            buf: vec![0; 64 * 1024],
            ended: false,
            trailing: 0,
            scanner,
            limits,
        }
    }

    fn check_limits(&self) -> Result<(), HeaderError> {
        let (inflated, deflated) = (self.d.total_out(), self.d.total_in());
        if inflated > self.limits.max_bytes {
            return Err(HeaderError::InflatedTooLarge {
                limit: self.limits.max_bytes,
            });
        }
        if inflated > RATIO_CHECKED_FROM && inflated / deflated.max(1) > self.limits.max_ratio {
            return Err(HeaderError::InflationRatio {
                limit: self.limits.max_ratio,
                inflated,
                deflated,
            });
        }
        Ok(())
    }

    pub fn feed(&mut self, mut input: &[u8]) -> Result<(), HeaderError> {
        loop {
            if self.ended {
                // PS3.5 A.5: an odd-length stream is padded with one zero byte; other writers
                // leave a few stray bytes, which readers ignore. Bounded.
                if self.trailing + input.len() > MAX_TRAILING_AFTER_DEFLATE {
                    return Err(HeaderError::TrailingData);
                }
                self.trailing += input.len();
                return Ok(());
            }
            let (in0, out0) = (self.d.total_in(), self.d.total_out());
            let result = self
                .d
                .decompress(input, &mut self.buf, flate2::FlushDecompress::None);
            let consumed = (self.d.total_in() - in0) as usize;
            let produced = (self.d.total_out() - out0) as usize;
            // Scan what was inflated before reporting a decompression error, so the error
            // does not depend on how the sender split its data.
            self.scanner.feed(&self.buf[..produced])?;
            self.check_limits()?;
            let status = result.map_err(|e| HeaderError::Deflate(e.to_string()))?;
            input = &input[consumed..];
            if status == flate2::Status::StreamEnd {
                self.ended = true;
                continue;
            }
            if input.is_empty() && produced < self.buf.len() {
                return Ok(());
            }
            if consumed == 0 && produced == 0 {
                return Err(HeaderError::Deflate("no progress".into()));
            }
        }
    }

    pub fn finish(self) -> Result<HeaderFields, HeaderError> {
        if !self.ended {
            return Err(HeaderError::DeflateTruncated);
        }
        let mut f = self.scanner.finish()?;
        f.trailing_after_deflate = self.trailing as u64;
        Ok(f)
    }
}

fn build_fields(kept: Vec<(Wanted, Vec<u8>)>, big_endian: bool) -> HeaderFields {
    let charset = kept
        .iter()
        .find(|(w, _)| *w == Wanted::SpecificCharacterSet)
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default();
    // The first non-empty defined term; with code extensions the first names the default.
    let code = charset
        .split('\\')
        .map(|s| s.trim())
        .find(|s| !s.is_empty())
        .unwrap_or("");
    let cs = SpecificCharacterSet::from_code(code).unwrap_or_default();
    let text = |v: &[u8]| -> String {
        let s = cs
            .decode(v)
            .unwrap_or_else(|_| String::from_utf8_lossy(v).into_owned());
        s.trim_end_matches(['\0', ' ']).trim_start().to_string()
    };
    let _ = big_endian; // all kept values are strings; byte order does not apply
    let mut f = HeaderFields::default();
    for (w, v) in kept {
        match w {
            Wanted::SpecificCharacterSet => {}
            Wanted::SopClassUid => f.sop_class_uid = uid(&v),
            Wanted::SopInstanceUid => f.sop_instance_uid = uid(&v),
            Wanted::StudyInstanceUid => f.study_instance_uid = uid(&v),
            Wanted::SeriesInstanceUid => f.series_instance_uid = uid(&v),
            Wanted::StudyDate => f.study_date = ascii(&v),
            Wanted::StudyTime => f.study_time = ascii(&v),
            Wanted::AccessionNumber => f.accession_number = text(&v),
            Wanted::Modality => f.modality = ascii(&v),
            Wanted::StudyDescription => f.study_description = text(&v),
            Wanted::SeriesDescription => f.series_description = text(&v),
            Wanted::PatientName => f.patient_name = text(&v),
            Wanted::PatientId => f.patient_id = text(&v),
            Wanted::SeriesNumber => f.series_number = ascii(&v).parse().ok(),
            Wanted::NumberOfFrames => f.number_of_frames = ascii(&v).parse().ok(),
        }
    }
    f
}

fn uid(v: &[u8]) -> String {
    String::from_utf8_lossy(v)
        .trim_end_matches(['\0', ' '])
        .trim()
        .to_string()
}

fn ascii(v: &[u8]) -> String {
    String::from_utf8_lossy(v)
        .trim_matches(['\0', ' '])
        .to_string()
}

impl HeaderFields {
    /// Attributes an instance must have to be indexed.
    pub fn check_required(&self) -> Result<(), HeaderError> {
        if self.study_instance_uid.is_empty() {
            return Err(HeaderError::Missing("StudyInstanceUID"));
        }
        if self.series_instance_uid.is_empty() {
            return Err(HeaderError::Missing("SeriesInstanceUID"));
        }
        if self.sop_instance_uid.is_empty() {
            return Err(HeaderError::Missing("SOPInstanceUID"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Explicit VR LE element.
    fn el(tag: u32, vr: &[u8; 2], value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&((tag >> 16) as u16).to_le_bytes());
        out.extend_from_slice(&(tag as u16).to_le_bytes());
        out.extend_from_slice(vr);
        if is_long_vr(*vr) {
            out.extend_from_slice(&[0, 0]);
            out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        } else {
            out.extend_from_slice(&(value.len() as u16).to_le_bytes());
        }
        out.extend_from_slice(value);
        out
    }

    fn raw(tag: u32, len: u32) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&((tag >> 16) as u16).to_le_bytes());
        out.extend_from_slice(&(tag as u16).to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out
    }

    fn sample() -> Vec<u8> {
        let mut d = Vec::new();
        d.extend(el(0x0008_0005, b"CS", b"ISO_IR 100"));
        d.extend(el(0x0008_0016, b"UI", b"1.2.840.10008.5.1.4.1.1.2\0"));
        d.extend(el(0x0008_0018, b"UI", b"1.2.3.4\0"));
        d.extend(el(0x0008_0050, b"SH", b"ACC1"));
        // a sequence of undefined length with one undefined item holding one element
        let mut sq = Vec::new();
        sq.extend_from_slice(&0x0008u16.to_le_bytes());
        sq.extend_from_slice(&0x1115u16.to_le_bytes());
        sq.extend_from_slice(b"SQ\0\0");
        sq.extend_from_slice(&UNDEFINED.to_le_bytes());
        sq.extend(raw(ITEM, UNDEFINED));
        sq.extend(el(0x0008_1155, b"UI", b"1.2.9\0"));
        sq.extend(raw(ITEM_DELIM, 0));
        sq.extend(raw(SEQ_DELIM, 0));
        d.extend(sq);
        d.extend(el(0x0010_0010, b"PN", b"Test^J\xF8rgen "));
        d.extend(el(0x0010_0020, b"LO", b"PID1"));
        d.extend(el(0x0020_000D, b"UI", b"1.2.3\0"));
        d.extend(el(0x0020_000E, b"UI", b"1.2.3.1\0"));
        d.extend(el(0x0020_0011, b"IS", b"3 "));
        d.extend(el(PIXEL_DATA, b"OW", &[0u8; 64]));
        d
    }

    #[test]
    fn extracts_fields_in_any_chunking() {
        let d = sample();
        for chunk in [1usize, 3, 7, 64, d.len()] {
            let mut s = Scanner::new(Encoding::ExplicitLittle);
            for c in d.chunks(chunk) {
                s.feed(c).unwrap();
            }
            let f = s.finish().unwrap();
            assert_eq!(f.sop_instance_uid, "1.2.3.4");
            assert_eq!(f.study_instance_uid, "1.2.3");
            assert_eq!(f.series_instance_uid, "1.2.3.1");
            assert_eq!(f.accession_number, "ACC1");
            assert_eq!(f.patient_name, "Test^Jørgen", "Latin-1 decoded");
            assert_eq!(f.series_number, Some(3));
        }
    }

    /// Offsets where a top-level element of [`sample`] ends.
    fn top_level_boundaries() -> Vec<usize> {
        // Re-walk sample() element by element: each `d.extend` in sample() is one top-level
        // element, so rebuild it the same way and record the running length.
        let d = sample();
        let mut s = Scanner::new(Encoding::ExplicitLittle);
        let mut out = Vec::new();
        for (i, b) in d.iter().enumerate() {
            s.feed(std::slice::from_ref(b)).unwrap();
            if s.stack.is_empty() && matches!(s.state, State::Header { have: 0 }) {
                out.push(i + 1);
            }
        }
        out
    }

    #[test]
    fn pixel_data_extent_is_recorded() {
        let d = sample();
        let mut s = Scanner::new(Encoding::ExplicitLittle);
        s.feed(&d).unwrap();
        let f = s.finish().unwrap();
        // sample() ends with Pixel Data OW of 64 bytes: 12-byte header + value.
        assert_eq!(f.pixel_data, Some((d.len() as u64 - 76, d.len() as u64)));
        assert_eq!(f.data_set_length, d.len() as u64);
    }

    /// Jumping over skippable bytes gives the same result as feeding them.
    #[test]
    fn skipping_equals_feeding() {
        let d = sample();
        let mut fed = Scanner::new(Encoding::ExplicitLittle);
        fed.feed(&d).unwrap();
        let mut jumped = Scanner::new(Encoding::ExplicitLittle);
        let mut pos = 0usize;
        while pos < d.len() {
            let n = jumped.skippable() as usize;
            if n > 0 {
                jumped.skip(n as u64).unwrap();
                pos += n;
            } else {
                jumped.feed(&d[pos..pos + 1]).unwrap();
                pos += 1;
            }
        }
        assert_eq!(jumped.finish(), fed.finish());
    }

    #[test]
    fn every_truncation_is_an_error() {
        let d = sample();
        let boundaries = top_level_boundaries();
        assert_eq!(boundaries.len(), 11, "11 top-level elements in sample()");
        assert_eq!(*boundaries.last().unwrap(), d.len());
        for cut in 1..d.len() {
            let mut s = Scanner::new(Encoding::ExplicitLittle);
            s.feed(&d[..cut]).unwrap();
            let r = s.finish();
            if boundaries.contains(&cut) {
                assert!(
                    r.is_ok(),
                    "cut at element boundary {cut} is a shorter valid data set"
                );
            } else {
                assert!(r.is_err(), "cut at {cut} must be refused");
            }
        }
    }

    /// Regression (fuzzing, cfind_identifier): a binary value that is not a whole number of
    /// values is refused, explicit or implicit VR (dictionary VR), so dicom-rs never parses
    /// out of step after this check.
    #[test]
    fn partial_binary_values_are_refused() {
        let mut ul6 = Vec::new();
        ul6.extend_from_slice(&0x0020u16.to_le_bytes());
        ul6.extend_from_slice(&0x0000u16.to_le_bytes());
        ul6.extend_from_slice(b"UL");
        ul6.extend_from_slice(&6u16.to_le_bytes());
        ul6.extend_from_slice(b"1.2.3\0");
        let mut s = Scanner::new(Encoding::ExplicitLittle);
        assert!(matches!(
            s.feed(&ul6),
            Err(HeaderError::PartialValue { len: 6, .. })
        ));
        // Implicit VR: (0020,0000) is UL by the dictionary.
        let mut imp = Vec::new();
        imp.extend_from_slice(&0x0020u16.to_le_bytes());
        imp.extend_from_slice(&0x0000u16.to_le_bytes());
        imp.extend_from_slice(&6u32.to_le_bytes());
        imp.extend_from_slice(b"1.2.3\0");
        let mut s = Scanner::new(Encoding::ImplicitLittle);
        let e = s.feed(&imp).unwrap_err();
        assert!(e.to_string().contains("(0020,0000)"), "{e}");
        // Whole values pass: a 4-byte UL, a 4-byte US pair, text of any even length.
        let mut ok = el(0x0020_0000, b"UL", &[4, 0, 0, 0]);
        ok.extend(el(0x0028_0010, b"US", &[4, 0]));
        ok.extend(el(0x0008_0018, b"UI", b"1.2.3\0"));
        let mut s = Scanner::new(Encoding::ExplicitLittle);
        s.feed(&ok).unwrap();
        s.finish().unwrap();
    }

    #[test]
    fn huge_declared_length_fails_at_finish_without_allocation() {
        let mut d = el(0x0008_0018, b"UI", b"1.2\0");
        d.extend_from_slice(&0x0010u16.to_le_bytes());
        d.extend_from_slice(&0x0010u16.to_le_bytes());
        d.extend_from_slice(b"UT\0\0");
        d.extend_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
        let mut s = Scanner::new(Encoding::ExplicitLittle);
        s.feed(&d).unwrap();
        assert!(s.keep_buf.capacity() < 4096);
        // The reason names the element and where it starts (issue 14, item 8: it used to
        // name the placeholder (0000,0000)).
        let e = s.finish().unwrap_err();
        assert_eq!(
            e,
            HeaderError::TruncatedValue {
                group: 0x0010,
                elem: 0x0010,
                offset: 12,
                declared: 0xFFFF_FFF0,
            }
        );
        assert!(e.to_string().contains("(0010,0010) at offset 12"), "{e}");
    }

    #[test]
    fn repeated_wanted_tags_keep_memory_bounded() {
        let mut d = Vec::new();
        for i in 0..10_000 {
            d.extend(el(0x0010_0010, b"PN", format!("Name{i:0>1000}").as_bytes()));
        }
        let mut s = Scanner::new(Encoding::ExplicitLittle);
        s.feed(&d).unwrap();
        assert!(s.kept.len() <= 1);
        let f = s.finish().unwrap();
        assert!(f.patient_name.starts_with("Name") && f.patient_name.ends_with('0'));
    }

    #[test]
    fn element_overrunning_its_item_is_refused() {
        let mut d = Vec::new();
        d.extend_from_slice(&0x0008u16.to_le_bytes());
        d.extend_from_slice(&0x1115u16.to_le_bytes());
        d.extend_from_slice(b"SQ\0\0");
        d.extend_from_slice(&20u32.to_le_bytes());
        d.extend(raw(ITEM, 12));
        d.extend(el(0x0008_1155, b"UI", b"1.2.3.4.5.6\0")); // 20 bytes > 12
        let mut s = Scanner::new(Encoding::ExplicitLittle);
        let r = s.feed(&d);
        assert!(
            matches!(r, Err(HeaderError::CrossesContainer { .. })),
            "{r:?}"
        );
    }

    #[test]
    fn unclosed_sequence_is_refused() {
        let mut d = Vec::new();
        d.extend_from_slice(&0x0008u16.to_le_bytes());
        d.extend_from_slice(&0x1115u16.to_le_bytes());
        d.extend_from_slice(b"SQ\0\0");
        d.extend_from_slice(&UNDEFINED.to_le_bytes());
        d.extend(raw(ITEM, UNDEFINED));
        let mut s = Scanner::new(Encoding::ExplicitLittle);
        s.feed(&d).unwrap();
        assert!(matches!(s.finish(), Err(HeaderError::Unclosed(_))));
    }

    #[test]
    fn implicit_vr_and_encapsulated_pixels() {
        let mut d = Vec::new();
        let imp = |tag: u32, v: &[u8]| {
            let mut o = raw(tag, v.len() as u32);
            o.extend_from_slice(v);
            o
        };
        d.extend(imp(0x0008_0018, b"1.2.3.4\0"));
        d.extend(imp(0x0020_000D, b"1.2.3\0"));
        // defined-length sequence known from the dictionary (ReferencedImageSequence)
        let mut item = imp(0x0008_1155, b"1.2\0");
        let mut it = raw(ITEM, item.len() as u32);
        it.append(&mut item);
        let mut sq = raw(0x0008_1140, it.len() as u32);
        sq.extend(it);
        d.extend(sq);
        let mut s = Scanner::new(Encoding::ImplicitLittle);
        s.feed(&d).unwrap();
        let f = s.finish().unwrap();
        assert_eq!(f.sop_instance_uid, "1.2.3.4");

        // encapsulated pixel data in explicit LE
        let mut e = el(0x0020_000D, b"UI", b"1.2\0");
        e.extend_from_slice(&0x7FE0u16.to_le_bytes());
        e.extend_from_slice(&0x0010u16.to_le_bytes());
        e.extend_from_slice(b"OB\0\0");
        e.extend_from_slice(&UNDEFINED.to_le_bytes());
        e.extend(raw(ITEM, 0));
        e.extend(raw(ITEM, 4));
        e.extend_from_slice(&[1, 2, 3, 4]);
        let full_len = e.len();
        e.extend(raw(SEQ_DELIM, 0));
        let mut s = Scanner::new(Encoding::ExplicitLittle);
        s.feed(&e).unwrap();
        s.finish().unwrap();
        let mut s = Scanner::new(Encoding::ExplicitLittle);
        s.feed(&e[..full_len]).unwrap();
        assert!(s.finish().is_err(), "missing sequence delimiter");
    }

    /// Regression (fuzzing): an element that is not an item inside encapsulated pixel data.
    #[test]
    fn non_item_inside_fragments_is_refused() {
        let d = hex("20000d0055490400312e3200e07f10004f420000ffffffff080018000400000061626364feffdde000000000");
        let mut s = Scanner::new(Encoding::ExplicitLittle);
        let r = s.feed(&d).and_then(|_| s.finish().map(|_| ()));
        assert!(matches!(r, Err(HeaderError::NotAnItem { .. })), "{r:?}");
    }

    /// Regression (fuzzing): a deflate error is reported the same whatever the chunking.
    #[test]
    fn deflate_error_independent_of_chunking() {
        let d = hex("fa07014000fa");
        let run = |chunk: usize| {
            let mut c = Checker::new("1.2.840.10008.1.2.1.99").unwrap();
            for part in d.chunks(chunk) {
                c.feed(part)?;
            }
            c.finish()
        };
        assert_eq!(run(1), run(d.len()));
    }

    /// A deflated data set followed by stray bytes (as pydicom's `image_dfl.dcm`, 8 of them)
    /// is accepted and the bytes counted; a corrupt stream, a truncated one, and more stray
    /// bytes than the bound are still refused.
    #[test]
    fn stray_bytes_after_a_deflate_stream_are_counted_within_a_bound() {
        use std::io::Write;
        let mut ds = Vec::new();
        for (e, v) in [(0x000Du16, &b"1.2.3\0"[..]), (0x000E, &b"1.2.3.4\0"[..])] {
            ds.extend_from_slice(&0x0020u16.to_le_bytes());
            ds.extend_from_slice(&e.to_le_bytes());
            ds.extend_from_slice(b"UI");
            ds.extend_from_slice(&(v.len() as u16).to_le_bytes());
            ds.extend_from_slice(v);
        }
        let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&ds).unwrap();
        let stream = z.finish().unwrap();
        let check = |bytes: &[u8], chunk: usize| {
            let mut c = Checker::new("1.2.840.10008.1.2.1.99").unwrap();
            for part in bytes.chunks(chunk) {
                c.feed(part)?;
            }
            c.finish()
        };
        let f = check(&stream, 7).unwrap();
        assert_eq!(
            (f.trailing_after_deflate, f.series_instance_uid.as_str()),
            (0, "1.2.3.4")
        );
        let mut stray = stream.clone();
        stray.extend_from_slice(&[0x20, 0x00, 0x10, 0x00, 0xAB, 0xCD, 0x00, 0x01]);
        for chunk in [1, 3, stray.len()] {
            let f = check(&stray, chunk).unwrap();
            assert_eq!(f.trailing_after_deflate, 8);
            assert_eq!(f.study_instance_uid, "1.2.3");
        }
        let mut too_much = stream.clone();
        too_much.resize(stream.len() + MAX_TRAILING_AFTER_DEFLATE + 1, 0x55);
        assert_eq!(
            check(&too_much, 4096).unwrap_err(),
            HeaderError::TrailingData
        );
        assert_eq!(
            check(&stream[..stream.len() - 2], 5).unwrap_err(),
            HeaderError::DeflateTruncated
        );
        let mut corrupt = stream.clone();
        corrupt[0] ^= 0xFF;
        corrupt.extend_from_slice(&[1, 2, 3]);
        assert!(check(&corrupt, 5).is_err());
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn big_endian() {
        let mut d = Vec::new();
        d.extend_from_slice(&0x0020u16.to_be_bytes());
        d.extend_from_slice(&0x000Du16.to_be_bytes());
        d.extend_from_slice(b"UI");
        d.extend_from_slice(&6u16.to_be_bytes());
        d.extend_from_slice(b"1.2.3\0");
        let mut s = Scanner::new(Encoding::ExplicitBig);
        s.feed(&d).unwrap();
        assert_eq!(s.finish().unwrap().study_instance_uid, "1.2.3");
    }

    /// Every transfer syntax dicom-ul may accept (registered and not unsupported) has a data
    /// set encoding the scanner reads, so no accepted instance is unreadable.
    #[test]
    fn every_negotiable_transfer_syntax_is_readable() {
        use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
        let mut n = 0;
        for ts in TransferSyntaxRegistry.iter() {
            if ts.is_unsupported() {
                continue;
            }
            n += 1;
            assert!(
                Encoding::of_transfer_syntax(ts.uid()).is_some(),
                "{} ({})",
                ts.uid(),
                ts.name()
            );
        }
        assert!(n >= 20, "registry lists {n} transfer syntaxes");
    }

    #[test]
    fn transfer_syntax_encodings() {
        use Encoding::*;
        assert_eq!(
            Encoding::of_transfer_syntax("1.2.840.10008.1.2"),
            Some((ImplicitLittle, false))
        );
        assert_eq!(
            Encoding::of_transfer_syntax("1.2.840.10008.1.2.4.70\0"),
            Some((ExplicitLittle, false))
        );
        assert_eq!(
            Encoding::of_transfer_syntax("1.2.840.10008.1.2.1.99"),
            Some((ExplicitLittle, true))
        );
        assert_eq!(Encoding::of_transfer_syntax("1.2.3.4.5.6"), None);
    }
}
