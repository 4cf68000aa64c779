//! Finding burned-in text with a learned detector (issue 13): PaddleOCR's PP-OCRv4 text
//! detection model (DBNet, Apache-2.0; provenance and checksum in `daemon/models/README.md`),
//! embedded in the binary and run by `tract-onnx` (pure Rust: no native runtime to ship, no
//! download at run time).
//!
//! Unlike the ink picture Tesseract reads ([`super::ocr`]), the detector does not need the
//! text to be the brightest thing in the frame: it was trained on photographs and documents
//! with text of any colour over any background, lighter or darker than what lies under it.
//!
//! A frame goes through it as follows:
//!
//! 1. **The displayed picture** ([`picture`]): grey images (MONOCHROME1 inverted, palette
//!    through its luma) stretched between their 0.5th and 99.5th percentiles to 8 bits, so a
//!    16-bit CT or X-ray looks as a viewer would show it, text at the top of the range stays
//!    bright and text inside the anatomy's range keeps its contrast; colour as RGB (YBR
//!    converted).
//! 2. **Two views of it**, each run through the model: the picture itself, and its local
//!    contrast (CLAHE: the luma equalised per tile of an 8 x 8 grid with a clipped
//!    histogram), where text nearly as bright as the anatomy under it stands out. Pictures
//!    up to 1024 on a side are **enlarged twice** (cubic) first: the model was trained on
//!    text 16 pixels tall and more and misses much 8 to 12 pixel text at its own size.
//!    Pictures larger than 2048 on a side are reduced by an integer factor (their text is
//!    larger too). Measured on the evaluation set (`tests/real/text_eval.py`, see
//!    `docs/BENCHMARKS.md`): the picture alone blanked 67 of 98 boxes, enlarged 81, with the
//!    local contrast view and line growth 88; the two views run on two threads.
//! 3. **Tiles**: the model runs on tiles of at most 1024 x 1024 pixels (sides multiples of
//!    32), overlapping by 64. One optimised plan per tile shape, built once and kept.
//! 4. **Boxes** from the probability map as DBNet's own post-processing makes them: pixels
//!    above the threshold (0.3), dilated by one pixel, 8-connected components; a component
//!    whose bounding box scores at least the box threshold (mean probability) is text; its
//!    box is grown by DBNet's unclip distance (area x 1.6 / perimeter), since the model marks
//!    the shrunk core of each text line. A core must look like a line of text: at most 20
//!    pixels tall (times the enlargement), 1.25 times as wide as tall, and crossing strokes
//!    (at least two steep edges along its rows: a smooth bright organ has none). The boxes of
//!    both views are blanked.
//! 5. **Lines followed and grown**: where part of a line lies over something nearly as
//!    bright as its ink (a name over bone), the model sees only the rest of the line. So a
//!    box is first followed left and right over the picture ([`follow_line`]): burned-in
//!    text has one ink level, and while strips of one box height beside it hold letters at
//!    that level (3 to 60 % of the strip, crossing strokes), the line goes on (at most 12
//!    strips a side). Then it is blanked with a margin of 2 pixels and two box heights more
//!    to its left and right, out to the image's edge where less than a box height would be
//!    left (a line that starts at the border). Measured on the evaluation set: growth of 1 /
//!    2 / 3 heights blanked 90 / 93 / 94 of 98 boxes fully, 0.08 / 0.12 / 0.15 % of text-free
//!    pictures (the prototype of this pipeline); following and the edge rule took the larger
//!    set (300 boxes) from 283 to 288 (see `docs/BENCHMARKS.md`). Cines (below) are not
//!    followed: their boxes come from combined pictures.
//! 6. **Cines** (3 frames or more) are detected once, on the per-pixel minimum and maximum
//!    of their frames' pictures ([`combined_text_boxes`]), unless `each_frame` is set; every
//!    frame is still checked by Tesseract after masking (the caller). On a synthetic cine
//!    with a label over moving speckle this found text that frame-by-frame detection left
//!    in 5 of 8 frames, in a quarter of the time.
//!
//! Only boxes leave this module (no text is recognised here at all). tract runs one tile on
//! one thread; the caller runs frames in parallel (rayon).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use tract_onnx::prelude::*;

use super::image::{luma, sample, Layout, Palette, Photometric};
use super::signatures::Rect;

/// The model, embedded (see `daemon/models/README.md`).
static MODEL: &[u8] = include_bytes!("../../models/ppocrv4_det.onnx");

/// Tile sides: at most this (a multiple of 32), overlapping by [`OVERLAP`]. A 512 x 512
/// frame enlarged twice is one tile.
const TILE: usize = 1024;
const OVERLAP: usize = 64;
/// Pictures larger than this on a side are reduced by an integer factor first.
const MAX_SIDE: usize = 2048;
/// The detector marks the shrunk core of a text line: on the evaluation set, the cores of
/// lines 8 to 40 pixels tall were at most 15 pixels tall (0.37 of the line) and at least 1.7
/// times as wide as tall. A core taller than this is not a line of burned-in text but a
/// textured region or a disc the model took for text (the synthetic phantom's disc, 33
/// pixels across, made cores 22-30 pixels tall once enlarged).
const MAX_CORE_HEIGHT: usize = 20;
/// Pictures whose longer side is at most this are enlarged twice before detection: the
/// model was trained on text 16 pixels tall and more, and misses much of the 8 to 12 pixel
/// text of a 512 x 512 slice at its own size.
const ENLARGE_UP_TO: usize = 1024;
/// Edges a core must cross along its rows (median) to be a line of text: see `strokes`.
const MIN_STROKE_EDGES: usize = 2;
/// The local contrast view's tiles on a side, and its clip limit (a histogram bin holds at
/// most this many times the mean count).
const GRID: usize = 8;
const CLIP: f32 = 3.0;
/// Plans kept (one per tile shape); a series has one or two shapes.
const MAX_PLANS: usize = 16;

