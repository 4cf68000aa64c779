//! Scrubbing one instance's burned-in annotations by known regions: find the signatures whose
//! conditions the header meets, decode every frame, blank their rectangles in every frame,
//! and write the pixels back uncompressed (Explicit VR Little Endian) with the image
//! attributes made consistent.
//!
//! After scrubbing: the file meta's transfer syntax is Explicit VR Little Endian; the
//! photometric interpretation and planar configuration are what the decoder delivered (a
//! compressed YBR image becomes RGB, pixel-interleaved); BurnedInAnnotation is `NO`; a lossy
//! source keeps its history (LossyImageCompression `01`). An instance whose header matches
//! no signature is left untouched, its pixels not even decoded. An instance that cannot be
//! decoded or masked is an error: the caller parks it, never passes it on.

use dicom_core::header::Header;
use dicom_core::value::{PrimitiveValue, Value};
use dicom_core::{DataElement, Tag, VR};
use dicom_object::mem::InMemElement;
use dicom_object::{FileDicomObject, InMemDicomObject};

use rayon::prelude::*;

use super::decode::{decode, DecodeError};
use super::mask::{mask_frame, Layout, Palette, Photometric};
use super::ocr::{text_boxes, OcrError, OcrSettings};
use super::signatures::{Attr, HeaderValues, Library, Rect};
use crate::project::{OcrConfig, PixelConfig};

/// Explicit VR Little Endian.
pub const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";

/// Lossy transfer syntaxes: their pixels already lost information, which must stay on record.
const LOSSY: &[&str] = &[
    "1.2.840.10008.1.2.4.50",
    "1.2.840.10008.1.2.4.51",
    "1.2.840.10008.1.2.4.81",
    "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.4.203",
];

/// Largest decoded image the stage accepts by default (all frames), 4 GiB.
pub const DEFAULT_LIMIT: u64 = 4 << 30;

/// The pixel stage as configured: the known-region library, the decoded-size limit, and the
/// project's choices.
#[derive(Debug, Clone)]
pub struct Stage {
    pub library: Library,
    pub limit: u64,
    pub known_regions: bool,
    pub drop_secondary_capture: bool,
    pub exclude_series: Vec<regex::Regex>,
    /// OCR detection, and which images it reads; `None`: off.
    pub ocr: Option<OcrStage>,
}

/// OCR as configured: how it reads, and which images.
#[derive(Debug, Clone)]
pub struct OcrStage {
    pub settings: OcrSettings,
    pub select: OcrSelect,
}

/// Which images OCR reads: every image, or those that match any of the conditions.
#[derive(Debug, Clone)]
pub struct OcrSelect {
    pub all_images: bool,
    /// Modality (0008,0060) values.
    pub modalities: Vec<String>,
    /// SOP Class UIDs.
    pub sop_classes: Vec<String>,
    /// Regular expressions on SeriesDescription (dose reports, screen saves).
    pub series_descriptions: Vec<regex::Regex>,
    /// Images whose BurnedInAnnotation is YES.
    pub burned_in_annotation: bool,
    /// Modalities read only when the image is derived or secondary (ImageType value 1
    /// DERIVED, or value 2 SECONDARY): reformats, screen captures and annotated key images
    /// of CT and MR carry text; their original slices rarely do.
    pub derived_modalities: Vec<String>,
}

/// Ultrasound image storage classes (current and retired, single- and multi-frame).
const ULTRASOUND: &[&str] = &[
    "1.2.840.10008.5.1.4.1.1.6.1",
    "1.2.840.10008.5.1.4.1.1.6.2",
    "1.2.840.10008.5.1.4.1.1.3.1",
    "1.2.840.10008.5.1.4.1.1.6",
    "1.2.840.10008.5.1.4.1.1.3",
];

impl OcrSelect {
    /// What usually carries burned-in text: ultrasound, secondary and other screen captures,
    /// projection X-ray (CR, DX, MG, XA, RF: markers, names and dates are often burned in),
    /// dose reports and screen saves, derived or secondary CT and MR images, and any image
    /// that says it has burned-in annotation.
    pub fn usual() -> OcrSelect {
        OcrSelect {
            all_images: false,
            modalities: ["US", "SC", "OT", "CR", "DX", "MG", "XA", "RF"]
                .map(String::from)
                .to_vec(),
            derived_modalities: ["CT", "MR"].map(String::from).to_vec(),
            sop_classes: SECONDARY_CAPTURE
                .iter()
                .chain(ULTRASOUND)
                .map(|s| s.to_string())
                .collect(),
            series_descriptions: OcrConfig::USUAL_SERIES
                .iter()
                .filter_map(|p| regex::Regex::new(p).ok())
                .collect(),
            burned_in_annotation: true,
        }
    }

    /// Whether OCR reads this image (from its original header).
    pub fn selects(&self, obj: &FileDicomObject<InMemDicomObject>) -> bool {
        if self.all_images {
            return true;
        }
        let text = |tag: Tag| header_text(obj, tag);
        let modality = text(Tag(0x0008, 0x0060));
        let sop_class = text(Tag(0x0008, 0x0016));
        let series = text(Tag(0x0008, 0x103E));
        (self.burned_in_annotation && text(Tag(0x0028, 0x0301)).eq_ignore_ascii_case("YES"))
            || self
                .modalities
                .iter()
                .any(|m| m.eq_ignore_ascii_case(&modality))
            || self.sop_classes.contains(&sop_class)
            || (self
                .derived_modalities
                .iter()
                .any(|m| m.eq_ignore_ascii_case(&modality))
                && derived_or_secondary(&text(Tag(0x0008, 0x0008))))
            || self.series_descriptions.iter().any(|r| r.is_match(&series))
    }
}

