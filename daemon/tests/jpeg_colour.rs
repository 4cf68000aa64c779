//! JPEG colour follows the JPEG and DICOM headers (issue 12, item 3): real files from
//! pydicom's test set, decoded by fiona's pixel stage (the path scrubbing and transcoding
//! use), agree with pydicom + pylibjpeg sample for sample within JPEG's rounding.
//!
//! `SC_jpeg_no_color_transform.dcm` (Photometric Interpretation RGB, no Adobe or JFIF marker)
//! came out uniformly magenta when the decoder converted it from YCbCr; the others state
//! their colour space in the stream or the header and must stay right.

use std::path::PathBuf;
use std::process::Command;

use dicom_object::open_file;
use fiona::pixel::decode::decode;
use fiona_tests::harness::venv_python;

/// pydicom's path for a test file and its decoded samples (8-bit, interleaved; pydicom 3
/// converts YBR JPEG to RGB, as fiona's decoder does).
fn reference(py: &PathBuf, name: &str, out: &std::path::Path) -> PathBuf {
    let code = format!(
        "import sys, pydicom, numpy\n\
         from pydicom.data import get_testdata_file\n\
         p = get_testdata_file({name:?})\n\
         ds = pydicom.dcmread(p)\n\
         a = ds.pixel_array\n\
         open(sys.argv[1], 'wb').write(numpy.ascontiguousarray(a, dtype=numpy.uint8).tobytes())\n\
         print(p)\n"
    );
    let o = Command::new(py)
        .args(["-c", &code])
        .arg(out)
        .output()
        .expect("run python");
    assert!(
        o.status.success(),
        "pydicom: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&o.stdout).trim())
}

#[test]
fn jpeg_colour_agrees_with_pydicom() {
    let py = venv_python();
    let tmp = tempfile::tempdir().unwrap();
    for name in [
        "SC_jpeg_no_color_transform.dcm",
        "SC_jpeg_no_color_transform_2.dcm",
        "SC_rgb_jpeg_dcmtk.dcm",
        "SC_rgb_jpeg_app14_dcmd.dcm",
    ] {
        let raw = tmp.path().join("ref.raw");
        let path = reference(&py, name, &raw);
        let want = std::fs::read(&raw).unwrap();
        let obj = open_file(&path).unwrap();
        let got = decode(&obj, 1 << 30).unwrap();
        assert_eq!(got.data.len(), want.len(), "{name}: size");
        let diff: u64 = got
            .data
            .iter()
            .zip(&want)
            .map(|(a, b)| u64::from(a.abs_diff(*b)))
            .sum();
        let mean = diff as f64 / want.len() as f64;
        // Decoders differ by rounding (IDCT, upsampling): a sample or two, not a colour cast.
        assert!(mean < 2.0, "{name}: mean difference {mean:.2} per sample");
    }
}