/// How the detector's probability map becomes boxes (DBNet's post-processing parameters).
#[derive(Debug, Clone, PartialEq)]
pub struct DetectSettings {
    /// A pixel is text when its probability is above this.
    pub threshold: f32,
    /// A component is text when the mean probability in its box is at least this.
    pub box_threshold: f32,
    /// DBNet's unclip ratio: how far the shrunk text core is grown back.
    pub unclip_ratio: f32,
    /// Pixels added on every side of a box before it is blanked.
    pub margin: u32,
    /// How far a box is grown left and right, in box heights: where part of a line lies
    /// over something as bright as its ink, the detector sees the rest of the line only.
    pub line_grow: f32,
    /// Detect in every frame of a multi-frame image; `false`: once, on the frames' combined
    /// pictures (see [`combined_text_boxes`]).
    pub each_frame: bool,
}

impl Default for DetectSettings {
    fn default() -> Self {
        DetectSettings {
            threshold: 0.3,
            box_threshold: 0.5,
            unclip_ratio: 1.6,
            margin: 2,
            line_grow: 2.0,
            each_frame: false,
        }
    }
}

/// Why a frame could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DetectError {
    #[error("text detector unavailable: {0}")]
    Model(String),
    #[error("frame is {got} bytes, the layout needs {want}")]
    Size { got: usize, want: usize },
    #[error("text detector failed: {0}")]
    Run(String),
}

type Plan = TypedSimplePlan;

struct Detector {
    model: InferenceModel,
    plans: Mutex<HashMap<(usize, usize), Arc<Plan>>>,
}

fn detector() -> Result<&'static Detector, DetectError> {
    static D: OnceLock<Result<Detector, String>> = OnceLock::new();
    D.get_or_init(|| {
        let model = tract_onnx::onnx()
            .model_for_read(&mut std::io::Cursor::new(MODEL))
            .map_err(|e| e.to_string())?;
        Ok(Detector {
            model,
            plans: Mutex::new(HashMap::new()),
        })
    })
    .as_ref()
    .map_err(|e| DetectError::Model(e.clone()))
}

impl Detector {
    /// The optimised plan for a `h` x `w` input (built on first use, then kept).
    fn plan(&self, h: usize, w: usize) -> Result<Arc<Plan>, DetectError> {
        let lock = |m: &Mutex<HashMap<(usize, usize), Arc<Plan>>>| {
            // A panic while the lock was held cannot leave the map inconsistent (inserts
            // are single calls): take it back.
            m.lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&(h, w))
                .cloned()
        };
        if let Some(p) = lock(&self.plans) {
            return Ok(p);
        }
        let plan = self
            .model
            .clone()
            .with_input_fact(0, f32::fact([1, 3, h, w]).into())
            .and_then(|m| m.into_optimized())
            .and_then(|m| m.into_runnable())
            .map_err(|e| DetectError::Model(e.to_string()))?;
        let mut map = self.plans.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_PLANS {
            map.clear();
        }
        map.insert((h, w), plan.clone());
        Ok(plan)
    }
}

/// A frame as it is displayed, 8 bits per sample, RGB interleaved (grey repeated).
#[derive(Debug, Clone)]
pub struct Picture {
    pub width: usize,
    pub height: usize,
    pub rgb: Vec<u8>,
}

/// The value at the given fraction (0..1) of the sorted values.
fn percentile(sorted_copy: &mut [i32], q: f64) -> i32 {
    let k = ((sorted_copy.len() - 1) as f64 * q).round() as usize;
    let (_, v, _) = sorted_copy.select_nth_unstable(k);
    *v
}

/// The displayed picture of a frame (see the module documentation).
pub fn picture(
    frame: &[u8],
    layout: &Layout,
    palette: Option<&Palette>,
) -> Result<Picture, DetectError> {
    let want = layout.frame_bytes();
    if frame.len() != want || layout.check().is_err() {
        return Err(DetectError::Size {
            got: frame.len(),
            want,
        });
    }
    let b = usize::from(layout.bits_allocated / 8);
    let (width, height) = (layout.columns as usize, layout.rows as usize);
    let n = width * height;
    let s = |i: usize| sample(frame, b, i * b, layout);
    // Colour samples to 8 bits.
    let shift = layout.bits_stored.saturating_sub(8);
    let c8 = |v: i32| (v.max(0) >> shift).min(255) as u8;
    let ybr = |y: i32, cb: i32, cr: i32| {
        let (y, cb, cr) = (
            f64::from(c8(y)),
            f64::from(c8(cb)) - 128.0,
            f64::from(c8(cr)) - 128.0,
        );
        let c = |v: f64| v.round().clamp(0.0, 255.0) as u8;
        [
            c(y + 1.402 * cr),
            c(y - 0.344_136 * cb - 0.714_136 * cr),
            c(y + 1.772 * cb),
        ]
    };
    let mut rgb = Vec::with_capacity(n * 3);
    match layout.photometric {
        Photometric::Monochrome1 | Photometric::Monochrome2 | Photometric::PaletteColor => {
            let grey: Vec<i32> = match layout.photometric {
                Photometric::Monochrome1 => (0..n).map(|i| -s(i)).collect(),
                Photometric::PaletteColor => (0..n)
                    .map(|i| palette.map_or(s(i), |p| p.brightness(s(i))))
                    .collect(),
                _ => (0..n).map(s).collect(),
            };
            let mut sorted = grey.clone();
            let (mut lo, mut hi) = (
                percentile(&mut sorted, 0.005),
                percentile(&mut sorted, 0.995),
            );
            if hi <= lo {
                lo = *grey.iter().min().unwrap_or(&0);
                hi = *grey.iter().max().unwrap_or(&0);
            }
            let range = f64::from((hi - lo).max(1));
            for v in grey {
                let g = ((f64::from(v - lo) * 255.0 / range).round()).clamp(0.0, 255.0) as u8;
                rgb.extend_from_slice(&[g, g, g]);
            }
        }
        Photometric::Rgb => {
            for i in 0..n {
                let (r, g, bl) = if layout.planar == 1 {
                    (s(i), s(n + i), s(2 * n + i))
                } else {
                    (s(3 * i), s(3 * i + 1), s(3 * i + 2))
                };
                rgb.extend_from_slice(&[c8(r), c8(g), c8(bl)]);
            }
        }
        Photometric::YbrFull => {
            for i in 0..n {
                let (y, cb, cr) = if layout.planar == 1 {
                    (s(i), s(n + i), s(2 * n + i))
                } else {
                    (s(3 * i), s(3 * i + 1), s(3 * i + 2))
                };
                rgb.extend_from_slice(&ybr(y, cb, cr));
            }
        }
        Photometric::YbrFull422 => {
            // Y1 Y2 Cb Cr per pair of pixels.
            for i in 0..n {
                let base = (i / 2) * 4;
                rgb.extend_from_slice(&ybr(s(base + i % 2), s(base + 2), s(base + 3)));
            }
        }
    }
    Ok(Picture { width, height, rgb })
}

