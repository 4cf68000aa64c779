//! Burn synthetic text (names, 11-digit national ID numbers, dates) into the pixels of a
//! generated, uncompressed test image, in known boxes, as modalities and screen captures do.
//! Pixel-scrubbing tests then know exactly where text is, and can check that every box is
//! blank in every frame and nothing else changed.

use std::io;
use std::path::Path;

use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, Tag, VR};
use dicom_object::open_file;

use crate::glyphs::{draw_text, text_size};

/// A piece of text and where it goes (top-left corner, glyph scale).
#[derive(Debug, Clone)]
pub struct Burn {
    pub text: String,
    pub x: u32,
    pub y: u32,
    pub scale: u32,
}

impl Burn {
    /// The box the text covers: (x, y, width, height).
    pub fn rect(&self) -> (u32, u32, u32, u32) {
        let (w, h) = text_size(&self.text, self.scale);
        (self.x, self.y, w, h)
    }
}

/// The text most tests burn into a 256x256 image: a name, an 11-digit national ID number and
/// a date in the border, and a name over the middle of the image.
pub fn sample_burns() -> Vec<Burn> {
    let b = |text: &str, x, y| Burn {
        text: text.into(),
        x,
        y,
        scale: 2,
    };
    vec![
        b("NORDMANN^KARI", 6, 6),
        b("01017012345", 110, 28),
        b("2024-03-01", 6, 230),
        b("HANSEN", 100, 120),
    ]
}

fn invalid(m: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, m)
}

fn int(obj: &dicom_object::DefaultDicomObject, tag: Tag) -> io::Result<u32> {
    obj.element(tag)
        .map_err(|e| invalid(e.to_string()))?
        .to_int::<u32>()
        .map_err(|e| invalid(e.to_string()))
}

fn text(obj: &dicom_object::DefaultDicomObject, tag: Tag) -> String {
    obj.element(tag)
        .ok()
        .and_then(|e| e.to_str().ok().map(|s| s.trim().to_string()))
        .unwrap_or_default()
}

fn frames_of(obj: &dicom_object::DefaultDicomObject) -> usize {
    obj.element(Tag(0x0028, 0x0008))
        .ok()
        .and_then(|e| e.to_str().ok().and_then(|s| s.trim().parse::<usize>().ok()))
        .unwrap_or(1)
}

fn pixel_bytes(obj: &dicom_object::DefaultDicomObject) -> io::Result<Vec<u8>> {
    Ok(obj
        .element(Tag(0x7FE0, 0x0010))
        .map_err(|e| invalid(e.to_string()))?
        .to_bytes()
        .map_err(|e| invalid(e.to_string()))?
        .to_vec())
}

fn put(obj: &mut dicom_object::DefaultDicomObject, g: u16, e: u16, vr: VR, v: PrimitiveValue) {
    obj.put(DataElement::new(Tag(g, e), vr, v));
}

