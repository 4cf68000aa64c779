//! Decoding an instance's Pixel Data into native frames for masking, with the decoder's known
//! hazards contained (dicom-rs 0.10, found by fuzzing): a crafted RLE stream panics the
//! decoder, so decoding runs under `catch_unwind` and a panic becomes an error; sizes are
//! checked against the image attributes and a limit before anything is allocated; 12-bit JPEG
//! extended, which dicom-pixeldata cannot decode, is refused by name instead of being tried.
//!
//! The result is every frame in native little-endian samples with the [`Layout`] they follow.
//! Compressed colour images come out as RGB, pixel-interleaved (the decoder converts YBR), so
//! the layout's photometric interpretation may differ from the input's; the caller writes the
//! new value. Errors carry attribute names and numbers, never values from the data set's text.

use std::panic::{catch_unwind, AssertUnwindSafe};

use dicom_core::Tag;
use dicom_object::{FileDicomObject, InMemDicomObject};
use dicom_pixeldata::PixelDecoder;

use super::mask::{Layout, Photometric};

/// JPEG Extended (Process 2 & 4): 12-bit samples are not decodable by dicom-pixeldata 0.10.
pub const JPEG_EXTENDED: &str = "1.2.840.10008.1.2.4.51";

/// Decoded frames of one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub layout: Layout,
    pub frames: u32,
    /// `frames` frames of `layout.frame_bytes()` bytes each.
    pub data: Vec<u8>,
}

impl Decoded {
    /// One frame's bytes, mutable.
    pub fn frame_mut(&mut self, i: u32) -> &mut [u8] {
        let n = self.layout.frame_bytes();
        let at = i as usize * n;
        &mut self.data[at..at + n]
    }
}

/// Why Pixel Data could not be decoded. Such an instance is parked, never passed on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("no Pixel Data")]
    NoPixelData,
    #[error("image attribute {0} missing or invalid")]
    Attribute(&'static str),
    #[error("photometric interpretation not supported for scrubbing")]
    Photometric,
    #[error("12-bit JPEG Extended cannot be decoded (dicom-pixeldata 0.10)")]
    JpegExtended12Bit,
    #[error("decoded size {bytes} bytes is over the limit of {limit}")]
    TooLarge { bytes: u64, limit: u64 },
    #[error("the decoder failed: {0}")]
    Decoder(String),
    #[error("the decoder crashed (contained); the data is probably malformed")]
    Panicked,
    #[error("decoded {got} bytes, the image attributes need {want}")]
    Size { got: usize, want: usize },
    #[error("{0}")]
    Layout(String),
}

fn uint(obj: &InMemDicomObject, tag: Tag, name: &'static str) -> Result<u32, DecodeError> {
    obj.element(tag)
        .ok()
        .and_then(|e| e.to_int::<u32>().ok())
        .ok_or(DecodeError::Attribute(name))
}

fn text(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    obj.element(tag)
        .ok()
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim_end_matches([' ', '\0']).to_string())
}

/// The layout and frame count the header declares (before any decoding).
pub fn declared(obj: &InMemDicomObject) -> Result<(Layout, u32), DecodeError> {
    let rows = uint(obj, Tag(0x0028, 0x0010), "Rows")?;
    let columns = uint(obj, Tag(0x0028, 0x0011), "Columns")?;
    let spp = uint(obj, Tag(0x0028, 0x0002), "SamplesPerPixel")?;
    let bits_allocated = uint(obj, Tag(0x0028, 0x0100), "BitsAllocated")?;
    let bits_stored = uint(obj, Tag(0x0028, 0x0101), "BitsStored")?;
    let signed = uint(obj, Tag(0x0028, 0x0103), "PixelRepresentation")? == 1;
    let planar = match obj.element(Tag(0x0028, 0x0006)) {
        Ok(e) => e
            .to_int::<u32>()
            .map_err(|_| DecodeError::Attribute("PlanarConfiguration"))?,
        Err(_) => 0,
    };
    let frames = match obj.element(Tag(0x0028, 0x0008)) {
        Ok(e) => e
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .filter(|n| *n >= 1)
            .ok_or(DecodeError::Attribute("NumberOfFrames"))?,
        Err(_) => 1,
    };
    let photometric = text(obj, Tag(0x0028, 0x0004))
        .and_then(|p| Photometric::parse(&p))
        .ok_or(DecodeError::Photometric)?;
    let small = |v: u32, name| u16::try_from(v).map_err(|_| DecodeError::Attribute(name));
    Ok((
        Layout {
            rows,
            columns,
            samples_per_pixel: small(spp, "SamplesPerPixel")?,
            bits_allocated: small(bits_allocated, "BitsAllocated")?,
            bits_stored: small(bits_stored, "BitsStored")?,
            signed,
            photometric,
            planar: small(planar, "PlanarConfiguration")?,
        },
        frames,
    ))
}

/// Run a decoder call so that a panic inside it becomes [`DecodeError::Panicked`].
fn contained<T>(f: impl FnOnce() -> Result<T, String>) -> Result<T, DecodeError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Err(_) => Err(DecodeError::Panicked),
        Ok(Err(e)) => Err(DecodeError::Decoder(e)),
        Ok(Ok(v)) => Ok(v),
    }
}

