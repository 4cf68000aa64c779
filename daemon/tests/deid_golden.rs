//! Golden test: `fiona deid` with a fixed project secret on deterministic synthetic inputs
//! gives exactly the expected output, compared as a readable `dcmdump` of each output file
//! (`daemon/tests/golden/*.txt`). After an intended change, regenerate with
//! `FIONA_BLESS=1 cargo test -p fiona --test deid_golden` and review the diff.

use std::path::{Path, PathBuf};
use std::process::Command;

use fiona_tests::corpus::{self, Modality, StudySpec};
use fiona_tests::harness::require_tool;

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_fiona"))
}

const SECRET: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn check(name: &str, input: &Path, data: &Path, out: &Path) {
    let status = Command::new(bin())
        .args([
            "deid",
            "--project",
            "PROJ",
            "--participant",
            "PROJ001",
            "--event",
            "baseline",
            "--data-dir",
        ])
        .arg(data)
        .arg(input)
        .arg(out)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let dump = Command::new("dcmdump").arg(out).output().unwrap();
    assert!(dump.status.success());
    let text = String::from_utf8_lossy(&dump.stdout).to_string();
    let golden = golden_dir().join(format!("{name}.txt"));
    if std::env::var_os("FIONA_BLESS").is_some() {
        std::fs::write(&golden, &text).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&golden).unwrap_or_else(|_| {
        panic!(
            "no golden file {}; run with FIONA_BLESS=1",
            golden.display()
        )
    });
    assert!(
        text == expected,
        "{name}: output differs from {}\n--- got ---\n{text}",
        golden.display()
    );
}

#[test]
fn default_profile_golden_dumps() {
    require_tool("dcmdump");
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(data.join("secrets")).unwrap();
    std::fs::write(data.join("secrets/PROJ.key"), format!("{SECRET}\n")).unwrap();
    for (name, m) in [
        ("ct_default", Modality::Ct),
        ("sc_default", Modality::Sc),
        ("us_default", Modality::Us),
    ] {
        let mut spec = StudySpec::new(7, m);
        spec.series = 1;
        spec.instances_per_series = 1;
        spec.rows = 8;
        spec.cols = 8;
        let d = tmp.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        let f = corpus::write_study(&spec, &d).unwrap().remove(0);
        check(name, &f, &data, &tmp.path().join(format!("{name}.dcm")));
    }
}
