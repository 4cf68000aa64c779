//! OCR scrubbing through `fiona deid`, on generated images with text burned into known boxes
//! (a name, an 11-digit national ID number, a date, and a word laid over the anatomy), for
//! every photometric interpretation (MONOCHROME1/2, RGB, YBR_FULL, YBR_FULL_422, PALETTE
//! COLOR), 8 and 16 bits, signed and unsigned, several transfer syntaxes (native, RLE, JPEG
//! lossless, JPEG baseline, JPEG-LS, JPEG 2000) and a multi-frame cine. After scrubbing every
//! box is black in every frame, pixels away from the boxes are unchanged, the output is
//! Explicit VR Little Endian with BurnedInAnnotation NO (and the lossy history kept), and
//! nothing was written to the temporary directory.

use fiona_tests::fiona_bin;
use std::path::{Path, PathBuf};
use std::process::Command;

use dicom_core::Tag;
use dicom_object::open_file;
use fiona::pixel::decode::{decode, Decoded};
use fiona_tests::burned::{burn_text, restyle, sample_burns, to_cine, Burn, Look};
use fiona_tests::corpus::{self, Modality, StudySpec, Variant};
use fiona_tests::harness::{fiona_deid_command, require_tool};

const ROWS: u16 = 256;
const COLS: u16 = 256;
/// How far from a text box a changed pixel may be: the margin, and the detector's box
/// being larger than the ink (DBNet marks a text line's shrunk core and grows it back by its
/// unclip distance, a few pixels more than the glyphs on each side).
const SLACK: u32 = 12;

fn burns() -> Vec<Burn> {
    sample_burns()
}

fn generated(dir: &Path, n: u32, m: Modality) -> PathBuf {
    let mut spec = StudySpec::new(n, m);
    spec.series = 1;
    spec.instances_per_series = 1;
    spec.rows = ROWS;
    spec.cols = COLS;
    std::fs::create_dir_all(dir).unwrap();
    corpus::write_study(&spec, dir).unwrap().remove(0)
}

fn gdcm_j2k(input: &Path, output: &Path) {
    let st = Command::new("gdcmconv")
        .arg("--j2k")
        .arg(input)
        .arg(output)
        .status()
        .unwrap();
    assert!(st.success(), "gdcmconv --j2k failed");
}

/// How an input is made: modality, look, codec, frames.
struct Case {
    name: &'static str,
    modality: Modality,
    look: Option<Look>,
    variant: Option<Variant>,
    j2k: bool,
    frames: u32,
}

fn case(
    name: &'static str,
    modality: Modality,
    look: Option<Look>,
    variant: Option<Variant>,
) -> Case {
    Case {
        name,
        modality,
        look,
        variant,
        j2k: false,
        frames: 1,
    }
}

fn cases() -> Vec<Case> {
    use Look::*;
    use Modality::*;
    vec![
        case("CT 16-bit MONOCHROME2", Ct, None, None),
        case("CT 16-bit signed", Ct, Some(Signed), None),
        case("CT 16-bit MONOCHROME1", Ct, Some(Monochrome1), None),
        case("CT 16-bit RLE", Ct, None, Some(Variant::Rle)),
        case("CT 16-bit JPEG-LS", Ct, None, Some(Variant::JpegLs)),
        Case {
            j2k: true,
            ..case("CT 16-bit JPEG 2000", Ct, None, None)
        },
        case("SC 8-bit MONOCHROME2", Sc, None, None),
        case("SC 8-bit MONOCHROME1", Sc, Some(Monochrome1), None),
        case(
            "SC 8-bit JPEG lossless",
            Sc,
            None,
            Some(Variant::JpegLossless),
        ),
        case(
            "SC 8-bit JPEG baseline",
            Sc,
            None,
            Some(Variant::JpegBaseline),
        ),
        case("SC PALETTE COLOR", Sc, Some(Palette), None),
        case(
            "SC PALETTE COLOR RLE",
            Sc,
            Some(Palette),
            Some(Variant::Rle),
        ),
        case("US RGB", Us, None, None),
        case("US RGB RLE", Us, None, Some(Variant::Rle)),
        case(
            "US RGB JPEG baseline (YBR_FULL_422)",
            Us,
            None,
            Some(Variant::JpegBaseline),
        ),
        case("US YBR_FULL", Us, Some(YbrFull), None),
        case("US YBR_FULL_422", Us, Some(YbrFull422), None),
        Case {
            frames: 6,
            ..case("US RGB cine, 6 frames", Us, None, None)
        },
        Case {
            frames: 6,
            ..case("US RGB cine, 6 frames, RLE", Us, None, Some(Variant::Rle))
        },
    ]
}