/// Decode every frame. `limit` bounds the decoded size in bytes.
pub fn decode(obj: &FileDicomObject<InMemDicomObject>, limit: u64) -> Result<Decoded, DecodeError> {
    if obj.element(Tag(0x7FE0, 0x0010)).is_err() {
        return Err(DecodeError::NoPixelData);
    }
    let (declared_layout, frames) = declared(obj)?;
    declared_layout
        .check()
        .map_err(|e| DecodeError::Layout(e.to_string()))?;
    let ts = obj
        .meta()
        .transfer_syntax()
        .trim_end_matches('\0')
        .to_string();
    if ts == JPEG_EXTENDED && declared_layout.bits_stored > 8 {
        return Err(DecodeError::JpegExtended12Bit);
    }
    let want = declared_layout.frame_bytes() as u64 * u64::from(frames);
    // A decoder may turn 4:2:2 into full RGB: allow for the larger of the two.
    let bound = want.saturating_mul(2);
    if bound > limit {
        return Err(DecodeError::TooLarge { bytes: want, limit });
    }
    let (data, pi, planar) = contained(|| {
        obj.decode_pixel_data()
            .map(|d| {
                (
                    d.data().to_vec(),
                    d.photometric_interpretation().as_str().to_string(),
                    d.planar_configuration() as u16,
                )
            })
            .map_err(|e| e.to_string())
    })?;
    let photometric = Photometric::parse(&pi).ok_or(DecodeError::Photometric)?;
    let layout = Layout {
        photometric,
        planar,
        ..declared_layout
    };
    layout
        .check()
        .map_err(|e| DecodeError::Layout(e.to_string()))?;
    let need = layout.frame_bytes() * frames as usize;
    // Native Pixel Data may carry a trailing pad byte; fewer bytes than the frames need is
    // an error, never silently padded.
    if data.len() < need {
        return Err(DecodeError::Size {
            got: data.len(),
            want: need,
        });
    }
    let mut data = data;
    data.truncate(need);
    Ok(Decoded {
        layout,
        frames,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_core::value::PrimitiveValue;
    use dicom_core::{DataElement, VR};

    fn image(
        ts: &str,
        pi: &str,
        bits: u16,
        frames: u32,
        pixels: Vec<u8>,
    ) -> FileDicomObject<InMemDicomObject> {
        super::super::test_image::Image {
            ts,
            sop_class: "1.2.840.10008.5.1.4.1.1.7",
            photometric: pi,
            rows: 4,
            columns: 6,
            samples_per_pixel: 1,
            bits,
            signed: false,
            frames,
            pixels,
        }
        .build()
    }

    #[test]
    fn native_frames_decode_as_stored() {
        let px: Vec<u8> = (0..48).collect();
        let obj = image("1.2.840.10008.1.2.1", "MONOCHROME2", 8, 2, px.clone());
        let d = decode(&obj, 1 << 20).unwrap();
        assert_eq!(d.frames, 2);
        assert_eq!(d.layout.photometric, Photometric::Monochrome2);
        assert_eq!(d.data, px);
    }

    #[test]
    fn too_short_pixel_data_is_an_error_not_padding() {
        let obj = image("1.2.840.10008.1.2.1", "MONOCHROME2", 8, 2, vec![0; 30]);
        assert!(matches!(
            decode(&obj, 1 << 20),
            Err(DecodeError::Size { .. })
        ));
    }

    #[test]
    fn limits_and_known_hazards_are_refused_before_decoding() {
        let obj = image("1.2.840.10008.1.2.1", "MONOCHROME2", 8, 2, vec![0; 48]);
        assert!(matches!(
            decode(&obj, 50),
            Err(DecodeError::TooLarge { .. })
        ));
        let obj = image(JPEG_EXTENDED, "MONOCHROME2", 16, 1, vec![0; 48]);
        let mut obj = obj;
        obj.put(DataElement::new(
            Tag(0x0028, 0x0101),
            VR::US,
            PrimitiveValue::from(12u16),
        ));
        assert_eq!(decode(&obj, 1 << 20), Err(DecodeError::JpegExtended12Bit));
        let obj = image("1.2.840.10008.1.2.1", "YBR_ICT", 8, 1, vec![0; 24]);
        assert_eq!(decode(&obj, 1 << 20), Err(DecodeError::Photometric));
    }

    #[test]
    fn a_crafted_rle_stream_is_contained() {
        // An RLE header declaring 15 segments with offsets past the end: dicom-rs 0.10's
        // decoder is known to panic on streams like this; the panic must become an error.
        let mut bad = vec![0u8; 64];
        bad[0] = 15;
        for (i, b) in bad[4..64].chunks_mut(4).enumerate() {
            b.copy_from_slice(&(0xFFFF_FF00u32 - i as u32).to_le_bytes());
        }
        let mut obj = image("1.2.840.10008.1.2.5", "MONOCHROME2", 8, 1, vec![]);
        let seq = dicom_core::value::PixelFragmentSequence::new(vec![], vec![bad]);
        obj.put(DataElement::new(
            Tag(0x7FE0, 0x0010),
            VR::OB,
            dicom_core::DicomValue::PixelSequence(seq),
        ));
        // This stream is refused by the decoder with an error.
        assert!(matches!(
            decode(&obj, 1 << 20),
            Err(DecodeError::Decoder(_))
        ));
        // A decoder that panics is contained the same way decode() calls it.
        let r: Result<(), DecodeError> = contained(|| panic!("decoder bug"));
        assert_eq!(r, Err(DecodeError::Panicked));
    }
}
