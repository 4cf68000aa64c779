//! Synthetic DICOM Part-10 test corpus.
//!
//! Everything produced here is made up: patients are named like
//! `Testperson^Anna`, identifiers start with `FIONATEST`, and all UIDs live
//! under the fictitious root [`UID_ROOT`]. Nothing is derived from real data.
//!
//! * [`write_study`] writes a small study (uncompressed, explicit VR little
//!   endian) with one file per instance, using `dicom-object`.
//! * [`transcode`] turns such a file into another transfer syntax with the
//!   DCMTK command line tools (`dcmconv`, `dcmcjpeg`, `dcmcjpls`, `dcmcrle`).
//! * [`write_large_multiframe`] streams a big multi-frame instance to disk
//!   without holding the pixel data in memory.
//! * [`dataset_bytes`] / [`sop_instance_uid`] read files back with a small
//!   hand-written file-meta parser, so that what was sent can be compared byte
//!   for byte with what a node stored.
//! * [`storescu_args_for`] tells which DCMTK `storescu` flags keep a file's
//!   transfer syntax on the wire.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::meta::FileMetaTableBuilder;
use dicom_object::InMemDicomObject;

/// Made-up UID root for all synthetic UIDs (valid UID syntax, not registered).
pub const UID_ROOT: &str = "2.25.3141592653589793";

/// Implementation Class UID written into the file meta of generated files.
pub const IMPLEMENTATION_CLASS_UID: &str = "2.25.3141592653589793.999";
/// Implementation Version Name written into the file meta of generated files.
pub const IMPLEMENTATION_VERSION_NAME: &str = "FIONA_CORPUS";

/// Implicit VR Little Endian.
pub const TS_IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";
/// Explicit VR Little Endian (what [`write_study`] produces).
pub const TS_EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";
/// Deflated Explicit VR Little Endian.
pub const TS_DEFLATED_EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1.99";
/// Explicit VR Big Endian (retired, still supported by DCMTK).
pub const TS_EXPLICIT_VR_BE: &str = "1.2.840.10008.1.2.2";
/// JPEG Baseline (Process 1), lossy 8-bit.
pub const TS_JPEG_BASELINE: &str = "1.2.840.10008.1.2.4.50";
/// JPEG Lossless, Non-Hierarchical, First-Order Prediction (Process 14, SV1).
pub const TS_JPEG_LOSSLESS_SV1: &str = "1.2.840.10008.1.2.4.70";
/// JPEG-LS Lossless.
pub const TS_JPEG_LS_LOSSLESS: &str = "1.2.840.10008.1.2.4.80";
/// RLE Lossless.
pub const TS_RLE_LOSSLESS: &str = "1.2.840.10008.1.2.5";

/// Secondary Capture multi-frame grayscale word SOP class (used by
/// [`write_large_multiframe`]).
pub const SOP_CLASS_MF_GRAYSCALE_WORD_SC: &str = "1.2.840.10008.5.1.4.1.1.7.3";

/// Image modality / storage SOP class of a synthetic study.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Modality {
    /// CT Image Storage, 16-bit allocated / 12-bit stored, unsigned, rescale -1024.
    Ct,
    /// MR Image Storage, 16-bit allocated / 12-bit stored, unsigned.
    Mr,
    /// Ultrasound Image Storage, RGB 8-bit, interleaved.
    Us,
    /// Secondary Capture Image Storage, MONOCHROME2 8-bit.
    Sc,
}

impl Modality {
    /// All modalities, handy for loops in tests.
    pub const ALL: [Modality; 4] = [Modality::Ct, Modality::Mr, Modality::Us, Modality::Sc];

    /// The storage SOP class UID.
    pub fn sop_class_uid(self) -> &'static str {
        match self {
            Modality::Ct => "1.2.840.10008.5.1.4.1.1.2",
            Modality::Mr => "1.2.840.10008.5.1.4.1.1.4",
            Modality::Us => "1.2.840.10008.5.1.4.1.1.6.1",
            Modality::Sc => "1.2.840.10008.5.1.4.1.1.7",
        }
    }

    /// Value of the Modality (0008,0060) attribute.
    pub fn code(self) -> &'static str {
        match self {
            Modality::Ct => "CT",
            Modality::Mr => "MR",
            Modality::Us => "US",
            Modality::Sc => "OT",
        }
    }

    /// Bits allocated per sample (16 for CT/MR, 8 for US/SC).
    pub fn bits_allocated(self) -> u16 {
        match self {
            Modality::Ct | Modality::Mr => 16,
            Modality::Us | Modality::Sc => 8,
        }
    }

    /// Bits stored per sample (12 for CT/MR, 8 for US/SC).
    pub fn bits_stored(self) -> u16 {
        match self {
            Modality::Ct | Modality::Mr => 12,
            Modality::Us | Modality::Sc => 8,
        }
    }

    /// Samples per pixel (3 for US RGB, otherwise 1).
    pub fn samples_per_pixel(self) -> u16 {
        match self {
            Modality::Us => 3,
            _ => 1,
        }
    }

    /// Photometric Interpretation.
    pub fn photometric(self) -> &'static str {
        match self {
            Modality::Us => "RGB",
            _ => "MONOCHROME2",
        }
    }

    /// Size in bytes of the (uncompressed) Pixel Data value of one frame,
    /// before padding to even length.
    pub fn frame_bytes(self, rows: u16, cols: u16) -> usize {
        rows as usize
            * cols as usize
            * self.samples_per_pixel() as usize
            * (self.bits_allocated() as usize / 8)
    }

    fn index(self) -> u32 {
        match self {
            Modality::Ct => 1,
            Modality::Mr => 2,
            Modality::Us => 3,
            Modality::Sc => 4,
        }
    }

    fn default_size(self) -> (u16, u16) {
        match self {
            Modality::Ct => (128, 128),
            Modality::Mr => (96, 112),
            Modality::Us => (120, 160),
            Modality::Sc => (100, 150),
        }
    }
}

