//! Corrections while sending, and derived series: a correction stops a transfer that is being
//! sent (what went out is recorded and audited); a derived series sent back to fiona joins its
//! research study.

mod common;

use common::pipeline::*;

#[test]
fn a_correction_stops_a_transfer_that_is_being_sent() {
    let tmp = tempfile::tempdir().unwrap();
    let total = 60;
    let (pacs, d) = to_orthanc(
        tmp.path(),
        SLOW_PACS,
        "retry_base_secs = 1\nverify_after_secs = 0\n",
        (709, Modality::Ct, 1, total),
        "PROJ1-0009",
    );
    d.wait_for("instances at the PACS", Duration::from_secs(60), || {
        pacs.stored_files() >= 3
    });
    let first = d.json(&["transfers"])[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let accession = StudySpec::new(709, Modality::Ct).accession;
    d.assign(&accession, "PROJ1", "PROJ1-0010", "baseline");
    // The old transfer stops within an instance or so, and says how much went out.
    let old = |d: &Daemon| {
        d.json(&["transfers"])
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == first.as_str())
            .cloned()
            .unwrap()
    };
    let audit_says = |d: &Daemon| {
        d.json(&["audit"]).as_array().unwrap().iter().any(|a| {
            a["action"] == "cancelled_send"
                && a["transfer"] == first.as_str()
                && a["detail"]
                    .as_str()
                    .unwrap_or("")
                    .contains("when the correction stopped it")
        })
    };
    d.wait_for(
        "the stopped send to be recorded",
        Duration::from_secs(60),
        || audit_says(&d),
    );
    let t = old(&d);
    assert_eq!(t["state"], "cancelled", "{t}");
    let sent_before = t["deliveries"][0]["stored"].as_array().unwrap().len();
    assert!(sent_before < total as usize, "{t}");
    // The correction goes out in full and is verified.
    let mut t = Value::Null;
    d.wait_for(
        "the correction to be verified",
        Duration::from_secs(60),
        || {
            t = d
                .json(&["transfers"])
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["id"] != first.as_str())
                .cloned()
                .unwrap_or(Value::Null);
            finished(&t)
        },
    );
    assert_eq!(t["state"], "verified", "{t}");
    assert_eq!(t["participant"], "PROJ1-0010", "{t}");
}

/// Issue 12 item 8: a workstation takes an instance from the research PACS, makes a derived
/// series of it (new Series and SOP Instance UIDs, everything else as fiona sent it) and
/// sends it back to fiona. fiona recognises the research StudyInstanceUID it issued, assigns
/// the instance to the original's participant and event, keeps the UIDs it issued (study,
/// frame of reference) instead of mapping them again, does not shift the dates a second
/// time, and the instance joins the original research study at Orthanc, verified.
#[test]
fn a_derived_series_sent_back_joins_its_research_study() {
    require_tool("dcmodify");
    let tmp = tempfile::tempdir().unwrap();
    let (pacs, d) = to_orthanc(
        tmp.path(),
        "function ReceivedInstanceFilter(dicom, origin, info) return true end\n",
        "retry_base_secs = 1\nretry_max_secs = 1\nmax_attempts = 3\nverify_after_secs = 0\n",
        (706, Modality::Ct, 1, 2),
        "PROJ1-0006",
    );
    let first = d.transfer_when("the study to be verified", finished);
    assert_eq!(first["state"], "verified", "{first}");
    let research_uid = first["research_study_uid"].as_str().unwrap().to_string();
    assert_eq!(
        pacs.held(&research_uid, "FIONA", &[], &tmp.path().join("q1")),
        2
    );

    // The workstation's copy: one instance as Orthanc holds it, with new series and instance
    // UIDs (dcmodify updates the file meta to match).
    let held = pacs.stored_paths();
    let original = open_file(&held[0]).unwrap();
    let text = |o: &dicom_object::DefaultDicomObject, g, e| header_text(o, Tag(g, e));
    let derived_dir = tmp.path().join("derived");
    std::fs::create_dir_all(&derived_dir).unwrap();
    let derived = derived_dir.join("derived.dcm");
    std::fs::copy(&held[0], &derived).unwrap();
    let out = Command::new("dcmodify")
        .args(["-nb", "-m", "(0020,000e)=1.2.826.0.1.3680043.8.498.4242.1"])
        .args(["-m", "(0008,0018)=1.2.826.0.1.3680043.8.498.4242.1.1"])
        .args(["-i", "(0008,103e)=AI segmentation"])
        .arg(&derived)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    d.store_ok(std::slice::from_ref(&derived));

    // A second transfer, for the derived study, to the same research study, verified.
    let start = Instant::now();
    let second = loop {
        let all = d.json(&["transfers"]);
        let done: Vec<&Value> = all
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["id"] != first["id"] && finished(t))
            .collect();
        if let Some(t) = done.first() {
            break (*t).clone();
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "timed out waiting for the derived transfer: {all}\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(second["state"], "verified", "{second}");
    assert_eq!(
        second["research_study_uid"],
        research_uid.as_str(),
        "{second}"
    );
    assert_eq!(second["participant"], "PROJ1-0006", "{second}");
    assert_eq!(second["event"], "baseline", "{second}");
    assert_eq!(
        pacs.held(&research_uid, "FIONA", &[], &tmp.path().join("q2")),
        3
    );

    // What Orthanc holds of it: the study, frame of reference and dates as the research
    // study has them; new series and instance UIDs, mapped (not the workstation's).
    let now = pacs.stored_paths();
    let arrived: Vec<_> = now
        .iter()
        .filter(|p| !held.contains(p))
        .map(|p| open_file(p).unwrap())
        .collect();
    assert_eq!(arrived.len(), 1);
    let a = &arrived[0];
    assert_eq!(text(a, 0x0020, 0x000D), research_uid);
    for (g, e) in [
        (0x0020, 0x0052),
        (0x0008, 0x0020),
        (0x0008, 0x0030),
        (0x0010, 0x0020),
    ] {
        assert_eq!(
            text(a, g, e),
            text(&original, g, e),
            "({g:04x},{e:04x}) differs from the research study's"
        );
    }
    let series = text(a, 0x0020, 0x000E);
    assert_ne!(series, text(&original, 0x0020, 0x000E));
    assert!(
        series.starts_with("2.25.") && !series.contains("4242"),
        "the workstation's series UID is mapped: {series}"
    );
    assert!(!text(a, 0x0008, 0x0018).contains("4242"));
}