/// Whether an ImageType value (backslash-separated) says DERIVED (value 1) or SECONDARY
/// (value 2).
fn derived_or_secondary(image_type: &str) -> bool {
    let mut v = image_type.split('\\').map(|s| s.trim());
    v.next().is_some_and(|a| a.eq_ignore_ascii_case("DERIVED"))
        || v.next()
            .is_some_and(|b| b.eq_ignore_ascii_case("SECONDARY"))
}

/// What the stage does with one image, decided from its header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing to do: pixel data copied through.
    Keep,
    /// Known regions apply: decode, blank, re-encode.
    Scrub,
    /// The project drops this kind of image: no output.
    Drop(&'static str),
}

/// Secondary Capture Image Storage and its multi-frame variants.
const SECONDARY_CAPTURE: &[&str] = &[
    "1.2.840.10008.5.1.4.1.1.7",
    "1.2.840.10008.5.1.4.1.1.7.1",
    "1.2.840.10008.5.1.4.1.1.7.2",
    "1.2.840.10008.5.1.4.1.1.7.3",
    "1.2.840.10008.5.1.4.1.1.7.4",
];

impl Stage {
    /// The default library shipped with fiona, known regions on, nothing dropped or excluded.
    pub fn default_stage() -> Stage {
        Stage {
            library: Library::default_library(),
            limit: DEFAULT_LIMIT,
            known_regions: true,
            drop_secondary_capture: false,
            exclude_series: Vec::new(),
            ocr: Some(OcrStage {
                settings: OcrSettings::default(),
                select: OcrSelect::usual(),
            }),
        }
    }

    /// The stage for a project's `[projects.NAME.pixel]` settings (validated beforehand).
    pub fn from_config(c: &PixelConfig) -> Result<Stage, String> {
        let library = match &c.library {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("pixel.library: {}: {e}", path.display()))?;
                Library::parse(&text).map_err(|e| format!("pixel.library: {e}"))?
            }
            None => Library::default_library(),
        };
        let exclude_series = c
            .exclude_series
            .iter()
            .map(|p| regex::Regex::new(p).map_err(|e| format!("pixel.exclude_series: {e}")))
            .collect::<Result<_, _>>()?;
        Ok(Stage {
            library,
            limit: DEFAULT_LIMIT,
            known_regions: c.known_regions,
            drop_secondary_capture: c.drop_secondary_capture,
            exclude_series,
            ocr: match OcrStage::from_config(&c.ocr)? {
                Some(o) => {
                    // Started once here: a missing language package is an error now, not
                    // on every image.
                    super::ocr::check_languages(&o.settings.languages)
                        .map_err(|e| format!("pixel.ocr: {e}"))?;
                    Some(o)
                }
                None => None,
            },
        })
    }

    /// What to do with this image (its header is enough to decide).
    pub fn decide(&self, obj: &FileDicomObject<InMemDicomObject>) -> Decision {
        let h = ObjectHeader::new(obj);
        let text = |tag: Tag| header_text(obj, tag);
        let sop_class = text(Tag(0x0008, 0x0016));
        if self.drop_secondary_capture && SECONDARY_CAPTURE.contains(&sop_class.as_str()) {
            return Decision::Drop("secondary capture dropped by the project's settings");
        }
        let series = text(Tag(0x0008, 0x103E));
        // An image that says it carries burned-in annotation is scrubbed whatever the
        // project decided about its series.
        let says_yes = text(Tag(0x0028, 0x0301)).eq_ignore_ascii_case("YES");
        if !says_yes && self.exclude_series.iter().any(|r| r.is_match(&series)) {
            return Decision::Keep;
        }
        if self.known_regions && !self.library.regions_for(&h).is_empty() {
            return Decision::Scrub;
        }
        if self.ocr.as_ref().is_some_and(|o| o.select.selects(obj)) {
            return Decision::Scrub;
        }
        Decision::Keep
    }
}

/// What was done to an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scrubbed {
    /// Signature names and the rectangles they blanked (in every frame).
    pub regions: Vec<(String, Rect)>,
    pub frames: u32,
    pub pixels_masked: u64,
    /// Whether OCR read the image.
    pub ocr: bool,
    /// Word boxes OCR found and blanked (all frames, all rounds).
    pub ocr_words: u64,
    /// Most masking rounds any frame needed (0: OCR found nothing; 1: the check after
    /// masking found nothing left; 2 or more: the check found more, blanked again).
    pub ocr_rounds: u32,
    /// The transfer syntax before (now Explicit VR Little Endian).
    pub from_transfer_syntax: String,
}

/// Why an instance could not be scrubbed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScrubError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("masking failed: {0}")]
    Mask(String),
    #[error("palette colour lookup tables missing or unreadable")]
    Palette,
    #[error(transparent)]
    Ocr(#[from] OcrError),
    #[error(transparent)]
    Detect(#[from] super::detect::DetectError),
    #[error("OCR still reads text in frame {frame} after {rounds} masking rounds")]
    TextRemains { frame: u32, rounds: u32 },
}

/// Header values of a data set for the signature library: top-level values, and for
/// `values_anywhere` every occurrence at any sequence depth.
pub struct ObjectHeader<'a> {
    obj: &'a FileDicomObject<InMemDicomObject>,
}

