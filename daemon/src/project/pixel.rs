//! The pixel stage's configuration as plain data (`[projects.NAME.pixel]` and its `ocr`
//! table), read with the rest of a project's settings. The stage is built from it above, by
//! `pixel::scrub::Stage::from_config`, which also checks what only the stage can (the
//! signature library parses, the OCR languages are installed).

use serde::Deserialize;

/// `[projects.NAME.pixel]`: how the pixel stage treats the project's images.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PixelConfig {
    /// Blank the regions the known-region library names.
    pub known_regions: bool,
    /// A signature library file replacing fiona's default one (same format).
    pub library: Option<std::path::PathBuf>,
    /// Secondary captures (screenshots, scanned documents) get no output at all instead of
    /// being scrubbed.
    pub drop_secondary_capture: bool,
    /// Regular expressions on SeriesDescription: series the project decided never carry
    /// burned-in text are not scrubbed.
    pub exclude_series: Vec<String>,
    /// OCR detection (`[projects.NAME.pixel.ocr]`).
    pub ocr: OcrConfig,
}

impl Default for PixelConfig {
    fn default() -> Self {
        PixelConfig {
            known_regions: true,
            library: None,
            drop_secondary_capture: false,
            exclude_series: Vec::new(),
            ocr: OcrConfig::default(),
        }
    }
}

/// `[projects.NAME.pixel.ocr]`: which images OCR reads and how. A list left out keeps the
/// usual one; a list given replaces it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OcrConfig {
    pub enabled: bool,
    /// Read every image, whatever its type.
    pub all_images: bool,
    /// Modalities read (usual: US, SC, OT).
    pub modalities: Option<Vec<String>>,
    /// SOP classes read (usual: secondary capture and ultrasound classes).
    pub sop_classes: Option<Vec<String>>,
    /// Regular expressions on SeriesDescription (usual: [`OcrConfig::USUAL_SERIES`]).
    pub series_descriptions: Option<Vec<String>>,
    /// Read images whose BurnedInAnnotation is YES.
    pub burned_in_annotation: bool,
    /// Tesseract languages, `+`-separated (each needs its tesseract-ocr-LANG package).
    pub languages: String,
    /// Words Tesseract is less sure of (0-100) do not count.
    pub min_confidence: u8,
    /// Pixels added around every word box before blanking.
    pub margin: u32,
    /// Masking rounds before an image OCR still reads text in is parked (1-5).
    pub max_rounds: u32,
    /// The learned text detector finds text first and Tesseract checks after masking
    /// (default); `false`: Tesseract alone, as before issue 13.
    pub detector: bool,
    /// The detector reads every frame of a multi-frame image; `false` (default): once, on
    /// the frames combined (their per-pixel minimum and maximum), every frame still checked.
    pub detect_each_frame: bool,
}

impl Default for OcrConfig {
    fn default() -> Self {
        // The OCR engine's own defaults (`pixel::ocr::OcrSettings::default`) are these.
        OcrConfig {
            enabled: true,
            all_images: false,
            modalities: None,
            sop_classes: None,
            series_descriptions: None,
            burned_in_annotation: true,
            languages: "eng".into(),
            min_confidence: 0,
            margin: 3,
            max_rounds: 3,
            detector: true,
            detect_each_frame: false,
        }
    }
}

impl OcrConfig {
    /// Series descriptions of dose reports and screen captures (GE "Dose Report", Siemens
    /// "Patient Protocol", "Screen Save"), case-insensitive.
    pub const USUAL_SERIES: &'static [&'static str] = &[
        "(?i)dose",
        "(?i)patient protocol",
        "(?i)screen ?(save|shot|capture)",
    ];
}