/// Description of a synthetic study; see [`StudySpec::new`] for defaults.
///
/// All fields are public so tests can tweak them (e.g. a non-Latin-1
/// `patient_name` to exercise ISO_IR 192, or a bigger `rows`/`cols`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StudySpec {
    pub patient_name: String,
    pub patient_id: String,
    pub accession: String,
    /// Study Instance UID; series and SOP instance UIDs are derived from it
    /// (`<study_uid>.<series>` and `<study_uid>.<series>.<instance>`), so keep
    /// it at most 42 characters long.
    pub study_uid: String,
    pub modality: Modality,
    pub series: u32,
    pub instances_per_series: u32,
    pub rows: u16,
    pub cols: u16,
}

const GIVEN_NAMES: [&str; 12] = [
    "Anna", "Bernd", "Clara", "Dieter", "Emma", "Felix", "Greta", "Jürgen", "Ida", "Lukas", "Zoë",
    "Max",
];
const FAMILY_NAMES: [&str; 4] = ["Testperson", "Musterfrau", "Beispiel", "Probandin"];

impl StudySpec {
    /// Deterministic synthetic study number `n`: the same `(n, modality)`
    /// always yields the same names, IDs and UIDs; different `n` or modality
    /// yield different study UIDs. Defaults: 2 series x 3 instances, a small
    /// modality-dependent matrix (e.g. 128x128 for CT).
    ///
    /// Some names contain Latin-1 characters (e.g. `Testperson^Jürgen`), so
    /// files are written with Specific Character Set `ISO_IR 100`.
    pub fn new(n: u32, modality: Modality) -> Self {
        let given = GIVEN_NAMES[(n as usize) % GIVEN_NAMES.len()];
        let family = FAMILY_NAMES[(n as usize / GIVEN_NAMES.len()) % FAMILY_NAMES.len()];
        let (rows, cols) = modality.default_size();
        StudySpec {
            patient_name: format!("{family}^{given}"),
            patient_id: format!("FIONATEST{n:06}"),
            accession: format!("ACC{}{n:07}", modality.code()),
            study_uid: format!("{UID_ROOT}.{}.{n}", modality.index()),
            modality,
            series: 2,
            instances_per_series: 3,
            rows,
            cols,
        }
    }

    /// Total number of instances ([`series`](Self::series) x
    /// [`instances_per_series`](Self::instances_per_series)).
    pub fn instance_count(&self) -> u32 {
        self.series * self.instances_per_series
    }

    /// Series Instance UID of series `s` (1-based).
    pub fn series_uid(&self, s: u32) -> String {
        format!("{}.{s}", self.study_uid)
    }

    /// SOP Instance UID of instance `i` (1-based) in series `s` (1-based).
    pub fn sop_instance_uid(&self, s: u32, i: u32) -> String {
        format!("{}.{s}.{i}", self.study_uid)
    }

    /// Specific Character Set used for this study's text attributes.
    pub fn specific_character_set(&self) -> &'static str {
        let texts = [&self.patient_name, &self.patient_id, &self.accession];
        if texts.iter().all(|t| t.chars().all(|c| (c as u32) <= 0xFF)) {
            "ISO_IR 100"
        } else {
            "ISO_IR 192"
        }
    }

    fn seed(&self) -> u64 {
        // FNV-1a over the study UID: deterministic, differs per study.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in self.study_uid.bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h
    }

    /// Study date `YYYYMMDD` and time `HHMMSS` derived from the study UID.
    fn date_time(&self) -> (String, String) {
        let s = self.seed();
        let year = 2015 + (s % 10);
        let month = 1 + (s >> 8) % 12;
        let day = 1 + (s >> 16) % 28;
        let hour = 7 + (s >> 24) % 12;
        let minute = (s >> 32) % 60;
        let second = (s >> 40) % 60;
        (
            format!("{year:04}{month:02}{day:02}"),
            format!("{hour:02}{minute:02}{second:02}"),
        )
    }

    fn birth_date(&self) -> String {
        let s = self.seed() >> 13;
        format!(
            "{:04}{:02}{:02}",
            1940 + s % 60,
            1 + (s >> 8) % 12,
            1 + (s >> 16) % 28
        )
    }
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg.into())
}

fn invalid_data(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn other(msg: impl Into<String>) -> io::Error {
    io::Error::other(msg.into())
}

/// Checks UID syntax: digits and dots, no empty components, no leading zeros,
/// at most 64 characters.
pub fn is_valid_uid(uid: &str) -> bool {
    !uid.is_empty()
        && uid.len() <= 64
        && uid.split('.').all(|c| {
            !c.is_empty()
                && c.bytes().all(|b| b.is_ascii_digit())
                && (c == "0" || !c.starts_with('0'))
        })
}

fn check_uid(uid: &str) -> io::Result<()> {
    if is_valid_uid(uid) {
        Ok(())
    } else {
        Err(invalid(format!("invalid DICOM UID {uid:?}")))
    }
}

/// Small deterministic PRNG (xorshift64*), so the corpus is reproducible
/// without extra dependencies.
/// A small deterministic PRNG (xorshift*), so generated data is the same for the same seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng((seed ^ 0x9E37_79B9_7F4A_7C15) | 1)
    }
    /// A number below `n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// Deterministic synthetic "phantom" intensity in `0..=255` (8-bit scale) for