impl<'a> ObjectHeader<'a> {
    pub fn new(obj: &'a FileDicomObject<InMemDicomObject>) -> Self {
        ObjectHeader { obj }
    }
}

/// A top-level value as text ("" when absent).
fn header_text(obj: &FileDicomObject<InMemDicomObject>, tag: Tag) -> String {
    obj.element(tag)
        .ok()
        .and_then(element_text)
        .unwrap_or_default()
}

fn element_text(e: &InMemElement) -> Option<String> {
    match e.value() {
        Value::Sequence(_) | Value::PixelSequence(_) => None,
        _ => e.to_multi_str().ok().map(|v| {
            v.iter()
                .map(|s| s.trim_matches([' ', '\0']))
                .collect::<Vec<_>>()
                .join("\\")
        }),
    }
}

fn collect_anywhere(obj: &InMemDicomObject, tag: Tag, out: &mut Vec<String>) {
    for e in obj.iter() {
        if e.tag() == tag {
            if let Some(v) = element_text(e) {
                out.push(v);
            }
        }
        if let Value::Sequence(seq) = e.value() {
            for item in seq.items() {
                collect_anywhere(item, tag, out);
            }
        }
    }
}

impl HeaderValues for ObjectHeader<'_> {
    fn value(&self, attr: &Attr) -> Option<String> {
        let (g, e) = attr.group_element();
        let tag = Tag(g, e);
        if g == 0x0002 {
            let m = self.obj.meta();
            return match e {
                0x0010 => Some(m.transfer_syntax().trim_end_matches('\0').to_string()),
                0x0002 => Some(
                    m.media_storage_sop_class_uid()
                        .trim_end_matches('\0')
                        .to_string(),
                ),
                _ => None,
            };
        }
        self.obj.element(tag).ok().and_then(element_text)
    }

    fn values_anywhere(&self, attr: &Attr) -> Vec<String> {
        let (g, e) = attr.group_element();
        let mut out = Vec::new();
        collect_anywhere(self.obj, Tag(g, e), &mut out);
        out
    }
}

fn lut_words(obj: &InMemDicomObject, tag: Tag) -> Option<Vec<u16>> {
    let e = obj.element(tag).ok()?;
    match e.value() {
        Value::Primitive(PrimitiveValue::U16(v)) => Some(v.to_vec()),
        Value::Primitive(p) => {
            let b = p.to_bytes();
            Some(
                b.chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]))
                    .collect(),
            )
        }
        _ => None,
    }
}

/// A PALETTE COLOR image's lookup tables.
fn palette(obj: &InMemDicomObject) -> Result<Palette, ScrubError> {
    let first = obj
        .element(Tag(0x0028, 0x1101))
        .ok()
        .and_then(|e| e.to_multi_int::<i32>().ok())
        .and_then(|v| v.get(1).copied())
        .ok_or(ScrubError::Palette)?;
    let red = lut_words(obj, Tag(0x0028, 0x1201)).ok_or(ScrubError::Palette)?;
    let green = lut_words(obj, Tag(0x0028, 0x1202)).ok_or(ScrubError::Palette)?;
    let blue = lut_words(obj, Tag(0x0028, 0x1203)).ok_or(ScrubError::Palette)?;
    if red.is_empty() {
        return Err(ScrubError::Palette);
    }
    Ok(Palette {
        first: first as u16,
        red,
        green,
        blue,
    })
}

/// Blank every region the library names for this instance, in every frame. `Ok(None)` when
/// no signature applies (the instance is untouched). `limit` bounds the decoded size.
pub fn scrub_known_regions(
    obj: &mut FileDicomObject<InMemDicomObject>,
    library: &Library,
    limit: u64,
) -> Result<Option<Scrubbed>, ScrubError> {
    let stage = Stage {
        library: library.clone(),
        limit,
        ocr: None,
        ..Stage::default_stage()
    };
    scrub(obj, &stage)
}

/// What one frame needed.
/// Tesseract's confidence (0-100) a word needs to count in the check after the learned
/// detector (see `scrub_frame`).
const CHECK_CONFIDENCE: f32 = 80.0;

#[derive(Debug, Default)]
struct FrameResult {
    masked: u64,
    words: u64,
    rounds: u32,
}

