//! Finding burned-in text with OCR (Tesseract, through `tesseract-plumbing`), and the check
//! after masking.
//!
//! Each frame is turned into a two-level picture of its text candidates before Tesseract
//! sees it ([`ink`]): the displayed brightness of every pixel (MONOCHROME1 inverted, colour
//! by its luma, palette through its LUTs), then the pixels within a tenth of the range of the
//! frame's brightest level ([`ink_level`]). Burned-in annotations are drawn in the brightest
//! value the display has, so they survive while anatomy mostly does not; text laid over the
//! image is found as well as text in the black border. A frame whose background is bright (a
//! scanned or exported document) is read the other way round: dark pixels are the ink. Text
//! drawn darker than the brightest anatomy around it is not found this way (known regions
//! cover vendors' fixed layouts).
//! Tesseract then finds words in that picture (sparse text: no layout assumed).
//!
//! A word counts when its confidence is at or above the floor, its text has a letter or
//! digit, and it is no taller than a quarter of the image unless Tesseract read at least two
//! letters or digits in it with some confidence (larger "words" are shapes of the anatomy). The recognised text never leaves this module: only boxes and confidences do (the
//! text is patient data).
//!
//! One engine per thread, started on first use and kept ([`with_engine`]): rayon workers each
//! start theirs once, not per image. Tesseract's own OpenMP threads are switched off for the
//! process (rayon already keeps every core busy; the two fighting each other made OCR 3x
//! slower on this machine).

use std::cell::RefCell;
use std::ffi::CString;
use std::sync::atomic::{AtomicU64, Ordering};

use tesseract_plumbing::tesseract_sys::{
    TessOcrEngineMode_OEM_LSTM_ONLY, TessPageSegMode_PSM_SPARSE_TEXT,
};
use tesseract_plumbing::TessBaseApi;

use super::image::{luma, sample, Layout, Palette, Photometric};
use super::signatures::Rect;

/// How OCR runs and what counts as a word.
#[derive(Debug, Clone, PartialEq)]
pub struct OcrSettings {
    /// Tesseract languages, `+`-separated (`eng`, `nor`, `eng+nor`); each needs its Debian
    /// package (`tesseract-ocr-eng`, ...).
    pub languages: String,
    /// Words below this confidence (0-100) are not counted.
    pub min_confidence: f32,
    /// Pixels added on every side of a word box before it is blanked.
    pub margin: u32,
    /// Masking rounds before an image with readable text left is parked: round 1 blanks what
    /// the first reading found; each later round blanks what the check still reads.
    pub max_rounds: u32,
    /// The learned text detector ([`super::detect`]) makes the first reading, and Tesseract
    /// is the independent check after masking; `None`: Tesseract does both (the method
    /// before issue 13).
    pub detector: Option<super::detect::DetectSettings>,
}

impl Default for OcrSettings {
    /// As configured when a project says nothing (`[projects.NAME.pixel.ocr]`).
    fn default() -> Self {
        OcrSettings::from(&crate::project::OcrConfig::default())
    }
}

impl From<&crate::project::OcrConfig> for OcrSettings {
    fn from(c: &crate::project::OcrConfig) -> Self {
        OcrSettings {
            languages: c.languages.clone(),
            min_confidence: f32::from(c.min_confidence),
            margin: c.margin,
            max_rounds: c.max_rounds,
            detector: c.detector.then(|| super::detect::DetectSettings {
                each_frame: c.detect_each_frame,
                ..Default::default()
            }),
        }
    }
}

/// A word Tesseract found: where, how sure it was, and how many letters and digits it has.
/// Never its text.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Word {
    pub rect: Rect,
    pub confidence: f32,
    pub alphanumerics: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OcrError {
    #[error(
        "the OCR engine does not start with languages `{0}` (is tesseract-ocr-LANG installed?)"
    )]
    Init(String),
    #[error("OCR failed: {0}")]
    Engine(&'static str),
    #[error("frame is {got} bytes, the layout needs {want}")]
    Size { got: usize, want: usize },
}

/// Confidence from which a tall word counts as text rather than a shape.
const SURE: f32 = 50.0;

/// Engines started in this process (for tests and metrics: one per worker thread).
static STARTED: AtomicU64 = AtomicU64::new(0);