/// pixel (x, y), or `None` for the constant background outside the "body"
/// ellipse (like air around a patient). Inside: smooth structures (rings, a
/// disc, a gradient) whose position depends on `seed`, plus a little noise,
/// so that lossless compression is meaningful (also for RLE) but every
/// instance differs.
fn phantom(x: u32, y: u32, w: u32, h: u32, seed: u64, rng: &mut Rng) -> Option<u32> {
    let (wi, hi) = (w.max(1) as i64, h.max(1) as i64);
    let cx = wi / 2 + (seed % 9) as i64 - 4;
    let cy = hi / 2 + ((seed >> 5) % 9) as i64 - 4;
    let dx = x as i64 - cx;
    let dy = y as i64 - cy;
    // Ellipse with semi-axes 0.42 w and 0.40 h, in integer arithmetic:
    // (dx / (0.42 w))^2 + (dy / (0.40 h))^2 <= 1.
    let (a, b) = (wi * 42, hi * 40);
    if (dx * 100 * b).pow(2) + (dy * 100 * a).pow(2) > (a * b).pow(2) {
        return None;
    }
    let r2 = (dx * dx + dy * dy) as u64;
    let ring_scale = 6 + (seed >> 10) % 7;
    let rings = ((r2 / ring_scale) % 64) as u32; // 0..63
    let radius = (w.min(h) / 6) as u64;
    let disc = if r2 < radius * radius { 90 } else { 0 };
    let grad = (x * 60 / w.max(1)) + (y * 40 / h.max(1)); // 0..100
    let noise = (rng.next() >> 62) as u32; // 0..3
    Some((1 + rings + disc + grad + noise).min(255))
}

/// Generates the pixel data of one frame for `modality` into `out`
/// (little-endian for 16-bit samples; interleaved RGB for US). The length is
/// padded to even.
fn fill_frame(modality: Modality, rows: u16, cols: u16, seed: u64, out: &mut Vec<u8>) {
    out.clear();
    let (w, h) = (cols as u32, rows as u32);
    let mut rng = Rng::new(seed);
    for y in 0..h {
        for x in 0..w {
            let v = phantom(x, y, w, h, seed, &mut rng);
            match modality {
                Modality::Ct | Modality::Mr => {
                    // Scale to 12 bits, keep the low bits alive.
                    let v12 = v.map_or(0, |v| ((v << 4) | (v >> 4)) & 0x0FFF) as u16;
                    out.extend_from_slice(&v12.to_le_bytes());
                }
                Modality::Sc => out.push(v.unwrap_or(0) as u8),
                Modality::Us => {
                    let rgb = match v {
                        None => [0, 0, 0],
                        Some(v) => {
                            let g = (v * 3 / 4 + (x ^ y) % 32).min(255);
                            [v as u8, g as u8, (255 - v) as u8]
                        }
                    };
                    out.extend_from_slice(&rgb);
                }
            }
        }
    }
    if out.len() % 2 == 1 {
        out.push(0);
    }
}

fn put_str(obj: &mut InMemDicomObject, tag: Tag, vr: VR, value: impl Into<String>) {
    obj.put(DataElement::new(
        tag,
        vr,
        PrimitiveValue::from(value.into()),
    ));
}

fn put_u16(obj: &mut InMemDicomObject, tag: Tag, value: u16) {
    obj.put(DataElement::new(tag, VR::US, PrimitiveValue::from(value)));
}

/// Attributes shared by all instances of a study (patient, study, equipment).
fn common_attributes(obj: &mut InMemDicomObject, spec: &StudySpec, sop_class: &str) {
    let (date, time) = spec.date_time();
    put_str(
        obj,
        tags::SPECIFIC_CHARACTER_SET,
        VR::CS,
        spec.specific_character_set(),
    );
    put_str(obj, tags::SOP_CLASS_UID, VR::UI, sop_class);
    put_str(obj, tags::STUDY_DATE, VR::DA, date.clone());
    put_str(obj, tags::SERIES_DATE, VR::DA, date.clone());
    put_str(obj, tags::CONTENT_DATE, VR::DA, date);
    put_str(obj, tags::STUDY_TIME, VR::TM, time.clone());
    put_str(obj, tags::SERIES_TIME, VR::TM, time.clone());
    put_str(obj, tags::CONTENT_TIME, VR::TM, time);
    put_str(obj, tags::ACCESSION_NUMBER, VR::SH, spec.accession.clone());
    put_str(obj, tags::MANUFACTURER, VR::LO, "FIONA SYNTHETIC");
    put_str(
        obj,
        tags::INSTITUTION_NAME,
        VR::LO,
        "Synthetic Test Institute",
    );
    put_str(obj, tags::REFERRING_PHYSICIAN_NAME, VR::PN, "Doktor^Test");
    put_str(
        obj,
        tags::STUDY_DESCRIPTION,
        VR::LO,
        format!("Synthetic {} study", spec.modality.code()),
    );
    put_str(obj, tags::PATIENT_NAME, VR::PN, spec.patient_name.clone());
    put_str(obj, tags::PATIENT_ID, VR::LO, spec.patient_id.clone());
    put_str(obj, tags::PATIENT_BIRTH_DATE, VR::DA, spec.birth_date());
    put_str(
        obj,
        tags::PATIENT_SEX,
        VR::CS,
        if spec.seed() & 1 == 0 { "F" } else { "M" },
    );
    put_str(
        obj,
        tags::STUDY_INSTANCE_UID,
        VR::UI,
        spec.study_uid.clone(),
    );
    put_str(obj, tags::STUDY_ID, VR::SH, "1");
}

/// Image Pixel module attributes except Pixel Data.
fn pixel_module(obj: &mut InMemDicomObject, modality: Modality, rows: u16, cols: u16) {
    let bits_stored = modality.bits_stored();
    put_u16(obj, tags::SAMPLES_PER_PIXEL, modality.samples_per_pixel());
    put_str(
        obj,
        tags::PHOTOMETRIC_INTERPRETATION,
        VR::CS,
        modality.photometric(),
    );
    if modality.samples_per_pixel() > 1 {
        put_u16(obj, tags::PLANAR_CONFIGURATION, 0);
    }
    put_u16(obj, tags::ROWS, rows);
    put_u16(obj, tags::COLUMNS, cols);
    put_u16(obj, tags::BITS_ALLOCATED, modality.bits_allocated());
    put_u16(obj, tags::BITS_STORED, bits_stored);
    put_u16(obj, tags::HIGH_BIT, bits_stored - 1);
    put_u16(obj, tags::PIXEL_REPRESENTATION, 0);
}

