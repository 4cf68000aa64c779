//! Scenario: DCMTK `echoscu` and `storescu` send a synthetic corpus (CT/MR/US/SC in every
//! transfer syntax DCMTK makes here) to the real daemon on 127.0.0.1. Every instance is
//! indexed once, every stored data set is byte-identical to what was sent, counts per study
//! and series are right, and a re-send changes nothing.

use fiona_tests::fiona_bin;
use std::collections::BTreeMap;
use std::path::PathBuf;

use fiona_tests::corpus::{self, Modality, StudySpec, Variant};
use fiona_tests::harness::{echoscu, stored_files, storescu, Daemon, Options};

/// (file, transfer syntax) of a study and its transcoded variants.
fn corpus(dir: &std::path::Path) -> Vec<(PathBuf, Option<Variant>)> {
    let mut out = Vec::new();
    for (n, m) in Modality::ALL.into_iter().enumerate() {
        let mut spec = StudySpec::new(n as u32 + 1, m);
        spec.series = 2;
        spec.instances_per_series = 2;
        let d = dir.join(format!("study{n}"));
        std::fs::create_dir_all(&d).unwrap();
        let files = corpus::write_study(&spec, &d).unwrap();
        // The originals (explicit VR LE) go out as they are.
        out.extend(files.iter().cloned().map(|f| (f, None)));
    }
    // One more study per variant: a CT (16-bit) or SC (8-bit, for JPEG baseline).
    for (k, v) in Variant::ALL.into_iter().enumerate() {
        let m = if v.supports_bits_allocated(16) {
            Modality::Ct
        } else {
            Modality::Sc
        };
        let spec = StudySpec::new(100 + k as u32, m);
        let d = dir.join(format!("variant{k}"));
        let t = dir.join(format!("variant{k}-out"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::create_dir_all(&t).unwrap();
        for f in corpus::write_study(&spec, &d).unwrap() {
            let o = t.join(f.file_name().unwrap());
            corpus::transcode(&f, &o, v).unwrap();
            out.push((o, Some(v)));
        }
    }
    out
}

#[test]
fn receives_corpus_byte_identical_and_idempotent() {
    let tmp = tempfile::tempdir().unwrap();
    let files = corpus(&tmp.path().join("corpus"));
    let mut daemon = Daemon::start(&fiona_bin!(), &tmp.path().join("data"), &Options::default());

    let echo = echoscu(daemon.addr, "TESTSCU", "FIONA");
    assert!(
        echo.status.success(),
        "echoscu: {}",
        String::from_utf8_lossy(&echo.stderr)
    );

    // Send, grouped by the storescu flags that keep each transfer syntax.
    let mut groups: BTreeMap<Vec<&str>, Vec<PathBuf>> = BTreeMap::new();
    for (f, v) in &files {
        groups
            .entry(corpus::storescu_args_for(*v))
            .or_default()
            .push(f.clone());
    }
    for (args, fs) in &groups {
        let out = storescu(daemon.addr, "FIONA", args, fs);
        assert!(
            out.status.success(),
            "storescu {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            daemon.log()
        );
    }

    // Every instance indexed once, and byte-identical.
    let stored = stored_files(&daemon.data_dir);
    assert_eq!(stored.len(), files.len(), "one stored file per instance");
    let mut by_uid = BTreeMap::new();
    for s in &stored {
        by_uid.insert(corpus::sop_instance_uid(s).unwrap(), s.clone());
    }
    assert_eq!(by_uid.len(), files.len());
    for (f, _) in &files {
        let uid = corpus::sop_instance_uid(f).unwrap();
        let s = by_uid
            .get(&uid)
            .unwrap_or_else(|| panic!("{} not stored", f.display()));
        let (ts_sent, sent) = corpus::dataset_bytes(f).unwrap();
        let (ts_stored, got) = corpus::dataset_bytes(s).unwrap();
        assert_eq!(
            ts_sent,
            ts_stored,
            "transfer syntax kept for {}",
            f.display()
        );
        assert!(
            corpus::same_dataset(&ts_sent, &sent, &got),
            "data set of {} differs ({} vs {} bytes)",
            f.display(),
            sent.len(),
            got.len()
        );
    }
    // dcmdump reads every stored file.
    for s in &stored {
        let out = std::process::Command::new("dcmdump")
            .arg(s)
            .output()
            .unwrap();
        assert!(out.status.success(), "dcmdump {}", s.display());
    }
    // dciodvfy finds no error or warning in a stored file that the sent file did not have (one file per
    // study: the file meta group fiona writes is valid, the data set is untouched).
    fiona_tests::harness::require_tool("dciodvfy");
    let dciodvfy_errors = |p: &std::path::Path| -> Vec<String> {
        let out = std::process::Command::new("dciodvfy")
            .arg(p)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        text.lines()
            .filter(|l| l.starts_with("Error") || l.starts_with("Warning"))
            .map(String::from)
            .collect()
    };
    let mut seen_studies = std::collections::BTreeSet::new();
    let mut checked = 0;
    for (f, _) in &files {
        if !seen_studies.insert(f.parent().unwrap().to_path_buf()) {
            continue;
        }
        let stored = &by_uid[&corpus::sop_instance_uid(f).unwrap()];
        assert_eq!(
            dciodvfy_errors(stored),
            dciodvfy_errors(f),
            "dciodvfy: new errors in the stored copy of {}",
            f.display()
        );
        checked += 1;
    }
    assert_eq!(checked, 4 + Variant::ALL.len());

    // Counts per study and series.
    let studies = daemon.json(&["studies"]);
    let studies = studies.as_array().unwrap();
    assert_eq!(studies.len(), 4 + Variant::ALL.len());
    let total: u64 = studies
        .iter()
        .map(|s| s["instances"].as_u64().unwrap())
        .sum();
    assert_eq!(total, files.len() as u64);
    for s in studies {
        let key = s["key"].as_str().unwrap();
        let d = daemon.json(&["study", key]);
        let series = d["series"].as_array().unwrap();
        assert_eq!(series.len() as u64, s["series"].as_u64().unwrap());
        let sum: u64 = series
            .iter()
            .map(|x| x["instances"].as_u64().unwrap())
            .sum();
        assert_eq!(sum, s["instances"].as_u64().unwrap());
        // StudySpec default is 2 series x 3 instances; the first four studies use 2 x 2.
        for x in series {
            let n = x["instances"].as_u64().unwrap();
            assert!(n == 2 || n == 3, "series with {n} instances");
        }
    }
    let status = daemon.json(&["status"]);
    assert_eq!(status["totals"]["instances"], files.len() as u64);
    let bytes_before = status["totals"]["bytes"].as_u64().unwrap();

    // Re-send everything: nothing changes.
    for (args, fs) in &groups {
        let out = storescu(daemon.addr, "FIONA", args, fs);
        assert!(out.status.success());
    }
    let status = daemon.json(&["status"]);
    assert_eq!(status["totals"]["instances"], files.len() as u64);
    assert_eq!(status["totals"]["bytes"].as_u64().unwrap(), bytes_before);
    assert_eq!(
        status["instances_duplicate_since_start"].as_u64().unwrap(),
        files.len() as u64
    );
    assert_eq!(stored_files(&daemon.data_dir).len(), files.len());

    // A restart finds everything in the index.
    daemon.restart();
    let status = daemon.json(&["status"]);
    assert_eq!(status["totals"]["instances"], files.len() as u64);
    let st = daemon.stop();
    assert!(
        st.map(|s| s.success()).unwrap_or(false),
        "clean exit on SIGTERM"
    );
}
