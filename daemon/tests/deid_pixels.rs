//! `fiona deid` runs the pixel stage: an ultrasound image from a model the default signature
//! library knows (GE LOGIQ9: the top 40 rows carry the patient's name) comes out with those
//! rows black and every other pixel unchanged, as Explicit VR Little Endian; an image whose
//! pixel data cannot be decoded gets no output and a reason; an image no signature matches
//! keeps its pixel data byte for byte.

use fiona_tests::fiona_bin;
use std::path::{Path, PathBuf};
use std::process::Command;

use dicom_core::Tag;
use dicom_object::open_file;
use fiona::pixel::decode::decode;
use fiona_tests::corpus::{self, Modality, StudySpec};
use fiona_tests::harness::{fiona_deid, require_tool};

fn us_image(dir: &Path, n: u32) -> PathBuf {
    let mut spec = StudySpec::new(n, Modality::Us);
    spec.series = 1;
    spec.instances_per_series = 1;
    spec.rows = 64;
    spec.cols = 96;
    std::fs::create_dir_all(dir).unwrap();
    corpus::write_study(&spec, dir).unwrap().remove(0)
}

fn dcmodify(file: &Path, edit: &str) {
    let st = Command::new("dcmodify")
        .args(["-nb", "-i", edit])
        .arg(file)
        .status()
        .unwrap();
    assert!(st.success(), "dcmodify {edit}");
}

fn decoded(file: &Path) -> (Vec<u8>, usize, usize) {
    let d = decode(&open_file(file).unwrap(), 1 << 30).unwrap();
    let (rows, cols) = (d.layout.rows as usize, d.layout.columns as usize);
    (d.data, rows, cols)
}

/// A project with OCR switched off: these tests are about the known regions alone (OCR has
/// its own, `deid_ocr.rs`).
fn known_regions_only(tmp: &Path) -> PathBuf {
    let cfg = tmp.join("regions-only.toml");
    std::fs::write(
        &cfg,
        format!(
            "data_dir = \"{}\"\n[projects.PROJ1]\nparticipant_pattern = \"PROJ[0-9]{{3}}\"\n\
             events = [\"baseline\"]\napproval_start = \"2025-01-01\"\napproval_end = \"2099-12-31\"\n\
             [projects.PROJ1.pixel.ocr]\nenabled = false\n",
            tmp.join("data").display()
        ),
    )
    .unwrap();
    cfg
}

#[test]
fn known_regions_are_blanked_by_fiona_deid() {
    require_tool("dcmodify");
    let tmp = tempfile::tempdir().unwrap();
    let cfg = known_regions_only(tmp.path());

    // A LOGIQ9 image: the library blanks [0, 0, 640, 40], clipped to 96 x 64.
    let logiq = us_image(&tmp.path().join("logiq"), 1);
    dcmodify(&logiq, "(0008,1090)=LOGIQ9");
    let (before, rows, cols) = decoded(&logiq);
    let out = tmp.path().join("logiq-out.dcm");
    let r = fiona_deid(&fiona_bin!(), ("--config", &cfg), &logiq, &out);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let obj = open_file(&out).unwrap();
    assert_eq!(
        obj.meta().transfer_syntax().trim_end_matches('\0'),
        "1.2.840.10008.1.2.1"
    );
    assert_eq!(
        obj.element(Tag(0x0028, 0x0301))
            .unwrap()
            .to_str()
            .unwrap()
            .trim(),
        "NO"
    );
    let (after, r2, c2) = decoded(&out);
    assert_eq!((r2, c2), (rows, cols));
    for y in 0..rows {
        for x in 0..cols {
            let at = (y * cols + x) * 3;
            if y < 40 {
                assert_eq!(&after[at..at + 3], &[0, 0, 0], "({x},{y}) not black");
            } else {
                assert_eq!(&after[at..at + 3], &before[at..at + 3], "({x},{y}) changed");
            }
        }
    }

    // Pixel data that does not fit the image attributes: no output, the reason given.
    let broken = us_image(&tmp.path().join("broken"), 2);
    dcmodify(&broken, "(0008,1090)=LOGIQ9");
    dcmodify(&broken, "(0028,0010)=200");
    let out = tmp.path().join("broken-out.dcm");
    let r = fiona_deid(&fiona_bin!(), ("--config", &cfg), &broken, &out);
    assert!(!r.status.success());
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(err.contains("pixel data cannot be scrubbed"), "{err}");
    assert!(!out.exists());

    // No signature matches: the pixel data is copied through unchanged, in its syntax.
    let plain = us_image(&tmp.path().join("plain"), 3);
    let (ts_in, _) = corpus::dataset_bytes(&plain).unwrap();
    let out = tmp.path().join("plain-out.dcm");
    let r = fiona_deid(&fiona_bin!(), ("--config", &cfg), &plain, &out);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let px = |f: &Path| {
        open_file(f)
            .unwrap()
            .element(Tag(0x7FE0, 0x0010))
            .unwrap()
            .to_bytes()
            .unwrap()
            .to_vec()
    };
    assert_eq!(px(&plain), px(&out));
    assert_eq!(corpus::transfer_syntax_uid(&out).unwrap(), ts_in);
}