fn instance_object(spec: &StudySpec, s: u32, i: u32) -> io::Result<InMemDicomObject> {
    let m = spec.modality;
    let sop_uid = spec.sop_instance_uid(s, i);
    let series_uid = spec.series_uid(s);
    check_uid(&sop_uid)?;
    check_uid(&series_uid)?;

    let mut obj = InMemDicomObject::new_empty();
    common_attributes(&mut obj, spec, m.sop_class_uid());
    put_str(&mut obj, tags::SOP_INSTANCE_UID, VR::UI, sop_uid);
    put_str(&mut obj, tags::MODALITY, VR::CS, m.code());
    put_str(&mut obj, tags::SERIES_INSTANCE_UID, VR::UI, series_uid);
    put_str(&mut obj, tags::SERIES_NUMBER, VR::IS, s.to_string());
    put_str(
        &mut obj,
        tags::SERIES_DESCRIPTION,
        VR::LO,
        format!("Synthetic {} series {s}", m.code()),
    );
    put_str(&mut obj, tags::INSTANCE_NUMBER, VR::IS, i.to_string());
    put_str(&mut obj, tags::PATIENT_ORIENTATION, VR::CS, "");

    match m {
        Modality::Ct | Modality::Mr => {
            let z = format!("{:.1}", i as f64 * 2.5);
            put_str(
                &mut obj,
                tags::IMAGE_TYPE,
                VR::CS,
                "ORIGINAL\\PRIMARY\\AXIAL",
            );
            put_str(&mut obj, tags::SLICE_THICKNESS, VR::DS, "2.5");
            put_str(&mut obj, tags::ACQUISITION_NUMBER, VR::IS, "1");
            put_str(
                &mut obj,
                tags::IMAGE_POSITION_PATIENT,
                VR::DS,
                format!("-100\\-100\\{z}"),
            );
            put_str(
                &mut obj,
                tags::IMAGE_ORIENTATION_PATIENT,
                VR::DS,
                "1\\0\\0\\0\\1\\0",
            );
            put_str(
                &mut obj,
                tags::FRAME_OF_REFERENCE_UID,
                VR::UI,
                format!("{}.{s}.0", spec.study_uid),
            );
            put_str(&mut obj, tags::POSITION_REFERENCE_INDICATOR, VR::LO, "");
            put_str(&mut obj, tags::SLICE_LOCATION, VR::DS, z);
            put_str(&mut obj, tags::PIXEL_SPACING, VR::DS, "0.78125\\0.78125");
            if m == Modality::Ct {
                put_str(&mut obj, tags::KVP, VR::DS, "120");
                put_str(&mut obj, tags::RESCALE_INTERCEPT, VR::DS, "-1024");
                put_str(&mut obj, tags::RESCALE_SLOPE, VR::DS, "1");
                put_str(&mut obj, tags::RESCALE_TYPE, VR::LO, "HU");
                put_str(&mut obj, tags::WINDOW_CENTER, VR::DS, "40");
                put_str(&mut obj, tags::WINDOW_WIDTH, VR::DS, "400");
            } else {
                put_str(&mut obj, tags::SCANNING_SEQUENCE, VR::CS, "SE");
                put_str(&mut obj, tags::SEQUENCE_VARIANT, VR::CS, "NONE");
                put_str(&mut obj, tags::SCAN_OPTIONS, VR::CS, "");
                put_str(&mut obj, tags::MR_ACQUISITION_TYPE, VR::CS, "2D");
                put_str(&mut obj, tags::REPETITION_TIME, VR::DS, "500");
                put_str(&mut obj, tags::ECHO_TIME, VR::DS, "15");
                put_str(&mut obj, tags::ECHO_TRAIN_LENGTH, VR::IS, "1");
                put_str(&mut obj, tags::MAGNETIC_FIELD_STRENGTH, VR::DS, "1.5");
                put_str(&mut obj, tags::WINDOW_CENTER, VR::DS, "1024");
                put_str(&mut obj, tags::WINDOW_WIDTH, VR::DS, "2048");
            }
        }
        Modality::Us => {
            put_str(&mut obj, tags::IMAGE_TYPE, VR::CS, "ORIGINAL\\PRIMARY");
        }
        Modality::Sc => {
            put_str(&mut obj, tags::CONVERSION_TYPE, VR::CS, "WSD");
        }
    }

    pixel_module(&mut obj, m, spec.rows, spec.cols);
    let seed = spec.seed() ^ ((s as u64) << 40) ^ ((i as u64) << 20) ^ i as u64;
    let mut pixels = Vec::with_capacity(m.frame_bytes(spec.rows, spec.cols) + 1);
    fill_frame(m, spec.rows, spec.cols, seed, &mut pixels);
    let value = if m.bits_allocated() == 16 {
        let words: Vec<u16> = pixels
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        DataElement::new(
            tags::PIXEL_DATA,
            VR::OW,
            PrimitiveValue::U16(words.into_iter().collect()),
        )
    } else {
        DataElement::new(tags::PIXEL_DATA, VR::OB, PrimitiveValue::from(pixels))
    };
    obj.put(value);
    Ok(obj)
}

fn meta_builder() -> FileMetaTableBuilder {
    FileMetaTableBuilder::new()
        .transfer_syntax(TS_EXPLICIT_VR_LE)
        .implementation_class_uid(IMPLEMENTATION_CLASS_UID)
        .implementation_version_name(IMPLEMENTATION_VERSION_NAME)
}

/// Writes one Part-10 file per instance of `spec` into `dir` (created if
/// missing) and returns the paths in series/instance order.
///
/// Files are Explicit VR Little Endian, uncompressed, named
/// `<PatientID>_s<series>_i<instance>.dcm`. SOP Instance UIDs are
/// [`StudySpec::sop_instance_uid`], series UIDs [`StudySpec::series_uid`].
pub fn write_study(spec: &StudySpec, dir: &Path) -> io::Result<Vec<PathBuf>> {
    check_uid(&spec.study_uid)?;
    if spec.rows == 0 || spec.cols == 0 {
        return Err(invalid("rows and cols must be non-zero"));
    }
    std::fs::create_dir_all(dir)?;
    let mut paths = Vec::with_capacity(spec.instance_count() as usize);
    for s in 1..=spec.series {
        for i in 1..=spec.instances_per_series {
            let obj = instance_object(spec, s, i)?;
            let file = obj
                .with_meta(meta_builder())
                .map_err(|e| other(format!("building file meta: {e}")))?;
            let path = dir.join(format!("{}_s{s:03}_i{i:04}.dcm", spec.patient_id));
            file.write_to_file(&path)
                .map_err(|e| other(format!("writing {}: {e}", path.display())))?;
            paths.push(path);
        }
    }
    Ok(paths)
}

