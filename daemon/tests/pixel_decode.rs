//! The pixel stage's decoding and known-region masking on real encoder output: synthetic CT
//! (16-bit, 12 stored), US (RGB) and SC (8-bit) images, each transcoded by DCMTK (implicit and
//! explicit big-endian, deflate, JPEG lossless, JPEG baseline, JPEG-LS, RLE) and by GDCM
//! (JPEG 2000 lossless), multi-frame. Every lossless variant must decode to exactly the
//! original samples; after scrubbing, the rectangle is black in every frame and everything
//! else is unchanged.

use std::path::{Path, PathBuf};
use std::process::Command;

use dicom_core::Tag;
use dicom_object::{open_file, FileDicomObject, InMemDicomObject};
use fiona::pixel::decode::decode;
use fiona::pixel::scrub::{scrub_known_regions, EXPLICIT_VR_LE};
use fiona::pixel::signatures::Library;
use fiona_tests::corpus::{self, Modality, StudySpec, Variant};
use fiona_tests::harness::require_tool;

const LIB: &str = r#"
format = 1
library_version = "test"
[[signature]]
name = "every test image"
regions = [[4, 2, 10, 5]]
when = { attr = "PatientID", starts_with = "FIONATEST" }
"#;

/// The test images, uncompressed: one CT (16-bit), US (RGB) and SC (8-bit) instance, and a
/// 3-frame 16-bit multi-frame.
fn originals(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    for m in [Modality::Ct, Modality::Us, Modality::Sc] {
        let mut spec = StudySpec::new(77, m);
        spec.series = 1;
        spec.instances_per_series = 1;
        spec.rows = 24;
        spec.cols = 32;
        let d = dir.join(m.code());
        std::fs::create_dir_all(&d).unwrap();
        out.push((
            m.code().to_string(),
            corpus::write_study(&spec, &d).unwrap().remove(0),
        ));
    }
    let mut spec = StudySpec::new(78, Modality::Sc);
    spec.rows = 24;
    spec.cols = 32;
    let d = dir.join("multiframe");
    std::fs::create_dir_all(&d).unwrap();
    let (mf, _) = corpus::write_large_multiframe_for(&spec, &d, 3).unwrap();
    out.push(("3-frame".to_string(), mf));
    out
}

fn gdcm_j2k(input: &Path, output: &Path) {
    let st = Command::new("gdcmconv")
        .args(["--j2k", "--lossless"])
        .arg(input)
        .arg(output)
        .status()
        .unwrap();
    assert!(st.success(), "gdcmconv --j2k failed");
}

struct Frames {
    data: Vec<u8>,
    cols: usize,
    rows: usize,
    /// Bytes per pixel.
    px: usize,
    frames: usize,
    /// The bytes of one black pixel.
    black: Vec<u8>,
}

fn frames(obj: &FileDicomObject<InMemDicomObject>) -> Frames {
    let d = decode(obj, 1 << 30).unwrap();
    let l = &d.layout;
    let bytes = usize::from(l.bits_allocated / 8);
    let black = l
        .black(None)
        .iter()
        .flat_map(|v| v.to_le_bytes()[..bytes].to_vec())
        .collect();
    Frames {
        cols: l.columns as usize,
        rows: l.rows as usize,
        px: l.frame_bytes() / (l.rows as usize * l.columns as usize),
        frames: d.frames as usize,
        black,
        data: d.data,
    }
}

fn obj_ts(f: &Path) -> String {
    corpus::transfer_syntax_uid(f).unwrap_or_default()
}

#[test]
fn every_codec_decodes_and_scrubs_every_frame() {
    for tool in ["dcmconv", "dcmcjpeg", "dcmcjpls", "dcmcrle", "gdcmconv"] {
        require_tool(tool);
    }
    let lib = Library::parse(LIB).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    for (label, src) in originals(tmp.path()) {
        let reference = frames(&open_file(&src).unwrap());
        let bits = reference.px * 8 / if label == "US" { 3 } else { 1 };
        let mut variants: Vec<(String, PathBuf, bool)> =
            vec![("explicit LE".into(), src.clone(), true)];
        for v in Variant::ALL {
            if !v.supports_bits_allocated(bits as u16) {
                continue;
            }
            let out = src.with_file_name(format!("{v:?}.dcm"));
            corpus::transcode(&src, &out, v).unwrap();
            variants.push((format!("{v:?}"), out, !v.is_lossy()));
        }
        let j2k = src.with_file_name("j2k.dcm");
        gdcm_j2k(&src, &j2k);
        variants.push(("JPEG 2000".into(), j2k, true));

        // 7 DCMTK variants (6 for 16-bit: no JPEG baseline), JPEG 2000 and the original.
        assert!(variants.len() >= 8, "{label}: {} variants", variants.len());
        for (name, file, lossless) in variants {
            let what = format!("{label} {name}");
            eprintln!("{what}: {}", obj_ts(&file));
            let mut obj = open_file(&file).unwrap();
            let before = frames(&obj);
            assert_eq!(
                (before.cols, before.rows, before.px, before.frames),
                (
                    reference.cols,
                    reference.rows,
                    reference.px,
                    reference.frames
                ),
                "{what}: geometry"
            );
            if lossless {
                assert!(
                    before.data == reference.data,
                    "{what}: decoded samples differ from the original"
                );
            }
            let s = scrub_known_regions(&mut obj, &lib, 1 << 30)
                .unwrap_or_else(|e| panic!("{what}: {e}"))
                .unwrap_or_else(|| panic!("{what}: no signature matched"));
            assert_eq!(s.frames as usize, before.frames, "{what}");
            assert_eq!(s.pixels_masked, before.frames as u64 * 50, "{what}");
            assert_eq!(
                obj.meta().transfer_syntax().trim_end_matches('\0'),
                EXPLICIT_VR_LE
            );
            assert_eq!(
                obj.element(Tag(0x0028, 0x0301))
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .trim(),
                "NO"
            );
            let after = frames(&obj);
            let p = before.px;
            for fr in 0..before.frames {
                for y in 0..before.rows {
                    for x in 0..before.cols {
                        let at = ((fr * before.rows + y) * before.cols + x) * p;
                        let inside = (4..14).contains(&x) && (2..7).contains(&y);
                        let want = if inside {
                            &after.black[..]
                        } else {
                            &before.data[at..at + p]
                        };
                        assert_eq!(
                            &after.data[at..at + p],
                            want,
                            "{what}: frame {fr} ({x},{y}) inside={inside}"
                        );
                    }
                }
            }
        }
    }
}