/// Number of OCR engines started so far in this process.
pub fn engines_started() -> u64 {
    STARTED.load(Ordering::Relaxed)
}

struct Engine {
    api: TessBaseApi,
    languages: String,
}

thread_local! {
    /// This thread's engines, one per languages setting (projects may differ).
    static ENGINE: RefCell<Vec<Engine>> = const { RefCell::new(Vec::new()) };
    static STARTED_HERE: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Number of OCR engines started so far on the calling thread.
pub fn engines_started_on_this_thread() -> u64 {
    STARTED_HERE.with(|n| n.get())
}

// libgomp (Tesseract is built with OpenMP on Debian). `omp_set_max_active_levels(0)` makes
// every parallel region run on the calling thread only. OMP_THREAD_LIMIT would do the same
// but is read when the library loads, before `main`.
#[link(name = "gomp")]
extern "C" {
    fn omp_set_max_active_levels(levels: std::ffi::c_int);
}

fn single_threaded_openmp() {
    // SAFETY: a plain libgomp setter taking an integer; no pointers, callable from any thread
    // at any time (OpenMP 5.1, 3.2.15).
    #[allow(unsafe_code)]
    unsafe {
        omp_set_max_active_levels(0)
    }
}

fn start(languages: &str) -> Result<Engine, OcrError> {
    single_threaded_openmp();
    let lang = CString::new(languages).map_err(|_| OcrError::Init(languages.into()))?;
    let mut api = TessBaseApi::create();
    api.init_4(None, Some(lang.as_c_str()), TessOcrEngineMode_OEM_LSTM_ONLY)
        .map_err(|_| OcrError::Init(languages.into()))?;
    // Diagnostics to nowhere (they could quote what was read); our picture is already
    // dark-on-light, so Tesseract need not try each line inverted.
    for (k, v) in [(c"debug_file", c"/dev/null"), (c"tessedit_do_invert", c"0")] {
        api.set_variable(k, v)
            .map_err(|_| OcrError::Init(languages.into()))?;
    }
    api.set_page_seg_mode(TessPageSegMode_PSM_SPARSE_TEXT);
    STARTED.fetch_add(1, Ordering::Relaxed);
    STARTED_HERE.with(|n| n.set(n.get() + 1));
    Ok(Engine {
        api,
        languages: languages.to_string(),
    })
}

/// Run `f` with this thread's engine for `languages`, starting it on first use.
fn with_engine<R>(
    languages: &str,
    f: impl FnOnce(&mut TessBaseApi) -> Result<R, OcrError>,
) -> Result<R, OcrError> {
    ENGINE.with(|cell| {
        let mut engines = cell.borrow_mut();
        let i = match engines.iter().position(|e| e.languages == languages) {
            Some(i) => i,
            None => {
                engines.push(start(languages)?);
                engines.len() - 1
            }
        };
        f(&mut engines[i].api)
    })
}

/// Drop this thread's engine (the next image starts a new one). For the benchmark's
/// baseline: Tesseract started for every image.
pub fn drop_engine() {
    ENGINE.with(|cell| cell.borrow_mut().clear());
}

/// Start this thread's engine now (to check the languages are installed before any image).
pub fn check_languages(languages: &str) -> Result<(), OcrError> {
    with_engine(languages, |_| Ok(()))
}

/// The displayed brightness of every pixel of a frame, in the frame's own scale (larger is
/// brighter). For PALETTE COLOR pass the palette.
pub fn brightness(
    frame: &[u8],
    layout: &Layout,
    palette: Option<&Palette>,
) -> Result<Vec<i32>, OcrError> {
    let want = layout.frame_bytes();
    if frame.len() != want || layout.check().is_err() {
        return Err(OcrError::Size {
            got: frame.len(),
            want,
        });
    }
    let b = usize::from(layout.bits_allocated / 8);
    let (cols, rows) = (layout.columns as usize, layout.rows as usize);
    let n = cols * rows;
    let s = |i: usize| sample(frame, b, i * b, layout);
    Ok(match layout.photometric {
        Photometric::Monochrome2 => (0..n).map(s).collect(),
        Photometric::Monochrome1 => (0..n).map(|i| -s(i)).collect(),
        Photometric::PaletteColor => (0..n)
            .map(|i| palette.map_or(s(i), |p| p.brightness(s(i))))
            .collect(),
        Photometric::Rgb if layout.planar == 1 => {
            (0..n).map(|i| luma(s(i), s(n + i), s(2 * n + i))).collect()
        }
        Photometric::Rgb => (0..n)
            .map(|i| luma(s(3 * i), s(3 * i + 1), s(3 * i + 2)))
            .collect(),
        // Luma; colour text still differs from its surroundings in Y.
        Photometric::YbrFull if layout.planar == 1 => (0..n).map(s).collect(),
        Photometric::YbrFull => (0..n).map(|i| s(3 * i)).collect(),
        // Y1 Y2 Cb Cr per pair of pixels.
        Photometric::YbrFull422 => (0..n).map(|i| s((i / 2) * 4 + i % 2)).collect(),
    })
}

/// Where a frame's text candidates are: within a tenth of the range of its brightest level
/// (or darkest, on a light page). Found once per frame, on the frame as it arrived, and kept
/// for the check after masking: once the text is blanked, the brightest level left is the
/// anatomy's, which is not what the check must look for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InkLevel {
    /// Dark text on a light page: candidates are at or below `cut`; otherwise at or above.
    pub dark_text: bool,
    pub cut: i64,
}