/// A transfer syntax variant produced by [`transcode`] with DCMTK tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Variant {
    /// `dcmconv +ti`
    ImplicitLe,
    /// `dcmconv +tb`
    ExplicitBe,
    /// `dcmconv +td`
    Deflate,
    /// `dcmcjpeg` (default: lossless process 14, selection value 1)
    JpegLossless,
    /// `dcmcjpeg +eb` (lossy; 8-bit input only here; DCMTK assigns a new SOP
    /// Instance UID and, for RGB, converts to YBR_FULL_422)
    JpegBaseline,
    /// `dcmcjpls` (default: lossless)
    JpegLs,
    /// `dcmcrle`
    Rle,
}

impl Variant {
    /// All variants.
    pub const ALL: [Variant; 7] = [
        Variant::ImplicitLe,
        Variant::ExplicitBe,
        Variant::Deflate,
        Variant::JpegLossless,
        Variant::JpegBaseline,
        Variant::JpegLs,
        Variant::Rle,
    ];

    /// Transfer syntax UID of files produced by this variant.
    pub fn transfer_syntax_uid(self) -> &'static str {
        match self {
            Variant::ImplicitLe => TS_IMPLICIT_VR_LE,
            Variant::ExplicitBe => TS_EXPLICIT_VR_BE,
            Variant::Deflate => TS_DEFLATED_EXPLICIT_VR_LE,
            Variant::JpegLossless => TS_JPEG_LOSSLESS_SV1,
            Variant::JpegBaseline => TS_JPEG_BASELINE,
            Variant::JpegLs => TS_JPEG_LS_LOSSLESS,
            Variant::Rle => TS_RLE_LOSSLESS,
        }
    }

    /// Whether pixel data is encapsulated (compressed) in this variant.
    pub fn is_encapsulated(self) -> bool {
        matches!(
            self,
            Variant::JpegLossless | Variant::JpegBaseline | Variant::JpegLs | Variant::Rle
        )
    }

    /// Whether the variant changes pixel values (and the SOP Instance UID).
    pub fn is_lossy(self) -> bool {
        self == Variant::JpegBaseline
    }

    /// Whether DCMTK can produce this variant from a file with the given
    /// Bits Allocated (JPEG baseline needs 8-bit input).
    pub fn supports_bits_allocated(self, bits_allocated: u16) -> bool {
        self != Variant::JpegBaseline || bits_allocated == 8
    }

    /// DCMTK tool and arguments (before input/output paths).
    pub fn dcmtk_command(self) -> (&'static str, &'static [&'static str]) {
        match self {
            Variant::ImplicitLe => ("dcmconv", &["+ti"]),
            Variant::ExplicitBe => ("dcmconv", &["+tb"]),
            Variant::Deflate => ("dcmconv", &["+td"]),
            Variant::JpegLossless => ("dcmcjpeg", &[]),
            Variant::JpegBaseline => ("dcmcjpeg", &["+eb"]),
            Variant::JpegLs => ("dcmcjpls", &[]),
            Variant::Rle => ("dcmcrle", &[]),
        }
    }
}

/// Runs a DCMTK tool, turning a missing binary or a non-zero exit into an
/// `io::Error` whose message includes the tool's stderr/stdout.
pub fn run_dcmtk(tool: &str, args: &[&std::ffi::OsStr]) -> io::Result<std::process::Output> {
    let out = Command::new(tool).args(args).output().map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("DCMTK tool `{tool}` not found in PATH (install dcmtk): {e}"),
            )
        } else {
            other(format!("failed to run `{tool}`: {e}"))
        }
    })?;
    if !out.status.success() {
        return Err(other(format!(
            "`{tool} {}` failed with {}:\nstderr: {}\nstdout: {}",
            args.iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim(),
        )));
    }
    Ok(out)
}

/// Transcodes `input` into `output` with the DCMTK tool for `v` (see
/// [`Variant::dcmtk_command`]) and checks that the output carries the
/// expected transfer syntax.
///
/// `JpegBaseline` is refused with `InvalidInput` for inputs with Bits
/// Allocated > 8: DCMTK 3.6.7 `dcmcjpeg +eb` does accept 12-bit CT/MR but
/// silently rescales the image to 8 bits (Bits Allocated/Stored 8), which is
/// rarely what a test wants. Lossy output gets a new SOP Instance UID from
/// DCMTK (plus Lossy Image Compression attributes and, for RGB, YBR_FULL_422);
/// use [`sop_instance_uid`] on the output. All other variants keep the SOP
/// Instance UID.
pub fn transcode(input: &Path, output: &Path, v: Variant) -> io::Result<()> {
    if v == Variant::JpegBaseline {
        let bits = bits_allocated(input)?;
        if !v.supports_bits_allocated(bits) {
            return Err(invalid(format!(
                "JPEG baseline needs 8-bit input, {} has BitsAllocated {bits}",
                input.display()
            )));
        }
    }
    let (tool, flags) = v.dcmtk_command();
    let mut args: Vec<&std::ffi::OsStr> = flags.iter().map(std::ffi::OsStr::new).collect();
    args.push(input.as_os_str());
    args.push(output.as_os_str());
    run_dcmtk(tool, &args)?;
    let (ts, _) = meta_info(output)?;
    let ts = ts
        .get(&META_TRANSFER_SYNTAX)
        .map(|b| uid_from_bytes(b))
        .unwrap_or_default();
    if ts != v.transfer_syntax_uid() {
        return Err(other(format!(
            "`{tool}` wrote {} with transfer syntax {ts}, expected {} for {v:?}",
            output.display(),
            v.transfer_syntax_uid()
        )));
    }
    Ok(())
}