/// Draw `burns` in the brightest value into every frame of the uncompressed image at
/// `path`, rewriting it in place. Brightest: the largest value for MONOCHROME2 (the
/// largest positive one when signed), the smallest for MONOCHROME1, white for RGB, Y at its
/// largest with neutral colour for YBR_FULL and YBR_FULL_422, and the largest index for
/// PALETTE COLOR (the palettes [`restyle`] writes make it the brightest entry).
pub fn burn_text(path: &Path, burns: &[Burn]) -> io::Result<()> {
    let mut obj = open_file(path).map_err(|e| invalid(e.to_string()))?;
    let (rows, cols) = (
        int(&obj, Tag(0x0028, 0x0010))?,
        int(&obj, Tag(0x0028, 0x0011))?,
    );
    let spp = int(&obj, Tag(0x0028, 0x0002))? as usize;
    let bits = int(&obj, Tag(0x0028, 0x0100))?;
    let stored = int(&obj, Tag(0x0028, 0x0101))?;
    let signed = int(&obj, Tag(0x0028, 0x0103)).unwrap_or(0) == 1;
    let frames = frames_of(&obj);
    let pi = text(&obj, Tag(0x0028, 0x0004));
    let bytes = (bits / 8) as usize;
    let max = if signed {
        (1u32 << (stored - 1)) - 1
    } else {
        (1u32 << stored) - 1
    };
    let half = 1u32 << (stored - 1);
    let (ink, chroma): (u32, Option<u32>) = match pi.as_str() {
        "MONOCHROME1" if signed => (((1u32 << bits) - half) & ((1 << bits) - 1), None),
        "MONOCHROME1" => (0, None),
        "YBR_FULL" | "YBR_FULL_422" => ((1u32 << stored) - 1, Some(half)),
        _ => (max, None),
    };
    let mut px = pixel_bytes(&obj)?;
    let ybr422 = pi == "YBR_FULL_422";
    let frame_len = if ybr422 {
        rows as usize * cols as usize * 2 * bytes
    } else {
        rows as usize * cols as usize * spp * bytes
    };
    if px.len() < frame_len * frames {
        return Err(invalid("pixel data shorter than the image".into()));
    }
    let mut set = |at: usize, v: u32| {
        if bytes == 1 {
            px[at] = v as u8;
        } else {
            px[at..at + 2].copy_from_slice(&(v as u16).to_le_bytes());
        }
    };
    for f in 0..frames {
        for b in burns {
            draw_text(&b.text, b.x, b.y, b.scale, |x, y| {
                if x >= cols || y >= rows {
                    return;
                }
                let p = y as usize * cols as usize + x as usize;
                if ybr422 {
                    let pair = f * frame_len + (p / 2) * 4 * bytes;
                    set(pair + (p % 2) * bytes, ink);
                    set(pair + 2 * bytes, half);
                    set(pair + 3 * bytes, half);
                    return;
                }
                for s in 0..spp {
                    let at = f * frame_len + (p * spp + s) * bytes;
                    let v = match chroma {
                        Some(c) if s > 0 => c,
                        _ => ink,
                    };
                    set(at, v);
                }
            });
        }
    }
    let vr = if bytes == 1 { VR::OB } else { VR::OW };
    put(&mut obj, 0x7FE0, 0x0010, vr, PrimitiveValue::from(px));
    obj.write_to_file(path).map_err(|e| invalid(e.to_string()))
}

/// Another photometric interpretation or pixel representation for a generated image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Look {
    /// From a MONOCHROME2 image: every value inverted (what was bright still displays bright).
    Monochrome1,
    /// From an unsigned MONOCHROME2 image: values shifted down by half the range, signed.
    Signed,
    /// From an RGB image (8-bit): YCbCr, full range.
    YbrFull,
    /// From an RGB image (8-bit): YCbCr with horizontal pairs sharing Cb and Cr.
    YbrFull422,
    /// From an 8-bit MONOCHROME2 image: the values become indexes into a warm palette whose
    /// last entry is the brightest and first the darkest.
    Palette,
}

fn ycbcr(r: f64, g: f64, b: f64) -> (f64, f64, f64) {
    (
        0.299 * r + 0.587 * g + 0.114 * b,
        128.0 - 0.168_736 * r - 0.331_264 * g + 0.5 * b,
        128.0 + 0.5 * r - 0.418_688 * g - 0.081_312 * b,
    )
}

fn byte(v: f64) -> u8 {
    v.round().clamp(0.0, 255.0) as u8
}

