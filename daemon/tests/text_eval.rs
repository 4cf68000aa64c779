//! The burned-in text evaluation (issue 13) as a test: `tests/real/text_eval.py` builds its
//! set (40 real frames with text in DejaVu/Liberation fonts at known ink masks, Presidio's
//! samples with their ground-truth boxes, a text-free set: see that script), `fiona deid`
//! reads every image (`all_images`) with the default method, and the scorer (an independent
//! reader: the `tesseract` program at several thresholds and both polarities) judges the
//! output.
//!
//! The targets (99.5 % of boxes fully blanked) are not met yet: the floor asserted
//! here is what the method reaches today (`docs/BENCHMARKS.md`, "Burned-in text on real
//! images"), so a change that loses recall, lets the reader find a planted token, parks an
//! image or blanks more of a text-free one fails. Raise the floor as the method improves.

use std::path::{Path, PathBuf};
use std::process::Command;

use fiona_tests::harness::venv_python;

/// Boxes fully blanked, at least (of 98 in the set seed 13 makes): today's 94 less one, a
/// ratchet (the target is 99.5 %).
const MIN_BOX_RECALL: f64 = 0.94;
/// Pixels blanked on a text-free image, on average, at most: the target is 1 %;
/// today 0.08 %, so a regression shows long before the target is broken.
const MAX_CLEAN_BLANKED: f64 = 0.003;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn script() -> PathBuf {
    repo().join("tests/real/text_eval.py")
}

#[test]
fn burned_in_text_on_real_images_is_blanked_and_text_free_images_are_left_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let set = tmp.path().join("set");
    let made = Command::new(venv_python())
        .arg(script())
        .args([
            "make",
            set.to_str().unwrap(),
            "--texts",
            "40",
            "--seed",
            "13",
        ])
        .output()
        .expect("run text_eval.py make");
    assert!(
        made.status.success(),
        "text_eval.py make failed (tests/run.sh installs its packages): {}",
        String::from_utf8_lossy(&made.stderr)
    );
    let config = tmp.path().join("eval.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n\
             [projects.TEXTEVAL]\n\
             participant_pattern = \"^P[0-9]+$\"\n\
             events = [\"e\"]\n\
             approval_start = \"2026-01-01\"\n\
             approval_end = \"2030-12-31\"\n\
             [projects.TEXTEVAL.pixel.ocr]\n\
             all_images = true\n",
            tmp.path().join("data")
        ),
    )
    .unwrap();
    let report = tmp.path().join("report.json");
    let out = tmp.path().join("out");
    // A parked image fails the run (and is counted by the scorer): the status alone says
    // nothing here.
    let deid = Command::new(env!("CARGO_BIN_EXE_fiona"))
        .args([
            "deid",
            "--project",
            "TEXTEVAL",
            "--participant",
            "P1",
            "--event",
            "e",
        ])
        .arg("--config")
        .arg(&config)
        .arg("--report")
        .arg(&report)
        .arg(set.join("input"))
        .arg(&out)
        .output()
        .expect("run fiona deid");
    assert!(
        report.exists(),
        "fiona deid wrote no report: {}",
        String::from_utf8_lossy(&deid.stderr)
    );
    let score = tmp.path().join("score.json");
    let scored = Command::new(venv_python())
        .arg(script())
        .arg("score")
        .arg(set.join("truth.json"))
        .arg(&report)
        .arg("--input")
        .arg(set.join("input"))
        .arg("--json")
        .arg(&score)
        .output()
        .expect("run text_eval.py score");
    let text = String::from_utf8_lossy(&scored.stdout).to_string();
    assert!(
        scored.status.success(),
        "text_eval.py score failed: {}{}",
        text,
        String::from_utf8_lossy(&scored.stderr)
    );
    let s: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&score).unwrap()).expect("score JSON");
    let s = &s["summary"];
    let recall = s["box_recall"].as_f64().expect("box_recall");
    let clean = s["clean_blanked_mean"]
        .as_f64()
        .expect("clean_blanked_mean");
    let empty = |k: &str| s[k].as_array().map(Vec::is_empty) == Some(true);
    assert!(
        recall >= MIN_BOX_RECALL,
        "boxes fully blanked {recall:.3} < {MIN_BOX_RECALL}:\n{text}"
    );
    assert!(
        empty("images_leaking"),
        "the reader reads planted text:\n{text}"
    );
    assert!(empty("text_images_parked"), "text images parked:\n{text}");
    assert!(empty("clean_parked"), "text-free images parked:\n{text}");
    assert!(
        clean <= MAX_CLEAN_BLANKED,
        "text-free images {:.2} % blanked on average:\n{text}",
        clean * 100.0
    );
    // The set is what it says: text images, boxes, a text-free part.
    assert!(s["boxes"].as_u64().unwrap_or(0) >= 90, "{text}");
    assert!(s["clean_images"].as_u64().unwrap_or(0) >= 20, "{text}");
}