/// The picture reduced by an integer factor (mean of each `f` x `f` block).
fn reduce(p: &Picture, f: usize) -> Cow<'_, Picture> {
    if f <= 1 {
        return Cow::Borrowed(p);
    }
    let (w, h) = (p.width.div_ceil(f), p.height.div_ceil(f));
    let mut rgb = vec![0u8; w * h * 3];
    for y in 0..h {
        for x in 0..w {
            let mut sum = [0u32; 3];
            let mut count = 0;
            for yy in y * f..((y + 1) * f).min(p.height) {
                for xx in x * f..((x + 1) * f).min(p.width) {
                    let at = (yy * p.width + xx) * 3;
                    for (s, v) in sum.iter_mut().zip(&p.rgb[at..at + 3]) {
                        *s += u32::from(*v);
                    }
                    count += 1;
                }
            }
            let at = (y * w + x) * 3;
            for (o, s) in rgb[at..at + 3].iter_mut().zip(sum) {
                *o = (s / count.max(1)) as u8;
            }
        }
    }
    Cow::Owned(Picture {
        width: w,
        height: h,
        rgb,
    })
}

/// Tile origins along one side of `len` pixels (padded to a multiple of 32): one tile when
/// it fits, else tiles of [`TILE`] overlapping by at least [`OVERLAP`].
fn tiles(len: usize) -> (usize, Vec<usize>) {
    let padded = len.div_ceil(32).max(1) * 32;
    if padded <= TILE {
        return (padded, vec![0]);
    }
    let step = TILE - OVERLAP;
    let mut starts: Vec<usize> = (0..)
        .map(|k| k * step)
        .take_while(|s| s + TILE < padded)
        .collect();
    starts.push(padded - TILE);
    (TILE, starts)
}

/// Text boxes in a picture, in its coordinates, before the margin: the union of what the
/// model finds in two views of it (the picture, and its local contrast), each enlarged
/// twice when the picture is small (see the module documentation).
pub fn detect_picture(p: &Picture, s: &DetectSettings) -> Result<Vec<Rect>, DetectError> {
    let f = p.width.max(p.height).div_ceil(MAX_SIDE).max(1);
    let small = reduce(p, f);
    let k = if small.width.max(small.height) <= ENLARGE_UP_TO {
        2
    } else {
        1
    };
    // The two views on two threads: a single-frame image has no other parallelism.
    let (plain, local) = rayon::join(
        || detect_view(&enlarge(&small, k), s, k),
        || detect_view(&enlarge(&local_contrast(&small), k), s, k),
    );
    let mut out = Vec::new();
    for found in [plain?, local?] {
        for (bx0, by0, bx1, by1) in found {
            // Back to the picture's coordinates (enlargement, reduction).
            let x = bx0 * f / k;
            let y = by0 * f / k;
            let x1 = ((bx1 + 1) * f).div_ceil(k).min(p.width);
            let y1 = ((by1 + 1) * f).div_ceil(k).min(p.height);
            if x < x1 && y < y1 {
                out.push(Rect {
                    x: x as u32,
                    y: y as u32,
                    width: (x1 - x) as u32,
                    height: (y1 - y) as u32,
                });
            }
        }
    }
    Ok(out)
}

/// The model's boxes (x0, y0, x1, y1 inclusive) in one view, tile by tile; `scale` is the
/// view's enlargement (text cores are that much taller).
fn detect_view(
    view: &Picture,
    s: &DetectSettings,
    scale: usize,
) -> Result<Vec<(usize, usize, usize, usize)>, DetectError> {
    let d = detector()?;
    let (tw, xs) = tiles(view.width);
    let (th, ys) = tiles(view.height);
    let plan = d.plan(th, tw)?;
    let mut out = Vec::new();
    for &y0 in &ys {
        for &x0 in &xs {
            // BGR, as the model was trained (OpenCV order), normalised to -1..1; outside
            // the picture (padding) black.
            let input =
                tract_ndarray::Array4::<f32>::from_shape_fn((1, 3, th, tw), |(_, c, y, x)| {
                    let (px, py) = (x0 + x, y0 + y);
                    if px >= view.width || py >= view.height {
                        return -1.0;
                    }
                    let v = view.rgb[(py * view.width + px) * 3 + (2 - c)];
                    f32::from(v) / 127.5 - 1.0
                });
            let result = plan
                .run(tvec!(Tensor::from(input).into()))
                .map_err(|e| DetectError::Run(e.to_string()))?;
            let prob = result[0]
                .to_plain_array_view::<f32>()
                .map_err(|e| DetectError::Run(e.to_string()))?;
            let shape = prob.shape().to_vec();
            if shape.len() != 4 || shape[2] != th || shape[3] != tw {
                return Err(DetectError::Run(format!(
                    "unexpected output shape {shape:?}"
                )));
            }
            let map: Vec<f32> = prob.iter().copied().collect();
            let tile = Window {
                view,
                x0,
                y0,
                width: tw,
            };
            for (bx0, by0, bx1, by1) in boxes(&map, &tile, th, s, MAX_CORE_HEIGHT * scale) {
                out.push((x0 + bx0, y0 + by0, x0 + bx1, y0 + by1));
            }
        }
    }
    Ok(out)
}

