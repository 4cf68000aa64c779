//! Burned-in text on real images through `fiona deid` (issue 13), with default settings unless
//! said otherwise:
//!
//! * `deid-data`'s `ultrasounds/RGB_CINE` (a Terason shoulder ultrasound, 51 RGB frames): its
//!   name, MRN, age, birth date, institution and exam date are light grey (at most 220) in a
//!   grey band, where the old method (Tesseract on the brightest level) saw nothing. Every
//!   frame of the output must have no text ink left in the band, the parameter column and the
//!   label at the bottom.
//! * Presidio's samples with their ground-truth word boxes (`../shared/presidio-samples/`):
//!   every word box entirely black in the output (the CR by default; the CT, whose modality
//!   the defaults leave out, with `all_images`).
//! * A synthetic cine (`tests/real/cine_text.py`) with static and changing text: clean in
//!   every frame although the detector reads it once, on its frames combined.
//!
//! The files come from the venv `tests/run.sh` makes (`FIONA_TEST_PYTHON`) and the shared
//! folder; without them the test fails and says how to get them.

use fiona_tests::fiona_bin;
use std::path::{Path, PathBuf};
use std::process::Command;

use dicom_object::open_file;
use fiona::pixel::decode::{decode, Decoded};
use fiona::pixel::detect::{picture, picture_luma};
use fiona_tests::harness::{fiona_deid, venv_python};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// `RGB_CINE.dcm`, unzipped from deid-data into `dir`.
fn rgb_cine(dir: &Path) -> PathBuf {
    let out = Command::new(venv_python())
        .args([
            "-c",
            "import deid_data, os, sys, zipfile\n\
             z = os.path.join(os.path.dirname(deid_data.__file__), 'data', 'ultrasounds', 'RGB_CINE.zip')\n\
             zipfile.ZipFile(z).extractall(sys.argv[1])",
        ])
        .arg(dir)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let f = dir.join("RGB_CINE.dcm");
    assert!(f.is_file(), "RGB_CINE.zip holds RGB_CINE.dcm");
    f
}

fn decoded(f: &Path) -> Decoded {
    decode(&open_file(f).expect("open"), 1 << 32).expect("decode")
}

/// Grey or white text ink: bright and colourless (the band's text is light grey on grey,
/// the rest white on black; the blue depth ticks and magenta focus marks are not text).
fn ink(px: &[u8]) -> bool {
    let (max, min) = (px.iter().max().unwrap(), px.iter().min().unwrap());
    *min >= 120 && max - min <= 40
}

#[test]
fn rgb_cine_has_no_text_left_in_any_frame_with_default_settings() {
    let tmp = tempfile::tempdir().unwrap();
    let input = rgb_cine(tmp.path());
    let output = tmp.path().join("out.dcm");
    let r = fiona_deid(
        &fiona_bin!(),
        ("--data-dir", &tmp.path().join("data")),
        &input,
        &output,
    );
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let (before, after) = (decoded(&input), decoded(&output));
    let l = &before.layout;
    assert_eq!((l.columns, l.rows, before.frames), (1016, 672, 51));
    assert_eq!(after.frames, 51);
    // Where the text is (x0, y0, x1, y1, exclusive): the header band (name, MRN, age, birth
    // date, institution, date and time), the parameter column, the label at the bottom.
    let areas = [
        (100, 0, 1016, 52),
        (860, 60, 1016, 310),
        (160, 612, 545, 648),
    ];
    let fb = l.frame_bytes();
    let count = |d: &Decoded, f: usize, a: (u32, u32, u32, u32)| {
        let frame = &d.data[f * fb..(f + 1) * fb];
        let mut n = 0;
        for y in a.1..a.3 {
            for x in a.0..a.2 {
                let at = ((y * l.columns + x) * 3) as usize;
                if ink(&frame[at..at + 3]) {
                    n += 1;
                }
            }
        }
        n
    };
    for f in 0..51 {
        for a in areas {
            let was = count(&before, f, a);
            assert!(
                was > 200,
                "frame {f} area {a:?}: the input has text ({was})"
            );
            let left = count(&after, f, a);
            assert_eq!(
                left, 0,
                "frame {f} area {a:?}: {left} text pixels left of {was}"
            );
        }
    }
    // The image itself (the ultrasound) is not blanked: most of its bright pixels stay.
    let area = (160, 60, 700, 600);
    let bright = |d: &Decoded| {
        let mut n = 0;
        for y in area.1..area.3 {
            for x in area.0..area.2 {
                let at = ((y * l.columns + x) * 3) as usize;
                if d.data[at] > 40 {
                    n += 1;
                }
            }
        }
        n
    };
    let (b, a) = (bright(&before), bright(&after));
    assert!(
        a * 100 >= b * 95,
        "the ultrasound lost {} of {b} bright pixels",
        b - a
    );
}

