//! Scenario: `fiona deid` over a generated corpus (CT, MR, US, SC; several transfer syntaxes
//! including encapsulated ones). Every file gets an output named by its new SOP Instance UID;
//! no identifying value of the input survives; dciodvfy finds no error the inputs did not
//! have; pixel data is copied byte for byte; a second run gives the same identifiers; a file
//! that is not DICOM fails with a reason and a non-zero exit, without stopping the others.

use fiona_tests::fiona_bin;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use fiona::header::Checker;
use fiona_tests::corpus::{self, Modality, StudySpec, Variant};
use fiona_tests::harness::{fiona_deid, require_tool};

fn deid(data: &Path, input: &Path, output: &Path) -> std::process::Output {
    fiona_deid(&fiona_bin!(), ("--data-dir", data), input, output)
}

/// The Pixel Data element's bytes of a file (found by fiona's own scanner).
fn pixel_bytes(p: &Path) -> Vec<u8> {
    let (ts, mut ds) = corpus::dataset_bytes(p).unwrap();
    if ts == corpus::TS_DEFLATED_EXPLICIT_VR_LE {
        use std::io::Read;
        let mut inflated = Vec::new();
        flate2::read::DeflateDecoder::new(&ds[..])
            .read_to_end(&mut inflated)
            .unwrap();
        ds = inflated;
        let mut c = Checker::new(corpus::TS_EXPLICIT_VR_LE).unwrap();
        c.feed(&ds).unwrap();
        let (s, e) = c.finish().unwrap().pixel_data.expect("pixel data");
        return ds[s as usize..e as usize].to_vec();
    }
    let mut c = Checker::new(&ts).unwrap();
    c.feed(&ds).unwrap();
    let f = c.finish().unwrap();
    let (s, e) = f.pixel_data.expect("pixel data");
    ds[s as usize..e as usize].to_vec()
}

fn dciodvfy_errors(p: &Path) -> BTreeSet<String> {
    let out = Command::new("dciodvfy").arg(p).output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    text.lines()
        .filter(|l| l.starts_with("Error"))
        .map(String::from)
        .collect()
}