/// The input file for a case: generated, restyled, made a cine, text burned into every
/// frame, then encoded.
fn make(dir: &Path, n: u32, c: &Case) -> PathBuf {
    let d = dir.join(format!("case{n}"));
    let f = generated(&d, 500 + n, c.modality);
    if let Some(look) = c.look {
        restyle(&f, look).unwrap();
    }
    if c.frames > 1 {
        to_cine(&f, c.frames, 9).unwrap();
    }
    burn_text(&f, &burns()).unwrap();
    if c.j2k {
        let out = d.join("j2k.dcm");
        gdcm_j2k(&f, &out);
        return out;
    }
    match c.variant {
        Some(v) => {
            let out = d.join("encoded.dcm");
            corpus::transcode(&f, &out, v).unwrap();
            out
        }
        None => f,
    }
}

fn decoded(f: &Path) -> Decoded {
    decode(&open_file(f).unwrap(), 1 << 30).unwrap()
}

fn text(f: &Path, tag: Tag) -> String {
    open_file(f)
        .unwrap()
        .element(tag)
        .ok()
        .and_then(|e| e.to_str().ok().map(|s| s.trim().to_string()))
        .unwrap_or_default()
}

/// The bytes of one black pixel for a decoded image, written out per photometric
/// interpretation (the standard's meaning, not the stage's code).
fn black(d: &Decoded) -> Vec<u8> {
    use fiona::pixel::mask::Photometric::*;
    let l = &d.layout;
    let stored = u32::from(l.bits_stored);
    let samples: Vec<u32> = match (&l.photometric, l.signed) {
        (Monochrome2, false) => vec![0],
        (Monochrome2, true) => vec![((1u32 << 16) - (1 << (stored - 1))) & 0xFFFF],
        (Monochrome1, false) => vec![(1 << stored) - 1],
        (Monochrome1, true) => vec![(1 << (stored - 1)) - 1],
        (Rgb, _) => vec![0, 0, 0],
        (YbrFull, _) | (YbrFull422, _) => vec![0, 128, 128],
        // The test palettes' darkest entry is index 0.
        (PaletteColor, _) => vec![0],
    };
    let bytes = usize::from(l.bits_allocated / 8);
    samples
        .iter()
        .flat_map(|v| v.to_le_bytes()[..bytes].to_vec())
        .collect()
}

/// Along a line, further: the detector's box is grown by twice its own height left and right
/// (its height is at most the text's and twice the unclip distance, about two text heights:
/// five text heights is the bound).
fn near(x: u32, y: u32, rects: &[(u32, u32, u32, u32)]) -> bool {
    rects.iter().any(|&(bx, by, bw, bh)| {
        let along = SLACK + 5 * bh;
        x + along >= bx && x < bx + bw + along && y + SLACK >= by && y < by + bh + SLACK
    })
}

