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

fn invalid(m: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, m)
}

/// Draw `burns` in the brightest value (white for MONOCHROME2 and RGB, the inverse for
/// MONOCHROME1) into every frame of the uncompressed image at `path`, rewriting it in place.
pub fn burn_text(path: &Path, burns: &[Burn]) -> io::Result<()> {
    let mut obj = open_file(path).map_err(|e| invalid(e.to_string()))?;
    let get = |tag: Tag| -> io::Result<u32> {
        obj.element(tag)
            .map_err(|e| invalid(e.to_string()))?
            .to_int::<u32>()
            .map_err(|e| invalid(e.to_string()))
    };
    let (rows, cols) = (get(Tag(0x0028, 0x0010))?, get(Tag(0x0028, 0x0011))?);
    let spp = get(Tag(0x0028, 0x0002))? as usize;
    let bits = get(Tag(0x0028, 0x0100))?;
    let stored = get(Tag(0x0028, 0x0101))?;
    let frames = obj
        .element(Tag(0x0028, 0x0008))
        .ok()
        .and_then(|e| e.to_str().ok().and_then(|s| s.trim().parse::<usize>().ok()))
        .unwrap_or(1);
    let mono1 = obj
        .element(Tag(0x0028, 0x0004))
        .ok()
        .and_then(|e| e.to_str().ok().map(|s| s.trim() == "MONOCHROME1"))
        .unwrap_or(false);
    let bytes = (bits / 8) as usize;
    let ink: u32 = if mono1 { 0 } else { (1u32 << stored) - 1 };
    let mut px = obj
        .element(Tag(0x7FE0, 0x0010))
        .map_err(|e| invalid(e.to_string()))?
        .to_bytes()
        .map_err(|e| invalid(e.to_string()))?
        .to_vec();
    let frame_len = rows as usize * cols as usize * spp * bytes;
    if px.len() < frame_len * frames {
        return Err(invalid("pixel data shorter than the image".into()));
    }
    for f in 0..frames {
        for b in burns {
            draw_text(&b.text, b.x, b.y, b.scale, |x, y| {
                if x >= cols || y >= rows {
                    return;
                }
                for s in 0..spp {
                    let at = f * frame_len
                        + ((y as usize * cols as usize + x as usize) * spp + s) * bytes;
                    if bytes == 1 {
                        px[at] = ink as u8;
                    } else {
                        px[at..at + 2].copy_from_slice(&(ink as u16).to_le_bytes());
                    }
                }
            });
        }
    }
    let vr = if bytes == 1 { VR::OB } else { VR::OW };
    obj.put(DataElement::new(
        Tag(0x7FE0, 0x0010),
        vr,
        PrimitiveValue::from(px),
    ));
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
        let before = open_file(&f)
            .unwrap()
            .element(Tag(0x7FE0, 0x0010))
            .unwrap()
            .to_bytes()
            .unwrap()
            .to_vec();
        let burn = Burn {
            text: "01017012345".into(),
            x: 4,
            y: 6,
            scale: 2,
        };
        burn_text(&f, std::slice::from_ref(&burn)).unwrap();
        let after = open_file(&f)
            .unwrap()
            .element(Tag(0x7FE0, 0x0010))
            .unwrap()
            .to_bytes()
            .unwrap()
            .to_vec();
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