/// The picture enlarged `k` times (1 or 2) by cubic interpolation (OpenCV's kernel, a =
/// -0.75, pixel centres aligned).
fn enlarge(p: &Picture, k: usize) -> Cow<'_, Picture> {
    if k != 2 {
        return Cow::Borrowed(p);
    }
    // Enlarging twice puts every new sample a quarter pixel from an old one: even
    // positions 0.75 of the way from the left neighbour, odd ones 0.25.
    let cubic = |t: f32| -> [f32; 4] {
        let a = -0.75f32;
        let near = |x: f32| ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
        let far = |x: f32| ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a;
        [far(1.0 + t), near(t), near(1.0 - t), far(2.0 - t)]
    };
    let weights = [cubic(0.75), cubic(0.25)];
    // Output sample `o` of a line of `len`: the first of its four source samples (before
    // clamping to the line) and its weights.
    let taps = |o: usize| -> (isize, &[f32; 4]) {
        if o.is_multiple_of(2) {
            (o as isize / 2 - 2, &weights[0])
        } else {
            (o as isize / 2 - 1, &weights[1])
        }
    };
    let clamp = |i: isize, len: usize| i.clamp(0, len as isize - 1) as usize;
    let (w, h) = (p.width, p.height);
    // A grey picture (every sample R = G = B) is enlarged once and repeated.
    let grey = p.rgb.chunks_exact(3).all(|s| s[0] == s[1] && s[1] == s[2]);
    let channels = if grey { 1 } else { 3 };
    let mut rgb = vec![0u8; 4 * w * h * 3];
    let mut wide = vec![0f32; h * 2 * w];
    let mut row = vec![0f32; 2 * w];
    for c in 0..channels {
        // Rows first (h x 2w), one channel.
        for y in 0..h {
            let src = &p.rgb[y * w * 3..(y + 1) * w * 3];
            let out = &mut wide[y * 2 * w..(y + 1) * 2 * w];
            for (o, v) in out.iter_mut().enumerate() {
                let (base, k) = taps(o);
                *v = (0..4)
                    .map(|j| k[j] * f32::from(src[clamp(base + j as isize, w) * 3 + c]))
                    .sum();
            }
        }
        // Then columns: each output row a weighted sum of four wide rows.
        for o in 0..2 * h {
            let (base, k) = taps(o);
            let r: [&[f32]; 4] = std::array::from_fn(|j| {
                let y = clamp(base + j as isize, h);
                &wide[y * 2 * w..(y + 1) * 2 * w]
            });
            for (x, v) in row.iter_mut().enumerate() {
                // The same order of sums as the rows' pass: results do not depend on it.
                *v = 0.0 + k[0] * r[0][x] + k[1] * r[1][x] + k[2] * r[2][x] + k[3] * r[3][x];
            }
            let dst = &mut rgb[o * 2 * w * 3..(o + 1) * 2 * w * 3];
            for (x, v) in row.iter().enumerate() {
                let b = v.round().clamp(0.0, 255.0) as u8;
                if grey {
                    dst[x * 3..x * 3 + 3].fill(b);
                } else {
                    dst[x * 3 + c] = b;
                }
            }
        }
    }
    Cow::Owned(Picture {
        width: 2 * w,
        height: 2 * h,
        rgb,
    })
}

/// The local contrast view: the luma equalised tile by tile with a clipped histogram
/// (CLAHE: [`GRID`] x [`GRID`] tiles, clip limit [`CLIP`], blended bilinearly between tile
/// centres), so text nearly as bright as the anatomy under it stands out, while a flat
/// region's noise is not blown up into texture (the clip limit bounds the gain).
fn local_contrast(p: &Picture) -> Picture {
    let (w, h) = (p.width, p.height);
    let grey: Vec<u8> = (0..w * h)
        .map(|i| picture_luma(p, i % w, i / w).clamp(0, 255) as u8)
        .collect();
    let (tw, th) = (w.div_ceil(GRID).max(1), h.div_ceil(GRID).max(1));
    let (nx, ny) = (w.div_ceil(tw), h.div_ceil(th));
    // One look-up table per tile.
    let mut luts = vec![[0u8; 256]; nx * ny];
    for ty in 0..ny {
        for tx in 0..nx {
            let mut hist = [0u32; 256];
            let (x0, y0) = (tx * tw, ty * th);
            let (x1, y1) = ((x0 + tw).min(w), (y0 + th).min(h));
            for y in y0..y1 {
                for &g in &grey[y * w + x0..y * w + x1] {
                    hist[usize::from(g)] += 1;
                }
            }
            let area = ((x1 - x0) * (y1 - y0)) as u32;
            let limit = ((CLIP * area as f32 / 256.0) as u32).max(1);
            let mut excess = 0;
            for b in hist.iter_mut() {
                if *b > limit {
                    excess += *b - limit;
                    *b = limit;
                }
            }
            let (each, rest) = (excess / 256, (excess % 256) as usize);
            let mut cdf = 0u32;
            for (i, b) in hist.iter().enumerate() {
                cdf += b + each + u32::from(i < rest);
                luts[ty * nx + tx][i] = (f64::from(cdf) * 255.0 / f64::from(area.max(1)))
                    .round()
                    .min(255.0) as u8;
            }
        }
    }
    // Each pixel between the four nearest tile centres.
    let between = |pos: usize, size: usize, n: usize| {
        let f = (pos as f32 + 0.5) / size as f32 - 0.5;
        let lo = f.floor();
        let a = f - lo;
        let lo = lo as isize;
        let clamp = |i: isize| i.clamp(0, n as isize - 1) as usize;
        (clamp(lo), clamp(lo + 1), a)
    };
    let mut rgb = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        let (ty0, ty1, ay) = between(y, th, ny);
        for x in 0..w {
            let (tx0, tx1, ax) = between(x, tw, nx);
            let g = usize::from(grey[y * w + x]);
            let at = |tx: usize, ty: usize| f32::from(luts[ty * nx + tx][g]);
            let top = at(tx0, ty0) * (1.0 - ax) + at(tx1, ty0) * ax;
            let bottom = at(tx0, ty1) * (1.0 - ax) + at(tx1, ty1) * ax;
            let v = (top * (1.0 - ay) + bottom * ay).round().clamp(0.0, 255.0) as u8;
            rgb.extend_from_slice(&[v, v, v]);
        }
    }
    Picture {
        width: w,
        height: h,
        rgb,
    }
}