/// The ink level of a frame (its displayed brightness, [`brightness`]). Burned-in text is
/// drawn at the brightest level the image has (or the darkest, on a light page). That level
/// is the one at least 20 pixels (and 1 in 2000) reach, so a few hot pixels do not set it;
/// on a plain background with less text than that, the true extremes.
/// `None`: (almost) no contrast, nothing can be text.
pub fn ink_level(bright: &[i32]) -> Option<InkLevel> {
    let n = bright.len();
    if n == 0 {
        return None;
    }
    let mut sorted = bright.to_vec();
    let k = (n / 2000).max(20).min(n - 1);
    let (_, &mut top, _) = sorted.select_nth_unstable(n - 1 - k);
    let (_, &mut bottom, _) = sorted.select_nth_unstable(k);
    let (_, &mut median, _) = sorted.select_nth_unstable(n / 2);
    let (mut lo, mut hi) = (i64::from(bottom), i64::from(top));
    if hi - lo < 16 {
        // A plain background with less text than the robust level needs (a short label on
        // a large blank screen): the true extremes. A few hot pixels then cost one reading.
        lo = i64::from(*sorted.iter().min().unwrap_or(&bottom));
        hi = i64::from(*sorted.iter().max().unwrap_or(&top));
    }
    let range = hi - lo;
    if range < 16 {
        return None;
    }
    // Mostly bright: a document, dark text on a light background.
    let dark_text = i64::from(median) >= lo + range * 3 / 4;
    let band = range / 10;
    Some(if dark_text {
        InkLevel {
            dark_text,
            cut: lo + band,
        }
    } else {
        InkLevel {
            dark_text,
            cut: hi - band,
        }
    })
}

/// The two-level picture Tesseract reads: 0 where a pixel is a text candidate at `level`,
/// 255 elsewhere.
pub fn ink(bright: &[i32], level: Option<InkLevel>) -> Vec<u8> {
    let Some(l) = level else {
        return vec![255; bright.len()];
    };
    bright
        .iter()
        .map(|&v| {
            let v = i64::from(v);
            let text = if l.dark_text { v <= l.cut } else { v >= l.cut };
            if text {
                0
            } else {
                255
            }
        })
        .collect()
}