/// Check one scrubbed output against its input; a message for every problem.
fn check(name: &str, input: &Path, output: &Path, frames: u32) -> Vec<String> {
    let mut problems = Vec::new();
    let before = decoded(input);
    let after = decoded(output);
    if after.frames != frames {
        problems.push(format!("{name}: {} frames out of {frames}", after.frames));
        return problems;
    }
    let l = &after.layout;
    let (cols, rows) = (l.columns, l.rows);
    if l.planar != 0 || l.frame_bytes() != before.layout.frame_bytes() {
        problems.push(format!(
            "{name}: layout changed beyond the photometric: {l:?}"
        ));
        return problems;
    }
    let ybr422 = l.photometric == fiona::pixel::mask::Photometric::YbrFull422;
    let px = if ybr422 {
        3
    } else {
        l.frame_bytes() / (rows * cols) as usize
    };
    // One pixel's samples (for YBR_FULL_422: its Y and its pair's Cb and Cr).
    let pixel = |frame: &[u8], x: u32, y: u32| -> Vec<u8> {
        let p = (y * cols + x) as usize;
        if ybr422 {
            let pair = (p / 2) * 4;
            vec![frame[pair + p % 2], frame[pair + 2], frame[pair + 3]]
        } else {
            frame[p * px..(p + 1) * px].to_vec()
        }
    };
    let black = black(&after);
    let rects: Vec<_> = burns().iter().map(Burn::rect).collect();
    let fb = l.frame_bytes();
    for f in 0..frames as usize {
        let (a, b) = (
            &after.data[f * fb..(f + 1) * fb],
            &before.data[f * fb..(f + 1) * fb],
        );
        let mut not_black = 0;
        let mut changed_away = 0;
        let mut where_ = (u32::MAX, u32::MAX, 0, 0);
        for y in 0..rows {
            for x in 0..cols {
                let inside = rects
                    .iter()
                    .any(|&(bx, by, bw, bh)| x >= bx && x < bx + bw && y >= by && y < by + bh);
                let here = pixel(a, x, y);
                if inside && here != black {
                    not_black += 1;
                }
                if !near(x, y, &rects) && here != pixel(b, x, y) {
                    changed_away += 1;
                    where_ = (
                        where_.0.min(x),
                        where_.1.min(y),
                        where_.2.max(x),
                        where_.3.max(y),
                    );
                }
            }
        }
        if not_black > 0 {
            problems.push(format!(
                "{name}: frame {f}: {not_black} pixels in text boxes not black"
            ));
        }
        if changed_away > 0 {
            problems.push(format!(
                "{name}: frame {f}: {changed_away} pixels changed away from the text boxes, within {where_:?}"
            ));
        }
    }
    let ts = corpus::transfer_syntax_uid(output).unwrap();
    if ts != "1.2.840.10008.1.2.1" {
        problems.push(format!("{name}: output transfer syntax {ts}"));
    }
    if text(output, Tag(0x0028, 0x0301)) != "NO" {
        problems.push(format!("{name}: BurnedInAnnotation is not NO"));
    }
    let lossy_in = text(input, Tag(0x0028, 0x2110)) == "01"
        || corpus::transfer_syntax_uid(input).unwrap() == "1.2.840.10008.1.2.4.50";
    if lossy_in && text(output, Tag(0x0028, 0x2110)) != "01" {
        problems.push(format!("{name}: lossy history lost"));
    }
    problems
}

fn config(dir: &Path, pixel: &str) -> PathBuf {
    let cfg = dir.join("fiona.toml");
    std::fs::write(
        &cfg,
        format!(
            "data_dir = \"{}\"\n[projects.PROJ1]\nparticipant_pattern = \"PROJ[0-9]{{3}}\"\n\
             events = [\"baseline\"]\napproval_start = \"2025-01-01\"\napproval_end = \"2099-12-31\"\n{pixel}",
            dir.join("data").display()
        ),
    )
    .unwrap();
    cfg
}

fn deid(cfg: &Path, input: &Path, output: &Path, tmpdir: &Path) -> std::process::Output {
    fiona_deid_command(&fiona_bin!(), ("--config", cfg), input, output)
        .env("TMPDIR", tmpdir)
        .output()
        .unwrap()
}