#[test]
fn presidio_word_boxes_are_black() {
    let samples = repo().join("../shared/presidio-samples");
    assert!(
        samples.join("ground_truth.json").is_file(),
        "needs ../shared/presidio-samples"
    );
    let gt: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(samples.join("ground_truth.json")).unwrap())
            .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let all = tmp.path().join("all.toml");
    std::fs::write(
        &all,
        format!(
            "data_dir = \"{}\"\n[projects.PROJ1]\nparticipant_pattern = \"PROJ[0-9]{{3}}\"\n\
             events = [\"baseline\"]\napproval_start = \"2025-01-01\"\napproval_end = \"2099-12-31\"\n\
             [projects.PROJ1.pixel.ocr]\nall_images = true\n",
            tmp.path().join("data-all").display()
        ),
    )
    .unwrap();
    let cases = [
        (
            "0_ORIGINAL_compressed.dcm",
            "sample_data/0_ORIGINAL.dcm",
            false,
        ),
        ("2_ORIGINAL.dcm", "sample_data/2_ORIGINAL.dcm", true),
    ];
    for (file, key, all_images) in cases {
        let input = samples.join(file);
        let output = tmp.path().join(file);
        let location = if all_images {
            ("--config", all.as_path())
        } else {
            ("--data-dir", tmp.path())
        };
        let r = fiona_deid(&fiona_bin!(), location, &input, &output);
        assert!(
            r.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&r.stderr)
        );
        let after = decoded(&output);
        let l = &after.layout;
        let p = picture(&after.data[..l.frame_bytes()], l, None).unwrap();
        let boxes = gt[key].as_array().expect("boxes");
        assert!(boxes.len() >= 5);
        for b in boxes {
            // Presidio's boxes are in its picture padded by 25 pixels on every side.
            let at = |k: &str| b[k].as_u64().unwrap() as usize;
            let (x0, y0) = (at("left") - 25, at("top") - 25);
            let (x1, y1) = (x0 + at("width"), y0 + at("height"));
            let mut lit = 0;
            for y in y0..y1.min(p.height) {
                for x in x0..x1.min(p.width) {
                    if picture_luma(&p, x, y) > 0 {
                        lit += 1;
                    }
                }
            }
            assert_eq!(lit, 0, "{file}: word box {b} has {lit} pixels not black");
        }
    }
}

/// A cine is detected once, on its frames combined (per-pixel minimum and maximum), and
/// every frame checked: static text on a band, a light label over moving speckle, and a
/// frame counter and clock that change in every frame must all be black in every frame
/// (`tests/real/cine_text.py` makes the cine and checks the output against its ink masks).
#[test]
fn a_cine_with_static_and_changing_text_is_clean_in_every_frame() {
    let tmp = tempfile::tempdir().unwrap();
    let script = repo().join("tests/real/cine_text.py");
    let run = |args: &[&std::ffi::OsStr]| {
        Command::new(venv_python())
            .arg(&script)
            .args(args)
            .output()
            .expect("run python")
    };
    let made = run(&["make".as_ref(), tmp.path().as_os_str()]);
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let output = tmp.path().join("out.dcm");
    let r = fiona_deid(
        &fiona_bin!(),
        ("--data-dir", &tmp.path().join("data")),
        &tmp.path().join("cine.dcm"),
        &output,
    );
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let checked = run(&["check".as_ref(), tmp.path().as_os_str(), output.as_os_str()]);
    assert!(
        checked.status.success(),
        "{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
}
