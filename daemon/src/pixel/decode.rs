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
    if let Some(colour) = jpeg_colour(obj, &ts, &declared_layout) {
        if colour != StreamColour::YCbCr {
            return decode_jpeg_rgb(obj, declared_layout, frames);
        }
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

/// JPEG processes (baseline, extended, lossless) whose decoder guesses the colour space of a
/// three-component stream from its markers.
const JPEG_PROCESSES: [&str; 4] = [
    "1.2.840.10008.1.2.4.50",
    JPEG_EXTENDED,
    "1.2.840.10008.1.2.4.57",
    "1.2.840.10008.1.2.4.70",
];

/// The colour space a JPEG stream itself states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamColour {
    /// Adobe APP14 with transform 0: the components are R, G, B.
    Rgb,
    /// Adobe APP14 with transform 1, or a JFIF APP0: YCbCr.
    YCbCr,
    /// Neither: the DICOM header decides.
    Unsaid,
}

/// For an 8-bit, three-sample RGB image in a JPEG process: what its first frame's stream
/// says about colour. `None` for every other image.
///
/// Photometric Interpretation RGB means the JPEG components are R, G and B (PS3.5 8.2.1: no
/// colour transform was applied), but jpeg-decoder (inside dicom-pixeldata) assumes YCbCr for
/// three components without an Adobe or JFIF marker unless the component IDs spell "RGB", and
/// converts: such an image comes out with wrong colours (a uniform magenta cast). Only a
/// stream that states YCbCr itself is converted.
fn jpeg_colour(
    obj: &FileDicomObject<InMemDicomObject>,
    ts: &str,
    declared: &Layout,
) -> Option<StreamColour> {
    if !JPEG_PROCESSES.contains(&ts)
        || declared.photometric != Photometric::Rgb
        || declared.samples_per_pixel != 3
        || declared.bits_allocated != 8
    {
        return None;
    }
    let e = obj.element(Tag(0x7FE0, 0x0010)).ok()?;
    let first = e.value().fragments()?.iter().find(|f| !f.is_empty())?;
    Some(stream_colour(first))
}

/// Read the markers before the first scan (bounded by the fragment).
fn stream_colour(jpeg: &[u8]) -> StreamColour {
    let mut jfif = false;
    let mut i = 2; // after SOI
    while i + 1 < jpeg.len() {
        if jpeg[i] != 0xFF {
            break;
        }
        let marker = jpeg[i + 1];
        if marker == 0xFF {
            i += 1; // fill byte
            continue;
        }
        if marker == 0xDA || marker == 0xD9 {
            break; // start of scan, end of image
        }
        if (0xD0..=0xD8).contains(&marker) || marker == 0x01 {
            i += 2; // no length
            continue;
        }
        let Some(len) = jpeg
            .get(i + 2..i + 4)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
        else {
            break;
        };
        let payload = jpeg
            .get(i + 4..(i + 2 + len).min(jpeg.len()))
            .unwrap_or(&[]);
        match marker {
            0xE0 if payload.starts_with(b"JFIF\0") => jfif = true,
            0xEE if payload.starts_with(b"Adobe") && payload.len() >= 12 => {
                return match payload[11] {
                    0 => StreamColour::Rgb,
                    _ => StreamColour::YCbCr,
                };
            }
            _ => {}
        }
        i += 2 + len;
    }
    if jfif {
        StreamColour::YCbCr
    } else {
        StreamColour::Unsaid
    }
}