#[test]
fn burned_in_text_is_blanked_in_every_image_type_and_frame() {
    for t in ["dcmcrle", "dcmcjpeg", "dcmcjpls", "gdcmconv"] {
        require_tool(t);
    }
    let tmp = tempfile::tempdir().unwrap();
    // Every image read, whatever its type: the test is about how well, not which.
    let cfg = config(
        tmp.path(),
        "[projects.PROJ1.pixel.ocr]\nall_images = true\n",
    );
    let scratch = tmp.path().join("tmpdir");
    std::fs::create_dir_all(&scratch).unwrap();
    let mut problems = Vec::new();
    for (n, c) in cases().iter().enumerate() {
        let input = make(tmp.path(), n as u32, c);
        let output = tmp.path().join(format!("out{n}.dcm"));
        let r = deid(&cfg, &input, &output, &scratch);
        if !r.status.success() {
            problems.push(format!(
                "{}: fiona deid failed: {}",
                c.name,
                String::from_utf8_lossy(&r.stderr)
            ));
            continue;
        }
        problems.extend(check(c.name, &input, &output, c.frames));
    }
    assert!(
        std::fs::read_dir(&scratch).unwrap().next().is_none(),
        "something was written to TMPDIR"
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn default_settings_read_what_usually_carries_text() {
    require_tool("dcmodify");
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), "");
    let scratch = tmp.path().join("tmpdir");
    std::fs::create_dir_all(&scratch).unwrap();
    let made = |n: u32, m: Modality| {
        let f = generated(&tmp.path().join(format!("d{n}")), 600 + n, m);
        burn_text(&f, &burns()).unwrap();
        f
    };
    // Ultrasound and secondary capture: read, scrubbed.
    for (n, m) in [(0, Modality::Us), (1, Modality::Sc)] {
        let f = made(n, m);
        let out = tmp.path().join(format!("d{n}.dcm"));
        let r = deid(&cfg, &f, &out, &scratch);
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        let p = check(&format!("{m:?}"), &f, &out, 1);
        assert!(p.is_empty(), "{}", p.join("\n"));
    }
    // A CT image is not read by default: its pixel data is copied unchanged...
    let ct = made(2, Modality::Ct);
    let out = tmp.path().join("ct.dcm");
    assert!(deid(&cfg, &ct, &out, &scratch).status.success());
    assert!(decoded(&ct).data == decoded(&out).data, "CT was changed");
    // ... unless it says it carries burned-in annotation.
    let st = Command::new("dcmodify")
        .args(["-nb", "-i", "(0028,0301)=YES"])
        .arg(&ct)
        .status()
        .unwrap();
    assert!(st.success());
    let r = deid(&cfg, &ct, &out, &scratch);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let p = check("CT with BurnedInAnnotation YES", &ct, &out, 1);
    assert!(p.is_empty(), "{}", p.join("\n"));
}

#[test]
fn known_regions_and_ocr_run_together() {
    require_tool("dcmodify");
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), "");
    let scratch = tmp.path().join("tmpdir");
    std::fs::create_dir_all(&scratch).unwrap();
    // A GE LOGIQ9 ultrasound image: the library blanks its top 40 rows; OCR finds the rest.
    let f = generated(&tmp.path().join("logiq"), 650, Modality::Us);
    burn_text(&f, &burns()).unwrap();
    let st = Command::new("dcmodify")
        .args(["-nb", "-i", "(0008,1090)=LOGIQ9"])
        .arg(&f)
        .status()
        .unwrap();
    assert!(st.success());
    let out = tmp.path().join("logiq.dcm");
    let r = deid(&cfg, &f, &out, &scratch);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let (before, after) = (decoded(&f), decoded(&out));
    let cols = after.layout.columns;
    let rects: Vec<_> = burns().iter().map(Burn::rect).collect();
    for y in 0..after.layout.rows {
        for x in 0..cols {
            let at = ((y * cols + x) * 3) as usize;
            let px = &after.data[at..at + 3];
            let in_text = rects
                .iter()
                .any(|&(bx, by, bw, bh)| x >= bx && x < bx + bw && y >= by && y < by + bh);
            if y < 40 || in_text {
                assert_eq!(px, &[0, 0, 0], "({x},{y}) not black");
            } else if !near(x, y, &rects) {
                assert_eq!(px, &before.data[at..at + 3], "({x},{y}) changed");
            }
        }
    }
    // The text below the region (the ID's lower rows, the date, the name over the image)
    // was OCR's: some of it lies outside the signature's rectangle.
    assert!(rects.iter().any(|r| r.1 + r.3 > 40));
}