fn dump(p: &Path) -> String {
    let out = Command::new("dcmdump").arg(p).output().unwrap();
    assert!(out.status.success(), "dcmdump {}", p.display());
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn deid_corpus_removes_identity_keeps_pixels_and_validity() {
    require_tool("dcmdump");
    require_tool("dciodvfy");
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    let mut files = Vec::new();
    let mut specs = Vec::new();
    for (n, m) in Modality::ALL.into_iter().enumerate() {
        let spec = StudySpec::new(300 + n as u32, m);
        let d = input.join(format!("s{n}"));
        std::fs::create_dir_all(&d).unwrap();
        files.extend(corpus::write_study(&spec, &d).unwrap());
        specs.push(spec);
    }
    for (k, v) in Variant::ALL.into_iter().enumerate() {
        let m = if v.supports_bits_allocated(16) {
            Modality::Ct
        } else {
            Modality::Sc
        };
        let spec = StudySpec::new(400 + k as u32, m);
        let src = tmp.path().join(format!("src{k}"));
        let d = input.join(format!("v{k}"));
        std::fs::create_dir_all(&src).unwrap();
        std::fs::create_dir_all(&d).unwrap();
        for f in corpus::write_study(&spec, &src).unwrap() {
            let o = d.join(f.file_name().unwrap());
            corpus::transcode(&f, &o, v).unwrap();
            files.push(o);
        }
        specs.push(spec);
    }

    let data = tmp.path().join("data");
    let out_dir = tmp.path().join("out");
    let out = deid(&data, &input, &out_dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("{} de-identified, 0 failed", files.len())),
        "{stdout}"
    );
    let outputs: Vec<PathBuf> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(outputs.len(), files.len());

    // No identifying value of any input survives in any output.
    let mut planted: Vec<String> = Vec::new();
    for s in &specs {
        planted.push(s.patient_id.clone());
        planted.push(s.accession.clone());
        planted.push(s.study_uid.clone());
        planted.extend(
            s.patient_name
                .split('^')
                .filter(|p| p.len() > 2)
                .map(String::from),
        );
    }
    let input_errors: BTreeSet<String> = files.iter().flat_map(|f| dciodvfy_errors(f)).collect();
    for o in &outputs {
        let name = o.file_name().unwrap().to_string_lossy().to_string();
        assert!(
            name.starts_with("2.25.") && name.ends_with(".dcm"),
            "{name}"
        );
        let text = dump(o);
        for p in &planted {
            assert!(
                !text.contains(p.as_str()),
                "{p} survived in {name}:\n{text}"
            );
        }
        assert!(text.contains("PROJ001"));
        assert!(text.contains("(0012,0062) CS [YES]"));
        let new_errors: Vec<String> = dciodvfy_errors(o)
            .difference(&input_errors)
            .cloned()
            .collect();
        assert!(new_errors.is_empty(), "{name}: {new_errors:?}");
    }

    // References stay consistent: the outputs of one input study share one new Study
    // Instance UID, and each series one new Series Instance UID (files were processed in
    // parallel, in no particular order).
    let uid_of = |text: &str, tag: &str| -> String {
        text.lines()
            .find(|l| l.starts_with(tag))
            .and_then(|l| l.split('[').nth(1))
            .and_then(|l| l.split(']').next())
            .unwrap_or_default()
            .to_string()
    };
    let mut studies = BTreeSet::new();
    let mut series = BTreeSet::new();
    for o in &outputs {
        let text = dump(o);
        studies.insert(uid_of(&text, "(0020,000d)"));
        series.insert(uid_of(&text, "(0020,000e)"));
    }
    assert_eq!(
        studies.len(),
        specs.len(),
        "one new study UID per input study"
    );
    let input_series: usize = specs.iter().map(|s| s.series as usize).sum();
    assert_eq!(
        series.len(),
        input_series,
        "one new series UID per input series"
    );

    // Pixel data byte for byte: the multiset of pixel elements is unchanged (the deflated
    // input comes out as explicit VR little endian, with the same pixel element).
    let count = |ps: &[PathBuf]| -> BTreeMap<Vec<u8>, usize> {
        let mut m = BTreeMap::new();
        for p in ps {
            *m.entry(pixel_bytes(p)).or_default() += 1;
        }
        m
    };
    assert!(count(&files) == count(&outputs), "pixel data changed");

    // Deterministic: a second run gives the same new SOP Instance UIDs.
    let out2 = tmp.path().join("out2");
    assert!(deid(&data, &input, &out2).status.success());
    let names = |d: &Path| -> BTreeSet<String> {
        std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    assert_eq!(names(&out_dir), names(&out2));

    // Bad input: a non-DICOM file and a truncated file fail with reasons; the rest is done.
    let bad_in = tmp.path().join("bad");
    std::fs::create_dir_all(&bad_in).unwrap();
    std::fs::write(bad_in.join("notes.txt"), "not dicom").unwrap();
    std::fs::copy(&files[0], bad_in.join("good.dcm")).unwrap();
    let bytes = std::fs::read(&files[1]).unwrap();
    std::fs::write(bad_in.join("truncated.dcm"), &bytes[..bytes.len() - 100]).unwrap();
    let out = deid(&data, &bad_in, &tmp.path().join("out3"));
    assert!(!out.status.success(), "failures give a non-zero exit");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("notes.txt") && err.contains("not a DICOM Part-10 file"),
        "{err}"
    );
    assert!(
        err.contains("truncated.dcm") && err.contains("does not parse"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_dir(tmp.path().join("out3")).unwrap().count(),
        1,
        "only the good file has an output, no partial one"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 de-identified, 2 failed"));
}

/// Project settings from the configuration file: legacy UIDs, dates kept, descriptors
/// cleaned; and an invalid setting refused with the field named.
#[test]
fn project_settings_from_config() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = StudySpec::new(77, Modality::Mr);
    let input = tmp.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    let files = corpus::write_study(&spec, &input).unwrap();
    let cfg = tmp.path().join("fiona.toml");
    std::fs::write(
        &cfg,
        format!(
            "data_dir = \"{}\"\n[projects.PROJ1]\nparticipant_pattern = \"PROJ[0-9]{{3}}\"\nevents = [\"baseline\"]\napproval_start = \"2025-01-01\"\napproval_end = \"2099-12-31\"\n[projects.PROJ1.deid]\nuid_mode = \"legacy\"\ndates = {{ policy = \"keep\" }}\n\
             [projects.PROJ1.deid.options]\nclean_descriptors = true\n",
            tmp.path().join("data").display()
        ),
    )
    .unwrap();
    let out_dir = tmp.path().join("out");
    let out = fiona_deid(&fiona_bin!(), ("--config", &cfg), &input, &out_dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let original = dump(&files[0]);
    let study_date = original
        .lines()
        .find(|l| l.starts_with("(0008,0020)"))
        .unwrap()
        .to_string();
    for e in std::fs::read_dir(&out_dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        assert!(
            name.starts_with("1.3.6.1.4.1.45037."),
            "legacy UIDs: {name}"
        );
        let text = dump(&p);
        assert!(text.contains(&study_date), "dates kept");
        assert!(
            text.contains("(0008,103e) LO ["),
            "series description kept, cleaned"
        );
        assert!(text.contains("113105"), "Clean Descriptors Option code");
        assert!(text.contains("113106"), "Full Dates Option code");
    }
    // Invalid settings: refused, field named, nothing written.
    std::fs::write(&cfg, "[projects.PROJ1]\nparticipant_pattern = \"PROJ[0-9]{3}\"\nevents = [\"baseline\"]\napproval_start = \"2025-01-01\"\napproval_end = \"2099-12-31\"\n[projects.PROJ1.deid]\nsecret = \"xyz\"\n").unwrap();
    let out = fiona_deid(
        &fiona_bin!(),
        ("--config", &cfg),
        &input,
        &tmp.path().join("out-bad"),
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("deid.secret"));
    assert!(!tmp.path().join("out-bad").exists());
}

/// `--report` says what became of every input file: the output of each good one (as written),
/// the reason for one that failed, and the text boxes the pixel stage blanked.
#[test]
fn the_report_names_every_input_and_what_became_of_it() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    let files = corpus::write_study(&StudySpec::new(77, Modality::Us), &input).unwrap();
    fiona_tests::burned::burn_text(&files[0], &fiona_tests::burned::sample_burns()).unwrap();
    let bad = input.join("not-dicom.dcm");
    std::fs::write(&bad, b"not a DICOM file at all").unwrap();
    let out = tmp.path().join("out");
    let report = tmp.path().join("report.json");
    let r = fiona_tests::harness::fiona_deid_command(
        &fiona_bin!(),
        ("--data-dir", &tmp.path().join("data")),
        &input,
        &out,
    )
    .arg("--report")
    .arg(&report)
    .output()
    .unwrap();
    assert!(!r.status.success(), "a failed file makes the run fail");
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).expect("report written")).unwrap();
    let entries = v["files"].as_array().unwrap();
    assert_eq!(entries.len(), files.len() + 1);
    for e in entries {
        let inp = PathBuf::from(e["input"].as_str().unwrap());
        if inp == bad {
            assert_eq!(e["result"], "failed");
            assert!(e["output"].is_null());
            assert!(!e["reason"].as_str().unwrap().is_empty());
            continue;
        }
        assert_eq!(e["result"], "ok", "{e}");
        let o = PathBuf::from(e["output"].as_str().unwrap());
        assert!(o.starts_with(&out) && o.is_file(), "{e}");
        if inp == files[0] {
            assert!(
                e["ocr_words"].as_u64().unwrap() > 0,
                "burned text blanked: {e}"
            );
        } else {
            assert_eq!(e["ocr_words"], 0, "{e}");
        }
    }
}
