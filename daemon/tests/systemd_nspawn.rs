//! Scenario: the shipped units under a real systemd. `os/tests/nspawn-unit.sh` boots a
//! Debian container (systemd-nspawn) with the binary Cargo built and the units of
//! `os/systemd/`, and checks that fiona starts sandboxed as its own user, answers C-ECHO and
//! C-STORE, keeps the login user in the audit trail, scrubs burned-in text with OCR inside
//! the same sandbox (an image made here), and that systemd's watchdog kills and restarts a
//! daemon made to hang (the test fault file), which then stays up. Then a signed bundle, made
//! on the host with minisign, age and `fiona bundle manifest|pack`, applies under the unit:
//! the daemon restarts in place on it (same MainPID, no restart by systemd, RELOADING=1 and
//! READY=1, no watchdog timeout), passes its trial selftest and serves it; an unsigned bundle
//! (inbox) and a tampered one (`fiona bundle apply`) are refused with serial 1 still running.
//! See the script's header for what it needs (root; the rootfs is made once from the Debian
//! archive and cached in ~/.cache/fiona-nspawn).

mod common;

use std::path::Path;

use common::boot_script::run_boot_script;
use dicom_object::open_file;
use fiona::pixel::decode::decode;
use fiona::pixel::mask::Photometric;
use fiona_tests::burned::{burn_text, sample_burns, Burn};
use fiona_tests::corpus::{self, Modality, StudySpec};

#[test]
fn units_boot_and_the_watchdog_restarts_a_hung_daemon() {
    let tmp = tempfile::tempdir().unwrap();
    let mut spec = StudySpec::new(7711, Modality::Ct);
    spec.series = 1;
    spec.instances_per_series = 1;
    spec.rows = 256;
    spec.cols = 256;
    let burned = corpus::write_study(&spec, tmp.path()).unwrap().remove(0);
    burn_text(&burned, &sample_burns()).unwrap();
    let scrubbed = tmp.path().join("scrubbed.dcm");

    run_boot_script(
        "nspawn-unit",
        &[
            ("FIONA_NSPAWN_OCR_INPUT", burned.as_path()),
            ("FIONA_NSPAWN_OCR_OUTPUT", scrubbed.as_path()),
        ],
    );
    // OCR really ran in the sandbox: every burned-in box is black in the output.
    let (ink, left) = text_pixels(&burned, &scrubbed);
    assert!(ink > 0, "the input has no text to find");
    assert_eq!(
        left, 0,
        "{left} pixels in the text boxes are not black after OCR"
    );
}

/// Pixels in the burned-in boxes that are not black: (in `input`, in `output`). The input
/// is MONOCHROME2 unsigned, whose black is all zero bytes.
fn text_pixels(input: &Path, output: &Path) -> (usize, usize) {
    let boxes: Vec<_> = sample_burns().iter().map(Burn::rect).collect();
    let count = |f: &Path| {
        let d = decode(&open_file(f).unwrap(), 1 << 30).unwrap();
        let l = &d.layout;
        assert!(
            l.photometric == Photometric::Monochrome2 && !l.signed,
            "{l:?}"
        );
        let px = l.frame_bytes() / (l.rows * l.columns) as usize;
        let mut n = 0;
        for &(bx, by, bw, bh) in &boxes {
            for y in by..by + bh {
                for x in bx..bx + bw {
                    let at = (y * l.columns + x) as usize * px;
                    n += usize::from(d.data[at..at + px].iter().any(|&b| b != 0));
                }
            }
        }
        n
    };
    (count(input), count(output))
}
