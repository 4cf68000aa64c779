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
//! 2. **Tiles at full resolution**: the model runs on tiles of at most 960 x 960 pixels (sides
//!    multiples of 32), overlapping by 64, so an 8-pixel line of text is seen at its size.
//!    Pictures larger than 2048 on a side are first reduced by an integer factor (their text
//!    is larger too). One optimised plan per tile shape, built once and kept.
//! 3. **Boxes** from the probability map as DBNet's own post-processing makes them: pixels
//!    above the threshold (0.3), dilated by one pixel, 8-connected components; a component
//!    whose bounding box scores at least the box threshold (mean probability) is text; its
//!    box is grown by DBNet's unclip distance (area x 1.6 / perimeter), since the model marks
//!    the shrunk core of each text line.
//!
//! Only boxes leave this module (no text is recognised here at all). tract runs one tile on
//! one thread; the caller runs frames in parallel (rayon).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use tract_onnx::prelude::*;

use super::mask::{Layout, Palette, Photometric};
use super::ocr::{luma, sample};
use super::signatures::Rect;

/// The model, embedded (see `daemon/models/README.md`).
static MODEL: &[u8] = include_bytes!("../../models/ppocrv4_det.onnx");

/// Tile sides: at most this (a multiple of 32), overlapping by [`OVERLAP`].
const TILE: usize = 960;
const OVERLAP: usize = 64;
/// Pictures larger than this on a side are reduced by an integer factor first.
const MAX_SIDE: usize = 2048;
/// The detector marks the shrunk core of a text line (about 0.6 of its height): a core
/// taller than this is not a line of burned-in text (text is 8 to 40 pixels tall, a little
/// more with large fonts), but a textured region of the anatomy the model took for text.
const MAX_CORE_HEIGHT: usize = 40;
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
}

impl Default for DetectSettings {
    fn default() -> Self {
        DetectSettings {
            threshold: 0.3,
            box_threshold: 0.5,
            unclip_ratio: 1.6,
            margin: 2,
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
fn reduce(p: &Picture, f: usize) -> Picture {
    if f <= 1 {
        return p.clone();
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
    Picture {
        width: w,
        height: h,
        rgb,
    }
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

/// Text boxes in a picture, in its coordinates, before the margin.
pub fn detect_picture(p: &Picture, s: &DetectSettings) -> Result<Vec<Rect>, DetectError> {
    let d = detector()?;
    let f = p.width.max(p.height).div_ceil(MAX_SIDE).max(1);
    let small = reduce(p, f);
    let (tw, xs) = tiles(small.width);
    let (th, ys) = tiles(small.height);
    let plan = d.plan(th, tw)?;
    let mut out = Vec::new();
    for &y0 in &ys {
        for &x0 in &xs {
            // BGR, as the model was trained (OpenCV order), normalised to -1..1; outside
            // the picture (padding) black.
            let input =
                tract_ndarray::Array4::<f32>::from_shape_fn((1, 3, th, tw), |(_, c, y, x)| {
                    let (px, py) = (x0 + x, y0 + y);
                    if px >= small.width || py >= small.height {
                        return -1.0;
                    }
                    let v = small.rgb[(py * small.width + px) * 3 + (2 - c)];
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
            for (bx0, by0, bx1, by1) in boxes(&map, tw, th, s) {
                // Back to the picture's coordinates (tile offset, reduction).
                let x = (x0 + bx0) * f;
                let y = (y0 + by0) * f;
                let x1 = ((x0 + bx1 + 1) * f).min(p.width);
                let y1 = ((y0 + by1 + 1) * f).min(p.height);
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
    }
    Ok(out)
}

/// DBNet's post-processing on one probability map (`w` x `h`): boxes (x0, y0, x1, y1,
/// inclusive, clipped to the map) of the text lines.
fn boxes(map: &[f32], w: usize, h: usize, s: &DetectSettings) -> Vec<(usize, usize, usize, usize)> {
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
        if bw.min(bh) < 3 || bh > MAX_CORE_HEIGHT {
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
    let m = s.margin;
    Ok(detect_picture(&p, s)?
        .into_iter()
        .filter_map(|r| {
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
    fn a_hot_line_becomes_one_grown_box_and_a_speck_none() {
        let (w, h) = (64, 32);
        let mut map = vec![0.0f32; w * h];
        for y in 10..14 {
            for x in 8..40 {
                map[y * w + x] = 0.9;
            }
        }
        map[25 * w + 60] = 0.9;
        let b = boxes(&map, w, h, &DetectSettings::default());
        assert_eq!(b.len(), 1, "{b:?}");
        let (x0, y0, x1, y1) = b[0];
        assert!(x0 < 8 && y0 < 10 && x1 > 40 && y1 > 14, "{b:?}");
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