/// Bits Allocated of an uncompressed or compressed file (not deflated), read
/// with dicom-object.
fn bits_allocated(path: &Path) -> io::Result<u16> {
    let obj = dicom_object::OpenFileOptions::new()
        .read_until(tags::PIXEL_DATA)
        .open_file(path)
        .map_err(|e| invalid_data(format!("reading {}: {e}", path.display())))?;
    obj.element(tags::BITS_ALLOCATED)
        .map_err(|e| invalid_data(format!("{}: {e}", path.display())))?
        .to_int::<u16>()
        .map_err(|e| invalid_data(format!("{}: BitsAllocated: {e}", path.display())))
}

/// Streams a large multi-frame Secondary Capture (multi-frame grayscale word,
/// SOP class [`SOP_CLASS_MF_GRAYSCALE_WORD_SC`]) of `frames` 512x512 16-bit
/// frames (12 bits stored, 512 KiB per frame) into
/// `<dir>/FIONALARGE<frames>_multiframe.dcm`, for synthetic patient
/// `Testperson^Gross`, study UID `<UID_ROOT>.9.<frames>`. Deterministic per
/// `frames`. Returns the path and the file size (about `frames` x 512 KiB +
/// ~1 KiB header). See [`write_large_multiframe_for`].
pub fn write_large_multiframe(dir: &Path, frames: u32) -> io::Result<(PathBuf, u64)> {
    let mut spec = StudySpec::new(frames, Modality::Sc);
    spec.patient_name = "Testperson^Gross".into();
    spec.patient_id = format!("FIONALARGE{frames}");
    spec.accession = format!("ACCLARGE{frames}");
    // Own UID namespace (".9.") so it never collides with `StudySpec::new`.
    spec.study_uid = format!("{UID_ROOT}.9.{frames}");
    spec.rows = 512;
    spec.cols = 512;
    write_large_multiframe_for(&spec, dir, frames)
}

/// Streams a multi-frame grayscale word Secondary Capture with `frames`
/// frames of `spec.rows` x `spec.cols` 16-bit samples into
/// `<dir>/<PatientID>_multiframe.dcm`, using the patient/study of `spec` and
/// series 1 / instance 1 UIDs from it (`spec.modality` is ignored).
///
/// Only the header goes through dicom-object; the Pixel Data element header
/// (explicit length) and the frames are written by hand through a
/// `BufWriter`, one frame buffer at a time. Returns the path and the file size.
pub fn write_large_multiframe_for(
    spec: &StudySpec,
    dir: &Path,
    frames: u32,
) -> io::Result<(PathBuf, u64)> {
    check_uid(&spec.study_uid)?;
    if frames == 0 || spec.rows == 0 || spec.cols == 0 {
        return Err(invalid("frames, rows and cols must be non-zero"));
    }
    let frame_len = spec.rows as u64 * spec.cols as u64 * 2;
    let pixel_len = frame_len * frames as u64;
    if pixel_len >= 0xFFFF_FFFE {
        return Err(invalid(format!(
            "pixel data of {pixel_len} bytes does not fit an explicit 32-bit length"
        )));
    }
    let sop_uid = spec.sop_instance_uid(1, 1);
    check_uid(&sop_uid)?;

    let mut obj = InMemDicomObject::new_empty();
    common_attributes(&mut obj, spec, SOP_CLASS_MF_GRAYSCALE_WORD_SC);
    put_str(&mut obj, tags::SOP_INSTANCE_UID, VR::UI, sop_uid);
    put_str(&mut obj, tags::MODALITY, VR::CS, "OT");
    put_str(
        &mut obj,
        tags::SERIES_INSTANCE_UID,
        VR::UI,
        spec.series_uid(1),
    );
    put_str(&mut obj, tags::SERIES_NUMBER, VR::IS, "1");
    put_str(
        &mut obj,
        tags::SERIES_DESCRIPTION,
        VR::LO,
        format!("Synthetic multi-frame ({frames} frames)"),
    );
    put_str(&mut obj, tags::INSTANCE_NUMBER, VR::IS, "1");
    put_str(&mut obj, tags::PATIENT_ORIENTATION, VR::CS, "");
    put_str(&mut obj, tags::CONVERSION_TYPE, VR::CS, "WSD");
    put_str(&mut obj, tags::FRAME_TIME, VR::DS, "40");
    put_str(&mut obj, tags::NUMBER_OF_FRAMES, VR::IS, frames.to_string());
    obj.put(DataElement::new(
        tags::FRAME_INCREMENT_POINTER,
        VR::AT,
        PrimitiveValue::from(tags::FRAME_TIME),
    ));
    // Grayscale word SC: 16 allocated, 12 stored, unsigned MONOCHROME2.
    pixel_module(&mut obj, Modality::Ct, spec.rows, spec.cols);
    put_str(&mut obj, tags::RESCALE_INTERCEPT, VR::DS, "0");
    put_str(&mut obj, tags::RESCALE_SLOPE, VR::DS, "1");
    put_str(&mut obj, tags::RESCALE_TYPE, VR::LO, "US");
    put_str(&mut obj, tags::WINDOW_CENTER, VR::DS, "2048");
    put_str(&mut obj, tags::WINDOW_WIDTH, VR::DS, "4096");

    let file_obj = obj
        .with_meta(meta_builder())
        .map_err(|e| other(format!("building file meta: {e}")))?;
    let mut header = Vec::with_capacity(4096);
    file_obj
        .write_all(&mut header)
        .map_err(|e| other(format!("encoding header: {e}")))?;

    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("{}_multiframe.dcm", spec.patient_id));
    let mut w = BufWriter::with_capacity(1 << 20, File::create(&path)?);
    w.write_all(&header)?;
    // (7FE0,0010) OW, explicit VR LE: tag, VR, 2 reserved bytes, 32-bit length.
    w.write_all(&0x7FE0u16.to_le_bytes())?;
    w.write_all(&0x0010u16.to_le_bytes())?;
    w.write_all(b"OW\0\0")?;
    w.write_all(&(pixel_len as u32).to_le_bytes())?;
    let mut frame = Vec::with_capacity(frame_len as usize);
    for f in 0..frames {
        let seed = spec.seed() ^ ((f as u64 + 1) << 24) ^ f as u64;
        fill_frame(Modality::Ct, spec.rows, spec.cols, seed, &mut frame);
        debug_assert_eq!(frame.len() as u64, frame_len);
        w.write_all(&frame)?;
    }
    let file = w.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    let size = file.metadata()?.len();
    let expected = header.len() as u64 + 12 + pixel_len;
    if size != expected {
        return Err(other(format!(
            "{} has {size} bytes, expected {expected}",
            path.display()
        )));
    }
    Ok((path, size))
}