/// Words Tesseract finds in a two-level picture (`ink`), `columns` x `rows`.
pub fn read_words(
    picture: &[u8],
    columns: u32,
    rows: u32,
    settings: &OcrSettings,
) -> Result<Vec<Word>, OcrError> {
    let want = columns as usize * rows as usize;
    if picture.len() != want {
        return Err(OcrError::Size {
            got: picture.len(),
            want,
        });
    }
    // Nothing dark: nothing to read (and Tesseract need not run).
    if !picture.contains(&0) {
        return Ok(Vec::new());
    }
    let (w, h) = (
        i32::try_from(columns).map_err(|_| OcrError::Engine("image too wide"))?,
        i32::try_from(rows).map_err(|_| OcrError::Engine("image too tall"))?,
    );
    with_engine(&settings.languages, |api| {
        api.set_image(picture, w, h, 1, w)
            .map_err(|_| OcrError::Engine("image not accepted"))?;
        api.set_source_resolution(96);
        api.recognize()
            .map_err(|_| OcrError::Engine("recognition failed"))?;
        let tsv = api
            .get_tsv_text(0)
            .map_err(|_| OcrError::Engine("no result"))?;
        let mut words = parse_tsv(&tsv.as_ref().to_string_lossy(), settings.min_confidence);
        // A "word" taller than a quarter of the image that is one character, or read with
        // little confidence, is a shape (an arc of the anatomy read as "C"), not burned-in
        // text. Tall words read as text count, in the check as in the first reading.
        let tallest = (rows / 4).max(16);
        words
            .retain(|w| w.rect.height <= tallest || (w.alphanumerics >= 2 && w.confidence >= SURE));
        Ok(words)
    })
}

/// Level-5 (word) rows of Tesseract's TSV: level, page, block, paragraph, line, word, left,
/// top, width, height, confidence, text.
fn parse_tsv(tsv: &str, floor: f32) -> Vec<Word> {
    let mut out = Vec::new();
    for line in tsv.lines() {
        let f: Vec<&str> = line.splitn(12, '\t').collect();
        if f.len() < 12 || f[0] != "5" {
            continue;
        }
        let num = |i: usize| f[i].trim().parse::<i64>().ok();
        let (Some(x), Some(y), Some(w), Some(h)) = (num(6), num(7), num(8), num(9)) else {
            continue;
        };
        let conf: f32 = f[10].trim().parse().unwrap_or(-1.0);
        let alphanumerics = f[11].chars().filter(|c| c.is_alphanumeric()).count();
        if conf < floor || alphanumerics == 0 {
            continue;
        }
        if x < 0 || y < 0 || w <= 0 || h <= 0 {
            continue;
        }
        out.push(Word {
            rect: Rect {
                x: x as u32,
                y: y as u32,
                width: w as u32,
                height: h as u32,
            },
            confidence: conf,
            alphanumerics,
        });
    }
    out
}

/// Word boxes to blank in a frame: words read with [`read_words`] at the frame's ink level
/// (`level`: found on the first call, [`ink_level`], and passed again for the checks), each
/// widened by the margin and clipped to the image.
pub fn text_boxes(
    frame: &[u8],
    layout: &Layout,
    palette: Option<&Palette>,
    level: &mut Option<Option<InkLevel>>,
    settings: &OcrSettings,
) -> Result<Vec<Rect>, OcrError> {
    let bright = brightness(frame, layout, palette)?;
    let level = *level.get_or_insert_with(|| ink_level(&bright));
    let picture = ink(&bright, level);
    let started = std::time::Instant::now();
    let words = read_words(&picture, layout.columns, layout.rows, settings);
    crate::metrics::global()
        .ocr_seconds
        .observe(started.elapsed().as_secs_f64());
    let words = words?;
    let m = settings.margin;
    let parts = components(&picture, layout.columns as usize);
    Ok(words
        .into_iter()
        .filter_map(|w| {
            let r = grow(w.rect, &parts);
            Rect {
                x: r.x.saturating_sub(m),
                y: r.y.saturating_sub(m),
                width: r.width + m + m.min(r.x),
                height: r.height + m + m.min(r.y),
            }
            .clip(Some(layout.columns), Some(layout.rows))
        })
        .collect())
}

/// Bounding boxes (x0, y0, x1, y1, inclusive) of the 8-connected ink components of a
/// two-level picture.
fn components(picture: &[u8], columns: usize) -> Vec<(u32, u32, u32, u32)> {
    let on: Vec<bool> = picture.iter().map(|&v| v == 0).collect();
    connected(&on, columns)
        .into_iter()
        .map(|(x0, y0, x1, y1)| (x0 as u32, y0 as u32, x1 as u32, y1 as u32))
        .collect()
}