/// The part of a view one tile of the model saw: `width` columns from (`x0`, `y0`);
/// outside the view (the tile's padding) black.
struct Window<'a> {
    view: &'a Picture,
    x0: usize,
    y0: usize,
    width: usize,
}

impl Window<'_> {
    fn sample(&self, x: usize, y: usize, c: usize) -> i32 {
        let (px, py) = (self.x0 + x, self.y0 + y);
        if px >= self.view.width || py >= self.view.height {
            return 0;
        }
        i32::from(self.view.rgb[(py * self.view.width + px) * 3 + c])
    }
}

/// Strokes across a core (x0..=x1, y0..=y1 in the window): in each row, the runs of steep
/// rise or fall (a central difference beyond a quarter of the core's 5-95 % range, at least
/// 6 levels) in the colour channel with the most; the median over the rows. A line of text
/// crosses two edges per stroke; a smooth blob (a bright organ) none, a step one.
fn strokes(win: &Window<'_>, (x0, y0, x1, y1): (usize, usize, usize, usize)) -> usize {
    let mut per_row = Vec::with_capacity(y1 - y0 + 1);
    for y in y0..=y1 {
        let mut best = 0;
        for c in 0..3 {
            let row: Vec<i32> = (x0.saturating_sub(1)..=x1 + 1)
                .map(|x| win.sample(x, y, c))
                .collect();
            let mut sorted = row.clone();
            sorted.sort_unstable();
            let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
            let steep = ((at(0.95) - at(0.05)) / 4).max(6);
            let mut runs = 0;
            let mut last = 0i32;
            for pair in row.windows(3) {
                let d = pair[2] - pair[0];
                let sign = if d > steep {
                    1
                } else if d < -steep {
                    -1
                } else {
                    0
                };
                if sign != 0 && sign != last {
                    runs += 1;
                    last = sign;
                }
            }
            best = best.max(runs);
        }
        per_row.push(best);
    }
    per_row.sort_unstable();
    per_row[per_row.len() / 2]
}

/// DBNet's post-processing on one probability map (the window's `width` x `h`): boxes (x0,
/// y0, x1, y1, inclusive, clipped to the map) of the text lines.
fn boxes(
    map: &[f32],
    win: &Window<'_>,
    h: usize,
    s: &DetectSettings,
    max_core: usize,
) -> Vec<(usize, usize, usize, usize)> {
    let w = win.width;
    // Threshold, then dilate by one pixel (DBNet's 2x2 kernel).
    let hot: Vec<bool> = map.iter().map(|&p| p > s.threshold).collect();
    let mut on = vec![false; w * h];
    for y in 0..h {
        for x in 0..w {
            let mut v = hot[y * w + x];
            if !v && x > 0 {
                v = hot[y * w + x - 1];
            }
            if !v && y > 0 {
                v = hot[(y - 1) * w + x] || (x > 0 && hot[(y - 1) * w + x - 1]);
            }
            on[y * w + x] = v;
        }
    }
    let mut out = Vec::new();
    for (x0, y0, x1, y1) in super::ocr::connected(&on, w) {
        let (bw, bh) = (x1 - x0 + 1, y1 - y0 + 1);
        // A line of text (two characters or more) is wider than tall, its core at least 1.7
        // times (see MAX_CORE_HEIGHT); a core less than 1.25 times as wide as tall is a blob
        // (a disc, a textured organ: the synthetic phantom's disc made cores 1.05-1.14).
        if bw.min(bh) < 3 || bh > max_core || bw * 4 < bh * 5 {
            continue;
        }
        // The box's score: mean probability inside it ("fast" score mode).
        let mut sum = 0.0f64;
        for y in y0..=y1 {
            for x in x0..=x1 {
                sum += f64::from(map[y * w + x]);
            }
        }
        if sum / ((bw * bh) as f64) < f64::from(s.box_threshold) {
            continue;
        }
        // A line of text has strokes; a core over a smooth blob (a bladder in a whole-body
        // scan, seen at a tile's edge) has none. Measured on the evaluation set: text cores
        // at least 2 (fragments of a line over bone), blobs 0 or 1.
        if strokes(win, (x0, y0, x1, y1)) < MIN_STROKE_EDGES {
            continue;
        }
        // Unclip: grow by area x ratio / perimeter.
        let d =
            ((bw * bh) as f64 * f64::from(s.unclip_ratio) / (2 * (bw + bh)) as f64).ceil() as usize;
        out.push((
            x0.saturating_sub(d),
            y0.saturating_sub(d),
            (x1 + d).min(w - 1),
            (y1 + d).min(h - 1),
        ));
    }
    out
}

/// Boxes to blank in a frame: the detector's text lines, each widened by the margin and
/// clipped to the image.
pub fn text_boxes(
    frame: &[u8],
    layout: &Layout,
    palette: Option<&Palette>,
    s: &DetectSettings,
) -> Result<Vec<Rect>, DetectError> {
    let p = picture(frame, layout, palette)?;
    Ok(detect_picture(&p, s)?
        .into_iter()
        .map(|r| follow_line(&p, r))
        .filter_map(|r| to_blank(r, s, layout.columns, layout.rows))
        .collect())
}

/// Pixels of a strip this close to the ink's level are ink.
const INK_TOLERANCE: i32 = 8;
/// A strip continues the line when this share of it (in thousandths) is ink, at least ...
const INK_MIN: usize = 30;
/// ... and at most this (more is a plateau at the ink's level, not letters).
const INK_MAX: usize = 600;
/// Strips followed on each side, at most.
const FOLLOW_STEPS: u32 = 12;