/// (group, element) of a file meta element.
type MetaTag = (u16, u16);
const META_GROUP_LENGTH: MetaTag = (0x0002, 0x0000);
const META_SOP_INSTANCE_UID: MetaTag = (0x0002, 0x0003);
const META_TRANSFER_SYNTAX: MetaTag = (0x0002, 0x0010);

fn uid_from_bytes(b: &[u8]) -> String {
    String::from_utf8_lossy(b)
        .trim_end_matches(['\0', ' '])
        .to_string()
}

/// VRs with a 2-byte reserved field and a 4-byte length in explicit VR.
fn has_long_length(vr: &[u8]) -> bool {
    matches!(
        vr,
        b"OB"
            | b"OD"
            | b"OF"
            | b"OL"
            | b"OV"
            | b"OW"
            | b"SQ"
            | b"SV"
            | b"UC"
            | b"UN"
            | b"UR"
            | b"UT"
            | b"UV"
    )
}

/// Parses preamble, `DICM` and the file meta group (always explicit VR LE)
/// of a Part-10 file. Returns the meta elements and the offset where the data
/// set starts. The end of the group is taken from (0002,0000) and
/// cross-checked against the elements actually present.
fn parse_meta(bytes: &[u8]) -> io::Result<(std::collections::BTreeMap<MetaTag, Vec<u8>>, usize)> {
    if bytes.len() < 132 || &bytes[128..132] != b"DICM" {
        return Err(invalid_data("not a DICOM Part-10 file (no DICM at 128)"));
    }
    let mut elements = std::collections::BTreeMap::new();
    let mut pos = 132usize;
    let mut declared_end: Option<usize> = None;
    loop {
        if let Some(end) = declared_end {
            if pos == end {
                break;
            }
            if pos > end {
                return Err(invalid_data(format!(
                    "meta element overruns group length (at {pos}, end {end})"
                )));
            }
        }
        if pos + 8 > bytes.len() {
            return Err(invalid_data("truncated file meta group"));
        }
        let group = u16::from_le_bytes([bytes[pos], bytes[pos + 1]]);
        let elem = u16::from_le_bytes([bytes[pos + 2], bytes[pos + 3]]);
        if group != 0x0002 {
            if declared_end.is_some() {
                return Err(invalid_data(format!(
                    "non-meta element ({group:04X},{elem:04X}) inside meta group"
                )));
            }
            // No (0002,0000): the group ends at the first non-group-2 element.
            break;
        }
        let vr = &bytes[pos + 4..pos + 6];
        if !vr.iter().all(|b| b.is_ascii_uppercase()) {
            return Err(invalid_data(format!(
                "meta element ({group:04X},{elem:04X}) lacks an explicit VR"
            )));
        }
        let (len, header) = if has_long_length(vr) {
            if pos + 12 > bytes.len() {
                return Err(invalid_data("truncated file meta group"));
            }
            let l = u32::from_le_bytes([
                bytes[pos + 8],
                bytes[pos + 9],
                bytes[pos + 10],
                bytes[pos + 11],
            ]);
            (l as usize, 12)
        } else {
            (
                u16::from_le_bytes([bytes[pos + 6], bytes[pos + 7]]) as usize,
                8,
            )
        };
        let start = pos + header;
        let end = start
            .checked_add(len)
            .filter(|&e| e <= bytes.len())
            .ok_or_else(|| invalid_data("meta element value overruns file"))?;
        let value = bytes[start..end].to_vec();
        if (group, elem) == META_GROUP_LENGTH {
            if value.len() != 4 {
                return Err(invalid_data("(0002,0000) must be UL of length 4"));
            }
            let gl = u32::from_le_bytes([value[0], value[1], value[2], value[3]]) as usize;
            declared_end = Some(end + gl);
        }
        elements.insert((group, elem), value);
        pos = end;
    }
    Ok((elements, pos))
}

fn read_head(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    File::open(path)?.take(limit).read_to_end(&mut buf)?;
    Ok(buf)
}