/// Bounding boxes (x0, y0, x1, y1, inclusive) of the 8-connected components of the `on`
/// pixels of a picture `columns` wide (the text detector's lines, the OCR's ink).
pub(crate) fn connected(on: &[bool], columns: usize) -> Vec<(usize, usize, usize, usize)> {
    let mut seen = vec![false; on.len()];
    let mut out = Vec::new();
    let mut stack = Vec::new();
    let columns = columns.max(1);
    let rows = on.len() / columns;
    for start in 0..on.len() {
        if !on[start] || seen[start] {
            continue;
        }
        seen[start] = true;
        stack.push(start);
        let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
        while let Some(p) = stack.pop() {
            let (x, y) = (p % columns, p / columns);
            x0 = x0.min(x);
            x1 = x1.max(x);
            y0 = y0.min(y);
            y1 = y1.max(y);
            for ny in y.saturating_sub(1)..=(y + 1).min(rows - 1) {
                for nx in x.saturating_sub(1)..=(x + 1).min(columns - 1) {
                    let q = ny * columns + nx;
                    if on[q] && !seen[q] {
                        seen[q] = true;
                        stack.push(q);
                    }
                }
            }
        }
        out.push((x0, y0, x1, y1));
    }
    out
}

/// Widen a word box over the rest of its text: Tesseract's box can leave out a character
/// it did not read (a `^`, a `:`, a glyph at either end), or cut one. Every ink component of
/// character size that is cut by the box, or sits on the same line within one character
/// height of it, is taken in, until nothing more is. The box grows by at most one character
/// height to either side and a quarter of one up or down, and only over components at least
/// a quarter of a character tall (or cut by the box), so specks of the anatomy cannot chain it
/// across the image.
fn grow(word: Rect, parts: &[(u32, u32, u32, u32)]) -> Rect {
    let h = word.height.max(4);
    let (mut x0, mut y0) = (word.x, word.y);
    let (mut x1, mut y1) = (word.x + word.width - 1, word.y + word.height - 1);
    let (lx0, ly0) = (x0.saturating_sub(2 * h), y0.saturating_sub(h / 4));
    let (lx1, ly1) = (x1 + 2 * h, y1 + h / 4);
    let (bx0, by0, bx1, by1) = (x0, y0, x1, y1);
    loop {
        let mut changed = false;
        for &(cx0, cy0, cx1, cy1) in parts {
            let (cw, ch) = (cx1 - cx0 + 1, cy1 - cy0 + 1);
            // Character-sized only: a long stroke of the anatomy is not part of the word.
            if ch > h * 3 / 2 + 2 || cw > h * 3 {
                continue;
            }
            if cx0 < lx0 || cy0 < ly0 || cx1 > lx1 || cy1 > ly1 {
                continue;
            }
            let cut = cx0 <= bx1 && cx1 >= bx0 && cy0 <= by1 && cy1 >= by0;
            if !cut && ch * 4 < h {
                continue;
            }
            // On the word's line: vertically overlapping its box.
            if cy1 < y0 || cy0 > y1 {
                continue;
            }
            // Within one character height to the left or right (or cut by the box).
            if cx1 + h < x0 || cx0 > x1 + h {
                continue;
            }
            if cx0 < x0 || cy0 < y0 || cx1 > x1 || cy1 > y1 {
                x0 = x0.min(cx0);
                y0 = y0.min(cy0);
                x1 = x1.max(cx1);
                y1 = y1.max(cy1);
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    Rect {
        x: x0,
        y: y0,
        width: x1 - x0 + 1,
        height: y1 - y0 + 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_word_box_grows_over_the_rest_of_its_line_and_nothing_else() {
        // A 40x20 picture: "characters" (3x5 blocks) at x 2, 8, 14, 20 on one line, a tall
        // stroke at x 30, and a block on another line.
        let (w, h) = (40usize, 20usize);
        let mut p = vec![255u8; w * h];
        let mut block = |x0: usize, y0: usize, bw: usize, bh: usize| {
            for y in y0..y0 + bh {
                for x in x0..x0 + bw {
                    p[y * w + x] = 0;
                }
            }
        };
        for x in [2, 8, 14, 20] {
            block(x, 4, 3, 5);
        }
        block(30, 0, 2, 20);
        block(8, 14, 3, 5);
        let parts = components(&p, w);
        assert_eq!(parts.len(), 6);
        // Tesseract read the middle two characters only, and cut the second.
        let word = Rect {
            x: 8,
            y: 4,
            width: 8,
            height: 5,
        };
        let r = grow(word, &parts);
        assert_eq!(
            r,
            Rect {
                x: 2,
                y: 4,
                width: 21,
                height: 5
            }
        );
    }

    fn mono(rows: u32, columns: u32, bits: u16, photometric: Photometric) -> Layout {
        Layout {
            rows,
            columns,
            samples_per_pixel: 1,
            bits_allocated: bits,
            bits_stored: bits,
            signed: false,
            photometric,
            planar: 0,
        }
    }

    #[test]
    fn tsv_rows_become_boxes_and_the_text_is_dropped() {
        let tsv = "level\tpage_num\tblock_num\tpar_num\tline_num\tword_num\tleft\ttop\twidth\theight\tconf\ttext\n\
                   1\t1\t0\t0\t0\t0\t0\t0\t512\t512\t-1\t\n\
                   5\t1\t1\t1\t1\t1\t6\t6\t142\t14\t34.07\tHORDMANH*OLA\n\
                   5\t1\t1\t1\t1\t2\t300\t6\t30\t14\t0.000\tST.\n\
                   5\t1\t1\t1\t1\t3\t52\t76\t408\t408\t95\t \n\
                   5\t1\t1\t1\t1\t4\t60\t80\t10\t10\t20\t--\n";
        let words = parse_tsv(tsv, 0.0);
        assert_eq!(words.len(), 2);
        assert_eq!(
            words[0].rect,
            Rect {
                x: 6,
                y: 6,
                width: 142,
                height: 14
            }
        );
        assert_eq!(parse_tsv(tsv, 10.0).len(), 1);
    }

    #[test]
    fn ink_is_the_bright_end_or_the_dark_end_on_a_light_page() {
        // Dark background with mid-grey structure, a bright stroke of 30 pixels, and two hot
        // pixels brighter still (too few to set the level).
        let mut b: Vec<i32> = (0..1000).map(|i| 10 + i % 150).collect();
        b[900..930].fill(250);
        b[5] = 1000;
        b[6] = 1000;
        let p = ink(&b, ink_level(&b));
        assert!(p[900..930].iter().all(|&v| v == 0));
        assert_eq!(p.iter().filter(|&&v| v == 0).count(), 32);
        // A light page with dark text.
        let mut d = vec![240; 1000];
        d[100..125].fill(5);
        let p = ink(&d, ink_level(&d));
        assert!(p[100..125].iter().all(|&v| v == 0));
        assert_eq!(p.iter().filter(|&&v| v == 0).count(), 25);
        // No contrast: nothing.
        assert_eq!(ink_level(&[100; 50]), None);
        assert!(ink(&[100; 50], None).iter().all(|&v| v == 255));
        // The level found before masking stays: with the stroke gone, the structure's
        // brightest part is not taken for ink.
        let level = ink_level(&b);
        b[900..930].fill(0);
        assert!(ink(&b, level).iter().filter(|&&v| v == 0).count() == 2);
    }

    #[test]
    fn brightness_follows_the_photometric_interpretation() {
        let l = mono(1, 2, 16, Photometric::Monochrome1);
        let frame = [0x00, 0x00, 0xFF, 0x0F];
        let b = brightness(&frame, &l, None).unwrap();
        assert!(b[0] > b[1], "MONOCHROME1: low values are bright");
        let mut s = mono(1, 2, 16, Photometric::Monochrome2);
        s.signed = true;
        let frame = [0x00, 0x80, 0xFF, 0x7F];
        assert_eq!(brightness(&frame, &s, None).unwrap(), vec![-32768, 32767]);
        let rgb = Layout {
            samples_per_pixel: 3,
            photometric: Photometric::Rgb,
            ..mono(1, 2, 8, Photometric::Rgb)
        };
        let frame = [0, 0, 200, 255, 255, 255];
        assert_eq!(brightness(&frame, &rgb, None).unwrap(), vec![22, 255]);
        let ybr = Layout {
            samples_per_pixel: 3,
            photometric: Photometric::YbrFull422,
            ..mono(1, 2, 8, Photometric::YbrFull422)
        };
        assert_eq!(
            brightness(&[7, 9, 128, 128], &ybr, None).unwrap(),
            vec![7, 9]
        );
        let pal = Palette {
            first: 0,
            red: vec![0, 65535],
            green: vec![0, 0],
            blue: vec![0, 0],
        };
        let p = mono(1, 2, 8, Photometric::PaletteColor);
        let b = brightness(&[1, 0], &p, Some(&pal)).unwrap();
        assert!(b[0] > b[1]);
    }

    fn text_frame() -> (Vec<u8>, Layout) {
        // 5x7 glyphs at scale 3, white on a dark noisy background.
        const GLYPHS: [[u8; 7]; 4] = [
            [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F], // 2
            [0x06, 0x09, 0x09, 0x09, 0x09, 0x09, 0x06], // 0
            [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F], // 2
            [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02], // 4
        ];
        let (w, h) = (200u32, 160u32);
        let mut px: Vec<u8> = (0..w * h).map(|i| (i * 7 % 23) as u8).collect();
        for (i, g) in GLYPHS.iter().enumerate() {
            for (ry, bits) in g.iter().enumerate() {
                for rx in 0..5u32 {
                    if bits & (0x10 >> rx) != 0 {
                        for dy in 0..3 {
                            for dx in 0..3 {
                                let x = 40 + i as u32 * 18 + rx * 3 + dx;
                                let y = 30 + ry as u32 * 3 + dy;
                                px[(y * w + x) as usize] = 255;
                            }
                        }
                    }
                }
            }
        }
        (px, mono(h, w, 8, Photometric::Monochrome2))
    }

    #[test]
    fn tesseract_finds_a_burned_in_number_and_starts_once_per_thread() {
        let (px, layout) = text_frame();
        let settings = OcrSettings::default();
        let boxes = text_boxes(&px, &layout, None, &mut None, &settings).unwrap();
        assert_eq!(boxes.len(), 1, "{boxes:?}");
        let r = boxes[0];
        // The text covers x 40..109, y 30..51; the box holds it, plus the margin.
        assert!(r.x <= 40 && r.y <= 30, "{r:?}");
        assert!(r.x + r.width >= 109 && r.y + r.height >= 51, "{r:?}");
        assert!(r.width < 90 && r.height < 35, "{r:?}");
        let started = engines_started();
        let here = std::thread::spawn(move || {
            let settings = OcrSettings::default();
            for _ in 0..3 {
                assert_eq!(
                    text_boxes(&px, &layout, None, &mut None, &settings)
                        .unwrap()
                        .len(),
                    1
                );
            }
            engines_started_on_this_thread()
        })
        .join()
        .unwrap();
        assert_eq!(here, 1, "three images, one engine");
        assert!(engines_started() > started);
    }

    #[test]
    fn the_norwegian_model_reads_too() {
        let (px, layout) = text_frame();
        for languages in ["nor", "eng+nor"] {
            let settings = OcrSettings {
                languages: languages.into(),
                ..OcrSettings::default()
            };
            let boxes = text_boxes(&px, &layout, None, &mut None, &settings).unwrap();
            assert_eq!(boxes.len(), 1, "{languages}: {boxes:?}");
        }
    }

    #[test]
    fn a_short_label_on_a_large_plain_frame_is_found() {
        // 2048 x 1024 black, the 4-digit number (scale 3) in one corner: fewer ink pixels
        // than the robust level needs.
        let (small, _) = text_frame();
        let (w, h) = (2048u32, 1024u32);
        let mut px = vec![0u8; (w * h) as usize];
        for y in 0..160u32 {
            for x in 0..200u32 {
                if small[(y * 200 + x) as usize] == 255 {
                    px[(y * w + x) as usize] = 255;
                }
            }
        }
        let ink_pixels = px.iter().filter(|&&v| v == 255).count();
        assert!(ink_pixels < (w * h / 2000) as usize, "{ink_pixels}");
        let layout = mono(h, w, 8, Photometric::Monochrome2);
        let boxes = text_boxes(&px, &layout, None, &mut None, &OcrSettings::default()).unwrap();
        assert_eq!(boxes.len(), 1, "{boxes:?}");
    }

    #[test]
    fn a_frame_without_text_has_no_boxes_and_bad_languages_are_an_error() {
        let layout = mono(64, 64, 8, Photometric::Monochrome2);
        let px = vec![30u8; 64 * 64];
        assert!(
            text_boxes(&px, &layout, None, &mut None, &OcrSettings::default())
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            check_languages("xx_no_such_model"),
            Err(OcrError::Init("xx_no_such_model".into()))
        );
    }
}