/// A detected line followed left and right over what the detector did not see: burned-in
/// text has one ink level, so where strips of one box height beside the box hold letters
/// at that level (some of the strip, not all of it, with strokes), the line goes on (part
/// of a name over bone brighter than the detector could separate).
fn follow_line(p: &Picture, r: Rect) -> Rect {
    let (x0, y0) = (r.x as usize, r.y as usize);
    let (x1, y1) = (
        (x0 + r.width as usize).min(p.width),
        (y0 + r.height as usize).min(p.height),
    );
    let h = y1.saturating_sub(y0);
    if h < 4 || x1 <= x0 {
        return r;
    }
    let luma = |x: usize, y: usize| picture_luma(p, x, y);
    let mut inside: Vec<i32> = (y0..y1)
        .flat_map(|y| (x0..x1).map(move |x| (x, y)))
        .map(|(x, y)| luma(x, y))
        .collect();
    let lo = percentile(&mut inside, 0.05);
    let mid = percentile(&mut inside, 0.5);
    let hi = percentile(&mut inside, 0.95);
    // The ink is lighter or darker than the background (the median): each side whose
    // tail reaches 24 levels from it is tried, at its most common value in that tail.
    let ink_of = |light: bool| -> Option<i32> {
        let (edge, far) = if light {
            (hi, hi - mid)
        } else {
            (lo, mid - lo)
        };
        if far < 24 {
            return None;
        }
        let mut counts = [0u32; 256];
        for &v in &inside {
            if (light && v >= (mid + hi) / 2) || (!light && v <= (mid + lo) / 2) {
                counts[v.clamp(0, 255) as usize] += 1;
            }
        }
        Some(
            counts
                .iter()
                .enumerate()
                .max_by_key(|(_, c)| **c)
                .map_or(edge, |(v, _)| v as i32),
        )
    };
    let (mut a, mut b) = (x0, x1);
    for ink in [ink_of(true), ink_of(false)].into_iter().flatten() {
        let (fa, fb) = follow(p, ink, (x0, x1), (y0, y1));
        a = a.min(fa);
        b = b.max(fb);
    }
    Rect {
        x: a as u32,
        y: r.y,
        width: (b - a) as u32,
        height: r.height,
    }
}

/// Frames from which a multi-frame image is detected once, on combined pictures.
pub const COMBINED_FROM_FRAMES: u32 = 3;

/// The columns a line of `ink` spans, followed strip by strip (one line height wide) left
/// of `x0` and right of `x1` while each strip holds letters at that level (see
/// [`follow_line`]).
fn follow(
    p: &Picture,
    ink: i32,
    (x0, x1): (usize, usize),
    (y0, y1): (usize, usize),
) -> (usize, usize) {
    let h = y1 - y0;
    let is_ink = |x: usize, y: usize| (picture_luma(p, x, y) - ink).abs() <= INK_TOLERANCE;
    // The box is the line's core grown back (unclip): its top and bottom fifths are mostly
    // background. Letters keep their ink in the middle rows; a texture at the ink's level
    // has it in every row.
    let edge_rows = (h / 5).max(1);
    let letters = |xa: usize, xb: usize| -> bool {
        let n = (xb - xa) * h;
        let (mut on, mut on_edge_rows) = (0, 0);
        let mut edges = Vec::with_capacity(h);
        for y in y0..y1 {
            let mut e = 0;
            let mut last = false;
            let mut row = 0;
            for x in xa..xb {
                let i = is_ink(x, y);
                row += usize::from(i);
                e += usize::from(i != last);
                last = i;
            }
            on += row;
            if y < y0 + edge_rows || y >= y1 - edge_rows {
                on_edge_rows += row;
            }
            edges.push(e);
        }
        edges.sort_unstable();
        let share = on * 1000 / n.max(1);
        // Ink per row in the edge rows at most half of that in the middle rows.
        let middle_rows = h - 2 * edge_rows;
        let middle = (on - on_edge_rows) * 2 * edge_rows;
        let outer = on_edge_rows * middle_rows;
        (INK_MIN..=INK_MAX).contains(&share) && edges[h / 2] >= 2 && 2 * outer <= middle
    };
    let (mut a, mut b) = (x0, x1);
    for _ in 0..FOLLOW_STEPS {
        if a == 0 || !letters(a.saturating_sub(h), a) {
            break;
        }
        a = a.saturating_sub(h);
    }
    for _ in 0..FOLLOW_STEPS {
        if b >= p.width || !letters(b, (b + h).min(p.width)) {
            break;
        }
        b = (b + h).min(p.width);
    }
    (a, b)
}

/// Boxes to blank in every frame of a multi-frame image (a cine), detected once: on the
/// per-pixel minimum and maximum of the frames' displayed pictures. Text that stays in
/// place (the patient band of an ultrasound cine) is in every frame: over moving anatomy
/// it keeps its value while the anatomy under it changes, so light text stands out in the
/// minimum and dark text in the maximum; text that changes in place (a frame counter, a
/// clock) leaves the union of its glyphs in the maximum (light) or the minimum (dark). The
/// caller still checks every frame with Tesseract after masking. Four detections instead of
/// one per frame (a 51-frame cine: 51 times fewer).
pub fn combined_text_boxes(
    data: &[u8],
    layout: &Layout,
    palette: Option<&Palette>,
    s: &DetectSettings,
) -> Result<Vec<Rect>, DetectError> {
    use rayon::prelude::*;
    let fb = layout.frame_bytes().max(1);
    let extremes = data
        .par_chunks(fb)
        .map(|f| picture(f, layout, palette).map(|p| (p.clone(), p)))
        .try_reduce_with(|(mut lo, mut hi), (l, h)| {
            if (lo.width, lo.height) != (l.width, l.height) {
                return Err(DetectError::Size {
                    got: l.rgb.len(),
                    want: lo.rgb.len(),
                });
            }
            lo.rgb
                .iter_mut()
                .zip(&l.rgb)
                .for_each(|(a, b)| *a = (*a).min(*b));
            hi.rgb
                .iter_mut()
                .zip(&h.rgb)
                .for_each(|(a, b)| *a = (*a).max(*b));
            Ok((lo, hi))
        });
    let Some(extremes) = extremes else {
        return Ok(Vec::new());
    };
    let (lo, hi) = extremes?;
    let (a, b) = rayon::join(|| detect_picture(&lo, s), || detect_picture(&hi, s));
    Ok(a?
        .into_iter()
        .chain(b?)
        .filter_map(|r| to_blank(r, s, layout.columns, layout.rows))
        .collect())
}