#[test]
fn project_settings_drop_secondary_captures_and_exclude_series() {
    require_tool("dcmodify");
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let cfg = tmp.path().join("fiona.toml");
    std::fs::write(
        &cfg,
        format!(
            "data_dir = \"{}\"\n[projects.PROJ1]\nparticipant_pattern = \"PROJ[0-9]{{3}}\"\n\
             events = [\"baseline\"]\napproval_start = \"2025-01-01\"\napproval_end = \"2099-12-31\"\n\
             [projects.PROJ1.pixel]\ndrop_secondary_capture = true\nexclude_series = [\"(?i)^loop\"]\n",
            data.display()
        ),
    )
    .unwrap();
    let input = tmp.path().join("in");
    // A secondary capture: dropped, no output, not a failure.
    let mut sc = StudySpec::new(5, Modality::Sc);
    sc.series = 1;
    sc.instances_per_series = 1;
    sc.rows = 16;
    sc.cols = 16;
    std::fs::create_dir_all(input.join("sc")).unwrap();
    corpus::write_study(&sc, &input.join("sc")).unwrap();
    // A LOGIQ9 image in an excluded series: copied through, not scrubbed.
    let logiq = us_image(&input.join("us"), 6);
    dcmodify(&logiq, "(0008,1090)=LOGIQ9");
    dcmodify(&logiq, "(0008,103E)=Loop 3");
    let out = tmp.path().join("out");
    let r = fiona_deid(&fiona_bin!(), ("--config", &cfg), &input, &out);
    let stdout = String::from_utf8_lossy(&r.stdout);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(
        stdout.contains("1 de-identified, 0 failed, 1 dropped by the project's settings"),
        "{stdout}"
    );
    let outputs: Vec<PathBuf> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(outputs.len(), 1);
    assert_eq!(
        corpus::transfer_syntax_uid(&outputs[0]).unwrap(),
        corpus::transfer_syntax_uid(&logiq).unwrap()
    );
    let (before, ..) = decoded(&logiq);
    let (after, ..) = decoded(&outputs[0]);
    assert!(before == after, "an excluded series is not scrubbed");

    // Bad settings are refused at start, naming the field.
    std::fs::write(
        &cfg,
        "[projects.PROJ1]\nparticipant_pattern = \"PROJ[0-9]{3}\"\nevents = [\"baseline\"]\n\
         approval_start = \"2025-01-01\"\napproval_end = \"2099-12-31\"\n\
         [projects.PROJ1.pixel]\nlibrary = \"/nonexistent/signatures.toml\"\n",
    )
    .unwrap();
    let r = fiona_deid(
        &fiona_bin!(),
        ("--config", &cfg),
        &input,
        &tmp.path().join("out2"),
    );
    assert!(!r.status.success());
    assert!(String::from_utf8_lossy(&r.stderr).contains("pixel.library"));
}