/// Blank the known regions, then what OCR reads, in one frame; check by reading again.
/// `detected`: the detector's boxes for this frame when they were found once for all frames
/// (a cine, [`super::detect::combined_text_boxes`]); `None`: the detector reads this frame.
#[allow(clippy::too_many_arguments)] // one frame's whole context; a struct would only rename it
fn scrub_frame(
    frame: &mut [u8],
    index: u32,
    layout: &Layout,
    rects: &[Rect],
    black: &[u32],
    palette: Option<&Palette>,
    ocr: Option<&OcrSettings>,
    detected: Option<&[Rect]>,
) -> Result<FrameResult, ScrubError> {
    let mask = |frame: &mut [u8], rects: &[Rect]| {
        mask_frame(frame, layout, rects, black).map_err(|e| ScrubError::Mask(e.to_string()))
    };
    // The first reading is of the frame as it arrived: a word a known region half covers
    // is still found whole, and blanked whole. With the learned detector, it finds the text
    // and Tesseract is the independent check after masking; without it, Tesseract does both.
    // Tesseract's ink level is fixed on the frame before anything is blanked (the checks
    // reuse it: once the text is blanked, the brightest level left is the anatomy's).
    let mut level = None;
    let first = match ocr {
        Some(settings) => Some(match &settings.detector {
            Some(d) => {
                let bright = super::ocr::brightness(frame, layout, palette)?;
                level = Some(super::ocr::ink_level(&bright));
                match detected {
                    Some(boxes) => boxes.to_vec(),
                    None => super::detect::text_boxes(frame, layout, palette, d)?,
                }
            }
            None => text_boxes(frame, layout, palette, &mut level, settings)?,
        }),
        None => None,
    };
    let mut r = FrameResult {
        masked: mask(frame, rects)?,
        ..FrameResult::default()
    };
    let Some(settings) = ocr else {
        return Ok(r);
    };
    // The check after the detector counts only words Tesseract is sure of: on a picture
    // without text (a photograph) it reads texture as letters with little confidence, and
    // such readings would blank and park images that have no text at all.
    let check = OcrSettings {
        min_confidence: if settings.detector.is_some() {
            settings.min_confidence.max(CHECK_CONFIDENCE)
        } else {
            settings.min_confidence
        },
        ..settings.clone()
    };
    let rounds = read_and_mask(
        frame,
        index,
        settings.max_rounds,
        first,
        settings.detector.is_some(),
        &mut |f| Ok(text_boxes(f, layout, palette, &mut level, &check)?),
        &mut |f, boxes| mask(f, boxes),
    )?;
    r.masked += rounds.masked;
    r.words = rounds.words;
    r.rounds = rounds.rounds;
    Ok(r)
}

/// Reads a frame: the word boxes to blank.
type ReadText<'a> = dyn FnMut(&[u8]) -> Result<Vec<Rect>, ScrubError> + 'a;
/// Blanks boxes in a frame: the pixels blanked.
type MaskBoxes<'a> = dyn FnMut(&mut [u8], &[Rect]) -> Result<u64, ScrubError> + 'a;

/// OCR's rounds on one frame: read (or take the `first` reading, done already), blank what
/// was read, read again, until a reading finds nothing. Text still read after `max_rounds`
/// blankings is an error (the image is parked).
/// When `first` came from another method than `read` (the learned detector), `read` checks
/// the frame even when `first` found nothing.
fn read_and_mask(
    frame: &mut [u8],
    index: u32,
    max_rounds: u32,
    mut first: Option<Vec<Rect>>,
    first_is_independent: bool,
    read: &mut ReadText<'_>,
    mask: &mut MaskBoxes<'_>,
) -> Result<FrameResult, ScrubError> {
    let mut r = FrameResult::default();
    loop {
        let (boxes, was_first) = match first.take() {
            Some(b) => (b, true),
            None => (read(frame)?, false),
        };
        if boxes.is_empty() {
            if was_first && first_is_independent {
                continue;
            }
            return Ok(r);
        }
        if r.rounds >= max_rounds {
            return Err(ScrubError::TextRemains {
                frame: index,
                rounds: r.rounds,
            });
        }
        r.rounds += 1;
        r.words += boxes.len() as u64;
        r.masked += mask(frame, &boxes)?;
    }
}

/// Run the stage on one instance: the known regions that match its header, and OCR if the
/// stage reads this image, in every frame (frames in parallel on rayon). `Ok(None)` when
/// neither applies (the instance is untouched, its pixels not even decoded). When nothing
/// was blanked (`pixels_masked` 0) the instance is untouched too. An error means
/// the instance must be parked: it is never passed on half scrubbed.
pub fn scrub(
    obj: &mut FileDicomObject<InMemDicomObject>,
    stage: &Stage,
) -> Result<Option<Scrubbed>, ScrubError> {
    let regions: Vec<(String, Rect)> = if stage.known_regions {
        stage
            .library
            .regions_for(&ObjectHeader::new(obj))
            .into_iter()
            .map(|(n, r)| (n.to_string(), r))
            .collect()
    } else {
        Vec::new()
    };
    let ocr = stage
        .ocr
        .as_ref()
        .filter(|o| o.select.selects(obj))
        .map(|o| &o.settings);
    if regions.is_empty() && ocr.is_none() {
        return Ok(None);
    }
    let from = obj
        .meta()
        .transfer_syntax()
        .trim_end_matches('\0')
        .to_string();
    let mut decoded = decode(obj, stage.limit)?;
    let palette = match decoded.layout.photometric {
        Photometric::PaletteColor => Some(palette(obj)?),
        _ => None,
    };
    let layout = decoded.layout.clone();
    let black = layout.black(palette.as_ref().map(Palette::darkest));
    let rects: Vec<Rect> = regions.iter().map(|(_, r)| *r).collect();
    // A cine is detected once, on its frames combined; every frame is still checked.
    let combined = match ocr.and_then(|o| o.detector.as_ref()) {
        Some(d) if !d.each_frame && decoded.frames >= super::detect::COMBINED_FROM_FRAMES => Some(
            super::detect::combined_text_boxes(&decoded.data, &layout, palette.as_ref(), d)?,
        ),
        _ => None,
    };
    let results: Vec<FrameResult> = decoded
        .data
        .par_chunks_mut(layout.frame_bytes())
        .enumerate()
        .map(|(i, frame)| {
            scrub_frame(
                frame,
                i as u32,
                &layout,
                &rects,
                &black,
                palette.as_ref(),
                ocr,
                combined.as_deref(),
            )
        })
        .collect::<Result<_, _>>()?;
    let pixels_masked = results.iter().map(|r| r.masked).sum();
    // Nothing to blank (OCR read no text, the regions fell outside the image): the pixel
    // data stays exactly as it came, in its transfer syntax.
    if pixels_masked > 0 {
        write_back(obj, decoded.data, &layout, &from);
    }
    Ok(Some(Scrubbed {
        regions,
        frames: decoded.frames,
        pixels_masked,
        ocr: ocr.is_some(),
        ocr_words: results.iter().map(|r| r.words).sum(),
        ocr_rounds: results.iter().map(|r| r.rounds).max().unwrap_or(0),
        from_transfer_syntax: from,
    }))
}