/// Rewrite the uncompressed image at `path` in another [`Look`].
pub fn restyle(path: &Path, look: Look) -> io::Result<()> {
    let mut obj = open_file(path).map_err(|e| invalid(e.to_string()))?;
    let bits = int(&obj, Tag(0x0028, 0x0100))?;
    let stored = int(&obj, Tag(0x0028, 0x0101))?;
    let pi = text(&obj, Tag(0x0028, 0x0004));
    let px = pixel_bytes(&obj)?;
    let cs = |v: &str| PrimitiveValue::from(v);
    let need = |want: &str, ok: bool| -> io::Result<()> {
        if ok {
            Ok(())
        } else {
            Err(invalid(format!(
                "{look:?} needs {want}, the image is {pi} {bits}-bit"
            )))
        }
    };
    match look {
        Look::Monochrome1 | Look::Signed => {
            need("MONOCHROME2", pi == "MONOCHROME2")?;
            let mask = (1u32 << stored) - 1;
            let half = 1i64 << (stored - 1);
            let map = |v: u32| -> u32 {
                match look {
                    Look::Monochrome1 => mask - (v & mask),
                    // Two's complement over the allocated bits.
                    _ => ((i64::from(v & mask) - half) & ((1i64 << bits) - 1)) as u32,
                }
            };
            let out: Vec<u8> = if bits == 8 {
                px.iter().map(|&v| map(u32::from(v)) as u8).collect()
            } else {
                px.chunks_exact(2)
                    .flat_map(|c| {
                        (map(u32::from(u16::from_le_bytes([c[0], c[1]]))) as u16).to_le_bytes()
                    })
                    .collect()
            };
            put(
                &mut obj,
                0x7FE0,
                0x0010,
                if bits == 8 { VR::OB } else { VR::OW },
                PrimitiveValue::from(out),
            );
            if look == Look::Monochrome1 {
                put(&mut obj, 0x0028, 0x0004, VR::CS, cs("MONOCHROME1"));
            } else {
                put(&mut obj, 0x0028, 0x0103, VR::US, PrimitiveValue::from(1u16));
            }
        }
        Look::YbrFull | Look::YbrFull422 => {
            need("8-bit RGB", pi == "RGB" && bits == 8)?;
            let cols = int(&obj, Tag(0x0028, 0x0011))? as usize;
            let mut out = Vec::with_capacity(px.len());
            if look == Look::YbrFull {
                for p in px.chunks_exact(3) {
                    let (y, cb, cr) = ycbcr(f64::from(p[0]), f64::from(p[1]), f64::from(p[2]));
                    out.extend_from_slice(&[byte(y), byte(cb), byte(cr)]);
                }
            } else {
                need("an even width", cols.is_multiple_of(2))?;
                for pair in px.chunks_exact(6) {
                    let (y1, cb1, cr1) =
                        ycbcr(f64::from(pair[0]), f64::from(pair[1]), f64::from(pair[2]));
                    let (y2, cb2, cr2) =
                        ycbcr(f64::from(pair[3]), f64::from(pair[4]), f64::from(pair[5]));
                    out.extend_from_slice(&[
                        byte(y1),
                        byte(y2),
                        byte((cb1 + cb2) / 2.0),
                        byte((cr1 + cr2) / 2.0),
                    ]);
                }
            }
            let name = if look == Look::YbrFull {
                "YBR_FULL"
            } else {
                "YBR_FULL_422"
            };
            put(&mut obj, 0x0028, 0x0004, VR::CS, cs(name));
            put(&mut obj, 0x7FE0, 0x0010, VR::OB, PrimitiveValue::from(out));
        }
        Look::Palette => {
            need("8-bit MONOCHROME2", pi == "MONOCHROME2" && bits == 8)?;
            let lut = |f: fn(u16) -> u16| -> Vec<u16> { (0..256u16).map(f).collect() };
            put(&mut obj, 0x0028, 0x0004, VR::CS, cs("PALETTE COLOR"));
            for (e, f) in [(0x1101u16, 0x1201u16), (0x1102, 0x1202), (0x1103, 0x1203)] {
                put(
                    &mut obj,
                    0x0028,
                    e,
                    VR::US,
                    PrimitiveValue::from([256u16, 0, 16]),
                );
                let data = match f {
                    0x1201 => lut(|i| i * 257),
                    0x1202 => lut(|i| i * 200),
                    _ => lut(|i| i * 120),
                };
                put(
                    &mut obj,
                    0x0028,
                    f,
                    VR::OW,
                    PrimitiveValue::U16(data.into()),
                );
            }
        }
    }
    obj.write_to_file(path).map_err(|e| invalid(e.to_string()))
}

