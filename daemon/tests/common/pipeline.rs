//! Helpers shared by the pipeline scenario tests (`pipeline_*.rs`): the project, the
//! corpus with burned-in text, a daemon forwarding to a research PACS (Orthanc, DCMTK or a
//! pynetdicom PACS that refuses duplicates), and waiting for a transfer's state. Each test
//! file uses what its scenario needs.
#![allow(dead_code, unused_imports)]

pub use fiona_tests::fiona_bin;
pub use std::path::{Path, PathBuf};
pub use std::process::Command;
pub use std::time::{Duration, Instant};

pub use dicom_core::Tag;
pub use dicom_object::open_file;
pub use fiona::pixel::decode::decode;
pub use fiona_tests::burned::{burn_text, sample_burns, Burn};
pub use fiona_tests::corpus::{self, Modality, StudySpec};
pub use fiona_tests::harness::{
    dcmqrscp, free_port, require_tool, storescu, Daemon, KillOnDrop, Options,
};
pub use fiona_tests::orthanc::{Orthanc, Settings};
pub use serde_json::Value;

pub const PROJECT: &str = r#"
[projects.PROJ1]
participant_pattern = "PROJ1-[0-9]{4}"
events = ["baseline"]
approval_start = "2025-01-01"
approval_end = "2099-12-31"
"#;

/// An Orthanc filter that makes the PACS slow (a busy loop per instance), so that an
/// association is still running when a test interrupts it.
pub const SLOW_PACS: &str = "function ReceivedInstanceFilter(dicom, origin, info)\n\
    local x = 0\n for i = 1, 3000000 do x = x + i end\n return true\nend\n";

pub fn burns() -> Vec<Burn> {
    sample_burns()
}

/// A study of `series` x `per_series` instances, written under `dir`.
pub fn write(
    dir: &Path,
    n: u32,
    m: Modality,
    series: u32,
    per_series: u32,
    size: u16,
) -> (StudySpec, Vec<PathBuf>) {
    let mut spec = StudySpec::new(n, m);
    spec.series = series;
    spec.instances_per_series = per_series;
    spec.rows = size;
    spec.cols = size;
    std::fs::create_dir_all(dir).unwrap();
    let files = corpus::write_study(&spec, dir).unwrap();
    (spec, files)
}

/// A de-identified file: no clinical identifier in its bytes, the research study and the
/// pseudonym in its header.
pub fn check_deidentified(path: &Path, spec: &StudySpec, research_uid: &str, participant: &str) {
    let bytes = std::fs::read(path).unwrap();
    for secret in [
        spec.patient_id.as_bytes(),
        spec.accession.as_bytes(),
        spec.study_uid.as_bytes(),
    ] {
        assert!(
            !contains(&bytes, secret),
            "{} keeps a clinical identifier",
            path.display()
        );
    }
    let obj = open_file(path).unwrap();
    let text = |tag| header_text(&obj, tag);
    assert_eq!(text(Tag(0x0020, 0x000D)), research_uid);
    assert_eq!(text(Tag(0x0010, 0x0020)), participant);
}

/// fiona with project PROJ1 forwarding to `[destinations.research]` (its settings after
/// host and port in `extra`), a study sent to it and assigned to `participant`.
pub fn forwarding(
    tmp: &Path,
    port: u16,
    extra: &str,
    study: (u32, Modality, u32, u32),
    participant: &str,
) -> (Daemon, StudySpec) {
    let d = Daemon::start(
        &fiona_bin!(),
        &tmp.join("data"),
        &Options {
            extra_toml: format!(
                "{}destinations = [\"research\"]\n\n[destinations.research]\nhost = \"127.0.0.1\"\n\
                 port = {port}\nae_title = \"RESEARCH\"\n{extra}",
                PROJECT.trim_start()
            ),
            quiet_period_secs: 1,
            ..Options::default()
        },
    );
    let (n, m, series, per) = study;
    let (spec, files) = write(&tmp.join("in"), n, m, series, per, 32);
    d.store_ok(&files);
    d.assign(&spec.accession, "PROJ1", participant, "baseline");
    (d, spec)
}

pub fn header_text(obj: &dicom_object::DefaultDicomObject, tag: Tag) -> String {
    obj.element(tag)
        .unwrap()
        .to_str()
        .unwrap()
        .trim_end_matches(['\0', ' '])
        .to_string()
}

pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Orthanc as the research PACS on `port` (plain DICOM), with a Lua script.
pub fn orthanc(tmp: &Path, port: u16, lua: &str) -> Orthanc {
    Orthanc::start(
        &tmp.join("orthanc"),
        port,
        "RESEARCH",
        Settings {
            lua: Some(lua),
            ..Settings::default()
        },
    )
}

/// Orthanc with `lua` as the research PACS, fiona forwarding to it (`extra` destination
/// settings) with a study assigned.
pub fn to_orthanc(
    tmp: &Path,
    lua: &str,
    extra: &str,
    study: (u32, Modality, u32, u32),
    participant: &str,
) -> (Orthanc, Daemon) {
    let port = free_port();
    let pacs = orthanc(tmp, port, lua);
    let (d, _) = forwarding(tmp, port, extra, study, participant);
    (pacs, d)
}

pub fn finished(t: &Value) -> bool {
    t["state"] == "verified" || t["state"] == "failed"
}

/// A research PACS (pynetdicom, `tests/real/dup_pacs.py`) that answers 0x0111 to an instance
/// it holds already, slowed to `delay_ms` per instance, in `dir`.
pub fn dup_pacs(dir: &Path, port: u16, delay_ms: u32) -> KillOnDrop {
    let python = fiona_tests::harness::venv_python();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/real/dup_pacs.py");
    let child = Command::new(python)
        .arg(script)
        .arg(port.to_string())
        .arg("RESEARCH")
        .arg(dir)
        .args(["--delay-ms", &delay_ms.to_string()])
        .spawn()
        .expect("start dup_pacs.py");
    let guard = KillOnDrop(child);
    let start = Instant::now();
    while !dir.join("ready").exists() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "dup_pacs.py did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    fiona_tests::harness::wait_until_listening(port, "dup_pacs.py");
    guard
}

pub fn lines(p: &Path) -> usize {
    std::fs::read_to_string(p).map_or(0, |s| s.lines().count())
}