/// Meta elements of a file (reads at most the first 64 KiB).
fn meta_info(path: &Path) -> io::Result<(std::collections::BTreeMap<MetaTag, Vec<u8>>, usize)> {
    let head = read_head(path, 64 * 1024)?;
    parse_meta(&head).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

/// Returns `(transfer syntax UID from the meta group, data set bytes)`: the
/// bytes after preamble, `DICM` and the file meta group, exactly as stored
/// (still deflated for Deflated Explicit VR LE). Compare sent vs. stored with
/// [`same_dataset`] (deflated streams may gain a pad byte on the wire).
pub fn dataset_bytes(path: &Path) -> io::Result<(String, Vec<u8>)> {
    let bytes = std::fs::read(path)?;
    let (meta, offset) = parse_meta(&bytes)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    let ts = meta
        .get(&META_TRANSFER_SYNTAX)
        .map(|b| uid_from_bytes(b))
        .ok_or_else(|| invalid_data(format!("{}: no (0002,0010)", path.display())))?;
    Ok((ts, bytes[offset..].to_vec()))
}

/// Whether a data set `stored` by a receiver is the unchanged data set `sent`
/// (both as returned by [`dataset_bytes`], in transfer syntax `ts`).
///
/// Exact equality, with one exception observed with DCMTK 3.6.7: a Deflated
/// Explicit VR LE stream of odd length (as `dcmconv +td` writes it to a file)
/// goes over the network padded with a single trailing `0x00` byte, so the
/// stored data set is one byte longer.
pub fn same_dataset(ts: &str, sent: &[u8], stored: &[u8]) -> bool {
    sent == stored
        || (ts == TS_DEFLATED_EXPLICIT_VR_LE
            && sent.len() % 2 == 1
            && stored.len() == sent.len() + 1
            && stored.starts_with(sent)
            && stored.last() == Some(&0))
}

/// Transfer Syntax UID (0002,0010) from a file's meta group.
pub fn transfer_syntax_uid(path: &Path) -> io::Result<String> {
    let (meta, _) = meta_info(path)?;
    meta.get(&META_TRANSFER_SYNTAX)
        .map(|b| uid_from_bytes(b))
        .ok_or_else(|| invalid_data(format!("{}: no (0002,0010)", path.display())))
}

/// Media Storage SOP Instance UID (0002,0003) from a file's meta group.
pub fn sop_instance_uid(path: &Path) -> io::Result<String> {
    let (meta, _) = meta_info(path)?;
    meta.get(&META_SOP_INSTANCE_UID)
        .map(|b| uid_from_bytes(b))
        .ok_or_else(|| invalid_data(format!("{}: no (0002,0003)", path.display())))
}

/// `storescu` (DCMTK 3.6.7) options that make it send a file of the given
/// variant (`None` = the Explicit VR LE originals from [`write_study`] and
/// [`write_large_multiframe`]) *unchanged*: in the file's own transfer
/// syntax, with the data set bytes identical to the file's, so a
/// bit-preserving receiver stores exactly what [`dataset_bytes`] returns for
/// the sent file. Pass them before `peer port files...`; set `TCP_NODELAY=1`
/// in the environment as usual.
///
/// | file                  | flags       | proposed per SOP class          |
/// |-----------------------|-------------|---------------------------------|
/// | Explicit VR LE        | `-R -xe`    | `[ELE]`, `[EBE, ILE]`           |
/// | Implicit VR LE        | `-R -xi`    | `[ILE]` only                    |
/// | Explicit VR BE        | `-R -xb`    | `[EBE]`, `[ELE, ILE]`           |
/// | Deflated Explicit LE  | `-R -xd`    | `[Deflate]`, `[ELE, EBE, ILE]`  |
/// | JPEG Lossless SV1     | `-R -xs`    | `[.4.70]`, `[ELE, EBE, ILE]`    |
/// | JPEG Baseline         | `-R -xy`    | `[.4.50]`, `[ELE, EBE, ILE]`    |
/// | JPEG-LS Lossless      | `-R -xt`    | `[.4.80]`, `[ELE, EBE, ILE]`    |
/// | RLE Lossless          | `-R -xr`    | `[.5]`, `[ELE, EBE, ILE]`       |
///
/// How it works (verified against `storescp +B +xa`, see the
/// `storescu_roundtrip_is_bit_exact` test): by default storescu puts each
/// `-x?` option's preferred transfer syntax alone into its own presentation
/// context, the remaining uncompressed ones into a second context, and then
/// sends each file over an accepted context matching the file's transfer
/// syntax if there is one; otherwise it converts on the fly. `-R` restricts
/// the proposal to the SOP classes of the files being sent (smaller
/// association, no 128-context limit issues).
///
/// Observed pitfalls with other flags (storescu 3.6.7 -> storescp 3.6.7):
/// * Plain `storescu` (`-x=`) proposes `[ELE]` and `[EBE, ILE]`; an
///   Implicit VR LE file then goes out as Explicit VR LE, and a Deflated
///   file as Explicit VR LE. Big Endian is kept only because storescp picks
///   EBE from the second context; another SCP may pick ILE.
/// * Compressed files (JPEG, JPEG-LS, RLE) fail outright without the
///   matching flag ("unable to convert dataset from 'JPEG Lossless ...' to
///   'Little Endian Explicit'"); `-R` alone does not propose the file's TS.
/// * `-xi` makes every uncompressed file go out as Implicit VR LE, `-xd`
///   makes Explicit VR LE files go out deflated.
/// * Deflated files compare equal only because storescu re-deflates with
///   zlib level 6, the same default `dcmconv +td` uses; and an odd-length
///   deflated stream gets one trailing `0x00` pad byte on the wire (the file
///   written by `dcmconv` is unpadded), see [`same_dataset`].
/// * storescu re-encodes the data set: sequences/items of undefined length
///   are sent with explicit lengths, so files containing them do not
///   round-trip byte for byte. The corpus contains no sequences; DCMTK's
///   compressors write explicit-length sequences.
/// * If the receiver rejects the single-TS context (e.g. does not support
///   Big Endian), storescu silently falls back to converting uncompressed
///   files (compare the stored transfer syntax!) and fails for compressed ones.
pub fn storescu_args_for(v: Option<Variant>) -> Vec<&'static str> {
    let ts_flag = match v {
        None => "-xe",
        Some(Variant::ImplicitLe) => "-xi",
        Some(Variant::ExplicitBe) => "-xb",
        Some(Variant::Deflate) => "-xd",
        Some(Variant::JpegLossless) => "-xs",
        Some(Variant::JpegBaseline) => "-xy",
        Some(Variant::JpegLs) => "-xt",
        Some(Variant::Rle) => "-xr",
    };
    vec!["-R", ts_flag]
}

/// [`storescu_args_for`] chosen from a file's transfer syntax UID; `None` for
/// transfer syntaxes this corpus does not produce.
pub fn storescu_args_for_ts(ts_uid: &str) -> Option<Vec<&'static str>> {
    if ts_uid == TS_EXPLICIT_VR_LE {
        return Some(storescu_args_for(None));
    }
    Variant::ALL
        .into_iter()
        .find(|v| v.transfer_syntax_uid() == ts_uid)
        .map(|v| storescu_args_for(Some(v)))
}