/// The rectangle blanked for a detected box: the margin on every side, and the line growth
/// left and right; then, where that leaves less than one box height to the image's edge,
/// out to the edge (a line that starts at the border over something as bright as its ink:
/// on the evaluation set an X-ray's "ACC" line kept its first letter, 6 pixels from the
/// edge); clipped to the image.
fn to_blank(r: Rect, s: &DetectSettings, columns: u32, rows: u32) -> Option<Rect> {
    let m = s.margin;
    let mx = m + (r.height as f32 * s.line_grow).round() as u32;
    let snap = r.height;
    let (mut x0, mut y0) = (r.x.saturating_sub(mx), r.y.saturating_sub(m));
    let (mut x1, mut y1) = (
        r.x.saturating_add(r.width).saturating_add(mx),
        r.y.saturating_add(r.height).saturating_add(m),
    );
    if x0 <= snap {
        x0 = 0;
    }
    if y0 <= snap {
        y0 = 0;
    }
    if x1.saturating_add(snap) >= columns {
        x1 = columns;
    }
    if y1.saturating_add(snap) >= rows {
        y1 = rows;
    }
    Rect {
        x: x0,
        y: y0,
        width: x1.saturating_sub(x0),
        height: y1.saturating_sub(y0),
    }
    .clip(Some(columns), Some(rows))
}