/// Put the masked native pixels back and make the attributes agree with them; the text that
/// was burned in is gone.
fn write_back(
    obj: &mut FileDicomObject<InMemDicomObject>,
    data: Vec<u8>,
    layout: &Layout,
    from: &str,
) {
    put_native(obj, data, layout, from);
    obj.put(DataElement::new(
        Tag(0x0028, 0x0301),
        VR::CS,
        PrimitiveValue::from("NO"),
    ));
}

/// Make an instance Explicit VR Little Endian for a peer that accepts nothing else:
/// encapsulated (compressed) pixel data is decoded to native samples, with the photometric
/// interpretation, planar configuration and lossy-compression history made to agree; native
/// data only changes its encoding. Nothing else in the data set changes.
pub fn to_explicit_le(
    obj: &mut FileDicomObject<InMemDicomObject>,
    limit: u64,
) -> Result<(), DecodeError> {
    let encapsulated = obj
        .element(Tag(0x7FE0, 0x0010))
        .is_ok_and(|e| matches!(e.value(), dicom_core::DicomValue::PixelSequence(_)));
    if encapsulated {
        let from = obj
            .meta()
            .transfer_syntax()
            .trim_end_matches('\0')
            .to_string();
        let decoded = decode(obj, limit)?;
        put_native(obj, decoded.data, &decoded.layout, &from);
    }
    obj.meta_mut().set_transfer_syntax(
        &dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN.erased(),
    );
    Ok(())
}

/// Native pixels in place of what was there, the attributes made to agree, and the transfer
/// syntax Explicit VR Little Endian.
fn put_native(
    obj: &mut FileDicomObject<InMemDicomObject>,
    mut data: Vec<u8>,
    layout: &Layout,
    from: &str,
) {
    if data.len() % 2 == 1 {
        data.push(0);
    }
    let vr = if layout.bits_allocated > 8 {
        VR::OW
    } else {
        VR::OB
    };
    obj.put(DataElement::new(
        Tag(0x7FE0, 0x0010),
        vr,
        PrimitiveValue::from(data),
    ));
    let pi = match layout.photometric {
        Photometric::Monochrome1 => "MONOCHROME1",
        Photometric::Monochrome2 => "MONOCHROME2",
        Photometric::Rgb => "RGB",
        Photometric::YbrFull => "YBR_FULL",
        Photometric::YbrFull422 => "YBR_FULL_422",
        Photometric::PaletteColor => "PALETTE COLOR",
    };
    obj.put(DataElement::new(
        Tag(0x0028, 0x0004),
        VR::CS,
        PrimitiveValue::from(pi),
    ));
    if layout.samples_per_pixel > 1 {
        obj.put(DataElement::new(
            Tag(0x0028, 0x0006),
            VR::US,
            PrimitiveValue::from(layout.planar),
        ));
    }
    if LOSSY.contains(&from) {
        obj.put(DataElement::new(
            Tag(0x0028, 0x2110),
            VR::CS,
            PrimitiveValue::from("01"),
        ));
        // The method goes with it (Type 1C in the enhanced IODs); the encoder's own value,
        // when there is one, is kept.
        let method = match from {
            "1.2.840.10008.1.2.4.50" | "1.2.840.10008.1.2.4.51" => Some("ISO_10918_1"),
            "1.2.840.10008.1.2.4.81" => Some("ISO_14495_1"),
            "1.2.840.10008.1.2.4.91" => Some("ISO_15444_1"),
            "1.2.840.10008.1.2.4.203" => Some("ISO_15444_15"),
            _ => None,
        };
        if let (Some(m), Err(_)) = (method, obj.element(Tag(0x0028, 0x2114))) {
            obj.put(DataElement::new(
                Tag(0x0028, 0x2114),
                VR::CS,
                PrimitiveValue::from(m),
            ));
        }
    }
    // An Extended Offset Table describes fragments; native pixel data has none.
    obj.remove_element(Tag(0x7FE0, 0x0001));
    obj.remove_element(Tag(0x7FE0, 0x0002));
    obj.meta_mut().set_transfer_syntax(
        &dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN.erased(),
    );
}