/// Every frame of an RGB JPEG image decoded without a colour transform (see
/// [`jpeg_colour`]), with jpeg-decoder directly: frames follow each other in the fragments
/// (one or several fragments each), each starting at its SOI marker.
fn decode_jpeg_rgb(
    obj: &FileDicomObject<InMemDicomObject>,
    layout: Layout,
    frames: u32,
) -> Result<Decoded, DecodeError> {
    let layout = Layout {
        planar: 0,
        ..layout
    };
    let frame_bytes = layout.frame_bytes();
    let e = obj
        .element(Tag(0x7FE0, 0x0010))
        .map_err(|_| DecodeError::NoPixelData)?;
    let fragments = e
        .value()
        .fragments()
        .ok_or_else(|| DecodeError::Decoder("JPEG pixel data is not encapsulated".into()))?;
    let stream: Vec<u8> = fragments.iter().flatten().copied().collect();
    let mut data = Vec::with_capacity(frame_bytes * frames as usize);
    let mut at = 0usize;
    for i in 0..frames {
        let soi = stream
            .get(at..)
            .and_then(|rest| rest.windows(2).position(|w| w == [0xFF, 0xD8]))
            .ok_or_else(|| DecodeError::Decoder(format!("no JPEG stream for frame {i}")))?;
        let mut cursor = std::io::Cursor::new(&stream[at + soi..]);
        let (pixels, info) = contained(|| {
            let mut d = jpeg_decoder::Decoder::new(&mut cursor);
            d.set_color_transform(jpeg_decoder::ColorTransform::RGB);
            d.set_max_decoding_buffer_size(frame_bytes);
            let px = d.decode().map_err(|e| format!("JPEG frame {i}: {e}"))?;
            Ok((px, d.info()))
        })?;
        let fits = info.is_some_and(|f| {
            u32::from(f.width) == layout.columns && u32::from(f.height) == layout.rows
        });
        if !fits || pixels.len() != frame_bytes {
            return Err(DecodeError::Size {
                got: pixels.len(),
                want: frame_bytes,
            });
        }
        data.extend_from_slice(&pixels);
        at += soi + cursor.position() as usize;
    }
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
        // Compressed streams (RLE, JPEG baseline, JPEG-LS, JPEG 2000) that declare more
        // frames than the limit allows are refused before any decoder runs: the decoded size
        // comes from the attributes, not from the stream.
        for ts in [
            "1.2.840.10008.1.2.5",
            "1.2.840.10008.1.2.4.50",
            "1.2.840.10008.1.2.4.80",
            "1.2.840.10008.1.2.4.90",
        ] {
            let obj = image(ts, "MONOCHROME2", 8, 100_000, vec![0; 24]);
            assert!(
                matches!(decode(&obj, 1 << 20), Err(DecodeError::TooLarge { .. })),
                "{ts}"
            );
        }
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

    /// What a JPEG stream says about its colour space decides whether it is converted from
    /// YCbCr; without a marker the DICOM header's RGB means no conversion.
    #[test]
    fn jpeg_colour_markers() {
        let seg = |m: u8, payload: &[u8]| {
            let mut v = vec![0xFF, m];
            v.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
            v.extend_from_slice(payload);
            v
        };
        let stream = |segs: Vec<Vec<u8>>| {
            let mut v = vec![0xFF, 0xD8];
            for s in segs {
                v.extend(s);
            }
            v.extend([0xFF, 0xDA, 0, 2]);
            v
        };
        let dqt = seg(0xDB, &[0; 65]);
        let adobe = |t: u8| seg(0xEE, &[b'A', b'd', b'o', b'b', b'e', 0, 100, 0, 0, 0, 0, t]);
        assert_eq!(
            stream_colour(&stream(vec![dqt.clone()])),
            StreamColour::Unsaid
        );
        assert_eq!(
            stream_colour(&stream(vec![seg(0xE0, b"JFIF\0\x01\x01"), dqt.clone()])),
            StreamColour::YCbCr
        );
        assert_eq!(
            stream_colour(&stream(vec![adobe(0), dqt.clone()])),
            StreamColour::Rgb
        );
        assert_eq!(
            stream_colour(&stream(vec![adobe(1), dqt])),
            StreamColour::YCbCr
        );
        // A truncated segment ends the reading without a panic.
        assert_eq!(
            stream_colour(&[0xFF, 0xD8, 0xFF, 0xEE, 0x10]),
            StreamColour::Unsaid
        );
    }
}