/// Luma of a picture pixel (for tests and the evaluation).
pub fn picture_luma(p: &Picture, x: usize, y: usize) -> i32 {
    let at = (y * p.width + x) * 3;
    luma(
        i32::from(p.rgb[at]),
        i32::from(p.rgb[at + 1]),
        i32::from(p.rgb[at + 2]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn the_model_is_the_documented_one() {
        let sum: String = Sha256::digest(MODEL)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            sum,
            "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9"
        );
        let readme = include_str!("../../models/README.md");
        assert!(readme.contains(&sum));
    }

    #[test]
    fn a_large_picture_is_reduced_by_block_means() {
        let p = Picture {
            width: 4,
            height: 2,
            rgb: [10u8, 20, 30, 50]
                .iter()
                .flat_map(|&v| [v, v, v])
                .chain([0u8; 12])
                .collect(),
        };
        let r = reduce(&p, 2);
        assert_eq!((r.width, r.height), (2, 1));
        assert_eq!(r.rgb, vec![7, 7, 7, 20, 20, 20]);
    }

    #[test]
    fn tiles_cover_every_side_with_overlap() {
        assert_eq!(tiles(10), (32, vec![0]));
        assert_eq!(tiles(512), (512, vec![0]));
        assert_eq!(tiles(960), (960, vec![0]));
        let (t, xs) = tiles(2000);
        assert_eq!(t, TILE);
        assert_eq!(*xs.last().unwrap() + TILE, 2016);
        for pair in xs.windows(2) {
            assert!(pair[1] - pair[0] <= TILE - OVERLAP);
        }
    }

    #[test]
    fn a_hot_line_becomes_one_grown_box_and_a_speck_or_a_blob_none() {
        let (w, h) = (64, 32);
        let mut map = vec![0.0f32; w * h];
        for y in 10..14 {
            for x in 8..40 {
                map[y * w + x] = 0.9;
            }
        }
        map[25 * w + 60] = 0.9;
        // A blob about as wide as tall (a disc's core), not a line.
        for y in 16..30 {
            for x in 44..60 {
                map[y * w + x] = 0.9;
            }
        }
        // Under it, strokes: vertical bars 2 pixels wide every 4.
        let strokes = grey(w, h, |x, _| if x % 4 < 2 { 220 } else { 30 });
        let win = Window {
            view: &strokes,
            x0: 0,
            y0: 0,
            width: w,
        };
        let b = boxes(&map, &win, h, &DetectSettings::default(), MAX_CORE_HEIGHT);
        assert_eq!(b.len(), 1, "{b:?}");
        let (x0, y0, x1, y1) = b[0];
        assert!(x0 < 8 && y0 < 10 && x1 > 40 && y1 > 14, "{b:?}");
    }

    #[test]
    fn a_line_core_over_a_smooth_blob_or_a_single_step_is_not_text() {
        let (w, h) = (64, 32);
        let mut map = vec![0.0f32; w * h];
        for y in 10..14 {
            for x in 8..40 {
                map[y * w + x] = 0.9;
            }
        }
        let settings = DetectSettings::default();
        let found = |p: &Picture| {
            let win = Window {
                view: p,
                x0: 0,
                y0: 0,
                width: w,
            };
            boxes(&map, &win, h, &settings, MAX_CORE_HEIGHT).len()
        };
        // A bright ellipse shaded smoothly (a bladder), and one hard step: no strokes.
        let blob = grey(w, h, |x, y| {
            let (dx, dy) = ((x as f32 - 24.0) / 30.0, (y as f32 - 12.0) / 12.0);
            (240.0 * (-(dx * dx + dy * dy)).exp()) as u8
        });
        let step = grey(w, h, |x, _| if x < 24 { 20 } else { 230 });
        assert_eq!(found(&blob), 0);
        assert_eq!(found(&step), 0);
        // The same core over two strokes is kept; over faint strokes (10 levels) too.
        let two = grey(w, h, |x, _| {
            if (14..16).contains(&x) || (30..32).contains(&x) {
                200
            } else {
                40
            }
        });
        let faint = grey(w, h, |x, _| if x % 5 < 2 { 110 } else { 100 });
        assert_eq!(found(&two), 1);
        assert_eq!(found(&faint), 1);
    }

    /// A line of "letters" (bars of ink 255, 3 wide, 3 apart) from x = 20 to 300 at rows
    /// 40..52, over black from x = 120 and over bone (200) before; the detector saw only the
    /// part over black (120..300). The line is followed over the bone to its first letter;
    /// a plateau at the ink's level (x < 20 in the second picture) is not followed.
    #[test]
    fn a_line_is_followed_over_bone_at_its_ink_level_and_not_over_a_plateau() {
        let letters =
            |x: usize, y: usize| (20..300).contains(&x) && (40..52).contains(&y) && x % 6 < 3;
        let p = grey(400, 100, |x, y| {
            if letters(x, y) {
                255
            } else if x < 120 {
                200
            } else {
                0
            }
        });
        let seen = Rect {
            x: 120,
            y: 38,
            width: 180,
            height: 16,
        };
        let r = follow_line(&p, seen);
        assert!(r.x <= 20 && r.x + 16 > 20, "{r:?}");
        assert_eq!((r.y, r.height), (38, 16));
        assert!(r.x + r.width >= 300 && r.x + r.width <= 316, "{r:?}");
        // The same with the ink's level as a plateau left of the text: not followed into it.
        let q = grey(400, 100, |x, y| {
            if letters(x, y) || x < 20 {
                255
            } else if x < 120 {
                200
            } else {
                0
            }
        });
        let r = follow_line(&q, seen);
        assert!(r.x >= 4, "{r:?}");
        // Flat background beside the box: unchanged.
        let flat = grey(
            400,
            100,
            |x, y| if letters(x, y) && x >= 120 { 255 } else { 0 },
        );
        assert_eq!(follow_line(&flat, seen), seen);
    }

    fn grey(width: usize, height: usize, f: impl Fn(usize, usize) -> u8) -> Picture {
        Picture {
            width,
            height,
            rgb: (0..width * height)
                .flat_map(|i| {
                    let g = f(i % width, i / width);
                    [g, g, g]
                })
                .collect(),
        }
    }

    #[test]
    fn enlarging_doubles_the_sides_and_keeps_flat_regions_and_edges() {
        let p = grey(6, 4, |x, _| if x < 3 { 40 } else { 200 });
        let e = enlarge(&p, 2);
        assert_eq!((e.width, e.height), (12, 8));
        for y in 0..8 {
            // Far from the edge the values are the old ones; across it they rise in order.
            assert_eq!(picture_luma(&e, 0, y), 40);
            assert_eq!(picture_luma(&e, 11, y), 200);
            let row: Vec<i32> = (0..12).map(|x| picture_luma(&e, x, y)).collect();
            assert!(
                row[4] < row[5] && row[5] < row[6] && row[6] < row[7],
                "{row:?}"
            );
        }
        assert!(matches!(enlarge(&p, 1), Cow::Borrowed(_)));
    }

    /// A faint band (8 grey levels above textured "anatomy" spread over 41 levels, as
    /// near-level text) comes out of the local contrast view with at least twice its
    /// contrast; a flat picture stays flat (the clip limit keeps its noise from being blown
    /// up).
    #[test]
    fn local_contrast_lifts_a_faint_band_and_leaves_a_flat_picture_flat() {
        let texture = |x: usize, y: usize| (100 + (x * 7 + y * 13) % 41) as u8;
        let in_band = |x: usize, y: usize| (120..136).contains(&y) && (32..224).contains(&x);
        let p = grey(256, 256, |x, y| {
            texture(x, y) + if in_band(x, y) { 8 } else { 0 }
        });
        let c = local_contrast(&p);
        let mean = |pic: &Picture, y0: usize| {
            let v: Vec<i32> = (y0..y0 + 16)
                .flat_map(|y| (32..224).map(move |x| (x, y)))
                .map(|(x, y)| picture_luma(pic, x, y))
                .collect();
            v.iter().sum::<i32>() as f64 / v.len() as f64
        };
        let before = mean(&p, 120) - mean(&p, 100);
        let after = mean(&c, 120) - mean(&c, 100);
        assert!(
            after >= 2.0 * before,
            "band {before:.1} levels before, {after:.1} after"
        );
        let flat = local_contrast(&grey(64, 64, |_, _| 100));
        let values: std::collections::BTreeSet<i32> = (0..64 * 64)
            .map(|i| picture_luma(&flat, i % 64, i / 64))
            .collect();
        assert_eq!(values.len(), 1, "{values:?}");
    }

    #[test]
    fn a_box_is_grown_along_its_line_and_clipped_to_the_image() {
        let s = DetectSettings::default();
        let r = Rect {
            x: 100,
            y: 50,
            width: 80,
            height: 10,
        };
        // Margin 2 on every side; two box heights (20) more to the left and the right.
        assert_eq!(
            to_blank(r, &s, 512, 512),
            Some(Rect {
                x: 78,
                y: 48,
                width: 124,
                height: 14
            })
        );
        let edge = Rect { x: 3, ..r };
        assert_eq!(
            to_blank(edge, &s, 512, 512).map(|b| (b.x, b.width)),
            Some((0, 105))
        );
        // Less than a box height (10) left to an edge after growth: out to that edge.
        let near = Rect {
            x: 30,
            y: 9,
            width: 450,
            height: 10,
        };
        assert_eq!(
            to_blank(near, &s, 512, 512),
            Some(Rect {
                x: 0,
                y: 0,
                width: 512,
                height: 21
            })
        );
        // Eleven pixels or more: as grown.
        let inside = Rect {
            x: 33,
            y: 13,
            width: 80,
            height: 10,
        };
        assert_eq!(
            to_blank(inside, &s, 512, 512),
            Some(Rect {
                x: 11,
                y: 11,
                width: 124,
                height: 14
            })
        );
    }

    /// A grey frame with a light-grey band of "text" that is not the brightest thing: the
    /// picture keeps the band's contrast.
    #[test]
    fn the_picture_stretches_sixteen_bit_grey() {
        let layout = Layout {
            rows: 4,
            columns: 4,
            samples_per_pixel: 1,
            bits_allocated: 16,
            bits_stored: 12,
            signed: false,
            photometric: Photometric::Monochrome2,
            planar: 0,
        };
        let values: Vec<u16> = (0..16).map(|i| (i * 200) as u16).collect();
        let frame: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let p = picture(&frame, &layout, None).unwrap();
        assert_eq!(p.rgb.len(), 48);
        assert_eq!(picture_luma(&p, 0, 0), 0);
        assert_eq!(picture_luma(&p, 3, 3), 255);
        assert!(picture_luma(&p, 1, 1) > 60 && picture_luma(&p, 1, 1) < 120);
    }
}