impl OcrStage {
    /// The stage's OCR part from its settings; `None` when switched off.
    pub fn from_config(c: &OcrConfig) -> Result<Option<OcrStage>, String> {
        if !c.enabled {
            return Ok(None);
        }
        if c.languages.is_empty()
            || !c.languages.split('+').all(|l| {
                !l.is_empty() && l.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
            })
        {
            return Err(format!(
                "pixel.ocr.languages: `{}` is not a list like eng+nor",
                c.languages
            ));
        }
        if c.min_confidence > 100 {
            return Err("pixel.ocr.min_confidence: 0 to 100".into());
        }
        if !(1..=5).contains(&c.max_rounds) {
            return Err("pixel.ocr.max_rounds: 1 to 5".into());
        }
        if c.margin > 64 {
            return Err("pixel.ocr.margin: at most 64 pixels".into());
        }
        let mut select = OcrSelect::usual();
        select.all_images = c.all_images;
        select.burned_in_annotation = c.burned_in_annotation;
        if let Some(m) = &c.modalities {
            select.modalities = m.clone();
        }
        if let Some(c) = &c.sop_classes {
            if let Some(bad) = c.iter().find(|u| !crate::part10::is_valid_uid(u)) {
                return Err(format!("pixel.ocr.sop_classes: `{bad}` is not a UID"));
            }
            select.sop_classes = c.clone();
        }
        if let Some(d) = &c.series_descriptions {
            select.series_descriptions = d
                .iter()
                .map(|p| {
                    regex::Regex::new(p)
                        .map_err(|e| format!("pixel.ocr.series_descriptions: `{p}`: {e}"))
                })
                .collect::<Result<_, _>>()?;
        }
        Ok(Some(OcrStage {
            settings: OcrSettings::from(c),
            select,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIB: &str = r#"
format = 1
library_version = "test"
[[signature]]
name = "vendor screen"
regions = [[1, 1, 2, 2]]
when = { all = [ { attr = "Manufacturer", contains = "acme" }, { attr = "Modality", equals = "US" } ] }
"#;

    fn image(
        pi: &str,
        spp: u16,
        bits: u16,
        signed: bool,
        frames: u32,
    ) -> FileDicomObject<InMemDicomObject> {
        let (rows, cols) = (4u16, 5u16);
        let n = usize::from(rows)
            * usize::from(cols)
            * usize::from(spp)
            * usize::from(bits / 8)
            * frames as usize;
        let mut obj = crate::pixel::test_image::Image {
            ts: "1.2.840.10008.1.2",
            sop_class: "1.2.840.10008.5.1.4.1.1.6.1",
            photometric: pi,
            rows,
            columns: cols,
            samples_per_pixel: spp,
            bits,
            signed,
            frames,
            pixels: (0..n).map(|i| (i % 100 + 50) as u8).collect(),
        }
        .build();
        let text = |g, e, vr, v: &str| DataElement::new(Tag(g, e), vr, PrimitiveValue::from(v));
        obj.put(text(0x0008, 0x0060, VR::CS, "US"));
        obj.put(text(0x0008, 0x0070, VR::LO, "ACME Imaging"));
        obj.put(text(0x0028, 0x0301, VR::CS, "YES"));
        obj
    }

    fn pixels(obj: &FileDicomObject<InMemDicomObject>) -> Vec<u8> {
        obj.element(Tag(0x7FE0, 0x0010))
            .unwrap()
            .to_bytes()
            .unwrap()
            .to_vec()
    }

    #[test]
    fn matching_header_gets_its_rectangle_in_every_frame_and_nothing_else_changes() {
        let lib = Library::parse(LIB).unwrap();
        for (pi, spp, bits, signed, black) in [
            ("MONOCHROME2", 1u16, 8u16, false, vec![0u8]),
            ("MONOCHROME1", 1, 16, false, vec![0xFF, 0xFF]),
            ("MONOCHROME2", 1, 16, true, vec![0x00, 0x80]),
            ("RGB", 3, 8, false, vec![0, 0, 0]),
        ] {
            let mut obj = image(pi, spp, bits, signed, 3);
            let before = pixels(&obj);
            let s = scrub_known_regions(&mut obj, &lib, 1 << 20)
                .unwrap()
                .unwrap();
            assert_eq!(s.frames, 3);
            assert_eq!(s.pixels_masked, 3 * 4, "{pi}");
            let after = pixels(&obj);
            let px = black.len();
            for f in 0..3usize {
                for y in 0..4usize {
                    for x in 0..5usize {
                        let at = ((f * 4 + y) * 5 + x) * px;
                        let inside = (1..3).contains(&x) && (1..3).contains(&y);
                        if inside {
                            assert_eq!(&after[at..at + px], &black[..], "{pi} frame {f} ({x},{y})");
                        } else {
                            assert_eq!(
                                &after[at..at + px],
                                &before[at..at + px],
                                "{pi} changed outside"
                            );
                        }
                    }
                }
            }
            assert_eq!(
                obj.meta().transfer_syntax().trim_end_matches('\0'),
                EXPLICIT_VR_LE
            );
            assert_eq!(
                obj.element(Tag(0x0028, 0x0301)).unwrap().to_str().unwrap(),
                "NO"
            );
            assert_eq!(
                obj.element(Tag(0x0028, 0x0004))
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .trim(),
                pi
            );
        }
    }

    #[test]
    fn a_header_that_matches_nothing_is_left_untouched() {
        let lib = Library::parse(LIB).unwrap();
        let mut obj = image("MONOCHROME2", 1, 8, false, 1);
        obj.put(DataElement::new(
            Tag(0x0008, 0x0060),
            VR::CS,
            PrimitiveValue::from("CT"),
        ));
        let before = pixels(&obj);
        assert_eq!(scrub_known_regions(&mut obj, &lib, 1 << 20).unwrap(), None);
        assert_eq!(pixels(&obj), before);
        assert_eq!(
            obj.element(Tag(0x0028, 0x0301)).unwrap().to_str().unwrap(),
            "YES"
        );
    }

    #[test]
    fn an_image_that_cannot_be_decoded_is_an_error() {
        let lib = Library::parse(LIB).unwrap();
        let mut obj = image("MONOCHROME2", 1, 8, false, 2);
        obj.put(DataElement::new(
            Tag(0x7FE0, 0x0010),
            VR::OB,
            PrimitiveValue::from(vec![0u8; 6]),
        ));
        assert!(matches!(
            scrub_known_regions(&mut obj, &lib, 1 << 20),
            Err(ScrubError::Decode(DecodeError::Size { .. }))
        ));
    }

    #[test]
    fn the_project_decides_what_is_dropped_excluded_or_scrubbed() {
        let obj = image("MONOCHROME2", 1, 8, false, 1);
        let mut stage = Stage::default_stage();
        stage.library = Library::parse(LIB).unwrap();
        stage.ocr = None;
        assert_eq!(stage.decide(&obj), Decision::Scrub);
        let mut excluded = obj.clone();
        excluded.put(DataElement::new(
            Tag(0x0008, 0x103E),
            VR::LO,
            PrimitiveValue::from("Cardiac loop"),
        ));
        stage.exclude_series = vec![regex::Regex::new("(?i)cardiac").unwrap()];
        // (The test image says YES, which wins over an exclusion; here it says NO.)
        excluded.put(DataElement::new(
            Tag(0x0028, 0x0301),
            VR::CS,
            PrimitiveValue::from("NO"),
        ));
        assert_eq!(stage.decide(&excluded), Decision::Keep);
        stage.known_regions = false;
        assert_eq!(stage.decide(&obj), Decision::Keep);
        let mut sc = obj.clone();
        sc.put(DataElement::new(
            Tag(0x0008, 0x0016),
            VR::UI,
            PrimitiveValue::from("1.2.840.10008.5.1.4.1.1.7"),
        ));
        stage.drop_secondary_capture = true;
        assert!(matches!(stage.decide(&sc), Decision::Drop(_)));
        assert_eq!(stage.decide(&obj), Decision::Keep);
    }

    #[test]
    fn ocr_reads_what_usually_carries_text_and_can_be_widened() {
        let usual = OcrSelect::usual();
        let set = |obj: &mut FileDicomObject<InMemDicomObject>, g, e, vr, v: &str| {
            obj.put(DataElement::new(Tag(g, e), vr, PrimitiveValue::from(v)))
        };
        // A CT slice with nothing that suggests text.
        let mut ct = image("MONOCHROME2", 1, 16, true, 1);
        set(&mut ct, 0x0008, 0x0060, VR::CS, "CT");
        set(&mut ct, 0x0008, 0x0016, VR::UI, "1.2.840.10008.5.1.4.1.1.2");
        set(&mut ct, 0x0028, 0x0301, VR::CS, "NO");
        set(&mut ct, 0x0008, 0x103E, VR::LO, "Abdomen 3.0 B30f");
        assert!(!usual.selects(&ct));
        // Each usual reason on its own.
        let mut yes = ct.clone();
        set(&mut yes, 0x0028, 0x0301, VR::CS, "YES");
        let mut dose = ct.clone();
        set(&mut dose, 0x0008, 0x103E, VR::LO, "Dose Report");
        let mut us = ct.clone();
        set(&mut us, 0x0008, 0x0060, VR::CS, "US");
        let mut sc = ct.clone();
        set(&mut sc, 0x0008, 0x0016, VR::UI, "1.2.840.10008.5.1.4.1.1.7");
        let mut cr = ct.clone();
        set(&mut cr, 0x0008, 0x0060, VR::CS, "CR");
        let mut mg = ct.clone();
        set(&mut mg, 0x0008, 0x0060, VR::CS, "MG");
        // A CT reformat (derived) or a secondary CT image; an original axial slice is not.
        let mut derived = ct.clone();
        set(
            &mut derived,
            0x0008,
            0x0008,
            VR::CS,
            "DERIVED\\PRIMARY\\MPR",
        );
        let mut secondary = ct.clone();
        set(
            &mut secondary,
            0x0008,
            0x0008,
            VR::CS,
            "ORIGINAL\\SECONDARY",
        );
        for o in [&yes, &dose, &us, &sc, &cr, &mg, &derived, &secondary] {
            assert!(usual.selects(o));
        }
        let mut original = ct.clone();
        set(
            &mut original,
            0x0008,
            0x0008,
            VR::CS,
            "ORIGINAL\\PRIMARY\\AXIAL",
        );
        assert!(!usual.selects(&original));
        let mut no_flag = usual.clone();
        no_flag.burned_in_annotation = false;
        assert!(!no_flag.selects(&yes));
        let mut all = usual.clone();
        all.all_images = true;
        assert!(all.selects(&ct));
        // A project's own modality list replaces the usual one.
        let cfg = OcrConfig {
            modalities: Some(vec!["CT".into()]),
            ..Default::default()
        };
        let mine = OcrStage::from_config(&cfg).unwrap().unwrap().select;
        assert!(mine.selects(&ct));
        assert!(!mine.selects(&us));
        let off = OcrConfig {
            enabled: false,
            ..Default::default()
        };
        assert!(OcrStage::from_config(&off).unwrap().is_none());
        for bad in [
            OcrConfig {
                languages: "eng; rm".into(),
                ..Default::default()
            },
            OcrConfig {
                max_rounds: 0,
                ..Default::default()
            },
            OcrConfig {
                series_descriptions: Some(vec!["(".into()]),
                ..Default::default()
            },
        ] {
            assert!(OcrStage::from_config(&bad).is_err());
        }
    }

    /// A reader that "reads" every non-zero byte as a one-pixel word of a 1-row frame.
    fn fake_read(f: &[u8]) -> Result<Vec<Rect>, ScrubError> {
        Ok(f.iter()
            .enumerate()
            .filter(|(_, v)| **v != 0)
            .map(|(i, _)| Rect {
                x: i as u32,
                y: 0,
                width: 1,
                height: 1,
            })
            .collect())
    }

    #[test]
    fn the_check_after_masking_reads_again_masks_again_and_then_gives_up() {
        // Each blanking of a pixel reveals text at the next one (a mask that "misses"):
        // round after round something is read again.
        let mut leaky = |f: &mut [u8], rects: &[Rect]| -> Result<u64, ScrubError> {
            for r in rects {
                let x = r.x as usize;
                f[x] = 0;
                if x + 1 < f.len() {
                    f[x + 1] = 1;
                }
            }
            Ok(rects.len() as u64)
        };
        let mut frame = vec![1u8, 0, 0, 0, 0, 0];
        let r = read_and_mask(&mut frame, 4, 3, None, false, &mut fake_read, &mut leaky);
        assert_eq!(
            r.map(|_| ()),
            Err(ScrubError::TextRemains {
                frame: 4,
                rounds: 3
            })
        );
        // Text the second reading finds is blanked in a second round.
        let mut once = 0;
        let mut second = |f: &mut [u8], rects: &[Rect]| -> Result<u64, ScrubError> {
            for r in rects {
                f[r.x as usize] = 0;
            }
            once += 1;
            if once == 1 {
                f[5] = 9;
            }
            Ok(rects.len() as u64)
        };
        let mut frame = vec![1u8, 1, 0, 0, 0, 0];
        let r = read_and_mask(&mut frame, 0, 3, None, false, &mut fake_read, &mut second).unwrap();
        assert_eq!((r.rounds, r.words, r.masked), (2, 3, 3));
        assert!(frame.iter().all(|&v| v == 0));
        // Nothing read: no round, nothing masked, the frame untouched.
        let mut frame = vec![0u8; 6];
        let mut never =
            |_: &mut [u8], _: &[Rect]| -> Result<u64, ScrubError> { panic!("nothing to mask") };
        let r = read_and_mask(&mut frame, 0, 3, None, false, &mut fake_read, &mut never).unwrap();
        assert_eq!((r.rounds, r.words, r.masked), (0, 0, 0));
    }

    /// The detector's reading found nothing: the independent check (Tesseract) still reads
    /// the frame, and what it finds is blanked. Without an independent first reading, an
    /// empty one ends the rounds.
    #[test]
    fn the_independent_check_reads_even_when_the_detector_found_nothing() {
        let mut zero = |f: &mut [u8], rects: &[Rect]| -> Result<u64, ScrubError> {
            for r in rects {
                f[r.x as usize] = 0;
            }
            Ok(rects.len() as u64)
        };
        let mut frame = vec![0u8, 0, 1, 0];
        let r = read_and_mask(
            &mut frame,
            0,
            3,
            Some(vec![]),
            true,
            &mut fake_read,
            &mut zero,
        )
        .unwrap();
        assert_eq!((r.rounds, r.words, r.masked), (1, 1, 1));
        assert!(frame.iter().all(|&v| v == 0));
        let mut frame = vec![0u8, 0, 1, 0];
        let r = read_and_mask(
            &mut frame,
            0,
            3,
            Some(vec![]),
            false,
            &mut fake_read,
            &mut zero,
        )
        .unwrap();
        assert_eq!((r.rounds, r.masked), (0, 0));
        assert_eq!(frame[2], 1);
    }

    #[test]
    fn burned_in_annotation_yes_wins_over_a_series_exclusion() {
        let mut obj = image("MONOCHROME2", 1, 8, false, 1);
        obj.put(DataElement::new(
            Tag(0x0008, 0x103E),
            VR::LO,
            PrimitiveValue::from("Loop 1"),
        ));
        let mut stage = Stage::default_stage();
        stage.exclude_series = vec![regex::Regex::new("(?i)loop").unwrap()];
        assert_eq!(stage.decide(&obj), Decision::Scrub);
        obj.put(DataElement::new(
            Tag(0x0028, 0x0301),
            VR::CS,
            PrimitiveValue::from("NO"),
        ));
        assert_eq!(stage.decide(&obj), Decision::Keep);
    }

    #[test]
    fn header_values_come_from_any_depth_when_asked() {
        let mut obj = image("MONOCHROME2", 1, 8, false, 1);
        let mut item = InMemDicomObject::new_empty();
        item.put(DataElement::new(
            Tag(0x0008, 0x0104),
            VR::LO,
            PrimitiveValue::from("IEC Body Dosimetry Phantom"),
        ));
        obj.put(DataElement::new(
            Tag(0x0040, 0x0260),
            VR::SQ,
            dicom_core::value::DataSetSequence::from(vec![item]),
        ));
        let h = ObjectHeader::new(&obj);
        let cm = Attr::parse("CodeMeaning").unwrap();
        assert_eq!(h.value(&cm), None);
        assert_eq!(
            h.values_anywhere(&cm),
            vec!["IEC Body Dosimetry Phantom".to_string()]
        );
        assert_eq!(
            h.value(&Attr::parse("Manufacturer").unwrap()).as_deref(),
            Some("ACME Imaging")
        );
    }
}