/// Make the uncompressed single-frame image at `path` a cine of `frames` frames, each the
/// original moved `step` pixels further to the right (wrapping), as Ultrasound Multi-frame
/// Image Storage when it is an ultrasound image.
pub fn to_cine(path: &Path, frames: u32, step: u32) -> io::Result<()> {
    let mut obj = open_file(path).map_err(|e| invalid(e.to_string()))?;
    let (rows, cols) = (
        int(&obj, Tag(0x0028, 0x0010))? as usize,
        int(&obj, Tag(0x0028, 0x0011))? as usize,
    );
    let spp = int(&obj, Tag(0x0028, 0x0002))? as usize;
    let bytes = (int(&obj, Tag(0x0028, 0x0100))? / 8) as usize;
    let px = pixel_bytes(&obj)?;
    let pixel = spp * bytes;
    let frame = rows * cols * pixel;
    if px.len() < frame {
        return Err(invalid("pixel data shorter than the image".into()));
    }
    let mut out = Vec::with_capacity(frame * frames as usize);
    for f in 0..frames as usize {
        let shift = (f * step as usize) % cols;
        for y in 0..rows {
            for x in 0..cols {
                let from = (y * cols + (x + cols - shift) % cols) * pixel;
                out.extend_from_slice(&px[from..from + pixel]);
            }
        }
    }
    if out.len() % 2 == 1 {
        out.push(0);
    }
    put(
        &mut obj,
        0x0028,
        0x0008,
        VR::IS,
        PrimitiveValue::from(frames.to_string()),
    );
    put(
        &mut obj,
        0x0028,
        0x0009,
        VR::AT,
        PrimitiveValue::Tags(vec![Tag(0x0018, 0x1063)].into()),
    );
    put(
        &mut obj,
        0x0018,
        0x1063,
        VR::DS,
        PrimitiveValue::from("33.3"),
    );
    if text(&obj, Tag(0x0008, 0x0060)) == "US" {
        let class = "1.2.840.10008.5.1.4.1.1.3.1";
        put(
            &mut obj,
            0x0008,
            0x0016,
            VR::UI,
            PrimitiveValue::from(class),
        );
        obj.meta_mut().media_storage_sop_class_uid = class.to_string();
    }
    let vr = if bytes == 1 { VR::OB } else { VR::OW };
    put(&mut obj, 0x7FE0, 0x0010, vr, PrimitiveValue::from(out));
    obj.write_to_file(path).map_err(|e| invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corpus::{self, Modality, StudySpec};

    #[test]
    fn text_lands_in_its_box_in_every_frame_and_nowhere_else() {
        let tmp = tempfile::tempdir().unwrap();
        let mut spec = StudySpec::new(90, Modality::Us);
        spec.series = 1;
        spec.instances_per_series = 1;
        spec.rows = 48;
        spec.cols = 160;
        let f = corpus::write_study(&spec, tmp.path()).unwrap().remove(0);
        let before = pixel_bytes(&open_file(&f).unwrap()).unwrap();
        let burn = Burn {
            text: "01017012345".into(),
            x: 4,
            y: 6,
            scale: 2,
        };
        burn_text(&f, std::slice::from_ref(&burn)).unwrap();
        let after = pixel_bytes(&open_file(&f).unwrap()).unwrap();
        let (bx, by, bw, bh) = burn.rect();
        let mut ink = 0;
        for y in 0..48u32 {
            for x in 0..160u32 {
                let at = ((y * 160 + x) * 3) as usize;
                let inside = x >= bx && x < bx + bw && y >= by && y < by + bh;
                if after[at..at + 3] != before[at..at + 3] {
                    assert!(inside, "({x},{y}) changed outside the box");
                    assert_eq!(&after[at..at + 3], &[255, 255, 255]);
                    ink += 1;
                }
            }
        }
        assert!(ink > 100, "{ink} pixels of ink");
    }
}
